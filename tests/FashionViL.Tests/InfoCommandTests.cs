using FashionViL.Kernels.Cuda;

namespace FashionViL.Tests;

/// <summary>`fashionvil info` on the CUDA emulator: the device line and the kernel tuner's mode and cache.</summary>
[TestFixture, Category("Cuda"), NonParallelizable]
public class InfoCommandTests
{
    [OneTimeSetUp]
    public void EnableEmulator() =>
        CudaRuntime.EmulatorEnabled = !string.Equals(Environment.GetEnvironmentVariable("FASHIONVIL_TEST_CUDA"), "gpu", StringComparison.OrdinalIgnoreCase);

    [Test]
    public void InfoNamesTheDeviceAndTheTuningCache()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"fvl-info-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        var acc = CudaRuntime.Get(0).Accelerator;
        try
        {
            KernelTuner.CacheFile = Path.Combine(dir, "tune.json");
            KernelTuner.Forget(acc);
            var (code, text) = CliTests.RunCli("info");
            Assert.That(code, Is.Zero, text);
            Assert.That(text, Does.Contain($"cuda:0   : {acc.Name}").And.Contain($"{acc.NumMultiprocessors} multiprocessors"));
            Assert.That(text, Does.Contain($"cache {KernelTuner.CacheFile}: none yet"));
            File.WriteAllText(KernelTuner.CacheFile, "{ broken");
            KernelTuner.Forget(acc);
            (code, text) = CliTests.RunCli("info");
            Assert.That(code, Is.Zero, "a bad cache file is reported, not fatal, in info");
            Assert.That(text, Does.Contain($"kernel tuning cache {KernelTuner.CacheFile}: not valid JSON"));
            File.WriteAllText(KernelTuner.CacheFile, new System.Text.Json.Nodes.JsonObject
            {
                ["format"] = KernelTuner.Format, ["device"] = KernelTuner.DeviceId(acc),
                ["entries"] = new System.Text.Json.Nodes.JsonObject
                {
                    ["a"] = new System.Text.Json.Nodes.JsonObject { ["choice"] = "Tile64x32" },
                    ["b"] = new System.Text.Json.Nodes.JsonObject { ["choice"] = "Tile128x64" },
                },
            }.ToJsonString());
            KernelTuner.Forget(acc);
            (code, text) = CliTests.RunCli("info");
            Assert.That(text, Does.Contain($"cache {KernelTuner.CacheFile}: 2 choices"));
        }
        finally
        {
            KernelTuner.CacheFile = null;
            KernelTuner.Forget(acc);
            Directory.Delete(dir, true);
        }
    }
}
