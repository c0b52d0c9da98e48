using FashionViL.Autograd;
using FashionViL.Nn;
using FashionViL.Nn.Models;

namespace FashionViL.Model;

/// <summary>
/// The torchvision ResNet children minus avgpool/fc as an <c>nn.Sequential</c> (MMF's <c>TorchvisionResNetImageEncoder.model</c>):
/// child names <c>0</c> = conv1, <c>1</c> = bn1, (2 = relu, 3 = maxpool: no parameters), <c>4</c>..<c>7</c> = layer1..layer4,
/// so the keys are <c>0.weight</c>, <c>1.running_mean</c>, <c>4.0.conv1.weight</c>, <c>7.2.downsample.1.bias</c> … exactly
/// as in the authors' checkpoint. The bottlenecks are <see cref="Bottleneck"/> from FashionViL.Nn.
/// </summary>
public sealed class ResNetTrunk : Module
{
    private readonly Conv2d _conv1;
    private readonly BatchNorm2d _bn1;
    private readonly Sequential[] _layers = new Sequential[4];
    public ResNetConfig Config { get; }

    public ResNetTrunk(ResNetConfig config, Generator? g = null, DType dtype = DType.Float32)
    {
        config.Validate();
        Config = config;
        int w = config.BaseWidth;
        _conv1 = RegisterModule("0", new Conv2d(3, w, 7, stride: 2, padding: 3, bias: false, generator: g, dtype: dtype));
        _bn1 = RegisterModule("1", new BatchNorm2d(w, dtype: dtype));
        int inplanes = w;
        for (int s = 0; s < 4; s++)
        {
            int planes = w << s, stride = s == 0 ? 1 : 2;
            var blocks = new List<Module>();
            for (int i = 0; i < config.Blocks[s]; i++)
            {
                bool ds = i == 0 && (stride != 1 || inplanes != planes * Bottleneck.Expansion);
                blocks.Add(new Bottleneck(inplanes, planes, i == 0 ? stride : 1, ds, g, dtype));
                inplanes = planes * Bottleneck.Expansion;
            }
            _layers[s] = RegisterModule((4 + s).ToString(System.Globalization.CultureInfo.InvariantCulture), new Sequential(blocks));
        }
        // torchvision's init: conv weights kaiming-normal (fan_out, relu gain); BatchNorm 1/0 (already).
        foreach (var (_, m) in NamedModules())
            if (m is Conv2d c)
            {
                var ws = c.Weight.Shape;
                Init.Normal(c.Weight, 0, Math.Sqrt(2.0 / (ws[0] * ws[2] * ws[3])), g);
            }
    }

    /// <summary>x [B,3,H,W] → the last feature map [B, C, H/32, W/32].</summary>
    public override Tensor Forward(Tensor x)
    {
        if (x.Rank != 4 || x.Size(1) != 3)
            throw new ArgumentException($"fashionvil image encoder: input {x.ShapeString} must be [B,3,H,W]");
        using var c = _conv1.Forward(x);
        using var r = _bn1.Forward(c, null, relu: true);
        var h = Ops.MaxPool2d(r, 3, 2, 1);
        foreach (var layer in _layers)
        {
            var next = layer.Forward(h);
            h.Dispose();
            h = next;
        }
        return h;
    }
}

/// <summary>MMF's <c>TorchvisionResNetImageEncoder</c> with <c>num_output_features: -1</c>: child <c>model</c> (the trunk);
/// the output grid is flattened row-major and transposed to (B, G, C).</summary>
public sealed class ImageEncoder : Module
{
    public ResNetTrunk Model { get; }

    public ImageEncoder(ResNetConfig config, Generator? g = null, DType dtype = DType.Float32) =>
        Model = RegisterModule("model", new ResNetTrunk(config, g, dtype));

    /// <summary>images [B,3,H,W] → grid features (B, (H/32)·(W/32), C), token index = row·(W/32) + col.</summary>
    public override Tensor Forward(Tensor images)
    {
        using var f = Model.Forward(images);
        using var flat = f.Flatten(2);
        using var t = flat.Transpose(1, 2);
        return t.Contiguous();
    }
}
