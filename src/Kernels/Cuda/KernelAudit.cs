using System.Collections;
using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace FashionViL.Kernels.Cuda;

/// <summary>One kernel as the audit sees it: its PTX for sm_90 and, when ptxas ran, what the assembler made of it.</summary>
public sealed record KernelReport(string Name, int PtxLines, int PtxLocalBytes)
{
    /// <summary>Why the kernel failed to compile to PTX or to assemble (null: it did not fail).</summary>
    public string? Error { get; init; }
    /// <summary>Figures from <c>ptxas -v</c> (null when ptxas did not run).</summary>
    public int? Registers { get; init; }
    public int? SharedBytes { get; init; }
    public int? StackBytes { get; init; }
    public int? SpillStoreBytes { get; init; }
    public int? SpillLoadBytes { get; init; }
    /// <summary>SASS instruction counts from <c>cuobjdump -sass</c> (null when it did not run): all, and by opcode family.</summary>
    public int? Sass { get; init; }
    public int? SassFfma { get; init; }
    public int? SassHmma { get; init; }
    public int? SassShared { get; init; }
    public int? SassLocal { get; init; }
    /// <summary>The hottest innermost loop of the SASS (<see cref="KernelAudit.HotLoop"/>; null without SASS or without a math loop).</summary>
    public SassLoop? HotLoop { get; init; }
    /// <summary>Why there are no SASS counts although ptxas ran (cuobjdump missing or failing): a tool problem, not the kernel's.</summary>
    public string? SassNote { get; init; }

    /// <summary>Whether the kernel touches per-thread local memory (a .local declaration in the PTX, a stack frame, spills
    /// or LDL/STL in the SASS): slow on a GPU, and never intended in this engine's kernels.</summary>
    public bool UsesLocalMemory => PtxLocalBytes > 0 || StackBytes > 0 || SpillStoreBytes > 0 || SpillLoadBytes > 0 || SassLocal > 0;
}

/// <summary>
/// Static SASS counts of one loop iteration (<see cref="KernelAudit.HotLoop"/>): instructions, FFMA, HMMA, shared loads
/// (LDS, LDSM) and stores, global/generic loads (LDG, LD), barriers; <see cref="EnclosingExtra"/> = the instructions of
/// the smallest loop around it outside it (per outer iteration: e.g. a K tile's loads and stores), null when none.
/// <see cref="NestedLoops"/> = loops inside this one (0 for an innermost loop), whose instructions are not counted here:
/// a loop with the math unrolled into it (a whole K tile) can also hold a loop that rarely runs (e.g. staging for small
/// groups). Every count is static over the loop's own code: both sides of a branch inside it are counted.
/// <see cref="LocalAccesses"/> = LDL/STL in it (spill traffic inside the hot loop; a kernel's spills elsewhere cost once per
/// tile).
/// </summary>
public sealed record SassLoop(int Instructions, int Ffma, int Hmma, int SharedLoads, int SharedStores, int GlobalLoads, int Barriers, int? EnclosingExtra,
    int NestedLoops = 0, int LocalAccesses = 0)
{
    /// <summary>(FFMA + HMMA) / instructions: the fraction of this loop's issue slots that do math.</summary>
    public double MathShare => Instructions == 0 ? 0 : (double)(Ffma + Hmma) / Instructions;
}

