using FashionViL.Synth;

namespace FashionViL.Tests.Synth;

/// <summary>One small generated dataset shared by the layout and content tests (N = 60 products, 64 px).</summary>
internal static class SynthFixture
{
    public const int Products = 60, ImageSize = 64;
    private static readonly Lazy<string> Root = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), $"fv-synth-tests-{Environment.ProcessId}");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        SyntheticDatasets.Generate(new SynthOptions(dir, Products, Seed: 11, ImageSize: ImageSize));
        return dir;
    });

    /// <summary>DIR/datasets of the shared dataset (generated on first use).</summary>
    public static string Datasets => Path.Combine(Root.Value, "datasets");

    public static string TempDir(string name)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"fv-synth-{name}-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }
}

/// <summary>Removes the shared generated dataset after the Synth tests.</summary>
[SetUpFixture]
public class SynthFixtureCleanup
{
    [OneTimeTearDown]
    public void RemoveSharedDataset()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"fv-synth-tests-{Environment.ProcessId}");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }
}
