using FashionViL.Autograd;
using FashionViL.Model;
using FashionViL.Nn;

namespace FashionViL.Inference;

/// <summary>
/// The parts of FashionViL that embed (spec §1.5, §4.1, §4.2), under the MMF names of the fine-tuned retrieval models
/// (<c>FashionViLForContrastive</c> / <c>FashionViLForComposition</c>): <c>image_encoder.model.*</c>, <c>model.bert.*</c>,
/// <c>model.norm_layer.norm_s</c>. A pre-training checkpoint's <c>model.contrastive_norm.norm_s</c> is loaded into the
/// same scalar; the heads of any checkpoint are ignored.
/// </summary>
internal sealed class EmbeddingModel : Module
{
    public const string NormKey = "model.norm_layer.norm_s";
    public const string PretrainNormKey = "model.contrastive_norm.norm_s";

    public FashionViLConfig Config { get; }
    public ImageEncoder ImageEncoder { get; }
    public Inner Model { get; }

    internal sealed class Inner : Module
    {
        public FashionViLBert Bert { get; }
        public NormalizationLayer Norm { get; }

        public Inner(FashionViLConfig c)
        {
            Bert = RegisterModule("bert", new FashionViLBert(c.Bert, c.VisualEmbeddingDim));
            Norm = RegisterModule("norm_layer", new NormalizationLayer(c.NormScaleInit));
        }
    }

    public EmbeddingModel(FashionViLConfig config)
    {
        config.Validate();
        Config = config;
        ImageEncoder = RegisterModule("image_encoder", new ImageEncoder(config.ResNet));
        Model = RegisterModule("model", new Inner(config));
    }

    /// <summary>N(mean over the G tokens of projection(ResNet(images))) (B,H).</summary>
    public Tensor EmbedImages(Tensor images)
    {
        using var grid = ImageEncoder.Forward(images);
        using var p = Model.Bert.ImageEmbedding(grid);
        using var v = p.Mean(1);
        return Model.Norm.Forward(v);
    }

    /// <summary>N(masked mean of the text-only BERT output) (B,H).</summary>
    public Tensor EmbedTexts(Tensor inputIds, Tensor segmentIds, Tensor inputMask)
    {
        var (seq, pooled) = Model.Bert.TextEmbedding(inputIds, segmentIds, inputMask);
        using (seq) using (pooled)
        {
            using var t = Losses.MaskedMean(seq, inputMask);
            return Model.Norm.Forward(t);
        }
    }

    /// <summary>The composed query (FashionIQ, spec §4.2): joint forward of (text, reference image grid) with the key mask
    /// [input_mask, 1×G]; N(mean of the last G (visual) outputs) (B,H).</summary>
    public Tensor EmbedQueries(Tensor images, Tensor inputIds, Tensor segmentIds, Tensor inputMask)
    {
        using var grid = ImageEncoder.Forward(images);
        int t = inputIds.Size(1), g = grid.Size(1);
        using var jm = FashionViLPretraining.JointMask(inputMask, g);
        var (seq, pooled) = Model.Bert.JointEmbedding(inputIds, segmentIds, grid, jm);
        using (seq) using (pooled)
        {
            using var vis = seq.Narrow(1, t, g);
            using var c = vis.Mean(1);
            return Model.Norm.Forward(c);
        }
    }
}
