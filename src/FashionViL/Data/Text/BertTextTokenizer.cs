using Microsoft.ML.Tokenizers;

namespace FashionViL.Data;

/// <summary>WordPiece pieces of a text, without [CLS]/[SEP]: ids, their vocab strings, and which start a word.</summary>
/// <param name="Ids">Vocabulary ids in text order.</param>
/// <param name="Tokens">The vocab string of each id (continuations keep their <c>##</c>).</param>
/// <param name="StartsWord">False for a <c>##</c> continuation piece; whole-word masking groups on this.</param>
public sealed record WordPieces(int[] Ids, string[] Tokens, bool[] StartsWord)
{
    public int Count => Ids.Length;

    /// <summary>The first <paramref name="count"/> pieces (truncation from the end).</summary>
    public WordPieces Take(int count)
        => count >= Ids.Length ? this : new(Ids[..count], Tokens[..count], StartsWord[..count]);
}

/// <summary>[CLS] pieces [SEP] padded to a fixed length (spec §5.4). All arrays have the same length.</summary>
/// <param name="InputIds">Ids, 0-padded.</param>
/// <param name="InputMask">1 for [CLS], pieces and [SEP]; 0 for padding.</param>
/// <param name="SegmentIds">All 0 (single sentence).</param>
public sealed record EncodedText(long[] InputIds, long[] InputMask, long[] SegmentIds);

/// <summary>
/// The bert-base-uncased tokeniser of the reference (HuggingFace <c>BertTokenizer</c>, do_lower_case): HF's basic
/// tokenisation (<see cref="BertBasicTokenizer"/>: cleaning, CJK spacing, lower-casing, accent stripping, punctuation
/// splitting), then WordPiece per word by Microsoft.ML.Tokenizers over the vocab embedded in this assembly. Thread-safe for concurrent <see cref="Tokenize"/>/<see cref="Encode"/> calls.
/// </summary>
public sealed class BertTextTokenizer
{
    private static readonly Lazy<BertTextTokenizer> _default = new(() =>
    {
        using var s = BertVocabulary.OpenStream();
        return new BertTextTokenizer(CreateInner(s, "embedded bert-base-uncased vocab"), BertVocabulary.Tokens);
    });

    private readonly BertTokenizer _inner;
    private readonly IReadOnlyList<string> _tokens;

    private readonly Dictionary<string, int> _specialIds = new(StringComparer.Ordinal);

    private BertTextTokenizer(BertTokenizer inner, IReadOnlyList<string> tokens)
    {
        _inner = inner;
        _tokens = tokens;
        for (int i = 0; i < tokens.Count; i++)
            if (tokens[i] is "[CLS]" or "[SEP]" or "[PAD]" or "[UNK]" or "[MASK]") _specialIds[tokens[i]] = i;
    }

    /// <summary>The tokeniser over the embedded bert-base-uncased vocab (created once).</summary>
    public static BertTextTokenizer Default => _default.Value;

    /// <summary>A tokeniser over a vocab.txt file (one token per line, id = line number).</summary>
    public static BertTextTokenizer FromFile(string vocabPath)
    {
        if (!File.Exists(vocabPath)) throw new FileNotFoundException($"BERT vocab file not found: {vocabPath}", vocabPath);
        var tokens = File.ReadAllLines(vocabPath);
        if (tokens.Length == 0) throw new InvalidDataException($"BERT vocab file is empty: {vocabPath}");
        using var s = File.OpenRead(vocabPath);
        return new BertTextTokenizer(CreateInner(s, vocabPath), tokens);
    }

    private static BertTokenizer CreateInner(Stream vocab, string what)
    {
        try
        {
            // WordPiece only: BertBasicTokenizer has already done HF's basic tokenisation (see there for why); the
            // casing/accent options mirror HF uncased and are no-ops on its output.
            return BertTokenizer.Create(vocab, new BertOptions
            {
                ApplyBasicTokenization = false, LowerCaseBeforeTokenization = true, RemoveNonSpacingMarks = true,
            });
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"cannot build a BERT tokenizer from {what}: {e.Message}", e);
        }
    }

    public int VocabSize => _tokens.Count;

    /// <summary>The WordPiece pieces of <paramref name="text"/> without special tokens (null is treated as empty).</summary>
    public WordPieces Tokenize(string? text)
    {
        if (string.IsNullOrEmpty(text)) return new([], [], []);
        var ids = new List<int>();
        foreach (var word in BertBasicTokenizer.Split(text))
        {
            if (word[0] == '[' && _specialIds.TryGetValue(word, out int special)) ids.Add(special);
            else ids.AddRange(_inner.EncodeToIds(word, addSpecialTokens: false));
        }
        var idArr = new int[ids.Count];
        var toks = new string[ids.Count];
        var starts = new bool[ids.Count];
        for (int i = 0; i < idArr.Length; i++)
        {
            int id = ids[i];
            idArr[i] = id;
            toks[i] = _tokens[id];
            // The reference groups words on the token string (HF `token.startswith("##")`).
            starts[i] = !toks[i].StartsWith("##", StringComparison.Ordinal);
        }
        return new(idArr, toks, starts);
    }

    /// <summary>
    /// [CLS] + pieces + [SEP], pieces cut from the end so the total fits <paramref name="maxSeqLength"/>, then
    /// 0-padded to exactly <paramref name="maxSeqLength"/> (spec §5.4; reference <c>_truncate_seq_pair</c>).
    /// </summary>
    public EncodedText Encode(string? text, int maxSeqLength)
    {
        var pieces = Tokenize(text).Take(MaxPieces(maxSeqLength));
        return Assemble(pieces.Ids, maxSeqLength);
    }

    /// <summary>Pieces that fit between [CLS] and [SEP] in <paramref name="maxSeqLength"/>.</summary>
    public static int MaxPieces(int maxSeqLength)
    {
        if (maxSeqLength < 2)
            throw new ArgumentOutOfRangeException(nameof(maxSeqLength), maxSeqLength,
                "max_seq_length must be at least 2 ([CLS] and [SEP])");
        return maxSeqLength - 2;
    }

    /// <summary>[CLS] ids [SEP] + padding; <paramref name="pieceIds"/> must already fit.</summary>
    internal static EncodedText Assemble(ReadOnlySpan<int> pieceIds, int maxSeqLength)
    {
        int n = pieceIds.Length + 2;
        if (n > maxSeqLength)
            throw new ArgumentException($"{pieceIds.Length} pieces + [CLS]/[SEP] exceed max_seq_length {maxSeqLength}", nameof(pieceIds));
        var ids = new long[maxSeqLength];
        var mask = new long[maxSeqLength];
        ids[0] = BertVocabulary.ClsId;
        for (int i = 0; i < pieceIds.Length; i++) ids[i + 1] = pieceIds[i];
        ids[n - 1] = BertVocabulary.SepId;
        mask.AsSpan(0, n).Fill(1);
        return new(ids, mask, new long[maxSeqLength]);
    }
}
