using System.Text.RegularExpressions;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The multi-tensor AdamW (<see cref="IBackend.AdamWStepMany"/>): on each backend bitwise what one <see cref="IBackend.AdamWStep"/>
/// per tensor gives, over tensors of awkward sizes, several groups (lr, weight decay, bias correction), per-tensor step
/// counts and tensors that sit a step out; the packing (⌈tensors/32⌉ launches, big tensors keep the whole device); the
/// validation; and the kernel's PTX (no local memory, parameter within CUDA's 4 KiB).
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable]   // counts the process-wide kernel launches
public class AdamWManyTests : CudaTestBase
{
    // Awkward sizes: 1, warp/group edges, primes, one empty, and some past the emulator's 16-group cap (grid-stride loops).
    private static readonly int[] Sizes =
    [
        1, 2, 3, 5, 7, 31, 32, 33, 63, 64, 65, 127, 257, 1000, 1037, 4099, 0, 11, 97, 1, 300, 513, 2, 9,
        3001, 17, 6, 129, 255, 33, 8, 1, 77, 1024, 45, 2049, 3, 19, 640, 71,
    ];

    // Three groups as the optimizer builds them (lr, weight decay, bias correction).
    private static readonly (double Lr, double Wd, bool Correct)[] GroupsHp = [(1e-3, 1e-2, true), (2e-2, 0, true), (5e-4, 1e-4, false)];

    private sealed class Set(Tensor[] p, Tensor[] m, Tensor[] v) : IDisposable
    {
        public readonly Tensor[] P = p, M = m, V = v;
        public void Dispose() { foreach (var t in P.Concat(M).Concat(V)) t.Dispose(); }
    }

    private static Set Make(Device device, DType[] dtypes)
    {
        var p = Sizes.Select((n, i) => { using var c = Rand([n], 100 + (ulong)i, dtypes[i]); return c.To(device); }).ToArray();
        var m = Sizes.Select((n, i) => Tensor.Zeros([n], dtypes[i], device)).ToArray();
        var v = Sizes.Select((n, i) => Tensor.Zeros([n], dtypes[i], device)).ToArray();
        return new Set(p, m, v);
    }

    private static AdamWParams Hp(int item, int step)
    {
        var (lr, wd, correct) = GroupsHp[item % GroupsHp.Length];
        return new AdamWParams(lr, 0.9, 0.999, 1e-6, wd, step + 10 * (item % 4), correct);   // steps differ per tensor
    }

    /// <summary>Four steps; tensor i sits out step s when (i + s) % 5 == 0 (no gradient), so step counts drift apart.</summary>
    private static void RunBoth(IBackend backend, Device device, DType[] dtypes)
    {
        using var one = Make(device, dtypes);
        using var many = Make(device, dtypes);
        var steps = new int[Sizes.Length];
        for (int s = 0; s < 4; s++)
        {
            var grads = new List<Tensor>();
            var items = new List<AdamWItem>();
            for (int i = 0; i < Sizes.Length; i++)
            {
                if ((i + s) % 5 == 0) continue;
                using var gc = Rand([Sizes[i]], 1000 + (ulong)(s * 100 + i), dtypes[i], -3, 3);
                var g = gc.To(device);
                grads.Add(g);
                steps[i]++;
                backend.AdamWStep(one.P[i], g, one.M[i], one.V[i], Hp(i, steps[i]));
                items.Add(new AdamWItem(many.P[i], g, many.M[i], many.V[i], Hp(i, steps[i])));
            }
            backend.AdamWStepMany(items);
            foreach (var g in grads) g.Dispose();
            for (int i = 0; i < Sizes.Length; i++)
            {
                string what = $"step {s}, tensor {i} ([{Sizes[i]}], {dtypes[i].Name()})";
                if (dtypes[i] == DType.Float64)
                {
                    AssertBitEqual<double>(many.P[i], one.P[i], "param " + what);
                    AssertBitEqual<double>(many.M[i], one.M[i], "exp_avg " + what);
                    AssertBitEqual<double>(many.V[i], one.V[i], "exp_avg_sq " + what);
                }
                else
                {
                    AssertBitEqual<float>(many.P[i], one.P[i], "param " + what);
                    AssertBitEqual<float>(many.M[i], one.M[i], "exp_avg " + what);
                    AssertBitEqual<float>(many.V[i], one.V[i], "exp_avg_sq " + what);
                }
            }
        }
        // and the updates did something: every non-empty param moved away from its start
        for (int i = 0; i < Sizes.Length; i++)
        {
            if (Sizes[i] == 0) continue;
            using var c = Rand([Sizes[i]], 100 + (ulong)i, dtypes[i]);
            Assert.That(many.P[i].ToArray<double>(), Is.Not.EqualTo(c.ToArray<double>()), $"tensor {i} was updated");
        }
    }

    [Test]
    public void CpuManyIsBitwiseOneAtATime()
    {
        // float32 and float64 items mixed in one call (the CPU backend keeps float64 for gradcheck-style runs)
        var dtypes = Sizes.Select((_, i) => i % 7 == 3 ? DType.Float64 : DType.Float32).ToArray();
        RunBoth(Cpu, Device.Cpu, dtypes);
    }

