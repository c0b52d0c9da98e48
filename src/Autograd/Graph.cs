using FashionViL.Tensors;

namespace FashionViL.Autograd;

/// <summary>
/// Records differentiable ops. An op computes its output with the backend, then calls
/// <see cref="Record"/> with the inputs that may need gradients, the tensors its backward rule needs
/// (saved as independent handles and released right after the rule runs), and the rule itself.
/// The rule runs with gradient recording off, receives a contiguous output gradient (any strides when recorded with
/// <c>stridedGradient: true</c>) and the saved tensors, and returns one gradient per input (null where none is needed),
/// each of the input's shape.
/// Rules must not capture tensors in their closure: pass them through <c>saved</c>.
/// </summary>
public static class Graph
{
    public delegate Tensor?[] BackwardRule(Tensor gradOutput, Tensor?[] saved);

    /// <summary>True when recording is on and any input requires a gradient.</summary>
    public static bool NeedsGrad(params Tensor?[] inputs)
    {
        if (!GradMode.IsEnabled) return false;
        foreach (var t in inputs) if (t is not null && t.RequiresGrad) return true;
        return false;
    }

    public static Tensor Record(Tensor output, string name, Tensor?[] inputs, Tensor?[] saved, BackwardRule rule)
        => Record(output, name, inputs, saved, false, rule);

    /// <summary>
    /// <see cref="Record(Tensor, string, Tensor?[], Tensor?[], BackwardRule)"/>; with <paramref name="stridedGradient"/> the
    /// engine hands the rule the output gradient in whatever layout it arrives (a permuted view, say) instead of a contiguous
    /// copy: for rules that read strided gradients themselves (views, attention).
    /// </summary>
    public static Tensor Record(Tensor output, string name, Tensor?[] inputs, Tensor?[] saved, bool stridedGradient, BackwardRule rule)
    {
        if (!NeedsGrad(inputs)) return output;
        var node = new RuleNode(name, inputs, saved, rule) { StridedGradient = stridedGradient };
        return output.AttachGradFn(node);
    }

    /// <summary>True when the node's rule takes its output gradient in any layout (no contiguous copy first).</summary>
    internal static bool TakesStridedGradient(GradNode node) => node is RuleNode { StridedGradient: true };

    private sealed class RuleNode : GradNode
    {
        private readonly BackwardRule _rule;
        private Tensor?[] _saved;
        private readonly int[][] _inputShapes;

        public bool StridedGradient { get; init; }

        public RuleNode(string name, Tensor?[] inputs, Tensor?[] saved, BackwardRule rule) : base(name, inputs)
        {
            _rule = rule;
            _saved = new Tensor?[saved.Length];
            for (int i = 0; i < saved.Length; i++) _saved[i] = saved[i]?.Alias();
            _inputShapes = inputs.Select(t => t?.Shape ?? []).ToArray();
        }

        public override Tensor?[] Backward(Tensor gradOutput)
        {
            var grads = _rule(gradOutput, _saved);
            if (grads.Length != Next.Length)
                throw new InvalidOperationException($"{Name} backward returned {grads.Length} gradients for {Next.Length} inputs");
            for (int i = 0; i < grads.Length; i++)
            {
                if (grads[i] is null || Next[i].IsNone) continue;
                if (!grads[i]!.Sizes.SequenceEqual(_inputShapes[i]))
                    throw new InvalidOperationException($"{Name} backward: gradient {grads[i]!.ShapeString} does not match input {i} of shape {Shape.Format(_inputShapes[i])}");
            }
            return grads;
        }

        protected override void ReleaseSaved()
        {
            foreach (var t in _saved) t?.Dispose();
            _saved = [];
        }
    }
}
