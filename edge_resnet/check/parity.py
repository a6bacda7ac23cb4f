"""Accuracy parity: run the float reference and every artifact on the same
images and measure how far each artifact strays.

The metrics are accumulated batch by batch (sums and counts, never the whole
data set or all logits in memory), so an ImageNet validation folder streams.
Artifacts run through runtime.py, without TensorFlow.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.labels import default_class_names, output_indices
from ..errors import ConfigError, DataError, ModelError

TOP_K = 5
CHANGED_CLASSES_SHOWN = 5
# Keras reference batch: on 2 CPU cores ResNet-50 224 took 73 ms per image
# in batches of 8 and 88 ms in batches of 32 (TensorFlow backend)
REFERENCE_BATCH = 8


def topk(logits, k=TOP_K):
    """Indices of the k largest logits per row, best first."""
    k = min(k, logits.shape[1])
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(-logits, part, axis=1).argsort(axis=1)
    return np.take_along_axis(part, order, axis=1)


@dataclass
class Tally:
    """Running sums for one model's outputs against the reference (and the
    labels, when there are any)."""

    classes: int
    samples: int = 0
    top1_correct: int = 0
    top5_correct: int = 0
    top1_agree: int = 0
    top5_overlap: float = 0.0
    cosine_sum: float = 0.0
    max_abs_error: float = 0.0
    per_class_total: np.ndarray = field(default=None)
    per_class_correct: np.ndarray = field(default=None)
    image_signal: list = field(default_factory=list)  # each batch's per-image sums of squares: the SQNR and its
    image_noise: list = field(default_factory=list)  # standard error
    grid: object = None  # its output's int8 or uint8 grid (int8_tflite.Grid), None where its output is float
    grid_top1_changed: int = 0  # images whose top-1 the reference's outputs rounded onto that grid change
    non_finite_images: int = 0  # images on which an output is NaN or infinite

    def __post_init__(self):
        self.per_class_total = np.zeros(self.classes, np.int64)
        self.per_class_correct = np.zeros(self.classes, np.int64)

    def add(self, logits, reference, labels=None):
        """A row of `logits` with NaN or infinity in it counts as wrong in every top-1/top-5 figure and as
        orthogonal to the reference; the errors (SQNR, max error) are those of the finite rows, and
        `non_finite_images` says how many were not."""
        logits, reference = logits.astype(np.float64), reference.astype(np.float64)
        finite = np.all(np.isfinite(logits), axis=1)
        self.non_finite_images += int(np.sum(~finite))
        top, top_ref = np.where(finite[:, None], topk(np.where(finite[:, None], logits, 0.0)), -1), topk(reference)
        self.samples += len(logits)
        self.top1_agree += int(np.sum(top[:, 0] == top_ref[:, 0]))
        self.top5_overlap += float(sum(len(set(a) & set(b)) for a, b in zip(top, top_ref)) / top.shape[1])
        if self.grid is not None:
            self.grid_top1_changed += top1_changes_on_grid(reference, self.grid)
        logits, reference = logits[finite], reference[finite]
        norms = np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1)
        self.cosine_sum += float(np.sum(np.sum(logits * reference, axis=1) / np.maximum(norms, 1e-30)))
        from ..quantize.selection import per_image_errors  # numpy only, imported where used like the rest

        signal, noise = per_image_errors(reference, logits)
        self.image_signal.append(signal)
        self.image_noise.append(noise)
        self.max_abs_error = max(self.max_abs_error, float(np.abs(logits - reference).max(initial=0.0)))
        if labels is not None:
            correct = top[:, 0] == labels
            self.top1_correct += int(np.sum(correct))
            self.top5_correct += int(np.sum(top == labels[:, None]))
            np.add.at(self.per_class_total, labels, 1)
            np.add.at(self.per_class_correct, labels, correct.astype(np.int64))

    def summary(self, labelled):
        n = max(self.samples, 1)
        # None: no noise at all (identical outputs), which JSON cannot write as infinity.
        signal_power, noise_power = (float(np.sum(np.concatenate(parts))) if parts else 0.0
                                     for parts in (self.image_signal, self.image_noise))
        sqnr = None if noise_power == 0 else float(10 * np.log10(signal_power / noise_power))
        return {
            "samples": self.samples,
            "top1": self.top1_correct / n if labelled else None,
            "top5": self.top5_correct / n if labelled else None,
            "top1_agreement": self.top1_agree / n,
            "top5_overlap": self.top5_overlap / n,
            "cosine": self.cosine_sum / n,
            "sqnr_db": sqnr,
            "sqnr_standard_error_db": self.sqnr_standard_error_db(),
            "max_abs_error": self.max_abs_error,
            "output_grid_top1_changes": None if self.grid is None else self.grid_top1_changed / n,
            "output_grid_type": None if self.grid is None else self.grid.type_name,
            "non_finite_images": self.non_finite_images,
        }

    def sqnr_standard_error_db(self):
        """How far the SQNR would move on other images like these (None without images or error)."""
        from ..quantize.selection import sqnr_standard_error_of

        if not self.image_signal:
            return None
        return sqnr_standard_error_of(np.concatenate(self.image_signal), np.concatenate(self.image_noise))

    def class_accuracy(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.per_class_total > 0, self.per_class_correct / self.per_class_total, np.nan)


def top1_changes_on_grid(reference, grid):
    """How many rows of `reference` change their top-1 when rounded onto
    `grid`, nothing else quantized: the share of an artifact's
    disagreements that its output's own int8 grid makes, whatever runs before
    it (a float head has no such grid). argmax, as an application reads a
    tie: its first class."""
    return int(np.sum(np.argmax(grid.through(reference), axis=1) != np.argmax(reference, axis=1)))


def output_value_grid(path):
    """The grid an artifact's output values lie on: a TFLite's
    (int8_tflite.value_grid), an ONNX's integer output's (from the
    quantization our ONNX files carry in their metadata); None for a float
    output, or where no reader is installed (a board with tflite-runtime
    alone cannot read the flatbuffer: nothing is said then)."""
    suffix = Path(path).suffix
    if suffix == ".onnx":
        return onnx_output_grid(path)
    if suffix != ".tflite":
        return None
    from ..quantize.int8_tflite import value_grid

    try:
        return value_grid(Path(path).read_bytes())
    except ImportError:
        return None


def onnx_output_grid(path):
    """The Grid of an ONNX file's integer first output (the --onnx-route
    tflite artifact's), None for a float one or where onnxruntime is not
    installed here (the file ran on a board)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    from ..quantize.int8_tflite import Grid

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtype = {"tensor(int8)": np.int8, "tensor(uint8)": np.uint8}.get(session.get_outputs()[0].type)
    metadata = session.get_modelmeta().custom_metadata_map
    if dtype is None or not {"output_scale", "output_zero_point"} <= set(metadata):
        return None
    return Grid(float(metadata["output_scale"]), int(float(metadata["output_zero_point"])), dtype)


