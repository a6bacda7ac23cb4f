"""Float ONNX export: peak memory (max RSS of a fresh process), time, output
error against Keras and onnxruntime latency, for edge-resnet's own exporter
and tf2onnx's routes, measured side by side in one run.

Each export runs in its own process, so each peak is that route's alone:
the process imports TensorFlow and Keras, builds the model (random weights:
memory and time do not depend on their values), exports, and reports its
max RSS. "build only" is that process without the export.

    python benchmarks/onnx_export.py [--depths 50 152] [--size 224]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import interleaved_medians, machine, use_repo_imports, write_results

ROUTES = ("build only", "edge-resnet", "tf2onnx from_keras", "tf2onnx from_keras large_model", "tf2onnx from_tflite")
CHILD = r"""
import json, os, resource, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
route, depth, size, output = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
from edge_resnet.model.resnet import build_resnet
model = build_resnet(depth, input_shape=(size, size, 3), classes=1000, classifier_activation=None)
built_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
if route == "edge-resnet":
    import onnx
    from edge_resnet.quantize.onnx_export import float_onnx
    onnx.save(float_onnx(model), output)
elif route == "tf2onnx from_keras":
    import onnx
    from edge_resnet.quantize.onnx_export import tf2onnx_float_onnx
    onnx.save(tf2onnx_float_onnx(model), output)
elif route == "tf2onnx from_keras large_model":
    import tensorflow as tf, tf2onnx
    signature = [tf.TensorSpec((None, size, size, 3), tf.float32, name="input")]
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=17, large_model=True,
                               output_path=output + ".zip")
elif route == "tf2onnx from_tflite":
    import tf2onnx
    from edge_resnet.quantize.tflite import float_tflite
    tflite = output + ".tflite"
    open(tflite, "wb").write(float_tflite(model))
    tf2onnx.convert.from_tflite(tflite, opset=17, output_path=output)
seconds = time.perf_counter() - start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the reference run below
if route in ("edge-resnet", "tf2onnx from_keras"):
    import numpy as np
    x = np.random.default_rng(0).normal(0, 60, (2, size, size, 3)).astype("float32")
    np.save(output + ".x.npy", x)
    np.save(output + ".keras.npy", np.asarray(model.predict_on_batch(x)))
print(json.dumps({"built_mb": built_mb, "seconds": seconds, "peak_mb": peak_mb}))
"""


def run_route(route, depth, size, folder):
    output = str(Path(folder) / f"r{depth}_{route.replace(' ', '_')}.onnx")
    done = subprocess.run([sys.executable, "-c", CHILD, route, str(depth), str(size), output], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode:
        return {"route": route, "error": done.stderr.strip().splitlines()[-1][:200]}
    return {"route": route, **json.loads(done.stdout.strip().splitlines()[-1]), "path": output}


def accuracy_and_latency(rows):
    """Output error against Keras, and onnxruntime batch-1 latency, of the two
    complete exports (timed in interleaved rounds)."""
    import onnxruntime as ort

    sessions = {}
    for row in rows:
        if row["route"] in ("edge-resnet", "tf2onnx from_keras") and "path" in row:
            x, reference = np.load(row["path"] + ".x.npy"), np.load(row["path"] + ".keras.npy")
            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            session = ort.InferenceSession(row["path"], options, providers=["CPUExecutionProvider"])
            output = session.run(None, {session.get_inputs()[0].name: x})[0]
            row["max_error_over_logit_scale"] = float(np.abs(output - reference).max() / np.abs(reference).max())
            row["same_top1"] = bool((output.argmax(1) == reference.argmax(1)).all())
            sessions[row["route"]] = (session, x[:1])
    if len(sessions) == 2:
        invokers = [lambda s=s, x=x: s.run(None, {s.get_inputs()[0].name: x}) for s, x in sessions.values()]
        for route, median in zip(sessions, interleaved_medians(invokers, rounds=40, runs_per_round=1, warmup=5)):
            next(row for row in rows if row["route"] == route)["ort_ms"] = median


def markdown(result):
    lines = [
        "# Float ONNX export: memory, time, fidelity, latency",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{', '.join(result['machine']['isa'])}. Command: `{result['command']}`",
        "",
        "Peak = max RSS of a fresh process that imports TensorFlow, builds the model and exports it.",
        "Error = max |ONNX - Keras| / max |Keras logit| on 2 inputs; latency = onnxruntime, batch 1, 2 threads,",
        "median of 40 runs each, alternating between the two exports.",
        "",
        "| model | route | peak MB | export s | error | same top-1 | ORT ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| ResNet-{row['depth']} | {row['route']} | failed: {row['error']} | | | | |")
            continue
        export_s = "" if row["route"] == "build only" else f"{row['seconds']:.1f}"
        error = f"{row['max_error_over_logit_scale']:.1e}" if "max_error_over_logit_scale" in row else ""
        same = str(row.get("same_top1", ""))
        latency = f"{row['ort_ms']:.1f}" if "ort_ms" in row else ""
        lines.append(f"| ResNet-{row['depth']} | {row['route']} | {row['peak_mb']:.0f} | {export_s} | {error} | "
                     f"{same} | {latency} |")
    lines += [
        "",
        "- edge-resnet: `edge_resnet/quantize/keras_onnx.py`, the default float exporter (peak includes onnx.checker's",
        "  full check). Build-only is the floor: TensorFlow, Keras and the model itself.",
        "- tf2onnx `large_model=True` fails in tf2onnx 1.17 under numpy 2 (`np.product` was removed), so it",
        "  offers no way out here; `from_tflite` needs as much memory as `from_keras` and twice the time.",
        "- Latency: both complete exports reach the same graph after onnxruntime's optimizer (53 Conv with",
        "  fused BatchNorm, Add and ReLU), so equal medians are expected; this shared machine was busy",
        "  during part of the run, which moves both columns alike.",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--depths", type=int, nargs="+", default=[50, 152])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--routes", nargs="+", default=list(ROUTES))
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the page from onnx_export.json")
    args = parser.parse_args()
    if args.markdown_only:
        from common import RESULTS

        result = json.loads((RESULTS / "onnx_export.json").read_text())
        write_results("onnx_export", result, markdown(result))
        return
    use_repo_imports()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for depth in args.depths:
            depth_rows = []
            for route in args.routes:
                print(f"ResNet-{depth}: {route} ...", flush=True)
                depth_rows.append({"depth": depth, **run_route(route, depth, args.size, folder)})
                print(f"  {depth_rows[-1]}", flush=True)
            accuracy_and_latency(depth_rows)
            rows += depth_rows
    for row in rows:
        row.pop("path", None)
    command = "python benchmarks/onnx_export.py " + " ".join(sys.argv[1:])
    result = {"machine": machine(), "command": command.strip(), "time": time.strftime("%Y-%m-%d %H:%M"),
              "rows": rows}
    write_results("onnx_export", result, markdown(result))


if __name__ == "__main__":
    main()
