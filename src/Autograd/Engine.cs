using FashionViL.Tensors;

namespace FashionViL.Autograd;

/// <summary>Reverse-mode traversal: topological order from the root, gradients summed per node, leaves accumulate.</summary>
public static class Engine
{
    /// <summary>
    /// When on (the default), a leaf's first gradient adopts the buffer backward produced instead of copying it, where
    /// that buffer is provably the gradient's alone (see <see cref="CanAdopt"/>). Off copies every first gradient (the
    /// old path; values are identical either way). The environment variable <c>FVL_ADOPT_GRADS=0</c> turns it off, for A/B runs.
    /// </summary>
    internal static bool AdoptGradients { get; set; } = Environment.GetEnvironmentVariable("FVL_ADOPT_GRADS") != "0";

    public static void Backward(Tensor root, Tensor? gradient = null, bool retainGraph = false)
    {
        if (!root.RequiresGrad)
            throw new InvalidOperationException($"backward: tensor {root.ShapeString} does not require grad and has no grad_fn");
        Tensor seed;
        if (gradient is null)
        {
            if (root.Numel != 1)
                throw new InvalidOperationException($"backward: output {root.ShapeString} is not a scalar; pass a gradient of the same shape");
            seed = Tensor.Full(root.Shape, 1.0, root.DType, root.Device);
        }
        else
        {
            if (!gradient.Sizes.SequenceEqual(root.Sizes))
                throw new ArgumentException($"backward: gradient {gradient.ShapeString} does not match output {root.ShapeString}");
            seed = gradient.DType == root.DType ? gradient.ContiguousRaw() : gradient.To(root.DType);
        }

        using var _ = GradMode.NoGrad();
        if (root.GradFn is null) { Accumulate(root, seed, exclusive: true); seed.Dispose(); return; }

        // Dependency counts over the graph reachable from the root.
        var deps = new Dictionary<GradNode, int>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<GradNode>();
        stack.Push(root.GradFn);
        deps[root.GradFn] = 0;
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            if (n.IsReleased)
                throw new InvalidOperationException($"backward: the graph through {n} was already freed (backward ran before without retainGraph: true, or its step scope closed)");
            foreach (var e in n.Next)
            {
                if (e.Node is null) continue;
                if (deps.TryGetValue(e.Node, out int c)) deps[e.Node] = c + 1;
                else { deps[e.Node] = 1; stack.Push(e.Node); }
            }
        }

        var pending = new Dictionary<GradNode, Tensor>(ReferenceEqualityComparer.Instance) { [root.GradFn] = seed };
        var ready = new Stack<GradNode>();
        ready.Push(root.GradFn);
        while (ready.Count > 0)
        {
            var node = ready.Pop();
            var g = pending[node];
            pending.Remove(node);
            Tensor?[] grads;
            // Rules get a contiguous gradient, except those recorded to take any layout (permute, attention).
            using (var gc = g.IsContiguous || Graph.TakesStridedGradient(node) ? null : g.ContiguousRaw())
                grads = node.Backward(gc ?? g);
            g.Dispose();
            if (!retainGraph) node.Release();

            for (int i = 0; i < grads.Length; i++)
            {
                var gi = grads[i];
                var e = node.Next[i];
                if (gi is null || e.IsNone) continue;
                if (e.Leaf is not null) Accumulate(e.Leaf, gi, exclusive: OnlyAt(grads, i));
                else
                {
                    var target = e.Node!;
                    if (pending.TryGetValue(target, out var acc))
                    {
                        pending[target] = acc.Add(gi);
                        acc.Dispose();
                    }
                    else pending[target] = gi.Alias();
                    if (--deps[target] == 0) ready.Push(target);
                }
            }
            // The rule's returned handles are ours; the buffers above hold their own.
            foreach (var gi in grads.Distinct(ReferenceEqualityComparer.Instance)) (gi as Tensor)?.Dispose();
        }
        foreach (var leftover in pending.Values) leftover.Dispose();
    }

    /// <summary>True when <c>grads[i]</c> is not the same handle as any other entry (a rule may return one handle twice).</summary>
    private static bool OnlyAt(Tensor?[] grads, int i)
    {
        for (int j = 0; j < grads.Length; j++)
            if (j != i && ReferenceEquals(grads[j], grads[i])) return false;
        return true;
    }

    /// <summary>
    /// True when the leaf may keep <paramref name="g"/>'s buffer as its gradient: same shape, dtype and device as the
    /// leaf, contiguous from offset 0 over its whole storage (not a view into a larger block), and this handle the
    /// storage's only reference (no alias in <c>pending</c>, in a saved tensor, in another returned gradient or in the
    /// caller's hands). The caller guarantees the handle itself is used nowhere else in this backward.
    /// </summary>
    private static bool CanAdopt(Tensor leaf, Tensor g)
        => !g.IsDisposed && g.Numel > 0 && g.DType == leaf.DType && g.Device == leaf.Device && g.Sizes.SequenceEqual(leaf.Sizes)
           && g.IsContiguous && g.Offset == 0 && g.Storage.Bytes == (long)g.Numel * g.DType.Size() && g.Storage.RefCount == 1;

    /// <param name="exclusive">the handle <paramref name="g"/> appears nowhere else (not twice in a rule's results).</param>
    private static void Accumulate(Tensor leaf, Tensor g, bool exclusive)
    {
        if (!g.Sizes.SequenceEqual(leaf.Sizes))
            throw new InvalidOperationException($"backward: gradient {g.ShapeString} does not match leaf {leaf.ShapeString}");
        bool converted = g.DType != leaf.DType;
        var gg = converted ? g.To(leaf.DType) : g;
        var backend = Backends.Get(leaf.Device);
        if (leaf.OwnsGrad)
        {
            // In place: the leaf owns its gradient buffer.
            backend.Binary(BinaryOp.Add, leaf.Grad!, gg, leaf.Grad!);
        }
        else if (leaf.Grad is { IsDisposed: false } prior)
        {
            // A gradient the caller assigned (left untouched): the sum goes to a new buffer owned by the leaf.
            var buf = Tensor.Empty(leaf.Shape, leaf.DType, leaf.Device).Persist();
            backend.Binary(BinaryOp.Add, Ops.ExpandRaw(prior, leaf.Shape), gg, buf);
            leaf.SetOwnedGrad(buf);
        }
        else if (AdoptGradients && (exclusive || converted) && CanAdopt(leaf, gg))
        {
            // First gradient, and its buffer is nobody else's: the leaf keeps it (a persisted handle of its own, in
            // canonical strides; the engine drops the rule's handle afterwards, leaving the leaf's as the only one).
            leaf.SetOwnedGrad(gg.AsStrided(leaf.Shape, Shape.ContiguousStrides(leaf.Shape), 0).Persist());
        }
        else
        {
            // First gradient: a new buffer owned by the leaf.
            var buf = Tensor.Empty(leaf.Shape, leaf.DType, leaf.Device).Persist();
            backend.Copy(gg, buf);
            leaf.SetOwnedGrad(buf);
        }
        if (converted) gg.Dispose();
    }
}

public static class BackwardExtensions
{
    extension(Tensor t)
    {
        /// <summary>
        /// Computes gradients of this tensor with respect to every leaf that requires them, accumulating into
        /// their <see cref="Tensor.Grad"/>. A non-scalar output needs <paramref name="gradient"/>. The graph is
        /// freed as it is walked unless <paramref name="retainGraph"/> is set.
        /// </summary>
        public void Backward(Tensor? gradient = null, bool retainGraph = false) => Engine.Backward(t, gradient, retainGraph);
    }
}
