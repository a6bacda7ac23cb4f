"""The int8 biases corrected part by part toward the float model's mean
outputs on the calibration images (edge_resnet/quantize/bias_correction.py)."""

import dataclasses
import json

import numpy as np
import onnx
import pytest

from edge_resnet.quantize.bias_correction import (NOT_ASKED, biases_by_output, corrected_artifact,
                                                  correction_parts, describe_correction, float_channel_means,
                                                  shift_biases, with_corrected_biases)
from edge_resnet.quantize.int8_tflite import int8_tflite, run_tflite_bytes, write_int8_tflite
from edge_resnet.quantize.onnx_export import to_onnx
from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
from edge_resnet.quantize.recipe import QuantizationRecipe, record_path
from edge_resnet.quantize.statistics import ActivationStatistics, collect_statistics, flatbuffer_bytes, read_flatbuffer
from edge_resnet.quantize.tflite import float_tflite
from tests.cli import run_in_process
from tests.digits import softmax_twin

MINMAX = QuantizationRecipe(calibration_method="minmax", bias_correction="on")


@pytest.fixture(scope="module")
def float_model(folded):
    return float_tflite(folded)


@pytest.fixture(scope="module")
def calibration(digits_calibration):
    return digits_calibration.cached()


@pytest.fixture(scope="module")
def statistics(float_model, calibration):
    return collect_statistics(float_model, calibration)


@pytest.fixture(scope="module")
def images(calibration):
    return np.stack(list(calibration.samples()))


@pytest.fixture(scope="module")
def int8_model(float_model, statistics):
    return int8_tflite(float_model, activation_ranges(statistics, RangeMethod("minmax")), MINMAX)


def held_out_digits(count=300):
    from edge_resnet.data.preprocess import preprocess_input
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    pixels, _ = digit_pixels(32, count, offset=TRAIN_SAMPLES)
    return preprocess_input(pixels)


def plain_means(model_bytes, images, names):
    """{tensor name: its dequantized mean per channel}, the whole model run with every tensor exposed, by numpy."""
    from edge_resnet.check.layer_debug import tensor_values

    values = {name: [] for name in names}
    for image_values in tensor_values(model_bytes, images, set(names)):
        for name in names:
            values[name].append(image_values[name].reshape(-1, image_values[name].shape[-1]))
    return {name: np.concatenate(values[name]).astype(np.float64).mean(axis=0) for name in names}


def corrected(int8_model, float_model, images, means):
    content, shifted = with_corrected_biases(int8_model, float_model, iter(images), len(images), means)
    assert shifted is not None
    return content


def bias_bytes(content):
    """{output tensor name: its int32 bias's bytes} of a TFLite model."""
    model = read_flatbuffer(content)
    return {name: bytes(model.buffers[tensor.buffer].data)
            for name, tensor in biases_by_output(model.subgraphs[0]).items()}


def test_the_statistics_pass_keeps_each_channels_mean(float_model, statistics, images, tmp_path):
    """The float means the correction aims at come from the one statistics
    pass; a file keeps them, and one saved before they were kept still loads
    (the correction then runs the float model for them)."""
    means = statistics.channel_means_by_name()
    names = [tensor.name for tensor in statistics.tensors]
    seen = plain_means(float_model, images, names)
    for name in names:
        np.testing.assert_allclose(means[name], seen[name], rtol=1e-5, atol=1e-6, err_msg=name)
    loaded = ActivationStatistics.load(statistics.save(tmp_path / "statistics.npz"))
    assert all(np.array_equal(loaded.channel_means_by_name()[name], means[name]) for name in names)
    older = ActivationStatistics.load(dataclasses.replace(statistics, channel_means=None).save(tmp_path / "old.npz"))
    assert older.channel_means_by_name() is None and older.fingerprint() != statistics.fingerprint()


def test_each_part_runs_alone_on_what_the_part_before_wrote_as_the_whole_model_would(float_model, int8_model,
                                                                                     images):
    """The correction's parts, each run as a model of its own on the cached
    int8 tensors, shift every bias exactly as running the whole int8 model
    again after each part's correction does (the slow way, here)."""
    images = images[:40]
    parts = correction_parts(float_model)
    float_means = plain_means(float_model, images, [name for measured, _ in parts for name in measured])
    model = read_flatbuffer(int8_model)
    for measured, _ in parts:
        int8_means = plain_means(flatbuffer_bytes(model), images, measured)
        shift_biases(model, {name: float_means[name] - int8_means[name] for name in measured})
    slow = flatbuffer_bytes(model)
    assert slow != int8_model
    assert corrected(int8_model, float_model, images, float_means) == slow


