namespace FashionViL.Data;

/// <summary>
/// A <see cref="Random"/> whose stream is a pure function of (seed, stream id): draw k reads Philox4x32-10 at
/// counter (k / 2, stream). A data loader gives every sample its own stream (see <see cref="ForSample"/>), so the
/// masks and augmentations of sample i are the same whichever thread prepares it and in whatever order.
/// Not thread-safe: one instance per sample and purpose.
/// </summary>
public sealed class PhiloxRandom : Random
{
    private readonly ulong _seed, _stream;
    private ulong _counter;      // next Philox block
    private uint _w2, _w3;       // the unused half of the last block
    private bool _haveSpare;

    public PhiloxRandom(ulong seed, ulong stream) { _seed = seed; _stream = stream; }

    /// <summary>Stream purposes used by the data pipeline; each sample gets an independent stream per purpose.</summary>
    public enum Purpose : ushort { TextMask = 1, ImageMask = 2, ImageAugment = 3, ViewChoice = 4 }

    /// <summary>
    /// The stream for one sample and purpose: counter high word = (purpose &lt;&lt; 48) | sampleIndex. The loader
    /// should fold the epoch into <paramref name="seed"/> (or into the sample index) so epochs differ.
    /// </summary>
    public static PhiloxRandom ForSample(ulong seed, long sampleIndex, Purpose purpose)
    {
        if (sampleIndex < 0 || sampleIndex >= 1L << 48)
            throw new ArgumentOutOfRangeException(nameof(sampleIndex), sampleIndex, "sample index must be in [0, 2^48)");
        return new PhiloxRandom(seed, ((ulong)purpose << 48) | (ulong)sampleIndex);
    }

    /// <summary>Next 64 random bits (two 32-bit Philox words).</summary>
    public ulong NextUInt64()
    {
        if (_haveSpare)
        {
            _haveSpare = false;
            return ((ulong)_w3 << 32) | _w2;
        }
        Philox.Block(_seed, _counter++, _stream, out var a, out var b, out _w2, out _w3);
        _haveSpare = true;
        return ((ulong)b << 32) | a;
    }

    /// <summary>Uniform on [0, 1) with 53 bits, like Python's <c>random.random()</c>.</summary>
    public override double NextDouble() => (NextUInt64() >> 11) * (1.0 / 9007199254740992.0);

    protected override double Sample() => NextDouble();

    /// <summary>Uniform integer in [0, <paramref name="maxValue"/>) without modulo bias (Lemire's method).</summary>
    public override int Next(int maxValue)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxValue);
        return (int)NextBelow((uint)maxValue);
    }

    public override int Next(int minValue, int maxValue)
    {
        if (minValue > maxValue) throw new ArgumentOutOfRangeException(nameof(minValue), $"minValue {minValue} > maxValue {maxValue}");
        return (int)(minValue + (long)NextBelow((uint)((long)maxValue - minValue)));
    }

    public override int Next() => (int)NextBelow(int.MaxValue);

    public override long NextInt64(long maxValue) => NextInt64(0, maxValue);

    public override long NextInt64(long minValue, long maxValue)
    {
        if (minValue > maxValue) throw new ArgumentOutOfRangeException(nameof(minValue), $"minValue {minValue} > maxValue {maxValue}");
        ulong range = (ulong)(maxValue - minValue);
        if (range == 0) return minValue;
        ulong limit = ulong.MaxValue - ulong.MaxValue % range; // reject the incomplete last block
        ulong x;
        do x = NextUInt64(); while (x >= limit);
        return minValue + (long)(x % range);
    }

    public override void NextBytes(Span<byte> buffer)
    {
        for (int i = 0; i < buffer.Length; i += 8)
        {
            ulong x = NextUInt64();
            for (int j = 0; j < 8 && i + j < buffer.Length; j++) buffer[i + j] = (byte)(x >> (8 * j));
        }
    }

    public override void NextBytes(byte[] buffer) => NextBytes(buffer.AsSpan());

    private uint NextBelow(uint n)
    {
        if (n <= 1) return 0;
        // Lemire (2019): multiply a 32-bit word by n; reject the low part that would bias the result.
        uint x = (uint)NextUInt64();
        ulong m = (ulong)x * n;
        uint low = (uint)m;
        if (low < n)
        {
            uint threshold = unchecked(0u - n) % n;
            while (low < threshold)
            {
                x = (uint)NextUInt64();
                m = (ulong)x * n;
                low = (uint)m;
            }
        }
        return (uint)(m >> 32);
    }
}
