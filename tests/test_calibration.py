"""The toolkit's own calibration: one statistics pass on the float .tflite,
range methods, int8 TFLite through litert-quantizer and ONNX through
onnxruntime from the same ranges, and the TensorFlow-free route."""

import dataclasses
import json
import warnings

import numpy as np
import pytest

from edge_resnet.errors import ConfigError, DataError, ModelError
from edge_resnet.quantize.bias_correction import NO_IMAGES_REASON
from edge_resnet.quantize.int8_tflite import read_float_tflite
from edge_resnet.quantize.ranges import (METHODS, RULES, RangeMethod, activation_ranges, quantile,
                                        ranges_fingerprint)
from edge_resnet.quantize.recipe import QuantizationRecipe, record_path
from edge_resnet.quantize.statistics import ActivationStatistics, collect_statistics, exposed_model
from edge_resnet.quantize.tflite import float_tflite, to_tflite
from tests.cli import run_in_process, run_without_tensorflow
from tests.digits import softmax_twin


@pytest.fixture(scope="module")
def float_model(folded):
    return float_tflite(folded)


@pytest.fixture(scope="module")
def statistics(float_model, digits_calibration):
    return collect_statistics(float_model, digits_calibration.cached())


@pytest.fixture(scope="module")
def softmax_keras(folded):
    return softmax_twin(folded)


@pytest.fixture(scope="module")
def softmax_float_model(softmax_keras):
    return float_tflite(softmax_keras)


@pytest.fixture(scope="module")
def softmax_statistics(softmax_float_model, digits_calibration):
    return collect_statistics(softmax_float_model, digits_calibration.cached())


def every_activation(float_model, calibration):
    """{tensor name: all its values over the calibration set}, the slow way."""
    from ai_edge_litert.interpreter import Interpreter

    exposed, names = exposed_model(float_model)
    interpreter = Interpreter(model_content=exposed)
    interpreter.allocate_tensors()
    index = {detail["name"]: detail["index"] for detail in interpreter.get_output_details()}
    values = {name: [] for name in names}
    for sample in calibration.samples():
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample[None])
        interpreter.invoke()
        for name in names:
            values[name].append(interpreter.get_tensor(index[name]).ravel())
    return {name: np.concatenate(parts) for name, parts in values.items()}


def converter_ranges(float_model, calibration):
    """The TF converter's own calibrator (private API, used only here, as the
    oracle): {tensor name: (min, max)} it records."""
    from ai_edge_litert.tools import flatbuffer_utils
    from tensorflow.lite.python.optimize import calibrator

    def samples():
        for sample in calibration.samples():
            yield [sample[None]]

    calibrated = calibrator.Calibrator(calibrator.add_intermediate_tensors(float_model)).calibrate(samples)
    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated)).subgraphs[0]
    return {tensor.name.decode(): (float(tensor.quantization.min[0]), float(tensor.quantization.max[0]))
            for tensor in graph.tensors
            if tensor.quantization is not None and tensor.quantization.min is not None
            and len(tensor.quantization.min)}


def readers_outputs(float_model):
    """{tensor name: names of the outputs of the operators that read it}."""
    from edge_resnet.quantize.statistics import read_flatbuffer

    graph = read_flatbuffer(float_model).subgraphs[0]
    readers = {}
    for op in graph.operators:
        for index in op.inputs:
            if index >= 0:
                readers.setdefault(graph.tensors[index].name.decode(), []).extend(
                    graph.tensors[output].name.decode() for output in op.outputs)
    return readers


def test_minmax_reproduces_the_tflite_converters_ranges(float_model, statistics, digits_calibration):
    """Equal to the converter's calibrator everywhere but where it is wrong:
    its reference ADD kernel writes the sum into the buffer of a convolution
    output it reads, and the calibrator logs that buffer after the ADD ran,
    so it records max(conv output, sum) as the convolution's maximum. Ours
    is the convolution output's own (checked value by value elsewhere)."""
    oracle = converter_ranges(float_model, digits_calibration)
    ours = activation_ranges(statistics, RangeMethod("minmax"))
    assert set(ours) == set(oracle), "the same activation tensors"
    readers = readers_outputs(float_model)
    clobbered = 0
    for name, (low, high) in oracle.items():
        close = dict(rel=1e-4, abs=1e-5)  # reference kernels vs XNNPACK: summation order
        if ours[name] == pytest.approx((low, high), **close):
            continue
        assert ours[name][0] == pytest.approx(low, **close) and ours[name][1] < high, name
        (sum_name,) = readers[name]
        assert high == pytest.approx(max(ours[name][1], ours[sum_name][1]), **close), name
        clobbered += 1
    assert clobbered < len(oracle) // 2


def test_statistics_match_the_activations_seen(float_model, statistics, digits_calibration):
    values = every_activation(float_model, digits_calibration)
    assert statistics.samples == len(digits_calibration)
    for tensor in statistics.tensors:
        seen = values[tensor.name]
        assert (tensor.minimum, tensor.maximum) == (seen.min(), seen.max())
        assert tensor.count == seen.size and tensor.counts.sum() == seen.size  # small tensors: no sampling
        for fraction in (0.5, 0.99, 0.9999):
            below, above = (np.quantile(seen, fraction, method=method) for method in ("lower", "higher"))
            bin_width = 2**-7 * max(abs(below), abs(above)) + 1e-7  # 7 mantissa bits
            assert below - bin_width <= quantile(tensor, fraction) <= above + bin_width, (tensor.name, fraction)


def test_statistics_round_trip_through_a_file(statistics, tmp_path):
    path = statistics.save(tmp_path / "statistics.npz")
    loaded = ActivationStatistics.load(path)
    assert loaded.fingerprint() == statistics.fingerprint()
    assert loaded.graph_inputs == statistics.graph_inputs and loaded.samples == statistics.samples
    for method in RULES:
        assert activation_ranges(loaded, RangeMethod(method)) == activation_ranges(statistics, RangeMethod(method))
    assert [fold.positions for fold in loaded.folds] == [fold.positions for fold in statistics.folds]
    for method in RULES:  # what auto fits each rule on: every fold but one
        assert activation_ranges(loaded.fitting_part(1), RangeMethod(method)) == \
            activation_ranges(statistics.fitting_part(1), RangeMethod(method))
    with np.load(path, allow_pickle=False) as data:
        assert "header" in data.files  # readable without pickle
    assert np.array_equal(loaded.float_outputs, statistics.float_outputs)


def test_the_statistics_pass_keeps_the_float_models_outputs(float_model, statistics, digits_calibration, tmp_path):
    """What auto and the float-parts search compare candidates with, without
    running the float model again; a file saved before they were kept still
    serves (the float model is run then)."""
    import dataclasses

    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.selection import calibration_inputs, float_reference

    inputs = calibration_inputs(digits_calibration, statistics)
    again = run_tflite_bytes(float_model, inputs, "the float model")
    assert statistics.float_outputs.shape == again.shape
    np.testing.assert_allclose(statistics.float_outputs, again, rtol=1e-5, atol=1e-5)
    assert float_reference(float_model, statistics, inputs) is statistics.float_outputs
    older = dataclasses.replace(statistics, float_outputs=None)
    np.testing.assert_array_equal(float_reference(float_model, older, inputs), again)
    loaded = ActivationStatistics.load(older.save(tmp_path / "older.npz"))
    assert loaded.float_outputs is None and loaded.fingerprint() == older.fingerprint() != statistics.fingerprint()
    assert activation_ranges(loaded, RangeMethod("mse")) == activation_ranges(statistics, RangeMethod("mse"))


def test_the_float_parts_search_scores_every_sample_by_ranges_without_it(statistics):
    from edge_resnet.quantize.mixed import cross_fits

    method = RangeMethod("percentile", percentile=99.99)
    layout = cross_fits(statistics, method)
    assert sorted(p for _, positions in layout for p in positions) == list(range(statistics.samples))
    for fold, (ranges, positions) in enumerate(layout):
        assert positions == list(statistics.folds[fold].positions)
        assert ranges == activation_ranges(statistics.fitting_part(fold), method)


def test_range_methods_order_as_designed(statistics):
    name = statistics.graph_outputs[0]
    ranges = {method: activation_ranges(statistics, RangeMethod(method))[name] for method in RULES}
    low, high = ranges["minmax"]
    assert ranges["percentile"][1] <= high and ranges["mse"][1] <= high
    assert ranges["extrapolated"][1] >= high and ranges["extrapolated"][0] <= low
    steady = statistics.graph_inputs[0]  # caffe-preprocessed digits reach the same extremes in every image
    assert activation_ranges(statistics, RangeMethod("extrapolated"))[steady] == pytest.approx(
        activation_ranges(statistics, RangeMethod("minmax"))[steady], rel=0.05)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_makes_a_fully_integer_deterministic_model(folded, float_model, statistics, method,
                                                                digits_calibration, tmp_path):
    from edge_resnet.device.tflite_inspect import inspect_tflite

    recipe = QuantizationRecipe(calibration_method=method)
    first = to_tflite(folded, recipe, digits_calibration, output=tmp_path / "a.tflite", statistics=statistics,
                      float_model=float_model)
    again = to_tflite(folded, recipe, digits_calibration, output=tmp_path / "b.tflite", statistics=statistics,
                      float_model=float_model)
    assert first.read_bytes() == again.read_bytes()
    structure = inspect_tflite(first)
    assert structure.fully_integer and structure.fully_delegated
    record = json.loads(record_path(first).read_text())
    assert record["activation_ranges"]["method"] == method
    assert record["activation_ranges"]["statistics"]["fingerprint"] == statistics.fingerprint()


