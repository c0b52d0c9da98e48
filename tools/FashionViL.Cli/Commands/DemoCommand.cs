using System.CommandLine;
using System.Diagnostics;
using FashionViL.Config;
using FashionViL.Synth;
using FashionViL.Training;

namespace FashionViL.Cli;

/// <summary>
/// `fashionvil demo`: the out-of-the-box run. Generates a small dataset in the real layouts, pre-trains the tiny
/// config on it with all six tasks, evaluates retrieval on held-out products and says where everything went.
/// </summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var dir = new Option<string>("--dir") { Description = "Working directory: data/, configs/ and save/ go here.", DefaultValueFactory = _ => "fashionvil-demo" };
        var products = new Option<int>("--products") { Description = "FashionGen products to generate (the other datasets scale with it).", DefaultValueFactory = _ => 800 };
        var updates = new Option<int?>("--updates") { Description = "Override training.max_updates of configs/tiny.yaml." };
        var device = new Option<string>("--device") { Description = "cpu | cuda | cuda:N", DefaultValueFactory = _ => "cpu" };
        var seed = new Option<ulong>("--seed") { Description = "Seed for the data and the run.", DefaultValueFactory = _ => 42UL };
        var args = new Argument<string[]>("overrides") { Description = "extra key.path=value config overrides", Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("demo", "Generate data, pre-train the tiny FashionViL on it (all six tasks), evaluate retrieval. The README's first command.")
        {
            dir, products, updates, device, seed, args,
        };
        command.SetAction(parse =>
        {
            var o = parse.InvocationConfiguration.Output;
            var err = parse.InvocationConfiguration.Error;
            try
            {
                var total = Stopwatch.StartNew();
                var root = Path.GetFullPath(parse.GetValue(dir)!);
                var dataDir = Path.Combine(root, "data");
                int n = parse.GetValue(products);
                var marker = Path.Combine(dataDir, "datasets", "FashionGen", "val_info.json");
                if (!File.Exists(marker))
                {
                    o.WriteLine($"[1/3] generating {n} products in the real dataset layouts under {dataDir}");
                    var summary = SyntheticDatasets.Generate(new SynthOptions(dataDir, n, parse.GetValue(seed), 128, 0), o);
                    o.WriteLine($"      {summary.Images} images in {summary.Elapsed.TotalSeconds:F1} s");
                }
                else o.WriteLine($"[1/3] using the generated data already in {dataDir}");

                var configs = Path.Combine(root, "configs");
                ShippedConfigs.WriteTo(configs);
                var overrides = new List<string>
                {
                    $"env.data_dir={dataDir}", $"env.save_dir={Path.Combine(root, "save")}", $"env.device={parse.GetValue(device)}",
                    $"training.seed={parse.GetValue(seed) % int.MaxValue}",
                };
                if (parse.GetValue(updates) is { } u) overrides.Add($"training.max_updates={u}");
                overrides.AddRange(parse.GetValue(args) ?? []);
                var config = FvConfig.Load(Path.Combine(configs, "tiny.yaml"), overrides);
                o.WriteLine($"[2/3] pre-training {Path.Combine(configs, "tiny.yaml")} ({config.GetInt("training.max_updates")} updates, all six tasks) on {config.GetString("env.device")}");
                var result = new Pretrainer(config, o).Run();
                o.WriteLine("[3/3] results");
                PretrainCommand.Report(o, result);
                o.WriteLine($"chance level: R@1 = 1/101 ≈ 1.0% (r@k_kaleido); total time {total.Elapsed.TotalMinutes:F1} min");
                return 0;
            }
            catch (Exception e) when (PretrainCommand.IsUserError(e))
            {
                err.WriteLine($"fashionvil demo: {e.Message}");
                return 1;
            }
        });
        return command;
    }
}

/// <summary>The configs/ folder, embedded so that commands work from any directory.</summary>
public static class ShippedConfigs
{
    public static IReadOnlyList<string> Names =>
        typeof(ShippedConfigs).Assembly.GetManifestResourceNames().Where(n => n.StartsWith("configs.", StringComparison.Ordinal)).Select(n => n["configs.".Length..]).ToList();

    /// <summary>Writes every shipped config into <paramref name="dir"/> (a file already there is left alone: the user may have edited it).</summary>
    public static void WriteTo(string dir)
    {
        Directory.CreateDirectory(dir);
        foreach (var name in Names)
        {
            var path = Path.Combine(dir, name);
            if (File.Exists(path)) continue;
            using var s = typeof(ShippedConfigs).Assembly.GetManifestResourceStream("configs." + name)!;
            using var f = File.Create(path + ".tmp");
            s.CopyTo(f);
            f.Close();
            File.Move(path + ".tmp", path);
        }
    }
}
