using FashionViL.Autograd;
using FashionViL.Data;
using FashionViL.Model;
using FashionViL.Nn.Models;
using FashionViL.Nn.Optim;

namespace FashionViL.Bench;

/// <summary>AdamW settings of the step (configs/pretrain.yaml: lr 1e-5, weight decay 1e-4, ×20 for the image encoder and heads).</summary>
public sealed record StepOptimizer(double Lr = 1e-5, double WeightDecay = 1e-4, double LrMultiplier = 20, double Beta1 = 0.9, double Beta2 = 0.999, double Eps = 1e-8);

/// <summary>
/// One FashionViL pre-training step, repeatable: a model with random weights (train mode), AdamW with the reference
/// parameter groups, and a fixed random batch on <c>device</c> (<see cref="StepBenchmark.MakeBatch"/>). <see cref="Step"/>
/// is what the PyTorch step times: zero_grad, the task's loss (for MPFC the frozen VQ-VAE's codes under no-grad first),
/// backward, optimizer step. Nothing is read back to the host by the runner itself.
/// </summary>
public sealed class StepRunner : IDisposable
{
    private readonly FashionViLPretraining _model;
    private readonly VqVaeEncoder? _vq;
    private readonly AdamW _optimizer;
    private readonly PretrainBatch _batch;
    private readonly Generator _g;
    private Tensor? _lastLoss;

    public string Task { get; }
    public Device Device { get; }
    public long Parameters { get; }
    public FashionViLPretraining Model => _model;

    /// <param name="mlmHeadRows">the rows the MLM head runs on (<see cref="MlmHeadRows.All"/>: as the PyTorch step script does).</param>
    public StepRunner(FashionViLConfig mc, VqVaeConfig? vq, string task, int batch, int textTokens, Device device, ulong seed, StepOptimizer? optimizer = null,
        MlmHeadRows mlmHeadRows = MlmHeadRows.Labelled)
    {
        if (!StepBenchmark.Tasks.Contains(task)) throw new ArgumentException($"bench step: --task '{task}' is not a task (known: {string.Join(", ", StepBenchmark.Tasks)})");
        if (task == "mpfc" && vq is null) throw new ArgumentException("bench step: task mpfc needs the VQ-VAE config");
        Task = task;
        Device = device;
        _g = new Generator(seed + 1);
        _model = new FashionViLPretraining(mc, _g) { MlmHeadRows = mlmHeadRows };
        if (task == "mpfc")
        {
            _vq = new VqVaeEncoder(vq!, new Generator(seed + 2));
            _vq.Eval();
        }
        if (!device.IsCpu) { _model.To(device); _vq?.To(device); }
        _model.Train();
        var o = optimizer ?? new StepOptimizer();
        _optimizer = new AdamW(_model.ParameterGroups(o.Lr, o.WeightDecay, o.LrMultiplier), o.Beta1, o.Beta2, o.Eps);
        Parameters = _model.NamedParameters().Where(p => p.Tensor.RequiresGrad).Sum(p => (long)p.Tensor.Numel);
        _batch = StepBenchmark.MakeBatch(mc, batch, textTokens, device, seed);
    }

    /// <summary>One training step (queued on the device; nothing waits for it).</summary>
    public void Step()
    {
        using var scope = Tensor.Scope();
        _optimizer.ZeroGrad();
        Tensor? targets = null;
        if (_vq is not null) using (GradMode.NoGrad()) targets = _vq.Tokenize(_batch.Image);
        var loss = _model.Forward(Task, _batch, targets, _g);
        loss.Backward();
        _optimizer.Step();
        _lastLoss?.Dispose();
        _lastLoss = loss.Detach().Persist();
    }

    /// <summary>The loss of the last step (reads it back: waits for the device).</summary>
    public double LastLoss => _lastLoss?.Item() ?? double.NaN;

    public void Dispose()
    {
        _lastLoss?.Dispose();
        _batch.Dispose();
    }
}
