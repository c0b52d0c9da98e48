namespace FashionViL.Data;

/// <summary>Result of MLM masking over the pieces of one text (no special tokens, no padding).</summary>
/// <param name="MaskedIds">The pieces after masking ([MASK], a random id, or unchanged).</param>
/// <param name="Labels">The original id where a piece was selected, −1 elsewhere.</param>
public sealed record MaskedPieces(int[] MaskedIds, int[] Labels);

/// <summary>
/// Whole-word masked-language-model masking (spec §2.3; reference <c>FashionViLTextTokenizer._random_whole_word</c>
/// with <c>do_whole_word_mask: true</c>). Pieces are grouped into words: a piece that does not start a word joins the
/// group before it (a continuation at position 0 starts a group). Per word, in text order, one uniform draw u:
/// if u &lt; p the word is selected (all its pieces get their original id as label) and v = u / p decides:
/// v &lt; 0.8 → every piece becomes [MASK]; 0.8 ≤ v &lt; 0.9 → every piece becomes its own uniform id in
/// [0, vocabSize) (one draw per piece, specials included); otherwise unchanged. Unselected pieces get label −1.
/// </summary>
public sealed class WholeWordMasker
{
    /// <param name="maskProbability">Probability that a word is selected (0.15 in pre-training; 0 = no masking).</param>
    /// <param name="vocabSize">Random replacements are drawn from [0, vocabSize).</param>
    /// <param name="maskId">The [MASK] id.</param>
    public WholeWordMasker(double maskProbability = 0.15, int vocabSize = BertVocabulary.Size, int maskId = BertVocabulary.MaskId)
    {
        if (!(maskProbability >= 0 && maskProbability <= 1))
            throw new ArgumentOutOfRangeException(nameof(maskProbability), maskProbability, "mask_probability must be in [0, 1]");
        if (vocabSize <= 0) throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "vocab size must be positive");
        if ((uint)maskId >= (uint)vocabSize) throw new ArgumentOutOfRangeException(nameof(maskId), maskId, $"[MASK] id must be in [0, {vocabSize})");
        MaskProbability = maskProbability;
        VocabSize = vocabSize;
        MaskId = maskId;
    }

    public double MaskProbability { get; }
    public int VocabSize { get; }
    public int MaskId { get; }

    /// <summary>
    /// Masks <paramref name="ids"/> (already truncated: the reference truncates before masking). Consumes one
    /// <see cref="Random.NextDouble"/> per word, plus one <see cref="Random.Next(int)"/> per piece of a word that
    /// takes the random-id branch.
    /// </summary>
    public MaskedPieces Apply(ReadOnlySpan<int> ids, ReadOnlySpan<bool> startsWord, Random rng)
    {
        ArgumentNullException.ThrowIfNull(rng);
        if (ids.Length != startsWord.Length)
            throw new ArgumentException($"ids has {ids.Length} pieces but startsWord has {startsWord.Length}", nameof(startsWord));
        var masked = ids.ToArray();
        var labels = new int[ids.Length];
        int start = 0;
        while (start < ids.Length)
        {
            int end = start + 1;
            while (end < ids.Length && !startsWord[end]) end++;
            double u = rng.NextDouble();
            if (u < MaskProbability)
            {
                double v = u / MaskProbability;
                for (int i = start; i < end; i++) labels[i] = ids[i];
                if (v < 0.8)
                    for (int i = start; i < end; i++) masked[i] = MaskId;
                else if (v < 0.9)
                    for (int i = start; i < end; i++) masked[i] = rng.Next(VocabSize);
            }
            else
            {
                for (int i = start; i < end; i++) labels[i] = -1;
            }
            start = end;
        }
        return new(masked, labels);
    }

    public MaskedPieces Apply(WordPieces pieces, Random rng) => Apply(pieces.Ids, pieces.StartsWord, rng);
}
