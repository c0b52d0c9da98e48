using FashionViL.Autograd;
using FashionViL.Nn;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Optim;

namespace FashionViL.Checkpoints.Tests;

/// <summary>Training checkpoints: exact resume (model, AdamW, warm-up schedule, dropout RNG, data RNG), atomic writes,
/// and errors on damaged files.</summary>
public class TrainingCheckpointTests
{
    /// <summary>2-layer MLP with dropout drawing from its own generator, plus an int64 buffer.</summary>
    sealed class Mlp : Module
    {
        public readonly Linear Fc1, Fc2;
        public readonly Dropout Drop;

        public Mlp(Generator init, Generator dropout)
        {
            Fc1 = RegisterModule("fc1", new Linear(6, 16, generator: init));
            Drop = RegisterModule("drop", new Dropout(0.3, dropout));
            Fc2 = RegisterModule("fc2", new Linear(16, 3, generator: init));
            RegisterBuffer("seen", Tensor.Zeros([], DType.Int64));
        }

        public Tensor Seen => Buffer("seen")!;

        public override Tensor Forward(Tensor x) => Fc2.Forward(Drop.Forward(Fc1.Forward(x).Relu()));
    }

    /// <summary>A run: model, AdamW with a decay and a no-decay group, warm-up + multi-step schedule, dropout and data generators.</summary>
    sealed class Run : IDisposable
    {
        public readonly Generator DropGen, DataGen;
        public readonly Mlp Model;
        public readonly AdamW Opt;
        public readonly WarmupMultiStepSchedule Schedule = new(4, [7], warmupFactor: 0.25);
        public int Step;

        public Run(ulong seed)
        {
            DropGen = new Generator(seed + 1);
            DataGen = new Generator(seed + 2);
            Model = new Mlp(new Generator(seed), DropGen);
            Opt = new AdamW(ParamGroups.Build(Model.NamedParameters(), 0.01, 0.05, [ParamRule.Contains("no_decay", 1.0, 0.0, "bias")]));
        }

        public void Train(int steps)
        {
            for (int s = 0; s < steps; s++, Step++)
            {
                Schedule.Apply(Opt, Step);
                using (Tensor.Scope())
                {
                    var x = DataGen.Normal([5, 6]);
                    var y = DataGen.RandInt([5], 0, 3);
                    var loss = Ops.CrossEntropy(Model.Forward(x), y);
                    loss.Backward();
                    Opt.Step();
                    Opt.ZeroGrad();
                }
                using var seen = Tensor.Full([], Step + 1, DType.Int64);
                Model.LoadStateDict(new Dictionary<string, Tensor> { ["seen"] = seen }, strict: false);
            }
        }

        public TrainingState State() => new TrainingState
        {
            GlobalStep = Step, SchedulerStep = Step, Config = "model:\n  hidden: 16\noptimizer: adamw\n",
        }.CaptureRng("dropout", DropGen).CaptureRng("data", DataGen);

        public void Dispose() => Opt.Dispose();
    }

    string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "fvl-ckpt-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static Dictionary<string, float[]> Params(Module m) => m.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.ToArray<float>());

    [Test]
    public void Resume_TenStraight_EqualsFivePlusSaveLoadPlusFive_Bitwise()
    {
        using var straight = new Run(100);
        straight.Train(10);

        var path = Path.Combine(_dir, "ckpt.safetensors");
        using (var first = new Run(100))
        {
            first.Train(5);
            var st = first.State();
            st.DataPosition["epoch"] = 0;
            st.DataPosition["index"] = 5L * 5;
            st.SchedulerState["kind"] = "warmup_multistep";
            st.Metadata["note"] = "unit test";
            TrainingCheckpoint.Save(path, first.Model, first.Opt, st);
        }

        // fresh objects with different seeds: everything that matters must come from the file
        using var resumed = new Run(999);
        var loaded = TrainingCheckpoint.Load(path, resumed.Model, resumed.Opt);
        loaded.RestoreRng("dropout", resumed.DropGen);
        loaded.RestoreRng("data", resumed.DataGen);
        resumed.Step = (int)loaded.GlobalStep;
        Assert.That(loaded.GlobalStep, Is.EqualTo(5));
        Assert.That(loaded.SchedulerStep, Is.EqualTo(5));
        Assert.That(loaded.DataPosition, Is.EquivalentTo(new Dictionary<string, long> { ["epoch"] = 0, ["index"] = 25 }));
        Assert.That(loaded.SchedulerState["kind"], Is.EqualTo("warmup_multistep"));
        Assert.That(loaded.Metadata["note"], Is.EqualTo("unit test"));
        Assert.That(loaded.Config, Is.EqualTo("model:\n  hidden: 16\noptimizer: adamw\n"));
        Assert.That(resumed.Model.Seen.DType, Is.EqualTo(DType.Int64));
        Assert.That(resumed.Model.Seen.ToArray<long>(), Is.EqualTo(new long[] { 5 }));
        resumed.Train(5);

        var a = Params(straight.Model);
        var b = Params(resumed.Model);
        foreach (var (k, v) in a) Assert.That(b[k], Is.EqualTo(v), $"{k} after resume (bitwise)");
        Assert.That(resumed.Model.Seen.ToArray<long>(), Is.EqualTo(new long[] { 10 }));
        foreach (var n in a.Keys) Assert.That(resumed.Opt.StepCount(n), Is.EqualTo(10), n);
        var sa = straight.Opt.StateDict();
        var sb = resumed.Opt.StateDict();
        foreach (var (n, ps) in sa.State)
            foreach (var (bn, t) in ps.Buffers)
                Assert.That(sb.State[n].Buffers[bn].ToArray<float>(), Is.EqualTo(t.ToArray<float>()), $"{n}.{bn}");
        Assert.That(sb.Groups.Select(g => g.Lr), Is.EqualTo(sa.Groups.Select(g => g.Lr)));
    }

