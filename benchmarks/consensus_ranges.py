"""A consensus of the range rules instead of a choice among them?

`auto` picks one rule on held-out calibration images, and the pick is
noisy where a few images carry the output error. A rule that needs no
pick: each tensor takes the median, over the rules, of their ranges (low
and high apart): of the five fixed rules, or of `auto`'s eight candidates
(which add "X inside, min/max on the output" for the clipping rules, so
their median keeps the output tensor's min/max). Each is set beside the
fixed rules and `auto` on the very same images: every model of
benchmarks/calibration.py and its validation models, the unseen protocol,
4 subsets, output SQNR against the float Keras model.

The median of the candidates was then made a ninth candidate of `auto`
("consensus"), and `auto` measured again with it beside `auto` without it
(the first run's column, kept in the JSON), on the same rows and on the
ResNet-152 (width 0.25, 32x32, seed 29) both heads, trained earlier and
never looked at with a consensus rule.

    .venv/bin/python benchmarks/consensus_ranges.py              the first run
    .venv/bin/python benchmarks/consensus_ranges.py candidate    auto with the consensus candidate, + ResNet-152

Writes benchmarks/results/consensus_ranges.{json,md}.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
CONSENSUS = ("median of the 5 fixed rules", "median of auto's 8 candidates")
AUTO_ROUTE = "auto"
HELD_BACK = "ResNet-152 w0.25 32x32 seed 29 (held back: never looked at with a consensus rule)"


def median_ranges(rule_ranges):
    """{tensor: (median low, median high)} over the rules' {tensor: (low, high)}."""
    return {tensor: (float(np.median([ranges[tensor][0] for ranges in rule_ranges])),
                     float(np.median([ranges[tensor][1] for ranges in rule_ranges])))
            for tensor in rule_ranges[0]}


def measure(bench, model, size):
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import tflite_chooser
    from edge_resnet.quantize.ranges import CANDIDATES, RangeMethod, activation_ranges
    from edge_resnet.quantize.selection import resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    fixed = [RangeMethod(name, **parameters) for name, parameters in bench.FIXED_RULES]
    float_model = float_tflite(fold_batchnorm(model)[0])
    rows = {}
    for pixels, pixel_labels, test_pixels, _ in bench.protocol_splits(size, "unseen"):
        test_images = preprocess_input(test_pixels)
        reference = np.asarray(model.predict(test_images, batch_size=50, verbose=0))
        calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=pixel_labels).cached()
        statistics = collect_statistics(float_model, calibration)
        by_rule = {rule.describe(): activation_ranges(statistics, rule) for rule in fixed}
        by_rule[CONSENSUS[0]] = median_ranges([by_rule[rule.describe()] for rule in fixed])
        by_rule[CONSENSUS[1]] = median_ranges([activation_ranges(statistics, rule) for rule in CANDIDATES])
        by_rule[AUTO_ROUTE] = resolved_ranges(statistics, RangeMethod("auto"),
                                              tflite_chooser(float_model, True, calibration))[1]
        for route, ranges in by_rule.items():
            outputs = bench.int8_tflite_outputs(float_model, ranges, test_images)
            rows.setdefault(route, []).append(bench.sqnr_db(reference, outputs))
    return rows


def markdown(results, machine_info):
    routes = [*CONSENSUS, "auto"] + (["auto with the consensus candidate"] if any(
        "auto with the consensus candidate" in result["sqnr_db"] for result in results) else [])
    lines = ["# A consensus of the range rules (per-tensor median) instead of `auto`'s choice", "",
             "Command: `python benchmarks/consensus_ranges.py`", "",
             f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores. Each cell: mean output SQNR over the 4 "
             "calibration subsets of the unseen protocol minus the best fixed rule's (chosen afterwards on the "
             "evaluation images), dB; the same images for every route.", "",
             "| model | best fixed rule | " + " | ".join(routes) + " |", "|---|---|" + "---|" * len(routes)]
    gaps = {route: [] for route in routes}
    for result in results:
        means = {route: float(np.mean(values)) for route, values in result["sqnr_db"].items()}
        means.update({route: float("nan") for route in routes if route not in means})
        fixed = {route: value for route, value in means.items() if route not in routes}
        best = max(fixed, key=fixed.get)
        for route in routes:
            gaps[route].append(means[route] - fixed[best])
        lines.append(f"| {result['model']} | {best} {fixed[best]:.2f} | " +
                     " | ".join(f"{means[route] - fixed[best]:+.2f}" for route in routes) + " |")
    for title, keep in (("the twelve rows", lambda name: HELD_BACK not in name),
                        ("the ResNet-152 held back", lambda name: HELD_BACK in name)):
        chosen = [index for index, result in enumerate(results) if keep(result["model"])]
        lines += ["", f"Over {title}:", "", "| route | mean gap dB | worst gap dB | rows more than 0.3 dB short |",
                  "|---|---|---|---|"]
        for route, values in gaps.items():
            kept = [values[index] for index in chosen if np.isfinite(values[index])]
            if kept:
                lines.append(f"| {route} | {np.mean(kept):+.2f} | {np.min(kept):+.2f} | "
                             f"{sum(value < -0.3 for value in kept)} of {len(kept)} |")
    return "\n".join(lines) + "\n"


def main():
    use_repo_imports()
    sys.path.insert(0, str(HERE))
    from auto_rules import calibration_benchmark

    bench = calibration_benchmark()
    models = [*bench.models_to_measure(), *bench.validation_models()]
    if "candidate" in sys.argv[1:]:
        from trained import temperature_scoring_resnet152, with_softmax

        global AUTO_ROUTE
        AUTO_ROUTE = "auto with the consensus candidate"
        previous = {result["model"]: result for result in json.loads((RESULTS / "consensus_ranges.json").read_text())[
            "results"]}
        network = temperature_scoring_resnet152()
        models += [(f"{HELD_BACK}, {head} head", network if head == "logits" else with_softmax(network), head, 32)
                   for head in ("logits", "softmax")]
    results = []
    for name, model, _, size in models:
        results.append({"model": name, "sqnr_db": measure(bench, model, size)})
        if AUTO_ROUTE != "auto" and name in previous:
            results[-1]["sqnr_db"]["auto"] = previous[name]["sqnr_db"]["auto"]
        print(name, {route: round(float(np.mean(values)), 2) for route, values in results[-1]["sqnr_db"].items()},
              flush=True)
    described = machine()
    write_results("consensus_ranges", {"machine": described, "results": results}, markdown(results, described))


if __name__ == "__main__":
    main()
