"""The whole job in one call: load the model, fold BatchNorm, calibrate once,
write TFLite and ONNX (float32 and quantized), check accuracy parity on
held-out images, time every artifact, and write the report.

Each stage reuses what an earlier one made: the calibration images are
decoded and preprocessed once (TFLite and onnxruntime calibrate on the same
arrays), TFLite calibration runs once (the int8 model and the per-layer
debug model are both quantized from its result), the float ONNX model is
exported once (the int8 ONNX model and the per-layer comparison start from
it), and the reference runs once per evaluation batch for all artifacts.

Everything is written into a hidden staging folder beside the output and
moved into place only when the run is complete.
"""

import dataclasses
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .check.workflows import EvaluationRequest, GateRequest
from .data.images import PreprocessingRequest, SeedRequest
from .device.bench import ThreadsRequest, peak_rss_mb, threads_problem
from .device.remote import DeviceRequest
from .quantize.ethos_u import NpuTargetRequest, output_names
from .errors import ConfigError
from .files import ForceRequest, file_sha256
from .model.source import ModelRequest, check_image_model
from .options import option
from .quantize.workflow import QuantizationRequest

FORMATS = ("tflite", "onnx")
ONNX_MODES = ("int8", "none")  # what ONNX export offers
MODES = ("int8", "float16", "dynamic", "none")
DEMO, RANDOM, IMAGENET = "demo", "random", "imagenet"
FOLD_PROBE_IMAGES = 8
REPORT_STEM = "report"
REPORT_FILES = tuple(f"{REPORT_STEM}.{suffix}" for suffix in ("json", "md", "html"))
STATISTICS_FILE = "calibration_statistics.npz"  # reusable with --statistics
RUN_FILE_ENDINGS = (".tflite", ".onnx", ".keras", ".json", ".npz", ".npy", ".md", ".html", "_vela_summary.csv")


def parse_formats(text):
    """"tflite,onnx" -> ("tflite", "onnx"), each once, in the order given."""
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


@dataclass(frozen=True)
class ConvertConfig(ModelRequest, QuantizationRequest, SeedRequest, EvaluationRequest, GateRequest, ThreadsRequest,
                    ForceRequest, PreprocessingRequest, DeviceRequest, NpuTargetRequest):
    """What `edge-resnet convert` was asked to do. None means "the default
    for this model" (see the resolved_* methods): the demo weights for
    resnet50, whose input is 32 pixels and whose classes are 10; the
    embedded digits as calibration data for the demo and random weights."""

    model: str = option("--model", default="resnet50", metavar="NAME|FILE.keras",
                        help="resnet18/34/50/101/152, or your .keras model")
    eval: str = option("--eval", default=None, metavar="PATH",
                       help="images to check parity on (default: the calibration source's images not calibrated on)")
    formats: tuple = option("--formats", default=None, metavar="LIST",
                            help="tflite, onnx or tflite,onnx (default: both; tflite only for float16/dynamic)")
    output: str = option("--output", default="edge-resnet-output", metavar="DIR", help="output directory")
    bench_runs: int = field(default=30, kw_only=True)  # GateRequest's option, more runs by default
    accuracy_control: bool = option("--accuracy-control", default=False, action="store_true",
                                    help="int8: when full int8 misses --max-accuracy-drop or --min-agreement on "
                                         "held-out calibration images, keep the fewest network parts out of int8 "
                                         "(--fallback-precision) that meet them there (the gates still judge the "
                                         "--eval images)")

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.formats, str):
            object.__setattr__(self, "formats", parse_formats(self.formats))
        check_config(self)

    @property
    def is_keras_file(self):
        return self.model.endswith(".keras")

    def resolved_weights(self):
        if self.is_keras_file:
            return None
        if self.weights is not None:
            return self.weights
        return DEMO if self.model == "resnet50" else None

    def resolved_classes(self):
        """Builder names: --classes, else 10 where the embedded digits are
        the data (so their class folders label the outputs), else 1000."""
        if self.classes:
            return self.classes
        return 10 if self.uses_embedded_data() else 1000

    def resolved_formats(self):
        if self.formats is not None:
            return tuple(self.formats)
        return FORMATS if self.quantize in ONNX_MODES else ("tflite",)

    def uses_embedded_data(self):
        """The embedded digits stand in for --calibration with the demo and
        random weights only: they say nothing about another model's inputs."""
        return self.calibration is None and self.resolved_weights() in (DEMO, RANDOM)


