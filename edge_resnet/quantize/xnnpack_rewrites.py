"""Operators XNNPACK has no int8 kernel for, written as ones it has.

The int8 models are made from a float32 TFLite whose every operator XNNPACK
should run in int8: one it cannot cuts the int8 graph into delegated pieces
with TFLite's own kernels between them (slower than the float32 model, on
a trained MobileNetV3Small: benchmarks/results/xnnpack_rewrites.md). Each rewrite
computes the same function in float32 (to float32 rounding), and the
statistics pass ranges any new tensor like any other; the float32 artifact
keeps the converter's graph.

- HARD_SWISH (MobileNetV3's activation, x * relu6(x + 3) / 6, fused by the
  TFLite converter): an ADD of 3 with a fused RELU6, a MUL by 1/6 and a
  MUL by x.
- AVERAGE_POOL_2D that pads nothing (DenseNet's transitions, a ResNet-D
  shortcut's 2x2 pooling on an even size, AveragePooling2D's default): a
  depthwise convolution whose weights are all 1 / (window area). One that
  pads averages only the inputs inside the image, which a convolution
  cannot, so it is left.
- MAX_POOL_2D of a 1x1 window with a stride (ResNetV2's shortcut in a
  stage's last block: XNNPACK takes no 1x1 pooling that strides, in any
  precision, so the float32 artifact gets this one too): the same
  depthwise convolution, its one weight 1, which picks every stride-th
  pixel as the pooling does.
- A RELU or RELU6 of its own, not fused into the operator before it
  (Xception's, after an addition whose sum the next block also reads):
  XNNPACK runs it in float32 only; a depthwise convolution of weight 1 with
  it fused.
"""

import numpy as np

from .statistics import flatbuffer_bytes, read_flatbuffer


def float_tensor_like(subgraph, like, name):
    """The index of a new float32 activation tensor of `like`'s shape."""
    from ai_edge_litert import schema_py_generated as schema

    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.buffer = name, schema.TensorType.FLOAT32, 0
    tensor.shape = None if like.shape is None else list(like.shape)
    tensor.shapeSignature = None if like.shapeSignature is None else list(like.shapeSignature)
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def elementwise(model, builtin, inputs, output, activation=0):
    """An ADD or MUL operator (version 1) of `inputs` into `output` with a fused `activation`."""
    from ai_edge_litert import schema_py_generated as schema

    from .int8_tflite import operator_code_index

    operator = schema.OperatorT()
    operator.opcodeIndex = operator_code_index(model, builtin, 1)
    operator.inputs, operator.outputs = list(inputs), [output]
    if builtin == schema.BuiltinOperator.ADD:
        operator.builtinOptionsType, operator.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    else:
        operator.builtinOptionsType, operator.builtinOptions = schema.BuiltinOptions.MulOptions, schema.MulOptionsT()
    operator.builtinOptions.fusedActivationFunction = activation
    return operator


def decomposed(model, subgraph, operator):
    """The three operators that compute `operator`'s (a HARD_SWISH) output from its input."""
    from ai_edge_litert import schema_py_generated as schema

    x, output = operator.inputs[0], operator.outputs[0]
    name = subgraph.tensors[output].name
    gate = float_tensor_like(subgraph, subgraph.tensors[output], name + b"/relu6_x_plus_3")
    scaled = float_tensor_like(subgraph, subgraph.tensors[output], name + b"/relu6_x_plus_3_over_6")
    three = float_array(model, subgraph, name + b"/three", 3.0)
    sixth = float_array(model, subgraph, name + b"/one_sixth", 1.0 / 6.0)
    return [elementwise(model, schema.BuiltinOperator.ADD, (x, three), gate, schema.ActivationFunctionType.RELU6),
            elementwise(model, schema.BuiltinOperator.MUL, (gate, sixth), scaled),
            elementwise(model, schema.BuiltinOperator.MUL, (x, scaled), output)]


