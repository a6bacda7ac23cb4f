"""onnxruntime's int8 ONNX with its biases corrected part by part toward the
float model's mean outputs (edge_resnet/quantize/onnx_bias_correction.py)."""

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime
import pytest

from edge_resnet.device.runtime import OnnxRunner
from edge_resnet.quantize.bias_correction import describe_correction, guarded_record
from edge_resnet.quantize.onnx_bias_correction import (QOPERATOR_REASON, QOPERATOR_REFUSAL, biased_layers,
                                                       corrected_onnx_artifact)
from edge_resnet.quantize.onnx_export import float_onnx, ort_prepared, to_onnx, with_softmax_input_output
from edge_resnet.quantize.recipe import QuantizationRecipe, record_path
from tests.digits import softmax_twin
from tests.test_bias_correction import held_out_digits

AS_QUANTIZED = QuantizationRecipe(calibration_method="minmax", bias_correction="off")


@pytest.fixture(scope="module")
def calibration(digits_calibration):
    return digits_calibration.cached()


@pytest.fixture(scope="module")
def images(calibration):
    return np.stack(list(calibration.samples())).astype(np.float32)


@pytest.fixture(scope="module", params=["logits", "softmax"])
def head(request):
    return request.param


@pytest.fixture(scope="module")
def onnx_models(folded, calibration, head, tmp_path_factory):
    """(the float ONNX as onnxruntime prepared it, its int8 ONNX as quantized) of the tests' model with this head."""
    keras_model = folded if head == "logits" else softmax_twin(folded)
    folder = tmp_path_factory.mktemp(f"onnx_biases_{head}")
    onnx.save(float_onnx(keras_model), folder / "float.onnx")
    prepared = ort_prepared(folder / "float.onnx", folder / "prepared.onnx")
    plain = to_onnx(keras_model, AS_QUANTIZED, calibration, output=folder / "plain.onnx",
                    float_onnx_path=folder / "float.onnx")
    return prepared.proto, onnx.load(plain)


def tensor_values(proto, images, names):
    """{tensor: its values on `images`}: the model run whole by onnxruntime with those tensors as extra outputs."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(list(names), {session.get_inputs()[0].name: images})))


def channel_means(values):
    return np.moveaxis(np.asarray(values, np.float64), 1, -1).reshape(-1, values.shape[1]).mean(axis=0)


def int8_means(proto, images):
    """{layer's output: its int8 output's mean per channel, dequantized} for every biased layer of an int8 ONNX."""
    from onnx import numpy_helper

    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
    layers = biased_layers(proto).values()
    values = tensor_values(proto, images, [layer.read for layer in layers])
    means = {}
    for layer in layers:
        mean = channel_means(values[layer.read])
        if layer.scale is not None:
            mean = float(weights[layer.scale]) * (mean - float(weights[layer.zero_point]))
        means[layer.output] = mean
    return means


def test_the_correction_takes_each_layers_mean_error_out(onnx_models, calibration, images):
    """Measured independently of the correction's own runs: the whole
    corrected model run with every layer's int8 output exposed."""
    float_proto, plain = onnx_models
    corrected, record = corrected_onnx_artifact(plain, float_proto, dataclasses.replace(AS_QUANTIZED,
                                                                                         bias_correction="on"),
                                                calibration)
    layers = biased_layers(plain)
    assert record == {"corrected": True, "images": 200, "layers": len(layers), "mode": "on"} and len(layers) >= 21
    expected = {name: channel_means(values) for name, values in
                tensor_values(float_proto, images, [layer.output for layer in layers.values()]).items()}
    before, after = int8_means(plain, images), int8_means(corrected, images)
    errors_before = np.mean([np.abs(expected[name] - before[name]).mean() for name in expected])
    errors_after = np.mean([np.abs(expected[name] - after[name]).mean() for name in expected])
    assert errors_after < 0.5 * errors_before
    # only the int32 biases moved
    changed = {tensor.name for tensor, other in zip(plain.graph.initializer, corrected.graph.initializer,
                                                    strict=True) if tensor.SerializeToString() != other.SerializeToString()}
    assert changed and changed <= {layer.bias for layer in layers.values()}


