using System.Runtime.ExceptionServices;
using FashionViL.Data.Images;

namespace FashionViL.Data.Loading;

/// <summary>Where a loader stands: the epoch and the index (within that epoch) of the next batch it will deliver.</summary>
public readonly record struct LoaderPosition(int Epoch, int Batch)
{
    public override string ToString() => $"epoch {Epoch}, batch {Batch}";
}

/// <summary>What to do when a sample's file is bad (an <see cref="ImageLoadException"/>: missing, corrupt, too large).</summary>
public enum BadSamplePolicy
{
    /// <summary>The exception (naming the file) reaches the consumer when it asks for that batch.</summary>
    Throw,
    /// <summary>The sample is left out of its batch (the batch is smaller); counted in <see cref="PrefetchLoader{TBatch}.SkippedCount"/>.</summary>
    Skip,
    /// <summary>The sample is replaced by the next sample of the epoch order that loads (wrapping around); counted.</summary>
    Replace,
}

public sealed record PrefetchLoaderOptions
{
    public required int BatchSize { get; init; }
    /// <summary>Shuffle each epoch with a permutation drawn from (Seed, epoch); otherwise dataset order.</summary>
    public bool Shuffle { get; init; } = true;
    /// <summary>Drop the last incomplete batch of each epoch.</summary>
    public bool DropLast { get; init; }
    /// <summary>Worker threads building batches (≥ 1). Results do not depend on it.</summary>
    public int Workers { get; init; } = 2;
    /// <summary>Most batches built ahead of the consumer (the bounded queue's capacity, ≥ 1).</summary>
    public int Prefetch { get; init; } = 4;
    public long Seed { get; init; }
    public BadSamplePolicy OnBadSample { get; init; } = BadSamplePolicy.Throw;
    /// <summary>How many following samples <see cref="BadSamplePolicy.Replace"/> tries before giving up.</summary>
    public int MaxReplacementTries { get; init; } = 64;
    /// <summary>A hint passed to the builder (<see cref="BatchContext.PinMemory"/>): allocate the batch in page-locked
    /// memory for a fast host→GPU copy. The loader itself only carries the flag.</summary>
    public bool PinMemory { get; init; }
}

/// <summary>What a batch builder gets: which samples, and a way to load them that applies the bad-sample policy.</summary>
public sealed class BatchContext
{
    readonly int[] _order;
    readonly int _start;
    readonly PrefetchLoaderOptions _options;
    internal readonly List<string> Skipped = [];

    internal BatchContext(int epoch, int batch, int[] order, int start, int count, PrefetchLoaderOptions options, CancellationToken ct)
    {
        Epoch = epoch; BatchIndex = batch; _order = order; _start = start; _options = options; Cancellation = ct;
        Indices = order.AsSpan(start, count).ToArray();
    }

    public int Epoch { get; }
    public int BatchIndex { get; }
    /// <summary>The dataset indices of this batch, in order.</summary>
    public IReadOnlyList<int> Indices { get; }
    public bool PinMemory => _options.PinMemory;
    public CancellationToken Cancellation { get; }

    /// <summary>The random stream of dataset sample <paramref name="index"/> in this epoch (independent per purpose <paramref name="stream"/>).</summary>
    public DataRandom RandomFor(int index, long stream = 0) => DataRandom.ForSample(_options.Seed, Epoch, index, stream);

    /// <summary>
    /// Loads every sample of the batch with <paramref name="load"/>(dataset index, its random stream). An
    /// <see cref="ImageLoadException"/> is thrown, or the sample skipped or replaced, as the options say.
    /// </summary>
    public List<T> LoadSamples<T>(Func<int, DataRandom, T> load)
    {
        var result = new List<T>(Indices.Count);
        for (int k = 0; k < Indices.Count; k++)
        {
            Cancellation.ThrowIfCancellationRequested();
            int pos = _start + k;
            int idx = _order[pos];
            try { result.Add(load(idx, RandomFor(idx))); continue; }
            catch (ImageLoadException e) when (_options.OnBadSample != BadSamplePolicy.Throw) { Skipped.Add(e.Path); }
            if (_options.OnBadSample == BadSamplePolicy.Skip) continue;
            bool done = false;
            for (int t = 1; t <= _options.MaxReplacementTries && t < _order.Length && !done; t++)
            {
                int alt = _order[(pos + t) % _order.Length];
                try { result.Add(load(alt, RandomFor(alt))); done = true; }
                catch (ImageLoadException e) { Skipped.Add(e.Path); }
            }
            if (!done)
                throw new ImageLoadException(Skipped[^1], $"sample {idx} and the {_options.MaxReplacementTries} samples after it in epoch {Epoch} all failed to load; giving up");
        }
        return result;
    }
}

