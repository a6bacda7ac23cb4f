"""Should the int8 ONNX's layers a budget keeps in float32 have their
biases corrected too (tried in session 50, not shipped)? The int8 layers
before a float layer leave a mean error in what it reads, which its
correction would take out were it int8, and a float head loses the
classifier's correction (the int8 ONNX's logits are float, so it is
corrected there). Written after the ResNet-34's and validation ResNet-18's
softmax heads of benchmarks/mixed_precision.py scored below the corrected
full int8 on the evaluation images with their budget's float parts.

    python benchmarks/onnx_float_layers.py

Per model and head of mixed_precision.py: the int8 ONNX with the float parts
its ONNX budget chose (the JSON's `onnx_results`: parts and operators put
back in int8), written as `to_onnx` writes it (default recipe, biases
corrected under the default guard on the 200 calibration images) twice:
the float32 layers' biases kept (shipped) and corrected like the int8
ones (patched in here). Scored on the 397 evaluation digits: the output's
SQNR and the mean over images of each image's logits SQNR (a softmax
head's input: what the search judges a softmax by, on every image alike).

Writes benchmarks/results/onnx_float_layers.{json,md}; the md also keeps
the searches run with the correction in the code (commit 2372f2e), which
the JSON holds as `searched_at_2372f2e`.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

COMMAND = "python benchmarks/onnx_float_layers.py"


def with_float_layers_corrected(module):
    """onnx_bias_correction's biased_layers and shift_bias as tried: a Conv or
    Gemm with a float32 bias of its own is corrected too, read where it writes."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    int8_layers, int8_shift = module.biased_layers, module.shift_bias

    def biased_layers(proto):
        layers = int8_layers(proto)
        weights = module.initializers(proto)
        for node in proto.graph.node:
            if (node.op_type in module.WEIGHT_LAYERS and len(node.input) > 2 and node.input[2] in weights
                    and weights[node.input[2]].data_type == TensorProto.FLOAT):
                layers[node.name] = module.BiasedLayer(node.name, node.output[0], node.output[0], None, None,
                                                       node.input[2], None)
        order = {node.name: at for at, node in enumerate(proto.graph.node)}
        return dict(sorted(layers.items(), key=lambda item: order[item[0]]))

    def shift_bias(weights, layer, shift):
        if layer.bias_scale is not None:
            return int8_shift(weights, layer, shift)
        bias = weights[layer.bias]
        values = numpy_helper.to_array(bias).astype(np.float64) + shift
        bias.CopyFrom(numpy_helper.from_array(values.astype(np.float32), bias.name))

    return {"biased_layers": biased_layers, "shift_bias": shift_bias}


def written(folded, calibration, statistics, float_model, float_parts, int8_operators, path, float_layers_corrected):
    """to_onnx's int8 ONNX with `float_parts` (less `int8_operators`) in float32, its float layers' biases kept or
    corrected."""
    from edge_resnet.quantize import onnx_bias_correction, onnx_export
    from edge_resnet.quantize.recipe import QuantizationRecipe, read_record

    shipped = {name: getattr(onnx_bias_correction, name) for name in ("biased_layers", "shift_bias")}
    make = onnx_export.ort_int8_proto

    def with_float_parts(prepared, output, recipe, onnx_ranges, float_nodes=()):
        parts = onnx_export.onnx_parts(prepared.proto)
        nodes = tuple(node for part in float_parts for node in parts[part] if node not in int8_operators)
        return make(prepared, output, recipe, onnx_ranges, nodes)

    patched = with_float_layers_corrected(onnx_bias_correction) if float_layers_corrected else shipped
    try:
        onnx_export.ort_int8_proto = with_float_parts
        for name, function in patched.items():
            setattr(onnx_bias_correction, name, function)
        onnx_export.to_onnx(folded, QuantizationRecipe(), calibration, output=path, statistics=statistics,
                            float_model=float_model)
    finally:
        onnx_export.ort_int8_proto = make
        for name, function in shipped.items():
            setattr(onnx_bias_correction, name, function)
    return read_record(path)["bias_correction"]


