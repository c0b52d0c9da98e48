using System.CommandLine;
using FashionViL.Bench;

namespace FashionViL.Cli;

/// <summary>`fashionvil bench dissect ...`: the 128×128 TF32 tiles timed whole and without their global loads or their mma
/// (issue 7: where a tile's time goes, without a profiler).</summary>
public static class BenchDissectCommand
{
    public static Command Create()
    {
        var reps = new Option<int>("--reps") { Description = "timed launches per kernel and part (median)", DefaultValueFactory = _ => 7 };
        var small = new Option<bool>("--small") { Description = "emulator-sized shapes (the default on the CPU emulator, FASHIONVIL_CUDA_EMULATOR=cpu)" };
        var json = new Option<string?>("--json") { Description = "also write the result as JSON to this file (atomic)" };
        var cmd = new Command("dissect", "Time the 128×128 TF32 GEMM, cp.async GEMM and conv tiles on the tf32 steps' main shapes whole, without the " +
            "global loads of their stage loop and without their mma, and the device's mma.sync TF32 peak (CUDA device 0).")
            { reps, small, json };
        cmd.SetAction(parse =>
        {
            var o = parse.InvocationConfiguration.Output;
            var err = parse.InvocationConfiguration.Error;
            try
            {
                if (parse.GetValue(json) is { } p && Path.GetDirectoryName(Path.GetFullPath(p)) is { } d && !Directory.Exists(d))
                    throw new DirectoryNotFoundException($"bench dissect: --json: folder not found: {d}");
                var r = TileDissect.Run(new DissectOptions { Reps = parse.GetValue(reps), Small = parse.GetValue(small) ? true : null });
                o.Write(TileDissect.Format(r));
                if (parse.GetValue(json) is { } path)
                {
                    TileDissect.WriteJson(path, r);
                    o.WriteLine($"  json {path}");
                }
                return 0;
            }
            catch (Exception e) when (PretrainCommand.IsUserError(e))
            {
                err.WriteLine(e.Message.StartsWith("bench dissect:", StringComparison.Ordinal) ? $"fashionvil {e.Message}" : $"fashionvil bench dissect: {e.Message}");
                return 1;
            }
        });
        return cmd;
    }
}
