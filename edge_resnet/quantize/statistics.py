"""Activation statistics of a float TFLite model on a calibration set,
collected once and shared by every int8 artifact (TFLite and ONNX) and every
range method. TensorFlow-free: numpy and ai-edge-litert only.

The float model runs at full speed (XNNPACK) with every activation tensor
made a graph output, one calibration sample per invoke. For each tensor the
pass keeps, with memory that does not grow with the number of samples:

- the exact minimum and maximum (the TFLite converter's min/max ranges);
- a histogram over fixed, sign-aware logarithmic bins: the top 16 bits of
  the float32 value (sign, exponent, 7 mantissa bits), so every bin spans
  0.8% of its value, bins never move as data arrives, and histograms of
  several runs add up exactly. Large tensors are histogrammed on a
  systematic sample of at most HISTOGRAM_VALUES per tensor per sample, taken
  at a stride that is prime to the channel count so every channel is seen;
- each sample's own minimum and maximum (8 bytes per tensor and sample):
  how far apart they lie says how much further unseen images may reach.

It also keeps the float model's output on each sample: what `auto` and the
float-parts search compare their int8 candidates with, so they need not run
the float model again.

The samples fall into FOLDS class-stratified, seeded folds, each counted
by its own accumulator in the same pass (the whole is their sum): the
`auto` range method and the mixed-precision search score each fold with
candidate ranges from all the others (fitting_part; selection.py).
"""

import dataclasses
import functools
import hashlib
import json
import re
import sys
import zipfile
import zlib
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, ModelError
from ..files import atomic_output

TOP_HALF = 1 if sys.byteorder == "little" else 0  # of a float32 seen as two uint16
CODES = 1 << 16  # histogram bins: every top-16-bit pattern of a float32
# Per tensor and sample; more than that is sampled (ResNet-50 224: 1 value in
# ~50 of the largest tensors, 3.2 million values per tensor over 200 images).
HISTOGRAM_VALUES = 1 << 14
PENDING_VALUES = 1 << 20  # sampled values held per tensor before they are counted
# 3: the header's content fingerprint covers every array and header field, and must be there; 2: with folds
# (its fingerprint, where present, covered part of the file: not checked); 1: `auto` has nothing to score on
FORMAT_VERSION = 3
READ_VERSIONS = (1, 2, 3)
FOLDS = 4  # class-stratified quarters of the calibration samples: auto scores each with ranges from the rest
MIN_FOLD_SAMPLES = 2  # fewer calibration samples than FOLDS * this: no folds


def model_sha256(model_bytes):
    return hashlib.sha256(bytes(model_bytes)).hexdigest()


def read_flatbuffer(model_bytes, what="the model"):
    from ai_edge_litert.tools import flatbuffer_utils

    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    except Exception as error:  # the flatbuffer reader raises anything on garbage
        raise ModelError(f"{what} is not a TFLite model (truncated, damaged, or another kind of file); give the "
                         ".tflite file edge-resnet or the TFLite converter wrote") from error
    for buffer in model.buffers or ():
        # data read from an offset (litert-quantizer writes those) comes as bytes, which the flatbuffers library
        # writes back a byte at a time (13 s of a 14 s int8 ResNet-50 build); an array it copies whole
        if isinstance(buffer.data, (bytes, bytearray)):
            buffer.data = np.frombuffer(buffer.data, np.uint8)
    return model


def flatbuffer_bytes(model):
    """The bytes of a model object of read_flatbuffer's."""
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def activation_tensor_indices(subgraph, float_only=False):
    """The graph inputs and every operator output, in execution order,
    without repeats; `float_only`: the float32 ones, which an int8 model
    quantizes from calibration (not the integer sizes a Flatten or Reshape
    computes from a tensor's shape)."""
    from ai_edge_litert import schema_py_generated as schema

    indices = list(subgraph.inputs) + [index for op in subgraph.operators for index in op.outputs]
    indices = list(dict.fromkeys(index for index in indices if index >= 0))
    if float_only:
        return [index for index in indices if subgraph.tensors[index].type == schema.TensorType.FLOAT32]
    return indices


