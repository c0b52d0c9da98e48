"""PyTorch reference timings for the GPU kernel lab (issue 3), run in the same device call as our lab.

fp32 with TF32 off (the floor the issue names), median of warm runs with CUDA events. Prints one table.
Usage on the GPU machine:  python3 torch_lab_ref.py
"""
import torch, statistics

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda"


def timed(fn, reps=20, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


rows = []
g = torch.Generator(device=dev).manual_seed(0)
for name, m, n, k in [("sgemm 4096^3", 4096, 4096, 4096), ("BERT FFN 7936x3072x768", 7936, 3072, 768)]:
    a = torch.randn(m, k, device=dev, generator=g); b = torch.randn(k, n, device=dev, generator=g)
    t = timed(lambda: a @ b)
    rows.append((name, t * 1e3, f"{2 * m * n * k / t / 1e12:.1f} TFLOP/s"))

x = torch.randn(64, 256, 14, 14, device=dev, generator=g); w = torch.randn(256, 256, 3, 3, device=dev, generator=g)
t = timed(lambda: torch.nn.functional.conv2d(x, w, padding=1))
rows.append(("conv2d [64,256,14,14] 3x3 256->256", t * 1e3, f"{2 * 64 * 256 * 14 * 14 * 256 * 9 / t / 1e12:.1f} TFLOP/s"))

for name, shape in [("layernorm [7936,768]", (7936, 768))]:
    x = torch.randn(*shape, device=dev, generator=g)
    ln = torch.nn.LayerNorm(shape[1], eps=1e-12).to(dev)
    t = timed(lambda: ln(x))
    rows.append((name, t * 1e3, f"{2 * x.numel() * 4 / t / 1e9:.0f} GB/s"))
for name, shape in [("softmax [7936,768]", (7936, 768)), ("softmax [4800,30522]", (4800, 30522))]:
    x = torch.randn(*shape, device=dev, generator=g)
    t = timed(lambda: torch.softmax(x, -1))
    rows.append((name, t * 1e3, f"{2 * x.numel() * 4 / t / 1e9:.0f} GB/s"))
logits = torch.randn(4800, 30522, device=dev, generator=g); tgt = torch.randint(0, 30522, (4800,), device=dev, generator=g)
t = timed(lambda: torch.nn.functional.cross_entropy(logits, tgt))
rows.append(("cross_entropy [4800,30522]", t * 1e3, f"{logits.numel() * 4 / t / 1e9:.0f} GB/s"))

q = torch.randn(64, 12, 124, 64, device=dev, generator=g); kk = torch.randn_like(q); v = torch.randn_like(q)
mask = torch.zeros(64, 1, 1, 124, device=dev); mask[:, :, :, 100:] = -10000.0
def attn():
    p = torch.softmax(q @ kk.transpose(-1, -2) * 0.125 + mask, -1)
    return p @ v
t = timed(attn)
rows.append(("attention fwd [64,12,124,64] (eager)", t * 1e3, f"{4 * 64 * 12 * 124 * 124 * 64 / t / 1e12:.2f} TFLOP/s"))

print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}, fp32, TF32 off")
print(f"{'op':40} {'ms':>9}  throughput")
for name, ms, thr in rows:
    print(f"{name:40} {ms:9.3f}  {thr}")
