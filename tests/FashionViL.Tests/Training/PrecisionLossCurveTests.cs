using System.Globalization;
using System.Text;
using FashionViL.Config;
using FashionViL.Synth;
using FashionViL.Training;

namespace FashionViL.Tests.Training;

/// <summary>
/// Issue 7: loss curves with and without the tensor-core switch (<c>training.precision</c>, i.e. <see cref="MatMulPrecision"/>)
/// agree within the noise of two seeds. On the CPU the TF32/bf16 operand rounding is emulated exactly (Gemm.cs), so the
/// comparison here is the numerical one; the GPU run of the same comparison is owed.
/// </summary>
[NonParallelizable]
public class PrecisionLossCurveTests
{
    /// <summary>Per-update losses of one run (train.csv: step, task, loss, ...).</summary>
    internal static (string Task, double Loss)[] Losses(string runDir)
        => File.ReadAllLines(Path.Combine(runDir, "train.csv")).Skip(1)
            .Select(l => l.Split(','))
            .Select(f => (f[1], double.Parse(f[2], CultureInfo.InvariantCulture)))
            .ToArray();

    private static double MeanAbsDiff(IReadOnlyList<(string, double Loss)> a, IReadOnlyList<(string, double Loss)> b, int from, int to)
    {
        double s = 0;
        for (int i = from; i < to; i++) s += Math.Abs(a[i].Loss - b[i].Loss);
        return s / (to - from);
    }

    private static double Mean(IReadOnlyList<(string, double Loss)> a, int from, int to)
    {
        double s = 0;
        for (int i = from; i < to; i++) s += a[i].Loss;
        return s / (to - from);
    }

    private const int Updates = 8;

    /// <summary>
    /// 8 updates of the micro config (ITC and ITM: no VQ-VAE, no 30,522-way MLM head, to stay fast) for fp32 seed 1, fp32
    /// seed 2 and tf32 seed 1, set through the <c>training.precision</c> config key. The same seed gives the same task
    /// sequence, data order and dropout draws, so fp32 and tf32 at seed 1 differ only by the operand rounding.
    /// Bounds: (1) the issue's criterion with a factor 2 of margin: the mean per-update |fp32 − tf32| is below half the mean
    /// per-update |fp32(seed 1) − fp32(seed 2)| measured here (the seed noise: another init, data order and task mix; measured
    /// 0.02 against 0.74 on this machine). Not tighter: AdamW's first steps move each weight by ±lr whatever the gradient's
    /// size, so gradients near zero whose sign the rounding flips make the trajectories drift apart within a few updates
    /// (ITC differs by a few hundredths after one or two updates), as they would in PyTorch. (2) Before any weight update
    /// (update 1) the only difference is the rounding itself: it must show (the key reached the GEMMs) and stay an order of
    /// magnitude below the seed noise (measured 0.005 against 0.74: ITC logits are cosine similarities over a 0.07
    /// temperature, so the embeddings' ~1e-4 relative TF32 error is amplified about 14× there).
    /// </summary>
    [Test]
    public void Tf32LossesStayWithinTheSeedNoiseOfFp32OnTheMicroConfig()
    {
        var data = Path.Combine(Path.GetTempPath(), "fv-precision-data-" + Guid.NewGuid().ToString("N"));
        var save = Path.Combine(Path.GetTempPath(), "fv-precision-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            SyntheticDatasets.Generate(new SynthOptions(data, 40, 7, 64, 0));
            string[] common = [$"training.max_updates={Updates}", "training.batch_size=4", "training.checkpoint_interval=0", "training.log_interval=100",
                "scheduler.params.warmup_iterations=2", "scheduler.params.lr_steps=[6]", "run_type=train",
                "model_config.fashionvil.tasks=[itc,itm]", "model_config.fashionvil.tasks_sample_ratio=[0.5,0.5]"];
            (string, double)[] Run(string name, int seed, string precision)
            {
                var before = MatMulPrecision.Current;
                var r = new Pretrainer(PretrainerTests.Micro(data, Path.Combine(save, name),
                    [.. common, $"training.seed={seed}", $"training.precision={precision}", $"training.experiment_name={name}"]), TextWriter.Null).Run();
                Assert.That(MatMulPrecision.Current, Is.EqualTo(before), "the run's precision scope leaked");
                TestContext.Out.WriteLine($"{name}: {r.SecondsPerStep:F3} s/update");
                return Losses(r.RunDirectory);
            }
            var fA = Run("fp32_a", 1, "fp32");
            var fB = Run("fp32_b", 2, "fp32");
            var tA = Run("tf32_a", 1, "tf32");
            Assert.That(fA.Length, Is.EqualTo(Updates));
            Assert.That(tA.Select(x => x.Item1), Is.EqualTo(fA.Select(x => x.Item1)), "same seed, same task sequence");
            Assert.That(fA.All(x => double.IsFinite(x.Item2)) && tA.All(x => double.IsFinite(x.Item2)));
            double noise = MeanAbsDiff(fA, fB, 0, Updates), tf32 = MeanAbsDiff(fA, tA, 0, Updates);
            TestContext.Out.WriteLine($"mean |fp32 A − fp32 B| = {noise:G4}, mean |fp32 A − tf32 A| = {tf32:G4}");
            for (int i = 0; i < Updates; i++) TestContext.Out.WriteLine($"  update {i + 1}: {fA[i].Item1} fp32 A {fA[i].Item2:F5}, tf32 A {tA[i].Item2:F5}; {fB[i].Item1} fp32 B {fB[i].Item2:F5}");
            Assert.That(tA[0].Item2, Is.Not.EqualTo(fA[0].Item2), "tf32 gave a bit-identical first loss: training.precision did not reach the GEMMs");
            Assert.That(Math.Abs(tA[0].Item2 - fA[0].Item2), Is.LessThan(noise / 10), "first update, before any weight moved");
            Assert.That(tf32, Is.LessThan(noise / 2), "tf32 moved the loss curve by more than half the seed noise");
        }
        finally
        {
            if (Directory.Exists(data)) Directory.Delete(data, true);
            if (Directory.Exists(save)) Directory.Delete(save, true);
        }
    }

