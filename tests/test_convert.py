"""`edge-resnet convert` end to end, through the real command line: the
offline default run, a small run on a user's own model, gates, an
interrupted run, and every expected failure as one line with exit code 2."""

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edge_resnet.quantize.bias_correction import describe_correction
from edge_resnet.quantize.ranges import DEFAULT_METHOD
from edge_resnet.quantize.recipe import record_path
from edge_resnet.quantize.statistics import ActivationStatistics
from tests.cli import COMMAND, cli_env, run_cli, run_in_process, run_without_tensorflow
from tests.digits import TRAIN_SAMPLES, digit_pixels

DEMO_FILES = sorted([
    "report.html", "report.json", "report.md", "resnet50_demo_folded.keras", "calibration_statistics.npz",
    "golden.json", "golden.npy",
    *(f"resnet50_demo_{kind}.{fmt}{extra}" for kind in ("float32", "int8") for fmt in ("tflite", "onnx")
      for extra in ("", ".json")),
])


def staging_folders(parent):
    return sorted(p.name for p in Path(parent).iterdir() if ".partial-" in p.name)


def start_cli(*args, cwd):
    return subprocess.Popen([*COMMAND, *map(str, args)], cwd=cwd, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_file(folder_glob_parent, pattern, process, limit_s=300):
    """Poll until a staging folder holds a file matching `pattern`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and process.poll() is None:
        if list(Path(folder_glob_parent).glob(f".*.partial-*/{pattern}")):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`edge-resnet convert --quantize int8` with nothing else, in a fresh
    folder, after a run there was killed half-way."""
    workdir = tmp_path_factory.mktemp("default")
    killed = start_cli("convert", "--quantize", "int8", cwd=workdir)
    reached = wait_for_file(workdir, "*.tflite", killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left_by_kill = sorted(p.name for p in workdir.iterdir())
    result = run_cli("convert", "--quantize", "int8", cwd=workdir)
    output = workdir / "edge-resnet-output"
    report = json.loads((output / "report.json").read_text()) if (output / "report.json").is_file() else None
    return {"reached": reached, "left_by_kill": left_by_kill, "result": result, "output": output,
            "report": report, "workdir": workdir}


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_that_looks_finished(default_run):
    assert default_run["reached"], "the first run never wrote a .tflite to kill it after"
    # only the hidden staging folder and the dead run's lock remain: no output directory, no artifact
    # under a final name
    left = default_run["left_by_kill"]
    assert len(left) == 2 and left[0] == ".edge-resnet-output.lock", left
    assert left[1].startswith(".edge-resnet-output.partial-")
    # and the next run starts clean: it takes over the stale lock, the stale staging folder is gone
    assert staging_folders(default_run["workdir"]) == []
    assert not (default_run["workdir"] / ".edge-resnet-output.lock").exists()


@pytest.mark.slow
def test_default_run_converts_the_trained_demo_on_held_out_digits(default_run):
    result, report, output = default_run["result"], default_run["report"], default_run["output"]
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in output.iterdir()) == DEMO_FILES
    # the terminal says which weights and data were used and ends with the summary table
    assert "demo ResNet-50" in result.stdout and "resnet50_w025_digits32.weights.h5" in result.stdout
    assert "embedded digits" in result.stdout
    table = result.stdout[result.stdout.index("artifact "):]
    assert all(name in table for name in DEMO_FILES if name.endswith((".tflite", ".onnx")))
    # an int8 artifact's SQNR with its standard error over the evaluation images, as the report records it
    int8_row = next(row for row in report["artifacts"] if row["artifact"] == "resnet50_demo_int8.tflite")
    int8_line = next(line for line in table.splitlines() if line.startswith("resnet50_demo_int8.tflite"))
    assert f"{int8_row['sqnr_db']:.1f} ±{int8_row['sqnr_standard_error_db']:.1f}" in int8_line
    # calibration and evaluation: disjoint parts of the 597 embedded digits
    calibration, evaluation = report["data"]["calibration"], report["data"]["evaluation"]
    assert calibration["size"] == 200 and evaluation["size"] == 397
    assert calibration["fingerprint"] != evaluation["fingerprint"]
    # a trained model: meaningful accuracy, and int8 keeps it
    assert report["parity"]["reference"]["metrics"]["top1"] >= 0.90
    for row in report["artifacts"]:
        assert row["top1_drop_points"] <= 2.0 and row["top1_agreement"] >= 0.97, row
        assert row["p50_ms"] > 0 and row["size_bytes"] == (output / row["artifact"]).stat().st_size
        record = json.loads(record_path(output / row["artifact"]).read_text())
        assert record["calibration"] is None or record["calibration"]["fingerprint"] == calibration["fingerprint"]
    sizes = {row["artifact"]: row["size_bytes"] for row in report["artifacts"]}
    assert sizes["resnet50_demo_int8.tflite"] < 0.4 * sizes["resnet50_demo_float32.tflite"]
    # both int8 artifacts take their ranges from the one statistics pass saved beside them
    statistics = ActivationStatistics.load(output / "calibration_statistics.npz")
    ranges = [json.loads(record_path(output / name).read_text())["activation_ranges"]
              for name in ("resnet50_demo_int8.tflite", "resnet50_demo_int8.onnx")]
    assert ranges[0]["method"] == ranges[1]["method"] == DEFAULT_METHOD
    assert ranges[0]["statistics"] == ranges[1]["statistics"]
    assert ranges[0]["statistics"]["fingerprint"] == statistics.fingerprint()
    # what the int8 TFLite's output grid alone does to the calibration images' top-1 (the ONNX's logits are float)
    assert int8_row["output_grid"] == json.loads(record_path(output / "resnet50_demo_int8.tflite").read_text())[
        "output_grid"] and int8_row["output_grid"]["calibration_images"] == 200
    assert next(row for row in report["artifacts"] if row["artifact"] == "resnet50_demo_int8.onnx")["output_grid"] is None

    # auto chose each artifact's rule on its own runtime, and the terminal and the report say what and why
    assert "ai-edge-litert" in ranges[0]["selection"]["scored_on"] and "onnxruntime" in ranges[1]["selection"]["scored_on"]
    for name, record in zip(("resnet50_demo_int8.tflite", "resnet50_demo_int8.onnx"), ranges):
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"{name}:"))
        assert record["selection"]["chosen_rule"] in line and "chosen on 200 held-out calibration images" in line
        assert (f"it stays best (within 0.1 dB) on {record['selection']['stays_best_share']:.0%} of 1000 resamples "
                "of those images") in line
        # the default, both formats: corrected where it raises the logits' mean per-image SQNR on the calibration images
        biases = json.loads(record_path(output / name).read_text())["bias_correction"]
        scores = biases["calibration_sqnr_db"]
        assert biases["mode"] == "auto" and biases["corrected"] == (scores["corrected"] > scores["as_quantized"])
        assert line.endswith(describe_correction(biases))
    assert "## Activation ranges" in (output / "report.md").read_text()
    assert "How sure each choice is" in (output / "report.md").read_text()
    assert statistics.calibration["fingerprint"] == calibration["fingerprint"]
    # per-layer errors by Keras layer name, from the one calibration
    assert set(report["parity"]["layers"]) == {"resnet50_demo_int8.tflite", "resnet50_demo_int8.onnx"}
    assert all(layer["layer"].startswith("conv") or layer["layer"] in ("avg_pool", "predictions")
               for layers in report["parity"]["layers"].values() for layer in layers)
    assert [stage["stage"] for stage in report["stages"]][:3] == ["load model", "read data", "fold BatchNorm"]
    assert report["peak_rss_mb"] > 0
    # every path in the published report names a published file, none the staging folder's
    assert ".partial-" not in (output / "report.json").read_text()
    named = [c["path"] for c in report["parity"]["candidates"]] + [t["model"] for t in report["latency"]]
    assert named and all(Path(path).parent == output.resolve() and Path(path).is_file() for path in named)
    assert "<img" in (output / "report.html").read_text()
    assert "| resnet50_demo_int8.tflite |" in (output / "report.md").read_text()


