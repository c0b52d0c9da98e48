namespace FashionViL.Testing;

/// <summary>
/// Row-major coordinate helpers for scalar reference loops in tests: flat index ↔ coordinates, element counts,
/// and a float64 tensor built element by element from its coordinates.
/// </summary>
public static class Coords
{
    /// <summary>The coordinates of flat row-major position <paramref name="p"/> in <paramref name="shape"/>.</summary>
    public static int[] Unravel(int p, int[] shape)
    {
        var c = new int[shape.Length];
        for (int d = shape.Length - 1; d >= 0; d--) { c[d] = p % shape[d]; p /= shape[d]; }
        return c;
    }

    /// <summary>The flat row-major position of coordinates <paramref name="c"/> in <paramref name="shape"/>.</summary>
    public static int Ravel(int[] c, int[] shape)
    {
        int p = 0;
        for (int d = 0; d < shape.Length; d++) p = p * shape[d] + c[d];
        return p;
    }

    /// <summary>The number of elements of <paramref name="shape"/> (1 for a scalar shape).</summary>
    public static int Numel(int[] shape) => shape.Aggregate(1, (a, b) => a * b);

    /// <summary>A float64 tensor of <paramref name="shape"/> whose element at coordinates c is f(c).</summary>
    public static Tensor FromFunction(int[] shape, Func<int[], double> f)
    {
        var v = new double[Numel(shape)];
        for (int p = 0; p < v.Length; p++) v[p] = f(Unravel(p, shape));
        return Tensor.FromArray(v, shape);
    }
}
