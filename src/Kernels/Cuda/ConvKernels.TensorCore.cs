using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// The tensor-core implicit-GEMM convolution behind <see cref="MatMulPrecision"/> (issue 7; PyTorch's default has cuDNN
/// TF32 on for convolutions). Same three GEMMs (<see cref="ConvMode"/>), coordinate tables, split-K and output contract as
/// <see cref="ConvGemmKernel"/>; the tile and inner product are <see cref="TensorCoreGemm"/>'s: a group computes a 64×32
/// tile, K advances in steps of 16, each step stages A (64×16) and B (16×32) in shared memory as rounded operands (TF32 or
/// bfloat16, once per element as it is stored, zero outside), so the operands are exactly those the CPU backend's packed
/// GEMM rounds in its im2col path, and accumulation is float32. On CUDA (<see cref="CudaAsm.IsSupported"/>) 4 warps issue
/// <c>mma.sync</c> through <see cref="TensorCoreGemm.WarpStage"/> (m16n8k8 TF32 twice, or m16n8k16 bf16 once, per n8 tile
/// and step); elsewhere (ILGPU's CPU accelerator) <see cref="TensorCoreGemm.EmuStage"/> emulates those mma instructions
/// from the same fragments (float32 accumulation in the shared C tile), so CI checks the fragment mapping too.
/// <para>
/// Status: the portable path is what CI tests (emulator, against the CPU backend at the same precision); the kernel
/// compiles to PTX for sm_90 with both mma forms. The mma path has NOT run on a GPU: correctness and speed are owed.
/// </para>
/// </summary>
public static partial class ConvKernels
{
    private const int TcBM = TensorCoreGemm.BM, TcBN = TensorCoreGemm.BN, TcBK = TensorCoreGemm.BK;
    private const int TcAStride = TensorCoreGemm.AStride, TcBStride = TensorCoreGemm.BStride;

    private static void StoreTc(ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int zOff, int m, int col, float v)
    {
        if (m >= s.M || col < 0) return;
        o[col + m * s.OutStride + zOff] = v + (s.HasBias != 0 ? bias[m] : 0f);
    }

