"""Whether a softmax head's float32-parts search could be steered by its
logits: the search (mixed.search_float_parts) run on the softmax's input
(the int8 TFLite with it exposed as a second output), budget = full int8's
logits score + 3 dB on the held-out calibration images (cross-fitted), and
the chosen parts then judged on what the model outputs, the probabilities,
on the 397 evaluation images.

Why it could work where the probabilities failed (mixed_precision.md: on
softmax heads every gain rested on one or two images, so the search keeps
full int8): a float part lowers the logits' error on most images; a softmax
passes each image's logit error on scaled by how unsure it is of the image,
so k dB off every image's logits is k dB off the probabilities in
expectation, while the probabilities show it on the few unsure images only.

Three ways to score the logits:
- "logits": their SQNR pooled over images;
- "unclipped logits": the same, read from a copy of the classifier writing
  a tensor spanning the float logits' min/max, so a range rule clipping the
  softmax's input does not hide what float parts do upstream;
- "per-image logits": the mean over images of each image's SQNR, where no
  image weighs more than 1/200 of its own change (the search's fragility
  gate is off for it, as no image dominates it).

Not shipped: see benchmarks/results/mixed_logits.md.

    python benchmarks/mixed_logits.py [STEERING...]    writes benchmarks/results/mixed_logits.{json,md}
                                                       (per-image logits unless named)
"""

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import machine, write_results  # noqa: E402
from mixed_precision import BUDGET_OVER_FULL_INT8_DB, digits  # noqa: E402

HERE = Path(__file__).resolve().parent
STEERINGS = ("logits", "unclipped logits", "per-image logits")


def softmax_models():
    """The softmax twins of mixed_precision.py's models, then three models
    that benchmark has never run (the tests' ResNet-18, and the ResNet-101
    and ResNet-152 of the calibration benchmarks)."""
    from mixed_precision import trained_models
    from trained import logit_scoring_resnet101, temperature_scoring_resnet152, with_softmax

    from tests.digits import trained_digits_resnet

    for name, model, size, depth in trained_models():
        if name.endswith("softmax head"):
            yield name, model, size, depth
    yield "ResNet-18 w0.25 32x32 (tests' model, new here), softmax head", with_softmax(trained_digits_resnet()), 32, 18
    yield "ResNet-101 w0.25 32x32 seed 23 (new here), softmax head", with_softmax(logit_scoring_resnet101()), 32, 101
    yield ("ResNet-152 w0.25 32x32 seed 29 (new here), softmax head", with_softmax(temperature_scoring_resnet152()),
           32, 152)


def both_outputs(model_bytes, images):
    """(probabilities, logits) of a softmax-head TFLite on `images`."""
    from edge_resnet.quantize.int8_tflite import tflite_outputs_and_logits

    return tflite_outputs_and_logits(model_bytes, images)


def unclipped_logits(model_bytes, images, low, high):
    """The logits of a softmax-head int8 TFLite on `images` as a copy of the
    operator writing them computes them into a tensor spanning [low, high]
    (the float logits' min/max): what the network upstream gets wrong, free
    of the clipping a range rule gives the softmax's input."""
    import copy

    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.quantize.statistics import flatbuffer_bytes, read_flatbuffer
    from edge_resnet.quiet import native_output_silenced

    model = read_flatbuffer(model_bytes)
    graph = model.subgraphs[0]
    softmax = next(op for op in graph.operators if graph.outputs[0] in op.outputs)
    logits = softmax.inputs[0]
    writer = next(op for op in graph.operators if logits in op.outputs)
    twin = copy.deepcopy(graph.tensors[logits])
    scale = (high - low) / 255.0
    twin.name = twin.name + b"_unclipped"
    twin.quantization.scale = np.array([scale], np.float32)
    twin.quantization.zeroPoint = np.array([int(round(-128 - low / scale))], np.int64)
    twin.quantization.min = twin.quantization.max = None
    graph.tensors.append(twin)
    operator = copy.deepcopy(writer)
    operator.outputs = [len(graph.tensors) - 1]
    graph.operators.append(operator)
    graph.outputs = [len(graph.tensors) - 1]
    with native_output_silenced():
        return TfliteRunner("unclipped", content=flatbuffer_bytes(model)).predict(images)


def per_image_mean_db(reference, outputs):
    """The mean over images of each image's SQNR (dB): a float part that
    lowers every image's error by k dB raises it by k, and one image's error
    moves it by a 200th of that image's change, so no image dominates it."""
    reference, outputs = np.asarray(reference, np.float64), np.asarray(outputs, np.float64)
    signal = np.sum(reference.reshape(len(reference), -1) ** 2, axis=1)
    noise = np.sum((reference - outputs).reshape(len(reference), -1) ** 2, axis=1)
    return float(np.mean(10 * np.log10(signal / np.maximum(noise, signal * 1e-12))))


