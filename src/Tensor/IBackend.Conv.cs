namespace FashionViL.Tensors;

public partial interface IBackend
{
    /// <summary>y [N,Cout,Ho,Wo] ← conv2d(x [N,Cin,H,W], w [Cout,Cin,Kh,Kw]) (+ bias [Cout]).</summary>
    void Conv2dForward(Tensor x, Tensor w, Tensor? bias, Tensor y, Conv2dParams p);
    /// <summary>gx [N,Cin,H,W] ← ∂/∂x given gy [N,Cout,Ho,Wo].</summary>
    void Conv2dBackwardInput(Tensor gy, Tensor w, Tensor gx, Conv2dParams p);
    /// <summary>gw [Cout,Cin,Kh,Kw] ← ∂/∂w and gb [Cout] ← Σ gy, given x and gy. Overwrites (does not accumulate).</summary>
    void Conv2dBackwardWeight(Tensor x, Tensor gy, Tensor gw, Tensor? gb, Conv2dParams p);

    /// <summary>y [N,C,Ho,Wo] ← max over each window; indices (Int64, y's shape) ← flat h·W+w of the max in x's plane (first max on ties).</summary>
    void MaxPool2dForward(Tensor x, Tensor y, Tensor indices, Pool2dParams p);
    /// <summary>
    /// gx [N,C,H,W] ← scatter-add of gy through indices (gx is overwritten). <paramref name="p"/>, when given, is the
    /// forward's geometry (the indices must then come from <see cref="MaxPool2dForward"/> with it): a backend may then
    /// gather per input element in parallel instead of scattering plane by plane; the result is the same.
    /// </summary>
    void MaxPool2dBackward(Tensor gy, Tensor indices, Tensor gx, Pool2dParams? p = null);
    /// <summary>Adaptive average pooling with PyTorch's window rule (start = ⌊i·H/Ho⌋, end = ⌈(i+1)·H/Ho⌉).</summary>
    void AdaptiveAvgPool2dForward(Tensor x, Tensor y);
    void AdaptiveAvgPool2dBackward(Tensor gy, Tensor gx);

    /// <summary>
    /// Batch norm over (N, H, W) per channel of x [N,C,H,W] (or [N,C]). Training: batch statistics
    /// (biased variance for normalising, unbiased for the running update with <paramref name="momentum"/>),
    /// running stats updated in place when given. Eval: running stats. saveMean/saveInvStd [C] receive the
    /// mean and 1/√(var+eps) that were used. Fused epilogue: with <paramref name="residual"/> (x's shape, contiguous)
    /// y ← bn(x) + residual, and with <paramref name="relu"/> y ← max(·, 0) — each step rounded as the separate ops
    /// (normalise, add, relu) would round it.
    /// </summary>
    void BatchNormForward(Tensor x, Tensor? weight, Tensor? bias, Tensor? runningMean, Tensor? runningVar,
        bool training, double momentum, double eps, Tensor y, Tensor saveMean, Tensor saveInvStd,
        Tensor? residual = null, bool relu = false);
    /// <summary>
    /// gx (and gw, gb [C] when given) from the saved statistics. In eval mode the statistics are constants.
    /// Fused epilogue: with <paramref name="reluOutput"/> (the forward's y of a relu-fused batch norm) the upstream
    /// gradient is first masked, g = gy where y &gt; 0 else 0; <paramref name="gResidual"/>, when given, receives that
    /// (masked) g — the residual's gradient.
    /// </summary>
    void BatchNormBackward(Tensor x, Tensor gy, Tensor? weight, Tensor saveMean, Tensor saveInvStd, bool training,
        Tensor gx, Tensor? gw, Tensor? gb, Tensor? reluOutput = null, Tensor? gResidual = null);

    /// <summary>Group norm of x [N,C,*] with <paramref name="groups"/> groups; mean/rstd are [N, groups].</summary>
    void GroupNormForward(Tensor x, Tensor? weight, Tensor? bias, int groups, double eps, Tensor y, Tensor mean, Tensor rstd);
    void GroupNormBackward(Tensor x, Tensor gy, Tensor? weight, int groups, Tensor mean, Tensor rstd, Tensor gx, Tensor? gw, Tensor? gb);
}