def check_float_model(model, what):
    """Refuse a model with a quantized or float16 tensor, or a non-float32 input or output; integer sizes and
    indices inside the graph are part of float models."""
    from ai_edge_litert import schema_py_generated as schema

    subgraph = model.subgraphs[0]
    shape_types = (schema.TensorType.INT32, schema.TensorType.INT64, schema.TensorType.BOOL)
    for index in activation_tensor_indices(subgraph):
        kind = subgraph.tensors[index].type
        inside = index not in subgraph.inputs and index not in subgraph.outputs
        if kind != schema.TensorType.FLOAT32 and not (kind in shape_types and inside):
            name = subgraph.tensors[index].name.decode()
            raise ModelError(
                f"{what} is not a float32 model (tensor {name!r} is not float32); "
                "give the float32 .tflite (edge-resnet quantize MODEL --quantize none)"
            )


def exposed_model(model_bytes, what="the model", require_float=True):
    """(model bytes with every activation tensor a graph output, their names
    in execution order). The graph is otherwise unchanged, so XNNPACK still
    runs it whole."""
    model = read_flatbuffer(model_bytes)
    if require_float:
        check_float_model(model, what)
    subgraph = model.subgraphs[0]
    activations = activation_tensor_indices(subgraph, float_only=require_float)
    subgraph.outputs = list(dict.fromkeys(list(subgraph.outputs) + activations))
    names = [subgraph.tensors[index].name.decode() for index in activations]
    return flatbuffer_bytes(model), names


