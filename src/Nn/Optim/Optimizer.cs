using FashionViL.Tensors;

namespace FashionViL.Nn.Optim;

/// <summary>Hyper-parameters of one group as saved in an optimizer state dict.</summary>
public sealed record GroupState(string Name, IReadOnlyList<string> Names, double BaseLr, double Lr, double WeightDecay, double LrMultiplier);

/// <summary>Per-parameter state: the number of steps taken and the named buffers (exp_avg, exp_avg_sq or momentum_buffer).</summary>
public sealed record ParamState(int Step, IReadOnlyDictionary<string, Tensor> Buffers);

/// <summary>An optimizer state dict: group hyper-parameters and per-parameter state keyed by parameter name (copies).</summary>
public sealed record OptimizerState(IReadOnlyList<GroupState> Groups, IReadOnlyDictionary<string, ParamState> State);

/// <summary>Common base: groups, per-parameter state keyed by name, ZeroGrad, StateDict/LoadStateDict.</summary>
public abstract class Optimizer : IDisposable
{
    private sealed class Slot
    {
        public int Step;
        public readonly Dictionary<string, Tensor> Buffers = new();
    }

    private readonly Dictionary<string, Slot> _state = new();
    public IReadOnlyList<ParamGroup> Groups { get; }
    protected abstract string Kind { get; }

    protected Optimizer(IEnumerable<ParamGroup> groups)
    {
        Groups = groups.ToArray();
        var seen = new HashSet<string>();
        foreach (var g in Groups)
            foreach (var n in g.Names)
                if (!seen.Add(n)) throw new ArgumentException($"{Kind}: parameter '{n}' is in more than one group");
    }

    /// <summary>One parameter's share of a <see cref="Step"/>: its group, the parameter, its gradient (contiguous), the step
    /// being taken (1 for the first) and its state buffers.</summary>
    protected readonly record struct PendingUpdate(ParamGroup Group, Tensor Param, Tensor Grad, int Step, Dictionary<string, Tensor> Buffers);

    /// <summary>
    /// One update of every parameter that has a gradient; parameters without one are skipped. Every gradient's shape is
    /// checked before any parameter changes; then all updates go to <see cref="UpdateAll"/> at once (AdamW: one
    /// multi-tensor backend call per device).
    /// </summary>
    public void Step()
    {
        foreach (var g in Groups)
            for (int i = 0; i < g.Params.Count; i++)
                if (g.Params[i].Grad is { } grad && !grad.Sizes.SequenceEqual(g.Params[i].Sizes))
                    throw new ArgumentException($"{Kind}: gradient {grad.ShapeString} of '{g.Names[i]}' does not match param {g.Params[i].ShapeString}");
        var pending = new List<PendingUpdate>();
        try
        {
            foreach (var g in Groups)
                for (int i = 0; i < g.Params.Count; i++)
                {
                    var p = g.Params[i];
                    if (p.Grad is not { } grad) continue;
                    if (!_state.TryGetValue(g.Names[i], out var slot)) _state[g.Names[i]] = slot = new Slot();
                    slot.Step++;
                    pending.Add(new PendingUpdate(g, p, grad.ContiguousRaw(), slot.Step, slot.Buffers));
                }
            UpdateAll(pending);
        }
        finally
        {
            foreach (var u in pending) u.Grad.Dispose();
        }
    }

    /// <summary>Updates one parameter in place; <paramref name="step"/> counts this update (1 for the first).</summary>
    protected abstract void Update(ParamGroup group, Tensor param, Tensor grad, int step, Dictionary<string, Tensor> buffers);

    /// <summary>Applies one step's updates (in group order); by default one <see cref="Update"/> per parameter.</summary>
    protected virtual void UpdateAll(IReadOnlyList<PendingUpdate> updates)
    {
        foreach (var u in updates) Update(u.Group, u.Param, u.Grad, u.Step, u.Buffers);
    }

    /// <summary>Sets every parameter's Grad to null (frees a backward-owned buffer).</summary>
    public void ZeroGrad()
    {
        foreach (var g in Groups) foreach (var p in g.Params) p.Grad = null;
    }

    /// <summary>Sets each group's lr to its base lr × factor.</summary>
    public void SetLrFactor(double factor)
    {
        foreach (var g in Groups) g.Lr = g.BaseLr * factor;
    }

    /// <summary>A deep copy of the optimizer state.</summary>
    public OptimizerState StateDict()
    {
        var groups = Groups.Select(g => new GroupState(g.Name, g.Names.ToArray(), g.BaseLr, g.Lr, g.WeightDecay, g.LrMultiplier)).ToArray();
        var state = new Dictionary<string, ParamState>();
        foreach (var (name, slot) in _state)
            state[name] = new ParamState(slot.Step, slot.Buffers.ToDictionary(kv => kv.Key, kv => kv.Value.To(kv.Value.DType)));
        return new OptimizerState(groups, state);
    }

