"""ONNX export: float32 from the Keras layers (tf2onnx for layers that
exporter does not write), and int8 by two routes:

- "ort": onnxruntime static quantization of the float ONNX (QDQ or
  QOperator, int8 or uint8 activations, int8 per-channel weights), with the
  activation ranges of the TFLite model (the same statistics, the same range
  method) mapped onto the ONNX tensors through their Keras layer names;
- "tflite": tf2onnx conversion of the int8 TFLite model, so both formats
  carry identical quantization parameters.

Every file is checked with onnx.checker (full check) before it is written,
and gets the recipe JSON beside it.
"""

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ConversionError
from ..files import atomic_output
from .keras_onnx import DEPTHWISE, EXPORTER, INPUT_NAME, OUTPUT_NAME, PRE_ACTIVATION
from ..quiet import native_output_silenced
from .recipe import DEFAULT_OPSET, ONNX_ROUTES, QuantizationRecipe, artifact_record, keras_model_info, write_record
from .tflite import check_calibration_fits, float_tflite, to_tflite

OPSET_RANGE = (13, 18)  # 13: per-channel QDQ; 18: the newest tf2onnx 1.17 writes
ONNX_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert")


def check_opset(opset):
    low, high = OPSET_RANGE
    if not isinstance(opset, int) or not low <= opset <= high:
        raise ConfigError(f"ONNX opset must be between {low} and {high}. Received: {opset}")


ORT_DOMAIN = "com.microsoft"  # onnxruntime's contrib operators (QOperator format)


def unsupported_ops(proto, runtime_domains=()):
    """Operators that neither ONNX nor `runtime_domains` define: what tf2onnx
    leaves behind (under the TensorFlow op's name) when it has no conversion."""
    import onnx

    return sorted(
        {
            node.op_type
            for node in proto.graph.node
            if node.domain not in runtime_domains and not onnx.defs.has(node.op_type, node.domain)
        }
    )


def rename_value(proto, old, new):
    """Rename a tensor everywhere it appears in the graph."""
    graph = proto.graph
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def stable_io_names(proto):
    rename_value(proto, proto.graph.input[0].name, INPUT_NAME)
    rename_value(proto, proto.graph.output[0].name, OUTPUT_NAME)
    return proto


def checked(proto, what, runtime_domains=()):
    import onnx

    leftovers = unsupported_ops(proto, runtime_domains)
    if leftovers:
        raise ConversionError(
            f"tf2onnx cannot convert the operator(s) {', '.join(leftovers)} of {what} to ONNX; "
            "replace those layers or export to TFLite only"
        )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ConversionError(f"the ONNX model of {what} fails onnx.checker: {' '.join(str(error).split())[:300]}") from error
    return proto


def float_onnx(model, opset=DEFAULT_OPSET):
    """ModelProto of the float Keras model: dynamic batch, I/O named
    "input" and "output". Written from the Keras layers (keras_onnx), or by
    tf2onnx for a model with a layer that module does not write; the
    file's producer_name says which, and its metadata why."""
    from .keras_onnx import UnsupportedLayer, keras_to_onnx

    check_opset(opset)
    try:
        proto = keras_to_onnx(model, opset)
    except UnsupportedLayer as reason:
        proto = tf2onnx_float_onnx(model, opset)
        entry = proto.metadata_props.add()
        entry.key, entry.value = FALLBACK_KEY, f"edge-resnet's exporter does not write {reason}"
    return checked(proto, f"model {model.name!r}")


FALLBACK_KEY = "edge_resnet_exporter_fallback"


def with_weight_bits(proto, bits):
    """The int8 ONNX `proto` with its weight range in its metadata, for a
    runner to tell whether this CPU's int8 kernels can saturate on it."""
    from ..device.runtime import WEIGHT_BITS_KEY

    entry = proto.metadata_props.add()
    entry.key, entry.value = WEIGHT_BITS_KEY, str(bits)
    return proto


def exporter_of(proto):
    """Who wrote a float ONNX model, for the recipe JSON."""
    reasons = [entry.value for entry in proto.metadata_props if entry.key == FALLBACK_KEY]
    return f"{proto.producer_name} ({reasons[0]})" if reasons else proto.producer_name


def recorded_exporter(path):
    """Who wrote the float ONNX file at `path`: from its recipe JSON when it
    has one (no need to load the weights), else from the file."""
    import json

    import onnx

    from .recipe import record_path

    record = record_path(path)
    if record.is_file():
        exporter = json.loads(record.read_text()).get("exporter")
        if exporter:
            return exporter
    return exporter_of(onnx.load(path))


