using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data.Datasets;
using FashionViL.Data.Images;
using FashionViL.Data.Loading;
using FashionViL.Data;
using FashionViL.Eval;
using FashionViL.Model;
using FashionViL.Nn;
using FashionViL.Nn.Models;
using FashionViL.Nn.Optim;

namespace FashionViL.Downstream.FashionIq;

/// <summary>
/// One collated FashionIQ batch (CPU): the tokenised modification texts (B,T) int64 (<c>input_ids</c>, <c>input_mask</c>,
/// <c>segment_ids</c>) and the reference and target images (B,3,S,S) float32.
/// </summary>
public sealed record FashionIqBatch(Tensor InputIds, Tensor InputMask, Tensor SegmentIds, Tensor RefImage, Tensor TarImage) : IDisposable
{
    public int Count => InputIds.Size(0);

    public void Dispose()
    {
        InputIds.Dispose(); InputMask.Dispose(); SegmentIds.Dispose(); RefImage.Dispose(); TarImage.Dispose();
    }
}

/// <summary>
/// Text-guided image retrieval on FashionIQ (spec §4.2): <see cref="FashionViLComposition"/> trained with <c>bbc_loss</c> on
/// the train triplets of the configured garment classes, evaluated with <c>r@k_fashioniq</c> on val (test = val).
/// </summary>
public sealed class FashionIqTask : IFinetuneTask<FashionIqBatch>
{
    private const string M = "model_config.fashionvil.";
    private const string D = "dataset_config.fashioniq.";

    private readonly List<FashionIqTriplet> _train;
    private readonly EncodedText[] _trainText;
    private readonly Dictionary<string, (List<FashionIqTriplet> Items, EncodedText[] Text)> _eval = new(StringComparer.Ordinal);
    private readonly Func<string, List<FashionIqTriplet>> _readSplit;
    private readonly int _evalBatchSize;

    public string DatasetName => "fashioniq";
    public FashionViLComposition Composition { get; }
    public Module Model => Composition;
    public int TrainCount => _train.Count;
    public int MaxSeqLength { get; }
    public ImagePipeline TrainPipeline { get; }
    public ImagePipeline EvalPipeline { get; }
    /// <summary>The training triplets, in dataset index order.</summary>
    public IReadOnlyList<FashionIqTriplet> TrainItems => _train;

    public FashionIqTask(FashionViLComposition model, List<FashionIqTriplet> train, Func<string, List<FashionIqTriplet>> readSplit,
        int maxSeqLength, ImagePipeline trainPipeline, ImagePipeline evalPipeline, int evalBatchSize = 64)
    {
        if (trainPipeline.OutputHeight != model.Config.ImageSize || evalPipeline.OutputHeight != model.Config.ImageSize)
            throw new ArgumentException($"fashioniq: image pipelines give {trainPipeline.OutputHeight}/{evalPipeline.OutputHeight} px but the model expects {model.Config.ImageSize}");
        if (evalBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(evalBatchSize), evalBatchSize, "fashioniq: evaluation batch size must be positive");
        if (model.Generator is null)
            throw new ArgumentException("fashioniq: the composition model must be built with a Generator (its dropout masks are drawn from the fine-tuning loop's generator through it)", nameof(model));
        BertTextTokenizer.MaxPieces(maxSeqLength);
        Composition = model; _train = train; _readSplit = readSplit; MaxSeqLength = maxSeqLength;
        TrainPipeline = trainPipeline; EvalPipeline = evalPipeline; _evalBatchSize = evalBatchSize;
        _trainText = Tokenize(train);
    }

