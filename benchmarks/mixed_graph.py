"""`--min-sqnr-gain 3` on a network that is not a ResNet: the tests'
MobileNetV2-style digits model (tests/digits.py), whose parts the search
cuts from its graph (edge_resnet/quantize/mixed.py graph_parts).

    .venv/bin/python benchmarks/mixed_graph.py

The 597 digits the model never trained on, split once (seed 0): 200
calibrate (the search's held-out images are these, cross-fitted), 397
evaluate. For the logits head and its softmax twin, and for the int8 TFLite
(XNNPACK) and int8 ONNX (onnxruntime): full int8 and the budgeted artifact
made by `edge-resnet quantize` as a user runs it, then both scored on the
397 images against the float Keras model (output SQNR: the probabilities
for a softmax head), and timed at batch 1, 2 threads, in interleaved
rounds (this machine's latency at 32x32; the issue's latency bar is at 224
on a VNNI CPU). Writes benchmarks/results/mixed_graph.{json,md}.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import REPO, interleaved_medians, isa_note, machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
GAIN_DB = 3.0
CALIBRATION_IMAGES = 200
FORMATS = {".tflite": "TFLite", ".onnx": "ONNX"}


def quantize(model_path, calibration, output, *options):
    command = [sys.executable, "-m", "edge_resnet.cli", "quantize", str(model_path), "--calibration",
               str(calibration), "--output", str(output), *options]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if finished.returncode not in (0, 1):  # 1: a budget not met, with the best artifact written
        raise RuntimeError(finished.stderr)
    return finished


def runner_of(path):
    from edge_resnet.device.runtime import OnnxRunner, TfliteRunner

    return (TfliteRunner if path.suffix == ".tflite" else OnnxRunner)(path, threads=2)


def row(model_path, reference, evaluation, calibration, suffix, folder):
    from edge_resnet.device.tflite_inspect import inspect_tflite
    from edge_resnet.quantize.mixed import chosen_step, output_sqnr_db
    from edge_resnet.quantize.recipe import read_record

    full, budgeted = folder / f"full{suffix}", folder / f"mixed{suffix}"
    quantize(model_path, calibration, full)
    finished = quantize(model_path, calibration, budgeted, "--min-sqnr-gain", f"{GAIN_DB:g}")
    record = read_record(budgeted)["mixed_precision"]
    chosen = chosen_step(record)
    runners = [runner_of(full), runner_of(budgeted)]
    full_db, mixed_db = (output_sqnr_db(reference, runner.predict(evaluation)) for runner in runners)
    for runner in runners:
        runner.predict(evaluation[:1])
    medians = interleaved_medians([lambda runner=runner: runner.predict(evaluation[:1]) for runner in runners],
                                  rounds=5, runs_per_round=50)
    return {
        "budget_db": record["budget_sqnr_db"], "met_on_held_out": record["met"],
        "held_out_full_db": record["steps"][0]["sqnr_db"], "held_out_mixed_db": chosen.get("estimated_sqnr_db")
        or chosen["sqnr_db"], "evaluation_full_db": full_db, "evaluation_mixed_db": mixed_db,
        "met_on_evaluation_within_1_db": bool(mixed_db >= record["budget_sqnr_db"] - 1.0),
        "precision": record.get("precision", "float32"), "float_parts": chosen["float_parts"],
        "float_operators": chosen["float_operators"], "parts_in_network": len(record["gain_alone_db"])
        + len(record["not_tried"]), "p50_ms": {"full int8": medians[0], "budgeted": medians[1]},
        "fully_delegated": inspect_tflite(budgeted).fully_delegated if suffix == ".tflite" else None,
        "outside_xnnpack": {name: list(inspect_tflite(path).undelegated_ops) for name, path in
                            (("full int8", full), ("budgeted", budgeted))} if suffix == ".tflite" else None,
        "exit_code": finished.returncode,
    }


def main():
    use_repo_imports()
    from edge_resnet.data.images import Preprocessing, images_from_array
    from tests.digits import TRAIN_SAMPLES, digit_pixels, softmax_twin, trained_digits_mobilenet

    pixels, labels = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    order = np.random.default_rng(0).permutation(len(pixels))
    calibration_index, evaluation_index = order[:CALIBRATION_IMAGES], order[CALIBRATION_IMAGES:]
    evaluation = np.stack(list(images_from_array(pixels[evaluation_index], Preprocessing(32, 32),
                                                 size=None).samples()))
    logits = trained_digits_mobilenet()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mixed-graph-") as folder:
        folder = Path(folder)
        np.savez(folder / "calibration.npz", x=pixels[calibration_index], y=labels[calibration_index])
        for head, model in (("logits", logits), ("softmax", softmax_twin(logits))):
            model.save(folder / f"{head}.keras")
            reference = model.predict(evaluation, verbose=0)
            for suffix in (".tflite", ".onnx"):
                name = f"{head} head, int8 {FORMATS[suffix]}"
                rows[name] = row(folder / f"{head}.keras", reference, evaluation, folder / "calibration.npz",
                                 suffix, folder)
                print(name, json.dumps(rows[name]))
    result = {"machine": machine(), "gain_db": GAIN_DB, "calibration_images": CALIBRATION_IMAGES,
              "evaluation_images": len(evaluation_index), "rows": rows}
    saved = REPO / "benchmarks" / "results" / "mixed_graph.json"
    if saved.exists():  # the measurements before budget artifacts (47) and steps (48) were corrected, kept
        earlier = json.loads(saved.read_text())
        result.update({key: earlier[key] for key in ("evaluation_before_session_47", "before_session_47_commit",
                                                     "rows_before_session_48") if key in earlier})
        result.setdefault("rows_before_session_48", earlier["rows"])
    write_results("mixed_graph", result, markdown(result))


def markdown(result):
    lines = ["# `--min-sqnr-gain 3` on a network that is not a ResNet", "",
             "Command: `python benchmarks/mixed_graph.py`", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"{' '.join(result['machine']['isa'])}. The tests' MobileNetV2-style digits network (16k parameters, "
             f"32x32, held-out top-1 96.3%), its parts cut from its graph; {result['calibration_images']} of the 597 "
             f"digits it never trained on calibrate (`edge-resnet quantize ... --min-sqnr-gain "
             f"{result['gain_db']:g}`, the default `auto` ranges and fallback precision), the other "
             f"{result['evaluation_images']} evaluate. Latency: batch 1, 2 threads, interleaved rounds, at 32x32. "
             "Full int8 is the default artifact (its biases corrected where that helps on the calibration images), "
             "and the budgeted one gets the same guarded correction on its int8 parts (since session 47); the "
             "held-out columns are the search's, each step's candidates corrected alike (since session 48).", "",
             "| artifact | budget dB (held-out) | held-out full int8 -> budgeted | evaluation full int8 -> budgeted | "
             "met on evaluation within 1 dB | parts out of int8 (of the network's) | operators out of int8 | "
             "whole on XNNPACK | p50 ms full int8 -> budgeted |", "|---|---|---|---|---|---|---|---|---|"]
    for name, measured in result["rows"].items():
        parts = ", ".join(measured["float_parts"]) or "none"
        delegated = {True: "yes", False: "NO", None: "-"}[measured["fully_delegated"]]
        outside = measured.get("outside_xnnpack") or {}
        if measured["fully_delegated"] is False and outside["budgeted"] == outside["full int8"]:
            delegated = f"all but {', '.join(outside['budgeted'])}, as full int8"
        lines.append(
            f"| {name} | {measured['budget_db']:.2f}{'' if measured['met_on_held_out'] else ' (NOT met)'} | "
            f"{measured['held_out_full_db']:.2f} -> {measured['held_out_mixed_db']:.2f} | "
            f"{measured['evaluation_full_db']:.2f} -> {measured['evaluation_mixed_db']:.2f} | "
            f"{'yes' if measured['met_on_evaluation_within_1_db'] else 'NO'} | {measured['precision']}: {parts} "
            f"({len(measured['float_parts'])} of {measured['parts_in_network']}) | {measured['float_operators']} | "
            f"{delegated} | {measured['p50_ms']['full int8']:.3f} -> {measured['p50_ms']['budgeted']:.3f} |")
    if "rows_before_session_48" in result:
        lines += ["", "Before session 48 (the search's steps and its level on the models as quantized, only the "
                      "artifacts corrected): "
                  + "; ".join(f"{name}: level {row['budget_db']:.2f}, {len(row['float_parts'])} parts "
                              f"({row['float_operators']} operators), evaluation {row['evaluation_full_db']:.2f} -> "
                              f"{row['evaluation_mixed_db']:.2f}, p50 {row['p50_ms']['full int8']:.3f} -> "
                              f"{row['p50_ms']['budgeted']:.3f} ms"
                              for name, row in result["rows_before_session_48"].items()) + "."]
    if "evaluation_before_session_47" in result:
        lines += ["", "Evaluation full int8 -> budgeted before session 47, when the budgeted artifact kept its biases "
                      f"as quantized ({result['before_session_47_commit']}, the same machine and images): "
                  + "; ".join(f"{name} {full:.2f} -> {budgeted:.2f}"
                              for name, (full, budgeted) in result["evaluation_before_session_47"].items()) + "."]
    return "\n".join(lines) + "\n" + isa_note(result["machine"]["isa"])


if __name__ == "__main__":
    main()
