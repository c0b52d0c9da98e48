using System.CommandLine;

namespace FashionViL.Cli;

/// <summary>The list of `fashionvil` subcommands. Add one line per command file.</summary>
public static partial class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return DemoCommand.Create();
        yield return PretrainCommand.Create();
        yield return EvalCommand.Create();
        yield return FinetuneCommand.Create();
        yield return SynthCommand.Create();
        yield return ConvertCommand.Create();
        yield return EncodeCommand.Create();
        yield return SearchCommand.Create();
        yield return InfoCommand.Create();
        yield return BenchCommand.Create();
    }
}
