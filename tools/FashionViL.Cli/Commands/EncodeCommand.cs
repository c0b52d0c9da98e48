using System.CommandLine;
using System.Diagnostics;
using FashionViL.Config;
using FashionViL.Data.Images;
using FashionViL.Inference;
using FashionViL.Training;

namespace FashionViL.Cli;

/// <summary>
/// `fashionvil encode --checkpoint CKPT (--images DIR | --texts FILE) --out OUT.safetensors`: embeds a folder of images or
/// the lines of a text file with <see cref="FashionViLEncoder"/> and writes them (float32 [N,D]) with the item names as an
/// <see cref="EmbeddingFile"/>, atomically.
/// </summary>
public static class EncodeCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "model checkpoint (.ckpt of `fashionvil pretrain` or a retrieval fine-tune; .safetensors / .pth with --config)", Required = true };
        var images = new Option<string?>("--images") { Description = "folder of images to embed (its image files, sorted by name; not recursive)" };
        var texts = new Option<string?>("--texts") { Description = "UTF-8 text file: one text per line, no empty lines" };
        var output = new Option<string>("--out") { Description = "safetensors file to write (replaced atomically)", Required = true };
        var device = new Option<string>("--device") { Description = "cpu | cuda | cuda:N", DefaultValueFactory = _ => "cpu" };
        var batch = new Option<int>("--batch") { Description = "items per forward pass", DefaultValueFactory = _ => 32 };
        var config = new Option<string?>("--config") { Description = "run config YAML, for checkpoints that carry none (plain state dicts, reference .pth)" };
        var command = new Command("encode", "Embed a folder of images or a file of texts with a trained FashionViL (retrieval vectors) into a safetensors file for `fashionvil search`.")
        {
            checkpoint, images, texts, output, device, batch, config,
        };
        command.SetAction(parse =>
        {
            var o = parse.InvocationConfiguration.Output;
            var err = parse.InvocationConfiguration.Error;
            try
            {
                Run(parse.GetValue(checkpoint)!, parse.GetValue(images), parse.GetValue(texts), parse.GetValue(output)!,
                    parse.GetValue(device)!, parse.GetValue(batch), parse.GetValue(config), o);
                return 0;
            }
            catch (Exception e) when (PretrainCommand.IsUserError(e))
            {
                err.WriteLine($"fashionvil encode: {e.Message}");
                return 1;
            }
        });
        return command;
    }

    /// <summary>The image files of <paramref name="dir"/> (extensions of <see cref="ImagePaths.Extensions"/>, case-insensitive), sorted ordinally.</summary>
    public static string[] ImageFiles(string dir)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"--images: folder not found: {dir}");
        var files = Directory.GetFiles(dir)
            .Where(f => ImagePaths.Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
            .Order(StringComparer.Ordinal).ToArray();
        if (files.Length == 0)
            throw new InvalidDataException($"--images: folder '{dir}' holds no image files ({string.Join(" ", ImagePaths.Extensions)})");
        return files;
    }

    /// <summary>The lines of a text file; an empty file or an empty line is an error naming the file and line.</summary>
    public static string[] TextLines(string file)
    {
        if (!File.Exists(file)) throw new FileNotFoundException($"--texts: file not found: {file}", file);
        var lines = File.ReadAllLines(file);
        if (lines.Length == 0) throw new InvalidDataException($"--texts: file '{file}' is empty");
        for (int i = 0; i < lines.Length; i++)
            if (string.IsNullOrWhiteSpace(lines[i]))
                throw new InvalidDataException($"--texts: line {i + 1} of '{file}' is empty (one text per line, no empty lines)");
        return lines;
    }

    internal static void Run(string checkpoint, string? imagesDir, string? textFile, string outPath, string device, int batch, string? configPath, TextWriter o)
    {
        if ((imagesDir is null) == (textFile is null)) throw new ArgumentException("give exactly one of --images DIR or --texts FILE");
        if (batch < 1) throw new ArgumentException($"--batch {batch} must be at least 1");
        // Inputs are checked before the model is loaded, so a typo fails fast.
        var files = imagesDir is null ? null : ImageFiles(imagesDir);
        var lines = textFile is null ? null : TextLines(textFile);
        var outDir = Path.GetDirectoryName(Path.GetFullPath(outPath))!;
        if (!Directory.Exists(outDir)) throw new DirectoryNotFoundException($"--out: folder not found: {outDir}");
        var config = configPath is null ? null : FvConfig.Load(PretrainSetup.RequireFile(configPath, "--config"));
        var sw = Stopwatch.StartNew();
        using var enc = FashionViLEncoder.Load(checkpoint, PretrainSetup.ParseDevice(device), config);
        o.WriteLine($"model {checkpoint}: {enc.Dimension}-d embeddings on {enc.Device} (loaded in {sw.Elapsed.TotalSeconds:F1} s)");
        sw.Restart();
        EmbeddingSet set;
        if (files is not null)
        {
            var vectors = enc.EmbedImages(files, batch);
            set = new EmbeddingSet(vectors, files.Select(f => new EmbeddingItem(Path.GetFileName(f))).ToList(), "image", checkpoint);
        }
        else
        {
            var vectors = enc.EmbedTexts(lines!, batch);
            set = new EmbeddingSet(vectors, lines!.Select((t, i) => new EmbeddingItem($"line {i + 1}", t)).ToList(), "text", checkpoint);
        }
        EmbeddingFile.Save(outPath, set);
        o.WriteLine($"encoded {set.Count} {set.Kind}{(set.Count == 1 ? "" : "s")} in {sw.Elapsed.TotalSeconds:F1} s → {outPath} ([{set.Count},{set.Dimension}] float32)");
    }
}
