"""Write the embedded digit images from scikit-learn's bundled copy of the
UCI "Optical Recognition of Handwritten Digits" test set.

    python calibration/make_digits.py

Samples FIRST..1796 of sklearn.datasets.load_digits() (the ones no model of
this project trains on) become calibration/digits/<label>/digit_<index>.png:
8x8 grayscale PNGs, the 17 grey levels 0..16 scaled to 0..255.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

FIRST = 1200  # samples 0..1199 are for training
FOLDER = Path(__file__).resolve().parent / "digits"


def main():
    digits = load_digits()
    for index in range(FIRST, len(digits.images)):
        label = int(digits.target[index])
        pixels = np.rint(digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
        path = FOLDER / str(label) / f"digit_{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(path, optimize=True)
    print(f"wrote {len(digits.images) - FIRST} images under {FOLDER}")


if __name__ == "__main__":
    main()
