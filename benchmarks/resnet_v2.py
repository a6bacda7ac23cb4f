"""ResNetV2 (pre-activation, keras.applications' ResNet50V2): its
BatchNormalizations have no convolution before them to fold into, and its
shortcut strides with a 1x1 max pooling. Before this benchmark the first
were a TFLite MUL and ADD each (the scale vector given one int8 scale for
all channels) and the second cut the int8 model into four XNNPACK pieces;
now they are 1x1 depthwise convolutions (edge_resnet/model/fold.py,
edge_resnet/quantize/xnnpack_rewrites.py).

    .venv/bin/python benchmarks/resnet_v2.py

Fidelity: ResNet50V2 (32x32, pixels / 255, logits head) trained on digits
0..1199 as benchmarks/xnnpack_rewrites.py trains its networks, and its
softmax twin. The 597 digits it never trained on, split three times (seeds
0, 1, 2): 200 calibrate (class-stratified), the other 397 evaluate; every
route of a split calibrated on the very same 200 images and scored on the
same 397 (output SQNR against the Keras model: the probabilities for a
softmax head). Routes: the raw TFLite converter; edge-resnet's int8 TFLite
and int8 ONNX (minmax, auto) with the BatchNormalizations as before (left
in place) and as now.
Latency: ResNet50V2 at 224 (its BatchNormalization statistics from 16
upsampled digits, weights random: speed does not depend on them), batch 1,
2 threads, interleaved rounds: float32, the raw converter's int8, and
edge-resnet's int8 before and after.
Writes benchmarks/results/resnet_v2.{json,md}.
"""

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from common import interleaved_medians, isa_note, machine, use_repo_imports, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SEEDS = (0, 1, 2)
EPOCHS = 6
BEFORE, NOW = "BatchNormalization left in place, 1x1 max pooling as converted", "as now"


def resnet50v2(size=32):
    import keras

    return keras.applications.ResNet50V2(input_shape=(size, size, 3), weights=None, classes=10,
                                         classifier_activation=None)


@contextmanager
def as_before():
    """edge-resnet as it was: no BatchNormalization becomes a depthwise convolution, MAX_POOL_2D is not rewritten.
    (The later RELU rewrite stays on: ResNet50V2 has no RELU the converter leaves unfused, 114 operators either
    way.)"""
    from edge_resnet.model import fold
    from edge_resnet.quantize import xnnpack_rewrites

    why_not, every_precision = fold._why_not_depthwise, xnnpack_rewrites.rewrites_for_every_precision
    fold._why_not_depthwise = lambda bn: "kept as it was (benchmark)"
    xnnpack_rewrites.rewrites_for_every_precision = dict  # MAX_POOL_2D's rewrite, the only one there
    try:
        yield
    finally:
        fold._why_not_depthwise, xnnpack_rewrites.rewrites_for_every_precision = why_not, every_precision


def ours(model, calibration, folder, name):
    """{(format, method): path} of edge-resnet's int8 models of `model`, and its fold report."""
    import onnx

    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import write_int8_tflite
    from edge_resnet.quantize.onnx_export import float_onnx, to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    folded, report = fold_batchnorm(model)
    float_model = float_tflite(folded)
    statistics = collect_statistics(float_model, calibration)
    onnx.save(float_onnx(folded), folder / f"{name}_float.onnx")
    paths = {}
    for method in ("minmax", "auto"):
        recipe = QuantizationRecipe(calibration_method=method)
        paths["TFLite", method] = write_int8_tflite(float_model, recipe, folder / f"{name}_{method}.tflite",
                                                    calibration, statistics, progress=False)
        paths["ONNX", method] = to_onnx(folded, recipe, calibration, output=folder / f"{name}_{method}.onnx",
                                        statistics=statistics, float_model=float_model,
                                        float_onnx_path=folder / f"{name}_float.onnx")
    return paths, report


def fidelity_routes(model, calibration_pixels, labels, evaluation, folder, before=None, before_label=BEFORE):
    """{route: output SQNR dB on `evaluation`} for one split of one head; `before` (default as_before): the context
    in which edge-resnet is as it was, its routes labelled `before_label`."""
    from calibration import split_with_raw_converter

    from edge_resnet.device.runtime import OnnxRunner, TfliteRunner
    from edge_resnet.device.tflite_inspect import inspect_tflite
    from edge_resnet.quantize.mixed import output_sqnr_db

    reference, calibration, scored = split_with_raw_converter(model, calibration_pixels, labels, evaluation, folder)
    pieces = {"raw TFLite converter (min/max)": inspect_tflite(folder / "raw.tflite").delegate_nodes}
    for label in (before_label, NOW):
        if label == before_label:
            with (before or as_before)():
                paths, _ = ours(model, calibration, folder, "before")
        else:
            paths, _ = ours(model, calibration, folder, "now")
        for (kind, method), path in paths.items():
            runner = TfliteRunner(path) if kind == "TFLite" else OnnxRunner(path)
            route = f"edge-resnet {kind} {method}, {label}"
            scored[route] = output_sqnr_db(reference, runner.predict(evaluation))
            if kind == "TFLite":
                pieces[route] = inspect_tflite(path).delegate_nodes
    return scored, pieces


