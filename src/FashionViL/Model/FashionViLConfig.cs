using FashionViL.Nn.Models;

namespace FashionViL.Model;

/// <summary>
/// ResNet trunk shape: bottlenecks per stage and the stem width. Stage s (0..3) has planes = <see cref="BaseWidth"/>·2^s
/// and outputs planes·4 channels; ResNet-50 is blocks [3,4,6,3], width 64 (2048 output channels).
/// </summary>
public sealed record ResNetConfig(int[] Blocks, int BaseWidth = 64)
{
    public static ResNetConfig ResNet50 => new([3, 4, 6, 3], 64);

    /// <summary>Channels of the last stage (the visual feature dimension): BaseWidth·8·4.</summary>
    public int OutChannels => BaseWidth * 8 * Nn.Models.Bottleneck.Expansion;

    internal void Validate()
    {
        if (Blocks is null || Blocks.Length != 4 || Blocks.Any(b => b < 1) || BaseWidth < 1)
            throw new ArgumentException($"fashionvil: ResNet config needs 4 positive block counts and a positive width, got [{string.Join(",", Blocks ?? [])}] width {BaseWidth}");
    }
}

/// <summary>
/// FashionViL pre-training hyper-parameters (spec §1, §2). <see cref="Reference"/> is the paper's model (BERT-base,
/// ResNet-50, 224-pixel images → 7×7 grid); <see cref="Tiny"/> is the CPU-sized variant used by tests and the demo.
/// </summary>
public sealed record FashionViLConfig
{
    /// <summary>Task names as in the reference (<c>icc</c> = the paper's MVC), in the order of <c>tasks</c> in e2e_pretraining_final.yaml.</summary>
    public static readonly string[] AllTasks = ["itm", "pac", "itc", "icc", "mlm", "mpfc"];

    public BertConfig Bert { get; init; } = new();
    public ResNetConfig ResNet { get; init; } = ResNetConfig.ResNet50;
    /// <summary>Square input side in pixels; must be a multiple of 32.</summary>
    public int ImageSize { get; init; } = 224;
    public int NumAttributes { get; init; } = 2232;
    public int NumVqTokens { get; init; } = 1024;
    /// <summary>Task names and their sampling probabilities (spec §2.0), in sampling order.</summary>
    public string[] Tasks { get; init; } = AllTasks;
    public double[] TaskProbabilities { get; init; } = [0.15, 0.15, 0.2, 0.2, 0.15, 0.15];
    /// <summary>ITM: a sample's text is replaced by its hard negative when its uniform draw exceeds 1 − p (reference: rand > 0.5).</summary>
    public double ItmSwapProbability { get; init; } = 0.5;
    /// <summary>MVC (icc): fraction of text and patch positions dropped (⌊r·T⌋ and ⌊r·G⌋ draws with replacement).</summary>
    public double MvcDropRatio { get; init; } = 0.25;
    /// <summary>Initial value of the contrastive normalisation scale <c>norm_s</c>.</summary>
    public double NormScaleInit { get; init; } = 4.0;

    /// <summary>Grid side G½ = ImageSize / 32.</summary>
    public int GridSide => ImageSize / 32;
    /// <summary>Number of visual tokens G = (ImageSize/32)².</summary>
    public int GridSize => GridSide * GridSide;
    /// <summary>The ResNet output channels (2048 for ResNet-50): input width of <c>bert.embeddings.projection</c>.</summary>
    public int VisualEmbeddingDim => ResNet.OutChannels;

    /// <summary>The paper's sizes: BERT-base-uncased, ResNet-50, 224 pixels (49 tokens).</summary>
    public static FashionViLConfig Reference => new();

    /// <summary>CPU-sized: BERT hidden 128, 2 layers, 2 heads, intermediate 512, the real 30522 vocabulary and 512 positions;
    /// ResNet blocks [1,1,1,1] width 16 (512 channels); 96-pixel images (3×3 grid).</summary>
    public static FashionViLConfig Tiny => new()
    {
        Bert = new BertConfig(HiddenSize: 128, NumHiddenLayers: 2, NumAttentionHeads: 2, IntermediateSize: 512),
        ResNet = new ResNetConfig([1, 1, 1, 1], 16),
        ImageSize = 96,
    };

    public void Validate()
    {
        ResNet.Validate();
        if (ImageSize < 32 || ImageSize % 32 != 0)
            throw new ArgumentException($"fashionvil: image size {ImageSize} must be a positive multiple of 32");
        if (GridSize > Bert.MaxPositionEmbeddings)
            throw new ArgumentException($"fashionvil: {GridSize} grid cells exceed the {Bert.MaxPositionEmbeddings} visual positions");
        if (Tasks.Length != TaskProbabilities.Length || Tasks.Length == 0)
            throw new ArgumentException($"fashionvil: {Tasks.Length} tasks but {TaskProbabilities.Length} probabilities");
        foreach (var t in Tasks)
            if (!AllTasks.Contains(t)) throw new ArgumentException($"fashionvil: unknown task '{t}' (known: {string.Join(", ", AllTasks)})");
        if (TaskProbabilities.Any(p => !(p >= 0)) || Math.Abs(TaskProbabilities.Sum() - 1) > 1e-6)
            throw new ArgumentException($"fashionvil: task probabilities [{string.Join(", ", TaskProbabilities)}] must be non-negative and sum to 1");
        if (ItmSwapProbability is < 0 or > 1) throw new ArgumentException($"fashionvil: ITM swap probability {ItmSwapProbability} must be in [0, 1]");
        if (MvcDropRatio is < 0 or >= 1) throw new ArgumentException($"fashionvil: MVC drop ratio {MvcDropRatio} must be in [0, 1)");
        if (NumAttributes < 1 || NumVqTokens < 1) throw new ArgumentException($"fashionvil: attribute count {NumAttributes} and VQ token count {NumVqTokens} must be positive");
    }
}
