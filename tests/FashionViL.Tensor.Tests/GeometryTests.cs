namespace FashionViL.TensorTests;

public class GeometryTests
{
    [TestCase(224, 7, 2, 3, 112)]
    [TestCase(6, 7, 2, 0, 0)]     // the kernel does not fit: no output (not a rounded-up 1)
    [TestCase(5, 7, 1, 0, -1)]
    [TestCase(7, 3, 2, 1, 4)]
    public void ConvOutputSizeUsesFloorDivision(int h, int k, int s, int p, int want)
        => Assert.That(Conv2dParams.Symmetric(s, p).OutH(h, k), Is.EqualTo(want));

    [Test]
    public void AsymmetricPaddingAndDilation()
    {
        var p = new Conv2dParams(2, 2, 0, 1, 0, 1);
        Assert.That(p.OutH(256, 3), Is.EqualTo(128)); // VQ-VAE downsampling: pad right/bottom by one, 3×3 stride 2
        Assert.That(Conv2dParams.Symmetric(1, 2, 2).OutW(10, 3), Is.EqualTo(10));
    }

    [TestCase(112, 3, 2, 1, 56)]
    [TestCase(2, 3, 2, 0, 0)]
    public void PoolOutputSize(int h, int k, int s, int p, int want)
        => Assert.That(new Pool2dParams(k, k, s, s, p, p).OutH(h), Is.EqualTo(want));
}
