using FashionViL.Autograd;
using FashionViL.Tensors;

namespace FashionViL.Nn;

/// <summary>What a non-strict <see cref="Module.LoadStateDict"/> found: keys the model has but the dict lacks,
/// keys the dict has but the model lacks, and keys present in both with different shapes.</summary>
public sealed record LoadResult(IReadOnlyList<string> Missing, IReadOnlyList<string> Unexpected,
    IReadOnlyList<(string Key, int[] Expected, int[] Got)> Mismatched)
{
    public bool IsClean => Missing.Count == 0 && Unexpected.Count == 0 && Mismatched.Count == 0;

    public override string ToString()
    {
        var parts = new List<string>();
        if (Missing.Count > 0) parts.Add($"missing keys ({Missing.Count}): {string.Join(", ", Missing)}");
        if (Unexpected.Count > 0) parts.Add($"unexpected keys ({Unexpected.Count}): {string.Join(", ", Unexpected)}");
        if (Mismatched.Count > 0)
            parts.Add($"shape mismatches ({Mismatched.Count}): " + string.Join(", ",
                Mismatched.Select(m => $"{m.Key}: model {Shape.Format(m.Expected)}, checkpoint {Shape.Format(m.Got)}")));
        return parts.Count == 0 ? "clean" : string.Join("; ", parts);
    }
}

/// <summary>
/// A PyTorch-shaped module: parameters, buffers and child modules registered explicitly under names, so the
/// dotted names (<c>layer1.0.conv1.weight</c>, <c>bn1.running_mean</c>) equal PyTorch's and checkpoints load by name.
/// Parameters and buffers are persisted leaves (step scopes never free them); a layer reads them through its
/// slots, so <see cref="To(Device)"/> can swap the tensors while the module objects stay the same.
/// </summary>
public abstract class Module
{
    private readonly List<string> _paramNames = [];
    private readonly Dictionary<string, Tensor?> _params = [];
    private readonly List<string> _bufferNames = [];
    private readonly Dictionary<string, Tensor?> _buffers = [];
    private readonly List<(string Name, Module Module)> _children = [];

    /// <summary>Training mode (true after construction, like PyTorch).</summary>
    public bool IsTraining { get; private set; } = true;

    /// <summary>True after <see cref="Freeze"/>: parameters do not require gradients.</summary>
    public bool IsFrozen { get; private set; }

    /// <summary>Whether a frozen instance ignores <see cref="Train"/> and stays in eval mode (BatchNorm).</summary>
    protected virtual bool StaysEvalWhenFrozen => false;

    /// <summary>Single-input forward; modules with other signatures add their own.</summary>
    public virtual Tensor Forward(Tensor x) => throw new NotSupportedException($"{GetType().Name} has no single-tensor Forward");

    // ------------------------------------------------------------------ registration

