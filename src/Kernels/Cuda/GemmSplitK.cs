using FashionViL.Kernels.Cpu;
using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Split-K for GEMMs whose C has too few tiles to occupy the device (issue 7). The weight gradients of BERT's 768 × 768
/// projections are C = dYᵀ·X with K = batch·tokens (4,800 for ITC at batch 64, 7,936 for MLM): 36 tiles of 128 × 128 for
/// an H100's 132 multiprocessors, each of which holds two such groups, so about 14 % of the device would work through
/// the longest reduction of the step. Split-K cuts K into chunks, computes every chunk's partial product into a
/// workspace as one strided-batched GEMM (the same kernel, alpha 1, beta 0, no bias), and sums the partials in chunk
/// order in a second kernel that applies the caller's epilogue (alpha, beta·C, bias, GELU). Deterministic: the chunking
/// depends only on the shape and the device's multiprocessor count.
/// </summary>
public static class GemmSplitK
{
    /// <summary>Smallest K chunk worth a partial product (also what the convolution's split-K uses).</summary>
    public const int MinChunk = 256;

    /// <summary>The tile of C each group of the kernel <see cref="CudaBackend.MatMul"/> would run covers.</summary>
    private static (int M, int N) Tile(Accelerator acc, int m, int n, Precision precision)
        => precision == Precision.Fp32 ? GemmKernels.TileOf(GemmKernels.Best) : TensorCoreGemm.TileShape(TensorCoreGemm.SplitSizingTile);

    /// <summary>
    /// How many K chunks to compute <paramref name="args"/> in (1: run it as one GEMM). Only a single (unbatched) GEMM whose
    /// tiles number fewer than the multiprocessors is split, into as many chunks as keep tiles × chunks within one wave of
    /// two groups per multiprocessor, each chunk at least <see cref="MinChunk"/> deep.
    /// </summary>
    public static int Splits(Accelerator acc, in GemmArgs args, Precision precision)
    {
        ArgumentNullException.ThrowIfNull(acc);
        if (args.Batch != 1 || args.M <= 0 || args.N <= 0 || args.K < 2 * MinChunk) return 1;
        var (tm, tn) = Tile(acc, args.M, args.N, precision);
        long tiles = (long)((args.M + tm - 1) / tm) * ((args.N + tn - 1) / tn);
        int sms = Math.Max(1, acc.NumMultiprocessors);
        if (tiles >= sms) return 1;
        long want = 2L * sms / tiles;
        long sp = Math.Min(want, args.K / MinChunk);
        if (sp < 2) return 1;
        // whole chunks of a multiple of 16 (the kernels' K steps); the count may shrink by the rounding
        int chunk = Chunk(args.K, (int)sp);
        return (args.K + chunk - 1) / chunk;
    }

    private static int Chunk(int k, int splits) => ((k + splits - 1) / splits + 15) / 16 * 16;

    /// <summary>Floats of workspace <see cref="Launch"/> needs for <paramref name="splits"/> chunks: one M × N partial each.</summary>
    public static long Workspace(in GemmArgs args, int splits) => splits < 2 ? 0 : (long)splits * args.M * args.N;

