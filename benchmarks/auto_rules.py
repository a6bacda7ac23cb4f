"""How `auto` should turn its held-out scores into a choice: the statistic
it ranks candidates by, compared on what each choice then scores on
evaluation images.

For every model of benchmarks/calibration.py (logits and softmax heads) and
both of its protocols (calibrated on unseen digits, or on training digits),
for each of the four 200-image calibration subsets: every candidate rule of
ranges.CANDIDATES is scored per held-out image (squared output error and
signal of each image, under ranges fitted without it) in two fold layouts,
and on the evaluation images with ranges from all 200. Each selection
statistic then picks a rule per subset from the held-out numbers alone; its
result is the evaluation SQNR of what it picked, mean over the subsets,
minus the best fixed rule's mean.

Fold layouts: "3 fit, 1 scores" (ranges from three folds, scored on the
fourth: what `auto` did when this comparison was run, labelled "shipped"
in the results) and "1 fits, 3 score" (ranges from one fold, scored on the
other three: the scored images outnumber the fitted ones, as deployed
images do, so a rule that clips unseen extremes is caught more often).
`auto` then took the second, with the fits of two folds (one_fold_fits),
until session 42, when it went back to three folds fitting, each fold
scored in turn and pooled (edge_resnet/quantize/selection.py says why).

    python benchmarks/auto_rules.py               writes benchmarks/results/auto_rules.{json,md}
    python benchmarks/auto_rules.py validation    adds the rows of a ResNet-18 (width 0.5, 40x40,
                                                  seed 11) trained after the comparison above
"""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
from common import machine, use_repo_imports, write_results

HERE = Path(__file__).resolve().parent
FIXED = ("minmax", "extrapolated 0.25", "percentile 99.99", "percentile 99.999", "mse")


