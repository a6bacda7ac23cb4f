"""Does empirical bias correction of the activations' int8 error help? A
lever that would cost no latency, measured before deciding whether to ship
it (issues 23 and 27).

    python benchmarks/activation_bias.py [MODEL SUBSTRING...]

(with substrings: those models measured again, the saved rows of the others kept;
`cost`: the correction's seconds at ResNet-50 224;
`fast` first: corrected_int8 (the same correction at less cost), every model of both data sets;
`fifty` first: part by part on the first 50 calibration images, every model of both data sets;
`mnist` first: the ResNet-50s trained on the MNIST sample, calibrated on 200
of the images they never trained on and evaluated on the other 2300, as in
mixed_precision.py; `passes` first: the cheaper forms below on every model of
both data sets, added to the saved rows)

bias_correction.py corrected the bias for weight rounding alone. Here the
whole int8 network runs upstream: part by part in graph order (stem, each
residual block, head), every convolution and the classifier of the part get
their bias shifted by the mean per channel of (float output - int8 output)
over the 200 calibration images, measured on the int8 TFLite whose earlier
parts are already corrected, then the next part is measured (on a softmax
head, not the classifier: the floor of its int8 range clips logits the
softmax ignores, and the first run, which corrected it, moved the four
digits softmax heads by -0.6 to -14.8 dB there). "plain" shifts
by that mean; "by active share" divides it by the share of the channel's
float outputs above zero where a ReLU is fused (the mean after a ReLU sees
only the active outputs' shift). The ranges stay those `auto` chose on the
uncorrected model. Scored as mixed_precision.py scores: the calibration
images (the correction saw them) and the 397 evaluation digits (it did not).
Writes benchmarks/results/activation_bias.{json,md}.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

VARIANTS = ("plain", "by active share")
FAST = "plain, int8 biases shifted in place"  # corrected_int8: the int8 model built once, each part run cut after it
# (passes over the whole network, None: part by part; images used, None: all): the cheaper forms (`passes`):
# every part corrected at once from one run of the int8 model, twice over (the second pass corrects what the
# first left or overshot); part by part on the first 50 calibration images
SCHEDULES = {"plain": (None, None), "by active share": (None, None), "whole network, 1 pass": (1, None),
             "whole network, 2 passes": (2, None), "whole network, 2 passes, 50 images": (2, 50),
             "plain, first 50 images": (None, 50), FAST: (None, None)}
# the variants each later part of the command line measures on both data sets
LATER_VARIANTS = {"passes": ("whole network, 1 pass", "whole network, 2 passes", "whole network, 2 passes, 50 images"),
                  "fifty": ("plain, first 50 images",), "fast": (FAST,)}
LEAST_ACTIVE_SHARE = 0.25  # a channel rarely active would have its shift multiplied without bound


def with_bias_shift(float_model, shifts):
    """The float TFLite with {output tensor name: per-channel shift} added to those operators' biases."""
    from edge_resnet.quantize.statistics import flatbuffer_bytes, read_flatbuffer

    from edge_resnet.quantize.bias_correction import biases_by_output

    model = read_flatbuffer(float_model)
    for name, bias in biases_by_output(model.subgraphs[0]).items():  # a layer without a bias keeps none
        if name in shifts:
            values = np.frombuffer(bytes(model.buffers[bias.buffer].data), np.float32) + shifts[name]
            model.buffers[bias.buffer].data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
    return flatbuffer_bytes(model)


def channel_means(model_bytes, images, names):
    """{tensor name: (mean of each channel, share of each channel's values above zero, any value below zero)}
    of the tensors `names` of the model (float or int8, dequantized) run on `images`."""
    from edge_resnet.check.layer_debug import tensor_values

    sums, active, signed, rows = {}, {}, {}, {}
    for values in tensor_values(model_bytes, images, set(names)):
        for name in names:
            flat = values[name].reshape(-1, values[name].shape[-1]).astype(np.float64)
            sums[name] = sums.get(name, 0) + flat.sum(axis=0)
            active[name] = active.get(name, 0) + (flat > 0).sum(axis=0)
            signed[name] = signed.get(name, False) or bool((flat < 0).any())
            rows[name] = rows.get(name, 0) + flat.shape[0]  # tensors differ in positions per image
    return {name: (sums[name] / rows[name], active[name] / rows[name], signed[name]) for name in names}


def channel_shifts(float_means, int8_means, variant):
    """{tensor name: the per-channel bias shift}: float mean - int8 mean, per `variant`."""
    shifts = {}
    for name, (int8_mean, _, _) in int8_means.items():
        float_mean, active, signed = float_means[name]
        shift = float_mean - int8_mean
        if variant == "by active share" and not signed:
            shift = shift / np.maximum(active, LEAST_ACTIVE_SHARE)
        shifts[name] = shift
    return shifts


