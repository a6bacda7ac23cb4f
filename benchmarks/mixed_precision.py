"""`--min-sqnr`: a budget of full-int8 + 3 dB on held-out calibration images,
met with float32 parts; does it hold on evaluation images the search never
saw, and what does it cost in latency at 224?

Models: the shipped demo ResNet-50 (width 0.25, 32x32), the unseen
ResNet-34 (width 0.5, 48x48) and the full-width ResNet-50 (32x32) of
benchmarks/trained.py, and its validation ResNet-18 (width 0.5, 40x40, seed
11: not in view when the put-back passes were made), each with a logits
and a softmax head, trained on digits 0..1199. Calibration and evaluation
are convert's own split of the 597 digits never trained on (1200..1796):
200 to calibrate (class-stratified, seed 0; the tool's default `auto`
ranges), the other 397 to evaluate.
Latency: ResNet-50 / ResNet-34 at 224 (random weights) quantized full int8
and with the same parts in float32, timed in alternating rounds here.

The `onnx` part does the same for the int8 ONNX (onnxruntime's CPU
provider, float parts by nodes_to_exclude); `onnx_latency` times its parts
at 224 (separately, so it can run on an idle machine); `onnx_again`
first moves the saved ONNX rows aside (kept in the JSON as
`previous_onnx_results`), so `onnx` searches every model again.

The `nncf` part runs NNCF's quantize_with_accuracy_control on the same
float ONNX, for the same budget (dB), on the same 200 calibration images
(NNCF fits and validates on them; our search scores each by ranges fitted
on the other three quarters), then scores
both artifacts on the evaluation images and times them against each other
(batch 1, at the model's own size, alternating rounds). NNCF runs in its
own environment (benchmarks/nncf_accuracy_control.py says how to make it;
NNCF_PYTHON names its interpreter, default /tmp/nncf-venv/bin/python).

The `tflite_float_output` part repeats the `tflite` one with a float32
output (--output-type float32), which lets the head stay float;
`tflite_float_output_demoted` measures again its rows that kept float32
parts (measured before those parts' weight layers could be demoted).

Each part measures the models its saved results lack (delete
benchmarks/results/mixed_precision.json to measure everything again): the
full-width ResNet-50 (32x32, benchmarks/trained.py) was added later.

The `part_gains` part asks whether a part's gain measured on the
calibration images holds on the evaluation images, and whether the gains
that rest on a few images (which the search does not count) hold less.

The `tflite_latency` part times every saved TFLite row's float parts at
224 again on this machine (the searches need no particular CPU; the latency
bar needs one with VNNI, where int8 is three times faster than float32).

The `tflite_dynamic` part searches the same budgets with the parts in
dynamic-range int8 (--fallback-precision dynamic) and says what `auto`
keeps of the two. The `tflite_auto` part runs the default search itself
(int8 output): after a float32 search, the convolutions the budget does
not need in float32 go to dynamic-range int8.

The `grid_cap` part runs the default search again on every model once
it stops at a budget above what the int8 output's own grid allows
(mixed.grid_sqnrs) and estimates a softmax head's steps with the int8
output grid's error kept apart (mixed.judged_sqnr). `grid_cap_again`
drops its saved rows of the models named after it (substrings) first.

The `softmax_floor` part runs the `tflite_auto` search again on the
softmax heads once an output softmax's int8 input had its floor
(ranges.softmax_input_floor), beside the `tflite_auto` rows measured before it.

The `bar_mnist` part runs the default search of now on the MNIST
ResNet-50s (both heads, float32 and int8 output) and times each at 224
here: the issue's bar on ResNet-50s no rule was chosen on. `bar_retimed`
times the parts of the digits ResNet-50 rows of the two corrected tables
again here (the latency bar depends on the CPU). `bar_fashion` runs the
same bar on the two Fashion-MNIST ResNet-50s (models unsure of many images,
judged on 10,000 test images). `bar_tail_room` runs those parts' logits-head
float32-output searches again with `--tail-room 10`. `bar_float_logits` runs
the logits-head float32-output searches of the ResNet-50s again once a
dynamic-range head's float32 output was its own (no int8 grid).
`bar_softmax_float32` runs the softmax heads' float32-output searches with
float32 parts only (`--fallback-precision float32`). `bar_softmax_ratio`
runs the softmax heads' float32-output searches again once a step's level
was judged by the logits' error ratios weighted by unsureness
(mixed.error_ratio_gain_db).

Session 57: `bar_int8_softmax_ratio` and `onnx_softmax_ratio` run the
int8-output TFLite and the int8 ONNX softmax searches again with that
level (`bar_int8_softmax_mean_of_db`, `onnx_softmax_mean_of_db`: the same
search with the level of before, where the saved one ran on weights since
trained again); `bar_onnx` runs the int8 ONNX's bar on the MNIST and
Fashion-MNIST ResNet-50s (both heads; `bar_onnx_mean_of_db`: its softmax
heads with the level of before); `bar_softmax_pooled` and `bar_onnx_pooled`
run the softmax heads' searches with the level read from the logits' errors
pooled with the same weights (softmax_estimates.pooled_logits_gain_db).

Session 58: `bar_onnx_nncf` runs NNCF's quantize_with_accuracy_control
beside each `bar_onnx` search (the artifact that search wrote, the same
budget, calibration and evaluation images), as the `nncf` part does beside
the digits models' `onnx` searches; `bar_onnx_nncf_224` times, in one
run per model, our search's kept parts and the convolutions each NNCF route
left float in our int8 ONNX of a full-width ResNet-50 at 224 (NNCF's own
artifact exists at the models' 32x32 only).

Session 63: `bar_tail_room_int8` and `bar_onnx_tail_room` run the
logits heads' int8-output TFLite and int8 ONNX bar searches again with
`--tail-room 10` (`bar_tail_room`, run again, their float32-output ones;
`bar_tail_room_digits` the digits ResNet-50s' float32-output ones),
beside the same searches without it: made a budget's default for a logits
head in session 63, then taken back in the same session when the digits
ResNet-50s' searches with room kept artifacts 2-3 dB worse on their
evaluation images (README, "Room under a budget").

    python benchmarks/mixed_precision.py [tflite] [tflite_float_output] [tflite_latency] [tflite_dynamic] [tflite_auto] [onnx_again] [onnx]
        [onnx_latency] [nncf] [part_gains] [softmax_floor] [grid_cap] [bar_mnist] [bar_retimed] [bar_fashion]
        [bar_tail_room] [bar_float_logits] [bar_softmax_float32] [bar_softmax_ratio] [bar_int8_softmax_ratio]
        [bar_int8_softmax_mean_of_db] [onnx_softmax_ratio] [onnx_softmax_mean_of_db] [bar_onnx] [bar_onnx_mean_of_db]
        [bar_softmax_pooled] [bar_onnx_pooled] [bar_onnx_nncf] [bar_onnx_nncf_224] [bar_onnx_tail_room]
        [bar_tail_room_int8] [bar_tail_room_digits]
"""

import contextlib
import functools
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import interleaved_medians, machine, write_results  # noqa: E402

BUDGET_OVER_FULL_INT8_DB = 3.0
# rows kept from models trained earlier on another machine (training is not bit-reproducible across CPUs)
PREVIOUS = ("previous_models_results", "previous_models_float_output_results", "previous_models_machine",
            "retrained_machine", "previous_onnx_results", "previous_onnx_machine", "earlier_grid_cap_results")


def trained_models():
    from trained import full_width_resnet50, unseen_resnet34, validation_resnet18, with_softmax

    from edge_resnet.model import demo

    for name, make, size, depth in (("demo ResNet-50 w0.25 32x32", demo.build_demo_model, 32, 50),
                                    ("ResNet-34 w0.5 48x48 (unseen)", unseen_resnet34, 48, 34),
                                    ("ResNet-50 w1.0 32x32", full_width_resnet50, 32, 50),
                                    ("ResNet-18 w0.5 40x40 seed 11 (validation: not in view when the put-back passes were "
                                     "made)", validation_resnet18, 40, 18)):
        model = make()
        for head in ("logits", "softmax"):
            yield f"{name}, {head} head", (model if head == "logits" else with_softmax(model)), size, depth


def digits(size):
    """convert's own split of the digits the models never trained on: 200
    to calibrate (class-stratified, seed 0), the other 397 to evaluate."""
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    return convert_split(*digit_pixels(size, None, offset=TRAIN_SAMPLES))


def mnist_images(size, count=200):
    """The same split of the 2500 MNIST images the MNIST models never trained on: the rest (2300) to evaluate."""
    from mnist import mnist_split

    return convert_split(*mnist_split(size)[2:], count)


def fashion_images(size, count=200):
    """`count` calibration images split off Fashion-MNIST's never-trained-on pool as `convert` splits them
    (class-stratified, seed 0); its 10,000 test images evaluate (benchmarks/fashion.py)."""
    from fashion import fashion_pool, fashion_test

    from edge_resnet.data.images import Preprocessing, images_from_array

    calibration, _ = convert_split(*fashion_pool(size), count)
    test_pixels = fashion_test(size)[0]
    return calibration, np.stack(list(images_from_array(test_pixels, Preprocessing(size, size), size=None).samples()))


def convert_split(pixels, labels, count=200):
    """(`count` calibration images as `convert` splits them off: class-stratified, seed 0; the rest's samples)."""
    from edge_resnet.data.images import Preprocessing, holdout_split

    size = pixels.shape[1]
    source = Path(tempfile.mkdtemp(prefix="mixed-digits-")) / "unseen.npz"
    np.savez(source, x=pixels, y=labels)
    calibration, evaluation = holdout_split(str(source), Preprocessing(size, size), count, 0)
    return calibration.cached(), np.stack(list(evaluation.samples()))


def output_sqnr(float_model, model_path, images):
    """Output SQNR of the int8 artifact (TFLite or ONNX, by suffix) against the float TFLite."""
    from edge_resnet.device.runtime import OnnxRunner, TfliteRunner
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.mixed import output_sqnr_db

    runner = OnnxRunner if Path(model_path).suffix == ".onnx" else TfliteRunner
    return output_sqnr_db(run_tflite_bytes(float_model, images, "float"), runner(model_path).predict(images))


def held_out_cell(result):
    """Full int8's held-out SQNR, the kept step's (held_mixed), and whether the search met its budget."""
    return (f"{result['held_out_db']['full int8']:.2f} -> {held_mixed(result)} "
            f"({'met' if result['met_on_held_out'] else 'NOT met'})")


def onnx_kept_text(result):
    """An int8 ONNX search's kept parts (float convolutions) and what of them went back to int8, for a cell."""
    if not result["float_parts"]:
        return "full int8"
    return (f"{len(result['float_parts'])} parts ({result['float_operators']}): {', '.join(result['float_parts'])}"
            f"{put_back_note(result)}")


def held_mixed(result):
    """The chosen step's held-out SQNR for a table cell: on a softmax head,
    as the search judged it (estimated from the logits), the measured one beside it."""
    from edge_resnet.quantize.mixed import Step

    measured = result["held_out_db"]["mixed"]
    index = chosen_step_index(result)
    chosen = None if index is None else Step.from_dict(result["steps"][index])
    if chosen is None or not chosen.estimated:
        return f"{measured:.2f}"
    return f"{chosen.estimated_sqnr_db:.2f} estimated ({measured:.2f} measured)"


def chosen_step_index(result):
    """The position in a saved search's steps of the step it chose (its parts, put-back and demoted layers), or None."""
    return next((index for index, step in enumerate(result.get("steps", ()))
                 if list(step["float_parts"]) == result["float_parts"]
                 and list(step.get("int8_operators") or []) == result.get("int8_operators", [])
                 and list(step.get("dynamic_operators") or []) == result.get("dynamic_operators", [])), None)


def demo_models():
    """trained_models()' first two entries, the demo's two heads, without training the other models."""
    return itertools.islice(trained_models(), 2)


def put_back_note(result):
    """What the search put back in int8 inside the float parts, for a table cell."""
    from edge_resnet.quantize.mixed import operator_label

    labels = [operator_label(operator) for operator in result.get("int8_operators", [])]
    convolutions = [label for label in labels if "_conv" in label]
    demoted = len(result.get("dynamic_operators", []))
    note = f"; {demoted} weight layers of them in dynamic-range int8" if demoted else ""
    if not labels:
        return note
    return (f"; back in int8: {', '.join(convolutions) or '-'} (+{len(labels) - len(convolutions)} operators with them)"
            + note)


def put_back_units(parts, weighted, float_parts, int8_operators):
    """{part: positions of its weight units (mixed.weight_units) that the search put back in int8}."""
    from edge_resnet.quantize.mixed import weight_units

    return {part: [index for index, unit in enumerate(weight_units(parts[part], weighted)) if unit[0] in int8_operators]
            for part in float_parts}


def float_operators_of(parts, weighted, put_back):
    """The operators of the parts in `put_back` ({part: unit positions}) that stay float32."""
    from edge_resnet.quantize.mixed import weight_units

    kept = []
    for part, positions in put_back.items():
        units = weight_units(parts[part], weighted)
        back = {operator for index in positions for operator in units[index]}
        kept += [operator for operator in parts[part] if operator not in back]
    return kept


@functools.lru_cache(maxsize=None)
def network_at_224(depth):
    """(float TFLite, minmax ranges, parts, weighted operators) of a ResNet at 224 with random weights,
    ranged on 20 random images: what the latency rows time (the speed does not depend on the weights)."""
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.model.resnet import build_resnet
    from edge_resnet.quantize.mixed import model_parts, weighted_scopes
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    model = fold_batchnorm(build_resnet(depth, input_shape=(224, 224, 3), classes=1000, classifier_activation=None,
                                        seed=0))[0]
    float_model = float_tflite(model)
    pixels = np.random.default_rng(0).integers(0, 256, (20, 224, 224, 3), dtype=np.uint8)
    calibration = images_from_array(pixels, Preprocessing(224, 224), size=None)
    ranges = activation_ranges(collect_statistics(float_model, calibration), RangeMethod("minmax"))
    return float_model, ranges, model_parts(float_model), weighted_scopes(float_model), next(calibration.samples())


def latency_at_224(depth, put_back, output_type="int8", precision="float32", demoted=()):
    """p50 of the float32, full-int8 and mixed ResNet at 224 (random weights), alternating rounds on this
    machine (named in the result); `put_back`: {float part: positions of its weight units back in int8};
    `demoted`: Keras names of the float parts' convolutions run in dynamic-range int8."""
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.device.tflite_inspect import inspect_tflite
    from edge_resnet.quantize.int8_tflite import int8_tflite
    from edge_resnet.quantize.mixed import split_by_precision
    from edge_resnet.quantize.recipe import QuantizationRecipe

    float_model, ranges, parts, weighted, sample = network_at_224(depth)
    folder = Path(tempfile.mkdtemp(prefix="mixed-latency-"))
    paths = {"float32": folder / "float.tflite", "full int8": folder / "int8.tflite", "mixed": folder / "mixed.tflite"}
    paths["float32"].write_bytes(float_model)
    recipe = QuantizationRecipe(output_type=output_type)
    paths["full int8"].write_bytes(int8_tflite(float_model, ranges, recipe))
    float32, dynamic = split_by_precision(float_operators_of(parts, weighted, put_back), weighted, precision)
    moved = tuple(scope for scope in float32 if scope in weighted and convolution_name(scope) in demoted)
    paths["mixed"].write_bytes(int8_tflite(float_model, ranges, recipe,
                                           tuple(scope for scope in float32 if scope not in moved), dynamic + moved))
    runners = {name: TfliteRunner(path, threads=2) for name, path in paths.items()}
    for runner in runners.values():
        runner.feed(sample)
    medians = interleaved_medians([runner.interpreter.invoke for runner in runners.values()], rounds=5,
                                  runs_per_round=20)
    return {"p50_ms": dict(zip(runners, medians)), "mixed_over_int8": medians[2] / medians[1],
            "mixed_fully_delegated": inspect_tflite(paths["mixed"]).fully_delegated, "machine": machine()}


def convolution_name(operator):
    """The Keras name of the convolution an operator id holds, the same in any copy of the network
    (the trained model's scopes carry its own name and a call suffix)."""
    import re

    from edge_resnet.quantize.mixed import operator_label

    return re.sub(r"_\d+$", "", operator_label(operator))


