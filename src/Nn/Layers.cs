using FashionViL.Autograd;
using FashionViL.Tensors;

namespace FashionViL.Nn;

/// <summary>y = x·Wᵀ + b with W [out, in]. PyTorch default init: W ~ U(±1/√in) (kaiming-uniform, a = √5), b ~ U(±1/√in).</summary>
public sealed class Linear : Module
{
    public int InFeatures { get; }
    public int OutFeatures { get; }
    public Tensor Weight => Param("weight")!;
    public Tensor? Bias => Param("bias");

    public Linear(int inFeatures, int outFeatures, bool bias = true, Generator? generator = null, DType dtype = DType.Float32)
    {
        if (inFeatures < 0 || outFeatures < 0) throw new ArgumentException($"linear: sizes must be non-negative, got in {inFeatures}, out {outFeatures}");
        InFeatures = inFeatures; OutFeatures = outFeatures;
        var g = generator ?? Generator.Default;
        double bound = Init.KaimingUniformBound(inFeatures);
        RegisterParameter("weight", g.Uniform([outFeatures, inFeatures], -bound, bound, dtype));
        RegisterParameter("bias", bias ? g.Uniform([outFeatures], -bound, bound, dtype) : null);
    }

    public override Tensor Forward(Tensor x) => Ops.Linear(x, Weight, Bias);
}

/// <summary>2-D convolution, weight [out, in, kh, kw]; PyTorch default init (bound 1/√(in·kh·kw) for weight and bias).</summary>
public sealed class Conv2d : Module
{
    public int InChannels { get; }
    public int OutChannels { get; }
    public Conv2dParams Params { get; }
    public Tensor Weight => Param("weight")!;
    public Tensor? Bias => Param("bias");

    public Conv2d(int inChannels, int outChannels, int kernelSize, int stride = 1, int padding = 0, int dilation = 1,
        bool bias = true, Generator? generator = null, DType dtype = DType.Float32, bool initialize = true)
        : this(inChannels, outChannels, kernelSize, kernelSize, Conv2dParams.Symmetric(stride, padding, dilation), bias, generator, dtype, initialize) { }

    /// <param name="initialize">false: zeros instead of random draws, for weights that are loaded right after (saves the draws of a large model).</param>
    public Conv2d(int inChannels, int outChannels, int kernelH, int kernelW, Conv2dParams p,
        bool bias = true, Generator? generator = null, DType dtype = DType.Float32, bool initialize = true)
    {
        if (inChannels < 1 || outChannels < 1 || kernelH < 1 || kernelW < 1)
            throw new ArgumentException($"conv2d: channels and kernel must be positive, got in {inChannels}, out {outChannels}, kernel {kernelH}x{kernelW}");
        InChannels = inChannels; OutChannels = outChannels; Params = p;
        var g = generator ?? Generator.Default;
        double bound = Init.KaimingUniformBound(inChannels * kernelH * kernelW);
        int[] shape = [outChannels, inChannels, kernelH, kernelW];
        RegisterParameter("weight", initialize ? g.Uniform(shape, -bound, bound, dtype) : Tensor.Zeros(shape, dtype));
        RegisterParameter("bias", !bias ? null : initialize ? g.Uniform([outChannels], -bound, bound, dtype) : Tensor.Zeros([outChannels], dtype));
    }

    public override Tensor Forward(Tensor x) => Ops.Conv2d(x, Weight, Bias, Params);
}

/// <summary>
/// Batch norm over channel 1 of [N,C,H,W] or [N,C]. Buffers <c>running_mean</c>, <c>running_var</c> and int64
/// <c>num_batches_tracked</c> (incremented per training forward). Frozen, it stays in eval mode (reference's frozen BN).
/// </summary>
public sealed class BatchNorm2d : Module
{
    public int NumFeatures { get; }
    public double Momentum { get; }
    public double Eps { get; }
    public Tensor? Weight => Param("weight");
    public Tensor? Bias => Param("bias");
    public Tensor RunningMean => Buffer("running_mean")!;
    public Tensor RunningVar => Buffer("running_var")!;
    public Tensor NumBatchesTracked => Buffer("num_batches_tracked")!;

    protected override bool StaysEvalWhenFrozen => true;

    public BatchNorm2d(int numFeatures, double eps = 1e-5, double momentum = 0.1, bool affine = true, DType dtype = DType.Float32)
    {
        NumFeatures = numFeatures; Eps = eps; Momentum = momentum;
        RegisterParameter("weight", affine ? Tensor.Ones([numFeatures], dtype) : null);
        RegisterParameter("bias", affine ? Tensor.Zeros([numFeatures], dtype) : null);
        RegisterBuffer("running_mean", Tensor.Zeros([numFeatures], dtype));
        RegisterBuffer("running_var", Tensor.Ones([numFeatures], dtype));
        RegisterBuffer("num_batches_tracked", Tensor.Zeros([], DType.Int64));
    }

    public override Tensor Forward(Tensor x) => Forward(x, null, relu: false);

    /// <summary>
    /// relu?(bn(x) [+ residual]) as one fused op (<see cref="Ops.BatchNorm2d"/>): equal to <c>Forward(x)</c> followed by
    /// <c>+ residual</c> and <c>Relu()</c>, with one pass forward and one backward instead of three.
    /// </summary>
    public Tensor Forward(Tensor x, Tensor? residual, bool relu)
    {
        var y = Ops.BatchNorm2d(x, Weight, Bias, RunningMean, RunningVar, IsTraining, Momentum, Eps, residual, relu);
        if (IsTraining)
        {
            // n += 1 on the device: reading the counter back would make every training step wait for the GPU.
            var n = NumBatchesTracked;
            using var one = Tensor.Full([], 1, DType.Int64, n.Device);
            Backends.Get(n.Device).Binary(BinaryOp.Add, n, one, n);
        }
        return y;
    }
}