def histogram_stride(size, channels):
    """A stride that samples at most HISTOGRAM_VALUES of `size` values and is
    prime to `channels` (so every channel is sampled)."""
    stride = max(1, -(-size // HISTOGRAM_VALUES))
    while np.gcd(stride, channels) != 1:
        stride += 1
    return stride


def bin_codes(values):
    """The histogram bin of each float32 value: its top 16 bits."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    return (values.view(np.uint32) >> 16).astype(np.intp)


def bin_bounds(codes):
    """(lower, upper) value of each bin code, lower <= upper."""
    codes = np.asarray(codes, dtype=np.uint32)
    edge_a = (codes << 16).view(np.float32).astype(np.float64)
    edge_b = ((codes << 16) | 0xFFFF).view(np.float32).astype(np.float64)
    return np.minimum(edge_a, edge_b), np.maximum(edge_a, edge_b)


@dataclass
class TensorAccumulator:
    """Running statistics of one tensor: min/max read every value, the
    histogram the sampled ones. Sampled bin codes wait in `pending` and are
    counted in batches: counting into 65,536 bins for every sample would cost
    more than the counting itself."""

    count: int = 0
    # int32: a bin holds at most HISTOGRAM_VALUES per sample (131,072 samples before it could wrap)
    histogram: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(CODES, np.int32))
    pending: list = dataclasses.field(default_factory=list)
    pending_values: int = 0
    sample_minima: list = dataclasses.field(default_factory=list)
    sample_maxima: list = dataclasses.field(default_factory=list)

    def update(self, values):
        """Add one sample's values (a contiguous float32 array)."""
        flat = values.reshape(-1)
        self.sample_minima.append(float(flat.min()))
        self.sample_maxima.append(float(flat.max()))
        self.count += flat.size
        stride = histogram_stride(flat.size, values.shape[-1] if values.ndim else 1)
        self.pending.append(flat.view(np.uint16)[TOP_HALF::2 * stride].copy())  # the high 16 bits of each sampled float
        self.pending_values += len(self.pending[-1])
        if self.pending_values >= PENDING_VALUES:
            self.flush()

    def flush(self):
        if self.pending:
            self.histogram += np.bincount(np.concatenate(self.pending), minlength=CODES)
            self.pending, self.pending_values = [], 0


@dataclass(frozen=True)
class TensorStatistics:
    name: str
    count: int  # values seen
    codes: np.ndarray = dataclasses.field(repr=False)  # non-empty histogram bins, ascending code
    counts: np.ndarray = dataclasses.field(repr=False)  # values in each
    sample_minima: np.ndarray = dataclasses.field(repr=False)  # float32, one per sample
    sample_maxima: np.ndarray = dataclasses.field(repr=False)

    @property
    def minimum(self):
        return float(self.sample_minima.min())

    @property
    def maximum(self):
        return float(self.sample_maxima.max())

    @classmethod
    def from_accumulator(cls, name, accumulator):
        accumulator.flush()
        codes = np.flatnonzero(accumulator.histogram)
        return cls(name, accumulator.count, codes.astype(np.uint16), accumulator.histogram[codes].astype(np.int64),
                   np.asarray(accumulator.sample_minima, np.float32), np.asarray(accumulator.sample_maxima, np.float32))

    @classmethod
    def merged(cls, parts, positions):
        """One tensor's statistics over several parts (of disjoint samples at
        `positions`, one tuple per part), samples back in pass order."""
        codes = np.unique(np.concatenate([part.codes for part in parts]))
        counts = np.zeros(len(codes), np.int64)
        for part in parts:
            counts[np.searchsorted(codes, part.codes)] += part.counts
        order = np.argsort(np.concatenate([np.asarray(where, np.int64) for where in positions]), kind="stable")
        minima = np.concatenate([part.sample_minima for part in parts])[order]
        maxima = np.concatenate([part.sample_maxima for part in parts])[order]
        return cls(parts[0].name, sum(part.count for part in parts), codes, counts, minima, maxima)

    @functools.cached_property
    def histogram(self):
        """(bin lower bounds, upper bounds, counts), in ascending value order
        (kept: every range rule of `auto`'s candidates reads it)."""
        lower, upper = bin_bounds(self.codes)
        order = np.argsort(lower, kind="stable")
        return lower[order], upper[order], self.counts[order]


    def without(self, part, positions):
        """These statistics less `part` (the same tensor's statistics of the
        samples at `positions`)."""
        counts = self.counts.copy()
        counts[np.searchsorted(self.codes, part.codes)] -= part.counts
        kept = counts > 0
        return TensorStatistics(self.name, self.count - part.count, self.codes[kept], counts[kept],
                                np.delete(self.sample_minima, positions), np.delete(self.sample_maxima, positions))


def too_few_for_folds(count):
    """Whether `count` calibration samples are too few to cut into held-out folds."""
    return count < FOLDS * MIN_FOLD_SAMPLES


def sample_folds(labels, count, seed):
    """The fold of each of `count` calibration samples (None for all when
    they are too few): the samples, class by class (`labels` per sample, or
    None: one class) and in a seeded order within each, are dealt to the
    folds in turn, so every fold is stratified and sizes differ by one at most."""
    if too_few_for_folds(count):
        return None
    strata = list(labels) if labels is not None else [None] * count
    by_stratum = {}
    for position in np.random.default_rng(seed + 1).permutation(count):
        by_stratum.setdefault(strata[position], []).append(int(position))
    dealt = [position for stratum in sorted(by_stratum, key=str) for position in by_stratum[stratum]]
    folds = [0] * count
    for rank, position in enumerate(dealt):
        folds[position] = rank % FOLDS
    return folds


@dataclass(frozen=True)
class Fold:
    """A fold of the calibration samples: their positions in the pass and
    their own statistics (TensorStatistics per tensor)."""

    positions: tuple
    tensors: tuple = dataclasses.field(repr=False)


@dataclass(frozen=True)
class ActivationStatistics:
    """Every activation tensor's statistics for one float model and one
    calibration set; `model_sha256` is the float .tflite's."""

    tensors: tuple
    model_sha256: str
    calibration: dict
    graph_inputs: tuple  # tensor names
    graph_outputs: tuple
    folds: tuple = None  # of Fold, or None
    # the float model's first output on every sample, in pass order (what `auto` and the float-parts search score
    # candidates against), or None (a statistics file saved before they were kept)
    float_outputs: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)
    # the float model's mean of each tensor per channel (its last axis) over every sample, one float64 array per
    # tensor in `tensors` order (what bias_correction corrects the int8 biases toward), or None (a statistics file
    # saved before they were kept)
    channel_means: tuple = dataclasses.field(default=None, repr=False, compare=False)
    # a softmax head's logits (the output softmax's input) on every sample, in pass order (what bias_correction
    # judges a correction by), or None (no output softmax, or a statistics file saved before they were kept)
    float_logits: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)
    # the input of the softmax writing the graph output (SoftmaxInput), or None: derived from the model
    # (softmax_input_of), not saved in a statistics file
    softmax_input: tuple = None
    # (output name, input names) of each CONCATENATION, in graph order: derived from the model (concatenations_of),
    # not saved in a statistics file
    concatenations: tuple = ()

    def fitting_part(self, fold):
        """The statistics of every sample but those of folds[fold]."""
        held_out = self.folds[fold]
        positions = list(held_out.positions)
        tensors = tuple(total.without(part, positions) for total, part in zip(self.tensors, held_out.tensors))
        return dataclasses.replace(self, tensors=tensors, folds=None, float_outputs=None, channel_means=None,
                                   float_logits=None)

    @property
    def samples(self):
        return len(self.tensors[0].sample_maxima)

    def fingerprint(self):
        """The content fingerprint of the file these statistics save as."""
        return content_fingerprint(self.header_fields(), self.file_arrays())

    def header_fields(self):
        """The statistics file's header but its fingerprint."""
        return {"format_version": FORMAT_VERSION, "model_sha256": self.model_sha256,
                "calibration": self.calibration, "graph_inputs": list(self.graph_inputs),
                "graph_outputs": list(self.graph_outputs)}

    def file_arrays(self):
        """The statistics file's arrays but its header."""
        return {
            "names": np.asarray([t.name for t in self.tensors]),
            "count": np.asarray([t.count for t in self.tensors], np.int64),
            "bins": np.asarray([len(t.codes) for t in self.tensors], np.int64),
            "codes": np.concatenate([t.codes for t in self.tensors]),
            "counts": np.concatenate([t.counts for t in self.tensors]),
            "sample_minima": np.stack([t.sample_minima for t in self.tensors]),
            "sample_maxima": np.stack([t.sample_maxima for t in self.tensors]),
            **(fold_arrays(self.folds) if self.folds else {}),
            **({"float_outputs": self.float_outputs} if self.float_outputs is not None else {}),
            **(channel_mean_arrays(self.channel_means) if self.channel_means is not None else {}),
            **({"float_logits": self.float_logits} if self.float_logits is not None else {}),
        }

    def channel_means_by_name(self):
        """{tensor name: the float model's mean per channel}, or None (not kept)."""
        if self.channel_means is None:
            return None
        return {tensor.name: means for tensor, means in zip(self.tensors, self.channel_means)}

    def describe(self):
        return {"model_sha256": self.model_sha256, "calibration": self.calibration, "samples": self.samples,
                "folds": len(self.folds or ()),
                "tensors": len(self.tensors), "fingerprint": self.fingerprint(),
                "histogram_values_per_tensor_and_sample": HISTOGRAM_VALUES}

    def check_model(self, model_bytes, what="the float model"):
        """Refuse to use statistics of another model."""
        sha = model_sha256(model_bytes)
        if sha != self.model_sha256:
            raise ConfigError(
                f"the statistics were collected on another model (float .tflite sha256 {self.model_sha256[:12]}, "
                f"{what} is {sha[:12]}); collect them for this model or drop --statistics"
            )

    def check_preprocessing(self, preprocessing, preprocessed=False):
        """Refuse statistics collected on images preprocessed otherwise than
        `preprocessing` (a Preprocessing; `preprocessed`: the images are
        model input already, as the statistics' may be): their ranges hold
        other numbers than those images become."""
        from ..data.images import preprocessing_text, recorded_preprocessing_of

        collected = recorded_preprocessing_of(self.calibration)
        if not preprocessed and collected is not None and collected != preprocessing:
            raise ConfigError(
                f"the statistics were collected on images preprocessed with {preprocessing_text(collected)}, and this "
                f"run's images take {preprocessing_text(preprocessing)}: give {preprocessing_text(collected)}, or "
                "collect the statistics again")

    def check_asked_preprocessing(self, request, preprocessed=False):
        """Refuse a preprocessing that `request` (a PreprocessingRequest) names and the statistics were not
        collected with; a request that names none takes theirs (`preprocessed`: the run's images are model
        input already, and no preprocessing applies to them)."""
        from ..data.images import recorded_preprocessing_of

        collected = recorded_preprocessing_of(self.calibration)
        if request.preprocessing_given and collected is not None:
            self.check_preprocessing(request.preprocessing_at(collected.height, collected.width), preprocessed)

    def save(self, path):
        """A .npz readable without pickle."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ConfigError(f"the statistics file must end in .npz. Received: {path}")
        header, arrays = self.header_fields(), self.file_arrays()
        header["fingerprint"] = content_fingerprint(header, arrays)
        arrays["header"] = np.asarray(json.dumps(header, sort_keys=True))
        with atomic_output(path) as temporary:
            with open(temporary, "wb") as handle:
                np.savez_compressed(handle, **arrays)
        return path

    @classmethod
    def load(cls, path):
        path = Path(path)
        if not path.is_file():
            raise DataError(f"statistics file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            header = json.loads(str(arrays["header"]))
            if header.get("format_version") not in READ_VERSIONS:
                raise DataError(f"{path} has statistics format {header.get('format_version')}; "
                                f"this edge-resnet reads {', '.join(map(str, READ_VERSIONS))}: collect them again")
            if problem := arrays_problem(arrays) or fingerprint_problem(header, arrays):
                raise DataError(f"{path} is not usable edge-resnet statistics: {problem}; collect them again")
            tensors = tuple(
                TensorStatistics(str(name), int(count), codes, counts, minima, maxima)
                for name, count, (codes, counts), minima, maxima in zip(
                    arrays["names"], arrays["count"], split_bins(arrays, ""), arrays["sample_minima"],
                    arrays["sample_maxima"], strict=True)
            )
            folds = folds_from(arrays, tensors) if "fold_of_sample" in arrays else None
            return cls(tensors, header["model_sha256"], header["calibration"], tuple(header["graph_inputs"]),
                       tuple(header["graph_outputs"]), folds, arrays.get("float_outputs"),
                       channel_means_from(arrays) if "channel_means" in arrays else None, arrays.get("float_logits"))
        except DataError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, IndexError, zipfile.BadZipFile,
                zlib.error) as error:
            raise DataError(f"cannot read {path} as edge-resnet statistics (a .npz from --save-statistics): "
                            f"{statistics_problem(error)}; collect them again") from error


def check_statistics_path(path):
    """Refuse a --statistics path that is no file, before any work."""
    if Path(path).is_dir():
        raise ConfigError(f"--statistics {path} is a folder: give the .npz file in it (a run's "
                          "calibration_statistics.npz)")
    if not Path(path).is_file():
        raise ConfigError(f"statistics file not found: {path}")


def statistics_problem(error):
    """What is wrong with a statistics file, in words that fit it (numpy's
    own advice about pickles does not: a statistics file has none)."""
    if isinstance(error, (zipfile.BadZipFile, zlib.error, EOFError)) or "pickle" in str(error):
        return "not a complete .npz archive (truncated, damaged, or another kind of file)"
    if isinstance(error, KeyError):
        return f"it lacks the array {error}"
    if isinstance(error, json.JSONDecodeError):
        return "its header is not JSON"
    return " ".join(str(error).split())[:160]


def content_fingerprint(header, arrays):
    """SHA-256 of a statistics file's header fields (but the fingerprint) and every array, names, types and
    shapes included."""
    fields = {key: value for key, value in header.items() if key != "fingerprint"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    for key in sorted(set(arrays) - {"header"}):
        values = np.ascontiguousarray(arrays[key])
        digest.update(f"{key} {values.dtype.str} {values.shape}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def fingerprint_problem(header, arrays):
    """Why a statistics file does not hold what it was saved with (in words), or None. Files of format 3 on
    carry a fingerprint of all they hold; older ones are checked by their arrays alone."""
    if header["format_version"] < 3:
        return None
    if "fingerprint" not in header:
        return "its header lacks the content fingerprint every such file is saved with"
    if header["fingerprint"] != content_fingerprint(header, arrays):
        return "it does not hold what it was saved with (its content fingerprint differs: damaged or edited)"
    return None


def arrays_problem(arrays):
    """What makes a statistics file's arrays unusable for ranges (in words), or None: a damaged or edited
    file could otherwise put a NaN, an infinity or an upside-down range into an artifact."""
    minima, maxima = arrays["sample_minima"], arrays["sample_maxima"]
    tensors = {len(arrays["names"]), len(arrays["count"]), len(arrays["bins"]), len(minima), len(maxima)}
    if len(tensors) != 1 or minima.ndim != 2 or minima.shape != maxima.shape:
        return "its arrays disagree on how many tensors and samples there are"
    if int(np.sum(arrays["bins"])) != len(arrays["codes"]) or len(arrays["codes"]) != len(arrays["counts"]):
        return "its histogram bins do not add up"
    if not (np.all(np.isfinite(minima)) and np.all(np.isfinite(maxima))):
        return "a per-sample minimum or maximum is not a finite number"
    if np.any(minima > maxima):
        return "a per-sample minimum lies above its maximum"
    if np.any(arrays["counts"] <= 0):
        return "a histogram bin holds no values"
    if "float_outputs" in arrays and not np.all(np.isfinite(arrays["float_outputs"])):
        return "the float model's outputs hold a value that is not a finite number"
    if "float_logits" in arrays and not (np.all(np.isfinite(arrays["float_logits"]))
                                         and len(arrays["float_logits"]) == len(minima[0] if len(minima) else ())):
        return "the float model's logits hold a value that is not a finite number, or not one row per sample"
    if "channel_means" in arrays and channel_means_problem(arrays):
        return "its per-channel means disagree with its tensors or are not finite numbers"
    return fold_arrays_problem(arrays, len(arrays["names"]), len(minima[0]) if len(minima) else 0)


def fold_arrays_problem(arrays, tensors, samples):
    """What makes a statistics file's fold arrays unusable (in words), or None (also without folds)."""
    if "fold_of_sample" not in arrays:
        return None
    fold_of_sample = arrays["fold_of_sample"]
    folds = int(fold_of_sample.max()) + 1 if len(fold_of_sample) else 0
    if fold_of_sample.shape != (samples,) or fold_of_sample.min(initial=0) < 0 \
            or len(np.unique(fold_of_sample)) != folds:
        return "its folds do not give each sample one fold"
    if len(arrays["fold_count"]) != folds * tensors or len(arrays["fold_bins"]) != folds * tensors:
        return "its folds disagree on how many tensors there are"
    if int(np.sum(arrays["fold_bins"])) != len(arrays["fold_codes"]) or \
            len(arrays["fold_codes"]) != len(arrays["fold_counts"]) or np.any(arrays["fold_counts"] <= 0):
        return "its folds' histogram bins do not add up"
    return None


