"""On-device latency benchmark for .tflite and .onnx files, without
TensorFlow: numpy plus a runtime (ai-edge-litert, tflite-runtime or
onnxruntime) is all it needs.

Each run is timed on its own with perf_counter around a bare invoke, so the
harness adds two clock reads per inference; benchmarks/bench_overhead.py
measures that against a loop with no timing inside.
"""

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, ModelError
from ..options import option
from .runtime import TfliteRunner, open_runner

PERCENTILES = (50, 90, 95, 99)


DEFAULT_THREADS, DEFAULT_WARMUP, DEFAULT_RUNS, DEFAULT_BATCH = 2, 10, 50, 1
MAX_THREADS = 256  # above any CPU this runs on; a mistyped 100000 would start that many threads and exhaust memory


def threads_problem(threads):
    """What is wrong with a number of inference threads (in words), or None."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        return f"--threads is a whole number from 1 to {MAX_THREADS}. Received: {threads}"
    return None


def thread_count(text):
    """--threads, as the command line gives it."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = text
    if problem := threads_problem(value):
        raise argparse.ArgumentTypeError(problem)
    return value


@dataclass(frozen=True, kw_only=True)
class ThreadsRequest:
    threads: int = option("--threads", default=DEFAULT_THREADS, type=thread_count,
                          help=f"inference threads (1 to {MAX_THREADS})")


@dataclass(frozen=True)
class BenchResult:
    model: str
    runtime: str
    runtime_version: str
    accelerator: str  # "XNNPACK (whole model)", "CPUExecutionProvider", ...
    input_shape: tuple
    input_dtype: str
    batch: int
    threads: int
    load_ms: float
    first_inference_ms: float
    runs: int
    latency_ms: dict  # min, mean, std, p50, p90, p95, p99, max
    throughput_per_s: float  # images per second
    peak_rss_mb: float  # peak resident memory of the process while this model ran
    operator_ms: dict = None  # total ms per operator type over the timed runs (onnxruntime, on request)
    device: dict = None  # the board it ran on over SSH (remote.describe_device); None: this machine
    note: str = None  # what makes this runtime's outputs there doubtful (runtime.saturation_note)

    def to_dict(self):
        return asdict(self)

    def describe(self, profile=False):
        """What `edge-resnet bench` prints for this model: one line, plus the
        per-operator times when asked for."""
        where = f" on {self.device['label']}" if self.device else ""
        lines = [f"{self.model}{where}: {self.runtime} {self.runtime_version}, {self.accelerator}; "
                 f"input {self.input_dtype} {list(self.input_shape)} x{self.batch}; "
                 f"load {self.load_ms:.0f} ms, first inference {self.first_inference_ms:.1f} ms, "
                 f"{self.runs} runs: mean {self.latency_ms['mean']:.2f} ms (std {self.latency_ms['std']:.2f}), "
                 f"min {self.latency_ms['min']:.2f}, max {self.latency_ms['max']:.2f}"]
        if profile:
            lines.append("  per operator (ms, all runs): " + (", ".join(
                f"{op} {ms:.1f}" for op, ms in list(self.operator_ms.items())[:10])
                if self.operator_ms else "not offered by this runtime's Python API"))
        return "\n".join(lines)


def latency_stats(milliseconds):
    values = np.asarray(milliseconds, dtype=np.float64)
    stats = {"min": values.min(), "mean": values.mean(), "std": values.std(), "max": values.max()}
    stats.update({f"p{p}": np.percentile(values, p) for p in PERCENTILES})
    return {key: float(value) for key, value in stats.items()}


def reset_peak_rss():
    """Linux: writing 5 to clear_refs resets VmHWM, the peak resident set."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb():
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def runtime_version(runtime):
    from importlib import metadata

    try:
        return metadata.version(runtime)
    except metadata.PackageNotFoundError:
        return "unknown"


def random_input(shape, dtype, seed=0):
    """Inputs of the model's own type: the full integer range for int8/uint8
    models, a caffe-like spread for float ones."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.normal(0.0, 50.0, size=shape).astype(dtype)


class _Timed:
    """What the loop needs of one model: feed once, then invoke repeatedly."""

    def __init__(self, runner, batch, sample):
        self.runner, self.batch = runner, batch
        if isinstance(runner, TfliteRunner):
            interpreter = runner.interpreter
            if batch != 1:
                interpreter.resize_tensor_input(runner.input["index"], [batch, *runner.input_shape])
                interpreter.allocate_tensors()
                runner.input = interpreter.get_input_details()[0]
            data = sample if sample is not None else random_input((batch, *runner.input_shape), runner.input_dtype)
            interpreter.set_tensor(runner.input["index"], _to_input(runner, data))
            self.invoke = interpreter.invoke
            self.accelerator = _tflite_accelerator(runner.path)
        else:
            if sample is not None and len(sample) == 1 and runner.fixed_batch not in (None, batch):
                sample = np.repeat(sample, runner.fixed_batch, axis=0)  # one image, timed as the batch it must be in
                self.batch = batch = runner.fixed_batch
            if runner.fixed_batch not in (None, batch):
                raise DataError(f"{runner.path.name} takes batches of {runner.fixed_batch} only (its input's first "
                                f"size is fixed): give --batch {runner.fixed_batch}")
            shape = (batch, *runner.input_shape)
            data = sample if sample is not None else random_input(shape, runner.input_dtype)
            feed = {runner.input.name: _to_input(runner, data)}
            session, outputs = runner.session, [runner.output_name]
            self.invoke = lambda: session.run(outputs, feed)
            self.accelerator = session.get_providers()[0]


