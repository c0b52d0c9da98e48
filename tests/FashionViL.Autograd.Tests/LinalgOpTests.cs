using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Autograd.Tests;

/// <summary>Matmul (torch.matmul semantics), Bmm and Linear: forward against float64 loops, backward by finite differences.</summary>
public class LinalgOpTests
{
    // ------------------------------------------------------------------ float64 scalar references

    /// <summary>torch.matmul semantics written out: vectors promoted, batch dims broadcast, explicit index arithmetic.</summary>
    private static Tensor RefMatmul(Tensor a, Tensor b)
    {
        var av = a.ToArray<double>(); var bv = b.ToArray<double>();
        int[] sa = a.Shape, sb = b.Shape;
        bool vecA = sa.Length == 1, vecB = sb.Length == 1;
        if (vecA) sa = [1, sa[0]];
        if (vecB) sb = [sb[0], 1];
        int M = sa[^2], K = sa[^1], N = sb[^1];
        int nb = Math.Max(sa.Length, sb.Length) - 2;
        var batch = new int[nb];
        var ba = new int[nb]; var bb = new int[nb];
        for (int d = 0; d < nb; d++)
        {
            int ia = d - (nb - (sa.Length - 2)), ib = d - (nb - (sb.Length - 2));
            ba[d] = ia >= 0 ? sa[ia] : 1; bb[d] = ib >= 0 ? sb[ib] : 1;
            batch[d] = Math.Max(ba[d], bb[d]);
        }
        int total = 1; foreach (var s in batch) total *= s;
        var r = new double[total * M * N];
        for (int t = 0; t < total; t++)
        {
            int rem = t, oa = 0, ob = 0, mulA = 1, mulB = 1;
            for (int d = nb - 1; d >= 0; d--)
            {
                int i = rem % batch[d]; rem /= batch[d];
                oa += (ba[d] == 1 ? 0 : i) * mulA; mulA *= ba[d];
                ob += (bb[d] == 1 ? 0 : i) * mulB; mulB *= bb[d];
            }
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                {
                    double s = 0;
                    for (int k = 0; k < K; k++) s += av[(oa * M + i) * K + k] * bv[(ob * K + k) * N + j];
                    r[(t * M + i) * N + j] = s;
                }
        }
        var shape = new List<int>(batch);
        if (!vecA) shape.Add(M);
        if (!vecB) shape.Add(N);
        return Tensor.FromArray(r, shape.ToArray());
    }

    private static Tensor RefLinear(Tensor x, Tensor w, Tensor? bias)
    {
        var xv = x.ToArray<double>(); var wv = w.ToArray<double>(); var bv = bias?.ToArray<double>();
        int inF = w.Size(1), outF = w.Size(0), rows = x.Numel / inF;
        var r = new double[rows * outF];
        for (int m = 0; m < rows; m++)
            for (int o = 0; o < outF; o++)
            {
                double s = bv?[o] ?? 0;
                for (int i = 0; i < inF; i++) s += xv[m * inF + i] * wv[o * inF + i];
                r[m * outF + o] = s;
            }
        return Tensor.FromArray(r, [.. x.Shape[..^1], outF]);
    }

    private static Tensor R(ulong seed, params int[] shape) => OpCheck.Rand(shape, seed);
    private static Tensor G(ulong seed, params int[] shape) => OpCheck.Rand(shape, seed, requiresGrad: true);

    // ------------------------------------------------------------------ Matmul forward

    private static readonly int[][][] MatmulShapes =
    [
        [[5], [5]], [[1], [1]],                                  // dot
        [[3], [3, 4]], [[4, 3], [3]], [[17], [17, 1]],           // vector-matrix, matrix-vector
        [[3], [2, 3, 4]], [[2, 4, 3], [3]],                      // vector with a batch
        [[3, 17], [17, 5]], [[1, 1], [1, 1]], [[65, 3], [3, 1]], [[1, 65], [65, 129]],
        [[2, 1, 3, 4], [3, 4, 5]], [[4, 3], [2, 3, 5]], [[2, 3, 4], [4, 5]], [[1, 3, 4], [2, 4, 5]], [[3, 1, 2, 3], [1, 4, 3, 2]],
    ];

    [Test]
    public void MatmulForward([Range(0, 15)] int c)
    {
        var s = MatmulShapes[c];
        using var a = R(1, s[0]); using var b = R(2, s[1]);
        OpCheck.Forward(t => t[0].Matmul(t[1]), t => RefMatmul(t[0], t[1]), [a, b], what: $"matmul {Shape.Format(s[0])}·{Shape.Format(s[1])}");
    }