    [Test]
    public void Resume_WithoutRestoringDropoutRng_Diverges()
    {
        // The bitwise test above can fail: the same resume that skips the dropout generator's state ends elsewhere.
        using var straight = new Run(100);
        straight.Train(10);
        var path = Path.Combine(_dir, "ckpt.safetensors");
        using (var first = new Run(100)) { first.Train(5); TrainingCheckpoint.Save(path, first.Model, first.Opt, first.State()); }
        using var resumed = new Run(999);
        var loaded = TrainingCheckpoint.Load(path, resumed.Model, resumed.Opt);
        loaded.RestoreRng("data", resumed.DataGen);
        resumed.Step = 5;
        resumed.Train(5);
        Assert.That(Params(resumed.Model)["fc1.weight"], Is.Not.EqualTo(Params(straight.Model)["fc1.weight"]));
    }

    [Test]
    public void InterruptedSave_LeavesPreviousFileIntact_AndNoPartialFile()
    {
        using var run = new Run(7);
        run.Train(2);
        var path = Path.Combine(_dir, "ckpt.safetensors");
        TrainingCheckpoint.Save(path, run.Model, run.Opt, run.State());
        var before = File.ReadAllBytes(path);
        run.Train(1);

        long seenBytes = 0;
        var e = Assert.Throws<InvalidOperationException>(() => TrainingCheckpoint.Save(path, run.Model, run.Opt, run.State(), written =>
        {
            seenBytes = written;
            if (written > 200) throw new InvalidOperationException("simulated crash mid-write");
        }));
        Assert.That(e!.Message, Does.Contain("simulated crash"));
        Assert.That(seenBytes, Is.GreaterThan(200), "the hook ran while data was being written");
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before), "previous checkpoint unchanged");
        Assert.That(Directory.GetFiles(_dir), Is.EqualTo(new[] { path }), "no temporary or partial file left");

        // the old file still loads: step 2
        using var fresh = new Run(8);
        Assert.That(TrainingCheckpoint.Load(path, fresh.Model, fresh.Opt).GlobalStep, Is.EqualTo(2));
    }

    [Test]
    public void SaveOntoAFolder_FailsNamingPath_NothingWritten()
    {
        using var run = new Run(7);
        var path = Path.Combine(_dir, "taken");
        Directory.CreateDirectory(path);
        var e = Assert.Throws<IOException>(() => TrainingCheckpoint.Save(path, run.Model, run.Opt, run.State()));
        Assert.That(e!.Message, Does.Contain(path));
        Assert.That(Directory.GetFiles(_dir), Is.Empty);
    }

    [Test]
    public void TruncatedOrCorruptCheckpoint_ErrorNamesTheFile()
    {
        using var run = new Run(7);
        run.Train(1);
        var path = Path.Combine(_dir, "ckpt.safetensors");
        TrainingCheckpoint.Save(path, run.Model, run.Opt, run.State());
        var bytes = File.ReadAllBytes(path);

        var cut = Path.Combine(_dir, "cut.safetensors");
        File.WriteAllBytes(cut, bytes[..(bytes.Length - 37)]);
        using var fresh = new Run(8);
        var e = Assert.Throws<InvalidDataException>(() => TrainingCheckpoint.Load(cut, fresh.Model, fresh.Opt));
        Assert.That(e!.Message, Does.Contain(cut));

        var header = Path.Combine(_dir, "header.safetensors");
        File.WriteAllBytes(header, bytes[..20]);
        e = Assert.Throws<InvalidDataException>(() => TrainingCheckpoint.Read(header));
        Assert.That(e!.Message, Does.Contain(header));

        var missing = Path.Combine(_dir, "nope.safetensors");
        var nf = Assert.Throws<FileNotFoundException>(() => TrainingCheckpoint.Read(missing));
        Assert.That(nf!.Message, Does.Contain(missing));

        // a plain safetensors model file is not a training checkpoint
        var plain = Path.Combine(_dir, "plain.safetensors");
        SafeTensors.Save(plain, run.Model.StateDict());
        e = Assert.Throws<InvalidDataException>(() => TrainingCheckpoint.Read(plain));
        Assert.That(e!.Message, Does.Contain(plain).And.Contain("format"));
    }

    [Test]
    public void WrongModel_StrictLoadFailsNamingFileAndKeys()
    {
        using var run = new Run(7);
        var path = Path.Combine(_dir, "ckpt.safetensors");
        TrainingCheckpoint.Save(path, run.Model, null, run.State());
        var other = new Linear(6, 3, generator: new Generator(1));
        var e = Assert.Throws<InvalidDataException>(() => TrainingCheckpoint.Load(path, other, null));
        Assert.That(e!.Message, Does.Contain(path).And.Contain("fc1.weight"));
        using var fresh = new Run(8);
        e = Assert.Throws<InvalidDataException>(() => TrainingCheckpoint.Load(path, fresh.Model, fresh.Opt));
        Assert.That(e!.Message, Does.Contain(path).And.Contain("no optimizer state"));
    }
}
