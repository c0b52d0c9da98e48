using System.Buffers.Binary;
using System.Text;
using FashionViL.Testing;

namespace FashionViL.TensorTests;

public class SafeTensorsTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "fvl-st-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static unsafe byte[] RawBytes(Tensor t)
    {
        using var c = t.ContiguousRaw();
        return new ReadOnlySpan<byte>(c.DataPtrRaw(), c.Numel * c.DType.Size()).ToArray();
    }

    /// <summary>One tensor of every dtype, with awkward values (NaN, ±inf, −0, subnormals, extremes).</summary>
    private static Dictionary<string, Tensor> EveryDType()
    {
        float nanPayload = BitConverter.UInt32BitsToSingle(0x7FC01234);
        return new()
        {
            ["f32"] = Tensor.FromArray(new[] { 1.5f, -0f, float.NaN, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, nanPayload, float.MaxValue }, [2, 4]),
            ["f64"] = Tensor.FromArray(new[] { Math.PI, -0.0, double.NaN, double.Epsilon, double.MinValue, 1e300 }, [3, 2]),
            ["i32"] = Tensor.FromArray(new[] { int.MinValue, -1, 0, 1, int.MaxValue }, [5]),
            ["i64"] = Tensor.FromArray(new[] { long.MinValue, -1L, 0L, 0x0102030405060708L, long.MaxValue, 7L }, [1, 2, 3]),
            ["bool"] = Tensor.FromArray(new[] { true, false, false, true }, [2, 2]),
            ["u8"] = Tensor.FromArray(new byte[] { 0, 1, 127, 128, 255 }, [5]),
            ["f16"] = Tensor.FromArray(new[] { (Half)1.5f, (Half)(-0f), Half.NaN, Half.PositiveInfinity, Half.Epsilon, Half.MaxValue }, [6]),
            ["bf16"] = Tensor.FromArray(new[] { (BFloat16)1.5f, (BFloat16)(-0f), (BFloat16)float.NaN, (BFloat16)float.NegativeInfinity, new BFloat16(0x0001), (BFloat16)3.0e38f }, [2, 3]),
            ["scalar"] = Tensor.Scalar(2.25),
        };
    }

    private static void AssertSame(Dictionary<string, Tensor> want, Dictionary<string, Tensor> got)
    {
        Assert.That(got.Keys.OrderBy(k => k, StringComparer.Ordinal), Is.EqualTo(want.Keys.OrderBy(k => k, StringComparer.Ordinal)));
        foreach (var (name, w) in want)
        {
            var g = got[name];
            Assert.That(g.DType, Is.EqualTo(w.DType), name);
            Assert.That(g.Shape, Is.EqualTo(w.Shape), name);
            if (g.Numel > 0) Assert.That(g.IsContiguous, Is.True, name); // Tensor.IsContiguous reports false for some empty shapes, e.g. [2, 0, 3]
            Assert.That(RawBytes(g), Is.EqualTo(RawBytes(w)), $"{name}: bytes");
        }
    }

    private static void DisposeAll(IEnumerable<Tensor> ts) { foreach (var t in ts) t.Dispose(); }

    [Test]
    public void RoundTrip_EveryDType_File()
    {
        var src = EveryDType();
        var path = Path.Combine(_dir, "all.safetensors");
        SafeTensors.Save(path, src, new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode \"quoted\"" });
        using var file = SafeTensors.Read(path);
        AssertSame(src, file.Tensors);
        Assert.That(file.Metadata, Is.EquivalentTo(new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode \"quoted\"" }));
        // Data starts 8-byte aligned.
        var bytes = File.ReadAllBytes(path);
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(bytes) % 8, Is.Zero);
        DisposeAll(src.Values);
    }

    [Test]
    public void RoundTrip_Span_Stream_And_NonSeekableStream_Agree()
    {
        var src = EveryDType();
        var bytes = SafeTensors.Serialize(src);
        var fromSpan = SafeTensors.Load(bytes.AsSpan());
        AssertSame(src, fromSpan);
        using (var ms = new MemoryStream(bytes)) AssertSame(src, SafeTensors.Load(ms));
        using (var ns = new NonSeekable(bytes)) AssertSame(src, SafeTensors.Read(ns, default, "pipe").Tensors);
        var path = Path.Combine(_dir, "x.safetensors");
        SafeTensors.Save(path, src);
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(bytes), "Save and Serialize write the same bytes");
        var (infos, meta) = SafeTensors.ReadHeader(path);
        Assert.That(infos.Select(i => i.Name), Is.EquivalentTo(src.Keys));
        Assert.That(meta, Is.Empty);
        DisposeAll(src.Values);
    }

    [Test]
    public void RoundTrip_NonContiguous_And_Empty()
    {
        using var baseT = OpCheck.Rand([3, 4, 5], 1, DType.Float32);
        using var perm = baseT.AsStrided([5, 3, 4], [1, 20, 5], 0); // permuted view
        using var strided = baseT.AsStrided([3, 2], [20, 2], 1);     // every other element
        using var nc64 = OpCheck.NonContiguous(OpCheck.Rand([2, 3], 2));
        using var e0 = Tensor.Empty([0]);
        using var e1 = Tensor.Empty([2, 0, 3], DType.Int64);
        using var e2 = Tensor.Empty([0], DType.BFloat16);
        Assert.That(perm.IsContiguous || strided.IsContiguous || nc64.IsContiguous, Is.False);
        var src = new Dictionary<string, Tensor> { ["perm"] = perm, ["strided"] = strided, ["nc64"] = nc64, ["e0"] = e0, ["e1"] = e1, ["e2"] = e2 };
        var path = Path.Combine(_dir, "nc.safetensors");
        SafeTensors.Save(path, src);
        var got = SafeTensors.Load(path);
        AssertSame(src, got);
        Assert.That(got["perm"].ToArray<float>(), Is.EqualTo(perm.ToArray<float>()));
        Assert.That(got["strided"].ToArray<float>(), Is.EqualTo(strided.ToArray<float>()));
        var (infos, _) = SafeTensors.ReadHeader(path);
        var e1Info = infos.Single(i => i.Name == "e1");
        Assert.That(e1Info.End - e1Info.Begin, Is.Zero);
        DisposeAll(got.Values);
    }

    [Test]
    public void RoundTrip_NoTensors()
    {
        var path = Path.Combine(_dir, "empty.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor>(), new Dictionary<string, string> { ["a"] = "b" });
        using var f = SafeTensors.Read(path);
        Assert.That(f.Tensors, Is.Empty);
        Assert.That(f.Metadata["a"], Is.EqualTo("b"));
    }

    // ------------------------------------------------------------------ byte-exact layout

    private static byte[] File8(string header, params byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var b = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)h.Length);
        h.CopyTo(b, 8);
        data.CopyTo(b, 8 + h.Length);
        return b;
    }

    private static readonly byte[] TinyData =
    [
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // b: int64 0x0102030405060708
        0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0, // a: float32 1.0, -2.0
    ];

    // Hand-written: metadata first, then the 8-byte tensor before the 4-byte one, padded with spaces to a multiple of 8.
    private const string TinyHeader =
        "{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}";

    [Test]
    public void Layout_ByteExact_TinyFile()
    {
        int pad = (8 - TinyHeader.Length % 8) % 8;
        var want = File8(TinyHeader + new string(' ', pad), TinyData);
        using var a = Tensor.FromArray(new[] { 1f, -2f }, [2]);
        using var b = Tensor.FromArray(new[] { 0x0102030405060708L }, [1]);
        var got = SafeTensors.Serialize(new Dictionary<string, Tensor> { ["a"] = a, ["b"] = b }, new Dictionary<string, string> { ["format"] = "pt" });
        Assert.That(Encoding.UTF8.GetString(got, 8, got.Length - 8 - 16), Is.EqualTo(TinyHeader + new string(' ', pad)));
        Assert.That(got, Is.EqualTo(want));
    }

    [Test]
    public void Layout_HandBuiltFile_Loads()
    {
        // Unpadded header, keys in the opposite order, extra whitespace: still valid.
        var bytes = File8("{ \"a\": {\"dtype\":\"F32\", \"shape\":[2], \"data_offsets\":[8,16]},\n \"b\":{\"shape\":[1],\"dtype\":\"I64\",\"data_offsets\":[0,8]}, \"__metadata__\":{\"format\":\"pt\"} }", TinyData);
        var path = Path.Combine(_dir, "tiny.safetensors");
        File.WriteAllBytes(path, bytes);
        using var f = SafeTensors.Read(path);
        Assert.That(f.Tensors["a"].ToArray<float>(), Is.EqualTo(new[] { 1f, -2f }));
        Assert.That(f.Tensors["a"].Shape, Is.EqualTo(new[] { 2 }));
        Assert.That(f.Tensors["b"].ToArray<long>(), Is.EqualTo(new[] { 0x0102030405060708L }));
        Assert.That(f.Tensors["b"].DType, Is.EqualTo(DType.Int64));
        Assert.That(f.Metadata["format"], Is.EqualTo("pt"));
    }

    // ------------------------------------------------------------------ corruption

    private static byte[] WithLength(ulong n, int fileBytes)
    {
        var b = new byte[fileBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(b, n);
        for (int i = 8; i < fileBytes; i++) b[i] = (byte)'{';
        return b;
    }

    private static string F32(string name, string shape, string offs) => $"\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":{offs}}}";

    private static IEnumerable<TestCaseData> Corrupt()
    {
        TestCaseData C(string what, byte[] file, params string[] expect) => new TestCaseData(file, expect).SetName($"Corrupt_{what}");
        yield return C("TooShort", [1, 2, 3], "3 bytes, shorter than the 8-byte header length");
        yield return C("Empty", [], "0 bytes, shorter than the 8-byte");
        yield return C("HeaderLongerThanFile", WithLength(1000, 40), "header length 1000 is larger than the 32 bytes");
        yield return C("HeaderOver100MB", WithLength(200_000_000, 40), "header length 200000000", "100000000-byte limit");
        yield return C("HeaderHugeU64", WithLength(ulong.MaxValue, 40), "larger than the 100000000-byte limit");
        yield return C("NotJson", File8("{abc"), "header is not valid JSON");
        yield return C("NotObject", File8("[1,2]"), "header is not a JSON object");
        yield return C("EmptyHeader", File8(""), "header is not a JSON object");
        var badUtf8 = File8("{\"a?\":1}");
        badUtf8[Array.IndexOf(badUtf8, (byte)'?')] = 0xFF;
        yield return C("BadUtf8", badUtf8, "header is not valid");
        yield return C("EntryNotObject", File8("{\"w\":[1]}"), "tensor 'w'", "not an object");
        yield return C("UnknownDType", File8("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0), "tensor 'w'", "unknown dtype 'F8_E4M3'");
        yield return C("MissingDType", File8("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 0, 0, 0), "tensor 'w'", "'dtype'");
        yield return C("NegativeDim", File8("{" + F32("w", "[2,-1]", "[0,0]") + "}"), "tensor 'w'", "negative dimension");
        yield return C("FractionalDim", File8("{" + F32("w", "[1.5]", "[0,4]") + "}", 0, 0, 0, 0), "tensor 'w'", "non-integer dimension");
        yield return C("OffsetsOneValue", File8("{" + F32("w", "[1]", "[4]") + "}", 0, 0, 0, 0), "tensor 'w'", "[begin, end]");
        yield return C("OffsetsNotArray", File8("{" + F32("w", "[1]", "\"0-4\"") + "}", 0, 0, 0, 0), "tensor 'w'", "[begin, end]");
        yield return C("OffsetsNegative", File8("{" + F32("w", "[0]", "[-4,-4]") + "}"), "tensor 'w'", "non-negative");
        yield return C("BeginAfterEnd", File8("{" + F32("w", "[1]", "[8,4]") + "}", new byte[8]), "tensor 'w'", "begin > end");
        yield return C("EndBeyondData", File8("{" + F32("w", "[4]", "[0,16]") + "}", new byte[8]), "tensor 'w'", "beyond the 8-byte data buffer");
        yield return C("ByteLengthMismatch", File8("{" + F32("w", "[3]", "[0,8]") + "}", new byte[8]), "tensor 'w'", "span 8 bytes but shape [3] of F32 needs 12");
        yield return C("Overlap", File8("{" + F32("a", "[2]", "[0,8]") + "," + F32("b", "[2]", "[4,12]") + "}", new byte[12]), "tensor 'b'", "overlap tensor 'a'");
        yield return C("Gap", File8("{" + F32("a", "[1]", "[0,4]") + "," + F32("b", "[1]", "[8,12]") + "}", new byte[12]), "tensor 'b'", "gap");
        yield return C("TrailingBytes", File8("{" + F32("a", "[1]", "[0,4]") + "}", new byte[8]), "cover 4 bytes but the data buffer has 8");
        yield return C("Duplicate", File8("{" + F32("a", "[1]", "[0,4]") + "," + F32("a", "[1]", "[4,8]") + "}", new byte[8]), "duplicate entry 'a'");
        yield return C("MetadataNotString", File8("{\"__metadata__\":{\"epoch\":3}}"), "'__metadata__' entry 'epoch' must be a string");
        yield return C("MetadataNotObject", File8("{\"__metadata__\":\"x\"}"), "'__metadata__' must be an object");
        yield return C("BoolNotZeroOne", File8("{\"m\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]}}", 1, 2), "tensor 'm'", "booleans must be 0 or 1");
    }

    [TestCaseSource(nameof(Corrupt))]
    public void Corrupt_File_NamesFileAndProblem(byte[] file, string[] expect)
    {
        var path = Path.Combine(_dir, "bad.safetensors");
        File.WriteAllBytes(path, file);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Load(path))!;
        Assert.That(e.Message, Does.Contain(path), "message names the file");
        foreach (var s in expect) Assert.That(e.Message, Does.Contain(s));
        // The in-memory readers give the same diagnosis.
        var e2 = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(file.AsSpan(), default, "mem"))!;
        foreach (var s in expect) Assert.That(e2.Message, Does.Contain(s));
        Assert.That(e2.Message, Does.Contain("'mem'"));
        using var ns = new NonSeekable(file);
        var e3 = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(ns, default, "pipe"))!;
        foreach (var s in expect) Assert.That(e3.Message, Does.Contain(s));
    }

    [Test]
    public void Save_RejectsReservedName()
    {
        using var t = Tensor.Zeros([1]);
        var e = Assert.Throws<ArgumentException>(() => SafeTensors.Save(Path.Combine(_dir, "r.safetensors"), new Dictionary<string, Tensor> { ["__metadata__"] = t }))!;
        Assert.That(e.Message, Does.Contain("reserved"));
        Assert.That(Directory.GetFiles(_dir), Is.Empty);
    }

    // ------------------------------------------------------------------ atomic save

    [Test]
    public void Save_FailureMidWrite_KeepsOldFile_AndRemovesTemp()
    {
        var path = Path.Combine(_dir, "ckpt.safetensors");
        using (var old = Tensor.FromArray(new[] { 1f, 2f, 3f }, [3]))
            SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = old });
        var before = File.ReadAllBytes(path);

        using var a = OpCheck.Rand([64, 64], 3, DType.Float32);
        var b = Tensor.Zeros([8]);
        b.Dispose(); // header can still be built from its shape; writing its data fails after 'a' is already written
        var e = Assert.Throws<ObjectDisposedException>(() => SafeTensors.Save(path, new Dictionary<string, Tensor> { ["a"] = a, ["b"] = b }))!;
        Assert.That(e.Message, Does.Contain("'b'"));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before), "old checkpoint untouched");
        Assert.That(Directory.GetFiles(_dir).Select(Path.GetFileName), Is.EqualTo(new[] { "ckpt.safetensors" }), "no temp files left");
        using var f = SafeTensors.Read(path);
        Assert.That(f.Tensors["w"].ToArray<float>(), Is.EqualTo(new[] { 1f, 2f, 3f }));
    }

    [Test]
    public void Save_TargetIsADirectory_Throws_AndRemovesTemp()
    {
        var target = Path.Combine(_dir, "sub");
        Directory.CreateDirectory(target);
        using var t = Tensor.Zeros([2]);
        Assert.Catch<Exception>(() => SafeTensors.Save(target, new Dictionary<string, Tensor> { ["t"] = t }));
        Assert.That(Directory.GetFiles(_dir), Is.Empty, "no temp files left");
        Assert.That(Directory.Exists(target), Is.True);
    }

    [Test]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void Save_ReadOnlyFolder_Throws_AndKeepsOldFile()
    {
        if (Environment.UserName == "root") Assert.Ignore("root ignores folder permissions; covered by the disposed-tensor case");
        var path = Path.Combine(_dir, "ro.safetensors");
        using var t = Tensor.Ones([2]);
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["t"] = t });
        var before = File.ReadAllBytes(path);
        File.SetUnixFileMode(_dir, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        try
        {
            using var u = Tensor.Zeros([4]);
            Assert.Throws<UnauthorizedAccessException>(() => SafeTensors.Save(path, new Dictionary<string, Tensor> { ["u"] = u }));
        }
        finally { File.SetUnixFileMode(_dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute); }
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
    }

    [Test]
    public void Save_OverwritesExistingFile()
    {
        var path = Path.Combine(_dir, "o.safetensors");
        using var a = Tensor.Ones([100]);
        using var b = Tensor.Full([2], 5);
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["a"] = a });
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["b"] = b });
        var got = SafeTensors.Load(path);
        Assert.That(got.Keys, Is.EqualTo(new[] { "b" }));
        Assert.That(got["b"].ToArray<float>(), Is.EqualTo(new[] { 5f, 5f }));
        DisposeAll(got.Values);
    }

    private sealed class NonSeekable(byte[] data) : Stream
    {
        private readonly MemoryStream _inner = new(data);
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, Math.Min(count, 3)); // short reads
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        protected override void Dispose(bool disposing) { if (disposing) _inner.Dispose(); base.Dispose(disposing); }
    }
}
