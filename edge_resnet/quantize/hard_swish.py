"""Hard-swish written as the operators XNNPACK runs in int8.

The TFLite converter fuses Keras' hard-swish, x * relu6(x + 3) / 6
(MobileNetV3's activation), into one HARD_SWISH operator. XNNPACK runs it
in float32 but has no int8 kernel for it, so an int8 MobileNetV3 falls
apart into one delegated piece per activation with TFLite's own kernels
between them, and runs slower than its float32 model. Written as an ADD of
3 with a fused RELU6, a MUL by 1/6 and a MUL by x, every step has an int8
XNNPACK kernel; the float model computes the same function (to float32
rounding), and the statistics pass ranges the two new tensors like any
other.
"""

import numpy as np

from .statistics import flatbuffer_bytes, read_flatbuffer


def float_constant(model, subgraph, name, value):
    """The index of a new float32 scalar constant tensor holding `value`."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.asarray([value], np.float32).view(np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.shape = name, schema.TensorType.FLOAT32, []
    tensor.buffer = len(model.buffers) - 1
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


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
    three = float_constant(model, subgraph, name + b"/three", 3.0)
    sixth = float_constant(model, subgraph, name + b"/one_sixth", 1.0 / 6.0)
    return [elementwise(model, schema.BuiltinOperator.ADD, (x, three), gate, schema.ActivationFunctionType.RELU6),
            elementwise(model, schema.BuiltinOperator.MUL, (gate, sixth), scaled),
            elementwise(model, schema.BuiltinOperator.MUL, (x, scaled), output)]


def with_hard_swish_decomposed(model_bytes):
    """`model_bytes` (a float32 TFLite model) with every HARD_SWISH written
    as ADD (with RELU6), MUL, MUL; the same bytes where there is none."""
    from ai_edge_litert import schema_py_generated as schema

    model = read_flatbuffer(model_bytes)
    subgraph = model.subgraphs[0]
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    if not any(codes[op.opcodeIndex] == schema.BuiltinOperator.HARD_SWISH for op in subgraph.operators):
        return model_bytes
    operators = []
    for op in subgraph.operators:
        is_hard_swish = codes[op.opcodeIndex] == schema.BuiltinOperator.HARD_SWISH
        operators += decomposed(model, subgraph, op) if is_hard_swish else [op]
    subgraph.operators = operators
    return flatbuffer_bytes(model)