def measure(name, model, size, depth, steering="logits"):
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import int8_tflite, tflite_chooser
    from edge_resnet.quantize.mixed import Budget, Route, cross_fits, search_float_parts, tflite_route
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.selection import calibration_inputs, output_sqnr_db, resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(fold_batchnorm(model)[0])
    calibration, evaluation = digits(size)
    statistics = collect_statistics(float_model, calibration)
    method, ranges, _ = resolved_ranges(statistics, RangeMethod("auto"), tflite_chooser(float_model, True, calibration))
    recipe = QuantizationRecipe()
    inputs = calibration_inputs(calibration, statistics)
    float_probabilities, float_logits = both_outputs(float_model, inputs)

    def held_out(scopes):
        """(probabilities, logits) of every calibration image, each by ranges fitted without its fold."""
        probabilities, logits = np.empty_like(float_probabilities), np.empty_like(float_logits)
        for fold_ranges, positions in cross_fits(statistics, method):
            probabilities[positions], logits[positions] = both_outputs(
                int8_tflite(float_model, fold_ranges, recipe, scopes), inputs[positions])
        return probabilities, logits

    full_probabilities, full_logits = held_out(())
    full_steered_db = output_sqnr_db(float_logits, full_logits)
    if steering == "unclipped logits":
        full_steered = np.empty_like(float_logits)
        for fold_ranges, positions in cross_fits(statistics, method):
            full_steered[positions] = unclipped_logits(int8_tflite(float_model, fold_ranges, recipe), inputs[positions],
                                                       float(float_logits.min()), float(float_logits.max()))
        full_steered_db = output_sqnr_db(float_logits, full_steered)
    base = tflite_route(float_model, recipe)
    low, high = float(float_logits.min()), float(float_logits.max())
    steered_outputs = {"logits": lambda artifact, images: both_outputs(artifact, images)[1],
                       "unclipped logits": lambda artifact, images: unclipped_logits(artifact, images, low, high)}
    steered_outputs["per-image logits"] = steered_outputs["logits"]
    on_logits = Route(base.parts,
                      lambda fold_ranges, scopes, demoted=(): int8_tflite(float_model, fold_ranges, recipe, scopes),
                      steered_outputs[steering], ".tflite", base.structure,
                      base.head_output_type, base.weighted)
    if steering == "per-image logits":
        import edge_resnet.quantize.mixed as mixed

        full_steered_db = per_image_mean_db(float_logits, full_logits)
        mixed.output_sqnr_db = per_image_mean_db  # what mixed.scores ranks by
        mixed.images_carrying_half_the_gain = lambda *_: len(inputs)  # no image dominates a mean of per-image dB
    steered = dataclasses.replace(statistics, float_outputs=float_logits)
    started = time.perf_counter()
    search = search_float_parts(float_model, steered, calibration, recipe, method,
                                Budget(min_sqnr=full_steered_db + BUDGET_OVER_FULL_INT8_DB), log=print, route=on_logits)
    seconds = time.perf_counter() - started
    scopes = search.float_scopes()
    mixed_probabilities, mixed_logits = held_out(scopes)
    evaluation_float = both_outputs(float_model, evaluation)
    evaluation_full = both_outputs(int8_tflite(float_model, ranges, recipe), evaluation)
    evaluation_mixed = both_outputs(int8_tflite(float_model, ranges, recipe, scopes), evaluation)
    result = {"model": name, "steering": steering, "rule": method.describe(), "steering_budget_db": full_steered_db + BUDGET_OVER_FULL_INT8_DB,
              "met_on_steering": search.met, "float_parts": list(search.chosen.float_parts),
              "int8_operators": list(search.chosen.int8_operators), "float_operators": search.chosen.float_operators,
              "search_seconds": seconds,
              "held_out_db": {
                  "probabilities": [output_sqnr_db(float_probabilities, full_probabilities),
                                    output_sqnr_db(float_probabilities, mixed_probabilities)],
                  "steering": [search.steps[0].sqnr_db, search.chosen.sqnr_db],
                  "logits": [output_sqnr_db(float_logits, full_logits), output_sqnr_db(float_logits, mixed_logits)]},
              "evaluation_db": {
                  "probabilities": [output_sqnr_db(evaluation_float[0], evaluation_full[0]),
                                    output_sqnr_db(evaluation_float[0], evaluation_mixed[0])],
                  "logits": [output_sqnr_db(evaluation_float[1], evaluation_full[1]),
                             output_sqnr_db(evaluation_float[1], evaluation_mixed[1])],
                  "per-image logits": [per_image_mean_db(evaluation_float[1], evaluation_full[1]),
                                       per_image_mean_db(evaluation_float[1], evaluation_mixed[1])]}}
    result["evaluation_gain_interval_db"] = bootstrap_gain(evaluation_float[0], evaluation_full[0], evaluation_mixed[0])
    print(result, flush=True)
    return result


