"""Golden reference outputs: parity from them equals parity against the live
Keras model, runs without TensorFlow or Keras, shards and merges, and refuses
every reference that does not belong to the data, the model or itself."""

import json
import shutil

import numpy as np
import pytest

from edge_resnet.data.images import Preprocessing, images_from_array, images_from_folder
from edge_resnet.errors import ConfigError, DataError
from edge_resnet.check.golden import (CHUNK_ROWS, MANIFEST, OUTPUTS, GoldenReference, merge_golden, parse_shard,
                                shard_range, write_golden)
from edge_resnet.check.parity import compare, parity_report
from tests.cli import main_in_process, run_in_process, run_without_tensorflow
from tests.digits import TRAIN_SAMPLES, digit_pixels

EVALUATED = 240  # held-out digits: enough for per-class changes, quick on 2 cores
NO_FILE = {"file": None, "sha256": None}


@pytest.fixture(scope="module")
def held_out():
    pixels, labels = digit_pixels(32, EVALUATED, offset=TRAIN_SAMPLES)
    return pixels, labels


@pytest.fixture(scope="module")
def int8_artifacts(digits_artifacts):
    return [digits_artifacts["int8_tflite"], digits_artifacts["broken_tflite"]]


@pytest.fixture(scope="module")
def inputs(digits_model, held_out, int8_artifacts, tmp_path_factory):
    """The float model as a .keras file, the held-out digits as .npz, the
    golden outputs `reference` made of them, and the int8 artifact quantized
    from that same .keras file through the CLI (so its recipe JSON names it)."""
    folder = tmp_path_factory.mktemp("golden_cli")
    digits_model.save(folder / "digits.keras")
    pixels, labels = held_out
    np.savez(folder / "test.npz", x=pixels, y=labels)
    np.savez(folder / "calibration.npz", x=digit_pixels(32, 100)[0])
    result = run_in_process("reference", folder / "digits.keras", "--data", folder / "test.npz",
                            "--output", folder / "golden")
    assert result.returncode == 0, result.stderr
    quantized = run_in_process("quantize", folder / "digits.keras", "--calibration", folder / "calibration.npz",
                               "--input-size", "32", "--output", folder / "int8.tflite")
    assert quantized.returncode == 0, quantized.stderr
    return folder


def test_parity_from_golden_outputs_equals_parity_against_the_live_model(digits_model, held_out, int8_artifacts,
                                                                         tmp_path):
    pixels, labels = held_out
    data = images_from_array(pixels, Preprocessing(32, 32), size=None, labels=labels)
    write_golden(digits_model, data, tmp_path / "golden", NO_FILE)  # the batch size of the live run: same outputs
    golden = GoldenReference(tmp_path / "golden")
    gates = {"max_accuracy_drop": 1.0, "min_agreement": 0.98}
    live = parity_report(digits_model, int8_artifacts, data, **gates)
    stored = parity_report(golden, int8_artifacts, golden.data(pixels), **gates)  # unlabelled: the manifest labels
    assert stored["gates"] == live["gates"] and len(live["gates"]["failures"]) >= 1  # the zeros artifact fails
    for metric, value in live["reference"]["metrics"].items():
        assert stored["reference"]["metrics"][metric] == pytest.approx(value, abs=1e-6)
    for from_golden, from_live in zip(stored["candidates"], live["candidates"]):
        assert from_golden["changed_classes"] == from_live["changed_classes"]
        for metric, value in from_live["metrics"].items():
            assert from_golden["metrics"][metric] == pytest.approx(value, abs=1e-6), metric
    assert stored["data"]["fingerprint"] == live["data"]["fingerprint"]
    assert stored["reference"]["kind"] == "golden" and stored["reference"]["speed"]["ms_per_image"] > 0


