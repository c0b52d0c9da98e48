using System.Diagnostics;
using FashionViL.Data.Images;
using FashionViL.Data.Loading;

namespace FashionViL.Tests.Data;

/// <summary>PrefetchLoader: order independent of threads, exact resume, bad files, bounded queue, clean shutdown.</summary>
public class LoaderTests
{
    /// <summary>A batch = per sample, its index·1000 + a draw from its own stream (so augmentation randomness is covered too).</summary>
    static long[] Build(BatchContext ctx) =>
        ctx.LoadSamples((i, r) => i * 1000L + r.NextInt(1000)).ToArray();

    static PrefetchLoaderOptions Opts(int workers, bool dropLast = false, int batch = 4) =>
        new() { BatchSize = batch, Workers = workers, Prefetch = 3, Seed = 77, DropLast = dropLast };

    static List<long[]> Take(PrefetchLoader<long[]> l, int n) => Enumerable.Range(0, n).Select(_ => l.Next()).ToList();

    [Test]
    public void OneAndThreeWorkersGiveTheSameBatches()
    {
        using var a = new PrefetchLoader<long[]>(22, Build, Opts(1));
        using var b = new PrefetchLoader<long[]>(22, Build, Opts(3));
        var x = Take(a, 15); var y = Take(b, 15); // 6 batches per epoch: crosses two epoch boundaries
        Assert.That(y, Is.EqualTo(x));
        Assert.That(a.Position, Is.EqualTo(new LoaderPosition(2, 3)));
    }

    [Test]
    public void EachEpochIsAPermutationAndEpochsDiffer()
    {
        using var l = new PrefetchLoader<long[]>(22, Build, Opts(2));
        Assert.That(l.BatchesPerEpoch, Is.EqualTo(6));
        var e0 = l.RestOfEpoch().ToList();
        var e1 = l.RestOfEpoch().ToList();
        Assert.That(e0.Select(b => b.Length), Is.EqualTo(new[] { 4, 4, 4, 4, 4, 2 }));
        var ids0 = e0.SelectMany(b => b).Select(v => (int)(v / 1000)).ToList();
        var ids1 = e1.SelectMany(b => b).Select(v => (int)(v / 1000)).ToList();
        Assert.That(ids0.OrderBy(i => i), Is.EqualTo(Enumerable.Range(0, 22)));
        Assert.That(ids1.OrderBy(i => i), Is.EqualTo(Enumerable.Range(0, 22)));
        Assert.That(ids1, Is.Not.EqualTo(ids0), "a new permutation each epoch");
        Assert.That(ids0, Is.Not.EqualTo(Enumerable.Range(0, 22)), "shuffled");

        using var seq = new PrefetchLoader<long[]>(10, Build, Opts(2) with { Shuffle = false, DropLast = true });
        Assert.That(seq.BatchesPerEpoch, Is.EqualTo(2));
        Assert.That(seq.RestOfEpoch().SelectMany(b => b).Select(v => (int)(v / 1000)), Is.EqualTo(Enumerable.Range(0, 8)));
    }

    [Test]
    public void ResumeFromASavedPositionGivesTheSameBatches()
    {
        using var a = new PrefetchLoader<long[]>(22, Build, Opts(3));
        Take(a, 8);
        var saved = a.Position;
        var expected = Take(a, 10);
        using var b = new PrefetchLoader<long[]>(22, Build, Opts(2), start: saved);
        Assert.That(Take(b, 10), Is.EqualTo(expected));
        b.Seek(saved);
        Assert.That(Take(b, 3), Is.EqualTo(expected.Take(3)));
    }

    [Test]
    public void DropLastCountsFullBatchesOnly()
    {
        using var l = new PrefetchLoader<long[]>(22, Build, Opts(2, dropLast: true));
        Assert.That(l.BatchesPerEpoch, Is.EqualTo(5));
        Assert.That(l.RestOfEpoch().Select(b => b.Length), Is.EqualTo(new[] { 4, 4, 4, 4, 4 }));
        Assert.That(l.Position, Is.EqualTo(new LoaderPosition(1, 0)));
    }

