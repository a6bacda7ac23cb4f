"""Deploy the ranges `auto` scored, not ranges from more images than it scored?

    python benchmarks/fold_mean_ranges.py [digits] [mnist]

`auto` scores each candidate rule with ranges fitted on three quarters of
the calibration images (150 of 200) and then deploys the winner's ranges
fitted on all 200. Rules whose ranges widen with the number of images
(minmax, extrapolated) are then deployed wider than they were judged. The
alternative measured here deploys the winner's ranges as the mean, per
tensor, of its four cross-fitted ranges (each from 150 images): the very
ranges the held-out scores judged, averaged. Same subsets, evaluation
images and models as `python benchmarks/calibration.py fidelity`
(digits) and `... fidelity_mnist` (MNIST); each cell the mean over the 4
subsets of the output SQNR (dB) on the evaluation images, for `auto`'s
choice and for two fixed rules, each deployed both ways. Writes
benchmarks/results/fold_mean_ranges.{json,md} (replaced whole: run both
parts together).

benchmarks/fold_ranges.py measured the same idea under the earlier layout
(ranges scored from one fold of 50 images; shipped for softmax heads in
session 32, withdrawn in session 33); this is it again under the layout
`auto` ships since session 42.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import machine, write_results  # noqa: E402

DEPLOYED = ("all images", "mean of the folds' fits")
FIXED = ("minmax", "extrapolated")


def fold_mean_ranges(statistics, rule):
    """{tensor: (low, high)}: the mean of `rule`'s ranges fitted on each cross-fit's images."""
    from edge_resnet.quantize.mixed import cross_fits

    fitted = [ranges for ranges, _ in cross_fits(statistics, rule)]
    return {name: tuple(float(np.mean([ranges[name][end] for ranges in fitted])) for end in (0, 1))
            for name in fitted[0]}


def measure(model_name, model, size, protocol):
    from calibration import float_predictions, int8_tflite_outputs, protocol_splits

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import tflite_chooser
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.selection import output_sqnr_db, resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(fold_batchnorm(model)[0])
    cells, chosen, cache = {}, [], {}
    for pixels, labels, test_pixels, _ in protocol_splits(size, protocol):
        _, test_images, reference = float_predictions(model, test_pixels, cache)
        calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=labels).cached()
        statistics = collect_statistics(float_model, calibration)
        rule, auto_ranges, _ = resolved_ranges(statistics, RangeMethod("auto"),
                                               tflite_chooser(float_model, True, calibration))
        chosen.append(rule.describe())
        for label, method in (("auto", rule), *((name, RangeMethod(name)) for name in FIXED)):
            from_all = auto_ranges if label == "auto" else activation_ranges(statistics, method)
            for deployed, ranges in zip(DEPLOYED, (from_all, fold_mean_ranges(statistics, method))):
                outputs = int8_tflite_outputs(float_model, ranges, test_images)
                cells.setdefault(f"{label}, {deployed}", []).append(output_sqnr_db(reference, outputs))
    row = {"model": model_name, "protocol": protocol, "auto chose": chosen, "sqnr_db": cells}
    print(row, flush=True)
    return row


def markdown(result):
    columns = [f"{label}, {deployed}" for label in ("auto", *FIXED) for deployed in DEPLOYED]
    lines = ["# `auto`'s winner deployed with the ranges it was judged with", "", f"Command: `{result['command']}`",
             "", f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. Mean output SQNR (dB) "
             "over the 4 subsets on the evaluation images; `all images`: ranges fitted on the 200 calibration "
             "images (what `auto` deploys); `mean of the folds' fits`: the per-tensor mean of the four ranges fitted "
             "on 150 of them each.", "",
             "| model | data | auto chose | " + " | ".join(columns) + " | auto: change |",
             "|---|---|---|" + "---|" * len(columns) + "---|"]
    changes = []
    for row in result["rows"]:
        means = {column: float(np.mean(row["sqnr_db"][column])) for column in columns}
        change = means["auto, mean of the folds' fits"] - means["auto, all images"]
        changes.append(change)
        lines.append(f"| {row['model']} | {row['protocol']} | {', '.join(row['auto chose'])} | "
                     + " | ".join(f"{means[column]:.2f}" for column in columns) + f" | {change:+.2f} |")
    if changes:
        lines += ["", f"`auto` deployed with the folds' mean ranges against all images: {np.mean(changes):+.2f} dB on "
                      f"average ({min(changes):+.2f} to {max(changes):+.2f}), better on "
                      f"{sum(change > 0 for change in changes)} of {len(changes)} rows."]
    return "\n".join(lines) + "\n"


def main(parts):
    from calibration import mnist_models, models_to_measure

    sources = {"digits": ("unseen", models_to_measure), "mnist": ("mnist", mnist_models)}
    rows = [measure(name, model, size, protocol) for part in parts for protocol, models in [sources[part]]
            for name, model, _, size in models()]
    result = {"command": "python benchmarks/fold_mean_ranges.py " + " ".join(parts), "machine": machine(),
              "rows": rows}
    write_results("fold_mean_ranges", result, markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits", "mnist"])
