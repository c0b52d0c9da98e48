using FashionViL.Autograd;
using FashionViL.Nn;
using FashionViL.Testing;

namespace FashionViL.Nn.Tests;

/// <summary>A torchvision-shaped miniature: conv1, bn1, layer1 = Sequential(Block), fc.</summary>
internal sealed class Block : Module
{
    public Conv2d Conv1 { get; }
    public BatchNorm2d Bn1 { get; }
    public Block(Generator g)
    {
        Conv1 = RegisterModule("conv1", new Conv2d(4, 4, 3, padding: 1, bias: false, generator: g));
        Bn1 = RegisterModule("bn1", new BatchNorm2d(4));
    }
    public override Tensor Forward(Tensor x)
    {
        using var c = Conv1.Forward(x);
        using var b = Bn1.Forward(c);
        return b.Relu();
    }
}

internal sealed class TinyNet : Module
{
    public Conv2d Conv1 { get; }
    public BatchNorm2d Bn1 { get; }
    public Sequential Layer1 { get; }
    public Linear Fc { get; }
    public TinyNet(Generator g)
    {
        Conv1 = RegisterModule("conv1", new Conv2d(2, 4, 3, padding: 1, generator: g));
        Bn1 = RegisterModule("bn1", new BatchNorm2d(4));
        Layer1 = RegisterModule("layer1", new Sequential(new Block(g)));
        Fc = RegisterModule("fc", new Linear(4, 3, generator: g));
    }
    public override Tensor Forward(Tensor x)
    {
        using var c = Conv1.Forward(x);
        using var b = Bn1.Forward(c);
        using var l = Layer1.Forward(b);
        using var m = l.Mean([2, 3]);
        return Fc.Forward(m);
    }
}

public class ModuleTests
{
    private static Tensor Input(ulong seed) => OpCheck.Rand([2, 2, 5, 5], seed, DType.Float32);

    [Test]
    public void NamesFollowPyTorchConvention()
    {
        var net = new TinyNet(new Generator(1));
        var names = net.StateDict().Keys.ToArray();
        Assert.That(names, Is.EqualTo(new[]
        {
            "conv1.weight", "conv1.bias",
            "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
            "layer1.0.conv1.weight",
            "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var", "layer1.0.bn1.num_batches_tracked",
            "fc.weight", "fc.bias",
        }));
        Assert.That(net.NamedParameters().Select(p => p.Name), Does.Not.Contain("bn1.running_mean"));
        Assert.That(net.NamedParameters().Count(), Is.EqualTo(9));
        Assert.That(net.NamedBuffers().Select(b => b.Name), Does.Contain("layer1.0.bn1.running_var"));
        Assert.That(net.StateDict()["bn1.num_batches_tracked"].DType, Is.EqualTo(DType.Int64));
        Assert.That(net.Parameters().All(p => p.RequiresGrad && p.IsLeaf));
    }

    [Test]
    public void StateDictRoundTripGivesIdenticalOutputs()
    {
        var a = new TinyNet(new Generator(1));
        using (var x0 = Input(5)) using (var y0 = a.Forward(x0)) { } // moves BN running stats away from init
        a.Eval();
        var b = new TinyNet(new Generator(2));
        b.Eval();
        using var x = Input(7);
        using (var ya = a.Forward(x)) using (var yb0 = b.Forward(x))
            Assert.That(yb0.ToArray<float>(), Is.Not.EqualTo(ya.ToArray<float>()));
        var r = b.LoadStateDict(a.StateDict());
        Assert.That(r.IsClean);
        using var y1 = a.Forward(x);
        using var y2 = b.Forward(x);
        Assert.That(y2.ToArray<float>(), Is.EqualTo(y1.ToArray<float>()));
        Assert.That(b.Bn1.NumBatchesTracked.Item(), Is.EqualTo(1));
        // values are copied, not shared
        Assert.That(b.Fc.Weight, Is.Not.SameAs(a.Fc.Weight));
    }

    [Test]
    public void LoadConvertsDType()
    {
        var a = new Linear(3, 2, generator: new Generator(3));
        using var w64 = a.Weight.To(DType.Float64);
        using var b64 = a.Bias!.To(DType.Float64);
        var b = new Linear(3, 2, generator: new Generator(4));
        b.LoadStateDict(new Dictionary<string, Tensor> { ["weight"] = w64, ["bias"] = b64 });
        Assert.That(b.Weight.DType, Is.EqualTo(DType.Float32));
        Assert.That(b.Weight.ToArray<float>(), Is.EqualTo(a.Weight.ToArray<float>()));
    }

    private static Dictionary<string, Tensor> BrokenDict(Linear src, out Tensor[] owned)
    {
        var wrongBias = Tensor.Zeros([5]);
        var extra = Tensor.Zeros([1]);
        owned = [wrongBias, extra];
        // "weight" missing, "bias" mis-shaped, "extra.thing" unexpected
        return new Dictionary<string, Tensor> { ["bias"] = wrongBias, ["extra.thing"] = extra };
    }

