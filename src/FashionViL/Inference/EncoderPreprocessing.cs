using FashionViL.Config;
using FashionViL.Data.Images;

namespace FashionViL.Inference;

/// <summary>
/// How <see cref="FashionViLEncoder"/> turns images and texts into model inputs: the evaluation image pipeline
/// Resize(<see cref="Resize"/>²) → CenterCrop(<see cref="Crop"/>) → ToTensor → Normalize(<see cref="Mean"/>, <see cref="Std"/>)
/// (spec §5.3, product eval) and the <c>bert_tokenizer</c> without masking, padded to <see cref="MaxSeqLength"/> (spec §5.4).
/// </summary>
public sealed record EncoderPreprocessing(int Resize, int Crop, int MaxSeqLength, float[] Mean, float[] Std)
{
    /// <summary>Reads the sizes from a run config: <c>dataset_config.&lt;datasets&gt;.processors.{image_processor.{resize,crop,mean,std},
    /// text_processor.max_seq_length}</c> of the run's first dataset where the keys exist, else those of <c>fashionall</c>
    /// (pre-training).</summary>
    public static EncoderPreprocessing FromConfig(FvConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        var names = (c.GetStringOrNull("datasets") ?? "fashionall").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToList();
        names.Add("fashionall");
        string Pick(string suffix)
        {
            foreach (var n in names)
            {
                var key = $"dataset_config.{n}.processors.{suffix}";
                if (c.Has(key)) return key;
            }
            throw new ConfigException($"config: none of {string.Join(", ", names.Select(n => $"dataset_config.{n}.processors.{suffix}"))} is set");
        }
        int resize = c.GetInt(Pick("image_processor.resize")), crop = c.GetInt(Pick("image_processor.crop"));
        var mean = c.GetDoubleList(Pick("image_processor.mean")).Select(v => (float)v).ToArray();
        var std = c.GetDoubleList(Pick("image_processor.std")).Select(v => (float)v).ToArray();
        var p = new EncoderPreprocessing(resize, crop, c.GetInt(Pick("text_processor.max_seq_length")), mean, std);
        p.Validate();
        return p;
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the bad value.</summary>
    public void Validate()
    {
        if (Crop < 32 || Crop % 32 != 0) throw new ArgumentException($"preprocessing: crop {Crop} must be a positive multiple of 32");
        if (Resize < Crop) throw new ArgumentException($"preprocessing: resize {Resize} is smaller than crop {Crop}");
        if (MaxSeqLength < 2) throw new ArgumentException($"preprocessing: max_seq_length {MaxSeqLength} leaves no room for [CLS] and [SEP]");
        if (Mean is not { Length: 3 } || Std is not { Length: 3 } || Std.Any(s => !(s > 0)))
            throw new ArgumentException("preprocessing: mean and std need 3 values each, std positive");
    }

    /// <summary>The evaluation image pipeline these sizes describe.</summary>
    public ImagePipeline CreateImagePipeline() => new([new FashionViL.Data.Images.Resize(Resize, Resize), new CenterCrop(Crop, Crop)], Crop, Crop, Mean, Std);
}
