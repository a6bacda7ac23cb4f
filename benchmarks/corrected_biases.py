"""Does correcting the int8 biases (edge_resnet/quantize/bias_correction.py)
help on models and data it was not written on, under issue 23's protocol?

    python benchmarks/corrected_biases.py [mnist] [fashion] [fashion_fresh] [digits] [validation] [cost] [onnx_cost]
    python benchmarks/corrected_biases.py guard SET SUBSTRING...
    python benchmarks/corrected_biases.py in_sample SET SUBSTRING...
    python benchmarks/corrected_biases.py onnx SET SUBSTRING...
    python benchmarks/corrected_biases.py onnx_logits SET SUBSTRING...
    python benchmarks/corrected_biases.py ratio_guard SET SUBSTRING...

Per model and head, four calibration subsets of 200 images (calibration.py's
protocol_splits: the very same images for every route): the raw TFLite
converter (min/max), every fixed range rule of calibration.py, `auto`'s
choice, and each rule and `auto` with the biases corrected on the same
200 images; scored on the evaluation images (never calibrated on) as
calibration.py scores. The correction was written on the eight digits
models of benchmarks/activation_bias.py; MNIST and Fashion-MNIST were not
looked at then.

`cost`: at ResNet-50 224 on 200 images (seeded weights and images), one
fixed method, `auto`, and `auto` with the correction, each the statistics
pass plus the int8 TFLite, alternating in one run.

`guard SET SUBSTRING...`: for the rows of SET (mnist, digits, ...) whose
names hold a SUBSTRING, whether a held-out guard would have seen the
correction's loss coming (guard_row). `in_sample`: the guard that ships,
replayed per subset (in_sample_row). `onnx`: the int8 ONNX of onnxruntime's
route, corrected always and guarded, beside raw onnxruntime (onnx_row);
`onnx_logits`: a softmax head's ONNX correction read three ways on the
evaluation images (onnx_logits_row). `ratio_guard`: the `in_sample` replay
whose rows also read a softmax head's guard from its logits' error ratios
(ratio_guard_lines).

Writes benchmarks/results/corrected_biases.{json,md}; each part measures
its models again and keeps the others' rows.
"""

import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

RAW = "raw TFLite converter (min/max)"
AUTO = "auto"
CORRECTED = ", biases corrected"
AUTO_CORRECTED = AUTO + CORRECTED


def model_sets():
    import calibration

    return {"mnist": ("mnist", calibration.mnist_models), "fashion": ("fashion", calibration.fashion_models),
            "fashion_fresh": ("fashion", calibration.fashion_fresh_models),
            "digits": ("unseen", calibration.models_to_measure),
            "validation": ("unseen", calibration.validation_models)}


def measure(model_name, model, head, size, protocol):
    from calibration import FIXED_RULES, float_predictions, protocol_splits, raw_converter_int8, scores, summarize

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import quantized_int8_io, run_tflite_bytes, tflite_chooser
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.selection import resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    print(f"== {model_name}", flush=True)
    float_model = float_tflite(fold_batchnorm(model)[0])
    scratch = Path(tempfile.mkdtemp(prefix="corrected-biases-"))
    rows, chosen, float_cache = {}, [], {}
    for pixels, pixel_labels, test_pixels, labels in protocol_splits(size, protocol):
        _, test_images, reference = float_predictions(model, test_pixels, float_cache)
        calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=pixel_labels).cached()
        images = np.stack(list(calibration.samples()))

        def record(route, outputs):
            rows.setdefault(route, []).append(scores(reference, labels, outputs, head))

        (scratch / "raw.tflite").write_bytes(raw_converter_int8(model, list(images)))
        record(RAW, TfliteRunner(scratch / "raw.tflite").predict(test_images))
        statistics = collect_statistics(float_model, calibration)
        means = statistics.channel_means_by_name()
        for method, parameters in FIXED_RULES:
            rule = RangeMethod(method, **parameters)
            int8 = quantized_int8_io(float_model, activation_ranges(statistics, rule))
            record(rule.describe(), run_tflite_bytes(int8, test_images, "int8"))
            record(rule.describe() + CORRECTED, run_tflite_bytes(corrected(int8, float_model, images, means),
                                                                 test_images, "int8"))
        rule, ranges, _ = resolved_ranges(statistics, RangeMethod("auto"), tflite_chooser(float_model, True,
                                                                                          calibration))
        chosen.append(rule.describe())
        int8 = quantized_int8_io(float_model, ranges)
        record(AUTO, run_tflite_bytes(int8, test_images, "int8"))
        record(AUTO_CORRECTED, run_tflite_bytes(corrected(int8, float_model, images, means), test_images, "int8"))
        print(f"   auto {rows[AUTO][-1]['sqnr_db']:.2f}, corrected {rows[AUTO_CORRECTED][-1]['sqnr_db']:.2f}, "
              f"raw {rows[RAW][-1]['sqnr_db']:.2f}", flush=True)
    return {"model": model_name, "head": head, "protocol": protocol, "auto_chose": chosen,
            "routes": {route: summarize(values) for route, values in rows.items()}}


