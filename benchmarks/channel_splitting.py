"""Outlier channel splitting inside the bottlenecks: an int8-only way to
give activations a finer grid (issue 27 asks for precision that costs
little latency; issue 23 for more than the range rule gives).

A ReLU tensor read by one convolution only (a bottleneck's first and second
outputs) can hold a channel as n copies of a 1/n-scaled channel: the
producing convolution's filter and bias are divided by n and repeated, the
consuming convolution's input weights repeated, exactly the same float
function (ReLU(x/n) summed n times is ReLU(x)), and the tensor's range, set
by its largest channel, shrinks. Each tensor gets copies for its largest
channels (by their maxima on the calibration images, one more copy at a time
to whichever channel is then largest) up to a fraction of its channels.

    .venv/bin/python benchmarks/channel_splitting.py

Models: the shipped demo ResNet-50 (w0.25) and the tests' ResNet-18 (w0.25),
each with a logits and a softmax head. Protocol "unseen" of
benchmarks/calibration.py (4 subsets of 200 calibration images from one half
of the held-out digits, evaluated on the other half), every route of a subset
calibrated on the very same images; output SQNR against the float Keras model.
Also: each bottleneck tensor's channel maxima on subset 1 (largest against
the tenth largest of ten), and the residual stream's.
Writes benchmarks/results/channel_splitting.{json,md}.
"""

import os
import sys
from pathlib import Path

import numpy as np

from common import machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
FRACTIONS = (0.125, 0.25)
RULES = (("minmax", {}), ("extrapolated", {"extrapolation": 0.25}))


def consumers_of(model):
    """{layer name: names of the layers that read its output}."""
    import keras

    readers = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in keras.tree.flatten(node.input_tensors):
                readers.setdefault(tensor._keras_history[0].name, []).append(layer.name)
    return readers


def splittable(model):
    """(producer convolution, its ReLU, the one convolution reading the ReLU) triples."""
    readers = consumers_of(model)

    def plain_conv(layer):
        return type(layer).__name__ == "Conv2D" and layer.groups == 1

    triples = []
    for layer in model.layers:
        after = readers.get(layer.name, [])
        if not plain_conv(layer) or len(after) != 1:
            continue
        relu = model.get_layer(after[0])
        if type(relu).__name__ != "Activation" or relu.activation.__name__ != "relu":
            continue
        reader = readers.get(relu.name, [])
        if len(reader) == 1 and plain_conv(model.get_layer(reader[0])):
            triples.append((layer.name, relu.name, reader[0]))
    return triples


