using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Autograd.Tests;

/// <summary>
/// Our ops against PyTorch on the fixtures in tests/fixtures/core (made by tools/fixtures/make_core_fixtures.py).
/// Each file holds float32 inputs, an upstream gradient gy (backward of Σ out·gy) and the expected values, computed
/// by torch in float64 from the stored inputs and rounded to float32. Every case runs twice:
/// float32 (rtol 1e-5, atol 1e-5) and float64 from the same inputs (rtol 1e-6, atol 1e-7: the only error left is the
/// float32 rounding of the expected values, ≤ 6e-8 relative).
/// </summary>
public class GoldenTests
{
    private static string? _dir;

    private static string FixtureDir
    {
        get
        {
            if (_dir is not null) return _dir;
            for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
            {
                var p = Path.Combine(d.FullName, "tests", "fixtures", "core");
                if (Directory.Exists(p)) return _dir = p;
            }
            throw new DirectoryNotFoundException($"tests/fixtures/core not found above {TestContext.CurrentContext.TestDirectory}");
        }
    }

    /// <summary>One fixture, with its tensors converted to the dtype under test.</summary>
    private sealed class Case
    {
        private readonly SafeTensorsFile _file;
        private readonly List<(string Key, Tensor Leaf)> _leaves = [];
        public DType DType { get; }
        public string Name { get; }

        public Case(string name, DType dtype)
        {
            Name = name;
            DType = dtype;
            _file = SafeTensors.Read(Path.Combine(FixtureDir, name + ".safetensors"));
        }

        public string Meta(string key) => _file.Metadata[key];
        public string? MetaOrNull(string key) => _file.Metadata.TryGetValue(key, out var v) ? v : null;
        public bool Has(string key) => _file.Tensors.ContainsKey(key);
        public int[] ShapeOf(string key) => _file.Tensors[key].Shape;
        public double MetaD(string key) => double.Parse(_file.Metadata[key], System.Globalization.CultureInfo.InvariantCulture);
        public int MetaI(string key) => int.Parse(_file.Metadata[key], System.Globalization.CultureInfo.InvariantCulture);

        /// <summary>
        /// An input (floating ones converted to the dtype under test); a leaf requiring grad when asked, whose gradient
        /// <see cref="ExpectWithGrads"/> then checks against "g" + key.
        /// </summary>
        public Tensor In(string key, bool grad = false)
        {
            var t = _file.Tensors[key];
            var x = t.DType.IsFloating() ? t.To(DType) : t.Alias();
            if (grad)
            {
                x.RequiresGrad = true;
                _leaves.Add((key, x));
            }
            return x;
        }

        /// <summary>
        /// Checks the output against <paramref name="key"/>, backpropagates the fixture's upstream gradient "gy"
        /// (or 1 for a scalar loss when <paramref name="upstream"/> is false), then checks the gradient of every
        /// leaf made by <c>In(k, grad: true)</c>, in creation order, against "g" + k.
        /// </summary>
        public void ExpectWithGrads(Tensor y, string key, bool upstream = true)
        {
            Expect(y, key);
            if (upstream) y.Backward(In("gy"));
            else y.Backward();
            foreach (var (k, leaf) in _leaves) Expect(leaf.Grad, "g" + k);
        }

        public void Expect(Tensor? got, string key)
        {
            Assert.That(got, Is.Not.Null, $"{Name}/{key}: no value (gradient missing?)");
            Assert.That(got!.DType, Is.EqualTo(DType), $"{Name}/{key}: dtype");
            var (rtol, atol) = DType == DType.Float32 ? (1e-5, 1e-5) : (1e-6, 1e-7);
            OpCheck.AssertClose(got, _file.Tensors[key], rtol, atol, $"{Name}/{key} ({DType.Name()})");
        }
    }

    // ------------------------------------------------------------------ GELU, softmax, layer norm, CE, attention