def guard_row(model_name, model, head, size, protocol):
    """Would a held-out guard have seen the correction's loss coming? Per subset: each of `auto`'s four folds of
    the 200 calibration images held out in turn, the biases corrected on the other three folds' images (`auto`'s
    ranges from all 200 kept) and the held-out images scored; the gain pooled over all 200 images (each scored by a
    correction that never saw it) beside the correction's gain on the evaluation images. Each gain also as the mean
    over images of each image's SQNR of the logits (a softmax head's input, read from the same run; a logits head's
    output), the measure the budget search judges a softmax head by (mixed.per_image_mean_db)."""
    from calibration import sqnr_db

    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.bias_correction import correction_parts, float_channel_means
    from edge_resnet.quantize.mixed import per_image_mean_db
    from edge_resnet.quantize.tflite import float_tflite

    print(f"== guard: {model_name}", flush=True)
    float_model = float_tflite(fold_batchnorm(model)[0])
    names = [name for measured, _ in correction_parts(float_model) for name in measured]
    subsets = []
    for test_images, reference, images, statistics, _, int8 in auto_subsets(model, float_model, size, protocol):
        float_outputs, float_logits = outputs_and_logits(float_model, images, head)
        plain, plain_logits = outputs_and_logits(int8, images, head)
        cross_fitted, cross_logits = np.empty_like(plain), np.empty_like(plain_logits)
        for fold in statistics.folds:
            held = list(fold.positions)
            fit = [position for position in range(len(images)) if position not in set(held)]
            fold_model = corrected(int8, float_model, images[fit], float_channel_means(float_model, images[fit], names))
            cross_fitted[held], cross_logits[held] = outputs_and_logits(fold_model, images[held], head)
        whole = corrected(int8, float_model, images, statistics.channel_means_by_name())
        _, test_logits = outputs_and_logits(float_model, test_images, head)
        evaluated, evaluated_logits = outputs_and_logits(int8, test_images, head)
        fixed, fixed_logits = outputs_and_logits(whole, test_images, head)
        subset = {"held_out_gain_db": sqnr_db(float_outputs, cross_fitted) - sqnr_db(float_outputs, plain),
                  "held_out_logits_gain_db": sqnr_db(float_logits, cross_logits) - sqnr_db(float_logits, plain_logits),
                  "held_out_image_mean_gain_db": (per_image_mean_db(float_logits, cross_logits)
                                                  - per_image_mean_db(float_logits, plain_logits)),
                  "evaluation_gain_db": sqnr_db(reference, fixed) - sqnr_db(reference, evaluated),
                  "evaluation_logits_gain_db": sqnr_db(test_logits, fixed_logits) - sqnr_db(test_logits, evaluated_logits),
                  "evaluation_image_mean_gain_db": (per_image_mean_db(test_logits, fixed_logits)
                                                    - per_image_mean_db(test_logits, evaluated_logits))}
        subsets.append(subset)
        print("   " + ", ".join(f"{key.removesuffix('_db')} {value:+.2f}" for key, value in subset.items()), flush=True)
    return {"model": model_name, "head": head, "subsets": subsets}


def in_sample_row(model_name, model, head, size, protocol):
    """What a cheap guard would see: per subset, the correction (fitted on all 200 calibration images, as shipped)
    scored on those same images against `auto`'s int8 model as quantized, beside its gain on the evaluation
    images; each as the output's pooled SQNR and as the mean over images of each image's logits SQNR (a softmax
    head's logits raised to its int8 input's floor, as the budget search reads them: mixed.softmax_relevant)."""
    from calibration import sqnr_db

    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.mixed import error_ratio_gain_db, per_image_mean_db, softmax_relevant
    from edge_resnet.quantize.statistics import softmax_input_of
    from edge_resnet.quantize.tflite import float_tflite

    print(f"== in sample: {model_name}", flush=True)
    float_model = float_tflite(fold_batchnorm(model)[0])
    softmax_input = softmax_input_of(float_model)
    subsets = []
    for test_images, reference, images, statistics, (rule, ranges), int8 in auto_subsets(model, float_model, size,
                                                                                          protocol):
        whole = corrected(int8, float_model, images, statistics.channel_means_by_name())
        subset = {"rule": rule.describe()}
        for where, inputs, float_outputs in (("in_sample", images, None), ("evaluation", test_images, reference)):
            expected, expected_logits = outputs_and_logits(float_model, inputs, head)
            expected = expected if float_outputs is None else float_outputs
            plain, plain_logits = outputs_and_logits(int8, inputs, head)
            fixed, fixed_logits = outputs_and_logits(whole, inputs, head)
            pairs = [softmax_relevant((expected_logits, logits), ranges, softmax_input)
                     for logits in (plain_logits, fixed_logits)]
            subset[f"{where}_gain_db"] = sqnr_db(expected, fixed) - sqnr_db(expected, plain)
            subset[f"{where}_image_mean_gain_db"] = per_image_mean_db(*pairs[1]) - per_image_mean_db(*pairs[0])
            if head == "softmax":  # the logits' error ratios weighted by unsureness (the budget search's level)
                subset[f"{where}_ratio_gain_db"] = error_ratio_gain_db(expected, pairs[1][0], pairs[1][1], pairs[0][1])
        subsets.append(subset)
        print("   " + ", ".join(f"{key.removesuffix('_db')} {value:+.2f}" for key, value in subset.items()
                                if key != "rule"), flush=True)
    return {"model": model_name, "head": head, "subsets": subsets}