def check_config(config):
    """Refuse option combinations that cannot work, before any work starts."""
    from .model.resnet import BUILDERS
    from .check.parity import check_gates

    if not config.is_keras_file and config.model not in BUILDERS:
        raise ConfigError(
            f"unknown model {config.model!r}: give one of {', '.join(BUILDERS)} or a .keras file"
        )
    if config.is_keras_file and (config.weights is not None or config.input_size or config.classes):
        raise ConfigError(
            "--weights, --input-size and --classes apply to builder names; a .keras file carries its own"
        )
    weights = config.resolved_weights()
    if not config.is_keras_file and weights is None:
        raise ConfigError(
            f"give --weights for {config.model} (imagenet, random or a file); "
            "the offline demo weights exist for resnet50 only"
        )
    if weights == DEMO:
        _check_demo_options(config)
    if config.quantize not in MODES:
        raise ConfigError(f"--quantize must be one of {', '.join(MODES)}. Received: {config.quantize!r}")
    formats = config.resolved_formats()
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ConfigError(f"--formats takes tflite, onnx or both (comma-separated). Received: {','.join(formats)}")
    if "onnx" in formats and config.quantize not in ONNX_MODES:
        raise ConfigError(
            f"ONNX export offers int8 and none (float32), not {config.quantize}; use --formats tflite"
        )
    gated = config.max_accuracy_drop is not None or config.min_agreement is not None
    if gated and config.quantize == "none":
        raise ConfigError(
            "--max-accuracy-drop and --min-agreement gate the quantized artifacts, and --quantize none "
            "makes none; drop the gates or choose a quantization"
        )
    check_gates(config.max_accuracy_drop, config.min_agreement)
    if (config.input_type or config.output_type) and config.quantize != "int8":
        raise ConfigError("--input-type and --output-type apply to --quantize int8 only")
    if "tflite" not in formats and {config.input_type, config.output_type} - {None, "float32"}:
        raise ConfigError("--input-type and --output-type set the int8 TFLite's I/O, and convert's int8 ONNX takes "
                          "and gives float32: add tflite to --formats, or leave them out")
    int8_only = ("calibration_method", "percentile", "extrapolation", "tail_room", "calibration_score", "statistics",
                 "fallback_precision")
    if config.quantize != "int8" and any(getattr(config, name) is not None for name in int8_only):
        raise ConfigError("--calibration-method, --percentile, --extrapolation, --tail-room, --calibration-score, "
                          "--statistics and --fallback-precision apply to --quantize int8 only")
    if config.quantize != "int8" and config.bias_correction:
        raise ConfigError("--bias-correction applies to --quantize int8 only")
    if config.fallback_precision == "dynamic" and "onnx" in formats:
        raise ConfigError("--fallback-precision dynamic is for the TFLite: the int8 ONNX keeps the parts a budget "
                          "needs in float32 (give --formats tflite, or --fallback-precision auto or float32)")
    if config.quantize == "int8":
        recipe_for("int8", config)  # refuses an unknown method or an out-of-range parameter
    if config.statistics is not None:
        from .quantize.statistics import check_statistics_path

        check_statistics_path(config.statistics)
    if config.calibration_size < 1:
        raise ConfigError(f"--calibration-size must be at least 1. Received: {config.calibration_size}")
    if problem := threads_problem(config.threads):
        raise ConfigError(problem)
    if config.bench_runs < 0:
        raise ConfigError(f"--bench-runs must be 0 or more. Received: {config.bench_runs}")
    if config.eval_size is not None and config.eval_size < 1:
        raise ConfigError(f"--eval-size must be at least 1. Received: {config.eval_size}")
    if not str(config.output).strip():
        raise ConfigError("--output must name a directory (e.g. edge-resnet-output)")
    config.device_targets()  # a bad --device is refused before any work
    if config.accuracy_control and not gated:
        raise ConfigError("--accuracy-control meets --max-accuracy-drop or --min-agreement with float32 parts: give "
                          "one of them")
    budget = " and ".join(flag for flag, asked in (("--min-sqnr", config.min_sqnr is not None),
                                                   ("--min-sqnr-gain", config.min_sqnr_gain is not None),
                                                   ("--accuracy-control", config.accuracy_control)) if asked)
    if config.min_sqnr is not None or config.min_sqnr_gain is not None:
        from .quantize.mixed import check_budget

        check_budget(config.min_sqnr, config.min_sqnr_gain)
    if budget and config.target:
        raise ConfigError(f"--target compiles a fully integer model for the NPU and {budget} may keep parts in "
                          "float32 (they would fall back to the CPU there): give one or the other")
    if budget and config.quantize != "int8":
        raise ConfigError(f"{budget}: float32 parts are kept in the int8 artifacts only, so it needs --quantize int8")
    if config.target:
        from .quantize.ethos_u import vela_version

        if config.quantize != "int8" or "tflite" not in config.resolved_formats():
            raise ConfigError("--target compiles the int8 TFLite artifact for an NPU: it needs --quantize int8 "
                              "and tflite in --formats")
        vela_version()  # installed, or one line saying how
    if weights not in (DEMO, RANDOM) and config.calibration is None and config.eval is None:
        raise ConfigError(
            "give --calibration PATH (images like the ones the model will see) and, optionally, --eval PATH; "
            "the embedded digits fit only the demo model"
        )
    if config.quantize == "int8" and weights not in (DEMO, RANDOM) and config.calibration is None:
        raise ConfigError("--quantize int8 needs --calibration PATH (an image folder, .npy or .npz)")


