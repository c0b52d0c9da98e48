using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Contract members backed by the standalone kernel families (<see cref="GemmKernels"/>, <see cref="RowKernels"/>):
/// validation as on the CPU backend, then one launcher call. Float32 only on the device.
/// </summary>
public sealed partial class CudaBackend
{
    private static void RequireF32(string op, params Tensor?[] ts)
    {
        foreach (var t in ts)
            if (t is not null && t.DType != DType.Float32)
                throw new NotSupportedException($"cuda: {op}: device kernels compute in float32, got {t.DType.Name()} for {t.ShapeString} (use the CPU backend for float64)");
    }

    private void RequireDense(string op, params (Tensor? T, string Name)[] ts)
    {
        foreach (var (t, name) in ts)
        {
            if (t is null) continue;
            RequireHere(t, op);
            RequireContiguous(t, op, name);
        }
    }

    /// <summary>A contiguous version of an input (the tensor itself, or a temporary device copy the caller disposes).</summary>
    private static Tensor Dense(Tensor t) => t.ContiguousRaw();

    private ArrayView<float>? ViewOrNull(Tensor? t) => t is null ? null : View<float>(t);

    public void MatMul(Tensor a, Tensor b, Tensor c, bool transA, bool transB, double alpha = 1, double beta = 0, Tensor? bias = null)
        => MatMul(a, b, c, transA, transB, alpha, beta, bias, aRounded: false, bRounded: false);

    /// <summary><see cref="MatMul(Tensor, Tensor, Tensor, bool, bool, double, double, Tensor?)"/> for operands the caller already
    /// rounded to TF32 (<paramref name="aRounded"/>, <paramref name="bRounded"/>; honoured under Tf32 only: the tensor-core
    /// GEMM then neither rounds them again nor makes a rounded copy; the same bits, as rounding is idempotent).</summary>
    internal void MatMul(Tensor a, Tensor b, Tensor c, bool transA, bool transB, double alpha, double beta, Tensor? bias, bool aRounded, bool bRounded)
    {
        RequireF32("matmul", a, b, c, bias);
        var p = MatMulPlan.Create(a, b, c, transA, transB, bias);
        if (c.Numel == 0) return;
        var args = new GemmArgs
        {
            A = View<float>(a), B = View<float>(b), C = View<float>(c), Bias = bias is null ? default : View<float>(bias),
            M = p.M, N = p.N, K = p.K, Batch = p.Batch, Lda = p.Lda, Ldb = p.Ldb, Ldc = p.N,
            StrideA = p.StrideA, StrideB = p.StrideB, StrideC = (long)p.M * p.N,
            TransA = transA, TransB = transB, Alpha = (float)alpha, Beta = (float)beta,
        };
        // MatMulPrecision: Fp32 runs the exact SGEMM; Tf32/Bf16 the tensor-core kernel (rounded operands, fp32 accumulation).
        var precision = MatMulPrecision.Current;
        if (precision == Precision.Tf32) { args.ARounded = aRounded; args.BRounded = bRounded; }
        // Split-K when C has fewer tiles than the device has multiprocessors (BERT's 768 × 768 weight gradients): partial
        // products into a workspace from the caching allocator, then an in-order sum with the epilogue.
        // KernelTuner (FVL_TUNE=1): the candidates give the same bits; off, the rule's pick runs at no cost. The split count
        // is the rule's either way (another split would sum in another order).
        int splits = GemmSplitK.Splits(Acc, args, precision);
        if (splits > 1)
        {
            MatMulSplit(args, precision, splits);
            return;
        }
        if (precision == Precision.Fp32)
        {
            LaunchSgemm(args, KernelTuner.IsOn ? PickSgemm(args) : Sgemm);
            return;
        }
        var tile = GemmTile(args, precision);
        if (KernelTuner.IsOn) tile = PickTile(args, precision, tile);
        LaunchTensorCoreGemm(args, precision, tile);
    }

    /// <summary>Split-K: partial products into a workspace from the caching allocator, then the in-order sum; with the tuner
    /// on, the partial products' kernel is tuned (the split count stays the rule's).</summary>
    private void MatMulSplit(GemmArgs args, Precision precision, int splits)
    {
        using var work = Tensor.Empty([checked((int)GemmSplitK.Workspace(args, splits))], DType.Float32, Device);
        var ws = View<float>(work);
        void Split(GemmVersion v, TensorCoreTile? t)
        {
            int n = GemmSplitK.Launch(Acc, Stream, args, precision, ws, splits, v, t);
            for (int i = 0; i < n; i++) CudaRuntime.CountLaunch();
        }
        if (!KernelTuner.IsOn)
            Split(Sgemm, precision == Precision.Fp32 ? null : GemmTile(args, precision));
        else if (precision == Precision.Fp32)
            Split(KernelTuner.Pick(Acc, Stream, $"{GemmTuneKey(args, precision)} splits{splits}", GemmKernels.Best, TunedGemmVersions, v => Split(v, null), SaveFor(args)), null);
        else
        {
            var rule = GemmTile(args, precision);
            Split(GemmKernels.Best, KernelTuner.Pick(Acc, Stream, $"{GemmTuneKey(args, precision)} splits{splits}", rule,
                TunedTiles(precision, rule), t => Split(GemmKernels.Best, t), SaveFor(args)));
        }
    }

