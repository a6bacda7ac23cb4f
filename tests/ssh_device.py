"""A stand-in board for the `--device ssh://` tests: Debian's OpenSSH server
on 127.0.0.1 with a throwaway host key and user key, and "device" Python
environments that have numpy<2 and a runtime but neither TensorFlow nor
edge-resnet. Where sshd cannot run, the tests skip with the reason, except
under CI, where they fail."""

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
# name -> what pip installs into that device environment
DEVICE_ENVIRONMENTS = {
    "tflite-runtime": ("numpy<2", "tflite-runtime==2.14.0"),
    "onnxruntime": ("numpy<2", "onnxruntime>=1.32,<1.33"),
}


def unavailable(reason):
    """Skip here; in CI the stand-in board must work."""
    if os.environ.get("CI"):
        pytest.fail(f"the SSH stand-in device is needed in CI: {reason}")
    pytest.skip(reason)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def device_environment(name):
    """A venv (cached between runs) with only DEVICE_ENVIRONMENTS[name]
    installed; its python. "bare" is a venv without numpy."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-resnet" / "test-device-python"
    packages = DEVICE_ENVIRONMENTS.get(name, ())
    folder = root / f"{name}-py{sys.version_info.major}{sys.version_info.minor}"
    python = folder / "bin" / "python"
    if (folder / "ready").is_file():
        return python
    shutil.rmtree(folder, ignore_errors=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", *([] if packages else ["--without-pip"]), str(folder)], check=True)
    if packages:
        installed = subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], capture_output=True,
                                   text=True)
        if installed.returncode:
            unavailable(f"cannot install the device environment {name}: {installed.stderr.strip()[-300:]}")
    (folder / "ready").write_text("")
    return python


class StandInDevice:
    """sshd on a free port of 127.0.0.1; `config` is an ssh -F file for it
    (hosts `device` and `device2`, two names for it), with its host key known."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.home = self.folder / "device-home"  # the device user's cache lives here (XDG_CACHE_HOME)
        self.tmp = self.folder / "device-tmp"
        self.port = free_port()

    def start(self):
        if not os.path.exists(SSHD) or not shutil.which("ssh"):
            unavailable("Debian's openssh-server (/usr/sbin/sshd) and ssh are needed: apt-get install openssh-server")
        if not os.path.isdir("/run/sshd"):
            try:
                os.makedirs("/run/sshd", mode=0o755)
            except OSError as error:
                unavailable(f"sshd needs /run/sshd and it cannot be made here: {error}")
        folder = self.folder
        for path in (self.home, self.tmp):
            path.mkdir(parents=True)
        for key in ("host_key", "user_key", "other_host_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
        (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
        host_public = (folder / "host_key.pub").read_text().split()
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_public[0]} {host_public[1]}\n")
        (folder / "empty_known_hosts").write_text("")
        other_public = (folder / "other_host_key.pub").read_text().split()
        (folder / "changed_known_hosts").write_text(f"[127.0.0.1]:{self.port} {other_public[0]} {other_public[1]}\n")
        (folder / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
            f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "LogLevel ERROR",
            f"SetEnv XDG_CACHE_HOME={self.home / 'cache'} TMPDIR={self.tmp}", ""]))
        self.config = self.client_config("known_hosts")
        self.unknown_config = self.client_config("empty_known_hosts", name="ssh_config_unknown")
        self.changed_config = self.client_config("changed_known_hosts", name="ssh_config_changed")
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):
            probe = subprocess.run(["ssh", "-F", self.config, "-o", "BatchMode=yes", "device", "true"],
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                return self
            if self.process.poll() is not None:
                unavailable(f"sshd did not start: {self.process.stderr.read().decode()[-300:]}")
            time.sleep(0.1)
        self.stop()
        unavailable(f"cannot log in to the stand-in sshd: {probe.stderr.strip()[-300:]}")

    def client_config(self, known_hosts, name="ssh_config"):
        path = self.folder / name
        path.write_text("\n".join([
            "Host device device2", "  HostName 127.0.0.1", f"  Port {self.port}", f"  User {getpass.getuser()}",
            f"  IdentityFile {self.folder / 'user_key'}", "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.folder / known_hosts}", "  GlobalKnownHostsFile /dev/null", ""]))
        return str(path)

    def session_processes(self):
        """PIDs of the per-connection sshd processes (children of the listener)."""
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    def left_behind(self):
        """What the device holds outside its cache folder, and unfinished uploads in it."""
        cache = self.home / "cache" / "edge-resnet" / "device"
        outside = [path for root in (self.home, self.tmp) for path in root.rglob("*")
                   if path != cache and path not in cache.parents and cache not in path.parents]
        partial = [path for path in cache.glob("*.partial-*")] if cache.is_dir() else []
        return sorted(map(str, outside + partial))

    def cache_files(self):
        cache = self.home / "cache" / "edge-resnet" / "device"
        return sorted(path.name for path in cache.iterdir()) if cache.is_dir() else []

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
