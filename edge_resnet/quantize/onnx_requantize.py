"""The int8 ONNX of one network under other activation ranges, written
from one onnxruntime quantization instead of one each.

`auto` scores every candidate range rule on each quarter of the calibration
images, and a budget's search scores each set of float parts on each
quarter: tens of int8 ONNX models of one graph that differ only in their
activation ranges. onnxruntime's quantize_static spends about 2 s on each
at ResNet-50 224, most of it quantizing the per-channel weights, which no
activation range moves. Here it quantizes once; another ranges' model is
that one with the initializers the ranges decide written again:

- each quantized activation's scale and zero point, which onnxruntime names
  after the tensor whose range they come from (`<tensor>_scale`), computed
  by its own compute_scale_zp from the range as its calibration cache
  hands it over;
- each int32 bias and its scale: the input's scale times the weight's (times
  a Gemm's beta, read off the float ONNX), the bias rounded on it.

A model this does not read (a scale not named after a ranged tensor, a
quantized softmax output, whose range onnxruntime fixes, a Gemm with beta
0) or a bias within reach of onnxruntime's int32 guard, which would raise a
weight's scale (judged on the input's own range and on the scale it is
dequantized with, under the template's ranges and the new ones), gets None:
the caller quantizes it with onnxruntime. tests/test_onnx_requantize.py
checks the models equal onnxruntime's byte for byte.
"""

from dataclasses import dataclass

import numpy as np

INT32_GUARD_MARGIN = 1.01  # onnxruntime moves a weight's scale below 1.0001x the bias's smallest valid scale
QUANTIZE = "QuantizeLinear"
DEQUANTIZE = "DequantizeLinear"


def cache_range(value):
    """A range end as onnxruntime reads it back from its calibration cache (float32, 0-d)."""
    return np.array(np.float32(value), dtype=np.float32)


