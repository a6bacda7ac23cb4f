"""`edge-resnet compare` and `edge-resnet reference` as calls: gather the
reference, the images and the class names the request names, then run."""

import os
from dataclasses import KW_ONLY, dataclass, field

from ..data.images import PreprocessedRequest, PreprocessingRequest, SeedRequest
from ..data.labels import LabelsRequest
from ..device.bench import DEFAULT_BATCH, DEFAULT_RUNS, DEFAULT_WARMUP, ThreadsRequest, check_bench_settings
from ..device.remote import DeviceRequest
from ..errors import ConfigError
from ..files import ForceRequest
from ..model.source import MODEL_HELP, ModelRequest
from ..options import option
from .parity import REFERENCE_BATCH

LATENCY_RUNS = 20


@dataclass(frozen=True, kw_only=True)
class EvaluationRequest(LabelsRequest):
    eval_size: int = option("--eval-size", default=None, type=int, metavar="N",
                            help="evaluate a seeded, class-stratified subset of N images")


@dataclass(frozen=True, kw_only=True)
class GateRequest:
    """Parity gates, and what is measured beside them."""

    max_accuracy_drop: float = option("--max-accuracy-drop", default=None, type=float, metavar="POINTS",
                                      help="gate: fail (exit 1) when an artifact loses more top-1 points")
    min_agreement: float = option("--min-agreement", default=None, type=float, metavar="FRACTION",
                                  help="gate: fail (exit 1) when an artifact agrees with the float top-1 less often")
    bench_runs: int = option("--bench-runs", default=LATENCY_RUNS, type=int, metavar="N",
                             help="timed runs per artifact at batch 1, 0 skips")
    per_layer: bool = option("--no-per-layer", default=True, action="store_false",
                             help="skip the per-layer error analysis")


@dataclass(frozen=True)
class CompareRequest(ModelRequest, SeedRequest, EvaluationRequest, GateRequest, PreprocessingRequest,
                     PreprocessedRequest, DeviceRequest):
    """Artifacts to check against a float model or golden outputs."""

    reference: str = option("--reference", metavar="MODEL|GOLDEN",
                            help="the float model (a .keras file or a builder name), or a golden folder from "
                                 "edge-resnet reference")
    artifacts: tuple = option(nargs="+", metavar="ARTIFACT", help=".tflite or .onnx files")
    _: KW_ONLY
    data: str = option("--data", default=None, metavar="PATH",
                       help="class folders, a flat folder (agreement only), or .npz with x (and y); with golden "
                            "outputs, default: where their images were")
    report: str = option("--report", default=None, metavar="DIR", help="write parity.json, parity.md and parity.html here")
    batch_size: int = option("--batch-size", default=REFERENCE_BATCH, type=int, help="reference batch size")
    # of --eval-size's subset and of random weights: 0 when left out; refused with golden outputs
    seed: int = field(default=None, kw_only=True)

    @property
    def golden(self):
        return is_golden(self.reference)


def is_golden(reference):
    """A folder, or anything that does not name a model (so a mistyped golden
    folder is named as one)."""
    from ..model.source import names_a_model

    return os.path.isdir(reference) or not names_a_model(reference)


def compare_artifacts(request, log=print, progress=None):
    """Accuracy parity of TFLite/ONNX artifacts against the float model or its golden outputs.

    The reference and every artifact run on the same images: top-1/top-5
    accuracy and their drop, top-1 agreement, top-5 overlap, cosine
    similarity, SQNR and max error of the logits, and each artifact's
    latency. Gates make CI fail (exit 1) when an artifact strays too far.
    With --device ssh://HOST the artifacts run and are timed on that board
    (each board given, in parallel); the metrics are computed here.
    Returns the report (gates in report["gates"]), written where asked.
    """
    import contextlib

    from ..files import probed_folder
    from .parity import check_gates
    from .report import write_reports

    check_gates(request.max_accuracy_drop, request.min_agreement)
    if request.bench_runs < 0:
        raise ConfigError(f"--bench-runs must be 0 or more. Received: {request.bench_runs}")
    if request.report:
        from ..files import check_writable
        from .report import check_report_folder

        check_writable(request.report, "directory")
        check_report_folder(request.report)
    with contextlib.ExitStack() as held:
        if request.report:  # a folder it cannot write is found before the work
            held.enter_context(probed_folder(request.report, flag="--report"))
        report = _compared(request, log, progress)
        if request.report:
            paths = write_reports(report, request.report)
            log(f"wrote {', '.join(str(p) for p in paths)}")
    return report


