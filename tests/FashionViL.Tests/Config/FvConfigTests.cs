using FashionViL.Config;

namespace FashionViL.Tests.Config;

public class FvConfigTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "fvcfg-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        var p = Path.Combine(_dir, name);
        Directory.CreateDirectory(Path.GetDirectoryName(p)!);
        File.WriteAllText(p, text);
        return p;
    }

    [Test]
    public void DefaultsAreTheReferenceRecipe()
    {
        var c = FvConfig.Defaults();
        Assert.That(c.GetInt("training.batch_size"), Is.EqualTo(256));
        Assert.That(c.GetDouble("optimizer.params.lr"), Is.EqualTo(1e-5));
        Assert.That(c.GetIntList("scheduler.params.lr_steps"), Is.EqualTo(new[] { 45000, 90000 }));
        Assert.That(c.GetStringList("model_config.fashionvil.tasks"), Is.EqualTo(new[] { "itm", "pac", "itc", "icc", "mlm", "mpfc" }));
        Assert.That(c.GetDoubleList("model_config.fashionvil.tasks_sample_ratio").Sum(), Is.EqualTo(1.0).Within(1e-12));
    }

    [Test]
    public void FileThenIncludesThenOverridesInOrder()
    {
        Write("base.yaml", "training:\n  batch_size: 64\n  max_updates: 10\nenv:\n  data_dir: /base\n");
        var p = Write("sub/run.yaml", "includes:\n- ../base.yaml\ntraining:\n  batch_size: 32\n");
        var c = FvConfig.Load(p, ["training.max_updates=7", "optimizer.params.betas=[0.8, 0.9]"]);
        Assert.That(c.GetInt("training.batch_size"), Is.EqualTo(32), "file beats its include");
        Assert.That(c.GetInt("training.max_updates"), Is.EqualTo(7), "override beats file");
        Assert.That(c.GetDoubleList("optimizer.params.betas"), Is.EqualTo(new[] { 0.8, 0.9 }));
        Assert.That(c.GetString("env.data_dir"), Is.EqualTo("/base"));
        Assert.That(c.GetInt("training.log_interval"), Is.EqualTo(10), "untouched keys keep the default");
    }

    [Test]
    public void InterpolationUsesFinalValues()
    {
        var c = FvConfig.Load(null, ["env.data_dir=/mnt/fashion"]);
        Assert.That(c.GetString("dataset_config.fashionall.data_dir"), Is.EqualTo("/mnt/fashion/datasets"));
        Assert.That(c.GetString("model_config.fashionvil.image_tokenizer.params.pretrained_path"),
            Is.EqualTo("/mnt/fashion/pretrained_models/vqvae_ema_pp_224_7x7_encoder_fashionall.pth"));
    }

    [Test]
    public void UnknownKeyInFileNamesFileKeyAndSuggestion()
    {
        var p = Write("bad.yaml", "training:\n  batchsize: 32\n");
        var e = Assert.Throws<ConfigException>(() => FvConfig.Load(p))!;
        Assert.That(e.Message, Does.Contain("bad.yaml").And.Contain("'training.batchsize'").And.Contain("did you mean 'training.batch_size'"));
    }

    [Test]
    public void UnknownOverrideSuggestsKeyElsewhereInTree()
    {
        var e = Assert.Throws<ConfigException>(() => FvConfig.Load(null, ["training.lr=0.1"]))!;
        Assert.That(e.Message, Does.Contain("training.lr").And.Contain("did you mean 'optimizer.params.lr'"));
        e = Assert.Throws<ConfigException>(() => FvConfig.Load(null, ["trainng.batch_size=3"]))!;
        Assert.That(e.Message, Does.Contain("did you mean 'training.batch_size'"));
        e = Assert.Throws<ConfigException>(() => FvConfig.Load(null, ["zzzzzzzzzzzz=3"]))!;
        Assert.That(e.Message, Does.Not.Contain("did you mean"));
    }

    [Test]
    public void BadValuesNameTheKey()
    {
        var c = FvConfig.Load(null, ["training.batch_size=lots", "optimizer.params.lr=nan"]);
        Assert.That(Assert.Throws<ConfigException>(() => c.GetInt("training.batch_size"))!.Message, Does.Contain("training.batch_size").And.Contain("lots"));
        Assert.That(Assert.Throws<ConfigException>(() => c.GetDouble("optimizer.params.lr"))!.Message, Does.Contain("optimizer.params.lr"));
        Assert.Throws<ConfigException>(() => FvConfig.Load(null, ["training=3"]));
        Assert.Throws<ConfigException>(() => FvConfig.Load(null, ["no-equals-sign"]));
    }

    [Test]
    public void FileErrors()
    {
        Assert.That(Assert.Throws<ConfigException>(() => FvConfig.Load(Path.Combine(_dir, "missing.yaml")))!.Message, Does.Contain("missing.yaml"));
        var p = Write("broken.yaml", "training:\n  batch_size: [1, 2\n");
        Assert.That(Assert.Throws<ConfigException>(() => FvConfig.Load(p))!.Message, Does.Contain("broken.yaml").And.Contain("line"));
        var d = Write("dup.yaml", "training:\n  batch_size: 1\n  batch_size: 2\n");
        Assert.That(Assert.Throws<ConfigException>(() => FvConfig.Load(d))!.Message, Does.Contain("dup.yaml").And.Contain("batch_size"));
        var a = Write("a.yaml", "includes: [b.yaml]\n");
        Write("b.yaml", "includes: [a.yaml]\n");
        Assert.That(Assert.Throws<ConfigException>(() => FvConfig.Load(a))!.Message, Does.Contain("cycle"));
        var m = Write("missing-include.yaml", "includes: [nope.yaml]\n");
        Assert.That(Assert.Throws<ConfigException>(() => FvConfig.Load(m))!.Message, Does.Contain("nope.yaml"));
        Assert.That(Assert.Throws<ConfigException>(() => FvConfig.Load(null, ["env.save_dir=${env.nothing}/x"]))!.Message, Does.Contain("env.nothing"));
        Assert.That(Assert.Throws<ConfigException>(() => FvConfig.Load(null, ["env.save_dir=${env.save_dir}/x"]))!.Message, Does.Contain("itself"));
    }

    [Test]
    public void YamlRoundTripKeepsEveryValue()
    {
        var c = FvConfig.Load(null, ["env.data_dir=/a b/c: d", "training.experiment_name='quoted'", "checkpoint.resume_file="]);
        var back = FvConfig.FromYaml(c.ToYaml());
        Assert.That(back.Flatten().ToList(), Is.EqualTo(c.Flatten().ToList()));
        Assert.That(back.GetString("env.data_dir"), Is.EqualTo("/a b/c: d"));
        Assert.That(back.GetStringOrNull("checkpoint.resume_file"), Is.Null);
    }

    [Test]
    public void LevenshteinKnownValues()
    {
        Assert.That(FvConfig.Levenshtein("kitten", "sitting"), Is.EqualTo(3));
        Assert.That(FvConfig.Levenshtein("", "abc"), Is.EqualTo(3));
        Assert.That(FvConfig.Levenshtein("same", "same"), Is.EqualTo(0));
    }
}

