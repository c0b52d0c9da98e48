using FashionViL.Model;
using FashionViL.Nn.Models;

namespace FashionViL.Tests.Model;

public class ModelSizesTests
{
    [Test]
    public void ResNet50TrunkHasTorchvisionCount() =>
        // torchvision resnet50: 25,557,032 parameters, of which fc is 2048·1000 + 1000.
        Assert.That(ModelSizes.ResNet(ResNetConfig.ResNet50), Is.EqualTo(25_557_032L - 2_049_000L));

    [Test]
    public void BertBaseBodyHasHuggingFaceCount() =>
        // bert-base-uncased BertModel: 109,482,240 parameters; the visual projection and tables add 2048·768 + 768 + (512 + 2)·768.
        Assert.That(ModelSizes.Bert(new BertConfig(), 2048), Is.EqualTo(109_482_240L + 2048L * 768 + 768 + 514L * 768));

    [Test]
    public void TinyCountEqualsTheBuiltModel()
    {
        var m = new FashionViLPretraining(FashionViLConfig.Tiny, new Generator(1));
        long built = m.NamedParameters().Sum(p => (long)p.Tensor.Numel);
        var c = FashionViLConfig.Tiny;
        Assert.That(ModelSizes.ResNet(c.ResNet) + ModelSizes.Bert(c.Bert, c.VisualEmbeddingDim) + ModelSizes.Heads(c), Is.EqualTo(built));
    }
}
