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
    (["bench", "{folder}"], "is a folder; bench takes .tflite and .onnx model files"),
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
