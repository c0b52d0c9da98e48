using System.Text.Json;
using FashionViL.Autograd;
using FashionViL.Bench;
using FashionViL.Config;
using FashionViL.Kernels.Cuda;
using FashionViL.Model;
using FashionViL.Training;

namespace FashionViL.Tests.Bench;

/// <summary>
/// The step benchmark and the no-allocation / no-host-sync property on the CUDA backend, run on ILGPU's CPU accelerator
/// (the emulator; FASHIONVIL_TEST_CUDA=gpu runs the same bodies on a real device). The emulator is slow (one OS thread per
/// GPU thread): nano config, batch 2, a few steps.
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable]
public class BenchStepCudaTests
{
    private static readonly Device Gpu = Device.Cuda(0);

    [OneTimeSetUp]
    public void EnableEmulator() =>
        CudaRuntime.EmulatorEnabled = !string.Equals(Environment.GetEnvironmentVariable("FASHIONVIL_TEST_CUDA"), "gpu", StringComparison.OrdinalIgnoreCase);

    [Test]
    public void ItcStepOnTheEmulatorReportsLaunchesAndNeitherAllocatesNorWaits()
    {
        var json = BenchTestUtil.TempFile("cuda.json");
        var (code, text) = CliTests.RunCli("bench", "step", "--task", "itc", "--device", "cuda", "--config", BenchTestUtil.Nano,
            "--batch", "2", "--warmup", "2", "--steps", "1", "--profile-steps", "1", "--json", json);
        Assert.That(code, Is.Zero, text);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var r = doc.RootElement;
        Assert.That(r.GetProperty("device").GetString(), Is.EqualTo("cuda:0"));
        Assert.That(r.GetProperty("kernel_launches_per_step").GetDouble(), Is.GreaterThan(100), "a ResNet + BERT step is hundreds of kernels");
        Assert.That(r.GetProperty("device_allocations_per_step").GetDouble(), Is.Zero, "after warm-up every block comes from the cache");
        Assert.That(r.GetProperty("host_syncs_per_step").GetDouble(), Is.Zero, "nothing in the step waits for the device");
        Assert.That(r.GetProperty("device_to_host_reads_per_step").GetDouble(), Is.Zero);
        Assert.That(r.GetProperty("peak_memory_bytes").GetInt64(), Is.GreaterThan(0));
        var bd = r.GetProperty("breakdown");
        Assert.That(bd.GetProperty("timing").GetString(), Is.EqualTo("device-markers"));
        var kinds = bd.GetProperty("kinds").EnumerateArray().ToList();
        double sum = kinds.Sum(k => k.GetProperty("ms").GetDouble());
        Assert.That(sum, Is.GreaterThan(0).And.LessThanOrEqualTo(bd.GetProperty("profiled_step_ms").GetDouble() * 1.0001));
        Assert.That(kinds.Single(k => k.GetProperty("kind").GetString() == "conv").GetProperty("ms").GetDouble(), Is.GreaterThan(0));
        Directory.Delete(Path.GetDirectoryName(json)!, true);
    }

    /// <summary>MPFC (VQ-VAE codes computed in the step) takes its masked cells from the batch's host copy and gathers the
    /// codes on the device: no host wait.</summary>
    [Test]
    public void MpfcStepOnTheEmulatorNeitherAllocatesNorWaits()
    {
        var json = BenchTestUtil.TempFile("cuda-mpfc.json");
        var (code, text) = CliTests.RunCli("bench", "step", "--task", "mpfc", "--device", "cuda", "--config", BenchTestUtil.Nano,
            "--batch", "2", "--warmup", "2", "--steps", "1", "--profile-steps", "0", "--json", json);
        Assert.That(code, Is.Zero, text);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var r = doc.RootElement;
        Assert.That(r.GetProperty("device_allocations_per_step").GetDouble(), Is.Zero);
        Assert.That(r.GetProperty("host_syncs_per_step").GetDouble(), Is.Zero, "nothing in the step waits for the device");
        Assert.That(r.GetProperty("device_to_host_reads_per_step").GetDouble(), Is.Zero);
        Assert.That(double.IsFinite(r.GetProperty("loss").GetDouble()), Is.True);
        Directory.Delete(Path.GetDirectoryName(json)!, true);
    }

