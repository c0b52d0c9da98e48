using System.CommandLine;
using FashionViL.Config;
using FashionViL.Downstream;

namespace FashionViL.Cli;

/// <summary>`fashionvil finetune config=configs/e2e_contrastive.yaml run_type=train_val checkpoint.resume_file=...`:
/// the downstream tasks of spec §4 (the reference's mmf_run with a fine-tuning config).</summary>
public static class FinetuneCommand
{
    public static Command Create()
    {
        var args = new Argument<string[]>("overrides") { Description = "config=FILE and key.path=value pairs", Arity = ArgumentArity.ZeroOrMore };
        var device = new Option<string?>("--device") { Description = "cpu | cuda | cuda:N (same as env.device=...)" };
        var command = new Command("finetune",
            "Fine-tune or evaluate a downstream task (FashionGen retrieval/classification, FashionIQ, Polyvore OCIR). " +
            "run_type=train|val|test|train_val; checkpoint.resume_pretrained=true checkpoint.resume_file=CKPT starts from a pre-trained model.")
        {
            args, device,
        };
        command.SetAction(parse =>
        {
            var o = parse.InvocationConfiguration.Output;
            try
            {
                var (configPath, overrides) = PretrainCommand.Split(parse.GetValue(args) ?? []);
                if (parse.GetValue(device) is { } d) overrides.Add("env.device=" + d);
                var config = FvConfig.Load(configPath, overrides);
                var r = DownstreamTasks.Run(config, o);
                o.WriteLine();
                o.WriteLine($"finished {r.Steps} updates; run directory {r.RunDirectory}");
                if (r.BestCheckpoint is not null) o.WriteLine($"best checkpoint: {r.BestCheckpoint}");
                if (r.CurrentCheckpoint is not null) o.WriteLine($"last checkpoint: {r.CurrentCheckpoint}");
                o.WriteLine($"reports: {Path.Combine(r.RunDirectory, "report_*.json")}");
                return 0;
            }
            catch (Exception e) when (PretrainCommand.IsUserError(e))
            {
                parse.InvocationConfiguration.Error.WriteLine($"fashionvil finetune: {e.Message}");
                return 1;
            }
        });
        return command;
    }
}
