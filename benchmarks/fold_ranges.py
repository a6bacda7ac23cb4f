"""Final ranges at the sample size `auto` scored them at: a replay.

`auto` scores each rule with ranges fitted on one fold of the calibration
images (a quarter of them) and then takes the winner's ranges from all the
images. A rule's ranges move with how many images they come from: min/max
and the rules near it reach further out the more images they see (on the
session-30 Fashion pair, every fixed rule lost 0.1-1.3 dB on the 10,000 test
images when calibrated on 800 images instead of 200:
benchmarks/results/calibration.md). So the artifact deployed is not the one
that was scored. This measures the alternative: the winner's ranges as the
per-tensor mean over the folds of its ranges from each fold alone, each
fitted on as many images as the scored ones, then averaged.

Per model and calibration subset (the protocols of benchmarks/calibration.py),
every fixed rule both ways (from all images, as shipped; mean of the folds'
ranges) and `auto`'s own pick both ways, each run as the int8 TFLite on
XNNPACK on the evaluation images, output SQNR against the float Keras model.

    python benchmarks/fold_ranges.py fashion_fresh   the session-30 Fashion pair, both heads
    python benchmarks/fold_ranges.py digits          the demo and the tests' ResNet-18, both heads
"""

import json
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, machine, use_repo_imports, write_results

HERE = Path(__file__).resolve().parent
ALL, FOLD_MEAN = "from all images", "mean of the folds' ranges"


def fold_mean_ranges(statistics, rule):
    """{tensor: (low, high)}: per tensor, the mean over the folds of `rule`'s range from that fold alone."""
    from edge_resnet.quantize.ranges import activation_ranges

    per_fold = [activation_ranges(statistics.fold_part(fold), rule) for fold in range(len(statistics.folds))]
    return {name: (float(np.mean([ranges[name][0] for ranges in per_fold])),
                   float(np.mean([ranges[name][1] for ranges in per_fold])))
            for name in per_fold[0]}


def measure_subset(float_model, calibration, test_images, reference):
    """{rule: {scheme: SQNR dB on the evaluation images}}, and the rule `auto` picked."""
    from calibration import FIXED_RULES, int8_tflite_outputs, sqnr_db

    from edge_resnet.quantize.int8_tflite import tflite_chooser
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.selection import resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics

    statistics = collect_statistics(float_model, calibration)
    picked, _, _ = resolved_ranges(statistics, RangeMethod("auto"), tflite_chooser(float_model, True, calibration))
    rules = [RangeMethod(method, **parameters) for method, parameters in FIXED_RULES]
    rules += [picked] if picked not in rules else []
    scores = {}
    for rule in rules:
        scores[rule.describe()] = {
            scheme: sqnr_db(reference, int8_tflite_outputs(float_model, ranges, test_images))
            for scheme, ranges in ((ALL, activation_ranges(statistics, rule)),
                                   (FOLD_MEAN, fold_mean_ranges(statistics, rule)))}
    return scores, picked.describe()


def measure(models, protocol):
    from calibration import float_predictions, protocol_splits

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.tflite import float_tflite

    rows = []
    for model_name, model, head, size in models:
        print(f"== {model_name}", flush=True)
        float_model = float_tflite(fold_batchnorm(model)[0])
        subsets, float_cache = [], {}
        for index, (pixels, labels, test_pixels, _) in enumerate(protocol_splits(size, protocol)):
            _, test_images, reference = float_predictions(model, test_pixels, float_cache)
            calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=labels).cached()
            scores, picked = measure_subset(float_model, calibration, test_images, reference)
            subsets.append({"scores": scores, "auto_picked": picked})
            print(f"   subset {index + 1}: auto picked {picked}; "
                  + "; ".join(f"{rule} {row[ALL]:.2f} -> {row[FOLD_MEAN]:.2f}" for rule, row in scores.items()),
                  flush=True)
        rows.append({"model": model_name, "head": head, "protocol": protocol, "subsets": subsets})
    return rows


def fixed_rule_names():
    from calibration import FIXED_RULES
    from edge_resnet.quantize.ranges import RangeMethod

    return [RangeMethod(method, **parameters).describe() for method, parameters in FIXED_RULES]


