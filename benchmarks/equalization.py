"""Per-channel activation equalization before int8: does it lift full int8?

A tensor whose channels span very different ranges shares one int8 grid
(activations are quantized per tensor), so its small channels get few
levels. Scaling channel c of such a tensor by s_c (its producers' output
weights and biases times s_c, its consuming convolutions' input weights
divided by s_c; exact in float through ReLU, max pooling, padding,
additions and average pooling, all positive-homogeneous) gives every
channel the tensor's range, and moves the rounding into the consumers'
per-output-channel weight grid instead. s_c = (largest channel range /
channel c's range) ** exponent, ranges from the calibration images.

Groups scaled: "inside blocks" (a convolution -> ReLU -> convolution
tensor), "residual streams" (a stage's additions with the convolutions
that write them and read them). Models: the shipped demo ResNet-50 (w0.25)
and the tests' ResNet-18, logits heads; the unseen protocol of
benchmarks/calibration.py (200 held-out digits calibrate, the other half
evaluates), its first two subsets, output SQNR against the float Keras
model.

    .venv/bin/python benchmarks/equalization.py

Writes benchmarks/results/equalization.{json,md}.
"""

import importlib.util
import os
from pathlib import Path

import numpy as np
from common import machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
SUBSETS = (0, 1)
VARIANTS = (("none", None, None), ("inside blocks", "inside", 0.5), ("inside blocks", "inside", 1.0),
            ("residual streams", "stream", 0.5), ("residual streams", "stream", 1.0))
TINY_CHANNEL = 1e-3  # a channel whose range is below this share of the largest is left unscaled


