"""Publishing a run: an earlier run's file list can only ever remove plain
files of the output directory (its report may have been edited by anyone),
and only one run at a time writes into an output directory."""

import json
import os

import pytest

from edge_resnet.convert import previous_run_files
from edge_resnet.errors import ConfigError
from edge_resnet.files import UnsafeNameWarning, lock_path, output_lock, publish


def test_only_plain_files_of_the_output_are_removed(tmp_path):
    output, staging = tmp_path / "out", tmp_path / ".out.partial-1"
    output.mkdir()
    staging.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (output / "kept_dir").mkdir()
    (output / "old_model.tflite").write_text("earlier run")
    (output / "link.txt").symlink_to(victim)
    (output / "report.json").write_text(json.dumps({"tool": {"name": "edge-resnet"}, "files": [
        "old_model.tflite", "report.json", "../victim.txt", str(victim), "kept_dir", "link.txt", {"a": 1}, "",
    ]}))
    (staging / "report.json").write_text("{}")
    with pytest.warns(UnsafeNameWarning, match="left alone") as caught:
        publish(staging, output, replaced=previous_run_files(output), last=("report.json",))
    assert victim.read_text() == "keep me"
    assert (output / "kept_dir").is_dir() and (output / "link.txt").is_symlink()
    assert not (output / "old_model.tflite").exists()  # the earlier run's own file
    assert (output / "report.json").read_text() == "{}" and not staging.exists()
    message = " ".join(str(warning.message) for warning in caught)
    assert "'../victim.txt'" in message and "'kept_dir'" in message


def test_a_report_without_a_file_list_removes_nothing(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "report.json").write_text(json.dumps({"tool": {"name": "edge-resnet"}, "files": "everything"}))
    assert previous_run_files(output) == []
    planted = tmp_path / "planted.json"  # a link at the report's name is no earlier run's report
    planted.write_text(json.dumps({"files": ["users_file.txt"]}))
    (output / "report.json").unlink()
    (output / "report.json").symlink_to(planted)
    assert previous_run_files(output) == []


