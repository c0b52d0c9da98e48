using FashionViL.Autograd;
using FashionViL.Data;
using FashionViL.Nn;
using FashionViL.Nn.Optim;

namespace FashionViL.Model;

/// <summary>MMF's <c>FashionViLForPretraining</c> (the <c>model</c> child): <c>bert</c>, <c>contrastive_norm</c>, <c>heads</c>.</summary>
public sealed class PretrainingModel : Module
{
    public FashionViLBert Bert { get; }
    public NormalizationLayer ContrastiveNorm { get; }
    public PretrainingHeads Heads { get; }

    public PretrainingModel(FashionViLConfig c, Generator? g = null, DType dtype = DType.Float32)
    {
        Bert = RegisterModule("bert", new FashionViLBert(c.Bert, c.VisualEmbeddingDim, g, dtype));
        ContrastiveNorm = RegisterModule("contrastive_norm", new NormalizationLayer(c.NormScaleInit, dtype));
        Heads = RegisterModule("heads", new PretrainingHeads(c, Bert.Embeddings.WordEmbeddings, g, dtype));
    }
}

/// <summary>Which text rows the MLM head (transform + tied 30,522-way decoder) runs on; the loss and gradients are the same.</summary>
public enum MlmHeadRows
{
    /// <summary>Only the rows with a label (what the model trains with: the others add nothing to the loss).</summary>
    Labelled,
    /// <summary>Every text row of every sample, the unlabelled ones ignored by the cross-entropy (index −1) — what the
    /// PyTorch step script does; for a fair step-time comparison (<c>bench step --mlm-head-rows all</c>).</summary>
    All,
}

/// <summary>What a task computed: the loss and, where the task has a classifier, the scores and targets it was trained on.</summary>
public sealed class TaskOutput : IDisposable
{
    public required Tensor Loss { get; init; }
    /// <summary>ITM: (B,2) logits; MLM: (N,V) logits of the N labelled tokens (of all B·T text rows under
    /// <see cref="MlmHeadRows.All"/>, targets −1 on the unlabelled ones); MPFC: (N,K) logits of the N masked cells.</summary>
    public Tensor? Scores { get; init; }
    /// <summary>The class targets of <see cref="Scores"/> (int64), or the ITM match labels.</summary>
    public Tensor? Targets { get; init; }
    /// <summary>ITM: the text index each image was paired with (i = its own text), as an int64 [B] tensor on the model's
    /// device (built there, so the step never waits for it).</summary>
    public Tensor? PairingIndex { get; init; }
    /// <summary>ITM: <see cref="PairingIndex"/> read back to the host (a device→host read on a GPU).</summary>
    public int[]? Pairing => PairingIndex?.ToArray<long>().Select(x => checked((int)x)).ToArray();

    public void Dispose() { Scores?.Dispose(); Targets?.Dispose(); PairingIndex?.Dispose(); }
}

/// <summary>
/// FashionViL for pre-training (spec §1, §2): <c>image_encoder</c> (ResNet trunk) + <c>model</c> (shared BERT, contrastive
/// normalisation, task heads), with the six tasks itm, pac, itc, icc (MVC), mlm, mpfc. Parameter names equal the authors'
/// MMF state dict. Batches must already be on the model's device.
/// </summary>
public sealed class FashionViLPretraining : Module
{
    public FashionViLConfig Config { get; }
    public ImageEncoder ImageEncoder { get; }
    public PretrainingModel Model { get; }
    public FashionViLBert Bert => Model.Bert;
    /// <summary>The rows the MLM head runs on (<see cref="MlmHeadRows.Labelled"/> unless a benchmark asks for all).</summary>
    public MlmHeadRows MlmHeadRows { get; set; } = MlmHeadRows.Labelled;

