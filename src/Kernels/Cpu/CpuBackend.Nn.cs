using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void LayerNormForward(Tensor x, Tensor? weight, Tensor? bias, double eps, Tensor y, Tensor mean, Tensor rstd) => throw new NotImplementedException();
    public void LayerNormBackward(Tensor x, Tensor gy, Tensor? weight, Tensor mean, Tensor rstd, Tensor gx, Tensor? gw, Tensor? gb) => throw new NotImplementedException();
    public void Softmax(Tensor x, Tensor y, bool log) => throw new NotImplementedException();
    public void SoftmaxBackward(Tensor y, Tensor gy, Tensor gx, bool log) => throw new NotImplementedException();
    public void CrossEntropyForward(Tensor logits, Tensor? target, Tensor? softTarget, int ignoreIndex, Tensor loss, Tensor logSumExp) => throw new NotImplementedException();
    public void CrossEntropyBackward(Tensor logits, Tensor? target, Tensor? softTarget, int ignoreIndex, Tensor logSumExp, Tensor gLoss, Tensor gLogits) => throw new NotImplementedException();
    public void Dropout(Tensor x, Tensor y, Tensor mask, double p, ulong seed, ulong offset) => throw new NotImplementedException();
    public void AttentionForward(Tensor q, Tensor k, Tensor v, Tensor? mask, double scale, double dropoutP, ulong seed, ulong offset, Tensor o, Tensor probs) => throw new NotImplementedException();
    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor probs, double scale, double dropoutP, ulong seed, ulong offset, Tensor go, Tensor gq, Tensor gk, Tensor gv) => throw new NotImplementedException();
    public void VqLookup(Tensor z, Tensor codebook, Tensor ids) => throw new NotImplementedException();
    public void TopK(Tensor x, int k, bool largest, Tensor values, Tensor indices) => throw new NotImplementedException();
    public void Sort(Tensor x, bool descending, Tensor values, Tensor indices) => throw new NotImplementedException();
    public void AdamWStep(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, AdamWParams p) => throw new NotImplementedException();
    public void SgdStep(Tensor param, Tensor grad, Tensor? momentumBuffer, SgdParams p, bool firstStep) => throw new NotImplementedException();
}
