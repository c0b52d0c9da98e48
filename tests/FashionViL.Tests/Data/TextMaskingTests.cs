using FashionViL.Data;

namespace FashionViL.Tests.Data;

/// <summary>Whole-word MLM masking (spec §2.3, reference FashionViLTextTokenizer with do_whole_word_mask).</summary>
public class TextMaskingTests
{
    private static readonly int[] Pieces = [1045, 2066, 13137, 20968]; // i like straw ##berries
    private static readonly bool[] Starts = [true, true, true, false];

    [Test]
    public void SelectedWordBecomesMaskAndIsLabelled()
    {
        // word "i": 0.5 ≥ 0.15 not selected; "like": 0.01 → v = 0.067 < 0.8 → [MASK]; "strawberries": 0.14 → v = 0.933 → kept.
        var rng = new ScriptedRandom(0.5, 0.01, 0.14);
        var m = new WholeWordMasker().Apply(Pieces, Starts, rng);
        Assert.That(m.MaskedIds, Is.EqualTo(new[] { 1045, 103, 13137, 20968 }));
        Assert.That(m.Labels, Is.EqualTo(new[] { -1, 2066, 13137, 20968 }));
        Assert.That(rng.Exhausted, Is.True, "one draw per word");
    }

    [Test]
    public void RandomBranchDrawsOneIdPerPieceOverTheWholeVocab()
    {
        // "like": 0.125 → v = 0.833 → random id (draw 7); "strawberries": 0.13 → v = 0.867 → random, one id per piece.
        var rng = new ScriptedRandom(0.9, 0.125, 7, 0.13, 30521, 0);
        var m = new WholeWordMasker().Apply(Pieces, Starts, rng);
        Assert.That(m.MaskedIds, Is.EqualTo(new[] { 1045, 7, 30521, 0 }));
        Assert.That(m.Labels, Is.EqualTo(new[] { -1, 2066, 13137, 20968 }));
        Assert.That(rng.IntRanges, Is.All.EqualTo((0, 30522)), "ids drawn uniformly from [0, 30522), specials included");
        Assert.That(rng.Exhausted, Is.True);
    }

    [Test]
    public void AllPiecesOfAWordShareTheMaskBranch()
    {
        var rng = new ScriptedRandom(0.9, 0.9, 0.0);
        var m = new WholeWordMasker().Apply(Pieces, Starts, rng);
        Assert.That(m.MaskedIds, Is.EqualTo(new[] { 1045, 2066, 103, 103 }));
        Assert.That(m.Labels, Is.EqualTo(new[] { -1, -1, 13137, 20968 }));
    }

    [Test]
    public void LeadingContinuationStartsAGroupAndLaterOnesJoinIt()
    {
        // Reference: the first piece always opens a group, even if it is a ## piece.
        var rng = new ScriptedRandom(0.0, 0.5);
        var m = new WholeWordMasker().Apply([5, 6, 7], [false, false, true], rng);
        Assert.That(m.MaskedIds, Is.EqualTo(new[] { 103, 103, 7 }));
        Assert.That(m.Labels, Is.EqualTo(new[] { 5, 6, -1 }));
    }

    [Test]
    public void ProcessorBuildsAllFiveFields()
    {
        var p = new PretrainTextProcessor(maxSeqLength: 8);
        var s = p.Process("i like strawberries", new ScriptedRandom(0.5, 0.01, 0.14));
        Assert.That(s.InputIds, Is.EqualTo(new long[] { 101, 1045, 2066, 13137, 20968, 102, 0, 0 }));
        Assert.That(s.InputIdsMasked, Is.EqualTo(new long[] { 101, 1045, 103, 13137, 20968, 102, 0, 0 }));
        Assert.That(s.LmLabelIds, Is.EqualTo(new long[] { -1, -1, 2066, 13137, 20968, -1, -1, -1 }));
        Assert.That(s.InputMask, Is.EqualTo(new long[] { 1, 1, 1, 1, 1, 1, 0, 0 }));
        Assert.That(s.SegmentIds, Is.EqualTo(new long[8]));
    }

    [Test]
    public void TruncationHappensBeforeMasking()
    {
        // max 5 keeps "i like straw": the random branch on the cut word draws one id (for "straw") only.
        var rng = new ScriptedRandom(0.9, 0.9, 0.13, 555);
        var s = new PretrainTextProcessor(maxSeqLength: 5).Process("i like strawberries", rng);
        Assert.That(s.InputIds, Is.EqualTo(new long[] { 101, 1045, 2066, 13137, 102 }));
        Assert.That(s.InputIdsMasked, Is.EqualTo(new long[] { 101, 1045, 2066, 555, 102 }));
        Assert.That(s.LmLabelIds, Is.EqualTo(new long[] { -1, -1, -1, 13137, -1 }));
        Assert.That(rng.Exhausted, Is.True);
    }

    [Test]
    public void ZeroProbabilityMasksNothing()
    {
        var p = new PretrainTextProcessor(maxSeqLength: 12, maskProbability: 0);
        var s = p.Process("Café crème jeans, i like strawberries", PhiloxRandom.ForSample(1, 0, PhiloxRandom.Purpose.TextMask));
        Assert.That(s.InputIdsMasked, Is.EqualTo(s.InputIds));
        Assert.That(s.LmLabelIds, Is.All.EqualTo(-1L));
    }