def _compared(request, log, progress):
    """compare_artifacts' report, written nowhere."""
    from .parity import parity_report
    from .report import tool_record

    check_artifact_paths(request.artifacts, "compare")
    boards = request.device_targets()
    descriptions = artifact_descriptions(request.artifacts)  # an unreadable recipe JSON stops here, before the work
    if request.golden:
        reference, data, class_names = _golden_inputs(request)
        per_layer = ()
    else:
        reference, data, class_names = _keras_inputs(request, log)
        per_layer = request.artifacts if request.per_layer else ()
    log(f"evaluating {len(data)} images from {data.source}")
    device_runs = None
    if boards:
        from .on_device import run_on_boards

        log(f"running {len(request.artifacts)} artifacts on {', '.join(board.label for board in boards)} over SSH")
        device_runs = run_on_boards(boards, request.artifacts, data, request.bench_runs, request.device_cache_clear)
        per_layer = ()  # it runs each layer's float twin here: not the board's numbers
        log_devices(device_runs.devices, log)
    report = parity_report(reference, request.artifacts, data, class_names=class_names, batch_size=request.batch_size,
                           max_accuracy_drop=request.max_accuracy_drop, min_agreement=request.min_agreement,
                           per_layer=per_layer, latency_runs=request.bench_runs, progress=progress,
                           device_runs=device_runs)
    report["quantization"] = descriptions
    report["tool"] = tool_record()
    return report


def check_artifact_paths(artifacts, command, noun="artifact"):
    """Refuse, before any work, an artifact that is missing, a folder, or not a .tflite or .onnx file."""
    for artifact in artifacts:
        if os.path.isdir(artifact):
            raise ConfigError(f"{artifact} is a folder; {command} takes .tflite and .onnx files")
        if not os.path.isfile(artifact):
            raise ConfigError(f"{noun} not found: {artifact}")
        if os.path.splitext(artifact)[1] not in (".tflite", ".onnx"):
            raise ConfigError(f"{artifact} is not a .tflite or .onnx file; {command} takes .tflite and .onnx files")


def log_devices(devices, log):
    """A line per board: what it is, what was sent to it, what its cache holds."""
    from ..device.agent import describe_device

    for device in devices:
        cache = device["cache"]
        log(f"on {describe_device(device)}: sent {device['uploaded_bytes'] / 1e6:.1f} MB; its cache holds "
            f"{cache['files']} files, {cache['bytes'] / 1e6:.1f} MB ({cache['folder']})")


def artifact_descriptions(artifacts):
    """{artifact name: its recipe JSON's description} where the JSON exists."""
    from ..quantize.recipe import verified_record

    records = {os.path.basename(artifact): verified_record(artifact) for artifact in artifacts}
    return {name: record.get("quantization") for name, record in records.items() if record is not None}


def recorded_preprocessing(artifacts, height, width):
    """[(artifact, the Preprocessing its recipe JSON says its calibration
    images were made with, at height x width)] for the artifacts calibrated
    on images (int8, not from arrays that were model input already)."""
    from ..data.images import recorded_preprocessing_of
    from ..quantize.recipe import verified_record

    recorded = [(artifact, recorded_preprocessing_of((verified_record(artifact) or {}).get("calibration"), height,
                                                     width)) for artifact in artifacts]
    return [(artifact, preprocessing) for artifact, preprocessing in recorded if preprocessing is not None]


def compared_preprocessing(request, height, width, log):
    """How compare makes model input of the images: as asked, else as the
    artifacts were calibrated (their recipes say), else the default. An
    int8 artifact fed otherwise than its calibration images were scores
    its ranges, not its quantization, so asking for another is refused."""
    from ..data.images import preprocessing_text

    recorded = [] if request.preprocessed else recorded_preprocessing(request.artifacts, height, width)
    if request.preprocessing_given or not recorded:
        asked = request.preprocessing_at(height, width)
        check_calibrated_as(request.artifacts if recorded else (), asked, "compare was asked for",
                            "leave out the preprocessing options to take its recipe's, or give those")
        return asked
    first = recorded[0][1]
    if any(preprocessing != first for _, preprocessing in recorded):
        kinds = ", ".join(f"{os.path.basename(artifact)}: {preprocessing_text(preprocessing)}"
                          for artifact, preprocessing in recorded)
        raise ConfigError(f"the artifacts were calibrated on images preprocessed differently ({kinds}): compare each "
                          "with its own preprocessing, in separate runs")
    log(f"preprocessing: {preprocessing_text(first)}, as the artifacts' recipe JSONs record their calibration")
    return first


