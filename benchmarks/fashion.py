"""A third real data set, and the first where the models are often unsure:
Fashion-MNIST (Zalando; 28x28 grey photographs of ten kinds of clothing),
read from Debian's package (`apt-get install dataset-fashion-mnist`: the four
gzipped IDX files under /usr/share/datasets/fashion-mnist, no network at run
time).

Why it is here: on the digits and the MNIST sample the models are right on
about 99% of images, so a softmax head's output error sits in the handful of
images the model is unsure of, and 300 to 1250 evaluation images could not
tell the range rules apart (benchmarks/results/choice_noise.md). A model of
users' kind (ImageNet's are right on three images in four) is unsure of many
images; here the small ResNets are right on about nine in ten, and every
calibration subset is judged on the same 10,000 test images.

Split (fixed before any result was seen): the training set in ORDER_SEED's
order; its first TRAIN_IMAGES train the models, the next POOL_IMAGES are
never trained on and the calibration subsets are drawn from them; the
10,000 test images evaluate.
"""

import gzip
from pathlib import Path

import numpy as np

FOLDER = Path("/usr/share/datasets/fashion-mnist")
TRAIN_IMAGES = 4000
POOL_IMAGES = 4000
ORDER_SEED = 13
SUBSET_SEED = 17


def idx_array(path):
    """The array of an IDX file (gzipped): the magic's last byte is the rank, then one big-endian uint32 per
    dimension, then unsigned bytes."""
    if not path.is_file():
        raise SystemExit(f"no Fashion-MNIST file at {path}: apt-get install dataset-fashion-mnist")
    with gzip.open(path, "rb") as file:
        content = file.read()
    assert content[:3] == b"\0\0\x08", f"{path}: not an IDX file of unsigned bytes"
    rank = content[3]
    shape = np.frombuffer(content[4:4 + 4 * rank], dtype=">u4").astype(int)
    values = np.frombuffer(content[4 + 4 * rank:], dtype=np.uint8)
    assert values.size == np.prod(shape), f"{path}: {values.size} bytes for shape {tuple(shape)}"
    return values.reshape(shape)


def rgb_at(grey, size):
    """uint8 RGB images at `size`, resized with the toolkit's own preprocessing resize."""
    from edge_resnet.data.images import resize_and_centre_crop

    rgb = np.repeat(grey[..., None], 3, axis=-1)
    return np.stack([resize_and_centre_crop(image, size, size) for image in rgb])


def fashion_training(size):
    """(pixels, labels) the models train on."""
    grey, labels = _ordered_train()
    return rgb_at(grey[:TRAIN_IMAGES], size), labels[:TRAIN_IMAGES].astype(np.int64)


def fashion_pool(size):
    """(pixels, labels) of the training images no model trained on, where calibration images come from."""
    grey, labels = _ordered_train()
    pool = slice(TRAIN_IMAGES, TRAIN_IMAGES + POOL_IMAGES)
    return rgb_at(grey[pool], size), labels[pool].astype(np.int64)


def fashion_test(size):
    """(pixels, labels) of the 10,000 test images, which evaluate."""
    return (rgb_at(idx_array(FOLDER / "t10k-images-idx3-ubyte.gz"), size),
            idx_array(FOLDER / "t10k-labels-idx1-ubyte.gz").astype(np.int64))


def fashion_splits(size, subsets, subset_size):
    """Per subset: (calibration pixels, labels, evaluation pixels, labels); the subsets are disjoint draws from
    the never-trained-on pool, and all of them are evaluated on the whole test set."""
    assert subsets * subset_size <= POOL_IMAGES, f"{subsets} disjoint subsets of {subset_size} need more images"
    pool_pixels, pool_labels = fashion_pool(size)
    test_pixels, test_labels = fashion_test(size)
    order = np.random.default_rng(SUBSET_SEED).permutation(POOL_IMAGES)
    return [(pool_pixels[picked], pool_labels[picked], test_pixels, test_labels)
            for picked in (order[index * subset_size:(index + 1) * subset_size] for index in range(subsets))]


def _ordered_train():
    grey = idx_array(FOLDER / "train-images-idx3-ubyte.gz")
    labels = idx_array(FOLDER / "train-labels-idx1-ubyte.gz")
    assert len(grey) == len(labels) >= TRAIN_IMAGES + POOL_IMAGES, f"{len(grey)} images, {len(labels)} labels"
    order = np.random.default_rng(ORDER_SEED).permutation(len(grey))
    return grey[order], labels[order]