def _check_demo_options(config):
    from .model import demo

    if config.model != "resnet50":
        raise ConfigError(f"the demo weights are for resnet50. Received: --model {config.model}")
    if config.input_size not in (None, demo.INPUT_SIZE) or config.classes not in (None, demo.CLASSES):
        raise ConfigError(
            f"the demo model takes {demo.INPUT_SIZE}x{demo.INPUT_SIZE} images and has {demo.CLASSES} classes; "
            "leave out --input-size and --classes, or give other --weights"
        )
    has_custom_values = any(value is not None for value in (config.mean, config.std, config.scale))
    if config.preprocessing not in (None, "caffe") or has_custom_values:
        raise ConfigError(
            "the demo model was trained on caffe-preprocessed images; leave out --preprocessing, --mean, --std "
            "and --scale"
        )


class StageClock:
    """Times each stage and prints one progress line as it starts and ends;
    records the process's peak memory so far after each."""

    def __init__(self, total, log):
        self.total, self.log, self.done = total, log, []

    @contextmanager
    def __call__(self, name):
        self.log(f"[{len(self.done) + 1}/{self.total}] {name} ...")
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.done.append({"stage": name, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1)})
        self.log(f"      {name}: {seconds:.1f} s")


def load_source(config):
    """(Keras model, description of what was loaded)."""
    from .model.resnet import load_model

    weights = config.resolved_weights()
    if config.is_keras_file:
        model = load_model(config.model)
        return model, {"description": f"Keras model file {config.model}", "weights": config.model,
                       "weights_sha256": file_sha256(config.model)}
    if weights == DEMO:
        from .model import demo

        path = demo.weights_path()
        return demo.build_demo_model(), {"description": demo.DESCRIPTION, "weights": str(path),
                                         "weights_sha256": file_sha256(path)}
    size = config.input_size or 224
    model = load_model(config.model, input_shape=(size, size, 3), classes=config.resolved_classes(),
                       weights=None if weights == RANDOM else weights, seed=config.seed)
    if weights == RANDOM:
        description = (f"{config.model} with random weights (seed {config.seed}): accuracy numbers are "
                       "meaningless, the run shows the pipeline and its speed")
        return model, {"description": description, "weights": RANDOM, "weights_sha256": None}
    if weights == IMAGENET:
        from .model.weights import imagenet_weights_path

        path = imagenet_weights_path(int(config.model.removeprefix("resnet")), True)
        return model, {"description": f"{config.model} with the published ImageNet weights",
                       "weights": str(path), "weights_sha256": file_sha256(path)}
    return model, {"description": f"{config.model} with weights from {weights}", "weights": weights,
                   "weights_sha256": file_sha256(weights)}


def data_sets(config, model):
    """(calibration set or None, evaluation set, description of where they came from)."""
    from .data.images import calibration_set, check_disjoint, check_image_headers, holdout_split, image_set

    height, width = model.input_shape[1:3]
    preprocessing = config.preprocessing_at(height, width)
    source, origin = config.calibration, None
    if config.uses_embedded_data():
        from .model import demo
        from .calibration import digits_folder

        source = str(digits_folder())
        origin = demo.DATA_DESCRIPTION if config.resolved_weights() == DEMO else f"embedded digits ({source})"
    needs_calibration = config.quantize == "int8"
    if config.eval is None:
        if needs_calibration:
            calibration, evaluation = holdout_split(source, preprocessing, config.calibration_size, config.seed,
                                                    eval_size=config.eval_size)
            split = f"a held-out split of the calibration source ({len(evaluation)} images not calibrated on)"
        else:
            calibration = None
            evaluation = image_set(source, preprocessing, config.eval_size, config.seed, check_readable=False)
            split = "the --calibration source (no calibration needed)"
    else:
        calibration = (calibration_set(source, preprocessing, config.calibration_size, config.seed)
                       if needs_calibration else None)
        evaluation = image_set(config.eval, preprocessing, config.eval_size, config.seed, check_readable=False)
        if calibration is not None:
            check_disjoint(calibration, evaluation)
        split = "--eval"
    check_image_headers(evaluation, "evaluation")
    return calibration, evaluation, {"origin": origin, "evaluation_from": split}


