using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using FashionViL.Nn.Optim;
using FashionViL.Tensors;

namespace FashionViL.Nn.Checkpoints;

/// <summary>A <see cref="Generator"/>'s state: seed and Philox counter offset (restoring both continues the stream exactly).</summary>
public readonly record struct GeneratorState(ulong Seed, ulong Offset)
{
    public static GeneratorState Of(Generator g) => new(g.Seed, g.Offset);
    public void ApplyTo(Generator g) => g.SetState(Seed, Offset);
}

/// <summary>
/// Everything besides tensors that a resumed run needs: the global step, the scheduler's step and free-form state,
/// the data position (opaque integers, e.g. epoch / index into a permutation), named RNG states, the config text
/// (YAML) and free-form string metadata.
/// </summary>
public sealed class TrainingState
{
    public long GlobalStep { get; set; }
    /// <summary>The step the lr schedule is at (the next update uses Factor(SchedulerStep)).</summary>
    public long SchedulerStep { get; set; }
    /// <summary>Free-form scheduler description (kind, parameters).</summary>
    public Dictionary<string, string> SchedulerState { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, long> DataPosition { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, GeneratorState> Rng { get; } = new(StringComparer.Ordinal);
    /// <summary>The run's config as YAML text (null: none).</summary>
    public string? Config { get; set; }
    public Dictionary<string, string> Metadata { get; } = new(StringComparer.Ordinal);

    /// <summary>Records <paramref name="generator"/>'s state under <paramref name="name"/>.</summary>
    public TrainingState CaptureRng(string name, Generator generator) { Rng[name] = GeneratorState.Of(generator); return this; }

    /// <summary>Sets <paramref name="generator"/> to the state saved under <paramref name="name"/>.</summary>
    public void RestoreRng(string name, Generator generator)
    {
        if (!Rng.TryGetValue(name, out var s))
            throw new KeyNotFoundException($"training state: no RNG state '{name}' (saved: {(Rng.Count == 0 ? "none" : string.Join(", ", Rng.Keys))})");
        s.ApplyTo(generator);
    }
}

/// <summary>The raw contents of a training checkpoint (tensors owned by this object).</summary>
public sealed class TrainingCheckpointFile(string path, Dictionary<string, Tensor> model, OptimizerState? optimizer, TrainingState state) : IDisposable
{
    public string Path { get; } = path;
    public Dictionary<string, Tensor> Model { get; } = model;
    public OptimizerState? Optimizer { get; } = optimizer;
    public TrainingState State { get; } = state;

    public void Dispose()
    {
        foreach (var t in Model.Values) t.Dispose();
        if (Optimizer is not null) foreach (var p in Optimizer.State.Values) foreach (var b in p.Buffers.Values) b.Dispose();
    }
}

/// <summary>
/// Our training checkpoints: one safetensors file. Tensors: <c>model.&lt;state-dict key&gt;</c> (dtypes kept) and
/// <c>optimizer.&lt;i&gt;.&lt;buffer&gt;</c> for the i-th parameter with optimizer state. <c>__metadata__</c>:
/// <c>format</c> = <see cref="Format"/>, <c>version</c>, <c>state</c> (JSON: steps, scheduler, data position, RNG
/// states, metadata), <c>optimizer</c> (JSON: groups with their lr / weight decay, per-parameter step counts and buffer
/// names), <c>config</c> (YAML text). Written atomically: a temporary file in the same folder, flushed to disk, renamed
/// over the target, then the folder is flushed; a failure at any point leaves the previous file as it was.
/// </summary>
public static partial class TrainingCheckpoint
{
    public const string Format = "fashionvil-training-checkpoint";
    public const int Version = 1;

    /// <summary>Saves <paramref name="model"/>'s state dict, the optimizer state and <paramref name="state"/> to <paramref name="path"/>.</summary>
    /// <param name="progress">Called with the number of bytes written so far after each write (for progress display;
    /// an exception thrown from it aborts the save, leaving the previous file intact).</param>
    public static void Save(string path, Module model, Optimizer? optimizer, TrainingState state, Action<long>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var opt = optimizer?.StateDict();
        try { Save(path, model.StateDict(), opt, state, progress); }
        finally { if (opt is not null) foreach (var p in opt.State.Values) foreach (var b in p.Buffers.Values) b.Dispose(); }
    }

    /// <summary>Saves explicit model and optimizer states (see the other overload).</summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> modelState, OptimizerState? optimizer, TrainingState state, Action<long>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(modelState);
        ArgumentNullException.ThrowIfNull(state);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (k, t) in modelState) tensors["model." + k] = t;
        var meta = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["format"] = Format,
            ["version"] = Version.ToString(CultureInfo.InvariantCulture),
            ["state"] = StateJson(state),
        };
        if (state.Config is not null) meta["config"] = state.Config;
        if (optimizer is not null)
        {
            var groups = new JsonArray();
            foreach (var g in optimizer.Groups)
                groups.Add(new JsonObject
                {
                    ["name"] = g.Name, ["names"] = new JsonArray(g.Names.Select(n => (JsonNode?)n).ToArray()),
                    ["base_lr"] = g.BaseLr, ["lr"] = g.Lr, ["weight_decay"] = g.WeightDecay, ["lr_multiplier"] = g.LrMultiplier,
                });
            var pars = new JsonArray();
            int i = 0;
            foreach (var (name, ps) in optimizer.State)
            {
                var bufs = new JsonArray();
                foreach (var (bn, b) in ps.Buffers)
                {
                    if (bn.Contains('.')) throw new ArgumentException($"training checkpoint '{path}': optimizer buffer name '{bn}' of '{name}' contains '.'");
                    tensors[$"optimizer.{i}.{bn}"] = b;
                    bufs.Add(bn);
                }
                pars.Add(new JsonObject { ["name"] = name, ["step"] = ps.Step, ["buffers"] = bufs });
                i++;
            }
            meta["optimizer"] = new JsonObject { ["groups"] = groups, ["params"] = pars }.ToJsonString();
        }
        WriteAtomically(path, tensors, meta, progress);
    }

    private static string StateJson(TrainingState s)
    {
        var rng = new JsonObject();
        foreach (var (k, g) in s.Rng)
            rng[k] = new JsonObject { ["seed"] = g.Seed.ToString(CultureInfo.InvariantCulture), ["offset"] = g.Offset.ToString(CultureInfo.InvariantCulture) };
        var data = new JsonObject();
        foreach (var (k, v) in s.DataPosition) data[k] = v.ToString(CultureInfo.InvariantCulture);
        var sched = new JsonObject();
        foreach (var (k, v) in s.SchedulerState) sched[k] = v;
        var meta = new JsonObject();
        foreach (var (k, v) in s.Metadata) meta[k] = v;
        return new JsonObject
        {
            ["global_step"] = s.GlobalStep.ToString(CultureInfo.InvariantCulture),
            ["scheduler_step"] = s.SchedulerStep.ToString(CultureInfo.InvariantCulture),
            ["scheduler"] = sched, ["data_position"] = data, ["rng"] = rng, ["metadata"] = meta,
        }.ToJsonString();
    }

    private sealed class ProgressStream(Stream inner, Action<long> progress) : Stream
    {
        private long _written;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => _written; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Write(ReadOnlySpan<byte> buffer)
        {
            inner.Write(buffer);
            _written += buffer.Length;
            progress(_written);
        }
    }

    /// <summary>temp file (same folder) → write → flush to disk → rename over <paramref name="path"/> → flush the folder.</summary>
    internal static void WriteAtomically(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string> meta, Action<long>? progress)
    {
        var full = System.IO.Path.GetFullPath(path);
        var dir = System.IO.Path.GetDirectoryName(full) ?? throw new ArgumentException($"training checkpoint '{path}' has no parent folder");
        if (Directory.Exists(full)) throw new IOException($"training checkpoint '{path}': a folder of that name exists");
        var tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                Stream s = progress is null ? fs : new ProgressStream(fs, progress);
                SafeTensors.Write(s, tensors, meta, full);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch (Exception e)
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            if (e is IOException or UnauthorizedAccessException)
                throw new IOException($"training checkpoint '{path}': could not be written ({e.Message}); any previous file is unchanged", e);
            throw;
        }
        FsyncFolder(dir);
    }

    /// <summary>Makes the rename durable (POSIX: fsync on the folder). Best effort: errors are ignored.</summary>
    private static void FsyncFolder(string dir)
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
        try
        {
            int fd = Open(dir, 0);
            if (fd < 0) return;
            _ = Fsync(fd);
            _ = Close(fd);
        }
        catch (DllNotFoundException) { }
        catch (EntryPointNotFoundException) { }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync")]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    // ------------------------------------------------------------------ load

    /// <summary>Reads a training checkpoint written by <see cref="Save(string, Module, Optimizer?, TrainingState, Action{long}?)"/>.</summary>
    public static TrainingCheckpointFile Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"training checkpoint '{path}': file not found", path);
        SafeTensorsFile file;
        try { file = SafeTensors.Read(path); }
        catch (Exception e) when (e is IOException or InvalidDataException && !e.Message.Contains(path, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"training checkpoint '{path}': {e.Message}", e);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"training checkpoint '{path}' is truncated or corrupt: {e.Message}", e);
        }
        try
        {
            string Err(string msg) => $"training checkpoint '{path}': {msg}";
            var m = file.Metadata;
            if (!m.TryGetValue("format", out var fmt) || fmt != Format)
                throw new InvalidDataException(Err($"not a training checkpoint (metadata 'format' is {(fmt is null ? "missing" : $"'{fmt}'")}, expected '{Format}')"));
            if (!m.TryGetValue("version", out var ver) || ver != Version.ToString(CultureInfo.InvariantCulture))
                throw new InvalidDataException(Err($"unsupported version '{ver}' (this build reads version {Version})"));
            var state = ParseState(m.TryGetValue("state", out var sj) ? sj : throw new InvalidDataException(Err("metadata 'state' is missing")), Err);
            if (m.TryGetValue("config", out var cfg)) state.Config = cfg;

            var model = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            var used = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (k, t) in file.Tensors)
                if (k.StartsWith("model.", StringComparison.Ordinal)) { model[k["model.".Length..]] = t; used.Add(k); }

            OptimizerState? opt = null;
            if (m.TryGetValue("optimizer", out var oj)) opt = ParseOptimizer(oj, file.Tensors, used, Err);
            var extra = file.Tensors.Keys.Where(k => !used.Contains(k)).ToList();
            if (extra.Count > 0) throw new InvalidDataException(Err($"tensors not described by the metadata: {string.Join(", ", extra.Take(5))}"));
            return new TrainingCheckpointFile(path, model, opt, state);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static TrainingState ParseState(string json, Func<string, string> err)
    {
        try
        {
            var o = JsonNode.Parse(json)?.AsObject() ?? throw new InvalidDataException(err("metadata 'state' is null"));
            var s = new TrainingState
            {
                GlobalStep = long.Parse(Str(o, "global_step", err), CultureInfo.InvariantCulture),
                SchedulerStep = long.Parse(Str(o, "scheduler_step", err), CultureInfo.InvariantCulture),
            };
            foreach (var (k, v) in Obj(o, "scheduler", err)) s.SchedulerState[k] = v!.GetValue<string>();
            foreach (var (k, v) in Obj(o, "data_position", err)) s.DataPosition[k] = long.Parse(v!.GetValue<string>(), CultureInfo.InvariantCulture);
            foreach (var (k, v) in Obj(o, "rng", err))
                s.Rng[k] = new GeneratorState(ulong.Parse(Str(v!.AsObject(), "seed", err), CultureInfo.InvariantCulture),
                                              ulong.Parse(Str(v!.AsObject(), "offset", err), CultureInfo.InvariantCulture));
            foreach (var (k, v) in Obj(o, "metadata", err)) s.Metadata[k] = v!.GetValue<string>();
            return s;
        }
        catch (Exception e) when (e is JsonException or FormatException or OverflowException or InvalidOperationException or NullReferenceException)
        {
            throw new InvalidDataException(err($"metadata 'state' is malformed ({e.Message})"), e);
        }
    }

    private static string Str(JsonObject o, string key, Func<string, string> err) =>
        o[key]?.GetValue<string>() ?? throw new InvalidDataException(err($"metadata field '{key}' is missing"));

    private static JsonObject Obj(JsonObject o, string key, Func<string, string> err) =>
        o[key]?.AsObject() ?? throw new InvalidDataException(err($"metadata field '{key}' is missing"));

    private static OptimizerState ParseOptimizer(string json, Dictionary<string, Tensor> tensors, HashSet<string> used, Func<string, string> err)
    {
        try
        {
            var o = JsonNode.Parse(json)!.AsObject();
            var groups = new List<GroupState>();
            foreach (var g in o["groups"]!.AsArray())
            {
                var go = g!.AsObject();
                groups.Add(new GroupState(go["name"]!.GetValue<string>(), go["names"]!.AsArray().Select(n => n!.GetValue<string>()).ToArray(),
                    go["base_lr"]!.GetValue<double>(), go["lr"]!.GetValue<double>(), go["weight_decay"]!.GetValue<double>(), go["lr_multiplier"]!.GetValue<double>()));
            }
            var state = new Dictionary<string, ParamState>(StringComparer.Ordinal);
            int i = 0;
            foreach (var p in o["params"]!.AsArray())
            {
                var po = p!.AsObject();
                var name = po["name"]!.GetValue<string>();
                var bufs = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                foreach (var b in po["buffers"]!.AsArray())
                {
                    var bn = b!.GetValue<string>();
                    var key = $"optimizer.{i}.{bn}";
                    if (!tensors.TryGetValue(key, out var t)) throw new InvalidDataException(err($"optimizer state '{name}.{bn}' (tensor '{key}') is missing"));
                    bufs[bn] = t;
                    used.Add(key);
                }
                state[name] = new ParamState(po["step"]!.GetValue<int>(), bufs);
                i++;
            }
            return new OptimizerState(groups, state);
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException or NullReferenceException)
        {
            throw new InvalidDataException(err($"metadata 'optimizer' is malformed ({e.Message})"), e);
        }
    }

    /// <summary>
    /// Loads a checkpoint into existing objects: the model's parameters and buffers (strict: every key must match),
    /// the optimizer state (groups must match by name and parameter names). Returns the rest of the state (the caller
    /// restores its generators with <see cref="TrainingState.RestoreRng"/> and continues at <see cref="TrainingState.GlobalStep"/>).
    /// </summary>
    public static TrainingState Load(string path, Module model, Optimizer? optimizer, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var file = Read(path);
        try { model.LoadStateDict(file.Model, strict); }
        catch (InvalidOperationException e) { throw new InvalidDataException($"training checkpoint '{path}': {e.Message}", e); }
        if (optimizer is not null)
        {
            if (file.Optimizer is null) throw new InvalidDataException($"training checkpoint '{path}' holds no optimizer state");
            try { optimizer.LoadStateDict(file.Optimizer); }
            catch (ArgumentException e) { throw new InvalidDataException($"training checkpoint '{path}': {e.Message}", e); }
        }
        return file.State;
    }
}
