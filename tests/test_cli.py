"""The command line as a user runs it: a real process, real exit codes."""

import os
import re
import subprocess
import sys

import pytest

from edge_resnet import __version__


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "edge_resnet.cli", *args], capture_output=True, text=True, env=env
    )


def test_version_and_help():
    assert run_cli("--version").stdout.strip() == f"edge-resnet {__version__}"
    result = run_cli("--help")
    assert result.returncode == 0 and "summary" in result.stdout


@pytest.mark.parametrize("command", ["summary"])
def test_every_subcommand_has_help_with_an_example(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "example:" in result.stdout and f"edge-resnet {command}" in result.stdout


def test_summary_counts_resnet50_from_its_layers():
    result = run_cli("summary", "--model", "resnet50", "--input-size", "224")
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
    small = run_cli("summary", "--model", "resnet18", "--input-size", "64", "--shortcut", "A")
    large = run_cli("summary", "--model", "resnet18", "--input-size", "128", "--shortcut", "A")
    pattern = r"^total\s+[\d,]+\s+([\d,]+)$"
    macs = [int(re.search(pattern, r.stdout, re.MULTILINE).group(1).replace(",", "")) for r in (small, large)]
    # Everything but the fc layer scales with the pixel count.
    assert 3.9 < macs[1] / macs[0] <= 4.0


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["summary", "--input-size", "16"], "at least 32"),
        (["summary", "--model", "resnet20"], "invalid choice"),
        (["summary", "--width", "0"], "width must be positive"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, fragment):
    result = run_cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