def test_the_ranges_section_adds_the_output_grid_notes_where_a_top1_changes():
    from edge_resnet.convert import range_lines

    rows = [{"artifact": "m_int8.tflite", "ranges": "minmax", "output_grid": {"calibration_images": 200,
                                                                             "top1_changed": 5},
             "output_grid_top1_changes": 0.02, "evaluation_images": 400, "top1_agreement": 0.95},
            {"artifact": "m_int8.onnx", "ranges": "minmax", "output_grid": None, "output_grid_top1_changes": None,
             "evaluation_images": 400, "top1_agreement": 0.97},
            {"artifact": "m_float32.tflite", "ranges": None, "output_grid": None, "output_grid_top1_changes": None,
             "evaluation_images": 400, "top1_agreement": 1.0}]
    lines = range_lines(rows)
    assert lines[0] == "  m_int8.tflite: minmax" and lines[3:] == ["  m_int8.onnx: minmax"]
    assert lines[1].startswith("  m_int8.tflite: its output's own int8 grid changes the top-1 of 5 of 200 "
                               "calibration images") and "--accuracy-control" in lines[1]
    assert lines[2].startswith("  m_int8.tflite: on the evaluation images, its output's own int8 grid alone changes "
                               "the top-1 of 2.00% of these images (8 of 400") and "disagreement of 5.00%" in lines[2]


