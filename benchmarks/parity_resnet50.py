"""The accuracy-parity run of tests/test_parity.py with a full-width
ResNet-50: trained on real handwritten digits (32x32), quantized to int8
TFLite and ONNX on 200 training images, compared on the 597 held-out digits.

    .venv/bin/python benchmarks/parity_resnet50.py

Writes benchmarks/results/parity_resnet50.{json,md} with the accuracy,
drops, agreement, SQNR and the time of each stage.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

from common import machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
EPOCHS = 8


def main():
    use_repo_imports()
    from edge_resnet.data.images import Preprocessing, calibration_set, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.onnx_export import to_onnx
    from edge_resnet.check.parity import compare
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.tflite import to_tflite
    from tests.digits import TRAIN_SAMPLES, digit_pixels, train_digits_resnet

    seconds = {}
    clock = time.perf_counter()

    def lap(stage):
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 1)
        clock = now

    model = train_digits_resnet(depth=50, width=1.0, epochs=EPOCHS)
    lap("train (8 epochs, 3600 images)")
    folded, fold_report = fold_batchnorm(model)
    lap("fold")
    train_pixels, _ = digit_pixels(32, TRAIN_SAMPLES)
    calibration = calibration_set(train_pixels, Preprocessing(32, 32), size=200)
    out = Path(tempfile.mkdtemp())
    recipe = QuantizationRecipe()
    artifacts = [to_tflite(folded, recipe, calibration, output=out / "resnet50_int8.tflite", progress=False)]
    lap("TFLite int8")
    artifacts.append(to_onnx(folded, recipe, calibration, output=out / "resnet50_int8.onnx"))
    lap("ONNX int8 (onnxruntime)")
    test_pixels, test_labels = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    data = images_from_array(test_pixels, Preprocessing(32, 32), size=None, labels=test_labels)
    result = compare(folded, artifacts, data)
    lap("compare (597 images, 3 models)")
    result_dict = result.to_dict()
    report = {
        "command": "python benchmarks/parity_resnet50.py",
        "machine": machine(),
        "model": f"ResNet-50 (width 1.0, 32x32 input, {folded.count_params():,} parameters after folding "
                 f"{len(fold_report.folded)} BatchNorms)",
        "stage_seconds": seconds,
        "reference_top1": result_dict["reference"]["metrics"]["top1"],
        "candidates": [
            {"name": c["name"], "top1": c["metrics"]["top1"], "drop_points": round(c["top1_drop_points"], 2),
             "agreement": c["metrics"]["top1_agreement"], "sqnr_db": round(c["metrics"]["sqnr_db"], 1)}
            for c in result_dict["candidates"]
        ],
        "gates_1_point_98_percent": result.gate_failures(max_accuracy_drop=1.0, min_agreement=0.98) or "passed",
    }
    write_results("parity_resnet50", report, markdown(report))


def markdown(r):
    lines = [
        "# Accuracy parity, ResNet-50 on real digits",
        "",
        f"Command: `{r['command']}`. Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores.",
        f"Model: {r['model']}; trained on digits 0..1199 (+2 shifted copies), calibrated on 200 of them,",
        f"evaluated on the 597 held-out digits. Float top-1: {100 * r['reference_top1']:.2f}%.",
        "",
        "| artifact | top-1 | drop (points) | top-1 agreement | SQNR (dB) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {c['name']} | {100 * c['top1']:.2f}% | {c['drop_points']:+.2f} | {100 * c['agreement']:.2f}% | "
              f"{c['sqnr_db']} |" for c in r["candidates"]]
    lines += ["", f"Gates (drop at most 1.0 point, agreement at least 98%): {r['gates_1_point_98_percent']}", "",
              "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {value} |" for stage, value in r["stage_seconds"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