    private static void CheckName(string name, string kind)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('.'))
            throw new ArgumentException($"{kind} name '{name}' must be non-empty and contain no '.'");
    }

    private void CheckFree(string name, string kind)
    {
        CheckName(name, kind);
        if (_params.ContainsKey(name) || _buffers.ContainsKey(name) || _children.Any(c => c.Name == name))
            throw new ArgumentException($"{GetType().Name}: '{name}' is already registered");
    }

    /// <summary>Registers a learnable parameter (persisted, RequiresGrad on unless frozen). Null registers an absent one (e.g. no bias).</summary>
    protected Tensor? RegisterParameter(string name, Tensor? value)
    {
        CheckFree(name, "parameter");
        if (value is not null)
        {
            if (!value.DType.IsFloating()) throw new ArgumentException($"parameter '{name}' {value.ShapeString} must be floating point, got {value.DType.Name()}");
            value.Persist();
            value.RequiresGrad = !IsFrozen;
        }
        _paramNames.Add(name);
        _params[name] = value;
        return value;
    }

    /// <summary>Registers a persistent buffer (state dict entry without gradients, e.g. BN running statistics).</summary>
    protected Tensor? RegisterBuffer(string name, Tensor? value)
    {
        CheckFree(name, "buffer");
        value?.Persist();
        _bufferNames.Add(name);
        _buffers[name] = value;
        return value;
    }

    /// <summary>Registers a child module under <paramref name="name"/>.</summary>
    protected T RegisterModule<T>(string name, T module) where T : Module
    {
        CheckFree(name, "module");
        _children.Add((name, module));
        return module;
    }

    /// <summary>The current tensor of a registered parameter (null when registered absent).</summary>
    protected Tensor? Param(string name) => _params.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"{GetType().Name} has no parameter '{name}'");

    /// <summary>The current tensor of a registered buffer.</summary>
    protected Tensor? Buffer(string name) => _buffers.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"{GetType().Name} has no buffer '{name}'");

    // ------------------------------------------------------------------ traversal

    public IEnumerable<(string Name, Module Module)> NamedChildren() => _children;

    public IEnumerable<Module> Children() => _children.Select(c => c.Module);

    /// <summary>This module (name "") and every descendant, depth first, with dotted names.</summary>
    public IEnumerable<(string Name, Module Module)> NamedModules(string prefix = "")
    {
        yield return (prefix, this);
        foreach (var (n, m) in _children)
            foreach (var x in m.NamedModules(Join(prefix, n))) yield return x;
    }

    private static string Join(string prefix, string name) => prefix.Length == 0 ? name : prefix + "." + name;

    public IEnumerable<(string Name, Tensor Tensor)> NamedParameters(string prefix = "")
    {
        foreach (var n in _paramNames)
            if (_params[n] is { } t) yield return (Join(prefix, n), t);
        foreach (var (cn, c) in _children)
            foreach (var x in c.NamedParameters(Join(prefix, cn))) yield return x;
    }

    public IEnumerable<(string Name, Tensor Tensor)> NamedBuffers(string prefix = "")
    {
        foreach (var n in _bufferNames)
            if (_buffers[n] is { } t) yield return (Join(prefix, n), t);
        foreach (var (cn, c) in _children)
            foreach (var x in c.NamedBuffers(Join(prefix, cn))) yield return x;
    }

    public IEnumerable<Tensor> Parameters() => NamedParameters().Select(p => p.Tensor);

    public IEnumerable<Tensor> Buffers() => NamedBuffers().Select(p => p.Tensor);

    // ------------------------------------------------------------------ state dict

    /// <summary>
    /// Names → tensors for every parameter and buffer, in registration order (each module's parameters, then its
    /// buffers, then its children — the tensors themselves, not copies, like PyTorch's <c>state_dict()</c>).
    /// </summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var (n, m) in NamedModules())
        {
            foreach (var pn in m._paramNames) if (m._params[pn] is { } t) d[Join(n, pn)] = t;
            foreach (var bn in m._bufferNames) if (m._buffers[bn] is { } t) d[Join(n, bn)] = t;
        }
        return d;
    }

    /// <summary>
    /// Copies values by name into the existing parameters and buffers (dtype converted, device moved, shape checked).
    /// Strict: any missing, unexpected or mis-shaped key throws one exception listing all of them (with both shapes)
    /// and nothing is copied. Non-strict: loads every key that fits and returns the rest.
    /// </summary>
    public LoadResult LoadStateDict(IReadOnlyDictionary<string, Tensor> dict, bool strict = true)
    {
        var own = StateDict();
        var missing = own.Keys.Where(k => !dict.ContainsKey(k)).ToList();
        var unexpected = dict.Keys.Where(k => !own.ContainsKey(k)).ToList();
        var mismatched = new List<(string, int[], int[])>();
        foreach (var (k, dst) in own)
            if (dict.TryGetValue(k, out var src) && !src.Sizes.SequenceEqual(dst.Sizes))
                mismatched.Add((k, dst.Shape, src.Shape));
        var result = new LoadResult(missing, unexpected, mismatched);
        if (strict && !result.IsClean)
            throw new InvalidOperationException($"load_state_dict for {GetType().Name} failed: {result}");
        var bad = mismatched.Select(m => m.Item1).ToHashSet();
        using (GradMode.NoGrad())
            foreach (var (k, dst) in own)
                if (dict.TryGetValue(k, out var src) && !bad.Contains(k))
                    CopyInto(src, dst);
        return result;
    }

    /// <summary>dst ← src in place (dtype converted, device moved); shapes must match.</summary>
    internal static void CopyInto(Tensor src, Tensor dst)
    {
        if (!src.Sizes.SequenceEqual(dst.Sizes))
            throw new ArgumentException($"copy: source {src.ShapeString} does not match destination {dst.ShapeString}");
        if (src.Device == dst.Device) { Backends.Get(dst.Device).Copy(src, dst); return; }
        using var moved = src.To(dst.DType, dst.Device);
        Backends.Get(dst.Device).Copy(moved, dst);
    }

    // ------------------------------------------------------------------ modes

    /// <summary>Sets training mode on this module and all descendants (a frozen BatchNorm stays in eval mode).</summary>
    public Module Train(bool mode = true)
    {
        foreach (var (_, m) in NamedModules()) m.IsTraining = mode && !(m.IsFrozen && m.StaysEvalWhenFrozen);
        return this;
    }

    public Module Eval() => Train(false);

    /// <summary>Turns RequiresGrad off on every parameter of this subtree; frozen BatchNorms switch to eval mode and stay there.</summary>
    public Module Freeze()
    {
        foreach (var (_, m) in NamedModules())
        {
            m.IsFrozen = true;
            foreach (var n in m._paramNames) if (m._params[n] is { } t) { t.Grad = null; t.RequiresGrad = false; }
            if (m.StaysEvalWhenFrozen) m.IsTraining = false;
        }
        return this;
    }

    /// <summary>Undoes <see cref="Freeze"/> (the mode is left as is until the next <see cref="Train"/>).</summary>
    public Module Unfreeze()
    {
        foreach (var (_, m) in NamedModules())
        {
            m.IsFrozen = false;
            foreach (var n in m._paramNames) if (m._params[n] is { } t) t.RequiresGrad = true;
        }
        return this;
    }

    /// <summary>Drops every parameter's gradient (p.Grad = null frees the buffer backward created).</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters()) p.Grad = null;
    }

    /// <summary>Moves every parameter and buffer to <paramref name="device"/>; the module objects stay the same, the tensors are replaced.</summary>
    public Module To(Device device)
    {
        foreach (var (_, m) in NamedModules())
        {
            Move(m._params, device, true);
            Move(m._buffers, device, false);
        }
        return this;
    }

    private static void Move(Dictionary<string, Tensor?> slots, Device device, bool isParam)
    {
        foreach (var n in slots.Keys.ToList())
        {
            var t = slots[n];
            if (t is null || t.Device == device) continue;
            var moved = t.To(device).Persist();
            if (isParam) moved.RequiresGrad = t.RequiresGrad;
            slots[n] = moved;
            t.Grad = null;
            t.Dispose();
        }
    }
}
