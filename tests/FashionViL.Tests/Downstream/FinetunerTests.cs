using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data.Loading;
using FashionViL.Downstream;
using FashionViL.Nn;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Optim;

namespace FashionViL.Tests.Downstream;

/// <summary>The generic fine-tuning loop on a toy task: 2-class points, an "image_encoder" layer and a fresh head.</summary>
[NonParallelizable]
public class FinetunerTests
{
    private sealed class ToyModel : Module
    {
        public Linear Encoder { get; }
        public Linear Head { get; }
        public ToyModel(Generator g)
        {
            Encoder = RegisterModule("image_encoder", new Linear(4, 8, generator: g));
            Head = RegisterModule("head", new Linear(8, 2, generator: g));
        }
        public override Tensor Forward(Tensor x)
        {
            using var h = Encoder.Forward(x);
            using var r = h.Relu();
            return Head.Forward(r);
        }
    }

    private sealed record ToyBatch(Tensor X, Tensor Y) : IDisposable
    {
        public void Dispose() { X.Dispose(); Y.Dispose(); }
    }

    private sealed class ToyTask : IFinetuneTask<ToyBatch>
    {
        private readonly float[][] _x; private readonly long[] _y;
        public ToyTask(int seed)
        {
            var rng = new Random(5);
            _x = new float[64][]; _y = new long[64];
            for (int i = 0; i < 64; i++)
            {
                _x[i] = [(float)rng.NextDouble() - 0.5f, (float)rng.NextDouble() - 0.5f, (float)rng.NextDouble() - 0.5f, (float)rng.NextDouble() - 0.5f];
                _y[i] = _x[i][0] + 0.5f * _x[i][1] > 0 ? 1 : 0;
            }
            Model = new ToyModel(new Generator((ulong)seed));
        }
        public string DatasetName => "toy";
        public Module Model { get; }
        public int TrainCount => 48;
        public ToyBatch BuildTrainBatch(BatchContext ctx) =>
            new(Tensor.FromArray(ctx.Indices.SelectMany(i => _x[i]).ToArray(), ctx.Indices.Count, 4), Tensor.FromArray(ctx.Indices.Select(i => _y[i]).ToArray(), ctx.Indices.Count));
        public Tensor Loss(ToyBatch b, Device device, Generator g)
        {
            using var logits = Model.Forward(b.X);
            return Ops.CrossEntropy(logits, b.Y);
        }
        public IReadOnlyDictionary<string, double> Evaluate(string split, Device device, int seed)
        {
            int from = split == "val" ? 48 : 56;
            using var _ = GradMode.NoGrad();
            using var x = Tensor.FromArray(Enumerable.Range(from, 8).SelectMany(i => _x[i]).ToArray(), 8, 4);
            using var logits = Model.Forward(x);
            var l = logits.ToArray<float>();
            int correct = Enumerable.Range(0, 8).Count(i => (l[2 * i + 1] > l[2 * i] ? 1 : 0) == _y[from + i]);
            return new Dictionary<string, double> { ["accuracy"] = correct / 8.0, ["loss_proxy"] = 1 - correct / 8.0 };
        }
        public List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier) =>
            ParamGroups.Build(Model.NamedParameters(), baseLr, weightDecay, [new ParamRule("enc", n => n.StartsWith("image_encoder.", StringComparison.Ordinal), lrMultiplier)], "default");
        public void Dispose() { }
    }

    private string _dir = "";
    [SetUp] public void SetUp() => _dir = Path.Combine(Path.GetTempPath(), "fv-ft-" + Guid.NewGuid().ToString("N"));
    [TearDown] public void TearDown() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private FvConfig Config(params string[] extra) => FvConfig.Load(null,
    [
        $"env.save_dir={_dir}", "training.experiment_name=toy", "training.batch_size=8", "training.max_updates=30", "training.log_interval=10",
        "training.evaluation_interval=10", "training.checkpoint_interval=10", "training.early_stop.criteria=toy/accuracy", "optimizer.params.lr=0.05",
        "optimizer.params.weight_decay=0", "scheduler.type=constant", "model_config.fashionvil.lr_multiplier=1", "run_type=train_val",
        "dataset_config.fashionall.num_workers=1", .. extra,
    ]);

    [Test]
    public void TrainsSelectsBestAndReportsTest()
    {
        using var task = new ToyTask(1);
        double before = task.Evaluate("val", Device.Cpu, 0)["accuracy"];
        var r = new Finetuner<ToyBatch>(Config(), task, TextWriter.Null).Run();
        Assert.That(r.Steps, Is.EqualTo(30));
        Assert.That(r.LastVal!["accuracy"], Is.GreaterThan(before).Or.EqualTo(1.0));
        Assert.That(r.Test, Is.Not.Null);
        foreach (var f in new[] { "best.ckpt", "current.ckpt", "report_val.json", "report_test.json", "eval.csv", "plot.png" })
            Assert.That(File.Exists(Path.Combine(_dir, "toy", f)), f);
        using var best = TrainingCheckpoint.Read(r.BestCheckpoint!);
        Assert.That(double.Parse(best.State.Metadata["best"], System.Globalization.CultureInfo.InvariantCulture),
            Is.EqualTo(File.ReadAllLines(Path.Combine(_dir, "toy", "eval.csv")).Skip(1).Max(l => double.Parse(l.Split(',')[1], System.Globalization.CultureInfo.InvariantCulture))));
    }

    [Test]
    public void ResumeEqualsStraightRun()
    {
        using var a = new ToyTask(2);
        new Finetuner<ToyBatch>(Config("training.experiment_name=a", "run_type=train"), a, TextWriter.Null).Run();
        using var b1 = new ToyTask(2);
        new Finetuner<ToyBatch>(Config("training.experiment_name=b", "run_type=train", "training.max_updates=10"), b1, TextWriter.Null).Run();
        using var b2 = new ToyTask(3);   // different init: everything must come from the checkpoint
        new Finetuner<ToyBatch>(Config("training.experiment_name=b", "run_type=train", "checkpoint.resume=true"), b2, TextWriter.Null).Run();
        var wa = a.Model.StateDict(); var wb = b2.Model.StateDict();
        foreach (var (k, t) in wa) Assert.That(wb[k].ToArray<float>(), Is.EqualTo(t.ToArray<float>()), k);
    }

    [Test]
    public void AccumulatedMicroBatchesTrainLikeWholeBatches()
    {
        // The toy loss is a mean of per-sample terms (no dropout, no BatchNorm): 2 micro-batches of 4 per update must give the
        // run of whole batches of 8, up to float32 summation order (control: updates of 4 samples train differently).
        using var a = new ToyTask(4);
        new Finetuner<ToyBatch>(Config("training.experiment_name=a", "run_type=train", "training.max_updates=10"), a, TextWriter.Null).Run();
        using var b = new ToyTask(4);
        new Finetuner<ToyBatch>(Config("training.experiment_name=b", "run_type=train", "training.max_updates=10", "training.update_batch_size=4"), b, TextWriter.Null).Run();
        using var h = new ToyTask(4);
        new Finetuner<ToyBatch>(Config("training.experiment_name=h", "run_type=train", "training.max_updates=10", "training.batch_size=4"), h, TextWriter.Null).Run();
        var wa = a.Model.StateDict(); var wb = b.Model.StateDict(); var wh = h.Model.StateDict();
        foreach (var (k, t) in wa)
        {
            var x = t.ToArray<float>(); var y = wb[k].ToArray<float>();
            for (int i = 0; i < x.Length; i++) Assert.That(y[i], Is.EqualTo(x[i]).Within(1e-5), $"{k}[{i}]");
        }
        Assert.That(wa.Max(kv => kv.Value.ToArray<float>().Zip(wh[kv.Key].ToArray<float>(), (p, q) => Math.Abs(p - q)).Max()), Is.GreaterThan(1e-3),
            "control: batches of 4 train differently");
    }

    [Test]
    public void PretrainedMappingLoadsOnlyMappedPrefixes()
    {
        using var source = new ToyTask(7);
        Directory.CreateDirectory(_dir);
        var ckpt = Path.Combine(_dir, "pre.ckpt");
        TrainingCheckpoint.Save(ckpt, source.Model, null, new TrainingState());
        using var target = new ToyTask(8);
        var headBefore = target.Model.StateDict()["head.weight"].ToArray<float>();
        int n = Finetuner<ToyBatch>.LoadPretrained(target.Model, ckpt, new Dictionary<string, string?> { ["image_encoder"] = "image_encoder" }, TextWriter.Null);
        Assert.That(n, Is.EqualTo(2));
        Assert.That(target.Model.StateDict()["image_encoder.weight"].ToArray<float>(), Is.EqualTo(source.Model.StateDict()["image_encoder.weight"].ToArray<float>()));
        Assert.That(target.Model.StateDict()["head.weight"].ToArray<float>(), Is.EqualTo(headBefore), "heads stay fresh");
        var e = Assert.Throws<InvalidDataException>(() => Finetuner<ToyBatch>.LoadPretrained(target.Model, ckpt, new Dictionary<string, string?> { ["model.bert"] = "model.bert" }, TextWriter.Null))!;
        Assert.That(e.Message, Does.Contain("pre.ckpt").And.Contain("model.bert"));
    }

    [Test]
    public void CriterionMustNameTheTasksDataset()
    {
        using var task = new ToyTask(1);
        var e = Assert.Throws<ConfigException>(() => new Finetuner<ToyBatch>(Config("training.early_stop.criteria=fashiongen/accuracy"), task, TextWriter.Null).Run())!;
        Assert.That(e.Message, Does.Contain("fashiongen").And.Contain("toy"));
        var e2 = Assert.Throws<ConfigException>(() => new Finetuner<ToyBatch>(Config("training.early_stop.criteria=toy/recall"), task, TextWriter.Null).Run())!;
        Assert.That(e2.Message, Does.Contain("recall").And.Contain("accuracy"));
    }
}
