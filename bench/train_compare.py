"""Training speed, side by side: images/s of one training step (forward,
backward, SGD-with-momentum update) in PyTorch CPU and in ours
(`mobilenet bench --train`), same architecture, batch size and threads,
each engine in its own process, medians over many steps.

    bash bench/setup.sh --with-torch
    bench/.venv/bin/python bench/train_compare.py [--configs fmnist small imagenet] [--threads 1 2]

The architecture is MobileNet v1 as our crate builds it: channels
max(int(d*alpha), 8), a 3x3 stem, 13 depthwise-separable blocks with batch
norm (training mode) and ReLU6, global average pool, FC; the five
downsampling strides (stem, blocks 2, 4, 6, 12) are a knob so that small
images keep a useful map size. PyTorch runs in both memory layouts
(contiguous NCHW and channels_last) and the faster one is reported, as
PyTorch users would pick it. Inputs are random; the figures do not depend
on the data.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OURS = os.path.join(ROOT, "target", "release", "mobilenet")

BLOCKS = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
# Blocks (1-based) whose depthwise conv downsamples in the paper.
DOWNSAMPLING_BLOCKS = (2, 4, 6, 12)

# name: (alpha, resolution, strides, classes, batch)
CONFIGS = {
    # The Fashion-MNIST recipe of the README.
    "fmnist": (0.5, 28, (1, 2, 2, 2, 2), 10, 128),
    # The training test's tiny network.
    "small": (0.25, 32, (1, 2, 2, 2, 2), 10, 64),
    # ImageNet-sized, the paper's network.
    "imagenet": (1.0, 224, (2, 2, 2, 2, 2), 1000, 16),
}


def torch_worker(alpha, resolution, strides, classes, batch, threads, runs, warmup, layout):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def depth(d):
        return max(int(d * alpha), 8)

    class ConvBn(nn.Module):
        def __init__(self, c_in, c_out, k, stride, groups):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.1)

        def forward(self, x):
            return F.relu6(self.bn(self.conv(x)))

    stride_of = {b: s for b, s in zip(DOWNSAMPLING_BLOCKS, strides[1:])}
    layers = [ConvBn(3, depth(32), 3, strides[0], 1)]
    c = depth(32)
    for i, out in enumerate(BLOCKS, start=1):
        layers += [ConvBn(c, c, 3, stride_of.get(i, 1), c), ConvBn(c, depth(out), 1, 1, 1)]
        c = depth(out)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(c, classes)

        def forward(self, x):
            return self.fc(self.features(x).mean(dim=(2, 3)))

    model = Net().train()
    x = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(batch) % classes
    decayed = [p for n, p in model.named_parameters() if p.dim() > 1 and p.shape[1] != 1]
    plain = [p for n, p in model.named_parameters() if not (p.dim() > 1 and p.shape[1] != 1)]
    opt = torch.optim.SGD([{"params": decayed, "weight_decay": 4e-5},
                           {"params": plain, "weight_decay": 0.0}], lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    median = statistics.median(times)
    return {"engine": f"pytorch {torch.__version__} ({layout})", "median_ms": median,
            "images_per_s": batch / (median / 1e3)}


def run_worker(args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + args
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours(alpha, resolution, strides, classes, batch, threads, runs, warmup):
    if not os.path.exists(OURS):
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    cmd = [OURS, "bench", "--train", "--json", "--alpha", str(alpha), "--resolution", str(resolution),
           "--strides", ",".join(map(str, strides)), "--classes", str(classes), "--batch", str(batch),
           "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return {"engine": f"ours ({r['isa']})", "median_ms": r["median_ms"], "images_per_s": r["images_per_s"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["fmnist", "small", "imagenet"], choices=sorted(CONFIGS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker is not None:
        alpha, res, strides, classes, batch, threads, runs, warmup, layout = a.worker
        print(json.dumps(torch_worker(float(alpha), int(res), tuple(int(s) for s in strides.split(",")),
                                      int(classes), int(batch), int(threads), int(runs), int(warmup),
                                      layout)))
        return

    rows = []
    for name in a.configs:
        alpha, res, strides, classes, batch = CONFIGS[name]
        runs = max(3, a.runs // 5) if name == "imagenet" else a.runs
        warmup = max(1, a.warmup // 2) if name == "imagenet" else a.warmup
        for threads in a.threads:
            common = [str(alpha), str(res), ",".join(map(str, strides)), str(classes), str(batch),
                      str(threads), str(runs), str(warmup)]
            torch_results = [run_worker(common + [layout]) for layout in ("contiguous", "channels_last")]
            best_torch = max(torch_results, key=lambda r: r["images_per_s"])
            mine = ours(alpha, res, strides, classes, batch, threads, runs, warmup)
            row = {"config": name, "alpha": alpha, "resolution": res, "strides": strides, "batch": batch,
                   "threads": threads, "pytorch": torch_results, "ours": mine,
                   "ratio": mine["images_per_s"] / best_torch["images_per_s"]}
            rows.append(row)
            print(f"{name:9} a{alpha} {res}px b{batch} t{threads}: torch {best_torch['images_per_s']:8.1f} img/s "
                  f"[{best_torch['engine']}]  ours {mine['images_per_s']:8.1f} img/s  ratio {row['ratio']:.2f}",
                  flush=True)

    print()
    print("| model | batch | threads | PyTorch img/s (best layout) | ours img/s | ours / PyTorch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        best = max(r["pytorch"], key=lambda x: x["images_per_s"])
        s = ",".join(map(str, r["strides"]))
        print(f"| α {r['alpha']}, {r['resolution']} px, strides {s} | {r['batch']} | {r['threads']} | "
              f"{best['images_per_s']:.1f} ({best['engine'].split('(')[-1].rstrip(')')}) | "
              f"{r['ours']['images_per_s']:.1f} | {r['ratio']:.2f} |")
    if a.out:
        meta = {"date": datetime.date.today().isoformat(), "cpu": platform.processor() or platform.machine(),
                "rows": rows}
        with open(a.out, "w") as f:
            json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
