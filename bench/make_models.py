#!/usr/bin/env python3
"""Build the MobileNet v1 models that bench/compare.py runs, into bench/.models/ (gitignored).

For each alpha (default 1.0 and 0.25) at 224x224, with seeded random weights:
  (a) mobilenet_v1_<a>_224.onnx: written with the onnx helper API, NCHW, symbolic batch "N",
      opset 13: Conv(+folded BN) -> Clip(0,6) for the stem and the 13 dw (group=C) / pw blocks,
      GlobalAveragePool, Flatten, Gemm, Softmax. 3x3 convs use TensorFlow 'SAME' padding
      (stride 2 pads bottom/right only), like Keras, TF-slim and our Rust crate's default.
  (b) mobilenet_v1_<a>_224_keras.tflite: tf.keras.applications.MobileNet(weights=None, ...)
      loaded with the *same* folded weights (BN set to identity + bias), converted with
      tf.lite.TFLiteConverter, float32, no quantization. Batch 1 in the file; LiteRT resizes it.
Then (unless --no-check) runs one random input through ONNX Runtime, LiteRT and tract and
prints the max abs difference of the softmax outputs, so every engine is known to compute the
same network.

Usage: bench/.venv/bin/python bench/make_models.py [--alpha 1.0 0.25] [--res 224] [--force]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.dont_write_bytecode = True  # no bench/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arch  # noqa: E402


def write_onnx(net: arch.Net, path: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"))
    inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"))
    x = "input"
    for i, L in enumerate(net.layers):
        name = "conv1" if L.kind == "conv" else f"conv_{L.kind}_{(i + 1) // 2}"
        inits.append(numpy_helper.from_array(L.w, f"{name}_w"))
        inits.append(numpy_helper.from_array(L.b, f"{name}_b"))
        pb, pa = L.pad
        nodes.append(helper.make_node(
            "Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_conv"], name=name,
            kernel_shape=[L.k, L.k], strides=[L.stride, L.stride],
            pads=[pb, pb, pa, pa], dilations=[1, 1],
            group=L.cin if L.kind == "dw" else 1,
        ))
        nodes.append(helper.make_node("Clip", [f"{name}_conv", "relu6_min", "relu6_max"],
                                      [f"{name}_relu6"], name=f"{name}_relu6"))
        x = f"{name}_relu6"
    inits.append(numpy_helper.from_array(net.fc_w, "fc_w"))
    inits.append(numpy_helper.from_array(net.fc_b, "fc_b"))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes, f"mobilenet_v1_{arch.alpha_tag(net.alpha)}_{net.res}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, net.res, net.res])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", net.fc_w.shape[0]])],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="mobilenet-bench",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every runtime here (ORT, tract)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def write_tflite(net: arch.Net, path: str) -> None:
    import tensorflow as tf

    classes = net.fc_w.shape[0]
    model = tf.keras.applications.MobileNet(
        weights=None, alpha=net.alpha, input_shape=(net.res, net.res, 3), classes=classes,
    )
    eps = None
    for i, L in enumerate(net.layers):
        if L.kind == "conv":
            conv, bn = "conv1", "conv1_bn"
            kernel = L.w.transpose(2, 3, 1, 0)             # [k,k,cin,cout]
        elif L.kind == "dw":
            conv = f"conv_dw_{(i + 1) // 2}"
            bn = conv + "_bn"
            kernel = L.w.transpose(2, 3, 0, 1)             # [k,k,C,1]
        else:
            conv = f"conv_pw_{(i + 1) // 2}"
            bn = conv + "_bn"
            kernel = L.w.transpose(2, 3, 1, 0)
        lc, lb = model.get_layer(conv), model.get_layer(bn)
        assert tuple(lc.get_weights()[0].shape) == kernel.shape, (conv, lc.get_weights()[0].shape, kernel.shape)
        lc.set_weights([kernel])
        eps = lb.epsilon
        c = L.cout
        # BN as identity + bias: gamma=1, beta=b, mean=0, var=1-eps -> x/sqrt(1) + b
        lb.set_weights([np.ones(c, np.float32), L.b, np.zeros(c, np.float32),
                        np.full(c, 1.0 - eps, np.float32)])
    preds = model.get_layer("conv_preds")
    preds.set_weights([net.fc_w.T.reshape(1, 1, -1, classes), net.fc_b])

    import contextlib
    import io

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = []  # float32, no quantization
    with contextlib.redirect_stdout(io.StringIO()):  # Keras export prints every variable's spec
        data = converter.convert()
    with open(path, "wb") as f:
        f.write(data)


def check(alpha: float, res: int) -> None:
    """Same random input through ORT, LiteRT and tract; prints max |diff| of the probabilities."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(123)
    x = rng.uniform(-1, 1, (2, 3, res, res)).astype(np.float32)
    sess = ort.InferenceSession(arch.onnx_path(alpha, res), providers=["CPUExecutionProvider"])
    p_ort = sess.run(None, {"input": x})[0]
    it = Interpreter(model_path=arch.tflite_path(alpha, res), num_threads=1)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [2, res, res, 3])
    it.allocate_tensors()
    it.set_tensor(inp["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    it.invoke()
    p_tfl = it.get_tensor(it.get_output_details()[0]["index"])
    line = (f"[check] alpha={alpha}: ORT argmax={p_ort.argmax(1).tolist()} max_p={p_ort.max():.4f}; "
            f"|ORT-LiteRT|max={np.abs(p_ort - p_tfl).max():.2e}")
    try:
        import tract
        m = tract.onnx().load(arch.onnx_path(alpha, res))
        m.set_input_fact(0, f"2,3,{res},{res},f32")
        r = m.into_model().into_runnable()
        p_tr = r.run([x])[0].to_numpy()
        line += f"; |ORT-tract|max={np.abs(p_ort - p_tr).max():.2e}"
    except ImportError:
        line += "; tract not installed"
    print(line, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alpha", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if the files exist")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    os.makedirs(arch.MODELS_DIR, exist_ok=True)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow  # noqa: F401
        have_tf = True
    except ImportError:
        have_tf = False
        print("[make_models] tensorflow not importable: no Keras .tflite; LiteRT will use only "
              f"the real file {arch.REAL_TFLITE_025} (alpha 0.25)", file=sys.stderr)

    for alpha in args.alpha:
        net = arch.build_net(alpha, args.res, seed=args.seed)
        print(f"[make_models] alpha={alpha} res={args.res}: {len(net.layers)} convs, "
              f"{net.macs() / 1e6:.1f} M mult-adds", flush=True)
        p = arch.onnx_path(alpha, args.res)
        if args.force or not os.path.exists(p):
            t = time.time()
            write_onnx(net, p)
            print(f"  wrote {p} ({os.path.getsize(p) / 1e6:.1f} MB, {time.time() - t:.1f}s)", flush=True)
        else:
            print(f"  exists {p}")
        p = arch.tflite_path(alpha, args.res)
        if have_tf and (args.force or not os.path.exists(p)):
            t = time.time()
            write_tflite(net, p)
            print(f"  wrote {p} ({os.path.getsize(p) / 1e6:.1f} MB, {time.time() - t:.1f}s)", flush=True)
        elif os.path.exists(p):
            print(f"  exists {p}")
        if not args.no_check and os.path.exists(p):
            check(alpha, args.res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