def _keras_inputs(request, log=print):
    from ..data.images import image_set
    from ..model.source import check_image_model, check_runs_here, load_named_model
    from ..data.labels import read_labels_file

    if request.data is None:
        raise ConfigError("compare against a Keras model needs --data (images to run both on); "
                          "or give golden outputs as --reference")
    reference = load_named_model(request.reference, request.input_size, request.classes, request.weights,
                                 request.seed or 0)
    check_image_model(reference)
    check_runs_here(reference)
    data = image_set(request.data, compared_preprocessing(request, *reference.input_shape[1:3], log),
                     size=request.eval_size, seed=request.seed or 0, preprocessed=request.preprocessed,
                     check_readable=False)
    classes = int(reference.output_shape[-1])
    return reference, data, read_labels_file(request.labels, classes) if request.labels else None


def _golden_inputs(request):
    """The golden reference, its data read again and checked, its class names."""
    from .golden import GoldenReference, check_lineage, refuse_a_shard

    reference = GoldenReference(request.reference)
    refuse_a_shard(reference.manifest, reference.folder)
    fixed = {"--eval-size": request.eval_size, "--labels": request.labels, "--seed": request.seed,
             "--input-size": request.input_size, "--classes": request.classes, "--weights": request.weights}
    given = [flag for flag, value in fixed.items() if value is not None]
    if given:
        raise ConfigError(f"golden outputs fix the images, the labels and the model; leave out {', '.join(given)} "
                          "(make another reference with edge-resnet reference for other ones)")
    asked = None
    if request.preprocessing_given:
        asked = request.preprocessing_at(*reference.input_shape[:2])
    unchecked = check_lineage(reference, request.artifacts)
    if unchecked:
        import warnings

        warnings.warn(f"{'; '.join(unchecked)}: not checked against the golden outputs' model", stacklevel=2)
    data = reference.data(request.data, asked, request.preprocessed or None)
    check_calibrated_as(request.artifacts, None if data.preprocessed else data.preprocessing,
                        "the golden outputs' images are made with", "compare it against golden outputs made with its "
                        "preprocessing")
    return reference, data, reference.class_names


def check_calibrated_as(artifacts, preprocessing, whose, fix):
    """Refuse artifacts whose recipes say their calibration images were made
    otherwise than `preprocessing` (None: images that are model input
    already): an int8 artifact fed other input scores its ranges, not its
    quantization. `whose` names the images in the message, `fix` the way out."""
    from ..data.images import preprocessing_text

    if preprocessing is None:
        return
    for artifact, recorded in recorded_preprocessing(artifacts, preprocessing.height, preprocessing.width):
        if recorded != preprocessing:
            raise ConfigError(f"{os.path.basename(artifact)} was calibrated on images preprocessed with "
                              f"{preprocessing_text(recorded)}, and {whose} {preprocessing_text(preprocessing)}: {fix}")


@dataclass(frozen=True)
class ReferenceRequest(ModelRequest, SeedRequest, EvaluationRequest, ForceRequest, PreprocessingRequest,
                       PreprocessedRequest):
    """Golden outputs to write: the float model's outputs on a data set."""

    model: str = option(metavar="MODEL", help=MODEL_HELP)
    data: str = option("--data", metavar="PATH", help="class folders, a flat folder, or .npy/.npz with x (and y)")
    output: str = option("--output", metavar="DIR", help="the golden folder to write")
    _: KW_ONLY
    batch_size: int = option("--batch-size", default=None, type=int, metavar="N",
                             help="default: 256 on a GPU, 8 on the CPU")
    shard: str = option("--shard", default=None, metavar="I/N", help="write only the I-th of N consecutive parts")


def write_reference(request, progress=None):
    """Golden outputs: run the float model once (on a GPU when there is one) and save its outputs.

    The model runs on the best device Keras sees (a GPU with the TensorFlow
    or JAX backend, else the CPU) and writes golden.npy and golden.json: the
    model's SHA-256, each image's id and the fingerprint of their bytes, the
    labels, the preprocessing, the device and its speed. compare --reference
    then checks artifacts anywhere, without TensorFlow. A shard "i/n" writes
    the i-th of n parts; merge joins them. Returns the manifest.
    """
    from ..data.images import image_set
    from ..files import refuse_writing_over_inputs
    from ..model.source import check_image_model, check_runs_here, load_named_model, model_source
    from .golden import parse_shard, write_golden
    from ..data.labels import read_labels_file

    shard = parse_shard(request.shard) if request.shard is not None else None
    if request.batch_size is not None and request.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1. Received: {request.batch_size}")
    refuse_writing_over_inputs([request.output], [request.model, request.weights, request.data], kind="directory")
    model = load_named_model(request.model, request.input_size, request.classes, request.weights, request.seed)
    check_image_model(model)
    check_runs_here(model)
    data = image_set(request.data, request.preprocessing_at(*model.input_shape[1:3]), size=request.eval_size,
                     seed=request.seed, preprocessed=request.preprocessed, check_readable=False)
    class_names = read_labels_file(request.labels, int(model.output_shape[-1])) if request.labels else None
    return write_golden(model, data, request.output, model_source(request.model, request.weights, request.seed),
                        class_names, batch_size=request.batch_size, shard=shard, force=request.force,
                        progress=progress)