def retimed(result, output_type):
    """`result`'s latency at 224 measured again on this machine, with the float parts the search chose
    (and the convolutions it put back in int8, matched by name)."""
    from edge_resnet.quantize.mixed import weight_units

    depth = next(depth for key, depth in (("ResNet-50", 50), ("ResNet-34", 34), ("ResNet-18", 18))
                 if key in result["model"])
    _, _, parts, weighted, _ = network_at_224(depth)
    back = {convolution_name(operator) for operator in result["int8_operators"]}
    put_back = {part: [index for index, unit in enumerate(weight_units(parts[part], weighted))
                       if convolution_name(unit[0]) in back] for part in result["float_parts"]}
    return latency_at_224(depth, put_back, output_type, result.get("precision", "float32"),
                          {convolution_name(operator) for operator in result.get("dynamic_operators", ())})


def mnist_models():
    """The ResNet-50s trained on the MNIST sample (benchmarks/trained.py mnist_models), each with both heads."""
    from trained import mnist_models, with_softmax

    for name, model, size in mnist_models():
        if name.startswith("ResNet-50"):
            for head in ("logits", "softmax"):
                yield f"{name}, {head} head", (model if head == "logits" else with_softmax(model)), size, 50


def fashion_models():
    """The ResNets trained on Fashion-MNIST (benchmarks/trained.py fashion_models), each with both heads."""
    from trained import FASHION_MODELS, fashion_models, with_softmax

    for (depth, *_), (name, model, size) in zip(FASHION_MODELS, fashion_models()):
        for head in ("logits", "softmax"):
            yield f"{name}, {head} head", (model if head == "logits" else with_softmax(model)), size, depth


def fashion_resnet50s():
    """The ResNet-50s trained on Fashion-MNIST (benchmarks/trained.py fashion_models and fashion_fresh_models),
    each with both heads: no rule of the search was chosen on them, and they are unsure of many images."""
    from trained import fashion_fresh_models, fashion_models, with_softmax

    for name, model, size in itertools.chain(fashion_models(depth=50), fashion_fresh_models(depth=50)):
        for head in ("logits", "softmax"):
            yield f"{name}, {head} head", (model if head == "logits" else with_softmax(model)), size, 50


def resnet50_data_sets():
    """(the MNIST ResNet-50s, their images), (the Fashion-MNIST ResNet-50s, theirs): the bar's networks."""
    return (mnist_models, mnist_images), (fashion_resnet50s, fashion_images)


def measure(name, model, size, depth, output_type="int8", precision="float32", data=digits, timed=True,
            tail_room=None):
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import write_int8_tflite
    from edge_resnet.quantize.mixed import chosen_step, model_parts, weighted_scopes
    from edge_resnet.quantize.recipe import QuantizationRecipe, read_record
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(fold_batchnorm(model)[0])
    calibration, evaluation = data(size)
    statistics = collect_statistics(float_model, calibration)
    folder = Path(tempfile.mkdtemp(prefix="mixed-"))
    probe = write_int8_tflite(float_model, QuantizationRecipe(min_sqnr=1.0, output_type=output_type,
                                                              tail_room=tail_room),
                              folder / "full.tflite", calibration, statistics, progress=False)
    full_held_out = read_record(probe)["mixed_precision"]["steps"][0]["sqnr_db"]
    budget = full_held_out + BUDGET_OVER_FULL_INT8_DB
    started = time.perf_counter()
    mixed = write_int8_tflite(float_model, QuantizationRecipe(min_sqnr=budget, output_type=output_type,
                                                              fallback_precision=precision, tail_room=tail_room),
                              folder / "mixed.tflite", calibration, statistics, progress=False, log=print)
    seconds = time.perf_counter() - started
    record = read_record(mixed)["mixed_precision"]
    chosen = chosen_step(record)
    result = {"model": name, "budget_db": budget, "met_on_held_out": record["met"], "precision": record["precision"],
              "held_out_db": {"full int8": full_held_out, "mixed": chosen["sqnr_db"]},
              "evaluation_db": {"full int8": output_sqnr(float_model, probe, evaluation),
                                "mixed": output_sqnr(float_model, mixed, evaluation)},
              "float_parts": list(chosen["float_parts"]), "float_operators": chosen["float_operators"],
              "int8_operators": list(chosen.get("int8_operators") or []),
              "dynamic_operators": list(chosen.get("dynamic_operators") or []),
              "search_seconds": seconds, "steps": record["steps"], "not_tried": record["not_tried"],
              "also_tried": record.get("also_tried", []), "stopped": record["stopped"],
              "grid_db": record["steps"][0].get("grid_db"), "with_float32_output": record.get("with_float32_output")}
    result["output_type"] = output_type
    result["tail_room"] = tail_room
    if tail_room is not None:  # the rule auto took, and whether it took the room
        ranges = read_record(mixed)["activation_ranges"]
        result["ranges"] = {"chosen": ranges.get("chosen"), "tail_room": ranges.get("selection", {}).get("tail_room")}
    result["level_standard_error_db"] = record.get("level_standard_error_db")
    result["full_int8_standard_error_db"] = record["steps"][0].get("sqnr_se_db")
    result["calibration_images"] = record["held_out_images"]
    if not timed:
        print(result, flush=True)
        return result
    put_back = put_back_units(model_parts(float_model), weighted_scopes(float_model), result["float_parts"],
                              result["int8_operators"])
    result["latency_224"] = latency_at_224(depth, put_back, output_type, record["precision"],
                                           {convolution_name(operator) for operator in result["dynamic_operators"]})
    print(result, flush=True)
    return result


def measure_onnx(name, model, size, depth, data=digits, tail_room=None):
    """The same budget rule for the int8 ONNX, searched and scored on onnxruntime."""
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.mixed import chosen_step
    from edge_resnet.quantize.onnx_export import to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe, read_record
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    folded = fold_batchnorm(model)[0]
    float_model = float_tflite(folded)
    calibration, evaluation = data(size)
    statistics = collect_statistics(float_model, calibration)
    folder = Path(tempfile.mkdtemp(prefix="mixed-onnx-"))
    probe = to_onnx(folded, QuantizationRecipe(min_sqnr=1.0, tail_room=tail_room), calibration,
                    output=folder / "full.onnx", statistics=statistics, float_model=float_model)
    full_held_out = read_record(probe)["mixed_precision"]["steps"][0]["sqnr_db"]
    budget = full_held_out + BUDGET_OVER_FULL_INT8_DB
    started = time.perf_counter()
    mixed = to_onnx(folded, QuantizationRecipe(min_sqnr=budget, tail_room=tail_room), calibration,
                    output=folder / "mixed.onnx", statistics=statistics, float_model=float_model, log=print)
    seconds = time.perf_counter() - started
    record = read_record(mixed)["mixed_precision"]
    chosen = chosen_step(record)
    result = {"model": name, "depth": depth, "size": size, "artifact": str(mixed), "budget_db": budget, "met_on_held_out": record["met"],
              "held_out_db": {"full int8": full_held_out, "mixed": chosen["sqnr_db"]},
              "evaluation_db": {"full int8": output_sqnr(float_model, probe, evaluation),
                                "mixed": output_sqnr(float_model, mixed, evaluation)},
              "float_parts": list(chosen["float_parts"]), "float_operators": chosen["float_operators"],
              "int8_operators": list(chosen.get("int8_operators") or []),
              "search_seconds": seconds, "steps": record["steps"], "not_tried": record["not_tried"],
              "tail_room": tail_room}
    if tail_room is not None:  # the rule auto took, and whether it took the room
        ranges = read_record(mixed)["activation_ranges"]
        result["ranges"] = {"chosen": ranges.get("chosen"), "tail_room": ranges.get("selection", {}).get("tail_room")}
    print(result, flush=True)
    return result


def onnx_latency_at_224(depth, float_parts, int8_operators=()):
    """p50 of the full-int8 and the mixed int8 ONNX at 224 (random weights) on onnxruntime, alternating rounds
    (node names are the Keras layer names at any input size, so `int8_operators` name the same nodes there)."""
    medians = onnx_latencies_at_224(depth, {"mixed": part_nodes(float_parts, int8_operators)})
    return {"p50_ms": medians, "mixed_over_int8": medians["mixed"] / medians["full int8"]}


def part_nodes(float_parts, int8_operators=()):
    """A function of a graph's node names giving the nodes our search's artifact leaves float: every node of
    `float_parts` but `int8_operators` (put back in int8)."""
    from edge_resnet.quantize.mixed import parts_in_order

    def excluded(node_names):
        parts = parts_in_order(node_names)
        return [name for part in float_parts for name in parts[part] if name not in int8_operators]

    return excluded


def onnx_latencies_at_224(depth, excluded_by_route, other_routes=None):
    """p50 (ms) of the float32, the full-int8 and each route's int8 ONNX of a ResNet-`depth` at 224 (random
    weights) on onnxruntime, in alternating rounds. `excluded_by_route`: {route: the node names it leaves float,
    or a function of the graph's node names giving them}; `other_routes(float path, folder)`: {route: an ONNX
    it writes there from the float one}, timed in the same rounds."""
    import onnx

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.device.runtime import OnnxRunner
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.model.resnet import build_resnet
    from edge_resnet.quantize.onnx_export import float_onnx, onnx_activation_ranges, ort_prepared, ort_quantized
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    model = fold_batchnorm(build_resnet(depth, input_shape=(224, 224, 3), classes=1000, classifier_activation=None,
                                        seed=0))[0]
    pixels = np.random.default_rng(0).integers(0, 256, (20, 224, 224, 3), dtype=np.uint8)
    calibration = images_from_array(pixels, Preprocessing(224, 224), size=None)
    statistics = collect_statistics(float_tflite(model), calibration)
    folder = Path(tempfile.mkdtemp(prefix="mixed-onnx-latency-"))
    paths = {"float32": folder / "float.onnx"}
    onnx.save(float_onnx(model), paths["float32"])
    prepared = ort_prepared(paths["float32"], folder / "prepared.onnx")
    ranges = onnx_activation_ranges(prepared.proto, activation_ranges(statistics, RangeMethod("minmax")), statistics,
                                    {layer.name for layer in model.layers}, model.output._keras_history[0].name)
    node_names = [node.name for node in prepared.proto.graph.node]
    recipe = QuantizationRecipe()
    paths["full int8"] = ort_quantized(prepared, folder / "int8.onnx", recipe, ranges)
    for number, (route, excluded) in enumerate(excluded_by_route.items()):
        names = list(excluded(node_names) if callable(excluded) else excluded)
        unknown = set(names) - set(node_names)
        assert not unknown, f"no such nodes at 224: {sorted(unknown)}"
        paths[route] = ort_quantized(prepared, folder / f"route{number}.onnx", recipe, ranges, names)
    paths.update(other_routes(paths["float32"], folder) if other_routes else {})
    runners = {name: OnnxRunner(path, threads=2) for name, path in paths.items()}
    sample = next(calibration.samples())[None]
    medians = interleaved_medians([lambda runner=runner: runner.predict(sample) for runner in runners.values()],
                                  rounds=5, runs_per_round=20)
    return dict(zip(runners, medians))


NNCF_SETTINGS = {"NNCF, its own ranges": "nncf-default", "NNCF, min/max ranges": "minmax"}
OURS = "edge-resnet --min-sqnr"  # our search's route beside NNCF's


def nncf_python():
    import os

    return os.environ.get("NNCF_PYTHON", "/tmp/nncf-venv/bin/python")


def compare_with_nncf(result, model, data=digits):
    """NNCF's accuracy control against our ONNX search (its artifact at result["artifact"]): same budget, same
    fit and held-out images (`data`'s calibration images), scored on `data`'s evaluation images."""
    import json
    import subprocess

    import onnx

    from edge_resnet.device.runtime import OnnxRunner
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.mixed import output_sqnr_db
    from edge_resnet.quantize.onnx_export import float_onnx, float_weight_ops
    from edge_resnet.quantize.selection import calibration_inputs
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    folded = fold_batchnorm(model)[0]
    float_model = float_tflite(folded)
    calibration, evaluation = data(result["size"])
    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    folder = Path(tempfile.mkdtemp(prefix="mixed-nncf-"))
    onnx.save(float_onnx(folded), folder / "float.onnx")
    np.save(folder / "calibration.npy", inputs)  # the 200 images our search fits and scores on (cross-fitted)
    np.save(folder / "validation.npy", inputs)
    np.save(folder / "reference.npy", run_tflite_bytes(float_model, inputs, "float"))
    reference = run_tflite_bytes(float_model, evaluation, "float")
    ours = Path(result["artifact"])
    rows = {OURS: {"float_convolutions": len(float_weight_ops(onnx.load(ours))),
                   "evaluation_db": output_sqnr_db(reference, OnnxRunner(ours).predict(evaluation)),
                   "seconds": result["search_seconds"], "path": ours}}
    for label, ranges in NNCF_SETTINGS.items():
        output = folder / f"nncf_{ranges}.onnx"
        run = subprocess.run([nncf_python(), str(Path(__file__).with_name("nncf_accuracy_control.py")),
                              "--float", folder / "float.onnx", "--calibration", folder / "calibration.npy",
                              "--validation", folder / "validation.npy", "--reference", folder / "reference.npy",
                              "--min-sqnr", str(result["budget_db"]), "--activation-ranges", ranges,
                              "--output", output], capture_output=True, text=True)
        if run.returncode != 0:
            rows[label] = {"error": run.stderr.strip().splitlines()[-1:]}
            continue
        said = json.loads(run.stdout.strip().splitlines()[-1])
        rows[label] = {"float_convolutions": len(float_weight_ops(onnx.load(output))),
                       "held_out_db": said["sqnr_db"], "met_on_held_out": said["met"], "nncf": said["nncf"],
                       "evaluation_db": output_sqnr_db(reference, OnnxRunner(output).predict(evaluation)),
                       "seconds": said["seconds"], "path": output}
    timed = {label: row for label, row in rows.items() if "path" in row}
    runners = [OnnxRunner(row["path"], threads=2) for row in timed.values()]
    sample = evaluation[:1]
    medians = interleaved_medians([lambda runner=runner: runner.predict(sample) for runner in runners],
                                  rounds=5, runs_per_round=50)
    for row, median in zip(timed.values(), medians):
        row["p50_ms"] = median
        row["path"] = str(row["path"])
    return rows


def nncf_lines(results):
    lines = ["", "## Beside NNCF's quantize_with_accuracy_control (the int8 ONNX)", "",
             "Same float ONNX, same budget (dB), the same 200 calibration images: NNCF fits its ranges on them and "
             "validates on them, our search scores each of them by ranges fitted on the other three quarters; NNCF's preset PERFORMANCE, its metric the output's "
             "1 - noise/signal (so its drop bound is the dB budget exactly). Float convolutions: Conv/Gemm whose "
             "weights stay float. p50: batch 1 at the model's own size on onnxruntime's CPU provider, alternating "
             "rounds in one run.", "",
             "| model | budget dB | route | float convolutions | evaluation SQNR dB | p50 ms | seconds |",
             "|---|---|---|---|---|---|---|"]
    for result in results:
        for label, row in result.get("nncf", {}).items():
            if "error" in row:
                lines.append(f"| {result['model']} | {result['budget_db']:.2f} | {label} | failed: "
                             f"{' '.join(row['error'])[:120]} | | | |")
                continue
            lines.append(f"| {result['model']} | {result['budget_db']:.2f} | {label} | {row['float_convolutions']} | "
                         f"{row['evaluation_db']:.2f} | {row['p50_ms']:.3f} | {row['seconds']:.0f} |")
    return lines


