"""Would room for the tail, read off the calibration images alone, help
logits heads on images the calibration never showed?

`tail_clipping.py` found two logits-head ResNet-50s (the Fashion-MNIST w0.5
and the MNIST w0.25 of the budget searches) whose full int8 loses most of
its evaluation SQNR to a few images that reach far past ranges set on 200
calibration images, and a range widened to where the extremes of 10 or 50
times as many images typically lie (ranges.tail_room: an exponential
tail's scale read off the spread of the calibration images' five largest
per-image maxima) won back most of it there, while it cost the softmax
heads 2-4 dB (it undid their rules' clipping: the softmax saturates). This
benchmark checks the same widening on logits heads it was not made on: the
logits heads of `calibration.py`'s sections whose networks are at hand,
each of its four calibration subsets (the same images), full int8 with the
rule `auto` took on that subset (read from calibration.json) against the
same rule with the room, each scored on the subset's evaluation images.
The two networks the widening was made on are marked.

`small_evaluation` asks whether an evaluation set of the digits' size
could see what the room buys: on the MNIST and Fashion-MNIST logits heads
(1250 and 10,000 evaluation images per subset; the Fashion ResNet-18 and
ResNet-34 too, which the widening never saw), the same two artifacts per
subset scored on the whole evaluation set and on DRAWS random draws of
SMALL_SET images of it (without replacement, seeded). Fixed before the
run: where room x10 gains 0.3 dB or more over the whole set of a network
and loses on half the draws or more, 298 images cannot see the tail it
buys there, and the digits rows' losses (298 evaluation images) do not
speak against room on a deployment's many images.

    python benchmarks/tail_room.py [report | small_evaluation [report]]
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

FOUND_ON = ("ResNet-50 w0.5 32x32 seed 109", "ResNet-50 w0.25 32x32 seed 89")  # where the tail was seen
SMALL_SET = 298  # the digits rows' evaluation images
DRAWS = 2000
SECTIONS = {"fidelity": "unseen", "fidelity_validation": "unseen", "fidelity_mobilenet": "unseen",
            "fidelity_mnist": "mnist", "fidelity_fashion": "fashion", "fidelity_fashion_fresh": "fashion"}


def logits_models():
    """(calibration.json section, name, Keras model, input size) of the logits heads at hand (cached or shipped:
    nothing is trained for this benchmark but the networks `mixed_precision.py` already trains)."""
    from calibration import mnist_models, mobilenet_models, models_to_measure
    from trained import fashion_fresh_models, fashion_models, validation_resnet18

    for name, model, _, size in models_to_measure(heads=("logits",)):
        yield "fidelity", name, model, size
    yield ("fidelity_validation",
           "ResNet-18 w0.5 40x40 seed 11 (validation: trained after auto's layout was chosen), logits head",
           validation_resnet18(), 40)
    for name, model, head, size in mobilenet_models():
        if head == "logits":
            yield "fidelity_mobilenet", name, model, size
    for name, model, head, size in mnist_models():
        if head == "logits":
            yield "fidelity_mnist", name, model, size
    for section, models in (("fidelity_fashion", fashion_models), ("fidelity_fashion_fresh", fashion_fresh_models)):
        for name, model, size in models(depth=50):
            yield section, f"{name}, logits head", model, size


def chosen_rules(row):
    """The RangeMethod `auto` took on each subset of a calibration.json row (from its recorded candidates)."""
    from edge_resnet.quantize.ranges import RangeMethod

    return [RangeMethod.from_dict(next(entry for entry in selection["candidates"]
                                       if entry["rule"] == selection["chosen_rule"]))
            for selection in row["auto_tflite_selection"]]


def subsets_of(section, model, size):
    """Per calibration subset of the section's protocol: (folded float TFLite, the subset's statistics, its
    evaluation images, the float Keras model's outputs on them)."""
    from calibration import float_predictions, protocol_splits

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(fold_batchnorm(model)[0])
    float_cache = {}
    for pixels, labels, test_pixels, _ in protocol_splits(size, SECTIONS[section]):
        _, evaluation, reference = float_predictions(model, test_pixels, float_cache)
        calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=labels).cached()
        yield float_model, collect_statistics(float_model, calibration), evaluation, reference


