using System.Reflection;
using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The emulator runs kernels as .NET code, which hides CUDA-only compile failures (maths without an intrinsic,
/// unsupported BCL calls). This compiles the kernels to PTX for sm_90 offline, with no GPU, so those fail here.
/// </summary>
[Category("Cuda")]
public class CudaPtxTests
{
    private Context _ctx = null!;
    private PTXBackend _ptx = null!;

    [OneTimeSetUp]
    public void Setup()
    {
        _ctx = Context.Create(b => b.EnableAlgorithms());
        _ptx = new PTXBackend(_ctx, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_88, null);
    }

    [OneTimeTearDown]
    public void TearDown() { _ptx.Dispose(); _ctx.Dispose(); }

    private string Compile(Type host, string name, params Type[] typeArgs)
    {
        var mi = host.GetMethod(name, BindingFlags.Public | BindingFlags.Static)!;
        if (typeArgs.Length > 0) mi = mi.MakeGenericMethod(typeArgs);
        var k = (PTXCompiledKernel)_ptx.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(mi), default);
        return k.PTXAssembly;
    }

    private static IEnumerable<Type> Nested(Type t, Type iface) => t.GetNestedTypes().Where(n => n.GetInterfaces().Contains(iface));

    [Test]
    public void UnaryAndGradientKernelsCompileToPtx([Values(typeof(float), typeof(double))] Type t)
    {
        var un = typeof(IUnaryOp<,>).MakeGenericType(t, t);
        var gr = typeof(IGradOp<>).MakeGenericType(t);
        foreach (var op in Nested(typeof(UnaryOps), un))
            Assert.That(Compile(typeof(ElementwiseKernels), "Map", t, t, op), Does.Contain(".target sm_"), op.Name);
        foreach (var op in Nested(typeof(UnaryOps), gr))
            Assert.That(Compile(typeof(ElementwiseKernels), "Grad", t, op), Does.Contain(".entry"), op.Name);
    }

    [Test]
    public void BinaryKernelsCompileToPtx([Values(typeof(float), typeof(long), typeof(byte))] Type t)
    {
        foreach (var op in typeof(BinaryOps).GetNestedTypes())
        {
            var arith = typeof(IBinaryOp<,>).MakeGenericType(t, t);
            var cmp = typeof(IBinaryOp<,>).MakeGenericType(t, typeof(byte));
            if (op.GetInterfaces().Contains(arith)) Compile(typeof(ElementwiseKernels), "Zip", t, t, op);
            else if (op.GetInterfaces().Contains(cmp)) Compile(typeof(ElementwiseKernels), "Zip", t, typeof(byte), op);
        }
    }

    [Test]
    public void CastReduceAndRandomKernelsCompileToPtx()
    {
        Compile(typeof(ElementwiseKernels), "Map", typeof(double), typeof(ushort), typeof(CastOp<double, ushort, Elems.F64, Elems.F16>));
        Compile(typeof(ElementwiseKernels), "Map", typeof(ushort), typeof(float), typeof(CastOp<ushort, float, Elems.F16, Elems.F32>));
        Compile(typeof(ElementwiseKernels), "Map", typeof(float), typeof(ushort), typeof(CastOp<float, ushort, Elems.F32, Elems.BF16>));
        Compile(typeof(ElementwiseKernels), "Map", typeof(long), typeof(byte), typeof(CastOp<long, byte, Elems.I64, Elems.Bool>));
        Compile(typeof(ElementwiseKernels), "Where", typeof(float));
        Compile(typeof(ElementwiseKernels), "Fill", typeof(long));
        var red = Compile(typeof(ReduceKernels), "Reduce", typeof(float), typeof(Elems.F32));
        Assert.That(red, Does.Contain("shfl.sync"), "warp-shuffle reduction");
        Compile(typeof(ReduceKernels), "Reduce", typeof(double), typeof(Elems.F64));
        Compile(typeof(ReduceKernels), "ReducePerThread", typeof(float), typeof(Elems.F32));
        Assert.That(Compile(typeof(ReduceKernels), "ReduceSplit", typeof(float), typeof(Elems.F32)), Does.Contain("shfl.sync"));
        Compile(typeof(ReduceKernels), "ReduceFinish", typeof(double), typeof(Elems.F64));
        Compile(typeof(RandomKernels), "Draw");
        Compile(typeof(RandomKernels), "PermKeys");
        Compile(typeof(RandomKernels), "Dropout", typeof(float), typeof(UnaryOps.MulScalar));
    }
}
