"""The ResNet family of He et al., "Deep Residual Learning for Image
Recognition" (2015), Table 1, in pure Keras 3.

No TensorFlow calls in here: the same models run under the JAX or torch
backends. Layer names and weight shapes of ResNet-50/101/152 (stride "v1",
shortcut "B") are those of keras.applications.ResNet50/101/152, so published
weight files and user checkpoints load by name.
"""

import itertools
import math
from dataclasses import dataclass
from functools import partial

import keras
import numpy as np
from keras import layers

from ..errors import ConfigError
from ..data.preprocess import CAFFE_MEAN_BGR
from .source import SHORTCUTS, STRIDE_PLACEMENTS


@dataclass(frozen=True)
class ResNetSpec:
    """One row of the paper's Table 1."""

    block: str  # "basic" (two 3x3) or "bottleneck" (1x1, 3x3, 1x1)
    blocks_per_stage: tuple

    @property
    def expansion(self):
        return 4 if self.block == "bottleneck" else 1


RESNET_SPECS = {
    18: ResNetSpec("basic", (2, 2, 2, 2)),
    34: ResNetSpec("basic", (3, 4, 6, 3)),
    50: ResNetSpec("bottleneck", (3, 4, 6, 3)),
    101: ResNetSpec("bottleneck", (3, 4, 23, 3)),
    152: ResNetSpec("bottleneck", (3, 8, 36, 3)),
}
STAGE_FILTERS = (64, 128, 256, 512)  # conv2_x .. conv5_x, before expansion
POOLINGS = (None, "avg", "max")
MIN_INPUT_SIZE = 32  # five stride-2 steps
# the builders' largest: beyond them one network or one image of activations outgrows a machine's memory (a
# traceback deep in numpy or TensorFlow); a .keras file of any size still loads
MAX_INPUT_SIZE = 4096
MAX_CLASSES = 100_000
MAX_WIDTH = 4.0
BN_EPSILON = 1.001e-5  # keras.applications' value, needed for weight parity
CHANNELS_AXIS = 3
PREPROCESS_LAYER = "preprocess"


@dataclass(frozen=True)
class _Builder:
    """What every block needs besides its own arguments."""

    shortcut: str
    stride_at: str
    plain: bool
    seeds: itertools.count

    def initializer(self):
        return keras.initializers.GlorotUniform(seed=next(self.seeds))

    def conv_bn(self, x, filters, kernel_size, stride, name, padding="valid"):
        x = layers.Conv2D(
            filters,
            kernel_size,
            strides=stride,
            padding=padding,
            kernel_initializer=self.initializer(),
            name=name + "_conv",
        )(x)
        return layers.BatchNormalization(
            axis=CHANNELS_AXIS, epsilon=BN_EPSILON, name=name + "_bn"
        )(x)

    def shortcut_path(self, x, out_channels, stride, name):
        """The identity/projection path of a block, or None for plain nets."""
        if self.plain:
            return None
        in_channels = x.shape[-1]
        dimensions_change = stride != 1 or in_channels != out_channels
        if self.shortcut == "C" or (self.shortcut == "B" and dimensions_change):
            return self.conv_bn(x, out_channels, 1, stride, name + "_0")
        if not dimensions_change:
            return x
        if stride != 1:
            x = layers.MaxPooling2D(1, strides=stride, name=name + "_0_pool")(x)
        return _zero_pad_channels(x, out_channels - in_channels, name + "_0")


def _zero_pad_channels(x, extra_channels, name):
    """Option A: append zero channels, parameter-free, with standard layers
    only (a channel axis padded as the last spatial axis of a 5-D tensor), so
    the model saves and converts without custom objects."""
    height, width, channels = x.shape[1:]
    x = layers.Reshape((height, width, channels, 1), name=name + "_expand")(x)
    x = layers.ZeroPadding3D(((0, 0), (0, 0), (0, extra_channels)), name=name + "_pad")(x)
    return layers.Reshape((height, width, channels + extra_channels), name=name + "_squeeze")(x)


def _merge(residual, shortcut, name):
    if shortcut is not None:
        residual = layers.Add(name=name + "_add")([shortcut, residual])
    return layers.Activation("relu", name=name + "_out")(residual)


def basic_block(x, filters, stride, name, builder):
    """Two 3x3 convolutions (ResNet-18/34). Stride sits on the first one."""
    shortcut = builder.shortcut_path(x, filters, stride, name)
    y = builder.conv_bn(x, filters, 3, stride, name + "_1", padding="same")
    y = layers.Activation("relu", name=name + "_1_relu")(y)
    y = builder.conv_bn(y, filters, 3, 1, name + "_2", padding="same")
    return _merge(y, shortcut, name)


