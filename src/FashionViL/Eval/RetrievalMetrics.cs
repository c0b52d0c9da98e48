using FashionViL.Autograd;

namespace FashionViL.Eval;

/// <summary>Recall@k values by key (<c>i2t_r@1</c> ... <c>t2i_r@10</c>, <c>avg</c>), in [0, 1].</summary>
public sealed class RetrievalResult : Dictionary<string, double>
{
    public RetrievalResult() : base(StringComparer.Ordinal) { }
}

/// <summary>
/// The cross-modal retrieval metrics of the reference (spec §4.1; BrandonHanx/mmf: mmf/modules/metrics.py
/// <c>RecallAtK_general</c> and <c>RecallAtK_kaleido</c>). Embeddings are rows of (N,D) float tensors on any
/// device; ids say which product a row belongs to (a query hits when a retrieved row has its id). Ties in
/// similarity rank the lower gallery index first.
/// </summary>
public static class RetrievalMetrics
{
    public static readonly int[] Ks = [1, 5, 10];

    /// <summary>Full-gallery protocol (<c>r@k_general</c>): every query against every gallery row, both directions.</summary>
    public static RetrievalResult General(Tensor imageEmb, long[] imageIds, Tensor textEmb, long[] textIds)
    {
        Check(imageEmb, imageIds, textEmb, textIds);
        var sim = Similarity(imageEmb, textEmb); // [images, texts]
        int ni = imageIds.Length, nt = textIds.Length;
        var i2t = RecallRows(ni, nt, (q, g) => sim[(long)q * nt + g], imageIds, textIds);
        var t2i = RecallRows(nt, ni, (q, g) => sim[(long)g * nt + q], textIds, imageIds);
        return Pack(i2t, t2i);
    }

    /// <summary>
    /// The sample-101 "kaleido" protocol: per direction, up to <paramref name="queries"/> random queries, each ranked
    /// among 1 random same-id gallery row and 100 random rows of other ids, preferring the query's sub-category;
    /// non-candidates get similarity −1 exactly as the reference does (see the spec's caveat); the whole procedure is
    /// repeated <paramref name="repeats"/> times and averaged. A query whose id has no gallery row counts as a miss. Chance level R@1 is 1/101 when 100 negatives exist.
    /// </summary>
    public static RetrievalResult Kaleido(Tensor imageEmb, long[] imageIds, long[] imageSubcats,
        Tensor textEmb, long[] textIds, long[] textSubcats, int seed, int queries = 1000, int repeats = 5, int negatives = 100)
    {
        Check(imageEmb, imageIds, textEmb, textIds);
        if (imageSubcats.Length != imageIds.Length || textSubcats.Length != textIds.Length)
            throw new ArgumentException("kaleido: sub-category arrays must have one entry per embedding row");
        var sim = Similarity(imageEmb, textEmb);
        int ni = imageIds.Length, nt = textIds.Length;
        var rng = new Random(seed);
        var sums = new double[6];
        for (int r = 0; r < repeats; r++)
        {
            var i2t = KaleidoOnce(ni, nt, (q, g) => sim[(long)q * nt + g], imageIds, textIds, imageSubcats, textSubcats, rng, queries, negatives);
            var t2i = KaleidoOnce(nt, ni, (q, g) => sim[(long)g * nt + q], textIds, imageIds, textSubcats, imageSubcats, rng, queries, negatives);
            for (int k = 0; k < 3; k++) { sums[k] += i2t[k]; sums[3 + k] += t2i[k]; }
        }
        return Pack(sums[..3].Select(v => v / repeats).ToArray(), sums[3..].Select(v => v / repeats).ToArray());
    }