    /// <summary>Builds the model with the reference's fresh init: BERT side HF init (N(0, 0.02), zero biases, LayerNorm 1/0,
    /// then the visual tables copied from the text ones), heads PyTorch default (MLM head HF init), PAC matrix N(0,1),
    /// <c>norm_s</c> = 4, ResNet convs kaiming-normal (fan_out). Dropout masks come from <paramref name="g"/>.</summary>
    public FashionViLPretraining(FashionViLConfig config, Generator? g = null, DType dtype = DType.Float32)
    {
        config.Validate();
        Config = config;
        ImageEncoder = RegisterModule("image_encoder", new ImageEncoder(config.ResNet, g, dtype));
        Model = RegisterModule("model", new PretrainingModel(config, g, dtype));
        Init.HfInit(Model.Bert, g, config.Bert.InitializerRange);
        Init.HfInit(Model.Heads.Mlm, g, config.Bert.InitializerRange);
        InitVisualFromText();
    }

    /// <summary>The reference's <c>initialize_visual_from_pretrained</c>: call after loading BERT weights.</summary>
    public void InitVisualFromText() => Model.Bert.Embeddings.InitializeVisualFromText();

    // ------------------------------------------------------------------ paths (spec §1.1, §1.5)

    /// <summary>ResNet grid features (B, G, C) of images (B,3,H,W).</summary>
    public Tensor EncodeImages(Tensor images) => ImageEncoder.Forward(images);

    /// <summary>Unimodal image vector: mean over the G tokens of projection(f) (B,H); no LayerNorm, no position/type.</summary>
    public Tensor ImageVector(Tensor grid)
    {
        using var p = Model.Bert.ImageEmbedding(grid);
        return p.Mean(1);
    }

    /// <summary>Unimodal text vector: masked mean of the text-only BERT output over non-pad positions (B,H).</summary>
    public Tensor TextVector(Tensor inputIds, Tensor segmentIds, Tensor inputMask)
    {
        var (seq, pooled) = Model.Bert.TextEmbedding(inputIds, segmentIds, inputMask);
        using (seq) using (pooled) return Losses.MaskedMean(seq, inputMask);
    }

    /// <summary>The joint key mask [input_mask (T), ones (G)] as float32 (B, T+G).</summary>
    public static Tensor JointMask(Tensor inputMask, int gridSize)
    {
        using var m = inputMask.To(DType.Float32);
        using var ones = Tensor.Ones([inputMask.Size(0), gridSize], DType.Float32, inputMask.Device);
        return Ops.Cat([m, ones], 1);
    }

    /// <summary>Joint forward: (sequence (B,T+G,H), pooled (B,H)).</summary>
    public (Tensor Sequence, Tensor Pooled) Joint(Tensor inputIds, Tensor segmentIds, Tensor grid, Tensor attentionMask) =>
        Model.Bert.JointEmbedding(inputIds, segmentIds, grid, attentionMask);

    /// <summary>Normalised ITC vectors for retrieval, no gradient: N(mean projection(ResNet(images))).</summary>
    public Tensor EmbedImages(Tensor images)
    {
        using var _ = GradMode.NoGrad();
        using var grid = EncodeImages(images);
        using var v = ImageVector(grid);
        return Model.ContrastiveNorm.Forward(v);
    }

    /// <summary>Normalised ITC vectors for retrieval, no gradient: N(masked-mean BERT_text(ids)).</summary>
    public Tensor EmbedTexts(Tensor inputIds, Tensor segmentIds, Tensor inputMask)
    {
        using var _ = GradMode.NoGrad();
        using var t = TextVector(inputIds, segmentIds, inputMask);
        return Model.ContrastiveNorm.Forward(t);
    }

    // ------------------------------------------------------------------ tasks (spec §2)

    private int CheckBatch(PretrainBatch b, Tensor grid)
    {
        int n = b.Size, t = b.InputIds.Size(1);
        foreach (var (name, x) in new[] { ("input_ids", b.InputIds), ("input_ids_masked", b.InputIdsMasked), ("input_mask", b.InputMask), ("segment_ids", b.SegmentIds), ("lm_label_ids", b.LmLabelIds) })
            if (x.Rank != 2 || x.Size(0) != n || x.Size(1) != t)
                throw new ArgumentException($"fashionvil: batch field {name} {x.ShapeString} must be [{n},{t}]");
        if (grid.Size(0) != n) throw new ArgumentException($"fashionvil: {grid.Size(0)} images for a batch of {n}");
        return t;
    }

