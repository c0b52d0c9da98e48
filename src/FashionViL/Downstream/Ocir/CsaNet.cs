using FashionViL.Autograd;
using FashionViL.Model;
using FashionViL.Nn;

namespace FashionViL.Downstream.Ocir;

/// <summary>CSA-Net sizes (mmf configs/models/csa_net + projects/ocir/configs/polyvore/defaults.yaml).</summary>
public sealed record CsaNetConfig(ResNetConfig ResNet, int ImageChannel = 2048, int FeatureDim = 256, int NumCategories = 153, int NumConditions = 5)
{
    public void Validate()
    {
        ResNet.Validate();
        if (ImageChannel != ResNet.OutChannels)
            throw new ArgumentException($"csa_net: image_channel {ImageChannel} must equal the ResNet output channels {ResNet.OutChannels} (32 × base_width {ResNet.BaseWidth})");
        if (FeatureDim < 1 || NumCategories < 1)
            throw new ArgumentException($"csa_net: feature_dim {FeatureDim} and n_categories {NumCategories} must be positive");
        if (NumConditions != 5)
            throw new ArgumentException($"csa_net: n_conditions {NumConditions} is not supported: the reference hard-codes 5 in CSAFusion.forward (expand(-1, 5, -1))");
    }
}

/// <summary>MMF's <c>TorchvisionResNetImageEncoder</c> with <c>num_output_features: 1</c>, <c>pool_type: avg</c>: child
/// <c>model</c> = the ResNet children minus avgpool/fc (names <c>model.0</c>, <c>model.1</c>, <c>model.4</c>..<c>model.7</c>),
/// then global average pooling → (B, C).</summary>
public sealed class PooledImageEncoder : Module
{
    public ResNetTrunk Model { get; }

    public PooledImageEncoder(ResNetConfig config, Generator? g = null) => Model = RegisterModule("model", new ResNetTrunk(config, g));

    /// <summary>layer4 (child <c>model.7</c>).</summary>
    public Module Layer4 => Model.NamedChildren().Single(c => c.Name == "7").Module;

    public override Tensor Forward(Tensor images)
    {
        using var f = Model.Forward(images);
        return f.Mean([2, 3]);
    }
}

/// <summary>The reference's softmax as a parameterless module (child 3 of <c>weight_classifier</c>).</summary>
public sealed class SoftmaxLast : Module
{
    public override Tensor Forward(Tensor x) => x.Softmax(-1);
}

/// <summary>
/// <c>CSAFusion</c>: weight_classifier = Sequential(Linear(2·categories → 64), ReLU, Linear(64 → 5), Softmax) on the two-hot
/// condition; masks = Embedding(5, D). Output mean_k(x ⊙ M_k · w_k), computed as x ⊙ (w·M)/5 (the same sum).
/// </summary>
public sealed class CsaFusion : Module
{
    public Sequential WeightClassifier { get; }
    public Embedding Masks { get; }
    public int NumConditions { get; }

    public CsaFusion(int numConditions, int onehotChannels, int featureDim, Generator? g = null)
    {
        NumConditions = numConditions;
        WeightClassifier = RegisterModule("weight_classifier", new Sequential(
            new Linear(onehotChannels, 64, generator: g), new ReLU(), new Linear(64, numConditions, generator: g), new SoftmaxLast()));
        Masks = RegisterModule("masks", new Embedding(numConditions, featureDim, generator: g));
    }

    /// <summary>The condition weights w (B, 5) for two-hot conditions (B, 2·categories).</summary>
    public Tensor Weights(Tensor condition) => WeightClassifier.Forward(condition);

    /// <summary>x (B, D), condition (B, 2·categories) → (B, D).</summary>
    public Tensor Forward(Tensor x, Tensor condition)
    {
        if (x.Rank != 2 || condition.Rank != 2 || x.Size(0) != condition.Size(0))
            throw new ArgumentException($"csa fusion: features {x.ShapeString} and condition {condition.ShapeString} must be [B,D] and [B,C]");
        using var w = Weights(condition);
        using var m = w.Matmul(Masks.Weight);          // Σ_k w_k M_k
        using var xm = x * m;
        return xm / NumConditions;
    }
}

