using FashionViL.Tensors;
using ILGPU;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Convolution (implicit GEMM) and pooling on the device (<see cref="ConvKernels"/>), float32 NCHW. The three convolution
/// GEMMs follow <see cref="MatMulPrecision.Current"/> (Fp32: exact; Tf32/Bf16: rounded operands, fp32 accumulation, tensor cores).
/// </summary>
public sealed partial class CudaBackend
{
    private static void RequireRank4(string op, params (Tensor T, string Name)[] ts)
    {
        foreach (var (t, name) in ts)
            if (t.Rank != 4) throw new ArgumentException($"cuda: {op}: {name} {t.ShapeString} must be [N, C, H, W]");
    }

    public void Conv2dForward(Tensor x, Tensor w, Tensor? bias, Tensor y, Conv2dParams p)
    {
        const string op = "conv2d";
        RequireF32(op, x, w, bias, y);
        RequireRank4(op, (x, "input"), (w, "weight"), (y, "output"));
        RequireHere(x, op); RequireHere(w, op);
        RequireDense(op, (bias, "bias"), (y, "output"));
        if (x.Sizes[1] != w.Sizes[1]) throw new ArgumentException($"cuda: {op}: input {x.ShapeString} has {x.Sizes[1]} channels, weight {w.ShapeString} expects {w.Sizes[1]}");
        using var xc = Dense(x); using var wc = Dense(w);
        var precision = MatMulPrecision.Current;
        // (shapes that do not match go on to the direct kernels, whose checks name them)
        if (Winograd != WinogradMode.Off && WinogradKernels.Applies(w.Sizes[2], w.Sizes[3], p) && x.Sizes[1] >= WinogradMinChannels && w.Sizes[0] >= WinogradMinChannels
            && y.Sizes[0] == x.Sizes[0] && y.Sizes[1] == w.Sizes[0] && y.Sizes[2] == x.Sizes[2] && y.Sizes[3] == x.Sizes[3]
            && (long)x.Sizes[0] * ((x.Sizes[2] + 1) / 2) * ((x.Sizes[3] + 1) / 2) <= int.MaxValue)
        {
            WinogradForward(xc, wc, bias, y, flipped: false, WinogradTile(precision));
            return;
        }
        if (Conv1x1Gemm(w, x.Sizes[2], x.Sizes[3], p, bias) && y.Sizes[0] == x.Sizes[0] && y.Sizes[1] == w.Sizes[0]
            && y.Sizes[2] == x.Sizes[2] && y.Sizes[3] == x.Sizes[3])
        {
            Conv1x1Batched(wc, xc, y, transposed: false);   // y[n] (C_out × HW) = W (C_out × C_in) · x[n] (C_in × HW)
            return;
        }
        using var wr = RoundedWeight(wc, precision, (long)y.Sizes[0] * y.Sizes[2] * y.Sizes[3]);
        ConvKernels.Conv2dForward(Acc, Stream, View<float>(xc), View<float>(wr ?? wc), bias is null ? default : View<float>(bias), View<float>(y),
            x.Sizes[0], x.Sizes[1], x.Sizes[2], x.Sizes[3], w.Sizes[0], w.Sizes[2], w.Sizes[3], p, precision: precision, weightRounded: wr is not null);
    }

    /// <summary>
    /// Whether 3×3, stride-1, padding-1 convolutions with at least <see cref="WinogradMinChannels"/> input and output channels
    /// run their forward pass and their input gradient as Winograd (<see cref="WinogradKernels"/>: weight and input
    /// transforms, one batched GEMM through <see cref="MatMul"/>, output transform): <c>FVL_WINOGRAD</c> = <c>off</c>
    /// (default), <c>on</c> or <c>f2</c> (F(2×2, 3×3): 2.25× fewer multiplies), <c>f4</c> (F(4×4, 3×3): 4× fewer, with
    /// 36 transformed values per tile and larger rounding; fp32 only — under Tf32/Bf16 it runs F(2×2, 3×3), as the
    /// transforms' factors up to 5 and 1/24 would magnify the operands' 2⁻¹¹ rounding). A/B switches for a device (not
    /// timed on a GPU yet). The outputs and input gradients equal the direct kernels' up to rounding (other sums), not bit
    /// for bit; weight gradients are the direct kernel's either way. Read once, at the first use (an invalid value throws
    /// there, naming it; the CLI checks it at start). Settable for tests.
    /// </summary>
    public static WinogradMode Winograd
    {
        get => _winograd ??= ParseWinograd(Environment.GetEnvironmentVariable("FVL_WINOGRAD"));
        set => _winograd = value;
    }
    private static WinogradMode? _winograd;

