using FashionViL.Autograd;
using FashionViL.Nn.Checkpoints;
using FashionViL.Tensors;

namespace FashionViL.Nn.Models;

/// <summary>
/// Hyper-parameters of the VQ-VAE encoder (BrandonHanx/mmf <c>VQVAEEncoder.Config</c>, <c>double_z</c> false).
/// <see cref="Reference"/> is the FashionViL image tokeniser of spec §3; reduced configs are built with <c>with</c>
/// (e.g. <c>Reference with { Resolution = 64, HiddenDim = 32, ZChannels = 32, CodebookDim = 32, AttnResolutions = [2] }</c>).
/// </summary>
public sealed record VqVaeConfig
{
    /// <summary>Input height and width (the reference tokeniser takes 224×224).</summary>
    public int Resolution { get; init; } = 224;
    public int NumTokens { get; init; } = 1024;
    public int CodebookDim { get; init; } = 256;
    /// <summary>Channels of level 0; level i has <c>HiddenDim·ChMult[i]</c>. Every level's channels must split into 32 GroupNorm groups.</summary>
    public int HiddenDim { get; init; } = 128;
    public int InChannels { get; init; } = 3;
    /// <summary>One entry per resolution level; every level but the last ends in a stride-2 Downsample.</summary>
    public IReadOnlyList<int> ChMult { get; init; } = [1, 1, 2, 2, 4, 4];
    public int NumResBlocks { get; init; } = 2;
    /// <summary>A level gets one AttnBlock after each ResnetBlock when its resolution is listed here (the reference rule).</summary>
    public IReadOnlyList<int> AttnResolutions { get; init; } = [7];
    public int ZChannels { get; init; } = 256;
    public double Dropout { get; init; }

    /// <summary>Spec §3: 224, 1024 codes of 256, hidden 128, ch_mult [1,1,2,2,4,4], 2 res blocks, attention at 7, z 256.</summary>
    public static VqVaeConfig Reference { get; } = new();

    /// <summary>Spatial size of level <paramref name="level"/> (the reference's <c>curr_res</c>: halved, rounded down, per Downsample).</summary>
    public int LevelResolution(int level)
    {
        if (level < 0 || level >= ChMult.Count) throw new ArgumentOutOfRangeException(nameof(level), $"vqvae: level {level} not in 0..{ChMult.Count - 1}");
        int r = Resolution;
        for (int i = 0; i < level; i++) r /= 2;
        return r;
    }

    /// <summary>Whether level <paramref name="level"/> has attention blocks (its resolution is in <see cref="AttnResolutions"/>).</summary>
    public bool LevelHasAttention(int level) => AttnResolutions.Contains(LevelResolution(level));

    /// <summary>Side of the token grid (7 for the reference), so a 224×224 image gives 49 tokens.</summary>
    public int GridSize => LevelResolution(ChMult.Count - 1);

    public int TokensPerImage => GridSize * GridSize;

    internal void Validate()
    {
        if (Resolution < 1 || NumTokens < 1 || CodebookDim < 1 || HiddenDim < 1 || InChannels < 1 || ChMult.Count < 1
            || NumResBlocks < 1 || ZChannels < 1 || ChMult.Any(m => m < 1) || !(Dropout is >= 0 and <= 1))
            throw new ArgumentException($"vqvae: invalid config {Describe()}");
        if (GridSize < 1)
            throw new ArgumentException($"vqvae: resolution {Resolution} is too small for {ChMult.Count - 1} downsamples ({Describe()})");
        foreach (int c in ChMult.Select(m => HiddenDim * m).Prepend(HiddenDim))
            if (c % VqVaeResnetBlock.Groups != 0)
                throw new ArgumentException($"vqvae: {c} channels do not split into {VqVaeResnetBlock.Groups} GroupNorm groups (hidden_dim {HiddenDim}, ch_mult [{string.Join(",", ChMult)}])");
    }

    /// <summary>The config in the reference's field names.</summary>
    public string Describe() =>
        $"resolution {Resolution}, num_tokens {NumTokens}, codebook_dim {CodebookDim}, hidden_dim {HiddenDim}, in_channels {InChannels}, " +
        $"ch_mult [{string.Join(",", ChMult)}], num_res_blocks {NumResBlocks}, attn_resolutions [{string.Join(",", AttnResolutions)}], " +
        $"z_channels {ZChannels}, dropout {Dropout}";
}