ONNX_RAW = "raw onnxruntime quantize_static (U8S8, 7-bit weights, MinMax)"
ONNX_AUTO = "ONNX auto, biases as quantized"
ONNX_ALWAYS = "ONNX auto, biases corrected"
ONNX_GUARDED = "ONNX auto, guarded correction (the default)"


def onnx_subsets(model, size, protocol):
    """Per calibration subset of `protocol`: (the scratch folder, the float ONNX as onnxruntime prepared it, the
    evaluation images, the float Keras model's outputs on them, their labels, the calibration images, `auto`'s int8
    ONNX with its biases as quantized: a path). The float ONNX is at scratch / "float.onnx"."""
    import onnx
    from calibration import float_predictions, protocol_splits

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.onnx_export import float_onnx, ort_prepared, to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    folded = fold_batchnorm(model)[0]
    float_model = float_tflite(folded)
    scratch = Path(tempfile.mkdtemp(prefix="corrected-onnx-"))
    onnx.save(float_onnx(folded), scratch / "float.onnx")
    prepared = ort_prepared(scratch / "float.onnx", scratch / "prepared.onnx")
    float_cache = {}
    for pixels, pixel_labels, test_pixels, labels in protocol_splits(size, protocol):
        _, test_images, reference = float_predictions(model, test_pixels, float_cache)
        calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=pixel_labels).cached()
        plain = to_onnx(folded, QuantizationRecipe(bias_correction="off"), calibration, output=scratch / "ours.onnx",
                        statistics=collect_statistics(float_model, calibration), float_model=float_model,
                        float_onnx_path=scratch / "float.onnx")
        yield scratch, prepared, test_images, reference, labels, calibration, plain


def onnx_row(model_name, model, head, size, protocol):
    """The int8 ONNX of onnxruntime's route (the default ONNX) per calibration subset: raw onnxruntime on the same
    200 images (the weight range of ours), ours with `auto`'s ranges as quantized, with its biases corrected always,
    and with the guard of the default (onnx_bias_correction.corrected_onnx_artifact, recipe "auto")."""
    import onnx
    from calibration import raw_ort_int8, scores, summarize

    from edge_resnet.device.runtime import OnnxRunner
    from edge_resnet.quantize.onnx_bias_correction import corrected_onnx_artifact
    from edge_resnet.quantize.recipe import QuantizationRecipe

    print(f"== onnx: {model_name}", flush=True)
    rows, guard = {}, []
    for scratch, prepared, test_images, reference, labels, calibration, plain in onnx_subsets(model, size, protocol):
        def record(route, path):
            rows.setdefault(route, []).append(scores(reference, labels, OnnxRunner(path).predict(test_images), head))

        record(ONNX_RAW, raw_ort_int8(scratch / "float.onnx", list(calibration.samples()), scratch / "raw.onnx",
                                      "uint8", True))
        record(ONNX_AUTO, plain)
        for route, mode in ((ONNX_ALWAYS, "on"), (ONNX_GUARDED, "auto")):
            proto, kept = corrected_onnx_artifact(onnx.load(plain), prepared.proto,
                                                  QuantizationRecipe(bias_correction=mode), calibration)
            onnx.save(proto, scratch / "corrected.onnx")
            record(route, scratch / "corrected.onnx")
            if mode == "auto":
                guard.append(kept)
        print("   " + ", ".join(f"{route} {values[-1]['sqnr_db']:.2f}" for route, values in rows.items()), flush=True)
    return {"model": model_name, "head": head, "protocol": protocol, "guard": guard,
            "routes": {route: summarize(values) for route, values in rows.items()}}


def onnx_logits_row(model_name, model, head, size, protocol):
    """A diagnostic for a softmax head's ONNX row: per subset, the correction (always on) against `auto` as
    quantized on the evaluation images, read three ways: the probabilities' pooled SQNR (the table's), the logits'
    mean per-image SQNR (what the guard reads on the calibration images) and the logits' pooled SQNR."""
    import onnx
    from calibration import sqnr_db

    from edge_resnet.quantize.mixed import per_image_mean_db
    from edge_resnet.quantize.onnx_bias_correction import corrected_onnx_artifact
    from edge_resnet.quantize.recipe import QuantizationRecipe

    print(f"== onnx logits: {model_name}", flush=True)
    subsets = []
    for scratch, prepared, test_images, _, _, calibration, plain in onnx_subsets(model, size, protocol):
        def outputs_and_logits(path):
            return onnx_outputs_and_logits(path, test_images, head, scratch)

        proto, _ = corrected_onnx_artifact(onnx.load(plain), prepared.proto, QuantizationRecipe(bias_correction="on"),
                                           calibration)
        onnx.save(proto, scratch / "corrected.onnx")
        (expected, expected_logits), (before, before_logits), (after, after_logits) = (
            outputs_and_logits(path) for path in (prepared.path, plain, scratch / "corrected.onnx"))
        subsets.append({"probabilities_gain_db": sqnr_db(expected, after) - sqnr_db(expected, before),
                        "logits_image_mean_gain_db": (per_image_mean_db(expected_logits, after_logits)
                                                      - per_image_mean_db(expected_logits, before_logits)),
                        "logits_pooled_gain_db": sqnr_db(expected_logits, after_logits) - sqnr_db(expected_logits,
                                                                                                   before_logits)})
        print("   " + ", ".join(f"{key} {value:+.2f}" for key, value in subsets[-1].items()), flush=True)
    return {"model": model_name, "head": head, "subsets": subsets}


