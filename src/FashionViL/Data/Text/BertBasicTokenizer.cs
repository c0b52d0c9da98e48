using System.Globalization;
using System.Text;

namespace FashionViL.Data;

/// <summary>
/// HuggingFace's <c>BasicTokenizer</c> for uncased BERT, the step before WordPiece: (1) special-token strings
/// ([CLS] [SEP] [PAD] [UNK] [MASK], exact case) stay whole, as HF splits them out first; (2) clean: drop U+0000,
/// U+FFFD and control characters (category C*, except tab/LF/CR), map whitespace (tab/LF/CR, category Zs) to a space;
/// (3) spaces around CJK ideographs; (4) split on whitespace; per word: lower-case, NFD, drop category Mn, and split
/// off every punctuation character (ASCII 33–47, 58–64, 91–96, 123–126, or category P*).
/// <para>Why not Microsoft.ML.Tokenizers' own basic tokenisation: it drops symbols (<c>$ + &lt; = &gt; ^ ` | ~ € ™</c>,
/// emoji) instead of keeping them as tokens, joins words across tab/LF/CR, and, with <c>InvariantGlobalization</c>
/// (how this project's executables run), cannot NFD-normalise, so "café" became [UNK]. It is used for WordPiece only.</para>
/// <para>Canonical decompositions come from the embedded table <c>vocab/nfd-strip-marks.txt</c>
/// (tools/vocab/make_accent_table.py); Hangul syllables decompose by the Unicode formula. Known differences from
/// Python: casing is .NET's simple mapping (Python lower-cases a word-final Σ to ς), marks are not canonically reordered
/// (matters only for non-Mn combining marks), and character categories follow .NET's Unicode version.</para>
/// </summary>
internal static class BertBasicTokenizer
{
    private static readonly string[] SpecialTokens = ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"];

    /// <summary>The words (and punctuation characters) of <paramref name="text"/>, ready for WordPiece.</summary>
    public static List<string> Split(string text)
    {
        var words = new List<string>();
        int pos = 0;
        while (pos < text.Length)
        {
            int next = -1, which = -1;
            for (int k = 0; k < SpecialTokens.Length; k++)
            {
                int i = text.IndexOf(SpecialTokens[k], pos, StringComparison.Ordinal);
                if (i >= 0 && (next < 0 || i < next)) { next = i; which = k; }
            }
            if (next < 0) { SplitPlain(text.AsSpan(pos), words); break; }
            SplitPlain(text.AsSpan(pos, next - pos), words);
            words.Add(SpecialTokens[which]);
            pos = next + SpecialTokens[which].Length;
        }
        return words;
    }

    private static void SplitPlain(ReadOnlySpan<char> text, List<string> words)
    {
        var clean = new StringBuilder(text.Length + 8);
        foreach (var r in text.EnumerateRunes())
        {
            int cp = r.Value;
            if (cp == 0 || cp == 0xFFFD || IsControl(r)) continue;
            if (IsWhitespace(r)) clean.Append(' ');
            else if (IsCjk(cp)) clean.Append(' ').Append(r.ToString()).Append(' ');
            else clean.Append(r.ToString());
        }
        foreach (var token in clean.ToString().Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
        {
            var word = LowerAndStrip(token);
            int start = 0;
            for (int i = 0; i < word.Length;)
            {
                var r = Rune.GetRuneAt(word, i);
                if (IsPunctuation(r))
                {
                    if (i > start) words.Add(word[start..i]);
                    words.Add(r.ToString());
                    start = i + r.Utf16SequenceLength;
                }
                i += r.Utf16SequenceLength;
            }
            if (start < word.Length) words.Add(word[start..]);
        }
    }

    private static bool IsWhitespace(Rune r)
        => r.Value is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(r) == UnicodeCategory.SpaceSeparator;

    private static bool IsControl(Rune r)
    {
        if (r.Value is '\t' or '\n' or '\r') return false;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;
    }

    private static bool IsPunctuation(Rune r)
    {
        int cp = r.Value;
        if (cp is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126) return true;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;
    }

    private static bool IsCjk(int cp)
        => cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF or >= 0x2A700 and <= 0x2B73F
            or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;

    internal const string ResourceName = "FashionViL.Data.Text.vocab.nfd-strip-marks.txt";

    private static readonly Lazy<Dictionary<int, string>> _table = new(Load);

    /// <summary>Python's <c>lower()</c>, then NFD with category-Mn characters removed (HF <c>_run_strip_accents</c>).</summary>
    public static string LowerAndStrip(string text)
    {
        // .NET's invariant casing leaves U+0130 (İ) alone; Python lower-cases it to "i" + U+0307, stripped to "i".
        var lower = text.ToLowerInvariant().Replace('\u0130', 'i');
        bool ascii = true;
        foreach (char ch in lower) if (ch >= 0x80) { ascii = false; break; }
        if (ascii) return lower; // ASCII has no decompositions and no marks

        var table = _table.Value;
        var sb = new StringBuilder(lower.Length);
        foreach (var r in lower.EnumerateRunes())
        {
            int cp = r.Value;
            if (cp is >= 0xAC00 and < 0xAC00 + 11172)
            {
                int s = cp - 0xAC00; // Hangul: L + V (+ T), all category Lo
                sb.Append((char)(0x1100 + s / 588)).Append((char)(0x1161 + s % 588 / 28));
                if (s % 28 != 0) sb.Append((char)(0x11A7 + s % 28));
            }
            else if (table.TryGetValue(cp, out var mapped)) sb.Append(mapped);
            else if (Rune.GetUnicodeCategory(r) != UnicodeCategory.NonSpacingMark) sb.Append(r.ToString());
        }
        return sb.ToString();
    }

    private static Dictionary<int, string> Load()
    {
        using var s = typeof(BertBasicTokenizer).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"embedded resource '{ResourceName}' is missing");
        using var reader = new StreamReader(s, Encoding.ASCII);
        var table = new Dictionary<int, string>(2100);
        int lineNo = 0;
        while (reader.ReadLine() is { } line)
        {
            lineNo++;
            if (line.Length == 0 || line[0] == '#') continue;
            var parts = line.Split(' ');
            try
            {
                var sb = new StringBuilder();
                for (int i = 1; i < parts.Length; i++) sb.Append(char.ConvertFromUtf32(int.Parse(parts[i], NumberStyles.HexNumber, CultureInfo.InvariantCulture)));
                table[int.Parse(parts[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture)] = sb.ToString();
            }
            catch (FormatException e)
            {
                throw new InvalidDataException($"embedded resource '{ResourceName}' line {lineNo}: '{line}' is not hex code points", e);
            }
        }
        return table;
    }
}