def onnx_lines(results, previous=()):
    lines = ["", "## The int8 ONNX (onnxruntime CPU provider)", "",
             "The same models, images and budget rule; float parts by onnxruntime's nodes_to_exclude. The int8 "
             "ONNX's logits are float (no int8 output grid), so its head may be tried too. Every step scored with "
             "its biases corrected as the artifact's are (the default), so full int8 is the default's corrected "
             "one and the budget 3 dB over it. Last column: the same search before (steps and level on the models "
             "as quantized; its evaluation column the artifact as then written, not corrected).", "",
             "| model | budget dB (held-out) | held-out full int8 -> mixed | evaluation full int8 -> mixed | "
             "met on evaluation within 1 dB | evaluation gain | float parts (float convolutions) | p50 at 224: int8 "
             "-> mixed (ratio) | float32 p50 | search s | before: budget, evaluation full int8 -> mixed, float "
             "convolutions |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    before = {result["model"]: result for result in previous}
    for r in results:
        old = before.get(r["model"])
        old_cell = (f"{old['budget_db']:.2f}, {old['evaluation_db']['full int8']:.2f} -> "
                    f"{old['evaluation_db']['mixed']:.2f}, {old['float_operators']}" if old else "-")
        held, evaluated, speed = r["held_out_db"], r["evaluation_db"], r.get("latency_224")
        timing = (f"{speed['p50_ms']['full int8']:.2f} -> {speed['p50_ms']['mixed']:.2f} "
                  f"({speed['mixed_over_int8']:.2f}x) | {speed['p50_ms']['float32']:.2f}") if speed else "- | -"
        lines.append(
            f"| {r['model']} | {r['budget_db']:.2f} | {held['full int8']:.2f} -> {held_mixed(r)} | "
            f"{evaluated['full int8']:.2f} -> {evaluated['mixed']:.2f} | "
            f"{'yes' if evaluated['mixed'] >= r['budget_db'] - 1 else 'NO'} | {evaluation_gain_text(r)} | "
            f"{len(r['float_parts'])} ({r['float_operators']}): {', '.join(r['float_parts'])}{put_back_note(r)} | {timing} | "
            f"{r['search_seconds']:.0f} | {old_cell} |")
    return lines


def main(parts):
    import json

    from benchmarks.common import RESULTS

    path = RESULTS / "mixed_precision.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    results, float_output_results, onnx_results, gains, dynamic_results, auto_results, floor_results, cap_results = (
        saved.get(key, []) for key in ("results", "float_output_results", "onnx_results", "part_gains",
                                       "dynamic_results", "auto_results", "softmax_floor_results",
                                       "grid_cap_results"))
    searching = {"tflite", "tflite_float_output", "tflite_float_output_demoted", "tflite_dynamic", "tflite_auto",
                 "onnx", "onnx_again", "nncf", "part_gains", "softmax_floor", "grid_cap", "grid_cap_again"} & set(parts)
    searched_on = machine() if searching or "machine" not in saved else saved["machine"]
    if "tflite" in parts:
        results += [measure(*entry) for entry in missing_from(results)]
    if "tflite_float_output" in parts:
        float_output_results += [measure(*entry, output_type="float32", precision="auto")
                                 for entry in missing_from(float_output_results)]
    if "onnx_again" in parts:  # the ONNX rows searched again on this machine; the earlier ones kept in the JSON
        saved["previous_onnx_results"], saved["previous_onnx_machine"] = onnx_results, saved.get("machine")
        onnx_results = []
        path.write_text(json.dumps({**saved, "onnx_results": onnx_results}, indent=2) + "\n")
    if "onnx" in parts:
        for entry in missing_from(onnx_results):
            onnx_results.append(measure_onnx(*entry))
            path.write_text(json.dumps({**saved, "onnx_results": onnx_results}, indent=2) + "\n")
    if "nncf" in parts:
        models = {name: model for name, model, _, _ in trained_models()}
        for result in (result for result in onnx_results if "nncf" not in result):
            result["nncf"] = compare_with_nncf(result, models[result["model"]])
            print(result["model"], result["nncf"], flush=True)
            path.write_text(json.dumps({**saved, "onnx_results": onnx_results}, indent=2) + "\n")
    if "part_gains" in parts:
        gains += [part_gains(*entry) for entry in missing_from(gains)]
    if "tflite_dynamic" in parts:
        done = {result["model"] for result in dynamic_results}
        for entry in (entry for entry in trained_models() if entry[0] not in done):
            dynamic_results.append(measure(*entry, precision="dynamic"))
            path.write_text(json.dumps({**saved, "dynamic_results": dynamic_results}, indent=2) + "\n")
    if "tflite_auto" in parts:
        done = {result["model"] for result in auto_results}
        for entry in (entry for entry in trained_models() if entry[0] not in done):
            auto_results.append(measure(*entry, precision="auto"))
            path.write_text(json.dumps({**saved, "auto_results": auto_results}, indent=2) + "\n")
    if "softmax_floor" in parts:
        done = {result["model"] for result in floor_results}
        for entry in (entry for entry in trained_models() if entry[0] not in done and "softmax" in entry[0]):
            floor_results.append(measure(*entry, precision="auto"))
            path.write_text(json.dumps({**saved, "softmax_floor_results": floor_results}, indent=2) + "\n")
    if "grid_cap_again" in parts:  # e.g. grid_cap_again "demo ResNet-50 w0.25 32x32, softmax" grid_cap
        named = parts[parts.index("grid_cap_again") + 1]
        saved.setdefault("earlier_grid_cap_results", []).extend(
            result for result in cap_results if named in result["model"])
        cap_results = [result for result in cap_results if named not in result["model"]]
    if "grid_cap" in parts:
        done = {result["model"] for result in cap_results}
        for entry in (entry for entry in trained_models() if entry[0] not in done):
            cap_results.append(measure(*entry, precision="auto"))
            path.write_text(json.dumps({**saved, "grid_cap_results": cap_results}, indent=2) + "\n")
    if "corrected_steps" in parts:  # the default search once its steps are scored with their biases corrected
        corrected_results = saved.setdefault("corrected_steps_results", [])
        saved["corrected_steps_machine"] = machine()
        done = {result["model"] for result in corrected_results}
        # the full-width ResNet-50 (the slowest search) last
        for entry in sorted(trained_models(), key=lambda entry: "w1.0" in entry[0]):
            if entry[0] not in done:
                corrected_results.append(measure(*entry, precision="auto"))
                path.write_text(json.dumps(saved, indent=2) + "\n")
    if "corrected_float_output" in parts:  # the same with a float32 output: the head may stay float
        corrected_float = saved.setdefault("corrected_float_output_results", [])
        if not corrected_float:  # a row searched again later says its own machine (searched_elsewhere)
            saved["corrected_float_output_machine"] = machine()
        done = {result["model"] for result in corrected_float}
        # the ResNet-50s first (the issue's bar), the full-width one (the slowest search) last of them
        for entry in sorted(trained_models(), key=lambda entry: ("ResNet-50" not in entry[0], "w1.0" in entry[0])):
            if entry[0] not in done:
                corrected_float.append(measure(*entry, output_type="float32", precision="auto"))
                path.write_text(json.dumps(saved, indent=2) + "\n")
    if "tflite_float_output_demoted" in parts:  # the float32-output rows whose float32 parts could now be demoted
        float32_kept = {result["model"] for result in float_output_results if result["precision"] == "float32"}
        for entry in trained_models():
            if entry[0] in float32_kept:
                result = measure(*entry, output_type="float32", precision="auto")
                float_output_results[[row["model"] for row in float_output_results].index(entry[0])] = result
                path.write_text(json.dumps({**saved, "float_output_results": float_output_results}, indent=2) + "\n")
    mnist_results = {key: saved.get(key, []) for key in MNIST_TABLES}
    if "mnist" in parts:  # the ResNet-50s trained on another data set, both output types
        for key, output_type in MNIST_TABLES.items():
            done = {result["model"] for result in mnist_results[key]}
            for entry in (entry for entry in mnist_models() if entry[0] not in done):
                mnist_results[key].append(measure(*entry, output_type=output_type, precision="auto",
                                                  data=mnist_images))
                path.write_text(json.dumps({**saved, **mnist_results}, indent=2) + "\n")
    if "level_se" in parts:  # the MNIST searches with 200 and 800 calibration images, their level's standard error
        level_results = saved.get("level_se_results", [])
        for count in LEVEL_SE_IMAGES:
            done = {result["model"] for result in level_results if result["calibration_images"] == count}
            for entry in (entry for entry in mnist_models() if entry[0] not in done):
                level_results.append(measure(*entry, output_type="int8", precision="auto",
                                             data=lambda size: mnist_images(size, count), timed=False))
                saved["level_se_results"], saved["level_se_machine"] = level_results, machine()
                path.write_text(json.dumps({**saved, **mnist_results}, indent=2) + "\n")
    if "level_se_digits" in parts:  # the digits models' float32-output searches (which all met), with it too
        level_results = saved.get("level_se_results", [])
        done = {result["model"] for result in level_results}
        for entry in (entry for entry in trained_models() if entry[0] not in done):
            level_results.append(measure(*entry, output_type="float32", precision="auto", timed=False))
            saved["level_se_results"], saved["level_se_machine"] = level_results, machine()
            path.write_text(json.dumps({**saved, **mnist_results}, indent=2) + "\n")
    if "fashion" in parts:  # models unsure of many images, judged on 10,000 evaluation images; both output types
        fashion_results = saved.get("fashion_results", [])
        for output_type in ("int8", "float32"):
            done = {result["model"] for result in fashion_results
                    if result["output_type"] == output_type and result["calibration_images"] == 200}
            for entry in (entry for entry in fashion_models() if entry[0] not in done):
                fashion_results.append(measure(*entry, output_type=output_type, precision="auto",
                                               data=fashion_images, timed=False))
                saved["fashion_results"], saved["fashion_machine"] = fashion_results, machine()
                path.write_text(json.dumps({**saved, **mnist_results}, indent=2) + "\n")
    if "fashion_pinned" in parts:  # int8 output on FASHION_PINNED_IMAGES: does a level pinned as the note advises hold?
        fashion_results = saved.get("fashion_results", [])
        done = {result["model"] for result in fashion_results if result["calibration_images"] == FASHION_PINNED_IMAGES}
        for entry in (entry for entry in fashion_models() if entry[0] not in done):
            fashion_results.append(measure(*entry, output_type="int8", precision="auto", timed=False,
                                           data=lambda size: fashion_images(size, FASHION_PINNED_IMAGES)))
            saved["fashion_results"], saved["fashion_machine"] = fashion_results, machine()
            path.write_text(json.dumps({**saved, **mnist_results}, indent=2) + "\n")
    for part, models, data in (("bar_mnist", mnist_models, mnist_images), ("bar_fashion", fashion_resnet50s,
                                                                             fashion_images)):
        if part in parts:  # the issue's bar on the MNIST or Fashion-MNIST ResNet-50s with the search of now, timed here
            bar_results = saved.setdefault(f"{part}_results", [])
            saved[f"{part}_machine"] = machine()
            for output_type in ("float32", "int8"):
                done = {result["model"] for result in bar_results if result["output_type"] == output_type}
                for entry in (entry for entry in models() if entry[0] not in done):
                    bar_results.append(measure(*entry, output_type=output_type, precision="auto", data=data))
                    path.write_text(json.dumps(saved, indent=2) + "\n")
    if "bar_tail_room_digits" in parts:  # the digits ResNet-50s' logits heads so too, into bar_tail_room's rows
        room_results = saved.setdefault("bar_tail_room_results", [])
        saved["bar_tail_room_machine"] = machine()
        for entry in (entry for entry in trained_models() if "ResNet-50" in entry[0] and "logits" in entry[0]
                      and entry[0] not in {result["model"] for result in room_results}):
            room_results.append(measure(*entry, output_type="float32", precision="auto", tail_room=BAR_TAIL_ROOM))
            path.write_text(json.dumps(saved, indent=2) + "\n")
    for part, output_type in (("bar_tail_room", "float32"), ("bar_tail_room_int8", "int8")):
        if part in parts:  # the bar's logits-head searches again with --tail-room
            room_results = saved.setdefault(f"{part}_results", [])
            saved[f"{part}_machine"] = machine()
            done = {result["model"] for result in room_results}
            for models, data in resnet50_data_sets():
                for entry in (entry for entry in models() if "logits" in entry[0] and entry[0] not in done):
                    room_results.append(measure(*entry, output_type=output_type, precision="auto", data=data,
                                                tail_room=BAR_TAIL_ROOM))
                    path.write_text(json.dumps(saved, indent=2) + "\n")
    if "bar_float_logits" in parts:  # the logits-head float32-output searches again, a dynamic head's output float
        search_resnet50_heads(saved, path, "bar_float_logits", "logits", "auto")
    if "bar_softmax_float32" in parts:  # the softmax heads' float32-output searches with float32 parts only
        search_resnet50_heads(saved, path, "bar_softmax_float32", "softmax", "float32")
    if "bar_softmax_ratio" in parts:  # the softmax heads' float32-output searches judged by the logits' error ratios
        search_resnet50_heads(saved, path, "bar_softmax_ratio", "softmax", "auto")
    if "bar_int8_softmax_ratio" in parts:  # the same with an int8 output
        search_resnet50_heads(saved, path, "bar_int8_softmax_ratio", "softmax", "auto", "int8")
    if "onnx_softmax_ratio" in parts:  # the int8 ONNX's softmax heads judged by the logits' error ratios
        search_onnx_softmax_heads(saved, path, onnx_results)
    if "bar_onnx" in parts:  # the int8 ONNX's bar on the MNIST and Fashion-MNIST ResNet-50s, both heads
        search_onnx_resnet50s(saved, path, "bar_onnx", "head")
    if "bar_onnx_tail_room" in parts:  # its logits heads again with --tail-room
        search_onnx_resnet50s(saved, path, "bar_onnx_tail_room", "logits head", BAR_TAIL_ROOM)
    if "bar_onnx_nncf" in parts:  # NNCF's accuracy control beside each of them, the same budget and images
        nncf_beside_bar_onnx(saved, path)
    if "bar_onnx_nncf_224" in parts:  # NNCF's float convolutions timed at 224 in our int8 ONNX
        float_convolutions_at_224(saved, path)
    if "bar_onnx_mean_of_db" in parts:  # their softmax heads with the level judged as until session 56
        searched_by_mean_of_db(saved, path, "bar_onnx", (), timed_onnx_search)
    if "bar_softmax_pooled" in parts:  # the softmax heads' float32-output searches, the level by pooled errors
        with judged_by(pooled_level):
            search_resnet50_heads(saved, path, "bar_softmax_pooled", "softmax", "auto")
    if "bar_onnx_pooled" in parts:  # the int8 ONNX's MNIST and Fashion-MNIST softmax heads so
        with judged_by(pooled_level):
            search_onnx_resnet50s(saved, path, "bar_onnx_pooled", "softmax head")
    if "bar_int8_softmax_mean_of_db" in parts:  # those of them whose earlier search ran on other weights, judged
        searched_by_mean_of_db(saved, path, "bar_int8_softmax_ratio", searched_int8_of(saved),  # as before
                               lambda entry, data: measure(*entry, output_type="int8", precision="auto", data=data))
    if "onnx_softmax_mean_of_db" in parts:
        searched_by_mean_of_db(saved, path, "onnx_softmax_ratio", onnx_results, timed_onnx_search)
    if "bar_retimed" in parts:  # the digits ResNet-50 rows of the corrected tables that keep parts, timed here
        saved["bar_retimed_results"] = [
            {"model": result["model"], "output_type": output_type, "precision": result["precision"],
             "float_parts": result["float_parts"], "searched_latency_224": result["latency_224"],
             "latency_224": retimed(result, output_type)}
            for key, output_type in BAR_TABLES.items() for result in saved.get(key, [])
            if "ResNet-50" in result["model"] and result["float_parts"]]
        path.write_text(json.dumps(saved, indent=2) + "\n")
    if "tflite_latency" in parts:  # every saved TFLite row timed again on this machine
        for result in results:
            result["latency_224"] = retimed(result, "int8")
            print(result["model"], result["latency_224"], flush=True)
        for result in float_output_results:
            result["latency_224"] = retimed(result, "float32")
            print(result["model"], "float32 output", result["latency_224"], flush=True)
        for result in dynamic_results:
            result["latency_224"] = retimed(result, "int8")
            print(result["model"], "dynamic", result["latency_224"], flush=True)
        for result in auto_results:
            result["latency_224"] = retimed(result, "int8")
            print(result["model"], "auto", result["latency_224"], flush=True)
    if "onnx_latency" in parts:
        for result in (result for result in onnx_results if "latency_224" not in result):
            result["latency_224"] = onnx_latency_at_224(result["depth"], result["float_parts"],
                                                        result.get("int8_operators", ()))
            print(result["model"], result["latency_224"], flush=True)
    retrained = saved.get("retrained_machine")
    lines = ["# `--min-sqnr`: full int8 + 3 dB on held-out calibration images", "",
             "Command: `python benchmarks/mixed_precision.py`", "",
             f"Machine: {machine_text(searched_on)}. Calibration: 200 "
             "of the 597 digits never trained on (class-stratified, seed 0, as `convert` splits them), `auto` ranges; "
             "the search scores every one of them, each run by a candidate ranged on the other three quarters. "
             "Evaluation: the other 397. Latency: the same parts in float32 (or dynamic-range int8) "
             "in the network at 224 (random weights), batch 1, 2 threads, alternating rounds.",
             *latency_machine_lines(results + float_output_results + dynamic_results + auto_results)]
    if retrained:
        lines += ["", f"The first two tables and the dynamic-range one: models trained again and searched on "
                  f"{machine_text(retrained)} (the trained models are cached outside the repository, and training "
                  "is not bit-reproducible across CPUs: their full-int8 scores differ from the earlier models'). The "
                  "int8 ONNX tables (the search and NNCF beside it): searched again there with those models "
                  "(`python benchmarks/mixed_precision.py onnx_again onnx onnx_latency nncf`; searched again in "
                  "session 49 with every step scored corrected, the rows before that in the JSON's "
                  "`previous_onnx_results`). The other tables: the models trained and searched earlier "
                  "on the machine above; the first two tables' rows for those models are kept in the JSON "
                  "(`previous_models_results`, `previous_models_float_output_results`)."]
    lines += ["", *tflite_lines(results)]
    if float_output_results:
        lines += ["", "## TFLite with `--output-type float32`", "",
                  "The same, with a float32 output: the head (pooling, classifier) may stay float, so the int8 output "
                  "tensor is no longer the floor; `--fallback-precision auto` (the default), so a row's parts are "
                  "dynamic-range int8 where those met the budget. Command: `python benchmarks/mixed_precision.py "
                  "tflite_float_output`; the rows that kept float32 parts measured again by `tflite_float_output_demoted` "
                  "once their weight layers could go to dynamic-range int8 where the budget holds.",
                  "", *tflite_lines(float_output_results)]
    if dynamic_results:
        lines += dynamic_lines(dynamic_results, results)
    if auto_results:
        lines += auto_lines(auto_results, results)
    if floor_results:
        lines += floor_lines(floor_results, auto_results)
    if cap_results:
        lines += cap_lines(cap_results, auto_results, floor_results)
    if saved.get("corrected_steps_results"):
        lines += corrected_steps_lines(saved["corrected_steps_results"], cap_results, saved["corrected_steps_machine"])
    if saved.get("corrected_float_output_results"):
        lines += corrected_float_output_lines(saved["corrected_float_output_results"], float_output_results,
                                              saved["corrected_float_output_machine"])
    if saved.get("bar_mnist_results") or saved.get("bar_retimed_results") or saved.get("bar_fashion_results"):
        lines += bar_lines(saved.get("bar_mnist_results", []), saved.get("bar_retimed_results", []),
                           saved.get("bar_mnist_machine"), saved.get("bar_fashion_results", []),
                           saved.get("bar_fashion_machine"), saved)
    if saved.get("bar_tail_room_results"):
        lines += tail_room_lines(saved["bar_tail_room_results"],  # without room: the latest search of each model
                                 saved.get("bar_mnist_results", []) + saved.get("bar_fashion_results", [])
                                 + saved.get("bar_float_logits_results", []), saved["bar_tail_room_machine"])
    if saved.get("bar_tail_room_int8_results"):
        lines += tail_room_int8_lines(saved["bar_tail_room_int8_results"],
                                      saved.get("bar_mnist_results", []) + saved.get("bar_fashion_results", []),
                                      saved["bar_tail_room_int8_machine"])
    searched_before = [result for key in ("bar_mnist_results", "bar_fashion_results", "corrected_float_output_results")
                       for result in saved.get(key, []) if result.get("output_type") == "float32"]
    if saved.get("bar_float_logits_results"):
        lines += float_logits_lines(saved["bar_float_logits_results"], searched_before,
                                    saved["bar_float_logits_machine"])
    if saved.get("bar_softmax_float32_results"):
        lines += softmax_float32_lines(saved["bar_softmax_float32_results"], searched_before,
                                       saved["bar_softmax_float32_machine"])
    if saved.get("bar_softmax_ratio_results"):
        lines += softmax_ratio_lines(saved["bar_softmax_ratio_results"], searched_before,
                                     saved["bar_softmax_ratio_machine"])
    if saved.get("bar_int8_softmax_ratio_results"):
        searched_int8 = searched_int8_of(saved) + saved.get("bar_int8_softmax_ratio_mean_of_db_results", [])
        lines += int8_softmax_ratio_lines(saved["bar_int8_softmax_ratio_results"], searched_int8,
                                          saved["bar_int8_softmax_ratio_machine"], saved["corrected_steps_machine"])
    lines += gain_lines([results, float_output_results, dynamic_results, auto_results, floor_results, cap_results])
    if any(mnist_results.values()):
        lines += mnist_lines(mnist_results)
    if saved.get("level_se_results"):
        lines += level_se_lines(saved["level_se_results"], saved["level_se_machine"])
    if saved.get("fashion_results"):
        lines += fashion_lines(saved["fashion_results"], saved["fashion_machine"])
    if onnx_results:
        lines += onnx_lines(onnx_results, saved.get("previous_onnx_results", ()))
        if saved.get("onnx_softmax_ratio_results"):
            lines += onnx_softmax_ratio_lines(saved["onnx_softmax_ratio_results"], onnx_results,
                                              saved.get("onnx_softmax_ratio_mean_of_db_results", []),
                                              saved["onnx_softmax_ratio_machine"])
        lines += nncf_lines(onnx_results)
    if saved.get("bar_onnx_results"):
        lines += bar_onnx_lines(saved["bar_onnx_results"], saved.get("bar_onnx_mean_of_db_results", []),
                                saved["bar_onnx_machine"])
    if saved.get("bar_onnx_tail_room_results"):
        lines += bar_onnx_tail_room_lines(saved["bar_onnx_tail_room_results"], saved.get("bar_onnx_results", []),
                                          saved["bar_onnx_tail_room_machine"])
    if any("nncf" in result for result in saved.get("bar_onnx_results", [])):
        lines += bar_onnx_nncf_lines(saved["bar_onnx_results"], saved["bar_onnx_nncf_machine"],
                                     saved.get("bar_onnx_nncf_224_machine"))
    if saved.get("bar_softmax_pooled_results") or saved.get("bar_onnx_pooled_results"):
        float32_softmax = [result for result in searched_before if "softmax" in result["model"]]
        lines += levels_lines(
            [float32_softmax, saved.get("bar_softmax_ratio_results", []), saved.get("bar_softmax_pooled_results", [])],
            [saved.get("bar_onnx_mean_of_db_results", []), saved.get("bar_onnx_results", []),
             saved.get("bar_onnx_pooled_results", [])], saved.get("bar_softmax_pooled_machine"))
    if gains:
        lines += part_gains_lines(gains)
    write_results("mixed_precision", {"machine": searched_on, "results": results, "onnx_results": onnx_results,
                                      "float_output_results": float_output_results, "part_gains": gains,
                                      "dynamic_results": dynamic_results, "auto_results": auto_results,
                                      "softmax_floor_results": floor_results, "grid_cap_results": cap_results,
                                      **mnist_results,
                                      **{key: saved[key] for key in (*PREVIOUS, *KEPT_KEYS) if key in saved}},
                  "\n".join(lines) + "\n")


