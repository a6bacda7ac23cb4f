"""Accuracy parity on real data: a ResNet trained on handwritten digits, its
int8 artifacts, and a broken artifact the gates must catch."""

import sys

import numpy as np
import pytest

from edge_resnet.data.images import Preprocessing, image_set, images_from_array
from edge_resnet.errors import DataError
from edge_resnet.check.parity import Tally, compare, parity_report, topk
from tests.cli import main_in_process, run_cli, run_in_process
from tests.digits import TRAIN_SAMPLES, digit_pixels


@pytest.fixture(scope="module")
def test_split():
    """The 597 held-out digits (never trained or calibrated on)."""
    pixels, labels = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    return images_from_array(pixels, Preprocessing(32, 32), size=None, labels=labels), pixels, labels


@pytest.fixture(scope="module")
def artifacts(digits_artifacts):
    return {"tflite": digits_artifacts["int8_tflite"], "onnx_ort": digits_artifacts["int8_onnx"],
            "onnx_tflite": digits_artifacts["int8_onnx_via_tflite"], "broken": digits_artifacts["broken_tflite"]}


def test_topk_orders_best_first():
    logits = np.array([[0.1, 3.0, 2.0, -1.0, 5.0, 0.0]])
    np.testing.assert_array_equal(topk(logits, 3), [[4, 1, 2]])


def test_tally_metrics_on_known_values():
    reference = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0, 0.0, 0.0]])
    candidate = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [3.0, 2.0, 0.0, 0.0, 0.0, 0.0]])
    tally = Tally(6)
    tally.add(candidate, reference, np.array([0, 1]))
    summary = tally.summary(labelled=True)
    assert summary["top1"] == 0.5 and summary["top1_agreement"] == 0.5
    assert summary["max_abs_error"] == 3.0
    assert summary["sqnr_db"] == pytest.approx(10 * np.log10(5 / 9))
    assert summary["cosine"] == pytest.approx((1 + 4 / (2 * np.sqrt(13))) / 2)
    # per image: signal 1 and 4, error 0 and 9; each over its mean, their difference is +-0.4
    assert summary["sqnr_standard_error_db"] == pytest.approx(10 / np.log(10) * np.sqrt(0.32 / 2))
    in_two_batches = Tally(6)
    for image in range(2):
        in_two_batches.add(candidate[image:image + 1], reference[image:image + 1], np.array([image]))
    assert in_two_batches.summary(labelled=True) == summary


def test_outputs_that_are_not_numbers_count_as_wrong_and_fail_every_gate():
    from edge_resnet.check.parity import ParityResult
    from edge_resnet.check.report import parity_cells

    reference = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    candidate = np.array([[np.nan, 0.0, 0.0], [0.0, 2.0, 0.5], [0.0, np.inf, 3.0]])
    tally = Tally(3)
    tally.add(candidate, reference, np.array([0, 1, 2]))
    summary = tally.summary(labelled=True)
    assert summary["non_finite_images"] == 2 and summary["samples"] == 3
    assert summary["top1"] == summary["top1_agreement"] == pytest.approx(1 / 3)
    assert summary["max_abs_error"] == 0.5 and summary["sqnr_db"] == pytest.approx(10 * np.log10(4 / 0.25))
    assert summary["cosine"] == pytest.approx(2 / np.sqrt(4.25) / 3)
    row = {"name": "f16.tflite", "runtime": "LiteRT", "top1_drop_points": 66.7, "metrics": summary}
    assert "NaN or inf on 2 of 3 images" in parity_cells(row) and "not finite" in parity_cells(row)
    result = ParityResult({}, {}, (row,))
    assert any("not finite numbers (NaN or infinity) on 2 of 3" in line
               for line in result.gate_failures(max_accuracy_drop=100))
    assert result.gate_failures() == []
    nothing_finite = Tally(3)
    nothing_finite.add(np.full((2, 3), np.nan), reference[:2])
    assert nothing_finite.summary(labelled=False)["non_finite_images"] == 2


