namespace FashionViL.Tests.Bench;

internal static class BenchTestUtil
{
    public static string Repo(string rel)
    {
        var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "FashionViL.Native.sln"))) d = d.Parent;
        return Path.Combine(d!.FullName, rel);
    }

    /// <summary>The nano config (tests/FashionViL.Tests/Bench/nano.yaml) in the source tree.</summary>
    public static string Nano => Repo("tests/FashionViL.Tests/Bench/nano.yaml");

    public static string TempFile(string name)
    {
        var dir = Path.Combine(Path.GetTempPath(), "fv-bench-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return Path.Combine(dir, name);
    }
}