def tf2onnx_float_onnx(model, opset=DEFAULT_OPSET):
    """tf2onnx's export of the float Keras model (about 80 times the weights' size in memory)."""
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name=INPUT_NAME)]
    with native_output_silenced():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    return stable_io_names(proto)


def onnx_from_tflite(tflite_path, opset=DEFAULT_OPSET):
    """ModelProto of an int8 TFLite file. Its integer input/output scales and
    zero points go into the metadata, so a runner can feed float images."""
    import tf2onnx

    from ..device.runtime import tflite_interpreter

    check_opset(opset)
    with native_output_silenced():
        try:
            proto, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=opset)
        except MemoryError:
            raise
        except Exception as error:  # tf2onnx raises anything on a graph it cannot rewrite
            reason = " ".join(str(error).split())[:200]
            raise ConversionError(f"tf2onnx cannot convert the int8 TFLite model to ONNX ({type(error).__name__}: "
                                  f"{reason}); use the int8 TFLite itself (quantize --output X.tflite)") from error
        interpreter = tflite_interpreter(tflite_path)
    stable_io_names(proto)
    for prefix, detail in (("input", interpreter.get_input_details()[0]), ("output", interpreter.get_output_details()[0])):
        scale, zero_point = detail["quantization"]
        if scale:  # the runtime's OnnxRunner reads these keys back
            for key, value in ((f"{prefix}_scale", scale), (f"{prefix}_zero_point", zero_point)):
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, repr(float(value))
    return checked(proto, f"TFLite file {Path(tflite_path).name}")


VALUE_PRESERVING_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")
CLIPPING_OPS = ("Relu", "Clip")  # a tensor read only by one of these may take its reader's range
BOUNDED_OPS = {"Sigmoid": (0.0, 1.0), "Softmax": (0.0, 1.0), "Tanh": (-1.0, 1.0)}  # no output leaves these
# ops whose output lies within their input's range (ONNX pads a max pooling with -inf, and an average pooling's
# padding counts for nothing by default): the TFLite converter may merge one into its twin (NASNet pools one padded
# tensor twice alike), leaving no tensor of its own
POOLING_OPS = ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool")
DERIVING_OPS = ("Add", "Sub", "Mul", "Div", "Clip")  # ops whose constant operands bound their output


@dataclass(frozen=True)
class LayerRanges:
    """Ranges of the float TFLite tensors a Keras layer writes: `outputs`,
    its last tensor (what it passes on); `main_outputs`, its first (its main
    op's output: a convolution's before the activation the layer applies)."""

    outputs: dict
    main_outputs: dict


def layer_ranges(tflite_ranges, statistics, layer_names, output_layer):
    """LayerRanges from ranges keyed by float .tflite tensor name. A layer's
    tensors come in execution order (the statistics' order): the first is
    its main op's output, the last what it passes on. A fused tensor (conv +
    ReLU) belongs to the first layer its name lists; the graph output is the
    model's output layer's."""
    from .statistics import keras_layer_of

    outputs, main_outputs, graph_output = {}, {}, None
    for tensor in statistics.tensors:
        value = tflite_ranges.get(tensor.name)
        if value is None:
            continue
        if tensor.name in statistics.graph_outputs:
            layer, graph_output = output_layer, value
        else:
            layer = keras_layer_of(tensor.name, layer_names, scoped=True)
        if layer is not None:
            main_outputs.setdefault(layer, value)
            outputs[layer] = value
    if graph_output is not None:
        outputs[output_layer] = graph_output
    return LayerRanges(outputs, main_outputs)


def interval(op_type, first, second, second_is_constant):
    """The range of `op_type`'s output over inputs in ranges `first` and
    `second`; None unless Add or Sub, or Mul or Div by a constant (not one
    spanning 0): the bound of two activations' product is too loose to
    quantize with."""
    (a_low, a_high), (b_low, b_high) = first, second
    if op_type == "Add":
        return a_low + b_low, a_high + b_high
    if op_type == "Sub":
        return a_low - b_high, a_high - b_low
    if op_type in ("Mul", "Div") and second_is_constant:
        if op_type == "Div":
            if b_low <= 0 <= b_high:
                return None
            b_low, b_high = 1 / b_high, 1 / b_low
        products = [a * b for a in (a_low, a_high) for b in (b_low, b_high)]
        return min(products), max(products)
    return None


