using FashionViL.Config;
using FashionViL.Data;
using FashionViL.Data.Datasets;
using FashionViL.Data.Images;
using FashionViL.Data.Loading;
using FashionViL.Model;
using FashionViL.Nn.Models;

namespace FashionViL.Downstream.FashionGen;

/// <summary>
/// A collated FashionGen batch (CPU tensors, owned): one image per row (B,3,H,W) float32, that row's product text
/// (B,T) int64 (<c>input_ids</c>, <c>segment_ids</c>, <c>input_mask</c>), the class target (B) int64
/// (<c>subcategory_id</c>, or <c>category_id</c> with <c>category_label: true</c>) and the product ids.
/// </summary>
public sealed class FashionGenBatch : IDisposable
{
    public required Tensor Image { get; init; }
    public required Tensor InputIds { get; init; }
    public required Tensor SegmentIds { get; init; }
    public required Tensor InputMask { get; init; }
    public required Tensor Targets { get; init; }
    public required long[] Ids { get; init; }
    public int Size => Ids.Length;

    public void Dispose()
    {
        Image.Dispose(); InputIds.Dispose(); SegmentIds.Dispose(); InputMask.Dispose(); Targets.Dispose();
    }
}

/// <summary>One evaluation row: image <see cref="Image"/> of product <see cref="Product"/> (an index into the split's list).</summary>
public readonly record struct FashionGenImageRow(int Product, int Image);

/// <summary>
/// The FashionGen input side of both downstream tasks (spec §4.1, §4.3, §5): the products of each split
/// (<c>dataset_config.fashiongen.annotations/images</c>), the ProductTrain / ProductEval image pipelines, and the
/// reference <c>bert_tokenizer</c> (no masking, <c>max_seq_length</c> 75). Training: one product = one sample, one of its
/// images drawn uniformly (<c>random.choices</c>) from the sample's stream, then the train transform from the same stream.
/// Evaluation: every image of every product is a row (<see cref="EvalRows"/>), texts once per product.
/// </summary>
public sealed class FashionGenData
{
    public const string D = "dataset_config.fashiongen.";
    private const string M = "model_config.fashionvil.";

    private readonly Func<string, IReadOnlyList<ProductRecord>> _read;
    private readonly Dictionary<string, IReadOnlyList<ProductRecord>> _splits = new(StringComparer.Ordinal);
    private readonly object _lock = new();

    public ImagePipeline TrainPipeline { get; }
    public ImagePipeline EvalPipeline { get; }
    public BertTextTokenizer Tokenizer { get; }
    public int MaxSeqLength { get; }
    /// <summary>true: targets are <c>category_id</c> instead of <c>subcategory_id</c>.</summary>
    public bool CategoryLabel { get; }
    /// <summary>Number of classes; a target outside [0, NumLabels) is an error naming the product.</summary>
    public int NumLabels { get; }
    /// <summary>Evaluate only the first N products of a split (0 = all; <c>evaluation.max_items</c>).</summary>
    public int MaxEvalItems { get; }
    public int EvalBatchSize { get; }

    /// <param name="read">split name ("train", "val", "test") → its products; called once per split, on first use.</param>
    public FashionGenData(Func<string, IReadOnlyList<ProductRecord>> read, ImagePipeline train, ImagePipeline eval, int maxSeqLength,
        int numLabels = ProductDatasets.NumSubcategories, bool categoryLabel = false, int maxEvalItems = 0, int evalBatchSize = 64,
        BertTextTokenizer? tokenizer = null)
    {
        _read = read;
        TrainPipeline = train; EvalPipeline = eval;
        BertTextTokenizer.MaxPieces(maxSeqLength); // validates
        MaxSeqLength = maxSeqLength;
        if (numLabels < 1) throw new ArgumentException($"fashiongen: num_labels {numLabels} must be positive");
        if (evalBatchSize < 1) throw new ArgumentException($"fashiongen: evaluation batch size {evalBatchSize} must be positive");
        NumLabels = numLabels; CategoryLabel = categoryLabel; MaxEvalItems = maxEvalItems; EvalBatchSize = evalBatchSize;
        Tokenizer = tokenizer ?? BertTextTokenizer.Default;
    }

