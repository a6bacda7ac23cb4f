"""The device side of a run over SSH: what `--device ssh://...` starts on
the board. It is shipped with each run inside a zip of the TF-free code
(the workstation builds it, see remote.py) and needs only Python 3.10+,
numpy and a runtime there; edge-resnet itself is not installed on the device.

The protocol is a stream of messages on the SSH session's stdin/stdout: a
JSON line, then the binary payloads whose sizes it lists. Files (artifacts,
input arrays) go into a content-addressed cache, named by their SHA-256
under the user's cache folder, so the same file is never sent twice; nothing
else of a run is written to the device. When the workstation goes away
(Ctrl-C, a dropped connection, a timeout) stdin ends and the agent stops.
"""

import functools
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
from importlib import metadata

CHUNK = 1 << 20
RUNTIMES = ("ai-edge-litert", "tflite-runtime", "onnxruntime")
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimd", "asimddp", "i8mm", "sve")


@functools.lru_cache(maxsize=None)
def cache_folder():
    """Where the device keeps what it was sent: $XDG_CACHE_HOME (or ~/.cache)/edge-resnet/device,
    as it was when the agent started (a run then points XDG_CACHE_HOME at its own folder)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edge-resnet", "device")


# --- messages: a JSON line, then its payloads (sizes in "payloads") ---

def send(stream, header, payloads=()):
    payloads = [bytes(payload) for payload in payloads]
    line = json.dumps({**header, "payloads": [len(payload) for payload in payloads]}) + "\n"
    stream.write(line.encode())
    for payload in payloads:
        stream.write(payload)
    stream.flush()


def receive_header(stream):
    """The next message's JSON; None when the stream ended."""
    line = stream.readline()
    if not line.endswith(b"\n"):
        return None
    return json.loads(line)


def read_exactly(stream, size):
    parts, left = [], size
    while left:
        part = stream.read(min(left, CHUNK))
        if not part:
            raise EOFError(f"the stream ended {left} bytes before the end of a {size}-byte payload")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def receive(stream):
    """(header, payloads) of the next message, or (None, []) at the end."""
    header = receive_header(stream)
    if header is None:
        return None, []
    return header, [read_exactly(stream, size) for size in header.get("payloads", [])]


# --- what the device is ---

def cpuinfo_fields():
    fields = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def board_model():
    """The board's name where the firmware gives one (Raspberry Pi, Jetson, ...)."""
    try:
        with open("/proc/device-tree/model", "rb") as model:
            return model.read().rstrip(b"\0").decode(errors="replace")
    except OSError:
        return None


