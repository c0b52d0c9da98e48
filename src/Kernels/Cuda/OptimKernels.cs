using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cuda;

/// <summary>One tensor of a multi-tensor AdamW launch: its four flat buffers, its length, the groups of the launch that work
/// on it (<see cref="FirstGroup"/> up to <see cref="FirstGroup"/> + <see cref="Groups"/>) and its scalars.</summary>
public struct AdamWSlot
{
    public ArrayView<float> P, G, M, V;
    public int N, FirstGroup, Groups;
    public AdamWScalars H;
}

/// <summary>
/// The kernel parameter of a multi-tensor AdamW launch: <see cref="OptimKernels.Slots"/> slots passed by value (ILGPU maps the
/// views inside a struct parameter; a CUDA kernel parameter holds at most 4 KiB, and 32 slots take about 3.6 KiB). Slots are
/// named fields rather than an array so that the kernel picks one with compares and selects, never an indexed (local-memory) copy.
/// Unused slots have <see cref="AdamWSlot.FirstGroup"/> = int.MaxValue.
/// </summary>
public struct AdamWBatch
{
    public AdamWSlot S00;
    public AdamWSlot S01;
    public AdamWSlot S02;
    public AdamWSlot S03;
    public AdamWSlot S04;
    public AdamWSlot S05;
    public AdamWSlot S06;
    public AdamWSlot S07;
    public AdamWSlot S08;
    public AdamWSlot S09;
    public AdamWSlot S10;
    public AdamWSlot S11;
    public AdamWSlot S12;
    public AdamWSlot S13;
    public AdamWSlot S14;
    public AdamWSlot S15;
    public AdamWSlot S16;
    public AdamWSlot S17;
    public AdamWSlot S18;
    public AdamWSlot S19;
    public AdamWSlot S20;
    public AdamWSlot S21;
    public AdamWSlot S22;
    public AdamWSlot S23;
    public AdamWSlot S24;
    public AdamWSlot S25;
    public AdamWSlot S26;
    public AdamWSlot S27;
    public AdamWSlot S28;
    public AdamWSlot S29;
    public AdamWSlot S30;
    public AdamWSlot S31;

    public readonly AdamWSlot Get(int k) => k switch
    {
        0 => S00,
        1 => S01,
        2 => S02,
        3 => S03,
        4 => S04,
        5 => S05,
        6 => S06,
        7 => S07,
        8 => S08,
        9 => S09,
        10 => S10,
        11 => S11,
        12 => S12,
        13 => S13,
        14 => S14,
        15 => S15,
        16 => S16,
        17 => S17,
        18 => S18,
        19 => S19,
        20 => S20,
        21 => S21,
        22 => S22,
        23 => S23,
        24 => S24,
        25 => S25,
        26 => S26,
        27 => S27,
        28 => S28,
        29 => S29,
        30 => S30,
        _ => S31,
    };

    public void Set(int k, AdamWSlot s)
    {
        switch (k)
        {
            case 0: S00 = s; break;
            case 1: S01 = s; break;
            case 2: S02 = s; break;
            case 3: S03 = s; break;
            case 4: S04 = s; break;
            case 5: S05 = s; break;
            case 6: S06 = s; break;
            case 7: S07 = s; break;
            case 8: S08 = s; break;
            case 9: S09 = s; break;
            case 10: S10 = s; break;
            case 11: S11 = s; break;
            case 12: S12 = s; break;
            case 13: S13 = s; break;
            case 14: S14 = s; break;
            case 15: S15 = s; break;
            case 16: S16 = s; break;
            case 17: S17 = s; break;
            case 18: S18 = s; break;
            case 19: S19 = s; break;
            case 20: S20 = s; break;
            case 21: S21 = s; break;
            case 22: S22 = s; break;
            case 23: S23 = s; break;
            case 24: S24 = s; break;
            case 25: S25 = s; break;
            case 26: S26 = s; break;
            case 27: S27 = s; break;
            case 28: S28 = s; break;
            case 29: S29 = s; break;
            case 30: S30 = s; break;
            case 31: S31 = s; break;
            default: throw new ArgumentOutOfRangeException(nameof(k), $"adamw (multi-tensor): slot {k} of {OptimKernels.Slots}");
        }
    }
}