    /// <summary>The tiles the tuner times for a GEMM: <see cref="TensorCoreGemm.TilesFor"/>, and every tile when the rule's pick is
    /// not among them (FVL_TC_TILE=128x128a with FVL_TC_ASYNC off: the override opted into the cp.async tile).</summary>
    private static IReadOnlyList<TensorCoreTile> TunedTiles(Precision precision, TensorCoreTile rule)
        => TensorCoreGemm.TilesFor(precision).Contains(rule) ? TensorCoreGemm.TilesFor(precision) : TensorCoreGemm.AllTilesFor(precision);

    private GemmVersion PickSgemm(GemmArgs args)
        => KernelTuner.Pick(Acc, Stream, GemmTuneKey(args, Precision.Fp32), GemmKernels.Best, TunedGemmVersions, v => LaunchSgemm(args, v), SaveFor(args));

    private TensorCoreTile PickTile(GemmArgs args, Precision precision, TensorCoreTile rule)
        => KernelTuner.Pick(Acc, Stream, GemmTuneKey(args, precision), rule, TunedTiles(precision, rule), t => LaunchTensorCoreGemm(args, precision, t), SaveFor(args));

    /// <summary>The tensor-core tile a GEMM runs without the tuner: <see cref="TensorCoreGemm.Choose"/>'s, or the one
    /// <see cref="GemmTileOverride"/> names where it runs the precision (the 128×128 tile is TF32 only).</summary>
    private TensorCoreTile GemmTile(in GemmArgs args, Precision precision)
        => GemmTileOverride is { } t && TensorCoreGemm.AllTilesFor(precision).Contains(t) ? t : TensorCoreGemm.Choose(Acc, args.M, args.N, precision);

    /// <summary>
    /// A tensor-core tile every TF32/bf16 GEMM runs instead of the rule's (<c>FVL_TC_TILE</c> = <c>rule</c> (default),
    /// <c>64x32</c>, <c>128x64</c>, <c>128x128</c> or <c>128x128a</c>, the cp.async variant), for A/B timing on a device: the
    /// tiles give the same bits, so only the speed changes; the split-K count stays the rule's. <c>128x128</c> and
    /// <c>128x128a</c> apply to TF32 only (bf16 keeps the rule). Read
    /// once, at the first use (an invalid value throws there, naming it; the CLI checks it at start). Settable for tests.
    /// </summary>
    public static TensorCoreTile? GemmTileOverride
    {
        get
        {
            if (!_gemmTileRead) { _gemmTileOverride = ParseGemmTile(Environment.GetEnvironmentVariable("FVL_TC_TILE")); _gemmTileRead = true; }
            return _gemmTileOverride;
        }
        set { _gemmTileOverride = value; _gemmTileRead = true; }
    }
    private static TensorCoreTile? _gemmTileOverride;
    private static bool _gemmTileRead;

    internal static TensorCoreTile? ParseGemmTile(string? value) => TensorCoreGemm.ParseTile("FVL_TC_TILE", value, gemm: true);

    /// <summary>For a GEMM that accumulates (beta ≠ 0, also through the split-K reduction): how the tuner saves C.</summary>
    private Func<KernelTuner.ISavedOutput>? SaveFor(GemmArgs g)
        => g.Beta != 0 ? () => SaveOutput(g.C.SubView(0, Span(g.Batch, g.StrideC, g.M, g.N, g.Ldc))) : null;

    /// <summary>A copy of an output the tuner restores between timed runs, in a block of the caching allocator (stream-ordered,
    /// counted in the peak like any other temporary).</summary>
    private KernelTuner.ISavedOutput SaveOutput(ArrayView<float> output)
    {
        var scratch = Tensor.Empty([checked((int)Math.Max(1, output.Length))], DType.Float32, Device);
        return KernelTuner.SaveOutput(Stream, output, View<float>(scratch), scratch);
    }

    /// <summary>The fp32 SGEMM versions the tuner times: v6 (the rule's pick), v5, v4 and the 64×64 v3 (more groups on narrow
    /// shapes). All sum each output's products in k order from zero, so they give the same bits.</summary>
    internal static IReadOnlyList<GemmVersion> TunedGemmVersions { get; } = [GemmVersion.Reg128x8Layout, GemmVersion.Reg128x8Prefetch, GemmVersion.Reg128x8Vec, GemmVersion.Reg64x4];

    /// <summary>The fp32 SGEMM version a GEMM runs without the tuner: <see cref="GemmKernels.Best"/>, or
    /// <see cref="SgemmOverride"/>.</summary>
    private static GemmVersion Sgemm => SgemmOverride ?? GemmKernels.Best;

    /// <summary>
    /// An fp32 SGEMM version every fp32 GEMM runs instead of the rule's (<c>FVL_SGEMM</c> = <c>rule</c> (default), <c>v3</c>,
    /// <c>v4</c>, <c>v5</c> or <c>v6</c>), for A/B timing on a device: the versions give the same bits, so only the speed
    /// changes; split-K counts stay the rule's. Read once, at the first use (an invalid value throws there, naming it; the
    /// CLI checks it at start). Settable for tests.
    /// </summary>
    public static GemmVersion? SgemmOverride
    {
        get
        {
            if (!_sgemmRead) { _sgemmOverride = ParseSgemm(Environment.GetEnvironmentVariable("FVL_SGEMM")); _sgemmRead = true; }
            return _sgemmOverride;
        }
        set { _sgemmOverride = value; _sgemmRead = true; }
    }
    private static GemmVersion? _sgemmOverride;
    private static bool _sgemmRead;

