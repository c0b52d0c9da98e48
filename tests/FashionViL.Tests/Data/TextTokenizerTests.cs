using FashionViL.Data;

namespace FashionViL.Tests.Data;

/// <summary>BERT uncased tokenisation (spec §5.4): known ids from data.md, truncation, padding.</summary>
public class TextTokenizerTests
{
    private static BertTextTokenizer Tok => BertTextTokenizer.Default;

    private static int VocabId(string token) => BertVocabulary.Tokens.ToList().IndexOf(token);

    [Test]
    public void KnownSentencesGiveTheDataMdIds()
    {
        Assert.That(Tok.Encode("i like strawberries", 6).InputIds, Is.EqualTo(new long[] { 101, 1045, 2066, 13137, 20968, 102 }));
        Assert.That(Tok.Encode("Café crème jeans", 6).InputIds, Is.EqualTo(new long[] { 101, 7668, 13675, 21382, 6312, 102 }));
    }

    [Test]
    public void StripsAccentsLikePythonNfdMinusMn()
    {
        // Expected string computed with Python: ''.join(c for c in unicodedata.normalize('NFD', s.lower()) if category(c) != 'Mn').
        const string Input = "Ångström Øre naïve FAÇADE Ñandú 한국 İstanbul e\u0301te\u0301 Ελλάδα";
        const string Expected = "angstrom \u00f8re naive facade nandu \u1112\u1161\u11ab\u1100\u116e\u11a8 istanbul ete \u03b5\u03bb\u03bb\u03b1\u03b4\u03b1";
        Assert.That(BertBasicTokenizer.LowerAndStrip(Input), Is.EqualTo(Expected));
    }

    [Test]
    public void AccentedTextTokenizesLikeItsPlainSpelling()
    {
        Assert.That(Tok.Tokenize("Crème Brûlée NAÏVE Façade").Ids, Is.EqualTo(Tok.Tokenize("creme brulee naive facade").Ids));
        Assert.That(Tok.Tokenize("Crème Brûlée").Ids, Has.None.EqualTo(BertVocabulary.UnkId));
    }

    [Test]
    public void LowerCasesAndSplitsPunctuation()
    {
        var p = Tok.Tokenize("Hello, WORLD!");
        Assert.That(p.Tokens, Is.EqualTo(new[] { "hello", ",", "world", "!" }));
        Assert.That(p.Ids, Is.EqualTo(new[] { VocabId("hello"), VocabId(","), VocabId("world"), VocabId("!") }));
    }

    [Test]
    public void PiecesExposeWordStarts()
    {
        var p = Tok.Tokenize("i like strawberries");
        Assert.That(p.Ids, Is.EqualTo(new[] { 1045, 2066, 13137, 20968 }));
        Assert.That(p.Tokens, Is.EqualTo(new[] { "i", "like", "straw", "##berries" }));
        Assert.That(p.StartsWord, Is.EqualTo(new[] { true, true, true, false }));
        var accented = Tok.Tokenize("Café crème jeans");
        Assert.That(accented.StartsWord, Is.EqualTo(new[] { true, true, false, true }));
    }

    [Test]
    public void PadsWithZerosAndMasksPadding()
    {
        var e = Tok.Encode("i like strawberries", 9);
        Assert.That(e.InputIds, Is.EqualTo(new long[] { 101, 1045, 2066, 13137, 20968, 102, 0, 0, 0 }));
        Assert.That(e.InputMask, Is.EqualTo(new long[] { 1, 1, 1, 1, 1, 1, 0, 0, 0 }));
        Assert.That(e.SegmentIds, Is.EqualTo(new long[9]));
    }

    [Test]
    public void TruncatesPiecesFromTheEndKeepingSep()
    {
        // 4 pieces; max 5 leaves room for 3: the cut falls inside "strawberries".
        Assert.That(Tok.Encode("i like strawberries", 5).InputIds, Is.EqualTo(new long[] { 101, 1045, 2066, 13137, 102 }));
        Assert.That(Tok.Encode("i like strawberries", 3).InputIds, Is.EqualTo(new long[] { 101, 1045, 102 }));
        Assert.That(Tok.Encode("i like strawberries", 3).InputMask, Is.EqualTo(new long[] { 1, 1, 1 }));
    }

    [Test]
    public void MaxTwoKeepsOnlyClsAndSep()
    {
        Assert.That(Tok.Encode("i like strawberries", 2).InputIds, Is.EqualTo(new long[] { 101, 102 }));
        Assert.That(Tok.Encode("", 2).InputIds, Is.EqualTo(new long[] { 101, 102 }));
    }

