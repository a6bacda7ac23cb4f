"""Where a logits head's top-1 goes in int8, and what keeps it.

On the ResNet-50 logits head of the Fashion-MNIST benchmark (a model unsure
of many images) `auto` takes `extrapolated 0.25`, the best rule by output
SQNR, and keeps fewer top-1 predictions than min/max (issue 23's top-1 bar).
This splits a logits head's top-1 loss in two on the very same calibration
images and evaluation images:

- the int8 output grid alone: the float model's logits rounded onto the
  output tensor's int8 grid (its range from each rule), nothing else
  quantized. Two logits closer than a step round to one value or swap, so
  the grid alone changes the top-1 of close calls, whatever the network
  before it does;
- the whole artifact: every rule's full-int8 TFLite (int8 output), and the
  same ranges with the head (pooling, classifier) in float32 and a float32
  output, which has no such grid (mixed.py's head part, what the budget
  search keeps first under --output-type float32);
- rules that mix: extrapolated inside with min/max on the output, and the
  reverse;
- the raw TFLite converter on the same calibration images.

Each is scored by output SQNR (of the logits) and top-1 agreement with the
float Keras model; each agreement also minus the raw converter's, with the
paired standard error from the evaluation images' sampling
(calibration.py's top1_against_raw arithmetic).

    python benchmarks/logits_top1.py fashion     the Fashion-MNIST logits heads (10,000 evaluation images)
    python benchmarks/logits_top1.py mnist       the MNIST sample's logits heads (a second data set)
    python benchmarks/logits_top1.py note        what `quantize`'s output-grid note counts on each subset's 200
                                                 calibration images against the same grid on the evaluation
                                                 images, both data sets' logits heads (the default recipe)
    python benchmarks/logits_top1.py fashion_fresh note_fresh
                                                 both again on two Fashion-MNIST ResNets fixed in session 30
                                                 (calibration.py fidelity_fashion_fresh), models no session had
                                                 seen when this was written
    python benchmarks/logits_top1.py heldout     can `auto`'s held-out images see a rule's top-1 loss? The
                                                 four Fashion-MNIST logits heads, each subset in `auto`'s own
                                                 layout (every fold scored by ranges from the others): the
                                                 SQNR winner's held-out top-1 against min/max's, paired
                                                 (images only one of them keeps), with the exact one-sided
                                                 sign test a guard would use; fixed before the run: a guard
                                                 at p < 0.05 (the winner keeps significantly fewer than
                                                 min/max). Beside it, the same two rules' shipped artifacts
                                                 (ranges from all 200 images, biases corrected as `quantize`
                                                 does) on the 10,000 test images.
    python benchmarks/logits_top1.py choosers    would `auto` keep more top-1 on a logits head if it chose by
                                                 another score of the same held-out outputs? The four
                                                 Fashion-MNIST and three MNIST logits heads, `auto`'s layout
                                                 as in `heldout`; three choosers of the same candidates:
                                                 pooled output SQNR (what `auto` does), the mean KL
                                                 divergence of the logits' softmax (a classifier's
                                                 probabilities), the mean of per-image SQNR in dB (what
                                                 --calibration-score per-image ships; checked once per
                                                 network to take the rule `auto` takes so); each
                                                 winner's shipped artifact (ranges from all 200 images,
                                                 biases corrected) on the evaluation images: top-1
                                                 agreement and SQNR. Fixed before the run: another chooser
                                                 is worth building only if its top-1 agreement beats the
                                                 SQNR chooser's by 0.1 points or more on average over the
                                                 subsets and falls short of it by more than 0.1 points on
                                                 no network (mean over its subsets).
    python benchmarks/logits_top1.py choosers_softmax
                                                 the same on the softmax heads of the same networks (the
                                                 KL of their own probabilities)

Writes benchmarks/results/logits_top1.{json,md}.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, use_repo_imports

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RAW = "raw TFLite converter (min/max)"
FLOAT_HEAD = "head float32, float32 output"


def on_grid(values, low, high):
    """`values` rounded onto 256 even steps of [low, high]: an int8 tensor's grid, but for the small shift
    of the range that puts zero on a step (which the converter makes and this leaves out)."""
    scale = (high - low) / 255
    return np.clip(np.round((values - low) / scale), 0, 255) * scale + low


def variants(statistics):
    """{label: ranges} of the full-int8 routes measured, from one calibration subset's statistics."""
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges

    minmax = activation_ranges(statistics, RangeMethod("minmax"))
    extrapolated = activation_ranges(statistics, RangeMethod("extrapolated"))
    outputs = set(statistics.graph_outputs)
    return {"minmax": minmax, "extrapolated 0.25": extrapolated,
            "extrapolated 0.25 inside, minmax on the output": activation_ranges(
                statistics, RangeMethod("extrapolated", output="minmax")),
            "minmax inside, extrapolated 0.25 on the output": {
                name: extrapolated[name] if name in outputs else minmax[name] for name in minmax}}


