"""Whether `auto` should score a softmax head's candidates on something
smoother than the probabilities it outputs.

A softmax head's probabilities saturate on most images: their squared
error sits in the few images the model is unsure of (1 to 6 of 298 in
benchmarks/calibration.py), so a choice scored on 150 held-out images
hangs on the one or two such images among them. The logits (the softmax's
input) carry every image's error; the softmax at a temperature above 1
keeps more images unsaturated while still not caring about an image's
largest logits once it is sure. Each way of scoring is replayed through
selection.choose on the same candidate runs (the int8 TFLite with the
softmax's input exposed as a second output), and each choice is judged by
what matters to the user: the probabilities' SQNR on evaluation images.

The logits were tried first, with a ResNet-101 trained to check them; the
temperatures after that, with a ResNet-152 (width 0.25, 32x32, seed 29)
trained to check them and measured only once they were fixed.
Last, the logits seen through the softmax's mean Jacobian (no parameter):
the first-order probability error with each image's sensitivity averaged
apart from each candidate's logit error, so that every image's error
counts without the logits' common-mode error, which a softmax ignores.

Measured while `auto` fitted on one fold (until session 42): the library
no longer has that layout, so this no longer runs (its results stand).

    python benchmarks/auto_logits.py [PROTOCOL...]             the design rows: writes
                                                               benchmarks/results/auto_logits.{json,md}
    python benchmarks/auto_logits.py held_back [PROTOCOL...]   adds the ResNet-152's rows
"""

import sys
from pathlib import Path

import numpy as np
from auto_race import summarize
from auto_rules import calibration_benchmark, db, gap_summary, gap_table, measure, per_image
from common import machine, use_repo_imports, write_results

HERE = Path(__file__).resolve().parent
HELD_BACK = "ResNet-152 w0.25 32x32 seed 29"


def softened(temperature):
    def probabilities(outputs, logits):
        scaled = logits / temperature
        exponentials = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
        return exponentials / exponentials.sum(axis=-1, keepdims=True)
    return probabilities


def jacobian_weighted(float_probabilities):
    """The logits seen through the softmax's mean Jacobian: A = sqrt(mean_i
    J_i^T J_i), J_i = diag(p_i) - p_i p_i^T of the float model on the
    calibration images. Sum_i |A e_i|^2 = N tr(M Cov(e)): the first-order
    probability error with the images' sensitivity (heavy-tailed, the same
    for every candidate) averaged apart from each candidate's logit error
    (every image carries it). Common-mode logit error, which a softmax
    ignores, weighs nothing. No parameter."""
    p = np.asarray(float_probabilities, np.float64)
    jacobians = p[:, :, None] * np.eye(p.shape[1])[None] - p[:, :, None] * p[:, None, :]
    gram = np.mean(jacobians @ jacobians, axis=0)
    values, vectors = np.linalg.eigh(gram)
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    return lambda outputs, logits: (np.asarray(logits, np.float64) @ root).astype(np.float32)


JACOBIAN = "the logits through the softmax's mean Jacobian"

# what the candidates are scored on, from (the model's probabilities, the softmax's input)
SCORINGS = {"the probabilities (shipped)": lambda outputs, logits: outputs,
            "the softmax's input": lambda outputs, logits: logits,
            "softmax(logits / 2)": softened(2.0),
            "softmax(logits / 4)": softened(4.0),
            JACOBIAN: None}  # made per subset from the float model's probabilities: jacobian_weighted


def outputs_and_logits(model_bytes, images):
    from edge_resnet.quantize.int8_tflite import tflite_outputs_and_logits

    return list(tflite_outputs_and_logits(model_bytes, images))