internal static class VqVaeUtil
{
    /// <summary>Frees an intermediate now, step scope or not (the graph keeps what backward needs through its own aliases),
    /// so tokenising inside a training step's scope stays at the memory of one chunk's live activations.</summary>
    public static void Drop(Tensor t) => t.Dispose();

    /// <summary>GroupNorm(32 groups, eps 1e-6, affine): the reference's <c>Normalize</c>.</summary>
    public static GroupNorm Normalize(int channels, DType dtype) => new(VqVaeResnetBlock.Groups, channels, 1e-6, dtype: dtype);

    /// <summary>swish(GroupNorm(x)): one fused pass in the frozen (no-gradient) tokenizer, the two ops otherwise.</summary>
    public static Tensor NormSwish(GroupNorm norm, Tensor x) => norm.ForwardSilu(x);
}

/// <summary>
/// Reference <c>ResnetBlock</c> without timestep embedding: h = conv2(dropout(swish(norm2(conv1(swish(norm1(x))))))),
/// out = shortcut(x) + h with a 1×1 <c>nin_shortcut</c> when the channel count changes.
/// </summary>
public sealed class VqVaeResnetBlock : Module
{
    internal const int Groups = 32;
    private readonly GroupNorm _norm1, _norm2;
    private readonly Conv2d _conv1, _conv2;
    private readonly Dropout _dropout;
    private readonly Conv2d? _ninShortcut;

    public int InChannels { get; }
    public int OutChannels { get; }

    public VqVaeResnetBlock(int inChannels, int outChannels, double dropout, Generator? g, DType dtype, bool init = true)
    {
        InChannels = inChannels; OutChannels = outChannels;
        _norm1 = RegisterModule("norm1", VqVaeUtil.Normalize(inChannels, dtype));
        _conv1 = RegisterModule("conv1", new Conv2d(inChannels, outChannels, 3, padding: 1, generator: g, dtype: dtype, initialize: init));
        _norm2 = RegisterModule("norm2", VqVaeUtil.Normalize(outChannels, dtype));
        _dropout = RegisterModule("dropout", new Dropout(dropout, g));
        _conv2 = RegisterModule("conv2", new Conv2d(outChannels, outChannels, 3, padding: 1, generator: g, dtype: dtype, initialize: init));
        if (inChannels != outChannels)
            _ninShortcut = RegisterModule("nin_shortcut", new Conv2d(inChannels, outChannels, 1, generator: g, dtype: dtype, initialize: init));
    }

    public override Tensor Forward(Tensor x)
    {
        var a = VqVaeUtil.NormSwish(_norm1, x);
        var h = _conv1.Forward(a);
        VqVaeUtil.Drop(a);
        var b = VqVaeUtil.NormSwish(_norm2, h);
        VqVaeUtil.Drop(h);
        var d = _dropout.Forward(b);
        VqVaeUtil.Drop(b);
        var h2 = _conv2.Forward(d);
        VqVaeUtil.Drop(d);
        var shortcut = _ninShortcut?.Forward(x) ?? x;
        var y = shortcut + h2;
        VqVaeUtil.Drop(h2);
        if (_ninShortcut is not null) VqVaeUtil.Drop(shortcut);
        return y;
    }
}

/// <summary>
/// Reference <c>AttnBlock</c>: single-head attention over the H·W positions of GroupNorm(x) with 1×1-conv q, k, v,
/// scale c^(−1/2), softmax over keys; out = x + proj_out(attention).
/// </summary>
public sealed class VqVaeAttnBlock : Module
{
    private readonly GroupNorm _norm;
    private readonly Conv2d _q, _k, _v, _projOut;

    public int Channels { get; }

    public VqVaeAttnBlock(int channels, Generator? g, DType dtype, bool init = true)
    {
        Channels = channels;
        _norm = RegisterModule("norm", VqVaeUtil.Normalize(channels, dtype));
        _q = RegisterModule("q", new Conv2d(channels, channels, 1, generator: g, dtype: dtype, initialize: init));
        _k = RegisterModule("k", new Conv2d(channels, channels, 1, generator: g, dtype: dtype, initialize: init));
        _v = RegisterModule("v", new Conv2d(channels, channels, 1, generator: g, dtype: dtype, initialize: init));
        _projOut = RegisterModule("proj_out", new Conv2d(channels, channels, 1, generator: g, dtype: dtype, initialize: init));
    }

