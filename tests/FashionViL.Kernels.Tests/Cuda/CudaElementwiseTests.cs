using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The CUDA elementwise family, reductions and random numbers (on the CPU emulator) against the CPU backend:
/// every op, broadcast views, non-contiguous inputs, float32 and float64.
/// </summary>
[Category("Cuda")]
public class CudaElementwiseTests : CudaTestBase
{
    private static (double Rtol, double Atol) Tol(DType dt) => dt == DType.Float32 ? (2e-5, 2e-6) : (1e-12, 1e-14);

    private static readonly UnaryOp[] FloatUnary = Enum.GetValues<UnaryOp>().Where(o => o != UnaryOp.LogicalNot).ToArray();

    private static (double Lo, double Hi) Domain(UnaryOp op) => op switch
    {
        UnaryOp.Log or UnaryOp.Sqrt or UnaryOp.Rsqrt or UnaryOp.PowScalar or UnaryOp.Reciprocal => (0.1, 3),
        _ => (-3, 3),
    };

    private static (double P0, double P1) Params(UnaryOp op) => op switch
    {
        UnaryOp.PowScalar => (2.5, 0),
        UnaryOp.Clamp => (-0.5, 1.25),
        UnaryOp.AddScalar => (0.75, 0),
        UnaryOp.MulScalar => (-1.5, 0),
        _ => (0, 0),
    };

    [Test]
    public void EveryUnaryOpMatchesCpuOnStridedInputs([Values(DType.Float32, DType.Float64)] DType dt)
    {
        var (rtol, atol) = Tol(dt);
        foreach (var op in FloatUnary)
        {
            var (lo, hi) = Domain(op);
            var (p0, p1) = Params(op);
            using var h = Rand([3, 1, 5, 4], 100 + (ulong)op, dt, lo, hi);
            using var hs = Strided(h);
            using var want = Tensor.Empty(h.Shape, dt);
            Cpu.Unary(op, hs, want, p0, p1);
            using var d = Up(h);
            using var ds = Strided(d);
            using var got = Tensor.Empty(h.Shape, dt, Gpu);
            Dev.Unary(op, ds, got, p0, p1);
            AssertSame(got, want, rtol, atol, $"{op} {dt}");
        }
    }

    [Test]
    public void EveryUnaryGradientMatchesCpu([Values(DType.Float32, DType.Float64)] DType dt)
    {
        var (rtol, atol) = Tol(dt);
        foreach (var op in FloatUnary)
        {
            var (lo, hi) = Domain(op);
            var (p0, p1) = Params(op);
            using var x = Rand([7, 3], 200 + (ulong)op, dt, lo, hi);
            using var gy = Rand([7, 3], 300 + (ulong)op, dt);
            using var y = Tensor.Empty(x.Shape, dt);
            Cpu.Unary(op, x, y, p0, p1);
            using var want = Tensor.Empty(x.Shape, dt);
            Cpu.UnaryBackward(op, x, y, gy, want, p0, p1);
            using var dx = Up(x); using var dy = Up(y); using var dgy = Up(gy);
            using var got = Tensor.Empty(x.Shape, dt, Gpu);
            Dev.UnaryBackward(op, dx, dy, dgy, got, p0, p1);
            AssertSame(got, want, rtol, atol, $"{op} backward {dt}");
        }
    }

    [Test]
    public void SpecialValuesFollowTheCpu()
    {
        using var h = Tensor.FromArray([float.NaN, float.PositiveInfinity, float.NegativeInfinity, 0f, -0f, 1e-30f, -1e30f], [7]);
        using var d = Up(h);
        foreach (var op in new[] { UnaryOp.Relu, UnaryOp.Sign, UnaryOp.Clamp, UnaryOp.Abs, UnaryOp.Sigmoid, UnaryOp.Tanh, UnaryOp.Exp })
        {
            using var want = Tensor.Empty([7]); Cpu.Unary(op, h, want, -1, 1);
            using var got = Tensor.Empty([7], DType.Float32, Gpu); Dev.Unary(op, d, got, -1, 1);
            // The CPU's vectorised tanh/exp are within a few float32 ulps (tanh(0) gives -6e-8 there).
            AssertSame(got, want, 1e-6, 1e-7, op.ToString());
        }
    }

