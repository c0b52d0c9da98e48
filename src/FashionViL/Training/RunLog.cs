using System.Globalization;
using System.Text.Json;

namespace FashionViL.Training;

/// <summary>One training log record (a step or an evaluation).</summary>
public sealed record LogRecord(string Kind, long Step, IReadOnlyDictionary<string, double> Values, string? Task = null);

/// <summary>
/// The metrics files of a run: <c>metrics.jsonl</c> (every record, one JSON object per line), <c>train.csv</c>
/// (step, task, loss, lr, samples/s, elapsed) and <c>eval.csv</c> (step + every metric). Files are appended and
/// flushed per record so a crash loses at most the record being written; on resume the records after the resumed
/// step are dropped (they belong to the abandoned future).
/// </summary>
public sealed class RunLog : IDisposable
{
    public string Directory { get; }
    public string JsonlPath => Path.Combine(Directory, "metrics.jsonl");
    public string TrainCsvPath => Path.Combine(Directory, "train.csv");
    public string EvalCsvPath => Path.Combine(Directory, "eval.csv");

    private readonly List<LogRecord> _records = new();
    private StreamWriter? _jsonl, _train, _eval;
    private string[]? _evalColumns;
    private static readonly string[] TrainColumns = ["step", "task", "loss", "lr", "samples_per_s", "elapsed_s"];

    public IReadOnlyList<LogRecord> Records => _records;

    /// <summary>Opens (or continues) the logs in <paramref name="directory"/>; with <paramref name="resumeStep"/> set,
    /// keeps only the records up to that step.</summary>
    public RunLog(string directory, long? resumeStep = null)
    {
        Directory = directory;
        System.IO.Directory.CreateDirectory(directory);
        if (resumeStep is { } keep && File.Exists(JsonlPath))
        {
            foreach (var line in File.ReadLines(JsonlPath))
            {
                if (string.IsNullOrWhiteSpace(line)) continue;
                LogRecord? r;
                try { r = Parse(line); } catch (JsonException) { continue; }   // a torn last line from a crash
                if (r is not null && r.Step <= keep) _records.Add(r);
            }
        }
        // Rewrite all three files from the kept records (atomically), then append from here on.
        WriteAllAtomic(JsonlPath, _records.Select(Serialize));
        WriteAllAtomic(TrainCsvPath, new[] { string.Join(',', TrainColumns) }.Concat(_records.Where(r => r.Kind == "train").Select(TrainRow)));
        var evals = _records.Where(r => r.Kind == "eval").ToList();
        if (evals.Count > 0)
        {
            _evalColumns = evals[0].Values.Keys.ToArray();
            WriteAllAtomic(EvalCsvPath, new[] { "step," + string.Join(',', _evalColumns) }.Concat(evals.Select(EvalRow)));
        }
        else if (File.Exists(EvalCsvPath)) File.Delete(EvalCsvPath);
        _jsonl = Append(JsonlPath);
        _train = Append(TrainCsvPath);
        _eval = evals.Count > 0 ? Append(EvalCsvPath) : null;
    }

    public void Add(LogRecord r)
    {
        _records.Add(r);
        _jsonl!.WriteLine(Serialize(r));
        _jsonl.Flush();
        if (r.Kind == "train")
        {
            _train!.WriteLine(TrainRow(r));
            _train.Flush();
        }
        else if (r.Kind == "eval")
        {
            if (_eval is null)
            {
                _evalColumns = r.Values.Keys.ToArray();
                _eval = new StreamWriter(EvalCsvPath, append: false);
                _eval.WriteLine("step," + string.Join(',', _evalColumns));
            }
            _eval.WriteLine(EvalRow(r));
            _eval.Flush();
        }
    }

    private string TrainRow(LogRecord r) => string.Join(',',
        r.Step.ToString(CultureInfo.InvariantCulture), r.Task ?? "",
        F(r.Values, "loss"), F(r.Values, "lr"), F(r.Values, "samples_per_s"), F(r.Values, "elapsed_s"));

    private string EvalRow(LogRecord r) =>
        r.Step.ToString(CultureInfo.InvariantCulture) + "," + string.Join(',', (_evalColumns ?? []).Select(c => F(r.Values, c)));

    private static string F(IReadOnlyDictionary<string, double> v, string key) =>
        v.TryGetValue(key, out var x) ? x.ToString("R", CultureInfo.InvariantCulture) : "";

    private static string Serialize(LogRecord r)
    {
        var o = new Dictionary<string, object?> { ["kind"] = r.Kind, ["step"] = r.Step };
        if (r.Task is not null) o["task"] = r.Task;
        foreach (var (k, v) in r.Values) o[k] = double.IsFinite(v) ? v : v.ToString(CultureInfo.InvariantCulture);
        return JsonSerializer.Serialize(o);
    }

    private static LogRecord? Parse(string line)
    {
        using var doc = JsonDocument.Parse(line);
        var root = doc.RootElement;
        string kind = root.GetProperty("kind").GetString() ?? "";
        long step = root.GetProperty("step").GetInt64();
        string? task = root.TryGetProperty("task", out var t) ? t.GetString() : null;
        var values = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var p in root.EnumerateObject())
        {
            if (p.Name is "kind" or "step" or "task") continue;
            if (p.Value.ValueKind == JsonValueKind.Number) values[p.Name] = p.Value.GetDouble();
            else if (p.Value.ValueKind == JsonValueKind.String && double.TryParse(p.Value.GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d)) values[p.Name] = d;
        }
        return new LogRecord(kind, step, values, task);
    }

    private static StreamWriter Append(string path) => new(path, append: true);

    private static void WriteAllAtomic(string path, IEnumerable<string> lines)
    {
        var tmp = path + ".tmp";
        File.WriteAllLines(tmp, lines);
        File.Move(tmp, path, overwrite: true);
    }

    public void Dispose()
    {
        _jsonl?.Dispose(); _train?.Dispose(); _eval?.Dispose();
        _jsonl = _train = _eval = null;
    }
}
