"""ONNX float32 vs every int8 variant: latency on ResNet-50 224, and how
well each keeps a trained model's decisions.

    .venv/bin/python benchmarks/onnx_int8.py

Part 1, speed (ResNet-50 224, random seeded weights, logits output,
100 embedded digit images resized to 224 as calibration): export and
quantization times, then onnxruntime latency with 2 intra-op threads for
float32 and each int8 configuration, in interleaved rounds (medians).
Part 2, accuracy: the same configurations on a ResNet-18 trained on real
digits (tests/digits.py), top-1 agreement with the float model on the 597
held-out digits. Writes benchmarks/results/onnx_int8.{json,md} on a CPU
without VNNI (onnxruntime's U8S8 kernels saturate in int16 there) and
benchmarks/results/onnx_int8_vnni.{json,md} on one with it (they add in
int32): the weight-range default is a question of which CPU runs the model.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import interleaved_medians, isa_note, machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VARIANTS = {
    "S8S8 QDQ": {"onnx_activation_type": "int8", "onnx_format": "qdq"},
    "U8S8 QDQ (default)": {"onnx_activation_type": "uint8", "onnx_format": "qdq"},
    "S8S8 QOperator": {"onnx_activation_type": "int8", "onnx_format": "qoperator"},
    "U8S8 QOperator": {"onnx_activation_type": "uint8", "onnx_format": "qoperator"},
    "S8S8 QDQ, 8-bit weights": {"onnx_activation_type": "int8", "onnx_format": "qdq", "onnx_reduce_range": False},
    "U8S8 QDQ, 8-bit weights": {"onnx_activation_type": "uint8", "onnx_format": "qdq", "onnx_reduce_range": False},
}
TFLITE_ROUTE = "from int8 TFLite (QDQ)"


def export_all(model, calibration, folder):
    """{name: (path, seconds)} for float32, every variant and the TFLite route."""
    from edge_resnet.quantize.onnx_export import to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe

    timed = {}
    start = time.perf_counter()
    timed["float32"] = (to_onnx(model, output=folder / "float32.onnx"), time.perf_counter() - start)
    for name, settings in VARIANTS.items():
        start = time.perf_counter()
        slug = "".join(c if c.isalnum() else "_" for c in name)
        path = to_onnx(model, QuantizationRecipe(**settings), calibration, output=folder / f"{slug}.onnx")
        timed[name] = (path, time.perf_counter() - start)
    start = time.perf_counter()
    path = to_onnx(model, QuantizationRecipe(), calibration, output=folder / "tflite_route.onnx", route="tflite")
    timed[TFLITE_ROUTE] = (path, time.perf_counter() - start)
    return timed


def speed():
    from edge_resnet.calibration import digits_folder
    from edge_resnet.data.images import Preprocessing, calibration_set
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.model.resnet import resnet50
    from edge_resnet.device.runtime import OnnxRunner

    model, _ = fold_batchnorm(resnet50(classifier_activation=None))
    calibration = calibration_set(str(digits_folder()), Preprocessing(224, 224), size=100)
    timed = export_all(model, calibration, Path(tempfile.mkdtemp()))
    sample = np.random.default_rng(0).normal(0, 50, (1, 224, 224, 3)).astype(np.float32)
    invokers = []
    for path, _ in timed.values():
        runner = OnnxRunner(path, threads=2)
        invokers.append(lambda runner=runner: runner.predict(sample))
    medians = interleaved_medians(invokers)
    return {name: {"export_seconds": round(seconds, 1), "latency_ms": round(ms, 2),
                   "size_mb": round(path.stat().st_size / 1e6, 1)}
            for (name, (path, seconds)), ms in zip(timed.items(), medians)}


def accuracy():
    use_repo_imports()
    import edge_resnet
    from edge_resnet.calibration import digits_folder
    from edge_resnet.data.images import Preprocessing, calibration_set
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.device.runtime import OnnxRunner, TfliteRunner
    from edge_resnet.quantize.tflite import to_tflite
    from tests.digits import TRAIN_SAMPLES, digit_pixels, train_digits_resnet

    model, _ = fold_batchnorm(train_digits_resnet())
    calibration = calibration_set(str(digits_folder()), Preprocessing(32, 32), size=200)
    pixels, labels = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    images = edge_resnet.preprocess_input(pixels)
    folder = Path(tempfile.mkdtemp())
    timed = export_all(model, calibration, folder)
    timed["TFLite int8 (reference)"] = (to_tflite(model, QuantizationRecipe(), calibration,
                                                  output=folder / "int8.tflite", progress=False), 0)
    reference = np.asarray(model.predict(images, verbose=0)).argmax(1)
    rows = {}
    for name, (path, _) in timed.items():
        runner = TfliteRunner(path) if path.suffix == ".tflite" else OnnxRunner(path)
        predicted = runner.predict(images).argmax(1)
        rows[name] = {"top1": round(float(np.mean(predicted == labels)), 4),
                      "agreement": round(float(np.mean(predicted == reference)), 4)}
    return rows


def has_vnni(isa):
    return bool({"avx512_vnni", "avx_vnni"} & set(isa))


def main():
    speed_rows, accuracy_rows = speed(), accuracy()
    result = {"command": "python benchmarks/onnx_int8.py", "machine": machine(),
              "resnet50_224": speed_rows, "digits_resnet18": accuracy_rows}
    write_results("onnx_int8_vnni" if has_vnni(result["machine"]["isa"]) else "onnx_int8", result, markdown(result))


def markdown(r):
    m, speed_rows, accuracy_rows = r["machine"], r["resnet50_224"], r["digits_resnet18"]
    float_ms = speed_rows["float32"]["latency_ms"]
    lines = [
        "# ONNX float32 and int8 variants",
        "",
        f"Command: `{r['command']}`. Machine: {m['cpu']}, {m['cores']} cores, ISA {', '.join(m['isa'])}.",
        "onnxruntime, CPU provider, 2 intra-op threads, batch 1, medians of interleaved rounds.",
        "int8 variants use 7-bit weights (reduce_range) unless the name says 8-bit.",
        "",
        "| variant | ResNet-50 export + quantize (s) | size (MB) | latency (ms) | vs float32 | digits top-1 | agreement with float |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in speed_rows.items():
        acc = accuracy_rows.get(name, {})
        lines.append(
            f"| {name} | {row['export_seconds']} | {row['size_mb']} | {row['latency_ms']} | "
            f"{row['latency_ms'] / float_ms:.2f}x | {acc.get('top1', '')} | {acc.get('agreement', '')} |"
        )
    tflite = accuracy_rows["TFLite int8 (reference)"]
    lines.append(f"| TFLite int8 (reference) | | | | | {tflite['top1']} | {tflite['agreement']} |")
    return "\n".join(lines) + "\n" + (VNNI_NOTE if has_vnni(m["isa"]) else ORT_NOTE + isa_note(m["isa"]))


ORT_NOTE = """
On x86 without VNNI, onnxruntime's U8S8 kernels multiply u8 by s8 and add pairs in
int16 (twice the multiply-adds per cycle of fp32 FMA, hence 0.5x float latency), which
saturates with full 8-bit weights: hence the default of 7-bit weights. Its S8S8 path
has no such kernel here and is no faster than float32. XNNPACK (TFLite) widens to int16
before multiplying: no saturation, no speed-up over fp32 on this CPU.
"""

VNNI_NOTE = """
With VNNI, onnxruntime's U8S8 kernels add the u8*s8 products in int32 (vpdpbusd): full
8-bit weights do not saturate, and run at the speed of 7-bit ones. The 7-bit default is
for the x86 CPUs without VNNI (benchmarks/results/onnx_int8.md); on this kind of CPU and
on ARM, `--full-range` keeps the full weight grid.
"""


if __name__ == "__main__":
    sys.exit(main())
