"""Empirical bias correction of an int8 TFLite (full int8, or a budget's
with parts kept out of int8, whose own biases stay): part by part in graph
order (the stem, each residual block, the head), every convolution and
the classifier of the part get their int32 bias shifted by the mean, per
output channel, of (float output - int8 output) over the calibration images,
measured on the int8 model whose earlier parts are already corrected. The
int8 rounding and clipping upstream leave a mean error (a ReLU passes the
positive half of its input's noise); the float model's means say how much.

Each part runs as a model of its own on the int8 tensors the part before it
wrote, so the whole correction costs two int8 passes over the images, not
one per part. The integer arithmetic is the same as the whole model's.
"""

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

from .statistics import flatbuffer_bytes, read_flatbuffer


def correction_parts(float_model_bytes):
    """Per part of the network, in graph order: (the output tensors whose
    operators' biases are corrected, every operator scope of the part).
    Corrected: every convolution and fully connected layer but an output
    softmax's input. The floor of those logits' int8 range clips logits the
    softmax ignores, and that clipping would dominate their mean error
    (correcting it cost four softmax heads 0.6 to 14.8 dB:
    benchmarks/results/activation_bias.md)."""
    from .mixed import model_parts, weighted_scopes
    from .statistics import softmax_input_of

    softmax_input = softmax_input_of(float_model_bytes)
    corrected = weighted_scopes(float_model_bytes) - {softmax_input.tensor if softmax_input else None}
    parts = []
    for scopes in model_parts(float_model_bytes).values():
        names = tuple(scope for scope in scopes if scope in corrected)
        if names:
            parts.append((names, scopes))
    return parts


def part_windows(graph, parts):
    """[(start, stop)]: the operator positions of the int8 graph each part
    runs, from where the part before it stopped to the part's last operator
    (an operator the int8 model adds, such as the input's QUANTIZE, runs
    with the part after it); None where the parts are not one after another
    in the graph's order."""
    from .mixed import operator_scope

    position = {operator_scope(graph, operator): at for at, operator in enumerate(graph.operators)}
    stops = [max((position[scope] for scope in scopes if scope in position), default=-1) + 1 for _, scopes in parts]
    starts = [0, *stops[:-1]]
    if any(stop <= start for start, stop in zip(starts, stops)):
        return None
    return list(zip(starts, stops))


def window_model(model, start, stop, outputs):
    """(bytes, input tensor indices in `model`) of the model object `model`'s
    operators start..stop-1 alone, reading what the graph's input and the
    operators before them wrote and writing the tensors `outputs`. Only
    their own tensors and weights come along (packing the whole model's
    tensor table for every part cost most of a correction)."""
    graph = model.subgraphs[0]
    operators = graph.operators[start:stop]
    written_before = set(graph.inputs) | {index for operator in graph.operators[:start] for index in operator.outputs}
    read = [index for operator in operators for index in operator.inputs if index >= 0]
    inputs = list(dict.fromkeys(index for index in read if index in written_before))
    written = [index for operator in operators for index in operator.outputs if index >= 0]
    intermediates = [index for operator in operators for index in (operator.intermediates
                                                                   if operator.intermediates is not None else ())]
    kept = list(dict.fromkeys([*inputs, *read, *written, *intermediates, *outputs]))
    new_index = {index: at for at, index in enumerate(kept)}
    buffers = list(dict.fromkeys([0, *(graph.tensors[index].buffer for index in kept)]))  # 0: the empty buffer
    new_buffer = {buffer: at for at, buffer in enumerate(buffers)}
    window_graph = copy.copy(graph)
    window_graph.tensors = []
    for index in kept:
        tensor = copy.copy(graph.tensors[index])
        tensor.buffer = new_buffer[tensor.buffer]
        window_graph.tensors.append(tensor)
    window_graph.operators = []
    for operator in operators:
        operator = copy.copy(operator)
        operator.inputs = [new_index[index] if index >= 0 else index for index in operator.inputs]
        operator.outputs = [new_index[index] if index >= 0 else index for index in operator.outputs]
        if operator.intermediates is not None:
            operator.intermediates = [new_index[index] for index in operator.intermediates]
        window_graph.operators.append(operator)
    window_graph.inputs = [new_index[index] for index in inputs]
    window_graph.outputs = [new_index[index] for index in outputs]
    window = copy.copy(model)
    window.buffers = [model.buffers[buffer] for buffer in buffers]
    window.subgraphs = [window_graph]
    window.signatureDefs = window.metadata = window.metadataBuffer = None  # they name the whole model's indices
    return flatbuffer_bytes(window), inputs