def test_the_correction_takes_the_mean_error_out_and_holds_on_images_it_never_saw(folded, float_model, int8_model,
                                                                                  statistics, images):
    better = corrected(int8_model, float_model, images, statistics.channel_means_by_name())
    reference = run_tflite_bytes(float_model, images, "float")
    before = run_tflite_bytes(int8_model, images, "int8")
    after = run_tflite_bytes(better, images, "int8")
    # the logits' mean error per class on the calibration images: what the last part's correction takes out
    assert np.abs((reference - after).mean(0)).mean() < 0.5 * np.abs((reference - before).mean(0)).mean()
    evaluation = held_out_digits()
    float_outputs = np.asarray(folded.predict(evaluation, verbose=0))

    def sqnr(content):
        outputs = run_tflite_bytes(content, evaluation, "int8")
        return 10 * np.log10(np.sum(float_outputs**2) / np.sum((float_outputs - outputs) ** 2))

    assert sqnr(better) > sqnr(int8_model)


def test_a_softmax_heads_logits_keep_their_bias(folded, float_model, calibration, images):
    """The floor of the logits' int8 range clips logits the softmax ignores;
    their mean error is that clipping, not something to correct."""
    softmax_model = float_tflite(softmax_twin(folded))
    statistics = collect_statistics(softmax_model, calibration)
    logits = statistics.softmax_input.tensor
    corrected_names = [name for measured, _ in correction_parts(softmax_model) for name in measured]
    assert logits not in corrected_names
    assert len(corrected_names) == sum(len(measured) for measured, _ in correction_parts(float_model)) - 1
    int8 = int8_tflite(softmax_model, activation_ranges(statistics, RangeMethod("minmax")), MINMAX)
    after = corrected(int8, softmax_model, images[:40], statistics.channel_means_by_name())
    assert bias_bytes(after)[logits] == bias_bytes(int8)[logits] and after != int8


@pytest.mark.parametrize("input_type, output_type", [("float32", "float32"), ("uint8", "uint8")])
def test_every_input_and_output_type_gets_the_same_corrected_biases(float_model, statistics, calibration, tmp_path,
                                                                    input_type, output_type):
    """The correction runs on the int8-I/O model; the boundary types are added after it."""
    plain = write_int8_tflite(float_model, MINMAX, tmp_path / "int8.tflite", calibration, statistics)
    other = write_int8_tflite(float_model, dataclasses.replace(MINMAX, input_type=input_type, output_type=output_type),
                              tmp_path / "other.tflite", calibration, statistics)
    layers = sum(len(measured) for measured, _ in correction_parts(float_model))
    for path in (plain, other):
        assert json.loads(record_path(path).read_text())["bias_correction"]["layers"] == layers
    # in operator order (a float or uint8 output renames the classifier's int8 output "..._int8")
    assert list(bias_bytes(other.read_bytes()).values()) == list(bias_bytes(plain.read_bytes()).values())


def test_statistics_without_means_or_from_other_images_are_corrected_by_a_float_run(float_model, int8_model,
                                                                                    statistics, calibration):
    from edge_resnet.data.images import Preprocessing, images_from_array
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    quantized = int8_model  # int8 input and output: what the correction takes
    expected, record = corrected_artifact(quantized, float_model, MINMAX, calibration, statistics)
    assert record["corrected"] and record["images"] == len(calibration)
    older = dataclasses.replace(statistics, channel_means=None)
    assert corrected_artifact(quantized, float_model, MINMAX, calibration, older)[0] == expected
    pixels, _ = digit_pixels(32, 60, offset=TRAIN_SAMPLES)
    others = images_from_array(pixels, Preprocessing(32, 32), size=None).cached()
    from_others, _ = corrected_artifact(quantized, float_model, MINMAX, others, statistics)
    names = [name for measured, _ in correction_parts(float_model) for name in measured]
    assert from_others == corrected(quantized, float_model, list(others.samples()),
                                    float_channel_means(float_model, others.samples(), names)) != expected