def row(name, model, size, searched):
    import mixed_precision
    from corrected_biases import onnx_outputs_and_logits, outputs_and_logits

    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.mixed import output_sqnr_db, per_image_mean_db
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    folded = fold_batchnorm(model)[0]
    float_model = float_tflite(folded)
    calibration, evaluation = mixed_precision.digits(size)
    statistics = collect_statistics(float_model, calibration)
    head = "softmax" if "softmax" in name else "logits"
    reference, reference_logits = outputs_and_logits(float_model, evaluation, head)
    folder = Path(tempfile.mkdtemp(prefix="onnx-float-layers-"))
    routes = {}
    for route, corrected in (("float layers' biases kept (shipped)", False), ("float layers corrected (tried)", True)):
        path = folder / f"{corrected}.onnx"
        correction = written(folded, calibration, statistics, float_model, searched["float_parts"],
                             searched.get("int8_operators", []), path, corrected)
        outputs, logits = onnx_outputs_and_logits(path, evaluation, head, folder)
        routes[route] = {"output_db": output_sqnr_db(reference, outputs),
                         "logits_per_image_db": per_image_mean_db(reference_logits, logits),
                         "corrected": correction["corrected"], "layers": correction.get("layers", 0)}
    return {"model": name, "float_parts": searched["float_parts"], "routes": routes}


def lines(result):
    out = ["# The int8 ONNX's float32 layers corrected too (tried in session 50, not shipped)", "",
           f"`{COMMAND}`; {result['machine']['cpu']}, {result['machine']['cores']} cores. The float parts each ONNX "
           "budget of benchmarks/mixed_precision.py chose (its JSON's `onnx_results`), written twice with the "
           "default guarded correction on the 200 calibration digits; scored on the 397 evaluation digits: the "
           "output SQNR and the logits' mean per-image SQNR (a softmax head's input).", "",
           "| model | float parts | output dB: kept -> corrected | logits per image dB: kept -> corrected | "
           "guard kept the correction (layers): kept / corrected |", "|---|---|---|---|---|"]
    for entry in result["rows"]:
        kept, tried = entry["routes"].values()
        out.append(f"| {entry['model']} | {', '.join(entry['float_parts'])} | {kept['output_db']:.2f} -> "
                   f"{tried['output_db']:.2f} ({tried['output_db'] - kept['output_db']:+.2f}) | "
                   f"{kept['logits_per_image_db']:.2f} -> {tried['logits_per_image_db']:.2f} "
                   f"({tried['logits_per_image_db'] - kept['logits_per_image_db']:+.2f}) | "
                   f"{'yes' if kept['corrected'] else 'no'} ({kept['layers']}) / "
                   f"{'yes' if tried['corrected'] else 'no'} ({tried['layers']}) |")
    searched = result.get("searched_at_2372f2e")
    if searched:
        out += ["", "## The budget searched with the correction in the code", "",
                searched["how"], "", "| model | float operators | evaluation full int8 -> mixed | before (session 49): "
                "float operators, mixed |", "|---|---|---|---|"]
        before = {entry["model"]: entry for entry in searched["session_49"]}
        for entry in searched["rows"]:
            old = before.get(entry["model"])
            old_cell = f"{old['float_operators']}, {old['evaluation_db']['mixed']:.2f}" if old else "-"
            out.append(f"| {entry['model']} | {entry['float_operators']} | {entry['evaluation_db']['full int8']:.2f} "
                       f"-> {entry['evaluation_db']['mixed']:.2f} | {old_cell} |")
    return out


def main():
    import mixed_precision

    saved_path = RESULTS / "onnx_float_layers.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    chosen = {entry["model"]: entry for entry in json.loads((RESULTS / "mixed_precision.json").read_text())[
        "onnx_results"]}
    rows = []
    for name, model, size, _ in mixed_precision.trained_models():
        rows.append(row(name, model, size, chosen[name]))
        print(rows[-1], flush=True)
    result = {**saved, "machine": machine(), "command": COMMAND, "rows": rows}
    write_results("onnx_float_layers", result, "\n".join(lines(result)) + "\n")


if __name__ == "__main__":
    main()
