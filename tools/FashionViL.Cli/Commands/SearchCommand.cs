using System.CommandLine;
using FashionViL.Config;
using FashionViL.Inference;
using FashionViL.Training;

namespace FashionViL.Cli;

/// <summary>
/// `fashionvil search --checkpoint CKPT --gallery OUT.safetensors (--text "..." | --image PATH [--text "modification"])`:
/// embeds the query with <see cref="FashionViLEncoder"/> (a text, an image, or an image + modification text composed as in
/// FashionIQ) and prints the top-k gallery items with their scores.
/// </summary>
public static class SearchCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "model checkpoint (the one the gallery was encoded with)", Required = true };
        var gallery = new Option<string>("--gallery") { Description = "embeddings file written by `fashionvil encode`", Required = true };
        var text = new Option<string?>("--text") { Description = "text query; with --image, the modification text of a composed query" };
        var image = new Option<string?>("--image") { Description = "image query (with --text: the reference image of a composed query)" };
        var topK = new Option<int>("--top-k") { Description = "how many items to print", DefaultValueFactory = _ => 10 };
        var device = new Option<string>("--device") { Description = "cpu | cuda | cuda:N", DefaultValueFactory = _ => "cpu" };
        var config = new Option<string?>("--config") { Description = "run config YAML, for checkpoints that carry none" };
        var command = new Command("search", "Rank an encoded gallery for a text, image, or image + modification-text query and print the top-k with scores.")
        {
            checkpoint, gallery, text, image, topK, device, config,
        };
        command.SetAction(parse =>
        {
            var o = parse.InvocationConfiguration.Output;
            var err = parse.InvocationConfiguration.Error;
            try
            {
                Run(parse.GetValue(checkpoint)!, parse.GetValue(gallery)!, parse.GetValue(text), parse.GetValue(image), parse.GetValue(topK),
                    parse.GetValue(device)!, parse.GetValue(config), o);
                return 0;
            }
            catch (Exception e) when (PretrainCommand.IsUserError(e))
            {
                err.WriteLine($"fashionvil search: {e.Message}");
                return 1;
            }
        });
        return command;
    }

    internal static void Run(string checkpoint, string galleryPath, string? text, string? image, int topK, string device, string? configPath, TextWriter o)
    {
        if (text is null && image is null) throw new ArgumentException("give a query: --text \"...\", --image PATH, or both (image + modification text)");
        if (text is not null && string.IsNullOrWhiteSpace(text)) throw new ArgumentException("--text is empty");
        if (image is not null && !File.Exists(image)) throw new FileNotFoundException($"--image: file not found: {image}", image);
        if (topK < 1) throw new ArgumentException($"--top-k {topK} must be at least 1");
        var gallery = EmbeddingFile.Load(galleryPath);
        var config = configPath is null ? null : FvConfig.Load(PretrainSetup.RequireFile(configPath, "--config"));
        using var enc = FashionViLEncoder.Load(checkpoint, PretrainSetup.ParseDevice(device), config);
        if (enc.Dimension != gallery.Dimension)
            throw new InvalidDataException($"dimension mismatch: checkpoint '{checkpoint}' embeds in {enc.Dimension} dimensions but gallery '{galleryPath}' " +
                $"holds {gallery.Dimension}-d vectors{(gallery.Checkpoint is null ? "" : $" (encoded with '{gallery.Checkpoint}')")}; encode the gallery with the same model");
        float[] query; string what;
        if (image is not null && text is not null) { query = enc.EmbedQueries([(image, text)])[0]; what = $"image {image} + modification \"{text}\""; }
        else if (image is not null) { query = enc.EmbedImages([image])[0]; what = $"image {image}"; }
        else { query = enc.EmbedTexts([text!])[0]; what = $"text \"{text}\""; }
        var hits = enc.Rank(query, gallery.Vectors, topK);
        o.WriteLine($"query: {what} | gallery: {gallery.Count} {gallery.Kind} items from {galleryPath}");
        o.WriteLine("rank     score  item");
        for (int i = 0; i < hits.Length; i++)
        {
            var item = gallery.Items[hits[i].Index];
            o.WriteLine($"{i + 1,4} {hits[i].Score,9:F4}  {item.Name}{(item.Text is null ? "" : $"  \"{item.Text}\"")}");
        }
    }
}