    /// <summary>Reads <c>dataset_config.fashiongen.*</c>, <c>model_config.fashionvil.num_labels</c> and <c>evaluation.*</c>.</summary>
    public static FashionGenData FromConfig(FvConfig c)
    {
        if (!c.GetBool(D + "use_images") || c.GetBool(D + "use_features"))
            throw new ConfigException($"{D}use_images = false / use_features = true is not supported: the FashionGen tasks read images");
        const string P = D + "processors.image_processor.";
        int resize = c.GetInt(P + "resize"), crop = c.GetInt(P + "crop");
        if (crop > resize || crop < 1) throw new ConfigException($"{P}crop {crop} must be positive and at most resize {resize}");
        var mean = c.GetDoubleList(P + "mean").Select(v => (float)v).ToArray();
        var std = c.GetDoubleList(P + "std").Select(v => (float)v).ToArray();
        if (mean.Length != 3 || std.Length != 3 || std.Any(s => !(s > 0)))
            throw new ConfigException($"{P}mean and std need 3 values each, std positive");
        var train = new ImagePipeline([new Resize(resize, resize), new RandomCrop(crop, crop), new RandomHorizontalFlip()], crop, crop, mean, std);
        var eval = new ImagePipeline([new Resize(resize, resize), new CenterCrop(crop, crop)], crop, crop, mean, std);
        int maxLen = c.GetInt(D + "processors.text_processor.max_seq_length");
        try
        {
            return new FashionGenData(split => Products(c, split), train, eval, maxLen, c.GetInt(M + "num_labels"), c.GetBool(D + "category_label"),
                c.GetInt("evaluation.max_items"), c.GetInt("evaluation.batch_size"));
        }
        catch (ArgumentException e) { throw new ConfigException($"{D}: {e.Message}"); }
    }

    /// <summary>The products of <paramref name="split"/>: each annotation file of <c>annotations.&lt;split&gt;</c> with the image
    /// folder of <c>images.&lt;split&gt;</c>, concatenated; files must exist and hold FashionGen fields.</summary>
    public static List<ProductRecord> Products(FvConfig c, string split)
    {
        if (split is not ("train" or "val" or "test")) throw new ArgumentException($"fashiongen: split '{split}' must be train, val or test");
        var dataDir = c.GetString(D + "data_dir");
        var anns = c.GetStringList(D + "annotations." + split);
        var imgs = c.GetStringList(D + "images." + split);
        if (anns.Count != imgs.Count || anns.Count == 0)
            throw new ConfigException($"{D}annotations.{split} lists {anns.Count} files but {D}images.{split} lists {imgs.Count} folders (need the same positive number)");
        var list = new List<ProductRecord>();
        for (int i = 0; i < anns.Count; i++)
        {
            var ann = Path.Combine(dataDir, anns[i]);
            if (!File.Exists(ann))
                throw new FileNotFoundException($"{D}annotations.{split}: annotation file not found: {ann} (data_dir = {dataDir}; `fashionvil synth --out DIR` writes a generated copy of the layout)", ann);
            list.AddRange(ProductDatasets.Read(ann, Path.Combine(dataDir, imgs[i]), ProductSource.FashionGen));
        }
        return list;
    }

    /// <summary>The products of a split (read once). Evaluation splits are cut to <see cref="MaxEvalItems"/>.</summary>
    public IReadOnlyList<ProductRecord> Split(string split)
    {
        lock (_lock)
        {
            if (_splits.TryGetValue(split, out var p)) return p;
            var all = _read(split);
            if (all.Count == 0) throw new InvalidDataException($"fashiongen: the {split} split holds no products");
            if (split != "train" && MaxEvalItems > 0 && all.Count > MaxEvalItems) all = all.Take(MaxEvalItems).ToList();
            _splits[split] = all;
            return all;
        }
    }

