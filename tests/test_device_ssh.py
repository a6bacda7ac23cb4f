"""`--device ssh://HOST`: bench and compare on a board over SSH, against a
real OpenSSH server on 127.0.0.1 whose "device" Pythons have numpy<2 and
tflite-runtime (or onnxruntime) but neither TensorFlow nor edge-resnet."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.cli import COMMAND, cli_env, run_in_process
from tests.digits import TRAIN_SAMPLES, digit_pixels
from tests.ssh_device import StandInDevice, device_environment


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    device = StandInDevice(tmp_path_factory.mktemp("board")).start()
    yield device
    device.stop()


@pytest.fixture(scope="module")
def pythons():
    """The device's interpreters: an old-board one (tflite-runtime 2.14,
    numpy 1.x), one with onnxruntime, and one without numpy."""
    return {name: str(device_environment(name)) for name in ("tflite-runtime", "onnxruntime", "bare")}


@pytest.fixture(scope="module")
def golden(digits_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("device_golden")
    digits_model.save(folder / "digits.keras")
    pixels, labels = digit_pixels(32, 120, offset=TRAIN_SAMPLES)
    np.savez(folder / "test.npz", x=pixels[:120], y=labels[:120])
    made = run_in_process("reference", folder / "digits.keras", "--data", folder / "test.npz",
                          "--output", folder / "golden")
    assert made.returncode == 0, made.stderr
    return folder / "golden"


@pytest.fixture(scope="module")
def copies(digits_artifacts, golden):
    """The artifacts without their recipe JSONs (they name the in-memory
    model, not the golden outputs' file): lineage is then a warning only."""
    import shutil

    folder = golden.parent / "artifacts"
    folder.mkdir()
    return {key: shutil.copy(path, folder / Path(path).name) for key, path in digits_artifacts.items()}


def on_board(board, python, *targets):
    return [flag for target in (targets or ("device",)) for flag in ("--device", f"ssh://{target}")] + [
        "--ssh-config", board.config, "--device-python", python]


def one_line_error(result):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_bench_on_the_board_names_it_and_a_warm_cache_uploads_nothing(board, pythons, digits_artifacts):
    model = digits_artifacts["int8_tflite"]
    args = ["bench", model, "--runs", "5", "--json", *on_board(board, pythons["tflite-runtime"]),
            "--device-cache-clear"]
    first = run_in_process(*args)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)[0]
    device = result["device"]
    assert device["label"] == "device" and device["runtimes"] == {"tflite-runtime": "2.14.0"}
    assert device["numpy"].startswith("1.") and device["cores"] >= 1 and device["machine"]
    assert result["runtime"] == "tflite-runtime" and result["runs"] == 5 and result["latency_ms"]["p50"] > 0
    assert device["uploaded_bytes"] == Path(model).stat().st_size
    again = json.loads(run_in_process(*args[:-1]).stdout)[0]  # the same model: nothing sent
    assert again["device"]["uploaded_bytes"] == 0
    assert again["device"]["cache"]["files"] == 2  # the runner and the model: the clear emptied the rest
    assert board.left_behind() == []


def test_compare_on_the_board_gives_the_metrics_of_a_local_compare(board, pythons, golden, copies):
    """onnxruntime is the same version on both sides, and float32 TFLite runs
    the same XNNPACK float kernels: the metrics agree to 1e-6. int8 TFLite on
    tflite-runtime 2.14 runs other kernels than ai-edge-litert: it runs and is
    labelled with its runtime."""
    onnx = [copies["int8_onnx"], copies["float_onnx"]]
    tflite = [copies["float_tflite"], copies["int8_tflite"]]
    local = run_in_process("compare", "--reference", golden, *onnx, *tflite[:1], "--report", golden.parent / "here")
    remote_onnx = run_in_process("compare", "--reference", golden, *onnx, *on_board(board, pythons["onnxruntime"]),
                                 "--report", golden.parent / "onnx")
    remote_tflite = run_in_process("compare", "--reference", golden, *tflite, *on_board(board, pythons["tflite-runtime"]),
                                   "--report", golden.parent / "tflite")
    for result in (local, remote_onnx, remote_tflite):
        assert result.returncode == 0, result.stderr
    read = lambda name: json.loads((golden.parent / name / "parity.json").read_text())  # noqa: E731
    here = {c["name"]: c for c in read("here")["candidates"]}
    there = [c for name in ("onnx", "tflite") for c in read(name)["candidates"]]
    checked = 0
    for candidate in there:
        assert candidate["device"] == "device"
        if candidate["name"] in here:
            for metric, value in here[candidate["name"]]["metrics"].items():
                if isinstance(value, float):
                    assert candidate["metrics"][metric] == pytest.approx(value, abs=1e-6), (candidate["name"], metric)
            checked += 1
    assert checked == 3
    int8_on_board = next(c for c in there if c["name"] == Path(tflite[1]).name)
    assert int8_on_board["runtime"] == "tflite-runtime" and int8_on_board["metrics"]["top1_agreement"] > 0.9
    board_report = read("tflite")
    assert board_report["devices"][0]["runtimes"] == {"tflite-runtime": "2.14.0"}
    assert set(board_report["devices"][0]["p50_ms"]) == {Path(path).name for path in tflite}
    assert "| device |" in (golden.parent / "tflite" / "parity.md").read_text()
    assert board.left_behind() == []


