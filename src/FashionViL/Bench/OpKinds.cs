using System.Reflection;

namespace FashionViL.Bench;

/// <summary>What a backend call is counted as in the step breakdown.</summary>
public enum OpKind
{
    Gemm, Conv, Norm, Attention, Elementwise, Optimizer, Other,
    /// <summary>Property reads (<see cref="IBackend.Device"/>, <see cref="IBackend.Allocator"/>): not timed.</summary>
    Untimed,
}

/// <summary>
/// The kind of every <see cref="IBackend"/> member, listed by name. A member missing here falls into
/// <see cref="OpKind.Other"/>; a test checks that every member of the interface is listed explicitly, so a new
/// backend method cannot land in "other" unnoticed.
/// </summary>
public static class OpKinds
{
    /// <summary>The kinds reported in the breakdown, in display order.</summary>
    public static IReadOnlyList<OpKind> Reported { get; } = [OpKind.Gemm, OpKind.Conv, OpKind.Norm, OpKind.Attention, OpKind.Elementwise, OpKind.Optimizer, OpKind.Other];

    public static IReadOnlyDictionary<string, OpKind> Table { get; } = new Dictionary<string, OpKind>(StringComparer.Ordinal)
    {
        ["get_Device"] = OpKind.Untimed,
        ["get_Allocator"] = OpKind.Untimed,

        ["MatMul"] = OpKind.Gemm,

        ["Conv2dForward"] = OpKind.Conv,
        ["Conv2dBackwardInput"] = OpKind.Conv,
        ["Conv2dBackwardWeight"] = OpKind.Conv,
        ["MaxPool2dForward"] = OpKind.Conv,
        ["MaxPool2dBackward"] = OpKind.Conv,
        ["AdaptiveAvgPool2dForward"] = OpKind.Conv,
        ["AdaptiveAvgPool2dBackward"] = OpKind.Conv,

        ["BatchNormForward"] = OpKind.Norm,
        ["BatchNormBackward"] = OpKind.Norm,
        ["GroupNormForward"] = OpKind.Norm,
        ["GroupNormBackward"] = OpKind.Norm,
        ["LayerNormForward"] = OpKind.Norm,
        ["LayerNormBackward"] = OpKind.Norm,
        ["DropoutAddLayerNormForward"] = OpKind.Norm,
        ["DropoutAddLayerNormBackward"] = OpKind.Norm,

        ["AttentionForward"] = OpKind.Attention,
        ["AttentionBackward"] = OpKind.Attention,

        ["Copy"] = OpKind.Elementwise,
        ["Fill"] = OpKind.Elementwise,
        ["Unary"] = OpKind.Elementwise,
        ["UnaryBackward"] = OpKind.Elementwise,
        ["Binary"] = OpKind.Elementwise,
        ["Where"] = OpKind.Elementwise,
        ["Reduce"] = OpKind.Elementwise,
        ["Dropout"] = OpKind.Elementwise,

        ["AdamWStep"] = OpKind.Optimizer,
        ["AdamWStepMany"] = OpKind.Optimizer,
        ["SgdStep"] = OpKind.Optimizer,

        ["Synchronize"] = OpKind.Other,
        ["Transfer"] = OpKind.Other,
        ["Random"] = OpKind.Other,
        ["RandPerm"] = OpKind.Other,
        ["Softmax"] = OpKind.Other,
        ["SoftmaxBackward"] = OpKind.Other,
        ["CrossEntropyForward"] = OpKind.Other,
        ["CrossEntropyBackward"] = OpKind.Other,
        ["IndexSelect"] = OpKind.Other,
        ["IndexAdd"] = OpKind.Other,
        ["Gather"] = OpKind.Other,
        ["Scatter"] = OpKind.Other,
        ["MaskedSelect"] = OpKind.Other,
        ["MaskedScatter"] = OpKind.Other,
        ["EmbeddingBackward"] = OpKind.Other,
        ["VqLookup"] = OpKind.Other,
        ["TopK"] = OpKind.Other,
        ["Sort"] = OpKind.Other,
    };

    /// <summary>The kind of a backend member (unlisted: <see cref="OpKind.Other"/>).</summary>
    public static OpKind Of(MethodInfo method) => Table.TryGetValue(method.Name, out var k) ? k : OpKind.Other;

    /// <summary>Lower-case name used in the JSON and the printed table.</summary>
    public static string Name(OpKind k) => k switch
    {
        OpKind.Gemm => "gemm", OpKind.Conv => "conv", OpKind.Norm => "norm", OpKind.Attention => "attention",
        OpKind.Elementwise => "elementwise", OpKind.Optimizer => "optimizer", OpKind.Other => "other", _ => "untimed",
    };
}
