using FashionViL.Autograd;

namespace FashionViL.Inference;

/// <summary>One ranked gallery item: its index in the gallery and its score (dot product with the query).</summary>
public readonly record struct SearchHit(int Index, float Score);

/// <summary>
/// Scoring and top-k ranking of embedding vectors by dot product (the retrieval similarity of spec §4.1/§4.2: the vectors
/// are s-scaled unit vectors, so the score is s²·cos). The gallery is processed in chunks on a device; ties keep the
/// lower gallery index first.
/// </summary>
public static class EmbeddingSearch
{
    /// <summary>The full score matrix [query][gallery item] = q · g.</summary>
    public static float[][] Score(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> gallery, Device? device = null, int batchSize = 4096)
    {
        var result = new float[queries.Count][];
        for (int i = 0; i < result.Length; i++) result[i] = new float[gallery.Count];
        ForEachChunk(queries, gallery, device, batchSize, (start, n, scores) =>
        {
            for (int q = 0; q < result.Length; q++) Array.Copy(scores, q * n, result[q], start, n);
        });
        return result;
    }

    /// <summary>The <paramref name="topK"/> best gallery items of each query, best first; equal scores keep the lower index first.</summary>
    public static SearchHit[][] Rank(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> gallery, int topK, Device? device = null, int batchSize = 4096)
    {
        if (topK < 1) throw new ArgumentOutOfRangeException(nameof(topK), topK, "rank: top-k must be at least 1");
        int k = Math.Min(topK, gallery.Count);
        var best = new List<SearchHit>[queries.Count];
        for (int i = 0; i < best.Length; i++) best[i] = new List<SearchHit>(k + 1);
        ForEachChunk(queries, gallery, device, batchSize, (start, n, scores) =>
        {
            for (int q = 0; q < best.Length; q++)
            {
                var list = best[q];
                for (int j = 0; j < n; j++)
                {
                    float s = scores[q * n + j];
                    // gallery indices arrive in increasing order: an equal score never displaces an earlier item
                    if (list.Count == k && !(s > list[^1].Score)) continue;
                    int pos = list.Count;
                    while (pos > 0 && s > list[pos - 1].Score) pos--;
                    list.Insert(pos, new SearchHit(start + j, s));
                    if (list.Count > k) list.RemoveAt(list.Count - 1);
                }
            }
        });
        return best.Select(l => l.ToArray()).ToArray();
    }

    /// <summary>Checks that every vector has the same dimension; returns it.</summary>
    internal static int Dimension(IReadOnlyList<float[]> rows, string what)
    {
        ArgumentNullException.ThrowIfNull(rows, what);
        if (rows.Count == 0) throw new ArgumentException($"{what}: no vectors");
        int d = rows[0]?.Length ?? throw new ArgumentException($"{what}: vector 0 is null");
        if (d == 0) throw new ArgumentException($"{what}: vectors have dimension 0");
        for (int i = 1; i < rows.Count; i++)
            if (rows[i] is null || rows[i].Length != d)
                throw new ArgumentException($"{what}: vector {i} has dimension {rows[i]?.Length.ToString() ?? "null"}, vector 0 has {d}");
        return d;
    }

    internal static Tensor ToTensor(IReadOnlyList<float[]> rows, int start, int n, int d, Device device)
    {
        var flat = new float[checked(n * d)];
        for (int i = 0; i < n; i++) rows[start + i].CopyTo(flat, i * d);
        return Tensor.FromArray(flat, [n, d], device);
    }

    private static void ForEachChunk(IReadOnlyList<float[]> queries, IReadOnlyList<float[]> gallery, Device? device, int batchSize, Action<int, int, float[]> body)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "batch size must be at least 1");
        int dq = Dimension(queries, "queries"), dg = Dimension(gallery, "gallery");
        if (dq != dg) throw new ArgumentException($"dimension mismatch: the queries have {dq} dimensions but the gallery has {dg} (embedded by a different model?)");
        var dev = device ?? Device.Cpu;
        using var _ = GradMode.NoGrad();
        using var q = ToTensor(queries, 0, queries.Count, dq, dev);
        for (int start = 0; start < gallery.Count; start += batchSize)
        {
            int n = Math.Min(batchSize, gallery.Count - start);
            using var g = ToTensor(gallery, start, n, dg, dev);
            using var gt = g.Transpose(0, 1);
            using var s = q.Matmul(gt);
            using var host = s.To(Device.Cpu);
            body(start, n, host.ToArray<float>());
        }
    }
}
