using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using FashionViL.Tensors;

namespace FashionViL.Nn.Checkpoints;

/// <summary>A name a pickle's GLOBAL opcode referred to (only allow-listed ones are ever created).</summary>
internal sealed record PickleGlobal(string Module, string Name)
{
    public override string ToString() => $"{Module}.{Name}";
}

/// <summary>A storage named by a persistent id: ('storage', StorageType, key, location, numel).</summary>
internal sealed record StorageRef(DType DType, string Key, long Numel);

/// <summary>
/// A small pickle (protocol ≤ 2 plus the opcodes torch writes) virtual machine. It never imports or calls anything:
/// GLOBAL is checked against a fixed allow-list and REDUCE only dispatches to our own rebuild functions.
/// </summary>
internal sealed class PickleReader(byte[] data, string path, Func<string, byte[]> storage, List<Tensor> created)
{
    static readonly Dictionary<string, DType> StorageTypes = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = DType.Float32, ["DoubleStorage"] = DType.Float64, ["HalfStorage"] = DType.Float16,
        ["BFloat16Storage"] = DType.BFloat16, ["LongStorage"] = DType.Int64, ["IntStorage"] = DType.Int32,
        ["ByteStorage"] = DType.UInt8, ["BoolStorage"] = DType.Bool,
    };

    static readonly HashSet<string> Allowed = new(StringComparer.Ordinal)
    {
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    };

    static readonly object Mark = new();

    int _pos;
    readonly List<object?> _stack = [];
    readonly Dictionary<long, object?> _memo = [];

    InvalidDataException Bad(string what) => new($"pytorch checkpoint '{path}': data.pkl: {what} (at byte {_pos})");

    public object? Run()
    {
        while (true)
        {
            byte op = U8();
            switch (op)
            {
                case 0x80: U8(); break;                                    // PROTO
                case 0x95: Bytes(8); break;                                // FRAME (protocol 4)
                case (byte)'}': Push(new Dictionary<object, object?>()); break; // EMPTY_DICT
                case (byte)']': Push(new List<object?>()); break;          // EMPTY_LIST
                case (byte)')': Push(Array.Empty<object?>()); break;       // EMPTY_TUPLE
                case (byte)'(': _stack.Add(Mark); break;                   // MARK
                case (byte)'X': Push(Str((int)U32())); break;              // BINUNICODE
                case 0x8c: Push(Str(U8())); break;                         // SHORT_BINUNICODE
                case (byte)'q': _memo[U8()] = Peek(); break;               // BINPUT
                case (byte)'r': _memo[U32()] = Peek(); break;              // LONG_BINPUT
                case 0x94: _memo[_memo.Count] = Peek(); break;             // MEMOIZE
                case (byte)'h': Push(Get(U8())); break;                    // BINGET
                case (byte)'j': Push(Get(U32())); break;                   // LONG_BINGET
                case (byte)'J': Push((long)(int)U32()); break;             // BININT
                case (byte)'K': Push((long)U8()); break;                   // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Bytes(2))); break; // BININT2
                case 0x8a: Push(Long1(Bytes(U8()))); break;                // LONG1
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Bytes(8))); break; // BINFLOAT
                case 0x88: Push(true); break;                              // NEWTRUE
                case 0x89: Push(false); break;                             // NEWFALSE
                case (byte)'N': Push(null); break;                         // NONE
                case (byte)'t': Push(PopMark().ToArray()); break;          // TUPLE
                case 0x85: Push(new[] { Pop() }); break;                   // TUPLE1
                case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }           // TUPLE2
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; } // TUPLE3
                case (byte)'s': { var v = Pop(); var k = Pop(); SetItem(Peek(), k, v); break; }     // SETITEM
                case (byte)'u':                                                                     // SETITEMS
                {
                    var items = PopMark();
                    if (items.Count % 2 != 0) throw Bad("SETITEMS with an odd number of items");
                    var target = Peek();
                    for (int i = 0; i < items.Count; i += 2) SetItem(target, items[i], items[i + 1]);
                    break;
                }
                case (byte)'a': { var v = Pop(); AsList(Peek()).Add(v); break; }                    // APPEND
                case (byte)'e': { var items = PopMark(); AsList(Peek()).AddRange(items); break; }   // APPENDS
                case (byte)'c': Push(Global(Line(), Line())); break;                               // GLOBAL
                case (byte)'R': { var args = Pop(); var f = Pop(); Push(Reduce(f, args)); break; } // REDUCE
                case (byte)'b': Build(Pop(), Peek()); break;                                        // BUILD
                case (byte)'Q': Push(PersistentLoad(Pop())); break;                                // BINPERSID
                case (byte)'.':                                                                     // STOP
                    if (_stack.Count != 1) throw Bad($"STOP with {_stack.Count} objects on the stack");
                    return _stack[0];
                default:
                    throw Bad($"unsupported pickle opcode 0x{op:x2} ('{(op >= 32 && op < 127 ? (char)op : '?')}')");
            }
        }
    }

    // ------------------------------------------------------------ semantics

    object Global(string module, string name)
    {
        var full = $"{module}.{name}";
        if (module == "torch" && StorageTypes.ContainsKey(name)) return new PickleGlobal(module, name);
        if (Allowed.Contains(full)) return new PickleGlobal(module, name);
        throw new InvalidDataException($"pytorch checkpoint '{path}': data.pkl refers to global '{full}', which is not allowed " +
                                       "(only collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter and torch storage types are); nothing was executed");
    }

    object? Reduce(object? f, object? args)
    {
        if (f is not PickleGlobal g) throw Bad($"REDUCE on {TorchCheckpoint.Describe(f)}, not a global");
        if (args is not object?[] a) throw Bad($"REDUCE on {g} with {TorchCheckpoint.Describe(args)} instead of an argument tuple");
        switch (g.ToString())
        {
            case "collections.OrderedDict":
                if (a.Length != 0) throw Bad("OrderedDict(...) with arguments is not supported");
                return new Dictionary<object, object?>();
            case "torch._utils._rebuild_tensor_v2":
            {
                if (a.Length < 4) throw Bad($"_rebuild_tensor_v2 with {a.Length} arguments");
                if (a[0] is not StorageRef s) throw Bad($"_rebuild_tensor_v2: first argument is {TorchCheckpoint.Describe(a[0])}, not a storage");
                long offset = Int(a[1], "storage offset");
                var size = Ints(a[2], "size").Select(x => x is >= 0 and <= int.MaxValue ? (int)x : throw Bad($"tensor size {x} out of range")).ToArray();
                var stride = Ints(a[3], "stride");
                if (size.Length != stride.Length) throw Bad($"_rebuild_tensor_v2: size has {size.Length} dims, stride {stride.Length}");
                var bytes = storage(s.Key);
                if (bytes.Length < s.Numel * s.DType.Size())
                    throw new InvalidDataException($"pytorch checkpoint '{path}': storage entry data/{s.Key} has {bytes.Length} bytes, expected {s.Numel} {s.DType.Name()} elements");
                var tensor = TorchCheckpoint.Rebuild(bytes, s.DType, offset, size, stride, path, s.Key);
                created.Add(tensor);
                return tensor;
            }
            case "torch._utils._rebuild_parameter":
                if (a.Length < 1 || a[0] is not Tensor t) throw Bad("_rebuild_parameter without a tensor");
                return t;
            default:
                throw Bad($"{g} cannot be called");
        }
    }

    void Build(object? state, object? obj)
    {
        // OrderedDict state dicts carry `_metadata` as instance state: accepted and ignored.
        if (obj is Dictionary<object, object?>) return;
        throw Bad($"BUILD on {TorchCheckpoint.Describe(obj)} is not supported");
    }

    object PersistentLoad(object? pid)
    {
        if (pid is not object?[] t || t.Length < 5 || t[0] is not "storage")
            throw Bad($"unsupported persistent id {TorchCheckpoint.Describe(pid)}");
        if (t[1] is not PickleGlobal { Module: "torch" } g || !StorageTypes.TryGetValue(g.Name, out var dtype))
            throw Bad($"persistent id names storage type {TorchCheckpoint.Describe(t[1])}");
        if (t[2] is not string key) throw Bad("persistent id without a string key");
        return new StorageRef(dtype, key, Int(t[4], "storage numel"));
    }

    void SetItem(object? target, object? key, object? value)
    {
        if (target is not Dictionary<object, object?> d) throw Bad($"SETITEM on {TorchCheckpoint.Describe(target)}");
        d[key ?? throw Bad("None as a dict key is not supported")] = value;
    }

    List<object?> AsList(object? o) => o as List<object?> ?? throw Bad($"APPEND on {TorchCheckpoint.Describe(o)}");

    long Int(object? o, string what) => o switch
    {
        long l => l,
        BigInteger b when b >= long.MinValue && b <= long.MaxValue => (long)b,
        _ => throw Bad($"{what} is {TorchCheckpoint.Describe(o)}, not an int"),
    };

    long[] Ints(object? o, string what) =>
        o is object?[] t ? t.Select(x => Int(x, what)).ToArray() : throw Bad($"{what} is {TorchCheckpoint.Describe(o)}, not a tuple");

    static object Long1(byte[] b)
    {
        if (b.Length == 0) return 0L;
        var v = new BigInteger(b, isUnsigned: false, isBigEndian: false);
        return v >= long.MinValue && v <= long.MaxValue ? (object)(long)v : v;
    }

    // ------------------------------------------------------------ stack and bytes

    void Push(object? o) => _stack.Add(o);

    object? Pop()
    {
        if (_stack.Count == 0) throw Bad("stack underflow");
        var o = _stack[^1];
        if (ReferenceEquals(o, Mark)) throw Bad("unexpected MARK");
        _stack.RemoveAt(_stack.Count - 1);
        return o;
    }

    object? Peek()
    {
        if (_stack.Count == 0 || ReferenceEquals(_stack[^1], Mark)) throw Bad("stack underflow");
        return _stack[^1];
    }

    List<object?> PopMark()
    {
        int m = _stack.FindLastIndex(o => ReferenceEquals(o, Mark));
        if (m < 0) throw Bad("no MARK on the stack");
        var items = _stack.GetRange(m + 1, _stack.Count - m - 1);
        _stack.RemoveRange(m, _stack.Count - m);
        return items;
    }

    object? Get(long i) => _memo.TryGetValue(i, out var o) ? o : throw Bad($"memo key {i} is not defined");

    byte U8() => _pos < data.Length ? data[_pos++] : throw Bad("truncated pickle (no STOP)");

    uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4));

    ReadOnlySpan<byte> Span(long n)
    {
        if (n < 0 || _pos + n > data.Length) throw Bad($"truncated pickle (need {n} bytes, {data.Length - _pos} left)");
        var s = data.AsSpan(_pos, (int)n);
        _pos += (int)n;
        return s;
    }

    byte[] Bytes(long n) => Span(n).ToArray();

    string Str(long n)
    {
        try { return new UTF8Encoding(false, true).GetString(Span(n)); }
        catch (DecoderFallbackException) { throw Bad("invalid UTF-8 string"); }
    }

    string Line()
    {
        int end = Array.IndexOf(data, (byte)'\n', _pos);
        if (end < 0) throw Bad("truncated GLOBAL");
        var s = Encoding.ASCII.GetString(data, _pos, end - _pos);
        _pos = end + 1;
        return s;
    }
}