    public override Tensor Forward(Tensor x)
    {
        int b = x.Size(0), c = x.Size(1), hh = x.Size(2), ww = x.Size(3);
        var n = _norm.Forward(x);
        // [B,C,H,W] → [B,1,HW,C]: one head whose rows are the positions.
        Tensor Rows(Conv2d conv)
        {
            var t = conv.Forward(n);
            var flat = t.Reshape(b, 1, c, hh * ww);
            VqVaeUtil.Drop(t);
            var rows = flat.Transpose(2, 3);
            VqVaeUtil.Drop(flat);
            return rows;
        }
        var q = Rows(_q);
        var k = Rows(_k);
        var v = Rows(_v);
        VqVaeUtil.Drop(n);
        var o = Ops.Attention(q, k, v, null, 1.0 / Math.Sqrt(c));
        VqVaeUtil.Drop(q); VqVaeUtil.Drop(k); VqVaeUtil.Drop(v);
        var ot = o.Reshape(b, hh * ww, c).Transpose(1, 2);          // [B, C, HW]
        VqVaeUtil.Drop(o);
        var oc = ot.Contiguous();
        VqVaeUtil.Drop(ot);
        var grid = oc.Reshape(b, c, hh, ww);
        VqVaeUtil.Drop(oc);
        var p = _projOut.Forward(grid);
        VqVaeUtil.Drop(grid);
        var y = x + p;
        VqVaeUtil.Drop(p);
        return y;
    }
}

/// <summary>Reference <c>Downsample</c> (with conv): zero-pad right and bottom by one, then conv3×3 stride 2, no padding.</summary>
public sealed class VqVaeDownsample : Module
{
    private readonly Conv2d _conv;

    public VqVaeDownsample(int channels, Generator? g, DType dtype, bool init = true) =>
        _conv = RegisterModule("conv", new Conv2d(channels, channels, 3, 3,
            new Conv2dParams(StrideH: 2, StrideW: 2, PadTop: 0, PadBottom: 1, PadLeft: 0, PadRight: 1), generator: g, dtype: dtype, initialize: init));

    public override Tensor Forward(Tensor x) => _conv.Forward(x);
}

/// <summary>One resolution level of the encoder: <c>block</c> (ResnetBlocks), <c>attn</c> (empty or one per block), optional <c>downsample</c>.</summary>
public sealed class VqVaeLevel : Module
{
    public ModuleList Block { get; }
    public ModuleList Attn { get; }
    public VqVaeDownsample? Downsample { get; }

    internal VqVaeLevel(ModuleList block, ModuleList attn, VqVaeDownsample? downsample)
    {
        Block = RegisterModule("block", block);
        Attn = RegisterModule("attn", attn);
        if (downsample is not null) Downsample = RegisterModule("downsample", downsample);
    }

    public override Tensor Forward(Tensor x)
    {
        var h = x;
        for (int j = 0; j < Block.Count; j++)
        {
            var next = Block[j].Forward(h);
            if (!ReferenceEquals(h, x)) VqVaeUtil.Drop(h);
            h = next;
            if (Attn.Count > 0)
            {
                next = Attn[j].Forward(h);
                VqVaeUtil.Drop(h);
                h = next;
            }
        }
        if (Downsample is not null)
        {
            var next = Downsample.Forward(h);
            if (!ReferenceEquals(h, x)) VqVaeUtil.Drop(h);
            h = next;
        }
        return ReferenceEquals(h, x) ? x.Alias() : h;
    }
}

/// <summary>The middle of the encoder: <c>block_1</c>, <c>attn_1</c>, <c>block_2</c>.</summary>
public sealed class VqVaeMid : Module
{
    public VqVaeResnetBlock Block1 { get; }
    public VqVaeAttnBlock Attn1 { get; }
    public VqVaeResnetBlock Block2 { get; }