    /// <summary>10 image files, of which #3 is a truncated PNG and #6 is missing.</summary>
    static (string[] Paths, Func<BatchContext, string[]> Build) ImageSet()
    {
        var dir = ImageTestData.NewTempDir();
        var paths = new string[10];
        for (int i = 0; i < 10; i++)
        {
            paths[i] = Path.Combine(dir, $"img{i}.png");
            if (i == 3) ImageTestData.WriteTruncatedPng(paths[i]);
            else if (i != 6) ImageTestData.WriteImage(paths[i], 10, 8, (byte)i);
        }
        var pipe = ImagePipeline.ProductTrain(resize: 8, crop: 6);
        return (paths, ctx => ctx.LoadSamples((i, r) => { pipe.ApplyToTensor(ImageLoader.Load(paths[i]), r).Dispose(); return paths[i]; }).ToArray());
    }

    [Test]
    public void BadImageIsAnErrorNamingTheFile()
    {
        var (paths, build) = ImageSet();
        using var l = new PrefetchLoader<string[]>(10, build, new() { BatchSize = 10, Workers = 2, Shuffle = false });
        var e = Assert.Throws<ImageLoadException>(() => l.Next())!;
        Assert.That(e.Message, Does.Contain(paths[3]));
        Assert.That(l.Position, Is.EqualTo(new LoaderPosition(0, 0)), "the failed batch is not consumed");
    }

    [Test]
    public void BadImagesAreSkippedAndCounted()
    {
        var (paths, build) = ImageSet();
        using var l = new PrefetchLoader<string[]>(10, build, new() { BatchSize = 5, Workers = 3, Shuffle = false, OnBadSample = BadSamplePolicy.Skip });
        var batches = l.RestOfEpoch().ToList();
        Assert.That(batches.Select(b => b.Length), Is.EqualTo(new[] { 4, 4 }));
        Assert.That(l.SkippedCount, Is.EqualTo(2));
        Assert.That(l.SkippedPaths, Is.EqualTo(new[] { paths[3], paths[6] }));
    }

    [Test]
    public void BadImagesAreReplacedAndCounted()
    {
        var (paths, build) = ImageSet();
        using var l = new PrefetchLoader<string[]>(10, build, new() { BatchSize = 5, Workers = 2, Shuffle = false, OnBadSample = BadSamplePolicy.Replace });
        var batches = l.RestOfEpoch().ToList();
        // #3 is replaced by the next good sample in epoch order (#4), #6 by #7.
        Assert.That(batches[0], Is.EqualTo(new[] { paths[0], paths[1], paths[2], paths[4], paths[4] }));
        Assert.That(batches[1], Is.EqualTo(new[] { paths[5], paths[7], paths[7], paths[8], paths[9] }));
        Assert.That(l.SkippedCount, Is.EqualTo(2));
    }

    [Test]
    public void QueueIsBounded()
    {
        int built = 0;
        using var l = new PrefetchLoader<int>(100, ctx => { Interlocked.Increment(ref built); return ctx.BatchIndex; },
            new() { BatchSize = 1, Workers = 4, Prefetch = 3, Shuffle = false });
        Assert.That(l.Next(), Is.EqualTo(0));
        Thread.Sleep(300);
        // One delivered, at most Prefetch more built ahead.
        Assert.That(Volatile.Read(ref built), Is.InRange(2, 1 + 3));
    }