    [Test]
    public void StrictLoadListsEveryProblemWithShapes()
    {
        var m = new Linear(3, 2, generator: new Generator(3));
        var before = m.Weight.ToArray<float>();
        var d = BrokenDict(m, out var owned);
        var ex = Assert.Throws<InvalidOperationException>(() => m.LoadStateDict(d))!;
        Assert.That(ex.Message, Does.Contain("missing").And.Contain("weight"));
        Assert.That(ex.Message, Does.Contain("unexpected").And.Contain("extra.thing"));
        Assert.That(ex.Message, Does.Contain("bias").And.Contain("[2]").And.Contain("[5]"));
        Assert.That(m.Weight.ToArray<float>(), Is.EqualTo(before));
        foreach (var t in owned) t.Dispose();
    }

    [Test]
    public void NonStrictLoadReturnsTheLists()
    {
        var m = new Linear(3, 2, generator: new Generator(3));
        var d = BrokenDict(m, out var owned);
        using var w = Tensor.Ones([2, 3]);
        var r = m.LoadStateDict(d, strict: false);
        Assert.That(r.Missing, Is.EqualTo(new[] { "weight" }));
        Assert.That(r.Unexpected, Is.EqualTo(new[] { "extra.thing" }));
        Assert.That(r.Mismatched.Count, Is.EqualTo(1));
        Assert.That(r.Mismatched[0].Key, Is.EqualTo("bias"));
        Assert.That(r.Mismatched[0].Expected, Is.EqualTo(new[] { 2 }));
        Assert.That(r.Mismatched[0].Got, Is.EqualTo(new[] { 5 }));
        d["weight"] = w;
        d.Remove("bias");
        var r2 = m.LoadStateDict(d, strict: false);
        Assert.That(r2.Missing, Is.EqualTo(new[] { "bias" }));
        Assert.That(m.Weight.ToArray<float>(), Is.All.EqualTo(1f));
        foreach (var t in owned) t.Dispose();
    }

    [Test]
    public void TrainEvalRecursive()
    {
        var net = new TinyNet(new Generator(1));
        Assert.That(net.NamedModules().All(m => m.Module.IsTraining));
        net.Eval();
        Assert.That(net.NamedModules().All(m => !m.Module.IsTraining));
        net.Train();
        Assert.That(net.NamedModules().All(m => m.Module.IsTraining));
    }

    [Test]
    public void BatchNormCountsBatchesAndEvalDoesNotUpdate()
    {
        var bn = new BatchNorm2d(2);
        using var x = OpCheck.Rand([3, 2, 2, 2], 9, DType.Float32, 1, 3);
        using (var y = bn.Forward(x)) { }
        using (var y = bn.Forward(x)) { }
        Assert.That(bn.NumBatchesTracked.Item(), Is.EqualTo(2));
        Assert.That(bn.RunningMean.ToArray<float>().All(v => v > 0.1f), "running mean moved toward the batch mean (≥ 1)");
        var mean = bn.RunningMean.ToArray<float>();
        bn.Eval();
        using (var y = bn.Forward(x)) { }
        Assert.That(bn.NumBatchesTracked.Item(), Is.EqualTo(2));
        Assert.That(bn.RunningMean.ToArray<float>(), Is.EqualTo(mean));
    }

    [Test]
    public void FreezeTurnsGradsOffAndKeepsBatchNormInEval()
    {
        var net = new TinyNet(new Generator(1));
        net.Freeze();
        Assert.That(net.Parameters().All(p => !p.RequiresGrad));
        net.Train();
        Assert.That(net.Bn1.IsTraining, Is.False);
        Assert.That(net.Layer1[0].NamedChildren().Single(c => c.Name == "bn1").Module.IsTraining, Is.False);
        Assert.That(net.Fc.IsTraining, Is.True);
        var mean = net.Bn1.RunningMean.ToArray<float>();
        using (var x = Input(3)) using (var y = net.Forward(x)) { }
        Assert.That(net.Bn1.RunningMean.ToArray<float>(), Is.EqualTo(mean));
        Assert.That(net.Bn1.NumBatchesTracked.Item(), Is.EqualTo(0));
        net.Unfreeze().Train();
        Assert.That(net.Parameters().All(p => p.RequiresGrad));
        Assert.That(net.Bn1.IsTraining);
    }

    [Test]
    public void ToCpuKeepsValuesAndModules()
    {
        var net = new TinyNet(new Generator(1));
        var before = net.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.ToArray<double>());
        var fc = net.Fc;
        net.To(Device.Cpu);
        Assert.That(net.Fc, Is.SameAs(fc));
        foreach (var (k, t) in net.StateDict())
        {
            Assert.That(t.Device, Is.EqualTo(Device.Cpu));
            Assert.That(t.ToArray<double>(), Is.EqualTo(before[k]), k);
        }
    }

    [Test]
    public void ZeroGradFreesGrads()
    {
        var m = new Linear(3, 2, generator: new Generator(3));
        using var x = Tensor.Ones([4, 3]);
        using (var y = m.Forward(x)) using (var s = y.Sum()) s.Backward();
        var g = m.Weight.Grad!;
        Assert.That(g, Is.Not.Null);
        m.ZeroGrad();
        Assert.That(m.Parameters().All(p => p.Grad is null));
        Assert.That(g.IsDisposed);
    }

    [Test]
    public void ParametersSurviveStepScopes()
    {
        using (Tensor.Scope()) { _ = new Linear(2, 2, generator: new Generator(1)); }
        Linear m;
        using (Tensor.Scope()) m = new Linear(2, 2, generator: new Generator(1));
        Assert.That(m.Weight.IsDisposed, Is.False);
        Assert.That(m.Bias!.IsDisposed, Is.False);
    }
}