    private (Tensor V, Tensor T) ItcVectors(Tensor grid, PretrainBatch b)
    {
        using var v = ImageVector(grid);
        using var t = TextVector(b.InputIds, b.SegmentIds, b.InputMask);
        return (Model.ContrastiveNorm.Forward(v), Model.ContrastiveNorm.Forward(t));
    }

    /// <summary>ITC: symmetric InfoNCE (τ = 1) between N(image vector) and N(text vector) of the unmasked text.</summary>
    public Tensor Itc(PretrainBatch batch)
    {
        using var grid = EncodeImages(batch.Image);
        CheckBatch(batch, grid);
        var (v, t) = ItcVectors(grid, batch);
        using (v) using (t) return Losses.Contrastive(v, t);
    }

    /// <summary>Hard negatives from a row-major B×B image-text score matrix: diagonal set to −1, then the row argmax (first maximum).</summary>
    public static int[] HardNegatives(float[] scores, int b)
    {
        if (scores.Length != b * b) throw new ArgumentException($"hard negatives: {scores.Length} scores is not {b}×{b}");
        var hard = new int[b];
        for (int i = 0; i < b; i++)
        {
            int best = -1; float bestV = float.NegativeInfinity;
            for (int j = 0; j < b; j++)
            {
                float s = i == j ? -1f : scores[i * b + j];
                if (best < 0 || s > bestV) { best = j; bestV = s; }
            }
            hard[i] = best;
        }
        return hard;
    }

    /// <summary>ITM with swap decisions drawn from <paramref name="g"/>: sample i is swapped when U(0,1) &gt; 1 − p (p = 0.5).</summary>
    public TaskOutput Itm(PretrainBatch batch, Generator g)
    {
        using var u = g.Uniform([batch.Size]);
        var draws = u.ToArray<float>();
        return Itm(batch, draws.Select(x => x > 1 - Config.ItmSwapProbability).ToArray());
    }

    /// <summary>ITM with explicit swap decisions: hard negatives mined with <c>model</c> in eval mode under no-grad from the ITC
    /// scores; swapped samples take their hard text and target 0, the others keep their text and target 1; CE on the
    /// Linear(H→2) head over the joint pooled output.</summary>
    public TaskOutput Itm(PretrainBatch batch, bool[] swap)
    {
        int n = batch.Size;
        if (swap.Length != n) throw new ArgumentException($"itm: {swap.Length} swap decisions for a batch of {n}");
        using var grid = EncodeImages(batch.Image);
        int t = CheckBatch(batch, grid);
        Tensor index;
        using (GradMode.NoGrad())
        {
            bool wasTraining = Model.IsTraining;
            Model.Eval();
            try
            {
                var (v, tv) = ItcVectors(grid, batch);
                using (v) using (tv)
                {
                    // HardNegatives on the device (no host sync): diagonal set to −1, row argmax (first maximum); then
                    // index = swap ? hard : i, computed exactly in float32 (indices < 2^24) and cast back to int64.
                    using var tt = tv.Transpose(0, 1);
                    using var corr = v.Matmul(tt);
                    var eyeHost = new float[n * n];
                    for (int i = 0; i < n; i++) eyeHost[i * n + i] = 1f;
                    using var eyeF = Tensor.FromArray(eyeHost, [n, n], grid.Device);
                    using var zero = Tensor.Zeros([], DType.Float32, grid.Device);
                    using var onDiagonal = eyeF.Ne(zero);
                    using var minusOne = Tensor.Full([], -1, corr.DType, grid.Device);
                    using var masked = Ops.Where(onDiagonal, minusOne, corr);
                    using var hard = masked.ArgMax(1);
                    using var hardF = hard.To(DType.Float32);
                    using var swapF = Tensor.FromArray(swap.Select(x => x ? 1f : 0f).ToArray(), [n], grid.Device);
                    using var keepF = Tensor.FromArray(swap.Select(x => x ? 0f : 1f).ToArray(), [n], grid.Device);
                    using var own = Tensor.FromArray(Enumerable.Range(0, n).Select(i => (float)i).ToArray(), [n], grid.Device);
                    using var a = swapF * hardF;
                    using var b = keepF * own;
                    using var idxF = a + b;
                    index = idxF.To(DType.Int64);
                }
            }
            finally { Model.Train(wasTraining); }
        }
        var targetsHost = new long[n];
        for (int i = 0; i < n; i++) targetsHost[i] = swap[i] ? 0 : 1;
        using var ids = batch.InputIds.IndexSelect(0, index);
        using var seg = batch.SegmentIds.IndexSelect(0, index);
        using var mask = batch.InputMask.IndexSelect(0, index);
        using var jm = JointMask(mask, grid.Size(1));
        var (seq, pooled) = Joint(ids, seg, grid, jm);
        using (seq) using (pooled)
        {
            var logits = Model.Heads.Itm.Forward(pooled);
            var targets = Tensor.FromArray(targetsHost, [n], grid.Device);
            // Targets are 0/1 (none ignored): the mean is Σ·(1/n), without reading the targets back to count them.
            using var sum = Ops.CrossEntropy(logits, targets, reduction: Reduction.Sum);
            return new TaskOutput { Loss = sum.MulScalar(1.0 / n), Scores = logits, Targets = targets, PairingIndex = index };
        }
    }

