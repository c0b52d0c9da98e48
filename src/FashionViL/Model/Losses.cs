using FashionViL.Autograd;

namespace FashionViL.Model;

/// <summary>The loss functions and poolings of the reference (BrandonHanx/mmf: mmf/modules/losses.py, pretraining.py).</summary>
public static class Losses
{
    /// <summary>float32 machine epsilon (<c>torch.finfo(torch.float32).eps</c>), the soft-label renormalisation guard.</summary>
    public const double Float32Eps = 1.1920928955078125e-07;

    /// <summary>F.normalize over the last dim: x / max(‖x‖₂, 1e-12).</summary>
    public static Tensor L2Normalize(Tensor x)
    {
        using var sq = x.Square();
        using var s = sq.Sum(-1, keepDim: true);
        using var n = s.Sqrt();
        using var c = n.Clamp(1e-12);
        return x / c;
    }

    /// <summary>Masked mean over the sequence: Σ_j m_j h_j / Σ_j m_j for h (B,T,H) and a 0/1 mask (B,T) of any numeric dtype.</summary>
    public static Tensor MaskedMean(Tensor h, Tensor mask)
    {
        if (h.Rank != 3 || mask.Rank != 2 || mask.Size(0) != h.Size(0) || mask.Size(1) != h.Size(1))
            throw new ArgumentException($"masked_mean: sequence {h.ShapeString} and mask {mask.ShapeString} must be [B,T,H] and [B,T]");
        using var m = mask.To(h.DType);
        using var m3 = m.Unsqueeze(2);
        using var hm = h * m3;
        using var num = hm.Sum(1);
        using var den = m.Sum(1, keepDim: true);
        return num / den;
    }

    /// <summary>MMF <c>ContrastiveLoss</c> on one device (τ = 1): ½[CE(a·bᵀ, arange) + CE(b·aᵀ, arange)].</summary>
    public static Tensor Contrastive(Tensor a, Tensor b, double temperature = 1.0)
    {
        if (a.Rank != 2 || b.Rank != 2 || a.Size(0) != b.Size(0) || a.Size(1) != b.Size(1))
            throw new ArgumentException($"contrastive loss: embeddings {a.ShapeString} and {b.ShapeString} must be the same [B,D]");
        using var labels = Tensor.Arange(a.Size(0), DType.Int64, a.Device);
        using var bt = b.Transpose(0, 1);
        using var at = a.Transpose(0, 1);
        using var l1r = a.Matmul(bt);
        using var l2r = b.Matmul(at);
        using var l1 = l1r / temperature;
        using var l2 = l2r / temperature;
        // Mean over the B rows as Σ·(1/B): what Reduction.Mean computes when no target is ignored, without
        // reading the targets back to count them (a host sync on a GPU).
        int rows = a.Size(0);
        using var s1 = Ops.CrossEntropy(l1, labels, reduction: Reduction.Sum);
        using var s2 = Ops.CrossEntropy(l2, labels, reduction: Reduction.Sum);
        using var c1 = s1.MulScalar(1.0 / rows);
        using var c2 = s2.MulScalar(1.0 / rows);
        using var s = c1 + c2;
        return s * 0.5;
    }

    /// <summary>
    /// MMF <c>SoftLabelCrossEntropyLoss</c> (normalize_targets, mean): rows whose targets sum to 0 are masked out; targets are
    /// renormalised by (eps + row sum); loss = Σ_rows −Σ_k y_k log softmax(s)_k divided by the number of non-zero rows (≥ 1).
    /// </summary>
    public static Tensor SoftLabelCrossEntropy(Tensor scores, Tensor targets)
    {
        if (scores.Rank != 2 || !targets.Sizes.SequenceEqual(scores.Sizes))
            throw new ArgumentException($"soft-label cross entropy: scores {scores.ShapeString} and targets {targets.ShapeString} must be the same [N,C]");
        using var tf = targets.To(scores.DType);
        using var rowSum = tf.Sum(-1, keepDim: true);
        // The row mask and the count stay on the device: no host sync in the step.
        using var zero = Tensor.Zeros([], scores.DType, scores.Device);
        using var nonZeroRow = rowSum.Ne(zero);
        using var mask = nonZeroRow.To(scores.DType);
        using var tm = tf * mask;
        using var tmSum = tm.Sum(-1, keepDim: true);
        using var den = tmSum + Float32Eps;
        using var y = tm / den;
        using var logp = scores.LogSoftmax(-1);
        using var prod = y * logp;
        using var total = prod.Sum();
        using var neg = -total;
        using var count = mask.Sum();
        using var atLeastOne = count.Clamp(min: 1);
        using var inv = atLeastOne.Reciprocal();
        return neg * inv;
    }
}