def clipped(source, low, high):
    """Range `source` (None: unknown) clipped to [low, high] (None: no bound
    on that side)."""
    if source is None:
        return None if low is None or high is None else (low, high)
    new_low, new_high = source
    if low is not None:
        new_low, new_high = max(new_low, low), max(new_high, low)
    if high is not None:
        new_low, new_high = min(new_low, high), min(new_high, high)
    return new_low, new_high


def onnx_activation_ranges(proto, tflite_ranges, statistics, layer_names, output_layer, scoped_names=False):
    """{ONNX tensor name: (low, high)} for every float activation tensor of
    the float ONNX graph, from ranges keyed by the TFLite model's tensors.
    A tensor that a Keras layer passes on (read outside the layer, or a graph
    output) has the range of what that layer passes on in the TFLite model,
    and a layer's "<layer>/pre_activation" its main op's; a layout op's
    output has its input's range; a tensor read only by a ReLU has the ReLU
    output's range (quantizing it there loses nothing: ReLU would clip the
    rest; the same for Clip, as ReLU6 is written). Any other tensor, such as
    one inside a layer, or one the TFLite converter folded away, has the range
    its op cannot leave: a sigmoid's, a pooling's input's, a sum of ranges, a range scaled by a
    constant (a Rescaling or Normalization layer). Refuses a graph with a
    tensor it cannot place. `scoped_names`: the graph's names are
    TensorFlow's (tf2onnx), which scope a layer's call as the TFLite's are."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from .statistics import keras_layer_of

    graph = proto.graph
    by_layer = layer_ranges(tflite_ranges, statistics, layer_names, output_layer)
    producer = {output: node for node in graph.node for output in node.output}
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    operands = {name for node in graph.node if node.op_type in DERIVING_OPS for name in node.input}
    constants = {}  # the finite float constants an op's range may be derived with (not every weight)
    for tensor in graph.initializer:
        if tensor.name in operands:
            values = numpy_helper.to_array(tensor)
            if values.size and np.issubdtype(values.dtype, np.floating) and np.all(np.isfinite(values)):
                constants[tensor.name] = (float(values.min()), float(values.max()))
    graph_outputs = {value.name for value in graph.output}
    fixed = {value.name: tflite_ranges[statistics.graph_inputs[0]] for value in graph.input}
    fixed.update({name: by_layer.outputs.get(output_layer) for name in graph_outputs})
    resolved, passing = {}, {}  # the answers so far of resolve(), passed_on() (a graph's paths can be many)

    def passed_on(name, layer):
        """Whether `layer` passes tensor `name` on: a graph output, or read by
        another layer (through layout ops, and through ops of no layer: a
        converter's helper op, or an op TensorFlow scoped to the model, such
        as MobileNetV3's hard sigmoid's division, says nothing itself)."""
        if (name, layer) not in passing:
            found, waiting, seen = False, [name], {name}
            while waiting and not found:
                current = waiting.pop()
                found = current in graph_outputs
                for reader in readers.get(current, []) if not found else []:
                    reader_layer = layer_of(reader.output[0])
                    if reader.op_type in VALUE_PRESERVING_OPS or reader_layer is None:
                        waiting += [output for output in reader.output if output not in seen]
                        seen.update(reader.output)
                    elif reader_layer != layer:
                        found = True
            passing[name, layer] = found
        return passing[name, layer]

    def layer_of(name):
        return output_layer if name in graph_outputs else keras_layer_of(name, layer_names, scoped_names)

    def from_layer(name):
        layer = layer_of(name)
        if layer is None:
            return None
        if passed_on(name, layer):
            return by_layer.outputs.get(layer)
        node = producer.get(name)
        main_op = name in (f"{layer}/{PRE_ACTIVATION}", f"{layer}/{DEPTHWISE}") or (scoped_names and node is not None
                                                          and node.op_type in COMPUTE_OPS)
        return by_layer.main_outputs.get(layer) if main_op else None

    def from_op(node):
        if node is None:
            return None
        if node.op_type in BOUNDED_OPS:
            return BOUNDED_OPS[node.op_type]
        if node.op_type in POOLING_OPS and not any(attribute.name == "count_include_pad" and attribute.i
                                                   for attribute in node.attribute):
            return resolve(node.input[0])
        if node.op_type == "Relu":
            return clipped(resolve(node.input[0]), 0.0, None)
        if node.op_type == "Clip":
            bounds = list(node.input[1:3]) + ["", ""]
            if any(bound and bound not in constants for bound in bounds[:2]):
                return None  # a bound computed at run time
            low, high = (constants[bound][0] if bound else None for bound in bounds[:2])
            return clipped(resolve(node.input[0]), low, high)
        if len(node.input) != 2:
            return None
        first, second = node.input
        if first in constants and second not in constants and node.op_type in ("Add", "Mul"):
            first, second = second, first
        first_range = constants.get(first) or resolve(first)
        second_range = constants.get(second) or resolve(second)
        if first_range is None or second_range is None:
            return None
        return interval(node.op_type, first_range, second_range, second in constants)

    def shifted_back(name):
        """The range of a tensor read only by an Add or Sub of a constant
        whose output's range its name gives: that range less the constant
        (MobileNetV3's hard sigmoid, relu6(x + 3) / 6, whose + 3 the TFLite
        converter folds into the convolution writing x: the TFLite has no x),
        through layout ops between them."""
        read_by = readers.get(name, [])
        while len(read_by) == 1 and read_by[0].op_type in VALUE_PRESERVING_OPS:
            name = read_by[0].output[0]
            read_by = readers.get(name, [])
        if len(read_by) != 1 or read_by[0].op_type not in ("Add", "Sub") or len(read_by[0].input) != 2:
            return None
        node = read_by[0]
        first, second = node.input if node.input[0] == name else node.input[::-1]
        if first != name or second not in constants or (node.op_type == "Sub" and node.input[0] != name):
            return None
        after = named_range(node.output[0])
        if after is None:
            return None
        low, high = constants[second]
        return (after[0] - high, after[1] - low) if node.op_type == "Add" else (after[0] + low, after[1] + high)

    def named_range(name):
        """A tensor's range from what it is or what alone reads it, no arithmetic of its op's."""
        read_by = readers.get(name, [])
        clipped_by = read_by[0] if len(read_by) == 1 and read_by[0].op_type in CLIPPING_OPS else None
        return fixed.get(name) or (clipped_by and range_by_name(clipped_by.output[0])) or from_layer(name)

    def resolve(name):
        if name not in resolved:
            node = producer.get(name)
            if name not in fixed and node is not None and node.op_type in VALUE_PRESERVING_OPS:
                resolved[name] = resolve(node.input[0])
            else:
                resolved[name] = named_range(name) or from_op(node) or shifted_back(name)
        return resolved[name]

    def range_by_name(name):
        """A tensor's range from what its name says it is (not from the op writing it)."""
        return fixed.get(name) or from_layer(name)

    not_ranged = {tensor.name for tensor in graph.initializer} | {
        value.name for value in (*graph.value_info, *graph.output)
        if value.type.tensor_type.elem_type not in (0, onnx.TensorProto.FLOAT)}  # 0: type unknown
    names = [value.name for value in graph.input] + [
        output for node in graph.node for output in node.output if output not in not_ranged]
    ranges = {name: resolve(name) for name in names}
    missing = [name for name, value in ranges.items() if value is None]
    if missing:
        raise ConversionError(
            f"no activation range for ONNX tensor {missing[0]!r} ({len(missing)} in all): the float TFLite model "
            "has no tensor of that value (it lies inside a layer, or the converter folded it away) and its op "
            "does not bound it; make the int8 TFLite alone (quantize --output X.tflite, convert --formats tflite), "
            "or an int8 ONNX from it with --onnx-route tflite"
        )
    return ranges


