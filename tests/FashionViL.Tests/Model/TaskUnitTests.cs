using FashionViL.Autograd;
using FashionViL.Model;
using FashionViL.Nn.Models;

namespace FashionViL.Tests.Model;

/// <summary>Hand-computed checks of the pieces of the six tasks (independent float64 references, no PyTorch).</summary>
[TestFixture]
public class TaskUnitTests
{
    /// <summary>A very small model for behavioural tests: BERT hidden 32, 1 layer, 2 heads; ResNet width 8; 64-pixel images (2×2 grid).</summary>
    internal static FashionViLConfig Micro => FashionViLConfig.Tiny with
    {
        Bert = new BertConfig(HiddenSize: 32, NumHiddenLayers: 1, NumAttentionHeads: 2, IntermediateSize: 64, HiddenDropoutProb: 0, AttentionProbsDropoutProb: 0),
        ResNet = new ResNetConfig([1, 1, 1, 1], 8),
        ImageSize = 64,
    };

    [Test]
    public void MaskedMeanAveragesOnlyUnmaskedPositions()
    {
        var h = new float[] { 1, 2, 3, 4, 100, 200, /* b1 */ -1, 5, 7, 9, 11, 13 };
        var m = new long[] { 1, 1, 0, /* b1 */ 1, 1, 1 };
        using var ht = Tensor.FromArray(h, 2, 3, 2);
        using var mt = Tensor.FromArray(m, 2, 3);
        using var r = Losses.MaskedMean(ht, mt);
        Assert.That(r.ToArray<float>(), Is.EqualTo(new[] { 2f, 3f, 17f / 3, 9f }).Within(1e-6));
    }

    [Test]
    public void JointAndMvcMasksAreBuiltAsTheReference()
    {
        using var im = Tensor.FromArray(new long[] { 1, 1, 1, 0, /* b1 */ 1, 1, 0, 0 }, 2, 4);
        using var jm = FashionViLPretraining.JointMask(im, 3);
        Assert.That(jm.Shape, Is.EqualTo(new[] { 2, 7 }));
        Assert.That(jm.ToArray<float>(), Is.EqualTo(new float[] { 1, 1, 1, 0, 1, 1, 1, /* */ 1, 1, 0, 0, 1, 1, 1 }));
        // text positions 1 and 1 (repeat) and 3; patch 2 → key column 4 + 2 = 6, for every sample
        using var mv = FashionViLPretraining.MvcKeyMask(im, 3, [1, 1, 3], [2]);
        Assert.That(mv.ToArray<float>(), Is.EqualTo(new float[] { 1, 0, 1, 0, 1, 1, 0, /* */ 1, 0, 0, 0, 1, 1, 0 }));
        using var ext = BertModel.ExtendedAttentionMask(mv, DType.Float32);
        Assert.That(ext.Shape, Is.EqualTo(new[] { 2, 1, 1, 7 }));
        Assert.That(ext.ToArray<float>()[..7], Is.EqualTo(new float[] { 0, -10000, 0, -10000, 0, 0, -10000 }));
    }

    [Test]
    public void HardNegativeIsTheBestOffDiagonalText()
    {
        // rows = images, columns = texts; the diagonal (the positive) is the largest and must be ignored
        float[] s =
        [
            0.9f, 0.2f, 0.5f,
            0.7f, 0.95f, 0.1f,
            -0.3f, -0.2f, 0.99f,
        ];
        Assert.That(FashionViLPretraining.HardNegatives(s, 3), Is.EqualTo(new[] { 2, 0, 1 }));
        // all off-diagonal scores below −1: the diagonal's −1 wins (the reference's argmax picks the sample itself)
        float[] low = [5f, -3f, -4f, -2f];
        Assert.That(FashionViLPretraining.HardNegatives(low, 2), Is.EqualTo(new[] { 0, 1 }));
        // ties: the first maximum, as torch.argmax on CPU
        float[] tie = [1f, 0.5f, 0.5f, 0.3f, 1f, 0.3f, 0.1f, 0.1f, 1f];
        Assert.That(FashionViLPretraining.HardNegatives(tie, 3), Is.EqualTo(new[] { 1, 0, 0 }));
    }

    [Test]
    public void MvcDropCountsAndDivisorFollowTheFloorRule()
    {
        var m = new FashionViLPretraining(Micro, new Generator(1));
        Assert.That(m.MvcDropCounts(75, 49), Is.EqualTo((18, 12)));
        Assert.That(m.MvcDivisor(49), Is.EqualTo(37));
        Assert.That(m.MvcDropCounts(12, 9), Is.EqualTo((3, 2)));
        Assert.That(m.MvcDivisor(9), Is.EqualTo(7));
        Assert.That(m.MvcDivisor(4), Is.EqualTo(3));
    }

