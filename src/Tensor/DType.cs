namespace FashionViL.Tensors;

/// <summary>Element types. Float16/BFloat16 are storage types: compute happens in float32.</summary>
public enum DType : byte { Float32, Float64, Int32, Int64, Bool, UInt8, Float16, BFloat16 }

public static class DTypeInfo
{
    public static int Size(this DType t) => t switch
    {
        DType.Float32 or DType.Int32 => 4,
        DType.Float64 or DType.Int64 => 8,
        DType.Bool or DType.UInt8 => 1,
        DType.Float16 or DType.BFloat16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    public static bool IsFloating(this DType t) => t is DType.Float32 or DType.Float64 or DType.Float16 or DType.BFloat16;

    public static bool IsInteger(this DType t) => t is DType.Int32 or DType.Int64 or DType.UInt8;

    /// <summary>PyTorch-style lower-case name, e.g. <c>float32</c>.</summary>
    public static string Name(this DType t) => t switch
    {
        DType.Float32 => "float32", DType.Float64 => "float64", DType.Int32 => "int32", DType.Int64 => "int64",
        DType.Bool => "bool", DType.UInt8 => "uint8", DType.Float16 => "float16", DType.BFloat16 => "bfloat16",
        _ => t.ToString(),
    };

    /// <summary>The dtype of a managed element type.</summary>
    public static DType Of<T>() where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return DType.Float32;
        if (typeof(T) == typeof(double)) return DType.Float64;
        if (typeof(T) == typeof(int)) return DType.Int32;
        if (typeof(T) == typeof(long)) return DType.Int64;
        if (typeof(T) == typeof(bool)) return DType.Bool;
        if (typeof(T) == typeof(byte)) return DType.UInt8;
        if (typeof(T) == typeof(Half)) return DType.Float16;
        if (typeof(T) == typeof(BFloat16)) return DType.BFloat16;
        throw new NotSupportedException($"no dtype for {typeof(T).Name}");
    }

    /// <summary>Result type of an arithmetic op on two dtypes (PyTorch promotion, restricted to our set).</summary>
    public static DType Promote(DType a, DType b)
    {
        if (a == b) return a;
        if (a == DType.Float64 || b == DType.Float64) return DType.Float64;
        if (a.IsFloating() || b.IsFloating()) return DType.Float32;
        if (a == DType.Int64 || b == DType.Int64) return DType.Int64;
        if (a == DType.Int32 || b == DType.Int32) return DType.Int32;
        return DType.UInt8;
    }
}

/// <summary>Brain float: the upper 16 bits of an IEEE float32 (round to nearest even on conversion).</summary>
public readonly struct BFloat16 : IEquatable<BFloat16>
{
    public readonly ushort Bits;
    public BFloat16(ushort bits) => Bits = bits;

    public static explicit operator BFloat16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return new BFloat16((ushort)((u >> 16) | 0x40));
        uint rounding = 0x7FFF + ((u >> 16) & 1);
        return new BFloat16((ushort)((u + rounding) >> 16));
    }

    public static explicit operator float(BFloat16 b) => BitConverter.UInt32BitsToSingle((uint)b.Bits << 16);
    public bool Equals(BFloat16 other) => Bits == other.Bits;
    public override bool Equals(object? obj) => obj is BFloat16 b && Equals(b);
    public override int GetHashCode() => Bits;
    public override string ToString() => ((float)this).ToString(System.Globalization.CultureInfo.InvariantCulture);
}