def test_int8_artifacts_keep_accuracy_on_held_out_digits(folded, test_split, artifacts):
    data, _, _ = test_split
    names = [artifacts[k] for k in ("tflite", "onnx_ort", "onnx_tflite")]
    result = compare(folded, names, data)
    assert result.reference["metrics"]["top1"] >= 0.95
    for candidate in result.candidates:
        assert candidate["top1_drop_points"] <= 1.0, candidate
        assert candidate["metrics"]["top1_agreement"] >= 0.98, candidate
        assert candidate["metrics"]["sqnr_db"] is not None and candidate["metrics"]["sqnr_db"] > 15, candidate
    assert result.gate_failures(max_accuracy_drop=1.0, min_agreement=0.98) == []


def test_a_broken_artifact_fails_the_gates(folded, test_split, artifacts):
    data, _, _ = test_split
    result = compare(folded, [artifacts["broken"]], data)
    failures = result.gate_failures(max_accuracy_drop=1.0, min_agreement=0.98)
    assert failures and all(f.startswith("zeros_calibrated.tflite") for f in failures)
    assert result.candidates[0]["changed_classes"], "a broken model changes some class's accuracy"


def test_unlabelled_data_gives_agreement_only(folded, test_split, artifacts):
    _, pixels, _ = test_split
    unlabelled = image_set(pixels[:64], Preprocessing(32, 32), size=None)
    result = compare(folded, [artifacts["tflite"]], unlabelled)
    candidate = result.candidates[0]
    assert candidate["metrics"]["top1"] is None and candidate["top1_drop_points"] is None
    assert candidate["metrics"]["top1_agreement"] > 0.9


def test_class_folders_map_to_outputs_by_sorted_name(folded, test_split, artifacts, tmp_path):
    from PIL import Image

    _, pixels, labels = test_split
    for index, (image, label) in enumerate(zip(pixels[:100], labels[:100])):
        folder = tmp_path / f"digit_{label}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{index}.png")
    data = image_set(tmp_path, Preprocessing(32, 32), size=None)
    result = compare(folded, [artifacts["tflite"]], data)
    assert result.reference["metrics"]["top1"] >= 0.9


def test_data_that_does_not_fit_is_refused(folded, test_split, artifacts):
    _, pixels, _ = test_split
    with pytest.raises(DataError, match="model takes"):
        compare(folded, [artifacts["tflite"]], image_set(pixels[:8], Preprocessing(64, 64), size=None))
    eleven = images_from_array(pixels[:8], Preprocessing(32, 32), size=None, labels=np.full(8, 11))
    with pytest.raises(DataError, match="model has 10 outputs"):
        compare(folded, [artifacts["tflite"]], eleven)


# Through the CLI, as CI would run it.

@pytest.fixture(scope="module")
def cli_inputs(digits_model, test_split, artifacts, tmp_path_factory):
    """The trained float model as a .keras file and the held-out digits as .npz."""
    folder = tmp_path_factory.mktemp("cli")
    digits_model.save(folder / "digits.keras")
    _, pixels, labels = test_split
    np.savez(folder / "test.npz", x=pixels, y=labels)
    return folder


def test_compare_cli_passes_gates_and_writes_reports(cli_inputs, artifacts, tmp_path):
    import json

    result = run_in_process("compare", "--reference", str(cli_inputs / "digits.keras"), str(artifacts["tflite"]),
                            str(artifacts["onnx_ort"]), "--data", str(cli_inputs / "test.npz"), "--report",
                            str(tmp_path), "--max-accuracy-drop", "1.0", "--min-agreement", "0.98")
    assert result.returncode == 0, result.stderr
    assert "Gates: passed" in result.stdout
    assert "evaluating: 597/597" in result.stderr  # the progress bar
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["reference"]["metrics"]["top1"] >= 0.95
    assert [c["name"] for c in report["candidates"]] == ["int8.tflite", "int8_ort.onnx"]
    assert report["layers"]["int8_ort.onnx"][0]["metric"].startswith("SQNR")
    html = (tmp_path / "parity.html").read_text()
    assert html.count("data:image/png;base64,") >= 2