    /// <summary>
    /// Whether 1×1, stride-1, padding-0 convolutions without bias whose planes hold at least <see cref="Conv1x1MinPlane"/>
    /// positions run their forward pass and input gradient as one strided-batched GEMM through <see cref="MatMul"/>:
    /// y[n] = W·x[n] and gx[n] = Wᵀ·gy[n], the NCHW planes being the GEMM's columns, so no im2col gather and 16-byte
    /// operand loads (ResNet-50's 1×1 convolutions at 56² and 28²: about a fifth of its convolution FLOPs).
    /// <c>FVL_CONV1X1</c> = <c>direct</c> (default) or <c>gemm</c>; an A/B switch for a device (not timed on a GPU yet). The
    /// weight gradients keep the direct kernel. Read once, at the first use (an invalid value throws there, naming it; the
    /// CLI checks it at start). Settable for tests.
    /// </summary>
    public static bool Conv1x1AsGemm
    {
        get => _conv1x1 ??= ParseConv1x1(Environment.GetEnvironmentVariable("FVL_CONV1X1"));
        set => _conv1x1 = value;
    }
    private static bool? _conv1x1;

    /// <summary>output[n] = op(W)·input[n] over contiguous NCHW planes, W [C_out, C_in, 1, 1] (transposed: Wᵀ, the input
    /// gradient): one strided-batched GEMM through <see cref="MatMul"/>, W shared by every image.</summary>
    private void Conv1x1Batched(Tensor w, Tensor input, Tensor output, bool transposed)
    {
        int n = input.Sizes[0], ci = input.Sizes[1], co = output.Sizes[1], hw = input.Sizes[2] * input.Sizes[3];
        using var w2 = w.AsStrided([w.Sizes[0], w.Sizes[1]], [w.Sizes[1], 1], w.Offset);
        using var in3 = input.AsStrided([n, ci, hw], [ci * hw, hw, 1], input.Offset);
        using var out3 = output.AsStrided([n, co, hw], [co * hw, hw, 1], output.Offset);
        MatMul(w2, in3, out3, transposed, false);
    }

    internal static bool ParseConv1x1(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "direct" => false,
        "gemm" => true,
        _ => throw new ArgumentException($"FVL_CONV1X1 = '{value}' is not a 1×1 convolution setting: direct (default) or gemm"),
    };

    /// <summary>Fewest positions per plane for <see cref="Conv1x1AsGemm"/> (each image's plane is a row of 128-wide column
    /// tiles: at 14² or 7² most of a tile would be idle, where the direct kernel tiles batch × plane). Settable for tests.</summary>
    internal static int Conv1x1MinPlane { get; set; } = 512;

    private static bool Conv1x1Gemm(Tensor w, int h, int wd, Conv2dParams p, Tensor? bias)
        => Conv1x1AsGemm && bias is null && w.Sizes[2] == 1 && w.Sizes[3] == 1 && p.StrideH == 1 && p.StrideW == 1
           && p.PadTop == 0 && p.PadBottom == 0 && p.PadLeft == 0 && p.PadRight == 0 && (long)h * wd >= Conv1x1MinPlane
           && (long)h * wd * Math.Max(w.Sizes[0], w.Sizes[1]) <= int.MaxValue;

    internal static WinogradMode ParseWinograd(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "off" or "0" => WinogradMode.Off,
        "on" or "1" or "f2" => WinogradMode.F2x2,
        "f4" => WinogradMode.F4x4,
        _ => throw new ArgumentException($"FVL_WINOGRAD = '{value}' is not a Winograd setting: off (default), on (= f2) or f4"),
    };

