using System.Globalization;
using FashionViL.GpuCheck;
using FashionViL.Kernels.Cuda;

// gpu-check [--device N] [--emulator]
// Runs the CUDA backend's correctness suite against the CPU backend and prints one line per op:
// PASS / FAIL / MISSING with the max error relative to the largest reference value. Exit code 1 if any op fails.
int index = 0;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--device" when i + 1 < args.Length: index = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--emulator": CudaRuntime.EmulatorEnabled = true; break;
        case "-h" or "--help":
            Console.WriteLine("gpu-check [--device N] [--emulator]   (the emulator runs the CUDA kernels on ILGPU's CPU accelerator)");
            return 0;
        default: Console.Error.WriteLine($"gpu-check: unknown argument '{args[i]}' (see --help)"); return 2;
    }
}

var device = Device.Cuda(index);
CudaRuntime rt;
try { rt = CudaRuntime.Get(index); }
catch (NotSupportedException e) { Console.Error.WriteLine($"gpu-check: {e.Message}"); return 1; }
Console.WriteLine($"gpu-check on {device}: {rt.Accelerator.Name} ({(rt.IsEmulated ? "CPU emulator" : "CUDA")}), {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
Console.WriteLine($"{"op",-32} {"status",-8} {"max rel err",12} {"tolerance",10}  detail");
var results = Checks.Run(device, r =>
    Console.WriteLine($"{r.Op,-32} {r.Status,-8} {r.MaxRelError,12:E2} {r.Tolerance,10:E0}  {(r.Status == "PASS" ? "" : r.Detail)}"));
int pass = results.Count(r => r.Status == "PASS"), fail = results.Count(r => r.Failed), missing = results.Count(r => r.Status == "MISSING");
Console.WriteLine($"{pass} passed, {fail} failed, {missing} missing on the device");
return fail > 0 ? 1 : 0;
