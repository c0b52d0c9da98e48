using System.Diagnostics;
using FashionViL.Autograd;
using FashionViL.Model;

namespace FashionViL.Tests.Model;

/// <summary>Measurement, not a check: forward + backward of each task for the Tiny config at batch 32, 32 tokens, on the CPU.
/// Run: dotnet test tests/FashionViL.Tests -c Release --filter "FullyQualifiedName~StepTiming" --logger "console;verbosity=detailed"</summary>
[TestFixture, Explicit("timing measurement")]
public class StepTiming
{
    [Test]
    public void TinyStepAtBatch32()
    {
        var c = FashionViLConfig.Tiny;
        var m = new FashionViLPretraining(c, new Generator(1));
        using var b = ModelTestUtil.RandomBatch(c, 32, 32, new Generator(2));
        using var vq = Tensor.FromArray(Enumerable.Range(0, 32 * c.GridSize).Select(i => (long)(i * 37 % c.NumVqTokens)).ToArray(), 32, c.GridSize);
        var g = new Generator(3);
        double all = 0, allCpu = 0;
        foreach (var task in FashionViLConfig.AllTasks)
        {
            var times = new List<double>(); var cpu = new List<double>();
            for (int rep = 0; rep < 4; rep++)
            {
                m.ZeroGrad();
                var sw = Stopwatch.StartNew();
                var c0 = Process.GetCurrentProcess().TotalProcessorTime;
                using (Tensor.Scope())
                {
                    var loss = m.Forward(task, b, vq, g);
                    loss.Backward();
                }
                times.Add(sw.Elapsed.TotalSeconds);
                cpu.Add((Process.GetCurrentProcess().TotalProcessorTime - c0).TotalSeconds);
            }
            double med = times.Skip(1).Order().ElementAt(1), medCpu = cpu.Skip(1).Order().ElementAt(1);
            allCpu += medCpu * c.TaskProbabilities[Array.IndexOf(c.Tasks, task)];
            all += med * c.TaskProbabilities[Array.IndexOf(c.Tasks, task)];
            TestContext.Out.WriteLine($"{task}: forward+backward {med * 1000:F0} ms wall, {medCpu * 1000:F0} ms CPU (medians of 3 after a warm-up; {Environment.ProcessorCount} cores)");
        }
        TestContext.Out.WriteLine($"expected step time under the task mix: {all * 1000:F0} ms wall, {allCpu * 1000:F0} ms CPU (all cores together)");
        var parts = new List<double>();
        for (int rep = 0; rep < 4; rep++)
        {
            m.ZeroGrad();
            var sw = Stopwatch.StartNew();
            using (Tensor.Scope()) { var grid = m.EncodeImages(b.Image); var s = grid.Sum(); s.Backward(); }
            parts.Add(sw.Elapsed.TotalSeconds);
        }
        TestContext.Out.WriteLine($"ResNet alone (forward+backward): {parts.Skip(1).Order().ElementAt(1) * 1000:F0} ms");
        parts.Clear();
        for (int rep = 0; rep < 4; rep++)
        {
            m.ZeroGrad();
            var sw = Stopwatch.StartNew();
            using (Tensor.Scope()) { var t = m.TextVector(b.InputIds, b.SegmentIds, b.InputMask); var s = t.Sum(); s.Backward(); }
            parts.Add(sw.Elapsed.TotalSeconds);
        }
        TestContext.Out.WriteLine($"text BERT alone (forward+backward): {parts.Skip(1).Order().ElementAt(1) * 1000:F0} ms");
        Assert.Pass();
    }
}
