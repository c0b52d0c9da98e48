using System.Text.Json;
using FashionViL.Autograd;
using FashionViL.Data;
using FashionViL.Model;

namespace FashionViL.Tests.Model;

/// <summary>
/// The tiny FashionViL against its PyTorch twin (tools/fixtures/make_fashionvil_fixture.py): closed-form weights, a fixed
/// batch of 4 × 12 tokens with 96-pixel images, the draws (ITM swaps, MVC drop set) passed explicitly. The twin runs in
/// float64 from the float32 weights and inputs.
/// Float32 model: loss relative 1e-4, gradients relative L2 1e-3 — except the ResNet gradients of icc, which are printed but
/// not asserted: one final-stage ReLU input of the second view lies 9.9e-7 from zero (measured in the twin), float32
/// forward rounding (~7e-5 relative, the same size in torch float32) flips its sign, and that moves the ResNet gradients
/// by ~1e-2 (the BERT-side gradients of icc still agree to 1e-4). The float64 model checks everything, the icc ResNet
/// gradients included: loss relative 1e-10, gradients relative L2 1e-6 (the stored gradients are rounded to float32).
/// </summary>
[TestFixture(DType.Float32)]
[TestFixture(DType.Float64)]
public class PretrainingGoldenTests(DType dtype)
{
    private double LossTol => dtype == DType.Float64 ? 1e-10 : 1e-4;
    private double GradTol => dtype == DType.Float64 ? 1e-6 : 1e-3;

    private static readonly string[] Tasks = ["itc", "itm", "mlm", "mpfc", "icc", "pac"];
    private Dictionary<string, Tensor> _f = null!;
    private FashionViLPretraining _m = null!;
    private PretrainBatch _batch = null!;

    [OneTimeSetUp]
    public void Setup()
    {
        _f = SafeTensors.Load(Path.Combine(ModelTestUtil.FixtureDir(), "pretrain_tiny.safetensors"));
        var c = ModelTestUtil.TinyNoDropout;
        _m = new FashionViLPretraining(c, new Generator(3), dtype);
        ModelTestUtil.FillClosedForm(_m);
        _batch = new PretrainBatch
        {
            Image = ModelTestUtil.Image("image", 4, c.ImageSize, dtype),
            DvImage = ModelTestUtil.Image("dv_image", 4, c.ImageSize, dtype),
            InputIds = _f["input_ids"], InputIdsMasked = _f["input_ids_masked"], InputMask = _f["input_mask"],
            SegmentIds = _f["segment_ids"], LmLabelIds = _f["lm_label_ids"], AttributeLabels = _f["attribute_labels"],
            ImageMasks = _f["image_masks"], Ids = [0, 1, 2, 3],
        };
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        _batch.Image.Dispose(); _batch.DvImage.Dispose();
        foreach (var t in _f.Values) t.Dispose();
    }

    [Test]
    public void StateDictNamesAndShapesEqualTheTwin()
    {
        var expected = JsonSerializer.Deserialize<List<List<JsonElement>>>(File.ReadAllText(Path.Combine(ModelTestUtil.FixtureDir(), "names.json")))!
            .ToDictionary(e => e[0].GetString()!, e => e[1].EnumerateArray().Select(x => x.GetInt32()).ToArray());
        var sd = _m.StateDict();
        Assert.That(sd.Keys.Order(), Is.EqualTo(expected.Keys.Order()));
        foreach (var (k, shape) in expected) Assert.That(sd[k].Shape, Is.EqualTo(shape), k);
        // The tied decoder is not a separate parameter: listed once, under the word-embedding name.
        Assert.That(ReferenceEquals(_m.Model.Heads.Mlm.DecoderWeight, _m.Model.Bert.Embeddings.WordEmbeddings.Weight));
    }

