"""`edge-resnet compile --target ethos-u...`: the real Vela compiler on the
trained digits model's int8 TFLite."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_resnet.quantize.ethos_u import RUN_VELA, TARGETS
from tests.cli import run_in_process, run_without_tensorflow
from tests.digits import digit_pixels


def vela_itself(model, target, folder):
    """Vela run by hand, as a user would: its summary CSV row and its printed operator split."""
    finished = subprocess.run([sys.executable, "-c", RUN_VELA, str(model), "--accelerator-config", target,
                               "--output-dir", str(folder)], capture_output=True, text=True, check=True)
    row = next(csv.DictReader(next(Path(folder).glob("*_summary_*.csv")).open()))
    split = {kind: int(re.search(rf"{kind} operators = (\d+)", finished.stdout).group(1)) for kind in ("NPU", "CPU")}
    return row, split


@pytest.mark.parametrize("target", ["ethos-u55-256", "ethos-u65-256", "ethos-u85-256"])
def test_the_record_is_vela_s_own_summary_and_every_operator_is_on_the_npu(digits_artifacts, tmp_path, target):
    model = digits_artifacts["int8_tflite"]
    result = run_without_tensorflow(tmp_path, "compile", model, "--target", target, "--output", tmp_path / "npu")
    assert result.returncode == 0, result.stderr
    stem = f"{Path(model).stem}_{target}"
    record = json.loads((tmp_path / "npu" / f"{stem}.json").read_text())
    row, split = vela_itself(model, target, tmp_path / "by_hand")
    assert record["estimated_inference_ms"] == pytest.approx(1e3 * float(row["inference_time"]), rel=1e-12)
    assert (record["npu_operators"], record["cpu_operators"]) == (split["NPU"], split["CPU"])
    assert record["cpu_operators"] == 0 and record["npu_operators"] > 20
    assert record["sram_kib"] == float(row["sram_memory_used"])
    assert record["vela"]["system_config"] == row["system_config"] and record["vela"]["version"].startswith("5.2")
    assert record["vela"]["defaults_taken"]["system_configuration"] == row["system_config"]
    assert (tmp_path / "npu" / f"{stem}.tflite").read_bytes()[4:8] == b"TFL3"
    assert "operators on the NPU" in result.stdout and "estimate" in result.stdout
    # the compiled model is the NPU's: a CPU runtime, or Vela again, is told so (once "damaged", cut mid-word)
    for command in (["bench"], ["compile", "--target", target, "--output", tmp_path / "again"]):
        again = run_in_process(command[0], tmp_path / "npu" / f"{stem}.tflite", *command[1:])
        assert again.returncode == 2 and "holds Vela's ethos-u operator (a model compiled for an Arm Ethos-U " \
                                         "NPU), which only that NPU's runtime runs" in again.stderr, again.stderr


def test_a_float_model_is_refused_and_nothing_is_written(digits_artifacts, tmp_path):
    result = run_in_process("compile", digits_artifacts["float_tflite"], "--target", "ethos-u55-256",
                            "--output", tmp_path / "npu")
    assert result.returncode == 2 and "not fully integer" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "npu").exists()


def test_what_vela_refuses_is_one_line_and_nothing_is_written(digits_artifacts, tmp_path):
    result = run_in_process("compile", digits_artifacts["int8_tflite"], "--target", "ethos-u55-256",
                            "--system-config", "No_Such_System", "--output", tmp_path / "npu")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "No_Such_System" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "npu").exists()


def test_an_empty_system_configuration_is_refused_not_taken_as_vela_s_default(digits_artifacts, tmp_path):
    result = run_in_process("compile", digits_artifacts["int8_tflite"], "--target", "ethos-u55-256",
                            "--system-config", "", "--output", tmp_path / "npu")
    assert result.returncode == 2 and "--system-config is empty; give one of Vela's names" in result.stderr
    assert not (tmp_path / "npu").exists()


def test_a_system_configuration_of_another_npu_family_is_refused(digits_artifacts, tmp_path):
    """Vela takes it and estimates with the other NPU's clocks and memories."""
    result = run_in_process("compile", digits_artifacts["int8_tflite"], "--target", "ethos-u55-256",
                            "--system-config", "Ethos_U85_SYS_DRAM_High", "--output", tmp_path / "npu")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Ethos_U85_SYS_DRAM_High is for the Ethos-U85, not the ethos-u55-256" in result.stderr
    assert not (tmp_path / "npu").exists()


def test_an_unknown_target_is_a_usage_error(digits_artifacts, tmp_path):
    result = run_in_process("compile", digits_artifacts["int8_tflite"], "--target", "ethos-u99",
                            "--output", tmp_path / "npu")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_the_targets_are_vela_s_own():
    from ethosu.vela.architecture_features import Accelerator

    assert TARGETS == tuple(accelerator.value for accelerator in Accelerator)


def test_a_dynamic_range_model_is_refused(folded, tmp_path):
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.tflite import to_tflite

    model = to_tflite(folded, QuantizationRecipe.for_mode("dynamic"), output=tmp_path / "dynamic.tflite")
    result = run_in_process("compile", model, "--target", "ethos-u55-256", "--output", tmp_path / "npu")
    assert result.returncode == 2 and "not fully integer" in result.stderr
    assert not (tmp_path / "npu").exists()


def test_convert_adds_the_compiled_model_and_vela_s_estimate_beside_the_cpu_latency(tmp_path):
    result = run_in_process("convert", "--quantize", "int8", "--formats", "tflite", "--no-per-layer",
                            "--bench-runs", "3", "--target", "ethos-u55-256", "--output", tmp_path / "out",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    npu = report["npu"][0]
    assert npu["target"] == "ethos-u55-256" and npu["cpu_operators"] == 0
    assert npu["cpu_p50_ms"] == next(row["p50_ms"] for row in report["artifacts"] if row["mode"] == "int8")
    assert set(npu["files"].values()) <= set(report["files"])
    assert all((tmp_path / "out" / name).is_file() for name in npu["files"].values())
    assert "Vela's estimate" in (tmp_path / "out" / "report.md").read_text()
    assert "an estimate, not measured" in result.stdout


def test_convert_target_needs_an_int8_tflite(tmp_path):
    result = run_in_process("convert", "--quantize", "float16", "--target", "ethos-u55-256", "--output",
                            tmp_path / "out")
    assert result.returncode == 2 and "--target compiles the int8 TFLite" in result.stderr


def test_an_operator_left_on_the_cpu_is_named_with_vela_s_reason(digits_artifacts, tmp_path):
    np.savez(tmp_path / "calibration.npz", x=digit_pixels(32, 100)[0])
    quantized = run_in_process("quantize", digits_artifacts["float_tflite"], "--calibration",
                               tmp_path / "calibration.npz", "--calibration-method", "minmax", "--input-type",
                               "float32", "--output", tmp_path / "float_input.tflite")
    assert quantized.returncode == 0, quantized.stderr
    result = run_in_process("compile", tmp_path / "float_input.tflite", "--target", "ethos-u55-256", "--output",
                            tmp_path / "npu", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)[0]
    _, split = vela_itself(tmp_path / "float_input.tflite", "ethos-u55-256", tmp_path / "by_hand")
    assert (record["npu_operators"], record["cpu_operators"]) == (split["NPU"], split["CPU"]) and split["CPU"] == 1
    left = record["cpu_operator_details"][0]
    assert left["operator"] == "QUANTIZE" and "Float32" in left["reason"]
