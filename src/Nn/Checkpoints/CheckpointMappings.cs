namespace FashionViL.Nn.Checkpoints;

/// <summary>Where converted weights go: our own modules (ResNet50, BertForMaskedLM, the VQ-VAE) or the MMF FashionViL layout.</summary>
public enum MappingTarget { Ours, Mmf }

/// <summary>Which kind of checkpoint a file holds.</summary>
public enum CheckpointSource { Torchvision, HfBert, Mmf, Vqvae, Raw }

/// <summary>
/// The mappings for the real checkpoints FashionViL uses. Our ResNet50 and BERT use the torchvision / Hugging Face
/// names, and our FashionViL model uses the MMF names verbatim (<c>image_encoder.model.*</c>, <c>model.bert.*</c>,
/// <c>model.heads.*</c>, <c>model.image_tokenizer.*</c>), so "MMF layout" is also the layout of our FashionViL.
/// </summary>
public static class CheckpointMappings
{
    /// <summary>Index of each torchvision ResNet child in MMF's <c>nn.Sequential(*list(resnet.children())[:-2])</c>
    /// (2 = relu and 3 = maxpool have no state).</summary>
    public static readonly IReadOnlyList<(string Torchvision, int MmfIndex)> ResNetChildren =
        [("conv1", 0), ("bn1", 1), ("layer1", 4), ("layer2", 5), ("layer3", 6), ("layer4", 7)];

    public const string MmfImageEncoderPrefix = "image_encoder.model.";
    public const string MmfBertPrefix = "model.bert.";
    public const string MmfMlmPrefix = "model.heads.mlm.";
    public const string MmfTokenizerPrefix = "model.image_tokenizer.";

    /// <summary>torchvision resnet50 → our <c>ResNet50</c> (same names); <c>fc.*</c> dropped unless <paramref name="includeFc"/>.</summary>
    public static NameMapping TorchvisionToResNet50(bool includeFc = false)
    {
        var m = new NameMapping("torchvision → ours").Require("conv1.weight").Require("layer4.2.conv3.weight");
        if (!includeFc) m.DropPrefix("fc.", "classifier (our ResNet50 has no fc unless includeFc)");
        return m;
    }

    /// <summary>torchvision resnet50 → MMF <c>image_encoder.model.{0,1,4,5,6,7}.*</c>; <c>fc.*</c> dropped (MMF removes avgpool and fc).</summary>
    public static NameMapping TorchvisionToMmf()
    {
        var m = new NameMapping("torchvision → mmf").Require("conv1.weight").Require("layer4.2.conv3.weight")
            .DropPrefix("fc.", "classifier (MMF's image encoder drops avgpool and fc)");
        foreach (var (tv, i) in ResNetChildren) m.RenamePrefix(tv + ".", $"{MmfImageEncoderPrefix}{i}.");
        return m;
    }

    /// <summary>MMF <c>image_encoder.model.*</c> → torchvision names (our ResNet50); everything else dropped.</summary>
    public static NameMapping MmfToResNet50()
    {
        var m = new NameMapping("mmf → resnet50").RenamePrefix("module.", "")
            .Require(MmfImageEncoderPrefix + "0.weight", "module." + MmfImageEncoderPrefix + "0.weight").KeepOnly(MmfImageEncoderPrefix);
        foreach (var (tv, i) in ResNetChildren) m.RenamePrefix($"{MmfImageEncoderPrefix}{i}.", tv + ".");
        return m;
    }

    /// <summary>
    /// HF bert-base-uncased (<c>pytorch_model.bin</c> or <c>model.safetensors</c>) → our <c>BertForMaskedLM</c>
    /// (<paramref name="withMlmHead"/>) or <c>BertModel</c> (bare names, no <c>cls.*</c>). Old LayerNorm
    /// <c>gamma</c>/<c>beta</c> become <c>weight</c>/<c>bias</c>; a file without the <c>bert.</c> prefix (a bare
    /// BertModel save) is accepted; <c>cls.seq_relationship.*</c> (NSP) and the <c>position_ids</c> buffer are
    /// dropped; <c>cls.predictions.decoder.weight</c> must equal the word embeddings (tied) and
    /// <c>decoder.bias</c> must equal <c>cls.predictions.bias</c>; both are then dropped.
    /// </summary>
    public static NameMapping HfBertToOurs(bool withMlmHead = true)
    {
        var m = new NameMapping(withMlmHead ? "hf-bert → ours" : "hf-bert → ours (BertModel)");
        HfBertCommon(m);
        if (withMlmHead)
        {
            m.Tie("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight")
             .Tie("cls.predictions.decoder.bias", "cls.predictions.bias");
        }
        else
        {
            m.DropPrefix("cls.", "pre-training heads (BertModel has none)").RenamePrefix("bert.", "");
        }
        return m;
    }

