using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void IndexSelect(Tensor x, int dim, Tensor index, Tensor y) => throw new NotImplementedException();
    public void IndexAdd(Tensor dst, int dim, Tensor index, Tensor src) => throw new NotImplementedException();
    public void Gather(Tensor x, int dim, Tensor index, Tensor y) => throw new NotImplementedException();
    public void Scatter(Tensor dst, int dim, Tensor index, Tensor src, bool add) => throw new NotImplementedException();
    public void MaskedSelect(Tensor x, Tensor mask, Tensor y) => throw new NotImplementedException();
    public void MaskedScatter(Tensor dst, Tensor mask, Tensor src) => throw new NotImplementedException();
    public void EmbeddingBackward(Tensor ids, Tensor gy, Tensor gWeight, int paddingIdx) => throw new NotImplementedException();
}
