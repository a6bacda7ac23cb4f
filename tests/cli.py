"""Running the command line as a user does: a real process, real exit codes."""

import os
import subprocess
import sys

COMMAND = [sys.executable, "-m", "edge_resnet.cli"]


def cli_env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def run_cli(*args, cwd=None):
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, env=cli_env(), cwd=cwd)


BLOCKER = "raise ImportError('TensorFlow and Keras are not installed on this device')\n"


def run_without_tensorflow(tmp_path, *args):
    """The command line in a process where TensorFlow, Keras and tf2onnx
    cannot be imported, as on a device."""
    for name in ("tensorflow", "keras", "tf2onnx"):
        (tmp_path / "blocker" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "blocker" / name / "__init__.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "blocker"))
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, env=env)
