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
            _ => throw new ConfigException($"no downstream task for model={model} datasets={dataset} model_config.fashionvil.training_head_type={head}; " +
                                           "known: " + string.Join("; ", Known)),
        };
    }

    /// <summary>The supported combinations, for error messages and help.</summary>
    public static IReadOnlyList<string> Known => [];
}
