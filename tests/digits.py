"""scikit-learn's bundled handwritten digits (real data, shipped inside the
package) as RGB images of any size, and small ResNets trained on them: the
same helpers that train the shipped demo model; and a small MobileNetV2-style
network, the tests' model that is not a ResNet.

The tests' ResNet-18 and MobileNet are trained once and their weights are
kept in tests/data (`python -m tests.digits` trains the ResNet again and
rewrites its weights, `python -m tests.digits mobilenet` the MobileNet's), so
that a test run loads a trained model instead of spending a minute of CPU
on training it.
"""

from pathlib import Path

from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels, shifted, train_digits_resnet  # noqa: F401

DIGITS_RESNET18_WEIGHTS = Path(__file__).parent / "data" / "resnet18_w025_digits32.weights.h5"
DIGITS_RESNET18 = {"depth": 18, "input_shape": (32, 32, 3), "classes": 10, "width": 0.25,
                   "classifier_activation": None}


def trained_digits_resnet():
    """The ResNet-18 (width 0.25, 32x32, logits) that train_digits_resnet()
    made, with the weights it saved in tests/data."""
    from edge_resnet.model.resnet import build_resnet

    model = build_resnet(**DIGITS_RESNET18)
    model.load_weights(DIGITS_RESNET18_WEIGHTS)
    return model


DIGITS_MOBILENET_WEIGHTS = Path(__file__).parent / "data" / "mobilenet_digits32.weights.h5"
MOBILENET_BLOCKS = ((4, 16, 1), (4, 24, 2), (4, 24, 1))  # (expansion, channels out, stride) of each block


def inverted_residual(x, index, expansion, channels, stride):
    """A MobileNetV2 block with keras.applications' layer names: 1x1
    expansion, 3x3 depthwise, 1x1 projection, and a skip connection where
    the shape allows."""
    from keras import layers

    prefix = f"block_{index}_"
    skip = x
    for layer in (layers.Conv2D(x.shape[-1] * expansion, 1, use_bias=False, name=prefix + "expand"),
                  layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=prefix + "depthwise")):
        x = layers.BatchNormalization(name=layer.name + "_BN")(layer(x))
        x = layers.ReLU(6.0, name=layer.name + "_relu")(x)
    x = layers.Conv2D(channels, 1, use_bias=False, name=prefix + "project")(x)
    x = layers.BatchNormalization(name=prefix + "project_BN")(x)
    if stride == 1 and skip.shape[-1] == channels:
        x = layers.Add(name=prefix + "add")([skip, x])
    return x


def small_mobilenet(classifier_activation=None):
    """A small MobileNetV2-style network for 32x32 digits (not a ResNet: no
    convN_blockM names), ten classes."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = layers.ReLU(6.0, name="Conv1_relu")(layers.BatchNormalization(name="bn_Conv1")(x))
    for index, block in enumerate(MOBILENET_BLOCKS, 1):
        x = inverted_residual(x, index, *block)
    x = layers.Conv2D(64, 1, use_bias=False, name="Conv_1")(x)
    x = layers.ReLU(6.0, name="out_relu")(layers.BatchNormalization(name="Conv_1_bn")(x))
    x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    outputs = layers.Dense(10, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, outputs, name="mobilenet_digits")


def trained_digits_mobilenet():
    """small_mobilenet() with the weights train_digits_mobilenet() saved in tests/data."""
    model = small_mobilenet()
    model.load_weights(DIGITS_MOBILENET_WEIGHTS)
    return model


def train_digits_mobilenet(epochs=6, seed=5):
    """small_mobilenet() trained on the first 1200 digits plus two shifted
    copies (caffe preprocessing, logits), as the ResNets are."""
    import keras
    import numpy as np

    from edge_resnet.data.preprocess import preprocess_input

    keras.utils.set_random_seed(seed)
    pixels, labels = digit_pixels(32, TRAIN_SAMPLES)
    images = np.concatenate([pixels, shifted(pixels, seed + 1), shifted(pixels, seed + 2)])
    model = small_mobilenet()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(preprocess_input(images), np.concatenate([labels] * 3), batch_size=32, epochs=epochs, verbose=2)
    return model


def softmax_twin(model):
    """The same network and weights with a softmax head (keras.applications' default)."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"].get("name") == "predictions":
            layer["config"]["activation"] = "softmax"
    twin = model.__class__.from_config(config)
    twin.set_weights(model.get_weights())
    return twin


def save_weights(trained, untrained, path):
    """`trained`'s weights into `path` through `untrained` (not compiled: no optimizer state in the file)."""
    untrained.set_weights(trained.get_weights())
    path.parent.mkdir(exist_ok=True)
    untrained.save_weights(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    import sys

    from edge_resnet.model.resnet import build_resnet

    if sys.argv[1:] == ["mobilenet"]:
        save_weights(train_digits_mobilenet(), small_mobilenet(), DIGITS_MOBILENET_WEIGHTS)
        sys.exit(0)
    trained = train_digits_resnet(**{key: DIGITS_RESNET18[key] for key in ("depth", "width")})
    save_weights(trained, build_resnet(**DIGITS_RESNET18), DIGITS_RESNET18_WEIGHTS)
