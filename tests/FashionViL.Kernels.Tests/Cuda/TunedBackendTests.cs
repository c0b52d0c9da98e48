using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The CUDA backend with <see cref="KernelTuner"/> on (emulator): every tuned GEMM and convolution gives the bits it gives
/// with the tuner off (all candidates compute each output the same way, and an output a GEMM accumulates into is restored
/// between the timed runs), the choices are keyed per shape, and once remembered a call costs one launch and no wait.
/// A choice read from the cache is the one that runs: forcing the 64×32 tensor-core tile where the rule takes the 128×64
/// tile drops the operand pre-rounding launches that only the 128×64 tile makes.
/// </summary>
[Category("Cuda"), NonParallelizable]
public class TunedBackendTests : CudaTestBase
{
    private TuningScope _scope = null!;
    private int _tiles;

    private static CudaRuntime Rt => CudaRuntime.Get(0);

    [SetUp]
    public void UseATemporaryCache()
    {
        _tiles = CudaBackend.MinTilesToPreRound;
        _scope = new TuningScope(Rt.Accelerator, TuneMode.Off);
    }

    [TearDown]
    public void Restore()
    {
        CudaBackend.MinTilesToPreRound = _tiles;
        _scope.Dispose();
    }

    private static List<int[]> Run(Func<Tensor[], Tensor> f, Tensor[] cpu, Precision p, TuneMode mode)
    {
        KernelTuner.Mode = mode;
        return OutputAndGradientBits(f, cpu, p).Bits;
    }

    /// <summary>f's output and gradients with the tuner off, on (timed choices), from the remembered choices, and with every
    /// remembered shape forced onto each of its candidates in turn (<see cref="KernelTuner.ForceChoices"/>): all the same bits.</summary>
    private static void SameBits(Func<Tensor[], Tensor> f, Tensor[] cpu, Precision p, string what)
    {
        var off = Run(f, cpu, p, TuneMode.Off);
        long tuned0 = KernelTuner.Stats(Rt.Accelerator).Tuned;
        var runs = new List<(string How, List<int[]> Bits)> { ("tuned", Run(f, cpu, p, TuneMode.On)) };
        Assert.That(KernelTuner.Stats(Rt.Accelerator).Tuned, Is.GreaterThan(tuned0), $"{what} {p}: the tuner timed something");
        runs.Add(("from remembered choices", Run(f, cpu, p, TuneMode.On)));
        int most = KernelTuner.ForceChoices(Rt.Accelerator, 0);
        Assert.That(most, Is.GreaterThanOrEqualTo(2));
        for (int i = 0; i < most; i++)
        {
            KernelTuner.ForceChoices(Rt.Accelerator, i);
            var before = KernelTuner.Stats(Rt.Accelerator);
            runs.Add(($"every shape on its candidate {i}", Run(f, cpu, p, TuneMode.On)));
            var after = KernelTuner.Stats(Rt.Accelerator);
            Assert.That(after.Tuned, Is.EqualTo(before.Tuned), $"{what} {p}: the forced choices ran, nothing was timed again");
            Assert.That(after.FromCache, Is.GreaterThan(before.FromCache));
        }
        KernelTuner.Forget(Rt.Accelerator);   // back to the timed choices: the forced ones were never written
        KernelTuner.KnownChoices(Rt.Accelerator);
        foreach (var (how, bits) in runs)
            for (int i = 0; i < off.Count; i++)
                Assert.That(bits[i], Is.EqualTo(off[i]), $"{what} {p}, {how}: {(i == 0 ? "output" : $"gradient of input {i - 1}")} changed bits");
    }