def measure(protocol, models):
    from calibration import float_predictions, int8_tflite_outputs, protocol_splits, raw_converter_int8, sqnr_db, \
        standard_error_of_subset_mean, subset_mean

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import int8_tflite, run_tflite_bytes
    from edge_resnet.quantize.mixed import model_parts
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    rows = []
    for name, model, head, size in models:
        if head != "logits":
            continue
        print(f"== {name}", flush=True)
        float_model = float_tflite(fold_batchnorm(model)[0])
        head_scopes = tuple(model_parts(float_model)["head"])
        float_output = QuantizationRecipe(output_type="float32")
        splits = protocol_splits(size, protocol)
        evaluation_sets, sqnrs, agrees, float_cache = [], {}, {}, {}

        def record(route, outputs, reference):
            sqnrs.setdefault(route, []).append(sqnr_db(reference, outputs))
            agrees.setdefault(route, []).append((outputs.argmax(1) == reference.argmax(1)).astype(float))

        for index, (pixels, pixel_labels, test_pixels, _) in enumerate(splits):
            key, test_images, reference = float_predictions(model, test_pixels, float_cache, batch_size=100)
            evaluation_sets.append(key)
            calibration = images_from_array(pixels, Preprocessing(size, size), size=None,
                                             labels=pixel_labels).cached()
            statistics = collect_statistics(float_model, calibration)
            record(RAW, run_tflite_bytes(raw_converter_int8(model, list(calibration.samples())), test_images, "raw"),
                   reference)
            (output_name,) = statistics.graph_outputs
            for label, ranges in variants(statistics).items():
                record(label, int8_tflite_outputs(float_model, ranges, test_images), reference)
                if "inside" not in label:  # a mix's output grid is one of the pure rules'
                    record(f"{label}: int8 output grid alone", on_grid(reference, *ranges[output_name]), reference)
                    record(f"{label}, {FLOAT_HEAD}",
                           run_tflite_bytes(int8_tflite(float_model, ranges, float_output, head_scopes), test_images,
                                            "a float head"), reference)
            print(f"   subset {index + 1}/{len(splits)} done", flush=True)
        routes = {}
        for route in sqnrs:
            gain = [agree - raw for agree, raw in zip(agrees[route], agrees[RAW])]
            routes[route] = {"sqnr_db_mean": float(np.mean(sqnrs[route])), "sqnr_db_per_subset": sqnrs[route],
                             "agreement_mean": subset_mean(agrees[route]),
                             "agreement_minus_raw_points": 100 * subset_mean(gain),
                             "agreement_minus_raw_se_points": 100 * standard_error_of_subset_mean(gain,
                                                                                                  evaluation_sets)}
        rows.append({"model": name, "protocol": protocol,
                     "evaluation_images": sum(len(test_pixels) for test_pixels in
                                              {key: split[2] for key, split in zip(evaluation_sets, splits)}.values()),
                     "subsets": len(splits), "routes": routes})
    return rows