def calibration_benchmark():
    spec = importlib.util.spec_from_file_location("calibration_benchmark", HERE / "calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def passes_scale(layer):
    """Whether a layer's output is its input's, channel for channel, under a positive per-channel scale."""
    import keras

    if isinstance(layer, (keras.layers.Add, keras.layers.MaxPooling2D, keras.layers.ZeroPadding2D,
                          keras.layers.GlobalAveragePooling2D)):
        return True
    return isinstance(layer, keras.layers.Activation) and layer.get_config()["activation"] in ("relu", "linear")


def producers_of(layer):
    return [node.operation for node in layer._inbound_nodes[0].parent_nodes] if layer._inbound_nodes else []


def is_weighted(layer):
    import keras

    return type(layer) in (keras.layers.Conv2D, keras.layers.Dense)


def scalable_groups(model):
    """[(layers whose outputs share one channel scale, their producers, their consumers, holds an addition)]:
    the tensors joined by scale-passing layers, where every producer and consumer is a Conv2D or Dense
    (linear or ReLU) and no tensor is the model's output."""
    import keras

    root = {}

    def find(name):
        while root.setdefault(name, name) != name:
            name = root[name]
        return name

    for layer in model.layers:
        find(layer.name)
        if passes_scale(layer):
            for producer in producers_of(layer):
                root[find(layer.name)] = find(producer.name)
    members, consumers = {}, {}
    for layer in model.layers:
        members.setdefault(find(layer.name), []).append(layer)
        if not passes_scale(layer):
            for producer in producers_of(layer):
                consumers.setdefault(find(producer.name), []).append(layer)
    outputs = {tensor._keras_history[0].name for tensor in model.outputs}
    groups = []
    for key, layers in members.items():
        sources = [layer for layer in layers if not passes_scale(layer)]
        readers = consumers.get(key, [])
        linear = all(is_weighted(layer) and layer.get_config().get("activation") in ("linear", "relu")
                     for layer in sources)
        if readers and linear and all(is_weighted(layer) for layer in readers) and \
                not any(layer.name in outputs for layer in layers):
            groups.append((layers, sources, readers, any(isinstance(layer, keras.layers.Add) for layer in layers)))
    return groups


def channel_scales(ranges, exponent):
    largest = ranges.max()
    return np.where(ranges > largest * TINY_CHANNEL, (largest / np.maximum(ranges, 1e-30)) ** exponent,
                    1.0).astype(np.float32)


def equalized(folded, images, kind, exponent):
    """A copy of `folded` with the groups of `kind` ("inside" or "stream") equalized on `images`."""
    import keras

    groups = [group for group in scalable_groups(folded) if group[3] == (kind == "stream")]
    watched = [layer for layers, *_ in groups for layer in layers
               if not isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    values = keras.Model(folded.inputs, [layer.output for layer in watched]).predict(images, batch_size=50, verbose=0)
    channel_range = {layer.name: np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
                     for layer, value in zip(watched, values)}
    model = keras.models.clone_model(folded)
    model.set_weights(folded.get_weights())
    for layers, sources, readers, _ in groups:
        scale = channel_scales(np.max([channel_range[layer.name] for layer in layers if layer.name in channel_range],
                                      axis=0), exponent)
        for layer in sources:
            kernel, bias = model.get_layer(layer.name).get_weights()
            model.get_layer(layer.name).set_weights([kernel * scale, bias * scale])
        for layer in readers:
            kernel, *rest = model.get_layer(layer.name).get_weights()
            per_input = scale[None, None, :, None] if kernel.ndim == 4 else scale[:, None]
            model.get_layer(layer.name).set_weights([kernel / per_input, *rest])
    return model, len(groups)


def measure(bench, name, model, size):
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    folded, _ = fold_batchnorm(model)
    rules = (RangeMethod("minmax"), RangeMethod("extrapolated", extrapolation=0.25))
    rows = {}
    for index, (pixels, labels, test_pixels, _) in enumerate(bench.protocol_splits(size, "unseen")):
        if index not in SUBSETS:
            continue
        test_images = preprocess_input(test_pixels)
        reference = np.asarray(model.predict(test_images, batch_size=50, verbose=0))
        calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=labels).cached()
        images = np.stack(list(calibration.samples()))
        for label, kind, exponent in VARIANTS:
            variant, groups = (folded, 0) if kind is None else equalized(folded, images, kind, exponent)
            row = rows.setdefault(f"{label}" + ("" if exponent is None else f", exponent {exponent:g}"),
                                  {"groups": groups, "float_sqnr_db": [], "int8_sqnr_db": {}})
            row["float_sqnr_db"].append(bench.sqnr_db(reference, variant.predict(test_images, verbose=0)))
            float_model = float_tflite(variant)
            statistics = collect_statistics(float_model, calibration)
            for rule in rules:
                outputs = bench.int8_tflite_outputs(float_model, activation_ranges(statistics, rule), test_images)
                row["int8_sqnr_db"].setdefault(rule.describe(), []).append(bench.sqnr_db(reference, outputs))
        print(name, index, {key: value["int8_sqnr_db"] for key, value in rows.items()}, flush=True)
    return {"model": name, "rows": rows}


def markdown(results, described):
    lines = ["# Per-channel activation equalization before int8", "",
             "Command: `python benchmarks/equalization.py`", "",
             f"Machine: {described['cpu']}, {described['cores']} cores. Output SQNR (dB) of the int8 TFLite against "
             "the float Keras model, mean of the unseen protocol's first two calibration subsets (per subset in "
             "brackets); float: the equalized float model against the original (exactness of the rewrite).", "",
             "| model | equalized | groups | float dB | int8, minmax | int8, extrapolated 0.25 |",
             "|---|---|---|---|---|---|"]
    for result in results:
        for label, row in result["rows"].items():
            cells = [f"{np.mean(values):.2f} ({', '.join(f'{value:.2f}' for value in values)})"
                     for values in row["int8_sqnr_db"].values()]
            lines.append(f"| {result['model']} | {label} | {row['groups']} | {min(row['float_sqnr_db']):.0f} | "
                         f"{' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main():
    use_repo_imports()
    from edge_resnet.model import demo
    from tests.digits import trained_digits_resnet

    bench = calibration_benchmark()
    results = [measure(bench, name, make(), 32) for name, make in
               (("demo ResNet-50 w0.25 (shipped), logits head", demo.build_demo_model),
                ("ResNet-18 w0.25 (tests' model), logits head", trained_digits_resnet))]
    described = machine()
    write_results("equalization", {"machine": described, "results": results}, markdown(results, described))


if __name__ == "__main__":
    main()
