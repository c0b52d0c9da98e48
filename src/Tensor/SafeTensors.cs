using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace FashionViL.Tensors;

/// <summary>One tensor entry of a safetensors header: byte range [<see cref="Begin"/>, <see cref="End"/>) of the data buffer.</summary>
public sealed record SafeTensorInfo(string Name, DType DType, int[] Shape, long Begin, long End);

/// <summary>The tensors and the free-form <c>__metadata__</c> string map of a safetensors file.</summary>
public sealed record SafeTensorsFile(Dictionary<string, Tensor> Tensors, IReadOnlyDictionary<string, string> Metadata) : IDisposable
{
    /// <summary>Disposes every tensor.</summary>
    public void Dispose()
    {
        foreach (var t in Tensors.Values) t.Dispose();
    }
}

/// <summary>
/// Reader and writer for the safetensors format: a little-endian u64 header length N, N bytes of UTF-8 JSON
/// <c>{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {string: string}}</c>, then the
/// packed little-endian data. Loading validates the header the way the reference Rust crate does: the tensors,
/// sorted by offset, must cover the data buffer exactly (no gaps, no overlap) and each range must hold exactly
/// numel × element size bytes. Saving is atomic: the file is written next to the target and moved over it.
/// </summary>
public static class SafeTensors
{
    /// <summary>Largest accepted header (same limit as the reference implementation).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private const string MetadataKey = "__metadata__";

    // ------------------------------------------------------------------ dtype codes