    /// <summary>The output tile <see cref="Winograd"/> runs under <paramref name="precision"/>: 4 for F4x4 in fp32, else 2.</summary>
    private static int WinogradTile(Precision precision) => Winograd == WinogradMode.F4x4 && precision == Precision.Fp32 ? 4 : 2;

    /// <summary>Whether, under Tf32, the Winograd transforms round U and V themselves (default) instead of leaving it to the
    /// GEMM; settable for tests, which compare the two (the same bits).</summary>
    internal static bool WinogradRoundsInTransforms { get; set; } = true;

    /// <summary>Fewest input and output channels for which <see cref="Winograd"/> applies (the VQ-VAE's 3-channel stem and
    /// narrow convolutions keep the direct kernels). Settable for tests.</summary>
    internal static int WinogradMinChannels { get; set; } = 32;

    /// <summary>Most floats each of the two per-chunk workspaces (transformed input tiles, products) may take: 64 M (256 MB);
    /// a convolution with more tiles runs in chunks of tiles. Settable for tests.</summary>
    internal static long WinogradChunkFloats { get; set; } = 64L << 20;

    /// <summary>y ← conv3x3(x, w) + bias, stride 1, padding 1, by Winograd F(tile×tile, 3×3), in chunks of tiles; with
    /// <paramref name="flipped"/>, the input gradient y = gx of a forward weight w [C_in, C_out, 3, 3] from x = gy.</summary>
    private void WinogradForward(Tensor x, Tensor w, Tensor? bias, Tensor y, bool flipped, int tile)
    {
        int n = x.Sizes[0], c = x.Sizes[1], h = x.Sizes[2], wd = x.Sizes[3], k = flipped ? w.Sizes[1] : w.Sizes[0];
        var (th, tw) = WinogradKernels.Tiles(h, wd, tile);
        int points = WinogradKernels.Points(tile);
        long tiles = (long)n * th * tw;
        if (tiles == 0 || k == 0) return;
        using var u = Tensor.Empty([points, k, c], DType.Float32, Device);
        // under Tf32 the transforms write U and V rounded, as the GEMM would round them, and the GEMM takes them as they are
        // (no rounded copy of U, no rounding of V in every stage): the same bits (WinogradRoundsInTransforms, for tests)
        bool round = tile == 2 && MatMulPrecision.Current == Precision.Tf32 && WinogradRoundsInTransforms;
        WinogradKernels.TransformWeight(Acc, Stream, View<float>(w), View<float>(u), k, c, flipped, tile, roundTf32: round);
        // chunks of whole multiples of 128 tiles (the GEMM's column tiles), each workspace within WinogradChunkFloats
        long fit = WinogradChunkFloats / ((long)points * Math.Max(c, k));
        int chunk = (int)Math.Min(tiles, Math.Max(128, fit / 128 * 128));
        for (long p0 = 0; p0 < tiles; p0 += chunk)
        {
            int cnt = (int)Math.Min(chunk, tiles - p0);
            var s = new WinogradKernels.Shape { N = n, C = c, K = k, H = h, W = wd, Tile = tile, TilesH = th, TilesW = tw, P0 = (int)p0, Pc = cnt, Round = round ? 1 : 0 };
            using var v = Tensor.Empty([points, c, cnt], DType.Float32, Device);
            using var m = Tensor.Empty([points, k, cnt], DType.Float32, Device);
            WinogradKernels.TransformInput(Acc, Stream, View<float>(x), View<float>(v), s);
            MatMul(u, v, m, false, false, 1, 0, null, aRounded: round, bRounded: round);
            WinogradKernels.TransformOutput(Acc, Stream, View<float>(m), View<float>(y), bias is null ? default : View<float>(bias), s);
        }
    }

