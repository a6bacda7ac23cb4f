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
