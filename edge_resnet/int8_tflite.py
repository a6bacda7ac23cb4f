"""Full-integer int8 TFLite from a float32 TFLite model and activation
ranges, without TensorFlow: litert-quantizer's public API quantizes (int8
weights symmetric per output channel, int8 activations per tensor from our
ranges), then the graph's input and output get the types the device wants.
"""

import copy

import numpy as np

from .errors import ConfigError
from .statistics import activation_tensor_indices, read_flatbuffer

INTERNAL_INPUT_NAME = "tfl.quantize"  # the name the TFLite converter gives the int8 copy of a float input


def check_ranges_cover(model_bytes, ranges):
    """Every activation tensor needs a range; a missing one would make the
    quantizer guess."""
    subgraph = read_flatbuffer(model_bytes).subgraphs[0]
    names = [subgraph.tensors[index].name.decode() for index in activation_tensor_indices(subgraph)]
    missing = [name for name in names if name not in ranges]
    if missing:
        raise ConfigError(
            f"no activation range for {len(missing)} tensors of the float model (e.g. {missing[0]!r}); "
            "the statistics do not belong to this model: collect them again"
        )


def litert_recipe(per_channel):
    from litert_quantizer import qtyping, recipe

    static = recipe.static_wi8_ai8()
    if not per_channel:
        for entry in static:
            entry["op_config"]["weight_tensor_config"]["granularity"] = qtyping.QuantGranularity.TENSORWISE
    return static


def quantized_int8_io(float_model_bytes, ranges, per_channel=True):
    """The int8 model (int8 input and output) with activations quantized on
    `ranges` ({tensor name: (low, high)})."""
    from litert_quantizer import quantizer

    check_ranges_cover(float_model_bytes, ranges)
    calibration_result = {name: {"min": np.asarray([low], np.float32), "max": np.asarray([high], np.float32)}
                          for name, (low, high) in ranges.items()}
    tool = quantizer.Quantizer(bytearray(float_model_bytes))
    tool.load_quantization_recipe(litert_recipe(per_channel))
    result = tool.quantize(calibration_result=calibration_result, enable_progress_report=False,
                           enable_progress_bar=False)
    return bytes(result.quantized_model)


def operator_code_index(model, builtin, version):
    """The index of (builtin, version) in the model's operator codes, added
    if missing."""
    from ai_edge_litert import schema_py_generated as schema

    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and code.version == version:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def boundary_tensor(internal, io_type):
    """The graph-facing twin of an int8 tensor for `io_type` (uint8 shifts the
    zero point by 128; float32 carries no quantization)."""
    from ai_edge_litert import schema_py_generated as schema

    twin = copy.deepcopy(internal)
    if io_type == "float32":
        twin.type, twin.quantization = schema.TensorType.FLOAT32, None
    else:
        twin.type = schema.TensorType.UINT8
        twin.quantization.zeroPoint = [int(point) + 128 for point in internal.quantization.zeroPoint]
    return twin


def conversion_op(model, builtin, version, source, target):
    from ai_edge_litert import schema_py_generated as schema

    operator = schema.OperatorT()
    operator.opcodeIndex = operator_code_index(model, builtin, version)
    operator.inputs, operator.outputs = [source], [target]
    return operator


def with_io_types(int8_model_bytes, input_type, output_type):
    """The model with uint8 or float32 input/output where asked, through a
    QUANTIZE or DEQUANTIZE at the boundary, as the TFLite converter writes it."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    if input_type == "int8" and output_type == "int8":
        return int8_model_bytes
    model = read_flatbuffer(int8_model_bytes)
    subgraph = model.subgraphs[0]
    renamed = {}
    if input_type != "int8":
        internal_index = subgraph.inputs[0]
        internal = subgraph.tensors[internal_index]
        subgraph.tensors.append(boundary_tensor(internal, input_type))
        outer = len(subgraph.tensors) - 1
        internal.name = INTERNAL_INPUT_NAME.encode()
        subgraph.operators.insert(0, conversion_op(model, schema.BuiltinOperator.QUANTIZE, 1, outer, internal_index))
        subgraph.inputs[0] = renamed[internal_index] = outer
    if output_type != "int8":
        internal_index = subgraph.outputs[0]
        internal = subgraph.tensors[internal_index]
        subgraph.tensors.append(boundary_tensor(internal, output_type))
        outer = len(subgraph.tensors) - 1
        internal.name = internal.name + b"_int8"
        builtin, version = ((schema.BuiltinOperator.DEQUANTIZE, 2) if output_type == "float32"
                            else (schema.BuiltinOperator.QUANTIZE, 1))
        subgraph.operators.append(conversion_op(model, builtin, version, internal_index, outer))
        subgraph.outputs[0] = renamed[internal_index] = outer
    for signature in model.signatureDefs or []:
        for tensor_map in list(signature.inputs or []) + list(signature.outputs or []):
            tensor_map.tensorIndex = renamed.get(tensor_map.tensorIndex, tensor_map.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def int8_tflite(float_model_bytes, ranges, recipe):
    """The int8 .tflite bytes under `recipe` (its per_channel, input_type and
    output_type) with activation ranges `ranges`."""
    if recipe.mode != "int8":
        raise ConfigError(f"int8_tflite makes int8 models. Received: mode={recipe.mode!r}")
    quantized = quantized_int8_io(float_model_bytes, ranges, recipe.per_channel)
    return with_io_types(quantized, recipe.input_type, recipe.output_type)