def test_quantize_corrects_the_biases_when_asked_and_says_so(float_model, tmp_path):
    from edge_resnet.calibration import digits_folder

    source = tmp_path / "model_float32.tflite"
    source.write_bytes(float_model)
    common = ("quantize", source, "--calibration", digits_folder(), "--calibration-method", "minmax")
    # the flag takes no value: it may sit right before the model
    result = run_in_process("quantize", "--bias-correction", *common[1:], "--output", tmp_path / "corrected.tflite",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    layers = sum(len(measured) for measured, _ in correction_parts(float_model))
    assert f"biases of {layers} layers corrected toward the float model's mean outputs on 200 calibration images" \
        in result.stdout
    record = json.loads(record_path(tmp_path / "corrected.tflite").read_text())
    assert record["bias_correction"] == {"corrected": True, "images": 200, "layers": layers, "mode": "on"}
    assert record["recipe"]["bias_correction"] == "on"
    plain = run_in_process(*common, "--no-bias-correction", "--output", tmp_path / "plain.tflite", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "biases" not in plain.stdout  # not asked for: nothing said
    record = json.loads(record_path(tmp_path / "plain.tflite").read_text())
    assert record["bias_correction"] == {"corrected": False, "mode": "off", "reason": NOT_ASKED}
    assert record["recipe"]["bias_correction"] == "off"
    before, after = (bias_bytes((tmp_path / name).read_bytes()) for name in ("plain.tflite", "corrected.tflite"))
    assert {name for name in before if before[name] != after[name]} == \
        {name for measured, _ in correction_parts(float_model) for name in measured}
    assert differing_buffers(tmp_path / "plain.tflite", tmp_path / "corrected.tflite") == \
        {bias_buffer(tmp_path / "plain.tflite", name) for name in before if before[name] != after[name]}


def differing_buffers(first, second):
    buffers = [read_flatbuffer(path.read_bytes()).buffers for path in (first, second)]
    return {at for at, (one, other) in enumerate(zip(*buffers, strict=True))
            if (one.data is None) != (other.data is None)
            or one.data is not None and bytes(one.data) != bytes(other.data)}


def bias_buffer(path, name):
    return biases_by_output(read_flatbuffer(path.read_bytes()).subgraphs[0])[name].buffer


def test_the_onnx_records_say_whose_biases_it_holds(folded, float_model, statistics, calibration, tmp_path):
    from edge_resnet.quantize.onnx_bias_correction import biased_layers

    for route in ("ort", "tflite"):
        path = to_onnx(folded, MINMAX, calibration, output=tmp_path / f"{route}.onnx", route=route,
                       statistics=statistics, float_model=float_model)
        record = json.loads(record_path(path).read_text())["bias_correction"]
        # onnxruntime's route corrects its own QDQ graph, every Conv and Gemm; the TFLite route carries the TFLite's
        layers = (len(biased_layers(onnx.load(path))) if route == "ort"
                  else sum(len(m) for m, _ in correction_parts(float_model)))
        assert record == {"corrected": True, "images": len(calibration), "mode": "on", "layers": layers}
        assert layers >= 21  # the tests' ResNet-18: 20 convolutions and the classifier


def test_an_older_recipe_records_biases_as_quantized_and_a_boolean_one_reads_as_on_or_off():
    recipe = QuantizationRecipe(bias_correction="on").to_dict()
    del recipe["bias_correction"]
    assert QuantizationRecipe.from_dict(recipe).bias_correction == "off"
    assert QuantizationRecipe.from_dict({**recipe, "bias_correction": True}).bias_correction == "on"
    assert QuantizationRecipe.from_dict({**recipe, "bias_correction": False}).bias_correction == "off"
    assert QuantizationRecipe().bias_correction == "auto"
    assert QuantizationRecipe.for_mode("float16").bias_correction == "off"  # nothing to correct: said so
    assert QuantizationRecipe.for_mode("int8").bias_correction == "auto"
    from edge_resnet.errors import ConfigError

    with pytest.raises(ConfigError, match="bias_correction must be one of auto, on, off"):
        QuantizationRecipe.from_dict({**recipe, "bias_correction": "sometimes"})
    # what an artifact of session 45 made without the correction says: nothing
    assert describe_correction({"corrected": False, "reason": "not asked for (--bias-correction)"}) is None


@pytest.mark.parametrize("head", ["logits", "softmax"])
def test_auto_keeps_the_correction_only_where_it_raises_the_logits_mean_image_sqnr(folded, calibration, head):
    """`auto` (the default) judges the corrected model against the model as
    quantized on the calibration images, by the logits (a softmax head's
    input, floored at its int8 range's low) as numpy scores them on the
    whole models' own runs, and keeps whichever scores higher."""
    from edge_resnet.quantize.int8_tflite import tflite_outputs_and_logits

    keras_model = folded if head == "logits" else softmax_twin(folded)
    float_bytes = float_tflite(keras_model)
    statistics = collect_statistics(float_bytes, calibration)
    images = np.stack(list(calibration.samples()))
    int8 = int8_tflite(float_bytes, activation_ranges(statistics, RangeMethod("minmax")), MINMAX)
    always, _ = corrected_artifact(int8, float_bytes, MINMAX, calibration, statistics)
    chosen, record = corrected_artifact(int8, float_bytes, dataclasses.replace(MINMAX, bias_correction="auto"),
                                        calibration, statistics)

    def logits(content):
        if head == "logits":
            return run_tflite_bytes(content, images, "int8")
        return tflite_outputs_and_logits(content, images)[1]

    reference, before, after = logits(float_bytes), logits(int8), logits(always)
    if head == "softmax":
        model = read_flatbuffer(int8)
        from edge_resnet.quantize.statistics import output_softmax

        tensor = model.subgraphs[0].tensors[output_softmax(model).inputs[0]]
        floor = tensor.quantization.scale[0] * (-128 - tensor.quantization.zeroPoint[0])
        reference, before, after = (np.maximum(values, floor) for values in (reference, before, after))

    def mean_image_db(values):
        signal = np.sum(reference**2, axis=1)
        return np.mean(10 * np.log10(signal / np.sum((reference - values) ** 2, axis=1)))

    scores = record["calibration_sqnr_db"]
    assert scores["as_quantized"] == pytest.approx(mean_image_db(before), abs=2e-3)
    assert scores["corrected"] == pytest.approx(mean_image_db(after), abs=2e-3)
    assert record["corrected"] == (scores["corrected"] > scores["as_quantized"])
    assert chosen == (always if record["corrected"] else int8)
    if head == "logits":  # where the correction helps this model (benchmarks/results/corrected_biases.md), it is kept
        assert record["corrected"] and scores["corrected"] > scores["as_quantized"] + 0.1
    assert describe_correction(record).startswith("biases of" if record["corrected"] else "biases as quantized")


def test_auto_leaves_the_biases_as_quantized_where_the_correction_lowers_the_score(float_model, calibration,
                                                                                   statistics, int8_model):
    """A correction toward another model's means makes the int8 model worse:
    `auto` sees it on the calibration images and keeps the biases as they were."""
    wrong = dataclasses.replace(statistics, channel_means=tuple(means + 3.0 * (np.abs(means) + 1)
                                                                 for means in statistics.channel_means))
    content, record = corrected_artifact(int8_model, float_model, dataclasses.replace(MINMAX, bias_correction="auto"),
                                         calibration, wrong)
    assert content == int8_model
    assert not record["corrected"] and record["calibration_sqnr_db"]["corrected"] < \
        record["calibration_sqnr_db"]["as_quantized"]
    assert describe_correction(record).startswith("biases as quantized: correcting them did not raise")


def test_the_statistics_pass_keeps_a_softmax_heads_logits(folded, calibration, images, tmp_path):
    """What `auto` judges a softmax head's correction by comes from the one
    statistics pass: the float logits per image, kept in the file and
    refused there when damaged."""
    from edge_resnet.errors import DataError
    from edge_resnet.quantize.int8_tflite import tflite_outputs_and_logits

    softmax_model = float_tflite(softmax_twin(folded))
    statistics = collect_statistics(softmax_model, calibration)
    np.testing.assert_allclose(statistics.float_logits, tflite_outputs_and_logits(softmax_model, images)[1],
                               rtol=1e-5, atol=1e-5)
    loaded = ActivationStatistics.load(statistics.save(tmp_path / "softmax.npz"))
    assert np.array_equal(loaded.float_logits, statistics.float_logits)
    assert collect_statistics(float_tflite(folded), calibration).float_logits is None  # a logits head: its outputs
    damaged = statistics.float_logits.copy()
    damaged[3, 1] = np.nan
    path = dataclasses.replace(statistics, float_logits=damaged).save(tmp_path / "damaged.npz")
    with pytest.raises(DataError, match="logits hold a value that is not a finite number"):
        ActivationStatistics.load(path)


@pytest.mark.parametrize("head", ["logits", "softmax"])
def test_a_budgets_int8_parts_are_corrected_around_the_parts_it_keeps_float(folded, calibration, head):
    """A budget's artifact gets the default's correction too: its float32
    parts (here a block and the head, as `--output-type float32` lets the
    search keep them) keep their biases, the int8 parts around them are
    corrected, and the guard reads a float head's logits as they are."""
    from edge_resnet.quantize.int8_tflite import quantized_int8_io
    from edge_resnet.quantize.mixed import model_parts

    keras_model = folded if head == "logits" else softmax_twin(folded)
    float_bytes = float_tflite(keras_model)
    statistics = collect_statistics(float_bytes, calibration)
    parts = model_parts(float_bytes)
    kept = (*parts["conv3_block1"], *parts["head"])
    plain = quantized_int8_io(float_bytes, activation_ranges(statistics, RangeMethod("minmax")), True, kept, ())
    corrected, record = corrected_artifact(plain, float_bytes, dataclasses.replace(MINMAX, bias_correction="auto"),
                                           calibration, statistics)
    in_float = {name for measured, scopes in correction_parts(float_bytes) for name in measured if name in kept}
    always, always_record = corrected_artifact(plain, float_bytes, MINMAX, calibration, statistics)
    assert in_float and always_record["layers"] + len(in_float) == sum(
        len(measured) for measured, _ in correction_parts(float_bytes))
    from edge_resnet.quantize.int8_tflite import tflite_outputs_and_logits
    from edge_resnet.quantize.mixed import per_image_mean_db

    def logits(content):
        images = np.stack(list(calibration.samples()))
        return tflite_outputs_and_logits(content, images)[1] if head == "softmax" else \
            run_tflite_bytes(content, images, "int8")

    scores = record["calibration_sqnr_db"]
    assert scores["as_quantized"] == pytest.approx(per_image_mean_db(logits(float_bytes), logits(plain)), abs=2e-3)
    assert scores["corrected"] == pytest.approx(per_image_mean_db(logits(float_bytes), logits(always)), abs=2e-3)
    assert record["corrected"] == (scores["corrected"] > scores["as_quantized"])
    before, after = bias_bytes(plain), bias_bytes(always)
    changed = {name for name in before if before[name] != after[name]}
    assert changed and not changed & in_float
    assert corrected == (always if record["corrected"] else plain)


def reshaping_tflite(batch_in_target):
    """A float TFLite (bytes) of one image that convolves, then reshapes to
    a constant target: [1, 64] (one image only) or [-1, 64]."""
    import tensorflow as tf

    kernel = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 3, 4)), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 6, 6, 3], tf.float32)])
    def network(images):
        features = tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "VALID"))
        return tf.reshape(features, [1, 64] if batch_in_target else [-1, 64]) * 2.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions([network.get_concrete_function()], network)
    return converter.convert()


