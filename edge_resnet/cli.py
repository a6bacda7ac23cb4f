"""Command line: parse, call the public API, print, exit.

Exit codes: 0 success, 1 a parity or latency gate failed, 2 bad input or
usage (one line on stderr, no traceback). Options left out are None, so the
API's own defaults apply; each option's help quotes the default of the
request field or parameter it sets.
"""

import argparse
import dataclasses
import os
import sys

from . import __version__
from .convert import parse_formats
from .data.images import PREPROCESSING_MODES, PreprocessingRequest, parse_channel_values
from .errors import EdgeResnetError
from .model.source import BUILDER_NAMES, SHORTCUTS, STRIDE_PLACEMENTS
from .quantize.ranges import DEFAULT_EXTRAPOLATION, DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS
from .quantize.recipe import ACTIVATION_TYPES, IO_TYPES, MODES, ONNX_FORMATS, ONNX_ROUTES
from .quiet import import_keras_quietly, one_line_warnings

PROG = "edge-resnet"
EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def given(args, names):
    """The options among `names` that the command line set."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def request_from(cls, args):
    """A request dataclass built from the parsed arguments by its field names."""
    return cls(**given(args, [field.name for field in dataclasses.fields(cls)]))


def gate_exit(failures):
    for failure in failures:
        print(f"{PROG}: gate failed: {failure}", file=sys.stderr)
    return EXIT_GATE_FAILED if failures else EXIT_OK


def run_summary(args):
    from .model.source import build_named
    from .model.summary import format_stage_table

    print(format_stage_table(build_named(args.model, **given(args, ("input_size", "classes", "shortcut", "stride_at",
                                                                     "plain", "width")))))
    return EXIT_OK


def run_fold(args):
    import json

    from .model.source import save_folded

    report = save_folded(args.model, args.output, args.input_size, args.classes, args.weights)
    print(json.dumps(report.to_dict(), indent=2) if args.json else f"{report.format()}\nwrote {args.output}")
    return EXIT_OK


def run_quantize(args):
    from .quantize.workflow import QuantizeRequest, quantize_artifact

    quantize_artifact(request_from(QuantizeRequest, args))
    return EXIT_OK


def run_compare(args):
    from .check.report import markdown_report
    from .check.workflows import CompareRequest, compare_artifacts
    from .quiet import progress_bar

    report = compare_artifacts(request_from(CompareRequest, args), progress=progress_bar("evaluating"))
    print(markdown_report(report))
    return gate_exit(report["gates"]["failures"])


def run_reference(args):
    from .check.workflows import ReferenceRequest, describe_manifest, write_reference
    from .quiet import progress_bar

    print(describe_manifest(write_reference(request_from(ReferenceRequest, args), progress_bar("reference")),
                            args.output))
    return EXIT_OK


def run_merge(args):
    from .check.golden import merge_golden

    manifest = merge_golden(args.shards, args.output, force=args.force)
    print(f"merged {len(args.shards)} shards into {args.output} ({manifest['data']['size']} golden outputs)")
    return EXIT_OK


def run_bench(args):
    import json

    from .device.bench import benchmark, comparison_table, runtime_notes

    for path in args.models:
        if not os.path.isfile(path):
            raise EdgeResnetError(f"model file not found: {path}")
    options = given(args, ("threads", "warmup", "runs", "duration", "batch", "profile"))
    results = []
    for path in args.models:
        if args.input:
            from .data.images import model_input_batch

            options["sample"] = model_input_batch(path, args.input, args.batch or 1,
                                                  request_from(PreprocessingRequest, args), args.preprocessed)
        results.append(benchmark(path, **options))
        if not args.json:
            print(results[-1].describe(args.profile))
    print(json.dumps([result.to_dict() for result in results], indent=2) if args.json else
          "\n".join([comparison_table(results), *runtime_notes(results)]))
    return EXIT_OK


def run_convert(args):
    from .convert import ConvertConfig, convert

    report = convert(request_from(ConvertConfig, args), log=lambda line: print(line, flush=True))
    return gate_exit(report["parity"]["gates"]["failures"])


def _channel_values(name):
    """The argparse type of --mean/--std/--scale."""

    def parse(text):
        try:
            return parse_channel_values(name, text)
        except EdgeResnetError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _parent(*arguments):
    """A parent parser holding shared options: (flags, keyword arguments) pairs."""
    parent = argparse.ArgumentParser(add_help=False)
    for flags, options in arguments:
        parent.add_argument(*flags, **options)
    return parent


def _option(*flags, **options):
    return flags, options


def shared_options():
    """The options several commands take, declared once."""
    number = {"type": int, "metavar": "N"}
    return {
        "size": _parent(
            _option("--input-size", type=int, metavar="PIXELS", help="square input size of a builder name, 32 upward "
                    "(default: 224; 32 for convert's demo)"),
            _option("--classes", type=int, help="outputs of a builder name (default: 1000; 10 for convert's demo)")),
        "weights": _parent(
            _option("--weights", metavar="imagenet|random|demo|PATH", help="weights of a builder name: imagenet "
                    "(Keras cache or download), random, a .keras/.weights.h5/.h5 file, or demo (convert's resnet50 "
                    "default: trained on digits, shipped); default: random")),
        "preprocessing": _parent(
            _option("--preprocessing", choices=PREPROCESSING_MODES, help="how images become model input: caffe (BGR "
                    "minus the ImageNet mean, for ImageNet ResNets; default), tf (RGB -1..1), torch (RGB 0..1, "
                    "ImageNet mean and std), raw (RGB 0..255, for models that preprocess inside) or custom (implied "
                    "by --mean/--std/--scale)"),
            *(_option(f"--{name}", type=_channel_values(name), metavar="R,G,B",
                      help=f"custom preprocessing: one number or three (RGB) that {meaning}")
              for name, meaning in (("scale", "multiplies the RGB pixels (default: 1)"),
                                    ("mean", "is subtracted after --scale (default: 0)"),
                                    ("std", "divides after --mean (default: 1)")))),
        "preprocessed": _parent(_option("--preprocessed", action="store_true",
                                        help="the arrays given are already model input")),
        "seed": _parent(_option("--seed", type=int, help="seed of subsets (and of convert's random weights) "
                                "(default: 0)")),
        "evaluation": _parent(
            _option("--eval-size", **number, help="evaluate a seeded, class-stratified subset of N images"),
            _option("--labels", metavar="FILE", help="class names in model-output order, one per line")),
        "calibration": _parent(
            _option("--calibration", metavar="PATH", help="image folder, .npy or .npz to calibrate int8 on"),
            _option("--calibration-size", **number, help="seeded, class-stratified calibration subset")),
        "ranges": _parent(
            _option("--calibration-method", choices=METHODS, help="how int8 activation ranges come from the "
                    f"calibration statistics (default: {DEFAULT_METHOD}): minmax (the extremes seen), percentile, "
                    "mse (least 8-bit error per tensor), extrapolated (min/max pushed out by how much the per-image "
                    "extremes scatter)"),
            _option("--percentile", type=float, help=f"for percentile (default: {DEFAULT_PERCENTILE})"),
            _option("--extrapolation", type=float, help=f"for extrapolated (default: {DEFAULT_EXTRAPOLATION})"),
            _option("--statistics", metavar="FILE.npz", help="activation statistics saved earlier for this model "
                    "(no calibration pass)")),
        "io_types": _parent(
            _option("--input-type", choices=IO_TYPES, help="int8 model input type (default: int8)"),
            _option("--output-type", choices=IO_TYPES, help="int8 model output type (default: int8)")),
        "quantize": _parent(_option("--quantize", choices=MODES, help="quantization mode")),
        "gates": _parent(
            _option("--max-accuracy-drop", type=float, metavar="POINTS",
                    help="gate: fail (exit 1) when an artifact loses more top-1 points"),
            _option("--min-agreement", type=float, metavar="FRACTION",
                    help="gate: fail (exit 1) when an artifact agrees with the float top-1 less often")),
        "timing": _parent(
            _option("--bench-runs", **number, help="timed runs per artifact at batch 1, 0 skips"),
            _option("--no-per-layer", dest="per_layer", action="store_false",
                    help="skip the per-layer error analysis")),
        "threads": _parent(_option("--threads", type=int, help="inference threads")),
        "force": _parent(_option("--force", action="store_true",
                                 help="write into a non-empty output, replacing an earlier run's files")),
    }


SUMMARY_DOC = """Per-stage output shapes, parameters and multiply-accumulates of a ResNet, with totals."""
BENCH_DOC = """Latency of .tflite/.onnx files on this device (no TensorFlow needed).

