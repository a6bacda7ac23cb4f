import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest


@pytest.fixture(scope="session")
def digits_model():
    """ResNet-18 (width 0.25, 32x32) trained on real handwritten digits
    (loaded from the weights its training saved: see tests/digits.py)."""
    from tests.digits import trained_digits_resnet

    return trained_digits_resnet()


@pytest.fixture(scope="session")
def folded(digits_model):
    """The trained digits model with its BatchNorms folded."""
    from edge_resnet.model.fold import fold_batchnorm

    return fold_batchnorm(digits_model)[0]


@pytest.fixture(scope="session")
def digits_calibration():
    """200 training digits (never the held-out ones we evaluate on), 32x32, caffe."""
    from edge_resnet.data.images import Preprocessing, calibration_set
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    pixels, _ = digit_pixels(32, TRAIN_SAMPLES)
    return calibration_set(pixels, Preprocessing(32, 32), size=200)


@pytest.fixture(scope="session")
def digits_artifacts(folded, digits_calibration, tmp_path_factory):
    """The artifacts of the trained digits model, made once for every module:
    float32 TFLite; int8 TFLite, ONNX by onnxruntime and by way of the TFLite
    model; the float ONNX; and a TFLite calibrated on black images (a broken
    artifact)."""
    import numpy as np

    from edge_resnet.data.images import Preprocessing, calibration_set
    from edge_resnet.quantize.onnx_export import to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.tflite import to_tflite

    out = tmp_path_factory.mktemp("digits_artifacts")
    int8 = QuantizationRecipe()
    zeros = calibration_set(np.zeros((50, 32, 32, 3), np.uint8), Preprocessing(32, 32), size=None)
    return {
        "float_tflite": to_tflite(folded, QuantizationRecipe.for_mode("none"), output=out / "float.tflite"),
        "int8_tflite": to_tflite(folded, int8, digits_calibration, output=out / "int8.tflite", progress=False),
        "int8_onnx": to_onnx(folded, int8, digits_calibration, output=out / "int8_ort.onnx"),
        "int8_onnx_via_tflite": to_onnx(folded, int8, digits_calibration, output=out / "int8_tfl.onnx",
                                        route="tflite"),
        "float_onnx": to_onnx(folded, output=out / "float.onnx"),
        "broken_tflite": to_tflite(folded, int8, zeros, output=out / "zeros_calibrated.tflite", progress=False),
    }


@pytest.fixture(scope="session", autouse=True)
def temporary_files_are_cleaned_up(tmp_path_factory):
    """Temporary files go to a folder of the session's own; a scratch folder
    the toolkit leaves there (all are named edge-resnet-*) fails the run.
    TensorFlow's own leftovers (autograph sources) are not ours to judge."""
    import tempfile

    folder = tmp_path_factory.mktemp("tmpdir")
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
    yield
    if saved[0] is None:
        os.environ.pop("TMPDIR")
    else:
        os.environ["TMPDIR"] = saved[0]
    tempfile.tempdir = saved[1]
    leaked = sorted(path.name for path in folder.iterdir() if path.name.startswith("edge-resnet"))
    assert leaked == [], f"temporary files left behind: {leaked}"
