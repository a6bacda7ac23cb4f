"""TFLite export: a fully integer int8 model that XNNPACK runs whole, the
other modes, determinism, and the recipe JSON beside every artifact."""

import json

import numpy as np
import pytest

import edge_resnet
from edge_resnet.errors import ConfigError
from edge_resnet.quantize.recipe import QuantizationRecipe
from edge_resnet.device.runtime import TfliteRunner
from edge_resnet.quantize.recipe import record_path
from edge_resnet.quantize.tflite import to_tflite
from edge_resnet.device.tflite_inspect import inspect_tflite
from tests.digits import TRAIN_SAMPLES, digit_pixels


@pytest.fixture(scope="module")
def int8_path(digits_artifacts):
    return digits_artifacts["int8_tflite"]


def run_tflite(path, images):
    return TfliteRunner(path).predict(images)


def held_out_digits(count=300):
    pixels, labels = digit_pixels(32, count, offset=TRAIN_SAMPLES)
    return edge_resnet.preprocess_input(pixels), labels


def test_int8_model_is_fully_integer_and_runs_whole_on_xnnpack(int8_path):
    structure = inspect_tflite(int8_path)
    assert structure.fully_integer, structure.to_dict()
    assert structure.fully_delegated and structure.delegate_nodes == 1
    assert structure.input_dtype == "int8" and structure.output_dtype == "int8"
    assert structure.op_counts["CONV_2D"] == 20  # every convolution, folded
    assert "DEQUANTIZE" not in structure.op_counts and "QUANTIZE" not in structure.op_counts


def test_int8_model_agrees_with_the_float_model_on_real_digits(int8_path, folded):
    images, labels = held_out_digits()
    float_logits = np.asarray(folded.predict(images, verbose=0))
    int8_logits = run_tflite(int8_path, images)
    assert np.mean(float_logits.argmax(1) == labels) >= 0.9, "the float model should have learned digits"
    assert np.mean(int8_logits.argmax(1) == float_logits.argmax(1)) >= 0.97


def test_inspection_sees_float_computation_in_other_modes(folded, tmp_path):
    for mode in ("float16", "dynamic", "none"):
        path = to_tflite(folded, QuantizationRecipe.for_mode(mode), output=tmp_path / f"{mode}.tflite")
        structure = inspect_tflite(path)
        assert not structure.fully_integer, mode
        assert structure.input_dtype == "float32" and "CONV_2D" in structure.float_ops
    assert (tmp_path / "float16.tflite").stat().st_size < 0.6 * (tmp_path / "none.tflite").stat().st_size


def test_io_types_uint8_and_float32(folded, digits_calibration, tmp_path):
    from edge_resnet.check.report import evaluation_grid_text
    from edge_resnet.quantize.int8_tflite import output_grid_text

    uint8 = to_tflite(folded, QuantizationRecipe(input_type="uint8", output_type="uint8"),
                      digits_calibration, output=tmp_path / "u8.tflite", progress=False)
    structure = inspect_tflite(uint8)
    assert (structure.input_dtype, structure.output_dtype) == ("uint8", "uint8")
    assert structure.fully_integer and structure.op_counts["QUANTIZE"] == 2  # uint8 <-> int8 at the ends
    grid = json.loads(record_path(uint8).read_text())["output_grid"]  # its notes name the output's type
    assert grid["grid_type"] == "uint8" and "output's uint8 grid" in grid["what"]
    assert output_grid_text({**grid, "top1_changed": 1}).startswith("its output's own uint8 grid changes")
    assert evaluation_grid_text(0.1, 10, 0.9, advice=False, grid_type="uint8").startswith("its output's own uint8")
    float_io = to_tflite(folded, QuantizationRecipe(input_type="float32", output_type="float32"),
                         digits_calibration, output=tmp_path / "f32io.tflite", progress=False)
    structure = inspect_tflite(float_io)
    assert structure.input_dtype == "float32" and structure.fully_integer
    assert structure.op_counts["QUANTIZE"] == 1 and structure.op_counts["DEQUANTIZE"] == 1
    # a float32 output dequantizes the int8 head's values: they lie on its int8 grid
    assert json.loads(record_path(float_io).read_text())["output_grid"]["grid_type"] == "int8"