def part_gains(name, model, size, depth):
    """Each part alone in float32 in the int8 TFLite (`auto`'s rule): its
    cross-fitted gain over full int8 on the 200 calibration images (as the
    search measures it), on how few of them half of that gain rests, and its
    gain on the 397 evaluation images."""
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import int8_tflite, run_tflite_bytes, tflite_chooser
    from edge_resnet.quantize.mixed import cross_fits, images_carrying_half_the_gain, model_parts, output_sqnr_db
    from edge_resnet.quantize.ranges import RangeMethod
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.selection import calibration_inputs, resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(fold_batchnorm(model)[0])
    calibration, evaluation = digits(size)
    statistics = collect_statistics(float_model, calibration)
    method, ranges, _ = resolved_ranges(statistics, RangeMethod("auto"), tflite_chooser(float_model, True, calibration))
    inputs, reference = calibration_inputs(calibration, statistics), statistics.float_outputs
    evaluation_reference = run_tflite_bytes(float_model, evaluation, "float")
    parts, layout, recipe = model_parts(float_model), cross_fits(statistics, method), QuantizationRecipe()

    def measured(part):
        scopes = parts[part] if part else ()
        outputs = np.empty_like(reference)
        for fold_ranges, positions in layout:
            outputs[positions] = run_tflite_bytes(int8_tflite(float_model, fold_ranges, recipe, scopes),
                                                  inputs[positions], "candidate")
        on_evaluation = run_tflite_bytes(int8_tflite(float_model, ranges, recipe, scopes), evaluation, "candidate")
        return outputs, output_sqnr_db(reference, outputs), output_sqnr_db(evaluation_reference, on_evaluation)

    full_outputs, full_calibration, full_evaluation = measured(None)
    rows = []
    for part in (part for part in parts if part != "head"):  # a float head would change the int8 output
        outputs, on_calibration, on_evaluation = measured(part)
        rows.append({"part": part, "calibration_gain_db": on_calibration - full_calibration,
                     "gain_images": images_carrying_half_the_gain(reference, full_outputs, outputs),
                     "evaluation_gain_db": on_evaluation - full_evaluation})
    print(name, rows, flush=True)
    return {"model": name, "rule": method.describe(), "rows": rows}


def part_gains_lines(results):
    from edge_resnet.quantize.mixed import FRAGILE_GAIN_IMAGES

    lines = ["", "## Does a part's gain on the calibration images hold on others?", "",
             "Each part alone in float32 in the int8 TFLite: its gain over full int8 on the 200 calibration images, "
             "cross-fitted as the search measures it, against its gain on the 397 evaluation images. Parts that "
             f"gain at least 0.5 dB on the calibration images, split by whether half that gain rests on "
             f"{FRAGILE_GAIN_IMAGES} images or fewer (the search does not count those). Command: "
             "`python benchmarks/mixed_precision.py part_gains`.", "",
             "| model | parts | gaining >= 0.5 dB: fragile (held on evaluation, mean evaluation gain) | "
             "gaining >= 0.5 dB: not fragile (held, mean evaluation gain) | correlation calibration vs evaluation gain |",
             "|---|---|---|---|---|"]
    for result in results:
        rows = result["rows"]
        gaining = [row for row in rows if row["calibration_gain_db"] >= 0.5]

        def summary(group):
            if not group:
                return "none"
            held = sum(row["evaluation_gain_db"] > 0 for row in group)
            return f"{len(group)} ({held} held, {np.mean([row['evaluation_gain_db'] for row in group]):+.2f} dB)"

        fragile = [row for row in gaining if row["gain_images"] is not None
                   and row["gain_images"] <= FRAGILE_GAIN_IMAGES]
        sturdy = [row for row in gaining if row not in fragile]
        correlation = np.corrcoef([row["calibration_gain_db"] for row in rows],
                                  [row["evaluation_gain_db"] for row in rows])[0, 1]
        lines.append(f"| {result['model']} | {len(rows)} | {summary(fragile)} | {summary(sturdy)} | "
                     f"{correlation:+.2f} |")
    return lines


def machine_text(described):
    return f"{described['cpu']}, {described['cores']} cores, {' '.join(described['isa'])}"


def latency_machine_lines(results):
    """Where the TFLite latencies were timed, when that was not where the searches ran (`tflite_latency`)."""
    machines = {(m["cpu"], m["cores"], " ".join(m["isa"])) for m in
                (result["latency_224"].get("machine") for result in results) if m}
    return [f"Latency at 224 timed again on {cpu}, {cores} cores, {isa} (`python benchmarks/mixed_precision.py "
            "tflite_latency`: every row's float parts, all rows in one run)." for cpu, cores, isa in sorted(machines)]


def dynamic_lines(dynamic_results, float_results):
    """The dynamic-range int8 rows, and what `--fallback-precision auto` (the
    default: dynamic parts, float32 parts when those miss the budget) makes of each model."""
    lines = ["", "## Parts in dynamic-range int8 (`--fallback-precision dynamic`)", "",
             "The same budget, searched with the parts' convolutions in dynamic-range int8 (int8 weights, their "
             "input quantized per image at run time, float32 between them) instead of float32. Command: "
             "`python benchmarks/mixed_precision.py tflite_dynamic`, on the machine named with the latency.", "",
             *tflite_lines(dynamic_results), "", "### What `auto` (the default) keeps", "",
             "Dynamic-range parts where they meet the budget on the held-out calibration images, else the float32 "
             "search of the first table (before float32 parts' weight layers could go to dynamic-range int8: the "
             "next table runs `auto` as it is now); latency at 224 on this machine.", "",
             "| model | kept | met on held-out | evaluation full int8 -> kept (budget) | met on evaluation within "
             "1 dB | p50 at 224 vs full int8 | float32 parts' p50 vs full int8 |", "|---|---|---|---|---|---|---|"]
    by_model = {result["model"]: result for result in float_results}
    for dynamic in dynamic_results:
        float32 = by_model.get(dynamic["model"])
        kept = dynamic if dynamic["met_on_held_out"] or float32 is None else float32
        evaluated = kept["evaluation_db"]
        float_ratio = f"{float32['latency_224']['mixed_over_int8']:.2f}x" if float32 else "-"
        lines.append(f"| {dynamic['model']} | {kept.get('precision', 'float32')}: {len(kept['float_parts'])} parts | "
                     f"{'yes' if kept['met_on_held_out'] else 'NO'} | {evaluated['full int8']:.2f} -> "
                     f"{evaluated['mixed']:.2f} ({kept['budget_db']:.2f}) | "
                     f"{'yes' if evaluated['mixed'] >= kept['budget_db'] - 1 else 'NO'} | "
                     f"{kept['latency_224']['mixed_over_int8']:.2f}x | {float_ratio} |")
    return lines


def auto_lines(auto_results, float_results):
    """What `auto` (the default) makes with an int8 output, its float32 parts' convolutions the budget does not
    need in float32 run in dynamic-range int8, beside the float32-only search of the first table."""
    lines = ["", "## `--fallback-precision auto` (the default), int8 output", "",
             "The whole default search on the same budgets: dynamic-range parts; where those miss the budget, "
             "float32 parts, then each of their weight layers the budget does not need in float32 in dynamic-range "
             "int8 (kept where the budget holds on the held-out calibration images). Command: "
             "`python benchmarks/mixed_precision.py tflite_auto`; latency at 224 on the machine named with it.", "",
             "| model | kept | weight layers in dynamic-range int8 | held-out (budget) | evaluation full int8 -> kept | "
             "met on evaluation within 1 dB | p50 at 224 vs full int8 | float32 parts alone (first table) | "
             "search s |", "|---|---|---|---|---|---|---|---|---|"]
    by_model = {result["model"]: result for result in float_results}
    for result in auto_results:
        float32, evaluated = by_model.get(result["model"]), result["evaluation_db"]
        alone = (f"{float32['latency_224']['mixed_over_int8']:.2f}x, {float32['evaluation_db']['mixed']:.2f} dB"
                 if float32 else "-")
        lines.append(
            f"| {result['model']} | {result['precision']}: {len(result['float_parts'])} parts "
            f"({result['float_operators']} operators) | "
            f"{'all' if result['precision'] == 'dynamic' else len(result.get('dynamic_operators', []))} | "
            f"{held_mixed(result)} ({result['budget_db']:.2f}){'' if result['met_on_held_out'] else ', NOT met'} | "
            f"{evaluated['full int8']:.2f} -> {evaluated['mixed']:.2f} | "
            f"{'yes' if evaluated['mixed'] >= result['budget_db'] - 1 else 'NO'} | "
            f"{result['latency_224']['mixed_over_int8']:.2f}x | "
            f"{alone} | {result['search_seconds']:.0f} |")
    return lines


