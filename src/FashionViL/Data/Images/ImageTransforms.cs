using FashionViL.Data.Loading;

namespace FashionViL.Data.Images;

/// <summary>One step of an image pipeline (a torchvision transform on a PIL image). Random steps draw from the given stream.</summary>
public interface IImageTransform
{
    RgbImage Apply(RgbImage image, DataRandom random);
}

/// <summary><c>Resize((h, w))</c>: exact size, aspect not kept, PIL bilinear (antialiased when downscaling).</summary>
public sealed record Resize(int Height, int Width) : IImageTransform
{
    public RgbImage Apply(RgbImage image, DataRandom random) => PilResize.Bilinear(image, Width, Height);
}

/// <summary><c>CenterCrop((h, w))</c> with torchvision's rounding: top = round((H−h)/2), left = round((W−w)/2), ties to even.</summary>
public sealed record CenterCrop(int Height, int Width) : IImageTransform
{
    public RgbImage Apply(RgbImage image, DataRandom random)
    {
        if (Height > image.Height || Width > image.Width)
            throw new ArgumentException($"CenterCrop {Width}x{Height} is larger than the {image.Width}x{image.Height} image");
        int top = (int)Math.Round((image.Height - Height) / 2.0, MidpointRounding.ToEven);
        int left = (int)Math.Round((image.Width - Width) / 2.0, MidpointRounding.ToEven);
        return image.Crop(top, left, Height, Width);
    }
}

/// <summary><c>RandomCrop((h, w))</c>: top uniform in [0, H−h], left uniform in [0, W−w] (no padding).</summary>
public sealed record RandomCrop(int Height, int Width) : IImageTransform
{
    public RgbImage Apply(RgbImage image, DataRandom random)
    {
        if (Height > image.Height || Width > image.Width)
            throw new ArgumentException($"RandomCrop {Width}x{Height} is larger than the {image.Width}x{image.Height} image");
        int top = (int)random.NextInclusive(0, image.Height - Height);
        int left = (int)random.NextInclusive(0, image.Width - Width);
        return image.Crop(top, left, Height, Width);
    }
}

/// <summary><c>RandomHorizontalFlip(p)</c>.</summary>
public sealed record RandomHorizontalFlip(double P = 0.5) : IImageTransform
{
    public RgbImage Apply(RgbImage image, DataRandom random) => random.Bernoulli(P) ? image.FlipHorizontal() : image;
}

/// <summary>
/// <c>RandomResizedCrop(size, scale, ratio)</c> (torchvision): up to 10 tries of area fraction ~ U(scale) and log-aspect
/// ~ U(log ratio), w = round(√(A·r)), h = round(√(A/r)); the first box that fits is placed uniformly. Otherwise the
/// fallback: the whole image clamped to the ratio range, centred. The crop is then resized with PIL bilinear.
/// </summary>
public sealed record RandomResizedCrop(int Height, int Width, double ScaleMin = 0.08, double ScaleMax = 1.0,
    double RatioMin = 3.0 / 4.0, double RatioMax = 4.0 / 3.0) : IImageTransform
{
    /// <summary>The crop box (top, left, height, width) for an image of the given size.</summary>
    public (int Top, int Left, int Height, int Width) SampleBox(int imageHeight, int imageWidth, DataRandom random)
    {
        double area = (double)imageHeight * imageWidth;
        double logLo = Math.Log(RatioMin), logHi = Math.Log(RatioMax);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double target = area * random.Uniform(ScaleMin, ScaleMax);
            double aspect = Math.Exp(random.Uniform(logLo, logHi));
            int w = (int)Math.Round(Math.Sqrt(target * aspect), MidpointRounding.ToEven);
            int h = (int)Math.Round(Math.Sqrt(target / aspect), MidpointRounding.ToEven);
            if (w > 0 && w <= imageWidth && h > 0 && h <= imageHeight)
            {
                int i = (int)random.NextInclusive(0, imageHeight - h);
                int j = (int)random.NextInclusive(0, imageWidth - w);
                return (i, j, h, w);
            }
        }
        double inRatio = (double)imageWidth / imageHeight;
        int cw, ch;
        if (inRatio < Math.Min(RatioMin, RatioMax)) { cw = imageWidth; ch = (int)Math.Round(cw / Math.Min(RatioMin, RatioMax), MidpointRounding.ToEven); }
        else if (inRatio > Math.Max(RatioMin, RatioMax)) { ch = imageHeight; cw = (int)Math.Round(ch * Math.Max(RatioMin, RatioMax), MidpointRounding.ToEven); }
        else { cw = imageWidth; ch = imageHeight; }
        return ((imageHeight - ch) / 2, (imageWidth - cw) / 2, ch, cw);
    }

    public RgbImage Apply(RgbImage image, DataRandom random)
    {
        var (top, left, h, w) = SampleBox(image.Height, image.Width, random);
        return PilResize.Bilinear(image.Crop(top, left, h, w), Width, Height);
    }
}