def note_against_evaluation(protocol, models):
    """Per model and subset: the int8 TFLite `quantize` writes by default (its record's output_grid: the
    top-1 its output grid alone changes on the calibration images) against that grid's share on the
    evaluation images."""
    from edge_resnet.quantize.int8_tflite import output_grid_record, value_grid, write_int8_tflite
    from edge_resnet.quantize.recipe import QuantizationRecipe, read_record

    rows, scratch = [], Path(tempfile.mkdtemp(prefix="logits-top1-note-"))
    for name, float_model, subsets_of in logits_heads(protocol, models):
        subsets = []
        for calibration, _, reference, _ in subsets_of:
            path = write_int8_tflite(float_model, QuantizationRecipe(), scratch / "int8.tflite", calibration,
                                     progress=False)
            record, artifact = read_record(path), path.read_bytes()
            noted = record["output_grid"]
            evaluated = output_grid_record(artifact, reference)  # its "calibration_images": the evaluation images
            subsets.append({"chosen_rule": record["activation_ranges"]["chosen"],
                            "calibration_images": noted["calibration_images"], "noted": noted["top1_changed"],
                            "evaluation_images": evaluated["calibration_images"],
                            "evaluation_changed": evaluated["top1_changed"],
                            "grid_scale": value_grid(artifact).scale})
            print(f"   {subsets[-1]}", flush=True)
        rows.append({"model": name, "protocol": protocol, "subsets": subsets})
    return rows


def logits_heads(protocol, models, head_kind="logits"):
    """(name, float .tflite bytes, its subsets) per logits head (or `head_kind` head) of `models`; the subsets are
    made one at a time: (calibration ImageSet, evaluation images, the float Keras model's outputs on them, their
    labels)."""
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.tflite import float_tflite

    for name, model, head, size in models:
        if head == head_kind:
            print(f"== {name}", flush=True)
            yield name, float_tflite(fold_batchnorm(model)[0]), calibration_subsets(model, size, protocol)


def calibration_subsets(model, size, protocol):
    from calibration import float_predictions, protocol_splits

    from edge_resnet.data.images import Preprocessing, images_from_array

    float_cache = {}  # subsets may share one evaluation set
    for pixels, pixel_labels, test_pixels, test_labels in protocol_splits(size, protocol):
        _, test_images, reference = float_predictions(model, test_pixels, float_cache, batch_size=100)
        yield (images_from_array(pixels, Preprocessing(size, size), size=None, labels=pixel_labels).cached(),
               test_images, reference, np.asarray(test_labels))


def sign_test_p(only_minmax, only_winner):
    """The exact one-sided sign test: the chance of `only_minmax` or more of the images only one rule keeps
    falling to min/max if each fell to either alike."""
    from math import comb

    count = only_minmax + only_winner
    return sum(comb(count, k) for k in range(only_minmax, count + 1)) / 2 ** count if count else 1.0


def candidates_held_out(float_model, calibration):
    """(statistics, the float model's outputs on the calibration samples, `auto`'s candidates, and per fit in
    `auto`'s layout: (the held-out positions, each candidate's int8 outputs on them, as quantized))."""
    from edge_resnet.quantize.int8_tflite import quantized_int8_io, run_int8_candidates
    from edge_resnet.quantize.ranges import activation_ranges
    from edge_resnet.quantize.selection import calibration_inputs, candidates_for, fits, float_reference
    from edge_resnet.quantize.statistics import collect_statistics

    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    rules = candidates_for(statistics)

    def per_fit():
        for fitted, positions in fits(statistics):
            positions = list(positions)
            artifacts = (quantized_int8_io(float_model, activation_ranges(fitted, rule)) for rule in rules)
            yield positions, run_int8_candidates(artifacts, inputs[positions])

    return statistics, float_reference(float_model, statistics, inputs), rules, per_fit()


