"""Reshapes with a constant target shape in a float TFLite model.

A Keras Reshape or Flatten on a model with a free batch size makes the
TFLite converter compute the target shape at run time (SHAPE, then
STRIDED_SLICE for the batch, PACK with the other sizes): squeeze-and-excite
blocks (EfficientNet, MobileNetV3) and a Flatten after pooling do. Those
integer operators are not quantized: litert-quantizer puts a DEQUANTIZE
before each SHAPE (the int8 model is then not fully integer), and XNNPACK
runs none of them, so the graph falls apart into many delegated pieces with
the built-in kernels between them. The target shape is known all the same:
the reshape's output shape with the batch left free (-1), which RESHAPE
takes as a constant. This rewrite gives RESHAPE that constant and drops the
integer operators nothing reads any more; what the model computes is
unchanged.
"""

import numpy as np

from .statistics import flatbuffer_bytes, read_flatbuffer


def target_shape(tensor):
    """A RESHAPE output's shape as a constant target (the batch as -1), or
    None where more than one size is unknown (no constant can say it)."""
    shape = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    if shape is None or len(shape) == 0:  # no shape recorded: not a scalar target
        return None
    shape = [int(size) for size in shape]
    if sum(size < 0 for size in shape) > 1 or 0 in shape:
        return None
    return shape


def constant_int32(model, subgraph, name, values):
    """The index of a new int32 constant tensor holding `values`."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.asarray(values, np.int32).view(np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.shape = name, schema.TensorType.INT32, [len(values)]
    tensor.buffer = len(model.buffers) - 1
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def without_dead_integer_ops(subgraph):
    """The subgraph less the operators whose outputs are all integer and read
    by nothing (the shape arithmetic a constant target replaced)."""
    from ai_edge_litert import schema_py_generated as schema

    integer = (schema.TensorType.INT32, schema.TensorType.INT64)
    while True:
        read = {index for op in subgraph.operators for index in op.inputs} | set(subgraph.outputs)
        dead = [op for op in subgraph.operators
                if op.outputs and all(index not in read and subgraph.tensors[index].type in integer
                                      for index in op.outputs)]
        if not dead:
            return
        subgraph.operators = [op for op in subgraph.operators if not any(op is gone for gone in dead)]


def with_static_reshapes(model_bytes):
    """`model_bytes` (a TFLite model) with every RESHAPE whose target shape
    an operator computes given it as a constant instead, where its output
    shape says it; the same bytes where there is none."""
    from ai_edge_litert import schema_py_generated as schema

    model = read_flatbuffer(model_bytes)
    subgraph = model.subgraphs[0]
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    computed = {index for op in subgraph.operators for index in op.outputs}
    changed = False
    for op in subgraph.operators:
        if codes[op.opcodeIndex] != schema.BuiltinOperator.RESHAPE or len(op.inputs) < 2 or \
                op.inputs[1] not in computed:
            continue
        output = subgraph.tensors[op.outputs[0]]
        shape = target_shape(output)
        if shape is None:
            continue
        op.inputs[1] = constant_int32(model, subgraph, output.name + b"/target_shape", shape)
        if isinstance(op.builtinOptions, schema.ReshapeOptionsT):
            op.builtinOptions.newShape = shape
        changed = True
    if not changed:
        return model_bytes
    without_dead_integer_ops(subgraph)
    return flatbuffer_bytes(model)
