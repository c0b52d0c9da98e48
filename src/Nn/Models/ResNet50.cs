using FashionViL.Autograd;
using FashionViL.Tensors;

namespace FashionViL.Nn.Models;

/// <summary>torchvision bottleneck (v1.5: the stride sits on the 3×3 conv). Names conv1..3, bn1..3, downsample.{0,1}.</summary>
public sealed class Bottleneck : Module
{
    public const int Expansion = 4;
    private readonly Conv2d _conv1, _conv2, _conv3;
    private readonly BatchNorm2d _bn1, _bn2, _bn3;
    private readonly Sequential? _downsample;

    public Bottleneck(int inplanes, int planes, int stride, bool downsample, Generator? g, DType dtype)
    {
        _conv1 = RegisterModule("conv1", new Conv2d(inplanes, planes, 1, bias: false, generator: g, dtype: dtype));
        _bn1 = RegisterModule("bn1", new BatchNorm2d(planes, dtype: dtype));
        _conv2 = RegisterModule("conv2", new Conv2d(planes, planes, 3, stride: stride, padding: 1, bias: false, generator: g, dtype: dtype));
        _bn2 = RegisterModule("bn2", new BatchNorm2d(planes, dtype: dtype));
        _conv3 = RegisterModule("conv3", new Conv2d(planes, planes * Expansion, 1, bias: false, generator: g, dtype: dtype));
        _bn3 = RegisterModule("bn3", new BatchNorm2d(planes * Expansion, dtype: dtype));
        // ReLU has no parameters: torchvision's "relu" child contributes no state-dict keys, so it is applied inline.
        if (downsample)
            _downsample = RegisterModule("downsample", new Sequential(
                new Conv2d(inplanes, planes * Expansion, 1, stride: stride, bias: false, generator: g, dtype: dtype),
                new BatchNorm2d(planes * Expansion, dtype: dtype)));
    }

    public override Tensor Forward(Tensor x)
    {
        // conv → bn → relu, conv → bn → relu, conv → bn (+ identity) → relu; each bn with its relu and the residual add
        // is one fused op (BatchNorm2d.Forward(x, residual, relu)).
        // intermediates are freed as soon as they are used: the graph keeps what backward needs through its own aliases
        var h = Step(_conv1.Forward(x), _bn1, null);
        var h2 = Step(_conv2.Forward(h), _bn2, null);
        h.Dispose();
        var identity = _downsample is null ? x : _downsample.Forward(x);
        var y = Step(_conv3.Forward(h2), _bn3, identity);
        h2.Dispose();
        if (_downsample is not null) identity.Dispose();
        return y;
    }

    private static Tensor Step(Tensor conv, BatchNorm2d bn, Tensor? residual)
    {
        var y = bn.Forward(conv, residual, relu: true);
        conv.Dispose();
        return y;
    }
}

/// <summary>
/// torchvision ResNet-50 (v1.5) with torchvision's state-dict names: conv1, bn1, layer1..layer4 (3, 4, 6, 3 bottlenecks),
/// and fc (only when <c>includeFc</c>). <see cref="ForwardGrid"/> gives the last stage as (B, H·W, 2048) — (B, 49, 2048)
/// for 224×224 input — and <see cref="ForwardPooled"/> the global average (B, 2048).
/// </summary>
public sealed class ResNet50 : Module
{
    public static readonly int[] Blocks = [3, 4, 6, 3];
    public static readonly int[] Planes = [64, 128, 256, 512];
    public const int FeatureDim = 2048;

    private readonly Conv2d _conv1;
    private readonly BatchNorm2d _bn1;
    private readonly Sequential[] _layers = new Sequential[4];
    public Linear? Fc { get; }