def measure(section, name, model, size, chose):
    from calibration import int8_tflite_outputs
    from tail_clipping import AHEAD

    from edge_resnet.quantize.ranges import activation_ranges, room_for
    from edge_resnet.quantize.selection import output_sqnr_db

    subsets = []
    for index, (float_model, statistics, evaluation, reference) in enumerate(subsets_of(section, model, size)):
        rule = chose[index]
        ranges = {"as auto took": activation_ranges(statistics, rule),
                  **{f"tail room x{ahead}": activation_ranges(statistics, room_for(rule, ahead)) for ahead in AHEAD}}
        subsets.append({"rule": rule.describe(), "scores_db": {
            label: output_sqnr_db(reference, int8_tflite_outputs(float_model, with_ranges, evaluation))
            for label, with_ranges in ranges.items()}})
        print(name, index, subsets[-1], flush=True)
    return {"section": section, "model": name, "found_on": any(name.startswith(found) for found in FOUND_ON),
            "evaluation_images": len(evaluation), "subsets": subsets}


def mean_difference(row, label):
    """A row's mean over its subsets of `label`'s SQNR minus the rule's as auto took it."""
    return float(np.mean([subset["scores_db"][label] - subset["scores_db"]["as auto took"]
                          for subset in row["subsets"]]))


def lines(rows, described):
    from tail_clipping import AHEAD

    labels = ["as auto took"] + [f"tail room x{ahead}" for ahead in AHEAD]
    out = ["# Room for the tail on logits heads it was not made on", "", "Command: `python benchmarks/tail_room.py`",
           "", f"Machine: {described['cpu']}. Logits heads of `calibration.py`'s sections, the same four "
           "calibration subsets and evaluation images as there; full int8 (int8 I/O, no bias correction, as "
           "`calibration.py` scores it) with the rule `auto` took on each subset (calibration.json; where a "
           "network was trained again since, not bit for bit the same, the rule it took on the earlier one), and "
           "the same "
           "ranges widened where ranges.tail_room reaches further (`--tail-room` 10 or 50: room for the extremes "
           "of 10 or 50 times the calibration images, read off their own five largest per-image maxima; where "
           "`auto` took a clipping rule, percentile or mse, the room leaves it as it is). Output SQNR against the "
           "float Keras model, mean over the subsets (lowest subset). Marked *: the networks the widening was made "
           "on (on other images of theirs: the budget searches' splits).", "",
           "| model | evaluation images | " + " | ".join(labels) + " | room x10 minus as taken, per subset |",
           "|---|---|" + "---|" * len(labels) + "---|"]
    for row in rows:
        per_label = {label: [subset["scores_db"][label] for subset in row["subsets"]] for label in labels}
        cells = [f"{np.mean(values):.2f} ({min(values):.2f})" for values in per_label.values()]
        differences = np.subtract(per_label["tail room x10"], per_label["as auto took"])
        out.append(f"| {row['model']}{' *' * row['found_on']} | {row['evaluation_images']} | {' | '.join(cells)} | "
                   f"{', '.join(f'{value:+.2f}' for value in differences)} |")
    unseen = [row for row in rows if not row["found_on"]]
    if unseen:
        out += ["", f"Over the {len(unseen)} models the widening was not made on, the mean of each model's mean "
                "difference from the rule as taken, and on how many it loses more than 0.3 dB: " + "; ".join(
                    f"{label} {np.mean([mean_difference(row, label) for row in unseen]):+.2f} dB, "
                    f"{sum(mean_difference(row, label) < -0.3 for row in unseen)} of {len(unseen)}"
                    for label in labels[1:]) + "."]
    return out