/// <summary>
/// A list of PIL-stage transforms followed by <c>ToTensor</c> (bytes/255, HWC→CHW) and <c>Normalize(mean, std)</c>,
/// both in float32 as torchvision computes them.
/// </summary>
public sealed class ImagePipeline
{
    /// <summary>The dataset mean and std of the reference (spec §5.3; note the small std).</summary>
    public static readonly float[] FashionMean = [0.46777044f, 0.44531429f, 0.40661017f];
    public static readonly float[] FashionStd = [0.12221994f, 0.12145835f, 0.14380469f];

    public IReadOnlyList<IImageTransform> Transforms { get; }
    public float[] Mean { get; }
    public float[] Std { get; }
    /// <summary>Output height and width (the last transform fixes them).</summary>
    public int OutputHeight { get; }
    public int OutputWidth { get; }

    public ImagePipeline(IReadOnlyList<IImageTransform> transforms, int outputHeight, int outputWidth, float[]? mean = null, float[]? std = null)
    {
        Transforms = transforms; OutputHeight = outputHeight; OutputWidth = outputWidth;
        Mean = mean ?? FashionMean; Std = std ?? FashionStd;
        if (Mean.Length != 3 || Std.Length != 3) throw new ArgumentException("ImagePipeline: mean and std need 3 values (RGB)");
    }

    /// <summary>Product datasets (fashionall, FashionGen, Fashion200k, BigFACAD, Polyvore) for training:
    /// Resize(resize×resize) → RandomCrop(crop) → RandomHorizontalFlip(0.5). Reference: resize 256, crop 224.</summary>
    public static ImagePipeline ProductTrain(int resize = 256, int crop = 224) =>
        new([new Resize(resize, resize), new RandomCrop(crop, crop), new RandomHorizontalFlip(0.5)], crop, crop);

    /// <summary>Product datasets for evaluation: Resize(resize×resize) → CenterCrop(crop).</summary>
    public static ImagePipeline ProductEval(int resize = 256, int crop = 224) =>
        new([new Resize(resize, resize), new CenterCrop(crop, crop)], crop, crop);

    /// <summary>FashionIQ and Polyvore OCIR for training: RandomResizedCrop(size, scale 0.8–1.0, ratio 0.75–1.3) → flip.</summary>
    public static ImagePipeline RetrievalTrain(int size = 224) =>
        new([new RandomResizedCrop(size, size, 0.8, 1.0, 0.75, 1.3), new RandomHorizontalFlip(0.5)], size, size);

    /// <summary>FashionIQ and Polyvore OCIR for evaluation: Resize(size×size).</summary>
    public static ImagePipeline RetrievalEval(int size = 224) => new([new Resize(size, size)], size, size);

    /// <summary>The PIL-stage result (before ToTensor).</summary>
    public RgbImage ApplyPil(RgbImage image, DataRandom random)
    {
        foreach (var t in Transforms) image = t.Apply(image, random);
        if (image.Height != OutputHeight || image.Width != OutputWidth)
            throw new InvalidOperationException($"ImagePipeline: transforms produced {image.Width}x{image.Height}, expected {OutputWidth}x{OutputHeight}");
        return image;
    }

    /// <summary>Applies the transforms and writes the normalised CHW float32 result into <paramref name="destination"/>
    /// (3·H·W values, e.g. one sample's slice of a (B,3,H,W) batch tensor).</summary>
    public void Apply(RgbImage image, DataRandom random, Span<float> destination)
    {
        var r = ApplyPil(image, random);
        ToTensorNormalize(r, Mean, Std, destination);
    }

    /// <summary>Applies the transforms and returns a (3,H,W) float32 CPU tensor.</summary>
    public Tensor ApplyToTensor(RgbImage image, DataRandom random)
    {
        var t = Tensor.Empty([3, OutputHeight, OutputWidth], DType.Float32);
        Apply(image, random, t.AsSpan<float>());
        return t;
    }

    /// <summary><c>ToTensor</c> then <c>Normalize</c>: ((byte / 255f) − mean[c]) / std[c], float32, CHW.</summary>
    public static void ToTensorNormalize(RgbImage image, ReadOnlySpan<float> mean, ReadOnlySpan<float> std, Span<float> destination)
    {
        int hw = image.Height * image.Width;
        if (destination.Length != 3 * hw)
            throw new ArgumentException($"ToTensor: destination has {destination.Length} floats, image {image.Width}x{image.Height} needs {3 * hw}");
        var p = image.Pixels;
        Span<float> lut = stackalloc float[256];
        for (int c = 0; c < 3; c++)
        {
            float m = mean[c], s = std[c];
            for (int b = 0; b < 256; b++) lut[b] = (b / 255f - m) / s; // the same float32 ops per value, computed once
            var d = destination.Slice(c * hw, hw);
            for (int i = 0; i < hw; i++) d[i] = lut[p[i * 3 + c]];
        }
    }
}