public class ShippedConfigTests
{
    private static string RepoFile(string rel)
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FashionViL.Native.sln"))) dir = dir.Parent;
        return Path.Combine(dir?.FullName ?? throw new DirectoryNotFoundException("repository root"), rel);
    }

    [TestCase("pretrain.yaml")]
    [TestCase("pretrain_itc.yaml")]
    [TestCase("pretrain_mlm.yaml")]
    [TestCase("pretrain_mpfc.yaml")]
    [TestCase("pretrain_pac.yaml")]
    [TestCase("pretrain_icc.yaml")]
    [TestCase("tiny.yaml")]
    public void ShippedConfigLoads(string name)
    {
        var c = FvConfig.Load(RepoFile("configs/" + name));
        var tasks = c.GetStringList("model_config.fashionvil.tasks");
        var ratios = c.GetDoubleList("model_config.fashionvil.tasks_sample_ratio");
        Assert.That(ratios, Has.Count.EqualTo(tasks.Count));
        Assert.That(ratios.Sum(), Is.EqualTo(1.0).Within(1e-9));
        Assert.That(c.GetInt("training.max_updates"), Is.GreaterThan(0));
    }

    [Test]
    public void AblationMatchesReferenceSchedule()
    {
        var c = FvConfig.Load(RepoFile("configs/pretrain_itc.yaml"));
        Assert.That(c.GetStringList("model_config.fashionvil.tasks"), Is.EqualTo(new[] { "itc" }));
        Assert.That(c.GetIntList("scheduler.params.lr_steps"), Is.EqualTo(new[] { 11250, 22500 }));
        Assert.That(c.GetInt("scheduler.params.warmup_iterations"), Is.EqualTo(3750));
        Assert.That(c.GetBool("dataset_config.fashionall.processors.masked_token_processor.params.do_whole_word_mask"), Is.False);
        Assert.That(c.GetInt("training.batch_size"), Is.EqualTo(256), "inherited from pretrain.yaml");
    }
}

public class OpenMapTests
{
    [Test]
    public void PretrainedStateMappingIsAnOpenMap()
    {
        var dir = Path.Combine(Path.GetTempPath(), "fvopen-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var p = Path.Combine(dir, "ft.yaml");
            File.WriteAllText(p, "checkpoint:\n  pretrained_state_mapping:\n    image_encoder: image_encoder\n    model.bert: model.bert\n");
            var c = FvConfig.Load(p, ["checkpoint.pretrained_state_mapping.extra=x"]);
            Assert.That(c.GetStringMap("checkpoint.pretrained_state_mapping"),
                Is.EquivalentTo(new Dictionary<string, string?> { ["image_encoder"] = "image_encoder", ["model.bert"] = "model.bert", ["extra"] = "x" }));
            Assert.That(FvConfig.Defaults().GetStringMap("checkpoint.pretrained_state_mapping"), Is.Empty);
        }
        finally { Directory.Delete(dir, true); }
    }
}