def test_the_manifest_pins_model_data_labels_preprocessing_and_device(inputs):
    import hashlib

    manifest = json.loads((inputs / "golden" / MANIFEST).read_text())
    assert manifest["model"]["sha256"] == hashlib.sha256((inputs / "digits.keras").read_bytes()).hexdigest()
    assert manifest["model"]["input_shape"] == [32, 32, 3] and manifest["model"]["classes"] == 10
    data = manifest["data"]
    assert data["ids"] == list(range(EVALUATED)) or sorted(data["ids"]) == list(range(EVALUATED))
    assert len(data["labels"]) == EVALUATED and data["preprocessing"]["mode"] == "caffe"
    assert data["source_path"] == str((inputs / "test.npz").resolve())
    reference = manifest["reference"]
    assert reference["backend"] == "tensorflow" and reference["accelerator"] == "CPU" and reference["device"]
    assert reference["versions"]["keras"] and reference["speed"]["batch1_ms"] > 0
    outputs = np.load(inputs / "golden" / OUTPUTS, allow_pickle=False)  # a plain .npy any tool reads
    assert outputs.shape == (EVALUATED, 10) and outputs.dtype == np.float32
    np.testing.assert_array_equal(GoldenReference(inputs / "golden").stored.rows(5, 3), outputs[5:8])


def test_compare_from_golden_outputs_runs_without_tensorflow_or_keras(inputs, tmp_path):
    result = run_without_tensorflow(tmp_path, "compare", "--reference", inputs / "golden", inputs / "int8.tflite",
                                    "--report", tmp_path / "report", "--min-agreement", "0.97",
                                    "--max-accuracy-drop", "2")
    assert result.returncode == 0, result.stderr
    assert "Gates: passed" in result.stdout and "golden outputs of" in result.stdout
    assert "- float on " in result.stdout and "int8.tflite on this CPU" in result.stdout
    report = json.loads((tmp_path / "report" / "parity.json").read_text())
    assert report["candidates"][0]["metrics"]["top1_agreement"] >= 0.97
    assert "<table" in (tmp_path / "report" / "parity.html").read_text() or (tmp_path / "report" / "parity.html").is_file()


def test_compare_replaces_its_own_report_and_nothing_else(inputs, tmp_path):
    """--report DIR once replaced a user's parity.md there without a word; a re-run still replaces its own."""
    def compared(folder):
        return main_in_process("compare", "--reference", inputs / "golden", inputs / "int8.tflite", "--bench-runs", "0",
                               "--report", folder)

    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "parity.md").write_text("my notes")
    code, _, stderr = compared(tmp_path / "theirs")
    assert code == 2 and "parity.md is not an earlier edge-resnet report, and this one would replace it; move it " \
                         "away or give --report another folder" in stderr, stderr
    assert [path.name for path in (tmp_path / "theirs").iterdir()] == ["parity.md"]
    assert (tmp_path / "theirs" / "parity.md").read_text() == "my notes"
    assert compared(tmp_path / "ours")[0] == 0
    (tmp_path / "ours" / "parity.md").write_text("an earlier run's")
    assert compared(tmp_path / "ours")[0] == 0  # its own report, replaced
    assert (tmp_path / "ours" / "parity.md").read_text() != "an earlier run's"
    assert json.loads((tmp_path / "ours" / "parity.json").read_text())["tool"]["name"] == "edge-resnet"


def test_a_report_folder_that_cannot_be_written_is_refused_before_the_work(inputs, tmp_path):
    """It was found only when the report was written, after every artifact had run."""
    import subprocess

    (tmp_path / "locked").mkdir()
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", tmp_path / "locked"],
                                                    capture_output=True).returncode:
        pytest.skip("no immutable folders on this file system")
    try:
        code, stdout, stderr = main_in_process("compare", "--reference", inputs / "golden", inputs / "int8.tflite",
                                               "--report", tmp_path / "locked" / "report")
    finally:
        subprocess.run(["chattr", "-i", tmp_path / "locked"], check=True)
    assert code == 2 and "locked/report: Operation not permitted; choose another --report" in stderr, stderr
    assert "evaluating" not in stdout + stderr and not list((tmp_path / "locked").iterdir())