def fold_arrays(folds):
    """The folds as arrays of the statistics file (bins and counts in fold, then tensor order)."""
    fold_of_sample = np.zeros(sum(len(fold.positions) for fold in folds), np.int64)
    for index, fold in enumerate(folds):
        fold_of_sample[list(fold.positions)] = index
    tensors = [tensor for fold in folds for tensor in fold.tensors]
    return {
        "fold_of_sample": fold_of_sample,
        "fold_count": np.asarray([t.count for t in tensors], np.int64),
        "fold_bins": np.asarray([len(t.codes) for t in tensors], np.int64),
        "fold_codes": np.concatenate([t.codes for t in tensors]),
        "fold_counts": np.concatenate([t.counts for t in tensors]),
    }


def channel_means_problem(arrays):
    """Whether a statistics file's per-channel means cannot belong to its tensors."""
    sizes = arrays["channel_sizes"]
    return (len(sizes) != len(arrays["names"]) or np.any(sizes <= 0) or np.any(arrays["count"] % np.maximum(sizes, 1))
            or int(np.sum(sizes)) != len(arrays["channel_means"]) or not np.all(np.isfinite(arrays["channel_means"])))


def channel_mean_arrays(channel_means):
    """The per-channel means as arrays of the statistics file."""
    return {"channel_sizes": np.asarray([len(means) for means in channel_means], np.int64),
            "channel_means": np.concatenate(channel_means).astype(np.float64)}


