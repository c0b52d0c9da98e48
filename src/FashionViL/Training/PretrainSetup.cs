using FashionViL.Config;
using FashionViL.Data;
using FashionViL.Data.Datasets;
using FashionViL.Data.Images;
using FashionViL.Data.Loading;
using FashionViL.Model;
using FashionViL.Nn;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Models;
using FashionViL.Nn.Optim;

namespace FashionViL.Training;

/// <summary>Reads the pieces of a pre-training run out of a <see cref="FvConfig"/> (keys as in configs/pretrain.yaml).</summary>
public static class PretrainSetup
{
    private const string M = "model_config.fashionvil.";
    private const string D = "dataset_config.fashionall.";

    public static Device ParseDevice(string text) => text.Trim().ToLowerInvariant() switch
    {
        "cpu" => Device.Cpu,
        "cuda" or "gpu" => Device.Cuda(0),
        var s when s.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(s[5..], out var i) && i >= 0 => Device.Cuda(i),
        _ => throw new ConfigException($"env.device = '{text}': expected cpu, cuda or cuda:N"),
    };

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
            NumVqTokens = c.GetInt(M + "image_tokenizer.params.num_tokens"),
            Tasks = c.GetStringList(M + "tasks").ToArray(),
            TaskProbabilities = c.GetDoubleList(M + "tasks_sample_ratio").ToArray(),
        };
        try { mc.Validate(); }
        catch (ArgumentException e) { throw new ConfigException($"model_config.fashionvil: {e.Message}"); }
        if (!c.GetBool(M + "bypass_transformer"))
            throw new ConfigException($"{M}bypass_transformer = false is not supported: every FashionViL config of the reference sets it to true");
        if (c.GetBool(M + "no_sharing"))
            throw new ConfigException($"{M}no_sharing = true is not supported (the final recipe shares one BERT)");
        return mc;
    }

    public static VqVaeConfig TokenizerConfig(FvConfig c)
    {
        const string P = M + "image_tokenizer.params.";
        if (c.GetBool(P + "double_z")) throw new ConfigException($"{P}double_z = true is not supported (the reference tokenizer uses false)");
        var v = new VqVaeConfig
        {
            Resolution = c.GetInt(P + "resolution"), NumTokens = c.GetInt(P + "num_tokens"), CodebookDim = c.GetInt(P + "codebook_dim"),
            HiddenDim = c.GetInt(P + "hidden_dim"), InChannels = c.GetInt(P + "in_channels"), ChMult = c.GetIntList(P + "ch_mult").ToArray(),
            NumResBlocks = c.GetInt(P + "num_res_blocks"), AttnResolutions = c.GetIntList(P + "attn_resolutions").ToArray(),
            ZChannels = c.GetInt(P + "z_channels"), Dropout = c.GetDouble(P + "dropout"),
        };
        return v;
    }

    /// <summary>Builds the model and loads whatever pretrained weights the config names (each path must exist).</summary>
    public static FashionViLPretraining BuildModel(FvConfig c, FashionViLConfig mc, Generator g, TextWriter log)
    {
        var model = new FashionViLPretraining(mc, g);
        var resnet = c.GetStringOrNull(M + "image_encoder.params.pretrained_path");
        if (resnet is not null && c.GetBool(M + "image_encoder.params.pretrained"))
        {
            var loaded = LoadMapped(RequireFile(resnet, M + "image_encoder.params.pretrained_path"), CheckpointMappings.TorchvisionToMmf());
            LoadPart(model, loaded, "image_encoder.", resnet);
            log.WriteLine($"loaded ResNet-50 weights from {resnet}");
        }
        var bert = c.GetStringOrNull(M + "bert.pretrained_path");
        if (bert is not null)
        {
            var loaded = LoadMapped(RequireFile(bert, M + "bert.pretrained_path"), CheckpointMappings.HfBertToMmf());
            LoadPart(model, loaded, "model.bert.", bert, alsoPrefix: "model.heads.mlm.", optional: ["model.bert.embeddings.projection.", "model.bert.embeddings.position_embeddings_visual.", "model.bert.embeddings.token_type_embeddings_visual."]);
            model.InitVisualFromText();
            log.WriteLine($"loaded BERT weights from {bert} (visual position/type tables copied from the text tables)");
        }
        var full = c.GetStringOrNull(M + "pretrained_checkpoint");
        if (full is not null)
        {
            var path = RequireFile(full, M + "pretrained_checkpoint");
            var dict = path.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase) ? TrainingCheckpoint.Read(path).Model : LoadMapped(path, CheckpointMappings.MmfFashionViL());
            var keep = dict.Where(kv => !kv.Key.StartsWith("model.image_tokenizer.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value);
            var r = model.LoadStateDict(keep, strict: false);
            if (r.Mismatched.Count > 0 || r.Unexpected.Count > 0)
                throw new InvalidDataException($"pretrained checkpoint '{path}' does not fit this model: {r}");
            log.WriteLine($"loaded FashionViL weights from {path}" + (r.Missing.Count > 0 ? $" ({r.Missing.Count} parameters keep their fresh init)" : ""));
        }
        return model;
    }

    public static VqVaeEncoder? BuildTokenizer(FvConfig c, FashionViLConfig mc, Generator g, TextWriter log)
    {
        if (!mc.Tasks.Contains("mpfc")) return null;
        var vc = TokenizerConfig(c);
        if (vc.GridSize != mc.GridSide)
            throw new ConfigException($"{M}image_tokenizer: a {vc.Resolution}-pixel tokenizer gives a {vc.GridSize}×{vc.GridSize} grid, but the image encoder's grid is {mc.GridSide}×{mc.GridSide} (crop {mc.ImageSize})");
        if (vc.NumTokens != mc.NumVqTokens) throw new ConfigException($"{M}image_tokenizer.params.num_tokens must equal the MPFC classes ({mc.NumVqTokens})");
        var path = c.GetStringOrNull(M + "image_tokenizer.params.pretrained_path");
        if (path is null)
        {
            log.WriteLine("image tokenizer: no pretrained_path, using a randomly initialised VQ-VAE (MPFC targets are consistent but carry no learned meaning)");
            var enc = new VqVaeEncoder(vc, g);
            enc.Eval();
            return enc;
        }
        var tok = VqVaeEncoder.LoadPretrained(RequireFile(path, M + "image_tokenizer.params.pretrained_path"), vc);
        log.WriteLine($"loaded the VQ-VAE tokenizer from {path}");
        return tok;
    }

    public static string RequireFile(string path, string key) =>
        File.Exists(path) ? path : throw new FileNotFoundException($"{key}: file not found: {path}", path);

    private static Dictionary<string, Tensor> LoadMapped(string path, NameMapping mapping)
    {
        var raw = path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? SafeTensors.Load(path) : TorchCheckpoint.Load(path);
        var result = CheckpointMapping.Apply(raw, mapping, path);
        var kept = new HashSet<Tensor>(result.Tensors.Values, ReferenceEqualityComparer.Instance);
        foreach (var t in raw.Values) if (!kept.Contains(t)) t.Dispose();   // dropped by the mapping
        return result.Tensors;
    }

    private static void LoadPart(Module model, Dictionary<string, Tensor> dict, string prefix, string path, string? alsoPrefix = null, string[]? optional = null)
    {
        // Files saved before PyTorch 0.4.1 (torchvision's resnet50-19c8e357.pth among them) have no BatchNorm
        // num_batches_tracked; torch's BatchNorm loads them as 0, and so do we.
        foreach (var k in model.StateDict().Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal) && k.EndsWith(".num_batches_tracked", StringComparison.Ordinal) && !dict.ContainsKey(k)).ToList())
            dict[k] = Tensor.Zeros([], DType.Int64);
        var r = model.LoadStateDict(dict, strict: false);
        var missing = r.Missing.Where(k => (k.StartsWith(prefix, StringComparison.Ordinal) || (alsoPrefix is not null && k.StartsWith(alsoPrefix, StringComparison.Ordinal)))
                                           && !(optional ?? []).Any(o => k.StartsWith(o, StringComparison.Ordinal))).ToList();
        if (r.Unexpected.Count > 0 || r.Mismatched.Count > 0 || missing.Count > 0)
            throw new InvalidDataException($"checkpoint '{path}' does not fit: " +
                string.Join("; ", new[] { missing.Count > 0 ? $"missing {string.Join(", ", missing.Take(8))}" : null, r.Unexpected.Count > 0 ? $"unexpected {string.Join(", ", r.Unexpected.Take(8))}" : null, r.Mismatched.Count > 0 ? $"mis-shaped {string.Join(", ", r.Mismatched.Take(8))}" : null }.Where(s => s is not null)));
        foreach (var t in dict.Values) t.Dispose();
    }

    public static LrSchedule Schedule(FvConfig c)
    {
        const string S = "scheduler.";
        var type = c.GetString(S + "type");
        bool warm = c.GetBool(S + "params.use_warmup");
        int warmup = warm ? c.GetInt(S + "params.warmup_iterations") : 0;
        double factor = warm ? c.GetDouble(S + "params.warmup_factor") : 1.0;
        int total = c.GetInt("training.max_updates");
        if (!c.GetBool("training.lr_scheduler")) return new ConstantSchedule();
        return type switch
        {
            "multi_step" => new WarmupMultiStepSchedule(warmup, c.GetIntList(S + "params.lr_steps"), factor, c.GetDouble(S + "params.lr_ratio")),
            "linear" => new LinearSchedule(warmup, total, warm ? factor : 0),
            "cosine" => new CosineSchedule(warmup, total, warm ? factor : 0),
            "constant" => new ConstantSchedule(),
            _ => throw new ConfigException($"scheduler.type = '{type}': expected multi_step, linear, cosine or constant"),
        };
    }

    public static AdamW Optimizer(FvConfig c, FashionViLPretraining model)
    {
        var type = c.GetString("optimizer.type");
        if (type != "adam_w") throw new ConfigException($"optimizer.type = '{type}': pre-training uses adam_w (transformers-3.x AdamW)");
        var betas = c.GetDoubleList("optimizer.params.betas");
        if (betas.Count != 2) throw new ConfigException("optimizer.params.betas must be two numbers");
        var groups = model.ParameterGroups(c.GetDouble("optimizer.params.lr"), c.GetDouble("optimizer.params.weight_decay"), c.GetDouble(M + "lr_multiplier"));
        return new AdamW(groups, betas[0], betas[1], c.GetDouble("optimizer.params.eps"));
    }

    /// <summary>Product records of a split: the annotation files of dataset_config.fashionall.annotations.&lt;split&gt; with
    /// their image folders (dataset_config.fashionall.images.&lt;split&gt;), concatenated in order.</summary>
    public static List<ProductRecord> Products(FvConfig c, string split)
    {
        var dataDir = c.GetString(D + "data_dir");
        var anns = c.GetStringList(D + "annotations." + split);
        var imgs = c.GetStringList(D + "images." + split);
        if (anns.Count != imgs.Count)
            throw new ConfigException($"{D}annotations.{split} lists {anns.Count} files but {D}images.{split} lists {imgs.Count} folders");
        var list = new List<ProductRecord>();
        for (int i = 0; i < anns.Count; i++)
        {
            var ann = Path.Combine(dataDir, anns[i]);
            if (!File.Exists(ann))
                throw new FileNotFoundException($"{D}annotations.{split}: annotation file not found: {ann} (data_dir = {dataDir}; `fashionvil synth --out DIR` writes a generated copy of the layout)", ann);
            list.AddRange(ProductDatasets.Read(ann, Path.Combine(dataDir, imgs[i])));
        }
        if (list.Count == 0) throw new InvalidDataException($"{D}annotations.{split}: the annotation files hold no products");
        return list;
    }
}
