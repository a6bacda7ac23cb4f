"""Does empirical bias correction help the int8 TFLite? Measured before
deciding whether to ship it.

    .venv/bin/python benchmarks/bias_correction.py

For each convolution and dense layer of the float .tflite, the expected
output shift that int8 per-channel weight rounding causes, sum over
(kernel, input channel) of (Wq - W) * mean input channel (the channel means
over the calibration images), is subtracted from the float bias before
quantizing (what NNCF's FastBiasCorrection and AIMET's empirical bias
correction do for weight error). Compared on the shipped demo ResNet-50 and
the digits ResNet-18, four 200-image calibration subsets, output SQNR on the
597 held-out digits. Writes benchmarks/results/bias_correction.{json,md}.
"""

import os

import numpy as np
from common import machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SUBSETS, SUBSET_SIZE = 4, 200
METHODS = ("minmax", "extrapolated")


def channel_means(float_model, calibration):
    """{tensor name: mean of each channel over the calibration images}."""
    from ai_edge_litert.interpreter import Interpreter

    from edge_resnet.quantize.statistics import exposed_model

    exposed, names = exposed_model(float_model)
    interpreter = Interpreter(model_content=exposed)
    interpreter.allocate_tensors()
    index = {detail["name"]: detail["index"] for detail in interpreter.get_output_details()}
    sums = {}
    for sample in calibration.samples():
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample[None])
        interpreter.invoke()
        for name in names:
            values = interpreter.get_tensor(index[name])
            sums[name] = sums.get(name, 0) + values.reshape(-1, values.shape[-1]).mean(axis=0)
    return {name: total / len(calibration) for name, total in sums.items()}


def bias_corrected(float_model, means):
    """The float .tflite with each CONV_2D / FULLY_CONNECTED bias shifted by
    the expected output error of its int8 per-channel weights."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from edge_resnet.quantize.statistics import read_flatbuffer

    model = read_flatbuffer(float_model)
    graph = model.subgraphs[0]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) not in (schema.BuiltinOperator.CONV_2D,
                                                                     schema.BuiltinOperator.FULLY_CONNECTED):
            continue
        source, weights, bias = (graph.tensors[index] for index in op.inputs[:3])
        kernel = np.frombuffer(bytes(model.buffers[weights.buffer].data), np.float32).reshape(weights.shape)
        scale = np.abs(kernel).max(axis=tuple(range(1, kernel.ndim)), keepdims=True) / 127
        scale[scale == 0] = 1
        error = np.rint(kernel / scale) * scale - kernel
        mean = means[source.name.decode()]
        shift = (error.reshape(kernel.shape[0], -1, kernel.shape[-1]) * mean).sum(axis=(1, 2))
        values = np.frombuffer(bytes(model.buffers[bias.buffer].data), np.float32) - shift
        model.buffers[bias.buffer].data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def main():
    use_repo_imports()
    import tempfile
    from pathlib import Path

    from edge_resnet.model import demo
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import int8_tflite
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite
    from tests.digits import TRAIN_SAMPLES, digit_pixels, train_digits_resnet

    train_pixels, _ = digit_pixels(32, TRAIN_SAMPLES)
    test_pixels, _ = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    test_images = preprocess_input(test_pixels)
    order = np.random.default_rng(0).permutation(TRAIN_SAMPLES)
    scratch = Path(tempfile.mkdtemp(prefix="bias-correction-"))
    rows = []
    for name, model in (("demo ResNet-50 w0.25", demo.build_demo_model()),
                        ("ResNet-18 w0.25", train_digits_resnet())):
        folded, _ = fold_batchnorm(model)
        reference = np.asarray(model.predict(test_images, verbose=0))
        float_model = float_tflite(folded)

        def sqnr(content):
            (scratch / "m.tflite").write_bytes(content)
            logits = TfliteRunner(scratch / "m.tflite").predict(test_images)
            return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - logits) ** 2)))

        for index in range(SUBSETS):
            subset = order[index * SUBSET_SIZE:(index + 1) * SUBSET_SIZE]
            calibration = images_from_array(train_pixels[subset], Preprocessing(32, 32), size=None).cached()
            statistics = collect_statistics(float_model, calibration)
            corrected = bias_corrected(float_model, channel_means(float_model, calibration))
            for method in METHODS:
                ranges = activation_ranges(statistics, RangeMethod(method))
                rows.append({"model": name, "subset": index, "method": method,
                             "sqnr_db": sqnr(int8_tflite(float_model, ranges, QuantizationRecipe())),
                             "sqnr_db_bias_corrected": sqnr(int8_tflite(corrected, ranges, QuantizationRecipe()))})
                print(rows[-1], flush=True)
    lines = ["# Bias correction (weight rounding), int8 TFLite", "", "Command: `python benchmarks/bias_correction.py`",
             "", "| model | ranges | SQNR dB without, mean of 4 subsets | with bias correction | change |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(row["model"] for row in rows):
        for method in METHODS:
            picked = [row for row in rows if row["model"] == name and row["method"] == method]
            before = np.mean([row["sqnr_db"] for row in picked])
            after = np.mean([row["sqnr_db_bias_corrected"] for row in picked])
            lines.append(f"| {name} | {method} | {before:.2f} | {after:.2f} | {after - before:+.2f} |")
    write_results("bias_correction", {"machine": machine(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