    /// <summary>Builds the task from a config (keys of Config/schema/fashioniq.yaml and model_config.fashionvil.*); reads
    /// the train captions now and the val captions at the first evaluation.</summary>
    public static FashionIqTask Create(FvConfig c, TextWriter log)
    {
        var head = c.GetString(M + "training_head_type");
        if (head != "composition")
            throw new ConfigException($"{M}training_head_type = '{head}': the FashionIQ task needs 'composition'");
        if (!c.GetBool(M + "bypass_transformer"))
            throw new ConfigException($"{M}bypass_transformer = false is not supported: every FashionViL config of the reference sets it to true");
        if (c.GetBool(D + "use_features") || !c.GetBool(D + "use_images"))
            throw new ConfigException($"{D}use_features / use_images: only images are supported (use_images: true, use_features: false)");
        int size = c.GetInt(D + "processors.image_processor.size");
        var bert = new BertConfig(
            HiddenSize: c.GetInt(M + "bert.hidden_size"), NumHiddenLayers: c.GetInt(M + "bert.num_hidden_layers"),
            NumAttentionHeads: c.GetInt(M + "bert.num_attention_heads"), IntermediateSize: c.GetInt(M + "bert.intermediate_size"),
            MaxPositionEmbeddings: c.GetInt(M + "bert.max_position_embeddings"),
            HiddenDropoutProb: c.GetDouble(M + "bert.hidden_dropout_prob"), AttentionProbsDropoutProb: c.GetDouble(M + "bert.attention_probs_dropout_prob"));
        var mc = new FashionViLConfig
        {
            Bert = bert,
            ResNet = new ResNetConfig(c.GetIntList(M + "image_encoder.params.blocks").ToArray(), c.GetInt(M + "image_encoder.params.base_width")),
            ImageSize = size,
        };
        try { mc.Validate(); }
        catch (ArgumentException e) { throw new ConfigException($"fashioniq model: {e.Message} ({D}processors.image_processor.size, {M}*)"); }
        int maxLen = c.GetInt(D + "processors.text_processor.params.max_seq_length");
        if (maxLen < 2 || maxLen > bert.MaxPositionEmbeddings)
            throw new ConfigException($"{D}processors.text_processor.params.max_seq_length = {maxLen}: must be in [2, {bert.MaxPositionEmbeddings}]");
        if (c.GetDouble(D + "processors.text_processor.params.mask_probability") != 0)
            throw new ConfigException($"{D}processors.text_processor.params.mask_probability must be 0 (the reference bert_tokenizer does not mask)");
        var mean = c.GetDoubleList(D + "processors.image_processor.mean").Select(v => (float)v).ToArray();
        var std = c.GetDoubleList(D + "processors.image_processor.std").Select(v => (float)v).ToArray();
        if (mean.Length != 3 || std.Length != 3 || std.Any(s => !(s > 0)))
            throw new ConfigException($"{D}processors.image_processor.mean/std: need 3 values each, std positive");
        var train = new ImagePipeline(ImagePipeline.RetrievalTrain(size).Transforms, size, size, mean, std);
        var eval = new ImagePipeline(ImagePipeline.RetrievalEval(size).Transforms, size, size, mean, std);

        string dataDir = c.GetString(D + "data_dir");
        string garment = c.GetString(D + "garment_class");
        string Folder(string kind, string split)
        {
            var list = c.GetStringList(D + kind + "." + split);
            if (list.Count != 1) throw new ConfigException($"{D}{kind}.{split}: expected exactly one folder, got {list.Count}");
            return Path.Combine(dataDir, list[0]);
        }
        List<FashionIqTriplet> Read(string split)
        {
            try { return FashionIqDataset.Read(Folder("annotations", split), Folder("images", split), split, garment); }
            catch (ArgumentException e) { throw new ConfigException($"{D}: {e.Message}"); }
        }

        var model = new FashionViLComposition(mc, new Generator((ulong)c.GetInt("training.seed")));
        var items = Read("train");
        log.WriteLine($"fashioniq: {items.Count} training triplets (garment_class {garment}), {size}-px images ({mc.GridSize} visual tokens), max_seq_length {maxLen}");
        return new FashionIqTask(model, items, Read, maxLen, train, eval, c.GetInt("evaluation.batch_size"));
    }

    private EncodedText[] Tokenize(List<FashionIqTriplet> items) =>
        items.Select(t => BertTextTokenizer.Default.Encode(t.Text, MaxSeqLength)).ToArray();

    /// <summary>Collates token rows (B,T) int64 and CHW float arrays into a batch.</summary>
    public static FashionIqBatch Collate(IReadOnlyList<EncodedText> text, IReadOnlyList<float[]> refImages, IReadOnlyList<float[]> tarImages, int size)
    {
        var ids = TextCollator.Stack(text.Select(t => t.InputIds).ToList(), "input_ids");
        var mask = TextCollator.Stack(text.Select(t => t.InputMask).ToList(), "input_mask");
        var seg = TextCollator.Stack(text.Select(t => t.SegmentIds).ToList(), "segment_ids");
        var r = ProductImageLoading.Stack(refImages, size, size);
        var t = ProductImageLoading.Stack(tarImages, size, size);
        return new FashionIqBatch(ids, mask, seg, r, t);
    }

    /// <summary>Per sample: the reference image then the target image through the train pipeline, both from the sample's
    /// random stream (reference order: ref_image, then tar_image).</summary>
    public FashionIqBatch BuildTrainBatch(BatchContext ctx)
    {
        var samples = ctx.LoadSamples((idx, rnd) =>
        {
            var t = _train[idx];
            var r = ProductImageLoading.LoadView(t.CandidateImage, TrainPipeline, rnd);
            var g = ProductImageLoading.LoadView(t.TargetImage, TrainPipeline, rnd);
            return (Text: _trainText[idx], Ref: r, Tar: g);
        });
        if (samples.Count == 0) throw new InvalidOperationException($"fashioniq: every sample of batch {ctx.BatchIndex} (epoch {ctx.Epoch}) was skipped");
        return Collate(samples.Select(s => s.Text).ToList(), samples.Select(s => s.Ref).ToList(), samples.Select(s => s.Tar).ToList(), TrainPipeline.OutputHeight);
    }

