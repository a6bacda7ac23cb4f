"""Float ONNX written straight from the Keras layer graph, without
TensorFlow's graph machinery: each weight is copied once, so ResNet-152
exports in a few hundred MB where tf2onnx needs 18 GB.

Every ONNX tensor is named after the Keras layer that makes it (a layer's
inner tensors "<layer>/<what>"), so activation ranges and per-layer errors
map onto it exactly. Feature maps are laid out NCHW, as onnxruntime runs
them fastest; a tensor goes back to the model's NHWC layout only where a
layer's meaning depends on it (Flatten, Reshape, a 4-D model output).

A layer outside LAYERS, or a graph this module does not write (several
inputs or outputs, shared layers, nested models), raises UnsupportedLayer;
float_onnx() then falls back to tf2onnx and says so in the file.
"""

from dataclasses import dataclass

import numpy as np

INPUT_NAME, OUTPUT_NAME = "input", "output"
PRE_ACTIVATION = "pre_activation"  # "<layer>/pre_activation": a layer's main op's output, before its activation
DEPTHWISE = "depthwise"  # "<layer>/depthwise": a SeparableConv2D's depthwise half, its first op (as in TFLite)
EXPORTER = "edge-resnet"
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


class UnsupportedLayer(Exception):
    """Something this exporter does not write; the caller uses tf2onnx instead."""


@dataclass(frozen=True)
class Value:
    """An ONNX tensor and its layout: a 4-D one is NCHW when channels_first,
    otherwise it has the Keras (channels-last) layout."""

    name: str
    rank: int
    channels_first: bool = False


class Graph:
    """Nodes and initializers, appended in topological order."""

    def __init__(self):
        self.nodes, self.initializers, self._nchw, self._nhwc = [], [], {}, {}

    def constant(self, name, array):
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type, inputs, output, **attributes):
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def channels_first(self, value):
        """`value` as NCHW (4-D) or unchanged (other ranks); one Transpose per tensor."""
        if value.rank != 4 or value.channels_first:
            return value
        if value.name not in self._nchw:
            self._nchw[value.name] = self.node("Transpose", [value.name], f"{value.name}/nchw", perm=TO_NCHW)
        return Value(self._nchw[value.name], 4, True)

    def keras_layout(self, value):
        """`value` in the Keras (NHWC) layout; one Transpose per tensor."""
        if not value.channels_first:
            return value
        if value.name not in self._nhwc:
            self._nhwc[value.name] = self.node("Transpose", [value.name], f"{value.name}/nhwc", perm=TO_NHWC)
        return Value(self._nhwc[value.name], 4, False)


def weight(variable):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def activation_name(layer):
    """The Keras activation a layer applies, by name; UnsupportedLayer for a
    callable that is not Keras's own function of that name (a layer object,
    a partial, a user's function)."""
    import keras

    function = getattr(layer, "activation", None)
    if function is None:
        return "linear"
    name = getattr(function, "__name__", None)
    try:
        known = name is not None and keras.activations.get(name) is function
    except ValueError:
        known = False
    if not known:
        raise UnsupportedLayer(f"the activation {function!r} of layer {layer.name!r}")
    return name


def apply_activation(graph, name, value, output):
    """`value` through the Keras activation `name`, written to `output`."""
    if name == "linear":
        return Value(graph.node("Identity", [value.name], output), value.rank, value.channels_first)
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "elu": "Elu", "softplus": "Softplus"}
    if name in simple:
        graph.node(simple[name], [value.name], output)
    elif name == "relu6":
        clip_to(graph, value.name, output, 0.0, 6.0)
    elif name in ("swish", "silu"):
        sigmoid = graph.node("Sigmoid", [value.name], f"{output}/sigmoid")
        graph.node("Mul", [value.name, sigmoid], output)
    elif name == "softmax":
        graph.node("Softmax", [value.name], output, axis=1 if value.channels_first else -1)
    else:
        raise UnsupportedLayer(f"activation {name!r}")
    return Value(output, value.rank, value.channels_first)


def clip_to(graph, source, output, low, high):
    graph.constant(f"{output}/min", np.float32(low))
    graph.constant(f"{output}/max", np.float32(high))
    return graph.node("Clip", [source, f"{output}/min", f"{output}/max"], output)


