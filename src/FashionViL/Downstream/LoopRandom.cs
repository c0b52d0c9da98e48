namespace FashionViL.Downstream;

/// <summary>
/// Routes a model's random draws (dropout masks, anything else its modules draw in the forward) through the fine-tuning
/// loop's generator. A task's modules hold the generator the model was built with; before the forward that generator takes
/// the loop generator's state, afterwards the loop generator takes the advanced state back. The loop checkpoints its
/// generator, so a resumed run draws exactly the masks of a straight run.
/// </summary>
public static class LoopRandom
{
    /// <summary>Runs <paramref name="forward"/> with <paramref name="model"/>'s state taken from <paramref name="loop"/>, then hands
    /// the state back to <paramref name="loop"/> (also when the forward throws). A null <paramref name="model"/> (a model without
    /// a generator of its own) just runs the forward.</summary>
    public static T Run<T>(Generator? model, Generator loop, Func<T> forward)
    {
        ArgumentNullException.ThrowIfNull(loop);
        if (model is null || ReferenceEquals(model, loop)) return forward();
        model.SetState(loop.Seed, loop.Offset);
        try { return forward(); }
        finally { loop.SetState(model.Seed, model.Offset); }
    }
}
