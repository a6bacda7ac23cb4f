"""ImageNet "caffe" preprocessing, numpy only, so the device side can use it
without Keras or TensorFlow."""

import numpy as np

# Per-channel ImageNet means in BGR order, as keras.applications.resnet uses.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocess_input(images):
    """RGB pixels in [0, 255] -> BGR with the ImageNet mean subtracted.

    No scaling to [0, 1]: this is the "caffe" mode of
    keras.applications.resnet50.preprocess_input, channels last.
    """
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.ndim < 3 or pixels.shape[-1] != 3:
        raise ValueError(
            "preprocess_input expects channels-last RGB images (..., H, W, 3). "
            f"Received: shape={pixels.shape}"
        )
    return pixels[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)