def test_a_report_that_cannot_replace_one_of_its_files_leaves_the_earlier_ones_whole(inputs, tmp_path):
    """An earlier parity.json that cannot be replaced (immutable) once left the new parity.md and .html beside it."""
    import subprocess

    earlier = {"tool": {"name": "edge-resnet"}, "reference": {}, "candidates": [], "gates": {}}
    for name, text in (("parity.json", json.dumps(earlier)), ("parity.md", "earlier md"), ("parity.html", "x")):
        (tmp_path / name).write_text(text)
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", tmp_path / "parity.json"],
                                                    capture_output=True).returncode:
        pytest.skip("no immutable files on this file system")
    try:
        code, _, stderr = main_in_process("compare", "--reference", inputs / "golden", inputs / "int8.tflite",
                                          "--bench-runs", "0", "--report", tmp_path)
    finally:
        subprocess.run(["chattr", "-i", tmp_path / "parity.json"], check=True)
    assert code == 2 and "cannot write" in stderr and "parity.json: Operation not permitted" in stderr, stderr
    # parity.html and parity.md were replaced before parity.json failed: they are back as they were
    assert sorted(path.name for path in tmp_path.iterdir()) == ["parity.html", "parity.json", "parity.md"]
    assert (tmp_path / "parity.md").read_text() == "earlier md" and (tmp_path / "parity.html").read_text() == "x"


def test_shards_merge_into_the_outputs_of_one_run(inputs, tmp_path):
    """Shards made where the data sits at other paths (other machines) merge: every part's images are checked by
    their fingerprints when compared."""
    shards = []
    shutil.copy(inputs / "test.npz", tmp_path / "mounted_elsewhere.npz")
    for index in (2, 1, 3):  # any order
        shard = tmp_path / f"shard_{index}"
        data = tmp_path / "mounted_elsewhere.npz" if index == 3 else inputs / "test.npz"
        code, _, stderr = main_in_process("reference", inputs / "digits.keras", "--data", data,
                                          "--shard", f"{index}/3", "--output", shard)
        assert code == 0, stderr
        shards.append(shard)
    sizes = [json.loads((shard / MANIFEST).read_text())["data"]["size"] for shard in shards]
    assert sum(sizes) == EVALUATED and max(sizes) - min(sizes) <= 1
    # one shard alone holds a third of the images: parity on it once passed its gates silently
    code, _, stderr = main_in_process("compare", "--reference", shards[0], inputs / "int8.tflite")
    assert code == 2 and f"holds shard 2/3 of a reference run ({sizes[0]} of its {EVALUATED} images): join every " \
                         "shard with edge-resnet merge" in stderr, stderr
    result = run_without_tensorflow(tmp_path, "merge", *shards, "--output", tmp_path / "merged")
    assert result.returncode == 0, result.stderr
    whole, merged = GoldenReference(inputs / "golden"), GoldenReference(tmp_path / "merged")
    assert merged.manifest["data"]["ids"] == whole.manifest["data"]["ids"]
    assert merged.manifest["data"]["labels"] == whole.manifest["data"]["labels"]
    np.testing.assert_allclose(merged.stored.rows(0, EVALUATED), whole.stored.rows(0, EVALUATED), rtol=1e-5,
                               atol=1e-5)
    # the merged reference checks each shard's images and gives the same parity
    assert len(merged.data()) == EVALUATED
    from_merged = compare(merged, [inputs / "int8.tflite"], merged.data()).candidates[0]["metrics"]
    from_whole = compare(whole, [inputs / "int8.tflite"], whole.data()).candidates[0]["metrics"]
    assert from_merged["top1_agreement"] == from_whole["top1_agreement"]
    assert from_merged["sqnr_db"] == pytest.approx(from_whole["sqnr_db"], abs=1e-3)