    internal VqVaeMid(int channels, double dropout, Generator? g, DType dtype, bool init = true)
    {
        Block1 = RegisterModule("block_1", new VqVaeResnetBlock(channels, channels, dropout, g, dtype, init));
        Attn1 = RegisterModule("attn_1", new VqVaeAttnBlock(channels, g, dtype, init));
        Block2 = RegisterModule("block_2", new VqVaeResnetBlock(channels, channels, dropout, g, dtype, init));
    }

    public override Tensor Forward(Tensor x)
    {
        var a = Block1.Forward(x);
        var b = Attn1.Forward(a);
        VqVaeUtil.Drop(a);
        var c = Block2.Forward(b);
        VqVaeUtil.Drop(b);
        return c;
    }
}

/// <summary>Reference <c>VAEEncoder</c> (<c>double_z</c> false): conv_in, down levels, mid, norm_out, swish, conv_out → z_channels.</summary>
public sealed class VaeEncoder : Module
{
    private readonly Conv2d _convIn, _convOut;
    private readonly GroupNorm _normOut;

    public ModuleList Down { get; }
    public VqVaeMid Mid { get; }

    public VaeEncoder(VqVaeConfig c, Generator? g, DType dtype, bool init = true)
    {
        _convIn = RegisterModule("conv_in", new Conv2d(c.InChannels, c.HiddenDim, 3, padding: 1, generator: g, dtype: dtype, initialize: init));
        Down = RegisterModule("down", new ModuleList());
        int blockIn = c.HiddenDim;
        for (int i = 0; i < c.ChMult.Count; i++)
        {
            var block = new ModuleList();
            var attn = new ModuleList();
            int blockOut = c.HiddenDim * c.ChMult[i];
            for (int j = 0; j < c.NumResBlocks; j++)
            {
                block.Add(new VqVaeResnetBlock(blockIn, blockOut, c.Dropout, g, dtype, init));
                blockIn = blockOut;
                if (c.LevelHasAttention(i)) attn.Add(new VqVaeAttnBlock(blockIn, g, dtype, init));
            }
            var down = i != c.ChMult.Count - 1 ? new VqVaeDownsample(blockIn, g, dtype, init) : null;
            Down.Add(new VqVaeLevel(block, attn, down));
        }
        Mid = RegisterModule("mid", new VqVaeMid(blockIn, c.Dropout, g, dtype, init));
        _normOut = RegisterModule("norm_out", VqVaeUtil.Normalize(blockIn, dtype));
        _convOut = RegisterModule("conv_out", new Conv2d(blockIn, c.ZChannels, 3, padding: 1, generator: g, dtype: dtype, initialize: init));
    }

    public override Tensor Forward(Tensor x)
    {
        var h = _convIn.Forward(x);
        foreach (var level in Down)
        {
            var next = level.Forward(h);
            VqVaeUtil.Drop(h);
            h = next;
        }
        var m = Mid.Forward(h);
        VqVaeUtil.Drop(h);
        var s = VqVaeUtil.NormSwish(_normOut, m);
        VqVaeUtil.Drop(m);
        var z = _convOut.Forward(s);
        VqVaeUtil.Drop(s);
        return z;
    }
}

/// <summary>Reference <c>EmbeddingEMA</c>: buffers <c>weight</c> [K, D] (the codebook), <c>cluster_size</c> [K], <c>embed_avg</c> [K, D].</summary>
public sealed class EmbeddingEma : Module
{
    public Tensor Weight => Buffer("weight")!;
    public Tensor ClusterSize => Buffer("cluster_size")!;
    public Tensor EmbedAvg => Buffer("embed_avg")!;

    /// <summary>Codebook ~ N(0, 1) like the reference's <c>torch.randn</c>; <c>embed_avg</c> a copy of it, <c>cluster_size</c> zeros.</summary>
    public EmbeddingEma(int numTokens, int codebookDim, Generator? g, DType dtype, bool init = true)
    {
        var w = init ? (g ?? Generator.Default).Normal([numTokens, codebookDim], 0, 1, dtype) : Tensor.Zeros([numTokens, codebookDim], dtype);
        RegisterBuffer("weight", w);
        RegisterBuffer("cluster_size", Tensor.Zeros([numTokens], dtype));
        using (GradMode.NoGrad()) RegisterBuffer("embed_avg", w.Clone());
    }
}

