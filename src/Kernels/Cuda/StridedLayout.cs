using FashionViL.Tensors;

namespace FashionViL.Kernels.Cuda;

/// <summary>Six ints (sizes or strides of a coalesced view, padded at the front with size 1 / stride 0).</summary>
public struct Dims6
{
    public int D0, D1, D2, D3, D4, D5;

    public static Dims6 From(ReadOnlySpan<int> v)
    {
        var d = new Dims6 { D0 = 1, D1 = 1, D2 = 1, D3 = 1, D4 = 1, D5 = 1 };
        return d.With(v, 1);
    }

    public static Dims6 Strides(ReadOnlySpan<int> v) => new Dims6().With(v, 0);

    private Dims6 With(ReadOnlySpan<int> v, int pad)
    {
        Span<int> all = stackalloc int[6];
        all.Fill(pad);
        v.CopyTo(all[(6 - v.Length)..]);
        return new Dims6 { D0 = all[0], D1 = all[1], D2 = all[2], D3 = all[3], D4 = all[4], D5 = all[5] };
    }
}

/// <summary>
/// Up to three strided operands over one shape (rank ≤ 6 after coalescing), passed to kernels by value.
/// <see cref="Offsets"/> turns a row-major element index into the element offset of each operand.
/// </summary>
public struct Strided3
{
    public const int MaxRank = 6;
    public Dims6 Size, S0, S1, S2;
    public int O0, O1, O2;
    /// <summary>1 when the coalesced shape has at most one dim (the common dense case): offsets need no division.</summary>
    public int Flat;

    /// <summary>Element offsets of operands 0..2 for row-major index <paramref name="i"/> (unrolled, no loops).</summary>
    public readonly void Offsets(int i, out int o0, out int o1, out int o2)
    {
        if (Flat != 0)
        {
            o0 = O0 + i * S0.D5; o1 = O1 + i * S1.D5; o2 = O2 + i * S2.D5;
            return;
        }
        int r = i, q, c;
        o0 = O0; o1 = O1; o2 = O2;
        q = r / Size.D5; c = r - q * Size.D5; r = q; o0 += c * S0.D5; o1 += c * S1.D5; o2 += c * S2.D5;
        q = r / Size.D4; c = r - q * Size.D4; r = q; o0 += c * S0.D4; o1 += c * S1.D4; o2 += c * S2.D4;
        q = r / Size.D3; c = r - q * Size.D3; r = q; o0 += c * S0.D3; o1 += c * S1.D3; o2 += c * S2.D3;
        q = r / Size.D2; c = r - q * Size.D2; r = q; o0 += c * S0.D2; o1 += c * S1.D2; o2 += c * S2.D2;
        q = r / Size.D1; c = r - q * Size.D1; r = q; o0 += c * S0.D1; o1 += c * S1.D1; o2 += c * S2.D1;
        o0 += r * S0.D0; o1 += r * S1.D0; o2 += r * S2.D0;
    }

    /// <summary>
    /// Coalesces <paramref name="shape"/> for the given operands (size-1 dims dropped, dims merged where every
    /// operand is contiguous across them). <paramref name="bases"/> are the operands' element offsets inside the
    /// views the kernel receives.
    /// </summary>
    public static Strided3 Plan(ReadOnlySpan<int> shape, Tensor[] ops, int[] bases, string op)
    {
        int n = ops.Length;
        var dims = new List<int>();
        var st = new List<int>[n];
        for (int k = 0; k < n; k++) st[k] = new List<int>();
        for (int d = 0; d < shape.Length; d++)
        {
            if (shape[d] == 1) continue;
            dims.Add(shape[d]);
            for (int k = 0; k < n; k++) st[k].Add(ops[k].Strides[d]);
        }
        for (int i = dims.Count - 2; i >= 0; i--)
        {
            bool ok = true;
            for (int k = 0; k < n && ok; k++) ok = st[k][i] == st[k][i + 1] * dims[i + 1];
            if (!ok) continue;
            dims[i] *= dims[i + 1];
            dims.RemoveAt(i + 1);
            for (int k = 0; k < n; k++) st[k].RemoveAt(i);
        }
        if (dims.Count > MaxRank)
            throw new NotSupportedException($"cuda: {op} over {Shape.Format(shape)} has rank {dims.Count} after coalescing; the kernels take at most {MaxRank}");
        var l = new Strided3 { Size = Dims6.From(dims.ToArray()), Flat = dims.Count <= 1 ? 1 : 0 };
        if (n > 0) { l.S0 = Dims6.Strides(st[0].ToArray()); l.O0 = bases[0]; }
        if (n > 1) { l.S1 = Dims6.Strides(st[1].ToArray()); l.O1 = bases[1]; }
        if (n > 2) { l.S2 = Dims6.Strides(st[2].ToArray()); l.O2 = bases[2]; }
        return l;
    }
}
