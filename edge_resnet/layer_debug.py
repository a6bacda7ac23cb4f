"""Per-layer quantization error, named by Keras layer: what explains a bad
parity number.

- TFLite int8: tf.lite.experimental.QuantizationDebugger's per-layer
  statistics, scored by RMSE / scale (about 0.289, uniform rounding noise of
  one step, is ideal; larger is worse).
- ONNX int8 (QDQ): onnxruntime's qdq_loss_debug, scored by the SQNR in dB of
  each quantized activation against the float ONNX model (lower is worse).

Both re-run the model on a small debug set and need TensorFlow (the TFLite
converter; tf2onnx for the float ONNX), so they run on the workstation.
"""

import csv
import io
import math
import re
import tempfile
from pathlib import Path

import numpy as np

from .quiet import native_output_silenced

WORST_SHOWN = 10
DEBUG_IMAGES = 16  # per-layer statistics need only a few images
IDEAL_RMSE_OVER_SCALE = 1 / math.sqrt(12)  # 0.289


def keras_layer_of(tensor_name, layer_names):
    """The Keras layer a converter's tensor name comes from: the first path
    component that, less a trailing "_<n>" copy suffix, is a layer name."""
    for component in re.split(r"[/;:]", tensor_name):
        for candidate in (component, re.sub(r"_\d+$", "", component)):
            if candidate in layer_names:
                return candidate
    return None


def worst(per_tensor, layer_names, metric, higher_is_worse):
    """Keep the worst value per Keras layer, then the WORST_SHOWN worst layers."""
    by_layer = {}
    for tensor_name, value in per_tensor:
        layer = keras_layer_of(tensor_name, layer_names)
        if layer is None or value is None or not math.isfinite(value):
            continue
        current = by_layer.get(layer)
        if current is None or (value > current if higher_is_worse else value < current):
            by_layer[layer] = value
    ranked = sorted(by_layer.items(), key=lambda item: item[1], reverse=higher_is_worse)[:WORST_SHOWN]
    return [{"layer": layer, "metric": metric, "value": float(value)} for layer, value in ranked]


def tflite_layer_errors(model, calibration, debug_images, calibrated=None, per_channel=True):
    """Worst Keras layers of the int8 TFLite quantization of `model`.
    `calibrated` (tflite.calibrate()'s result) skips calibrating again."""
    import tensorflow as tf

    from .recipe import QuantizationRecipe
    from .tflite import calibrate, float_tflite, quantize_calibrated

    def debug_dataset():
        for image in debug_images:
            yield [np.asarray(image, np.float32)[None]]

    if calibrated is None:
        calibrated = calibrate(float_tflite(model), calibration, progress=False)
    debug_model = quantize_calibrated(calibrated, QuantizationRecipe(per_channel=per_channel), numeric_verify=True)
    with native_output_silenced():
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debug_model, debug_dataset=debug_dataset
        )
        debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    per_tensor = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        if scale > 0:
            per_tensor.append((row["tensor_name"], math.sqrt(float(row["mean_squared_error"])) / scale))
    return worst(per_tensor, {layer.name for layer in model.layers}, "RMSE/scale (0.289 ideal)", True)


def _saved_activations(session, image):
    """{tensor name: [activation]} of one image through a model augmented by
    qdq_loss_debug (every intermediate tensor is an extra output)."""
    from onnxruntime.quantization.qdq_loss_debug import _TENSOR_SAVE_POSTFIX  # the augmenting tool's own suffix

    names = [output.name for output in session.get_outputs()]
    values = session.run(None, {"input": np.asarray(image, np.float32)[None]})
    return {name[: -len(_TENSOR_SAVE_POSTFIX)]: [value]
            for name, value in zip(names, values) if name.endswith(_TENSOR_SAVE_POSTFIX)}


def _sqnr_db(signal_power, noise_power):
    """qdq_loss_debug's SQNR, 20 log10(|x| / |x - q|), from sums of squares."""
    epsilon = np.finfo(float).eps
    return 20 * math.log10(max(math.sqrt(signal_power), epsilon) / max(math.sqrt(noise_power), epsilon))


def onnx_layer_errors(model, qdq_path, debug_images, float_path=None):
    """Worst Keras layers of an onnxruntime QDQ int8 model of `model`, by the
    SQNR of each quantized activation against the float ONNX model's (at
    `float_path`, or exported again). Within the QDQ model alone, a ReLU
    folded into its Quantize node would count as noise.

    One image at a time, keeping only sums of squares per tensor: all of a
    ResNet-50's activations for a batch of images do not fit in memory."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization.qdq_loss_debug import (
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from .onnx_export import float_onnx

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    signal, noise = {}, {}
    with tempfile.TemporaryDirectory(prefix="edge-resnet-layers-") as scratch, native_output_silenced():
        scratch = Path(scratch)
        if float_path is None:
            float_path = scratch / "float.onnx"
            onnx.save(float_onnx(model), float_path)
        sessions = {}
        for name, path in (("float", Path(float_path)), ("qdq", Path(qdq_path))):
            augmented = str(scratch / f"{name}_all.onnx")
            modify_model_output_intermediate_tensors(str(path), augmented)
            sessions[name] = onnxruntime.InferenceSession(augmented, options, providers=["CPUExecutionProvider"])
        for image in debug_images:
            matching = create_activation_matching(_saved_activations(sessions["qdq"], image),
                                                  _saved_activations(sessions["float"], image))
            for tensor, match in matching.items():
                if match.get("float") and match.get("post_qdq"):
                    reference = match["float"][0].astype(np.float64)
                    error = reference - match["post_qdq"][0]
                    signal[tensor] = signal.get(tensor, 0.0) + float(np.sum(reference**2))
                    noise[tensor] = noise.get(tensor, 0.0) + float(np.sum(error**2))
    per_tensor = [(tensor, _sqnr_db(signal[tensor], noise[tensor])) for tensor in signal]
    return worst(per_tensor, {layer.name for layer in model.layers}, "SQNR dB vs float (lower is worse)", False)


def layer_errors(model, artifact_path, calibration, debug_images, calibrated=None, float_onnx_path=None):
    """Per-layer errors for an int8 artifact, or [] where no tool applies
    (float artifacts, QOperator graphs, ONNX converted from TFLite).
    `calibrated` and `float_onnx_path` reuse what a conversion already made."""
    import json

    record_file = Path(str(artifact_path) + ".json")
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    recipe = record.get("recipe", {})
    if recipe.get("mode") != "int8":
        return []
    if str(artifact_path).endswith(".tflite"):
        if calibration is None and calibrated is None:
            return []
        return tflite_layer_errors(model, calibration, debug_images, calibrated, recipe.get("per_channel", True))
    if record.get("route") == "ort" and recipe.get("onnx_format") == "qdq":
        return onnx_layer_errors(model, artifact_path, debug_images, float_onnx_path)
    return []
