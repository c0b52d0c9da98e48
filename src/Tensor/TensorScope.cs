namespace FashionViL.Tensors;

/// <summary>
/// Frees every tensor (and graph node) created on this thread while it is open, except those that were
/// kept with <see cref="Tensor.Keep"/> or moved out by <see cref="Keep(Tensor)"/>. A training loop opens one per
/// step (<c>using var step = Tensor.Scope();</c>) and never calls Dispose on intermediates. Scopes nest:
/// a kept tensor moves to the enclosing scope, or becomes untracked at the outermost one.
/// </summary>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] private static TensorScope? _current;
    private readonly TensorScope? _parent;
    private readonly List<Tensor> _tensors = new();
    private readonly List<GradNode> _nodes = new();
    private bool _disposed;

    internal TensorScope() { _parent = _current; _current = this; }

    public static TensorScope? Current => _current;

    internal void Track(Tensor t) { t.OwnerScope = this; _tensors.Add(t); }
    internal void TrackNode(GradNode n) => _nodes.Add(n);

    /// <summary>Moves <paramref name="t"/> to the enclosing scope (or untracks it) so it outlives this one.</summary>
    public Tensor Keep(Tensor t)
    {
        if (t.OwnerScope == this)
        {
            t.OwnerScope = null;
            _parent?.Track(t);
        }
        return t;
    }

    /// <summary>Number of tensors this scope still owns (for diagnostics and tests).</summary>
    public int OwnedCount => _tensors.Count(t => t.OwnerScope == this && !t.IsDisposed);

    public void Dispose()
    {
        if (_disposed) return;
        if (_current != this) throw new InvalidOperationException("tensor scopes must be disposed in the reverse order of creation");
        _disposed = true;
        _current = _parent;
        foreach (var n in _nodes) n.Release();
        foreach (var t in _tensors)
            if (t.OwnerScope == this) { t.OwnerScope = null; t.Dispose(); }
        _nodes.Clear();
        _tensors.Clear();
    }
}