@pytest.mark.slow
def test_the_output_folder_and_the_images_are_enough_for_parity_on_a_device(default_run, tmp_path):
    """Copied elsewhere, with TensorFlow and Keras unavailable, the output
    folder's golden outputs give the parity that convert reported."""
    import shutil

    from edge_resnet.data.images import Preprocessing, image_set

    device = tmp_path / "device"
    shutil.copytree(default_run["output"], device / "run")
    evaluation = default_run["report"]["data"]["evaluation"]
    images = image_set(evaluation["source"].removeprefix("folder "), Preprocessing(32, 32), size=None).root
    shutil.copytree(images, device / "digits")
    quantized = [device / "run" / f"resnet50_demo_int8.{fmt}" for fmt in ("tflite", "onnx")]
    result = run_without_tensorflow(tmp_path, "compare", "--reference", device / "run", *quantized,
                                    "--data", device / "digits", "--report", device / "parity", "--bench-runs", "3",
                                    "--min-agreement", "0.97")
    assert result.returncode == 0, result.stderr
    on_device = json.loads((device / "parity" / "parity.json").read_text())
    reported = {c["name"]: c["metrics"] for c in default_run["report"]["parity"]["candidates"]}
    for candidate in on_device["candidates"]:
        for metric, value in candidate["metrics"].items():
            assert value == pytest.approx(reported[candidate["name"]][metric], abs=1e-6), metric
    assert on_device["data"]["fingerprint"] == evaluation["fingerprint"]
    assert "- float on " in result.stdout and "resnet50_demo_int8.tflite on this CPU" in result.stdout


@pytest.mark.slow
def test_golden_outputs_of_the_folded_model_vouch_for_the_artifacts_made_from_it(default_run, tmp_path):
    """The GPU workflow: `reference` on convert's folded .keras (elsewhere),
    then compare the artifacts against those golden outputs; a model that is
    neither the source nor the folded one is still refused."""
    from edge_resnet.calibration import digits_folder

    output = default_run["output"]
    artifacts = [output / "resnet50_demo_int8.tflite", output / "resnet50_demo_int8.onnx"]
    made = run_in_process("reference", output / "resnet50_demo_folded.keras", "--data", digits_folder(),
                          "--eval-size", "40", "--output", tmp_path / "golden")
    assert made.returncode == 0, made.stderr
    compared = run_in_process("compare", "--reference", tmp_path / "golden", *artifacts, "--bench-runs", "0")
    assert compared.returncode == 0, compared.stderr
    assert "not checked" not in compared.stderr
    record = json.loads(record_path(artifacts[0]).read_text())["source_model"]
    assert record["folded_file"] == "resnet50_demo_folded.keras" and record["file"].endswith(".weights.h5")


