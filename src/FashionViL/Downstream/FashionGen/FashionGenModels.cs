using FashionViL.Autograd;
using FashionViL.Model;
using FashionViL.Nn;
using FashionViL.Nn.Models;
using FashionViL.Nn.Optim;

namespace FashionViL.Downstream.FashionGen;

/// <summary>MMF's <c>FashionViLForContrastive</c> (the <c>model</c> child): <c>bert</c> and one <c>norm_layer</c>
/// (<c>NormalizationLayer</c>, parameter <c>norm_s</c>, s = 4) shared by both towers.</summary>
public sealed class ContrastiveHeadModel : Module
{
    public FashionViLBert Bert { get; }
    public NormalizationLayer NormLayer { get; }

    public ContrastiveHeadModel(FashionViLConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        Bert = RegisterModule("bert", new FashionViLBert(c.Bert, c.VisualEmbeddingDim, g, dtype));
        NormLayer = RegisterModule("norm_layer", new NormalizationLayer(c.NormScaleInit, dtype));
    }
}

/// <summary>MMF's <c>FashionViLForClassification</c> (the <c>model</c> child): <c>bert</c> and <c>classifier</c> =
/// Sequential(<c>0</c> = BertPredictionHeadTransform (dense, GELU, LayerNorm eps 1e-12), <c>1</c> = Linear(H → num_labels)).</summary>
public sealed class ClassificationHeadModel : Module
{
    public FashionViLBert Bert { get; }
    public Sequential Classifier { get; }

    public ClassificationHeadModel(FashionViLConfig c, int numLabels, Generator? g = null, DType dtype = DType.Float32)
    {
        Bert = RegisterModule("bert", new FashionViLBert(c.Bert, c.VisualEmbeddingDim, g, dtype));
        Classifier = RegisterModule("classifier", new Sequential(new BertPredictionHeadTransform(c.Bert, g, dtype),
            new Linear(c.Bert.HiddenSize, numLabels, true, g, dtype)));
    }
}

/// <summary>Shared pieces of the two FashionGen models: the reference parameter groups (<c>get_optimizer_parameters</c>).</summary>
public static class FashionGenParams
{
    /// <summary>
    /// <c>image_encoder.*</c>: lr × <paramref name="lrMultiplier"/>, the default weight decay (BN and biases included);
    /// BERT side (every other parameter): names containing one of <paramref name="fastSubstrings"/> at lr × multiplier, the rest
    /// at the base lr; weight decay 0 for names containing <c>bias</c>, <c>LayerNorm.bias</c> or <c>LayerNorm.weight</c>.
    /// </summary>
    public static List<ParamGroup> Build(Module model, double baseLr, double weightDecay, double lrMultiplier, params string[] fastSubstrings)
    {
        bool Fast(string n) => fastSubstrings.Any(s => n.Contains(s, StringComparison.Ordinal));
        static bool NoDecay(string n) => ParamGroups.NoDecay.Any(s => n.Contains(s, StringComparison.Ordinal));
        var rules = new List<ParamRule>
        {
            new("image_encoder", n => n.StartsWith("image_encoder.", StringComparison.Ordinal), lrMultiplier),
            new("fast_no_decay", n => Fast(n) && NoDecay(n), lrMultiplier, 0.0),
            new("fast", Fast, lrMultiplier),
            new("no_decay", NoDecay, 1.0, 0.0),
        };
        return ParamGroups.Build(model.NamedParameters().Where(p => p.Tensor.RequiresGrad), baseLr, weightDecay, rules, "default");
    }

    internal static void FreshInit(FashionViLBert bert, FashionViLConfig c, Generator? g)
    {
        Init.HfInit(bert, g, c.Bert.InitializerRange);
        bert.Embeddings.InitializeVisualFromText();
    }
}

/// <summary>
/// FashionViL for cross-modal retrieval (spec §4.1; MMF <c>fashionvil</c> with <c>training_head_type: contrastive</c>):
/// <c>image_encoder</c> (ResNet trunk) + <c>model</c> (<see cref="ContrastiveHeadModel"/>). Two towers, no fusion:
/// image = N(mean over the grid of projection(ResNet(img))), text = N(masked mean of the text-only BERT output).
/// </summary>
public sealed class FashionViLContrastive : Module
{
    public FashionViLConfig Config { get; }
    public ImageEncoder ImageEncoder { get; }
    public ContrastiveHeadModel Model { get; }

    /// <summary>Fresh init as the reference before loading weights: BERT side HF init (visual tables copied from the text
    /// ones), ResNet kaiming-normal, <c>norm_s</c> = 4. <paramref name="g"/> draws the init and, later, the dropout masks.</summary>
    public FashionViLContrastive(FashionViLConfig config, Generator? g = null, DType dtype = DType.Float32)
    {
        config.Validate();
        Config = config;
        ImageEncoder = RegisterModule("image_encoder", new ImageEncoder(config.ResNet, g, dtype));
        Model = RegisterModule("model", new ContrastiveHeadModel(config, g, dtype));
        FashionGenParams.FreshInit(Model.Bert, config, g);
    }

