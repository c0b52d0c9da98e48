using FashionViL.Nn.Models;

namespace FashionViL.Model;

/// <summary>Parameter counts computed from a config (no weights are allocated).</summary>
public static class ModelSizes
{
    /// <summary>Trainable parameters of the ResNet trunk (convs without bias, BN affine).</summary>
    public static long ResNet(ResNetConfig r)
    {
        long n = 3L * r.BaseWidth * 49 + 2L * r.BaseWidth;   // conv1 7×7 + bn1
        int inC = r.BaseWidth;
        for (int s = 0; s < r.Blocks.Length; s++)
        {
            int planes = r.BaseWidth << s, outC = planes * Bottleneck.Expansion;
            for (int b = 0; b < r.Blocks[s]; b++)
            {
                n += (long)inC * planes + 2L * planes + 9L * planes * planes + 2L * planes + (long)planes * outC + 2L * outC;
                if (b == 0) n += (long)inC * outC + 2L * outC;   // downsample conv + bn
                inC = outC;
            }
        }
        return n;
    }

    /// <summary>BERT body (embeddings, layers, pooler) plus the visual projection and tables of spec §1.4.</summary>
    public static long Bert(BertConfig c, int visualDim)
    {
        long h = c.HiddenSize, i = c.IntermediateSize;
        long emb = (c.VocabSize + c.MaxPositionEmbeddings + c.TypeVocabSize) * h + 2 * h;
        long vis = visualDim * h + h + (c.MaxPositionEmbeddings + c.TypeVocabSize) * h;
        long layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h;
        return emb + vis + c.NumHiddenLayers * layer + (h * h + h);
    }

    /// <summary>Pre-training heads: ITM, MLM (transform + bias; decoder tied), MPFC, PAC, and norm_s.</summary>
    public static long Heads(FashionViLConfig c)
    {
        long h = c.Bert.HiddenSize;
        long transform = h * h + h + 2 * h;
        return (2 * h + 2) + (transform + c.Bert.VocabSize) + (transform + h * c.NumVqTokens + c.NumVqTokens) + h * c.NumAttributes + 1;
    }

    public static string Describe(FashionViLConfig c)
    {
        long r = ResNet(c.ResNet), b = Bert(c.Bert, c.VisualEmbeddingDim), hd = Heads(c);
        return $"{r + b + hd:N0} = ResNet {r:N0} + BERT {b:N0} + heads {hd:N0}";
    }

    /// <summary>VQ-VAE encoder + quant_conv parameters (the codebook is a buffer).</summary>
    public static long VqVae(VqVaeConfig v)
    {
        var m = new VqVaeEncoder(v, initialize: false);
        long n = m.NamedParameters().Sum(p => (long)p.Tensor.Numel);
        foreach (var (_, t) in m.NamedParameters().Concat(m.NamedBuffers())) t.Dispose();
        return n;
    }
}
