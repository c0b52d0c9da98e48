using System.Text.Json.Nodes;
using FashionViL.Bench;
using FashionViL.Kernels.Cuda;

namespace FashionViL.Tests.Bench;

/// <summary>`fashionvil bench tuning --cache F`: the report of a kernel tuning cache, and its errors.</summary>
public class BenchTuningCliTests
{
    private static JsonObject Entry(string choice, string rule, params (string C, double Ms)[] ms)
    {
        var m = new JsonObject();
        foreach (var (c, v) in ms) m[c] = v;
        return new JsonObject { ["choice"] = choice, ["rule"] = rule, ["ms"] = m };
    }

    private static string Write(JsonObject entries)
    {
        var path = BenchTestUtil.TempFile("tune.json");
        File.WriteAllText(path, new JsonObject
        {
            ["format"] = KernelTuner.Format, ["device"] = "Cuda NVIDIA H100 80GB HBM3, 132 multiprocessors", ["written"] = "2026-11-28 05:00:00 UTC",
            ["entries"] = entries,
        }.ToJsonString());
        return path;
    }

    [Test]
    public void TheReportCountsShapesPerKindAndListsPicksAwayFromTheRuleByTheirSaving()
    {
        var path = Write(new JsonObject
        {
            ["gemm Fp32 b1 m4800 n768 k768 nn"] = Entry("Reg64x4", "Reg128x8Prefetch", ("Reg128x8Prefetch", 0.50), ("Reg128x8Vec", 0.55), ("Reg64x4", 0.40)),
            ["gemm Fp32 b1 m4800 n3072 k768 nn"] = Entry("Reg128x8Prefetch", "Reg128x8Prefetch", ("Reg128x8Prefetch", 1.0), ("Reg64x4", 1.4)),
            ["conv Forward Tf32 m64 n200704 k576"] = Entry("Tile128x64", "Tile64x32", ("Tile64x32", 0.90), ("Tile128x64", 0.30)),
            ["conv BackwardWeight Fp32 m256 n2304 k12544"] = Entry("Tile64Prefetch", "Tile128Prefetch"),   // no medians: listed last
        });
        var (code, text) = CliTests.RunCli("bench", "tuning", "--cache", path);
        Assert.That(code, Is.Zero, text);
        Assert.That(text, Does.Contain("device Cuda NVIDIA H100 80GB HBM3, 132 multiprocessors; written 2026-11-28 05:00:00 UTC; 4 shapes, 3 picks away from the rule"));
        Assert.That(text, Does.Match(@"gemm Fp32\s+2\s+1\s+Reg128x8Prefetch 1, Reg64x4 1"));
        Assert.That(text, Does.Match(@"conv Forward Tf32\s+1\s+1\s+Tile128x64 1"));
        int conv = text.IndexOf("Tile64x32 → Tile128x64", StringComparison.Ordinal);
        int gemm = text.IndexOf("Reg128x8Prefetch → Reg64x4", StringComparison.Ordinal);
        int none = text.IndexOf("Tile128Prefetch → Tile64Prefetch", StringComparison.Ordinal);
        Assert.That(conv, Is.GreaterThan(0).And.LessThan(gemm), "0.60 ms saved before 0.10 ms");
        Assert.That(gemm, Is.LessThan(none), "an entry without medians comes last");
        Assert.That(text, Does.Contain("0.9000    0.3000   0.6000"));
        (code, text) = CliTests.RunCli("bench", "tuning", "--cache", path, "--top", "1");
        Assert.That(text, Does.Contain("(top 1 of 3)").And.Not.Contain("Reg128x8Prefetch → Reg64x4"));
        Directory.Delete(Path.GetDirectoryName(path)!, true);
    }

    [TestCase("{ nope", "not valid JSON")]
    [TestCase("{\"format\": \"x/1\"}", "format is 'x/1'")]
    [TestCase(null, "file not found")]
    public void ABadCacheIsNamed(string? content, string what)
    {
        var path = BenchTestUtil.TempFile("bad.json");
        if (content is not null) File.WriteAllText(path, content);
        var (code, text) = CliTests.RunCli("bench", "tuning", "--cache", path);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain($"fashionvil bench tuning: kernel tuning cache {path}: {what}"));
        Directory.Delete(Path.GetDirectoryName(path)!, true);
    }

    [TestCase("gemm Tf32 b1 m2 n3 k4 nn", "gemm Tf32")]
    [TestCase("conv BackwardInput Bf16 m1", "conv BackwardInput Bf16")]
    public void KindsAreTheDecisionAndItsPrecision(string key, string kind) => Assert.That(TuningReport.KindOf(key), Is.EqualTo(kind));
}