WINDOW_BATCH = 16  # images per run of a part: batches spare the per-run overhead that dominates small models


def run_window(content, inputs, values, count, carried=(), measured=()):
    """Run a window_model on `count` images: `values` holds, per input
    tensor name, its value on each image. Returns ({carried tensor name: its
    values, one row per image}, {measured tensor name: the mean of its
    dequantized values per channel})."""
    from ..device.runtime import tflite_interpreter

    interpreter = tflite_interpreter("a part of the int8 model", threads=2, content=content)
    input_details, output = interpreter.get_input_details(), {
        detail["name"]: detail for detail in interpreter.get_output_details()}  # shapes of one image
    shapes = {detail["index"]: detail["shape"] for detail in input_details}
    output_shapes = {detail["index"]: detail["shape"] for detail in output.values()}
    batch = 1
    if all(len(shape) and shape[0] == 1 for shape in [*shapes.values(), *output_shapes.values()]):
        batch = WINDOW_BATCH if batches(interpreter, shapes, output_shapes, WINDOW_BATCH) else 1
        if batch == 1 and not resized(interpreter, shapes, 1):
            raise RuntimeError("a part of the int8 model could not run one image after a batch failed")
    input_index = {detail["name"]: detail["index"] for detail in input_details}
    kept = {name: np.empty((count, *output[name]["shape"]), output[name]["dtype"]) for name in carried}
    sums = {name: 0 for name in measured}
    for start in range(0, count, batch):
        size = min(batch, count - start)
        if size != batch:
            resized(interpreter, shapes, size)
        for name in inputs:
            rows = values[name][start:start + size]
            interpreter.set_tensor(input_index[name], rows[0] if batch == 1 else stacked(rows))
        interpreter.invoke()
        for name in carried:
            kept[name][start:start + size] = interpreter.get_tensor(output[name]["index"]).reshape(
                size, *output[name]["shape"])
        for name in measured:
            sums[name] = sums[name] + channel_sums(interpreter.get_tensor(output[name]["index"]))
    means = {}
    for name in measured:
        scale, zero_point = output[name]["quantization"]
        rows = count * int(np.prod(output[name]["shape"][:-1]))
        means[name] = scale * (sums[name] / rows - zero_point)
    return kept, means


def stacked(rows):
    """Rows of one image each (a batch axis of 1 each) as one batch."""
    return rows.reshape(len(rows) * rows.shape[1], *rows.shape[2:])


def resized(interpreter, shapes, size):
    """Resize a window's inputs ({index: shape of one image}) to `size` images; False where the runtime refuses."""
    try:
        for index, shape in shapes.items():
            interpreter.resize_tensor_input(index, [size, *shape[1:]])
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError):
        return False
    return True


def batches(interpreter, shapes, output_shapes, size):
    """Whether a window resized to `size` images computes them as it does
    one: every output ({index: shape of one image}) then holds `size` of
    them (a reshape to a fixed shape inside would not: the window then runs
    one image at a time). Only the outputs are looked at: a reshape that
    mixed images and was undone before them would pass (none in a ResNet)."""
    if not resized(interpreter, shapes, size):
        return False
    try:
        return all(tuple(interpreter.get_tensor(index).shape) == (size, *shape[1:])
                   for index, shape in output_shapes.items())
    except ValueError:  # an output whose shape is only known once the window runs
        return False


def channel_sums(values):
    """Per channel (the last axis), the sum of an int8 tensor's values."""
    return values.reshape(-1, values.shape[-1]).sum(axis=0, dtype=np.int64)


def biases_by_output(graph):
    """{output tensor name: bias tensor} of the operators of `graph` that have a bias."""
    return {graph.tensors[operator.outputs[0]].name.decode(): graph.tensors[operator.inputs[2]]
            for operator in graph.operators if len(operator.inputs) > 2 and operator.inputs[2] >= 0}


