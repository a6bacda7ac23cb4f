"""Operators XNNPACK has no int8 kernel for, written as ones it has:
hard-swish (MobileNetV3's activation, fused by the TFLite converter into
HARD_SWISH) as ADD, MUL, MUL, and an average pooling (DenseNet's
transitions; InceptionV3's, which pad) as a depthwise convolution (times a
map of area / inputs inside the image where it pads). Before, the int8 model fell apart
into pieces; rewritten, it runs whole on XNNPACK and every model computes
what it did."""

import json

import numpy as np
import pytest

from edge_resnet.device.runtime import TfliteRunner
from edge_resnet.device.tflite_inspect import inspect_tflite
from edge_resnet.quantize.xnnpack_rewrites import for_int8_xnnpack
from edge_resnet.quantize.mixed import output_sqnr_db
from tests.cli import run_in_process
from tests.digits import TRAIN_SAMPLES, digit_pixels


def hard_swish_model():
    """A small network with hard-swish after convolutions, a depthwise one among them (random weights)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1, name="scale")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="hard_swish", name="stem")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = layers.Activation("hard_swish", name="depthwise_hard_swish")(x)
    x = layers.Conv2D(24, 1, activation="hard_swish", name="expand")(x)
    return keras.Model(inputs, layers.Dense(10, name="predictions")(layers.GlobalAveragePooling2D(name="pool")(x)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(folder, the model): beside it the TFLite converter's own float32 model of it and calibration images."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("hard_swish")
    model = hard_swish_model()
    model.save(folder / "hs.keras")
    (folder / "as_converted.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    pixels, _ = digit_pixels(32, 160, offset=TRAIN_SAMPLES)
    np.save(folder / "calibration.npy", pixels[:120])
    np.save(folder / "evaluation.npy", pixels[120:].astype(np.float32))
    return folder, model


def test_hard_swish_becomes_add_mul_mul_and_the_model_computes_the_same(converted):
    folder, model = converted
    raw = (folder / "as_converted.tflite").read_bytes()
    counts = inspect_tflite(folder / "as_converted.tflite").op_counts
    assert counts["HARD_SWISH"] == 3  # the converter fuses each of them
    rewritten = for_int8_xnnpack(raw)
    (folder / "rewritten.tflite").write_bytes(rewritten)
    after = inspect_tflite(folder / "rewritten.tflite").op_counts
    assert "HARD_SWISH" not in after
    assert after["ADD"] == counts.get("ADD", 0) + 3 and after["MUL"] == counts.get("MUL", 0) + 6
    assert for_int8_xnnpack(rewritten) == rewritten  # nothing left to rewrite
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    assert np.allclose(TfliteRunner(folder / "rewritten.tflite").predict(images),
                       TfliteRunner(folder / "as_converted.tflite").predict(images), rtol=1e-5, atol=1e-5)
    assert np.allclose(TfliteRunner(folder / "rewritten.tflite").predict(images), model.predict(images, verbose=0),
                       rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("source", ["hs.keras", "as_converted.tflite"])
def test_the_int8_model_of_a_hard_swish_network_is_whole_on_xnnpack(converted, source):
    folder, model = converted
    output = folder / f"int8_from_{source.split('.')[-1]}.tflite"
    result = run_in_process("quantize", folder / source, "--calibration", folder / "calibration.npy",
                            "--preprocessing", "raw", "--output", output)
    assert result.returncode == 0, result.stderr
    inspected = inspect_tflite(output)
    assert "HARD_SWISH" not in inspected.op_counts
    assert not inspected.float_ops and not inspected.body_quantize_ops, inspected.float_ops
    assert inspected.fully_delegated, inspected.undelegated_ops
    evaluation = np.load(folder / "evaluation.npy")
    assert output_sqnr_db(model.predict(evaluation, verbose=0), TfliteRunner(output).predict(evaluation)) > 25


def test_the_float32_artifact_keeps_the_fused_hard_swish(converted):
    """XNNPACK runs HARD_SWISH itself in float32, faster than three operators (benchmarks/results/xnnpack_rewrites.md)."""
    folder, model = converted
    result = run_in_process("quantize", folder / "hs.keras", "--quantize", "none", "--output", folder / "f.tflite")
    assert result.returncode == 0, result.stderr
    assert inspect_tflite(folder / "f.tflite").op_counts["HARD_SWISH"] == 3


def test_the_converter_s_own_hard_swish_is_not_whole_on_xnnpack_in_int8(converted):
    """Why the rewrite: the int8 model of the converter's own graph (HARD_SWISH kept) is cut into pieces."""
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.quantize.int8_tflite import write_int8_tflite
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.static_shapes import with_static_reshapes

    folder, _ = converted
    calibration = images_from_array(np.load(folder / "calibration.npy"), Preprocessing(32, 32, mode="raw"), size=None)
    kept = write_int8_tflite(with_static_reshapes((folder / "as_converted.tflite").read_bytes()),
                             QuantizationRecipe(calibration_method="minmax"), folder / "kept.tflite", calibration,
                             progress=False)
    inspected = inspect_tflite(kept)
    assert inspected.op_counts["HARD_SWISH"] == 3 and not inspected.fully_delegated
    assert "HARD_SWISH" in inspected.undelegated_ops