@pytest.mark.parametrize("batch_in_target", [True, False])
def test_a_part_runs_in_batches_where_it_can_and_one_image_at_a_time_where_it_cannot(batch_in_target):
    from edge_resnet.device.runtime import tflite_interpreter
    from edge_resnet.quantize.bias_correction import WINDOW_BATCH, batches, run_window, window_model

    content = reshaping_tflite(batch_in_target)
    model = read_flatbuffer(content)
    graph = model.subgraphs[0]
    window, inputs = window_model(model, 0, len(graph.operators), list(graph.outputs))
    interpreter = tflite_interpreter("window", content=window)
    shapes = {detail["index"]: detail["shape"] for detail in interpreter.get_input_details()}
    output_shapes = {detail["index"]: detail["shape"] for detail in interpreter.get_output_details()}
    assert batches(interpreter, shapes, output_shapes, WINDOW_BATCH) == (not batch_in_target)
    count = WINDOW_BATCH + 5  # a last batch smaller than the others
    images = np.random.default_rng(1).normal(size=(count, 1, 6, 6, 3)).astype(np.float32)
    name = graph.tensors[inputs[0]].name.decode()
    output = graph.tensors[graph.outputs[0]].name.decode()
    kept, _ = run_window(window, [name], {name: images}, count, carried=[output])
    alone = [run_tflite_bytes(content, image, "one image") for image in images]
    assert np.array_equal(kept[output].reshape(count, -1), np.concatenate(alone).reshape(count, -1))
