"""`edge-resnet quantize` as one call: a .keras model, a builder name or a
float32 .tflite in, one .tflite or .onnx artifact out, with its recipe JSON."""

import argparse
import os
from dataclasses import KW_ONLY, dataclass, fields

from ..data.images import DEFAULT_CALIBRATION_SIZE, PreprocessedRequest, PreprocessingRequest, SeedRequest
from ..data.labels import LabelsRequest, check_labels_file
from ..errors import ConfigError
from ..model.source import MODEL_HELP, ModelRequest
from ..options import option
from .ranges import AUTO, AUTO_SCORES, DEFAULT_EXTRAPOLATION, DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS
from .recipe import (ACTIVATION_TYPES, BUDGET_TERMS, DEFAULT_OPSET, FALLBACK_PRECISIONS, IO_TYPES, MODES,
                     ONNX_FORMATS, ONNX_ROUTES, QuantizationRecipe)


@dataclass(frozen=True, kw_only=True)
class QuantizationRequest:
    """The quantization mode, and for int8 the calibration data, range method and I/O types."""

    quantize: str = option("--quantize", default="int8", choices=MODES, help="quantization mode")
    calibration: str = option("--calibration", default=None, metavar="PATH",
                              help="image folder, .npy or .npz to calibrate int8 on")
    calibration_size: int = option("--calibration-size", default=DEFAULT_CALIBRATION_SIZE, type=int, metavar="N",
                                   help="seeded, class-stratified calibration subset")
    calibration_method: str = option(
        "--calibration-method", default=None, choices=METHODS,
        help=f"how int8 activation ranges come from the calibration statistics (default: {DEFAULT_METHOD}): auto "
             "(each rule's ranges fitted on a quarter of the calibration images and scored on the rest, the best kept), minmax "
             "(the extremes seen), percentile, mse (least 8-bit error per tensor), extrapolated (min/max pushed out "
             "by how much the per-image extremes scatter), consensus (per tensor, the median of the other rules' "
             "ranges)")
    percentile: float = option("--percentile", default=None, type=float,
                               help=f"for percentile (default: {DEFAULT_PERCENTILE})")
    extrapolation: float = option("--extrapolation", default=None, type=float,
                                  help=f"for extrapolated (default: {DEFAULT_EXTRAPOLATION})")
    tail_room: float = option("--tail-room", default=None, type=float, metavar="K",
                              help="int8, with minmax, extrapolated or auto's choice of one of them: widen each "
                                   "activation range to where the extremes of K times as many images as the "
                                   "calibration's typically lie (read off how the calibration images' largest "
                                   "values spread), for deployments where a few inputs reach past every "
                                   "calibration image; costs the other images resolution (on a classifier's "
                                   "logits it can raise SQNR and lower top-1 agreement) (default: none)")
    calibration_score: str = option("--calibration-score", default=None, choices=AUTO_SCORES,
                                    help="int8, with auto: how it scores each rule on the held-out calibration "
                                         "images: pooled (the output SQNR over all of them, the default; the "
                                         "images with the largest errors rule it) or per-image (the mean of each "
                                         "image's output SQNR in dB: the typical image; on classifiers' logits it "
                                         "kept more top-1 agreement and less SQNR)")
    statistics: str = option("--statistics", default=None, metavar="FILE.npz",
                             help="activation statistics saved earlier for this model (no calibration pass)")
    input_type: str = option("--input-type", default=None, choices=IO_TYPES, help="int8 model input type (default: int8)")
    output_type: str = option("--output-type", default=None, choices=IO_TYPES,
                              help="int8 model output type (default: int8)")
    min_sqnr: float = option("--min-sqnr", default=None, type=float, metavar="DB",
                             help="int8: keep the fewest network parts out of int8 (--fallback-precision) that "
                                  "bring the output SQNR on "
                                  "held-out calibration images to DB (exit 1 if even all of them cannot)")
    min_sqnr_gain: float = option("--min-sqnr-gain", default=None, type=float, metavar="DB",
                                  help="int8: as --min-sqnr, with the level full int8's output SQNR on the same "
                                       "held-out images plus DB, above 0 and below 100 (a gain carries over to "
                                       "other images more often than a level); not with --min-sqnr")
    bias_correction: bool = option("--bias-correction", default=None, action=argparse.BooleanOptionalAction,
                                   help="int8 TFLite and ONNX: shift each layer's bias, part by part, by the mean "
                                        "error of its int8 outputs against the float model's on the calibration "
                                        "images. Neither flag (the default): kept only where it "
                                        "raises the logits' mean per-image SQNR on those images; --bias-correction: "
                                        "always; --no-bias-correction: never")
    fallback_precision: str = option("--fallback-precision", default=None, choices=FALLBACK_PRECISIONS,
                                     help="with a budget: what the parts it needs run in, in the TFLite (default: "
                                          "auto, dynamic first): dynamic (int8 weights, activations quantized per "
                                          "image at run time: a fraction of float32's latency on CPUs with int8 dot "
                                          "products) or float32; the int8 ONNX keeps them in float32")


