using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void Conv2dForward(Tensor x, Tensor w, Tensor? bias, Tensor y, Conv2dParams p) => throw new NotImplementedException();
    public void Conv2dBackwardInput(Tensor gy, Tensor w, Tensor gx, Conv2dParams p) => throw new NotImplementedException();
    public void Conv2dBackwardWeight(Tensor x, Tensor gy, Tensor gw, Tensor? gb, Conv2dParams p) => throw new NotImplementedException();
    public void MaxPool2dForward(Tensor x, Tensor y, Tensor indices, Pool2dParams p) => throw new NotImplementedException();
    public void MaxPool2dBackward(Tensor gy, Tensor indices, Tensor gx) => throw new NotImplementedException();
    public void AdaptiveAvgPool2dForward(Tensor x, Tensor y) => throw new NotImplementedException();
    public void AdaptiveAvgPool2dBackward(Tensor gy, Tensor gx) => throw new NotImplementedException();
    public void BatchNormForward(Tensor x, Tensor? weight, Tensor? bias, Tensor? runningMean, Tensor? runningVar, bool training, double momentum, double eps, Tensor y, Tensor saveMean, Tensor saveInvStd) => throw new NotImplementedException();
    public void BatchNormBackward(Tensor x, Tensor gy, Tensor? weight, Tensor saveMean, Tensor saveInvStd, bool training, Tensor gx, Tensor? gw, Tensor? gb) => throw new NotImplementedException();
    public void GroupNormForward(Tensor x, Tensor? weight, Tensor? bias, int groups, double eps, Tensor y, Tensor mean, Tensor rstd) => throw new NotImplementedException();
    public void GroupNormBackward(Tensor x, Tensor gy, Tensor? weight, int groups, Tensor mean, Tensor rstd, Tensor gx, Tensor? gw, Tensor? gb) => throw new NotImplementedException();
}
