using FashionViL.Autograd;
using FashionViL.Model;
using FashionViL.Nn;
using FashionViL.Nn.Optim;

namespace FashionViL.Downstream.FashionIq;

/// <summary>MMF's <c>FashionViLForComposition</c> (the <c>model</c> child): <c>bert</c> and one shared <c>norm_layer</c>.</summary>
public sealed class CompositionModel : Module
{
    public FashionViLBert Bert { get; }
    public NormalizationLayer NormLayer { get; }

    public CompositionModel(FashionViLConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        Bert = RegisterModule("bert", new FashionViLBert(c.Bert, c.VisualEmbeddingDim, g, dtype));
        NormLayer = RegisterModule("norm_layer", new NormalizationLayer(c.NormScaleInit, dtype));
    }
}

/// <summary>
/// FashionViL with <c>training_head_type: composition</c> (spec §4.2; BrandonHanx/mmf: mmf/models/fashionvil/composition.py):
/// children <c>image_encoder</c> (ResNet trunk) and <c>model</c> (<c>bert</c>, <c>norm_layer.norm_s</c>), so the state dict
/// has the reference names. Query c = N(mean of the G visual output positions of the joint forward of (text, reference
/// grid) under the mask [input_mask, 1×G]); target t = N(mean_G projection(ResNet(target))); N is the one shared
/// <c>norm_layer</c> (s·x/‖x‖, s = 4 initially).
/// </summary>
public sealed class FashionViLComposition : Module
{
    public FashionViLConfig Config { get; }
    public ImageEncoder ImageEncoder { get; }
    public CompositionModel Model { get; }
    public FashionViLBert Bert => Model.Bert;
    /// <summary>The generator the model was built with: it drew the fresh init, and every dropout module holds it (null: the
    /// modules use <see cref="Generator.Default"/>). <see cref="FashionIqTask.Loss"/> sets its state from the loop's generator.</summary>
    public Generator? Generator { get; }

    /// <summary>Fresh model: BERT HF-initialised (visual tables copied from the text ones), ResNet kaiming, norm_s = 4.
    /// Dropout masks come from <paramref name="g"/>.</summary>
    public FashionViLComposition(FashionViLConfig config, Generator? g = null, DType dtype = DType.Float32)
    {
        config.Validate();
        Config = config;
        Generator = g;
        ImageEncoder = RegisterModule("image_encoder", new ImageEncoder(config.ResNet, g, dtype));
        Model = RegisterModule("model", new CompositionModel(config, g, dtype));
        Init.HfInit(Model.Bert, g, config.Bert.InitializerRange);
        Model.Bert.Embeddings.InitializeVisualFromText();
    }

    /// <summary>Composed query embeddings c (B,H) for modification texts (B,T) and reference images (B,3,S,S).</summary>
    public Tensor Compose(Tensor inputIds, Tensor segmentIds, Tensor inputMask, Tensor refImages)
    {
        if (inputIds.Rank != 2 || refImages.Rank != 4 || inputIds.Size(0) != refImages.Size(0))
            throw new ArgumentException($"fashionvil composition: text {inputIds.ShapeString} and reference images {refImages.ShapeString} must be [B,T] and [B,3,H,W] with the same B");
        using var grid = ImageEncoder.Forward(refImages);
        int gsz = grid.Size(1);
        using var mask = FashionViLPretraining.JointMask(inputMask, gsz);
        var (seq, pooled) = Bert.JointEmbedding(inputIds, segmentIds, grid, mask);
        using (seq) using (pooled)
        {
            using var vis = seq.Narrow(1, seq.Size(1) - gsz, gsz);
            using var mean = vis.Mean(1);
            return Model.NormLayer.Forward(mean);
        }
    }

    /// <summary>Target embeddings t (B,H): N(mean over the grid of projection(ResNet(images))) (bypass_transformer).</summary>
    public Tensor EmbedTargets(Tensor images)
    {
        using var grid = ImageEncoder.Forward(images);
        using var p = Bert.ImageEmbedding(grid);
        using var mean = p.Mean(1);
        return Model.NormLayer.Forward(mean);
    }

    /// <summary>
    /// The reference's <c>bbc_loss</c> (batch-based classification, one device): logits = c·tᵀ (B×B), labels = own index,
    /// mean cross-entropy in the query → target direction only.
    /// </summary>
    public static Tensor BbcLoss(Tensor composed, Tensor targets)
    {
        if (composed.Rank != 2 || targets.Rank != 2 || composed.Size(1) != targets.Size(1) || composed.Size(0) != targets.Size(0))
            throw new ArgumentException($"bbc_loss: composed {composed.ShapeString} and targets {targets.ShapeString} must be the same [B,D]");
        using var tt = targets.Transpose(0, 1);
        using var logits = composed.Matmul(tt);
        using var labels = Tensor.Arange(composed.Size(0), DType.Int64, composed.Device);
        return Ops.CrossEntropy(logits, labels);
    }

    /// <summary>
    /// The reference's parameter groups for this head (<c>get_optimizer_parameters</c>): <c>image_encoder.*</c> at
    /// lr×<paramref name="lrMultiplier"/> (default decay); names containing <c>bert.embeddings.projection</c> at lr×multiplier;
    /// everything else at the base lr; weight decay 0 for names containing <c>bias</c>, <c>LayerNorm.weight</c>,
    /// <c>LayerNorm.bias</c> outside the image encoder. <c>model.norm_layer.norm_s</c> is in the base-lr, decayed group.
    /// </summary>
    public List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier = 20)
    {
        static bool Fast(string n) => n.Contains("bert.embeddings.projection", StringComparison.Ordinal);
        static bool NoDecay(string n) => ParamGroups.NoDecay.Any(s => n.Contains(s, StringComparison.Ordinal));
        var rules = new List<ParamRule>
        {
            new("image_encoder", n => n.StartsWith("image_encoder.", StringComparison.Ordinal), lrMultiplier),
            new("fast_no_decay", n => Fast(n) && NoDecay(n), lrMultiplier, 0.0),
            new("fast", Fast, lrMultiplier),
            new("no_decay", NoDecay, 1.0, 0.0),
        };
        return ParamGroups.Build(NamedParameters().Where(p => p.Tensor.RequiresGrad), baseLr, weightDecay, rules, "default");
    }
}