    [Test]
    public void CudaManyIsBitwiseOneAtATime()
    {
        RunBoth(Dev, Gpu, Sizes.Select(_ => DType.Float32).ToArray());
    }

    /// <summary>The device result also agrees with the CPU reference (the per-tensor kernel's own tolerance in RowKernelTests).</summary>
    [Test]
    public void CudaManyMatchesCpu()
    {
        var dt = Sizes.Select(_ => DType.Float32).ToArray();
        using var c = Make(Device.Cpu, dt);
        using var d = Make(Gpu, dt);
        for (int s = 1; s <= 3; s++)
        {
            var gs = Sizes.Select((n, i) => Rand([n], 5000 + (ulong)(s * 100 + i), DType.Float32, -2, 2)).ToArray();
            var gd = gs.Select(Up).ToArray();
            Cpu.AdamWStepMany(Sizes.Select((_, i) => new AdamWItem(c.P[i], gs[i], c.M[i], c.V[i], Hp(i, s))).ToList());
            Dev.AdamWStepMany(Sizes.Select((_, i) => new AdamWItem(d.P[i], gd[i], d.M[i], d.V[i], Hp(i, s))).ToList());
            foreach (var g in gs.Concat(gd)) g.Dispose();
        }
        for (int i = 0; i < Sizes.Length; i++)
        {
            OpCheck.AssertClose(d.P[i].ToArray<double>(), c.P[i].ToArray<double>(), 1e-6, 1e-7, $"param {i}");
            OpCheck.AssertClose(d.V[i].ToArray<double>(), c.V[i].ToArray<double>(), 1e-6, 1e-12, $"exp_avg_sq {i}");
        }
    }

    [Test]
    public void OneLaunchPerThirtyTwoTensors()
    {
        var rt = CudaRuntime.Get(0);
        var dt = Sizes.Select(_ => DType.Float32).ToArray();
        using var a = Make(Gpu, dt);
        var grads = Sizes.Select(n => Tensor.Full([n], 0.5, DType.Float32, Gpu)).ToArray();
        AdamWItem Item(int i) => new(a.P[i], grads[i], a.M[i], a.V[i], Hp(i, 1));
        Dev.Synchronize();
        foreach (var (count, launches) in new[] { (1, 1), (16, 1), (33, 1), (34, 2), (40, 2) })   // index 16 is the empty tensor
        {
            var c0 = rt.Counters;
            Dev.AdamWStepMany(Enumerable.Range(0, count).Select(Item).ToList());
            Assert.That((rt.Counters - c0).KernelLaunches, Is.EqualTo(launches), $"{count} tensors");
        }
        var e0 = rt.Counters;
        Dev.AdamWStepMany([Item(16)]);
        Dev.AdamWStepMany([]);
        Assert.That((rt.Counters - e0).KernelLaunches, Is.Zero, "nothing to do, nothing launched");
        foreach (var g in grads) g.Dispose();
    }

    /// <summary>The packing on an H100 (132 multiprocessors, 256-thread groups: at most 1,056 groups a tensor), by hand.</summary>
    [Test]
    public void PlanGivesEachTensorItsOwnGroupsAndBigOnesTheWholeDevice()
    {
        const int gs = 256, cap = 132 * 8;
        // word embeddings (30,522 × 768), a bias, an intermediate weight (768 × 3,072), its bias, nothing, 1 element, a norm
        int[] sizes = [23_440_896, 768, 2_359_296, 3072, 0, 1, 64];
        var plan = OptimKernels.Plan(sizes, gs, cap);
        Assert.That(plan, Has.Count.EqualTo(1));
        Assert.That(plan[0].Items, Is.EqualTo(new[] { 0, 1, 2, 3, 5, 6 }));
        Assert.That(plan[0].Groups, Is.EqualTo(new[] { 1056, 3, 1056, 12, 1, 1 }));
        Assert.That(plan[0].FirstGroups, Is.EqualTo(new[] { 0, 1056, 1059, 2115, 2127, 2128 }));
        Assert.That(plan[0].TotalGroups, Is.EqualTo(2129));

        // 380 tensors (the full-size model's count, roughly) → 12 launches of 32, the last with 28; indices carried through
        var many = Enumerable.Range(0, 380).Select(i => 100 + i).ToArray();
        var p = OptimKernels.Plan(many, gs, cap);
        Assert.That(p, Has.Count.EqualTo(12));
        Assert.That(p.Take(11).Select(x => x.Items.Length), Is.All.EqualTo(32));
        Assert.That(p[11].Items, Is.EqualTo(Enumerable.Range(352, 28).ToArray()));
        Assert.That(p[1].Groups, Is.All.EqualTo(1), "tensors of ≤ 256 elements take one group each");
        Assert.That(p[1].FirstGroups, Is.EqualTo(Enumerable.Range(0, 32).ToArray()));
        Assert.That(p[0].Groups[0], Is.EqualTo(1));
        Assert.That(OptimKernels.Plan([], gs, cap), Is.Empty);
        Assert.That(OptimKernels.Plan([0, 0], gs, cap), Is.Empty);
    }

