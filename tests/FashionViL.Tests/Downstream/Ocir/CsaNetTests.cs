using FashionViL.Autograd;
using FashionViL.Downstream.Ocir;
using FashionViL.Model;
using FashionViL.Nn;

namespace FashionViL.Tests.Downstream.Ocir;

/// <summary>CSA-Net structure, the condition-weighted fusion against a float64 loop, and the freezing rules.</summary>
public class CsaNetTests
{
    private static CsaNet Small(ulong seed = 3) => new(new CsaNetConfig(new ResNetConfig([1, 1, 1, 1], 4), 128, 16), new Generator(seed));

    [Test]
    public void StateDictHasTheReferenceNamesAndShapes()
    {
        using var net = new DisposableNet(Small());
        var sd = net.Net.StateDict();
        Assert.That(sd["proj_layer.weight"].Shape, Is.EqualTo(new[] { 16, 128 }));
        Assert.That(sd["proj_layer.bias"].Shape, Is.EqualTo(new[] { 16 }));
        Assert.That(sd["fusion_module.weight_classifier.0.weight"].Shape, Is.EqualTo(new[] { 64, 306 }));
        Assert.That(sd["fusion_module.weight_classifier.2.weight"].Shape, Is.EqualTo(new[] { 5, 64 }));
        Assert.That(sd["fusion_module.weight_classifier.2.bias"].Shape, Is.EqualTo(new[] { 5 }));
        Assert.That(sd["fusion_module.masks.weight"].Shape, Is.EqualTo(new[] { 5, 16 }));
        Assert.That(sd["norm_layer.norm_s"].ToArray<float>(), Is.EqualTo(new[] { 4f }));
        Assert.That(sd.Keys, Does.Contain("image_encoder.model.0.weight").And.Contain("image_encoder.model.1.running_mean")
            .And.Contain("image_encoder.model.7.0.conv3.weight").And.Contain("image_encoder.model.4.0.downsample.1.weight"));
        Assert.That(sd.Keys.Where(k => !k.StartsWith("image_encoder.model.", StringComparison.Ordinal)),
            Is.EquivalentTo(new[] { "proj_layer.weight", "proj_layer.bias", "fusion_module.weight_classifier.0.weight", "fusion_module.weight_classifier.0.bias",
                "fusion_module.weight_classifier.2.weight", "fusion_module.weight_classifier.2.bias", "fusion_module.masks.weight", "norm_layer.norm_s" }));
    }

    [Test]
    public void TwoHotSetsTheQuestionThenTheBlankCategory()
    {
        using var t = CsaNet.TwoHot([0, 152], [7, 152], 153);
        Assert.That(t.Shape, Is.EqualTo(new[] { 2, 306 }));
        var a = t.ToArray<float>();
        var ones = Enumerable.Range(0, a.Length).Where(i => a[i] != 0).ToArray();
        Assert.That(ones, Is.EqualTo(new[] { 0, 153 + 7, 306 + 152, 306 + 153 + 152 }));
        Assert.That(ones.All(i => a[i] == 1f));
        Assert.That(() => CsaNet.TwoHot([153], [0], 153), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("(153, 0)"));
    }

    [Test]
    public void FusionMatchesAFloat64LoopOfTheReferenceFormula()
    {
        var g = new Generator(11);
        using var fusion = new DisposableModule<CsaFusion>(new CsaFusion(5, 306, 16, g));
        using var x = g.Normal([3, 16], 0, 1);
        using var c = CsaNet.TwoHot([4, 0, 100], [9, 152, 100], 153);
        using var y = fusion.M.Forward(x, c);
        Assert.That(y.Shape, Is.EqualTo(new[] { 3, 16 }));

        double[] W(string n) => fusion.M.StateDict()[n].ToArray<float>().Select(v => (double)v).ToArray();
        var w0 = W("weight_classifier.0.weight"); var b0 = W("weight_classifier.0.bias");
        var w2 = W("weight_classifier.2.weight"); var b2 = W("weight_classifier.2.bias");
        var m = W("masks.weight");
        var xa = x.ToArray<float>(); var ca = c.ToArray<float>(); var ya = y.ToArray<float>();
        for (int b = 0; b < 3; b++)
        {
            var h = new double[64];
            for (int o = 0; o < 64; o++) { double s = b0[o]; for (int i = 0; i < 306; i++) s += w0[o * 306 + i] * ca[b * 306 + i]; h[o] = Math.Max(0, s); }
            var z = new double[5];
            for (int k = 0; k < 5; k++) { double s = b2[k]; for (int o = 0; o < 64; o++) s += w2[k * 64 + o] * h[o]; z[k] = s; }
            double mx = z.Max(), sum = z.Sum(v => Math.Exp(v - mx));
            var w = z.Select(v => Math.Exp(v - mx) / sum).ToArray();
            for (int d = 0; d < 16; d++)
            {
                double acc = 0;                                     // mean over k of x_d · M_kd · w_k
                for (int k = 0; k < 5; k++) acc += xa[b * 16 + d] * m[k * 16 + d] * w[k];
                Assert.That(ya[b * 16 + d], Is.EqualTo(acc / 5).Within(1e-5 * (1 + Math.Abs(acc))), $"row {b} dim {d}");
            }
        }
    }