def onnx_lines(result):
    lines = ["", "## The int8 ONNX (onnxruntime's route) with its biases corrected (`onnx`)", "",
             "Commands: " + ", ".join(f"`{command}`" for command in result.get("onnx_commands", [])), "",
             "Output SQNR (dB) on the evaluation images, mean of the same 4 subsets of 200 calibration images as "
             "above, every route calibrated on the very same images; raw onnxruntime with the weight range of ours "
             "(U8S8, 7-bit weights). The correction and its guard are the TFLite's, written for it and chosen on "
             "the TFLite rows: none of it was tuned on these ONNX rows.", "",
             "| model | raw onnxruntime | ONNX auto, as quantized | corrected always | guarded (default) | "
             "guarded - as quantized | guarded - raw | kept on subsets | top-1 drop raw / as quantized / guarded "
             "(points) |", "|---|---|---|---|---|---|---|---|---|"]
    groups = {"digits and validation": [], "MNIST and Fashion-MNIST": []}
    for row in result["onnx_rows"]:
        mean = {route: values["sqnr_db_mean"] for route, values in row["routes"].items()}
        kept = sum(entry["corrected"] for entry in row["guard"])
        unseen = "MNIST" in row["model"] or "Fashion" in row["model"]
        groups["MNIST and Fashion-MNIST" if unseen else "digits and validation"].append(
            (mean[ONNX_ALWAYS] - mean[ONNX_AUTO], mean[ONNX_GUARDED] - mean[ONNX_AUTO],
             mean[ONNX_AUTO] - mean[ONNX_RAW], mean[ONNX_GUARDED] - mean[ONNX_RAW]))
        lines.append(f"| {row['model']} | {mean[ONNX_RAW]:.2f} | {mean[ONNX_AUTO]:.2f} | {mean[ONNX_ALWAYS]:.2f} | "
                     f"{mean[ONNX_GUARDED]:.2f} | {mean[ONNX_GUARDED] - mean[ONNX_AUTO]:+.2f} | "
                     f"{mean[ONNX_GUARDED] - mean[ONNX_RAW]:+.2f} | {kept} of {len(row['guard'])} | "
                     + " / ".join(f"{row['routes'][route]['top1_drop_points_mean']:+.2f}"
                                  for route in (ONNX_RAW, ONNX_AUTO, ONNX_GUARDED)) + " |")
    for row in result.get("onnx_logits_rows", []):
        lines += ["", f"Diagnostic (`{'`, `'.join(result['onnx_logits_commands'])}`): {row['model']}, the correction "
                      "always on against as quantized, per subset on the evaluation images: probabilities pooled "
                  + ", ".join(f"{subset['probabilities_gain_db']:+.2f}" for subset in row["subsets"])
                  + "; logits' mean per-image SQNR (what the guard reads on the calibration images) "
                  + ", ".join(f"{subset['logits_image_mean_gain_db']:+.2f}" for subset in row["subsets"])
                  + "; logits pooled " + ", ".join(f"{subset['logits_pooled_gain_db']:+.2f}"
                                                    for subset in row["subsets"]) + " dB."]
    lines.append("")
    for name, rows in groups.items():
        if rows:
            always, guarded, plain_over_raw, over_raw = (np.array(values) for values in zip(*rows))
            lines.append(f"- {name} ({len(rows)} rows): gain always {always.mean():+.2f} dB (lowest "
                         f"{always.min():+.2f}), guarded {guarded.mean():+.2f} (lowest {guarded.min():+.2f}); over raw "
                         f"onnxruntime as quantized {plain_over_raw.mean():+.2f} (lowest {plain_over_raw.min():+.2f}, "
                         f"{int(np.sum(plain_over_raw < 0.5))} rows under +0.5), guarded {over_raw.mean():+.2f} "
                         f"(lowest {over_raw.min():+.2f}, {int(np.sum(over_raw < 0.5))} rows under +0.5).")
    return lines