def check_labels_fit(evaluation, class_names, classes):
    """Fail now, not after the conversions, when the evaluation labels
    cannot be mapped to the model's outputs."""
    from .data.labels import output_indices

    output_indices(evaluation, classes, class_names)


def artifact_plan(base, config):
    """[(file name, format, recipe mode)] in the order they are made and shown."""
    plan = []
    for artifact_format in config.resolved_formats():
        suffix = artifact_format
        plan.append((f"{base}_float32.{suffix}", artifact_format, "none"))
        if config.quantize != "none":
            plan.append((f"{base}_{config.quantize}.{suffix}", artifact_format, config.quantize))
    return plan


def base_name(config, model):
    name = Path(config.model).stem if config.is_keras_file else model.name
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "model"


def recipe_for(mode, config):
    """The recipe of one artifact."""
    from .quantize.recipe import QuantizationRecipe

    int8_options = ("input_type", "output_type", "calibration_method", "percentile", "extrapolation", "tail_room",
                    "calibration_score", "min_sqnr", "min_sqnr_gain", "fallback_precision", "bias_correction")
    if config.accuracy_control:
        int8_options += ("max_accuracy_drop", "min_agreement")
    overrides = {key: getattr(config, key) for key in int8_options
                 if getattr(config, key) is not None and mode == "int8"}
    return QuantizationRecipe.for_mode(mode, **overrides)


@dataclass
class Made:
    """What the artifact stages made that later stages reuse."""

    paths: list
    float_model: bytes = None  # the float32 .tflite of the folded model
    statistics: object = None  # ActivationStatistics, for every int8 artifact
    float_onnx_path: Path = None
    full_int8: dict = field(default_factory=dict)  # artifact name -> full int8 with its ranges (an SQNR budget's)


def activation_statistics(float_model, config, calibration, staging, log):
    """Collected once (or read from --statistics) and saved beside the artifacts."""
    from .quantize.int8_tflite import statistics_for
    from .quantize.statistics import ActivationStatistics

    given = ActivationStatistics.load(config.statistics) if config.statistics else None
    statistics = statistics_for(float_model, calibration, given)
    statistics.save(staging / STATISTICS_FILE)
    method = recipe_for("int8", config).range_method()
    if method.name == "auto":
        from .quantize.selection import check_same_calibration

        check_same_calibration(calibration, statistics)
    folds = f" in {len(statistics.folds)} folds" if statistics.folds else ""
    log(f"      {len(statistics.tensors)} activation tensors, {statistics.samples} samples{folds}"
        + (f" (from {config.statistics})" if given else "") + f"; ranges: {method.describe()}")
    return statistics


def write_artifacts(folded, config, calibration, staging, clock, base, beside):
    """Write every artifact into `staging`; return what later stages reuse.
    An artifact searched for an SQNR budget gets full int8 with the same
    ranges in `beside` (a folder never published), for the evaluation images."""
    from .quantize.onnx_export import to_onnx
    from .quantize.tflite import check_calibration_fits, float_tflite, to_tflite
    from .quantize.xnnpack_rewrites import for_int8_xnnpack

    made = Made(paths=[])
    for name, artifact_format, mode in artifact_plan(base, config):
        recipe = recipe_for(mode, config)
        full_int8 = Path(beside) / name if beside is not None and mode == "int8" else None
        if mode == "int8" and made.statistics is None:
            with clock("activation statistics (once, for every int8 artifact)"):
                if made.float_model is None:
                    made.float_model = float_tflite(folded)
                if calibration is not None:
                    check_calibration_fits(folded, calibration)
                made.statistics = activation_statistics(made.float_model, config, calibration, staging, clock.log)
        with clock(f"write {name}"):
            if artifact_format == "tflite":
                path = to_tflite(folded, recipe, calibration, output=staging / name, statistics=made.statistics,
                                 float_model=made.float_model, log=clock.log, full_int8_output=full_int8)
                if mode == "none":
                    made.float_model = for_int8_xnnpack(path.read_bytes())  # float_tflite(folded)
            else:
                path = to_onnx(folded, recipe, calibration, output=staging / name, statistics=made.statistics,
                               float_model=made.float_model, float_onnx_path=made.float_onnx_path, log=clock.log,
                               full_int8_output=full_int8)
                if mode == "none":
                    made.float_onnx_path = path
        made.paths.append(path)
        if full_int8 is not None and full_int8.is_file():
            made.full_int8[name] = full_int8
    return made


def asks_sqnr_budget(config):
    """Whether the int8 artifacts are searched for an SQNR budget (--min-sqnr, --min-sqnr-gain)."""
    return config.quantize == "int8" and (config.min_sqnr is not None or config.min_sqnr_gain is not None)