    private static readonly BinaryOp[] AllBinary = Enum.GetValues<BinaryOp>();

    /// <summary>a [3,1,5] and b [4,1] broadcast to [3,4,5] by zero strides; a also permuted.</summary>
    private static (Tensor A, Tensor B) Broadcast(Tensor a, Tensor b) => (a.AsStrided([3, 4, 5], [a.Strides[0], 0, a.Strides[2]], a.Offset), b.AsStrided([3, 4, 5], [0, b.Strides[0], 0], b.Offset));

    [Test]
    public void EveryBinaryOpMatchesCpuWithBroadcasting([Values(DType.Float32, DType.Float64, DType.Int32, DType.Int64, DType.UInt8, DType.Bool)] DType dt)
    {
        bool isFloat = dt.IsFloating();
        using var ha0 = Rand([3, 1, 5], 7, DType.Float64, isFloat ? 0.2 : 0, isFloat ? 3 : 9);
        using var hb0 = Rand([4, 1], 8, DType.Float64, isFloat ? -2 : 1, isFloat ? 2 : 9);
        using var ha1 = isFloat ? ha0.To(dt) : Floor(ha0).To(dt);
        using var hb1 = isFloat ? hb0.To(dt) : Floor(hb0).To(dt);
        using var ha = Strided(ha1);
        using var da1 = Up(ha1); using var db1 = Up(hb1);
        using var da = Strided(da1);
        var (rtol, atol) = isFloat ? Tol(dt) : (0, 0);
        foreach (var op in AllBinary)
        {
            if (op == BinaryOp.Pow && !isFloat) continue;
            var outT = op >= BinaryOp.Eq ? DType.Bool : dt;
            var (xa, xb) = Broadcast(ha, hb1);
            using var _a = xa; using var _b = xb;
            using var want = Tensor.Empty([3, 4, 5], outT);
            Cpu.Binary(op, xa, xb, want);
            var (ya, yb) = Broadcast(da, db1);
            using var _c = ya; using var _d = yb;
            using var got = Tensor.Empty([3, 4, 5], outT, Gpu);
            Dev.Binary(op, ya, yb, got);
            AssertSame(got, want, rtol, atol, $"{op} {dt}");
        }
    }

    private static Tensor Floor(Tensor t)
    {
        var y = Tensor.Empty(t.Shape, t.DType);
        Backends.Get(Device.Cpu).Unary(UnaryOp.Floor, t, y);
        return y;
    }

    [Test]
    public void NaNPropagatesThroughMaximumAndMinimumLikeTheCpu()
    {
        using var a = Tensor.FromArray([float.NaN, 1f, 2f, float.NaN], [4]);
        using var b = Tensor.FromArray([0f, float.NaN, 3f, float.NaN], [4]);
        using var da = Up(a); using var db = Up(b);
        foreach (var op in new[] { BinaryOp.Maximum, BinaryOp.Minimum, BinaryOp.Eq, BinaryOp.Ne, BinaryOp.Lt })
        {
            var outT = op >= BinaryOp.Eq ? DType.Bool : DType.Float32;
            using var want = Tensor.Empty([4], outT); Cpu.Binary(op, a, b, want);
            using var got = Tensor.Empty([4], outT, Gpu); Dev.Binary(op, da, db, got);
            AssertSame(got, want, 0, 0, op.ToString());
        }
    }

    [Test]
    public void IntegerDivisionByZeroDoesNotCrash()
    {
        using var a = Tensor.FromArray([7, -7, 0], [3]).To(Gpu);
        using var b = Tensor.Zeros([3], DType.Int32, Gpu);
        using var y = Tensor.Empty([3], DType.Int32, Gpu);
        Dev.Binary(BinaryOp.Div, a, b, y);
        Assert.That(y.ToArray<int>(), Is.EqualTo(new[] { 0, 0, 0 }));
    }

