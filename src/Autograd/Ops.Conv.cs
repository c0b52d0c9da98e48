using FashionViL.Tensors;

namespace FashionViL.Autograd;

/// <summary>CNN ops: convolution, pooling, batch and group normalisation (spec §8 "CNN", "VQ-VAE tokeniser").</summary>
public static partial class Ops
{
    private static void RequireRank(string op, Tensor t, string name, string layout, params int[] ranks)
    {
        if (!ranks.Contains(t.Rank)) throw new ArgumentException($"{op}: {name} {t.ShapeString} must be {layout}");
    }

    private static void RequireFloating(string op, Tensor t, string name)
    {
        if (!t.DType.IsFloating()) throw new ArgumentException($"{op}: {name} {t.ShapeString} must be floating point, got {t.DType.Name()}");
    }

    /// <summary>Checks an optional per-channel vector: [C], same dtype and device as x.</summary>
    private static void RequireChannelVector(string op, Tensor x, Tensor? v, int c, string name)
    {
        if (v is null) return;
        if (v.Rank != 1 || v.Size(0) != c) throw new ArgumentException($"{op}: {name} {v.ShapeString} should be [{c}] for input {x.ShapeString}");
        SameDType(op, x, v);
        SameDevice(op, x, v);
    }

    // ------------------------------------------------------------------ conv2d

    /// <summary>2-D convolution (cross-correlation, like PyTorch) with symmetric padding.</summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias = null, int stride = 1, int padding = 0, int dilation = 1)
        => Conv2d(x, weight, bias, Conv2dParams.Symmetric(stride, padding, dilation));

    /// <summary>
    /// 2-D convolution of x [N,Cin,H,W] with weight [Cout,Cin,Kh,Kw] (+ bias [Cout]) → [N,Cout,Ho,Wo];
    /// <paramref name="p"/> allows per-side padding, e.g. (0,1,0,1) for the VQ-VAE's stride-2 downsampling.
    /// </summary>
    public static Tensor Conv2d(Tensor x, Tensor weight, Tensor? bias, Conv2dParams p)
    {
        const string op = "conv2d";
        RequireRank(op, x, "input", "[N,C,H,W]", 4);
        RequireRank(op, weight, "weight", "[Cout,Cin,Kh,Kw]", 4);
        RequireFloating(op, x, "input");
        SameDType(op, x, weight); SameDevice(op, x, weight);
        if (x.Size(1) != weight.Size(1))
            throw new ArgumentException($"{op}: input {x.ShapeString} has {x.Size(1)} channels, weight {weight.ShapeString} expects {weight.Size(1)}");
        RequireChannelVector(op, x, bias, weight.Size(0), "bias");
        if (p.StrideH < 1 || p.StrideW < 1 || p.DilationH < 1 || p.DilationW < 1 || p.PadTop < 0 || p.PadBottom < 0 || p.PadLeft < 0 || p.PadRight < 0)
            throw new ArgumentException($"{op}: invalid geometry {p} for input {x.ShapeString} (strides and dilations must be ≥ 1, paddings ≥ 0)");
        int kh = weight.Size(2), kw = weight.Size(3), ho = p.OutH(x.Size(2), kh), wo = p.OutW(x.Size(3), kw);
        if (kh < 1 || kw < 1 || x.Size(2) + p.PadTop + p.PadBottom < p.DilationH * (kh - 1) + 1 || x.Size(3) + p.PadLeft + p.PadRight < p.DilationW * (kw - 1) + 1)
            throw new ArgumentException($"{op}: input {x.ShapeString} is too small for weight {weight.ShapeString} with {p}");

        using var xc = x.ContiguousRaw();
        using var wc = weight.ContiguousRaw();
        using var bc = bias?.ContiguousRaw();
        var y = Tensor.Empty([x.Size(0), weight.Size(0), ho, wo], x.DType, x.Device);
        B(x).Conv2dForward(xc, wc, bc, y, p);
        if (!Graph.NeedsGrad(x, weight, bias)) return y;

        bool needX = x.RequiresGrad, needW = weight.RequiresGrad, needB = bias is not null && bias.RequiresGrad;
        int[] xs = x.Shape, ws = weight.Shape;
        return Graph.Record(y, op, [x, weight, bias], [needW ? xc : null, needX ? wc : null], (gy, s) =>
        {
            Tensor? gx = null, gw = null, gb = null;
            if (needX)
            {
                gx = Tensor.Empty(xs, gy.DType, gy.Device);
                B(gy).Conv2dBackwardInput(gy, s[1]!, gx, p);
            }
            if (needB) gb = Tensor.Empty([ws[0]], gy.DType, gy.Device);
            if (needW)
            {
                gw = Tensor.Empty(ws, gy.DType, gy.Device);
                B(gy).Conv2dBackwardWeight(s[0]!, gy, gw, gb, p);
            }
            else if (gb is not null)
            {
                using var sum = Tensor.Empty([1, ws[0], 1, 1], gy.DType, gy.Device);
                B(gy).Reduce(ReduceOp.Sum, gy, [0, 2, 3], sum);
                using var flat = sum.AsStrided([ws[0]], [1], sum.Offset);
                B(gy).Copy(flat, gb);
            }
            return [gx, gw, gb];
        });
    }

