"""Command line: parse, call the public API, print, exit.

Each command is a request dataclass and one API call. Its options are made
from the request's fields (flag, help and argparse settings are declared
beside each field, see options.py); shared groups of fields are base
requests, which become parent parsers. Options left out are None, so the
request's own defaults apply, and each option's help quotes that default.

Exit codes: 0 success, 1 a parity or latency gate failed, 2 bad input or
usage (one line on stderr, no traceback).
"""

import argparse
import dataclasses
import inspect
import sys

from . import __version__
from .errors import BudgetNotMet, EdgeResnetError
from .files import STORAGE_ERRNOS
from .options import option_groups, own_options
from .quiet import import_keras_quietly, one_line_warnings

PROG = "edge-resnet"
EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def request_from(request_class, args):
    """A request built from the parsed arguments by its field names; options left out keep the field's default."""
    given = {item.name: getattr(args, item.name) for item in dataclasses.fields(request_class)
             if getattr(args, item.name, None) is not None}
    return request_class(**given)


def gate_exit(failures):
    for failure in failures:
        print(f"{PROG}: gate failed: {failure}", file=sys.stderr)
    return EXIT_GATE_FAILED if failures else EXIT_OK


def run_summary(request, args):
    from .model.source import summary_table

    print(summary_table(request))
    return EXIT_OK


def run_fold(request, args):
    import json

    from .model.source import save_folded

    report = save_folded(request)
    print(json.dumps(report.to_dict(), indent=2) if args.json else f"{report.format()}\nwrote {request.output}")
    return EXIT_OK


def run_quantize(request, args):
    from .quantize.workflow import quantize_artifact

    quantize_artifact(request)
    return EXIT_OK


def run_compare(request, args):
    from .check.report import markdown_report
    from .check.workflows import compare_artifacts
    from .quiet import progress_bar

    report = compare_artifacts(request, progress=progress_bar("evaluating"))
    print(markdown_report(report))
    return gate_exit(report["gates"]["failures"])


def run_reference(request, args):
    from .check.workflows import describe_manifest, write_reference
    from .quiet import progress_bar

    print(describe_manifest(write_reference(request, progress_bar("reference")), request.output))
    return EXIT_OK


def run_merge(request, args):
    from .check.golden import merge_golden

    manifest = merge_golden(request.shards, request.output, force=request.force)
    print(f"merged {len(request.shards)} shards into {request.output} ({manifest['data']['size']} golden outputs)")
    return EXIT_OK


def run_bench(request, args):
    import json

    from .check.workflows import bench_artifacts
    from .device.bench import comparison_table, runtime_notes

    results = []
    for result in bench_artifacts(request):
        results.append(result)
        if not args.json:
            print(result.describe(request.profile), flush=True)
    print(json.dumps([result.to_dict() for result in results], indent=2) if args.json else
          "\n".join([comparison_table(results), *runtime_notes(results)]))
    return EXIT_OK


def run_compile(request, args):
    import json

    from .quantize.ethos_u import compile_for_npu, describe_compile

    records = compile_for_npu(request)
    print(json.dumps(records, indent=2) if args.json else "\n".join(
        f"{describe_compile(record)}\nwrote {', '.join(record['files'].values())} to {request.output}"
        for record in records))
    return EXIT_OK


def run_convert(request, args):
    from .convert import convert

    report = convert(request, log=lambda line: print(line, flush=True))
    return gate_exit(report["parity"]["gates"]["failures"])


def argparse_type(parse):
    """`parse` as an argparse type: our one-line error becomes argparse's usage error, at parse time."""

    def convert(text):
        try:
            return parse(text)
        except EdgeResnetError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(parse, "__name__", "value")  # argparse's "invalid <type> value" names it
    return convert


def add_options(parser, request_class):
    """Add the options `request_class` itself declares; each left out is None."""
    headings = {}
    for item in own_options(request_class):
        settings = dict(item.metadata["argparse"])
        heading = settings.pop("group", None)
        if "type" in settings:
            settings["type"] = argparse_type(settings["type"])
        if heading and heading not in headings:
            headings[heading] = parser.add_argument_group(heading)
        target = headings[heading] if heading else parser
        if item.metadata["flags"]:
            target.add_argument(*item.metadata["flags"], dest=item.name, default=None, help=item.metadata["help"],
                                required=item.default is dataclasses.MISSING, **settings)
        else:
            target.add_argument(item.name, help=item.metadata["help"], **settings)


def option_parents(request_class):
    """A parent parser for each shared group of options the request has."""
    parents = []
    for group in option_groups(request_class):
        parents.append(argparse.ArgumentParser(add_help=False))
        add_options(parents[-1], group)
    return parents


def quote_defaults(parser, request_class):
    """End each option's help with the default the request applies when the option is left out."""
    defaults = {item.name: item.default for item in dataclasses.fields(request_class)}
    for action in parser._actions:
        default = defaults.get(action.dest)
        if action.option_strings and "default" not in action.help and \
                isinstance(default, (int, float, str)) and not isinstance(default, bool):
            action.help += f" (default: {default})"