    [Test]
    public void Gelu([Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case("gelu", dt);
        Assert.That(c.Meta("approximate"), Is.EqualTo("none"));
        var x = c.In("x", grad: true);
        var y = x.Gelu();
        c.ExpectWithGrads(y, "y");
    }

    [Test]
    public void Softmax([Values(false, true)] bool log, [Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case(log ? "log_softmax" : "softmax", dt);
        Assert.That(c.MetaI("dim"), Is.EqualTo(-1));
        var x = c.In("x", grad: true);
        var y = log ? x.LogSoftmax(-1) : x.Softmax(-1);
        c.ExpectWithGrads(y, "y");
    }

    [Test]
    public void LayerNorm([Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case("layernorm", dt);
        Assert.That(c.MetaD("eps"), Is.EqualTo(1e-12));
        var x = c.In("x", grad: true);
        var w = c.In("weight", grad: true);
        var b = c.In("bias", grad: true);
        var y = x.LayerNorm(w, b, c.MetaD("eps"));
        c.ExpectWithGrads(y, "y");
    }

    [Test]
    public void CrossEntropy_IgnoreIndex_Mean([Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case("cross_entropy_ignore", dt);
        Assert.That(c.MetaI("ignore_index"), Is.EqualTo(-1));
        var logits = c.In("logits", grad: true);
        var target = c.In("target");
        Assert.That(target.DType, Is.EqualTo(DType.Int64));
        Assert.That(target.ToArray<long>(), Does.Contain(-1L), "the fixture exercises ignored rows");
        var loss = Ops.CrossEntropy(logits, target, ignoreIndex: -1, reduction: Reduction.Mean);
        c.ExpectWithGrads(loss, "loss", upstream: false);
    }

    [Test]
    public void CrossEntropy_SoftLabels([Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case("cross_entropy_soft", dt);
        var logits = c.In("logits", grad: true);
        var target = c.In("target");
        var loss = Ops.CrossEntropy(logits, target);
        c.ExpectWithGrads(loss, "loss", upstream: false);
    }

    [Test]
    public void Attention_PaddingMask([Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case("attention_masked", dt);
        var q = c.In("q", grad: true);
        var k = c.In("k", grad: true);
        var v = c.In("v", grad: true);
        var mask = c.In("mask");
        Assert.That(mask.Shape, Is.EqualTo(new[] { 2, 1, 1, 5 }));
        double scale = c.MetaD("scale");
        Assert.That(scale, Is.EqualTo(1 / Math.Sqrt(8)).Within(1e-15));
        var o = Ops.Attention(q, k, v, mask, scale);
        c.ExpectWithGrads(o, "out");
    }

    // ------------------------------------------------------------------ CNN ops

    private static Conv2dParams ConvParams(Case c)
    {
        int s = c.MetaI("stride"), p = c.MetaI("padding");
        int l = p, r = p, t = p, b = p;
        if (c.MetaOrNull("pre_pad_lrtb") is { } pre)
        {
            // The fixture pads with F.pad(x, (left, right, top, bottom)) and then convolves with `padding`.
            var e = pre.Split(',').Select(int.Parse).ToArray();
            l += e[0]; r += e[1]; t += e[2]; b += e[3];
        }
        return new Conv2dParams(s, s, t, b, l, r);
    }

    private static readonly string[] ConvCases = ["conv2d_3x3_s1_p1", "conv2d_7x7_s2_p3_stem", "conv2d_1x1_s2", "conv2d_3x3_s2_asympad"];

    [Test]
    public void Conv2d([ValueSource(nameof(ConvCases))] string name, [Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case(name, dt);
        var x = c.In("x", grad: true);
        var w = c.In("w", grad: true);
        var b = c.Has("b") ? c.In("b", grad: true) : null;
        var p = ConvParams(c);
        // Symmetric cases go through the int overload (the one ResNet uses).
        var y = p.PadTop == p.PadBottom && p.PadLeft == p.PadRight && p.PadTop == p.PadLeft
            ? Ops.Conv2d(x, w, b, stride: p.StrideH, padding: p.PadTop)
            : Ops.Conv2d(x, w, b, p);
        c.ExpectWithGrads(y, "y"); // gx, gw, and gb when the case has a bias
    }

    [Test]
    public void MaxPool2d([Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case("maxpool2d_3x3_s2_p1", dt);
        var x = c.In("x", grad: true);
        var y = Ops.MaxPool2d(x, c.MetaI("kernel"), c.MetaI("stride"), c.MetaI("padding"));
        c.ExpectWithGrads(y, "y");
    }

    [Test]
    public void BatchNorm2d([Values(true, false)] bool training, [Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case(training ? "batchnorm2d_train" : "batchnorm2d_eval", dt);
        Assert.That(c.Meta("training"), Is.EqualTo(training ? "True" : "False"));
        var x = c.In("x", grad: true);
        var w = c.In("weight", grad: true);
        var b = c.In("bias", grad: true);
        var rm = c.In("running_mean");
        var rv = c.In("running_var");
        var y = Ops.BatchNorm2d(x, w, b, rm, rv, training, c.MetaD("momentum"), c.MetaD("eps"));
        c.Expect(rm, "running_mean_after");
        c.Expect(rv, "running_var_after");
        c.ExpectWithGrads(y, "y");
    }

    [Test]
    public void GroupNorm([Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var scope = Tensor.Scope();
        var c = new Case("groupnorm", dt);
        Assert.That(c.MetaI("groups"), Is.EqualTo(32));
        Assert.That(c.MetaD("eps"), Is.EqualTo(1e-6));
        var x = c.In("x", grad: true);
        var w = c.In("weight", grad: true);
        var b = c.In("bias", grad: true);
        var y = Ops.GroupNorm(x, c.MetaI("groups"), w, b, c.MetaD("eps"));
        c.ExpectWithGrads(y, "y");
    }

    // ------------------------------------------------------------------ fixture sanity (runs without any op)

    [Test]
    public void Fixtures_AreSmall_AndLoad()
    {
        var files = Directory.GetFiles(FixtureDir, "*.safetensors");
        Assert.That(files, Has.Length.GreaterThanOrEqualTo(15));
        Assert.That(files.Sum(f => new FileInfo(f).Length), Is.LessThan(1 << 20));
        foreach (var f in files)
        {
            using var st = SafeTensors.Read(f);
            Assert.That(st.Metadata.ContainsKey("op"), Is.True, f);
            Assert.That(st.Tensors.Values.Where(t => t.DType.IsFloating()).Select(t => t.DType), Has.All.EqualTo(DType.Float32), f);
        }
    }
}