def test_compare_cli_exits_1_on_a_broken_artifact_after_writing_the_report(cli_inputs, artifacts, tmp_path):
    """In a real process: the exit code CI sees."""
    result = run_cli("compare", "--reference", str(cli_inputs / "digits.keras"), str(artifacts["broken"]),
                     "--data", str(cli_inputs / "test.npz"), "--report", str(tmp_path), "--no-per-layer",
                     "--max-accuracy-drop", "1.0", "--min-agreement", "0.98")
    assert result.returncode == 1, result.stderr
    assert "gate failed: zeros_calibrated.tflite" in result.stderr
    assert (tmp_path / "parity.json").is_file() and "FAILED" in (tmp_path / "parity.md").read_text()


def _bad_inputs(folder, pixels):
    (folder / "labels_9.txt").write_text("\n".join(str(d) for d in range(9)) + "\n")
    np.savez(folder / "eleven.npz", x=pixels[:8], y=np.full(8, 11))
    np.savez(folder / "wrong_shape.npz", x=np.zeros((4, 30, 30, 3), np.float32))
    (folder / "not_a_model.tflite").write_text("hello")
    (folder / "not_a_model.onnx").write_bytes(b"\x00\x01garbage")
    (folder / "a_folder.tflite").mkdir()
    (folder / "model.keras").write_text("a model, not an artifact")


@pytest.mark.parametrize(
    "data, artifact, extra, fragment",
    [
        ("test.npz", "int8.tflite", ["--labels", "labels_9.txt"], "has 9 labels but the model has 10 outputs"),
        ("eleven.npz", "int8.tflite", [], "model has 10 outputs"),
        ("wrong_shape.npz", "int8.tflite", ["--preprocessed"], "must be (N, 32, 32, 3)"),
        ("test.npz", "not_a_model.tflite", [], "is not a TFLite model"),
        ("test.npz", "not_a_model.onnx", [], "cannot load"),
        ("test.npz", "missing.tflite", [], "artifact not found"),
        # once "not found", and a failure after the evaluation:
        ("test.npz", "a_folder.tflite", [], "a_folder.tflite is a folder; compare takes .tflite and .onnx files"),
        ("test.npz", "model.keras", [], "model.keras is not a .tflite or .onnx file; compare takes"),
    ],
)
def test_compare_cli_bad_input_is_one_line_exit_2(cli_inputs, artifacts, test_split, tmp_path, data, artifact, extra, fragment):
    _, pixels, _ = test_split
    _bad_inputs(tmp_path, pixels)
    artifact_path = artifacts["tflite"] if artifact == "int8.tflite" else tmp_path / artifact
    data_path = cli_inputs / data if data == "test.npz" else tmp_path / data
    extra = [str(tmp_path / e) if e.endswith(".txt") else e for e in extra]
    result = run_in_process("compare", "--reference", str(cli_inputs / "digits.keras"), str(artifact_path),
                            "--data", str(data_path), "--no-per-layer", *extra)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("edge-resnet: error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


def test_one_parity_function_gates_only_what_it_is_told_and_analyses_the_artifacts_themselves(
        folded, test_split, artifacts):
    data, _, _ = test_split
    few = images_from_array(test_split[1][:64], Preprocessing(32, 32), size=None, labels=test_split[2][:64])
    both = [artifacts["tflite"], artifacts["broken"]]
    report = parity_report(folded, both, few, min_agreement=0.98, gated=[artifacts["tflite"]],
                           per_layer=[artifacts["broken"]])
    assert report["gates"]["failures"] == []  # the broken artifact is measured, not gated
    assert [c["name"] for c in report["candidates"]] == ["int8.tflite", "zeros_calibrated.tflite"]
    assert list(report["layers"]) == ["zeros_calibrated.tflite"]
    # the per-layer table describes the broken artifact: far worse than rounding noise somewhere
    assert report["layers"]["zeros_calibrated.tflite"][0]["value"] < 10  # SQNR dB: near no signal left
    gated_all = parity_report(folded, both, few, min_agreement=0.98)
    assert [f.split(":")[0] for f in gated_all["gates"]["failures"]] == ["zeros_calibrated.tflite"]


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--min-agreement", "98"], "--min-agreement is a fraction between 0 and 1 (0.98 for 98%)"),
        (["--max-accuracy-drop", "nan"], "--max-accuracy-drop is in top-1 points"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--data", "{short}"], "labels 'y' of shape (500,) for 597 images"),
        (["--report", "{file}/report"], "is a file, not a folder"),
    ],
)
def test_compare_options_that_cannot_work_are_one_line_exit_2(cli_inputs, artifacts, test_split, tmp_path, extra,
                                                              fragment):
    _, pixels, labels = test_split
    np.savez(tmp_path / "short.npz", x=pixels, y=labels[:500])
    extra = [str(tmp_path / "short.npz") if arg == "{short}" else arg.replace("{file}", str(tmp_path / "short.npz"))
             for arg in extra]
    data = [] if "--data" in extra else ["--data", cli_inputs / "test.npz"]
    code, _, stderr = main_in_process("compare", "--reference", cli_inputs / "digits.keras", artifacts["tflite"],
                                      *data, "--no-per-layer", *extra)
    assert code == 2 and stderr.strip().count("\n") == 0 and fragment in stderr, stderr


