"""Golden reference outputs: the float model's outputs on an evaluation set,
written once where the model runs best (a GPU when Keras sees one), with a
manifest that pins the model, the images and the preprocessing. Parity then
runs anywhere, later, without TensorFlow or Keras, against exactly that
reference: `edge-resnet compare --reference golden/ model_int8.tflite`.

A golden folder holds:
- golden.npy: float32, one row per sample, written and read in blocks of
  rows (50,000 x 1,000 outputs are 200 MB: never held at once); only its
  header is parsed, so it cannot carry code;
- golden.json, the manifest: the model file's SHA-256, the data source, each sample's
  id and the fingerprint of their bytes, the labels, the preprocessing, the
  backend, device and versions, the reference's speed, and the SHA-256 of
  golden.npy.

Shards (`--shard i/n`) cover consecutive index ranges of one evaluation set;
merge_golden() joins a complete set of them. Importing this module imports
neither TensorFlow nor Keras.
"""

import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, EdgeResnetError
from ..files import file_sha256
from .parity import REFERENCE_BATCH, refuse_non_finite_outputs

FORMAT = "edge-resnet golden outputs"
VERSION = 1
MANIFEST, OUTPUTS = "golden.json", "golden.npy"
FILES = (OUTPUTS, MANIFEST)  # the manifest last: a folder without one is not golden
BATCH1_RUNS = 20
GPU_BATCH = 256
CHUNK_ROWS = 4096  # rows per read when merging: 16 MB at 1,000 classes
REMADE = "make them again with edge-resnet reference"
NOT_RECORDED = "weights not recorded"


