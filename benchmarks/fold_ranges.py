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

A third way keeps the rule's range from all images on the graph's outputs
and the folds' mean inside (on a logits head the output is the logits).
Read with it (PER_HEAD, no runs of its own): the folds' mean on a softmax
head, all images on a logits head, the version session 31 left to check on
models it was not shaped on. It shipped in session 32 on the first check
(five held-back softmax heads) and was withdrawn in session 33 on the second
(seven more, two of which it cost more than 0.3 dB): `auto` takes its ranges
from all images again (HELD_BACK_CHECKS says each check's criterion, fixed
before its models were measured, and the verdict is computed from it).

Per model and calibration subset (the protocols of benchmarks/calibration.py),
every fixed rule each way and `auto`'s own pick each way, each run as the int8
TFLite on XNNPACK on the evaluation images, output SQNR against the float
Keras model.

    python benchmarks/fold_ranges.py fashion_fresh   the session-30 Fashion pair, both heads
    python benchmarks/fold_ranges.py digits          the demo and the tests' ResNet-18, both heads
    python benchmarks/fold_ranges.py fashion mnist   held back for the check: the softmax heads of the
                                                     session-28 Fashion pair and of the three MNIST
                                                     networks (the first two ways only)
    python benchmarks/fold_ranges.py digits_held_back  the second check, after the rule shipped: the softmax
                                                     heads of seven digits networks none of the ways was
                                                     looked at on (validation, fresh and extrapolation-check
                                                     models of benchmarks/trained.py; the first two ways)
"""

import json
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, machine, use_repo_imports, write_results

HERE = Path(__file__).resolve().parent
ALL, FOLD_MEAN = "from all images", "mean of the folds' ranges"
FOLD_MEAN_INSIDE = "mean of the folds' ranges inside, from all images on the output"
SCHEMES = (ALL, FOLD_MEAN, FOLD_MEAN_INSIDE)


def folds_mean_ranges(statistics, rule):
    """{tensor name: (low, high)}: per tensor, the mean over the calibration folds of `rule`'s range from each
    fold alone, each from as many images as `auto` scored the rule with when this was measured (a quarter of them)."""
    import dataclasses

    from edge_resnet.quantize.ranges import activation_ranges

    per_fold = [activation_ranges(dataclasses.replace(statistics, tensors=fold.tensors, folds=None, float_outputs=None),
                                  rule) for fold in statistics.folds]
    return {name: (float(np.mean([ranges[name][0] for ranges in per_fold])),
                   float(np.mean([ranges[name][1] for ranges in per_fold])))
            for name in per_fold[0]}


def fold_mean_inside_ranges(statistics, rule):
    """The folds' mean ranges on every tensor but the graph's outputs, which keep the rule's range from all
    images: on a logits head the output is the logits, where clipping costs the most."""
    from edge_resnet.quantize.ranges import activation_ranges

    inside, from_all = folds_mean_ranges(statistics, rule), activation_ranges(statistics, rule)
    return {name: from_all[name] if name in statistics.graph_outputs else inside[name] for name in inside}


def scheme_ranges(statistics, rule, schemes):
    """{scheme: the rule's {tensor: (low, high)} under it} for each of `schemes`."""
    from edge_resnet.quantize.ranges import activation_ranges

    make = {ALL: activation_ranges, FOLD_MEAN: folds_mean_ranges, FOLD_MEAN_INSIDE: fold_mean_inside_ranges}
    return {scheme: make[scheme](statistics, rule) for scheme in schemes}


def measure_subset(float_model, calibration, test_images, reference, schemes):
    """{rule: {scheme: SQNR dB on the evaluation images}}, and the rule `auto` picked."""
    from calibration import FIXED_RULES, int8_tflite_outputs, sqnr_db

    from edge_resnet.quantize.int8_tflite import tflite_chooser
    from edge_resnet.quantize.ranges import RangeMethod
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
            for scheme, ranges in scheme_ranges(statistics, rule, schemes).items()}
    return scores, picked.describe()