def fidelity(make=resnet50v2, size=32, epochs=EPOCHS, before=None, before_label=BEFORE):
    """The trained network's rows (`make`, at `size`, trained `epochs`), each split's routes with edge-resnet
    before (the `before` context, default as_before) and now."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from trained import with_softmax
    from xnnpack_rewrites import trained

    from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels

    logits = trained(make, epochs, 1 / 255, size)
    pixels, labels = digit_pixels(size, None, offset=TRAIN_SAMPLES)
    top1 = float(np.mean(logits.predict(pixels.astype(np.float32) / 255, verbose=0).argmax(1) == labels))
    rows = []
    for head, model in (("logits", logits), ("softmax", with_softmax(logits))):
        for seed in SEEDS:
            order = np.random.default_rng(seed).permutation(len(pixels))
            calibration, evaluation = order[:200], order[200:]
            scored, pieces = fidelity_routes(model, pixels[calibration], labels[calibration],
                                             pixels[evaluation].astype(np.float32) / 255,
                                             Path(tempfile.mkdtemp(prefix="keras-applications-")), before,
                                             before_label)
            rows.append({"head": head, "seed": seed, "sqnr_db": scored, "xnnpack_pieces": pieces})
            print(head, seed, scored, pieces, flush=True)
    return {"float_top1_on_597": top1, "epochs": epochs, "size": size, "rows": rows}


def latency():
    import keras

    from calibration import raw_converter_int8

    from edge_resnet.data.images import Preprocessing, images_from_array
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.device.tflite_inspect import inspect_tflite
    from edge_resnet.model.demo import TRAIN_SAMPLES, digit_pixels
    from edge_resnet.quantize.tflite import float_tflite
    from edge_resnet.model.fold import fold_batchnorm

    keras.utils.set_random_seed(3)
    model = resnet50v2(224)
    pixels, labels = digit_pixels(224, 16, offset=TRAIN_SAMPLES)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(pixels.astype(np.float32) / 255, training=True)
    calibration = images_from_array(pixels, Preprocessing(224, 224, scale=1 / 255), size=None, labels=labels)
    folder = Path(tempfile.mkdtemp(prefix="resnet-v2-224-"))
    (folder / "float32.tflite").write_bytes(float_tflite(fold_batchnorm(model)[0]))
    (folder / "raw.tflite").write_bytes(raw_converter_int8(model, list(calibration.samples())))
    models = {"float32 (edge-resnet)": folder / "float32.tflite", "raw TFLite converter int8": folder / "raw.tflite"}
    with as_before():
        models[f"edge-resnet int8, {BEFORE}"] = ours_tflite(model, calibration, folder / "before.tflite")
    models["edge-resnet int8, as now"] = ours_tflite(model, calibration, folder / "now.tflite")
    runners = [TfliteRunner(path, threads=2) for path in models.values()]
    one = pixels[:1].astype(np.float32) / 255
    medians = interleaved_medians([lambda runner=runner: runner.predict(one) for runner in runners])
    return [{"model": name, "p50_ms": ms, "xnnpack_pieces": inspect_tflite(path).delegate_nodes,
             "operators": sum(inspect_tflite(path).op_counts.values())}
            for (name, path), ms in zip(models.items(), medians)]


def ours_tflite(model, calibration, path):
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import write_int8_tflite
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.tflite import float_tflite

    return write_int8_tflite(float_tflite(fold_batchnorm(model)[0]), QuantizationRecipe(calibration_method="minmax"),
                             path, calibration, progress=False)


def main():
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    result = {"machine": machine(), "fidelity": fidelity(), "latency_224": latency()}
    write_results("resnet_v2", result, markdown(result))


def markdown(result, title="ResNetV2: BatchNormalization with nothing to fold into, 1x1 max pooling that strides",
             command="python benchmarks/resnet_v2.py", network="ResNet50V2"):
    from calibration import per_head_cells

    described = result["machine"]
    rows = result["fidelity"]["rows"]
    names = list(rows[0]["sqnr_db"])
    size = result["fidelity"].get("size", 32)
    lines = [f"# {title}", "",
             f"Command: `{command}` (the module's docstring says what it runs).", "",
             f"Machine: {described['cpu']}, {described['cores']} cores, {' '.join(described['isa'])}.", "",
             f"{network} {size}x{size} trained {result['fidelity']['epochs']} epochs on digits (top-1 "
             f"{100 * result['fidelity']['float_top1_on_597']:.1f}% on the 597 it never trained on). Output SQNR dB "
             "on 397 of them, mean of 3 splits (per split in brackets), every route of a split calibrated on the "
             "same 200 others; XNNPACK pieces of the TFLite (1: whole).", "",
             "| route | logits head | softmax head | XNNPACK pieces |", "|---|---|---|---|"]
    lines += [f"| {name} | {' | '.join(per_head_cells(rows, name))} | {rows[0]['xnnpack_pieces'].get(name, '')} |"
              for name in names]
    if "latency_224" in result:
        lines += ["", f"{network} at 224, batch 1, 2 threads, interleaved rounds (medians); int8 ranges minmax from "
                  "16 images:", "", "| model | p50 ms | XNNPACK pieces | operators |", "|---|---|---|---|"]
        lines += [f"| {entry['model']} | {entry['p50_ms']:.2f} | {entry['xnnpack_pieces']} | {entry['operators']} |"
                  for entry in result["latency_224"]]
    return "\n".join(lines) + "\n" + isa_note(described["isa"])


if __name__ == "__main__":
    main()
