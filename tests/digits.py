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