def shift_biases(model, shifts):
    """Add {output tensor name: float shift per channel} to those operators'
    int32 biases in the model object `model`: the shift over the bias's
    scale (input scale x weight scale, per channel), rounded. Returns the
    names of those shifted (a layer without a bias keeps none)."""
    biases = biases_by_output(model.subgraphs[0])
    shifted = [name for name in shifts if name in biases]
    for name in shifted:
        bias = biases[name]
        values = np.frombuffer(bytes(model.buffers[bias.buffer].data), np.int32).astype(np.int64)
        values = values + np.rint(shifts[name] / np.asarray(bias.quantization.scale, np.float64)).astype(np.int64)
        values = np.clip(values, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        model.buffers[bias.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
    return shifted


def model_inputs(graph, samples, count):
    """{graph input name: the `count` images of `samples` (an iterable) as
    the int8 model takes them, quantized, one row per image}."""
    from ..device.runtime import quantize

    tensor = graph.tensors[graph.inputs[0]]
    scale, zero_point = float(tensor.quantization.scale[0]), int(tensor.quantization.zeroPoint[0])
    values = np.empty((count, 1, *tensor.shape[1:]), np.int8)
    for image, sample in enumerate(samples):
        values[image] = quantize(np.asarray(sample, np.float32)[None], scale, zero_point, np.int8)
    return {tensor.name.decode(): values}


def int8_tensors(graph, indices):
    from ai_edge_litert import schema_py_generated as schema

    return [index for index in indices if graph.tensors[index].type == schema.TensorType.INT8]


def with_corrected_biases(int8_model_bytes, float_model_bytes, samples, count, float_means):
    """(the int8 TFLite, int8 input and output as litert-quantizer writes it,
    with its biases corrected part by part; the names of the layers
    shifted), or (the model unchanged, None) where its parts do not run one
    after another. `samples`: the `count` calibration images (an iterable);
    `float_means`: {tensor name: the float model's mean per channel over
    them} (ActivationStatistics.channel_means_by_name)."""
    correction = corrected_and_read(int8_model_bytes, float_model_bytes, samples, count, float_means)
    return correction.model, correction.shifted


@dataclass(frozen=True)
class Correction:
    model: bytes  # the int8 TFLite with its biases corrected (unchanged where shifted is None)
    shifted: list  # the names of the layers shifted, or None: the parts do not run one after another
    read: dict  # {tensor name: its int8 values on every image} of the tensors asked for, in the corrected model
    read_as_quantized: dict  # ... and in the model as quantized


def corrected_and_read(int8_model_bytes, float_model_bytes, samples, count, float_means, read=(), parts=None,
                       model=None):
    """with_corrected_biases as a Correction, with the int8 values on every
    image of the tensors `read` (indices in the int8 graph) in the model as
    quantized and as corrected: the one from a run of the whole model on the
    images the correction reads anyway, the other from the corrected parts'
    own runs and the operators after the last part. `parts`: the float
    model's correction_parts, `model`: the int8 model's object (changed in
    place), where the caller has them."""
    parts = parts or correction_parts(float_model_bytes)
    model = model or read_flatbuffer(int8_model_bytes)
    graph = model.subgraphs[0]
    windows = part_windows(graph, parts)
    if windows is None:
        return Correction(int8_model_bytes, None, {}, {})
    values = model_inputs(graph, samples, count)
    tensor_name = {index: tensor.name.decode() for index, tensor in enumerate(graph.tensors)}
    read_names = [tensor_name[index] for index in read]
    as_quantized = {}
    if read:
        content, inputs = window_model(model, 0, len(graph.operators), read)
        as_quantized, _ = run_window(content, [tensor_name[index] for index in inputs], values, count,
                                     carried=read_names)
    last_stop = windows[-1][1] if windows else 0
    # what is read after the last part (a softmax head's classifier, with no bias corrected, is in no part), kept
    # for the tensors `read` only
    read_after_parts = {index for operator in graph.operators[last_stop:] for index in operator.inputs
                        if index >= 0} | set(read) if read else set()
    shifted = []
    for (measured, _), (start, stop) in zip(parts, windows):
        written = [index for operator in graph.operators[start:stop] for index in operator.outputs]
        read_later = {index for operator in graph.operators[stop:last_stop] for index in operator.inputs
                      if index >= 0} | read_after_parts
        carried = [index for index in written if index in read_later]
        measured_indices = int8_tensors(graph, [index for index in written if tensor_name[index] in measured])
        content, inputs = window_model(model, start, stop, measured_indices)
        _, int8_means = run_window(content, [tensor_name[index] for index in inputs], values, count,
                                   measured=[tensor_name[index] for index in measured_indices])
        shifted += shift_biases(model, {name: float_means[name] - mean for name, mean in int8_means.items()})
        if carried:  # the corrected part's outputs, which the parts after it read
            content, inputs = window_model(model, start, stop, carried)
            kept, _ = run_window(content, [tensor_name[index] for index in inputs], values, count,
                                 carried=[tensor_name[index] for index in carried])
            still_read = {tensor_name[index] for index in read_later}
            values = {name: array for name, array in values.items() if name in still_read} | kept
    missing = [index for index in read if tensor_name[index] not in values]  # written after the last part
    if missing:
        content, inputs = window_model(model, last_stop, len(graph.operators), missing)
        kept, _ = run_window(content, [tensor_name[index] for index in inputs], values, count,
                             carried=[tensor_name[index] for index in missing])
        values = values | kept
    return Correction(flatbuffer_bytes(model), shifted, {name: values[name] for name in read_names}, as_quantized)


def float_channel_means(float_model_bytes, samples, names):
    """{tensor name: the float model's mean per channel on `samples` (an
    iterable of images)} for the tensors `names`: for statistics that did
    not keep them (a file saved before they were, or collected on other
    images)."""
    from ..device.runtime import tflite_interpreter
    from .statistics import added_channel_sums, exposed_model

    exposed, _ = exposed_model(float_model_bytes)
    interpreter = tflite_interpreter("the float model", threads=2, content=exposed)
    input_index = interpreter.get_input_details()[0]["index"]
    output = {detail["name"]: detail for detail in interpreter.get_output_details()}
    views = {name: interpreter.tensor(output[name]["index"]) for name in names}
    sums, images = dict.fromkeys(names), 0
    for sample in samples:
        interpreter.set_tensor(input_index, np.asarray(sample, np.float32)[None])
        interpreter.invoke()
        for name in names:  # no view held past this line: the next invoke would refuse
            sums[name] = added_channel_sums(sums[name], views[name]())
        images += 1
    return {name: sums[name] / (images * int(np.prod(output[name]["shape"][:-1]))) for name in names}


NEEDS_IMAGES = ("--bias-correction corrects the int8 biases on calibration images: give --calibration PATH with "
                "--statistics, or leave it out")
NOT_ASKED = "not asked for (--no-bias-correction)"
NO_IMAGES_REASON = "no calibration images to correct them on (--statistics without --calibration)"
OUT_OF_ORDER_REASON = "the network's parts do not run one after another in the int8 graph"
JUDGED_BY = ("the mean over the calibration images of each image's logits SQNR (a softmax head: its input, "
             "with logits under the floor of its int8 range, where it has one, raised to it)")
NO_LAYERS_REASON = "no int8 layer with an int32 bias to correct"
AGREEMENT_REASON = ("correcting them lowered the top-1 agreement with the float model on the {images} calibration "
                    "images, which the budget counts")


def check_images_for(recipe, calibration):
    """Refuse an explicit --bias-correction with no calibration images to correct on (nothing costly done yet)."""
    if corrects_biases(recipe) and recipe.bias_correction == "on" and calibration is None:
        raise ConfigError(NEEDS_IMAGES)


def corrects_biases(recipe):
    """Whether the int8 artifact of `recipe` may get its biases corrected (and so reads the calibration images)."""
    return recipe.mode == "int8" and recipe.bias_correction != "off"


def judged_tensor(model):
    """(index in the int8 graph, the tensor, floor or None, whether it is a
    softmax head's input) of what a correction is judged by: a softmax
    head's input (logits under the floor of its int8 range come out 0 either
    way), else the graph output. `model`: the int8 model's object."""
    from .statistics import output_softmax

    graph = model.subgraphs[0]
    softmax = output_softmax(model)
    if softmax is None:
        return graph.outputs[0], graph.tensors[graph.outputs[0]], None, False
    tensor = graph.tensors[softmax.inputs[0]]
    if not is_int8(tensor):  # a float head (a budget's part): no int8 range, no floor
        return softmax.inputs[0], tensor, None, True
    floor = float(tensor.quantization.scale[0]) * (-128 - int(tensor.quantization.zeroPoint[0]))
    return softmax.inputs[0], tensor, floor, True


def is_int8(tensor):
    from ai_edge_litert import schema_py_generated as schema

    return tensor.type == schema.TensorType.INT8


def judged_reference(float_model_bytes, statistics, calibration, softmax):
    """The float model's logits (a softmax head's input) or outputs on the
    calibration images: those the statistics pass kept when it ran on these
    images, else the float model run again."""
    from .int8_tflite import run_tflite_bytes, tflite_outputs_and_logits

    same_images = calibration.fingerprint == statistics.calibration.get("fingerprint")
    kept = statistics.float_logits if softmax else statistics.float_outputs
    if same_images and kept is not None and len(kept) == len(calibration):
        return kept
    images = np.stack(list(calibration.samples())).astype(np.float32, copy=False)
    if softmax:
        return tflite_outputs_and_logits(float_model_bytes, images)[1]
    return run_tflite_bytes(float_model_bytes, images, "the float model")


def judged_db(reference, int8_values, tensor, floor):
    """The mean over images of each image's SQNR of `int8_values` (an int8
    tensor's, dequantized by `tensor`'s quantization; a float one's as they
    are) against `reference`,
    both raised to `floor` where there is one."""
    from .mixed import per_image_mean_db

    values = np.asarray(int8_values, np.float64).reshape(len(reference), -1)
    if is_int8(tensor):
        values = float(tensor.quantization.scale[0]) * (values - int(tensor.quantization.zeroPoint[0]))
    reference = np.asarray(reference, np.float64).reshape(len(reference), -1)
    if floor is not None:
        values, reference = np.maximum(values, floor), np.maximum(reference, floor)
    return per_image_mean_db(reference, values)


def skipped_record(recipe, calibration):
    """The record of an int8 artifact whose biases are not corrected before
    any work (not asked for, no images to correct them on), or None where
    the correction runs."""
    mode = recipe.bias_correction
    if mode == "off":
        return {"corrected": False, "mode": mode, "reason": NOT_ASKED}
    if calibration is None:
        return {"corrected": False, "mode": mode, "reason": NO_IMAGES_REASON}
    return None


def guarded_record(mode, images, layers, scores=None, judged_by=JUDGED_BY, agreement=None):
    """(keep the correction?, the record): `scores` ({"as_quantized": dB,
    "corrected": dB} on the calibration images) decide in mode auto; under
    a budget that counts top-1 agreement or accuracy, `agreement` (the same
    keys: the share of those images whose top-1 is the float model's) must
    not fall either."""
    record = {"corrected": True, "images": images, "layers": layers, "mode": mode}
    if mode != "auto":
        return True, record
    record["calibration_sqnr_db"] = {key: round(value, 3) for key, value in scores.items()}
    record["judged_by"] = judged_by
    dropped = {**record, "corrected": False, "layers": 0}
    if not scores["corrected"] > scores["as_quantized"]:
        return False, {**dropped, "reason": f"correcting them did not raise their logits' mean per-image SQNR on "
                                            f"the {images} calibration images"}
    if agreement is not None:
        record["calibration_agreement"] = {key: round(value, 4) for key, value in agreement.items()}
        if agreement["corrected"] < agreement["as_quantized"]:
            return False, {**dropped, "calibration_agreement": record["calibration_agreement"],
                           "reason": AGREEMENT_REASON.format(images=images)}
    return True, record


def counts_top1(recipe):
    """Whether the recipe's budget counts top-1 (--min-agreement, --max-accuracy-drop)."""
    budget = recipe.budget()
    return budget is not None and (budget.min_agreement is not None or budget.max_accuracy_drop is not None)


def top1_agreement(reference, values):
    """The share of images whose top-1 in `values` is the one in `reference` (one row per image)."""
    count = len(reference)
    return float(np.mean(np.asarray(reference).reshape(count, -1).argmax(1)
                         == np.asarray(values).reshape(count, -1).argmax(1)))


def corrected_artifact(int8_model_bytes, float_model_bytes, recipe, calibration, statistics):
    """(the int8 TFLite, int8 input and output as litert-quantizer writes it,
    the record of what was done): its biases corrected on the calibration
    images (`calibration`, an ImageSet) unless the recipe says not to or
    (`auto`) the correction does not raise the logits' mean per-image SQNR
    on those images (JUDGED_BY). Parts a budget keeps out of int8 keep
    their biases; the int8 parts around them are corrected."""
    skipped = skipped_record(recipe, calibration)
    if skipped:
        return int8_model_bytes, skipped
    means = statistics.channel_means_by_name()
    if means is None or calibration.fingerprint != statistics.calibration.get("fingerprint"):
        means = float_channel_means(float_model_bytes, calibration.samples(),
                                    measured_names(correction_parts(float_model_bytes)))
    return guarded_correction(int8_model_bytes, float_model_bytes, calibration.samples(), len(calibration), means,
                              lambda softmax: judged_reference(float_model_bytes, statistics, calibration, softmax),
                              recipe.bias_correction, counts_top1(recipe))


def measured_names(parts):
    """The tensors whose float means per channel a correction of these correction_parts reads."""
    return [name for measured, _ in parts for name in measured]


def guarded_correction(int8_model_bytes, float_model_bytes, samples, count, float_means, reference_for, mode,
                       count_top1=False, parts=None):
    """(the int8 TFLite, its record): its biases corrected on the `count`
    images `samples` toward `float_means` (the float model's on them), kept
    in mode `auto` only where that raises the judged tensor's mean per-image
    SQNR against `reference_for(softmax head?)` (the float logits or outputs
    on those images), and where `count_top1` the top-1 agreement too.
    `parts`: the float model's correction_parts where the caller has them."""
    model = read_flatbuffer(int8_model_bytes)
    judged, tensor, floor, softmax = judged_tensor(model)
    guarded = mode == "auto"
    correction = corrected_and_read(int8_model_bytes, float_model_bytes, samples, count, float_means,
                                    read=[judged] if guarded else [], parts=parts, model=model)
    if correction.shifted is None:
        return int8_model_bytes, {"corrected": False, "mode": mode, "reason": OUT_OF_ORDER_REASON}
    if not correction.shifted:  # every layer with a bias kept out of int8
        return int8_model_bytes, {"corrected": False, "mode": mode, "reason": NO_LAYERS_REASON}
    scores, agreement = None, None
    if guarded:
        reference = reference_for(softmax)
        name = tensor.name.decode()
        values = {key: read[name] for key, read in (("as_quantized", correction.read_as_quantized),
                                                    ("corrected", correction.read))}
        scores = {key: judged_db(reference, value, tensor, floor) for key, value in values.items()}
        if count_top1:
            agreement = {key: top1_agreement(reference, value) for key, value in values.items()}
    keep, record = guarded_record(mode, count, len(correction.shifted), scores, agreement=agreement)
    return (correction.model if keep else int8_model_bytes), record


def fold_corrector(float_model_bytes, mode, count_top1=False):
    """For a budget's search: `for_images(images, reference_for)` -> a
    function that corrects a candidate (int8 TFLite bytes, int8 input and
    output: Route.make's) on `images` (the
    images its ranges came from) as the artifact is corrected on all of
    them (guarded_correction), the float means on them read once."""
    parts = correction_parts(float_model_bytes)

    def for_images(images, reference_for):
        means = float_channel_means(float_model_bytes, images, measured_names(parts))
        return lambda model: guarded_correction(model, float_model_bytes, images, len(images), means, reference_for,
                                                mode, count_top1, parts)[0]

    return for_images


def describe_correction(record):
    """One line on an artifact's bias_correction record, or None where nothing was recorded or it was not asked
    for."""
    if record is None or str(record.get("reason", "")).startswith("not asked for"):  # also session 45's records
        return None
    scores = record.get("calibration_sqnr_db")
    judged = (f"the logits' mean per-image SQNR on them {scores['as_quantized']:.2f} -> {scores['corrected']:.2f} dB"
              if scores else None)
    if record["corrected"]:
        return (f"biases of {record['layers']} layers corrected toward the float model's mean outputs on "
                f"{record['images']} calibration images" + (f" ({judged})" if judged else ""))
    agreement = record.get("calibration_agreement")
    if scores and agreement and agreement["corrected"] < agreement["as_quantized"]:
        return (f"biases as quantized: {record['reason']} ({agreement['as_quantized']:.1%} -> "
                f"{agreement['corrected']:.1%}, though {judged})")
    if scores:
        return (f"biases as quantized: correcting them did not raise the logits' mean per-image SQNR on the "
                f"{record['images']} calibration images ({scores['as_quantized']:.2f} -> {scores['corrected']:.2f} dB)")
    return f"biases as quantized ({record['reason']})"
