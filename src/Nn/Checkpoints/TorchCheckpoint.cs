using System.IO.Compression;
using System.Runtime.InteropServices;
using FashionViL.Tensors;

namespace FashionViL.Nn.Checkpoints;

/// <summary>
/// Reads PyTorch zip checkpoints (<c>torch.save</c>, torch ≥ 1.6: <c>.pth</c>, <c>.bin</c>) without running any code
/// from the file. The pickle is interpreted by <see cref="PickleReader"/>, which only knows the torch rebuild globals.
/// Tensors are copied into our own contiguous CPU storage; views (offset, strides) are honoured exactly.
/// Raw objects: dicts are <see cref="Dictionary{TKey,TValue}"/> of object keys (insertion order), lists are
/// <see cref="List{T}"/>, tuples are <c>object?[]</c>, ints <c>long</c> (or BigInteger), floats <c>double</c>.
/// </summary>
public static class TorchCheckpoint
{
    /// <summary>The tensors of a state dict: the top-level dict, or the dict under <c>model</c> / <c>state_dict</c>
    /// (MMF and Lightning-style checkpoints). Non-tensor entries are skipped.</summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        var created = new List<Tensor>();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            var root = LoadObject(path, created);
            var dict = root as Dictionary<object, object?>
                ?? throw new InvalidDataException($"pytorch checkpoint '{path}': top-level object is {Describe(root)}, not a dict");
            if (!dict.Values.Any(v => v is Tensor))
            {
                foreach (var key in new[] { "model", "state_dict" })
                    if (dict.TryGetValue(key, out var inner) && inner is Dictionary<object, object?> d) { dict = d; break; }
            }
            foreach (var (k, v) in dict)
                if (k is string name && v is Tensor t) result[name] = t;
        }
        finally
        {
            // Tensors that are not part of the returned state dict (optimizer state, ...) are released now.
            var kept = new HashSet<Tensor>(result.Values, ReferenceEqualityComparer.Instance);
            foreach (var t in created) if (!kept.Contains(t)) t.Dispose();
        }
        return result;
    }

    /// <summary>The whole unpickled object (e.g. an MMF checkpoint with <c>model</c>, <c>optimizer</c>, ...).</summary>
    public static object? LoadObject(string path)
    {
        var created = new List<Tensor>();
        try { return LoadObject(path, created); }
        catch
        {
            foreach (var t in created) t.Dispose();
            throw;
        }
    }

    static object? LoadObject(string path, List<Tensor> created)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new InvalidDataException($"pytorch checkpoint '{path}': file not found");
        try
        {
            using var fs = File.OpenRead(path);
            ZipArchive zip;
            try { zip = new ZipArchive(fs, ZipArchiveMode.Read); }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"pytorch checkpoint '{path}': not a readable zip file ({e.Message}); " +
                                               "the file is truncated or corrupt, or uses the legacy pre-1.6 torch.save format, which is not supported", e);
            }
            using var _ = zip;
            var pkl = zip.Entries.FirstOrDefault(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal)
                                                       && e.FullName.IndexOf('/') == e.FullName.Length - "/data.pkl".Length)
                ?? throw new InvalidDataException($"pytorch checkpoint '{path}': no '<top>/data.pkl' entry (not a torch zip checkpoint)");
            var top = pkl.FullName[..^"/data.pkl".Length];
            byte[] pickle = ReadEntry(pkl, path);
            var storages = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            byte[] StorageBytes(string key)
            {
                if (storages.TryGetValue(key, out var b)) return b;
                var entry = zip.GetEntry($"{top}/data/{key}")
                    ?? throw new InvalidDataException($"pytorch checkpoint '{path}': storage entry '{top}/data/{key}' is missing");
                return storages[key] = ReadEntry(entry, path);
            }
            var byteorder = zip.GetEntry($"{top}/byteorder");
            if (byteorder != null && System.Text.Encoding.ASCII.GetString(ReadEntry(byteorder, path)).Trim() != "little")
                throw new InvalidDataException($"pytorch checkpoint '{path}': storages are not little-endian ('{top}/byteorder')");
            return new PickleReader(pickle, path, StorageBytes, created).Run();
        }
        catch (InvalidDataException e) when (!e.Message.Contains(path, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"pytorch checkpoint '{path}': {e.Message} (not a valid or complete zip file)", e);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"pytorch checkpoint '{path}': truncated data ({e.Message})", e);
        }
        catch (IOException e) when (e is not FileNotFoundException)
        {
            throw new InvalidDataException($"pytorch checkpoint '{path}': {e.Message}", e);
        }
    }

    /// <summary>Converts a PyTorch checkpoint's state dict to a safetensors file (written atomically).</summary>
    public static void ConvertToSafeTensors(string pth, string safetensorsPath)
    {
        var tensors = Load(pth);
        try { SafeTensors.Save(safetensorsPath, tensors, new Dictionary<string, string> { ["format"] = "pt", ["source"] = Path.GetFileName(pth) }); }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
    }

    static byte[] ReadEntry(ZipArchiveEntry entry, string path)
    {
        using var s = entry.Open();
        var buf = new byte[entry.Length];
        int got = 0;
        while (got < buf.Length)
        {
            int n = s.Read(buf, got, buf.Length - got);
            if (n == 0) throw new InvalidDataException($"pytorch checkpoint '{path}': entry '{entry.FullName}' is truncated ({got} of {buf.Length} bytes)");
            got += n;
        }
        return buf;
    }

    internal static string Describe(object? o) => o switch
    {
        null => "None",
        string => "a string",
        Dictionary<object, object?> => "a dict",
        List<object?> => "a list",
        object?[] => "a tuple",
        _ => o.GetType().Name,
    };

    /// <summary>Builds a contiguous tensor from a raw little-endian storage viewed with (offset, size, stride) in elements.</summary>
    internal static Tensor Rebuild(byte[] storage, DType dtype, long offset, int[] size, long[] stride, string path, string key)
    {
        int esz = dtype.Size();
        long storageNumel = storage.Length / esz;
        long n = 1, maxIndex = offset;
        for (int d = 0; d < size.Length; d++)
        {
            if (size[d] < 0 || stride[d] < 0)
                throw new InvalidDataException($"pytorch checkpoint '{path}': storage '{key}': negative size or stride in view [{string.Join(",", size)}] strides [{string.Join(",", stride)}]");
            try
            {
                n = checked(n * size[d]);
                if (size[d] > 0) maxIndex = checked(maxIndex + (size[d] - 1) * stride[d]);
            }
            catch (OverflowException)
            {
                throw new InvalidDataException($"pytorch checkpoint '{path}': storage '{key}': view size [{string.Join(",", size)}] strides [{string.Join(",", stride)}] overflows");
            }
        }
        if (n * esz > Array.MaxLength)
            throw new InvalidDataException($"pytorch checkpoint '{path}': storage '{key}': view size [{string.Join(",", size)}] is too large for one tensor");
        if (offset < 0 || (n > 0 && maxIndex >= storageNumel))
            throw new InvalidDataException($"pytorch checkpoint '{path}': storage '{key}' holds {storageNumel} {dtype.Name()} elements, too short for the view at offset {offset} size [{string.Join(",", size)}] strides [{string.Join(",", stride)}]");
        var buf = new byte[n * esz];
        bool contiguous = true;
        for (long d = size.Length - 1, expect = 1; d >= 0; d--)
        {
            if (size[d] != 1 && stride[d] != expect) { contiguous = false; break; }
            expect *= size[d];
        }
        if (contiguous && n > 0)
            Buffer.BlockCopy(storage, checked((int)(offset * esz)), buf, 0, buf.Length);
        else if (n > 0)
        {
            var idx = new int[size.Length];
            long src = offset;
            for (long i = 0; i < n; i++)
            {
                Buffer.BlockCopy(storage, (int)(src * esz), buf, (int)(i * esz), esz);
                for (int d = size.Length - 1; d >= 0; d--)
                {
                    if (++idx[d] < size[d]) { src += stride[d]; break; }
                    src -= (long)(size[d] - 1) * stride[d];
                    idx[d] = 0;
                }
            }
        }
        return dtype switch
        {
            DType.Float32 => Tensor.FromArray(MemoryMarshal.Cast<byte, float>(buf).ToArray(), size),
            DType.Float64 => Tensor.FromArray(MemoryMarshal.Cast<byte, double>(buf).ToArray(), size),
            DType.Int32 => Tensor.FromArray(MemoryMarshal.Cast<byte, int>(buf).ToArray(), size),
            DType.Int64 => Tensor.FromArray(MemoryMarshal.Cast<byte, long>(buf).ToArray(), size),
            DType.UInt8 => Tensor.FromArray(buf, size),
            DType.Bool => Tensor.FromArray(buf.Select(b => b != 0).ToArray(), size),
            DType.Float16 => Tensor.FromArray(MemoryMarshal.Cast<byte, Half>(buf).ToArray(), size),
            DType.BFloat16 => Tensor.FromArray(MemoryMarshal.Cast<byte, BFloat16>(buf).ToArray(), size),
            _ => throw new InvalidDataException($"pytorch checkpoint '{path}': unsupported dtype {dtype}"),
        };
    }
}
