namespace FashionViL.Data;

/// <summary>The five (B,T) int64 text tensors of a <see cref="PretrainBatch"/>. Disposing disposes them.</summary>
public sealed record CollatedText(Tensor InputIds, Tensor InputIdsMasked, Tensor InputMask, Tensor SegmentIds, Tensor LmLabelIds) : IDisposable
{
    public void Dispose()
    {
        InputIds.Dispose(); InputIdsMasked.Dispose(); InputMask.Dispose(); SegmentIds.Dispose(); LmLabelIds.Dispose();
    }
}

/// <summary>
/// Stacks per-sample arrays into the CPU tensors of <see cref="PretrainBatch"/>: the text fields, the block masks
/// (<c>ImageMasks</c>, (B,G) int64) and the soft attribute rows (<c>AttributeLabels</c>, (B,2232) float32). Images are
/// collated by the image pipeline. Rows must all have the same length; a mismatch names the field and sample.
/// <example><code>
/// using var text = TextCollator.Collate(samples);
/// var batch = new PretrainBatch { InputIds = text.InputIds, ..., ImageMasks = TextCollator.Stack(masks, "image_masks"),
///     AttributeLabels = TextCollator.Stack(attrs, "attribute_labels"), ... };
/// </code> (the batch then owns the tensors: build it from the fields rather than also disposing <c>text</c>).</example>
/// </summary>
public static class TextCollator
{
    /// <summary>The text fields of <paramref name="samples"/> as (B,T) int64 tensors.</summary>
    public static CollatedText Collate(IReadOnlyList<PretrainTextSample> samples)
    {
        ArgumentNullException.ThrowIfNull(samples);
        var ids = Stack(Rows(samples, s => s.InputIds), "input_ids");
        try
        {
            return new(ids,
                Stack(Rows(samples, s => s.InputIdsMasked), "input_ids_masked"),
                Stack(Rows(samples, s => s.InputMask), "input_mask"),
                Stack(Rows(samples, s => s.SegmentIds), "segment_ids"),
                Stack(Rows(samples, s => s.LmLabelIds), "lm_label_ids"));
        }
        catch
        {
            ids.Dispose(); // later fields fail only on a length mismatch; the first one is then the only leak
            throw;
        }
    }

    /// <summary>Stacks equal-length rows into a (B, L) CPU tensor; <paramref name="field"/> names it in errors.</summary>
    public static Tensor Stack<T>(IReadOnlyList<T[]> rows, string field) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) throw new ArgumentException($"{field}: cannot collate an empty batch", nameof(rows));
        int len = rows[0].Length;
        var flat = new T[checked(rows.Count * len)];
        for (int b = 0; b < rows.Count; b++)
        {
            if (rows[b].Length != len)
                throw new ArgumentException($"{field}: sample {b} has length {rows[b].Length}, sample 0 has {len}", nameof(rows));
            rows[b].CopyTo(flat, b * len);
        }
        return Tensor.FromArray(flat, [rows.Count, len], Device.Cpu);
    }

    private static long[][] Rows(IReadOnlyList<PretrainTextSample> samples, Func<PretrainTextSample, long[]> field)
    {
        var rows = new long[samples.Count][];
        for (int i = 0; i < rows.Length; i++) rows[i] = field(samples[i]);
        return rows;
    }
}
