"""Running on a board over SSH, from the workstation: `--device ssh://[USER@]HOST[:PORT]`.

The system OpenSSH client carries the run, so the user's ~/.ssh/config,
keys, agent, known hosts and jump hosts apply as for any `ssh`. Each run
sends a zip of the TF-free device code (agent.py and what it imports; the
board needs Python 3.10+, numpy and a runtime, not edge-resnet) and the
files the job names, each only if the board's cache lacks it. Every
argument reaches the board as one shell word (shlex.quote), never as text
pasted into a command.
"""

import base64
import hashlib
import io
import re
import shlex
import subprocess
import threading
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import EdgeResnetError
from ..options import option
from .agent import CHUNK, receive, send

DEFAULT_TIMEOUT_S = 900
SENTINEL = b"@edge-resnet@"
HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:[]")
# The modules the agent imports, by their path in the package: the zip holds these and nothing else.
AGENT_MODULES = ("__init__.py", "errors.py", "options.py", "quiet.py", "device/__init__.py", "device/agent.py",
                 "device/bench.py", "device/runtime.py", "device/tflite_inspect.py")
FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # the same code gives the same zip, so the board's cached copy is reused

# Runs first on the board (python -c, as one base64 line, so any login
# shell passes it): checks the Python version, takes the agent zip from the
# cache or from stdin, then starts it. Its first answer is marked, so what a
# login script prints before it is skipped. It cannot import agent.py yet,
# so the cache folder is spelled out here too.
BOOTSTRAP = r"""
import hashlib, os, sys
sha = sys.argv[1]
SENTINEL = "@edge-resnet@"
out, given = sys.stdout.buffer, sys.stdin.buffer
def say(kind, text=""):
    out.write((SENTINEL + kind + text + "\n").encode())
    out.flush()
if sys.version_info < (3, 10):
    say("E", "the device's Python is %s; edge-resnet needs 3.10 or later there (--device-python names another)"
        % sys.version.split()[0])
    sys.exit(0)
base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
folder = os.path.join(base, "edge-resnet", "device")
try:
    os.makedirs(folder, exist_ok=True)
except OSError as error:
    say("E", "cannot make the device's cache folder %s: %s" % (folder, error.strerror or error))
    sys.exit(0)
path = os.path.join(folder, sha + ".pyz")
if not os.path.isfile(path):
    say("N")
    size = int(given.readline())
    parts, left = [], size
    while left:
        part = given.read(left)
        if not part:
            sys.exit(3)
        parts.append(part)
        left -= len(part)
    data = b"".join(parts)
    if hashlib.sha256(data).hexdigest() != sha:
        say("E", "the runner arrived damaged; run again")
        sys.exit(0)
    partial = "%s.partial-%d" % (path, os.getpid())
    try:
        with open(partial, "wb") as output:
            output.write(data)
            output.flush()
            os.fsync(output.fileno())
        os.replace(partial, path)
    except OSError as error:
        say("E", "cannot write the device's cache folder %s: %s" % (folder, error.strerror or error))
        sys.exit(0)
else:
    say("H")
sys.path.insert(0, path)
from edge_resnet.device.agent import main
main(path)
"""


class DeviceError(EdgeResnetError):
    """The device cannot be reached, lacks what the run needs, or failed it."""


