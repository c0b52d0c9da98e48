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


def conv_tile(m, n):          # ConvKernels.Choose
    return 128 if (m >= 96 and ceil(m, 128) * ceil(n, 128) >= SM) else 64


def conv_splits(m, n, k):     # ConvKernels.WantedSplits + the chunk rounding of Conv2dBackwardWeight
    t = conv_tile(m, n)
    tiles = ceil(m, t) * ceil(n, t)
    sp = max(1, min(ceil(2 * SM, tiles), max(1, k // 256)))
    if sp > 1:
        chunk = ceil(ceil(k, sp), 16) * 16
        sp = ceil(k, chunk)
    return t, tiles, sp


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
