"""Reshapes given constant targets (edge_resnet/quantize/static_shapes.py):
what the TFLite converter's run-time shape arithmetic cost a squeeze-and-
excite network, float32 and int8, and that the rewrite changes no output.

    .venv/bin/python benchmarks/static_reshapes.py

keras.applications EfficientNetB0 and MobileNetV3Small at 224, random
seeded weights (speed and structure only: no accuracy is claimed from
them), the converter's float32 TFLite as it comes and rewritten; each int8
TFLite from the same minmax ranges (100 embedded digit images resized to
224), and Vela's split of its operators between an Ethos-U55 NPU and the
CPU. Latency: ai-edge-litert with XNNPACK, 2 threads, batch 1, the four
models of a network timed in interleaved rounds (medians). Writes
benchmarks/results/static_reshapes.{json,md}.
"""

import os
import tempfile
from pathlib import Path

import numpy as np

from common import interleaved_medians, isa_note, machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SIZE = 224
NETWORKS = ("EfficientNetB0", "MobileNetV3Small")
NPU = "ethos-u55-128"


def converter_float_tflite(model):
    """The TFLite converter's float32 model, shape arithmetic and all."""
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def structure(path):
    from edge_resnet.device.tflite_inspect import inspect_tflite

    inspected = inspect_tflite(path)
    return {"operators": sum(inspected.op_counts.values()), "float_ops": len(inspected.float_ops),
            "body_quantize_ops": len(inspected.body_quantize_ops), "delegate_nodes": inspected.delegate_nodes,
            "fully_delegated": inspected.fully_delegated}


def npu_split(path, name):
    """Vela's operators on the Ethos-U55 NPU and left on the CPU, for an int8 model."""
    from edge_resnet.quantize.ethos_u import operator_split, run_vela

    if not name.startswith("int8"):
        return {}
    npu, cpu = operator_split(run_vela(path, NPU).stdout)
    return {"npu_operators": npu, "cpu_operators": cpu}


def measure(network, images, folder):
    import keras

    from edge_resnet.data.images import Preprocessing, calibration_set
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.quantize.int8_tflite import int8_tflite
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.static_shapes import with_static_reshapes
    from edge_resnet.quantize.statistics import collect_statistics

    keras.utils.set_random_seed(1)
    model = getattr(keras.applications, network)(input_shape=(SIZE, SIZE, 3), weights=None)
    before = converter_float_tflite(model)
    after = with_static_reshapes(before)
    calibration = calibration_set(images, Preprocessing(SIZE, SIZE), size=None)
    ranges = activation_ranges(collect_statistics(after, calibration), RangeMethod("minmax"))
    paths = {"float32, as converted": before, "float32, constant reshapes": after,
             "int8, as converted": int8_tflite(before, ranges, QuantizationRecipe()),
             "int8, constant reshapes": int8_tflite(after, ranges, QuantizationRecipe())}
    for name, content in paths.items():
        paths[name] = folder / f"{network}-{name.replace(', ', '-').replace(' ', '_')}.tflite"
        paths[name].write_bytes(content)
    runners = {name: TfliteRunner(path, threads=2) for name, path in paths.items()}
    batch = np.stack(list(calibration.samples()))[:8]
    outputs = {name: runner.predict(batch) for name, runner in runners.items()}
    sample = batch[0]
    for runner in runners.values():
        runner.feed(sample)
    medians = interleaved_medians([runner.interpreter.invoke for runner in runners.values()], rounds=5,
                                  runs_per_round=10, warmup=5)
    return {
        "models": {name: {**structure(path), "p50_ms": median, **npu_split(path, name)}
                   for (name, path), median in zip(paths.items(), medians)},
        "float_max_abs_difference": float(np.abs(outputs["float32, as converted"]
                                                 - outputs["float32, constant reshapes"]).max()),
        "int8_max_abs_difference": float(np.abs(outputs["int8, as converted"]
                                                - outputs["int8, constant reshapes"]).max()),
    }


def markdown(result):
    lines = ["# Reshapes with constant targets (static_shapes)", "",
             "Command: `python benchmarks/static_reshapes.py`", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"{' '.join(result['machine']['isa'])}. keras.applications networks at {SIZE}, random seeded weights "
             "(structure and speed only), batch 1, 2 threads, XNNPACK; each network's four models timed in "
             "interleaved rounds. int8: the same minmax ranges (100 digit images) for both.", "",
             "| network | model | operators | float ops | quantize/dequantize in the body | XNNPACK pieces | "
             f"whole graph on XNNPACK | p50 ms | Vela {NPU}: NPU / CPU operators |",
             "|---|---|---|---|---|---|---|---|---|"]
    for network, measured in result["networks"].items():
        for name, model in measured["models"].items():
            npu = f"{model['npu_operators']} / {model['cpu_operators']}" if "npu_operators" in model else "-"
            lines.append(f"| {network} | {name} | {model['operators']} | {model['float_ops']} | "
                         f"{model['body_quantize_ops']} | {model['delegate_nodes']} | "
                         f"{'yes' if model['fully_delegated'] else 'NO'} | {model['p50_ms']:.2f} | {npu} |")
    lines += ["", "Outputs of the rewritten models against those as converted, on 8 images (max abs difference): "
              + "; ".join(f"{network}: float32 {measured['float_max_abs_difference']:.3g}, int8 "
                          f"{measured['int8_max_abs_difference']:.3g}"
                          for network, measured in result["networks"].items()) + "."]
    return "\n".join(lines) + "\n" + isa_note(result["machine"]["isa"])


def main():
    use_repo_imports()
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    images, _ = digit_pixels(SIZE, 100, offset=TRAIN_SAMPLES)
    with tempfile.TemporaryDirectory(prefix="static-reshapes-") as folder:
        result = {"machine": machine(),
                  "networks": {network: measure(network, images, Path(folder)) for network in NETWORKS}}
    write_results("static_reshapes", result, markdown(result))


if __name__ == "__main__":
    main()
