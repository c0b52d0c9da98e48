using FashionViL.Config;

namespace FashionViL.Downstream;

/// <summary>Picks the downstream task a config describes (model, datasets, training_head_type) and runs the fine-tuning loop.</summary>
public static partial class DownstreamTasks
{
    public static FinetuneResult Run(FvConfig c, TextWriter log)
    {
        var model = c.GetString("model");
        var dataset = c.GetString("datasets");
        var head = c.GetString("model_config.fashionvil.training_head_type");
        return (model, dataset, head) switch
        {
            ("fashionvil", "fashiongen", "contrastive") => Fine(FashionGen.FashionGenRetrievalTask.Create(c, log)),
            ("fashionvil", "fashiongen", "classification") => Fine(FashionGen.FashionGenClassificationTask.Create(c, log)),
            ("fashionvil", "fashioniq", "composition") => Fine(FashionIq.FashionIqTask.Create(c, log)),
            ("csa_net", "polyvore_ocir", _) => Fine(Ocir.OcirTask.Create(c, log)),
            _ => throw new ConfigException($"no downstream task for model={model} datasets={dataset} model_config.fashionvil.training_head_type={head}; " +
                                           "known: " + string.Join("; ", Known)),
        };

        FinetuneResult Fine<TBatch>(IFinetuneTask<TBatch> task) where TBatch : IDisposable
        {
            using (task) return new Finetuner<TBatch>(c, task, log).Run();
        }
    }

    /// <summary>The supported combinations, for error messages and help.</summary>
    public static IReadOnlyList<string> Known =>
    [
        "model=fashionvil datasets=fashiongen training_head_type=contrastive (configs/e2e_contrastive.yaml)",
        "model=fashionvil datasets=fashiongen training_head_type=classification (configs/e2e_classification.yaml)",
        "model=fashionvil datasets=fashioniq training_head_type=composition (configs/e2e_composition.yaml)",
        "model=csa_net datasets=polyvore_ocir (configs/ocir_disjoint.yaml, configs/ocir_nondisjoint.yaml)",
    ];
}