def test_several_boards_run_in_parallel_with_a_row_each(board, pythons, digits_artifacts):
    result = run_in_process("bench", digits_artifacts["float_tflite"], "--runs", "3",
                            *on_board(board, pythons["tflite-runtime"], "device", "device2"))
    assert result.returncode == 0, result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.split()[1:2] == ["float.tflite"]]
    assert sorted(rows) == ["device", "device2"]


def test_an_unknown_host_key_is_refused(board, pythons, digits_artifacts):
    result = run_in_process("bench", digits_artifacts["float_tflite"], "--device", "ssh://device", "--ssh-config",
                            board.unknown_config, "--device-python", pythons["tflite-runtime"])
    assert "host key is not known" in one_line_error(result) and "known_hosts" in result.stderr


def test_a_changed_host_key_is_refused_without_advice_to_trust_it(board, pythons, digits_artifacts):
    result = run_in_process("bench", digits_artifacts["float_tflite"], "--device", "ssh://device", "--ssh-config",
                            board.changed_config, "--device-python", pythons["tflite-runtime"])
    line = one_line_error(result)
    assert "not the one known_hosts records" in line and "ssh-keyscan" not in line


@pytest.mark.parametrize("python, model, missing", [
    ("bare", "float_tflite", "numpy is not installed"),
    ("tflite-runtime", "int8_onnx", "onnxruntime is not installed"),
    ("/no/such/python3", "float_tflite", "is not on the device"),
    ("/bin/false", "float_tflite", "/bin/false on the device exited with code 1 before edge-resnet's agent started"),
])
def test_a_device_without_what_the_run_needs_is_one_line(board, pythons, digits_artifacts, python, model, missing):
    result = run_in_process("bench", digits_artifacts[model], "--runs", "2",
                            *on_board(board, pythons.get(python, python)))
    assert missing in one_line_error(result)


