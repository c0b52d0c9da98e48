using FashionViL.Config;
using FashionViL.Data;
using FashionViL.Data.Datasets;
using FashionViL.Data.Images;
using FashionViL.Data.Loading;

namespace FashionViL.Training;

/// <summary>
/// The pre-training input pipeline (spec §2.0, §5): products → two augmented views, masked and unmasked text, the
/// block mask and the soft attribute vector, collated into a <see cref="PretrainBatch"/> by a
/// <see cref="PrefetchLoader{TBatch}"/>. Every random choice comes from streams keyed by (seed, epoch, sample), so a
/// batch depends only on the loader position — the basis of exact resume.
/// </summary>
public sealed class PretrainData
{
    private const string D = "dataset_config.fashionall.";
    public IReadOnlyList<ProductRecord> Products { get; }
    public ImagePipeline TrainPipeline { get; }
    public ImagePipeline EvalPipeline { get; }
    public PretrainTextProcessor Text { get; }
    public PretrainTextProcessor EvalText { get; }
    public BlockMaskGenerator BlockMask { get; }
    public long Seed { get; }
    public int GridSide { get; }

    public PretrainData(FvConfig c, IReadOnlyList<ProductRecord> products, int gridSide, long seed)
    {
        Products = products;
        Seed = seed;
        GridSide = gridSide;
        int resize = c.GetInt(D + "processors.image_processor.resize"), crop = c.GetInt(D + "processors.image_processor.crop");
        if (crop > resize) throw new ConfigException($"{D}processors.image_processor: crop {crop} is larger than resize {resize}");
        var mean = c.GetDoubleList(D + "processors.image_processor.mean").Select(v => (float)v).ToArray();
        var std = c.GetDoubleList(D + "processors.image_processor.std").Select(v => (float)v).ToArray();
        if (mean.Length != 3 || std.Length != 3 || std.Any(s => !(s > 0)))
            throw new ConfigException($"{D}processors.image_processor: mean and std need 3 values each, std positive");
        TrainPipeline = new ImagePipeline([new Resize(resize, resize), new RandomCrop(crop, crop), new RandomHorizontalFlip()], crop, crop, mean, std);
        EvalPipeline = new ImagePipeline([new Resize(resize, resize), new CenterCrop(crop, crop)], crop, crop, mean, std);
        const string T = D + "processors.masked_token_processor.params.";
        Text = new PretrainTextProcessor(c.GetInt(T + "max_seq_length"), c.GetDouble(T + "mask_probability"), wholeWord: c.GetBool(T + "do_whole_word_mask"));
        EvalText = new PretrainTextProcessor(c.GetInt(D + "processors.text_processor.max_seq_length"), 0.0);
        const string B = D + "processors.masked_image_processor.";
        BlockMask = new BlockMaskGenerator(gridSide, gridSide, c.GetInt(B + "num_masking_patches"), c.GetInt(B + "min_num_patches"), c.GetInt(B + "max_num_patches"));
    }

    private ulong EpochSeed(int epoch) => unchecked((ulong)Seed * 0x9E3779B97F4A7C15UL ^ ((ulong)(uint)epoch << 17) ^ 0x5DEECE66DUL);

    /// <summary>Builds one training batch (the loader's builder).</summary>
    public PretrainBatch Build(BatchContext ctx)
    {
        var samples = ctx.LoadSamples((idx, rnd) =>
        {
            var p = Products[idx];
            var views = ProductImageLoading.LoadTwoViews(p, TrainPipeline, rnd);
            var seed = EpochSeed(ctx.Epoch);
            var text = Text.Process(p.Text, PhiloxRandom.ForSample(seed, idx, PhiloxRandom.Purpose.TextMask));
            var mask = BlockMask.Generate(PhiloxRandom.ForSample(seed, idx, PhiloxRandom.Purpose.ImageMask));
            float[] attrs;
            try { attrs = PseudoAttributes.Soft(p.AttributeIds); }
            catch (ArgumentException e) { throw new InvalidDataException($"{p.Dataset} product {p.Id}: {e.Message}", e); }
            return (views, text, mask, attrs);
        });
        if (samples.Count == 0) throw new InvalidDataException($"batch {ctx.BatchIndex} of epoch {ctx.Epoch}: every sample failed to load");
        int h = TrainPipeline.OutputHeight, w = TrainPipeline.OutputWidth;
        var collated = TextCollator.Collate(samples.Select(s => s.text).ToList());
        return new PretrainBatch
        {
            Image = ProductImageLoading.Stack(samples.Select(s => s.views.Image).ToList(), h, w),
            DvImage = ProductImageLoading.Stack(samples.Select(s => s.views.DvImage).ToList(), h, w),
            InputIds = collated.InputIds,
            InputIdsMasked = collated.InputIdsMasked,
            InputMask = collated.InputMask,
            SegmentIds = collated.SegmentIds,
            LmLabelIds = collated.LmLabelIds,
            AttributeLabels = TextCollator.Stack(samples.Select(s => s.attrs).ToList(), "attribute_labels"),
            ImageMasks = TextCollator.Stack(samples.Select(s => s.mask).ToList(), "image_masks"),
            Ids = samples.Select(s => s.views.Id).ToArray(),
        };
    }

    /// <summary>Evaluation inputs for a list of products: the first image of each (eval transform) and the unmasked text.</summary>
    public (Tensor Images, Tensor InputIds, Tensor SegmentIds, Tensor InputMask) BuildEval(IReadOnlyList<ProductRecord> products)
    {
        var images = new float[products.Count][];
        var texts = new PretrainTextSample[products.Count];
        Parallel.For(0, products.Count, i =>
        {
            var p = products[i];
            images[i] = ProductImageLoading.LoadView(p.Images[0], EvalPipeline, DataRandom.ForSample(Seed, 0, i));
            texts[i] = EvalText.Process(p.Text, new Random(0));
        });
        using var collated = TextCollator.Collate(texts);
        return (ProductImageLoading.Stack(images, EvalPipeline.OutputHeight, EvalPipeline.OutputWidth),
            collated.InputIds.Alias(), collated.SegmentIds.Alias(), collated.InputMask.Alias());
    }
}