    [Test]
    public void SoftLabelCrossEntropyRenormalisesAndSkipsZeroRows()
    {
        double[,] s = { { 0.1, -0.4, 0.7 }, { 0.3, 0.3, -0.9 }, { -0.2, 0.5, 0.05 } };
        double[,] y = { { 2, 0, 2 }, { 0, 0, 0 }, { 0, 1, 0 } };
        double total = 0; int rows = 0;
        for (int i = 0; i < 3; i++)
        {
            double sum = y[i, 0] + y[i, 1] + y[i, 2];
            if (sum == 0) continue;
            rows++;
            double lse = Math.Log(Math.Exp(s[i, 0]) + Math.Exp(s[i, 1]) + Math.Exp(s[i, 2]));
            for (int k = 0; k < 3; k++) total -= y[i, k] / (sum + Losses.Float32Eps) * (s[i, k] - lse);
        }
        double expected = total / rows;
        using var st = Tensor.FromArray(s.Cast<double>().Select(x => (float)x).ToArray(), 3, 3);
        using var yt = Tensor.FromArray(y.Cast<double>().Select(x => (float)x).ToArray(), 3, 3);
        using var l = Losses.SoftLabelCrossEntropy(st, yt);
        Assert.That(l.Item(), Is.EqualTo(expected).Within(1e-6 * expected));
        Assert.That(rows, Is.EqualTo(2));
        using var zeros = Tensor.Zeros([3, 3]);
        using var l0 = Losses.SoftLabelCrossEntropy(st, zeros);
        Assert.That(l0.Item(), Is.EqualTo(0.0), "all rows empty: 0 / clamp(0, min 1)");
    }

    [Test]
    public void CosSimGivesRawCosines()
    {
        var head = new CosSim(2, 3, new Generator(5));
        using (GradMode.NoGrad())
        {
            using var p = Tensor.FromArray(new float[] { 1, 0, 3, /* */ 0, 2, 4 }, 2, 3);
            Backends.Get(Device.Cpu).Copy(p, head.Projection);
        }
        using var x = Tensor.FromArray(new float[] { 3, 4 }, 1, 2);
        using var l = head.Forward(x);
        Assert.That(l.ToArray<float>(), Is.EqualTo(new[] { 0.6f, 0.8f, (0.6f * 3 + 0.8f * 4) / 5 }).Within(1e-6));
    }

    [Test]
    public void ContrastiveLossIsSymmetricInfoNce()
    {
        double[,] a = { { 1, 0 }, { 0.5, 0.5 } }, b = { { 0.2, 0.9 }, { -1, 0.3 } };
        double Ce(double[,] p, double[,] q)
        {
            double tot = 0;
            for (int i = 0; i < 2; i++)
            {
                var z = new double[2];
                for (int j = 0; j < 2; j++) z[j] = p[i, 0] * q[j, 0] + p[i, 1] * q[j, 1];
                tot += Math.Log(Math.Exp(z[0]) + Math.Exp(z[1])) - z[i];
            }
            return tot / 2;
        }
        double expected = (Ce(a, b) + Ce(b, a)) / 2;
        using var at = Tensor.FromArray(a.Cast<double>().Select(x => (float)x).ToArray(), 2, 2);
        using var bt = Tensor.FromArray(b.Cast<double>().Select(x => (float)x).ToArray(), 2, 2);
        using var l = Losses.Contrastive(at, bt);
        Assert.That(l.Item(), Is.EqualTo(expected).Within(1e-6));
    }

    [Test]
    public void TaskSamplerIsNumpyChoiceInverseCdf()
    {
        var s = new TaskSampler(FashionViLConfig.Reference);
        Assert.That(s.Tasks, Is.EqualTo(new[] { "itm", "pac", "itc", "icc", "mlm", "mpfc" }));
        // cdf = 0.15 0.30 0.50 0.70 0.85 1.00; index = number of cdf entries <= u
        Assert.That(s.Index(0.0), Is.EqualTo(0));
        Assert.That(s.Index(0.1499), Is.EqualTo(0));
        Assert.That(s.Index(0.15), Is.EqualTo(1));
        Assert.That(s.Index(0.49), Is.EqualTo(2));
        Assert.That(s.Index(0.5), Is.EqualTo(3));
        Assert.That(s.Index(0.84), Is.EqualTo(4));
        Assert.That(s.Index(0.9999999), Is.EqualTo(5));
    }