def _to_input(runner, data):
    """Float images are quantized with the model's own input parameters."""
    data = np.asarray(data)
    if data.dtype == runner.input_dtype:
        return data
    if np.issubdtype(runner.input_dtype, np.integer):
        from .runtime import quantize

        if isinstance(runner, TfliteRunner):
            scale, zero_point = runner.input["quantization"]
        else:
            scale, zero_point = runner.quantization["input_scale"], runner.quantization["input_zero_point"]
        return quantize(data, scale, zero_point, runner.input_dtype)
    return data.astype(runner.input_dtype)


def _tflite_accelerator(path):
    from .tflite_inspect import inspect_tflite

    structure = inspect_tflite(path)
    if structure.fully_delegated:
        return "XNNPACK (whole model)"
    if structure.delegate_nodes:
        return f"XNNPACK (partial; not: {structure.undelegated_names()})"
    return "built-in kernels"


def check_bench_settings(threads=DEFAULT_THREADS, warmup=DEFAULT_WARMUP, runs=DEFAULT_RUNS, duration=None,
                         batch=DEFAULT_BATCH):
    if problem := threads_problem(threads):
        raise DataError(problem)
    if batch < 1 or warmup < 0 or (runs is not None and runs < 1):
        raise DataError("--batch and --runs must be at least 1 and --warmup at least 0")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise DataError(f"--duration is in seconds, more than 0. Received: {duration}")


def benchmark(path, threads=DEFAULT_THREADS, warmup=DEFAULT_WARMUP, runs=DEFAULT_RUNS, duration=None,
              batch=DEFAULT_BATCH, sample=None, profile=False, reset_peak=True):
    """Load, first inference, warm-up, then `runs` timed inferences (or as
    many as fit in `duration` seconds). `profile` adds onnxruntime's
    per-operator times (profiling slows the runs it covers a little).
    `reset_peak=False` keeps the process's peak memory (for a caller that
    reports its own)."""
    check_bench_settings(threads, warmup, runs, duration, batch)
    if reset_peak:
        reset_peak_rss()
    start = time.perf_counter()
    runner = open_runner(path, threads=threads, profile=profile, float_io=sample is not None)
    load_ms = (time.perf_counter() - start) * 1e3
    try:
        timed = _Timed(runner, batch, sample)
    except (ValueError, RuntimeError) as error:
        raise ModelError(f"cannot feed {Path(path).name}: {' '.join(str(error).split())[:200]}") from error

    start = time.perf_counter()
    timed.invoke()
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        timed.invoke()
    latencies = []
    deadline = None if duration is None else time.perf_counter() + duration
    while (len(latencies) < runs) if deadline is None else (time.perf_counter() < deadline or not latencies):
        start = time.perf_counter()
        timed.invoke()
        latencies.append((time.perf_counter() - start) * 1e3)
    stats = latency_stats(latencies)
    return BenchResult(
        model=str(path),
        runtime=runner.runtime,
        runtime_version=runtime_version(runner.runtime),
        accelerator=timed.accelerator,
        input_shape=tuple(runner.input_shape),
        input_dtype=runner.input_dtype.name,
        batch=timed.batch,
        threads=threads,
        load_ms=load_ms,
        first_inference_ms=first_ms,
        runs=len(latencies),
        latency_ms=stats,
        throughput_per_s=1e3 * batch / stats["mean"],
        peak_rss_mb=peak_rss_mb(),
        operator_ms=runner.operator_profile() if profile and hasattr(runner, "operator_profile") else None,
        note=getattr(runner, "note", None),
    )


def runtime_notes(results):
    """Lines that warn about a runtime which distorts the numbers."""
    notes = list(dict.fromkeys(result.note for result in results if result.note))
    if any(result.runtime == "tflite-runtime" for result in results):
        return notes + ["note: tflite-runtime 2.14 runs int8 models on its built-in kernels, not XNNPACK: ResNet-50 int8 "
                "measured 3x slower than with ai-edge-litert on an AVX2 CPU (~10x where VNNI is available); "
                "use ai-edge-litert wherever it has a wheel"]
    return notes


def comparison_table(results):
    """Plain-text table; speed-up is against the first model (the baseline)
    of the same machine. Results from boards get a device column and, below
    the table, a line naming each board."""
    boards = {result.device["label"]: result.device for result in results if result.device}
    where = (lambda result: f"{result.device['label'][:20]:<20} ") if boards else (lambda result: "")
    header = (("device".ljust(21) if boards else "") + f"{'model':<28} {'runtime':<16} {'accelerator':<24} {'p50 ms':>8} {'p90 ms':>8} "
              f"{'p99 ms':>8} {'img/s':>8} {'RSS MB':>8} {'speed-up':>8}")
    lines = [header, "-" * len(header)]
    baselines = {}
    for result in results:
        baseline = baselines.setdefault(result.device and result.device["label"], result.latency_ms["p50"])
        lines.append(
            f"{where(result)}{Path(result.model).name[:28]:<28} {result.runtime[:16]:<16} {result.accelerator[:24]:<24} "
            f"{result.latency_ms['p50']:>8.2f} {result.latency_ms['p90']:>8.2f} {result.latency_ms['p99']:>8.2f} "
            f"{result.throughput_per_s:>8.1f} {result.peak_rss_mb:>8.0f} {baseline / result.latency_ms['p50']:>7.2f}x"
        )
    from .agent import describe_device

    lines += [f"{label}: {describe_device(device)}" for label, device in boards.items()]
    return "\n".join(lines)
