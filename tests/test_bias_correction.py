"""The int8 biases corrected part by part toward the float model's mean
outputs on the calibration images (edge_resnet/quantize/bias_correction.py)."""

import json

import numpy as np
import pytest

from edge_resnet.quantize.bias_correction import (correction_parts, float_channel_means, shift_biases,
                                                  with_corrected_biases)
from edge_resnet.quantize.int8_tflite import int8_tflite, run_tflite_bytes
from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
from edge_resnet.quantize.recipe import QuantizationRecipe, record_path
from edge_resnet.quantize.statistics import ActivationStatistics, collect_statistics, flatbuffer_bytes, read_flatbuffer
from edge_resnet.quantize.tflite import float_tflite
from tests.cli import run_in_process
from tests.digits import softmax_twin


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
    return int8_tflite(float_model, activation_ranges(statistics, RangeMethod("minmax")), QuantizationRecipe())


def held_out_digits(count=300):
    from edge_resnet.data.preprocess import preprocess_input
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    pixels, _ = digit_pixels(32, count, offset=TRAIN_SAMPLES)
    return preprocess_input(pixels)


def whole_model_means(model_bytes, images, names):
    """{tensor name: its dequantized mean per channel}, the whole int8 model run with every tensor exposed."""
    from edge_resnet.check.layer_debug import tensor_values

    sums = dict.fromkeys(names, 0)
    for values in tensor_values(model_bytes, images, set(names)):
        for name in names:
            sums[name] = sums[name] + values[name].reshape(-1, values[name].shape[-1]).astype(np.float64).sum(0)
    return {name: sums[name] / (len(images) * np.prod(values[name].shape[:-1])) for name in names}


def test_the_statistics_pass_keeps_each_channels_mean(float_model, statistics, calibration, images, tmp_path):
    """The float means the correction aims at come from the one statistics
    pass; a file keeps them, and one saved before they were kept still loads
    (the correction then runs the float model for them)."""
    import dataclasses

    means = statistics.channel_means_by_name()
    names = [tensor.name for tensor in statistics.tensors]
    seen = float_channel_means(float_model, images, names)
    for name in names:
        np.testing.assert_allclose(means[name], seen[name], rtol=1e-6, atol=1e-6, err_msg=name)
    loaded = ActivationStatistics.load(statistics.save(tmp_path / "statistics.npz"))
    assert all(np.array_equal(loaded.channel_means_by_name()[name], means[name]) for name in names)
    older = ActivationStatistics.load(dataclasses.replace(statistics, channel_means=None).save(tmp_path / "old.npz"))
    assert older.channel_means_by_name() is None and older.fingerprint() != statistics.fingerprint()


def test_each_part_runs_alone_on_what_the_part_before_wrote_as_the_whole_model_would(float_model, int8_model,
                                                                                     statistics, images):
    """The correction's parts, each run as a model of its own on the cached
    int8 tensors, shift every bias exactly as running the whole int8 model
    again after each part's correction does (the slow way, here)."""
    images = images[:40]
    parts = correction_parts(float_model)
    names = [name for measured, _ in parts for name in measured]
    float_means = float_channel_means(float_model, images, names)
    model = read_flatbuffer(int8_model)
    for measured, _ in parts:
        int8_means = whole_model_means(flatbuffer_bytes(model), images, measured)
        shift_biases(model, {name: float_means[name] - int8_means[name] for name in measured})
    slow = flatbuffer_bytes(model)
    assert slow != int8_model
    assert with_corrected_biases(int8_model, float_model, images, float_means) == slow