    [TestCase(Precision.Fp32)]
    [TestCase(Precision.Tf32)]
    [TestCase(Precision.Bf16)]
    public void TunedMatmulsGiveTheSameBits(Precision p)
    {
        SameBits(t => t[0].Matmul(t[1]), [Rand([130, 40], 6), Rand([40, 70], 7)], p, "matmul 130x40x70");
        SameBits(t => Ops.Linear(t[0], t[1], t[2]), [Rand([3, 50, 33], 8), Rand([65, 33], 9), Rand([65], 10)], p, "linear [3,50,33] x [65,33]^T");
        var keys = KernelTuner.Entries(Rt.Accelerator).Keys.ToList();
        Assert.That(keys, Has.Some.StartsWith($"gemm {p} b1 m{KernelTuner.Bucket(130)} n{KernelTuner.Bucket(70)} k40 nn"), "the forward GEMM has its own entry");
        Assert.That(keys.Count(k => k.StartsWith($"gemm {p} ", StringComparison.Ordinal)), Is.GreaterThanOrEqualTo(5), "forward and gradient GEMMs are told apart");
    }

    [TestCase(Precision.Tf32)]
    public void TunedMatmulsWithPreRoundingGiveTheSameBits(Precision p)
    {
        CudaBackend.MinTilesToPreRound = 1;   // the 128×64 candidate rounds its operands first
        SameBits(t => t[0].Matmul(t[1]), [Rand([130, 40], 16), Rand([40, 70], 17)], p, "matmul 130x40x70 pre-rounded");
    }

    /// <summary>The cp.async 128×128 tile is a tuner candidate only once FVL_TC_ASYNC opts in (no device has checked its bits,
    /// and the tuner does not compare bits): off, tuning never launches it; on, it is timed and forced like the others with
    /// the same bits; and FVL_TC_TILE=128x128a with the switch off still tunes (the override's tile joins the candidates).</summary>
    [Test]
    public void TheCpAsyncTileIsATunerCandidateOnlyWhenOptedIn()
    {
        bool was = TensorCoreGemm.AsyncStages;
        var overridden = CudaBackend.GemmTileOverride;
        try
        {
            TensorCoreGemm.AsyncStages = false;
            CudaBackend.GemmTileOverride = null;
            long before = TensorCoreGemm.AsyncLaunchCount;
            SameBits(t => t[0].Matmul(t[1]), [Rand([132, 40], 31), Rand([40, 72], 32)], Precision.Tf32, "matmul 132x40x72, FVL_TC_ASYNC off");
            Assert.That(TensorCoreGemm.AsyncLaunchCount, Is.EqualTo(before), "tuning with the switch off never runs the cp.async tile");
            TensorCoreGemm.AsyncStages = true;
            SameBits(t => t[0].Matmul(t[1]), [Rand([136, 44], 33), Rand([44, 76], 34)], Precision.Tf32, "matmul 136x44x76, FVL_TC_ASYNC on");
            Assert.That(TensorCoreGemm.AsyncLaunchCount, Is.GreaterThan(before), "timed and forced as a candidate");
            TensorCoreGemm.AsyncStages = false;
            CudaBackend.GemmTileOverride = TensorCoreTile.Tile128x128Async;
            long forced = TensorCoreGemm.AsyncLaunchCount;
            SameBits(t => t[0].Matmul(t[1]), [Rand([140, 48], 35), Rand([48, 80], 36)], Precision.Tf32, "matmul 140x48x80, FVL_TC_TILE=128x128a");
            Assert.That(TensorCoreGemm.AsyncLaunchCount, Is.GreaterThan(forced));
        }
        finally
        {
            TensorCoreGemm.AsyncStages = was;
            CudaBackend.GemmTileOverride = overridden;
        }
    }

    /// <summary>C ← A·B + 1·C (m × k × n) tuned and untuned: the timed runs add A·B to C again and again, so the real run
    /// must start from the caller's C.</summary>
    private static void AccumulatingGemmMatches(Precision p, int m, int k, int n)
    {
        using var scope = Tensor.Scope();
        var a = Up(Rand([m, k], 1));
        var b = Up(Rand([k, n], 2));
        var c0 = Rand([m, n], 3);
        var want = Up(c0);
        var got = Up(c0);
        using (MatMulPrecision.Use(p))
        {
            KernelTuner.Mode = TuneMode.Off;
            Dev.MatMul(a, b, want, false, false, alpha: 1, beta: 1);
            KernelTuner.Mode = TuneMode.On;
            Dev.MatMul(a, b, got, false, false, alpha: 1, beta: 1);
        }
        Assert.That(KernelTuner.Entries(Rt.Accelerator).Keys, Has.Some.StartsWith($"gemm {p} b1 m{KernelTuner.Bucket(m)} n{KernelTuner.Bucket(n)} k{KernelTuner.Bucket(k)} nn").And.Contains("beta1"));
        Assert.That(Bits(got), Is.EqualTo(Bits(want)));
    }

