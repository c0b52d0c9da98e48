using FashionViL.Data.Images;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FashionViL.Tests.Data;

/// <summary>Shared helpers for the data tests: fixture paths, temp folders, small images written with ImageSharp.</summary>
internal static class ImageTestData
{
    public static string FixtureDir
    {
        get
        {
            for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
            {
                var p = Path.Combine(d.FullName, "tests", "fixtures", "images");
                if (Directory.Exists(p)) return p;
            }
            throw new DirectoryNotFoundException($"tests/fixtures/images not found above {TestContext.CurrentContext.TestDirectory}");
        }
    }

    public static string Fixture(string name) => Path.Combine(FixtureDir, name);

    public static string NewTempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "fv-data-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>An image whose pixel (x, y) is (x, y, (x*7 + y*13) mod 256): positions can be read back from values.</summary>
    public static RgbImage Coordinates(int width, int height)
    {
        var img = new RgbImage(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                int o = (y * width + x) * 3;
                img.Pixels[o] = (byte)x; img.Pixels[o + 1] = (byte)y; img.Pixels[o + 2] = (byte)((x * 7 + y * 13) % 256);
            }
        return img;
    }

    /// <summary>Writes a small RGB PNG (or JPEG, by extension) with a colour gradient; returns the path.</summary>
    public static string WriteImage(string path, int width = 20, int height = 16, byte tint = 0)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var img = new Image<Rgb24>(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
                img[x, y] = new Rgb24((byte)(x * 10), (byte)(y * 15), tint);
        img.Save(path);
        return path;
    }

    /// <summary>Writes the first half of a valid PNG: a truncated file.</summary>
    public static string WriteTruncatedPng(string path)
    {
        var tmp = path + ".full.png";
        WriteImage(tmp, 32, 32);
        var bytes = File.ReadAllBytes(tmp);
        File.Delete(tmp);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        return path;
    }
}
