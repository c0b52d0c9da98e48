namespace FashionViL.Eval;

/// <summary>
/// The FashionIQ text-guided retrieval metric <c>r@k_fashioniq</c> (spec §4.2; BrandonHanx/mmf: mmf/modules/metrics.py
/// <c>RecallAtK_fashioniq</c>), computed over the whole val set at once. For each garment class
/// (<c>garment_class</c> 0 = dress, 1 = shirt, 2 = toptee) separately:
/// <list type="bullet">
/// <item>queries = that class's entries with <c>fake_data == false</c> (their composed embeddings);</item>
/// <item>gallery = the distinct <c>target_id</c>s over <b>all</b> that class's entries, fake ones included, in ascending
/// id order (numpy <c>unique(return_index=True)</c>), each represented by the target embedding of the <b>first</b> entry
/// carrying that id;</item>
/// <item>similarity = dot product; a query hits at k when its own target id is among the k highest-scoring gallery
/// items; R@k = hits / queries.</item>
/// </list>
/// Keys <c>dress_r@10</c>, <c>dress_r@50</c>, <c>shirt_r@10</c>, <c>shirt_r@50</c>, <c>toptee_r@10</c>,
/// <c>toptee_r@50</c> and <c>avg</c> (mean of those present). Conventions where the reference is undefined or fails:
/// ties rank the lower gallery position (smaller target id) first (torch.topk leaves boundary ties unspecified); a class
/// whose gallery has fewer than k items uses the whole gallery (torch.topk would raise), so its R@k is 1; a class with no
/// entries at all is left out of the keys and of <c>avg</c> (the reference would fail); a class with entries but no
/// real query is an error.
/// </summary>
public static class FashionIqMetric
{
    /// <summary>Class names in <c>garment_class</c> order.</summary>
    public static readonly string[] ClassNames = ["dress", "shirt", "toptee"];

    /// <summary>
    /// Computes the metric from per-entry rows: <paramref name="composed"/> and <paramref name="targets"/> are N×D row-major
    /// (entry i's query and target embeddings). Only the rows of real queries (<paramref name="composed"/>) and of each id's
    /// first entry within its class (<paramref name="targets"/>) are read; see <see cref="RowsNeeded"/>.
    /// </summary>
    public static RetrievalResult Compute(float[] composed, float[] targets, int dim, long[] targetIds, bool[] fakeData,
        long[] garmentClass, int k1 = 10, int k2 = 50)
    {
        int n = targetIds.Length;
        if (dim < 1) throw new ArgumentOutOfRangeException(nameof(dim), dim, "r@k_fashioniq: embedding size must be positive");
        if (fakeData.Length != n || garmentClass.Length != n)
            throw new ArgumentException($"r@k_fashioniq: {n} target ids, {fakeData.Length} fake_data flags, {garmentClass.Length} garment classes (must match)");
        if (composed.Length != (long)n * dim || targets.Length != (long)n * dim)
            throw new ArgumentException($"r@k_fashioniq: composed {composed.Length} and target {targets.Length} values, expected {n}×{dim} each");
        if (k1 < 1 || k2 < 1) throw new ArgumentOutOfRangeException(nameof(k1), $"r@k_fashioniq: k must be positive (got {k1}, {k2})");
        for (int i = 0; i < n; i++)
            if (garmentClass[i] is < 0 or > 2)
                throw new ArgumentException($"r@k_fashioniq: entry {i} has garment_class {garmentClass[i]}; expected 0 (dress), 1 (shirt) or 2 (toptee)");

        var result = new RetrievalResult();
        var present = new List<double>();
        for (int cls = 0; cls < 3; cls++)
        {
            var rows = Enumerable.Range(0, n).Where(i => garmentClass[i] == cls).ToList();
            if (rows.Count == 0) continue;
            var queries = rows.Where(i => !fakeData[i]).ToArray();
            if (queries.Length == 0)
                throw new ArgumentException($"r@k_fashioniq: garment class {ClassNames[cls]} has {rows.Count} entries but all are fake_data (no query)");
            var gallery = Gallery(rows, targetIds);
            foreach (int k in (int[])[k1, k2])
            {
                double r = Recall(queries, gallery, composed, targets, dim, targetIds, k);
                result[$"{ClassNames[cls]}_r@{k}"] = r;
                present.Add(r);
            }
        }
        if (present.Count == 0) throw new ArgumentException("r@k_fashioniq: no entries to evaluate");
        result["avg"] = present.Average();
        return result;
    }

    /// <summary>
    /// Which rows <see cref="Compute"/> reads: <c>Query</c>[i] = entry i is a real query (its composed embedding is used),
    /// <c>Target</c>[i] = entry i is the first entry of its class with its target id (its target embedding is the gallery item).
    /// </summary>
    public static (bool[] Query, bool[] Target) RowsNeeded(long[] targetIds, bool[] fakeData, long[] garmentClass)
    {
        int n = targetIds.Length;
        var q = new bool[n]; var t = new bool[n];
        var seen = new HashSet<(long, long)>();
        for (int i = 0; i < n; i++)
        {
            q[i] = !fakeData[i];
            t[i] = seen.Add((garmentClass[i], targetIds[i]));
        }
        return (q, t);
    }

    /// <summary>The gallery of one class: (first row, id) of each distinct id, ascending by id.</summary>
    private static (int Row, long Id)[] Gallery(List<int> rows, long[] targetIds)
    {
        var first = new Dictionary<long, int>();
        foreach (int i in rows) first.TryAdd(targetIds[i], i);
        return first.OrderBy(kv => kv.Key).Select(kv => (kv.Value, kv.Key)).ToArray();
    }

    private static double Recall(int[] queries, (int Row, long Id)[] gallery, float[] composed, float[] targets, int dim, long[] targetIds, int k)
    {
        int kk = Math.Min(k, gallery.Length);
        var scores = new double[gallery.Length];
        int hits = 0;
        foreach (int q in queries)
        {
            var qv = composed.AsSpan(q * dim, dim);
            int own = -1;
            for (int g = 0; g < gallery.Length; g++)
            {
                var gv = targets.AsSpan(gallery[g].Row * dim, dim);
                double s = 0;
                for (int d = 0; d < dim; d++) s += (double)qv[d] * gv[d];
                if (double.IsNaN(s)) throw new ArgumentException($"r@k_fashioniq: similarity of query row {q} and gallery row {gallery[g].Row} is NaN");
                scores[g] = s;
                if (gallery[g].Id == targetIds[q]) own = g;
            }
            // own >= 0 always: the query's own entry is in its class, so its id is in the gallery.
            int rank = 0;   // gallery items ranked before the own target: higher score, or equal score at a lower position
            for (int g = 0; g < gallery.Length; g++)
                if (scores[g] > scores[own] || (scores[g] == scores[own] && g < own)) rank++;
            if (rank < kk) hits++;
        }
        return (double)hits / queries.Length;
    }
}