    [TestCase(Precision.Fp32)]
    [TestCase(Precision.Tf32)]
    public void AGemmThatAccumulatesStartsFromItsOwnOutput(Precision p) => AccumulatingGemmMatches(p, 70, 20, 90);

    [TestCase(Precision.Fp32)]
    [TestCase(Precision.Tf32)]
    public void SplitKGemmsAreTunedWithTheirSplitKept(Precision p)
    {
        // 20 × 20 over K = 600: one tile, so the backend splits K; the tuner picks the partial products' kernel only
        var args = GemmArgs.Dense(default, default, default, 1, 20, 20, 600);
        int splits = GemmSplitK.Splits(Rt.Accelerator, args, p);
        Assert.That(splits, Is.GreaterThan(1), "the emulator splits this GEMM");
        SameBits(t => t[0].Matmul(t[1]), [Rand([20, 600], 21), Rand([600, 20], 22)], p, "matmul 20x600x20 split-K");
        Assert.That(KernelTuner.Entries(Rt.Accelerator).Keys, Has.Some.StartsWith($"gemm {p} b1 m20 n20 k{KernelTuner.Bucket(600)} nn").And.EndsWith($"splits{splits}"));
        AccumulatingGemmMatches(p, 20, 600, 20);   // the reduction reads C
    }

    [TestCase(Precision.Fp32)]
    [TestCase(Precision.Tf32)]
    public void TunedConvolutionsGiveTheSameBits(Precision p)
    {
        SameBits(t => Ops.Conv2d(t[0], t[1], t[2], 1, 1), [Rand([2, 5, 9, 7], 1), Rand([6, 5, 3, 3], 2), Rand([6], 3)], p, "conv 3x3");
        SameBits(t => Ops.Conv2d(t[0], t[1], null, new Conv2dParams(2, 2, 0, 0, 0, 0)), [Rand([1, 4, 8, 8], 4), Rand([130, 4, 1, 1], 5)], p,
            "conv 1x1 stride 2");
        var keys = KernelTuner.Entries(Rt.Accelerator).Keys.ToList();
        foreach (var mode in new[] { "Forward", "BackwardInput", "BackwardWeight" })
            Assert.That(keys, Has.Some.StartsWith($"conv {mode} {p} "), $"the {mode} GEMM was tuned");
    }

    [Test]
    public void ARememberedChoiceCostsOneLaunchAndNoWait()
    {
        using var scope = Tensor.Scope();
        var a = Up(Rand([130, 40], 1));
        var b = Up(Rand([40, 70], 2));
        var c = Up(Rand([130, 70], 3));
        KernelTuner.Mode = TuneMode.On;
        Dev.MatMul(a, b, c, false, false);
        Dev.Synchronize();
        var c0 = Rt.Counters;
        long cached = KernelTuner.Stats(Rt.Accelerator).FromCache;
        Dev.MatMul(a, b, c, false, false);
        var d = Rt.Counters - c0;
        Assert.That((d.KernelLaunches, d.HostSyncs), Is.EqualTo((1L, 0L)));
        Assert.That(KernelTuner.Stats(Rt.Accelerator).FromCache, Is.EqualTo(cached + 1));
    }

