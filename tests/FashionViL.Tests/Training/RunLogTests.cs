using FashionViL.Training;

namespace FashionViL.Tests.Training;

public class RunLogTests
{
    private string _dir = "";
    [SetUp] public void SetUp() { _dir = Path.Combine(Path.GetTempPath(), "fvlog-" + Guid.NewGuid().ToString("N")); }
    [TearDown] public void TearDown() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    private static LogRecord Train(long step, string task, double loss) =>
        new("train", step, new Dictionary<string, double> { ["loss"] = loss, ["lr"] = 1e-4, ["samples_per_s"] = 10, ["elapsed_s"] = step }, task);

    [Test]
    public void WritesJsonlAndCsv()
    {
        using (var log = new RunLog(_dir))
        {
            log.Add(Train(1, "itc", 2.5));
            log.Add(Train(2, "mlm", 9.75));
            log.Add(new LogRecord("eval", 2, new Dictionary<string, double> { ["i2t_r@1"] = 0.25, ["avg"] = 0.5 }));
        }
        var csv = File.ReadAllLines(Path.Combine(_dir, "train.csv"));
        Assert.That(csv, Is.EqualTo(new[] { "step,task,loss,lr,samples_per_s,elapsed_s", "1,itc,2.5,0.0001,10,1", "2,mlm,9.75,0.0001,10,2" }));
        Assert.That(File.ReadAllLines(Path.Combine(_dir, "eval.csv")), Is.EqualTo(new[] { "step,i2t_r@1,avg", "2,0.25,0.5" }));
        var jsonl = File.ReadAllLines(Path.Combine(_dir, "metrics.jsonl"));
        Assert.That(jsonl, Has.Length.EqualTo(3));
        Assert.That(jsonl[1], Does.Contain("\"task\":\"mlm\"").And.Contain("\"loss\":9.75"));
    }

    [Test]
    public void ResumeDropsTheAbandonedFutureAndATornLine()
    {
        using (var log = new RunLog(_dir))
            for (int s = 1; s <= 6; s++) log.Add(Train(s, "itc", s));
        File.AppendAllText(Path.Combine(_dir, "metrics.jsonl"), "{\"kind\":\"train\",\"st");   // crash mid-line
        using (var log = new RunLog(_dir, resumeStep: 4))
        {
            Assert.That(log.Records.Select(r => r.Step), Is.EqualTo(new long[] { 1, 2, 3, 4 }));
            log.Add(Train(5, "pac", 0.5));
        }
        var csv = File.ReadAllLines(Path.Combine(_dir, "train.csv"));
        Assert.That(csv.Skip(1).Select(l => l.Split(',')[0] + l.Split(',')[1]), Is.EqualTo(new[] { "1itc", "2itc", "3itc", "4itc", "5pac" }));
        Assert.That(File.ReadAllLines(Path.Combine(_dir, "metrics.jsonl")), Has.Length.EqualTo(5));
    }

    [Test]
    public void PlotIsAPng()
    {
        var records = new List<LogRecord>();
        for (int s = 1; s <= 50; s++) records.Add(Train(s, s % 2 == 0 ? "itc" : "mlm", 5.0 / s));
        records.Add(new LogRecord("eval", 25, new Dictionary<string, double> { ["i2t_r@1"] = 0.1, ["avg"] = 0.2 }));
        records.Add(new LogRecord("eval", 50, new Dictionary<string, double> { ["i2t_r@1"] = 0.3, ["avg"] = 0.4 }));
        var path = TrainingPlot.Save(records, Path.Combine(_dir, "plot.png"), "test");
        var bytes = File.ReadAllBytes(path);
        Assert.That(bytes[..8], Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }));
        Assert.That(bytes.Length, Is.GreaterThan(10_000), "a drawn figure, not an empty canvas");
        Assert.That(Directory.GetFiles(_dir, "*.tmp*"), Is.Empty);
    }

    [Test]
    public void MovingAverageHandComputed() =>
        Assert.That(TrainingPlot.MovingAverage([1, 3, 5, 7], 2), Is.EqualTo(new[] { 1.0, 2.0, 4.0, 6.0 }));
}