def channel_maxima(model, layer_names, images):
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in layer_names])
    outputs = probe.predict(images, batch_size=50, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return {name: np.abs(values).reshape(-1, values.shape[-1]).max(0) for name, values in zip(layer_names, outputs)}


def copies_for(maxima, fraction):
    """Copies per channel: one more at a time to the channel largest after its split, `fraction` of the
    channels in all."""
    copies = np.ones(len(maxima), int)
    for _ in range(int(fraction * len(maxima))):
        copies[int(np.argmax(maxima / copies))] += 1
    return copies


def split_model(model, triples, copies_by_relu):
    """The same float function with each triple's channels held as copies_by_relu[relu] copies."""
    import keras

    plan = {}
    for producer, relu, reader in triples:
        copies = copies_by_relu[relu]
        order = np.concatenate([np.arange(len(copies))] + [np.full(count - 1, channel)
                                                            for channel, count in enumerate(copies) if count > 1])
        plan[producer] = (order, copies, relu, reader)
    config = model.get_config()
    reshaped = {name for producer, (_, _, relu, reader) in plan.items() for name in (relu, reader)}
    for layer in config["layers"]:
        name = layer["config"]["name"]
        if name in plan:
            layer["config"]["filters"] = len(plan[name][0])
        if name in reshaped:
            layer.pop("build_config", None)
    split = keras.Model.from_config(config)
    readers = {reader: (order, copies) for order, copies, _, reader in plan.values()}
    for layer in model.layers:
        weights = layer.get_weights()
        if layer.name in plan:
            order, copies = plan[layer.name][:2]
            weights = [weights[0][..., order] / copies[order], weights[1][order] / copies[order]]
        if layer.name in readers:
            weights = [weights[0][:, :, readers[layer.name][0], :]] + weights[1:]
        split.get_layer(layer.name).set_weights(weights)
    return split, sum(len(order) - len(copies) for order, copies, _, _ in plan.values())


def models():
    from trained import with_softmax

    from edge_resnet.model import demo
    from tests.digits import trained_digits_resnet

    for name, make in (("demo ResNet-50 w0.25 (shipped)", demo.build_demo_model),
                       ("ResNet-18 w0.25 (tests' model)", trained_digits_resnet)):
        model = make()
        yield f"{name}, logits head", model
        yield f"{name}, softmax head", with_softmax(model)


def int8_scores(float_model, calibration, test_images, reference):
    """{route: output SQNR} of the int8 TFLite for each fixed rule and `auto`."""
    from calibration import int8_tflite_outputs, sqnr_db

    from edge_resnet.quantize.int8_tflite import tflite_chooser
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.selection import resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics

    statistics = collect_statistics(float_model, calibration)
    scores = {}
    for method, parameters in RULES:
        rule = RangeMethod(method, **parameters)
        scores[rule.describe()] = sqnr_db(reference, int8_tflite_outputs(
            float_model, activation_ranges(statistics, rule), test_images))
    _, ranges, _ = resolved_ranges(statistics, RangeMethod("auto"), tflite_chooser(float_model, True, calibration))
    scores["auto"] = sqnr_db(reference, int8_tflite_outputs(float_model, ranges, test_images))
    return scores


def maxima_shape(model, images):
    """Per tensor kind: the median over tensors of (largest channel maximum / tenth largest of ten)."""
    relus = [relu for _, relu, _ in splittable(model)]
    stream = [layer.name for layer in model.layers if layer.name.endswith("_out")]
    maxima = channel_maxima(model, relus + stream, images)

    def ratio(values):
        ordered = np.sort(values)[::-1]
        return float(ordered[0] / ordered[len(ordered) // 10])

    return {"bottleneck ReLUs": float(np.median([ratio(maxima[name]) for name in relus])),
            "residual stream": float(np.median([ratio(maxima[name]) for name in stream]))}


def fidelity():
    from calibration import protocol_splits, sqnr_db

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.tflite import float_tflite

    rows = []
    for name, model in models():
        folded, _ = fold_batchnorm(model)
        triples = splittable(folded)
        float_model = float_tflite(folded)
        routes, extras, exactness, shape = {}, {}, [], None
        for index, (pixels, labels, test_pixels, _) in enumerate(protocol_splits(32, "unseen")):
            test_images = preprocess_input(test_pixels)
            reference = np.asarray(model.predict(test_images, batch_size=50, verbose=0))
            calibration = images_from_array(pixels, Preprocessing(32, 32), size=None, labels=labels).cached()
            calibration_images = preprocess_input(pixels)
            shape = shape or maxima_shape(folded, calibration_images)
            for route, value in int8_scores(float_model, calibration, test_images, reference).items():
                routes.setdefault(("as built", route), []).append(value)
            maxima = channel_maxima(folded, [relu for _, relu, _ in triples], calibration_images)
            for fraction in FRACTIONS:
                split, extra = split_model(folded, triples, {relu: copies_for(values, fraction)
                                                             for relu, values in maxima.items()})
                exactness.append(sqnr_db(reference, np.asarray(split.predict(test_images, batch_size=50, verbose=0))))
                extras[fraction] = extra
                for route, value in int8_scores(float_tflite(split), calibration, test_images, reference).items():
                    routes.setdefault((f"split, {fraction:g} of the channels", route), []).append(value)
            print(name, index, {key: values[-1] for key, values in routes.items()}, flush=True)
        rows.append({"model": name, "tensors": len(triples), "extra_channels": extras,
                     "float_exactness_db_min": float(min(exactness)), "channel_maxima": shape,
                     "routes": [{"model": variant, "rule": rule, "per_subset": values,
                                 "mean": float(np.mean(values))} for (variant, rule), values in routes.items()]})
    return rows


def means_of(row):
    return {(route["model"], route["rule"]): route["mean"] for route in row["routes"]}


def markdown(result):
    described = result["machine"]
    lines = ["# Outlier channel splitting inside the bottlenecks", "",
             "Command: `python benchmarks/channel_splitting.py`", "",
             f"Machine: {described['cpu']}, {described['cores']} cores, {', '.join(described['isa'])}. "
             "Output SQNR (dB, mean of the 4 subsets of the unseen protocol) of the int8 TFLite against the float "
             "Keras model, every route of a subset calibrated on the very same 200 images. The split model computes "
             "the same float function (its float SQNR against the original: the last column).", ""]
    variants = list(dict.fromkeys(route["model"] for route in result["rows"][0]["routes"]))
    rules = list(dict.fromkeys(route["rule"] for route in result["rows"][0]["routes"]))
    lines += ["| model | bottleneck tensors | " + " | ".join(f"{variant}: {rule}" for variant in variants
                                                           for rule in rules) + " | extra channels | float dB |",
              "|---|---|" + "---|" * (len(variants) * len(rules) + 2)]
    for row in result["rows"]:
        means = means_of(row)
        extras = ", ".join(f"{count}" for count in row["extra_channels"].values())
        lines.append(f"| {row['model']} | {row['tensors']} | "
                     + " | ".join(f"{means[(variant, rule)]:.2f}" for variant in variants for rule in rules)
                     + f" | {extras} | {row['float_exactness_db_min']:.0f} |")
    for variant in variants[1:]:
        changes = [means_of(row)[(variant, "auto")] - means_of(row)[(variants[0], "auto")] for row in result["rows"]]
        lines.append(f"\n{variant}, `auto` against the model as built: {np.mean(changes):+.2f} dB on average over "
                     f"the rows ({min(changes):+.2f} to {max(changes):+.2f}).")
    lines += ["", "Channel maxima on subset 1, median over the tensors of (largest channel's maximum / the tenth "
              "largest of ten): how much a tensor's range is one channel's.", "",
              "| model | bottleneck ReLUs | residual stream |", "|---|---|---|"]
    for row in result["rows"]:
        shape = row["channel_maxima"]
        lines.append(f"| {row['model']} | {shape['bottleneck ReLUs']:.2f} | {shape['residual stream']:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    result = {"machine": machine(), "rows": fidelity()}
    write_results("channel_splitting", result, markdown(result))


if __name__ == "__main__":
    main()
