using FashionViL.Kernels.Cuda;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// A test's own <see cref="KernelTuner"/> state: a fresh cache file in a temporary folder and nothing remembered for
/// <paramref name="acc"/>; disposing puts back the mode, margin and cache file the process had and deletes the folder.
/// </summary>
internal sealed class TuningScope : IDisposable
{
    private readonly Accelerator _acc;
    private readonly TuneMode? _mode = KernelTuner.ModeSetting;
    private readonly double _keep = KernelTuner.KeepRuleWithin;

    public TuningScope(Accelerator acc, TuneMode mode)
    {
        _acc = acc;
        Dir = Path.Combine(Path.GetTempPath(), $"fvl-tune-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Dir);
        KernelTuner.CacheFile = Path.Combine(Dir, "tune.json");
        KernelTuner.Mode = mode;
        KernelTuner.Forget(acc);
    }

    public string Dir { get; }

    public void Dispose()
    {
        KernelTuner.ModeSetting = _mode;
        KernelTuner.KeepRuleWithin = _keep;
        KernelTuner.CacheFile = null;
        KernelTuner.Forget(_acc);
        Directory.Delete(Dir, recursive: true);
    }
}
