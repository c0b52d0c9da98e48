using System.Globalization;
using System.Text;
using System.Text.Json;
using FashionViL.Config;
using FashionViL.Kernels.Cuda;
using FashionViL.Training;
using ILGPU.Backends.EntryPoints;

namespace FashionViL.Bench;

/// <summary>Options of <c>fashionvil bench ptx</c>.</summary>
public sealed record PtxAuditOptions
{
    /// <summary>The model whose training steps are run on the CUDA emulator to find the kernels they load (small is enough:
    /// the same kernels run at every size, except the GEMM/conv variants chosen by shape, which are added explicitly).</summary>
    public string Config { get; init; } = "configs/nano.yaml";
    /// <summary>ptxas to use (else FVL_PTXAS, PATH, /usr/local/cuda/bin); none found: PTX-level checks only.</summary>
    public string? Ptxas { get; init; }
    /// <summary>Keep each kernel's .ptx (and .cubin) here; null: a temporary folder, deleted afterwards.</summary>
    public string? OutDir { get; init; }
}

/// <summary>The audit's findings.</summary>
public sealed record PtxAuditResult(string Target, string? Ptxas, string? PtxasRelease, IReadOnlyList<KernelReport> Kernels)
{
    public IReadOnlyList<KernelReport> Failed => Kernels.Where(k => k.Error is not null).ToList();
    public IReadOnlyList<KernelReport> WithLocalMemory => Kernels.Where(k => k.UsesLocalMemory).ToList();
    /// <summary>Kernels with local memory that <see cref="KernelAudit.AcceptedLocalMemory"/> does not excuse.</summary>
    public IReadOnlyList<KernelReport> UnexpectedLocalMemory => WithLocalMemory.Where(k => !KernelAudit.AcceptedLocalMemory.ContainsKey(k.Name)).ToList();
    /// <summary>Nothing failed to compile or assemble, and no kernel uses local memory unexpectedly.</summary>
    public bool Clean => Failed.Count == 0 && UnexpectedLocalMemory.Count == 0;
}

/// <summary>
/// <c>fashionvil bench ptx</c> (issue 7): every CUDA kernel the six training steps load — found by running each step once on
/// ILGPU's CPU accelerator (the CUDA emulator) at <see cref="PtxAuditOptions.Config"/>'s size, fp32 and TF32, and reading
/// the accelerator's kernel cache — plus every GEMM and convolution variant, compiled to PTX for sm_90 offline and, when
/// ptxas is available, assembled for sm_90 (see <see cref="KernelAudit"/>). No GPU is needed.
/// </summary>
public static class PtxAudit
{
    /// <summary>The kernels the training steps load, run on device cuda:0 (the emulator unless a GPU runtime is already open).</summary>
    public static IReadOnlyList<EntryPointDescription> StepKernels(string config, TextWriter? log = null)
    {
        if (!File.Exists(config)) throw new FileNotFoundException($"bench ptx: --config: file not found: {config}", config);
        var cfg = FvConfig.Load(config);
        var mc = PretrainSetup.ModelConfig(cfg);
        int t = cfg.GetInt("dataset_config.fashionall.processors.masked_token_processor.params.max_seq_length");
        var device = Device.Cuda(0);
        IBackend backend;
        try { backend = Backends.Get(device); }   // a GPU (or a runtime already open) is read as it is
        catch (NotSupportedException)
        {
            CudaRuntime.EmulatorEnabled = true;   // no GPU here: the same kernels load on the emulator
            backend = Backends.Get(device);
        }
        foreach (var (task, precision) in StepBenchmark.Tasks.Select(k => (k, Precision.Fp32)).Append(("mlm", Precision.Tf32)))
        {
            var vc = task == "mpfc" ? PretrainSetup.TokenizerConfig(cfg) : null;
            using var precisionScope = MatMulPrecision.Use(precision);
            using var runner = new StepRunner(mc, vc, task, 2, t, device, seed: 1);
            runner.Step();
            backend.Synchronize();
            log?.WriteLine($"bench ptx: ran a {task} step ({precision.Name()}) on {device}");
        }
        var loaded = KernelAudit.LoadedKernels(CudaRuntime.Get(0).Accelerator);
        var ladders = GemmKernels.Versions.Select(GemmKernels.KernelMethod).Concat(GemmKernels.Reg128LayoutMethods)
            .Concat(ConvKernels.KernelMethods.Select(k => k.Method))
            .Concat(TensorCoreGemm.Tiles.Select(tile => TensorCoreGemm.KernelMethod(tile))).Concat(TensorCoreGemm.Kernel128x128Methods).Concat(TensorCoreGemm.Kernel128x128AsyncMethods).Concat(TensorCoreGemm.ConvTilesFor(Precision.Tf32).Select(ConvKernels.TensorCoreKernelMethodFor)).Concat(WinogradKernels.KernelMethods)
            .Append(ConvKernels.TensorCoreForwardKernelMethod).Append(TensorCoreGemm.MmaPeakMethod)   // the 128×128 tile's forward path; bench dissect's mma.sync peak
            .Select(KernelAudit.Entry);
        return loaded.Concat(ladders).DistinctBy(e => e.MethodSource).OrderBy(e => KernelAudit.NameOf(e.MethodSource), StringComparer.Ordinal).ToList();
    }