def measure(models, protocol, schemes=SCHEMES):
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
            scores, picked = measure_subset(float_model, calibration, test_images, reference, schemes)
            subsets.append({"scores": scores, "auto_picked": picked})
            print(f"   subset {index + 1}: auto picked {picked}; "
                  + "; ".join(f"{rule} " + " / ".join(f"{row[scheme]:.2f}" for scheme in schemes)
                              for rule, row in scores.items()),
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


PER_HEAD = "mean of the folds' ranges on softmax heads, from all images on logits heads"


def auto_scheme(row, scheme):
    """The scheme `auto`'s ranges take on this row: PER_HEAD is FOLD_MEAN on a softmax head, ALL on a logits head."""
    if scheme != PER_HEAD:
        return scheme
    return FOLD_MEAN if row["head"] == "softmax" else ALL


def summary(row):
    """Each fixed rule's mean over the subsets per measured scheme, auto's per scheme (PER_HEAD among them), and
    the best fixed rule from all images (the bar's reference: a forced method takes its ranges from all images)."""
    fixed = fixed_rule_names()
    measured = [scheme for scheme in SCHEMES if scheme in row["subsets"][0]["scores"][fixed[0]]]
    means = {scheme: {rule: float(np.mean([subset["scores"][rule][scheme] for subset in row["subsets"]]))
                      for rule in fixed} for scheme in measured}
    auto = {scheme: float(np.mean([subset["scores"][subset["auto_picked"]][auto_scheme(row, scheme)]
                                   for subset in row["subsets"]]))
            for scheme in measured + [PER_HEAD]}
    best_rule = max(fixed, key=lambda rule: means[ALL][rule])
    return means, auto, best_rule


def markdown(result):
    fixed = fixed_rule_names()
    rows = rows_of(result)
    lines = ["# Final ranges at the sample size `auto` scored them at", "",
             f"Command: `python benchmarks/fold_ranges.py {' '.join(sorted(result['rows_of_part']))}`. Machine: "
             f"{result['machine']['cpu']}, {result['machine']['cores']} cores, {', '.join(result['machine']['isa'])}.",
             "", "Mean output SQNR dB over the calibration subsets (protocols of benchmarks/calibration.py), int8 "
             "TFLite on XNNPACK, the same images for every route. Each cell: ranges " + " / ".join(SCHEMES) +
             " (each fold's a quarter of the calibration images, as `auto` scores them). Last columns: `auto`'s pick "
             "with each, and its gap to the best fixed rule from all images (what a forced method gives).", "",
             "| model | " + " | ".join(fixed) + " | auto | auto - best fixed |", "|---|" + "---|" * (len(fixed) + 2)]
    gaps = {}
    for row in rows:
        means, auto, best_rule = summary(row)
        for scheme in auto:
            gaps.setdefault(scheme, []).append((row["head"], auto[scheme] - means[ALL][best_rule]))
        shown = [scheme for scheme in SCHEMES if scheme in means]
        cells = [" / ".join(f"{means[scheme][rule]:.2f}" for scheme in shown) for rule in fixed]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " | "
                     + " / ".join(f"{auto[scheme]:.2f}" for scheme in shown) + " | "
                     + " / ".join(f"{auto[scheme] - means[ALL][best_rule]:+.2f}" for scheme in shown)
                     + f" ({best_rule}) |")
    lines += ["", "Over the rows, `auto`'s gap to the best fixed rule with each scheme of final ranges (only rows "
              "where the scheme was measured):", ""]
    for scheme, head_gaps in gaps.items():
        for head in ("logits", "softmax"):
            values = [gap for row_head, gap in head_gaps if row_head == head]
            if values:
                lines.append(f"- {scheme}, {head} heads: mean {np.mean(values):+.2f} dB, "
                             f"{sum(value < -0.3 for value in values)} of {len(values)} rows more than 0.3 dB short")
    lines += held_back_lines(result)
    lines += ["", "`auto` picked per subset:", ""] + [
        f"- {row['model']}: " + "; ".join(subset["auto_picked"] for subset in row["subsets"])
        for row in rows]
    return "\n".join(lines) + "\n"


LOSS_DB = 0.3  # a held-back row whose auto moves below -LOSS_DB lost to PER_HEAD


def losses(moves):
    return sum(move < -LOSS_DB for move in moves)


def ship_verdict(moves):
    return "ship it" if np.mean(moves) >= 0.2 and losses(moves) <= 1 else "do not ship it"


def confirm_verdict(moves):
    if np.mean(moves) >= 0.2 and losses(moves) <= 1:
        return "confirmed"
    if np.mean(moves) < 0 or losses(moves) >= 2:
        return "withdrawn: auto takes its ranges from all images again"
    return "unconfirmed, kept"


