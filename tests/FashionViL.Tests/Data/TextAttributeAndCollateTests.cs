using FashionViL.Data;

namespace FashionViL.Tests.Data;

/// <summary>Soft PAC targets (spec §2.6) and collation of per-sample arrays into PretrainBatch tensors.</summary>
public class TextAttributeAndCollateTests
{
    [Test]
    public void SoftTargetsPutOneOverNAtEachId()
    {
        var y = PseudoAttributes.Soft([3, 7, 2231]);
        Assert.That(y, Has.Length.EqualTo(2232));
        Assert.That(y[3], Is.EqualTo(1f / 3));
        Assert.That(y[7], Is.EqualTo(1f / 3));
        Assert.That(y[2231], Is.EqualTo(1f / 3));
        Assert.That(y.Count(v => v != 0), Is.EqualTo(3));
    }

    [Test]
    public void EmptyListGivesAZeroRow()
    {
        Assert.That(PseudoAttributes.Soft([]), Is.All.EqualTo(0f));
    }

    [Test]
    public void DuplicateIdsAreAssignedNotSummedAndStillCount()
    {
        // Reference: attribute_labels[[5, 5, 7]] = 1/3 — index assignment, n = len(list) = 3.
        var y = PseudoAttributes.Soft([5, 5, 7], numAttributes: 10);
        Assert.That(y, Is.EqualTo(new float[] { 0, 0, 0, 0, 0, 1f / 3, 0, 1f / 3, 0, 0 }));
    }

    [Test]
    public void OutOfRangeIdIsNamed()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => PseudoAttributes.Soft([1, 2232]));
        Assert.That(ex!.Message, Does.Contain("2232").And.Contain("position 1"));
        ex = Assert.Throws<ArgumentOutOfRangeException>(() => PseudoAttributes.Soft([-4]));
        Assert.That(ex!.Message, Does.Contain("-4"));
    }

    [Test]
    public void CollateStacksTextFieldsRowByRow()
    {
        var p = new PretrainTextProcessor(maxSeqLength: 10);
        var texts = new[] { "i like strawberries", "Café crème jeans", "" };
        var samples = texts.Select((t, i) => p.Process(t, PhiloxRandom.ForSample(4, i, PhiloxRandom.Purpose.TextMask))).ToArray();
        using var c = TextCollator.Collate(samples);
        foreach (var (tensor, field) in new[] { (c.InputIds, (Func<PretrainTextSample, long[]>)(s => s.InputIds)),
                     (c.InputIdsMasked, s => s.InputIdsMasked), (c.InputMask, s => s.InputMask),
                     (c.SegmentIds, s => s.SegmentIds), (c.LmLabelIds, s => s.LmLabelIds) })
        {
            Assert.That(tensor.Shape, Is.EqualTo(new[] { 3, 10 }));
            Assert.That(tensor.DType, Is.EqualTo(DType.Int64));
            Assert.That(tensor.ToArray<long>(), Is.EqualTo(samples.SelectMany(field).ToArray()));
        }
        Assert.That(c.InputIds.ToArray<long>()[..6], Is.EqualTo(new long[] { 101, 1045, 2066, 13137, 20968, 102 }));
    }

    [Test]
    public void StackCollatesMasksAndAttributes()
    {
        var g = new BlockMaskGenerator();
        var masks = Enumerable.Range(0, 4).Select(i => g.Generate(PhiloxRandom.ForSample(1, i, PhiloxRandom.Purpose.ImageMask))).ToList();
        using var m = TextCollator.Stack(masks, "image_masks");
        Assert.That(m.Shape, Is.EqualTo(new[] { 4, 49 }));
        Assert.That(m.ToArray<long>(), Is.EqualTo(masks.SelectMany(x => x).ToArray()));
        var attrs = new List<float[]> { PseudoAttributes.Soft([1, 2]), PseudoAttributes.Soft([]) };
        using var a = TextCollator.Stack(attrs, "attribute_labels");
        Assert.That(a.Shape, Is.EqualTo(new[] { 2, 2232 }));
        Assert.That(a.DType, Is.EqualTo(DType.Float32));
        Assert.That(a.ToArray<float>()[1], Is.EqualTo(0.5f));
    }

    [Test]
    public void CollatedFieldsFillAPretrainBatch()
    {
        var p = new PretrainTextProcessor(maxSeqLength: 12);
        var g = new BlockMaskGenerator();
        var samples = new[] { "red dress", "blue jeans" }.Select((t, i) => p.Process(t, PhiloxRandom.ForSample(0, i, PhiloxRandom.Purpose.TextMask))).ToArray();
        var text = TextCollator.Collate(samples);
        using var batch = new PretrainBatch
        {
            Image = Tensor.Zeros([2, 3, 4, 4]), DvImage = Tensor.Zeros([2, 3, 4, 4]),
            InputIds = text.InputIds, InputIdsMasked = text.InputIdsMasked, InputMask = text.InputMask,
            SegmentIds = text.SegmentIds, LmLabelIds = text.LmLabelIds,
            ImageMasks = TextCollator.Stack(Enumerable.Range(0, 2).Select(i => g.Generate(PhiloxRandom.ForSample(0, i, PhiloxRandom.Purpose.ImageMask))).ToList(), "image_masks"),
            AttributeLabels = TextCollator.Stack(new List<float[]> { PseudoAttributes.Soft([1]), PseudoAttributes.Soft([2, 3]) }, "attribute_labels"),
            Ids = [10, 11],
        };
        Assert.That(batch.Size, Is.EqualTo(2));
        Assert.That(batch.InputIds.Shape, Is.EqualTo(new[] { 2, 12 }));
        Assert.That(batch.ImageMasks.Shape, Is.EqualTo(new[] { 2, 49 }));
        Assert.That(batch.AttributeLabels.Shape, Is.EqualTo(new[] { 2, 2232 }));
    }

    [Test]
    public void RaggedRowsAreNamed()
    {
        var ex = Assert.Throws<ArgumentException>(() => TextCollator.Stack(new List<long[]> { new long[5], new long[5], new long[4] }, "input_ids"));
        Assert.That(ex!.Message, Does.Contain("input_ids").And.Contain("sample 2"));
        Assert.Throws<ArgumentException>(() => TextCollator.Stack(new List<long[]>(), "input_ids"));
    }
}