    [Test]
    public void EmptyAndNullTextAreClsSepPadding()
    {
        foreach (var text in new[] { "", null, "   " })
        {
            var e = Tok.Encode(text, 5);
            Assert.That(e.InputIds, Is.EqualTo(new long[] { 101, 102, 0, 0, 0 }), $"'{text}'");
            Assert.That(e.InputMask, Is.EqualTo(new long[] { 1, 1, 0, 0, 0 }), $"'{text}'");
        }
    }

    [Test]
    public void MaxBelowTwoIsAnError()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Tok.Encode("x", 1));
        Assert.That(ex!.Message, Does.Contain("max_seq_length"));
    }

    [Test]
    public void LongTextFillsExactlyMaxSeqLength()
    {
        var text = string.Join(' ', Enumerable.Repeat("red cotton shirt with long sleeves", 40));
        var e = Tok.Encode(text, 75);
        Assert.That(e.InputIds, Has.Length.EqualTo(75));
        Assert.That(e.InputIds[0], Is.EqualTo(101));
        Assert.That(e.InputIds[74], Is.EqualTo(102));
        Assert.That(e.InputMask, Is.All.EqualTo(1));
        Assert.That(e.InputIds[1..74], Is.EqualTo(Tok.Tokenize(text).Ids[..73].Select(i => (long)i).ToArray()));
    }

    [Test]
    public void ConcurrentEncodingEqualsSequential()
    {
        var texts = Enumerable.Range(0, 64).Select(i => $"item {i}: a Pullover in crème wool, size {i % 7}").ToArray();
        var seq = texts.Select(t => Tok.Encode(t, 20).InputIds).ToArray();
        var par = new long[texts.Length][];
        Parallel.For(0, texts.Length, i => par[i] = Tok.Encode(texts[i], 20).InputIds);
        for (int i = 0; i < texts.Length; i++) Assert.That(par[i], Is.EqualTo(seq[i]), texts[i]);
    }

    [Test]
    public void MatchesAnIndependentPythonStatementOfHuggingFaceBert()
    {
        // tests/fixtures/text/tokenizer_cases.json: tools/fixtures/make_tokenizer_fixture.py (punctuation, controls,
        // odd whitespace, CJK, accents, Hangul, emoji, 101-character words).
        var path = Path.Combine(TextBlockMaskTests.FixtureDir(), "tokenizer_cases.json");
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
        var failures = new List<string>();
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            var expected = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var actual = Tok.Tokenize(text).Ids;
            if (!actual.SequenceEqual(expected))
                failures.Add($"'{text}':\n  expected {string.Join(' ', expected)}\n  actual   {string.Join(' ', actual)}");
        }
        Assert.That(failures, Is.Empty, string.Join("\n", failures));
    }

    [Test]
    public void SpecialTokenStringsStayWholeLikeHuggingFace()
    {
        // HF splits the special tokens out before basic tokenisation (exact case); "[mask]" is ordinary text.
        Assert.That(Tok.Tokenize("a [MASK] dress").Ids, Is.EqualTo(new[] { VocabId("a"), 103, VocabId("dress") }));
        Assert.That(Tok.Tokenize("a [mask]").Ids, Is.EqualTo(new[] { VocabId("a"), VocabId("["), VocabId("mask"), VocabId("]") }));
    }

    [Test]
    public void VocabFileOnDiskGivesTheSameIds()
    {
        var path = Path.Combine(Path.GetTempPath(), $"fv-vocab-{Guid.NewGuid():N}.txt");
        try
        {
            using (var s = BertVocabulary.OpenStream())
            using (var f = File.Create(path)) s.CopyTo(f);
            var fromFile = BertTextTokenizer.FromFile(path);
            Assert.That(fromFile.Encode("Café crème jeans, $25", 10).InputIds, Is.EqualTo(Tok.Encode("Café crème jeans, $25", 10).InputIds));
            Assert.That(fromFile.VocabSize, Is.EqualTo(30522));
        }
        finally { File.Delete(path); }
    }

    [Test]
    public void MissingVocabFileIsNamed()
    {
        var path = Path.Combine(Path.GetTempPath(), "no-such-dir-fv", "vocab.txt");
        var ex = Assert.Throws<FileNotFoundException>(() => BertTextTokenizer.FromFile(path));
        Assert.That(ex!.Message, Does.Contain(path));
    }
}