def auto_subsets(model, float_model, size, protocol):
    """Per calibration subset: (evaluation images, the float Keras model's outputs on them, the calibration images,
    their statistics, (`auto`'s rule, its ranges), `auto`'s int8 model (int8 I/O))."""
    from calibration import float_predictions, protocol_splits

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.quantize.int8_tflite import quantized_int8_io, tflite_chooser
    from edge_resnet.quantize.ranges import RangeMethod
    from edge_resnet.quantize.selection import resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics

    float_cache = {}
    for pixels, pixel_labels, test_pixels, _ in protocol_splits(size, protocol):
        _, test_images, reference = float_predictions(model, test_pixels, float_cache)
        calibration = images_from_array(pixels, Preprocessing(size, size), size=None, labels=pixel_labels).cached()
        statistics = collect_statistics(float_model, calibration)
        rule, ranges, _ = resolved_ranges(statistics, RangeMethod("auto"), tflite_chooser(float_model, True,
                                                                                          calibration))
        yield (test_images, reference, np.stack(list(calibration.samples())), statistics, (rule, ranges),
               quantized_int8_io(float_model, ranges))


def outputs_and_logits(model_bytes, images, head):
    """(outputs, logits) of a TFLite model (int8 or float) on `images`: a softmax head's logits are its softmax's
    input, read from the same run; a logits head's are its outputs."""
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes, tflite_outputs_and_logits

    if head == "softmax":
        return tflite_outputs_and_logits(model_bytes, images)
    outputs = run_tflite_bytes(model_bytes, images, "int8")
    return outputs, outputs


def onnx_outputs_and_logits(path, images, head, scratch):
    """(outputs, logits) of an ONNX model on `images`: a softmax head's logits are its softmax's input, read from
    the same run (a copy exposing it is written to `scratch`); a logits head's are its outputs."""
    from edge_resnet.device.runtime import OnnxRunner
    from edge_resnet.quantize.onnx_export import with_softmax_input_output

    if head != "softmax":
        outputs = OnnxRunner(path).predict(images)
        return outputs, outputs
    (scratch / "exposed.onnx").write_bytes(with_softmax_input_output(Path(path).read_bytes()))
    return OnnxRunner(scratch / "exposed.onnx").predict_every_output(images)


def guarded_gain(gains, judged):
    """The mean evaluation gain of a correction kept only on the subsets where its `judged` gain is above 0."""
    return float(np.mean([gain if kept > 0 else 0.0 for gain, kept in zip(gains, judged)]))


def guard_lines(result):
    rows = result["guard_rows"]
    lines = ["", "## Would a held-out guard see it coming? (`guard`: first six rows picked after the results above, "
                 "three that lost and three that gained, then the rest of the digits, validation and MNIST rows; a "
                 "diagnostic: the guard that ships is the next section's)", "",
             "Commands: " + ", ".join(f"`{command}`" for command in result.get("guard_commands", [])), "",
             "| model | held-out gain per subset (dB) | evaluation gain per subset (dB) | evaluation gain, mean: always "
             "/ guarded (kept where the held-out gain > 0) |", "|---|---|---|---|"]
    for row in rows:
        held = [subset["held_out_gain_db"] for subset in row["subsets"]]
        gains = [subset["evaluation_gain_db"] for subset in row["subsets"]]
        guarded = guarded_gain(gains, held)
        lines.append(f"| {row['model']} | " + ", ".join(f"{value:+.2f}" for value in held) + " | "
                     + ", ".join(f"{value:+.2f}" for value in gains)
                     + f" | {np.mean(gains):+.2f} / {guarded:+.2f} |")
    return lines


def in_sample_lines(result):
    """The shipped guard (the default, recipe `bias_correction: "auto"`: kept where the logits' mean per-image SQNR
    on the calibration images rises) replayed per subset on the in_sample rows, beside `auto` and the raw converter
    of the main table."""
    means = {row["model"]: {route: values["sqnr_db_mean"] for route, values in row["routes"].items()}
             for row in result["rows"]}
    lines = ["", "## The guard that ships: kept where the calibration images' logits gain (`in_sample`)", "",
             "Commands: " + ", ".join(f"`{command}`" for command in result.get("in_sample_commands", [])), "",
             "Per subset, the correction (fitted on the 200 calibration images) scored on those same images by the "
             "mean over images of each image's logits SQNR (a softmax head's input, floored at its int8 range's "
             "low), against `auto`'s model as quantized: what the default (recipe `bias_correction: \"auto\"`) "
             "judges. The guard was chosen on the digits and validation rows (four rules compared there: the "
             "output's pooled SQNR, the logits' mean per-image SQNR, both, either; four of the MNIST rows were in view when it was "
             "chosen); the MNIST and Fashion-MNIST rows validate it.", "",
             "| model | logits gain on the calibration images, per subset (dB) | evaluation gain per subset (dB) | "
             "evaluation gain, mean: always / guarded | auto guarded - raw converter |", "|---|---|---|---|---|"]
    groups = {"digits and validation": [], "MNIST and Fashion-MNIST": []}
    for row in result["in_sample_rows"]:
        judged = [subset["in_sample_image_mean_gain_db"] for subset in row["subsets"]]
        gains = [subset["evaluation_gain_db"] for subset in row["subsets"]]
        guarded = guarded_gain(gains, judged)
        over_raw = means[row["model"]][AUTO] + guarded - means[row["model"]][RAW] if row["model"] in means else None
        unseen = "MNIST" in row["model"] or "Fashion" in row["model"]
        groups["MNIST and Fashion-MNIST" if unseen else "digits and validation"].append(
            (float(np.mean(gains)), guarded, over_raw))
        lines.append(f"| {row['model']} | " + ", ".join(f"{value:+.2f}" for value in judged) + " | "
                     + ", ".join(f"{value:+.2f}" for value in gains) + f" | {np.mean(gains):+.2f} / {guarded:+.2f} | "
                     + (f"{over_raw:+.2f}" if over_raw is not None else "") + " |")
    lines.append("")
    for name, rows in groups.items():
        if rows:
            always, guarded, over_raw = (np.array(values, dtype=float) for values in zip(*rows))
            lines.append(f"- {name} ({len(rows)} rows): gain always {always.mean():+.2f} dB (lowest "
                         f"{always.min():+.2f}, {int(np.sum(always < 0))} rows lower), guarded {guarded.mean():+.2f} "
                         f"(lowest {guarded.min():+.2f}, {int(np.sum(guarded < 0))} rows lower); auto guarded over "
                         f"the raw converter {np.nanmean(over_raw):+.2f} on average, lowest {np.nanmin(over_raw):+.2f}.")
    return lines


