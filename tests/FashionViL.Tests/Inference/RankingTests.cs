using FashionViL.Inference;

namespace FashionViL.Tests.Inference;

/// <summary>EmbeddingSearch: dot products and top-k with ties by lower index, chunked over the gallery.</summary>
public class RankingTests
{
    [Test]
    public void TiesKeepTheLowerIndexFirstAcrossChunks()
    {
        // scores of query [1,0]: 1, 0, 1, 2, 1, -1, 2  → order 3, 6 (tie 2), 0, 2, 4 (tie 1), 1, 5
        float[][] gallery = [[1, 0], [0, 1], [1, 5], [2, 0], [1, -3], [-1, 0], [2, 2]];
        foreach (int chunk in new[] { 1, 2, 3, 100 })
        {
            var hits = EmbeddingSearch.Rank([[1f, 0f]], gallery, 5, batchSize: chunk)[0];
            Assert.That(hits.Select(h => h.Index), Is.EqualTo(new[] { 3, 6, 0, 2, 4 }), $"chunk {chunk}");
            Assert.That(hits.Select(h => h.Score), Is.EqualTo(new[] { 2f, 2f, 1f, 1f, 1f }), $"chunk {chunk}");
        }
        var all = EmbeddingSearch.Rank([[1f, 0f]], gallery, 50)[0];
        Assert.That(all.Select(h => h.Index), Is.EqualTo(new[] { 3, 6, 0, 2, 4, 1, 5 }));
    }

    [Test]
    public void ScoresAreDotProductsAndRankingSortsThem()
    {
        var rnd = new Random(5);
        float[][] q = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, 7).Select(_ => (float)(rnd.NextDouble() * 2 - 1)).ToArray()).ToArray();
        float[][] g = Enumerable.Range(0, 23).Select(_ => Enumerable.Range(0, 7).Select(_ => (float)(rnd.NextDouble() * 2 - 1)).ToArray()).ToArray();
        var s = EmbeddingSearch.Score(q, g, batchSize: 5);
        for (int i = 0; i < q.Length; i++)
        {
            var exact = g.Select(v => v.Zip(q[i], (a, b) => (double)a * b).Sum()).ToArray();
            for (int j = 0; j < g.Length; j++) Assert.That(s[i][j], Is.EqualTo(exact[j]).Within(1e-5));
            var want = Enumerable.Range(0, g.Length).OrderByDescending(j => exact[j]).ThenBy(j => j).Take(4).ToArray();
            Assert.That(EmbeddingSearch.Rank(q, g, 4, batchSize: 6)[i].Select(h => h.Index), Is.EqualTo(want));
        }
    }

    [Test]
    public void MismatchedDimensionsAndBadArgumentsAreNamed()
    {
        var ex = Assert.Throws<ArgumentException>(() => EmbeddingSearch.Rank([[1f, 2f, 3f]], [[1f, 2f]], 1));
        Assert.That(ex!.Message, Does.Contain("3").And.Contain("2").And.Contain("dimension"));
        ex = Assert.Throws<ArgumentException>(() => EmbeddingSearch.Score([[1f, 2f]], [[1f, 2f], [1f]]));
        Assert.That(ex!.Message, Does.Contain("vector 1"));
        Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddingSearch.Rank([[1f]], [[1f]], 0));
        Assert.Throws<ArgumentException>(() => EmbeddingSearch.Rank([[1f]], Array.Empty<float[]>(), 1));
    }

    [Test]
    public void EmbeddingFileRoundTripsAndRejectsOtherFiles()
    {
        var dir = Data.ImageTestData.NewTempDir();
        var path = Path.Combine(dir, "e.safetensors");
        var set = new EmbeddingSet([[1f, 2f, 3f], [-4f, 5.5f, 6f]], [new EmbeddingItem("a.png"), new EmbeddingItem("line 2", "ünïcode \"quoted\" text")], "text", "m.ckpt");
        EmbeddingFile.Save(path, set);
        var back = EmbeddingFile.Load(path);
        Assert.That(back.Vectors, Is.EqualTo(set.Vectors));
        Assert.That(back.Items, Is.EqualTo(set.Items));
        Assert.That((back.Kind, back.Checkpoint), Is.EqualTo(("text", "m.ckpt")));
        Assert.That(Directory.GetFiles(dir), Has.Length.EqualTo(1), "no temporary file left behind");

        var other = Path.Combine(dir, "o.safetensors");
        using var t = Tensor.Zeros([2, 3]);
        SafeTensors.Save(other, new Dictionary<string, Tensor> { ["embeddings"] = t });
        Assert.That(Assert.Throws<InvalidDataException>(() => EmbeddingFile.Load(other))!.Message, Does.Contain(other).And.Contain("format"));
        Assert.Throws<ArgumentException>(() => EmbeddingFile.Save(path, set with { Items = [new EmbeddingItem("x")] }));
    }
}
