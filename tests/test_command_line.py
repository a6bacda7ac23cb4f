"""How the command line is declared: each command's options are the fields
of its request, shared options are declared once (on a base request),
choices come from the API's constants, and requests are built from the
parsed arguments by field names. All in-process: no interpreter start-up."""

import argparse
import dataclasses
import inspect
import re

import pytest

from edge_resnet import cli
from edge_resnet.check.workflows import BenchRequest, CompareRequest, MergeRequest, ReferenceRequest
from edge_resnet.convert import ConvertConfig
from edge_resnet.data.images import PREPROCESSING_MODES
from edge_resnet.model.source import BUILDER_NAMES, SHORTCUTS, STRIDE_PLACEMENTS, FoldRequest, SummaryRequest
from edge_resnet.errors import ConfigError
from edge_resnet.options import own_options
from edge_resnet.quantize.ethos_u import CompileRequest
from edge_resnet.quantize.ranges import AUTO_SCORES, METHODS
from edge_resnet.quantize.recipe import (ACTIVATION_TYPES, FALLBACK_PRECISIONS, IO_TYPES, MODES, ONNX_FORMATS,
                                         ONNX_ROUTES)
from edge_resnet.quantize.workflow import QuantizeRequest

REQUESTS = {"convert": ConvertConfig, "quantize": QuantizeRequest, "compare": CompareRequest,
            "reference": ReferenceRequest, "summary": SummaryRequest, "fold": FoldRequest, "merge": MergeRequest,
            "bench": BenchRequest, "compile": CompileRequest}
NOT_OPTIONS = {"command", "handler", "needs_keras", "request_class"}
PRINTING_ONLY = {"fold": {"json"}, "bench": {"json"}, "compile": {"json"}}  # how the command line prints, not what the API does


def subparsers():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction))
    return action.choices


def option_choices(parser):
    return {flag: tuple(action.choices) for action in parser._actions if action.choices
            for flag in action.option_strings}


@pytest.mark.parametrize("command, request_class", REQUESTS.items())
def test_every_option_is_a_request_field_and_every_field_an_option(command, request_class):
    dests = {action.dest for action in subparsers()[command]._actions if action.dest != "help"} - NOT_OPTIONS
    fields = {field.name for field in dataclasses.fields(request_class)}
    assert dests == fields | PRINTING_ONLY.get(command, set())


def test_commands_are_all_made_from_requests():
    assert set(subparsers()) == set(REQUESTS)


def test_options_left_out_leave_the_api_defaults():
    args = cli.build_parser().parse_args(["convert"])
    assert cli.request_from(ConvertConfig, args) == ConvertConfig()
    args = cli.build_parser().parse_args(["compare", "--reference", "golden", "a.tflite"])
    assert cli.request_from(CompareRequest, args) == CompareRequest("golden", ["a.tflite"])


def test_options_given_reach_the_request():
    args = cli.build_parser().parse_args(
        ["convert", "--formats", "onnx,tflite,onnx", "--no-per-layer", "--bench-runs", "3", "--calibration-method",
         "percentile", "--percentile", "99.9", "--mean", "1,2,3", "--input-size", "64", "--weights", "random"])
    config = cli.request_from(ConvertConfig, args)
    assert config.formats == ("onnx", "tflite") and config.per_layer is False and config.bench_runs == 3
    assert (config.calibration_method, config.percentile, config.mean, config.input_size) == \
        ("percentile", 99.9, (1.0, 2.0, 3.0), 64)
    args = cli.build_parser().parse_args(["quantize", "m.keras", "--output", "m.onnx", "--per-tensor", "--no-fold",
                                          "--full-range"])
    request = cli.request_from(QuantizeRequest, args)
    assert (request.per_channel, request.fold, request.full_range, request.recipe().onnx_reduce_range) == \
        (False, False, True, False)


def test_choices_come_from_the_api_constants():
    commands = subparsers()
    assert option_choices(commands["summary"]) == {
        "--model": BUILDER_NAMES, "--shortcut": SHORTCUTS, "--stride-at": STRIDE_PLACEMENTS}
    expected = {"--quantize": MODES, "--input-type": IO_TYPES, "--output-type": IO_TYPES,
                "--preprocessing": PREPROCESSING_MODES, "--calibration-method": METHODS,
                "--onnx-route": ONNX_ROUTES, "--activation-type": ACTIVATION_TYPES, "--onnx-format": ONNX_FORMATS,
                "--fallback-precision": FALLBACK_PRECISIONS, "--calibration-score": AUTO_SCORES}
    assert option_choices(commands["quantize"]) == expected
    from edge_resnet.model.resnet import BUILDERS

    assert tuple(BUILDERS) == BUILDER_NAMES


def declarations_of(flag):
    """The request classes (bases included) whose own fields declare `flag`."""
    classes = {base for request_class in REQUESTS.values() for base in request_class.__mro__
               if dataclasses.is_dataclass(base)}
    return {base for base in classes for field in own_options(base) if flag in offered_flags(field)}