def ratio_guard_lines(result):
    """The shipped guard and one that reads a softmax head's logits' error ratios (mixed.error_ratio_gain_db) on
    the calibration images instead of their mean per-image SQNR, replayed per subset on the ratio_guard rows."""
    lines = ["", "## A softmax head's guard read from the logits' error ratios (`ratio_guard`)", "",
             "Commands: " + ", ".join(f"`{command}`" for command in result.get("ratio_guard_commands", []))
             + f"; run on {result['ratio_guard_machine']['cpu']}, {result['ratio_guard_machine']['cores']} cores.", "",
             "The `in_sample` replay on the softmax heads again, the correction (fitted on the 200 calibration "
             "images) judged on those images two ways: as shipped, the logits' mean per-image SQNR; and the "
             "logits' error ratios over the model as quantized, each image weighted by how unsure the float model "
             "is of it (mixed.error_ratio_gain_db, what the budget search judges a softmax head's level by since "
             "session 56: on the searches' steps it tracked the probabilities' gain where the mean of dB ran "
             "over it). Both read the logits raised to the int8 softmax input's floor. Evaluation gain: the "
             "probabilities' pooled SQNR on the evaluation images, corrected - as quantized.", "",
             "| model | mean per-image SQNR gain on the calibration images, per subset (dB) | error-ratio gain on "
             "them (dB) | evaluation gain per subset (dB) | evaluation gain, mean: always / kept by the mean of "
             "dB / kept by the error ratios |", "|---|---|---|---|---|"]
    totals = []
    for row in result["ratio_guard_rows"]:
        subsets = row["subsets"]
        gains = np.array([subset["evaluation_gain_db"] for subset in subsets])
        by_mean = np.array([subset["in_sample_image_mean_gain_db"] for subset in subsets])
        by_ratio = np.array([subset["in_sample_ratio_gain_db"] for subset in subsets])
        kept = [gains.mean(), guarded_gain(gains, by_mean), guarded_gain(gains, by_ratio)]
        totals.append(kept)
        lines.append(f"| {row['model']} | " + " | ".join(", ".join(f"{value:+.2f}" for value in values)
                                                        for values in (by_mean, by_ratio, gains))
                     + " | " + " / ".join(f"{value:+.2f}" for value in kept) + " |")
    totals = np.array(totals)
    lines += ["", f"Over {len(totals)} rows: always {totals[:, 0].mean():+.2f} dB (lowest {totals[:, 0].min():+.2f}), "
                  f"kept by the mean of dB {totals[:, 1].mean():+.2f} (lowest {totals[:, 1].min():+.2f}), kept by the "
                  f"error ratios {totals[:, 2].mean():+.2f} (lowest {totals[:, 2].min():+.2f})."]
    return lines


def corrected(int8_model, float_model, images, means):
    """The int8 model (int8 I/O) with its biases corrected on `images` (an array)."""
    from edge_resnet.quantize.bias_correction import with_corrected_biases

    return with_corrected_biases(int8_model, float_model, iter(images), len(images), means)[0]