    /// <summary>MLM: joint forward of the masked ids with the image; the head (tied decoder) on the first T outputs; CE with
    /// ignore index −1. Only labelled positions go through the head (the others add nothing to the loss or its gradient),
    /// unless <see cref="MlmHeadRows"/> is <see cref="MlmHeadRows.All"/>: then every text row does, and the cross-entropy
    /// ignores the unlabelled ones (the same loss and gradients, more work).</summary>
    public TaskOutput Mlm(PretrainBatch batch)
    {
        using var grid = EncodeImages(batch.Image);
        int t = CheckBatch(batch, grid), n = batch.Size, h = Config.Bert.HiddenSize;
        var labels = batch.LmLabelIdsHost ?? batch.LmLabelIds.ToArray<long>();
        if (labels.Length != batch.LmLabelIds.Numel)
            throw new ArgumentException($"mlm: lm_label_ids_host has {labels.Length} values for lm_label_ids {batch.LmLabelIds.ShapeString}");
        var rows = Enumerable.Range(0, labels.Length).Where(i => labels[i] != -1).Select(i => (long)i).ToArray();
        if (rows.Any(i => labels[i] < 0 || labels[i] >= Config.Bert.VocabSize))
            throw new ArgumentException($"mlm: lm_label_ids must be −1 or a token id in [0, {Config.Bert.VocabSize})");
        using var jm = JointMask(batch.InputMask, grid.Size(1));
        var (seq, pooled) = Joint(batch.InputIdsMasked, batch.SegmentIds, grid, jm);
        using (seq) using (pooled)
        {
            using var text = seq.Narrow(1, 0, t);
            using var flat = text.Reshape(n * t, h);
            if (rows.Length == 0 || MlmHeadRows == MlmHeadRows.All)
            {
                var all = Model.Heads.Mlm.Forward(flat);
                var lab = batch.LmLabelIds.Reshape(n * t);
                // no labelled token: the reference's mean over zero targets (NaN), kept for fidelity
                if (rows.Length == 0) return new TaskOutput { Loss = Ops.CrossEntropy(all, lab, -1), Scores = all, Targets = lab };
                using var allSum = Ops.CrossEntropy(all, lab, -1, Reduction.Sum);
                return new TaskOutput { Loss = allSum.MulScalar(1.0 / rows.Length), Scores = all, Targets = lab };
            }
            using var idx = Tensor.FromArray(rows, [rows.Length], grid.Device);
            using var sel = flat.IndexSelect(0, idx);
            var logits = Model.Heads.Mlm.Forward(sel);
            var targets = Tensor.FromArray(rows.Select(i => labels[i]).ToArray(), [rows.Length], grid.Device);
            // Every picked target is a class id (none is −1), so the mean is Σ·(1/rows) — computed without reading the
            // targets back to count them (the rows were counted on the host).
            using var sum = Ops.CrossEntropy(logits, targets, -1, Reduction.Sum);
            return new TaskOutput { Loss = sum.MulScalar(1.0 / rows.Length), Scores = logits, Targets = targets };
        }
    }

