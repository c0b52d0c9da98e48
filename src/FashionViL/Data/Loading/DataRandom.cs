namespace FashionViL.Data.Loading;

/// <summary>
/// A small deterministic random stream (xoshiro256** seeded through SplitMix64) for data augmentation and sampling.
/// <see cref="ForSample"/> derives an independent stream from (seed, epoch, sample index), so a sample's augmentation does
/// not depend on which worker thread builds it or in what order.
/// </summary>
public sealed class DataRandom
{
    ulong _s0, _s1, _s2, _s3;

    public DataRandom(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix(ref x); _s1 = SplitMix(ref x); _s2 = SplitMix(ref x); _s3 = SplitMix(ref x);
    }

    /// <summary>The stream for one sample of one epoch (and an optional purpose tag, e.g. 0 = image, 1 = text).</summary>
    public static DataRandom ForSample(long seed, long epoch, long index, long stream = 0)
    {
        ulong h = (ulong)seed;
        h = Mix(h ^ Mix((ulong)epoch + 0x9E3779B97F4A7C15UL));
        h = Mix(h ^ Mix((ulong)index + 0xD1B54A32D192ED03UL));
        h = Mix(h ^ Mix((ulong)stream + 0x8CB92BA72F3D8DD7UL));
        return new DataRandom(h);
    }

    static ulong SplitMix(ref ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        return Mix(x);
    }

    static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3; _s2 ^= t; _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [lo, hi).</summary>
    public double Uniform(double lo, double hi) => lo + (hi - lo) * NextDouble();

    /// <summary>Uniform integer in [lo, hi] (both inclusive), unbiased (rejection sampling).</summary>
    public long NextInclusive(long lo, long hi)
    {
        if (hi < lo) throw new ArgumentOutOfRangeException(nameof(hi), $"empty range [{lo}, {hi}]");
        ulong range = (ulong)(hi - lo) + 1;
        if (range == 0) return (long)NextUInt64();
        ulong limit = ulong.MaxValue - ulong.MaxValue % range;
        ulong r;
        do r = NextUInt64(); while (r >= limit);
        return lo + (long)(r % range);
    }

    /// <summary>Uniform integer in [0, n).</summary>
    public int NextInt(int n) => (int)NextInclusive(0, n - 1);

    /// <summary>True with probability <paramref name="p"/>.</summary>
    public bool Bernoulli(double p) => NextDouble() < p;

    /// <summary>A uniformly random permutation of 0..n-1 (Fisher–Yates).</summary>
    public int[] Permutation(int n)
    {
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--)
        {
            int j = (int)NextInclusive(0, i);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }
}
