using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>Which implicit-GEMM kernel a convolution runs (the kernel lab times both; <see cref="ConvKernels.Choose"/> picks one).</summary>
public enum ConvVersion
{
    /// <summary>Pick by shape (<see cref="ConvKernels.Choose"/>).</summary>
    Auto = 0,
    /// <summary>v1: 64×64 tile, K tiles of 16, 4×4 outputs per thread (rows/cols strided by 16), scalar shared loads.</summary>
    Tile64 = 1,
    /// <summary>v2: 128×128 tile, K tiles of 8, 8×8 outputs per thread, 128-bit shared loads (4 FMAs per shared float vs 2).</summary>
    Tile128 = 2,
    /// <summary>v3: v2's tile and micro-tile with double-buffered shared tiles, the next K tile prefetched into registers
    /// during the current one's FMAs, one barrier per K tile, packed 16-byte table entries (ConvKernels.Prefetch.cs).</summary>
    Tile128Prefetch = 3,
    /// <summary>v4: a 64×64 tile run by 64 threads (2 warps), each v2's 8×8 float4 micro-tile, with v3's prefetch (the same
    /// kernel body, generic over the tile): v1's grid with v2's 64 FMAs per 4 shared loads.</summary>
    Tile64Prefetch = 4,
}

/// <summary>Which of the three convolution GEMMs one <see cref="ConvGemmShape"/> describes.</summary>
internal enum ConvMode
{
    /// <summary>y[n, co, p] = Σ_k w[co, k] · x̃[k, (n, p)]: M = Cout, N = batch·Ho·Wo, K = Cin·Kh·Kw.</summary>
    Forward = 0,
    /// <summary>gx[n, ci, q] = Σ_(co,kh,kw) w[co, ci, kh, kw] · gy at the output that tap hits: M = Cin, N = batch·H·W, K = Cout·Kh·Kw.</summary>
    BackwardInput = 1,
    /// <summary>gw[co, (ci,kh,kw)] = Σ_(n,p) gy[n, co, p] · x̃[(ci,kh,kw), (n, p)]: M = Cout, N = Cin·Kh·Kw, K = batch·Ho·Wo.</summary>
    BackwardWeight = 2,
}

/// <summary>The scalar arguments of the implicit-GEMM convolution kernel (one struct: ILGPU's typed loaders stop at 14 parameters).</summary>
public struct ConvGemmShape
{
    public int Mode, M, N, K;
    public int Batch, Cin, H, W, Cout, Kh, Kw, Ho, Wo;
    public int Sh, Sw, Pt, Pl, Dh, Dw;
    /// <summary>Distance in A between consecutive rows m (A(m, k) = a[kA(k) + m·AStride]).</summary>
    public int AStride;
    /// <summary>Distance in the output between consecutive rows m (out[colOut(n) + m·OutStride]).</summary>
    public int OutStride;
    public int HasBias;
    /// <summary>Split-K: the K range is cut into <see cref="Splits"/> chunks of <see cref="KChunk"/> (a multiple of 16); chunk z
    /// writes its partial product at output offset z·<see cref="SplitStride"/> (a workspace), reduced in order afterwards.</summary>
    public int Splits, KChunk, SplitStride;
}

/// <summary>The scalar arguments of the pooling kernels.</summary>
public struct PoolShape
{
    public int Planes, H, W, Ho, Wo, Kh, Kw, Sh, Sw, Ph, Pw;
}

/// <summary>
/// Convolution and pooling kernels for the CUDA backend (issue 3), float32, NCHW, contiguous.
/// <para>
/// Convolution is an <b>implicit GEMM</b>: no im2col buffer exists in global memory. The three GEMMs (forward,
/// backward-input, backward-weight; see <see cref="ConvMode"/>) share one kernel whose tile loader computes the input
/// coordinates on the fly. Per output tile, the group first tabulates in shared memory, for each of its BN columns,
/// the image base offset and the top-left input coordinate; per K tile, for each of its BK rows, the channel offset
/// and the (dilated) tap offset. A B-tile element is then two shared loads, two adds and a bounds test (no integer
/// division in the inner loader, except the stride test of backward-input when the stride is above 1). The K-row
/// table of the next tile is computed while the current tile is multiplied (double-buffered), so it costs no barrier.
/// Backward-input is a gather (each input-gradient element sums over the taps that reach it), so no atomics: all
/// three results are deterministic. The bias gradient is a separate per-channel reduction (float64 partials).
/// </para>
/// <para>
/// Two versions (<see cref="ConvVersion"/>; the lab times both, <see cref="Choose"/> picks by shape): v1 a 64×64 tile, K
/// tiles of 16, 4×4 outputs per micro-tile with rows and columns strided by 16; v2 a 128×128 tile, K tiles of 8, 8×8
/// outputs per micro-tile read as float4 from shared memory. Tiles are compile-time constants; the group size is a launch parameter and every cooperative loop strides by Group.DimX, so the same
/// code runs with 2-thread groups on ILGPU's CPU accelerator and 256-thread groups on a GPU. Kernels never throw:
/// launchers validate view lengths and geometry first (ArgumentException naming the op and shapes).
/// </para>
/// <para>
/// v3 and v4 (issue 7, ConvKernels.Prefetch.cs): one kernel body generic over the tile (128×128 with 256 threads, 64×64 with
/// 64), v2's 8×8 float4 micro-tile, double-buffered shared tiles with the next K tile prefetched into registers during the
/// current one's FMAs, packed 16-byte table entries. <see cref="Choose"/> runs them where v2 and v1 ran; every version
/// accumulates each output as one fma chain over k ascending, so all four give the same bits.
/// </para>
/// <para>
/// Precision (issue 7): the three launchers take a <see cref="Precision"/> (default Fp32: the kernels above, unchanged).
/// Tf32 / Bf16 run the tensor-core kernel (ConvKernels.TensorCore.cs): the same coordinate tables with GEMM operands rounded
/// as the CPU backend rounds them in its im2col GEMMs, float32 accumulation, mma.sync on CUDA. <see cref="CudaBackend"/>
/// passes <see cref="MatMulPrecision.Current"/>.
/// </para>
/// <para>
/// Pooling: max-pool forward is one thread per output and visits the window in the CPU backend's order (first max on
/// ties, NaN wins, −∞ padding, Int64 index h·W + w in the input plane). Max-pool backward has two deterministic forms,
/// both bit-identical to the CPU backend's float sums: a gather (needs the pooling geometry; one thread per input
/// element sums the outputs that chose it, in output order) and a plane-serial scatter (no geometry needed, one thread
/// per plane, as the CPU backend does it). Indices outside the plane are ignored (a kernel cannot throw; the CPU
/// backend rejects them). Adaptive average pooling forward accumulates in float64 like the CPU backend; backward is a
/// gather in the CPU backend's order.
/// </para>
/// </summary>
public static partial class ConvKernels
{
    /// <summary>Threads per group on a GPU (the kernels accept any group size; the CPU accelerator gets its maximum, e.g. 2).</summary>
    public const int GpuGroupSize = 256;

    private const int BM = 64, BN = 64, BK = 16, Micro = (BM / 4) * (BN / 4);
    private const int AsStride = BM + 1;   // padded: the k-major stores of the A loader hit distinct banks

    // ---------------------------------------------------------------- implicit GEMM conv

    /// <summary>a / b for a ≥ 0, b &gt; 0 as an unsigned division: the same quotient, without the sign handling of a signed
    /// one (≈ 10 fewer SASS instructions each; the K-row tables' refill, run every stage, does two or three).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Udiv(int a, int b) => (int)((uint)a / (uint)b);

    /// <summary>The four K-row entries of GEMM row k (k ≥ kEnd: invalid, A and Base −1, H and W 0), as one 16-byte value.</summary>
    private static ConvRow RowOf(ConvGemmShape s, int k, int kEnd) => RowOfDigits(s, DigitsOf(s, k), kEnd);

    /// <summary>The radices of a K row's mixed-radix digits (<see cref="ConvDigits"/>): (Ho, Wo) for the weight gradient (its K
    /// rows are image, output row, output column), else (Kh, Kw) (input channel or output channel, kernel row, kernel column).</summary>
    private static int RadixMid(ConvGemmShape s) => s.Mode == (int)ConvMode.BackwardWeight ? s.Ho : s.Kh;

    /// <summary>See <see cref="RadixMid"/>.</summary>
    private static int RadixLo(ConvGemmShape s) => s.Mode == (int)ConvMode.BackwardWeight ? s.Wo : s.Kw;

    /// <summary>The digits of GEMM row k ≥ 0: k = Hi·(R1·R2) + Mid·R2 + Lo with R1, R2 from <see cref="RadixMid"/> / <see cref="RadixLo"/>.</summary>
    private static ConvDigits DigitsOf(ConvGemmShape s, int k)
    {
        int r1 = RadixMid(s), r2 = RadixLo(s), r12 = r1 * r2;
        ConvDigits d;
        d.Hi = Udiv(k, r12);
        int rem = k - d.Hi * r12;
        d.Mid = Udiv(rem, r2);
        d.Lo = rem - d.Mid * r2;
        d.K = k;
        return d;
    }

    /// <summary>The digits of k + Σ step's k, without a division: adds <paramref name="step"/>'s digits (step.Lo &lt; R2,
    /// step.Mid &lt; R1: a <see cref="DigitsOf"/> result) with one carry per digit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ConvDigits Advance(ConvDigits d, ConvDigits step, int r1, int r2)
    {
        int lo = d.Lo + step.Lo, c1 = lo >= r2 ? 1 : 0;
        int mid = d.Mid + step.Mid + c1, c2 = mid >= r1 ? 1 : 0;
        ConvDigits r;
        r.Lo = lo - c1 * r2;
        r.Mid = mid - c2 * r1;
        r.Hi = d.Hi + step.Hi + c2;
        r.K = d.K + step.K;
        return r;
    }