    [Test]
    public void MatmulForwardNonContiguous()
    {
        using var a = R(3, 17, 9); using var b = R(4, 9, 6);
        using var na = OpCheck.NonContiguous(a); using var nb = OpCheck.NonContiguous(b);
        OpCheck.Forward(t => t[0].Matmul(t[1]), t => RefMatmul(t[0], t[1]), [na, nb], what: "transposed layouts");
        OpCheck.Forward(t => t[0].Matmul(t[1]), t => RefMatmul(t[0], t[1]), [a, nb], what: "b transposed");

        // 3-D reverse layout (needs a copy), and a batch that does not collapse to one stride (per-matrix calls)
        using var a3 = R(5, 2, 3, 4); using var b3 = R(6, 2, 4, 5);
        using var na3 = OpCheck.NonContiguous(a3);
        OpCheck.Forward(t => t[0].Matmul(t[1]), t => RefMatmul(t[0], t[1]), [na3, b3], what: "reversed 3-D");
        using var p = R(7, 3, 2, 4, 5);
        using var perm = p.Permute(1, 0, 2, 3);   // [2, 3, 4, 5], batch strides 20 and 60
        using var a4 = R(8, 2, 3, 6, 4);
        OpCheck.Forward(t => t[0].Matmul(t[1]), t => RefMatmul(t[0], t[1].Contiguous()), [a4, perm], what: "permuted batch");

        // rows longer than the row (a narrowed view) and a broadcast (stride-0) operand
        using var wide = R(9, 5, 12);
        using var narrow = wide.Narrow(1, 2, 7);
        using var rhs = R(10, 7, 3);
        OpCheck.Forward(t => t[0].Matmul(t[1]), t => RefMatmul(t[0], t[1]), [narrow, rhs], what: "narrowed rows");
        using var row = R(11, 1, 7);
        using var bcast = row.Expand(5, 7);
        OpCheck.Forward(t => t[0].Matmul(t[1]), t => RefMatmul(t[0].Contiguous(), t[1]), [bcast, rhs], what: "expanded rows");
    }

    [Test]
    public void MatmulEmpty()
    {
        using var a = Tensor.Zeros([0, 3], DType.Float64); using var b = R(1, 3, 4);
        OpCheck.Forward(t => t[0].Matmul(t[1]), t => RefMatmul(t[0], t[1]), [a, b], what: "M = 0");
        using var a2 = Tensor.Full([2, 0], 1.0, DType.Float64); using var b2 = Tensor.Full([0, 3], 1.0, DType.Float64);
        OpCheck.Forward(t => t[0].Matmul(t[1]), t => RefMatmul(t[0], t[1]), [a2, b2], what: "K = 0 gives zeros");
    }

    // ------------------------------------------------------------------ Matmul backward

    [Test]
    public void MatmulGrad([Range(0, 15)] int c)
    {
        // (the one large forward case is cut down: every element costs two forward passes here)
        var s = c == 10 ? [[1, 9], [9, 13]] : MatmulShapes[c];
        using var a = G(20, s[0]); using var b = G(21, s[1]);
        OpCheck.GradCheck(t => t[0].Matmul(t[1]), [a, b], what: $"matmul {Shape.Format(s[0])}·{Shape.Format(s[1])}");
    }

    [Test]
    public void MatmulGradThroughTransposedViews()
    {
        using var a = G(22, 4, 3); using var b = G(23, 5, 4);
        OpCheck.GradCheck(t => t[0].T.Matmul(t[1].T), [a, b], what: "aᵀ·bᵀ");
        using var a3 = G(24, 2, 3, 4); using var b3 = G(25, 2, 5, 4);
        OpCheck.GradCheck(t => t[0].Matmul(t[1].Transpose(1, 2)), [a3, b3], what: "a·bᵀ batched");
        using var p = G(26, 3, 2, 4, 5); using var a4 = G(27, 2, 3, 6, 4);
        OpCheck.GradCheck(t => t[0].Matmul(t[1].Permute(1, 0, 2, 3)), [a4, p], what: "permuted batch");
    }

    [Test]
    public void MatmulGradOneSide()
    {
        using var a = G(28, 3, 4); using var b = R(29, 4, 2);
        OpCheck.GradCheck(t => t[0].Matmul(t[1]), [a, b], what: "only a");
        using var a2 = R(30, 2, 3, 4); using var b2 = G(31, 4, 2);
        OpCheck.GradCheck(t => t[0].Matmul(t[1]), [a2, b2], what: "only b, folded batch");
    }

    // ------------------------------------------------------------------ Bmm

    [Test]
    public void BmmForwardAndGrad()
    {
        using var a = R(40, 3, 17, 5); using var b = R(41, 3, 5, 4);
        OpCheck.Forward(t => Ops.Bmm(t[0], t[1]), t => RefMatmul(t[0], t[1]), [a, b], what: "bmm");
        using var one = R(42, 1, 1, 1); using var one2 = R(43, 1, 1, 3);
        OpCheck.Forward(t => Ops.Bmm(t[0], t[1]), t => RefMatmul(t[0], t[1]), [one, one2], what: "bmm batch 1");
        using var ga = G(44, 2, 3, 4); using var gb = G(45, 2, 4, 5);
        OpCheck.GradCheck(t => Ops.Bmm(t[0], t[1]), [ga, gb], what: "bmm grad");
        OpCheck.GradCheck(t => Ops.Bmm(t[0], t[0].Transpose(1, 2)), [ga], what: "bmm a·aᵀ");
    }

