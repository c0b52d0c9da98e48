using System.Security.Cryptography;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// What the bit-for-bit regression tests share: the digest of a float buffer, the path of a digest file under
/// tests/fixtures, and CPU accelerators with a given group size on one context (warps of 2, or of 32 from 128 threads up),
/// created on first use and disposed together.
/// </summary>
internal sealed class DigestFixtures(Context ctx, Accelerator twoThreads) : IDisposable
{
    private readonly Dictionary<int, Accelerator> _byGroup = [];

    /// <summary>The first 24 hex digits of the SHA-256 of the first <paramref name="n"/> floats' bytes.</summary>
    public static string Hash(float[] a, long n)
    {
        var bytes = new byte[n * 4];
        Buffer.BlockCopy(a, 0, bytes, 0, bytes.Length);
        return Convert.ToHexString(SHA256.HashData(bytes))[..24];
    }

    /// <summary>tests/fixtures/<paramref name="folder"/>/digests.txt, found above the test's directory.</summary>
    public static string FixturePath(string folder)
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
            if (Directory.Exists(Path.Combine(d.FullName, "tests", "fixtures")))
                return Path.Combine(d.FullName, "tests", "fixtures", folder, "digests.txt");
        throw new DirectoryNotFoundException($"tests/fixtures not found above {TestContext.CurrentContext.TestDirectory}");
    }

    /// <summary>A CPU accelerator whose largest group is <paramref name="threads"/> (2: the fixture's own).</summary>
    public Accelerator WithGroup(int threads)
    {
        if (threads == 2) return twoThreads;
        if (!_byGroup.TryGetValue(threads, out var acc))
        {
            int warp = threads >= 128 ? 32 : 2;
            acc = new CPUDevice(warp, threads / warp, 1).CreateCPUAccelerator(ctx, CPUAcceleratorMode.Parallel);
            _byGroup[threads] = acc;
        }
        return acc;
    }

    public void Dispose()
    {
        foreach (var a in _byGroup.Values) a.Dispose();
        _byGroup.Clear();
    }
}