    [Test]
    public void OnlyTheQuestionSideIsConditionedAndBothSidesAreScaledToNormS()
    {
        using var holder = new DisposableNet(Small());
        var net = holder.Net;
        net.Eval();
        var g = new Generator(5);
        using var img = g.Normal([2, 3, 64, 64], 0, 1);
        using var c1 = CsaNet.TwoHot([1, 2], [3, 4], 153);
        using var c2 = CsaNet.TwoHot([50, 60], [70, 80], 153);
        using var q1 = net.EncodeQuestion(img, c1);
        using var q2 = net.EncodeQuestion(img, c2);
        using var bl = net.EncodeBlank(img);
        Assert.That(q1.ToArray<float>(), Is.Not.EqualTo(q2.ToArray<float>()), "the condition must change the question feature");
        foreach (var t in new[] { q1, bl })
        {
            var a = t.ToArray<float>();
            for (int r = 0; r < 2; r++)
                Assert.That(Math.Sqrt(a.Skip(r * 16).Take(16).Sum(v => (double)v * v)), Is.EqualTo(4.0).Within(1e-4));
        }
    }

    [Test]
    public void Layer4AndEveryBatchNormGetNoGradientAndKeepTheirStatistics()
    {
        using var holder = new DisposableNet(Small());
        var net = holder.Net;
        net.Train();
        var bns = net.ImageEncoder.NamedModules().Where(m => m.Module is BatchNorm2d).ToList();
        Assert.That(bns, Has.Count.GreaterThan(5));
        Assert.That(bns.All(m => !m.Module.IsTraining), "every BatchNorm stays in eval mode after Train()");
        var statsBefore = net.ImageEncoder.NamedBuffers().ToDictionary(b => b.Name, b => b.Tensor.ToArray<float>().Length > 0 && b.Tensor.DType == DType.Float32 ? b.Tensor.ToArray<float>() : []);

        var g = new Generator(9);
        using var qi = g.Normal([4, 3, 64, 64], 0, 1);
        using var bi = g.Normal([4, 3, 64, 64], 0, 1);
        using var c = CsaNet.TwoHot([0, 1, 2, 3], [4, 5, 6, 7], 153);
        using (var loss = net.Loss(qi, bi, c)) loss.Backward();

        foreach (var (name, p) in net.ImageEncoder.NamedParameters("image_encoder"))
        {
            bool frozen = name.StartsWith("image_encoder.model.7.", StringComparison.Ordinal) || IsBatchNorm(net, name);
            if (frozen)
                Assert.That(!p.RequiresGrad && p.Grad is null, $"{name} must be frozen");
            else
            {
                Assert.That(p.RequiresGrad && p.Grad is not null, $"{name} must train");
                Assert.That(p.Grad!.ToArray<float>().Any(v => v != 0), $"{name} has an all-zero gradient");
            }
        }
        Assert.That(net.ProjLayer.Weight.Grad, Is.Not.Null);
        Assert.That(net.FusionModule.Masks.Weight.Grad, Is.Not.Null);
        Assert.That(net.NormLayer.Scale.Grad, Is.Not.Null);
        foreach (var (name, b) in net.ImageEncoder.NamedBuffers())
            if (b.DType == DType.Float32)
                Assert.That(b.ToArray<float>(), Is.EqualTo(statsBefore[name]), $"running statistic {name} changed in training");
        // The trainable convolutions are conv1 ... layer3: a training group holds exactly those.
        var trainable = net.ImageEncoder.NamedParameters("image_encoder").Where(p => p.Tensor.RequiresGrad).Select(p => p.Name).ToList();
        Assert.That(trainable, Is.Not.Empty);
        Assert.That(trainable.All(n => n.EndsWith(".weight", StringComparison.Ordinal) && !IsBatchNorm(net, n) && !n.StartsWith("image_encoder.model.7.", StringComparison.Ordinal)));
    }

    private static bool IsBatchNorm(CsaNet net, string paramName)
    {
        string module = paramName[..paramName.LastIndexOf('.')];
        return net.NamedModules().Any(m => m.Name == module && m.Module is BatchNorm2d);
    }

    [Test]
    public void ConfigValidationNamesTheMismatch()
    {
        Assert.That(() => new CsaNet(new CsaNetConfig(new ResNetConfig([1, 1, 1, 1], 4), 2048, 16)),
            Throws.ArgumentException.With.Message.Contains("image_channel 2048").And.Message.Contains("128"));
        Assert.That(() => new CsaNet(new CsaNetConfig(new ResNetConfig([1, 1, 1, 1], 4), 128, 16, NumConditions: 4)),
            Throws.ArgumentException.With.Message.Contains("n_conditions 4"));
    }

    /// <summary>Disposes every parameter and buffer of a module at the end of a test.</summary>
    internal sealed class DisposableModule<T>(T m) : IDisposable where T : Module
    {
        public T M { get; } = m;
        public void Dispose() { foreach (var t in M.StateDict().Values) { t.Grad = null; t.Dispose(); } }
    }

    internal sealed class DisposableNet(CsaNet net) : IDisposable
    {
        public CsaNet Net { get; } = net;
        public void Dispose() { foreach (var t in Net.StateDict().Values) { t.Grad = null; t.Dispose(); } }
    }
}