def floor_lines(floor_results, auto_results):
    """The default search on the softmax heads with the floor under the int8 softmax input, beside it before."""
    lines = ["", "## The softmax heads with the floor under the int8 softmax's input", "",
             "The `--fallback-precision auto` search of the table above (int8 output, same data, same budget rule) "
             "run again once every range rule floors an output softmax's int8 input (ranges.softmax_input_floor); "
             "before -> with the floor. Command: `python benchmarks/mixed_precision.py softmax_floor`.", "",
             "| model | full int8, held-out | full int8, evaluation | budget | kept | held-out (met?) | "
             "evaluation kept (met within 1 dB?) | p50 at 224 vs full int8 | search s |",
             "|---|---|---|---|---|---|---|---|---|"]
    before = {result["model"]: result for result in auto_results}

    def kept(result):
        return f"{result['precision']}: {len(result['float_parts'])} parts ({result['float_operators']} operators)"

    def met(result):
        return "yes" if result["evaluation_db"]["mixed"] >= result["budget_db"] - 1 else "NO"

    for after in floor_results:
        old = before.get(after["model"])
        if old is None:
            continue
        lines.append(
            f"| {after['model']} | {old['held_out_db']['full int8']:.2f} -> {after['held_out_db']['full int8']:.2f} | "
            f"{old['evaluation_db']['full int8']:.2f} -> {after['evaluation_db']['full int8']:.2f} | "
            f"{old['budget_db']:.2f} -> {after['budget_db']:.2f} | {kept(old)} -> {kept(after)} | "
            f"{held_mixed(old)} ({'yes' if old['met_on_held_out'] else 'NO'}) -> {held_mixed(after)} "
            f"({'yes' if after['met_on_held_out'] else 'NO'}) | "
            f"{old['evaluation_db']['mixed']:.2f} ({met(old)}) -> {after['evaluation_db']['mixed']:.2f} ({met(after)}) | "
            f"{old['latency_224']['mixed_over_int8']:.2f}x -> {after['latency_224']['mixed_over_int8']:.2f}x | "
            f"{old['search_seconds']:.0f} -> {after['search_seconds']:.0f} |")
    return lines


def cap_lines(cap_results, auto_results, floor_results):
    """The default search where the int8 output's own grid caps the output SQNR, beside the search before."""
    lines = ["", "## The int8 output's own grid: a cap no part lifts", "",
             "The default search (`--fallback-precision auto`, int8 output, same data, same budget rule) once it "
             "measures what the int8 head's grids alone leave of the output SQNR on the held-out calibration images "
             "(the float model's outputs through the int8 output's grid, and a softmax head's logits first through "
             "its int8 input's; mixed.grid_sqnrs), stops at once when the budget is above that cap, and estimates a "
             "softmax head's steps with the int8 output grid's error kept apart (mixed.judged_sqnr). Before: the "
             "search of the tables above (the softmax heads with the floor). Command: `python "
             "benchmarks/mixed_precision.py grid_cap`.", "",
             "| model | full int8, held-out | budget | grid cap | before: kept, held-out (met?), evaluation (met within "
             "1 dB?), p50 vs full int8, s | now: kept or why not, held-out (met?), evaluation, p50 vs full int8, s | "
             "--output-type float32, head alone (held-out, met?) |", "|---|---|---|---|---|---|---|"]
    before = {result["model"]: result for result in auto_results}
    before.update({result["model"]: result for result in floor_results})

    def outcome(result):
        met_eval = "yes" if result["evaluation_db"]["mixed"] >= result["budget_db"] - 1 else "NO"
        kept = (f"{result['precision']}: {len(result['float_parts'])} parts" if result["float_parts"]
                else "full int8")
        return (f"{kept}, {held_mixed(result)} ({'yes' if result['met_on_held_out'] else 'NO'}), "
                f"{result['evaluation_db']['mixed']:.2f} ({met_eval}), "
                f"{result['latency_224']['mixed_over_int8']:.2f}x, {result['search_seconds']:.0f}")

    for now in cap_results:
        old = before.get(now["model"])
        grid = now.get("grid_db")
        capped = grid is not None and grid < now["budget_db"]
        float_output = now.get("with_float32_output")
        alternative = (f"{float_output['held_out_db']:.2f} ({'yes' if float_output['met'] else 'NO'})"
                       if float_output else "-")
        lines.append(f"| {now['model']} | {now['held_out_db']['full int8']:.2f} | {now['budget_db']:.2f} | "
                     f"{'-' if grid is None else f'{grid:.2f}'}{' (below the budget)' * capped} | "
                     f"{outcome(old) if old else '-'} | "
                     f"{'stopped at once: capped, ' if capped else ''}{outcome(now)} | {alternative} |")
    return lines


def before_cell(old, kept):
    """A table cell on a row searched before: what it kept, held-out (met?), evaluation (met within 1 dB?), p50."""
    old_met = old["evaluation_db"]["mixed"] >= old["budget_db"] - 1
    return (f"{kept(old)}, {held_mixed(old)} ({'yes' if old['met_on_held_out'] else 'NO'}), "
            f"{old['evaluation_db']['mixed']:.2f} ({'yes' if old_met else 'NO'}), "
            f"{old['latency_224']['mixed_over_int8']:.2f}x")


def corrected_steps_lines(corrected_results, cap_results, searched_on):
    """The default search once every step is scored with its biases corrected as the artifact's are, beside the
    search of the models as quantized (the grid-cap table's rows)."""
    lines = ["", "## Steps scored as the artifact is: biases corrected", "",
             "The default search (`--fallback-precision auto`, int8 output, same data, same budget rule: full int8 + "
             "3 dB on the held-out calibration images) once each step's candidates get their biases corrected as the "
             "artifact's are (each quarter's candidate on the images its ranges came from, guarded as the default "
             "guards it; parts ranked and shortlisted as quantized). Full int8 is then what the default writes "
             "(corrected where that helps), so the level is 3 dB over it. Before: the grid-cap table's search, its "
             "steps and level on the models as quantized and only its artifact corrected afterwards (its "
             "evaluation column: the artifact as it was written then, not corrected). Evaluation: the other 397 "
             "digits, against the default full int8 of the same run. Latency: the same parts at 224, full int8 "
             "beside it, alternating rounds. Command: `python benchmarks/mixed_precision.py corrected_steps`; "
             f"searched on {machine_text(searched_on)}.", "",
             "| model | held-out full int8: as quantized -> corrected | budget: before -> now | before: kept, held-out "
             "(met?), evaluation (met within 1 dB?), p50 vs full int8, s | now: kept, held-out (met?), evaluation "
             "full int8 -> kept (met within 1 dB?), p50 vs full int8, s |", "|---|---|---|---|---|"]
    before = {result["model"]: result for result in cap_results}

    def kept(result):
        return (f"{result['precision']}: {len(result['float_parts'])} parts ({result['float_operators']} operators)"
                if result["float_parts"] else "full int8")

    for now in corrected_results:
        old = before.get(now["model"])
        met_eval = now["evaluation_db"]["mixed"] >= now["budget_db"] - 1
        old_cell = f"{before_cell(old, kept)}, {old['search_seconds']:.0f}" if old else "-"
        lines.append(
            f"| {now['model']} | {old['held_out_db']['full int8'] if old else float('nan'):.2f} -> "
            f"{now['held_out_db']['full int8']:.2f} | {old['budget_db'] if old else float('nan'):.2f} -> "
            f"{now['budget_db']:.2f} | {old_cell} | {kept(now)}, {held_mixed(now)} "
            f"({'yes' if now['met_on_held_out'] else 'NO'}), {now['evaluation_db']['full int8']:.2f} -> "
            f"{now['evaluation_db']['mixed']:.2f} ({'yes' if met_eval else 'NO'}), "
            f"{now['latency_224']['mixed_over_int8']:.2f}x, {now['search_seconds']:.0f} |")
    return lines


def corrected_float_output_lines(corrected_results, float_output_results, searched_on):
    """The float32-output search once its steps are scored corrected, beside the same search as quantized (the
    `--output-type float32` table's rows)."""
    lines = ["", "## `--output-type float32`, steps scored as the artifact is", "",
             "The default search with a float32 output (the head may stay float, so the int8 output's grid is no "
             "cap), every step's candidates with their biases corrected as the artifact's are; budget: full int8 "
             "as the default writes it + 3 dB on the held-out calibration images. Before: the `--output-type "
             "float32` table (steps on the models as quantized). Evaluation: the other 397 digits. Latency: the "
             "same parts at 224 with a float32 output, full int8 beside it, alternating rounds. Command: "
             "`python benchmarks/mixed_precision.py corrected_float_output`; searched on "
             f"{machine_text(searched_on)}.", "",
             "| model | budget: before -> now | before: kept, held-out (met?), evaluation (met within 1 dB?), p50 vs "
             "full int8 | now: kept, held-out (met?), evaluation full int8 -> kept (met within 1 dB?; gain), p50 vs "
             "full int8, s |", "|---|---|---|---|"]
    before = {result["model"]: result for result in float_output_results}

    def kept(result):
        if not result["float_parts"]:
            return "full int8"
        return (f"{result['precision']}: {', '.join(result['float_parts'])} "
                f"({result['float_operators']} operators)")

    for now in corrected_results:
        old = before.get(now["model"])
        met_eval = now["evaluation_db"]["mixed"] >= now["budget_db"] - 1
        old_cell = before_cell(old, kept) if old else "-"
        lines.append(
            f"| {now['model']}{trained_again_text(now)} | "
            f"{old['budget_db'] if old else float('nan'):.2f} -> {now['budget_db']:.2f} | "
            f"{old_cell} | {kept(now)}, {held_mixed(now)} ({'yes' if now['met_on_held_out'] else 'NO'}), "
            f"{now['evaluation_db']['full int8']:.2f} -> {now['evaluation_db']['mixed']:.2f} "
            f"({'yes' if met_eval else 'NO'}; {evaluation_gain_text(now)}), "
            f"{now['latency_224']['mixed_over_int8']:.2f}x{searched_elsewhere(now, searched_on)}, "
            f"{now['search_seconds']:.0f} |")
    return lines


def trained_again_text(result):
    """' (trained again: ...)' where a row's network was trained again after the rows beside it were searched."""
    return f" ({result['trained_again']})" if result.get("trained_again") else ""


def searched_elsewhere(result, section_machine):
    """' (searched on CPU)' where a row was searched and timed on another CPU than its section's, else ''."""
    cpu = (result.get("latency_224") or {}).get("machine", {}).get("cpu")
    return f" (searched on {cpu})" if cpu and section_machine and cpu != section_machine.get("cpu") else ""


def bar_verdict(result):
    """The issue's bar on one search: met on the held-out images, then on the evaluation images within 1 dB (as a
    level, and as the gain asked over full int8), every operator on XNNPACK, latency at 224 at most 1.5x."""
    evaluated, speed = result["evaluation_db"], result["latency_224"]
    level = evaluated["mixed"] >= result["budget_db"] - 1
    gain = evaluated["mixed"] - evaluated["full int8"] >= BUDGET_OVER_FULL_INT8_DB - 1
    cheap = speed["mixed_over_int8"] <= 1.5 and speed["mixed_fully_delegated"]
    return {"level": result["met_on_held_out"] and level and cheap, "gain": result["met_on_held_out"] and gain and cheap}


def bar_lines(bar_results, retimed_rows, searched_on, fashion_results=(), fashion_searched_on=None, corrected=None):
    """The issue's bar (full int8 + 3 dB on the held-out images, within 1 dB on the evaluation images, at most 1.5x
    full int8's latency at 224) on the MNIST ResNet-50s searched now, the digits ResNet-50 rows timed here, and the
    Fashion-MNIST ResNet-50s. `corrected`: the saved results, whose corrected tables the retimed rows came from."""
    corrected = corrected or {}
    lines = ["", "## The bar on ResNet-50s: the search of now, timed on another VNNI CPU", ""]
    bar = ("Bar: met on the held-out images, then on the evaluation images within 1 dB, read as the level and as the "
           "gain asked over full int8, every operator on XNNPACK, at most 1.5x full int8's p50.")
    searched_now = {(result["model"], output_type): result
                    for key, output_type in BAR_TABLES.items() for result in corrected.get(key, [])}
    if bar_results:
        lines += ["The MNIST ResNet-50s of the section \"Another data set\" (no rule of the search was chosen on "
                  "them), searched again with the default search of now (steps scored corrected, the softmax floor, "
                  "the grid cap), both output types, the same budget rule (full int8 + 3 dB on the held-out "
                  "calibration images), 200 calibration images, 2300 evaluation images; latency: the same parts at "
                  f"224, full int8 beside it, alternating rounds. {bar} Command: `python benchmarks/mixed_precision.py "
                  f"bar_mnist`; searched and timed on {machine_text(searched_on)}.", "", *bar_table(bar_results)]
    if retimed_rows:
        lines += ["", "The digits ResNet-50 rows of the two corrected tables above that keep parts out of int8, the "
                  "same parts timed again at 224 here (`python benchmarks/mixed_precision.py bar_retimed`): how "
                  "much the latency bar depends on the CPU.", "",
                  "| model | output | kept (the layers the search put back in int8 or demoted timed so too) | "
                  "p50 vs full int8 where searched | p50 here: int8 -> kept (ratio) | "
                  "float32 p50 here |", "|---|---|---|---|---|---|"]
        for row in retimed_rows:
            there, here = row["searched_latency_224"], row["latency_224"]
            now = searched_now.get((row["model"], row["output_type"]), row)
            superseded = bool(now.get("trained_again")) or now["float_parts"] != row["float_parts"]
            lines.append(
                f"| {row['model']}{' (an earlier search: the table above now holds another)' * superseded} | "
                f"{row['output_type']} | {row['precision']}: {', '.join(row['float_parts'])} | "
                f"{there['mixed_over_int8']:.2f}x ({machine_text(there['machine'])}) | "
                f"{here['p50_ms']['full int8']:.2f} -> {here['p50_ms']['mixed']:.2f} ({here['mixed_over_int8']:.2f}x; "
                f"{machine_text(here['machine'])}) | {here['p50_ms']['float32']:.2f} |")
    if fashion_results:
        lines += ["", "The ResNet-50s trained on Fashion-MNIST (benchmarks/trained.py: w0.25 seed 103 of "
                  "`fashion_models`, searched with an earlier search in the section \"Models unsure of many images\" "
                  "below; w0.5 seed 109 of `fashion_fresh_models`, never searched for a budget before; both "
                  "unsure of many images, so a softmax head's error is spread over many of them), the same default "
                  "search, budget rule and latency, 200 calibration images split off the 4000 training images no "
                  f"model trained on, the 10,000 test images evaluate. {bar} Command: `apt-get install "
                  "dataset-fashion-mnist`, then `python benchmarks/mixed_precision.py bar_fashion`; searched and "
                  f"timed on {machine_text(fashion_searched_on)}.", "", *bar_table(fashion_results)]
    return lines


def room_applied_text(room_results, without):
    """Where the searches' ranges took the room: from the rows' records, or, for rows saved before they kept them,
    from their full int8 moving against the same search without room."""
    recorded = [result for result in room_results if result.get("ranges")]
    if len(recorded) == len(room_results):
        applied = sum(bool((result["ranges"]["tail_room"] or {}).get("applied")) for result in recorded)
        return f"the room applied on {applied} of {len(recorded)}, as their records say"
    moved = sum(result["model"] in without and abs(result["evaluation_db"]["full int8"]
                                                    - without[result["model"]]["evaluation_db"]["full int8"]) > 0.01
                for result in room_results)
    return f"the room applied on {moved} of {len(room_results)}: their full int8 moved with it"


