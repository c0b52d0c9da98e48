using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data.Loading;
using FashionViL.Eval;
using FashionViL.Nn;
using FashionViL.Nn.Optim;

namespace FashionViL.Downstream.FashionGen;

/// <summary>
/// Sub-category recognition on FashionGen (spec §4.3; reference projects/fashionvil/configs/e2e_classification.yaml):
/// <see cref="FashionViLClassification"/> trained with cross-entropy on <c>subcategory_id</c> from (one random image, text)
/// per product; evaluated on every image of each val product (its text repeated), metrics <c>accuracy</c> and <c>macro_f1</c>
/// over all image rows.
/// </summary>
public sealed class FashionGenClassificationTask : IFinetuneTask<FashionGenBatch>
{
    private readonly Generator _gen;

    public FashionGenClassificationTask(FashionViLClassification model, FashionGenData data, Generator modelGenerator)
    {
        if (model.NumLabels != data.NumLabels) throw new ArgumentException($"fashiongen classification: the model has {model.NumLabels} classes, the data {data.NumLabels}");
        Net = model; Data = data; _gen = modelGenerator;
    }

    /// <summary>Builds the task from a config (keys of Config/schema/fashiongen.yaml, <c>model_config.fashionvil.num_labels</c>
    /// and the shared model sizes); fresh init from <c>training.seed</c>. Data files are read on first use.</summary>
    public static FashionGenClassificationTask Create(FvConfig c, TextWriter log)
    {
        FashionGenData.CheckHead(c, "classification", "cross_entropy");
        var mc = FashionGenData.ModelConfig(c);
        var data = FashionGenData.FromConfig(c);
        var g = new Generator((ulong)c.GetInt("training.seed"));
        var model = new FashionViLClassification(mc, data.NumLabels, g);
        log.WriteLine($"fashiongen classification: {model.NamedParameters().Sum(p => (long)p.Tensor.Numel):N0} parameters ({mc.Bert.NumHiddenLayers}-layer BERT {mc.Bert.HiddenSize}, " +
            $"ResNet blocks [{string.Join(",", mc.ResNet.Blocks)}] width {mc.ResNet.BaseWidth}, {mc.ImageSize}px → {mc.GridSize} visual tokens), {data.NumLabels} classes " +
            $"({(data.CategoryLabel ? "category_id" : "subcategory_id")}), text ≤ {data.MaxSeqLength} tokens");
        return new FashionGenClassificationTask(model, data, g);
    }

    public FashionViLClassification Net { get; }
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
        using var tgt = batch.Targets.To(device);
        return Net.Loss(img, ids, seg, mask, tgt);
    });

    public IReadOnlyDictionary<string, double> Evaluate(string split, Device device, int seed)
    {
        var (yTrue, yPred) = Predict(split, device);
        return new Dictionary<string, double>(StringComparer.Ordinal)
        {
            ["accuracy"] = ClassificationMetrics.Accuracy(yTrue, yPred),
            ["macro_f1"] = ClassificationMetrics.MacroF1(yTrue, yPred),
        };
    }

    /// <summary>Targets and arg-max predictions of every image row of <paramref name="split"/> (eval mode, no gradient).</summary>
    public (long[] Targets, long[] Predictions) Predict(string split, Device device)
    {
        var products = Data.Split(split);
        var rows = FashionGenData.EvalRows(products);
        bool wasTraining = Net.IsTraining;
        Net.Eval();
        var yTrue = new List<long>(rows.Count); var yPred = new List<long>(rows.Count);
        try
        {
            using var _ = GradMode.NoGrad();
            for (int i = 0; i < rows.Count; i += Data.EvalBatchSize)
            {
                using var b = Data.BuildEvalBatch(products, rows.Skip(i).Take(Data.EvalBatchSize).ToList());
                using var im = b.Image.To(device);
                using var ids = b.InputIds.To(device); using var seg = b.SegmentIds.To(device); using var mask = b.InputMask.To(device);
                using var logits = Net.Logits(im, ids, seg, mask);
                yPred.AddRange(ClassificationMetrics.ArgMax(logits.ToArray<float>(), Net.NumLabels));
                yTrue.AddRange(b.Targets.ToArray<long>());
            }
        }
        finally { if (wasTraining) Net.Train(); }
        return (yTrue.ToArray(), yPred.ToArray());
    }

    public List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier) => Net.ParameterGroups(baseLr, weightDecay, lrMultiplier);

    /// <summary>Releases the parameter and buffer memory of the model.</summary>
    public void Dispose()
    {
        foreach (var (_, t) in Net.NamedParameters()) t.Dispose();
        foreach (var (_, t) in Net.NamedBuffers()) t.Dispose();
    }
}
