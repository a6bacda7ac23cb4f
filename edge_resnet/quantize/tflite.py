"""TFLite export of a Keras model: float32, float16 weights and
dynamic-range int8 through the TFLite converter (TensorFlow is imported
here only), and full-integer int8 from the float32 model and the toolkit's
own activation statistics (int8_tflite, TensorFlow-free)."""

from pathlib import Path

from ..errors import ConfigError
from ..files import atomic_output
from ..quiet import native_output_silenced
from .recipe import QuantizationRecipe, artifact_record, keras_model_info, write_record
from .static_shapes import with_static_reshapes
from .statistics import check_input_shape
from .xnnpack_rewrites import for_int8_xnnpack, for_xnnpack

KERAS_PACKAGES = ("tensorflow", "keras", "litert-quantizer")


def check_calibration_fits(model, calibration):
    check_input_shape(model.input_shape[1:], calibration)


def converted(model, recipe):
    """The TFLite converter's output for float32, float16 and dynamic range,
    its reshapes given constant targets (static_shapes) and what XNNPACK runs
    in no precision written as what it runs (xnnpack_rewrites); its own logs
    are silenced."""
    import tensorflow as tf

    if recipe.mode == "int8":
        raise ConfigError("int8 models are quantized from the float32 model and activation statistics (to_tflite)")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if recipe.mode != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe.mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with native_output_silenced():
        return for_xnnpack(with_static_reshapes(converter.convert()))


def float_tflite(model):
    """The float32 model the int8 models are made from: the float32
    artifact's graph with the operators XNNPACK has no int8 kernel for
    written as ones it has (xnnpack_rewrites; the float32 artifact keeps the
    converter's, which XNNPACK runs in float32: a fused HARD_SWISH faster)."""
    return for_int8_xnnpack(converted(model, QuantizationRecipe.for_mode("none")))


def to_tflite(model, recipe=None, calibration=None, output="model.tflite", progress=True, statistics=None,
              float_model=None, log=None, full_int8_output=None):
    """Write `output` (.tflite) and its recipe JSON beside it; return the path.

    int8 needs `calibration` (an ImageSet for the model's input) or
    `statistics` (collect_statistics() on this model's float32 .tflite);
    `float_model` (the float32 .tflite bytes of `model`) skips converting
    it again. `full_int8_output`: write_int8_tflite's.
    """
    from .int8_tflite import write_int8_tflite

    recipe = recipe or QuantizationRecipe()
    output = Path(output)
    if output.suffix != ".tflite":
        raise ConfigError(f"the TFLite output must end in .tflite. Received: {output}")
    if recipe.mode != "int8":
        content = converted(model, recipe)
        with atomic_output(output) as temporary:
            temporary.write_bytes(content)
            record = artifact_record(temporary, "tflite", recipe, keras_model_info(model), KERAS_PACKAGES)
            record["artifact"] = output.name
            write_record(output, record)
        return output
    if statistics is None:
        if calibration is None:
            raise ConfigError("int8 quantization needs calibration data (an image folder, .npy or .npz)")
        check_calibration_fits(model, calibration)
    float_model = float_model if float_model is not None else float_tflite(model)
    return write_int8_tflite(float_model, recipe, output, calibration, statistics, keras_model_info(model),
                             KERAS_PACKAGES, progress, log, full_int8_output)