def installed_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def identity():
    """The device as results record it: its name, board, CPU, ISA flags, cores, and the software that ran."""
    cpu = cpuinfo_fields()
    flags = set((cpu.get("flags") or cpu.get("features") or "").split())
    runtimes = {name: installed_version(name) for name in RUNTIMES}
    return {
        "name": platform.node(),
        "board": board_model(),
        "machine": platform.machine(),
        "cpu": cpu.get("model name") or cpu.get("hardware") or cpu.get("cpu model") or platform.processor() or None,
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "cores": os.cpu_count(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "numpy": installed_version("numpy"),
        "runtimes": {name: version for name, version in runtimes.items() if version},
    }


def describe_device(device):
    """One line naming a board as results are labelled with it."""
    cpu = device.get("board") or device.get("cpu") or device.get("machine")
    runtimes = ", ".join(f"{name} {version}" for name, version in device.get("runtimes", {}).items())
    return (f"{device['label']} ({device.get('name')}: {cpu}, {device.get('cores')} cores"
            f"{', ' + ' '.join(device['isa']) if device.get('isa') else ''}; Python {device.get('python')}, "
            f"numpy {device.get('numpy')}; {runtimes or 'no runtime'})")


# --- the cache ---

SUFFIXES = (".tflite", ".onnx", ".npy")


def cached_path(sha256, suffix):
    """The cache's file for a SHA-256 (the job's names are checked: nothing outside the cache)."""
    if not (isinstance(sha256, str) and len(sha256) == 64 and set(sha256) <= set("0123456789abcdef")) \
            or suffix not in SUFFIXES:
        raise ValueError(f"not a cache name: {sha256!r}{suffix!r}")
    return os.path.join(cache_folder(), sha256 + suffix)


def store(stream, sha256, suffix, size):
    """Read `size` bytes from `stream` into the cache as `sha256` + `suffix`,
    published only if the bytes hash to `sha256`."""
    final = cached_path(sha256, suffix)
    partial = f"{final}.partial-{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as output:
            left = size
            while left:
                part = stream.read(min(left, CHUNK))
                if not part:
                    raise EOFError("the connection ended during an upload")
                digest.update(part)
                output.write(part)
                left -= len(part)
            output.flush()
            os.fsync(output.fileno())
        if digest.hexdigest() != sha256:
            raise ValueError(f"an upload arrived damaged (sha256 {digest.hexdigest()[:12]}, expected {sha256[:12]})")
        os.replace(partial, final)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def cache_usage():
    folder = cache_folder()
    sizes = [entry.stat().st_size for entry in os.scandir(folder) if entry.is_file()] if os.path.isdir(folder) else []
    return {"folder": folder, "files": len(sizes), "bytes": sum(sizes)}


def clear_cache(keep):
    folder = cache_folder()
    for entry in os.scandir(folder):
        if entry.is_file() and entry.path != keep and ".partial-" not in entry.name:  # another run's upload
            os.remove(entry.path)


# --- jobs ---

def load_array(sha256):
    import numpy as np

    return np.load(cached_path(sha256, ".npy"), mmap_mode="r", allow_pickle=False)


def run_bench(job):
    """BenchResult dicts of each model, timed here."""
    from .bench import benchmark

    results = []
    for model in job["models"]:
        sample = load_array(model["sample"]) if model.get("sample") else None
        result = benchmark(cached_path(model["sha256"], model["suffix"]), sample=sample, **job["settings"]).to_dict()
        results.append({**result, "model": model["name"]})
    return {"results": results}, []


def run_outputs(job):
    """Each model's outputs on the whole input array (returned as .npy
    payloads), and its median batch-1 latency here."""
    import numpy as np

    from .bench import benchmark
    from .runtime import open_runner

    inputs = load_array(job["inputs"])
    batch = job["batch_size"]
    models, payloads = [], []
    for model in job["models"]:
        path = cached_path(model["sha256"], model["suffix"])
        runner = open_runner(path, threads=job["threads"])
        outputs = np.concatenate([runner.predict(np.asarray(inputs[start:start + batch]))
                                  for start in range(0, len(inputs), batch)])
        record = {"name": model["name"], "runtime": runner.runtime, "input_shape": list(runner.input_shape)}
        if job["latency_runs"]:
            timing = benchmark(path, threads=job["threads"], warmup=min(5, job["latency_runs"]),
                               runs=job["latency_runs"], sample=np.asarray(inputs[:1]), reset_peak=False)
            record["p50_ms"] = timing.latency_ms["p50"]
        buffer = io.BytesIO()
        np.save(buffer, outputs.astype(np.float32), allow_pickle=False)
        models.append(record)
        payloads.append(buffer.getvalue())
    return {"models": models}, payloads


JOBS = {"bench": run_bench, "outputs": run_outputs}


def stop_when_stdin_ends(stream, run_folder):
    """The workstation closing the session (Ctrl-C, timeout, a dropped
    connection) ends stdin: stop at once, mid-job, leaving nothing behind."""

    def stop():
        shutil.rmtree(run_folder, ignore_errors=True)
        os._exit(3)

    def watch():
        while stream.read(CHUNK):
            pass
        stop()

    threading.Thread(target=watch, daemon=True).start()
    return stop


def stop_after(seconds, stop):
    """The device timeout, kept here too: a link that died silently ends no stdin."""
    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()


def missing_runtime(job):
    """A line naming what the device lacks for these models, or None."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        return f"numpy is not installed for {sys.executable} on the device: pip install 'numpy<2' there"
    suffixes = {model["suffix"] for model in job["models"]}
    if ".tflite" in suffixes and not installed_version("ai-edge-litert") and not installed_version("tflite-runtime"):
        return (f"no TFLite runtime for {sys.executable} on the device: pip install ai-edge-litert there "
                "(or tflite-runtime on an older board)")
    if ".onnx" in suffixes and not installed_version("onnxruntime"):
        return f"onnxruntime is not installed for {sys.executable} on the device: pip install onnxruntime there"
    return None


def with_model_names(message, job):
    """A message about a cached file, naming the file the user gave instead."""
    for model in job["models"]:
        message = message.replace(cached_path(model["sha256"], model["suffix"]), model["name"])
    return message


def own_run_folder():
    """A folder for whatever the runtimes write as they run (onnxruntime keeps
    a session file in $TMPDIR and an id under $XDG_CACHE_HOME): the run
    points both there, and removes it when it ends."""
    os.makedirs(cache_folder(), exist_ok=True)
    run_folder = tempfile.mkdtemp(prefix="edge-resnet-run-")
    os.environ["TMPDIR"] = tempfile.tempdir = run_folder
    os.environ["XDG_CACHE_HOME"] = run_folder
    return run_folder


def serve(agent_path, stdin, stdout, run_folder):
    """One run: say who we are, take the job and the files we lack, run, answer."""
    send(stdout, {"device": identity()})
    job, _ = receive(stdin)
    if job is None:
        return
    if job.get("clear_cache"):
        clear_cache(keep=agent_path)
    problem = missing_runtime(job)
    if problem:
        send(stdout, {"error": problem})
        return
    missing = [item for item in job["files"] if not os.path.isfile(cached_path(item["sha256"], item["suffix"]))]
    send(stdout, {"missing": [item["sha256"] for item in missing]})
    for item in missing:
        store(stdin, item["sha256"], item["suffix"], item["size"])
    stop = stop_when_stdin_ends(stdin, run_folder)
    if job.get("timeout_s"):
        stop_after(float(job["timeout_s"]), stop)
    from ..errors import EdgeResnetError

    try:
        result, payloads = JOBS[job["kind"]](job)
    except EdgeResnetError as error:
        send(stdout, {"error": with_model_names(str(error), job)})
        return
    send(stdout, {"result": result, "cache": cache_usage()}, payloads)


def main(agent_path):
    """Entry point of the shipped zip: protocol on the real stdout, anything a
    runtime prints goes to stderr instead."""
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), lambda signum, frame: sys.exit(3))
    run_folder = own_run_folder()
    try:
        serve(agent_path, sys.stdin.buffer, protocol_out, run_folder)
    except Exception as error:  # the workstation prints it as one line; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        try:
            send(protocol_out, {"error": f"the device failed: {type(error).__name__}: {error}"})
        except OSError:
            pass
    finally:
        shutil.rmtree(run_folder, ignore_errors=True)