    /// <summary>Starts a group's refill digits: slot e &lt; <paramref name="count"/> at row <paramref name="kFirst"/> + e, each
    /// slot written (and later refilled) by thread e mod nt only. <paramref name="digits"/>[count] must hold the step's
    /// digits (<see cref="DigitsOf"/>(s, count), written once per group before a barrier).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StartDigits(ConvGemmShape s, ArrayView<ConvDigits> digits, int count, int kFirst, int tid, int nt)
    {
        for (int e = tid; e < count; e += nt) digits[e] = DigitsOf(s, kFirst + e);
    }

    /// <summary>The K-row refill of the double-buffered conv kernels: rows[at + e] ← the folded row of slot e's digits, then
    /// the digits advance by one tile (<paramref name="count"/> rows, <paramref name="digits"/>[count]) with carries — no
    /// division per row (a <see cref="FoldedRowOf"/> refill divides two or three times per row).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RefillRows(ConvGemmShape s, ArrayView<ConvRow> rows, int at, ArrayView<ConvDigits> digits, int count, int kEnd, int tid, int nt)
    {
        int r1 = RadixMid(s), r2 = RadixLo(s);
        for (int e = tid; e < count; e += nt)
        {
            var d = digits[e];
            rows[at + e] = FoldedRowOfDigits(s, d, kEnd);
            digits[e] = Advance(d, digits[count], r1, r2);
        }
    }

    /// <summary><see cref="RowOf"/> from the row's digits.</summary>
    private static ConvRow RowOfDigits(ConvGemmShape s, ConvDigits d, int kEnd)
    {
        ConvRow r;
        if (d.K >= kEnd)
        {
            r.A = -1; r.Base = -1; r.H = 0; r.W = 0;
            return r;
        }
        if (s.Mode == (int)ConvMode.BackwardWeight)
        {
            // digits: image, output row oh, output column ow
            int P = s.Ho * s.Wo, p = d.K - d.Hi * P;
            r.A = d.Hi * s.Cout * P + p;
            r.Base = d.Hi * s.Cin * s.H * s.W;
            r.H = d.Mid * s.Sh;
            r.W = d.Lo * s.Sw;
            return r;
        }
        // digits: channel c, kernel row, kernel column
        int kk2 = s.Kh * s.Kw, c = d.Hi, rem = d.K - c * kk2;
        if (s.Mode == (int)ConvMode.Forward)
        {
            r.A = d.K;
            r.Base = c * s.H * s.W;
        }
        else
        {
            r.A = c * s.Cin * kk2 + rem;
            r.Base = c * s.Ho * s.Wo;
        }
        r.H = d.Mid * s.Dh;
        r.W = d.Lo * s.Dw;
        return r;
    }

    /// <summary>The column entries of GEMM column n (n ≥ N: invalid, Base and Out −1, H and W 0), as one 16-byte value.</summary>
    private static ConvCol ColumnOf(ConvGemmShape s, int n)
    {
        ConvCol c;
        if (n >= s.N)
        {
            c.Base = -1; c.Out = -1; c.H = 0; c.W = 0;
            return c;
        }
        if (s.Mode == (int)ConvMode.Forward)
        {
            int P = s.Ho * s.Wo;
            int img = Udiv(n, P), p = n - img * P, oh = Udiv(p, s.Wo), ow = p - oh * s.Wo;
            c.Base = img * s.Cin * s.H * s.W;
            c.H = oh * s.Sh - s.Pt;
            c.W = ow * s.Sw - s.Pl;
            c.Out = img * s.Cout * P + p;
        }
        else if (s.Mode == (int)ConvMode.BackwardInput)
        {
            int hw = s.H * s.W;
            int img = Udiv(n, hw), q = n - img * hw, ih = Udiv(q, s.W), iw = q - ih * s.W;
            c.Base = img * s.Cout * s.Ho * s.Wo;
            c.H = ih + s.Pt;
            c.W = iw + s.Pl;
            c.Out = img * s.Cin * hw + q;
        }
        else
        {
            int kk2 = s.Kh * s.Kw;
            int ch = Udiv(n, kk2), r = n - ch * kk2, kh = Udiv(r, s.Kw), kw = r - kh * s.Kw;
            c.Base = ch * s.H * s.W;
            c.H = kh * s.Dh - s.Pt;
            c.W = kw * s.Dw - s.Pl;
            c.Out = n;
        }
        return c;
    }

    /// <summary>Fills the four K-row entries of row kk for K index k (k ≥ K: invalid, marked by −1).</summary>
    private static void KRow(ConvGemmShape s, int k, int kEnd, ArrayView<int> kA, ArrayView<int> kBase, ArrayView<int> kH, ArrayView<int> kW, int slot)
    {
        var r = RowOf(s, k, kEnd);
        kA[slot] = r.A; kBase[slot] = r.Base; kH[slot] = r.H; kW[slot] = r.W;
    }

    /// <summary>Fills the column entries for GEMM column n (n ≥ N: invalid, marked by −1).</summary>
    private static void Column(ConvGemmShape s, int n, ArrayView<int> cBase, ArrayView<int> cH, ArrayView<int> cW, ArrayView<int> cOut, int slot)
    {
        var c = ColumnOf(s, n);
        cBase[slot] = c.Base; cH[slot] = c.H; cW[slot] = c.W; cOut[slot] = c.Out;
    }

    /// <summary>B(k, n): the input (forward, backward-weight) or output-gradient (backward-input) element, 0 outside.</summary>
    private static float LoadB(ArrayView<float> b, ConvGemmShape s, int colBase, int colH, int colW, int kBase, int kH, int kW)
    {
        if ((colBase | kBase) < 0) return 0f;
        if (s.Mode != (int)ConvMode.BackwardInput)
        {
            int ih = colH + kH, iw = colW + kW;
            if ((uint)ih >= (uint)s.H || (uint)iw >= (uint)s.W) return 0f;
            return b[colBase + kBase + ih * s.W + iw];
        }
        int th = colH - kH, tw = colW - kW;   // = oh·Sh, ow·Sw when the tap reaches an output
        if (th < 0 || tw < 0) return 0f;
        int oh = th, ow = tw;
        if (s.Sh != 1)
        {
            oh = th / s.Sh;
            if (oh * s.Sh != th) return 0f;
        }
        if (s.Sw != 1)
        {
            ow = tw / s.Sw;
            if (ow * s.Sw != tw) return 0f;
        }
        if (oh >= s.Ho || ow >= s.Wo) return 0f;
        return b[colBase + kBase + oh * s.Wo + ow];
    }

    // ---- folded gathers (issue 7, gather): the prefetching and tensor-core kernels' B operand in fewer instructions ----
    // Wherever B(k, n) is b[colBase + kBase + ih·Wb + iw] with ih = colH ± kH, iw = colW ± kW and a plain range test
    // (forward and backward-weight: Wb = W, 0 ≤ ih < H, 0 ≤ iw < W; backward-input at stride 1: Wb = Wo, ih = colH − kH,
    // 0 ≤ ih < Ho, 0 ≤ iw < Wo), the tables hold the offsets already folded: column Base' = colBase + colH·Wb + colW, row
    // Base' = kBase ± (kH·Wb + kW), row H/W = ±kH/±kW, so a gather is b[colBase' + rowBase'] under two unsigned compares of
    // colH + rowH and colW + rowW. An invalid row or column (k ≥ kEnd, n ≥ N) gets H = −2^30 (Base 0, W 0): every valid
    // tap offset and column coordinate is far below 2^30 in size, so the row sum stays negative (at worst −2^31, no
    // overflow) and fails the unsigned compare. Same element, same zero: the same bits as LoadB. Backward-input at stride
    // > 1 keeps the old layout and LoadB (its stride test divides).

    /// <summary>H of an invalid folded row or column (see the comment above).</summary>
    private const int FoldedInvalid = -(1 << 30);

    /// <summary>Whether the tables of this GEMM hold folded offsets (everything but backward-input at stride &gt; 1).</summary>
    private static bool Folded(ConvGemmShape s) => s.Mode != (int)ConvMode.BackwardInput || (s.Sh == 1 && s.Sw == 1);

    /// <summary>The bounds a folded gather tests colH + rowH and colW + rowW against (input or output-gradient plane).</summary>
    private static int FoldedLimitH(ConvGemmShape s) => s.Mode == (int)ConvMode.BackwardInput ? s.Ho : s.H;

    /// <summary>See <see cref="FoldedLimitH"/>.</summary>
    private static int FoldedLimitW(ConvGemmShape s) => s.Mode == (int)ConvMode.BackwardInput ? s.Wo : s.W;

    /// <summary><see cref="RowOf"/> with the offsets folded when <see cref="Folded"/> (A unchanged: −1 past the range).</summary>
    private static ConvRow FoldedRowOf(ConvGemmShape s, int k, int kEnd) => Fold(s, RowOf(s, k, kEnd));

    /// <summary><see cref="FoldedRowOf"/> from the row's digits.</summary>
    private static ConvRow FoldedRowOfDigits(ConvGemmShape s, ConvDigits d, int kEnd) => Fold(s, RowOfDigits(s, d, kEnd));

    private static ConvRow Fold(ConvGemmShape s, ConvRow r)
    {
        if (!Folded(s)) return r;
        if (r.Base < 0)
        {
            r.Base = 0; r.H = FoldedInvalid; r.W = 0;
        }
        else if (s.Mode == (int)ConvMode.BackwardInput)
        {
            r.Base -= r.H * s.Wo + r.W; r.H = -r.H; r.W = -r.W;
        }
        else r.Base += r.H * s.W + r.W;
        return r;
    }