def channel_means_from(arrays):
    return tuple(np.split(arrays["channel_means"], np.cumsum(arrays["channel_sizes"])[:-1]))


def added_channel_sums(total, values):
    """`total` (None at first) plus one sample's sum of a float32 tensor per channel (its last axis)."""
    sums = values.reshape(-1, values.shape[-1] if values.ndim else 1).sum(axis=0, dtype=np.float64)
    return sums if total is None else total + sums


def split_bins(arrays, prefix):
    """[(codes, counts)] per tensor from the concatenated arrays."""
    ends = np.cumsum(arrays[f"{prefix}bins"])[:-1]
    return list(zip(np.split(arrays[f"{prefix}codes"], ends), np.split(arrays[f"{prefix}counts"], ends), strict=True))


def folds_from(arrays, tensors):
    fold_of_sample = arrays["fold_of_sample"]
    bins = iter(zip(arrays["fold_count"], split_bins(arrays, "fold_"), strict=True))
    folds = []
    for index in range(int(fold_of_sample.max()) + 1):
        positions = [int(position) for position in np.flatnonzero(fold_of_sample == index)]
        parts = []
        for total in tensors:
            count, (codes, counts) = next(bins)
            parts.append(TensorStatistics(total.name, int(count), codes, counts, total.sample_minima[positions],
                                          total.sample_maxima[positions]))
        folds.append(Fold(tuple(positions), tuple(parts)))
    return tuple(folds)


