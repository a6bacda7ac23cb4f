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
  depthwise convolution whose weights are all 1 / (window area).
- AVERAGE_POOL_2D that pads (InceptionV3's and NASNet's 3x3 SAME poolings):
  TFLite averages only the inputs inside the image, so at the border it
  divides by fewer than the window's area. The same depthwise convolution
  (SAME, so the outside reads zero) times a constant map of area / (inputs
  inside the image) per output position. In int8 the map is exact only on
  a grid that holds every one of its values: scale area / M (M the least
  common multiple of the counts), integers M / count up to 127 (9, 6 and 4
  for a 3x3 window); litert-quantizer would scale it by its largest value
  and round the rest (the interior's 1 to 0.992), so the int8 model gets
  that grid afterwards (exact_count_maps). A window whose counts have no
  such grid (5x5: M / 9 = 400) keeps its pooling.
- MAX_POOL_2D or AVERAGE_POOL_2D of a 1x1 window with a stride (ResNetV2's
  shortcut in a stage's last block, NASNet's reductions: XNNPACK takes no
  1x1 pooling that strides, in any precision, so the float32 artifact gets
  this one too): the same
  depthwise convolution, its one weight 1, which picks every stride-th
  pixel as the pooling does.
- CONCATENATION of more than five inputs (NASNet's cells join six): XNNPACK
  joins at most five in one operator, in any precision, so the float32
  artifact gets this one too: a chain of CONCATENATIONs, the first joining
  the first five inputs, each next one the one before's output and up to
  four more. In int8 the chain shares one range, as every concatenation's
  inputs and output do (ranges.holding_their_inputs).
- A RELU or RELU6 of its own, not fused into the operator before it
  (Xception's, after an addition whose sum the next block also reads):
  XNNPACK runs it in float32 only; a depthwise convolution of weight 1 with
  it fused.
"""

import copy

import numpy as np

from .statistics import flatbuffer_bytes, read_flatbuffer


def float_tensor_like(subgraph, like, name, axis=None, size=None):
    """The index of a new float32 activation tensor of `like`'s shape (but `size` along `axis`, where given)."""
    from ai_edge_litert import schema_py_generated as schema

    def resized(shape):
        shape = list(shape)
        if axis is not None:
            shape[axis] = size
        return shape

    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.buffer = name, schema.TensorType.FLOAT32, 0
    tensor.shape = None if like.shape is None else resized(like.shape)
    signature = like.shapeSignature
    tensor.shapeSignature = None if signature is None else resized(signature) if len(signature) else []
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


def depthwise(model, subgraph, operator, weights, strides=(1, 1), activation=0, output=None, padding=None):
    """The DEPTHWISE_CONV_2D (VALID unless `padding`, no bias) of `weights` (1, height, width, channels) from
    `operator`'s first input into its output (or the tensor `output`)."""
    from ai_edge_litert import schema_py_generated as schema

    from .int8_tflite import operator_code_index

    output = operator.outputs[0] if output is None else output
    name, channels = subgraph.tensors[output].name, weights.shape[-1]
    kernel = float_array(model, subgraph, name + b"/depthwise_weights", weights)
    bias = float_array(model, subgraph, name + b"/depthwise_bias", np.zeros(channels))
    convolution = schema.OperatorT()
    convolution.opcodeIndex = operator_code_index(model, schema.BuiltinOperator.DEPTHWISE_CONV_2D, 1)
    convolution.inputs, convolution.outputs = [operator.inputs[0], kernel, bias], [output]
    options = schema.DepthwiseConv2DOptionsT()
    options.padding = schema.Padding.VALID if padding is None else padding
    options.strideH, options.strideW = strides
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


COUNT_MAP_SUFFIX = b"/area_over_inputs_inside"
INT8_LIMIT = 127


def inside_counts(size, window, stride):
    """Per output position along one axis of a SAME pooling: how many of its window's inputs lie inside."""
    outputs = -(-size // stride)
    before = max((outputs - 1) * stride + window - size, 0) // 2
    starts = np.arange(outputs) * stride - before
    return np.minimum(starts + window, size) - np.maximum(starts, 0)


def count_map(input_shape, window, strides):
    """(area / inputs inside the window, per output position as (1, height, width, 1); the int8 grid's scale
    area / M; the integers M / count on it) of a SAME pooling on `input_shape` (N, H, W, C); the grid's None
    where some integer would pass INT8_LIMIT."""
    counts = np.outer(*(inside_counts(int(size), size_window, stride)
                        for size, size_window, stride in zip(input_shape[1:3], window, strides)))
    area = window[0] * window[1]
    multiple = int(np.lcm.reduce(np.unique(counts)))
    integers = multiple // counts
    ratios = (area / counts)[None, :, :, None].astype(np.float32)
    if integers.max() > INT8_LIMIT:
        return ratios, None, None
    return ratios, area / multiple, integers[None, :, :, None]


def pool_geometry(operator):
    pool = operator.builtinOptions
    return (pool.filterHeight, pool.filterWidth), (pool.strideH, pool.strideW)


def padded_average_pool_on_grid(subgraph, operator):
    """Whether an AVERAGE_POOL_2D pads, on an image of known size and channels, and its map of area / count
    has an exact int8 grid (count_map)."""
    tensor = subgraph.tensors[operator.inputs[0]]
    if unpadded_average_pool(subgraph, operator) or not of_an_image(subgraph, operator):
        return False
    signature = tensor.shapeSignature
    if signature is not None and len(signature) and min(int(size) for size in signature[1:]) <= 0:
        return False
    return count_map(tensor.shape, *pool_geometry(operator))[1] is not None


def padded_average_pool_as_depthwise(model, subgraph, operator):
    """The DEPTHWISE_CONV_2D (SAME, weights 1 / area) and MUL by area / count that compute `operator`'s (an
    AVERAGE_POOL_2D that pads) output from its input: TFLite averages the inputs inside the image only."""
    from ai_edge_litert import schema_py_generated as schema

    window, strides = pool_geometry(operator)
    output = subgraph.tensors[operator.outputs[0]]
    window_mean = float_tensor_like(subgraph, output, output.name + b"/window_sum_over_area")
    ratios = float_array(model, subgraph, output.name + COUNT_MAP_SUFFIX,
                         count_map(subgraph.tensors[operator.inputs[0]].shape, window, strides)[0])
    weights = np.full((1, *window, channels(subgraph, operator)), 1.0 / (window[0] * window[1]))
    return [depthwise(model, subgraph, operator, weights, strides, output=window_mean, padding=schema.Padding.SAME),
            elementwise(model, schema.BuiltinOperator.MUL, (window_mean, ratios), operator.outputs[0],
                        operator.builtinOptions.fusedActivationFunction)]


def exact_count_maps(int8_model_bytes):
    """`int8_model_bytes` with each int8 count map of padded_average_pool_as_depthwise on its exact grid
    (count_map); the same bytes where it has none."""
    from ai_edge_litert import schema_py_generated as schema

    if COUNT_MAP_SUFFIX not in int8_model_bytes:  # no count map: spare reading the whole model (60 ms at 224)
        return int8_model_bytes
    model = read_flatbuffer(int8_model_bytes)
    subgraph = model.subgraphs[0]
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    writers = {output: operator for operator in subgraph.operators for output in operator.outputs}
    changed = False
    for operator in subgraph.operators:
        for position, index in enumerate(operator.inputs[:2]):
            tensor = subgraph.tensors[index]
            if not tensor.name.endswith(COUNT_MAP_SUFFIX) or tensor.type != schema.TensorType.INT8:
                continue
            pooling = writers[operator.inputs[1 - position]]
            while codes[pooling.opcodeIndex] in (schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.DEQUANTIZE):
                pooling = writers[pooling.inputs[0]]  # a mixed-precision model's boundary
            options, weights = pooling.builtinOptions, subgraph.tensors[pooling.inputs[1]]
            _, scale, integers = count_map(subgraph.tensors[pooling.inputs[0]].shape, tuple(weights.shape[1:3]),
                                           (options.strideH, options.strideW))
            model.buffers[tensor.buffer].data = integers.astype(np.int8).reshape(-1).view(np.uint8)
            tensor.quantization.scale, tensor.quantization.zeroPoint = [float(scale)], [0]
            changed = True
    return flatbuffer_bytes(model) if changed else int8_model_bytes


MOST_JOINED = 5  # inputs XNNPACK's delegate takes in one CONCATENATION


def wide_concatenation(subgraph, operator):
    """Whether a CONCATENATION joins more inputs than XNNPACK takes in one, all of known size along its axis."""
    def known_along_axis(tensor):
        if tensor.shape is None or not len(tensor.shape):
            return False
        axis = operator.builtinOptions.axis % len(tensor.shape)
        signature = tensor.shapeSignature
        return signature is None or not len(signature) or int(signature[axis]) >= 0

    return len(operator.inputs) > MOST_JOINED and all(known_along_axis(subgraph.tensors[index])
                                                       for index in operator.inputs)


def concatenation_in_steps(model, subgraph, operator):
    """CONCATENATIONs of at most MOST_JOINED inputs each that compute `operator`'s output: the first joins the
    first inputs, each next one the one before's output and the next inputs; the last applies the fused
    activation (it acts on each value alone)."""
    options = operator.builtinOptions
    output = subgraph.tensors[operator.outputs[0]]
    axis = options.axis % len(output.shape)
    steps, joined = [], [operator.inputs[0]]
    rest = list(operator.inputs[1:])
    while rest:
        taken, rest = rest[:MOST_JOINED - len(joined)], rest[MOST_JOINED - len(joined):]
        step = copy.copy(operator)
        step.inputs, step.builtinOptions = joined + taken, copy.copy(options)
        if rest:
            size = sum(int(subgraph.tensors[index].shape[axis]) for index in step.inputs)
            step.outputs = [float_tensor_like(subgraph, output, output.name + b"/joined_%d" % len(steps), axis,
                                              size)]
            step.builtinOptions.fusedActivationFunction = 0
        steps.append(step)
        joined = [step.outputs[0]]
    return steps


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


def rewritable_average_pool(subgraph, operator):
    return unpadded_average_pool(subgraph, operator) or padded_average_pool_on_grid(subgraph, operator)


def average_pool_by_padding(model, subgraph, operator):
    """What computes a rewritable AVERAGE_POOL_2D: a depthwise convolution where it pads nothing, that and a MUL
    by its count map where it pads."""
    if unpadded_average_pool(subgraph, operator):
        return average_pool_as_depthwise(model, subgraph, operator)
    return padded_average_pool_as_depthwise(model, subgraph, operator)


def rewrites_for_every_precision():
    """{builtin operator: (whether to rewrite one, the operators that replace it)} of what XNNPACK runs in no
    precision."""
    from ai_edge_litert import schema_py_generated as schema

    return {schema.BuiltinOperator.MAX_POOL_2D: (strided_one_pixel_pool, average_pool_as_depthwise),
            schema.BuiltinOperator.AVERAGE_POOL_2D: (strided_one_pixel_pool, average_pool_as_depthwise),
            schema.BuiltinOperator.CONCATENATION: (wide_concatenation, concatenation_in_steps)}


def rewrites():
    """rewrites_for_every_precision() and what XNNPACK runs in float32 but not in int8."""
    from ai_edge_litert import schema_py_generated as schema

    activation = schema.ActivationFunctionType
    return {**rewrites_for_every_precision(),
            schema.BuiltinOperator.HARD_SWISH: (lambda subgraph, operator: True, decomposed),
            schema.BuiltinOperator.AVERAGE_POOL_2D: (rewritable_average_pool, average_pool_by_padding),
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