    [Test]
    public void WhereAndLogicalNotMatchCpu([Values(DType.Float32, DType.Int64, DType.Bool)] DType dt)
    {
        using var hc0 = Rand([3, 1, 5], 21, DType.Float64);
        using var zero = Tensor.Zeros([3, 1, 5], DType.Float64);
        using var hc = Tensor.Empty([3, 1, 5], DType.Bool);
        Cpu.Binary(BinaryOp.Gt, hc0, zero, hc);
        using var ha = Rand([4, 1], 22, DType.Float64, -5, 5).To(dt);
        using var hb = Rand([3, 4, 5], 23, DType.Float64, -5, 5).To(dt);
        using var hbs = Strided(hb);
        using var cv = hc.AsStrided([3, 4, 5], [5, 0, 1], 0);
        using var av = ha.AsStrided([3, 4, 5], [0, 1, 0], 0);
        using var want = Tensor.Empty([3, 4, 5], dt);
        Cpu.Where(cv, av, hbs, want);
        using var dc = Up(hc); using var da = Up(ha); using var db = Up(hb); using var dbs = Strided(db);
        using var dcv = dc.AsStrided([3, 4, 5], [5, 0, 1], 0);
        using var dav = da.AsStrided([3, 4, 5], [0, 1, 0], 0);
        using var got = Tensor.Empty([3, 4, 5], dt, Gpu);
        Dev.Where(dcv, dav, dbs, got);
        AssertSame(got, want, 0, 0, $"where {dt}");

        using var notWant = Tensor.Empty([3, 4, 5], DType.Bool); Cpu.Unary(UnaryOp.LogicalNot, cv, notWant);
        using var notGot = Tensor.Empty([3, 4, 5], DType.Bool, Gpu); Dev.Unary(UnaryOp.LogicalNot, dcv, notGot);
        AssertSame(notGot, notWant, 0, 0, "logical_not");
    }

    // ------------------------------------------------------------------ reductions

    private static readonly int[][] DimSets = [[0], [1], [2], [3], [0, 2], [1, 3], [0, 1, 2, 3], [0, 1], [2, 3]];

    [Test]
    public void ReductionsMatchCpuOverAnyDims([Values(DType.Float32, DType.Float64)] DType dt, [Values] bool strided)
    {
        // Contiguous inputs take the thread-per-output kernel for outer dims; permuted ones the group kernel.
        using var h = Rand([3, 5, 1, 37], 31, dt);
        using var hs = strided ? Strided(h) : h.Alias();
        using var d = Up(h);
        using var ds = strided ? Strided(d) : d.Alias();
        var (rtol, atol) = dt == DType.Float32 ? (1e-5, 1e-6) : (1e-11, 1e-13);
        foreach (var op in Enum.GetValues<ReduceOp>())
            foreach (var dims in DimSets)
            {
                var ys = h.Shape; foreach (var k in dims) ys[k] = 1;
                foreach (var p0 in op == ReduceOp.Var ? new[] { 1.0, 0.0 } : [0.0])
                {
                    using var want = Tensor.Empty(ys, dt); Cpu.Reduce(op, hs, dims, want, null, p0);
                    using var got = Tensor.Empty(ys, dt, Gpu); Dev.Reduce(op, ds, dims, got, null, p0);
                    AssertSame(got, want, rtol, atol, $"{op} over [{string.Join(",", dims)}] {dt} p0={p0}");
                }
            }
    }

    [Test]
    public void ArgMaxAndArgMinGiveTheFirstExtremumAndNaN()
    {
        // Ties (repeated values) and a NaN row.
        var v = new float[] { 1, 3, 3, 0, 3, /**/ -1, -4, -4, 2, -4, /**/ 5, float.NaN, 7, float.NaN, 0 };
        using var h = Tensor.FromArray(v, [3, 5]);
        using var d = Up(h);
        foreach (var op in new[] { ReduceOp.Max, ReduceOp.Min })
            foreach (int dim in new[] { 0, 1 })
            {
                var ys = h.Shape; ys[dim] = 1;
                using var wv = Tensor.Empty(ys); using var wi = Tensor.Empty(ys, DType.Int64);
                Cpu.Reduce(op, h, [dim], wv, wi);
                using var gv = Tensor.Empty(ys, DType.Float32, Gpu); using var gi = Tensor.Empty(ys, DType.Int64, Gpu);
                Dev.Reduce(op, d, [dim], gv, gi);
                AssertSame(gv, wv, 0, 0, $"{op} dim {dim} values");
                Assert.That(gi.ToArray<long>(), Is.EqualTo(wi.ToArray<long>()), $"{op} dim {dim} indices");
            }
    }

