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


def tflite_bytes(model, recipe, calibration=None, progress=True):
    """Convert `model` under `recipe`; the converter's own logs are silenced."""
    import tensorflow as tf

    io_types = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if recipe.mode != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe.mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with native_output_silenced() as stderr:
        if recipe.mode == "int8":
            converter.representative_dataset = representative_dataset(calibration, stderr if progress else None)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = io_types[recipe.input_type]
            converter.inference_output_type = io_types[recipe.output_type]
            converter._experimental_disable_per_channel = not recipe.per_channel
        return converter.convert()


def to_tflite(model, recipe=None, calibration=None, output="model.tflite", progress=True):
    """Write `output` (.tflite) and its recipe JSON beside it; return the path.

    `calibration` (an ImageSet for the model's input) is required for int8.
    """
    recipe = recipe or QuantizationRecipe()
    output = Path(output)
    if output.suffix != ".tflite":
        raise ConfigError(f"the TFLite output must end in .tflite. Received: {output}")
    if recipe.needs_calibration:
        if calibration is None:
            raise ConfigError("int8 quantization needs calibration data (an image folder, .npy or .npz)")
        check_calibration_fits(model, calibration)
    content = tflite_bytes(model, recipe, calibration, progress)
    with atomic_output(output) as temporary:
        temporary.write_bytes(content)
        record = artifact_record(temporary, "tflite", recipe, calibration, model, ("tensorflow", "keras"))
        record["artifact"] = output.name
        write_record(output, record)
    return output
