"""Trained models for the fidelity benchmarks, made once and cached outside
the repository (~/.cache/edge-resnet, or $EDGE_RESNET_CACHE): a full-width
ResNet-50 at 32x32 trained on scikit-learn's digits 0..1199, the same recipe
as the shipped demo model (edge_resnet.model.demo) at width 1.

python benchmarks/trained.py   trains it if it is not cached yet
"""

import os
import sys
import time
from pathlib import Path

FULL_WIDTH_FILE = "resnet50_w1_digits32.weights.h5"


def cache_folder():
    return Path(os.environ.get("EDGE_RESNET_CACHE", Path.home() / ".cache" / "edge-resnet"))


def full_width_resnet50(log=print):
    """The full-width ResNet-50 at 32x32 with its trained weights (trained
    and cached on first use: about 10 minutes on 2 cores)."""
    from edge_resnet.model import demo
    from edge_resnet.model.resnet import build_resnet

    path = cache_folder() / FULL_WIDTH_FILE
    model = build_resnet(50, input_shape=(32, 32, 3), classes=10, width=1.0, classifier_activation=None,
                         name="resnet50_digits32")
    if not path.is_file():
        started = time.perf_counter()
        trained = demo.train_digits_resnet(32, demo.EPOCHS, demo.SEED, depth=50, width=1.0, verbose=2)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.set_weights(trained.get_weights())
        temporary = path.with_name("partial-" + path.name)
        model.save_weights(temporary)
        os.replace(temporary, path)
        log(f"trained {path.name} in {time.perf_counter() - started:.0f} s")
    model.load_weights(path)
    return model


if __name__ == "__main__":
    sys.exit(print(full_width_resnet50().name))