def full_int8_folder(config):
    """A temporary folder for the full-int8 twins of SQNR-budget artifacts, made only when a budget asks for one."""
    from contextlib import nullcontext

    return tempfile.TemporaryDirectory(prefix="edge-resnet-full-int8-") if asks_sqnr_budget(config) else nullcontext()


def budgets_on_evaluation(mixed, parity, full_int8, reference, evaluation, class_names):
    """{artifact name: what its SQNR budget came to on the evaluation images}
    (mixed.evaluation_record): `full_int8` (name -> full int8 with the
    artifact's ranges) run against the same golden outputs as the artifact's
    parity row."""
    from .check.parity import compare
    from .quantize.mixed import evaluation_record
    from .quiet import native_output_silenced

    with native_output_silenced():
        twins = compare(reference, list(full_int8.values()), evaluation, class_names).to_dict()["candidates"]
    searched = {candidate["name"]: candidate["metrics"] for candidate in parity["candidates"]}
    return {name: evaluation_record(mixed[name], twin["metrics"], searched[name])
            for name, twin in zip(full_int8, twins)}


def latencies(paths, sample, config):
    from .device.bench import benchmark

    warmup = min(5, config.bench_runs)
    return [benchmark(path, threads=config.threads, warmup=warmup, runs=config.bench_runs, sample=sample[None],
                      reset_peak=False).to_dict()
            for path in paths]


def board_timings(device_runs):
    """The latency rows of the first board, as latencies() gives them here."""
    board = device_runs.devices[0]
    runtimes = {runner.path.name: runner.runtime for runner in device_runs.runners if runner.device == board["label"]}
    return [{"model": name, "latency_ms": {"p50": ms}, "runtime": runtimes[name],
             "runtime_version": board["runtimes"].get(runtimes[name], "?"), "accelerator": f"on {board['label']}"}
            for name, ms in board["p50_ms"].items()]


def range_lines(rows):
    """Per int8 artifact row: the line on its activation ranges, and the
    notes on what its output's own int8 grid does to top-1 where it changes
    any, on the calibration images and on the evaluation images."""
    from .check.report import evaluation_grid_text
    from .quantize.int8_tflite import output_grid_text

    lines = []
    for row in rows:
        if row.get("ranges"):
            lines.append(f"  {row['artifact']}: {row['ranges']}")
        if note := output_grid_text(row.get("output_grid")):
            lines.append(f"  {row['artifact']}: {note}")
        if note := evaluation_grid_text(row.get("output_grid_top1_changes"), row.get("evaluation_images"),
                                        row["top1_agreement"], advice=False, grid_type=row.get("output_grid_type")):
            lines.append(f"  {row['artifact']}: on the evaluation images, {note}")
    return lines


def ranges_text(record):
    """What an int8 artifact's record says of its activation ranges and biases, or None."""
    from .quantize.bias_correction import describe_correction
    from .quantize.selection import describe_selection

    if not record.get("activation_ranges"):
        return None
    text = describe_selection(record["activation_ranges"])
    biases = describe_correction(record.get("bias_correction"))
    return f"{text}; {biases}" if biases else text


def artifact_rows(paths, parity, timings):
    """One summary row per artifact: what it is, size, accuracy, speed."""
    import json

    by_name = {candidate["name"]: candidate for candidate in parity["candidates"]}
    latency_by_name = {Path(timing["model"]).name: timing for timing in timings}
    rows = []
    for path in paths:
        record = json.loads(Path(str(path) + ".json").read_text())
        candidate = by_name[path.name]
        timing = latency_by_name.get(path.name)
        rows.append({
            "artifact": path.name,
            "format": record["format"],
            "mode": record["recipe"]["mode"],
            "quantization": record["quantization"],
            "size_bytes": path.stat().st_size,
            "top1": candidate["metrics"]["top1"],
            "top1_drop_points": candidate["top1_drop_points"],
            "top1_agreement": candidate["metrics"]["top1_agreement"],
            "sqnr_db": candidate["metrics"]["sqnr_db"],
            "sqnr_standard_error_db": candidate["metrics"].get("sqnr_standard_error_db"),
            "non_finite_images": candidate["metrics"]["non_finite_images"],
            "samples": candidate["metrics"]["samples"],
            "p50_ms": timing["latency_ms"]["p50"] if timing else None,
            "runtime": f"{timing['runtime']} {timing['runtime_version']}, {timing['accelerator']}" if timing else None,
            "ranges": ranges_text(record),
            "range_selection": (record.get("activation_ranges") or {}).get("selection"),
            "output_grid": record.get("output_grid"),
            "output_grid_top1_changes": candidate["metrics"].get("output_grid_top1_changes"),
            "output_grid_type": candidate["metrics"].get("output_grid_type"),
            "evaluation_images": candidate["metrics"]["samples"],
        })
    for row in rows:  # speed-up against the float32 artifact of the same format
        baseline = next((r for r in rows if r["format"] == row["format"] and r["mode"] == "none"), None)
        row["speedup_vs_float32"] = (baseline["p50_ms"] / row["p50_ms"]
                                     if baseline and baseline["p50_ms"] and row["p50_ms"] else None)
    return rows