def test_a_model_made_for_a_fixed_batch_is_run_one_image_at_a_time(folded, tmp_path):
    import keras
    import tensorflow as tf

    inputs = keras.Input(folded.input_shape[1:], batch_size=4)
    fixed = keras.Model(inputs, folded(inputs))
    path = tmp_path / "batch4.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(fixed).convert())
    images, _ = digit_pixels(32, 3, offset=TRAIN_SAMPLES)
    images = edge_resnet.preprocess_input(images)
    runner = TfliteRunner(path)
    assert runner.input_shape == (32, 32, 3)
    np.testing.assert_allclose(runner.predict(images), folded.predict(images, verbose=0), rtol=1e-4, atol=1e-4)


def test_conversion_is_deterministic(folded, digits_calibration, int8_path, tmp_path):
    again = to_tflite(folded, QuantizationRecipe(), digits_calibration,
                      output=tmp_path / "again.tflite", progress=False)
    assert again.read_bytes() == int8_path.read_bytes()


def test_recipe_json_sits_beside_the_artifact(int8_path, digits_calibration):
    import hashlib

    record = json.loads(record_path(int8_path).read_text())
    assert record["artifact"] == int8_path.name
    assert record["sha256"] == hashlib.sha256(int8_path.read_bytes()).hexdigest()
    assert QuantizationRecipe.from_dict(record["recipe"]) == QuantizationRecipe()
    assert record["calibration"]["size"] == 200
    assert record["calibration"]["fingerprint"] == digits_calibration.fingerprint
    assert record["calibration"]["seed"] == 0
    assert {"tensorflow", "edge-resnet"} <= set(record["versions"])


def test_recipe_round_trips_and_rejects_nonsense():
    recipe = QuantizationRecipe(input_type="uint8", per_channel=False, onnx_format="qoperator")
    assert QuantizationRecipe.from_json(recipe.to_json()) == recipe
    with pytest.raises(ConfigError, match="mode must be one of"):
        QuantizationRecipe(mode="int4")
    with pytest.raises(ConfigError, match="--input-type int8 needs --quantize int8; --quantize float16 keeps"):
        QuantizationRecipe(mode="float16")  # int8 I/O does not fit float16
    with pytest.raises(ConfigError, match="unknown recipe fields"):
        QuantizationRecipe.from_dict({"mode": "int8", "bits": 4})


def test_int8_needs_fitting_calibration(folded, tmp_path):
    from edge_resnet.calibration import digits_folder
    from edge_resnet.data.images import Preprocessing, calibration_set

    with pytest.raises(ConfigError, match="needs calibration data"):
        to_tflite(folded, QuantizationRecipe(), None, output=tmp_path / "x.tflite")
    wrong_size = calibration_set(str(digits_folder()), Preprocessing(64, 64), size=20)
    with pytest.raises(ConfigError, match=r"model takes \(32, 32, 3\)"):
        to_tflite(folded, QuantizationRecipe(), wrong_size, output=tmp_path / "x.tflite")
    assert list(tmp_path.iterdir()) == []


def close_calls(grid, close, apart):
    """Class scores on which `close` images' top-1 changes on `grid` (the top two within a step: a tie, and the
    first index wins) and `apart` images' does not."""
    step = grid.scale
    return np.array([[0.3 * step, 0.4 * step, -5 * step]] * close + [[0.3 * step, 3 * step, -5 * step]] * apart)


def test_the_output_grid_record_counts_the_top1_the_int8_output_grid_alone_changes(int8_path, digits_artifacts):
    from edge_resnet.check.report import output_grid_lines
    from edge_resnet.quantize.int8_tflite import output_grid_record, output_grid_text, value_grid

    int8 = int8_path.read_bytes()
    record = output_grid_record(int8, close_calls(value_grid(int8), 3, 7))
    assert (record["calibration_images"], record["top1_changed"]) == (10, 3)
    assert "3 of 10 calibration images" in output_grid_text(record)
    unchanged = output_grid_record(int8, close_calls(value_grid(int8), 0, 7))
    assert unchanged["top1_changed"] == 0 and output_grid_text(unchanged) is None  # nothing to say
    assert output_grid_record(digits_artifacts["float_tflite"].read_bytes(), close_calls(value_grid(int8), 3, 7)) is None
    # the report says it for the artifacts where it changes some top-1, and only those
    lines = output_grid_lines([{"artifact": "a.tflite", "output_grid": record},
                               {"artifact": "b.tflite", "output_grid": unchanged},
                               {"artifact": "c.onnx", "output_grid": None}])
    assert len(lines) == 1 and "a.tflite" in lines[0] and "3 of 10 calibration images" in lines[0]


