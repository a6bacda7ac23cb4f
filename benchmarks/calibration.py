"""Calibration: fidelity of the int8 models against the raw tools, the
speed of the statistics pass, and what the int8 TFLite costs on the device.

    .venv/bin/python benchmarks/calibration.py [fidelity] [floor] [oracle] [speed] [latency]

Fidelity: trained digits models (the shipped demo ResNet-50 at width 0.25,
a ResNet-18 at width 0.25, and a full-width ResNet-50 at 32x32 trained once
and cached by benchmarks/trained.py), four disjoint 200-image calibration
subsets of the training digits, output SQNR and top-1 against the float
Keras model on the 597 held-out digits. Anchors, on the same subsets: the
raw TFLite converter (full-integer int8, min/max) and raw onnxruntime
quantize_static (S8S8, per-channel, MinMax, 8-bit weights).

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
OUR_TFLITE = [("minmax", {}), ("extrapolated", {"extrapolation": 0.25}), ("extrapolated", {"extrapolation": 0.5}),
              ("percentile", {"percentile": 99.99}), ("percentile", {"percentile": 99.999}), ("mse", {})]
OUR_ONNX = [("minmax", {}), ("extrapolated", {"extrapolation": 0.25}), ("extrapolated", {"extrapolation": 0.5})]


def sqnr_db(reference, candidate):
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - candidate) ** 2)))


def scores(reference, labels, logits):
    return {"sqnr_db": sqnr_db(reference, logits),
            "agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
            "top1_drop_points": float(100 * (np.mean(reference.argmax(1) == labels) - np.mean(logits.argmax(1) == labels)))}


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


def raw_ort_int8(float_onnx, images, output):
    """What a user gets from onnxruntime's quantize_static alone (S8S8,
    per-channel, MinMax), as the issue measured it."""
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
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    return output


def models_to_measure():
    from trained import full_width_resnet50

    from edge_resnet.model import demo
    from tests.digits import train_digits_resnet

    yield "demo ResNet-50 w0.25 (shipped)", demo.build_demo_model()
    yield "ResNet-18 w0.25 (trained here)", train_digits_resnet()
    yield "ResNet-50 w1.0 32x32 (trained here, cached)", full_width_resnet50()


def fidelity():
    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.onnx_export import float_onnx, to_onnx
    from edge_resnet.data.preprocess import preprocess_input
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.device.runtime import OnnxRunner, TfliteRunner
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite, to_tflite
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    train_pixels, _ = digit_pixels(32, TRAIN_SAMPLES)
    test_pixels, labels = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    test_images = preprocess_input(test_pixels)
    order = np.random.default_rng(0).permutation(TRAIN_SAMPLES)
    subsets = [order[i * SUBSET_SIZE:(i + 1) * SUBSET_SIZE] for i in range(SUBSETS)]
    results = []
    for model_name, model in models_to_measure():
        print(f"== {model_name}", flush=True)
        folded, _ = fold_batchnorm(model)
        reference = np.asarray(model.predict(test_images, batch_size=50, verbose=0))
        float_model = float_tflite(folded)
        scratch = Path(tempfile.mkdtemp(prefix="calibration-bench-"))
        import onnx

        onnx.save(float_onnx(folded), scratch / "float.onnx")
        rows = {}
        for index, subset in enumerate(subsets):
            calibration = images_from_array(train_pixels[subset], Preprocessing(32, 32), size=None).cached()
            images = list(calibration.samples())

            def record(route, logits):
                rows.setdefault(route, []).append(scores(reference, labels, logits))

            (scratch / "raw.tflite").write_bytes(raw_converter_int8(model, images))
            record("raw TFLite converter (min/max)", TfliteRunner(scratch / "raw.tflite").predict(test_images))
            raw_ort_int8(scratch / "float.onnx", images, scratch / "raw_ort.onnx")
            record("raw onnxruntime quantize_static (S8S8, MinMax)", OnnxRunner(scratch / "raw_ort.onnx").predict(test_images))
            statistics = collect_statistics(float_model, calibration)
            for method, parameters in OUR_TFLITE:
                recipe = QuantizationRecipe(calibration_method=method, **parameters)
                path = to_tflite(folded, recipe, output=scratch / "ours.tflite", statistics=statistics,
                                 float_model=float_model)
                record(f"edge-resnet TFLite, {recipe.range_method().describe()}", TfliteRunner(path).predict(test_images))
            for method, parameters in OUR_ONNX:
                for label, settings in (("U8S8 7-bit weights (default)", {}),
                                        ("S8S8 8-bit weights", {"onnx_activation_type": "int8", "onnx_reduce_range": False})):
                    recipe = QuantizationRecipe(calibration_method=method, **parameters, **settings)
                    path = to_onnx(folded, recipe, output=scratch / "ours.onnx", statistics=statistics,
                                   float_model=float_model, float_onnx_path=scratch / "float.onnx")
                    record(f"edge-resnet ONNX {label}, {recipe.range_method().describe()}",
                           OnnxRunner(path).predict(test_images))
            print(f"   subset {index + 1}/{SUBSETS} done", flush=True)
        results.append({"model": model_name, "routes": {route: summarize(values) for route, values in rows.items()}})
        del model, folded
    return results


def int8_grid(values, low, high):
    """Values rounded to the int8 grid of [low, high] and clipped to it, as an int8 output tensor holds them."""
    step = (high - low) / 255
    return np.clip(np.round((values - low) / step), 0, 255) * step + low


def logits_floor():
    """The output SQNR of the float model with only its logits stored in int8.

    No int8 model can beat this: its last tensor is these int8 logits. The
    calibrated rows use each subset's logits min/max (what min/max
    calibration gives the output tensor); the last row uses the held-out
    images' own min/max, which no calibration can know.
    """
    from edge_resnet.data.preprocess import preprocess_input
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    train_pixels, _ = digit_pixels(32, TRAIN_SAMPLES)
    test_pixels, _ = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    order = np.random.default_rng(0).permutation(TRAIN_SAMPLES)
    results = []
    for model_name, model in models_to_measure():
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
    from tests.digits import TRAIN_SAMPLES, digit_pixels

    test_pixels, _ = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    test_images = preprocess_input(test_pixels)
    held_out = images_from_array(test_pixels, Preprocessing(32, 32), size=None).cached()
    results = []
    for model_name, model in models_to_measure():
        folded, _ = fold_batchnorm(model)
        reference = np.asarray(model.predict(test_images, batch_size=50, verbose=0))
        float_model = float_tflite(folded)
        statistics = collect_statistics(float_model, held_out)
        scratch = Path(tempfile.mkdtemp(prefix="calibration-oracle-"))
        row = {"model": model_name, "sqnr_db": {}}
        for method, parameters in OUR_TFLITE[:2]:
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
    ours = to_tflite(model, QuantizationRecipe(), output=scratch / "ours.tflite", statistics=statistics,
                     float_model=float_model)
    again = to_tflite(model, QuantizationRecipe(), output=scratch / "again.tflite", statistics=statistics,
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


def markdown(result):
    lines = ["# Calibration: fidelity, speed, device cost", "",
             "Commands: " + ", ".join(f"`{command}`" for command in result["commands"].values()), "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"{', '.join(result['machine']['isa'])}", ""]
    for entry in result.get("fidelity", []):
        lines += [f"## {entry['model']}", "",
                  f"Output SQNR against the float Keras model on the 597 held-out digits, {SUBSETS} disjoint "
                  f"{SUBSET_SIZE}-image calibration subsets of the training digits.", "",
                  "| route | SQNR dB mean | min-max | spread | top-1 agreement | top-1 drop pt |", "|---|---|---|---|---|---|"]
        for route, row in entry["routes"].items():
            lines.append(f"| {route} | {row['sqnr_db_mean']:.2f} | {row['sqnr_db_min']:.2f}-{row['sqnr_db_max']:.2f} | "
                         f"{row['sqnr_db_max'] - row['sqnr_db_min']:.2f} | {row['agreement_mean']:.2%} | "
                         f"{row['top1_drop_points_mean']:+.2f} |")
        lines.append("")
    if "floor" in result:
        lines += ["## The int8 logits floor", "",
                  "Output SQNR of the float model with only its logits stored in int8, nothing else quantized. "
                  "No int8 model beats this, since its output tensor is these int8 logits.", "",
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
                  isa_note(result["machine"]["isa"])]
    return "\n".join(lines) + "\n"


def main(parts):
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    path = RESULTS / "calibration.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result.update(machine=machine())
    for part, run in (("fidelity", fidelity), ("floor", logits_floor), ("oracle", oracle_ranges), ("speed", speed),
                      ("latency", latency)):
        if part in parts:
            result.setdefault("commands", {})[part] = f"python benchmarks/calibration.py {part}"
            started = time.perf_counter()
            result[part] = run()
            result.setdefault("seconds", {})[part] = round(time.perf_counter() - started, 1)
            path.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "calibration.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:] or ["fidelity", "floor", "oracle", "speed", "latency"])
