namespace FashionViL.Eval;

/// <summary>
/// The classification metrics of the sub-category task (spec §4.3; BrandonHanx/mmf: mmf/modules/metrics.py <c>accuracy</c>
/// and <c>macro_f1</c>), computed over the whole evaluation set at once as MMF's evaluation loop does (it concatenates the
/// batches' scores and targets before calling the metrics). Predictions are the arg-max of the scores, the first maximum
/// on ties (<c>argmax</c>).
/// </summary>
public static class ClassificationMetrics
{
    /// <summary>Top-1 accuracy: the fraction of rows whose prediction equals the target.</summary>
    public static double Accuracy(IReadOnlyList<long> yTrue, IReadOnlyList<long> yPred)
    {
        Check(yTrue, yPred);
        int correct = 0;
        for (int i = 0; i < yTrue.Count; i++) if (yTrue[i] == yPred[i]) correct++;
        return (double)correct / yTrue.Count;
    }

    /// <summary>
    /// sklearn <c>f1_score(y_true, y_pred, average="macro")</c>: the unweighted mean, over the labels present in
    /// y_true ∪ y_pred (sklearn's <c>unique_labels</c>; classes in neither do not count), of the per-class F1 =
    /// 2·tp / (2·tp + fp + fn). A class that is predicted but never present (tp = fn = 0, so recall is 0/0) or present but
    /// never predicted (tp = fp = 0, precision 0/0) gets F1 = 0 — what sklearn returns with its default
    /// <c>zero_division="warn"</c> (it warns and uses 0). The 0/0 case of the whole F1 cannot occur for a label in the union.
    /// </summary>
    public static double MacroF1(IReadOnlyList<long> yTrue, IReadOnlyList<long> yPred)
    {
        Check(yTrue, yPred);
        var tp = new Dictionary<long, int>(); var fp = new Dictionary<long, int>(); var fn = new Dictionary<long, int>();
        var labels = new SortedSet<long>();
        for (int i = 0; i < yTrue.Count; i++)
        {
            long t = yTrue[i], p = yPred[i];
            labels.Add(t); labels.Add(p);
            if (t == p) Inc(tp, t);
            else { Inc(fp, p); Inc(fn, t); }
        }
        double sum = 0;
        foreach (var l in labels)
        {
            int a = tp.GetValueOrDefault(l), b = fp.GetValueOrDefault(l), c = fn.GetValueOrDefault(l);
            int den = 2 * a + b + c;
            sum += den == 0 ? 0 : 2.0 * a / den;
        }
        return sum / labels.Count;
    }

    /// <summary>Row-wise arg-max of a row-major (rows × classes) score array; ties pick the lowest class index.</summary>
    public static long[] ArgMax(ReadOnlySpan<float> scores, int classes)
    {
        if (classes < 1 || scores.Length % classes != 0)
            throw new ArgumentException($"argmax: {scores.Length} scores are not a whole number of rows of {classes} classes");
        var result = new long[scores.Length / classes];
        for (int r = 0; r < result.Length; r++)
        {
            var row = scores.Slice(r * classes, classes);
            int best = 0;
            for (int k = 1; k < classes; k++) if (row[k] > row[best]) best = k;
            result[r] = best;
        }
        return result;
    }

    private static void Inc(Dictionary<long, int> d, long k) => d[k] = d.GetValueOrDefault(k) + 1;

    private static void Check(IReadOnlyList<long> yTrue, IReadOnlyList<long> yPred)
    {
        if (yTrue.Count != yPred.Count) throw new ArgumentException($"classification metrics: {yTrue.Count} targets but {yPred.Count} predictions");
        if (yTrue.Count == 0) throw new ArgumentException("classification metrics: no rows to evaluate");
    }
}