    private Tensor RunTask(string task, out int[]? pairing)
    {
        pairing = null;
        switch (task)
        {
            case "itc": return _m.Itc(_batch);
            case "pac": return _m.Pac(_batch);
            case "icc":
                return _m.Icc(_batch, _f["icc_text_drop"].ToArray<long>().Select(x => (int)x).ToArray(),
                    _f["icc_patch_drop"].ToArray<long>().Select(x => (int)x).ToArray());
            case "itm":
            {
                using var o = _m.Itm(_batch, _f["itm_swap"].ToArray<long>().Select(x => x != 0).ToArray());
                pairing = o.Pairing;
                return o.Loss;
            }
            case "mlm": { using var o = _m.Mlm(_batch); return o.Loss; }
            case "mpfc": { using var o = _m.Mpfc(_batch, _f["vq_targets"]); return o.Loss; }
            default: throw new ArgumentException(task);
        }
    }

    private static Tensor Slice(Tensor g, string desc)
    {
        if (desc == "all") return g.Alias();
        if (desc.StartsWith("rows", StringComparison.Ordinal))
        {
            var p = desc[4..].Split('_'); int a = int.Parse(p[0]), b = int.Parse(p[1]);
            using var n = g.Narrow(0, a, b - a); return n.Contiguous();
        }
        if (desc.StartsWith("cols", StringComparison.Ordinal))
        {
            var p = desc[4..].Split('_'); int a = int.Parse(p[0]), b = int.Parse(p[1]);
            using var n = g.Narrow(1, a, b - a); return n.Contiguous();
        }
        throw new ArgumentException(desc);
    }

    [TestCaseSource(nameof(Tasks))]
    public void TaskLossAndGradientsMatchPyTorch(string task)
    {
        _m.ZeroGrad();
        using var loss = RunTask(task, out var pairing);
        loss.Backward();
        double expected = _f[$"loss.{task}"].ToArray<double>()[0];
        TestContext.Out.WriteLine($"{task}: loss {loss.Item():R} vs torch {expected:R}");
        Assert.That(loss.Item(), Is.EqualTo(expected).Within(LossTol * Math.Abs(expected)), $"{task} loss");
        if (task == "itm")
            Assert.That(pairing, Is.EqualTo(_f["itm_pairing"].ToArray<long>().Select(x => (int)x).ToArray()), "itm hard-negative pairing");

        var sd = _m.StateDict();
        string prefix = $"grad.{task}.";
        int compared = 0;
        var failures = new List<string>();
        foreach (var key in _f.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).Order())
        {
            string rest = key[prefix.Length..];
            int dot = rest.LastIndexOf('.');
            string name = rest[..dot], desc = rest[(dot + 1)..];
            var p = sd[name];
            Assert.That(p.Grad, Is.Not.Null, $"{task}: {name} has no gradient but torch has one");
            using var got = desc == "rows" ? p.Grad!.IndexSelect(0, _f["word_rows"]) : Slice(p.Grad!, desc);
            double rel = ModelTestUtil.RelL2(got, _f[key]);
            bool notAsserted = dtype == DType.Float32 && task == "icc" && name.StartsWith("image_encoder.", StringComparison.Ordinal);
            TestContext.Out.WriteLine($"  {name} [{desc}]: relative L2 {rel:E2}{(notAsserted ? " (float32 icc ResNet gradient: not asserted, see the class comment)" : "")}");
            if (notAsserted) continue;
            if (!(rel <= GradTol)) failures.Add($"{name} [{desc}]: relative L2 {rel:E2} > {GradTol:E0}");
            compared++;
        }
        Assert.That(failures, Is.Empty, $"{task}: gradients off");
        Assert.That(compared, Is.GreaterThanOrEqualTo(5), $"{task}: too few gradients in the fixture");
        // Parameters the twin's task does not reach must get no (or an all-zero) gradient here.
        var tracked = _f.Keys.Where(k => k.StartsWith("grad.", StringComparison.Ordinal))
            .Select(k => { var r = k[(k.IndexOf('.', 5) + 1)..]; return r[..r.LastIndexOf('.')]; }).ToHashSet();
        foreach (var name in tracked)
        {
            if (_f.Keys.Any(k => k.StartsWith(prefix + name + ".", StringComparison.Ordinal))) continue;
            var g = sd[name].Grad;
            if (g is not null) Assert.That(g.ToArray<double>().All(x => x == 0), $"{task}: {name} should get no gradient");
        }
    }
}