/// <summary>
/// CSA-Net (BrandonHanx/mmf: mmf/models/ocir.py, registered <c>csa_net</c>) with the reference's state-dict names:
/// <c>image_encoder.model.*</c>, <c>proj_layer.{weight,bias}</c>, <c>fusion_module.weight_classifier.{0,2}.*</c>,
/// <c>fusion_module.masks.weight</c>, <c>norm_layer.norm_s</c>. layer4 and every BatchNorm of the encoder are frozen
/// (no gradient; BatchNorms stay in eval mode through <see cref="Module.Train"/>, so running statistics never move).
/// </summary>
public sealed class CsaNet : Module
{
    public CsaNetConfig Config { get; }
    public PooledImageEncoder ImageEncoder { get; }
    public Linear ProjLayer { get; }
    public CsaFusion FusionModule { get; }
    public NormalizationLayer NormLayer { get; }
    /// <summary>The generator the model was built with (it drew the fresh init; any module that draws during the forward holds
    /// it). <see cref="OcirTask.Loss"/> sets its state from the fine-tuning loop's generator.</summary>
    public Generator? Generator { get; }

    public CsaNet(CsaNetConfig config, Generator? g = null)
    {
        config.Validate();
        Config = config;
        Generator = g;
        ImageEncoder = RegisterModule("image_encoder", new PooledImageEncoder(config.ResNet, g));
        ProjLayer = RegisterModule("proj_layer", new Linear(config.ImageChannel, config.FeatureDim, generator: g));
        FusionModule = RegisterModule("fusion_module", new CsaFusion(config.NumConditions, 2 * config.NumCategories, config.FeatureDim, g));
        NormLayer = RegisterModule("norm_layer", new NormalizationLayer(4.0));
        ImageEncoder.Layer4.Freeze();
        foreach (var (_, m) in ImageEncoder.NamedModules())
            if (m is BatchNorm2d) m.Freeze();
    }

    /// <summary>The two-hot conditions (B, 2·categories) float32: one-hot(question category) ‖ one-hot(blank category).</summary>
    public static Tensor TwoHot(IReadOnlyList<int> questionCategories, IReadOnlyList<int> blankCategories, int numCategories)
    {
        int b = questionCategories.Count;
        if (blankCategories.Count != b) throw new ArgumentException($"two-hot: {b} question categories but {blankCategories.Count} blank categories");
        var a = new float[b * 2 * numCategories];
        for (int i = 0; i < b; i++)
        {
            int q = questionCategories[i], t = blankCategories[i];
            if ((uint)q >= (uint)numCategories || (uint)t >= (uint)numCategories)
                throw new ArgumentOutOfRangeException(nameof(questionCategories), $"two-hot: row {i} has categories ({q}, {t}); expected 0..{numCategories - 1}");
            a[i * 2 * numCategories + q] = 1;
            a[i * 2 * numCategories + numCategories + t] = 1;
        }
        return Tensor.FromArray(a, b, 2 * numCategories);
    }

    /// <summary>images → proj_layer(pooled ResNet) (B, D), before fusion and normalisation.</summary>
    public Tensor Project(Tensor images)
    {
        using var f = ImageEncoder.Forward(images);
        return ProjLayer.Forward(f);
    }

    /// <summary>Question side: norm(fusion(proj(pool(images)), condition)).</summary>
    public Tensor EncodeQuestion(Tensor images, Tensor twoHot)
    {
        using var p = Project(images);
        using var f = FusionModule.Forward(p, twoHot);
        return NormLayer.Forward(f);
    }

    /// <summary>Blank side (not conditioned): norm(proj(pool(images))).</summary>
    public Tensor EncodeBlank(Tensor images)
    {
        using var p = Project(images);
        return NormLayer.Forward(p);
    }

    /// <summary>Training forward: question and blank images go through the encoder in one pass (the encoder has no
    /// batch-dependent state: every BatchNorm is in eval mode), then the symmetric InfoNCE loss (τ = 1).</summary>
    public Tensor Loss(Tensor questionImages, Tensor blankImages, Tensor twoHot)
    {
        int b = questionImages.Size(0);
        using var both = Ops.Cat([questionImages, blankImages], 0);
        using var p = Project(both);
        using var pq = p.Narrow(0, 0, b);
        using var pb = p.Narrow(0, b, b);
        using var fq = FusionModule.Forward(pq, twoHot);
        using var q = NormLayer.Forward(fq);
        using var t = NormLayer.Forward(pb);
        return Losses.Contrastive(q, t);
    }
}
