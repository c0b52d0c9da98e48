using FashionViL.Kernels.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>Device runtime: allocator, transfers, copies/fills, error messages (on the CPU emulator).</summary>
[Category("Cuda")]
public class CudaRuntimeTests : CudaTestBase
{
    [Test]
    public void RuntimeIsTheEmulatorAndRegisteredForCuda0()
    {
        var be = Dev;
        Assert.That(be.Device, Is.EqualTo(Gpu));
        Assert.That(be.Runtime.IsEmulated, Is.True);
        Assert.That(be.Runtime.Accelerator.AcceleratorType, Is.EqualTo(ILGPU.Runtime.AcceleratorType.CPU));
        Assert.That(Backends.Get(Gpu), Is.SameAs(be));
    }

    [Test]
    public void EnvironmentVariableSelectsTheEmulator()
    {
        var old = Environment.GetEnvironmentVariable(CudaRuntime.EmulatorVariable);
        try
        {
            Environment.SetEnvironmentVariable(CudaRuntime.EmulatorVariable, "CPU");
            Assert.That(CudaRuntime.EmulatorRequestedByEnvironment, Is.True);
            Environment.SetEnvironmentVariable(CudaRuntime.EmulatorVariable, null);
            Assert.That(CudaRuntime.EmulatorRequestedByEnvironment, Is.False);
            Environment.SetEnvironmentVariable(CudaRuntime.EmulatorVariable, "gpu");
            Assert.That(CudaRuntime.EmulatorRequestedByEnvironment, Is.False);
        }
        finally { Environment.SetEnvironmentVariable(CudaRuntime.EmulatorVariable, old); }
    }

    [Test]
    public void KernelsAreCompiledOncePerRuntime()
    {
        using var x = Tensor.Ones([5, 3], DType.Float32, Gpu);
        using var y = Tensor.Empty([5, 3], DType.Float32, Gpu);
        Dev.Unary(UnaryOp.Square, x, y);
        int n = Dev.Runtime.KernelCount;
        for (int i = 0; i < 3; i++) Dev.Unary(UnaryOp.Square, x, y);
        Assert.That(Dev.Runtime.KernelCount, Is.EqualTo(n));
        Assert.That(y.ToArray<float>(), Is.All.EqualTo(1f));
        // A fresh runtime compiles through its own registry exactly once per key.
        using var rt = CudaRuntime.Open(7, emulate: true);
        int loads = 0;
        var k1 = rt.Kernel("probe", _ => { loads++; return new object(); });
        var k2 = rt.Kernel("probe", _ => { loads++; return new object(); });
        Assert.That(k2, Is.SameAs(k1));
        Assert.That(loads, Is.EqualTo(1));
        Assert.That(rt.Device, Is.EqualTo(Device.Cuda(7)));
    }

    [Test]
    public void AllocatorReusesBlocksKeepsStatsAndEmptiesCache()
    {
        var alloc = (CudaAllocator)Dev.Allocator;
        alloc.EmptyCache();
        var s0 = alloc.Stats;
        int buffers0 = alloc.BufferCount;
        var a = Tensor.Empty([1000], DType.Float32, Gpu);           // 4000 bytes → one 4096-byte block
        var s1 = alloc.Stats;
        Assert.That(s1.Live - s0.Live, Is.EqualTo(4096));
        Assert.That(s1.Reserved - s0.Reserved, Is.EqualTo(4096));
        Assert.That(alloc.BufferCount, Is.EqualTo(buffers0 + 1));
        a.Dispose();
        Assert.That(alloc.Stats.Live, Is.EqualTo(s0.Live));
        Assert.That(alloc.Stats.Reserved - s0.Reserved, Is.EqualTo(4096), "the freed block stays cached");
        var b = Tensor.Empty([1010], DType.Float32, Gpu);            // same bucket: reused
        var s2 = alloc.Stats;
        Assert.That(s2.CacheHits - s1.CacheHits, Is.EqualTo(1));
        Assert.That(alloc.BufferCount, Is.EqualTo(buffers0 + 1));
        Assert.That(s2.Peak, Is.GreaterThanOrEqualTo(s0.Live + 4096));
        b.Dispose();
        alloc.EmptyCache();
        Assert.That(alloc.Stats.Reserved, Is.EqualTo(alloc.Stats.Live), "EmptyCache returns every free block");
        Assert.That(alloc.BufferCount, Is.EqualTo(buffers0));
    }

