"""Full-integer int8 TFLite from a float32 TFLite model and activation
ranges, without TensorFlow: litert-quantizer's public API quantizes (int8
weights symmetric per output channel, int8 activations per tensor from our
ranges), then the graph's input and output get the types the device wants.
"""

import copy
import dataclasses
import functools
import hashlib
import warnings
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError
from ..files import atomic_output
from ..quiet import native_output_silenced
from .ranges import ranges_record
from .recipe import QuantizationRecipe, artifact_record, write_record
from .statistics import (activation_tensor_indices, collect_statistics, concatenations_of, flatbuffer_bytes,
                         int8_softmax_input, output_softmax, read_flatbuffer, softmax_input_of, writer_of)

RUNTIME_PACKAGES = ("ai-edge-litert", "litert-quantizer")

INTERNAL_INPUT_NAME = "tfl.quantize"  # the name the TFLite converter gives the int8 copy of a float input


def check_ranges_cover(model_bytes, ranges):
    """Every activation tensor needs a range; a missing one would make the
    quantizer guess."""
    missing = [name for name in float_activation_names(bytes(model_bytes)) if name not in ranges]
    if missing:
        raise ConfigError(
            f"no activation range for {len(missing)} tensors of the float model (e.g. {missing[0]!r}); "
            "the statistics do not belong to this model: collect them again"
        )


@functools.lru_cache(maxsize=1)  # `auto` quantizes one float model with every candidate's ranges
def float_activation_names(model_bytes):
    subgraph = read_flatbuffer(model_bytes).subgraphs[0]
    return tuple(subgraph.tensors[index].name.decode()
                 for index in activation_tensor_indices(subgraph, float_only=True))


def litert_recipe(per_channel, float_scopes=(), dynamic_scopes=()):
    """int8 weights and activations for every operator, except those whose
    scope (their output tensors' names, joined by ";") is in `float_scopes`:
    they stay float32 between a DEQUANTIZE and a QUANTIZE; and those in
    `dynamic_scopes` (convolutions), which keep int8 weights but read and
    write float32, their input quantized per image at run time."""
    import re

    from litert_quantizer import qtyping, recipe

    static = recipe.static_wi8_ai8()
    dynamic = recipe.dynamic_wi8_afp32()
    if not per_channel:
        for entry in static + dynamic:
            entry["op_config"]["weight_tensor_config"]["granularity"] = qtyping.QuantGranularity.TENSORWISE
    # litert-quantizer ends each scope with ";" and lets the last matching entry decide
    return (static
            + [{"regex": f"^{re.escape(scope)};$", "operation": "*", "algorithm_key": "no_quantize", "op_config": {}}
               for scope in float_scopes]
            + [{**dynamic[0], "regex": f"^{re.escape(scope)};$"} for scope in dynamic_scopes])


@functools.cache
def ranged_quantizer_class():
    """litert-quantizer's Quantizer, less its check for tensors whose range
    entry is empty: ours never are (and check_ranges_cover has checked that
    every tensor has one), and the check builds an interpreter of the float
    model on every quantize (0.12 s of the 0.43 s of each of `auto`'s
    candidates at ResNet-50 224)."""
    from litert_quantizer import quantizer

    class RangedQuantizer(quantizer.Quantizer):
        def _ensure_model_qsv_sufficient(self, calibration_result):
            pass

    return RangedQuantizer