def tail_room_lines(room_results, bar_results, searched_on):
    """The bar's logits-head float32-output searches with --tail-room, beside the same searches without it."""
    without = {result["model"]: result for result in bar_results if result["output_type"] == "float32"}
    lines = ["", f"### The same logits heads with `--tail-room {BAR_TAIL_ROOM}`", "",
             f"The float32-output searches of the MNIST and Fashion-MNIST logits heads above (and, with "
             "`bar_tail_room_digits`, the digits ResNet-50s' of the next section), again with "
             f"`--tail-room {BAR_TAIL_ROOM}` (the ranges of the rule `auto` took, where it is minmax or "
             f"extrapolated, widened to where the extremes of {BAR_TAIL_ROOM} times the calibration images "
             f"typically lie: benchmarks/results/tail_room.md; {room_applied_text(room_results, without)}), full "
             "int8 and its budget included; the same images, bar and latency. Logits heads only: on the softmax "
             "heads `auto` took clipping rules, which take no room. "
             "Command: `python benchmarks/mixed_precision.py bar_tail_room bar_tail_room_digits`; searched and "
             "timed on "
             f"{machine_text(searched_on)}.", "", *bar_table(room_results), "",
             "Searched again in session 63 with the search of now: the same parts and levels as session 55's "
             "(session 54's rows: git history); without room below: the same search of now (the section after "
             "this one).", "",
             "| model | evaluation without room: full int8 -> kept | with room: full int8 -> kept | kept with room "
             "minus kept without |", "|---|---|---|---|"]
    for result in room_results:
        plain = without.get(result["model"])
        if plain:
            lines.append(f"| {result['model']} | {plain['evaluation_db']['full int8']:.2f} -> "
                         f"{plain['evaluation_db']['mixed']:.2f} | {result['evaluation_db']['full int8']:.2f} -> "
                         f"{result['evaluation_db']['mixed']:.2f} | "
                         f"{result['evaluation_db']['mixed'] - plain['evaluation_db']['mixed']:+.2f} |")
    return lines


def search_resnet50_heads(saved, path, part, head, precision, output_type="float32"):
    """The `output_type` searches of every trained ResNet-50's `head` ("logits" or "softmax": MNIST,
    Fashion-MNIST, digits) with --fallback-precision `precision`, into saved[PART_results] (the models it has
    are skipped), written to `path` after each."""
    import json

    results = saved.setdefault(f"{part}_results", [])
    saved[f"{part}_machine"] = machine()
    done = {result["model"] for result in results}
    for models, data in ((mnist_models, mnist_images), (fashion_resnet50s, fashion_images), (trained_models, digits)):
        for entry in (entry for entry in models() if "ResNet-50" in entry[0] and f"{head} head" in entry[0]
                      and entry[0] not in done):
            results.append(measure(*entry, output_type=output_type, precision=precision, data=data))
            path.write_text(json.dumps(saved, indent=2) + "\n")


@contextlib.contextmanager
def judged_by(level):
    """A softmax head's level judged by `level(probabilities, float logits, logits, full int8's logits)`, a gain
    in dB over full int8, in place of mixed.error_ratio_gain_db. The steps' recorded gain_se_db stays the error
    ratios' standard error (mixed.gain_standard_error is not patched; it decides nothing while
    mixed.STOP_MARGIN_SE is 0)."""
    from edge_resnet.quantize import mixed

    kept = mixed.error_ratio_gain_db
    mixed.error_ratio_gain_db = level
    try:
        yield
    finally:
        mixed.error_ratio_gain_db = kept


def mean_of_db_level(probabilities, float_logits, logits, full_int8_logits):
    """As until session 56: the mean over images of each image's logits SQNR (dB), which also ranks
    (mixed.ranked_sqnr); judged_sqnr takes its difference from full int8's."""
    from edge_resnet.quantize.mixed import per_image_mean_db

    return per_image_mean_db(float_logits, logits)


def pooled_level(probabilities, float_logits, logits, full_int8_logits):
    """The logits' squared errors summed over the images, each weighted by the float model's unsureness, full
    int8's over these (softmax_estimates.pooled_logits_gain_db)."""
    from softmax_estimates import pooled_logits_gain_db

    return pooled_logits_gain_db(probabilities, float_logits, logits, full_int8_logits)


def searched_int8_of(saved):
    """The saved int8-output searches of the bar tables and of the table "Steps scored as the artifact is"."""
    return [result for key in ("bar_mnist_results", "bar_fashion_results", "corrected_steps_results")
            for result in saved.get(key, []) if result.get("output_type") == "int8"]


def same_network_rows(results, earlier_results):
    """The rows of `earlier_results` that ran on the network their model's row of `results` ran on (the last
    such row of a model wins, as in a table's lookup)."""
    by_model = {result["model"]: result for result in results}
    return [earlier for earlier in earlier_results
            if earlier["model"] in by_model and same_network(by_model[earlier["model"]], earlier)]


def same_network(result, earlier):
    """Whether a saved `earlier` search ran on the network `result` did (the same full int8 on the same images:
    the cached networks were trained again since some saved searches)."""
    return earlier is not None and all(abs(result[key]["full int8"] - earlier[key]["full int8"]) < 0.01
                                       for key in ("held_out_db", "evaluation_db"))


def searched_by_mean_of_db(saved, path, part, earlier_results, search):
    """For each softmax-head search in saved[PART_results] whose earlier search (`earlier_results`) ran on other
    weights (or is missing),
    the same search on this network with the level judged by the mean of dB (mean_of_db_level):
    `search(entry, data)` makes it; into saved[PART_mean_of_db_results], written to `path` after each."""
    import json

    results = saved.setdefault(f"{part}_mean_of_db_results", [])
    earlier = {result["model"]: result for result in earlier_results}
    done = {result["model"] for result in results}
    wanted = {result["model"] for result in saved.get(f"{part}_results", []) if "softmax head" in result["model"]
              and not same_network(result, earlier.get(result["model"])) and result["model"] not in done}
    for models, data in ((mnist_models, mnist_images), (fashion_resnet50s, fashion_images), (trained_models, digits)):
        for entry in (entry for entry in models() if entry[0] in wanted):
            with judged_by(mean_of_db_level):
                result = search(entry, data)
            results.append({**result, "judged_by": "mean of dB, searched on this network"})
            saved[f"{part}_mean_of_db_machine"] = machine()
            path.write_text(json.dumps(saved, indent=2) + "\n")


def timed_onnx_search(entry, data=digits, tail_room=None):
    """measure_onnx's search of `entry` on `data`, its kept parts timed at 224 beside full int8."""
    result = measure_onnx(*entry, data=data, tail_room=tail_room)
    result["latency_224"] = onnx_latency_at_224(result["depth"], result["float_parts"], result["int8_operators"])
    return result


def search_onnx_resnet50s(saved, path, part, head, tail_room=None):
    """timed_onnx_search of the MNIST and Fashion-MNIST ResNet-50s whose name has `head` ("head": both), into
    saved[PART_results] (the models it has are skipped), its machine in saved[PART_machine], written to `path`
    after each."""
    import json

    results = saved.setdefault(f"{part}_results", [])
    for models, data in resnet50_data_sets():
        for entry in (entry for entry in models() if head in entry[0]
                      and entry[0] not in {row["model"] for row in results}):
            results.append(timed_onnx_search(entry, data, tail_room))
            saved[f"{part}_machine"] = machine()
            path.write_text(json.dumps(saved, indent=2) + "\n")


def nncf_beside_bar_onnx(saved, path):
    """compare_with_nncf beside each bar_onnx search (its artifact as the search wrote it, the same data), into the
    result's "nncf" (results that have one are skipped), the machine in saved["bar_onnx_nncf_machine"], written to
    `path` after each."""
    import json

    models = {name: (model, data) for sets, data in resnet50_data_sets()
              for name, model, _, _ in sets()}
    for result in (result for result in saved.get("bar_onnx_results", []) if "nncf" not in result):
        if not Path(result["artifact"]).exists():
            raise SystemExit(f"{result['artifact']} is gone: take {result['model']} out of bar_onnx_results and run "
                             "bar_onnx again first")
        result["nncf"] = compare_with_nncf(result, *models[result["model"]])
        print(result["model"], result["nncf"], flush=True)
        saved["bar_onnx_nncf_machine"] = machine()
        path.write_text(json.dumps(saved, indent=2) + "\n")


def float_convolutions_at_224(saved, path):
    """Per bar_onnx row with NNCF beside it, in our int8 ONNX of a full-width ResNet at 224: our search's float
    parts left float as its artifact leaves them (part_nodes), and the convolutions (Conv/Gemm) each NNCF
    route's artifact left float, left float alone (as NNCF reverts an operation: its input and weights, the
    next operation's input quantized again), every route timed beside full int8 and float32 in one interleaved
    run (onnx_latencies_at_224), into the row's "float_nodes" (the NNCF routes') and "latency_224_same_run"
    (rows that have it are skipped), written to `path` after each. Also the float model's convolution count
    ("convolutions")."""
    import json

    import onnx

    from edge_resnet.quantize.onnx_export import float_weight_ops

    def layer_names(artifact):  # a softmax head's classifier node is "predictions/pre_activation" at 32x32 and
        return [name.split("/")[0] for name in float_weight_ops(onnx.load(artifact))]  # "predictions" at 224

    for result in (result for result in saved.get("bar_onnx_results", [])
                   if "nncf" in result and "latency_224_same_run" not in result):
        artifacts = {label: row["path"] for label, row in result["nncf"].items() if "path" in row and label != OURS}
        result["float_nodes"] = {label: layer_names(artifact) for label, artifact in artifacts.items()}
        nncf_folder = next(Path(artifacts[label]).parent for label in NNCF_SETTINGS if label in artifacts)
        result["convolutions"] = len(float_weight_ops(onnx.load(nncf_folder / "float.onnx")))
        result["latency_224_same_run"] = onnx_latencies_at_224(result["depth"], {
            OURS: part_nodes(result["float_parts"], result["int8_operators"]), **result["float_nodes"]})
        for row in result["nncf"].values():
            row.pop("latency_224", None)  # an earlier timing of NNCF's float convolutions alone, one route a run
        print(result["model"], result["latency_224_same_run"], flush=True)
        saved["bar_onnx_nncf_224_machine"] = machine()
        path.write_text(json.dumps(saved, indent=2) + "\n")


def search_onnx_softmax_heads(saved, path, earlier_results):
    """The int8 ONNX searches of the digits models' softmax heads, each timed at 224 beside the parts its
    earlier search (`earlier_results`) kept, in one run, into saved["onnx_softmax_ratio_results"] (the models
    it has are skipped), written to `path` after each."""
    import json

    results = saved.setdefault("onnx_softmax_ratio_results", [])
    done = {result["model"] for result in results}
    earlier = {result["model"]: result for result in earlier_results}
    for entry in (entry for entry in trained_models() if "softmax head" in entry[0] and entry[0] not in done):
        result = timed_onnx_search(entry)
        before = earlier.get(result["model"])
        if before:  # the earlier search's parts timed here too, so the two ratios share a machine and a run
            result["earlier_latency_224"] = onnx_latency_at_224(before["depth"], before["float_parts"],
                                                                before.get("int8_operators", ()))
        results.append(result)
        saved["onnx_softmax_ratio_machine"] = machine()
        path.write_text(json.dumps(saved, indent=2) + "\n")


def float_logits_lines(fixed_results, earlier_results, searched_on):
    """The logits-head float32-output searches once a dynamic-range head's float32 output is its own, beside the
    same searches before."""
    return searched_again_lines(
        "The logits heads' float32-output searches, a dynamic-range head's output float",
        "Until session 55 a float32-output TFLite whose classifier ran in dynamic-range int8 (in the first "
        "tier `auto` searches, or demoted there after a float32 search) put the classifier's float32 result "
        "through a QUANTIZE and a DEQUANTIZE, so its output kept the int8 grid a float32 output is asked for "
        "to be rid of: on a logits head the dynamic-range head gained nothing and the search piled on other "
        "parts (benchmarks/results/head_precision.md). The float32-output searches of the logits-head ResNet-50s "
        "above (MNIST, Fashion-MNIST, digits), again with the output its own; the same images, bar and latency. "
        "Command: `python benchmarks/mixed_precision.py bar_float_logits`; searched and timed on "
        f"{machine_text(searched_on)}.", fixed_results, earlier_results, ("before", "now"))


def softmax_float32_lines(float32_results, auto_results, searched_on):
    """The softmax heads' float32-output searches with float32 parts only, beside `auto`'s."""
    return searched_again_lines(
        "The softmax heads' float32-output searches with float32 parts (`--fallback-precision float32`)",
        "`auto` searches dynamic-range parts first; on the softmax heads they met the budget on the held-out "
        "images and gained less on the evaluation images. The same searches with float32 parts only (no "
        "demotion), the same images, bar and latency: does a float32 part's gain carry over where a "
        "dynamic-range part's (whose activations are still quantized, per image) did not, and at what latency? "
        "Command: `python benchmarks/mixed_precision.py bar_softmax_float32`; searched and timed on "
        f"{machine_text(searched_on)}.", float32_results, auto_results, ("auto", "float32 parts")) + [
        "", paired_gain_text(float32_results, auto_results, ("`auto`", "float32 parts"))]


def softmax_ratio_lines(ratio_results, auto_results, searched_on):
    """The softmax heads' float32-output searches whose level the logits' error ratios judge, beside the same
    searches judged by the mean of the images' logits SQNR."""
    return searched_again_lines(
        "The softmax heads' float32-output searches, a step's level judged by the logits' error ratios",
        "Until session 56 a softmax head's step was judged by its gain in the mean over images of each image's "
        "logits SQNR (dB), which ran 0.7-2.2 dB over the probabilities' gain on six of the eight softmax searches "
        "judged on 2300 or more evaluation images, on those very images too (benchmarks/results/"
        "softmax_estimates.md). The same searches with the gain in the logits' error taken as each image's error "
        "over full int8's, the ratios averaged with each image weighted by how unsure the float model is of it "
        "(mixed.error_ratio_gain_db), its candidates still ranked by the mean of dB (mixed.ranked_sqnr); the same "
        "images, bar and latency. Command: `python benchmarks/mixed_precision.py "
        f"bar_softmax_ratio`; searched and timed on {machine_text(searched_on)}.", ratio_results, auto_results,
        ("mean of dB", "error ratios"), searched_on) + [
        "", paired_gain_text(ratio_results, auto_results, ("mean of dB", "error ratios"))]


def int8_softmax_ratio_lines(ratio_results, earlier_results, searched_on, digits_searched_on):
    """The softmax heads' int8-output searches whose level the logits' error ratios judge, beside the same
    searches judged by the mean of the images' logits SQNR (the digits ones searched on `digits_searched_on`)."""
    earlier = same_network_rows(ratio_results, earlier_results)
    return searched_again_lines(
        "The softmax heads' int8-output searches, a step's level judged by the logits' error ratios",
        "The int8-output searches of the softmax-head ResNet-50s (the MNIST and Fashion-MNIST ones of the bar "
        "tables above, the digits ones of the table \"Steps scored as the artifact is\"), again with the level "
        "of the section above (mixed.error_ratio_gain_db) and nothing else changed; the same images, bar and "
        "latency rule. The earlier searches as saved (the digits demo's timed on "
        f"{machine_text(digits_searched_on)}), or where they ran on weights trained before the cache's (the "
        "full-width ResNet-50's), the search of before made again on this network, its level judged by the mean "
        "of dB (`bar_int8_softmax_mean_of_db`). Commands: `python benchmarks/mixed_precision.py "
        f"bar_int8_softmax_ratio bar_int8_softmax_mean_of_db`; searched and timed on {machine_text(searched_on)}.",
        ratio_results, earlier, ("mean of dB", "error ratios"), searched_on) + [
        "", paired_gain_text(ratio_results, earlier, ("mean of dB", "error ratios"))]


