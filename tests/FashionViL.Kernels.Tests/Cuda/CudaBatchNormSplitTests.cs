using FashionViL.Kernels.Cuda;
using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The CUDA backend's batch norm cuts few, long channels into slices (<see cref="NormKernels.BatchNormSplitFor"/>): it takes the
/// float64 partial-sum workspace from the caching allocator and passes it to the launchers, which then run two launches per
/// direction (one for the eval forward) instead of one. The emulator's 2 multiprocessors and small shapes never split by the
/// rule, so the slices are forced with <see cref="NormKernels.BatchNormSplitOverride"/>.
/// </summary>
[NonParallelizable]
public class CudaBatchNormSplitTests : CudaTestBase
{
    private const double Rt = 1e-4, At = 1e-5;

    [TearDown]
    public void ClearOverride() => NormKernels.BatchNormSplitOverride = null;

    [TestCase(true, 0)]
    [TestCase(true, 4)]
    [TestCase(false, 4)]
    public void BackendSplitsTheFusedBatchNormAndMatchesCpu(bool training, int split)
    {
        using var scope = Tensor.Scope();
        int[] shape = [3, 2, 5, 7];   // 105 values per channel in 4 slices of 27 (last 24): boundaries inside samples of 35
        int c = 2;
        var x = Rand(shape, 31, lo: 3, hi: 5); var w = Rand([c], 32, lo: 0.5, hi: 1.5); var b = Rand([c], 33);
        var rm = Rand([c], 34, lo: 3.5, hi: 4.5); var rv = Rand([c], 35, lo: 0.5, hi: 2);
        var res = Rand(shape, 36, lo: -5, hi: 2); var gy = Rand(shape, 37);
        var dx = Up(x); var dw = Up(w); var db = Up(b); var drm = Up(rm); var drv = Up(rv); var dres = Up(res); var dgy = Up(gy);

        var y = Tensor.Empty(shape); var sm = Tensor.Empty([c]); var sis = Tensor.Empty([c]);
        Cpu.BatchNormForward(x, w, b, rm, rv, training, 0.1, 1e-5, y, sm, sis, res, relu: true);
        var gx = Tensor.Empty(shape); var gw = Tensor.Empty([c]); var gb = Tensor.Empty([c]); var gr = Tensor.Empty(shape);
        Cpu.BatchNormBackward(x, gy, w, sm, sis, training, gx, gw, gb, y, gr);

        NormKernels.BatchNormSplitOverride = split == 0 ? 1 : split;
        var dy = Tensor.Full(shape, double.NaN, DType.Float32, Gpu);
        var dsm = Tensor.Full([c], double.NaN, DType.Float32, Gpu); var dsis = Tensor.Full([c], double.NaN, DType.Float32, Gpu);
        var dgx = Tensor.Full(shape, double.NaN, DType.Float32, Gpu); var dgr = Tensor.Full(shape, double.NaN, DType.Float32, Gpu);
        var dgw = Tensor.Full([c], double.NaN, DType.Float32, Gpu); var dgb = Tensor.Full([c], double.NaN, DType.Float32, Gpu);
        var rt = Dev.Runtime;
        Dev.Synchronize();
        var c0 = rt.Counters;
        Dev.BatchNormForward(dx, dw, db, drm, drv, training, 0.1, 1e-5, dy, dsm, dsis, dres, relu: true);
        Dev.Synchronize();
        var c1 = rt.Counters;
        Dev.BatchNormBackward(dx, dgy, dw, dsm, dsis, training, dgx, dgw, dgb, dy, dgr);
        Dev.Synchronize();
        var c2 = rt.Counters;
        bool splits = split > 1;
        Assert.That((c1 - c0).KernelLaunches, Is.EqualTo(splits && training ? 2 : 1), "forward launches");
        Assert.That((c2 - c1).KernelLaunches, Is.EqualTo(splits ? 2 : 1), "backward launches");

        string what = $"training={training} split={split}";
        AssertSame(dy, y, Rt, At, "y " + what);
        AssertSame(dsm, sm, Rt, At, "saveMean " + what);
        AssertSame(dsis, sis, Rt, At, "saveInvStd " + what);
        AssertSame(drm, rm, Rt, At, "running mean " + what);
        AssertSame(drv, rv, Rt, At, "running var " + what);
        AssertSame(dgx, gx, Rt, At, "gx " + what);
        AssertSame(dgw, gw, Rt, At, "gw " + what);
        AssertSame(dgb, gb, Rt, At, "gb " + what);
        AssertSame(dgr, gr, Rt, At, "g residual " + what);

        // the workspace comes from the caching allocator: the same calls again reach no driver allocation
        var a0 = rt.Counters;
        Dev.BatchNormForward(dx, dw, db, drm, drv, training, 0.1, 1e-5, dy, dsm, dsis, dres, relu: true);
        Dev.BatchNormBackward(dx, dgy, dw, dsm, dsis, training, dgx, dgw, dgb, dy, dgr);
        Dev.Synchronize();
        Assert.That((rt.Counters - a0).DriverAllocations, Is.Zero, "driver allocations of a repeated split batch norm");
    }

    /// <summary>Autograd end to end on the split path: <c>Ops.BatchNorm2d</c> with a residual and relu, forward and the input,
    /// weight, bias and residual gradients, against the same graph on the CPU backend.</summary>
    [Test]
    public void OpsBatchNormOnTheSplitPathMatchesCpu()
    {
        using var scope = Tensor.Scope();
        int[] shape = [2, 3, 7, 5];   // 70 per channel in 4 slices of 18 (last 16), boundaries inside samples of 35
        var x = Rand(shape, 41); var w = Rand([3], 42, lo: 0.5, hi: 1.5); var b = Rand([3], 43); var r = Rand(shape, 44);
        var cpu = new[] { x, w, b, r };
        var dev = cpu.Select(t => { var d = Up(t); d.RequiresGrad = true; return d; }).ToArray();
        foreach (var t in cpu) t.RequiresGrad = true;
        var up = Rand(shape, 45, lo: 0.5, hi: 1.5);
        var want = Ops.BatchNorm2d(cpu[0], cpu[1], cpu[2], null, null, true, residual: cpu[3], relu: true);
        (want * up).Sum().Backward();
        NormKernels.BatchNormSplitOverride = 4;
        var got = Ops.BatchNorm2d(dev[0], dev[1], dev[2], null, null, true, residual: dev[3], relu: true);
        (got * Up(up)).Sum().Backward();
        AssertSame(got, want, Rt, At, "y");
        string[] names = ["x", "weight", "bias", "residual"];
        for (int i = 0; i < 4; i++) AssertSame(dev[i].Grad!, cpu[i].Grad!, Rt, At, "grad of " + names[i]);
    }
}
