"""edge-resnet's own float ONNX exporter: equal to Keras for every ResNet
variant and keras.applications MobileNetV2, BatchNorm folded or not; named
after the Keras layers; NCHW with one Transpose at the input; tf2onnx only
for layers it does not write, and said so."""

import json

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_resnet.quantize.keras_onnx import INPUT_NAME, keras_to_onnx
from edge_resnet.model.fold import fold_batchnorm
from edge_resnet.model.resnet import build_resnet
from edge_resnet.quantize.onnx_export import exporter_of, float_onnx, to_onnx
from edge_resnet.quantize.recipe import record_path


def with_random_batchnorm_statistics(model, seed=0):
    """Untrained BatchNorm layers are nearly identities; make them matter."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
    return model


def resnet(depth, size=32, **options):
    return build_resnet(depth, input_shape=(size, size, 3), classes=10, width=0.25, classifier_activation=None,
                        **options)


def separable_model():
    """Xception's separable convolutions: unbiased before a BatchNormalization, strided, with a depth multiplier,
    relu and relu6 fused, and a residual addition; NASNet's cropping after padding."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="stem")(inputs)
    x = keras.layers.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sep1")(x)
    x = keras.layers.ReLU(name="sep1_relu")(keras.layers.BatchNormalization(name="sep1_bn")(x))
    y = keras.layers.SeparableConv2D(16, 3, padding="same", depth_multiplier=2, activation="relu", name="sep2")(x)
    y = keras.layers.SeparableConv2D(16, 3, strides=2, padding="same", activation="relu6", name="sep3")(y)
    x = keras.layers.Add(name="add")([y, keras.layers.Conv2D(16, 1, strides=2, name="shortcut")(x)])
    x = keras.layers.Cropping2D(((1, 0), (0, 1)), name="crop")(keras.layers.ZeroPadding2D(((1, 0), (0, 1)))(x))
    return keras.Model(inputs, keras.layers.Dense(10, name="predictions")(
        keras.layers.GlobalAveragePooling2D(name="pool")(x)))


MODELS = {
    "resnet18 shortcut A": lambda: resnet(18, shortcut="A"),
    "resnet18 shortcut C": lambda: resnet(18, shortcut="C"),
    "resnet50 v1.5": lambda: resnet(50, 64, stride_at="v1.5"),
    "resnet152": lambda: resnet(152),
    "resnet34 plain": lambda: resnet(34, plain=True),
    "MobileNetV2": lambda: keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None,
                                                          classes=10, classifier_activation=None),
    "separable convolutions, cropping": separable_model,
}


def onnx_outputs(proto, images):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: images})[0]


@pytest.mark.parametrize("name", MODELS)
def test_outputs_equal_keras_folded_or_not(name):
    model = with_random_batchnorm_statistics(MODELS[name]())
    images = np.random.default_rng(1).normal(0, 60, (3, *model.input_shape[1:])).astype(np.float32)
    for variant in (model, fold_batchnorm(model)[0]):
        proto = float_onnx(variant)  # onnx.checker full check inside
        assert exporter_of(proto) == "edge-resnet"
        expected = np.asarray(variant.predict_on_batch(images))
        actual = onnx_outputs(proto, images)
        assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max(), name
        np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))


def test_tensors_are_named_after_keras_layers_in_nchw_with_one_transpose():
    model = fold_batchnorm(resnet(50))[0]
    proto = keras_to_onnx(model, 17)
    layer_names = {layer.name for layer in model.layers}
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("Transpose") == 1 and proto.graph.node[0].op_type == "Transpose"
    convolutions = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert len(convolutions) == sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    assert all(node.output[0] in layer_names for node in convolutions)
    assert all(list(node.input[1:]) == [f"{node.output[0]}/kernel", f"{node.output[0]}/bias"] for node in convolutions)
    kernel = next(t for t in proto.graph.initializer if t.name == "conv1_conv/kernel")
    assert list(kernel.dims) == [16, 3, 7, 7]  # (out, in, h, w): NCHW


def test_a_layer_it_does_not_write_goes_to_tf2onnx_and_the_record_says_why(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.Permute((2, 1, 3), name="permute")(x)
    outputs = keras.layers.Dense(4, name="head")(keras.layers.Flatten(name="flat")(x))
    model = keras.Model(inputs, outputs)
    path = to_onnx(model, output=tmp_path / "permuted.onnx")
    record = json.loads(record_path(path).read_text())
    assert record["exporter"] == "tf2onnx (edge-resnet's exporter does not write layer 'permute' (Permute))"
    images = np.random.default_rng(0).normal(0, 1, (2, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(model.predict_on_batch(images))
    np.testing.assert_allclose(onnx_outputs(onnx.load(path), images), expected, rtol=1e-4, atol=1e-4)


def test_flatten_of_a_feature_map_keeps_the_keras_order():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", strides=2, activation="relu", name="conv")(inputs)
    x = keras.layers.AveragePooling2D(3, strides=2, padding="same", name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="head")(x))
    images = np.random.default_rng(0).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(onnx_outputs(keras_to_onnx(model, 13), images),
                               np.asarray(model.predict_on_batch(images)), rtol=1e-5, atol=1e-6)


def test_a_final_layer_named_output_is_the_graph_output_and_other_clashes_fall_back():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="output")(x))
    proto = float_onnx(model)
    assert exporter_of(proto) == "edge-resnet" and [o.name for o in proto.graph.output] == ["output"]
    images = np.random.default_rng(0).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(onnx_outputs(proto, images), np.asarray(model.predict_on_batch(images)),
                               rtol=1e-5, atol=1e-6)
    clashing = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.Dense(3, name="input")(x)))
    assert exporter_of(float_onnx(clashing)).startswith("tf2onnx (edge-resnet's exporter does not write a layer "
                                                          "named 'input'")