def bottleneck_block(x, filters, stride, name, builder):
    """1x1 reduce, 3x3, 1x1 restore (x4). "v1" strides the first 1x1 as
    keras.applications does; "v1.5" strides the 3x3."""
    out_channels = 4 * filters
    shortcut = builder.shortcut_path(x, out_channels, stride, name)
    stride_1x1, stride_3x3 = (stride, 1) if builder.stride_at == "v1" else (1, stride)
    y = builder.conv_bn(x, filters, 1, stride_1x1, name + "_1")
    y = layers.Activation("relu", name=name + "_1_relu")(y)
    y = builder.conv_bn(y, filters, 3, stride_3x3, name + "_2", padding="same")
    y = layers.Activation("relu", name=name + "_2_relu")(y)
    y = builder.conv_bn(y, out_channels, 1, 1, name + "_3")
    return _merge(y, shortcut, name)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def preprocessing_layer():
    """The caffe preprocessing as a fixed 1x1 convolution (RGB->BGR
    permutation, bias = -mean): exact, standard, and quantizable, so a device
    can feed raw pixels."""
    rgb_to_bgr = np.eye(3, dtype=np.float32)[::-1].reshape(1, 1, 3, 3)
    minus_mean = -np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)
    return layers.Conv2D(
        3,
        1,
        kernel_initializer=keras.initializers.Constant(0.0),
        trainable=False,
        name=PREPROCESS_LAYER,
    ), [rgb_to_bgr, minus_mean]


def _validate(depth, input_shape, shortcut, stride_at, pooling, classes, width):
    if depth not in RESNET_SPECS:
        raise ConfigError(
            f"depth must be one of {sorted(RESNET_SPECS)}. Received: depth={depth}"
        )
    if shortcut not in SHORTCUTS:
        raise ConfigError(
            f"shortcut must be one of {SHORTCUTS}. Received: shortcut={shortcut!r}"
        )
    if stride_at not in STRIDE_PLACEMENTS:
        raise ConfigError(
            f"stride_at must be one of {STRIDE_PLACEMENTS}. Received: stride_at={stride_at!r}"
        )
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if len(input_shape) != 3 or any(
        not isinstance(size, (int, np.integer)) or size < 1 for size in input_shape
    ):
        raise ConfigError(
            "input_shape must be (height, width, channels) of positive integers, "
            f"channels last. Received: input_shape={input_shape}"
        )
    if min(input_shape[:2]) < MIN_INPUT_SIZE:
        raise ConfigError(
            f"input height and width must be at least {MIN_INPUT_SIZE} (the network "
            f"downsamples by 32). Received: input_shape={input_shape}"
        )
    if max(input_shape[:2]) > MAX_INPUT_SIZE:
        raise ConfigError(f"input height and width must be at most {MAX_INPUT_SIZE} (larger activations outgrow "
                          f"memory). Received: input_shape={input_shape}")
    if not isinstance(classes, (int, np.integer)) or classes < 1:
        raise ConfigError(f"classes must be a positive integer. Received: classes={classes}")
    if classes > MAX_CLASSES:
        raise ConfigError(f"classes must be at most {MAX_CLASSES:,} (a larger classifier outgrows memory). "
                          f"Received: classes={classes}")
    if not (math.isfinite(width) and 0 < width <= MAX_WIDTH):
        raise ConfigError(f"width must be a positive number up to {MAX_WIDTH:g} (1.0 is the paper's network; wider "
                          f"outgrows memory). Received: width={width}")


