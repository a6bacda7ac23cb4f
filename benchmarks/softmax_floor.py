"""The floor under an output softmax's int8 input: what it gains.

The int8 softmax of a full-integer TFLite writes probabilities on a 1/256
grid, so a logit more than ln(2 * 256 * (classes - 1)) below its image's
top logit comes out 0 whatever its value. Every range rule now starts the
logits' int8 range no lower than that far below the lowest top logit of
the calibration images (ranges.softmax_input_floor): the grid's steps go
where the probabilities are made. No parameter; derived from the int8
softmax, not from these models.

Each softmax-head model of benchmarks/calibration.py, its validation
models and the held-back ResNet-152, the unseen protocol (4 subsets of 200
calibration images, evaluated on the other half of the held-out digits),
every fixed rule and `auto` with and without the floor, built from the
very same statistics (the floor off: the statistics with no softmax input
named), beside the raw TFLite converter on the same images. Output: the
probabilities, scored against the float Keras model's.

    .venv/bin/python benchmarks/softmax_floor.py              the seven softmax heads
    .venv/bin/python benchmarks/softmax_floor.py held_back    + a ResNet-50 (width 0.5, seed 41) trained after

Writes benchmarks/results/softmax_floor.{json,md}.
"""

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
from common import machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
RAW = "raw TFLite converter (min/max)"
HELD_BACK = "ResNet-152 w0.25 32x32 seed 29 (held back)"
TRAINED_AFTER = "ResNet-50 w0.5 32x32 seed 41 (trained after the floor was measured)"


def measure(bench, model, size):
    """{route: [scores per subset]}, routes "RULE" and "RULE, no floor",
    and the logits' range low with and without the floor per subset."""
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes, tflite_chooser
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.selection import resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    fixed = [RangeMethod(name, **parameters) for name, parameters in bench.FIXED_RULES]
    float_model = float_tflite(fold_batchnorm(model)[0])
    rows, lows = {}, []
    for pixels, pixel_labels, test_pixels, labels in bench.protocol_splits(size, "unseen"):
        test_images = preprocess_input(test_pixels)
        reference = np.asarray(model.predict(test_images, batch_size=50, verbose=0))
        calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=pixel_labels).cached()
        images = list(calibration.samples())
        raw = run_tflite_bytes(bench.raw_converter_int8(model, images), test_images, "the raw converter's")
        rows.setdefault(RAW, []).append(bench.scores(reference, labels, raw, "softmax"))
        with_floor = collect_statistics(float_model, calibration)
        logits = with_floor.softmax_input[0]
        for statistics, suffix in ((with_floor, ""), (dataclasses.replace(with_floor, softmax_input=None), ", no floor")):
            by_rule = {rule.describe(): activation_ranges(statistics, rule) for rule in fixed}
            by_rule["auto"] = resolved_ranges(statistics, RangeMethod("auto"),
                                              tflite_chooser(float_model, True, calibration))[1]
            for route, ranges in by_rule.items():
                outputs = bench.int8_tflite_outputs(float_model, ranges, test_images)
                rows.setdefault(route + suffix, []).append(bench.scores(reference, labels, outputs, "softmax"))
            lows.append((suffix or "floor", by_rule["minmax"][logits][0]))
    return rows, lows


def markdown(results, machine_info):
    rules = [route for route in results[0]["routes"] if route != RAW and not route.endswith(", no floor")]
    lines = ["# The floor under an output softmax's int8 input", "",
             "Command: `python benchmarks/softmax_floor.py`", "",
             f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores. Softmax heads, unseen protocol: mean "
             "output SQNR (the probabilities against the float Keras model's) over 4 subsets of 200 calibration "
             "images, evaluated on the other half of the held-out digits; every route on the same images and, with "
             "and without the floor, from the same statistics. Each cell: without -> with the floor (change).", "",
             "| model | logits' low, min/max -> floor | raw converter | " + " | ".join(rules) + " |",
             "|---|---|---|" + "---|" * len(rules)]
    changes = {rule: [] for rule in rules}
    auto_over_raw = {"without": [], "with": []}
    for result in results:
        routes = result["routes"]
        mean = {route: float(np.mean([v["sqnr_db"] for v in values])) for route, values in routes.items()}
        lows = {which: np.mean([low for kind, low in result["lows"] if kind == which])
                for which in ("floor", ", no floor")}
        low_text = f"{lows[', no floor']:.1f} -> {lows['floor']:.1f}"
        cells = []
        for rule in rules:
            before, after = mean[rule + ", no floor"], mean[rule]
            changes[rule].append(after - before)
            cells.append(f"{before:.2f} -> {after:.2f} ({after - before:+.2f})")
        auto_over_raw["without"].append(mean["auto, no floor"] - mean[RAW])
        auto_over_raw["with"].append(mean["auto"] - mean[RAW])
        lines.append(f"| {result['model']} | {low_text} | {mean[RAW]:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "| rule | mean change dB | worst change dB | rows it lowers by more than 0.1 dB |", "|---|---|---|---|"]
    for rule, values in changes.items():
        lines.append(f"| {rule} | {np.mean(values):+.2f} | {np.min(values):+.2f} | "
                     f"{sum(value < -0.1 for value in values)} of {len(values)} |")
    lines += ["", "`auto` over the raw converter, per model: without the floor " +
              ", ".join(f"{value:+.2f}" for value in auto_over_raw["without"]) +
              f" (mean {np.mean(auto_over_raw['without']):+.2f}); with it " +
              ", ".join(f"{value:+.2f}" for value in auto_over_raw["with"]) +
              f" (mean {np.mean(auto_over_raw['with']):+.2f}).", "",
              "Top-1 agreement with the float model, `auto` without -> with the floor: " +
              "; ".join(f"{result['model'].split(' (')[0]} "
                        f"{100 * np.mean([v['agreement'] for v in result['routes']['auto, no floor']]):.2f}% -> "
                        f"{100 * np.mean([v['agreement'] for v in result['routes']['auto']]):.2f}%"
                        for result in results) + "."]
    return "\n".join(lines) + "\n"


def main():
    use_repo_imports()
    sys.path.insert(0, str(HERE))
    from auto_rules import calibration_benchmark
    from common import RESULTS
    from trained import softmax_floor_resnet50, temperature_scoring_resnet152, with_softmax

    bench = calibration_benchmark()
    if "held_back" in sys.argv[1:]:
        results = json.loads((RESULTS / "softmax_floor.json").read_text())["results"]
        models = [(f"{TRAINED_AFTER}, softmax head", with_softmax(softmax_floor_resnet50()), "softmax", 32)]
    else:
        results = []
        models = [*bench.models_to_measure(("softmax",)), *bench.validation_models()]
        models = [entry for entry in models if entry[2] == "softmax"]
        models.append((f"{HELD_BACK}, softmax head", with_softmax(temperature_scoring_resnet152()), "softmax", 32))
    for name, model, _, size in models:
        routes, lows = measure(bench, model, size)
        results.append({"model": name, "routes": routes, "lows": lows})
        print(name, {route: round(float(np.mean([v["sqnr_db"] for v in values])), 2)
                     for route, values in routes.items()}, flush=True)
    described = machine()
    write_results("softmax_floor", {"machine": described, "results": results}, markdown(results, described))


if __name__ == "__main__":
    main()
