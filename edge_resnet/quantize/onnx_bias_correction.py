"""Empirical bias correction of onnxruntime's int8 ONNX (QDQ), as
bias_correction.py does for the int8 TFLite: part by part in graph order,
each int8 Conv and Gemm (biased_layers) gets its int32 bias shifted by the
mean, per output channel, of (float output - int8 output) over the
calibration images, measured on the int8 model whose earlier parts are
already corrected. Layers a budget keeps in float32 keep their biases
(correcting them too moved the logits by -0.4 to +0.2 dB on the evaluation
images and once turned the guard against every layer's correction:
benchmarks/results/onnx_float_layers.md).

The int8 output is read where onnxruntime's fused kernel writes it, the
QuantizeLinear after the layer (the layer's own output where none follows:
the logits, which the int8 ONNX keeps float). Each measurement runs only the
nodes the read tensors need.
"""

from dataclasses import dataclass

import numpy as np

WEIGHT_LAYERS = ("Conv", "Gemm")


@dataclass(frozen=True)
class BiasedLayer:
    node: str  # the Conv or Gemm node
    output: str  # the tensor it writes (the float model's tensor of the same name)
    read: str  # the tensor its int8 output is read from: its QuantizeLinear's output, or `output` where none
    scale: str  # that QuantizeLinear's scale and zero point initializers (None where `read` is float)
    zero_point: str
    bias: str  # the int32 bias initializer
    bias_scale: str  # the bias's scale initializer (input scale x weight scale: per channel, or one)


def initializers(proto):
    return {tensor.name: tensor for tensor in proto.graph.initializer}


def biased_layers(proto):
    """{node name: BiasedLayer} of the int8 QDQ graph's Conv and Gemm nodes
    whose bias is an int32 initializer behind a DequantizeLinear, in graph
    order. A layer whose output goes on in float to anything but one
    QuantizeLinear or the graph's outputs and a softmax is left out: its
    int8 output is not one tensor to read."""
    from onnx import TensorProto

    weights = initializers(proto)
    writer = {output: node for node in proto.graph.node for output in node.output}
    readers = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph_outputs = {value.name for value in proto.graph.output}
    layers = {}
    for node in proto.graph.node:
        if node.op_type not in WEIGHT_LAYERS or len(node.input) < 3 or node.input[2] not in writer:
            continue
        dequantize = writer[node.input[2]]
        if dequantize.op_type != "DequantizeLinear" or dequantize.input[0] not in weights:
            continue
        if weights[dequantize.input[0]].data_type != TensorProto.INT32:
            continue
        output, following = node.output[0], readers.get(node.output[0], [])
        if len(following) == 1 and following[0].op_type == "QuantizeLinear" and output not in graph_outputs:
            quantize = following[0]
            layers[node.name] = BiasedLayer(node.name, output, quantize.output[0], quantize.input[1],
                                            quantize.input[2], dequantize.input[0], dequantize.input[1])
        elif all(reader.op_type == "Softmax" for reader in following) and (following or output in graph_outputs):
            layers[node.name] = BiasedLayer(node.name, output, output, None, None, dequantize.input[0],
                                            dequantize.input[1])
    return layers


def needed_nodes(proto, outputs, known=()):
    """The positions in `proto`'s graph, in graph order, of the nodes the
    tensors `outputs` depend on, from the tensors `known` on."""
    writer = {output: at for at, node in enumerate(proto.graph.node) for output in node.output if output}
    needed, pending = set(), [name for name in outputs if name in writer and name not in known]
    while pending:
        at = writer[pending.pop()]
        if at not in needed:
            needed.add(at)
            pending += [name for name in proto.graph.node[at].input if name in writer and name not in known]
    return sorted(needed)


