using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>Whether <see cref="KernelTuner"/> times the candidate kernels of a shape (<see cref="On"/>) or runs the rules.</summary>
public enum TuneMode
{
    /// <summary>The built-in rules pick every tile (the default; no timing, no cache file).</summary>
    Off,
    /// <summary>The first time a shape is seen, every candidate is timed on the device and the fastest is remembered in the
    /// cache file; later calls (and later processes) reuse it.</summary>
    On,
}

/// <summary>One remembered choice: the candidate picked, the rule's pick, and the median milliseconds of each candidate.</summary>
public sealed record TuneEntry(string Choice, string Rule, IReadOnlyDictionary<string, double> Ms);

/// <summary>A kernel tuning cache file as read by <see cref="KernelTuner.ReadCache"/>.</summary>
public sealed record TuneCache(string Path, string Device, string? Written, IReadOnlyDictionary<string, TuneEntry> Entries);

/// <summary>What the tuner did on one accelerator since the process started (or since its cache file changed).</summary>
/// <param name="Entries">choices known (loaded from the cache file or tuned now)</param>
/// <param name="Tuned">shapes timed in this process</param>
/// <param name="FromCache">calls answered from a remembered choice</param>
/// <param name="DifferFromRule">shapes timed in this process whose fastest candidate is not the rule's pick</param>
/// <param name="HostWaits">times the tuner waited for the device (also counted in <see cref="CudaCounters.HostSyncs"/>)</param>
/// <param name="TuningMs">wall time spent timing candidates</param>
/// <param name="CacheFile">the cache file in use (null while the tuner is off or has not run)</param>
/// <param name="SaveError">why the cache file could not be written (the choices then live in memory only), or null</param>
public readonly record struct TuneStats(int Entries, long Tuned, long FromCache, long DifferFromRule, long HostWaits, double TuningMs, string? CacheFile,
    string? SaveError = null);

/// <summary>
/// Deterministic autotuning of the tile choices (issue 7). Every place where a rule picks between kernels that give
/// <b>the same bits</b> — the fp32 SGEMM versions v3/v4/v5, the two tensor-core GEMM tiles, the fp32 conv versions v1–v4 and the
/// two tensor-core conv tiles — asks <see cref="Pick{T}"/>. Off (the default) it returns the rule's pick at no cost. On
/// (<c>FVL_TUNE=1</c> or <see cref="Mode"/>), the first call for a shape runs every candidate once (compilation, caches),
/// then <see cref="Repeats"/> timed rounds with the candidates interleaved (device events; on the CPU accelerator,
/// timestamps), keeps the median of each and picks the fastest — the rule's pick unless another candidate is more than
/// <see cref="KeepRuleWithin"/> faster. The choice is written to a JSON cache file at once (atomically) and reused by later
/// calls and later processes; a cached call costs a dictionary lookup. Because every candidate computes each output with
/// the same operations in the same order, tuning changes time, never a result; outputs a kernel accumulates into
/// (a GEMM with beta ≠ 0) are saved before timing and restored before every run. What it never changes: split-K counts
/// and pre-rounding rules (they are decided as without tuning; split-K changes the summation, so it is not a candidate).
/// </summary>
public static class KernelTuner
{
    /// <summary>Environment variable: <c>1</c>/<c>on</c> turns tuning on, <c>0</c>/<c>off</c> (or unset) leaves the rules.</summary>
    public const string ModeVariable = "FVL_TUNE";
    /// <summary>Environment variable: the cache file (default ~/.cache/fashionvil/tuning/&lt;device&gt;.json).</summary>
    public const string CacheVariable = "FVL_TUNE_CACHE";
    /// <summary>The cache file's <c>format</c> field.</summary>
    public const string Format = "fashionvil-kernel-tuning/1";

    private static volatile StrongBox<TuneMode>? _mode;
    private static volatile string? _cacheFile;