def parse_shard(text):
    """"i/n" -> (i, n), 1 <= i <= n: the i-th of n consecutive parts."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise ConfigError(f"--shard is i/n with 1 <= i <= n (2/4 is the second quarter). Received: {text!r}")
    return index, count


def shard_range(size, index, count):
    """[start, stop) of the index-th of `count` near-equal consecutive parts."""
    return (index - 1) * size // count, index * size // count


# --- writing: needs Keras (the float model runs here) ---------------------------------------------------------------


def keras_versions():
    from ..quantize.recipe import tool_versions

    return tool_versions("keras", "tensorflow", "jax", "jaxlib")


FLOAT32_BACKENDS = ("jax", "tensorflow")  # where float32_matmuls switches TF32 off


@contextmanager
def float32_matmuls(backend):
    """Within the block, float32 convolutions and matrix products run in
    float32. On a GPU, JAX and TensorFlow use TF32 by default: measured on an
    H200, ResNet-50's logits then differ from the CPU's by 2e-4 of their range
    (the digits demo: 2e-3), against 5e-7 in float32
    (benchmarks/results/gpu_reference.md). A reference has to be the float
    model itself. The setting before the block is restored after it."""
    if backend == "jax":
        import jax

        before = jax.config.jax_default_matmul_precision
        jax.config.update("jax_default_matmul_precision", "highest")  # as measured on the H200
        try:
            yield
        finally:
            jax.config.update("jax_default_matmul_precision", before)
    elif backend == "tensorflow":
        import tensorflow as tf

        before = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
        try:
            yield
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(before)
    else:
        yield


def check_batch_size(batch_size, accelerator):
    if batch_size is None:
        return GPU_BATCH if accelerator != "CPU" else REFERENCE_BATCH
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1. Received: {batch_size}")
    return batch_size


def is_embedded_digits(data):
    from ..calibration import digits_folder

    return data.root is not None and Path(data.root).resolve() == Path(str(digits_folder())).resolve()


def batch1_latency_ms(model, sample, runs=BATCH1_RUNS):
    """Median of `runs` single-image calls after one warm-up call."""
    model.predict_on_batch(sample[None])
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        model.predict_on_batch(sample[None])
        times.append((time.perf_counter() - began) * 1e3)
    return float(np.median(times))


def run_into(model, data, outputs, batch_size, progress=None):
    """Append `model`'s float32 outputs on `data` to `outputs` (an
    OutputsWriter), batch by batch; return ms per image over the full
    batches after the first (on JAX or TensorFlow a batch of a new shape
    compiles first)."""
    batches = data.with_batch_size(batch_size)
    timed_seconds, timed_images, first = 0.0, 0, None
    for batch in progress(batches, len(data)) if progress else batches:
        began = time.perf_counter()
        logits = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
        seconds = time.perf_counter() - began
        outputs.append(logits)
        if first is None:
            first = batch
        elif len(batch) == len(first):
            timed_seconds, timed_images = timed_seconds + seconds, timed_images + len(batch)
    if not timed_images:  # a single batch: time it again, compiled
        began = time.perf_counter()
        model.predict_on_batch(first)
        timed_seconds, timed_images = time.perf_counter() - began, len(first)
    return 1e3 * timed_seconds / timed_images


def label_indices(data, class_names):
    from ..data.labels import class_index

    labels = class_index(data.labels, class_names)
    return None if labels is None else [int(label) for label in labels]


def write_golden(model, data, output, model_record, class_names=None, batch_size=None, shard=None,
                 force=False, progress=None):
    """Run the float Keras `model` on the ImageSet `data` (its `shard`, an
    (i, n) pair, or all) and write golden outputs into the folder `output`,
    all or nothing. `model_record` names the model: {"file", "sha256"}.
    Returns the manifest."""
    from ..data.images import subset
    from ..files import publish, staged_output

    index, count = shard or (1, 1)
    if count > len(data):  # some shards would be empty, and the set could never be merged
        raise DataError(f"--shard {index}/{count} cuts {len(data)} images into {count} shards; use at most "
                        f"{len(data)} shards")
    start, stop = shard_range(len(data), index, count)
    with staged_output(output, force) as staging:
        manifest = write_golden_files(model, subset(data, start, stop), staging, model_record, class_names,
                                      batch_size, progress,
                                      {"index": index, "count": count, "start": start, "stop": stop, "of": len(data)})
        publish(staging, output, replaced=FILES, last=(MANIFEST,))
    return manifest


def write_golden_files(model, data, folder, model_record, class_names=None, batch_size=None, progress=None,
                       shard=None):
    """golden.npy and golden.json of `model` on all of `data`, into `folder`."""
    from ..data.labels import check_label_range, default_class_names
    from .parity import KerasReference, check_fits, reference_device

    check_fits(KerasReference(model), data)
    classes = int(model.output_shape[-1])
    class_names = class_names or default_class_names(data, classes)
    labels = label_indices(data, class_names)  # refuses labels that do not fit, before the run
    if labels is not None and labels:
        check_label_range(max(labels), classes)
    backend, accelerator, device = reference_device()
    batch_size = check_batch_size(batch_size, accelerator)
    folder = Path(folder)
    first_image = shard["start"] if shard else 0
    with float32_matmuls(backend), OutputsWriter(folder / OUTPUTS, len(data), classes, first_image) as outputs:
        ms_per_image = run_into(model, data, outputs, batch_size, progress)
        batch1_ms = batch1_latency_ms(model, next(data.samples()))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": {**model_record, "name": model.name, "input_shape": list(model.input_shape[1:]), "classes": classes},
        "data": {
            **data.describe(),
            "source_path": _source_path(data),
            "embedded_digits": is_embedded_digits(data),
            "ids": data.sample_ids(),
            "parts": [{"start": 0, "stop": len(data), "fingerprint": data.fingerprint}],
            "labels": labels,
            "class_names": list(class_names),
        },
        "shard": shard or {"index": 1, "count": 1, "start": 0, "stop": len(data), "of": len(data)},
        "reference": {
            "backend": backend, "accelerator": accelerator, "device": device,
            "precision": "float32 (no TF32)" if backend in FLOAT32_BACKENDS else f"{backend}'s default",
            "versions": keras_versions(),
            "speed": {"batch_size": batch_size, "ms_per_image": ms_per_image, "batch1_ms": batch1_ms},
        },
        "outputs": {"file": OUTPUTS, "dtype": "float32", "shape": [len(data), classes], "sha256": outputs.sha256},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _source_path(data):
    """The data's location, resolved, for compare to find it again."""
    if data.root is not None:
        return str(Path(data.root).resolve())
    path = Path(data.source)
    return str(path.resolve()) if path.exists() else None


# --- reading: numpy only --------------------------------------------------------------------------------------------


