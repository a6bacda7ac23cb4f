"""The offline demo: a ResNet-50 trained on real handwritten digits, shipped
with the package, so that `edge-resnet convert` with no arguments runs to
the end on a machine with no network and gives parity numbers that mean
something (a random-init network's outputs say nothing about accuracy).

- Model: ResNet-50 (bottleneck blocks 3-4-6-3, keras.applications layer
  names) at width 0.25, 32x32 RGB input, caffe preprocessing, 10 logits.
- Training data: samples 0..1199 of scikit-learn's bundled digits (the UCI
  "Optical Recognition of Handwritten Digits" test set), each plus two
  randomly shifted copies.
- Calibration and evaluation data: samples 1200..1796, shipped as PNG files
  in `edge_resnet.calibration` and never trained on.

`python -m edge_resnet.model.demo` retrains it and rewrites the weights file
(needs scikit-learn).
"""

from importlib.resources import files

import numpy as np

DEPTH = 50
WIDTH = 0.25
INPUT_SIZE = 32
CLASSES = 10
TRAIN_SAMPLES = 1200  # digits 0..1199 train; 1200..1796 are the embedded calibration/ folder
EPOCHS = 10
SEED = 0
WEIGHTS_FILE = "resnet50_w025_digits32.weights.h5"
DESCRIPTION = (
    "demo ResNet-50 (width 0.25, 32x32 input, 10 classes) trained on scikit-learn's handwritten "
    f"digits 0..{TRAIN_SAMPLES - 1}, shipped with edge-resnet"
)
DATA_DESCRIPTION = (
    f"embedded digits {TRAIN_SAMPLES}..1796 (never trained on), 8x8 grey PNGs upscaled to "
    f"{INPUT_SIZE}x{INPUT_SIZE}"
)


def weights_path():
    return files("edge_resnet.model") / "demo_weights" / WEIGHTS_FILE


def build_demo_model(weights=None):
    """The demo architecture; `weights=None` loads the shipped weights."""
    from .resnet import build_resnet

    return build_resnet(
        DEPTH,
        input_shape=(INPUT_SIZE, INPUT_SIZE, 3),
        classes=CLASSES,
        width=WIDTH,
        classifier_activation=None,
        weights=str(weights or weights_path()) if weights != "random" else None,
        name="resnet50_demo",
    )


def digit_pixels(size, count=None, offset=0):
    """(uint8 RGB images [N, size, size, 3], labels [N]) from scikit-learn's
    bundled digits, upscaled with the toolkit's own preprocessing resize (as
    the embedded PNG files are when a model reads them)."""
    from sklearn.datasets import load_digits

    from ..data.images import resize_and_centre_crop

    digits = load_digits()
    stop = None if count is None else offset + count
    images, labels = digits.images[offset:stop], digits.target[offset:stop]
    grey = np.rint(images * (255.0 / 16.0)).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    return np.stack([resize_and_centre_crop(image, size, size) for image in rgb]), labels.astype(np.int64)


def shifted(images, seed, max_shift=3):
    """Each image moved by up to `max_shift` pixels in each direction (zero fill)."""
    rng = np.random.default_rng(seed)
    size = images.shape[1]
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = rng.integers(0, 2 * max_shift + 1, (len(images), 2))
    return np.stack([p[dy:dy + size, dx:dx + size] for p, (dy, dx) in zip(padded, offsets)])


def train_digits_resnet(size=INPUT_SIZE, epochs=8, seed=SEED, depth=18, width=0.25, verbose=0):
    """A ResNet (by default a small ResNet-18) trained on the first 1200
    digits plus two shifted copies, with logits output."""
    pixels, labels = digit_pixels(size, TRAIN_SAMPLES)
    return train_resnet(pixels, labels, epochs, seed, depth, width, verbose)


def train_resnet(pixels, labels, epochs=8, seed=SEED, depth=18, width=0.25, verbose=0):
    """A ResNet trained on square uint8 RGB `pixels` [N, size, size, 3] and
    their `labels` (ten classes) plus two shifted copies, with logits output."""
    import keras

    from .resnet import build_resnet
    from ..data.preprocess import preprocess_input

    keras.utils.set_random_seed(seed)
    size = pixels.shape[1]
    images = np.concatenate([pixels, shifted(pixels, seed + 1), shifted(pixels, seed + 2)])
    targets = np.concatenate([labels] * 3)
    model = build_resnet(
        depth, input_shape=(size, size, 3), classes=CLASSES, width=width, classifier_activation=None, seed=seed
    )
    batch_size = 32
    steps = epochs * int(np.ceil(len(images) / batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(preprocess_input(images), targets, batch_size=batch_size, epochs=epochs, verbose=verbose)
    return model


def main():
    """Retrain the demo model and rewrite the shipped weights file."""
    import os
    import tempfile
    from pathlib import Path

    from ..data.preprocess import preprocess_input

    model = train_digits_resnet(INPUT_SIZE, EPOCHS, SEED, DEPTH, WIDTH, verbose=2)
    pixels, labels = digit_pixels(INPUT_SIZE, None, offset=TRAIN_SAMPLES)
    predicted = np.argmax(model.predict(preprocess_input(pixels), verbose=0), axis=1)
    print(f"held-out top-1: {np.mean(predicted == labels):.4f} on {len(labels)} digits")
    weights_only = build_demo_model(weights="random")  # no optimizer state in the file
    weights_only.set_weights(model.get_weights())
    target = Path(str(weights_path()))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        temporary = Path(scratch) / WEIGHTS_FILE  # Keras insists on the .weights.h5 ending
        weights_only.save_weights(temporary)
        os.replace(temporary, target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
