"""Trained models for the fidelity benchmarks, made once and cached outside
the repository (~/.cache/edge-resnet, or $EDGE_RESNET_CACHE), each trained
on scikit-learn's digits 0..1199 (the MNIST models of `mnist_models` on
2500 images of the MNIST sample, benchmarks/mnist.py) with the recipe of the
shipped demo model (edge_resnet.model.demo):

- a full-width ResNet-50 at 32x32 (seed 0, as the demo at width 1);
- a ResNet-34 at width 0.5 and 48x48 (seed 7): a model no range rule of
  edge-resnet was ever chosen or checked on before `auto` was fixed.

Models are trained with a logits output and cross-entropy on the logits;
their softmax-head twins (`with_softmax`) carry the same weights, which is
the model that training with a softmax output and cross-entropy on the
probabilities learns (the loss is the same function of the weights).

python benchmarks/trained.py   trains what is not cached yet
"""

import os
import sys
import time
from pathlib import Path

FULL_WIDTH_FILE = "resnet50_w1_digits32.weights.h5"
UNSEEN_FILE = "resnet34_w05_digits48_seed7.weights.h5"
VALIDATION_FILE = "resnet18_w05_digits40_seed11.weights.h5"
LOGIT_SCORING_FILE = "resnet101_w025_digits32_seed23.weights.h5"
TEMPERATURE_SCORING_FILE = "resnet152_w025_digits32_seed29.weights.h5"
SOFTMAX_FLOOR_FILE = "resnet50_w05_digits32_seed41.weights.h5"


def cache_folder():
    return Path(os.environ.get("EDGE_RESNET_CACHE", Path.home() / ".cache" / "edge-resnet"))


def cached_trained(file_name, depth, width, size, seed, name, log=print, training=None):
    """The ResNet with its trained weights (trained and cached on first use), on the digits or on what
    `training()` returns (uint8 pixels [images, size, size, 3], labels), called only when training."""
    from edge_resnet.model import demo
    from edge_resnet.model.resnet import build_resnet

    path = cache_folder() / file_name
    model = build_resnet(depth, input_shape=(size, size, 3), classes=10, width=width, classifier_activation=None,
                         name=name)
    if not path.is_file():
        started = time.perf_counter()
        pixels, labels = training() if training is not None else demo.digit_pixels(size, demo.TRAIN_SAMPLES)
        assert pixels.shape[1:3] == (size, size), f"training pixels of {pixels.shape[1:3]} for a {size}x{size} model"
        trained = demo.train_resnet(pixels, labels, demo.EPOCHS, seed, depth=depth, width=width, verbose=2)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.set_weights(trained.get_weights())
        temporary = path.with_name("partial-" + path.name)
        model.save_weights(temporary)
        os.replace(temporary, path)
        log(f"trained {path.name} in {time.perf_counter() - started:.0f} s")
    model.load_weights(path)
    return model


def full_width_resnet50(log=print):
    """The full-width ResNet-50 at 32x32 (about 10 minutes to train on 2 cores)."""
    return cached_trained(FULL_WIDTH_FILE, 50, 1.0, 32, 0, "resnet50_digits32", log)


def unseen_resnet34(log=print):
    """ResNet-34 at width 0.5 and 48x48, seed 7 (about 5 minutes to train on 2 cores)."""
    return cached_trained(UNSEEN_FILE, 34, 0.5, 48, 7, "resnet34_digits48", log)


def validation_resnet18(log=print):
    """ResNet-18 at width 0.5 and 40x40, seed 11: trained after the selection
    statistics of benchmarks/auto_rules.py were compared, to check the
    comparison on a model it never saw."""
    return cached_trained(VALIDATION_FILE, 18, 0.5, 40, 11, "resnet18_digits40", log)


def logit_scoring_resnet101(log=print):
    """ResNet-101 at width 0.25 and 32x32, seed 23: trained after scoring a
    softmax head's candidates on its logits was designed (benchmarks/auto_logits.py),
    to check it on a depth no rule was looked at on."""
    return cached_trained(LOGIT_SCORING_FILE, 101, 0.25, 32, 23, "resnet101_digits32", log)


def temperature_scoring_resnet152(log=print):
    """ResNet-152 at width 0.25 and 32x32, seed 29: trained after scoring on
    softened probabilities was designed (benchmarks/auto_logits.py), to check
    it on a model no scoring was looked at on."""
    return cached_trained(TEMPERATURE_SCORING_FILE, 152, 0.25, 32, 29, "resnet152_digits32", log)