    [Test]
    public void BadItemsThrowNamingTheItemBeforeAnythingChanges([Values("cpu", "cuda")] string where)
    {
        var device = where == "cpu" ? Device.Cpu : Gpu;
        var backend = Backends.Get(device);
        using var p = Tensor.Full([6], 1.0, DType.Float32, device); using var g = Tensor.Full([6], 0.5, DType.Float32, device);
        using var m = Tensor.Zeros([6], DType.Float32, device); using var v = Tensor.Zeros([6], DType.Float32, device);
        using var q = Tensor.Full([4], 1.0, DType.Float32, device); using var gq = Tensor.Full([4], 0.5, DType.Float32, device);
        using var mq = Tensor.Zeros([4], DType.Float32, device); using var vq = Tensor.Zeros([4], DType.Float32, device);
        var ok = new AdamWItem(p, g, m, v, new AdamWParams(1e-3, 0.9, 0.999, 1e-8, 0, 1));
        using var g5 = Tensor.Zeros([5], DType.Float32, device);
        var e = Assert.Throws<ArgumentException>(() => backend.AdamWStepMany([ok, new AdamWItem(q, g5, mq, vq, ok.Hp)]))!;
        Assert.That(e.Message, Does.Contain("item 1").And.Contain("[5]").And.Contain("[4]"));
        e = Assert.Throws<ArgumentException>(() => backend.AdamWStepMany([ok, new AdamWItem(q, gq, mq, vq, ok.Hp with { Step = 0 })]))!;
        Assert.That(e.Message, Does.Contain("item 1").And.Contain("step"));
        // the same param twice: a race in one launch, rejected on every backend
        using var m2 = Tensor.Zeros([6], DType.Float32, device); using var v2 = Tensor.Zeros([6], DType.Float32, device);
        e = Assert.Throws<ArgumentException>(() => backend.AdamWStepMany([ok, new AdamWItem(p, g, m2, v2, ok.Hp)]))!;
        Assert.That(e.Message, Does.Contain("item 0").And.Contain("item 1").And.Contain("param"));
        // exp_avg of one item is another's param (overlapping views of one storage)
        using var big = Tensor.Zeros([10], DType.Float32, device);
        using var lo = big.AsStrided([6], [1], 0); using var hi = big.AsStrided([4], [1], 5);
        e = Assert.Throws<ArgumentException>(() => backend.AdamWStepMany([new AdamWItem(p, g, lo, v, ok.Hp), new AdamWItem(hi, gq, mq, vq, ok.Hp)]))!;
        Assert.That(e.Message, Does.Contain("exp_avg of item 0").Or.Contain("param of item 1"));
        Assert.That(p.ToArray<float>(), Is.All.EqualTo(1f), "nothing was updated");
        Assert.That(m.ToArray<float>(), Is.All.EqualTo(0f));
        // grads may be shared (they are only read), and disjoint views of one storage are separate tensors
        using var hi2 = big.AsStrided([4], [1], 6);
        using var gShared = g.AsStrided([4], [1], 0);
        backend.AdamWStepMany([new AdamWItem(p, g, lo, v, ok.Hp), new AdamWItem(q, gShared, hi2, vq, ok.Hp)]);
        Assert.That(p.ToArray<float>(), Is.All.Not.EqualTo(1f));
        Assert.That(q.ToArray<float>(), Is.All.Not.EqualTo(1f));
    }

    [Test]
    public void CudaRejectsTensorsOnAnotherDevice()
    {
        using var c = Tensor.Zeros([3]);
        using var d = Tensor.Zeros([3], DType.Float32, Gpu);
        var e2 = Assert.Throws<ArgumentException>(() => Dev.AdamWStepMany([new AdamWItem(d, c, d, d, new AdamWParams(1e-3, 0.9, 0.999, 1e-8, 0, 1))]))!;
        Assert.That(e2.Message, Does.Contain("item 0").And.Contain("cpu"));
    }

    [Test]
    public void KernelCompilesToPtxWithoutLocalMemoryAndItsParameterFitsFourKiB()
    {
        using var ptxc = new Sm90Ptx();
        var mi = typeof(OptimKernels).GetMethod(nameof(OptimKernels.AdamWManyKernel), System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic)!;
        string ptx = ptxc.Compile(mi, mi.Name);
        Assert.That(ptx, Does.Contain(".entry"));
        Assert.That(ptx, Does.Not.Contain(".local"), "slots are picked by compare and select, never copied to an indexed local array");
        var param = Regex.Matches(ptx, @"\.param\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\]").Select(x => int.Parse(x.Groups[1].Value)).ToList();
        Assert.That(param.Sum(), Is.GreaterThan(32 * 64).And.LessThanOrEqualTo(4096), "the batch struct (32 slots of four views) is one kernel parameter ≤ 4 KiB");
    }
}