def test_merge_refuses_an_incomplete_or_mixed_set_of_shards(inputs, tmp_path):
    for index in (1, 2):
        assert main_in_process("reference", inputs / "digits.keras", "--data", inputs / "test.npz", "--shard",
                               f"{index}/2", "--output", tmp_path / f"half_{index}")[0] == 0
    with pytest.raises(DataError, match="shard 2/2 is missing"):
        merge_golden([tmp_path / "half_1"], tmp_path / "merged")
    with pytest.raises(DataError, match="given twice"):
        merge_golden([tmp_path / "half_1", tmp_path / "half_1"], tmp_path / "merged")
    with pytest.raises(DataError, match="not a shard of the same reference run .* its shard.count is 1, not 2"):
        merge_golden([tmp_path / "half_1", inputs / "golden"], tmp_path / "merged")
    # an artifact among the shards was told about compare's --reference, an option merge does not have
    with pytest.raises(DataError, match="int8.tflite is a file, not a folder of golden outputs; give the folder"):
        merge_golden([tmp_path / "half_1", inputs / "int8.tflite"], tmp_path / "merged")
    code, _, stderr = main_in_process("compare", "--reference", inputs / "int8.tflite", inputs / "int8.tflite")
    assert code == 2 and "int8.tflite is an artifact: give it after the options" in stderr, stderr
    # a copy of shard 1 whose manifest claims the range of shard 2: every image would be there twice
    shutil.copytree(tmp_path / "half_1", tmp_path / "forged")
    manifest = json.loads((tmp_path / "forged" / MANIFEST).read_text())
    half = manifest["shard"]["of"] // 2
    manifest["shard"].update(index=2, start=half, stop=manifest["shard"]["of"])
    (tmp_path / "forged" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="name some images more than once"):
        merge_golden([tmp_path / "half_1", tmp_path / "forged"], tmp_path / "merged")
    manifest["shard"].update(start=0)  # a range that does not match the shard's place or its rows
    (tmp_path / "forged" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="is shard 2/2 of .* but its manifest says start 0"):
        merge_golden([tmp_path / "half_1", tmp_path / "forged"], tmp_path / "merged")
    with pytest.raises(ConfigError, match="is the input"):
        merge_golden([tmp_path / "half_1", tmp_path / "half_2"], tmp_path / "half_1", force=True)
    assert not (tmp_path / "merged").exists()


def test_shard_arithmetic_and_bad_shards():
    assert [shard_range(10, i, 3) for i in (1, 2, 3)] == [(0, 3), (3, 6), (6, 10)]
    assert parse_shard("2/4") == (2, 4)
    for text in ("0/4", "5/4", "2", "a/b", "-1/2"):
        with pytest.raises(ConfigError, match="--shard is i/n"):
            parse_shard(text)


def tampered_outputs(inputs, tmp_path):
    copy = tmp_path / "golden"
    shutil.copytree(inputs / "golden", copy)
    raw = bytearray((copy / OUTPUTS).read_bytes())
    raw[-3] ^= 0x01  # one byte of the last output
    (copy / OUTPUTS).write_bytes(bytes(raw))
    return [copy, inputs / "int8.tflite"]


def changed_image(inputs, tmp_path):
    with np.load(inputs / "test.npz") as stored:
        pixels, labels = stored["x"].copy(), stored["y"]
    pixels[7, 10, 10, 0] ^= 1  # one pixel of one image
    np.savez(tmp_path / "changed.npz", x=pixels, y=labels)
    return [inputs / "golden", inputs / "int8.tflite", "--data", tmp_path / "changed.npz"]


def other_model(inputs, tmp_path):
    record = json.loads((inputs / "int8.tflite.json").read_text())
    shutil.copy(inputs / "int8.tflite", tmp_path / "other.tflite")
    record["source_model"] = {"file": "other.keras", "sha256": "ab" * 32}
    (tmp_path / "other.tflite.json").write_text(json.dumps(record))
    return [inputs / "golden", tmp_path / "other.tflite"]


def other_data(inputs, tmp_path):
    pixels, labels = digit_pixels(32, EVALUATED, offset=0)
    np.savez(tmp_path / "training.npz", x=pixels, y=labels)
    return [inputs / "golden", inputs / "int8.tflite", "--data", tmp_path / "training.npz"]