    [TestCase(DType.Float32)]
    [TestCase(DType.Float64)]
    [TestCase(DType.Int32)]
    [TestCase(DType.Int64)]
    [TestCase(DType.Bool)]
    [TestCase(DType.UInt8)]
    public void HostDeviceRoundTripIsExact(DType dt)
    {
        using var src = Rand([3, 1, 7], 11, DType.Float64, -50, 50);
        using var host = src.To(dt);
        using var dev = host.To(Gpu);
        Assert.That(dev.Device, Is.EqualTo(Gpu));
        using var back = dev.To(Device.Cpu);
        Assert.That(back.ToArray<double>(), Is.EqualTo(host.ToArray<double>()));
        // A non-contiguous host view goes up through a contiguous copy.
        using var perm = host.AsStrided([7, 3], [1, 7], 0);
        using var devPerm = perm.To(Gpu);
        Assert.That(devPerm.ToArray<double>(), Is.EqualTo(perm.ToArray<double>()));
    }

    [TestCase(true)]
    [TestCase(false)]
    public void LargeTransfersRoundTripWithAndWithoutPageLockedStaging(bool staging)
    {
        bool old = CudaRuntime.UsePageLockedStaging;
        CudaRuntime.UsePageLockedStaging = staging;
        try
        {
            // 5 MiB: more than one staging buffer, not a multiple of it.
            int n = (5 << 20) / 4 + 3;
            var v = new float[n];
            for (int i = 0; i < n; i++) v[i] = i * 0.5f - 7;
            using var d = Tensor.FromArray(v, [n], Gpu);
            // Queue work behind the (possibly still running) upload, then read back.
            using var y = Tensor.Empty([n], DType.Float32, Gpu);
            Dev.Unary(UnaryOp.AddScalar, d, y, 1);
            var back = y.ToArray<float>();
            for (int i = 0; i < n; i += 997) Assert.That(back[i], Is.EqualTo(v[i] + 1), $"element {i}");
            Assert.That(back[^1], Is.EqualTo(v[^1] + 1));
            if (staging) Assert.That(Dev.Runtime.Staging, Is.Not.Null, "the emulator supports page-locked staging");
        }
        finally { CudaRuntime.UsePageLockedStaging = old; }
    }

    [Test]
    public void EmptyAndScalarTensorsTransfer()
    {
        using var e = Tensor.Empty([0, 3], DType.Float32, Gpu);
        Assert.That(e.ToArray<float>(), Is.Empty);
        using var s = Tensor.Scalar(2.5, DType.Float64, Gpu);
        Assert.That(s.Item(), Is.EqualTo(2.5));
    }

    private static readonly DType[] CastTypes = [DType.Float32, DType.Float64, DType.Int32, DType.Int64, DType.Bool, DType.UInt8, DType.Float16, DType.BFloat16];

    [Test]
    public void StridedCopiesWithDTypeCastsMatchCpu()
    {
        using var vals = Rand([4, 5, 3], 5, DType.Float64, -3, 120);
        foreach (var from in CastTypes)
        {
            using var hsrc = from is DType.UInt8 ? vals.To(DType.Float64) : vals.Alias();
            using var h = hsrc.To(from);
            using var hs = Strided(h);                // non-contiguous source
            using var d = Up(h);
            using var ds = Strided(d);
            foreach (var to in CastTypes)
            {
                if (to == DType.UInt8 && from is not (DType.Bool or DType.UInt8)) continue; // negative → byte is platform-defined
                using var want = Tensor.Empty(h.Shape, to);
                Cpu.Copy(hs, want);
                // destination strided too: a transposed view of a contiguous buffer
                using var store = Tensor.Empty([3, 5, 4], to, Gpu);
                using var dst = store.AsStrided([4, 5, 3], [1, 4, 20], 0);
                Dev.Copy(ds, dst);
                Assert.That(dst.ToArray<double>(), Is.EqualTo(want.ToArray<double>()), $"{from} → {to}");
            }
        }
    }

