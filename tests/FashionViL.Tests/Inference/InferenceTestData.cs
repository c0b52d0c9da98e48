using FashionViL.Config;
using FashionViL.Model;
using FashionViL.Nn.Checkpoints;
using FashionViL.Tests.Data;
using FashionViL.Tests.Training;
using FashionViL.Training;

namespace FashionViL.Tests.Inference;

/// <summary>A tiny random FashionViL saved as a training checkpoint with its config, plus a few small images (built once).</summary>
internal sealed class InferenceTestData
{
    private static readonly Lazy<InferenceTestData> Shared = new(() => new InferenceTestData());
    public static InferenceTestData Instance => Shared.Value;

    public const float NormScale = 2.5f;     // not the init value 4, so loading the learned scale is visible
    public string Dir { get; }
    public FvConfig Config { get; }
    public FashionViLConfig ModelConfig { get; }
    public FashionViLPretraining Model { get; }
    public string Checkpoint { get; }
    public string ImageDir { get; }
    public string[] Images { get; }
    public static readonly string[] Texts =
    [
        "Black leather ankle boots. Pointed toe, side zip.",
        "Red wool sweater with a crew neck",
        "striped cotton shirt",
        "Blue denim jeans. Five pockets, straight leg, slightly faded wash with whiskering at the hips and a button fly.",
    ];

    private InferenceTestData()
    {
        Dir = ImageTestData.NewTempDir();
        Config = PretrainerTests.Micro(Path.Combine(Dir, "data"), Path.Combine(Dir, "save"));
        ModelConfig = PretrainSetup.ModelConfig(Config);
        Model = new FashionViLPretraining(ModelConfig, new Generator(11));
        using (GradMode.NoGrad()) Backends.Get(Device.Cpu).Fill(Model.Model.ContrastiveNorm.Scale, NormScale);
        Model.Eval();
        Checkpoint = Path.Combine(Dir, "tiny.ckpt");
        TrainingCheckpoint.Save(Checkpoint, Model, null, new TrainingState { Config = Config.ToYaml() });
        ImageDir = Path.Combine(Dir, "images");
        Images = Enumerable.Range(0, 5).Select(i => ImageTestData.WriteImage(Path.Combine(ImageDir, $"item{i}.png"), 40 + 3 * i, 30 + i, (byte)(50 * i))).ToArray();
    }

    /// <summary>Writes a training checkpoint of <see cref="Model"/> without any config.</summary>
    public string CheckpointWithoutConfig()
    {
        var p = Path.Combine(Dir, "noconfig.ckpt");
        if (!File.Exists(p)) TrainingCheckpoint.Save(p, Model, null, new TrainingState());
        return p;
    }
}
