namespace FashionViL.Tensors;

public enum UnaryOp
{
    Neg, Abs, Exp, Log, Sqrt, Rsqrt, Sin, Cos, Tanh, Sigmoid, Relu,
    /// <summary>Exact GELU: x·Φ(x) with the error function.</summary>
    Gelu,
    /// <summary>x·sigmoid(x) (swish).</summary>
    Silu,
    Erf, Square, Reciprocal, Sign, Floor,
    /// <summary>x^p0.</summary>
    PowScalar,
    /// <summary>min(max(x, p0), p1); use ±infinity for a one-sided clamp.</summary>
    Clamp,
    /// <summary>x + p0.</summary>
    AddScalar,
    /// <summary>x · p0.</summary>
    MulScalar,
    /// <summary>Bool → bool negation.</summary>
    LogicalNot,
}

public enum BinaryOp
{
    Add, Sub, Mul, Div, Pow, Maximum, Minimum,
    // Comparisons and logic produce Bool.
    Eq, Ne, Lt, Le, Gt, Ge, LogicalAnd, LogicalOr,
}

public enum ReduceOp { Sum, Mean, Max, Min, Var }

public enum RandomKind
{
    /// <summary>Uniform on [a, b).</summary>
    Uniform,
    /// <summary>Normal with mean a and standard deviation b.</summary>
    Normal,
    /// <summary>1 with probability a, else 0.</summary>
    Bernoulli,
    /// <summary>Integers uniform on [a, b).</summary>
    RandInt,
}

/// <summary>Geometry of a 2-D convolution. Padding may be asymmetric.</summary>
public readonly record struct Conv2dParams(int StrideH, int StrideW, int PadTop, int PadBottom, int PadLeft, int PadRight, int DilationH = 1, int DilationW = 1)
{
    public static Conv2dParams Symmetric(int stride, int padding, int dilation = 1) => new(stride, stride, padding, padding, padding, padding, dilation, dilation);

    /// <summary>Output height; zero or negative when the (dilated) kernel does not fit the padded input.</summary>
    public int OutH(int h, int kh) => FloorDiv(h + PadTop + PadBottom - DilationH * (kh - 1) - 1, StrideH) + 1;
    public int OutW(int w, int kw) => FloorDiv(w + PadLeft + PadRight - DilationW * (kw - 1) - 1, StrideW) + 1;

    internal static int FloorDiv(int a, int b) => a >= 0 ? a / b : -((-a + b - 1) / b);
}

/// <summary>Geometry of max pooling (symmetric padding with -infinity, like PyTorch).</summary>
public readonly record struct Pool2dParams(int KernelH, int KernelW, int StrideH, int StrideW, int PadH, int PadW)
{
    /// <summary>Output height; zero or negative when the window does not fit the padded input.</summary>
    public int OutH(int h) => Conv2dParams.FloorDiv(h + 2 * PadH - KernelH, StrideH) + 1;
    public int OutW(int w) => Conv2dParams.FloorDiv(w + 2 * PadW - KernelW, StrideW) + 1;
}

/// <summary>transformers-3.x AdamW: see <see cref="IBackend.AdamWStep"/>.</summary>
public readonly record struct AdamWParams(double Lr, double Beta1, double Beta2, double Eps, double WeightDecay, int Step, bool CorrectBias = true);

