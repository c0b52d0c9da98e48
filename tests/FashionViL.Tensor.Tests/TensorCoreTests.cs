namespace FashionViL.TensorTests;

/// <summary>Tensor handles, storage reference counting, the caching allocator, scopes, conversions and printing.</summary>
public class TensorCoreTests
{
    [Test]
    public void FromArrayKeepsValuesShapeAndDType()
    {
        using var t = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        Assert.That(t.Shape, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(t.Strides.ToArray(), Is.EqualTo(new[] { 3, 1 }));
        Assert.That(t.DType, Is.EqualTo(DType.Float32));
        Assert.That(t.Device, Is.EqualTo(Device.Cpu));
        Assert.That(t.Numel, Is.EqualTo(6));
        Assert.That(t.ToArray<float>(), Is.EqualTo(new float[] { 1, 2, 3, 4, 5, 6 }));
        var ex = Assert.Throws<ArgumentException>(() => Tensor.FromArray(new float[] { 1, 2, 3 }, 2, 2))!;
        Assert.That(ex.Message, Does.Contain("[2, 2]"));
    }

    [TestCase(DType.Float32)]
    [TestCase(DType.Float64)]
    [TestCase(DType.Int32)]
    [TestCase(DType.Int64)]
    [TestCase(DType.UInt8)]
    [TestCase(DType.Float16)]
    [TestCase(DType.BFloat16)]
    public void ConversionsRoundTripExactlyRepresentableValues(DType dt)
    {
        using var src = Tensor.FromArray(new double[] { 0, 1, 2, 7, 100, 255 }, 6);
        using var conv = src.To(dt);
        Assert.That(conv.DType, Is.EqualTo(dt));
        Assert.That(conv.Storage.Bytes, Is.EqualTo(6L * dt.Size()));
        Assert.That(conv.ToArray<double>(), Is.EqualTo(new double[] { 0, 1, 2, 7, 100, 255 }));
    }

    [Test]
    public void BoolAndHalfPrecisionConversionsRound()
    {
        using var src = Tensor.FromArray(new double[] { 0, -2.5, 1.0 / 3 }, 3);
        Assert.That(src.To(DType.Bool).ToArray<bool>(), Is.EqualTo(new[] { false, true, true }));
        Assert.That(src.To(DType.Float16).ToArray<double>()[2], Is.EqualTo((double)(Half)(1.0 / 3)));
        Assert.That(src.To(DType.BFloat16).ToArray<double>()[2], Is.EqualTo(0.333984375)); // 1/3 rounded to 8 significant bits
        Assert.That(src.To(DType.Int64).ToArray<long>(), Is.EqualTo(new long[] { 0, -2, 0 }));
    }

    [Test]
    public void ViewsShareStorageAndKeepItAliveAfterTheBaseIsDisposed()
    {
        var live0 = Backends.MemoryStats(Device.Cpu).Live;
        var t = Tensor.FromArray(Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), 3, 4);
        var v = t.AsStrided([4, 3], [1, 4], 0); // transpose
        Assert.That(v.Storage, Is.SameAs(t.Storage));
        Assert.That(v.Storage.RefCount, Is.EqualTo(2));
        Assert.That(v.IsContiguous, Is.False);
        t.Dispose();
        Assert.That(v.Storage.RefCount, Is.EqualTo(1));
        Assert.That(v.ToArray<float>().Take(4), Is.EqualTo(new float[] { 0, 4, 8, 1 }));
        v.Dispose();
        v.Dispose(); // idempotent
        Assert.That(Backends.MemoryStats(Device.Cpu).Live, Is.EqualTo(live0));
        Assert.Throws<ObjectDisposedException>(() => v.ToArray<float>());
    }