def onnx_softmax_ratio_lines(ratio_results, earlier_results, again_results, searched_on):
    """The int8 ONNX's softmax-head searches whose level the logits' error ratios judge, beside the same
    searches judged by the mean of the images' logits SQNR: the saved ones (`earlier_results`, their kept parts
    timed in the same run), or where those ran on other weights, the ones searched again so (`again_results`,
    timed in their own run); and NNCF's accuracy control at the same budget on the same network (its rows of the
    section below)."""
    ratio_of = {result["model"]: result for result in ratio_results}
    before = {result["model"]: result for result in itertools.chain(earlier_results, again_results)
              if result["model"] in ratio_of and same_network(ratio_of[result["model"]], result)}
    lines = ["", "### The int8 ONNX's softmax heads, a step's level judged by the logits' error ratios", "",
             "The int8 ONNX searches of the digits models' softmax heads (the table above), again with the level of "
             "the TFLite section \"a step's level judged by the logits' error ratios\" and nothing else changed; "
             "the same images and budget rule. The kept parts of both searches timed at 224 on onnxruntime's CPU "
             "provider in this run (alternating rounds with full int8). Where the saved search ran on weights "
             "trained before the cache's (its full int8 scores differ), the search of before was made again on this "
             "network with the level judged by the mean of dB (`onnx_softmax_mean_of_db`, \"searched again\", timed "
             "in that run). NNCF: its quantize_with_accuracy_control rows of the section \"Beside NNCF\" (the same "
             "float ONNX, budget and calibration images), where they ran on this network. Commands: "
             "`python benchmarks/mixed_precision.py onnx_softmax_ratio onnx_softmax_mean_of_db`; searched and timed "
             f"on {machine_text(searched_on)}.", "",
             "| model | budget dB (held-out) | held-out full int8 -> kept | evaluation full int8 -> kept (gain) | "
             "level within 1 dB | kept (float convolutions) | p50 ratio at 224 | mean of dB before: kept (float "
             "convolutions), evaluation gain, p50 ratio | NNCF (its own ranges; min/max ranges): float "
             "convolutions, evaluation dB |", "|---|---|---|---|---|---|---|---|---|"]
    gains = []
    for r in ratio_results:
        evaluated = r["evaluation_db"]
        old = before.get(r["model"])
        old_cell = "-"
        if old:
            old_gain = old["evaluation_db"]["mixed"] - old["evaluation_db"]["full int8"]
            old_speed = old["latency_224"] if old.get("judged_by") else r["earlier_latency_224"]
            old_cell = (f"{len(old['float_parts'])} parts ({old['float_operators']}), {old_gain:+.2f}, "
                        f"{old_speed['mixed_over_int8']:.2f}x{' (searched again)' if old.get('judged_by') else ''}")
            gains.append((old_gain, evaluated["mixed"] - evaluated["full int8"]))
        nncf_rows = [(old or {}).get("nncf", {}).get(label) for label in NNCF_SETTINGS]
        nncf = "; ".join("-" if row is None else "failed" if "error" in row else
                         f"{row['float_convolutions']}, {row['evaluation_db']:.2f}" for row in nncf_rows)
        lines.append(
            f"| {r['model']} | {r['budget_db']:.2f} | {held_out_cell(r)} | {evaluated['full int8']:.2f} -> "
            f"{evaluated['mixed']:.2f} ({evaluation_gain_text(r)}) | "
            f"{'yes' if evaluated['mixed'] >= r['budget_db'] - 1 else 'NO'} | {onnx_kept_text(r)} | "
            f"{r['latency_224']['mixed_over_int8']:.2f}x | {old_cell} | "
            f"{nncf if any(nncf_rows) else '- (other weights)'} |")
    if gains:
        lines += ["", f"Over the {len(gains)} models: mean evaluation gain mean of dB "
                  f"{sum(old for old, _ in gains) / len(gains):+.2f} dB, error ratios "
                  f"{sum(new for _, new in gains) / len(gains):+.2f} dB; within 1 dB of the 3 asked: "
                  f"{sum(old >= BUDGET_OVER_FULL_INT8_DB - 1 for old, _ in gains)} (mean of dB), "
                  f"{sum(new >= BUDGET_OVER_FULL_INT8_DB - 1 for _, new in gains)} (error ratios)."]
    return lines


def onnx_bar_verdict(result):
    """bar_verdict for an int8 ONNX search (onnxruntime runs every operator; no delegate to check)."""
    return bar_verdict({**result, "latency_224": {**result["latency_224"], "mixed_fully_delegated": True}})


def bar_onnx_lines(results, mean_of_db_results, searched_on):
    """The int8 ONNX's bar on the MNIST and Fashion-MNIST ResNet-50s, and its softmax heads' searches beside the
    same searches with the level judged by the mean of dB."""
    lines = ["", "### The bar on the int8 ONNX: the MNIST and Fashion-MNIST ResNet-50s", "",
             "The ResNet-50s of the TFLite bar tables (MNIST: 200 calibration and 2300 evaluation images; "
             "Fashion-MNIST: 200 and 10,000), both heads, the int8 ONNX searched on onnxruntime with the search of "
             "now (a softmax head's level judged by the logits' error ratios), the same budget rule (full int8 + 3 "
             "dB on the held-out calibration images). Latency: the kept parts at 224 on onnxruntime's CPU provider, "
             "alternating rounds with full int8. Bar: met on the held-out images, then on the evaluation images "
             "within 1 dB (as a level, and as the gain asked), at most 1.5x full int8's p50. The evaluation images "
             "here are many, so a softmax head's gain on them is not left to the few digits that carry half its "
             "error on the 397 of the digits tables (benchmarks/results/calibration.md, its last column: 1 to 11 "
             "images on the digits softmax heads). Command: `python benchmarks/mixed_precision.py bar_onnx "
             f"bar_onnx_mean_of_db`; searched and timed on {machine_text(searched_on)}.", "",
             "| model | budget dB (held-out) | held-out full int8 -> kept | evaluation full int8 -> kept (gain) | kept "
             "(float convolutions) | p50 at 224: int8 -> kept (ratio) | bar as a level | bar as a gain | search s |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {bar_cells(r, onnx_kept_text(r), onnx_bar_verdict(r))} |" for r in results]
    before = {result["model"]: result for result in same_network_rows(results, mean_of_db_results)}
    pairs = [(before[r["model"]], r) for r in results if r["model"] in before]
    if pairs:
        lines += ["", "The softmax heads searched again with the level judged as until session 56 (the mean over "
                  "images of each image's logits SQNR), the same images, each timed in its own run here:", "",
                  "| model | mean of dB: kept (float convolutions), evaluation gain, p50 ratio, bar as a gain | "
                  "error ratios: the same |", "|---|---|---|"]
        lines += [f"| {new['model']} | {level_cell(old, onnx_bar_verdict)} | {level_cell(new, onnx_bar_verdict)} |"
                  for old, new in pairs]
    return lines


def bar_onnx_tail_room_lines(room_results, bar_results, searched_on):
    """The int8 ONNX bar's logits heads searched again with --tail-room, beside the same searches without it."""
    return room_beside_lines(
        f"The int8 ONNX's logits heads with `--tail-room {BAR_TAIL_ROOM}`", "The logits heads of the table above",
        "bar_onnx_tail_room", room_results, {result["model"]: result for result in bar_results}, searched_on,
        "kept (float convolutions)", onnx_kept_text, onnx_bar_verdict)


def tail_room_int8_lines(room_results, bar_results, searched_on):
    """The bar's logits-head int8-output searches with --tail-room, beside the same searches without it."""
    return room_beside_lines(
        f"The logits heads' int8-output searches with `--tail-room {BAR_TAIL_ROOM}`",
        "The int8-output searches of the MNIST and Fashion-MNIST logits heads of the bar tables above",
        "bar_tail_room_int8", room_results,
        {result["model"]: result for result in bar_results if result["output_type"] == "int8"}, searched_on,
        "kept", kept_parts_text, bar_verdict)


def room_beside_lines(title, searches, part, room_results, without, searched_on, kept_column, kept_text, verdict):
    """A bar table of searches made with --tail-room, then each beside the same search without it (`without`:
    {model: result})."""
    lines = ["", f"### {title}", "",
             f"{searches}, searched again with `--tail-room {BAR_TAIL_ROOM}` (the ranges of the rule `auto` took, "
             f"where it is minmax or extrapolated, widened to where the extremes of {BAR_TAIL_ROOM} times the "
             f"calibration images typically lie; {room_applied_text(room_results, without)}), full int8 and its "
             "budget included; the same images, bar and latency. Command: `python benchmarks/mixed_precision.py "
             f"{part}`; searched and timed on {machine_text(searched_on)}.", "",
             f"| model | budget dB (held-out) | held-out full int8 -> kept | evaluation full int8 -> kept (gain) | "
             f"{kept_column} | p50 at 224: int8 -> kept (ratio) | bar as a level | bar as a gain | search s |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {bar_cells(r, kept_text(r), verdict(r))} |" for r in room_results]
    lines += ["", "| model | evaluation without room: full int8 -> kept (p50 ratio) | with room: the same | kept with "
              "room minus kept without |", "|---|---|---|---|"]
    for result in (result for result in room_results if result["model"] in without):
        plain = without[result["model"]]
        lines.append(f"| {result['model']} | {evaluation_and_ratio(plain)} | {evaluation_and_ratio(result)} | "
                     f"{result['evaluation_db']['mixed'] - plain['evaluation_db']['mixed']:+.2f} |")
    return lines


def evaluation_and_ratio(result):
    """'full int8 -> kept (ratio)' on the evaluation images, the kept parts' p50 ratio at 224."""
    evaluated = result["evaluation_db"]
    return (f"{evaluated['full int8']:.2f} -> {evaluated['mixed']:.2f} "
            f"({result['latency_224']['mixed_over_int8']:.2f}x)")