    public static string Code(DType t) => t switch
    {
        DType.Float32 => "F32", DType.Float64 => "F64", DType.Int32 => "I32", DType.Int64 => "I64",
        DType.Bool => "BOOL", DType.UInt8 => "U8", DType.Float16 => "F16", DType.BFloat16 => "BF16",
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "safetensors: unsupported dtype"),
    };

    public static bool TryParseCode(string code, out DType t)
    {
        switch (code)
        {
            case "F32": t = DType.Float32; return true;
            case "F64": t = DType.Float64; return true;
            case "I32": t = DType.Int32; return true;
            case "I64": t = DType.Int64; return true;
            case "BOOL": t = DType.Bool; return true;
            case "U8": t = DType.UInt8; return true;
            case "F16": t = DType.Float16; return true;
            case "BF16": t = DType.BFloat16; return true;
            default: t = default; return false;
        }
    }

    // ------------------------------------------------------------------ save

    /// <summary>
    /// Writes <paramref name="tensors"/> (any device, any layout) to <paramref name="path"/>. The bytes go to a
    /// temporary file in the same folder, are flushed to disk, and the temporary file is then moved over
    /// <paramref name="path"/>; if anything fails, the previous file is left untouched and the temporary file removed.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full) ?? throw new ArgumentException($"safetensors: '{path}' has no parent folder");
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                Write(fs, tensors, metadata, full);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>The file as bytes (same layout as <see cref="Save"/>).</summary>
    public static byte[] Serialize(IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var ms = new MemoryStream();
        Write(ms, tensors, metadata, "<memory>");
        return ms.ToArray();
    }

    /// <summary>Writes the safetensors layout to <paramref name="stream"/>.</summary>
    public static void Write(Stream stream, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null, string source = "<stream>")
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors: big-endian hosts are not supported");
        // Order like the reference writer: larger elements first (keeps every tensor aligned), then by name.
        var order = tensors.OrderByDescending(kv => kv.Value.DType.Size()).ThenBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        var infos = new List<SafeTensorInfo>(order.Count);
        long pos = 0;
        foreach (var (name, t) in order)
        {
            if (name == MetadataKey) throw new ArgumentException($"safetensors '{source}': '{MetadataKey}' is reserved and cannot name a tensor");
            if (t is null) throw new ArgumentException($"safetensors '{source}': tensor '{name}' is null");
            long bytes = (long)t.Numel * t.DType.Size();
            infos.Add(new SafeTensorInfo(name, t.DType, t.Shape, pos, pos + bytes));
            pos += bytes;
        }

        var header = BuildHeader(infos, metadata);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
        stream.Write(len);
        stream.Write(header);
        for (int i = 0; i < order.Count; i++)
        {
            var (name, t) = order[i];
            if (t.Numel == 0) continue;
            try
            {
                using var host = t.Device.IsCpu ? t.ContiguousRaw() : t.To(Device.Cpu);
                WriteBytes(stream, host, infos[i].End - infos[i].Begin);
            }
            catch (ObjectDisposedException e)
            {
                throw new ObjectDisposedException($"safetensors '{source}': tensor '{name}' was disposed before it could be saved", e);
            }
        }
    }

    private static unsafe void WriteBytes(Stream stream, Tensor host, long bytes)
    {
        byte* p = (byte*)host.DataPtrRaw();
        for (long done = 0; done < bytes;)
        {
            int n = (int)Math.Min(bytes - done, 1 << 30);
            stream.Write(new ReadOnlySpan<byte>(p + done, n));
            done += n;
        }
    }

    private static byte[] BuildHeader(List<SafeTensorInfo> infos, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject(MetadataKey);
                foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    ArgumentNullException.ThrowIfNull(v, $"metadata['{k}']");
                    w.WriteString(k, v);
                }
                w.WriteEndObject();
            }
            foreach (var info in infos)
            {
                w.WriteStartObject(info.Name);
                w.WriteString("dtype", Code(info.DType));
                w.WriteStartArray("shape");
                foreach (var d in info.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(info.Begin);
                w.WriteNumberValue(info.End);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        // Pad with spaces so that the data starts 8-byte aligned (the reference writer does the same).
        int pad = (int)((8 - ms.Length % 8) % 8);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }

    // ------------------------------------------------------------------ load

    /// <summary>Loads every tensor of the file at <paramref name="path"/>.</summary>
    public static Dictionary<string, Tensor> Load(string path, Device device = default) => Read(path, device).Tensors;

    /// <summary>Loads every tensor and the metadata of the file at <paramref name="path"/>.</summary>
    public static SafeTensorsFile Read(string path, Device device = default)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return ReadSeekable(fs, device, path);
    }

    /// <summary>Loads from the bytes of a whole file.</summary>
    public static unsafe SafeTensorsFile Read(ReadOnlySpan<byte> bytes, Device device = default, string source = "<memory>")
    {
        long n = ParseLength(bytes[..Math.Min(bytes.Length, 8)], bytes.Length, source);
        var (infos, meta) = ParseJson(bytes.Slice(8, (int)n), bytes.Length - 8 - n, source);
        var data = bytes[(8 + (int)n)..];
        var result = new Dictionary<string, Tensor>(infos.Count);
        try
        {
            foreach (var info in infos)
            {
                var host = Tensor.Empty(info.Shape, info.DType, Device.Cpu);
                try
                {
                    data.Slice((int)info.Begin, (int)(info.End - info.Begin)).CopyTo(new Span<byte>(host.DataPtrRaw(), (int)(info.End - info.Begin)));
                }
                catch { host.Dispose(); throw; }
                result[info.Name] = Finish(host, info, device, source);
            }
        }
        catch { foreach (var t in result.Values) t.Dispose(); throw; }
        return new SafeTensorsFile(result, meta);
    }

    /// <summary>Loads every tensor of the bytes of a whole file.</summary>
    public static Dictionary<string, Tensor> Load(ReadOnlySpan<byte> bytes, Device device = default) => Read(bytes, device).Tensors;

    /// <summary>Loads from a stream positioned at the start of a safetensors file (read to its end).</summary>
    public static SafeTensorsFile Read(Stream stream, Device device = default, string source = "<stream>")
    {
        if (stream.CanSeek) return ReadSeekable(stream, device, source);
        using var ms = new MemoryStream();
        stream.CopyTo(ms);
        return Read(ms.GetBuffer().AsSpan(0, (int)ms.Length), device, source);
    }

    public static Dictionary<string, Tensor> Load(Stream stream, Device device = default) => Read(stream, device).Tensors;

    /// <summary>Reads and validates only the header (no tensor data) of the file at <paramref name="path"/>.</summary>
    public static (IReadOnlyList<SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata) ReadHeader(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var (infos, meta, _) = ParseStreamHeader(fs, path);
        return (infos, meta);
    }

    private static unsafe SafeTensorsFile ReadSeekable(Stream s, Device device, string source)
    {
        var (infos, meta, _) = ParseStreamHeader(s, source);
        var result = new Dictionary<string, Tensor>(infos.Count);
        try
        {
            // Validation guarantees the ranges tile the data buffer, so reading in offset order is sequential.
            foreach (var info in infos)
            {
                var host = Tensor.Empty(info.Shape, info.DType, Device.Cpu);
                try
                {
                    long bytes = info.End - info.Begin;
                    byte* p = (byte*)host.DataPtrRaw();
                    for (long done = 0; done < bytes;)
                    {
                        int n = (int)Math.Min(bytes - done, 1 << 30);
                        s.ReadExactly(new Span<byte>(p + done, n));
                        done += n;
                    }
                }
                catch (EndOfStreamException e)
                {
                    host.Dispose();
                    throw new InvalidDataException($"safetensors '{source}': tensor '{info.Name}': file ended before its data", e);
                }
                catch { host.Dispose(); throw; }
                result[info.Name] = Finish(host, info, device, source);
            }
        }
        catch { foreach (var t in result.Values) t.Dispose(); throw; }
        return new SafeTensorsFile(result, meta);
    }

    private static (List<SafeTensorInfo>, IReadOnlyDictionary<string, string>, long) ParseStreamHeader(Stream s, string source)
    {
        long total = s.Length - s.Position;
        Span<byte> len = stackalloc byte[8];
        int got = 0;
        while (got < Math.Min(8, total)) { int r = s.Read(len[got..]); if (r == 0) break; got += r; }
        long n = ParseLength(len[..got], total, source);
        var h = new byte[n];
        s.ReadExactly(h);
        var (infos, meta) = ParseJson(h, total - 8 - n, source);
        return (infos, meta, 8 + n);
    }

    /// <summary>Checks BOOL bytes and moves the loaded host tensor to <paramref name="device"/>.</summary>
    private static unsafe Tensor Finish(Tensor host, SafeTensorInfo info, Device device, string source)
    {
        try
        {
            if (info.DType == DType.Bool)
            {
                byte* p = (byte*)host.DataPtrRaw();
                for (long i = 0; i < host.Numel; i++)
                    if (p[i] > 1) throw new InvalidDataException($"safetensors '{source}': tensor '{info.Name}' (BOOL) holds byte {p[i]} at element {i}; booleans must be 0 or 1");
            }
            if (device.IsCpu) return host;
            var dev = host.To(device);
            host.Dispose();
            return dev;
        }
        catch { host.Dispose(); throw; }
    }

    private static long ParseLength(ReadOnlySpan<byte> prefix, long total, string source)
    {
        if (total < 8 || prefix.Length < 8)
            throw new InvalidDataException($"safetensors '{source}': file is {total} bytes, shorter than the 8-byte header length");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (n > (ulong)MaxHeaderBytes)
            throw new InvalidDataException($"safetensors '{source}': header length {n} is larger than the {MaxHeaderBytes}-byte limit");
        if ((long)n > total - 8)
            throw new InvalidDataException($"safetensors '{source}': header length {n} is larger than the {total - 8} bytes after the length prefix");
        return (long)n;
    }

    /// <summary>
    /// Validates the JSON header against the size of the data buffer. Returns the entries sorted by offset and the metadata.
    /// </summary>
    private static (List<SafeTensorInfo>, IReadOnlyDictionary<string, string>) ParseJson(ReadOnlySpan<byte> headerBytes, long dataLen, string source)
    {
        string Err(string msg) => $"safetensors '{source}': {msg}";
        if (headerBytes.Length == 0 || headerBytes[0] != (byte)'{')
            throw new InvalidDataException(Err("header is not a JSON object (it must start with '{')"));

        if (!System.Text.Unicode.Utf8.IsValid(headerBytes))
            throw new InvalidDataException(Err("header is not valid UTF-8"));
        JsonDocument doc;
        try { doc = JsonDocument.Parse(headerBytes.ToArray(), new JsonDocumentOptions { MaxDepth = 16 }); }
        catch (JsonException e) { throw new InvalidDataException(Err($"header is not valid JSON: {e.Message}"), e); }
        catch (ArgumentException e) { throw new InvalidDataException(Err($"header is not valid UTF-8 JSON: {e.Message}"), e); }

        var infos = new List<SafeTensorInfo>();
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException(Err($"header is a JSON {doc.RootElement.ValueKind}, not an object"));
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name))
                    throw new InvalidDataException(Err($"duplicate entry '{prop.Name}' in the header"));
                if (prop.Name == MetadataKey)
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new InvalidDataException(Err($"'{MetadataKey}' must be an object of strings, not {prop.Value.ValueKind}"));
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new InvalidDataException(Err($"'{MetadataKey}' entry '{m.Name}' must be a string, not {m.Value.ValueKind}"));
                        if (!meta.TryAdd(m.Name, m.Value.GetString()!))
                            throw new InvalidDataException(Err($"duplicate '{MetadataKey}' entry '{m.Name}'"));
                    }
                    continue;
                }
                infos.Add(ParseEntry(prop.Name, prop.Value, Err));
            }
        }

        // The reference rule: sorted by offset, each tensor starts where the previous ended, and the last ends at the buffer end.
        infos.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long pos = 0;
        for (int i = 0; i < infos.Count; i++)
        {
            var t = infos[i];
            if (t.Begin < pos)
                throw new InvalidDataException(Err($"tensor '{t.Name}' data_offsets [{t.Begin}, {t.End}] overlap tensor '{infos[i - 1].Name}' which ends at {pos}"));
            if (t.Begin > pos)
                throw new InvalidDataException(Err($"tensor '{t.Name}' data_offsets [{t.Begin}, {t.End}] leave a gap: the previous tensor ends at {pos} (tensors must cover the data buffer without gaps)"));
            if (t.End > dataLen)
                throw new InvalidDataException(Err($"tensor '{t.Name}' data_offsets [{t.Begin}, {t.End}] reach beyond the {dataLen}-byte data buffer"));
            pos = t.End;
        }
        if (pos != dataLen)
            throw new InvalidDataException(Err($"tensors cover {pos} bytes but the data buffer has {dataLen} (trailing bytes are not allowed)"));
        return (infos, meta);
    }

    private static SafeTensorInfo ParseEntry(string name, JsonElement e, Func<string, string> err)
    {
        string Bad(string msg) => err($"tensor '{name}': {msg}");
        if (e.ValueKind != JsonValueKind.Object) throw new InvalidDataException(Bad($"entry is a JSON {e.ValueKind}, not an object"));

        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new InvalidDataException(Bad("missing string field 'dtype'"));
        var code = dt.GetString()!;
        if (!TryParseCode(code, out var dtype))
            throw new InvalidDataException(Bad($"unknown dtype '{code}' (supported: F32 F64 I32 I64 BOOL U8 F16 BF16)"));

        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException(Bad("missing array field 'shape'"));
        var shape = new int[sh.GetArrayLength()];
        long numel = 1;
        int k = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v))
                throw new InvalidDataException(Bad($"shape {sh.GetRawText()} holds a non-integer dimension"));
            if (v < 0) throw new InvalidDataException(Bad($"shape {sh.GetRawText()} has a negative dimension"));
            if (v > int.MaxValue) throw new InvalidDataException(Bad($"shape {sh.GetRawText()} has a dimension larger than {int.MaxValue}"));
            shape[k++] = (int)v;
            numel *= v;
            if (numel > int.MaxValue) throw new InvalidDataException(Bad($"shape {sh.GetRawText()} has more than {int.MaxValue} elements"));
        }

        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new InvalidDataException(Bad("'data_offsets' must be an array [begin, end]"));
        var o = new long[2];
        k = 0;
        foreach (var x in off.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out o[k]) || o[k] < 0)
                throw new InvalidDataException(Bad($"data_offsets {off.GetRawText()} must hold two non-negative integers"));
            k++;
        }
        if (o[0] > o[1]) throw new InvalidDataException(Bad($"data_offsets {off.GetRawText()} have begin > end"));
        long want = numel * dtype.Size();
        if (o[1] - o[0] != want)
            throw new InvalidDataException(Bad($"data_offsets {off.GetRawText()} span {o[1] - o[0]} bytes but shape {Shape.Format(shape)} of {code} needs {want}"));
        return new SafeTensorInfo(name, dtype, shape, o[0], o[1]);
    }
}