def held_out_top1(protocol, models):
    """Per logits head and subset: `auto`'s candidates on their held-out images as `auto` scores them (as
    quantized, each fold by ranges from the others), the SQNR winner's top-1 against min/max's there (paired
    counts, sign test), and both rules' shipped artifacts on the evaluation images."""
    from edge_resnet.quantize.bias_correction import corrected_artifact
    from edge_resnet.quantize.int8_tflite import quantized_int8_io, run_tflite_bytes
    from edge_resnet.quantize.ranges import activation_ranges
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.selection import per_image_errors, sqnr_of_sums

    rows = []
    for name, float_model, subsets_of in logits_heads(protocol, models):
        subsets = []
        for calibration, test_images, test_reference, _ in subsets_of:
            statistics, reference, rules, per_fit = candidates_held_out(float_model, calibration)
            sums = np.zeros((len(rules), 2))
            kept = np.zeros((len(rules), len(reference)), bool)
            for positions, candidate_outputs in per_fit:
                for index, outputs in enumerate(candidate_outputs):
                    sums[index] += [np.sum(part) for part in per_image_errors(reference[positions], outputs)]
                    kept[index, positions] = outputs.argmax(1) == np.argmax(reference[positions], 1)
            scores_db = [sqnr_of_sums(*pair) for pair in sums]
            winner = int(np.argmax(scores_db))
            only_minmax, only_winner = int(np.sum(kept[0] & ~kept[winner])), int(np.sum(~kept[0] & kept[winner]))
            evaluated = {}
            for index in sorted({0, winner}):
                shipped, _ = corrected_artifact(
                    quantized_int8_io(float_model, activation_ranges(statistics, rules[index])), float_model,
                    QuantizationRecipe(), calibration, statistics)
                outputs = run_tflite_bytes(shipped, test_images, "int8")
                evaluated[index] = float(np.mean(outputs.argmax(1) == test_reference.argmax(1)))
            subsets.append({"winner": rules[winner].describe(), "held_out_images": len(reference),
                            "held_out_db": {"winner": scores_db[winner], "minmax": scores_db[0]},
                            "held_out_agreement": {"winner": float(np.mean(kept[winner])),
                                                   "minmax": float(np.mean(kept[0]))},
                            "only_minmax_keeps": only_minmax, "only_winner_keeps": only_winner,
                            "sign_test_p": sign_test_p(only_minmax, only_winner),
                            "evaluation_images": len(test_images),
                            "evaluation_agreement": {"winner": evaluated[winner], "minmax": evaluated[0]}})
            print(f"   {subsets[-1]}", flush=True)
        rows.append({"model": name, "protocol": protocol, "subsets": subsets})
    return rows


def log_softmax(logits):
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def softmax_kl(reference, outputs, head="logits"):
    """Each image's KL divergence from the float model's class probabilities to the int8 model's: the softmax
    of a logits head's outputs, a softmax head's own (an int8 zero read as 1e-12)."""
    if head == "logits":
        expected, got = log_softmax(reference), log_softmax(outputs)
    else:
        expected, got = (np.log(np.maximum(np.asarray(values, np.float64), 1e-12)) for values in (reference, outputs))
    return np.sum(np.exp(expected) * (expected - got), axis=1)


def mean_image_db(signal, noise, kl):
    from edge_resnet.quantize.selection import image_db_of

    return float(np.mean(image_db_of(signal, noise)))


CHOOSERS = {"pooled SQNR (auto)": lambda signal, noise, kl: 10 * np.log10(np.sum(signal) / np.sum(noise)),
            "softmax KL": lambda signal, noise, kl: -np.mean(kl),
            "mean of per-image dB": mean_image_db}
SHIPPED_SCORES = {"pooled SQNR (auto)": "pooled", "mean of per-image dB": "per-image"}  # --calibration-score


def check_as_auto_chooses(float_model, calibration, statistics, rules, winners):
    """Refuse to go on where `auto` itself, by each --calibration-score, takes another rule than the chooser of
    this benchmark that stands for it."""
    from edge_resnet.quantize.int8_tflite import tflite_chooser

    choose_for = tflite_chooser(float_model, True, calibration)
    for chooser, score in SHIPPED_SCORES.items():
        taken = choose_for(statistics, score).method
        if taken != rules[winners[chooser]]:
            raise RuntimeError(f"auto scored {score} took {taken.describe()}, the benchmark's {chooser} "
                               f"{rules[winners[chooser]].describe()}")


