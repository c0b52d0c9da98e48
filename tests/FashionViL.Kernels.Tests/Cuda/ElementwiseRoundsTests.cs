using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The elementwise kernels (map, zip, where, the unary gradients) take each thread's grid-stride elements four at a time,
/// loading all four before storing any (issue 7). Sizes here give every thread several rounds, the last one partial, on
/// flat and strided layouts and a broadcast operand: every element must come out exactly as the CPU backend computes it
/// (ops whose result is one correctly rounded operation, so the two backends agree bit for bit), and nothing past the
/// end may be written.
/// </summary>
[Category("Cuda")]
public class ElementwiseRoundsTests : CudaTestBase
{
    /// <summary>Threads of one elementwise launch at full grid (the kernels' grid-stride step).</summary>
    private static int Threads => Dev.Runtime.MaxGroups * Dev.Runtime.GroupSize;

    /// <summary>Element counts: one partial round, two full rounds, and rounds plus a tail that stops inside a round.</summary>
    private static IEnumerable<int> Sizes()
    {
        int t = Threads;
        return [t - 1, 8 * t, 9 * t + 3, 4 * t + 2 * t + 1];
    }

    private static void AssertBitwise(Tensor got, Tensor want, string what)
    {
        var g = got.To(Device.Cpu).ToArray<float>();
        var w = want.ToArray<float>();
        Assert.That(g.Length, Is.EqualTo(w.Length), what);
        for (int i = 0; i < w.Length; i++)
            if (BitConverter.SingleToInt32Bits(g[i]) != BitConverter.SingleToInt32Bits(w[i]))
                Assert.Fail($"{what}: element {i} of {w.Length} is {g[i]}, the CPU backend gives {w[i]}");
    }

    [Test]
    public void MapZipWhereAndGradientsCoverEveryElementOfEveryRound()
    {
        foreach (int n in Sizes())
        {
            using var x = Rand([n], 5 + (ulong)n, DType.Float32, -3, 3);
            using var y = Rand([n], 6 + (ulong)n, DType.Float32, -3, 3);
            using var dx = Up(x); using var dy = Up(y);

            // map, flat: y ← x + 0.75
            using (var want = Tensor.Empty([n])) using (var got = Tensor.Full([n + 3], double.NaN, DType.Float32, Gpu))
            {
                Cpu.Unary(UnaryOp.AddScalar, x, want, 0.75, 0);
                using var head = got.AsStrided([n], [1], 0);
                Dev.Unary(UnaryOp.AddScalar, dx, head, 0.75, 0);
                AssertBitwise(head, want, $"map flat n={n}");
                var tail = got.To(Device.Cpu).ToArray<float>()[n..];
                Assert.That(tail.All(float.IsNaN), $"map flat n={n}: an element past the end was written");
            }
            // map, strided (every other element of a 2-row view): the offsets' divisions, then four loads
            int cols = n / 2;
            using (var x2 = x.AsStrided([2, cols / 2], [cols, 2], 1))
            using (var dx2 = dx.AsStrided([2, cols / 2], [cols, 2], 1))
            using (var want = Tensor.Empty([2, cols / 2])) using (var got = Tensor.Empty([2, cols / 2], DType.Float32, Gpu))
            {
                Cpu.Unary(UnaryOp.Neg, x2, want, 0, 0);
                Dev.Unary(UnaryOp.Neg, dx2, got, 0, 0);
                AssertBitwise(got, want, $"map strided n={n}");
            }
            // zip with a broadcast row: [2, n/2] · [n/2]
            using (var a2 = x.AsStrided([2, cols], [cols, 1], 0)) using (var da2 = dx.AsStrided([2, cols], [cols, 1], 0))
            using (var b1 = y.AsStrided([2, cols], [0, 1], 0)) using (var db1 = dy.AsStrided([2, cols], [0, 1], 0))
            using (var want = Tensor.Empty([2, cols])) using (var got = Tensor.Empty([2, cols], DType.Float32, Gpu))
            {
                Cpu.Binary(BinaryOp.Mul, a2, b1, want);
                Dev.Binary(BinaryOp.Mul, da2, db1, got);
                AssertBitwise(got, want, $"zip broadcast n={n}");
            }
            // zip flat
            using (var want = Tensor.Empty([n])) using (var got = Tensor.Empty([n], DType.Float32, Gpu))
            {
                Cpu.Binary(BinaryOp.Sub, x, y, want);
                Dev.Binary(BinaryOp.Sub, dx, dy, got);
                AssertBitwise(got, want, $"zip flat n={n}");
            }
            // where: c = x > 0
            using (var c = Tensor.Empty([n], DType.Bool)) using (var dc = Tensor.Empty([n], DType.Bool, Gpu))
            using (var want = Tensor.Empty([n])) using (var got = Tensor.Empty([n], DType.Float32, Gpu))
            {
                using var zero = Tensor.Zeros([n]);
                using var dzero = Up(zero);
                Cpu.Binary(BinaryOp.Gt, x, zero, c);
                Dev.Binary(BinaryOp.Gt, dx, dzero, dc);
                Cpu.Where(c, x, y, want);
                Dev.Where(dc, dx, dy, got);
                AssertBitwise(got, want, $"where n={n}");
            }
            // a unary gradient: d(−x) = −g
            using (var want = Tensor.Empty([n])) using (var got = Tensor.Empty([n], DType.Float32, Gpu))
            using (var fy = Tensor.Empty([n])) using (var dfy = Tensor.Empty([n], DType.Float32, Gpu))
            {
                Cpu.Unary(UnaryOp.Neg, x, fy, 0, 0);
                Dev.Unary(UnaryOp.Neg, dx, dfy, 0, 0);
                Cpu.UnaryBackward(UnaryOp.Neg, x, fy, y, want, 0, 0);
                Dev.UnaryBackward(UnaryOp.Neg, dx, dfy, dy, got, 0, 0);
                AssertBitwise(got, want, $"gradient n={n}");
            }
        }
    }
}
