using System.Text.Json;
using FashionViL.Bench;
using FashionViL.Kernels.Cuda;

namespace FashionViL.Tests.Bench;

/// <summary>
/// `fashionvil bench ptx`: every kernel the six training steps load (run once each on the CUDA emulator) plus every GEMM and
/// conv variant, compiled for sm_90 offline. With ptxas (FVL_PTXAS, which .ci/run sets after fetching Debian's CUDA 12.4
/// ptxas (11.8 as a fallback), or a CUDA toolkit on PATH) each is also assembled and its registers, stack and spills checked.
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable]
public class PtxAuditTests
{
    private PtxAuditResult _r = null!;
    private JsonElement _json;
    private string _text = "";
    private int _code;

    [OneTimeSetUp]
    public void RunTheAuditOnce()
    {
        CudaRuntime.EmulatorEnabled = !string.Equals(Environment.GetEnvironmentVariable("FASHIONVIL_TEST_CUDA"), "gpu", StringComparison.OrdinalIgnoreCase);
        var json = BenchTestUtil.TempFile("ptx.json");
        (_code, _text) = CliTests.RunCli("bench", "ptx", "--config", BenchTestUtil.Repo("configs/nano.yaml"), "--json", json);
        Assert.That(File.Exists(json), _text);
        _json = JsonDocument.Parse(File.ReadAllText(json)).RootElement.Clone();
        Directory.Delete(Path.GetDirectoryName(json)!, true);
        static int? I(JsonElement e, string p) => e.GetProperty(p).ValueKind == JsonValueKind.Null ? null : e.GetProperty(p).GetInt32();
        var kernels = _json.GetProperty("kernels").EnumerateArray().Select(k =>
            new KernelReport(k.GetProperty("name").GetString()!, k.GetProperty("ptx_lines").GetInt32(), k.GetProperty("ptx_local_bytes").GetInt32())
            {
                Error = k.GetProperty("error").GetString(), Registers = I(k, "registers"), SharedBytes = I(k, "shared_bytes"),
                StackBytes = I(k, "stack_bytes"), SpillStoreBytes = I(k, "spill_store_bytes"), SpillLoadBytes = I(k, "spill_load_bytes"),
                Sass = I(k, "sass"), SassFfma = I(k, "sass_ffma"), SassHmma = I(k, "sass_hmma"), SassShared = I(k, "sass_shared"), SassLocal = I(k, "sass_local"),
                SassNote = k.GetProperty("sass_note").GetString(),
            }).ToList();
        _r = new PtxAuditResult(_json.GetProperty("target").GetString()!, _json.GetProperty("ptxas").GetString(), _json.GetProperty("ptxas_release").GetString(), kernels);
    }

    private IEnumerable<string> Names => _r.Kernels.Select(k => k.Name);

    [Test]
    public void EveryStepKernelIsFoundAndCompilesForSm90()
    {
        Assert.That(_code, Is.Zero, _text);
        Assert.That(_r.Kernels, Has.Count.GreaterThanOrEqualTo(60), "a ResNet + BERT step with AdamW loads dozens of kernels");
        // one kernel from each family the steps need: found by running the steps, not listed by hand
        Assert.That(Names, Does.Contain("AttentionKernels.ForwardKernel").And.Contain("AttentionKernels.BackwardKVKernel")
            .And.Contain("OptimKernels.AdamWManyKernel").And.Contain("NormKernels.BatchNormBackwardKernel")
            .And.Contain("RowKernels.CrossEntropyForwardHardKernel").And.Contain("IndexKernels.VqLookupKernel")
            .And.Contain("ConvKernels.MaxPoolForwardKernel").And.Contain("ElementwiseKernels.Map<Single,Single,UnaryOps.Gelu>"));
        // and the variants chosen by shape or precision
        Assert.That(Names, Does.Contain("TensorCoreGemm.Kernel").And.Contain("TensorCoreGemm.Kernel128").And.Contain("ConvKernels.ConvGemmTcKernel")
            .And.Contain("GemmKernels.Reg128PrefetchKernel").And.Contain("ConvKernels.ConvGemm128Kernel"));
        Assert.That(_r.Failed, Is.Empty, string.Join("\n", _r.Failed.Select(k => $"{k.Name}: {k.Error}")));
        Assert.That(_json.GetProperty("clean").GetBoolean(), Is.True);
        Assert.That(_text, Does.Contain($"{_r.Kernels.Count} kernels: 0 failed, 0 with unexpected local memory"));
    }