@pytest.mark.parametrize("route", ["ort", "tflite"])
def test_the_int8_onnx_of_a_hard_swish_network_takes_its_ranges_from_the_rewritten_tflite(converted, route):
    """The int8 ONNX's ranges come from the float TFLite's tensors by layer: the rewrite keeps each activation's
    output tensor (its name and its place as its layer's last), so they map as before; --onnx-route tflite writes
    the rewritten int8 TFLite itself as ONNX."""
    from edge_resnet.device.runtime import OnnxRunner

    folder, model = converted
    output = folder / f"int8_{route}.onnx"
    result = run_in_process("quantize", folder / "hs.keras", "--calibration", folder / "calibration.npy",
                            "--preprocessing", "raw", "--onnx-route", route, "--output", output)
    assert result.returncode == 0, result.stderr
    evaluation = np.load(folder / "evaluation.npy")
    assert output_sqnr_db(model.predict(evaluation, verbose=0), OnnxRunner(output).predict(evaluation)) > 20


def test_the_rewritten_int8_model_runs_whole_on_an_ethos_u_npu(converted, tmp_path):
    """Vela takes every operator of the rewrite (ADD with RELU6, MUL) onto the NPU."""
    from tests.cli import run_without_tensorflow

    folder, _ = converted
    model = folder / "int8_from_keras.tflite"
    if not model.exists():
        assert run_in_process("quantize", folder / "hs.keras", "--calibration", folder / "calibration.npy",
                              "--preprocessing", "raw", "--output", model).returncode == 0
    result = run_without_tensorflow(tmp_path, "compile", model, "--target", "ethos-u55-128", "--output", tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / f"{model.stem}_ethos-u55-128.json").read_text())
    assert record["cpu_operators"] == 0 and record["npu_operators"] > 10


