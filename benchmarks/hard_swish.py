"""MobileNetV3's hard-swish in int8: the TFLite converter's fused HARD_SWISH
against the same function written as ADD (RELU6), MUL, MUL
(edge_resnet/quantize/hard_swish.py), on a trained network.

    .venv/bin/python benchmarks/hard_swish.py

keras.applications MobileNetV3Small (alpha 0.75, 32x32, its preprocessing
inside, logits head) trained here on digits 0..1199 (12 epochs, seed 3,
its BatchNormalization statistics then taken from those images; about
a minute). The 597 digits it never trained on: the first 200
calibrate, the other 397 evaluate (output SQNR against the Keras model).
For each graph: the int8 TFLite made by edge-resnet from it (the same
ranges rule, minmax and auto), how many pieces XNNPACK runs it in, and
batch-1 latency (2 threads) of the float32 and int8 models in interleaved
rounds. Writes benchmarks/results/hard_swish.{json,md}.
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import interleaved_medians, isa_note, machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SIZE = 32


def trained_mobilenet_v3():
    import keras

    from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels

    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None, classes=10, alpha=0.75,
                                                classifier_activation=None, include_preprocessing=True,
                                                dropout_rate=0.0)
    pixels, labels = digit_pixels(SIZE, TRAIN_SAMPLES)
    pixels = pixels.astype(np.float32)  # --preprocessing raw: the preprocessing is inside
    model.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(pixels, labels, epochs=12, batch_size=32, verbose=0)
    # its BatchNormalization momentum (0.999) leaves the moving statistics far from the data after 456 steps: set
    # them to the training images' own, in one pass over all of them
    normalizations = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in normalizations:
        layer.momentum = 0.0
    model(pixels, training=True)
    return model


def main():
    use_repo_imports()
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.device.tflite_inspect import inspect_tflite
    from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.hard_swish import with_hard_swish_decomposed
    from edge_resnet.quantize.int8_tflite import write_int8_tflite
    from edge_resnet.quantize.mixed import output_sqnr_db
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import converted, float_tflite

    model = trained_mobilenet_v3()
    pixels, labels = digit_pixels(SIZE, None, offset=TRAIN_SAMPLES)
    preprocessing = Preprocessing(SIZE, SIZE, mode="raw")
    calibration = images_from_array(pixels[:200], preprocessing, size=None)
    evaluation = pixels[200:].astype(np.float32)  # in order, beside their labels
    reference = model.predict(evaluation, verbose=0)
    accuracy = float(np.mean(reference.argmax(axis=1) == labels[200:]))
    folded = fold_batchnorm(model)[0]
    # the float32 artifact's graph (the converter's HARD_SWISH), and the one the int8 models are made from
    graphs = {"the converter's HARD_SWISH": converted(folded, QuantizationRecipe.for_mode("none")),
              "ADD (RELU6), MUL, MUL": float_tflite(folded)}
    assert with_hard_swish_decomposed(graphs["the converter's HARD_SWISH"]) == graphs["ADD (RELU6), MUL, MUL"]
    folder = Path(tempfile.mkdtemp(prefix="hard-swish-"))
    rows, runners = [], []
    for index, (graph, float_model) in enumerate(graphs.items()):
        float_path = folder / f"float{index}.tflite"
        float_path.write_bytes(float_model)
        statistics = collect_statistics(float_model, calibration)
        row = {"graph": graph, "float_sqnr_db": output_sqnr_db(reference, TfliteRunner(float_path).predict(evaluation)),
               "int8": {}}
        runners.append(("float32", graph, TfliteRunner(float_path, threads=2)))
        for method in ("minmax", "auto"):
            path = write_int8_tflite(float_model, QuantizationRecipe(calibration_method=method),
                                     folder / f"int8_{index}_{method}.tflite", calibration, statistics, progress=False)
            inspected = inspect_tflite(path)
            row["int8"][method] = {"sqnr_db": output_sqnr_db(reference, TfliteRunner(path).predict(evaluation)),
                                   "xnnpack_pieces": inspected.delegate_nodes,
                                   "fully_delegated": inspected.fully_delegated,
                                   "undelegated_ops": sorted(set(inspected.undelegated_ops))}
            if method == "auto":
                runners.append(("int8", graph, TfliteRunner(path, threads=2)))
        rows.append(row)
    one = evaluation[:1]
    medians = interleaved_medians([lambda runner=runner: runner.predict(one) for _, _, runner in runners])
    latency = [{"model": kind, "graph": graph, "p50_ms": ms} for (kind, graph, _), ms in zip(runners, medians)]
    result = {"machine": machine(), "float_top1_on_evaluation": accuracy, "rows": rows, "latency": latency}
    write_results("hard_swish", result, markdown(result))


def markdown(result):
    described = result["machine"]
    lines = ["# MobileNetV3's hard-swish in int8", "",
             "Command: `python benchmarks/hard_swish.py` (the module's docstring says what it runs).", "",
             f"Machine: {described['cpu']}, {described['cores']} cores, {' '.join(described['isa'])}. "
             f"MobileNetV3Small (alpha 0.75, 32x32) trained on digits 0..1199, top-1 "
             f"{100 * result['float_top1_on_evaluation']:.1f}% on the 397 evaluation digits; output SQNR (logits) "
             "against the Keras model on them, ranges from 200 other never-trained-on digits.", "",
             "| graph | float32 SQNR dB | int8 minmax: SQNR dB, XNNPACK pieces | int8 auto: SQNR dB, XNNPACK pieces "
             "| operators XNNPACK leaves out |",
             "|---|---|---|---|---|"]
    for row in result["rows"]:
        minmax, auto = row["int8"]["minmax"], row["int8"]["auto"]
        lines.append(f"| {row['graph']} | {row['float_sqnr_db']:.1f} | {minmax['sqnr_db']:.2f}, "
                     f"{minmax['xnnpack_pieces']} | {auto['sqnr_db']:.2f}, {auto['xnnpack_pieces']} | "
                     f"{', '.join(auto['undelegated_ops']) or 'none'} |")
    lines += ["", "Batch-1 latency, 2 threads, interleaved rounds (medians). edge-resnet's float32 artifact keeps the "
              "converter's HARD_SWISH (XNNPACK's float32 kernel); its int8 models are made from the other graph.", "",
              "| model | graph | p50 ms |",
              "|---|---|---|"]
    lines += [f"| {entry['model']} | {entry['graph']} | {entry['p50_ms']:.3f} |" for entry in result["latency"]]
    return "\n".join(lines) + "\n" + isa_note(described["isa"])


if __name__ == "__main__":
    main()
