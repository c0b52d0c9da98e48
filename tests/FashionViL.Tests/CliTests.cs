using System.Diagnostics;

namespace FashionViL.Tests;

/// <summary>The `fashionvil` command line: every command answers --help and exits 0.</summary>
public class CliTests
{
    internal static (int Code, string Output) RunCli(params string[] args)
    {
        var root = new System.CommandLine.RootCommand();
        foreach (var c in FashionViL.Cli.CommandCatalog.All()) root.Subcommands.Add(c);
        var output = new StringWriter();
        var config = new System.CommandLine.InvocationConfiguration { Output = output, Error = output };
        var code = root.Parse(args).Invoke(config);
        return (code, output.ToString());
    }

    [Test]
    public void EveryCommandHasHelp()
    {
        foreach (var c in FashionViL.Cli.CommandCatalog.All())
        {
            var (code, text) = RunCli(c.Name, "--help");
            Assert.That(code, Is.EqualTo(0), c.Name);
            Assert.That(text, Does.Contain(c.Name), c.Name);
        }
    }

    /// <summary>The real executable (beside the tests) with an invalid FVL_TUNE: it stops before any command runs, naming the
    /// variable, instead of failing inside the first GPU matmul of a run.</summary>
    [Test]
    [TestCase("FVL_TUNE", "maybe", "fashionvil: FVL_TUNE: 'maybe' is not a tuning mode")]
    [TestCase("FVL_ATTENTION", "flash", "fashionvil: FVL_ATTENTION = 'flash' is not an attention path")]
    [TestCase("FVL_WINOGRAD", "maybe", "fashionvil: FVL_WINOGRAD = 'maybe' is not a Winograd setting")]
    [TestCase("FVL_TF32_WGRAD", "fast", "fashionvil: FVL_TF32_WGRAD = 'fast' is not a weight-gradient setting")]
    [TestCase("FVL_CONV1X1", "fast", "fashionvil: FVL_CONV1X1 = 'fast' is not a 1×1 convolution setting")]
    [TestCase("FVL_TC_ASYNC", "yes", "fashionvil: FVL_TC_ASYNC = 'yes' is not a tensor-core staging setting")]
    [TestCase("FVL_TC_CONV_FWD", "fast", "fashionvil: FVL_TC_CONV_FWD = 'fast' is not a forward-convolution staging")]
    [TestCase("FVL_TC_TILE", "256x128", "fashionvil: FVL_TC_TILE = '256x128' is not a tensor-core tile")]
    [TestCase("FVL_TC_CONV_TILE", "big", "fashionvil: FVL_TC_CONV_TILE = 'big' is not a tensor-core tile")]
    [TestCase("FVL_SGEMM", "v9", "fashionvil: FVL_SGEMM = 'v9' is not an fp32 SGEMM version")]
    public void AnInvalidSwitchStopsTheCommandLineAtOnce(string variable, string value, string message)
    {
        var exe = Path.Combine(AppContext.BaseDirectory, "FashionViL.Cli.dll");
        Assert.That(File.Exists(exe), Is.True, exe);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add(exe);
        psi.ArgumentList.Add("info");
        psi.Environment[variable] = value;
        using var p = Process.Start(psi)!;
        var err0 = p.StandardError.ReadToEndAsync();
        var out0 = p.StandardOutput.ReadToEndAsync();
        Assert.That(p.WaitForExit(60_000), Is.True, "the command line exits");
        string err = err0.Result, output = out0.Result;
        Assert.That(p.ExitCode, Is.EqualTo(2), err + output);
        Assert.That(err, Does.Contain(message));
        Assert.That(output, Is.Empty, "no command ran");
    }

    [Test]
    public void UnknownCommandFails()
    {
        var (code, text) = RunCli("no-such-command");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain("no-such-command"));
    }
}

/// <summary>`fashionvil pretrain` with the configs as shipped, on a generated copy of the real layout.</summary>
[NonParallelizable]
public class PretrainCliTests
{
    private string _dir = "";

    [OneTimeSetUp]
    public void MakeData()
    {
        _dir = Path.Combine(Path.GetTempPath(), "fv-cli-" + Guid.NewGuid().ToString("N"));
        FashionViL.Synth.SyntheticDatasets.Generate(new FashionViL.Synth.SynthOptions(Path.Combine(_dir, "data"), 40, 3, 64, 0));
    }

    [OneTimeTearDown]
    public void Drop() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private static string Repo(string rel)
    {
        var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "FashionViL.Native.sln"))) d = d.Parent;
        return Path.Combine(d!.FullName, rel);
    }

    [Test]
    public void ShippedTinyConfigRunsAFewSteps()
    {
        var (code, text) = CliTests.RunCli("pretrain", "config=" + Repo("configs/tiny.yaml"), $"env.data_dir={Path.Combine(_dir, "data")}",
            $"env.save_dir={Path.Combine(_dir, "save")}", "training.max_updates=3", "training.batch_size=8", "training.log_interval=1",
            "training.evaluation_interval=3", "evaluation.max_items=8");
        Assert.That(code, Is.EqualTo(0), text);
        Assert.That(text, Does.Contain("3/3").And.Contain("finished 3 updates").And.Contain("r@k_general"));
        Assert.That(File.Exists(Path.Combine(_dir, "save", "fashionvil_tiny", "current.ckpt")));
    }

    [Test]
    public void UnknownKeyAndMissingFilesAreNamed()
    {
        var (code, text) = CliTests.RunCli("pretrain", "config=" + Repo("configs/tiny.yaml"), "training.batchsize=8");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain("training.batchsize").And.Contain("did you mean 'training.batch_size'"));
        (code, text) = CliTests.RunCli("pretrain", "config=" + Path.Combine(_dir, "nope.yaml"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain("nope.yaml"));
        (code, text) = CliTests.RunCli("pretrain", "config=" + Repo("configs/tiny.yaml"), $"env.data_dir={Path.Combine(_dir, "missing")}");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain(Path.Combine(_dir, "missing", "datasets")));
        (code, text) = CliTests.RunCli("pretrain", "not-a-pair");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain("not-a-pair"));
    }
}
