using System.Text.Json;
using FashionViL.Nn.Optim;

namespace FashionViL.Optim.Tests;

/// <summary>
/// AdamW (transformers 3.x) with the warm-up + multi-step schedule and SGD Nesterov against PyTorch, step for step, on the
/// fixtures in tests/fixtures/optim (made by tools/fixtures/make_optim_fixtures.py); resume; groups; schedules.
/// </summary>
public class OptimizerTests
{
    private static readonly string[] Names = ["layer.weight", "layer.bias", "head.weight"];

    private static string FixturePath(string file)
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "tests", "fixtures", "optim", file);
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException($"tests/fixtures/optim/{file} not found above {TestContext.CurrentContext.TestDirectory}");
    }

    private sealed class Fixture(Dictionary<string, Tensor> t, IReadOnlyDictionary<string, string> meta)
    {
        public Dictionary<string, Tensor> T { get; } = t;
        public IReadOnlyDictionary<string, string> Meta { get; } = meta;
        public int Steps => int.Parse(Meta["steps"]);

        public List<(string Name, Tensor Param)> FreshParams() => Names.Select(n => (n, T[$"p.{n}.init"].To(DType.Float32))).ToList();

        /// <summary>(group, param names, lr, wd) in file order body, head.</summary>
        public List<(string Group, string[] Params, double Lr, double Wd)> Groups()
            => new[] { "body", "head" }.Select(g =>
            {
                using var doc = JsonDocument.Parse(Meta[$"group.{g}"]);
                var r = doc.RootElement;
                return (g, r.GetProperty("params").EnumerateArray().Select(e => e.GetString()!).ToArray(),
                    r.GetProperty("lr").GetDouble(), r.GetProperty("weight_decay").GetDouble());
            }).ToList();

        public List<ParamGroup> BuildGroups(List<(string Name, Tensor Param)> ps)
            => Groups().Select(g => new ParamGroup(g.Group, ps.Where(p => g.Params.Contains(p.Name)), g.Lr, g.Wd)).ToList();

        public void SetGrads(List<(string Name, Tensor Param)> ps, int t)
        {
            foreach (var (n, p) in ps) p.Grad = T[$"g.{n}.{t}"].To(DType.Float32);
        }
    }

    private static Fixture Load(string file)
    {
        var f = SafeTensors.Read(FixturePath(file));
        return new Fixture(f.Tensors, f.Metadata);
    }

    private static void AssertParamsClose(Fixture fx, List<(string Name, Tensor Param)> ps, int t, double rtol = 1e-6, double atol = 1e-7)
    {
        foreach (var (n, p) in ps)
        {
            var got = p.ToArray<float>();
            var want = fx.T[$"p.{n}.{t}"].ToArray<float>();
            Assert.That(got, Has.Length.EqualTo(want.Length));
            for (int i = 0; i < got.Length; i++)
                Assert.That(Math.Abs(got[i] - want[i]), Is.LessThanOrEqualTo(atol + rtol * Math.Abs(want[i])),
                    $"step {t}, {n}[{i}]: got {got[i]:R}, torch {want[i]:R}");
        }
    }

    private static WarmupMultiStepSchedule ScheduleOf(Fixture fx)
        => new(int.Parse(fx.Meta["warmup"]), fx.Meta["milestones"].Split(',').Select(int.Parse),
            double.Parse(fx.Meta["warmup_factor"], System.Globalization.CultureInfo.InvariantCulture));

    private static AdamW AdamOf(Fixture fx, IEnumerable<ParamGroup> groups)
    {
        var ci = System.Globalization.CultureInfo.InvariantCulture;
        return new AdamW(groups, double.Parse(fx.Meta["beta1"], ci), double.Parse(fx.Meta["beta2"], ci), double.Parse(fx.Meta["eps"], ci));
    }

    [Test]
    public void AdamW_WarmupMultiStep_MatchesTorchStepForStep()
    {
        var fx = Load("adamw_warmup_multistep.safetensors");
        var ps = fx.FreshParams();
        var groups = fx.BuildGroups(ps);
        using var opt = AdamOf(fx, groups);
        var sched = ScheduleOf(fx);
        var lrBody = fx.T["lr.body"].ToArray<double>();
        var lrHead = fx.T["lr.head"].ToArray<double>();
        for (int t = 0; t < fx.Steps; t++)
        {
            sched.Apply(opt, t);
            Assert.That(groups[0].Lr, Is.EqualTo(lrBody[t]).Within(1e-15 * lrBody[t]), $"body lr at step {t}");
            Assert.That(groups[1].Lr, Is.EqualTo(lrHead[t]).Within(1e-15 * lrHead[t]), $"head lr at step {t}");
            fx.SetGrads(ps, t);
            opt.Step();
            AssertParamsClose(fx, ps, t);
            opt.ZeroGrad();
        }
        foreach (var n in Names) Assert.That(opt.StepCount(n), Is.EqualTo(fx.Steps));
    }

    [Test]
    public void Sgd_Nesterov_MatchesTorchStepForStep()
    {
        var fx = Load("sgd_nesterov.safetensors");
        var ps = fx.FreshParams();
        using var opt = new SGD(fx.BuildGroups(ps), momentum: 0.9, dampening: 0, nesterov: true);
        for (int t = 0; t < fx.Steps; t++)
        {
            fx.SetGrads(ps, t);
            opt.Step();
            AssertParamsClose(fx, ps, t);
            opt.ZeroGrad();
        }
    }

    [Test]
    public void AdamW_Resume_ContinuesExactly()
    {
        var fx = Load("adamw_warmup_multistep.safetensors");
        var sched = ScheduleOf(fx);

        var full = fx.FreshParams();
        using (var opt = AdamOf(fx, fx.BuildGroups(full)))
            for (int t = 0; t < 10; t++) { sched.Apply(opt, t); fx.SetGrads(full, t); opt.Step(); opt.ZeroGrad(); }

        var ps = fx.FreshParams();
        OptimizerState saved;
        using (var first = AdamOf(fx, fx.BuildGroups(ps)))
        {
            for (int t = 0; t < 5; t++) { sched.Apply(first, t); fx.SetGrads(ps, t); first.Step(); first.ZeroGrad(); }
            saved = first.StateDict();
        } // disposing the first optimizer must not affect the saved copy
        var resumedParams = ps.Select(p => (p.Name, p.Param.To(DType.Float32))).ToList();
        using var second = AdamOf(fx, fx.BuildGroups(resumedParams));
        second.LoadStateDict(saved);
        Assert.That(second.StepCount("layer.weight"), Is.EqualTo(5));
        for (int t = 5; t < 10; t++) { sched.Apply(second, t); fx.SetGrads(resumedParams, t); second.Step(); second.ZeroGrad(); }

        for (int i = 0; i < Names.Length; i++)
            Assert.That(resumedParams[i].Item2.ToArray<float>(), Is.EqualTo(full[i].Param.ToArray<float>()), $"{Names[i]} after resume");
    }

    [Test]
    public void Sgd_Resume_ContinuesExactly()
    {
        var fx = Load("sgd_nesterov.safetensors");
        var full = fx.FreshParams();
        using (var opt = new SGD(fx.BuildGroups(full), 0.9, 0, true))
            for (int t = 0; t < 10; t++) { fx.SetGrads(full, t); opt.Step(); opt.ZeroGrad(); }
        var ps = fx.FreshParams();
        using var a = new SGD(fx.BuildGroups(ps), 0.9, 0, true);
        for (int t = 0; t < 5; t++) { fx.SetGrads(ps, t); a.Step(); a.ZeroGrad(); }
        using var b = new SGD(fx.BuildGroups(ps), 0.9, 0, true);
        b.LoadStateDict(a.StateDict());
        for (int t = 5; t < 10; t++) { fx.SetGrads(ps, t); b.Step(); b.ZeroGrad(); }
        for (int i = 0; i < Names.Length; i++)
            Assert.That(ps[i].Param.ToArray<float>(), Is.EqualTo(full[i].Param.ToArray<float>()), Names[i]);
    }

    [Test]
    public void Step_SkipsParamsWithoutGrad_AndZeroGradClears()
    {
        var w = Tensor.FromArray([1f, 2f], 2);
        var frozen = Tensor.FromArray([3f, 4f], 2);
        using var opt = new AdamW([new ParamGroup("g", [("w", w), ("frozen", frozen)], 0.1, 0.01)]);
        w.Grad = Tensor.FromArray([0.5f, -0.5f], 2);
        opt.Step();
        Assert.That(frozen.ToArray<float>(), Is.EqualTo(new[] { 3f, 4f }));
        Assert.That(w.ToArray<float>(), Is.Not.EqualTo(new[] { 1f, 2f }));
        Assert.That(opt.StepCount("frozen"), Is.Zero);
        Assert.That(opt.StepCount("w"), Is.EqualTo(1));
        opt.ZeroGrad();
        Assert.That(w.Grad, Is.Null);
    }

    [Test]
    public void AdamW_FirstStep_MatchesHandFormula()
    {
        // step 1: m = 0.1 g, v = 0.001 g², step size = lr·√0.001/0.1 ⇒ p ← p − lr·√0.001/0.1 · 0.1g/(√0.001|g| + eps), then p ← p(1 − lr·wd)
        var p = Tensor.FromArray([1.0, -2.0], 2).To(DType.Float64);
        double[] g = [0.3, -4.0];
        p.Grad = Tensor.FromArray(g, 2);
        double lr = 0.01, wd = 0.1, eps = 1e-8;
        using var opt = new AdamW([new ParamGroup("g", [("p", p)], lr, wd)], eps: eps);
        opt.Step();
        double[] p0 = [1.0, -2.0];
        var got = p.ToArray<double>();
        for (int i = 0; i < 2; i++)
        {
            double m = 0.1 * g[i], v = 0.001 * g[i] * g[i];
            double step = lr * Math.Sqrt(0.001) / 0.1;
            double w = p0[i] - step * m / (Math.Sqrt(v) + eps);
            w -= lr * wd * w;
            Assert.That(got[i], Is.EqualTo(w).Within(1e-14));
        }
    }

    [Test]
    public void ParamGroups_FirstMatchingRuleWins_AndNoDecayBySubstring()
    {
        var named = new (string, Tensor)[]
        {
            ("resnet.conv1.weight", Tensor.Zeros([1])), ("resnet.bn1.bias", Tensor.Zeros([1])),
            ("bert.embeddings.projection.weight", Tensor.Zeros([1])), ("heads.mlm.bias", Tensor.Zeros([1])),
            ("bert.encoder.layer.0.attention.output.LayerNorm.weight", Tensor.Zeros([1])),
            ("bert.encoder.layer.0.attention.self.query.weight", Tensor.Zeros([1])),
            ("bert.encoder.layer.0.attention.self.query.bias", Tensor.Zeros([1])),
        };
        var rules = new List<ParamRule>
        {
            ParamRule.Prefix("resnet", 20, 1e-4, "resnet."),
            ParamRule.Contains("fast_nodecay", 20, 0, "bert.embeddings.projection.bias", "heads.mlm.bias"),
            ParamRule.Contains("fast", 20, null, "bert.embeddings.projection.", "heads"),
            ParamRule.Contains("nodecay", 1, 0, ParamGroups.NoDecay),
        };
        var groups = ParamGroups.Build(named, 1e-5, 1e-4, rules);
        var byName = groups.ToDictionary(g => g.Name);
        Assert.That(groups.Select(g => g.Name), Is.EqualTo(new[] { "resnet", "fast_nodecay", "fast", "nodecay", "default" }));
        Assert.That(byName["resnet"].Names, Is.EqualTo(new[] { "resnet.conv1.weight", "resnet.bn1.bias" }));
        Assert.That(byName["resnet"].BaseLr, Is.EqualTo(2e-4).Within(1e-18));
        Assert.That(byName["resnet"].WeightDecay, Is.EqualTo(1e-4));
        Assert.That(byName["fast"].Names, Is.EqualTo(new[] { "bert.embeddings.projection.weight" }));
        Assert.That(byName["fast"].WeightDecay, Is.EqualTo(1e-4));
        Assert.That(byName["nodecay"].Names, Is.EqualTo(new[] { "bert.encoder.layer.0.attention.output.LayerNorm.weight", "bert.encoder.layer.0.attention.self.query.bias" }));
        Assert.That(byName["nodecay"].WeightDecay, Is.Zero);
        Assert.That(byName["default"].Names, Is.EqualTo(new[] { "bert.encoder.layer.0.attention.self.query.weight" }));
        Assert.That(byName["default"].BaseLr, Is.EqualTo(1e-5));
        Assert.That(groups.Sum(g => g.Params.Count), Is.EqualTo(named.Length));
    }

    [Test]
    public void ParamGroups_Duplicates_AreErrorsNamingThem()
    {
        var t = Tensor.Zeros([2]);
        var ex = Assert.Throws<ArgumentException>(() => ParamGroups.Build([("a", t), ("b", t)], 1, 0, []));
        Assert.That(ex!.Message, Does.Contain("'b'").And.Contain("'a'"));
        ex = Assert.Throws<ArgumentException>(() => ParamGroups.Build([("a", Tensor.Zeros([1])), ("a", Tensor.Zeros([1]))], 1, 0, []));
        Assert.That(ex!.Message, Does.Contain("'a' appears twice"));
        var p = Tensor.Zeros([1]);
        ex = Assert.Throws<ArgumentException>(() => new SGD([new ParamGroup("x", [("p", p)], 1, 0), new ParamGroup("y", [("p", p)], 1, 0)]));
        Assert.That(ex!.Message, Does.Contain("'p'"));
    }

    [Test]
    public void LoadStateDict_Mismatch_Throws()
    {
        var p = Tensor.FromArray([1f, 2f], 2);
        using var a = new AdamW([new ParamGroup("g", [("p", p)], 0.1, 0)]);
        p.Grad = Tensor.FromArray([1f, 1f], 2);
        a.Step();
        var q = Tensor.FromArray([1f, 2f, 3f], 3);
        using var b = new AdamW([new ParamGroup("g", [("p", q)], 0.1, 0)]);
        var ex = Assert.Throws<ArgumentException>(() => b.LoadStateDict(a.StateDict()));
        Assert.That(ex!.Message, Does.Contain("[2]").And.Contain("[3]"));
        using var c = new AdamW([new ParamGroup("h", [("p", p)], 0.1, 0)]);
        Assert.Throws<ArgumentException>(() => c.LoadStateDict(a.StateDict()));
    }

    [Test]
    public void WarmupMultiStep_SpecFormula()
    {
        // spec §6: W = 15000, milestones 45000, 90000, start 0.25
        var s = new WarmupMultiStepSchedule(15000, [45000, 90000]);
        Assert.That(s.Factor(0), Is.EqualTo(0.25));
        Assert.That(s.Factor(7500), Is.EqualTo(0.625).Within(1e-15));
        Assert.That(s.Factor(15000), Is.EqualTo(1.0));
        Assert.That(s.Factor(15001), Is.EqualTo(1.0));
        Assert.That(s.Factor(44999), Is.EqualTo(1.0));
        Assert.That(s.Factor(45000), Is.EqualTo(0.1).Within(1e-16));
        Assert.That(s.Factor(90000), Is.EqualTo(0.01).Within(1e-16));
        Assert.That(s.Factor(119999), Is.EqualTo(0.01).Within(1e-16));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.Factor(-1));
        Assert.Throws<ArgumentException>(() => new WarmupMultiStepSchedule(10, [50, 20]));
    }

    [Test]
    public void LinearCosineConstant_Schedules()
    {
        var lin = new LinearSchedule(10, 110);
        Assert.That(lin.Factor(0), Is.Zero);
        Assert.That(lin.Factor(5), Is.EqualTo(0.5));
        Assert.That(lin.Factor(10), Is.EqualTo(1.0));
        Assert.That(lin.Factor(60), Is.EqualTo(0.5));
        Assert.That(lin.Factor(110), Is.Zero);
        Assert.That(lin.Factor(200), Is.Zero);
        var cos = new CosineSchedule(0, 100);
        Assert.That(cos.Factor(0), Is.EqualTo(1.0));
        Assert.That(cos.Factor(50), Is.EqualTo(0.5).Within(1e-15));
        Assert.That(cos.Factor(100), Is.EqualTo(0.0).Within(1e-15));
        Assert.That(cos.Factor(25), Is.EqualTo(0.5 * (1 + Math.Cos(Math.PI / 4))).Within(1e-15));
        Assert.That(new ConstantSchedule().Factor(12345), Is.EqualTo(1.0));
    }

    [Test]
    public void NonContiguousGrad_SameAsContiguous()
    {
        float[] g = [0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f];
        var a = Tensor.FromArray([1f, 2f, 3f, 4f, 5f, 6f], 2, 3);
        var b = Tensor.FromArray([1f, 2f, 3f, 4f, 5f, 6f], 2, 3);
        a.Grad = Tensor.FromArray(g, 2, 3);
        // the same values stored transposed: a [3,2] buffer viewed as [2,3] with strides [1,2]
        float[] gt = [g[0], g[3], g[1], g[4], g[2], g[5]];
        b.Grad = Tensor.FromArray(gt, 3, 2).AsStrided([2, 3], [1, 2], 0);
        Assert.That(b.Grad.IsContiguous, Is.False);
        using var oa = new SGD([new ParamGroup("g", [("a", a)], 0.1, 0.01)], momentum: 0.9);
        using var ob = new SGD([new ParamGroup("g", [("b", b)], 0.1, 0.01)], momentum: 0.9);
        for (int i = 0; i < 2; i++) { oa.Step(); ob.Step(); }
        Assert.That(b.ToArray<float>(), Is.EqualTo(a.ToArray<float>()));
        Assert.That(oa.StateDict().State["a"].Buffers.Keys, Is.EquivalentTo(new[] { "momentum_buffer" }));
    }
}

