"""scikit-learn's bundled handwritten digits (real data, shipped inside the
package) as RGB images of any size."""

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def digit_pixels(size, count=None, offset=0):
    """(images uint8 [N, size, size, 3] in 0..255, labels [N])."""
    digits = load_digits()
    stop = None if count is None else offset + count
    images, labels = digits.images[offset:stop], digits.target[offset:stop]
    resized = [
        np.asarray(Image.fromarray((image * (255.0 / 16.0)).astype(np.uint8)).resize((size, size), Image.BILINEAR))
        for image in images
    ]
    rgb = np.repeat(np.stack(resized)[..., None], 3, axis=-1)
    return rgb, labels.astype(np.int64)


TRAIN_SAMPLES = 1200  # digits 0..1199 train; 1200..1796 are the embedded calibration/ folder


def shifted(images, seed, max_shift=3):
    """Each image moved by up to `max_shift` pixels in each direction (zero fill)."""
    rng = np.random.default_rng(seed)
    size = images.shape[1]
    padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = rng.integers(0, 2 * max_shift + 1, (len(images), 2))
    return np.stack([p[dy:dy + size, dx:dx + size] for p, (dy, dx) in zip(padded, offsets)])


def train_digits_resnet(size=32, epochs=8, seed=0, depth=18, width=0.25):
    """A ResNet (by default a small ResNet-18) trained on the first 1200
    digits plus two shifted copies (logits output). The default reaches
    about 98% on the held-out digits."""
    import keras

    import edge_resnet

    keras.utils.set_random_seed(seed)
    pixels, labels = digit_pixels(size, TRAIN_SAMPLES)
    images = np.concatenate([pixels, shifted(pixels, seed + 1), shifted(pixels, seed + 2)])
    targets = np.concatenate([labels] * 3)
    model = edge_resnet.build_resnet(
        depth, input_shape=(size, size, 3), classes=10, width=width, classifier_activation=None, seed=seed
    )
    batch_size = 32
    steps = epochs * int(np.ceil(len(images) / batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(edge_resnet.preprocess_input(images), targets, batch_size=batch_size, epochs=epochs, verbose=0)
    return model