    /// <summary>The class target of a product, checked against <see cref="NumLabels"/>.</summary>
    public long Target(ProductRecord p)
    {
        int? t = CategoryLabel ? p.CategoryId : p.SubcategoryId;
        string field = CategoryLabel ? "category_id" : "subcategory_id";
        if (t is null) throw new InvalidDataException($"fashiongen product {p.Id}: no {field}");
        if (t < 0 || t >= NumLabels) throw new InvalidDataException($"fashiongen product {p.Id}: {field} {t} is outside [0, {NumLabels}) (model_config.fashionvil.num_labels)");
        return t.Value;
    }

    /// <summary>The tokenised text of one product: (input_ids, input_mask, segment_ids), each of length <see cref="MaxSeqLength"/>.</summary>
    public EncodedText Encode(ProductRecord p) => Tokenizer.Encode(p.Text, MaxSeqLength);

    /// <summary>Builds a training batch: for each index, one image drawn uniformly from the product's images, the train
    /// transform, the product text (no masking) and its target — all draws from the sample's own stream.</summary>
    public FashionGenBatch BuildTrainBatch(BatchContext ctx)
    {
        var products = Split("train");
        var samples = ctx.LoadSamples((idx, rnd) =>
        {
            var p = products[idx];
            var path = ProductViews.DrawOne(p, rnd);
            var image = ProductImageLoading.LoadView(path, TrainPipeline, rnd);
            return (p, image, text: Encode(p), target: Target(p));
        });
        if (samples.Count == 0) throw new InvalidDataException($"fashiongen: batch {ctx.BatchIndex} of epoch {ctx.Epoch}: every sample failed to load");
        return Collate(samples.Select(s => s.image).ToList(), samples.Select(s => s.text).ToList(),
            samples.Select(s => s.target).ToArray(), samples.Select(s => s.p.Id).ToArray(), TrainPipeline);
    }

    /// <summary>Every image of every product, in product order then image order (the reference's flattened val batch).</summary>
    public static List<FashionGenImageRow> EvalRows(IReadOnlyList<ProductRecord> products)
    {
        var rows = new List<FashionGenImageRow>();
        for (int i = 0; i < products.Count; i++)
            for (int k = 0; k < products[i].Images.Count; k++) rows.Add(new(i, k));
        return rows;
    }

    /// <summary>An evaluation batch of image rows: the eval transform of each row's image, its product's text repeated
    /// per image, target and id. Images load in parallel; a bad file throws naming it.</summary>
    public FashionGenBatch BuildEvalBatch(IReadOnlyList<ProductRecord> products, IReadOnlyList<FashionGenImageRow> rows)
    {
        var images = new float[rows.Count][];
        Parallel.For(0, rows.Count, i =>
        {
            var r = rows[i];
            images[i] = ProductImageLoading.LoadView(products[r.Product].Images[r.Image], EvalPipeline, new DataRandom(0));
        });
        var texts = new Dictionary<int, EncodedText>();
        foreach (var r in rows) if (!texts.ContainsKey(r.Product)) texts[r.Product] = Encode(products[r.Product]);
        return Collate(images, rows.Select(r => texts[r.Product]).ToList(), rows.Select(r => Target(products[r.Product])).ToArray(),
            rows.Select(r => products[r.Product].Id).ToArray(), EvalPipeline);
    }

    /// <summary>The texts of <paramref name="products"/> (one row each) as (input_ids, segment_ids, input_mask) int64 CPU tensors.</summary>
    public (Tensor InputIds, Tensor SegmentIds, Tensor InputMask) EncodeTexts(IReadOnlyList<ProductRecord> products)
    {
        var enc = products.Select(Encode).ToList();
        var ids = TextCollator.Stack(enc.Select(e => e.InputIds).ToList(), "input_ids");
        var seg = TextCollator.Stack(enc.Select(e => e.SegmentIds).ToList(), "segment_ids");
        var mask = TextCollator.Stack(enc.Select(e => e.InputMask).ToList(), "input_mask");
        return (ids, seg, mask);
    }