def small_model(build):
    inputs = keras.Input((8, 8, 3), name="input")  # the input layer's name clashes with nothing
    return keras.Model(inputs, build(inputs))


FALLBACKS = {
    "an activation that is a layer object": (
        lambda x: keras.layers.Conv2D(4, 3, activation=keras.layers.LeakyReLU(0.1), name="conv")(x),
        "the activation"),
    "inputs of different ranks": (
        lambda x: keras.layers.Multiply(name="scale")(
            [x, keras.layers.Dense(3, name="gate")(keras.layers.GlobalAveragePooling2D(name="pool")(x))]),
        "inputs of different ranks"),
    "a channels-first Flatten": (
        lambda x: keras.layers.Flatten(data_format="channels_first", name="flat")(x),
        "data_format 'channels_first'"),
}


@pytest.mark.parametrize("case", FALLBACKS)
def test_what_it_would_get_wrong_goes_to_tf2onnx_instead(case):
    build, reason = FALLBACKS[case]
    model = small_model(build)
    proto = float_onnx(model)
    assert exporter_of(proto).startswith("tf2onnx (edge-resnet's exporter does not write") and reason in \
        exporter_of(proto)
    images = np.random.default_rng(0).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(onnx_outputs(proto, images), np.asarray(model.predict_on_batch(images)),
                               rtol=1e-4, atol=1e-5)


def test_an_input_layer_named_input_is_exported_directly():
    model = small_model(lambda x: keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x))
    assert exporter_of(float_onnx(model)) == "edge-resnet"


def test_separable_convolutions_quantize_on_the_default_route_with_every_range_mapped(digits_calibration, tmp_path):
    """Xception's SeparableConv2D (and NASNet's Cropping2D) went to tf2onnx, whose tensors inside it no TFLite tensor
    names: the int8 ONNX was refused. Written here, its depthwise half takes the range of the TFLite's
    DEPTHWISE_CONV_2D output."""
    from edge_resnet.device.runtime import OnnxRunner
    from edge_resnet.quantize.mixed import output_sqnr_db
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    keras.utils.set_random_seed(2)
    model = fold_batchnorm(with_random_batchnorm_statistics(separable_model()))[0]
    path = to_onnx(model, QuantizationRecipe(calibration_method="minmax"), digits_calibration,
                   output=tmp_path / "separable.onnx")
    assert json.loads(record_path(path).read_text())["exporter"] == "edge-resnet"
    quantized = {node.input[0] for node in onnx.load(path).graph.node if node.op_type == "QuantizeLinear"}
    assert {"sep1/depthwise", "sep2/depthwise", "sep3/depthwise"} <= quantized
    pixels, _ = digit_pixels(32, 100, offset=TRAIN_SAMPLES)
    images = (pixels[..., ::-1] - np.array([103.939, 116.779, 123.68])).astype(np.float32)  # caffe, as calibrated
    assert output_sqnr_db(np.asarray(model.predict_on_batch(images)), OnnxRunner(path).predict(images)) > 25


def test_a_pooling_the_converter_merged_into_its_twin_takes_its_input_s_range(digits_calibration, tmp_path):
    """NASNet max-pools one padded tensor twice alike; the TFLite converter computes it once, so one of the two
    has no TFLite tensor: a pooling's output lies within its input's range, which it now takes."""
    from edge_resnet.quantize.recipe import QuantizationRecipe

    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.ZeroPadding2D(1, name="pad")(keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs))
    left = keras.layers.MaxPooling2D(3, strides=2, name="left_pool")(x)
    right = keras.layers.MaxPooling2D(3, strides=2, name="right_pool")(x)
    x = keras.layers.Add(name="add")([left, keras.layers.Conv2D(8, 1, name="right_conv")(right)])
    model = keras.Model(inputs, keras.layers.Dense(10, name="predictions")(
        keras.layers.GlobalAveragePooling2D(name="gap")(x)))
    path = to_onnx(model, QuantizationRecipe(calibration_method="minmax"), digits_calibration,
                   output=tmp_path / "twins.onnx")
    quantized = {node.input[0] for node in onnx.load(path).graph.node if node.op_type == "QuantizeLinear"}
    assert {"left_pool", "right_pool"} & quantized