def activation_parameters(low, high, activation_type):
    """(zero point, scale) of an activation onnxruntime quantizes to
    `activation_type` ("int8" or "uint8") on the range (low, high),
    asymmetric, as its QDQ quantizer computes them."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    quant_type = TensorProto.INT8 if activation_type == "int8" else TensorProto.UINT8
    qmin, qmax = get_qmin_qmax_for_qType(quant_type, reduce_range=False, symmetric=False)
    zero_point, scale = compute_scale_zp(cache_range(low), cache_range(high), qmin, qmax, False, None)
    return zero_point.squeeze(), scale.squeeze()


def refilled(tensor, values):
    """`tensor` (an initializer) holding `values` instead, stored as it was (raw bytes or typed fields)."""
    from onnx import helper, numpy_helper

    values = np.asarray(values).reshape(tuple(tensor.dims))
    if tensor.HasField("raw_data"):
        return numpy_helper.from_array(values.astype(numpy_helper.to_array(tensor).dtype), tensor.name)
    return helper.make_tensor(tensor.name, tensor.data_type, list(tensor.dims), values.ravel().tolist())


def activation_initializers(proto, ranged):
    """{tensor: (scale initializer, zero-point initializer)} of every
    activation the int8 ONNX `proto` quantizes, each named after a tensor in
    `ranged`; None if one is not."""
    constants = {tensor.name for tensor in proto.graph.initializer}
    found = {}
    for node in proto.graph.node:
        if node.op_type != QUANTIZE or node.input[0] in constants:
            continue
        scale, zero_point = node.input[1], node.input[2]
        tensor = scale.removesuffix("_scale")
        if tensor == scale or tensor not in ranged or zero_point != f"{tensor}_zero_point":
            return None
        found[tensor] = (scale, zero_point)
    return found


@dataclass(frozen=True)
class BiasLink:
    """An int32 bias of the int8 ONNX and what its values come from."""

    quantized: str  # the int32 initializer
    scale: str  # its scale initializer
    bias: str  # the float bias, in the float ONNX
    input_tensor: str  # the tensor the consumer reads, whose own range onnxruntime's int32 guard reads
    input_scale: str  # the scale the consumer's input is dequantized with (perhaps another tensor's)
    weight_scale: str
    beta: float  # a Gemm's, from the float ONNX (onnxruntime writes 1.0 into the int8 one)


def bias_links(proto, float_proto):
    """[BiasLink] of every bias the int8 ONNX `proto` dequantizes from
    int32; None where one's consumer does not read both its inputs
    through DequantizeLinear after a QuantizeLinear of its input, or is a
    Gemm whose beta is 0 (onnxruntime then zeroes the bias)."""
    from onnx import TensorProto, helper

    initializers = {tensor.name: tensor for tensor in proto.graph.initializer}
    dequantized_by = {node.output[0]: node for node in proto.graph.node if node.op_type == DEQUANTIZE}
    quantized_by = {node.output[0]: node for node in proto.graph.node if node.op_type == QUANTIZE}
    float_nodes = {node.name: node for node in float_proto.graph.node}
    consumers = {}
    for node in proto.graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))
    links = []
    for node in dequantized_by.values():
        quantized = initializers.get(node.input[0])
        if quantized is None or quantized.data_type != TensorProto.INT32:
            continue
        users = consumers.get(node.output[0], [])
        if len(users) != 1 or users[0][1] != 2:
            return None
        user = users[0][0]
        readers = [dequantized_by.get(name) for name in user.input[:2]]
        if None in readers or readers[0].input[0] not in quantized_by:
            return None
        beta = 1.0
        if user.op_type == "Gemm":
            original = float_nodes.get(user.name)
            if original is None:
                return None
            beta = next((float(helper.get_attribute_value(attribute)) for attribute in original.attribute
                         if attribute.name == "beta"), 1.0)
            if beta == 0:
                return None
        links.append(BiasLink(node.input[0], node.input[1], node.output[0],
                              quantized_by[readers[0].input[0]].input[0], readers[0].input[1],
                              readers[1].input[1], beta))
    return links


def near_int32_guard(bias, input_scale, weight_scale):
    """Whether onnxruntime's int32 guard could raise a weight scale for this
    bias (bias scale within INT32_GUARD_MARGIN of the smallest that holds it in int32)."""
    span = float(np.iinfo(np.int32).max) - float(np.iinfo(np.int32).min + 1)
    smallest = 1.0001 * 2.0 * np.abs(np.asarray(bias, np.float64)) / span
    candidate = np.float64(input_scale) * np.asarray(weight_scale, np.float64)
    return bool(np.any((candidate > 0) & (candidate < smallest * INT32_GUARD_MARGIN)))


def quantized_bias(bias, bias_scale):
    """The int32 bias onnxruntime writes for `bias` on `bias_scale`."""
    values = np.round(np.asarray(bias, np.float64) / np.asarray(bias_scale, np.float64))
    limits = np.iinfo(np.int32)
    return np.clip(values, np.float64(limits.min), np.float64(limits.max)).astype(np.int32)


def softmax_outputs(proto):
    return {node.output[0] for node in proto.graph.node if node.op_type == "Softmax"}


def requantized(template, template_ranges, float_proto, ranges, activation_type):
    """The int8 ONNX onnxruntime would write from the float ONNX `float_proto`
    with activation ranges `ranges` ({tensor: (low, high)}), given
    `template`, the one it wrote with `template_ranges` and otherwise the
    same settings; None where that cannot be read off the template (module
    docstring)."""
    from onnx import numpy_helper

    activations = activation_initializers(template, ranges)
    links = bias_links(template, float_proto)
    if activations is None or links is None or set(activations) & softmax_outputs(float_proto):
        return None
    float_biases = {tensor.name: tensor for tensor in float_proto.graph.initializer}
    initializers = {tensor.name: tensor for tensor in template.graph.initializer}
    replaced = {}
    scales = {}
    for tensor, (scale_name, zero_point_name) in activations.items():
        zero_point, scale = activation_parameters(*ranges[tensor], activation_type)
        replaced[scale_name] = refilled(initializers[scale_name], scale)
        replaced[zero_point_name] = refilled(initializers[zero_point_name], zero_point)
        scales[scale_name] = scale
    for link in links:
        if link.bias not in float_biases or link.input_scale not in scales or not all(
                link.input_tensor in known for known in (ranges, template_ranges)):
            return None
        bias = numpy_helper.to_array(float_biases[link.bias])
        weight_scale = numpy_helper.to_array(initializers[link.weight_scale])
        input_scale = np.asarray(scales[link.input_scale], np.float32)
        guarded_scales = (input_scale, numpy_helper.to_array(initializers[link.input_scale]),
                          *(activation_parameters(*known[link.input_tensor], activation_type)[1]
                            for known in (ranges, template_ranges)))
        if any(near_int32_guard(bias, scale, weight_scale) for scale in guarded_scales):
            return None
        bias_scale = input_scale * weight_scale * link.beta
        replaced[link.quantized] = refilled(initializers[link.quantized], quantized_bias(bias, bias_scale))
        replaced[link.scale] = refilled(initializers[link.scale], np.asarray(bias_scale, bias.dtype).reshape(-1))
    model = type(template)()
    model.CopyFrom(template)
    for position, tensor in enumerate(model.graph.initializer):
        if tensor.name in replaced:
            model.graph.initializer[position].CopyFrom(replaced[tensor.name])
    return model
