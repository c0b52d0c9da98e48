using FashionViL.Autograd;
using FashionViL.Nn;
using FashionViL.Testing;

namespace FashionViL.Nn.Tests;

public class LayerTests
{
    private static (double MaxAbs, double Std) Stats(Tensor t)
    {
        var v = t.ToArray<double>();
        double mean = v.Average();
        return (v.Max(Math.Abs), Math.Sqrt(v.Select(x => (x - mean) * (x - mean)).Average()));
    }

    [Test]
    public void LinearDefaultInitStatistics()
    {
        var m = new Linear(64, 256, generator: new Generator(11));
        double bound = 1 / Math.Sqrt(64);
        var (maxW, stdW) = Stats(m.Weight);
        Assert.That(maxW, Is.LessThanOrEqualTo(bound));
        Assert.That(maxW, Is.GreaterThan(0.95 * bound));
        Assert.That(stdW, Is.EqualTo(bound / Math.Sqrt(3)).Within(3).Percent);
        var (maxB, _) = Stats(m.Bias!);
        Assert.That(maxB, Is.LessThanOrEqualTo(bound));
    }

    [Test]
    public void ConvDefaultInitUsesFanInOfKernel()
    {
        var m = new Conv2d(8, 64, 3, generator: new Generator(12));
        double bound = 1 / Math.Sqrt(8 * 9);
        var (maxW, stdW) = Stats(m.Weight);
        Assert.That(maxW, Is.LessThanOrEqualTo(bound));
        Assert.That(stdW, Is.EqualTo(bound / Math.Sqrt(3)).Within(3).Percent);
        Assert.That(new Conv2d(2, 2, 1, bias: false).Bias, Is.Null);
        Assert.That(new Conv2d(2, 2, 1, bias: false).StateDict().Keys, Is.EqualTo(new[] { "weight" }));
    }

    [Test]
    public void InitIsDeterministicPerGenerator()
    {
        var a = new Linear(5, 4, generator: new Generator(7));
        var b = new Linear(5, 4, generator: new Generator(7));
        var c = new Linear(5, 4, generator: new Generator(8));
        Assert.That(b.Weight.ToArray<float>(), Is.EqualTo(a.Weight.ToArray<float>()));
        Assert.That(c.Weight.ToArray<float>(), Is.Not.EqualTo(a.Weight.ToArray<float>()));
    }

    [Test]
    public void HfInitNormalZeroBiasAndPaddingRow()
    {
        var seq = new Sequential(new Linear(64, 256, generator: new Generator(1)), new Embedding(100, 32, paddingIdx: 0), new LayerNorm(32, 1e-12));
        Init.HfInit(seq, new Generator(5));
        var lin = (Linear)seq[0];
        var (_, std) = Stats(lin.Weight);
        Assert.That(std, Is.EqualTo(0.02).Within(3).Percent);
        Assert.That(lin.Bias!.ToArray<float>(), Is.All.EqualTo(0f));
        var emb = (Embedding)seq[1];
        Assert.That(emb.Weight.ToArray<float>().Take(32), Is.All.EqualTo(0f));
        Assert.That(Stats(emb.Weight).Std, Is.EqualTo(0.02).Within(5).Percent);
    }

    [Test]
    public void LinearMatchesReference()
    {
        var m = new Linear(3, 2, generator: new Generator(2), dtype: DType.Float64);
        using var x = OpCheck.Rand([4, 3], 1);
        using var y = m.Forward(x);
        var w = m.Weight.ToArray<double>(); var b = m.Bias!.ToArray<double>(); var xv = x.ToArray<double>();
        var want = new double[8];
        for (int i = 0; i < 4; i++) for (int o = 0; o < 2; o++)
        {
            double s = b[o];
            for (int k = 0; k < 3; k++) s += xv[i * 3 + k] * w[o * 3 + k];
            want[i * 2 + o] = s;
        }
        OpCheck.AssertClose(y, want, 1e-12, 1e-12);
    }

    [Test]
    public void Conv2dAsymmetricPaddingShape()
    {
        var m = new Conv2d(2, 3, 3, 3, new Conv2dParams(2, 2, 0, 1, 0, 1));
        using var x = Tensor.Ones([1, 2, 8, 8]);
        using var y = m.Forward(x);
        Assert.That(y.Shape, Is.EqualTo(new[] { 1, 3, 4, 4 }));
    }

