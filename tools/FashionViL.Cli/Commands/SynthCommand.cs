using System.CommandLine;
using System.Globalization;
using FashionViL.Synth;

namespace FashionViL.Cli;

/// <summary>`fashionvil synth`: write the five datasets in their real layouts with procedurally drawn products.</summary>
public static class SynthCommand
{
    public static Command Create()
    {
        var outOption = new Option<string>("--out")
        {
            Description = "Output directory DIR; the datasets go to DIR/datasets/{BigFACAD,Fashion200k,FashionGen,FashionIQ,PolyvoreOutfits} (use DIR as env.data_dir).",
            Required = true,
        };
        var productsOption = new Option<int>("--products")
        {
            Description = "N: FashionGen products (20% of each sub-category held out as val); Fashion200k and BigFACAD get N/2, Polyvore N/4 outfits, FashionIQ N/8 train + N/16 val triplets per garment class.",
            Required = true,
        };
        productsOption.Validators.Add(r =>
        {
            int v = r.GetValueOrDefault<int>();
            if (v <= 0 || v > SynthOptions.MaxProducts) r.AddError($"--products must be in [1, {SynthOptions.MaxProducts}], got {v}");
        });
        var seedOption = new Option<ulong>("--seed") { Description = "Random seed; the same seed gives byte-identical files.", DefaultValueFactory = _ => 42UL };
        var sizeOption = new Option<int>("--image-size") { Description = "Image side in pixels.", DefaultValueFactory = _ => 256 };
        sizeOption.Validators.Add(r =>
        {
            int v = r.GetValueOrDefault<int>();
            if (v < SynthOptions.MinImageSize || v > SynthOptions.MaxImageSize)
                r.AddError($"--image-size must be in [{SynthOptions.MinImageSize}, {SynthOptions.MaxImageSize}], got {v}");
        });
        var threadsOption = new Option<int>("--threads") { Description = "Rendering threads (0 = all cores); the output does not depend on it.", DefaultValueFactory = _ => 0 };

        var command = new Command("synth", "Generate a synthetic FashionGen/Fashion200k/BigFACAD/FashionIQ/PolyvoreOutfits dataset in the real on-disk formats.")
        {
            outOption, productsOption, seedOption, sizeOption, threadsOption,
        };
        command.SetAction(parse =>
        {
            var output = parse.InvocationConfiguration.Output;
            var error = parse.InvocationConfiguration.Error;
            var options = new SynthOptions(parse.GetValue(outOption)!, parse.GetValue(productsOption), parse.GetValue(seedOption),
                parse.GetValue(sizeOption), parse.GetValue(threadsOption));
            try
            {
                var summary = SyntheticDatasets.Generate(options, output);
                foreach (var (name, count) in summary.Counts) output.WriteLine($"  {name,-40} {count,8}");
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"synth: {summary.Images} images written to {summary.DatasetsDirectory} in {summary.Elapsed.TotalSeconds:F1} s"));
                return 0;
            }
            catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException)
            {
                error.WriteLine(e.Message);
                return 1;
            }
        });
        return command;
    }
}
