"""ONNX export: float32 through tf2onnx, and int8 by two routes:

- "ort": onnxruntime static quantization of the float ONNX (QDQ or
  QOperator, int8 or uint8 activations, int8 per-channel weights), calibrated
  on the same ImageSet as the TFLite model;
- "tflite": tf2onnx conversion of the int8 TFLite model, so both formats
  carry identical quantization parameters.

Every file is checked with onnx.checker (full check) before it is written,
and gets the recipe JSON beside it.
"""

import tempfile
from pathlib import Path

from .errors import ConfigError, ConversionError
from .files import atomic_output
from .quiet import native_output_silenced
from .recipe import QuantizationRecipe, artifact_record, write_record
from .tflite import check_calibration_fits, to_tflite

DEFAULT_OPSET = 17
OPSET_RANGE = (13, 18)  # 13: per-channel QDQ; 18: the newest tf2onnx 1.17 writes
ROUTES = ("ort", "tflite")
INPUT_NAME, OUTPUT_NAME = "input", "output"
ONNX_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime")


def check_opset(opset):
    low, high = OPSET_RANGE
    if not isinstance(opset, int) or not low <= opset <= high:
        raise ConfigError(f"ONNX opset must be between {low} and {high}. Received: {opset}")


ORT_DOMAIN = "com.microsoft"  # onnxruntime's contrib operators (QOperator format)


def unsupported_ops(proto, runtime_domains=()):
    """Operators that neither ONNX nor `runtime_domains` define: what tf2onnx
    leaves behind (under the TensorFlow op's name) when it has no conversion."""
    import onnx

    return sorted(
        {
            node.op_type
            for node in proto.graph.node
            if node.domain not in runtime_domains and not onnx.defs.has(node.op_type, node.domain)
        }
    )


def rename_value(proto, old, new):
    """Rename a tensor everywhere it appears in the graph."""
    graph = proto.graph
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def stable_io_names(proto):
    rename_value(proto, proto.graph.input[0].name, INPUT_NAME)
    rename_value(proto, proto.graph.output[0].name, OUTPUT_NAME)
    return proto


def checked(proto, what, runtime_domains=()):
    import onnx

    leftovers = unsupported_ops(proto, runtime_domains)
    if leftovers:
        raise ConversionError(
            f"tf2onnx cannot convert the operator(s) {', '.join(leftovers)} of {what} to ONNX; "
            "replace those layers or export to TFLite only"
        )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ConversionError(f"the ONNX model of {what} fails onnx.checker: {' '.join(str(error).split())[:300]}") from error
    return proto


def float_onnx(model, opset=DEFAULT_OPSET):
    """ModelProto of the float Keras model: dynamic batch, I/O named
    "input" and "output"."""
    import tensorflow as tf
    import tf2onnx

    check_opset(opset)
    signature = [tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name=INPUT_NAME)]
    with native_output_silenced():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    return checked(stable_io_names(proto), f"model {model.name!r}")


def onnx_from_tflite(tflite_path, opset=DEFAULT_OPSET):
    """ModelProto of an int8 TFLite file. Its integer input/output scales and
    zero points go into the metadata, so a runner can feed float images."""
    import tf2onnx

    from .runtime import tflite_interpreter

    check_opset(opset)
    with native_output_silenced():
        proto, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=opset)
        interpreter = tflite_interpreter(tflite_path)
    stable_io_names(proto)
    for prefix, detail in (("input", interpreter.get_input_details()[0]), ("output", interpreter.get_output_details()[0])):
        scale, zero_point = detail["quantization"]
        if scale:  # the runtime's OnnxRunner reads these keys back
            for key, value in ((f"{prefix}_scale", scale), (f"{prefix}_zero_point", zero_point)):
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, repr(float(value))
    return checked(proto, f"TFLite file {Path(tflite_path).name}")


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over an ImageSet."""

    def __init__(self, calibration):
        self.batches = iter(calibration.with_batch_size(1))

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def ort_quantized(float_path, output_path, recipe, calibration):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = Path(output_path).with_name(Path(output_path).stem + ".pre.onnx")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with native_output_silenced():
        quant_pre_process(str(float_path), str(prepared))
        quantize_static(
            str(prepared),
            str(output_path),
            _CalibrationReader(calibration),
            quant_format=QuantFormat.QDQ if recipe.onnx_format == "qdq" else QuantFormat.QOperator,
            activation_type=QuantType.QInt8 if recipe.onnx_activation_type == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            reduce_range=recipe.onnx_reduce_range,
            calibrate_method=methods[recipe.onnx_calibration_method],
        )
    prepared.unlink(missing_ok=True)


def check_onnx_request(recipe, opset, route):
    """Refuse what ONNX export cannot do before any work starts."""
    if recipe.mode not in ("none", "int8"):
        raise ConfigError(f"ONNX export offers float32 (none) and int8. Received: mode={recipe.mode!r}")
    if route not in ROUTES:
        raise ConfigError(f"route must be one of {', '.join(ROUTES)}. Received: {route!r}")
    check_opset(opset)


def to_onnx(model, recipe=None, calibration=None, output="model.onnx", opset=DEFAULT_OPSET, route="ort",
            float_onnx_path=None):
    """Write `output` (.onnx) and its recipe JSON; return the path.

    recipe.mode "none" exports float32; "int8" quantizes by `route`. For
    route "ort", `float_onnx_path` (the float ONNX of `model`, same opset)
    reuses an export a pipeline has already made.
    """
    import onnx

    recipe = recipe or QuantizationRecipe.for_mode("none")
    output = Path(output)
    if output.suffix != ".onnx":
        raise ConfigError(f"the ONNX output must end in .onnx. Received: {output}")
    check_onnx_request(recipe, opset, route)
    if recipe.needs_calibration:
        if calibration is None:
            raise ConfigError("int8 quantization needs calibration data (an image folder, .npy or .npz)")
        check_calibration_fits(model, calibration)

    with tempfile.TemporaryDirectory(prefix="edge-resnet-onnx-") as scratch, atomic_output(output) as temporary:
        scratch = Path(scratch)
        if recipe.mode == "none":
            onnx.save(float_onnx(model, opset), temporary)
        elif route == "ort":
            if float_onnx_path is None:
                float_onnx_path = scratch / "float.onnx"
                onnx.save(float_onnx(model, opset), float_onnx_path)
            ort_quantized(float_onnx_path, scratch / "int8.onnx", recipe, calibration)
            onnx.save(checked(onnx.load(scratch / "int8.onnx"), f"model {model.name!r}", (ORT_DOMAIN,)), temporary)
        else:
            tflite_path = to_tflite(model, recipe, calibration, output=scratch / "int8.tflite")
            onnx.save(onnx_from_tflite(tflite_path, opset), temporary)
        record = artifact_record(temporary, "onnx", recipe, calibration, model, ONNX_PACKAGES)
        record.update(artifact=output.name, opset=opset, route=route if recipe.mode == "int8" else None)
        write_record(output, record)
    return output