def cost():
    """Seconds of one fixed method and of auto (biases as quantized), of auto with its biases corrected, and of auto
    with the guarded correction (the default), each the statistics pass and write_int8_tflite, at ResNet-50 224 on
    200 images."""
    import resource

    from calibration import resnet50_224, seeded_images

    from edge_resnet.quantize.int8_tflite import write_int8_tflite
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(resnet50_224())
    calibration = seeded_images(200)
    scratch = Path(tempfile.mkdtemp(prefix="corrected-biases-cost-"))

    def route(method, correct):  # what `quantize` runs once the float model is made: no file of the float model read
        recipe = QuantizationRecipe(calibration_method=method, bias_correction=correct)
        write_int8_tflite(float_model, recipe, scratch / "int8.tflite", calibration,
                          collect_statistics(float_model, calibration), progress=False)

    routes = {"extrapolated": ("extrapolated", "off"), AUTO: ("auto", "off"), AUTO_CORRECTED: ("auto", "on"),
              AUTO + ", biases corrected where the calibration images' logits gain (the default)": ("auto", "auto")}
    seconds = {name: [] for name in routes}
    for _ in range(2):
        for name, (method, correct) in routes.items():
            started = time.perf_counter()
            route(method, correct)
            seconds[name].append(time.perf_counter() - started)
            print(name, round(seconds[name][-1], 1), flush=True)
    medians = {name: float(np.median(values)) for name, values in seconds.items()}
    return {"images": 200, "repeats": 2, "seconds": medians,
            "ratios_to_one_method": {name: medians[name] / medians["extrapolated"] for name in medians},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "machine": machine()}


def onnx_cost():
    """Seconds of onnxruntime's int8 ONNX (to_onnx, route ort, from statistics already collected: what `convert`
    runs once the float ONNX and the statistics are made) with one fixed method, with `auto` as quantized, `auto`
    corrected always and `auto` guarded (the default), at ResNet-50 224 on 200 images, alternating in one run; and
    the statistics pass and the float ONNX export once, for scale."""
    import resource

    import onnx
    from calibration import resnet50_224, seeded_images

    from edge_resnet.quantize.onnx_export import float_onnx, to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    model = resnet50_224()
    float_model = float_tflite(model)
    calibration = seeded_images(200)
    scratch = Path(tempfile.mkdtemp(prefix="corrected-onnx-cost-"))
    started = time.perf_counter()
    statistics = collect_statistics(float_model, calibration)
    statistics_seconds = time.perf_counter() - started
    started = time.perf_counter()
    onnx.save(float_onnx(model), scratch / "float.onnx")
    export_seconds = time.perf_counter() - started
    routes = {"extrapolated": ("extrapolated", "off"), AUTO: ("auto", "off"), AUTO_CORRECTED: ("auto", "on"),
              AUTO + ", guarded correction (the default)": ("auto", "auto")}
    seconds = {name: [] for name in routes}
    for _ in range(2):
        for name, (method, correct) in routes.items():
            started = time.perf_counter()
            to_onnx(model, QuantizationRecipe(calibration_method=method, bias_correction=correct), calibration,
                    output=scratch / "int8.onnx", statistics=statistics, float_model=float_model,
                    float_onnx_path=scratch / "float.onnx")
            seconds[name].append(time.perf_counter() - started)
            print(name, round(seconds[name][-1], 1), flush=True)
    medians = {name: float(np.median(values)) for name, values in seconds.items()}
    return {"images": 200, "repeats": 2, "seconds": medians, "statistics_seconds": statistics_seconds,
            "float_onnx_export_seconds": export_seconds,
            "ratios_to_one_method": {name: medians[name] / medians["extrapolated"] for name in medians},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "machine": machine()}


def best_fixed(routes, corrected):
    """The fixed rule (with its biases corrected, or not) of the best mean SQNR, read off the evaluation images."""
    return max((route for route in routes if route not in (RAW, AUTO, AUTO_CORRECTED)
                and route.endswith(CORRECTED) == corrected), key=lambda route: routes[route]["sqnr_db_mean"])


