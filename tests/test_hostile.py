"""Bad input as a careless or hostile user types it: one line naming the
problem and the fix, exit 2, never a traceback or a misleading word."""

import os
import subprocess

import numpy as np
import pytest

from tests.cli import COMMAND, run_in_process


@pytest.fixture(scope="module")
def files(digits_artifacts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    float_tflite = digits_artifacts["float_tflite"]
    (folder / "text.tflite").write_text("hello, this is not a model")
    (folder / "truncated.tflite").write_bytes(float_tflite.read_bytes()[:2000])
    (folder / "bad.keras").write_text("not a zip")
    (folder / "bad.npz").write_text("not a zip either")
    return {"folder": folder, "float": float_tflite}


def one_line_error(result, fragment):
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert fragment in errors[0], errors[0]
    return errors[0]


CASES = [
    (["quantize", "{float}", "--calibration-method", "minmax", "--statistics", "{folder}/bad.npz",
      "--output", "{folder}/o.tflite"], "not a complete .npz archive"),
    (["quantize", "{folder}/text.tflite", "--calibration", "{folder}", "--output", "{folder}/o.tflite"],
     "text.tflite is not a TFLite model (truncated, damaged"),
    (["quantize", "{folder}/truncated.tflite", "--calibration", "{folder}", "--output", "{folder}/o.tflite"],
     "truncated.tflite is not a TFLite model"),
    (["quantize", "{folder}/bad.keras", "--quantize", "none", "--output", "{folder}/o.tflite"],
     "bad.keras is not a Keras model file: a .keras model is a zip archive"),
    (["quantize", "resnet18", "--weights", "random", "--quantize", "none", "--output", "{folder}/o.tflite", "--seed",
      "-1"], "--seed is a whole number from 0"),
    (["summary", "--width", "inf"], "width must be a positive number"),
    (["convert", "--max-accuracy-drop", "200", "--output", "{folder}/never"], "from 0 to 100"),
    (["bench", "{float}", "--input", "{float}"], "--input takes an image, an image folder, .npy or .npz"),
    (["bench", "{folder}"], "is a folder; bench takes .tflite and .onnx files"),
    (["compare", "--reference", "{float}", "{float}"], "--reference takes the float Keras model"),
    (["quantize", "resnet18", "--weights", "random", "--input-type", "uint8", "--calibration", "{folder}",
      "--output", "{folder}/o.onnx"], "the int8 ONNX of --onnx-route ort (the default) takes and gives float32"),
    (["convert", "--formats", "onnx", "--output-type", "int8", "--output", "{folder}/never"],
     "convert's int8 ONNX takes and gives float32: add tflite to --formats"),
]


@pytest.mark.parametrize("arguments, fragment", CASES, ids=[fragment[:30] for _, fragment in CASES])
def test_bad_input_is_one_clear_line(files, arguments, fragment):
    line = one_line_error(run_in_process(*[a.format(**files) for a in arguments]), fragment)
    assert "allow_pickle" not in line and "unpack_from" not in line
    assert not any((files["folder"] / name).exists() for name in ("o.tflite", "o.onnx", "never"))


def test_a_labels_file_saved_with_a_byte_order_mark_reads_as_its_names(tmp_path):
    from edge_resnet.data.labels import read_labels_file

    (tmp_path / "labels.txt").write_bytes("\ufeff零\none\n".encode("utf-8"))
    assert read_labels_file(tmp_path / "labels.txt", 2) == ["零", "one"]


def test_no_runtime_start_up_line_reaches_the_terminal_without_the_tests_settings(files):
    """TF_CPP_MIN_LOG_LEVEL, which the other tests set, is not what keeps it quiet."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([*COMMAND, "bench", str(files["float"]), "--runs", "2"], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert "XNNPACK delegate" not in result.stdout + result.stderr
    assert "p50" in result.stdout


@pytest.fixture(scope="module")
def foreign_models(tmp_path_factory):
    """Small Keras models of shapes users bring that this toolkit does not convert or check, saved as .keras,
    beside 3-channel digit images to feed them."""
    import keras

    from tests.digits import digit_pixels

    folder = tmp_path_factory.mktemp("foreign")

    def head(inputs, x, name):
        outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
        keras.Model(inputs, outputs).save(folder / f"{name}.keras")

    def trunk(inputs):
        return keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs)))

    for name, shape in (("dynamic", (None, None, 3)), ("gray", (32, 32, 1))):
        inputs = keras.Input(shape)
        head(inputs, trunk(inputs), name)
    inputs = keras.Input((32, 32, 3))
    x = trunk(inputs)
    keras.Model(inputs, [keras.layers.Dense(2)(keras.layers.Flatten()(x)), keras.layers.Dense(3)(keras.layers.Flatten()(x))]
                ).save(folder / "two_outputs.keras")
    keras.Model(inputs, keras.layers.Conv2D(5, 1)(x)).save(folder / "feature_map.keras")
    channels_first = keras.layers.Conv2D(4, 3, data_format="channels_first")(keras.layers.Permute((3, 1, 2))(inputs))
    head(inputs, keras.layers.Permute((2, 3, 1))(channels_first), "channels_first")
    try:  # TensorFlow runs it on a CPU where oneDNN is on by default (one with AVX-512 VNNI), elsewhere not
        keras.models.load_model(folder / "channels_first.keras")(np.zeros((1, 32, 32, 3), np.float32))
        (folder / "channels_first_runs_here").touch()
    except Exception:  # noqa: BLE001 (whatever TensorFlow raises for it)
        pass
    inner = keras.Model(inputs, trunk(inputs), name="inner")
    keras.Sequential([keras.Input((32, 32, 3)), inner, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
                     ).save(folder / "nested.keras")
    outer = keras.Input((32, 32, 3))
    head(outer, keras.layers.Add()([inner(outer), inner(keras.layers.Rescaling(0.5)(outer))]), "nested_twice")
    pixels, labels = digit_pixels(32, 40)
    np.savez(folder / "digits.npz", x=pixels, y=labels)
    (folder / "any.tflite").write_bytes(b"never opened")
    return folder


FOREIGN_CASES = [
    (["quantize", "{folder}/dynamic.keras", "--quantize", "none", "--output", "{folder}/o.tflite"],
     "dynamic.keras cannot be converted: its input size is not fixed ((None, None, 3))"),
    (["quantize", "{folder}/two_outputs.keras", "--quantize", "none", "--output", "{folder}/o.tflite"],
     "two_outputs.keras cannot be converted: it has 1 input(s) and 2 output(s)"),
    (["quantize", "{folder}/gray.keras", "--calibration", "{folder}/digits.npz", "--calibration-method", "minmax",
      "--output", "{folder}/o.tflite"], "it takes 1-channel images, and edge-resnet feeds RGB images"),
    (["compare", "--reference", "{folder}/feature_map.keras", "--data", "{folder}/digits.npz", "{folder}/any.tflite"],
     "its output is (30, 30, 5) per image, and parity is measured on one vector per image"),
    (["quantize", "{folder}/channels_first.keras", "--quantize", "none", "--output", "{folder}/o.tflite"],
     "on this machine ("),
    (["compare", "--reference", "{folder}/channels_first.keras", "--data", "{folder}/digits.npz", "{folder}/any.tflite"],
     "Keras cannot run 'functional"),
    (["reference", "{folder}/channels_first.keras", "--data", "{folder}/digits.npz", "--output", "{folder}/o.onnx"],
     "Keras cannot run 'functional"),
]


@pytest.mark.parametrize("arguments, fragment", FOREIGN_CASES, ids=[fragment[:30] for _, fragment in FOREIGN_CASES])
def test_a_model_of_a_shape_this_toolkit_does_not_take_is_one_clear_line(foreign_models, arguments, fragment):
    if "channels_first" in arguments[1] + arguments[2] and (foreign_models / "channels_first_runs_here").exists():
        pytest.skip("TensorFlow runs a channels_first convolution on this CPU: nothing to refuse here")
    one_line_error(run_in_process(*[a.format(folder=foreign_models) for a in arguments]), fragment)
    assert not any((foreign_models / name).exists() for name in ("o.tflite", "o.onnx"))


def test_a_channels_first_model_tensorflow_runs_here_converts_to_the_same_function(foreign_models, tmp_path):
    """Where TensorFlow runs a channels_first convolution (oneDNN, on by
    default on a CPU with AVX-512 VNNI) there is nothing to refuse: the
    float32 .tflite computes what Keras does."""
    import keras

    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.mixed import output_sqnr_db

    if not (foreign_models / "channels_first_runs_here").exists():
        pytest.skip("TensorFlow cannot run a channels_first convolution on this CPU: the refusal is tested instead")
    result = run_in_process("quantize", foreign_models / "channels_first.keras", "--quantize", "none",
                            "--output", tmp_path / "float.tflite")
    assert result.returncode == 0, result.stderr
    images = np.load(foreign_models / "digits.npz")["x"][:8].astype(np.float32) / 255.0
    expected = keras.models.load_model(foreign_models / "channels_first.keras").predict(images, verbose=0)
    converted = run_tflite_bytes((tmp_path / "float.tflite").read_bytes(), images, "float")
    assert output_sqnr_db(expected, converted) > 80


def test_a_custom_layer_whose_code_is_not_here_is_named_with_the_way_round_it(tmp_path):
    script = """
import keras
@keras.saving.register_keras_serializable(package="probe")
class Halve(keras.layers.Layer):
    def call(self, x):
        return x * 0.5
inputs = keras.Input((8, 8, 3))
keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(Halve()(inputs)))).save("custom.keras")
"""
    subprocess.run([COMMAND[0], "-c", script], cwd=tmp_path, check=True, capture_output=True)
    result = subprocess.run([*COMMAND, "quantize", "custom.keras", "--quantize", "none", "--output", "o.tflite"],
                            cwd=tmp_path, capture_output=True, text=True)
    line = one_line_error(result, "custom.keras: it uses a layer class whose code is not in the file")
    assert "float32 .tflite yourself and quantize that" in line


def test_an_int8_onnx_of_a_nested_model_is_refused_rather_than_ranged_by_the_nested_model_s_output(foreign_models):
    """Every tensor inside a nested model is named after it: taking that layer's range for them all made an int8
    ONNX of -1 dB on a nested ResNet-50 before. A nested model called once is inlined (model/flatten.py); one
    called twice is not, and is refused."""
    result = run_in_process("quantize", foreign_models / "nested_twice.keras", "--calibration",
                            foreign_models / "digits.npz", "--calibration-method", "minmax", "--output",
                            foreign_models / "o.onnx")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "error: the int8 ONNX of 'functional" in result.stderr and "layer 'inner' is a whole model" in result.stderr
    assert "calibrating" not in result.stderr  # refused before the work
    assert not (foreign_models / "o.onnx").exists()


def test_a_nested_model_called_once_is_inlined_and_its_int8_onnx_ranged_layer_by_layer(foreign_models, tmp_path):
    """Transfer learning nests keras.applications' ResNet50(include_top=False) in a model with a new head: the fold
    could not reach its BatchNormalizations and the int8 ONNX was refused. Its layers now take its place."""
    import keras

    from edge_resnet.device.runtime import OnnxRunner
    from edge_resnet.quantize.mixed import output_sqnr_db

    result = run_in_process("quantize", foreign_models / "nested.keras", "--calibration", foreign_models / "digits.npz",
                            "--calibration-method", "minmax", "--preprocessing", "raw", "--output",
                            tmp_path / "o.onnx")
    assert result.returncode == 0, result.stderr
    assert "folded 1 BatchNormalization layers, left 0" in result.stdout + result.stderr
    images = np.load(foreign_models / "digits.npz")["x"].astype(np.float32)
    reference = keras.saving.load_model(foreign_models / "nested.keras").predict(images, verbose=0)
    assert output_sqnr_db(reference, OnnxRunner(tmp_path / "o.onnx").predict(images)) > 25