# Checks of PER_HEAD on models it was not shaped on (session 31 shaped it on the parts digits and fashion_fresh):
# (the parts held back, when the criterion was fixed, the criterion's words, the verdict it gives on the moves)
HELD_BACK_CHECKS = (
    (("fashion", "mnist"), "before they were measured (session 32)",
     "ship if the mean move is at least +0.2 dB and at most one row loses more than 0.3 dB", ship_verdict),
    (("digits_held_back",), "before they were measured, after the rule shipped (session 33)",
     "confirmed if the mean move is at least +0.2 dB and at most one row loses more than 0.3 dB; withdrawn if "
     "the mean move is below 0 dB or two or more rows lose more than 0.3 dB; otherwise kept as unconfirmed",
     confirm_verdict),
)


def held_back_lines(result):
    """PER_HEAD against ranges from all images on the softmax heads of each check, with its criterion."""
    lines = []
    for parts, when, criterion, verdict in HELD_BACK_CHECKS:
        rows = [row for part in parts for row in result["rows_of_part"].get(part, []) if row["head"] == "softmax"]
        if not rows:
            continue
        moves, gaps = [], {ALL: [], PER_HEAD: []}
        for row in rows:
            means, auto, best_rule = summary(row)
            moves.append(auto[PER_HEAD] - auto[ALL])
            for scheme in gaps:
                gaps[scheme].append(auto[scheme] - means[ALL][best_rule])
        lines += ["", f"Held back from the rule (parts {', '.join(parts)}), {len(rows)} softmax heads: `auto` moved "
                  + ", ".join(f"{move:+.2f}" for move in moves) + f" dB (mean {np.mean(moves):+.2f}); its gap to "
                  f"the best fixed rule {np.mean(gaps[ALL]):+.2f} -> {np.mean(gaps[PER_HEAD]):+.2f} dB, rows more "
                  f"than 0.3 dB short {sum(gap < -0.3 for gap in gaps[ALL])} -> "
                  f"{sum(gap < -0.3 for gap in gaps[PER_HEAD])}. Fixed {when}: {criterion}. Rows losing more than "
                  f"{LOSS_DB} dB here: {losses(moves)}. Verdict: {verdict(moves)}."]
    return lines


def shipped_digits_models():
    """The two digits models whose weights ship (the demo ResNet-50 w0.25, the tests' ResNet-18 w0.25), both
    heads: nothing to train."""
    from calibration import with_both_heads

    from edge_resnet.model import demo
    from tests.digits import trained_digits_resnet

    return with_both_heads([("demo ResNet-50 w0.25 (shipped)", demo.build_demo_model(), 32),
                            ("ResNet-18 w0.25 (tests' model)", trained_digits_resnet(), 32)])


def held_back_digits_models():
    """The softmax heads of seven digits networks trained for earlier checks, none of which any way of this file
    was looked at on: the two validation models, the three fresh ones and the two extrapolation-check ones
    (benchmarks/trained.py; trained and cached on first use)."""
    import trained
    from calibration import fresh_models, softmax_heads, validation_models, with_both_heads

    yield from softmax_heads(validation_models())
    yield from softmax_heads(fresh_models())
    yield from softmax_heads(with_both_heads(trained.extrapolation_check_models()))


def main(parts):
    use_repo_imports()
    sys.path.insert(0, str(HERE))
    import calibration

    sources = {"fashion_fresh": lambda: measure(calibration.fashion_fresh_models(), "fashion"),
               # the models held back for the check of PER_HEAD, whose logits heads take the ranges from all
               # images as shipped: their softmax heads (FOLD_MEAN_INSIDE lost 1.6 dB on the demo's logits head)
               "fashion": lambda: measure(calibration.softmax_heads(calibration.fashion_models()), "fashion",
                                          (ALL, FOLD_MEAN)),
               "mnist": lambda: measure(calibration.softmax_heads(calibration.mnist_models()), "mnist",
                                        (ALL, FOLD_MEAN)),
               "digits": lambda: measure(shipped_digits_models(), "unseen"),
               "digits_held_back": lambda: measure(held_back_digits_models(), "unseen", (ALL, FOLD_MEAN))}
    path = RESULTS / "fold_ranges.json"
    result = json.loads(path.read_text()) if path.exists() else {"rows_of_part": {}}
    for part in parts:
        result["rows_of_part"][part] = sources[part]()
    result["machine"] = machine()
    write_results("fold_ranges", result, markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits"])