def large_evaluation_models():
    """(calibration.json section, name, Keras model, input size) of the MNIST and Fashion-MNIST logits heads."""
    from calibration import mnist_models
    from trained import fashion_fresh_models, fashion_models

    for name, model, head, size in mnist_models():
        if head == "logits":
            yield "fidelity_mnist", name, model, size
    for section, models in (("fidelity_fashion", fashion_models), ("fidelity_fashion_fresh", fashion_fresh_models)):
        for name, model, size in models():
            yield section, f"{name}, logits head", model, size


def pooled_db(signal, noise):
    from edge_resnet.quantize.selection import sqnr_of_sums

    return sqnr_of_sums(float(np.sum(signal)), float(np.sum(noise)))


def draws_of(errors, draws, rng):
    """Room x10's pooled SQNR minus as taken's on each draw of SMALL_SET images (the same draw for both)."""
    (signal, taken), (_, room) = errors["as auto took"], errors["tail room x10"]
    picks = [rng.choice(len(signal), SMALL_SET, replace=False) for _ in range(draws)]
    return np.array([pooled_db(signal[pick], room[pick]) - pooled_db(signal[pick], taken[pick]) for pick in picks])


def small_evaluation_row(section, name, model, size, chose):
    from calibration import int8_tflite_outputs

    from edge_resnet.quantize.ranges import activation_ranges, room_for
    from edge_resnet.quantize.selection import per_image_errors

    rng = np.random.default_rng(0)
    subsets = []
    for index, (float_model, statistics, evaluation, reference) in enumerate(subsets_of(section, model, size)):
        rule = chose[index]
        outputs = {label: int8_tflite_outputs(float_model, activation_ranges(statistics, method), evaluation)
                   for label, method in (("as auto took", rule), ("tail room x10", room_for(rule, 10)))}
        errors = {label: per_image_errors(reference, output) for label, output in outputs.items()}
        agreement = {label: float(np.mean(np.argmax(output, axis=1) == np.argmax(reference, axis=1)))
                     for label, output in outputs.items()}
        signal = errors["as auto took"][0]
        whole = pooled_db(signal, errors["tail room x10"][1]) - pooled_db(signal, errors["as auto took"][1])
        drawn = draws_of(errors, DRAWS, rng)
        subsets.append({"rule": rule.describe(), "whole_db": whole, "draws_mean_db": float(np.mean(drawn)),
                        "draws_median_db": float(np.median(drawn)), "draws_room_loses": float(np.mean(drawn < 0)),
                        "top1_agreement": agreement})
        print(name, index, subsets[-1], flush=True)
    return {"section": section, "model": name, "found_on": any(name.startswith(found) for found in FOUND_ON),
            "evaluation_images": len(evaluation), "subsets": subsets}


