"""Where a float model comes from: a .keras file or a builder name with its
options, and the record of it that artifacts and golden outputs carry.

Imports no Keras until a model is loaded, so the command line can take its
choices from here.
"""

import os
from dataclasses import dataclass

from ..files import file_sha256
from ..options import given_fields, option

BUILDER_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
SHORTCUTS = ("A", "B", "C")
STRIDE_PLACEMENTS = ("v1", "v1.5")
DEFAULT_INPUT_SIZE = 224
DEFAULT_CLASSES = 1000


MODEL_HELP = "a .keras file, or a builder name such as resnet50"


@dataclass(frozen=True, kw_only=True)
class SizeRequest:
    input_size: int = option("--input-size", default=None, type=int, metavar="PIXELS",
                             help="square input size of a builder name, 32 upward (default: 224; 32 for convert's demo)")
    classes: int = option("--classes", default=None, type=int,
                          help="outputs of a builder name (default: 1000; 10 for convert's demo)")


@dataclass(frozen=True, kw_only=True)
class ModelRequest(SizeRequest):
    weights: str = option("--weights", default=None, metavar="imagenet|random|demo|PATH",
                          help="weights of a builder name: imagenet (Keras cache or download), random, a "
                               ".keras/.weights.h5/.h5 file, or demo (convert only, its resnet50 default: trained "
                               "on digits, shipped); default: random")


@dataclass(frozen=True)
class SummaryRequest(SizeRequest):
    """A builder name and its architecture options."""

    model: str = option("--model", default="resnet50", choices=BUILDER_NAMES, help="network depth")
    shortcut: str = option("--shortcut", default=None, choices=SHORTCUTS,
                           help="A zero-pad, B projection where dimensions change (default), C always")
    stride_at: str = option("--stride-at", default=None, choices=STRIDE_PLACEMENTS,
                            help="bottleneck stride on the 1x1 (v1, default) or the 3x3 (v1.5)")
    plain: bool = option("--plain", default=None, action="store_true", help="no shortcuts (the paper's plain net)")
    width: float = option("--width", default=None, type=float, help="filter multiplier (default: 1.0)")


@dataclass(frozen=True)
class FoldRequest(ModelRequest):
    """A model to fold and where to save it."""

    model: str = option(metavar="MODEL", help=MODEL_HELP)
    output: str = option("--output", metavar="FILE.keras", help="where to save the folded model")


def summary_table(request):
    """Per-stage output shapes, parameters and multiply-accumulates of a ResNet, with totals.

    The ResNet is the SummaryRequest's builder name, built with its
    architecture options; the table is returned as text."""
    from .summary import format_stage_table

    check_architecture_options(request)
    options = given_fields(request)
    return format_stage_table(build_named(options.pop("model"), **options))


def check_architecture_options(request):
    """Refuse an architecture option the network has nothing to apply to:
    it would be dropped without a word."""
    from ..errors import ConfigError
    from .resnet import RESNET_SPECS

    if request.plain and request.shortcut:
        raise ConfigError("--plain builds the network without shortcuts, so --shortcut has none to set; leave one out")
    if request.stride_at and RESNET_SPECS[int(request.model.removeprefix("resnet"))].block == "basic":
        raise ConfigError(f"--stride-at places the stride inside a bottleneck block, and {request.model} has basic "
                          "blocks (resnet50 and deeper have bottlenecks); leave it out")


def names_a_model(spec):
    """A .keras file or a builder name (as opposed to, say, a golden folder)."""
    return spec.endswith(".keras") or spec in BUILDER_NAMES


def build_named(name, input_size=None, classes=None, **options):
    """A builder name built at `input_size` (default 224) with `classes` (default 1000)."""
    from .resnet import BUILDERS

    return BUILDERS[name](input_shape=_input_shape(input_size), classes=_classes(classes), **options)


def load_named_model(spec, input_size=None, classes=None, weights=None, seed=0):
    """A .keras file as saved, or a builder name with its size, classes and
    weights (random ones drawn from `seed`)."""
    from .resnet import load_model

    if spec.endswith(".keras"):
        model = load_model(spec)
        check_keras_file_options(model, spec, input_size, classes, weights)
        return model
    if weights == "demo":
        from ..errors import ConfigError

        raise ConfigError("--weights demo is convert's offline demo model; for this command, run edge-resnet "
                          "convert --quantize none and give it the resnet50_demo_folded.keras it writes")
    return load_model(spec, input_shape=_input_shape(input_size), classes=_classes(classes), weights=weights,
                      seed=seed)