def chooser_rows(protocol, models, head="logits"):
    """Per logits head and subset: each chooser's winner among `auto`'s candidates on the held-out images (as
    quantized, each fold by ranges from the others), and each winner's shipped artifact on the evaluation
    images (top-1 agreement with the float model, output SQNR)."""
    from edge_resnet.quantize.bias_correction import corrected_artifact
    from edge_resnet.quantize.int8_tflite import quantized_int8_io, run_tflite_bytes
    from edge_resnet.quantize.ranges import activation_ranges
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.selection import output_sqnr_db, per_image_errors

    rows = []
    for name, float_model, subsets_of in logits_heads(protocol, models, head):
        subsets = []
        for calibration, test_images, test_reference, test_labels in subsets_of:
            statistics, reference, rules, per_fit = candidates_held_out(float_model, calibration)
            signal, noise, kl = (np.zeros((len(rules), len(reference))) for _ in range(3))
            for positions, candidate_outputs in per_fit:
                for index, outputs in enumerate(candidate_outputs):
                    signal[index, positions], noise[index, positions] = per_image_errors(reference[positions],
                                                                                         outputs)
                    kl[index, positions] = softmax_kl(reference[positions], outputs, head)
            winners = {chooser: int(np.argmax([score(signal[index], noise[index], kl[index])
                                               for index in range(len(rules))]))
                       for chooser, score in CHOOSERS.items()}
            if not subsets:  # once per network
                check_as_auto_chooses(float_model, calibration, statistics, rules, winners)
            evaluated = {}
            for index in sorted(set(winners.values())):
                shipped, _ = corrected_artifact(
                    quantized_int8_io(float_model, activation_ranges(statistics, rules[index])), float_model,
                    QuantizationRecipe(), calibration, statistics)
                outputs = run_tflite_bytes(shipped, test_images, "int8")
                evaluated[index] = {"agreement": float(np.mean(outputs.argmax(1) == test_reference.argmax(1))),
                                    "accuracy": float(np.mean(outputs.argmax(1) == test_labels)),
                                    "sqnr_db": output_sqnr_db(test_reference, outputs)}
            subsets.append({"evaluation_images": len(test_images),
                            "float_accuracy": float(np.mean(test_reference.argmax(1) == test_labels)),
                            "choosers": {chooser: {"rule": rules[index].describe(), **evaluated[index]}
                                         for chooser, index in winners.items()}})
            print(f"   {subsets[-1]}", flush=True)
        rows.append({"model": name, "protocol": protocol, "subsets": subsets})
    return rows