def calibration_benchmark():
    spec = importlib.util.spec_from_file_location("calibration_benchmark", HERE / "calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_image(reference, outputs):
    """(signal, squared error) of each image."""
    reference, outputs = np.asarray(reference, np.float64), np.asarray(outputs, np.float64)
    flat = len(reference), -1
    return np.sum(reference.reshape(flat) ** 2, 1), np.sum((reference - outputs).reshape(flat) ** 2, 1)


def db(signal, noise):
    return float(10 * np.log10(np.sum(signal) / np.sum(noise))) if np.sum(noise) > 0 else float("inf")


def part_of(statistics, folds):
    from edge_resnet.quantize.statistics import TensorStatistics

    if len(folds) == 1:
        return dataclasses.replace(statistics, tensors=statistics.folds[folds[0]].tensors, folds=None)
    positions = [statistics.folds[fold].positions for fold in folds]
    return dataclasses.replace(statistics, folds=None, tensors=tuple(
        TensorStatistics.merged([statistics.folds[fold].tensors[index] for fold in folds], positions)
        for index in range(len(statistics.tensors))))


def one_fold_fits(statistics, count=2):
    """The fits `auto` scored its rules with until session 42 (what the
    benchmarks replaying it then used selection.fits for): (statistics of
    one fold alone, the other folds' sample positions in pass order) for the
    first `count` folds."""
    for fold in range(min(count, len(statistics.folds))):
        scored = tuple(sorted(position for other, part in enumerate(statistics.folds) if other != fold
                              for position in part.positions))
        yield part_of(statistics, [fold]), scored


LAYOUTS = {"3 fit, 1 scores": [([j for j in range(4) if j != k], [k]) for k in range(4)],
           "1 fits, 3 score": [([k], [j for j in range(4) if j != k]) for k in range(4)]}


def measure_subset(bench, float_model, calibration, evaluation_images, reference):
    """Per candidate: its held-out (positions, signal, error) per fit in each layout, and its evaluation SQNR."""
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.ranges import CANDIDATES, activation_ranges
    from edge_resnet.quantize.selection import calibration_inputs
    from edge_resnet.quantize.statistics import collect_statistics

    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    float_outputs = run_tflite_bytes(float_model, inputs, "the float model")
    folds = [list(fold.positions) for fold in statistics.folds]
    parts = {tuple(fit): part_of(statistics, fit) for layout in LAYOUTS.values() for fit, _ in layout}
    held_out = {name: [] for name in LAYOUTS}
    evaluation = []
    for method in CANDIDATES:
        for name, layout in LAYOUTS.items():
            fits = []
            for fit, scored in layout:
                positions = sorted(p for fold in scored for p in folds[fold])
                outputs = bench.int8_tflite_outputs(float_model, activation_ranges(parts[tuple(fit)], method),
                                                    inputs[positions])
                fits.append(per_image(float_outputs[positions], outputs))
            held_out[name].append(fits)
        outputs = bench.int8_tflite_outputs(float_model, activation_ranges(statistics, method), evaluation_images)
        evaluation.append(db(*per_image(reference, outputs)))
    return {"rules": [method.describe() for method in CANDIDATES], "held_out": held_out, "evaluation": evaluation}


def mean_of_fits(fits):
    return float(np.mean([db(signal, noise) for signal, noise in fits]))


def pooled(fits):
    return db(np.concatenate([s for s, _ in fits]), np.concatenate([n for _, n in fits]))


def median_of_fits(fits):
    return float(np.median([db(signal, noise) for signal, noise in fits]))


def pick_best(scores):
    return max(range(len(scores)), key=lambda index: (scores[index], -index))


def statistics_to_pick_by():
    """name -> (layout, pick(candidates' fits) -> index). Index 0 is minmax."""
    def by(score, layout):
        return layout, lambda candidates: pick_best([score(fits) for fits in candidates])

    def beats_minmax_in(folds_needed):
        def pick(candidates):
            minmax = [db(s, n) for s, n in candidates[0]]
            allowed = [index for index, fits in enumerate(candidates)
                       if index == 0 or sum(db(s, n) > m for (s, n), m in zip(fits, minmax)) >= folds_needed]
            return max(allowed, key=lambda index: (mean_of_fits(candidates[index]), -index))
        return "3 fit, 1 scores", pick

    def margin_over_minmax(margin):
        def pick(candidates):
            scores = [mean_of_fits(fits) for fits in candidates]
            best = pick_best(scores)
            return best if scores[best] - scores[0] >= margin else 0
        return "3 fit, 1 scores", pick

    return {"mean of the folds' dB (shipped)": by(mean_of_fits, "3 fit, 1 scores"),
            "pooled dB": by(pooled, "3 fit, 1 scores"),
            "median of the folds' dB": by(median_of_fits, "3 fit, 1 scores"),
            "beats minmax in 3 of 4 folds, then mean": beats_minmax_in(3),
            "minmax unless 0.5 dB better": margin_over_minmax(0.5),
            "1 fits, 3 score: mean of the fits' dB": by(mean_of_fits, "1 fits, 3 score"),
            "1 fits, 3 score: pooled dB": by(pooled, "1 fits, 3 score")}


def validation_models():
    for name, model, head, size in calibration_benchmark().validation_models():
        yield name.replace("auto's layout was chosen", "this comparison"), model, head, size


def measure(models=None, protocols=("unseen", "training"), subset_measure=None, summary=None):
    """One row per model and protocol: `summary(model name, protocol,
    [subset_measure(...) per calibration subset])` (this module's own unless given)."""
    subset_measure, summary = subset_measure or measure_subset, summary or summarize
    bench = calibration_benchmark()
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.tflite import float_tflite

    rows = []
    for model_name, model, head, size in models or bench.models_to_measure():
        float_model = float_tflite(fold_batchnorm(model)[0])
        for protocol in protocols:
            subsets = []
            for pixels, labels, test_pixels, _ in bench.protocol_splits(size, protocol):
                images = preprocess_input(test_pixels)
                reference = np.asarray(model.predict(images, batch_size=50, verbose=0))
                calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=labels).cached()
                subsets.append(subset_measure(bench, float_model, calibration, images, reference))
            rows.append(summary(model_name, protocol, subsets))
            print(rows[-1]["model"], protocol, rows[-1]["gap_db"], flush=True)
    return rows


