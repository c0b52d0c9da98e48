namespace FashionViL.Data.Images;

/// <summary>
/// An 8-bit RGB image in row-major HWC order (the layout of a PIL "RGB" image). Transforms take one and return a new one.
/// </summary>
public sealed class RgbImage
{
    public int Width { get; }
    public int Height { get; }
    /// <summary>Height·Width·3 bytes, row-major, channels R,G,B.</summary>
    public byte[] Pixels { get; }

    public RgbImage(int width, int height, byte[] pixels)
    {
        if (width <= 0 || height <= 0) throw new ArgumentOutOfRangeException(nameof(width), $"RgbImage: size {width}x{height} must be positive");
        if (pixels.Length != checked(width * height * 3))
            throw new ArgumentException($"RgbImage: {pixels.Length} bytes for {width}x{height} (expected {width * height * 3})", nameof(pixels));
        Width = width; Height = height; Pixels = pixels;
    }

    public RgbImage(int width, int height) : this(width, height, new byte[checked(width * height * 3)]) { }

    public byte this[int y, int x, int c] => Pixels[(y * Width + x) * 3 + c];

    /// <summary>The sub-image [top, top+height) × [left, left+width); the box must lie inside the image.</summary>
    public RgbImage Crop(int top, int left, int height, int width)
    {
        if (top < 0 || left < 0 || height <= 0 || width <= 0 || top + height > Height || left + width > Width)
            throw new ArgumentOutOfRangeException(nameof(top), $"crop box top={top} left={left} {width}x{height} is outside the {Width}x{Height} image");
        var dst = new RgbImage(width, height);
        for (int y = 0; y < height; y++)
            Pixels.AsSpan(((top + y) * Width + left) * 3, width * 3).CopyTo(dst.Pixels.AsSpan(y * width * 3, width * 3));
        return dst;
    }

    /// <summary>Mirror left↔right (PIL FLIP_LEFT_RIGHT).</summary>
    public RgbImage FlipHorizontal()
    {
        var dst = new RgbImage(Width, Height);
        for (int y = 0; y < Height; y++)
            for (int x = 0; x < Width; x++)
            {
                int s = (y * Width + x) * 3, d = (y * Width + (Width - 1 - x)) * 3;
                dst.Pixels[d] = Pixels[s]; dst.Pixels[d + 1] = Pixels[s + 1]; dst.Pixels[d + 2] = Pixels[s + 2];
            }
        return dst;
    }
}
