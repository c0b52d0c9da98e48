using FashionViL.Autograd;
using FashionViL.Tensors;

namespace FashionViL.Nn.Models;

/// <summary>BERT hyper-parameters; the defaults are bert-base-uncased (transformers-3.x <c>BertConfig</c>).</summary>
public sealed record BertConfig(
    int VocabSize = 30522, int HiddenSize = 768, int NumHiddenLayers = 12, int NumAttentionHeads = 12,
    int IntermediateSize = 3072, int MaxPositionEmbeddings = 512, int TypeVocabSize = 2,
    double LayerNormEps = 1e-12, double HiddenDropoutProb = 0.1, double AttentionProbsDropoutProb = 0.1,
    double InitializerRange = 0.02, int PadTokenId = 0)
{
    public int HeadDim => HiddenSize / NumAttentionHeads;

    internal void Validate()
    {
        if (VocabSize < 1 || HiddenSize < 1 || NumHiddenLayers < 0 || NumAttentionHeads < 1 || IntermediateSize < 1
            || MaxPositionEmbeddings < 1 || TypeVocabSize < 1)
            throw new ArgumentException($"bert: invalid config {this}");
        if (HiddenSize % NumAttentionHeads != 0)
            throw new ArgumentException($"bert: hidden size {HiddenSize} is not a multiple of {NumAttentionHeads} heads");
    }
}

internal static class BertUtil
{
    /// <summary>
    /// Frees an intermediate now, step scope or not: what backward needs, the graph holds through its own aliases, so only
    /// the storage nobody saved goes back to the allocator. (Until issue 7 a step scope kept every intermediate to the end
    /// of the step, which raised the peak of a training step by the forward's unsaved activations.)
    /// </summary>
    public static void Drop(Tensor t) => t.Dispose();
}

/// <summary>HF <c>BertEmbeddings</c>: word + position + token-type embeddings, LayerNorm, dropout.</summary>
public sealed class BertEmbeddings : Module
{
    public Embedding WordEmbeddings { get; }
    public Embedding PositionEmbeddings { get; }
    public Embedding TokenTypeEmbeddings { get; }
    public LayerNorm LayerNorm { get; }
    public Dropout Dropout { get; }

    public BertEmbeddings(BertConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        WordEmbeddings = RegisterModule("word_embeddings", new Embedding(c.VocabSize, c.HiddenSize, c.PadTokenId, g, dtype));
        PositionEmbeddings = RegisterModule("position_embeddings", new Embedding(c.MaxPositionEmbeddings, c.HiddenSize, -1, g, dtype));
        TokenTypeEmbeddings = RegisterModule("token_type_embeddings", new Embedding(c.TypeVocabSize, c.HiddenSize, -1, g, dtype));
        LayerNorm = RegisterModule("LayerNorm", new LayerNorm(c.HiddenSize, c.LayerNormEps, dtype: dtype));
        Dropout = RegisterModule("dropout", new Dropout(c.HiddenDropoutProb, g));
    }

    /// <summary>ids [B, L] int64; token types [B, L] (zeros when null); positions 0..L−1.</summary>
    public Tensor Forward(Tensor inputIds, Tensor? tokenTypeIds = null)
    {
        if (inputIds.Rank != 2) throw new ArgumentException($"bert_embeddings: input ids {inputIds.ShapeString} must be [B, L]");
        int b = inputIds.Size(0), l = inputIds.Size(1);
        if (l > PositionEmbeddings.NumEmbeddings)
            throw new ArgumentException($"bert_embeddings: input ids {inputIds.ShapeString} longer than {PositionEmbeddings.NumEmbeddings} positions");
        if (tokenTypeIds is not null && !tokenTypeIds.Sizes.SequenceEqual(inputIds.Sizes))
            throw new ArgumentException($"bert_embeddings: token type ids {tokenTypeIds.ShapeString} must match input ids {inputIds.ShapeString}");
        using var pos = Tensor.Arange(l, DType.Int64, inputIds.Device);
        using var types = tokenTypeIds is null ? Tensor.Zeros([b, l], DType.Int64, inputIds.Device) : null;
        var w = WordEmbeddings.Forward(inputIds);
        var p = PositionEmbeddings.Forward(pos);
        var t = TokenTypeEmbeddings.Forward(tokenTypeIds ?? types!);
        var s1 = w + p; BertUtil.Drop(w); BertUtil.Drop(p);
        var s = s1 + t; BertUtil.Drop(s1); BertUtil.Drop(t);
        var n = LayerNorm.Forward(s); BertUtil.Drop(s);
        var d = Dropout.Forward(n); BertUtil.Drop(n);
        return d;
    }
}

