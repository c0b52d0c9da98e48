namespace FashionViL.Tensors;

public enum DeviceType : byte { Cpu, Cuda }

/// <summary>Where a tensor's storage lives: <see cref="Cpu"/> or <see cref="Cuda"/>(n).</summary>
public readonly record struct Device(DeviceType Type, int Index)
{
    public static readonly Device Cpu = new(DeviceType.Cpu, 0);
    public static Device Cuda(int index = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        return new(DeviceType.Cuda, index);
    }

    public bool IsCpu => Type == DeviceType.Cpu;

    public override string ToString() => Type == DeviceType.Cpu ? "cpu" : $"cuda:{Index}";

    /// <summary>Parses "cpu", "cuda" or "cuda:N".</summary>
    public static Device Parse(string s)
    {
        var t = s.Trim().ToLowerInvariant();
        if (t == "cpu") return Cpu;
        if (t == "cuda") return Cuda(0);
        if (t.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(t.AsSpan(5), out int n) && n >= 0) return Cuda(n);
        throw new FormatException($"unknown device '{s}': expected cpu, cuda or cuda:N");
    }
}
