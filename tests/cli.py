"""Running the command line as a user does: a real process, real exit codes."""

import os
import subprocess
import sys

COMMAND = [sys.executable, "-m", "edge_resnet.cli"]


def cli_env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def run_cli(*args, cwd=None):
    return subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, env=cli_env(), cwd=cwd)
