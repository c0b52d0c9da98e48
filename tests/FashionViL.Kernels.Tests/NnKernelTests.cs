using FashionViL.Kernels.Cpu;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests;

/// <summary>The nn kernels of the CPU backend against float64 scalar references written here.</summary>
[TestFixture]
public class NnKernelTests
{
    private static IBackend Cpu => Backends.Get(Device.Cpu);
    private static readonly DType[] Floats = [DType.Float32, DType.Float64];

    private static (double rtol, double atol) Tol(DType dt) => dt == DType.Float32 ? (1e-4, 1e-5) : (1e-10, 1e-12);

    private static Tensor Rand(int[] shape, ulong seed, DType dt, double lo = -1, double hi = 1)
    {
        using var t = OpCheck.Rand(shape, seed, DType.Float64, lo, hi);
        return t.To(dt);
    }

    // ------------------------------------------------------------------ layer norm

    private static (double[] y, double[] mean, double[] rstd) LayerNormRef(double[] x, double[]? w, double[]? b, int rows, int d, double eps)
    {
        var y = new double[x.Length]; var mean = new double[rows]; var rstd = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double m = 0;
            for (int i = 0; i < d; i++) m += x[r * d + i];
            m /= d;
            double v = 0;
            for (int i = 0; i < d; i++) v += (x[r * d + i] - m) * (x[r * d + i] - m);
            v /= d;
            double rs = 1 / Math.Sqrt(v + eps);
            mean[r] = m; rstd[r] = rs;
            for (int i = 0; i < d; i++) y[r * d + i] = (x[r * d + i] - m) * rs * (w?[i] ?? 1) + (b?[i] ?? 0);
        }
        return (y, mean, rstd);
    }

    [Test]
    public void LayerNormForwardMatchesReference([Values(DType.Float32, DType.Float64)] DType dt, [Values(true, false)] bool affine, [Values(1e-12, 1e-5)] double eps)
    {
        const int rows = 3, d = 7;
        using var x0 = Rand([rows, d], 1, dt, -2, 3);
        using var x = OpCheck.NonContiguous(x0);
        using var w = affine ? Rand([d], 2, dt, 0.5, 1.5) : null;
        using var b = affine ? Rand([d], 3, dt) : null;
        using var y = Tensor.Empty([rows, d], dt);
        using var mean = Tensor.Empty([rows], dt);
        using var rstd = Tensor.Empty([rows], dt);
        Cpu.LayerNormForward(x, w, b, eps, y, mean, rstd);
        var (ry, rm, rr) = LayerNormRef(x0.ToArray<double>(), w?.ToArray<double>(), b?.ToArray<double>(), rows, d, eps);
        var (rt, at) = Tol(dt);
        OpCheck.AssertClose(y, ry, rt, at, "y");
        OpCheck.AssertClose(mean, rm, rt, at, "mean");
        OpCheck.AssertClose(rstd, rr, rt, at, "rstd");
    }

    [Test]
    public void LayerNormBackwardMatchesJacobian([Values(DType.Float32, DType.Float64)] DType dt)
    {
        const int rows = 5, d = 6;
        const double eps = 1e-5;
        using var x = Rand([rows, d], 4, dt, -2, 2);
        using var w = Rand([d], 5, dt, 0.5, 1.5);
        using var gy = Rand([rows, d], 6, dt);
        using var y = Tensor.Empty([rows, d], dt);
        using var mean = Tensor.Empty([rows], dt);
        using var rstd = Tensor.Empty([rows], dt);
        Cpu.LayerNormForward(x, w, null, eps, y, mean, rstd);
        using var gx = Tensor.Empty([rows, d], dt);
        using var gw = Tensor.Empty([d], dt);
        using var gb = Tensor.Empty([d], dt);
        Cpu.LayerNormBackward(x, gy, w, mean, rstd, gx, gw, gb);

        // Reference: the full Jacobian dy_i/dx_j = w_i·rstd·(δ_ij − 1/D − x̂_i·x̂_j/D), applied row by row.
        var xa = x.ToArray<double>(); var wa = w.ToArray<double>(); var ga = gy.ToArray<double>();
        var (_, rm, rr) = LayerNormRef(xa, wa, null, rows, d, eps);
        var rgx = new double[rows * d]; var rgw = new double[d]; var rgb = new double[d];
        for (int r = 0; r < rows; r++)
        {
            var xh = new double[d];
            for (int i = 0; i < d; i++) xh[i] = (xa[r * d + i] - rm[r]) * rr[r];
            for (int j = 0; j < d; j++)
            {
                double s = 0;
                for (int i = 0; i < d; i++) s += ga[r * d + i] * wa[i] * rr[r] * ((i == j ? 1 : 0) - 1.0 / d - xh[i] * xh[j] / d);
                rgx[r * d + j] = s;
            }
            for (int i = 0; i < d; i++) { rgw[i] += ga[r * d + i] * xh[i]; rgb[i] += ga[r * d + i]; }
        }
        var (rt, at) = Tol(dt);
        OpCheck.AssertClose(gx, rgx, rt, at, "gx");
        OpCheck.AssertClose(gw, rgw, rt, at, "gw");
        OpCheck.AssertClose(gb, rgb, rt, at, "gb");
    }

    [Test]
    public void LayerNormBackwardDoesNotDependOnThreadCount()
    {
        const int rows = 97, d = 300;
        using var x = Rand([rows, d], 70, DType.Float32, -2, 2);
        using var w = Rand([d], 71, DType.Float32, 0.5, 1.5);
        using var gy = Rand([rows, d], 72, DType.Float32);
        using var y = Tensor.Empty([rows, d]); using var mean = Tensor.Empty([rows]); using var rstd = Tensor.Empty([rows]);
        Cpu.LayerNormForward(x, w, null, 1e-12, y, mean, rstd);
        int saved = Parallelism.MaxThreads;
        try
        {
            var results = new List<float[][]>();
            foreach (var threads in new[] { 1, 2 })
            {
                Parallelism.MaxThreads = threads;
                using var gx = Tensor.Empty([rows, d]); using var gw = Tensor.Empty([d]); using var gb = Tensor.Empty([d]);
                Cpu.LayerNormBackward(x, gy, w, mean, rstd, gx, gw, gb);
                results.Add([gx.ToArray<float>(), gw.ToArray<float>(), gb.ToArray<float>()]);
            }
            for (int i = 0; i < 3; i++) Assert.That(results[1][i], Is.EqualTo(results[0][i]), $"output {i}");
        }
        finally { Parallelism.MaxThreads = saved; }
    }

    [Test]
    public void LayerNormRejectsWrongWeight()
    {
        using var x = Tensor.Zeros([2, 4]);
        using var w = Tensor.Ones([5]);
        using var y = Tensor.Empty([2, 4]); using var m = Tensor.Empty([2]); using var r = Tensor.Empty([2]);
        var ex = Assert.Throws<ArgumentException>(() => Cpu.LayerNormForward(x, w, null, 1e-12, y, m, r))!;
        Assert.That(ex.Message, Does.Contain("layer_norm").And.Contain("[5]").And.Contain("[2, 4]"));
    }

    // ------------------------------------------------------------------ softmax

    private static double[] SoftmaxRef(double[] x, int rows, int c, bool log)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double m = double.NegativeInfinity;
            for (int i = 0; i < c; i++) m = Math.Max(m, x[r * c + i]);
            double s = 0;
            for (int i = 0; i < c; i++) s += Math.Exp(x[r * c + i] - m);
            for (int i = 0; i < c; i++) y[r * c + i] = log ? x[r * c + i] - m - Math.Log(s) : Math.Exp(x[r * c + i] - m) / s;
        }
        return y;
    }

    [Test]
    public void SoftmaxForwardIsStableAndMatchesReference([Values(DType.Float32, DType.Float64)] DType dt, [Values(false, true)] bool log)
    {
        const int rows = 4, c = 5;
        var xa = new double[rows * c];
        using (var r = OpCheck.Rand([rows * c], 7, DType.Float64, -3, 3)) r.ToArray<double>().CopyTo(xa, 0);
        // row 1: huge logits (exp overflows without the max shift); row 2: a masked (−10000) entry
        for (int i = 0; i < c; i++) xa[c + i] = 1000 + i;
        xa[2 * c + 3] = -10000;
        using var x64 = Tensor.FromArray(xa, rows, c);
        using var x = x64.To(dt);
        using var y = Tensor.Empty([rows, c], dt);
        Cpu.Softmax(x, y, log);
        var (rt, at) = Tol(dt);
        OpCheck.AssertClose(y, SoftmaxRef(xa, rows, c, log), rt, at, log ? "log_softmax" : "softmax");
    }

    [Test]
    public void SoftmaxBackwardMatchesJacobian([Values(DType.Float32, DType.Float64)] DType dt, [Values(false, true)] bool log)
    {
        const int rows = 3, c = 7;
        using var x = Rand([rows, c], 8, dt, -2, 2);
        using var gy = Rand([rows, c], 9, dt);
        using var y = Tensor.Empty([rows, c], dt);
        Cpu.Softmax(x, y, log);
        using var gx = Tensor.Empty([rows, c], dt);
        Cpu.SoftmaxBackward(y, gy, gx, log);
        var p = SoftmaxRef(x.ToArray<double>(), rows, c, false);
        var g = gy.ToArray<double>();
        var want = new double[rows * c];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < c; j++)
            {
                double s = 0;
                for (int i = 0; i < c; i++)
                {
                    double dij = i == j ? 1 : 0;
                    // softmax: dy_i/dx_j = p_i(δ_ij − p_j); log-softmax: δ_ij − p_j
                    s += g[r * c + i] * (log ? dij - p[r * c + j] : p[r * c + i] * (dij - p[r * c + j]));
                }
                want[r * c + j] = s;
            }
        var (rt, at) = Tol(dt);
        OpCheck.AssertClose(gx, want, rt, at);
    }

    // ------------------------------------------------------------------ cross-entropy

    [Test]
    public void CrossEntropyHardTargetsWithIgnoreIndex([Values(DType.Float32, DType.Float64)] DType dt)
    {
        const int n = 5, c = 4, ignore = -1;
        using var x = Rand([n, c], 10, dt, -3, 3);
        long[] t = [2, -1, 0, 3, -1];
        using var target = Tensor.FromArray(t, n);
        using var gl = Rand([n], 11, dt, 0.5, 1.5);
        using var loss = Tensor.Empty([n], dt); using var lse = Tensor.Empty([n], dt);
        Cpu.CrossEntropyForward(x, target, null, ignore, loss, lse);
        using var gx = Tensor.Empty([n, c], dt);
        Cpu.CrossEntropyBackward(x, target, null, ignore, lse, gl, gx);

        var xa = x.ToArray<double>(); var ga = gl.ToArray<double>();
        var ls = SoftmaxRef(xa, n, c, true);
        var wantLoss = new double[n]; var wantG = new double[n * c];
        for (int r = 0; r < n; r++)
        {
            if (t[r] == ignore) continue;
            wantLoss[r] = -ls[r * c + t[r]];
            for (int j = 0; j < c; j++) wantG[r * c + j] = ga[r] * (Math.Exp(ls[r * c + j]) - (j == t[r] ? 1 : 0));
        }
        var (rt, at) = Tol(dt);
        OpCheck.AssertClose(loss, wantLoss, rt, at, "loss");
        OpCheck.AssertClose(gx, wantG, rt, at, "grad");
    }

    [Test]
    public void CrossEntropySoftTargets([Values(DType.Float32, DType.Float64)] DType dt)
    {
        const int n = 3, c = 5;
        using var x = Rand([n, c], 12, dt, -3, 3);
        using var st = Rand([n, c], 13, dt, 0, 1);
        using var gl = Rand([n], 14, dt, 0.5, 1.5);
        using var loss = Tensor.Empty([n], dt); using var lse = Tensor.Empty([n], dt);
        Cpu.CrossEntropyForward(x, null, st, -100, loss, lse);
        using var gx = Tensor.Empty([n, c], dt);
        Cpu.CrossEntropyBackward(x, null, st, -100, lse, gl, gx);

        var ls = SoftmaxRef(x.ToArray<double>(), n, c, true);
        var ta = st.ToArray<double>(); var ga = gl.ToArray<double>();
        var wantLoss = new double[n]; var wantG = new double[n * c];
        for (int r = 0; r < n; r++)
        {
            double tsum = 0;
            for (int j = 0; j < c; j++) { wantLoss[r] -= ta[r * c + j] * ls[r * c + j]; tsum += ta[r * c + j]; }
            for (int j = 0; j < c; j++) wantG[r * c + j] = ga[r] * (Math.Exp(ls[r * c + j]) * tsum - ta[r * c + j]);
        }
        var (rt, at) = Tol(dt);
        OpCheck.AssertClose(loss, wantLoss, rt, at, "loss");
        OpCheck.AssertClose(gx, wantG, rt, at, "grad");
    }

    [Test]
    public void CrossEntropyRejectsOutOfRangeTarget()
    {
        using var x = Tensor.Zeros([2, 3]);
        using var t = Tensor.FromArray(new long[] { 1, 7 }, 2);
        using var loss = Tensor.Empty([2]); using var lse = Tensor.Empty([2]);
        var ex = Assert.Throws<ArgumentException>(() => Cpu.CrossEntropyForward(x, t, null, -100, loss, lse))!;
        Assert.That(ex.Message, Does.Contain("cross_entropy").And.Contain("7").And.Contain("[2, 3]"));
    }

    // ------------------------------------------------------------------ dropout

    [Test]
    public void DropoutFollowsThePhiloxRuleAndScales([Values(DType.Float32, DType.Float64)] DType dt)
    {
        const int n = 1001; const double p = 0.3; const ulong seed = 77, offset = 5;
        using var x = Rand([7, 143], 15, dt);
        using var y = Tensor.Empty([7, 143], dt);
        using var mask = Tensor.Empty([7, 143], DType.UInt8);
        Cpu.Dropout(x, y, mask, p, seed, offset);
        var xa = x.ToArray<double>(); var m = mask.ToArray<byte>();
        var want = new double[n]; var wantMask = new double[n];
        for (int i = 0; i < n; i++)
        {
            bool keep = Philox.Uniform(seed, offset, i) >= p;
            wantMask[i] = keep ? 1 : 0;
            want[i] = keep ? xa[i] / (1 - p) : 0;
        }
        OpCheck.AssertClose(m.Select(v => (double)v).ToArray(), wantMask, 0, 0, "mask");
        var (rt, at) = Tol(dt);
        OpCheck.AssertClose(y, want, rt, at, "y");
    }

    [Test]
    public void DropoutDropsExactlyWhereBernoulliDrawsOne()
    {
        const int n = 999; const double p = 0.37;
        var gen = new Generator(123);
        using var bern = gen.Bernoulli([n], p, DType.Float64); // drawn at offset 0
        using var x = Tensor.Ones([n], DType.Float64);
        using var y = Tensor.Empty([n], DType.Float64); using var m = Tensor.Empty([n], DType.UInt8);
        Cpu.Dropout(x, y, m, p, 123, 0);
        var want = bern.ToArray<double>().Select(b => 1 - b).ToArray();
        OpCheck.AssertClose(m.ToArray<byte>().Select(v => (double)v).ToArray(), want, 0, 0, "mask");
    }

    [Test]
    public void DropoutIsReproducibleAndKeepsAboutOneMinusP()
    {
        const int n = 100_000; const double p = 0.1;
        using var x = Tensor.Ones([n]);
        using var y1 = Tensor.Empty([n]); using var m1 = Tensor.Empty([n], DType.UInt8);
        using var y2 = Tensor.Empty([n]); using var m2 = Tensor.Empty([n], DType.UInt8);
        using var y3 = Tensor.Empty([n]); using var m3 = Tensor.Empty([n], DType.UInt8);
        Cpu.Dropout(x, y1, m1, p, 42, 1000);
        Cpu.Dropout(x, y2, m2, p, 42, 1000);
        Cpu.Dropout(x, y3, m3, p, 42, 1000 + (ulong)n / 4);
        var a = m1.ToArray<byte>(); var b = m2.ToArray<byte>(); var c = m3.ToArray<byte>();
        Assert.That(a, Is.EqualTo(b), "same seed and offset give the same mask");
        Assert.That(a.SequenceEqual(c), Is.False, "the next offset gives another mask");
        double rate = a.Average(v => (double)v);
        double sigma = Math.Sqrt(p * (1 - p) / n);
        Assert.That(rate, Is.EqualTo(1 - p).Within(5 * sigma), "keep rate");
        var ya = y1.ToArray<float>();
        Assert.That(ya.Where((v, i) => a[i] == 1).All(v => v == (float)(1 / (1 - p))), Is.True, "kept elements are scaled by 1/(1−p)");
    }

    [Test]
    public void DropoutDoesNotDependOnThreadCount()
    {
        const int n = 200_001; // large enough for two threads
        using var x = Rand([n], 16, DType.Float32);
        int saved = Parallelism.MaxThreads;
        try
        {
            Parallelism.MaxThreads = 1;
            using var y1 = Tensor.Empty([n]); using var m1 = Tensor.Empty([n], DType.UInt8);
            Cpu.Dropout(x, y1, m1, 0.25, 9, 3);
            Parallelism.MaxThreads = 2;
            using var y2 = Tensor.Empty([n]); using var m2 = Tensor.Empty([n], DType.UInt8);
            Cpu.Dropout(x, y2, m2, 0.25, 9, 3);
            Assert.That(y2.ToArray<float>().SequenceEqual(y1.ToArray<float>()), Is.True, "outputs differ");
            Assert.That(m2.ToArray<byte>().SequenceEqual(m1.ToArray<byte>()), Is.True, "masks differ");
        }
        finally { Parallelism.MaxThreads = saved; }
    }

    [Test]
    public void DropoutEdgeProbabilities()
    {
        using var x = Rand([9], 17, DType.Float64);
        using var y = Tensor.Empty([9], DType.Float64); using var m = Tensor.Empty([9], DType.UInt8);
        Cpu.Dropout(x, y, m, 0, 1, 0);
        OpCheck.AssertClose(y, x, 0, 0, "p = 0 is the identity");
        Cpu.Dropout(x, y, m, 1, 1, 0);
        OpCheck.AssertClose(y, new double[9], 0, 0, "p = 1 zeroes everything");
        Assert.Throws<ArgumentException>(() => Cpu.Dropout(x, y, m, 1.5, 1, 0));
    }

    // ------------------------------------------------------------------ attention

    /// <summary>Scalar reference: o, probs for q [B,H,L,D], k/v [B,H,S,D], mask[b][s] on keys (or null).</summary>
    private static (double[] o, double[] probs) AttentionRef(double[] q, double[] k, double[] v, double[]? keyMask, int bsz, int h, int l, int s, int d,
        double scale, double p, ulong seed, ulong offset)
    {
        var o = new double[bsz * h * l * d]; var probs = new double[bsz * h * l * s];
        for (int b = 0; b < bsz; b++)
            for (int hh = 0; hh < h; hh++)
                for (int i = 0; i < l; i++)
                {
                    int bh = b * h + hh;
                    var sc = new double[s];
                    double m = double.NegativeInfinity;
                    for (int j = 0; j < s; j++)
                    {
                        double dot = 0;
                        for (int e = 0; e < d; e++) dot += q[(bh * l + i) * d + e] * k[(bh * s + j) * d + e];
                        sc[j] = scale * dot + (keyMask?[b * s + j] ?? 0);
                        m = Math.Max(m, sc[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < s; j++) { sc[j] = Math.Exp(sc[j] - m); sum += sc[j]; }
                    for (int j = 0; j < s; j++)
                    {
                        long flat = ((long)bh * l + i) * s + j;
                        double pr = sc[j] / sum;
                        probs[flat] = pr;
                        double pd = p > 0 && Philox.Uniform(seed, offset, flat) < p ? 0 : pr / (1 - p);
                        for (int e = 0; e < d; e++) o[(bh * l + i) * d + e] += pd * v[(bh * s + j) * d + e];
                    }
                }
        return (o, probs);
    }

    /// <summary>[B,H,L,D] values laid out as [B,L,H,D] storage (the layout after splitting heads), as a permuted view.</summary>
    private static Tensor HeadsView(Tensor t)
    {
        int b = t.Sizes[0], h = t.Sizes[1], l = t.Sizes[2], d = t.Sizes[3];
        using var store = Tensor.Empty([b, l, h, d], t.DType);
        using var view = store.AsStrided([b, h, l, d], [l * h * d, d, h * d, 1], 0);
        Cpu.Copy(t, view);
        return view.Alias();
    }

    [Test]
    public void AttentionForwardMatchesReference([Values(DType.Float32, DType.Float64)] DType dt, [Values(0.0, 0.3)] double p)
    {
        const int bsz = 2, h = 3, l = 3, s = 5, d = 4; const double scale = 0.5; const ulong seed = 3, offset = 11;
        using var q0 = Rand([bsz, h, l, d], 20, dt); using var k0 = Rand([bsz, h, s, d], 21, dt); using var v0 = Rand([bsz, h, s, d], 22, dt);
        using var q = HeadsView(q0); using var k = HeadsView(k0);
        // key-padding mask [B,1,1,S] broadcast with zero strides: sample 0 has 2 padded keys, sample 1 none
        double[] km = [0, 0, 0, -10000, -10000, 0, 0, 0, 0, 0];
        using var km64 = Tensor.FromArray(km, bsz, 1, 1, s);
        using var kmT = km64.To(dt);
        using var mask = kmT.AsStrided([bsz, h, l, s], [s, 0, 0, 1], 0);
        using var o = Tensor.Empty([bsz, h, l, d], dt);
        using var probs = Tensor.Empty([bsz, h, l, s], dt);
        Cpu.AttentionForward(q, k, v0, mask, scale, p, seed, offset, o, probs);
        var (ro, rp) = AttentionRef(q0.ToArray<double>(), k0.ToArray<double>(), v0.ToArray<double>(), km, bsz, h, l, s, d, scale, p, seed, offset);
        var (rt, at) = Tol(dt);
        OpCheck.AssertClose(probs, rp, rt, at, "probs");
        OpCheck.AssertClose(o, ro, rt, at, "o");
    }

    [Test]
    public void AttentionMatchesReferenceWithPartialBlocksAndVectorTails([Values(DType.Float32, DType.Float64)] DType dt)
    {
        // L = 7 (a full block of 4 query rows and a partial one), D = 19 (vector body and a scalar tail),
        // S = 21 (dropout rows start off the 4-element Philox blocks and are long enough for the vector generator)
        const int bsz = 1, h = 2, l = 7, s = 21, d = 19; const double scale = 0.3, p = 0.2; const ulong seed = 4, offset = 1;
        using var q = Rand([bsz, h, l, d], 33, dt); using var k = Rand([bsz, h, s, d], 34, dt); using var v = Rand([bsz, h, s, d], 35, dt);
        using var o = Tensor.Empty([bsz, h, l, d], dt); using var probs = Tensor.Empty([bsz, h, l, s], dt);
        Cpu.AttentionForward(q, k, v, null, scale, p, seed, offset, o, probs);
        var (ro, rp) = AttentionRef(q.ToArray<double>(), k.ToArray<double>(), v.ToArray<double>(), null, bsz, h, l, s, d, scale, p, seed, offset);
        var (rt, at) = Tol(dt);
        OpCheck.AssertClose(probs, rp, rt, at, "probs");
        OpCheck.AssertClose(o, ro, rt, at, "o");

        // backward against finite differences of the reference, on a few coordinates of each input
        using var go = Rand([bsz, h, l, d], 36, dt);
        using var gq = Tensor.Empty(q.Shape, dt); using var gk = Tensor.Empty(k.Shape, dt); using var gv = Tensor.Empty(v.Shape, dt);
        Cpu.AttentionBackward(q, k, v, probs, scale, p, seed, offset, go, gq, gk, gv);
        var arrs = new[] { q.ToArray<double>(), k.ToArray<double>(), v.ToArray<double>() };
        var g = go.ToArray<double>();
        var got = new[] { gq.ToArray<double>(), gk.ToArray<double>(), gv.ToArray<double>() };
        var (grt, gat) = dt == DType.Float32 ? (1e-4, 1e-5) : (1e-7, 1e-9);
        for (int a = 0; a < 3; a++)
            foreach (int i in new[] { 0, 18, 19, arrs[a].Length / 2, arrs[a].Length - 1 })
            {
                double orig = arrs[a][i], lp = 0, lm = 0;
                arrs[a][i] = orig + 1e-6;
                var op = AttentionRef(arrs[0], arrs[1], arrs[2], null, bsz, h, l, s, d, scale, p, seed, offset).o;
                arrs[a][i] = orig - 1e-6;
                var om = AttentionRef(arrs[0], arrs[1], arrs[2], null, bsz, h, l, s, d, scale, p, seed, offset).o;
                arrs[a][i] = orig;
                for (int j = 0; j < g.Length; j++) { lp += op[j] * g[j]; lm += om[j] * g[j]; }
                OpCheck.AssertClose([got[a][i]], [(lp - lm) / 2e-6], grt, gat, $"grad {"qkv"[a]}[{i}]");
            }
    }

    [Test]
    public void AttentionBackwardMatchesFiniteDifferencesOfTheReference([Values(DType.Float32, DType.Float64)] DType dt, [Values(0.0, 0.4)] double p)
    {
        const int bsz = 1, h = 2, l = 3, s = 5, d = 3; const double scale = 0.7; const ulong seed = 5, offset = 2;
        using var q = Rand([bsz, h, l, d], 23, dt); using var k = Rand([bsz, h, s, d], 24, dt); using var v = Rand([bsz, h, s, d], 25, dt);
        using var go = Rand([bsz, h, l, d], 26, dt);
        double[] km = [0, 0, 0, 0, -10000];
        using var km64 = Tensor.FromArray(km, bsz, 1, 1, s);
        using var kmT = km64.To(dt);
        using var mask = kmT.AsStrided([bsz, h, l, s], [s, 0, 0, 1], 0);
        using var o = Tensor.Empty([bsz, h, l, d], dt); using var probs = Tensor.Empty([bsz, h, l, s], dt);
        Cpu.AttentionForward(q, k, v, mask, scale, p, seed, offset, o, probs);
        using var gq = Tensor.Empty(q.Shape, dt); using var gk = Tensor.Empty(k.Shape, dt); using var gv = Tensor.Empty(v.Shape, dt);
        Cpu.AttentionBackward(q, k, v, probs, scale, p, seed, offset, go, gq, gk, gv);

        var arrs = new[] { q.ToArray<double>(), k.ToArray<double>(), v.ToArray<double>() };
        var g = go.ToArray<double>();
        double Loss()
        {
            var (ro, _) = AttentionRef(arrs[0], arrs[1], arrs[2], km, bsz, h, l, s, d, scale, p, seed, offset);
            double sum = 0;
            for (int i = 0; i < ro.Length; i++) sum += ro[i] * g[i];
            return sum;
        }
        var got = new[] { gq, gk, gv };
        var (rt, at) = dt == DType.Float32 ? (1e-4, 1e-5) : (1e-7, 1e-9);
        for (int a = 0; a < 3; a++)
        {
            var num = new double[arrs[a].Length];
            for (int i = 0; i < num.Length; i++)
            {
                double orig = arrs[a][i];
                arrs[a][i] = orig + 1e-6; double lp = Loss();
                arrs[a][i] = orig - 1e-6; double lm = Loss();
                arrs[a][i] = orig;
                num[i] = (lp - lm) / 2e-6;
            }
            OpCheck.AssertClose(got[a], num, rt, at, $"grad {"qkv"[a]}");
        }
    }

    [Test]
    public void AttentionDoesNotDependOnThreadCount()
    {
        using var q = Rand([2, 4, 33, 16], 27, DType.Float32); using var k = Rand([2, 4, 37, 16], 28, DType.Float32); using var v = Rand([2, 4, 37, 16], 29, DType.Float32);
        int saved = Parallelism.MaxThreads;
        try
        {
            var outs = new List<float[]>();
            foreach (var threads in new[] { 1, 2 })
            {
                Parallelism.MaxThreads = threads;
                using var o = Tensor.Empty([2, 4, 33, 16]); using var pr = Tensor.Empty([2, 4, 33, 37]);
                Cpu.AttentionForward(q, k, v, null, 0.25, 0.1, 1, 0, o, pr);
                outs.Add(o.ToArray<float>());
            }
            Assert.That(outs[1], Is.EqualTo(outs[0]));
        }
        finally { Parallelism.MaxThreads = saved; }
    }

    [Test]
    public void AttentionRejectsMismatchedShapes()
    {
        using var q = Tensor.Zeros([1, 2, 3, 4]); using var k = Tensor.Zeros([1, 2, 5, 3]); using var v = Tensor.Zeros([1, 2, 5, 3]);
        using var o = Tensor.Empty([1, 2, 3, 4]); using var pr = Tensor.Empty([1, 2, 3, 5]);
        var ex = Assert.Throws<ArgumentException>(() => Cpu.AttentionForward(q, k, v, null, 1, 0, 0, 0, o, pr))!;
        Assert.That(ex.Message, Does.Contain("attention").And.Contain("[1, 2, 3, 4]").And.Contain("[1, 2, 5, 3]"));
    }

    // ------------------------------------------------------------------ VQ lookup

    [Test]
    public void VqLookupMatchesBruteForce([Values(DType.Float32, DType.Float64)] DType dt, [Values(13, 300)] int n)
    {
        const int kk = 17, d = 8;
        using var z = Rand([n, d], 30, dt); using var e = Rand([kk, d], 31, dt);
        using var ids = Tensor.Empty([n], DType.Int64);
        Cpu.VqLookup(z, e, ids);
        var za = z.ToArray<double>(); var ea = e.ToArray<double>();
        var want = new long[n];
        for (int i = 0; i < n; i++)
        {
            double best = double.PositiveInfinity;
            for (int j = 0; j < kk; j++)
            {
                double dist = 0;
                for (int c = 0; c < d; c++) dist += (za[i * d + c] - ea[j * d + c]) * (za[i * d + c] - ea[j * d + c]);
                if (dist < best) { best = dist; want[i] = j; }
            }
        }
        Assert.That(ids.ToArray<long>(), Is.EqualTo(want));
    }

    [Test]
    public void VqLookupTakesTheFirstMinimumOnTies([Values(DType.Float32, DType.Float64)] DType dt)
    {
        // codes 1 and 3 are identical; z0 sits on them; z1 = origin is equidistant from codes 0, 2 (unit vectors) and 4.
        double[] cb = [1, 0, 3, 3, 0, 1, 3, 3, 0, -1];
        double[] zz = [3, 3, 0, 0];
        using var e64 = Tensor.FromArray(cb, 5, 2); using var e = e64.To(dt);
        using var z64 = Tensor.FromArray(zz, 2, 2); using var z = z64.To(dt);
        using var ids = Tensor.Empty([2], DType.Int64);
        Cpu.VqLookup(z, e, ids);
        Assert.That(ids.ToArray<long>(), Is.EqualTo(new long[] { 1, 0 }));
    }

    // ------------------------------------------------------------------ top-k and sort

    [Test]
    public void TopKTiesKeepTheLowerIndexFirst()
    {
        using var x = Tensor.FromArray(new double[] { 1, 3, 3, 2, 3, 1 }, 1, 6);
        using var v = Tensor.Empty([1, 3], DType.Float64); using var i = Tensor.Empty([1, 3], DType.Int64);
        Cpu.TopK(x, 3, true, v, i);
        Assert.That(v.ToArray<double>(), Is.EqualTo(new double[] { 3, 3, 3 }));
        Assert.That(i.ToArray<long>(), Is.EqualTo(new long[] { 1, 2, 4 }));
        Cpu.TopK(x, 3, false, v, i);
        Assert.That(v.ToArray<double>(), Is.EqualTo(new double[] { 1, 1, 2 }));
        Assert.That(i.ToArray<long>(), Is.EqualTo(new long[] { 0, 5, 3 }));
    }

    [Test]
    public void TopKAndSortMatchAStableReference([Values(DType.Float32, DType.Float64)] DType dt, [Values(true, false)] bool descending)
    {
        const int rows = 4, c = 9, k = 4;
        // few distinct values so there are many ties
        using var r = Rand([rows, c], 32, DType.Float64, 0, 4);
        var xa = r.ToArray<double>().Select(Math.Floor).ToArray();
        using var x64 = Tensor.FromArray(xa, rows, c); using var x = x64.To(dt);
        using var sv = Tensor.Empty([rows, c], dt); using var si = Tensor.Empty([rows, c], DType.Int64);
        Cpu.Sort(x, descending, sv, si);
        using var tv = Tensor.Empty([rows, k], dt); using var ti = Tensor.Empty([rows, k], DType.Int64);
        Cpu.TopK(x, k, descending, tv, ti);
        var wantI = new List<long>(); var wantV = new List<double>(); var wantTi = new List<long>();
        for (int row = 0; row < rows; row++)
        {
            var idx = Enumerable.Range(0, c);
            // LINQ OrderBy is stable
            var ord = (descending ? idx.OrderByDescending(j => xa[row * c + j]) : idx.OrderBy(j => xa[row * c + j])).ToArray();
            wantI.AddRange(ord.Select(j => (long)j)); wantV.AddRange(ord.Select(j => xa[row * c + j]));
            wantTi.AddRange(ord.Take(k).Select(j => (long)j));
        }
        Assert.That(si.ToArray<long>(), Is.EqualTo(wantI.ToArray()));
        Assert.That(sv.ToArray<double>(), Is.EqualTo(wantV.ToArray()));
        Assert.That(ti.ToArray<long>(), Is.EqualTo(wantTi.ToArray()));
    }

    [Test]
    public void SortPutsNaNLast()
    {
        using var x = Tensor.FromArray(new double[] { 2, double.NaN, -1, 5 }, 4);
        using var v = Tensor.Empty([4], DType.Float64); using var i = Tensor.Empty([4], DType.Int64);
        Cpu.Sort(x, false, v, i);
        Assert.That(i.ToArray<long>(), Is.EqualTo(new long[] { 2, 0, 3, 1 }));
        Cpu.Sort(x, true, v, i);
        Assert.That(i.ToArray<long>(), Is.EqualTo(new long[] { 1, 3, 0, 2 }));
    }

    [Test]
    public void TopKRejectsTooLargeK()
    {
        using var x = Tensor.Zeros([2, 3]);
        using var v = Tensor.Empty([2, 4]); using var i = Tensor.Empty([2, 4], DType.Int64);
        var ex = Assert.Throws<ArgumentException>(() => Cpu.TopK(x, 4, true, v, i))!;
        Assert.That(ex.Message, Does.Contain("topk").And.Contain("4").And.Contain("[2, 3]"));
    }

    // ------------------------------------------------------------------ optimisers

    [Test]
    public void AdamWThreeStepsMatchTransformers3Formula([Values(DType.Float32, DType.Float64)] DType dt, [Values(true, false)] bool correctBias)
    {
        const int n = 11;
        const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
        using var p0 = Rand([n], 40, DType.Float64);
        var rp = p0.ToArray<double>(); var rm = new double[n]; var rv = new double[n];
        using var param = p0.To(dt);
        using var m = Tensor.Zeros([n], dt); using var v = Tensor.Zeros([n], dt);
        for (int step = 1; step <= 3; step++)
        {
            using var g64 = Rand([n], 41 + (ulong)step, DType.Float64, -2, 2);
            using var g = g64.To(dt);
            Cpu.AdamWStep(param, g, m, v, new AdamWParams(lr, b1, b2, eps, wd, step, correctBias));
            // float64 reference, written out as in transformers 3.x AdamW.step
            var ga = g.ToArray<double>();
            double stepSize = correctBias ? lr * Math.Sqrt(1 - Math.Pow(b2, step)) / (1 - Math.Pow(b1, step)) : lr;
            for (int i = 0; i < n; i++)
            {
                rm[i] = b1 * rm[i] + (1 - b1) * ga[i];
                rv[i] = b2 * rv[i] + (1 - b2) * ga[i] * ga[i];
                rp[i] -= stepSize * rm[i] / (Math.Sqrt(rv[i]) + eps);
                rp[i] -= lr * wd * rp[i]; // decoupled decay, after the Adam update
            }
        }
        var (rt, at) = dt == DType.Float32 ? (1e-5, 1e-6) : (1e-12, 1e-14);
        OpCheck.AssertClose(param, rp, rt, at, "param");
        OpCheck.AssertClose(m, rm, rt, at, "exp_avg");
        OpCheck.AssertClose(v, rv, rt, at, "exp_avg_sq");
    }

    [Test]
    public void AdamWRejectsMismatchedState()
    {
        using var p = Tensor.Zeros([3]); using var g = Tensor.Zeros([4]); using var m = Tensor.Zeros([3]); using var v = Tensor.Zeros([3]);
        var ex = Assert.Throws<ArgumentException>(() => Cpu.AdamWStep(p, g, m, v, new AdamWParams(1e-3, 0.9, 0.999, 1e-8, 0, 1)))!;
        Assert.That(ex.Message, Does.Contain("adamw").And.Contain("[4]").And.Contain("[3]"));
    }

    [TestCase(0.0, 0.0, 0.0, false)]
    [TestCase(0.9, 0.0, 1e-2, false)]
    [TestCase(0.9, 0.3, 1e-2, false)]
    [TestCase(0.9, 0.0, 1e-2, true)]
    public void SgdThreeStepsMatchPyTorchFormula(double momentum, double dampening, double wd, bool nesterov)
    {
        foreach (var dt in Floats)
        {
            const int n = 7; const double lr = 0.1;
            using var p0 = Rand([n], 50, DType.Float64);
            var rp = p0.ToArray<double>(); var rb = new double[n];
            using var param = p0.To(dt);
            using var buf = Tensor.Zeros([n], dt);
            for (int step = 1; step <= 3; step++)
            {
                using var g64 = Rand([n], 51 + (ulong)step, DType.Float64, -2, 2);
                using var g = g64.To(dt);
                Cpu.SgdStep(param, g, momentum != 0 ? buf : null, new SgdParams(lr, momentum, dampening, wd, nesterov), step == 1);
                var ga = g.ToArray<double>();
                for (int i = 0; i < n; i++)
                {
                    double d = ga[i] + wd * rp[i];
                    if (momentum != 0)
                    {
                        rb[i] = step == 1 ? d : momentum * rb[i] + (1 - dampening) * d;
                        d = nesterov ? d + momentum * rb[i] : rb[i];
                    }
                    rp[i] -= lr * d;
                }
            }
            var (rt, at) = dt == DType.Float32 ? (1e-5, 1e-6) : (1e-12, 1e-14);
            OpCheck.AssertClose(param, rp, rt, at, $"param {dt}");
            if (momentum != 0) OpCheck.AssertClose(buf, rb, rt, at, $"momentum buffer {dt}");
        }
    }

    [Test]
    public void SgdNeedsABufferForMomentum()
    {
        using var p = Tensor.Zeros([3]); using var g = Tensor.Zeros([3]);
        var ex = Assert.Throws<ArgumentException>(() => Cpu.SgdStep(p, g, null, new SgdParams(0.1, 0.9, 0, 0, false), true))!;
        Assert.That(ex.Message, Does.Contain("sgd").And.Contain("[3]"));
    }
}
