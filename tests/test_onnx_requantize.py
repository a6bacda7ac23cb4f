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
    template_ranges = random_ranges(prepared.proto, 0)
    template = onnx.load_model_from_string(
        onnxruntime_bytes(prepared, tmp_path / "template.onnx", recipe, template_ranges))
    for seed in (1, 2):
        ranges = random_ranges(prepared.proto, seed)
        rewritten = requantized(template, template_ranges, prepared.proto, ranges, recipe.onnx_activation_type)
        assert rewritten is not None
        assert rewritten.SerializeToString() == onnxruntime_bytes(prepared, tmp_path / f"{seed}.onnx", recipe,
                                                                   ranges)


def test_a_model_with_float_nodes_is_rewritten_as_onnxruntime_writes_it(prepared, tmp_path):
    float_nodes = [node.name for node in prepared.proto.graph.node if node.op_type == "Conv"][2:4]
    template_ranges = random_ranges(prepared.proto, 0)
    template = onnx.load_model_from_string(onnxruntime_bytes(
        prepared, tmp_path / "template.onnx", DEFAULT, template_ranges, float_nodes))
    ranges = random_ranges(prepared.proto, 3)
    rewritten = requantized(template, template_ranges, prepared.proto, ranges, DEFAULT.onnx_activation_type)
    assert rewritten.SerializeToString() == onnxruntime_bytes(prepared, tmp_path / "b.onnx", DEFAULT, ranges,
                                                              float_nodes)


def tiny(ranges, tensor):
    """`ranges` with `tensor`'s so narrow that a bias read through it would not fit int32 on its scale."""
    return {**ranges, tensor: (0.0, 1e-30)}


def biased_input(prepared):
    """The input of the first convolution with a non-zero bias."""
    biases = {tensor.name for tensor in prepared.proto.graph.initializer
              if np.any(onnx.numpy_helper.to_array(tensor) != 0)}
    return next(node.input[0] for node in prepared.proto.graph.node
                if node.op_type == "Conv" and len(node.input) == 3 and node.input[2] in biases)


def pooled_input(prepared):
    """A max-pooling's output that a convolution reads: quantized on the pooling input's scale, while
    onnxruntime's int32 guard reads its own range."""
    pooled = [node.output[0] for node in prepared.proto.graph.node if node.op_type == "MaxPool"]
    if not pooled:
        pytest.skip("no max pooling in this network")
    return pooled[0]


@pytest.mark.parametrize("narrowed", [biased_input, pooled_input], ids=["own scale", "the pooling input's scale"])
@pytest.mark.parametrize("where", ["new ranges", "template's ranges"])
def test_a_bias_onnxruntime_would_guard_by_raising_a_weight_scale_is_left_to_onnxruntime(prepared, narrowed, where,
                                                                                         tmp_path):
    """A range so narrow that a bias would not fit int32 on its input's
    scale: onnxruntime raises the weight's scale, which the rewrite does not
    do, so it hands back None (whether the new ranges or the template's have
    it) and the quantizer asks onnxruntime."""
    normal = random_ranges(prepared.proto, 1)
    narrow = tiny(normal, narrowed(prepared))
    template_ranges, ranges = (normal, narrow) if where == "new ranges" else (narrow, normal)
    template = onnx.load_model_from_string(
        onnxruntime_bytes(prepared, tmp_path / "template.onnx", DEFAULT, template_ranges))
    assert requantized(template, template_ranges, prepared.proto, ranges, DEFAULT.onnx_activation_type) is None
    quantize = ranged_quantizer(prepared, DEFAULT, tmp_path / "candidate.onnx")
    quantize(template_ranges)
    assert quantize(ranges).read_bytes() == onnxruntime_bytes(prepared, tmp_path / "guarded.onnx", DEFAULT, ranges)


@pytest.mark.parametrize("beta", [0.5, 0.0])
def test_a_gemm_s_beta_is_read_off_the_float_model(folded, beta, tmp_path):
    """onnxruntime writes beta 1.0 into the int8 ONNX and scales the bias by
    the float model's beta (0: the bias zeroed, which the rewrite leaves to it)."""
    float_proto = float_onnx(folded)
    gemm = next(node for node in float_proto.graph.node if node.op_type == "Gemm")
    del gemm.attribute[:]
    gemm.attribute.append(onnx.helper.make_attribute("beta", beta))
    onnx.save(float_proto, tmp_path / "float.onnx")
    prepared = ort_prepared(tmp_path / "float.onnx", tmp_path / "prepared.onnx")
    template_ranges, ranges = random_ranges(prepared.proto, 0), random_ranges(prepared.proto, 1)
    template = onnx.load_model_from_string(
        onnxruntime_bytes(prepared, tmp_path / "template.onnx", DEFAULT, template_ranges))
    rewritten = requantized(template, template_ranges, prepared.proto, ranges, DEFAULT.onnx_activation_type)
    expected = onnxruntime_bytes(prepared, tmp_path / "expected.onnx", DEFAULT, ranges)
    if beta == 0:
        assert rewritten is None
    else:
        assert rewritten.SerializeToString() == expected


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