/// <summary>
/// A multi-threaded prefetching batch loader. Each epoch's sample order is a permutation drawn from (seed, epoch); worker
/// threads build batches from index lists with a user delegate; at most <see cref="PrefetchLoaderOptions.Prefetch"/> batches
/// wait in a bounded queue; batches are delivered in order whatever the thread count, so the output depends only on
/// (seed, position). <see cref="Position"/> can be saved and passed to <see cref="Seek"/> to resume exactly.
/// Batches that are built but never delivered are disposed when they implement <see cref="IDisposable"/>.
/// </summary>
public sealed class PrefetchLoader<TBatch> : IDisposable
{
    readonly int _count;
    readonly Func<BatchContext, TBatch> _build;
    readonly List<string> _skipped = [];
    Session? _session;
    bool _disposed;

    public PrefetchLoader(int sampleCount, Func<BatchContext, TBatch> build, PrefetchLoaderOptions options, LoaderPosition start = default)
    {
        if (sampleCount <= 0) throw new ArgumentOutOfRangeException(nameof(sampleCount), $"PrefetchLoader: dataset has {sampleCount} samples");
        if (options.BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(options), $"PrefetchLoader: batch size {options.BatchSize} must be positive");
        if (options.Workers < 1 || options.Prefetch < 1) throw new ArgumentOutOfRangeException(nameof(options), $"PrefetchLoader: workers {options.Workers} and prefetch {options.Prefetch} must be ≥ 1");
        _count = sampleCount; _build = build; Options = options;
        BatchesPerEpoch = options.DropLast ? sampleCount / options.BatchSize : (sampleCount + options.BatchSize - 1) / options.BatchSize;
        if (BatchesPerEpoch == 0)
            throw new ArgumentException($"PrefetchLoader: {sampleCount} samples make no full batch of {options.BatchSize} with drop_last");
        Seek(start);
    }

    public PrefetchLoaderOptions Options { get; }
    public int SampleCount => _count;
    public int BatchesPerEpoch { get; }
    /// <summary>The position of the next batch <see cref="Next"/> will return.</summary>
    public LoaderPosition Position { get; private set; }
    /// <summary>Bad samples skipped or replaced in the batches delivered so far.</summary>
    public int SkippedCount => _skipped.Count;
    public IReadOnlyList<string> SkippedPaths => _skipped;

    /// <summary>The sample order of an epoch (a permutation of 0..n−1 from (seed, epoch), or the identity without shuffling).</summary>
    public int[] EpochOrder(int epoch)
    {
        if (!Options.Shuffle) return Enumerable.Range(0, _count).ToArray();
        return DataRandom.ForSample(Options.Seed, epoch, -1, 0x5348554646L).Permutation(_count);
    }

