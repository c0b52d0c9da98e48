using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Which parts of a 128×128 TF32 tile's stage loop run (issue 7, diagnostics: <c>fashionvil bench dissect</c>). The tiles
/// ran BERT's products at ≈ 85 TFLOP/s on an H200, ≈ 4× slower than their issue count allows, and no profiler runs there:
/// timing the same kernel with one part taken out says which part the time follows.
/// <list type="bullet">
/// <item><see cref="Full"/>: the production kernel (the only part the backend ever launches).</item>
/// <item><see cref="NoGlobalLoads"/>: no global loads (or cp.async copies) and no stage stores inside the k loop: stage 0
/// is loaded by the prologue and stays in its buffer, the other buffers are zeroed, so the register-prefetch tiles read
/// stage 0 every second stage and the cp.async tile every third (its in-place rounding still runs); barriers, fragment
/// reads and mma all run. Timing: shared-memory fragments + tensor cores + barriers.</item>
/// <item><see cref="NoMath"/>: no fragment reads and no mma; the copies, rounding and barriers still run and the
/// accumulators stay zero, so C ← bias (+ beta·C). Timing: the global → shared pipeline alone.</item>
/// </list>
/// Both variants compute something else than the product, on purpose; the tests pin what.
/// </summary>
public enum TcPart
{
    Full,
    NoGlobalLoads,
    NoMath,
}

/// <summary>The compile-time part of a tile's stage loop that runs (<see cref="TcPart"/>); folds to constants.</summary>
internal interface ITcPart
{
    static abstract bool Copy { get; }
    static abstract bool Math { get; }
}

internal struct TcFull : ITcPart { public static bool Copy => true; public static bool Math => true; }
internal struct TcNoCopy : ITcPart { public static bool Copy => false; public static bool Math => true; }
internal struct TcNoMath : ITcPart { public static bool Copy => true; public static bool Math => false; }

public static partial class TensorCoreGemm
{
    [ThreadStatic] private static TcPart _part;

    /// <summary>The part the 128×128 TF32 tiles (GEMM, cp.async GEMM and convolution) launch on this thread: <see cref="TcPart.Full"/>
    /// except inside <see cref="UsePart"/>.</summary>
    public static TcPart Part => _part;

    /// <summary>Until disposed, the 128×128 TF32 tiles launched on this thread run <paramref name="part"/> of their stage loop
    /// (diagnostics only: every part but <see cref="TcPart.Full"/> computes a wrong product). Scopes nest.</summary>
    public static IDisposable UsePart(TcPart part)
    {
        if (!Enum.IsDefined(part)) throw new ArgumentOutOfRangeException(nameof(part), part, "tensor-core tile part: Full, NoGlobalLoads or NoMath");
        var scope = new PartScope(_part);
        _part = part;
        return scope;
    }