    [Test]
    public void TaskSamplerFrequenciesMatchTheProbabilities()
    {
        var c = FashionViLConfig.Reference;
        var s = new TaskSampler(c);
        var g = new Generator(2024);
        const int n = 20000;
        var counts = new Dictionary<string, int>();
        for (int i = 0; i < n; i++) { var t = s.Sample(g); counts[t] = counts.GetValueOrDefault(t) + 1; }
        for (int k = 0; k < c.Tasks.Length; k++)
        {
            double p = c.TaskProbabilities[k], sd = Math.Sqrt(n * p * (1 - p));
            // 5 standard deviations of the binomial count: a false failure has probability < 1e-6 per task
            Assert.That(counts.GetValueOrDefault(c.Tasks[k]), Is.EqualTo(n * p).Within(5 * sd), c.Tasks[k]);
        }
    }

    [Test]
    public void VisualTablesStartAsCopiesOfTheTextTables()
    {
        var m = new FashionViLPretraining(Micro, new Generator(9));
        var e = m.Bert.Embeddings;
        Assert.That(e.PositionEmbeddingsVisual.Weight.ToArray<float>(), Is.EqualTo(e.PositionEmbeddings.Weight.ToArray<float>()));
        Assert.That(e.TokenTypeEmbeddingsVisual.Weight.ToArray<float>(), Is.EqualTo(e.TokenTypeEmbeddings.Weight.ToArray<float>()));
        Assert.That(ReferenceEquals(e.PositionEmbeddingsVisual.Weight, e.PositionEmbeddings.Weight), Is.False, "independent parameters after the copy");
        Assert.That(m.Model.ContrastiveNorm.Scale.ToArray<float>(), Is.EqualTo(new[] { 4f }));
        var pac = m.Model.Heads.Pac.Projection.ToArray<float>();
        double mean = pac.Average(x => (double)x), var = pac.Average(x => (x - mean) * (x - mean));
        Assert.That(var, Is.EqualTo(1.0).Within(5 * Math.Sqrt(2.0 / pac.Length)), "PAC matrix ~ N(0,1)");
    }

    [Test]
    public void ParameterGroupsFollowSpecSection6()
    {
        var m = new FashionViLPretraining(Micro, new Generator(4));
        var groups = m.ParameterGroups(1e-5, 1e-4, 20);
        var where = new Dictionary<string, (double Lr, double Wd)>();
        foreach (var g in groups) foreach (var n in g.Names) where[n] = (g.BaseLr, g.WeightDecay);
        var all = m.NamedParameters().Select(p => p.Name).ToList();
        Assert.That(where.Keys.Order(), Is.EqualTo(all.Order()), "every parameter exactly once");
        Assert.That(all.Any(n => n.Contains("decoder", StringComparison.Ordinal)), Is.False, "tied decoder listed once, as the word embeddings");
        void Check(string n, double lr, double wd) { Assert.That(where[n].Lr, Is.EqualTo(lr).Within(1e-15), n); Assert.That(where[n].Wd, Is.EqualTo(wd), n); }
        Check("image_encoder.model.0.weight", 2e-4, 1e-4);
        Check("image_encoder.model.1.bias", 2e-4, 1e-4);          // the ResNet group keeps decay on biases and BN
        Check("image_encoder.model.4.0.bn1.weight", 2e-4, 1e-4);
        Check("model.bert.embeddings.projection.weight", 2e-4, 1e-4);
        Check("model.bert.embeddings.projection.bias", 2e-4, 0);
        Check("model.heads.mlm.bias", 2e-4, 0);
        Check("model.heads.mlm.transform.LayerNorm.weight", 2e-4, 0);
        Check("model.heads.pac.projection", 2e-4, 1e-4);
        Check("model.heads.itm.seq_relationship.weight", 2e-4, 1e-4);
        Check("model.bert.embeddings.word_embeddings.weight", 1e-5, 1e-4);
        Check("model.bert.embeddings.position_embeddings_visual.weight", 1e-5, 1e-4);
        Check("model.bert.embeddings.LayerNorm.weight", 1e-5, 0);
        Check("model.bert.encoder.layer.0.attention.self.query.bias", 1e-5, 0);
        Check("model.bert.encoder.layer.0.attention.self.query.weight", 1e-5, 1e-4);
        Check("model.contrastive_norm.norm_s", 1e-5, 1e-4);
    }

