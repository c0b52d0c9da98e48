using FashionViL.Config;
using FashionViL.Data.Loading;
using FashionViL.Nn;
using FashionViL.Nn.Optim;

namespace FashionViL.Downstream;

/// <summary>
/// A downstream task (spec §4) as the generic fine-tuning loop (<c>Finetuner</c>) sees it: a model, a training set
/// that the prefetching loader batches, a loss, and an evaluation that returns the task's metrics. The loop owns the
/// optimizer, schedule, pre-trained weight loading (<c>checkpoint.pretrained_state_mapping</c>), checkpoints, logs,
/// best-checkpoint selection and resume; the task owns everything specific to its data, head, loss and protocol.
/// </summary>
public interface IFinetuneTask<TBatch> : IDisposable where TBatch : IDisposable
{
    /// <summary>The dataset key, used as the metric prefix ("fashiongen", "fashioniq", "polyvore_ocir").</summary>
    string DatasetName { get; }

    /// <summary>The whole model (trained parameters and buffers) with the reference's MMF state-dict names
    /// (<c>image_encoder.*</c>, <c>model.bert.*</c>, heads ...), so pre-trained checkpoints map onto it.</summary>
    Module Model { get; }

    /// <summary>Number of training samples (products, triplets or pairs): the loader's sample count.</summary>
    int TrainCount { get; }

    /// <summary>Builds one CPU training batch from the dataset indices in <paramref name="ctx"/>; runs on loader worker
    /// threads; all randomness from <c>ctx.RandomFor(index)</c> / <c>ctx.LoadSamples</c> so batches depend only on the position.</summary>
    TBatch BuildTrainBatch(BatchContext ctx);

    /// <summary>The scalar training loss of <paramref name="batch"/> (the task moves the batch to <paramref name="device"/>);
    /// <paramref name="g"/> drives dropout and any other draw made on the model side.</summary>
    Tensor Loss(TBatch batch, Device device, Generator g);

    /// <summary>Evaluates on <paramref name="split"/> ("val" or "test") in eval mode, no gradient, and returns every metric
    /// value keyed "&lt;metric&gt;/&lt;key&gt;" (e.g. "r@k_kaleido/avg", "accuracy", "macro_f1"), values in [0, 1].</summary>
    IReadOnlyDictionary<string, double> Evaluate(string split, Device device, int seed);

    /// <summary>The optimizer parameter groups of the reference config (lr multiplier, weight-decay exclusions).</summary>
    List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier);
}
