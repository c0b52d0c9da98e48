using System.Runtime.ExceptionServices;
using FashionViL.Data.Loading;

namespace FashionViL.Downstream;

/// <summary>
/// One update's training batch for gradient accumulation (<c>training.update_batch_size</c>): the loader's batch of
/// <c>batch_size</c> dataset indices built as consecutive micro-batches of <c>update_batch_size</c> indices each, every one by
/// the task's own <see cref="IFinetuneTask{TBatch}.BuildTrainBatch"/>. Each sample draws from its own stream
/// (seed, epoch, dataset index), so the samples are the ones a single batch of <c>batch_size</c> would hold.
/// </summary>
public sealed class MicroBatches<TBatch> : IDisposable where TBatch : IDisposable
{
    public MicroBatches(IReadOnlyList<TBatch> parts, IReadOnlyList<int> sizes)
    {
        if (parts.Count == 0 || parts.Count != sizes.Count)
            throw new ArgumentException($"micro-batches: {parts.Count} parts with {sizes.Count} sizes (need the same positive number)");
        if (sizes.Any(n => n <= 0)) throw new ArgumentException($"micro-batches: sizes [{string.Join(", ", sizes)}] must be positive");
        Parts = parts; Sizes = sizes; Total = sizes.Sum();
    }

    /// <summary>The micro-batches, in the order of the update's indices.</summary>
    public IReadOnlyList<TBatch> Parts { get; }
    /// <summary>The number of samples of each micro-batch (its weight in the update's mean loss): its dataset indices, less
    /// those skipped under <see cref="BadSamplePolicy.Skip"/>.</summary>
    public IReadOnlyList<int> Sizes { get; }
    /// <summary>The update's number of samples (Σ <see cref="Sizes"/>).</summary>
    public int Total { get; }

    /// <summary>
    /// A loader build function: the batch's indices in consecutive chunks of <paramref name="microBatchSize"/> (the last one
    /// shorter when the batch does not divide), each built by <paramref name="build"/> through a batch context of the same
    /// epoch and batch index over just those indices. With <see cref="BadSamplePolicy.Replace"/> a bad sample is replaced by
    /// a following sample of the update's batch (wrapping around) rather than of the epoch order; samples skipped in the
    /// micro-batches are reported to the loader. With <see cref="BadSamplePolicy.Skip"/> a micro-batch holds only the
    /// samples that loaded and its <see cref="Sizes"/> entry counts those (so the update's loss stays the mean over the
    /// samples present); a micro-batch whose every sample was skipped is left out (its builder's exception, if it threw one,
    /// is rethrown only when the whole update is empty).
    /// </summary>
    public static Func<BatchContext, MicroBatches<TBatch>> Builder(Func<BatchContext, TBatch> build, int microBatchSize, PrefetchLoaderOptions options)
    {
        ArgumentNullException.ThrowIfNull(build);
        if (microBatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(microBatchSize), microBatchSize, "micro-batch size must be positive");
        bool skip = options.OnBadSample == BadSamplePolicy.Skip;
        return ctx =>
        {
            int n = ctx.Indices.Count;
            if (n <= microBatchSize)
            {
                var whole = build(ctx);
                // A lone part is back-propagated as it is (its weight is unused); a builder that returned an empty batch gets 1.
                return new MicroBatches<TBatch>([whole], [skip ? Math.Max(1, n - ctx.Skipped.Count) : n]);
            }
            var indices = ctx.Indices.ToArray();
            var parts = new List<TBatch>();
            var sizes = new List<int>();
            ExceptionDispatchInfo? emptyError = null;
            try
            {
                for (int start = 0; start < n; start += microBatchSize)
                {
                    int count = Math.Min(microBatchSize, n - start);
                    var sub = new BatchContext(ctx.Epoch, ctx.BatchIndex, indices, start, count, options, ctx.Cancellation);
                    TBatch part;
                    try { part = build(sub); }
                    // Under Skip each skipped sample adds exactly one path to sub.Skipped: all of them gone means an empty part.
                    catch (Exception e) when (skip && sub.Skipped.Count >= count) { emptyError ??= ExceptionDispatchInfo.Capture(e); continue; }
                    finally { ctx.Skipped.AddRange(sub.Skipped); }
                    int present = skip ? count - sub.Skipped.Count : count;
                    if (present <= 0) { part.Dispose(); continue; }
                    parts.Add(part);
                    sizes.Add(present);
                }
                if (parts.Count == 0)
                {
                    emptyError?.Throw();
                    throw new InvalidDataException($"micro-batches: batch {ctx.BatchIndex} of epoch {ctx.Epoch}: every sample was skipped");
                }
            }
            catch
            {
                foreach (var p in parts) p.Dispose();
                throw;
            }
            return new MicroBatches<TBatch>(parts, sizes);
        };
    }

    public void Dispose()
    {
        foreach (var p in Parts) p.Dispose();
    }
}