ONNX_GROUP = "ONNX (.onnx output)"
ONNX_DEFAULTS = {"opset": DEFAULT_OPSET, "onnx_route": ONNX_ROUTES[0],
                 "activation_type": QuantizationRecipe.onnx_activation_type,
                 "onnx_format": QuantizationRecipe.onnx_format, "full_range": not QuantizationRecipe.onnx_reduce_range}
ONNX_INT8_OPTIONS = ("onnx_route", "activation_type", "onnx_format", "full_range")  # read by int8 ONNX only
ORT_QUANTIZER_OPTIONS = ("activation_type", "onnx_format", "full_range")  # read by onnxruntime's route only


@dataclass(frozen=True)
class QuantizeRequest(ModelRequest, QuantizationRequest, SeedRequest, PreprocessingRequest, PreprocessedRequest,
                      LabelsRequest):
    """What to quantize, how, and where to write it. None means the default."""

    model: str = option(metavar="MODEL", help=f"{MODEL_HELP}, or a float32 .tflite (int8 only)")
    output: str = option("--output", metavar="FILE", help=".tflite or .onnx picks the format")
    _: KW_ONLY
    save_statistics: str = option("--save-statistics", default=None, metavar="FILE.npz",
                                  help="save the activation statistics, to try another --calibration-method without "
                                       "calibrating again")
    per_channel: bool = option("--per-tensor", default=True, action="store_false",
                               help="per-tensor instead of per-channel weights")
    fold: bool = option("--no-fold", default=True, action="store_false", help="convert without folding BatchNorm")
    opset: int = option("--opset", default=None, type=int, group=ONNX_GROUP,
                        help=f"ONNX opset, 13-18 (default: {ONNX_DEFAULTS['opset']})")
    onnx_route: str = option("--onnx-route", default=None, choices=ONNX_ROUTES, group=ONNX_GROUP,
                             help="int8 by onnxruntime static quantization (ort, the default) or from the int8 "
                                  "TFLite model (tflite)")
    activation_type: str = option("--activation-type", default=None, choices=ACTIVATION_TYPES, group=ONNX_GROUP,
                                  help="onnxruntime activations: uint8 (U8S8, the default, fastest on x86) or int8 "
                                       "(S8S8)")
    onnx_format: str = option("--onnx-format", default=None, choices=ONNX_FORMATS, group=ONNX_GROUP,
                              help="QDQ (the default) or QOperator graph")
    max_accuracy_drop: float = option("--max-accuracy-drop", default=None, type=float, metavar="POINTS",
                                      help="int8: keep the fewest network parts out of int8 that keep the top-1 "
                                           "accuracy lost on held-out calibration images (they need labels) within "
                                           "POINTS (exit 1 if even all of them cannot)")
    min_agreement: float = option("--min-agreement", default=None, type=float, metavar="FRACTION",
                                  help="int8: the same, for the fraction of held-out calibration images whose top-1 "
                                       "is the float model's")
    full_range: bool = option("--full-range", default=None, action="store_true", group=ONNX_GROUP,
                              help="8-bit instead of 7-bit weights (only for devices whose int8 kernels do not "
                                   "saturate: ARM, or x86 with VNNI)")

    @property
    def target(self):
        return os.path.splitext(self.output)[1]

    def onnx_option(self, name):
        """An ONNX option (ONNX_DEFAULTS' names) as given, else its default
        (the fields stay None until then, so that onnx_flags_given can tell
        one given where nothing reads it)."""
        value = getattr(self, name)
        return ONNX_DEFAULTS[name] if value is None else value

    def onnx_flags_given(self, names=tuple(ONNX_DEFAULTS)):
        """The flags of the ONNX options among `names` set to other than their defaults."""
        return [item.metadata["flags"][0] for item in fields(self) if item.name in names
                and getattr(self, item.name) not in (None, ONNX_DEFAULTS[item.name])]

    def range_method_options(self):
        given = {"calibration_method": self.calibration_method, "percentile": self.percentile,
                 "extrapolation": self.extrapolation, "tail_room": self.tail_room,
                 "calibration_score": self.calibration_score}
        return {key: value for key, value in given.items() if value is not None}

    def recipe(self):
        if self.quantize != "int8" and self.range_method_options():
            raise ConfigError("--calibration-method, --percentile, --extrapolation, --tail-room and "
                              "--calibration-score apply to --quantize int8 only")
        if self.quantize != "int8" and self.bias_correction:
            raise ConfigError("--bias-correction applies to --quantize int8 only")
        io_types = {key: value for key, value in (("input_type", self.input_type), ("output_type", self.output_type))
                    if value}
        for budget in (*BUDGET_TERMS, "fallback_precision"):
            if getattr(self, budget) is not None:
                io_types[budget] = getattr(self, budget)
        return QuantizationRecipe.for_mode(self.quantize, per_channel=self.per_channel,
                                           onnx_activation_type=self.onnx_option("activation_type"),
                                           onnx_format=self.onnx_option("onnx_format"),
                                           onnx_reduce_range=not self.onnx_option("full_range"),
                                           **({"bias_correction": self.bias_correction}
                                              if self.bias_correction is not None else {}), **io_types,
                                           **self.range_method_options())


