using FashionViL.Config;
using FashionViL.Data.Datasets;
using FashionViL.Data.Images;
using FashionViL.Data.Loading;
using FashionViL.Model;
using FashionViL.Nn;
using FashionViL.Nn.Optim;

namespace FashionViL.Downstream.Ocir;

/// <summary>One CPU training batch: question and blank images (B,3,S,S) and the (question, blank) category classes.</summary>
public sealed class OcirBatch : IDisposable
{
    public required Tensor QuestionImage { get; init; }
    public required Tensor BlankImage { get; init; }
    public required int[] QuestionCategories { get; init; }
    public required int[] BlankCategories { get; init; }
    public required long[] QuestionIds { get; init; }
    public required long[] BlankIds { get; init; }
    public int Size => BlankIds.Length;

    public void Dispose()
    {
        QuestionImage.Dispose();
        BlankImage.Dispose();
    }
}

/// <summary>
/// Outfit complementary item retrieval on Polyvore with CSA-Net (spec §4.4) as an <see cref="IFinetuneTask{TBatch}"/>.
/// Training pairs are drawn once, when the task is built (reference: <c>random.choices(question + [blank], k=2)</c> in
/// the database loader), from <c>training.seed</c>; only the augmentation changes between epochs.
/// </summary>
public sealed class OcirTask : IFinetuneTask<OcirBatch>
{
    private const string D = "dataset_config.polyvore_ocir.";
    private const string M = "model_config.csa_net.";

    private readonly FvConfig _config;
    private readonly string _trainImages;
    private readonly Dictionary<string, (OcirData Data, string Images)> _eval = [];
    private readonly ImagePipeline _trainPipeline, _evalPipeline;
    private readonly int _workers, _evalBatch;

    public string DatasetName => "polyvore_ocir";
    public CsaNet Net { get; }
    public Module Model => Net;
    /// <summary>The fixed training pairs (one per training outfit).</summary>
    public IReadOnlyList<OcirTrainPair> Pairs { get; }
    /// <summary>The training annotations.</summary>
    public OcirData TrainData { get; }
    public int TrainCount => Pairs.Count;
    public BadSamplePolicy OnBadSample { get; }

    private OcirTask(FvConfig c, CsaNet net, OcirData train, string trainImages, IReadOnlyList<OcirTrainPair> pairs)
    {
        _config = c; Net = net; TrainData = train; _trainImages = trainImages; Pairs = pairs;
        var tp = D + "processors.train_image_processor.";
        var scale = c.GetDoubleList(tp + "scale");
        var ratio = c.GetDoubleList(tp + "ratio");
        var mean = c.GetDoubleList(tp + "mean").Select(v => (float)v).ToArray();
        var std = c.GetDoubleList(tp + "std").Select(v => (float)v).ToArray();
        if (scale.Count != 2 || ratio.Count != 2) throw new ConfigException($"{tp}scale and ratio must have 2 values each");
        int size = c.GetInt(tp + "size"), evalSize = c.GetInt(D + "processors.eval_image_processor.size");
        if (size < 32 || evalSize < 32) throw new ConfigException($"{D}processors: image sizes {size} / {evalSize} must be at least 32");
        _trainPipeline = new ImagePipeline([new RandomResizedCrop(size, size, scale[0], scale[1], ratio[0], ratio[1]), new RandomHorizontalFlip(0.5)], size, size, mean, std);
        _evalPipeline = new ImagePipeline([new Resize(evalSize, evalSize)], evalSize, evalSize, mean, std);
        _workers = Math.Max(1, c.GetInt(D + "num_workers"));
        _evalBatch = Math.Max(1, c.GetInt("evaluation.batch_size"));
        OnBadSample = c.GetBool(D + "skip_bad_files") ? BadSamplePolicy.Replace : BadSamplePolicy.Throw;
    }