def read_manifest(folder):
    folder = Path(folder)
    path = folder / MANIFEST
    if folder.is_file():
        raise DataError(f"{folder} is a file, not a folder of golden outputs; give the folder edge-resnet reference "
                        "wrote")
    if not folder.exists():
        raise DataError(f"golden folder {folder} not found; give the folder edge-resnet reference wrote")
    if not path.is_file():
        raise DataError(f"{folder} holds no {MANIFEST}: not golden outputs; {REMADE}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); {REMADE}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not an edge-resnet golden manifest; {REMADE}")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path} is golden-output format version {manifest.get('version')}; this edge-resnet reads "
                        f"version {VERSION}: {REMADE}")
    problem = manifest_problem(manifest)
    if problem:
        raise DataError(f"{path} is damaged: {problem}; {REMADE}")
    return manifest


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def manifest_problem(manifest):
    """What makes a manifest unusable, or None: every field the reading
    side uses, with its type, and the sizes that must agree."""
    sections = {name: manifest.get(name) for name in ("model", "data", "outputs", "reference", "shard")}
    missing = [name for name, section in sections.items() if not isinstance(section, dict)]
    if missing:
        return f"no {missing[0]} section"
    model, data, outputs = sections["model"], sections["data"], sections["outputs"]
    shape = outputs.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_count(n) for n in shape)):
        return "outputs.shape is not [rows, classes]"
    if not isinstance(outputs.get("file"), str) or not isinstance(outputs.get("sha256"), str):
        return "outputs.file or outputs.sha256 is not text"
    if not isinstance(model.get("name"), str) or shape[0] == 0:
        return "model.name is missing or the outputs have no rows"
    reference, shard = sections["reference"], sections["shard"]
    if not all(isinstance(reference.get(key), str) for key in ("backend", "device")):
        return "reference.backend or reference.device is missing"
    speed = reference.get("speed")
    if speed is not None and not (isinstance(speed, dict) and all(
            isinstance(speed.get(key), (int, float)) for key in ("batch_size", "ms_per_image"))):
        return "reference.speed is not {batch_size, ms_per_image}"
    if not (_is_count(shard.get("index")) and _is_count(shard.get("count")) and 1 <= shard["index"] <= shard["count"]):
        return "shard.index or shard.count is not 1 <= i <= n"
    input_shape = model.get("input_shape")
    if not (isinstance(input_shape, list) and len(input_shape) == 3 and all(_is_count(n) for n in input_shape)):
        return "model.input_shape is not [height, width, channels]"
    if model.get("classes") != shape[1]:
        return f"model.classes {model.get('classes')!r} is not the outputs' width {shape[1]}"
    ids, labels, names = data.get("ids"), data.get("labels"), data.get("class_names")
    if not isinstance(ids, list) or len(ids) != shape[0] or not all(
            isinstance(i, (int, str)) and not isinstance(i, bool) for i in ids):
        return f"data.ids is not a list of {shape[0]} paths or indices"
    if labels is not None and (not isinstance(labels, list) or len(labels) != shape[0]
                               or not all(_is_count(label) and label < shape[1] for label in labels)):
        return f"data.labels is not {shape[0]} class indices below {shape[1]}"
    if not isinstance(names, list) or len(names) != shape[1] or not all(isinstance(n, str) for n in names):
        return f"data.class_names does not name the {shape[1]} outputs"
    if not isinstance(data.get("preprocessing"), dict) or not isinstance(data.get("preprocessed_input"), bool):
        return "data.preprocessing or data.preprocessed_input is missing"
    if data.get("size") != shape[0]:
        return f"data.size {data.get('size')!r} is not the outputs' {shape[0]} rows"
    problem = preprocessing_problem(data["preprocessing"], input_shape)
    if problem:
        return problem
    parts = data.get("parts")
    if not (isinstance(parts, list) and parts and all(isinstance(p, dict) and _is_count(p.get("start"))
                                                      and _is_count(p.get("stop")) and isinstance(p.get("fingerprint"), str)
                                                      for p in parts)):
        return "data.parts is not a list of {start, stop, fingerprint}"
    edges = [(p["start"], p["stop"]) for p in parts]
    if (edges[0][0] != 0 or edges[-1][1] != shape[0] or any(a[1] != b[0] for a, b in zip(edges, edges[1:]))
            or any(start > stop for start, stop in edges)):
        return f"data.parts do not cover samples 0..{shape[0] - 1} in order"
    return None


