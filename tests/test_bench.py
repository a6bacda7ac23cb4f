"""The on-device benchmark: TF-free, real runtimes, honest statistics."""

import json

import numpy as np
import pytest

from edge_resnet.device.bench import benchmark, comparison_table, latency_stats
from tests.cli import main_in_process, run_without_tensorflow


@pytest.fixture(scope="module")
def models(digits_artifacts):
    """The session's digits ResNet-18 artifacts: float32 and int8 TFLite, int8 ONNX."""
    return {name: digits_artifacts[name] for name in ("float_tflite", "int8_tflite")} | \
        {"int8_onnx": digits_artifacts["int8_onnx"]}


def test_latency_stats_are_exact_on_known_values():
    stats = latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["min"] == 1.0 and stats["max"] == 100.0 and stats["mean"] == 22.0
    assert stats["p50"] == 3.0 and stats["p90"] == pytest.approx(61.6)


def test_benchmark_reports_every_number(models):
    result = benchmark(models["int8_tflite"], threads=1, warmup=2, runs=7)
    assert result.runtime == "ai-edge-litert" and result.accelerator == "XNNPACK (whole model)"
    assert result.input_dtype == "int8" and result.input_shape == (32, 32, 3)
    assert result.runs == 7
    stats = result.latency_ms
    assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert result.throughput_per_s == pytest.approx(1e3 / stats["mean"])
    assert result.load_ms > 0 and result.first_inference_ms > 0 and result.peak_rss_mb > 10
    onnx = benchmark(models["int8_onnx"], runs=3, batch=4)
    assert onnx.runtime == "onnxruntime" and onnx.accelerator == "CPUExecutionProvider" and onnx.batch == 4


def test_duration_mode_and_batched_tflite(models):
    result = benchmark(models["float_tflite"], runs=None, duration=0.2, batch=3, warmup=0)
    assert result.runs >= 1 and result.batch == 3
    assert result.throughput_per_s == pytest.approx(3e3 / result.latency_ms["mean"])


def test_comparison_table_has_speed_up_against_the_first(models):
    results = [benchmark(models[k], runs=3, warmup=1) for k in ("float_tflite", "int8_tflite")]
    table = comparison_table(results)
    assert models["float_tflite"].name in table.splitlines()[2] and table.splitlines()[2].endswith("1.00x")


def test_bench_runs_where_tensorflow_cannot_be_imported(models, tmp_path):
    check = run_without_tensorflow(tmp_path, "summary")
    assert check.returncode == 2 and "needs Keras and TensorFlow" in check.stderr  # the blocker works
    result = run_without_tensorflow(tmp_path, "bench", str(models["float_tflite"]), str(models["int8_tflite"]),
                                    str(models["int8_onnx"]), "--runs", "5", "--warmup", "1", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["runtime"] for row in rows] == ["ai-edge-litert", "ai-edge-litert", "onnxruntime"]
    assert all(row["runs"] == 5 for row in rows)


def test_bench_feeds_a_real_image(models, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(tmp_path / "photo.png")
    result = run_without_tensorflow(tmp_path, "bench", str(models["int8_tflite"]), "--input",
                                    str(tmp_path / "photo.png"), "--runs", "3")
    assert result.returncode == 0, result.stderr
    assert "int8.tflite" in result.stdout and "speed-up" in result.stdout


def onnx_model(folder, name, inputs):
    """An ONNX model adding its inputs (name -> shape), or passing its one input on."""
    import onnx
    from onnx import TensorProto, helper

    names = list(inputs)
    node = helper.make_node("Add", names, ["out"]) if len(names) == 2 else helper.make_node("Relu", names, ["out"])
    graph = helper.make_graph([node], name, [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)
                                             for input_name, shape in inputs.items()],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / name)
    return folder / name


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: onnx_model(p, "two.onnx", {"a": [1, 32, 32, 3], "b": [1, 32, 32, 3]}),
         "two.onnx cannot be run on images: it has 2 inputs, where an image classifier has one"),
        (lambda p: onnx_model(p, "any_size.onnx", {"a": ["n", "h", "w", 3]}),
         "any_size.onnx cannot be run on images: its input has the shape ['n', 'h', 'w', 3]"),
        (lambda p: p / "missing.tflite", "model file not found"),
        (lambda p: (p / "text.tflite").write_text("no model") and p / "text.tflite", "is not a TFLite model"),
        (lambda p: (p / "junk.onnx").write_bytes(b"\x08\x01junk") and p / "junk.onnx", "cannot load"),
        (lambda p: (p / "model.pt").write_text("x") and p / "model.pt",
         "model.pt is not a .tflite or .onnx file; bench takes"),
    ],
)
def test_bench_bad_input_is_one_line_exit_2(tmp_path, make, fragment):
    path = make(tmp_path)
    result = run_without_tensorflow(tmp_path, "bench", str(path))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr


def test_onnx_operator_profile(models):
    result = benchmark(models["int8_onnx"], runs=3, warmup=0, profile=True)
    assert result.operator_ms and all(ms >= 0 for ms in result.operator_ms.values())
    assert any("Conv" in op for op in result.operator_ms)
    assert benchmark(models["int8_tflite"], runs=2, profile=True).operator_ms is None


@pytest.mark.parametrize("duration", ["-5", "nan", "0"])
def test_a_duration_that_is_not_a_positive_time_is_refused(models, duration):
    code, stdout, stderr = main_in_process("bench", models["int8_tflite"], "--duration", duration)
    assert code == 2 and f"--duration is in seconds, more than 0. Received: {float(duration)}" in stderr, stderr
    assert stdout == ""


def test_a_tflite_model_must_take_one_image_input_of_fixed_size(tmp_path):
    """A dynamic height was timed at 1x1 and a second input went unfed; a dynamic batch is fine."""
    import tensorflow as tf

    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.errors import ModelError

    def tflite(name, *shapes):
        signature = [tf.TensorSpec(shape, tf.float32) for shape in shapes]
        function = tf.function(lambda *images: tf.nn.relu(sum(images)), input_signature=signature)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
        (tmp_path / name).write_bytes(converter.convert())
        return tmp_path / name

    assert TfliteRunner(tflite("any_batch.tflite", [None, 32, 32, 3])).input_shape == (32, 32, 3)
    with pytest.raises(ModelError, match=r"cannot be run on images: its input has the shape \[None, None, None, 3\]"):
        TfliteRunner(tflite("any_size.tflite", [None, None, None, 3]))
    with pytest.raises(ModelError, match="cannot be run on images: it has 2 inputs, .*; export it with one image"):
        TfliteRunner(tflite("two.tflite", [1, 32, 32, 3], [1, 32, 32, 3]))
