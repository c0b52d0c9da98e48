using FashionViL.Autograd;
using FashionViL.Nn;
using FashionViL.Nn.Models;
using FashionViL.Testing;

namespace FashionViL.Nn.Tests;

/// <summary>
/// ResNet-50: state-dict names against the torchvision architecture rules and a key list dumped from torchvision
/// (tests/fixtures/resnet/resnet50_keys.txt), freezing, output shapes, and a golden against torchvision
/// (tests/fixtures/resnet/resnet50_golden.safetensors, made by tools/fixtures/make_resnet_fixture.py) with weights
/// filled from the same closed-form formula in both languages.
/// </summary>
public class ResNetTests
{
    private static string FixturePath(string file)
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "tests", "fixtures", "resnet", file);
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException($"tests/fixtures/resnet/{file} not found above {TestContext.CurrentContext.TestDirectory}");
    }

    /// <summary>torchvision's key order from the architecture rules: stem, layers (3,4,6,3 bottlenecks, downsample on block 0), fc.</summary>
    private static List<(string Key, int[] Shape)> ExpectedKeys(bool includeFc)
    {
        var keys = new List<(string, int[])>();
        void Bn(string p, int c)
        {
            keys.Add(($"{p}.weight", [c])); keys.Add(($"{p}.bias", [c]));
            keys.Add(($"{p}.running_mean", [c])); keys.Add(($"{p}.running_var", [c]));
            keys.Add(($"{p}.num_batches_tracked", []));
        }
        keys.Add(("conv1.weight", [64, 3, 7, 7])); Bn("bn1", 64);
        int[] blocks = [3, 4, 6, 3], planes = [64, 128, 256, 512];
        int inplanes = 64;
        for (int s = 0; s < 4; s++)
            for (int i = 0; i < blocks[s]; i++)
            {
                string p = $"layer{s + 1}.{i}";
                int w = planes[s], o = 4 * w;
                keys.Add(($"{p}.conv1.weight", [w, inplanes, 1, 1])); Bn($"{p}.bn1", w);
                keys.Add(($"{p}.conv2.weight", [w, w, 3, 3])); Bn($"{p}.bn2", w);
                keys.Add(($"{p}.conv3.weight", [o, w, 1, 1])); Bn($"{p}.bn3", o);
                if (i == 0) { keys.Add(($"{p}.downsample.0.weight", [o, inplanes, 1, 1])); Bn($"{p}.downsample.1", o); }
                inplanes = o;
            }
        if (includeFc) { keys.Add(("fc.weight", [1000, 2048])); keys.Add(("fc.bias", [1000])); }
        return keys;
    }

    private static List<(string Key, int[] Shape)> TorchvisionKeys() =>
        File.ReadAllLines(FixturePath("resnet50_keys.txt")).Where(l => l.Length > 0).Select(l =>
        {
            var parts = l.Split(' ');
            var shape = parts.Length < 2 || parts[1].Length == 0 ? [] : parts[1].Split(',').Select(int.Parse).ToArray();
            return (parts[0], shape);
        }).ToList();

    private static List<(string Key, int[] Shape)> OurKeys(ResNet50 m)
    {
        // torchvision orders parameters and buffers per module; compare orders by the state dict.
        return m.StateDict().Select(kv => (kv.Key, kv.Value.Shape.ToArray())).ToList();
    }

    [Test]
    public void StateDictKeys_EqualArchitectureRulesAndTorchvisionDump()
    {
        var expected = ExpectedKeys(includeFc: true);
        var torch = TorchvisionKeys();
        Assert.That(torch.Count, Is.EqualTo(320), "torchvision resnet50 state dict has 320 entries");
        Assert.That(torch.Select(k => k.Key), Is.EqualTo(expected.Select(k => k.Key)), "rules vs torchvision dump: keys and order");
        for (int i = 0; i < torch.Count; i++) Assert.That(torch[i].Shape, Is.EqualTo(expected[i].Shape), torch[i].Key);

        var m = new ResNet50(includeFc: true);
        var ours = OurKeys(m);
        Assert.That(ours.Select(k => k.Key).ToHashSet().SetEquals(torch.Select(k => k.Key)), Is.True,
            "missing: " + string.Join(", ", torch.Select(k => k.Key).Except(ours.Select(k => k.Key)))
            + "; unexpected: " + string.Join(", ", ours.Select(k => k.Key).Except(torch.Select(k => k.Key))));
        var shapes = ours.ToDictionary(k => k.Key, k => k.Shape);
        foreach (var (k, s) in torch) Assert.That(shapes[k], Is.EqualTo(s), k);

        var noFc = OurKeys(new ResNet50(includeFc: false)).Select(k => k.Key).ToHashSet();
        Assert.That(noFc.SetEquals(ExpectedKeys(false).Select(k => k.Key)), Is.True, "includeFc: false drops exactly fc.*");
        Assert.That(noFc.Count, Is.EqualTo(318));
    }

    [Test]
    public void Freezing_StagesAndBatchNorm()
    {
        var m = new ResNet50();
        m.FreezeStages(2);   // stem + layer1
        foreach (var (n, p) in m.NamedParameters())
        {
            bool frozen = n.StartsWith("conv1.") || n.StartsWith("bn1.") || n.StartsWith("layer1.");
            Assert.That(p.RequiresGrad, Is.EqualTo(!frozen), n);
        }
        m.Train();
        var bnStem = m.NamedModules().First(x => x.Name == "bn1").Module;
        var bnL2 = m.NamedModules().First(x => x.Name == "layer2.0.bn1").Module;
        Assert.That(bnStem.IsTraining, Is.False, "frozen BN stays in eval");
        Assert.That(bnL2.IsTraining, Is.True);

        var m2 = new ResNet50(includeFc: true);
        m2.FreezeBatchNorm().Train();
        foreach (var (n, mod) in m2.NamedModules())
            if (mod is BatchNorm2d bn)
            {
                Assert.That(bn.IsTraining, Is.False, n);
                Assert.That(bn.Weight!.RequiresGrad || bn.Bias!.RequiresGrad, Is.False, n);
            }
        Assert.That(m2.NamedParameters().Where(p => !p.Name.Contains("bn") && !p.Name.Contains("downsample.1")).All(p => p.Tensor.RequiresGrad), Is.True);
        Assert.Throws<ArgumentOutOfRangeException>(() => m.FreezeStages(6));
    }

    [Test]
    public void BadInput_NamesOpAndShape()
    {
        var m = new ResNet50();
        using var x = Tensor.Zeros([1, 4, 32, 32]);
        var ex = Assert.Throws<ArgumentException>(() => m.ForwardPooled(x));
        Assert.That(ex!.Message, Does.Contain("resnet50").And.Contain("[1, 4, 32, 32]"));
        Assert.Throws<InvalidOperationException>(() => m.Forward(Tensor.Zeros([1, 3, 32, 32])));
    }

    // ------------------------------------------------------------------ golden

    private static double Seed(string name)
    {
        long s = 0;
        for (int k = 0; k < name.Length; k++) s += (k + 1) * (long)name[k];
        return (s % 1000) / 100.0;
    }

    private static double[] Sines64(int n, double step, double phase, Func<double, double> f)
    {
        var a = new double[n];
        for (int i = 0; i < n; i++) a[i] = f(Math.Sin(step * i + phase));
        return a;
    }

    private static float[] Sines(int n, double step, double phase, Func<double, double> f) =>
        Array.ConvertAll(Sines64(n, step, phase, f), v => (float)v);

    private static Tensor SineTensor(int[] shape, double step, double phase, Func<double, double> f, DType dtype)
    {
        int n = shape.Aggregate(1, (a, b) => a * b);
        // The fixture rounds x and w to float32 before widening them for the float64 train run.
        var a = Sines(n, step, phase, f);
        return dtype == DType.Float64 ? Tensor.FromArray(Array.ConvertAll(a, v => (double)v), shape) : Tensor.FromArray(a, shape);
    }

    /// <summary>The formula of tools/fixtures/make_resnet_fixture.py (computed in float64, cast to float32).</summary>
    private static Tensor FormulaValue(string name, Tensor like, DType dtype)
    {
        var shape = like.Shape.ToArray();
        string leaf = name[(name.LastIndexOf('.') + 1)..];
        if (leaf == "num_batches_tracked") return Tensor.Zeros([], DType.Int64);
        int n = (int)like.Numel;
        double seed = Seed(name);
        bool isBn = shape.Length == 1 && !name.StartsWith("fc.");
        Func<double, double> f;
        if (shape.Length >= 2) { double sc = 1 / Math.Sqrt(n / shape[0]); f = s => s * sc; }
        else if (name == "fc.bias" || (isBn && leaf is "bias" or "running_mean")) f = s => 0.1 * s;
        else if (isBn && leaf == "weight") f = s => 1 + 0.1 * s;
        else if (isBn && leaf == "running_var") f = s => 1 + 0.5 * s * s;
        else throw new ArgumentException(name);
        var a = new double[n];
        for (int i = 0; i < n; i++) a[i] = f(Math.Sin(0.37 * i + 0.61 * ((long)i * i % 9973) + seed));
        return dtype == DType.Float64 ? Tensor.FromArray(a, shape) : Tensor.FromArray(Array.ConvertAll(a, v => (float)v), shape);
    }

    private static ResNet50 FormulaModel(DType dtype)
    {
        var m = new ResNet50(dtype: dtype);
        var dict = m.StateDict().ToDictionary(kv => kv.Key, kv => FormulaValue(kv.Key, kv.Value, dtype));
        var r = m.LoadStateDict(dict);
        Assert.That(r.IsClean, Is.True, r.ToString());
        foreach (var t in dict.Values) t.Dispose();
        return m;
    }

    [TestCase(false)]
    [TestCase(true)]
    public void Golden_AgainstTorchvision(bool train)
    {
        var fx = SafeTensors.Load(FixturePath("resnet50_golden.safetensors"));
        string mode = train ? "train" : "eval";
        // Train mode is compared in float64: batch statistics over 8 values per channel in layer4 make it sensitive to
        // rounding (torch float32 vs torch float64: 1.7e-3 abs on the grid, 2% on conv1's gradient); see the fixture script.
        var dt = train ? DType.Float64 : DType.Float32;
        double rtol = train ? 1e-8 : 1e-4, gradRtol = train ? 1e-7 : 1e-3;
        using var x = SineTensor([2, 3, 64, 64], 0.21, 0.5, s => s, dt);
        using var w = SineTensor([2, 2048], 0.13, 0.3, s => s, dt);

        // One model: pooled + backward first, then the grid (train-mode outputs use batch statistics, so the
        // running-statistics update of the first forward does not change them; eval mode changes nothing).
        var g2 = FormulaModel(dt); g2.Train(train);
        using var pooled = g2.ForwardPooled(x);
        using (var prod = pooled.Mul(w))
        using (var loss = prod.Sum())
            loss.Backward();
        Tensor grid;
        using (GradMode.NoGrad()) grid = g2.ForwardGrid(x);
        using var gridOwner = grid;
        Assert.That(grid.Shape, Is.EqualTo(new[] { 2, 4, 2048 }));
        if (train)
        {
            using var cols = grid.Narrow(2, 0, 256);
            OpCheck.AssertClose(cols, fx["train.grid.cols0_256"], rtol: rtol, atol: rtol, what: "train grid");
        }
        else OpCheck.AssertClose(grid, fx["eval.grid"], rtol: rtol, atol: rtol, what: "eval grid");
        OpCheck.AssertClose(pooled, fx[$"{mode}.pooled"], rtol: rtol, atol: rtol, what: $"{mode} pooled");

        var named = g2.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor);
        foreach (var name in new[] { "conv1.weight", "bn1.weight" })
        {
            var want = fx[$"{mode}.grad.{name}"];
            double scale = want.ToArray<double>().Max(Math.Abs);
            OpCheck.AssertClose(named[name].Grad!, want, rtol: gradRtol, atol: 0.1 * gradRtol * scale, what: $"{mode} grad {name}");
        }
        var g43 = named["layer4.2.conv3.weight"].Grad!;
        int nrows = train ? 4 : 8;
        using var rows = g43.Narrow(0, 0, nrows);
        var want43 = fx[$"{mode}.grad.layer4.2.conv3.weight.rows0_{nrows}"];
        OpCheck.AssertClose(rows, want43, rtol: gradRtol, atol: 0.1 * gradRtol * want43.ToArray<double>().Max(Math.Abs), what: $"{mode} grad layer4.2.conv3.weight");
        foreach (var t in fx.Values) t.Dispose();
    }
}