def test_an_int8_model_is_written_back_as_the_litert_library_writes_it(float_model, statistics):
    """read_flatbuffer hands buffer data over as arrays, which the flatbuffers
    library copies whole instead of a byte at a time: the bytes must not change."""
    from ai_edge_litert.tools import flatbuffer_utils

    from edge_resnet.quantize.int8_tflite import quantized_int8_io, rewritten

    quantized = quantized_int8_io(float_model, activation_ranges(statistics, RangeMethod("minmax")))
    by_the_library = flatbuffer_utils.convert_object_to_bytearray(
        flatbuffer_utils.read_model_from_bytearray(bytearray(quantized)))
    assert rewritten(quantized) == bytes(by_the_library)


def sqnr_db(reference, candidate):
    return 10 * np.log10(np.sum(reference**2) / np.sum((reference - candidate) ** 2))


def held_out(count=300):
    from edge_resnet.data.preprocess import preprocess_input
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    pixels, _ = digit_pixels(32, count, offset=TRAIN_SAMPLES)
    return preprocess_input(pixels)


def test_both_formats_share_one_set_of_ranges(folded, float_model, statistics, tmp_path):
    import onnx

    from edge_resnet.quantize.onnx_export import to_onnx
    from edge_resnet.device.runtime import open_runner

    recipe = QuantizationRecipe(calibration_method="extrapolated")
    tflite = to_tflite(folded, recipe, output=tmp_path / "m.tflite", statistics=statistics, float_model=float_model)
    onnx_path = to_onnx(folded, recipe, output=tmp_path / "m.onnx", statistics=statistics, float_model=float_model)
    records = [json.loads(record_path(path).read_text())["activation_ranges"] for path in (tflite, onnx_path)]
    assert records[0] == records[1]
    # the (transposed) ONNX input is quantized on the TFLite input's range (uint8: the zero point moves)
    low, high = activation_ranges(statistics, recipe.range_method())[statistics.graph_inputs[0]]
    graph = onnx.load(onnx_path).graph
    quantize_input = next(node for node in graph.node if node.op_type == "QuantizeLinear")
    scale = next(onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name == quantize_input.input[1])
    assert float(scale) == pytest.approx((max(high, 0) - min(low, 0)) / 255, rel=1e-5)
    images = held_out()
    reference = np.asarray(folded.predict(images, verbose=0))
    for path in (tflite, onnx_path):
        logits = open_runner(path).predict(images)
        assert np.mean(logits.argmax(1) == reference.argmax(1)) >= 0.97, path.name
        assert sqnr_db(reference, logits) > 15, path.name


def test_statistics_of_another_model_are_refused(folded, statistics, tmp_path):
    from edge_resnet.model.resnet import build_resnet

    other = float_tflite(build_resnet(18, input_shape=(32, 32, 3), classes=10, width=0.25, seed=7))
    with pytest.raises(ConfigError, match="collected on another model"):
        to_tflite(folded, QuantizationRecipe(), output=tmp_path / "x.tflite", statistics=statistics,
                  float_model=other)
    assert not list(tmp_path.iterdir())


def test_bad_methods_and_parameters_are_refused():
    with pytest.raises(ConfigError, match="must be one of auto, minmax"):
        RangeMethod("entropy")
    for bad in (101, 50, float("nan"), "99"):
        with pytest.raises(ConfigError, match="percentile must be above 50"):
            RangeMethod("percentile", percentile=bad)
    with pytest.raises(ConfigError, match="extrapolation must be between"):
        QuantizationRecipe(extrapolation=-1)


def test_unreadable_statistics_file_is_refused(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read .* as edge-resnet statistics"):
        ActivationStatistics.load(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="not found"):
        ActivationStatistics.load(tmp_path / "missing.npz")


def test_a_model_that_computes_nan_is_refused_by_the_statistics_pass(digits_calibration):
    import keras

    from edge_resnet.data.images import subset

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, name="logits")])
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[0, 0, 0, 1] = np.nan  # a damaged weight
    model.get_layer("conv").set_weights([kernel, bias])
    with pytest.raises(ModelError, match="not finite numbers .* on the calibration images, first at .*conv") as error:
        collect_statistics(float_tflite(model), subset(digits_calibration, 0, 16))
    assert "check the weights" in str(error.value) and "\n" not in str(error.value)
    # non-finite samples (which the image readers refuse) are the samples' fault, not the model's
    model.get_layer("conv").set_weights([np.nan_to_num(kernel), bias])
    samples = subset(digits_calibration, 0, 16).cached()
    broken = samples.decoded.copy()
    broken[3, 0, 0, 0] = np.inf
    with pytest.raises(DataError, match="calibration samples reach the model's input .* not finite .* preprocessing"):
        collect_statistics(float_tflite(model), dataclasses.replace(samples, decoded=broken))