    private static FashionGenBatch Collate(IReadOnlyList<float[]> images, IReadOnlyList<EncodedText> texts, long[] targets, long[] ids, ImagePipeline pipeline)
    {
        var image = ProductImageLoading.Stack(images, pipeline.OutputHeight, pipeline.OutputWidth);
        return new FashionGenBatch
        {
            Image = image,
            InputIds = TextCollator.Stack(texts.Select(t => t.InputIds).ToList(), "input_ids"),
            SegmentIds = TextCollator.Stack(texts.Select(t => t.SegmentIds).ToList(), "segment_ids"),
            InputMask = TextCollator.Stack(texts.Select(t => t.InputMask).ToList(), "input_mask"),
            Targets = Tensor.FromArray(targets, [targets.Length], Device.Cpu),
            Ids = ids,
        };
    }

    /// <summary>
    /// The model sizes of a FashionGen fine-tune: BERT from <c>model_config.fashionvil.bert.*</c>, the ResNet from
    /// <c>image_encoder.params.{blocks,base_width}</c>, the image side from <c>dataset_config.fashiongen.processors.image_processor.crop</c>
    /// (so the tiny pre-trained model can be fine-tuned). Unsupported switches are refused by name.
    /// </summary>
    public static FashionViLConfig ModelConfig(FvConfig c)
    {
        var bert = new BertConfig(
            HiddenSize: c.GetInt(M + "bert.hidden_size"), NumHiddenLayers: c.GetInt(M + "bert.num_hidden_layers"),
            NumAttentionHeads: c.GetInt(M + "bert.num_attention_heads"), IntermediateSize: c.GetInt(M + "bert.intermediate_size"),
            MaxPositionEmbeddings: c.GetInt(M + "bert.max_position_embeddings"),
            HiddenDropoutProb: c.GetDouble(M + "bert.hidden_dropout_prob"), AttentionProbsDropoutProb: c.GetDouble(M + "bert.attention_probs_dropout_prob"));
        var mc = new FashionViLConfig
        {
            Bert = bert,
            ResNet = new ResNetConfig(c.GetIntList(M + "image_encoder.params.blocks").ToArray(), c.GetInt(M + "image_encoder.params.base_width")),
            ImageSize = c.GetInt(D + "processors.image_processor.crop"),
        };
        try { mc.Validate(); }
        catch (ArgumentException e) { throw new ConfigException($"model_config.fashionvil: {e.Message}"); }
        if (!c.GetBool(M + "bypass_transformer"))
            throw new ConfigException($"{M}bypass_transformer = false is not supported: every FashionViL config of the reference sets it to true");
        if (c.GetBool(M + "no_sharing")) throw new ConfigException($"{M}no_sharing = true is not supported (the reference shares one BERT)");
        if (c.GetBool(M + "direct_features_input")) throw new ConfigException($"{M}direct_features_input = true is not supported (images go through the ResNet)");
        if (c.GetBool(M + "freeze_image_encoder")) throw new ConfigException($"{M}freeze_image_encoder = true is not supported by the FashionGen tasks");
        return mc;
    }

    /// <summary>Checks <c>model_config.fashionvil.training_head_type</c> and <c>losses</c> (empty, or exactly the task's loss).</summary>
    internal static void CheckHead(FvConfig c, string headType, string loss)
    {
        var head = c.GetString(M + "training_head_type");
        if (head != headType)
            throw new ConfigException($"{M}training_head_type = '{head}', but this task needs '{headType}' (set it in the config or on the command line)");
        foreach (var (l, i) in c.GetMappingList(M + "losses").Select((l, i) => (l, i)))
        {
            var type = l.TryGetValue("type", out var t) ? t as string : null;
            if (type != loss) throw new ConfigException($"{M}losses[{i}].type = '{type}': the {headType} task trains with '{loss}' only");
        }
    }
}
