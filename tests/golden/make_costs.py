#!/usr/bin/env python3
"""Writes costs.json: exact cost counts of MobileNet v1 for the golden tests.

An independent re-derivation (plain Python, no code shared with the Rust
crate) of paper Table 1 scaled by the width multiplier alpha and the input
resolution, and of the paper's two comparison networks:
  - "conv":    each depthwise-separable block replaced by a full 3x3 conv (Table 4)
  - "shallow": the five 14x14x512 separable blocks removed (Table 5)

Conventions (see src/cost/mod.rs): mult-adds of a KxK conv = K*K*(M/groups)*N*H_out*W_out;
FC = M*N; params = conv weights + FC weights + FC bias; bn_params = 2*C per BN;
memory_access = input + output + params elements per layer; pooling/softmax cost 0.

Run: python3 tests/golden/make_costs.py > tests/golden/costs.json
"""
import json
import math

BLOCKS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 + [(2, 1024), (1, 1024)]


def depth(d, alpha, min_depth=8):
    return max(int(d * alpha), min_depth)


def layers(alpha, resolution, classes, variant):
    """Yields (name, kind, k, c_in, c_out, h_in, h_out)."""
    h = resolution
    out = []

    def conv(name, kind, k, stride, c_in, c_out):
        nonlocal h
        h_out = math.ceil(h / stride)  # 3x3 'SAME' and pad-1 agree; 1x1 stride 1
        out.append((name, kind, k, c_in, c_out, h, h_out))
        h = h_out

    c = depth(32, alpha)
    conv("conv1", "conv", 3, 2, 3, c)
    blocks = BLOCKS if variant != "shallow" else BLOCKS[:6] + BLOCKS[11:]
    for i, (s, n) in enumerate(blocks, start=1):
        n = depth(n, alpha)
        if variant == "conv":
            conv(f"conv_{i}", "conv", 3, s, c, n)
        else:
            conv(f"conv_dw_{i}", "depthwise", 3, s, c, c)
            conv(f"conv_pw_{i}", "pointwise", 1, 1, c, n)
        c = n
    out.append(("global_pool", "avg_pool", 1, c, c, h, 1))
    out.append(("fc", "fc", 1, c, classes, 1, 1))
    out.append(("softmax", "softmax", 1, classes, classes, 1, 1))
    return out


def costs(alpha, resolution, classes, variant):
    rows = []
    for name, kind, k, c_in, c_out, h_in, h_out in layers(alpha, resolution, classes, variant):
        if kind == "conv" or kind == "pointwise":
            ma, p = k * k * c_in * c_out * h_out * h_out, k * k * c_in * c_out
        elif kind == "depthwise":
            ma, p = k * k * c_out * h_out * h_out, k * k * c_out
        elif kind == "fc":
            ma, p = c_in * c_out, c_in * c_out + c_out
        else:
            ma, p = 0, 0
        bn = 2 * c_out if kind in ("conv", "depthwise", "pointwise") else 0
        mac = h_in * h_in * c_in + h_out * h_out * c_out + p
        rows.append({"name": name, "mult_adds": ma, "params": p, "bn_params": bn,
                     "memory_access": mac})
    total = {key: sum(r[key] for r in rows) for key in ("mult_adds", "params", "bn_params", "memory_access")}
    total["flops"] = 2 * total["mult_adds"]
    return {"alpha": alpha, "resolution": resolution, "classes": classes, "variant": variant,
            "layers": rows, "total": total}


def main():
    configs = []
    for alpha in (1.0, 0.75, 0.5, 0.25):
        for resolution in (224, 192, 160, 128):
            configs.append(costs(alpha, resolution, 1000, "mobilenet"))
    for variant in ("conv", "shallow"):
        for alpha in (1.0, 0.75, 0.5, 0.25):
            configs.append(costs(alpha, 224, 1000, variant))
    # Odd sizes and class counts, where rounding of sizes and depths shows.
    configs.append(costs(1.0, 97, 10, "mobilenet"))
    configs.append(costs(0.35, 33, 1001, "mobilenet"))
    configs.append(costs(1.4, 224, 1001, "mobilenet"))
    configs.append(costs(0.1, 32, 2, "shallow"))
    print(json.dumps(configs, indent=1))


if __name__ == "__main__":
    main()
