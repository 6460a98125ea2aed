#!/usr/bin/env python3
"""LiteRT + XNNPACK's time per MobileNet block, in the network, to set beside `mobilenet profile`.

Builds prefix models of Keras' MobileNet (random weights) cut after the stem and after each
block's last ReLU6, converts them to .tflite (into bench/.models/prefix/), times each in LiteRT
(median of --runs invokes per round, median of rounds) and prints every prefix's time and the
difference to the previous one: the block's time with everything before it in the pipeline.
Differences of noisy medians are noisy; compare sums over several blocks.

Usage: bench/.venv/bin/python bench/litert_blocks.py [--alpha 1.0] [--threads 1] [--rounds 3]
       [--runs 200]   (needs tensorflow-cpu and ai-edge-litert: bash bench/setup.sh)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time

import numpy as np

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
CUTS = ["conv1_relu"] + [f"conv_pw_{i}_relu" for i in range(1, 14)] + ["predictions"]


def build(alpha: float, folder: str) -> None:
    import tensorflow as tf

    model = tf.keras.applications.MobileNet(weights=None, alpha=alpha,
                                            input_shape=(224, 224, 3), classes=1000)
    for cut in CUTS:
        path = os.path.join(folder, f"{alpha}_{cut}.tflite")
        if os.path.exists(path):
            continue
        sub = tf.keras.Model(model.input, model.get_layer(cut).output)
        converter = tf.lite.TFLiteConverter.from_keras_model(sub)
        with contextlib.redirect_stdout(io.StringIO()):
            data = converter.convert()
        with open(path, "wb") as f:
            f.write(data)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200)
    a = ap.parse_args()
    folder = os.path.join(HERE, ".models", "prefix")
    os.makedirs(folder, exist_ok=True)
    build(a.alpha, folder)

    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)
    interpreters = {}
    for cut in CUTS:
        it = Interpreter(model_path=os.path.join(folder, f"{a.alpha}_{cut}.tflite"),
                         num_threads=a.threads)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        interpreters[cut] = it
    medians = {cut: [] for cut in CUTS}
    for _ in range(a.rounds):
        for cut in CUTS:
            it = interpreters[cut]
            for _ in range(20):
                it.invoke()
            times = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                it.invoke()
                times.append(time.perf_counter() - t0)
            medians[cut].append(statistics.median(times) * 1e3)
    previous = 0.0
    print(f"LiteRT, alpha {a.alpha}, {a.threads} thread(s): prefix ms, block ms")
    for cut in CUTS:
        m = statistics.median(medians[cut])
        print(f"{cut:18s} {m:8.3f} {m - previous:8.3f}")
        previous = m
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