def check_keras_file_options(model, spec, input_size, classes, weights):
    """Refuse builder options given with a .keras file that it does not
    match: they would be ignored, and a recipe would record weights the
    model was not loaded with. The file's own size or classes, repeated,
    pass."""
    from ..errors import ConfigError

    size = tuple(model.input_shape[1:3]) if isinstance(model.input_shape, tuple) else None
    outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    given = [f"--weights {weights}" if weights is not None else None,
             f"--input-size {input_size}" if input_size is not None and (input_size, input_size) != size else None,
             f"--classes {classes}" if classes is not None and classes != outputs else None]
    given = [text for text in given if text]
    if given:
        takes = f"takes {size[0]}x{size[1]} images" if size and None not in size else "fixes its own input size"
        gives = f"to {outputs} outputs" if isinstance(outputs, int) else "and outputs"
        raise ConfigError(f"{', '.join(given)} for {os.path.basename(spec)}, which carries its own weights and {takes} "
                          f"{gives}: --weights, --input-size and --classes apply to builder names; leave them out")


def image_model_problem(model, parity=True):
    """Why images cannot be fed to `model` (and, with `parity`, its outputs not compared per image), or None."""
    channels = model.input_shape[-1]
    if channels != 3:
        return (f"it takes {channels}-channel images, and edge-resnet feeds RGB images (3 channels) to calibrate and "
                "check a model; give it a model with an RGB input")
    if parity and len(model.output_shape) != 2:
        return (f"its output is {tuple(model.output_shape[1:])} per image, and parity is measured on one vector per "
                "image (class scores); end the model with GlobalAveragePooling2D or Flatten")
    return None


def check_image_model(model, parity=True):
    from ..errors import ModelError

    if problem := image_model_problem(model, parity):
        raise ModelError(f"model {model.name!r} cannot be calibrated or checked here: {problem}")


def check_runs_here(model):
    """Refuse, in one line, a model this machine's Keras backend cannot run
    (the fold does the same for the commands that fold)."""
    import numpy as np

    from .fold import runnable_outputs

    runnable_outputs(model, np.zeros((1, *model.input_shape[1:]), np.float32))


def _input_shape(input_size):
    size = DEFAULT_INPUT_SIZE if input_size is None else input_size  # 0 stays 0, for the builder to refuse
    return (size, size, 3)


def _classes(classes):
    return DEFAULT_CLASSES if classes is None else classes


def load_folded(spec, input_size=None, classes=None, weights=None, fold=True, seed=0):
    """(model, fold report): the named model with BatchNorm folded, or as
    loaded (report None) when `fold` is False."""
    from .fold import fold_batchnorm

    model = load_named_model(spec, input_size, classes, weights, seed)
    return fold_batchnorm(model) if fold else (model, None)


def save_folded(request):
    """Fold BatchNorm into the preceding convolutions and save the model.

    Every BatchNormalization that directly follows a Conv2D, DepthwiseConv2D,
    SeparableConv2D or Dense layer is folded into it; one of an image with
    nothing to fold into (after an addition, a pooling, an activation)
    becomes a 1x1 DepthwiseConv2D computing the same; the folded model is
    checked against the original on a probe batch before it is saved
    (.keras). Patterns that cannot be computed exactly either way are left in
    place and listed in the report, which is returned.
    """
    from ..errors import ConfigError
    from ..files import atomic_output, refuse_writing_over_inputs

    output = request.output
    if not output.endswith(".keras"):
        raise ConfigError(f"--output must end in .keras. Received: {output}")
    refuse_writing_over_inputs([output], [request.model, request.weights])
    folded, report = load_folded(request.model, request.input_size, request.classes, request.weights)
    with atomic_output(output) as temporary:
        folded.save(temporary)
    return report


def model_source(spec, weights=None, seed=0):
    """{"file", "sha256", "weights"} of what a model was loaded from: the
    .keras file, or the weights file of a builder name (ImageNet's cached
    file included); no file for random weights."""
    path = spec if os.path.isfile(spec) else weights
    if weights == "imagenet":
        from .weights import imagenet_weights_path

        path = imagenet_weights_path(int(spec.removeprefix("resnet")), True)
    if path and os.path.isfile(path):
        return {"file": os.path.basename(path), "sha256": file_sha256(path), "weights": str(weights or spec)}
    return {"file": None, "sha256": None, "weights": f"{spec} with random weights (seed {seed})"}
