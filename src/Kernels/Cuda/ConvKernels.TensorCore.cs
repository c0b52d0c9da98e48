using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

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
                // A tile: element i → (m = i / 16, k = i % 16), consecutive threads walk k (contiguous in w and gy)
                for (int i = tid; i < TcBM * TcBK; i += nt)
                {
                    int mm = i >> 4, kk = i & (TcBK - 1);
                    int ka = kA[cur + kk], m = m0 + mm;
                    float v = ka >= 0 && m < s.M ? a[ka + m * s.AStride] : 0f;
                    As[mm * TcAStride + kk] = TensorCoreGemm.Rounded(v, isBf16);
                }
                // B tile: element i → (k = i / 32, n = i % 32), consecutive threads walk n (output positions)
                for (int i = tid; i < TcBK * TcBN; i += nt)
                {
                    int kk = i >> 5, nn = i & (TcBN - 1);
                    float v = LoadB(b, s, cBase[nn], cH[nn], cW[nn], kBase[cur + kk], kH[cur + kk], kW[cur + kk]);
                    Bs[kk * TcBStride + nn] = TensorCoreGemm.Rounded(v, isBf16);
                }
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

    /// <summary>The tensor-core kernel method (for offline PTX compilation in tests and tools).</summary>
    public static System.Reflection.MethodInfo TensorCoreKernelMethod
        => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>)ConvGemmTcKernel).Method;

    private static Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int> TcKernel(Accelerator acc)
    {
        var l = For(acc);
        lock (l) return l.GemmTc ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>(ConvGemmTcKernel);
    }

    /// <summary>Threads per tensor-core group: exactly 4 warps on CUDA (the mma path needs them), else the largest group ≤ 128.</summary>
    private static int TcGroupSize(Accelerator acc)
        => acc.AcceleratorType == AcceleratorType.Cuda ? TensorCoreGemm.GpuGroupSize : Math.Min(TensorCoreGemm.GpuGroupSize, acc.MaxNumThreadsPerGroup);

    private static void LaunchTc(Accelerator acc, AcceleratorStream? stream, ArrayView<float> a, ArrayView<float> b, ArrayView<float> o,
        ArrayView<float> bias, ConvGemmShape s, Precision precision)
    {
        TensorCoreGemm.RequireTensorCores(acc, precision);
        int tilesM = (s.M + TcBM - 1) / TcBM, tilesN = (s.N + TcBN - 1) / TcBN;
        var cfg = new KernelConfig(new Index3D(tilesN, Math.Min(tilesM, 65535), Math.Min(s.Splits, 65535)), new Index3D(TcGroupSize(acc), 1, 1));
        var kernel = TcKernel(acc);
        CudaRuntime.CountLaunch();
        kernel(stream ?? acc.DefaultStream, cfg, a, b, o, bias.Length > 0 ? bias : o, s, precision == Precision.Bf16 ? 1 : 0);
    }
}
