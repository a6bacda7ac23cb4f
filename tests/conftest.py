import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest


@pytest.fixture(scope="session")
def digits_model():
    """ResNet-18 (width 0.25, 32x32) trained on real handwritten digits."""
    from tests.digits import train_digits_resnet

    return train_digits_resnet()


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