def summarize(model_name, protocol, subsets):
    rules = subsets[0]["rules"]
    evaluation = np.array([subset["evaluation"] for subset in subsets])
    fixed = {rule: float(evaluation[:, rules.index(rule)].mean()) for rule in FIXED}
    best = max(fixed, key=fixed.get)
    gaps, picked = {}, {}
    for name, (layout, pick) in statistics_to_pick_by().items():
        picks = [pick(subset["held_out"][layout]) for subset in subsets]
        picked[name] = [rules[index] for index in picks]
        gaps[name] = float(np.mean([evaluation[s, index] for s, index in enumerate(picks)])) - fixed[best]
    return {"model": model_name, "protocol": protocol, "best_fixed": best, "best_fixed_db": fixed[best],
            "fixed_db": fixed, "gap_db": gaps, "picked": picked}


def markdown(rows, machine_info):
    names = list(rows[0]["gap_db"])
    lines = ["# How `auto` turns held-out scores into a choice", "",
             "Command: `python benchmarks/auto_rules.py`", "",
             f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores. Each cell: the evaluation SQNR of what "
             "the statistic picked (mean over the 4 calibration subsets) minus the best fixed rule's mean, dB. "
             "Protocols as in benchmarks/calibration.py.", "",
             *gap_table(rows, names)]
    for title, chosen in (("the models the comparison was made on", [r for r in rows if "validation" not in r["model"]]),
                          ("the validation model only", [r for r in rows if "validation" in r["model"]])):
        lines += gap_summary(title, chosen, names, "statistic")
    return "\n".join(lines) + "\n"


def gap_table(rows, names):
    """Markdown: per row, each of `names`' gap to the best fixed rule."""
    lines = ["| model | protocol | best fixed | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for row in rows:
        lines.append(f"| {row['model']} | {row['protocol']} | {row['best_fixed']} {row['best_fixed_db']:.2f} | "
                     + " | ".join(f"{row['gap_db'][name]:+.2f}" for name in names) + " |")
    return lines


def gap_summary(title, rows, names, label, runs_against=None):
    """Markdown: each of `names`' mean and worst gap over `rows` (none: no
    lines), and its image runs against `runs_against`'s when given."""
    if not rows:
        return []
    runs_header = f" image runs (vs {runs_against}) |" if runs_against else ""
    lines = ["", f"Over {title}:", "", f"| {label} | mean gap dB | worst gap dB | rows more than 0.3 dB short |"
             + runs_header, "|---|---|---|---|" + ("---|" if runs_against else "")]
    for name in names:
        gaps = np.array([row["gap_db"][name] for row in rows])
        runs = (f" {np.mean([row['images_run'][name] / row['images_run'][runs_against] for row in rows]):.2f}x |"
                if runs_against else "")
        lines.append(f"| {name} | {gaps.mean():+.2f} | {gaps.min():+.2f} | {int(np.sum(gaps < -0.3))} of "
                     f"{len(gaps)} |" + runs)
    return lines


if __name__ == "__main__":
    use_repo_imports()
    sys.path.insert(0, str(HERE))
    import json

    from common import RESULTS

    if sys.argv[1:] == ["validation"]:
        saved = json.loads((RESULTS / "auto_rules.json").read_text())
        rows = [row for row in saved["rows"] if "validation" not in row["model"]] + measure(validation_models())
    else:
        rows = measure()
    info = machine()
    write_results("auto_rules", {"machine": info, "rows": rows}, markdown(rows, info))
