using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data.Loading;
using FashionViL.Eval;
using FashionViL.Nn;
using FashionViL.Nn.Optim;

namespace FashionViL.Downstream.FashionGen;

/// <summary>
/// Cross-modal retrieval on FashionGen (spec §4.1; reference projects/fashionvil/configs/e2e_contrastive.yaml): the
/// two-tower <see cref="FashionViLContrastive"/> trained with symmetric InfoNCE on (one random image, text) per product;
/// evaluated on every image of every val product against every product text, metrics <c>r@k_kaleido/*</c> (1,000 queries,
/// 1 positive + 100 same-sub-category negatives, 5 repeats) and <c>r@k_general/*</c> (full gallery).
/// </summary>
public sealed class FashionGenRetrievalTask : IFinetuneTask<FashionGenBatch>
{
    private readonly Generator _gen;

    public FashionGenRetrievalTask(FashionViLContrastive model, FashionGenData data, Generator modelGenerator)
    {
        Net = model; Data = data; _gen = modelGenerator;
    }

    /// <summary>Builds the task from a config (keys of Config/schema/fashiongen.yaml and the shared model sizes); the model
    /// gets its fresh init from <c>training.seed</c>. Data files are read on first use.</summary>
    public static FashionGenRetrievalTask Create(FvConfig c, TextWriter log)
    {
        FashionGenData.CheckHead(c, "contrastive", "contrastive_loss");
        var mc = FashionGenData.ModelConfig(c);
        var data = FashionGenData.FromConfig(c);
        var g = new Generator((ulong)c.GetInt("training.seed"));
        var model = new FashionViLContrastive(mc, g);
        log.WriteLine($"fashiongen retrieval: {model.NamedParameters().Sum(p => (long)p.Tensor.Numel):N0} parameters ({mc.Bert.NumHiddenLayers}-layer BERT {mc.Bert.HiddenSize}, " +
            $"ResNet blocks [{string.Join(",", mc.ResNet.Blocks)}] width {mc.ResNet.BaseWidth}, {mc.ImageSize}px → {mc.GridSize} visual tokens), text ≤ {data.MaxSeqLength} tokens");
        return new FashionGenRetrievalTask(model, data, g);
    }

    public FashionViLContrastive Net { get; }
    public FashionGenData Data { get; }
    public string DatasetName => "fashiongen";
    public Module Model => Net;
    public int TrainCount => Data.Split("train").Count;

    public FashionGenBatch BuildTrainBatch(BatchContext ctx) => Data.BuildTrainBatch(ctx);

    /// <summary>The task's loss; dropout masks come from <paramref name="g"/> (the model's modules hold <c>_gen</c>, which takes
    /// <paramref name="g"/>'s state for the forward and hands it back: <see cref="LoopRandom.Run"/>).</summary>
    public Tensor Loss(FashionGenBatch batch, Device device, Generator g) => LoopRandom.Run(_gen, g, () =>
    {
        using var img = batch.Image.To(device);
        using var ids = batch.InputIds.To(device);
        using var seg = batch.SegmentIds.To(device);
        using var mask = batch.InputMask.To(device);
        return Net.Loss(img, ids, seg, mask);
    });

    public IReadOnlyDictionary<string, double> Evaluate(string split, Device device, int seed)
    {
        var products = Data.Split(split);
        var rows = FashionGenData.EvalRows(products);
        var (imgEmb, txtEmb) = Embed(products, rows, device);
        using (imgEmb) using (txtEmb)
        {
            var imageIds = rows.Select(r => products[r.Product].Id).ToArray();
            var imageSub = rows.Select(r => (long)(products[r.Product].SubcategoryId ?? -1)).ToArray();
            var textIds = products.Select(p => p.Id).ToArray();
            var textSub = products.Select(p => (long)(p.SubcategoryId ?? -1)).ToArray();
            var result = new Dictionary<string, double>(StringComparer.Ordinal);
            foreach (var (k, v) in RetrievalMetrics.Kaleido(imgEmb, imageIds, imageSub, txtEmb, textIds, textSub, seed)) result["r@k_kaleido/" + k] = v;
            foreach (var (k, v) in RetrievalMetrics.General(imgEmb, imageIds, txtEmb, textIds)) result["r@k_general/" + k] = v;
            return result;
        }
    }

    /// <summary>Eval-mode, no-grad embeddings on the CPU: one image row per image (<paramref name="rows"/> order), one text row per product.</summary>
    public (Tensor Images, Tensor Texts) Embed(IReadOnlyList<Data.Datasets.ProductRecord> products, IReadOnlyList<FashionGenImageRow> rows, Device device)
    {
        bool wasTraining = Net.IsTraining;
        Net.Eval();
        var imgs = new List<Tensor>(); var txts = new List<Tensor>();
        try
        {
            using var _ = GradMode.NoGrad();
            int bs = Data.EvalBatchSize;
            for (int i = 0; i < rows.Count; i += bs)
            {
                using var b = Data.BuildEvalBatch(products, rows.Skip(i).Take(bs).ToList());
                using var im = b.Image.To(device);
                using var e = Net.ImageVectors(im);
                imgs.Add(e.To(Device.Cpu));
            }
            for (int i = 0; i < products.Count; i += bs)
            {
                var (ids, seg, mask) = Data.EncodeTexts(products.Skip(i).Take(bs).ToList());
                using (ids) using (seg) using (mask)
                {
                    using var idsD = ids.To(device); using var segD = seg.To(device); using var maskD = mask.To(device);
                    using var e = Net.TextVectors(idsD, segD, maskD);
                    txts.Add(e.To(Device.Cpu));
                }
            }
            return (Ops.Cat(imgs.ToArray(), 0), Ops.Cat(txts.ToArray(), 0));
        }
        finally
        {
            foreach (var t in imgs.Concat(txts)) t.Dispose();
            if (wasTraining) Net.Train();
        }
    }

    public List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier) => Net.ParameterGroups(baseLr, weightDecay, lrMultiplier);

    /// <summary>Releases the parameter and buffer memory of the model.</summary>
    public void Dispose()
    {
        foreach (var (_, t) in Net.NamedParameters()) t.Dispose();
        foreach (var (_, t) in Net.NamedBuffers()) t.Dispose();
    }
}
