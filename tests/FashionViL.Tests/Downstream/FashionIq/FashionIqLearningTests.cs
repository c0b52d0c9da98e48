using System.Diagnostics;
using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data.Loading;
using FashionViL.Downstream.FashionIq;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Optim;

namespace FashionViL.Tests.Downstream.FashionIq;

/// <summary>
/// Fine-tuning experiment (minutes on CPU): the tiny pre-trained demo model (image_encoder.* and model.bert.* of
/// /tmp/demo2/save/fashionvil_tiny/best.ckpt) fine-tuned on the generated FashionIQ of /tmp/demo2/data with AdamW,
/// r@k_fashioniq on val before and after. Chance with 100 gallery items per class: R@10 = 0.1, R@50 = 0.5, avg = 0.3.
/// </summary>
[Explicit("minutes on CPU; needs /tmp/demo2 (the demo's data and tiny checkpoint)")]
public class FashionIqLearningTests
{
    private const string Data = "/tmp/demo2/data";
    private const string Ckpt = "/tmp/demo2/save/fashionvil_tiny/best.ckpt";

    [Test]
    public void FineTuningFromTheTinyCheckpointBeatsChance()
    {
        int steps = int.Parse(Environment.GetEnvironmentVariable("FIQ_STEPS") ?? "32", System.Globalization.CultureInfo.InvariantCulture);
        double lr = double.Parse(Environment.GetEnvironmentVariable("FIQ_LR") ?? "1e-5", System.Globalization.CultureInfo.InvariantCulture);
        if (!File.Exists(Ckpt)) Assert.Ignore($"{Ckpt} not found");
        var c = FvConfig.Load(null,
        [
            $"env.data_dir={Data}", "datasets=fashioniq", "model_config.fashionvil.training_head_type=composition",
            "dataset_config.fashioniq.processors.image_processor.size=96",
            "model_config.fashionvil.image_encoder.params.blocks=[1,1,1,1]", "model_config.fashionvil.image_encoder.params.base_width=16",
            "model_config.fashionvil.bert.hidden_size=128", "model_config.fashionvil.bert.num_hidden_layers=2",
            "model_config.fashionvil.bert.num_attention_heads=2", "model_config.fashionvil.bert.intermediate_size=512",
            "evaluation.batch_size=50",
        ]);
        var log = TestContext.Progress;
        var task = FashionIqTask.Create(c, log);
        bool load = Environment.GetEnvironmentVariable("FIQ_NOCKPT") != "1";   // 1: random init (baseline)
        if (load)
        using (var ck = TrainingCheckpoint.Read(Ckpt))
        {
            var part = ck.Model.Where(kv => kv.Key.StartsWith("image_encoder.", StringComparison.Ordinal) || kv.Key.StartsWith("model.bert.", StringComparison.Ordinal))
                .ToDictionary(kv => kv.Key, kv => kv.Value);
            var res = task.Model.LoadStateDict(part, strict: false);
            Assert.That(res.Mismatched, Is.Empty);
            Assert.That(res.Missing, Is.EqualTo(new[] { "model.norm_layer.norm_s" }), "everything but the fresh norm layer is pre-trained");
            log.WriteLine($"loaded {part.Count} pre-trained tensors");
        }
        int batch = int.Parse(Environment.GetEnvironmentVariable("FIQ_BATCH") ?? "16", System.Globalization.CultureInfo.InvariantCulture);
        var sw = Stopwatch.StartNew();
        if (Environment.GetEnvironmentVariable("FIQ_BEFORE") != "0")
        {
            var before = task.Evaluate("val", Device.Cpu, 0);
            log.WriteLine($"before fine-tuning ({sw.Elapsed.TotalSeconds:F0} s): " + Fmt(before));
        }
        using var opt = new AdamW(task.ParameterGroups(lr, 1e-4, 20), eps: 1e-8);
        using var loader = new PrefetchLoader<FashionIqBatch>(task.TrainCount, task.BuildTrainBatch,
            new PrefetchLoaderOptions { BatchSize = batch, Shuffle = true, DropLast = true, Seed = 1, Workers = 2 });
        var gen = new Generator(1);
        var losses = new List<double>();
        sw.Restart();
        for (int s = 0; s < steps; s++)
        {
            using var b = loader.Next();
            opt.ZeroGrad();
            using var loss = task.Loss(b, Device.Cpu, gen);
            losses.Add(loss.ToArray<float>()[0]);
            loss.Backward();
            opt.Step();
            if (s % 8 == 7) log.WriteLine($"step {s + 1}: mean loss of the last 8 = {losses.TakeLast(8).Average():F3} ({sw.Elapsed.TotalSeconds:F0} s)");
        }
        var after = task.Evaluate("val", Device.Cpu, 0);
        log.WriteLine($"after {steps} steps at lr {lr} (×20 ResNet/projection): " + Fmt(after));
        log.WriteLine($"chance: r@10 = 0.100, r@50 = 0.500, avg = 0.300 (100 gallery items per class); loss at chance ln {batch} = {Math.Log(batch):F3}");
        if (steps >= 16) Assert.That(losses.TakeLast(8).Average(), Is.LessThan(losses.Take(8).Average()));
        Assert.That(after["r@k_fashioniq/avg"], Is.GreaterThan(0.3 + 0.15), "avg well above chance (0.3)");
    }

    private static string Fmt(IReadOnlyDictionary<string, double> r) =>
        string.Join(", ", r.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key.Replace("r@k_fashioniq/", "", StringComparison.Ordinal)} {kv.Value:F3}"));
}
