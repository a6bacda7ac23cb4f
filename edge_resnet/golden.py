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
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .files import file_sha256
from .parity import REFERENCE_BATCH

FORMAT = "edge-resnet golden outputs"
VERSION = 1
MANIFEST, OUTPUTS = "golden.json", "golden.npy"
FILES = (OUTPUTS, MANIFEST)  # the manifest last: a folder without one is not golden
LATENCY_RUNS = 20
GPU_BATCH = 256
CHUNK_ROWS = 4096  # rows per read when merging: 16 MB at 1,000 classes
REMADE = "make them again with edge-resnet reference"


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


def is_golden_folder(path):
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


# --- writing: needs Keras (the float model runs here) ---------------------------------------------------------------


def keras_versions():
    from .recipe import tool_versions

    return tool_versions("keras", "tensorflow", "jax", "jaxlib")


def full_float32(backend):
    """Run float32 convolutions and matrix products in float32. On a GPU,
    JAX and TensorFlow use TF32 by default: measured on an H200, ResNet-50's
    logits then differ from the CPU's by 2e-4 of their range (the digits demo:
    2e-3), against 5e-7 in float32 (benchmarks/results/gpu_reference.md).
    A reference has to be the float model itself."""
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)


def batch1_latency_ms(model, sample, runs=LATENCY_RUNS):
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
    from .parity import class_index

    labels = class_index(data.labels, class_names)
    return None if labels is None else [int(label) for label in labels]


def write_golden(model, data, output, model_record, class_names=None, batch_size=None, shard=None,
                 force=False, progress=None):
    """Run the float Keras `model` on the ImageSet `data` (its `shard`, an
    (i, n) pair, or all) and write golden outputs into the folder `output`,
    all or nothing. `model_record` names the model: {"file", "sha256"}.
    Returns the manifest."""
    from .data import subset
    from .files import publish, staged_output

    index, count = shard or (1, 1)
    start, stop = shard_range(len(data), index, count)
    if start == stop:
        raise DataError(f"shard {index}/{count} of {len(data)} images is empty; use fewer shards")
    with staged_output(output, force) as staging:
        manifest = write_golden_files(model, subset(data, start, stop), staging, model_record, class_names,
                                      batch_size, progress,
                                      {"index": index, "count": count, "start": start, "stop": stop, "of": len(data)})
        publish(staging, output, replaced=FILES, last=(MANIFEST,))
    return manifest


def write_golden_files(model, data, folder, model_record, class_names=None, batch_size=None, progress=None,
                       shard=None):
    """golden.npy and golden.json of `model` on all of `data`, into `folder`."""
    from .parity import check_fits, default_class_names, reference_device

    check_fits(_Shape(model), data)
    classes = int(model.output_shape[-1])
    class_names = class_names or default_class_names(data, classes)
    backend, accelerator, device = reference_device()
    full_float32(backend)
    batch_size = batch_size or (GPU_BATCH if accelerator != "CPU" else REFERENCE_BATCH)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1. Received: {batch_size}")
    folder = Path(folder)
    with OutputsWriter(folder / OUTPUTS, len(data), classes) as outputs:
        ms_per_image = run_into(model, data, outputs, batch_size, progress)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": {**model_record, "name": model.name, "input_shape": list(model.input_shape[1:]), "classes": classes},
        "data": {
            **data.describe(),
            "source_path": _source_path(data),
            "ids": data.sample_ids(),
            "parts": [{"start": 0, "stop": len(data), "fingerprint": data.fingerprint}],
            "labels": label_indices(data, class_names),
            "class_names": list(class_names),
        },
        "shard": shard or {"index": 1, "count": 1, "start": 0, "stop": len(data), "of": len(data)},
        "reference": {
            "backend": backend, "accelerator": accelerator, "device": device, "precision": "float32 (no TF32)",
            "versions": keras_versions(),
            "speed": {"batch_size": batch_size, "ms_per_image": ms_per_image,
                      "batch1_ms": batch1_latency_ms(model, next(data.samples()))},
        },
        "outputs": {"file": OUTPUTS, "dtype": "float32", "shape": [len(data), classes], "sha256": outputs.sha256},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


class _Shape:
    """What check_fits reads from a reference: the input shape."""

    def __init__(self, model):
        self.input_shape = tuple(model.input_shape[1:])


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
    return manifest


class OutputsWriter:
    """A float32 .npy of known shape written row block by row block (never
    held whole), hashed as it is written."""

    def __init__(self, path, rows, classes):
        import hashlib
        import io

        self.shape, self.written = (rows, classes), 0
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
        if dtype != np.dtype("<f4") or fortran or len(shape) != 2 or list(shape) != list(record["shape"]):
            raise DataError(f"{path} holds {dtype} {shape}, the manifest says float32 {tuple(record['shape'])}; "
                            f"{REMADE}")
        self.path, self.shape = path, tuple(shape)

    def __len__(self):
        return self.shape[0]

    def rows(self, start, count):
        count = max(0, min(count, self.shape[0] - start))
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + start * self.shape[1] * 4)
            return np.fromfile(handle, dtype="<f4", count=count * self.shape[1]).reshape(count, self.shape[1])

    def chunks(self, rows=None):
        rows = rows or CHUNK_ROWS
        for start in range(0, self.shape[0], rows):
            yield self.rows(start, rows)


