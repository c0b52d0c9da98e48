using System.CommandLine;
using FashionViL.Bench;

namespace FashionViL.Cli;

/// <summary>`fashionvil bench ptx ...`: the kernels of the training steps compiled for sm_90 and checked offline (issue 7).</summary>
public static class BenchPtxCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "model run on the CUDA emulator to find the kernels the steps load", DefaultValueFactory = _ => "configs/nano.yaml" };
        var ptxas = new Option<string?>("--ptxas") { Description = "NVIDIA ptxas to assemble with (default: FVL_PTXAS, PATH, /usr/local/cuda/bin/ptxas)" };
        var outDir = new Option<string?>("--out") { Description = "keep each kernel's .ptx and .cubin in this folder" };
        var json = new Option<string?>("--json") { Description = "also write the result as JSON to this file (atomic)" };
        var cmd = new Command("ptx", "Compile every CUDA kernel of the six training steps (and every GEMM/conv variant) to PTX for sm_90 without a GPU; " +
            "with ptxas, assemble each and report registers, shared memory, stack, spills and SASS counts. Exit 1 if a kernel fails or uses local memory.")
            { config, ptxas, outDir, json };
        cmd.SetAction(parse =>
        {
            var o = parse.InvocationConfiguration.Output;
            var err = parse.InvocationConfiguration.Error;
            try
            {
                if (parse.GetValue(outDir) is { } d && !Directory.Exists(d))
                    throw new DirectoryNotFoundException($"bench ptx: --out: folder not found: {d}");
                var r = PtxAudit.Run(new PtxAuditOptions { Config = parse.GetValue(config)!, Ptxas = parse.GetValue(ptxas), OutDir = parse.GetValue(outDir) });
                o.Write(PtxAudit.Format(r));
                if (parse.GetValue(json) is { } path)
                {
                    PtxAudit.WriteJson(path, r);
                    o.WriteLine($"  json {path}");
                }
                return r.Clean ? 0 : 1;
            }
            catch (Exception e) when (PretrainCommand.IsUserError(e) || e is NotSupportedException)
            {
                err.WriteLine(e.Message.StartsWith("bench ptx:", StringComparison.Ordinal) ? $"fashionvil {e.Message}" : $"fashionvil bench ptx: {e.Message}");
                return 1;
            }
        });
        return cmd;
    }
}
