"""Accuracy budgets on a network that is not a ResNet: its parts come from
its graph (the spans between the points where one tensor carries
everything on), on a small MobileNetV2-style network trained on the digits
(real data), for the int8 TFLite (XNNPACK) and the int8 ONNX (onnxruntime)."""

import numpy as np
import onnx
import pytest

from edge_resnet.device.runtime import OnnxRunner, TfliteRunner
from edge_resnet.device.tflite_inspect import inspect_tflite
from edge_resnet.quantize import mixed
from edge_resnet.quantize.recipe import read_record
from tests.cli import run_in_process
from tests.digits import TRAIN_SAMPLES, digit_pixels, trained_digits_mobilenet

# The network's parts as graph_parts finds them: a block with a skip
# connection is one part, the layers of a block without one a part each
MOBILENET_PARTS = ["Conv1", "block_1", "block_2_expand", "block_2_depthwise", "block_2_project", "block_3", "Conv_1",
                   "head"]


def operator(name, *inputs):
    """An operator (id, inputs, outputs) writing the tensor of its own name, with a constant among its inputs."""
    return name, (*inputs, f"{name}/weights"), (name,)


def test_a_network_s_parts_end_where_one_tensor_carries_everything_on():
    operators = [
        operator("stem", "image"), operator("stem_relu", "stem"),
        operator("block_1_expand", "stem_relu"), operator("block_1_depthwise", "block_1_expand"),
        operator("block_1_project", "block_1_depthwise"), operator("block_1_add", "stem_relu", "block_1_project"),
        operator("conv2d_3", "block_1_add"), operator("conv2d_4", "conv2d_3"),
        operator("add", "block_1_add", "conv2d_4"), operator("pool", "add"),
        operator("predictions", "pool"), operator("softmax", "predictions"),
    ]
    weighted = {"stem", "block_1_expand", "block_1_depthwise", "block_1_project", "conv2d_3", "conv2d_4",
                "predictions"}
    # after "stem", "stem_relu", "block_1_add", "add", "pool" and "predictions", one tensor is left to read
    assert mixed.single_tensor_cuts(operators, ("image",), ("softmax",)) == [0, 1, 5, 8, 9, 10]
    parts = mixed.graph_parts(operators, ("image",), ("softmax",), weighted)
    assert parts == {
        "stem": ("stem", "stem_relu"),  # an activation goes with the convolution before it
        "block_1": ("block_1_expand", "block_1_depthwise", "block_1_project", "block_1_add"),
        "conv2d_3..conv2d_4": ("conv2d_3", "conv2d_4", "add", "pool"),  # Keras' numbering names no block
        "head": ("predictions", "softmax"),  # the part writing the output
    }
    # a network with ResNet names keeps its blocks, whatever its graph
    renamed = [(name.replace("block_1", "conv2_block1"), inputs, outputs) for name, inputs, outputs in operators]
    assert "conv2_block1" in mixed.network_parts(renamed, ("image",), ("softmax",), weighted)


def test_part_names_stay_unique_and_the_head_is_the_last_part():
    # one layer with a dot in its name called three times: TensorFlow scopes its calls refine.conv_1, _2, _3
    calls = [f"net_1/refine.conv_{call}/convolution" for call in (1, 2, 3)]
    chain = [operator(calls[0], "image"), operator(calls[1], calls[0]), operator(calls[2], calls[1]),
             operator("predictions", calls[2])]
    parts = mixed.graph_parts(chain, ("image",), ("predictions",), {name for name, _, _ in chain})
    assert list(parts) == ["refine.conv", "refine.conv.2", "refine.conv.3", "head"]
    block = [operator("head_a", "image"), operator("head_b", "head_a"), operator("head_add", "image", "head_b"),
             operator("predictions", "head_add")]
    parts = mixed.graph_parts(block, ("image",), ("predictions",), {"head_a", "head_b", "predictions"})
    assert parts == {"head.2": ("head_a", "head_b", "head_add"), "head": ("predictions",)}


def test_an_operator_between_resnet_blocks_goes_with_the_block_before_it():
    """A DenseNet's transition (pool2_...) or a ResNet50V2's shortcut pooling between blocks made a "head" in
    the middle of the network, out of graph order."""
    names = ["conv1_conv", "conv2_block1_1_conv", "pool2_conv", "conv3_block1_1_conv", "avg_pool", "predictions"]
    assert mixed.parts_in_order(names) == {"stem": ("conv1_conv",), "conv2_block1": ("conv2_block1_1_conv", "pool2_conv"),
                                           "conv3_block1": ("conv3_block1_1_conv",),
                                           "head": ("avg_pool", "predictions")}