COMPUTE_OPS = ("Conv", "Gemm", "MatMul")


def float_compute_ops(proto):
    """Conv/Gemm/MatMul nodes whose input is not dequantized from int8: what
    onnxruntime left in float for want of a range."""
    dequantized = {node.output[0] for node in proto.graph.node if node.op_type == "DequantizeLinear"}
    return [node.name or node.output[0] for node in proto.graph.node
            if node.op_type in COMPUTE_OPS and node.input[0] not in dequantized]


def float_weight_ops(proto):
    """Conv/Gemm/MatMul nodes computing in float32: their weights are not dequantized from int8."""
    dequantized = {node.output[0] for node in proto.graph.node if node.op_type == "DequantizeLinear"}
    return [node.name or node.output[0] for node in proto.graph.node
            if node.op_type in COMPUTE_OPS and len(node.input) > 1 and node.input[1] not in dequantized]


def output_compute_op_types(proto):
    """The op types of the Conv/Gemm/MatMul nodes that write the logits: a
    graph output, or what an output softmax reads."""
    softmax = set(output_softmax_nodes(proto))
    logits = {value.name for value in proto.graph.output}
    logits.update(name for node in proto.graph.node if node.name in softmax for name in node.input)
    return sorted({node.op_type for node in proto.graph.node
                   if node.op_type in COMPUTE_OPS and logits.intersection(node.output)})