/// <summary>Reference <c>EMAVectorQuantizer</c>; only its nearest-code lookup is used (the EMA updates are never called in FashionViL).</summary>
public sealed class EmaVectorQuantizer : Module
{
    public EmbeddingEma Embedding { get; }
    public int NumTokens { get; }
    public int CodebookDim { get; }

    public EmaVectorQuantizer(int numTokens, int codebookDim, Generator? g, DType dtype, bool init = true)
    {
        NumTokens = numTokens; CodebookDim = codebookDim;
        Embedding = RegisterModule("embedding", new EmbeddingEma(numTokens, codebookDim, g, dtype, init));
    }

    /// <summary>
    /// Code indices (B, h·w) int64 for z (B, D, h, w): position = row·w + col, index = argmin_k ‖z − e_k‖² computed as
    /// ‖z‖² + ‖e_k‖² − 2 z·e_k, first minimum on ties (spec §3 "VQ lookup"). No gradient.
    /// </summary>
    public Tensor Lookup(Tensor z)
    {
        if (z.Rank != 4 || z.Size(1) != CodebookDim)
            throw new ArgumentException($"vq lookup: z {z.ShapeString} must be [B, {CodebookDim}, h, w] for codebook {Embedding.Weight.ShapeString}");
        int b = z.Size(0), hw = z.Size(2) * z.Size(3);
        using var perm = z.Permute(0, 2, 3, 1);
        using var rows = perm.Reshape(b * hw, CodebookDim);
        using var ids = Ops.VqLookup(rows, Embedding.Weight);
        return ids.Reshape(b, hw);
    }
}

/// <summary>
/// The FashionViL image tokeniser (BrandonHanx/mmf <c>VQVAEEncoder</c>, spec §3): <c>encoder</c> (VAEEncoder),
/// <c>quantize</c> (EMA codebook), <c>quant_conv</c> (1×1, z_channels → codebook_dim), with the reference's state-dict
/// names. It is built frozen (no parameter requires a gradient) and in eval mode, like the reference's tokeniser.
/// </summary>
public sealed class VqVaeEncoder : Module
{
    private readonly Conv2d _quantConv;

    public VqVaeConfig Config { get; }
    public VaeEncoder Encoder { get; }
    public EmaVectorQuantizer Quantize { get; }

    /// <param name="initialize">false: conv weights, biases and the codebook are zeros instead of the reference's random
    /// init (for weights loaded right after; skips ~41 M random draws for the spec config).</param>
    public VqVaeEncoder(VqVaeConfig? config = null, Generator? generator = null, DType dtype = DType.Float32, bool initialize = true)
    {
        Config = config ?? VqVaeConfig.Reference;
        Config.Validate();
        // Registration order = the reference's attribute order, so StateDict() lists keys as torch does.
        Encoder = RegisterModule("encoder", new VaeEncoder(Config, generator, dtype, initialize));
        Quantize = RegisterModule("quantize", new EmaVectorQuantizer(Config.NumTokens, Config.CodebookDim, generator, dtype, initialize));
        _quantConv = RegisterModule("quant_conv", new Conv2d(Config.ZChannels, Config.CodebookDim, 1, generator: generator, dtype: dtype, initialize: initialize));
        Freeze();
        Eval();
    }

    private void CheckImages(Tensor images)
    {
        if (images.Rank != 4 || images.Size(1) != Config.InChannels || images.Size(2) != Config.Resolution || images.Size(3) != Config.Resolution)
            throw new ArgumentException($"vqvae: images {images.ShapeString} must be [B, {Config.InChannels}, {Config.Resolution}, {Config.Resolution}] " +
                                        $"(in_channels {Config.InChannels}, resolution {Config.Resolution})");
    }

    /// <summary>z after <c>quant_conv</c>: (B, codebook_dim, g, g) for images (B, in_channels, resolution, resolution), g = <see cref="VqVaeConfig.GridSize"/>.</summary>
    public Tensor Encode(Tensor images)
    {
        CheckImages(images);
        var h = Encoder.Forward(images);
        var z = _quantConv.Forward(h);
        VqVaeUtil.Drop(h);
        return z;
    }

    /// <summary>z (B, codebook_dim, g, g), like <see cref="Encode"/>.</summary>
    public override Tensor Forward(Tensor x) => Encode(x);

