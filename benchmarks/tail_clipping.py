"""Are the evaluation images that carry most of full int8's error clipped?

`error_tails.py` found a Fashion-MNIST ResNet-50 (w0.5, logits head) whose
full int8 scores 27.3 dB on its 200 calibration images and 14.3 dB on the
10,000 test images, 98% of the test error in 1% of the images, and the
budget search's gain (judged on held-out calibration images) did not carry
to them. One reading: those images drive some tensors past the ranges that
200 calibration images set, and the clipped values, not rounding, make
their error. This benchmark runs the float model on the evaluation images,
reads each image's lowest and highest value of every quantized tensor, and
for full int8 of each saved float32-output search of
`mixed_precision.py bar_fashion` (made as the artifact is: ranges from all
calibration images, biases corrected) says how far the worst 1% images and
the rest reach past the ranges, and what full int8 scores on the evaluation
images when the ranges are widened to hold every evaluation image (an
oracle no calibration can be: it reads the evaluation images), on every
tensor, or only on those the worst images clip. `mnist` does so for
`bar_mnist`'s searches, into tail_clipping_mnist.md.

    python benchmarks/tail_clipping.py [mnist] [report]
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from error_tails import WORST_SHARE  # noqa: E402  (the share of images counted as the tail)

LISTED = 5  # the tensors named per row: those the worst images overshoot most
EXTRAPOLATIONS = (0.25, 0.5, 1.0, 2.0)  # full int8 with more headroom than auto's extrapolated 0.25


def headroom_rules():
    """minmax, then `extrapolated` at each of EXTRAPOLATIONS: range rules with ever more room past the calibration
    images' extremes."""
    from edge_resnet.quantize.ranges import RangeMethod

    return [RangeMethod("minmax")] + [RangeMethod("extrapolated", extrapolation=value) for value in EXTRAPOLATIONS]


def image_extremes(float_model, images):
    """{tensor name: (per-image minima, per-image maxima)} of every float activation of `float_model` on `images`."""
    from edge_resnet.device.runtime import tflite_interpreter_module
    from edge_resnet.quantize.statistics import exposed_model

    exposed, names = exposed_model(float_model)
    _, module = tflite_interpreter_module()
    interpreter = module.Interpreter(model_content=exposed, num_threads=2)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    index_of = {detail["name"]: detail["index"] for detail in interpreter.get_output_details()}
    minima, maxima = np.empty((len(names), len(images))), np.empty((len(names), len(images)))
    for position, image in enumerate(images):
        interpreter.set_tensor(input_index, np.asarray(image, np.float32)[None])
        interpreter.invoke()
        for row, name in enumerate(names):
            values = interpreter.get_tensor(index_of[name])
            minima[row, position], maxima[row, position] = values.min(), values.max()
    return {name: (minima[row], maxima[row]) for row, name in enumerate(names)}


def overshoot(extremes, low, high):
    """Per image: how far it reaches past (low, high), in widths of that range (0: inside)."""
    minima, maxima = extremes
    width = high - low
    return np.maximum(np.maximum(low - minima, 0), np.maximum(maxima - high, 0)) / width


def widened(ranges, extremes, tensors):
    """`ranges` with each of `tensors` widened to hold every image in `extremes`."""
    out = dict(ranges)
    for name in tensors:
        low, high = ranges[name]
        out[name] = (min(low, float(extremes[name][0].min())), max(high, float(extremes[name][1].max())))
    return out


AHEAD = (10, 50)  # room for as many times the calibration images (ranges.tail_room)


def top_spread(tensor, low, high):
    """How far the calibration images' TAIL_TOP largest per-image maxima (smallest minima, where further) spread, in
    widths of the range (low, high)."""
    from edge_resnet.quantize.ranges import tail_extremes

    bottom, top = tail_extremes(tensor)
    return float(max(top[-1] - top[0], bottom[-1] - bottom[0] if tensor.minimum < 0 else 0) / (high - low))


def pooled_db(signal, noise):
    return float(10 * np.log10(np.sum(signal) / np.sum(noise)))


def short_name(tensor):
    """The Keras layer a TFLite tensor name starts with (`conv5_block3_2_relu`), or the name itself."""
    import re

    found = re.search(r"/([^/;]+?)(?:_\d+)?/", tensor)
    return found.group(1) if found else tensor


