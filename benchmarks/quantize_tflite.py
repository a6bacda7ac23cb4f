"""ResNet-50 at 224: TFLite int8 conversion cost and what it buys.

    .venv/bin/python benchmarks/quantize_tflite.py

Measures, in one run on this machine: int8 conversion time for N = 100 and
500 calibration images (total, and per sample from the difference), the
float32 conversion time, file sizes, and int8 vs float32 latency in
ai-edge-litert with 2 threads (interleaved rounds, medians). Writes
benchmarks/results/quantize_tflite.{json,md}.

Weights are random (seeded): this measures speed and size, never accuracy.
The classifier outputs logits (no softmax), as edge-resnet convert exports.
Calibration images are the embedded digits, resized to 224.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, interleaved_medians, isa_note, machine, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def latencies_ms(paths, threads=2):
    """Median latency per model in ai-edge-litert, rounds interleaved."""
    from edge_resnet.device.runtime import TfliteRunner

    runners = []
    for path in paths:
        runner = TfliteRunner(path, threads=threads)
        runner.feed(np.random.default_rng(0).normal(0, 50, runner.input["shape"][1:]).astype(np.float32))
        runners.append(runner)
    return interleaved_medians([runner.interpreter.invoke for runner in runners])


def main():
    if "--render" in sys.argv:  # rewrite the Markdown from the saved JSON
        result = json.loads((RESULTS / "quantize_tflite.json").read_text())
        (RESULTS / "quantize_tflite.md").write_text(markdown(result))
        return 0

    from edge_resnet.calibration import digits_folder
    from edge_resnet.data.images import Preprocessing, calibration_set
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.model.resnet import resnet50
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.tflite import to_tflite
    from edge_resnet.device.tflite_inspect import inspect_tflite

    model, _ = fold_batchnorm(resnet50(classifier_activation=None))
    out = Path(tempfile.mkdtemp())
    rows = {}
    for size in (100, 500):
        calibration = calibration_set(str(digits_folder()), Preprocessing(224, 224), size=size)
        start = time.perf_counter()
        path = to_tflite(model, QuantizationRecipe(), calibration, output=out / f"int8_{size}.tflite", progress=False)
        rows[size] = {"seconds": time.perf_counter() - start, "path": path}
    start = time.perf_counter()
    float_path = to_tflite(model, QuantizationRecipe.for_mode("none"), output=out / "float32.tflite", progress=False)
    float_seconds = time.perf_counter() - start

    per_sample = (rows[500]["seconds"] - rows[100]["seconds"]) / 400
    structure = inspect_tflite(rows[100]["path"])
    int8_ms, float_ms = latencies_ms([rows[100]["path"], float_path])
    result = {
        "command": "python benchmarks/quantize_tflite.py",
        "machine": machine(),
        "versions": json.loads(Path(str(rows[100]["path"]) + ".json").read_text())["versions"],
        "int8_conversion_seconds": {str(n): round(rows[n]["seconds"], 1) for n in rows},
        "int8_seconds_per_calibration_sample": round(per_sample, 3),
        "int8_fixed_seconds": round(rows[100]["seconds"] - 100 * per_sample, 1),
        "float32_conversion_seconds": round(float_seconds, 1),
        "size_mb": {"int8": round(rows[100]["path"].stat().st_size / 1e6, 2),
                    "float32": round(float_path.stat().st_size / 1e6, 2)},
        "latency_ms_2_threads": {"int8": round(int8_ms, 2), "float32": round(float_ms, 2)},
        "int8_over_float32_latency": round(int8_ms / float_ms, 3),
        "int8_fully_integer": structure.fully_integer,
        "int8_fully_delegated_to_xnnpack": structure.fully_delegated,
    }
    write_results("quantize_tflite", result, markdown(result))


def markdown(r):
    m = r["machine"]
    return f"""# TFLite int8 conversion, ResNet-50 224x224

Command: `{r['command']}` (random seeded weights, logits output, embedded digits as calibration images)

Machine: {m['cpu']}, {m['cores']} cores, ISA {', '.join(m['isa'])}; Python {m['python']};
versions {', '.join(f'{k} {v}' for k, v in r['versions'].items())}.

| measure | value |
|---|---|
| int8 conversion, N=100 calibration images | {r['int8_conversion_seconds']['100']} s |
| int8 conversion, N=500 calibration images | {r['int8_conversion_seconds']['500']} s |
| per calibration sample (from the difference) | {r['int8_seconds_per_calibration_sample'] * 1e3:.0f} ms |
| fixed part of an int8 conversion | {r['int8_fixed_seconds']} s |
| float32 conversion | {r['float32_conversion_seconds']} s |
| file size int8 / float32 | {r['size_mb']['int8']} MB / {r['size_mb']['float32']} MB |
| latency int8 / float32 (ai-edge-litert, 2 threads, median) | {r['latency_ms_2_threads']['int8']} ms / {r['latency_ms_2_threads']['float32']} ms |
| int8 latency as a fraction of float32 | {r['int8_over_float32_latency']} |
| int8 fully integer / fully delegated to XNNPACK | {r['int8_fully_integer']} / {r['int8_fully_delegated_to_xnnpack']} |
{isa_note(m['isa'])}"""



if __name__ == "__main__":
    sys.exit(main())