    /// <summary>MPFC: grid features of masked cells (image_masks = 1) zeroed before the projection; joint forward with the
    /// unmasked ids; the visual outputs at masked cells → mpfc head → CE against <paramref name="vqTargets"/> (B,G) int64
    /// (the VQ-VAE codes of the same image) at those cells.</summary>
    public TaskOutput Mpfc(PretrainBatch batch, Tensor vqTargets)
    {
        using var grid = EncodeImages(batch.Image);
        int t = CheckBatch(batch, grid), n = batch.Size, gsz = grid.Size(1), h = Config.Bert.HiddenSize;
        if (batch.ImageMasks.Rank != 2 || batch.ImageMasks.Size(0) != n || batch.ImageMasks.Size(1) != gsz)
            throw new ArgumentException($"mpfc: image_masks {batch.ImageMasks.ShapeString} must be [{n},{gsz}] (the image grid)");
        if (vqTargets.Rank != 2 || vqTargets.Size(0) != n || vqTargets.Size(1) != gsz || vqTargets.DType != DType.Int64)
            throw new ArgumentException($"mpfc: VQ targets {vqTargets.ShapeString} {vqTargets.DType.Name()} must be int64 [{n},{gsz}]");
        var masks = batch.ImageMasksHost ?? batch.ImageMasks.ToArray<long>();
        if (masks.Length != batch.ImageMasks.Numel)
            throw new ArgumentException($"mpfc: image_masks_host has {masks.Length} values for image_masks {batch.ImageMasks.ShapeString}");
        var keep = masks.Select(m => m == 0 ? 1f : 0f).ToArray();
        var cells = Enumerable.Range(0, masks.Length).Where(i => masks[i] == 1).Select(i => (long)i).ToArray();
        // The codes are checked where reading them is free (CPU). On a GPU they stay there (no host sync): they come from the
        // VQ lookup (always in range), and the device cross-entropy gives NaN for an out-of-range id, which stops training.
        if (vqTargets.Device.IsCpu && vqTargets.ToArray<long>().Any(c => c < 0 || c >= Config.NumVqTokens))
            throw new ArgumentException($"mpfc: VQ targets must lie in [0, {Config.NumVqTokens})");
        if (cells.Length == 0)
            throw new ArgumentException($"mpfc: no masked cell in the batch (image_masks {batch.ImageMasks.ShapeString} is all zero); the reference's loss would be NaN");
        using var keepF = Tensor.FromArray(keep, [n, gsz, 1], grid.Device);
        using var keepT = keepF.To(grid.DType);
        using var masked = grid * keepT;
        using var jm = JointMask(batch.InputMask, gsz);
        var (seq, pooled) = Joint(batch.InputIds, batch.SegmentIds, masked, jm);
        using (seq) using (pooled)
        {
            using var vis = seq.Narrow(1, t, gsz);
            using var flat = vis.Reshape(n * gsz, h);
            using var idx = Tensor.FromArray(cells, [cells.Length], grid.Device);
            using var sel = flat.IndexSelect(0, idx);
            var logits = Model.Heads.Mpfc.Forward(sel);
            using var allCodes = vqTargets.Reshape(n * gsz);
            var targets = allCodes.IndexSelect(0, idx);
            // Every code is a class id (see above): the mean is Σ·(1/cells), without reading the targets back.
            using var sum = Ops.CrossEntropy(logits, targets, reduction: Reduction.Sum);
            return new TaskOutput { Loss = sum.MulScalar(1.0 / cells.Length), Scores = logits, Targets = targets };
        }
    }

    /// <summary>The MVC joint key mask (B, T+G) float32: [input_mask, ones(G)] with the columns of the dropped text positions
    /// and of T + each dropped patch set to 0 for every sample.</summary>
    public static Tensor MvcKeyMask(Tensor inputMask, int gridSize, int[] textDrop, int[] patchDrop)
    {
        int t = inputMask.Size(1);
        var keep = Enumerable.Repeat(1f, t + gridSize).ToArray();
        foreach (var i in textDrop) keep[i] = 0;
        foreach (var i in patchDrop) keep[t + i] = 0;
        using var jm0 = JointMask(inputMask, gridSize);
        using var keepT = Tensor.FromArray(keep, [1, t + gridSize], inputMask.Device);
        return jm0 * keepT;
    }