    // ------------------------------------------------------------------ pooling

    /// <summary>Max pooling with −∞ padding (PyTorch's MaxPool2d; stride defaults to the kernel size).</summary>
    public static Tensor MaxPool2d(Tensor x, int kernel, int? stride = null, int padding = 0)
    {
        const string op = "max_pool2d";
        RequireRank(op, x, "input", "[N,C,H,W]", 4);
        RequireFloating(op, x, "input");
        int s = stride ?? kernel;
        var p = new Pool2dParams(kernel, kernel, s, s, padding, padding);
        if (kernel < 1 || s < 1 || padding < 0 || padding > kernel / 2)
            throw new ArgumentException($"{op}: invalid kernel {kernel}, stride {s}, padding {padding} for input {x.ShapeString} (padding must be at most half the kernel)");
        int ho = p.OutH(x.Size(2)), wo = p.OutW(x.Size(3));
        if (x.Size(2) + 2 * padding < kernel || x.Size(3) + 2 * padding < kernel)
            throw new ArgumentException($"{op}: input {x.ShapeString} is too small for kernel {kernel}, stride {s}, padding {padding}");
        using var xc = x.ContiguousRaw();
        int[] ys = [x.Size(0), x.Size(1), ho, wo], xs = x.Shape;
        var y = Tensor.Empty(ys, x.DType, x.Device);
        using var idx = Tensor.Empty(ys, DType.Int64, x.Device);
        B(x).MaxPool2dForward(xc, y, idx, p);
        return Graph.Record(y, op, [x], [idx], (gy, sv) =>
        {
            var gx = Tensor.Empty(xs, gy.DType, gy.Device);
            B(gy).MaxPool2dBackward(gy, sv[0]!, gx, p);   // the geometry lets a device gather in parallel
            return [gx];
        });
    }

    /// <summary>Adaptive average pooling to [N, C, outH, outW] (PyTorch's window rule).</summary>
    public static Tensor AdaptiveAvgPool2d(Tensor x, int outH, int outW)
    {
        const string op = "adaptive_avg_pool2d";
        RequireRank(op, x, "input", "[N,C,H,W]", 4);
        RequireFloating(op, x, "input");
        if (outH < 1 || outW < 1 || x.Size(2) < 1 || x.Size(3) < 1)
            throw new ArgumentException($"{op}: cannot pool input {x.ShapeString} to {outH}×{outW}");
        using var xc = x.ContiguousRaw();
        int[] xs = x.Shape;
        var y = Tensor.Empty([x.Size(0), x.Size(1), outH, outW], x.DType, x.Device);
        B(x).AdaptiveAvgPool2dForward(xc, y);
        return Graph.Record(y, op, [x], [], (gy, _) =>
        {
            var gx = Tensor.Empty(xs, gy.DType, gy.Device);
            B(gy).AdaptiveAvgPool2dBackward(gy, gx);
            return [gx];
        });
    }

    // ------------------------------------------------------------------ normalisation