    public ResNet50(bool includeFc = false, int numClasses = 1000, Generator? generator = null, DType dtype = DType.Float32)
    {
        _conv1 = RegisterModule("conv1", new Conv2d(3, 64, 7, stride: 2, padding: 3, bias: false, generator: generator, dtype: dtype));
        _bn1 = RegisterModule("bn1", new BatchNorm2d(64, dtype: dtype));
        int inplanes = 64;
        for (int s = 0; s < 4; s++)
        {
            var blocks = new List<Module>();
            int stride = s == 0 ? 1 : 2;
            for (int i = 0; i < Blocks[s]; i++)
            {
                bool ds = i == 0 && (stride != 1 || inplanes != Planes[s] * Bottleneck.Expansion);
                blocks.Add(new Bottleneck(inplanes, Planes[s], i == 0 ? stride : 1, ds, generator, dtype));
                inplanes = Planes[s] * Bottleneck.Expansion;
            }
            _layers[s] = RegisterModule($"layer{s + 1}", new Sequential(blocks));
        }
        if (includeFc) Fc = RegisterModule("fc", new Linear(FeatureDim, numClasses, generator: generator, dtype: dtype));
    }

    /// <summary>Stage <paramref name="index"/> (1..4) as registered under "layer{index}".</summary>
    public Sequential Layer(int index) => index is >= 1 and <= 4 ? _layers[index - 1]
        : throw new ArgumentOutOfRangeException(nameof(index), $"resnet50: layer index {index} must be 1..4");

    /// <summary>The last feature map [B, 2048, H/32, W/32].</summary>
    public Tensor ForwardFeatures(Tensor x)
    {
        if (x.Rank != 4 || x.Size(1) != 3)
            throw new ArgumentException($"resnet50: input {x.ShapeString} must be [B,3,H,W]");
        // intermediates are freed as soon as they are used: the graph keeps what backward needs through its own aliases
        var c = _conv1.Forward(x);
        var r = _bn1.Forward(c, null, relu: true);
        c.Dispose();
        var h = Ops.MaxPool2d(r, 3, 2, 1);
        r.Dispose();
        foreach (var layer in _layers)
        {
            var next = layer.Forward(h);
            if (!ReferenceEquals(next, h)) h.Dispose();
            h = next;
        }
        return h;
    }

    /// <summary>(B, H'·W', 2048): the final grid, row-major over positions (49 positions for 224×224 input).</summary>
    public Tensor ForwardGrid(Tensor x)
    {
        using var f = ForwardFeatures(x);
        using var flat = f.Flatten(2);             // [B, 2048, HW]
        using var t = flat.Transpose(1, 2);        // [B, HW, 2048]
        return t.Contiguous();
    }

    /// <summary>(B, 2048): adaptive average pool of the final grid.</summary>
    public Tensor ForwardPooled(Tensor x)
    {
        using var f = ForwardFeatures(x);
        using var p = Ops.AdaptiveAvgPool2d(f, 1, 1);
        return p.Flatten(1);
    }

    /// <summary>Class logits through <c>fc</c> (requires <c>includeFc</c>).</summary>
    public override Tensor Forward(Tensor x)
    {
        if (Fc is null) throw new InvalidOperationException("resnet50: built without fc (includeFc: false); use ForwardPooled or ForwardGrid");
        using var p = ForwardPooled(x);
        return Fc.Forward(p);
    }

    /// <summary>Freezes the stem (conv1, bn1) when n ≥ 1, and layer1..layer(n−1) (like detectron's freeze_at): n = 0 freezes nothing, n = 5 everything but fc.</summary>
    public ResNet50 FreezeStages(int n)
    {
        if (n is < 0 or > 5) throw new ArgumentOutOfRangeException(nameof(n), $"resnet50: FreezeStages({n}) must be 0..5");
        if (n >= 1) { _conv1.Freeze(); _bn1.Freeze(); }
        for (int s = 1; s < n; s++) _layers[s - 1].Freeze();
        return this;
    }

    /// <summary>Freezes every BatchNorm (no gradients for weight/bias; eval mode, running statistics fixed).</summary>
    public ResNet50 FreezeBatchNorm()
    {
        foreach (var (_, m) in NamedModules()) if (m is BatchNorm2d bn) bn.Freeze();
        return this;
    }
}