    /// <summary>--tune on: the tuner times the same-bits candidates of every GEMM and conv shape during the warm-up step;
    /// the loss is the untuned run's to the last bit, the measured step neither waits nor times anything, and a second run
    /// takes every choice from the cache file.</summary>
    [Test]
    public void TunedStepGivesTheSameLossAndTunesOnlyInTheWarmUp()
    {
        var dir = Path.GetDirectoryName(BenchTestUtil.TempFile("x"))!;
        var saved = KernelTuner.CacheFile;
        KernelTuner.CacheFile = Path.Combine(dir, "tune.json");
        KernelTuner.Forget(CudaRuntime.Get(0).Accelerator);
        try
        {
            JsonElement Run(string tune, string name)
            {
                var json = Path.Combine(dir, name);
                var (code, text) = CliTests.RunCli("bench", "step", "--task", "itc", "--device", "cuda", "--config", BenchTestUtil.Nano,
                    "--batch", "2", "--warmup", "1", "--steps", "1", "--profile-steps", "0", "--precision", "tf32", "--tune", tune, "--json", json);
                Assert.That(code, Is.Zero, text);
                if (tune == "on") Assert.That(text, Does.Contain("tuning      on: "));
                return JsonDocument.Parse(File.ReadAllText(json)).RootElement;
            }
            var off = Run("off", "off.json");
            var on = Run("on", "on.json");
            KernelTuner.Forget(CudaRuntime.Get(0).Accelerator);   // as a new process: choices come from the file
            var again = Run("on", "again.json");
            Assert.That(on.GetProperty("loss").GetDouble(), Is.EqualTo(off.GetProperty("loss").GetDouble()), "tuning changes no bit of the loss");
            Assert.That(again.GetProperty("loss").GetDouble(), Is.EqualTo(off.GetProperty("loss").GetDouble()));
            Assert.That(off.GetProperty("tuning").GetProperty("mode").GetString(), Is.EqualTo("off"));
            var t = on.GetProperty("tuning");
            Assert.That(t.GetProperty("tuned_in_warmup").GetInt64(), Is.GreaterThan(10), "every GEMM and conv shape of the step");
            Assert.That(t.GetProperty("tuned_while_measuring").GetInt64(), Is.Zero);
            Assert.That(t.GetProperty("entries").GetInt32(), Is.EqualTo(t.GetProperty("tuned_in_warmup").GetInt64()));
            Assert.That(t.GetProperty("cache_file").GetString(), Is.EqualTo(KernelTuner.CacheFile));
            Assert.That(on.GetProperty("host_syncs_per_step").GetDouble(), Is.Zero, "the measured step waits for nothing");
            Assert.That(on.GetProperty("kernel_launches_per_step").GetDouble(), Is.EqualTo(off.GetProperty("kernel_launches_per_step").GetDouble()));
            Assert.That(again.GetProperty("tuning").GetProperty("tuned_in_warmup").GetInt64(), Is.Zero, "the second run reads every choice back");
        }
        finally
        {
            KernelTuner.CacheFile = saved;
            KernelTuner.Forget(CudaRuntime.Get(0).Accelerator);
            Directory.Delete(dir, true);
        }
    }

    [TestCase("mlm")]
    [TestCase("mlm", true)]   // --mlm-head-rows all: the head on every text row, the loss still counted on the host
    [TestCase("pac")]   // the soft-label loss keeps its row mask and count on the device
    [TestCase("itm")]   // hard negatives are mined on the device
    public void StepAfterWarmUpNeitherAllocatesNorWaits(string task, bool allMlmRows = false)
    {
        var cfg = FvConfig.Load(BenchTestUtil.Nano);
        var mc = PretrainSetup.ModelConfig(cfg);
        mc = mc with { Bert = mc.Bert with { VocabSize = 512 } };   // the 30,522-way head is minutes on the emulator
        using var runner = new StepRunner(mc, null, task, 2, 16, Gpu, seed: 3, mlmHeadRows: allMlmRows ? MlmHeadRows.All : MlmHeadRows.Labelled);
        var rt = CudaRuntime.Get(0);
        var backend = Backends.Get(Gpu);
        runner.Step();
        runner.Step();
        backend.Synchronize();
        var c0 = rt.Counters;
        var m0 = backend.Allocator.Stats;
        runner.Step();
        var d = rt.Counters - c0;
        var m1 = backend.Allocator.Stats;
        Assert.That(d.KernelLaunches, Is.GreaterThan(100));
        Assert.That(d.DriverAllocations, Is.Zero, "device allocations in the step");
        Assert.That(m1.Allocations - m0.Allocations, Is.EqualTo(m1.CacheHits - m0.CacheHits), "every request served by the cache");
        Assert.That(d.HostSyncs, Is.Zero, "host waits in the step");
        Assert.That(d.DeviceToHostReads, Is.Zero, "device→host reads in the step");
        Assert.That(double.IsFinite(runner.LastLoss), Is.True);
        Assert.That((rt.Counters - c0).DeviceToHostReads, Is.EqualTo(1), "reading the loss afterwards is one counted read");
    }