def part_groups(float_model):
    """Per part of the network, in graph order, the output tensors whose
    operators' biases are corrected: the library's correction_parts (every
    convolution and the classifier, but an output softmax's input)."""
    from edge_resnet.quantize.bias_correction import correction_parts

    return [list(names) for names, _ in correction_parts(float_model)]


def corrected(float_model, ranges, recipe, images, variant):
    """The float TFLite with its biases corrected part by part, in graph
    order (or as `variant`'s schedule says; part_groups says which)."""
    from edge_resnet.quantize.int8_tflite import int8_tflite

    passes, count = SCHEDULES[variant]
    images = images[:count]
    groups = part_groups(float_model)
    in_graph_order = [name for names in groups for name in names]
    if passes:
        groups = [in_graph_order] * passes
    float_means = channel_means(float_model, images, in_graph_order)
    shifts = {}
    for names in groups:
        current = int8_tflite(with_bias_shift(float_model, shifts), ranges, recipe)
        for name, shift in channel_shifts(float_means, channel_means(current, images, names), variant).items():
            shifts[name] = shifts.get(name, 0) + shift
    return with_bias_shift(float_model, shifts)


def cut_after(model, names):
    """The bytes of the model object `model` cut after the last operator writing one of the tensors `names`:
    those tensors its outputs, nothing after them run."""
    import copy

    from edge_resnet.quantize.statistics import flatbuffer_bytes

    cut = copy.copy(model)
    graph = copy.copy(model.subgraphs[0])
    writers = [position for position, op in enumerate(graph.operators)
               if graph.tensors[op.outputs[0]].name.decode() in names]
    graph.operators = graph.operators[:max(writers) + 1]
    graph.outputs = [op.outputs[0] for op in graph.operators if graph.tensors[op.outputs[0]].name.decode() in names]
    cut.subgraphs = [graph]
    return flatbuffer_bytes(cut)


def corrected_int8(float_model, ranges, recipe, images):
    """The int8 TFLite corrected part by part as "plain" does, at less cost: the float model run once, the
    int8 model built once and its int32 biases shifted in place, each part measured on the model cut after it."""
    from edge_resnet.quantize.bias_correction import shift_biases
    from edge_resnet.quantize.int8_tflite import int8_tflite
    from edge_resnet.quantize.statistics import flatbuffer_bytes, read_flatbuffer

    groups = part_groups(float_model)
    float_means = channel_means(float_model, images, [name for names in groups for name in names])
    model = read_flatbuffer(int8_tflite(float_model, ranges, recipe))
    for names in groups:
        shift_biases(model, channel_shifts(float_means, channel_means(cut_after(model, set(names)), images,
                                                                            names), "plain"))
    return flatbuffer_bytes(model)


def correction_cost():
    """Seconds at ResNet-50 224 (random weights, as mixed_precision.py times) on 200 images: one int8 build,
    the part-by-part correction as "plain" runs it, and corrected_int8."""
    import time

    from mixed_precision import network_at_224

    from edge_resnet.quantize.int8_tflite import int8_tflite
    from edge_resnet.quantize.recipe import QuantizationRecipe

    float_model, ranges, _, _, _ = network_at_224(50)
    recipe = QuantizationRecipe()
    images = np.random.default_rng(1).normal(size=(200, 224, 224, 3)).astype(np.float32)
    seconds = {}
    for label, run in (("int8 build", lambda: int8_tflite(float_model, ranges, recipe)),
                       ("plain", lambda: corrected(float_model, ranges, recipe, images, "plain")),
                       (FAST, lambda: corrected_int8(float_model, ranges, recipe, images))):
        started = time.perf_counter()
        run()
        seconds[label] = time.perf_counter() - started
    return {"seconds_200_images": seconds, "machine": machine()}


def measure(name, model, size, data, variants):
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import int8_tflite, run_tflite_bytes, tflite_chooser
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.selection import output_sqnr_db, resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(fold_batchnorm(model)[0])
    calibration, evaluation = data(size)
    images = np.stack(list(calibration.samples()))
    recipe = QuantizationRecipe()
    method, ranges, _ = resolved_ranges(collect_statistics(float_model, calibration), recipe.range_method(),
                                        tflite_chooser(float_model, recipe.per_channel, calibration))
    references = {"calibration": run_tflite_bytes(float_model, images, "float"),
                  "evaluation": run_tflite_bytes(float_model, evaluation, "float")}
    inputs = {"calibration": images, "evaluation": evaluation}

    def scores(content):
        return {split: output_sqnr_db(references[split], run_tflite_bytes(content, inputs[split], "int8"))
                for split in inputs}

    row = {"model": name, "ranges": method.describe(), "full int8": scores(int8_tflite(float_model, ranges, recipe))}
    for variant in variants:
        row[variant] = scores(corrected_int8(float_model, ranges, recipe, images) if variant == FAST else
                              int8_tflite(corrected(float_model, ranges, recipe, images, variant), ranges, recipe))
    print(row, flush=True)
    return row