    /// <summary><see cref="ColumnOf"/> with the offsets folded when <see cref="Folded"/> (Out unchanged: −1 past N).</summary>
    private static ConvCol FoldedColumnOf(ConvGemmShape s, int n)
    {
        var c = ColumnOf(s, n);
        if (!Folded(s)) return c;
        if (c.Base < 0)
        {
            c.Base = 0; c.H = FoldedInvalid; c.W = 0;
        }
        else c.Base += c.H * FoldedLimitW(s) + c.W;
        return c;
    }

    /// <summary>B(k, n) from folded entries: the element LoadB reads, 0 outside (two unsigned compares, one add).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float FoldedB(ArrayView<float> b, ConvGemmShape s, int colBase, int colH, int colW, int rowBase, int rowH, int rowW) =>
        (uint)(colH + rowH) < (uint)FoldedLimitH(s) && (uint)(colW + rowW) < (uint)FoldedLimitW(s) ? b[colBase + rowBase] : 0f;

    private static void StoreRow(ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int zOff, int m, int c0, int c1, int c2, int c3,
        float v0, float v1, float v2, float v3)
    {
        if (m >= s.M) return;
        float bv = s.HasBias != 0 ? bias[m] : 0f;
        int ro = m * s.OutStride + zOff;
        if (c0 >= 0) o[c0 + ro] = v0 + bv;
        if (c1 >= 0) o[c1 + ro] = v1 + bv;
        if (c2 >= 0) o[c2 + ro] = v2 + bv;
        if (c3 >= 0) o[c3 + ro] = v3 + bv;
    }

