#!/usr/bin/env bash
# Create (or reuse) bench/.venv and install the peer engines for bench/compare.py.
#   bash bench/setup.sh               # onnxruntime, onnx, numpy, ai-edge-litert, tensorflow-cpu, tract
#   bash bench/setup.sh --with-torch  # additionally PyTorch (PyPI wheel, several GB with its CUDA deps)
# Idempotent: an existing venv is reused and pip only installs what is missing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
WITH_TORCH=0
for a in "$@"; do
  case "$a" in
    --with-torch) WITH_TORCH=1 ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown option: $a" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-python3}"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
else
  echo "[setup] reusing $VENV ($("$VENV/bin/python" --version))"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

echo "[setup] core: onnxruntime onnx numpy ai-edge-litert"
"${PIP[@]}" install -q onnxruntime onnx numpy ai-edge-litert

# tensorflow-cpu is only used by make_models.py to convert Keras MobileNet -> .tflite.
if "${PIP[@]}" install -q tensorflow-cpu; then
  echo "[setup] tensorflow-cpu installed (used only to build .tflite files)"
else
  echo "[setup] WARNING: tensorflow-cpu could not be installed for $("$VENV/bin/python" --version);" \
       "LiteRT will only run the real file shared/models/mobilenet_v1_0.25_224_float_tflite/*.tflite" >&2
fi

# tract python bindings (optional peer)
if "${PIP[@]}" install -q tract; then
  echo "[setup] tract installed"
else
  echo "[setup] WARNING: 'tract' python bindings not installable; tract will be skipped" >&2
fi

if [[ $WITH_TORCH == 1 ]]; then
  # Only PyPI is reachable here; its Linux torch wheel pulls the CUDA runtime wheels (several GB).
  echo "[setup] torch from PyPI (large download)"
  "${PIP[@]}" install -q torch \
    || echo "[setup] WARNING: torch could not be installed; PyTorch will be skipped" >&2
fi

"$VENV/bin/python" - <<'PY'
import importlib, importlib.metadata
for m in ("numpy", "onnx", "onnxruntime", "ai_edge_litert", "tensorflow", "tract", "torch"):
    try:
        mod = importlib.import_module(m)
        ver = getattr(mod, "__version__", None) or importlib.metadata.version(m)
        print(f"[setup] {m:15s} {ver}")
    except Exception as e:  # noqa: BLE001
        print(f"[setup] {m:15s} not available ({type(e).__name__})")
PY
