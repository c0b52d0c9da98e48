using FashionViL.Config;
using FashionViL.Model;
using FashionViL.Nn;
using FashionViL.Nn.Checkpoints;
using FashionViL.Training;

namespace FashionViL.Downstream;

/// <summary>
/// The weights a FashionViL fine-tune starts from when no FashionViL checkpoint is given (no <c>checkpoint.resume_file</c>):
/// as the reference builds the model, the torchvision ResNet-50 (<c>model_config.fashionvil.image_encoder.params.pretrained</c>
/// + <c>pretrained_path</c>, a torchvision <c>.pth</c> or <c>.safetensors</c>) goes into <c>image_encoder.model.*</c>, and
/// Hugging Face BERT (<c>model_config.fashionvil.bert.pretrained_path</c>: <c>bert_model_name</c>'s <c>pytorch_model.bin</c> or
/// <c>model.safetensors</c>) into <c>model.bert.*</c>, with the visual position / token-type tables copied from the text
/// ones and the projection and heads fresh. The same keys, files and name mappings as pre-training
/// (<see cref="PretrainSetup.BuildModel"/>, <see cref="CheckpointMappings.TorchvisionToMmf"/>, <see cref="CheckpointMappings.HfBertToMmf"/>).
/// </summary>
public static class BaseWeights
{
    private const string M = "model_config.fashionvil.";
    private static readonly string[] BertFresh =
    [
        CheckpointMappings.MmfBertPrefix + "embeddings.projection.",
        CheckpointMappings.MmfBertPrefix + "embeddings.position_embeddings_visual.",
        CheckpointMappings.MmfBertPrefix + "embeddings.token_type_embeddings_visual.",
    ];

    /// <summary>
    /// Loads what the config names into <paramref name="model"/> (MMF names) and logs one line per part (loaded, or fresh
    /// init because no path is set). For <c>model: fashionvil</c> (ResNet-50 and BERT) and <c>model: csa_net</c> (ResNet-50); other models are left alone. A named file that does not
    /// exist, or one whose tensors do not fit (missing, unexpected or mis-shaped keys), is an error naming the file and key.
    /// Returns the number of tensors loaded.
    /// </summary>
    public static int Load(FvConfig c, Module model, TextWriter log)
    {
        if (c.GetString("model") == "csa_net") return LoadCsaNet(c, model, log);
        if (c.GetString("model") != "fashionvil") return 0;
        int n = 0;
        var resnet = c.GetStringOrNull(M + "image_encoder.params.pretrained_path");
        bool resnetOn = c.GetBool(M + "image_encoder.params.pretrained");
        if (resnet is not null && resnetOn)
        {
            var file = PretrainSetup.RequireFile(resnet, M + "image_encoder.params.pretrained_path");
            int k = LoadPart(model, file, CheckpointMappings.TorchvisionToMmf(), "image_encoder.", []);
            log.WriteLine($"loaded ResNet-50 weights from {file} ({k} tensors → image_encoder.*; {M}image_encoder.params.pretrained_path)");
            n += k;
        }
        else
            log.WriteLine($"image encoder: fresh init (no {M}image_encoder.params.pretrained_path" + (resnet is not null ? ", or pretrained: false)" : ")"));

        var bert = c.GetStringOrNull(M + "bert.pretrained_path");
        if (bert is not null)
        {
            var file = PretrainSetup.RequireFile(bert, M + "bert.pretrained_path");
            var fb = model.NamedModules().FirstOrDefault(m => m.Name + "." == CheckpointMappings.MmfBertPrefix).Module as FashionViLBert
                ?? throw new InvalidOperationException($"{M}bert.pretrained_path: the model has no FashionViL BERT at '{CheckpointMappings.MmfBertPrefix.TrimEnd('.')}' to load {file} into");
            int k = LoadPart(model, file, CheckpointMappings.HfBertToMmf(), CheckpointMappings.MmfBertPrefix, BertFresh);
            fb.Embeddings.InitializeVisualFromText();
            log.WriteLine($"loaded BERT weights ({c.GetString(M + "bert_model_name")}) from {file} ({k} tensors → model.bert.*; visual position/type tables copied from the text tables, projection fresh; {M}bert.pretrained_path)");
            n += k;
        }
        else
            log.WriteLine($"BERT: fresh init (no {M}bert.pretrained_path)");
        return n;
    }