def small_evaluation_lines(rows, described):
    out = ["# Could 298 evaluation images see what room for the tail buys?", "",
           "Command: `python benchmarks/tail_room.py small_evaluation`", "",
           f"Machine: {described['cpu']}. The MNIST and Fashion-MNIST logits heads, the same four calibration "
           "subsets as calibration.py and the rule `auto` took on each (calibration.json), as tail_room.md (full "
           "int8, int8 I/O, no bias correction), as auto took and with "
           f"room x10. Per network, the mean over its subsets of room x10 minus as taken: over the whole evaluation "
           f"set, and over {DRAWS} random draws of {SMALL_SET} of its images per subset (the digits rows' "
           "evaluation size; the same draw for both artifacts): the mean and the median of the draws' "
           "differences, and the share of draws on which room loses (over the subsets where room changed anything: "
           "where `auto` took a clipping rule it takes none). Marked *: the networks the widening was made on.",
           "", "Beside them, top-1 agreement with the float model over the whole evaluation set (the share of "
           "images whose top class the int8 model keeps), as taken -> with room, per subset: added after the SQNR "
           "columns were seen, as a check on what the SQNR gain buys.", "",
           "| model | evaluation images | whole set | draws: mean | draws: median | draws room loses | "
           "top-1 agreement %, as taken -> room x10, per subset |",
           "|---|---|---|---|---|---|---|"]
    for row in rows:
        agreement = ", ".join(f"{100 * subset['top1_agreement']['as auto took']:.2f} -> "
                              f"{100 * subset['top1_agreement']['tail room x10']:.2f}" for subset in row["subsets"])
        means = [f"{mean_over_subsets(row, key):+.2f}" for key in ("whole_db", "draws_mean_db", "draws_median_db")]
        out.append(f"| {row['model']}{' *' * row['found_on']} | {row['evaluation_images']} | {' | '.join(means)} | "
                   f"{share_room_loses(row):.0%} | {agreement} |")
    gaining = [row for row in rows if mean_over_subsets(row, "whole_db") >= 0.3]
    blind = [row for row in gaining if share_room_loses(row) >= 0.5]
    subsets = [subset for row in rows for subset in row["subsets"]]
    fewer = sum(agreement_change(subset) < 0 for subset in subsets)
    more = sum(agreement_change(subset) > 0 for subset in subsets)
    out += ["", f"By the reading fixed before the run: room x10 gains 0.3 dB or more over the whole set on "
            f"{len(gaining)} of {len(rows)} networks; on {len(blind)} of them it loses on half the draws of "
            f"{SMALL_SET} images or more.", "",
            f"Top-1 agreement: room x10 keeps fewer of the float model's top classes on {fewer} of {len(subsets)} "
            f"subsets and more on {more}; on the 10,000-image Fashion-MNIST networks where it gains SQNR, "
            + "; ".join(f"{row['model'].split(' (')[0]} {mean_over_subsets(row, 'whole_db'):+.2f} dB and "
                        f"{100 * np.mean([agreement_change(subset) for subset in row['subsets']]):+.2f} points"
                        for row in gaining if row["evaluation_images"] >= 10000) + "."]
    return out


def mean_over_subsets(row, key):
    return float(np.mean([subset[key] for subset in row["subsets"]]))


def share_room_loses(row):
    """The mean over a row's subsets of the share of draws on which room loses, leaving out the subsets where room
    changed nothing (`auto` took a clipping rule, which takes no room)."""
    return float(np.mean([subset["draws_room_loses"] for subset in row["subsets"] if subset["whole_db"] != 0]))


def agreement_change(subset):
    """Room x10's top-1 agreement with the float model less as taken's (a share)."""
    return subset["top1_agreement"]["tail room x10"] - subset["top1_agreement"]["as auto took"]


def main(arguments=()):
    import json

    if "small_evaluation" in arguments and "report" in arguments:
        saved = json.loads((RESULTS / "tail_room_small_evaluation.json").read_text())
        (RESULTS / "tail_room_small_evaluation.md").write_text(
            "\n".join(small_evaluation_lines(saved["rows"], saved["machine"])) + "\n")
        return
    if "small_evaluation" in arguments:
        calibration = json.loads((RESULTS / "calibration.json").read_text())
        chose = {(section, row["model"]): chosen_rules(row) for section in SECTIONS
                 for row in calibration.get(section, []) if row["head"] == "logits"}
        rows = [small_evaluation_row(section, name, model, size, chose[section, name])
                for section, name, model, size in large_evaluation_models()]
        described = machine()
        write_results("tail_room_small_evaluation", {"machine": described, "rows": rows},
                      "\n".join(small_evaluation_lines(rows, described)) + "\n")
        return
    path = RESULTS / "tail_room.json"
    if "report" in arguments:
        saved = json.loads(path.read_text())
        (RESULTS / "tail_room.md").write_text("\n".join(lines(saved["rows"], saved["machine"])) + "\n")
        return
    calibration = json.loads((RESULTS / "calibration.json").read_text())
    chose = {(section, row["model"]): chosen_rules(row) for section in SECTIONS for row in calibration.get(section, [])
             if row["head"] == "logits"}
    rows = [measure(section, name, model, size, chose[section, name])
            for section, name, model, size in logits_models()]
    described = machine()
    write_results("tail_room", {"machine": described, "rows": rows}, "\n".join(lines(rows, described)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