    /// <summary>MVC draw counts: ⌊r·T⌋ text and ⌊r·G⌋ patch positions.</summary>
    public (int Text, int Patch) MvcDropCounts(int textLength, int gridSize) =>
        ((int)Math.Floor(Config.MvcDropRatio * textLength), (int)Math.Floor(Config.MvcDropRatio * gridSize));

    /// <summary>The MVC divisor G − ⌊r·G⌋ (fixed even when patch draws repeat).</summary>
    public int MvcDivisor(int gridSize) => gridSize - MvcDropCounts(0, gridSize).Patch;

    /// <summary>MVC (icc) with the drop set drawn from <paramref name="g"/>: first ⌊r·T⌋ text positions uniform in [0,T), then
    /// ⌊r·G⌋ patch positions uniform in [0,G), both with replacement (the reference's two torch.randint calls).</summary>
    public Tensor Icc(PretrainBatch batch, Generator g)
    {
        int t = batch.InputIds.Size(1), gsz = Config.GridSize;
        if (batch.DvImage.Rank == 4) gsz = (batch.DvImage.Size(2) / 32) * (batch.DvImage.Size(3) / 32);
        var (nt, np) = MvcDropCounts(t, gsz);
        using var td = g.RandInt([nt], 0, t);
        using var pd = g.RandInt([np], 0, gsz);
        return Icc(batch, td.ToArray<long>().Select(x => (int)x).ToArray(), pd.ToArray<long>().Select(x => (int)x).ToArray());
    }

    /// <summary>MVC (icc) with an explicit drop set shared by the batch: anchor N(image vector of view 1); composed side = joint
    /// forward of the unmasked text with view 2 where the dropped text and patch keys are masked for every sample, the
    /// dropped visual outputs zeroed, summed over the G visual outputs and divided by G − ⌊r·G⌋, then N(·); symmetric InfoNCE.</summary>
    public Tensor Icc(PretrainBatch batch, int[] textDrop, int[] patchDrop)
    {
        using var grid1 = EncodeImages(batch.Image);
        int t = CheckBatch(batch, grid1);
        using var grid2 = EncodeImages(batch.DvImage);
        int gsz = grid2.Size(1), n = batch.Size;
        if (grid1.Size(1) != gsz) throw new ArgumentException($"icc: image grid {grid1.ShapeString} and second-view grid {grid2.ShapeString} differ");
        var (nt, np) = MvcDropCounts(t, gsz);
        if (textDrop.Length != nt || patchDrop.Length != np)
            throw new ArgumentException($"icc: expected {nt} text and {np} patch drop positions (ratio {Config.MvcDropRatio}), got {textDrop.Length} and {patchDrop.Length}");
        if (textDrop.Any(i => i < 0 || i >= t) || patchDrop.Any(i => i < 0 || i >= gsz))
            throw new ArgumentException($"icc: drop positions must lie in [0,{t}) (text) and [0,{gsz}) (patches)");
        var keepVis = Enumerable.Repeat(1f, gsz).ToArray();
        foreach (var i in patchDrop) keepVis[i] = 0;
        using var v1 = ImageVector(grid1);
        using var v = Model.ContrastiveNorm.Forward(v1);
        using var jm = MvcKeyMask(batch.InputMask, gsz, textDrop, patchDrop);
        var (seq, pooled) = Joint(batch.InputIds, batch.SegmentIds, grid2, jm);
        using (seq) using (pooled)
        {
            using var vis = seq.Narrow(1, t, gsz);
            using var kvF = Tensor.FromArray(keepVis, [1, gsz, 1], grid1.Device);
            using var kv = kvF.To(vis.DType);
            using var zeroed = vis * kv;
            using var sum = zeroed.Sum(1);
            using var c0 = sum / (double)(gsz - np);
            using var c = Model.ContrastiveNorm.Forward(c0);
            return Losses.Contrastive(v, c);
        }
    }