    /// <summary>
    /// Stages one K step of a tensor-core tile, every operand rounded once as it is stored: A rows m0.. (bm × 16,
    /// As[m·20 + k], element i → (m = i / 16, k = i % 16): consecutive threads walk k, contiguous in w and gy) through the K-row
    /// tables at <paramref name="cur"/>, and B (16 × 2^<paramref name="bnShift"/>, Bs[k·bStride + n], element i → (k, n = i mod
    /// the width): consecutive threads walk n, the output positions) through the column tables. Called with constants, so
    /// ILGPU folds the sizes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StageTcStep(ArrayView<float> a, ArrayView<float> b, ConvGemmShape s, ArrayView<uint> As, ArrayView<uint> Bs,
        int bm, int bnShift, int bStride, int m0, int cur, ArrayView<int> cBase, ArrayView<int> cH, ArrayView<int> cW,
        ArrayView<int> kA, ArrayView<int> kBase, ArrayView<int> kH, ArrayView<int> kW, bool isBf16, int tid, int nt)
    {
        for (int i = tid; i < bm * TcBK; i += nt)
        {
            int mm = i >> 4, kk = i & (TcBK - 1);
            int ka = kA[cur + kk], m = m0 + mm;
            float v = ka >= 0 && m < s.M ? a[ka + m * s.AStride] : 0f;
            As[mm * TcAStride + kk] = TensorCoreGemm.Rounded(v, isBf16);
        }
        int bn = 1 << bnShift;
        for (int i = tid; i < TcBK * bn; i += nt)
        {
            int kk = i >> bnShift, nn = i & (bn - 1);
            float v = LoadB(b, s, cBase[nn], cH[nn], cW[nn], kBase[cur + kk], kH[cur + kk], kW[cur + kk]);
            Bs[kk * bStride + nn] = TensorCoreGemm.Rounded(v, isBf16);
        }
    }

    /// <summary>
    /// The tensor-core kernel for all three modes (grid x = column tiles of 32, y = row tiles of 64, z = split-K chunks, each
    /// grid-strided). <paramref name="bf16"/> ≠ 0: operands rounded to bfloat16, else to TF32.
    /// </summary>
    internal static void ConvGemmTcKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int bf16)
    {
        var As = SharedMemory.Allocate<uint>(TcBM * TcAStride);   // As[m·20 + k], rounded operand bits
        var Bs = SharedMemory.Allocate<uint>(TcBK * TcBStride);   // Bs[k·40 + n]
        var Cs = SharedMemory.Allocate<float>(TcBM * TcBN);       // the C tile: the epilogue's input; the portable path's accumulators
        var cBase = SharedMemory.Allocate<int>(TcBN);
        var cH = SharedMemory.Allocate<int>(TcBN);
        var cW = SharedMemory.Allocate<int>(TcBN);
        var cOut = SharedMemory.Allocate<int>(TcBN);
        var kA = SharedMemory.Allocate<int>(2 * TcBK);
        var kBase = SharedMemory.Allocate<int>(2 * TcBK);
        var kH = SharedMemory.Allocate<int>(2 * TcBK);
        var kW = SharedMemory.Allocate<int>(2 * TcBK);
        bool isBf16 = bf16 != 0;
        int tid = Group.IdxX, nt = Group.DimX;
        int warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3, r0 = warp * 16;
        if (CudaAsm.IsSupported) TensorCoreGemm.DeclareAccumulators();
        int tilesM = (s.M + TcBM - 1) / TcBM, tilesN = (s.N + TcBN - 1) / TcBN;
        for (int kz = Grid.IdxZ; kz < s.Splits; kz += Grid.DimZ)
        for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
        for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
        {
            int m0 = tm * TcBM, n0 = tn * TcBN;
            int kLo = kz * s.KChunk, kEnd = XMin(s.K, kLo + s.KChunk), zOff = kz * s.SplitStride;
            int kTiles = (kEnd - kLo + TcBK - 1) / TcBK;
            if (CudaAsm.IsSupported) TensorCoreGemm.ZeroAccumulators();
            else
                for (int e = tid; e < TcBM * TcBN; e += nt) Cs[e] = 0f;
            for (int e = tid; e < TcBN; e += nt) Column(s, n0 + e, cBase, cH, cW, cOut, e);
            for (int e = tid; e < TcBK; e += nt) KRow(s, kLo + e, kEnd, kA, kBase, kH, kW, e);
            Group.Barrier();
            for (int kt = 0; kt < kTiles; kt++)
            {
                int cur = (kt & 1) * TcBK, nxt = TcBK - cur;
                int k0 = kt * TcBK;
                StageTcStep(a, b, s, As, Bs, TcBM, 5, TcBStride, m0, cur, cBase, cH, cW, kA, kBase, kH, kW, isBf16, tid, nt);
                Group.Barrier();
                // the next tile's K rows (buffer nxt was last read before the previous barrier)
                if (kt + 1 < kTiles)
                    for (int e = tid; e < TcBK; e += nt) KRow(s, kLo + k0 + TcBK + e, kEnd, kA, kBase, kH, kW, nxt + e);
                if (CudaAsm.IsSupported)
                {
                    if (warp < TcBM / 16) TensorCoreGemm.WarpStage(As, Bs, r0, g, t, isBf16);
                }
                else
                    TensorCoreGemm.EmuStage(As, Bs, Cs, isBf16, tid, nt);
                Group.Barrier();
            }
            if (CudaAsm.IsSupported)
            {
                if (warp < TcBM / 16) TensorCoreGemm.SpillAccumulators(Cs, r0, g, t);
                Group.Barrier();
            }
            for (int e = tid; e < TcBM * TcBN; e += nt) StoreTc(o, bias, s, zOff, m0 + e / TcBN, cOut[e % TcBN], Cs[e]);
            Group.Barrier();   // the column table (and Cs) are rewritten for the next tile only after every thread has read them
        }
    }

    /// <summary>
    /// The 128×64 tensor-core tile for all three modes (<see cref="TensorCoreTile.Tile128x64"/>): grid x = column tiles of 64,
    /// y = row tiles of 128, z = split-K chunks. 8 warps, each a 32×32 sub-tile through <see cref="TensorCoreGemm.WarpStage128"/>
    /// (elsewhere <see cref="TensorCoreGemm.EmuStage128"/>), with the same coordinate tables and operand rounding as
    /// <see cref="ConvGemmTcKernel"/>, so every output sees the same mma instructions in the same order: bitwise the same
    /// result. Single-buffered stages (unlike the GEMM's 128×64 tile: the gathered B operand is read through the K-row tables,
    /// which the prefetch would have to run a stage ahead). Shared memory: one 9,216-word buffer (A 128×20 at 0, B 16×72 at
    /// 2,560; after the k loop the 128×72 C tile) plus 1.5 KB of tables; the portable path's accumulators are dynamic shared
    /// memory that only non-CUDA launches request.
    /// </summary>
    internal static void ConvGemmTc128Kernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int bf16)
    {
        const int bm = TensorCoreGemm.BM2, bn = TensorCoreGemm.BN2, bStride = TensorCoreGemm.B2Stride, cStride = TensorCoreGemm.C2Stride;
        const int aWords = TensorCoreGemm.A2Words, bWords = TensorCoreGemm.B2Words;
        var sh = SharedMemory.Allocate<uint>(TensorCoreGemm.Shared2Words);
        var As = sh.SubView(0, aWords);               // As[m·20 + k], rounded operand bits
        var Bs = sh.SubView(aWords, bWords);          // Bs[k·72 + n]
        var Cs = sh.Cast<float>();                    // the C tile after the k loop (CUDA path)
        var Ce = SharedMemory.GetDynamic<float>();    // the portable path's emulated accumulators (never requested on CUDA)
        var cBase = SharedMemory.Allocate<int>(bn);
        var cH = SharedMemory.Allocate<int>(bn);
        var cW = SharedMemory.Allocate<int>(bn);
        var cOut = SharedMemory.Allocate<int>(bn);
        var kA = SharedMemory.Allocate<int>(2 * TcBK);
        var kBase = SharedMemory.Allocate<int>(2 * TcBK);
        var kH = SharedMemory.Allocate<int>(2 * TcBK);
        var kW = SharedMemory.Allocate<int>(2 * TcBK);
        bool isBf16 = bf16 != 0;
        int tid = Group.IdxX, nt = Group.DimX;
        int warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3;
        int r0 = TensorCoreGemm.WarpRow(warp), c0 = TensorCoreGemm.WarpCol(warp);
        if (CudaAsm.IsSupported) TensorCoreGemm.DeclareAccumulators128();
        int tilesM = (s.M + bm - 1) / bm, tilesN = (s.N + bn - 1) / bn;
        for (int kz = Grid.IdxZ; kz < s.Splits; kz += Grid.DimZ)
        for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
        for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
        {
            int m0 = tm * bm, n0 = tn * bn;
            int kLo = kz * s.KChunk, kEnd = XMin(s.K, kLo + s.KChunk), zOff = kz * s.SplitStride;
            int kTiles = (kEnd - kLo + TcBK - 1) / TcBK;
            if (CudaAsm.IsSupported) TensorCoreGemm.ZeroAccumulators128();
            else
                for (int e = tid; e < TensorCoreGemm.C2Words; e += nt) Ce[e] = 0f;
            for (int e = tid; e < bn; e += nt) Column(s, n0 + e, cBase, cH, cW, cOut, e);
            for (int e = tid; e < TcBK; e += nt) KRow(s, kLo + e, kEnd, kA, kBase, kH, kW, e);
            Group.Barrier();
            for (int kt = 0; kt < kTiles; kt++)
            {
                int cur = (kt & 1) * TcBK, nxt = TcBK - cur;
                int k0 = kt * TcBK;
                StageTcStep(a, b, s, As, Bs, bm, 6, bStride, m0, cur, cBase, cH, cW, kA, kBase, kH, kW, isBf16, tid, nt);
                Group.Barrier();
                // the next tile's K rows (buffer nxt was last read before the previous barrier)
                if (kt + 1 < kTiles)
                    for (int e = tid; e < TcBK; e += nt) KRow(s, kLo + k0 + TcBK + e, kEnd, kA, kBase, kH, kW, nxt + e);
                if (CudaAsm.IsSupported)
                    TensorCoreGemm.WarpStage128(As, Bs, r0, c0, g, t, isBf16);
                else
                    TensorCoreGemm.EmuStage128(As, Bs, Ce, isBf16, tid, nt);
                Group.Barrier();
            }
            if (CudaAsm.IsSupported)
            {
                // the last barrier of the k loop (or the table barrier) ends every read of As/Bs, which Cs overlaps
                TensorCoreGemm.SpillAccumulators128(Cs, r0, c0, g, t);
                Group.Barrier();
                for (int e = tid; e < bm * bn; e += nt) StoreTc(o, bias, s, zOff, m0 + e / bn, cOut[e % bn], Cs[e / bn * cStride + e % bn]);
            }
            else
                for (int e = tid; e < bm * bn; e += nt) StoreTc(o, bias, s, zOff, m0 + e / bn, cOut[e % bn], Ce[e / bn * cStride + e % bn]);
            Group.Barrier();   // the column table and the C tile are rewritten for the next tile only after every thread has read them
        }
    }

    /// <summary>The tensor-core kernel method (for offline PTX compilation in tests and tools).</summary>
    public static System.Reflection.MethodInfo TensorCoreKernelMethod => TensorCoreKernelMethodFor(TensorCoreTile.Tile64x32);

    /// <summary>The tensor-core kernel method of a tile (for offline PTX compilation in tests and tools).</summary>
    public static System.Reflection.MethodInfo TensorCoreKernelMethodFor(TensorCoreTile tile) => tile switch
    {
        TensorCoreTile.Tile64x32 => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>)ConvGemmTcKernel).Method,
        TensorCoreTile.Tile128x64 => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>)ConvGemmTc128Kernel).Method,
        _ => throw new ArgumentOutOfRangeException(nameof(tile), tile, "tensor-core convolution: unknown tile"),
    };

    private static Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int> TcKernel(Accelerator acc, TensorCoreTile tile)
    {
        var l = For(acc);
        lock (l)
            return tile == TensorCoreTile.Tile128x64
                ? l.GemmTc128 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>(ConvGemmTc128Kernel,
                    acc.AcceleratorType == AcceleratorType.Cuda ? TensorCoreGemm.CudaLaunchBounds(tile) : default)
                : l.GemmTc ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>(ConvGemmTcKernel);
    }

    private static void LaunchTc(Accelerator acc, AcceleratorStream? stream, ArrayView<float> a, ArrayView<float> b, ArrayView<float> o,
        ArrayView<float> bias, ConvGemmShape s, Precision precision, TensorCoreTile tile)
    {
        if (tile is not (TensorCoreTile.Tile64x32 or TensorCoreTile.Tile128x64))
            throw new ArgumentOutOfRangeException(nameof(tile), tile, "conv2d (tensor cores): unknown tile");
        TensorCoreGemm.RequireTensorCores(acc, precision);
        var (tm, tn) = TensorCoreGemm.TileShape(tile);
        int tilesM = (s.M + tm - 1) / tm, tilesN = (s.N + tn - 1) / tn;
        var grid = new Index3D(tilesN, Math.Min(tilesM, 65535), Math.Min(s.Splits, 65535));
        var group = new Index3D(TensorCoreGemm.GroupSize(acc, tile), 1, 1);
        // the 128×64 tile's portable path keeps its emulated accumulators in dynamic shared memory; CUDA requests none
        var cfg = tile == TensorCoreTile.Tile128x64 && acc.AcceleratorType != AcceleratorType.Cuda
            ? new KernelConfig(grid, group, SharedMemoryConfig.RequestDynamic<float>(TensorCoreGemm.C2Words))
            : new KernelConfig(grid, group);
        var kernel = TcKernel(acc, tile);
        CudaRuntime.CountLaunch();
        kernel(stream ?? acc.DefaultStream, cfg, a, b, o, bias.Length > 0 ? bias : o, s, precision == Precision.Bf16 ? 1 : 0);
    }
}
