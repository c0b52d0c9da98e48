namespace FashionViL.Tests.Synth;

/// <summary>`fashionvil synth` on the command line: help, a small run, and clear errors for bad arguments.</summary>
public class SynthCommandTests
{
    [Test]
    public void HelpListsTheOptions()
    {
        var (code, text) = CliTests.RunCli("synth", "--help");
        Assert.That(code, Is.EqualTo(0));
        Assert.That(text, Does.Contain("--out").And.Contain("--products").And.Contain("--seed").And.Contain("--image-size"));
    }

    [Test]
    public void SmallRunWritesTheDatasetsAndAManifest()
    {
        string dir = SynthFixture.TempDir("cli");
        try
        {
            var (code, text) = CliTests.RunCli("synth", "--out", dir, "--products", "8", "--image-size", "32", "--seed", "3");
            Assert.That(code, Is.EqualTo(0), text);
            Assert.That(text, Does.Contain("FashionGen/train"));
            Assert.That(File.Exists(Path.Combine(dir, "datasets", "FashionGen", "val_info.json")), Is.True);
            Assert.That(File.ReadAllText(Path.Combine(dir, "synth.json")), Does.Contain("\"seed\": 3"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestCase("0")]
    [TestCase("-5")]
    public void NonPositiveProductCountIsRejected(string n)
    {
        string dir = SynthFixture.TempDir("bad-n");
        try
        {
            var (code, text) = CliTests.RunCli("synth", "--out", dir, "--products", n);
            Assert.That(code, Is.Not.EqualTo(0));
            Assert.That(text, Does.Contain("--products must be in [1,").And.Contain(n));
            Assert.That(Directory.Exists(Path.Combine(dir, "datasets")), Is.False, "nothing is written");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void MissingOptionsAndBadImageSizeAreRejected()
    {
        var (code, text) = CliTests.RunCli("synth", "--products", "4");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain("--out"));
        (code, text) = CliTests.RunCli("synth", "--out", "x", "--products", "4", "--image-size", "7");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain("--image-size must be in"));
    }

    [Test]
    public void UnwritableOutputDirectoryNamesThePath()
    {
        // A directory below a regular file can never be created, whoever runs the test (root included).
        string dir = SynthFixture.TempDir("unwritable");
        try
        {
            string file = Path.Combine(dir, "not-a-directory");
            File.WriteAllText(file, "x");
            string target = Path.Combine(file, "out");
            var (code, text) = CliTests.RunCli("synth", "--out", target, "--products", "4", "--image-size", "32");
            Assert.That(code, Is.EqualTo(1));
            Assert.That(text, Does.Contain("cannot write the output directory").And.Contain(target));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
