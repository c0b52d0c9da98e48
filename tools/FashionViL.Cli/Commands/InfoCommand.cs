using System.CommandLine;

namespace FashionViL.Cli;

/// <summary>`fashionvil info`: the compute devices this machine offers.</summary>
public static class InfoCommand
{
    public static Command Create()
    {
        var command = new Command("info", "List compute devices and the engine's build.");
        command.SetAction(_ =>
        {
            Console.WriteLine($"FashionViL.Native on .NET {Environment.Version}, {Environment.OSVersion}");
            Console.WriteLine($"cpu      : {Environment.ProcessorCount} hardware threads");
            try
            {
                var backend = Backends.Get(Device.Cuda(0));
                Console.WriteLine($"cuda:0   : {backend}");
            }
            catch (Exception e) when (e is NotSupportedException or InvalidOperationException)
            {
                Console.WriteLine($"cuda     : not available ({e.Message})");
            }
            return 0;
        });
        return command;
    }
}