def keras_layer_of(tensor_name, layer_names, scoped=False):
    """The Keras layer a converter's tensor name comes from: the first path
    component that, less a trailing "_<n>" copy suffix, is a layer name.
    `scoped`: the name is TensorFlow's, whose scope for a layer's call is the
    layer's name with such a suffix always added, so the suffix is tried off
    first (scope "pool_1" is layer "pool", where a layer "pool_1" exists too)."""
    for component in re.split(r"[/;:]", tensor_name):
        unsuffixed = re.sub(r"_\d+$", "", component)
        for candidate in ((unsuffixed, component) if scoped else (component, unsuffixed)):
            if candidate in layer_names:
                return candidate
    return None


def writer_of(model, tensor):
    """(the one operator writing tensor index `tensor` of a TFLite model's
    graph, its builtin code), or (None, None) where not exactly one does."""
    graph = model.subgraphs[0]
    writers = [op for op in graph.operators if tensor in op.outputs]
    if len(writers) != 1:
        return None, None
    code = model.operatorCodes[writers[0].opcodeIndex]
    return writers[0], max(code.builtinCode, code.deprecatedBuiltinCode)


def output_softmax(model):
    """The SOFTMAX operator whose output is the graph output of a TFLite
    model (a flatbuffer object), through the QUANTIZE or DEQUANTIZE an
    --output-type adds after it; None if there is none."""
    from ai_edge_litert import schema_py_generated as schema

    tensor = model.subgraphs[0].outputs[0]
    while True:
        writer, builtin = writer_of(model, tensor)
        if builtin == schema.BuiltinOperator.SOFTMAX:
            return writer
        if builtin not in (schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.DEQUANTIZE):
            return None
        tensor = writer.inputs[0]