    /// <summary>The model sizes of <c>model_config.csa_net</c>.</summary>
    public static CsaNetConfig ModelConfig(FvConfig c)
    {
        var cfg = new CsaNetConfig(
            new ResNetConfig(c.GetIntList(M + "image_encoder.params.blocks").ToArray(), c.GetInt(M + "image_encoder.params.base_width")),
            c.GetInt(M + "image_channel"), c.GetInt(M + "feature_dim"), c.GetInt(M + "n_categories"), c.GetInt(M + "n_conditions"));
        try { cfg.Validate(); }
        catch (ArgumentException e) { throw new ConfigException($"model_config.csa_net: {e.Message}"); }
        if (cfg.NumCategories != PolyvoreOcirDataset.CategoryIds.Length)
            throw new ConfigException($"{M}n_categories = {cfg.NumCategories}, but the OCIR category table (CAT_DICT) has {PolyvoreOcirDataset.CategoryIds.Length} classes");
        foreach (var l in c.GetMappingList(M + "losses"))
            if (!(l.TryGetValue("type", out var t) && t is "contrastive_loss"))
                throw new ConfigException($"{M}losses: only contrastive_loss is supported (the OCIR project config replaces the default triplet_loss), found '{(l.TryGetValue("type", out var t2) ? t2 : "?")}'");
        return cfg;
    }

    /// <summary>Builds the task from a config (<c>model: csa_net</c>, <c>datasets: polyvore_ocir</c>): reads the training
    /// annotations, draws the fixed training pairs and builds a freshly initialised CSA-Net (pre-trained weights are loaded
    /// by the fine-tuning loop through <c>checkpoint.pretrained_state_mapping</c>).</summary>
    public static OcirTask Create(FvConfig c, TextWriter log)
    {
        if (c.GetString("model") != "csa_net")
            throw new ConfigException($"model = '{c.GetString("model")}': the Polyvore OCIR task needs model: csa_net");
        if (c.GetString("datasets") != "polyvore_ocir")
            throw new ConfigException($"datasets = '{c.GetString("datasets")}': the CSA-Net task reads datasets: polyvore_ocir");
        var mc = ModelConfig(c);
        long seed = c.GetInt("training.seed");
        var (train, images) = ReadSplit(c, "train");
        var rng = new DataRandom((ulong)seed ^ 0x4F434952UL);   // "OCIR": the load-time draw, independent of the loader's streams
        var pairs = Enumerable.Range(0, train.Outfits.Count).Select(i => train.SampleTrainPair(i, rng)).ToList();
        var net = new CsaNet(mc, new Generator((ulong)seed));
        var task = new OcirTask(c, net, train, images, pairs);
        log.WriteLine($"polyvore_ocir: {pairs.Count} training pairs from {FirstAnnotation(c, "train")}; csa_net ResNet [{string.Join(",", mc.ResNet.Blocks)}] width {mc.ResNet.BaseWidth} → {mc.ImageChannel} → {mc.FeatureDim}, layer4 and BatchNorm frozen");
        return task;
    }

    private static string FirstAnnotation(FvConfig c, string split)
    {
        var list = c.GetStringList(D + "annotations." + split);
        if (list.Count != 1) throw new ConfigException($"{D}annotations.{split} must name exactly one OCIR file, found {list.Count}");
        return Path.Combine(c.GetString(D + "data_dir"), list[0]);
    }

    private static (OcirData Data, string Images) ReadSplit(FvConfig c, string split)
    {
        var file = FirstAnnotation(c, split);
        var imgs = c.GetStringList(D + "images." + split);
        if (imgs.Count != 1) throw new ConfigException($"{D}images.{split} must name exactly one image folder, found {imgs.Count}");
        if (!File.Exists(file)) throw new FileNotFoundException($"polyvore_ocir {split} annotations not found: {file} ({D}annotations.{split})", file);
        var data = PolyvoreOcirDataset.ReadFile(file, isTest: split != "train");
        return (data, Path.Combine(c.GetString(D + "data_dir"), imgs[0]));
    }

    private static string ImagePath(string folder, string itemId) => Path.Combine(folder, itemId + ".jpg");

    public OcirBatch BuildTrainBatch(BatchContext ctx)
    {
        int n = _trainPipeline.OutputHeight;
        var samples = ctx.LoadSamples((idx, r) =>
        {
            var p = Pairs[idx];
            var q = ProductImageLoading.LoadView(ImagePath(_trainImages, p.QuestionId), _trainPipeline, r);
            var b = ProductImageLoading.LoadView(ImagePath(_trainImages, p.BlankId), _trainPipeline, r);
            return (p, q, b);
        });
        return new OcirBatch
        {
            QuestionImage = ProductImageLoading.Stack(samples.Select(s => s.q).ToList(), n, n),
            BlankImage = ProductImageLoading.Stack(samples.Select(s => s.b).ToList(), n, n),
            QuestionCategories = samples.Select(s => s.p.QuestionCategory).ToArray(),
            BlankCategories = samples.Select(s => s.p.BlankCategory).ToArray(),
            QuestionIds = samples.Select(s => long.Parse(s.p.QuestionId, System.Globalization.CultureInfo.InvariantCulture)).ToArray(),
            BlankIds = samples.Select(s => long.Parse(s.p.BlankId, System.Globalization.CultureInfo.InvariantCulture)).ToArray(),
        };
    }