def window_session(proto, positions, inputs, outputs):
    """An onnxruntime CPU session of the nodes at `positions` of `proto`'s
    graph alone, reading the tensors `inputs` ({name: an array of their
    values, one row per image}) and writing `outputs`."""
    import onnx
    import onnxruntime

    graph = proto.graph
    nodes = [graph.node[at] for at in positions]
    used = {name for node in nodes for name in node.input}
    cut = onnx.helper.make_graph(
        nodes, graph.name,
        [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(values.dtype),
                                            [None, *values.shape[1:]]) for name, values in inputs.items()],
        [onnx.helper.make_empty_tensor_value_info(name) for name in outputs],
        [tensor for tensor in graph.initializer if tensor.name in used])
    model = onnx.helper.make_model(cut, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def read_tensors(proto, values, means=(), kept=()):
    """({tensor: its mean per channel (axis 1) over the images} for `means`,
    {tensor: its values on every image} for `kept`, the positions of the
    nodes run): one run of the nodes they need from the tensors `values`
    ({name: its values on every image}: the graph's input, or what earlier
    runs kept)."""
    from .onnx_export import SCORING_BATCH

    names = list(dict.fromkeys([*means, *kept]))
    positions = needed_nodes(proto, names, set(values))
    read = {name for at in positions for name in proto.graph.node[at].input}
    inputs = {name: array for name, array in values.items() if name in read}
    session = window_session(proto, positions, inputs, names)
    count = len(next(iter(values.values())))
    sums, rows, kept_values = dict.fromkeys(means, 0.0), dict.fromkeys(means, 0), {}
    for start in range(0, count, SCORING_BATCH):
        batch = {name: array[start:start + SCORING_BATCH] for name, array in inputs.items()}
        outputs = dict(zip(names, session.run(names, batch)))
        for name in means:
            sums[name] = sums[name] + axis1_sums(outputs[name])
            rows[name] += outputs[name].size // outputs[name].shape[1]
        for name in kept:
            if outputs[name].ndim == 0 or len(outputs[name]) != len(next(iter(batch.values()))):
                raise ValueError(f"tensor {name!r} does not hold one row per image")
            if name not in kept_values:
                kept_values[name] = np.empty((count, *outputs[name].shape[1:]), outputs[name].dtype)
            kept_values[name][start:start + len(outputs[name])] = outputs[name]
    return {name: sums[name] / rows[name] for name in means}, kept_values, positions


def axis1_sums(values):
    """Per channel (axis 1, the ONNX layout's), the sum of a batch's values: exact for integer tensors."""
    integer = np.issubdtype(values.dtype, np.integer)
    return np.sum(values, axis=(0, *range(2, values.ndim)), dtype=np.int64 if integer else np.float64)


def real_readers(proto):
    """{tensor: the positions of the nodes that read it, through DequantizeLinear nodes (which are re-run where
    their output is read later: a window keeps the int8 tensor, not its float copy)}."""
    direct = {}
    for at, node in enumerate(proto.graph.node):
        for name in filter(None, node.input):  # an optional input left out is named ""
            direct.setdefault(name, set()).add(at)

    def through(name):
        found = set()
        for at in direct.get(name, ()):
            node = proto.graph.node[at]
            found |= through(node.output[0]) if node.op_type == "DequantizeLinear" else {at}
        return found

    return {name: through(name) for name in direct}


def dequantized_mean(proto_weights, layer, mean):
    """A layer's int8 output mean per channel (as read) in float."""
    from onnx import numpy_helper

    if layer.scale is None:
        return mean
    scale = float(numpy_helper.to_array(proto_weights[layer.scale]))
    zero_point = float(numpy_helper.to_array(proto_weights[layer.zero_point]))
    return scale * (mean - zero_point)


def shift_bias(proto_weights, layer, shift):
    """Add a float shift per channel to the layer's int32 bias (over its scale, rounded)."""
    from onnx import numpy_helper

    bias = proto_weights[layer.bias]
    scale = np.asarray(numpy_helper.to_array(proto_weights[layer.bias_scale]), np.float64)
    values = numpy_helper.to_array(bias).astype(np.int64) + np.rint(shift / scale).astype(np.int64)
    values = np.clip(values, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))


def part_layers(proto, parts, float_names):
    """Per part (node names, in graph order), the BiasedLayers it holds whose
    output the float model has too (`float_names`: its tensor names); parts
    without any left out."""
    layers = {name: layer for name, layer in biased_layers(proto).items() if layer.output in float_names}
    grouped = [[layers[name] for name in names if name in layers] for names in parts]
    return [group for group in grouped if group]


