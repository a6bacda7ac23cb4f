"""scikit-learn's bundled handwritten digits (real data, shipped inside the
package) as RGB images of any size, and small ResNets trained on them: the
same helpers that train the shipped demo model.

The tests' ResNet-18 is trained once and its weights are kept in
tests/data (`python -m tests.digits` trains it again and rewrites them), so
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


def softmax_twin(model):
    """The same network and weights with a softmax head (keras.applications' default)."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"].get("name") == "predictions":
            layer["config"]["activation"] = "softmax"
    twin = model.__class__.from_config(config)
    twin.set_weights(model.get_weights())
    return twin


if __name__ == "__main__":
    from edge_resnet.model.resnet import build_resnet

    trained = train_digits_resnet(**{key: DIGITS_RESNET18[key] for key in ("depth", "width")})
    weights_only = build_resnet(**DIGITS_RESNET18)  # not compiled: no optimizer state in the file
    weights_only.set_weights(trained.get_weights())
    DIGITS_RESNET18_WEIGHTS.parent.mkdir(exist_ok=True)
    weights_only.save_weights(DIGITS_RESNET18_WEIGHTS)
    print(f"wrote {DIGITS_RESNET18_WEIGHTS}")