/// <summary>One launch of <see cref="OptimKernels.Plan"/>: the items it takes (indices into the sizes given), each one's first
/// group and group count, and the launch's grid (the sum of the counts).</summary>
public sealed record AdamWLaunchPlan(int[] Items, int[] FirstGroups, int[] Groups, int TotalGroups);

/// <summary>One tensor of <see cref="OptimKernels.AdamWStepMany"/>: flat param/grad/state buffers of n elements and the step's hyper-parameters.</summary>
public readonly record struct AdamWBuffers(ArrayView<float> Param, ArrayView<float> Grad, ArrayView<float> ExpAvg, ArrayView<float> ExpAvgSq, int N, AdamWParams Hp);

/// <summary>
/// Multi-tensor AdamW: up to <see cref="Slots"/> tensors per launch, each with its own hyper-parameters. Each tensor gets
/// the groups the single-tensor kernel would give it (one per group-size elements, capped at 8 per multiprocessor), laid
/// end to end in one grid: a 23 M-float embedding still spans the whole device while biases and norms take a group or two
/// beside it. Every element goes through exactly the operations of <see cref="RowKernels.AdamWKernel"/>, in the same order,
/// so the result is bitwise that of one launch per tensor.
/// </summary>
internal static class OptimKernels
{
    /// <summary>Tensors per launch (slots of <see cref="AdamWBatch"/>).</summary>
    public const int Slots = 32;

