"""Empirical bias correction of a full-integer int8 TFLite: part by part in
graph order (the stem, each residual block, the head), every convolution and
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

import numpy as np

from ..quiet import native_output_silenced
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
    with the part after it)."""
    position = {}
    for at, operator in enumerate(graph.operators):
        position[";".join(graph.tensors[index].name.decode() for index in operator.outputs)] = at
    stops = [max(position[scope] for scope in scopes if scope in position) + 1 for _, scopes in parts]
    return list(zip([0, *stops[:-1]], stops))


def is_constant(model, tensor):
    return model.buffers[tensor.buffer].data is not None


def window_model(model, start, stop, outputs):
    """(bytes, input tensor indices) of the model object `model`'s operators
    start..stop-1 alone, reading what the operators before them wrote and
    writing the tensors `outputs`. Only their own weights come along."""
    graph = copy.copy(model.subgraphs[0])
    operators = graph.operators[start:stop]
    written = {index for operator in operators for index in operator.outputs}
    read = [index for operator in operators for index in operator.inputs if index >= 0]
    inputs = list(dict.fromkeys(index for index in read
                                if index not in written and not is_constant(model, graph.tensors[index])))
    graph.operators, graph.inputs, graph.outputs = operators, inputs, list(outputs)
    used = {graph.tensors[index].buffer for index in read}
    window = copy.copy(model)
    empty = copy.copy(model.buffers[0])  # buffer 0 is the empty one every model has
    window.buffers = [buffer if at in used else empty for at, buffer in enumerate(model.buffers)]
    window.subgraphs = [graph]
    window.signatureDefs = None  # they name the whole model's inputs and outputs
    return flatbuffer_bytes(window), inputs


def window_interpreter(content):
    from ..device.runtime import tflite_interpreter_module

    _, module = tflite_interpreter_module()
    with native_output_silenced():
        interpreter = module.Interpreter(model_content=content, num_threads=2)
        interpreter.allocate_tensors()
    return interpreter


def run_window(content, inputs, values, count, carried=(), measured=()):
    """Run a window_model on `count` images: `values` holds, per input
    tensor name, its value on each image. Returns ({carried tensor name: its
    values, one row per image}, {measured tensor name: the mean of its
    dequantized values per channel})."""
    interpreter = window_interpreter(content)
    input_index = {detail["name"]: detail["index"] for detail in interpreter.get_input_details()}
    output = {detail["name"]: detail for detail in interpreter.get_output_details()}
    views = {name: interpreter.tensor(output[name]["index"]) for name in {*carried, *measured}}
    kept = {name: np.empty((count, *output[name]["shape"]), output[name]["dtype"]) for name in carried}
    sums = {name: 0 for name in measured}
    for image in range(count):
        for name in inputs:
            interpreter.set_tensor(input_index[name], values[name][image])
        interpreter.invoke()
        for name in carried:
            kept[name][image] = views[name]()
        for name in measured:  # no view held past this line: the next invoke would refuse
            sums[name] = sums[name] + channel_sums(views[name]())
    means = {}
    for name in measured:
        scale, zero_point = output[name]["quantization"]
        rows = count * int(np.prod(output[name]["shape"][:-1]))
        means[name] = scale * (sums[name] / rows - zero_point)
    return kept, means


def channel_sums(values):
    """Per channel (the last axis), the sum of an int8 tensor's values (int32 holds one image's)."""
    return values.reshape(-1, values.shape[-1]).sum(axis=0, dtype=np.int32).astype(np.int64)


def biases_by_output(graph):
    """{output tensor name: bias tensor} of the operators of `graph` that have a bias."""
    return {graph.tensors[operator.outputs[0]].name.decode(): graph.tensors[operator.inputs[2]]
            for operator in graph.operators if len(operator.inputs) > 2 and operator.inputs[2] >= 0}