    internal static GemmVersion? ParseSgemm(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "rule" => null,
        "v3" => GemmVersion.Reg64x4,
        "v4" => GemmVersion.Reg128x8Vec,
        "v5" => GemmVersion.Reg128x8Prefetch,
        "v6" => GemmVersion.Reg128x8Layout,
        _ => throw new ArgumentException($"FVL_SGEMM = '{value}' is not an fp32 SGEMM version: rule (default), v3, v4, v5 or v6"),
    };

    private void LaunchSgemm(in GemmArgs args, GemmVersion v)
    {
        GemmKernels.Launch(Acc, Stream, args, v);
        CudaRuntime.CountLaunch();   // the launcher enqueues exactly one kernel when C is not empty
    }

    /// <summary>What decides a GEMM's speed, as the tuner's cache key: precision, sizes, transposes, shared operands, whether
    /// each operand takes the SGEMM's 128-bit path (<see cref="GemmKernels.Aligned4"/>), the epilogue, and for tensor cores the
    /// pre-rounding setting. Sizes from 64 up are rounded up to a multiple of 64 (<see cref="KernelTuner.Bucket"/>): the
    /// MLM head's rows and MPFC's masked cells change from batch to batch, and an exact key would time them again and again.
    /// Leading dimensions only count through the alignment.</summary>
    internal static string GemmTuneKey(in GemmArgs g, Precision precision)
    {
        static int Al(ArrayView<float> v, int ld, long stride) => v.Length > 0 && GemmKernels.Aligned4(v, ld, stride) ? 1 : 0;
        string pre = precision == Precision.Fp32 ? "" : $" pre{(PreRoundOperands ? MinTilesToPreRound : 0)}";
        return $"gemm {precision} b{KernelTuner.Bucket(g.Batch)} m{KernelTuner.Bucket(g.M)} n{KernelTuner.Bucket(g.N)} k{KernelTuner.Bucket(g.K)} "
            + $"{(g.TransA ? 't' : 'n')}{(g.TransB ? 't' : 'n')} sa{(g.StrideA == 0 ? 0 : 1)} sb{(g.StrideB == 0 ? 0 : 1)} "
            + $"al{Al(g.A, g.Lda, g.StrideA)}{Al(g.B, g.Ldb, g.StrideB)}{Al(g.C, g.Ldc, g.StrideC)} "
            + $"beta{(g.Beta != 0 ? 1 : 0)} bias{(g.Bias.Length > 0 ? 1 : 0)} gelu{(g.Gelu ? 1 : 0)}{pre}{(g.ARounded || g.BRounded ? $" r{(g.ARounded ? 1 : 0)}{(g.BRounded ? 1 : 0)}" : "")}";
    }

    /// <summary>One tensor-core GEMM on <paramref name="tile"/>, with the operand pre-rounding that tile takes.</summary>
    private void LaunchTensorCoreGemm(GemmArgs args, Precision precision, TensorCoreTile tile)
    {
        bool transA = args.TransA, transB = args.TransB;
        long spanA = Span(args.Batch, args.StrideA, transA ? args.K : args.M, transA ? args.M : args.K, args.Lda);
        long spanB = Span(args.Batch, args.StrideB, transB ? args.N : args.K, transB ? args.K : args.N, args.Ldb);
        // The 128×64 tile rounds each A operand once per column tile and each B operand once per row tile. Rounding an
        // operand once beforehand costs a pass over it (≈ 8 B per element); inside the kernel each extra tile costs ≈ 6
        // instructions per element. On an H100 (≈ 950 G warp instructions/s, 3 TB/s) that breaks even near 14 tiles, so an
        // operand is rounded beforehand when the other dimension has at least MinTilesToPreRound tiles: BERT's FFN and the
        // MLM head's forward (A over 48 and 477 column tiles), every weight in a BERT forward or input gradient (B over
        // 38–62 row tiles at batch 64); not A of the 768-wide outputs (12 column tiles).
        var (bm, bn) = TensorCoreGemm.TileShape(tile);
        bool big = tile is TensorCoreTile.Tile128x64 or TensorCoreTile.Tile128x128 or TensorCoreTile.Tile128x128Async && PreRoundOperands;
        bool preA = big && !args.ARounded && (args.N + bn - 1) / bn >= MinTilesToPreRound && spanA is > 0 and <= MaxRoundedOperand;
        bool preB = big && !args.BRounded && (args.M + bm - 1) / bm >= MinTilesToPreRound && spanB is > 0 and <= MaxRoundedOperand;
        using var ra = preA ? RoundedOperand(args.A, spanA, precision) : null;
        using var rb = preB ? RoundedOperand(args.B, spanB, precision) : null;
        if (ra is not null) { args.A = View<float>(ra); args.ARounded = true; }
        if (rb is not null) { args.B = View<float>(rb); args.BRounded = true; }
        TensorCoreGemm.Launch(Acc, Stream, args, precision, tile);
        CudaRuntime.CountLaunch();
    }

    /// <summary>Elements a GEMM operand's view spans: (batch − 1)·stride + (rows − 1)·ld + cols (0 when empty).</summary>
    private static long Span(int batch, long stride, int rows, int cols, int ld)
        => batch == 0 || rows == 0 || cols == 0 ? 0 : (batch - 1) * stride + (long)(rows - 1) * ld + cols;

    /// <summary>Largest operand (elements) the tensor-core GEMM rounds once in a temporary before the launch: 32 M floats
    /// (128 MB). BERT's linears at batch 64 (≤ 24.4 M) and the MLM head's forward qualify; the head's 30,522-wide gradient
    /// (146 M at T = 75, all rows) does not, and is rounded inside the kernel as before.</summary>
    internal const long MaxRoundedOperand = 32L << 20;