def test_quantize_says_what_the_output_grid_does_to_the_calibration_images_top1(digits_artifacts,
                                                                                digits_calibration, tmp_path):
    """From the statistics pass's float outputs; a float32 output keeps the grid behind its DEQUANTIZE."""
    import dataclasses

    from edge_resnet.quantize.int8_tflite import value_grid
    from edge_resnet.quantize.statistics import collect_statistics
    from tests.cli import run_in_process

    float_path = digits_artifacts["float_tflite"]
    statistics = collect_statistics(float_path.read_bytes(), digits_calibration)
    statistics.save(tmp_path / "statistics.npz")
    int8_output = tmp_path / "int8_output.tflite"
    result = run_in_process("quantize", float_path, "--statistics", tmp_path / "statistics.npz",
                            "--calibration-method", "minmax", "--output", int8_output)
    assert result.returncode == 0, result.stderr
    grid = value_grid(int8_output.read_bytes())
    samples = len(statistics.float_outputs)
    planted = dataclasses.replace(statistics, float_outputs=close_calls(grid, 4, samples - 4))
    planted.save(tmp_path / "planted.npz")
    float_output = tmp_path / "float_output.tflite"
    result = run_in_process("quantize", float_path, "--statistics", tmp_path / "planted.npz",
                            "--calibration-method", "minmax", "--output-type", "float32", "--output", float_output)
    assert result.returncode == 0, result.stderr
    assert inspect_tflite(float_output).output_dtype == "float32"
    assert value_grid(float_output.read_bytes()) == grid  # the same ranges, behind the DEQUANTIZE
    assert f"note: its output's own int8 grid changes the top-1 of 4 of {samples} calibration images" in result.stdout
    record = json.loads(record_path(float_output).read_text())["output_grid"]
    assert (record["calibration_images"], record["top1_changed"]) == (samples, 4)


def test_operators_xnnpack_leaves_are_named_once_with_their_count():
    from edge_resnet.device.tflite_inspect import TfliteStructure

    structure = TfliteStructure(op_counts={}, input_dtype="int8", output_dtype="int8", float_ops=(),
                                body_quantize_ops=(), delegate_nodes=4, fully_delegated=False,
                                undelegated_ops=("MAX_POOL_2D", "MUL", "MAX_POOL_2D", "MUL", "SOFTMAX"))
    assert structure.delegation_text() == "XNNPACK runs only part of the model (not: MAX_POOL_2D x2, MUL x2, SOFTMAX)"


def test_a_model_of_vanishing_activations_quantizes_to_a_model_that_loads(digits_calibration, tmp_path):
    """Random weights can shrink activations to ~1e-9 (keras.applications' MobileNetV2 does): LiteRT refused the
    int8 model, as the int32 that a fused ReLU6's bound becomes at that scale overflows."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu6", name="conv")(inputs)
    x = keras.layers.Conv2D(4, 1, activation="relu6", name="tiny")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    kernel, bias = model.get_layer("tiny").get_weights()
    model.get_layer("tiny").set_weights([kernel * 1e-10, bias])
    path = to_tflite(model, QuantizationRecipe(calibration_method="minmax"), digits_calibration,
                     output=tmp_path / "tiny.tflite", progress=False)
    assert inspect_tflite(path).fully_delegated  # LiteRT's own kernels, which check the bounds, load it too
    images = np.stack(list(digits_calibration.samples())[:4])
    assert np.isfinite(TfliteRunner(path).predict(images)).all()


def test_operators_of_another_delegated_piece_are_not_named_as_left_out():
    """ResNetV2: a tensor feeds a pooling XNNPACK leaves out and, past it, a convolution of the next delegated piece;
    only the pooling runs outside (the convolution was named too)."""
    from edge_resnet.device.tflite_inspect import _outside_delegates

    def op(index, name, inputs, outputs):
        return {"index": index, "op_name": name, "inputs": inputs, "outputs": outputs}

    # input 0 -> conv(1) -> [piece A: relu 2] -> pool(3); piece B: conv(4) of 2, add(5) of 3 and 4 -> output 5
    ops = [op(0, "CONV_2D", [0, 10], [1]), op(1, "RELU", [1], [2]), op(2, "MAX_POOL_2D", [2], [3]),
           op(3, "CONV_2D", [2, 11], [4]), op(4, "ADD", [3, 4], [5])]
    pieces = [op(5, "DELEGATE", [0], [2]), op(6, "DELEGATE", [2, 3], [5])]
    assert _outside_delegates(ops, pieces) == ("MAX_POOL_2D",)
