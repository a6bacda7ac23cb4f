"""Publishing a run: an earlier run's file list can only ever remove plain
files of the output directory (its report may have been edited by anyone)."""

import json

import pytest

from edge_resnet.convert import previous_run_files
from edge_resnet.files import UnsafeNameWarning, publish


def test_only_plain_files_of_the_output_are_removed(tmp_path):
    output, staging = tmp_path / "out", tmp_path / ".out.partial-1"
    output.mkdir()
    staging.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (output / "kept_dir").mkdir()
    (output / "old_model.tflite").write_text("earlier run")
    (output / "link.txt").symlink_to(victim)
    (output / "report.json").write_text(json.dumps({"files": [
        "old_model.tflite", "report.json", "../victim.txt", str(victim), "kept_dir", "link.txt", {"a": 1}, "",
    ]}))
    (staging / "report.json").write_text("{}")
    with pytest.warns(UnsafeNameWarning, match="left alone") as caught:
        publish(staging, output, replaced=previous_run_files(output), last=("report.json",))
    assert victim.read_text() == "keep me"
    assert (output / "kept_dir").is_dir() and (output / "link.txt").is_symlink()
    assert not (output / "old_model.tflite").exists()  # the earlier run's own file
    assert (output / "report.json").read_text() == "{}" and not staging.exists()
    message = str(caught[0].message)
    assert "'../victim.txt'" in message and "'kept_dir'" in message


def test_a_report_without_a_file_list_removes_nothing(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "report.json").write_text(json.dumps({"files": "everything"}))
    assert previous_run_files(output) == []