class GoldenReference:
    """Golden outputs as the reference of parity.compare(): the same
    interface as parity.KerasReference, rows read from disk in order."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.stored = OutputsReader(folder, self.manifest)
        model = self.manifest["model"]
        self.name = model["name"]
        self.input_shape = tuple(model["input_shape"])
        self.classes = int(model["classes"])
        self.class_names = self.manifest["data"]["class_names"]

    @property
    def preprocessing(self):
        from .data import Preprocessing

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
        from .data import image_set, select_samples

        record = self.manifest["data"]
        source = source if source is not None else record.get("source_path")
        if source is None or isinstance(source, (str, Path)) and not Path(source).exists():
            raise DataError(f"the images the golden outputs were made from ({record['source']}) are not here; "
                            "give --data with the same images")
        if preprocessing is not None and preprocessing != self.preprocessing:
            raise DataError(f"--preprocessing {preprocessing.mode} differs from the golden outputs' "
                            f"{self.preprocessing.mode} ({self.folder / MANIFEST}); leave the preprocessing "
                            "options out to use the manifest's")
        if preprocessed is not None and preprocessed != record["preprocessed_input"]:
            raise DataError(f"the golden outputs were made from {'already ' * record['preprocessed_input']}"
                            f"preprocessed arrays; {'add' if record['preprocessed_input'] else 'leave out'} "
                            "--preprocessed")
        whole = image_set(source, self.preprocessing, size=None, preprocessed=record["preprocessed_input"],
                          check_readable=False)
        ids = record["ids"]
        if len(ids) != len(self.stored):
            raise DataError(f"{self.folder / MANIFEST} names {len(ids)} samples for {len(self.stored)} "
                            f"outputs; {REMADE}")
        chosen = select_samples(whole, ids)
        check_parts(chosen, record, source)
        return with_recorded_labels(chosen, record, source)


def with_recorded_labels(data, record, source):
    """`data` labelled as the manifest records; labels the data carries
    itself must be the same."""
    import dataclasses

    from .parity import class_index

    recorded = record["labels"]
    if recorded is None:
        return dataclasses.replace(data, labels=None)
    if data.labels is not None and class_index(data.labels, record["class_names"]).tolist() != recorded:
        raise DataError(f"the labels in {source} are not the ones the golden outputs were made with; give the same "
                        f"data, or {REMADE}")
    return dataclasses.replace(data, labels=tuple(recorded))


def part_fingerprints(data, parts):
    from .data import fingerprint

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


def recorded_source(artifact):
    """The {"file", "sha256"} of the model an artifact was made from, as its
    recipe JSON records it, or None."""
    from .recipe import record_path

    path = record_path(artifact)
    try:
        source = json.loads(path.read_text()).get("source_model") if path.is_file() else None
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    return source if isinstance(source, dict) and source.get("sha256") else None


def check_lineage(reference, artifacts):
    """Refuse artifacts whose recipe JSON says they were made from another
    model than the golden outputs. Returns the names of artifacts that
    record no source (not checkable)."""
    golden = reference.manifest["model"]
    unchecked = []
    for artifact in artifacts:
        source = recorded_source(artifact)
        if source is None or not golden.get("sha256"):
            unchecked.append(Path(artifact).name)
        elif source["sha256"] != golden["sha256"]:
            raise DataError(f"{Path(artifact).name} was made from {source.get('file')} (sha256 "
                            f"{source['sha256'][:12]}), the golden outputs in {reference.folder} from "
                            f"{golden.get('file')} (sha256 {golden['sha256'][:12]}); compare against golden outputs "
                            "of the model the artifact was made from")
    return unchecked


# --- merging shards: numpy only -------------------------------------------------------------------------------------

SAME_ACROSS_SHARDS = (("model", "sha256"), ("model", "input_shape"), ("model", "classes"), ("data", "source"),
                      ("data", "preprocessing"), ("data", "preprocessed_input"), ("data", "seed"),
                      ("data", "class_names"), ("shard", "count"), ("shard", "of"))


def check_shards(manifests, folders):
    """The shards of one evaluation set, each once, all present."""
    first = manifests[0]
    for manifest, folder in zip(manifests, folders):
        for section, key in SAME_ACROSS_SHARDS:
            if manifest[section].get(key) != first[section].get(key):
                raise DataError(f"{folder} has another {section} {key} than {folders[0]}; merge only shards of one "
                                "reference run")
    count = first["shard"]["count"]
    indices = [manifest["shard"]["index"] for manifest in manifests]
    twice = sorted({index for index in indices if indices.count(index) > 1})
    missing = sorted(set(range(1, count + 1)) - set(indices))
    if twice or missing:
        problem = f"shard {twice[0]}/{count} is given twice" if twice else f"shard {missing[0]}/{count} is missing"
        raise DataError(f"{problem}; give each of the {count} shards once")


def merge_golden(folders, output, force=False):
    """Join the golden folders of every shard of one run into `output`."""
    from .files import publish, staged_output

    if not folders:
        raise ConfigError("give the shard folders to merge")
    manifests = [read_manifest(folder) for folder in folders]
    check_shards(manifests, folders)
    order = sorted(range(len(folders)), key=lambda i: manifests[i]["shard"]["index"])
    manifests, folders = [manifests[i] for i in order], [folders[i] for i in order]
    total = sum(manifest["data"]["size"] for manifest in manifests)
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
            "data": {**first["data"], "size": total, "ids": ids, "labels": labels, "parts": parts,
                     "fingerprint": _combined([part["fingerprint"] for part in parts])},
            "shard": {"index": 1, "count": 1, "start": 0, "stop": total, "of": total,
                      "merged_from": [str(folder) for folder in folders]},
            "outputs": {**first["outputs"], "shape": [total, classes], "sha256": merged.sha256},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        publish(staging, output, replaced=FILES, last=(MANIFEST,))
    return manifest


def _combined(fingerprints):
    import hashlib

    return hashlib.sha256("".join(fingerprints).encode()).hexdigest()
