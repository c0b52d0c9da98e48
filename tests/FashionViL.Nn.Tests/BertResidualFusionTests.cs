using FashionViL.Autograd;
using FashionViL.Nn;
using FashionViL.Nn.Models;

namespace FashionViL.Nn.Tests;

/// <summary>
/// BertResidualOutput's fused dropout + add + layer norm leaves a training BERT step bitwise unchanged: the same MLM loss,
/// every parameter gradient and the generator's offset as the composed Dropout, add and LayerNorm modules (two layers,
/// hidden dropout 0.1, float32 and float64).
/// </summary>
public class BertResidualFusionTests
{
    private static readonly BertConfig Tiny = new(VocabSize: 40, HiddenSize: 12, NumHiddenLayers: 2, NumAttentionHeads: 2,
        IntermediateSize: 20, MaxPositionEmbeddings: 12, TypeVocabSize: 2, HiddenDropoutProb: 0.1);

    private static (double Loss, Dictionary<string, double[]> Grads, ulong Offset) Step(bool fused, DType dt, bool train)
    {
        var g = new Generator(21);
        var m = new BertForMaskedLM(Tiny, g, dt);
        int blocks = 0;
        foreach (var (_, mod) in m.NamedModules())
            if (mod is BertResidualOutput ro) { ro.Fused = fused; blocks++; }
        Assert.That(blocks, Is.EqualTo(2 * Tiny.NumHiddenLayers));
        if (train) m.Train(); else m.Eval();
        using var ids = Tensor.FromArray(new long[] { 2, 5, 7, 9, 5, 3, 4, 8, 12, 6, 1, 30 }, 2, 6);
        using var labels = Tensor.FromArray(new long[] { -100, 11, -100, 5, -100, 30, 7, -100, -100, 2, 3, -100 }, 2, 6);
        var (seq, pooled, logits) = m.Forward(ids);
        using var loss = BertForMaskedLM.MlmLoss(logits, labels);
        loss.Backward();
        var grads = m.NamedParameters().Where(p => p.Tensor.Grad is not null).ToDictionary(p => p.Name, p => p.Tensor.Grad!.ToArray<double>());
        double l = loss.ToArray<double>()[0];
        seq.Dispose(); pooled.Dispose(); logits.Dispose();
        return (l, grads, g.Offset);
    }

    [TestCase(DType.Float32, true)]
    [TestCase(DType.Float64, true)]
    [TestCase(DType.Float32, false)]
    public void FusedStepIsBitIdenticalToComposed(DType dt, bool train)
    {
        var f = Step(fused: true, dt, train);
        var c = Step(fused: false, dt, train);
        Assert.That(f.Loss, Is.EqualTo(c.Loss), "MLM loss");
        Assert.That(f.Offset, Is.EqualTo(c.Offset), "generator offset after the step");
        Assert.That(f.Grads.Keys, Is.EquivalentTo(c.Grads.Keys));
        Assert.That(f.Grads.Keys.Count(k => k.Contains("output.LayerNorm")), Is.EqualTo(4 * Tiny.NumHiddenLayers), "the fused blocks' parameters get gradients");
        foreach (var (k, v) in c.Grads) Assert.That(f.Grads[k], Is.EqualTo(v), $"gradient of {k}");
    }
}
