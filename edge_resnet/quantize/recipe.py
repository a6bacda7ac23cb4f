"""The quantization recipe: one frozen, typed description of how an artifact
was quantized, saved as JSON beside it so anyone can reproduce it."""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..files import atomic_output
from .ranges import DEFAULT_EXTRAPOLATION, DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS, RangeMethod

MODES = ("int8", "float16", "dynamic", "none")
IO_TYPES = ("int8", "uint8", "float32")
CALIBRATION_METHODS = METHODS  # how activation ranges come from the statistics (ranges.py)
# onnxruntime static quantization settings
ACTIVATION_TYPES = ("int8", "uint8")
ONNX_FORMATS = ("qdq", "qoperator")
# what the parts an accuracy budget needs run in (mixed.PRECISIONS); auto: dynamic, then float32
FALLBACK_PRECISIONS = ("auto", "dynamic", "float32")
BUDGET_TERMS = ("min_sqnr", "min_sqnr_gain", "max_accuracy_drop", "min_agreement")  # fields of mixed.Budget
BIAS_CORRECTIONS = ("auto", "on", "off")  # bias_correction.corrected_artifact
ONNX_ROUTES = ("ort", "tflite")  # int8 ONNX by onnxruntime static quantization, or from the int8 TFLite
DEFAULT_OPSET = 17
MODE_DESCRIPTIONS = {
    "int8": "full integer: weights int8 symmetric per output channel, activations int8 per tensor",
    "float16": "weights stored as float16, computed in float32",
    "dynamic": "dynamic range: weights int8, activations quantized at run time",
    "none": "float32, no quantization",
}


METHOD_OF_PARAMETER = {"percentile": "percentile", "extrapolation": "extrapolated"}


def check_method_parameters(options):
    """Refuse a rule's parameter given (--percentile, --extrapolation) for a
    method that does not read it, rather than drop it without a word."""
    method = options.get("calibration_method") or f"{DEFAULT_METHOD} (the default)"
    for parameter, owner in METHOD_OF_PARAMETER.items():
        if options.get(parameter) is not None and method != owner:
            raise ConfigError(f"--{parameter} sets the {owner} rule, and --calibration-method is {method}, which "
                              f"does not read it: add --calibration-method {owner} or leave --{parameter} out")