    // ------------------------------------------------------------------ Linear

    [Test]
    public void LinearForward()
    {
        using var x = R(50, 2, 3, 17); using var w = R(51, 5, 17); using var bias = R(52, 5);
        OpCheck.Forward(t => Ops.Linear(t[0], t[1], t[2]), t => RefLinear(t[0], t[1], t[2]), [x, w, bias], what: "linear 3-D with bias");
        OpCheck.Forward(t => Ops.Linear(t[0], t[1]), t => RefLinear(t[0], t[1], null), [x, w], what: "linear no bias");
        using var v = R(53, 17);
        OpCheck.Forward(t => Ops.Linear(t[0], t[1], t[2]), t => RefLinear(t[0], t[1], t[2]), [v, w, bias], what: "linear 1-D input");
        using var big = R(54, 33, 65); using var wb = R(55, 129, 65); using var bb = R(56, 129);
        OpCheck.Forward(t => Ops.Linear(t[0], t[1], t[2]), t => RefLinear(t[0], t[1], t[2]), [big, wb, bb], what: "linear awkward sizes");
        using var nx = OpCheck.NonContiguous(big); using var nw = OpCheck.NonContiguous(wb);
        OpCheck.Forward(t => Ops.Linear(t[0], t[1], t[2]), t => RefLinear(t[0], t[1], t[2]), [nx, nw, bb], what: "linear non-contiguous");
        using var empty = Tensor.Zeros([0, 17], DType.Float64);
        OpCheck.Forward(t => Ops.Linear(t[0], t[1], t[2]), t => RefLinear(t[0], t[1], t[2]), [empty, w, bias], what: "linear empty batch");
    }

    [Test]
    public void LinearGrad()
    {
        using var x = G(60, 2, 3, 4); using var w = G(61, 5, 4); using var bias = G(62, 5);
        OpCheck.GradCheck(t => Ops.Linear(t[0], t[1], t[2]), [x, w, bias], what: "linear 3-D");
        OpCheck.GradCheck(t => Ops.Linear(t[0], t[1]), [x, w], what: "linear no bias");
        using var v = G(63, 4);
        OpCheck.GradCheck(t => Ops.Linear(t[0], t[1], t[2]), [v, w, bias], what: "linear 1-D");
        using var wt = G(64, 4, 5);
        OpCheck.GradCheck(t => Ops.Linear(t[0], t[1].T, t[2]), [x, wt, bias], what: "linear transposed weight");
        using var one = G(65, 1, 1); using var w1 = G(66, 1, 1); using var b1 = G(67, 1);
        OpCheck.GradCheck(t => Ops.Linear(t[0], t[1], t[2]), [one, w1, b1], what: "linear 1×1");
    }

    // ------------------------------------------------------------------ bad inputs

    private static void Throws(Action act, string op, params string[] parts)
    {
        var ex = Assert.Throws<ArgumentException>(() => act());
        Assert.That(ex!.Message, Does.StartWith(op));
        foreach (var p in parts) Assert.That(ex.Message, Does.Contain(p));
    }

    [Test]
    public void BadShapesNameTheOpAndShapes()
    {
        using var a = R(1, 2, 3); using var b = R(2, 4, 5);
        Throws(() => a.Matmul(b), "matmul", "[2, 3]", "[4, 5]");
        using var a3 = R(3, 2, 3, 4); using var b3 = R(4, 3, 4, 5);
        Throws(() => a3.Matmul(b3), "matmul", "[2, 3, 4]", "[3, 4, 5]");
        using var s = Tensor.Scalar(1, DType.Float64);
        Throws(() => s.Matmul(a), "matmul", "[]");
        using var f32 = Tensor.Zeros([3, 2]);
        Throws(() => a.Matmul(f32), "matmul", "float32", "float64");

        Throws(() => Ops.Bmm(a, b), "bmm", "[2, 3]");
        using var c3 = R(5, 3, 3, 5);
        Throws(() => Ops.Bmm(a3, c3), "bmm", "[2, 3, 4]", "[3, 3, 5]");
        using var d3 = R(6, 2, 5, 5);
        Throws(() => Ops.Bmm(a3, d3), "bmm", "[2, 5, 5]");

        using var w = R(7, 5, 4);
        Throws(() => Ops.Linear(a, w), "linear", "[2, 3]", "[5, 4]");
        using var x = R(8, 2, 4); using var bias = R(9, 4);
        Throws(() => Ops.Linear(x, w, bias), "linear", "bias", "[4]");
        using var w3 = R(10, 1, 5, 4);
        Throws(() => Ops.Linear(x, w3), "linear", "[1, 5, 4]");
    }
}
