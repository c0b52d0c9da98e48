using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data;
using FashionViL.Data.Images;
using FashionViL.Data.Loading;
using FashionViL.Model;
using FashionViL.Nn.Checkpoints;
using FashionViL.Training;

namespace FashionViL.Inference;

/// <summary>
/// Embeds images, texts and image + modification-text queries with a trained FashionViL, and ranks galleries — the API an
/// application uses. All work runs in eval mode without gradients; inputs go through the evaluation preprocessing of the
/// checkpoint's config (<see cref="EncoderPreprocessing"/>). Vectors are the retrieval embeddings of the reference:
/// <list type="bullet">
/// <item>image: N(mean over the visual tokens of projection(ResNet(image))) — the ITC / target-image vector;</item>
/// <item>text: N(masked mean of the text-only BERT output) — the ITC text vector;</item>
/// <item>query (image + modification text): N(mean of the visual outputs of the joint forward) — the FashionIQ query.</item>
/// </list>
/// N is the checkpoint's normalisation layer (unit length times its learned scale s), so scores are s²·cos.
/// Not thread-safe: use one encoder per thread, or lock.
/// </summary>
/// <example><code>
/// using var enc = FashionViLEncoder.Load("save/fashionvil_tiny/best.ckpt");
/// float[][] gallery = enc.EmbedImages(Directory.GetFiles("shop", "*.jpg"));
/// float[] query = enc.EmbedTexts(["black leather ankle boots"])[0];
/// foreach (var hit in enc.Rank(query, gallery, topK: 5)) Console.WriteLine($"{hit.Index} {hit.Score:F3}");
/// </code></example>
public sealed class FashionViLEncoder : IDisposable
{
    private readonly EmbeddingModel _model;
    private readonly ImagePipeline _pipeline;
    private readonly PretrainTextProcessor _text;
    private bool _disposed;

    /// <summary>The file the weights came from.</summary>
    public string CheckpointPath { get; }
    /// <summary>Where the model runs.</summary>
    public Device Device { get; }
    /// <summary>The model sizes (from the config).</summary>
    public FashionViLConfig ModelConfig { get; }
    /// <summary>Image and text preprocessing.</summary>
    public EncoderPreprocessing Preprocessing { get; }
    /// <summary>Length of every embedding (the BERT hidden size).</summary>
    public int Dimension => ModelConfig.Bert.HiddenSize;
    /// <summary>The learned scale s of the normalisation layer (every embedding has length s).</summary>
    public float Scale { get; }

    private FashionViLEncoder(EmbeddingModel model, string path, Device device, EncoderPreprocessing pre)
    {
        _model = model;
        CheckpointPath = path;
        Device = device;
        ModelConfig = model.Config;
        Preprocessing = pre;
        _pipeline = pre.CreateImagePipeline();
        _text = new PretrainTextProcessor(pre.MaxSeqLength, 0.0);
        using var s = model.Model.Norm.Scale.To(Device.Cpu);
        Scale = s.ToArray<float>()[0];
    }

    // ------------------------------------------------------------------ loading