def bar_onnx_nncf_lines(results, measured_on, timed_on):
    """NNCF's accuracy control beside the int8 ONNX bar searches: per route, whether it met the budget on the
    calibration images, its float convolutions, its evaluation SQNR and gain over our full int8, p50 at the
    model's own size and, its float convolutions alone left float, at 224 (one interleaved run per model each)."""
    lines = ["", "### NNCF beside the int8 ONNX bar searches", "",
             "NNCF's quantize_with_accuracy_control on the same float ONNX, the same budget (dB of the output's "
             "SQNR) and the same 200 calibration images as each search of the table above (NNCF fits its ranges on "
             "them and validates on them; our search scores each image by ranges fitted on the other three "
             "quarters), beside that search's artifact as it wrote it; all scored on the same evaluation images "
             "as the table above. NNCF's preset PERFORMANCE, its metric the output's 1 - noise/signal (its drop "
             "bound is the dB budget exactly; benchmarks/nncf_accuracy_control.py). Gain: over our full int8 on "
             "the evaluation images. p50: batch 1 at the model's own size (32x32) on onnxruntime's CPU provider, "
             "the three artifacts in alternating rounds in one run (at this size a width-0.25 network runs about "
             "as fast in float as in int8). At 224, in our int8 ONNX of a full-width ResNet-50 (seeded weights, its "
             "nodes named as these networks'; the bar tables time so too): ours "
             "with its kept parts float as its artifact keeps them (additions and activations too), NNCF's with "
             "the convolutions (Conv/Gemm) its artifact left float left float alone, as NNCF reverts an operation "
             "(NNCF's own artifact exists at 32x32 only), every route beside full int8 and float32 in one "
             "interleaved run per model. \"Met on the calibration "
             "images\": ours as its search judges it (each image scored by ranges that never saw it), NNCF's as "
             "it validates (on the images it fitted its ranges on). Command: `python "
             "benchmarks/mixed_precision.py bar_onnx_nncf bar_onnx_nncf_224`; NNCF run on "
             f"{machine_text(measured_on)}, timed at 224 on {machine_text(timed_on)}.", "",
             "| model | budget dB | route | met on the calibration images | float convolutions | evaluation dB "
             "(gain) | p50 ms | p50 at 224 over full int8 (float32's) | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    held = {}  # route: [(met on the evaluation images within 1 dB, float convolutions, every convolution float)]
    for r in (r for r in results if "nncf" in r):
        full = r["evaluation_db"]["full int8"]
        at_224 = r.get("latency_224_same_run")
        for label, row in r["nncf"].items():
            met = r["met_on_held_out"] if label == OURS else row.get("met_on_held_out")
            timing = (f"{at_224[label] / at_224['full int8']:.2f}x ({at_224['float32'] / at_224['full int8']:.2f}x)"
                      if at_224 and label in at_224 else "-")
            cells = (f"failed: {' '.join(row['error'])[:120]} | | | | |" if "error" in row else
                     f"{row['float_convolutions']} | {row['evaluation_db']:.2f} ({row['evaluation_db'] - full:+.2f}) "
                     f"| {row['p50_ms']:.3f} | {timing} | {row['seconds']:.0f} |")
            lines.append(f"| {r['model']} | {r['budget_db']:.2f} | {label} | {'yes' if met else 'no'} | {cells}")
            if "error" not in row:
                held.setdefault(label, []).append((row["evaluation_db"] >= r["budget_db"] - 1,
                                                   row["float_convolutions"],
                                                   row["float_convolutions"] == r.get("convolutions")))
    lines.append("")
    for label, rows in held.items():
        met = [(convolutions, all_float) for within, convolutions, all_float in rows if within]
        lines.append(f"- {label}: the budget met on the evaluation images within 1 dB on {len(met)} of {len(rows)}"
                     + (f" ({sum(all_float for _, all_float in met)} of them with every convolution float; float "
                        f"convolutions {', '.join(str(convolutions) for convolutions, _ in met)})" if met else "")
                     + ".")
    return lines


def level_cell(row, verdict, section_machine=None):
    """A search briefly: kept parts (operators), evaluation gain over full int8, p50 ratio (and the CPU where it
    is not `section_machine`'s), the bar as a gain (`verdict`: bar_verdict or onnx_bar_verdict)."""
    gain = row["evaluation_db"]["mixed"] - row["evaluation_db"]["full int8"]
    parts = f"{len(row['float_parts'])} parts ({row['float_operators']})" if row["float_parts"] else "full int8"
    return (f"{parts}, {gain:+.2f}, {row['latency_224']['mixed_over_int8']:.2f}x"
            f"{searched_elsewhere(row, section_machine)}, {'met' if verdict(row)['gain'] else 'no'}")


LEVELS = ("mean of dB", "error ratios", "pooled errors")


def levels_lines(tflite_levels, onnx_levels, searched_on):
    """The softmax heads' searches with each of the three levels (LEVELS: lists of results of the TFLite with a
    float32 output, and of the int8 ONNX), each search's evaluation gain and whether it meets the bar as a gain."""
    lines = ["", "### A softmax head's level three ways: the mean of dB, the error ratios, the pooled errors", "",
             "The same searches (the same models, images, budget rule and latency rule) with a softmax head's level "
             "judged by each statistic of benchmarks/results/softmax_estimates.md that reads the logits: the mean "
             "over images of each image's logits SQNR (until session 56), the mean of the images' logits error "
             "ratios over full int8's weighted by unsureness (mixed.error_ratio_gain_db, since), and the ratio of "
             "the images' logits errors summed with the same weights (softmax_estimates.pooled_logits_gain_db, "
             "tried here: a mean of ratios runs over the ratio of the means where a candidate's error on an image "
             "is not full int8's made proportionally smaller, which may be why the int8 ONNX searches below read "
             "every step they took as worse than full int8). Candidates are ranked by the mean of dB in all three. "
             "Cells: kept parts (operators, or float convolutions on the ONNX), evaluation gain over full int8, "
             "p50 at 224 over full int8's (timed on another CPU where a cell says so), the bar as a gain. The "
             "TFLite rows' earlier columns are the tables above; the pooled ones: `python "
             "benchmarks/mixed_precision.py bar_softmax_pooled`; the int8 ONNX's: `... bar_onnx bar_onnx_mean_of_db "
             "bar_onnx_pooled`; those searched and timed on "
             f"{machine_text(searched_on)}.", "",
             "| model | artifact | " + " | ".join(LEVELS) + " |", "|---|---|---|---|---|"]
    gains = {level: [] for level in LEVELS}
    met = {level: 0 for level in LEVELS}
    for artifact, by_level, verdict in (("TFLite, float32 output", tflite_levels, bar_verdict),
                                        ("int8 ONNX", onnx_levels, onnx_bar_verdict)):
        rows = [{row["model"]: row for row in same_network_rows(by_level[-1], results)} for results in by_level]
        for model in (model for model in rows[-1] if all(model in row for row in rows)):
            cells = []
            for level, row in zip(LEVELS, (by_model[model] for by_model in rows)):
                gains[level].append(row["evaluation_db"]["mixed"] - row["evaluation_db"]["full int8"])
                met[level] += verdict(row)["gain"]
                cells.append(level_cell(row, verdict, searched_on))
            lines.append(f"| {model} | {artifact} | " + " | ".join(cells) + " |")
    count = len(gains[LEVELS[0]])
    if count:
        lines += ["", f"Over the {count} searches: mean evaluation gain " + ", ".join(
            f"{level} {sum(gains[level]) / count:+.2f} dB" for level in LEVELS) + "; the bar met as a gain by " +
            ", ".join(f"{met[level]} ({level})" for level in LEVELS) + "."]
    return lines


def paired_gain_text(results, earlier_results, labels):
    """Over the models searched both ways: mean evaluation gain over full int8, and how many meet the bar as a
    gain (bar_verdict), each way."""
    before = {result["model"]: result for result in earlier_results}
    pairs = [(before[result["model"]], result) for result in results if result["model"] in before]
    if not pairs:
        return ""

    def gain(result):
        return result["evaluation_db"]["mixed"] - result["evaluation_db"]["full int8"]

    ways = [(label, [pair[side] for pair in pairs]) for side, label in enumerate(labels)]
    return (f"Over the {len(pairs)} models: mean evaluation gain "
            + ", ".join(f"{label} {sum(map(gain, rows)) / len(rows):+.2f} dB" for label, rows in ways)
            + "; the bar met as a gain by " + ", ".join(
                f"{sum(bar_verdict(row)['gain'] for row in rows)} ({label})" for label, rows in ways) + ".")


def searched_again_lines(heading, prose, results, earlier_results, labels, section_machine=None):
    """A section of searches made again another way: their bar table, then each beside its earlier search of
    the same model (`labels`: what the two columns call them; a cell timed on another CPU than
    `section_machine` says which)."""
    before = {result["model"]: result for result in earlier_results}
    lines = ["", f"### {heading}", "", prose, "", *bar_table(results), "",
             f"| model | {labels[0]}: kept, evaluation full int8 -> kept (gain), p50 ratio | {labels[1]}: kept, "
             "evaluation full int8 -> kept (gain), p50 ratio |", "|---|---|---|"]
    for result in results:
        earlier = before.get(result["model"])
        if earlier:
            lines.append(f"| {result['model']} | {kept_text(earlier, section_machine)} | "
                         f"{kept_text(result, section_machine)} |")
    return lines


def kept_text(result, section_machine=None):
    """A search's kept parts, evaluation SQNR and latency ratio, briefly, for a table cell (with the CPU it was
    timed on where that is not `section_machine`'s)."""
    evaluated = result["evaluation_db"]
    return (f"{kept_parts_text(result)}, {evaluated['full int8']:.2f} -> {evaluated['mixed']:.2f} "
            f"({evaluated['mixed'] - evaluated['full int8']:+.2f}), {result['latency_224']['mixed_over_int8']:.2f}x"
            f"{searched_elsewhere(result, section_machine)}")


def bar_table(bar_results):
    """The bar's table, a row per search (bar_verdict)."""
    lines = ["| model | output | budget dB (held-out) | held-out full int8 -> kept | evaluation full int8 -> kept "
             "(gain) | kept | p50 at 224: int8 -> kept (ratio) | bar as a level | bar as a gain | search s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['output_type']} | {bar_cells(r, kept_parts_text(r), bar_verdict(r))} |"
              for r in bar_results]
    return lines


def bar_cells(result, kept, verdict):
    """A bar table's cells from the budget on: levels, gain, `kept` (a cell's text), latency, `verdict`
    (bar_verdict or onnx_bar_verdict), search seconds."""
    evaluated, speed = result["evaluation_db"], result["latency_224"]
    delegated = speed.get("mixed_fully_delegated", True)  # onnxruntime has no delegate to leave
    return (f"{result['budget_db']:.2f} | {held_out_cell(result)} | {evaluated['full int8']:.2f} -> "
            f"{evaluated['mixed']:.2f} ({evaluated['mixed'] - evaluated['full int8']:+.2f}) | {kept} | "
            f"{speed['p50_ms']['full int8']:.2f} -> {speed['p50_ms']['mixed']:.2f} "
            f"({speed['mixed_over_int8']:.2f}x{'' if delegated else ', NOT all on XNNPACK'}) | "
            f"{'met' if verdict['level'] else 'no'} | {'met' if verdict['gain'] else 'no'} | "
            f"{result['search_seconds']:.0f}")


def kept_parts_text(result):
    """The parts a search kept out of int8, in what, and what of them went back to int8 or dynamic-range int8."""
    if not result["float_parts"]:
        return "full int8"
    return (f"{result['precision']}: {len(result['float_parts'])} parts ({result['float_operators']} operators): "
            f"{', '.join(result['float_parts'])}{put_back_note(result)}")


def missing_from(results):
    """The trained models that `results` has no row for."""
    done = {result["model"] for result in results}
    return [entry for entry in trained_models() if entry[0] not in done]


def evaluation_gain_text(result):
    """The gain over full int8 on the evaluation images, and whether it is within 1 dB of the 3 dB asked."""
    gain = result["evaluation_db"]["mixed"] - result["evaluation_db"]["full int8"]
    return f"{gain:+.2f} ({'yes' if gain >= BUDGET_OVER_FULL_INT8_DB - 1 else 'NO'})"


def gain_lines(tables):
    """Markdown: over every searched row whose search met its budget on the held-out images, how often the
    evaluation images saw the budget's level (within 1 dB) and how often they saw its gain (within 1 dB)."""
    met = [row for rows in tables for row in rows if row.get("met_on_held_out")]
    if not met:
        return []
    level = sum(row["evaluation_db"]["mixed"] >= row["budget_db"] - 1 for row in met)
    gained = sum(row["evaluation_db"]["mixed"] - row["evaluation_db"]["full int8"] >= BUDGET_OVER_FULL_INT8_DB - 1
                 for row in met)
    offsets = {}  # model -> full int8's evaluation SQNR minus its held-out one, per table (ranges may differ)
    for row in (row for rows in tables for row in rows):
        offsets.setdefault(row["model"], set()).add(
            round(row["evaluation_db"]["full int8"] - row["held_out_db"]["full int8"], 2))
    lower = [model for model, values in offsets.items() if max(values) < -0.5]
    return ["", "## The budget's level and its gain on the evaluation images", "",
            f"Over the {len(met)} rows of the tables above whose search met its budget on the held-out calibration "
            f"images (a softmax head's as estimated): the evaluation images reach the budget's level within 1 dB on "
            f"{level}, and gain within 1 dB of the {BUDGET_OVER_FULL_INT8_DB:g} dB asked over full int8 on {gained}. "
            f"Full int8 itself, evaluation SQNR minus held-out SQNR (one split of the digits, the same 200 and 397 "
            "images for every model; a value per table where `auto` took other ranges): "
            + "; ".join(f"{model} {', '.join(f'{value:+.2f}' for value in sorted(values))}"
                        for model, values in offsets.items())
            + f". Lower by more than 0.5 dB on {len(lower)} of {len(offsets)} models: a set's SQNR level moves with "
            "the few images that carry most of its error, so a level set on 200 images is met on 397 others only as "
            "far as their levels agree. Column \"evaluation gain\": the gain there (within 1 dB of the gain asked)."]


MNIST_TABLES = {"mnist_results": "int8", "mnist_float_output_results": "float32"}  # saved key: output type
FASHION_PINNED_IMAGES = 1600  # above the note's minimum for the ResNet-18's full int8 (1.1-1.2 dB on 200): 1200 images
LEVEL_SE_IMAGES = (200, 800)  # calibration images of the level_se searches (MNIST has 2500 never trained on)
KEPT_KEYS = ("level_se_results", "level_se_machine", "fashion_results", "fashion_machine", "corrected_steps_results",
             "corrected_steps_machine", "corrected_float_output_results", "corrected_float_output_machine",
             "bar_mnist_results", "bar_mnist_machine", "bar_retimed_results", "bar_fashion_results",
             "bar_fashion_machine", "bar_tail_room_results", "bar_tail_room_machine", "bar_float_logits_results",
             "bar_float_logits_machine", "bar_softmax_float32_results", "bar_softmax_float32_machine",
             "bar_softmax_ratio_results", "bar_softmax_ratio_machine", "bar_int8_softmax_ratio_results",
             "bar_int8_softmax_ratio_machine", "onnx_softmax_ratio_results", "onnx_softmax_ratio_machine",
             "bar_int8_softmax_ratio_mean_of_db_results", "onnx_softmax_ratio_mean_of_db_results",
             "bar_onnx_results", "bar_onnx_machine", "bar_onnx_mean_of_db_results", "bar_softmax_pooled_results",
             "bar_softmax_pooled_machine", "bar_onnx_pooled_results", "bar_onnx_pooled_machine",
             "bar_onnx_mean_of_db_machine", "bar_int8_softmax_ratio_mean_of_db_machine", "bar_onnx_nncf_machine",
             "bar_onnx_nncf_224_machine", "bar_onnx_tail_room_results", "bar_onnx_tail_room_machine",
             "bar_tail_room_int8_results", "bar_tail_room_int8_machine",
             "onnx_softmax_ratio_mean_of_db_machine")
BAR_TAIL_ROOM = 10  # --tail-room of the bar_tail_room searches
BAR_TABLES = {"corrected_steps_results": "int8", "corrected_float_output_results": "float32"}  # saved key: output


def level_se_lines(results, searched_on):
    """The level_se table: does the met level's standard error tell where it holds on the evaluation images?"""
    from edge_resnet.quantize.mixed import PINNED_LEVEL_SE_DB

    lines = ["", "## The held-out level's standard error, and more calibration images", "",
             "Command: `python benchmarks/mixed_precision.py level_se`. The MNIST ResNet-50s of the section above, "
             "int8 output, the default search (`--fallback-precision auto`), the same budget rule (full int8 + 3 dB "
             f"on the held-out calibration images), calibrated on {' and on '.join(map(str, LEVEL_SE_IMAGES))} of the "
             "2500 MNIST images they never trained on (split off as `convert` does; the rest evaluate: 2300 and 1700). Standard "
             "error: of the held-out SQNR over those images, as the search records it (for a softmax head's "
             f"estimate, full int8's); pinned: under {PINNED_LEVEL_SE_DB:g} dB, where `quantize` and `convert` print "
             f"no note. Then `... level_se_digits`: the digits models of the first tables with a float32 output, "
             "searched again with the code of now (their full int8 and levels as in the sections since the softmax "
             "floor, not the first tables'), 200 calibration and 397 evaluation images as there. "
             f"Searched on {machine_text(searched_on)}; no latency is claimed here.", ""]
    return lines + level_table(sorted(results, key=lambda result: ("MNIST" not in result["model"], result["model"],
                                                                   result["calibration_images"])))


def fashion_lines(results, searched_on):
    """The fashion table: the same search on models unsure of many images, judged on 10,000 images."""
    from edge_resnet.quantize.mixed import PINNED_LEVEL_SE_DB

    lines = ["", "## Models unsure of many images: Fashion-MNIST", "",
             "Command: `apt-get install dataset-fashion-mnist`, then `python benchmarks/mixed_precision.py fashion`. "
             "The two ResNets of benchmarks/trained.py fashion_models (4000 Fashion-MNIST training images trained "
             "on, trained after every rule of the search was fixed; right on about nine images in ten, as users' "
             "models are unsure of many images), both heads, int8 and float32 output, the default search "
             "(`--fallback-precision auto`), the same budget rule (full int8 + 3 dB on the held-out calibration "
             "images); 200 calibration images split off the 4000 training images no model trained on as `convert` "
             "does, the 10,000 test images evaluate. Then `... fashion_pinned`: int8 output, calibrated on "
             f"{FASHION_PINNED_IMAGES} images of the same pool (at least what the note asked for the ResNet-18's full "
             "int8 on 200), to see whether a level the images pin holds. Standard error and pinned (under "
             f"{PINNED_LEVEL_SE_DB:g} dB) as in the section above. Searched on {machine_text(searched_on)}; no "
             "latency is claimed here.", ""]
    return lines + level_table(sorted(results, key=lambda result: (result["model"], result["calibration_images"],
                                                                   result["output_type"])))


def level_table(results):
    """The rows of a level table, then how often a met level held on the evaluation images, pinned or not."""
    from edge_resnet.quantize.mixed import PINNED_LEVEL_SE_DB

    lines = ["| model | output | calibration images | budget dB | held-out full int8 -> kept (standard error) | pinned | "
             "evaluation full int8 -> kept | met on evaluation within 1 dB | evaluation gain | parts out of int8 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        level_se = result.get("level_standard_error_db")
        pinned = "-" if level_se is None or not result["met_on_held_out"] else \
            ("yes" if level_se < PINNED_LEVEL_SE_DB else "NO")
        evaluation, budget = result["evaluation_db"], result["budget_db"]
        held = f"{result['held_out_db']['full int8']:.2f} -> {held_mixed(result)}"
        se_text = "-" if level_se is None else f"{level_se:.2f}"
        met = "yes" if evaluation["mixed"] >= budget - 1 else "NO"
        kept = f"{result['precision']}: {len(result['float_parts'])} parts" if result["float_parts"] else "none"
        lines.append(f"| {result['model']} | {result.get('output_type', 'int8')} | {result['calibration_images']} | "
                     f"{budget:.2f} | {held} ({se_text}) | "
                     f"{pinned} | {evaluation['full int8']:.2f} -> {evaluation['mixed']:.2f} | {met} | "
                     f"{evaluation_gain_text(result)} | {kept} |")
    met = [result for result in results
           if result["met_on_held_out"] and result.get("level_standard_error_db") is not None]
    held = {}
    for result in met:
        pinned = result["level_standard_error_db"] < PINNED_LEVEL_SE_DB
        held.setdefault(pinned, []).append(result["evaluation_db"]["mixed"] >= result["budget_db"] - 1)
    lines += ["", "Of the searches that met their budget on the held-out images: "
              + "; ".join(f"{'pinned' if pinned else 'with the note'}, the evaluation images reached the level "
                          f"within 1 dB on {sum(outcomes)} of {len(outcomes)}"
                          for pinned, outcomes in sorted(held.items(), reverse=True)) + "."]
    return lines


def mnist_lines(mnist_results):
    lines = ["", "## Another data set: ResNet-50s trained on MNIST", "",
             "Command: `python benchmarks/mixed_precision.py mnist`. The two ResNet-50s of benchmarks/trained.py "
             "mnist_models (2500 images of the MNIST sample of benchmarks/mnist.py trained on; no rule of the search "
             "was chosen on it), the default search (`--fallback-precision auto`) with the same budget rule; "
             "calibration: 200 of the 2500 MNIST images they never trained on, split off as `convert` does; "
             "evaluation: the other 2300. Searched, and latency at 224 timed, on " + "; ".join(sorted(
                 {machine_text(result["latency_224"]["machine"]) for rows in mnist_results.values() for result in rows}))
             + "."]
    for key, output_type in MNIST_TABLES.items():
        if mnist_results[key]:
            lines += ["", f"{output_type} output (`--output-type {output_type}`):", "",
                      *tflite_lines(mnist_results[key])]
    return lines


def tflite_lines(results):
    lines = ["| model | budget dB (held-out) | held-out full int8 -> mixed | evaluation full int8 -> mixed | "
             "met on evaluation within 1 dB | evaluation gain | float parts (operators) | "
             "p50 at 224: int8 -> mixed (ratio) | float32 p50 | search s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        held, evaluated, speed = r["held_out_db"], r["evaluation_db"], r["latency_224"]
        lines.append(
            f"| {r['model']} | {r['budget_db']:.2f} | {held['full int8']:.2f} -> {held_mixed(r)} | "
            f"{evaluated['full int8']:.2f} -> {evaluated['mixed']:.2f} | "
            f"{'yes' if evaluated['mixed'] >= r['budget_db'] - 1 else 'NO'} | {evaluation_gain_text(r)} | "
            f"{len(r['float_parts'])}{' dynamic-range' * (r.get('precision') == 'dynamic')} ({r['float_operators']}): "
            f"{', '.join(r['float_parts'])}{put_back_note(r)} | {speed['p50_ms']['full int8']:.2f} -> {speed['p50_ms']['mixed']:.2f} ({speed['mixed_over_int8']:.2f}x)"
            f"{'' if speed['mixed_fully_delegated'] else ', NOT all on XNNPACK'} | {speed['p50_ms']['float32']:.2f} | "
            f"{r['search_seconds']:.0f} |")
    return lines


if __name__ == "__main__":
    main(sys.argv[1:] or ["tflite", "onnx", "onnx_latency"])
