"""What `--device ssh://` costs: a ResNet-50 224 int8 TFLite timed on a
"board" reached through loopback SSH against the same bench run locally on
the same machine, in alternating rounds, and the transfer with a cold and a
warm device cache.

The board is the tests' stand-in (Debian's sshd on 127.0.0.1) and its Python
is this one, so the runtime is the same on both sides: the difference is the
harness's own cost.

    python benchmarks/device_ssh.py [--rounds 5] [--runs 50]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, write_results  # noqa: E402
from edge_resnet.device.bench import benchmark  # noqa: E402
from edge_resnet.device.remote import SshTarget, bench_on_boards  # noqa: E402
from tests.ssh_device import StandInDevice  # noqa: E402

CACHE = Path.home() / ".cache" / "edge-resnet" / "benchmarks"


def resnet50_int8():
    """ResNet-50 at 224 with random weights (latency does not depend on them), int8 TFLite."""
    model = CACHE / "resnet50_224_random_int8" / "resnet50_int8.tflite"
    if not model.is_file():
        subprocess.run([sys.executable, "-m", "edge_resnet.cli", "convert", "--model", "resnet50", "--weights",
                        "random", "--input-size", "224", "--quantize", "int8", "--formats", "tflite",
                        "--calibration-method", "minmax", "--calibration-size", "32", "--bench-runs", "0",
                        "--no-per-layer", "--output", str(model.parent), "--force"], check=True)
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    model = resnet50_int8()
    settings = {"threads": 2, "warmup": 10, "runs": args.runs, "duration": None, "batch": 1, "profile": False}
    with tempfile.TemporaryDirectory() as folder:
        board = StandInDevice(folder).start()
        try:
            target = SshTarget(host="device", ssh_config=board.config, python=sys.executable)
            transfers = []
            for cache in ("cold", "warm"):
                start = time.perf_counter()
                result = bench_on_boards([target], [model], [None], {**settings, "runs": 1}, clear_cache=cache == "cold")[0]
                transfers.append({"cache": cache, "seconds": time.perf_counter() - start,
                                  "uploaded_bytes": result.device["uploaded_bytes"]})
            local, remote = [], []
            for _ in range(args.rounds):  # alternate, so the machine's drift hits both alike
                local.append(benchmark(model, **settings).latency_ms["p50"])
                remote.append(bench_on_boards([target], [model], [None], settings)[0].latency_ms["p50"])
        finally:
            board.stop()
    local_p50, remote_p50 = float(np.median(local)), float(np.median(remote))
    result = {"machine": machine(), "model": "ResNet-50 224 int8 TFLite (random weights)",
              "model_bytes": model.stat().st_size, "rounds": args.rounds, "runs_per_round": args.runs,
              "local_p50_ms": local, "remote_p50_ms": remote, "local_median_ms": local_p50,
              "remote_median_ms": remote_p50, "remote_over_local": remote_p50 / local_p50, "transfers": transfers}
    lines = [
        "# `--device ssh://`: the harness's own cost", "",
        f"Command: `python benchmarks/device_ssh.py --rounds {args.rounds} --runs {args.runs}`", "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{' '.join(result['machine']['isa'])}. The board is this machine through loopback SSH (Debian's sshd), "
        "with this Python and runtime (ai-edge-litert, XNNPACK), so only the harness differs.", "",
        f"Model: {result['model']}, {result['model_bytes'] / 1e6:.1f} MB; batch 1, 2 threads, "
        f"{args.runs} timed runs per round, {args.rounds} alternating rounds.", "",
        "| | p50 per round (ms) | median (ms) |", "|---|---|---|",
        f"| local `bench` | {', '.join(f'{v:.2f}' for v in local)} | {local_p50:.2f} |",
        f"| `bench --device ssh://device` | {', '.join(f'{v:.2f}' for v in remote)} | {remote_p50:.2f} |", "",
        f"Remote over local: **{remote_p50 / local_p50:.3f}x** (goal: within 2%).", "",
        "| device cache | run time (s), 1 timed run | uploaded |", "|---|---|---|",
        *[f"| {t['cache']} | {t['seconds']:.2f} | {t['uploaded_bytes'] / 1e6:.1f} MB |" for t in transfers], "",
    ]
    write_results("device_ssh", result, "\n".join(lines))


if __name__ == "__main__":
    main()
