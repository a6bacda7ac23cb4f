"""InceptionV3, a network no rule of edge-resnet was chosen on, trained and
quantized as a user would: its 3x3 average poolings pad (SAME), which
TFLite averages over the pixels inside the image only and XNNPACK had no
int8 kernel for (now a depthwise convolution times a map of area / pixels
inside, held exactly in int8: edge_resnet/quantize/xnnpack_rewrites.py).

    .venv/bin/python benchmarks/inception_v3.py        the TFLite and ONNX routes, before and now
    .venv/bin/python benchmarks/inception_v3.py onnx   the int8 ONNX beside raw onnxruntime in each weight range
    .venv/bin/python benchmarks/inception_v3.py layouts what auto's fold layouts pick for the int8 TFLite

keras.applications InceptionV3 (75x75, its smallest, pixels / 255, logits
head) trained on digits 0..1199 as benchmarks/xnnpack_rewrites.py trains
its networks, and its softmax twin; the protocol of
benchmarks/resnet_v2.py (3 splits of the 597 digits it never trained on,
200 calibrate, 397 evaluate, every route of a split on the same images).
"Before": the padded pooling left as converted. `onnx`: on the same splits,
edge-resnet's int8 ONNX (`auto`, 7-bit weights as by default and 8-bit as
with --full-range) beside onnxruntime's quantize_static alone (MinMax,
per-channel) with the same weights and activations, and S8S8 with 8-bit
weights as issue 23 measured it. `layouts`: on the same splits, every
candidate rule of the int8 TFLite's `auto` scored on the held-out
calibration images in three fold layouts (LAYOUTS) and, with ranges from
all 200, on the evaluation images; what each layout picks, and what that
pick scores. Each mode writes its part of
benchmarks/results/inception_v3.{json,md}.
"""

import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from common import RESULTS, machine, use_repo_imports, write_results

EPOCHS = 4
SIZE = 75
BEFORE = "padded pooling as converted"


@contextmanager
def padded_pooling_as_converted():
    from edge_resnet.quantize import xnnpack_rewrites

    on_grid = xnnpack_rewrites.padded_average_pool_on_grid
    xnnpack_rewrites.padded_average_pool_on_grid = lambda subgraph, operator: False
    try:
        yield
    finally:
        xnnpack_rewrites.padded_average_pool_on_grid = on_grid


ONNX_ROUTES = (  # (route, raw onnxruntime's activation type and reduce_range, or edge-resnet's recipe changes)
    ("raw onnxruntime quantize_static U8S8, 7-bit weights", ("uint8", True)),
    ("edge-resnet ONNX auto (U8S8, 7-bit weights: the default)", {}),
    ("raw onnxruntime quantize_static U8S8, 8-bit weights", ("uint8", False)),
    ("edge-resnet ONNX auto --full-range (U8S8, 8-bit weights)", {"onnx_reduce_range": False}),
    ("raw onnxruntime quantize_static S8S8, 8-bit weights", ("int8", False)),
)


def onnx_routes(model, calibration_pixels, labels, evaluation, folder):
    """{route: output SQNR dB on `evaluation`} of ONNX_ROUTES for one split of one head, all calibrated on the same
    images, and the raw TFLite converter's."""
    import onnx
    from calibration import raw_ort_int8, split_with_raw_converter

    from edge_resnet.device.runtime import OnnxRunner
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.mixed import output_sqnr_db
    from edge_resnet.quantize.onnx_export import float_onnx, to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    reference, calibration, scored = split_with_raw_converter(model, calibration_pixels, labels, evaluation, folder)
    folded, _ = fold_batchnorm(model)
    float_model = float_tflite(folded)
    statistics = collect_statistics(float_model, calibration)
    float_path = folder / "float.onnx"
    onnx.save(float_onnx(folded), float_path)
    for number, (route, how) in enumerate(ONNX_ROUTES):
        path = folder / f"route{number}.onnx"
        if isinstance(how, tuple):
            raw_ort_int8(float_path, list(calibration.samples()), path, *how)
        else:
            to_onnx(folded, QuantizationRecipe(calibration_method="auto", **how), calibration, output=path,
                    statistics=statistics, float_model=float_model, float_onnx_path=float_path)
        scored[route] = output_sqnr_db(reference, OnnxRunner(path).predict(evaluation))
    return scored


def onnx_fidelity():
    """The rows of `onnx`: the ONNX routes of every split of both heads."""
    from fold_layouts import trained_splits
    from xnnpack_rewrites import inception_v3

    rows = []
    for head, model, seed, calibration, labels, evaluation in trained_splits(lambda: inception_v3(SIZE), EPOCHS,
                                                                               1 / 255, SIZE):
        scored = onnx_routes(model, calibration, labels, evaluation, Path(tempfile.mkdtemp(prefix="inception-onnx-")))
        rows.append({"head": head, "seed": seed, "sqnr_db": scored})
        print(head, seed, scored, flush=True)
    return {"rows": rows}


def onnx_markdown(result):
    from calibration import per_head_cells

    rows = result["onnx_weight_range"]["rows"]
    lines = ["", "## The int8 ONNX beside raw onnxruntime (`inception_v3.py onnx`)", "",
             f"Machine: {result['onnx_weight_range']['machine']['cpu']}. Same splits, images and scoring as above; "
             "raw onnxruntime: quantize_static (QDQ, per-channel, MinMax) of the same float ONNX.", "",
             "| route | logits head | softmax head |", "|---|---|---|"]
    lines += [f"| {name} | {' | '.join(per_head_cells(rows, name))} |" for name in rows[0]["sqnr_db"]]
    return "\n".join(lines) + "\n"


def layouts_markdown(result):
    from fold_layouts import table

    return "\n".join(["", "## What auto's fold layouts pick (`inception_v3.py layouts`)", "",
                      f"Machine: {result['fold_layouts']['machine']['cpu']}. Same splits and scoring; each "
                      "layout's pick among the int8 TFLite's candidates, scored on the evaluation images with ranges "
                      "from all 200 calibration images: its mean over the splits minus the best fixed rule's, dB "
                      "(the picks per split; benchmarks/fold_layouts.py says what each layout is).", "",
                      *table({"InceptionV3 75x75": result["fold_layouts"]["rows"]})]) + "\n"


def main(mode=None):
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from resnet_v2 import fidelity, markdown
    from xnnpack_rewrites import inception_v3

    saved = RESULTS / "inception_v3.json"
    result = json.loads(saved.read_text()) if saved.exists() else {}
    if mode == "onnx":
        result["onnx_weight_range"] = {"machine": machine(), **onnx_fidelity()}
    elif mode == "layouts":
        from fold_layouts import layout_rows, trained_splits

        splits = trained_splits(lambda: inception_v3(SIZE), EPOCHS, 1 / 255, SIZE)
        result["fold_layouts"] = {"machine": machine(), "rows": layout_rows(splits, 1 / 255, SIZE)}
    else:
        result.update({"machine": machine(), "fidelity": fidelity(lambda: inception_v3(SIZE), SIZE, EPOCHS,
                                                                   padded_pooling_as_converted, BEFORE)})
    text = markdown(result, "InceptionV3: average poolings that pad", "python benchmarks/inception_v3.py",
                    "InceptionV3") if "fidelity" in result else ""
    text += onnx_markdown(result) if "onnx_weight_range" in result else ""
    write_results("inception_v3", result, text + (layouts_markdown(result) if "fold_layouts" in result else ""))


if __name__ == "__main__":
    main(*sys.argv[1:])