    [Test]
    public void ItmPairsSwappedSamplesWithTheirHardNegative()
    {
        var m = new FashionViLPretraining(Micro, new Generator(11));
        using var b = ModelTestUtil.RandomBatch(Micro, 4, 8, new Generator(12));
        using (var keep = m.Itm(b, [false, false, false, false]))
        {
            Assert.That(keep.Pairing, Is.EqualTo(new[] { 0, 1, 2, 3 }));
            Assert.That(keep.Targets!.ToArray<long>(), Is.EqualTo(new long[] { 1, 1, 1, 1 }));
            keep.Loss.Dispose();
        }
        // the expected hard negatives from the ITC vectors (eval, no grad)
        int[] hard;
        using (GradMode.NoGrad())
        {
            using var grid = m.EncodeImages(b.Image);
            using var v0 = m.ImageVector(grid);
            using var v = m.Model.ContrastiveNorm.Forward(v0);
            using var t0 = m.TextVector(b.InputIds, b.SegmentIds, b.InputMask);
            using var t = m.Model.ContrastiveNorm.Forward(t0);
            using var tt = t.Transpose(0, 1);
            using var s = v.Matmul(tt);
            hard = FashionViLPretraining.HardNegatives(s.ToArray<float>(), 4);
        }
        using var swap = m.Itm(b, [true, false, true, true]);
        Assert.That(swap.Pairing, Is.EqualTo(new[] { hard[0], 1, hard[2], hard[3] }));
        Assert.That(swap.Targets!.ToArray<long>(), Is.EqualTo(new long[] { 0, 1, 0, 0 }));
        Assert.That(m.Model.IsTraining, Is.True, "training mode restored after mining");
        swap.Loss.Dispose();
    }

    [Test]
    public void ItmSwapDrawsFollowTheGenerator()
    {
        // the i-th sample is swapped when the i-th uniform of the generator exceeds 0.5
        var m = new FashionViLPretraining(Micro, new Generator(11));
        using var b = ModelTestUtil.RandomBatch(Micro, 4, 8, new Generator(12));
        var g = new Generator(77);
        using var u = new Generator(77).Uniform([4]);
        var expectSwap = u.ToArray<float>().Select(x => x > 0.5f).ToArray();
        using var o = m.Itm(b, g);
        Assert.That(o.Targets!.ToArray<long>(), Is.EqualTo(expectSwap.Select(s => s ? 0L : 1L).ToArray()));
        o.Loss.Dispose();
    }

    [Test]
    public void ForwardDispatchesEveryTaskAndRejectsBadInput()
    {
        var c = Micro;
        var m = new FashionViLPretraining(c, new Generator(21));
        using var b = ModelTestUtil.RandomBatch(c, 4, 8, new Generator(22));
        using var vq = Tensor.FromArray(Enumerable.Range(0, 4 * c.GridSize).Select(i => (long)(i * 37 % c.NumVqTokens)).ToArray(), 4, c.GridSize);
        var g = new Generator(23);
        foreach (var task in FashionViLConfig.AllTasks)
        {
            m.ZeroGrad();
            using var loss = m.Forward(task, b, vq, g);
            Assert.That(double.IsFinite(loss.Item()) && loss.Item() > 0, $"{task}: loss {loss.Item()}");
            loss.Backward();
            Assert.That(m.Bert.Embeddings.Projection.Weight.Grad, Is.Not.Null, $"{task}: no gradient reached the projection");
        }
        var ex = Assert.Throws<ArgumentException>(() => m.Forward("mvc", b, vq, g));
        Assert.That(ex!.Message, Does.Contain("mvc"));
        Assert.Throws<ArgumentException>(() => m.Forward("mpfc", b, null, g));
        using var badVq = Tensor.Zeros([4, c.GridSize + 1], DType.Int64);
        Assert.That(Assert.Throws<ArgumentException>(() => m.Mpfc(b, badVq))!.Message, Does.Contain("VQ targets"));
        Assert.That(Assert.Throws<ArgumentException>(() => m.Icc(b, [0], [0]))!.Message, Does.Contain("drop positions"));
        Assert.Throws<ArgumentException>(() => new FashionViLPretraining(c with { ImageSize = 100 }));
        Assert.Throws<ArgumentException>(() => new FashionViLPretraining(c with { TaskProbabilities = [0.5, 0.5, 0, 0, 0, 0.1] }));
    }

    [Test]
    public void RetrievalEmbeddingsAreNormalisedToTheScale()
    {
        var m = new FashionViLPretraining(Micro, new Generator(31));
        m.Eval();
        using var b = ModelTestUtil.RandomBatch(Micro, 3, 8, new Generator(32));
        using var vi = m.EmbedImages(b.Image);
        using var vt = m.EmbedTexts(b.InputIds, b.SegmentIds, b.InputMask);
        Assert.That(vi.RequiresGrad || vt.RequiresGrad, Is.False);
        foreach (var (t, name) in new[] { (vi, "image"), (vt, "text") })
        {
            var a = t.ToArray<float>();
            for (int i = 0; i < 3; i++)
            {
                double n2 = 0; for (int j = 0; j < 32; j++) n2 += a[i * 32 + j] * (double)a[i * 32 + j];
                Assert.That(Math.Sqrt(n2), Is.EqualTo(4.0).Within(1e-5), $"{name} {i}");
            }
        }
    }
}