def test_each_part_runs_alone_on_what_the_parts_before_it_wrote_as_the_whole_model_would(onnx_models, images):
    """The correction's windows (each part's nodes on the int8 tensors kept
    from the parts before it) shift every bias exactly as running the whole
    int8 model again after each part's correction does (the slow way, here)."""
    from edge_resnet.quantize.onnx_bias_correction import (corrected_onnx, dequantized_mean, initializers,
                                                           judged_output, part_layers, shift_bias)
    from edge_resnet.quantize.onnx_export import onnx_parts

    float_proto, plain = onnx_models
    images = images[:40]
    parts = list(onnx_parts(float_proto).values())
    slow = onnx.ModelProto()
    slow.CopyFrom(plain)
    weights = initializers(slow)
    groups = part_layers(slow, parts, {name for node in float_proto.graph.node for name in node.output})
    float_means = {name: channel_means(values) for name, values in tensor_values(
        float_proto, images, [layer.output for group in groups for layer in group]).items()}
    for group in groups:
        values = tensor_values(slow, images, [layer.read for layer in group])
        for layer in group:
            shift_bias(weights, layer, float_means[layer.output]
                       - dequantized_mean(weights, layer, channel_means(values[layer.read])))
    fast = corrected_onnx(plain, float_proto, images, parts, judged_output(float_proto)).proto
    assert fast.SerializeToString() == slow.SerializeToString() != plain.SerializeToString()


def test_auto_keeps_the_correction_only_where_it_raises_the_logits_mean_image_sqnr(onnx_models, calibration, images,
                                                                                   head, tmp_path):
    """The guard's scores are what numpy makes of the saved artifacts' own
    runs on the calibration images (a softmax head: its input, float in the
    int8 ONNX), and the artifact is the corrected one exactly where it scores higher."""
    from edge_resnet.quantize.mixed import per_image_mean_db

    float_proto, plain = onnx_models
    always, _ = corrected_onnx_artifact(plain, float_proto, dataclasses.replace(AS_QUANTIZED, bias_correction="on"),
                                        calibration)
    chosen, record = corrected_onnx_artifact(plain, float_proto,
                                             dataclasses.replace(AS_QUANTIZED, bias_correction="auto"), calibration)

    def logits(proto, name):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(with_softmax_input_output(proto.SerializeToString()) if head == "softmax"
                         else proto.SerializeToString())
        return OnnxRunner(path).predict_every_output(images)[-1]

    reference = logits(float_proto, "float")
    scores = record["calibration_sqnr_db"]
    assert scores["as_quantized"] == pytest.approx(per_image_mean_db(reference, logits(plain, "plain")), abs=2e-3)
    assert scores["corrected"] == pytest.approx(per_image_mean_db(reference, logits(always, "always")), abs=2e-3)
    assert record["corrected"] == (scores["corrected"] > scores["as_quantized"])
    assert chosen.SerializeToString() == (always if record["corrected"] else plain).SerializeToString()
    if head == "logits":  # where it helps this model, it is kept
        assert record["corrected"] and scores["corrected"] > scores["as_quantized"] + 0.1
    assert describe_correction(record).startswith("biases of" if record["corrected"] else "biases as quantized")


def test_the_corrected_onnx_holds_on_images_it_never_saw(folded, onnx_models, calibration, head, tmp_path):
    if head != "logits":
        pytest.skip("a softmax head's SQNR on 300 images moves with the few it is unsure of")
    float_proto, plain = onnx_models
    corrected, _ = corrected_onnx_artifact(plain, float_proto, dataclasses.replace(AS_QUANTIZED,
                                                                                    bias_correction="on"), calibration)
    evaluation = held_out_digits()
    float_outputs = np.asarray(folded.predict(evaluation, verbose=0))

    def sqnr(proto, name):
        onnx.save(proto, tmp_path / name)
        outputs = OnnxRunner(tmp_path / name).predict(evaluation)
        return 10 * np.log10(np.sum(float_outputs**2) / np.sum((float_outputs - outputs) ** 2))

    assert sqnr(corrected, "corrected.onnx") > sqnr(plain, "plain.onnx") + 0.3


def test_a_tie_or_a_lost_agreement_leaves_the_biases_as_quantized():
    keep, record = guarded_record("auto", 200, 21, {"as_quantized": 30.0, "corrected": 30.0})
    assert not keep and not record["corrected"] and record["layers"] == 0
    # under a budget counting top-1: a higher SQNR does not make up for images whose top-1 it changed
    higher = {"as_quantized": 30.0, "corrected": 31.0}
    keep, record = guarded_record("auto", 200, 21, higher, agreement={"as_quantized": 0.995, "corrected": 0.99})
    assert not keep and "lowered the top-1 agreement" in record["reason"]
    assert describe_correction(record) == ("biases as quantized: correcting them lowered the top-1 agreement with "
                                           "the float model on the 200 calibration images, which the budget counts "
                                           "(99.5% -> 99.0%, though the logits' mean per-image SQNR on them 30.00 "
                                           "-> 31.00 dB)")
    assert guarded_record("auto", 200, 21, higher, agreement={"as_quantized": 0.99, "corrected": 0.99})[0]
    assert guarded_record("on", 200, 21) == (True, {"corrected": True, "images": 200, "layers": 21, "mode": "on"})