/// <summary>
/// AdamW.Step hands every parameter to the backend in one multi-tensor call (<see cref="IBackend.AdamWStepMany"/>): the
/// result is bitwise that of one <see cref="IBackend.AdamWStep"/> per parameter with the optimizer's own bookkeeping
/// (per-parameter step counts, group lr and weight decay, a parameter without a gradient sitting a step out, a
/// non-contiguous gradient), and a bad gradient anywhere leaves every parameter untouched.
/// </summary>
public class AdamWBatchedStepTests
{
    private static readonly int[][] Shapes = [[7], [3, 5], [1], [33], [2, 2, 3], [64], [5, 1], [130], [9]];

    private static Tensor Start(int i) => new Generator(70 + (ulong)i).Uniform(Shapes[i], -1, 1);

    private static Tensor Grad(int i, int s) => new Generator(900 + (ulong)(10 * s + i)).Uniform(Shapes[i], -2, 2);

    [Test]
    public void Step_IsBitwiseOnePerTensorAdamWStep()
    {
        var ps = Shapes.Select((_, i) => Start(i)).ToArray();
        var refP = Shapes.Select((_, i) => Start(i)).ToArray();
        var refM = Shapes.Select(s => Tensor.Zeros(s)).ToArray();
        var refV = Shapes.Select(s => Tensor.Zeros(s)).ToArray();
        var refSteps = new int[Shapes.Length];
        // three groups: decay, no decay, a 20× lr multiplier (how FashionViL builds them)
        int[] groupOf = [0, 1, 2, 0, 1, 2, 0, 1, 2];
        var groups = new[] { ("decay", 1e-3, 1e-2, 1.0), ("no_decay", 1e-3, 0.0, 1.0), ("x20", 1e-3, 1e-4, 20.0) }
            .Select((g, gi) => new ParamGroup(g.Item1, Enumerable.Range(0, ps.Length).Where(i => groupOf[i] == gi).Select(i => ($"p{i}", ps[i])), g.Item2, g.Item3, g.Item4))
            .ToArray();
        using var opt = new AdamW(groups, eps: 1e-6);
        var cpu = Backends.Get(Device.Cpu);
        for (int s = 0; s < 5; s++)
        {
            opt.SetLrFactor(1.0 / (s + 1));
            for (int i = 0; i < ps.Length; i++)
            {
                ps[i].Grad = null;
                if ((i + s) % 4 == 0) continue;   // no gradient this step: the parameter sits it out, its step count lags
                using var g = Grad(i, s);
                if (i == 1)   // a non-contiguous gradient: the same values stored transposed
                {
                    var a = g.ToArray<float>();
                    using var t = Tensor.FromArray(Enumerable.Range(0, 15).Select(k => a[(k % 3) * 5 + k / 3]).ToArray(), 5, 3);
                    ps[i].Grad = t.AsStrided([3, 5], [1, 3], 0);
                    Assert.That(ps[i].Grad!.IsContiguous, Is.False);
                }
                else ps[i].Grad = g.To(DType.Float32);
                refSteps[i]++;
                var grp = groups[groupOf[i]];
                cpu.AdamWStep(refP[i], g, refM[i], refV[i], new AdamWParams(grp.Lr, 0.9, 0.999, 1e-6, grp.WeightDecay, refSteps[i]));
            }
            opt.Step();
            for (int i = 0; i < ps.Length; i++)
            {
                Assert.That(ps[i].ToArray<float>(), Is.EqualTo(refP[i].ToArray<float>()), $"param {i} after step {s}, bit for bit");
                Assert.That(opt.StepCount($"p{i}"), Is.EqualTo(refSteps[i]));
            }
        }
        var st = opt.StateDict().State;
        for (int i = 0; i < ps.Length; i++)
        {
            Assert.That(st[$"p{i}"].Buffers["exp_avg"].ToArray<float>(), Is.EqualTo(refM[i].ToArray<float>()), $"exp_avg {i}");
            Assert.That(st[$"p{i}"].Buffers["exp_avg_sq"].ToArray<float>(), Is.EqualTo(refV[i].ToArray<float>()), $"exp_avg_sq {i}");
        }
        Assert.That(refSteps.Distinct().Count(), Is.GreaterThan(1), "step counts differ between parameters");
    }

    [Test]
    public void Step_BadGradientAnywhere_LeavesEveryParamUntouched()
    {
        var a = Tensor.FromArray([1f, 2f], 2);
        var b = Tensor.FromArray([3f, 4f, 5f], 3);
        using var opt = new AdamW([new ParamGroup("g1", [("a", a)], 0.1, 0.01), new ParamGroup("g2", [("b", b)], 0.1, 0)]);
        a.Grad = Tensor.FromArray([0.5f, -0.5f], 2);
        b.Grad = Tensor.FromArray([0.5f, -0.5f], 2);
        var e = Assert.Throws<ArgumentException>(() => opt.Step())!;
        Assert.That(e.Message, Does.Contain("'b'").And.Contain("[2]").And.Contain("[3]"));
        Assert.That(a.ToArray<float>(), Is.EqualTo(new[] { 1f, 2f }), "the first group was not updated either");
        Assert.That(opt.StepCount("a"), Is.Zero);
    }
}
