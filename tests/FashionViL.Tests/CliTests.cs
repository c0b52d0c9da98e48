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

    [Test]
    public void UnknownCommandFails()
    {
        var (code, text) = RunCli("no-such-command");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain("no-such-command"));
    }
}
