using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FashionViL.Data.Images;

/// <summary>An image file that cannot be used: missing, unreadable, corrupt, or beyond the decode limits. The message names the file.</summary>
public sealed class ImageLoadException(string path, string message, Exception? inner = null)
    : IOException($"image '{path}': {message}", inner)
{
    public string Path { get; } = path;
}

/// <summary>Limits checked from the image header before any pixel buffer is allocated (decompression-bomb guard).</summary>
/// <param name="MaxSide">largest accepted width or height in pixels</param>
/// <param name="MaxPixels">largest accepted width·height; the default is PIL's <c>MAX_IMAGE_PIXELS</c> (89,478,485)</param>
/// <param name="MaxFileBytes">largest accepted file size</param>
public sealed record ImageDecodeLimits(int MaxSide = 30_000, long MaxPixels = 89_478_485, long MaxFileBytes = 256L << 20)
{
    public static ImageDecodeLimits Default { get; } = new();
}

/// <summary>
/// Decodes image files with ImageSharp 2 (JPEG, PNG, BMP, GIF, TGA, TIFF, WebP, PBM) into 8-bit RGB the way PIL's
/// <c>Image.open(f).convert("RGB")</c> does: grey is replicated, palettes are looked up, alpha is dropped (not composited
/// onto a background), EXIF orientation is not applied. PNG decodes are bit-identical to PIL; baseline JPEG decoders differ
/// by IDCT/upsampling rounding (a few levels on some pixels).
/// </summary>
public static class ImageLoader
{
    /// <summary>Decodes <paramref name="path"/>; throws <see cref="ImageLoadException"/> naming the file on any failure.</summary>
    public static RgbImage Load(string path, ImageDecodeLimits? limits = null)
    {
        limits ??= ImageDecodeLimits.Default;
        byte[] bytes;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw new ImageLoadException(path, "file not found");
            if (info.Length > limits.MaxFileBytes)
                throw new ImageLoadException(path, $"file is {info.Length} bytes, more than the limit of {limits.MaxFileBytes}");
            bytes = File.ReadAllBytes(path);
        }
        catch (ImageLoadException) { throw; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageLoadException(path, e.Message, e);
        }
        return Decode(bytes, path, limits);
    }

    /// <summary>Resolves <paramref name="path"/> with the reference's extension fallback (<see cref="ImagePaths.Resolve"/>) and decodes it.</summary>
    public static RgbImage LoadWithFallback(string path, ImageDecodeLimits? limits = null) => Load(ImagePaths.Resolve(path), limits);

    /// <summary>Decodes an in-memory file; <paramref name="name"/> is used in error messages.</summary>
    public static RgbImage Decode(byte[] bytes, string name, ImageDecodeLimits? limits = null)
    {
        limits ??= ImageDecodeLimits.Default;
        IImageInfo? info;
        try { info = Image.Identify(bytes); }
        catch (Exception e) { throw new ImageLoadException(name, $"cannot read the image header ({e.GetType().Name}: {e.Message})", e); }
        if (info is null) throw new ImageLoadException(name, $"unknown or unsupported image format ({bytes.Length} bytes)");
        long pixels = (long)info.Width * info.Height;
        if (info.Width <= 0 || info.Height <= 0 || info.Width > limits.MaxSide || info.Height > limits.MaxSide || pixels > limits.MaxPixels)
            throw new ImageLoadException(name,
                $"image is {info.Width}x{info.Height} ({pixels} pixels), beyond the decode limits (side ≤ {limits.MaxSide}, pixels ≤ {limits.MaxPixels})");
        try
        {
            using var img = Image.Load<Rgb24>(bytes);
            var rgb = new RgbImage(img.Width, img.Height);
            img.CopyPixelDataTo(rgb.Pixels);
            return rgb;
        }
        catch (Exception e) { throw new ImageLoadException(name, $"corrupt or truncated image data ({e.GetType().Name}: {e.Message})", e); }
    }
}

/// <summary>Image path resolution of the reference (mmf <c>image_database.get_possible_image_paths</c>).</summary>
public static class ImagePaths
{
    /// <summary>torchvision's <c>IMG_EXTENSIONS</c>, in the order the reference tries them.</summary>
    public static readonly string[] Extensions = [".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"];

    /// <summary>
    /// The reference strips the extension (everything after the last '.') and returns the first
    /// existing file among stem + each of <see cref="Extensions"/>, in that order — so "a.png" resolves to "a.jpg" when both
    /// exist. When none exists it returns <paramref name="path"/> unchanged; returns null then if <paramref name="mustExist"/>
    /// is false, otherwise throws <see cref="ImageLoadException"/> listing what was tried.
    /// </summary>
    public static string Resolve(string path, bool mustExist = true)
    {
        // The reference drops everything after the last '.' of the whole path; here only a dot in the file name counts,
        // so an extension-less name inside a dotted folder ("v1.0/abc") is not cut at the folder (same result otherwise).
        int dot = path.LastIndexOf('.');
        int sep = Math.Max(path.LastIndexOf('/'), path.LastIndexOf(Path.DirectorySeparatorChar));
        string stem = dot > sep ? path[..dot] : path;
        foreach (var ext in Extensions)
        {
            var candidate = stem + ext;
            if (File.Exists(candidate)) return candidate;
        }
        if (File.Exists(path)) return path; // an unlisted extension that exists (the reference would then open it too)
        if (mustExist) throw new ImageLoadException(path, $"image not found (tried {stem}{{{string.Join('|', Extensions)}}})");
        return path;
    }
}