def quantized_int8_io(float_model_bytes, ranges, per_channel=True, float_scopes=(), dynamic_scopes=()):
    """The int8 model (int8 input and output) with activations quantized on
    `ranges` ({tensor name: (low, high)}); the operators of `float_scopes`
    stay float32, those of `dynamic_scopes` dynamic-range int8 (litert_recipe)."""
    from .xnnpack_rewrites import exact_count_maps

    check_ranges_cover(float_model_bytes, ranges)
    calibration_result = {name: {"min": np.asarray([low], np.float32), "max": np.asarray([high], np.float32)}
                          for name, (low, high) in ranges.items()}
    tool = ranged_quantizer_class()(bytearray(float_model_bytes))
    tool.load_quantization_recipe(litert_recipe(per_channel, float_scopes, dynamic_scopes))
    with native_output_silenced(), warnings.catch_warnings():  # its own progress bars and debug-mode warning
        warnings.simplefilter("ignore", UserWarning)
        result = tool.quantize(calibration_result=calibration_result, enable_progress_report=False,
                               enable_progress_bar=False)
    return exact_count_maps(bytes(result.quantized_model))


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
    QUANTIZE or DEQUANTIZE at the boundary, as the TFLite converter writes it
    (an output that is float32 already, from a head kept in float32, stays;
    so does a dynamic-range head's, once the QUANTIZE behind it goes:
    without_output_requantization)."""
    from ai_edge_litert import schema_py_generated as schema

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
    if output_type == "float32":
        without_output_requantization(model)
    already_float = subgraph.tensors[subgraph.outputs[0]].type == schema.TensorType.FLOAT32  # a float32 head's
    if output_type != "int8" and not (output_type == "float32" and already_float):
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
    return flatbuffer_bytes(model)


def without_output_requantization(model):
    """Where the graph output is a QUANTIZE of a float32 tensor that nothing
    else reads (litert-quantizer writes one behind a dynamic-range head: its
    FULLY_CONNECTED computes float32), that float32 tensor becomes the output
    and the QUANTIZE goes: a float32 output asked for is then the head's own,
    not its values put on an int8 grid and read back (the grid cost the
    dynamic-range head 0.5-4.9 dB on eight trained logits heads, benchmarks/
    results/head_precision.md). `model`: a flatbuffer object, changed in place."""
    from ai_edge_litert import schema_py_generated as schema

    subgraph = model.subgraphs[0]
    output = subgraph.outputs[0]
    writer, builtin = writer_of(model, output)
    if builtin != schema.BuiltinOperator.QUANTIZE:
        return
    source = writer.inputs[0]
    others = [operator for operator in subgraph.operators if operator is not writer]
    read_elsewhere = any(tensor in list(operator.inputs) for operator in others for tensor in (source, output))
    if (subgraph.tensors[source].type != schema.TensorType.FLOAT32 or read_elsewhere
            or source in list(subgraph.outputs)):
        return
    subgraph.operators.remove(writer)
    subgraph.outputs[0] = source
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0:
            for tensor_map in signature.outputs or []:
                tensor_map.tensorIndex = source if tensor_map.tensorIndex == output else tensor_map.tensorIndex


def int8_tflite(float_model_bytes, ranges, recipe, float_scopes=(), dynamic_scopes=()):
    """The int8 .tflite bytes under `recipe` (its per_channel, input_type and
    output_type) with activation ranges `ranges`; the operators of
    `float_scopes` (mixed.py) stay float32, those of `dynamic_scopes`
    dynamic-range int8."""
    if recipe.mode != "int8":
        raise ConfigError(f"int8_tflite makes int8 models. Received: mode={recipe.mode!r}")
    quantized = quantized_int8_io(float_model_bytes, ranges, recipe.per_channel, float_scopes, dynamic_scopes)
    return with_recipe_io(quantized, recipe)


def with_recipe_io(quantized, recipe):
    """The int8-I/O model `quantized` with the input and output types of `recipe`."""
    return rewritten(with_io_types(quantized, recipe.input_type, recipe.output_type))


def rewritten(model_bytes):
    """The model serialized again by the flatbuffer object API: tf2onnx's
    TFLite reader cannot find the constant tensors in litert-quantizer's own
    serialization, and reads this one."""
    return flatbuffer_bytes(read_flatbuffer(model_bytes))


def statistics_for(float_model, calibration, statistics, progress=True, what="the float model"):
    """The activation statistics to quantize `float_model` with: `statistics`
    (checked to belong to it) or one pass over `calibration`."""
    from ..quiet import sample_progress

    if statistics is not None:
        statistics.check_model(float_model, what)
        if calibration is not None:
            statistics.check_preprocessing(calibration.preprocessing, calibration.preprocessed)
        return dataclasses.replace(statistics, softmax_input=softmax_input_of(float_model),  # not kept in the file
                                   concatenations=concatenations_of(float_model))
    if calibration is None:
        raise ConfigError("int8 quantization needs --calibration PATH (an image folder, .npy or .npz) "
                          "or --statistics FILE")
    return collect_statistics(float_model, calibration, progress=sample_progress("calibrating") if progress else None)


def run_tflite_bytes(model_bytes, inputs, what):
    """The float outputs of a .tflite model (bytes) on `inputs`."""
    from ..device.runtime import TfliteRunner

    with native_output_silenced():
        runner = TfliteRunner(what, content=model_bytes)
    return runner.predict(inputs)


def run_int8_candidates(artifacts, images):
    """The outputs of each int8 model of `artifacts` (bytes; any iterable,
    so they can be made one at a time) on `images`. Byte-identical models
    run once, and models that differ only in the quantization of their one
    graph output (range rules that leave the output tensor its min/max) run
    as one: the first of them, with a copy of the operator writing its
    output writing each other's, so their shared network runs once; outputs
    are bit-identical to running each alone."""
    from ..device.runtime import TfliteRunner

    outputs_of = {}
    for model_bytes, members in variant_groups(artifacts):
        keys = [quantization_key(quantization) for _, quantization in members]
        twins = {key: quantization for key, (_, quantization) in zip(keys, members) if key != keys[0]}
        merged = with_output_twins(model_bytes, list(twins.values()))
        with native_output_silenced():
            outputs = TfliteRunner("an int8 candidate", content=merged).predict_every_output(images)
        position = {key: place for place, key in enumerate([keys[0], *twins])}
        for (index, _), key in zip(members, keys):
            outputs_of[index] = outputs[position[key]]
    return [outputs_of[index] for index in range(len(outputs_of))]


def quantization_key(quantization):
    if quantization is None:
        return None
    return tuple(tuple(np.ravel(values if values is not None else ()).tolist())
                 for values in (quantization.scale, quantization.zeroPoint))


def variant_groups(artifacts):
    """[(the bytes of the model a group runs, [(artifact index, its graph
    output's quantization), ...]), ...]: artifacts whose bytes are the same
    but for that quantization's scale and zero point share a group (byte-
    identical ones among them). Only the first member's bytes are kept."""
    from ai_edge_litert import schema_py_generated as schema

    groups = {}
    for index, artifact in enumerate(artifacts):
        graph = schema.Model.GetRootAs(artifact, 0).Subgraphs(0)  # read lazily: a whole read costs 60 ms at 224
        quantization = None
        if graph.OutputsLength() == 1 and single_writer(graph, graph.Outputs(0)):
            quantization = graph.Tensors(graph.Outputs(0)).Quantization()
        masked, spans = (artifact, []) if quantization is None else without_scale_and_zero_point(artifact,
                                                                                              quantization)
        key = hashlib.sha256(masked).digest() + repr(spans).encode()  # masks at other places: other models
        groups.setdefault(key, (artifact, []))[1].append(
            (index, None if quantization is None else quantization_object(quantization)))
    return list(groups.values())


def single_writer(graph, tensor):
    """Whether exactly one operator writes `tensor` of the lazily read
    `graph`, and writes nothing else."""
    operators = [graph.Operators(number) for number in range(graph.OperatorsLength())]
    writers = [operator for operator in operators
               if tensor in [operator.Outputs(place) for place in range(operator.OutputsLength())]]
    return len(writers) == 1 and writers[0].OutputsLength() == 1


def without_scale_and_zero_point(artifact, quantization):
    """(A copy of `artifact`'s bytes (a uint8 array) with the values of
    `quantization`'s (a lazily read QuantizationParameters of it) scale and
    zero point set to zero, [(start, length) of each zeroed span])."""
    original = np.frombuffer(artifact, np.uint8)
    masked, spans = original.copy(), []
    for values in (quantization.ScaleAsNumpy(), quantization.ZeroPointAsNumpy()):
        if isinstance(values, np.ndarray):  # a view into the artifact's bytes; an absent vector reads as 0
            start = values.ctypes.data - original.ctypes.data
            masked[start:start + values.nbytes] = 0
            spans.append((start, values.nbytes))
    return masked, spans


def quantization_object(quantization):
    """The QuantizationParametersT of a lazily read QuantizationParameters."""
    from ai_edge_litert import schema_py_generated as schema

    return schema.QuantizationParametersT.InitFromObj(quantization)


def softmax_head(model_bytes):
    """Whether a TFLite model's output is a softmax's."""
    return output_softmax(read_flatbuffer(model_bytes)) is not None


@dataclasses.dataclass(frozen=True)
class Grid:
    """The values an int8 (or uint8) tensor can hold: scale * (q - zero_point), q of `dtype`."""

    scale: float
    zero_point: int
    dtype: type = np.int8

    @property
    def type_name(self):
        """"int8" or "uint8": what the notes call the grid."""
        return np.dtype(self.dtype).name

    def through(self, values):
        """`values` as the tensor holds them: rounded onto the grid, clipped at its ends."""
        from ..device.runtime import dequantize, quantize

        return dequantize(quantize(np.asarray(values), self.scale, self.zero_point, self.dtype), self.scale,
                          self.zero_point)


def tensor_grid(tensor):
    """The Grid of a quantized TFLite tensor (flatbuffer object), None for a float one."""
    from ai_edge_litert import schema_py_generated as schema

    dtype = {schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8}.get(tensor.type)
    scale = None if tensor.quantization is None else tensor.quantization.scale
    if dtype is None or scale is None or np.size(scale) == 0:
        return None
    zero_points = tensor.quantization.zeroPoint  # absent: zero, as the runtime reads it
    zero_point = int(np.ravel(zero_points)[0]) if zero_points is not None and np.size(zero_points) else 0
    return Grid(float(np.ravel(scale)[0]), zero_point, dtype)


def value_grid(model_bytes):
    """The Grid the graph output's values lie on: its own, or where a
    DEQUANTIZE writes a float32 output (--output-type float32), its input's;
    None where the head computes the output in float. (output_grids, which
    bounds what a budget search can reach, leaves a float32 output out:
    there the search may take the head out of int8.)"""
    from ai_edge_litert import schema_py_generated as schema

    model = read_flatbuffer(model_bytes)
    graph = model.subgraphs[0]
    output = graph.outputs[0]
    writer, builtin = writer_of(model, output)
    if tensor_grid(graph.tensors[output]) is None and builtin == schema.BuiltinOperator.DEQUANTIZE:
        return tensor_grid(graph.tensors[writer.inputs[0]])
    return tensor_grid(graph.tensors[output])


def output_grid_record(model_bytes, reference):
    """What the output's own int8 (or uint8) grid does to top-1: the float model's
    outputs on the calibration images (`reference`, one score per class and
    image) rounded onto it, nothing else quantized. Two scores closer than a
    step tie or swap there, whatever runs before it: on an unsure model's
    logits head that grid alone changed 3.3-3.9% of top-1 predictions
    (benchmarks/results/logits_top1.md). None where the output is float or
    not one score per class."""
    grid = value_grid(model_bytes)
    reference = None if reference is None else np.asarray(reference, np.float32)
    if grid is None or reference is None or reference.ndim != 2 or reference.shape[1] < 2:
        return None
    changed = np.argmax(grid.through(reference), axis=1) != np.argmax(reference, axis=1)
    return {"calibration_images": len(reference), "top1_changed": int(np.sum(changed)),
            "grid_type": grid.type_name,
            "what": f"the float model's outputs on the calibration images rounded onto the output's {grid.type_name} "
                    "grid, nothing else quantized: images whose top-1 changes"}


def output_grid_text(record):
    """The note on an artifact whose output's int8 (or uint8) grid alone
    changes some calibration images' top-1 (`record`: output_grid_record's),
    else None."""
    if not record or not record["top1_changed"]:
        return None
    changed, images = record["top1_changed"], record["calibration_images"]
    grid_type = record.get("grid_type", record.get("output_type", "int8"))  # output_type: a recipe of 2026-12-04
    return (f"its output's own {grid_type} grid changes the top-1 of {changed} of {images} calibration images (the "
            "float model's outputs rounded onto it: close calls tie or swap), whatever runs before it; a float head has "
            "none: with --output-type float32 and a --min-agreement budget full int8 misses (convert: with "
            "--accuracy-control) the search can keep the head in float32")


def output_grids(model_bytes):
    """(the graph output's Grid, its softmax's int8 input's Grid or None) of
    a TFLite model; (None, None) where the output is float."""
    model = read_flatbuffer(model_bytes)
    graph = model.subgraphs[0]
    output = tensor_grid(graph.tensors[graph.outputs[0]])
    softmax = output_softmax(model)
    if output is None or softmax is None:
        return output, None
    return output, tensor_grid(graph.tensors[softmax.inputs[0]])


def tflite_outputs_and_logits(model_bytes, inputs):
    """(outputs, logits) on `inputs` of a TFLite model whose output is a
    softmax's (softmax_head): the logits (the softmax's input, dequantized)
    are read as a second graph output of the same run."""
    from ..device.runtime import TfliteRunner

    model = read_flatbuffer(model_bytes)
    graph = model.subgraphs[0]
    graph.outputs = [graph.outputs[0], output_softmax(model).inputs[0]]
    with native_output_silenced():
        runner = TfliteRunner("a softmax head's logits", content=flatbuffer_bytes(model))
    outputs, logits = runner.predict_every_output(inputs)
    return outputs, logits


def with_output_twins(model_bytes, quantizations):
    """The model with, per quantization of `quantizations`, a copy of the
    operator writing its graph output into a new tensor quantized so, which
    becomes the next graph output (the copy computes what the operator
    would with that output quantization: true of the builtin operators a
    ResNet ends with, FULLY_CONNECTED and SOFTMAX)."""
    if not quantizations:
        return model_bytes
    model = read_flatbuffer(model_bytes)
    graph = model.subgraphs[0]
    output = graph.outputs[0]
    writer = next(op for op in graph.operators if output in op.outputs)
    for number, quantization in enumerate(quantizations, 1):
        twin = copy.deepcopy(graph.tensors[output])
        twin.name, twin.quantization = twin.name + f"_twin{number}".encode(), quantization
        graph.tensors.append(twin)
        operator = copy.deepcopy(writer)
        operator.outputs = [len(graph.tensors) - 1]
        graph.operators.append(operator)
        graph.outputs = list(graph.outputs) + [len(graph.tensors) - 1]
    return flatbuffer_bytes(model)


def tflite_chooser(float_model, per_channel, calibration):
    """For `auto`: the Choice of range rule for the int8 TFLite, each
    candidate quantized and run on XNNPACK on the held-out calibration
    samples (`calibration`, the ImageSet the statistics came from)."""
    from ..device.runtime import tflite_interpreter_module
    from .recipe import tool_versions
    from .ranges import DEFAULT_AUTO_SCORE
    from .selection import calibration_inputs, candidates_for, choose, float_reference

    def choose_for(statistics, score=DEFAULT_AUTO_SCORE):
        inputs = calibration_inputs(calibration, statistics)
        reference = float_reference(float_model, statistics, inputs)

        def int8_outputs(ranges_list, images):
            return run_int8_candidates((quantized_int8_io(float_model, ranges, per_channel)
                                        for ranges in ranges_list), images)

        runtime, _ = tflite_interpreter_module()
        version = tool_versions(runtime).get(runtime, "")
        return choose(statistics, inputs, int8_outputs, reference, f"the int8 TFLite on {runtime} {version}".strip(),
                      candidates=candidates_for(statistics), score=score, name_per_image_choice=True)

    return choose_for


def write_int8_tflite(float_model, recipe, output, calibration=None, statistics=None, model_info=None,
                      packages=RUNTIME_PACKAGES, progress=True, log=None, full_int8_output=None):
    """Write the int8 `output` (.tflite) of the float32 .tflite bytes
    `float_model`, and its recipe JSON; return the path. Under a budget,
    `full_int8_output` (a path) also gets full int8 with the same ranges,
    its biases corrected as the recipe asks: what the budget's parts are
    measured against on other images."""
    from .bias_correction import check_images_for, corrected_artifact
    from .selection import resolved_ranges

    output = Path(output)
    statistics = statistics_for(float_model, calibration, statistics, progress)
    check_images_for(recipe, calibration)
    method, ranges, selection = resolved_ranges(statistics, recipe.range_method(),
                                                tflite_chooser(float_model, recipe.per_channel, calibration))
    search = None
    if recipe.budget() is not None:
        from .mixed import search_tflite_parts

        search = search_tflite_parts(float_model, statistics, calibration, recipe, method, recipe.budget(),
                                     log=log or (lambda line: None))
    quantized = quantized_int8_io(float_model, ranges, recipe.per_channel, *(search.scopes() if search else ((), ())))
    quantized, correction = corrected_artifact(quantized, float_model, recipe, calibration, statistics)
    content = with_recipe_io(quantized, recipe)
    if search and full_int8_output is not None:  # as the default would make it with these ranges, corrected alike
        full, _ = corrected_artifact(quantized_int8_io(float_model, ranges, recipe.per_channel), float_model, recipe,
                                     calibration, statistics)
        Path(full_int8_output).write_bytes(with_recipe_io(full, recipe))
    with atomic_output(output) as temporary:
        temporary.write_bytes(content)
        record = artifact_record(temporary, "tflite", recipe, model_info or tflite_model_info(float_model),
                                 packages, ranges_record(statistics, method, ranges, selection,
                                                         int8_softmax_input(content)))
        record["artifact"] = output.name
        record["bias_correction"] = correction
        if grid := output_grid_record(content, statistics.float_outputs):
            record["output_grid"] = grid
        if search:
            from .mixed import describe_artifact

            record["mixed_precision"] = search.record()
            record["quantization"] = describe_artifact(record["mixed_precision"]) or record["quantization"]
        write_record(output, record)
    return output


def tflite_model_info(model_bytes):
    """What an artifact record says about the model, read from a .tflite."""
    model = read_flatbuffer(model_bytes)
    subgraph = model.subgraphs[0]
    constants = [tensor for tensor in subgraph.tensors
                 if tensor.buffer and model.buffers[tensor.buffer].data is not None]
    return {
        "name": (subgraph.name or b"").decode() or "tflite model",
        "input_shape": [int(size) for size in subgraph.tensors[subgraph.inputs[0]].shape[1:]],
        "output_shape": [int(size) for size in subgraph.tensors[subgraph.outputs[0]].shape[1:]],
        "parameters": int(sum(np.prod(tensor.shape) for tensor in constants if tensor.shape is not None)),
    }


def read_float_tflite(path):
    """The bytes of a float32 .tflite file, its reshapes given constant
    targets (static_shapes: so its int8 model is fully integer) and the
    operators XNNPACK has no int8 kernel for written as ones it has
    (xnnpack_rewrites); refuses anything else."""
    from .static_shapes import with_static_reshapes
    from .statistics import check_float_model
    from .xnnpack_rewrites import for_int8_xnnpack

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    content = path.read_bytes()
    check_float_model(read_flatbuffer(content, str(path)), str(path))
    return for_int8_xnnpack(with_static_reshapes(content))


def quantize_tflite_file(float_path, recipe=None, output="model_int8.tflite", calibration=None, statistics=None,
                         progress=True):
    """The TensorFlow-free route: int8 .tflite from a float32 .tflite file."""
    recipe = recipe or QuantizationRecipe()
    if recipe.mode != "int8":
        raise ConfigError(f"a .tflite model can only be quantized to int8 here. Received: --quantize {recipe.mode}")
    return write_int8_tflite(read_float_tflite(float_path), recipe, output, calibration, statistics,
                             progress=progress)