    private sealed class PartScope(TcPart previous) : IDisposable
    {
        private bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            _part = previous;
        }
    }

    /// <summary>Index of a part in the launch caches.</summary>
    internal static int PartIndex(TcPart part) => (int)part;

    /// <summary>The kernel method a 128×128 TF32 GEMM tile (<see cref="TensorCoreTile.Tile128x128"/> or
    /// <see cref="TensorCoreTile.Tile128x128Async"/>) runs for <paramref name="part"/> in a layout (offline PTX checks).</summary>
    internal static System.Reflection.MethodInfo PartMethod(TensorCoreTile tile, TcPart part, bool ta = false, bool tb = true) => tile switch
    {
        TensorCoreTile.Tile128x128 => Kernel3For(ta, tb, part).Method,
        TensorCoreTile.Tile128x128Async => Kernel4For(ta, tb, part).Method,
        _ => throw new ArgumentOutOfRangeException(nameof(tile), tile, "tile parts: the 128×128 TF32 tiles only"),
    };

    /// <summary>The generic definitions of the 128×128 TF32 kernels (GEMM, cp.async GEMM, conv): every layout, mode and
    /// <see cref="TcPart"/> instantiation gets their launch bounds (<see cref="KernelAudit.CudaLaunchBounds"/>).</summary>
    internal static IReadOnlyList<System.Reflection.MethodInfo> Tile128x128GenericKernels { get; } =
    [
        KernelMethod(TensorCoreTile.Tile128x128).GetGenericMethodDefinition(),
        KernelMethod(TensorCoreTile.Tile128x128Async).GetGenericMethodDefinition(),
        ConvKernels.TensorCoreKernelMethodFor(TensorCoreTile.Tile128x128).GetGenericMethodDefinition(),
    ];

    /// <summary>The mma.sync peak kernel's method (offline PTX checks and <c>bench ptx</c>).</summary>
    public static System.Reflection.MethodInfo MmaPeakMethod { get; } = ((Action<ArrayView<float>, int>)MmaPeakKernel).Method;

    // ----------------------------------------------------------------------------------------------- mma.sync peak

    /// <summary>Iterations of the peak kernel's loop body (each: 16 mma per warp on registers).</summary>
    public const int MmaPeakMmaPerIteration = 16;

    /// <summary>
    /// The tensor cores through mma.sync alone (CUDA): each warp runs <paramref name="iters"/> × 16 TF32 m16n8k8 mma into the
    /// 128×128 tile's 64 asm-named accumulators (16 independent chains of <paramref name="iters"/>), on operands that live in
    /// registers, then writes the sum of its lane's accumulators to <paramref name="sink"/> (so nothing is dead code). No
    /// shared or global traffic inside the loop: the ceiling the tiles' mma can reach on this device. Off CUDA it writes the
    /// thread index (the emulator has no mma).
    /// </summary>
    internal static void MmaPeakKernel(ArrayView<float> sink, int iters)
    {
        int tid = Group.IdxX;
        long gi = (long)Grid.IdxX * Group.DimX + tid;
        if (!CudaAsm.IsSupported)
        {
            if (gi < sink.Length) sink[gi] = tid;
            return;
        }
        DeclareAccumulators3();
        ZeroAccumulators3();
        // small TF32 operands that differ per lane (the tensor cores' speed does not depend on the values)
        // (computed from the thread index: ILGPU 1.5.3's PTX generator fails on a float-to-bits cast it has folded to a constant)
        float f = tid * (1f / 256);
        uint a0 = Tf32Word(1f + f), a1 = Tf32Word(0.5f - f), a2 = Tf32Word(f - 0.25f), a3 = Tf32Word(0.125f + f);
        uint b0 = Tf32Word(f * (1f / 1024)), b1 = Tf32Word(-f * (1f / 2048)), b2 = Tf32Word(f * (1f / 4096)), b3 = Tf32Word(-f * (1f / 8192));
        for (int i = 0; i < iters; i++)
        {
            // one A quad and two B pairs in fixed order: mma wants each as consecutive registers, so any permutation
            // would cost moves inside the loop
            CudaAsm.Emit(M00, a0, a1, a2, a3, b0, b1); CudaAsm.Emit(M01, a0, a1, a2, a3, b2, b3);
            CudaAsm.Emit(M02, a0, a1, a2, a3, b0, b1); CudaAsm.Emit(M03, a0, a1, a2, a3, b2, b3);
            CudaAsm.Emit(M10, a0, a1, a2, a3, b0, b1); CudaAsm.Emit(M11, a0, a1, a2, a3, b2, b3);
            CudaAsm.Emit(M12, a0, a1, a2, a3, b0, b1); CudaAsm.Emit(M13, a0, a1, a2, a3, b2, b3);
            CudaAsm.Emit(M20, a0, a1, a2, a3, b0, b1); CudaAsm.Emit(M21, a0, a1, a2, a3, b2, b3);
            CudaAsm.Emit(M22, a0, a1, a2, a3, b0, b1); CudaAsm.Emit(M23, a0, a1, a2, a3, b2, b3);
            CudaAsm.Emit(M30, a0, a1, a2, a3, b0, b1); CudaAsm.Emit(M31, a0, a1, a2, a3, b2, b3);
            CudaAsm.Emit(M32, a0, a1, a2, a3, b0, b1); CudaAsm.Emit(M33, a0, a1, a2, a3, b2, b3);
        }
        if (gi >= sink.Length) return;
        // the sum goes straight into the sink (an out local would live in local memory)
        CudaAsm.Emit("{ .reg .f32 fvlq; add.f32 fvlq, fvle0, fvle4; add.f32 fvlq, fvlq, fvle8; add.f32 fvlq, fvlq, fvle12; " +
            "add.f32 fvlq, fvlq, fvle16; add.f32 fvlq, fvlq, fvle20; add.f32 fvlq, fvlq, fvle24; add.f32 fvlq, fvlq, fvle28; " +
            "add.f32 fvlq, fvlq, fvle32; add.f32 fvlq, fvlq, fvle36; add.f32 fvlq, fvlq, fvle40; add.f32 fvlq, fvlq, fvle44; " +
            "add.f32 fvlq, fvlq, fvle48; add.f32 fvlq, fvlq, fvle52; add.f32 fvlq, fvlq, fvle56; add.f32 %0, fvlq, fvle60; }", out sink[gi]);
    }

    /// <summary>FLOPs of one <see cref="LaunchMmaPeak"/>: groups × 8 warps × iterations × 16 mma × 2,048.</summary>
    public static double MmaPeakFlop(int groups, int iters) => (double)groups * (GpuGroupSize2 / 32) * iters * MmaPeakMmaPerIteration * 2048.0;

    private sealed class PeakLoaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, int>? Kernel;
    }

    private static readonly ConditionalWeakTable<Accelerator, PeakLoaded> PeakCache = new();

    /// <summary>Enqueues the mma.sync peak kernel: <paramref name="groups"/> groups of 256 threads (the tiles' group, with their
    /// launch bounds), <paramref name="iters"/> iterations each; <paramref name="sink"/> needs groups × 256 floats.</summary>
    public static void LaunchMmaPeak(Accelerator acc, AcceleratorStream? stream, ArrayView<float> sink, int groups, int iters)
    {
        ArgumentNullException.ThrowIfNull(acc);
        if (groups < 1 || iters < 0) throw new ArgumentOutOfRangeException(nameof(groups), $"mma peak: groups must be ≥ 1 and iterations ≥ 0, got {groups} and {iters}");
        int nt = acc.AcceleratorType == AcceleratorType.Cuda ? GpuGroupSize2 : Math.Min(GpuGroupSize2, acc.MaxNumThreadsPerGroup);
        if (sink.Length < (long)groups * nt) throw new ArgumentException($"mma peak: the sink has {sink.Length} floats, needs {(long)groups * nt}");
        RequireTensorCores(acc, Precision.Tf32);
        var l = PeakCache.GetValue(acc, _ => new PeakLoaded());
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, int> k;
        lock (l) k = l.Kernel ??= acc.LoadKernel<ArrayView<float>, int>(MmaPeakKernel,
            acc.AcceleratorType == AcceleratorType.Cuda ? CudaLaunchBounds(TensorCoreTile.Tile128x128) : default);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, new KernelConfig(groups, nt), sink, iters);
    }
}
