using System.CommandLine;
using FashionViL.Config;
using FashionViL.Training;

namespace FashionViL.Cli;

/// <summary>`fashionvil pretrain config=configs/pretrain.yaml key=value ...`: FashionViL pre-training (MMF-style overrides).</summary>
public static class PretrainCommand
{
    public static Command Create() => Build("pretrain",
        "Pre-train FashionViL. Arguments are MMF-style: config=FILE, then key.path=value overrides " +
        "(e.g. training.batch_size=32 env.data_dir=/data). Unknown keys are errors naming the nearest valid key.", null);

    internal static Command Build(string name, string description, string? forcedRunType)
    {
        var args = new Argument<string[]>("overrides") { Description = "config=FILE and key.path=value pairs", Arity = ArgumentArity.ZeroOrMore };
        var device = new Option<string?>("--device") { Description = "cpu | cuda | cuda:N (same as env.device=...)" };
        var command = new Command(name, description) { args, device };
        command.SetAction(parse =>
        {
            var output = parse.InvocationConfiguration.Output;
            var error = parse.InvocationConfiguration.Error;
            try
            {
                var (configPath, overrides) = Split(parse.GetValue(args) ?? []);
                if (parse.GetValue(device) is { } d) overrides.Add("env.device=" + d);
                if (forcedRunType is not null) overrides.Add("run_type=" + forcedRunType);
                var config = FvConfig.Load(configPath, overrides);
                var result = new Pretrainer(config, output).Run();
                Report(output, result);
                return 0;
            }
            catch (Exception e) when (IsUserError(e))
            {
                error.WriteLine($"fashionvil {name}: {e.Message}");
                return 1;
            }
        });
        return command;
    }

    internal static bool IsUserError(Exception e) =>
        e is ConfigException or FileNotFoundException or DirectoryNotFoundException or InvalidDataException or IOException
            or TrainingDivergedException or ArgumentException or NotSupportedException or UnauthorizedAccessException;

    internal static (string? Config, List<string> Overrides) Split(IEnumerable<string> args)
    {
        string? config = null;
        var rest = new List<string>();
        foreach (var a in args)
        {
            if (a.StartsWith("config=", StringComparison.Ordinal)) config = a["config=".Length..];
            else if (!a.Contains('=')) throw new ConfigException($"argument '{a}' must be config=FILE or key.path=value");
            else rest.Add(a);
        }
        return (config, rest);
    }

    internal static void Report(TextWriter o, PretrainResult r)
    {
        o.WriteLine();
        if (r.Steps > 0) o.WriteLine($"finished {r.Steps} updates ({r.SecondsPerStep:F2} s/update)");
        if (r.TaskLosses.Count > 0)
        {
            o.WriteLine("  task    first loss   last loss   updates");
            foreach (var (t, v) in r.TaskLosses.OrderBy(k => k.Key, StringComparer.Ordinal))
                o.WriteLine($"  {t,-6} {v.First,11:F4} {v.Last,11:F4} {v.Count,9}");
        }
        if (r.LastKaleido is { } k)
        {
            o.WriteLine("  retrieval (held-out products)       i2t R@1   R@5  R@10 | t2i R@1   R@5  R@10 |  avg");
            foreach (var (name, m) in new[] { ("r@k_kaleido (1 + 100 candidates)", k), ("r@k_general (full gallery)", r.LastGeneral!) })
                o.WriteLine($"  {name,-35} {100 * m["i2t_r@1"],7:F1} {100 * m["i2t_r@5"],5:F1} {100 * m["i2t_r@10"],5:F1} | {100 * m["t2i_r@1"],7:F1} {100 * m["t2i_r@5"],5:F1} {100 * m["t2i_r@10"],5:F1} | {100 * m["avg"],4:F1}");
        }
        o.WriteLine($"run directory : {r.RunDirectory}");
        if (r.CurrentCheckpoint is not null) o.WriteLine($"checkpoint    : {r.CurrentCheckpoint}");
        if (r.BestCheckpoint is not null) o.WriteLine($"best          : {r.BestCheckpoint}");
        if (r.Steps > 0) o.WriteLine($"metrics       : {Path.Combine(r.RunDirectory, "metrics.jsonl")} (+ train.csv, eval.csv)");
        if (r.PlotPath is not null) o.WriteLine($"plot          : {r.PlotPath}");
    }
}

/// <summary>`fashionvil eval config=... checkpoint.resume_file=...`: ITC retrieval of a pre-trained model on the val split.</summary>
public static class EvalCommand
{
    public static Command Create() => PretrainCommand.Build("eval",
        "Evaluate a pre-trained FashionViL (ITC retrieval, r@k_general and r@k_kaleido) on the val split: " +
        "config=FILE model_config.fashionvil.pretrained_checkpoint=CKPT [overrides].", "val");
}