def test_an_artifact_the_board_cannot_load_is_one_line_naming_it(board, pythons, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer" * 64)
    result = run_in_process("bench", broken, *on_board(board, pythons["tflite-runtime"]))
    assert "broken.tflite is not a TFLite model" in one_line_error(result)


def test_names_with_spaces_and_shell_characters_pass_as_they_are(board, pythons, digits_artifacts, tmp_path):
    odd = "m o;$(touch pwned)`touch pwned2`'\".tflite"
    (tmp_path / odd).write_bytes(Path(digits_artifacts["float_tflite"]).read_bytes())
    python = Path(pythons["tflite-runtime"]).parent / "py thon;$(touch pwned3)"  # in the venv, so it is the venv
    python.symlink_to(Path(pythons["tflite-runtime"]).name)
    try:
        result = run_in_process("bench", tmp_path / odd, "--runs", "2", *on_board(board, str(python)), cwd=tmp_path)
    finally:
        python.unlink()
    assert result.returncode == 0, result.stderr
    assert odd in result.stdout
    everywhere = [*tmp_path.rglob("pwned*"), *board.folder.rglob("pwned*"), *Path.home().glob("pwned*")]
    assert everywhere == []


def remote_agents(python):
    found = subprocess.run(["pgrep", "-f", f"^{python} -c"], capture_output=True, text=True)
    return found.stdout.split()


def start_long_bench(board, python, model, *extra):
    # a shell runs background jobs with SIGINT ignored, and Python keeps an inherited ignore: start the CLI with
    # Ctrl-C's default disposition, as a terminal would, whatever launched the test run
    process = subprocess.Popen([*COMMAND, "bench", str(model), "--duration", "60", *on_board(board, python), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for _ in range(300):
        if remote_agents(python):
            time.sleep(1.0)  # into the timed runs
            return process
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"the run never started on the board: {process.communicate()}")


def finished(process):
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def gone(python):
    for _ in range(100):
        if not remote_agents(python):
            return True
        time.sleep(0.1)
    return False


def test_a_dropped_connection_is_one_line_and_stops_the_board(board, pythons, digits_artifacts):
    python = pythons["tflite-runtime"]
    process = start_long_bench(board, python, digits_artifacts["int8_tflite"])
    for pid in board.session_processes():  # the server side of the connection dies
        os.kill(pid, signal.SIGKILL)
    assert "connection dropped" in one_line_error(finished(process))
    assert gone(python) and board.left_behind() == []


def test_a_run_past_the_device_timeout_is_stopped_there_too(board, pythons, digits_artifacts):
    python = pythons["tflite-runtime"]
    result = subprocess.run([*COMMAND, "bench", str(digits_artifacts["int8_tflite"]), "--duration", "60",
                             "--device-timeout", "3", *on_board(board, python)], capture_output=True, text=True,
                            env=cli_env(), timeout=120)
    assert "--device-timeout 3 s" in one_line_error(result)
    assert gone(python) and board.left_behind() == []


def test_ctrl_c_stops_the_remote_process_too(board, pythons, digits_artifacts):
    python = pythons["tflite-runtime"]
    process = start_long_bench(board, python, digits_artifacts["int8_tflite"])
    process.send_signal(signal.SIGINT)
    result = finished(process)
    assert result.returncode == 130, result.stderr
    assert gone(python) and board.left_behind() == []


@pytest.mark.parametrize("flags, problem", [
    (["--device", "http://board"], "--device takes ssh://"),
    (["--device", "ssh://-oProxyCommand=touch"], "--device takes ssh://"),
    (["--device", "ssh://a$(id)b"], "--device takes ssh://"),
    (["--device", "ssh://board:0"], "--device takes ssh://"),
    (["--device", "ssh://@board"], "--device takes ssh://"),
    (["--device", "ssh://pi:secret123@board"], "without a password"),
    (["--device", "ssh://pi:secret123@board/x"], "--device takes ssh://"),
    (["--device", "scp://pi:s3c#secret123@board"], "--device takes ssh://"),
    (["--device", "ssh://board", "--threads", "100000"], "--threads is a whole number from 1 to 256"),
    (["--device", "ssh://board", "--device-timeout", "0"], "--device-timeout"),
    (["--device", "ssh://board", "--device", "ssh://board"], "the same board twice"),
    (["--device", "ssh://board", "--ssh-config", "/no/such/config"], "--ssh-config file not found"),
    # without --device they were dropped without a word
    (["--device-timeout", "0"], "--device-timeout: for runs on a board, and no --device names one; add --device"),
    (["--ssh-config", "/no/such/config", "--device-cache-clear"], "--ssh-config, --device-cache-clear: for runs on a"),
])
def test_device_options_are_checked_before_any_connection(digits_artifacts, flags, problem):
    result = run_in_process("bench", digits_artifacts["float_tflite"], *flags)
    assert problem in one_line_error(result)
    assert "secret123" not in result.stderr + result.stdout  # a password given is never echoed into logs


def test_convert_runs_its_parity_and_latency_stages_on_the_board(board, pythons, tmp_path):
    result = run_in_process("convert", "--quantize", "int8", "--formats", "tflite", "--no-per-layer",
                            "--bench-runs", "3", "--output", tmp_path / "out",
                            *on_board(board, pythons["tflite-runtime"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    on_device = report["on_device"]
    assert [c["device"] for c in on_device["candidates"]] == ["device", "device"]
    assert {c["runtime"] for c in on_device["candidates"]} == {"tflite-runtime"}
    board_latency = on_device["devices"][0]["p50_ms"]
    assert {row["artifact"]: row["p50_ms"] for row in report["artifacts"]} == board_latency
    stages = [stage["stage"] for stage in report["stages"]]
    assert "parity and latency on device over SSH" in stages and "latency" not in stages
    assert "p50 ms measured on device (" in result.stdout
    assert "## On the device (over SSH)" in (tmp_path / "out" / "report.md").read_text()
    assert board.left_behind() == []