def check_request(request, recipe):
    """Refuse, before any work, what cannot be done."""
    from ..files import refuse_writing_over_inputs
    from .bias_correction import NEEDS_IMAGES, corrects_biases
    from .recipe import record_path
    from .statistics import check_statistics_path

    if recipe.needs_calibration and not (request.calibration or request.statistics):
        raise ConfigError("--quantize int8 needs --calibration PATH (an image folder, .npy or .npz) "
                          "or --statistics FILE")
    if request.statistics:
        check_statistics_path(request.statistics)
    if recipe.needs_calibration and request.statistics and not request.calibration \
            and recipe.calibration_method == AUTO:
        raise ConfigError("--calibration-method auto (the default) runs each rule on the calibration images the "
                          "statistics came from: give --calibration PATH with --statistics, or name a method "
                          "(e.g. --calibration-method extrapolated)")
    asked = bool(request.bias_correction)  # the default leaves them as quantized where it cannot, and says why
    if asked and request.statistics and not request.calibration and corrects_biases(recipe):
        raise ConfigError(NEEDS_IMAGES)
    if not recipe.needs_calibration and (request.statistics or request.save_statistics):
        raise ConfigError("--statistics and --save-statistics apply to --quantize int8 only")
    if request.target != ".onnx" and (given := ", ".join(request.onnx_flags_given())):
        raise ConfigError(f"{given}: for an .onnx --output, and {request.output} is not one; give --output X.onnx, "
                          f"or leave out {given}")
    if recipe.mode != "int8" and (given := ", ".join(request.onnx_flags_given(ONNX_INT8_OPTIONS))):
        raise ConfigError(f"{given}: for the int8 ONNX, and --quantize is {recipe.mode}; add --quantize int8, or "
                          f"leave out {given}")
    if request.onnx_option("onnx_route") == "tflite" and (
            given := ", ".join(request.onnx_flags_given(ORT_QUANTIZER_OPTIONS))):
        raise ConfigError(f"{given}: for onnxruntime's quantization (--onnx-route ort), and --onnx-route tflite "
                          f"converts the int8 TFLite as it is; leave out {given}")
    if recipe.fallback_precision == "dynamic" and request.target == ".onnx":
        raise ConfigError("--fallback-precision dynamic is for the TFLite: the int8 ONNX keeps the parts a budget "
                          "needs in float32 (give --fallback-precision float32 or auto, or a .tflite --output)")
    if recipe.budget() is not None and not request.calibration:
        raise ConfigError(f"{recipe.budget().flags()} searches the int8 artifact on held-out calibration images: it "
                          "needs --calibration PATH")
    if request.labels and request.max_accuracy_drop is None:
        raise ConfigError("--labels maps the calibration's class folders to the model's outputs for "
                          "--max-accuracy-drop, and nothing else reads them here: add --max-accuracy-drop or leave "
                          "--labels out")
    if request.labels:
        check_labels_file(request.labels)
    if request.calibration and request.calibration_size is not None and request.calibration_size < 1:
        raise ConfigError(f"--calibration-size must be at least 1. Received: {request.calibration_size}")
    if request.save_statistics and not request.save_statistics.endswith(".npz"):
        raise ConfigError(f"--save-statistics must end in .npz. Received: {request.save_statistics}")
    if request.model.endswith(".tflite") and (request.target != ".tflite" or recipe.mode != "int8"):
        raise ConfigError("a .tflite MODEL is quantized to int8 .tflite only (--quantize int8, --output X.tflite); "
                          "give the .keras model for other modes and ONNX")
    given = [flag for flag, value in (("--weights", request.weights), ("--input-size", request.input_size),
                                      ("--classes", request.classes)) if value is not None]
    if request.model.endswith(".tflite") and given:
        raise ConfigError(f"{', '.join(given)} for a .tflite MODEL, which carries its own weights, size and classes: "
                          "--weights, --input-size and --classes apply to builder names; leave them out")
    refuse_writing_over_inputs([request.output, str(record_path(request.output)), request.save_statistics],
                               [request.model, request.weights, request.calibration, request.statistics,
                                request.labels])