@pytest.mark.slow
def test_a_second_run_needs_force_and_then_replaces_the_earlier_files(default_run):
    result = run_cli("convert", "--quantize", "int8", cwd=default_run["workdir"])
    assert result.returncode == 2 and "not empty" in result.stderr and "--force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def own_model(digits_model, tmp_path_factory):
    """The trained digits ResNet-18 as a user's .keras file, with training
    digits to calibrate on and held-out digits to evaluate on."""
    folder = tmp_path_factory.mktemp("own")
    digits_model.save(folder / "digits.keras")
    train, train_labels = digit_pixels(32, TRAIN_SAMPLES)
    test, test_labels = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    np.savez(folder / "train.npz", x=train, y=train_labels)
    np.savez(folder / "test.npz", x=test, y=test_labels)
    np.savez(folder / "zeros.npz", x=np.zeros((50, 32, 32, 3), np.uint8))
    return folder


@pytest.mark.slow
def test_small_run_on_own_model_for_a_uint8_device_and_force(own_model, tmp_path):
    from edge_resnet.device.tflite_inspect import inspect_tflite

    output = tmp_path / "out"
    (output / "notes.txt").parent.mkdir()
    (output / "notes.txt").write_text("mine")
    common = ["convert", "--model", own_model / "digits.keras", "--calibration", own_model / "train.npz",
              "--eval", own_model / "test.npz", "--output", output, "--bench-runs", "3", "--no-per-layer",
              "--max-accuracy-drop", "1", "--min-agreement", "0.98", "--force"]
    result = run_in_process(*common, "--formats", "tflite", "--input-type", "uint8")
    assert result.returncode == 0, result.stderr
    report = json.loads((output / "report.json").read_text())
    assert report["parity"]["gates"]["failures"] == []
    assert [row["artifact"] for row in report["artifacts"]] == ["digits_float32.tflite", "digits_int8.tflite"]
    assert inspect_tflite(output / "digits_int8.tflite").input_dtype == "uint8"
    assert report["data"]["evaluation"]["size"] == 597 and report["data"]["evaluation_from"] == "--eval"

    again = run_in_process(*common, "--formats", "onnx")
    assert again.returncode == 0, again.stderr
    names = sorted(p.name for p in output.iterdir())
    assert "digits_int8.onnx" in names and not any(name.endswith(".tflite") for name in names)
    assert "notes.txt" in names  # files the tool did not write are left alone


@pytest.mark.slow
def test_failed_gate_exits_1_after_writing_the_report(own_model, tmp_path):
    output = tmp_path / "out"
    result = run_in_process("convert", "--model", own_model / "digits.keras", "--calibration",
                            own_model / "zeros.npz", "--eval", own_model / "test.npz", "--formats", "tflite",
                            "--output", output, "--bench-runs", "0", "--no-per-layer", "--max-accuracy-drop", "1",
                            "--min-agreement", "0.98")
    assert result.returncode == 1, result.stderr
    assert "gate failed: digits_int8.tflite" in result.stderr
    report = json.loads((output / "report.json").read_text())
    assert len(report["parity"]["gates"]["failures"]) == 2
    # the float artifact is reported, not gated
    assert all("float32" not in failure for failure in report["parity"]["gates"]["failures"])


def _bad_inputs(folder):
    import keras

    (folder / "empty").mkdir()
    (folder / "corrupt" / "a").mkdir(parents=True)
    for name in ("x.png", "y.png"):
        (folder / "corrupt" / "a" / name).write_bytes(b"not an image")
    (folder / "a_file").write_text("")
    (folder / "dangling").symlink_to(folder / "elsewhere" / "made_through_a_link")
    from edge_resnet.model.resnet import build_resnet

    build_resnet(18, input_shape=(32, 32, 3), classes=10, width=0.25).save_weights(folder / "resnet18.weights.h5")
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(folder / "lambda.keras")
    return folder