def output_softmax_nodes(proto):
    """The names of the Softmax nodes that write a graph output (a softmax head)."""
    outputs = {value.name for value in proto.graph.output}
    return [node.name for node in proto.graph.node if node.op_type == "Softmax" and outputs.intersection(node.output)]


@dataclass(frozen=True)
class PreparedOnnx:
    """The float ONNX as onnxruntime's pre-processing left it, read once for
    every quantization of it: its graph (where ranges are mapped) and the
    nodes of the head that stay float (see ort_quantized)."""

    path: Path
    proto: object = field(repr=False)
    float_output_ops: tuple  # op types whose output is not quantized: the logits layer's
    float_nodes: tuple  # node names not quantized at all: an output softmax


def ort_prepared(float_path, prepared_path):
    """onnxruntime's pre-processing of the float ONNX (shape inference and
    graph fixes), done once for every quantization of it."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with native_output_silenced():
        quant_pre_process(str(float_path), str(prepared_path))
    proto = onnx.load(prepared_path)
    return PreparedOnnx(Path(prepared_path), proto, tuple(output_compute_op_types(proto)),
                        tuple(output_softmax_nodes(proto)))


def ort_int8_proto(prepared, path, recipe, onnx_ranges, float_nodes=()):
    """The int8 ONNX proto ort_quantized writes to `path`, with the recipe's weight bits."""
    import onnx

    ort_quantized(prepared, path, recipe, onnx_ranges, float_nodes)
    return with_weight_bits(onnx.load(path), 7 if recipe.onnx_reduce_range else 8)


def ort_quantized(prepared, output_path, recipe, onnx_ranges, float_nodes=()):
    """onnxruntime static quantization of the pre-processed float ONNX with
    our ranges ({ONNX tensor name: (low, high)}), handed over as its
    calibration cache: its own calibrator never runs.

    The logits layer's output is not quantized: it computes in int8 and
    onnxruntime scales its int32 sums straight to float, so the int8 logits'
    rounding and clipping (the floor of an int8 output tensor) are gone:
    +0.2 to +1.2 dB output SQNR measured on three digits ResNets
    (benchmarks/results/calibration.md). A softmax head then runs in float
    on those logits (a few values per image): no int8 grid on the logits it
    reads or on the probabilities it writes. `float_nodes` (mixed.py) stay
    float32 too."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    cache = Path(output_path).with_name(Path(output_path).stem + ".ranges.json")
    tensors = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.float32(low), highest=np.float32(high)) for name, (low, high) in onnx_ranges.items()})
    save_tensors_data(tensors, cache)
    with native_output_silenced():
        quantize_static(
            str(prepared.path),
            str(output_path),
            None,
            quant_format=QuantFormat.QDQ if recipe.onnx_format == "qdq" else QuantFormat.QOperator,
            activation_type=QuantType.QInt8 if recipe.onnx_activation_type == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            reduce_range=recipe.onnx_reduce_range,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
            nodes_to_exclude=list(prepared.float_nodes) + list(float_nodes),
            extra_options={"OpTypesToExcludeOutputQuantization": list(prepared.float_output_ops)},
        )
    cache.unlink(missing_ok=True)
    if recipe.onnx_format == "qdq":
        left_in_float = [name for name in float_compute_ops(onnx.load(output_path)) if name not in set(float_nodes)]
        if left_in_float:
            raise ConversionError(f"onnxruntime left {len(left_in_float)} operators in float "
                                  f"(e.g. {left_in_float[0]}); the int8 ONNX model would not be fully quantized")
    return Path(output_path)


def ranged_quantizer(prepared, recipe, output_path):
    """ort_quantized(prepared, output_path, recipe, ranges, float_nodes) for
    the many ranges of one search: onnxruntime quantizes the first model of
    each set of float nodes, and the others are that one with the
    initializers their ranges decide written again
    (onnx_requantize.requantized) where it reproduces onnxruntime's own model
    from the first's ranges; else onnxruntime quantizes each."""
    import onnx

    from .onnx_requantize import requantized

    template = {}  # the last float nodes' (model as onnxruntime wrote it, its ranges), or None where not rewritable

    def rewritten(made, onnx_ranges):
        proto, its_ranges = made
        return requantized(proto, its_ranges, prepared.proto, onnx_ranges, recipe.onnx_activation_type)

    def reproduces(made):
        again = rewritten(made, made[1])
        return again is not None and again.SerializeToString() == made[0].SerializeToString()

    def quantize(onnx_ranges, float_nodes=()):
        key = frozenset(float_nodes)
        model = rewritten(template[key], onnx_ranges) if template.get(key) is not None else None
        if model is not None:
            onnx.save(model, output_path)
            return Path(output_path)
        ort_quantized(prepared, output_path, recipe, onnx_ranges, float_nodes)
        if key not in template and recipe.onnx_format == "qdq":
            made = (onnx.load(output_path), dict(onnx_ranges))
            template.clear()
            template[key] = made if reproduces(made) else None
        return Path(output_path)

    return quantize


