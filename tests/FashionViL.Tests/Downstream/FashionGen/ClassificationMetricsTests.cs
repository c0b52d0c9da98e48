using FashionViL.Eval;

namespace FashionViL.Tests.Downstream.FashionGen;

/// <summary>accuracy and macro_f1 (sklearn macro F1) on hand-computed cases.</summary>
public class ClassificationMetricsTests
{
    [Test]
    public void AccuracyIsTheFractionOfExactMatches()
    {
        Assert.That(ClassificationMetrics.Accuracy([0, 1, 2, 2], [0, 2, 2, 1]), Is.EqualTo(0.5).Within(1e-15));
        Assert.That(ClassificationMetrics.Accuracy([7], [7]), Is.EqualTo(1.0));
        Assert.That(ClassificationMetrics.Accuracy([7, 3], [3, 7]), Is.EqualTo(0.0));
    }

    [Test]
    public void MacroF1CountsANeverPredictedAndANeverPresentClassAsZero()
    {
        // y_true = [0,0,1,1,2], y_pred = [0,1,1,1,3]; labels = y_true ∪ y_pred = {0,1,2,3}.
        // class 0: tp 1, fp 0, fn 1 → P 1, R 1/2, F1 2/3.   class 1: tp 2, fp 1, fn 0 → P 2/3, R 1, F1 4/5.
        // class 2: present, never predicted → P 0/0 (0), R 0 → F1 0.   class 3: predicted, never present → R 0/0 (0) → F1 0.
        double expected = (2.0 / 3 + 4.0 / 5 + 0 + 0) / 4;
        Assert.That(ClassificationMetrics.MacroF1([0, 0, 1, 1, 2], [0, 1, 1, 1, 3]), Is.EqualTo(expected).Within(1e-12));
    }

    [Test]
    public void MacroF1AveragesOnlyOverLabelsThatOccur()
    {
        // Labels 5 and 40 only (a 121-class problem would not change it): class 5 tp 2 fp 1 fn 0 → 4/5; class 40 tp 0 fp 0 fn 1 → 0.
        Assert.That(ClassificationMetrics.MacroF1([5, 5, 40], [5, 5, 5]), Is.EqualTo(0.4).Within(1e-12));
        // Perfect predictions give 1 whatever the class frequencies.
        Assert.That(ClassificationMetrics.MacroF1([1, 1, 1, 9], [1, 1, 1, 9]), Is.EqualTo(1.0).Within(1e-15));
        // Macro, not micro: one rare class wrong halves the score although accuracy is 3/4.
        Assert.That(ClassificationMetrics.MacroF1([1, 1, 1, 2], [1, 1, 1, 1]), Is.EqualTo((2.0 * 3 / (2 * 3 + 1 + 0) + 0) / 2).Within(1e-12));
    }

    [Test]
    public void ArgMaxTakesTheFirstMaximum()
    {
        Assert.That(ClassificationMetrics.ArgMax([1f, 3f, 3f, /* row 2 */ 5f, -1f, 0f], 3), Is.EqualTo(new long[] { 1, 0 }));
        Assert.That(ClassificationMetrics.ArgMax([2f, 2f], 2), Is.EqualTo(new long[] { 0 }));
    }

    [Test]
    public void BadInputNamesTheProblem()
    {
        Assert.That(() => ClassificationMetrics.Accuracy([1, 2], [1]), Throws.ArgumentException.With.Message.Contain("2 targets but 1 predictions"));
        Assert.That(() => ClassificationMetrics.MacroF1([], []), Throws.ArgumentException.With.Message.Contain("no rows"));
        Assert.That(() => ClassificationMetrics.ArgMax([1f, 2f, 3f], 2), Throws.ArgumentException.With.Message.Contain("3 scores"));
    }
}