def measure_subset(bench, float_model, calibration, evaluation_images, reference):
    from edge_resnet.quantize.int8_tflite import quantized_int8_io
    from edge_resnet.quantize.ranges import CANDIDATES, activation_ranges, ranges_fingerprint
    from edge_resnet.quantize.selection import calibration_inputs, choose, fits, one_at_a_time
    from edge_resnet.quantize.statistics import collect_statistics

    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    float_runs = outputs_and_logits(float_model, inputs)
    runs_of = {}
    for fitted, scored in fits(statistics):
        for method in CANDIDATES:
            ranges = activation_ranges(fitted, method)
            key = ranges_fingerprint(ranges)
            if key not in runs_of:
                runs_of[key] = [np.full(values.shape, np.nan, np.float32) for values in float_runs]
                for kept, values in zip(runs_of[key], outputs_and_logits(
                        quantized_int8_io(float_model, ranges), inputs[list(scored)])):
                    kept[list(scored)] = values
    evaluation = [db(*per_image(reference, bench.int8_tflite_outputs(float_model, activation_ranges(statistics, m),
                                                                     evaluation_images))) for m in CANDIDATES]
    picked, images_run = {}, {}
    scorings = {**SCORINGS, JACOBIAN: jacobian_weighted(float_runs[0])}
    for name, scored_on in scorings.items():
        def replay(ranges, positions):
            replayed = scored_on(*(values[positions] for values in runs_of[ranges_fingerprint(ranges)]))
            assert not np.isnan(replayed).any()
            return replayed

        choice = choose(statistics, np.arange(len(inputs)), one_at_a_time(replay), scored_on(*float_runs), "replay",
                        candidates=CANDIDATES)
        picked[name], images_run[name] = CANDIDATES.index(choice.method), 1
    return {"rules": [m.describe() for m in CANDIDATES], "evaluation": evaluation, "picked": picked,
            "images_run": images_run}


def softmax_models():
    """Those of benchmarks/calibration.py."""
    bench = calibration_benchmark()
    yield from bench.models_to_measure(heads=("softmax",))
    yield from ((name, model, head, size) for name, model, head, size in bench.validation_models() if head == "softmax")


def held_back_models():
    from trained import temperature_scoring_resnet152, with_softmax

    yield (f"{HELD_BACK} (trained after the temperatures were fixed), softmax head",
           with_softmax(temperature_scoring_resnet152()), "softmax", 32)


def markdown(rows, machine_info):
    protocols = " ".join(sorted({row["protocol"] for row in rows}))
    lines = ["# Scoring a softmax head's candidates on its probabilities, its logits, a softened softmax, or the "
             "logits through the softmax's mean Jacobian", "",
             f"Commands: `python benchmarks/auto_logits.py {protocols}`, then, once the temperatures were fixed, "
             f"`python benchmarks/auto_logits.py held_back {protocols}` (the ResNet-152's rows)", "",
             f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores. Each cell: the evaluation SQNR of the "
             "probabilities of what `auto` picked scoring that way (mean over the 4 calibration subsets) minus the "
             "best candidate's mean as a fixed rule, dB. Protocols as in benchmarks/calibration.py.", "",
             *gap_table(rows, list(SCORINGS))]
    for title, chosen in (("the design rows", [r for r in rows if HELD_BACK not in r["model"]]),
                          ("the ResNet-152 held back until the temperatures were fixed",
                           [r for r in rows if HELD_BACK in r["model"]]),
                          ("every row", rows)):
        lines += gap_summary(title, chosen, list(SCORINGS), "scored on")
    lines += ["", "Picked per subset:", ""]
    lines += [f"- {row['model']}, {row['protocol']}: " + "; ".join(
        f"{name}: {', '.join(row['picked'][name])}" for name in SCORINGS) for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print("auto_logits.py replays selection.choose in the layout `auto` had until session 42 (ranges from one fold "
          "alone, two fits, the mean of their dB), which the library no longer has: its results stand as "
          "recorded in benchmarks/results/auto_logits.md", file=sys.stderr)
    sys.exit(2)
    use_repo_imports()
    sys.path.insert(0, str(HERE))
    import json

    from common import RESULTS

    arguments = sys.argv[1:]
    protocols = [argument for argument in arguments if argument != "held_back"] or ["unseen"]
    if "held_back" in arguments:
        saved = json.loads((RESULTS / "auto_logits.json").read_text())["rows"]
        rows = [row for row in saved if HELD_BACK not in row["model"]] + measure(held_back_models(), protocols,
                                                                                 measure_subset, summarize)
    else:
        rows = measure(softmax_models(), protocols, measure_subset, summarize)
    info = machine()
    write_results("auto_logits", {"machine": info, "rows": rows}, markdown(rows, info))
