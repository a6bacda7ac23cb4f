"""ImageNet-style preprocessing in numpy only, so the device side can use it
without Keras or TensorFlow.

Every mode is one formula: reorder the RGB channels to `channel_order`, then
(pixels * scale - mean) / std per channel, with scale, mean and std given in
that channel order.
"""

import numpy as np

# Per-channel ImageNet means in BGR order, as keras.applications.resnet uses.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# ImageNet mean and std of 0..1 RGB pixels, as torchvision models expect.
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)

# The modes of keras.applications.imagenet_utils.preprocess_input, and "raw"
# (0..255 RGB as is, for models with the preprocessing inside).
PRESETS = {
    "caffe": {"channel_order": "BGR", "scale": 1.0, "mean": CAFFE_MEAN_BGR, "std": 1.0},
    "tf": {"channel_order": "RGB", "scale": 1 / 127.5, "mean": 1.0, "std": 1.0},
    "torch": {"channel_order": "RGB", "scale": 1 / 255, "mean": TORCH_MEAN_RGB, "std": TORCH_STD_RGB},
    "raw": {"channel_order": "RGB", "scale": 1.0, "mean": 0.0, "std": 1.0},
}
CHANNEL_ORDERS = ("RGB", "BGR")


def normalize(images, scale=1.0, mean=0.0, std=1.0, channel_order="RGB"):
    """Channels-last RGB pixels in [0, 255] -> float32
    (reordered pixels * scale - mean) / std; scale, mean and std are scalars
    or one value per channel in `channel_order`."""
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.ndim < 3 or pixels.shape[-1] != 3:
        raise ValueError(
            f"preprocessing expects channels-last RGB images (..., H, W, 3). Received: shape={pixels.shape}"
        )
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}. Received: {channel_order!r}")
    if channel_order == "BGR":
        pixels = pixels[..., ::-1]
    scale, mean, std = (np.asarray(values, dtype=np.float32) for values in (scale, mean, std))
    return (pixels * scale - mean) / std


def preprocess_input(images, mode="caffe"):
    """RGB pixels in [0, 255] -> model input, as
    keras.applications.imagenet_utils.preprocess_input(images, mode=mode),
    channels last. The default "caffe" (BGR, ImageNet mean subtracted, no
    scaling) is what keras.applications.resnet50 uses; "tf" scales to
    -1..1; "torch" scales to 0..1 and normalises by the ImageNet mean and
    std; "raw" returns the pixels as float32.
    """
    if mode not in PRESETS:
        raise ValueError(f"mode must be one of {tuple(PRESETS)}. Received: {mode!r}")
    return normalize(images, **PRESETS[mode])