/// <summary>
/// Static checks of the CUDA kernels without a GPU (issue 7): which kernels an accelerator has loaded, their PTX for sm_90
/// (ILGPU's own PTX backend, offline), and — when NVIDIA's <c>ptxas</c> is at hand (a CUDA toolkit, or Debian's
/// nvidia-cuda-toolkit) — the registers, shared memory, stack frame and spills ptxas reports for sm_90, plus SASS
/// instruction counts from <c>cuobjdump</c>. PTX the driver would reject, and local-memory traffic a kernel was not meant
/// to have, show up here before any device time is spent.
/// </summary>
public static class KernelAudit
{
    /// <summary>
    /// The entry points <paramref name="acc"/> has compiled so far, read from ILGPU 1.5.3's kernel cache (a private field:
    /// ILGPU is pinned at exactly 1.5.3, and this throws, naming the field, if a different ILGPU lays it out differently).
    /// Only kernels whose typed delegate is still held appear once the cache has been garbage-collected; the backends hold
    /// theirs for the accelerator's lifetime.
    /// </summary>
    public static IReadOnlyList<EntryPointDescription> LoadedKernels(Accelerator acc)
    {
        ArgumentNullException.ThrowIfNull(acc);
        const string field = "kernelCache";
        var f = typeof(Accelerator).GetField(field, BindingFlags.Instance | BindingFlags.NonPublic)
            ?? throw new NotSupportedException($"kernel audit: ILGPU {typeof(Accelerator).Assembly.GetName().Version} has no Accelerator.{field}; it reads ILGPU 1.5.3's kernel cache");
        // Call it while no other thread loads kernels on this accelerator (the dictionary is ILGPU's, under its own lock).
        if (f.GetValue(acc) is not IDictionary cache)
            throw new InvalidOperationException($"kernel audit: the kernel cache of {acc.Name} is disabled (CachingMode); nothing to list");
        var result = new List<EntryPointDescription>();
        foreach (var key in cache.Keys.Cast<object>().ToList())
        {
            var compiled = key.GetType().GetProperty("CompiledKernelKey")?.GetValue(key)
                ?? throw new NotSupportedException("kernel audit: unexpected ILGPU kernel-cache key layout (no CompiledKernelKey)");
            var entry = compiled.GetType().GetProperty("Entry")?.GetValue(compiled) as EntryPointDescription?
                ?? throw new NotSupportedException("kernel audit: unexpected ILGPU kernel-cache key layout (no Entry)");
            result.Add(entry);
        }
        return result.DistinctBy(e => e.MethodSource).ToList();
    }

    /// <summary>An explicitly grouped kernel method (the form every kernel of this engine has) as an entry point.</summary>
    public static EntryPointDescription Entry(MethodInfo kernel) => EntryPointDescription.FromExplicitlyGroupedKernel(kernel);

    /// <summary>The launch bounds the CUDA loaders give a kernel (default: none).</summary>
    public static KernelSpecialization CudaLaunchBounds(MethodInfo kernel)
    {
        foreach (var v in GemmKernels.Versions)
            if (GemmKernels.KernelMethod(v) == kernel) return GemmKernels.CudaLaunchBounds(v);
        if (GemmKernels.Reg128LayoutMethods.Contains(kernel)) return GemmKernels.CudaLaunchBounds(GemmVersion.Reg128x8Layout);
        foreach (var tile in TensorCoreGemm.Tiles)
            if (TensorCoreGemm.KernelMethod(tile) == kernel || ConvKernels.TensorCoreKernelMethodFor(tile) == kernel) return TensorCoreGemm.CudaLaunchBounds(tile);
        if (TensorCoreGemm.Kernel128x128Methods.Contains(kernel) || TensorCoreGemm.Kernel128x128AsyncMethods.Contains(kernel) || ConvKernels.TensorCoreKernelMethodFor(TensorCoreTile.Tile128x128) == kernel
            || ConvKernels.TensorCoreForwardKernelMethod == kernel || TensorCoreGemm.MmaPeakMethod == kernel
            || kernel.IsGenericMethod && TensorCoreGemm.Tile128x128GenericKernels.Contains(kernel.GetGenericMethodDefinition()))   // bench dissect's parts too
            return TensorCoreGemm.CudaLaunchBounds(TensorCoreTile.Tile128x128);
        foreach (var v in ConvKernels.Versions)
            if (ConvKernels.KernelMethod(v) == kernel) return ConvKernels.CudaLaunchBounds(v);
        return default;
    }

