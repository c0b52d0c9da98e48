namespace FashionViL.Tensors;

public partial interface IBackend
{
    /// <summary>Layer norm over the last dim of x [R, D]; mean/rstd are [R].</summary>
    void LayerNormForward(Tensor x, Tensor? weight, Tensor? bias, double eps, Tensor y, Tensor mean, Tensor rstd);
    void LayerNormBackward(Tensor x, Tensor gy, Tensor? weight, Tensor mean, Tensor rstd, Tensor gx, Tensor? gw, Tensor? gb);

    /// <summary>
    /// Fused dropout + residual add + layer norm over the last dim of h and residual [R, D] (same shape):
    /// s ← Dropout(h) + residual (the <see cref="Dropout"/> rule at (seed, offset); p = 0 keeps every element
    /// unscaled and draws nothing), y ← LayerNorm(s); s [R, D] is written for the backward, mean/rstd are [R].
    /// Bitwise equal to Dropout, then an add, then <see cref="LayerNormForward"/>.
    /// </summary>
    void DropoutAddLayerNormForward(Tensor h, Tensor residual, double p, ulong seed, ulong offset, Tensor? weight, Tensor? bias, double eps,
        Tensor s, Tensor y, Tensor mean, Tensor rstd);
    /// <summary>
    /// The backward of <see cref="DropoutAddLayerNormForward"/>: gs ← the layer-norm input gradient (also the residual's
    /// gradient), gh ← the dropout backward of gs at (seed, offset) (skipped when null), gw/gb as in <see cref="LayerNormBackward"/>.
    /// </summary>
    void DropoutAddLayerNormBackward(Tensor s, Tensor gy, Tensor? weight, Tensor mean, Tensor rstd, double p, ulong seed, ulong offset,
        Tensor gs, Tensor? gh, Tensor? gw, Tensor? gb);

    /// <summary>Softmax (or log-softmax) over the last dim of x [R, C].</summary>
    void Softmax(Tensor x, Tensor y, bool log);
    /// <summary>gx from the forward output y and gy.</summary>
    void SoftmaxBackward(Tensor y, Tensor gy, Tensor gx, bool log);

    /// <summary>
    /// Per-row cross-entropy of logits [R, C]: with hard targets (Int64 [R]; rows equal to
    /// <paramref name="ignoreIndex"/> give loss 0) or soft targets [R, C] (loss = −Σ t·log_softmax).
    /// loss [R] and logSumExp [R] are written.
    /// </summary>
    void CrossEntropyForward(Tensor logits, Tensor? target, Tensor? softTarget, int ignoreIndex, Tensor loss, Tensor logSumExp);
    /// <summary>gLogits [R, C] ← ∂(Σ gLoss·loss)/∂logits.</summary>
    void CrossEntropyBackward(Tensor logits, Tensor? target, Tensor? softTarget, int ignoreIndex, Tensor logSumExp, Tensor gLoss, Tensor gLogits);

    /// <summary>Inverted dropout: mask (UInt8) ← keep with probability 1−p from the Philox stream; y ← x·mask/(1−p).</summary>
    void Dropout(Tensor x, Tensor y, Tensor mask, double p, ulong seed, ulong offset);

    /// <summary>
    /// Fused attention: o [B,H,L,D] ← dropout(softmax(scale·q·kᵀ + mask))·v with q [B,H,L,D], k and v [B,H,S,D].
    /// mask is additive, any strides, already broadcast to [B,H,L,S] (zero strides allowed). Dropout on the
    /// probabilities uses the Philox stream (element index = flat index in [B,H,L,S]). probs [B,H,L,S]
    /// receives the softmax (before dropout) for the backward.
    /// <para>
    /// Either output may be null, and the backend then skips the work only it needs: with <paramref name="probs"/> null
    /// (output only) no [B,H,L,S] tensor is written; with <paramref name="o"/> null (probabilities only, the recompute of
    /// the backward) neither dropout nor P·V runs. What is written is bitwise what the call with both outputs writes.
    /// At least one must be given.
    /// </para>
    /// <para>
    /// Layouts: q, k, v (and go in the backward) are any strided [B,H,R,D] views; with unit stride on D they are read in
    /// place (e.g. the heads of a contiguous [B,L,H·D] projection, <c>Reshape(B,L,H,D).Permute(0,2,1,3)</c>, any base
    /// offset), otherwise the backend reads a contiguous copy. o (and gq, gk, gv) may be any [B,H,R,D] views with unit stride
    /// on D (the CUDA backend also wants non-negative strides) whose rows do not overlap (else the call throws, naming the tensor); they are written
    /// row by row in place, so the caller picks the layout (a [B,L,H,D] buffer's permuted view makes the merge of heads a
    /// view). probs is contiguous. The layout never changes a value: results are bitwise those of contiguous operands.
    /// </para>
    /// </summary>
    void AttentionForward(Tensor q, Tensor k, Tensor v, Tensor? mask, double scale, double dropoutP, ulong seed, ulong offset, Tensor? o, Tensor? probs);
    /// <summary>gq, gk, gv (overwritten, layouts as o above) from the saved probs and the same dropout stream; go in any layout.</summary>
    void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor probs, double scale, double dropoutP, ulong seed, ulong offset,
        Tensor go, Tensor gq, Tensor gk, Tensor gv);

    /// <summary>ids (Int64 [N]) ← argmin_k ‖z_n − e_k‖² over codebook [K, D]; first minimum on ties.</summary>
    void VqLookup(Tensor z, Tensor codebook, Tensor ids);

    /// <summary>The k largest (or smallest) of each row of x [R, C], sorted; indices Int64. Ties keep the lower index first.</summary>
    void TopK(Tensor x, int k, bool largest, Tensor values, Tensor indices);
    /// <summary>Stable sort of each row of x [R, C].</summary>
    void Sort(Tensor x, bool descending, Tensor values, Tensor indices);

    /// <summary>
    /// One AdamW step in place (transformers 3.x): m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
    /// step size = lr·√(1−β₂ᵗ)/(1−β₁ᵗ) (or lr without correction); p ← p − step·m/(√v + eps); then p ← p − lr·wd·p.
    /// </summary>
    void AdamWStep(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, AdamWParams p);
    /// <summary>
    /// <see cref="AdamWStep"/> for many tensors at once, each with its own hyper-parameters: the result of every item is
    /// bitwise what <see cref="AdamWStep"/> gives it on the same backend. A device backend packs the items into few launches
    /// (the CPU backend loops). Every item is validated before any is updated; the tensors an item writes must not share
    /// memory with any other tensor of the call (<see cref="AdamWItem.CheckDisjoint"/>).
    /// </summary>
    void AdamWStepMany(IReadOnlyList<AdamWItem> items);
    /// <summary>One SGD step in place; momentumBuffer is required when momentum ≠ 0 (zeros before the first step).</summary>
    void SgdStep(Tensor param, Tensor grad, Tensor? momentumBuffer, SgdParams p, bool firstStep);
}