    /// <summary>PAC: the CosSim head on the unimodal image vector and on the unimodal text vector (no contrastive
    /// normalisation); soft-label CE against attribute_labels for each; the sum of both.</summary>
    public Tensor Pac(PretrainBatch batch)
    {
        using var grid = EncodeImages(batch.Image);
        CheckBatch(batch, grid);
        if (batch.AttributeLabels.Rank != 2 || batch.AttributeLabels.Size(0) != batch.Size || batch.AttributeLabels.Size(1) != Config.NumAttributes)
            throw new ArgumentException($"pac: attribute_labels {batch.AttributeLabels.ShapeString} must be [{batch.Size},{Config.NumAttributes}]");
        using var v = ImageVector(grid);
        using var tv = TextVector(batch.InputIds, batch.SegmentIds, batch.InputMask);
        using var li = Model.Heads.Pac.Forward(v);
        using var lt = Model.Heads.Pac.Forward(tv);
        using var a = Losses.SoftLabelCrossEntropy(li, batch.AttributeLabels);
        using var b = Losses.SoftLabelCrossEntropy(lt, batch.AttributeLabels);
        return a + b;
    }

    /// <summary>Runs one task by its reference name ("itc", "itm", "mlm", "mpfc", "icc", "pac") and returns its loss.
    /// <paramref name="vqTargets"/> is required for "mpfc"; <paramref name="g"/> supplies the ITM swaps and MVC drop sets.</summary>
    public Tensor Forward(string task, PretrainBatch batch, Tensor? vqTargets, Generator g)
    {
        switch (task)
        {
            case "itc": return Itc(batch);
            case "pac": return Pac(batch);
            case "icc": return Icc(batch, g);
            case "itm": { using var o = Itm(batch, g); return o.Loss; }
            case "mlm": { using var o = Mlm(batch); return o.Loss; }
            case "mpfc":
                if (vqTargets is null) throw new ArgumentException("fashionvil: task mpfc needs the VQ-VAE targets (B,G)");
                { using var o = Mpfc(batch, vqTargets); return o.Loss; }
            default: throw new ArgumentException($"fashionvil: unknown task '{task}' (known: {string.Join(", ", FashionViLConfig.AllTasks)})");
        }
    }

    // ------------------------------------------------------------------ checkpoints

    /// <summary>Keys of a reference (PyTorch/MMF) state dict that are aliases of parameters held here once: the tied MLM
    /// decoder (<c>decoder.weight</c> = word embeddings, <c>decoder.bias</c> = <c>heads.mlm.bias</c>).</summary>
    public static readonly IReadOnlyDictionary<string, string> TiedAliases = new Dictionary<string, string>
    {
        ["model.heads.mlm.decoder.weight"] = "model.bert.embeddings.word_embeddings.weight",
        ["model.heads.mlm.decoder.bias"] = "model.heads.mlm.bias",
    };

    /// <summary>
    /// Splits a reference state dict into what this model loads and what it leaves: the tied aliases (checked equal to
    /// their parameter when both are present — a mismatch is an error naming the key), <c>*.position_ids</c> buffers of
    /// the HF embeddings, and <c>model.image_tokenizer.*</c> (the frozen VQ-VAE, a separate module). Everything else is
    /// returned in <c>Model</c> for <see cref="Module.LoadStateDict"/>.
    /// </summary>
    public static (Dictionary<string, Tensor> Model, List<string> Skipped) SplitReferenceStateDict(IReadOnlyDictionary<string, Tensor> sd)
    {
        var keep = new Dictionary<string, Tensor>();
        var skipped = new List<string>();
        foreach (var (k, v) in sd)
        {
            if (TiedAliases.TryGetValue(k, out var target))
            {
                if (sd.TryGetValue(target, out var t))
                {
                    if (!t.Sizes.SequenceEqual(v.Sizes))
                        throw new InvalidDataException($"fashionvil checkpoint: tied key {k} {v.ShapeString} does not match {target} {t.ShapeString}");
                    var a = v.ToArray<float>(); var b = t.ToArray<float>();
                    for (int i = 0; i < a.Length; i++)
                        if (a[i] != b[i] && !(float.IsNaN(a[i]) && float.IsNaN(b[i])))
                            throw new InvalidDataException($"fashionvil checkpoint: tied key {k} differs from {target} at element {i} ({a[i]} vs {b[i]})");
                }
                skipped.Add(k);
            }
            else if (k.EndsWith(".position_ids", StringComparison.Ordinal) || k.StartsWith("model.image_tokenizer.", StringComparison.Ordinal)) skipped.Add(k);
            else keep[k] = v;
        }
        return (keep, skipped);
    }