@dataclass(frozen=True, kw_only=True)
class DeviceRequest:
    """Where to run: boards reached over SSH, and how."""

    device: tuple = option("--device", default=None, action="append", metavar="ssh://[USER@]HOST[:PORT]",
                           help="run on this board over SSH (repeat for several boards, run in parallel); it needs "
                                "Python 3, numpy and a runtime, not edge-resnet", group="on a device over SSH")
    ssh_config: str = option("--ssh-config", default=None, metavar="FILE",
                             help="ssh -F FILE (default: your ~/.ssh/config)", group="on a device over SSH")
    device_python: str = option("--device-python", default="python3", metavar="PATH",
                                help="the device's Python interpreter", group="on a device over SSH")
    device_timeout: float = option("--device-timeout", default=DEFAULT_TIMEOUT_S, type=float, metavar="SECONDS",
                                   help="stop a device's run (there too) after this long",
                                   group="on a device over SSH")
    device_cache_clear: bool = option("--device-cache-clear", default=False, action="store_true",
                                      help="empty the devices' file cache before the run",
                                      group="on a device over SSH")

    def device_targets(self):
        """The SshTarget of each --device, checked (an empty tuple: run here)."""
        if not self.device:
            if given := self.board_options_given():
                raise DeviceError(f"{', '.join(given)}: for runs on a board, and no --device names one; add "
                                  f"--device ssh://HOST, or leave out {', '.join(given)}")
            return ()
        if not (self.device_timeout > 0 and self.device_timeout < float("inf")):
            raise DeviceError(f"--device-timeout is in seconds, more than 0. Received: {self.device_timeout}")
        if self.ssh_config is not None and not Path(self.ssh_config).is_file():
            raise DeviceError(f"--ssh-config file not found: {self.ssh_config}")
        if not self.device_python or self.device_python.startswith("-"):
            raise DeviceError(f"--device-python names the device's Python, e.g. python3. Received: {self.device_python!r}")
        targets = tuple(parse_device(url, self) for url in self.device)
        labels = [target.label for target in targets]
        if len(set(labels)) != len(labels):
            raise DeviceError(f"--device names the same board twice: {', '.join(labels)}")
        return targets

    def board_options_given(self):
        """The flags of the options for runs on a board set to other than their defaults."""
        return [item.metadata["flags"][0] for item in fields(DeviceRequest) if item.name != "device"
                and getattr(self, item.name) != item.default]


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str = None
    port: int = None
    ssh_config: str = None
    python: str = "python3"
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def label(self):
        """How results name the board: the URL as given, without the scheme."""
        return (f"{self.user}@" if self.user else "") + self.host + (f":{self.port}" if self.port else "")

    def ssh_command(self, remote_words):
        """The ssh argv: no password prompts (BatchMode), a dead link noticed
        in 15 s, host keys checked as the user's configuration says."""
        command = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=5",
                   "-o", "ServerAliveCountMax=3"]
        if self.ssh_config:
            command += ["-F", self.ssh_config]
        if self.port:
            command += ["-p", str(self.port)]
        if self.user:
            command += ["-l", self.user]
        return command + ["--", self.host, "exec " + " ".join(shlex.quote(word) for word in remote_words)]


def parse_device(url, request):
    """An SshTarget from ssh://[USER@]HOST[:PORT]."""
    shown = re.sub(r"^([^/]*//[^:@/]*):.*@", r"\1:***@", url)  # a password given is never echoed into logs
    usage = f"--device takes ssh://[USER@]HOST[:PORT] (a host from your ssh config works). Received: {shown!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DeviceError(usage) from None
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise DeviceError(usage)
    if parts.password is not None:  # not echoed: it would land in logs
        raise DeviceError("--device takes ssh://[USER@]HOST[:PORT] without a password, and the one given holds one: "
                          "ssh logs in with a key or an agent here, never a password")
    if parts.username == "":
        raise DeviceError(usage)
    host, user = parts.hostname, parts.username
    if host.startswith("-") or (user or "").startswith("-") or not set(host + (user or "")) <= HOST_CHARACTERS \
            or port == 0:
        raise DeviceError(usage)
    return SshTarget(host=host, user=user, port=port, ssh_config=request.ssh_config, python=request.device_python,
                     timeout_s=request.device_timeout)


def agent_zip():
    """The device code as a zip Python can import from, byte for byte the same for the same code."""
    package = Path(__file__).resolve().parent.parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for module in AGENT_MODULES:
            entry = zipfile.ZipInfo(f"edge_resnet/{module}", FIXED_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, (package / module).read_bytes())
    return buffer.getvalue()


@dataclass(frozen=True)
class DeviceFile:
    """A local file the job needs on the board, named there by its SHA-256."""

    path: str
    sha256: str
    suffix: str

    @classmethod
    def of(cls, path):
        from ..files import file_sha256

        return cls(str(path), file_sha256(path), Path(path).suffix)

    def entry(self):
        return {"sha256": self.sha256, "suffix": self.suffix, "size": Path(self.path).stat().st_size}


