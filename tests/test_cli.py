"""The command line as a user runs it. A real process where the process is
the point (the entry point, determinism across processes, progress bars on
the terminal); in-process main() for the option and input checks."""

import json
import re

import numpy as np
import pytest

from edge_resnet import __version__
from tests.cli import run_cli, run_in_process


def test_version_and_help():
    assert run_cli("--version").stdout.strip() == f"edge-resnet {__version__}"
    result = run_cli("--help")
    assert result.returncode == 0 and "summary" in result.stdout
    result = run_cli("frobnicate")  # a usage error, in a real process: exit 2, one line
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "invalid choice" in result.stderr


@pytest.mark.parametrize("command", ["summary", "fold", "quantize", "convert"])
def test_every_subcommand_has_help_with_an_example(command):
    result = run_in_process(command, "--help")
    assert result.returncode == 0
    assert "example:" in result.stdout and f"edge-resnet {command}" in result.stdout


def test_summary_counts_resnet50_from_its_layers():
    result = run_in_process("summary", "--model", "resnet50", "--input-size", "224")
    assert result.returncode == 0, result.stderr
    total = re.search(r"^total\s+([\d,]+)\s+([\d,]+)$", result.stdout, re.MULTILINE)
    params, macs = (int(value.replace(",", "")) for value in total.groups())
    assert params == 25_636_712
    assert 3.8e9 < macs < 4.2e9
    stage_macs = re.findall(r"^(conv\d|head)\s+\S+\s+[\d,]+\s+([\d,]+)$", result.stdout, re.MULTILINE)
    assert [stage for stage, _ in stage_macs] == ["conv1", "conv2", "conv3", "conv4", "conv5", "head"]
    assert sum(int(m.replace(",", "")) for _, m in stage_macs) == macs
    # conv1: 112x112 outputs x 64 filters x 7x7x3 taps.
    assert int(stage_macs[0][1].replace(",", "")) == 112 * 112 * 64 * 7 * 7 * 3


