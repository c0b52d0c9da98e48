using FashionViL.Tensors;

namespace FashionViL.Nn;

/// <summary>Initialisation schemes. Every draw comes from the <see cref="Generator"/> passed in (deterministic).</summary>
public static class Init
{
    /// <summary>PyTorch's kaiming-uniform bound: gain·√(3/fan_in) with gain = √(2/(1+a²)); a = √5 gives 1/√fan_in.</summary>
    public static double KaimingUniformBound(int fanIn, double a = 2.23606797749979) =>
        Math.Sqrt(2.0 / (1 + a * a)) * Math.Sqrt(3.0 / Math.Max(fanIn, 1));

    /// <summary>The tensor is filled in place with U(low, high).</summary>
    public static void Uniform(Tensor t, double low, double high, Generator? g = null)
    {
        using var r = (g ?? Generator.Default).Uniform(t.Shape, low, high, t.DType, t.Device);
        Module.CopyInto(r, t);
    }

    /// <summary>The tensor is filled in place with N(mean, std²).</summary>
    public static void Normal(Tensor t, double mean, double std, Generator? g = null)
    {
        using var r = (g ?? Generator.Default).Normal(t.Shape, mean, std, t.DType, t.Device);
        Module.CopyInto(r, t);
    }

    public static void Constant(Tensor t, double value) => Backends.Get(t.Device).Fill(t, value);

    public static void Zeros(Tensor t) => Constant(t, 0);

    public static void Ones(Tensor t) => Constant(t, 1);

    /// <summary>Zeroes row <paramref name="row"/> of a contiguous [V, D] matrix.</summary>
    public static void ZeroRow(Tensor w, int row)
    {
        if (w.Rank != 2 || row < 0 || row >= w.Size(0))
            throw new ArgumentException($"zero_row: row {row} out of range for {w.ShapeString}");
        using var r = w.AsStrided([w.Size(1)], [w.Stride(1)], w.Offset + row * w.Stride(0));
        Zeros(r);
    }

    /// <summary>Hugging Face BERT init over a subtree: Linear and Embedding weights N(0, std), Linear biases zero,
    /// the Embedding padding row zero, LayerNorm weight one and bias zero.</summary>
    public static void HfInit(Module root, Generator? g = null, double std = 0.02)
    {
        foreach (var (_, m) in root.NamedModules())
        {
            switch (m)
            {
                case Linear l:
                    Normal(l.Weight, 0, std, g);
                    if (l.Bias is { } b) Zeros(b);
                    break;
                case Embedding e:
                    Normal(e.Weight, 0, std, g);
                    if (e.PaddingIdx >= 0) ZeroRow(e.Weight, e.PaddingIdx);
                    break;
                case LayerNorm ln:
                    if (ln.Weight is { } w) Ones(w);
                    if (ln.Bias is { } lb) Zeros(lb);
                    break;
            }
        }
    }
}
