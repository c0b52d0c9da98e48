using System.Runtime.CompilerServices;

namespace FashionViL.Tensors;

/// <summary>
/// Philox4x32-10 (Salmon et al., SC'11): a counter-based generator. Value i of a draw depends only on
/// (seed, offset, i), so the CPU backend with any number of threads and the GPU backend produce the same
/// stream. Layout: element i uses counter (offset + i/4) and word i%4. Normal draws pair words (0,1) and
/// (2,3) of a counter with Box–Muller. A draw of n elements advances the generator offset by ⌈n/4⌉.
/// Written with plain integer maths so the same code compiles into ILGPU kernels.
/// </summary>
public static class Philox
{
    private const uint M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Block(ulong seed, ulong counter, out uint r0, out uint r1, out uint r2, out uint r3)
        => Block(seed, counter, 0, out r0, out r1, out r2, out r3);

    /// <summary>The full 128-bit counter form: words (c0, c1, c2, c3) = (lo, lo &gt;&gt; 32, hi, hi &gt;&gt; 32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Block(ulong seed, ulong counterLo, ulong counterHi, out uint r0, out uint r1, out uint r2, out uint r3)
    {
        uint c0 = (uint)counterLo, c1 = (uint)(counterLo >> 32), c2 = (uint)counterHi, c3 = (uint)(counterHi >> 32);
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        for (int round = 0; round < 10; round++)
        {
            ulong p0 = (ulong)M0 * c0, p1 = (ulong)M1 * c2;
            uint n0 = (uint)(p1 >> 32) ^ c1 ^ k0;
            uint n2 = (uint)(p0 >> 32) ^ c3 ^ k1;
            c1 = (uint)p1; c3 = (uint)p0; c0 = n0; c2 = n2;
            // after the swap: (c0, c1, c2, c3) = (hi1^c1^k0, lo1, hi0^c3^k1, lo0)
            k0 += W0; k1 += W1;
        }
        r0 = c0; r1 = c1; r2 = c2; r3 = c3;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Word(ulong seed, ulong offset, long i)
    {
        Block(seed, offset + (ulong)(i >> 2), out var a, out var b, out var c, out var d);
        return (i & 3) switch { 0 => a, 1 => b, 2 => c, _ => d };
    }

    /// <summary>Uniform on [0, 1) with 24 bits (exactly representable in float32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Uniform(ulong seed, ulong offset, long i) => (Word(seed, offset, i) >> 8) * (1.0f / 16777216f);

    /// <summary>Standard normal via Box–Muller on the word pair holding element i.</summary>
    public static double Normal(ulong seed, ulong offset, long i)
    {
        Block(seed, offset + (ulong)(i >> 2), out var a, out var b, out var c, out var d);
        bool second = (i & 2) != 0;
        uint w0 = second ? c : a, w1 = second ? d : b;
        double u1 = ((w0 >> 8) + 1.0) * (1.0 / 16777217.0); // (0, 1]: log is finite
        double u2 = (w1 >> 8) * (1.0 / 16777216.0);
        double r = Math.Sqrt(-2.0 * Math.Log(u1));
        double th = 2.0 * Math.PI * u2;
        return (i & 1) == 0 ? r * Math.Cos(th) : r * Math.Sin(th);
    }

    /// <summary>Counters consumed by a draw of <paramref name="n"/> elements.</summary>
    public static ulong Counters(long n) => (ulong)((n + 3) / 4);
}

/// <summary>
/// A seeded stream: each draw reserves a range of Philox counters and advances the offset, so a run
/// restarted from (seed, offset) continues exactly. <see cref="Default"/> is the process-wide generator.
/// </summary>
public sealed class Generator
{
    private long _offset;
    public Generator(ulong seed = 42) { Seed = seed; }

    public static Generator Default { get; } = new(42);

    public ulong Seed { get; private set; }
    public ulong Offset => (ulong)Interlocked.Read(ref _offset);

    public void ManualSeed(ulong seed) { Seed = seed; Interlocked.Exchange(ref _offset, 0); }

    /// <summary>Restores a saved (seed, offset) state.</summary>
    public void SetState(ulong seed, ulong offset) { Seed = seed; Interlocked.Exchange(ref _offset, (long)offset); }

    /// <summary>Reserves counters for <paramref name="n"/> elements; returns the offset to draw them at.</summary>
    public ulong Reserve(long n) => (ulong)(Interlocked.Add(ref _offset, (long)Philox.Counters(n)) - (long)Philox.Counters(n));

    // ---- convenience constructors (not differentiable; results are leaves)
    public Tensor Uniform(int[] shape, double low = 0, double high = 1, DType dtype = DType.Float32, Device device = default)
        => Draw(RandomKind.Uniform, shape, low, high, dtype, device);
    public Tensor Normal(int[] shape, double mean = 0, double std = 1, DType dtype = DType.Float32, Device device = default)
        => Draw(RandomKind.Normal, shape, mean, std, dtype, device);
    public Tensor Bernoulli(int[] shape, double p, DType dtype = DType.Float32, Device device = default)
        => Draw(RandomKind.Bernoulli, shape, p, 0, dtype, device);
    public Tensor RandInt(int[] shape, long low, long high, DType dtype = DType.Int64, Device device = default)
    {
        if (high <= low) throw new ArgumentException($"randint: high ({high}) must be greater than low ({low})");
        return Draw(RandomKind.RandInt, shape, low, high, dtype, device);
    }

    public Tensor RandPerm(int n, Device device = default)
    {
        var t = Tensor.Empty([n], DType.Int64, device);
        Backends.Get(device).RandPerm(t, Seed, Reserve(n));
        return t;
    }

    private Tensor Draw(RandomKind kind, int[] shape, double a, double b, DType dtype, Device device)
    {
        var t = Tensor.Empty(shape, dtype, device);
        Backends.Get(device).Random(kind, t, Seed, Reserve(t.Numel), a, b);
        return t;
    }
}