    /// <summary>Tuning on or off for the whole process (default: <c>FVL_TUNE</c>, else off; an invalid <c>FVL_TUNE</c> throws
    /// here, naming it).</summary>
    public static TuneMode Mode
    {
        get => ModeSetting ?? EnvMode.Value;
        set => ModeSetting = value;
    }

    // FVL_TUNE, read once (an invalid value throws on every read, naming it)
    private static readonly Lazy<TuneMode> EnvMode = new(() => ParseMode(Environment.GetEnvironmentVariable(ModeVariable), ModeVariable));

    /// <summary>Whether tuning is on: the call sites test this first, so with tuning off they build no key and no closure.</summary>
    public static bool IsOn => Mode == TuneMode.On;

    /// <summary>The mode set in code, or null when <c>FVL_TUNE</c> decides (save and restore this to scope a change).</summary>
    public static TuneMode? ModeSetting
    {
        get => _mode?.Value;
        set => _mode = value is { } v ? new StrongBox<TuneMode>(v) : null;
    }

    /// <summary>The cache file (setting null goes back to the default): <c>FVL_TUNE_CACHE</c> if set, else one file per device
    /// under the user's cache folder (<see cref="CachePathFor"/>).</summary>
    public static string? CacheFile
    {
        get => _cacheFile ?? NullIfEmpty(Environment.GetEnvironmentVariable(CacheVariable));
        set => _cacheFile = value;
    }

    /// <summary>Timed runs per candidate (their median decides; default 3).</summary>
    public static int Repeats { get; set; } = 3;

    /// <summary>The rule's pick is kept unless another candidate's median is faster by more than this fraction (default 0.03),
    /// so timing noise does not flip choices.</summary>
    public static double KeepRuleWithin { get; set; } = 0.03;