def markdown(result):
    lines = ["# Corrected int8 biases under issue 23's protocol", "",
             "Commands: " + ", ".join(f"`{command}`" for command in result["commands"]), "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. Output SQNR (dB) on the "
             "evaluation images, mean of 4 calibration subsets of 200 images (the same images for every route); "
             "the model's own output (probabilities for a softmax head). best fixed: the best of calibration.py's "
             "fixed rules, read off the evaluation images (each with its biases as quantized, and corrected: what "
             "`--calibration-method NAME --bias-correction` makes).", "",
             "| model | raw converter | best fixed | auto | auto, corrected | gain | corrected - raw | "
             "best fixed, corrected | auto, corrected - best fixed, corrected | minmax | minmax, corrected | "
             "top-1 agreement auto / corrected | top-1 drop raw / auto / corrected (points) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    gains, fixed_gains = [], []
    for row in result["rows"]:
        routes = row["routes"]
        mean = {route: values["sqnr_db_mean"] for route, values in routes.items()}
        best, best_corrected = best_fixed(routes, False), best_fixed(routes, True)
        gains.append(mean[AUTO_CORRECTED] - mean[AUTO])
        fixed_gains += [mean[route + CORRECTED] - mean[route] for route in routes
                        if route + CORRECTED in routes and route != AUTO]
        lines.append(
            f"| {row['model']} | {mean[RAW]:.2f} | {mean[best]:.2f} ({best}) | {mean[AUTO]:.2f} | "
            f"{mean[AUTO_CORRECTED]:.2f} | {gains[-1]:+.2f} | {mean[AUTO_CORRECTED] - mean[RAW]:+.2f} | "
            f"{mean[best_corrected]:.2f} ({best_corrected.removesuffix(CORRECTED)}) | "
            f"{mean[AUTO_CORRECTED] - mean[best_corrected]:+.2f} | {mean['minmax']:.2f} | "
            f"{mean['minmax' + CORRECTED]:.2f} | "
            f"{100 * routes[AUTO]['agreement_mean']:.2f} / {100 * routes[AUTO_CORRECTED]['agreement_mean']:.2f} | "
            + " / ".join(f"{routes[route]['top1_drop_points_mean']:+.2f}" for route in (RAW, AUTO, AUTO_CORRECTED))
            + " |")
    if gains:
        lines += ["", f"auto, corrected - auto: {np.mean(gains):+.2f} dB on average ({min(gains):+.2f} to "
                      f"{max(gains):+.2f}), better on {sum(gain > 0 for gain in gains)} of {len(gains)} rows; "
                      f"each fixed rule, corrected - as quantized: {np.mean(fixed_gains):+.2f} dB on average, "
                      f"better in {sum(gain > 0 for gain in fixed_gains)} of {len(fixed_gains)} rule-and-row cells."]
    if result.get("guard_rows"):
        lines += guard_lines(result)
    if result.get("in_sample_rows"):
        lines += in_sample_lines(result)
    if result.get("ratio_guard_rows"):
        lines += ratio_guard_lines(result)
    if result.get("onnx_rows"):
        lines += onnx_lines(result)
    if "cost" in result:
        cost = result["cost"]
        lines += ["", f"Cost (`{result['cost_command']}`; {cost['machine']['cpu']}), ResNet-50 at 224, 200 images, "
                      "statistics pass + int8 TFLite, median of 2 alternating runs: "
                      + ", ".join(f"{name} {seconds:.1f} s ({cost['ratios_to_one_method'][name]:.2f}x)"
                                  for name, seconds in cost["seconds"].items())
                      + f"; peak RSS {cost['peak_rss_mb']:.0f} MB."]
    if "onnx_cost" in result:
        cost = result["onnx_cost"]
        lines += ["", f"Cost of the int8 ONNX (`{result['onnx_cost_command']}`; {cost['machine']['cpu']}), ResNet-50 "
                      "at 224, 200 images, to_onnx from the statistics and the float ONNX already made, median of 2 "
                      "alternating runs: " + ", ".join(f"{name} {seconds:.1f} s ({cost['ratios_to_one_method'][name]:.2f}x)"
                                                       for name, seconds in cost["seconds"].items())
                      + f"; for scale, the statistics pass {cost['statistics_seconds']:.1f} s and the float ONNX export "
                        f"{cost['float_onnx_export_seconds']:.1f} s; peak RSS {cost['peak_rss_mb']:.0f} MB."]
    if "onnx_cost_before_session_49" in result:  # each candidate quantized by onnxruntime, before ranged_quantizer
        before = result["onnx_cost_before_session_49"]
        lines += ["", "Before the candidates were written from one onnxruntime quantization (session 49), same "
                      "command and machine: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds
                                                          in before["seconds"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(parts):
    saved = RESULTS / "corrected_biases.json"
    result = json.loads(saved.read_text()) if saved.exists() else {"rows": [], "commands": []}
    command = "python benchmarks/corrected_biases.py" + "".join(f" {shlex.quote(part)}" for part in parts)
    if "cost" in parts:
        result.update(cost=cost(), cost_command=command)
    if "onnx_cost" in parts:
        result.update(onnx_cost=onnx_cost(), onnx_cost_command=command)
    sets = model_sets()
    rows_of = {"guard": guard_row, "in_sample": in_sample_row, "onnx": onnx_row, "onnx_logits": onnx_logits_row,
               "ratio_guard": in_sample_row}  # ratio_guard: softmax heads only (a logits head has no ratio gain)
    if parts[:1] and parts[0] in rows_of:  # guard SET SUBSTRING...: the rows of SET whose names hold one
        measured, key = rows_of[parts[0]], parts[0]
        protocol, models = sets[parts[1]]
        for name, model, head, size in models():
            if any(part in name for part in parts[2:]) and (key != "ratio_guard" or head == "softmax"):
                row = measured(name, model, head, size, protocol)
                result[f"{key}_rows"] = [kept for kept in result.get(f"{key}_rows", []) if kept["model"] != name] + [row]
                result[f"{key}_commands"] = list(dict.fromkeys([*result.get(f"{key}_commands", []), command]))
                result[f"{key}_machine"] = machine()
                write_results("corrected_biases", result, markdown(result))
        return
    for part in parts:
        if part not in sets:
            continue
        protocol, models = sets[part]
        for name, model, head, size in models():
            row = measure(name, model, head, size, protocol)
            result["rows"] = [kept for kept in result["rows"] if kept["model"] != name] + [row]
            result.update(commands=list(dict.fromkeys([*result["commands"], command])), machine=machine())
            write_results("corrected_biases", result, markdown(result))
    result.update(commands=list(dict.fromkeys([*result["commands"], command])), machine=machine())
    write_results("corrected_biases", result, markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
