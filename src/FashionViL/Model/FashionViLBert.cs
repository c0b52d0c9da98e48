using FashionViL.Autograd;
using FashionViL.Nn;
using FashionViL.Nn.Models;

namespace FashionViL.Model;

/// <summary>
/// MMF's <c>BertVisioLinguisticEmbeddings</c> (spec §1.4): the HF text tables (<c>word_embeddings</c>, <c>position_embeddings</c>,
/// <c>token_type_embeddings</c>, <c>LayerNorm</c>, <c>dropout</c>) plus <c>token_type_embeddings_visual</c>,
/// <c>position_embeddings_visual</c> and <c>projection</c> (visual dim → hidden).
/// </summary>
public sealed class VisioLinguisticEmbeddings : Module
{
    public Embedding WordEmbeddings { get; }
    public Embedding PositionEmbeddings { get; }
    public Embedding TokenTypeEmbeddings { get; }
    public LayerNorm LayerNorm { get; }
    public Dropout Dropout { get; }
    public Embedding TokenTypeEmbeddingsVisual { get; }
    public Embedding PositionEmbeddingsVisual { get; }
    public Linear Projection { get; }

    public VisioLinguisticEmbeddings(BertConfig c, int visualDim, Generator? g = null, DType dtype = DType.Float32)
    {
        WordEmbeddings = RegisterModule("word_embeddings", new Embedding(c.VocabSize, c.HiddenSize, c.PadTokenId, g, dtype));
        PositionEmbeddings = RegisterModule("position_embeddings", new Embedding(c.MaxPositionEmbeddings, c.HiddenSize, -1, g, dtype));
        TokenTypeEmbeddings = RegisterModule("token_type_embeddings", new Embedding(c.TypeVocabSize, c.HiddenSize, -1, g, dtype));
        LayerNorm = RegisterModule("LayerNorm", new LayerNorm(c.HiddenSize, c.LayerNormEps, dtype: dtype));
        Dropout = RegisterModule("dropout", new Dropout(c.HiddenDropoutProb, g));
        TokenTypeEmbeddingsVisual = RegisterModule("token_type_embeddings_visual", new Embedding(c.TypeVocabSize, c.HiddenSize, -1, g, dtype));
        PositionEmbeddingsVisual = RegisterModule("position_embeddings_visual", new Embedding(c.MaxPositionEmbeddings, c.HiddenSize, -1, g, dtype));
        Projection = RegisterModule("projection", new Linear(visualDim, c.HiddenSize, true, g, dtype));
    }

    /// <summary><c>initialize_visual_from_pretrained</c>: copies the text position and token-type tables into the visual ones.</summary>
    public void InitializeVisualFromText()
    {
        using (GradMode.NoGrad())
        {
            Backends.Get(PositionEmbeddingsVisual.Weight.Device).Copy(PositionEmbeddings.Weight, PositionEmbeddingsVisual.Weight);
            Backends.Get(TokenTypeEmbeddingsVisual.Weight.Device).Copy(TokenTypeEmbeddings.Weight, TokenTypeEmbeddingsVisual.Weight);
        }
    }

    /// <summary>word[id] + position[j] + type[seg], j = 0..T−1 (no LayerNorm): (B,T,H).</summary>
    public Tensor EncodeText(Tensor inputIds, Tensor segmentIds)
    {
        if (inputIds.Rank != 2 || !segmentIds.Sizes.SequenceEqual(inputIds.Sizes))
            throw new ArgumentException($"fashionvil embeddings: input ids {inputIds.ShapeString} must be [B,T] and segment ids {segmentIds.ShapeString} must match");
        int t = inputIds.Size(1);
        if (t > PositionEmbeddings.NumEmbeddings)
            throw new ArgumentException($"fashionvil embeddings: {t} tokens exceed {PositionEmbeddings.NumEmbeddings} positions");
        using var pos = Tensor.Arange(t, DType.Int64, inputIds.Device);
        using var w = WordEmbeddings.Forward(inputIds);
        using var p = PositionEmbeddings.Forward(pos);
        using var ty = TokenTypeEmbeddings.Forward(segmentIds);
        using var s = w + p;
        return s + ty;
    }