    /// <summary>The multi-tensor AdamW kernel: each group finds its slot (the last whose first group it has reached), then
    /// runs a grid-stride loop over that tensor with the slot's groups.</summary>
    internal static void AdamWManyKernel(AdamWBatch b)
    {
        int g = Grid.IdxX;
        int k = 0;
        if (g >= b.S01.FirstGroup) k = 1;
        if (g >= b.S02.FirstGroup) k = 2;
        if (g >= b.S03.FirstGroup) k = 3;
        if (g >= b.S04.FirstGroup) k = 4;
        if (g >= b.S05.FirstGroup) k = 5;
        if (g >= b.S06.FirstGroup) k = 6;
        if (g >= b.S07.FirstGroup) k = 7;
        if (g >= b.S08.FirstGroup) k = 8;
        if (g >= b.S09.FirstGroup) k = 9;
        if (g >= b.S10.FirstGroup) k = 10;
        if (g >= b.S11.FirstGroup) k = 11;
        if (g >= b.S12.FirstGroup) k = 12;
        if (g >= b.S13.FirstGroup) k = 13;
        if (g >= b.S14.FirstGroup) k = 14;
        if (g >= b.S15.FirstGroup) k = 15;
        if (g >= b.S16.FirstGroup) k = 16;
        if (g >= b.S17.FirstGroup) k = 17;
        if (g >= b.S18.FirstGroup) k = 18;
        if (g >= b.S19.FirstGroup) k = 19;
        if (g >= b.S20.FirstGroup) k = 20;
        if (g >= b.S21.FirstGroup) k = 21;
        if (g >= b.S22.FirstGroup) k = 22;
        if (g >= b.S23.FirstGroup) k = 23;
        if (g >= b.S24.FirstGroup) k = 24;
        if (g >= b.S25.FirstGroup) k = 25;
        if (g >= b.S26.FirstGroup) k = 26;
        if (g >= b.S27.FirstGroup) k = 27;
        if (g >= b.S28.FirstGroup) k = 28;
        if (g >= b.S29.FirstGroup) k = 29;
        if (g >= b.S30.FirstGroup) k = 30;
        if (g >= b.S31.FirstGroup) k = 31;
        var s = b.Get(k);
        var h = s.H;
        for (int i = (g - s.FirstGroup) * Group.DimX + Group.IdxX; i < s.N; i += s.Groups * Group.DimX)
        {
            float gr = s.G[i];
            float m = s.M[i] * h.Beta1 + gr * h.OneMinusBeta1;
            float v = s.V[i] * h.Beta2 + gr * gr * h.OneMinusBeta2;
            s.M[i] = m; s.V[i] = v;
            float denom = MathF.Sqrt(v) + h.Eps;
            float w = s.P[i] + h.NegStep * (m / denom);
            if (h.Decay != 0) w += w * h.NegDecay;
            s.P[i] = w;
        }
    }

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, AdamWBatch>? AdamWMany;
    }

    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    /// <summary>Groups a tensor of n elements gets: what <c>RowKernels</c>' flat launches give it (one per gs elements, at
    /// least one, at most <paramref name="cap"/>).</summary>
    public static int GroupsFor(long n, int gs, int cap) => (int)Math.Clamp((n + gs - 1) / gs, 1, Math.Max(1, cap));

    /// <summary>The group cap of one tensor on <paramref name="acc"/>: 8 groups per multiprocessor, as the flat launches.</summary>
    public static int GroupCap(Accelerator acc) => Math.Max(1, acc.NumMultiprocessors * 8);

    /// <summary>
    /// How tensors of the given sizes are packed: in order, empty ones skipped, <see cref="Slots"/> per launch; within a
    /// launch each tensor's groups (<see cref="GroupsFor"/>) follow the previous tensor's.
    /// </summary>
    public static List<AdamWLaunchPlan> Plan(ReadOnlySpan<int> sizes, int gs, int cap)
    {
        var plans = new List<AdamWLaunchPlan>();
        var items = new List<int>(); var first = new List<int>(); var groups = new List<int>();
        int total = 0;
        for (int i = 0; i < sizes.Length; i++)
        {
            if (sizes[i] == 0) continue;
            int ng = GroupsFor(sizes[i], gs, cap);
            items.Add(i); first.Add(total); groups.Add(ng);
            total += ng;
            if (items.Count == Slots) Flush();
        }
        if (items.Count > 0) Flush();
        return plans;

        void Flush()
        {
            plans.Add(new AdamWLaunchPlan([.. items], [.. first], [.. groups], total));
            items.Clear(); first.Clear(); groups.Clear();
            total = 0;
        }
    }

    /// <summary>
    /// One AdamW step (transformers 3.x) of every tensor in <paramref name="items"/> in the launches <see cref="Plan"/>
    /// gives (⌈non-empty count / <see cref="Slots"/>⌉). Every item is validated before anything is launched. Returns the
    /// number of launches.
    /// </summary>
    public static int AdamWStepMany(Accelerator acc, AcceleratorStream? stream, ReadOnlySpan<AdamWBuffers> items, int groupSize = 0)
    {
        const string op = "adamw (multi-tensor, cuda)";
        var sizes = new int[items.Length];
        for (int i = 0; i < items.Length; i++)
        {
            var it = items[i];
            if (it.N < 0) throw new ArgumentException($"{op}: item {i}: negative length {it.N}");
            sizes[i] = it.N;
            if (it.N == 0) continue;
            if (it.Hp.Step < 1) throw new ArgumentException($"{op}: item {i}: step must be ≥ 1 (the step being taken), got {it.Hp.Step}");
            foreach (var (v, name) in new[] { (it.Param, "param"), (it.Grad, "grad"), (it.ExpAvg, "exp_avg"), (it.ExpAvgSq, "exp_avg_sq") })
                if (v.Length < it.N) throw new ArgumentException($"{op}: item {i}: {name} has {v.Length} elements, needs {it.N}");
        }
        int gs = groupSize == 0 ? BlockReduce.ClampGroup(acc, 256) : BlockReduce.CheckGroup(acc, op, groupSize);
        var plans = Plan(sizes, gs, GroupCap(acc));
        if (plans.Count == 0) return 0;
        var kernel = Cache.GetValue(acc, _ => new Loaded()).AdamWMany ??= acc.LoadKernel<AdamWBatch>(AdamWManyKernel);
        var s = stream ?? acc.DefaultStream;
        foreach (var plan in plans)
        {
            var batch = Empty();
            for (int k = 0; k < plan.Items.Length; k++)
            {
                var it = items[plan.Items[k]];
                batch.Set(k, new AdamWSlot
                {
                    P = it.Param, G = it.Grad, M = it.ExpAvg, V = it.ExpAvgSq, N = it.N,
                    FirstGroup = plan.FirstGroups[k], Groups = plan.Groups[k], H = AdamWScalars.From(it.Hp),
                });
            }
            CudaRuntime.CountLaunch();
            kernel(s, new KernelConfig(plan.TotalGroups, gs), batch);
        }
        return plans.Count;
    }

    private static AdamWBatch Empty()
    {
        var b = new AdamWBatch();
        for (int k = 0; k < Slots; k++) b.Set(k, new AdamWSlot { FirstGroup = int.MaxValue });
        return b;
    }
}