def test_summary_macs_scale_with_input_area():
    small = run_in_process("summary", "--model", "resnet18", "--input-size", "64", "--shortcut", "A")
    large = run_in_process("summary", "--model", "resnet18", "--input-size", "128", "--shortcut", "A")
    pattern = r"^total\s+[\d,]+\s+([\d,]+)$"
    macs = [int(re.search(pattern, r.stdout, re.MULTILINE).group(1).replace(",", "")) for r in (small, large)]
    # Everything but the fc layer scales with the pixel count.
    assert 3.9 < macs[1] / macs[0] <= 4.0


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["summary", "--input-size", "16"], "at least 32"),
        (["summary", "--input-size", "0"], "positive integers"),  # 0 is refused, not taken as "the default"
        (["summary", "--classes", "0"], "classes must be a positive integer"),
        (["summary", "--model", "resnet20"], "invalid choice"),
        (["summary", "--width", "0"], "width must be a positive number"),
        # builds past the builders' limits outgrew memory in a traceback
        (["summary", "--width", "1000"], "width must be a positive number up to 4"),
        (["summary", "--classes", "100000000"], "classes must be at most 100,000"),
        (["fold", "resnet18", "--input-size", "100000", "--output", "x.keras"],
         "input height and width must be at most 4096"),
        # architecture options with nothing to apply to were dropped without a word
        (["summary", "--model", "resnet34", "--plain", "--shortcut", "A"], "--shortcut has none to set"),
        (["summary", "--model", "resnet18", "--stride-at", "v1.5"], "resnet18 has basic blocks"),
        (["frobnicate"], "invalid choice"),
        (["convert", "--eval-size", "0"], "--eval-size must be at least 1. Received: 0"),
        (["convert", "--bench-runs", "-1"], "--bench-runs must be 0 or more. Received: -1"),
        (["convert", "--output", ""], "--output must name a directory"),
        (["quantize", "resnet18", "--output", "out/.tflite"],
         "--output must be a file name ending in .tflite or .onnx"),
        (["quantize", "resnet18", "--min-sqnr", "1000", "--calibration", "x", "--output", "m.tflite"],
         "in dB, above 0 and below 200 (e.g. 30). Received: 1000.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, fragment):
    result = run_in_process(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_fold_command_writes_a_loadable_folded_model(tmp_path):
    import keras

    output = tmp_path / "nested" / "folded.keras"
    result = run_in_process("fold", "resnet18", "--input-size", "32", "--classes", "10", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "folded 20 BatchNormalization layers, left 0" in result.stdout
    folded = keras.saving.load_model(output)
    assert not [l for l in folded.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert sorted(p.name for p in output.parent.iterdir()) == ["folded.keras"]


def test_fold_command_json_report_on_a_saved_model(tmp_path):
    import json

    from edge_resnet.model.resnet import build_resnet

    source = tmp_path / "model.keras"
    build_resnet(34, input_shape=(32, 32, 3), classes=5, width=0.25, shortcut="C").save(source)
    result = run_in_process("fold", str(source), "--output", str(tmp_path / "out.keras"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["folded"]) == 1 + 2 * 16 + 16  # stem, two per block, a projection per block and report["skipped"] == []
    assert report["params_before"] > report["params_after"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["fold", "missing.keras", "--output", "out.keras"], "model file not found"),
        (["fold", "model.onnx", "--output", "out.keras"], "builder name"),
        (["fold", "resnet18", "--output", "out.h5"], "must end in .keras"),
        (["fold", "resnet18", "--input-size", "32", "--weights", "none.h5", "--output", "out.keras"], "weights file not found"),
        (["fold", "resnet50", "--weights", "demo", "--output", "out.keras"], "--weights demo is convert's offline demo"),
    ],
)
def test_fold_bad_input_writes_nothing(tmp_path, args, fragment):
    args = [str(tmp_path / a) if a.endswith((".keras", ".h5", ".onnx")) else a for a in args]
    result = run_in_process(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory):
    from edge_resnet.model.resnet import build_resnet

    path = tmp_path_factory.mktemp("model") / "small.keras"
    build_resnet(18, input_shape=(32, 32, 3), classes=10, width=0.25, classifier_activation=None).save(path)
    return path


@pytest.mark.parametrize("arguments", [
    ["quantize", "MODEL", "--classes", "7", "--calibration", "DIGITS", "--output", "OUT/m.tflite"],
    ["fold", "MODEL", "--input-size", "64", "--output", "OUT/f.keras"],
    ["reference", "MODEL", "--weights", "random", "--data", "DIGITS", "--output", "OUT/golden"],
    ["compare", "--reference", "MODEL", "--classes", "7", "--input-size", "32", "--data", "DIGITS", "ARTIFACT"],
])
def test_builder_options_with_a_keras_file_are_refused(arguments, small_model_file, tmp_path, float_artifact):
    """A .keras file carries its own weights, size and classes: options that would be ignored (and recorded
    as if used) are refused in one line, by every command that loads one; its own size repeated passes."""
    from edge_resnet.calibration import digits_folder

    out = tmp_path / "out"
    out.mkdir()
    named = {"MODEL": str(small_model_file), "DIGITS": str(digits_folder()), "ARTIFACT": str(float_artifact)}
    result = run_in_process(*[named.get(argument, argument.replace("OUT", str(out))) for argument in arguments])
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ("small.keras, which carries its own weights and takes 32x32 images to 10 outputs: --weights, "
            "--input-size and --classes apply to builder names") in result.stderr
    assert "--input-size 32" not in result.stderr  # its own size, repeated, is no mistake
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def float_artifact(small_model_file, tmp_path_factory):
    """The small model as a float32 .tflite, an artifact for compare to check."""
    from edge_resnet.model.resnet import load_model
    from edge_resnet.quantize.tflite import float_tflite

    path = tmp_path_factory.mktemp("artifact") / "small_float32.tflite"
    path.write_bytes(float_tflite(load_model(str(small_model_file))))
    return path


def test_quantize_command_writes_int8_tflite_and_recipe(small_model_file, tmp_path):
    from edge_resnet.calibration import digits_folder

    output = tmp_path / "small_int8.tflite"
    result = run_cli("quantize", str(small_model_file), "--calibration", str(digits_folder()),
                     "--calibration-size", "30", "--input-type", "uint8", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "calibration: 30 samples" in result.stdout
    assert "fully integer: yes" in result.stdout and "input uint8, output int8" in result.stdout
    # Only the uint8 -> int8 conversion at the input runs outside XNNPACK.
    assert "XNNPACK runs only part of the model (not: QUANTIZE)" in result.stdout
    assert "calibrating: 30/30" in result.stderr  # the progress bar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small_int8.tflite", "small_int8.tflite.json"]
    # Deterministic across processes: a second run, in this process, gives the same bytes.
    again = tmp_path / "again" / "small_int8.tflite"
    run_in_process("quantize", str(small_model_file), "--calibration", str(digits_folder()),
                   "--calibration-size", "30", "--input-type", "uint8", "--output", str(again))
    assert again.read_bytes() == output.read_bytes()


def test_quantize_warns_in_one_line_for_few_samples_and_unreadable_images(small_model_file, tmp_path):
    from PIL import Image

    calibration = tmp_path / "calib"
    calibration.mkdir()
    for index in range(4):
        Image.fromarray(np.full((40, 40, 3), index * 60, np.uint8)).save(calibration / f"{index}.png")
    (calibration / "broken.jpg").write_bytes(b"nope")
    result = run_in_process("quantize", str(small_model_file), "--calibration", str(calibration),
                            "--output", str(tmp_path / "m.tflite"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("edge-resnet: warning:")]
    assert any("skipped 1 unreadable images" in w and "broken.jpg" in w for w in warnings)
    assert any("only 4 calibration samples" in w for w in warnings)


def _calibration_inputs(tmp_path):
    (tmp_path / "empty").mkdir(parents=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"junk")
    np.save(tmp_path / "wrong_shape.npy", np.zeros((4, 30, 30, 3), np.float32))
    np.save(tmp_path / "nan.npy", np.full((4, 32, 32, 3), np.nan, np.float32))
    return tmp_path


@pytest.mark.parametrize(
    "calibration, extra, fragment",
    [
        ("missing_dir", [], "data not found"),
        ("empty", [], "no images"),
        ("junk", [], "none of the images"),
        ("wrong_shape.npy", ["--preprocessed"], "must be (N, 32, 32, 3)"),
        ("nan.npy", ["--preprocessed"], "NaN or Inf"),
        ("junk", ["--preprocessed"], "--preprocessed is for .npy/.npz arrays that are model input already"),
        ("empty", ["--calibration-size", "0"], "--calibration-size must be at least 1. Received: 0"),
        (None, [], "needs --calibration"),
    ],
)
def test_quantize_bad_calibration_is_one_line_exit_2_and_writes_nothing(
    small_model_file, tmp_path, calibration, extra, fragment
):
    inputs = _calibration_inputs(tmp_path / "inputs")
    out = tmp_path / "out"
    out.mkdir()
    args = ["quantize", str(small_model_file), "--output", str(out / "m.tflite"), *extra]
    if calibration:
        args += ["--calibration", str(inputs / calibration)]
    result = run_in_process(*args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("edge-resnet: warning:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert list(out.iterdir()) == []


def test_quantize_command_writes_int8_onnx(small_model_file, tmp_path):
    from edge_resnet.calibration import digits_folder

    output = tmp_path / "small_int8.onnx"
    result = run_in_process("quantize", str(small_model_file), "--calibration", str(digits_folder()),
                            "--calibration-size", "20", "--output", str(output), "--activation-type", "int8")
    assert result.returncode == 0, result.stderr
    assert "activations int8" in result.stdout and "passes onnx.checker" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small_int8.onnx", "small_int8.onnx.json"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--quantize", "none", "--opset", "21"], "between 13 and 18"),
        (["--quantize", "float16"], "float32 (none) and int8"),
        (["--quantize", "none", "--output-type", "int8"],
         "--output-type int8 needs --quantize int8; --quantize none keeps"),
    ],
)
def test_quantize_onnx_bad_requests_fail_before_any_work(small_model_file, tmp_path, args, fragment):
    result = run_in_process("quantize", str(small_model_file), "--output", str(tmp_path / "m.onnx"), *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [
    ["fold", "{model}", "--output", "{model}"],
    ["quantize", "{model}", "--calibration", "{float_model}", "--output", "{float_model}"],
    ["quantize", "{float_model}", "--calibration", "{digits}", "--output", "{float_model}"],
])
def test_an_output_that_is_an_input_is_refused(small_model_file, tmp_path, command):
    """Writing the output would replace the user's checkpoint (with its optimizer state)."""
    import hashlib
    import shutil

    from edge_resnet.calibration import digits_folder

    model = tmp_path / "mine.keras"
    shutil.copy(small_model_file, model)
    float_model = tmp_path / "mine_float32.tflite"
    float_model.write_bytes(b"my float model")
    before = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (model, float_model)}
    names = {"model": model, "float_model": float_model, "digits": digits_folder()}
    result = run_in_process(*[part.format(**names) for part in command])
    assert result.returncode == 2 and "would replace your file" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in (model, float_model)} == before


def test_a_recipe_json_that_would_replace_an_input_is_refused(small_model_file, tmp_path):
    """The recipe JSON beside the output is an output too: one named like an input is refused, the input kept."""
    from edge_resnet.calibration import digits_folder

    labels = tmp_path / "m.tflite.json"
    labels.write_text("\n".join(str(digit) for digit in range(10)) + "\n")
    result = run_in_process("quantize", str(small_model_file), "--calibration", str(digits_folder()),
                            "--max-accuracy-drop", "50", "--labels", str(labels),
                            "--output", str(tmp_path / "m.tflite"))
    assert result.returncode == 2 and f"the output {labels} is the input {labels}" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert labels.read_text().startswith("0\n1\n") and not (tmp_path / "m.tflite").exists()


def test_compare_feeds_images_as_the_artifacts_were_calibrated(small_model_file, tmp_path):
    """An int8 artifact calibrated on tf input, compared against its Keras model: compare takes the recipe's
    preprocessing when none is asked for, and refuses another one in one line (caffe input would score the
    ranges, not the quantization)."""
    from edge_resnet.calibration import digits_folder

    artifact = tmp_path / "tf_int8.tflite"
    made = run_in_process("quantize", str(small_model_file), "--calibration", str(digits_folder()),
                          "--calibration-size", "20", "--calibration-method", "minmax", "--preprocessing", "tf",
                          "--output", str(artifact))
    assert made.returncode == 0, made.stderr
    compare = ["compare", "--reference", str(small_model_file), "--data", str(digits_folder()), "--eval-size", "20",
               "--bench-runs", "0", "--no-per-layer", str(artifact)]
    taken = run_in_process(*compare)
    assert taken.returncode == 0, taken.stderr
    assert "preprocessing: --preprocessing tf, as the artifacts' recipe JSONs record their calibration" in taken.stdout
    asked = run_in_process(*compare, "--preprocessing", "tf")
    assert asked.returncode == 0 and "recipe JSONs record" not in asked.stdout, asked.stderr
    assert _sqnr_db(asked.stdout) == _sqnr_db(taken.stdout) > 25  # the same images, made as calibrated
    refused = run_in_process(*compare, "--preprocessing", "caffe")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert ("tf_int8.tflite was calibrated on images preprocessed with --preprocessing tf, and compare was asked for "
            "--preprocessing caffe") in refused.stderr


def _sqnr_db(stdout):
    """The SQNR compare's table prints for tf_int8.tflite."""
    (row,) = [line for line in stdout.splitlines() if line.startswith("| tf_int8.tflite |")]
    return float(re.search(r"\| ([\d.]+) ±", row).group(1))


def test_quantize_seed_draws_the_random_weights(tmp_path):
    """--seed is the seed of random weights too: another seed, another model."""
    from edge_resnet.model.source import model_source

    outputs = [tmp_path / f"seed{seed}.onnx" for seed in (0, 1)]
    for seed, output in zip((0, 1), outputs):
        result = run_in_process("quantize", "resnet18", "--input-size", "32", "--classes", "10", "--quantize",
                                "none", "--seed", str(seed), "--output", output)
        assert result.returncode == 0, result.stderr
    again = tmp_path / "seed1_again.onnx"
    assert run_in_process("quantize", "resnet18", "--input-size", "32", "--classes", "10", "--quantize", "none",
                          "--seed", "1", "--output", again).returncode == 0
    assert outputs[0].read_bytes() != outputs[1].read_bytes() and again.read_bytes() == outputs[1].read_bytes()
    assert model_source("resnet18", None, 7)["weights"] == "resnet18 with random weights (seed 7)"
    recorded = json.loads((tmp_path / "seed1.onnx.json").read_text())["source_model"]
    assert recorded["weights"] == "resnet18 with random weights (seed 1)" and recorded["sha256"] is None

    np.savez(tmp_path / "one.npz", x=np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8))
    golden = {}
    for seed in (0, 1):  # reference draws them alike, on one image (the seed also orders a data set)
        made = run_in_process("reference", "resnet18", "--input-size", "32", "--classes", "10", "--data",
                              tmp_path / "one.npz", "--seed", str(seed), "--output", tmp_path / f"golden{seed}")
        assert made.returncode == 0, made.stderr
        manifest = json.loads((tmp_path / f"golden{seed}" / "golden.json").read_text())
        assert manifest["model"]["weights"] == f"resnet18 with random weights (seed {seed})"
        golden[seed] = np.load(tmp_path / f"golden{seed}" / "golden.npy")
    assert not np.allclose(golden[0], golden[1])