    /// <summary>Tiles of the other dimension from which an operand is rounded before the launch (see <see cref="MatMul"/>);
    /// settable for tests, which reach the path with small shapes.</summary>
    internal static int MinTilesToPreRound { get; set; } = 32;

    /// <summary>Whether tensor-core GEMMs and convolutions may round operands once before the launch (default on;
    /// <c>FVL_PREROUND=0</c> turns it off, for A/B timing). Results are the same bits either way.</summary>
    public static bool PreRoundOperands { get; set; } = Environment.GetEnvironmentVariable("FVL_PREROUND") != "0";

    /// <summary>
    /// Whether attention runs composed (batched GEMMs, row softmax, Philox dropout; the path heads wider than
    /// <see cref="AttentionKernels.DMax"/> always take) instead of the fused kernel for every head width: <c>FVL_ATTENTION</c>
    /// = <c>fused</c> (default) or <c>composed</c>, for A/B timing on a device. In fp32 the two agree within rounding (other
    /// sum orders), not bit for bit; the composed GEMMs follow <see cref="MatMulPrecision"/>, so under Tf32/Bf16 they also
    /// round Q, K, P, V and the gradients' operands, which the fused kernel (always fp32) does not. Read once, at the first use (an invalid value throws there, naming it; the CLI checks it
    /// at start). Settable for tests.
    /// </summary>
    public static bool ComposedAttention
    {
        get => _composedAttention ??= ParseAttentionPath(Environment.GetEnvironmentVariable("FVL_ATTENTION"));
        set => _composedAttention = value;
    }
    private static bool? _composedAttention;

    internal static bool ParseAttentionPath(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "fused" => false,
        "composed" => true,
        _ => throw new ArgumentException($"FVL_ATTENTION = '{value}' is not an attention path: fused (default) or composed"),
    };

    /// <summary>
    /// Under Tf32/Bf16, for the 128×64 tensor-core tile: the first <paramref name="span"/> elements of an operand rounded once
    /// (<see cref="ConvKernels.RoundOperands"/>, one launch into a block from the caching allocator) so the kernel's groups
    /// store their prefetched operands without rounding each again in every stage (one rounding per element instead of one
    /// per element and column (row) tile); the same bits. Only called for operands within <see cref="MaxRoundedOperand"/>.
    /// </summary>
    private Tensor RoundedOperand(ArrayView<float> v, long span, Precision precision)
    {
        var r = Tensor.Empty([(int)span], DType.Float32, Device);
        ConvKernels.RoundOperands(Acc, Stream, v.SubView(0, span), View<float>(r), precision);
        return r;
    }

    private static (int Rows, int Width) Rows(Tensor x) => x.Rank == 0 ? (1, 1) : (x.Numel / Math.Max(x.Sizes[^1], 1), x.Sizes[^1]);

    public void LayerNormForward(Tensor x, Tensor? weight, Tensor? bias, double eps, Tensor y, Tensor mean, Tensor rstd)
    {
        const string op = "layer_norm";
        RequireF32(op, x, weight, bias, y, mean, rstd);
        RequireHere(x, op);
        RequireDense(op, (weight, "weight"), (bias, "bias"), (y, "y"), (mean, "mean"), (rstd, "rstd"));
        using var xc = Dense(x);
        var (rows, d) = Rows(xc);
        RowKernels.LayerNormForward(Acc, Stream, View<float>(xc), ViewOrNull(weight), ViewOrNull(bias), (float)eps, View<float>(y), View<float>(mean), View<float>(rstd), rows, d);
    }

    public void LayerNormBackward(Tensor x, Tensor gy, Tensor? weight, Tensor mean, Tensor rstd, Tensor gx, Tensor? gw, Tensor? gb)
    {
        const string op = "layer_norm backward";
        RequireF32(op, x, gy, weight, mean, rstd, gx, gw, gb);
        RequireHere(x, op); RequireHere(gy, op);
        RequireDense(op, (weight, "weight"), (mean, "mean"), (rstd, "rstd"), (gx, "gx"), (gw, "gw"), (gb, "gb"));
        using var xc = Dense(x);
        using var gyc = Dense(gy);
        var (rows, d) = Rows(xc);
        long ws = RowKernels.LayerNormBackwardWorkspace(rows, d);
        using var work = Tensor.Empty([(int)Math.Max(ws, 1)], DType.Float32, Device);
        RowKernels.LayerNormBackward(Acc, Stream, View<float>(xc), View<float>(gyc), ViewOrNull(weight), View<float>(mean), View<float>(rstd),
            View<float>(gx), ViewOrNull(gw), ViewOrNull(gb), View<float>(work), rows, d);
    }

    public void DropoutAddLayerNormForward(Tensor h, Tensor residual, double p, ulong seed, ulong offset, Tensor? weight, Tensor? bias, double eps,
        Tensor s, Tensor y, Tensor mean, Tensor rstd)
    {
        const string op = "dropout_add_layer_norm";
        RequireF32(op, h, residual, weight, bias, s, y, mean, rstd);
        RequireHere(h, op); RequireHere(residual, op);
        RequireSameShape(h, residual, op); RequireSameShape(h, s, op); RequireSameShape(h, y, op);
        RequireDense(op, (weight, "weight"), (bias, "bias"), (s, "s"), (y, "y"), (mean, "mean"), (rstd, "rstd"));
        using var hc = Dense(h);
        using var rc = Dense(residual);
        var (rows, d) = Rows(hc);
        RowKernels.DropoutAddLayerNormForward(Acc, Stream, View<float>(hc), View<float>(rc), p, seed, offset, ViewOrNull(weight), ViewOrNull(bias), (float)eps,
            View<float>(s), View<float>(y), View<float>(mean), View<float>(rstd), rows, d);
    }

