"""TFLite export: float32, float16 weights, dynamic-range int8, and full
integer int8 calibrated on an ImageSet. TensorFlow is imported here only."""

from pathlib import Path

from .errors import ConfigError
from .files import atomic_output
from .quiet import native_output_silenced
from .recipe import QuantizationRecipe, artifact_record, write_record


def check_calibration_fits(model, calibration):
    expected = tuple(model.input_shape[1:])
    if tuple(calibration.preprocessing.shape) != expected:
        raise ConfigError(
            f"calibration samples are {calibration.preprocessing.shape} but the model takes {expected}; "
            "build the calibration set for the model's input size"
        )


def representative_dataset(calibration, progress_stream):
    """A generator factory for the converter: one sample per step (batching
    does not speed TFLite calibration up), with a progress bar."""
    from tqdm import tqdm

    def samples():
        bar = tqdm(
            calibration.samples(),
            total=len(calibration),
            desc="calibrating",
            unit="img",
            file=progress_stream,
            disable=progress_stream is None,
            bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}]",
        )
        for sample in bar:
            yield [sample[None]]

    return samples


def _converter(model, recipe):
    """The TFLite converter for the modes it runs in one go (float32,
    float16, dynamic range); int8 is split into calibrate() and
    quantize_calibrated()."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if recipe.mode != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe.mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter


def tflite_bytes(model, recipe, calibration=None, progress=True):
    """Convert `model` under `recipe`; the converter's own logs are silenced.
    int8 goes through calibrate() and quantize_calibrated()."""
    if recipe.mode == "int8":
        check_calibration_fits(model, calibration)
        return quantize_calibrated(calibrate(float_tflite(model), calibration, progress), recipe)
    with native_output_silenced():
        return _converter(model, recipe).convert()


def float_tflite(model):
    return tflite_bytes(model, QuantizationRecipe.for_mode("none"))


def calibrate(float_model, calibration, progress=True):
    """The slow half of int8 conversion, done once: the float32 TFLite model
    (bytes, as float_tflite() makes them) annotated with the activation
    ranges seen on `calibration`. The int8 model (quantize_calibrated) and
    the per-layer debug model (layer_debug) are both made from it without
    calibrating again, and the float32 artifact's conversion is not
    repeated: this is the converter's own sequence (convert to float, add
    intermediate tensors, calibrate, quantize), split where it can be
    reused."""
    from tensorflow.lite.python.optimize import calibrator

    with native_output_silenced() as stderr:
        samples = representative_dataset(calibration, stderr if progress else None)
        return calibrator.Calibrator(calibrator.add_intermediate_tensors(float_model)).calibrate(samples)


def quantize_calibrated(calibrated, recipe, numeric_verify=False):
    """The int8 model from a calibrate() result, as TFLiteConverter.convert()
    writes it: the same quantizer call, then the same buffer de-duplication.
    `numeric_verify` makes the debug model instead (float I/O, NumericVerify
    ops after each quantized layer)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert

    io_types = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
    with native_output_silenced():
        if numeric_verify:
            return tflite_convert.mlir_quantize(
                calibrated, disable_per_channel=not recipe.per_channel, enable_numeric_verify=True
            )
        quantized = tflite_convert.mlir_quantize(
            calibrated,
            disable_per_channel=not recipe.per_channel,
            input_data_type=io_types[recipe.input_type],
            output_data_type=io_types[recipe.output_type],
        )
        return tflite_convert.deduplicate_readonly_buffers(quantized)


def to_tflite(model, recipe=None, calibration=None, output="model.tflite", progress=True, calibrated=None):
    """Write `output` (.tflite) and its recipe JSON beside it; return the path.

    `calibration` (an ImageSet for the model's input) is required for int8;
    pass `calibrated` (calibrate()'s result on it) to skip calibrating again.
    """
    recipe = recipe or QuantizationRecipe()
    output = Path(output)
    if output.suffix != ".tflite":
        raise ConfigError(f"the TFLite output must end in .tflite. Received: {output}")
    if recipe.needs_calibration:
        if calibration is None:
            raise ConfigError("int8 quantization needs calibration data (an image folder, .npy or .npz)")
        check_calibration_fits(model, calibration)
    if calibrated is not None and recipe.mode == "int8":
        content = quantize_calibrated(calibrated, recipe)
    else:
        content = tflite_bytes(model, recipe, calibration, progress)
    with atomic_output(output) as temporary:
        temporary.write_bytes(content)
        record = artifact_record(temporary, "tflite", recipe, calibration, model, ("tensorflow", "keras"))
        record["artifact"] = output.name
        write_record(output, record)
    return output
