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


def train_digits_resnet(size=32, epochs=8, seed=0):
    """A small ResNet-18 trained on the first 1200 digits (logits output)."""
    import keras

    import edge_resnet

    keras.utils.set_random_seed(seed)
    pixels, labels = digit_pixels(size, TRAIN_SAMPLES)
    model = edge_resnet.build_resnet(
        18, input_shape=(size, size, 3), classes=10, width=0.25, classifier_activation=None, seed=seed
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(edge_resnet.preprocess_input(pixels), labels, batch_size=32, epochs=epochs, verbose=0)
    return model