SCORING_BATCH = 8  # images per onnxruntime run: all 200 at once would hold gigabytes of activations at 224


def predicted_in_batches(runner, images):
    import numpy as np

    return np.concatenate([runner.predict(images[start:start + SCORING_BATCH])
                           for start in range(0, len(images), SCORING_BATCH)])


def onnx_chooser(prepared, float_path, recipe, to_onnx_ranges, calibration, scratch):
    """For `auto`: the Choice of range rule for the int8 ONNX, each candidate
    quantized by onnxruntime and run on its CPU provider on the held-out
    calibration samples (its best rule may differ from the TFLite model's)."""
    from ..device.runtime import OnnxRunner
    from .recipe import tool_versions
    from .ranges import DEFAULT_AUTO_SCORE
    from .selection import calibration_inputs, choose, one_at_a_time

    quantize = ranged_quantizer(prepared, recipe, scratch / "candidate.onnx")

    def choose_for(statistics, score=DEFAULT_AUTO_SCORE):
        inputs = calibration_inputs(calibration, statistics)
        with native_output_silenced():
            reference = predicted_in_batches(OnnxRunner(float_path), inputs)

        def int8_outputs(ranges, images):
            candidate = quantize(to_onnx_ranges(ranges))
            with native_output_silenced():
                return predicted_in_batches(OnnxRunner(candidate), images)

        version = tool_versions("onnxruntime").get("onnxruntime", "")
        return choose(statistics, inputs, one_at_a_time(int8_outputs), reference,
                      f"the int8 ONNX on onnxruntime {version} (CPU)", score=score)

    return choose_for


def onnx_route(prepared, recipe, to_onnx_ranges, scratch):
    """mixed.Route of the int8 ONNX: parts of the network left in float32 by
    onnxruntime's nodes_to_exclude, run on its CPU provider."""
    import numpy as np
    import onnx

    from ..device.runtime import OnnxRunner
    from .bias_correction import corrects_biases, counts_top1
    from .mixed import Route
    from .onnx_bias_correction import onnx_fold_corrector

    candidate = Path(scratch) / "mixed-candidate.onnx"
    quantize = ranged_quantizer(prepared, recipe, candidate)

    def make(ranges, nodes, demoted=()):
        if demoted:  # onnxruntime's float parts are float32 (the TFLite route alone runs dynamic-range ones)
            raise ValueError("the int8 ONNX has no dynamic-range int8 weight layers")
        return quantize(to_onnx_ranges(ranges), nodes).read_bytes()

    def outputs(model, inputs):
        candidate.write_bytes(model)
        with native_output_silenced():
            return predicted_in_batches(OnnxRunner(candidate), inputs)

    def outputs_and_logits(model, inputs):
        candidate.write_bytes(with_softmax_input_output(model))
        with native_output_silenced():
            runner = OnnxRunner(candidate)
            batches = [runner.predict_every_output(inputs[start:start + SCORING_BATCH])
                       for start in range(0, len(inputs), SCORING_BATCH)]
        return tuple(np.concatenate(values) for values in zip(*batches))

    def structure(path):
        return len(float_weight_ops(onnx.load(path))), None

    # the logits are float in every int8 ONNX (ort_quantized): a float head changes no output type
    weighted = frozenset(node.name for node in prepared.proto.graph.node if node.op_type in COMPUTE_OPS)
    corrector = None
    if corrects_biases(recipe) and recipe.onnx_format == "qdq":
        corrector = onnx_fold_corrector(prepared.proto, recipe.bias_correction, counts_top1(recipe))
    return Route(onnx_parts(prepared.proto), make, outputs, ".onnx", structure, "float32", weighted,
                 outputs_and_logits if softmax_writer(prepared.proto) else None, corrector=corrector)


def onnx_parts(proto):
    """mixed.network_parts of a float ONNX: {part: (node names, in graph order)}."""
    from .mixed import network_parts

    graph = proto.graph
    weighted = frozenset(node.name for node in graph.node if node.op_type in COMPUTE_OPS)
    operators = [(node.name, tuple(node.input), tuple(node.output)) for node in graph.node]
    return network_parts(operators, tuple(value.name for value in graph.input),
                         tuple(value.name for value in graph.output), weighted)