/// <summary>Group norm of [N,C,*] over <c>groups</c> groups; affine weight ones, bias zeros.</summary>
public sealed class GroupNorm : Module
{
    public int Groups { get; }
    public int NumChannels { get; }
    public double Eps { get; }
    public Tensor? Weight => Param("weight");
    public Tensor? Bias => Param("bias");

    public GroupNorm(int groups, int numChannels, double eps = 1e-5, bool affine = true, DType dtype = DType.Float32)
    {
        if (groups < 1 || numChannels % groups != 0)
            throw new ArgumentException($"group_norm: {numChannels} channels do not split into {groups} groups");
        Groups = groups; NumChannels = numChannels; Eps = eps;
        RegisterParameter("weight", affine ? Tensor.Ones([numChannels], dtype) : null);
        RegisterParameter("bias", affine ? Tensor.Zeros([numChannels], dtype) : null);
    }

    public override Tensor Forward(Tensor x) => Ops.GroupNorm(x, Groups, Weight, Bias, Eps);

    /// <summary>silu(GroupNorm(x)): one pass when no gradient is needed (see <see cref="Ops.GroupNorm"/>).</summary>
    public Tensor ForwardSilu(Tensor x) => Ops.GroupNorm(x, Groups, Weight, Bias, Eps, silu: true);
}

/// <summary>Layer norm over the last dim (size <c>dim</c>); eps default 1e-5 like PyTorch, BERT passes 1e-12.</summary>
public sealed class LayerNorm : Module
{
    public int Dim { get; }
    public double Eps { get; }
    public Tensor? Weight => Param("weight");
    public Tensor? Bias => Param("bias");

    public LayerNorm(int dim, double eps = 1e-5, bool affine = true, DType dtype = DType.Float32)
    {
        Dim = dim; Eps = eps;
        RegisterParameter("weight", affine ? Tensor.Ones([dim], dtype) : null);
        RegisterParameter("bias", affine ? Tensor.Zeros([dim], dtype) : null);
    }

    public override Tensor Forward(Tensor x)
    {
        if (x.Rank == 0 || x.Size(-1) != Dim)
            throw new ArgumentException($"layer_norm: input {x.ShapeString} last dim should be {Dim}");
        return x.LayerNorm(Weight, Bias, Eps);
    }
}

/// <summary>Embedding table [num, dim] ~ N(0, 1) (PyTorch default); the padding row is zero and gets no gradient.</summary>
public sealed class Embedding : Module
{
    public int NumEmbeddings { get; }
    public int EmbeddingDim { get; }
    /// <summary>−1 when there is no padding row.</summary>
    public int PaddingIdx { get; }
    public Tensor Weight => Param("weight")!;

    public Embedding(int numEmbeddings, int embeddingDim, int paddingIdx = -1, Generator? generator = null, DType dtype = DType.Float32)
    {
        if (paddingIdx < -1 || paddingIdx >= numEmbeddings)
            throw new ArgumentException($"embedding: padding index {paddingIdx} out of range for {numEmbeddings} embeddings");
        NumEmbeddings = numEmbeddings; EmbeddingDim = embeddingDim; PaddingIdx = paddingIdx;
        var w = (generator ?? Generator.Default).Normal([numEmbeddings, embeddingDim], 0, 1, dtype);
        if (paddingIdx >= 0) Init.ZeroRow(w, paddingIdx);
        RegisterParameter("weight", w);
    }

    public override Tensor Forward(Tensor ids) => Ops.Embedding(ids, Weight, PaddingIdx);
}

/// <summary>Dropout with probability p in training mode (identity in eval); the mask comes from the generator.</summary>
public sealed class Dropout(double p = 0.5, Generator? generator = null) : Module
{
    public double P { get; } = p is >= 0 and <= 1 ? p : throw new ArgumentException($"dropout: probability {p} must be in [0, 1]");
    public Generator? Generator { get; } = generator;

    public override Tensor Forward(Tensor x) => Ops.Dropout(x, P, IsTraining, Generator);
}

public sealed class ReLU : Module { public override Tensor Forward(Tensor x) => x.Relu(); }

public sealed class GELU : Module { public override Tensor Forward(Tensor x) => x.Gelu(); }

public sealed class Tanh : Module { public override Tensor Forward(Tensor x) => x.Tanh(); }

public sealed class SiLU : Module { public override Tensor Forward(Tensor x) => x.Silu(); }

/// <summary>An ordered list of child modules named "0", "1", … (PyTorch's <c>nn.ModuleList</c>).</summary>
public class ModuleList : Module, IReadOnlyList<Module>
{
    private readonly List<Module> _items = [];

    public ModuleList(params IEnumerable<Module> modules) { foreach (var m in modules) Add(m); }

    public void Add(Module m) { RegisterModule(_items.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), m); _items.Add(m); }

    public Module this[int index] => _items[index];
    public int Count => _items.Count;
    public IEnumerator<Module> GetEnumerator() => _items.GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>Children "0", "1", … applied in order (PyTorch's <c>nn.Sequential</c>).</summary>
public sealed class Sequential(params IEnumerable<Module> modules) : ModuleList(modules)
{
    public override Tensor Forward(Tensor x)
    {
        if (Count == 0) return x.Alias();
        var h = this[0].Forward(x);
        for (int i = 1; i < Count; i++)
        {
            var next = this[i].Forward(h);
            if (!ReferenceEquals(next, h)) h.Dispose();   // the graph keeps what backward needs through its own aliases
            h = next;
        }
        return h;
    }
}