    [Test]
    public void ABadPrecisionKeyNamesTheKeyAndTheValue()
    {
        var save = Path.Combine(Path.GetTempPath(), "fv-p-" + Guid.NewGuid().ToString("N"));
        try
        {
            var e = Assert.Throws<ArgumentException>(() => new Pretrainer(PretrainerTests.Micro("/nonexistent-data", save, "training.precision=fp16"), TextWriter.Null).Run())!;
            Assert.That(e.Message, Does.Contain("training.precision").And.Contain("fp16"));
            Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Fp32));
        }
        finally { if (Directory.Exists(save)) Directory.Delete(save, true); }
    }

    private static string Repo(string rel)
    {
        var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "FashionViL.Native.sln"))) d = d.Parent;
        return Path.Combine(d!.FullName, rel);
    }

    /// <summary>
    /// The issue's check on the CPU: 200 updates of configs/tiny.yaml on generated data (the demo's 800 products at 128 px)
    /// for fp32 seed 42, fp32 seed 43, tf32 seed 42 and bf16 seed 42 (FV_PRECISIONS overrides the list, e.g. "fp32:42,fp32:43,tf32:42");
    /// prints (and writes to FV_PRECISION_OUT, default the temp folder) a table over windows of 20 updates: the window mean loss
    /// of each run and the per-update mean |fp32 A − X| against the seed noise |fp32 A − fp32 B|.
    /// </summary>
    [Test, Explicit("minutes: 4 × 200 updates of the tiny config")]
    public void TinyConfigLossCurvesAgreeAcrossPrecisionsWithinSeedNoise()
    {
        int products = int.Parse(Environment.GetEnvironmentVariable("FV_PRODUCTS") ?? "800", CultureInfo.InvariantCulture);
        int updates = int.Parse(Environment.GetEnvironmentVariable("FV_UPDATES") ?? "200", CultureInfo.InvariantCulture);
        var runs = (Environment.GetEnvironmentVariable("FV_PRECISIONS") ?? "fp32:42,fp32:43,tf32:42,bf16:42")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => (Precision: s.Split(':')[0], Seed: int.Parse(s.Split(':')[1], CultureInfo.InvariantCulture))).ToList();
        var root = Environment.GetEnvironmentVariable("FV_PRECISION_DIR") ?? Path.Combine(Path.GetTempPath(), "fv-precision-curves");
        var data = Path.Combine(root, "data");
        if (!File.Exists(Path.Combine(data, "datasets", "FashionGen", "val_info.json")))
            SyntheticDatasets.Generate(new SynthOptions(data, products, 42, 128, 0));
        var curves = new List<(string Name, (string Task, double Loss)[] L, double SecPerUpdate)>();
        foreach (var (precision, seed) in runs)
        {
            var name = $"{precision}_seed{seed}";
            var cfg = FvConfig.Load(Environment.GetEnvironmentVariable("FV_TINY_YAML") ?? Repo("configs/tiny.yaml"),
            [
                $"env.data_dir={data}", $"env.save_dir={Path.Combine(root, "save")}", $"training.seed={seed}", $"training.precision={precision}",
                $"training.max_updates={updates}", "training.evaluation_interval=0", "training.checkpoint_interval=0", "run_type=train",
                $"training.experiment_name={name}", "training.log_interval=50",
            ]);
            var runDir = Path.Combine(root, "save", name);
            if (Directory.Exists(runDir)) Directory.Delete(runDir, true);
            var r = new Pretrainer(cfg, TestContext.Progress).Run();
            curves.Add((name, Losses(r.RunDirectory), r.SecondsPerStep));
        }

        var baseA = curves[0];
        var sb = new StringBuilder();
        sb.AppendLine($"configs/tiny.yaml, {updates} updates, generated data ({products} products, 128 px), CPU; date {DateTime.UtcNow:yyyy-MM-dd}");
        sb.AppendLine("runs: " + string.Join(", ", curves.Select(c => $"{c.Name} ({c.SecPerUpdate:F2} s/update)")));
        sb.AppendLine();
        sb.Append("| updates |").Append(string.Join("", curves.Select(c => $" mean loss {c.Name} |")))
          .Append(string.Join("", curves.Skip(1).Select(c => $" mean abs diff {baseA.Name} vs {c.Name} |"))).AppendLine();
        sb.Append("|---|").Append(string.Join("", Enumerable.Repeat("---|", 2 * curves.Count - 1))).AppendLine();
        const int W = 20;
        for (int w0 = 0; w0 < updates; w0 += W)
        {
            int w1 = Math.Min(updates, w0 + W);
            sb.Append($"| {w0 + 1}–{w1} |");
            foreach (var c in curves) sb.Append($" {Mean(c.L, w0, w1):F4} |");
            foreach (var c in curves.Skip(1)) sb.Append($" {MeanAbsDiff(baseA.L, c.L, w0, w1):F4} |");
            sb.AppendLine();
        }
        sb.Append($"| all |");
        foreach (var c in curves) sb.Append($" {Mean(c.L, 0, updates):F4} |");
        foreach (var c in curves.Skip(1)) sb.Append($" {MeanAbsDiff(baseA.L, c.L, 0, updates):F4} |");
        sb.AppendLine();
        // Per task: the mean loss over the last 100 updates (same seed ⇒ same task sequence, so the same updates are averaged).
        sb.AppendLine();
        sb.AppendLine("| task | " + string.Join(" | ", curves.Select(c => $"mean loss, last half, {c.Name}")) + " |");
        sb.AppendLine("|---|" + string.Join("", curves.Select(_ => "---|")));
        foreach (var task in baseA.L.Select(x => x.Task).Distinct().Order(StringComparer.Ordinal))
        {
            sb.Append($"| {task} |");
            foreach (var c in curves)
            {
                var xs = c.L.Skip(updates / 2).Where(x => x.Task == task).Select(x => x.Loss).ToArray();
                sb.Append(xs.Length == 0 ? " – |" : $" {xs.Average():F4} (n={xs.Length}) |");
            }
            sb.AppendLine();
        }
        var text = sb.ToString();
        TestContext.Out.WriteLine(text);
        var outFile = Environment.GetEnvironmentVariable("FV_PRECISION_OUT") ?? Path.Combine(root, "precision-curves.md");
        File.WriteAllText(outFile, text);
        TestContext.Progress.WriteLine($"table written to {outFile}");
        foreach (var c in curves.Skip(1).Where(c => c.Name.StartsWith("fp32", StringComparison.Ordinal) == false))
            Assert.That(MeanAbsDiff(baseA.L, c.L, 0, updates), Is.LessThan(MeanAbsDiff(baseA.L, curves[1].L, 0, updates)),
                $"{c.Name} differs from {baseA.Name} by more than the seed noise ({curves[1].Name})");
    }
}