/// <summary>HF <c>BertSelfAttention</c>: query/key/value Linear H→H, fused scaled-dot-product attention with an additive mask.</summary>
public sealed class BertSelfAttention : Module
{
    public int NumHeads { get; }
    public int HeadDim { get; }
    public double AttentionDropout { get; }
    public Generator? Generator { get; }
    public Linear Query { get; }
    public Linear Key { get; }
    public Linear Value { get; }

    public BertSelfAttention(BertConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        NumHeads = c.NumAttentionHeads; HeadDim = c.HeadDim; AttentionDropout = c.AttentionProbsDropoutProb; Generator = g;
        Query = RegisterModule("query", new Linear(c.HiddenSize, c.HiddenSize, true, g, dtype));
        Key = RegisterModule("key", new Linear(c.HiddenSize, c.HiddenSize, true, g, dtype));
        Value = RegisterModule("value", new Linear(c.HiddenSize, c.HiddenSize, true, g, dtype));
    }

    /// <summary>
    /// The heads of a projection as a [B, heads, L, D] view of its [B, L, H] output (no copy: the attention op reads strided
    /// heads in place, writes its output in the [B, L, heads, D] order so the merge below is a view too, and its gradients
    /// come back in the projection's layout).
    /// </summary>
    private Tensor Heads(Linear proj, Tensor x, int b, int l)
    {
        var y = proj.Forward(x);
        var r = y.Reshape(b, l, NumHeads, HeadDim); BertUtil.Drop(y);
        var p = r.Permute(0, 2, 1, 3); BertUtil.Drop(r);
        return p;
    }

    /// <summary>x [B, L, H]; <paramref name="additiveMask"/> broadcastable to [B, heads, L, L] (e.g. [B,1,1,L]) or null.</summary>
    public Tensor Forward(Tensor x, Tensor? additiveMask)
    {
        if (x.Rank != 3 || x.Size(2) != NumHeads * HeadDim)
            throw new ArgumentException($"bert_self_attention: input {x.ShapeString} must be [B, L, {NumHeads * HeadDim}]");
        int b = x.Size(0), l = x.Size(1);
        var q = Heads(Query, x, b, l);
        var k = Heads(Key, x, b, l);
        var v = Heads(Value, x, b, l);
        var a = Ops.Attention(q, k, v, additiveMask, 1.0 / Math.Sqrt(HeadDim), AttentionDropout, IsTraining, Generator);
        BertUtil.Drop(q); BertUtil.Drop(k); BertUtil.Drop(v);
        var p = a.Permute(0, 2, 1, 3); BertUtil.Drop(a);
        var r = p.Reshape(b, l, NumHeads * HeadDim); BertUtil.Drop(p);
        return r;
    }
}

/// <summary>HF <c>BertSelfOutput</c> / <c>BertOutput</c>: LayerNorm(residual + dropout(dense(x))).</summary>
public sealed class BertResidualOutput : Module
{
    public Linear Dense { get; }
    public LayerNorm LayerNorm { get; }
    public Dropout Dropout { get; }

