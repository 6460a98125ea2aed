#!/usr/bin/env python3
"""Side-by-side CPU latency/throughput of MobileNet v1 inference engines.

For each (alpha) x (threads) x (batch) configuration, every engine runs in its own subprocess
(fresh thread pools, caches and allocator), with warm-up and many timed runs. Engines are
interleaved: each round runs every engine once, in a rotated order, and the reported figure is the
median over rounds of each round's median (p10/p90 likewise), which damps the noise of a shared
machine. Only ratios measured in the same run mean anything.

Engines (those not installed or not built are skipped with a message):
  ort     ONNX Runtime, CPUExecutionProvider, intra_op_num_threads=T, inter_op_num_threads=1,
          ORT_ENABLE_ALL, ORT_SEQUENTIAL, I/O bound once with IOBinding (times run() only)
  litert  ai_edge_litert Interpreter(model_path, num_threads=T), default op resolver (applies the
          XNNPACK delegate; the worker verifies it), times invoke() only
  tract   tract python bindings on the ONNX file, input fact fixed to the batch (single-threaded
          engine: runs at T=1 only)
  torch   the same weights in torch.nn (eval, inference_mode, set_num_threads(T)), NCHW and
          channels_last both timed, the better reported
  ours    target/release/mobilenet bench ... --json (this crate)
  litert_slim  (opt-in) LiteRT on the real TF-slim file shared/models/..0.25_224.. (alpha 0.25)

Usage:
  bench/.venv/bin/python bench/compare.py [--alpha 1.0 0.25] [--threads 1 2] [--batch 1 16]
      [--rounds 3] [--runs 100] [--runs-batch 20] [--warmup 20] [--warmup-batch 5]
      [--engines ort,litert,tract,torch,ours] [--out bench/results.json]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no bench/__pycache__ in the work tree
sys.path.insert(0, HERE)
import arch  # noqa: E402  (numpy only)

ALL_ENGINES = ["ort", "litert", "tract", "torch", "ours"]
LABEL = {"ort": "ONNX Runtime", "litert": "LiteRT+XNNPACK", "tract": "tract", "torch": "PyTorch",
         "ours": "ours", "litert_slim": "LiteRT (TF-slim file)"}
OURS_BIN = os.path.join(arch.REPO_ROOT, "target", "release", "mobilenet")
OURS_RUN = OURS_BIN  # replaced by a private copy once checked


# ----------------------------------------------------------------------------- worker side
def _stats(times_s: list[float], batch: int) -> dict:
    ms = sorted(t * 1e3 for t in times_s)

    def pct(p: float) -> float:  # nearest-rank on the sorted sample, linear interpolation
        k = (len(ms) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(ms) - 1)
        return ms[lo] + (ms[hi] - ms[lo]) * (k - lo)

    med = pct(0.5)
    return {"median_ms": med, "p10_ms": pct(0.1), "p90_ms": pct(0.9), "min_ms": ms[0],
            "images_per_s": batch * 1e3 / med, "runs": len(ms)}


MAX_SECONDS = None  # per timed phase, set from --max-seconds in the worker


def _time_loop(fn, warmup: int, runs: int) -> list[float]:
    """warm-up, then `runs` timed calls; stops early after MAX_SECONDS (keeping >= 10 runs)."""
    for _ in range(warmup):
        fn()
    out = []
    pc = time.perf_counter
    start = pc()
    for _ in range(runs):
        t0 = pc()
        fn()
        out.append(pc() - t0)
        if MAX_SECONDS and len(out) >= 10 and pc() - start > MAX_SECONDS:
            break
    return out


def _input(batch: int, res: int, nhwc: bool):
    import numpy as np
    rng = np.random.default_rng(7)
    shape = (batch, res, res, 3) if nhwc else (batch, 3, res, res)
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def worker_ort(a) -> dict:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(arch.onnx_path(a.alpha, a.res), so, providers=["CPUExecutionProvider"])
    x = _input(a.batch, a.res, nhwc=False)
    io = sess.io_binding()
    io.bind_cpu_input("input", x)
    out = ort.OrtValue.ortvalue_from_shape_and_type([a.batch, arch.NUM_CLASSES], x.dtype, "cpu")
    io.bind_ortvalue_output("probs", out)
    times = _time_loop(lambda: sess.run_with_iobinding(io), a.warmup, a.runs)
    r = _stats(times, a.batch)
    r["detail"] = f"providers={sess.get_providers()}"
    r["version"] = ort.__version__
    return r


def _litert(a, path: str) -> dict:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path, num_threads=a.threads)
    inp = it.get_input_details()[0]
    if a.batch != inp["shape"][0]:
        it.resize_tensor_input(inp["index"], [a.batch, a.res, a.res, 3])
    it.allocate_tensors()
    it.set_tensor(inp["index"], _input(a.batch, a.res, nhwc=True))
    ops = [o["op_name"] for o in it._get_ops_details()]  # private but stable: shows DELEGATE nodes
    n_deleg = ops.count("DELEGATE")
    times = _time_loop(it.invoke, a.warmup, a.runs)
    out = it.get_tensor(it.get_output_details()[0]["index"])
    assert out.shape[0] == a.batch and np.isfinite(out).all()
    r = _stats(times, a.batch)
    r["detail"] = f"delegate nodes={n_deleg} (0 = plain TFLite kernels)"
    r["delegate_nodes"] = n_deleg
    import importlib.metadata as md
    r["version"] = md.version("ai-edge-litert")
    return r


def worker_litert(a) -> dict:
    return _litert(a, arch.tflite_path(a.alpha, a.res))


def worker_litert_slim(a) -> dict:
    if abs(a.alpha - 0.25) > 1e-9 or a.res != 224:
        raise SystemExit("SKIP: the real TF-slim .tflite exists only for alpha 0.25 at 224")
    return _litert(a, arch.REAL_TFLITE_025)


def worker_tract(a) -> dict:
    import tract
    if a.threads != 1:
        raise SystemExit("SKIP: tract's python bindings run single-threaded (no executor setting)")
    m = tract.onnx().load(arch.onnx_path(a.alpha, a.res))
    m.set_input_fact(0, f"{a.batch},3,{a.res},{a.res},f32")
    r_ = m.into_model().into_runnable()
    state = r_.spawn_state()
    x = _input(a.batch, a.res, nhwc=False)
    times = _time_loop(lambda: state.run([x]), a.warmup, a.runs)
    r = _stats(times, a.batch)
    r["detail"] = "into_runnable (optimized), state reused"
    r["version"] = tract.version()
    return r


def worker_torch(a) -> dict:
    import torch
    from torch import nn
    torch.set_num_threads(a.threads)
    net = arch.build_net(a.alpha, a.res, seed=0)  # the same weights as the ONNX/TFLite files
    mods = []
    for L in net.layers:
        # Symmetric padding 1 for every 3x3 conv (PyTorch convention): same shapes and FLOPs as TF
        # 'SAME', no extra pad copy; the stride-2 outputs sample a one-pixel-shifted window.
        conv = nn.Conv2d(L.cin, L.cout, L.k, stride=L.stride, padding=L.k // 2,
                         groups=L.cin if L.kind == "dw" else 1, bias=True)
        conv.weight.data = torch.from_numpy(L.w.copy())
        conv.bias.data = torch.from_numpy(L.b.copy())
        mods += [conv, nn.ReLU6(inplace=True)]
    fc = nn.Linear(net.fc_w.shape[1], net.fc_w.shape[0])
    fc.weight.data = torch.from_numpy(net.fc_w.copy())
    fc.bias.data = torch.from_numpy(net.fc_b.copy())
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc, nn.Softmax(dim=1)]
    model = nn.Sequential(*mods).eval()
    x = torch.from_numpy(_input(a.batch, a.res, nhwc=False))
    results = {}
    with torch.inference_mode():
        for fmt, mf in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
            m = model.to(memory_format=mf)
            xi = x.contiguous(memory_format=mf)
            results[fmt] = _stats(_time_loop(lambda: m(xi), a.warmup, a.runs), a.batch)
    best = min(results, key=lambda k: results[k]["median_ms"])
    r = dict(results[best])
    r["detail"] = f"best={best}; " + ", ".join(f"{k} {v['median_ms']:.3f} ms" for k, v in results.items())
    r["layout_medians_ms"] = {k: v["median_ms"] for k, v in results.items()}
    r["version"] = torch.__version__
    return r


WORKERS = {"ort": worker_ort, "litert": worker_litert, "tract": worker_tract, "torch": worker_torch,
           "litert_slim": worker_litert_slim}


# ----------------------------------------------------------------------------- driver side
def ours_available(build: bool) -> tuple[bool, str]:
    if not os.path.exists(OURS_BIN):
        if not build:
            return False, f"{OURS_BIN} missing (run cargo build --release)"
        print("[compare] building ours: cargo build --release", flush=True)
        p = subprocess.run(["cargo", "build", "--release"], cwd=arch.REPO_ROOT)
        if p.returncode != 0 or not os.path.exists(OURS_BIN):
            return False, "cargo build --release failed"
    p = subprocess.run([OURS_BIN, "bench", "--help"], capture_output=True, text=True)
    if p.returncode != 0:
        return False, f"`{OURS_BIN} bench` does not exist yet ({(p.stderr or p.stdout).strip().splitlines()[0]})"
    # Run a private copy: a concurrent `cargo build` must not swap the binary in mid-comparison.
    global OURS_RUN
    OURS_RUN = os.path.join("/tmp", f"mobilenet-bench-{os.getpid()}")
    shutil.copy2(OURS_BIN, OURS_RUN)
    import atexit
    import signal
    atexit.register(lambda: os.path.exists(OURS_RUN) and os.remove(OURS_RUN))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    mtime = _dt.datetime.fromtimestamp(os.path.getmtime(OURS_BIN)).astimezone().isoformat(timespec="seconds")
    return True, f"{OURS_BIN} built {mtime}, run from a copy {OURS_RUN}"


def run_ours(alpha, res, batch, threads, runs, warmup, timeout) -> dict:
    # ours has no time cap of its own: cap its run count from a quick probe of its speed instead
    if MAX_SECONDS and runs > 10:
        probe = run_ours_once(alpha, res, batch, threads, 3, 1, timeout)
        runs = max(10, min(runs, int(MAX_SECONDS * 1e3 / max(probe["median_ms"], 1e-3))))
    return run_ours_once(alpha, res, batch, threads, runs, warmup, timeout)


def run_ours_once(alpha, res, batch, threads, runs, warmup, timeout) -> dict:
    cmd = [OURS_RUN, "bench", "--alpha", str(alpha), "--resolution", str(res), "--batch", str(batch),
           "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup), "--json"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()[-300:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("{")][-1]
    r = json.loads(line)
    r.setdefault("images_per_s", batch * 1e3 / r["median_ms"])
    r.setdefault("runs", runs)
    r["detail"] = f"isa={r.get('isa')}"
    return r


def run_worker(engine, alpha, res, batch, threads, runs, warmup, timeout) -> dict:
    if engine == "ours":
        return run_ours(alpha, res, batch, threads, runs, warmup, timeout)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--alpha", str(alpha),
           "--res", str(res), "--batch", str(batch), "--threads", str(threads),
           "--runs", str(runs), "--warmup", str(warmup), "--max-seconds", str(MAX_SECONDS or 0)]
    t = str(threads)
    env = dict(os.environ, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t,
               TF_CPP_MIN_LOG_LEVEL="0")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    out = (p.stdout or "").strip().splitlines()
    if p.returncode != 0:
        msg = (p.stderr or "").strip().splitlines()
        if msg and msg[-1].startswith("SKIP:"):
            return {"skip": msg[-1][5:].strip()}
        raise RuntimeError(f"exit {p.returncode}: {' | '.join(msg[-3:])}")
    r = json.loads(out[-1])
    if engine.startswith("litert"):
        r["xnnpack_log"] = "Created TensorFlow Lite XNNPACK delegate" in (p.stderr or "")
    return r


def cpu_busy(interval: float = 0.5) -> float:
    """Fraction of all CPUs busy (any process) over `interval` seconds, from /proc/stat."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v[:8])  # idle + iowait, total (without guest)
    try:
        i0, t0 = snap()
        time.sleep(interval)
        i1, t1 = snap()
    except OSError:
        return float("nan")
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Wait (up to max_wait s) until the machine is at most `threshold` busy; returns last busy."""
    deadline = time.time() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.time() < deadline:
        time.sleep(2.0)
        busy = cpu_busy()
    return busy


def versions() -> dict:
    import importlib.metadata as md
    v = {"python": platform.python_version()}
    for name in ("numpy", "onnx", "onnxruntime", "ai-edge-litert", "tract", "torch", "tensorflow-cpu"):
        try:
            v[name] = md.version(name)
        except md.PackageNotFoundError:
            v[name] = None
    try:
        v["mobilenet (ours) git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=arch.REPO_ROOT, capture_output=True,
            text=True).stdout.strip() + " (+ uncommitted work tree)"
    except OSError:
        pass
    return v


def cpu_info() -> dict:
    model, flags = "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16") if f in flags]
    return {"model": model, "cores": os.cpu_count(), "isa": isa, "kernel": platform.release()}


def fmt_ms(r: dict | None, batch: int) -> str:
    if r is None:
        return "—"
    if "error" in r:
        return "error"
    if "skip" in r:
        return "n/a"
    s = f"{r['median_ms']:.2f}"
    if batch > 1:
        s += f" ({r['images_per_s']:.0f}/s)"
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--alpha", type=float, nargs="+", default=[1.0, 0.25])
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per configuration")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per round at batch 1")
    ap.add_argument("--runs-batch", type=int, default=20, help="timed runs per round at batch > 1")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up runs at batch 1")
    ap.add_argument("--warmup-batch", type=int, default=5, help="warm-up runs at batch > 1")
    ap.add_argument("--engines", default=",".join(ALL_ENGINES),
                    help="comma list from ort,litert,tract,torch,ours,litert_slim")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per subprocess")
    ap.add_argument("--max-seconds", type=float, default=3,
                    help="cap on each timed phase (keeps >= 10 runs; 0 = no cap): bounds the "
                         "total time when the machine is loaded")
    ap.add_argument("--quiet-threshold", type=float, default=0.3,
                    help="before each round wait until at most this fraction of all CPUs is busy")
    ap.add_argument("--quiet-wait", type=float, default=10,
                    help="max seconds to wait for that per round (0 = never wait)")
    ap.add_argument("--no-build", action="store_true", help="do not cargo build ours if missing")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args()

    global MAX_SECONDS
    MAX_SECONDS = a.max_seconds or None
    if a.worker:  # ---- inside an engine subprocess: one (alpha, batch, threads) measurement
        a.alpha, a.batch, a.threads = a.alpha[0], a.batch[0], a.threads[0]
        print(json.dumps(WORKERS[a.worker](a)), flush=True)
        return 0

    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    notes = []
    import importlib.util
    avail = {}
    for e in engines:
        mod = {"ort": "onnxruntime", "litert": "ai_edge_litert", "litert_slim": "ai_edge_litert",
               "tract": "tract", "torch": "torch"}.get(e)
        if e == "ours":
            ok, why = ours_available(build=not a.no_build)
            avail[e] = ok
            notes.append(f"ours: {why}" if ok else f"ours skipped: {why}")
        elif e not in WORKERS:
            raise SystemExit(f"unknown engine {e}")
        else:
            avail[e] = importlib.util.find_spec(mod) is not None
            if not avail[e]:
                notes.append(f"{LABEL[e]} skipped: python module {mod} not installed"
                             + (" (bash bench/setup.sh --with-torch)" if e == "torch" else ""))
    for alpha in a.alpha:
        for e, path in (("ort", arch.onnx_path(alpha, a.res)), ("tract", arch.onnx_path(alpha, a.res)),
                        ("litert", arch.tflite_path(alpha, a.res))):
            if avail.get(e) and not os.path.exists(path):
                raise SystemExit(f"missing {path}: run bench/.venv/bin/python bench/make_models.py")
    engines = [e for e in engines if avail[e]]

    cpu = cpu_info()
    vers = versions()
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"# MobileNet v1 inference comparison — {date}")
    print(f"CPU: {cpu['model']} x{cpu['cores']} ({', '.join(cpu['isa'])}); kernel {cpu['kernel']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if v))
    print(f"rounds={a.rounds}, batch-1 runs={a.runs} (+{a.warmup} warm-up), "
          f"batch>1 runs={a.runs_batch} (+{a.warmup_batch} warm-up), each timed phase capped at "
          f"{a.max_seconds:g}s (>= 10 runs); load avg at start: "
          f"{os.getloadavg()[0]:.2f}; waits up to {a.quiet_wait:.0f}s per round for <= "
          f"{a.quiet_threshold:.0%} CPU busy")
    for n in notes:
        print("NOTE: " + n)
    sys.stdout.flush()

    t_start = time.time()
    failed_waits = 0
    rows = []
    for alpha in a.alpha:
        gflop = 2 * arch.build_net(alpha, a.res).macs() / 1e9
        for threads in a.threads:
            for batch in a.batch:
                runs = a.runs if batch == 1 else a.runs_batch
                warmup = a.warmup if batch == 1 else a.warmup_batch
                per_engine: dict[str, list[dict]] = {e: [] for e in engines}
                final: dict[str, dict] = {}
                busy_seen = []
                for rnd in range(a.rounds):
                    if a.quiet_wait > 0 and failed_waits < 2:
                        busy = wait_quiet(a.quiet_threshold, a.quiet_wait)
                        # two waits in a row that never saw a quiet machine: stop waiting
                        failed_waits = failed_waits + 1 if busy > a.quiet_threshold else 0
                        if failed_waits == 2:
                            print("  (machine stays busy: no more waiting for quiet in this run)",
                                  file=sys.stderr, flush=True)
                    else:
                        busy = cpu_busy(0.2)
                    busy_seen.append(round(busy, 2))
                    order = engines[rnd % len(engines):] + engines[:rnd % len(engines)]
                    for e in order:
                        if e in final:  # skipped or failed earlier: don't retry every round
                            continue
                        try:
                            r = run_worker(e, alpha, a.res, batch, threads, runs, warmup, a.timeout)
                        except Exception as ex:  # noqa: BLE001
                            final[e] = {"error": str(ex)[:400]}
                            print(f"  [{e}] alpha={alpha} T={threads} B={batch}: ERROR {ex}", file=sys.stderr)
                            continue
                        if "skip" in r:
                            final[e] = r
                            continue
                        per_engine[e].append(r)
                for e in engines:
                    if e in final:
                        continue
                    rs = per_engine[e]
                    agg = {k: statistics.median(x[k] for x in rs) for k in ("median_ms", "p10_ms", "p90_ms")}
                    agg["images_per_s"] = batch * 1e3 / agg["median_ms"]
                    agg["gflop_per_s"] = gflop * batch * 1e3 / agg["median_ms"]
                    agg["round_medians_ms"] = [x["median_ms"] for x in rs]
                    agg["runs_per_round"] = [x.get("runs") for x in rs]
                    agg["detail"] = rs[-1].get("detail", "")
                    for k in ("isa", "xnnpack_log", "delegate_nodes", "layout_medians_ms", "version"):
                        if k in rs[-1]:
                            agg[k] = rs[-1][k]
                    final[e] = agg
                peers = [final[e]["median_ms"] for e in engines
                         if e != "ours" and "median_ms" in final[e]]
                ratio = None
                if "ours" in final and "median_ms" in final["ours"] and peers:
                    ratio = final["ours"]["median_ms"] / min(peers)
                # paired per-round ratios: ours vs each peer in the same round (robust to slow drifts)
                paired = {}
                if "round_medians_ms" in final.get("ours", {}):
                    for e in engines:
                        if e != "ours" and "round_medians_ms" in final[e]:
                            rr = [o / p for o, p in zip(final["ours"]["round_medians_ms"],
                                                        final[e]["round_medians_ms"])]
                            paired[e] = {"per_round": rr, "median": statistics.median(rr)}
                row = {"alpha": alpha, "resolution": a.res, "threads": threads, "batch": batch,
                       "gflop_per_image": gflop, "engines": final, "ours_over_fastest_peer": ratio,
                       "ours_over_peer_paired": paired,
                       "cpu_busy_before_rounds": busy_seen}
                rows.append(row)
                brief = "  ".join(f"{e}={fmt_ms(final[e], batch)}" for e in engines)
                print(f"[{time.time() - t_start:6.0f}s] alpha={alpha} T={threads} B={batch}: {brief}"
                      f"  (CPU busy before rounds: {busy_seen})",
                      file=sys.stderr, flush=True)

    # ---- Markdown table
    print()
    hdr = ["model", "threads", "batch"] + [LABEL[e] + " ms" for e in engines] + [
        "ours / fastest peer", "same, paired per round"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for row in rows:
        cells = [f"{row['alpha']} MobileNet-{row['resolution']}", str(row["threads"]), str(row["batch"])]
        fastest = min((row["engines"][e]["median_ms"] for e in engines
                       if e != "ours" and "median_ms" in row["engines"][e]), default=None)
        for e in engines:
            c = fmt_ms(row["engines"][e], row["batch"])
            if fastest is not None and row["engines"][e].get("median_ms") == fastest:
                c = f"**{c}**"
            cells.append(c)
        cells.append(f"{row['ours_over_fastest_peer']:.2f}" if row["ours_over_fastest_peer"] else "—")
        fe = [e for e in engines if e != "ours" and row["engines"][e].get("median_ms") == fastest]
        pr = row["ours_over_peer_paired"].get(fe[0]) if fe else None
        cells.append(f"{pr['median']:.2f}" if pr else "—")
        print("| " + " | ".join(cells) + " |")
    print()
    print("Median of per-round medians in ms (batch > 1: images/s in brackets); bold = fastest peer; "
          "ratio < 1 means ours is faster; 'paired' = median over rounds of ours / that peer within "
          "the same round. n/a = not applicable (tract is single-threaded).")
    details = {}
    for row in rows:
        for e, r in row["engines"].items():
            if "detail" in r:
                details.setdefault(e, r["detail"])
            if "error" in r:
                print(f"error: {e} alpha={row['alpha']} T={row['threads']} B={row['batch']}: {r['error']}")
    lit = [r for row in rows for e, r in row["engines"].items() if e.startswith("litert") and "median_ms" in r]
    if lit:
        ok = all(r.get("delegate_nodes", 0) > 0 and r.get("xnnpack_log") for r in lit)
        print(f"LiteRT delegate: {'XNNPACK in every run' if ok else 'NOT XNNPACK in some runs'} "
              f"({details.get('litert', details.get('litert_slim'))}; 'Created TensorFlow Lite XNNPACK "
              f"delegate for CPU' logged: {all(r.get('xnnpack_log') for r in lit)})")
    tl = [f"{row['alpha']}/T{row['threads']}/B{row['batch']}: " + row["engines"]["torch"]["detail"]
          for row in rows if "detail" in row["engines"].get("torch", {})]
    if tl:
        print("PyTorch NCHW vs channels_last: " + "; ".join(tl))
    if "ours" in details:
        print("ours: " + details["ours"])
    print(f"total time {time.time() - t_start:.0f}s; load avg at end: {os.getloadavg()[0]:.2f}")

    if a.out:
        doc = {"date": date, "cpu": cpu, "versions": vers, "notes": notes,
               "settings": {k: getattr(a, k) for k in ("rounds", "runs", "runs_batch", "warmup",
                                                        "warmup_batch", "timeout", "max_seconds",
                                                        "quiet_threshold", "quiet_wait")},
               "engines": engines, "rows": rows}
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