def clipping(result, models, data):
    from error_tails import image_errors
    from mixed_precision import chosen_step_index

    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges, room_for
    from step_carry import rebuilt, step_artifact

    float_model, calibration, evaluation, statistics, recipe, ranges, route, rule = rebuilt(result, models, data)
    reference = run_tflite_bytes(float_model, evaluation, "float")
    floored = statistics.softmax_input.tensor if statistics.softmax_input else None  # clipped low by design
    extremes = {name: values for name, values in image_extremes(float_model, evaluation).items()
                if name in ranges and name != floored}
    folder = Path(tempfile.mkdtemp(prefix="tail-clipping-"))
    steps = {"full int8": result["steps"][0], "chosen step": result["steps"][chosen_step_index(result)]}

    def errors(step, with_ranges):
        path = folder / "candidate.tflite"
        path.write_bytes(step_artifact(float_model, recipe, route, with_ranges, steps[step], calibration, statistics))
        return image_errors(reference, path, evaluation)

    signal, noise = errors("full int8", ranges)
    worst = np.argsort(noise)[-max(1, int(round(len(noise) * WORST_SHARE))):]
    rest = np.setdiff1d(np.arange(len(noise)), worst)
    reach = {name: overshoot(values, *ranges[name]) for name, values in extremes.items()}
    clipped_by_worst = [name for name, over in reach.items() if over[worst].max() > 0]
    listed = sorted(clipped_by_worst, key=lambda name: -np.median(reach[name][worst]))[:LISTED]
    range_sets = {"as calibrated": ranges,
                  "widened where the worst images clip": widened(ranges, extremes, clipped_by_worst),
                  "widened everywhere": widened(ranges, extremes, list(extremes)),
                  **{f"tail room x{ahead}": activation_ranges(statistics, room_for(rule, ahead)) for ahead in AHEAD},
                  f"minmax, tail room x{AHEAD[0]}": activation_ranges(statistics,
                                                                     RangeMethod("minmax", room=AHEAD[0]))}
    scores = {step: {label: pooled_db(*errors(step, with_ranges)) for label, with_ranges in range_sets.items()}
              for step in steps}
    rules = {}
    for rule in headroom_rules():
        rule_signal, rule_noise = errors("full int8", activation_ranges(statistics, rule))
        rules[rule.describe()] = {"db": pooled_db(rule_signal, rule_noise),
                                  "worst_share": float(np.sort(rule_noise)[-len(worst):].sum() / rule_noise.sum())}
    spread = {tensor.name: top_spread(tensor, *ranges[tensor.name]) for tensor in statistics.tensors
              if tensor.name in extremes}
    clipping_somewhere = np.any([over > 0 for over in reach.values()], axis=0)
    row = {"model": result["model"], "images": len(noise), "worst_images": len(worst),
           "tensors": len(extremes), "chosen_parts": steps["chosen step"]["float_parts"], "scores_db": scores,
           "full_int8_rules": rules,
           "clipped_by_worst": len(clipped_by_worst),
           "clipped_by_rest": sum(1 for over in reach.values() if over[rest].max() > 0),
           "worst_images_clipping": float(clipping_somewhere[worst].mean()),
           "rest_images_clipping": float(clipping_somewhere[rest].mean()),
           "spread_and_reach": [[spread[name], float(reach[name].max())] for name in extremes],
           "listed": [{"tensor": short_name(name), "worst_median_overshoot": float(np.median(reach[name][worst])),
                       "worst_max_overshoot": float(reach[name][worst].max()),
                       "rest_share_clipped": float(np.mean(reach[name][rest] > 0))} for name in listed]}
    print(row, flush=True)
    return row


def spread_correlation(row):
    from scipy.stats import spearmanr

    spread, reach = np.asarray(row["spread_and_reach"]).T
    return float(spearmanr(spread, reach).correlation)


def spread_split(row, count=5):
    """The median of the largest overshoot of the `count` tensors that spread most, and of the others."""
    pairs = sorted(row["spread_and_reach"], key=lambda pair: -pair[0])
    return (f"{np.median([reach for _, reach in pairs[:count]]):.2f} / "
            f"{np.median([reach for _, reach in pairs[count:]]):.2f}")


