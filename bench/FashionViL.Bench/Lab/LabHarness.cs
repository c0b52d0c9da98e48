using System.Diagnostics;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace FashionViL.Bench.Lab;

/// <summary>
/// What every kernel lab shares: opening the accelerator (the first CUDA device, or ILGPU's CPU accelerator with 2-thread
/// groups), timing batches of warm launches, comparing against a reference and generating inputs.
/// </summary>
internal static class LabHarness
{
    /// <summary>
    /// Runs <paramref name="body"/>(accelerator, onGpu) on the device <paramref name="deviceKind"/> names ("cuda"/"gpu" or
    /// "cpu") and returns its exit code; 2 for an unknown kind, 1 when CUDA is asked for and there is no device.
    /// </summary>
    public static int Run(string lab, string deviceKind, Func<Accelerator, bool, int> body)
    {
        bool gpu = deviceKind is "cuda" or "gpu";
        if (!gpu && deviceKind != "cpu")
        {
            Console.Error.WriteLine($"{lab}: unknown device kind '{deviceKind}' (want cuda or cpu)");
            return 2;
        }
        using var ctx = Context.Create(b => (gpu ? b.Cuda() : b.CPU(new CPUDevice(2, 1, 2))).EnableAlgorithms());
        if (gpu && ctx.GetCudaDevices().Count == 0)
        {
            Console.Error.WriteLine($"{lab}: no CUDA device: ILGPU found none (is the NVIDIA driver / libcuda.so present? --device cpu runs the emulator)");
            return 1;
        }
        using Accelerator acc = gpu ? ctx.CreateCudaAccelerator(0) : ctx.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
        Console.WriteLine($"{lab} on {acc.Name} ({acc.AcceleratorType}), warp {acc.WarpSize}, max group {acc.MaxNumThreadsPerGroup}, {acc.NumMultiprocessors} MPs");
        return body(acc, gpu);
    }

    /// <summary>
    /// Median over <paramref name="reps"/> batches of the time per launch (µs), each batch <paramref name="batch"/> launches
    /// ended by one Synchronize, after two warm-up launches. The launch gets a running index (to rotate input copies).
    /// </summary>
    public static double MedianUs(Accelerator acc, Action<int> launch, int batch, int reps)
    {
        for (int i = 0; i < 2; i++) launch(i);
        acc.Synchronize();
        var times = new double[reps];
        int next = 0;
        for (int r = 0; r < reps; r++)
        {
            var sw = Stopwatch.StartNew();
            for (int j = 0; j < batch; j++) launch(next++);
            acc.Synchronize();
            times[r] = sw.Elapsed.TotalMicroseconds / batch;
        }
        Array.Sort(times);
        return times[times.Length / 2];
    }

    /// <summary>(worst |got − want| / (atol + rtol·|want|), max |got − want|); NaN where the reference is finite counts as +∞.</summary>
    public static (double worst, double maxAbs) Compare(float[] got, float[] want, double atol, double rtol)
    {
        double worst = 0, maxAbs = 0;
        for (int i = 0; i < want.Length; i++)
        {
            double g = got[i], w = want[i];
            if (double.IsInfinity(w) && g == w) continue;
            if (double.IsNaN(w) && double.IsNaN(g)) continue;
            double e = Math.Abs(g - w);
            if (double.IsNaN(e)) return (double.PositiveInfinity, double.NaN);
            maxAbs = Math.Max(maxAbs, e);
            worst = Math.Max(worst, e / (atol + rtol * Math.Abs(w)));
        }
        return (worst, maxAbs);
    }

    /// <summary>Uniform floats in [lo, hi) from a splitmix64 stream, filled in parallel chunks.</summary>
    public static float[] Random(long n, ulong seed, float lo, float hi)
    {
        var a = new float[n];
        const int chunk = 1 << 20;
        Parallel.For(0, (int)((n + chunk - 1) / chunk), ci =>
        {
            ulong z = seed * 0x9E3779B97F4A7C15UL + (ulong)ci * 0xD1B54A32D192ED03UL;
            long end = Math.Min(n, (long)(ci + 1) * chunk);
            for (long i = (long)ci * chunk; i < end; i++)
            {
                z += 0x9E3779B97F4A7C15UL;
                ulong v = z;
                v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9UL;
                v = (v ^ (v >> 27)) * 0x94D049BB133111EBUL;
                v ^= v >> 31;
                a[i] = lo + (hi - lo) * ((v >> 40) * (1f / (1 << 24)));
            }
        });
        return a;
    }
}