    /// <summary>Image tower (differentiable): images (B,3,H,W) → N(mean_G projection(grid)) (B,H).</summary>
    public Tensor ImageVectors(Tensor images)
    {
        using var grid = ImageEncoder.Forward(images);
        using var proj = Model.Bert.ImageEmbedding(grid);
        using var v = proj.Mean(1);
        return Model.NormLayer.Forward(v);
    }

    /// <summary>Text tower (differentiable): N(Σ m_j h_j / Σ m_j) over the text-only BERT output (B,H).</summary>
    public Tensor TextVectors(Tensor inputIds, Tensor segmentIds, Tensor inputMask)
    {
        var (seq, pooled) = Model.Bert.TextEmbedding(inputIds, segmentIds, inputMask);
        using (seq) using (pooled)
        {
            using var t = Losses.MaskedMean(seq, inputMask);
            return Model.NormLayer.Forward(t);
        }
    }

    /// <summary>Symmetric InfoNCE (τ = 1) between the two towers of a batch already on the model's device.</summary>
    public Tensor Loss(Tensor images, Tensor inputIds, Tensor segmentIds, Tensor inputMask)
    {
        using var v = ImageVectors(images);
        using var t = TextVectors(inputIds, segmentIds, inputMask);
        return Losses.Contrastive(v, t);
    }

    /// <summary>The reference groups: ResNet and <c>bert.embeddings.projection</c> at lr × multiplier, the rest (BERT body,
    /// visual tables, <c>norm_s</c>) at the base lr.</summary>
    public List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier = 20) =>
        FashionGenParams.Build(this, baseLr, weightDecay, lrMultiplier, "bert.embeddings.projection.weight", "bert.embeddings.projection.bias");
}

/// <summary>
/// FashionViL for sub-category recognition (spec §4.3; MMF <c>training_head_type: classification</c>): joint forward of
/// (text, image grid) with the mask [input_mask, ones(G)], pooled output (BertPooler on the text [CLS]) →
/// <c>classifier</c> → logits (B, num_labels); cross-entropy on the target.
/// </summary>
public sealed class FashionViLClassification : Module
{
    public FashionViLConfig Config { get; }
    public int NumLabels { get; }
    public ImageEncoder ImageEncoder { get; }
    public ClassificationHeadModel Model { get; }

    /// <summary>Fresh init: BERT side HF init (visual tables copied), ResNet kaiming-normal, classifier PyTorch default
    /// (Linear kaiming-uniform, LayerNorm 1/0) — the reference head is a plain nn.Module, outside HF's init.</summary>
    public FashionViLClassification(FashionViLConfig config, int numLabels, Generator? g = null, DType dtype = DType.Float32)
    {
        config.Validate();
        if (numLabels < 1) throw new ArgumentException($"fashionvil classification: num_labels {numLabels} must be positive");
        Config = config;
        NumLabels = numLabels;
        ImageEncoder = RegisterModule("image_encoder", new ImageEncoder(config.ResNet, g, dtype));
        Model = RegisterModule("model", new ClassificationHeadModel(config, numLabels, g, dtype));
        FashionGenParams.FreshInit(Model.Bert, config, g);
    }

    /// <summary>Logits (B, num_labels) of a batch already on the model's device.</summary>
    public Tensor Logits(Tensor images, Tensor inputIds, Tensor segmentIds, Tensor inputMask)
    {
        using var grid = ImageEncoder.Forward(images);
        using var mask = FashionViLPretraining.JointMask(inputMask, grid.Size(1));
        var (seq, pooled) = Model.Bert.JointEmbedding(inputIds, segmentIds, grid, mask);
        using (seq) using (pooled) return Model.Classifier.Forward(pooled);
    }

    /// <summary>Cross-entropy (mean) of the logits against int64 targets (B).</summary>
    public Tensor Loss(Tensor images, Tensor inputIds, Tensor segmentIds, Tensor inputMask, Tensor targets)
    {
        using var logits = Logits(images, inputIds, segmentIds, inputMask);
        if (targets.Rank != 1 || targets.Size(0) != logits.Size(0))
            throw new ArgumentException($"fashionvil classification: targets {targets.ShapeString} must be [{logits.Size(0)}]");
        return Ops.CrossEntropy(logits, targets);
    }

    /// <summary>The reference groups: ResNet, <c>bert.embeddings.projection</c> and <c>classifier</c> at lr × multiplier.</summary>
    public List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier = 20) =>
        FashionGenParams.Build(this, baseLr, weightDecay, lrMultiplier, "bert.embeddings.projection.weight", "bert.embeddings.projection.bias", "classifier");
}