    /// <summary>The symmetric InfoNCE loss of the batch. The reference CSA-Net has no dropout and its encoder's BatchNorms are
    /// frozen, so today the forward draws nothing; any draw a module of the model makes would come from <paramref name="g"/>
    /// (the model's generator takes its state and hands it back), so a resumed run equals a straight one.</summary>
    public Tensor Loss(OcirBatch batch, Device device, Generator g) => LoopRandom.Run(Net.Generator, g, () =>
    {
        using var q = batch.QuestionImage.To(device);
        using var b = batch.BlankImage.To(device);
        using var th = CsaNet.TwoHot(batch.QuestionCategories, batch.BlankCategories, Net.Config.NumCategories);
        using var thd = th.To(device);
        return Net.Loss(q, b, thd);
    });

    /// <summary>The reference groups: image encoder (trainable part, lr × 1), proj_layer, fusion_module, norm_layer — all at
    /// the base lr (CSA-Net ignores <paramref name="lrMultiplier"/>: its backbone multiplier is hard-coded 1) and the given
    /// weight decay (the OCIR config sets none: 0).</summary>
    public List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier)
    {
        IEnumerable<(string, Tensor)> Trainable(string prefix, Module m) =>
            m.NamedParameters(prefix).Where(p => p.Tensor.RequiresGrad).Select(p => (p.Name, p.Tensor));
        return
        [
            new ParamGroup("image_encoder", Trainable("image_encoder", Net.ImageEncoder), baseLr, weightDecay),
            new ParamGroup("proj_layer", Trainable("proj_layer", Net.ProjLayer), baseLr, weightDecay),
            new ParamGroup("fusion_module", Trainable("fusion_module", Net.FusionModule), baseLr, weightDecay),
            new ParamGroup("norm_layer", Trainable("norm_layer", Net.NormLayer), baseLr, weightDecay),
        ];
    }

    /// <summary>The test entries of <paramref name="split"/> ("val" and "test" both read the test file, as the reference).</summary>
    public OcirData EvalData(string split)
    {
        if (split is not ("val" or "test")) throw new ArgumentException($"polyvore_ocir: evaluation split '{split}' must be val or test", nameof(split));
        if (!_eval.TryGetValue(split, out var e)) _eval[split] = e = ReadSplit(_config, split);
        return e.Data;
    }

    /// <summary><c>r@k_ocir</c> on <paramref name="split"/>: keys "r@k_ocir/r@10", "r@k_ocir/r@30", "r@k_ocir/r@50", "r@k_ocir/avg".
    /// Queries are computed for the non-fake entries only (the reference computes and then drops the fake ones) and each
    /// distinct blank item is encoded once (eval images are deterministic).</summary>
    public IReadOnlyDictionary<string, double> Evaluate(string split, Device device, int seed)
    {
        var data = EvalData(split);
        string images = _eval[split].Images;
        var (queries, blanks) = Embed(data, images, device);
        var o = data.Outfits;
        var r = OcirRecall.Compute(queries, blanks, o.Select(x => long.Parse(x.Blank, System.Globalization.CultureInfo.InvariantCulture)).ToArray(),
            o.Select(x => x.BlankCategory).ToArray(), o.Select(x => x.FakeData ?? false).ToArray());
        return r.ToDictionary(kv => "r@k_ocir/" + kv.Key, kv => kv.Value);
    }

    /// <summary>The chance level of <see cref="Evaluate"/> on <paramref name="split"/> (same keys).</summary>
    public IReadOnlyDictionary<string, double> ChanceLevel(string split)
    {
        var o = EvalData(split).Outfits;
        return OcirRecall.Chance(o.Select(x => long.Parse(x.Blank, System.Globalization.CultureInfo.InvariantCulture)).ToArray(),
            o.Select(x => x.BlankCategory).ToArray(), o.Select(x => x.FakeData ?? false).ToArray()).ToDictionary(kv => "r@k_ocir/" + kv.Key, kv => kv.Value);
    }

    /// <summary>Per entry: the outfit-averaged query (null for fake entries) and the blank embedding.</summary>
    internal (float[]?[] Queries, float[][] Blanks) Embed(OcirData data, string images, Device device)
    {
        var outfits = data.Outfits;
        // Question jobs: (entry, item id, question category, blank category) for every non-fake entry.
        var qJobs = new List<(int Entry, string Item, int QCat, int BCat)>();
        for (int i = 0; i < outfits.Count; i++)
            if (outfits[i].FakeData != true)
                for (int k = 0; k < outfits[i].Question.Count; k++)
                    qJobs.Add((i, outfits[i].Question[k], outfits[i].QuestionCategories[k], outfits[i].BlankCategory));
        var blankItems = outfits.Select(x => x.Blank).Distinct().ToList();

        bool wasTraining = Net.IsTraining;
        Net.Eval();
        try
        {
            var qFeat = EncodeAll(qJobs.Count, i => ImagePath(images, qJobs[i].Item), device, (img, start, n) =>
            {
                using var th = CsaNet.TwoHot(qJobs.Skip(start).Take(n).Select(j => j.QCat).ToArray(),
                    qJobs.Skip(start).Take(n).Select(j => j.BCat).ToArray(), Net.Config.NumCategories);
                using var thd = th.To(device);
                return Net.EncodeQuestion(img, thd);
            });
            var bFeat = EncodeAll(blankItems.Count, i => ImagePath(images, blankItems[i]), device, (img, _, _) => Net.EncodeBlank(img));
            var byBlank = blankItems.Select((id, i) => (id, i)).ToDictionary(p => p.id, p => bFeat[p.i]);

            var queries = new float[]?[outfits.Count];
            var counts = new int[outfits.Count];
            for (int j = 0; j < qJobs.Count; j++)
            {
                int e = qJobs[j].Entry;
                var acc = queries[e] ??= new float[qFeat[j].Length];
                for (int d = 0; d < acc.Length; d++) acc[d] += qFeat[j][d];
                counts[e]++;
            }
            for (int e = 0; e < outfits.Count; e++)
                if (queries[e] is { } q)
                    for (int d = 0; d < q.Length; d++) q[d] /= counts[e];
            var blanks = outfits.Select(x => byBlank[x.Blank]).ToArray();
            return (queries, blanks);
        }
        finally { if (wasTraining) Net.Train(); }
    }

    /// <summary>Loads images 0..count−1 in order (eval pipeline, loader threads), runs <paramref name="encode"/> per batch under
    /// no-grad, returns one CPU row per image.</summary>
    private float[][] EncodeAll(int count, Func<int, string> path, Device device, Func<Tensor, int, int, Tensor> encode)
    {
        var rows = new float[count][];
        if (count == 0) return rows;
        int s = _evalPipeline.OutputHeight;
        using var loader = new PrefetchLoader<EvalChunk>(count, ctx =>
        {
            var chw = ctx.LoadSamples((idx, r) => ProductImageLoading.LoadView(path(idx), _evalPipeline, r));
            return new EvalChunk(ctx.Indices[0], ProductImageLoading.Stack(chw, s, s));
        }, new PrefetchLoaderOptions { BatchSize = _evalBatch, Shuffle = false, Workers = _workers, Prefetch = 2 });
        using var noGrad = GradMode.NoGrad();
        for (int b = 0; b < loader.BatchesPerEpoch; b++)
        {
            using var chunk = loader.Next();
            var (start, imgs) = (chunk.Start, chunk.Images);
            {
                using var scope = Tensor.Scope();
                using var d = imgs.To(device);
                int n = imgs.Size(0);
                var f = encode(d, start, n);
                using var cpu = f.To(Device.Cpu);
                var a = cpu.ToArray<float>();
                int dim = a.Length / n;
                for (int i = 0; i < n; i++) rows[start + i] = a.AsSpan(i * dim, dim).ToArray();
            }
        }
        return rows;
    }

    public void Dispose() { }

    private sealed record EvalChunk(int Start, Tensor Images) : IDisposable
    {
        public void Dispose() => Images.Dispose();
    }
}
