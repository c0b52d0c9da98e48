using System.Buffers.Binary;
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
/// <param name="MaxPixels">largest accepted width·height; the default is PIL's <c>MAX_IMAGE_PIXELS</c> (89,478,485), above which PIL
/// warns (it refuses above twice that); raise it for very large photos</param>
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
        var truncated = TruncationCheck(bytes);
        if (truncated is not null) throw new ImageLoadException(name, $"truncated file ({bytes.Length} bytes): {truncated}");
        try
        {
            using var img = Image.Load<Rgb24>(bytes);
            var rgb = new RgbImage(img.Width, img.Height);
            img.CopyPixelDataTo(rgb.Pixels);
            return rgb;
        }
        catch (Exception e) { throw new ImageLoadException(name, $"corrupt or truncated image data ({e.GetType().Name}: {e.Message})", e); }
    }

    /// <summary>
    /// ImageSharp decodes cut-off JPEG, BMP, GIF and WebP files silently (the missing part filled), where PIL refuses them
    /// ("image file is truncated"). These structural checks catch that; PNG, TIFF and TGA decoders throw by themselves.
    /// Returns what is wrong, or null.
    /// </summary>
    static string? TruncationCheck(byte[] b)
    {
        if (IsJpeg(b) && !JpegHasEndAfterLastScan(b)) return "JPEG without an end-of-image marker after the last scan";
        if (b.Length >= 34 && b[0] == (byte)'B' && b[1] == (byte)'M' && BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(14)) >= 40)
        {
            // Uncompressed BMP with a BITMAPINFOHEADER or later (BI_RGB, BI_BITFIELDS): the pixel array must be complete.
            long off = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(10)), width = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(18)), height = Math.Abs((long)BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(22)));
            int bits = BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(28));
            uint compression = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(30));
            if (compression is 0 or 3 && width > 0 && bits > 0)
            {
                long need = off + (width * bits + 31) / 32 * 4 * height;
                if (b.Length < need) return $"BMP pixel data needs {need} bytes";
            }
        }
        if (b.Length >= 6 && b[0] == (byte)'G' && b[1] == (byte)'I' && b[2] == (byte)'F' && b[^1] != 0x3B)
            return "GIF without its trailer byte (0x3B)";
        if (b.Length >= 12 && b[0] == (byte)'R' && b[1] == (byte)'I' && b[2] == (byte)'F' && b[3] == (byte)'F'
            && b[8] == (byte)'W' && b[9] == (byte)'E' && b[10] == (byte)'B' && b[11] == (byte)'P')
        {
            long riff = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(4)) + 8L;
            if (b.Length < riff) return $"WebP RIFF header says {riff} bytes";
        }
        return null;
    }

    static bool IsJpeg(byte[] b) => b.Length >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF;

    /// <summary>
    /// Inside entropy-coded data 0xFF is always stuffed (FF 00) or a restart marker, so a real end-of-image marker FF D9
    /// must follow the last start-of-scan FF DA. (An embedded EXIF thumbnail's markers all come before the main scans.)
    /// </summary>
    static bool JpegHasEndAfterLastScan(byte[] b)
    {
        int lastSos = -1;
        for (int i = b.Length - 2; i >= 0; i--)
            if (b[i] == 0xFF && b[i + 1] == 0xDA) { lastSos = i; break; }
        if (lastSos < 0) return false;
        for (int i = lastSos + 2; i < b.Length - 1; i++)
            if (b[i] == 0xFF && b[i + 1] == 0xD9) return true;
        return false;
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
