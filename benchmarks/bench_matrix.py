"""ResNet-50 at 224 on this machine, every way we ship it, in one run:
Keras float reference (TensorFlow, compiled), TFLite float32 and int8
(ai-edge-litert), ONNX float32 and int8 (onnxruntime), all at batch 1 with
2 threads, plus the benchmark harness's own overhead.

    .venv/bin/python benchmarks/bench_matrix.py

Writes benchmarks/results/bench_matrix.{json,md}. Weights are random
(seeded): this is about speed. The artifacts go through edge_resnet.device.bench,
the same code `edge-resnet bench` runs on a device.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import isa_note, machine, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RUNS, WARMUP, THREADS = 60, 10, 2


def build_artifacts(folder):
    from edge_resnet.calibration import digits_folder
    from edge_resnet.data.images import Preprocessing, calibration_set
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.model.resnet import resnet50
    from edge_resnet.quantize.onnx_export import to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.tflite import to_tflite

    model, _ = fold_batchnorm(resnet50(classifier_activation=None))
    calibration = calibration_set(str(digits_folder()), Preprocessing(224, 224), size=100)
    float_recipe, int8 = QuantizationRecipe.for_mode("none"), QuantizationRecipe()
    return model, {
        "TFLite float32": to_tflite(model, float_recipe, output=folder / "resnet50_fp32.tflite"),
        "TFLite int8": to_tflite(model, int8, calibration, output=folder / "resnet50_int8.tflite", progress=False),
        "ONNX float32": to_onnx(model, float_recipe, output=folder / "resnet50_fp32.onnx"),
        "ONNX int8 (U8S8 QDQ)": to_onnx(model, int8, calibration, output=folder / "resnet50_int8.onnx"),
    }


def keras_latency_ms(model):
    """The float reference as the parity check runs it: compiled, batch 1."""
    import tensorflow as tf

    sample = np.random.default_rng(0).normal(0, 50, (1, 224, 224, 3)).astype(np.float32)
    compiled = tf.function(lambda x: model(x, training=False), jit_compile=False)
    for _ in range(WARMUP):
        compiled(sample).numpy()
    times = []
    for _ in range(RUNS // 2):
        start = time.perf_counter()
        compiled(sample).numpy()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def harness_overhead(path):
    """Per-run timing (what bench does) against one clock around a bare
    invoke loop, interleaved, on the same interpreter."""
    from edge_resnet.device.runtime import TfliteRunner

    runner = TfliteRunner(path, threads=THREADS)
    runner.feed(np.zeros(runner.input_shape, np.float32))
    invoke, bare, timed = runner.interpreter.invoke, [], []
    for _ in range(WARMUP):
        invoke()
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20):
            invoke()
        bare.append((time.perf_counter() - start) / 20)
        total = 0.0
        for _ in range(20):
            t0 = time.perf_counter()
            invoke()
            total += time.perf_counter() - t0
        timed.append(total / 20)
    return float(np.median(timed) / np.median(bare) - 1)


def main():
    from edge_resnet.device.bench import benchmark

    model, artifacts = build_artifacts(Path(tempfile.mkdtemp()))
    rows = {"Keras float (TF, compiled)": {"p50_ms": round(keras_latency_ms(model), 2), "runtime": "tensorflow"}}
    for name, path in artifacts.items():
        result = benchmark(path, threads=THREADS, warmup=WARMUP, runs=RUNS)
        rows[name] = {"p50_ms": round(result.latency_ms["p50"], 2), "p90_ms": round(result.latency_ms["p90"], 2),
                      "runtime": f"{result.runtime} {result.runtime_version}", "accelerator": result.accelerator,
                      "size_mb": round(path.stat().st_size / 1e6, 1), "peak_rss_mb": round(result.peak_rss_mb)}
    overhead = harness_overhead(artifacts["TFLite int8"])
    result = {"command": "python benchmarks/bench_matrix.py", "machine": machine(), "threads": THREADS,
              "rows": rows, "harness_overhead_fraction": round(overhead, 4)}
    write_results("bench_matrix", result, markdown(result))


def markdown(r):
    rows, m = r["rows"], r["machine"]
    keras_ms, tflite_float = rows["Keras float (TF, compiled)"]["p50_ms"], rows["TFLite float32"]["p50_ms"]
    lines = [
        "# ResNet-50 224, batch 1, 2 threads, one run",
        "",
        f"Command: `{r['command']}`. Machine: {m['cpu']}, {m['cores']} cores, ISA {', '.join(m['isa'])}.",
        "",
        "| model | runtime | accelerator | size (MB) | p50 (ms) | p90 (ms) | vs Keras | vs TFLite float32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['runtime']} | {row.get('accelerator', '')} | {row.get('size_mb', '')} | "
            f"{row['p50_ms']} | {row.get('p90_ms', '')} | {row['p50_ms'] / keras_ms:.2f}x | "
            f"{row['p50_ms'] / tflite_float:.2f}x |"
        )
    lines += ["", f"Harness overhead (per-run timing vs a bare invoke loop, TFLite int8): "
              f"{100 * r['harness_overhead_fraction']:+.2f}%"]
    return "\n".join(lines) + "\n" + isa_note(m["isa"])


if __name__ == "__main__":
    sys.exit(main())