    /// <summary>CSA-Net (OCIR) without a FashionViL checkpoint: the torchvision ResNet-50 named by
    /// <c>model_config.csa_net.image_encoder.params.pretrained_path</c> (with <c>pretrained: true</c>) goes into
    /// <c>image_encoder.model.*</c>; the projection, fusion and norm layer stay fresh.</summary>
    private static int LoadCsaNet(FvConfig c, Module model, TextWriter log)
    {
        const string K = "model_config.csa_net.image_encoder.params.";
        var resnet = c.GetStringOrNull(K + "pretrained_path");
        if (resnet is null || !c.GetBool(K + "pretrained"))
        {
            log.WriteLine($"image encoder: fresh init (no {K}pretrained_path" + (resnet is not null ? ", or pretrained: false)" : ")"));
            return 0;
        }
        var file = PretrainSetup.RequireFile(resnet, K + "pretrained_path");
        int k = LoadPart(model, file, CheckpointMappings.TorchvisionToMmf(), "image_encoder.", []);
        log.WriteLine($"loaded ResNet-50 weights from {file} ({k} tensors → image_encoder.*; {K}pretrained_path)");
        return k;
    }

    /// <summary>Maps the file's names, keeps those under <paramref name="prefix"/> and loads them; every model tensor under
    /// <paramref name="prefix"/> (except <paramref name="fresh"/> prefixes) must be provided, with its shape.</summary>
    private static int LoadPart(Module model, string path, NameMapping mapping, string prefix, string[] fresh)
    {
        var raw = path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? SafeTensors.Load(path) : TorchCheckpoint.Load(path);
        var zeros = new ZeroCounters();
        try
        {
            var mapped = CheckpointMapping.Apply(raw, mapping, path).Tensors;
            var own = model.StateDict();
            var part = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            var unexpected = new List<string>();
            foreach (var (k, t) in mapped)
            {
                if (!k.StartsWith(prefix, StringComparison.Ordinal)) continue;   // e.g. the MLM head of a BertForPreTraining file
                if (!own.TryGetValue(k, out var mine)) { unexpected.Add(k); continue; }
                if (!mine.Shape.SequenceEqual(t.Shape))
                    throw new InvalidDataException($"checkpoint '{path}': '{k}' has shape {t.ShapeString} but the model's is {mine.ShapeString} (do the model sizes in model_config.fashionvil match the file?)");
                part[k] = t;
            }
            // Files saved before PyTorch 0.4.1 (torchvision's resnet50-19c8e357.pth among them) have no BatchNorm
            // num_batches_tracked; torch's BatchNorm loads them as 0, and so do we.
            foreach (var k in own.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal) && k.EndsWith(".num_batches_tracked", StringComparison.Ordinal) && !part.ContainsKey(k)).ToList())
                part[k] = zeros.Add(Tensor.Zeros([], DType.Int64));
            var missing = own.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal) && !part.ContainsKey(k) && !fresh.Any(f => k.StartsWith(f, StringComparison.Ordinal))).ToList();
            if (unexpected.Count > 0 || missing.Count > 0)
                throw new InvalidDataException($"checkpoint '{path}' does not fit the model's {prefix}*: " + string.Join("; ", new[]
                {
                    missing.Count > 0 ? $"missing {string.Join(", ", missing.Take(8))}" + (missing.Count > 8 ? $" (+{missing.Count - 8} more)" : "") : null,
                    unexpected.Count > 0 ? $"unexpected {string.Join(", ", unexpected.Take(8))}" + (unexpected.Count > 8 ? $" (+{unexpected.Count - 8} more)" : "") : null,
                }.Where(s => s is not null)));
            model.LoadStateDict(part, strict: false);
            return part.Count;
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
            zeros.Dispose();
        }
    }

    /// <summary>The zero counters made for a file without <c>num_batches_tracked</c>, disposed after the load.</summary>
    private sealed class ZeroCounters : IDisposable
    {
        private readonly List<Tensor> _made = [];
        public Tensor Add(Tensor t) { _made.Add(t); return t; }
        public void Dispose() { foreach (var t in _made) t.Dispose(); }
    }
}