    /// <summary>
    /// Under Tf32/Bf16: the weight rounded once for the tensor-core convolution (<see cref="ConvKernels.RoundOperands"/>, one
    /// launch, into a cached block), so its groups store A without rounding every operand again in every stage; the same
    /// bits as rounding inside the kernel. Null under Fp32, and when the GEMM has fewer than 64 ·
    /// <see cref="MinTilesToPreRound"/> columns (<paramref name="columns"/>): with few column tiles the kernel rounds each
    /// weight only a few times, and the extra pass would cost more (see <see cref="MatMul"/>). At batch 64 every ResNet-50
    /// and VQ-VAE convolution has ≥ 3,136 columns.
    /// </summary>
    private Tensor? RoundedWeight(Tensor w, Precision precision, long columns)
    {
        if (precision == Precision.Fp32 || !PreRoundOperands || w.Numel == 0 || columns < 64L * MinTilesToPreRound) return null;
        var r = Tensor.Empty(w.Sizes.ToArray(), DType.Float32, Device);
        ConvKernels.RoundOperands(Acc, Stream, View<float>(w), View<float>(r), precision);
        return r;
    }

    public void Conv2dBackwardInput(Tensor gy, Tensor w, Tensor gx, Conv2dParams p)
    {
        const string op = "conv2d backward input";
        RequireF32(op, gy, w, gx);
        RequireRank4(op, (gy, "output gradient"), (w, "weight"), (gx, "input gradient"));
        RequireHere(gy, op); RequireHere(w, op);
        RequireDense(op, (gx, "input gradient"));
        using var gyc = Dense(gy); using var wc = Dense(w);
        var precision = MatMulPrecision.Current;
        if (Winograd != WinogradMode.Off && WinogradKernels.Applies(w.Sizes[2], w.Sizes[3], p) && w.Sizes[0] >= WinogradMinChannels && w.Sizes[1] >= WinogradMinChannels
            && gy.Sizes[0] == gx.Sizes[0] && gy.Sizes[1] == w.Sizes[0] && gx.Sizes[1] == w.Sizes[1] && gy.Sizes[2] == gx.Sizes[2] && gy.Sizes[3] == gx.Sizes[3]
            && (long)gx.Sizes[0] * ((gx.Sizes[2] + 1) / 2) * ((gx.Sizes[3] + 1) / 2) <= int.MaxValue)
        {
            // a 3×3 stride-1 padding-1 convolution's input gradient is one of the output gradient with the kernel transposed
            // and rotated by 180° (padding 1 again)
            WinogradForward(gyc, wc, null, gx, flipped: true, WinogradTile(precision));
            return;
        }
        if (Conv1x1Gemm(w, gx.Sizes[2], gx.Sizes[3], p, null) && gy.Sizes[0] == gx.Sizes[0] && gy.Sizes[1] == w.Sizes[0]
            && gx.Sizes[1] == w.Sizes[1] && gy.Sizes[2] == gx.Sizes[2] && gy.Sizes[3] == gx.Sizes[3])
        {
            Conv1x1Batched(wc, gyc, gx, transposed: true);   // gx[n] (C_in × HW) = Wᵀ (C_in × C_out) · gy[n] (C_out × HW)
            return;
        }
        using var wr = RoundedWeight(wc, precision, (long)gx.Sizes[0] * gx.Sizes[2] * gx.Sizes[3]);
        ConvKernels.Conv2dBackwardInput(Acc, Stream, View<float>(gyc), View<float>(wr ?? wc), View<float>(gx),
            gx.Sizes[0], gx.Sizes[1], gx.Sizes[2], gx.Sizes[3], w.Sizes[0], w.Sizes[2], w.Sizes[3], p, precision: precision, weightRounded: wr is not null);
    }

