"""Shared by the benchmark scripts: the machine description, latency
measured in interleaved rounds, and writing results."""

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def machine():
    cpu, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa, "python": platform.python_version()}


def isa_note(isa):
    if {"avx512_vnni", "avx_vnni"} & set(isa):
        return ""
    return (
        "\nThis CPU has no VNNI (int8 dot-product) instructions: XNNPACK's int8 kernels then do no\n"
        "more multiply-adds per cycle than fp32 FMA, so TFLite int8 runs at about float32 speed here.\n"
        "The TFLite int8 speed-up (11 ms vs 38 ms in ../shared/DESIGN.md) needs AVX-512 VNNI or AVX-VNNI.\n"
    )


def interleaved_medians(invokers, rounds=5, runs_per_round=20, warmup=10):
    """Median milliseconds of each no-argument callable, timed in rounds that
    alternate between them so machine drift hits all alike."""
    for invoke in invokers:
        for _ in range(warmup):
            invoke()
    samples = [[] for _ in invokers]
    for _ in range(rounds):
        for invoke, times in zip(invokers, samples):
            for _ in range(runs_per_round):
                start = time.perf_counter()
                invoke()
                times.append((time.perf_counter() - start) * 1e3)
    return [float(np.median(times)) for times in samples]


def write_results(name, result, markdown):
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


def use_repo_imports():
    """Let a benchmark import the test helpers (tests/digits.py)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
