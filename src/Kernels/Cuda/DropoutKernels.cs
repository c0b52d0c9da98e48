using System.Runtime.CompilerServices;
using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Dropout on ILGPU (float32) with the CPU backend's rule (<c>CpuBackend.Nn.cs</c>): element i is kept iff
/// <c>Philox.Uniform(seed, offset, i) ≥ p</c>, i.e. iff <c>(Philox.Word(seed, offset, i) &gt;&gt; 8) ≥ ⌈p·2²⁴⌉</c> (exact: both
/// sides are integers); kept elements are scaled by <c>(float)(1 / (1 − p))</c> (0 when p = 1). The kernel calls
/// <see cref="Philox.Block(ulong, ulong, out uint, out uint, out uint, out uint)"/> itself: it is plain integer maths and ILGPU
/// compiles it (checked bit for bit by <see cref="PhiloxWords"/> in the tests). Each thread handles one Philox block (four
/// consecutive elements), grid-stride; the group size is a launch parameter.
/// </summary>
internal static class DropoutKernels
{
    /// <summary>Threads per group on a GPU (clamped to what the accelerator allows; 2 on the CPU accelerator).</summary>
    public const int GpuGroupSize = 256;

    /// <summary>(word &gt;&gt; 8) ≥ threshold keeps an element: ⌈p·2²⁴⌉ (0 keeps all, 2²⁴ drops all).</summary>
    public static uint Threshold(double p) => p <= 0 ? 0u : p >= 1 ? 1u << 24 : (uint)Math.Ceiling(p * 16777216.0);

    /// <summary>The factor kept elements are multiplied by, as the CPU backend rounds it.</summary>
    public static float KeepScale(double p) => p >= 1 ? 0f : (float)(1.0 / (1.0 - p));

    internal static void DropoutKernel(ArrayView<float> x, ArrayView<float> y, ArrayView<byte> mask, int n, ulong seed, ulong offset, uint thr, float scale)
    {
        int blocks = (n + 3) >> 2;
        for (int c = Grid.GlobalIndex.X; c < blocks; c += Grid.DimX * Group.DimX)
        {
            int i = c << 2;
            // the block's four inputs loaded before any output is stored (a load after a store waits for its operand)
            float x0 = x[i], x1 = i + 1 < n ? x[i + 1] : 0f, x2 = i + 2 < n ? x[i + 2] : 0f, x3 = i + 3 < n ? x[i + 3] : 0f;
            Philox.Block(seed, offset + (ulong)c, out uint w0, out uint w1, out uint w2, out uint w3);
            Write(y, mask, i, x0, w0, thr, scale);
            if (i + 1 < n) Write(y, mask, i + 1, x1, w1, thr, scale);
            if (i + 2 < n) Write(y, mask, i + 2, x2, w2, thr, scale);
            if (i + 3 < n) Write(y, mask, i + 3, x3, w3, thr, scale);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Write(ArrayView<float> y, ArrayView<byte> mask, int i, float xi, uint w, uint thr, float scale)
    {
        bool keep = (w >> 8) >= thr;
        y[i] = keep ? xi * scale : 0f;
        mask[i] = keep ? (byte)1 : (byte)0;
    }

    /// <summary>out[i] ← Philox.Word(seed, offset, i): the in-kernel generator, for the bit-equality test.</summary>
    internal static void PhiloxWordsKernel(ArrayView<uint> output, int n, ulong seed, ulong offset)
    {
        for (int i = Grid.GlobalIndex.X; i < n; i += Grid.DimX * Group.DimX)
            output[i] = Philox.Word(seed, offset, i);
    }

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<byte>, int, ulong, ulong, uint, float>? Dropout;
        public Action<AcceleratorStream, KernelConfig, ArrayView<uint>, int, ulong, ulong>? Words;
    }

    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    private static Loaded For(Accelerator acc) => Cache.GetValue(acc, _ => new Loaded());

    internal static KernelConfig FlatConfig(Accelerator acc, long items, int groupSize)
    {
        int warp = acc.WarpSize;
        int gs = groupSize == 0 ? Math.Min(GpuGroupSize, acc.MaxNumThreadsPerGroup) / warp * warp : groupSize;
        if (gs <= 0 || gs % warp != 0 || gs > acc.MaxNumThreadsPerGroup)
            throw new ArgumentException($"dropout (cuda): group size {gs} must be a positive multiple of the warp size {warp}, at most {acc.MaxNumThreadsPerGroup}");
        long groups = (items + gs - 1) / gs;
        int cap = Math.Max(1, acc.NumMultiprocessors * 32);
        return new KernelConfig((int)Math.Clamp(groups, 1, cap), gs);
    }

    /// <summary>
    /// Inverted dropout over n contiguous floats: mask[i] ← keep ? 1 : 0, y[i] ← keep ? x[i]·(1/(1−p)) : 0, with element i
    /// of the Philox stream at (seed, offset). Enqueued on <paramref name="stream"/> (null: the default stream).
    /// </summary>
    public static void Dropout(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> y, ArrayView<byte> mask,
        int n, double p, ulong seed, ulong offset, int groupSize = 0)
    {
        const string op = "dropout (cuda)";
        ArgumentNullException.ThrowIfNull(acc);
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"{op}: probability {p} must be in [0, 1]");
        if (n < 0) throw new ArgumentException($"{op}: negative length {n}");
        if (x.Length < n || y.Length < n || mask.Length < n)
            throw new ArgumentException($"{op}: x has {x.Length}, y {y.Length}, mask {mask.Length} elements, need {n} each");
        if (n == 0) return;
        var cfg = FlatConfig(acc, ((long)n + 3) / 4, groupSize);
        var k = For(acc).Dropout ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<byte>, int, ulong, ulong, uint, float>(DropoutKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, cfg, x, y, mask, n, seed, offset, Threshold(p), KeepScale(p));
    }

    /// <summary>output[i] ← Philox.Word(seed, offset, i) for i &lt; n, computed inside a kernel.</summary>
    internal static void PhiloxWords(Accelerator acc, AcceleratorStream? stream, ArrayView<uint> output, int n, ulong seed, ulong offset)
    {
        if (n < 0 || output.Length < n) throw new ArgumentException($"philox (cuda): output has {output.Length} elements, need {n}");
        if (n == 0) return;
        var k = For(acc).Words ??= acc.LoadKernel<ArrayView<uint>, int, ulong, ulong>(PhiloxWordsKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, FlatConfig(acc, n, 0), output, n, seed, offset);
    }
}
