"""Outputs on a read-only or full disk: one line, exit 2, nothing left
behind. The disks are real: small tmpfs mounts (root only; skipped where
mounting is not allowed)."""

import os
import subprocess

import pytest

from tests.cli import run_in_process


@pytest.fixture
def mounted(tmp_path):
    """mount(options) -> a fresh tmpfs folder mounted with `options`, unmounted afterwards."""
    mounts = []

    def mount(options):
        target = tmp_path / f"mnt{len(mounts)}"
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'})")
        mounts.append(target)
        return target

    yield mount
    for target in mounts:
        subprocess.run(["umount", str(target)], capture_output=True)


def fill(folder):
    """Leave no free space in `folder`'s file system."""
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError:
            pass
    (folder / "filler").chmod(0o444)


@pytest.fixture(scope="module")
def inputs(digits_model, digits_artifacts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("storage_inputs")
    digits_model.save(folder / "digits.keras")
    return {"keras": folder / "digits.keras", "int8": digits_artifacts["int8_tflite"]}


def commands(inputs, target):
    from edge_resnet.calibration import digits_folder

    return {
        "quantize": ["quantize", inputs["keras"], "--quantize", "none", "--output", target / "m.tflite"],
        "fold": ["fold", inputs["keras"], "--output", target / "folded.keras"],
        "compare --report": ["compare", "--reference", inputs["keras"], "--data", digits_folder(), "--eval-size", "20",
                             inputs["int8"], "--bench-runs", "0", "--report", target / "report"],
        "convert": ["convert", "--output", target / "out", "--bench-runs", "0", "--no-per-layer"],
    }


@pytest.mark.parametrize("disk", ["read-only", "full"])
@pytest.mark.parametrize("command", ["quantize", "fold", "compare --report", "convert"])
def test_an_output_on_a_read_only_or_full_disk_is_one_line_and_leaves_nothing(inputs, mounted, disk, command):
    target = mounted("ro,size=3m" if disk == "read-only" else "size=3m")
    if disk == "full":
        fill(target)
    before = sorted(os.listdir(target))
    result = run_in_process(*commands(inputs, target)[command])
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert sorted(os.listdir(target)) == before  # nothing half-written, no empty folder