    /// <summary>
    /// HF bert-base-uncased → the MMF FashionViL layout: BERT body → <c>model.bert.*</c>, <c>cls.predictions.*</c>
    /// → <c>model.heads.mlm.*</c> (decoder tied to the word embeddings, so not stored). The visual tables and the
    /// projection are reported as to initialise (the visual tables as copies of the text position / token-type
    /// tables, spec §1.4 <c>special_visual_initialize</c>).
    /// </summary>
    public static NameMapping HfBertToMmf()
    {
        var m = new NameMapping("hf-bert → mmf");
        HfBertCommon(m);
        m.RenamePrefix("bert.", MmfBertPrefix).RenamePrefix("cls.predictions.", MmfMlmPrefix)
         .Tie(MmfMlmPrefix + "decoder.weight", MmfBertPrefix + "embeddings.word_embeddings.weight")
         .Tie(MmfMlmPrefix + "decoder.bias", MmfMlmPrefix + "bias")
         .Initialise(MmfBertPrefix + "embeddings.projection.weight")
         .Initialise(MmfBertPrefix + "embeddings.projection.bias")
         .Initialise(MmfBertPrefix + "embeddings.position_embeddings_visual.weight", MmfBertPrefix + "embeddings.position_embeddings.weight")
         .Initialise(MmfBertPrefix + "embeddings.token_type_embeddings_visual.weight", MmfBertPrefix + "embeddings.token_type_embeddings.weight");
        return m;
    }

    private static void HfBertCommon(NameMapping m)
    {
        m.Require("bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight")
         .RenameRegex(@"^(embeddings|encoder|pooler)\.", "bert.$1.")
         .RenameRegex(@"(^|\.)LayerNorm\.gamma$", "$1LayerNorm.weight")
         .RenameRegex(@"(^|\.)LayerNorm\.beta$", "$1LayerNorm.bias")
         .DropPrefix("cls.seq_relationship.", "next-sentence head (FashionViL's ITM head is freshly initialised)")
         .DropKey("bert.embeddings.position_ids", "position-id buffer (positions are computed)");
    }

    /// <summary>
    /// An MMF FashionViL checkpoint (the <c>model</c> state dict of <c>{"model": ..., "optimizer": ...}</c> or a bare
    /// state dict, optionally with the DDP <c>module.</c> prefix) → our FashionViL (MMF names): the prefix is
    /// stripped, the tied MLM decoder (<c>model.heads.mlm.decoder.{weight,bias}</c>) is checked and dropped, the
    /// <c>position_ids</c> buffer is dropped.
    /// </summary>
    public static NameMapping MmfFashionViL()
    {
        var m = new NameMapping("mmf → ours");
        MmfCommon(m);
        return m;
    }

    /// <summary>
    /// Spec §4 <c>pretrained_state_mapping</c>: like <see cref="MmfFashionViL"/> but keeps only <paramref name="prefixes"/>
    /// (default <c>image_encoder.</c> and <c>model.bert.</c>; OCIR uses only <c>image_encoder.</c>). Heads and the
    /// normalisation scalar start fresh.
    /// </summary>
    public static NameMapping MmfFinetune(params string[] prefixes)
    {
        if (prefixes.Length == 0) prefixes = ["image_encoder.", MmfBertPrefix];
        var m = new NameMapping("mmf → ours (fine-tune)");
        MmfCommon(m, prefixes);
        return m;
    }