    public BertResidualOutput(int inFeatures, BertConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        Dense = RegisterModule("dense", new Linear(inFeatures, c.HiddenSize, true, g, dtype));
        LayerNorm = RegisterModule("LayerNorm", new LayerNorm(c.HiddenSize, c.LayerNormEps, dtype: dtype));
        Dropout = RegisterModule("dropout", new Dropout(c.HiddenDropoutProb, g));
    }

    /// <summary>
    /// True (the default): dropout, residual add and layer norm run as one fused op (<see cref="Ops.DropoutAddLayerNorm"/>,
    /// bitwise the same result and gradients); false: the three modules one after another (the reference the tests compare with).
    /// </summary>
    public bool Fused { get; set; } = true;

    public Tensor Forward(Tensor x, Tensor residual)
    {
        var h = Dense.Forward(x);
        if (Fused)
        {
            if (h.Rank == 0 || h.Size(-1) != LayerNorm.Dim)
                throw new ArgumentException($"layer_norm: input {h.ShapeString} last dim should be {LayerNorm.Dim}");
            var o = Ops.DropoutAddLayerNorm(h, residual, Dropout.P, Dropout.IsTraining, Dropout.Generator, LayerNorm.Weight, LayerNorm.Bias, LayerNorm.Eps);
            BertUtil.Drop(h);
            return o;
        }
        var d = Dropout.Forward(h); BertUtil.Drop(h);
        var s = d + residual; BertUtil.Drop(d);
        var n = LayerNorm.Forward(s); BertUtil.Drop(s);
        return n;
    }
}

/// <summary>HF <c>BertAttention</c>: children <c>self</c> and <c>output</c>.</summary>
public sealed class BertAttention : Module
{
    public BertSelfAttention Self { get; }
    public BertResidualOutput Output { get; }

    public BertAttention(BertConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        Self = RegisterModule("self", new BertSelfAttention(c, g, dtype));
        Output = RegisterModule("output", new BertResidualOutput(c.HiddenSize, c, g, dtype));
    }

    public Tensor Forward(Tensor x, Tensor? additiveMask)
    {
        var a = Self.Forward(x, additiveMask);
        var o = Output.Forward(a, x); BertUtil.Drop(a);
        return o;
    }
}

/// <summary>HF <c>BertIntermediate</c>: GELU(dense(x)), exact erf GELU.</summary>
public sealed class BertIntermediate : Module
{
    public Linear Dense { get; }

    public BertIntermediate(BertConfig c, Generator? g = null, DType dtype = DType.Float32) =>
        Dense = RegisterModule("dense", new Linear(c.HiddenSize, c.IntermediateSize, true, g, dtype));

    public override Tensor Forward(Tensor x)
    {
        var h = Dense.Forward(x);
        var y = h.Gelu(); BertUtil.Drop(h);
        return y;
    }
}

/// <summary>HF <c>BertLayer</c>: attention, intermediate, output (post-LN).</summary>
public sealed class BertLayer : Module
{
    public BertAttention Attention { get; }
    public BertIntermediate Intermediate { get; }
    public BertResidualOutput Output { get; }

    public BertLayer(BertConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        Attention = RegisterModule("attention", new BertAttention(c, g, dtype));
        Intermediate = RegisterModule("intermediate", new BertIntermediate(c, g, dtype));
        Output = RegisterModule("output", new BertResidualOutput(c.IntermediateSize, c, g, dtype));
    }

    public Tensor Forward(Tensor x, Tensor? additiveMask)
    {
        var a = Attention.Forward(x, additiveMask);
        var i = Intermediate.Forward(a);
        var o = Output.Forward(i, a); BertUtil.Drop(i); BertUtil.Drop(a);
        return o;
    }
}

/// <summary>HF <c>BertEncoder</c>: <c>layer.0</c> … <c>layer.N−1</c>, no final LayerNorm.</summary>
public sealed class BertEncoder : Module
{
    public ModuleList Layer { get; }

    public BertEncoder(BertConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        Layer = RegisterModule("layer", new ModuleList());
        for (int i = 0; i < c.NumHiddenLayers; i++) Layer.Add(new BertLayer(c, g, dtype));
    }