def quantize_artifact(request, log=print):
    """Fold BatchNorm and export TFLite or ONNX: int8, float16, dynamic range or float32.

    The format follows the output's suffix. int8 is full-integer
    post-training quantization (weights int8 per channel, activations int8
    per tensor), calibrated on your images or on statistics saved earlier;
    a float32 .tflite is quantized to int8 without TensorFlow. The recipe
    JSON is written beside the artifact, whose path is returned.
    """
    if request.target not in (".tflite", ".onnx"):
        raise ConfigError(f"--output must be a file name ending in .tflite or .onnx (e.g. model_int8.tflite). "
                          f"Received: {request.output}")
    from ..files import output_lock

    recipe = request.recipe()
    check_request(request, recipe)
    with output_lock(request.output):  # a second run into the same file gets one line, not a silent overwrite
        if request.model.endswith(".tflite"):
            path = _from_float_tflite(request, recipe, log)
        else:
            path = _from_keras(request, recipe, log)
    from .recipe import read_record

    record = read_record(path) if recipe.needs_calibration else {}
    mixed = record.get("mixed_precision")
    description = recipe.describe(request.target[1:], record.get("activation_ranges"))
    if request.target == ".tflite" and mixed and mixed["float_parts"] or record.get("route") == "tflite":
        description = record["quantization"]  # parts out of int8, or the int8 TFLite written as ONNX
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {description})")
    if recipe.needs_calibration:
        from .selection import describe_selection

        log(f"activation ranges: {describe_selection(record['activation_ranges'])}")
        from .bias_correction import describe_correction

        if line := describe_correction(record.get("bias_correction")):
            log(line)
        from .int8_tflite import output_grid_text

        if note := output_grid_text(record.get("output_grid")):
            log(f"note: {note}")
        if mixed:
            from .mixed import describe_record, unpinned_level_text

            log(describe_record(mixed))
            if note := unpinned_level_text(mixed):
                log(f"note: {note}")
    if request.target == ".tflite":
        from ..device.tflite_inspect import inspect_tflite

        mixed_parts = recipe.needs_calibration and mixed and mixed["float_parts"]
        lines = inspect_tflite(path).describe(integer_expected=recipe.mode == "int8" and not mixed_parts)
    else:
        from .onnx_export import describe_onnx

        lines = describe_onnx(path)
    for line in lines:
        log(line)
    if recipe.needs_calibration and mixed and not mixed["met"]:
        from ..errors import BudgetNotMet

        from .mixed import unmet_line

        raise BudgetNotMet(f"{unmet_line(mixed, path.name)} ({path} holds it)")
    return path


def _calibration(request, input_shape, log):
    from ..data.images import calibration_set

    calibration = calibration_set(request.calibration, request.preprocessing_at(*input_shape[:2]),
                                  size=request.calibration_size, seed=request.seed, preprocessed=request.preprocessed)
    log(f"calibration: {len(calibration)} samples from {calibration.source}")
    return calibration