    [Test]
    public void LongAndColumnReductionsMatchCpu()
    {
        // [2, 3001] over dim 1: a group per row; [301, 40] over dim 0: a thread per column.
        using var h = Rand([2, 3001], 41, DType.Float32);
        using var d = Up(h);
        using var hc = Rand([301, 40], 42, DType.Float32);
        using var dc = Up(hc);
        foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Var, ReduceOp.Max, ReduceOp.Min })
        {
            using var want = Tensor.Empty([2, 1]); Cpu.Reduce(op, h, [1], want, null, 1);
            using var got = Tensor.Empty([2, 1], DType.Float32, Gpu); Dev.Reduce(op, d, [1], got, null, 1);
            AssertSame(got, want, 1e-5, 1e-5, op.ToString());
            using var wantC = Tensor.Empty([1, 40]); Cpu.Reduce(op, hc, [0], wantC, null, 1);
            using var gotC = Tensor.Empty([1, 40], DType.Float32, Gpu); Dev.Reduce(op, dc, [0], gotC, null, 1);
            AssertSame(gotC, wantC, 1e-5, 1e-5, op + " columns");
        }
    }

    [TestCase(2)]
    [TestCase(5)]
    [TestCase(37)]
    public void SplitColumnReductionsMatchCpu(int split)
    {
        // A bias gradient's shape: Σ over rows of [rows, cols]. Forced split (the emulator is too small to choose one):
        // partial sums per (column, chunk of rows), then the in-order finish; two launches instead of one.
        CudaBackend.ColumnSplitOverride = split;
        try
        {
            var rt = Dev.Runtime;
            using var h = Rand([301, 40], 43, DType.Float32);
            using var d = Up(h);
            // a view whose two reduced dims do not merge (rows 0..5 of 7 per block): the general index path
            using var hb = Rand([5, 7, 40], 44, DType.Float32);
            using var hv = hb.AsStrided([5, 6, 40], [280, 40, 1], 0);
            using var dbase = Up(hb);
            using var dv = dbase.AsStrided([5, 6, 40], [280, 40, 1], 0);
            // float64 references: the device sums in float64, so its result is the float nearest the exact sum (1 ulp allowed)
            double[] Columns(Tensor t, int rows, bool mean)
            {
                var a = t.ToArray<double>();
                var r = new double[40];
                for (int i = 0; i < rows; i++) for (int j = 0; j < 40; j++) r[j] += a[i * 40 + j];
                return mean ? r.Select(v => v / rows).ToArray() : r;
            }
            foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Mean })
            {
                bool mean = op == ReduceOp.Mean;
                using var got = Tensor.Empty([1, 40], DType.Float32, Gpu);
                var c0 = rt.Counters;
                Dev.Reduce(op, d, [0], got);
                Assert.That((rt.Counters - c0).KernelLaunches, Is.EqualTo(2), $"{op}: partials and finish");
                var want = Columns(h, 301, mean);
                OpCheck.AssertClose(got.ToArray<double>(), want, Math.Pow(2, -23), 1e-12, $"{op} columns split {split}");
                using var got2 = Tensor.Empty([1, 1, 40], DType.Float32, Gpu); Dev.Reduce(op, dv, [0, 1], got2);
                using var hvc = hv.ContiguousRaw();
                OpCheck.AssertClose(got2.ToArray<double>(), Columns(hvc, 30, mean), Math.Pow(2, -23), 1e-12, $"{op} strided view split {split}");
            }
        }
        finally { CudaBackend.ColumnSplitOverride = null; }
    }

    [Test]
    public void ColumnSplitRule()
    {
        const int h100 = 132 * 2048;   // threads an H100 holds at once
        Assert.That(CudaBackend.ColumnSplit(768, 4800, h100), Is.EqualTo(69), "BERT bias gradient at ITC batch 64: ≈ √4800 chunks");
        Assert.That(CudaBackend.ColumnSplit(3072, 7936, h100), Is.EqualTo(88), "FFN bias gradient at MLM batch 64: √7936 ≈ 89, capped by the device (88 × 3072 threads)");
        Assert.That(CudaBackend.ColumnSplit(768, 63, h100), Is.EqualTo(1), "short sums stay per thread");
        Assert.That(CudaBackend.ColumnSplit(70000, 4800, h100), Is.EqualTo(1), "outputs that fill a quarter of the device stay per thread");
        Assert.That(CudaBackend.ColumnSplit(30000, 100000, h100), Is.EqualTo(9), "capped by the threads the device holds");
        Assert.That(CudaBackend.ColumnSplit(40, 100, h100), Is.EqualTo(6), "at least 16 elements per chunk");
    }

    [TestCase(null)]
    [TestCase(3)]
    [TestCase(7)]
    public void SplitReductionsOverFewOutputsMatchCpu(int? split)
    {
        // Few outputs, long reductions: the two-stage split kernel (split forced, the emulator has 2 groups).
        CudaBackend.SplitOverride = split;
        try
        {
            var v = new float[2 * 1001];
            using var h0 = Rand([2, 1001], 71);
            h0.ToArray<float>().CopyTo(v, 0);
            v[1500] = float.NaN;          // row 1: the NaN wins max/min at its index
            v[17] = v[900] = 5f;          // row 0: tie, the first index wins
            using var h = Tensor.FromArray(v, [2, 1001]);
            using var d = Up(h);
            foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Mean, ReduceOp.Max, ReduceOp.Min })
            {
                using var want = Tensor.Empty([2, 1]); using var wi = Tensor.Empty([2, 1], DType.Int64);
                using var got = Tensor.Empty([2, 1], DType.Float32, Gpu); using var gi = Tensor.Empty([2, 1], DType.Int64, Gpu);
                bool idx = op is ReduceOp.Max or ReduceOp.Min;
                Cpu.Reduce(op, h, [1], want, idx ? wi : null);
                Dev.Reduce(op, d, [1], got, idx ? gi : null);
                AssertSame(got, want, 1e-5, 1e-5, $"{op} split={split}");
                if (idx) Assert.That(gi.ToArray<long>(), Is.EqualTo(wi.ToArray<long>()), $"{op} indices split={split}");
            }
            // Full reduction to one value.
            using var all = Tensor.Empty([1, 1]); Cpu.Reduce(ReduceOp.Sum, h0, [0, 1], all);
            using var allG = Tensor.Empty([1, 1], DType.Float32, Gpu); using var d0 = Up(h0); Dev.Reduce(ReduceOp.Sum, d0, [0, 1], allG);
            AssertSame(allG, all, 1e-5, 1e-5, "sum of all");
        }
        finally { CudaBackend.SplitOverride = null; }
    }

    // ------------------------------------------------------------------ random

    [Test]
    public void PhiloxInsideTheKernelIsBitEqualToTheHost()
    {
        // Uniform float64 on [0, 1) exposes the 24-bit words exactly: value i = (word_i >> 8) / 2^24.
        const int n = 37; const ulong seed = 0x1234_5678_9ABC_DEF0UL, offset = 3;
        using var d = Tensor.Empty([n], DType.Float64, Gpu);
        Dev.Random(RandomKind.Uniform, d, seed, offset, 0, 1);
        var got = d.ToArray<double>();
        for (int i = 0; i < n; i++)
        {
            Philox.Block(seed, offset + (ulong)(i / 4), out var r0, out var r1, out var r2, out var r3);
            uint w = (i % 4) switch { 0 => r0, 1 => r1, 2 => r2, _ => r3 };
            Assert.That(got[i], Is.EqualTo((w >> 8) / 16777216.0), $"element {i}");
        }
    }

    [TestCase(RandomKind.Uniform, DType.Float32, -2.0, 3.0)]
    [TestCase(RandomKind.Uniform, DType.Float64, 0.5, 0.75)]
    [TestCase(RandomKind.Normal, DType.Float32, 1.0, 2.0)]
    [TestCase(RandomKind.Normal, DType.Float64, 0.0, 1.0)]
    [TestCase(RandomKind.Bernoulli, DType.Float32, 0.3, 0.0)]
    [TestCase(RandomKind.Bernoulli, DType.UInt8, 0.7, 0.0)]
    [TestCase(RandomKind.RandInt, DType.Int64, -5.0, 17.0)]
    [TestCase(RandomKind.RandInt, DType.Int32, 0.0, 1000.0)]
    public void RandomDrawsAreTheCpuStream(RandomKind kind, DType dt, double a, double b)
    {
        const ulong seed = 99, offset = 12;
        using var want = Tensor.Empty([5, 9], dt); Cpu.Random(kind, want, seed, offset, a, b);
        using var got = Tensor.Empty([5, 9], dt, Gpu); Dev.Random(kind, got, seed, offset, a, b);
        if (kind == RandomKind.Normal)
            // Box–Muller through log/cos: bit-equal on the emulator, within float64 rounding of the GPU's maths.
            OpCheck.AssertClose(got, want, 1e-12, 1e-12, $"{kind} {dt}");
        else
            AssertBitEqual<double>(got, want, $"{kind} {dt}");
    }

    [Test]
    public void RandPermAndDropoutAreTheCpuStream()
    {
        using var pw = Tensor.Empty([23], DType.Int64); Cpu.RandPerm(pw, 5, 8);
        using var pg = Tensor.Empty([23], DType.Int64, Gpu); Dev.RandPerm(pg, 5, 8);
        AssertBitEqual<long>(pg, pw, "randperm");

        foreach (var dt in new[] { DType.Float32, DType.Float64 })
            foreach (var p in new[] { 0.0, 0.25, 1.0 })
            {
                using var x = Rand([4, 9], 3, dt);
                using var yw = Tensor.Empty([4, 9], dt); using var mw = Tensor.Empty([4, 9], DType.UInt8);
                Cpu.Dropout(x, yw, mw, p, 77, 4);
                using var dx = Up(x); using var dxs = Strided(dx);
                using var yg = Tensor.Empty([4, 9], dt, Gpu); using var mg = Tensor.Empty([4, 9], DType.UInt8, Gpu);
                Dev.Dropout(dxs, yg, mg, p, 77, 4);
                AssertBitEqual<byte>(mg, mw, $"dropout mask p={p} {dt}");
                AssertBitEqual<double>(yg, yw, $"dropout values p={p} {dt}");
            }
    }

    // ------------------------------------------------------------------ autograd through the device

    [Test]
    public void AutogradOpsRunUnchangedOnTheDevice([Values(DType.Float32, DType.Float64)] DType dt)
    {
        using var ha = Rand([3, 4], 51, dt); using var hb = Rand([3, 4], 52, dt); using var hc = Rand([4], 53, dt);
        (double[] Loss, double[] Ga, double[] Gb, double[] Gc) Run(Device dev)
        {
            using var scope = Tensor.Scope();
            var a = ha.To(dev); a.RequiresGrad = true;
            var b = hb.To(dev); b.RequiresGrad = true;
            var c = hc.To(dev); c.RequiresGrad = true;
            var prod = (a * b).Sum();
            var loss = prod + ((a + c).Relu() * b.Exp()).Mean() - (a * c).Sum([1]).Tanh().Sum();
            Assert.That(loss.Device, Is.EqualTo(dev));
            loss.Backward();
            return (loss.ToArray<double>(), a.Grad!.ToArray<double>(), b.Grad!.ToArray<double>(), c.Grad!.ToArray<double>());
        }
        var cpu = Run(Device.Cpu);
        var gpu = Run(Gpu);
        var (rtol, atol) = dt == DType.Float32 ? (1e-5, 1e-6) : (1e-12, 1e-14);
        OpCheck.AssertClose(gpu.Loss, cpu.Loss, rtol, atol, "loss");
        OpCheck.AssertClose(gpu.Ga, cpu.Ga, rtol, atol, "grad a");
        OpCheck.AssertClose(gpu.Gb, cpu.Gb, rtol, atol, "grad b");
        OpCheck.AssertClose(gpu.Gc, cpu.Gc, rtol, atol, "grad c");
    }

    [Test]
    public void SimpleProductSumBackwardEqualsCpu()
    {
        using var ha = Rand([2, 3], 61); using var hb = Rand([2, 3], 62);
        var a = ha.To(Gpu); a.RequiresGrad = true;
        var b = hb.To(Gpu); b.RequiresGrad = true;
        using var s = (a * b).Sum();
        s.Backward();
        Assert.That(a.Grad!.ToArray<float>(), Is.EqualTo(hb.ToArray<float>()));
        Assert.That(b.Grad!.ToArray<float>(), Is.EqualTo(ha.ToArray<float>()));
        a.Dispose(); b.Dispose();
    }
}
