using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Group-wide reductions shared by the row and norm kernels (device side: warp shuffles, then one shared-memory step across
/// the warps of the group), and the host-side group-size rules that go with them (a multiple of the warp size, at most
/// <see cref="MaxWarps"/> warps). Every thread of the group must call a reduction (they contain barriers).
/// </summary>
internal static class BlockReduce
{
    /// <summary>Most warps per group the cross-warp step supports (1024 threads of 32 lanes).</summary>
    public const int MaxWarps = 32;

    /// <summary>Two floats reduced together.</summary>
    public struct Pair { public float A, B; }
    public struct Pair64 { public double A, B; }

    /// <summary>Σ over the warp; every lane gets the same value.</summary>
    public static float WarpSum(float v)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o >>= 1) v += Warp.ShuffleXor(v, o);
        return v;
    }

    /// <summary>Σ over the group; every thread gets the same value. red: ≥ MaxWarps floats of shared memory.</summary>
    public static float Sum(float v, ArrayView<float> red)
    {
        v = WarpSum(v);
        int nw = Group.DimX / Warp.WarpSize;
        if (nw == 1) return v;
        if (Warp.IsFirstLane) red[Group.IdxX / Warp.WarpSize] = v;
        Group.Barrier();
        float s = red[0];
        for (int i = 1; i < nw; i++) s += red[i];
        Group.Barrier();
        return s;
    }

    /// <summary><see cref="Sum2(float, float, ArrayView{float})"/> in double (warp shuffles, then one shared-memory step
    /// across warps, in warp order); every thread gets both. red: ≥ 2·MaxWarps doubles of shared memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pair64 Sum2(double a, double b, ArrayView<double> red)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o >>= 1) { a += Warp.ShuffleXor(a, o); b += Warp.ShuffleXor(b, o); }
        int nw = Group.DimX / Warp.WarpSize;
        if (nw > 1)
        {
            int w = Group.IdxX / Warp.WarpSize;
            if (Warp.IsFirstLane) { red[w] = a; red[MaxWarps + w] = b; }
            Group.Barrier();
            a = red[0]; b = red[MaxWarps];
            for (int i = 1; i < nw; i++) { a += red[i]; b += red[MaxWarps + i]; }
            Group.Barrier();
        }
        Pair64 r; r.A = a; r.B = b;
        return r;
    }

    /// <summary>Two sums over the group at once (one pair of barriers); every thread gets both. red: ≥ 2·MaxWarps floats of shared memory.</summary>
    public static Pair Sum2(float a, float b, ArrayView<float> red)
    {
        a = WarpSum(a); b = WarpSum(b);
        int nw = Group.DimX / Warp.WarpSize;
        if (nw > 1)
        {
            int w = Group.IdxX / Warp.WarpSize;
            if (Warp.IsFirstLane) { red[w] = a; red[MaxWarps + w] = b; }
            Group.Barrier();
            a = red[0]; b = red[MaxWarps];
            for (int i = 1; i < nw; i++) { a += red[i]; b += red[MaxWarps + i]; }
            Group.Barrier();
        }
        Pair r; r.A = a; r.B = b;
        return r;
    }

    /// <summary>Max over the group; every thread gets the same value. red: ≥ MaxWarps floats of shared memory.</summary>
    public static float Max(float v, ArrayView<float> red)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o >>= 1) { float u = Warp.ShuffleXor(v, o); v = u > v ? u : v; }
        int nw = Group.DimX / Warp.WarpSize;
        if (nw == 1) return v;
        if (Warp.IsFirstLane) red[Group.IdxX / Warp.WarpSize] = v;
        Group.Barrier();
        float m = red[0];
        for (int i = 1; i < nw; i++) { float u = red[i]; m = u > m ? u : m; }
        Group.Barrier();
        return m;
    }

    // ------------------------------------------------------------------ host side

    /// <summary><paramref name="want"/> threads rounded down to the warp size, clamped to [one warp, what the accelerator and MaxWarps allow].</summary>
    public static int ClampGroup(Accelerator acc, int want)
    {
        int warp = acc.WarpSize;
        int max = Math.Min(acc.MaxNumThreadsPerGroup, MaxWarps * warp) / warp * warp;
        return Math.Clamp(want / warp * warp, warp, Math.Max(warp, max));
    }

    /// <summary>Throws (naming <paramref name="op"/>) unless <paramref name="gs"/> is a positive multiple of the warp size within the limits; returns it.</summary>
    public static int CheckGroup(Accelerator acc, string op, int gs)
    {
        int warp = acc.WarpSize;
        if (gs <= 0 || gs % warp != 0 || gs / warp > MaxWarps || gs > acc.MaxNumThreadsPerGroup)
            throw new ArgumentException($"{op}: group size {gs} must be a positive multiple of the warp size {warp}, at most {Math.Min(acc.MaxNumThreadsPerGroup, MaxWarps * warp)} threads");
        return gs;
    }
}