def changed_classes(reference_tally, candidate_tally, class_names):
    """The classes whose accuracy moved most, as (name, reference, candidate)."""
    before, after = reference_tally.class_accuracy(), candidate_tally.class_accuracy()
    delta = np.nan_to_num(after - before)
    order = np.argsort(-np.abs(delta), kind="stable")[:CHANGED_CLASSES_SHOWN]
    return [
        {"class": class_names[i], "reference": float(before[i]), "candidate": float(after[i])}
        for i in order
        if delta[i] != 0
    ]


@dataclass(frozen=True)
class ParityResult:
    data: dict  # source, size, fingerprint, labelled
    reference: dict  # name, backend, device, metrics
    candidates: tuple  # one dict per artifact: name, path, runtime, metrics, drops, changed classes

    def candidate(self, name):
        return next(c for c in self.candidates if c["name"] == name)

    def gate_failures(self, max_accuracy_drop=None, min_agreement=None):
        """One line per violated gate, naming the artifact and the metric."""
        failures = []
        for candidate in self.candidates:
            where = f" on {candidate['device']}" if candidate.get("device") else ""
            drop = candidate["top1_drop_points"]
            if max_accuracy_drop is not None and drop is not None and drop > max_accuracy_drop:
                failures.append(
                    f"{candidate['name']}{where}: top-1 accuracy dropped {drop:.2f} points "
                    f"(gate: at most {max_accuracy_drop:g})"
                )
            non_finite = candidate["metrics"].get("non_finite_images")
            if non_finite and (max_accuracy_drop is not None or min_agreement is not None):
                failures.append(f"{candidate['name']}{where}: outputs that are not finite numbers (NaN or "
                                f"infinity) on {non_finite} of {candidate['metrics']['samples']} images")
            agreement = candidate["metrics"]["top1_agreement"]
            if min_agreement is not None and agreement < min_agreement:
                failures.append(
                    f"{candidate['name']}{where}: top-1 agreement {agreement:.4f} with the reference "
                    f"(gate: at least {min_agreement:g})"
                )
        return failures

    def to_dict(self):
        return {"data": self.data, "reference": self.reference, "candidates": list(self.candidates)}