def previous_run_files(output):
    """The files an earlier run wrote into `output`, from its report: a
    regular file (a link there is no report of a run into this folder) that
    edge-resnet wrote (another tool's report.json lists nothing of ours).
    Plain names of a kind a run never writes are left out with a warning."""
    import json
    import warnings

    from .check.report import TOOL
    from .files import UnsafeNameWarning, is_plain_name

    report = Path(output) / f"{REPORT_STEM}.json"
    if report.is_symlink():
        return []
    try:
        record = json.loads(report.read_text())
    except (OSError, ValueError):
        return []
    tool = record.get("tool") if isinstance(record, dict) else None
    if not isinstance(tool, dict) or tool.get("name") != TOOL:
        warnings.warn(f"{report} is not an edge-resnet report: nothing it lists is removed", UnsafeNameWarning,
                      stacklevel=2)
        return []
    files = record.get("files", [])
    if not isinstance(files, list):
        return []
    foreign = [name for name in files if is_plain_name(name) and not name.endswith(RUN_FILE_ENDINGS)]
    if foreign:
        warnings.warn(f"the earlier run's report lists {len(foreign)} files of kinds edge-resnet never writes; left "
                      f"alone: {', '.join(map(repr, foreign[:5]))}", UnsafeNameWarning, stacklevel=2)
    return [name for name in files if name not in foreign]


def published_names(config, base, folded_name):
    """Every file name a run publishes into the output folder."""
    from .check.golden import FILES as GOLDEN_FILES

    artifacts = [name for name, _, _ in artifact_plan(base, config)]
    compiled = [name for target in dict.fromkeys(config.target or ())
                for name in output_names(npu_source(base), target).values()]
    return sorted(artifacts + [f"{name}.json" for name in artifacts] + [folded_name] + list(REPORT_FILES) + compiled
                  + list(GOLDEN_FILES) + ([STATISTICS_FILE] if config.quantize == "int8" else []))


def mixed_precision_records(paths):
    """{artifact name: its float32-parts search} from the recipe JSONs."""
    from .quantize.recipe import read_record

    records = {path.name: (read_record(path) or {}).get("mixed_precision") for path in paths}
    return {name: record for name, record in records.items() if record}


def npu_source(base):
    """The artifact --target compiles: the int8 TFLite."""
    return f"{base}_int8.tflite"


def compile_for_targets(staging, base, config, clock, timings):
    """The int8 TFLite compiled by Vela for each --target: their records, with
    the CPU latency measured here beside Vela's estimate."""
    from .quantize.ethos_u import compile_into

    measured = {Path(timing["model"]).name: timing["latency_ms"]["p50"] for timing in timings}
    records = []
    for target in dict.fromkeys(config.target):
        with clock(f"compile for {target} (Vela)"):
            record = compile_into(staging / npu_source(base), target, staging)
            records.append({**record, "cpu_p50_ms": measured.get(npu_source(base))})
            clock.log(f"      {target}: {record['npu_operators']}/{record['npu_operators'] + record['cpu_operators']}"
                      f" operators on the NPU, Vela's estimate {record['estimated_inference_ms']:.2f} ms")
    return records


def on_boards(boards, reference, paths, quantized, evaluation, class_names, config):
    """The parity and latency stages again, on each board over SSH: the
    report's "on_device" section (its gate failures name the board)."""
    from .check.on_device import run_on_boards
    from .check.parity import parity_report
    from .quiet import native_output_silenced

    with native_output_silenced():
        device_runs = run_on_boards(boards, paths, evaluation, config.bench_runs, config.device_cache_clear)
        return device_runs, parity_report(reference, paths, evaluation, class_names=class_names,
                                          max_accuracy_drop=config.max_accuracy_drop,
                                          min_agreement=config.min_agreement, gated=quantized,
                                          latency_runs=config.bench_runs, device_runs=device_runs)


def stage_count(config):
    statistics = config.quantize == "int8"
    writes = len(artifact_plan("m", config))
    return (6 + statistics + writes + (config.bench_runs > 0 and not config.device) + bool(config.device)
            + len(set(config.target or ())) + asks_sqnr_budget(config))


