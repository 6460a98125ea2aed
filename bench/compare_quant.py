#!/usr/bin/env python3
"""Side-by-side latency of the official uint8 MobileNet v1 TFLite files: LiteRT vs ours.

For each model (0.25_128, 0.5_160, 0.75_192, and 1.0_224, which ships as an embedding extractor
plus a head) and each thread count, batch 1, three engines each in its own process:
  litert       ai_edge_litert Interpreter(model_path, num_threads=T), default op resolver (applies
               the XNNPACK delegate; the worker counts DELEGATE nodes), times invoke() only; for
               1.0_224 the extractor and the head are invoked back to back (plus a 1 KiB copy of
               the embedding between them)
  ours_uint8   `mobilenet bench --model FILE [--head HEAD] --json`: the uint8 model in integer
               arithmetic
  ours_float   `mobilenet bench --alpha A --resolution R --json`: our float engine on the same
               architecture (random weights; the same work)
Engines are interleaved: each round runs every engine once in a rotated order; the table shows the
median of the rounds' medians and ratios to LiteRT. Only ratios from the same run mean anything
on a shared machine.

Usage:
  bench/.venv/bin/python bench/compare_quant.py [--models 0.25_128 0.5_160 0.75_192 1.0_224]
      [--threads 1 2] [--rounds 2] [--runs 100] [--warmup 10] [--runs-uint8 N]
      [--warmup-uint8 N] [--max-seconds 3] [--shared ../shared] [--bin target/release/mobilenet]
      [--out bench/results/quant.json]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no bench/__pycache__ in the work tree
sys.path.insert(0, HERE)
import compare  # noqa: E402  (its timing loop, statistics and machine probes)

REPO_ROOT = os.path.dirname(HERE)
CORAL = "models/coral_test_data_mobilenet_v1_quant"
# id -> (alpha, resolution, files run one after the other)
MODELS = {
    "0.25_128": (0.25, 128, ["mobilenet_v1_0.25_128_quant.tflite"]),
    "0.5_160": (0.5, 160, ["mobilenet_v1_0.5_160_quant.tflite"]),
    "0.75_192": (0.75, 192, ["mobilenet_v1_0.75_192_quant.tflite"]),
    "1.0_224": (1.0, 224, ["mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
                           "mobilenet_quant_v1_224_head_layers.tflite"]),
}
ENGINES = ["litert", "ours_uint8", "ours_float"]
LABEL = {"litert": "LiteRT+XNNPACK uint8", "ours_uint8": "ours uint8", "ours_float": "ours float32"}


def default_shared() -> str:
    return os.environ.get("MOBILENET_SHARED") or os.path.join(os.path.dirname(REPO_ROOT), "shared")


def default_bin() -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO_ROOT, "target")
    return os.path.join(target, "release", "mobilenet")


# ----------------------------------------------------------------------------- worker side
def worker_litert(a) -> dict:
    import importlib.metadata as md

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    _, res, files = MODELS[a.model]
    stages = []
    for f in files:
        it = Interpreter(model_path=os.path.join(a.shared, CORAL, f), num_threads=a.threads)
        it.allocate_tensors()
        stages.append(it)
    inp = stages[0].get_input_details()[0]
    assert inp["dtype"] == np.uint8 and list(inp["shape"]) == [1, res, res, 3], inp
    # A real photo's input bytes when the references are there, else a fixed pattern.
    photo = os.path.join(a.shared, "refs", "inputs", f"skimage_chelsea__{res}.u8.bin")
    if os.path.exists(photo):
        x = np.fromfile(photo, dtype=np.uint8).reshape(1, res, res, 3)
    else:
        x = (np.arange(res * res * 3) * 7919 % 256).astype(np.uint8).reshape(1, res, res, 3)
    stages[0].set_tensor(inp["index"], x)
    links = [(s.get_output_details()[0]["index"], t.get_input_details()[0]["index"])
             for s, t in zip(stages, stages[1:])]

    def run():
        stages[0].invoke()
        for (out, nxt), (s, t) in zip(links, zip(stages, stages[1:])):
            t.set_tensor(nxt, s.get_tensor(out))
            t.invoke()

    n_deleg = sum([o["op_name"] for o in s._get_ops_details()].count("DELEGATE") for s in stages)
    n_ops = sum(len(s._get_ops_details()) for s in stages)
    times = compare._time_loop(run, a.warmup, a.runs)
    probs = stages[-1].get_tensor(stages[-1].get_output_details()[0]["index"])
    r = compare._stats(times, 1)
    r["top1"] = int(np.argmax(probs))
    r["delegate_nodes"] = n_deleg
    r["detail"] = f"{n_deleg} DELEGATE of {n_ops} nodes"
    r["version"] = md.version("ai-edge-litert")
    return r


# ----------------------------------------------------------------------------- driver side
def run_ours(a, bin_path: str, model: str, engine: str, threads: int) -> dict:
    alpha, res, files = MODELS[model]
    if engine == "ours_uint8":
        paths = [os.path.join(a.shared, CORAL, f) for f in files]
        cmd = [bin_path, "bench", "--model", paths[0]]
        if len(paths) > 1:
            cmd += ["--head", paths[1]]
        runs = a.runs if a.runs_uint8 is None else a.runs_uint8
        warmup = a.warmup if a.warmup_uint8 is None else a.warmup_uint8
    else:
        cmd = [bin_path, "bench", "--alpha", str(alpha), "--resolution", str(res)]
        runs, warmup = a.runs, a.warmup
    if a.max_seconds:
        # ours has no time cap of its own: cap its run count from a quick probe of its speed
        probe = _ours(cmd + ["--threads", str(threads), "--runs", "3", "--warmup", "1"], threads, a)
        runs = max(10, min(runs, int(a.max_seconds * 1e3 / max(probe["median_ms"], 1e-3))))
    r = _ours(cmd + ["--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup)],
              threads, a)
    r["runs"] = runs
    r["detail"] = f"isa={r.get('isa')} dtype={r.get('dtype')}"
    return r


def _ours(cmd: list[str], threads: int, a) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    p = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=a.timeout, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])


def run_litert(a, model: str, threads: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model-id", model,
           "--threads", str(threads), "--runs", str(a.runs), "--warmup", str(a.warmup),
           "--max-seconds", str(a.max_seconds), "--shared", a.shared]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="0")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {' | '.join(p.stderr.strip().splitlines()[-3:])}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["xnnpack_log"] = "Created TensorFlow Lite XNNPACK delegate" in (p.stderr or "")
    return r


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100, help="timed runs of LiteRT and our float engine")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs-uint8", type=int, default=None,
                    help="timed runs of our uint8 executor (default: as --runs; a slow executor once "
                         "needed fewer, and 5 runs made its medians noisy)")
    ap.add_argument("--warmup-uint8", type=int, default=None, help="default: as --warmup")
    ap.add_argument("--max-seconds", type=float, default=3.0,
                    help="per timed phase of each engine (at least 10 runs)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--shared", default=default_shared())
    ap.add_argument("--bin", default=default_bin())
    ap.add_argument("--out")
    # worker mode
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-id", dest="model", help=argparse.SUPPRESS)
    a = ap.parse_args()
    compare.MAX_SECONDS = a.max_seconds or None

    if a.worker:
        a.threads = a.threads[0]
        print(json.dumps(worker_litert(a)))
        return 0

    if not os.path.exists(os.path.join(a.shared, CORAL)):
        print(f"error: no {CORAL} under {a.shared} (set --shared or MOBILENET_SHARED)", file=sys.stderr)
        return 2
    if not os.path.exists(a.bin):
        print(f"error: {a.bin} missing (cargo build --release)", file=sys.stderr)
        return 2
    # Run a private copy: a concurrent `cargo build` must not swap the binary mid-comparison.
    bin_copy = os.path.join("/tmp", f"mobilenet-bench-quant-{os.getpid()}")
    shutil.copy2(a.bin, bin_copy)
    t_start = time.time()
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    try:
        for model in a.models:
            for threads in a.threads:
                results = {e: [] for e in ENGINES}
                errors = {}
                for rnd in range(a.rounds):
                    busy = compare.wait_quiet(0.3, 20.0)
                    order = ENGINES[rnd % len(ENGINES):] + ENGINES[:rnd % len(ENGINES)]
                    for engine in order:
                        try:
                            if engine == "litert":
                                r = run_litert(a, model, threads)
                            else:
                                r = run_ours(a, bin_copy, model, engine, threads)
                            r["cpu_busy_before"] = busy
                            results[engine].append(r)
                        except Exception as e:  # noqa: BLE001  (reported in the table)
                            errors[engine] = str(e)
                        print(f"[compare_quant] {model} T={threads} round {rnd + 1} {engine}: "
                              + (f"{results[engine][-1]['median_ms']:.3f} ms"
                                 if engine not in errors else f"error {errors[engine]}"), flush=True)
                rows.append({"model": model, "threads": threads, "results": results, "errors": errors})
    finally:
        os.remove(bin_copy)

    print()
    print(f"uint8 MobileNet v1, batch 1, median latency in ms (median over {a.rounds} rounds of "
          f"each process's median); {compare.cpu_info()['model']}; {date}")
    print()
    print("| model | threads | LiteRT+XNNPACK uint8 | ours uint8 | ours float32 | ours uint8 / LiteRT "
          "| ours float32 / LiteRT |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        med = {e: (median_of(rs, "median_ms") if rs else None) for e, rs in row["results"].items()}
        cell = lambda e: f"{med[e]:.3f}" if med[e] else "error"  # noqa: E731
        ratio = lambda e: (f"{med[e] / med['litert']:.2f}x" if med[e] and med["litert"]  # noqa: E731
                           else "—")
        print(f"| {row['model']} | {row['threads']} | {cell('litert')} | {cell('ours_uint8')} | "
              f"{cell('ours_float')} | {ratio('ours_uint8')} | {ratio('ours_float')} |")
    print()
    for row in rows:
        lit = row["results"]["litert"]
        if lit:
            print(f"LiteRT {row['model']} T={row['threads']}: {lit[0]['detail']}, XNNPACK logged: "
                  f"{all(r.get('xnnpack_log') for r in lit)}, top-1 {lit[0]['top1']}")
        ours = row["results"]["ours_uint8"]
        if ours:
            print(f"ours uint8 {row['model']} T={row['threads']}: {ours[0]['detail']}, "
                  f"{ours[0]['runs']} runs per process")
        for e, msg in row["errors"].items():
            print(f"error: {e} {row['model']} T={row['threads']}: {msg}")
    print(f"total time {time.time() - t_start:.0f}s; load avg at end: {os.getloadavg()[0]:.2f}")
    if a.out:
        doc = {"date": date, "cpu": compare.cpu_info(), "settings": {
            k: getattr(a, k) for k in ("rounds", "runs", "warmup", "runs_uint8", "warmup_uint8",
                                       "max_seconds")}, "rows": rows}
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