    public void DropoutAddLayerNormBackward(Tensor s, Tensor gy, Tensor? weight, Tensor mean, Tensor rstd, double p, ulong seed, ulong offset,
        Tensor gs, Tensor? gh, Tensor? gw, Tensor? gb)
    {
        const string op = "dropout_add_layer_norm backward";
        RequireF32(op, s, gy, weight, mean, rstd, gs, gh, gw, gb);
        RequireHere(s, op); RequireHere(gy, op);
        RequireSameShape(s, gy, op); RequireSameShape(s, gs, op);
        if (gh is not null) RequireSameShape(s, gh, op);
        RequireDense(op, (weight, "weight"), (mean, "mean"), (rstd, "rstd"), (gs, "gs"), (gh, "gh"), (gw, "gw"), (gb, "gb"));
        using var sc = Dense(s);
        using var gyc = Dense(gy);
        var (rows, d) = Rows(sc);
        long ws = RowKernels.LayerNormBackwardWorkspace(rows, d);
        using var work = Tensor.Empty([(int)Math.Max(ws, 1)], DType.Float32, Device);
        RowKernels.DropoutAddLayerNormBackward(Acc, Stream, View<float>(sc), View<float>(gyc), ViewOrNull(weight), View<float>(mean), View<float>(rstd),
            p, seed, offset, View<float>(gs), ViewOrNull(gh), ViewOrNull(gw), ViewOrNull(gb), View<float>(work), rows, d);
    }

    public void Softmax(Tensor x, Tensor y, bool log)
    {
        string op = log ? "log_softmax" : "softmax";
        RequireF32(op, x, y);
        RequireHere(x, op);
        RequireDense(op, (y, "y"));
        using var xc = Dense(x);
        var (rows, c) = Rows(xc);
        RowKernels.Softmax(Acc, Stream, View<float>(xc), View<float>(y), rows, c, log);
    }

    public void SoftmaxBackward(Tensor y, Tensor gy, Tensor gx, bool log)
    {
        string op = log ? "log_softmax backward" : "softmax backward";
        RequireF32(op, y, gy, gx);
        RequireHere(y, op); RequireHere(gy, op);
        RequireDense(op, (gx, "gx"));
        using var yc = Dense(y);
        using var gyc = Dense(gy);
        var (rows, c) = Rows(yc);
        RowKernels.SoftmaxBackward(Acc, Stream, View<float>(yc), View<float>(gyc), View<float>(gx), rows, c, log);
    }

    /// <summary>
    /// Only the dtype is checked here: range-checking class ids would read them back to the host and stall the
    /// stream every step. The kernel never reads out of range; an id outside [0, C) (other than the ignore index)
    /// gives a NaN loss for its row, which the trainer's NaN check reports.
    /// </summary>
    private static void CheckTargets(string op, Tensor? target)
    {
        if (target is not null && target.DType != DType.Int64)
            throw new ArgumentException($"cuda: {op}: target {target.ShapeString} must be int64, got {target.DType.Name()}");
    }

    public void CrossEntropyForward(Tensor logits, Tensor? target, Tensor? softTarget, int ignoreIndex, Tensor loss, Tensor logSumExp)
    {
        const string op = "cross_entropy";
        RequireF32(op, logits, softTarget, loss, logSumExp);
        RequireHere(logits, op);
        RequireDense(op, (target, "target"), (softTarget, "softTarget"), (loss, "loss"), (logSumExp, "logSumExp"));
        CheckTargets(op, target);
        using var lc = Dense(logits);
        var (rows, c) = Rows(lc);
        RowKernels.CrossEntropyForward(Acc, Stream, View<float>(lc), target is null ? null : View<long>(target), ViewOrNull(softTarget),
            ignoreIndex, View<float>(loss), View<float>(logSumExp), rows, c);
    }

    public void CrossEntropyBackward(Tensor logits, Tensor? target, Tensor? softTarget, int ignoreIndex, Tensor logSumExp, Tensor gLoss, Tensor gLogits)
    {
        const string op = "cross_entropy backward";
        RequireF32(op, logits, softTarget, logSumExp, gLoss, gLogits);
        RequireHere(logits, op);
        RequireDense(op, (target, "target"), (softTarget, "softTarget"), (logSumExp, "logSumExp"), (gLoss, "gLoss"), (gLogits, "gLogits"));
        CheckTargets(op, target);
        using var lc = Dense(logits);
        var (rows, c) = Rows(lc);
        RowKernels.CrossEntropyBackward(Acc, Stream, View<float>(lc), target is null ? null : View<long>(target), ViewOrNull(softTarget),
            ignoreIndex, View<float>(logSumExp), View<float>(gLoss), View<float>(gLogits), rows, c);
    }

    public void AdamWStep(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, AdamWParams p)
    {
        const string op = "adamw";
        RequireF32(op, param, grad, expAvg, expAvgSq);
        RequireDense(op, (param, "param"), (grad, "grad"), (expAvg, "exp_avg"), (expAvgSq, "exp_avg_sq"));
        foreach (var t in new[] { grad, expAvg, expAvgSq }) RequireSameShape(param, t, op);
        RowKernels.AdamWStep(Acc, Stream, View<float>(param), View<float>(grad), View<float>(expAvg), View<float>(expAvgSq), param.Numel, p);
    }