# The HTML report: a page, and what a browser shows of it.

def html_reports(folded, test_split, artifacts, folder):
    """parity.html of a run whose gates pass and of one whose gates fail."""
    from edge_resnet.check.report import write_reports

    few = images_from_array(test_split[1][:96], Preprocessing(32, 32), size=None, labels=test_split[2][:96])
    pages = {}
    for verdict, gated in (("passed", [artifacts["tflite"]]), ("failed", [artifacts["broken"]])):
        report = parity_report(folded, gated, few, min_agreement=0.98, max_accuracy_drop=1.0,
                               per_layer=gated, latency_runs=3)
        write_reports(report, folder / verdict)
        pages[verdict] = folder / verdict / "parity.html"
    return pages


def test_the_html_report_is_a_self_contained_page_with_the_verdict_first(folded, test_split, artifacts, tmp_path):
    pages = html_reports(folded, test_split, artifacts, tmp_path)
    for verdict, path in pages.items():
        page = path.read_text()
        assert page.index(f'class="verdict {verdict}"') < page.index("<table") < page.index("<img")
        assert page.index("<img") < page.index("<h2>Details</h2>")
        assert "<pre>" not in page and "|---|" not in page  # tables are tables, not Markdown text
        assert "<th>top-1 agreement</th>" in page
        assert "http://" not in page and "https://" not in page and page.count("data:image/png;base64,") >= 2
        assert "@media print" in page
    assert "zeros_calibrated.tflite: top-1 agreement" in pages["failed"].read_text()


def chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def rendered(path, out, width=1280, height=900):
    """Headless Chromium's screenshot of the page (laptop width)."""
    import subprocess

    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={out}", path.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    return np.asarray(Image.open(out).convert("RGB"))


def test_a_browser_shows_the_verdict_in_its_colour_above_the_table(folded, test_split, artifacts, tmp_path):
    import os
    import subprocess

    if not chromium():
        message = "headless Chromium (Debian's chromium package) is not installed"
        if os.environ.get("CI") == "true":  # .ci/run installs it: in CI its absence is a failure
            pytest.fail(f"{message}, and CI must run the real-browser check")
        pytest.skip(message)

    pages = html_reports(folded, test_split, artifacts, tmp_path)
    banners = {"passed": (218, 251, 225), "failed": (255, 235, 233)}  # the verdict's background colours
    for verdict, path in pages.items():
        shot = rendered(path, tmp_path / f"{verdict}.png")
        assert shot.shape[:2] == (900, 1280)
        rows = np.flatnonzero(np.all(shot == banners[verdict], axis=2).sum(axis=1) > 600)
        other = banners["failed" if verdict == "passed" else "passed"]
        assert rows.size > 20 and rows.max() < 300, f"no {verdict} banner near the top"  # the verdict first
        assert not np.all(shot == other, axis=2).any()
        header_grey = np.all(shot == (246, 248, 250), axis=2).sum(axis=1)  # table header cells
        assert np.flatnonzero(header_grey > 200).min() > rows.max()  # the table below the verdict
    pdf = tmp_path / "printed.pdf"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--print-to-pdf={pdf}",
                    pages["failed"].as_uri()], capture_output=True, timeout=120, check=True)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000