def image_input(proto):
    """The name of the graph's one input that is not an initializer (the images)."""
    weights = {tensor.name for tensor in proto.graph.initializer}
    inputs = [value.name for value in proto.graph.input if value.name not in weights]
    if len(inputs) != 1:
        raise ValueError(f"the ONNX graph has {len(inputs)} inputs, not one image input")
    return inputs[0]


class OutOfOrder(Exception):
    """A part's nodes need a layer of a later part: its parts do not run one after another."""


@dataclass(frozen=True)
class OnnxCorrection:
    proto: object  # the int8 ONNX with its biases corrected
    shifted: list  # the names of the layers shifted
    judged_as_quantized: np.ndarray  # the judged tensor's values on every image, as quantized (None: not judged)
    judged_corrected: np.ndarray  # ... and as corrected
    judged_float: np.ndarray  # ... and in the float model


def corrected_onnx(int8_proto, float_proto, images, parts, judged=None):
    """An OnnxCorrection of `int8_proto` (a copy is corrected) on `images`
    (float, as the model takes them): `parts` are the network's parts (node
    names each) in graph order, `judged` the tensor both models are scored
    on afterwards (the logits; None: not scored). Raises OutOfOrder where a
    part's nodes need a layer of a later part.

    Each part's nodes run as a model of their own on the tensors the parts
    before it wrote (kept where a later node reads them: the int8 ones, not
    their DequantizeLinear copies), once to measure and once more, corrected,
    to pass on: about two int8 passes over the images and one float pass,
    and for the guard one int8 pass of the model as quantized."""
    import copy

    proto = copy.deepcopy(int8_proto)
    graph_input = {image_input(proto): images}
    groups = part_layers(proto, parts, {name for node in float_proto.graph.node for name in node.output})
    if not groups:
        return OnnxCorrection(proto, [], None, None, None)
    read = [judged] if judged else []
    float_means, float_kept, _ = read_tensors(float_proto, {image_input(float_proto): images},
                                              means=[layer.output for group in groups for layer in group], kept=read)
    as_quantized = read_tensors(proto, graph_input, kept=read)[1][judged] if judged else None
    weights, readers = initializers(proto), real_readers(proto)
    writers = {output: node.op_type for node in proto.graph.node for output in node.output}
    position = {node.name: at for at, node in enumerate(proto.graph.node)}
    cached, done, shifted = dict(graph_input), set(), []
    for number, group in enumerate(groups):
        int8_means, _, window = read_tensors(proto, cached, means=[layer.read for layer in group])
        later = {position[layer.node] for other in groups[number + 1:] for layer in other}
        if later & set(window):
            raise OutOfOrder(group[0].node)
        for layer in group:
            shift_bias(weights, layer, float_means[layer.output] - dequantized_mean(weights, layer,
                                                                                    int8_means[layer.read]))
            shifted.append(layer.node)
        done |= set(window)
        still_read = {name for name, at in readers.items() if at - done} | set(read)
        passed_on = [name for at in window for name in proto.graph.node[at].output
                     if name in still_read and writers[name] != "DequantizeLinear"]
        kept = read_tensors(proto, cached, kept=passed_on)[1] if passed_on else {}
        cached = {name: values for name, values in cached.items() if name in still_read} | kept
    corrected = None
    if judged:
        corrected = cached[judged] if judged in cached else read_tensors(proto, cached, kept=read)[1][judged]
    return OnnxCorrection(proto, shifted, as_quantized, corrected, float_kept.get(judged))


ONNX_JUDGED_BY = ("the mean over the calibration images of each image's logits SQNR (a softmax head: its input; "
                  "the int8 ONNX's logits are float)")
QOPERATOR_REASON = ("onnxruntime's QOperator format fuses each layer into an int8 operator whose bias the correction "
                    "does not reach (the default QDQ format is corrected)")
