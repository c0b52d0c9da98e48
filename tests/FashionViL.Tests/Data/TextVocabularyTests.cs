using System.Security.Cryptography;
using FashionViL.Data;

namespace FashionViL.Tests.Data;

/// <summary>The embedded bert-base-uncased vocab is byte-exact (data.md) and readable by id.</summary>
public class TextVocabularyTests
{
    [Test]
    public void EmbeddedVocabHasThePublishedSizeAndHash()
    {
        using var s = BertVocabulary.OpenStream();
        var bytes = new MemoryStream();
        s.CopyTo(bytes);
        Assert.That(bytes.Length, Is.EqualTo(231_508));
        Assert.That(Convert.ToHexStringLower(SHA256.HashData(bytes.ToArray())),
            Is.EqualTo("07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"));
        Assert.That(BertVocabulary.Sha256, Is.EqualTo("07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"));
    }

    [Test]
    public void TokensByIdMatchBertConventions()
    {
        var t = BertVocabulary.Tokens;
        Assert.That(t, Has.Count.EqualTo(30522));
        Assert.That(t[0], Is.EqualTo("[PAD]"));
        Assert.That(t[1], Is.EqualTo("[unused0]"));
        Assert.That(t[100], Is.EqualTo("[UNK]"));
        Assert.That(t[101], Is.EqualTo("[CLS]"));
        Assert.That(t[102], Is.EqualTo("[SEP]"));
        Assert.That(t[103], Is.EqualTo("[MASK]"));
        Assert.That(t[1045], Is.EqualTo("i"));
        Assert.That(t[20968], Is.EqualTo("##berries"));
        Assert.That(BertVocabulary.IsContinuation(20968), Is.True);
        Assert.That(BertVocabulary.IsContinuation(13137), Is.False);
        Assert.That(t.Distinct().Count(), Is.EqualTo(30522), "tokens are unique");
    }
}