    public static PtxAuditResult Run(PtxAuditOptions o, TextWriter? log = null)
    {
        var ptxas = KernelAudit.FindPtxas(o.Ptxas);
        (int Major, int Minor)? release = ptxas is null ? null : KernelAudit.PtxasRelease(ptxas);
        var isa = release is { } r ? KernelAudit.IsaFor(r.Major, r.Minor) : (8, 8);
        var entries = StepKernels(o.Config, log);
        var dir = o.OutDir ?? Path.Combine(Path.GetTempPath(), $"fashionvil-ptx-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        var reports = new List<KernelReport>();
        try
        {
            using var compiler = new KernelAudit.PtxCompiler(isa.Item1, isa.Item2);
            foreach (var e in entries)
            {
                var name = KernelAudit.NameOf(e.MethodSource);
                string ptx;
                try { ptx = compiler.Compile(e); }
                catch (Exception ex) { reports.Add(new KernelReport(name, 0, 0) { Error = $"PTX compilation failed: {ex.GetType().Name}: {ex.Message}" }); continue; }
                var rep = new KernelReport(name, ptx.Count(c => c == '\n'), KernelAudit.LocalBytes(ptx));
                var file = Path.Combine(dir, FileName(name) + ".ptx");
                File.WriteAllText(file, ptx);
                reports.Add(ptxas is null ? rep : KernelAudit.Assemble(rep, file, ptxas));
            }
        }
        finally
        {
            if (o.OutDir is null) Directory.Delete(dir, recursive: true);
        }
        return new PtxAuditResult($"sm_90, PTX ISA {isa.Item1}.{isa.Item2}", ptxas, release is { } v ? $"{v.Major}.{v.Minor}" : null, reports);
    }

    private static string FileName(string kernel)
    {
        var sb = new StringBuilder(kernel.Length);
        foreach (var c in kernel) sb.Append(char.IsLetterOrDigit(c) || c is '.' or '_' or '-' ? c : '_');
        return sb.Length > 120 ? sb.ToString(0, 100) + "_" + (uint)kernel.GetHashCode() : sb.ToString();
    }

    /// <summary>The table: one line per kernel, then the problems, then a one-line summary.</summary>
    public static string Format(PtxAuditResult r)
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(ci, $"bench ptx: {r.Kernels.Count} kernels, {r.Target}; ptxas: {(r.Ptxas is null ? "not found (PTX-level checks only; install a CUDA toolkit or set FVL_PTXAS)" : $"{r.Ptxas} (CUDA {r.PtxasRelease})")}");
        static string N(int? v) => v?.ToString(CultureInfo.InvariantCulture) ?? "-";
        int w = Math.Clamp(r.Kernels.Count == 0 ? 10 : r.Kernels.Max(k => k.Name.Length), 10, 72);
        sb.AppendLine(ci, $"  {"kernel".PadRight(w)} {"regs",5} {"smem",6} {"stack",5} {"spill",5} {"sass",6} {"ffma",5} {"hmma",4} {"lds/sts",7} {"ldl/stl",7} {"loop",5} {"math%",5}");
        foreach (var k in r.Kernels)
        {
            var name = k.Name.Length > w ? k.Name[..(w - 1)] + "…" : k.Name;
            sb.AppendLine(ci, $"  {name.PadRight(w)} {N(k.Registers),5} {N(k.SharedBytes),6} {N(k.StackBytes),5} {N(k.SpillStoreBytes + k.SpillLoadBytes),5} {N(k.Sass),6} {N(k.SassFfma),5} {N(k.SassHmma),4} {N(k.SassShared),7} {N(k.SassLocal),7} {(k.HotLoop is { } h ? h.Instructions + (h.NestedLoops > 0 ? "*" : "") : "-"),5} {(k.HotLoop is { } l ? (100 * l.MathShare).ToString("0", ci) : "-"),5}");
        }
        foreach (var k in r.Failed) sb.AppendLine(ci, $"  FAILED {k.Name}: {k.Error}");
        if (r.Kernels.FirstOrDefault(k => k.SassNote is not null) is { } noSass)
            sb.AppendLine(ci, $"  no SASS counts ({r.Kernels.Count(k => k.SassNote is not null)} kernels): {noSass.SassNote}");
        foreach (var k in r.WithLocalMemory)
        {
            var why = KernelAudit.AcceptedLocalMemory.TryGetValue(k.Name, out var reason) ? $" (accepted: {reason})" : "";
            sb.AppendLine(ci, $"  LOCAL MEMORY {k.Name}: PTX .local {k.PtxLocalBytes} B, stack {N(k.StackBytes)} B, spills {N(k.SpillStoreBytes)}+{N(k.SpillLoadBytes)} B, LDL/STL {N(k.SassLocal)}{why}");
        }
        if (r.Kernels.Any(k => k.HotLoop is not null))
        {
            sb.AppendLine(ci, $"  loop / math%: instructions of the hottest SASS loop (one iteration, static) and the share that is FFMA or HMMA");
            if (r.Kernels.Any(k => k.HotLoop is { NestedLoops: > 0 }))
                sb.AppendLine(ci, $"  *: the math is unrolled into a loop that also holds other loops; their instructions are not counted");
        }
        sb.AppendLine(ci, $"  {r.Kernels.Count} kernels: {r.Failed.Count} failed, {r.UnexpectedLocalMemory.Count} with unexpected local memory ({r.WithLocalMemory.Count} with any)");
        return sb.ToString();
    }