    /// <summary>Restart from <paramref name="position"/>; batches prefetched for the old position are discarded.</summary>
    public void Seek(LoaderPosition position)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (position.Epoch < 0 || position.Batch < 0 || position.Batch > BatchesPerEpoch)
            throw new ArgumentOutOfRangeException(nameof(position), $"PrefetchLoader: position {position} is outside 0..{BatchesPerEpoch} batches per epoch");
        if (position.Batch == BatchesPerEpoch) position = new LoaderPosition(position.Epoch + 1, 0);
        _session?.Dispose();
        _session = null;
        Position = position;
    }

    /// <summary>The next batch; moves on to the next epoch after the last batch of one. Exceptions from the builder
    /// (e.g. an <see cref="ImageLoadException"/> naming the file) are rethrown here, and the position stays at that batch.</summary>
    public TBatch Next()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _session ??= new Session(this, (long)Position.Epoch * BatchesPerEpoch + Position.Batch);
        var (batch, skipped) = _session.Take((long)Position.Epoch * BatchesPerEpoch + Position.Batch);
        _skipped.AddRange(skipped);
        int b = Position.Batch + 1;
        Position = b == BatchesPerEpoch ? new LoaderPosition(Position.Epoch + 1, 0) : new LoaderPosition(Position.Epoch, b);
        return batch;
    }

    /// <summary>The remaining batches of the current epoch (all of them when at its start).</summary>
    public IEnumerable<TBatch> RestOfEpoch()
    {
        int epoch = Position.Epoch;
        while (Position.Epoch == epoch) yield return Next();
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _session?.Dispose();
        _session = null;
    }

    /// <summary>The worker threads: they build global batch numbers (epoch·BatchesPerEpoch + batch) from a start
    /// onwards, across epoch boundaries, at most Prefetch ahead of the consumer.</summary>
    sealed class Session : IDisposable
    {
        readonly PrefetchLoader<TBatch> _loader;
        readonly CancellationTokenSource _cts = new();
        readonly SemaphoreSlim _capacity;
        readonly Thread[] _threads;
        readonly Dictionary<long, (TBatch? Batch, List<string>? Skipped, ExceptionDispatchInfo? Error)> _ready = [];
        readonly Dictionary<int, int[]> _orders = [];
        readonly object _lock = new();
        long _nextToBuild;

        public Session(PrefetchLoader<TBatch> loader, long startBatch)
        {
            _loader = loader; _nextToBuild = startBatch;
            _capacity = new SemaphoreSlim(loader.Options.Prefetch);
            _threads = new Thread[loader.Options.Workers];
            for (int i = 0; i < _threads.Length; i++)
            {
                _threads[i] = new Thread(Work) { IsBackground = true, Name = $"PrefetchLoader worker {i}" };
                _threads[i].Start();
            }
        }

        int[] Order(int epoch)
        {
            lock (_orders)
            {
                if (!_orders.TryGetValue(epoch, out var o))
                {
                    o = _loader.EpochOrder(epoch);
                    foreach (var old in _orders.Keys.Where(e => e < epoch - 1).ToList()) _orders.Remove(old);
                    _orders[epoch] = o;
                }
                return o;
            }
        }

        void Work()
        {
            var ct = _cts.Token;
            int bs = _loader.Options.BatchSize, perEpoch = _loader.BatchesPerEpoch;
            while (!ct.IsCancellationRequested)
            {
                try { _capacity.Wait(ct); } catch (OperationCanceledException) { return; }
                long g = Interlocked.Increment(ref _nextToBuild) - 1;
                int epoch = (int)(g / perEpoch), k = (int)(g % perEpoch);
                (TBatch?, List<string>?, ExceptionDispatchInfo?) result;
                try
                {
                    var order = Order(epoch);
                    int start = k * bs, count = Math.Min(bs, order.Length - start);
                    var ctx = new BatchContext(epoch, k, order, start, count, _loader.Options, ct);
                    var batch = _loader._build(ctx);
                    result = (batch, ctx.Skipped, null);
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested) { return; }
                catch (Exception e) { result = (default, null, ExceptionDispatchInfo.Capture(e)); }
                lock (_lock)
                {
                    if (ct.IsCancellationRequested) { (result.Item1 as IDisposable)?.Dispose(); return; }
                    _ready[g] = result;
                    Monitor.PulseAll(_lock);
                }
            }
        }

        public (TBatch Batch, List<string> Skipped) Take(long k)
        {
            (TBatch? Batch, List<string>? Skipped, ExceptionDispatchInfo? Error) r;
            lock (_lock)
            {
                while (!_ready.TryGetValue(k, out r))
                {
                    if (_threads.All(t => !t.IsAlive) && !_ready.ContainsKey(k))
                        throw new InvalidOperationException($"PrefetchLoader: the workers stopped before global batch {k}");
                    Monitor.Wait(_lock, 100);
                }
                if (r.Error is not null) r.Error.Throw(); // leaves the result in place: asking again rethrows
                _ready.Remove(k);
            }
            _capacity.Release();
            return (r.Batch!, r.Skipped!);
        }

        public void Dispose()
        {
            _cts.Cancel();
            foreach (var t in _threads) t.Join();
            lock (_lock)
            {
                foreach (var r in _ready.Values) (r.Batch as IDisposable)?.Dispose();
                _ready.Clear();
            }
            _capacity.Dispose();
            _cts.Dispose();
        }
    }
}