class SoftmaxInput(NamedTuple):
    """The logits an output softmax reads."""

    tensor: str
    classes: int


def softmax_input_of(model_bytes):
    """The SoftmaxInput of a TFLite model's output softmax, or None when the
    model does not end in a softmax of beta 1 (Keras' only one)."""
    model = read_flatbuffer(model_bytes)
    softmax = output_softmax(model)
    if softmax is None or softmax.builtinOptions is None or softmax.builtinOptions.beta != 1.0:
        return None
    tensor = model.subgraphs[0].tensors[softmax.inputs[0]]
    return SoftmaxInput(tensor.name.decode(), int(tensor.shape[-1]))


def concatenations_of(model_bytes):
    """(output name, (input names, ...)) of each CONCATENATION of a TFLite
    model, in graph order."""
    from ai_edge_litert import schema_py_generated as schema

    model = read_flatbuffer(model_bytes)
    subgraph = model.subgraphs[0]
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    return tuple((subgraph.tensors[op.outputs[0]].name.decode(),
                  tuple(subgraph.tensors[index].name.decode() for index in op.inputs))
                 for op in subgraph.operators if codes[op.opcodeIndex] == schema.BuiltinOperator.CONCATENATION)


def int8_softmax_input(model_bytes):
    """Whether a TFLite model's output softmax reads int8 logits (a float
    head, kept by the float-parts search, reads float32 ones)."""
    from ai_edge_litert import schema_py_generated as schema

    model = read_flatbuffer(model_bytes)
    softmax = output_softmax(model)
    return softmax is not None and model.subgraphs[0].tensors[softmax.inputs[0]].type == schema.TensorType.INT8


def graph_io_names(model_bytes):
    subgraph = read_flatbuffer(model_bytes).subgraphs[0]
    names = [subgraph.tensors[index].name.decode() for index in (*subgraph.inputs, *subgraph.outputs)]
    return tuple(names[: len(subgraph.inputs)]), tuple(names[len(subgraph.inputs):])


