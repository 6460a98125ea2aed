"""MobileNet v1 architecture (Howard et al. 2017, TF-slim channel rule) shared by the bench scripts.

Only numpy is imported here, so benchmark workers can use it without pulling in TensorFlow.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = os.path.join(HERE, ".models")
REPO_ROOT = os.path.dirname(HERE)
REAL_TFLITE_025 = os.path.join(
    os.path.dirname(REPO_ROOT),
    "shared/models/mobilenet_v1_0.25_224_float_tflite/mobilenet_v1_0.25_224_1_default_1.tflite",
)

# (stride, output channels before alpha) of the 13 depthwise-separable blocks
BLOCKS = [
    (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024),
]
STEM_CHANNELS = 32
NUM_CLASSES = 1000
BN_EPS = 1e-3


def depth(d: int, alpha: float) -> int:
    """TF-slim's channel rule: max(int(d * alpha), 8)."""
    return max(int(d * alpha), 8)


def alpha_tag(alpha: float) -> str:
    return f"{alpha:.2f}".rstrip("0").rstrip(".") if alpha != 1.0 else "1.0"


def onnx_path(alpha: float, res: int = 224) -> str:
    return os.path.join(MODELS_DIR, f"mobilenet_v1_{alpha_tag(alpha)}_{res}.onnx")


def tflite_path(alpha: float, res: int = 224) -> str:
    return os.path.join(MODELS_DIR, f"mobilenet_v1_{alpha_tag(alpha)}_{res}_keras.tflite")


def same_pads(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow 'SAME' padding: (out, pad_before, pad_after). Stride 2 on even sizes pads
    only after (bottom/right), exactly as Keras' ZeroPadding2D(((0,1),(0,1))) + 'valid'."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


@dataclass
class Layer:
    kind: str          # "conv" (stem), "dw", "pw"
    cin: int
    cout: int
    stride: int
    k: int
    in_size: int
    out_size: int
    pad: tuple[int, int]   # (before, after), same for H and W
    w: np.ndarray          # ONNX layout [cout, cin/group, k, k], BN already folded in
    b: np.ndarray          # [cout], folded BN bias


@dataclass
class Net:
    alpha: float
    res: int
    layers: list[Layer]
    fc_w: np.ndarray   # [classes, C]
    fc_b: np.ndarray   # [classes]

    def macs(self) -> int:
        total = 0
        for L in self.layers:
            per_out = L.k * L.k * (1 if L.kind == "dw" else L.cin)
            total += L.out_size * L.out_size * L.cout * per_out
        return total + self.fc_w.size


def build_net(alpha: float, res: int = 224, seed: int = 0, classes: int = NUM_CLASSES) -> Net:
    """Random weights (He-normal convs, random BN statistics folded into conv weight/bias)."""
    rng = np.random.default_rng(seed)

    def folded(w: np.ndarray, cout: int) -> tuple[np.ndarray, np.ndarray]:
        gamma = rng.uniform(0.5, 1.5, cout)
        beta = rng.normal(0.0, 0.1, cout)
        mean = rng.normal(0.0, 0.1, cout)
        var = rng.uniform(0.5, 1.5, cout)
        scale = gamma / np.sqrt(var + BN_EPS)
        return (w * scale[:, None, None, None]).astype(np.float32), (beta - mean * scale).astype(np.float32)

    layers: list[Layer] = []
    size = res
    cin = 3
    c = depth(STEM_CHANNELS, alpha)
    out, pb, pa = same_pads(size, 3, 2)
    w = rng.normal(0.0, math.sqrt(2.0 / (cin * 9)), (c, cin, 3, 3))
    layers.append(Layer("conv", cin, c, 2, 3, size, out, (pb, pa), *folded(w, c)))
    size, cin = out, c
    for stride, d in BLOCKS:
        out, pb, pa = same_pads(size, 3, stride)
        w = rng.normal(0.0, math.sqrt(2.0 / 9), (cin, 1, 3, 3))
        layers.append(Layer("dw", cin, cin, stride, 3, size, out, (pb, pa), *folded(w, cin)))
        size = out
        cout = depth(d, alpha)
        w = rng.normal(0.0, math.sqrt(2.0 / cin), (cout, cin, 1, 1))
        layers.append(Layer("pw", cin, cout, 1, 1, size, size, (0, 0), *folded(w, cout)))
        cin = cout
    fc_w = rng.normal(0.0, math.sqrt(1.0 / cin), (classes, cin)).astype(np.float32)
    fc_b = rng.normal(0.0, 0.01, classes).astype(np.float32)
    return Net(alpha, res, layers, fc_w, fc_b)