    [Test]
    public void RowCountsThatChangeFromBatchToBatchShareOneChoice()
    {
        // the MLM head's rows (the labelled tokens) differ per batch: 130 and 170 fall in one bucket (192), 200 in the next
        using var scope = Tensor.Scope();
        var w = Up(Rand([96, 40], 1));
        KernelTuner.Mode = TuneMode.On;
        long Tuned(int rows)
        {
            long t0 = KernelTuner.Stats(Rt.Accelerator).Tuned;
            using var x = Up(Rand([rows, 40], (ulong)rows));
            using var y = Tensor.Empty([rows, 96], DType.Float32, Gpu);
            Dev.MatMul(x, w, y, false, true);
            return KernelTuner.Stats(Rt.Accelerator).Tuned - t0;
        }
        Assert.That(Tuned(130), Is.EqualTo(1));
        Assert.That(Tuned(170), Is.Zero, "same bucket: the remembered choice");
        Assert.That(Tuned(200), Is.EqualTo(1));
    }

    [Test]
    public void TimingWaitsAreCountedAsHostSyncs()
    {
        using var scope = Tensor.Scope();
        var a = Up(Rand([30, 40], 1));
        var b = Up(Rand([40, 50], 2));
        var c = Up(Rand([30, 50], 3));
        KernelTuner.Mode = TuneMode.On;
        Dev.Synchronize();
        var c0 = Rt.Counters;
        long w0 = KernelTuner.Stats(Rt.Accelerator).HostWaits;
        Dev.MatMul(a, b, c, false, false);
        var d = Rt.Counters - c0;
        long waits = KernelTuner.Stats(Rt.Accelerator).HostWaits - w0;
        Assert.That(waits, Is.GreaterThan(0));
        Assert.That(d.HostSyncs, Is.EqualTo(waits));
        Assert.That(d.KernelLaunches, Is.EqualTo(CudaBackend.TunedGemmVersions.Count * (1 + KernelTuner.Repeats) + 1),
            "every candidate once untimed and Repeats times timed, then the pick");
        long syncs = Rt.Counters.HostSyncs;
        KernelTuner.Forget(Rt.Accelerator);
        Assert.That(Rt.Counters.HostSyncs, Is.EqualTo(syncs), "forgetting the choices does not take waits back");
    }

    [Test]
    public void TheCachedTileIsTheOneThatRuns()
    {
        CudaBackend.MinTilesToPreRound = 1;
        var acc = Rt.Accelerator;
        Assert.That(TensorCoreGemm.Choose(acc, 130, 70, Precision.Tf32), Is.EqualTo(TensorCoreTile.Tile128x128), "the rule takes the 128×128 tile here");
        using var scope = Tensor.Scope();
        var a = Up(Rand([130, 40], 1));
        var b = Up(Rand([40, 70], 2));
        var c = Up(Rand([130, 70], 3));
        long Launches()
        {
            Dev.Synchronize();
            var c0 = Rt.Counters;
            using (MatMulPrecision.Use(Precision.Tf32)) Dev.MatMul(a, b, c, false, false);
            return (Rt.Counters - c0).KernelLaunches;
        }
        KernelTuner.Mode = TuneMode.Off;
        Assert.That(Launches(), Is.EqualTo(3), "128×128: A and B rounded first, then the GEMM");
        // what the tuner would record for this call, with the 64×32 tile chosen
        KernelTuner.Mode = TuneMode.On;
        Launches();
        var key = KernelTuner.Entries(acc).Keys.Single(k => k.StartsWith($"gemm Tf32 b1 m{KernelTuner.Bucket(130)} n{KernelTuner.Bucket(70)} k40 nn", StringComparison.Ordinal));
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(KernelTuner.CacheFile!))!;
        json["entries"]![key]!["choice"] = "Tile64x32";
        File.WriteAllText(KernelTuner.CacheFile!, json.ToJsonString());
        KernelTuner.Forget(acc);
        Assert.That(Launches(), Is.EqualTo(1), "64×32 from the cache: no pre-rounding");
        json["entries"]![key]!["choice"] = "Tile128x64";
        File.WriteAllText(KernelTuner.CacheFile!, json.ToJsonString());
        KernelTuner.Forget(acc);
        Assert.That(Launches(), Is.EqualTo(3), "128×64 from the cache");
    }
}