    [Test]
    public void DisposeDoesNotHang()
    {
        var sw = Stopwatch.StartNew();
        var l = new PrefetchLoader<int>(1000, ctx =>
        {
            for (int i = 0; i < 100; i++) { ctx.Cancellation.ThrowIfCancellationRequested(); Thread.Sleep(10); } // a slow, cooperative builder
            return ctx.BatchIndex;
        }, new() { BatchSize = 1, Workers = 3, Prefetch = 2 });
        var t = Task.Run(() => { l.Next(); l.Dispose(); });
        Assert.That(t.Wait(TimeSpan.FromSeconds(10)), Is.True, "Next + Dispose finished");
        Assert.Throws<ObjectDisposedException>(() => l.Next());

        var idle = new PrefetchLoader<int>(10, ctx => ctx.BatchIndex, new() { BatchSize = 2 });
        Assert.That(Task.Run(idle.Dispose).Wait(TimeSpan.FromSeconds(5)), Is.True, "dispose before any batch");
        TestContext.Out.WriteLine($"dispose tests took {sw.ElapsedMilliseconds} ms");
    }

    [Test]
    public void UndeliveredBatchesAreDisposed()
    {
        var made = new List<Disposable>();
        var l = new PrefetchLoader<Disposable>(50, ctx => { var d = new Disposable(); lock (made) made.Add(d); return d; },
            new() { BatchSize = 1, Workers = 2, Prefetch = 4, Shuffle = false });
        var first = l.Next();
        Thread.Sleep(200);
        l.Dispose();
        lock (made)
        {
            Assert.That(made.Count, Is.GreaterThan(1));
            Assert.That(made.Where(d => d != first).All(d => d.Disposed), Is.True);
            Assert.That(first.Disposed, Is.False, "the consumer owns delivered batches");
        }
    }

    sealed class Disposable : IDisposable
    {
        public bool Disposed;
        public void Dispose() => Disposed = true;
    }

    [Test]
    public void SampleStreamsAreIndependentOfEpochOrder()
    {
        // The same sample in the same epoch draws the same numbers whatever batch it lands in.
        var a = DataRandom.ForSample(5, 2, 9); var b = DataRandom.ForSample(5, 2, 9);
        Assert.That(Enumerable.Range(0, 5).Select(_ => a.NextUInt64()), Is.EqualTo(Enumerable.Range(0, 5).Select(_ => b.NextUInt64())));
        Assert.That(DataRandom.ForSample(5, 3, 9).NextUInt64(), Is.Not.EqualTo(DataRandom.ForSample(5, 2, 9).NextUInt64()));
        // Uniformity of NextInt over 6 values: 60,000 draws, expected 10,000 each, sd ≈ 91; ±6 sd.
        var r = new DataRandom(1); var c = new int[6];
        for (int i = 0; i < 60000; i++) c[r.NextInt(6)]++;
        foreach (var v in c) Assert.That(v, Is.InRange(10000 - 550, 10000 + 550));
    }
}

/// <summary>Errors other than bad files always reach the consumer; seeking past a failing batch goes on.</summary>
public class LoaderErrorTests
{
    [Test]
    public void BuilderErrorsPropagateAndSeekMovesOn()
    {
        using var l = new PrefetchLoader<int>(6, ctx => ctx.BatchIndex == 1 ? throw new InvalidDataException("batch one is broken") : ctx.BatchIndex,
            new() { BatchSize = 2, Workers = 2, Shuffle = false, OnBadSample = BadSamplePolicy.Skip });
        Assert.That(l.Next(), Is.EqualTo(0));
        var e = Assert.Throws<InvalidDataException>(() => l.Next())!;
        Assert.That(e.Message, Is.EqualTo("batch one is broken"));
        Assert.Throws<InvalidDataException>(() => l.Next(), "asking again gives the same error");
        l.Seek(new LoaderPosition(0, 2));
        Assert.That(l.Next(), Is.EqualTo(2));
        Assert.That(l.Position, Is.EqualTo(new LoaderPosition(1, 0)));
    }
}

/// <summary>End to end on a tiny copy of the real layout: fashionall → loader → (B,3,H,W) two-view tensors.</summary>
public class LoaderProductTests
{
    sealed record ImageBatch(long[] Ids, Tensor Image, Tensor DvImage) : IDisposable
    {
        public void Dispose() { Image.Dispose(); DvImage.Dispose(); }
    }