def fewer_images(inputs, tmp_path):
    with np.load(inputs / "test.npz") as stored:
        np.savez(tmp_path / "fewer.npz", x=stored["x"][:100], y=stored["y"][:100])
    return [inputs / "golden", inputs / "int8.tflite", "--data", tmp_path / "fewer.npz"]


def unrelated_float_model(input_size, classes):
    """A float .tflite of another model, without a recipe JSON."""
    def make(inputs, tmp_path):
        from edge_resnet.model.resnet import build_resnet
        from edge_resnet.quantize.tflite import float_tflite

        other = build_resnet(18, input_shape=(input_size, input_size, 3), classes=classes, width=0.25, seed=1)
        (tmp_path / "other.tflite").write_bytes(float_tflite(other))
        return [inputs / "golden", tmp_path / "other.tflite"]

    return make


def replaced_outputs(write):
    """golden.npy rewritten by `write`, with the manifest's hash updated to
    match: the hash passes, the reader must still refuse."""
    def make(inputs, tmp_path):
        import hashlib

        copy = tmp_path / "golden"
        shutil.copytree(inputs / "golden", copy)
        write(copy / OUTPUTS)
        manifest = json.loads((copy / MANIFEST).read_text())
        manifest["outputs"]["sha256"] = hashlib.sha256((copy / OUTPUTS).read_bytes()).hexdigest()
        (copy / MANIFEST).write_text(json.dumps(manifest))
        return [copy, inputs / "int8.tflite"]

    return make


def other_preprocessing(inputs, tmp_path):
    return [inputs / "golden", inputs / "int8.tflite", "--preprocessing", "torch"]


def artifact_calibrated_otherwise(inputs, tmp_path):
    """An int8 artifact of the same model calibrated on tf input, against caffe golden outputs."""
    quantized = run_in_process("quantize", inputs / "digits.keras", "--calibration", inputs / "calibration.npz",
                               "--preprocessing", "tf", "--calibration-method", "minmax",
                               "--output", tmp_path / "tf_int8.tflite")
    assert quantized.returncode == 0, quantized.stderr
    return [inputs / "golden", tmp_path / "tf_int8.tflite"]


def damaged_manifest(change):
    def make(inputs, tmp_path):
        copy = tmp_path / "golden"
        shutil.copytree(inputs / "golden", copy)
        manifest = json.loads((copy / MANIFEST).read_text())
        change(manifest)
        (copy / MANIFEST).write_text(json.dumps(manifest))
        return [copy, inputs / "int8.tflite"]

    return make


def no_model_file(inputs, tmp_path):
    """Golden outputs of a builder model with random weights; the artifact
    names the .keras file it was made from."""
    code, _, stderr = main_in_process("reference", "resnet18", "--input-size", "32", "--classes", "10",
                                      "--data", inputs / "test.npz", "--output", tmp_path / "random")
    assert code == 0, stderr
    return [tmp_path / "random", inputs / "int8.tflite"]


def mistyped_folder(inputs, tmp_path):
    return [tmp_path / "goldn", inputs / "int8.tflite"]


def unreadable_record(inputs, tmp_path):
    shutil.copy(inputs / "int8.tflite", tmp_path / "copy.tflite")
    (tmp_path / "copy.tflite.json").write_text("{not json")
    return [inputs / "golden", tmp_path / "copy.tflite"]


def swapped_artifact(inputs, tmp_path):
    """Another file renamed over the artifact, the artifact's recipe JSON beside it."""
    content = bytearray((inputs / "int8.tflite").read_bytes())
    content[-1] ^= 0xFF
    (tmp_path / "int8.tflite").write_bytes(bytes(content))
    shutil.copy(inputs / "int8.tflite.json", tmp_path / "int8.tflite.json")
    return [inputs / "golden", tmp_path / "int8.tflite"]