def softmax_floor_resnet50(log=print):
    """ResNet-50 at width 0.5 and 32x32, seed 41: trained after the floor
    under the int8 softmax's input was measured (benchmarks/softmax_floor.py),
    to check it on a model it was never measured on."""
    return cached_trained(SOFTMAX_FLOOR_FILE, 50, 0.5, 32, 41, "resnet50_w05_digits32", log)


def layout_check_models(log=print):
    """(name, model, input size) of three ResNets trained after the fold layouts were compared on the
    sixteen rows of benchmarks/choice_noise.py, to check that comparison on models it never saw."""
    for depth, width, size, seed in ((18, 0.5, 32, 61), (34, 0.25, 32, 53), (50, 0.5, 40, 59)):
        name = f"resnet{depth}_w{str(width).replace('.', '')}_digits{size}_seed{seed}"
        yield (f"ResNet-{depth} w{width} {size}x{size} seed {seed} (trained after the layouts were compared)",
               cached_trained(f"{name}.weights.h5", depth, width, size, seed, name, log), size)


def extrapolation_check_models(log=print):
    """(name, model, input size) of two ResNets trained after the int8 TFLite's `auto` stopped trying
    `extrapolated` on softmax heads, to check that rule on models it was not chosen on."""
    for depth, width, size, seed in ((18, 0.5, 32, 67), (34, 0.25, 32, 71)):
        name = f"resnet{depth}_w{str(width).replace('.', '')}_digits{size}_seed{seed}"
        yield (f"ResNet-{depth} w{width} {size}x{size} seed {seed} (trained after the softmax rule was fixed)",
               cached_trained(f"{name}.weights.h5", depth, width, size, seed, name, log), size)


def mnist_models(log=print):
    """(name, model, input size) of three ResNets trained on 2500 of the MNIST sample (benchmarks/mnist.py),
    after every rule of `auto` was fixed: a data set none of them was chosen on."""
    from mnist import ORDER_SEED, TRAIN_IMAGES, mnist_split

    for depth, width, size, seed in ((18, 0.5, 32, 83), (50, 0.25, 32, 89), (50, 0.5, 32, 97)):
        name = f"resnet{depth}_w{str(width).replace('.', '')}_mnist{size}_order{ORDER_SEED}_train{TRAIN_IMAGES}_seed{seed}"
        yield (f"ResNet-{depth} w{width} {size}x{size} seed {seed} (MNIST: a data set no rule was chosen on)",
               cached_trained(f"{name}.weights.h5", depth, width, size, seed, name, log,
                              training=lambda: mnist_split(size)[:2]), size)


FASHION_MODELS = ((18, 0.5, 32, 101), (50, 0.25, 32, 103))
FASHION_FRESH_MODELS = ((34, 0.5, 32, 107), (50, 0.5, 32, 109))


def fashion_models(log=print, depth=None):
    """(name, model, input size) of two ResNets trained on 4000 Fashion-MNIST images (benchmarks/fashion.py),
    after every rule of `auto` and of the search was fixed: a data set none of them was chosen on, where the
    models are unsure of many images. `depth`: only those of that depth (the others are not trained)."""
    yield from _fashion_trained(FASHION_MODELS, "Fashion-MNIST: unsure of many images", log, depth)


def fashion_fresh_models(log=print, depth=None):
    """(name, model, input size) of two more Fashion-MNIST ResNets, fixed in session 30 before any result of
    theirs: other depths and widths than `fashion_models`', to check issue 23's bars on models no session had
    seen. `depth`: only those of that depth."""
    yield from _fashion_trained(FASHION_FRESH_MODELS, "Fashion-MNIST, fixed in session 30", log, depth)


def _fashion_trained(models, note, log, only_depth=None):
    from fashion import ORDER_SEED, TRAIN_IMAGES, fashion_training

    for depth, width, size, seed in (model for model in models if only_depth in (None, model[0])):
        name = f"resnet{depth}_w{str(width).replace('.', '')}_fashion{size}_order{ORDER_SEED}_train{TRAIN_IMAGES}_seed{seed}"
        yield (f"ResNet-{depth} w{width} {size}x{size} seed {seed} ({note})",
               cached_trained(f"{name}.weights.h5", depth, width, size, seed, name, log,
                              training=lambda: fashion_training(size)), size)


def with_softmax(model):
    """The same network and weights with a softmax head (keras.applications' default)."""
    twin = model.__class__.from_config(_softmax_config(model.get_config()))
    twin.set_weights(model.get_weights())
    return twin


def _softmax_config(config):
    import copy

    config = copy.deepcopy(config)
    config["name"] = config["name"] + "_softmax"
    for layer in config["layers"]:
        if layer["config"].get("name") == "predictions":
            layer["config"]["activation"] = "softmax"
    return config


if __name__ == "__main__":
    sys.exit(print(full_width_resnet50().name, unseen_resnet34().name))
