using FashionViL.Data.Datasets;
using FashionViL.Data.Images;

namespace FashionViL.Data.Loading;

/// <summary>The image side of one pre-training sample: the product id and its two normalised CHW views.</summary>
public sealed record ProductViewsSample(long Id, float[] Image, float[] DvImage);

/// <summary>
/// From product records to image tensors: the two views of spec §2.0 (drawn with replacement, each through the train
/// pipeline), and the stacking of per-sample CHW arrays into a (B,3,H,W) batch tensor. Use inside a
/// <see cref="PrefetchLoader{TBatch}"/> builder via <see cref="BatchContext.LoadSamples{T}"/> so bad files follow the policy.
/// </summary>
public static class ProductImageLoading
{
    /// <summary>One view: resolve the path (extension fallback), decode, transform, normalise.</summary>
    public static float[] LoadView(string path, ImagePipeline pipeline, DataRandom random, ImageDecodeLimits? limits = null)
    {
        var img = ImageLoader.LoadWithFallback(path, limits);
        var chw = new float[3 * pipeline.OutputHeight * pipeline.OutputWidth];
        pipeline.Apply(img, random, chw);
        return chw;
    }

    /// <summary>
    /// Both views of a product, in the reference's order of random draws: the two image choices first, then the
    /// transform of the first view, then of the second (all from <paramref name="random"/>). When both draws pick the same
    /// file it is decoded once, but each view is still augmented independently.
    /// </summary>
    public static ProductViewsSample LoadTwoViews(ProductRecord product, ImagePipeline pipeline, DataRandom random, ImageDecodeLimits? limits = null)
    {
        var (a, b) = ProductViews.DrawTwo(product, random);
        var imgA = ImageLoader.LoadWithFallback(a, limits);
        var imgB = a == b ? imgA : ImageLoader.LoadWithFallback(b, limits);
        int n = 3 * pipeline.OutputHeight * pipeline.OutputWidth;
        var va = new float[n]; var vb = new float[n];
        pipeline.Apply(imgA, random, va);
        pipeline.Apply(imgB, random, vb);
        return new ProductViewsSample(product.Id, va, vb);
    }

    /// <summary>Stacks CHW arrays of one size into a (B,3,H,W) float32 CPU tensor.</summary>
    public static Tensor Stack(IReadOnlyList<float[]> chw, int height, int width)
    {
        int n = 3 * height * width;
        var t = Tensor.Empty([chw.Count, 3, height, width], DType.Float32);
        var dst = t.AsSpan<float>();
        for (int i = 0; i < chw.Count; i++)
        {
            if (chw[i].Length != n)
            {
                t.Dispose();
                throw new ArgumentException($"Stack: sample {i} has {chw[i].Length} values, expected 3x{height}x{width} = {n}");
            }
            chw[i].CopyTo(dst.Slice(i * n, n));
        }
        return t;
    }
}