    [Test]
    public void EmbeddingPaddingRowZeroAndNoGrad()
    {
        var e = new Embedding(5, 3, paddingIdx: 2, generator: new Generator(3));
        Assert.That(e.Weight.ToArray<float>().Skip(6).Take(3), Is.All.EqualTo(0f));
        using var ids = Tensor.FromArray(new long[] { 2, 1, 2, 4 }, 4);
        using (var y = e.Forward(ids)) using (var s = y.Sum()) s.Backward();
        var g = e.Weight.Grad!.ToArray<float>();
        Assert.That(g.Skip(6).Take(3), Is.All.EqualTo(0f));
        Assert.That(g.Skip(3).Take(3), Is.All.EqualTo(1f));
        Assert.Throws<ArgumentException>(() => new Embedding(5, 3, paddingIdx: 5));
    }

    [Test]
    public void LayerNormAndGroupNormNormalise()
    {
        var ln = new LayerNorm(4, 1e-12, dtype: DType.Float64);
        Assert.That(ln.Eps, Is.EqualTo(1e-12));
        using var x = OpCheck.Rand([3, 4], 4);
        using var y = ln.Forward(x);
        var v = y.ToArray<double>();
        for (int r = 0; r < 3; r++) Assert.That(v.Skip(r * 4).Take(4).Average(), Is.EqualTo(0).Within(1e-12));
        Assert.Throws<ArgumentException>(() => ln.Forward(Tensor.Zeros([2, 5], DType.Float64)));
        var gn = new GroupNorm(2, 4, dtype: DType.Float64);
        using var x2 = OpCheck.Rand([2, 4, 3, 3], 5);
        using var y2 = gn.Forward(x2);
        var v2 = y2.ToArray<double>();
        Assert.That(v2.Take(18).Average(), Is.EqualTo(0).Within(1e-12));
        Assert.That(gn.StateDict().Keys, Is.EqualTo(new[] { "weight", "bias" }));
    }

    [Test]
    public void DropoutFollowsModeAndGenerator()
    {
        using var x = Tensor.Ones([1000]);
        var d1 = new Dropout(0.5, new Generator(9));
        var d2 = new Dropout(0.5, new Generator(9));
        using var y1 = d1.Forward(x);
        using var y2 = d2.Forward(x);
        Assert.That(y1.ToArray<float>(), Is.EqualTo(y2.ToArray<float>()));
        int zeros = y1.ToArray<float>().Count(v => v == 0);
        Assert.That(zeros, Is.InRange(400, 600));
        d1.Eval();
        using var y3 = d1.Forward(x);
        Assert.That(y3.ToArray<float>(), Is.All.EqualTo(1f));
        Assert.Throws<ArgumentException>(() => new Dropout(1.5));
    }

    [Test]
    public void ActivationsMatchOps()
    {
        using var x = OpCheck.Rand([7], 6);
        foreach (var (m, f) in new (Module, Func<Tensor, Tensor>)[]
                 { (new ReLU(), t => t.Relu()), (new GELU(), t => t.Gelu()), (new Tanh(), t => t.Tanh()), (new SiLU(), t => t.Silu()) })
        {
            using var a = m.Forward(x);
            using var b = f(x);
            Assert.That(a.ToArray<double>(), Is.EqualTo(b.ToArray<double>()), m.GetType().Name);
        }
        Assert.That(new ReLU().StateDict(), Is.Empty);
    }

    [Test]
    public void ModuleListNamesAndIndexing()
    {
        var list = new ModuleList(new Linear(2, 2), new ReLU(), new Linear(2, 1));
        Assert.That(list.Count, Is.EqualTo(3));
        Assert.That(list.StateDict().Keys, Is.EqualTo(new[] { "0.weight", "0.bias", "2.weight", "2.bias" }));
        Assert.That(list[1], Is.InstanceOf<ReLU>());
    }

    [Test]
    public void TinySequentialTrainsInStepScopes()
    {
        var g = new Generator(21);
        var model = new Sequential(new Linear(4, 16, generator: g), new Tanh(), new Linear(16, 1, generator: g));
        using var x = OpCheck.Rand([32, 4], 31, DType.Float32);
        using var target = x.Sum([1], keepDim: true);
        double first = 0, last = 0;
        for (int step = 0; step < 60; step++)
        {
            using var scope = Tensor.Scope();
            model.ZeroGrad();
            var pred = model.Forward(x);
            var diff = pred - target;
            var loss = (diff * diff).Mean();
            loss.Backward();
            using (GradMode.NoGrad())
                foreach (var p in model.Parameters())
                {
                    var upd = p - p.Grad! * 0.1;
                    Backends.Get(p.Device).Copy(upd, p);
                }
            if (step == 0) first = loss.Item();
            last = loss.Item();
        }
        model.ZeroGrad();
        Assert.That(last, Is.LessThan(0.2 * first));
        Assert.That(model.Parameters().All(p => !p.IsDisposed && p.RequiresGrad));
    }
}
