"""A concatenation's range over its inputs' ranges (ranges.holding_their_inputs),
on and off, on a network with chains of them, against the raw TFLite
converter on the same calibration images.

    .venv/bin/python benchmarks/concat_ranges.py

keras.applications DenseNet121 (32x32, pixels / 255) trained on digits
0..1199 as benchmarks/xnnpack_rewrites.py trains it (the rule was made
after it misjudged this network), its logits head and a softmax twin. The
597 digits it never trained on, split three times (seeds 0, 1, 2): 200
calibrate (class-stratified), the other 397 evaluate; every route of a
split is calibrated on the very same 200 images and scored on the same
397 (output SQNR against the Keras model: the probabilities for a softmax
head). Writes benchmarks/results/concat_ranges.{json,md}.
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import isa_note, machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SEEDS = (0, 1, 2)
METHODS = ("minmax", "percentile", "extrapolated", "auto")


def routes(model, calibration_pixels, labels, evaluation, folder):
    """{route: output SQNR dB on `evaluation`} for one split of one head."""
    from calibration import split_with_raw_converter

    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize import ranges
    from edge_resnet.quantize.int8_tflite import write_int8_tflite
    from edge_resnet.quantize.mixed import output_sqnr_db
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    reference, calibration, scored = split_with_raw_converter(model, calibration_pixels, labels, evaluation, folder)
    float_model = float_tflite(fold_batchnorm(model)[0])
    statistics = collect_statistics(float_model, calibration)
    holding = ranges.holding_their_inputs
    for rule_on in (False, True):
        ranges.holding_their_inputs = holding if rule_on else (lambda found, concatenations: dict(found))
        try:
            for method in METHODS:
                path = write_int8_tflite(float_model, QuantizationRecipe(calibration_method=method),
                                         folder / f"{method}_{rule_on}.tflite", calibration, statistics, progress=False)
                route = f"edge-resnet {method}, concatenations {'over their inputs' if rule_on else 'ranged alone'}"
                scored[route] = output_sqnr_db(reference, TfliteRunner(path).predict(evaluation))
        finally:
            ranges.holding_their_inputs = holding
    return scored


def main():
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from trained import with_softmax
    from xnnpack_rewrites import densenet, trained

    from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels

    logits = trained(densenet, 4, 1 / 255)
    pixels, labels = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    rows = []
    for head, model in (("logits", logits), ("softmax", with_softmax(logits))):
        for seed in SEEDS:
            order = np.random.default_rng(seed).permutation(len(pixels))
            calibration, evaluation = order[:200], order[200:]
            scored = routes(model, pixels[calibration], labels[calibration],
                            pixels[evaluation].astype(np.float32) / 255, Path(tempfile.mkdtemp(prefix="concat-")))
            rows.append({"head": head, "seed": seed, "sqnr_db": scored})
            print(head, seed, scored, flush=True)
    result = {"machine": machine(), "rows": rows}
    write_results("concat_ranges", result, markdown(result))


def markdown(result):
    from calibration import per_head_cells

    described = result["machine"]
    names = list(result["rows"][0]["sqnr_db"])
    lines = ["# A concatenation's range over its inputs' ranges: DenseNet121", "",
             "Command: `python benchmarks/concat_ranges.py` (the module's docstring says what it runs).", "",
             f"Machine: {described['cpu']}, {described['cores']} cores, {' '.join(described['isa'])}. Output SQNR dB "
             "on 397 never-trained-on digits, mean of 3 splits (per split in brackets), every route of a split "
             "calibrated on the same 200 images.", "",
             "| route | logits head | softmax head |", "|---|---|---|"]
    lines += [f"| {name} | {' | '.join(per_head_cells(result['rows'], name))} |" for name in names]
    return "\n".join(lines) + "\n" + isa_note(described["isa"])


if __name__ == "__main__":
    main()