    [Test]
    public void AsStridedRefusesViewsOutsideTheStorage()
    {
        using var t = Tensor.Zeros([2, 3]);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => t.AsStrided([3, 3], [3, 1], 0))!;
        Assert.That(ex.Message, Does.Contain("outside storage of 6 elements"));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.AsStrided([2], [1], 5));
        Assert.DoesNotThrow(() => t.AsStrided([0, 9], [9, 1], 6).Dispose()); // empty views anywhere inside
    }

    [Test]
    public void CachingAllocatorReusesFreedBlocksAndTracksPeak()
    {
        var a = new TestAllocator();
        var (h1, s1) = a.Allocate(1000);
        Assert.That(s1, Is.EqualTo(1024));
        a.Free(h1, s1);
        var (h2, s2) = a.Allocate(900);        // same 1024-byte bucket
        Assert.That(h2, Is.EqualTo(h1));
        Assert.That(a.RawCalls, Is.EqualTo(1));
        var (h3, s3) = a.Allocate(3 << 20);    // 3 MiB: 1/64-of-power-of-two buckets
        Assert.That(s3, Is.EqualTo(3L << 20));
        var st = a.Stats;
        Assert.That(st.Live, Is.EqualTo(1024 + (3L << 20)));
        Assert.That(st.Peak, Is.EqualTo(st.Live));
        Assert.That(st.CacheHits, Is.EqualTo(1));
        a.Free(h3, s3); a.Free(h2, s2);
        Assert.That(a.Stats.Live, Is.Zero);
        Assert.That(a.Stats.Reserved, Is.EqualTo(1024 + (3L << 20)));
        Assert.That(a.Stats.Peak, Is.EqualTo(1024 + (3L << 20)));
        Assert.That(a.Stats.PeakRequested, Is.EqualTo(900 + (3L << 20)), "the requests, before rounding: 1000 was freed before 900 came");
        Assert.That(a.Stats.LiveRequested, Is.Zero);
        a.EmptyCache();
        Assert.That(a.Stats.Reserved, Is.Zero);
        Assert.That(a.RawFrees, Is.EqualTo(2));
    }

    [TestCase(1L, 512L)]
    [TestCase(513L, 1024L)]
    [TestCase(1048576L, 1048576L)]
    [TestCase(1048577L, 1064960L)]     // 1 MiB + 1: 16 KiB steps (1/64 of 1 MiB)
    [TestCase(5000000L, 5046272L)]     // 64 KiB steps between 4 and 8 MiB
    [TestCase(205520896L, 205520896L)] // a [64,256,56,56] float32 activation, a multiple of 2 MiB: exact
    [TestCase(205520897L, 207618048L)] // one byte more: the next 2 MiB step (128..256 MiB)
    public void RoundSizeBuckets(long request, long bucket) => Assert.That(CachingAllocator.RoundSize(request), Is.EqualTo(bucket));

    private sealed class TestAllocator : CachingAllocator
    {
        private nint _next = 4096;
        public int RawCalls, RawFrees;
        public override Device Device => Device.Cpu;
        protected override nint RawAllocate(long bytes) { RawCalls++; var h = _next; _next += (nint)bytes; return h; }
        protected override void RawFree(nint handle, long bytes) => RawFrees++;
    }

    [Test]
    public void ScopeFreesWhatItCreatedExceptKeptTensors()
    {
        var live0 = Backends.MemoryStats(Device.Cpu).Live;
        Tensor kept, inner;
        using (var outer = Tensor.Scope())
        {
            using (var s = Tensor.Scope())
            {
                var a = Tensor.Ones([100]);
                inner = Tensor.Zeros([100]);
                kept = s.Keep(Tensor.Full([10], 3));
                Assert.That(s.OwnedCount, Is.EqualTo(2));
                _ = a;
            }
            Assert.That(inner.IsDisposed, Is.True);
            Assert.That(kept.IsDisposed, Is.False, "kept moves to the enclosing scope");
            Assert.That(outer.OwnedCount, Is.EqualTo(1));
        }
        Assert.That(kept.IsDisposed, Is.True, "and dies with it");
        Assert.That(Backends.MemoryStats(Device.Cpu).Live, Is.EqualTo(live0));

        Tensor persisted;
        using (Tensor.Scope()) persisted = Tensor.Ones([5]).Persist();
        Assert.That(persisted.IsDisposed, Is.False);
        persisted.Dispose();
    }

    [Test]
    public void ScopesMustCloseInOrder()
    {
        var a = Tensor.Scope();
        var b = Tensor.Scope();
        Assert.Throws<InvalidOperationException>(() => a.Dispose());
        b.Dispose(); a.Dispose();
    }

    [Test]
    public void ToStringShowsShapeDTypeDeviceAndAValueSummary()
    {
        using var t = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6, 7, 8 }, 2, 4);
        var s = t.ToString();
        Assert.That(s, Does.StartWith("tensor([2, 4], float32, cpu)"));
        Assert.That(s, Does.Contain("[1, 2, 3, 4, 5, 6, …]"));
        Assert.That(s, Does.Contain("min=1 max=8 mean=4.5"));
        using var n = Tensor.FromArray(new double[] { double.NaN, 1 }, 2);
        Assert.That(n.ToString(), Does.Contain("nan=1"));
        t.RequiresGrad = true;
        Assert.That(t.ToString(), Does.Contain("requires_grad"));
        Assert.That(Tensor.Zeros([0, 3]).ToString(), Does.EndWith("[]"));
    }

    [Test]
    public void ItemNeedsOneElement()
    {
        using var s = Tensor.Scalar(2.5);
        Assert.That(s.Rank, Is.Zero);
        Assert.That(s.Item(), Is.EqualTo(2.5));
        using var v = Tensor.Zeros([2]);
        Assert.That(Assert.Throws<InvalidOperationException>(() => v.Item())!.Message, Does.Contain("[2]"));
    }

    [TestCase("cpu", DeviceType.Cpu, 0)]
    [TestCase("CUDA", DeviceType.Cuda, 0)]
    [TestCase("cuda:3", DeviceType.Cuda, 3)]
    public void DeviceParses(string s, DeviceType type, int index)
    {
        var d = Device.Parse(s);
        Assert.That(d.Type, Is.EqualTo(type));
        Assert.That(d.Index, Is.EqualTo(index));
        Assert.That(Device.Parse(d.ToString()), Is.EqualTo(d));
    }

    [Test]
    public void UnknownDevicesAreClearErrors()
    {
        Assert.That(Assert.Throws<FormatException>(() => Device.Parse("tpu"))!.Message, Does.Contain("tpu"));
        // No CUDA backend is registered in this layer yet: a clear error, not a crash.
        var ex = Assert.Throws<NotSupportedException>(() => Tensor.Zeros([2], DType.Float32, Device.Cuda(0)))!;
        Assert.That(ex.Message, Does.Contain("cuda:0"));
    }

    [Test]
    public void DTypePromotionFollowsPyTorchForOurTypes()
    {
        Assert.That(DTypeInfo.Promote(DType.Float32, DType.Float64), Is.EqualTo(DType.Float64));
        Assert.That(DTypeInfo.Promote(DType.Int64, DType.Float32), Is.EqualTo(DType.Float32));
        Assert.That(DTypeInfo.Promote(DType.Int32, DType.Int64), Is.EqualTo(DType.Int64));
        Assert.That(DTypeInfo.Promote(DType.Bool, DType.UInt8), Is.EqualTo(DType.UInt8));
    }

    [Test]
    public void BroadcastShapesFollowNumPy()
    {
        Assert.That(Shape.Broadcast([2, 1, 4], [3, 1]), Is.EqualTo(new[] { 2, 3, 4 }));
        Assert.That(Shape.Broadcast([], [5]), Is.EqualTo(new[] { 5 }));
        var ex = Assert.Throws<ArgumentException>(() => Shape.Broadcast([2, 3], [4, 3], "add"))!;
        Assert.That(ex.Message, Does.Contain("add").And.Contain("[2, 3]").And.Contain("[4, 3]"));
    }

    [Test]
    public void CopyBetweenStridedViewsCastsAndRespectsStrides()
    {
        using var src = Tensor.FromArray(Enumerable.Range(0, 6).Select(i => (long)i).ToArray(), 2, 3);
        using var dst = Tensor.Zeros([3, 2], DType.Float32);
        using var srcT = src.AsStrided([3, 2], [1, 3], 0);
        Backends.Get(Device.Cpu).Copy(srcT, dst);
        Assert.That(dst.ToArray<float>(), Is.EqualTo(new float[] { 0, 3, 1, 4, 2, 5 }));
    }
}