    private static void MmfCommon(NameMapping m, string[]? keepOnly = null)
    {
        m.Require(MmfBertPrefix + "embeddings.word_embeddings.weight", "module." + MmfBertPrefix + "embeddings.word_embeddings.weight")
         .RenamePrefix("module.", "");
        if (keepOnly is not null) m.KeepOnly(keepOnly); // before the ties: the heads (and their tied decoder) go
        m.DropKey(MmfBertPrefix + "embeddings.position_ids", "position-id buffer (positions are computed)")
         .Tie(MmfMlmPrefix + "decoder.weight", MmfBertPrefix + "embeddings.word_embeddings.weight")
         .Tie(MmfMlmPrefix + "decoder.bias", MmfMlmPrefix + "bias");
    }

    /// <summary>The authors' VQ-VAE file (<c>encoder.*</c>, <c>quant_conv.*</c>, <c>quantize.*</c>) → our VQ-VAE module (same names).</summary>
    public static NameMapping VqvaeToOurs() =>
        new NameMapping("vqvae → ours").Require("quant_conv.weight").Require("quantize.embedding.weight");

    /// <summary>The VQ-VAE file → <c>model.image_tokenizer.*</c> inside the MMF FashionViL layout.</summary>
    public static NameMapping VqvaeToMmf()
    {
        var m = new NameMapping("vqvae → mmf").Require("quant_conv.weight").Require("quantize.embedding.weight");
        foreach (var p in new[] { "encoder.", "quant_conv.", "quantize." }) m.RenamePrefix(p, MmfTokenizerPrefix + p);
        return m;
    }

    /// <summary><c>model.image_tokenizer.*</c> of an MMF checkpoint → the raw VQ-VAE names; everything else dropped.</summary>
    public static NameMapping MmfToVqvae() =>
        new NameMapping("mmf → vqvae").RenamePrefix("module.", "").Require(MmfTokenizerPrefix + "quant_conv.weight", "module." + MmfTokenizerPrefix + "quant_conv.weight")
            .KeepOnly(MmfTokenizerPrefix).RenamePrefix(MmfTokenizerPrefix, "");

    /// <summary>No renaming (a plain format conversion).</summary>
    public static NameMapping Raw() => new("raw");

    /// <summary>The mapping for a (source kind, target layout) pair.</summary>
    public static NameMapping For(CheckpointSource from, MappingTarget to, bool includeFc = false, bool finetune = false) => (from, to) switch
    {
        (CheckpointSource.Torchvision, MappingTarget.Ours) => TorchvisionToResNet50(includeFc),
        (CheckpointSource.Torchvision, MappingTarget.Mmf) => TorchvisionToMmf(),
        (CheckpointSource.HfBert, MappingTarget.Ours) => HfBertToOurs(),
        (CheckpointSource.HfBert, MappingTarget.Mmf) => HfBertToMmf(),
        (CheckpointSource.Mmf, _) => finetune ? MmfFinetune() : MmfFashionViL(),
        (CheckpointSource.Vqvae, MappingTarget.Ours) => VqvaeToOurs(),
        (CheckpointSource.Vqvae, MappingTarget.Mmf) => VqvaeToMmf(),
        (CheckpointSource.Raw, _) => Raw(),
        _ => throw new ArgumentOutOfRangeException(nameof(from), $"no mapping from {from} to {to}"),
    };

    /// <summary>Guesses the source kind from signature keys (Raw when nothing fits).</summary>
    public static CheckpointSource Detect(IEnumerable<string> keys)
    {
        var set = keys as IReadOnlySet<string> ?? keys.ToHashSet(StringComparer.Ordinal);
        if (set.Contains(MmfBertPrefix + "embeddings.word_embeddings.weight") || set.Contains("module." + MmfBertPrefix + "embeddings.word_embeddings.weight"))
            return CheckpointSource.Mmf;
        if (set.Contains("bert.embeddings.word_embeddings.weight") || set.Contains("embeddings.word_embeddings.weight"))
            return CheckpointSource.HfBert;
        if (set.Contains("conv1.weight") && set.Contains("layer1.0.conv1.weight")) return CheckpointSource.Torchvision;
        if (set.Contains("quant_conv.weight") && set.Contains("quantize.embedding.weight")) return CheckpointSource.Vqvae;
        return CheckpointSource.Raw;
    }
}