def read_data(config, model, log):
    """(calibration set held in memory or None, evaluation set, where the data
    came from, class names or None), all checked before any conversion."""
    from .data.labels import read_labels_file, with_class_names

    calibration, evaluation, origin = data_sets(config, model)
    if calibration is not None:
        from .quantize.selection import check_budget_images

        calibration = calibration.cached()
        log(f"      calibration: {len(calibration)} images from {calibration.source}")
        check_budget_images(recipe_for("int8", config), calibration)
    log(f"      evaluation: {len(evaluation)} images from {evaluation.source}, {origin['evaluation_from']}")
    if origin["origin"]:
        log(f"      data: {origin['origin']}")
    if config.max_accuracy_drop is not None and evaluation.labels is None:
        raise ConfigError("--max-accuracy-drop needs labelled evaluation data (class folders, or .npz with y)")
    classes = int(model.output_shape[-1])
    class_names = read_labels_file(config.labels, classes) if config.labels else None
    check_labels_fit(evaluation, class_names, classes)
    calibration = with_class_names(calibration, class_names)  # --labels maps its folders too
    if calibration is not None and config.accuracy_control and config.max_accuracy_drop is not None:
        from .quantize.mixed import calibration_labels

        calibration_labels(calibration, classes)  # the search's labels, checked before any conversion
    return calibration, evaluation, origin, class_names


def fold_and_save(model, probe_set, path, log):
    """The BatchNorm-folded model, checked on real images and saved at `path`."""
    from .model.fold import fold_batchnorm

    probe = next(iter(probe_set.with_batch_size(FOLD_PROBE_IMAGES)))
    folded, fold_report = fold_batchnorm(model, probe=probe)
    folded.save(path)
    log(f"      {fold_report.format().splitlines()[0]}; max |diff| on real images {fold_report.probe_max_abs_diff:.2g}")
    return folded, fold_report


def golden_outputs(model, evaluation, class_names, source, staging, folded_path):
    """The float model's outputs on the evaluation set, as golden files in
    the output folder: parity reads them here, and again on a device."""
    from .check.golden import GoldenReference, write_golden_files
    from .quiet import native_output_silenced, progress_bar

    record = {"file": Path(source["weights"]).name if source["weights_sha256"] else None,
              "sha256": source["weights_sha256"], "weights": source["weights"],
              "folded_file": folded_path.name, "folded_sha256": file_sha256(folded_path)}
    with native_output_silenced() as stderr:
        write_golden_files(model, evaluation, staging, record, class_names, progress=progress_bar("reference", stderr))
    return GoldenReference(staging)


def parity_check(reference, folded, paths, quantized, evaluation, class_names, config, made):
    """The parity section of the report: every artifact against the float
    model's golden outputs; per-layer error and gates for the quantized ones."""
    from .check.parity import parity_report
    from .quiet import native_output_silenced, progress_bar

    with native_output_silenced() as stderr:  # the runtimes' own start-up lines
        return parity_report(reference, paths, evaluation, class_names=class_names,
                             max_accuracy_drop=config.max_accuracy_drop, min_agreement=config.min_agreement,
                             gated=quantized, per_layer=quantized if config.per_layer else (), layer_model=folded,
                             float_model=made.float_model, float_onnx_path=made.float_onnx_path,
                             progress=progress_bar("parity", stderr))