    /// <summary>
    /// Kernels known to use local memory, with the reason it is accepted: not in a training step's hot path. The audit
    /// reports them but does not fail on them.
    /// </summary>
    public static IReadOnlyDictionary<string, string> AcceptedLocalMemory { get; } = new Dictionary<string, string>
    {
        ["RandomKernels.Draw"] = "ILGPU.Algorithms' float64 log/sin/cos (CORDIC, for Box–Muller) keep their angle in .local; " +
            "the kernel draws random tensors (weight init, benchmark inputs), never inside a training step",
        // the fp32 SGEMM v6 (the rule's pick since the H200 A/B of 2026-11-28): at the 128-register cap its spills sit in the prologue, the
        // general K loop (edge tiles, the last K tile) and the epilogue; its stage loop has none, except TN's two stack reloads
        // per K tile under ptxas 12.4 (PtxAuditTests pins both)
        ["GemmKernels.Reg128LayoutKernel<TcLayoutNN>"] = V6Spills, ["GemmKernels.Reg128LayoutKernel<TcLayoutNT>"] = V6Spills,
        ["GemmKernels.Reg128LayoutKernel<TcLayoutTN>"] = V6Spills, ["GemmKernels.Reg128LayoutKernel<TcLayoutTT>"] = V6Spills,
    };

    private const string V6Spills = "SGEMM v6 (the rule's pick: faster than v5 on the H200 despite them) spills at 128 registers outside its stage loop " +
        "(prologue, edge-tile loop, epilogue: once per tile); its stage loop holds at most 2 stack reloads per K tile of 8";

    /// <summary>A readable name: Type.Method&lt;generic arguments&gt;.</summary>
    public static string NameOf(MethodInfo m)
    {
        static string T(Type t) => t.IsGenericType
            ? $"{t.Name[..t.Name.IndexOf('`')]}<{string.Join(",", t.GetGenericArguments().Select(T))}>"
            : t.DeclaringType is { } d && !t.IsGenericParameter ? $"{d.Name}.{t.Name}" : t.Name;
        var name = $"{m.DeclaringType?.Name}.{m.Name}";
        return m.IsGenericMethod ? $"{name}<{string.Join(",", m.GetGenericArguments().Select(T))}>" : name;
    }

    /// <summary>The PTX ISA a ptxas of CUDA release <paramref name="major"/>.<paramref name="minor"/> accepts, capped at 8.8
    /// (what ILGPU 1.5.3 writes for sm_90).</summary>
    public static (int Major, int Minor) IsaFor(int major, int minor) => (major, minor) switch
    {
        (< 11, _) => throw new NotSupportedException($"kernel audit: ptxas of CUDA {major}.{minor} predates sm_90 (CUDA 11.8 or newer is needed)"),
        (11, < 8) => throw new NotSupportedException($"kernel audit: ptxas of CUDA {major}.{minor} predates sm_90 (CUDA 11.8 or newer is needed)"),
        (11, _) => (7, 8),
        (12, <= 5) => (8, minor),
        (12, 6) => (8, 5),
        (12, 7) => (8, 6),
        (12, 8) => (8, 7),
        _ => (8, 8),
    };

    /// <summary>Compiles entry points to PTX for sm_90 at one ISA version, offline.</summary>
    public sealed class PtxCompiler : IDisposable
    {
        private readonly Context _ctx;
        private readonly PTXBackend _backend;

        public PtxCompiler(int isaMajor = 8, int isaMinor = 8)
        {
            _ctx = Context.Create(b => b.EnableAlgorithms());
            var isa = typeof(CudaInstructionSet).GetField($"ISA_{isaMajor}{isaMinor}", BindingFlags.Public | BindingFlags.Static)?.GetValue(null) as CudaInstructionSet?
                ?? throw new NotSupportedException($"kernel audit: ILGPU has no PTX ISA {isaMajor}.{isaMinor}");
            _backend = new PTXBackend(_ctx, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, isa, null);
        }

        /// <summary>The PTX of <paramref name="entry"/> with the launch bounds the CUDA loader gives it (<see cref="CudaLaunchBounds"/>).</summary>
        public string Compile(EntryPointDescription entry)
            => ((PTXCompiledKernel)_backend.Compile(entry, CudaLaunchBounds(entry.MethodSource))).PTXAssembly;

        public void Dispose()
        {
            _backend.Dispose();
            _ctx.Dispose();
        }
    }

    private static readonly Regex LocalDecl = new(@"^\s*\.local\s+(?:\.align\s+\d+\s+)?\.\w+\s+[\w$]+\[(\d+)\]", RegexOptions.Multiline);

