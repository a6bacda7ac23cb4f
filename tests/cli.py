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


def main_in_process(*args):
    """The command line's main() in this process, for the option and input
    checks (no interpreter start-up): (exit code, stdout, stderr)."""
    import contextlib
    import io
    import signal
    import warnings

    from edge_resnet.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main([str(arg) for arg in args])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    finally:
        signal.signal(signal.SIGTERM, sigterm_handler)
    return code, stdout.getvalue(), stderr.getvalue()


def run_in_process(*args, cwd=None):
    """main() in this process, answering like run_cli (returncode, stdout,
    stderr): for option and input checks, without an interpreter start-up."""
    saved = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        code, stdout, stderr = main_in_process(*args)
    finally:
        os.chdir(saved)
    return subprocess.CompletedProcess(["edge-resnet", *map(str, args)], code, stdout, stderr)