DIGITS = "{digits}"
BAD_INPUTS = [
    (["--weights", "missing.weights.h5", "--calibration", DIGITS], "weights file not found"),
    (["--weights", "resnet18.weights.h5", "--input-size", "32", "--classes", "10", "--calibration", DIGITS],
     "Build the model with the depth"),
    (["--weights", "random", "--calibration", "empty"], "no images"),
    (["--weights", "random", "--calibration", "corrupt"], "could be read"),
    (["--output", "a_file/out"], "cannot write the output directory"),
    (["--output", "dangling/out"], "dangling is a symbolic link to"),
    (["--output", "dangling"], "dangling is a symbolic link to"),
    (["--weights", "random", "--calibration", "empty", "--output", "new/deeper/out"], "no images"),
    (["--weights", "random", "--calibration", DIGITS, "--eval", "corrupt"], "cannot read evaluation image"),
    (["--model", "resnet20"], "unknown model 'resnet20'"),
    (["--quantize", "none", "--min-agreement", "0.99"], "--quantize none"),
    (["--quantize", "float16", "--formats", "tflite,onnx"], "ONNX export offers int8 and none"),
    (["--model", "resnet18"], "give --weights for resnet18"),
    (["--weights", "imagenet"], "give --calibration"),
    (["--input-size", "64"], "the demo model takes 32x32"),
    (["--model", "lambda.keras", "--calibration", DIGITS], "never runs code from them"),
    (["--calibration", DIGITS, "--eval", DIGITS], "also calibration images"),
    (["--quantize", "float16", "--formats", "tflite", "--bias-correction"], "applies to --quantize int8 only"),
    (["--quantize", "float16", "--formats", "tflite", "--calibration-score", "per-image"],
     "--calibration-score, --statistics and --fallback-precision apply to --quantize int8 only"),
    (["--calibration-method", "minmax", "--calibration-score", "per-image"],
     "--calibration-method minmax tries none: leave --calibration-score out or use --calibration-method auto"),
]


def test_a_folder_at_an_artifacts_name_is_refused_before_the_work(tmp_path):
    output = tmp_path / "out"
    (output / "resnet50_demo_int8.tflite").mkdir(parents=True)
    (output / "notes.txt").write_text("mine")
    result = run_in_process("convert", "--quantize", "int8", "--output", output, "--force")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "resnet50_demo_int8.tflite is a folder where this run writes a file" in result.stderr
    assert sorted(p.name for p in output.iterdir()) == ["notes.txt", "resnet50_demo_int8.tflite"]
    assert staging_folders(tmp_path) == []


@pytest.mark.parametrize("args, fragment", BAD_INPUTS, ids=[fragment for _, fragment in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, fragment):
    from edge_resnet.calibration import digits_folder

    folder = _bad_inputs(tmp_path)
    args = [str(digits_folder()) if arg == DIGITS else arg for arg in args]
    before = sorted(p.name for p in folder.iterdir())
    result = run_in_process("convert", *args, *([] if "--output" in args else ["--output", "out"]), cwd=folder)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == before  # no output folder, no staging left
    assert not (tmp_path / "elsewhere").exists()


def test_staging_publishes_whole_runs_and_cleans_what_killed_runs_left(tmp_path):
    from edge_resnet.errors import ConfigError
    from edge_resnet.files import STAGING_MARKER, open_staging, publish

    output = tmp_path / "out"
    stale = tmp_path / ".out.partial-999999999-abcd_123"  # made by a run whose process is gone
    stale.mkdir()
    (stale / STAGING_MARKER).write_text("999999999")
    staging = open_staging(output)
    assert not stale.exists() and staging.parent == tmp_path and not output.exists()
    (staging / "a.tflite").write_text("first")
    (staging / "report.json").write_text("{}")
    publish(staging, output)
    assert sorted(p.name for p in output.iterdir()) == ["a.tflite", "report.json"] and not staging.exists()

    with pytest.raises(ConfigError, match="not empty"):
        open_staging(output)
    (output / "mine.txt").write_text("user file")
    staging = open_staging(output, force=True)
    (staging / "b.onnx").write_text("second")
    (staging / "report.json").write_text("{}")
    publish(staging, output, replaced={"a.tflite", "report.json"}, last=("report.json",))
    assert sorted(p.name for p in output.iterdir()) == ["b.onnx", "mine.txt", "report.json"]
    assert staging_folders(tmp_path) == []