    /// <summary>Bytes of .local memory the PTX declares (ILGPU's __local_depot arrays).</summary>
    public static int LocalBytes(string ptx) => LocalDecl.Matches(ptx).Sum(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));

    /// <summary>Where ptxas is: <paramref name="explicitPath"/>, else FVL_PTXAS, else ptxas on PATH, else /usr/local/cuda/bin/ptxas;
    /// null when none exists.</summary>
    public static string? FindPtxas(string? explicitPath = null)
    {
        if (!string.IsNullOrEmpty(explicitPath))
            return File.Exists(explicitPath) ? Path.GetFullPath(explicitPath) : throw new FileNotFoundException($"kernel audit: --ptxas: file not found: {explicitPath}", explicitPath);
        if (Environment.GetEnvironmentVariable("FVL_PTXAS") is { Length: > 0 } env)
            return File.Exists(env) ? env : throw new FileNotFoundException($"kernel audit: FVL_PTXAS names a file that does not exist: {env}", env);
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            if (File.Exists(Path.Combine(dir, "ptxas"))) return Path.Combine(dir, "ptxas");
        return File.Exists("/usr/local/cuda/bin/ptxas") ? "/usr/local/cuda/bin/ptxas" : null;
    }

    /// <summary>The CUDA release of a ptxas ("Cuda compilation tools, release 11.8, V11.8.89" → (11, 8)).</summary>
    public static (int Major, int Minor) PtxasRelease(string ptxas)
    {
        var (code, stdout, stderr) = RunTool(ptxas, ["--version"]);
        var m = Regex.Match(stdout + stderr, @"release (\d+)\.(\d+)");
        if (code != 0 || !m.Success)
            throw new InvalidOperationException($"kernel audit: {ptxas} --version did not name a CUDA release (exit {code}): {(stdout + stderr).Trim()}");
        return (int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// Assembles <paramref name="ptxFile"/> for sm_90 with ptxas -v and, when cuobjdump sits beside ptxas or on PATH, counts
    /// the SASS instructions. Returns <paramref name="report"/> with the figures, or with <see cref="KernelReport.Error"/>.
    /// </summary>
    public static KernelReport Assemble(KernelReport report, string ptxFile, string ptxas)
    {
        var cubin = Path.ChangeExtension(ptxFile, ".cubin");
        var (code, stdout, stderr) = RunTool(ptxas, ["-arch=sm_90", "-v", "-o", cubin, ptxFile]);
        var text = stdout + stderr;
        if (code != 0) return report with { Error = $"ptxas failed (exit {code}): {FirstLines(text, 6)}" };
        int? Int(string pattern) => Regex.Match(text, pattern) is { Success: true } m ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : null;
        report = report with
        {
            Registers = Int(@"Used (\d+) registers") ?? 0,
            SharedBytes = Int(@"(\d+) bytes smem") ?? 0,
            StackBytes = Int(@"(\d+) bytes stack frame") ?? 0,
            SpillStoreBytes = Int(@"(\d+) bytes spill stores") ?? 0,
            SpillLoadBytes = Int(@"(\d+) bytes spill loads") ?? 0,
        };
        var cuobjdump = Path.Combine(Path.GetDirectoryName(ptxas) ?? ".", "cuobjdump");
        if (!File.Exists(cuobjdump)) cuobjdump = FindOnPath("cuobjdump") ?? "";
        if (cuobjdump.Length == 0) return report;
        var (c2, sass, err2) = RunTool(cuobjdump, ["-sass", cubin]);
        if (c2 != 0) return report with { SassNote = $"cuobjdump failed (exit {c2}): {FirstLines(err2, 2)}" };
        return report with
        {
            Sass = CountSass(sass, null),
            SassFfma = CountSass(sass, "FFMA"),
            SassHmma = CountSass(sass, "HMMA"),
            SassShared = CountSass(sass, "LDS") + CountSass(sass, "STS"),
            SassLocal = CountSass(sass, "LDL") + CountSass(sass, "STL"),
            HotLoop = HotLoop(sass),
        };
    }

    private static readonly Regex SassInstruction = new(@"^\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)([^;]*);", RegexOptions.Multiline);
    private static readonly Regex BranchTarget = new(@"\b0x([0-9a-f]+)\b");

    /// <summary>
    /// The hottest loop of one kernel's <c>cuobjdump -sass</c> listing: a loop is the address range from a backward
    /// branch's target to the branch; a loop's own code is its range minus the loops inside it. The hottest is the most
    /// deeply nested loop whose own code holds FFMA or HMMA (it runs most often; ties: more FFMA + HMMA, then the shorter),
    /// counted without the loops nested in it. That is a rolled k step when the math sits in one, or the K-tile loop when
    /// the k steps are unrolled into it and it also holds loops without math (e.g. staging that runs only for small groups:
    /// <see cref="SassLoop.NestedLoops"/> &gt; 0). Null when no loop holds either. A static count of one iteration, not a profile:
    /// an SM sub-partition issues one warp instruction per clock, so (FFMA + HMMA) / instructions bounds the fraction of
    /// issue slots doing math in that loop (for fp32 kernels, an upper bound on the fraction of the FFMA peak).
    /// </summary>
    public static SassLoop? HotLoop(string sass)
    {
        var code = SassInstruction.Matches(sass).Select(m => (Address: Convert.ToInt64(m.Groups[1].Value, 16), Op: m.Groups[2].Value, Args: m.Groups[3].Value)).ToList();
        var loops = new List<(long Start, long End)>();
        foreach (var (address, op, args) in code)
        {
            if (op != "BRA") continue;
            var t = BranchTarget.Match(args);
            if (!t.Success) continue;
            long target = Convert.ToInt64(t.Groups[1].Value, 16);
            if (target <= address) loops.Add((target, address));
        }
        loops = loops.Distinct().ToList();
        static bool Inside((long Start, long End) inner, (long Start, long End) outer)
            => inner != outer && inner.Start >= outer.Start && inner.End <= outer.End;
        // own = false: every instruction in the range; own = true: those outside the loops nested in it
        SassLoop Count((long Start, long End) l, bool own)
        {
            var nested = loops.Where(o => Inside(o, l)).ToList();
            int n = 0, ffma = 0, hmma = 0, lds = 0, sts = 0, ld = 0, bar = 0, local = 0;
            foreach (var (address, op, _) in code)
            {
                if (address < l.Start || address > l.End) continue;
                if (own && nested.Any(o => address >= o.Start && address <= o.End)) continue;
                n++;
                switch (op)
                {
                    case "FFMA": ffma++; break;
                    case "HMMA": hmma++; break;
                    case "LDS" or "LDSM": lds++; break;
                    case "STS": sts++; break;
                    case "LD" or "LDG": ld++; break;
                    case "BAR": bar++; break;
                    case "LDL" or "STL": local++; break;
                }
            }
            return new SassLoop(n, ffma, hmma, lds, sts, ld, bar, null, own ? nested.Count : 0, local);
        }
        var hottest = loops.Select(l => (Range: l, Stats: Count(l, own: true), Depth: loops.Count(o => Inside(l, o))))
            .Where(x => x.Stats.Ffma + x.Stats.Hmma > 0).OrderByDescending(x => x.Depth).ThenByDescending(x => x.Stats.Ffma + x.Stats.Hmma).ThenBy(x => x.Stats.Instructions).ToList();
        if (hottest.Count == 0) return null;
        var (range, stats, _) = hottest[0];
        int whole = Count(range, own: false).Instructions;
        var enclosing = loops.Where(o => Inside(range, o)).OrderBy(o => o.End - o.Start).Select(o => (int?)Count(o, own: false).Instructions).FirstOrDefault();
        return stats with { EnclosingExtra = enclosing - whole };
    }

    private static readonly Regex SassLine = new(@"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", RegexOptions.Multiline);

    /// <summary>SASS instructions (of one opcode, e.g. "FFMA", or all when null) in cuobjdump -sass output.</summary>
    public static int CountSass(string sass, string? opcode)
        => SassLine.Matches(sass).Count(m => opcode is null || m.Groups[1].Value == opcode);

    private static string? FindOnPath(string tool)
        => (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);

    private static string FirstLines(string s, int n) => string.Join(" | ", s.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Take(n));

    private static (int Code, string Stdout, string Stderr) RunTool(string exe, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"kernel audit: could not start {exe}");
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output, err.Result);
    }
}