Each model loads in its runtime (ai-edge-litert, tflite-runtime or onnxruntime): the first inference is timed,
then after a warm-up each run: min, mean, std, p50/p90/p95/p99, max, throughput and peak resident memory.
Several models give a table with the speed-up against the first one."""


def _api_defaults(api):
    """{field or parameter name: default} of a request dataclass or a function."""
    import inspect

    if dataclasses.is_dataclass(api):
        return {field.name: field.default for field in dataclasses.fields(api)}
    return {name: parameter.default for name, parameter in inspect.signature(api).parameters.items()}


def quote_api_defaults(parser, api):
    """End each option's help with the default the API applies when the option is left out."""
    defaults = _api_defaults(api)
    for action in parser._actions:
        default = defaults.get(action.dest)
        if action.option_strings and action.help and "default" not in action.help and \
                isinstance(default, (int, float, str)) and not isinstance(default, bool):
            action.help += f" (default: {default})"


def _command(commands, name, shared, doc, examples):
    """A subcommand with fresh copies of the `shared` option groups, described by the API function's
    docstring, whose --help ends with worked examples."""
    import inspect

    summary, _, description = inspect.cleandoc(doc).partition("\n\n")
    options = shared_options()
    return commands.add_parser(name, parents=[options[group] for group in shared],
                               help=summary[0].lower() + summary[1:].rstrip("."),
                               description=f"{summary}\n\n{description}".strip(),
                               epilog="example:\n" + "\n".join(f"  {line}" for line in examples),
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser():
    from .check.golden import merge_golden
    from .check.workflows import CompareRequest, ReferenceRequest, compare_artifacts, is_golden, write_reference
    from .convert import ConvertConfig
    from .convert import convert as convert_job
    from .device.bench import benchmark
    from .model.source import save_folded
    from .quantize.workflow import QuantizeRequest, quantize_artifact

    parser = OneLineParser(prog=PROG, description="Take a Keras ResNet to the edge: fold BatchNorm, quantize to int8, "
                           "export TFLite and ONNX, and check accuracy parity and latency.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser, required=True)
    model_help = "a .keras file, or a builder name such as resnet50"

    summary = _command(commands, "summary", ("size",), SUMMARY_DOC,
                       ["edge-resnet summary --model resnet50 --input-size 224",
                        "edge-resnet summary --model resnet34 --shortcut A --plain"])
    summary.add_argument("--model", default="resnet50", choices=BUILDER_NAMES, help="network depth (default: resnet50)")
    summary.add_argument("--shortcut", choices=SHORTCUTS, help="A zero-pad, B projection where dimensions change "
                         "(default), C always")
    summary.add_argument("--stride-at", choices=STRIDE_PLACEMENTS, help="bottleneck stride on the 1x1 (v1, default) "
                         "or the 3x3 (v1.5)")
    summary.add_argument("--plain", action="store_true", help="no shortcuts (the paper's plain net)")
    summary.add_argument("--width", type=float, help="filter multiplier (default: 1.0)")
    summary.set_defaults(handler=run_summary, needs_keras=True)

    fold = _command(commands, "fold", ("size", "weights"), save_folded.__doc__,
                    ["edge-resnet fold resnet50 --output resnet50_folded.keras",
                     "edge-resnet fold my_model.keras --output my_model_folded.keras --json"])
    fold.add_argument("model", metavar="MODEL", help=model_help)
    fold.add_argument("--output", required=True, metavar="FILE.keras", help="where to save the folded model")
    fold.add_argument("--json", action="store_true", help="print the report as JSON")
    fold.set_defaults(handler=run_fold, needs_keras=True)

    quantize = _command(
        commands, "quantize", ("size", "weights", "quantize", "calibration", "seed", "preprocessing", "preprocessed",
                               "io_types", "ranges"),
        quantize_artifact.__doc__,
        ["edge-resnet quantize resnet50 --weights imagenet --calibration val/ \\",
         "    --calibration-size 300 --quantize int8 --output resnet50_int8.tflite",
         "edge-resnet quantize model.keras --quantize float16 --output model_fp16.tflite",
         "edge-resnet quantize model.keras --calibration calib/ --output model_int8.onnx",
         "edge-resnet quantize model_float32.tflite --calibration calib/ --output model_int8.tflite  # no TensorFlow",
         "edge-resnet quantize model.keras --quantize none --output model.onnx --opset 17"])
    quantize.add_argument("model", metavar="MODEL", help=f"{model_help}, or a float32 .tflite (int8 only)")
    quantize.add_argument("--output", required=True, metavar="FILE", help=".tflite or .onnx picks the format")
    quantize.add_argument("--save-statistics", metavar="FILE.npz", help="save the activation statistics, to try "
                          "another --calibration-method without calibrating again")
    quantize.add_argument("--per-tensor", dest="per_channel", action="store_false",
                          help="per-tensor instead of per-channel weights")
    quantize.add_argument("--no-fold", dest="fold", action="store_false", help="convert without folding BatchNorm")
    onnx_options = quantize.add_argument_group("ONNX (.onnx output)")
    onnx_options.add_argument("--opset", type=int, help="ONNX opset, 13-18")
    onnx_options.add_argument("--onnx-route", choices=ONNX_ROUTES, help="int8 by onnxruntime static quantization "
                              "(ort) or from the int8 TFLite model (tflite)")
    onnx_options.add_argument("--activation-type", choices=ACTIVATION_TYPES, help="onnxruntime activations: uint8 "
                              "(U8S8, fastest on x86) or int8 (S8S8)")
    onnx_options.add_argument("--onnx-format", choices=ONNX_FORMATS, help="QDQ or QOperator graph")
    onnx_options.add_argument("--full-range", action="store_true", help="8-bit instead of 7-bit weights (only for "
                              "devices whose int8 kernels do not saturate: ARM, or x86 with VNNI)")
    quantize.set_defaults(handler=run_quantize, needs_keras=lambda args: not args.model.endswith(".tflite"))

    compare = _command(
        commands, "compare", ("size", "weights", "evaluation", "seed", "gates", "timing", "preprocessing",
                              "preprocessed"),
        compare_artifacts.__doc__,
        ["edge-resnet compare --reference model.keras model_int8.tflite model_int8.onnx \\",
         "    --data val/ --labels labels.txt --report report/ --max-accuracy-drop 1 --min-agreement 0.98",
         "edge-resnet compare --reference golden/ model_int8.tflite  # on a device, no TensorFlow"])
    compare.add_argument("--reference", required=True, metavar="MODEL|GOLDEN", help="the float model (a .keras "
                         "file or a builder name), or a golden folder from edge-resnet reference")
    compare.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=".tflite or .onnx files")
    compare.add_argument("--data", metavar="PATH", help="class folders, a flat folder (agreement only), or .npz with "
                         "x (and y); with golden outputs, default: where their images were")
    compare.add_argument("--report", metavar="DIR", help="write parity.json, parity.md and parity.html here")
    compare.add_argument("--batch-size", type=int, help="reference batch size")
    compare.set_defaults(handler=run_compare, needs_keras=lambda args: not is_golden(args.reference))

    reference = _command(
        commands, "reference", ("size", "weights", "evaluation", "seed", "force", "preprocessing", "preprocessed"),
        write_reference.__doc__,
        ["edge-resnet reference model.keras --data val/ --output golden/",
         "KERAS_BACKEND=jax edge-resnet reference model.keras --data val/ --output golden/ --batch-size 256",
         "edge-resnet reference model.keras --data val/ --shard 2/4 --output golden_2/"])
    reference.add_argument("model", metavar="MODEL", help=model_help)
    reference.add_argument("--data", required=True, metavar="PATH", help="class folders, a flat folder, or "
                           ".npy/.npz with x (and y)")
    reference.add_argument("--output", required=True, metavar="DIR", help="the golden folder to write")
    reference.add_argument("--batch-size", type=int, metavar="N", help="default: 256 on a GPU, 8 on the CPU")
    reference.add_argument("--shard", metavar="I/N", help="write only the I-th of N consecutive parts")
    reference.set_defaults(handler=run_reference, needs_keras=True)

    merge = _command(commands, "merge", ("force",), merge_golden.__doc__,
                     ["edge-resnet merge golden_1/ golden_2/ golden_3/ golden_4/ --output golden/"])
    merge.add_argument("shards", nargs="+", metavar="SHARD", help="golden folders written with --shard")
    merge.add_argument("--output", required=True, metavar="DIR", help="the merged golden folder")
    merge.set_defaults(handler=run_merge, needs_keras=False)

    convert = _command(
        commands, "convert", ("size", "weights", "quantize", "calibration", "evaluation", "seed", "force", "gates",
                              "io_types", "preprocessing", "timing", "threads", "ranges"),
        convert_job.__doc__,
        ["edge-resnet convert --quantize int8",
         "edge-resnet convert --model my_model.keras --calibration calib/ --eval val/ --output out/",
         "edge-resnet convert --weights imagenet --calibration imagenet_val/ --calibration-size 300 \\",
         "    --eval-size 5000 --labels imagenet_classes.txt --max-accuracy-drop 1 --min-agreement 0.98 \\",
         "    --output rn50/",
         "edge-resnet convert --quantize int8 --input-type uint8 --formats tflite --output uint8_device/"])
    convert.add_argument("--model", metavar="NAME|FILE.keras", help="resnet18/34/50/101/152, or your .keras model")
    convert.add_argument("--eval", metavar="PATH", help="images to check parity on (default: the calibration "
                         "source's images not calibrated on)")
    convert.add_argument("--formats", type=parse_formats, metavar="LIST", help="tflite, onnx or tflite,onnx "
                         "(default: both; tflite only for float16/dynamic)")
    convert.add_argument("--output", metavar="DIR", help="output directory")
    convert.set_defaults(handler=run_convert, needs_keras=True)

    bench = _command(commands, "bench", ("threads", "preprocessing", "preprocessed"),
                     BENCH_DOC, ["edge-resnet bench model_fp32.tflite model_int8.tflite --threads 2",
                                 "edge-resnet bench model_int8.onnx --duration 10 --batch 8 --json",
                                 "edge-resnet bench model_int8.tflite --input photo.jpg"])
    bench.add_argument("models", nargs="+", metavar="MODEL", help=".tflite or .onnx files")
    bench.add_argument("--warmup", type=int, help="untimed runs after the first")
    timing = bench.add_mutually_exclusive_group()
    timing.add_argument("--runs", type=int, help="timed runs")
    timing.add_argument("--duration", type=float, metavar="SECONDS", help="time runs for this long instead")
    bench.add_argument("--batch", type=int, help="batch size")
    bench.add_argument("--input", metavar="FILE", help="an image, image folder or .npz to feed (default: random)")
    bench.add_argument("--profile", action="store_true", help="per-operator times (onnxruntime models)")
    bench.add_argument("--json", action="store_true", help="print JSON for CI and device fleets")
    bench.set_defaults(handler=run_bench, needs_keras=False)
    for command, api in ((quantize, QuantizeRequest), (compare, CompareRequest), (reference, ReferenceRequest),
                         (convert, ConvertConfig), (bench, benchmark)):
        quote_api_defaults(command, api)
    return parser


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    import signal

    args = build_parser().parse_args(argv)
    one_line_warnings(PROG)
    # `kill` unwinds like Ctrl-C, so no half-written output survives either
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        if args.needs_keras(args) if callable(args.needs_keras) else args.needs_keras:
            import_keras_quietly()
        return args.handler(args)
    except EdgeResnetError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing half-written was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