    [Test]
    public void EmptyTextHasNoLabels()
    {
        var s = new PretrainTextProcessor(maxSeqLength: 4).Process("", new ScriptedRandom());
        Assert.That(s.InputIdsMasked, Is.EqualTo(new long[] { 101, 102, 0, 0 }));
        Assert.That(s.LmLabelIds, Is.All.EqualTo(-1L));
    }

    /// <summary>Word groups computed here from the spec: a piece that does not start a word joins the previous one.</summary>
    private static List<(int Start, int End)> Words(bool[] starts)
    {
        var words = new List<(int, int)>();
        for (int i = 0; i < starts.Length; i++)
            if (i == 0 || starts[i]) words.Add((i, i + 1));
            else words[^1] = (words[^1].Item1, i + 1);
        return words;
    }

    [Test]
    public void SelectionAndBranchRatesMatchTheSpecOverManyDraws()
    {
        var pieces = BertTextTokenizer.Default.Tokenize(
            "Slim-fit strawberries-print jeans in stretch denim with embroidered blueberries, unbuttoned cuffs and " +
            "a crème tonal waistband; handmade in Portugal");
        var words = Words(pieces.StartsWord);
        Assert.That(words.Count(w => w.End - w.Start > 1), Is.GreaterThanOrEqualTo(3), "the text must contain multi-piece words");
        var masker = new WholeWordMasker();
        const int Samples = 4000;
        long nWords = 0, selected = 0, toMask = 0, toRandom = 0, randomPieces = 0, intDraws = 0;
        for (int s = 0; s < Samples; s++)
        {
            var rng = new RecordingRandom(PhiloxRandom.ForSample(2026, s, PhiloxRandom.Purpose.TextMask));
            var m = masker.Apply(pieces, rng);
            foreach (var (a, b) in words)
            {
                nWords++;
                bool sel = m.Labels[a] != -1;
                for (int i = a; i < b; i++)
                {
                    // Whole-word: every piece shares the word's fate; a label is the original id.
                    Assert.That(m.Labels[i], Is.EqualTo(sel ? pieces.Ids[i] : -1), $"sample {s} piece {i}");
                    if (!sel) Assert.That(m.MaskedIds[i], Is.EqualTo(pieces.Ids[i]), $"unselected piece {i} changed");
                }
                if (!sel) continue;
                selected++;
                bool allMask = Enumerable.Range(a, b - a).All(i => m.MaskedIds[i] == BertVocabulary.MaskId);
                bool allKept = Enumerable.Range(a, b - a).All(i => m.MaskedIds[i] == pieces.Ids[i]);
                if (allMask) toMask++;
                else if (!allKept) { toRandom++; randomPieces += b - a; }
            }
            Assert.That(rng.IntRanges, Is.All.EqualTo((0, 30522)));
            intDraws += rng.IntRanges.Count;
        }
        // Binomial bounds at 5σ; a random id equal to [MASK] or the original (p ≈ 1/30522 per piece) is far below them.
        Binomial.AssertFraction(selected, nWords, 0.15, "words selected");
        Binomial.AssertFraction(toMask, selected, 0.8, "selected words → [MASK]");
        Binomial.AssertFraction(toRandom, selected, 0.1, "selected words → random ids");
        Binomial.AssertFraction(selected - toMask - toRandom, selected, 0.1, "selected words kept");
        Assert.That(intDraws, Is.EqualTo(randomPieces), "exactly one random id per piece of a random-branch word");
    }

    [Test]
    public void DeterministicPerSeedAndSampleWhateverTheThread()
    {
        var p = new PretrainTextProcessor();
        var texts = Enumerable.Range(0, 50).Select(i => $"sample {i}: embroidered cotton shirt with strawberries print").ToArray();
        PretrainTextSample Run(int i, ulong seed) => p.Process(texts[i], PhiloxRandom.ForSample(seed, i, PhiloxRandom.Purpose.TextMask));
        var seq = Enumerable.Range(0, texts.Length).Select(i => Run(i, 11)).ToArray();
        var par = new PretrainTextSample[texts.Length];
        Parallel.For(0, texts.Length, i => par[texts.Length - 1 - i] = Run(texts.Length - 1 - i, 11));
        for (int i = 0; i < texts.Length; i++)
        {
            Assert.That(par[i].InputIdsMasked, Is.EqualTo(seq[i].InputIdsMasked), $"sample {i}");
            Assert.That(par[i].LmLabelIds, Is.EqualTo(seq[i].LmLabelIds), $"sample {i}");
        }
        int differ = Enumerable.Range(0, texts.Length).Count(i => !Run(i, 12).LmLabelIds.SequenceEqual(seq[i].LmLabelIds));
        Assert.That(differ, Is.GreaterThan(25), "another seed gives other masks");
    }

    private sealed class RecordingRandom(Random inner) : Random
    {
        public List<(int Min, int Max)> IntRanges { get; } = [];
        public override double NextDouble() => inner.NextDouble();
        protected override double Sample() => inner.NextDouble();
        public override int Next(int maxValue) => Next(0, maxValue);
        public override int Next(int minValue, int maxValue) { IntRanges.Add((minValue, maxValue)); return inner.Next(minValue, maxValue); }
    }
}
