using FashionViL.Autograd;
using FashionViL.Bench;
using FashionViL.Config;
using FashionViL.Data;
using FashionViL.Kernels.Cuda;
using FashionViL.Model;
using FashionViL.Nn;
using FashionViL.Training;

namespace FashionViL.Tests.Bench;

/// <summary>The changes that took the host reads out of the step compute what the old code computed.</summary>
public class SyncFreeStepTests
{
    [Test]
    public void BatchNormCountsItsTrainingBatchesOnTheDevice()
    {
        var bn = new BatchNorm2d(3);
        bn.Train();
        var g = new Generator(1);
        using var x = g.Normal([2, 3, 2, 2]);
        for (int i = 0; i < 3; i++) bn.Forward(x).Dispose();
        bn.Eval();
        bn.Forward(x).Dispose();
        Assert.That(bn.NumBatchesTracked.DType, Is.EqualTo(DType.Int64));
        Assert.That(bn.NumBatchesTracked.ToArray<long>(), Is.EqualTo(new long[] { 3 }), "three training forwards, the eval one not counted");
    }

    [Test]
    public void ContrastiveIsExactlyTheMeanCrossEntropy()
    {
        var g = new Generator(7);
        using var a = g.Normal([5, 4]);
        using var b = g.Normal([5, 4]);
        using var got = Losses.Contrastive(a, b);
        // The previous formula: Reduction.Mean (which reads the targets to count them).
        using var labels = Tensor.Arange(5);
        using var l1 = a.Matmul(b.Transpose(0, 1));
        using var l2 = b.Matmul(a.Transpose(0, 1));
        using var c1 = Ops.CrossEntropy(l1, labels);
        using var c2 = Ops.CrossEntropy(l2, labels);
        using var s = c1 + c2;
        using var want = s * 0.5;
        Assert.That(got.Item(), Is.EqualTo(want.Item()), "bit-identical");
        // And against a float64 reference of ½[CE(a·bᵀ) + CE(b·aᵀ)].
        double Ce(float[] x, float[] y)
        {
            double tot = 0;
            for (int i = 0; i < 5; i++)
            {
                var row = Enumerable.Range(0, 5).Select(j => Enumerable.Range(0, 4).Sum(k => (double)x[i * 4 + k] * y[j * 4 + k])).ToArray();
                double m = row.Max(), lse = m + Math.Log(row.Sum(v => Math.Exp(v - m)));
                tot += lse - row[i];
            }
            return tot / 5;
        }
        var av = a.ToArray<float>(); var bv = b.ToArray<float>();
        Assert.That(got.Item(), Is.EqualTo(0.5 * (Ce(av, bv) + Ce(bv, av))).Within(1e-5).Percent);
    }

    [Test]
    public void MlmWithTheHostLabelCopyGivesTheSameLossAndGradients()
    {
        var cfg = FvConfig.Load(BenchTestUtil.Nano);
        var mc = PretrainSetup.ModelConfig(cfg);
        mc = mc with { Bert = mc.Bert with { VocabSize = 300, HiddenDropoutProb = 0, AttentionProbsDropoutProb = 0 } };
        var model = new FashionViLPretraining(mc, new Generator(2));
        model.Eval();   // BN running statistics do not move between the two runs
        using var batch = StepBenchmark.MakeBatch(mc, 2, 16, Device.Cpu, 4);
        var host = batch.LmLabelIds.ToArray<long>();
        var withCopy = new PretrainBatch
        {
            Image = batch.Image, DvImage = batch.DvImage, InputIds = batch.InputIds, InputIdsMasked = batch.InputIdsMasked, InputMask = batch.InputMask,
            SegmentIds = batch.SegmentIds, LmLabelIds = batch.LmLabelIds, AttributeLabels = batch.AttributeLabels, ImageMasks = batch.ImageMasks,
            Ids = batch.Ids, LmLabelIdsHost = host,
        };
        (double Loss, float[] Grad) Run(PretrainBatch b)
        {
            model.ZeroGrad();
            using var o = model.Mlm(b);
            o.Loss.Backward();
            using (GradMode.NoGrad())
            {
                // The previous formula: CE with Reduction.Mean over the picked rows (reads the targets to count them).
                using var old = Ops.CrossEntropy(o.Scores!, o.Targets!, -1);
                Assert.That(o.Loss.Item(), Is.EqualTo(old.Item()), "bit-identical to the mean reduction");
            }
            return (o.Loss.Item(), model.Bert.Embeddings.WordEmbeddings.Weight.Grad!.ToArray<float>());
        }
        var (l0, g0) = Run(batch);
        var (l1, g1) = Run(withCopy);
        Assert.That(l1, Is.EqualTo(l0));
        Assert.That(g1, Is.EqualTo(g0));
        Assert.That(host.Count(v => v != -1), Is.EqualTo(22), "labels on positions 1..11 of each of the 2 rows");

        var bad = new PretrainBatch
        {
            Image = batch.Image, DvImage = batch.DvImage, InputIds = batch.InputIds, InputIdsMasked = batch.InputIdsMasked, InputMask = batch.InputMask,
            SegmentIds = batch.SegmentIds, LmLabelIds = batch.LmLabelIds, AttributeLabels = batch.AttributeLabels, ImageMasks = batch.ImageMasks,
            Ids = batch.Ids, LmLabelIdsHost = host[..5],
        };
        var e = Assert.Throws<ArgumentException>(() => model.Mlm(bad));
        Assert.That(e!.Message, Does.Contain("lm_label_ids_host"));
        model.ZeroGrad();
    }

    [Test]
    public void ItmAndMpfcLossesAreExactlyTheMeanCrossEntropy()
    {
        var cfg = FvConfig.Load(BenchTestUtil.Nano);
        var mc = PretrainSetup.ModelConfig(cfg);
        mc = mc with { Bert = mc.Bert with { VocabSize = 300, HiddenDropoutProb = 0, AttentionProbsDropoutProb = 0 } };
        var model = new FashionViLPretraining(mc, new Generator(3));
        model.Eval();
        using var batch = StepBenchmark.MakeBatch(mc, 3, 16, Device.Cpu, 5);
        using (var itm = model.Itm(batch, [true, false, true]))
        using (GradMode.NoGrad())
        {
            using var old = Ops.CrossEntropy(itm.Scores!, itm.Targets!);
            Assert.That(itm.Loss.Item(), Is.EqualTo(old.Item()), "itm: bit-identical to the mean reduction");
            itm.Loss.Dispose();
        }
        using var codes = Tensor.FromArray(new long[] { 5, 17, 2 }, [3, 1]);
        using (var mpfc = model.Mpfc(batch, codes))
        using (GradMode.NoGrad())
        {
            using var old = Ops.CrossEntropy(mpfc.Scores!, mpfc.Targets!);
            Assert.That(mpfc.Loss.Item(), Is.EqualTo(old.Item()), "mpfc: bit-identical to the mean reduction");
            Assert.That(mpfc.Targets!.ToArray<long>(), Is.EqualTo(new long[] { 5, 17, 2 }), "one masked cell per image in the nano grid");
            mpfc.Loss.Dispose();
        }
    }
}