    public Tensor Forward(Tensor x, Tensor? additiveMask)
    {
        if (Layer.Count == 0) return x.View(x.Shape); // a graph-recording view (Tensor.Alias would cut the graph)
        Tensor? h = null;
        foreach (var m in Layer)
        {
            var next = ((BertLayer)m).Forward(h ?? x, additiveMask);
            if (h is not null) BertUtil.Drop(h);
            h = next;
        }
        return h!;
    }
}

/// <summary>HF <c>BertPooler</c>: tanh(dense(h[:, 0])).</summary>
public sealed class BertPooler : Module
{
    public Linear Dense { get; }

    public BertPooler(BertConfig c, Generator? g = null, DType dtype = DType.Float32) =>
        Dense = RegisterModule("dense", new Linear(c.HiddenSize, c.HiddenSize, true, g, dtype));

    public override Tensor Forward(Tensor sequence)
    {
        var first = sequence.Select(1, 0);
        var d = Dense.Forward(first); BertUtil.Drop(first);
        var y = d.Tanh(); BertUtil.Drop(d);
        return y;
    }
}

/// <summary>HF <c>BertModel</c>: <c>embeddings</c>, <c>encoder</c>, <c>pooler</c>.</summary>
public sealed class BertModel : Module
{
    public BertConfig Config { get; }
    public BertEmbeddings Embeddings { get; }
    public BertEncoder Encoder { get; }
    public BertPooler Pooler { get; }

    public BertModel(BertConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        c.Validate();
        Config = c;
        Embeddings = RegisterModule("embeddings", new BertEmbeddings(c, g, dtype));
        Encoder = RegisterModule("encoder", new BertEncoder(c, g, dtype));
        Pooler = RegisterModule("pooler", new BertPooler(c, g, dtype));
    }

    /// <summary>The additive mask (1 − m)·(−10000) as [B, 1, 1, L] in <paramref name="dtype"/> from a [B, L] key mask (1 = attend).</summary>
    public static Tensor ExtendedAttentionMask(Tensor attentionMask, DType dtype)
    {
        if (attentionMask.Rank != 2) throw new ArgumentException($"bert: attention mask {attentionMask.ShapeString} must be [B, L]");
        using var m = attentionMask.To(dtype);
        using var inv = 1.0 - m;
        using var scaled = inv * -10000.0;
        return scaled.Reshape(attentionMask.Size(0), 1, 1, attentionMask.Size(1)).Contiguous();
    }

    /// <summary>Returns (sequence output [B, L, H], pooled output [B, H]). The mask is [B, L] with 1 = attend (null: all ones).</summary>
    public (Tensor Sequence, Tensor Pooled) Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null)
    {
        if (attentionMask is not null && !attentionMask.Sizes.SequenceEqual(inputIds.Sizes))
            throw new ArgumentException($"bert: attention mask {attentionMask.ShapeString} must match input ids {inputIds.ShapeString}");
        var emb = Embeddings.Forward(inputIds, tokenTypeIds);
        using var mask = attentionMask is null ? null : ExtendedAttentionMask(attentionMask, emb.DType);
        var seq = Encoder.Forward(emb, mask); BertUtil.Drop(emb);
        var pooled = Pooler.Forward(seq);
        return (seq, pooled);
    }
}

/// <summary>HF <c>BertPredictionHeadTransform</c>: LayerNorm(GELU(dense(x))).</summary>
public sealed class BertPredictionHeadTransform : Module
{
    public Linear Dense { get; }
    public LayerNorm LayerNorm { get; }

    public BertPredictionHeadTransform(BertConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        Dense = RegisterModule("dense", new Linear(c.HiddenSize, c.HiddenSize, true, g, dtype));
        LayerNorm = RegisterModule("LayerNorm", new LayerNorm(c.HiddenSize, c.LayerNormEps, dtype: dtype));
    }