@dataclass(frozen=True)
class DeviceAnswer:
    target: SshTarget
    identity: dict  # what the agent says the board is
    result: dict
    payloads: list
    cache: dict  # the board's cache after the run: folder, files, bytes
    uploaded_bytes: int

    @property
    def device(self):
        """The identity, labelled with how the user named the board."""
        return {"label": self.target.label, **self.identity, "cache": self.cache}


def run_on_devices(targets, job, files, clear_cache=False):
    """run_on_device on every target at once; the answers in target order.
    The first failure is raised once every board has finished or stopped."""
    if len(targets) == 1:
        return [run_on_device(targets[0], job, files, clear_cache)]
    sessions = []
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = [pool.submit(run_on_device, target, job, files, clear_cache, sessions) for target in targets]
        try:
            return [future.result() for future in futures]
        except BaseException:  # one board failed, or Ctrl-C: stop the others now rather than wait for them
            for session in list(sessions):
                session.kill()
            raise


def bootstrap_command(python, agent_sha):
    code = base64.b64encode(BOOTSTRAP.encode()).decode()
    return [python, "-c", f"import base64;exec(base64.b64decode('{code}'))", agent_sha]


def first_answer(session):
    """The bootstrap's marked line (login scripts may print lines before it)."""
    for _ in range(1000):
        line = session.stdout.readline()
        if not line or line.startswith(SENTINEL):
            return line[len(SENTINEL):]
    return b""


def run_on_device(target, job, files, clear_cache=False, sessions=None):
    """Send `job` (a dict naming `files` by SHA-256) to the board, upload the
    files its cache lacks, and return its DeviceAnswer."""
    agent = agent_zip()
    agent_sha = hashlib.sha256(agent).hexdigest()
    session = Session(target.ssh_command(bootstrap_command(target.python, agent_sha)), target)
    if sessions is not None:
        sessions.append(session)
    try:
        session.start()
        kind = first_answer(session)
        if kind.startswith(b"E"):
            raise DeviceError(f"{target.label}: {kind[1:].decode(errors='replace').strip()}")
        if kind.startswith(b"N"):
            session.stdin.write(b"%d\n" % len(agent) + agent)
            session.stdin.flush()
        elif not kind.startswith(b"H"):
            raise session.failure(connected=False)
        hello, _ = receive(session.stdout)
        if hello is None or "device" not in hello:
            raise session.failure(connected=False, message=(hello or {}).get("error"))
        unique = list({item.sha256: item for item in files}.values())
        entries = [item.entry() for item in unique]  # each size read once: what is announced is what is sent
        send(session.stdin, {**job, "clear_cache": clear_cache, "timeout_s": target.timeout_s, "files": entries})
        answer, _ = receive(session.stdout)
        if answer is None or "missing" not in answer:
            raise session.failure(message=(answer or {}).get("error"))
        sizes = {entry["sha256"]: entry["size"] for entry in entries}
        try:
            uploaded = sum(session.upload(item, sizes[item.sha256]) for item in unique if item.sha256 in answer["missing"])
        except BrokenPipeError:  # the board stopped taking files: it may have said why
            answer, _ = receive(session.stdout)
            raise session.failure(message=(answer or {}).get("error")) from None
        answer, payloads = receive(session.stdout)
        if answer is None or "result" not in answer:
            raise session.failure(message=(answer or {}).get("error"))
        return DeviceAnswer(target, hello["device"], answer["result"], payloads, answer["cache"], uploaded)
    except (BrokenPipeError, ConnectionError, EOFError):
        raise session.failure() from None
    except ValueError as error:  # not our protocol: something else writes to the session's stdout
        raise DeviceError(f"{target.label}: unexpected output from the device ({error}); does a login script "
                          "print to stdout?") from None
    finally:
        session.close()