    /// <summary>The result as JSON, written atomically (temp file, then rename).</summary>
    public static void WriteJson(string path, PtxAuditResult r)
    {
        var doc = new
        {
            target = r.Target,
            ptxas = r.Ptxas,
            ptxas_release = r.PtxasRelease,
            clean = r.Clean,
            kernels = r.Kernels.Select(k => new
            {
                name = k.Name, ptx_lines = k.PtxLines, ptx_local_bytes = k.PtxLocalBytes, error = k.Error,
                registers = k.Registers, shared_bytes = k.SharedBytes, stack_bytes = k.StackBytes,
                spill_store_bytes = k.SpillStoreBytes, spill_load_bytes = k.SpillLoadBytes,
                sass = k.Sass, sass_ffma = k.SassFfma, sass_hmma = k.SassHmma, sass_shared = k.SassShared, sass_local = k.SassLocal,
                sass_note = k.SassNote,
                hot_loop = k.HotLoop is not { } l ? null : new
                {
                    instructions = l.Instructions, ffma = l.Ffma, hmma = l.Hmma, shared_loads = l.SharedLoads, shared_stores = l.SharedStores,
                    global_loads = l.GlobalLoads, barriers = l.Barriers, enclosing_extra = l.EnclosingExtra, nested_loops = l.NestedLoops,
                    local_accesses = l.LocalAccesses,
                    math_share = Math.Round(l.MathShare, 4),
                },
                uses_local_memory = k.UsesLocalMemory,
                local_memory_accepted = KernelAudit.AcceptedLocalMemory.ContainsKey(k.Name),
            }),
        };
        BenchFiles.WriteAtomically("bench ptx", path, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
    }
}