    public override Tensor Forward(Tensor x)
    {
        var h = Dense.Forward(x);
        var a = h.Gelu(); BertUtil.Drop(h);
        var n = LayerNorm.Forward(a); BertUtil.Drop(a);
        return n;
    }
}

/// <summary>
/// HF <c>BertLMPredictionHead</c>: own parameter <c>bias</c> [V], child <c>transform</c>; the decoder weight is the word
/// embedding tensor itself (tied: one tensor, so it is listed once, under <c>bert.embeddings.word_embeddings.weight</c>,
/// as PyTorch's de-duplicated <c>named_parameters</c>, and its gradient is the sum of both uses).
/// </summary>
public sealed class BertLMPredictionHead : Module
{
    private readonly Embedding _tiedTo;
    public BertPredictionHeadTransform Transform { get; }
    public Tensor Bias => Param("bias")!;
    /// <summary>The tied decoder weight [V, H] (the same tensor as the word embeddings).</summary>
    public Tensor DecoderWeight => _tiedTo.Weight;

    public BertLMPredictionHead(BertConfig c, Embedding wordEmbeddings, Generator? g = null, DType dtype = DType.Float32)
    {
        _tiedTo = wordEmbeddings;
        RegisterParameter("bias", Tensor.Zeros([c.VocabSize], dtype));
        Transform = RegisterModule("transform", new BertPredictionHeadTransform(c, g, dtype));
    }

    public override Tensor Forward(Tensor x)
    {
        var h = Transform.Forward(x);
        var y = Ops.Linear(h, DecoderWeight, Bias); BertUtil.Drop(h);
        return y;
    }
}

/// <summary>HF <c>BertOnlyMLMHead</c>: child <c>predictions</c>.</summary>
public sealed class BertOnlyMLMHead : Module
{
    public BertLMPredictionHead Predictions { get; }

    public BertOnlyMLMHead(BertConfig c, Embedding wordEmbeddings, Generator? g = null, DType dtype = DType.Float32) =>
        Predictions = RegisterModule("predictions", new BertLMPredictionHead(c, wordEmbeddings, g, dtype));

    public override Tensor Forward(Tensor x) => Predictions.Forward(x);
}

/// <summary>BERT with pooler and MLM head: names <c>bert.*</c> and <c>cls.predictions.*</c> as Hugging Face.</summary>
public sealed class BertForMaskedLM : Module
{
    public BertConfig Config { get; }
    public BertModel Bert { get; }
    public BertOnlyMLMHead Cls { get; }

    /// <summary>Builds the model and applies the HF init (N(0, initializer_range) weights, zero biases, LayerNorm 1/0, zero padding row).</summary>
    public BertForMaskedLM(BertConfig? config = null, Generator? g = null, DType dtype = DType.Float32)
    {
        Config = config ?? new BertConfig();
        Bert = RegisterModule("bert", new BertModel(Config, g, dtype));
        Cls = RegisterModule("cls", new BertOnlyMLMHead(Config, Bert.Embeddings.WordEmbeddings, g, dtype));
        Init.HfInit(this, g, Config.InitializerRange);
    }

    /// <summary>(sequence output [B,L,H], pooled output [B,H], MLM logits [B,L,V]).</summary>
    public (Tensor Sequence, Tensor Pooled, Tensor Logits) Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null)
    {
        var (seq, pooled) = Bert.Forward(inputIds, attentionMask, tokenTypeIds);
        var logits = Cls.Forward(seq);
        return (seq, pooled, logits);
    }

    /// <summary>Mean cross-entropy of the MLM logits [B,L,V] against labels [B,L] (−100 = ignored).</summary>
    public static Tensor MlmLoss(Tensor logits, Tensor labels)
    {
        int v = logits.Size(-1);
        using var flat = logits.Reshape(-1, v);
        using var lab = labels.Reshape(-1);
        return Ops.CrossEntropy(flat, lab, -100);
    }
}