@dataclass(frozen=True)
class QuantizationRecipe:
    mode: str = "int8"
    input_type: str = "int8"  # int8 mode only; other modes keep float32 I/O
    output_type: str = "int8"
    per_channel: bool = True
    # int8 activation ranges, the same for TFLite and ONNX
    calibration_method: str = DEFAULT_METHOD
    percentile: float = DEFAULT_PERCENTILE
    extrapolation: float = DEFAULT_EXTRAPOLATION
    tail_room: float = None  # ranges reach where the extremes of this many times the calibration images lie
    calibration_score: str = None  # auto only: how it scores the rules (ranges.AUTO_SCORES; None: pooled)
    # onnxruntime only. uint8 activations with int8 weights ("U8S8") run
    # twice as fast as float32 on x86 here; int8 ("S8S8") is no faster.
    onnx_activation_type: str = "uint8"
    onnx_format: str = "qdq"
    # 7-bit weights: onnxruntime's x86 int8 kernels without VNNI (AVX2,
    # AVX-512F) add u8*s8 products pairwise in int16 and saturate with full
    # 8-bit weights; measured here it cut top-1 agreement from 99.8% to 96.7%.
    onnx_reduce_range: bool = True
    # int8 only: keep the fewest parts in float32 that bring the output SQNR
    # on held-out calibration images to this, or the top-1 accuracy drop
    # (points) within, or the top-1 agreement (fraction) to (mixed.py);
    # all None: full int8
    min_sqnr: float = None
    max_accuracy_drop: float = None
    min_agreement: float = None
    min_sqnr_gain: float = None  # output SQNR over full int8's on the same held-out images (a level made of it)
    # what the parts a budget needs run in, in the TFLite (mixed.PRECISIONS; the ONNX keeps them in float32):
    # auto tries dynamic-range int8 first, float32 when that cannot meet the budget
    fallback_precision: str = "auto"
    # int8 TFLite: each layer's int32 bias shifted by the mean error of its outputs on the calibration images,
    # part by part (bias_correction.py); a budget's float parts keep theirs. auto: kept where it raises
    # the logits' mean per-image SQNR on those images; on: always; off: never (recipes before auto: true / false)
    bias_correction: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"quantization mode must be one of {', '.join(MODES)}. Received: {self.mode!r}")
        for field in ("input_type", "output_type"):
            value = getattr(self, field)
            if value not in IO_TYPES:
                raise ConfigError(f"{field} must be one of {', '.join(IO_TYPES)}. Received: {value!r}")
            if self.mode != "int8" and value != "float32":
                raise ConfigError(
                    f"--{field.replace('_', '-')} {value} needs --quantize int8; --quantize {self.mode} keeps float32 "
                    "input and output"
                )

        self.range_method()  # validates the method and its parameter
        budget = self.budget()
        if budget is not None:
            from .mixed import check_accuracy_terms, check_budget

            check_budget(self.min_sqnr, self.min_sqnr_gain)
            check_accuracy_terms(self.max_accuracy_drop, self.min_agreement)
            if self.mode != "int8":
                raise ConfigError(f"{budget.flags()} keeps parts of an int8 model in float32: it needs --quantize int8")
        if isinstance(self.bias_correction, bool):  # a recipe written when it was on or off
            object.__setattr__(self, "bias_correction", "on" if self.bias_correction else "off")
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise ConfigError(f"bias_correction must be one of {', '.join(BIAS_CORRECTIONS)} (or true / false). "
                              f"Received: {self.bias_correction!r}")
        if self.fallback_precision not in FALLBACK_PRECISIONS:
            raise ConfigError(f"--fallback-precision must be one of {', '.join(FALLBACK_PRECISIONS)}. Received: "
                              f"{self.fallback_precision!r}")
        if self.fallback_precision != "auto" and budget is None:
            raise ConfigError("--fallback-precision says what the parts an accuracy budget needs run in: give "
                              "--min-sqnr, --min-sqnr-gain, --max-accuracy-drop or --min-agreement (on convert, "
                              "with --accuracy-control)")
        for field, allowed in (
            ("onnx_activation_type", ACTIVATION_TYPES),
            ("onnx_format", ONNX_FORMATS),
        ):
            if getattr(self, field) not in allowed:
                raise ConfigError(f"{field} must be one of {', '.join(allowed)}. Received: {getattr(self, field)!r}")

    @classmethod
    def for_mode(cls, mode, **overrides):
        """Defaults that fit the mode: int8 I/O for int8, float32 otherwise."""
        check_method_parameters(overrides)
        io_type = "int8" if mode == "int8" else "float32"
        settings = {"input_type": io_type, "output_type": io_type,
                    **({} if mode == "int8" else {"bias_correction": "off"}), **overrides}
        return cls(mode=mode, **settings)

    @property
    def needs_calibration(self):
        return self.mode == "int8"

    def range_method(self):
        return RangeMethod(self.calibration_method, self.percentile, self.extrapolation, room=self.tail_room,
                           score=self.calibration_score)

    def budget(self):
        """The mixed-precision Budget asked for, or None (full int8)."""
        from .mixed import Budget

        terms = {name: getattr(self, name) for name in BUDGET_TERMS}
        return None if all(term is None for term in terms.values()) else Budget(**terms)

    def describe(self, artifact_format="tflite", activation_ranges=None):
        """One line saying what the quantization is, for this format;
        `activation_ranges` (the record's) names the rule `auto` chose."""
        if self.mode != "int8":
            return MODE_DESCRIPTIONS[self.mode]
        method = self.range_method()
        ranges = f"{dataclasses.replace(method, room=None).describe()} activation ranges"
        if activation_ranges and "chosen" in activation_ranges:  # the rule auto took, and what became of the room
            from .selection import room_text

            chosen = RangeMethod.from_dict(activation_ranges["chosen"])
            ranges += f" ({dataclasses.replace(chosen, room=None).describe()}{room_text(activation_ranges['selection'])})"
        elif method.room:
            ranges += f", room for {method.room:g}x the images"
        if artifact_format != "onnx":
            return f"{MODE_DESCRIPTIONS[self.mode]}, {ranges}"
        weights = "int8 in a 7-bit range" if self.onnx_reduce_range else "int8"
        granularity = "per output channel" if self.per_channel else "per tensor"
        return (
            f"onnxruntime static int8 ({self.onnx_format.upper()}): weights {weights} {granularity}, "
            f"activations {self.onnx_activation_type} per tensor, {ranges}, logits scaled to float from the int32 sums"
        )

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown recipe fields: {', '.join(unknown)}")
        if "fallback_precision" not in data and any(data.get(name) is not None for name in BUDGET_TERMS):
            data = {**data, "fallback_precision": "float32"}  # recorded before dynamic-range parts: float32 parts
        if "bias_correction" not in data:
            data = {**data, "bias_correction": "off"}  # recorded before biases were corrected
        return cls(**data)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