def pool_model(padding, window, pooling="AveragePooling2D"):
    """Convolutions around a pooling of stride 2 on a 30x30 map (DenseNet's transitions; with a 1x1 MaxPooling2D,
    ResNetV2's shortcut; random weights)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(6)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(layers.Rescaling(1 / 255, name="scale")(inputs))
    x = getattr(layers, pooling)(window, strides=2, padding=padding, name="pool")(x)
    x = layers.Conv2D(8, 3, activation="relu", name="after")(x)
    return keras.Model(inputs, layers.Dense(10, name="predictions")(layers.GlobalAveragePooling2D(name="gap")(x)))


@pytest.mark.parametrize("pooling, padding, window, kept", [
    ("AveragePooling2D", "valid", 2, False), ("AveragePooling2D", "same", 2, False),
    ("AveragePooling2D", "same", 3, False), ("AveragePooling2D", "same", 5, True), ("MaxPooling2D", "valid", 1, False),
    ("MaxPooling2D", "same", 1, False)])
def test_a_pool_xnnpack_has_no_int8_kernel_for_becomes_a_depthwise_convolution(tmp_path, pooling, padding, window,
                                                                              kept):
    """XNNPACK has no int8 average pooling: one that pads nothing (VALID, or SAME whose windows fit: 2x2 stride 2
    on an even size) is computed as a depthwise convolution of weights 1 / area instead (exactly, in float); one
    that pads (TFLite averages only the inputs inside the image) as that convolution times area / (inputs inside)
    where those ratios have an exact int8 grid (a 3x3 window's), else it stays (a 5x5 window's). XNNPACK takes no
    pooling of 1x1 windows that strides (ResNetV2's shortcut): the same convolution, of weight 1, picks the same
    pixels."""
    import tensorflow as tf

    model = pool_model(padding, window, pooling)
    model.save(tmp_path / "pool.keras")
    (tmp_path / "as_converted.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    (tmp_path / "rewritten.tflite").write_bytes(
        for_int8_xnnpack((tmp_path / "as_converted.tflite").read_bytes()))
    counts = inspect_tflite(tmp_path / "rewritten.tflite").op_counts
    assert ({"AveragePooling2D": "AVERAGE_POOL_2D", "MaxPooling2D": "MAX_POOL_2D"}[pooling] in counts) == kept
    images = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    assert np.allclose(TfliteRunner(tmp_path / "rewritten.tflite").predict(images),
                       TfliteRunner(tmp_path / "as_converted.tflite").predict(images), rtol=1e-5, atol=1e-5)
    pixels, _ = digit_pixels(32, 160, offset=TRAIN_SAMPLES)
    np.save(tmp_path / "calibration.npy", pixels[:120])
    result = run_in_process("quantize", tmp_path / "pool.keras", "--calibration", tmp_path / "calibration.npy",
                            "--preprocessing", "raw", "--output", tmp_path / "int8.tflite")
    assert result.returncode == 0, result.stderr
    inspected = inspect_tflite(tmp_path / "int8.tflite")
    assert not inspected.float_ops and inspected.fully_delegated == (not kept), inspected.undelegated_ops
    evaluation = pixels[120:].astype(np.float32)
    assert output_sqnr_db(model.predict(evaluation, verbose=0), TfliteRunner(tmp_path / "int8.tflite").predict(
        evaluation)) > 25


def count_map_values(model_bytes):
    """The dequantized values of the one count map of a padded pooling in an int8 model, (height, width)."""
    from edge_resnet.quantize.statistics import read_flatbuffer

    flatbuffer = read_flatbuffer(model_bytes)
    maps = [tensor for tensor in flatbuffer.subgraphs[0].tensors if tensor.name.endswith(b"/area_over_inputs_inside")]
    assert len(maps) == 1
    integers = np.asarray(flatbuffer.buffers[maps[0].buffer].data, np.uint8).view(np.int8)
    return integers.reshape(maps[0].shape[1:3]) * maps[0].quantization.scale[0]


def border_map(size):
    """area / inputs inside of a 3x3 window of stride 2 on 2 * size pixels: the last row and column of outputs
    see 2 of 3 inputs per axis."""
    expected = np.ones((size, size))
    expected[-1, :] *= 1.5
    expected[:, -1] *= 1.5
    return expected


def test_a_padded_pool_s_map_of_area_over_inputs_inside_is_exact_in_int8(tmp_path):
    """The int8 map of a 3x3 SAME average pooling holds 9/4, 9/6 and 1 exactly (on a grid of 1/4), not scaled by
    its largest value as the quantizer scales a constant (which makes the interior's 1 0.992); also where the
    depthwise convolution before it stays float32 (a mixed-precision model: a DEQUANTIZE and a QUANTIZE between)."""
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import quantized_int8_io
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    model = pool_model("same", 3)
    model.save(tmp_path / "pool.keras")
    pixels, _ = digit_pixels(32, 120, offset=TRAIN_SAMPLES)
    np.save(tmp_path / "calibration.npy", pixels)
    result = run_in_process("quantize", tmp_path / "pool.keras", "--calibration", tmp_path / "calibration.npy",
                            "--preprocessing", "raw", "--output", tmp_path / "int8.tflite")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(count_map_values((tmp_path / "int8.tflite").read_bytes()), border_map(15))

    float_model = float_tflite(fold_batchnorm(model)[0])
    ranges = activation_ranges(collect_statistics(float_model, images_from_array(pixels, Preprocessing(
        32, 32, mode="raw"), size=None)), RangeMethod("minmax"))
    window_sum = next(name for name in ranges if name.endswith("/window_sum_over_area"))
    mixed = quantized_int8_io(float_model, ranges, float_scopes=(window_sum,))
    assert np.array_equal(count_map_values(mixed), border_map(15))
    evaluation = pixels[:20].astype(np.float32)
    assert output_sqnr_db(model.predict(evaluation, verbose=0), TfliteRunner("mixed", content=mixed).predict(
        evaluation)) > 25


def preactivation_model():
    """ResNetV2's stage end in small: a 1x1 max pooling that strides as the shortcut, pre-activation
    BatchNormalizations after a pooling and after the addition (random weights and statistics)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(8)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="stem")(layers.Rescaling(1 / 255, name="scale")(inputs))
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)
    branch = layers.ReLU(name="preact_relu")(layers.BatchNormalization(name="preact_bn")(x))
    branch = layers.Conv2D(16, 3, strides=2, padding="same", name="conv")(branch)
    x = layers.Add(name="out")([layers.MaxPooling2D(1, strides=2, name="shortcut")(x), branch])
    x = layers.ReLU(name="post_relu")(layers.BatchNormalization(name="post_bn")(x))
    model = keras.Model(inputs, layers.Dense(10, name="predictions")(layers.GlobalAveragePooling2D(name="gap")(x)))
    rng = np.random.default_rng(8)
    for name in ("preact_bn", "post_bn"):
        bn = model.get_layer(name)
        bn.gamma.assign(rng.uniform(0.05, 2.0, 16).astype("float32"))  # scales far apart, as trained ones are
        bn.moving_mean.assign(rng.normal(0, 0.3, 16).astype("float32"))
    return model