def describe_manifest(manifest, output):
    """The line `edge-resnet reference` ends with."""
    reference, shard = manifest["reference"], manifest["shard"]
    speed = reference["speed"]
    return (f"wrote {manifest['data']['size']} golden outputs to {output} (shard {shard['index']}/{shard['count']}): "
            f"float on {reference['device']} ({reference['backend']}): {speed['ms_per_image']:.3g} ms/img at batch "
            f"{speed['batch_size']}, {speed['batch1_ms']:.3g} ms at batch 1")


@dataclass(frozen=True)
class MergeRequest(ForceRequest):
    """The golden shards to join and where."""

    shards: tuple = option(nargs="+", metavar="SHARD", help="golden folders written with --shard")
    output: str = option("--output", metavar="DIR", help="the merged golden folder")


@dataclass(frozen=True)
class BenchRequest(ThreadsRequest, PreprocessingRequest, PreprocessedRequest, DeviceRequest):
    """Models to time, and how."""

    models: tuple = option(nargs="+", metavar="MODEL", help=".tflite or .onnx files")
    _: KW_ONLY
    warmup: int = option("--warmup", default=DEFAULT_WARMUP, type=int, help="untimed runs after the first")
    runs: int = option("--runs", default=None, type=int, help=f"timed runs (default: {DEFAULT_RUNS})")
    duration: float = option("--duration", default=None, type=float, metavar="SECONDS",
                             help="time runs for this long instead of --runs")
    batch: int = option("--batch", default=DEFAULT_BATCH, type=int, help="batch size")
    input: str = option("--input", default=None, metavar="FILE",
                        help="an image, image folder or .npz to feed (default: random)")
    profile: bool = option("--profile", default=False, action="store_true",
                           help="per-operator times (onnxruntime models)")

    def __post_init__(self):
        super().__post_init__()
        if self.runs is not None and self.duration is not None:
            raise ConfigError("give --runs or --duration, not both")
        if self.input is None and (self.preprocessing_given or self.preprocessed):
            raise ConfigError("the preprocessing options and --preprocessed shape the --input images, and without "
                              "--input bench feeds random input: add --input FILE, or leave them out")
        check_bench_settings(self.threads, self.warmup, self.runs, self.duration, self.batch)


def bench_artifacts(request):
    """Latency of .tflite/.onnx files on this device (no TensorFlow needed).

    Each model loads in its runtime (ai-edge-litert, tflite-runtime or
    onnxruntime): the first inference is timed, then after a warm-up each
    run: min, mean, std, p50/p90/p95/p99, max, throughput and peak resident
    memory. Several models give a table with the speed-up against the first
    one. Yields each model's BenchResult as soon as it is measured. With
    --device ssh://HOST the models are timed on that board (several boards:
    in parallel), which needs only Python 3, numpy and a runtime; each
    result names the board.
    """
    from ..data.images import model_input_batch
    from ..device.bench import benchmark

    check_artifact_paths(request.models, "bench", "model file")
    if request.input and os.path.isfile(request.input) and request.input.lower().endswith((".tflite", ".onnx")):
        raise ConfigError(f"--input takes an image, an image folder, .npy or .npz to feed the models; {request.input} "
                          "is a model: give it as a MODEL argument")
    boards = request.device_targets()
    if boards:
        from ..device.remote import bench_on_boards

        samples = [model_input_batch(path, request.input, request.batch, request, request.preprocessed)
                   if request.input else None for path in request.models]
        settings = {"threads": request.threads, "warmup": request.warmup, "batch": request.batch,
                    "runs": DEFAULT_RUNS if request.runs is None else request.runs, "duration": request.duration,
                    "profile": request.profile}
        yield from bench_on_boards(boards, request.models, samples, settings, request.device_cache_clear)
        return
    for path in request.models:
        sample = (model_input_batch(path, request.input, request.batch, request, request.preprocessed)
                  if request.input else None)
        yield benchmark(path, threads=request.threads, warmup=request.warmup,
                        runs=DEFAULT_RUNS if request.runs is None else request.runs, duration=request.duration,
                        batch=request.batch, sample=sample, profile=request.profile)