def test_quantize_corrects_the_onnx_by_default_and_says_so(tmp_path):
    """`edge-resnet quantize` to an .onnx: the default guard, its line and
    its record; --no-bias-correction leaves the biases as onnxruntime set them."""
    from edge_resnet.calibration import digits_folder
    from edge_resnet.model.demo import build_demo_model
    from tests.cli import run_in_process

    model = tmp_path / "demo.keras"
    build_demo_model().save(model)
    common = ("quantize", model, "--calibration", digits_folder(), "--calibration-method", "minmax")
    result = run_in_process(*common, "--output", tmp_path / "default.onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads(record_path(tmp_path / "default.onnx").read_text())["bias_correction"]
    assert record["mode"] == "auto" and record["judged_by"].endswith("the int8 ONNX's logits are float)")
    assert describe_correction(record) in result.stdout
    plain = run_in_process(*common, "--no-bias-correction", "--output", tmp_path / "plain.onnx", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "biases" not in plain.stdout
    biases = {layer.bias for layer in biased_layers(onnx.load(tmp_path / "plain.onnx")).values()}

    def bias_values(path):
        return {tensor.name: tensor.SerializeToString() for tensor in onnx.load(path).graph.initializer
                if tensor.name in biases}

    assert (bias_values(tmp_path / "default.onnx") != bias_values(tmp_path / "plain.onnx")) == record["corrected"]
    # onnxruntime's QOperator format fuses each layer: the default says so, an explicit request is refused
    fused = run_in_process(*common, "--onnx-format", "qoperator", "--output", tmp_path / "fused.onnx", cwd=tmp_path)
    assert fused.returncode == 0, fused.stderr
    assert json.loads(record_path(tmp_path / "fused.onnx").read_text())["bias_correction"] == {
        "corrected": False, "mode": "auto", "reason": QOPERATOR_REASON}
    assert f"biases as quantized ({QOPERATOR_REASON})" in fused.stdout
    refused = run_in_process(*common, "--onnx-format", "qoperator", "--bias-correction", "--output",
                             tmp_path / "refused.onnx", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip() == f"edge-resnet: error: {QOPERATOR_REFUSAL}", refused.stderr
    assert not (tmp_path / "refused.onnx").exists()


def test_what_cannot_be_corrected_is_refused_or_said(folded, onnx_models, calibration, head, tmp_path):
    """Asked for without images or on the QOperator format: refused before
    any work; a graph with no int8 layer to correct: said in the record."""
    from edge_resnet.errors import ConfigError
    from edge_resnet.quantize.bias_correction import NEEDS_IMAGES, NO_LAYERS_REASON
    from edge_resnet.quantize.onnx_bias_correction import QOPERATOR_REFUSAL
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    if head != "logits":
        pytest.skip("one head is enough")
    asked = dataclasses.replace(AS_QUANTIZED, bias_correction="on")
    statistics = collect_statistics(float_tflite(folded), calibration)
    with pytest.raises(ConfigError, match=NEEDS_IMAGES):
        to_onnx(folded, asked, output=tmp_path / "no_images.onnx", statistics=statistics)
    with pytest.raises(ConfigError, match=QOPERATOR_REFUSAL):
        to_onnx(folded, dataclasses.replace(asked, onnx_format="qoperator"), calibration,
                output=tmp_path / "fused.onnx", statistics=statistics)
    assert not list(tmp_path.iterdir())
    fused = to_onnx(folded, dataclasses.replace(AS_QUANTIZED, onnx_format="qoperator"), calibration,
                    output=tmp_path / "fused.onnx", statistics=statistics)
    float_proto, _ = onnx_models
    unchanged, record = corrected_onnx_artifact(onnx.load(fused), float_proto, asked, calibration)
    assert record == {"corrected": False, "mode": "on", "reason": NO_LAYERS_REASON}
    assert unchanged.SerializeToString() == onnx.load(fused).SerializeToString()