def test_a_preactivation_network_quantizes_whole_on_xnnpack_with_no_elementwise_batchnorm(tmp_path):
    """keras.applications' ResNet50V2: its 1x1 strided pooling cut the int8 model into pieces, and each
    pre-activation BatchNormalization was a MUL and an ADD (its scale vector on one int8 scale); now the pooling is
    a depthwise convolution and each BatchNormalization a 1x1 depthwise convolution of per-channel weights."""
    inspected, sqnr_db = int8_of(preactivation_model(), tmp_path)
    assert "MUL" not in inspected.op_counts and "MAX_POOL_2D" in inspected.op_counts  # the 3x3 pooling stays
    assert inspected.op_counts["DEPTHWISE_CONV_2D"] == 3
    assert not inspected.float_ops and inspected.fully_delegated, inspected.undelegated_ops
    assert sqnr_db > 25


def int8_of(model, tmp_path):
    """(inspect_tflite of the int8 model `quantize` makes of `model` on 120 digits, its output SQNR dB on 80
    others)."""
    model.save(tmp_path / "model.keras")
    pixels, _ = digit_pixels(32, 200, offset=TRAIN_SAMPLES)
    np.save(tmp_path / "calibration.npy", pixels[:120])
    result = run_in_process("quantize", tmp_path / "model.keras", "--calibration", tmp_path / "calibration.npy",
                            "--preprocessing", "raw", "--calibration-method", "minmax", "--output",
                            tmp_path / "int8.tflite")
    assert result.returncode == 0, result.stderr
    evaluation = pixels[120:].astype(np.float32)
    return inspect_tflite(tmp_path / "int8.tflite"), output_sqnr_db(
        model.predict(evaluation, verbose=0), TfliteRunner(tmp_path / "int8.tflite").predict(evaluation))


@pytest.mark.parametrize("pooling", ["MaxPooling2D", "AveragePooling2D"])
def test_the_float32_artifact_of_a_strided_one_pixel_pooling_is_whole_on_xnnpack(tmp_path, pooling):
    """XNNPACK takes no 1x1 pooling that strides in float32 either: ResNet50V2's (max) float32 artifact ran in four
    pieces, NASNetMobile's (average) in more."""
    model = pool_model("valid", 1, pooling)
    model.save(tmp_path / "pool.keras")
    result = run_in_process("quantize", tmp_path / "pool.keras", "--quantize", "none", "--output",
                            tmp_path / "f.tflite")
    assert result.returncode == 0, result.stderr
    inspected = inspect_tflite(tmp_path / "f.tflite")
    assert not {"MAX_POOL_2D", "AVERAGE_POOL_2D"} & set(inspected.op_counts) and inspected.fully_delegated, \
        inspected.undelegated_ops
    images = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    assert np.allclose(TfliteRunner(tmp_path / "f.tflite").predict(images), model.predict(images, verbose=0),
                       rtol=1e-4, atol=1e-4)


