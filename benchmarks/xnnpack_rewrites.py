"""Operators XNNPACK has no int8 kernel for, in trained networks: the
TFLite converter's graph against the one edge-resnet makes its int8 models
from (edge_resnet/quantize/xnnpack_rewrites.py).

    .venv/bin/python benchmarks/xnnpack_rewrites.py [NETWORK ...]

(NETWORK: the start of a network's name; the others keep their rows from
the last run's JSON.)

Networks (keras.applications, 32x32 unless named, logits heads, trained on digits
0..1199, seeded, their BatchNormalization statistics then taken from those
images in one pass; a few minutes in all):
- MobileNetV3Small (alpha 0.75, its preprocessing inside, 12 epochs):
  hard-swish, which the converter fuses into HARD_SWISH;
- DenseNet121 (pixels / 255, 4 epochs): average pooling in its transitions;
- InceptionV3 (75x75, its smallest, pixels / 255, 4 epochs): 3x3 average
  poolings that pad (SAME, stride 1), which TFLite averages over the inputs
  inside the image only;
- NASNetMobile (pixels / 255, 4 epochs): such poolings, strided 1x1 ones,
  and cells that join six tensors in one CONCATENATION (XNNPACK joins at
  most five).
The 597 digits they never trained on: the first 200 calibrate, the other
397 evaluate (output SQNR against the Keras model). For each graph: the
int8 TFLite made by edge-resnet from it (minmax and auto ranges), how many
pieces XNNPACK runs it in, and batch-1 latency (2 threads) of the float32
and int8 models in interleaved rounds. Writes
benchmarks/results/xnnpack_rewrites.{json,md}.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import RESULTS, interleaved_medians, isa_note, machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SIZE = 32


def mobilenet_v3():
    import keras

    return keras.applications.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None, classes=10, alpha=0.75,
                                               classifier_activation=None, include_preprocessing=True,
                                               dropout_rate=0.0)


def densenet():
    import keras

    return keras.applications.DenseNet121(input_shape=(SIZE, SIZE, 3), weights=None, classes=10,
                                          classifier_activation=None)


def inception_v3(size):
    import keras

    return keras.applications.InceptionV3(input_shape=(size, size, 3), weights=None, classes=10,
                                          classifier_activation=None)


def nasnet_mobile():
    import keras

    return keras.applications.NASNetMobile(input_shape=(SIZE, SIZE, 3), weights=None, classes=10,
                                           classifier_activation=None)


# name, network, epochs, pixel scale the network takes (1: its preprocessing is inside), what it shows, input size
NETWORKS = (("MobileNetV3Small alpha 0.75", mobilenet_v3, 12, 1.0, "HARD_SWISH", SIZE),
            ("DenseNet121", densenet, 4, 1 / 255, "AVERAGE_POOL_2D", SIZE),
            ("InceptionV3 75x75", lambda: inception_v3(75), 4, 1 / 255, "AVERAGE_POOL_2D", 75),
            ("NASNetMobile", nasnet_mobile, 4, 1 / 255, "AVERAGE_POOL_2D", SIZE))


def trained(make, epochs, scale, size=SIZE):
    import keras

    from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels

    keras.utils.set_random_seed(3)
    model = make()
    pixels, labels = digit_pixels(size, TRAIN_SAMPLES)
    inputs = pixels.astype(np.float32) * scale
    model.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(inputs, labels, epochs=epochs, batch_size=32, verbose=0)
    # a momentum of 0.99-0.999 leaves the moving statistics far from the data after a few hundred steps: set them
    # to the training images' own, in one pass over all of them
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(inputs, training=True)
    return model


def measure(name, make, epochs, scale, operator, size=SIZE):
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.device.tflite_inspect import inspect_tflite
    from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import write_int8_tflite
    from edge_resnet.quantize.mixed import output_sqnr_db
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import converted, float_tflite

    model = trained(make, epochs, scale, size)
    pixels, labels = digit_pixels(size, None, offset=TRAIN_SAMPLES)
    preprocessing = Preprocessing(size, size, mode="raw") if scale == 1.0 else Preprocessing(size, size, scale=scale)
    calibration = images_from_array(pixels[:200], preprocessing, size=None)
    evaluation = pixels[200:].astype(np.float32) * scale  # in order, beside their labels
    reference = model.predict(evaluation, verbose=0)
    folded = fold_batchnorm(model)[0]
    # the float32 artifact's graph (the converter's), and the one the int8 models are made from
    graphs = {f"the converter's ({operator})": converted(folded, QuantizationRecipe.for_mode("none")),
              "rewritten": float_tflite(folded)}
    folder = Path(tempfile.mkdtemp(prefix="xnnpack-rewrites-"))
    result = {"network": name, "operator": operator, "epochs": epochs,
              "float_top1_on_evaluation": float(np.mean(reference.argmax(axis=1) == labels[200:])), "graphs": []}
    runners = []
    for index, (graph, float_model) in enumerate(graphs.items()):
        float_path = folder / f"float{index}.tflite"
        float_path.write_bytes(float_model)
        statistics = collect_statistics(float_model, calibration)
        row = {"graph": graph, "operators": inspect_tflite(float_path).op_counts.get(operator, 0),
               "float_sqnr_db": output_sqnr_db(reference, TfliteRunner(float_path).predict(evaluation)), "int8": {}}
        runners.append(("float32", graph, TfliteRunner(float_path, threads=2)))
        for method in ("minmax", "auto"):
            path = write_int8_tflite(float_model, QuantizationRecipe(calibration_method=method),
                                     folder / f"int8_{index}_{method}.tflite", calibration, statistics, progress=False)
            inspected = inspect_tflite(path)
            row["int8"][method] = {"sqnr_db": output_sqnr_db(reference, TfliteRunner(path).predict(evaluation)),
                                   "xnnpack_pieces": inspected.delegate_nodes,
                                   "fully_delegated": inspected.fully_delegated,
                                   "fully_integer": not inspected.float_ops,
                                   "undelegated_ops": sorted(set(inspected.undelegated_ops))}
            if method == "auto":
                runners.append(("int8", graph, TfliteRunner(path, threads=2)))
        result["graphs"].append(row)
    one = evaluation[:1]
    medians = interleaved_medians([lambda runner=runner: runner.predict(one) for _, _, runner in runners])
    result["latency"] = [{"model": kind, "graph": graph, "p50_ms": ms}
                         for (kind, graph, _), ms in zip(runners, medians)]
    print(result, flush=True)
    return result


def main(names):
    use_repo_imports()
    picked = [network for network in NETWORKS if not names or any(network[0].startswith(name) for name in names)]
    measured = {network[0]: measure(*network) for network in picked}
    earlier = {}
    if names and (RESULTS / "xnnpack_rewrites.json").is_file():
        earlier = json.loads((RESULTS / "xnnpack_rewrites.json").read_text())
        earlier = {row["network"]: {**row, "machine": row.get("machine", earlier["machine"])}
                   for row in earlier["networks"]}
    current = machine()
    rows = [measured[name] if name in measured else earlier[name]
            for name, *_ in NETWORKS if name in measured or name in earlier]
    result = {"machine": current, "networks": [{**row, "machine": row.get("machine", current)} for row in rows]}
    write_results("xnnpack_rewrites", result, markdown(result))


def machine_note(network, described):
    """Where a network's row was measured on another machine than the result's: which."""
    other = network["machine"]
    return "" if other == described else f" ({other['cpu']}, {' '.join(other['isa'])})"


def markdown(result):
    described = result["machine"]
    lines = ["# Operators XNNPACK has no int8 kernel for, rewritten", "",
             "Command: `python benchmarks/xnnpack_rewrites.py` (the module's docstring says what it runs).", "",
             f"Machine: {described['cpu']}, {described['cores']} cores, {' '.join(described['isa'])} (a network "
             "measured on another names it). keras.applications networks, 32x32 unless named, trained on digits 0..1199; output SQNR (logits) against the Keras model on 397 "
             "never-trained-on digits, ranges from 200 others. The converter's graph is what edge-resnet writes as "
             "the float32 artifact; the rewritten one is what it makes the int8 models from.", "",
             "| network (top-1 on the 397) | graph | operators of the kind | float32 SQNR dB | int8 minmax: SQNR dB, "
             "XNNPACK pieces | int8 auto: SQNR dB, XNNPACK pieces | fully integer | operators XNNPACK leaves out |",
             "|---|---|---|---|---|---|---|---|"]
    for network in result["networks"]:
        for row in network["graphs"]:
            minmax, auto = row["int8"]["minmax"], row["int8"]["auto"]
            lines.append(f"| {network['network']} ({100 * network['float_top1_on_evaluation']:.1f}%) | {row['graph']} "
                         f"| {row['operators']} | {row['float_sqnr_db']:.1f} | {minmax['sqnr_db']:.2f}, "
                         f"{minmax['xnnpack_pieces']} | {auto['sqnr_db']:.2f}, {auto['xnnpack_pieces']} | "
                         f"{'yes' if auto['fully_integer'] else 'NO'} | {', '.join(auto['undelegated_ops']) or 'none'} |")
    lines += ["", "Batch-1 latency, 2 threads, interleaved rounds per network (medians):", "",
              "| network | model | graph | p50 ms |", "|---|---|---|---|"]
    lines += [f"| {network['network']}{machine_note(network, described)} | {entry['model']} | {entry['graph']} | "
              f"{entry['p50_ms']:.3f} |" for network in result["networks"] for entry in network["latency"]]
    return "\n".join(lines) + "\n" + isa_note(described["isa"])


if __name__ == "__main__":
    main(sys.argv[1:])