    [TestCase(DType.Int64, 0), TestCase(DType.Int64, 1), TestCase(DType.Int32, 0), TestCase(DType.Float32, 1)]
    public void IndexSelectMovesFourAndEightByteDataBitForBit(DType dtype, int dim)
    {
        // ITM re-pairs the int64 token ids of a batch on the device with index_select.
        var values = Enumerable.Range(0, 5 * 7).Select(i => (long)i * 1_000_003 - 17_000_000_000L * (i % 3)).ToArray();
        using var host64 = Tensor.FromArray(values, [5, 7]);
        using var host = host64.To(dtype);
        using var idx = Tensor.FromArray(new long[] { 3, 0, 3, 4 }, [4]);
        using var want = host.IndexSelect(dim, idx);
        using var dev = host.To(Gpu);
        using var di = idx.To(Gpu);
        using var got = dev.IndexSelect(dim, di);
        Assert.That(got.Sizes.ToArray(), Is.EqualTo(want.Sizes.ToArray()));
        using var back = got.To(Device.Cpu);
        using var b64 = back.To(DType.Float64);
        using var w64 = want.To(DType.Float64);
        if (dtype == DType.Int64) Assert.That(back.ToArray<long>(), Is.EqualTo(want.ToArray<long>()));
        else Assert.That(b64.ToArray<double>(), Is.EqualTo(w64.ToArray<double>()));
    }

    [Test]
    public void SmallUploadsGoThroughTheStagingRingWithoutWaitingAndArriveIntact()
    {
        var rt = CudaRuntime.Get(0);
        Backends.Get(Gpu).Synchronize();
        // 300 uploads of 16 KiB = 4.7 MiB: more than the 4 MiB staging buffer, so the ring wraps twice.
        var hosts = Enumerable.Range(0, 300).Select(i => Enumerable.Range(0, 4096).Select(j => (float)(i * 10000 + j)).ToArray()).ToList();
        var c0 = rt.Counters;
        var devs = new List<Tensor>();
        for (int i = 0; i < 3; i++) devs.Add(Tensor.FromArray(hosts[i], [4096], Gpu));
        Assert.That((rt.Counters - c0).HostSyncs, Is.Zero, "small uploads after a synchronisation do not wait");
        for (int i = 3; i < hosts.Count; i++) devs.Add(Tensor.FromArray(hosts[i], [4096], Gpu));
        var waits = (rt.Counters - c0).HostSyncs;
        Assert.That(waits, Is.LessThanOrEqualTo(2), "at most one wait per half-buffer wrap");
        // A large upload then small ones: the small ones wait for the large copy only once.
        var big = Enumerable.Range(0, 700_000).Select(j => (float)j).ToArray();   // 2.8 MB > half the buffer
        using var bigDev = Tensor.FromArray(big, [big.Length], Gpu);
        using var after = Tensor.FromArray(hosts[0], [4096], Gpu);
        for (int i = 0; i < hosts.Count; i++)
            Assert.That(devs[i].ToArray<float>(), Is.EqualTo(hosts[i]), $"upload {i}");
        Assert.That(bigDev.ToArray<float>(), Is.EqualTo(big));
        Assert.That(after.ToArray<float>(), Is.EqualTo(hosts[0]));
        foreach (var t in devs) t.Dispose();
    }
}
