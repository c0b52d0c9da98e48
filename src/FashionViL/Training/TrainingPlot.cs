using ScottPlot;

namespace FashionViL.Training;

/// <summary>The end-of-run figure: per-task training loss (moving average) on the left, evaluation metrics on the right.</summary>
public static class TrainingPlot
{
    /// <summary>Writes a PNG (atomically) and returns its path.</summary>
    public static string Save(IReadOnlyList<LogRecord> records, string path, string title, int smoothing = 20)
    {
        var multi = new Multiplot();
        multi.AddPlots(2);
        multi.Layout = new ScottPlot.MultiplotLayouts.Columns();
        var loss = multi.GetPlot(0);
        var eval = multi.GetPlot(1);

        foreach (var group in records.Where(r => r.Kind == "train" && r.Task is not null && r.Values.ContainsKey("loss"))
                     .GroupBy(r => r.Task!).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var xs = group.Select(r => (double)r.Step).ToArray();
            var ys = MovingAverage(group.Select(r => r.Values["loss"]).ToArray(), smoothing);
            var line = loss.Add.ScatterLine(xs, ys);
            line.LegendText = group.Key;
        }
        loss.Title($"{title}: training loss (moving average of {smoothing})");
        loss.XLabel("update");
        loss.YLabel("loss");
        loss.ShowLegend(Alignment.UpperRight);

        var evals = records.Where(r => r.Kind == "eval").ToList();
        foreach (var key in evals.SelectMany(r => r.Values.Keys).Distinct().Where(k => k.EndsWith("_r@1", StringComparison.Ordinal) || k.EndsWith("avg", StringComparison.Ordinal)))
        {
            var pts = evals.Where(r => r.Values.ContainsKey(key)).ToList();
            var line = eval.Add.ScatterLine(pts.Select(r => (double)r.Step).ToArray(), pts.Select(r => 100 * r.Values[key]).ToArray());
            line.LegendText = key;
            line.MarkerSize = 5;
        }
        eval.Title("evaluation (%)");
        eval.XLabel("update");
        eval.ShowLegend(Alignment.LowerRight);

        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var tmp = path + ".tmp.png";
        multi.SavePng(tmp, 1400, 560);
        File.Move(tmp, path, overwrite: true);
        return path;
    }

    internal static double[] MovingAverage(double[] v, int window)
    {
        var r = new double[v.Length];
        double sum = 0;
        for (int i = 0; i < v.Length; i++)
        {
            sum += v[i];
            if (i >= window) sum -= v[i - window];
            r[i] = sum / Math.Min(i + 1, window);
        }
        return r;
    }
}