def shift_biases(model, shifts):
    """Add {output tensor name: float shift per channel} to those operators'
    int32 biases in the model object `model`: the shift over the bias's
    scale (input scale x weight scale, per channel), rounded."""
    biases = biases_by_output(model.subgraphs[0])
    for name, shift in shifts.items():
        if name not in biases:  # a layer without a bias keeps none
            continue
        bias = biases[name]
        values = np.frombuffer(bytes(model.buffers[bias.buffer].data), np.int32).astype(np.int64)
        values = values + np.rint(shift / np.asarray(bias.quantization.scale, np.float64)).astype(np.int64)
        values = np.clip(values, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        model.buffers[bias.buffer].data = np.frombuffer(values.tobytes(), np.uint8)


def model_inputs(graph, images):
    """{graph input name: the images as the int8 model takes them} (quantized where its input is)."""
    from ..device.runtime import quantize

    from ai_edge_litert import schema_py_generated as schema

    tensor = graph.tensors[graph.inputs[0]]
    values = np.asarray(images, np.float32)[:, None]
    quantization = tensor.quantization
    if quantization is not None and quantization.scale is not None and len(quantization.scale):
        dtype = np.uint8 if tensor.type == schema.TensorType.UINT8 else np.int8
        values = quantize(values, float(quantization.scale[0]), int(quantization.zeroPoint[0]), dtype)
    return {tensor.name.decode(): values}


def with_corrected_biases(int8_model_bytes, float_model_bytes, images, float_means):
    """The int8 TFLite (bytes) with its biases corrected part by part;
    `images`: the calibration images; `float_means`: {tensor name: the
    float model's mean per channel over them} (ActivationStatistics.channel_means)."""
    parts = correction_parts(float_model_bytes)
    model = read_flatbuffer(int8_model_bytes)
    graph = model.subgraphs[0]
    windows = part_windows(graph, parts)
    last_stop = windows[-1][1] if windows else 0
    values = model_inputs(graph, images)
    name = {index: graph.tensors[index].name.decode() for index in range(len(graph.tensors))}
    for (measured, _), (start, stop) in zip(parts, windows):
        read_later = {index for operator in graph.operators[stop:last_stop] for index in operator.inputs}
        carried = [index for operator in graph.operators[start:stop] for index in operator.outputs
                   if index in read_later]
        measured_indices = [index for operator in graph.operators[start:stop] for index in operator.outputs
                            if name[index] in measured]
        content, inputs = window_model(model, start, stop, dict.fromkeys(measured_indices + carried))
        _, int8_means = run_window(content, [name[index] for index in inputs], values, len(images),
                                   measured=[name[index] for index in measured_indices])
        shift_biases(model, {tensor: float_means[tensor] - mean for tensor, mean in int8_means.items()})
        if carried:
            content, inputs = window_model(model, start, stop, carried)
            kept, _ = run_window(content, [name[index] for index in inputs], values, len(images),
                                 carried=[name[index] for index in carried])
            still_read = {name[index] for index in read_later if index >= 0}
            values = {tensor: array for tensor, array in values.items() if tensor in still_read} | kept
    return flatbuffer_bytes(model)


def float_channel_means(float_model_bytes, images, names):
    """{tensor name: the float model's mean per channel on `images`} for the
    tensors `names`: for statistics that did not keep them (a file saved
    before they were, or collected on other images)."""
    from .statistics import added_channel_sums, exposed_model

    exposed, _ = exposed_model(float_model_bytes)
    interpreter = window_interpreter(exposed)
    input_index = interpreter.get_input_details()[0]["index"]
    output = {detail["name"]: detail["index"] for detail in interpreter.get_output_details()}
    views = {name: interpreter.tensor(output[name]) for name in names}
    sums = dict.fromkeys(names)
    for image in images:
        interpreter.set_tensor(input_index, np.asarray(image, np.float32)[None])
        interpreter.invoke()
        for name in names:
            sums[name] = added_channel_sums(sums[name], views[name]())
    return {name: total / (len(images) * np.prod(views[name]().shape[:-1])) for name, total in sums.items()}


NO_BUDGET_REASON = "an accuracy budget's parts are chosen on the int8 model as quantized"


def corrected_artifact(int8_model_bytes, float_model_bytes, recipe, calibration, statistics, budgeted=False):
    """(the int8 TFLite bytes, the record of what was done): its biases
    corrected on the calibration images (`calibration`, the ImageSet the
    `statistics` came from) unless the recipe says not to or a budget's
    search chose its parts (`budgeted`)."""
    from ..errors import ConfigError

    if not recipe.bias_correction:
        return int8_model_bytes, {"corrected": False, "reason": "--no-bias-correction"}
    if budgeted:
        return int8_model_bytes, {"corrected": False, "reason": NO_BUDGET_REASON}
    if calibration is None:
        raise ConfigError("the int8 biases are corrected on the calibration images: give --calibration PATH (with "
                          "--statistics, the images they came from), or --no-bias-correction")
    images = np.stack(list(calibration.samples())).astype(np.float32, copy=False)
    corrected = [name for names, _ in correction_parts(float_model_bytes) for name in names]
    means = statistics.channel_means_by_name()
    if means is None or calibration.fingerprint != statistics.calibration.get("fingerprint"):
        means = float_channel_means(float_model_bytes, images, corrected)
    return (with_corrected_biases(int8_model_bytes, float_model_bytes, images, means),
            {"corrected": True, "images": len(images), "layers": len(corrected)})


def describe_correction(record):
    """One line on an artifact's bias_correction record."""
    if record["corrected"]:
        return (f"biases of {record['layers']} layers corrected toward the float model's mean outputs on "
                f"{record['images']} calibration images")
    return f"biases as quantized ({record['reason']})"
