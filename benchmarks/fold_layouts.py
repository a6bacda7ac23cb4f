"""Which fold layout lets `auto` pick the rule that then does best, on
networks no rule or layout of edge-resnet was chosen on.

    .venv/bin/python benchmarks/fold_layouts.py [NETWORK ...]

keras.applications networks of benchmarks/xnnpack_rewrites.py (default:
MobileNetV3Small and DenseNet121; a name picks by its start), trained on
digits 0..1199 as there, each with its logits head and its softmax twin;
3 splits of the 597 digits they never trained on (200 calibrate, 397
evaluate; the protocol of benchmarks/resnet_v2.py). Per split: every
candidate rule of the int8 TFLite's `auto` scored on the held-out
calibration images in each fold layout of LAYOUTS, and on the evaluation
images with ranges from all 200; what each layout picks, and what that pick
scores against the best fixed rule. benchmarks/inception_v3.py layouts
runs the same on InceptionV3. Writes benchmarks/results/fold_layouts.{json,md}
(rows of earlier runs of other networks kept).
"""

import json
import sys
from pathlib import Path

import numpy as np
from common import RESULTS, machine, use_repo_imports, write_results

LAYOUTS = {  # name: ([(folds fitted, folds scored), ...], pooled over the fits or the mean of the fits' dB)
    "one fold fits, three score (auto to session 41)": ([([0], [1, 2, 3]), ([1], [0, 2, 3])], False),
    "three folds fit, one scores (auto now)": ([([f for f in range(4) if f != k], [k]) for k in range(4)], True),
    "two fit, two score": ([([0, 1], [2, 3]), ([2, 3], [0, 1])], True),
}
DEFAULT_NETWORKS = ("MobileNetV3Small", "DenseNet121")


def trained_splits(make, epochs, scale, size):
    """(head, model, seed, calibration pixels, their labels, evaluation inputs) of every split of both heads, as
    resnet_v2.fidelity makes them."""
    from resnet_v2 import SEEDS
    from trained import with_softmax
    from xnnpack_rewrites import trained

    from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels

    logits = trained(make, epochs, scale, size)
    pixels, labels = digit_pixels(size, None, offset=TRAIN_SAMPLES)
    for head, model in (("logits", logits), ("softmax", with_softmax(logits))):
        for seed in SEEDS:
            order = np.random.default_rng(seed).permutation(len(pixels))
            calibration, evaluation = order[:200], order[200:]
            yield head, model, seed, pixels[calibration], labels[calibration], pixels[evaluation].astype(np.float32) * scale


def layout_scores(statistics, float_model, inputs, float_outputs, rules, layout, pooled):
    """{rule index: held-out output SQNR dB} of `rules` in one fold layout."""
    from auto_rules import db, part_of, per_image
    from calibration import int8_tflite_outputs

    from edge_resnet.quantize.ranges import activation_ranges

    parts = [(part_of(statistics, fitted), sorted(position for fold in scored
                                                  for position in statistics.folds[fold].positions))
             for fitted, scored in layout]
    scores = {}
    for index, rule in rules.items():
        per_fit = [per_image(float_outputs[positions], int8_tflite_outputs(
            float_model, activation_ranges(fitted, rule), inputs[positions])) for fitted, positions in parts]
        scores[index] = (db(np.concatenate([s for s, _ in per_fit]), np.concatenate([n for _, n in per_fit]))
                         if pooled else float(np.mean([db(s, n) for s, n in per_fit])))
    return scores


def layout_rows(splits, scale, size):
    """Per head and split of `splits` (trained_splits): each candidate's evaluation SQNR (ranges from all 200)
    and each layout's pick."""
    from auto_rules import db, per_image
    from calibration import int8_tflite_outputs

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.ranges import CANDIDATES, activation_ranges
    from edge_resnet.quantize.selection import calibration_inputs, candidates_for
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    rows = []
    for head, model, seed, calibration_pixels, labels, evaluation in splits:
        float_model = float_tflite(fold_batchnorm(model)[0])
        reference = model.predict(evaluation, verbose=0)
        calibration = images_from_array(calibration_pixels, Preprocessing(size, size, scale=scale), size=None,
                                        labels=labels)
        statistics = collect_statistics(float_model, calibration)
        inputs = calibration_inputs(calibration, statistics)
        float_outputs = run_tflite_bytes(float_model, inputs, "the float model")
        rules = {CANDIDATES.index(rule): rule for rule in candidates_for(statistics)}
        evaluated = {index: db(*per_image(reference, int8_tflite_outputs(
            float_model, activation_ranges(statistics, rule), evaluation))) for index, rule in rules.items()}
        picks = {}
        for name, (layout, pooled) in LAYOUTS.items():
            scores = layout_scores(statistics, float_model, inputs, float_outputs, rules, layout, pooled)
            picks[name] = rules[max(scores, key=lambda index: (scores[index], -index))].describe()
        rows.append({"head": head, "seed": seed, "picks": picks,
                     "evaluation_db": {rules[index].describe(): value for index, value in evaluated.items()}})
        print(rows[-1], flush=True)
    return rows


def gap_cells(rows, head):
    """(best fixed rule's mean, [each layout's cell]) over the splits of one head: the mean evaluation SQNR of the
    layout's picks minus the best fixed rule's, and the picks."""
    mine = [row for row in rows if row["head"] == head]
    means = {rule: np.mean([row["evaluation_db"][rule] for row in mine]) for rule in mine[0]["evaluation_db"]}
    best = max(means, key=means.get)
    cells = [f"{np.mean([row['evaluation_db'][row['picks'][name]] for row in mine]) - means[best]:+.2f} "
             f"({', '.join(row['picks'][name] for row in mine)})" for name in LAYOUTS]
    return f"{best} {means[best]:.2f}", cells


def table(networks):
    """Markdown rows of {network: rows}: per network and head, each layout's gap to the best fixed rule."""
    lines = ["| network | head | best fixed rule | " + " | ".join(LAYOUTS) + " |",
             "|---|---|---|" + "---|" * len(LAYOUTS)]
    for network, rows in networks.items():
        for head in ("logits", "softmax"):
            best, cells = gap_cells(rows, head)
            lines.append(f"| {network} | {head} | {best} | " + " | ".join(cells) + " |")
    return lines


def main(names):
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from xnnpack_rewrites import NETWORKS

    saved = RESULTS / "fold_layouts.json"
    result = json.loads(saved.read_text()) if saved.exists() else {"networks": {}}
    for name, make, epochs, scale, _, size in NETWORKS:
        if any(name.startswith(picked) for picked in names or DEFAULT_NETWORKS):
            result["networks"][name] = {"machine": machine(),
                                        "rows": layout_rows(trained_splits(make, epochs, scale, size), scale, size)}
    lines = ["# What `auto`'s fold layouts pick, on networks no layout was chosen on", "",
             "Commands: `python benchmarks/fold_layouts.py`, then `python benchmarks/fold_layouts.py NASNetMobile` (the module's docstring says what they run).", "",
             "Machines: " + "; ".join(sorted({f"{entry['machine']['cpu']}, {entry['machine']['cores']} cores"
                                              for entry in result["networks"].values()})) + ".", "",
             "Each cell: the mean evaluation SQNR of the layout's picks over the 3 splits minus the best fixed "
             "rule's, dB (the picks per split).", ""]
    lines += table({name: entry["rows"] for name, entry in result["networks"].items()})
    write_results("fold_layouts", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