    [Test]
    public void HalfAndBFloat16CastsRoundLikeTheHost()
    {
        // Ties, subnormals, overflow, NaN, negative zero, values past the largest half.
        double[] v = [1 + 1.0 / 2048, 1 + 3.0 / 2048, 5.57421875 - 1e-9, 65504, 65519.99, 65520, 1e6, -3e-8, 6e-8, 2.98e-8, 1e-10, -0.0, double.NaN, double.NegativeInfinity, 1.00390625, 1.01171875];
        using var h64 = Tensor.FromArray(v, [v.Length]);
        using var d64 = Up(h64);
        foreach (var dt in new[] { DType.Float16, DType.BFloat16 })
            foreach (var from in new[] { DType.Float64, DType.Float32 })
            {
                using var hs = h64.To(from);
                using var want = hs.To(dt);
                using var ds = Up(hs);
                using var got = ds.To(dt);
                Assert.That(got.ToArray<double>(), Is.EqualTo(want.ToArray<double>()), $"{from} → {dt}");
                using var back = got.To(DType.Float32);
                using var wantBack = want.To(DType.Float32);
                Assert.That(back.ToArray<float>(), Is.EqualTo(wantBack.ToArray<float>()), $"{dt} → float32");
            }
    }

    [TestCase(DType.Float32, 1.25)]
    [TestCase(DType.Float64, -3.5)]
    [TestCase(DType.Int32, 7)]
    [TestCase(DType.Int64, -9)]
    [TestCase(DType.Bool, 1)]
    [TestCase(DType.UInt8, 200)]
    [TestCase(DType.Float16, 0.75)]
    [TestCase(DType.BFloat16, 1.5)]
    public void FillWritesOnlyTheView(DType dt, double v)
    {
        using var t = Tensor.Zeros([4, 6], dt, Gpu);
        using var view = t.AsStrided([2, 3], [12, 2], 1);   // every other element of rows 0 and 2, from column 1
        Dev.Fill(view, v);
        var got = t.ToArray<double>();
        for (int i = 0; i < 24; i++)
        {
            int r = i / 6, c = i % 6;
            bool inView = (r == 0 || r == 2) && c % 2 == 1;
            Assert.That(got[i], Is.EqualTo(inView ? v : 0.0), $"element {i}");
        }
    }

    [Test]
    public void ViewHelperStartsAtTheOffsetAndCoversTheFootprint()
    {
        using var t = Tensor.Zeros([10, 10], DType.Float32, Gpu);
        using var v = t.AsStrided([3, 4], [20, 2], 5);
        var view = Dev.View<float>(v);
        Assert.That(view.Length, Is.EqualTo(2 * 20 + 3 * 2 + 1));
        using var neg = t.AsStrided([3], [-10], 25);
        var (sv, b) = Dev.Strided<float>(neg);
        Assert.That(sv.Length, Is.EqualTo(21));
        Assert.That(b, Is.EqualTo(20));
    }

    [Test]
    public void WithoutGpuOrEmulatorTheErrorNamesTheDeviceAndTheSwitch()
    {
        // A fresh runtime that is not the (emulated) shared one: independent of test order.
        CudaRuntime? rt = null;
        NotSupportedException? ex = null;
        try { rt = CudaRuntime.Open(0, emulate: false); }
        catch (NotSupportedException e) { ex = e; }
        if (rt is not null)
        {
            rt.Dispose();
            Assert.Ignore("a CUDA device is present on this machine");
        }
        TestContext.Out.WriteLine(ex!.Message);
        Assert.That(ex.Message, Does.Contain("no CUDA device"));
        Assert.That(ex.Message, Does.Contain("cuda:0"));
        Assert.That(ex.Message, Does.Contain("FASHIONVIL_CUDA_EMULATOR=cpu"));
    }

    [Test]
    public void DataTypesWithoutADeviceKernelSaySo()
    {
        // Every op of the contract has a device kernel; some dtypes do not (1-byte index_select, float64 GEMM).
        using var x = Tensor.Zeros([4, 3], DType.UInt8, Gpu);
        using var i = Tensor.Zeros([2], DType.Int64, Gpu);
        using var y = Tensor.Zeros([2, 3], DType.UInt8, Gpu);
        var ex = Assert.Throws<NotSupportedException>(() => Dev.IndexSelect(x, 0, i, y))!;
        Assert.That(ex.Message, Does.Contain($"cuda: index_select of {DType.UInt8.Name()} data is not implemented yet"));
    }

    [Test]
    public void DevicesMustMatch()
    {
        using var a = Tensor.Zeros([3], DType.Float32, Gpu);
        using var h = Tensor.Zeros([3], DType.Float32);
        Assert.That(Assert.Throws<ArgumentException>(() => Dev.Copy(h, a))!.Message, Does.Contain("cpu"));
    }
}