def _labelled(request, calibration, classes):
    """`calibration` with --labels' class names (the model's outputs in
    order) for its class folders; --max-accuracy-drop's labels checked
    before the statistics pass rather than after."""
    if request.max_accuracy_drop is None or calibration is None:
        return calibration
    from ..data.labels import read_labels_file, with_class_names
    from .mixed import calibration_labels

    if request.labels:
        calibration = with_class_names(calibration, read_labels_file(request.labels, classes))
    calibration_labels(calibration, classes)
    return calibration


def _statistics(request, recipe, float_model, calibration, log):
    """Read with --statistics, or collected once; saved with --save-statistics."""
    from .int8_tflite import statistics_for
    from .statistics import ActivationStatistics

    saved = ActivationStatistics.load(request.statistics) if request.statistics else None
    if saved is not None:  # another model's statistics are named as such before their preprocessing is
        saved.check_model(float_model)
        saved.check_asked_preprocessing(request, request.preprocessed)
    statistics = statistics_for(float_model, calibration, saved)
    if request.save_statistics:
        statistics.save(request.save_statistics)
        log(f"wrote {request.save_statistics} ({len(statistics.tensors)} tensors, {statistics.samples} samples)")
    held_out_for = ("--calibration-method auto" if recipe.calibration_method == AUTO
                    else recipe.budget().flags() if recipe.budget() is not None else None)
    log(f"activation statistics: {statistics.samples} calibration samples"
        + (f" in {len(statistics.folds)} folds, for {held_out_for}" if statistics.folds and held_out_for else ""))
    return statistics


def _from_float_tflite(request, recipe, log):
    """The TensorFlow-free route: a float32 .tflite in, an int8 .tflite out."""
    from ..device.runtime import TfliteRunner
    from .int8_tflite import read_float_tflite, write_int8_tflite
    from .selection import check_budget_images

    float_model = read_float_tflite(request.model)
    calibration = None
    if request.calibration:
        runner = TfliteRunner(request.model, threads=1)
        calibration = _calibration(request, runner.input_shape, log)
        check_budget_images(recipe, calibration)
        calibration = _labelled(request, calibration, int(runner.output["shape"][-1]))
    statistics = _statistics(request, recipe, float_model, calibration, log)
    return write_int8_tflite(float_model, recipe, request.output, calibration=calibration, statistics=statistics,
                             log=log)


def _from_keras(request, recipe, log):
    from ..model.source import check_image_model, load_folded, model_source
    from .onnx_export import check_no_nested_model, check_onnx_io_types, check_onnx_request, to_onnx
    from .recipe import record_source
    from .selection import check_budget_images
    from .tflite import float_tflite, to_tflite

    if request.target == ".onnx":
        check_onnx_request(recipe, request.onnx_option("opset"), request.onnx_option("onnx_route"))
        check_onnx_io_types(request.input_type, request.output_type, request.onnx_option("onnx_route"))
    model, fold_report = load_folded(request.model, request.input_size, request.classes, request.weights,
                                     fold=request.fold, seed=request.seed)
    if fold_report is not None:
        log(fold_report.format().splitlines()[0])
    statistics = float_model = calibration = None
    if recipe.needs_calibration:
        check_image_model(model, parity=False)
        if request.target == ".onnx" and request.onnx_option("onnx_route") == "ort":
            check_no_nested_model(model, "make the int8 TFLite (--output X.tflite), or the ONNX from it "
                                         "(--onnx-route tflite)")
        calibration = _calibration(request, model.input_shape[1:], log) if request.calibration else None
        check_budget_images(recipe, calibration)
        calibration = _labelled(request, calibration, int(model.output_shape[-1]))
        float_model = float_tflite(model)
        statistics = _statistics(request, recipe, float_model, calibration, log)
    if request.target == ".tflite":
        path = to_tflite(model, recipe, calibration, output=request.output, statistics=statistics,
                         float_model=float_model, log=log)
    else:
        path = to_onnx(model, recipe, calibration, output=request.output, opset=request.onnx_option("opset"),
                       route=request.onnx_option("onnx_route"), statistics=statistics, float_model=float_model,
                       log=log)
    record_source(path, model_source(request.model, request.weights, request.seed))  # random weights: their seed
    return path
