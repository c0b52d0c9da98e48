using System.Globalization;
using System.Text;

namespace FashionViL.Data;

/// <summary>
/// The uncased BERT text normalisation (HuggingFace <c>BasicTokenizer</c>: <c>lower()</c>, then NFD and removal of
/// category-Mn characters) without ICU: the executables run with <c>InvariantGlobalization</c>, where
/// <see cref="string.Normalize()"/> leaves "café" unchanged (and BERT then maps it to [UNK]). Canonical decompositions
/// come from the embedded table <c>vocab/nfd-strip-marks.txt</c> (tools/vocab/make_accent_table.py); Hangul syllables
/// decompose by the Unicode formula. Known differences from Python: casing is .NET's simple mapping (Python lower-cases a
/// word-final Σ to ς), and marks are not canonically reordered (only matters for non-Mn combining marks).
/// </summary>
internal static class AccentStripper
{
    internal const string ResourceName = "FashionViL.Data.Text.vocab.nfd-strip-marks.txt";

    private static readonly Lazy<Dictionary<int, string>> _table = new(Load);

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
        using var s = typeof(AccentStripper).Assembly.GetManifestResourceStream(ResourceName)
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