def test_the_correction_takes_the_mean_error_out_and_holds_on_images_it_never_saw(folded, float_model, int8_model,
                                                                                  statistics, images):
    corrected = with_corrected_biases(int8_model, float_model, images, statistics.channel_means_by_name())
    reference = run_tflite_bytes(float_model, images, "float")
    before = run_tflite_bytes(int8_model, images, "int8")
    after = run_tflite_bytes(corrected, images, "int8")
    # the logits' mean error per class on the calibration images: what the last part's correction takes out
    assert np.abs((reference - after).mean(0)).mean() < 0.5 * np.abs((reference - before).mean(0)).mean()
    evaluation = held_out_digits()
    float_outputs = np.asarray(folded.predict(evaluation, verbose=0))

    def sqnr(outputs):
        return 10 * np.log10(np.sum(float_outputs**2) / np.sum((float_outputs - outputs) ** 2))

    assert sqnr(run_tflite_bytes(corrected, evaluation, "int8")) > sqnr(run_tflite_bytes(int8_model, evaluation,
                                                                                         "int8"))


def test_a_softmax_heads_logits_keep_their_bias(folded, float_model, calibration):
    """The floor of the logits' int8 range clips logits the softmax ignores;
    their mean error is that clipping, not something to correct."""
    softmax_model = float_tflite(softmax_twin(folded))
    statistics = collect_statistics(softmax_model, calibration)
    logits = statistics.softmax_input.tensor
    parts = correction_parts(softmax_model)
    corrected = [name for measured, _ in parts for name in measured]
    assert logits not in corrected
    assert len(corrected) == sum(len(measured) for measured, _ in correction_parts(float_model)) - 1
    int8 = int8_tflite(softmax_model, activation_ranges(statistics, RangeMethod("minmax")), QuantizationRecipe())
    images = np.stack(list(calibration.samples()))[:40]
    after = with_corrected_biases(int8, softmax_model, images, statistics.channel_means_by_name())

    def logits_bias(content):
        from edge_resnet.quantize.bias_correction import biases_by_output

        model = read_flatbuffer(content)
        return bytes(model.buffers[biases_by_output(model.subgraphs[0])[logits].buffer].data)

    assert logits_bias(after) == logits_bias(int8) and after != int8


def test_quantize_corrects_the_biases_says_so_and_can_be_told_not_to(float_model, tmp_path):
    from edge_resnet.calibration import digits_folder

    source = tmp_path / "model_float32.tflite"
    source.write_bytes(float_model)
    common = ("quantize", source, "--calibration", digits_folder(), "--calibration-method", "minmax")
    result = run_in_process(*common, "--output", tmp_path / "corrected.tflite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    layers = sum(len(measured) for measured, _ in correction_parts(float_model))
    assert f"biases: biases of {layers} layers corrected toward the float model's mean outputs on 200 " \
           "calibration images" in result.stdout
    record = json.loads(record_path(tmp_path / "corrected.tflite").read_text())
    assert record["bias_correction"] == {"corrected": True, "images": 200, "layers": layers}
    assert record["recipe"]["bias_correction"] is True
    plain = run_in_process(*common, "--no-bias-correction", "--output", tmp_path / "plain.tflite", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "biases: biases as quantized (--no-bias-correction)" in plain.stdout
    assert differing_buffers(tmp_path / "plain.tflite", tmp_path / "corrected.tflite") == corrected_biases(
        tmp_path / "plain.tflite", float_model)


def differing_buffers(first, second):
    buffers = [read_flatbuffer(path.read_bytes()).buffers for path in (first, second)]
    return {at for at, (one, other) in enumerate(zip(*buffers, strict=True))
            if (one.data is None) != (other.data is None) or one.data is not None and bytes(one.data) != bytes(other.data)}


def corrected_biases(path, float_model):
    """The buffers of the biases the correction shifts."""
    from edge_resnet.quantize.bias_correction import biases_by_output

    biases = biases_by_output(read_flatbuffer(path.read_bytes()).subgraphs[0])
    return {biases[name].buffer for measured, _ in correction_parts(float_model) for name in measured}


def test_an_older_recipe_records_biases_as_quantized():
    recipe = QuantizationRecipe().to_dict()
    del recipe["bias_correction"]
    assert QuantizationRecipe.from_dict(recipe).bias_correction is False