    public void Conv2dBackwardWeight(Tensor x, Tensor gy, Tensor gw, Tensor? gb, Conv2dParams p)
    {
        const string op = "conv2d backward weight";
        RequireF32(op, x, gy, gw, gb);
        RequireRank4(op, (x, "input"), (gy, "output gradient"), (gw, "weight gradient"));
        RequireHere(x, op); RequireHere(gy, op);
        RequireDense(op, (gw, "weight gradient"), (gb, "bias gradient"));
        using var xc = Dense(x); using var gyc = Dense(gy);
        int batch = x.Sizes[0], cin = x.Sizes[1], h = x.Sizes[2], wd = x.Sizes[3], cout = gw.Sizes[0], kh = gw.Sizes[2], kw = gw.Sizes[3];
        // Under Tf32 the shapes where the 64×32 tensor-core tile lost to the exact kernel run fp32 (WeightGradientPrecision).
        var precision = ConvKernels.WeightGradientPrecision(Acc, cout, cin * kh * kw, MatMulPrecision.Current);
        // Split-K: the reduction runs over batch·Ho·Wo while the weight gradient is small, so without a workspace the early
        // ResNet layers would run on a handful of multiprocessors. The workspace comes from the caching allocator.
        long ws = ConvKernels.BackwardWeightWorkspace(Acc, batch, cin, h, wd, cout, kh, kw, p, precision: precision);
        using var work = ws > 0 ? Tensor.Empty([checked((int)ws)], DType.Float32, Device) : null;
        ConvKernels.Conv2dBackwardWeight(Acc, Stream, View<float>(xc), View<float>(gyc), View<float>(gw), gb is null ? default : View<float>(gb),
            batch, cin, h, wd, cout, kh, kw, p, workspace: work is null ? default : View<float>(work), precision: precision);
    }

    public void MaxPool2dForward(Tensor x, Tensor y, Tensor indices, Pool2dParams p)
    {
        const string op = "max_pool2d";
        RequireF32(op, x, y);
        RequireRank4(op, (x, "input"), (y, "output"));
        RequireIndex(op, indices);
        RequireHere(x, op);
        RequireDense(op, (y, "output"), (indices, "indices"));
        using var xc = Dense(x);
        ConvKernels.MaxPool2dForward(Acc, Stream, View<float>(xc), View<float>(y), View<long>(indices), x.Sizes[0] * x.Sizes[1], x.Sizes[2], x.Sizes[3], p);
    }

    /// <summary>With the forward's geometry (what the autograd op passes): the parallel gather, one thread per input-gradient
    /// element. Without it: the plane-serial scatter, one thread per plane (at ResNet-50's stem at batch 64, 4,096 threads
    /// each walking 3,136 outputs: a few percent of the GPU). Both deterministic and bit-identical to the CPU backend.</summary>
    public void MaxPool2dBackward(Tensor gy, Tensor indices, Tensor gx, Pool2dParams? p = null)
    {
        const string op = "max_pool2d backward";
        RequireF32(op, gy, gx);
        RequireRank4(op, (gy, "output gradient"), (gx, "input gradient"));
        RequireIndex(op, indices);
        RequireHere(gy, op);
        RequireDense(op, (gx, "input gradient"));
        using var gyc = Dense(gy); using var ic = Dense(indices);
        ConvKernels.MaxPool2dBackward(Acc, Stream, View<float>(gyc), View<long>(ic), View<float>(gx),
            gx.Sizes[0] * gx.Sizes[1], gx.Sizes[2], gx.Sizes[3], gy.Sizes[2], gy.Sizes[3], p);
    }

    public void AdaptiveAvgPool2dForward(Tensor x, Tensor y)
    {
        const string op = "adaptive_avg_pool2d";
        RequireF32(op, x, y);
        RequireRank4(op, (x, "input"), (y, "output"));
        RequireHere(x, op);
        RequireDense(op, (y, "output"));
        using var xc = Dense(x);
        ConvKernels.AdaptiveAvgPool2dForward(Acc, Stream, View<float>(xc), View<float>(y), x.Sizes[0] * x.Sizes[1], x.Sizes[2], x.Sizes[3], y.Sizes[2], y.Sizes[3]);
    }

    public void AdaptiveAvgPool2dBackward(Tensor gy, Tensor gx)
    {
        const string op = "adaptive_avg_pool2d backward";
        RequireF32(op, gy, gx);
        RequireRank4(op, (gy, "output gradient"), (gx, "input gradient"));
        RequireHere(gy, op);
        RequireDense(op, (gx, "input gradient"));
        using var gyc = Dense(gy);
        ConvKernels.AdaptiveAvgPool2dBackward(Acc, Stream, View<float>(gyc), View<float>(gx), gx.Sizes[0] * gx.Sizes[1], gx.Sizes[2], gx.Sizes[3], gy.Sizes[2], gy.Sizes[3]);
    }
}
