namespace FashionViL.Nn.Optim;

/// <summary>
/// An lr schedule: <see cref="Factor"/>(t) multiplies each group's own base lr for update t (t = number of updates
/// already taken, so the first update uses Factor(0)).
/// </summary>
public abstract class LrSchedule
{
    public abstract double Factor(int step);

    /// <summary>Sets every group's lr to base·Factor(step); call before the optimizer step of update <paramref name="step"/>.</summary>
    public void Apply(Optimizer optimizer, int step) => optimizer.SetLrFactor(Factor(step));

    protected static void CheckStep(int step, string name)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), $"{name}: step must be ≥ 0, got {step}");
    }
}

public sealed class ConstantSchedule : LrSchedule
{
    public override double Factor(int step) { CheckStep(step, "constant"); return 1.0; }
}

/// <summary>
/// Spec §6 (MMF multi_step with warm-up): for t ≤ W, start·(1 − t/W) + t/W; afterwards 0.1^(number of milestones ≤ t).
/// </summary>
public sealed class WarmupMultiStepSchedule : LrSchedule
{
    public int WarmupSteps { get; }
    public double WarmupFactor { get; }
    public IReadOnlyList<int> Milestones { get; }
    public double Gamma { get; }

    public WarmupMultiStepSchedule(int warmupSteps, IEnumerable<int> milestones, double warmupFactor = 0.25, double gamma = 0.1)
    {
        if (warmupSteps < 0) throw new ArgumentException($"warmup multi-step: warm-up steps must be ≥ 0, got {warmupSteps}");
        Milestones = milestones.ToArray();
        for (int i = 1; i < Milestones.Count; i++)
            if (Milestones[i] <= Milestones[i - 1]) throw new ArgumentException($"warmup multi-step: milestones must increase, got [{string.Join(", ", Milestones)}]");
        WarmupSteps = warmupSteps; WarmupFactor = warmupFactor; Gamma = gamma;
    }

    public override double Factor(int step)
    {
        CheckStep(step, "warmup multi-step");
        if (step <= WarmupSteps && WarmupSteps > 0)
        {
            double a = (double)step / WarmupSteps;
            return WarmupFactor * (1 - a) + a;
        }
        int k = Milestones.Count(m => m <= step);
        return Math.Pow(Gamma, k);
    }
}

/// <summary>Linear warm-up from <c>warmupFactor</c> to 1 over W steps, then linear decay to 0 at <c>totalSteps</c>.</summary>
public sealed class LinearSchedule(int warmupSteps, int totalSteps, double warmupFactor = 0.0) : LrSchedule
{
    public override double Factor(int step)
    {
        CheckStep(step, "linear");
        if (step < warmupSteps) { double a = (double)step / warmupSteps; return warmupFactor * (1 - a) + a; }
        if (totalSteps <= warmupSteps) return 0.0;
        return Math.Max(0.0, (double)(totalSteps - step) / (totalSteps - warmupSteps));
    }
}

/// <summary>Linear warm-up from <c>warmupFactor</c> to 1 over W steps, then half-cosine decay to <c>minFactor</c> at <c>totalSteps</c>.</summary>
public sealed class CosineSchedule(int warmupSteps, int totalSteps, double warmupFactor = 0.0, double minFactor = 0.0) : LrSchedule
{
    public override double Factor(int step)
    {
        CheckStep(step, "cosine");
        if (step < warmupSteps) { double a = (double)step / warmupSteps; return warmupFactor * (1 - a) + a; }
        if (totalSteps <= warmupSteps) return minFactor;
        double progress = Math.Min(1.0, (double)(step - warmupSteps) / (totalSteps - warmupSteps));
        return minFactor + (1 - minFactor) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
