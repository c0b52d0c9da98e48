using FashionViL.Autograd;

namespace FashionViL.GpuCheck;

/// <summary>Outcome of one op check: the largest error relative to the largest reference magnitude, over outputs and gradients.</summary>
public sealed record CheckResult(string Op, string Status, double MaxRelError, double Tolerance, string Detail)
{
    public bool Failed => Status == "FAIL";
}

/// <summary>
/// The correctness suite of the CUDA backend: every op runs on the CPU backend and on <c>Device.Cuda(n)</c> with the
/// same random inputs; outputs and input gradients are compared. An op the device does not have yet is reported
/// as MISSING (its NotSupportedException message), not hidden.
/// </summary>
public static partial class Checks
{
    /// <param name="Under">When set, the whole check (forward and backward, CPU and device) runs under
    /// <c>MatMulPrecision.Use(Under)</c>: the tensor-core paths of every GEMM the op and its gradients issue.</param>
    private sealed record Case(string Op, int[][] Shapes, Func<Tensor[], Tensor> F, double Tol, double Lo = -2, double Hi = 2, bool Grad = true,
        Precision? Under = null);

    /// <summary>The cases; <paramref name="sms"/> (the device's multiprocessors) sizes those that must reach a path chosen
    /// by how many tiles fill the device, so that they reach it on an H100 and stay small on the 2-SM emulator.</summary>
    private static IEnumerable<Case> Cases(int sms)
    {
        foreach (var (name, f) in new (string, Func<Tensor, Tensor>)[]
        {
            ("neg", x => x.Neg()), ("abs", x => x.Abs()), ("exp", x => x.Exp()), ("sin", x => x.Sin()), ("cos", x => x.Cos()),
            ("tanh", x => x.Tanh()), ("sigmoid", x => x.Sigmoid()), ("relu", x => x.Relu()), ("gelu", x => x.Gelu()),
            ("silu", x => x.Silu()), ("erf", x => x.Erf()), ("square", x => x.Square()), ("clamp", x => x.Clamp(-0.5, 0.7)),
        })
            yield return new(name, [[37, 29]], t => f(t[0]), 1e-5);
        yield return new("log", [[37, 29]], t => t[0].Log(), 1e-5, 0.1, 3);
        yield return new("sqrt", [[37, 29]], t => t[0].Sqrt(), 1e-5, 0.1, 3);
        yield return new("add (broadcast)", [[7, 1, 33], [5, 1]], t => t[0] + t[1], 1e-6);
        yield return new("mul (broadcast)", [[7, 5, 33], [33]], t => t[0] * t[1], 1e-6);
        yield return new("div", [[7, 33], [7, 33]], t => t[0] / t[1], 1e-5, 0.5, 2);
        yield return new("maximum", [[7, 33], [1, 33]], t => t[0].Maximum(t[1]), 1e-6);
        yield return new("where", [[9, 17], [9, 17]], t => { using var c = t[0].Gt(t[1]); return Ops.Where(c, t[0], t[1]); }, 1e-6);
        yield return new("sum (dims 0,2)", [[6, 5, 40]], t => t[0].Sum([0, 2]), 1e-5);
        yield return new("mean (last)", [[33, 300]], t => t[0].Mean(-1), 1e-5);
        yield return new("var", [[17, 64]], t => t[0].Var([1]), 1e-5);
        yield return new("max (dim)", [[17, 64]], t => t[0].Max(1).Values, 1e-6);
        yield return new("permute+contiguous", [[4, 5, 6]], t => t[0].Permute(2, 0, 1).Contiguous(), 0);
        yield return new("matmul 129x65x33", [[129, 65], [65, 33]], t => t[0].Matmul(t[1]), 1e-5);
        yield return new("matmul transposed views", [[65, 129], [33, 65]], t => t[0].T.Matmul(t[1].T), 1e-5);
        yield return new("bmm", [[3, 31, 17], [3, 17, 45]], t => Ops.Bmm(t[0], t[1]), 1e-5);
        yield return new("linear (+bias)", [[4, 50, 96], [70, 96], [70]], t => Ops.Linear(t[0], t[1], t[2]), 1e-5);
        yield return new("layer_norm", [[50, 768], [768], [768]], t => t[0].LayerNorm(t[1], t[2], 1e-12), 1e-4);
        yield return new("softmax", [[50, 768]], t => t[0].Softmax(-1), 1e-5);
        yield return new("log_softmax", [[5, 30522]], t => t[0].LogSoftmax(-1), 1e-5);
        yield return new("cross_entropy (ignore_index)", [[6, 30522]], t =>
        {
            using var y = Tensor.FromArray(new long[] { 5, -100, 30521, 0, 777, -100 }, 6);
            using var yd = y.To(t[0].Device);
            return Ops.CrossEntropy(t[0], yd);
        }, 1e-5);
        yield return new("conv2d 3x3 s1 p1", [[2, 8, 11, 9], [16, 8, 3, 3], [16]], t => Ops.Conv2d(t[0], t[1], t[2], 1, 1), 1e-4);
        yield return new("conv2d 7x7 s2 p3 (stem)", [[2, 3, 23, 21], [16, 3, 7, 7]], t => Ops.Conv2d(t[0], t[1], null, 2, 3), 1e-4);
        yield return new("conv2d 3x3 s2 pad (0,1,0,1)", [[2, 8, 10, 12], [8, 8, 3, 3], [8]], t => Ops.Conv2d(t[0], t[1], t[2], new Conv2dParams(2, 2, 0, 1, 0, 1)), 1e-4);
        yield return new("conv2d 1x1 s2", [[2, 16, 9, 9], [24, 16, 1, 1]], t => Ops.Conv2d(t[0], t[1], null, 2, 0), 1e-4);
        yield return new("adaptive_avg_pool2d 1x1", [[3, 5, 7, 7]], t => Ops.AdaptiveAvgPool2d(t[0], 1, 1), 1e-6);
        yield return new("max_pool2d 3x3 s2 p1", [[2, 4, 11, 9]], t => Ops.MaxPool2d(t[0], 3, 2, 1), 1e-6);
        yield return new("batch_norm (train)", [[4, 6, 5, 5], [6], [6]], t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true), 1e-4);
        yield return new("group_norm", [[2, 64, 4, 4], [64], [64]], t => Ops.GroupNorm(t[0], 32, t[1], t[2], 1e-6), 1e-4);
        yield return new("attention (padding mask)", [[2, 2, 5, 64], [2, 2, 7, 64], [2, 2, 7, 64]], t =>
        {
            var m = new float[2 * 7];
            for (int j = 5; j < 7; j++) m[7 + j] = -10000f;
            using var mask = Tensor.FromArray(m, 2, 1, 1, 7);
            using var md = mask.To(t[0].Device);
            return Ops.Attention(t[0], t[1], t[2], md, 0.125);
        }, 1e-4);
        // BERT's head split and merge as views (no copies): q/k/v are Reshape → Permute views of [B, L, 768] projections (head
        // stride 64, row stride 768), the output is written into [B, L, 12, 64] rows and merged by a free Permute → Reshape;
        // backward reads the output gradient strided and writes gq/gk/gv in the projections' layout. 40 tokens: partial
        // query/key tiles; dropout 0.1 from the shared Philox stream; a padding mask on the second sample.
        yield return new("attention (strided BERT heads 12x64, dropout)", [[2, 40, 768], [2, 40, 768], [2, 40, 768]], t =>
        {
            var m = new float[2 * 40];
            for (int j = 33; j < 40; j++) m[40 + j] = -10000f;
            using var mask = Tensor.FromArray(m, 2, 1, 1, 40);
            using var md = mask.To(t[0].Device);
            Tensor Heads(Tensor y) { using var r = y.Reshape(2, 40, 12, 64); return r.Permute(0, 2, 1, 3); }
            using var q = Heads(t[0]); using var k = Heads(t[1]); using var v = Heads(t[2]);
            using var o = Ops.Attention(q, k, v, md, 0.125, 0.1, true, new Generator(21));
            using var merged = o.Permute(0, 2, 1, 3);
            return merged.Reshape(2, 40, 768);
        }, 1e-4);
        // Rows the kernels cannot move as float4 (row stride 65, offset 1: AttentionKernels.Vec is false for every operand), so
        // the scalar row path runs on the device too; S = 37 and 21 query rows: key and query tiles with tails; dropout.
        yield return new("attention (rows at odd offsets: scalar row path, dropout)", [[2, 2, 21, 65], [2, 2, 37, 65], [2, 2, 37, 65]], t =>
        {
            using var q = t[0].Narrow(3, 1, 64); using var k = t[1].Narrow(3, 1, 64); using var v = t[2].Narrow(3, 1, 64);
            return Ops.Attention(q, k, v, null, 0.125, 0.1, true, new Generator(23));
        }, 1e-4);
        // The VQ-VAE's mid-block attention: one 512-wide head over 7×7 positions, wider than the fused kernel's 128, so the
        // composed path (GEMM, softmax, GEMM) runs; with dropout to reach the Philox mask of the composed forward and backward.
        yield return new("attention (head dim 512, composed, dropout)", [[2, 1, 49, 512], [2, 1, 49, 512], [2, 1, 49, 512]],
            t => Ops.Attention(t[0], t[1], t[2], null, 1 / Math.Sqrt(512), 0.1, true, new Generator(22)), 1e-4);
        yield return new("index_select (dim 1)", [[4, 9, 5]], t =>
        {
            using var idx = Tensor.FromArray(new long[] { 8, 0, 3, 3 }, 4);
            using var id = idx.To(t[0].Device);
            return t[0].IndexSelect(1, id);
        }, 1e-6);
        yield return new("gather (dim 1)", [[4, 9]], t =>
        {
            using var idx = Tensor.FromArray(Enumerable.Range(0, 36).Select(i => (long)(i * 7 % 9)).ToArray(), 4, 9);
            using var id = idx.To(t[0].Device);
            return t[0].Gather(1, id);
        }, 1e-6);
        yield return new("scatter_add (dim 0)", [[6, 5], [6, 5]], t =>
        {
            using var idx = Tensor.FromArray(Enumerable.Range(0, 30).Select(i => (long)(i * 5 % 6)).ToArray(), 6, 5);
            using var id = idx.To(t[0].Device);
            return t[0].ScatterAdd(0, id, t[1]);
        }, 1e-5);
        yield return new("vq_lookup (1024 codes)", [[49, 64], [1024, 64]], t => Ops.VqLookup(t[0], t[1]), 0, Grad: false);
        yield return new("batch_norm (eval)", [[4, 6, 5, 5], [6], [6]], t =>
        {
            using var rm = Tensor.Full([6], 0.1, DType.Float32, t[0].Device);
            using var rv = Tensor.Full([6], 1.5, DType.Float32, t[0].Device);
            return Ops.BatchNorm2d(t[0], t[1], t[2], rm, rv, false);
        }, 1e-5);
        yield return new("topk (k=5 of 300)", [[7, 300]], t => t[0].TopK(5).Values, 0);
        yield return new("sort (descending, 2500 wide)", [[3, 2500]], t => t[0].Sort(true).Values, 0);
        yield return new("sort (ascending, 300 wide)", [[3, 300]], t => t[0].Sort(false).Values, 0);
        yield return new("topk smallest (k=7 of 33)", [[5, 33]], t => t[0].TopK(7, false).Values, 0);
        yield return new("masked_select", [[9, 33]], t => { using var m = t[0].Gt(Tensor.Zeros([], DType.Float32, t[0].Device)); return t[0].MaskedSelect(m); }, 0);
        yield return new("dropout p=0.1 (Philox)", [[64, 77]], t => Ops.Dropout(t[0], 0.1, true, new Generator(4)), 1e-6);
        // Paths chosen by occupancy (issue 7). Split-K: one output tile and a deep K (the weight gradient of a linear over 1,200
        // rows, and of a convolution over 4·24² positions) on any device; the column-split bias gradient of the same linear.
        yield return new("linear, split-K weight gradient", [[1200, 64], [48, 64], [48]], t => Ops.Linear(t[0], t[1], t[2]), 1e-5);
        yield return new("conv2d, split-K weight gradient", [[4, 8, 24, 24], [16, 8, 3, 3]], t => Ops.Conv2d(t[0], t[1], null, 1, 1), 1e-4);
        // The prefetching fp32 conv kernels (ConvKernels.Prefetch.cs). v3 (128 tile): Cin 96 and Cout 128 (M ≥ 96 in all three
        // GEMMs), N = 4·(32·SMs + 1) positions: SMs + 1 tiles of 128 (16,900 on an H100), so forward and backward-input run
        // v3, and the weight gradient (K = 16,900, split-K) v3 with its split. v4 (64 tile): M < 96.
        yield return new($"conv2d 3x3 v3 (128 tile, prefetch) [1,96,4,{32 * sms + 1}]", [[1, 96, 4, 32 * sms + 1], [128, 96, 3, 3], [128]],
            t => Ops.Conv2d(t[0], t[1], t[2], 1, 1), 1e-4);
        yield return new("conv2d 3x3 v4 (64 tile, prefetch) M 90", [[2, 8, 11, 9], [90, 8, 3, 3], [90]], t => Ops.Conv2d(t[0], t[1], t[2], 1, 1), 1e-4);
        yield return new("layer_norm (300 rows: 5 partial blocks)", [[300, 64], [64], [64]], t => t[0].LayerNorm(t[1], t[2], 1e-12), 1e-4);
        // BERT's residual block at its width (768: three 256-thread strides), 130 rows (3 partial gw/gb blocks), p = 0.1.
        yield return new("dropout_add_layer_norm p=0.1 [130, 768]", [[130, 768], [130, 768], [768], [768]],
            t => Ops.DropoutAddLayerNorm(t[0], t[1], 0.1, true, new Generator(4), t[2], t[3], 1e-12), 1e-4);
        // fused − composed on the same device and stream: exactly zero, output and every gradient (width 770: not a multiple of the group)
        yield return new("dropout_add_layer_norm == dropout, add, layer_norm (bitwise)", [[67, 770], [67, 770], [770], [770]], t =>
        {
            using var f = Ops.DropoutAddLayerNorm(t[0], t[1], 0.1, true, new Generator(6), t[2], t[3], 1e-12);
            using var dr = Ops.Dropout(t[0], 0.1, true, new Generator(6));
            using var s = dr + t[1];
            using var c = s.LayerNorm(t[2], t[3], 1e-12);
            return f - c;
        }, 0);
        // 65,536 values per channel over 8 channels: the 1,024-thread batch-norm groups of the stem/layer1 rule
        yield return new("batch_norm (train, 1024-thread groups)", [[64, 8, 32, 32], [8], [8]], t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true), 1e-4);
        // Few, long channels: batch norm split into slices per channel (NormKernels.BatchNormSplit). min(64, SMs/2) channels of
        // 2·181·183 = 66,246 values: on an H100 64 channels (layer1's count) in ⌊264/64⌋ = 4 slices; on the 2-SM emulator 1 in 4.
        // Slices of 16,562 cross the sample boundary at 33,123. Training plain, training and eval with the fused residual + relu.
        int bnC = Math.Max(1, Math.Min(64, sms / 2));
        yield return new($"batch_norm (train, {bnC} channels split in slices)", [[2, bnC, 181, 183], [bnC], [bnC]], t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true), 1e-4);
        yield return new($"batch_norm + residual + relu (train, split)", [[2, bnC, 181, 183], [bnC], [bnC], [2, bnC, 181, 183]],
            t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true, residual: t[3], relu: true), 1e-4);
        yield return new($"batch_norm + residual + relu (eval, split)", [[2, bnC, 181, 183], [bnC], [bnC], [2, bnC, 181, 183]], t =>
        {
            using var rm = Tensor.Full([bnC], 0.1, DType.Float32, t[0].Device);
            using var rv = Tensor.Full([bnC], 1.5, DType.Float32, t[0].Device);
            return Ops.BatchNorm2d(t[0], t[1], t[2], rm, rv, false, residual: t[3], relu: true);
        }, 1e-4);
        // FVL_WINOGRAD=on's forward (F(2×2, 3×3) through transforms and a 16-way batched GEMM) against the CPU's direct
        // convolution: other rounding, not other values (fp32 ≈ 1e-6 of the largest output on the emulator); under TF32 the
        // transformed operands are rounded instead of the raw ones, so the two sides differ by TF32's rounding (≈ 1e-3).
        // Odd planes (partial tiles) and enough tiles for several GEMM column tiles.
        yield return new("conv2d 3x3 Winograd fp32 (FVL_WINOGRAD=on)", [[2, 64, 15, 17], [64, 64, 3, 3], [64]], t => Winograd(() => Ops.Conv2d(t[0], t[1], t[2], 1, 1)), 1e-5, Grad: false);
        yield return new("conv2d 3x3 Winograd tf32 (FVL_WINOGRAD=on)", [[2, 64, 15, 17], [64, 64, 3, 3], [64]], t => Winograd(() => Tf32(() => Ops.Conv2d(t[0], t[1], t[2], 1, 1))), 5e-3, Grad: false);
        yield return new("conv2d 3x3 Winograd input gradient fp32", [[2, 64, 15, 17], [64, 48, 3, 3]], t => Winograd(() => InputGradient(t[0], t[1])), 1e-5, Grad: false);
        // F(4×4, 3×3) (FVL_WINOGRAD=f4, fp32 only): its transforms' factors (up to 8 and 1/24) grow the rounding about tenfold
        yield return new("conv2d 3x3 Winograd F4 fp32 (FVL_WINOGRAD=f4)", [[2, 64, 15, 17], [64, 64, 3, 3], [64]], t => Winograd(() => Ops.Conv2d(t[0], t[1], t[2], 1, 1), Kernels.Cuda.WinogradMode.F4x4), 1e-4, Grad: false);
        yield return new("conv2d 3x3 Winograd F4 input gradient fp32", [[2, 64, 15, 17], [64, 48, 3, 3]], t => Winograd(() => InputGradient(t[0], t[1]), Kernels.Cuda.WinogradMode.F4x4), 1e-4, Grad: false);
        yield return new("group_norm + silu (fused, no grad)", [[2, 64, 4, 4], [64], [64]], t => Ops.GroupNorm(t[0], 32, t[1], t[2], 1e-6, silu: true), 1e-4, Grad: false);
        // The precision switch: forward GEMMs with TF32 operands on both sides (the CPU rounds exactly as the tensor cores
        // do; the sums differ in order only, and tensor cores may truncate inside: 1e-4 of the largest value over K ≤ 72).
        // GEMMs and convolutions run the 128×128 tile under TF32 (TensorCoreGemm.Choose / ChooseConv; the 64×32 and 128×64
        // tiles are in "tuner candidates: same bits"): 129×65 (partial tiles) and N = 64·SMs + 5.
        yield return new("matmul tf32 129x65x33", [[129, 65], [65, 33]], t => Tf32(() => t[0].Matmul(t[1])), 1e-4);
        yield return new($"matmul tf32 64x32x{64 * sms + 5}", [[64, 32], [32, 64 * sms + 5]], t => Tf32(() => t[0].Matmul(t[1])), 1e-4);
        yield return new("conv2d tf32 3x3 (128x128 tile)", [[2, 8, 8, 4 * sms + 1], [72, 8, 3, 3]], t => Tf32(() => Ops.Conv2d(t[0], t[1], null, 1, 1)), 1e-4);
        // The tensor-core convolutions forward and backward (double-buffered, register-prefetched stages: convtcpf), the whole
        // check under the precision, so all three conv GEMMs take the tensor-core kernels, on both sides with the same
        // rounded operands (sums differ in order only; 1e-4 of the largest value as above, K ≤ 9·cinW). Under TF32 every conv
        // GEMM runs the 128×128 tile (TensorCoreGemm.ChooseConv); the tiles named below are bf16's and TF32's split-K sizing
        // (TensorCoreGemm.ConvSizingTile: 64×32 for M ≤ 64, else 128×64 once ⌈M/128⌉·⌈N/64⌉ ≥ SMs):
        //   a) x [2, 8, 24, 24], w [16, 8, 3, 3]: every GEMM on 64×32; the weight gradient (M 16, N 72, K 1,152) split-K 4;
        //   b) x [2, cinW, 8, 4·SMs + 1], w [72, cinW, 3, 3]: forward (M 72), input gradient (M cinW) and weight gradient
        //      (M 72, N 9·cinW > 64·SMs) all on 128×64 — a weight gradient whose tile would be 64×32 with M > 64 runs the
        //      exact fp32 kernel under Tf32 (ConvKernels.WeightGradientPrecision) and would not match the CPU's TF32 rounding;
        //   c) x [1, cinW, 4, 4], w [130, cinW, 3, 3], 9·cinW > 64·SMs: the weight gradient (M 130, N 9·cinW) on 128×64.
        int cinW = (64 * sms + 8) / 9 + 1;
        foreach (var p in new[] { Precision.Tf32, Precision.Bf16 })
        {
            string n = p == Precision.Tf32 ? "tf32" : "bf16";
            yield return new($"conv2d {n} fwd+bwd 3x3 (64x32 tile, split-K weight grad)", [[2, 8, 24, 24], [16, 8, 3, 3], [16]],
                t => Ops.Conv2d(t[0], t[1], t[2], 1, 1), 1e-4, Under: p);
            yield return new($"conv2d {n} fwd+bwd 3x3 (128x64 tile fwd + input grad)", [[2, cinW, 8, 4 * sms + 1], [72, cinW, 3, 3]],
                t => Ops.Conv2d(t[0], t[1], null, 1, 1), 1e-4, Under: p);
            yield return new($"conv2d {n} fwd+bwd 3x3 s2 Cin {cinW} (128x64 tile weight grad)", [[1, cinW, 5, 4], [130, cinW, 3, 3]],
                t => Ops.Conv2d(t[0], t[1], null, new Conv2dParams(2, 2, 1, 1, 0, 1)), 1e-4, Under: p);
        }
        yield return new("embedding", [[50, 16]], t =>
        {
            using var ids = Tensor.FromArray(new long[] { 0, 3, 3, 49, 7, 0 }, 2, 3);
            using var idd = ids.To(t[0].Device);
            return Ops.Embedding(idd, t[0], 0);
        }, 1e-6);
        // Deterministic embedding backward at the BERT shape (issue 7): 64 texts of 75 tokens, [CLS]/[SEP] in each, padding,
        // frequent words (dozens of repeats: the heavy path) and rare ones; token types = one id 4,800 times (many tiles).
        // Tolerance 0: the weight gradient must equal the CPU backend's bit for bit (float atomics would differ on a GPU).
        // The vocabulary is BERT's on a real device; on the 2-SM emulator 2,000 rows keep the 94 MB gradient out of the test run.
        int vocab = sms >= 16 ? 30522 : 2000;
        yield return new($"embedding backward, BERT words V={vocab} (bitwise)", [[vocab, 768]], t =>
        {
            using var ids = Tensor.FromArray(BertLikeIds(64, 75, vocab, 3), 64, 75);
            using var idd = ids.To(t[0].Device);
            return Ops.Embedding(idd, t[0], 0);
        }, 0);
        yield return new("embedding backward, token types (bitwise)", [[2, 768]], t =>
        {
            using var idd = Tensor.Zeros([64, 75], DType.Int64, t[0].Device);
            return Ops.Embedding(idd, t[0], -1);
        }, 0);
    }

    /// <summary>[CLS]=101 w… [SEP]=102 [PAD]=0… rows: lengths 20–75, a quarter of the words from 40 frequent ids (200–239), the rest uniform in [240, v).</summary>
    private static long[] BertLikeIds(int b, int l, int v, int seed)
    {
        var r = new Random(seed);
        var ids = new long[b * l];
        for (int i = 0; i < b; i++)
        {
            int len = r.Next(20, l + 1);
            ids[i * l] = 101;
            for (int j = 1; j < len - 1; j++) ids[i * l + j] = r.Next(4) == 0 ? 200 + r.Next(40) : r.Next(240, v);
            ids[i * l + len - 1] = 102;   // the rest stays 0 = [PAD] (padding index: no gradient)
        }
        return ids;
    }

    /// <summary>The input gradient of a 3×3 stride-1 padding-1 convolution with weight <paramref name="w"/> [Cout, Cin, 3, 3]
    /// for the output gradient <paramref name="gy"/>, straight from the tensors' backend.</summary>
    private static Tensor InputGradient(Tensor gy, Tensor w)
    {
        var gx = Tensor.Empty([gy.Sizes[0], w.Sizes[1], gy.Sizes[2], gy.Sizes[3]], DType.Float32, gy.Device);
        Backends.Get(gy.Device).Conv2dBackwardInput(gy, w, gx, Conv2dParams.Symmetric(1, 1));
        return gx;
    }

    /// <summary>f with <c>FVL_WINOGRAD</c> = <paramref name="mode"/> (<see cref="Kernels.Cuda.CudaBackend.Winograd"/>; the CPU
    /// backend ignores it).</summary>
    private static Tensor Winograd(Func<Tensor> f, Kernels.Cuda.WinogradMode mode = Kernels.Cuda.WinogradMode.F2x2)
    {
        var was = Kernels.Cuda.CudaBackend.Winograd;
        Kernels.Cuda.CudaBackend.Winograd = mode;
        try { return f(); }
        finally { Kernels.Cuda.CudaBackend.Winograd = was; }
    }

    /// <summary>f under the TF32 switch (its backward, run later by the comparison, is fp32 on both sides).</summary>
    private static Tensor Tf32(Func<Tensor> f)
    {
        using (MatMulPrecision.Use(Precision.Tf32)) return f();
    }

    /// <summary>Runs every check on <paramref name="device"/>; <paramref name="onResult"/> sees each result as it completes.</summary>
    public static List<CheckResult> Run(Device device, Action<CheckResult>? onResult = null)
    {
        var results = new List<CheckResult>();
        void Add(CheckResult r) { results.Add(r); onResult?.Invoke(r); }
        ulong seed = 1;
        int sms = Kernels.Cuda.CudaRuntime.Get(device.Index).Accelerator.NumMultiprocessors;
        foreach (var c in Cases(sms))
        {
            using var scope = Tensor.Scope();
            try { Add(Compare(c, device, seed++)); }
            catch (NotSupportedException e) { Add(new(c.Op, "MISSING", double.NaN, c.Tol, e.Message)); }
            catch (Exception e) { Add(new(c.Op, "FAIL", double.NaN, c.Tol, $"{e.GetType().Name}: {e.Message}")); }
        }
        using (Tensor.Scope())
        {
            try { Add(UniformStream(device)); }
            catch (Exception e) { Add(new("random uniform (Philox)", "FAIL", double.NaN, 0, e.Message)); }
        }
        using (Tensor.Scope())
        {
            try { Add(AdamWMany(device, sms)); }
            catch (Exception e) { Add(new(AdamWManyName, "FAIL", double.NaN, AdamWManyTol, $"{e.GetType().Name}: {e.Message}")); }
        }
        try { Add(SameBitsCandidates(device)); }
        catch (Exception e) { Add(new(SameBitsName, "FAIL", double.NaN, 0, $"{e.GetType().Name}: {e.Message}")); }
        try { Add(TunedEqualsUntuned(device)); }
        catch (Exception e) { Add(new(TunedName, "FAIL", double.NaN, 0, $"{e.GetType().Name}: {e.Message}")); }
        using (Tensor.Scope())
        {
            try { Add(Conv1x1GemmSameBits(device)); }
            catch (Exception e) { Add(new(Conv1x1Name, "FAIL", double.NaN, 0, $"{e.GetType().Name}: {e.Message}")); }
        }
        // last: the first device run of the cp.async tile's inline PTX; a fault there (a sticky CUDA error) must not take the
        // checks above with it
        try { Add(AsyncStagesSameBits(device)); }
        catch (Exception e) { Add(new(AsyncName, "FAIL", double.NaN, 0, $"{e.GetType().Name}: {e.Message}")); }
        return results;
    }

    private const string Conv1x1Name = "conv 1x1 s1 as GEMM (FVL_CONV1X1=gemm) == direct kernels (bitwise, fp32/tf32)";

    /// <summary>
    /// <see cref="FashionViL.Kernels.Cuda.CudaBackend.Conv1x1AsGemm"/> on the device: a ResNet-50 layer1-shaped 1×1 convolution (256 → 64 channels
    /// at 56², batch 2) forward and input gradient through the batched GEMM and through the direct kernels, in fp32 and tf32:
    /// the same bits (as on the emulator), so that the switch is a pure speed choice.
    /// </summary>
    private static CheckResult Conv1x1GemmSameBits(Device device)
    {
        var be = (FashionViL.Kernels.Cuda.CudaBackend)Backends.Get(device);
        var rng = new Random(41);
        float[] R(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1); return a; }
        using var x = Tensor.FromArray(R(2 * 256 * 56 * 56), 2, 256, 56, 56).To(device);
        using var w = Tensor.FromArray(R(64 * 256), 64, 256, 1, 1).To(device);
        using var gy = Tensor.FromArray(R(2 * 64 * 56 * 56), 2, 64, 56, 56).To(device);
        var p = Conv2dParams.Symmetric(1, 0);
        var failures = new List<string>();
        bool was = FashionViL.Kernels.Cuda.CudaBackend.Conv1x1AsGemm;
        try
        {
            foreach (var pr in new[] { Precision.Fp32, Precision.Tf32 })
            {
                float[][] Run(bool gemm)
                {
                    FashionViL.Kernels.Cuda.CudaBackend.Conv1x1AsGemm = gemm;
                    using var y = Tensor.Empty([2, 64, 56, 56], DType.Float32, device);
                    using var gx = Tensor.Empty([2, 256, 56, 56], DType.Float32, device);
                    using (MatMulPrecision.Use(pr))
                    {
                        be.Conv2dForward(x, w, null, y, p);
                        be.Conv2dBackwardInput(gy, w, gx, p);
                    }
                    return [y.To(Device.Cpu).ToArray<float>(), gx.To(Device.Cpu).ToArray<float>()];
                }
                var d = Run(false);
                var g = Run(true);
                int fy = Differing(g[0], d[0]), fx = Differing(g[1], d[1]);
                if (fy > 0) failures.Add($"{pr} forward: {fy} of {d[0].Length} differ");
                if (fx > 0) failures.Add($"{pr} input gradient: {fx} of {d[1].Length} differ");
            }
        }
        finally { FashionViL.Kernels.Cuda.CudaBackend.Conv1x1AsGemm = was; }
        return failures.Count == 0 ? new(Conv1x1Name, "PASS", 0, 0, "forward and input gradient bit for bit, fp32 and tf32")
            : new(Conv1x1Name, "FAIL", double.NaN, 0, string.Join("; ", failures));
    }

    private const string AdamWManyName = "adamw multi-tensor (32 per launch)";
    private const double AdamWManyTol = 1e-5;

    /// <summary>
    /// The multi-tensor AdamW (issue 7): 41 tensors (two launches) of awkward sizes, one of them past what a single tensor's
    /// groups cover on this device (8 groups of 256 per multiprocessor: a grid-stride loop beside 40 small tensors in one
    /// launch), three groups and per-tensor step counts, three steps. It must equal one AdamWStep per tensor on the device bit
    /// for bit (any difference fails, whatever the tolerance) and the CPU backend within the tolerance.
    /// </summary>
    private static CheckResult AdamWMany(Device device, int sms)
    {
        int[] sizes = [.. Enumerable.Range(0, 40).Select(i => 1 + (i * 37) % 301), sms * 8 * 256 + 333];
        var g = new Generator(17);
        var init = sizes.Select(n => g.Uniform([n], -1, 1)).ToArray();
        Tensor[] Copy(Device d) => init.Select(t => t.To(d)).ToArray();
        Tensor[] Zeros(Device d) => sizes.Select(n => Tensor.Zeros([n], DType.Float32, d)).ToArray();
        var (pc, mc, vc) = (Copy(Device.Cpu), Zeros(Device.Cpu), Zeros(Device.Cpu));
        var (pm, mm, vm) = (Copy(device), Zeros(device), Zeros(device));
        var (p1, m1, v1) = (Copy(device), Zeros(device), Zeros(device));
        var cpu = Backends.Get(Device.Cpu); var dev = Backends.Get(device);
        (double Lr, double Wd)[] groups = [(1e-3, 1e-2), (2e-2, 0), (2e-2, 1e-4)];
        for (int s = 1; s <= 3; s++)
        {
            var hp = sizes.Select((_, i) => new AdamWParams(groups[i % 3].Lr, 0.9, 0.999, 1e-6, groups[i % 3].Wd, s + 5 * (i % 2))).ToArray();
            var gc = sizes.Select(n => g.Uniform([n], -2, 2)).ToArray();
            var gd = gc.Select(t => t.To(device)).ToArray();
            cpu.AdamWStepMany(sizes.Select((_, i) => new AdamWItem(pc[i], gc[i], mc[i], vc[i], hp[i])).ToList());
            dev.AdamWStepMany(sizes.Select((_, i) => new AdamWItem(pm[i], gd[i], mm[i], vm[i], hp[i])).ToList());
            for (int i = 0; i < sizes.Length; i++) dev.AdamWStep(p1[i], gd[i], m1[i], v1[i], hp[i]);
        }
        double err = 0; string worst = "";
        for (int i = 0; i < sizes.Length; i++)
        {
            foreach (var (a, b, what) in new[] { (pm[i], p1[i], "param"), (mm[i], m1[i], "exp_avg"), (vm[i], v1[i], "exp_avg_sq") })
                if (!a.ToArray<float>().AsSpan().SequenceEqual(b.ToArray<float>()))
                    return new(AdamWManyName, "FAIL", double.NaN, AdamWManyTol, $"{what} of tensor {i} ([{sizes[i]}]) differs from one AdamWStep per tensor on the device");
            foreach (var (a, b, what) in new[] { (pm[i], pc[i], "param"), (vm[i], vc[i], "exp_avg_sq") })
            {
                double e = RelError(a, b);
                if (e > err) { err = e; worst = $"{what} of tensor {i} ([{sizes[i]}])"; }
            }
        }
        return new(AdamWManyName, err <= AdamWManyTol ? "PASS" : "FAIL", err, AdamWManyTol, $"bitwise equal to per-tensor on the device; worst vs CPU: {worst}");
    }

    private static CheckResult Compare(Case c, Device device, ulong seed)
    {
        if (c.Under is not { } precision) return CompareCore(c, device, seed);
        using (MatMulPrecision.Use(precision)) return CompareCore(c, device, seed);
    }

    private static CheckResult CompareCore(Case c, Device device, ulong seed)
    {
        var g = new Generator(seed);
        var cpu = c.Shapes.Select(s => { var t = g.Uniform(s, c.Lo, c.Hi); t.RequiresGrad = c.Grad; return t; }).ToArray();
        var dev = cpu.Select(t => { var d = t.To(device); d.RequiresGrad = c.Grad; return d; }).ToArray();
        var want = c.F(cpu);
        var got = c.F(dev);
        double err = RelError(got, want);
        string worst = "output";
        if (c.Grad && want.RequiresGrad)
        {
            using var w = g.Uniform(want.Shape, 0.5, 1.5);
            using var wd = w.To(device);
            (want * w).Sum().Backward();
            (got * wd).Sum().Backward();
            for (int i = 0; i < cpu.Length; i++)
            {
                if (cpu[i].Grad is null) continue;
                double e = RelError(dev[i].Grad!, cpu[i].Grad!);
                if (e > err) { err = e; worst = $"grad of input {i}"; }
            }
        }
        foreach (var t in cpu.Concat(dev)) t.Grad = null;
        return new(c.Op, err <= c.Tol ? "PASS" : "FAIL", err, c.Tol, $"worst: {worst}");
    }

    private static CheckResult UniformStream(Device device)
    {
        var a = new Generator(9).Uniform([1000, 33]);
        var b = new Generator(9).Uniform([1000, 33], 0, 1, DType.Float32, device);
        double err = RelError(b, a);
        return new("random uniform (Philox)", err == 0 ? "PASS" : "FAIL", err, 0, "must be bit-identical to the CPU stream");
    }

    /// <summary>max |got − want| / max |want| (0 when both are all zeros; NaN anywhere counts as infinite).</summary>
    public static double RelError(Tensor got, Tensor want)
    {
        if (!got.Sizes.SequenceEqual(want.Sizes)) return double.PositiveInfinity;
        var gv = got.ToArray<double>(); var wv = want.ToArray<double>();
        double maxAbs = 0, maxDiff = 0;
        for (int i = 0; i < wv.Length; i++)
        {
            if (double.IsNaN(gv[i]) != double.IsNaN(wv[i])) return double.PositiveInfinity;
            if (double.IsNaN(wv[i])) continue;
            maxAbs = Math.Max(maxAbs, Math.Abs(wv[i]));
            maxDiff = Math.Max(maxDiff, Math.Abs(gv[i] - wv[i]));
        }
        return maxDiff == 0 ? 0 : maxDiff / Math.Max(maxAbs, 1e-30);
    }
}