def bootstrap_gain(reference, before, after, draws=2000):
    """The 5th and 95th percentiles of the probabilities' SQNR gain from
    `before` to `after` over evaluation sets drawn with replacement from
    these images: how much of a gain measured on 397 images is the images."""
    from auto_rules import db, per_image

    signal, noise_before = per_image(reference, before)
    _, noise_after = per_image(reference, after)
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(draws):
        drawn = rng.integers(0, len(signal), len(signal))
        gains.append(db(signal[drawn], noise_after[drawn]) - db(signal[drawn], noise_before[drawn]))
    return [float(np.percentile(gains, 5)), float(np.percentile(gains, 95))]


def markdown(results, info):
    lines = ["# A softmax head's float32-parts search steered by its logits", "",
             "Command: `python benchmarks/mixed_logits.py [STEERING...]` (benchmarks/mixed_logits.py says what each "
             "steering scores)", "",
             f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, {', '.join(info.get('isa', []))}. "
             "Calibration and evaluation as in mixed_precision.md (200 digits the models never trained on, the "
             "other 397), `auto` ranges. The search runs on the steering score of the logits (the softmax's input), "
             f"budget = full int8's + {BUDGET_OVER_FULL_INT8_DB:g} dB on the held-out calibration images "
             "(cross-fitted); the chosen parts are then judged on the probabilities. Cells: full int8 -> mixed, dB. "
             "Estimated gain: what the steering score gained on the held-out images, the probabilities' gain if "
             "every image's logit error fell alike.", "",
             "| model | steering | float parts (operators) | held-out steering score | held-out probabilities | "
             "evaluation probabilities | probabilities gain on evaluation: estimated, measured | search s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        held, evaluated = r["held_out_db"], r["evaluation_db"]

        def pair(values):
            return f"{values[0]:.2f} -> {values[1]:.2f}"
        lines.append(f"| {r['model']} | {r['steering']} | {len(r['float_parts'])} ({r['float_operators']})"
                     f"{': ' if r['float_parts'] else ''}{', '.join(r['float_parts'])} | {pair(held['steering'])} | "
                     f"{pair(held['probabilities'])} | {pair(evaluated['probabilities'])} | "
                     f"{held['steering'][1] - held['steering'][0]:+.2f}, "
                     f"{evaluated['probabilities'][1] - evaluated['probabilities'][0]:+.2f}{interval(r)} | "
                     f"{r['search_seconds']:.0f} |")
    lines += ["", "Per steering, over the models where the search kept any part in float32: the mean gain on the "
              "held-out images (the estimate), and on the evaluation images in the probabilities and in the steering "
              "score.", "",
              "| steering | models | parts kept | estimated gain | evaluation probabilities gain (worst) | "
              "evaluation steering gain |", "|---|---|---|---|---|---|"]
    for steering in STEERINGS:
        rows = [r for r in results if r["steering"] == steering]
        moved = [r for r in rows if r["float_parts"]]
        if not rows:
            continue
        estimated = [r["held_out_db"]["steering"][1] - r["held_out_db"]["steering"][0] for r in moved]
        measured = [r["evaluation_db"]["probabilities"][1] - r["evaluation_db"]["probabilities"][0] for r in moved]
        score = "per-image logits" if steering == "per-image logits" else "logits"
        steered = [r["evaluation_db"][score][1] - r["evaluation_db"][score][0] for r in moved]

        def mean(values):
            return f"{np.mean(values):+.2f}" if values else "-"
        lines.append(f"| {steering} | {len(rows)} | {len(moved)} | {mean(estimated)} | {mean(measured)}"
                     f"{f' ({min(measured):+.2f})' if measured else ''} | {mean(steered)} |")
    return "\n".join(lines) + "\n"


def interval(result):
    """The bootstrap interval of the evaluation gain, for a table cell (rows measured before it have none)."""
    low_high = result.get("evaluation_gain_interval_db")
    return f" ({low_high[0]:+.2f} to {low_high[1]:+.2f})" if low_high else ""


def main(steerings=()):
    import json

    saved = HERE / "results" / "mixed_logits.json"
    results = json.loads(saved.read_text())["results"] if saved.exists() else []
    done = {(result["model"], result["steering"]) for result in results}
    for name, model, size, depth in softmax_models():
        for steering in steerings or ("per-image logits",):
            assert steering in STEERINGS, f"steerings: {STEERINGS}"
            if (name, steering) not in done:
                results.append(measure(name, model, size, depth, steering))
    info = machine()
    write_results("mixed_logits", {"machine": info, "results": results}, markdown(results, info))


if __name__ == "__main__":
    main(sys.argv[1:])