def artifact_of_a_named_model(inputs, tmp_path):
    """An artifact whose recipe JSON names a model (a builder's) but no model file."""
    shutil.copy(inputs / "int8.tflite", tmp_path / "r18_int8.tflite")
    record = json.loads((inputs / "int8.tflite.json").read_text())
    record.pop("source_model")
    record["model"]["name"] = "resnet18"
    (tmp_path / "r18_int8.tflite.json").write_text(json.dumps(record))
    return [inputs / "golden", tmp_path / "r18_int8.tflite"]


def preprocessed_flag(inputs, tmp_path):
    return [inputs / "golden", inputs / "int8.tflite", "--preprocessed"]


@pytest.mark.parametrize("make, fragment", [
    (tampered_outputs, "changed after it was written"),
    (changed_image, "not the ones the golden outputs were made from"),
    (other_model, "was made from other.keras"),
    (other_data, "not the ones the golden outputs were made from"),
    (fewer_images, "missing from"),
    (unrelated_float_model(48, 10), "takes (48, 48, 3), the reference (32, 32, 3)"),
    (damaged_manifest(lambda m: m["outputs"].update(shape=[EVALUATED + 1, 10])), "data.ids is not a list of 241"),
    (replaced_outputs(lambda path: np.save(path, np.array([{"code": 1}], dtype=object), allow_pickle=True)),
     "holds object (1,), the manifest says float32"),
    (other_preprocessing, "differs from the golden outputs' caffe"),
    (artifact_calibrated_otherwise, "tf_int8.tflite was calibrated on images preprocessed with --preprocessing tf, "
                                    "and the golden outputs' images are made with --preprocessing caffe"),
    (replaced_outputs(lambda path: np.save(path, np.where(np.arange(2400).reshape(240, 10) == 57, np.nan,
                                                          np.load(path)).astype(np.float32))),
     "golden.npy holds values that are not finite numbers (NaN or infinity), first in row 5"),
    (unrelated_float_model(32, 5), "gives outputs of shape (5,), the reference (10,)"),
    (replaced_outputs(lambda path: path.write_bytes(path.read_bytes()[:3000])),
     "not the 240 x 10 float32 its header promises"),
    (damaged_manifest(lambda m: m["model"].update(classes=12)), "model.classes 12 is not the outputs' width 10"),
    (damaged_manifest(lambda m: m["data"].update(ids=5)), "data.ids is not a list of 240"),
    (damaged_manifest(lambda m: m["data"].update(parts=[])), "data.parts is not a list"),
    (damaged_manifest(lambda m: m.pop("outputs")), "no outputs section"),
    # edits that were read as the user's options, or accepted
    (damaged_manifest(lambda m: m["data"]["preprocessing"].update(mode="torch")),
     "golden.json is damaged: data.preprocessing is not one edge-resnet writes"),
    (damaged_manifest(lambda m: m["model"].update(input_shape=[64, 64, 3])),
     "golden.json is damaged: model.input_shape [64, 64, 3] is not the size data.preprocessing makes (32x32)"),
    (damaged_manifest(lambda m: m["data"].update(size=EVALUATED + 6)),
     f"golden.json is damaged: data.size {EVALUATED + 6} is not the outputs' {EVALUATED} rows"),
    (no_model_file, "name no model file"),
    (swapped_artifact, "is not the artifact its recipe JSON describes"),
    (artifact_of_a_named_model, "names model resnet18 but no model file it was made from"),
    (mistyped_folder, "golden folder"),
    (unreadable_record, "is not a readable recipe JSON"),
    (preprocessed_flag, "made from raw images"),
])
def test_a_reference_that_does_not_belong_is_refused_in_one_line(inputs, tmp_path, make, fragment):
    arguments = make(inputs, tmp_path)
    code, stdout, stderr = main_in_process("compare", "--reference", *arguments, "--bench-runs", "0")
    errors = [line for line in stderr.splitlines() if line.startswith("edge-resnet: error:")]
    assert code == 2 and len(errors) == 1 and fragment in errors[0], stderr
    assert "Traceback" not in stderr
    assert "Accuracy parity" not in stdout  # no metric against the wrong reference