    private static double[] KaleidoOnce(int nq, int ng, Func<int, int, float> sim, long[] qIds, long[] gIds,
        long[] qSub, long[] gSub, Random rng, int queries, int negatives)
    {
        var perm = Enumerable.Range(0, nq).ToArray();
        rng.Shuffle(perm);
        int m = Math.Min(queries, nq);
        var hits = new double[3];
        var score = new double[ng];
        for (int qi = 0; qi < m; qi++)
        {
            int q = perm[qi];
            // Positive: the same-id gallery row with the largest uniform draw (the reference's topk over rand()).
            int pos = -1; double best = double.NegativeInfinity;
            for (int g = 0; g < ng; g++)
                if (gIds[g] == qIds[q]) { double u = rng.NextDouble(); if (u > best) { best = u; pos = g; } }
            if (pos < 0) continue;   // no gallery row shares the id: a miss, as in the full-gallery protocol
            // Negatives: top-`negatives` of a draw where same-subcategory rows get U(0,1), other rows −1, same-id rows −100.
            for (int g = 0; g < ng; g++)
                score[g] = gIds[g] == qIds[q] ? -100 : gSub[g] == qSub[q] ? rng.NextDouble() : -1;
            var order = Enumerable.Range(0, ng).OrderByDescending(g => score[g]).ThenBy(g => g).Take(negatives);
            var candidate = new HashSet<int>(order) { pos };
            // Rank: candidates keep their similarity, everything else is −1; top-10 by (similarity desc, index asc).
            var top = Enumerable.Range(0, ng)
                .Select(g => (g, s: candidate.Contains(g) ? sim(q, g) : -1f))
                .OrderByDescending(t => t.s).ThenBy(t => t.g).Take(Ks[^1]).Select(t => t.g).ToArray();
            Accumulate(hits, top, gIds, qIds[q]);
        }
        return hits.Select(h => h / m).ToArray();
    }

    private static double[] RecallRows(int nq, int ng, Func<int, int, float> sim, long[] qIds, long[] gIds)
    {
        var hits = new double[3];
        int kmax = Math.Min(Ks[^1], ng);
        var topIdx = new int[kmax];
        var topVal = new float[kmax];
        for (int q = 0; q < nq; q++)
        {
            int count = 0;
            for (int g = 0; g < ng; g++)
            {
                float s = sim(q, g);
                if (count == kmax && !(s > topVal[kmax - 1])) continue;   // strictly greater: earlier index wins ties
                int pos = count < kmax ? count++ : kmax - 1;
                while (pos > 0 && s > topVal[pos - 1]) { topVal[pos] = topVal[pos - 1]; topIdx[pos] = topIdx[pos - 1]; pos--; }
                topVal[pos] = s; topIdx[pos] = g;
            }
            Accumulate(hits, topIdx[..count], gIds, qIds[q]);
        }
        return hits.Select(h => nq == 0 ? 0 : h / nq).ToArray();
    }

    private static void Accumulate(double[] hits, int[] ranked, long[] gIds, long qId)
    {
        int first = Array.FindIndex(ranked, g => gIds[g] == qId);
        if (first < 0) return;
        for (int k = 0; k < Ks.Length; k++)
            if (first < Ks[k]) hits[k] += 1;
    }

    private static RetrievalResult Pack(double[] i2t, double[] t2i)
    {
        var r = new RetrievalResult();
        for (int k = 0; k < Ks.Length; k++) r[$"i2t_r@{Ks[k]}"] = i2t[k];
        for (int k = 0; k < Ks.Length; k++) r[$"t2i_r@{Ks[k]}"] = t2i[k];
        r["avg"] = (i2t.Sum() + t2i.Sum()) / 6;
        return r;
    }

    private static float[] Similarity(Tensor a, Tensor b)
    {
        using var _ = GradMode.NoGrad();
        using var a32 = a.To(DType.Float32, Device.Cpu);
        using var b32 = b.To(DType.Float32, Device.Cpu);
        using var bt = b32.T;
        using var s = a32.Matmul(bt);
        return s.ToArray<float>();
    }

    private static void Check(Tensor imageEmb, long[] imageIds, Tensor textEmb, long[] textIds)
    {
        if (imageEmb.Rank != 2 || textEmb.Rank != 2 || imageEmb.Shape[1] != textEmb.Shape[1])
            throw new ArgumentException($"retrieval: embeddings must be (N,D) with the same D, got images {imageEmb.ShapeString} and texts {textEmb.ShapeString}");
        if (imageEmb.Shape[0] != imageIds.Length || textEmb.Shape[0] != textIds.Length)
            throw new ArgumentException($"retrieval: {imageIds.Length} image ids for {imageEmb.Shape[0]} image rows, {textIds.Length} text ids for {textEmb.Shape[0]} text rows");
    }
}