    static Func<BatchContext, ImageBatch> Builder(List<FashionViL.Data.Datasets.ProductRecord> products, ImagePipeline pipe) => ctx =>
    {
        var s = ctx.LoadSamples((i, r) => ProductImageLoading.LoadTwoViews(products[i], pipe, r));
        return new ImageBatch(s.Select(x => x.Id).ToArray(),
            ProductImageLoading.Stack(s.Select(x => x.Image).ToList(), pipe.OutputHeight, pipe.OutputWidth),
            ProductImageLoading.Stack(s.Select(x => x.DvImage).ToList(), pipe.OutputHeight, pipe.OutputWidth));
    };

    [Test]
    public void FashionAllBatchesWithTwoViews()
    {
        var dataDir = DatasetTestLayout.Products();
        var products = FashionViL.Data.Datasets.ProductDatasets.ReadFashionAll(dataDir);
        // One JSON name whose file is stored under another extension: found by the fallback.
        var g = Path.Combine(dataDir, "datasets", "FashionGen", "train");
        File.Move(Path.Combine(g, "g2_0.png"), Path.Combine(g, "g2_0.jpeg"));
        var pipe = ImagePipeline.ProductTrain(resize: 12, crop: 8);
        using var a = new PrefetchLoader<ImageBatch>(products.Count, Builder(products, pipe), new() { BatchSize = 4, Workers = 3, Seed = 5 });
        using var b = new PrefetchLoader<ImageBatch>(products.Count, Builder(products, pipe), new() { BatchSize = 4, Workers = 1, Seed = 5 });
        var ids = new List<long>();
        foreach (var batch in a.RestOfEpoch())
            using (batch)
            using (var other = b.Next())
            {
                Assert.That(batch.Image.Shape, Is.EqualTo(new[] { batch.Ids.Length, 3, 8, 8 }));
                Assert.That(batch.DvImage.Shape, Is.EqualTo(batch.Image.Shape));
                Assert.That(batch.Image.ToArray<float>(), Is.EqualTo(other.Image.ToArray<float>()), "same pixels with 1 or 3 workers");
                Assert.That(batch.DvImage.ToArray<float>(), Is.EqualTo(other.DvImage.ToArray<float>()));
                // Normalised values lie in [(0−mean)/std, (1−mean)/std] per channel: at most (1−0.4066)/0.1438 ≈ 4.13 in size.
                Assert.That(batch.Image.ToArray<float>().All(v => Math.Abs(v) <= 4.2f), Is.True);
                ids.AddRange(batch.Ids);
            }
        Assert.That(ids.OrderBy(x => x), Is.EqualTo(new long[] { 11, 12, 21, 31, 32, 51 }));
    }

    [Test]
    public void MissingProductImageIsNamedOrSkipped()
    {
        var dataDir = DatasetTestLayout.Products();
        var products = FashionViL.Data.Datasets.ProductDatasets.ReadFashionAll(dataDir);
        var missing = Path.Combine(dataDir, "datasets", "Fashion200k", "images", "f1.jpg");
        File.Delete(missing);
        var pipe = ImagePipeline.ProductEval(resize: 12, crop: 8);
        using (var l = new PrefetchLoader<ImageBatch>(products.Count, Builder(products, pipe), new() { BatchSize = 6, Shuffle = false }))
        {
            var e = Assert.Throws<ImageLoadException>(() => l.Next())!;
            Assert.That(e.Message, Does.Contain(missing));
        }
        using (var l = new PrefetchLoader<ImageBatch>(products.Count, Builder(products, pipe),
                   new() { BatchSize = 6, Shuffle = false, OnBadSample = BadSamplePolicy.Skip }))
        {
            using var batch = l.Next();
            Assert.That(batch.Ids, Is.EqualTo(new long[] { 11, 12, 31, 32, 51 }));
            Assert.That(l.SkippedPaths, Is.EqualTo(new[] { missing }));
        }
    }
}
