"""Command line: parse and validate, call the public API, print, exit.

Exit codes: 0 success, 1 a parity or latency gate failed, 2 bad input or
usage (one line on stderr, no traceback).
"""

import argparse
import os
import sys

import numpy as np

from . import __version__
from .errors import EdgeResnetError
from .check.parity import REFERENCE_BATCH

LATENCY_RUNS = 20
BUILDER_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

PROG = "edge-resnet"
EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _import_keras_quietly():
    """Import Keras (and TensorFlow, its backend) once, up front, without the
    C++ start-up chatter that would drown the one line users need."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ.get("EDGE_RESNET_VERBOSE_IMPORT"):
        return
    from .quiet import native_output_silenced

    try:
        with native_output_silenced():
            import keras  # noqa: F401
    except ImportError as error:
        raise EdgeResnetError(
            f"this command needs Keras and TensorFlow ({error}); install them with: "
            'pip install "edge-resnet[full]"'
        ) from error


def _add_model_arguments(parser):
    parser.add_argument(
        "--model",
        default="resnet50",
        choices=BUILDER_NAMES,
        help="network depth (default: resnet50)",
    )
    parser.add_argument("--input-size", type=int, default=224, metavar="PIXELS",
                        help="square input size, 32 upward (default: 224)")
    parser.add_argument("--classes", type=int, default=1000, help="output classes (default: 1000)")
    parser.add_argument("--shortcut", default="B", choices=["A", "B", "C"],
                        help="A zero-pad, B projection where dimensions change (default), C always")
    parser.add_argument("--stride-at", default="v1", choices=["v1", "v1.5"],
                        help="bottleneck stride on the 1x1 (v1, default) or the 3x3 (v1.5)")
    parser.add_argument("--plain", action="store_true", help="no shortcuts (the paper's plain net)")
    parser.add_argument("--width", type=float, default=1.0, help="filter multiplier (default: 1.0)")


def _build_from_args(args):
    from .model.resnet import BUILDERS

    return BUILDERS[args.model](
        input_shape=(args.input_size, args.input_size, 3),
        classes=args.classes,
        shortcut=args.shortcut,
        stride_at=args.stride_at,
        plain=args.plain,
        width=args.width,
    )


def run_summary(args):
    from .model.summary import format_stage_table

    print(format_stage_table(_build_from_args(args)))
    return EXIT_OK


def _load_named_model(spec, args):
    """A .keras file, or a builder name built with --input-size, --classes, --weights."""
    from .model.resnet import load_model

    if spec.endswith(".keras"):
        return load_model(spec)
    return load_model(spec, input_shape=(args.input_size, args.input_size, 3), classes=args.classes,
                      weights=args.weights)


def _load_for_conversion(args):
    """The model named on the command line, BatchNorm folded unless told not to."""
    from .model.fold import fold_batchnorm

    model = _load_named_model(args.model, args)
    if getattr(args, "no_fold", False):
        return model, None
    return fold_batchnorm(model)


def _recipe_from_args(args):
    from .quantize.recipe import QuantizationRecipe

    overrides = {key: value for key, value in (("input_type", args.input_type), ("output_type", args.output_type)) if value}
    if args.quantize != "int8" and _range_method_options(args):
        raise EdgeResnetError("--calibration-method, --percentile and --extrapolation apply to --quantize int8 only")
    overrides.update(_range_method_options(args))
    return QuantizationRecipe.for_mode(
        args.quantize,
        per_channel=not args.per_tensor,
        onnx_activation_type=args.activation_type,
        onnx_format=args.onnx_format,
        onnx_reduce_range=not args.full_range,
        **overrides,
    )


def _range_method_options(args):
    """The recipe fields of --calibration-method, --percentile and --extrapolation that were given."""
    given = {"calibration_method": args.calibration_method, "percentile": args.percentile,
             "extrapolation": args.extrapolation}
    return {key: value for key, value in given.items() if value is not None}


def _calibration_from_args(args, input_shape):
    from .data.images import Preprocessing, calibration_set

    height, width = input_shape[:2]
    calibration = calibration_set(
        args.calibration, Preprocessing(height, width, **_preprocessing_options(args)),
        size=args.calibration_size, seed=args.seed, preprocessed=args.preprocessed,
    )
    print(f"calibration: {len(calibration)} samples from {calibration.source}")
    return calibration


def _describe_tflite(path, recipe):
    from .device.tflite_inspect import inspect_tflite

    structure = inspect_tflite(path)
    print(f"operators: {', '.join(f'{op} x{n}' for op, n in sorted(structure.op_counts.items()))}")
    print(f"input {structure.input_dtype}, output {structure.output_dtype}; "
          + ("XNNPACK runs the whole model" if structure.fully_delegated else
             f"XNNPACK runs only part of the model (not: {', '.join(structure.undelegated_ops) or 'unknown'})"))
    if recipe.mode == "int8":
        print("fully integer: " + ("yes" if structure.fully_integer else
              f"NO (float ops: {', '.join(structure.float_ops) or 'none'}; "
              f"quantize/dequantize in the body: {len(structure.body_quantize_ops)})"))


def _describe_onnx(path):
    from collections import Counter

    import onnx

    proto = onnx.load(path)
    counts = Counter(node.op_type for node in proto.graph.node)
    print(f"operators: {', '.join(f'{op} x{n}' for op, n in sorted(counts.items()))}")
    print(f"opset {proto.opset_import[0].version}, passes onnx.checker (full check)")


def _statistics_from_args(args):
    from .quantize.statistics import ActivationStatistics

    return ActivationStatistics.load(args.statistics) if args.statistics else None


def run_quantize(args):
    target = os.path.splitext(args.output)[1]
    if target not in (".tflite", ".onnx"):
        raise EdgeResnetError(f"--output must end in .tflite or .onnx. Received: {args.output}")
    recipe = _recipe_from_args(args)
    if recipe.needs_calibration and not (args.calibration or args.statistics):
        raise EdgeResnetError("--quantize int8 needs --calibration PATH (an image folder, .npy or .npz) "
                              "or --statistics FILE")
    if not recipe.needs_calibration and (args.statistics or args.save_statistics):
        raise EdgeResnetError("--statistics and --save-statistics apply to --quantize int8 only")
    if args.save_statistics and not args.save_statistics.endswith(".npz"):
        raise EdgeResnetError(f"--save-statistics must end in .npz. Received: {args.save_statistics}")
    from .files import refuse_writing_over_inputs

    refuse_writing_over_inputs([args.output, args.save_statistics],
                               [args.model, args.weights, args.calibration, args.statistics])
    if args.model.endswith(".tflite"):
        return _quantize_float_tflite(args, recipe, target)
    return _quantize_keras(args, recipe, target)


def _int8_statistics(args, recipe, float_model, calibration):
    """Read with --statistics, or collected once; saved with --save-statistics."""
    from .quantize.int8_tflite import statistics_for

    statistics = statistics_for(float_model, calibration, _statistics_from_args(args))
    if args.save_statistics:
        statistics.save(args.save_statistics)
        print(f"wrote {args.save_statistics} ({len(statistics.tensors)} tensors, {statistics.samples} samples)")
    print(f"activation ranges: {recipe.range_method().describe()} over {statistics.samples} calibration samples")
    return statistics


def _quantize_float_tflite(args, recipe, target):
    """The TensorFlow-free route: a float32 .tflite in, an int8 .tflite out."""
    from .quantize.int8_tflite import read_float_tflite, write_int8_tflite

    if target != ".tflite" or recipe.mode != "int8":
        raise EdgeResnetError("a .tflite MODEL is quantized to int8 .tflite only (--quantize int8, --output X.tflite); "
                              "give the .keras model for other modes and ONNX")
    float_model = read_float_tflite(args.model)
    calibration = None
    if args.calibration:
        from .device.runtime import TfliteRunner

        calibration = _calibration_from_args(args, TfliteRunner(args.model, threads=1).input_shape)
    statistics = _int8_statistics(args, recipe, float_model, calibration)
    path = write_int8_tflite(float_model, recipe, args.output, statistics=statistics)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {recipe.describe('tflite')})")
    _describe_tflite(path, recipe)
    return EXIT_OK


def _quantize_keras(args, recipe, target):
    from .quantize.onnx_export import check_onnx_request, to_onnx
    from .quantize.tflite import float_tflite, to_tflite

    if target == ".onnx":
        check_onnx_request(recipe, args.opset, args.onnx_route)
    model, fold_report = _load_for_conversion(args)
    if fold_report is not None:
        print(f"folded {len(fold_report.folded)} BatchNormalization layers, left {len(fold_report.skipped)}")
    statistics = float_model = None
    if recipe.needs_calibration:
        calibration = _calibration_from_args(args, model.input_shape[1:]) if args.calibration else None
        float_model = float_tflite(model)
        statistics = _int8_statistics(args, recipe, float_model, calibration)
    if target == ".tflite":
        path = to_tflite(model, recipe, output=args.output, statistics=statistics, float_model=float_model)
    else:
        path = to_onnx(model, recipe, output=args.output, opset=args.opset, route=args.onnx_route,
                       statistics=statistics, float_model=float_model)
    source = model_source(args.model, args.weights)
    if source["sha256"]:
        from .quantize.recipe import record_source

        record_source(path, source)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {recipe.describe(target[1:])})")
    if target == ".tflite":
        _describe_tflite(path, recipe)
    else:
        _describe_onnx(path)
    return EXIT_OK


def _artifact_descriptions(artifacts):
    """{artifact name: its recipe JSON's description} where the JSON exists."""
    from .quantize.recipe import read_record

    records = {os.path.basename(artifact): read_record(artifact) for artifact in artifacts}
    return {name: record.get("quantization") for name, record in records.items() if record is not None}


def model_source(spec, weights=None):
    """{"file", "sha256", "weights"} of what a model was loaded from: the
    .keras file, or the weights file of a builder name (ImageNet's cached
    file included); no file for random weights."""
    from .files import file_sha256

    path = spec if os.path.isfile(spec) else weights
    if weights == "imagenet":
        from .model.weights import imagenet_weights_path

        path = imagenet_weights_path(int(spec.removeprefix("resnet")), True)
    if path and os.path.isfile(path):
        return {"file": os.path.basename(path), "sha256": file_sha256(path), "weights": str(weights or spec)}
    return {"file": None, "sha256": None, "weights": f"{spec} with random weights (seed 0)"}


def run_compare(args):
    from .check.parity import check_gates

    check_gates(args.max_accuracy_drop, args.min_agreement)
    if args.bench_runs < 0:
        raise EdgeResnetError(f"--bench-runs must be 0 or more. Received: {args.bench_runs}")
    if args.report:
        from .files import check_writable

        check_writable(args.report, "directory")
    for artifact in args.artifacts:
        if not os.path.isfile(artifact):
            raise EdgeResnetError(f"artifact not found: {artifact}")
    descriptions = _artifact_descriptions(args.artifacts)  # an unreadable recipe JSON stops here, before the work
    if _is_golden(args):
        reference, data, class_names = _golden_inputs(args)
        per_layer = ()
    else:
        reference, data, class_names = _keras_inputs(args)
        per_layer = () if args.no_per_layer else args.artifacts
    return _parity_run(args, reference, data, class_names, per_layer, descriptions)


def _is_golden(args):
    """A folder, or anything that is neither a .keras file nor a builder name
    (so a mistyped golden folder is named as one)."""
    reference = args.reference
    return os.path.isdir(reference) or not (reference.endswith(".keras") or reference in BUILDER_NAMES)


def _keras_inputs(args):
    from .data.images import Preprocessing, image_set
    from .check.parity import read_labels_file

    if args.data is None:
        raise EdgeResnetError("compare against a Keras model needs --data (images to run both on); "
                              "or give golden outputs as --reference")
    reference = _load_named_model(args.reference, args)
    height, width = reference.input_shape[1:3]
    data = image_set(args.data, Preprocessing(height, width, **_preprocessing_options(args)), size=args.eval_size,
                     seed=args.seed, preprocessed=args.preprocessed, check_readable=False)
    classes = int(reference.output_shape[-1])
    return reference, data, read_labels_file(args.labels, classes) if args.labels else None


def _golden_inputs(args):
    """The golden reference, its data read again and checked, its class names."""
    from .data.images import Preprocessing
    from .check.golden import GoldenReference, check_lineage

    reference = GoldenReference(args.reference)
    if args.eval_size is not None or args.labels:
        raise EdgeResnetError("golden outputs fix the images and the labels; leave out --eval-size and --labels "
                              "(make a smaller reference with edge-resnet reference --eval-size)")
    options = _preprocessing_options(args)
    asked = None
    if any(value is not None for value in options.values()):
        asked = Preprocessing(*reference.input_shape[:2], **options)
    unchecked = check_lineage(reference, args.artifacts)
    if unchecked:
        import warnings

        warnings.warn(f"{', '.join(unchecked)}: no recipe JSON names the model it was made from; not checked against "
                      "the golden outputs' model", stacklevel=2)
    data = reference.data(args.data, asked, args.preprocessed or None)
    return reference, data, reference.class_names


def _parity_run(args, reference, data, class_names, per_layer, descriptions):
    from .check.parity import parity_report
    from .quiet import progress_bar
    from .check.report import markdown_report, write_reports

    print(f"evaluating {len(data)} images from {data.source}")
    report = parity_report(reference, args.artifacts, data, class_names=class_names, batch_size=args.batch_size,
                           max_accuracy_drop=args.max_accuracy_drop, min_agreement=args.min_agreement,
                           per_layer=per_layer, latency_runs=args.bench_runs, progress=progress_bar("evaluating"))
    report["quantization"] = descriptions
    if args.report:
        paths = write_reports(report, args.report)
        print(f"wrote {', '.join(str(p) for p in paths)}")
    print(markdown_report(report))
    failures = report["gates"]["failures"]
    for failure in failures:
        print(f"{PROG}: gate failed: {failure}", file=sys.stderr)
    return EXIT_GATE_FAILED if failures else EXIT_OK


def run_reference(args):
    from .data.images import Preprocessing, image_set
    from .files import refuse_writing_over_inputs
    from .check.golden import parse_shard, write_golden
    from .check.parity import read_labels_file
    from .quiet import progress_bar

    shard = parse_shard(args.shard) if args.shard is not None else None
    if args.batch_size is not None and args.batch_size < 1:
        raise EdgeResnetError(f"--batch-size must be at least 1. Received: {args.batch_size}")
    refuse_writing_over_inputs([args.output], [args.model, args.weights, args.data], kind="directory")
    model = _load_named_model(args.model, args)
    height, width = model.input_shape[1:3]
    data = image_set(args.data, Preprocessing(height, width, **_preprocessing_options(args)), size=args.eval_size,
                     seed=args.seed, preprocessed=args.preprocessed, check_readable=False)
    class_names = read_labels_file(args.labels, int(model.output_shape[-1])) if args.labels else None
    manifest = write_golden(model, data, args.output, model_source(args.model, args.weights), class_names,
                            batch_size=args.batch_size, shard=shard, force=args.force,
                            progress=progress_bar("reference"))
    reference = manifest["reference"]
    speed = reference["speed"]
    print(f"wrote {manifest['data']['size']} golden outputs to {args.output} (shard {manifest['shard']['index']}/"
          f"{manifest['shard']['count']}): float on {reference['device']} ({reference['backend']}): "
          f"{speed['ms_per_image']:.3g} ms/img at batch {speed['batch_size']}, {speed['batch1_ms']:.3g} ms at batch 1")
    return EXIT_OK


def run_merge(args):
    from .check.golden import merge_golden

    manifest = merge_golden(args.shards, args.output, force=args.force)
    print(f"merged {len(args.shards)} shards into {args.output} ({manifest['data']['size']} golden outputs)")
    return EXIT_OK


def _bench_sample(path, input_file, batch, preprocessing_options, preprocessed):
    """A batch from an image or .npz file, preprocessed for the model."""
    from .data.images import Preprocessing, image_set
    from .quiet import native_output_silenced
    from .device.runtime import open_runner

    with native_output_silenced():  # the runtime's start-up line would precede any error
        height, width = open_runner(path).input_shape[:2]
    images = image_set(input_file, Preprocessing(height, width, **preprocessing_options), size=None,
                       preprocessed=preprocessed)
    samples = list(images.samples())
    return np.stack([samples[i % len(samples)] for i in range(batch)])


def run_bench(args):
    import json

    from .device.bench import benchmark, comparison_table

    for path in args.models:
        if not os.path.isfile(path):
            raise EdgeResnetError(f"model file not found: {path}")
    runs = None if args.duration else args.runs
    results = []
    for path in args.models:
        sample = (_bench_sample(path, args.input, args.batch, _preprocessing_options(args), args.preprocessed)
                  if args.input else None)
        results.append(benchmark(path, threads=args.threads, warmup=args.warmup, runs=runs,
                                 duration=args.duration, batch=args.batch, sample=sample, profile=args.profile))
        if not args.json:
            result = results[-1]
            print(f"{result.model}: {result.runtime} {result.runtime_version}, {result.accelerator}; "
                  f"input {result.input_dtype} {list(result.input_shape)} x{result.batch}; "
                  f"load {result.load_ms:.0f} ms, first inference {result.first_inference_ms:.1f} ms, "
                  f"{result.runs} runs: mean {result.latency_ms['mean']:.2f} ms (std {result.latency_ms['std']:.2f}), "
                  f"min {result.latency_ms['min']:.2f}, max {result.latency_ms['max']:.2f}")
            if args.profile:
                print("  per operator (ms, all runs): " + (", ".join(
                    f"{op} {ms:.1f}" for op, ms in list(result.operator_ms.items())[:10])
                    if result.operator_ms else "not offered by this runtime's Python API"))
    if args.json:
        print(json.dumps([result.to_dict() for result in results], indent=2))
    else:
        print(comparison_table(results))
        if any(result.runtime == "tflite-runtime" for result in results):
            print("note: tflite-runtime 2.14 runs int8 models on its built-in kernels, not XNNPACK: ResNet-50 int8 "
                  "measured 3x slower than with ai-edge-litert on an AVX2 CPU (~10x where VNNI is available); "
                  "use ai-edge-litert wherever it has a wheel")
    return EXIT_OK


def _formats(text):
    """"tflite,onnx" -> ("tflite", "onnx"), each once, in the order given."""
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def run_convert(args):
    from .convert import ConvertConfig, convert

    config = ConvertConfig(
        model=args.model, weights=args.weights, input_size=args.input_size, classes=args.classes,
        calibration=args.calibration, calibration_size=args.calibration_size, eval=args.eval,
        eval_size=args.eval_size, labels=args.labels, quantize=args.quantize,
        formats=_formats(args.formats) if args.formats else None, output=args.output, seed=args.seed,
        force=args.force, max_accuracy_drop=args.max_accuracy_drop, min_agreement=args.min_agreement,
        input_type=args.input_type, output_type=args.output_type, preprocessing=args.preprocessing,
        mean=args.mean, std=args.std, scale=args.scale,
        bench_runs=args.bench_runs, threads=args.threads, per_layer=not args.no_per_layer,
        statistics=args.statistics, **_range_method_options(args),
    )
    report = convert(config, log=lambda line: print(line, flush=True))
    failures = report["parity"]["gates"]["failures"]
    for failure in failures:
        print(f"{PROG}: gate failed: {failure}", file=sys.stderr)
    return EXIT_GATE_FAILED if failures else EXIT_OK


def run_fold(args):
    import json

    from .files import atomic_output, refuse_writing_over_inputs

    if not args.output.endswith(".keras"):
        raise EdgeResnetError(f"--output must end in .keras. Received: {args.output}")
    refuse_writing_over_inputs([args.output], [args.model, args.weights])
    folded, report = _load_for_conversion(args)
    with atomic_output(args.output) as temporary:
        folded.save(temporary)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    if not args.json:
        print(f"wrote {args.output}")
    return EXIT_OK


def _add_model_source_arguments(parser, what="a .keras file, or a builder name such as resnet50"):
    parser.add_argument("model", metavar="MODEL", help=what)
    parser.add_argument("--input-size", type=int, default=224, metavar="PIXELS",
                        help="input size when MODEL is a builder name (default: 224)")
    parser.add_argument("--classes", type=int, default=1000, help="classes when MODEL is a builder name")
    parser.add_argument("--weights", default=None,
                        help="weights when MODEL is a builder name: random (default), imagenet, or a file")


def _add_range_method_arguments(parser):
    from .quantize.ranges import DEFAULT_EXTRAPOLATION, DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS

    group = parser.add_argument_group("int8 activation ranges (TFLite and ONNX alike)")
    group.add_argument("--calibration-method", choices=METHODS,
                       help=f"how ranges come from the calibration statistics (default: {DEFAULT_METHOD}): "
                       "minmax (the extremes seen), percentile, mse (least 8-bit error per tensor), extrapolated "
                       "(min/max pushed out by how much the per-image extremes scatter)")
    group.add_argument("--percentile", type=float, help=f"for percentile (default: {DEFAULT_PERCENTILE})")
    group.add_argument("--extrapolation", type=float, help=f"for extrapolated (default: {DEFAULT_EXTRAPOLATION})")
    group.add_argument("--statistics", metavar="FILE.npz",
                       help="activation statistics saved earlier for this model (no calibration pass)")


def _add_preprocessing_arguments(parser, images):
    """--preprocessing, and --mean/--std/--scale for custom preprocessing."""
    from .data.images import PREPROCESSING_MODES

    parser.add_argument("--preprocessing", choices=PREPROCESSING_MODES,
                        help=f"how {images} become model input: caffe (BGR minus the ImageNet mean, for ImageNet "
                        "ResNets; default), tf (RGB -1..1), torch (RGB 0..1, ImageNet mean and std), raw (RGB "
                        "0..255, for models that preprocess inside) or custom (implied by --mean/--std/--scale)")
    for name, meaning in (("scale", "multiplies the RGB pixels (default: 1)"),
                          ("mean", "is subtracted after --scale (default: 0)"),
                          ("std", "divides after --mean (default: 1)")):
        parser.add_argument(f"--{name}", type=_channel_values_argument(name), metavar="R,G,B",
                            help=f"custom preprocessing: one number or three (RGB) that {meaning}")


def _channel_values_argument(name):
    """The argparse type of --mean/--std/--scale: "R,G,B" or one number."""

    def parse(text):
        from .data.images import channel_values

        try:
            values = tuple(float(part) for part in text.split(","))
        except ValueError:
            message = f"give one number or three, comma-separated. Received: {text!r}"
            raise argparse.ArgumentTypeError(message) from None
        try:
            return channel_values(name, values[0] if len(values) == 1 else values)
        except EdgeResnetError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _preprocessing_options(args):
    """The Preprocessing arguments (all but the size) given on the command line."""
    return {"mode": args.preprocessing, "mean": args.mean, "std": args.std, "scale": args.scale}


def _one_line_warnings():
    """Warnings as `edge-resnet: warning: ...` lines, not source excerpts."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{PROG}: warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


def _command(commands, name, summary, description, examples):
    """A subcommand whose --help ends with worked examples."""
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="example:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser():
    parser = OneLineParser(
        prog=PROG,
        description="Take a Keras ResNet to the edge: fold BatchNorm, quantize to int8, "
        "export TFLite and ONNX, and check accuracy parity and latency.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    commands.required = True

    summary = _command(
        commands,
        "summary",
        "per-stage output shapes, parameters and multiply-accumulates",
        "Print a per-stage table of a ResNet: output shape, parameters, "
        "multiply-accumulates, with totals.",
        ["edge-resnet summary --model resnet50 --input-size 224",
         "edge-resnet summary --model resnet34 --shortcut A --plain"],
    )
    _add_model_arguments(summary)
    summary.set_defaults(handler=run_summary, needs_keras=True)

    fold = _command(
        commands,
        "fold",
        "fold BatchNorm into the preceding convolutions",
        "Fold every BatchNormalization that directly follows a Conv2D, "
        "DepthwiseConv2D or Dense layer into it, check the folded model against the "
        "original on a probe batch, and save it. Patterns that cannot be folded "
        "exactly are left in place and listed.",
        ["edge-resnet fold resnet50 --output resnet50_folded.keras",
         "edge-resnet fold my_model.keras --output my_model_folded.keras --json"],
    )
    _add_model_source_arguments(fold)
    fold.add_argument("--output", required=True, metavar="FILE.keras", help="where to save the folded model")
    fold.add_argument("--json", action="store_true", help="print the report as JSON")
    fold.set_defaults(handler=run_fold, needs_keras=True)

    quantize = _command(
        commands,
        "quantize",
        "fold BatchNorm and export TFLite or ONNX: int8, float16, dynamic range or float32",
        "Fold BatchNorm, then convert to TFLite or ONNX (by the --output suffix). int8 is "
        "full-integer post-training quantization (weights int8 per channel, activations int8 "
        "per tensor) calibrated on your images; the recipe JSON is written beside the model.",
        ["edge-resnet quantize resnet50 --weights imagenet --calibration val/ \\",
         "    --calibration-size 300 --quantize int8 --output resnet50_int8.tflite",
         "edge-resnet quantize model.keras --quantize float16 --output model_fp16.tflite",
         "edge-resnet quantize model.keras --calibration calib.npz --input-type uint8 --output m.tflite",
         "edge-resnet quantize model.keras --calibration calib/ --output model_int8.onnx",
         "edge-resnet quantize model.keras --quantize none --output model.onnx --opset 17"],
    )
    _add_model_source_arguments(quantize, "a .keras file, a builder name such as resnet50, or a float32 .tflite "
                                "(int8 only, no TensorFlow needed)")
    quantize.add_argument("--output", required=True, metavar="FILE",
                          help="where to write the model: .tflite or .onnx picks the format")
    quantize.add_argument("--quantize", default="int8", choices=["int8", "float16", "dynamic", "none"],
                          help="quantization mode (default: int8)")
    quantize.add_argument("--calibration", metavar="PATH", help="image folder, .npy or .npz (needed for int8)")
    quantize.add_argument("--calibration-size", type=int, default=200, metavar="N",
                          help="seeded subset size, stratified by class folder (default: 200)")
    quantize.add_argument("--seed", type=int, default=0, help="seed of the subset (default: 0)")
    _add_preprocessing_arguments(quantize, "the --calibration images")
    quantize.add_argument("--preprocessed", action="store_true",
                          help="the arrays in --calibration are already model input")
    quantize.add_argument("--input-type", choices=["int8", "uint8", "float32"], help="int8 model input type (default: int8)")
    quantize.add_argument("--output-type", choices=["int8", "uint8", "float32"], help="int8 model output type (default: int8)")
    _add_range_method_arguments(quantize)
    quantize.add_argument("--save-statistics", metavar="FILE.npz",
                          help="save the activation statistics, to try another --calibration-method without "
                          "calibrating again")
    quantize.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weights")
    quantize.add_argument("--no-fold", action="store_true", help="convert without folding BatchNorm first")
    onnx_options = quantize.add_argument_group("ONNX (.onnx output)")
    onnx_options.add_argument("--opset", type=int, default=17, help="ONNX opset, 13-18 (default: 17)")
    onnx_options.add_argument("--onnx-route", default="ort", choices=["ort", "tflite"],
                              help="int8 by onnxruntime static quantization (ort, default) or from the int8 TFLite model")
    onnx_options.add_argument("--activation-type", default="uint8", choices=["int8", "uint8"],
                              help="onnxruntime activations: uint8 (U8S8, default: fastest on x86) or int8 (S8S8)")
    onnx_options.add_argument("--onnx-format", default="qdq", choices=["qdq", "qoperator"],
                              help="QDQ (default) or QOperator graph")
    onnx_options.add_argument("--full-range", action="store_true",
                              help="8-bit instead of 7-bit weights (only for devices whose int8 kernels do not "
                              "saturate: ARM, or x86 with VNNI)")
    quantize.set_defaults(handler=run_quantize, needs_keras=lambda args: not args.model.endswith(".tflite"))
    compare = _command(
        commands,
        "compare",
        "accuracy parity of TFLite/ONNX artifacts against the float Keras model",
        "Run the float reference and every artifact on the same images and report top-1/top-5 "
        "accuracy and their drop, top-1 agreement, top-5 overlap, cosine similarity, SQNR and "
        "max error of the logits. Gates make CI fail (exit 1) when an artifact strays too far.",
        ["edge-resnet compare --reference model.keras model_int8.tflite model_int8.onnx \\",
         "    --data val/ --labels labels.txt --report report/ --max-accuracy-drop 1 --min-agreement 0.98",
         "edge-resnet compare --reference model.keras model_int8.tflite --data unlabelled_images/"],
    )
    compare.add_argument("--reference", required=True, metavar="MODEL|GOLDEN",
                         help="the float model (a .keras file or a builder name), or a folder of golden outputs "
                         "from edge-resnet reference (no TensorFlow or Keras needed then)")
    compare.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=".tflite or .onnx files")
    compare.add_argument("--data", metavar="PATH",
                         help="class folders, a flat folder (agreement only), or .npz with x (and y); with golden "
                         "outputs, default: where their images were")
    compare.add_argument("--bench-runs", type=int, default=LATENCY_RUNS, metavar="N",
                         help=f"time each artifact N times at batch 1 on this machine (default: {LATENCY_RUNS}; "
                         "0 skips)")
    compare.add_argument("--labels", metavar="FILE", help="class names in model-output order, one per line")
    compare.add_argument("--report", metavar="DIR", help="write parity.json, parity.md and parity.html here")
    compare.add_argument("--max-accuracy-drop", type=float, metavar="POINTS", help="gate on the top-1 drop")
    compare.add_argument("--min-agreement", type=float, metavar="FRACTION", help="gate on top-1 agreement")
    compare.add_argument("--eval-size", type=int, metavar="N", help="evaluate a seeded subset of N images")
    compare.add_argument("--no-per-layer", action="store_true", help="skip the per-layer error analysis")
    compare.add_argument("--seed", type=int, default=0, help="seed of the subset (default: 0)")
    compare.add_argument("--batch-size", type=int, default=REFERENCE_BATCH,
                         help=f"reference batch size (default: {REFERENCE_BATCH})")
    _add_preprocessing_arguments(compare, "the --data images")
    compare.add_argument("--preprocessed", action="store_true", help="the arrays in --data are already model input")
    compare.add_argument("--input-size", type=int, default=224, metavar="PIXELS",
                         help="input size when the reference is a builder name (default: 224)")
    compare.add_argument("--classes", type=int, default=1000, help="classes when the reference is a builder name")
    compare.add_argument("--weights", default=None, help="weights when the reference is a builder name")
    compare.set_defaults(handler=run_compare, needs_keras=lambda args: not _is_golden(args))

    reference = _command(
        commands,
        "reference",
        "golden outputs: run the float model once (on a GPU when there is one) and save its outputs",
        "Run the float Keras model on the evaluation images, on the best device Keras sees (a GPU with the "
        "TensorFlow or JAX backend, else the CPU), and write golden/golden.npy and golden/golden.json: the "
        "model's SHA-256, each image's id and the fingerprint of their bytes, the labels, the preprocessing, the "
        "device and its speed. compare --reference golden/ then checks artifacts anywhere, without TensorFlow. "
        "--shard i/n writes the i-th of n parts; merge joins them.",
        ["edge-resnet reference model.keras --data val/ --output golden/",
         "KERAS_BACKEND=jax edge-resnet reference model.keras --data val/ --output golden/ --batch-size 256",
         "edge-resnet reference model.keras --data val/ --shard 2/4 --output golden_2/"],
    )
    _add_model_source_arguments(reference)
    reference.add_argument("--data", required=True, metavar="PATH",
                           help="class folders, a flat folder, or .npy/.npz with x (and y)")
    reference.add_argument("--output", required=True, metavar="DIR", help="the golden folder to write")
    reference.add_argument("--eval-size", type=int, metavar="N", help="a seeded, class-stratified subset of N images")
    reference.add_argument("--seed", type=int, default=0, help="seed of the subset (default: 0)")
    reference.add_argument("--labels", metavar="FILE", help="class names in model-output order, one per line")
    reference.add_argument("--batch-size", type=int, metavar="N", help="default: 256 on a GPU, 8 on the CPU")
    reference.add_argument("--shard", metavar="I/N", help="write only the I-th of N consecutive parts")
    reference.add_argument("--force", action="store_true", help="replace earlier golden outputs in --output")
    _add_preprocessing_arguments(reference, "the --data images")
    reference.add_argument("--preprocessed", action="store_true", help="the arrays in --data are already model input")
    reference.set_defaults(handler=run_reference, needs_keras=True)

    merge = _command(
        commands,
        "merge",
        "join the golden outputs of every shard of one reference run",
        "Check that the folders are the shards 1..n of one reference run (same model, data and "
        "preprocessing) and write them as one golden folder, streaming.",
        ["edge-resnet merge golden_1/ golden_2/ golden_3/ golden_4/ --output golden/"],
    )
    merge.add_argument("shards", nargs="+", metavar="SHARD", help="golden folders written with --shard")
    merge.add_argument("--output", required=True, metavar="DIR", help="the merged golden folder")
    merge.add_argument("--force", action="store_true", help="replace earlier golden outputs in --output")
    merge.set_defaults(handler=run_merge, needs_keras=False)

    convert = _command(
        commands,
        "convert",
        "the whole job: fold, quantize, export TFLite and ONNX, check parity, time, report",
        "Load or build the model, fold BatchNorm, calibrate, write TFLite and ONNX (float32 and "
        "quantized) with their recipe JSONs and the folded .keras, check accuracy parity against the "
        "float model on held-out images, time every artifact, and write report.json/.md/.html. With no "
        "arguments it converts the offline demo (a ResNet-50 trained on real handwritten digits, shipped "
        "with edge-resnet), calibrated and evaluated on disjoint parts of the embedded digits. Exit 1 when "
        "a gate fails (after the report is written), 2 on bad input.",
        ["edge-resnet convert --quantize int8",
         "edge-resnet convert --model my_model.keras --calibration calib/ --eval val/ --output out/",
         "edge-resnet convert --weights imagenet --calibration imagenet_val/ --calibration-size 300 \\",
         "    --eval-size 5000 --labels imagenet_classes.txt --max-accuracy-drop 1 --min-agreement 0.98 \\",
         "    --output rn50/",
         "edge-resnet convert --quantize int8 --input-type uint8 --formats tflite --output uint8_device/"],
    )
    convert.add_argument("--model", default="resnet50", metavar="NAME|FILE.keras",
                         help="resnet18/34/50/101/152, or your .keras model (default: resnet50)")
    convert.add_argument("--weights", metavar="demo|imagenet|random|PATH",
                         help="builder names only: demo (resnet50 default: trained on digits, shipped), imagenet "
                         "(Keras cache or download), random, or a .keras/.weights.h5/.h5 file")
    convert.add_argument("--input-size", type=int, metavar="PIXELS",
                         help="square input size for builder names (default: 32 for the demo, else 224)")
    convert.add_argument("--classes", type=int, help="outputs for builder names (default: 10 for the demo, else 1000)")
    convert.add_argument("--calibration", metavar="PATH",
                         help="image folder, .npy or .npz to calibrate on (default: the embedded digits, for "
                         "demo and random weights only)")
    convert.add_argument("--calibration-size", type=int, default=200, metavar="N",
                         help="seeded, class-stratified calibration subset (default: 200)")
    convert.add_argument("--eval", metavar="PATH",
                         help="images to check parity on (default: the calibration source's images not "
                         "calibrated on)")
    convert.add_argument("--eval-size", type=int, metavar="N", help="evaluate a seeded subset of N images")
    convert.add_argument("--labels", metavar="FILE", help="class names in model-output order, one per line")
    convert.add_argument("--quantize", default="int8", choices=["int8", "float16", "dynamic", "none"],
                         help="quantization of the edge artifacts (default: int8)")
    convert.add_argument("--formats", metavar="LIST",
                         help="tflite, onnx or tflite,onnx (default: both; tflite only for float16/dynamic)")
    convert.add_argument("--output", default="edge-resnet-output", metavar="DIR",
                         help="output directory (default: edge-resnet-output)")
    convert.add_argument("--seed", type=int, default=0, help="seed of subsets and random weights (default: 0)")
    convert.add_argument("--force", action="store_true",
                         help="write into a non-empty output directory, replacing an earlier run's files")
    convert.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                         help="gate: fail (exit 1) when a quantized artifact loses more top-1 points")
    convert.add_argument("--min-agreement", type=float, metavar="FRACTION",
                         help="gate: fail (exit 1) when a quantized artifact agrees with the float top-1 less often")
    convert.add_argument("--input-type", choices=["int8", "uint8", "float32"],
                         help="int8 TFLite input type, for devices that need uint8 (default: int8)")
    convert.add_argument("--output-type", choices=["int8", "uint8", "float32"],
                         help="int8 TFLite output type (default: int8)")
    _add_preprocessing_arguments(convert, "the calibration and evaluation images")
    convert.add_argument("--bench-runs", type=int, default=30, metavar="N",
                         help="timed runs per artifact in the latency stage, 0 to skip (default: 30)")
    convert.add_argument("--threads", type=int, default=2, help="inference threads for the latency stage (default: 2)")
    convert.add_argument("--no-per-layer", action="store_true", help="skip the per-layer error analysis")
    _add_range_method_arguments(convert)
    convert.set_defaults(handler=run_convert, needs_keras=True)

    bench = _command(
        commands,
        "bench",
        "latency of .tflite/.onnx files on this device (no TensorFlow needed)",
        "Load each model in its runtime (ai-edge-litert, tflite-runtime or onnxruntime), time "
        "the first inference, warm up, then time each run: min, mean, std, p50/p90/p95/p99, max, "
        "throughput and peak resident memory. Several models give a table with the speed-up "
        "against the first one.",
        ["edge-resnet bench model_fp32.tflite model_int8.tflite --threads 2",
         "edge-resnet bench model_int8.onnx --duration 10 --batch 8 --json",
         "edge-resnet bench model_int8.tflite --input photo.jpg"],
    )
    bench.add_argument("models", nargs="+", metavar="MODEL", help=".tflite or .onnx files")
    bench.add_argument("--threads", type=int, default=2, help="inference threads (default: 2)")
    bench.add_argument("--warmup", type=int, default=10, help="untimed runs after the first (default: 10)")
    timing = bench.add_mutually_exclusive_group()
    timing.add_argument("--runs", type=int, default=50, help="timed runs (default: 50)")
    timing.add_argument("--duration", type=float, metavar="SECONDS", help="time runs for this long instead")
    bench.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    bench.add_argument("--input", metavar="FILE", help="an image, image folder or .npz to feed (default: random)")
    _add_preprocessing_arguments(bench, "the --input images")
    bench.add_argument("--preprocessed", action="store_true", help="the arrays in --input are already model input")
    bench.add_argument("--profile", action="store_true", help="per-operator times (onnxruntime models)")
    bench.add_argument("--json", action="store_true", help="print JSON for CI and device fleets")
    bench.set_defaults(handler=run_bench, needs_keras=False)
    return parser


EXIT_INTERRUPTED = 130


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    import signal

    args = build_parser().parse_args(argv)
    _one_line_warnings()
    # `kill` unwinds like Ctrl-C, so no half-written output survives either
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        if args.needs_keras(args) if callable(args.needs_keras) else args.needs_keras:
            _import_keras_quietly()
        return args.handler(args)
    except EdgeResnetError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing half-written was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