def test_another_tools_report_removes_nothing(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    for name in ("notes.txt", "data.csv", "model.tflite"):
        (output / name).write_text("the user's")
    (output / "report.json").write_text(json.dumps({"tool": "some-other-tool", "files": ["notes.txt", "model.tflite"]}))
    with pytest.warns(UnsafeNameWarning, match="not an edge-resnet report"):
        assert previous_run_files(output) == []


def test_files_of_kinds_a_run_never_writes_are_left_alone(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    listed = ["model_int8.tflite", "model_int8.tflite.json", "notes.txt", "model_int8_ethos-u55-128_vela_summary.csv",
              "data.csv"]
    (output / "report.json").write_text(json.dumps({"tool": {"name": "edge-resnet"}, "files": listed}))
    with pytest.warns(UnsafeNameWarning, match="never writes; left alone: 'notes.txt', 'data.csv'"):
        assert previous_run_files(output) == [listed[0], listed[1], listed[3]]


HOLD_LOCK = """
import fcntl, os, sys, time
descriptor = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.write(descriptor, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def lock_holder(tmp_path):
    """Another process holding the lock of tmp_path/out, as a run in progress does."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_path(tmp_path / "out"))],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def test_a_second_run_into_a_locked_output_is_refused_in_one_line(tmp_path, lock_holder):
    from tests.cli import run_in_process

    lock = lock_path(tmp_path / "out")
    result = run_in_process("convert", "--output", "out", "--bench-runs", "0", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert f"another edge-resnet run (PID {lock_holder.pid})" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock.name]  # its lock kept, nothing else written
    assert lock.read_text() == str(lock_holder.pid)


def test_the_lock_ends_with_its_process_and_with_the_block(tmp_path, lock_holder):
    output = tmp_path / "out"
    lock = lock_path(output)
    with pytest.raises(ConfigError, match=f"PID {lock_holder.pid}"), output_lock(output):
        pass
    lock_holder.kill()
    lock_holder.wait()  # killed: its lock file stays, its lock is gone
    assert lock.exists()
    with pytest.raises(RuntimeError), output_lock(output):
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(ConfigError, match="another edge-resnet run"), output_lock(output):
            pass  # even this process cannot take it twice
        raise RuntimeError("a stage failed")
    assert not lock.exists()
    with output_lock(tmp_path / "new" / "deeper" / "out"):  # folders that do not exist yet are made
        assert lock_path(tmp_path / "new" / "deeper" / "out").is_file()


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    from edge_resnet.files import check_writable, refuse_writing_over_inputs

    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_dir.tflite").mkdir()
    with pytest.raises(ConfigError, match="is a directory; give a file name"):
        refuse_writing_over_inputs([str(tmp_path / "a_dir.tflite")], [])
    with pytest.raises(ConfigError, match="a_file is a file, not a folder"):
        refuse_writing_over_inputs([str(tmp_path / "a_file" / "deeper" / "m.tflite")], [])
    with pytest.raises(ConfigError, match="is a file; give a directory"):
        check_writable(tmp_path / "a_file", "directory")
    check_writable(tmp_path / "new" / "deeper" / "m.tflite")  # folders that do not exist yet are made


def test_a_link_planted_at_the_lock_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    lock_path(tmp_path / "out").symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link"):
        with output_lock(tmp_path / "out"):
            pass
    assert victim.read_text() == "precious" and lock_path(tmp_path / "out").is_symlink()


def test_links_planted_at_staging_names_are_never_written_through(tmp_path):
    from edge_resnet.files import atomic_output

    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    for pid in range(os.getpid() - 50, os.getpid() + 50):  # the names the old scheme would have used
        (tmp_path / f".o.partial-{pid}.tflite").symlink_to(victim)
    (tmp_path / "o.tflite").symlink_to(victim)  # a link at the final name is replaced, not followed
    with atomic_output(tmp_path / "o.tflite") as temporary:
        temporary.write_bytes(b"artifact")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "o.tflite").is_symlink() and (tmp_path / "o.tflite").read_bytes() == b"artifact"


def test_a_temporary_file_swapped_for_a_link_is_not_published(tmp_path):
    from edge_resnet.files import atomic_output

    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    with pytest.raises(ConfigError, match="was replaced while it was being written"):
        with atomic_output(tmp_path / "o.tflite") as temporary:
            temporary.unlink()
            temporary.symlink_to(victim)
    assert not (tmp_path / "o.tflite").exists() and victim.read_text() == "precious"


def test_stale_staging_cleanup_removes_only_what_a_dead_run_of_ours_made(tmp_path):
    import subprocess
    import sys

    from edge_resnet.files import STAGING_MARKER, open_staging

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    users = tmp_path / ".st1.partial-backup"  # a user's folder that merely looks like ours
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    unmarked = tmp_path / f".st1.partial-{dead_pid}-abcd1234"  # our name pattern, no marker
    unmarked.mkdir()
    (unmarked / "data.bin").write_text("mine too")
    ours = tmp_path / f".st1.partial-{dead_pid}-efgh5678"
    ours.mkdir()
    (ours / STAGING_MARKER).write_text(str(dead_pid))
    staging = open_staging(tmp_path / "st1")
    assert (users / "notes.txt").read_text() == "mine" and (unmarked / "data.bin").exists()
    assert not ours.exists()
    assert staging.name.startswith(f".st1.partial-{os.getpid()}-") and (staging / STAGING_MARKER).is_file()


def test_a_folder_at_a_published_name_is_refused_before_anything_moves(tmp_path):
    from edge_resnet.files import STAGING_MARKER, open_staging

    output = tmp_path / "out"
    output.mkdir()
    (output / "model.tflite").mkdir()
    (output / "report.json").write_text("earlier")
    staging = open_staging(output, force=True)
    for name in ("model.tflite", "report.json", "other.json"):
        (staging / name).write_text("new")
    with pytest.raises(ConfigError, match="is a folder where this run writes a file"):
        publish(staging, output, last=("report.json",))
    assert (output / "report.json").read_text() == "earlier" and not (output / "other.json").exists()
    assert not (output / STAGING_MARKER).exists()


def test_quantize_into_a_locked_output_file_is_refused_in_one_line(tmp_path):
    import subprocess
    import sys

    from tests.cli import run_in_process

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock_path(tmp_path / "out.tflite"))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_in_process("quantize", "resnet18", "--weights", "random", "--input-size", "32", "--classes",
                                "10", "--quantize", "none", "--output", tmp_path / "out.tflite")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"another edge-resnet run (PID {holder.pid})" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock_path(tmp_path / "out.tflite").name]


@pytest.mark.parametrize("output", ["/proc/nope/x.tflite", "{read_only}/x.tflite"])
def test_quantize_into_a_folder_that_cannot_be_written_is_one_line(tmp_path, output):
    from tests.cli import run_in_process

    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if os.access(read_only, os.W_OK) and "read_only" in output:
            pytest.skip("running as a user who may write anywhere (root): a read-only folder is not read-only")
        result = run_in_process("quantize", "resnet18", "--weights", "random", "--input-size", "32", "--classes",
                                "10", "--quantize", "none", "--output", output.format(read_only=read_only))
    finally:
        read_only.chmod(0o755)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and "cannot write" in result.stderr