def record_path(artifact_path):
    """The recipe JSON that sits beside every artifact."""
    artifact_path = Path(artifact_path)
    return artifact_path.with_name(artifact_path.name + ".json")


def tool_versions(*packages):
    from importlib import metadata

    versions = {}
    for package in ("edge-resnet", "numpy") + packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def keras_model_info(model):
    return {
        "name": model.name,
        "input_shape": list(model.input_shape[1:]),
        "output_shape": list(model.output_shape[1:]),
        "parameters": int(model.count_params()),
    }


def artifact_record(artifact_path, artifact_format, recipe, model_info, packages, activation_ranges=None):
    """The JSON beside an artifact. `activation_ranges` (ranges.ranges_record)
    names the range method, its parameters, a fingerprint of the ranges and
    the statistics (with the calibration data) they came from."""
    import hashlib

    return {
        "artifact": Path(artifact_path).name,
        "format": artifact_format,
        "sha256": hashlib.sha256(Path(artifact_path).read_bytes()).hexdigest(),
        "recipe": recipe.to_dict(),
        "quantization": recipe.describe(artifact_format, activation_ranges),
        "calibration": activation_ranges["statistics"]["calibration"] if activation_ranges else None,
        "activation_ranges": activation_ranges,
        "model": model_info,
        "versions": tool_versions(*packages),
    }


def write_record(artifact_path, record):
    with atomic_output(record_path(artifact_path)) as temporary:
        temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_record(artifact_path):
    """The recipe JSON beside an artifact (a dict), or None where there is
    none; one line naming the file where it cannot be read."""
    path = record_path(artifact_path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not a readable recipe JSON ({error}); delete it or write the artifact again") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path} is not a recipe JSON object; delete it or write the artifact again")
    return record


def verified_record(artifact_path):
    """The recipe JSON beside an artifact, refused when the artifact's bytes
    are not the ones it records (a renamed or replaced file): a JSON vouches
    only for its own artifact. None where there is no JSON."""
    from ..files import file_sha256

    record = read_record(artifact_path)
    if record is None or not isinstance(record.get("sha256"), str):
        return record
    actual = file_sha256(artifact_path)
    if actual != record["sha256"]:
        raise ConfigError(
            f"{Path(artifact_path).name} is not the artifact its recipe JSON describes: the file's sha256 is "
            f"{actual[:16]}, {record_path(artifact_path).name} records {record['sha256'][:16]}; write the artifact "
            "again, or remove the JSON that belongs to another file")
    return record


def record_source(artifact_path, source):
    """Add to an artifact's recipe JSON the model file it was made from
    ({"file", "sha256"}), which golden outputs are checked against."""
    path = record_path(artifact_path)
    record = json.loads(path.read_text())
    record["source_model"] = source
    write_record(artifact_path, record)