    /// <summary>
    /// Loads a checkpoint. Accepted: our training checkpoints (<c>.ckpt</c> from <c>fashionvil pretrain</c> or a fine-tune,
    /// whose metadata holds the run's config), a plain safetensors state dict with MMF names, or the reference's MMF
    /// PyTorch checkpoint (<c>.pth</c> / <c>.ckpt</c>). The weights needed are <c>image_encoder.*</c>, <c>model.bert.*</c> and
    /// the normalisation scale (<c>model.contrastive_norm.norm_s</c> of pre-training or <c>model.norm_layer.norm_s</c> of the
    /// contrastive / composition fine-tunes); heads are ignored.
    /// </summary>
    /// <param name="checkpoint">the file</param>
    /// <param name="device">where to run (default: CPU)</param>
    /// <param name="config">the run config; required for files that carry none (plain state dicts, reference checkpoints),
    /// and when given it replaces the config stored in the checkpoint</param>
    /// <param name="preprocessing">overrides the image/text sizes read from the config</param>
    /// <exception cref="FileNotFoundException">the file does not exist</exception>
    /// <exception cref="InvalidDataException">the file is not a FashionViL model checkpoint (e.g. a VQ-VAE, BERT-only or
    /// ResNet-only file, an embeddings file), lacks weights, does not fit its config, or carries no config and none was given;
    /// the message names the file and what is missing</exception>
    /// <exception cref="ConfigException">the config is invalid</exception>
    public static FashionViLEncoder Load(string checkpoint, Device? device = null, FvConfig? config = null, EncoderPreprocessing? preprocessing = null)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var dev = device ?? Device.Cpu;
        var (dict, yaml) = ReadWeights(checkpoint);
        var owned = new HashSet<Tensor>(dict.Values, ReferenceEqualityComparer.Instance);
        try
        {
            CheckKind(checkpoint, dict);
            if (config is null)
            {
                if (yaml is null)
                    throw new InvalidDataException($"checkpoint '{checkpoint}' carries no config (no 'config' in its __metadata__), so the model sizes are unknown; " +
                        "pass the run's config.yaml (API: FashionViLEncoder.Load(path, config: FvConfig.Load(yamlPath)); CLI: --config FILE)");
                config = FvConfig.FromYaml(yaml, $"the config stored in '{checkpoint}'");
            }
            var mc = PretrainSetup.ModelConfig(config);
            var pre = preprocessing ?? EncoderPreprocessing.FromConfig(config);
            pre.Validate();
            var model = new EmbeddingModel(mc);
            try
            {
                LoadWeights(checkpoint, model, dict);
                if (dev != Device.Cpu) model.To(dev);
                model.Eval();
                return new FashionViLEncoder(model, checkpoint, dev, pre);
            }
            catch
            {
                foreach (var t in model.StateDict().Values) t.Dispose();
                throw;
            }
        }
        finally
        {
            foreach (var t in owned) t.Dispose();
        }
    }

    private static (Dictionary<string, Tensor> Dict, string? Config) ReadWeights(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"checkpoint '{path}': file not found", path);
        if (IsZip(path))
        {
            var raw = TorchCheckpoint.Load(path);
            return (MapMmf(raw, path), null);
        }
        IReadOnlyDictionary<string, string> meta;
        try { meta = SafeTensors.ReadHeader(path).Metadata; }
        catch (Exception e) when (e is InvalidDataException or IOException or ArgumentException)
        {
            throw new InvalidDataException($"checkpoint '{path}' is neither a safetensors file nor a PyTorch checkpoint ({e.Message})", e);
        }
        meta.TryGetValue("format", out var format);
        if (format == TrainingCheckpoint.Format)
        {
            var file = TrainingCheckpoint.Read(path);
            if (file.Optimizer is not null) foreach (var p in file.Optimizer.State.Values) foreach (var b in p.Buffers.Values) b.Dispose();
            return (file.Model, file.State.Config);
        }
        if (format == EmbeddingFile.Format)
            throw new InvalidDataException($"'{path}' is an embeddings file written by `fashionvil encode`, not a model checkpoint");
        var dict = SafeTensors.Load(path);
        return (MapMmf(dict, path), meta.TryGetValue("config", out var cfg) ? cfg : null);
    }

    private static bool IsZip(string path)
    {
        using var fs = File.OpenRead(path);
        Span<byte> b = stackalloc byte[4];
        return fs.Read(b) == 4 && b[0] == (byte)'P' && b[1] == (byte)'K' && b[2] == 3 && b[3] == 4;
    }

    /// <summary>MMF names (optionally under DDP's <c>module.</c>) → ours: prefix stripped, tied MLM decoder checked and dropped.</summary>
    private static Dictionary<string, Tensor> MapMmf(Dictionary<string, Tensor> raw, string path)
    {
        if (CheckpointMappings.Detect(raw.Keys) != CheckpointSource.Mmf) return raw;
        var result = CheckpointMapping.Apply(raw, CheckpointMappings.MmfFashionViL(), path);
        var kept = new HashSet<Tensor>(result.Tensors.Values, ReferenceEqualityComparer.Instance);
        foreach (var t in raw.Values) if (!kept.Contains(t)) t.Dispose();
        return result.Tensors;
    }

    private static void CheckKind(string path, Dictionary<string, Tensor> dict)
    {
        bool image = dict.Keys.Any(k => k.StartsWith("image_encoder.", StringComparison.Ordinal));
        bool bert = dict.Keys.Any(k => k.StartsWith("model.bert.", StringComparison.Ordinal));
        if (image && bert) return;
        var kind = CheckpointMappings.Detect(dict.Keys) switch
        {
            CheckpointSource.Vqvae => "a VQ-VAE tokenizer",
            CheckpointSource.HfBert => "a BERT-only checkpoint",
            CheckpointSource.Torchvision => "a torchvision ResNet checkpoint",
            _ => image ? "an image-encoder-only checkpoint (e.g. CSA-Net / OCIR)" : "not a FashionViL model",
        };
        var missing = string.Join(" and ", new[] { image ? null : "image_encoder.*", bert ? null : "model.bert.*" }.Where(s => s is not null));
        throw new InvalidDataException($"checkpoint '{path}' cannot embed: it has no {missing} weights — it looks like {kind} " +
            $"(first keys: {string.Join(", ", dict.Keys.Order(StringComparer.Ordinal).Take(4))}{(dict.Count > 4 ? ", ..." : "")}). " +
            "Use a FashionViL pre-training or retrieval/composition fine-tuning checkpoint.");
    }

    private static void LoadWeights(string path, EmbeddingModel model, Dictionary<string, Tensor> dict)
    {
        var use = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (k, t) in dict)
            if (k.StartsWith("image_encoder.", StringComparison.Ordinal) || k.StartsWith("model.bert.", StringComparison.Ordinal) || k == EmbeddingModel.NormKey)
                use[k] = t;
        if (!use.ContainsKey(EmbeddingModel.NormKey) && dict.TryGetValue(EmbeddingModel.PretrainNormKey, out var pn)) use[EmbeddingModel.NormKey] = pn;
        if (!use.ContainsKey(EmbeddingModel.NormKey))
            throw new InvalidDataException($"checkpoint '{path}' has no normalisation scale ({EmbeddingModel.PretrainNormKey} of pre-training or " +
                $"{EmbeddingModel.NormKey} of the retrieval / composition fine-tunes); a classification or OCIR checkpoint does not embed for retrieval");
        var r = model.LoadStateDict(use, strict: false);
        if (r.IsClean) return;
        var parts = new List<string>();
        if (r.Missing.Count > 0) parts.Add($"missing {r.Missing.Count} weights ({string.Join(", ", r.Missing.Take(6))}{(r.Missing.Count > 6 ? ", ..." : "")})");
        if (r.Mismatched.Count > 0) parts.Add($"{r.Mismatched.Count} weights of another shape than the config's model ({string.Join(", ", r.Mismatched.Take(4).Select(m => $"{m.Key}: model {Shape.Format(m.Expected)}, file {Shape.Format(m.Got)}"))})");
        if (r.Unexpected.Count > 0) parts.Add($"{r.Unexpected.Count} weights the config's model lacks ({string.Join(", ", r.Unexpected.Take(6))}{(r.Unexpected.Count > 6 ? ", ..." : "")})");
        throw new InvalidDataException($"checkpoint '{path}' does not fit the model its config describes: {string.Join("; ", parts)}");
    }

    // ------------------------------------------------------------------ embedding

    /// <summary>Embeds preprocessed images (B,3,H,W) float32 (any device): (B,D) on <see cref="Device"/>.</summary>
    public Tensor EmbedImages(Tensor images)
    {
        ThrowIfDisposed();
        if (images.Rank != 4 || images.Size(1) != 3) throw new ArgumentException($"embed images: input {images.ShapeString} must be [B,3,H,W]");
        using var _ = GradMode.NoGrad();
        using var x = images.To(DType.Float32, Device);
        return _model.EmbedImages(x);
    }

    /// <summary>Embeds image files (decoded like PIL's convert("RGB"), then the eval pipeline). A missing or corrupt file
    /// throws <see cref="ImageLoadException"/> naming it.</summary>
    public float[][] EmbedImages(IEnumerable<string> paths, int batchSize = 32) =>
        Batched(paths, batchSize, chunk => ImageBatch(chunk.Count, i => ImageLoader.Load(chunk[i])), EmbedImages);

    /// <summary>Embeds decoded images.</summary>
    public float[][] EmbedImages(IEnumerable<RgbImage> images, int batchSize = 32) =>
        Batched(images, batchSize, chunk => ImageBatch(chunk.Count, i => chunk[i]), EmbedImages);

    /// <summary>Embeds encoded image files given as streams (read to their end); errors name the stream's position in the sequence.</summary>
    public float[][] EmbedImages(IEnumerable<Stream> images, int batchSize = 32)
    {
        int index = 0;
        var decoded = images.Select(s =>
        {
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            return ImageLoader.Decode(ms.ToArray(), $"image stream #{index++}");
        });
        return EmbedImages(decoded, batchSize);
    }

    /// <summary>Embeds texts (each non-empty; tokenised without masking, truncated to the max sequence length).</summary>
    public float[][] EmbedTexts(IEnumerable<string> texts, int batchSize = 32)
    {
        int index = 0;
        return Batched(texts.Select(t => CheckText(t, index++)), batchSize, _ => null, (_, chunk) =>
        {
            using var text = Collate(chunk);
            return _model.EmbedTexts(text.InputIds, text.SegmentIds, text.InputMask);
        });
    }

    /// <summary>Embeds composed queries (reference image file + modification text), the FashionIQ query of spec §4.2.</summary>
    public float[][] EmbedQueries(IEnumerable<(string ImagePath, string Text)> queries, int batchSize = 32)
    {
        int index = 0;
        return EmbedQueriesCore(queries.Select(q => (Load: (Func<RgbImage>)(() => ImageLoader.Load(q.ImagePath)), Text: CheckText(q.Text, index++))), batchSize);
    }

    /// <summary>Embeds composed queries (decoded reference image + modification text).</summary>
    public float[][] EmbedQueries(IEnumerable<(RgbImage Image, string Text)> queries, int batchSize = 32)
    {
        int index = 0;
        return EmbedQueriesCore(queries.Select(q => (Load: (Func<RgbImage>)(() => q.Image), Text: CheckText(q.Text, index++))), batchSize);
    }

    private float[][] EmbedQueriesCore(IEnumerable<(Func<RgbImage> Load, string Text)> queries, int batchSize) =>
        Batched(queries, batchSize, chunk => ImageBatch(chunk.Count, i => chunk[i].Load()), (images, chunk) =>
        {
            using var text = Collate(chunk.Select(c => c.Text).ToList());
            using var x = images!.To(Device);
            return _model.EmbedQueries(x, text.InputIds, text.SegmentIds, text.InputMask);
        });

    // ------------------------------------------------------------------ scoring

    /// <summary>Dot products [query][gallery item] (see <see cref="EmbeddingSearch.Score"/>), computed on <see cref="Device"/>.</summary>
    public float[][] Score(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> gallery, int batchSize = 4096) =>
        EmbeddingSearch.Score(queries, gallery, Device, batchSize);

    /// <summary>The top-k gallery items of each query by dot product, best first, ties by lower index.</summary>
    public SearchHit[][] Rank(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> gallery, int topK = 10, int batchSize = 4096) =>
        EmbeddingSearch.Rank(queries, gallery, topK, Device, batchSize);

    /// <summary>The top-k gallery items of one query.</summary>
    public SearchHit[] Rank(float[] query, IReadOnlyList<float[]> gallery, int topK = 10, int batchSize = 4096) =>
        EmbeddingSearch.Rank([query], gallery, topK, Device, batchSize)[0];

    // ------------------------------------------------------------------ helpers

    private static string CheckText(string? text, int index) =>
        string.IsNullOrWhiteSpace(text) ? throw new ArgumentException($"text #{index} is {(text is null ? "null" : "empty")}") : text;

    private CollatedText Collate(IReadOnlyList<string> texts)
    {
        var samples = texts.Select(t => _text.Process(t, new Random(0))).ToList();
        var c = TextCollator.Collate(samples);
        if (Device == Device.Cpu) return c;
        using (c) return new CollatedText(c.InputIds.To(Device), c.InputIdsMasked.To(Device), c.InputMask.To(Device), c.SegmentIds.To(Device), c.LmLabelIds.To(Device));
    }

    /// <summary>Decodes (in parallel) and preprocesses a chunk into a (B,3,H,W) CPU tensor.</summary>
    private Tensor ImageBatch(int count, Func<int, RgbImage> load)
    {
        var chw = new float[count][];
        var errors = new Exception?[count];
        Parallel.For(0, count, i =>
        {
            try
            {
                var img = load(i);
                var v = new float[3 * _pipeline.OutputHeight * _pipeline.OutputWidth];
                _pipeline.Apply(img, new DataRandom(0), v);
                chw[i] = v;
            }
            catch (Exception e) { errors[i] = e; }
        });
        // the first failure by position, so the message names a deterministic culprit
        if (errors.FirstOrDefault(e => e is not null) is { } first)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
        return ProductImageLoading.Stack(chw, _pipeline.OutputHeight, _pipeline.OutputWidth);
    }

    private float[][] Batched<T>(IEnumerable<T> items, int batchSize, Func<IReadOnlyList<T>, Tensor?> prepare, Func<Tensor, Tensor> embed) =>
        Batched(items, batchSize, prepare, (x, _) => embed(x!));

    private float[][] Batched<T>(IEnumerable<T> items, int batchSize, Func<IReadOnlyList<T>, Tensor?> prepare, Func<Tensor?, IReadOnlyList<T>, Tensor> embed)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(items);
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "batch size must be at least 1");
        var result = new List<float[]>();
        using var _ = GradMode.NoGrad();
        foreach (var chunk in items.Chunk(batchSize))
        {
            using var scope = Tensor.Scope();
            using var input = prepare(chunk);
            using var e = embed(input, chunk);
            using var host = e.To(Device.Cpu);
            var flat = host.ToArray<float>();
            int d = Dimension;
            for (int i = 0; i < chunk.Length; i++) result.Add(flat.AsSpan(i * d, d).ToArray());
        }
        return result.ToArray();
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Frees the model's tensors (device memory included).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _model.StateDict().Values) t.Dispose();
    }
}