def build_resnet(
    depth=50,
    *,
    input_shape=(224, 224, 3),
    classes=1000,
    include_top=True,
    pooling=None,
    shortcut="B",
    stride_at="v1",
    plain=False,
    width=1.0,
    classifier_activation="softmax",
    preprocessing=False,
    weights=None,
    seed=0,
    name=None,
):
    """Build a ResNet of the given depth (18, 34, 50, 101 or 152).

    Args:
        input_shape: (height, width, channels), channels last, 32x32 upward.
        classes, include_top, pooling, classifier_activation: as in
            keras.applications (pooling applies when include_top is False).
        shortcut: "A" zero-padding identity where dimensions grow,
            "B" projection only where dimensions change (default),
            "C" projection on every block.
        stride_at: "v1" strides the first 1x1 of a bottleneck block,
            "v1.5" strides its 3x3. Basic blocks have a single place for it.
        plain: no shortcuts at all (the paper's plain counterpart).
        width: multiplier on every convolution's filter count (for small
            test models; 1.0 is the paper's network).
        preprocessing: put the caffe preprocessing inside the model, so it
            takes RGB pixels in [0, 255].
        weights: None or "random" (initialised from `seed`), "imagenet", or
            a path to a .keras, .weights.h5 or legacy Keras 2 .h5 file.
        seed: seed for the random initialisation; same seed, same weights.
    """
    input_shape = tuple(input_shape)
    _validate(depth, input_shape, shortcut, stride_at, pooling, classes, width)
    spec = RESNET_SPECS[depth]
    builder = _Builder(shortcut, stride_at, plain, itertools.count(seed))
    block_fn = BLOCKS[spec.block]

    def scaled(filters):
        return max(1, int(round(filters * width)))

    inputs = layers.Input(shape=input_shape, name="input_layer")
    x = inputs
    fixed_weights = None
    if preprocessing:
        preprocess, fixed_weights = preprocessing_layer()
        x = preprocess(x)
    x = layers.ZeroPadding2D(((3, 3), (3, 3)), name="conv1_pad")(x)
    x = builder.conv_bn(x, scaled(64), 7, 2, "conv1")
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    for stage, (filters, blocks) in enumerate(zip(STAGE_FILTERS, spec.blocks_per_stage)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            block_name = f"conv{stage + 2}_block{block + 1}"
            x = block_fn(x, scaled(filters), stride, block_name, builder)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=builder.initializer(),
            name="predictions",
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    model = keras.Model(inputs, x, name=name or default_model_name(depth, plain))
    if fixed_weights is not None:
        model.get_layer(PREPROCESS_LAYER).set_weights(fixed_weights)
    if weights not in (None, "random"):
        _load_weights(model, weights, depth, include_top)
    return model


def _load_weights(model, weights, depth, include_top):
    from . import weights as weight_files

    if weights == "imagenet":
        _check_imagenet_layout(model, depth, include_top)
        weights = weight_files.imagenet_weights_path(depth, include_top)
    weight_files.load_weights(model, weights, ignore=(PREPROCESS_LAYER,))


def _check_imagenet_layout(model, depth, include_top):
    """The published files fit one layout only; a file that loads by name into
    another layout (v1.5 strides, say) would give silently wrong outputs."""
    config = model.get_config()
    expected = build_resnet(
        depth,
        input_shape=model.input_shape[1:],
        include_top=include_top,
        name=model.name,
        preprocessing=PREPROCESS_LAYER in [layer.name for layer in model.layers],
        classifier_activation=None,
    )
    if model.input_shape[-1] != 3 or _layout(config) != _layout(expected.get_config()):
        raise ConfigError(
            f"weights='imagenet' needs the keras.applications layout of ResNet-{depth}: "
            "shortcut='B', stride_at='v1', plain=False, width=1.0, 3 input channels"
            + (", classes=1000" if include_top else "")
            + ". Build it with those settings, or load your own weights file."
        )


def _layout(config):
    """Layer names, kinds and the arguments that shape computation."""
    shaping_keys = ("filters", "kernel_size", "strides", "padding", "units", "pool_size")
    return [
        (layer["name"], layer["class_name"], {k: layer["config"].get(k) for k in shaping_keys})
        for layer in config["layers"]
        if layer["class_name"] != "InputLayer"
    ]


def default_model_name(depth, plain=False):
    return f"{'plain' if plain else 'resnet'}{depth}"


resnet18 = partial(build_resnet, 18)
resnet34 = partial(build_resnet, 34)
resnet50 = partial(build_resnet, 50)
resnet101 = partial(build_resnet, 101)
resnet152 = partial(build_resnet, 152)

BUILDERS = {default_model_name(depth): partial(build_resnet, depth) for depth in RESNET_SPECS}


def load_model(spec, **build_options):
    """A model from a builder name ("resnet50", ...) with `build_options`,
    or from a saved .keras file."""
    from pathlib import Path

    from ..errors import ModelError

    if spec in BUILDERS:
        return BUILDERS[spec](**build_options)
    path = Path(spec)
    if path.suffix != ".keras":
        raise ModelError(
            f"MODEL must be a builder name ({', '.join(BUILDERS)}) or a .keras file. Received: {spec}"
        )
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a Keras model file: a .keras model is a zip archive, and this one is "
                         "truncated, damaged or another kind of file; save the model again with model.save()")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError) as error:
        reason = " ".join(str(error).split())
        if "safe_mode" in reason:
            raise ModelError(
                f"{path} holds Python code (a Lambda layer); edge-resnet loads .keras files in Keras safe mode "
                "and never runs code from them: replace the Lambda with standard layers and save the model again"
            ) from error
        if "Could not locate class" in reason:
            raise ModelError(
                f"cannot load {path}: it uses a layer class whose code is not in the file (a custom layer); rebuild "
                "it from standard Keras layers, or convert it to a float32 .tflite yourself and quantize that"
            ) from error
        raise ModelError(f"cannot load {path} as a Keras model: {reason[:300]}") from error
    if problem := model_structure_problem(model):
        raise ModelError(f"{path} cannot be converted: {problem}")
    from .flatten import without_nested_models

    return without_nested_models(model)


def model_structure_problem(model):
    """Why a loaded model is not one this toolkit converts (one image input of fixed size, one output), or None."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:  # a Sequential model saved before it was built
        return "it was saved before it was built; build it on an input (keras.Input) and save it again"
    if len(inputs) != 1 or len(outputs) != 1:
        return (f"it has {len(inputs)} input(s) and {len(outputs)} output(s), where an image classifier "
                "has one of each; save a model with one input and one output")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        return f"its input is {shape}, where edge-resnet feeds images (batch, height, width, channels)"
    if any(size is None for size in shape[1:]):
        return (f"its input size is not fixed ({shape[1:]}); save it with a fixed size, e.g. with "
                "keras.Input((224, 224, 3)) as its input")
    return None