def preprocessing_problem(record, input_shape):
    """What makes a manifest's preprocessing record one edge-resnet did not
    write (an edited mode or mean, another size than the model's), or None."""
    from ..data.images import Preprocessing

    try:
        preprocessing = Preprocessing.from_dict(record)
    except (EdgeResnetError, TypeError, ValueError) as error:
        return f"data.preprocessing is not one edge-resnet writes ({error})"
    if [preprocessing.height, preprocessing.width] != input_shape[:2]:
        return (f"model.input_shape {input_shape} is not the size data.preprocessing makes "
                f"({preprocessing.height}x{preprocessing.width})")
    return None


class OutputsWriter:
    """A float32 .npy of known shape written row block by row block (never
    held whole), hashed as it is written."""

    def __init__(self, path, rows, classes, first_image=0):
        import hashlib
        import io

        self.shape, self.written, self.first_image = (rows, classes), 0, first_image  # first: the shard's start
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": self.shape})
        self.file = open(path, "wb")
        self.digest = hashlib.sha256()
        self._write(header.getvalue())

    def _write(self, raw):
        self.file.write(raw)
        self.digest.update(raw)

    def append(self, rows):
        rows = np.ascontiguousarray(rows, dtype="<f4")
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or self.written + len(rows) > self.shape[0]:
            raise DataError(f"outputs of shape {rows.shape} do not fit golden outputs of shape {self.shape}")
        refuse_non_finite_outputs(rows, self.first_image + self.written)
        self._write(rows.tobytes())
        self.written += len(rows)

    @property
    def sha256(self):
        return self.digest.hexdigest()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        self.file.close()
        if kind is None and self.written != self.shape[0]:
            raise DataError(f"wrote {self.written} golden outputs of {self.shape[0]}")


class OutputsReader:
    """Rows of a float32 .npy read on demand. Only the header is parsed (no
    np.load, so no pickle), and the bytes must hash to the manifest's."""

    def __init__(self, folder, manifest):
        record = manifest["outputs"]
        path = Path(folder) / str(record["file"])
        if Path(str(record["file"])).name != record["file"] or not path.is_file():
            raise DataError(f"golden outputs file {path} is missing; {REMADE}")
        if file_sha256(path) != record["sha256"]:
            raise DataError(f"{path} changed after it was written (its SHA-256 is not the manifest's); {REMADE}")
        with open(path, "rb") as handle:
            try:
                version = np.lib.format.read_magic(handle)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"format version {version}")
                shape, fortran, dtype = read_header(handle)
            except ValueError as error:
                raise DataError(f"{path} is not a plain numeric .npy ({error}); {REMADE}") from None
            self.offset = handle.tell()
        order = " in Fortran order" if fortran else ""
        if dtype != np.dtype("<f4") or fortran or len(shape) != 2 or list(shape) != list(record["shape"]):
            raise DataError(f"{path} holds {dtype} {shape}{order}, the manifest says float32 "
                            f"{tuple(record['shape'])}; {REMADE}")
        if path.stat().st_size != self.offset + shape[0] * shape[1] * 4:
            raise DataError(f"{path} is {path.stat().st_size} bytes, not the {shape[0]} x {shape[1]} float32 its "
                            f"header promises; {REMADE}")
        self.path, self.shape = path, tuple(shape)
        for start, rows in zip(range(0, self.shape[0], CHUNK_ROWS), self.chunks()):
            if not np.all(np.isfinite(rows)):  # before any candidate runs: every metric against it would be NaN
                raise DataError(f"{path} holds values that are not finite numbers (NaN or infinity), first in row "
                                f"{start + int(np.argwhere(~np.isfinite(rows))[0][0])}; {REMADE}")

    def __len__(self):
        return self.shape[0]

    def rows(self, start, count):
        count = max(0, min(count, self.shape[0] - start))
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + start * self.shape[1] * 4)
            return np.fromfile(handle, dtype="<f4", count=count * self.shape[1]).reshape(count, self.shape[1])

    def chunks(self):
        for start in range(0, self.shape[0], CHUNK_ROWS):
            yield self.rows(start, CHUNK_ROWS)