    /// <summary>
    /// Batch norm of x [N,C,H,W] (or [N,C]) per channel. Training: batch statistics, and the running
    /// statistics (when given) are updated in place with <paramref name="momentum"/> (unbiased variance).
    /// Eval: normalises with the running statistics, which must be given.
    /// Fused epilogue (one op, one pass forward and one backward): <paramref name="residual"/> (x's shape) is added to
    /// the normalised output and <paramref name="relu"/> applies max(·, 0) last — y = relu?(bn(x) [+ residual]), equal
    /// to the separate ops; the residual's gradient is the (relu-masked) upstream gradient.
    /// </summary>
    public static Tensor BatchNorm2d(Tensor x, Tensor? weight, Tensor? bias, Tensor? runningMean, Tensor? runningVar,
        bool training, double momentum = 0.1, double eps = 1e-5, Tensor? residual = null, bool relu = false)
    {
        string op = residual is null ? relu ? "batch_norm_relu" : "batch_norm" : relu ? "batch_norm_add_relu" : "batch_norm_add";
        RequireRank(op, x, "input", "[N,C,H,W] or [N,C]", 2, 4);
        RequireFloating(op, x, "input");
        int c = x.Size(1);
        RequireChannelVector(op, x, weight, c, "weight");
        RequireChannelVector(op, x, bias, c, "bias");
        RequireChannelVector(op, x, runningMean, c, "running mean");
        RequireChannelVector(op, x, runningVar, c, "running var");
        if (residual is not null)
        {
            if (!residual.Sizes.SequenceEqual(x.Sizes))
                throw new ArgumentException($"{op}: residual {residual.ShapeString} must have the input's shape {x.ShapeString}");
            if (residual.DType != x.DType) throw new ArgumentException($"{op}: residual is {residual.DType.Name()}, input {x.DType.Name()}");
            if (residual.Device != x.Device) throw new ArgumentException($"{op}: residual is on {residual.Device}, input on {x.Device}");
        }
        if (!training && (runningMean is null || runningVar is null))
            throw new ArgumentException($"{op}: evaluation mode needs running mean and variance (input {x.ShapeString})");
        if (training && x.Numel / Math.Max(c, 1) == 1)
            throw new ArgumentException($"{op}: expected more than 1 value per channel when training, got input {x.ShapeString}");
        foreach (var (t, n) in new[] { (runningMean, "running mean"), (runningVar, "running var") })
            if (t is not null && !t.IsContiguous) throw new ArgumentException($"{op}: {n} {t.ShapeString} must be contiguous (it is updated in place)");

        using var xc = x.ContiguousRaw();
        using var wc = weight?.ContiguousRaw();
        using var bc = bias?.ContiguousRaw();
        using var rc = residual?.ContiguousRaw();
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        using var mean = Tensor.Empty([c], x.DType, x.Device);
        using var invStd = Tensor.Empty([c], x.DType, x.Device);
        B(x).BatchNormForward(xc, wc, bc, runningMean, runningVar, training, momentum, eps, y, mean, invStd, rc, relu);
        if (!Graph.NeedsGrad(x, weight, bias, residual)) return y;

        bool needW = weight is not null && weight.RequiresGrad, needB = bias is not null && bias.RequiresGrad, needX = x.RequiresGrad;
        bool needR = residual is not null && residual.RequiresGrad;
        int[] xs = x.Shape;
        return Graph.Record(y, op, [x, weight, bias, residual], [xc, wc, mean, invStd, relu ? y : null], (gy, s) =>
        {
            var gx = Tensor.Empty(xs, gy.DType, gy.Device);
            var gw = needW ? Tensor.Empty([c], gy.DType, gy.Device) : null;
            var gb = needB ? Tensor.Empty([c], gy.DType, gy.Device) : null;
            var gr = needR ? Tensor.Empty(xs, gy.DType, gy.Device) : null;
            B(gy).BatchNormBackward(s[0]!, gy, s[1], s[2]!, s[3]!, training, gx, gw, gb, s[4], gr);
            if (!needX) { gx.Dispose(); gx = null; }
            return [gx, gw, gb, gr];
        });
    }

    /// <summary>Group norm of x [N,C,*] over <paramref name="groups"/> channel groups, with optional per-channel affine.</summary>
    public static Tensor GroupNorm(Tensor x, int groups, Tensor? weight = null, Tensor? bias = null, double eps = 1e-5)
    {
        const string op = "group_norm";
        if (x.Rank < 2) throw new ArgumentException($"{op}: input {x.ShapeString} must be [N,C,*]");
        RequireFloating(op, x, "input");
        int n = x.Size(0), c = x.Size(1);
        if (groups < 1 || c % groups != 0)
            throw new ArgumentException($"{op}: {c} channels of input {x.ShapeString} do not split into {groups} groups");
        RequireChannelVector(op, x, weight, c, "weight");
        RequireChannelVector(op, x, bias, c, "bias");

        using var xc = x.ContiguousRaw();
        using var wc = weight?.ContiguousRaw();
        using var bc = bias?.ContiguousRaw();
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        using var mean = Tensor.Empty([n, groups], x.DType, x.Device);
        using var rstd = Tensor.Empty([n, groups], x.DType, x.Device);
        B(x).GroupNormForward(xc, wc, bc, groups, eps, y, mean, rstd);
        if (!Graph.NeedsGrad(x, weight, bias)) return y;

        bool needW = weight is not null && weight.RequiresGrad, needB = bias is not null && bias.RequiresGrad, needX = x.RequiresGrad;
        int[] xs = x.Shape;
        return Graph.Record(y, op, [x, weight, bias], [xc, wc, mean, rstd], (gy, s) =>
        {
            var gx = Tensor.Empty(xs, gy.DType, gy.Device);
            var gw = needW ? Tensor.Empty([c], gy.DType, gy.Device) : null;
            var gb = needB ? Tensor.Empty([c], gy.DType, gy.Device) : null;
            B(gy).GroupNormBackward(s[0]!, gy, s[1], groups, s[2]!, s[3]!, gx, gw, gb);
            if (!needX) { gx.Dispose(); gx = null; }
            return [gx, gw, gb];
        });
    }
}