/// <summary>
/// One tensor of a multi-tensor AdamW step (<see cref="IBackend.AdamWStepMany"/>): its parameter, gradient and state, each
/// contiguous and of the parameter's shape and dtype, and its own hyper-parameters (groups differ in lr and weight decay,
/// parameters in their step count).
/// </summary>
public readonly record struct AdamWItem(Tensor Param, Tensor Grad, Tensor ExpAvg, Tensor ExpAvgSq, AdamWParams Hp)
{
    /// <summary>
    /// Throws, naming both items and roles, if a tensor one item writes (param, exp_avg, exp_avg_sq) shares memory with any
    /// other tensor of the call (grads may share memory with each other: they are only read). A multi-tensor step updates
    /// its items concurrently, so an overlap would be a race; every backend rejects it, whatever its own order.
    /// </summary>
    public static void CheckDisjoint(IReadOnlyList<AdamWItem> items, string op)
    {
        ArgumentNullException.ThrowIfNull(items);
        var byStorage = new Dictionary<Storage, List<(long Start, long End, int Item, string Role)>>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < items.Count; i++)
        {
            var it = items[i];
            foreach (var (t, role) in new[] { (it.Param, "param"), (it.ExpAvg, "exp_avg"), (it.ExpAvgSq, "exp_avg_sq"), (it.Grad, "grad") })
            {
                if (t is null) throw new ArgumentNullException(nameof(items), $"{op}: item {i} has no {role}");
                if (t.Numel == 0) continue;
                long size = t.DType.Size(), start = (long)t.Offset * size;
                if (!byStorage.TryGetValue(t.Storage, out var list)) byStorage[t.Storage] = list = [];
                list.Add((start, start + (long)t.Numel * size, i, role));
            }
        }
        foreach (var list in byStorage.Values)
        {
            if (list.Count < 2) continue;
            list.Sort((a, b) => a.Start.CompareTo(b.Start));
            // A range overlaps an earlier-starting one iff that one ends after it starts: track the furthest end so far,
            // over all ranges and over the written ones.
            (long End, int Item, string Role) any = (long.MinValue, -1, ""), written = (long.MinValue, -1, "");
            foreach (var r in list)
            {
                bool w = r.Role != "grad";
                var hit = w ? any : written;
                if (hit.End > r.Start)
                    throw new ArgumentException($"{op}: the {r.Role} of item {r.Item} ({items[r.Item].Param.ShapeString}) shares memory with the " +
                        $"{hit.Role} of item {hit.Item} ({items[hit.Item].Param.ShapeString}); the tensors of a multi-tensor step must not overlap");
                if (r.End > any.End) any = (r.End, r.Item, r.Role);
                if (w && r.End > written.End) written = (r.End, r.Item, r.Role);
            }
        }
    }
}

/// <summary>PyTorch SGD with momentum, dampening, nesterov and L2 weight decay.</summary>
public readonly record struct SgdParams(double Lr, double Momentum, double Dampening, double WeightDecay, bool Nesterov);

/// <summary>
/// The primitive op set every device implements (spec §8). Conventions:
/// outputs are preallocated by the caller and contiguous; inputs are contiguous unless a member says
/// "any strides". Float ops accept Float32 and Float64 (the CPU reference also runs Float64 for gradcheck).
/// Members validate what could corrupt memory (shapes, index ranges) and throw naming the op and shapes;
/// everything else is validated once, in the differentiable op above.
/// </summary>
public partial interface IBackend
{
    Device Device { get; }
    CachingAllocator Allocator { get; }

    /// <summary>Blocks until queued work on this device is done (no-op on the CPU).</summary>
    void Synchronize();

    // ---- copies and fills
    /// <summary>dst ← src, same shape, any strides on both sides, converting dtype.</summary>
    void Copy(Tensor src, Tensor dst);
    /// <summary>Copies between devices; both contiguous, same dtype and shape.</summary>
    void Transfer(Tensor src, Tensor dst);
    void Fill(Tensor dst, double value);

    // ---- elementwise
    /// <summary>y ← op(x); x any strides, y contiguous with x's shape.</summary>
    void Unary(UnaryOp op, Tensor x, Tensor y, double p0 = 0, double p1 = 0);
    /// <summary>gx ← gy · dop/dx, given the input x and output y of the forward.</summary>
    void UnaryBackward(UnaryOp op, Tensor x, Tensor y, Tensor gy, Tensor gx, double p0 = 0, double p1 = 0);
    /// <summary>y ← a op b; a and b are views already broadcast to y's shape (any strides, zero strides for broadcast dims).</summary>
    void Binary(BinaryOp op, Tensor a, Tensor b, Tensor y);
    /// <summary>y ← cond ? a : b; all three broadcast views of y's shape.</summary>
    void Where(Tensor cond, Tensor a, Tensor b, Tensor y);

    // ---- reductions
    /// <summary>
    /// Reduces x (any strides) over <paramref name="dims"/> (sorted, distinct) into y, which has x's rank
    /// with the reduced dims set to 1. <see cref="ReduceOp.Var"/> uses correction p0 (1 = unbiased).
    /// For Max/Min over a single dim, <paramref name="indices"/> (Int64, y's shape) receives the first arg-extremum.
    /// </summary>
    void Reduce(ReduceOp op, Tensor x, int[] dims, Tensor y, Tensor? indices = null, double p0 = 0);

    // ---- random numbers (counter-based: value i depends only on seed, offset and i)
    void Random(RandomKind kind, Tensor dst, ulong seed, ulong offset, double a = 0, double b = 1);
    /// <summary>dst (Int64 [n]) ← a random permutation of 0..n-1.</summary>
    void RandPerm(Tensor dst, ulong seed, ulong offset);
}