def convert(config, log=print):
    """The whole job: fold, quantize, export TFLite and ONNX, check parity, time, report.

    Load or build the model, fold BatchNorm, calibrate, write TFLite and ONNX
    (float32 and quantized) with their recipe JSONs and the folded .keras,
    check accuracy parity against the float model on held-out images, time
    every artifact, and write report.json/.md/.html. The defaults convert the
    offline demo (a ResNet-50 trained on real handwritten digits, shipped
    with edge-resnet), calibrated and evaluated on disjoint parts of the
    embedded digits. Returns the report; gate failures are in
    report["parity"]["gates"]["failures"] (the command exits 1 on them,
    after the report is written).
    """
    from .files import check_publishable, publish, relocated, staged_output
    from .quiet import native_output_silenced
    from .quantize.recipe import record_source
    from .check.report import format_summary_table, tool_record, write_convert_reports

    started = time.perf_counter()
    with staged_output(config.output, config.force) as staging, \
            full_int8_folder(config) as beside:
        clock = StageClock(stage_count(config), log)
        with clock("load model"):
            model, source = load_source(config)
            check_image_model(model)
            if config.quantize == "int8" and "onnx" in config.resolved_formats():
                from .quantize.onnx_export import check_no_nested_model

                check_no_nested_model(model, "give --formats tflite")
            log(f"      model: {source['description']}")
            log(f"      weights: {source['weights']}"
                + (f" (sha256 {source['weights_sha256'][:16]})" if source["weights_sha256"] else ""))
        with clock("read data"):
            calibration, evaluation, data_origin, class_names = read_data(config, model, log)
        with clock("fold BatchNorm"):
            base = base_name(config, model)
            folded_path = staging / f"{base}_folded.keras"
            if Path(config.output).is_dir():  # before the work: publishing is all or nothing
                check_publishable(Path(config.output).resolve(), published_names(config, base, folded_path.name))
            folded, fold_report = fold_and_save(model, calibration if calibration is not None else evaluation,
                                                folded_path, log)
        made = write_artifacts(folded, config, calibration, staging, clock, base, beside)
        paths = made.paths
        quantized_names = {name for name, _, mode in artifact_plan(base, config) if mode != "none"}
        quantized = [path for path in paths if path.name in quantized_names]
        lineage = {"file": Path(source["weights"]).name if source["weights_sha256"] else None,
                   "sha256": source["weights_sha256"], "folded_file": folded_path.name,
                   "folded_sha256": file_sha256(folded_path)}
        for path in paths:
            record_source(path, lineage)
        with clock("float reference outputs (golden.npy)"):
            reference = golden_outputs(model, evaluation, class_names, source, staging, folded_path)
        with clock("accuracy parity" + (" and per-layer error" if config.per_layer and quantized else "")):
            parity = parity_check(reference, folded, paths, quantized, evaluation, class_names, config, made)
        timings, on_device, boards = [], None, config.device_targets()
        if config.bench_runs and not boards:
            with clock("latency"), native_output_silenced():
                timings = latencies(paths, next(evaluation.samples()), config)
        if boards:
            with clock(f"parity and latency on {', '.join(board.label for board in boards)} over SSH"):
                device_runs, on_device = on_boards(boards, reference, paths, quantized, evaluation, class_names,
                                                   config)
                timings = board_timings(device_runs) if config.bench_runs else []
                parity["gates"]["failures"] += on_device["gates"]["failures"]
        mixed = mixed_precision_records(paths)
        for name, record in mixed.items():
            if not record["met"]:
                from .quantize.mixed import unmet_line

                parity["gates"]["failures"].append(unmet_line(record, name))
        budgets = {}
        if made.full_int8:
            with clock("the budgets on the evaluation images (full int8 beside)"):
                budgets = budgets_on_evaluation(mixed, parity, made.full_int8, reference, evaluation, class_names)
        npu = compile_for_targets(staging, base, config, clock, timings) if config.target else []
        with clock("report"):
            report = {
                "tool": tool_record(),
                "config": dataclasses.asdict(config),
                "model": {**source, "name": model.name, "input_shape": list(model.input_shape[1:]),
                          "classes": int(model.output_shape[-1]), "parameters": int(model.count_params()),
                          "folded_file": folded_path.name},
                "data": {"calibration": calibration.describe() if calibration is not None else None,
                         "evaluation": evaluation.describe(), **data_origin},
                "fold": fold_report.to_dict(),
                "artifacts": artifact_rows(paths, parity, timings),
                "parity": parity,
                **({"on_device": on_device} if on_device else {}),
                **({"npu": npu} if npu else {}),
                **({"mixed_precision": mixed} if mixed else {}),
                **({"budgets_on_evaluation": budgets} if budgets else {}),
                "latency": timings,
                "stages": clock.done,
                "files": published_names(config, base, folded_path.name),
                "total_seconds": round(time.perf_counter() - started, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
            report = relocated(report, staging, Path(config.output).resolve())
            write_convert_reports(report, staging, REPORT_STEM)
        publish(staging, config.output, replaced=previous_run_files(config.output), last=REPORT_FILES)
    log("")
    log(format_summary_table(report))
    if made.statistics is not None:
        log(f"int8 activation ranges, from one statistics pass over {made.statistics.samples} calibration images "
            f"({STATISTICS_FILE}):")
        for line in range_lines(report["artifacts"]):
            log(line)
    if report.get("mixed_precision"):
        from .quantize.mixed import unpinned_level_text

        for name, record in report["mixed_precision"].items():
            if record and (note := unpinned_level_text(record)):
                log(f"note on {name}'s budget: {note}")
    from .quantize.mixed import evaluation_text

    for name, row in report.get("budgets_on_evaluation", {}).items():
        log(f"{name}'s budget {evaluation_text(row)}")
    output = str(config.output).rstrip("/")
    log(f"wrote {len(report['files'])} files to {output}/ in {report['total_seconds']:.0f} s "
        f"(peak memory {report['peak_rss_mb']:.0f} MB): report.md, report.html, report.json")
    quantized_paths = [Path(output) / name for name in sorted(quantized_names)]
    if quantized_paths:
        log(f"parity on a device, without TensorFlow: copy {output}/ there and run edge-resnet compare --reference "
            f"{output}/ {' '.join(map(str, quantized_paths))} (add --data DIR if the images moved)")
    return report