def softmax_writer(proto):
    """The Softmax node writing an ONNX model's graph output, or None."""
    names = output_softmax_nodes(proto)
    return next((node for node in proto.graph.node if node.name in names), None)


def with_softmax_input_output(model_bytes):
    """An ONNX model (bytes) whose first graph output a Softmax writes, with
    the softmax's input (the logits, float in every int8 ONNX) as a second
    graph output."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    logits = softmax_writer(proto).input[0]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
    return proto.SerializeToString()


def check_onnx_request(recipe, opset, route):
    """Refuse what ONNX export cannot do before any work starts."""
    from .onnx_bias_correction import QOPERATOR_REFUSAL

    if recipe.mode not in ("none", "int8"):
        raise ConfigError(f"ONNX export offers float32 (none) and int8. Received: mode={recipe.mode!r}")
    if route not in ONNX_ROUTES:
        raise ConfigError(f"route must be one of {', '.join(ONNX_ROUTES)}. Received: {route!r}")
    if recipe.mode == "int8" and route == "ort" and recipe.bias_correction == "on" and recipe.onnx_format != "qdq":
        raise ConfigError(QOPERATOR_REFUSAL)
    check_opset(opset)


def check_no_nested_model(model, fix):
    """Refuse, for onnxruntime's int8 ONNX, a model with a whole model nested in it: its tensors are named after
    the nested model, so none could be told apart to take its own range."""
    import keras

    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise ConfigError(f"the int8 ONNX of {model.name!r} cannot take its ranges: layer {nested[0]!r} is a whole "
                          f"model nested in it, whose tensors cannot be told apart; {fix}")


def check_onnx_io_types(input_type, output_type, route):
    """Refuse integer I/O asked of the ort route's int8 ONNX, which takes and gives float32."""
    if route == "ort" and {input_type, output_type} - {None, "float32"}:
        raise ConfigError("--input-type and --output-type set the int8 TFLite's I/O; the int8 ONNX of --onnx-route "
                          "ort (the default) takes and gives float32: add --onnx-route tflite for integer I/O in the "
                          "ONNX, or leave them out")


