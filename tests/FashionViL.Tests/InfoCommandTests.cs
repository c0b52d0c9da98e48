using FashionViL.Kernels.Cuda;

namespace FashionViL.Tests;

/// <summary>`fashionvil info` on the CUDA emulator: the device line and the kernel tuner's mode and cache.</summary>
[TestFixture, Category("Cuda"), NonParallelizable]
public class InfoCommandTests
{
    [OneTimeSetUp]
    public void EnableEmulator() =>
        CudaRuntime.EmulatorEnabled = !string.Equals(Environment.GetEnvironmentVariable("FASHIONVIL_TEST_CUDA"), "gpu", StringComparison.OrdinalIgnoreCase);

    /// <summary>The kernel A/B switches in effect are listed, the rule's picks by default.</summary>
    [Test]
    public void InfoListsTheKernelSwitches()
    {
        try
        {
            CudaBackend.SgemmOverride = null; CudaBackend.GemmTileOverride = null; ConvKernels.ConvTileOverride = null;
            var (code, text) = CliTests.RunCli("info");
            Assert.That(code, Is.Zero, text);
            Assert.That(text, Does.Contain("fp32 SGEMM Reg128x8Layout (rule; FVL_SGEMM)").And.Contain("tensor-core GEMM tile rule (FVL_TC_TILE)")
                .And.Contain("conv tile rule (FVL_TC_CONV_TILE)").And.Contain("(FVL_ATTENTION)").And.Contain("Winograd 3×3 off (FVL_WINOGRAD)").And.Contain("tf32 weight gradients rule (FVL_TF32_WGRAD)").And.Contain("1×1 convolutions direct (FVL_CONV1X1)").And.Contain("128×128 stages register prefetch (FVL_TC_ASYNC)").And.Contain("128×128 conv forward staging vec (FVL_TC_CONV_FWD)").And.Contain("(FVL_PREROUND)"));
            CudaBackend.SgemmOverride = GemmVersion.Reg128x8Layout;
            CudaBackend.GemmTileOverride = TensorCoreTile.Tile128x128;
            ConvKernels.ConvTileOverride = TensorCoreTile.Tile64x32;
            (code, text) = CliTests.RunCli("info");
            Assert.That(text, Does.Contain("fp32 SGEMM Reg128x8Layout (FVL_SGEMM)").And.Contain("tensor-core GEMM tile Tile128x128 (FVL_TC_TILE)")
                .And.Contain("conv tile Tile64x32 (FVL_TC_CONV_TILE)"));
        }
        finally { CudaBackend.SgemmOverride = null; CudaBackend.GemmTileOverride = null; ConvKernels.ConvTileOverride = null; }
    }

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
