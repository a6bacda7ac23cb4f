"""How many folds should `auto` cut the calibration images into?

    python benchmarks/fold_count.py SET [SET ...] [logits|softmax]
    python benchmarks/fold_count.py report

`auto` scores each range rule with every fold held out in turn, ranges from
the other folds' statistics (statistics.FOLDS = 4: ranges from 150 of 200
images), and deploys the winner's ranges from all 200. Ranges from fewer
images are exceeded more often by images they never saw, so the held-out
score of a rule that keeps the extremes seen (min/max) runs below what the
deployed ranges then score, and a rule that widens them (extrapolated) is
favoured. On the 17 logits heads of benchmarks/results/calibration.md
calibrated on 200 images, extrapolated's held-out lead over min/max
averaged +1.71 dB and its lead on the evaluation images +0.50. More folds fit on more of the images
(7/8 at 8 folds) at the price of more artifacts to make per rule (the
image runs stay one per calibration image and rule).

Per model and head of SET (calibration.py's sets: digits, validation, fresh,
mnist, fashion, fashion_fresh, mobilenet) and per calibration subset of
calibration.py's protocol (the same 200 images for every fold count):
`auto`'s choice for the int8 TFLite with the statistics pass cut into each
count of FOLD_COUNTS, every candidate's held-out score, and every candidate
and fixed rule scored on the evaluation images with ranges from all 200
images (which do not depend on the folds). Writes
benchmarks/results/fold_count.{json,md}; rows already there are kept.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine  # noqa: E402

FOLD_COUNTS = (4, 8)
PATH = RESULTS / "fold_count.json"


def model_sets():
    import calibration

    return {"digits": ("unseen", calibration.models_to_measure), "validation": ("unseen", calibration.validation_models),
            "fresh": ("unseen", calibration.fresh_models), "mnist": ("mnist", calibration.mnist_models),
            "fashion": ("fashion", calibration.fashion_models),
            "fashion_fresh": ("fashion", calibration.fashion_fresh_models),
            "mobilenet": ("unseen", calibration.mobilenet_models)}


def statistics_in_folds(float_model, calibration, folds):
    """The statistics pass with the calibration samples cut into `folds` folds."""
    from edge_resnet.quantize import statistics

    kept = statistics.FOLDS
    statistics.FOLDS = folds
    try:
        return statistics.collect_statistics(float_model, calibration)
    finally:
        statistics.FOLDS = kept


def rule_of(candidate):
    from edge_resnet.quantize.ranges import RangeMethod

    return RangeMethod.from_dict({key: value for key, value in candidate.items()
                                  if key not in ("rule", "held_out_sqnr_db")})


def measure(model_name, model, head, size, protocol):
    from calibration import FIXED_RULES, float_predictions, int8_tflite_outputs, protocol_splits, sqnr_db

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import tflite_chooser
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.selection import resolved_ranges
    from edge_resnet.quantize.tflite import float_tflite

    print(f"== {model_name}", flush=True)
    float_model = float_tflite(fold_batchnorm(model)[0])
    subsets, float_cache = [], {}
    for pixels, pixel_labels, test_pixels, _ in protocol_splits(size, protocol):
        _, test_images, reference = float_predictions(model, test_pixels, float_cache)
        calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=pixel_labels).cached()
        subset, rules = {"choices": {}}, {RangeMethod(method, **parameters).describe(): RangeMethod(method, **parameters)
                                          for method, parameters in FIXED_RULES}
        for folds in FOLD_COUNTS:
            statistics = statistics_in_folds(float_model, calibration, folds)
            started = time.perf_counter()
            rule, _, selection = resolved_ranges(statistics, RangeMethod("auto"),
                                                 tflite_chooser(float_model, True, calibration))
            assert selection["folds"] == folds, selection["folds"]
            subset["choices"][str(folds)] = {
                "chosen": rule.describe(), "seconds": time.perf_counter() - started,
                "stays_best_share": selection.get("stays_best_share"),
                "held_out_db": {candidate["rule"]: candidate["held_out_sqnr_db"]
                                for candidate in selection["candidates"]}}
            rules.update({candidate["rule"]: rule_of(candidate) for candidate in selection["candidates"]})
        subset["evaluation_db"] = {name: sqnr_db(reference, int8_tflite_outputs(
            float_model, activation_ranges(statistics, rule), test_images)) for name, rule in rules.items()}
        subsets.append(subset)
        print("   " + ", ".join(f"{folds} folds: {choice['chosen']} "
                                f"{subset['evaluation_db'][choice['chosen']]:.2f}"
                                for folds, choice in subset["choices"].items()), flush=True)
    return {"model": model_name, "head": head, "subsets": subsets, "machine": machine()}


def row_summary(row):
    """{fold count: auto's mean evaluation SQNR}, the best fixed rule's (name, mean), both over the subsets."""
    from calibration import FIXED_RULES

    from edge_resnet.quantize.ranges import RangeMethod

    subsets = row["subsets"]
    fixed = [RangeMethod(method, **parameters).describe() for method, parameters in FIXED_RULES]
    means = {name: float(np.mean([subset["evaluation_db"][name] for subset in subsets])) for name in fixed}
    best = max(means, key=means.get)
    auto = {folds: float(np.mean([subset["evaluation_db"][subset["choices"][folds]["chosen"]] for subset in subsets]))
            for folds in subsets[0]["choices"]}
    return auto, (best, means[best])


def held_out_lead(row, folds):
    """extrapolated 0.25's mean lead over min/max held out with `folds` folds, or None where it is no candidate
    (a softmax head's TFLite)."""
    held = [subset["choices"][folds]["held_out_db"] for subset in row["subsets"]]
    if "extrapolated 0.25" not in held[0]:
        return None
    return float(np.mean([scores["extrapolated 0.25"] - scores["minmax"] for scores in held]))


def evaluation_lead(row):
    """extrapolated 0.25's mean lead over min/max on the evaluation images."""
    return float(np.mean([subset["evaluation_db"]["extrapolated 0.25"] - subset["evaluation_db"]["minmax"]
                          for subset in row["subsets"]]))


def guard_lines(rows, folds):
    """Whether the held-out images can tell extrapolated 0.25 from min/max, over the subsets of `rows` (those that
    try it) with `folds` folds: what a fixed extrapolated (the default before `auto`) would score, and what
    `auto`'s guard (never below min/max on the held-out images) would make of it."""
    if not rows:
        return []
    subsets = [subset for row in rows for subset in row["subsets"]]
    held = np.array([subset["choices"][folds]["held_out_db"]["extrapolated 0.25"]
                     - subset["choices"][folds]["held_out_db"]["minmax"] for subset in subsets])
    evaluated = np.array([subset["evaluation_db"]["extrapolated 0.25"] - subset["evaluation_db"]["minmax"]
                          for subset in subsets])
    summaries = [row_summary(row) for row in rows]
    fixed = [float(np.mean([subset["evaluation_db"]["extrapolated 0.25"] for subset in row["subsets"]])) - best_db
             for row, (_, (_, best_db)) in zip(rows, summaries)]
    auto = [auto_db[folds] - best_db for auto_db, (_, best_db) in summaries]
    guarded = held < 0
    return [f"- Can the held-out images tell extrapolated 0.25 from min/max ({folds} folds, {len(subsets)} subsets "
            f"of the {len(rows)} rows that try it)? Their leads correlate r = {np.corrcoef(held, evaluated)[0, 1]:.2f} "
            f"with the evaluation images'. A fixed extrapolated 0.25 would be {np.mean(fixed):+.2f} dB from the best "
            f"fixed rule on average (within 0.3 dB on {sum(gap >= -0.3 for gap in fixed)}), auto "
            f"{np.mean(auto):+.2f} ({sum(gap >= -0.3 for gap in auto)}); but on {int(guarded.sum())} subsets the "
            "held-out images rank it under min/max, where auto's guard (never below min/max held out) rules it out, "
            f"and the evaluation images agree on {int(np.sum(evaluated[guarded] < 0))} of them "
            f"(extrapolated {np.mean(evaluated[guarded]):+.2f} dB over min/max there on average)."]


def markdown(result):
    counts = [str(folds) for folds in FOLD_COUNTS]
    machines = sorted({f"{row['machine']['cpu']}, {row['machine']['cores']} cores" for row in result["rows"]})
    lines = ["# How many folds `auto` cuts the calibration images into", "",
             "Commands: " + ", ".join(f"`{command}`" for command in result["commands"]) + "; run on "
             + "; ".join(machines) + ".", "",
             "Per model and head, calibration.py's four 200-image subsets (the same images for every fold count): "
             "`auto`'s choice for the int8 TFLite with the calibration images cut into each number of folds (each "
             "fold scored by ranges from the others), and every rule scored on the evaluation images with ranges "
             "from all 200 images. Cells: mean output SQNR dB over the subsets on the evaluation images; auto's "
             "gap to the best fixed rule (the bar: at least -0.3); the choices per subset. Last columns: "
             "extrapolated 0.25's lead over min/max, held out (per fold count; a softmax head's TFLite does not "
             "try it) and on the evaluation images.", "",
             "| model | best fixed | " + " | ".join(f"auto, {folds} folds (gap)" for folds in counts)
             + " | choices per fold count | " + " | ".join(f"extrapolated - minmax held out, {folds} folds"
                                                          for folds in counts)
             + " | extrapolated - minmax, evaluation |", "|---|---|" + "---|" * (2 * len(counts) + 2)]
    gaps = {}
    for row in result["rows"]:
        auto, (best, best_db) = row_summary(row)
        leads = [held_out_lead(row, folds) for folds in counts]
        choices = "; ".join(f"{folds}: " + ", ".join(subset["choices"][folds]["chosen"] for subset in row["subsets"])
                            for folds in counts)
        for folds in counts:
            gaps.setdefault((row["head"], folds), []).append(auto[folds] - best_db)
        lines.append(f"| {row['model']} | {best} {best_db:.2f} | "
                     + " | ".join(f"{auto[folds]:.2f} ({auto[folds] - best_db:+.2f})" for folds in counts)
                     + f" | {choices} | " + " | ".join("-" if lead is None else f"{lead:+.2f}" for lead in leads)
                     + f" | {evaluation_lead(row):+.2f} |")
    lines.append("")
    for (head, folds), values in sorted(gaps.items()):
        values = np.array(values)
        lines.append(f"- {head} heads, {folds} folds: auto's gap to the best fixed rule {values.mean():+.2f} dB on "
                     f"average over {len(values)} rows, within 0.3 dB on {int(np.sum(values >= -0.3))}, lowest "
                     f"{values.min():+.2f}.")
    tried = [row for row in result["rows"] if held_out_lead(row, counts[0]) is not None]
    if tried:
        lines.append(f"- extrapolated 0.25's lead over min/max, mean over the {len(tried)} rows that try it: held out "
                     + ", ".join(f"{np.mean([held_out_lead(row, folds) for row in tried]):+.2f} dB ({folds} folds)"
                                 for folds in counts)
                     + f", on the evaluation images {np.mean([evaluation_lead(row) for row in tried]):+.2f}.")
    lines += guard_lines(tried, counts[0])
    if result["rows"]:
        seconds = {folds: np.median([subset["choices"][folds]["seconds"] for row in result["rows"]
                                     for subset in row["subsets"]]) for folds in counts}
        lines.append("- The choice's seconds, median over subsets (the models' own sizes, 32x32 to 48x48; not "
                     "issue 23's cost at 224): " + ", ".join(f"{folds} folds {value:.1f} s"
                                                             for folds, value in seconds.items()) + ".")
    return "\n".join(lines) + "\n"


def main(arguments):
    saved = json.loads(PATH.read_text()) if PATH.exists() else {"rows": [], "commands": []}
    sets = model_sets()
    heads = [word for word in arguments if word in ("logits", "softmax")] or ["logits", "softmax"]
    command = "python benchmarks/fold_count.py " + " ".join(arguments)
    for name in (word for word in arguments if word in sets):
        protocol, models = sets[name]
        for model_name, model, head, size in models():
            if head in heads and model_name not in {row["model"] for row in saved["rows"]}:
                saved["rows"].append(measure(model_name, model, head, size, protocol))
                saved["commands"] += [command] if command not in saved["commands"] else []
                PATH.write_text(json.dumps(saved, indent=2) + "\n")
    (RESULTS / "fold_count.md").write_text(markdown(saved))


if __name__ == "__main__":
    main(sys.argv[1:])
