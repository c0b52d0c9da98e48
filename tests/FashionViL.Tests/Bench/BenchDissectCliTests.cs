using System.Text.Json.Nodes;
using FashionViL.Kernels.Cuda;

namespace FashionViL.Tests.Bench;

/// <summary>`fashionvil bench dissect` on the CUDA emulator (small shapes): every tile, shape and part is timed and reported,
/// the JSON copy holds the same rows, and bad options are named.</summary>
[NonParallelizable]
public class BenchDissectCliTests
{
    [OneTimeSetUp]
    public void EnableEmulator() =>
        CudaRuntime.EmulatorEnabled = !string.Equals(Environment.GetEnvironmentVariable("FASHIONVIL_TEST_CUDA"), "gpu", StringComparison.OrdinalIgnoreCase);

    [Test]
    public void ReportsEveryTileShapeAndPartAndWritesJson()
    {
        var json = BenchTestUtil.TempFile("dissect.json");
        var (code, text) = CliTests.RunCli("bench", "dissect", "--small", "--reps", "1", "--json", json);
        Assert.That(code, Is.Zero, text);
        Assert.That(text, Does.Contain("mma.sync TF32 peak:"));
        string[] rows = text.Split('\n').Where(l => l.StartsWith("| GEMM", StringComparison.Ordinal) || l.StartsWith("| conv", StringComparison.Ordinal)).ToArray();
        Assert.That(rows.Count(l => l.StartsWith("| GEMM 128×128 |", StringComparison.Ordinal)), Is.EqualTo(2), text);
        Assert.That(rows.Count(l => l.StartsWith("| GEMM 128×128 cp.async |", StringComparison.Ordinal)), Is.EqualTo(2), $"the cp.async tile ran on both shapes: {text}");
        Assert.That(rows.Count(l => l.StartsWith("| conv 128×128 fwd vec |", StringComparison.Ordinal)), Is.EqualTo(1), text);
        Assert.That(rows.Count(l => l.StartsWith("| conv 128×128 fwd table |", StringComparison.Ordinal)), Is.EqualTo(1), text);
        Assert.That(rows.Count(l => l.StartsWith("| conv 128×128 |", StringComparison.Ordinal)), Is.EqualTo(2), $"the input and weight gradients: {text}");
        Assert.That(ConvKernels.Tc3ForwardPath, Is.True, "the command restores the forward path switch");
        foreach (var row in rows)
        {
            var cells = row.Split('|', StringSplitOptions.TrimEntries).Where(c => c.Length > 0).ToArray();
            Assert.That(cells, Has.Length.EqualTo(9), row);
            foreach (int i in new[] { 3, 5, 6 })
                Assert.That(double.Parse(cells[i], System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThan(0), $"{row}: column {i}");
        }
        var doc = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.That(doc["rows"]!.AsArray(), Has.Count.EqualTo(rows.Length));
        Assert.That(doc["emulated"]!.GetValue<bool>(), Is.EqualTo(CudaRuntime.EmulatorEnabled));
        Assert.That(doc["rows"]!.AsArray().All(r => r!["no_math_ms"]!.GetValue<double>() > 0 && r["no_global_loads_ms"]!.GetValue<double>() > 0));
        Assert.That(TensorCoreGemm.Part, Is.EqualTo(TcPart.Full), "the command leaves the production kernels selected");
        Directory.Delete(Path.GetDirectoryName(json)!, true);
    }

    [Test]
    public void BadOptionsAreNamed()
    {
        var (code, text) = CliTests.RunCli("bench", "dissect", "--small", "--reps", "0");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain("--reps must be ≥ 1"));
        (code, text) = CliTests.RunCli("bench", "dissect", "--small", "--json", "/nonexistent-dir-fvl/x.json");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain("--json: folder not found"));
    }
}