def markdown(result):
    variants = [variant for variant in SCHEDULES if any(variant in row for row in result["rows"])]
    lines = ["# Empirical bias correction of the int8 activations' error", "",
             "Commands, in this order (a later one measures its rows again): "
             + ", ".join(f"`{command}`" for command in result["commands"]), "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. Output SQNR (dB) of the int8 "
             "TFLite against the float model, `auto` ranges; calibration: the 200 digits the correction was measured "
             "on; evaluation: the 397 others (mixed_precision.py's split; MNIST rows: the 2300 others). Cells: "
             "calibration / evaluation.", "",
             "| model | ranges | full int8 | " + " | ".join(variants) + " |", "|---|---|---|" + "---|" * len(variants)]
    for row in result["rows"]:
        cells = [f"{row[key]['calibration']:.2f} / {row[key]['evaluation']:.2f}" if key in row else "-"
                 for key in ("full int8", *variants)]
        lines.append(f"| {row['model']} | {row['ranges']} | " + " | ".join(cells) + " |")
    for variant in variants:
        changes = [row[variant]["evaluation"] - row["full int8"]["evaluation"] for row in result["rows"]
                   if variant in row]
        lines += ["", f"{variant}: evaluation change {np.mean(changes):+.2f} dB on average "
                      f"({min(changes):+.2f} to {max(changes):+.2f}), better on {sum(c > 0 for c in changes)} "
                      f"of {len(changes)} rows."]
    if "first_run_softmax_classifier_corrected" in result:
        moves = [row["plain"]["evaluation"] - row["full int8"]["evaluation"]
                 for row in result["first_run_softmax_classifier_corrected"]]
        lines += ["", "The first run (`python benchmarks/activation_bias.py`, before the softmax's input was left "
                      "alone) corrected a softmax head's classifier too: plain moved the four digits softmax heads by "
                      + ", ".join(f"{move:+.2f}" for move in moves) + " dB on the evaluation images (its rows kept in "
                      "the JSON as `first_run_softmax_classifier_corrected`)."]
    if "cost_50_images_earlier" in result:
        earlier = result["cost_50_images_earlier"]
        lines += ["", f"Earlier (`{result['cost_50_images_earlier_command']}`, 50 images): plain "
                      f"{earlier['correction_50_images_s']:.1f} s, one int8 build {earlier['int8_build_s']:.1f} s."]
    if "cost" in result:
        cost = result["cost"]
        lines += ["", f"Cost (`{result['cost_command']}`; {cost['machine']['cpu']}), ResNet-50 at 224, 200 images: "
                      + ", ".join(f"{label} {value:.1f} s" for label, value in cost["seconds_200_images"].items())
                      + "."]
    return "\n".join(lines) + "\n"


def main(only):
    from mixed_precision import digits, mnist_images, mnist_models, trained_models

    saved = RESULTS / "activation_bias.json"
    earlier = json.loads(saved.read_text()) if only and saved.exists() else {"rows": [], "commands": []}
    command = "python benchmarks/activation_bias.py" + "".join(f" {part!r}" for part in only)
    if only == ["cost"]:
        result = {**earlier, "cost": correction_cost(), "cost_command": command}
        write_results("activation_bias", result, markdown(result))
        return
    digits_models, mnist = (trained_models, digits), (mnist_models, mnist_images)
    if only[:1] and only[0] in LATER_VARIANTS:
        variants, sources, names = LATER_VARIANTS[only[0]], [digits_models, mnist], only[1:]
    elif only[:1] == ["mnist"]:
        variants, sources, names = VARIANTS, [mnist], only[1:]
    else:
        variants, sources, names = VARIANTS, [digits_models], only
    measured = {name: measure(name, model, size, data, variants) for models, data in sources
                for name, model, size, _ in models() if not names or any(part in name for part in names)}
    rows = [{**row, **measured.pop(row["model"], {})} for row in earlier["rows"]] + list(measured.values())
    result = {**earlier, "commands": [*earlier["commands"], command], "machine": machine(), "rows": rows}
    write_results("activation_bias", result, markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