def offered_flags(field):
    """A field's flags, with the --no- twin of each that argparse's BooleanOptionalAction adds."""
    flags = field.metadata["flags"]
    if field.metadata["argparse"].get("action") is argparse.BooleanOptionalAction:
        flags = (*flags, *("--no-" + flag[2:] for flag in flags if flag.startswith("--")))
    return flags


def test_each_shared_option_is_declared_once():
    """An option that several commands take is one field of one base
    request, which gives every command its parent parser; cli.py declares
    no option of a request."""
    takers = {}
    for name, parser in subparsers().items():
        for action in parser._actions:
            for flag in action.option_strings:
                takers.setdefault(flag, set()).add(name)
    shared = {flag for flag, names in takers.items() if len(names) > 1 and flag not in ("-h", "--help")}
    # the same flag meaning different things: a file or a folder, a model option or a name, a batch size per run,
    # a budget of quantize's float32-parts search or a gate of compare and convert
    own_meaning = {"--output", "--model", "--data", "--batch-size", "--json", "--max-accuracy-drop", "--min-agreement"}
    assert len(shared) >= 20
    assert {flag: len(declarations_of(flag)) for flag in shared - own_meaning} == \
        {flag: 1 for flag in shared - own_meaning}
    written_in_cli = set(re.findall(r"[\"'](--[a-z-]+)[\"']", inspect.getsource(cli)))
    assert written_in_cli == {"--version", "--json"}


def test_help_quotes_the_default_of_the_field_each_option_sets():
    """One default each: the request's. Options that two commands share quote
    each command's own (compare times 20 runs, convert 30)."""
    commands = subparsers()
    help_of = {command: {action.dest: action.help or "" for action in commands[command]._actions}
               for command in REQUESTS}
    assert CompareRequest.bench_runs != ConvertConfig.bench_runs
    for command in ("compare", "convert"):
        assert help_of[command]["bench_runs"].endswith(f"(default: {REQUESTS[command].bench_runs})")
    for command, request_class in REQUESTS.items():
        for field in dataclasses.fields(request_class):
            if isinstance(field.default, (int, float, str)) and not isinstance(field.default, bool):
                assert f"default: {field.default}" in help_of[command][field.name], (command, field.name)


def test_bench_takes_runs_or_a_duration_not_both():
    from tests.cli import run_in_process

    result = run_in_process("bench", "missing.tflite", "--runs", "5", "--duration", "1")
    assert result.returncode == 2
    assert result.stderr == "edge-resnet: error: give --runs or --duration, not both\n"
    with pytest.raises(ConfigError, match="not both"):
        BenchRequest(("m.tflite",), runs=5, duration=1.0)


def test_requests_take_text_as_typed_and_refuse_bad_settings_before_any_work():
    from edge_resnet.data.images import PreprocessingRequest
    from edge_resnet.errors import DataError

    assert PreprocessingRequest(mean="1,2,3", std="0.5").preprocessing_at(8, 8).std == (0.5,) * 3
    with pytest.raises(DataError, match="mean: give one number or three"):
        PreprocessingRequest(mean="a,b")
    assert ConvertConfig(formats="onnx,tflite,onnx").formats == ("onnx", "tflite")
    with pytest.raises(DataError, match="--batch and --runs must be at least 1"):
        BenchRequest(("m.tflite",), batch=0, input="photo.jpg")
    for threads in (0, 257, 2.5, True):  # one rule for --threads, from the command line or from Python
        with pytest.raises(DataError, match="--threads is a whole number from 1 to 256"):
            BenchRequest(("m.tflite",), threads=threads)
    BenchRequest(("m.tflite",), threads=256)
    for dropped in ({"preprocessing": "torch"}, {"mean": "1"}, {"preprocessed": True}):  # once ignored: random input
        with pytest.raises(ConfigError, match="without --input bench feeds random input"):
            BenchRequest(("m.tflite",), **dropped)
    BenchRequest(("m.tflite",), input="photo.jpg", preprocessing="torch")
    with pytest.raises(TypeError):  # only the model and output are positional
        QuantizeRequest("m.keras", "m.tflite", "imagenet")


def test_int8_onnx_options_with_a_float_onnx_are_refused_not_dropped(tmp_path):
    """--activation-type, --onnx-format, --full-range and --onnx-route shape only the int8 ONNX: with another
    --quantize they were once dropped without a word."""
    from tests.cli import run_in_process

    result = run_in_process("quantize", "resnet18", "--quantize", "none", "--output", tmp_path / "x.onnx",
                            "--full-range", "--onnx-route", "tflite")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().endswith("--onnx-route, --full-range: for the int8 ONNX, and --quantize is none; "
                                          "add --quantize int8, or leave out --onnx-route, --full-range")
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
    # the ONNX converted from the int8 TFLite keeps the TFLite's quantization: onnxruntime's settings do nothing
    result = run_in_process("quantize", "resnet18", "--calibration", "x", "--output", tmp_path / "x.onnx",
                            "--onnx-route", "tflite", "--activation-type", "int8")
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "--activation-type: for onnxruntime's quantization (--onnx-route ort), and --onnx-route tflite converts the "
        "int8 TFLite as it is; leave out --activation-type"), result.stderr
    assert not list(tmp_path.iterdir())