def test_an_operator_s_layer_is_read_from_its_name():
    assert mixed.layer_label("net_1/block_1_expand_relu_1/Relu6;net_1/block_1_expand_1/BiasAdd;"
                             "net_1/block_1_expand_1/convolution") == "block_1_expand"
    assert mixed.layer_label("net_1/conv_1_1/convolution") == "conv_1"  # a layer named conv_1: scope conv_1_1
    assert mixed.layer_label("block_1_expand") == "block_1_expand"  # an ONNX node
    assert mixed.layer_label("input/nchw") == "input"


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed_graph")
    trained_digits_mobilenet().save(folder / "mobilenet.keras")
    pixels, labels = digit_pixels(32, TRAIN_SAMPLES)
    np.savez(folder / "calibration.npz", x=pixels[:200], y=labels[:200])
    held_out, _ = digit_pixels(32, 300, offset=TRAIN_SAMPLES)  # never calibrated on: the evaluation images
    from edge_resnet.data.images import Preprocessing, images_from_array

    evaluation = np.stack(list(images_from_array(held_out, Preprocessing(32, 32), size=None).samples()))
    reference = trained_digits_mobilenet().predict(evaluation, verbose=0)
    return folder, evaluation, reference


def quantize(folder, name, *options):
    return run_in_process("quantize", folder / "mobilenet.keras", "--calibration", folder / "calibration.npz",
                          "--calibration-method", "extrapolated", "--output", folder / name, *options)


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_a_budget_is_met_on_a_network_that_is_not_a_resnet(mobilenet, suffix):
    folder, evaluation, reference = mobilenet
    runner = TfliteRunner if suffix == ".tflite" else OnnxRunner
    full = quantize(folder, f"full{suffix}")  # the default full int8 (biases corrected where it helps)
    assert full.returncode == 0, full.stderr
    result = quantize(folder, f"mixed{suffix}", "--min-sqnr-gain", "2")
    assert result.returncode == 0, result.stderr
    record = read_record(folder / f"mixed{suffix}")["mixed_precision"]
    chosen = mixed.chosen_step(record)
    assert record["met"] and chosen["float_parts"]
    assert set(record["gain_alone_db"]) | set(record["not_tried"]) == set(MOBILENET_PARTS)
    if suffix == ".tflite":
        assert inspect_tflite(folder / "mixed.tflite").fully_delegated
    # the budget's artifact gets the default's correction too, on its int8 layers only
    correction = read_record(folder / f"mixed{suffix}")["bias_correction"]
    assert correction["mode"] == "auto" and "calibration_sqnr_db" in correction
    if suffix == ".onnx":
        from edge_resnet.quantize.onnx_bias_correction import biased_layers

        proto = onnx.load(folder / "mixed.onnx")
        weight_layers = [node for node in proto.graph.node if node.op_type in ("Conv", "Gemm")]
        # what a correction shifts: every int8 layer; the float32 parts' layers (float weights and biases) are not
        assert 0 < len(biased_layers(proto)) < len(weight_layers)
        assert correction["layers"] == (len(biased_layers(proto)) if correction["corrected"] else 0)
    full_db = mixed.output_sqnr_db(reference, runner(folder / f"full{suffix}").predict(evaluation))
    mixed_db = mixed.output_sqnr_db(reference, runner(folder / f"mixed{suffix}").predict(evaluation))
    assert mixed_db > full_db and mixed_db >= record["budget_sqnr_db"] - mixed.EVALUATION_SLACK_DB, (full_db, mixed_db)


def test_dynamic_range_parts_keep_depthwise_convolutions_float32_on_xnnpack(mobilenet, tmp_path):
    """XNNPACK runs no dynamic-range int8 depthwise convolution: one would leave the graph to the reference kernels."""
    from edge_resnet.data.images import Preprocessing, calibration_set
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics

    folder, evaluation, _ = mobilenet
    assert run_in_process("quantize", folder / "mobilenet.keras", "--quantize", "none", "--output",
                          tmp_path / "float.tflite").returncode == 0
    float_model = (tmp_path / "float.tflite").read_bytes()
    calibration = calibration_set(np.load(folder / "calibration.npz")["x"], Preprocessing(32, 32), size=100)
    ranges = activation_ranges(collect_statistics(float_model, calibration), RangeMethod("minmax"))
    route = mixed.tflite_route(float_model, QuantizationRecipe(), precision="dynamic")
    every_operator = [scope for scopes in route.parts.values() for scope in scopes]
    (tmp_path / "dynamic.tflite").write_bytes(mixed.candidate(route, ranges, every_operator))
    inspected = inspect_tflite(tmp_path / "dynamic.tflite")
    assert inspected.fully_delegated, inspected.undelegated_ops
    assert route.dynamic_capable < route.weighted  # the depthwise convolutions are weighted but not dynamic
    assert np.isfinite(TfliteRunner(tmp_path / "dynamic.tflite").predict(evaluation[:4])).all()