    /// <summary>Validates every item as <see cref="AdamWStep"/> does, then packs them into <see cref="OptimKernels.Slots"/>-tensor launches.</summary>
    public void AdamWStepMany(IReadOnlyList<AdamWItem> items)
    {
        const string op = "adamw (multi-tensor)";
        ArgumentNullException.ThrowIfNull(items);
        var views = new List<AdamWBuffers>(items.Count);
        for (int i = 0; i < items.Count; i++)
        {
            var it = items[i];
            string at = $"{op}, item {i}";
            if (it.Param is null || it.Grad is null || it.ExpAvg is null || it.ExpAvgSq is null)
                throw new ArgumentNullException(nameof(items), $"cuda: {at}: param, grad, exp_avg and exp_avg_sq are required");
            RequireF32(at, it.Param, it.Grad, it.ExpAvg, it.ExpAvgSq);
            RequireDense(at, (it.Param, "param"), (it.Grad, "grad"), (it.ExpAvg, "exp_avg"), (it.ExpAvgSq, "exp_avg_sq"));
            foreach (var t in new[] { it.Grad, it.ExpAvg, it.ExpAvgSq }) RequireSameShape(it.Param, t, at);
            if (it.Hp.Step < 1) throw new ArgumentException($"cuda: {at} ({it.Param.ShapeString}): step must be ≥ 1 (the step being taken), got {it.Hp.Step}");
            if (it.Param.Numel > 0)
                views.Add(new AdamWBuffers(View<float>(it.Param), View<float>(it.Grad), View<float>(it.ExpAvg), View<float>(it.ExpAvgSq), it.Param.Numel, it.Hp));
        }
        AdamWItem.CheckDisjoint(items, "cuda: " + op);
        OptimKernels.AdamWStepMany(Acc, Stream, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(views));
    }

    private static (int B, int H, int L, int S, int D) AttentionDims(string op, Tensor q, Tensor k, Tensor v)
    {
        if (q.Rank != 4 || k.Rank != 4 || v.Rank != 4 || q.Sizes[0] != k.Sizes[0] || q.Sizes[1] != k.Sizes[1] || q.Sizes[3] != k.Sizes[3]
            || !k.Sizes.SequenceEqual(v.Sizes))
            throw new ArgumentException($"cuda: {op}: q {q.ShapeString}, k {k.ShapeString}, v {v.ShapeString} must be [B,H,L,D], [B,H,S,D], [B,H,S,D]");
        return (q.Sizes[0], q.Sizes[1], q.Sizes[2], k.Sizes[2], q.Sizes[3]);
    }

    /// <summary>True when a [B,H,R,D] operand can be used in place: unit stride on D (or D ≤ 1) and no negative stride.</summary>
    private static bool HeadsInPlace(Tensor t)
        => (t.Sizes[3] <= 1 || t.Strides[3] == 1) && t.Strides.ToArray().All(x => x >= 0);

    /// <summary>An attention input as it is (strided heads read in place), or a contiguous copy when its D stride is not unit.</summary>
    private static Tensor HeadsInput(Tensor t) => HeadsInPlace(t) ? t.Alias() : t.ContiguousRaw();

    /// <summary>An attention output is written in place: it must have unit stride on D and non-negative strides.</summary>
    private void RequireHeadsOutput(string op, Tensor t, string name)
    {
        RequireHere(t, op);
        if (!HeadsInPlace(t))
            throw new ArgumentException($"cuda: {op}: {name} {t.ShapeString} with strides {Shape.Format(t.Strides)} must have unit stride in its last dim and no negative stride");
    }