    /// <summary>"0"/"off"/"false"/"no"/unset → Off, "1"/"on"/"true"/"yes" → On; anything else is an error naming
    /// <paramref name="source"/>.</summary>
    public static TuneMode ParseMode(string? text, string source) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" or "0" or "off" or "false" or "no" => TuneMode.Off,
        "1" or "on" or "true" or "yes" => TuneMode.On,
        _ => throw new ArgumentException($"{source}: '{text}' is not a tuning mode (0/off/false/no or 1/on/true/yes)"),
    };

    /// <summary>A size as it appears in a cache key: exact below 64, else rounded up to a multiple of 64, so that sizes that
    /// change a little from batch to batch share one choice.</summary>
    public static long Bucket(long n) => n < 64 ? n : (n + 63) / 64 * 64;

    private static string? NullIfEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s.Trim();

    /// <summary>How the tuner names a device in its cache: accelerator type, name and multiprocessor count.</summary>
    public static string DeviceId(Accelerator acc) => $"{acc.AcceleratorType} {acc.Name}, {acc.NumMultiprocessors} multiprocessors";

    /// <summary>The cache file the tuner uses for <paramref name="acc"/> (see <see cref="CacheFile"/>).</summary>
    public static string CachePathFor(Accelerator acc)
    {
        if (CacheFile is { } f) return Path.GetFullPath(f);
        string root = NullIfEmpty(Environment.GetEnvironmentVariable("XDG_CACHE_HOME"))
                      ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        var slug = new string(DeviceId(acc).Select(c => char.IsAsciiLetterOrDigit(c) ? char.ToLowerInvariant(c) : '-').ToArray());
        while (slug.Contains("--", StringComparison.Ordinal)) slug = slug.Replace("--", "-", StringComparison.Ordinal);
        return Path.Combine(root, "fashionvil", "tuning", slug.Trim('-') + ".json");
    }

    /// <summary>An output saved before timing; <see cref="Restore"/> puts the saved values back (enqueued on the stream).</summary>
    public interface ISavedOutput : IDisposable
    {
        void Restore();

        /// <summary>Whether disposing waits for the device.</summary>
        bool Waits { get; }
    }

    /// <summary>Saves <paramref name="output"/> into a new buffer of <paramref name="acc"/> (for outputs a kernel accumulates
    /// into). Callers with a caching allocator should pass their own scratch (the other overload).</summary>
    public static ISavedOutput SaveOutput(Accelerator acc, AcceleratorStream stream, ArrayView<float> output) => new SavedView(acc, stream, output);

    /// <summary>Saves <paramref name="output"/> into <paramref name="scratch"/> (at least as long; enqueued on the stream);
    /// disposing the result disposes <paramref name="owner"/>, which must release the scratch in stream order.</summary>
    public static ISavedOutput SaveOutput(AcceleratorStream stream, ArrayView<float> output, ArrayView<float> scratch, IDisposable owner)
        => new SavedInto(stream, output, scratch, owner);

    private sealed class SavedInto : ISavedOutput
    {
        private readonly AcceleratorStream _stream;
        private readonly ArrayView<float> _target, _copy;
        private readonly IDisposable _owner;

        public SavedInto(AcceleratorStream stream, ArrayView<float> target, ArrayView<float> scratch, IDisposable owner)
        {
            if (scratch.Length < target.Length) throw new ArgumentException($"kernel tuner: scratch of {scratch.Length} floats for an output of {target.Length}");
            (_stream, _target, _copy, _owner) = (stream, target, scratch.SubView(0, target.Length), owner);
            if (target.Length > 0) _copy.CopyFrom(stream, target);
        }

        public void Restore()
        {
            if (_target.Length > 0) _target.CopyFrom(_stream, _copy);
        }

        public bool Waits => false;

        public void Dispose() => _owner.Dispose();
    }

    private sealed class SavedView : ISavedOutput
    {
        private readonly AcceleratorStream _stream;
        private readonly ArrayView<float> _target;
        private readonly MemoryBuffer1D<float, Stride1D.Dense> _copy;

        public SavedView(Accelerator acc, AcceleratorStream stream, ArrayView<float> target)
        {
            _stream = stream;
            _target = target;
            _copy = acc.Allocate1D<float>(Math.Max(target.Length, 1));
            ArrayView<float> copy = _copy.View;
            if (target.Length > 0) copy.SubView(0, target.Length).CopyFrom(stream, target);
        }

        public bool Waits => true;

        public void Restore()
        {
            ArrayView<float> copy = _copy.View;
            if (_target.Length > 0) _target.CopyFrom(_stream, copy.SubView(0, _target.Length));
        }

        public void Dispose()
        {
            _stream.Synchronize();   // the copy may still be read by an enqueued restore
            _copy.Dispose();
        }
    }

    private sealed class Table
    {
        public required string Path;
        public required string Device;
        public readonly Dictionary<string, TuneEntry> Entries = new(StringComparer.Ordinal);
        /// <summary>Choices set by <see cref="ForceChoices"/>: consulted first, never written to the file.</summary>
        public readonly Dictionary<string, string> Forced = new(StringComparer.Ordinal);
        public long Tuned, FromCache, DifferFromRule, HostWaits;
        public double TuningMs;
        /// <summary>Why the cache file could not be written (the first failure), or null.</summary>
        public string? SaveError;
    }

    /// <summary>Where the tuner says that it could not write its cache file (once per file; default: standard error). The
    /// choices stay in memory, so the run goes on; they are lost when it ends.</summary>
    public static Action<string> Warn { get; set; } = m => Console.Error.WriteLine(m);

    private static readonly ConditionalWeakTable<Accelerator, Table> Tables = new();
    private static readonly object Gate = new();

    /// <summary>What the tuner did on <paramref name="acc"/> (zeros while it has not run there).</summary>
    public static TuneStats Stats(Accelerator acc)
    {
        lock (Gate)
            return Tables.TryGetValue(acc, out var t)
                ? new TuneStats(t.Entries.Count, t.Tuned, t.FromCache, t.DifferFromRule, t.HostWaits, t.TuningMs, t.Path, t.SaveError)
                : default;
    }

    /// <summary>The choices known for <paramref name="acc"/> (a copy), keyed by shape.</summary>
    public static IReadOnlyDictionary<string, TuneEntry> Entries(Accelerator acc)
    {
        lock (Gate)
            return Tables.TryGetValue(acc, out var t) ? new Dictionary<string, TuneEntry>(t.Entries, StringComparer.Ordinal) : new Dictionary<string, TuneEntry>();
    }

    /// <summary>The choices remembered for <paramref name="acc"/>: this process's table, or the cache file's entries when the
    /// tuner has not run yet (read, not timed; an invalid file throws as <see cref="Pick{T}"/> would).</summary>
    public static int KnownChoices(Accelerator acc)
    {
        lock (Gate) return TableFor(acc).Entries.Count;
    }

    /// <summary>Host waits of the tuner on <paramref name="acc"/> since the process started (<see cref="CudaRuntime.Counters"/>
    /// adds them; <see cref="Forget"/> does not reset them, so the counter never goes back).</summary>
    internal static long HostWaits(Accelerator acc) => Interlocked.Read(ref Waits.GetValue(acc, _ => new StrongBox<long>()).Value);

    private static readonly ConditionalWeakTable<Accelerator, StrongBox<long>> Waits = new();

    /// <summary>
    /// For checks of the same-bits premise: makes every choice remembered for <paramref name="acc"/> its
    /// <paramref name="index"/>-th timed candidate (candidate names in ordinal order, the index modulo their number), in this
    /// process only (kept apart from the timed choices, so the cache file never holds them; <see cref="Forget"/> drops
    /// them). Returns the largest number of timed candidates of any entry, so that
    /// indices 0 … result − 1 make every candidate of every shape run once.
    /// </summary>
    public static int ForceChoices(Accelerator acc, int index)
    {
        lock (Gate)
        {
            if (!Tables.TryGetValue(acc, out var t)) return 0;
            int most = 0;
            foreach (var (key, e) in t.Entries)
            {
                if (e.Ms.Count == 0) continue;
                var names = e.Ms.Keys.Order(StringComparer.Ordinal).ToList();
                most = Math.Max(most, names.Count);
                t.Forced[key] = names[((index % names.Count) + names.Count) % names.Count];
            }
            return most;
        }
    }

    /// <summary>Forgets what was loaded for <paramref name="acc"/> (the next tuned call reads the cache file again).</summary>
    public static void Forget(Accelerator acc)
    {
        lock (Gate) Tables.Remove(acc);
    }

    /// <summary>
    /// The candidate to run for <paramref name="key"/>: <paramref name="rule"/> while tuning is off; else the remembered
    /// choice, or (first time) the fastest of <paramref name="candidates"/>, each run through <paramref name="run"/>, which
    /// must enqueue the whole of that candidate's work on <paramref name="stream"/> (and may run it any number of times:
    /// the output is overwritten each time, or saved by <paramref name="save"/> and restored before each run and before
    /// returning). The caller then runs the returned candidate itself.
    /// </summary>
    public static T Pick<T>(Accelerator acc, AcceleratorStream stream, string key, T rule, IReadOnlyList<T> candidates, Action<T> run,
        Func<ISavedOutput>? save = null) where T : struct, Enum
    {
        if (Mode == TuneMode.Off || candidates.Count < 2) return rule;
        if (!candidates.Contains(rule))
            throw new ArgumentException($"kernel tuner: the rule's pick {rule} is not among the candidates of '{key}'");
        Table table;
        lock (Gate)
        {
            table = TableFor(acc);
            if (table.Forced.TryGetValue(key, out var forced) && Enum.TryParse<T>(forced, out var f) && candidates.Contains(f))
            {
                table.FromCache++;
                return f;
            }
            // a remembered choice counts when it is still a candidate and every current candidate was timed against it (an
            // entry timed before a candidate was added is timed again; a hand-written entry without medians is taken as is)
            if (table.Entries.TryGetValue(key, out var e) && Enum.TryParse<T>(e.Choice, out var known) && candidates.Contains(known)
                && (e.Ms.Count == 0 || candidates.All(c => e.Ms.ContainsKey(c.ToString()))))
            {
                table.FromCache++;
                return known;
            }
        }
        var sw = Stopwatch.StartNew();
        var ms = Time(acc, stream, candidates, run, save, out int waits);
        int best = 0;
        for (int i = 1; i < candidates.Count; i++)
            if (ms[i] < ms[best]) best = i;
        int ruleAt = IndexOf(candidates, rule);
        var pick = ms[ruleAt] <= ms[best] * (1 + KeepRuleWithin) ? rule : candidates[best];
        var entry = new TuneEntry(pick.ToString(), rule.ToString(),
            candidates.Select((c, i) => (c.ToString(), ms[i])).ToDictionary(p => p.Item1, p => Math.Round(p.Item2, 6), StringComparer.Ordinal));
        lock (Gate)
        {
            table = TableFor(acc);
            table.Entries[key] = entry;
            table.Tuned++;
            table.HostWaits += waits;
            Interlocked.Add(ref Waits.GetValue(acc, _ => new StrongBox<long>()).Value, waits);
            table.TuningMs += sw.Elapsed.TotalMilliseconds;
            if (!EqualityComparer<T>.Default.Equals(pick, rule)) table.DifferFromRule++;
            try { Save(table); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // a training run must not die because a cache cannot be written: keep the choices in memory, say so once
                if (table.SaveError is null)
                {
                    table.SaveError = e.Message;
                    Warn($"kernel tuner: cannot write the cache file {table.Path} ({e.Message}); choices are kept in memory for this run only. " +
                         $"Point {CacheVariable} at a writable file to keep them.");
                }
            }
        }
        return pick;
    }

    private static int IndexOf<T>(IReadOnlyList<T> list, T x) where T : struct, Enum
    {
        for (int i = 0; i < list.Count; i++)
            if (EqualityComparer<T>.Default.Equals(list[i], x)) return i;
        return -1;
    }

    /// <summary>Median milliseconds of each candidate: one untimed run each, then <see cref="Repeats"/> interleaved rounds.</summary>
    private static double[] Time<T>(Accelerator acc, AcceleratorStream stream, IReadOnlyList<T> candidates, Action<T> run,
        Func<ISavedOutput>? save, out int waits) where T : struct, Enum
    {
        int n = candidates.Count, reps = Math.Max(1, Repeats);
        var samples = new double[n][];
        for (int i = 0; i < n; i++) samples[i] = new double[reps];
        bool markers = acc.Context.Properties.EnableProfiling;
        waits = 0;
        using var saved = save?.Invoke();
        foreach (var c in candidates)
        {
            saved?.Restore();
            run(c);
        }
        stream.Synchronize(); waits++;
        var pending = new List<(int I, int R, ProfilingMarker B, ProfilingMarker E)>();
        try
        {
            for (int r = 0; r < reps; r++)
                for (int j = 0; j < n; j++)
                {
                    int i = (j + r) % n;   // rotate the order so no candidate always runs first
                    saved?.Restore();
                    if (markers)
                    {
                        var b = stream.AddProfilingMarker();
                        run(candidates[i]);
                        pending.Add((i, r, b, stream.AddProfilingMarker()));
                    }
                    else
                    {
                        stream.Synchronize(); waits++;
                        long t0 = Stopwatch.GetTimestamp();
                        run(candidates[i]);
                        stream.Synchronize(); waits++;
                        samples[i][r] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                    }
                }
            if (markers)
            {
                stream.Synchronize(); waits++;
                foreach (var (i, r, b, e) in pending) samples[i][r] = e.MeasureFrom(b).TotalMilliseconds;
            }
        }
        finally
        {
            foreach (var (_, _, b, e) in pending) { b.Dispose(); e.Dispose(); }
        }
        saved?.Restore();
        if (saved is { Waits: true }) waits++;   // disposing the copy waits for that restore
        return samples.Select(Median).ToArray();
    }

    private static double Median(double[] xs)
    {
        var s = xs.OrderBy(x => x).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    private static Table TableFor(Accelerator acc)
    {
        string path = CachePathFor(acc);
        if (Tables.TryGetValue(acc, out var t) && t.Path == path) return t;
        t = Load(path, DeviceId(acc));
        Tables.AddOrUpdate(acc, t);
        return t;
    }

    private static InvalidDataException Bad(string path, string what)
        => new($"kernel tuning cache {path}: {what}. Delete the file (or point {CacheVariable} at another one) to tune again.");

    private static Table Load(string path, string device)
    {
        var t = new Table { Path = path, Device = device };
        if (!File.Exists(path)) return t;
        var cache = ReadCache(path);
        if (cache.Device != device) throw Bad(path, $"written for device '{cache.Device}', this device is '{device}'");
        foreach (var (key, e) in cache.Entries) t.Entries[key] = e;
        return t;
    }

    /// <summary>A cache file as written: the device it was tuned on, when it was last written, and its choices. Any error
    /// (missing file, not JSON, another format, an entry without a choice) names the file.</summary>
    public static TuneCache ReadCache(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"kernel tuning cache {path}: file not found", path);
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw Bad(path, $"not valid JSON ({e.Message})"); }
        if (root is not JsonObject o) throw Bad(path, "not a JSON object");
        string? format = Str(o["format"]);
        if (format != Format) throw Bad(path, $"format is '{format ?? "missing"}', expected '{Format}'");
        string dev = Str(o["device"]) ?? throw Bad(path, "no 'device' string");
        if (o["entries"] is not JsonObject entries) throw Bad(path, "no 'entries' object");
        var result = new Dictionary<string, TuneEntry>(StringComparer.Ordinal);
        foreach (var (key, node) in entries)
        {
            if (node is not JsonObject e || Str(e["choice"]) is not { } choice)
                throw Bad(path, $"entry '{key}' has no 'choice' string");
            var ms = new Dictionary<string, double>(StringComparer.Ordinal);
            if (e["ms"] is JsonObject m)
                foreach (var (c, v) in m)
                    if ((v as JsonValue)?.TryGetValue<double>(out var x) == true) ms[c] = x;
            result[key] = new TuneEntry(choice, Str(e["rule"]) ?? "", ms);
        }
        return new TuneCache(path, dev, Str(o["written"]), result);
    }

    private static string? Str(JsonNode? n) => (n as JsonValue)?.TryGetValue<string>(out var s) == true ? s : null;

    /// <summary>Writes the table to a temporary file beside the cache file, then renames it over the cache file. Entries another
    /// process added to the file since it was read are merged in first (this process's own choices win for the same key).</summary>
    private static void Save(Table t)
    {
        if (File.Exists(t.Path))
        {
            Table disk;
            // a file that became foreign or unreadable since it was loaded is somebody else's: never overwrite it
            try { disk = Load(t.Path, t.Device); }
            catch (InvalidDataException e) { throw new IOException($"the file on disk is no longer this device's cache ({e.Message}); not overwritten", e); }
            foreach (var (key, e) in disk.Entries) t.Entries.TryAdd(key, e);
        }
        var entries = new JsonObject();
        foreach (var (key, e) in t.Entries.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            var ms = new JsonObject();
            foreach (var (c, v) in e.Ms) ms[c] = v;
            entries[key] = new JsonObject { ["choice"] = e.Choice, ["rule"] = e.Rule, ["ms"] = ms };
        }
        var root = new JsonObject
        {
            ["format"] = Format,
            ["device"] = t.Device,
            ["written"] = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture),
            ["entries"] = entries,
        };
        string dir = Path.GetDirectoryName(t.Path)!;
        Directory.CreateDirectory(dir);
        string tmp = Path.Combine(dir, $".{Path.GetFileName(t.Path)}.{Environment.ProcessId}.tmp");
        try
        {
            File.WriteAllText(tmp, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            File.Move(tmp, t.Path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }
}
