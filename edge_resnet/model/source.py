"""Where a float model comes from: a .keras file or a builder name with its
options, and the record of it that artifacts and golden outputs carry.

Imports no Keras until a model is loaded, so the command line can take its
choices from here.
"""

import os

from ..files import file_sha256

BUILDER_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
SHORTCUTS = ("A", "B", "C")
STRIDE_PLACEMENTS = ("v1", "v1.5")
DEFAULT_INPUT_SIZE = 224
DEFAULT_CLASSES = 1000


def names_a_model(spec):
    """A .keras file or a builder name (as opposed to, say, a golden folder)."""
    return spec.endswith(".keras") or spec in BUILDER_NAMES


def build_named(name, input_size=None, classes=None, **options):
    """A builder name built at `input_size` (default 224) with `classes` (default 1000)."""
    from .resnet import BUILDERS

    return BUILDERS[name](input_shape=_input_shape(input_size), classes=_classes(classes), **options)


def load_named_model(spec, input_size=None, classes=None, weights=None):
    """A .keras file as saved, or a builder name with its size, classes and weights."""
    from .resnet import load_model

    if spec.endswith(".keras"):
        return load_model(spec)
    return load_model(spec, input_shape=_input_shape(input_size), classes=_classes(classes), weights=weights)


def _input_shape(input_size):
    size = DEFAULT_INPUT_SIZE if input_size is None else input_size  # 0 stays 0, for the builder to refuse
    return (size, size, 3)


def _classes(classes):
    return DEFAULT_CLASSES if classes is None else classes


def load_folded(spec, input_size=None, classes=None, weights=None, fold=True):
    """(model, fold report): the named model with BatchNorm folded, or as
    loaded (report None) when `fold` is False."""
    from .fold import fold_batchnorm

    model = load_named_model(spec, input_size, classes, weights)
    return fold_batchnorm(model) if fold else (model, None)


def save_folded(spec, output, input_size=None, classes=None, weights=None):
    """Fold BatchNorm into the preceding convolutions and save the model.

    Every BatchNormalization that directly follows a Conv2D, DepthwiseConv2D
    or Dense layer is folded into it, and the folded model is checked against
    the original on a probe batch before it is saved (.keras). Patterns that
    cannot be folded exactly are left in place and listed in the report,
    which is returned.
    """
    from ..errors import ConfigError
    from ..files import atomic_output, refuse_writing_over_inputs

    if not output.endswith(".keras"):
        raise ConfigError(f"--output must end in .keras. Received: {output}")
    refuse_writing_over_inputs([output], [spec, weights])
    folded, report = load_folded(spec, input_size, classes, weights)
    with atomic_output(output) as temporary:
        folded.save(temporary)
    return report


def model_source(spec, weights=None):
    """{"file", "sha256", "weights"} of what a model was loaded from: the
    .keras file, or the weights file of a builder name (ImageNet's cached
    file included); no file for random weights."""
    path = spec if os.path.isfile(spec) else weights
    if weights == "imagenet":
        from .weights import imagenet_weights_path

        path = imagenet_weights_path(int(spec.removeprefix("resnet")), True)
    if path and os.path.isfile(path):
        return {"file": os.path.basename(path), "sha256": file_sha256(path), "weights": str(weights or spec)}
    return {"file": None, "sha256": None, "weights": f"{spec} with random weights (seed 0)"}