def float_array(model, subgraph, name, values):
    """The index of a new float32 constant tensor holding `values` (its shape theirs)."""
    from ai_edge_litert import schema_py_generated as schema

    values = np.asarray(values, np.float32)
    buffer = schema.BufferT()
    buffer.data = values.reshape(-1).view(np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.shape = name, schema.TensorType.FLOAT32, list(values.shape)
    tensor.buffer = len(model.buffers) - 1
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def unpadded_average_pool(subgraph, operator):
    """Whether an AVERAGE_POOL_2D averages whole windows only: VALID, or
    SAME where the windows fit the input exactly (no padding added)."""
    from ai_edge_litert import schema_py_generated as schema

    options = operator.builtinOptions
    if options.padding == schema.Padding.VALID:
        return True
    shape = subgraph.tensors[operator.inputs[0]].shape
    if shape is None or len(shape) != 4:
        return False
    return all(-(-size // stride) * stride - stride + window - size <= 0 or window == 1
               for size, stride, window in ((int(shape[1]), options.strideH, options.filterHeight),
                                            (int(shape[2]), options.strideW, options.filterWidth)))


def strided_one_pixel_pool(subgraph, operator):
    """Whether a pooling reads one pixel per output (a 1x1 window, which pads nothing whatever its padding) and
    strides (XNNPACK copies a 1x1 pooling that does not itself)."""
    options = operator.builtinOptions
    return options.filterHeight == 1 and options.filterWidth == 1 and max(options.strideH, options.strideW) > 1


def depthwise(model, subgraph, operator, weights, strides=(1, 1), activation=0):
    """The DEPTHWISE_CONV_2D (VALID, no bias) of `weights` (1, height, width, channels) from `operator`'s first
    input into its output."""
    from ai_edge_litert import schema_py_generated as schema

    from .int8_tflite import operator_code_index

    output = operator.outputs[0]
    name, channels = subgraph.tensors[output].name, weights.shape[-1]
    kernel = float_array(model, subgraph, name + b"/depthwise_weights", weights)
    bias = float_array(model, subgraph, name + b"/depthwise_bias", np.zeros(channels))
    convolution = schema.OperatorT()
    convolution.opcodeIndex = operator_code_index(model, schema.BuiltinOperator.DEPTHWISE_CONV_2D, 1)
    convolution.inputs, convolution.outputs = [operator.inputs[0], kernel, bias], [output]
    options = schema.DepthwiseConv2DOptionsT()
    options.padding, (options.strideH, options.strideW) = schema.Padding.VALID, strides
    options.depthMultiplier, options.dilationHFactor, options.dilationWFactor = 1, 1, 1
    options.fusedActivationFunction = activation
    convolution.builtinOptionsType = schema.BuiltinOptions.DepthwiseConv2DOptions
    convolution.builtinOptions = options
    return convolution


def channels(subgraph, operator):
    return int(subgraph.tensors[operator.inputs[0]].shape[-1])


def average_pool_as_depthwise(model, subgraph, operator):
    """The DEPTHWISE_CONV_2D that computes `operator`'s (an unpadded AVERAGE_POOL_2D, or a pooling of 1x1
    windows) output from its input."""
    pool = operator.builtinOptions
    window = (1, pool.filterHeight, pool.filterWidth, channels(subgraph, operator))
    return [depthwise(model, subgraph, operator, np.full(window, 1.0 / (pool.filterHeight * pool.filterWidth)),
                      (pool.strideH, pool.strideW), pool.fusedActivationFunction)]


def of_an_image(subgraph, operator):
    """Whether an operator's input is an image tensor (N, H, W, C) of known channels, as a depthwise convolution
    reads."""
    tensor = subgraph.tensors[operator.inputs[0]]
    signature = tensor.shapeSignature
    return (tensor.shape is not None and len(tensor.shape) == 4
            and (signature is None or len(signature) == 0 or int(signature[-1]) > 0))


def activation_as_depthwise(activation):
    """What writes a standalone RELU or RELU6 as the depthwise convolution of weight 1 with it fused."""
    def rewrite(model, subgraph, operator):
        return [depthwise(model, subgraph, operator, np.ones((1, 1, 1, channels(subgraph, operator))),
                          activation=activation)]

    return rewrite


def rewrites_for_every_precision():
    """{builtin operator: (whether to rewrite one, the operators that replace it)} of what XNNPACK runs in no
    precision."""
    from ai_edge_litert import schema_py_generated as schema

    return {schema.BuiltinOperator.MAX_POOL_2D: (strided_one_pixel_pool, average_pool_as_depthwise)}


def rewrites():
    """rewrites_for_every_precision() and what XNNPACK runs in float32 but not in int8."""
    from ai_edge_litert import schema_py_generated as schema

    activation = schema.ActivationFunctionType
    return {**rewrites_for_every_precision(),
            schema.BuiltinOperator.HARD_SWISH: (lambda subgraph, operator: True, decomposed),
            schema.BuiltinOperator.AVERAGE_POOL_2D: (unpadded_average_pool, average_pool_as_depthwise),
            schema.BuiltinOperator.RELU: (of_an_image, activation_as_depthwise(activation.RELU)),
            schema.BuiltinOperator.RELU6: (of_an_image, activation_as_depthwise(activation.RELU6))}


def for_int8_xnnpack(model_bytes):
    """`model_bytes` (a float32 TFLite model) with every operator XNNPACK
    has no int8 kernel for written as ones it has, where one computes the
    same; the same bytes where there is none."""
    return with_rewrites(model_bytes, rewrites())


def for_xnnpack(model_bytes):
    """`model_bytes` (a TFLite model of any precision) with every operator XNNPACK runs in no precision written as
    ones it runs, where one computes the same; the same bytes where there is none."""
    return with_rewrites(model_bytes, rewrites_for_every_precision())


def with_rewrites(model_bytes, rewrite):
    model = read_flatbuffer(model_bytes)
    subgraph = model.subgraphs[0]
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    chosen = {id(op) for op in subgraph.operators if codes[op.opcodeIndex] in rewrite
              and rewrite[codes[op.opcodeIndex]][0](subgraph, op)}
    if not chosen:
        return model_bytes
    operators = []
    for op in subgraph.operators:
        operators += rewrite[codes[op.opcodeIndex]][1](model, subgraph, op) if id(op) in chosen else [op]
    subgraph.operators = operators
    return flatbuffer_bytes(model)