def test_golden_outputs_are_written_whole_or_not_at_all(inputs, tmp_path):
    (tmp_path / "golden").mkdir()
    (tmp_path / "golden" / "notes.txt").write_text("mine")
    code, _, stderr = main_in_process("reference", inputs / "digits.keras", "--data", inputs / "test.npz",
                                      "--output", tmp_path / "golden")
    assert code == 2 and "not empty" in stderr and "--force" in stderr
    code, _, stderr = main_in_process("reference", inputs / "digits.keras", "--data", inputs / "test.npz",
                                      "--shard", "9/4", "--output", tmp_path / "new")
    assert code == 2 and "--shard is i/n" in stderr and not (tmp_path / "new").exists()
    for index in (1, 2):  # more shards than images: once shard 1 was refused as empty and shard 2 written
        code, _, stderr = main_in_process("reference", inputs / "digits.keras", "--data", inputs / "test.npz",
                                          "--shard", f"{index}/{EVALUATED + 1}", "--output", tmp_path / "new")
        assert code == 2 and f"into {EVALUATED + 1} shards; use at most {EVALUATED} shards" in stderr, stderr
        assert not (tmp_path / "new").exists()
    for ignored in (["--eval-size", "10"], ["--seed", "3"], ["--input-size", "64"], ["--weights", "imagenet"]):
        code, _, stderr = main_in_process("compare", "--reference", inputs / "golden", inputs / "int8.tflite",
                                          *ignored)
        assert code == 2 and f"golden outputs fix the images, the labels and the model; leave out {ignored[0]}" \
            in stderr, stderr


def test_folder_sample_ids_are_relative_paths_found_again_after_a_move(tmp_path):
    from PIL import Image

    from edge_resnet.data.images import images_by_id

    pixels, labels = digit_pixels(32, 12)
    for index, (image, label) in enumerate(zip(pixels, labels)):
        (tmp_path / "a" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "a" / str(label) / f"{index}.png")
    first = images_from_folder(tmp_path / "a", Preprocessing(32, 32), size=None)
    ids = first.sample_ids()
    assert all("/" in sample_id and not sample_id.startswith("/") for sample_id in ids)
    shutil.move(tmp_path / "a", tmp_path / "b")
    again = images_by_id(tmp_path / "b", Preprocessing(32, 32), list(reversed(ids)))
    assert again.sample_ids() == list(reversed(ids)) and again.labels == tuple(reversed(first.labels))
    # the fingerprint is of the bytes in order, wherever the folder is
    assert images_by_id(tmp_path / "b", Preprocessing(32, 32), ids).fingerprint == first.fingerprint
    assert again.fingerprint != first.fingerprint
    with pytest.raises(DataError, match="missing from"):
        images_by_id(tmp_path / "b", Preprocessing(32, 32), ids + ["9/none.png"])


