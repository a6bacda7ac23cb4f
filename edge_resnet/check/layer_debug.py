"""Per-layer quantization error, named by Keras layer: what explains a bad
parity number.

- TFLite int8: the artifact and the reference's float .tflite, run side by
  side with every activation tensor exposed;
- ONNX int8 (QDQ): onnxruntime's qdq_loss_debug against the float ONNX model.

Both are scored by one metric, the SQNR in dB of each layer's output against
the float model's (lower is worse), so the two formats' tables and plots
read alike. The TFLite entries also keep RMSE / int8 scale (about 0.289,
uniform rounding noise of one step, is ideal), TFLite's own debugger's unit.

Both run the models on a small debug set; the float reference comes from
the Keras model (TFLite converter, tf2onnx) unless a pipeline hands it over.
"""

import math
import tempfile
from pathlib import Path

import numpy as np

from ..quantize.statistics import keras_layer_of
from ..quiet import native_output_silenced

WORST_SHOWN = 10
DEBUG_IMAGES = 16  # per-layer statistics need only a few images
IDEAL_RMSE_OVER_SCALE = 1 / math.sqrt(12)  # 0.289
LAYER_METRIC = "SQNR dB vs float (lower is worse)"


def worst(per_tensor, layer_names, extra=None):
    """Keep the lowest SQNR per Keras layer, then the WORST_SHOWN worst
    layers; `extra` ({tensor name: {field: value}}) rides along."""
    by_layer = {}
    for tensor_name, value in per_tensor:
        layer = keras_layer_of(tensor_name, layer_names)
        if layer is None or value is None or not math.isfinite(value):
            continue
        if layer not in by_layer or value < by_layer[layer][0]:
            by_layer[layer] = (value, tensor_name)
    ranked = sorted(by_layer.items(), key=lambda item: item[1][0])[:WORST_SHOWN]
    return [{"layer": layer, "metric": LAYER_METRIC, "value": float(value), **(extra or {}).get(tensor_name, {})}
            for layer, (value, tensor_name) in ranked]


def tensor_values(model_bytes, images, names_wanted=None):
    """Yield {tensor name: float32 values} for each image: every activation
    tensor of the .tflite model made an output, int8/uint8 ones dequantized."""
    from ..device.runtime import dequantize, quantize, tflite_interpreter_module
    from ..quantize.statistics import exposed_model

    exposed, names = exposed_model(model_bytes, require_float=False)
    names = [name for name in names if names_wanted is None or name in names_wanted]
    _, module = tflite_interpreter_module()
    with native_output_silenced():
        interpreter = module.Interpreter(model_content=exposed, num_threads=2)
        interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    outputs = {output["name"]: output for output in interpreter.get_output_details()}
    for image in images:
        value = np.asarray(image, np.float32)[None]
        if detail["dtype"] != np.float32:
            value = quantize(value, *detail["quantization"], detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        values = {}
        for name in names:
            raw = interpreter.get_tensor(outputs[name]["index"])
            scale, zero_point = outputs[name]["quantization"]
            values[name] = dequantize(raw, scale, zero_point) if scale else raw.astype(np.float32)
        yield values


def tensor_scales(model_bytes):
    """{tensor name: int8 scale} of the quantized activation tensors."""
    from ..quantize.statistics import activation_tensor_indices, read_flatbuffer

    subgraph = read_flatbuffer(model_bytes).subgraphs[0]
    scales = {}
    for index in activation_tensor_indices(subgraph):
        tensor = subgraph.tensors[index]
        if tensor.quantization is not None and tensor.quantization.scale is not None and len(tensor.quantization.scale):
            scales[tensor.name.decode()] = float(tensor.quantization.scale[0])
    return scales


def by_layer(names, layer_names):
    """{Keras layer: tensor name} from TFLite tensor names in execution
    order: the last tensor named after each layer, what the layer passes on
    (a Rescaling with an offset is a MUL then an ADD: the layer's output is
    the ADD's)."""
    layers = {}
    for name in names:
        layer = keras_layer_of(name, layer_names, scoped=True)
        if layer is not None:
            layers[layer] = name
    return layers


def tflite_layer_errors(float_model_bytes, int8_model_bytes, debug_images, layer_names):
    """Worst Keras layers of an int8 .tflite against the float .tflite of the
    reference, by the SQNR of each layer's output tensor (and its RMSE / int8
    scale), with both models run on `debug_images` (TensorFlow-free). Tensors are matched by
    the Keras layer they come from, so the float model need not be the one
    the artifact was quantized from (an unfolded reference works too)."""
    from ..quantize.statistics import exposed_model

    scales = tensor_scales(int8_model_bytes)
    int8_layers = by_layer(scales, layer_names)
    float_layers = by_layer(exposed_model(float_model_bytes)[1], layer_names)
    shared = sorted(set(int8_layers) & set(float_layers))
    signal, squared, count = dict.fromkeys(shared, 0.0), dict.fromkeys(shared, 0.0), dict.fromkeys(shared, 0)
    pairs = zip(tensor_values(float_model_bytes, debug_images, {float_layers[layer] for layer in shared}),
                tensor_values(int8_model_bytes, debug_images, {int8_layers[layer] for layer in shared}))
    for float_values, int8_values in pairs:
        for layer in shared:
            reference = float_values[float_layers[layer]].astype(np.float64)
            error = int8_values[int8_layers[layer]] - reference
            signal[layer] += float(np.sum(reference**2))
            squared[layer] += float(np.sum(error**2))
            count[layer] += error.size
    measured = [layer for layer in shared if count[layer]]
    per_tensor = [(layer, _sqnr_db(signal[layer], squared[layer])) for layer in measured]
    extra = {layer: {"rmse_over_scale": math.sqrt(squared[layer] / count[layer]) / scales[int8_layers[layer]]}
             for layer in measured}
    return worst(per_tensor, set(layer_names), extra)


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

    from ..quantize.onnx_export import float_onnx

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
    return worst(per_tensor, {layer.name for layer in model.layers})


def layer_errors(model, artifact_path, debug_images, float_model=None, float_onnx_path=None):
    """Per-layer errors for an int8 artifact against the float `model`, or []
    where no tool applies (float artifacts, QOperator graphs, ONNX converted
    from TFLite). `float_model` (the float32 .tflite bytes of `model`) and
    `float_onnx_path` reuse what a conversion already made."""
    import json

    record_file = Path(str(artifact_path) + ".json")
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    recipe = record.get("recipe", {})
    if recipe.get("mode") != "int8":
        return []
    layer_names = [layer.name for layer in model.layers]
    if str(artifact_path).endswith(".tflite"):
        from ..quantize.tflite import float_tflite

        float_model = float_model if float_model is not None else float_tflite(model)
        return tflite_layer_errors(float_model, Path(artifact_path).read_bytes(), debug_images, layer_names)
    if record.get("route") == "ort" and recipe.get("onnx_format") == "qdq":
        return onnx_layer_errors(model, artifact_path, debug_images, float_onnx_path)
    return []


def per_layer_errors(model, artifacts, data, float_model=None, float_onnx_path=None):
    """{artifact name: its worst layers}, each artifact itself against
    `model`'s float graph, on the first DEBUG_IMAGES samples of `data`."""
    from itertools import islice

    debug_images = list(islice(data.samples(), DEBUG_IMAGES))
    if float_model is None and any(str(path).endswith(".tflite") for path in artifacts):
        from ..quantize.tflite import float_tflite

        float_model = float_tflite(model)
    return {Path(path).name: layer_errors(model, path, debug_images, float_model=float_model,
                                          float_onnx_path=float_onnx_path)
            for path in artifacts}
