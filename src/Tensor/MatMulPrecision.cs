namespace FashionViL.Tensors;

/// <summary>
/// The operand precision of float32 GEMMs (matmul, linear, and the GEMMs of convolution forward and backward).
/// <see cref="Fp32"/> is exact float32 and the default. <see cref="Tf32"/> and <see cref="Bf16"/> round both GEMM
/// operands (A and B; never C, the bias or the accumulator) before multiplying and accumulate in float32, as tensor
/// cores do (PyTorch: <c>torch.backends.cuda.matmul.allow_tf32</c> / <c>cudnn.allow_tf32</c>). Float64 GEMMs ignore it.
/// </summary>
public enum Precision
{
    /// <summary>Exact float32 operands (the default).</summary>
    Fp32 = 0,
    /// <summary>Operands rounded to TF32 (8-bit exponent, 10 explicit mantissa bits; round to nearest, ties away from zero, as PTX <c>cvt.rna.tf32.f32</c>).</summary>
    Tf32 = 1,
    /// <summary>Operands rounded to bfloat16 (8-bit exponent, 7 mantissa bits; round to nearest even, as PyTorch's float→bfloat16).</summary>
    Bf16 = 2,
}

/// <summary>
/// The process-wide GEMM precision switch, with scoped overrides:
/// <code>
/// MatMulPrecision.Default = Precision.Tf32;                 // process-wide (like torch.backends.cuda.matmul.allow_tf32 = True)
/// using (MatMulPrecision.Use(Precision.Bf16)) { ... }       // this flow of execution only, restored on dispose
/// </code>
/// A scope flows with the execution context (into Parallel.For bodies and tasks started inside it) and nests; it
/// overrides <see cref="Default"/> until disposed. Backends read <see cref="Current"/> when a GEMM is issued.
/// </summary>
public static class MatMulPrecision
{
    private static volatile int _default;
    private static readonly AsyncLocal<Precision?> Scoped = new();

    /// <summary>The process-wide precision (initially <see cref="Precision.Fp32"/>).</summary>
    public static Precision Default
    {
        get => (Precision)_default;
        set => _default = (int)Check(value);
    }

    /// <summary>The precision a GEMM issued now uses: the innermost active <see cref="Use"/> scope, else <see cref="Default"/>.</summary>
    public static Precision Current => Scoped.Value ?? (Precision)_default;

    /// <summary>Overrides the precision until the returned scope is disposed (nests; dispose in reverse order).</summary>
    public static Scope Use(Precision precision)
    {
        Check(precision);
        var previous = Scoped.Value;
        Scoped.Value = precision;
        return new Scope(previous);
    }

    /// <summary>Restores the precision that was current when <see cref="Use"/> was called.</summary>
    public readonly struct Scope(Precision? previous) : IDisposable
    {
        public void Dispose() => Scoped.Value = previous;
    }

    /// <summary>
    /// Parses a precision name: <c>fp32</c> / <c>tf32</c> / <c>bf16</c> (case-insensitive; also <c>float32</c>, <c>bfloat16</c>,
    /// and PyTorch's <c>set_float32_matmul_precision</c> names <c>highest</c> / <c>high</c> / <c>medium</c>).
    /// </summary>
    public static Precision Parse(string name, string what = "precision")
        => name?.Trim().ToLowerInvariant() switch
        {
            "fp32" or "float32" or "f32" or "highest" => Precision.Fp32,
            "tf32" or "high" => Precision.Tf32,
            "bf16" or "bfloat16" or "medium" => Precision.Bf16,
            _ => throw new ArgumentException($"{what}: unknown precision '{name}' (expected fp32, tf32 or bf16)"),
        };

    /// <summary>The short lower-case name (<c>fp32</c>, <c>tf32</c>, <c>bf16</c>), the inverse of <see cref="Parse"/>.</summary>
    public static string Name(this Precision p) => Check(p) switch { Precision.Tf32 => "tf32", Precision.Bf16 => "bf16", _ => "fp32" };

    private static Precision Check(Precision p)
        => p is Precision.Fp32 or Precision.Tf32 or Precision.Bf16 ? p : throw new ArgumentOutOfRangeException(nameof(p), p, "precision must be Fp32, Tf32 or Bf16");
}

/// <summary>
/// The operand roundings of <see cref="Precision"/>, on float32 bit patterns. The result is again a float32 (the
/// dropped mantissa bits are zero), so a product of two rounded operands is exact in float32 (at most 11×11 or 8×8
/// significant bits) and only the accumulation rounds.
/// </summary>
public static class PrecisionRounding
{
    /// <summary>
    /// Rounds to TF32 as PTX <c>cvt.rna.tf32.f32</c>: the 13 low mantissa bits are dropped with round to nearest, ties away
    /// from zero (sign-magnitude, so adding half an ulp of the kept part to the magnitude and truncating does it; the carry
    /// runs into the exponent, subnormals round the same way, values past the largest TF32 go to ±infinity). ±Inf stay;
    /// NaN stays NaN (quiet, sign kept).
    /// </summary>
    public static uint Tf32Bits(uint u)
    {
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (u | 0x00400000u) & 0xFFFFE000u;
        return (u + 0x00001000u) & 0xFFFFE000u;
    }

    /// <summary>
    /// The bfloat16 of a float32 (its upper 16 bits) with round to nearest, ties to even (as PyTorch's float→bfloat16):
    /// values past the largest bfloat16 (including float32's maximum) go to ±infinity; NaN stays a quiet NaN with its sign.
    /// </summary>
    public static ushort Bf16Bits(uint u)
    {
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (ushort)((u | 0x00400000u) >> 16);
        return (ushort)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    }

    /// <summary><paramref name="x"/> rounded to TF32, as a float32.</summary>
    public static float ToTf32(float x) => BitConverter.UInt32BitsToSingle(Tf32Bits(BitConverter.SingleToUInt32Bits(x)));

    /// <summary><paramref name="x"/> rounded to bfloat16, as a float32.</summary>
    public static float ToBf16(float x) => BitConverter.UInt32BitsToSingle((uint)Bf16Bits(BitConverter.SingleToUInt32Bits(x)) << 16);

    /// <summary><paramref name="x"/> rounded as GEMM operands are under <paramref name="p"/> (unchanged for Fp32).</summary>
    public static float Round(float x, Precision p) => p switch
    {
        Precision.Tf32 => ToTf32(x),
        Precision.Bf16 => ToBf16(x),
        _ => x,
    };
}