    public void AttentionForward(Tensor q, Tensor k, Tensor v, Tensor? mask, double scale, double dropoutP, ulong seed, ulong offset, Tensor? o, Tensor? probs)
    {
        const string op = "attention";
        RequireF32(op, q, k, v, mask, o, probs);
        var (b, h, l, s, d) = AttentionDims(op, q, k, v);
        RequireHere(q, op); RequireHere(k, op); RequireHere(v, op);
        if (o is null && probs is null) throw new ArgumentException($"cuda: {op}: neither the output nor the probabilities asked for (q {q.ShapeString})");
        if (o is not null)
        {
            if (!o.Sizes.SequenceEqual(q.Sizes)) throw new ArgumentException($"cuda: {op}: output {o.ShapeString} must match q {q.ShapeString}");
            RequireHeadsOutput(op, o, "o");
        }
        if (probs is not null) RequireDense(op, (probs, "probs"));
        if (probs is not null && !probs.Sizes.SequenceEqual(new[] { b, h, l, s }))
            throw new ArgumentException($"cuda: {op}: probs {probs.ShapeString} must be [{b},{h},{l},{s}] for q {q.ShapeString}, k {k.ShapeString}");
        RequireProbability(op, dropoutP);
        if (d > AttentionKernels.DMax || ComposedAttention) { AttentionForwardComposed(q, k, v, mask, scale, dropoutP, seed, offset, o, probs, b, h, l, s, d); return; }
        // output only with S > SCap: the kernel keeps the scores in a [B,H,L,S] scratch (not a saving there, still correct)
        using var scratch = probs is null && s > AttentionKernels.SCap ? Tensor.Empty([b, h, l, s], DType.Float32, Device) : null;
        // strided q/k/v/o (e.g. the heads of a [B,L,H·D] projection) are read and written in place through their layouts
        using var qc = HeadsInput(q); using var kc = HeadsInput(k); using var vc = HeadsInput(v);
        var layouts = AttentionLayouts.Dense(h, l, s, d);
        layouts.Q = AttentionHeadsLayout.Of(qc); layouts.K = AttentionHeadsLayout.Of(kc); layouts.V = AttentionHeadsLayout.Of(vc);
        if (o is not null) layouts.O = AttentionHeadsLayout.Of(o);
        ArrayView<float>? mv = null;
        var layout = default(AttentionMaskLayout);
        if (mask is not null)
        {
            RequireHere(mask, op);
            var (view, baseOff) = Strided<float>(mask);
            var st = mask.Strides;
            mv = view;
            layout = new AttentionMaskLayout(baseOff, st[0], st[1], st[2], st[3]);
        }
        var pt = probs ?? scratch;
        AttentionKernels.Forward(Acc, Stream, View<float>(qc), View<float>(kc), View<float>(vc), mv, layout,
            o is null ? null : View<float>(o), pt is null ? null : View<float>(pt), layouts, b, h, l, s, d, scale, dropoutP, seed, offset);
    }

    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor probs, double scale, double dropoutP, ulong seed, ulong offset,
        Tensor go, Tensor gq, Tensor gk, Tensor gv)
    {
        const string op = "attention backward";
        RequireF32(op, q, k, v, probs, go, gq, gk, gv);
        var (b, h, l, s, d) = AttentionDims(op, q, k, v);
        foreach (var t in new[] { q, k, v, probs, go }) RequireHere(t, op);
        if (!go.Sizes.SequenceEqual(q.Sizes) || !gq.Sizes.SequenceEqual(q.Sizes) || !gk.Sizes.SequenceEqual(k.Sizes) || !gv.Sizes.SequenceEqual(v.Sizes))
            throw new ArgumentException($"cuda: {op}: go {go.ShapeString}, gq {gq.ShapeString}, gk {gk.ShapeString}, gv {gv.ShapeString} must match q {q.ShapeString}, k {k.ShapeString}, v {v.ShapeString}");
        RequireHeadsOutput(op, gq, "gq"); RequireHeadsOutput(op, gk, "gk"); RequireHeadsOutput(op, gv, "gv");
        RequireProbability(op, dropoutP);
        if (d > AttentionKernels.DMax || ComposedAttention) { AttentionBackwardComposed(q, k, v, probs, scale, dropoutP, seed, offset, go, gq, gk, gv, b, h, l, s, d); return; }
        using var qc = HeadsInput(q); using var kc = HeadsInput(k); using var vc = HeadsInput(v); using var pc = Dense(probs); using var goc = HeadsInput(go);
        using var work = Tensor.Empty([(int)Math.Max(AttentionKernels.BackwardWorkspace(b, h, l, s), 1)], DType.Float32, Device);
        var layouts = new AttentionLayouts
        {
            Q = AttentionHeadsLayout.Of(qc), K = AttentionHeadsLayout.Of(kc), V = AttentionHeadsLayout.Of(vc), O = AttentionHeadsLayout.Dense(h, l, d),
            GO = AttentionHeadsLayout.Of(goc), GQ = AttentionHeadsLayout.Of(gq), GK = AttentionHeadsLayout.Of(gk), GV = AttentionHeadsLayout.Of(gv),
        };
        AttentionKernels.Backward(Acc, Stream, View<float>(qc), View<float>(kc), View<float>(vc), View<float>(pc), View<float>(goc),
            View<float>(gq), View<float>(gk), View<float>(gv), View<float>(work), layouts, b, h, l, s, d, scale, dropoutP, seed, offset);
    }

    // ------------------------------------------------------------------ attention with heads wider than the fused kernel

    private static void RequireProbability(string op, double p)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"cuda: {op}: dropout probability {p} must be in [0, 1]");
    }

    /// <summary>
    /// A [B,H,R,D] operand as a [B·H, R, D] batch of row-major matrices for <see cref="MatMul"/>: a view when its heads can
    /// be walked with one batch stride (H = 1, B = 1, or B's stride = H × H's stride; unit stride on D), else a contiguous copy.
    /// </summary>
    private static Tensor HeadsAsBatch(Tensor t)
    {
        int b = t.Sizes[0], h = t.Sizes[1], r = t.Sizes[2], d = t.Sizes[3];
        int sb = t.Strides[0], sh = t.Strides[1], sr = r <= 1 ? d : t.Strides[2];
        bool rowsOk = (d <= 1 || t.Strides[3] == 1) && sb >= 0 && sh >= 0 && sr >= d;
        if (rowsOk && h == 1) return t.AsStrided([b, r, d], [b <= 1 ? r * d : sb, sr, 1], t.Offset);
        if (rowsOk && b == 1) return t.AsStrided([h, r, d], [sh, sr, 1], t.Offset);
        if (rowsOk && sb == h * sh) return t.AsStrided([b * h, r, d], [sh, sr, 1], t.Offset);
        using var c = t.ContiguousRaw();
        return c.AsStrided([b * h, r, d], [r * d, d, 1], c.Offset);
    }

    /// <summary>c ← alpha·op(a)·op(b) into the [B,H,R,N] destination: straight into it when it is contiguous, else through a
    /// contiguous temporary copied into its layout.</summary>
    private void MatMulIntoHeads(Tensor a3, Tensor b3, Tensor dst, bool transA, bool transB, double alpha)
    {
        int bh = dst.Sizes[0] * dst.Sizes[1], r = dst.Sizes[2], n = dst.Sizes[3];
        if (dst.IsContiguous)
        {
            using var c3 = dst.AsStrided([bh, r, n], [r * n, n, 1], dst.Offset);
            MatMul(a3, b3, c3, transA, transB, alpha);
            return;
        }
        using var tmp = Tensor.Empty(dst.Shape, DType.Float32, Device);
        using (var t3 = tmp.AsStrided([bh, r, n], [r * n, n, 1], 0)) MatMul(a3, b3, t3, transA, transB, alpha);
        Copy(tmp, dst);
    }

    /// <summary>
    /// Attention with D &gt; <see cref="AttentionKernels.DMax"/> (the VQ-VAE's single 512-wide head): scale·Q·Kᵀ by the GEMM,
    /// the additive mask, the row softmax, the Philox dropout on the flat [B,H,L,S] index (<see cref="Dropout"/>'s rule, the
    /// fused kernel's too) and P·V by the GEMM — this backend's own kernels, so they follow <see cref="MatMulPrecision"/>
    /// like every other GEMM. Same contract as the fused path; the sums run in another order, so the bits differ from it.
    /// </summary>
    private void AttentionForwardComposed(Tensor q, Tensor k, Tensor v, Tensor? mask, double scale, double p, ulong seed, ulong offset,
        Tensor? o, Tensor? probs, int b, int h, int l, int s, int d)
    {
        if (mask is not null) RequireHere(mask, "attention");
        if ((long)b * h * l * s == 0)
        {
            if (o is not null && o.Numel > 0) Fill(o, 0);   // no keys: an empty weighted sum
            return;
        }
        using var q3 = HeadsAsBatch(q); using var k3 = HeadsAsBatch(k);
        using var scores = Tensor.Empty([b, h, l, s], DType.Float32, Device);
        using (var sc3 = scores.AsStrided([b * h, l, s], [l * s, s, 1], 0)) MatMul(q3, k3, sc3, false, true, scale);
        if (mask is not null) Binary(BinaryOp.Add, scores, mask, scores);
        using var own = probs is null ? Tensor.Empty([b, h, l, s], DType.Float32, Device) : null;
        var pt = probs ?? own!;
        Softmax(scores, pt, false);
        if (o is null) return;
        using var keep = p > 0 ? Tensor.Empty([b, h, l, s], DType.UInt8, Device) : null;
        if (keep is not null) Dropout(pt, scores, keep, p, seed, offset);   // scores now hold the dropped probabilities
        var weights = keep is not null ? scores : pt;
        using var w3 = weights.AsStrided([b * h, l, s], [l * s, s, 1], weights.Offset);
        using var v3 = HeadsAsBatch(v);
        MatMulIntoHeads(w3, v3, o, false, false, 1);
    }

    /// <summary>The backward of <see cref="AttentionForwardComposed"/> from the saved probabilities: gV = P̃ᵀ·gO, gP̃ = gO·Vᵀ,
    /// gP = the dropout of gP̃ with the same mask and scale, gS = the softmax backward, gQ = scale·gS·K, gK = scale·gSᵀ·Q.</summary>
    private void AttentionBackwardComposed(Tensor q, Tensor k, Tensor v, Tensor probs, double scale, double p, ulong seed, ulong offset,
        Tensor go, Tensor gq, Tensor gk, Tensor gv, int b, int h, int l, int s, int d)
    {
        if ((long)b * h * l * s == 0)
        {
            foreach (var g in new[] { gq, gk, gv }) if (g.Numel > 0) Fill(g, 0);
            return;
        }
        if (!probs.Sizes.SequenceEqual(new[] { b, h, l, s }))
            throw new ArgumentException($"cuda: attention backward: probs {probs.ShapeString} must be [{b},{h},{l},{s}]");
        using var pc = Dense(probs);
        using var keep = p > 0 ? Tensor.Empty([b, h, l, s], DType.UInt8, Device) : null;
        using var dropped = p > 0 ? Tensor.Empty([b, h, l, s], DType.Float32, Device) : null;
        if (keep is not null) Dropout(pc, dropped!, keep, p, seed, offset);
        var pw = dropped ?? pc;
        using var go3 = HeadsAsBatch(go);
        using var pw3 = pw.AsStrided([b * h, l, s], [l * s, s, 1], pw.Offset);
        MatMulIntoHeads(pw3, go3, gv, true, false, 1);
        using var v3 = HeadsAsBatch(v);
        using var gpd = Tensor.Empty([b, h, l, s], DType.Float32, Device);
        using (var g3 = gpd.AsStrided([b * h, l, s], [l * s, s, 1], 0)) MatMul(go3, v3, g3, false, true);
        using var gp = keep is not null ? Tensor.Empty([b, h, l, s], DType.Float32, Device) : null;
        if (gp is not null) Dropout(gpd, gp, keep!, p, seed, offset);
        using var gs = Tensor.Empty([b, h, l, s], DType.Float32, Device);
        SoftmaxBackward(pc, gp ?? gpd, gs, false);
        using var gs3 = gs.AsStrided([b * h, l, s], [l * s, s, 1], 0);
        using var k3 = HeadsAsBatch(k); using var q3 = HeadsAsBatch(q);
        MatMulIntoHeads(gs3, k3, gq, false, false, scale);
        MatMulIntoHeads(gs3, q3, gk, true, false, scale);
    }
}