def collect_statistics(float_model_bytes, calibration, threads=2, progress=None):
    """One pass of the float model over `calibration` (an ImageSet of model
    input). `progress` wraps the sample iterator (a callable taking
    (iterable, total)) or is None."""
    from ..quiet import native_output_silenced
    from ..device.runtime import tflite_interpreter_module

    exposed, names = exposed_model(float_model_bytes)
    _, module = tflite_interpreter_module()
    with native_output_silenced():  # the runtime's start-up line
        interpreter = module.Interpreter(model_content=exposed, num_threads=threads)
        interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    check_input_shape(input_detail["shape"][1:], calibration)
    output_index = {detail["name"]: detail["index"] for detail in interpreter.get_output_details()}
    views = [interpreter.tensor(output_index[name]) for name in names]  # no copies
    inputs, outputs = graph_io_names(float_model_bytes)
    output_view = views[names.index(outputs[0])]
    softmax_input = softmax_input_of(float_model_bytes)
    logits_view = views[names.index(softmax_input.tensor)] if softmax_input and softmax_input.tensor in names else None
    float_outputs, float_logits = [], []
    fold_of = sample_folds(calibration.labels, len(calibration), calibration.seed) or [0] * len(calibration)
    accumulators = [[TensorAccumulator() for _ in names] for _ in range(max(fold_of, default=0) + 1)]
    channel_sums = [None] * len(names)
    samples = calibration.samples()
    if progress is not None:
        samples = progress(samples, len(calibration))
    for position, sample in enumerate(samples):
        interpreter.set_tensor(input_detail["index"], np.asarray(sample, np.float32)[None])
        interpreter.invoke()
        for index, (view, accumulator) in enumerate(zip(views, accumulators[fold_of[position]])):
            accumulator.update(view())  # no name kept: the next invoke refuses while one holds its memory
            channel_sums[index] = added_channel_sums(channel_sums[index], view())
        float_outputs.append(output_view()[0].copy())
        if logits_view is not None:
            float_logits.append(logits_view()[0].copy())
    if not any(group[0].count for group in accumulators):
        raise DataError("the calibration set yielded no samples")
    positions = [tuple(p for p, fold in enumerate(fold_of) if fold == index) for index in range(len(accumulators))]
    folds = tuple(Fold(where, tuple(TensorStatistics.from_accumulator(name, acc) for name, acc in zip(names, group)))
                  for where, group in zip(positions, accumulators))
    tensors = tuple(TensorStatistics.merged([fold.tensors[index] for fold in folds], positions)
                    for index in range(len(names)))
    broken = [tensor.name for tensor in tensors
              if not (np.all(np.isfinite(tensor.sample_minima)) and np.all(np.isfinite(tensor.sample_maxima)))]
    if broken and broken[0] in inputs:  # preprocessing checks images; a model's own input layers could still do it
        raise DataError(f"the calibration samples reach the model's input {broken[0]!r} with values that are not "
                        "finite numbers (NaN or infinity): no int8 range holds them; check the data and the preprocessing")
    if broken:
        raise ModelError(f"the float model computes values that are not finite numbers (NaN or infinity) on the "
                         f"calibration images, first at {broken[0]!r} ({len(broken)} tensors): no int8 range holds "
                         "them; check the weights and the preprocessing")
    channel_means = tuple(sums / (tensor.count / len(sums)) for sums, tensor in zip(channel_sums, tensors))
    return ActivationStatistics(tensors, model_sha256(float_model_bytes), calibration.describe(), inputs, outputs,
                                folds if len(folds) > 1 else None, np.stack(float_outputs), channel_means,
                                np.stack(float_logits) if float_logits else None, softmax_input,
                                concatenations_of(float_model_bytes))


def check_input_shape(expected, calibration):
    """Refuse calibration samples of another shape than the model's input (without the batch)."""
    expected = tuple(int(size) for size in expected)
    if tuple(calibration.preprocessing.shape) != expected:
        raise ConfigError(
            f"calibration samples are {tuple(calibration.preprocessing.shape)} but the model takes {expected}; "
            "build the calibration set for the model's input size"
        )
