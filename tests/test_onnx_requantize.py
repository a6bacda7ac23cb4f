"""The int8 ONNX of other activation ranges written from one onnxruntime
quantization (edge_resnet/quantize/onnx_requantize.py): byte for byte the
model onnxruntime's quantize_static writes itself."""

import dataclasses

import numpy as np
import onnx
import pytest

from edge_resnet.quantize import onnx_export
from edge_resnet.quantize.onnx_export import float_onnx, ort_prepared, ort_quantized, ranged_quantizer
from edge_resnet.quantize.onnx_requantize import requantized
from edge_resnet.quantize.recipe import QuantizationRecipe
from edge_resnet.model.fold import fold_batchnorm
from tests.digits import softmax_twin, trained_digits_mobilenet

DEFAULT = QuantizationRecipe()


def ranged_names(proto):
    return [value.name for value in proto.graph.input] + [name for node in proto.graph.node for name in node.output]


def random_ranges(proto, seed):
    """Ranges for every tensor of `proto`, drawn: some all positive, some about zero, widths over three decades."""
    generator = np.random.default_rng(seed)
    ranges = {}
    for name in ranged_names(proto):
        width = 10.0 ** generator.uniform(-1.5, 1.5)
        low = -width * generator.uniform(0.0, 0.6) if generator.random() < 0.7 else width * generator.uniform(0, 0.1)
        ranges[name] = (float(low), float(low + width))
    return ranges


@pytest.fixture(scope="module", params=["resnet logits", "resnet softmax", "mobilenet"])
def prepared(request, folded, tmp_path_factory):
    """The float ONNX as onnxruntime prepares it: the tests' ResNet-18 with
    either head, and the MobileNet (ReLU6, depthwise convolutions), BatchNorms folded."""
    keras_model = {"resnet logits": lambda: folded, "resnet softmax": lambda: softmax_twin(folded),
                   "mobilenet": lambda: fold_batchnorm(trained_digits_mobilenet())[0]}[request.param]()
    folder = tmp_path_factory.mktemp("requantize")
    onnx.save(float_onnx(keras_model), folder / "float.onnx")
    return ort_prepared(folder / "float.onnx", folder / "prepared.onnx")


def onnxruntime_bytes(prepared, path, recipe, ranges, float_nodes=()):
    return ort_quantized(prepared, path, recipe, ranges, float_nodes).read_bytes()


@pytest.mark.parametrize("recipe", [DEFAULT, QuantizationRecipe(onnx_activation_type="uint8"),
                                    QuantizationRecipe(per_channel=False),
                                    QuantizationRecipe(onnx_reduce_range=False)],
                         ids=["default", "uint8 activations", "per-tensor weights", "8-bit weights"])
def test_a_model_rewritten_for_other_ranges_is_the_one_onnxruntime_writes(prepared, recipe, tmp_path):
    template = onnx.load_model_from_string(
        onnxruntime_bytes(prepared, tmp_path / "template.onnx", recipe, random_ranges(prepared.proto, 0)))
    for seed in (1, 2):
        ranges = random_ranges(prepared.proto, seed)
        rewritten = requantized(template, prepared.proto, ranges, recipe.onnx_activation_type)
        assert rewritten is not None
        assert rewritten.SerializeToString() == onnxruntime_bytes(prepared, tmp_path / f"{seed}.onnx", recipe,
                                                                   ranges)


def test_a_model_with_float_nodes_is_rewritten_as_onnxruntime_writes_it(prepared, tmp_path):
    float_nodes = [node.name for node in prepared.proto.graph.node if node.op_type == "Conv"][2:4]
    template = onnx.load_model_from_string(onnxruntime_bytes(
        prepared, tmp_path / "template.onnx", DEFAULT, random_ranges(prepared.proto, 0), float_nodes))
    ranges = random_ranges(prepared.proto, 3)
    rewritten = requantized(template, prepared.proto, ranges, DEFAULT.onnx_activation_type)
    assert rewritten.SerializeToString() == onnxruntime_bytes(prepared, tmp_path / "b.onnx", DEFAULT, ranges,
                                                              float_nodes)


def test_a_bias_onnxruntime_would_guard_by_raising_a_weight_scale_is_left_to_onnxruntime(prepared, tmp_path):
    """A range so narrow that a bias would not fit int32 on its input's
    scale: onnxruntime raises the weight's scale, which the rewrite does not
    do, so it hands back None and the quantizer asks onnxruntime."""
    biases = {tensor.name for tensor in prepared.proto.graph.initializer
              if np.any(onnx.numpy_helper.to_array(tensor) != 0)}
    biased = next(node for node in prepared.proto.graph.node
                  if node.op_type == "Conv" and len(node.input) == 3 and node.input[2] in biases)
    ranges = random_ranges(prepared.proto, 1)
    ranges[biased.input[0]] = (0.0, 1e-30)
    template = onnx.load_model_from_string(
        onnxruntime_bytes(prepared, tmp_path / "template.onnx", DEFAULT, random_ranges(prepared.proto, 0)))
    assert requantized(template, prepared.proto, ranges, DEFAULT.onnx_activation_type) is None
    quantize = ranged_quantizer(prepared, DEFAULT, tmp_path / "candidate.onnx")
    quantize(random_ranges(prepared.proto, 0))
    assert quantize(ranges).read_bytes() == onnxruntime_bytes(prepared, tmp_path / "guarded.onnx", DEFAULT, ranges)


def test_the_quantizer_asks_onnxruntime_once_per_float_nodes_and_writes_what_it_would(prepared, tmp_path,
                                                                                       monkeypatch):
    asked = []

    def counted(*arguments):
        asked.append(tuple(arguments[-1]))
        return ort_quantized(*arguments)

    monkeypatch.setattr(onnx_export, "ort_quantized", counted)
    quantize = ranged_quantizer(prepared, DEFAULT, tmp_path / "candidate.onnx")
    convolutions = [node.name for node in prepared.proto.graph.node if node.op_type == "Conv"]
    for seed, float_nodes in ((0, ()), (1, ()), (2, convolutions[:1]), (3, convolutions[:1]), (4, ())):
        ranges = random_ranges(prepared.proto, seed)
        assert quantize(ranges, float_nodes).read_bytes() == onnxruntime_bytes(
            prepared, tmp_path / "expected.onnx", DEFAULT, ranges, float_nodes)
    assert asked == [(), tuple(convolutions[:1]), ()]  # the last: the float nodes changed back


def test_a_qoperator_model_is_quantized_by_onnxruntime_every_time(prepared, tmp_path):
    recipe = dataclasses.replace(DEFAULT, onnx_format="qoperator")
    quantize = ranged_quantizer(prepared, recipe, tmp_path / "candidate.onnx")
    for seed in (0, 1):
        ranges = random_ranges(prepared.proto, seed)
        assert quantize(ranges).read_bytes() == onnxruntime_bytes(prepared, tmp_path / "expected.onnx", recipe,
                                                                  ranges)