def test_merging_large_shards_streams_in_bounded_memory(tmp_path):
    """Two shards of 25,000 outputs x 1,000 classes (100 MB each, like
    ImageNet's validation set in halves) merge in a process whose peak
    memory stays far below the 200 MB of outputs."""
    import subprocess
    import sys

    from edge_resnet.check.golden import FORMAT, VERSION, OutputsWriter

    rows, classes = 25_000, 1000
    block = np.random.default_rng(0).standard_normal((CHUNK_ROWS // 4, classes)).astype(np.float32)
    for index in (1, 2):
        folder = tmp_path / f"shard_{index}"
        folder.mkdir()
        with OutputsWriter(folder / OUTPUTS, rows, classes) as outputs:
            for start in range(0, rows, len(block)):
                outputs.append(block[:min(len(block), rows - start)])
        start = (index - 1) * rows
        manifest = {
            "format": FORMAT, "version": VERSION,
            "model": {"file": "m.keras", "sha256": "0" * 64, "name": "m", "input_shape": [224, 224, 3],
                      "classes": classes},
            "data": {"source": "folder val", "preprocessing": Preprocessing(224, 224).to_dict(),
                     "preprocessed_input": False, "seed": 0, "class_names": [str(i) for i in range(classes)], "size": rows,
                     "ids": list(range(start, start + rows)), "labels": None,
                     "parts": [{"start": 0, "stop": rows, "fingerprint": f"{index}" * 64}]},
            "shard": {"index": index, "count": 2, "start": start, "stop": start + rows, "of": 2 * rows},
            "reference": {"backend": "jax", "device": "NVIDIA H200", "speed": {"batch_size": 256, "ms_per_image": 0.4}},
            "outputs": {"file": OUTPUTS, "dtype": "float32", "shape": [rows, classes], "sha256": outputs.sha256},
        }
        (folder / MANIFEST).write_text(json.dumps(manifest))
    # VmHWM: this process's own peak (ru_maxrss would include the pytest process it was forked from)
    script = ("import sys; from edge_resnet.check.golden import merge_golden; merge_golden(sys.argv[1:3], sys.argv[3]); "
              "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])")
    result = subprocess.run([sys.executable, "-c", script, tmp_path / "shard_1", tmp_path / "shard_2",
                             tmp_path / "merged"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stdout.split()[-1]) // 1024
    assert peak_mb < 120, f"merging 200 MB of outputs peaked at {peak_mb} MB"
    merged = GoldenReference(tmp_path / "merged")
    assert len(merged.stored) == 2 * rows and merged.manifest["data"]["ids"][-1] == 2 * rows - 1
    np.testing.assert_array_equal(merged.stored.rows(rows, 3), block[:3])


def test_a_float_model_computing_nan_writes_no_golden_outputs(tmp_path):
    from edge_resnet.check.golden import OutputsWriter
    from edge_resnet.errors import ModelError

    rows = np.ones((4, 10), np.float32)
    rows[2, 7] = np.inf
    with OutputsWriter(tmp_path / OUTPUTS, 8, 10, first_image=100) as writer:  # a shard from image 100 on
        writer.append(np.ones((4, 10), np.float32))
        with pytest.raises(ModelError, match="not finite numbers .* on image 106 of the data: no parity"):
            writer.append(rows)
        writer.append(np.ones((4, 10), np.float32))


def test_random_weights_are_named_with_their_seed_where_no_file_checks_the_lineage():
    from edge_resnet.check.golden import recorded_source, recorded_weights

    record = {"source_model": {"file": None, "sha256": None, "weights": "resnet18 with random weights (seed 3)"}}
    assert recorded_source(record) is None  # no file: the lineage goes unchecked, and the note says which weights
    assert recorded_weights(record) == "resnet18 with random weights (seed 3)"
    assert recorded_weights({}) == "weights not recorded"


def test_an_artifact_of_other_random_weights_than_the_golden_outputs_is_refused(tmp_path):
    """Both sides made from random weights record the builder and the seed: where they differ the models differ,
    and parity against them was once reported (a warning that the lineage went unchecked, then exit 0)."""
    from types import SimpleNamespace

    from edge_resnet.check.golden import check_lineage
    from edge_resnet.files import file_sha256
    from edge_resnet.quantize.recipe import write_record

    artifact = tmp_path / "m.tflite"
    artifact.write_bytes(b"an artifact")

    def made_from(weights):
        write_record(artifact, {"sha256": file_sha256(artifact), "model": {"name": "resnet18"},
                                "source_model": {"file": None, "sha256": None, "weights": weights}})

    golden = SimpleNamespace(folder=tmp_path / "golden", manifest={"model": {
        "file": None, "sha256": None, "weights": "resnet18 with random weights (seed 0)"}})
    made_from("resnet18 with random weights (seed 1)")
    with pytest.raises(DataError, match=r"m.tflite was made from resnet18 with random weights \(seed 1\), the "
                                        r"golden outputs in .* from resnet18 with random weights \(seed 0\)"):
        check_lineage(golden, [artifact])
    made_from("resnet18 with random weights (seed 0)")
    assert len(check_lineage(golden, [artifact])) == 1  # the same builder and seed: noted, as no file checks them
    made_from(None)
    assert "weights not recorded" in check_lineage(golden, [artifact])[0]