def check_gates(max_accuracy_drop=None, min_agreement=None):
    """Refuse gates that can never pass or never fail, before any work."""
    from ..quantize.mixed import check_accuracy_terms

    check_accuracy_terms(max_accuracy_drop, min_agreement)


def check_fits(reference, data):
    expected = tuple(reference.input_shape)
    if tuple(data.preprocessing.shape) != expected:
        raise DataError(f"evaluation images are {data.preprocessing.shape} but the model takes {expected}")


def reference_device():
    """(Keras backend, accelerator kind, device name) of the live reference."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return backend, "GPU", tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return backend, device.platform.upper(), device.device_kind
    return backend, "CPU", cpu_name()


def cpu_name():
    """The processor's model name, as /proc/cpuinfo gives it (else the platform's)."""
    import platform

    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


class KerasReference:
    """The float Keras model, run live on each batch; times itself."""

    def __init__(self, model):
        self.model = model
        self.name = model.name
        self.input_shape = tuple(model.input_shape[1:])
        self.classes = int(model.output_shape[-1])
        self.seconds, self.images = 0.0, 0

    def outputs(self, start, batch):
        import time

        began = time.perf_counter()
        logits = np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)
        self.seconds += time.perf_counter() - began
        self.images += len(batch)
        refuse_non_finite_outputs(logits, start)
        return logits

    def describe(self, batch_size):
        backend, kind, device = reference_device()
        speed = {"batch_size": batch_size, "ms_per_image": 1e3 * self.seconds / self.images} if self.images else None
        return {"name": self.name, "kind": "keras", "backend": backend, "device": device, "accelerator": kind,
                "speed": speed}


def refuse_non_finite_outputs(rows, start):
    """The float model's outputs on images start.. are what parity measures against: NaN or infinity there
    would make every metric NaN."""
    if not np.all(np.isfinite(rows)):
        first = start + int(np.argwhere(~np.isfinite(rows))[0][0])
        raise ModelError(f"the float model computes values that are not finite numbers (NaN or infinity) on image "
                         f"{first} of the data: no parity can be measured against them; check the weights and the "
                         "preprocessing")


def as_reference(reference):
    """A reference (KerasReference, golden.GoldenReference) as given, or a
    Keras model wrapped in a KerasReference."""
    from .golden import GoldenReference

    return reference if isinstance(reference, (KerasReference, GoldenReference)) else KerasReference(reference)


def check_runners_fit(runners, reference, sample):
    """Every artifact takes the reference's input and gives its number of
    outputs (one sample run to see them)."""
    for runner in runners:
        if tuple(runner.input_shape) != reference.input_shape:
            raise ModelError(f"{runner.path.name} takes {runner.input_shape}, the reference {reference.input_shape}")
        outputs = runner.outputs(0, sample[None]).shape[1:]
        if outputs != (reference.classes,):
            raise ModelError(f"{runner.path.name} gives outputs of shape {outputs}, the reference "
                             f"({reference.classes},); compare artifacts of the reference's model")


def compare(reference, candidates, data, class_names=None, batch_size=REFERENCE_BATCH, progress=None, runners=None):
    """Run each artifact path in `candidates` on the ImageSet `data` and
    measure it against `reference`: a Keras model run live, or golden
    outputs (golden.GoldenReference). Returns a ParityResult.

    `class_names` lists the model's outputs in order (for folder labels and
    the report); by default the sorted class folders or 0..N-1. `runners`
    (default: each artifact opened here) give each candidate's outputs by
    `outputs(start, batch)`; a runner with a `device` label ran elsewhere.
    """
    from ..device.runtime import open_runner

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1. Received: {batch_size}")
    reference = as_reference(reference)
    check_fits(reference, data)
    classes = reference.classes
    class_names = class_names or default_class_names(data, classes)
    labels = output_indices(data, classes, class_names)
    runners = runners or [open_runner(path) for path in candidates]
    check_runners_fit(runners, reference, next(data.samples()))

    reference_tally = Tally(classes)
    tallies = [Tally(classes, grid=output_value_grid(path)) for path in candidates]
    start = 0
    batches = data.with_batch_size(batch_size)
    for batch in (progress(batches, len(data)) if progress else batches):
        batch_labels = None if labels is None else labels[start:start + len(batch)]
        reference_logits = reference.outputs(start, batch)
        reference_tally.add(reference_logits, reference_logits, batch_labels)
        for runner, tally in zip(runners, tallies):
            tally.add(runner.outputs(start, batch), reference_logits, batch_labels)
        start += len(batch)

    labelled = labels is not None
    reference_metrics = reference_tally.summary(labelled)
    results = []
    for path, runner, tally in zip(candidates, runners, tallies):
        metrics = tally.summary(labelled)
        results.append({
            "name": Path(path).name,
            "path": str(path),
            "runtime": runner.runtime,
            **({"device": runner.device} if getattr(runner, "device", None) else {}),
            **({"note": runner.note} if getattr(runner, "note", None) else {}),
            "metrics": metrics,
            "top1_drop_points": 100 * (reference_metrics["top1"] - metrics["top1"]) if labelled else None,
            "top5_drop_points": 100 * (reference_metrics["top5"] - metrics["top5"]) if labelled else None,
            "changed_classes": changed_classes(reference_tally, tally, class_names) if labelled else [],
        })
    return ParityResult(
        data={**data.describe(), "labelled": labelled},
        reference={**reference.describe(batch_size), "metrics": reference_metrics},
        candidates=tuple(results),
    )


def parity_report(reference, artifacts, data, *, class_names=None, batch_size=REFERENCE_BATCH,
                  max_accuracy_drop=None, min_agreement=None, gated=None, per_layer=(), layer_model=None,
                  float_model=None, float_onnx_path=None, latency_runs=0, progress=None, device_runs=None):
    """The parity section of `compare`'s and `convert`'s reports, made one way:
    compare() on every artifact, the per-layer error of the `per_layer`
    artifacts against `layer_model`'s float graph (default: the reference's),
    and the gates applied to the `gated` artifacts (default: all).

    `float_model` (float32 .tflite bytes) and `float_onnx_path` are the
    float artifacts a pipeline already made from `layer_model`. Golden
    outputs carry no float graph: per-layer error then needs `layer_model`.
    `latency_runs` > 0 times each artifact at batch 1 on this machine, for
    the report to set beside the reference's speed. `device_runs`
    (on_device.DeviceRuns): the artifacts ran on boards instead, which
    timed them too; each board's results are rows of their own."""
    check_gates(max_accuracy_drop, min_agreement)
    if max_accuracy_drop is not None and data.labels is None:
        raise ConfigError("--max-accuracy-drop needs labelled data (class folders, or .npz with y); on unlabelled "
                          "images gate on --min-agreement")
    reference = as_reference(reference)
    if device_runs is None:
        result = compare(reference, artifacts, data, class_names, batch_size, progress)
    else:
        result = compare(reference, [runner.path for runner in device_runs.runners], data, class_names, batch_size,
                         progress, runners=device_runs.runners)
    report = result.to_dict()
    layer_model = layer_model or getattr(reference, "model", None)  # golden outputs have no float graph
    if per_layer and layer_model is not None:
        from .layer_debug import per_layer_errors

        report["layers"] = per_layer_errors(layer_model, per_layer, data, float_model=float_model,
                                            float_onnx_path=float_onnx_path)
    if device_runs is not None:
        report["devices"] = device_runs.devices
    elif latency_runs:
        report["device"] = device_latencies(artifacts, next(data.samples()), latency_runs)
    gated_names = {Path(path).name for path in (artifacts if gated is None else gated)}
    gated_result = ParityResult(result.data, result.reference,
                                tuple(c for c in result.candidates if c["name"] in gated_names))
    report["gates"] = {"max_accuracy_drop": max_accuracy_drop, "min_agreement": min_agreement,
                       "failures": gated_result.gate_failures(max_accuracy_drop, min_agreement)}
    return report


def device_latencies(artifacts, sample, runs):
    """Median batch-1 latency of each artifact on this machine."""
    from ..device.bench import benchmark

    timings = [benchmark(path, warmup=min(5, runs), runs=runs, sample=sample[None], reset_peak=False)
               for path in artifacts]
    return {"device": cpu_name(), "runs": runs,
            "p50_ms": {Path(path).name: timing.latency_ms["p50"] for path, timing in zip(artifacts, timings)},
            "batch": {Path(path).name: timing.batch for path, timing in zip(artifacts, timings) if timing.batch != 1}}
