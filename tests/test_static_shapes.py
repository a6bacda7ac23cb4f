"""Reshapes given constant targets: a squeeze-and-excite block and a
Flatten after pooling (EfficientNet's and MobileNetV3's layers) make the
TFLite converter compute reshape targets at run time; rewritten, the int8
model is fully integer and runs whole on XNNPACK, and every model computes
what it did."""

import numpy as np
import pytest

from edge_resnet.device.runtime import TfliteRunner
from edge_resnet.device.tflite_inspect import inspect_tflite
from edge_resnet.quantize.static_shapes import with_static_reshapes
from tests.cli import run_in_process
from tests.digits import TRAIN_SAMPLES, digit_pixels


def squeeze_excite_model():
    """A small network with a squeeze-and-excite block and a Flatten after keepdims pooling (random weights)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    squeezed = layers.Reshape((1, 1, 16), name="se_reshape")(layers.GlobalAveragePooling2D(name="se_squeeze")(x))
    squeezed = layers.Conv2D(4, 1, activation="relu", name="se_reduce")(squeezed)
    squeezed = layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(squeezed)
    x = layers.Multiply(name="se_excite")([x, squeezed])
    x = layers.Flatten(name="flatten")(layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x))
    return keras.Model(inputs, layers.Dense(10, name="predictions")(x))


def op_names(path):
    return set(inspect_tflite(path).op_counts)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(folder, the model, the TFLite converter's own float32 model of it, calibration images)."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("static_shapes")
    model = squeeze_excite_model()
    model.save(folder / "se.keras")
    (folder / "as_converted.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    pixels, _ = digit_pixels(32, 120, offset=TRAIN_SAMPLES)
    np.save(folder / "calibration.npy", pixels)
    return folder, model


def test_reshape_targets_become_constants_and_the_model_computes_the_same(converted):
    folder, model = converted
    raw = (folder / "as_converted.tflite").read_bytes()
    assert {"SHAPE", "PACK"} <= op_names(folder / "as_converted.tflite")  # the converter's run-time targets
    rewritten = with_static_reshapes(raw)
    (folder / "rewritten.tflite").write_bytes(rewritten)
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & op_names(folder / "rewritten.tflite")
    assert inspect_tflite(folder / "rewritten.tflite").op_counts["RESHAPE"] == \
        inspect_tflite(folder / "as_converted.tflite").op_counts["RESHAPE"]
    assert with_static_reshapes(rewritten) == rewritten  # nothing left to rewrite
    images = np.random.default_rng(0).normal(0, 50, (3, 32, 32, 3)).astype(np.float32)  # a batch of 3: -1 stays free
    assert np.array_equal(TfliteRunner(folder / "rewritten.tflite").predict(images),
                          TfliteRunner(folder / "as_converted.tflite").predict(images))
    assert np.allclose(TfliteRunner(folder / "rewritten.tflite").predict(images), model.predict(images, verbose=0),
                       rtol=1e-4, atol=1e-3)  # float32 sums in another order (outputs up to ~20)


@pytest.mark.parametrize("source", ["se.keras", "as_converted.tflite"])
def test_the_int8_model_of_a_squeeze_excite_network_is_fully_integer_and_whole_on_xnnpack(converted, source):
    folder, _ = converted
    output = folder / f"int8_from_{source.split('.')[-1]}.tflite"
    result = run_in_process("quantize", folder / source, "--calibration", folder / "calibration.npy",
                            "--preprocessing", "raw", "--output", output)
    assert result.returncode == 0, result.stderr
    inspected = inspect_tflite(output)
    assert not inspected.float_ops and not inspected.body_quantize_ops, inspected.float_ops
    assert inspected.fully_delegated, inspected.undelegated_ops
    assert "fully integer: yes" in result.stdout