    // ------------------------------------------------------------------ optimisation (spec §6)

    /// <summary>
    /// The reference's parameter groups: <c>image_encoder.*</c> at lr×<paramref name="lrMultiplier"/> with the default weight
    /// decay (biases and BN included); names containing <c>bert.embeddings.projection</c> or <c>heads</c> at lr×multiplier;
    /// everything else at the base lr; weight decay 0 for names containing <c>bias</c>, <c>LayerNorm.weight</c> or
    /// <c>LayerNorm.bias</c> (BERT side). Frozen parameters are left out. The tied MLM decoder is listed once, as
    /// <c>model.bert.embeddings.word_embeddings.weight</c>.
    /// </summary>
    public List<ParamGroup> ParameterGroups(double baseLr, double weightDecay, double lrMultiplier = 20)
    {
        static bool Fast(string n) => n.Contains("bert.embeddings.projection", StringComparison.Ordinal) || n.Contains("heads", StringComparison.Ordinal);
        static bool NoDecay(string n) => ParamGroups.NoDecay.Any(s => n.Contains(s, StringComparison.Ordinal));
        var rules = new List<ParamRule>
        {
            new("image_encoder", n => n.StartsWith("image_encoder.", StringComparison.Ordinal), lrMultiplier),
            new("fast_no_decay", n => Fast(n) && NoDecay(n), lrMultiplier, 0.0),
            new("fast", Fast, lrMultiplier),
            new("no_decay", NoDecay, 1.0, 0.0),
        };
        return ParamGroups.Build(NamedParameters().Where(p => p.Tensor.RequiresGrad), baseLr, weightDecay, rules, "default");
    }
}

/// <summary>One task per step (spec §2.0): numpy.random.choice's inverse CDF — cdf = cumsum(p)/sum(p), index = number of
/// cdf entries ≤ u (searchsorted side='right') for a uniform u in [0,1).</summary>
public sealed class TaskSampler
{
    private readonly double[] _cdf;
    public IReadOnlyList<string> Tasks { get; }

    public TaskSampler(IReadOnlyList<string> tasks, IReadOnlyList<double> probabilities)
    {
        if (tasks.Count == 0 || tasks.Count != probabilities.Count || probabilities.Any(p => !(p >= 0)) || probabilities.Sum() <= 0)
            throw new ArgumentException($"task sampler: {tasks.Count} tasks need as many non-negative probabilities with a positive sum, got [{string.Join(", ", probabilities)}]");
        Tasks = tasks.ToArray();
        _cdf = new double[tasks.Count];
        double acc = 0;
        for (int i = 0; i < _cdf.Length; i++) { acc += probabilities[i]; _cdf[i] = acc; }
        for (int i = 0; i < _cdf.Length; i++) _cdf[i] /= acc;
    }

    public TaskSampler(FashionViLConfig c) : this(c.Tasks, c.TaskProbabilities) { }

    /// <summary>The task index for a uniform draw u ∈ [0,1).</summary>
    public int Index(double u)
    {
        int k = 0;
        while (k < _cdf.Length && _cdf[k] <= u) k++;
        return Math.Min(k, _cdf.Length - 1);
    }

    /// <summary>Draws one uniform from <paramref name="g"/> (float64) and returns the task name.</summary>
    public string Sample(Generator g)
    {
        using var u = g.Uniform([1], 0, 1, DType.Float64);
        return Tasks[Index(u.ToArray<double>()[0])];
    }
}
