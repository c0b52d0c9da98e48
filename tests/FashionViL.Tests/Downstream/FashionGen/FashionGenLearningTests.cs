using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data.Loading;
using FashionViL.Downstream;
using FashionViL.Downstream.FashionGen;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Optim;

namespace FashionViL.Tests.Downstream.FashionGen;

/// <summary>
/// Fine-tuning from the demo's pre-trained tiny checkpoint on the demo's generated data (minutes on CPU, hence explicit):
/// loads only image_encoder.* and model.bert.* (as checkpoint.pretrained_state_mapping does), runs AdamW steps over loader
/// batches, evaluates on val before and after, and prints the metrics beside their chance levels.
/// Needs /tmp/demo2/data and /tmp/demo2/save/fashionvil_tiny/best.ckpt (`fashionvil demo`).
/// </summary>
[Explicit("minutes on CPU; needs the demo's data and tiny checkpoint")]
[NonParallelizable]
public class FashionGenLearningTests
{
    private const string Data = "/tmp/demo2/data";
    private const string Ckpt = "/tmp/demo2/save/fashionvil_tiny/best.ckpt";

    private static FvConfig Tiny(string head, params string[] extra) => FvConfig.Load(null, new[]
    {
        $"env.data_dir={Data}", "datasets=fashiongen", "dataset_config.fashiongen.num_workers=2",
        "dataset_config.fashiongen.processors.image_processor.resize=112", "dataset_config.fashiongen.processors.image_processor.crop=96",
        "dataset_config.fashiongen.processors.text_processor.max_seq_length=40",
        "model_config.fashionvil.image_encoder.params.blocks=[1,1,1,1]", "model_config.fashionvil.image_encoder.params.base_width=16",
        "model_config.fashionvil.bert.hidden_size=128", "model_config.fashionvil.bert.num_hidden_layers=2",
        "model_config.fashionvil.bert.num_attention_heads=2", "model_config.fashionvil.bert.intermediate_size=512",
        $"model_config.fashionvil.training_head_type={head}", "evaluation.batch_size=64", "training.seed=42",
    }.Concat(extra));

    private static void LoadPretrained(Nn.Module model)
    {
        using var f = TrainingCheckpoint.Read(Ckpt);
        var keep = f.Model.Where(kv => kv.Key.StartsWith("image_encoder.", StringComparison.Ordinal) || kv.Key.StartsWith("model.bert.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key, kv => kv.Value);
        var r = model.LoadStateDict(keep, strict: false);
        Assert.That(r.Unexpected, Is.Empty);
        Assert.That(r.Mismatched, Is.Empty);
        Assert.That(r.Missing.All(k => !k.StartsWith("image_encoder.") && !k.StartsWith("model.bert.")), $"missing: {string.Join(", ", r.Missing)}");
        TestContext.Out.WriteLine($"loaded {keep.Count} tensors; fresh: {string.Join(", ", r.Missing)}");
    }

    private static (IReadOnlyDictionary<string, double> Before, IReadOnlyDictionary<string, double> After, List<double> Losses)
        Run(IFinetuneTask<FashionGenBatch> task, double lr, int steps, int batch)
    {
        LoadPretrained(task.Model);
        var before = task.Evaluate("val", Device.Cpu, 42);
        using var opt = new AdamW(task.ParameterGroups(lr, 1e-4, 20), 0.9, 0.999, 1e-8);
        using var loader = new PrefetchLoader<FashionGenBatch>(task.TrainCount, task.BuildTrainBatch, new PrefetchLoaderOptions { BatchSize = batch, Workers = 2, Seed = 42 });
        var g = new Generator(7);
        var losses = new List<double>();
        task.Model.Train();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        for (int s = 0; s < steps; s++)
        {
            using var b = loader.Next();
            using var loss = task.Loss(b, Device.Cpu, g);
            loss.Backward();
            opt.Step();
            opt.ZeroGrad();
            losses.Add(loss.Item());
        }
        TestContext.Out.WriteLine($"{steps} steps of {batch} in {sw.Elapsed.TotalSeconds:F0} s; loss first 5 {losses.Take(5).Average():F3}, last 5 {losses.TakeLast(5).Average():F3}");
        var after = task.Evaluate("val", Device.Cpu, 42);
        foreach (var k in after.Keys.Order()) TestContext.Out.WriteLine($"  {k,-24} before {100 * before[k],6:F2}   after {100 * after[k],6:F2}");
        return (before, after, losses);
    }

    [Test]
    public void RetrievalFineTuneEndsFarAboveChance()
    {
        using var t = FashionGenRetrievalTask.Create(Tiny("contrastive"), TestContext.Out);
        var val = t.Data.Split("val");
        int images = val.Sum(p => p.Images.Count);
        // Chance R@1: image→text 1/#texts; text→image the mean share of the query's images in the gallery (= 1/#products);
        // kaleido 1/101 (one positive among 101 candidates).
        double i2tChance = 1.0 / val.Count, t2iChance = val.Average(p => (double)p.Images.Count / images), kaleidoChance = 1.0 / 101;
        TestContext.Out.WriteLine($"val: {val.Count} products, {images} images; chance R@1 general i2t {100 * i2tChance:F2}%, t2i {100 * t2iChance:F2}%, kaleido {100 * kaleidoChance:F2}%");
        var (before, after, losses) = Run(t, 1e-4, 40, 32);
        Assert.That(losses.TakeLast(5).Average(), Is.LessThan(losses.Take(5).Average()));
        Assert.That(after["r@k_general/i2t_r@1"], Is.GreaterThan(5 * i2tChance));
        Assert.That(after["r@k_general/t2i_r@1"], Is.GreaterThan(5 * t2iChance));
        Assert.That(after["r@k_kaleido/i2t_r@1"], Is.GreaterThan(5 * kaleidoChance));
        Assert.That(after["r@k_kaleido/t2i_r@1"], Is.GreaterThan(5 * kaleidoChance));
    }

    [Test]
    public void ClassificationFineTuneEndsFarAboveChance()
    {
        using var t = FashionGenClassificationTask.Create(Tiny("classification"), TestContext.Out);
        var val = t.Data.Split("val");
        var rows = val.SelectMany(p => p.Images.Select(_ => (long)p.SubcategoryId!.Value)).ToArray();
        var majority = rows.GroupBy(x => x).MaxBy(g => g.Count())!;
        double majorityAcc = (double)majority.Count() / rows.Length;
        double majorityF1 = FashionViL.Eval.ClassificationMetrics.MacroF1(rows, rows.Select(_ => majority.Key).ToArray());
        int classes = rows.Distinct().Count();
        TestContext.Out.WriteLine($"val: {val.Count} products, {rows.Length} images, {classes} sub-categories; chance: majority-class accuracy {100 * majorityAcc:F2}%, " +
            $"macro-F1 {100 * majorityF1:F2}%; uniform guess over the {classes} present classes {100.0 / classes:F2}%");
        // 200 updates ≈ 10 epochs of the 632 training products (40 updates reach only ~20% accuracy: the head starts from scratch).
        var (before, after, losses) = Run(t, 1e-4, 200, 32);
        Assert.That(losses.TakeLast(5).Average(), Is.LessThan(losses.Take(5).Average()));
        Assert.That(after["accuracy"], Is.GreaterThan(Math.Max(2 * majorityAcc, 0.5)));
        Assert.That(after["macro_f1"], Is.GreaterThan(5 * majorityF1));
    }
}
