namespace FashionViL.Downstream.Ocir;

/// <summary>
/// The Polyvore OCIR metric <c>r@k_ocir</c> (spec §4.4; BrandonHanx/mmf: mmf/modules/metrics.py <c>RecallAtK_ocir</c>).
/// Input is one row per test entry (fake entries included): the entry's query embedding (the outfit-averaged fused
/// question features), the embedding of its blank item, the blank's item id and category, and <c>fake_data</c>.
/// <list type="bullet">
/// <item>Gallery: the distinct blank ids over all entries, each with the embedding of its first entry, in ascending id
/// order (numpy <c>unique(return_index=True)</c>).</item>
/// <item>Queries: the non-fake entries; the positive is the gallery item with the entry's blank id.</item>
/// <item>Similarity = dot product; gallery items whose category differs from the query's blank category get exactly −1
/// (so, as in the reference, a masked item outranks a same-category item whose similarity is below −1).</item>
/// <item>R@k: the positive is within the first k of the ranking (ties: lower gallery index first, i.e. smaller id). A gallery
/// smaller than k counts the positive as found (the reference's <c>topk</c> would fail there).</item>
/// <item>Class balance: a query's hit has weight 1/(number of queries with its blank category); the weighted sum is
/// divided by the number of distinct query categories. <c>avg</c> = mean of R@10, R@30, R@50.</item>
/// </list>
/// </summary>
public static class OcirRecall
{
    public static readonly int[] Ks = [10, 30, 50];

    /// <summary>Keys as the reference's <c>calculate</c> returns them: "r@10", "r@30", "r@50", "avg"; values in [0, 1].</summary>
    /// <param name="queries">Per entry: the query embedding; may be null for fake entries (they are never queries).</param>
    /// <param name="blanks">Per entry: the embedding of the entry's blank item.</param>
    public static Dictionary<string, double> Compute(IReadOnlyList<float[]?> queries, IReadOnlyList<float[]> blanks,
        IReadOnlyList<long> blankIds, IReadOnlyList<int> blankCategories, IReadOnlyList<bool> fake)
    {
        int n = blanks.Count;
        if (queries.Count != n || blankIds.Count != n || blankCategories.Count != n || fake.Count != n)
            throw new ArgumentException($"r@k_ocir: per-entry inputs differ in length (queries {queries.Count}, blanks {n}, blank ids {blankIds.Count}, categories {blankCategories.Count}, fake {fake.Count})");
        if (n == 0) throw new ArgumentException("r@k_ocir: no test entries");
        int dim = blanks[0].Length;

        // Gallery: distinct ids ascending, first occurrence.
        var first = new SortedDictionary<long, int>();
        for (int i = 0; i < n; i++) first.TryAdd(blankIds[i], i);
        var gIdx = first.Values.ToArray();
        var gPos = new Dictionary<long, int>();
        int gi = 0;
        foreach (var id in first.Keys) gPos[id] = gi++;
        foreach (var i in gIdx)
            if (blanks[i].Length != dim) throw new ArgumentException($"r@k_ocir: blank embedding of entry {i} has {blanks[i].Length} values, expected {dim}");

        var qEntries = Enumerable.Range(0, n).Where(i => !fake[i]).ToArray();
        if (qEntries.Length == 0) throw new ArgumentException("r@k_ocir: every entry is fake_data; there is no query");
        var perCat = new Dictionary<int, int>();
        foreach (var i in qEntries) perCat[blankCategories[i]] = perCat.GetValueOrDefault(blankCategories[i]) + 1;

        var sums = new double[Ks.Length];
        var sims = new double[gIdx.Length];
        foreach (var i in qEntries)
        {
            var q = queries[i] ?? throw new ArgumentException($"r@k_ocir: entry {i} is a query (not fake_data) but has no query embedding");
            if (q.Length != dim) throw new ArgumentException($"r@k_ocir: query embedding of entry {i} has {q.Length} values, expected {dim}");
            int cat = blankCategories[i];
            for (int g = 0; g < gIdx.Length; g++)
            {
                if (blankCategories[gIdx[g]] != cat) { sims[g] = -1; continue; }
                var b = blanks[gIdx[g]];
                float s = 0;                                // float32 dot product, as the reference's matmul
                for (int d = 0; d < dim; d++) s += q[d] * b[d];
                sims[g] = s;
            }
            int t = gPos[blankIds[i]];
            int rank = 0;                                   // items ranked before the positive
            for (int g = 0; g < gIdx.Length; g++)
                if (sims[g] > sims[t] || (sims[g] == sims[t] && g < t)) rank++;
            double w = 1.0 / perCat[cat];
            for (int k = 0; k < Ks.Length; k++)
                if (rank < Ks[k]) sums[k] += w;
        }
        var r = new Dictionary<string, double>(StringComparer.Ordinal);
        for (int k = 0; k < Ks.Length; k++) r[$"r@{Ks[k]}"] = sums[k] / perCat.Count;
        r["avg"] = Ks.Select(k => r[$"r@{k}"]).Average();
        return r;
    }

    /// <summary>
    /// The expected value of <see cref="Compute"/> for embeddings that carry no information (the positive equally likely
    /// at every place among the n_c gallery items of its category): per query min(k, n_c)/n_c, class-balanced the same way.
    /// </summary>
    public static Dictionary<string, double> Chance(IReadOnlyList<long> blankIds, IReadOnlyList<int> blankCategories, IReadOnlyList<bool> fake)
    {
        var catOf = new Dictionary<long, int>();
        for (int i = 0; i < blankIds.Count; i++) catOf.TryAdd(blankIds[i], blankCategories[i]);
        var galleryPerCat = catOf.Values.GroupBy(c => c).ToDictionary(g => g.Key, g => g.Count());
        var q = Enumerable.Range(0, blankIds.Count).Where(i => !fake[i]).ToArray();
        var perCat = q.GroupBy(i => blankCategories[i]).ToDictionary(g => g.Key, g => g.Count());
        var r = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (int k in Ks)
        {
            double s = q.Sum(i => { int c = blankCategories[i], nc = galleryPerCat[c]; return Math.Min(k, nc) / (double)nc / perCat[c]; });
            r[$"r@{k}"] = s / perCat.Count;
        }
        r["avg"] = Ks.Select(k => r[$"r@{k}"]).Average();
        return r;
    }
}