def lines(rows, described, source="fashion"):
    from error_tails import SOURCES

    from edge_resnet.quantize.ranges import TAIL_TOP

    part, what = SOURCES[source]
    rules = list(rows[0]["full_int8_rules"]) if rows else []
    out = ["# Are the evaluation images with the largest errors clipped?", "",
           f"Command: `python benchmarks/tail_clipping.py{' mnist' * (source == 'mnist')}`", "",
           f"Machine: {described['cpu']}. Full int8 and the chosen step of each float32-output search of "
           f"`mixed_precision.py {part}` ({what}), made as the artifact is (ranges from all calibration images, "
           f"biases corrected), on the evaluation images. Worst: the {WORST_SHARE:.0%} of the evaluation images "
           "with the largest output errors in full int8. Overshoot: how far an image's values reach past a "
           "tensor's range, in widths of that range (a softmax's input is left out: its range is floored on "
           "purpose). Widened: each such tensor's range stretched to hold every evaluation image (an oracle: it "
           "reads the evaluation images), the rest as calibrated. Tail room xK (`--tail-room K`): the ranges of the "
           "rule `auto` took, where it holds the extremes seen (minmax, extrapolated; a clipping rule is kept as it "
           "is), widened to where the extremes of K times as many images typically lie, read off how the "
           f"calibration images' {TAIL_TOP} largest per-image maxima (smallest minima) spread (no evaluation image "
           f"read); \"minmax, tail room x{AHEAD[0]}\": min/max with that room whatever `auto` took.", "",
           "| model | ranges | full int8 dB | chosen step dB | gain of the chosen step |", "|---|---|---|---|---|"]
    for row in rows:
        full, chosen = row["scores_db"]["full int8"], row["scores_db"]["chosen step"]
        out += [f"| {row['model']} | {label} | {full[label]:.2f} | {chosen[label]:.2f} | "
                f"{chosen[label] - full[label]:+.2f} |" for label in full]
    out += ["", "| model | tensors the worst / the other images clip (of all) | "
            "worst / other images clipping somewhere |", "|---|---|---|"]
    out += [f"| {row['model']} | {row['clipped_by_worst']} / {row['clipped_by_rest']} (of {row['tensors']}) | "
            f"{row['worst_images_clipping']:.0%} / {row['rest_images_clipping']:.0%} |" for row in rows]
    out += ["", f"Does the calibration images' own spread foretell the overshoot? Per model, over its tensors: the "
            f"rank correlation (Spearman) of the spread of their {TAIL_TOP} largest per-image maxima (smallest minima) "
            "with how far the evaluation images reach past the range at most (both in widths of the range), and "
            "the overshoot of the tensors that spread most against the rest.", "",
            "| model | rank correlation | largest overshoot: the 5 tensors that spread most / the others |",
            "|---|---|---|"]
    out += [f"| {row['model']} | {spread_correlation(row):+.2f} | {spread_split(row)} |" for row in rows]
    out += ["", "Full int8 with other range rules from the same calibration images (more room past their extremes "
            "as the extrapolation grows), on the evaluation images: dB (the worst 1% images' share of the error).",
            "", "| model | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for row in rows:
        out.append(f"| {row['model']} | " + " | ".join(
            f"{row['full_int8_rules'][rule]['db']:.2f} ({row['full_int8_rules'][rule]['worst_share']:.0%})"
            for rule in rules) + " |")
    out += ["", "The tensors the worst images overshoot most (median over those images):", ""]
    for row in rows:
        out += [f"- {row['model']} (chosen step: {', '.join(row['chosen_parts'])}): " + "; ".join(
            f"`{item['tensor']}` {item['worst_median_overshoot']:.2f} (at most {item['worst_max_overshoot']:.2f}; "
            f"the other images clip it in {item['rest_share_clipped']:.1%})" for item in row["listed"])]
    return out


def main(arguments=()):
    from error_tails import run_or_report

    run_or_report("tail_clipping", clipping, lines, arguments)


if __name__ == "__main__":
    main(sys.argv[1:])
