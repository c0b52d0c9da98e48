using System.CommandLine;
using FashionViL.Nn.Checkpoints;

namespace FashionViL.Cli;

/// <summary>
/// `fashionvil convert in.pth|.bin|.safetensors out.safetensors [--from ...] [--to ours|mmf]`: reads a PyTorch or
/// safetensors checkpoint, renames its keys for our models (src/Nn/Checkpoints/CheckpointMappings.cs) and writes a
/// safetensors file atomically, keeping every dtype.
/// </summary>
public static class ConvertCommand
{
    public static readonly string[] FromValues = ["auto", "torchvision", "hf-bert", "mmf", "vqvae", "raw"];
    public static readonly string[] ToValues = ["ours", "mmf"];

    public static Command Create()
    {
        var input = new Argument<string>("input") { Description = "checkpoint to read: PyTorch zip (.pth, .bin, .pt, .ckpt) or .safetensors" };
        var output = new Argument<string>("output") { Description = "safetensors file to write (replaced atomically)" };
        var from = new Option<string>("--from") { Description = "what the input is (auto: guess from its keys)", DefaultValueFactory = _ => "auto" };
        from.AcceptOnlyFromAmong(FromValues);
        var to = new Option<string>("--to") { Description = "target layout: ours (ResNet50 / BertForMaskedLM / VQ-VAE names) or mmf (the FashionViL layout)", DefaultValueFactory = _ => "ours" };
        to.AcceptOnlyFromAmong(ToValues);
        var includeFc = new Option<bool>("--include-fc") { Description = "torchvision: keep the fc classifier" };
        var finetune = new Option<bool>("--finetune") { Description = "mmf: keep only image_encoder.* and model.bert.* (spec §4 pretrained_state_mapping)" };

        var command = new Command("convert", "Convert a PyTorch / safetensors checkpoint to safetensors with our parameter names.")
        {
            input, output, from, to, includeFc, finetune,
        };
        command.SetAction(parse =>
        {
            var outWriter = parse.InvocationConfiguration.Output;
            var errWriter = parse.InvocationConfiguration.Error;
            try
            {
                Run(parse.GetValue(input)!, parse.GetValue(output)!, parse.GetValue(from)!, parse.GetValue(to)!,
                    parse.GetValue(includeFc), parse.GetValue(finetune), outWriter);
                return 0;
            }
            catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException or NotSupportedException)
            {
                errWriter.WriteLine($"convert: error: {e.Message}");
                return 1;
            }
        });
        return command;
    }

    private static readonly string[] TorchExtensions = [".pth", ".bin", ".pt", ".ckpt", ".tar"];

    /// <summary>Reads <paramref name="inPath"/>'s state dict (PyTorch zip or safetensors, chosen by extension).</summary>
    public static Dictionary<string, Tensor> ReadStateDict(string inPath)
    {
        if (!File.Exists(inPath)) throw new FileNotFoundException($"input '{inPath}' not found", inPath);
        var ext = Path.GetExtension(inPath).ToLowerInvariant();
        if (ext == ".safetensors") return SafeTensors.Load(inPath);
        if (TorchExtensions.Contains(ext)) return TorchCheckpoint.Load(inPath);
        throw new InvalidDataException($"input '{inPath}': unknown extension '{ext}' (expected .safetensors or a PyTorch checkpoint: {string.Join(", ", TorchExtensions)})");
    }

    private static void Run(string inPath, string outPath, string from, string to, bool includeFc, bool finetune, TextWriter log)
    {
        if (!outPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"output '{outPath}' must end in .safetensors");
        if (Path.GetFullPath(inPath) == Path.GetFullPath(outPath))
            throw new ArgumentException($"output '{outPath}' is the input file");
        var tensors = ReadStateDict(inPath);
        try
        {
            var source = from == "auto" ? CheckpointMappings.Detect(tensors.Keys) : ParseFrom(from);
            var target = to == "mmf" ? MappingTarget.Mmf : MappingTarget.Ours;
            var mapping = CheckpointMappings.For(source, target, includeFc, finetune);
            var (mapped, report) = CheckpointMapping.Apply(tensors, mapping, inPath);
            var meta = new Dictionary<string, string>
            {
                ["format"] = "pt",
                ["source"] = Path.GetFileName(inPath),
                ["mapping"] = mapping.Name,
            };
            SafeTensors.Save(outPath, mapped, meta);
            long bytes = mapped.Values.Sum(t => (long)t.Numel * t.DType.Size());
            log.WriteLine($"read {tensors.Count} tensors from {inPath}{(from == "auto" ? $" (detected: {Name(source)})" : "")}");
            log.WriteLine($"wrote {mapped.Count} tensors, {bytes} bytes of data, to {outPath}");
            log.WriteLine($"dtypes: {string.Join(", ", mapped.Values.GroupBy(t => t.DType).OrderBy(g => g.Key).Select(g => $"{g.Key.Name()} {g.Count()}"))}");
            log.WriteLine(report.Summary());
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    private static CheckpointSource ParseFrom(string from) => from switch
    {
        "torchvision" => CheckpointSource.Torchvision,
        "hf-bert" => CheckpointSource.HfBert,
        "mmf" => CheckpointSource.Mmf,
        "vqvae" => CheckpointSource.Vqvae,
        "raw" => CheckpointSource.Raw,
        _ => throw new ArgumentException($"--from '{from}' is not one of {string.Join(", ", FromValues)}"),
    };

    private static string Name(CheckpointSource s) => s switch
    {
        CheckpointSource.Torchvision => "torchvision",
        CheckpointSource.HfBert => "hf-bert",
        CheckpointSource.Mmf => "mmf",
        CheckpointSource.Vqvae => "vqvae",
        _ => "raw",
    };
}