    /// <summary><c>bbc_loss</c> of the batch. Every dropout mask is drawn from <paramref name="g"/> (the loop's generator):
    /// the model's generator takes <paramref name="g"/>'s state before the forward and hands the advanced state back, so
    /// a run resumed from a checkpoint (which stores <paramref name="g"/>) draws the same masks as a straight run.</summary>
    public Tensor Loss(FashionIqBatch batch, Device device, Generator g) => LoopRandom.Run(Composition.Generator!, g, () =>
    {
        using var ids = batch.InputIds.To(device);
        using var mask = batch.InputMask.To(device);
        using var seg = batch.SegmentIds.To(device);
        using var r = batch.RefImage.To(device);
        using var t = batch.TarImage.To(device);
        using var comp = Composition.Compose(ids, seg, mask, r);
        using var tar = Composition.EmbedTargets(t);
        return FashionViLComposition.BbcLoss(comp, tar);
    });

    public List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier) =>
        Composition.ParameterGroups(baseLr, weightDecay, lrMultiplier);

    /// <summary>
    /// <c>r@k_fashioniq</c> on <paramref name="split"/> (val; test reads val), eval mode, no gradient. Query embeddings are
    /// computed for the real (non-fake) entries, target embeddings for the first entry of each (class, target_id); keys
    /// "r@k_fashioniq/dress_r@10" … "r@k_fashioniq/avg". <paramref name="seed"/> is unused (the protocol has no randomness).
    /// </summary>
    public IReadOnlyDictionary<string, double> Evaluate(string split, Device device, int seed)
    {
        if (!_eval.TryGetValue(split, out var data))
        {
            var items = _readSplit(split);
            if (items.Any(t => t.TargetId is null || t.FakeData is null || t.GarmentClass is null))
                throw new DatasetFormatException(split, "FashionIQ evaluation needs target_id, fake_data and garment_class on every entry");
            data = (items, Tokenize(items));
            _eval[split] = data;
        }
        var (list, text) = data;
        int n = list.Count;
        var ids = list.Select(t => t.TargetId!.Value).ToArray();
        var fake = list.Select(t => t.FakeData!.Value).ToArray();
        var cls = list.Select(t => t.GarmentClass!.Value).ToArray();
        var (needQ, needT) = FashionIqMetric.RowsNeeded(ids, fake, cls);
        int dim = Composition.Config.Bert.HiddenSize;
        var comp = new float[(long)n * dim];
        var tar = new float[(long)n * dim];
        bool wasTraining = Composition.IsTraining;
        Composition.Eval();
        try
        {
            using var _ = GradMode.NoGrad();
            int size = EvalPipeline.OutputHeight;
            var qRows = Enumerable.Range(0, n).Where(i => needQ[i]).ToArray();
            foreach (var chunk in qRows.Chunk(_evalBatchSize))
            {
                var imgs = LoadEval(chunk.Select(i => list[i].CandidateImage).ToArray());
                using var b = Collate(chunk.Select(i => text[i]).ToList(), imgs, imgs, size);
                using var idD = b.InputIds.To(device); using var mD = b.InputMask.To(device); using var sD = b.SegmentIds.To(device);
                using var rD = b.RefImage.To(device);
                using var e = Composition.Compose(idD, sD, mD, rD);
                Scatter(e.ToArray<float>(), chunk, comp, dim);
            }
            var tRows = Enumerable.Range(0, n).Where(i => needT[i]).ToArray();
            foreach (var chunk in tRows.Chunk(_evalBatchSize))
            {
                var imgs = LoadEval(chunk.Select(i => list[i].TargetImage).ToArray());
                using var im = ProductImageLoading.Stack(imgs, size, size);
                using var imD = im.To(device);
                using var e = Composition.EmbedTargets(imD);
                Scatter(e.ToArray<float>(), chunk, tar, dim);
            }
        }
        finally { Composition.Train(wasTraining); }
        var r = FashionIqMetric.Compute(comp, tar, dim, ids, fake, cls);
        return r.ToDictionary(kv => "r@k_fashioniq/" + kv.Key, kv => kv.Value, StringComparer.Ordinal);
    }

    private List<float[]> LoadEval(string[] paths)
    {
        var res = new float[paths.Length][];
        Parallel.For(0, paths.Length, i => res[i] = ProductImageLoading.LoadView(paths[i], EvalPipeline, new DataRandom(0)));
        return [.. res];
    }

    private static void Scatter(float[] rows, int[] at, float[] dst, int dim)
    {
        for (int k = 0; k < at.Length; k++) rows.AsSpan(k * dim, dim).CopyTo(dst.AsSpan(at[k] * dim, dim));
    }

    /// <summary>Nothing to release: the model's tensors are owned by the module (GC).</summary>
    public void Dispose() { }
}