    /// <summary>Local memory (a stack array, a by-ref asm operand, a spill) is slow on a GPU and never intended here.</summary>
    [Test]
    public void NoStepKernelDeclaresLocalMemoryInItsPtx()
    {
        var bad = _r.Kernels.Where(k => k.PtxLocalBytes > 0 && !KernelAudit.AcceptedLocalMemory.ContainsKey(k.Name)).ToList();
        Assert.That(bad, Is.Empty, string.Join("\n", bad.Select(k => $"{k.Name}: {k.PtxLocalBytes} B of .local")));
        Assert.That(_r.Kernels.Single(k => k.Name == "TensorCoreGemm.Kernel").PtxLocalBytes, Is.Zero);
        Assert.That(_r.Kernels.Single(k => k.Name == "TensorCoreGemm.Kernel128").PtxLocalBytes, Is.Zero);
    }

    [Test]
    public void WithPtxasEveryKernelAssemblesWithoutSpillsAndTheTensorCoreKernelsUseHmma()
    {
        if (_r.Ptxas is null)
        {
            if (Environment.GetEnvironmentVariable("FVL_REQUIRE_PTXAS") == "1")
                Assert.Fail("FVL_REQUIRE_PTXAS=1 but no ptxas was found (FVL_PTXAS, PATH, /usr/local/cuda/bin)");
            Assert.Ignore("no ptxas on this machine (.ci/run fetches one): assembly checks not run");
        }
        Assert.That(_r.Kernels.Where(k => k.Registers is null), Is.Empty, "every kernel was assembled");
        if (File.Exists(Path.Combine(Path.GetDirectoryName(_r.Ptxas)!, "cuobjdump")))
            Assert.That(_r.Kernels.Where(k => k.Sass is null).Select(k => $"{k.Name}: {k.SassNote}"), Is.Empty, "cuobjdump beside ptxas: every kernel's SASS is counted");
        var local = _r.UnexpectedLocalMemory;
        Assert.That(local, Is.Empty, string.Join("\n", local.Select(k => $"{k.Name}: stack {k.StackBytes}, spills {k.SpillStoreBytes}+{k.SpillLoadBytes}, LDL/STL {k.SassLocal}")));
        var gemm = _r.Kernels.Single(k => k.Name == "GemmKernels.Reg128PrefetchKernel");
        Assert.That(gemm.Registers, Is.LessThanOrEqualTo(128), "launch bounds (256, 2): two groups of 256 threads per SM");
        if (gemm.Sass is not null)
        {
            // the wired SGEMM's K tile: its 8 k steps unrolled into the K-tile loop (8 × 64 FFMA from 32 LDS.128, nothing between
            // them but the next tile's loads and stores); the static count includes every loader branch (transposed or not,
            // 128-bit or scalar), so the share is below the dynamic one (56 % static when this was written, ptxas 11.8)
            var loop = _json.GetProperty("kernels").EnumerateArray().Single(k => k.GetProperty("name").GetString() == gemm.Name).GetProperty("hot_loop");
            Assert.That(loop.GetProperty("ffma").GetInt32(), Is.EqualTo(512), "the hot loop holds a whole K tile: 8 unrolled 8×8 micro-tile steps");
            Assert.That(loop.GetProperty("shared_loads").GetInt32(), Is.EqualTo(32), "four LDS.128 per k step, nothing reloaded");
            Assert.That(loop.GetProperty("math_share").GetDouble(), Is.GreaterThanOrEqualTo(0.53), "FFMA share of the SGEMM's K-tile loop (static)");
        }
        foreach (var tc in new[] { "TensorCoreGemm.Kernel", "TensorCoreGemm.Kernel128", "ConvKernels.ConvGemmTcKernel", "ConvKernels.ConvGemmTc128Kernel" })
        {
            var k = _r.Kernels.Single(x => x.Name == tc);
            Assert.That(k.StackBytes, Is.Zero, tc);
            if (k.Sass is not null) Assert.That(k.SassHmma, Is.GreaterThanOrEqualTo(8), $"{tc}: mma.sync became HMMA");
        }
        // the 128×64 tile: launch bounds (256, 2) keep it at ≤ 128 registers (two groups per SM), its 32 accumulators
        // and 12 prefetched operands per lane without spills, in ≤ 48 KB of static shared memory
        var tc128 = _r.Kernels.Single(k => k.Name == "TensorCoreGemm.Kernel128");
        Assert.That(tc128.Registers, Is.LessThanOrEqualTo(128), "TensorCoreGemm.Kernel128 registers");
        Assert.That(tc128.SharedBytes, Is.GreaterThan(0).And.LessThanOrEqualTo(48 * 1024), "TensorCoreGemm.Kernel128 static shared memory (the portable path's tile is dynamic, never requested on CUDA)");
        if (tc128.Sass is not null) Assert.That(tc128.SassHmma, Is.EqualTo(24), "TensorCoreGemm.Kernel128: 2 × 8 TF32 HMMA (both k8 steps unrolled) + 8 bf16");
        // the 128×128 tile, one kernel per operand layout: (256, 2) without spills, and a stage loop of 32 HMMA with at most 8
        // instructions per HMMA (≈ 235 with both operands' roundings when this was written, ptxas 11.8; the 128×64 tile's
        // K loop holds 1,345 for 24 HMMA of both precisions)
        // (production instantiations only: bench dissect's parts, TcNoCopy / TcNoMath, are in the audit when a test of the
        // same process ran them)
        var tc3 = _r.Kernels.Where(k => k.Name.StartsWith("TensorCoreGemm.Kernel128x128<", StringComparison.Ordinal) && k.Name.EndsWith(",TcFull>", StringComparison.Ordinal)).ToList();
        Assert.That(tc3, Has.Count.EqualTo(4), "NN, NT, TN, TT");
        foreach (var k in tc3)
        {
            Assert.That(k.Registers, Is.LessThanOrEqualTo(128), k.Name);
            Assert.That(k.SharedBytes, Is.EqualTo(40 * 1024), k.Name);
            if (k.Sass is null) continue;
            Assert.That(k.SassHmma, Is.EqualTo(64), $"{k.Name}: 32 HMMA in the stage loop, 32 in the general loop");
            var loop = _json.GetProperty("kernels").EnumerateArray().Single(x => x.GetProperty("name").GetString() == k.Name).GetProperty("hot_loop");
            Assert.That(loop.GetProperty("hmma").GetInt32(), Is.EqualTo(32), $"{k.Name}: the stage loop");
            Assert.That(loop.GetProperty("instructions").GetInt32(), Is.LessThanOrEqualTo(8 * 32), $"{k.Name}: instructions per stage");
            Assert.That(loop.GetProperty("shared_loads").GetInt32(), Is.EqualTo(48), $"{k.Name}: 32 A + 16 B fragment words per stage");
        }
        // its asynchronous variant (FVL_TC_ASYNC=on): (256, 2) without spills and without static shared memory (its three
        // stages are the launch's 48 KB of dynamic shared memory), one stage loop of 32 HMMA whose operands arrive by cp.async
        // (LDGSTS: no global loads in the loop) with at most 12 instructions per HMMA counting both roundings' branches (≈ 330
        // with ptxas 12.4 when this was written; ≈ 150 run per stage when the caller rounded both operands)
        var tc4 = _r.Kernels.Where(k => k.Name.StartsWith("TensorCoreGemm.Kernel128x128Async<", StringComparison.Ordinal) && k.Name.EndsWith(",TcFull>", StringComparison.Ordinal)).ToList();
        Assert.That(tc4, Has.Count.EqualTo(4), "NN, NT, TN, TT");
        foreach (var k in tc4)
        {
            Assert.That(k.Registers, Is.LessThanOrEqualTo(128), k.Name);
            Assert.That(k.SharedBytes, Is.Zero, k.Name);
            Assert.That(k.UsesLocalMemory, Is.False, k.Name);
            if (k.Sass is null) continue;
            Assert.That(k.SassHmma, Is.EqualTo(32), $"{k.Name}: one stage loop");
            var loop = _json.GetProperty("kernels").EnumerateArray().Single(x => x.GetProperty("name").GetString() == k.Name).GetProperty("hot_loop");
            Assert.That(loop.GetProperty("hmma").GetInt32(), Is.EqualTo(32), $"{k.Name}: the stage loop");
            Assert.That(loop.GetProperty("global_loads").GetInt32(), Is.Zero, $"{k.Name}: operands by cp.async only");
            Assert.That(loop.GetProperty("instructions").GetInt32(), Is.LessThanOrEqualTo(12 * 32), $"{k.Name}: instructions per stage");
        }
        // bench dissect's mma.sync peak kernel: (256, 2), no local or shared memory, its loop nothing but the 16 HMMA and the
        // loop's own counter arithmetic
        var peak = _r.Kernels.Single(k => k.Name == "TensorCoreGemm.MmaPeakKernel");
        Assert.That(peak.Registers, Is.LessThanOrEqualTo(128));
        Assert.That(peak.SharedBytes, Is.Zero);
        Assert.That(peak.UsesLocalMemory, Is.False);
        if (peak.Sass is not null)
        {
            var loop = _json.GetProperty("kernels").EnumerateArray().Single(x => x.GetProperty("name").GetString() == peak.Name).GetProperty("hot_loop");
            int hmma = loop.GetProperty("hmma").GetInt32();   // ptxas may unroll the loop
            Assert.That(hmma, Is.Positive.And.Matches<int>(h => h % TensorCoreGemm.MmaPeakMmaPerIteration == 0), "whole iterations of 16 mma");
            Assert.That(loop.GetProperty("instructions").GetInt32(), Is.LessThanOrEqualTo(hmma + hmma / 2), "hardly anything but the mma in the loop");
        }
        // the fp32 SGEMM v6 (one kernel per layout, a bounds-free K-tile loop): ≥ 80 % FFMA in its stage loop (v5: 56 % static),
        // and its accepted spills stay out of that loop but for at most two stack reloads per K tile
        var v6 = _r.Kernels.Where(k => k.Name.StartsWith("GemmKernels.Reg128LayoutKernel", StringComparison.Ordinal)).ToList();
        Assert.That(v6, Has.Count.EqualTo(4), "NN, NT, TN, TT");
        foreach (var k in v6)
        {
            Assert.That(k.Registers, Is.LessThanOrEqualTo(128), k.Name);
            if (k.Sass is null) continue;
            var loop = _json.GetProperty("kernels").EnumerateArray().Single(x => x.GetProperty("name").GetString() == k.Name).GetProperty("hot_loop");
            Assert.That(loop.GetProperty("ffma").GetInt32(), Is.EqualTo(512), $"{k.Name}: a whole K tile of the 8×8 micro-tile");
            Assert.That(loop.GetProperty("math_share").GetDouble(), Is.GreaterThanOrEqualTo(0.80), $"{k.Name}: FFMA share of the stage loop");
            Assert.That(loop.GetProperty("local_accesses").GetInt32(), Is.LessThanOrEqualTo(2), $"{k.Name}: spill traffic in the stage loop");
            Assert.That(loop.GetProperty("global_loads").GetInt32(), Is.EqualTo(2), $"{k.Name}: one 128-bit load of A and one of B per K tile");
        }

        // the 128×128 conv tile (TF32), its table path and its forward path: the same warp layout within (256, 2) and 48 KB;
        // the forward path's stage loop loads the weight as float4 and stores both operands as 128-bit words (session 22:
        // 520 instructions, 18 global loads, 8 shared stores against 1,404, 32, 32 on the table path, ptxas 12.4)
        var conv3s = _r.Kernels.Where(k => k.Name.StartsWith("ConvKernels.ConvGemmTc3Kernel<", StringComparison.Ordinal) && k.Name.EndsWith(",TcFull>", StringComparison.Ordinal)).ToList();
        Assert.That(conv3s.Select(k => k.Name), Is.EquivalentTo(new[] { "ConvKernels.ConvGemmTc3Kernel<ConvTc3AnyMode,TcFull>", "ConvKernels.ConvGemmTc3Kernel<ConvTc3Forward,TcFull>" }));
        foreach (var conv3 in conv3s)
        {
            Assert.That(conv3.Registers, Is.LessThanOrEqualTo(128), conv3.Name);
            Assert.That(conv3.SharedBytes, Is.GreaterThan(40 * 1024).And.LessThanOrEqualTo(48 * 1024), conv3.Name);
            Assert.That(conv3.UsesLocalMemory, Is.False, conv3.Name);
            if (conv3.Sass is not null) Assert.That(conv3.SassHmma, Is.EqualTo(32), $"{conv3.Name}: 4 m16 × 4 n8 × 2 k8 TF32 HMMA per stage");
        }
        if (conv3s.All(k => k.Sass is not null))
        {
            JsonElement Loop(string name) => _json.GetProperty("kernels").EnumerateArray().Single(x => x.GetProperty("name").GetString() == name).GetProperty("hot_loop");
            var fwd = Loop("ConvKernels.ConvGemmTc3Kernel<ConvTc3Forward,TcFull>");
            var table = Loop("ConvKernels.ConvGemmTc3Kernel<ConvTc3AnyMode,TcFull>");
            Assert.That(fwd.GetProperty("shared_stores").GetInt32(), Is.LessThanOrEqualTo(8), "forward path: 128-bit stage stores");
            Assert.That(fwd.GetProperty("global_loads").GetInt32(), Is.LessThan(table.GetProperty("global_loads").GetInt32()), "forward path: float4 weight loads");
            Assert.That(fwd.GetProperty("instructions").GetInt32(), Is.LessThan(table.GetProperty("instructions").GetInt32() / 2), "forward path: the stage loop");
        }
        // the conv tiles' double-buffered stages (convtcpf): the 128×64 tile within the launch bounds (256, 2) with its 32
        // accumulators and 12 prefetched operands, both tiles within the 48 KB of static shared memory, one HMMA per mma.sync
        var conv128 = _r.Kernels.Single(k => k.Name == "ConvKernels.ConvGemmTc128Kernel");
        Assert.That(conv128.Registers, Is.LessThanOrEqualTo(128), "ConvKernels.ConvGemmTc128Kernel registers");
        foreach (var (name, hmma) in new[] { ("ConvKernels.ConvGemmTc128Kernel", 24), ("ConvKernels.ConvGemmTcKernel", 12) })
        {
            var k = _r.Kernels.Single(x => x.Name == name);
            Assert.That(k.SharedBytes, Is.GreaterThan(0).And.LessThanOrEqualTo(48 * 1024), $"{name} static shared memory");
            if (k.Sass is not null) Assert.That(k.SassHmma, Is.EqualTo(hmma), $"{name}: HMMA (TF32 two k8 steps unrolled, bf16 one k16 step)");
        }
    }

    [Test]
    public void AMissingOutFolderIsNamed()
    {
        var (code, text) = CliTests.RunCli("bench", "ptx", "--out", "/nonexistent/ptx-out");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain("--out").And.Contain("/nonexistent/ptx-out"));
    }

    [Test]
    public void AMissingConfigIsNamed()
    {
        var (code, text) = CliTests.RunCli("bench", "ptx", "--config", "/nonexistent/nano.yaml");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(text, Does.Contain("/nonexistent/nano.yaml"));
    }
}