    /// <summary>
    /// Code indices (B, g·g) int64, row-major over the grid (49 per 224×224 image for the reference config), computed
    /// like the reference's <c>get_patch_labels</c>: eval mode, no gradient, <paramref name="chunk"/> images at a time
    /// (a last partial chunk is allowed).
    /// </summary>
    public Tensor Tokenize(Tensor images, int chunk = 8)
    {
        if (chunk < 1) throw new ArgumentOutOfRangeException(nameof(chunk), $"vqvae: chunk {chunk} must be at least 1");
        CheckImages(images);
        Eval();
        int b = images.Size(0);
        using var _ = GradMode.NoGrad();
        var parts = new List<Tensor>();
        try
        {
            for (int start = 0; start < b; start += chunk)
            {
                using var piece = images.Narrow(0, start, Math.Min(chunk, b - start));
                using var z = Encode(piece);
                parts.Add(Quantize.Lookup(z));
            }
            if (parts.Count == 1) { var only = parts[0]; parts.Clear(); return only; }
            return parts.Count == 0 ? Tensor.Empty([0, Config.TokensPerImage], DType.Int64, images.Device) : Ops.Cat([.. parts], 0);
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
        }
    }

    /// <summary>
    /// Reads the tensors of a VQ-VAE checkpoint (<c>.pth</c> via <see cref="TorchCheckpoint"/>, or <c>.safetensors</c>) in
    /// this module's names: the raw <c>VQVAEEncoder</c> state dict as is (<see cref="CheckpointMappings.VqvaeToOurs"/>),
    /// or, in a FashionViL MMF checkpoint, the entries under <c>model.image_tokenizer.</c> (optionally behind DDP's
    /// <c>module.</c>) with the prefix removed and everything else dropped (<see cref="CheckpointMappings.MmfToVqvae"/>).
    /// A file that is neither throws <see cref="InvalidDataException"/> naming it.
    /// </summary>
    public static Dictionary<string, Tensor> ReadCheckpoint(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"vqvae checkpoint '{path}': file not found", path);
        var all = path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? SafeTensors.Load(path) : TorchCheckpoint.Load(path);
        Dictionary<string, Tensor>? picked = null;
        try
        {
            bool mmf = all.Keys.Any(k => k.StartsWith(CheckpointMappings.MmfTokenizerPrefix, StringComparison.Ordinal)
                                         || k.StartsWith("module." + CheckpointMappings.MmfTokenizerPrefix, StringComparison.Ordinal));
            picked = CheckpointMapping.Apply(all, mmf ? CheckpointMappings.MmfToVqvae() : CheckpointMappings.VqvaeToOurs(), path).Tensors;
            return picked;
        }
        finally
        {
            // The mapping keeps the same tensor objects; free the dropped ones (or all of them on an error).
            var kept = new HashSet<Tensor>(picked?.Values ?? Enumerable.Empty<Tensor>(), ReferenceEqualityComparer.Instance);
            foreach (var t in all.Values) if (!kept.Contains(t)) t.Dispose();
        }
    }

    /// <summary>
    /// Loads a checkpoint into this module strictly (see <see cref="ReadCheckpoint"/>): any missing, unexpected or
    /// mis-shaped key throws one <see cref="InvalidDataException"/> naming the file and listing all of them.
    /// </summary>
    public VqVaeEncoder LoadWeights(string path)
    {
        var dict = ReadCheckpoint(path);
        try
        {
            // Strict: on any mismatch nothing is copied and the message lists every missing/unexpected/mis-shaped key.
            LoadStateDict(dict, strict: true);
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidDataException($"vqvae checkpoint '{path}' does not fit the encoder ({Config.Describe()}): {e.Message}", e);
        }
        finally
        {
            foreach (var t in dict.Values) t.Dispose();
        }
        return this;
    }

    /// <summary>A frozen, eval-mode encoder for <paramref name="config"/> (spec §3 when null) with the weights of
    /// <paramref name="path"/>, e.g. <c>vqvae_ema_pp_224_7x7_encoder_fashionall.pth</c> or a FashionViL MMF checkpoint.</summary>
    public static VqVaeEncoder LoadPretrained(string path, VqVaeConfig? config = null, DType dtype = DType.Float32)
    {
        var m = new VqVaeEncoder(config, dtype: dtype, initialize: false);
        return m.LoadWeights(path);
    }
}
