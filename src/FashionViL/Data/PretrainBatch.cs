namespace FashionViL.Data;

/// <summary>
/// One collated pre-training batch (spec §2.0): every field is computed for every sample whatever task is drawn.
/// B = batch size, T = max_seq_length, G = grid cells (49 for 224-pixel images). All tensors are on the CPU;
/// the trainer moves them to the training device. Disposing the batch disposes its tensors.
/// </summary>
public sealed class PretrainBatch : IDisposable
{
    /// <summary>(B,3,H,W) float32, augmented and dataset-normalised (spec §5.3): the ResNet input, also the VQ-VAE input.</summary>
    public required Tensor Image { get; init; }
    /// <summary>(B,3,H,W) float32: the second view (drawn with replacement from the product's images).</summary>
    public required Tensor DvImage { get; init; }
    /// <summary>(B,T) int64: [CLS] tokens [SEP] padding, unmasked.</summary>
    public required Tensor InputIds { get; init; }
    /// <summary>(B,T) int64: the same with whole-word MLM masking applied.</summary>
    public required Tensor InputIdsMasked { get; init; }
    /// <summary>(B,T) int64: 1 for real tokens, 0 for padding.</summary>
    public required Tensor InputMask { get; init; }
    /// <summary>(B,T) int64: all zero.</summary>
    public required Tensor SegmentIds { get; init; }
    /// <summary>(B,T) int64: original id at masked positions, −1 elsewhere (ignore index of the MLM loss).</summary>
    public required Tensor LmLabelIds { get; init; }
    /// <summary>(B,2232) float32: 1/n at each of the product's n attribute ids (all zero when it has none).</summary>
    public required Tensor AttributeLabels { get; init; }
    /// <summary>(B,G) int64: the BEiT block mask, 1 = masked cell (row-major over the grid).</summary>
    public required Tensor ImageMasks { get; init; }
    /// <summary>
    /// Optional host copy of <see cref="LmLabelIds"/> (row-major B·T) for a batch that lives on a GPU: MLM picks its
    /// labelled rows from it instead of reading the device tensor back (which would make the step wait for the device).
    /// Must equal LmLabelIds; null: MLM reads the tensor.
    /// </summary>
    public long[]? LmLabelIdsHost { get; init; }
    /// <summary>
    /// Optional host copy of <see cref="ImageMasks"/> (row-major B·G) for a batch on a GPU: MPFC picks its masked cells from
    /// it without reading the device tensor back. Must equal ImageMasks; null: MPFC reads the tensor.
    /// </summary>
    public long[]? ImageMasksHost { get; init; }
    /// <summary>Product ids (the JSON <c>id</c>), the retrieval ground truth.</summary>
    public required long[] Ids { get; init; }

    public int Size => Ids.Length;

    public void Dispose()
    {
        foreach (var t in new[] { Image, DvImage, InputIds, InputIdsMasked, InputMask, SegmentIds, LmLabelIds, AttributeLabels, ImageMasks })
            t.Dispose();
    }
}