def rows_of(result):
    """Every part's rows, parts in name order."""
    return [row for part in sorted(result["rows_of_part"]) for row in result["rows_of_part"][part]]


def summary(row):
    """Per scheme: each fixed rule's mean over the subsets, auto's, and the best fixed rule from all images
    (the bar's reference: a forced method takes its ranges from all images)."""
    fixed = fixed_rule_names()
    means = {scheme: {rule: float(np.mean([subset["scores"][rule][scheme] for subset in row["subsets"]]))
                      for rule in fixed} for scheme in (ALL, FOLD_MEAN)}
    auto = {scheme: float(np.mean([subset["scores"][subset["auto_picked"]][scheme] for subset in row["subsets"]]))
            for scheme in (ALL, FOLD_MEAN)}
    best_rule = max(fixed, key=lambda rule: means[ALL][rule])
    return means, auto, best_rule


def markdown(result):
    fixed = fixed_rule_names()
    lines = ["# Final ranges at the sample size `auto` scored them at", "",
             f"Command: `python benchmarks/fold_ranges.py {' '.join(sorted(result['rows_of_part']))}`. Machine: "
             f"{result['machine']['cpu']}, {result['machine']['cores']} cores, {', '.join(result['machine']['isa'])}.",
             "", "Mean output SQNR dB over the calibration subsets (protocols of benchmarks/calibration.py), int8 "
             f"TFLite on XNNPACK, the same images for every route. Each cell: ranges {ALL} -> {FOLD_MEAN} (each "
             "fold's a quarter of the calibration images, as `auto` scores them). Last columns: `auto`'s pick with "
             "each, and its gap to the best fixed rule from all images (what a forced method gives).", "",
             "| model | " + " | ".join(fixed) + " | auto | auto - best fixed |", "|---|" + "---|" * (len(fixed) + 2)]
    gaps = {ALL: [], FOLD_MEAN: []}
    for row in rows_of(result):
        means, auto, best_rule = summary(row)
        cells = [f"{means[ALL][rule]:.2f} -> {means[FOLD_MEAN][rule]:.2f}" for rule in fixed]
        for scheme in gaps:
            gaps[scheme].append(auto[scheme] - means[ALL][best_rule])
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {auto[ALL]:.2f} -> {auto[FOLD_MEAN]:.2f} | "
                     f"{gaps[ALL][-1]:+.2f} -> {gaps[FOLD_MEAN][-1]:+.2f} ({best_rule}) |")
    lines += ["", "Over the rows: " + "; ".join(
        f"auto with ranges {scheme}: mean gap {np.mean(values):+.2f} dB, {sum(value < -0.3 for value in values)} of "
        f"{len(values)} rows more than 0.3 dB short" for scheme, values in gaps.items()), ""]
    lines += ["`auto` picked per subset:", ""] + [
        f"- {row['model']}: " + "; ".join(subset["auto_picked"] for subset in row["subsets"]) for row in rows_of(result)]
    return "\n".join(lines) + "\n"


def shipped_digits_models():
    """The two digits models whose weights ship (the demo ResNet-50 w0.25, the tests' ResNet-18 w0.25), both
    heads: nothing to train."""
    from calibration import with_both_heads

    from edge_resnet.model import demo
    from tests.digits import trained_digits_resnet

    return with_both_heads([("demo ResNet-50 w0.25 (shipped)", demo.build_demo_model(), 32),
                            ("ResNet-18 w0.25 (tests' model)", trained_digits_resnet(), 32)])


def main(parts):
    use_repo_imports()
    sys.path.insert(0, str(HERE))
    import calibration

    sources = {"fashion_fresh": lambda: measure(calibration.fashion_fresh_models(), "fashion"),
               "digits": lambda: measure(shipped_digits_models(), "unseen")}
    path = RESULTS / "fold_ranges.json"
    result = json.loads(path.read_text()) if path.exists() else {"rows_of_part": {}}
    for part in parts:
        result["rows_of_part"][part] = sources[part]()
    result["machine"] = machine()
    write_results("fold_ranges", result, markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits"])
