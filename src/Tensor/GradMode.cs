namespace FashionViL.Tensors;

/// <summary>Whether differentiable ops record a graph on this thread. <c>using (GradMode.NoGrad()) { ... }</c>.</summary>
public static class GradMode
{
    [ThreadStatic] private static int _disabledDepth;

    public static bool IsEnabled => _disabledDepth == 0;

    /// <summary>Turns graph recording off until the returned scope is disposed (nests).</summary>
    public static NoGradScope NoGrad() { _disabledDepth++; return new NoGradScope(); }

    public readonly struct NoGradScope : IDisposable
    {
        public void Dispose() => _disabledDepth--;
    }
}

/// <summary>
/// One step of reverse-mode differentiation: given the gradient of an op's output, returns the gradients
/// of its inputs (null where an input needs none). Nodes are created by the differentiable ops in
/// FashionViL.Autograd; the tensor only keeps a reference to the node that produced it.
/// </summary>
public abstract class GradNode
{
    protected GradNode(string name, params Tensor?[] inputs)
    {
        Name = name;
        Next = new Edge[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            var t = inputs[i];
            if (t is null || !t.RequiresGrad) continue;
            Next[i] = t.GradFn is { } fn ? new Edge(fn, null) : new Edge(null, t);
        }
        TensorScope.Current?.TrackNode(this);
    }

    /// <summary>Op name, used in error messages ("matmul", "conv2d", ...).</summary>
    public string Name { get; }

    /// <summary>Where each input's gradient goes: the node that made it, or the leaf that accumulates it.</summary>
    public Edge[] Next { get; }

    /// <summary>Shape, dtype and device of the output, checked against incoming gradients.</summary>
    public int[] OutputShape { get; internal set; } = [];
    public DType OutputDType { get; internal set; }

    /// <summary>True once saved tensors have been released; backward through it again is an error.</summary>
    public bool IsReleased { get; private set; }

    /// <summary>Computes input gradients. Must not keep references to <paramref name="gradOutput"/>.</summary>
    public abstract Tensor?[] Backward(Tensor gradOutput);

    /// <summary>Frees saved activations. Called by the engine right after <see cref="Backward"/> (unless the
    /// graph is retained) and by the step scope that created the node.</summary>
    public void Release()
    {
        if (IsReleased) return;
        IsReleased = true;
        ReleaseSaved();
    }

    protected virtual void ReleaseSaved() { }

    public override string ToString() => Name + "Backward";
}

/// <summary>An input edge of a <see cref="GradNode"/>: exactly one of Node (non-leaf) or Leaf is set, or neither.</summary>
public readonly record struct Edge(GradNode? Node, Tensor? Leaf)
{
    public bool IsNone => Node is null && Leaf is null;
}