def test_a_drop_gate_on_unlabelled_data_is_refused_before_the_work(folded, test_split, artifacts):
    from edge_resnet.errors import ConfigError

    unlabelled = images_from_array(test_split[1][:16], Preprocessing(32, 32), size=None)
    with pytest.raises(ConfigError, match="--max-accuracy-drop needs labelled data"):
        parity_report(folded, [artifacts["tflite"]], unlabelled, max_accuracy_drop=1.0)


def test_names_with_pipes_and_backticks_keep_the_tables_whole(folded, test_split, artifacts, tmp_path):
    import re
    import shutil

    from edge_resnet.check.report import PARITY_COLUMNS, html_report, markdown_report

    odd = tmp_path / "odd|name`.tflite"
    shutil.copy(artifacts["tflite"], odd)
    few = images_from_array(test_split[1][:32], Preprocessing(32, 32), size=None, labels=test_split[2][:32])
    report = parity_report(folded, [odd], few, per_layer=[odd])
    page = html_report(report)
    summary = page[page.index("<h2>Summary</h2>"):page.index("<h2>Details</h2>")]
    rows = re.findall(r"<tr>(.*?)</tr>", summary)
    assert len(rows) == 2 and all(len(re.findall(r"<t[hd]>", row)) == len(PARITY_COLUMNS) for row in rows)
    assert "<td>odd|name`.tflite</td>" in summary
    table = [line for line in markdown_report(report).splitlines() if line.startswith("| odd")]
    assert len(re.split(r"(?<!\\)\|", table[0])) == len(PARITY_COLUMNS) + 2


def test_per_layer_error_is_one_metric_for_both_formats(folded, test_split, artifacts):
    from edge_resnet.check.layer_debug import LAYER_METRIC, layer_errors

    images = list(test_split[0].samples())[:8]
    tflite = layer_errors(folded, artifacts["tflite"], images)
    onnx_layers = layer_errors(folded, artifacts["onnx_ort"], images)
    assert tflite and onnx_layers
    assert {layer["metric"] for layer in tflite + onnx_layers} == {LAYER_METRIC}
    assert all(0 < layer["value"] < 80 for layer in tflite + onnx_layers)  # dB of a trained int8 model
    assert [layer["value"] for layer in tflite] == sorted(layer["value"] for layer in tflite)  # worst first
    assert all(layer["rmse_over_scale"] > 0.1 for layer in tflite)  # TFLite's own unit kept beside it


def test_a_runner_note_reaches_the_report(folded, test_split, artifacts):
    from edge_resnet.check.report import parity_details
    from edge_resnet.device.runtime import OnnxRunner, saturation_note

    runner = OnnxRunner(artifacts["onnx_ort"])
    runner.note = saturation_note(runner.path.name, "8", "x86_64", {"avx2"})  # as an AVX2 CPU would say
    few = images_from_array(test_split[1][:16], Preprocessing(32, 32), size=None, labels=test_split[2][:16])
    result = compare(folded, [artifacts["onnx_ort"]], few, runners=[runner]).to_dict()
    assert result["candidates"][0]["note"] == runner.note
    assert runner.note in parity_details(result)


def test_the_parity_table_shows_the_sqnr_with_its_standard_error_when_the_report_has_one():
    from edge_resnet.check.report import parity_cells

    metrics = {"top1": 0.9, "top5": 1.0, "top1_agreement": 0.99, "top5_overlap": 1.0, "cosine": 0.999,
               "sqnr_db": 29.24, "sqnr_standard_error_db": 1.06, "max_abs_error": 0.5}
    candidate = {"name": "a.tflite", "runtime": "LiteRT", "top1_drop_points": 0.5, "metrics": metrics}
    assert "29.2 ±1.1" in parity_cells(candidate)
    older = {**candidate, "metrics": {key: value for key, value in metrics.items() if key != "sqnr_standard_error_db"}}
    assert "29.2" in parity_cells(older)  # a report written before the standard error was
    exact = {**candidate, "metrics": {**metrics, "sqnr_db": None, "sqnr_standard_error_db": None}}
    assert "exact" in parity_cells(exact)