def test_a_link_to_nothing_on_the_way_to_an_output_is_refused_and_nothing_is_made_where_it_points(tmp_path):
    """Making the folders a dangling link names would put the output (or a failed run's empty folders)
    wherever it points; a link to an existing folder is a user's choice and is written through."""
    from edge_resnet.files import atomic_output, check_writable, staged_output

    elsewhere = tmp_path / "elsewhere"
    (tmp_path / "dangling").symlink_to(elsewhere / "made")
    attempts = (lambda: check_writable(tmp_path / "dangling" / "deep" / "m.tflite"),
                lambda: check_writable(tmp_path / "dangling", "directory"),
                lambda: atomic_output(tmp_path / "dangling" / "deep" / "m.tflite").__enter__(),
                lambda: output_lock(tmp_path / "dangling" / "m.tflite").__enter__(),
                lambda: staged_output(tmp_path / "dangling").__enter__())
    for attempt in attempts:
        with pytest.raises(ConfigError, match=r"dangling is a symbolic link to .*made, which does not exist"):
            attempt()
    assert not elsewhere.exists()
    (tmp_path / "dangling_file.tflite").symlink_to(elsewhere / "deep" / "m.tflite")
    with output_lock(tmp_path / "dangling_file.tflite"):  # a link at a file output's own name is replaced later:
        pass  # its lock sits beside the link, not where the link points
    for attempt in (lambda: output_lock(tmp_path / "dangling" / "..").__enter__(),  # ".." after the link, too
                    lambda: check_writable(tmp_path / "dangling" / ".." / "m.tflite")):
        with pytest.raises(ConfigError, match="dangling is a symbolic link"):
            attempt()
    elsewhere.mkdir()
    (tmp_path / "linked").symlink_to(elsewhere)
    with staged_output(tmp_path / "linked" / "out") as staging:
        (staging / "report.json").write_text("{}")
        publish(staging, tmp_path / "linked" / "out")
    assert (elsewhere / "out" / "report.json").is_file()


def test_a_failed_run_leaves_none_of_the_folders_it_made(tmp_path):
    from edge_resnet.files import atomic_output, staged_output

    with pytest.raises(RuntimeError):
        with staged_output(tmp_path / "new" / "deeper" / "out"):
            raise RuntimeError("the run failed")
    with pytest.raises(RuntimeError):
        with output_lock(tmp_path / "new" / "deeper" / "m.tflite"), \
                atomic_output(tmp_path / "new" / "deeper" / "m.tflite") as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("the run failed")
    with pytest.raises(RuntimeError):
        with staged_output(tmp_path / "new" / ".." / "other" / "out"):  # ".." is a step, not a folder made
            raise RuntimeError("the run failed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()  # a folder that was there before is never removed
    with pytest.raises(RuntimeError):
        with staged_output(tmp_path / "kept" / "out"):
            raise RuntimeError("the run failed")
    assert [path.name for path in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []
    with output_lock(tmp_path / "new" / "deeper" / "m.tflite"), \
            atomic_output(tmp_path / "new" / "deeper" / "m.tflite") as temporary:
        temporary.write_bytes(b"artifact")
    assert (tmp_path / "new" / "deeper" / "m.tflite").read_bytes() == b"artifact"


def test_links_at_the_names_a_forced_run_writes_are_replaced_without_a_false_warning(tmp_path):
    import warnings

    output, staging, victim = tmp_path / "out", tmp_path / "staging", tmp_path / "precious.txt"
    output.mkdir()
    staging.mkdir()
    victim.write_text("precious")
    (output / "report.json").symlink_to(victim)
    (output / "old_link.md").symlink_to(victim)
    (staging / "report.json").write_text("{}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        publish(staging, output, replaced=["report.json", "old_link.md"])
    said = [str(warning.message) for warning in caught if warning.category is UnsafeNameWarning]
    assert len(said) == 1 and "'old_link.md'" in said[0] and "report.json" not in said[0]  # only what stays
    assert victim.read_text() == "precious" and not (output / "report.json").is_symlink()


def test_outputs_get_the_permissions_of_any_file_the_user_makes(tmp_path):
    """Temporary names are made private (0600, 0700); what is published is not."""
    from edge_resnet.files import atomic_output, staged_output

    mask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "m.tflite") as temporary:
            temporary.write_bytes(b"artifact")
        with staged_output(tmp_path / "out") as staging:
            (staging / "report.json").write_text("{}")
            publish(staging, tmp_path / "out")
    finally:
        os.umask(mask)
    assert (tmp_path / "m.tflite").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_files_written_together_are_all_replaced_or_none(tmp_path):
    """A report's files once went one by one: one that could not be replaced left the others new beside it."""
    from edge_resnet.files import write_together

    (tmp_path / "a.md").write_text("earlier a")
    (tmp_path / "b.json").mkdir()  # a name no file can take: its publish fails after a.md's and c.html's
    with pytest.raises(ConfigError, match="a folder is in the way"):
        write_together(tmp_path, {"b.json": "new b", "a.md": "new a", "c.html": "new c"})
    assert (tmp_path / "a.md").read_text() == "earlier a"  # kept and put back
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.md", "b.json"]  # c.html, new, gone again
    (tmp_path / "b.json").rmdir()
    (tmp_path / ".a.md.previous-999999999").write_text("left by a killed run")
    (tmp_path / "b.json").symlink_to(tmp_path / "elsewhere.json")
    written = write_together(tmp_path, {"b.json": "new b", "a.md": "new a"})
    assert [path.read_text() for path in written] == ["new b", "new a"]
    assert not (tmp_path / "b.json").is_symlink() and not (tmp_path / "elsewhere.json").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.md", "b.json"]