def add_command(commands, name, request_class, handler, doc, examples, needs_keras):
    """A subcommand for `request_class`, described by its API function's docstring, whose --help ends with
    worked examples. `needs_keras`: a bool, or a function of the parsed arguments."""
    summary, _, description = inspect.cleandoc(doc).partition("\n\n")
    command = commands.add_parser(name, parents=option_parents(request_class),
                                  help=summary[0].lower() + summary[1:].rstrip("."),
                                  description=f"{summary}\n\n{description}".strip(),
                                  epilog="example:\n" + "\n".join(f"  {line}" for line in examples),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(command, request_class)
    quote_defaults(command, request_class)
    command.set_defaults(request_class=request_class, handler=handler, needs_keras=needs_keras)
    return command


def build_parser():
    from .check.golden import merge_golden
    from .check.workflows import (BenchRequest, CompareRequest, MergeRequest, ReferenceRequest, bench_artifacts,
                                  compare_artifacts, is_golden, write_reference)
    from .convert import ConvertConfig, convert
    from .model.source import FoldRequest, SummaryRequest, save_folded, summary_table
    from .quantize.ethos_u import CompileRequest, compile_for_npu
    from .quantize.workflow import QuantizeRequest, quantize_artifact

    parser = OneLineParser(prog=PROG, description="Take a Keras ResNet to the edge: fold BatchNorm, quantize to int8, "
                           "export TFLite and ONNX, and check accuracy parity and latency.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser, required=True)
    add_command(commands, "summary", SummaryRequest, run_summary, summary_table.__doc__,
                ["edge-resnet summary --model resnet50 --input-size 224",
                 "edge-resnet summary --model resnet34 --shortcut A",
                 "edge-resnet summary --model resnet34 --plain"], needs_keras=True)
    fold = add_command(commands, "fold", FoldRequest, run_fold, save_folded.__doc__,
                       ["edge-resnet fold resnet50 --output resnet50_folded.keras",
                        "edge-resnet fold my_model.keras --output my_model_folded.keras --json"], needs_keras=True)
    fold.add_argument("--json", action="store_true", help="print the report as JSON")
    add_command(commands, "quantize", QuantizeRequest, run_quantize, quantize_artifact.__doc__,
                ["edge-resnet quantize resnet50 --weights imagenet --calibration val/ \\",
                 "    --calibration-size 300 --quantize int8 --output resnet50_int8.tflite",
                 "edge-resnet quantize model.keras --quantize float16 --output model_fp16.tflite",
                 "edge-resnet quantize model.keras --calibration calib/ --output model_int8.onnx",
                 "edge-resnet quantize model_float32.tflite --calibration calib/ --output model_int8.tflite  "
                 "# no TensorFlow",
                 "edge-resnet quantize model.keras --quantize none --output model.onnx --opset 17"],
                needs_keras=lambda args: not args.model.endswith(".tflite"))
    add_command(commands, "compare", CompareRequest, run_compare, compare_artifacts.__doc__,
                ["edge-resnet compare --reference model.keras model_int8.tflite model_int8.onnx \\",
                 "    --data val/ --labels labels.txt --report report/ --max-accuracy-drop 1 --min-agreement 0.98",
                 "edge-resnet compare --reference golden/ model_int8.tflite  # on a device, no TensorFlow"],
                needs_keras=lambda args: not is_golden(args.reference))
    add_command(commands, "reference", ReferenceRequest, run_reference, write_reference.__doc__,
                ["edge-resnet reference model.keras --data val/ --output golden/",
                 "KERAS_BACKEND=jax edge-resnet reference model.keras --data val/ --output golden/ --batch-size 256",
                 "edge-resnet reference model.keras --data val/ --shard 2/4 --output golden_2/"], needs_keras=True)
    add_command(commands, "merge", MergeRequest, run_merge, merge_golden.__doc__,
                ["edge-resnet merge golden_1/ golden_2/ golden_3/ golden_4/ --output golden/"], needs_keras=False)
    add_command(commands, "convert", ConvertConfig, run_convert, convert.__doc__,
                ["edge-resnet convert --quantize int8",
                 "edge-resnet convert --model my_model.keras --calibration calib/ --eval val/ --output out/",
                 "edge-resnet convert --weights imagenet --calibration imagenet_val/ --calibration-size 300 \\",
                 "    --eval-size 5000 --labels imagenet_classes.txt --max-accuracy-drop 1 --min-agreement 0.98 \\",
                 "    --output rn50/",
                 "edge-resnet convert --quantize int8 --input-type uint8 --formats tflite --output uint8_device/"],
                needs_keras=True)
    bench = add_command(commands, "bench", BenchRequest, run_bench, bench_artifacts.__doc__,
                        ["edge-resnet bench model_fp32.tflite model_int8.tflite --threads 2",
                         "edge-resnet bench model_int8.onnx --duration 10 --batch 8 --json",
                         "edge-resnet bench model_int8.tflite --input photo.jpg"], needs_keras=False)
    bench.add_argument("--json", action="store_true", help="print JSON for CI and device fleets")
    compile_ = add_command(commands, "compile", CompileRequest, run_compile, compile_for_npu.__doc__,
                           ["edge-resnet compile out/resnet50_int8.tflite --target ethos-u55-256 --output npu/",
                            "edge-resnet compile model_int8.tflite --target ethos-u85-256 --system-config "
                            "Ethos_U85_SYS_DRAM_High --memory-mode Dedicated_Sram_384KB --output npu/ --json"],
                           needs_keras=False)
    compile_.add_argument("--json", action="store_true", help="print the record as JSON")
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
        return args.handler(request_from(args.request_class, args), args)
    except EdgeResnetError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BudgetNotMet as failure:
        print(f"{PROG}: gate failed: {failure}", file=sys.stderr)
        return EXIT_GATE_FAILED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing half-written was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:
            raise
        print(f"{PROG}: error: cannot write {error.filename or 'the output'}: {error.strerror}; "
              "free space or choose another output (nothing half-written was left)", file=sys.stderr)
        return EXIT_BAD_INPUT



if __name__ == "__main__":
    sys.exit(main())