def standalone_relu_model():
    """Xception's residual blocks: a ReLU of a sum the next addition also reads, so the converter cannot fuse it."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(9)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(layers.Rescaling(1 / 255, name="scale")(inputs))
    x = layers.Add(name="add1")([x, layers.Conv2D(8, 3, padding="same", name="conv1")(x)])
    branch = layers.Conv2D(8, 3, padding="same", name="conv2")(layers.ReLU(name="relu")(x))
    other = layers.Conv2D(8, 1, name="conv3")(layers.ReLU(max_value=6.0, name="relu6")(x))
    x = layers.Add(name="add2")([x, branch, other])
    return keras.Model(inputs, layers.Dense(10, name="predictions")(layers.GlobalAveragePooling2D(name="gap")(x)))


def test_a_standalone_relu_becomes_a_depthwise_convolution_and_the_int8_model_runs_whole(tmp_path):
    """XNNPACK runs RELU and RELU6 in float32 only: Xception's int8 model ran in pieces around eleven of them."""
    inspected, sqnr_db = int8_of(standalone_relu_model(), tmp_path)
    assert not {"RELU", "RELU6"} & set(inspected.op_counts) and inspected.op_counts["DEPTHWISE_CONV_2D"] == 2
    assert not inspected.float_ops and inspected.fully_delegated, inspected.undelegated_ops
    assert sqnr_db > 25


def wide_concatenation_model(branches):
    """`branches` 1x1 convolutions of one image joined in one Concatenate (NASNet's cells join six; random
    weights)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(9)
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255, name="scale")(inputs)
    joined = layers.Concatenate(name="joined")([layers.Conv2D(4, 1, activation="relu", name=f"branch_{index}")(x)
                                                for index in range(branches)])
    x = layers.Conv2D(8, 3, activation="relu", name="after")(joined)
    return keras.Model(inputs, layers.Dense(10, name="predictions")(layers.GlobalAveragePooling2D(name="gap")(x)))


@pytest.mark.parametrize("branches", [6, 11])
def test_a_concatenation_of_more_than_five_inputs_becomes_a_chain_xnnpack_runs_whole(tmp_path, branches):
    """XNNPACK joins at most five inputs in one CONCATENATION, in any precision: a wider one becomes a chain of
    them, computing the same, so the float32 and the int8 model each run in one XNNPACK piece (the converter's
    graph ran in two)."""
    import tensorflow as tf

    model = wide_concatenation_model(branches)
    model.save(tmp_path / "wide.keras")
    (tmp_path / "as_converted.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert not inspect_tflite(tmp_path / "as_converted.tflite").fully_delegated
    pixels, _ = digit_pixels(16, 160, offset=TRAIN_SAMPLES)
    np.save(tmp_path / "calibration.npy", pixels[:120])
    np.save(tmp_path / "evaluation.npy", pixels[120:])
    result = run_in_process("convert", "--model", tmp_path / "wide.keras", "--calibration",
                            tmp_path / "calibration.npy", "--eval", tmp_path / "evaluation.npy", "--preprocessing",
                            "raw", "--formats", "tflite", "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    evaluation = pixels[120:].astype(np.float32)
    reference = model.predict(evaluation, verbose=0)
    for artifact, fidelity in (("wide_float32.tflite", 90), ("wide_int8.tflite", 25)):
        inspected = inspect_tflite(tmp_path / "out" / artifact)
        assert inspected.fully_delegated and inspected.op_counts["CONCATENATION"] == 1 + (branches - 2) // 4
        assert output_sqnr_db(reference, TfliteRunner(tmp_path / "out" / artifact).predict(evaluation)) > fidelity


def test_a_wide_concatenation_along_a_dynamic_batch_stays_one_operator():
    """Joined along the batch axis, whose size is known only at run time, the chain's tensors would need a size
    no one knows: such a CONCATENATION is left as it is."""
    import keras
    import tensorflow as tf

    from edge_resnet.quantize.xnnpack_rewrites import for_xnnpack

    inputs = keras.Input((8, 8, 3))
    joined = keras.layers.Concatenate(axis=0)([keras.layers.Conv2D(4, 1, name=f"branch_{index}")(inputs)
                                               for index in range(6)])
    converted = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, joined)).convert()
    assert for_xnnpack(converted) == converted