    /// <summary>Restores state saved by <see cref="StateDict"/> (copies it). Groups must match by name and parameter names.</summary>
    public void LoadStateDict(OptimizerState sd)
    {
        if (sd.Groups.Count != Groups.Count)
            throw new ArgumentException($"{Kind}: state dict has {sd.Groups.Count} groups, optimizer has {Groups.Count}");
        var shapes = new Dictionary<string, Tensor>();
        for (int i = 0; i < Groups.Count; i++)
        {
            var (g, s) = (Groups[i], sd.Groups[i]);
            if (g.Name != s.Name || !g.Names.SequenceEqual(s.Names))
                throw new ArgumentException($"{Kind}: group {i} is '{g.Name}' with {g.Names.Count} params, state dict has '{s.Name}' with {s.Names.Count} params (names must match)");
            for (int j = 0; j < g.Names.Count; j++) shapes[g.Names[j]] = g.Params[j];
        }
        foreach (var (name, st) in sd.State)
        {
            if (!shapes.TryGetValue(name, out var p)) throw new ArgumentException($"{Kind}: state dict has state for unknown parameter '{name}'");
            foreach (var (bn, b) in st.Buffers)
                if (!b.Sizes.SequenceEqual(p.Sizes) || b.DType != p.DType)
                    throw new ArgumentException($"{Kind}: state '{name}.{bn}' is {b.ShapeString} {b.DType}, param is {p.ShapeString} {p.DType}");
        }
        for (int i = 0; i < Groups.Count; i++)
        {
            Groups[i].BaseLr = sd.Groups[i].BaseLr;
            Groups[i].Lr = sd.Groups[i].Lr;
            Groups[i].WeightDecay = sd.Groups[i].WeightDecay;
        }
        ClearState();
        foreach (var (name, st) in sd.State)
        {
            var slot = new Slot { Step = st.Step };
            foreach (var (bn, b) in st.Buffers) slot.Buffers[bn] = b.To(b.DType, shapes[name].Device).Persist();
            _state[name] = slot;
        }
    }

    /// <summary>The number of steps taken for a parameter (0 if none).</summary>
    public int StepCount(string name) => _state.TryGetValue(name, out var s) ? s.Step : 0;

    private void ClearState()
    {
        foreach (var s in _state.Values) foreach (var b in s.Buffers.Values) b.Dispose();
        _state.Clear();
    }

    public void Dispose()
    {
        ClearState();
        GC.SuppressFinalize(this);
    }
}

/// <summary>transformers-3.x AdamW (spec §6): bias-corrected step size, decoupled weight decay after the Adam update.</summary>
public sealed class AdamW(IEnumerable<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, bool correctBias = true)
    : Optimizer(groups)
{
    public double Beta1 { get; } = beta1;
    public double Beta2 { get; } = beta2;
    public double Eps { get; } = eps;
    public bool CorrectBias { get; } = correctBias;
    protected override string Kind => "adamw";

    protected override void Update(ParamGroup group, Tensor param, Tensor grad, int step, Dictionary<string, Tensor> buffers)
    {
        var (m, v) = State(param, buffers);
        Backends.Get(param.Device).AdamWStep(param, grad, m, v, Params(group, step));
    }

    /// <summary>Every parameter of the step in one multi-tensor call per device (<see cref="IBackend.AdamWStepMany"/>): a
    /// handful of kernel launches instead of one per parameter, bitwise the same result.</summary>
    protected override void UpdateAll(IReadOnlyList<PendingUpdate> updates)
    {
        var byDevice = new Dictionary<Device, List<AdamWItem>>();
        foreach (var u in updates)
        {
            var (m, v) = State(u.Param, u.Buffers);
            if (!byDevice.TryGetValue(u.Param.Device, out var items)) byDevice[u.Param.Device] = items = [];
            items.Add(new AdamWItem(u.Param, u.Grad, m, v, Params(u.Group, u.Step)));
        }
        foreach (var (device, items) in byDevice) Backends.Get(device).AdamWStepMany(items);
    }

    private static (Tensor M, Tensor V) State(Tensor param, Dictionary<string, Tensor> buffers)
    {
        if (!buffers.TryGetValue("exp_avg", out var m)) buffers["exp_avg"] = m = Tensor.ZerosLike(param).Persist();
        if (!buffers.TryGetValue("exp_avg_sq", out var v)) buffers["exp_avg_sq"] = v = Tensor.ZerosLike(param).Persist();
        return (m, v);
    }

    private AdamWParams Params(ParamGroup group, int step) => new(group.Lr, Beta1, Beta2, Eps, group.WeightDecay, step, CorrectBias);
}

/// <summary>SGD with momentum, dampening, Nesterov and (coupled) weight decay, as torch.optim.SGD.</summary>
public sealed class SGD(IEnumerable<ParamGroup> groups, double momentum = 0, double dampening = 0, bool nesterov = false) : Optimizer(groups)
{
    public double Momentum { get; } = momentum;
    public double Dampening { get; } = dampening;
    public bool Nesterov { get; } = nesterov;
    protected override string Kind => "sgd";

    protected override void Update(ParamGroup group, Tensor param, Tensor grad, int step, Dictionary<string, Tensor> buffers)
    {
        Tensor? buf = null;
        bool first = false;
        if (Momentum != 0 && !buffers.TryGetValue("momentum_buffer", out buf))
        {
            buffers["momentum_buffer"] = buf = Tensor.ZerosLike(param).Persist();
            first = true;
        }
        Backends.Get(param.Device).SgdStep(param, grad, buf, new SgdParams(group.Lr, Momentum, Dampening, group.WeightDecay, Nesterov), first);
    }
}