def to_onnx(model, recipe=None, calibration=None, output="model.onnx", opset=DEFAULT_OPSET, route="ort",
            float_onnx_path=None, statistics=None, float_model=None, log=None, full_int8_output=None):
    """Write `output` (.onnx) and its recipe JSON; return the path.

    recipe.mode "none" exports float32; "int8" quantizes by `route`, with
    activation ranges from `statistics` (collect_statistics() on the float32
    .tflite of `model`, the bytes of which `float_model` may give) or from
    one statistics pass over `calibration`: both formats share them. For
    route "ort", `float_onnx_path` (the float ONNX of `model`, same opset)
    reuses an export a pipeline has already made, and under a budget
    `full_int8_output` (a path) also gets full int8 with the same ranges,
    its biases corrected as the recipe asks: what the budget's parts are
    measured against on other images.
    """
    import keras
    import onnx

    from .bias_correction import check_images_for
    from .int8_tflite import statistics_for
    from .onnx_bias_correction import corrected_onnx_artifact
    from .ranges import ranges_record
    from .recipe import read_record
    from .selection import resolved_ranges

    recipe = recipe or QuantizationRecipe.for_mode("none")
    output = Path(output)
    if output.suffix != ".onnx":
        raise ConfigError(f"the ONNX output must end in .onnx. Received: {output}")
    check_onnx_request(recipe, opset, route)
    check_images_for(recipe, calibration)
    if recipe.needs_calibration and statistics is None:
        if calibration is None:
            raise ConfigError("int8 quantization needs calibration data (an image folder, .npy or .npz)")
        check_calibration_fits(model, calibration)

    with tempfile.TemporaryDirectory(prefix="edge-resnet-onnx-") as scratch, atomic_output(output) as temporary:
        scratch = Path(scratch)
        ranges_used, search, tflite_search = None, None, None
        if recipe.mode == "none":
            proto = float_onnx(model, opset)
            exporter = exporter_of(proto)
            onnx.save(proto, temporary)
            del proto
        else:
            float_model = float_model if float_model is not None else float_tflite(model)
            statistics = statistics_for(float_model, calibration, statistics)
            if route == "ort":
                if float_onnx_path is None:
                    float_onnx_path = scratch / "float.onnx"
                    proto = float_onnx(model, opset)
                    exporter = exporter_of(proto)
                    onnx.save(proto, float_onnx_path)
                    del proto
                else:
                    exporter = recorded_exporter(float_onnx_path)
                prepared = ort_prepared(float_onnx_path, scratch / "prepared.onnx")
                # a nested model is one layer whose name would cover every tensor inside it
                layer_names = {layer.name for layer in model.layers if not isinstance(layer, keras.Model)}
                output_layer = model.outputs[0]._keras_history[0].name

                scoped_names = not exporter.startswith(EXPORTER)  # tf2onnx names

                def to_onnx_ranges(tflite_ranges):
                    return onnx_activation_ranges(prepared.proto, tflite_ranges, statistics, layer_names, output_layer,
                                                  scoped_names)

                method, tflite_ranges, selection = resolved_ranges(
                    statistics, recipe.range_method(),
                    onnx_chooser(prepared, float_onnx_path, recipe, to_onnx_ranges, calibration, scratch))
                if recipe.budget() is not None:
                    from .mixed import search_float_parts

                    search = search_float_parts(float_model, statistics, calibration, recipe, method,
                                                recipe.budget(), log=log or (lambda line: None),
                                                route=onnx_route(prepared, recipe, to_onnx_ranges, scratch))
                onnx_ranges = to_onnx_ranges(tflite_ranges)
                int8_proto = ort_int8_proto(prepared, scratch / "int8.onnx", recipe, onnx_ranges,
                                            search.float_scopes() if search else ())
                int8_proto, correction = corrected_onnx_artifact(int8_proto, prepared.proto, recipe, calibration)
                onnx.save(checked(int8_proto, f"model {model.name!r}", (ORT_DOMAIN,)), temporary)
                if search and full_int8_output is not None:  # as the default would make it, corrected alike
                    full = ort_int8_proto(prepared, scratch / "full_int8.onnx", recipe, onnx_ranges)
                    onnx.save(corrected_onnx_artifact(full, prepared.proto, recipe, calibration)[0], full_int8_output)
                ranges_used = ranges_record(statistics, method, tflite_ranges, selection, int8_logits=False)
            else:
                # tf2onnx writes float32 parts, not dynamic-range ones, as ONNX
                tflite_recipe = (recipe if recipe.budget() is None
                                 else dataclasses.replace(recipe, fallback_precision="float32"))
                tflite_path = to_tflite(model, tflite_recipe, calibration, output=scratch / "int8.tflite",
                                        statistics=statistics, float_model=float_model, log=log)
                onnx.save(with_weight_bits(onnx_from_tflite(tflite_path, opset), 8), temporary)
                exporter = "tf2onnx (from the int8 TFLite model)"
                tflite_record = read_record(tflite_path)
                ranges_used = tflite_record["activation_ranges"]
                correction = tflite_record["bias_correction"]
                tflite_search = tflite_record.get("mixed_precision")
                if tflite_search:
                    tflite_search = {**tflite_search, "searched_on": "the int8 TFLite on XNNPACK, which this ONNX is "
                                                                     "converted from: its steps were measured there"}
        if recipe.mode == "int8" and route == "ort":  # onnxruntime's QDQ model takes and gives float32
            recipe = dataclasses.replace(recipe, input_type="float32", output_type="float32")
        elif recipe.mode == "int8":  # the TFLite's quantization, written as QDQ: int8 activations, 8-bit weights
            recipe = dataclasses.replace(recipe, onnx_activation_type="int8", onnx_reduce_range=False)
        record = artifact_record(temporary, "onnx", recipe, keras_model_info(model), ONNX_PACKAGES, ranges_used)
        record.update(artifact=output.name, opset=opset, route=route if recipe.mode == "int8" else None,
                      exporter=exporter)
        if recipe.mode == "int8":
            record["bias_correction"] = correction
        if recipe.mode == "int8" and route == "tflite":
            record["quantization"] = f"{recipe.describe('tflite', ranges_used)}, the int8 TFLite model written as ONNX"
        if search or tflite_search:
            from .mixed import describe_artifact

            record["mixed_precision"] = search.record() if search else tflite_search
            mixed = describe_artifact(record["mixed_precision"])
            if mixed:
                record["quantization"] = mixed if search else f"{mixed}, the int8 TFLite model written as ONNX"
        write_record(output, record)
    return output


def describe_onnx(path):
    """Lines on an ONNX file's operators and opset."""
    from collections import Counter

    import onnx

    proto = onnx.load(path)
    counts = Counter(node.op_type for node in proto.graph.node)
    return [f"operators: {', '.join(f'{op} x{n}' for op, n in sorted(counts.items()))}",
            f"opset {proto.opset_import[0].version}, passes onnx.checker (full check)"]