    /// <summary>
    /// C ← alpha·Σ_z A[:, chunk z]·B[chunk z, :] + beta·C (+ bias) (then GELU), the chunks summed in order. Runs the
    /// partial products with <see cref="GemmKernels"/>' wired version (Fp32) or <see cref="TensorCoreGemm"/> (Tf32/Bf16):
    /// one batched launch over the whole chunks, one more for a shorter last chunk, then the reduction. Returns the number
    /// of kernels enqueued. <paramref name="version"/> (Fp32; default <see cref="GemmKernels.Best"/>) and
    /// <paramref name="tile"/> (Tf32/Bf16; default <see cref="TensorCoreGemm.Choose"/>'s tile for the precision) pick the partial products' kernel:
    /// every choice gives the same bits.
    /// </summary>
    public static int Launch(Accelerator acc, AcceleratorStream? stream, in GemmArgs args, Precision precision, ArrayView<float> workspace, int splits,
        GemmVersion version = GemmKernels.Best, TensorCoreTile? tile = null)
    {
        ArgumentNullException.ThrowIfNull(acc);
        GemmKernels.Validate(args);
        if (args.Batch != 1) throw new ArgumentException($"matmul split-K (ilgpu): only a single GEMM splits, got batch {args.Batch}");
        if (splits < 2) throw new ArgumentException($"matmul split-K (ilgpu): needs at least 2 splits, got {splits}");
        if (args.M == 0 || args.N == 0) return 0;
        int chunk = Chunk(args.K, splits);
        int full = args.K / chunk, rem = args.K - full * chunk, parts = full + (rem > 0 ? 1 : 0);
        if (parts < 2) throw new ArgumentException($"matmul split-K (ilgpu): K {args.K} is too short for {splits} splits");
        long mn = (long)args.M * args.N;
        if (workspace.Length < parts * mn)
            throw new ArgumentException($"matmul split-K (ilgpu): {parts} partials of {args.M}×{args.N} need a workspace of {parts * mn} floats, got {workspace.Length}");
        // Element (m, k) of op(A) is at m·lda + k (k·lda + m when transposed); (k, n) of op(B) at k·ldb + n (n·ldb + k).
        long aStep = args.TransA ? (long)chunk * args.Lda : chunk, bStep = args.TransB ? chunk : (long)chunk * args.Ldb;
        var part = args with
        {
            C = workspace, Bias = default, Ldc = args.N, StrideC = mn, Alpha = 1f, Beta = 0f, Gelu = false,
            K = chunk, Batch = full, StrideA = aStep, StrideB = bStep,
        };
        int launches = 0;
        Run(acc, stream, part, precision, version, tile); launches++;
        if (rem > 0)
        {
            var last = part with
            {
                A = args.A.SubView(full * aStep), B = args.B.SubView(full * bStep), C = workspace.SubView(full * mn, mn),
                K = rem, Batch = 1, StrideA = 0, StrideB = 0, StrideC = 0,
            };
            Run(acc, stream, last, precision, version, tile); launches++;
        }
        var s = new GemmShape
        {
            M = args.M, N = args.N, K = parts, Ldc = args.Ldc, Alpha = args.Alpha, Beta = args.Beta,
            Flags = (args.Bias.Length > 0 ? GemmKernels.FlagBias : 0) | (args.Gelu ? GemmKernels.FlagGelu : 0),
        };
        var loaded = Cache.GetValue(acc, _ => new Loaded());
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape> k;
        lock (loaded) k = loaded.Reduce ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(ReduceKernel);
        int nt = Math.Min(256, acc.MaxNumThreadsPerGroup);
        var cfg = new KernelConfig((int)Math.Clamp((mn + nt - 1) / nt, 1, 1 << 20), nt);
        k(stream ?? acc.DefaultStream, cfg, workspace, args.C, args.Bias.Length > 0 ? args.Bias : args.C, s);
        return launches + 1;
    }

    private static void Run(Accelerator acc, AcceleratorStream? stream, in GemmArgs a, Precision precision, GemmVersion version, TensorCoreTile? tile)
    {
        if (precision == Precision.Fp32) GemmKernels.Launch(acc, stream, a, version);
        else TensorCoreGemm.Launch(acc, stream, a, precision, tile ?? TensorCoreGemm.Choose(acc, a.M, a.N, precision));
    }

    /// <summary>c[m·ldc + n] ← epilogue(Σ_z ws[z·M·N + m·N + n]) for z = 0..K−1 in order (s.K holds the partial count).</summary>
    internal static void ReduceKernel(ArrayView<float> ws, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
    {
        long mn = (long)s.M * s.N, step = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < mn; i += step)
        {
            float acc = KMath.SumStrided(ws, i, mn, s.K);
            int m = (int)(i / s.N), n = (int)(i - (long)m * s.N);
            long ci = (long)m * s.Ldc + n;
            float r = s.Alpha * acc;
            if (s.Beta != 0f) r += s.Beta * c[ci];
            if ((s.Flags & GemmKernels.FlagBias) != 0) r += bias[n];
            if ((s.Flags & GemmKernels.FlagGelu) != 0) r = ScalarMath.GeluF(r);
            c[ci] = r;
        }
    }

    /// <summary>The reduction kernel's method (for the offline PTX audit).</summary>
    public static System.Reflection.MethodInfo ReduceKernelMethod
        => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>)ReduceKernel).Method;

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>? Reduce;
    }

    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();
}