def test_the_tally_counts_the_top1_the_output_grid_alone_changes_batch_by_batch(artifacts, monkeypatch):
    from edge_resnet.check.parity import output_value_grid
    from tests.test_tflite import close_calls

    grid = output_value_grid(artifacts["tflite"])
    reference = close_calls(grid, 3, 7)[[0, 3, 4, 5, 1, 6, 7, 8, 2, 9]]  # one tie in each batch of 4, 4, 2
    tally = Tally(3, grid=grid)
    for start in range(0, 10, 4):
        tally.add(reference[start:start + 4], reference[start:start + 4])
    assert tally.summary(labelled=False)["output_grid_top1_changes"] == pytest.approx(0.3)
    assert Tally(3).summary(labelled=False)["output_grid_top1_changes"] is None  # a float output has no grid
    assert output_value_grid(artifacts["onnx_ort"]) is None  # onnxruntime's int8 ONNX: float logits
    # the TFLite-route ONNX keeps the TFLite's int8 output, its grid read from the file's metadata
    assert output_value_grid(artifacts["onnx_tflite"]) == grid
    monkeypatch.setitem(sys.modules, "ai_edge_litert.tools", None)  # a board with tflite-runtime alone
    assert output_value_grid(artifacts["tflite"]) is None


def test_parity_says_how_much_of_the_disagreement_the_int8_output_grid_makes(folded, test_split, artifacts):
    from edge_resnet.check.parity import REFERENCE_BATCH, output_value_grid, top1_changes_on_grid
    from edge_resnet.check.report import output_grid_parity_text, parity_details

    data, pixels, labels = test_split
    result = compare(folded, [artifacts["tflite"], artifacts["onnx_ort"]], data).to_dict()
    tflite, onnx = result["candidates"]
    reference = np.concatenate([folded.predict_on_batch(batch) for batch in data.with_batch_size(REFERENCE_BATCH)])
    expected = top1_changes_on_grid(reference, output_value_grid(artifacts["tflite"]))
    assert tflite["metrics"]["output_grid_top1_changes"] == expected / len(reference)
    assert tflite["metrics"]["output_grid_type"] == "int8" and onnx["metrics"]["output_grid_type"] is None
    assert onnx["metrics"]["output_grid_top1_changes"] is None
    # the report says it only where the grid changes some top-1, once per artifact however many boards ran it
    assert (output_grid_parity_text(tflite) is None) == (expected == 0)
    changed = {**tflite, "metrics": {**tflite["metrics"], "output_grid_top1_changes": 12 / len(reference)}}
    note = output_grid_parity_text(changed)
    assert f"12 of {len(reference)}" in note and "--output-type float32" in note
    details = parity_details({**result, "candidates": [{**changed, "device": "board-a"},
                                                       {**changed, "device": "board-b"}, onnx]})
    assert details.count(note) == 1
    # a uint8 output (--output-type uint8): its grid is named so, from the tally to the line
    from dataclasses import replace

    uint8_grid = replace(output_value_grid(artifacts["tflite"]), dtype=np.uint8)
    assert Tally(3, grid=uint8_grid).summary(labelled=False)["output_grid_type"] == "uint8"
    uint8 = {**changed, "metrics": {**changed["metrics"], "output_grid_type": "uint8"}}
    assert "its output's own uint8 grid alone changes" in output_grid_parity_text(uint8)


def test_a_layer_of_two_tflite_tensors_is_compared_at_what_it_passes_on():
    """A Rescaling with an offset is a MUL then an ADD in the TFLite: the per-layer error compared the MUL's
    output (before the offset) until the layer's last tensor was taken."""
    import keras

    from edge_resnet.check.layer_debug import by_layer
    from edge_resnet.quantize.statistics import exposed_model
    from edge_resnet.quantize.tflite import float_tflite

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 128, offset=-1.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)  # "same": no folding it in
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x)))
    _, names = exposed_model(float_tflite(model))
    rescale = [name for name in names if "/rescale" in name]
    assert len(rescale) == 2  # the MUL's output, then the ADD's
    assert by_layer(names, {layer.name for layer in model.layers})["rescale"] == rescale[-1]