    /// <summary>
    /// The implicit-GEMM kernel for all three modes: a 64×64 output tile per group (grid-stride over tiles), K tiles of 16
    /// staged through shared memory with the coordinate tables described on the class; micro-tile (tx, ty) accumulates
    /// rows ty + 16i and columns tx + 16j (i, j &lt; 4) in scalar registers.
    /// </summary>
    internal static void ConvGemmKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s)
    {
        var As = SharedMemory.Allocate<float>(BK * AsStride);   // As[k·65 + m]
        var Bs = SharedMemory.Allocate<float>(BK * BN);         // Bs[k·64 + n]
        var cBase = SharedMemory.Allocate<int>(BN);
        var cH = SharedMemory.Allocate<int>(BN);
        var cW = SharedMemory.Allocate<int>(BN);
        var cOut = SharedMemory.Allocate<int>(BN);
        var kA = SharedMemory.Allocate<int>(2 * BK);
        var kBase = SharedMemory.Allocate<int>(2 * BK);
        var kH = SharedMemory.Allocate<int>(2 * BK);
        var kW = SharedMemory.Allocate<int>(2 * BK);
        int tid = Group.IdxX, nt = Group.DimX;
        int passes = (Micro + nt - 1) / nt;
        int tilesM = (s.M + BM - 1) / BM, tilesN = (s.N + BN - 1) / BN;
        for (int kz = Grid.IdxZ; kz < s.Splits; kz += Grid.DimZ)
        for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
        for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
        {
            int m0 = tm * BM, n0 = tn * BN;
            int kLo = kz * s.KChunk, kEnd = XMin(s.K, kLo + s.KChunk), zOff = kz * s.SplitStride;
            int kTiles = (kEnd - kLo + BK - 1) / BK;
            for (int p = 0; p < passes; p++)
            {
                int mt = p * nt + tid;
                bool active = mt < Micro;
                mt &= Micro - 1;
                int tx = mt & 15, ty = mt >> 4;
                float c00 = 0f, c01 = 0f, c02 = 0f, c03 = 0f, c10 = 0f, c11 = 0f, c12 = 0f, c13 = 0f;
                float c20 = 0f, c21 = 0f, c22 = 0f, c23 = 0f, c30 = 0f, c31 = 0f, c32 = 0f, c33 = 0f;
                for (int e = tid; e < BN; e += nt) Column(s, n0 + e, cBase, cH, cW, cOut, e);
                for (int e = tid; e < BK; e += nt) KRow(s, kLo + e, kEnd, kA, kBase, kH, kW, e);
                Group.Barrier();
                for (int kt = 0; kt < kTiles; kt++)
                {
                    int cur = (kt & 1) * BK, nxt = BK - cur;
                    int k0 = kt * BK;
                    // A tile: element i → (m = i / 16, k = i % 16), consecutive threads walk k (contiguous in w and gy)
                    for (int i = tid; i < BM * BK; i += nt)
                    {
                        int mm = i >> 4, kk = i & (BK - 1);
                        int ka = kA[cur + kk], m = m0 + mm;
                        As[kk * AsStride + mm] = ka >= 0 && m < s.M ? a[ka + m * s.AStride] : 0f;
                    }
                    // B tile: element i → (k = i / 64, n = i % 64), consecutive threads walk n (output positions)
                    for (int i = tid; i < BK * BN; i += nt)
                    {
                        int kk = i >> 6, nn = i & (BN - 1);
                        Bs[i] = LoadB(b, s, cBase[nn], cH[nn], cW[nn], kBase[cur + kk], kH[cur + kk], kW[cur + kk]);
                    }
                    Group.Barrier();
                    // the next tile's K rows (buffer nxt was last read before the previous barrier)
                    if (kt + 1 < kTiles)
                        for (int e = tid; e < BK; e += nt) KRow(s, kLo + k0 + BK + e, kEnd, kA, kBase, kH, kW, nxt + e);
                    for (int kk = 0; kk < BK; kk++)
                    {
                        int ab = kk * AsStride + ty, bb = kk * BN + tx;
                        float a0 = As[ab], a1 = As[ab + 16], a2 = As[ab + 32], a3 = As[ab + 48];
                        float b0 = Bs[bb], b1 = Bs[bb + 16], b2 = Bs[bb + 32], b3 = Bs[bb + 48];
                        c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                        c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                        c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                        c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
                    }
                    Group.Barrier();
                }
                if (active)
                {
                    int o0 = cOut[tx], o1 = cOut[tx + 16], o2 = cOut[tx + 32], o3 = cOut[tx + 48];
                    StoreRow(o, bias, s, zOff, m0 + ty, o0, o1, o2, o3, c00, c01, c02, c03);
                    StoreRow(o, bias, s, zOff, m0 + ty + 16, o0, o1, o2, o3, c10, c11, c12, c13);
                    StoreRow(o, bias, s, zOff, m0 + ty + 32, o0, o1, o2, o3, c20, c21, c22, c23);
                    StoreRow(o, bias, s, zOff, m0 + ty + 48, o0, o1, o2, o3, c30, c31, c32, c33);
                }
                Group.Barrier();   // the column table is rewritten by the next pass or tile
            }
        }
    }

    private const int BM2 = 128, BN2 = 128, BK2 = 8, Micro2 = (BM2 / 8) * (BN2 / 8);
    private const int As2Stride = BM2 + 4;   // padded by one float4: the k-major A stores spread over the banks, rows stay 16-byte aligned

    /// <summary>
    /// v2 (vs v1: 64 FMAs per 4 float4 shared loads instead of 16 per 8 scalar ones): a 128×128 output tile per group, K tiles
    /// of 8, the same coordinate tables; micro-tile (tx, ty) owns rows ty·4..+3 and 64+ty·4..+3 and the same split of
    /// columns (as GemmKernels v4), so a warp's float4 shared reads are broadcasts or conflict-free.
    /// </summary>
    internal static void ConvGemm128Kernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s)
    {
        var As4 = SharedMemory.Allocate<F4>(BK2 * As2Stride / 4);   // As[k·132 + m], as float4
        var Bs4 = SharedMemory.Allocate<F4>(BK2 * BN2 / 4);         // Bs[k·128 + n], as float4
        var As = As4.Cast<float>();
        var Bs = Bs4.Cast<float>();
        var cBase = SharedMemory.Allocate<int>(BN2);
        var cH = SharedMemory.Allocate<int>(BN2);
        var cW = SharedMemory.Allocate<int>(BN2);
        var cOut = SharedMemory.Allocate<int>(BN2);
        var kA = SharedMemory.Allocate<int>(2 * BK2);
        var kBase = SharedMemory.Allocate<int>(2 * BK2);
        var kH = SharedMemory.Allocate<int>(2 * BK2);
        var kW = SharedMemory.Allocate<int>(2 * BK2);
        int tid = Group.IdxX, nt = Group.DimX;
        int passes = (Micro2 + nt - 1) / nt;
        int tilesM = (s.M + BM2 - 1) / BM2, tilesN = (s.N + BN2 - 1) / BN2;
        for (int kz = Grid.IdxZ; kz < s.Splits; kz += Grid.DimZ)
        for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
        for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
        {
            int m0 = tm * BM2, n0 = tn * BN2;
            int kLo = kz * s.KChunk, kEnd = XMin(s.K, kLo + s.KChunk), zOff = kz * s.SplitStride;
            int kTiles = (kEnd - kLo + BK2 - 1) / BK2;
            for (int p = 0; p < passes; p++)
            {
                int mt = p * nt + tid;
                bool active = mt < Micro2;
                mt &= Micro2 - 1;
                int tx = mt & 15, ty = mt >> 4;
                var acc = default(Acc8x8);
                for (int e = tid; e < BN2; e += nt) Column(s, n0 + e, cBase, cH, cW, cOut, e);
                for (int e = tid; e < BK2; e += nt) KRow(s, kLo + e, kEnd, kA, kBase, kH, kW, e);
                Group.Barrier();
                for (int kt = 0; kt < kTiles; kt++)
                {
                    int cur = (kt & 1) * BK2, nxt = BK2 - cur;
                    int k0 = kt * BK2;
                    // A tile: element i → (m = i / 8, k = i % 8), consecutive threads walk k (contiguous in w and gy)
                    for (int i = tid; i < BM2 * BK2; i += nt)
                    {
                        int mm = i >> 3, kk = i & (BK2 - 1);
                        int ka = kA[cur + kk], m = m0 + mm;
                        As[kk * As2Stride + mm] = ka >= 0 && m < s.M ? a[ka + m * s.AStride] : 0f;
                    }
                    // B tile: element i → (k = i / 128, n = i % 128), consecutive threads walk n (output positions)
                    for (int i = tid; i < BK2 * BN2; i += nt)
                    {
                        int kk = i >> 7, nn = i & (BN2 - 1);
                        Bs[i] = LoadB(b, s, cBase[nn], cH[nn], cW[nn], kBase[cur + kk], kH[cur + kk], kW[cur + kk]);
                    }
                    Group.Barrier();
                    if (kt + 1 < kTiles)
                        for (int e = tid; e < BK2; e += nt) KRow(s, kLo + k0 + BK2 + e, kEnd, kA, kBase, kH, kW, nxt + e);
                    for (int kk = 0; kk < BK2; kk++) Micro8x8.Step(ref acc, As4, Bs4, kk * (As2Stride / 4) + ty, kk * (BN2 / 4) + tx, 16);
                    Group.Barrier();
                }
                if (active) Store8x8(o, bias, s, zOff, m0 + ty * 4, 64, cOut, 1, 0, tx * 4, 64 + tx * 4, acc);
                Group.Barrier();   // the column table is rewritten by the next pass or tile
            }
        }
    }

    /// <summary>Split-K reduction: o[i] = Σ_z ws[z·count + i], z in order (deterministic).</summary>
    internal static void SplitReduceKernel(ArrayView<float> ws, ArrayView<float> o, int count, int splits)
    {
        long step = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < count; i += step)
        {
            o[i] = KMath.SumStrided(ws, i, count, splits);
        }
    }

    /// <summary>gb[c] = Σ_n Σ_p gy[n, c, p]: one group per channel (grid-stride), float64 partials, thread 0 sums them in order.</summary>
    internal static void BiasGradKernel(ArrayView<float> gy, ArrayView<float> gb, int batch, int channels, int plane)
    {
        var part = SharedMemory.Allocate<double>(1024);
        int tid = Group.IdxX, nt = Group.DimX;
        int per = batch * plane;
        for (int c = Grid.IdxX; c < channels; c += Grid.DimX)
        {
            double acc = 0;
            for (int i = tid; i < per; i += nt)
            {
                int img = i / plane, q = i - img * plane;
                acc += gy[(img * channels + c) * plane + q];
            }
            part[tid] = acc;
            Group.Barrier();
            if (tid == 0)
            {
                double t = 0;
                for (int j = 0; j < nt; j++) t += part[j];
                gb[c] = (float)t;
            }
            Group.Barrier();
        }
    }

    // ---------------------------------------------------------------- pooling

    /// <summary>One thread per output (grid-stride): the CPU backend's window order, first max on ties, NaN wins.</summary>
    internal static void MaxPoolForwardKernel(ArrayView<float> x, ArrayView<float> y, ArrayView<long> idx, PoolShape s)
    {
        long total = (long)s.Planes * s.Ho * s.Wo;
        long step = (long)Grid.DimX * Group.DimX;
        bool small = total <= int.MaxValue;
        for (long t = Grid.GlobalIndex.X; t < total; t += step)
        {
            Split3(t, s.Ho, s.Wo, small, out long pl, out int oh, out int ow);
            long xo = pl * s.H * s.W;
            int hs = oh * s.Sh - s.Ph, ws = ow * s.Sw - s.Pw;
            int h0 = XMax(hs, 0), h1 = XMin(hs + s.Kh, s.H);
            int first = h0 * s.W + XMax(ws, 0);
            float best = x[xo + first];
            int bi = first;
            for (int ih = h0; ih < h1; ih++)
                for (int k = 0; k < s.Kw; k++)
                {
                    int iw = ws + k;
                    if (iw < 0 || iw >= s.W) continue;
                    float v = x[xo + ih * s.W + iw];
                    if (v > best || float.IsNaN(v))
                    {
                        best = v;
                        bi = ih * s.W + iw;
                    }
                }
            y[t] = best;
            idx[t] = bi;
        }
    }

    /// <summary>
    /// (plane, row, col) of flat index t of [planes, rows, cols]. With <paramref name="small"/> (every index fits in an int)
    /// two 32-bit divisions; else two 64-bit ones. The remainders come from a multiply-subtract, not a second division:
    /// on a GPU an integer division is a software routine (~20 instructions for 32 bits, ~60 for 64).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Split3(long t, int rows, int cols, bool small, out long plane, out int row, out int col)
    {
        if (small)
        {
            int ti = (int)t, q = ti / cols, p = q / rows;
            col = ti - q * cols; row = q - p * rows; plane = p;
        }
        else
        {
            long q = t / cols, p = q / rows;
            col = (int)(t - q * cols); row = (int)(q - p * rows); plane = p;
        }
    }

    private static int XMax(int a, int b) => a > b ? a : b;
    private static int XMin(int a, int b) => a < b ? a : b;

    /// <summary>Gather (one thread per input-gradient element): Σ of gy over the outputs whose window holds the element and
    /// whose index names it, in output order from 0f — the CPU backend's scatter sums, bit for bit.</summary>
    internal static void MaxPoolBackwardGatherKernel(ArrayView<float> gy, ArrayView<long> idx, ArrayView<float> gx, PoolShape s)
    {
        long total = (long)s.Planes * s.H * s.W;
        long step = (long)Grid.DimX * Group.DimX;
        bool small = total <= int.MaxValue;
        for (long t = Grid.GlobalIndex.X; t < total; t += step)
        {
            Split3(t, s.H, s.W, small, out long pl, out int ih, out int iw);
            long yo = pl * s.Ho * s.Wo;
            long me = (long)ih * s.W + iw;
            // outputs oh with oh·Sh − Ph ≤ ih ≤ oh·Sh − Ph + Kh − 1
            int ohLo = XMax(CeilDivNonNeg(ih + s.Ph - s.Kh + 1, s.Sh), 0), ohHi = XMin((ih + s.Ph) / s.Sh, s.Ho - 1);
            int owLo = XMax(CeilDivNonNeg(iw + s.Pw - s.Kw + 1, s.Sw), 0), owHi = XMin((iw + s.Pw) / s.Sw, s.Wo - 1);
            float acc = 0f;
            for (int oh = ohLo; oh <= ohHi; oh++)
                for (int ow = owLo; ow <= owHi; ow++)
                {
                    long j = yo + (long)oh * s.Wo + ow;
                    if (idx[j] == me) acc += gy[j];
                }
            gx[t] = acc;
        }
    }

    /// <summary>⌈a / b⌉ for b &gt; 0, with any a ≤ 0 giving a value ≤ 0 (callers clamp at 0).</summary>
    private static int CeilDivNonNeg(int a, int b) => a <= 0 ? 0 : (a + b - 1) / b;

    /// <summary>Plane-serial scatter (no geometry needed): one thread per plane clears it and adds gy through the indices in
    /// output order, exactly as the CPU backend does. Indices outside the plane are skipped.</summary>
    internal static void MaxPoolBackwardScatterKernel(ArrayView<float> gy, ArrayView<long> idx, ArrayView<float> gx, PoolShape s)
    {
        int hw = s.H * s.W, ohw = s.Ho * s.Wo;
        long step = (long)Grid.DimX * Group.DimX;
        for (long pl = Grid.GlobalIndex.X; pl < s.Planes; pl += step)
        {
            long xo = pl * hw, yo = pl * ohw;
            for (int i = 0; i < hw; i++) gx[xo + i] = 0f;
            for (int j = 0; j < ohw; j++)
            {
                long id = idx[yo + j];
                if ((ulong)id < (ulong)hw) gx[xo + id] += gy[yo + j];
            }
        }
    }

    /// <summary>One thread per output: float64 sum of the window times 1/size (PyTorch's window rule), as the CPU backend.</summary>
    internal static void AdaptiveAvgForwardKernel(ArrayView<float> x, ArrayView<float> y, PoolShape s)
    {
        long total = (long)s.Planes * s.Ho * s.Wo;
        long step = (long)Grid.DimX * Group.DimX;
        bool small = total <= int.MaxValue;
        for (long t = Grid.GlobalIndex.X; t < total; t += step)
        {
            Split3(t, s.Ho, s.Wo, small, out long pl, out int oh, out int ow);
            long xo = pl * s.H * s.W;
            int h0 = (int)((long)oh * s.H / s.Ho), h1 = (int)(((long)(oh + 1) * s.H + s.Ho - 1) / s.Ho);
            int w0 = (int)((long)ow * s.W / s.Wo), w1 = (int)(((long)(ow + 1) * s.W + s.Wo - 1) / s.Wo);
            double inv = 1.0 / ((h1 - h0) * (w1 - w0));
            double acc = 0;
            for (int ih = h0; ih < h1; ih++)
                for (int iw = w0; iw < w1; iw++) acc += x[xo + ih * s.W + iw];
            y[t] = (float)(acc * inv);
        }
    }

    /// <summary>One thread per input-gradient element: Σ over the windows holding it of (float)(gy·1/size), in window order
    /// from 0f — the CPU backend's scatter, bit for bit.</summary>
    internal static void AdaptiveAvgBackwardKernel(ArrayView<float> gy, ArrayView<float> gx, PoolShape s)
    {
        long total = (long)s.Planes * s.H * s.W;
        long step = (long)Grid.DimX * Group.DimX;
        bool small = total <= int.MaxValue;
        for (long t = Grid.GlobalIndex.X; t < total; t += step)
        {
            Split3(t, s.H, s.W, small, out long pl, out int ih, out int iw);
            long yo = pl * s.Ho * s.Wo;
            // windows oh with h0(oh) ≤ ih < h1(oh) lie in [⌊ih·Ho/H⌋, ⌊((ih+1)·Ho − 1)/H⌋]; one extra row each side, tested exactly
            int ohLo = XMax((int)((long)ih * s.Ho / s.H) - 1, 0), ohHi = XMin((int)(((long)(ih + 1) * s.Ho - 1) / s.H) + 1, s.Ho - 1);
            int owLo = XMax((int)((long)iw * s.Wo / s.W) - 1, 0), owHi = XMin((int)(((long)(iw + 1) * s.Wo - 1) / s.W) + 1, s.Wo - 1);
            float acc = 0f;
            for (int oh = ohLo; oh <= ohHi; oh++)
            {
                int h0 = (int)((long)oh * s.H / s.Ho), h1 = (int)(((long)(oh + 1) * s.H + s.Ho - 1) / s.Ho);
                if (ih < h0 || ih >= h1) continue;
                for (int ow = owLo; ow <= owHi; ow++)
                {
                    int w0 = (int)((long)ow * s.W / s.Wo), w1 = (int)(((long)(ow + 1) * s.W + s.Wo - 1) / s.Wo);
                    if (iw < w0 || iw >= w1) continue;
                    double inv = 1.0 / ((h1 - h0) * (w1 - w0));
                    acc += (float)(gy[yo + (long)oh * s.Wo + ow] * inv);
                }
            }
            gx[t] = acc;
        }
    }

    /// <summary>Every kernel method (for offline PTX compilation in tests and tools), by name.</summary>
    public static IReadOnlyList<(string Name, System.Reflection.MethodInfo Method)> KernelMethods { get; } =
    [
        ("conv_gemm", ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>)ConvGemmKernel).Method),
        ("conv_gemm128", ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>)ConvGemm128Kernel).Method),
        ("conv_gemm128_pf", KernelMethod(ConvVersion.Tile128Prefetch)),
        ("conv_gemm64_pf", KernelMethod(ConvVersion.Tile64Prefetch)),
        ("conv_gemm_tc", TensorCoreKernelMethod),
        ("conv_split_reduce", ((Action<ArrayView<float>, ArrayView<float>, int, int>)SplitReduceKernel).Method),
        ("conv_bias_grad", ((Action<ArrayView<float>, ArrayView<float>, int, int, int>)BiasGradKernel).Method),
        ("max_pool_fwd", ((Action<ArrayView<float>, ArrayView<float>, ArrayView<long>, PoolShape>)MaxPoolForwardKernel).Method),
        ("max_pool_bwd_gather", ((Action<ArrayView<float>, ArrayView<long>, ArrayView<float>, PoolShape>)MaxPoolBackwardGatherKernel).Method),
        ("max_pool_bwd_scatter", ((Action<ArrayView<float>, ArrayView<long>, ArrayView<float>, PoolShape>)MaxPoolBackwardScatterKernel).Method),
        ("adaptive_avg_fwd", ((Action<ArrayView<float>, ArrayView<float>, PoolShape>)AdaptiveAvgForwardKernel).Method),
        ("adaptive_avg_bwd", ((Action<ArrayView<float>, ArrayView<float>, PoolShape>)AdaptiveAvgBackwardKernel).Method),
    ];

    // ---------------------------------------------------------------- launchers

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>? Gemm, Gemm128, GemmPf128, GemmPf64;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>? GemmTc, GemmTc128;
        /// <summary>The 128×128 tile by 2·<see cref="TcPart"/> + forward (parts other than Full only in <c>bench dissect</c>).</summary>
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>?[] GemmTc3 =
            new Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>?[6];
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int>? BiasGrad;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int>? SplitReduce, RoundOps;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<long>, PoolShape>? MaxFwd;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<long>, ArrayView<float>, PoolShape>? MaxBwdGather, MaxBwdScatter;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, PoolShape>? AvgFwd, AvgBwd;
    }

    // Holds the typed delegates (ILGPU's own kernel cache is weak) for as long as the accelerator lives.
    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    private static Loaded For(Accelerator acc) => Cache.GetValue(acc, _ => new Loaded());

    private static Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape> GemmKernel(Accelerator acc, ConvVersion v)
    {
        var l = For(acc);
        var bounds = acc.AcceleratorType == AcceleratorType.Cuda ? CudaLaunchBounds(v) : default;
        lock (l)
            return v switch
            {
                ConvVersion.Tile128 => l.Gemm128 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>(ConvGemm128Kernel),
                ConvVersion.Tile128Prefetch => l.GemmPf128 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>(
                    ConvGemmPrefetchKernel<ConvTile128>, bounds),
                ConvVersion.Tile64Prefetch => l.GemmPf64 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>(
                    ConvGemmPrefetchKernel<ConvTile64>, bounds),
                _ => l.Gemm ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>(ConvGemmKernel),
            };
    }

    /// <summary>
    /// The version <see cref="ConvVersion.Auto"/> runs for a GEMM of M × N: the 128 tile (v3) when M ≥ 96, else the 64 tile
    /// (v4). Measured on an H200 (kernel tuner, ResNet-50 and the VQ-VAE at batch 64, 2026-11-28): v3 was faster than v4 on
    /// every shape with M ≥ 128, also where its tiles do not fill the SMs (the earlier rule's v4 there cost up to 0.31 ms a
    /// call on layer4's 3×3 convolutions, 1.21 against 0.90 ms); v4 was the fastest on every M = 64 shape. v3 and v4 give
    /// the same bits as v2 and v1, so the rule only moves time.
    /// </summary>
    public static ConvVersion Choose(Accelerator acc, int m, int n)
    {
        ArgumentNullException.ThrowIfNull(acc);
        return m >= 96 ? ConvVersion.Tile128Prefetch : ConvVersion.Tile64Prefetch;
    }

    /// <summary>
    /// The version <see cref="ConvVersion.Auto"/> runs for a weight gradient of M × N over K: when the launcher may split K
    /// (<paramref name="canSplit"/>: a workspace of at least two partials) and K is deep enough for two chunks of 256, split-K
    /// fills the device whatever the tile count, so the 128 tile (v3) whenever M ≥ 96; else <see cref="Choose"/>.
    /// <see cref="WantedSplits"/> then sizes the split for that tile.
    /// </summary>
    public static ConvVersion ChooseBackwardWeight(Accelerator acc, int m, int n, int k, bool canSplit)
        => canSplit && m >= 96 && k / 256 >= 2 ? ConvVersion.Tile128Prefetch : Choose(acc, m, n);

    /// <summary>
    /// The split-K count backward-weight aims for when it picks one itself: enough groups for twice the multiprocessors,
    /// each K chunk at least 256 deep (1: no split). The reduction runs over batch·Ho·Wo while the output is only
    /// cout × cin·kh·kw, so without a split ResNet-50's early layers would occupy a handful of multiprocessors (the stem's
    /// 64 × 147 weight gradient is 3 tiles of 64 with K = 64·112² at batch 64; layer1's 64 × 64 1×1 is 1 tile).
    /// </summary>
    private static long WantedSplits(Accelerator acc, int m, int n, int k, ConvVersion version, Precision precision, TensorCoreTile? tcTile = null)
    {
        if (version == ConvVersion.Auto) version = Choose(acc, m, n);
        var tc = TensorCoreGemm.TileShape(tcTile ?? TensorCoreGemm.ConvSizingTile(acc, m, n));
        int tileM = precision != Precision.Fp32 ? tc.Rows : TileOf(version);
        int tileN = precision != Precision.Fp32 ? tc.Cols : TileOf(version);
        long tiles = (long)((m + tileM - 1) / tileM) * ((n + tileN - 1) / tileN);
        long want = (2L * acc.NumMultiprocessors + tiles - 1) / tiles;
        return Math.Clamp(Math.Min(want, Math.Max(1, k / 256)), 1, 65535);
    }

    /// <summary>
    /// Floats of workspace <see cref="Conv2dBackwardWeight"/> needs to split K the way it would choose with
    /// <c>splits = 0</c> (0 when it would not split: too few K rows, or already enough output tiles). Callers that pass a
    /// workspace of this size get the split; the CUDA backend does, from its caching allocator.
    /// </summary>
    public static long BackwardWeightWorkspace(Accelerator acc, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams p,
        ConvVersion version = ConvVersion.Auto, Precision precision = Precision.Fp32)
    {
        ArgumentNullException.ThrowIfNull(acc);
        var s = Geometry("conv2d backward (weight)", batch, cin, h, w, cout, kh, kw, p);
        int m = cout, n = cin * kh * kw, k = batch * s.Ho * s.Wo;
        long mn = (long)m * n;
        if (mn == 0 || k == 0) return 0;
        if (version == ConvVersion.Auto) version = ChooseBackwardWeight(acc, m, n, k, canSplit: true);
        long sp = WantedSplits(acc, m, n, k, version, precision);
        return sp < 2 ? 0 : sp * mn;
    }

    /// <summary>
    /// The precision a convolution's weight gradient (M = cout, N = cin·kh·kw) runs at under the switch <paramref name="requested"/>:
    /// under Tf32, Fp32 (the exact kernel, so never less precise) where the tensor-core sizing rule (<see cref="TensorCoreGemm.ConvSizingTile"/>)
    /// gives the 64×32 tile with M &gt; 64. On an H200 (2026-11-28, kernel tuner caches of both precisions, ResNet-50 at
    /// batch 64) that tile in weight-gradient mode was slower than the fp32 128 tile with its larger split on 13 of those 17
    /// shapes (layer2's 128 × 512 × 50,176: 0.68 against 0.28 ms), faster on 4 by at most 0.13 ms; where the 128×64 tile
    /// or M ≤ 64 applies, the tensor cores were faster. Bf16 (not measured) and Fp32 are returned unchanged.
    /// </summary>
    public static Precision WeightGradientPrecision(Accelerator acc, int m, int n, Precision requested)
    {
        ArgumentNullException.ThrowIfNull(acc);
        if (requested != Precision.Tf32 || m <= TensorCoreGemm.BM || Tf32WeightGradientsOnTensorCores) return requested;
        return TensorCoreGemm.ConvSizingTile(acc, m, n) == TensorCoreTile.Tile64x32 ? Precision.Fp32 : requested;
    }

    /// <summary>
    /// <c>FVL_TF32_WGRAD</c> = <c>rule</c> (default: <see cref="WeightGradientPrecision"/> sends the weight gradients where
    /// the 64×32 tensor-core tile lost to the exact kernel) or <c>tc</c> (every TF32 weight gradient on the tensor cores,
    /// which since session 19 run the 128×128 tile): an A/B switch for a device, as the rule was measured against the
    /// 64×32 tile. Unlike the tile switches this changes results (TF32-rounded operands instead of the exact kernel), so it
    /// is not a tuner choice. Read once, at the first use (an invalid value throws there, naming it; the CLI checks it at
    /// start). Settable for tests.
    /// </summary>
    public static bool Tf32WeightGradientsOnTensorCores
    {
        get => _tf32WgradTc ??= ParseTf32Wgrad(Environment.GetEnvironmentVariable("FVL_TF32_WGRAD"));
        set => _tf32WgradTc = value;
    }
    private static bool? _tf32WgradTc;

    internal static bool ParseTf32Wgrad(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "rule" => false,
        "tc" => true,
        _ => throw new ArgumentException($"FVL_TF32_WGRAD = '{value}' is not a weight-gradient setting: rule (default) or tc"),
    };

    /// <summary>
    /// <c>FVL_TC_CONV_FWD</c> = <c>vec</c> (default) or <c>table</c>: whether the 128×128 tile stages a forward convolution
    /// through its forward path (<see cref="ConvTc3Forward"/>: the weight as a row-major matrix with 128-bit loads, B as 8
    /// consecutive K rows with 128-bit shared stores; session 22: ≈ 520 static SASS instructions per stage loop instead of
    /// 1,404, not yet timed) or through the coordinate tables as the gradients do. Same bits either way, so an A/B switch
    /// for a device, not a result choice. Read once, at the first use (an invalid value throws there, naming it; the CLI
    /// checks it at start). Settable for tests.
    /// </summary>
    public static bool Tc3ForwardPath
    {
        get => _tc3Forward ??= ParseTc3Forward(Environment.GetEnvironmentVariable("FVL_TC_CONV_FWD"));
        set => _tc3Forward = value;
    }
    private static bool? _tc3Forward;

    internal static bool ParseTc3Forward(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "vec" => true,
        "table" => false,
        _ => throw new ArgumentException($"FVL_TC_CONV_FWD = '{value}' is not a forward-convolution staging: vec (default) or table"),
    };

    private static int GroupSize(Accelerator acc) => Math.Min(GpuGroupSize, acc.MaxNumThreadsPerGroup);

    /// <summary>A 1-D grid-stride launch over <paramref name="work"/> items.</summary>
    private static KernelConfig Flat(Accelerator acc, long work)
    {
        int nt = GroupSize(acc);
        return new KernelConfig((int)Math.Clamp((work + nt - 1) / nt, 1, 1 << 20), nt);
    }

    /// <summary>The fp32 conv versions <see cref="KernelTuner"/> times when the caller asked for <see cref="ConvVersion.Auto"/>:
    /// v3 (128 tile) and v4 (64 tile), and v2 / v1 without register prefetch — all the same bits. v3 and v4 sit at their
    /// launch bounds' register cap (127 of 128 under ptxas 11.8), so if a device's JIT spills them, the tuner falls back.</summary>
    internal static IReadOnlyList<ConvVersion> TunedVersions { get; } =
        [ConvVersion.Tile128Prefetch, ConvVersion.Tile64Prefetch, ConvVersion.Tile128, ConvVersion.Tile64];

    /// <summary>What decides a conv GEMM's speed, as the tuner's cache key: mode, precision, GEMM sizes, split, geometry (the
    /// batch-dependent sizes bucketed as in <see cref="KernelTuner.Bucket"/>, so that sizes a few apart share one choice).</summary>
    internal static string TuneKey(in ConvGemmShape s, Precision precision, bool aRounded)
        => $"conv {(ConvMode)s.Mode} {precision} m{s.M} n{KernelTuner.Bucket(s.N)} k{KernelTuner.Bucket(s.K)} splits{s.Splits} in{KernelTuner.Bucket(s.Batch)}x{s.Cin}x{s.H}x{s.W} "
           + $"out{s.Cout}x{s.Ho}x{s.Wo} k{s.Kh}x{s.Kw} s{s.Sh}x{s.Sw} p{s.Pt}x{s.Pl} d{s.Dh}x{s.Dw} bias{s.HasBias} ar{(aRounded ? 1 : 0)}";

    /// <summary>Fp32 → the implicit-GEMM kernel of version <paramref name="v"/>; Tf32/Bf16 → the tensor-core kernel (v is ignored).
    /// <paramref name="tunable"/>: the caller left the choice to the rules (Auto / no tile), so <see cref="KernelTuner"/> may
    /// time the alternatives (it never changes <c>s.Splits</c>).</summary>
    private static void LaunchGemm(Accelerator acc, AcceleratorStream? stream, ArrayView<float> a, ArrayView<float> b, ArrayView<float> o,
        ArrayView<float> bias, ConvGemmShape s, ConvVersion v, Precision precision, TensorCoreTile? tcTile, bool aRounded = false, bool tunable = false)
    {
        if (s.M == 0 || s.N == 0) return;
        if (s.Splits < 1)
        {
            s.Splits = 1; s.KChunk = s.K; s.SplitStride = 0;
        }
        var st = stream ?? acc.DefaultStream;
        if (precision != Precision.Fp32)
        {
            var tile = tcTile ?? ConvTile(acc, s.M, s.N, precision);
            if (tunable && KernelTuner.IsOn) tile = PickTile(acc, st, a, b, o, bias, s, precision, tile, aRounded);
            LaunchTc(acc, stream, a, b, o, bias, s, precision, tile, aRounded);
            return;
        }
        if (v == ConvVersion.Auto) v = Choose(acc, s.M, s.N);
        if (tunable && KernelTuner.IsOn) v = PickVersion(acc, st, a, b, o, bias, s, v);
        LaunchFp32(acc, stream, a, b, o, bias, s, v);
    }

    // The tuned choices live in their own methods, so that with the tuner off LaunchGemm allocates no closure.
    private static TensorCoreTile PickTile(Accelerator acc, AcceleratorStream st, ArrayView<float> a, ArrayView<float> b, ArrayView<float> o,
        ArrayView<float> bias, ConvGemmShape s, Precision precision, TensorCoreTile rule, bool aRounded)
        => KernelTuner.Pick(acc, st, TuneKey(s, precision, aRounded), rule, TensorCoreGemm.ConvTilesFor(precision), t => LaunchTc(acc, st, a, b, o, bias, s, precision, t, aRounded));

    /// <summary>The tensor-core tile a convolution's GEMM runs without the tuner: <see cref="TensorCoreGemm.ChooseConv"/>'s,
    /// or the one <see cref="ConvTileOverride"/> names where it runs the precision (the 128×128 tile is TF32 only).</summary>
    private static TensorCoreTile ConvTile(Accelerator acc, int m, int n, Precision precision)
        => ConvTileOverride is { } t && TensorCoreGemm.ConvTilesFor(precision).Contains(t) ? t : TensorCoreGemm.ChooseConv(acc, m, n, precision);

    /// <summary>
    /// A tensor-core tile every TF32/bf16 convolution GEMM runs instead of the rule's (<c>FVL_TC_CONV_TILE</c> = <c>rule</c>
    /// (default), <c>64x32</c>, <c>128x64</c> or <c>128x128</c>), for A/B timing on a device: the tiles give the same bits,
    /// so only the speed changes; split-K counts and the weight gradients' precision stay the rules'. <c>128x128</c> applies
    /// to TF32 only. Read once, at the first use (an invalid value throws there, naming it; the CLI checks it at start).
    /// Settable for tests.
    /// </summary>
    public static TensorCoreTile? ConvTileOverride
    {
        get
        {
            if (!_convTileRead) { _convTileOverride = TensorCoreGemm.ParseTile("FVL_TC_CONV_TILE", Environment.GetEnvironmentVariable("FVL_TC_CONV_TILE")); _convTileRead = true; }
            return _convTileOverride;
        }
        set { _convTileOverride = value; _convTileRead = true; }
    }
    private static TensorCoreTile? _convTileOverride;
    private static bool _convTileRead;

    private static ConvVersion PickVersion(Accelerator acc, AcceleratorStream st, ArrayView<float> a, ArrayView<float> b, ArrayView<float> o,
        ArrayView<float> bias, ConvGemmShape s, ConvVersion rule)
        => KernelTuner.Pick(acc, st, TuneKey(s, Precision.Fp32, false), rule, TunedVersions, c => LaunchFp32(acc, st, a, b, o, bias, s, c));

    private static void LaunchFp32(Accelerator acc, AcceleratorStream? stream, ArrayView<float> a, ArrayView<float> b, ArrayView<float> o,
        ArrayView<float> bias, ConvGemmShape s, ConvVersion v)
    {
        if (v is not (ConvVersion.Tile64 or ConvVersion.Tile128 or ConvVersion.Tile128Prefetch or ConvVersion.Tile64Prefetch))
            throw new ArgumentOutOfRangeException(nameof(v), v, "conv2d (ilgpu): unknown version");
        int t = TileOf(v);
        int tilesM = (s.M + t - 1) / t, tilesN = (s.N + t - 1) / t;
        var cfg = new KernelConfig(new Index3D(tilesN, Math.Min(tilesM, 65535), Math.Min(s.Splits, 65535)), new Index3D(GroupSizeOf(acc, v), 1, 1));
        CudaRuntime.CountLaunch();
        GemmKernel(acc, v)(stream ?? acc.DefaultStream, cfg, a, b, o, bias.Length > 0 ? bias : o, s);
    }

    private static void CheckPrecision(string op, Precision precision)
    {
        if (precision is not (Precision.Fp32 or Precision.Tf32 or Precision.Bf16))
            throw new ArgumentOutOfRangeException(nameof(precision), precision, $"{op} (ilgpu): precision must be Fp32, Tf32 or Bf16");
    }

    private static ConvGemmShape Geometry(string op, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams p)
    {
        string Desc() => $"input [{batch},{cin},{h},{w}], weight [{cout},{cin},{kh},{kw}], {p}";
        if (batch < 0 || cin < 0 || h < 0 || w < 0 || cout < 0)
            throw new ArgumentException($"{op} (ilgpu): negative size: {Desc()}");
        if (p.StrideH < 1 || p.StrideW < 1 || p.DilationH < 1 || p.DilationW < 1 || p.PadTop < 0 || p.PadBottom < 0 || p.PadLeft < 0 || p.PadRight < 0)
            throw new ArgumentException($"{op} (ilgpu): invalid geometry (strides and dilations must be ≥ 1, paddings ≥ 0): {Desc()}");
        if (kh < 1 || kw < 1 || h + p.PadTop + p.PadBottom < p.DilationH * (kh - 1) + 1 || w + p.PadLeft + p.PadRight < p.DilationW * (kw - 1) + 1)
            throw new ArgumentException($"{op} (ilgpu): the input is too small for the kernel: {Desc()}");
        int ho = p.OutH(h, kh), wo = p.OutW(w, kw);
        // every index the kernel forms is a 32-bit int
        long biggest = Math.Max(Math.Max((long)batch * cin * h * w, (long)batch * cout * ho * wo), (long)cout * cin * kh * kw);
        if (biggest > int.MaxValue || (long)cin * kh * kw * Math.Max(1, cout) > int.MaxValue || (long)batch * ho * wo > int.MaxValue)
            throw new ArgumentException($"{op} (ilgpu): tensors over 2^31 elements are not supported: {Desc()}");
        return new ConvGemmShape
        {
            Batch = batch, Cin = cin, H = h, W = w, Cout = cout, Kh = kh, Kw = kw, Ho = ho, Wo = wo,
            Sh = p.StrideH, Sw = p.StrideW, Pt = p.PadTop, Pl = p.PadLeft, Dh = p.DilationH, Dw = p.DilationW,
        };
    }

    private static void Need(string op, string name, ArrayView<float> v, long n, ConvGemmShape s)
    {
        if (v.Length < n)
            throw new ArgumentException($"{op} (ilgpu): {name} view has {v.Length} elements, needs {n} for input [{s.Batch},{s.Cin},{s.H},{s.W}], "
                + $"weight [{s.Cout},{s.Cin},{s.Kh},{s.Kw}], output [{s.Batch},{s.Cout},{s.Ho},{s.Wo}]");
    }

    /// <summary>The output size [Ho, Wo] of a convolution (throws like the launchers when the kernel does not fit).</summary>
    public static (int Ho, int Wo) OutputSize(int h, int w, int kh, int kw, Conv2dParams p)
    {
        var g = Geometry("conv2d", 1, 1, h, w, 1, kh, kw, p);
        return (g.Ho, g.Wo);
    }

    /// <summary>
    /// y [batch, cout, Ho, Wo] ← conv2d(x [batch, cin, h, w], w [cout, cin, kh, kw]) (+ bias [cout] when
    /// <paramref name="bias"/> is non-empty), enqueued on <paramref name="stream"/> (null: the default stream). y is overwritten.
    /// <paramref name="weightRounded"/> (Tf32/Bf16 only): the caller has rounded <paramref name="weight"/> with
    /// <see cref="RoundOperands"/> for this precision, so the tensor-core kernels store it without rounding it again (same bits).
    /// </summary>
    public static void Conv2dForward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> y, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams p, ConvVersion version = ConvVersion.Auto,
        Precision precision = Precision.Fp32, TensorCoreTile? tcTile = null, bool weightRounded = false)
    {
        ArgumentNullException.ThrowIfNull(acc);
        const string op = "conv2d";
        CheckPrecision(op, precision);
        var s = Geometry(op, batch, cin, h, w, cout, kh, kw, p);
        int P = s.Ho * s.Wo;
        Need(op, "input", x, (long)batch * cin * h * w, s);
        Need(op, "weight", weight, (long)cout * cin * kh * kw, s);
        Need(op, "output", y, (long)batch * cout * P, s);
        if (bias.Length > 0 && bias.Length != cout)
            throw new ArgumentException($"{op} (ilgpu): bias has {bias.Length} elements, expected {cout} (weight [{cout},{cin},{kh},{kw}])");
        s.Mode = (int)ConvMode.Forward;
        s.M = cout; s.N = batch * P; s.K = cin * kh * kw;
        s.AStride = s.K; s.OutStride = P; s.HasBias = bias.Length > 0 ? 1 : 0;
        LaunchGemm(acc, stream, weight, x, y, bias, s, version, precision, tcTile, weightRounded && precision != Precision.Fp32,
            Tunable(version, precision, tcTile));
    }

    /// <summary>Whether the caller left the kernel to the rules (then <see cref="KernelTuner"/> may time the alternatives).</summary>
    private static bool Tunable(ConvVersion version, Precision precision, TensorCoreTile? tcTile)
        => precision == Precision.Fp32 ? version == ConvVersion.Auto : tcTile is null;

    /// <summary>gx [batch, cin, h, w] ← ∂conv2d/∂x given gy [batch, cout, Ho, Wo] (overwritten; no atomics, deterministic).
    /// <paramref name="weightRounded"/>: as in <see cref="Conv2dForward"/>.</summary>
    public static void Conv2dBackwardInput(Accelerator acc, AcceleratorStream? stream, ArrayView<float> gy, ArrayView<float> weight,
        ArrayView<float> gx, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams p, ConvVersion version = ConvVersion.Auto,
        Precision precision = Precision.Fp32, TensorCoreTile? tcTile = null, bool weightRounded = false)
    {
        ArgumentNullException.ThrowIfNull(acc);
        const string op = "conv2d backward (input)";
        CheckPrecision(op, precision);
        var s = Geometry(op, batch, cin, h, w, cout, kh, kw, p);
        Need(op, "output gradient", gy, (long)batch * cout * s.Ho * s.Wo, s);
        Need(op, "weight", weight, (long)cout * cin * kh * kw, s);
        Need(op, "input gradient", gx, (long)batch * cin * h * w, s);
        s.Mode = (int)ConvMode.BackwardInput;
        s.M = cin; s.N = batch * h * w; s.K = cout * kh * kw;
        s.AStride = kh * kw; s.OutStride = h * w;
        LaunchGemm(acc, stream, weight, gy, gx, default, s, version, precision, tcTile, weightRounded && precision != Precision.Fp32,
            tunable: Tunable(version, precision, tcTile));
    }

    /// <summary>
    /// gw [cout, cin, kh, kw] ← ∂conv2d/∂w and, when <paramref name="gb"/> is non-empty, gb [cout] ← Σ gy (both overwritten).
    /// The reduction runs over batch·Ho·Wo, often with few output tiles (ResNet layer3/4): given a <paramref name="workspace"/>
    /// of at least 2·cout·cin·kh·kw floats, the K range is split (deterministic split-K: partials into the workspace, then an
    /// in-order sum). <paramref name="splits"/> 0 picks the count (enough groups for twice the multiprocessors, each chunk at
    /// least 256 deep, as many as the workspace holds); 1 disables it.
    /// </summary>
    public static void Conv2dBackwardWeight(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> gy,
        ArrayView<float> gw, ArrayView<float> gb, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams p, ConvVersion version = ConvVersion.Auto,
        ArrayView<float> workspace = default, int splits = 0, Precision precision = Precision.Fp32, TensorCoreTile? tcTile = null)
    {
        ArgumentNullException.ThrowIfNull(acc);
        const string op = "conv2d backward (weight)";
        CheckPrecision(op, precision);
        var s = Geometry(op, batch, cin, h, w, cout, kh, kw, p);
        int P = s.Ho * s.Wo;
        Need(op, "input", x, (long)batch * cin * h * w, s);
        Need(op, "output gradient", gy, (long)batch * cout * P, s);
        Need(op, "weight gradient", gw, (long)cout * cin * kh * kw, s);
        if (gb.Length > 0 && gb.Length != cout)
            throw new ArgumentException($"{op} (ilgpu): bias gradient has {gb.Length} elements, expected {cout} (weight [{cout},{cin},{kh},{kw}])");
        s.Mode = (int)ConvMode.BackwardWeight;
        s.M = cout; s.N = cin * kh * kw; s.K = batch * P;
        s.AStride = P; s.OutStride = s.N;
        if (splits < 0) throw new ArgumentException($"{op} (ilgpu): splits must be ≥ 0, got {splits}");
        long mn = (long)s.M * s.N;
        int sp = 1;
        bool tunable = Tunable(version, precision, tcTile);
        if (version == ConvVersion.Auto) version = ChooseBackwardWeight(acc, s.M, s.N, s.K, workspace.Length >= 2 * mn);
        if (mn > 0 && s.K > 0 && workspace.Length >= 2 * mn)
        {
            long want = splits > 0 ? splits : WantedSplits(acc, s.M, s.N, s.K, version, precision, tcTile);
            long cap = Math.Min(workspace.Length / mn, splits > 0 ? long.MaxValue : Math.Max(1, s.K / 256));
            sp = (int)Math.Clamp(Math.Min(want, cap), 1, 65535);
        }
        else if (splits > 1 && mn > 0)
            throw new ArgumentException($"{op} (ilgpu): {splits} splits need a workspace of {splits * mn} floats, got {workspace.Length}");
        int chunk = s.K;
        if (sp > 1)
        {
            chunk = (s.K + sp - 1) / sp;
            chunk = (chunk + BK - 1) / BK * BK;
            sp = (s.K + chunk - 1) / chunk;
            if ((long)sp * mn > int.MaxValue) throw new ArgumentException($"{op} (ilgpu): split-K workspace over 2^31 elements ({sp}·{mn})");
        }
        if (sp > 1)
        {
            s.Splits = sp; s.KChunk = chunk; s.SplitStride = (int)mn;
            LaunchGemm(acc, stream, gy, x, workspace, default, s, version, precision, tcTile, tunable: tunable);
            var l2 = For(acc);
            Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int> r;
            lock (l2) r = l2.SplitReduce ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(SplitReduceKernel);
            CudaRuntime.CountLaunch();
            r(stream ?? acc.DefaultStream, Flat(acc, mn), workspace, gw, (int)mn, sp);
        }
        else LaunchGemm(acc, stream, gy, x, gw, default, s, version, precision, tcTile, tunable: tunable);
        if (gb.Length > 0 && cout > 0)
        {
            var l = For(acc);
            Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int> k;
            lock (l) k = l.BiasGrad ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(BiasGradKernel);
            CudaRuntime.CountLaunch();
            k(stream ?? acc.DefaultStream, new KernelConfig(Math.Min(cout, 1 << 16), GroupSize(acc)), gy, gb, batch, cout, P);
        }
    }

    private static PoolShape PoolCheck(string op, int planes, int h, int w, Pool2dParams p)
    {
        if (planes < 0 || h < 0 || w < 0) throw new ArgumentException($"{op} (ilgpu): negative size: {planes} planes of {h}×{w}");
        if (p.KernelH < 1 || p.KernelW < 1 || p.StrideH < 1 || p.StrideW < 1 || p.PadH < 0 || p.PadW < 0 || p.PadH > p.KernelH / 2 || p.PadW > p.KernelW / 2)
            throw new ArgumentException($"{op} (ilgpu): invalid geometry {p} (padding must be at most half the kernel)");
        if (h + 2 * p.PadH < p.KernelH || w + 2 * p.PadW < p.KernelW)
            throw new ArgumentException($"{op} (ilgpu): a {h}×{w} plane is too small for {p}");
        return new PoolShape { Planes = planes, H = h, W = w, Ho = p.OutH(h), Wo = p.OutW(w), Kh = p.KernelH, Kw = p.KernelW, Sh = p.StrideH, Sw = p.StrideW, Ph = p.PadH, Pw = p.PadW };
    }

    private static void NeedP<T>(string op, string name, ArrayView<T> v, long n, PoolShape s) where T : unmanaged
    {
        if (v.Length < n)
            throw new ArgumentException($"{op} (ilgpu): {name} view has {v.Length} elements, needs {n} for {s.Planes} planes of {s.H}×{s.W} → {s.Ho}×{s.Wo}");
    }

    /// <summary>y, indices [planes, Ho, Wo] ← max pooling of x [planes, h, w] (planes = N·C), the CPU backend's semantics.</summary>
    public static void MaxPool2dForward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> y, ArrayView<long> indices,
        int planes, int h, int w, Pool2dParams p)
    {
        ArgumentNullException.ThrowIfNull(acc);
        const string op = "max_pool2d";
        var s = PoolCheck(op, planes, h, w, p);
        long outs = (long)planes * s.Ho * s.Wo;
        NeedP(op, "input", x, (long)planes * h * w, s); NeedP(op, "output", y, outs, s); NeedP(op, "indices", indices, outs, s);
        if (outs == 0) return;
        var l = For(acc);
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<long>, PoolShape> k;
        lock (l) k = l.MaxFwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<long>, PoolShape>(MaxPoolForwardKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, Flat(acc, outs), x, y, indices, s);
    }

    /// <summary>
    /// gx [planes, h, w] ← scatter-add of gy through indices (overwritten). With the pooling geometry <paramref name="p"/>
    /// this is the parallel gather; without it (null), the plane-serial scatter. Both are deterministic and equal the CPU
    /// backend bit for bit when the indices come from the forward pass (the gather only looks inside each element's windows).
    /// </summary>
    public static void MaxPool2dBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> gy, ArrayView<long> indices, ArrayView<float> gx,
        int planes, int h, int w, int ho, int wo, Pool2dParams? p)
    {
        ArgumentNullException.ThrowIfNull(acc);
        const string op = "max_pool2d backward";
        PoolShape s;
        if (p is { } pp)
        {
            s = PoolCheck(op, planes, h, w, pp);
            if (s.Ho != ho || s.Wo != wo)
                throw new ArgumentException($"{op} (ilgpu): output gradient {ho}×{wo} does not match {pp} on a {h}×{w} plane ({s.Ho}×{s.Wo})");
        }
        else
        {
            if (planes < 0 || h < 0 || w < 0 || ho < 0 || wo < 0) throw new ArgumentException($"{op} (ilgpu): negative size: {planes} planes of {h}×{w} → {ho}×{wo}");
            s = new PoolShape { Planes = planes, H = h, W = w, Ho = ho, Wo = wo };
        }
        NeedP(op, "output gradient", gy, (long)planes * ho * wo, s); NeedP(op, "indices", indices, (long)planes * ho * wo, s);
        NeedP(op, "input gradient", gx, (long)planes * h * w, s);
        if ((long)planes * h * w == 0) return;
        var l = For(acc);
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<long>, ArrayView<float>, PoolShape> k;
        if (p is not null)
        {
            lock (l) k = l.MaxBwdGather ??= acc.LoadKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>, PoolShape>(MaxPoolBackwardGatherKernel);
            CudaRuntime.CountLaunch();
            k(stream ?? acc.DefaultStream, Flat(acc, (long)planes * h * w), gy, indices, gx, s);
        }
        else
        {
            lock (l) k = l.MaxBwdScatter ??= acc.LoadKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>, PoolShape>(MaxPoolBackwardScatterKernel);
            CudaRuntime.CountLaunch();
            k(stream ?? acc.DefaultStream, Flat(acc, planes), gy, indices, gx, s);
        }
    }

    private static PoolShape AdaptiveCheck(string op, int planes, int h, int w, int ho, int wo)
    {
        if (planes < 0 || h < 0 || w < 0 || ho < 0 || wo < 0) throw new ArgumentException($"{op} (ilgpu): negative size: {planes} planes of {h}×{w} → {ho}×{wo}");
        if ((ho == 0 || wo == 0) && (long)planes * h * w > 0 || (h == 0 || w == 0) && (long)planes * ho * wo > 0)
            throw new ArgumentException($"{op} (ilgpu): cannot pool {planes} planes of {h}×{w} to {ho}×{wo}");
        return new PoolShape { Planes = planes, H = h, W = w, Ho = ho, Wo = wo };
    }

    /// <summary>y [planes, ho, wo] ← adaptive average pooling of x [planes, h, w] (PyTorch's windows, float64 sums).</summary>
    public static void AdaptiveAvgPool2dForward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> y,
        int planes, int h, int w, int ho, int wo)
    {
        ArgumentNullException.ThrowIfNull(acc);
        const string op = "adaptive_avg_pool2d";
        var s = AdaptiveCheck(op, planes, h, w, ho, wo);
        NeedP(op, "input", x, (long)planes * h * w, s); NeedP(op, "output", y, (long)planes * ho * wo, s);
        if ((long)planes * ho * wo == 0) return;
        var l = For(acc);
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, PoolShape> k;
        lock (l) k = l.AvgFwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, PoolShape>(AdaptiveAvgForwardKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, Flat(acc, (long)planes * ho * wo), x, y, s);
    }

    /// <summary>gx [planes, h, w] ← adaptive average pooling backward of gy [planes, ho, wo] (overwritten).</summary>
    public static void AdaptiveAvgPool2dBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> gy, ArrayView<float> gx,
        int planes, int h, int w, int ho, int wo)
    {
        ArgumentNullException.ThrowIfNull(acc);
        const string op = "adaptive_avg_pool2d backward";
        var s = AdaptiveCheck(op, planes, h, w, ho, wo);
        NeedP(op, "output gradient", gy, (long)planes * ho * wo, s); NeedP(op, "input gradient", gx, (long)planes * h * w, s);
        if ((long)planes * h * w == 0) return;
        var l = For(acc);
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, PoolShape> k;
        lock (l) k = l.AvgBwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, PoolShape>(AdaptiveAvgBackwardKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, Flat(acc, (long)planes * h * w), gy, gx, s);
    }
}
