using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

/// <summary>
/// One strided GEMM problem for <see cref="Gemm{T}"/>: C[b] ← alpha·op(A[b])·op(B[b]) + beta·C[b] (+ bias).
/// Pointers address element [0,0] of batch 0; op(A) is M×K, op(B) is K×N, C is row-major with row stride ldc.
/// Without transA, A(i,k) = a[i·lda + k]; with it, A(i,k) = a[k·lda + i]. Likewise B(k,j) = b[k·ldb + j] or b[j·ldb + k].
/// </summary>
internal unsafe struct GemmArgs<T> where T : unmanaged
{
    public T* A, B, C, Bias;
    public int M, N, K, Batch;
    public int Lda, Ldb, Ldc;
    public long StrideA, StrideB, StrideC;
    public bool TransA, TransB;
    public T Alpha, Beta;
    /// <summary>Operand rounding (float32 only; ignored for float64): packed A and B panels are rounded to TF32 or
    /// bfloat16 as they are packed; C, the bias and the accumulator stay float32.</summary>
    public Precision Precision;
}

/// <summary>
/// Packed, cache-blocked GEMM (the Goto/BLIS scheme): B is packed into K×NR column panels and A into
/// MR×K row panels, both zero-padded to whole tiles, and an MR×NR register-blocked micro-kernel runs
/// FMAs over them. Blocking: KC along K (a B micro-panel stays in L1), MC along M (the packed A block
/// stays in L2), NC along N (the packed B block stays in L3). Work is split across threads by batch
/// and by the larger of M and N; each thread packs into its own aligned buffers.
/// </summary>
internal static unsafe class Gemm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Rows of the micro-tile.</summary>
    internal const int MR = 6;

    /// <summary>Columns of the micro-tile: two SIMD vectors (Vector512 when accelerated, else Vector256).</summary>
    internal static readonly int NR = Vector512.IsHardwareAccelerated ? 2 * Vector512<T>.Count : 2 * Vector256<T>.Count;

    /// <summary>
    /// Depth of a packed block: 256 on every machine, so each output's products are summed in the same blocks (the same
    /// bits) on AVX2 and AVX-512 machines — a K×NR micro-panel of B then takes 16 KiB with 256-bit vectors (float or
    /// double), 32 KiB with 512-bit ones. (Sized by NR, the AVX-512 machines summed in blocks of 128 and a float32
    /// ResNet-50 gradient moved by up to 2× the golden test's tolerance from the AVX2 machines' result.)
    /// </summary>
    internal const int KC = 256;

    /// <summary>Rows of a packed A block (a multiple of MR), about 128 KiB.</summary>
    internal static readonly int MC = Math.Max(MR, (131072 / (KC * Unsafe.SizeOf<T>())) / MR * MR);

    /// <summary>Columns of a packed B block (a multiple of NR).</summary>
    internal static readonly int NC = 4096 / NR * NR;

    /// <summary>Below this many multiply-adds per thread, stay on the calling thread.</summary>
    private const long MinMacsPerThread = 1L << 18;

    [ThreadStatic] private static T* t_packA;
    [ThreadStatic] private static long t_packALen;
    [ThreadStatic] private static T* t_packB;
    [ThreadStatic] private static long t_packBLen;
    [ThreadStatic] private static T* t_shared;
    [ThreadStatic] private static long t_sharedLen;

    private static T* Buffer(ref T* buf, ref long len, long need)
    {
        if (len < need)
        {
            if (buf != null) NativeMemory.AlignedFree(buf);
            buf = (T*)NativeMemory.AlignedAlloc((nuint)(need * sizeof(T)), 64);
            len = need;
        }
        return buf;
    }

    public static void Run(in GemmArgs<T> g)
    {
        if (g.M == 0 || g.N == 0 || g.Batch == 0) return;
        if (g.K == 0 || g.Alpha == T.Zero)
        {
            for (int b = 0; b < g.Batch; b++) ScaleC(g, g.C + b * g.StrideC);
            return;
        }
        long macs = (long)g.M * g.N * g.K * g.Batch;
        int threads = (int)Math.Clamp(macs / MinMacsPerThread, 1, Math.Max(1, Parallelism.MaxThreads));
        if (threads <= 1)
        {
            for (int b = 0; b < g.Batch; b++) Serial(g, b, 0, g.M, 0, g.N);
            return;
        }

        var args = g;
        var opts = new ParallelOptions { MaxDegreeOfParallelism = threads };
        if (g.Batch >= 2 * threads)
        {
            // Plenty of independent matrices: one per task, scheduled dynamically.
            Parallel.For(0, g.Batch, opts, b => Serial(args, b, 0, args.M, 0, args.N));
            return;
        }
        for (int b = 0; b < g.Batch; b++) SharedB(args, b, threads, opts);
    }

    /// <summary>
    /// One matrix on several threads: each K×NC block of B is packed once (in parallel) into a buffer all threads
    /// read, then tasks of (MC rows × a range of B panels) are handed out dynamically, each packing its own A block.
    /// Dynamic scheduling keeps both cores busy even when one of them is shared with other processes.
    /// </summary>
    private static void SharedB(GemmArgs<T> g, int b, int threads, ParallelOptions opts)
    {
        int nr = NR, K = g.K, M = g.M, N = g.N;
        T* a = g.A + b * g.StrideA, bm = g.B + b * g.StrideB, c = g.C + b * g.StrideC;
        int kcMax = KC, ncMax = Even(N, NC, nr);
        // Row blocks: at most MC rows each, a multiple of the thread count in number, and equal to within MR rows,
        // so that every thread gets the same work (9 blocks on 2 threads would idle one thread for a ninth of the time).
        int units = Ceil(M, MR), maxUnits = MC / MR;
        int mBlocks = Math.Min(units, RoundUp(Math.Max(Ceil(units, maxUnits), threads), threads));
        int mc = Ceil(units, mBlocks) * MR;   // the largest block
        int kcFirst = Math.Min(kcMax, K);
        T* pb = Buffer(ref t_shared, ref t_sharedLen, (long)RoundUp(ncMax, nr) * kcFirst);
        for (int jc = 0; jc < N; jc += ncMax)
        {
            int nc = Math.Min(ncMax, N - jc);
            int panels = Ceil(nc, nr);
            // Too few rows for one block per thread: split the columns as well.
            int nChunks = mBlocks >= threads ? 1 : Math.Max(1, Math.Min(panels, RoundUp(threads, mBlocks) / mBlocks));
            for (int pc = 0; pc < K; pc += kcMax)
            {
                int kc = Math.Min(kcMax, K - pc);
                bool first = pc == 0;
                int jcc = jc, pcc = pc;
                Parallel.For(0, panels, opts, p =>
                    PackB(g, bm, pb + (long)p * nr * kc, pcc, kc, jcc + p * nr, Math.Min(nr, nc - p * nr)));
                Parallel.For(0, mBlocks * nChunks, opts, t =>
                {
                    int ib = t / nChunks, jb = t % nChunks;
                    int ic = Math.Min(M, (int)((long)units * ib / mBlocks) * MR);
                    int mcs = Math.Min(M, (int)((long)units * (ib + 1) / mBlocks) * MR) - ic;
                    int j0 = panels * jb / nChunks * nr, j1 = Math.Min(nc, panels * (jb + 1) / nChunks * nr);
                    if (j0 >= j1) return;
                    T* pa = Buffer(ref t_packA, ref t_packALen, (long)RoundUp(mc, MR) * kcFirst);
                    PackA(g, a, pa, ic, mcs, pcc, kc);
                    Macro(g, pa, pb, c, ic, mcs, jcc, j0, j1, kc, first);
                });
            }
        }
    }

    private static int Ceil(int a, int b) => (a + b - 1) / b;
    private static int RoundUp(int a, int b) => Ceil(a, b) * b;

    /// <summary>C ← beta·C + bias when there is nothing to multiply.</summary>
    private static void ScaleC(in GemmArgs<T> g, T* c)
    {
        for (int i = 0; i < g.M; i++)
        {
            T* row = c + (long)i * g.Ldc;
            for (int j = 0; j < g.N; j++)
            {
                T v = g.Beta == T.Zero ? T.Zero : g.Beta * row[j];
                if (g.Bias != null) v += g.Bias[j];
                row[j] = v;
            }
        }
    }

    /// <summary>The single-threaded blocked GEMM on rows [m0, m1) and columns [n0, n1) of batch b.</summary>
    private static void Serial(in GemmArgs<T> g, int b, int m0, int m1, int n0, int n1)
    {
        int nr = NR, kcMax = KC, mcMax = MC, ncMax = NC;
        T* a = g.A + b * g.StrideA, bm = g.B + b * g.StrideB, c = g.C + b * g.StrideC;
        int K = g.K;
        int kcFirst = Math.Min(kcMax, K);
        int ncAll = Math.Min(ncMax, n1 - n0), mcAll = Math.Min(mcMax, m1 - m0);
        T* pa = Buffer(ref t_packA, ref t_packALen, (long)((mcAll + MR - 1) / MR * MR) * kcFirst);
        T* pb = Buffer(ref t_packB, ref t_packBLen, (long)((ncAll + nr - 1) / nr * nr) * kcFirst);
        // Even out the blocks so that no block is a thin remainder (e.g. 130 rows → 66 + 64, not 126 + 4).
        mcMax = Even(m1 - m0, mcMax, MR);
        ncMax = Even(n1 - n0, ncMax, nr);
        for (int jc = n0; jc < n1; jc += ncMax)
        {
            int nc = Math.Min(ncMax, n1 - jc);
            for (int pc = 0; pc < K; pc += kcMax)
            {
                int kc = Math.Min(kcMax, K - pc);
                bool first = pc == 0;
                PackB(g, bm, pb, pc, kc, jc, nc);
                for (int ic = m0; ic < m1; ic += mcMax)
                {
                    int mc = Math.Min(mcMax, m1 - ic);
                    PackA(g, a, pa, ic, mc, pc, kc);
                    Macro(g, pa, pb, c, ic, mc, jc, 0, nc, kc, first);
                }
            }
        }
    }

    /// <summary>
    /// The macro-kernel: C[ic:ic+mc, jc+j0:jc+j1] from a packed A block and the packed B panels starting at
    /// column j0 of the packed block (j0 a multiple of NR).
    /// </summary>
    private static void Macro(in GemmArgs<T> g, T* pa, T* pb, T* c, int ic, int mc, int jc, int j0, int j1, int kc, bool first)
    {
        int nr = NR;
        T* tile = stackalloc T[MR * 2 * Vector512<T>.Count];
        for (int jr = j0; jr < j1; jr += nr)
        {
            int nv = Math.Min(nr, j1 - jr);
            T* bp = pb + (long)jr * kc;
            T* bias = first && g.Bias != null ? g.Bias + jc + jr : null;
            for (int ir = 0; ir < mc; ir += MR)
            {
                int mv = Math.Min(MR, mc - ir);
                T* cp = c + (long)(ic + ir) * g.Ldc + jc + jr;
                if (Vector512.IsHardwareAccelerated)
                    Kernel512(kc, pa + (long)ir * kc, bp, cp, g.Ldc, mv, nv, g.Alpha, g.Beta, first, bias, tile);
                else
                    Kernel256(kc, pa + (long)ir * kc, bp, cp, g.Ldc, mv, nv, g.Alpha, g.Beta, first, bias, tile);
            }
        }
    }

    /// <summary>The block size (a multiple of <paramref name="align"/>, at most <paramref name="max"/>) that cuts <paramref name="extent"/> into equal blocks.</summary>
    private static int Even(int extent, int max, int align)
    {
        int blocks = (extent + max - 1) / max;
        int size = (extent + blocks - 1) / blocks;
        return Math.Min(max, (size + align - 1) / align * align);
    }

    // ------------------------------------------------------------------ packing

    /// <summary>Packs op(A)[i0:i0+mc, p0:p0+kc] into MR-row panels: panel r holds, for each k, MR consecutive values.</summary>
    private static void PackA(in GemmArgs<T> g, T* a, T* dst, int i0, int mc, int p0, int kc)
    {
        long lda = g.Lda;
        for (int r = 0; r < mc; r += MR)
        {
            int rows = Math.Min(MR, mc - r);
            T* d = dst + (long)r * kc;
            if (!g.TransA)
            {
                T* src = a + (i0 + r) * lda + p0;
                if (rows == MR)
                {
                    T* r0 = src, r1 = src + lda, r2 = src + 2 * lda, r3 = src + 3 * lda, r4 = src + 4 * lda, r5 = src + 5 * lda;
                    for (int k = 0; k < kc; k++, d += MR)
                    {
                        d[0] = r0[k]; d[1] = r1[k]; d[2] = r2[k]; d[3] = r3[k]; d[4] = r4[k]; d[5] = r5[k];
                    }
                }
                else
                {
                    for (int k = 0; k < kc; k++, d += MR)
                        for (int i = 0; i < MR; i++) d[i] = i < rows ? src[i * lda + k] : T.Zero;
                }
            }
            else
            {
                T* src = a + (long)p0 * lda + i0 + r;
                if (rows == MR)
                {
                    for (int k = 0; k < kc; k++, d += MR, src += lda)
                    {
                        d[0] = src[0]; d[1] = src[1]; d[2] = src[2]; d[3] = src[3]; d[4] = src[4]; d[5] = src[5];
                    }
                }
                else
                {
                    for (int k = 0; k < kc; k++, d += MR, src += lda)
                        for (int i = 0; i < MR; i++) d[i] = i < rows ? src[i] : T.Zero;
                }
            }
        }
        if (g.Precision != Precision.Fp32 && typeof(T) == typeof(float)) RoundPanel((uint*)dst, (long)RoundUp(mc, MR) * kc, g.Precision);
    }

    /// <summary>Packs op(B)[p0:p0+kc, j0:j0+nc] into NR-column panels: panel c holds, for each k, NR consecutive values.</summary>
    private static void PackB(in GemmArgs<T> g, T* bm, T* dst, int p0, int kc, int j0, int nc)
    {
        int nr = NR;
        long ldb = g.Ldb;
        for (int c = 0; c < nc; c += nr)
        {
            int cols = Math.Min(nr, nc - c);
            T* d = dst + (long)c * kc;
            if (!g.TransB)
            {
                T* src = bm + p0 * ldb + j0 + c;
                if (cols == nr)
                {
                    int w = Vector256<T>.Count;
                    for (int k = 0; k < kc; k++, d += nr, src += ldb)
                        for (int j = 0; j < nr; j += w) Vector256.Store(Vector256.Load(src + j), d + j);
                }
                else
                {
                    for (int k = 0; k < kc; k++, d += nr, src += ldb)
                        for (int j = 0; j < nr; j++) d[j] = j < cols ? src[j] : T.Zero;
                }
            }
            else
            {
                // B(k, j) = b[j·ldb + k]: read `cols` rows of B side by side, 4 k at a time.
                T* src = bm + (long)(j0 + c) * ldb + p0;
                int k = 0;
                for (; k + 4 <= kc; k += 4, d += 4 * nr)
                {
                    for (int j = 0; j < cols; j++)
                    {
                        T* s = src + j * ldb + k;
                        d[j] = s[0]; d[nr + j] = s[1]; d[2 * nr + j] = s[2]; d[3 * nr + j] = s[3];
                    }
                    for (int j = cols; j < nr; j++) { d[j] = T.Zero; d[nr + j] = T.Zero; d[2 * nr + j] = T.Zero; d[3 * nr + j] = T.Zero; }
                }
                for (; k < kc; k++, d += nr)
                    for (int j = 0; j < nr; j++) d[j] = j < cols ? src[j * ldb + k] : T.Zero;
            }
        }
        if (g.Precision != Precision.Fp32 && typeof(T) == typeof(float)) RoundPanel((uint*)dst, (long)RoundUp(nc, nr) * kc, g.Precision);
    }

    /// <summary>
    /// Rounds <paramref name="n"/> packed float32 operands in place (bit patterns) to TF32 or bfloat16, with exactly the
    /// rules of <see cref="PrecisionRounding.Tf32Bits"/> / <see cref="PrecisionRounding.Bf16Bits"/> (zero padding stays zero).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // no slow tier-0 Vector256 code while a run warms up
    private static void RoundPanel(uint* p, long n, Precision precision)
    {
        bool tf32 = precision == Precision.Tf32;
        uint keep = tf32 ? 0xFFFFE000u : 0xFFFF0000u;
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vKeep = Vector256.Create(keep);
            var vAbs = Vector256.Create(0x7FFFFFFFu);
            var vInf = Vector256.Create(0x7F800000u);
            var vQuiet = Vector256.Create(0x00400000u);
            var vHalf = Vector256.Create(tf32 ? 0x1000u : 0x7FFFu);
            var vOne = Vector256.Create(1u);
            for (; i + Vector256<uint>.Count <= n; i += Vector256<uint>.Count)
            {
                var u = Vector256.Load(p + i);
                var nan = Vector256.GreaterThan(u & vAbs, vInf);
                var add = tf32 ? vHalf : vHalf + (Vector256.ShiftRightLogical(u, 16) & vOne);
                var r = Vector256.ConditionalSelect(nan, u | vQuiet, u + add) & vKeep;
                Vector256.Store(r, p + i);
            }
        }
        if (tf32) for (; i < n; i++) p[i] = PrecisionRounding.Tf32Bits(p[i]);
        else for (; i < n; i++) p[i] = (uint)PrecisionRounding.Bf16Bits(p[i]) << 16;
    }

    // ------------------------------------------------------------------ micro-kernels

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<T> Fma(Vector256<T> a, Vector256<T> b, Vector256<T> c)
    {
        if (System.Runtime.Intrinsics.X86.Fma.IsSupported)
        {
            if (typeof(T) == typeof(float)) return System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
            if (typeof(T) == typeof(double)) return System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
        }
        return a * b + c;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> Fma(Vector512<T> a, Vector512<T> b, Vector512<T> c)
    {
        if (Avx512F.IsSupported)
        {
            if (typeof(T) == typeof(float)) return Avx512F.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
            if (typeof(T) == typeof(double)) return Avx512F.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
        }
        return a * b + c;
    }

    /// <summary>
    /// C[0:mv, 0:nv] ← alpha·Ap·Bp (+ beta·C + bias when <paramref name="first"/>, else + C), for an MR×NR
    /// tile with NR = 2·Vector256 width. Full tiles store straight into C; edge tiles go through <paramref name="tile"/>.
    /// </summary>
    private static void Kernel256(int kc, T* ap, T* bp, T* c, int ldc, int mv, int nv, T alpha, T beta, bool first, T* bias, T* tile)
    {
        int w = Vector256<T>.Count;
        Vector256<T> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<T> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int k = 0; k < kc; k++)
        {
            var b0 = Vector256.Load(bp);
            var b1 = Vector256.Load(bp + w);
            var a0 = Vector256.Create(ap[0]); c00 = Fma(a0, b0, c00); c01 = Fma(a0, b1, c01);
            var a1 = Vector256.Create(ap[1]); c10 = Fma(a1, b0, c10); c11 = Fma(a1, b1, c11);
            var a2 = Vector256.Create(ap[2]); c20 = Fma(a2, b0, c20); c21 = Fma(a2, b1, c21);
            var a3 = Vector256.Create(ap[3]); c30 = Fma(a3, b0, c30); c31 = Fma(a3, b1, c31);
            var a4 = Vector256.Create(ap[4]); c40 = Fma(a4, b0, c40); c41 = Fma(a4, b1, c41);
            var a5 = Vector256.Create(ap[5]); c50 = Fma(a5, b0, c50); c51 = Fma(a5, b1, c51);
            ap += MR; bp += 2 * w;
        }
        var va = Vector256.Create(alpha);
        if (mv == MR && nv == 2 * w)
        {
            var vb = Vector256.Create(beta);
            Vector256<T> bias0 = bias != null ? Vector256.Load(bias) : default, bias1 = bias != null ? Vector256.Load(bias + w) : default;
            Store256(c, c00 * va, c01 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store256(c, c10 * va, c11 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store256(c, c20 * va, c21 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store256(c, c30 * va, c31 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store256(c, c40 * va, c41 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store256(c, c50 * va, c51 * va, w, first, beta, vb, bias, bias0, bias1);
        }
        else
        {
            int n = 2 * w;
            (c00 * va).Store(tile); (c01 * va).Store(tile + w);
            (c10 * va).Store(tile + n); (c11 * va).Store(tile + n + w);
            (c20 * va).Store(tile + 2 * n); (c21 * va).Store(tile + 2 * n + w);
            (c30 * va).Store(tile + 3 * n); (c31 * va).Store(tile + 3 * n + w);
            (c40 * va).Store(tile + 4 * n); (c41 * va).Store(tile + 4 * n + w);
            (c50 * va).Store(tile + 5 * n); (c51 * va).Store(tile + 5 * n + w);
            MergeEdge(tile, n, c, ldc, mv, nv, beta, first, bias);
        }
    }

    /// <summary>As <see cref="Kernel256"/> with NR = 2·Vector512 width (AVX-512 machines).</summary>
    private static void Kernel512(int kc, T* ap, T* bp, T* c, int ldc, int mv, int nv, T alpha, T beta, bool first, T* bias, T* tile)
    {
        int w = Vector512<T>.Count;
        Vector512<T> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<T> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int k = 0; k < kc; k++)
        {
            var b0 = Vector512.Load(bp);
            var b1 = Vector512.Load(bp + w);
            var a0 = Vector512.Create(ap[0]); c00 = Fma(a0, b0, c00); c01 = Fma(a0, b1, c01);
            var a1 = Vector512.Create(ap[1]); c10 = Fma(a1, b0, c10); c11 = Fma(a1, b1, c11);
            var a2 = Vector512.Create(ap[2]); c20 = Fma(a2, b0, c20); c21 = Fma(a2, b1, c21);
            var a3 = Vector512.Create(ap[3]); c30 = Fma(a3, b0, c30); c31 = Fma(a3, b1, c31);
            var a4 = Vector512.Create(ap[4]); c40 = Fma(a4, b0, c40); c41 = Fma(a4, b1, c41);
            var a5 = Vector512.Create(ap[5]); c50 = Fma(a5, b0, c50); c51 = Fma(a5, b1, c51);
            ap += MR; bp += 2 * w;
        }
        var va = Vector512.Create(alpha);
        if (mv == MR && nv == 2 * w)
        {
            var vb = Vector512.Create(beta);
            Vector512<T> bias0 = bias != null ? Vector512.Load(bias) : default, bias1 = bias != null ? Vector512.Load(bias + w) : default;
            Store512(c, c00 * va, c01 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store512(c, c10 * va, c11 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store512(c, c20 * va, c21 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store512(c, c30 * va, c31 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store512(c, c40 * va, c41 * va, w, first, beta, vb, bias, bias0, bias1); c += ldc;
            Store512(c, c50 * va, c51 * va, w, first, beta, vb, bias, bias0, bias1);
        }
        else
        {
            int n = 2 * w;
            (c00 * va).Store(tile); (c01 * va).Store(tile + w);
            (c10 * va).Store(tile + n); (c11 * va).Store(tile + n + w);
            (c20 * va).Store(tile + 2 * n); (c21 * va).Store(tile + 2 * n + w);
            (c30 * va).Store(tile + 3 * n); (c31 * va).Store(tile + 3 * n + w);
            (c40 * va).Store(tile + 4 * n); (c41 * va).Store(tile + 4 * n + w);
            (c50 * va).Store(tile + 5 * n); (c51 * va).Store(tile + 5 * n + w);
            MergeEdge(tile, n, c, ldc, mv, nv, beta, first, bias);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store256(T* dst, Vector256<T> v0, Vector256<T> v1, int w, bool first, T beta, Vector256<T> vb, T* bias, Vector256<T> bias0, Vector256<T> bias1)
    {
        if (!first) { v0 += Vector256.Load(dst); v1 += Vector256.Load(dst + w); }
        else
        {
            if (beta != T.Zero) { v0 = Fma(vb, Vector256.Load(dst), v0); v1 = Fma(vb, Vector256.Load(dst + w), v1); }
            if (bias != null) { v0 += bias0; v1 += bias1; }
        }
        Vector256.Store(v0, dst); Vector256.Store(v1, dst + w);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512(T* dst, Vector512<T> v0, Vector512<T> v1, int w, bool first, T beta, Vector512<T> vb, T* bias, Vector512<T> bias0, Vector512<T> bias1)
    {
        if (!first) { v0 += Vector512.Load(dst); v1 += Vector512.Load(dst + w); }
        else
        {
            if (beta != T.Zero) { v0 = Fma(vb, Vector512.Load(dst), v0); v1 = Fma(vb, Vector512.Load(dst + w), v1); }
            if (bias != null) { v0 += bias0; v1 += bias1; }
        }
        Vector512.Store(v0, dst); Vector512.Store(v1, dst + w);
    }

    /// <summary>Writes the valid mv×nv corner of an alpha-scaled tile into C with the same rule as full tiles.</summary>
    private static void MergeEdge(T* tile, int tileStride, T* c, int ldc, int mv, int nv, T beta, bool first, T* bias)
    {
        for (int i = 0; i < mv; i++)
        {
            T* src = tile + i * tileStride;
            T* dst = c + (long)i * ldc;
            for (int j = 0; j < nv; j++)
            {
                T v = src[j];
                if (!first) v += dst[j];
                else
                {
                    if (beta != T.Zero) v += beta * dst[j];
                    if (bias != null) v += bias[j];
                }
                dst[j] = v;
            }
        }
    }
}