    /// <summary>projection(f) + position_visual[i] + type_visual[0], i = 0..G−1 (no LayerNorm): (B,G,H).</summary>
    public Tensor EncodeImage(Tensor features)
    {
        if (features.Rank != 3 || features.Size(2) != Projection.InFeatures)
            throw new ArgumentException($"fashionvil embeddings: visual features {features.ShapeString} must be [B,G,{Projection.InFeatures}]");
        int g = features.Size(1);
        if (g > PositionEmbeddingsVisual.NumEmbeddings)
            throw new ArgumentException($"fashionvil embeddings: {g} visual tokens exceed {PositionEmbeddingsVisual.NumEmbeddings} visual positions");
        using var pos = Tensor.Arange(g, DType.Int64, features.Device);
        using var types = Tensor.Zeros([g], DType.Int64, features.Device);
        using var proj = Projection.Forward(features);
        using var p = PositionEmbeddingsVisual.Forward(pos);
        using var ty = TokenTypeEmbeddingsVisual.Forward(types);
        using var s = proj + p;
        return s + ty;
    }

    /// <summary>Text only: LayerNorm → dropout of <see cref="EncodeText"/>.</summary>
    public Tensor ForwardText(Tensor inputIds, Tensor segmentIds)
    {
        using var e = EncodeText(inputIds, segmentIds);
        using var n = LayerNorm.Forward(e);
        return Dropout.Forward(n);
    }

    /// <summary>Joint: concat(text (T), visual (G)) along the sequence → one LayerNorm → dropout: (B,T+G,H).</summary>
    public Tensor ForwardJoint(Tensor inputIds, Tensor segmentIds, Tensor features)
    {
        using var te = EncodeText(inputIds, segmentIds);
        using var ve = EncodeImage(features);
        if (te.Size(0) != ve.Size(0))
            throw new ArgumentException($"fashionvil embeddings: {te.Size(0)} texts but {ve.Size(0)} images");
        using var cat = Ops.Cat([te, ve], 1);
        using var n = LayerNorm.Forward(cat);
        return Dropout.Forward(n);
    }
}

/// <summary>MMF's <c>FashionViLBase</c> (a BertPreTrainedModel): <c>embeddings</c>, <c>encoder</c>, <c>pooler</c>.</summary>
public sealed class FashionViLBert : Module
{
    public BertConfig Config { get; }
    public VisioLinguisticEmbeddings Embeddings { get; }
    public BertEncoder Encoder { get; }
    public BertPooler Pooler { get; }

    public FashionViLBert(BertConfig c, int visualDim, Generator? g = null, DType dtype = DType.Float32)
    {
        Config = c;
        Embeddings = RegisterModule("embeddings", new VisioLinguisticEmbeddings(c, visualDim, g, dtype));
        Encoder = RegisterModule("encoder", new BertEncoder(c, g, dtype));
        Pooler = RegisterModule("pooler", new BertPooler(c, g, dtype));
    }

    /// <summary>Encoder + pooler over embeddings (B,L,H) with a key mask (B,L) (1 = attend, any numeric dtype): (sequence, pooled).</summary>
    public (Tensor Sequence, Tensor Pooled) Encode(Tensor embeddings, Tensor attentionMask)
    {
        if (attentionMask.Rank != 2 || attentionMask.Size(0) != embeddings.Size(0) || attentionMask.Size(1) != embeddings.Size(1))
            throw new ArgumentException($"fashionvil bert: attention mask {attentionMask.ShapeString} must be [B,L] for embeddings {embeddings.ShapeString}");
        using var ext = BertModel.ExtendedAttentionMask(attentionMask, embeddings.DType);
        var seq = Encoder.Forward(embeddings, ext);
        var pooled = Pooler.Forward(seq);
        return (seq, pooled);
    }

    /// <summary>Unimodal image path with <c>bypass_transformer: true</c>: only the projection, (B,G,H).</summary>
    public Tensor ImageEmbedding(Tensor features) => Embeddings.Projection.Forward(features);

    /// <summary>Unimodal text path: full BERT over the text (sequence (B,T,H), pooled (B,H)).</summary>
    public (Tensor Sequence, Tensor Pooled) TextEmbedding(Tensor inputIds, Tensor segmentIds, Tensor inputMask)
    {
        using var e = Embeddings.ForwardText(inputIds, segmentIds);
        return Encode(e, inputMask);
    }

    /// <summary>Joint path: text then G visual tokens through the shared BERT; <paramref name="attentionMask"/> is (B, T+G).</summary>
    public (Tensor Sequence, Tensor Pooled) JointEmbedding(Tensor inputIds, Tensor segmentIds, Tensor features, Tensor attentionMask)
    {
        using var e = Embeddings.ForwardJoint(inputIds, segmentIds, features);
        return Encode(e, attentionMask);
    }
}
