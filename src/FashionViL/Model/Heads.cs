using FashionViL.Autograd;
using FashionViL.Nn;
using FashionViL.Nn.Models;

namespace FashionViL.Model;

/// <summary>MMF's <c>NormalizationLayer</c>: N(x) = s · x/max(‖x‖₂, 1e-12) with one learnable scalar <c>norm_s</c> (shape [1]).</summary>
public sealed class NormalizationLayer : Module
{
    public Tensor Scale => Param("norm_s")!;

    public NormalizationLayer(double init = 4.0, DType dtype = DType.Float32) =>
        RegisterParameter("norm_s", Tensor.Full([1], init, dtype));

    public override Tensor Forward(Tensor x)
    {
        using var n = Losses.L2Normalize(x);
        return n * Scale;
    }
}

/// <summary>The reference's <c>CosSim</c> (PAC head): parameter <c>projection</c> (H × K, standard normal);
/// logits = normalise_rows(x) · normalise_columns(P), raw cosines in [−1, 1].</summary>
public sealed class CosSim : Module
{
    public Tensor Projection => Param("projection")!;

    public CosSim(int features, int classes, Generator? g = null, DType dtype = DType.Float32) =>
        RegisterParameter("projection", (g ?? Generator.Default).Normal([features, classes], 0, 1, dtype));

    public override Tensor Forward(Tensor x)
    {
        using var xn = Losses.L2Normalize(x);
        using var pt = Projection.Transpose(0, 1);         // [K, H]: normalise each column of P as a row
        using var pn = Losses.L2Normalize(pt);
        using var p = pn.Transpose(0, 1);
        return xn.Matmul(p);
    }
}

/// <summary>transformers' <c>BertOnlyNSPHead</c>: child <c>seq_relationship</c> = Linear(H → 2).</summary>
public sealed class ItmHead : Module
{
    public Linear SeqRelationship { get; }

    public ItmHead(int hidden, Generator? g = null, DType dtype = DType.Float32) =>
        SeqRelationship = RegisterModule("seq_relationship", new Linear(hidden, 2, true, g, dtype));

    public override Tensor Forward(Tensor pooled) => SeqRelationship.Forward(pooled);
}

/// <summary>The reference's <c>heads</c> ModuleDict: <c>itm</c>, <c>mlm</c> (decoder tied to the word embeddings),
/// <c>mpfc</c> (Sequential: <c>0</c> = BertPredictionHeadTransform, <c>1</c> = Linear H → VQ tokens), <c>pac</c>.</summary>
public sealed class PretrainingHeads : Module
{
    public ItmHead Itm { get; }
    public BertLMPredictionHead Mlm { get; }
    public Sequential Mpfc { get; }
    public CosSim Pac { get; }

    public PretrainingHeads(FashionViLConfig c, Embedding wordEmbeddings, Generator? g = null, DType dtype = DType.Float32)
    {
        Itm = RegisterModule("itm", new ItmHead(c.Bert.HiddenSize, g, dtype));
        Mlm = RegisterModule("mlm", new BertLMPredictionHead(c.Bert, wordEmbeddings, g, dtype));
        Mpfc = RegisterModule("mpfc", new Sequential(new BertPredictionHeadTransform(c.Bert, g, dtype),
            new Linear(c.Bert.HiddenSize, c.NumVqTokens, true, g, dtype)));
        Pac = RegisterModule("pac", new CosSim(c.Bert.HiddenSize, c.NumAttributes, g, dtype));
    }
}