class GoldenReference:
    """Golden outputs as the reference of parity.compare(): the same
    interface as parity.KerasReference, rows read from disk in order."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if self.folder.is_file() and self.folder.suffix in (".tflite", ".onnx"):
            raise DataError(f"--reference takes the float Keras model (.keras or a builder name) or a golden folder "
                            f"(edge-resnet reference); {folder} is an artifact: give it after the options, to be "
                            "compared")
        self.manifest = read_manifest(folder)
        self.stored = OutputsReader(folder, self.manifest)
        model = self.manifest["model"]
        self.name = model["name"]
        self.input_shape = tuple(model["input_shape"])
        self.classes = int(model["classes"])
        self.class_names = self.manifest["data"]["class_names"]

    @property
    def preprocessing(self):
        from ..data.images import Preprocessing

        return Preprocessing.from_dict(self.manifest["data"]["preprocessing"])

    def outputs(self, start, batch):
        if start + len(batch) > len(self.stored):
            raise DataError(f"the data has more images than the {len(self.stored)} golden outputs")
        return self.stored.rows(start, len(batch))

    def describe(self, batch_size):
        reference = self.manifest["reference"]
        return {"name": self.name, "kind": "golden", "golden": str(self.folder),
                "model_sha256": self.manifest["model"].get("sha256"), **reference}

    def data(self, source=None, preprocessing=None, preprocessed=None):
        """The evaluation set the outputs were made from, read again from
        `source` (default: where it was) and checked against the manifest:
        the same images, bytes and order, the same preprocessing."""
        from ..data.images import images_by_id

        record = self.manifest["data"]
        source = source if source is not None else recorded_source_path(record)
        if source is None or isinstance(source, (str, Path)) and not Path(source).exists():
            where = source or record.get("source")
            raise DataError(f"the images the golden outputs were made from are not at {where}; give --data with "
                            "the same images")
        if preprocessing is not None and preprocessing != self.preprocessing:
            raise DataError(f"--preprocessing {preprocessing.mode} differs from the golden outputs' "
                            f"{self.preprocessing.mode} ({self.folder / MANIFEST}); leave the preprocessing "
                            "options out to use the manifest's")
        if preprocessed is not None and preprocessed != record["preprocessed_input"]:
            if record["preprocessed_input"]:
                raise DataError("the golden outputs were made from preprocessed arrays; add --preprocessed")
            raise DataError("the golden outputs were made from raw images, which they preprocess as the manifest "
                            "says; leave out --preprocessed")
        chosen = images_by_id(source, self.preprocessing, record["ids"], record["preprocessed_input"],
                              seed=record.get("seed", 0))
        check_parts(chosen, record, source)
        return with_recorded_labels(chosen, record, source)


def refuse_a_shard(manifest, folder):
    """Golden outputs of one shard hold a part of the evaluation set: gates
    passed on it say nothing of the rest."""
    shard = manifest["shard"]
    if shard["count"] > 1:
        raise DataError(f"{folder} holds shard {shard['index']}/{shard['count']} of a reference run "
                        f"({manifest['data']['size']} of its {shard.get('of', '?')} images): join every shard with "
                        "edge-resnet merge SHARD... --output DIR and compare against DIR")


def recorded_source_path(record):
    """Where the images were; the embedded digits are found in this install."""
    if record.get("embedded_digits"):
        from ..calibration import digits_folder

        return str(digits_folder())
    return record.get("source_path")


def with_recorded_labels(data, record, source):
    """`data` labelled as the manifest records; labels the data carries
    itself must be the same."""
    import dataclasses

    from ..data.labels import class_index

    recorded = record["labels"]
    if recorded is None:
        return dataclasses.replace(data, labels=None)
    if data.labels is not None and class_index(data.labels, record["class_names"]).tolist() != recorded:
        raise DataError(f"the labels in {source} are not the ones the golden outputs were made with; give the same "
                        f"data, or {REMADE}")
    return dataclasses.replace(data, labels=tuple(recorded))


def part_fingerprints(data, parts):
    from ..data.images import fingerprint

    return [fingerprint(data.items[part["start"]:part["stop"]], data.array) for part in parts]


def check_parts(chosen, record, source):
    """Refuse images whose bytes differ from those the outputs were made from."""
    parts = record["parts"]
    found = [chosen.fingerprint] if len(parts) == 1 else part_fingerprints(chosen, parts)
    changed = [part for part, value in zip(parts, found) if value != part["fingerprint"]]
    if changed:
        raise DataError(f"the images in {source} are not the ones the golden outputs were made from (samples "
                        f"{changed[0]['start']}..{changed[0]['stop'] - 1} differ in content); give the same images, "
                        f"or {REMADE}")


def recorded_source(record):
    """The {"file", "sha256"[, "folded_file", "folded_sha256"]} of the model
    an artifact was made from, as its recipe JSON records it, or None."""
    source = (record or {}).get("source_model")
    return source if isinstance(source, dict) and source_hashes(source) else None


def recorded_weights(record):
    """What a recipe JSON says of weights that came from no file (random ones and their seed)."""
    return weights_text(record.get("source_model"))


def weights_text(source):
    """The "weights" of a model source (a recipe JSON's or golden outputs' model), or that none is recorded."""
    return source.get("weights") if isinstance(source, dict) and source.get("weights") else NOT_RECORDED


def source_hashes(source):
    """The model files an artifact may be checked against: the source and,
    where the run folded BatchNorm and saved the result, the folded model."""
    return {value for value in (source.get("sha256"), source.get("folded_sha256")) if isinstance(value, str)}


def describe_source(source):
    """"file (sha256 …; folded: file, sha256 …)" for the files a record names."""
    parts = [f"{source['file']}, sha256 {source['sha256'][:12]}"] if source.get("sha256") else []
    if source.get("folded_sha256"):
        parts.append(f"folded: {source.get('folded_file')}, sha256 {source['folded_sha256'][:12]}")
    return "; ".join(parts) or "no model file"


def recorded_model_name(record):
    model = (record or {}).get("model")
    return model.get("name") if isinstance(model, dict) else None


def check_lineage(reference, artifacts):
    """Refuse an artifact whose bytes are not those its recipe JSON records,
    or whose JSON says it was made from another model than the golden
    outputs (their model file may be the source or the folded model the
    artifact was made from). Returns a note per artifact that could not be
    checked (no JSON, or a JSON and golden outputs that name no model file)."""
    from ..quantize.recipe import verified_record

    golden = reference.manifest["model"]
    golden_hashes = source_hashes(golden)
    golden_name = golden.get("file") or golden.get("folded_file")
    unchecked = []
    for artifact in artifacts:
        name = Path(artifact).name
        record = verified_record(artifact)
        source = recorded_source(record)
        if record is None:
            unchecked.append(f"{name} has no recipe JSON")
        elif source is None and golden_hashes:
            raise DataError(f"{name}: its recipe JSON names model {recorded_model_name(record) or '?'} but no model "
                            f"file it was made from, and the golden outputs in {reference.folder} were made from "
                            f"{golden_name} (sha256 {sorted(golden_hashes)[0][:12]}); compare against golden outputs "
                            "of the model the artifact was made from, or make the artifact from that file")
        elif source is None and recorded_weights(record) != weights_text(golden) and NOT_RECORDED not in (
                recorded_weights(record), weights_text(golden)):
            raise DataError(f"{name} was made from {recorded_weights(record)}, the golden outputs in "
                            f"{reference.folder} from {weights_text(golden)}; compare against golden outputs of the "
                            "model the artifact was made from")
        elif source is None:
            unchecked.append(f"{name}'s recipe JSON names model {recorded_model_name(record) or '?'} and no model "
                             f"file ({recorded_weights(record)}), nor do the golden outputs "
                             f"({weights_text(golden)})")
        elif not golden_hashes:
            raise DataError(f"{name} was made from {source.get('file') or source.get('folded_file')}, but the golden "
                            f"outputs in {reference.folder} name no model file ({golden.get('weights') or 'random weights'}); "
                            "make them from the model file the artifact was made from")
        elif not golden_hashes & source_hashes(source):
            raise DataError(f"{name} was made from {describe_source(source)}, the golden outputs in {reference.folder} "
                            f"from {describe_source(golden)}; compare against golden outputs of the model the artifact "
                            "was made from")
    return unchecked


# --- merging shards: numpy only -------------------------------------------------------------------------------------

# not the data's path: shards made on other machines read one data set from where each mounts it (compare checks
# every part's images by their fingerprints, wherever it reads them)
SAME_ACROSS_SHARDS = (("model", "sha256"), ("model", "weights"), ("model", "input_shape"), ("model", "classes"),
                      ("data", "preprocessing"), ("data", "preprocessed_input"), ("data", "seed"),
                      ("data", "class_names"), ("shard", "count"), ("shard", "of"))


def check_shards(manifests, folders):
    """The shards of one evaluation set, each once, all present."""
    first = manifests[0]
    for manifest, folder in zip(manifests, folders):
        for section, key in SAME_ACROSS_SHARDS:
            if manifest[section].get(key) != first[section].get(key):
                raise DataError(f"{folder} is not a shard of the same reference run as {folders[0]}: its "
                                f"{section}.{key} is {_short(manifest[section].get(key))}, not "
                                f"{_short(first[section].get(key))}; merge only shards of one reference run")
    count = first["shard"]["count"]
    indices = [manifest["shard"]["index"] for manifest in manifests]
    twice = sorted({index for index in indices if indices.count(index) > 1})
    missing = sorted(set(range(1, count + 1)) - set(indices))
    if twice or missing:
        problem = f"shard {twice[0]}/{count} is given twice" if twice else f"shard {missing[0]}/{count} is missing"
        raise DataError(f"{problem}; give each of the {count} shards once")
    for manifest, folder in zip(manifests, folders):
        check_shard_rows(manifest, folder)
    ids = [item for manifest in manifests for item in manifest["data"]["ids"]]
    if len(set(map(str, ids))) != len(ids):
        raise DataError(f"the shards name some images more than once (e.g. {_short(_first_repeated(ids))}); merge "
                        "only the shards of one reference run, as it wrote them")


def check_shard_rows(manifest, folder):
    """A shard holds exactly the rows of its own range of the evaluation set:
    ranges that tile the set, each its size (an edited range is refused)."""
    shard, rows = manifest["shard"], manifest["outputs"]["shape"][0]
    size = shard.get("of")
    if not _is_count(size):
        raise DataError(f"{folder}: shard.of is not the evaluation set's size; make the shard again")
    expected = shard_range(size, shard["index"], shard["count"])
    found = (shard.get("start"), shard.get("stop"))
    if found != expected or rows != expected[1] - expected[0]:
        raise DataError(f"{folder} is shard {shard['index']}/{shard['count']} of {size} images, which holds rows "
                        f"{expected[0]}..{expected[1] - 1}, but its manifest says start {_short(found[0])}, stop "
                        f"{_short(found[1])}, with {rows} rows; make the shard again with edge-resnet reference --shard")


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _first_repeated(items):
    seen = set()
    for item in items:
        if str(item) in seen:
            return item
        seen.add(str(item))
    return None


def merge_golden(folders, output, force=False):
    """Join the golden outputs of every shard of one reference run.

    The folders must be the shards 1..n of one run (same model, data and
    preprocessing); they are written as one golden folder, streaming.
    """
    from ..files import publish, refuse_writing_over_inputs, staged_output

    if not folders:
        raise ConfigError("give the shard folders to merge")
    refuse_writing_over_inputs([output], folders, kind="directory")
    manifests = [read_manifest(folder) for folder in folders]
    check_shards(manifests, folders)
    order = sorted(range(len(folders)), key=lambda i: manifests[i]["shard"]["index"])
    manifests, folders = [manifests[i] for i in order], [folders[i] for i in order]
    total = sum(manifest["outputs"]["shape"][0] for manifest in manifests)
    classes = manifests[0]["model"]["classes"]
    with staged_output(output, force) as staging:
        ids, labels, parts, start = [], [], [], 0
        with OutputsWriter(staging / OUTPUTS, total, classes) as merged:
            for folder, manifest in zip(folders, manifests):
                shard_outputs = OutputsReader(folder, manifest)
                for rows in shard_outputs.chunks():
                    merged.append(rows)
                data = manifest["data"]
                ids += data["ids"]
                labels = None if data["labels"] is None or labels is None else labels + data["labels"]
                parts += [{**part, "start": part["start"] + start, "stop": part["stop"] + start}
                          for part in data["parts"]]
                start += len(shard_outputs)
        first = manifests[0]
        manifest = {
            **first,
            # each part keeps the fingerprint of its own images; compare checks them one by one
            "data": {**first["data"], "size": total, "ids": ids, "labels": labels, "parts": parts, "fingerprint": None},
            "shard": {"index": 1, "count": 1, "start": 0, "stop": total, "of": total,
                      "merged_from": [str(folder) for folder in folders]},
            "outputs": {**first["outputs"], "shape": [total, classes], "sha256": merged.sha256},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        publish(staging, output, replaced=FILES, last=(MANIFEST,))
    return manifest