def test_a_damaged_or_edited_statistics_file_is_refused_before_it_makes_ranges(statistics, tmp_path):
    """NaN or infinite extremes once went into an artifact and aborted the process reading it back."""
    with np.load(statistics.save(tmp_path / "statistics.npz"), allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    header = json.loads(str(arrays["header"]))

    def edited(name, older=False, header_changes=None, **changes):
        saved = {**arrays, **changes}
        if older:  # a format-2 file, whose fingerprint (if any) is not checked: the arrays' own checks still hold
            saved["header"] = np.asarray(json.dumps({**header, "format_version": 2}))
        if header_changes is not None:
            saved["header"] = np.asarray(json.dumps({key: value for key, value in {**header, **header_changes}.items()
                                                     if value is not None}))
        np.savez(tmp_path / name, **saved)
        return tmp_path / name

    maxima, minima = arrays["sample_maxima"].copy(), arrays["sample_minima"].copy()
    maxima[3, 5], minima[2, 1] = np.nan, 1e30
    for path, problem in ((edited("nan.npz", older=True, sample_maxima=maxima), "not a finite number"),
                          (edited("upside_down.npz", older=True, sample_minima=minima), "minimum lies above"),
                          (edited("short.npz", codes=arrays["codes"][:-100], counts=arrays["counts"][:-100]),
                           "histogram bins do not add up"),
                          (edited("header.npz", header=np.asarray("{not json")), "its header is not JSON"),
                          (edited("means.npz", older=True, channel_means=arrays["channel_means"][:-1]),
                           "per-channel means disagree"),
                          (edited("infinite_means.npz", older=True,
                                  channel_means=np.full_like(arrays["channel_means"], np.inf)),
                           "per-channel means disagree")):
        with pytest.raises(DataError, match=problem) as error:
            ActivationStatistics.load(path)
        assert "collect them again" in str(error.value) and "\n" not in str(error.value)
    fold_of_sample = arrays["fold_of_sample"].copy()
    fold_of_sample[fold_of_sample == 3] = 0  # one fold fewer than the fold arrays hold
    for path, problem in ((edited("folds.npz", older=True, fold_of_sample=fold_of_sample), "folds disagree"),
                          (edited("fold_bins.npz", older=True, fold_counts=arrays["fold_counts"][:-1]),
                           "folds' histogram bins do not add up")):
        with pytest.raises(DataError, match=problem):
            ActivationStatistics.load(path)
    # plausible edits, each of a part the ranges or the scoring read: refused by the fingerprint of all a file holds
    raised = np.where(arrays["sample_maxima"] > 0, arrays["sample_maxima"] * 2, arrays["sample_maxima"])
    for path in (edited("raised.npz", sample_maxima=raised),
                 edited("outputs.npz", float_outputs=arrays["float_outputs"] + 1e-3),
                 edited("means_moved.npz", channel_means=arrays["channel_means"] + 1e-3),
                 edited("inputs.npz", header_changes={"graph_inputs": ["another"]}),
                 edited("calibration.npz", header_changes={"calibration": {**header["calibration"], "seed": 7}})):
        with pytest.raises(DataError, match="content fingerprint differs"):
            ActivationStatistics.load(path)
    with pytest.raises(DataError, match="header lacks the content fingerprint"):  # deleting it is no way around it
        ActivationStatistics.load(edited("unsigned.npz", header_changes={"fingerprint": None}))
    assert ActivationStatistics.load(edited("older.npz", older=True)).fingerprint() == statistics.fingerprint()


def test_only_a_float_tflite_can_be_quantized(folded, digits_calibration, tmp_path):
    int8 = to_tflite(folded, QuantizationRecipe(), digits_calibration, output=tmp_path / "int8.tflite", progress=False)
    with pytest.raises(ModelError, match="not a float32 model"):
        read_float_tflite(int8)
    (tmp_path / "junk.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(ModelError):
        read_float_tflite(tmp_path / "junk.tflite")


def test_quantize_a_float_tflite_without_tensorflow(float_model, statistics, digits_calibration, tmp_path):
    """The device-side route: float32 .tflite + images in, int8 .tflite out,
    in a process where TensorFlow and Keras cannot be imported; the same
    bytes as the Keras route, and statistics saved for another method."""
    from edge_resnet.calibration import digits_folder

    source = tmp_path / "model_float32.tflite"
    source.write_bytes(float_model)
    result = run_without_tensorflow(tmp_path, "quantize", source, "--calibration", digits_folder(),
                                    "--output", tmp_path / "model_int8.tflite", "--save-statistics",
                                    tmp_path / "statistics.npz")
    assert result.returncode == 0, result.stderr
    assert "fully integer: yes" in result.stdout
    again = run_without_tensorflow(tmp_path, "quantize", source, "--statistics", tmp_path / "statistics.npz",
                                   "--calibration-method", "minmax", "--output", tmp_path / "minmax.tflite")
    assert again.returncode == 0, again.stderr
    assert "calibrating" not in again.stderr
    record = json.loads(record_path(tmp_path / "minmax.tflite").read_text())
    assert record["activation_ranges"]["method"] == "minmax" and "tensorflow" not in record["versions"]
    # statistics alone: no images to correct the biases on, and the default says so instead of refusing
    assert record["bias_correction"] == {"corrected": False, "mode": "auto", "reason": NO_IMAGES_REASON}
    assert f"biases as quantized ({NO_IMAGES_REASON})" in again.stdout


@pytest.mark.parametrize("arguments, message", [
    (["--calibration-method", "entropy"], "invalid choice"),
    (["--percentile", "120", "--calibration-method", "percentile"], "percentile must be above 50"),
    (["--statistics", "nowhere.npz"], "statistics file not found"),
    (["--statistics", "model.tflite"], "auto (the default) runs each rule on the calibration images"),
    (["--quantize", "float16", "--calibration-method", "mse"], "apply to --quantize int8 only"),
    (["--calibration", "x", "--save-statistics", "stats.json"], "must end in .npz"),
    (["--statistics", "model.tflite", "--calibration-method", "minmax", "--bias-correction"],
     "--bias-correction corrects the int8 biases on calibration images: give --calibration PATH with --statistics"),
    (["--quantize", "float16", "--bias-correction"], "--bias-correction applies to --quantize int8 only"),
    (["--tail-room", "0.5", "--calibration-method", "minmax"], "tail room must be how many times"),
    (["--tail-room", "10", "--calibration-method", "percentile"], "percentile clips them on purpose"),
    (["--quantize", "float16", "--tail-room", "10"], "--tail-room and --calibration-score apply to --quantize int8"),
    (["--calibration-score", "per-image", "--calibration-method", "mse"],
     "--calibration-method mse tries none: leave --calibration-score out or use --calibration-method auto"),
    (["--calibration-score", "typical"], "invalid choice"),
    (["--percentile", "99.9", "--calibration-method", "minmax"],
     "--percentile sets the percentile rule, and --calibration-method is minmax, which does not read it"),
    (["--percentile", "99.9"], "--calibration-method is auto (the default), which does not read it"),
    (["--extrapolation", "0.5", "--calibration-method", "percentile"],
     "add --calibration-method extrapolated or leave --extrapolation out"),
    (["--statistics", "."], "is a folder: give the .npz file in it"),
    (["--calibration", "x", "--classes", "7"], "--classes for a .tflite MODEL, which carries its own weights"),
    (["--calibration", "x", "--labels", "model.tflite"], "add --max-accuracy-drop or leave --labels out"),
    (["--calibration", "x", "--labels", "labels.txt", "--max-accuracy-drop", "1"], "labels file not found"),
    # ONNX options for a .tflite were once dropped without a word
    (["--calibration", "x", "--opset", "13"], "--opset: for an .onnx --output, and "),
    (["--calibration", "x", "--activation-type", "int8", "--full-range", "--onnx-format", "qoperator"],
     "--activation-type, --onnx-format, --full-range: for an .onnx --output, and "),
])
def test_cli_refuses_bad_range_options_in_one_line(arguments, message, tmp_path, float_model):
    source = tmp_path / "model.tflite"
    source.write_bytes(float_model)
    result = run_in_process("quantize", source, "--output", tmp_path / "out.tflite", *arguments, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.tflite").exists()


def test_labels_files_that_cannot_name_the_outputs_are_refused_before_any_work(tmp_path, float_model):
    """No UTF-8 text: refused before the statistics pass. A name given twice maps a class folder of that name
    to two outputs: refused where a folder has it (ImageNet's readable list names "crane" twice, harmlessly
    where no folder is called that)."""
    from PIL import Image

    source = tmp_path / "model.tflite"
    source.write_bytes(float_model)
    for folder in ("shirt", "coat", "sandal"):
        (tmp_path / "calibration" / folder).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * index, np.uint8)).save(tmp_path / "calibration" / folder /
                                                                           f"{index}.png")
    cases = [(b"\xff\xfe\x00shirt\x80\n", "labels.txt is not UTF-8 text; give --labels a text file"),
             ("\n".join(["shirt", "coat", "shirt", *map(str, range(3, 10))]).encode(),
              "class folder 'shirt' is the name of outputs 0, 2 in the labels list: give each model output its own")]
    for content, message in cases:
        (tmp_path / "labels.txt").write_bytes(content)
        result = run_in_process("quantize", source, "--output", tmp_path / "out.tflite", "--calibration",
                                "calibration", "--labels", "labels.txt", "--max-accuracy-drop", "1", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if not line.startswith("edge-resnet: warning:")]
        assert len(errors) == 1 and message in errors[0], result.stderr
        assert "calibrating:" not in result.stderr and not (tmp_path / "out.tflite").exists()
    (tmp_path / "labels.txt").write_text("\n".join(["shirt", "coat", "sandal", *["crane"] * 7]))  # no crane folder
    result = run_in_process("quantize", source, "--output", tmp_path / "out.tflite", "--calibration", "calibration",
                            "--labels", "labels.txt", "--max-accuracy-drop", "50", "--calibration-method", "minmax",
                            cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr  # the budget's verdict is not the point: the names are taken


def test_statistics_collected_with_another_preprocessing_are_refused(float_model, statistics, tmp_path):
    """Ranges collected on caffe input hold other numbers than tf input becomes: statistics reused with another
    preprocessing, asked for or the default of the images given, are refused in one line before any output."""
    from edge_resnet.calibration import digits_folder
    from edge_resnet.data.images import Preprocessing, calibration_set
    from tests.digits import digit_pixels

    source = tmp_path / "model.tflite"
    source.write_bytes(float_model)
    caffe = statistics.save(tmp_path / "caffe.npz")
    pixels, _ = digit_pixels(32, 20)
    tf = collect_statistics(float_model, calibration_set(pixels, Preprocessing(32, 32, "tf"), size=20).cached())
    tf = tf.save(tmp_path / "tf.npz")
    refused = [(caffe, ["--preprocessing", "tf"], "--preprocessing caffe", "--preprocessing tf"),
               (caffe, ["--mean", "1,2,3"], "--preprocessing caffe",
                "--scale 1.0,1.0,1.0 --mean 1.0,2.0,3.0 --std 1.0,1.0,1.0"),
               (tf, ["--calibration", digits_folder()], "--preprocessing tf", "--preprocessing caffe")]
    for saved, extra, collected, asked in refused:
        result = run_in_process("quantize", source, "--statistics", saved, "--calibration-method", "minmax",
                                "--output", tmp_path / "out.tflite", *extra, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert (f"collected on images preprocessed with {collected}, and this run's images take {asked}: give "
                f"{collected}") in result.stderr
        assert not (tmp_path / "out.tflite").exists()
    for saved, extra in ((caffe, ["--preprocessing", "caffe"]), (tf, [])):  # theirs, named or taken
        result = run_in_process("quantize", source, "--statistics", saved, "--calibration-method", "minmax",
                                "--output", tmp_path / "out.tflite", *extra, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        record = json.loads(record_path(tmp_path / "out.tflite").read_text())
        assert record["calibration"]["preprocessing"]["mode"] == ("tf" if saved == tf else "caffe")


def test_quantize_with_tail_room_writes_wider_ranges_and_records_them(float_model, statistics, tmp_path):
    source = tmp_path / "model_float32.tflite"
    source.write_bytes(float_model)
    saved = statistics.save(tmp_path / "statistics.npz")
    records = {}
    for name, extra in (("plain", []), ("room", ["--tail-room", "10"])):
        result = run_in_process("quantize", source, "--statistics", saved, "--calibration-method", "minmax",
                                "--output", tmp_path / f"{name}.tflite", *extra, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        records[name] = json.loads(record_path(tmp_path / f"{name}.tflite").read_text())
    assert records["room"]["activation_ranges"]["room"] == 10 and "room" not in records["plain"]["activation_ranges"]
    assert records["room"]["recipe"]["tail_room"] == 10
    assert records["room"]["activation_ranges"]["ranges_fingerprint"] == ranges_fingerprint(
        activation_ranges(statistics, RangeMethod("minmax", room=10)))
    assert records["room"]["activation_ranges"]["ranges_fingerprint"] != \
        records["plain"]["activation_ranges"]["ranges_fingerprint"]
    assert "minmax, room for 10x the images" in result.stdout


def test_cli_refuses_another_models_statistics_and_an_int8_model(folded, statistics, digits_calibration, tmp_path):
    from edge_resnet.model.resnet import build_resnet

    other = tmp_path / "other_float32.tflite"
    other.write_bytes(float_tflite(build_resnet(18, input_shape=(32, 32, 3), classes=10, width=0.25, seed=7)))
    saved = statistics.save(tmp_path / "statistics.npz")
    int8 = to_tflite(folded, QuantizationRecipe(), digits_calibration, output=tmp_path / "int8.tflite",
                     statistics=statistics)
    for model, message in ((other, "collected on another model"), (int8, "not a float32 model")):
        result = run_in_process("quantize", model, "--statistics", saved, "--calibration-method", "minmax",
                                "--output", tmp_path / "out.tflite")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.tflite").exists()


def test_the_calibration_samples_fall_into_four_folds_stratified_by_class():
    from edge_resnet.quantize.statistics import sample_folds

    labels = tuple(str(index % 10) for index in range(200))
    folds = np.asarray(sample_folds(labels, 200, seed=0))
    for fold in range(4):
        counts = np.bincount([int(labels[p]) for p in np.flatnonzero(folds == fold)], minlength=10)
        assert counts.min() == counts.max() == 5
    assert sample_folds(labels, 200, seed=0) == list(folds) != sample_folds(labels, 200, seed=1)
    assert sample_folds(None, 7, seed=0) is None  # too few to hold any out


def test_a_fitting_part_is_the_statistics_of_the_other_folds_samples(float_model, statistics, digits_calibration):
    """The whole less one fold's accumulator gives exactly what a pass over
    the other samples alone gives; the whole is what one accumulator gives."""
    import dataclasses

    calibration = digits_calibration.cached()
    held_out = set(statistics.folds[1].positions)
    kept = [index for index in range(len(calibration)) if index not in held_out]
    alone = collect_statistics(float_model, dataclasses.replace(calibration, decoded=calibration.decoded[kept],
                                                                items=tuple(np.asarray(calibration.items)[kept]),
                                                                labels=None))
    for ours, theirs in zip(statistics.fitting_part(1).tensors, alone.tensors, strict=True):
        assert ours.count == theirs.count
        assert np.array_equal(ours.codes, theirs.codes) and np.array_equal(ours.counts, theirs.counts)
        assert np.array_equal(ours.sample_maxima, theirs.sample_maxima)
    assert sorted(p for fold in statistics.folds for p in fold.positions) == list(range(len(calibration)))
    values = every_activation(float_model, calibration)
    for tensor in statistics.tensors:
        assert (tensor.minimum, tensor.maximum) == (values[tensor.name].min(), values[tensor.name].max())
        assert tensor.sample_maxima[0] == values[tensor.name][: values[tensor.name].size // len(calibration)].max()


def test_each_fold_is_scored_by_the_statistics_of_every_other_fold(statistics):
    """auto holds out each fold in turn: its ranges come from the other
    folds' samples alone (a fitting part, checked against a pass over those
    samples above) and score that fold's; together the fits score every
    sample once."""
    from edge_resnet.quantize.selection import fits

    layout = list(fits(statistics))
    assert len(layout) == len(statistics.folds) == 4
    for fold, (fitted, scored) in enumerate(layout):
        assert scored == tuple(statistics.folds[fold].positions)
        for ours, theirs in zip(fitted.tensors, statistics.fitting_part(fold).tensors, strict=True):
            assert ours.count == theirs.count and len(ours.sample_maxima) == statistics.samples - len(scored)
            assert np.array_equal(ours.counts, theirs.counts) and np.array_equal(ours.sample_maxima,
                                                                                  theirs.sample_maxima)
        assert fitted.folds is None
    assert sorted(position for _, scored in layout for position in scored) == list(range(statistics.samples))


def test_choose_takes_the_best_cross_validated_score_and_the_first_of_equals(statistics, digits_calibration):
    from edge_resnet.quantize.ranges import CANDIDATES
    from edge_resnet.quantize.selection import choose, fits, one_at_a_time

    inputs = np.zeros((200, 1))
    reference = np.ones((200, 10))
    output = statistics.graph_outputs[0]
    rank = {}
    for fitted, _ in fits(statistics):
        for index, method in enumerate(CANDIDATES):
            rank.setdefault(activation_ranges(fitted, method)[output], index)
    best = max(rank.values())

    def outputs(ranges, images):  # the error shrinks towards the last distinct candidate
        return np.ones((len(images), 10)) + 0.01 * (1 + best - rank.get(ranges[output], 0))

    choice = choose(statistics, inputs, one_at_a_time(outputs), reference, "test")
    assert [method for method, _ in choice.scores] == list(CANDIDATES)
    assert choice.method == CANDIDATES[best] and choice.held_out == 200 and choice.folds == 4
    assert choice.decided and choice.describe().startswith(f"{CANDIDATES[best].describe()}, chosen on 200 held-out")
    assert choice.stays_best == 1.0 and choice.record()["resamples"] == 1000  # ahead on every image
    assert choice.describe().endswith("it stays best (within 0.1 dB) on 100% of 1000 resamples of those images")
    tied = choose(statistics, inputs, one_at_a_time(lambda ranges, images: np.ones((len(images), 10))), reference,
                  "test")
    assert tied.method == CANDIDATES[0] and not tied.decided and tied.record()["decided_by_scores"] is False
    assert tied.describe().startswith("minmax: every rule scored exact within 0.1 dB on 200 held-out")

    def barely(ranges, images):  # the last distinct candidate ahead by a few hundredths of a dB: no evidence
        return np.ones((len(images), 10)) * (1 + 0.01 * (1 - 0.001 * rank.get(ranges[output], 0)))

    close = choose(statistics, inputs, one_at_a_time(barely), reference, "test")
    assert max(close.scores, key=lambda entry: entry[1])[0] != CANDIDATES[0]
    assert not close.decided and close.method == CANDIDATES[0]


def test_on_a_softmax_head_auto_does_not_try_widening_the_ranges(statistics, softmax_statistics):
    """The int8 TFLite of a model ending in a softmax: `auto` does not try
    `extrapolated`, even where it would score best on the held-out images
    (min/max still first); the ONNX (float logits and softmax) tries every rule."""
    from edge_resnet.quantize.ranges import CANDIDATES, ranges_fingerprint
    from edge_resnet.quantize.selection import candidates_for, choose, fits, one_at_a_time

    widening = RangeMethod("extrapolated", extrapolation=0.25)
    assert candidates_for(statistics) == CANDIDATES
    assert [rule for rule in CANDIDATES if rule not in candidates_for(softmax_statistics)] == [widening]
    assert candidates_for(softmax_statistics)[0] == RangeMethod("minmax")

    def made_by(rule):
        return {ranges_fingerprint(activation_ranges(fitted, rule)) for fitted, _ in fits(softmax_statistics)}

    exact, close = made_by(widening), made_by(RangeMethod("mse"))

    def outputs(ranges, images):  # extrapolated exact, mse close, every other rule further off
        fingerprint = ranges_fingerprint(ranges)
        return np.ones((len(images), 10)) * (1 if fingerprint in exact else 1.001 if fingerprint in close else 1.01)

    choice = choose(softmax_statistics, np.zeros((200, 1)), one_at_a_time(outputs), np.ones((200, 10)), "test",
                    candidates=candidates_for(softmax_statistics))
    assert choice.method == RangeMethod("mse") and widening not in [rule for rule, _ in choice.scores]
    every_rule = choose(softmax_statistics, np.zeros((200, 1)), one_at_a_time(outputs), np.ones((200, 10)), "test")
    assert every_rule.method == widening, "choose() alone (the ONNX's) tries every rule"
    assert [entry["rule"] for entry in choice.record()["candidates"]] == [
        rule.describe() for rule in candidates_for(softmax_statistics)]


def test_the_reports_range_table_marks_a_rule_an_artifact_did_not_try():
    """The TFLite of a softmax head does not try extrapolated, the ONNX does:
    the report's table keeps every rule in order and says which went untried."""
    from edge_resnet.check.report import range_selection_lines
    from edge_resnet.quantize.selection import HELD_OUT_LAYOUT

    def row(artifact, scores, chosen):
        return {"artifact": artifact, "range_selection": {
            "held_out_samples": 200, "folds": 4, "layout": HELD_OUT_LAYOUT, "chosen_rule": chosen,
            "candidates": [{"rule": rule, "held_out_sqnr_db": score} for rule, score in scores]}}

    tflite = row("m.tflite", [("minmax", 30.0), ("percentile 99.99", 31.0)], "percentile 99.99")
    onnx = row("m.onnx", [("minmax", 29.0), ("extrapolated 0.25", 30.5), ("percentile 99.99", None)],
               "extrapolated 0.25")
    table = [line for line in range_selection_lines([tflite, onnx]) if line.startswith("| ")][1:]
    assert table == ["| minmax | 30.00 | 29.00 |", "| extrapolated 0.25 | not tried | 30.50 (chosen) |",
                     "| percentile 99.99 | 31.00 (chosen) | exact |"]
    text = "\n".join(range_selection_lines([tflite, onnx]))
    assert "each fold held out in turn: ranges fitted on the other folds" in text
    assert "The best rule then took its ranges from all calibration images." in text
    one_fold = {**tflite["range_selection"], "fits": 2}
    del one_fold["layout"]  # a record of the versions that fitted on one fold alone says so
    assert "ranges fitted on one fold alone (2 such fits)" in "\n".join(
        range_selection_lines([{"artifact": "old.tflite", "range_selection": one_fold}]))
    per_image = {**tflite["range_selection"], "score": "per-image", "chosen_rule": "minmax", "candidates": [
        {"rule": "minmax", "held_out_sqnr_db": 30.0, "held_out_mean_image_db": 41.0},
        {"rule": "percentile 99.99", "held_out_sqnr_db": 31.0, "held_out_mean_image_db": 40.0}]}
    text = "\n".join(range_selection_lines([{"artifact": "m.tflite", "range_selection": per_image}]))
    assert "| minmax | 41.00 (chosen) |" in text and "the mean over every calibration image of its output SQNR" in text
    hinted = {**tflite["range_selection"], "per_image_choice": "minmax"}
    assert "- `m.tflite`: percentile 99.99; each image's SQNR, averaged, favours minmax" in "\n".join(
        range_selection_lines([{"artifact": "m.tflite", "range_selection": hinted}]))


def test_a_choice_that_rests_on_a_few_images_says_so():
    """How sure a choice is: the share of resamples of the held-out images
    on which it stays best. A rule ahead of min/max only through image 0
    (scored by both fits) stays best where a resample draws that image, on
    about 1 - (1 - 1/100)^100 = 63% of them; the line then says on how few
    images its lead rests and how to make the choice surer."""
    from edge_resnet.quantize.selection import (ImageErrors, images_with_half_the_lead, stays_best_share,
                                                sureness_text)

    positions, signal = np.arange(100), np.full(100, 50.0)
    minmax, lucky = np.ones(100), np.full(100, 1.2)
    minmax[0], lucky[0] = 41.0, 1.0  # 0.7 dB ahead with image 0, 0.8 dB behind without it
    errors = {0: [ImageErrors(positions, signal, minmax)] * 2, 1: [ImageErrors(positions, signal, lucky)] * 2}
    share = stays_best_share(errors, 1, [0, 1])
    assert 0.58 < share < 0.69, "each image drawn once for both fits (drawn apart, the share is about 0.87)"
    assert stays_best_share(errors, 1, [0, 1]) == share, "seeded: the same share every time"
    twin = {**errors, 2: [ImageErrors(positions, signal, 1.001 * lucky)] * 2}  # e.g. the same rule but the output's
    assert stays_best_share(twin, 1, [0, 1]) == share, "a twin within 0.1 dB does not split the resamples"
    assert stays_best_share({**errors, 3: [ImageErrors(positions, signal, 0.5 * lucky)] * 2}, 1, [0, 1]) == 0.0
    exact = {**errors, 4: [ImageErrors(positions, signal, np.zeros(100))] * 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stays_best_share(exact, 4, [0, 1]) == 1.0, "no error at all is best, as race() scores it"

    assert images_with_half_the_lead(errors[0], errors[1]) == 1  # 2 x 40 of 2 x (40 + 99 x 0.2)
    assert images_with_half_the_lead(errors[1], errors[1]) is None

    unsure = {"stays_best_share": 0.3, "resamples": 1000, "images_with_half_the_lead_over_minmax": 1}
    assert sureness_text(unsure).endswith("of 1000 resamples of those images, half its lead over minmax lies in 1 "
                                          "held-out image: a larger --calibration-size makes the choice surer")
    assert "--calibration-size" not in sureness_text({**unsure, "stays_best_share": 0.8})
    assert sureness_text({}) == "", "records written before this say nothing of it"


def test_the_race_drops_the_worse_half_but_never_minmax():
    """A race (benchmarks/auto_race.py replayed auto's earlier layout under some): each heat's
    worse half stops running; min/max runs every heat, so the winner beat it
    on the same images; a candidate's score covers only the heats it ran."""
    from edge_resnet.quantize.selection import Heat, ImageErrors, race

    noise = {0: 4.0, 1: 1.0, 2: 2.0, 3: 8.0, 4: 3.0, 5: 0.5}  # per image; candidate 5 is best, minmax (0) poor
    later = {5: 4.0}  # ... until the second fit, where 1 overtakes 5
    runs = []

    def heat_errors(candidates, heat):
        runs.extend((candidate, heat) for candidate in candidates)
        per_image = [later.get(candidate, noise[candidate]) if heat.fit == 1 else noise[candidate]
                     for candidate in candidates]
        return [ImageErrors(np.array(heat.folds), np.full(len(heat.folds), 100.0), np.full(len(heat.folds), error))
                for error in per_image]

    heats = (Heat(0, (1,), 0.5), Heat(0, (2, 3), 0.5), Heat(1, (0, 2, 3)))
    scores, heats_run = race(6, heats, heat_errors)
    assert heats_run == [3, 3, 2, 1, 1, 3]  # 3 of 6 (1, 2, 5) and minmax; then 1, 5 and minmax
    assert [candidate for candidate, heat in runs if heat == heats[2]] == [0, 1, 5]
    assert scores[1] > scores[5] > scores[0]  # 5 led on the first fit, 1 pooled over every heat it ran
    assert scores[3] == pytest.approx(10 * np.log10(100 / 8))  # scored on its one heat
    assert len(runs) == 6 + 4 + 3 < 2 * 6 * 2, "fewer runs than every candidate on every heat of both fits"


def test_rules_that_differ_only_on_the_output_run_as_one_model_with_the_same_outputs(float_model, statistics,
                                                                                      digits_calibration):
    """auto's candidates "X inside, minmax on the output" share X's network:
    one merged model runs them, and each output is bit-identical to its own
    artifact's; a rule that differs inside runs alone, and a byte-identical
    artifact runs once."""
    from edge_resnet.quantize.int8_tflite import (quantization_key, quantized_int8_io, run_int8_candidates,
                                                  variant_groups)

    rules = [RangeMethod("percentile", percentile=99.0), RangeMethod("minmax"),
             RangeMethod("percentile", percentile=99.0, output="minmax"), RangeMethod("mse", output="minmax")]
    artifacts = [quantized_int8_io(float_model, activation_ranges(statistics, rule)) for rule in rules]
    artifacts.append(bytes(artifacts[3]))
    assert len(set(artifacts)) == 4
    assert [[index for index, _ in members] for _, members in variant_groups(artifacts)] == [[0, 2], [1], [3, 4]]
    images = np.stack(list(digits_calibration.cached().samples()))[:40]
    together = run_int8_candidates(artifacts, images)
    alone = [run_int8_candidates([artifact], images)[0] for artifact in artifacts]
    for merged, own in zip(together, alone, strict=True):
        assert np.array_equal(merged, own)
    assert not np.array_equal(together[0], together[2]), "the output's own range changes the outputs"
    (_, members), = variant_groups([float_model, float_model])  # a float32 output has no scale to mask
    assert [index for index, _ in members] == [0, 1]
    assert {quantization_key(quantization) for _, quantization in members} in ({None}, {((), ())})


def test_auto_tries_every_candidate_on_the_real_artifact_and_keeps_the_best(folded, float_model, statistics,
                                                                            digits_calibration, tmp_path):
    from edge_resnet.quantize.ranges import CANDIDATES, ranges_fingerprint
    from edge_resnet.quantize.onnx_export import to_onnx

    calibration = digits_calibration.cached()
    tflite = to_tflite(folded, QuantizationRecipe(), calibration, output=tmp_path / "m.tflite",
                       statistics=statistics, float_model=float_model)
    onnx_path = to_onnx(folded, QuantizationRecipe(), calibration, output=tmp_path / "m.onnx", statistics=statistics,
                        float_model=float_model)
    for path, runtime in ((tflite, "ai-edge-litert"), (onnx_path, "onnxruntime")):
        record = json.loads(record_path(path).read_text())["activation_ranges"]
        assert record["method"] == "auto" and runtime in record["selection"]["scored_on"]
        candidates = record["selection"]["candidates"]
        assert [entry["rule"] for entry in candidates] == [method.describe() for method in CANDIDATES]
        scores = {entry["rule"]: entry["held_out_sqnr_db"] for entry in candidates}
        chosen = RangeMethod.from_dict(record["chosen"])
        assert scores[chosen.describe()] == max(scores.values()) >= scores["minmax"]
        assert len(set(scores.values())) > 3, "the candidates really differ"
        # the winner's ranges come from all calibration samples
        assert record["ranges_fingerprint"] == ranges_fingerprint(activation_ranges(statistics, chosen))
        assert record["selection"]["held_out_samples"] == 200 and record["selection"]["folds"] == 4
        assert f"({chosen.describe()})" in json.loads(record_path(path).read_text())["quantization"]


def outlier_or_even_outputs(statistics, few_outliers, even):
    """int8_outputs for choose(): the rule `few_outliers` (by the ranges it makes on a fit) is off by 0.001 on
    every image but every 50th (inputs hold each image's number), off by 1 there; `even` by 0.01 on every image;
    every other rule by 0.02 everywhere."""
    from edge_resnet.quantize.ranges import ranges_fingerprint
    from edge_resnet.quantize.selection import fits, one_at_a_time

    def made_by(rule):
        return {ranges_fingerprint(activation_ranges(fitted, rule)) for fitted, _ in fits(statistics)}

    outlying, spread = made_by(few_outliers), made_by(even)

    def outputs(ranges, images):
        fingerprint = ranges_fingerprint(ranges)
        if fingerprint in outlying:
            error = np.where(images[:, :1] % 50 == 0, 1.0, 0.001)
        else:
            error = np.full((len(images), 1), 0.01 if fingerprint in spread else 0.02)
        return np.ones((len(images), 10)) + error

    return one_at_a_time(outputs)


def test_the_per_image_score_takes_the_rule_best_on_the_typical_image(statistics, softmax_statistics):
    """Pooled, a rule's few images with large errors rule its score; per image, every image counts alike. On a
    logits head the pooled choice says which rule the per-image score would take, where it is another."""
    from edge_resnet.quantize.selection import candidates_for, choose, describe_selection

    few_outliers, even = RangeMethod("mse"), RangeMethod("minmax")
    inputs, reference = np.arange(200.0)[:, None], np.ones((200, 10))
    outputs = outlier_or_even_outputs(statistics, few_outliers, even)
    pooled = choose(statistics, inputs, outputs, reference, "test", name_per_image_choice=True)
    per_image = choose(statistics, inputs, outputs, reference, "test", score="per-image", name_per_image_choice=True)
    assert pooled.method == even and per_image.method == few_outliers
    assert pooled.per_image_choice == few_outliers and per_image.per_image_choice is None
    record = pooled.record()
    mse = next(entry for entry in record["candidates"] if entry["rule"] == "mse")
    assert record["score"] == "pooled" and mse["held_out_sqnr_db"] == pytest.approx(
        10 * np.log10(2000 / (196 * 10 * 1e-6 + 4 * 10)), abs=1e-3)
    assert mse["held_out_mean_image_db"] == pytest.approx((196 * 60 + 4 * 0) / 200, abs=1e-3)
    assert describe_selection({"method": "auto", "chosen": pooled.method.to_dict(), "selection": record}).endswith(
        "; each image's SQNR, averaged, favours mse (--calibration-score per-image: on a classifier's logits it kept "
        "more top-1 agreement)")
    line = per_image.describe()
    assert line.startswith("mse, chosen on 200 held-out calibration images scored per image: 58.8 dB vs minmax "
                           "40.0 dB") and "favours" not in line
    assert per_image.record()["score"] == "per-image" and per_image.stays_best == 1.0
    softmax = choose(softmax_statistics, inputs, outlier_or_even_outputs(softmax_statistics, few_outliers, even),
                     reference, "test", candidates=candidates_for(softmax_statistics), name_per_image_choice=True)
    assert softmax.method == even and softmax.per_image_choice is None, "a softmax head's pooled score is its own"
    assert choose(statistics, inputs, outputs, reference, "test").per_image_choice is None, "measured on the TFLite"


def test_the_pooled_line_names_no_per_image_choice_the_per_image_score_could_not_make(statistics):
    """Per image, mse is ahead of the other rules by 0.02 dB only (0.01 off on 199 images and 0.1 off on one,
    (199 * 40 + 20) / 200 = 39.9 dB, against 39.88 dB everywhere): scored so, auto would see no evidence and
    keep min/max, so the pooled choice, which that one image rules, names none."""
    from edge_resnet.quantize.ranges import ranges_fingerprint
    from edge_resnet.quantize.selection import choose, fits, one_at_a_time

    outlying = {ranges_fingerprint(activation_ranges(fitted, RangeMethod("mse"))) for fitted, _ in fits(statistics)}

    def outputs(ranges, images):
        if ranges_fingerprint(ranges) in outlying:
            return np.ones((len(images), 10)) + np.where(images[:, :1] == 0, 0.1, 0.01)
        return np.ones((len(images), 10)) + 10 ** (-39.88 / 20)

    rules = (RangeMethod("minmax"), RangeMethod("mse"), RangeMethod("percentile", percentile=99.99))
    scored = {score: choose(statistics, np.arange(200.0)[:, None], one_at_a_time(outputs), np.ones((200, 10)), "test",
                            candidates=rules, score=score, name_per_image_choice=True)
              for score in ("pooled", "per-image")}
    assert not scored["per-image"].decided and scored["per-image"].method == RangeMethod("minmax")
    assert scored["pooled"].decided and scored["pooled"].per_image_choice is None


def test_quantize_cli_scores_auto_per_image_where_asked(float_model, tmp_path):
    from edge_resnet.calibration import digits_folder

    source = tmp_path / "model_float32.tflite"
    source.write_bytes(float_model)
    result = run_in_process("quantize", source, "--calibration", digits_folder(), "--calibration-score", "per-image",
                            "--output", tmp_path / "m.tflite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "held-out calibration images scored per image: " in result.stdout
    written = json.loads(record_path(tmp_path / "m.tflite").read_text())
    assert written["recipe"]["calibration_score"] == "per-image"
    assert written["activation_ranges"]["selection"]["score"] == "per-image"


def test_auto_scored_per_image_keeps_the_best_mean_of_image_db_on_the_real_artifact(
        folded, float_model, statistics, digits_calibration, tmp_path):
    from edge_resnet.quantize.onnx_export import to_onnx
    from edge_resnet.quantize.ranges import ranges_fingerprint
    from edge_resnet.quantize.selection import describe_selection

    recipe, calibration = QuantizationRecipe(calibration_score="per-image"), digits_calibration.cached()
    tflite = to_tflite(folded, recipe, calibration, output=tmp_path / "m.tflite", statistics=statistics,
                       float_model=float_model)
    onnx_path = to_onnx(folded, recipe, calibration, output=tmp_path / "m.onnx", statistics=statistics,
                        float_model=float_model)
    for path in (tflite, onnx_path):
        written = json.loads(record_path(path).read_text())
        record = written["activation_ranges"]
        assert written["recipe"]["calibration_score"] == "per-image" and record["selection"]["score"] == "per-image"
        candidates = record["selection"]["candidates"]
        scores = [(entry["held_out_mean_image_db"], -index) for index, entry in enumerate(candidates)]
        chosen = RangeMethod.from_dict(record["chosen"])
        assert candidates[-max(scores)[1]]["rule"] == chosen.describe()
        assert record["ranges_fingerprint"] == ranges_fingerprint(activation_ranges(statistics, chosen))
        assert all(entry["held_out_sqnr_db"] is not None for entry in candidates)
        assert "chosen on 200 held-out calibration images scored per image" in describe_selection(record)
        assert "auto scored per image activation ranges" in written["quantization"]


def test_on_a_softmax_head_the_int8_tflite_takes_the_winners_ranges_from_all_images(
        softmax_keras, softmax_float_model, softmax_statistics, digits_calibration, tmp_path):
    """The mean of the folds' ranges (each from as many images as the winner
    was scored with) shipped there in session 32 and was withdrawn in 33: on
    the second set of softmax heads held back from it, two lost more than
    0.3 dB (benchmarks/results/fold_ranges.md). The winner's ranges, and the
    floor under the softmax's input, come from all calibration images."""
    from edge_resnet.quantize.ranges import ranges_fingerprint, softmax_input_floor
    from edge_resnet.quantize.selection import describe_selection

    tflite = to_tflite(softmax_keras, QuantizationRecipe(), digits_calibration.cached(), output=tmp_path / "s.tflite",
                       statistics=softmax_statistics, float_model=softmax_float_model)
    record = json.loads(record_path(tflite).read_text())["activation_ranges"]
    chosen = RangeMethod.from_dict(record["chosen"])
    ranges = activation_ranges(softmax_statistics, chosen)
    assert record["ranges_fingerprint"] == ranges_fingerprint(ranges)
    assert describe_selection(record).startswith(f"{chosen.describe()}, chosen on 200 held-out")
    floor = record["softmax_input"]
    tensor = next(tensor for tensor in softmax_statistics.tensors if tensor.name == floor["tensor"])
    assert floor["floor"] == softmax_input_floor(tensor, floor["classes"], ranges[floor["tensor"]][1])
    assert floor["low"] == ranges[floor["tensor"]][0] and floor["floor"] <= floor["low"]


def test_auto_refuses_other_images_than_the_statistics_came_from(folded, float_model, statistics,
                                                                 digits_calibration, tmp_path):
    from edge_resnet.data.images import subset

    for calibration, message in ((None, "give --calibration PATH with --statistics"),
                                 (subset(digits_calibration, 0, 100), "not the ones the statistics were collected on")):
        with pytest.raises(ConfigError, match=message) as error:
            to_tflite(folded, QuantizationRecipe(), calibration, output=tmp_path / "m.tflite", statistics=statistics,
                      float_model=float_model)
        assert "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())


def test_auto_without_folds_takes_minmax_and_says_so(folded, float_model, statistics, tmp_path):
    import dataclasses

    from edge_resnet.data.images import DataWarning

    without = dataclasses.replace(statistics, folds=None)
    with pytest.warns(DataWarning, match=r"held-out calibration images .* took minmax.*collect them again"):
        path = to_tflite(folded, QuantizationRecipe(), output=tmp_path / "auto.tflite", statistics=without,
                         float_model=float_model)
    minmax = to_tflite(folded, QuantizationRecipe(calibration_method="minmax"), output=tmp_path / "minmax.tflite",
                       statistics=without, float_model=float_model)
    assert path.read_bytes() == minmax.read_bytes()
    record = json.loads(record_path(path).read_text())["activation_ranges"]
    assert record["method"] == "auto" and record["chosen"] == {"method": "minmax"}
    assert record["selection"]["held_out_samples"] == 0 and "earlier version" in record["selection"]["reason"]


def test_auto_says_when_the_images_cannot_tell_the_rules_apart(statistics, tmp_path):
    """A softmax saturated on the calibration images: every rule gives the
    same output, and the user is told so rather than shown a choice."""
    from edge_resnet.data.images import DataWarning
    from edge_resnet.quantize.selection import Choice, resolved_ranges
    from edge_resnet.quantize.ranges import CANDIDATES

    tied = Choice(CANDIDATES[0], tuple((method, 48.4) for method in CANDIDATES), 200, 4, "test")
    with pytest.warns(DataWarning, match="same output SQNR within 0.1 dB .* took minmax.*calibrate on images it has not"):
        method, _, record = resolved_ranges(statistics, RangeMethod("auto"), lambda statistics, score: tied)
    assert method == RangeMethod("minmax") and record["decided_by_scores"] is False


def test_tail_room_reaches_where_the_top_extremes_spread_says_more_images_reach():
    """An exponential tail's largest of `ahead` times as many samples lies log(ahead) of its scale past the
    largest seen on average, and its k largest spread over 1 + 1/2 + ... + 1/(k - 1) of that scale."""
    import math

    from edge_resnet.quantize.ranges import tail_room
    from edge_resnet.quantize.statistics import TensorStatistics

    def tensor(minima, maxima):
        return TensorStatistics("t", len(maxima), np.zeros(0, np.uint16), np.zeros(0, np.int64),
                                np.asarray(minima, np.float32), np.asarray(maxima, np.float32))

    maxima = np.arange(1, 21, dtype=np.float32)  # the five largest: 16..20, spread 4
    signed = tensor(-maxima / 2, maxima)
    scale = 1 + 1 / 2 + 1 / 3 + 1 / 4
    low, high = tail_room(signed, 10)
    assert high == pytest.approx(20 + math.log(10) * 4 / scale)
    assert low == pytest.approx(-10 - math.log(10) * 2 / scale)  # the five smallest minima: -10..-8
    assert tail_room(signed, 1) == pytest.approx((-10, 20))  # room for as many images: the extremes seen
    assert tail_room(tensor(maxima / 40, maxima), 50)[0] == pytest.approx(1 / 40)  # never negative: its low kept
    three = tensor([0.0, 0.0, 0.0], [1.0, 2.0, 4.0])  # fewer samples than five: their own spread, 3 over 1 + 1/2
    assert tail_room(three, 10)[1] == pytest.approx(4 + math.log(10) * 3 / 1.5)
    assert tail_room(tensor([0.0], [3.0]), 10) == (0.0, 3.0)  # one sample: no spread to read


def test_tail_room_is_where_the_largest_of_that_many_more_samples_typically_lies():
    """On an exponential tail, about half of the sets of ten times as many new samples reach past the room made
    for them: room, not a bound (the calibration's own largest is passed by about nine in ten)."""
    from edge_resnet.quantize.ranges import tail_room
    from edge_resnet.quantize.statistics import TensorStatistics

    rng = np.random.default_rng(0)
    passed_room = []
    for _ in range(400):
        maxima = rng.exponential(size=200).astype(np.float32)
        seen = TensorStatistics("t", 200, np.zeros(0, np.uint16), np.zeros(0, np.int64), np.zeros(200, np.float32),
                                maxima)
        largest_new = rng.exponential(size=2000).max()
        passed_room.append(largest_new > tail_room(seen, 10)[1])
    assert 0.35 < np.mean(passed_room) < 0.7


def test_tail_room_widens_the_rules_that_hold_the_extremes_and_no_other(statistics):
    from edge_resnet.quantize.ranges import tail_room

    roomy = activation_ranges(statistics, RangeMethod("minmax", room=10))
    extrapolated = activation_ranges(statistics, RangeMethod("extrapolated"))
    roomy_extrapolated = activation_ranges(statistics, RangeMethod("extrapolated", room=10))
    for tensor in statistics.tensors:  # the room holds min/max, so min/max with room is the room itself
        room_low, room_high = tail_room(tensor, 10)
        assert roomy[tensor.name] == pytest.approx((room_low, max(room_high, room_low + 1e-8 * 255)))
        low, high = extrapolated[tensor.name]
        assert roomy_extrapolated[tensor.name] == pytest.approx((min(low, room_low), max(high, room_high)))
    plain = activation_ranges(statistics, RangeMethod("minmax"))
    assert sum(roomy[name] != plain[name] for name in plain) > len(plain) / 2
    method = RangeMethod("extrapolated", extrapolation=0.5, room=10)
    assert RangeMethod.from_dict(method.to_dict()) == method
    assert method.describe() == "extrapolated 0.5, room for 10x the images"
    for bad in (0.5, float("nan"), "10", True):
        with pytest.raises(ConfigError, match="tail room must be how many times"):
            RangeMethod("minmax", room=bad)
    for clipping in ("percentile", "mse", "consensus"):
        with pytest.raises(ConfigError, match=f"{clipping} clips them on purpose"):
            RangeMethod(clipping, room=10)
    with pytest.raises(ConfigError, match="output='minmax' keeps the outputs' exact min/max"):
        RangeMethod("minmax", output="minmax", room=10)
    assert QuantizationRecipe(calibration_method="extrapolated", tail_room=10).describe().endswith(
        "extrapolated 0.25 activation ranges, room for 10x the images")


@pytest.mark.parametrize("chosen, applied", [(RangeMethod("extrapolated", extrapolation=0.25), True),
                                             (RangeMethod("mse"), False)])
def test_auto_gives_its_choice_the_room_only_where_it_holds_the_extremes(statistics, chosen, applied):
    """`auto` tries its candidates as they are; the rule it takes gets the room where it is minmax or
    extrapolated, and the line says what became of the room."""
    from edge_resnet.quantize.ranges import CANDIDATES, ranges_record
    from edge_resnet.quantize.selection import Choice, describe_selection, resolved_ranges

    scores = tuple((method, 40.0 + (method == chosen)) for method in CANDIDATES)
    method, ranges, selection = resolved_ranges(statistics, RangeMethod("auto", room=10),
                                                lambda statistics, score: Choice(chosen, scores, 200, 4, "test"))
    assert method == (dataclasses.replace(chosen, room=10) if applied else chosen)
    assert ranges == activation_ranges(statistics, method)
    assert selection["chosen_rule"] == chosen.describe() and selection["tail_room"] == {"asked": 10,
                                                                                          "applied": applied}
    record = ranges_record(statistics, method, ranges, selection)
    line = describe_selection(record)
    assert line.startswith(f"{chosen.describe()}, chosen on 200 held-out calibration images: 41.0 dB vs minmax 40.0")
    assert line.endswith("; then room for 10x the images" if applied else
                         "; no tail room (10x asked): mse clips the extremes on purpose, and room would undo it")
    assert QuantizationRecipe(tail_room=10).describe("tflite", record).endswith(
        f"auto activation ranges ({chosen.describe()}{line[line.index('; '):]})")


def test_auto_without_folds_takes_minmax_with_the_room_asked(statistics):
    from edge_resnet.data.images import DataWarning
    from edge_resnet.quantize.ranges import ranges_record
    from edge_resnet.quantize.selection import describe_selection, resolved_ranges

    without = dataclasses.replace(statistics, folds=None)
    with pytest.warns(DataWarning, match="took minmax"):
        method, ranges, selection = resolved_ranges(without, RangeMethod("auto", room=10), None)
    assert method == RangeMethod("minmax", room=10) and ranges == activation_ranges(without, method)
    assert selection["chosen_rule"] == "minmax" and selection["tail_room"] == {"asked": 10, "applied": True}
    assert describe_selection(ranges_record(without, method, ranges, selection)).startswith(
        "minmax: nothing held out to choose on")


def test_the_output_rule_keeps_the_graph_outputs_minmax_and_clips_inside(statistics):
    output = statistics.graph_outputs[0]
    inside = next(name for name in (t.name for t in statistics.tensors) if name not in statistics.graph_outputs
                  and name not in statistics.graph_inputs)
    clipped = activation_ranges(statistics, RangeMethod("percentile", percentile=99.9))
    mixed = activation_ranges(statistics, RangeMethod("percentile", percentile=99.9, output="minmax"))
    exact = activation_ranges(statistics, RangeMethod("minmax"))
    assert mixed[output] == exact[output] != clipped[output]
    assert mixed[inside] == clipped[inside]
    assert RangeMethod.from_dict(RangeMethod("mse", output="minmax").to_dict()) == RangeMethod("mse", output="minmax")
    with pytest.raises(ConfigError, match="output tensors' range rule"):
        RangeMethod("minmax", output="percentile")


def test_consensus_takes_each_tensors_median_of_the_other_candidates(statistics):
    from edge_resnet.quantize.ranges import CANDIDATES

    others = [activation_ranges(statistics, rule) for rule in CANDIDATES if rule.name != "consensus"]
    consensus = activation_ranges(statistics, RangeMethod("consensus"))
    for name, (low, high) in consensus.items():
        lows, highs = sorted(ranges[name][0] for ranges in others), sorted(ranges[name][1] for ranges in others)
        assert low == pytest.approx((lows[3] + lows[4]) / 2) and high == pytest.approx((highs[3] + highs[4]) / 2)
    output = statistics.graph_outputs[0]
    exact = activation_ranges(statistics, RangeMethod("minmax"))[output]
    assert consensus[output][1] == pytest.approx(exact[1])  # 4 of the 8 keep (or widen) the output's maximum
    assert RangeMethod.from_dict(RangeMethod("consensus").to_dict()).describe() == "consensus"


def test_an_output_softmaxs_logits_start_where_the_int8_softmax_writes_zero(statistics, softmax_statistics):
    """Every rule's range of the logits a softmax head reads starts no lower
    than ln(2 * 256 * 9) below the lowest top logit of the calibration
    images; every other tensor keeps the rule's range."""
    from edge_resnet.quantize.ranges import softmax_input_floor

    assert statistics.softmax_input is None  # a logits head: nothing to floor
    logits, classes = softmax_statistics.softmax_input
    assert classes == 10
    tensor = next(t for t in softmax_statistics.tensors if t.name == logits)
    floor = softmax_input_floor(tensor, classes, tensor.maximum)
    assert floor == pytest.approx(float(tensor.sample_maxima.min()) - np.log(2 * 256 * 9))
    assert tensor.minimum < floor < 0  # the digits' lowest logits lie far below: the floor narrows the grid
    plain = dataclasses.replace(softmax_statistics, softmax_input=None)
    minmax = activation_ranges(softmax_statistics, RangeMethod("minmax"))[logits]
    assert minmax == (pytest.approx(floor), tensor.maximum)
    for rule in (RangeMethod("minmax"), RangeMethod("percentile", percentile=99.9), RangeMethod("consensus")):
        floored, unfloored = activation_ranges(softmax_statistics, rule), activation_ranges(plain, rule)
        assert {name: r for name, r in floored.items() if name != logits} == \
            {name: r for name, r in unfloored.items() if name != logits}
        low, high = unfloored[logits]
        assert floored[logits] == (max(low, softmax_input_floor(tensor, classes, high)), high)
    clipped_top = 0.5 * float(tensor.sample_maxima.min())  # a range whose top clips every image's top logit
    assert softmax_input_floor(tensor, classes, clipped_top) == pytest.approx(clipped_top - np.log(2 * 256 * 9))
    confident = dataclasses.replace(tensor, sample_maxima=tensor.sample_maxima + 100)  # every top logit above 100
    assert softmax_input_floor(confident, classes, confident.maximum) == 0.0  # the int8 grid holds zero
    assert softmax_input_floor(tensor, 2, clipped_top) == pytest.approx(min(clipped_top - np.log(2 * 256), 0.0))


def test_the_floor_reaches_the_int8_softmax_and_only_the_tflite_records_it(softmax_keras, softmax_float_model,
                                                                            softmax_statistics, tmp_path):
    """The int8 TFLite's logits take the floored range (a finer grid) and
    its probabilities stay as close to the float model's; the ONNX keeps
    its logits float, so its recipe names no floor."""
    from edge_resnet.device.runtime import open_runner
    from edge_resnet.device.tflite_inspect import inspect_tflite
    from edge_resnet.quantize.int8_tflite import quantized_int8_io, run_tflite_bytes
    from edge_resnet.quantize.onnx_export import to_onnx
    from edge_resnet.quantize.statistics import read_flatbuffer

    recipe = QuantizationRecipe(calibration_method="minmax")
    path = to_tflite(softmax_keras, recipe, output=tmp_path / "m.tflite", statistics=softmax_statistics,
                     float_model=softmax_float_model)
    logits = softmax_statistics.softmax_input[0]
    floored = activation_ranges(softmax_statistics, recipe.range_method())
    recorded = json.loads(record_path(path).read_text())["activation_ranges"]["softmax_input"]
    unfloored = activation_ranges(dataclasses.replace(softmax_statistics, softmax_input=None), recipe.range_method())
    assert recorded["tensor"] == logits and recorded["low"] == recorded["floor"] == floored[logits][0]
    assert recorded["low"] > unfloored[logits][0]
    graph = read_flatbuffer(path.read_bytes()).subgraphs[0]
    scale = next(t.quantization.scale[0] for t in graph.tensors if t.name.decode() == logits)
    assert scale == pytest.approx((floored[logits][1] - floored[logits][0]) / 255, rel=1e-5)
    assert "XNNPACK runs the whole model but its int8 SOFTMAX" in inspect_tflite(path).describe(True)[1]
    onnx_path = to_onnx(softmax_keras, recipe, output=tmp_path / "m.onnx", statistics=softmax_statistics,
                        float_model=softmax_float_model)
    assert "softmax_input" not in json.loads(record_path(onnx_path).read_text())["activation_ranges"]

    images = held_out()
    reference = np.asarray(softmax_keras.predict(images, verbose=0))
    without = run_tflite_bytes(quantized_int8_io(softmax_float_model, unfloored), images, "int8")
    with_floor = open_runner(path).predict(images)
    assert sqnr_db(reference, with_floor) > sqnr_db(reference, without) - 0.1
    # within one image: ties on the 1/256 grid go to the first class
    assert np.sum(with_floor.argmax(1) == reference.argmax(1)) >= np.sum(without.argmax(1) == reference.argmax(1)) - 1


def test_reused_statistics_find_the_softmax_of_the_model_they_are_used_on(softmax_float_model, softmax_statistics,
                                                                         tmp_path):
    from edge_resnet.quantize.int8_tflite import statistics_for

    loaded = ActivationStatistics.load(softmax_statistics.save(tmp_path / "s.npz"))
    assert loaded.softmax_input is None  # the file does not keep it: the model says it
    assert statistics_for(softmax_float_model, None, loaded).softmax_input == softmax_statistics.softmax_input


def test_a_concatenation_s_range_holds_its_inputs_ranges_whatever_the_rule(tmp_path):
    """A chain of concatenations (DenseNet's dense blocks): a clipping rule ranged each output of its own, which
    clipped what its inputs had kept, and inputs of other ranges were requantized at each link; every rule now
    ranges it over its inputs' ranges and gives that range back to them, so a chain shares its last range (for
    minmax: the last concatenation's own)."""
    import keras
    from keras import layers

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.device.tflite_inspect import inspect_tflite
    from edge_resnet.quantize.int8_tflite import int8_tflite, run_tflite_bytes
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.selection import output_sqnr_db
    from edge_resnet.quantize.statistics import collect_statistics, concatenations_of
    from edge_resnet.quantize.tflite import float_tflite
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    keras.utils.set_random_seed(4)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, activation="relu", name="stem")(layers.Rescaling(1 / 255, name="scale")(inputs))
    for index in range(4):  # DenseNet's layer: normalization, ReLU, convolution, its output concatenated
        pre = layers.ReLU(name=f"relu{index}")(layers.BatchNormalization(name=f"norm{index}")(x))
        x = layers.Concatenate(name=f"concat{index}")([x, layers.Conv2D(4, 3, padding="same", name=f"grow{index}")(pre)])
    model = keras.Model(inputs, layers.Dense(10, name="predictions")(layers.GlobalAveragePooling2D(name="gap")(x)))
    float_model = float_tflite(model)
    concatenations = concatenations_of(float_model)
    assert len(concatenations) == 4 and concatenations[1][1][0] == concatenations[0][0]  # a chain
    pixels, _ = digit_pixels(32, 160, offset=TRAIN_SAMPLES)
    statistics = collect_statistics(float_model, images_from_array(pixels[:120], Preprocessing(32, 32, mode="raw"),
                                                                   size=None))
    own = {tensor.name: (tensor.minimum, tensor.maximum) for tensor in statistics.tensors}
    for method in (RangeMethod("percentile", percentile=99.9), RangeMethod("mse"), RangeMethod("minmax")):
        ranges = activation_ranges(statistics, method)
        for output, names in concatenations:
            assert ranges[output] == (min(ranges[name][0] for name in names), max(ranges[name][1] for name in names))
            assert all(ranges[name] == ranges[concatenations[-1][0]] for name in names)  # one range along the chain
        if method.name == "minmax":
            assert ranges[concatenations[-1][0]] == own[concatenations[-1][0]]
    clipped = activation_ranges(statistics, RangeMethod("percentile", percentile=99.9))
    assert any(clipped[output][1] > activation_ranges(
        dataclasses.replace(statistics, concatenations=()), RangeMethod("percentile", percentile=99.9))[output][1]
        for output, _ in concatenations)  # the rule alone clipped a concatenation below its inputs
    images = pixels[120:].astype(np.float32)
    reference = run_tflite_bytes(float_model, images, "float")
    assert output_sqnr_db(reference, run_tflite_bytes(int8_tflite(float_model, clipped, QuantizationRecipe()), images,
                                                      "int8")) > 25
    # ranged alone, each input is requantized into its concatenation's range: an int8 -> int8 QUANTIZE, integer
    alone = activation_ranges(dataclasses.replace(statistics, concatenations=()), RangeMethod("minmax"))
    (tmp_path / "int8.tflite").write_bytes(int8_tflite(float_model, alone, QuantizationRecipe()))
    inspected = inspect_tflite(tmp_path / "int8.tflite")
    assert inspected.op_counts["QUANTIZE"] > 2 and inspected.fully_integer and inspected.fully_delegated