def with_activation(graph, layer, op_output_value):
    """A layer's own `activation` after its main op; the result is named after the layer."""
    name = activation_name(layer)
    if name == "linear":
        return op_output_value
    return apply_activation(graph, name, op_output_value, layer.name)


def op_output_name(layer):
    """Where a layer's main op writes: the layer's name, unless an activation follows."""
    return layer.name if activation_name(layer) == "linear" else f"{layer.name}/{PRE_ACTIVATION}"


def explicit_pads(layer, input_shape, kernel_size, strides, dilation=(1, 1)):
    """ONNX pads [top, left, bottom, right] of Keras "valid" or "same" padding
    (TensorFlow puts the odd pixel of "same" at the end)."""
    if layer.padding == "valid":
        return [0, 0, 0, 0]
    if layer.padding != "same" or None in input_shape[1:3]:
        raise UnsupportedLayer(f"padding {layer.padding!r} with input {input_shape}")
    begin, end = [], []
    for size, kernel, stride, rate in zip(input_shape[1:3], kernel_size, strides, dilation):
        total = max((-(-size // stride) - 1) * stride + (kernel - 1) * rate + 1 - size, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


def check_float_weights(layer):
    if getattr(layer, "quantization_mode", None):
        raise UnsupportedLayer(f"layer {layer.name!r}, quantized by Keras ({layer.quantization_mode})")


def check_channels_last(layer):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise UnsupportedLayer(f"data_format {layer.data_format!r}")


def convolution(graph, layer, inputs, onnx_kernel, group):
    """A Conv2D-like layer as one ONNX Conv (plus its activation)."""
    check_channels_last(layer)
    check_float_weights(layer)
    x = graph.channels_first(inputs[0])
    names = [x.name, graph.constant(f"{layer.name}/kernel", onnx_kernel)]
    if layer.use_bias:
        names.append(graph.constant(f"{layer.name}/bias", weight(layer.bias)))
    spatial_conv(graph, layer, names, op_output_name(layer), group)
    return with_activation(graph, layer, Value(op_output_name(layer), 4, True))


def spatial_conv(graph, layer, names, output, group):
    """The ONNX Conv of `layer`'s window, strides, dilation and padding."""
    return graph.node("Conv", names, output, kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
                      dilations=list(layer.dilation_rate), group=group,
                      pads=explicit_pads(layer, layer.input.shape, layer.kernel_size, layer.strides,
                                         layer.dilation_rate))


def conv2d(graph, layer, inputs):
    kernel = weight(layer.kernel)  # (kh, kw, in / groups, out)
    return convolution(graph, layer, inputs, kernel.transpose(3, 2, 0, 1), getattr(layer, "groups", 1))


def depthwise_conv2d(graph, layer, inputs):
    kernel = weight(layer.kernel)  # (kh, kw, in, multiplier): output channel c * multiplier + m
    height, width, channels, multiplier = kernel.shape
    onnx_kernel = kernel.reshape(height, width, 1, channels * multiplier).transpose(3, 2, 0, 1)
    return convolution(graph, layer, inputs, onnx_kernel, channels)


def separable_conv2d(graph, layer, inputs):
    """A depthwise Conv into "<layer>/depthwise", then the pointwise 1x1 Conv with the bias and the activation."""
    check_channels_last(layer)
    check_float_weights(layer)
    if activation_name(layer) not in ("linear", "relu", "relu6"):  # their pre-activation takes the output's range
        raise UnsupportedLayer(f"SeparableConv2D {layer.name!r} with activation {activation_name(layer)!r}")
    if max(layer.dilation_rate) > 1:  # TFLite may compute it through SPACE_TO_BATCH_ND: its first tensor is another
        raise UnsupportedLayer(f"SeparableConv2D {layer.name!r} with dilation {layer.dilation_rate}")
    depthwise = weight(layer.depthwise_kernel)  # (kh, kw, in, multiplier)
    height, width, channels, multiplier = depthwise.shape
    x = graph.channels_first(inputs[0])
    kernel = graph.constant(f"{layer.name}/depthwise_kernel",
                            depthwise.reshape(height, width, 1, channels * multiplier).transpose(3, 2, 0, 1))
    middle = spatial_conv(graph, layer, [x.name, kernel], f"{layer.name}/{DEPTHWISE}", channels)
    names = [middle, graph.constant(f"{layer.name}/pointwise_kernel",
                                    weight(layer.pointwise_kernel).transpose(3, 2, 0, 1))]
    if layer.use_bias:
        names.append(graph.constant(f"{layer.name}/bias", weight(layer.bias)))
    graph.node("Conv", names, op_output_name(layer), kernel_shape=[1, 1])
    return with_activation(graph, layer, Value(op_output_name(layer), 4, True))


def dense(graph, layer, inputs):
    check_float_weights(layer)
    x = inputs[0]
    if x.rank != 2:
        raise UnsupportedLayer(f"Dense on a rank-{x.rank} input")
    names = [x.name, graph.constant(f"{layer.name}/kernel", weight(layer.kernel))]
    if layer.use_bias:
        names.append(graph.constant(f"{layer.name}/bias", weight(layer.bias)))
    graph.node("Gemm", names, op_output_name(layer))
    return with_activation(graph, layer, Value(op_output_name(layer), 2))


def per_channel(graph, name, values, value):
    """A per-channel constant shaped to broadcast over `value`'s channel axis."""
    values = np.asarray(values, np.float32).reshape(-1)
    if values.size == 1:
        return graph.constant(name, values.reshape(()))
    shape = (values.size, 1, 1) if value.channels_first else (values.size,)
    return graph.constant(name, values.reshape(shape))


def batch_normalization(graph, layer, inputs):
    x = graph.channels_first(inputs[0])
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    if axis not in (-1, x.rank - 1) or x.rank not in (2, 4):
        raise UnsupportedLayer(f"BatchNormalization over axis {layer.axis} of a rank-{x.rank} tensor")
    mean, variance = weight(layer.moving_mean), weight(layer.moving_variance)
    gamma = weight(layer.gamma) if layer.scale else np.ones_like(mean)
    beta = weight(layer.beta) if layer.center else np.zeros_like(mean)
    names = [x.name] + [graph.constant(f"{layer.name}/{part}", array) for part, array in
                        (("gamma", gamma), ("beta", beta), ("moving_mean", mean), ("moving_variance", variance))]
    graph.node("BatchNormalization", names, layer.name, epsilon=float(layer.epsilon))
    return Value(layer.name, x.rank, x.channels_first)


def activation(graph, layer, inputs):
    return apply_activation(graph, activation_name(layer), inputs[0], layer.name)


def relu(graph, layer, inputs):
    x = inputs[0]
    slope, threshold = float(layer.negative_slope), float(layer.threshold)
    if threshold != 0 or (slope != 0 and layer.max_value is not None):
        raise UnsupportedLayer("ReLU with a threshold, or with both a slope and a maximum")
    if slope != 0:
        graph.node("LeakyRelu", [x.name], layer.name, alpha=slope)
    elif layer.max_value is not None:
        clip_to(graph, x.name, layer.name, 0.0, float(layer.max_value))
    else:
        graph.node("Relu", [x.name], layer.name)
    return Value(layer.name, x.rank, x.channels_first)


def leaky_relu(graph, layer, inputs):
    x = inputs[0]
    graph.node("LeakyRelu", [x.name], layer.name, alpha=float(layer.negative_slope))
    return Value(layer.name, x.rank, x.channels_first)


def same_layout(graph, inputs):
    """Inputs in one layout: 4-D ones as NCHW."""
    return [graph.channels_first(value) for value in inputs]


def elementwise(op_type):
    def write(graph, layer, inputs):
        if len({value.rank for value in inputs}) != 1:
            raise UnsupportedLayer(f"layer {layer.name!r} on inputs of different ranks (Keras broadcasts them "
                                   "from the left, ONNX from the right)")
        values = same_layout(graph, inputs)
        result = values[0].name
        for index, value in enumerate(values[1:], 1):
            output = layer.name if index == len(values) - 1 else f"{layer.name}/{index}"
            result = graph.node(op_type, [result, value.name], output)
        return Value(layer.name, max(v.rank for v in values), any(v.channels_first for v in values))

    return write


def concatenate(graph, layer, inputs):
    values = same_layout(graph, inputs)
    rank, channels_first = values[0].rank, values[0].channels_first
    axis = layer.axis % rank
    if channels_first:
        axis = {0: 0, 1: 2, 2: 3, 3: 1}[axis]
    graph.node("Concat", [value.name for value in values], layer.name, axis=axis)
    return Value(layer.name, rank, channels_first)


def zero_padding2d(graph, layer, inputs):
    check_channels_last(layer)
    x = graph.channels_first(inputs[0])
    (top, bottom), (left, right) = layer.padding
    pads = graph.constant(f"{layer.name}/pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
    graph.node("Pad", [x.name, pads], layer.name)
    return Value(layer.name, 4, True)


def cropping2d(graph, layer, inputs):
    check_channels_last(layer)
    x = graph.channels_first(inputs[0])
    (top, bottom), (left, right) = layer.cropping
    height, width = layer.input.shape[1:3]
    if height is None or width is None:
        raise UnsupportedLayer(f"Cropping2D {layer.name!r} of an input of unknown size")
    starts = graph.constant(f"{layer.name}/starts", np.array([top, left], np.int64))
    ends = graph.constant(f"{layer.name}/ends", np.array([height - bottom, width - right], np.int64))
    axes = graph.constant(f"{layer.name}/axes", np.array([2, 3], np.int64))
    graph.node("Slice", [x.name, starts, ends, axes], layer.name)
    return Value(layer.name, 4, True)


def zero_padding3d(graph, layer, inputs):
    check_channels_last(layer)
    x = graph.keras_layout(inputs[0])  # (N, D1, D2, D3, C)
    begins, ends = zip(*layer.padding)
    pads = graph.constant(f"{layer.name}/pads", np.array([0, *begins, 0, 0, *ends, 0], np.int64))
    graph.node("Pad", [x.name, pads], layer.name)
    return Value(layer.name, 5)


def pooling2d(op_type):
    def write(graph, layer, inputs):
        check_channels_last(layer)
        x = graph.channels_first(inputs[0])
        pads = explicit_pads(layer, layer.input.shape, layer.pool_size, layer.strides)
        graph.node(op_type, [x.name], layer.name, kernel_shape=list(layer.pool_size), strides=list(layer.strides),
                   pads=pads)
        return Value(layer.name, 4, True)

    return write


def global_pooling2d(op_type):
    def write(graph, layer, inputs):
        check_channels_last(layer)
        x = graph.channels_first(inputs[0])
        if layer.keepdims:
            graph.node(op_type, [x.name], layer.name)
            return Value(layer.name, 4, True)
        pooled = graph.node(op_type, [x.name], f"{layer.name}/pooled")
        graph.node("Flatten", [pooled], layer.name, axis=1)
        return Value(layer.name, 2)

    return write


def flatten(graph, layer, inputs):
    check_channels_last(layer)
    x = graph.keras_layout(inputs[0])  # Keras flattens in NHWC order
    graph.node("Flatten", [x.name], layer.name, axis=1)
    return Value(layer.name, 2)


def reshape(graph, layer, inputs):
    x = graph.keras_layout(inputs[0])
    shape = graph.constant(f"{layer.name}/shape", np.array([0, *layer.target_shape], np.int64))  # 0 keeps the batch
    graph.node("Reshape", [x.name, shape], layer.name)
    return Value(layer.name, 1 + len(layer.target_shape))


def identity(graph, layer, inputs):
    x = inputs[0]
    graph.node("Identity", [x.name], layer.name)
    return Value(layer.name, x.rank, x.channels_first)


def rescaling(graph, layer, inputs):
    x = inputs[0]
    scale = per_channel(graph, f"{layer.name}/scale", layer.scale, x)
    offset = per_channel(graph, f"{layer.name}/offset", layer.offset, x)
    scaled = graph.node("Mul", [x.name, scale], f"{layer.name}/scaled")
    graph.node("Add", [scaled, offset], layer.name)
    return Value(layer.name, x.rank, x.channels_first)


def normalization(graph, layer, inputs):
    import keras

    x = inputs[0]
    if layer.invert or tuple(layer.axis) not in ((-1,), (x.rank - 1,)):
        raise UnsupportedLayer("Normalization inverted or over an axis other than the channels")
    std = np.maximum(np.sqrt(weight(layer.variance)), keras.backend.epsilon())
    mean = per_channel(graph, f"{layer.name}/mean", weight(layer.mean), x)
    centred = graph.node("Sub", [x.name, mean], f"{layer.name}/centred")
    graph.node("Div", [centred, per_channel(graph, f"{layer.name}/std", std, x)], layer.name)
    return Value(layer.name, x.rank, x.channels_first)


LAYERS = {
    "Conv2D": conv2d,
    "DepthwiseConv2D": depthwise_conv2d,
    "SeparableConv2D": separable_conv2d,
    "Dense": dense,
    "BatchNormalization": batch_normalization,
    "Activation": activation,
    "ReLU": relu,
    "LeakyReLU": leaky_relu,
    "Add": elementwise("Add"),
    "Subtract": elementwise("Sub"),
    "Multiply": elementwise("Mul"),
    "Concatenate": concatenate,
    "ZeroPadding2D": zero_padding2d,
    "Cropping2D": cropping2d,
    "ZeroPadding3D": zero_padding3d,
    "MaxPooling2D": pooling2d("MaxPool"),
    "AveragePooling2D": pooling2d("AveragePool"),
    "GlobalAveragePooling2D": global_pooling2d("GlobalAveragePool"),
    "GlobalMaxPooling2D": global_pooling2d("GlobalMaxPool"),
    "Flatten": flatten,
    "Reshape": reshape,
    "Dropout": identity,
    "SpatialDropout2D": identity,
    "GaussianNoise": identity,
    "GaussianDropout": identity,
    "Identity": identity,
    "Rescaling": rescaling,
    "Normalization": normalization,
}


def layer_graph(model):
    """[(layer, input tensors, output tensor)] in topological order;
    UnsupportedLayer for graphs this module does not write."""
    import keras

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayer("a model with several inputs or outputs")
    steps = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind not in LAYERS or type(layer) is not getattr(keras.layers, kind, None):
            raise UnsupportedLayer(f"layer {layer.name!r} ({type(layer).__module__}.{kind})"
                                   if kind in LAYERS else f"layer {layer.name!r} ({kind})")
        if len(layer._inbound_nodes) != 1:
            raise UnsupportedLayer(f"layer {layer.name!r} is used {len(layer._inbound_nodes)} times")
        node = layer._inbound_nodes[0]
        if len(node.output_tensors) != 1:
            raise UnsupportedLayer(f"layer {layer.name!r} has several outputs")
        steps.append((layer, list(node.input_tensors), node.output_tensors[0]))
    return steps


def keras_to_onnx(model, opset):
    """ModelProto of the float Keras `model`: input "input" (N, H, W, C),
    output "output", dynamic batch. UnsupportedLayer if it cannot."""
    import onnx
    from onnx import helper

    from .. import __version__

    final_layer = model.outputs[0]._keras_history[0]
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":  # its name names no ONNX tensor
            continue
        if layer.name in (INPUT_NAME, OUTPUT_NAME) and not (layer is final_layer and layer.name == OUTPUT_NAME):
            raise UnsupportedLayer(f"a layer named {layer.name!r} (the graph's own input or output name)")
    graph = Graph()
    values = {id(model.inputs[0]): Value(INPUT_NAME, len(model.inputs[0].shape))}
    for layer, input_tensors, output_tensor in layer_graph(model):
        try:
            inputs = [values[id(tensor)] for tensor in input_tensors]
        except KeyError:
            raise UnsupportedLayer(f"layer {layer.name!r} reads a tensor from outside the model") from None
        values[id(output_tensor)] = LAYERS[type(layer).__name__](graph, layer, inputs)
    result = graph.keras_layout(values[id(model.outputs[0])])
    if result.name != OUTPUT_NAME:
        if final_layer.name == OUTPUT_NAME:
            raise UnsupportedLayer(f"a {result.rank}-D output layer named {OUTPUT_NAME!r}")
        graph.node("Identity", [result.name], OUTPUT_NAME)

    def io(name, shape):
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["N", *shape[1:]])

    proto_graph = helper.make_graph(graph.nodes, model.name, [io(INPUT_NAME, model.inputs[0].shape)],
                                    [io(OUTPUT_NAME, model.outputs[0].shape)], graph.initializers)
    opset_id = helper.make_opsetid("", opset)
    return helper.make_model(proto_graph, opset_imports=[opset_id], producer_name=EXPORTER,
                             producer_version=__version__, ir_version=helper.find_min_ir_version_for([opset_id]))
