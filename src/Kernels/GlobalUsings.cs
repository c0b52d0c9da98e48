global using Tensor = FashionViL.Tensors.Tensor;
