#!/usr/bin/env python3
"""Run an exported MobileNet .onnx file with ONNX Runtime and compare its
output with the logits our Rust code computed for the same input.

    python scripts/check_onnx.py model.onnx input.bin logits.bin [--layout nhwc|nchw]

input.bin   raw little-endian float32 images, NHWC [N, R, R, 3] by default
            (our engine's layout; the script transposes to the NCHW the
            exported graph takes), or NCHW [N, 3, R, R] with --layout nchw.
            N is the file size divided by 3·R·R·4, R comes from the model.
logits.bin  raw little-endian float32 logits [N, classes] from our code.

If the model ends in a Softmax (output "probs"), our logits are put through
softmax before comparing. Prints the max absolute difference and exits 1 if
it is above 1e-4 x max|reference|, 2 on bad arguments. Runs onnx's checker
(with shape inference) first when the onnx package is installed.
Needs numpy and onnxruntime.
"""

import argparse
import sys

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("logits")
    parser.add_argument("--layout", choices=["nhwc", "nchw"], default="nhwc")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="relative to max |reference| (default 1e-4)")
    parser.add_argument("--no-qdq-fusion", action="store_true",
                        help="run QuantizeLinear/DequantizeLinear as written (ONNX's "
                             "definition) instead of letting ONNX Runtime fuse them "
                             "into its integer kernels")
    args = parser.parse_args()

    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        model = onnx.load(args.model)
        onnx.checker.check_model(model, full_check=True)
        print(f"onnx checker: ok (opset {model.opset_import[0].version}, IR {model.ir_version})")

    import onnxruntime as ort

    options = ort.SessionOptions()
    if args.no_qdq_fusion:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    out = session.get_outputs()[0]
    resolution = inp.shape[2]
    if not isinstance(resolution, int) or inp.shape[1] != 3:
        print(f"unexpected model input shape {inp.shape}", file=sys.stderr)
        return 2

    images = np.fromfile(args.input, dtype="<f4")
    per_image = 3 * resolution * resolution
    if images.size == 0 or images.size % per_image:
        print(f"{args.input}: {images.size} floats is not a whole number of "
              f"{resolution}x{resolution}x3 images", file=sys.stderr)
        return 2
    batch = images.size // per_image
    if args.layout == "nhwc":
        images = images.reshape(batch, resolution, resolution, 3).transpose(0, 3, 1, 2)
    else:
        images = images.reshape(batch, 3, resolution, resolution)
    images = np.ascontiguousarray(images, dtype=np.float32)

    ours = np.fromfile(args.logits, dtype="<f4")
    if ours.size % batch:
        print(f"{args.logits}: {ours.size} floats for {batch} images", file=sys.stderr)
        return 2
    ours = ours.reshape(batch, -1)

    (theirs,) = session.run([out.name], {inp.name: images})
    if theirs.shape != ours.shape:
        print(f"shape mismatch: ONNX Runtime {theirs.shape}, ours {ours.shape}", file=sys.stderr)
        return 1
    reference = ours.astype(np.float64)
    if out.name == "probs":
        print("model ends in Softmax: comparing probabilities")
        e = np.exp(reference - reference.max(axis=1, keepdims=True))
        reference = e / e.sum(axis=1, keepdims=True)

    diff = float(np.abs(theirs.astype(np.float64) - reference).max())
    scale = float(np.abs(reference).max())
    limit = args.tolerance * scale
    top_same = bool((theirs.argmax(axis=1) == reference.argmax(axis=1)).all())
    print(f"batch {batch}, {theirs.shape[1]} classes, resolution {resolution}: "
          f"max |ORT - ours| = {diff:.3e}, max |ours| = {scale:.3e}, "
          f"relative {diff / scale if scale else 0.0:.3e}, top-1 agrees: {top_same}")
    if diff > limit:
        print(f"FAIL: difference above {args.tolerance} x max|ours| = {limit:.3e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
