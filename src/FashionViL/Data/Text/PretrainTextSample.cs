namespace FashionViL.Data;

/// <summary>
/// The text fields of one pre-training sample (spec §2.0), each of length max_seq_length, as int64 like the
/// reference's <c>torch.long</c> tensors. Collate a batch with <see cref="TextCollator"/>.
/// </summary>
public sealed record PretrainTextSample(long[] InputIds, long[] InputIdsMasked, long[] InputMask, long[] SegmentIds, long[] LmLabelIds)
{
    public int Length => InputIds.Length;
}

/// <summary>
/// Text → <see cref="PretrainTextSample"/>, the reference's <c>fashionvil_text_tokenizer</c> (spec §2.3, §5.4):
/// WordPiece, truncation to max_seq_length − 2 pieces, then whole-word masking of the kept pieces, then
/// [CLS]/[SEP] and 0-padding. [CLS], [SEP] and padding carry label −1; the input mask covers the unpadded part of
/// both id rows. With mask_probability 0 (evaluation, the reference <c>bert_tokenizer</c>) nothing is masked.
/// </summary>
public sealed class PretrainTextProcessor
{
    /// <param name="wholeWord">false: every WordPiece is masked on its own (the reference's <c>do_whole_word_mask: false</c>).</param>
    public PretrainTextProcessor(int maxSeqLength = 75, double maskProbability = 0.15, BertTextTokenizer? tokenizer = null, bool wholeWord = true)
    {
        WholeWord = wholeWord;
        BertTextTokenizer.MaxPieces(maxSeqLength); // validates
        Tokenizer = tokenizer ?? BertTextTokenizer.Default;
        MaxSeqLength = maxSeqLength;
        Masker = new WholeWordMasker(maskProbability, Tokenizer.VocabSize);
    }

    public BertTextTokenizer Tokenizer { get; }
    public WholeWordMasker Masker { get; }
    public int MaxSeqLength { get; }
    public bool WholeWord { get; }

    /// <summary>
    /// Processes one text. <paramref name="rng"/> drives the masking only; for per-sample determinism pass
    /// <c>PhiloxRandom.ForSample(seed, sampleIndex, PhiloxRandom.Purpose.TextMask)</c>.
    /// </summary>
    public PretrainTextSample Process(string? text, Random rng)
    {
        var pieces = Tokenizer.Tokenize(text).Take(BertTextTokenizer.MaxPieces(MaxSeqLength));
        var plain = BertTextTokenizer.Assemble(pieces.Ids, MaxSeqLength);
        var m = WholeWord ? Masker.Apply(pieces, rng) : Masker.Apply(pieces.Ids, Enumerable.Repeat(true, pieces.Ids.Length).ToArray(), rng);
        var maskedIds = BertTextTokenizer.Assemble(m.MaskedIds, MaxSeqLength).InputIds;
        var labels = new long[MaxSeqLength];
        Array.Fill(labels, -1L);
        for (int i = 0; i < m.Labels.Length; i++) labels[i + 1] = m.Labels[i];
        return new(plain.InputIds, maskedIds, plain.InputMask, plain.SegmentIds, labels);
    }
}
