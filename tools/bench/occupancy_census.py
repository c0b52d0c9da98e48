#!/usr/bin/env python3
"""Occupancy census of a full-size FashionViL step at batch 64 on an H100 (132 SMs), issue 7.

Arithmetic only (no GPU, no .NET): the ResNet-50 weight-gradient GEMMs (cout x cin*kh*kw over K = batch*Ho*Wo) and
BERT's weight-gradient GEMMs, with the tile and split-K rules of src/Kernels/Cuda/ConvKernels.cs (Choose, WantedSplits)
and src/Kernels/Cuda/GemmSplitK.cs (Splits). Prints, per GEMM that occupies fewer SMs than the device has, its tiles and
the splits the rules now choose, and a predicted time before/after under one stated assumption: a group works at a
fixed per-SM rate (R_SM below) whether or not other SMs are busy. Also the share of batch-norm elements per stage.
Usage: python3 tools/bench/occupancy_census.py
"""
SM = 132
B = 64
R_SM = 51.5e12 / SM * 0.6   # 60 % of cuBLAS's measured fp32 rate (gpu.md), per SM: an assumption, not a measurement


def ceil(a, b):
    return -(-a // b)


def conv_tile(m, n):          # ConvKernels.Choose (128: v3, 64: v4; before issue 7's convpf: v2 and v1)
    return 128 if (m >= 96 and ceil(m, 128) * ceil(n, 128) >= SM) else 64


def conv_tile_bw(m, n, k, can_split=True):   # ConvKernels.ChooseBackwardWeight
    return 128 if (can_split and m >= 96 and k // 256 >= 2) else conv_tile(m, n)


def conv_splits(m, n, k, old=False):   # BackwardWeightWorkspace + WantedSplits + the chunk rounding of Conv2dBackwardWeight
    t = conv_tile(m, n) if old else conv_tile_bw(m, n, k)
    tiles = ceil(m, t) * ceil(n, t)
    sp = max(1, min(ceil(2 * SM, tiles), max(1, k // 256)))
    if sp < 2 and not old:   # no workspace: the launcher's plain rule
        t = conv_tile(m, n)
        tiles = ceil(m, t) * ceil(n, t)
    if sp > 1:
        chunk = ceil(ceil(k, sp), 16) * 16
        sp = ceil(k, chunk)
    return t, tiles, sp


def conv_modes():
    """GFLOP per (mode, tile) of one full-size step's ResNet-50 convs (fwd + bwd), with the rules before and after convpf."""
    out = {}
    for name, ci, co, k, s, h in resnet50_convs():
        ho = (h + 2 * (k // 2) - k) // s + 1
        f = 2.0 * co * ci * k * k * ho * ho * B
        for mode, m, n, kk in (("fwd", co, B * ho * ho, ci * k * k), ("bwd-in", ci, B * h * h, co * k * k), ("bwd-w", co, ci * k * k, B * ho * ho)):
            if name == "stem" and mode == "bwd-in":
                continue   # the image needs no gradient
            old = conv_tile(m, n)
            new = conv_splits(m, n, kk)[0] if mode == "bwd-w" else conv_tile(m, n)
            out.setdefault(mode, {}).setdefault((old, new), 0.0)
            out[mode][(old, new)] += f
    return out


def gemm_splits(m, n, k, tm=128, tn=128):   # GemmSplitK.Splits (fp32: v5's 128x128 tile)
    tiles = ceil(m, tm) * ceil(n, tn)
    if tiles >= SM or k < 512:
        return tiles, 1
    sp = min(2 * SM // tiles, k // 256)
    if sp < 2:
        return tiles, 1
    chunk = ceil(ceil(k, sp), 16) * 16
    return tiles, ceil(k, chunk)


def resnet50_convs():
    convs = [("stem", 3, 64, 7, 2, 224)]   # name, cin, cout, kernel, stride, input size

    def layer(name, blocks, cin, width, h, stride):
        out = width * 4
        for b in range(blocks):
            ci, s = (cin, stride) if b == 0 else (out, 1)
            convs.append((f"{name}.{b}.conv1", ci, width, 1, 1, h))
            convs.append((f"{name}.{b}.conv2", width, width, 3, s, h))
            convs.append((f"{name}.{b}.conv3", width, out, 1, 1, h // s))
            if b == 0:
                convs.append((f"{name}.{b}.downsample", ci, out, 1, s, h))
            h //= s
        return h

    h = layer("layer1", 3, 64, 64, 56, 1)
    h = layer("layer2", 4, 256, 128, h, 2)
    h = layer("layer3", 6, 512, 256, h, 2)
    layer("layer4", 3, 1024, 512, h, 2)
    return convs


# Predicted fp32 conv rates (TFLOP/s on the whole H100, every SM holding its groups) per version: the FFMA share of the issue
# slots per K tile (cuobjdump -sass of `fashionvil bench ptx`, forward path, hand-counted in bench/convpf.md) times an
# efficiency E times 66.9 TFLOP/s. E = 0.75 calibrates the 64x64/4x4 ILGPU SGEMM measured at 13.3 TFLOP/s (gpu.md) to v1's
# share (26.5 %); v2 gets 0.6 (its global loads are exposed before every K tile's FMAs, two barriers per tile, 16 warps);
# v3 and v4 get v1's 0.75 (prefetch hides the loads). Assumptions, not measurements.
RATE = {"v1": 0.265 * 0.75 * 66.9e12, "v2": 0.552 * 0.60 * 66.9e12, "v3": 0.596 * 0.75 * 66.9e12, "v4": 0.505 * 0.75 * 66.9e12}
TILE = {"v1": 64, "v2": 128, "v3": 128, "v4": 64}
GROUPS = {"v1": 5, "v2": 2, "v3": 2, "v4": 8}   # per SM, from ptxas registers (43/95/115/126) and shared memory


def gemm_time(v, m, n, k, sp=1):
    """Seconds for one conv GEMM: waves of (tiles x splits) groups over SM x GROUPS slots, each group a whole padded tile at
    its share of the device rate; plus the split-K reduction's traffic at 3 TB/s."""
    t = TILE[v]
    units = ceil(m, t) * ceil(n, t) * sp
    slots = SM * GROUPS[v]
    per_group = RATE[v] / slots
    tile_time = 2.0 * t * t * ceil(k, sp) / per_group
    red = (sp + 1) * m * n * 4 / 3.0e12 if sp > 1 else 0.0
    return ceil(units, slots) * tile_time + red


def conv_time_prediction():
    before = {"fwd": 0.0, "bwd-in": 0.0, "bwd-w": 0.0}
    after = dict(before)
    for name, ci, co, k, s, h in resnet50_convs():
        ho = (h + 2 * (k // 2) - k) // s + 1
        for mode, m, n, kk in (("fwd", co, B * ho * ho, ci * k * k), ("bwd-in", ci, B * h * h, co * k * k), ("bwd-w", co, ci * k * k, B * ho * ho)):
            if name == "stem" and mode == "bwd-in":
                continue
            if mode == "bwd-w":
                t0, _, sp0 = conv_splits(m, n, kk, old=True)
                t1, _, sp1 = conv_splits(m, n, kk)
            else:
                t0 = t1 = conv_tile(m, n)
                sp0 = sp1 = 1
            before[mode] += gemm_time("v2" if t0 == 128 else "v1", m, n, kk, sp0)
            after[mode] += gemm_time("v3" if t1 == 128 else "v4", m, n, kk, sp1)
    return before, after


def main():
    before = after = flops = 0.0
    low = 0
    convs = resnet50_convs()
    print(f"ResNet-50 weight gradients at batch {B} ({len(convs)} convs), {SM} SMs")
    print(f"{'conv':22} {'M':>5} {'N':>5} {'K':>7} {'tile':>4} {'tiles':>5} {'splits':>6} {'GFLOP':>6}")
    for name, ci, co, k, s, h in convs:
        ho = (h + 2 * (k // 2) - k) // s + 1
        m, n, kk = co, ci * k * k, B * ho * ho
        t, tiles, sp = conv_splits(m, n, kk)
        f = 2.0 * m * n * kk
        flops += f
        before += f / min(tiles, SM)
        after += f / min(tiles * sp, SM)
        if tiles < SM:
            low += 1
            print(f"{name:22} {m:5} {n:5} {kk:7} {t:4} {tiles:5} {sp:6} {f / 1e9:6.1f}")
    print(f"{low} of {len(convs)} ran on fewer than {SM} SMs; {flops / 1e9:.0f} GFLOP; predicted "
          f"{before / R_SM * 1e3:.1f} ms before, {after / R_SM * 1e3:.1f} ms after (full-device floor {flops / SM / R_SM * 1e3:.1f} ms)")
    b, a = conv_time_prediction()
    print("predicted conv time per step (fp32, assumptions above): " + ", ".join(f"{m} {b[m] * 1e3:.1f} -> {a[m] * 1e3:.1f} ms" for m in b)
          + f"; total {sum(b.values()) * 1e3:.1f} -> {sum(a.values()) * 1e3:.1f} ms")
    names = {(64, 64): "v1 -> v4", (128, 128): "v2 -> v3", (64, 128): "v1 -> v3"}
    for mode, d in conv_modes().items():
        print(f"conv {mode}: " + ", ".join(f"{names[key]} {v / 1e9:.0f} GFLOP" for key, v in sorted(d.items())))
    for task, tokens in (("itc", 75), ("mlm", 124)):
        k = B * tokens
        b = a = 0.0
        for m, n, per_layer in ((768, 768, 4), (3072, 768, 1), (768, 3072, 1)):
            tiles, sp = gemm_splits(m, n, k)
            f = 2.0 * m * n * k * per_layer * 12
            b += f / min(tiles, SM)
            a += f / min(tiles * sp, SM)
            print(f"{task}: BERT weight gradient {m}x{n}, K {k}: {tiles} tiles, {sp} splits, {f / 1e9:.0f} GFLOP over 12 layers")
        print(f"{task}: BERT weight gradients predicted {b / R_SM * 1e3:.1f} ms before, {a / R_SM * 1e3:.1f} ms after")
    # batch norm: elements per stage (each BN follows a conv; its input is that conv's output)
    per = {}
    for name, ci, co, k, s, h in convs:
        ho = (h + 2 * (k // 2) - k) // s + 1
        stage = name.split(".")[0]
        per[stage] = per.get(stage, 0) + B * co * ho * ho
    total = sum(per.values())
    print("batch-norm elements per stage: " + ", ".join(f"{st} {v / total:.0%} (channels {c})" for st, v, c in
          [(st, per[st], {'stem': '64', 'layer1': '64/256', 'layer2': '128/512', 'layer3': '256/1024', 'layer4': '512/2048'}[st]) for st in per]))


if __name__ == "__main__":
    main()
