using System.Text.Json;
using FashionViL.Bench;
using FashionViL.Config;
using FashionViL.Model;
using FashionViL.Training;

namespace FashionViL.Tests.Bench;

/// <summary>
/// <c>bench step --mlm-head-rows labelled|all</c>: the MLM head on the labelled text rows only (what the model trains with)
/// or on every text row with the unlabelled ones ignored (what torch_fashionvil_step.py times). Same loss and gradients.
/// </summary>
[NonParallelizable]
public class MlmHeadRowsTests
{
    private const int B = 2, T = 16;
    private const ulong Seed = 3;

    private static FashionViLConfig Nano() => PretrainSetup.ModelConfig(FvConfig.Load(BenchTestUtil.Nano));

    /// <summary>One training step of the nano model; its loss and every parameter's gradient.</summary>
    private static (double Loss, Dictionary<string, double[]> Grads, int HeadRows) Step(MlmHeadRows rows)
    {
        var mc = Nano();
        using var runner = new StepRunner(mc, null, "mlm", B, T, Device.Cpu, Seed, mlmHeadRows: rows);
        runner.Step();
        var grads = runner.Model.NamedParameters().Where(p => p.Tensor.Grad is not null)
            .ToDictionary(p => p.Name, p => p.Tensor.Grad!.ToArray<float>().Select(v => (double)v).ToArray());
        // The rows the head ran on in the runner's model, on the benchmark's batch (the runner's own inputs).
        using var batch = StepBenchmark.MakeBatch(mc, B, T, Device.Cpu, Seed);
        int headRows;
        using (Tensor.Scope())
        using (var o = runner.Model.Mlm(batch)) headRows = o.Scores!.Size(0);
        return (runner.LastLoss, grads, headRows);
    }

    [Test]
    public void AllRowsGiveTheSameLossAndGradientsAsTheLabelledRows()
    {
        var lab = Step(MlmHeadRows.Labelled);
        var all = Step(MlmHeadRows.All);
        // MakeBatch labels positions 1..11 of each sample: 22 labelled rows of the 2·16 text rows.
        Assert.That(lab.HeadRows, Is.EqualTo(B * 11), "labelled: the head runs on the labelled rows only");
        Assert.That(all.HeadRows, Is.EqualTo(B * T), "all: the head runs on every text row (the option reaches the model)");
        Assert.That(double.IsFinite(lab.Loss), Is.True);
        Assert.That(all.Loss, Is.EqualTo(lab.Loss).Within(1e-5 * Math.Abs(lab.Loss)), "the mean over the labelled rows either way");
        Assert.That(all.Grads.Keys, Is.EquivalentTo(lab.Grads.Keys));
        Assert.That(lab.Grads.Keys, Has.Some.Contains("heads.mlm"), "the head's parameters have gradients");
        foreach (var (k, g) in lab.Grads)
        {
            double scale = g.Max(Math.Abs);
            // float32 sums over different row sets: relative 1e-5 of the tensor's largest entry
            for (int i = 0; i < g.Length; i++)
                Assert.That(all.Grads[k][i], Is.EqualTo(g[i]).Within(1e-5 * scale + 1e-12), $"{k}[{i}]");
        }
    }

    [Test]
    public void TheOptionIsRecordedInTheJsonAndTheHeaderAndCheckedByName()
    {
        var json = BenchTestUtil.TempFile("step.json");
        var (code, text) = CliTests.RunCli(["bench", "step", "--config", BenchTestUtil.Nano, "--batch", "2", "--task", "mlm", "--steps", "1",
            "--warmup", "0", "--profile-steps", "0", "--mlm-head-rows", "all", "--json", json]);
        Assert.That(code, Is.Zero, text);
        Assert.That(text, Does.Contain("mlm-head-rows all"));
        using (var doc = JsonDocument.Parse(File.ReadAllText(json)))
            Assert.That(doc.RootElement.GetProperty("mlm_head_rows").GetString(), Is.EqualTo("all"));
        Directory.Delete(Path.GetDirectoryName(json)!, true);

        (code, text) = CliTests.RunCli(["bench", "step", "--config", BenchTestUtil.Nano, "--task", "mlm", "--mlm-head-rows", "some"]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain("--mlm-head-rows 'some'").And.Contain("labelled, all"));
        Assert.That(new StepBenchOptions().MlmHeadRows, Is.EqualTo("labelled"), "the default is what the model trains with");
    }
}