class Session:
    """One ssh process: its pipes, its stderr's last lines, and the
    watchdog that ends it at the device timeout."""

    def __init__(self, command, target):
        self.command, self.target = command, target
        self.stderr_tail = deque(maxlen=20)
        self.timed_out = threading.Event()

    def start(self):
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise DeviceError("the OpenSSH client (ssh) is not installed here: install openssh-client") from None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()
        self.timer = threading.Timer(self.target.timeout_s, self._time_out)
        self.timer.daemon = True
        self.timer.start()

    def _read_stderr(self):
        for line in self.process.stderr:
            text = line.decode(errors="replace").strip()
            if text:
                self.stderr_tail.append(text)

    def _time_out(self):
        self.timed_out.set()
        self.process.kill()

    def upload(self, item, size):
        """Stream exactly `size` bytes of one file (as announced) into the session."""
        left = size
        with open(item.path, "rb") as source:
            while left:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    raise DeviceError(f"{item.path} changed while it was being sent; run again")
                self.stdin.write(chunk)
                left -= len(chunk)
        self.stdin.flush()
        return size

    def kill(self):
        if hasattr(self, "process"):
            self.process.kill()

    def close(self):
        """However the run ended, the ssh process is gone afterwards (so is the
        agent on the board: its stdin ends)."""
        if not hasattr(self, "process"):
            return
        self.timer.cancel()
        self._end(wait_s=5)

    def _end(self, wait_s):
        """Close ssh's stdin, give it `wait_s` to exit, then kill it; collect its last words."""
        try:
            self.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)

    def failure(self, connected=True, message=None):
        """The one-line DeviceError for a session that ended early."""
        label = self.target.label
        if message:
            return DeviceError(f"{label}: {message}")
        if self.timed_out.is_set():
            return DeviceError(f"{label}: the run passed --device-timeout {self.target.timeout_s:g} s and was "
                               "stopped (on the device too)")
        self._end(wait_s=10)
        return DeviceError(f"{label}: {ssh_problem(list(self.stderr_tail), self.process.returncode, self.target, connected)}")


def ssh_problem(stderr_lines, returncode, target, connected):
    """What went wrong, from ssh's exit code and its last words."""
    text = " ".join(stderr_lines)
    last = stderr_lines[-1] if stderr_lines else "no message"
    port = f" -p {target.port}" if target.port else ""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return ("the device's host key is not the one known_hosts records for it, so ssh refused it; if the board "
                "was reinstalled, check its new fingerprint and replace the old entry (ssh-keygen -R HOST)")
    if "Host key verification failed" in text:
        return (f"the device's host key is not known here, so ssh refused it; check its fingerprint, then add it "
                f"with: ssh-keyscan{port} {target.host} >> ~/.ssh/known_hosts (or connect once with ssh)")
    if "Permission denied" in text:
        return (f"ssh could not log in ({last}); `ssh{port} {target.label.split(':')[0]}` must work without "
                "a password prompt (a key, or an agent)")
    if returncode == 127 or "not found" in text and target.python in text:
        return f"{target.python} is not on the device: --device-python names its Python 3 interpreter"
    if returncode == 255 and not connected:
        return f"cannot reach the device: {last}"
    if not connected and returncode not in (None, 0, 255):  # it ran, and exited without a word of the bootstrap
        return (f"{target.python} on the device exited with code {returncode} before edge-resnet's agent started "
                f"({last}): --device-python names its Python 3 interpreter")
    return f"the connection dropped during the run ({last})"


def bench_on_boards(targets, models, samples, settings, clear_cache=False):
    """BenchResults of `models` timed on every board, board by board; each
    names its board (`device`). `samples`: an input batch per model, or None
    for random inputs."""
    import tempfile

    import numpy as np

    from .bench import BenchResult

    with tempfile.TemporaryDirectory(prefix="edge-resnet-bench-") as folder:
        entries, files = [], []
        for index, (path, sample) in enumerate(zip(models, samples)):
            model = DeviceFile.of(path)
            entry = {"sha256": model.sha256, "suffix": model.suffix, "name": Path(path).name}
            files.append(model)
            if sample is not None:
                sample_path = Path(folder) / f"sample{index}.npy"
                np.save(sample_path, sample, allow_pickle=False)
                files.append(DeviceFile.of(sample_path))
                entry["sample"] = files[-1].sha256
            entries.append(entry)
        answers = run_on_devices(targets, {"kind": "bench", "models": entries, "settings": settings}, files,
                                 clear_cache)
    return [BenchResult(**{**result, "input_shape": tuple(result["input_shape"]),
                           "device": {**answer.device, "uploaded_bytes": answer.uploaded_bytes}})
            for answer in answers for result in answer.result["results"]]