def chooser_lines(rows):
    names = list(CHOOSERS)
    lines = ["| model | evaluation images | " + " | ".join(f"{chooser}: rules taken; top-1 agreement, SQNR dB"
                                                        for chooser in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for row in rows:
        cells = []
        for chooser in names:
            taken = [subset["choosers"][chooser] for subset in row["subsets"]]
            rules = ", ".join(entry["rule"] for entry in taken)
            cells.append(f"{rules}; {np.mean([entry['agreement'] for entry in taken]):.2%}, "
                         f"{np.mean([entry['sqnr_db'] for entry in taken]):.2f}")
        lines.append(f"| {row['model']} | {row['subsets'][0]['evaluation_images']} | {' | '.join(cells)} |")
    subsets = [subset for row in rows for subset in row["subsets"]]
    summary = []
    for chooser in names[1:]:
        gain = [100 * (subset["choosers"][chooser]["agreement"] - subset["choosers"][names[0]]["agreement"])
                for subset in subsets]
        cost = [subset["choosers"][chooser]["sqnr_db"] - subset["choosers"][names[0]]["sqnr_db"]
                for subset in subsets]
        worst = min(np.mean([100 * (subset["choosers"][chooser]["agreement"]
                                    - subset["choosers"][names[0]]["agreement"]) for subset in row["subsets"]])
                    for row in rows)
        worth = np.mean(gain) >= 0.1 and worst >= -0.1
        summary.append(f"{chooser}: top-1 agreement {np.mean(gain):+.2f} points on average over the "
                       f"{len(subsets)} subsets (worst network {worst:+.2f}), SQNR {np.mean(cost):+.2f} dB; by the "
                       f"reading fixed before the run, {'worth building' if worth else 'not worth building'}")
    return lines + ["", "Against the SQNR chooser: " + "; ".join(summary) + ".", "", *accuracy_lines(rows, names)]


def accuracy_lines(rows, names):
    """Each chooser's top-1 accuracy drop from the float model's (points, on the evaluation images' labels), mean
    over each network's subsets."""
    if "accuracy" not in rows[0]["subsets"][0]["choosers"][names[0]]:
        return []  # measured before accuracy was recorded
    lines = ["Top-1 accuracy drop from the float model's, points (mean over the subsets):", "",
             "| model | float accuracy | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for row in rows:
        drops = [np.mean([100 * (subset["float_accuracy"] - subset["choosers"][chooser]["accuracy"])
                          for subset in row["subsets"]]) for chooser in names]
        lines.append(f"| {row['model']} | {np.mean([subset['float_accuracy'] for subset in row['subsets']]):.2%} | "
                     + " | ".join(f"{drop:+.2f}" for drop in drops) + " |")
    return lines


def held_out_lines(rows):
    lines = ["| model | subset | SQNR winner on the held-out images | held-out dB, winner / min/max | held-out "
             "top-1 agreement, winner / min/max | images only min/max keeps / only the winner | sign test p | "
             "test images: agreement, winner / min/max (shipped) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for number, entry in enumerate(row["subsets"], 1):
            held, test = entry["held_out_agreement"], entry["evaluation_agreement"]
            lines.append(f"| {row['model']} | {number} | {entry['winner']} | {entry['held_out_db']['winner']:.2f} / "
                         f"{entry['held_out_db']['minmax']:.2f} | {held['winner']:.1%} / {held['minmax']:.1%} | "
                         f"{entry['only_minmax_keeps']} / {entry['only_winner_keeps']} | {entry['sign_test_p']:.3f} | "
                         f"{test['winner']:.2%} / {test['minmax']:.2%} |")
    return lines


def note_lines(rows):
    lines = ["| model | per subset: noted of calibration images (share) | same grid on the evaluation images (share) |",
             "|---|---|---|"]
    for row in rows:
        noted = ", ".join(f"{entry['noted']} of {entry['calibration_images']} "
                          f"({entry['noted'] / entry['calibration_images']:.1%})" for entry in row["subsets"])
        evaluated = ", ".join(f"{entry['evaluation_changed'] / entry['evaluation_images']:.1%} of "
                              f"{entry['evaluation_images']}" for entry in row["subsets"])
        lines.append(f"| {row['model']} | {noted} | {evaluated} |")
    return lines


def machine_text(entry):
    return f"{entry['cpu']}, {entry['cores']} cores ({', '.join(entry['isa'])})"


def earlier_machines_text(result):
    """The parts measured on another machine than the last run's, named with theirs."""
    others = {part: entry for part, entry in result.get("machines", {}).items() if entry != result["machine"]}
    return "".join(f"; `{part}` on {machine_text(entry)}" for part, entry in others.items())


def markdown(result):
    lines = ["# A logits head's top-1 in int8: the output grid and the rest", "",
             f"Machine: {machine_text(result['machine'])}{earlier_machines_text(result)}. No latency is measured "
             "here.", "",
             "Every route calibrated on the very same 200-image subsets (4 per model), evaluated on the same images "
             "against the float Keras model. Output SQNR of the logits, mean over the subsets; top-1 agreement "
             "with the float model; its difference from the raw TFLite converter's, ± the paired standard error "
             "from the evaluation images' sampling. \"int8 output grid alone\": the float model's logits rounded "
             "onto the output tensor's int8 grid, nothing else quantized. \"head float32\": the same ranges, "
             "the head (pooling, classifier) in float32 and a float32 output.", ""]
    for part, rows in result["parts"].items():
        lines += [f"## `{result['commands'][part]}`", ""]
        if part == "heldout":
            lines += ["`auto`'s own held-out layout on each subset's 200 calibration images (each fold scored by "
                      "ranges "
                      "from the other three, the candidates as quantized, as `auto` scores them): the SQNR winner's "
                      "top-1 agreement with the float model against min/max's on the same images, the images only one "
                      "of them keeps, and the exact one-sided sign test of min/max keeping more. A guard fixed "
                      "before the run would refuse the winner at p < 0.05. Beside it, both rules' artifacts as "
                      "`quantize` ships them (ranges from all 200 images, biases corrected) on the test images.", "",
                      *held_out_lines(rows), ""]
            continue
        if part.startswith("choosers"):
            probabilities = "their own probabilities" if part == "choosers_softmax" else "the logits' softmax"
            lines += ["`auto`'s own held-out layout on each subset's 200 calibration images (as `heldout`); three "
                      "choosers of the same candidates by the same held-out outputs: pooled output SQNR (what `auto` "
                      f"does), the mean KL divergence of {probabilities}, the mean of per-image SQNR in dB (what "
                      "`--calibration-score per-image` ships: on each network's first subset both shipped scores "
                      "were checked to take the rule `auto` takes by them). Per "
                      "network: the rule each took on the four subsets, and its artifact as `quantize` ships it "
                      "(ranges from all 200 images, biases corrected) on the evaluation images, mean over the "
                      "subsets.", "", *chooser_lines(rows), ""]
            continue
        if part.startswith("note"):
            lines += ["What `quantize`'s note counts (the default recipe, each subset's 200 calibration images: the "
                      "float model's outputs rounded onto the artifact's int8 output grid alone, images whose top-1 "
                      "changes) against the share that grid changes on the evaluation images.", "",
                      *note_lines(rows), ""]
            continue
        for row in rows:
            lines += [f"### {row['model']}, {row['evaluation_images']} distinct evaluation images", "",
                      "| route | SQNR dB | top-1 agreement | agreement - raw converter, points |",
                      "|---|---|---|---|"]
            for route, scores in row["routes"].items():
                lines.append(f"| {route} | {scores['sqnr_db_mean']:.2f} | {scores['agreement_mean']:.2%} | "
                             f"{scores['agreement_minus_raw_points']:+.2f} "
                             f"±{scores['agreement_minus_raw_se_points']:.2f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(parts):
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from calibration import fashion_fresh_models, fashion_models, mnist_models

    path = RESULTS / "logits_top1.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["machine"] = machine()
    runs = {"fashion": lambda: measure("fashion", fashion_models()), "mnist": lambda: measure("mnist", mnist_models()),
            "note": lambda: [*note_against_evaluation("fashion", fashion_models()),
                             *note_against_evaluation("mnist", mnist_models())],
            "fashion_fresh": lambda: measure("fashion", fashion_fresh_models()),
            "note_fresh": lambda: note_against_evaluation("fashion", fashion_fresh_models()),
            "heldout": lambda: held_out_top1("fashion", [*fashion_models(), *fashion_fresh_models()]),
            "choosers": lambda: [*chooser_rows("fashion", [*fashion_models(), *fashion_fresh_models()]),
                                 *chooser_rows("mnist", mnist_models())],
            "choosers_softmax": lambda: [
                *chooser_rows("fashion", [*fashion_models(), *fashion_fresh_models()], "softmax"),
                *chooser_rows("mnist", mnist_models(), "softmax")]}
    for part, run in runs.items():
        if part in parts:
            started = time.perf_counter()
            result.setdefault("parts", {})[part] = run()
            result.setdefault("commands", {})[part] = f"python benchmarks/logits_top1.py {part}"
            result.setdefault("seconds", {})[part] = round(time.perf_counter() - started, 1)
            result.setdefault("machines", {})[part] = result["machine"]
            path.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "logits_top1.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:] or ["fashion"])