QOPERATOR_REFUSAL = ("--bias-correction corrects the QDQ int8 ONNX; --onnx-format qoperator fuses each layer into an "
                     "int8 operator whose bias it does not reach: leave one of them out")


def judged_output(proto):
    """The tensor a correction is judged by: a softmax head's input, else the graph's first output."""
    from .onnx_export import softmax_writer

    softmax = softmax_writer(proto)
    return softmax.input[0] if softmax is not None else proto.graph.output[0].name


def corrected_onnx_artifact(int8_proto, float_proto, recipe, calibration):
    """(onnxruntime's int8 ONNX, the record of what was done): its biases
    corrected on the calibration images (`calibration`, an ImageSet) as
    bias_correction.corrected_artifact corrects the TFLite's, with the same
    rules (the recipe's mode, the guard of `auto`, under a budget counting
    top-1 the agreement on those images too). `float_proto`: the float ONNX
    it was quantized from (the same tensor names). A correction onnxruntime
    cannot run is refused in one line where asked for (`on`), and said in
    the record by default."""
    from .bias_correction import counts_top1, skipped_record

    skipped = skipped_record(recipe, calibration)
    if skipped:
        return int8_proto, skipped
    if recipe.onnx_format != "qdq":
        return int8_proto, {"corrected": False, "mode": recipe.bias_correction, "reason": QOPERATOR_REASON}
    images = np.stack(list(calibration.samples())).astype(np.float32, copy=False)
    return guarded_onnx_correction(int8_proto, float_proto, images, recipe.bias_correction, counts_top1(recipe))


def guarded_onnx_correction(int8_proto, float_proto, images, mode, count_top1=False):
    """(the QDQ int8 ONNX, its record): its biases corrected on `images`,
    kept in mode `auto` only where that raises the logits' mean per-image
    SQNR on them, and where `count_top1` the top-1 agreement does not fall
    (corrected_onnx_artifact's rules)."""
    from ..errors import ConversionError
    from .bias_correction import NO_LAYERS_REASON, OUT_OF_ORDER_REASON, guarded_record, top1_agreement
    from .mixed import per_image_mean_db
    from .onnx_export import onnx_parts

    try:
        correction = corrected_onnx(int8_proto, float_proto, images, list(onnx_parts(float_proto).values()),
                                    judged_output(float_proto) if mode == "auto" else None)
    except OutOfOrder:
        return int8_proto, {"corrected": False, "mode": mode, "reason": OUT_OF_ORDER_REASON}
    except Exception as error:  # onnxruntime's own untyped errors on a graph it cannot cut: one line, then stop
        problem = " ".join(str(error).split())[:200]
        if mode == "on":
            raise ConversionError(f"the int8 ONNX's biases could not be corrected ({problem}): leave out "
                                  "--bias-correction") from error
        return int8_proto, {"corrected": False, "mode": mode, "reason": f"correcting them failed: {problem}"}
    if not correction.shifted:
        return int8_proto, {"corrected": False, "mode": mode, "reason": NO_LAYERS_REASON}
    scores = agreement = None
    if mode == "auto":
        values = {"as_quantized": correction.judged_as_quantized, "corrected": correction.judged_corrected}
        scores = {key: per_image_mean_db(correction.judged_float, value) for key, value in values.items()}
        if count_top1:
            agreement = {key: top1_agreement(correction.judged_float, value) for key, value in values.items()}
    keep, record = guarded_record(mode, len(images), len(correction.shifted), scores, ONNX_JUDGED_BY, agreement)
    return (correction.proto if keep else int8_proto), record


def onnx_fold_corrector(float_proto, mode, count_top1=False):
    """For a budget's search (mixed.Route.corrector): `for_images(images,
    reference_for)` -> a function that corrects a candidate (int8 ONNX
    bytes) on `images` as the artifact is corrected on all of them (the
    float run it needs is its own: `reference_for` is not read)."""
    import onnx

    def for_images(images, reference_for):
        def corrected(model_bytes):
            proto, _ = guarded_onnx_correction(onnx.load_from_string(model_bytes), float_proto, images, mode,
                                               count_top1)
            return proto.SerializeToString()
        return corrected

    return for_images
