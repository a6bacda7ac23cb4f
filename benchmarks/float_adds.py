"""Is the residual stream's requantization where int8 loses? The residual
additions in float32 (elementwise: far cheaper out of int8 than any
convolution), the head in float32, and both, against full int8 (issue 27).

    python benchmarks/float_adds.py [MODEL SUBSTRING...]

With the additions in float32 the identity path carries no rounding from
block to block; the convolutions still read the stream quantized. Output
SQNR (dB) against the float model on the 397 evaluation digits
(mixed_precision.py's split), `auto` ranges from the 200 calibration
images. `latency`: p50 of a ResNet-50 at 224 (random weights, as
mixed_precision.py times), full int8 against additions in float32,
alternating rounds. Writes benchmarks/results/float_adds.{json,md} (the
rows replaced whole, the latency kept until measured again).

    python benchmarks/float_adds.py latency
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, interleaved_medians, machine, write_results  # noqa: E402

ROUTES = ("full int8", "additions in float32", "head in float32", "additions and head in float32")


def addition_scopes(float_model):
    """The operator scopes of the float TFLite's ADD operators (a ResNet's residual additions, ReLU fused)."""
    from ai_edge_litert import schema_py_generated as schema

    from edge_resnet.quantize.mixed import operator_scope
    from edge_resnet.quantize.statistics import read_flatbuffer

    model = read_flatbuffer(float_model)
    graph = model.subgraphs[0]
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    return tuple(operator_scope(graph, op) for op in graph.operators
                 if codes[op.opcodeIndex] == schema.BuiltinOperator.ADD)


def measure(name, model, size):
    from mixed_precision import digits

    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import int8_tflite, run_tflite_bytes, tflite_chooser
    from edge_resnet.quantize.mixed import model_parts
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.selection import output_sqnr_db, resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(fold_batchnorm(model)[0])
    calibration, evaluation = digits(size)
    recipe = QuantizationRecipe(output_type="float32")  # a float head writes float32
    method, ranges, _ = resolved_ranges(collect_statistics(float_model, calibration), recipe.range_method(),
                                        tflite_chooser(float_model, recipe.per_channel, calibration))
    additions = addition_scopes(float_model)
    head = model_parts(float_model)["head"]
    reference = run_tflite_bytes(float_model, evaluation, "float")
    row = {"model": name, "ranges": method.describe(), "additions": len(additions), "evaluation_db": {}}
    for route, scopes in zip(ROUTES, ((), additions, head, additions + head)):
        artifact = int8_tflite(float_model, ranges, recipe, scopes)
        row["evaluation_db"][route] = output_sqnr_db(reference, run_tflite_bytes(artifact, evaluation, "int8"))
    print(row, flush=True)
    return row


def markdown(result):
    lines = ["# The residual additions in float32", "", f"Command: `{result['command']}`", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. Output SQNR (dB) on the 397 "
             "evaluation digits against the float model; `auto` ranges from the 200 calibration images; float32 "
             "output in every route (so the head can be float).", "",
             "| model | ranges | additions | " + " | ".join(ROUTES) + " |", "|---|---|---|" + "---|" * len(ROUTES)]
    for row in result["rows"]:
        cells = [f"{row['evaluation_db'][route]:.2f}" for route in ROUTES]
        lines.append(f"| {row['model']} | {row['ranges']} | {row['additions']} | " + " | ".join(cells) + " |")
    for route, base in (("additions in float32", "full int8"), ("additions and head in float32", "head in float32")):
        gains = [row["evaluation_db"][route] - row["evaluation_db"][base] for row in result["rows"]]
        lines += ["", f"{route} against {base}: {sum(gains) / len(gains):+.2f} dB on average "
                      f"({min(gains):+.2f} to {max(gains):+.2f}), better on {sum(gain > 0 for gain in gains)} of "
                      f"{len(gains)} rows."]
    if "latency_224" in result:
        timing = result["latency_224"]
        lines += ["", f"Latency (`{result['latency_command']}`; {timing['machine']['cpu']}, "
                      f"{', '.join(timing['machine']['isa'])}): ResNet-50 at 224, batch 1, 2 threads, float32 output: "
                      + ", ".join(f"{route} {ms:.2f} ms" for route, ms in timing["p50_ms"].items())
                      + f" ({timing['ratio']:.2f}x)."]
    return "\n".join(lines) + "\n"


def latency_at_224():
    """{route: p50 ms} of a ResNet-50 at 224, full int8 and with its additions in float32, float32 output."""
    import tempfile

    from mixed_precision import network_at_224

    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.quantize.int8_tflite import int8_tflite
    from edge_resnet.quantize.recipe import QuantizationRecipe

    float_model, ranges, _, _, sample = network_at_224(50)
    recipe = QuantizationRecipe(output_type="float32")
    folder = Path(tempfile.mkdtemp(prefix="float-adds-"))
    runners = {}
    for route, scopes in zip(ROUTES[:2], ((), addition_scopes(float_model))):
        path = folder / f"{len(runners)}.tflite"
        path.write_bytes(int8_tflite(float_model, ranges, recipe, scopes))
        runners[route] = TfliteRunner(path, threads=2)
        runners[route].feed(sample)
    medians = interleaved_medians([runner.interpreter.invoke for runner in runners.values()])
    return {"p50_ms": dict(zip(runners, medians)), "ratio": medians[1] / medians[0], "machine": machine()}


def main(only):
    from mixed_precision import trained_models

    saved = RESULTS / "float_adds.json"
    if only == ["latency"]:
        result = json.loads(saved.read_text())
        result["latency_224"] = latency_at_224()
        result["latency_command"] = "python benchmarks/float_adds.py latency"
        write_results("float_adds", result, markdown(result))
        return
    rows = [measure(name, model, size) for name, model, size, _ in trained_models()
            if not only or any(part in name for part in only)]
    kept = json.loads(saved.read_text()) if saved.exists() else {}
    result = {"command": "python benchmarks/float_adds.py" + "".join(f" {part!r}" for part in only),
              "machine": machine(), "rows": rows,
              **{key: kept[key] for key in ("latency_224", "latency_command") if key in kept}}
    write_results("float_adds", result, markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
