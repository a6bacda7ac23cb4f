"""Whole-run time, peak memory and time per stage of `edge-resnet convert`,
and what reusing work between stages saves.

    python benchmarks/convert_run.py

Two runs through the real command line, one after the other:
1. the default run (`edge-resnet convert --quantize int8`: the demo model);
2. ResNet-50 at 224x224 (random weights: this run is about time and memory,
   not accuracy) calibrated on 200 embedded digits, evaluated on the other 397.

Then, in one process on the same ResNet-50, the stages that reuse an
earlier stage's work are timed both ways, one after the other: int8 TFLite
from the one statistics pass and the float32 .tflite vs converting and
calibrating again, per-layer TFLite error against the float32 .tflite
already written vs converting it again, and int8 ONNX from the statistics
and the already exported float ONNX vs doing both again (what composing the
separate commands costs).
"""

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, RESULTS, isa_note, machine, use_repo_imports, write_results

CALIBRATION_SIZE = 200
R50_ARGS = ["--model", "resnet50", "--weights", "random", "--input-size", "224",
            "--calibration-size", str(CALIBRATION_SIZE)]
# the largest family member: does the whole run fit? (fewer evaluation images and latency runs, for time)
R152_ARGS = ["--model", "resnet152", "--weights", "random", "--input-size", "224",
             "--calibration-size", str(CALIBRATION_SIZE), "--eval-size", "100", "--bench-runs", "5"]
RUN_TITLES = {"default": "default run", "resnet50_224": "ResNet-50 224", "resnet152_224": "ResNet-152 224"}


def run_convert(args, output):
    """(report, wall seconds, child peak RSS MB) of one CLI run."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "edge_resnet.cli", "convert", *args, "--output", str(output)],
                            cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"convert failed ({result.returncode}): {result.stderr[-2000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest child so far
    return json.loads((Path(output) / "report.json").read_text()), wall, peak_mb


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def reuse_savings(report, scratch):
    """Seconds of each reusing stage with and without the reuse, on the
    folded ResNet-50 the second run wrote."""
    import keras
    import onnx

    from edge_resnet.calibration import digits_folder
    from edge_resnet.data.images import Preprocessing, holdout_split
    from edge_resnet.check.layer_debug import layer_errors
    from edge_resnet.quantize.onnx_export import float_onnx, to_onnx
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import to_tflite

    output = Path(report["_output"])
    folded = keras.saving.load_model(output / report["model"]["folded_file"])
    calibration, evaluation = holdout_split(str(digits_folder()), Preprocessing(224, 224), CALIBRATION_SIZE)
    calibration = calibration.cached()
    debug_images = list(evaluation.samples())[:16]
    float_tflite = (output / f"{report['model']['name']}_float32.tflite").read_bytes()
    statistics = collect_statistics(float_tflite, calibration)
    float_path = scratch / "float.onnx"
    onnx.save(float_onnx(folded), float_path)
    int8 = QuantizationRecipe()
    int8_path = to_tflite(folded, int8, calibration, output=scratch / "int8.tflite", statistics=statistics,
                          float_model=float_tflite)
    return {
        "int8 TFLite": {
            "reusing": timed(lambda: to_tflite(folded, int8, calibration, output=scratch / "a.tflite",
                                               statistics=statistics, float_model=float_tflite)),
            "again": timed(lambda: to_tflite(folded, int8, calibration, output=scratch / "b.tflite", progress=False)),
        },
        "per-layer TFLite error": {
            "reusing": timed(lambda: layer_errors(folded, int8_path, debug_images, float_model=float_tflite)),
            "again": timed(lambda: layer_errors(folded, int8_path, debug_images)),
        },
        "int8 ONNX": {
            "reusing": timed(lambda: to_onnx(folded, int8, calibration, output=scratch / "a.onnx",
                                             statistics=statistics, float_model=float_tflite,
                                             float_onnx_path=float_path)),
            "again": timed(lambda: to_onnx(folded, int8, calibration, scratch / "b.onnx")),
        },
    }


def stage_table(runs):
    """Seconds per stage, and the process's peak memory after it, for each
    run; stage names with the model's name taken out, so runs share rows."""
    def rows(run):
        return {stage["stage"].replace(run["model"], "MODEL"): stage for stage in run["stages"]}

    tables = {name: rows(run) for name, run in runs.items()}
    names = list(dict.fromkeys(stage for table in tables.values() for stage in table))
    lines = ["| stage | " + " | ".join(f"{RUN_TITLES[name]}: s, peak MB" for name in tables) + " |",
             "|---|" + "---|" * len(tables)]
    for name in names:
        cells = [f"{table[name]['seconds']:.1f}, {table[name].get('peak_rss_mb', 0):.0f}" if name in table else ""
                 for table in tables.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(result):
    runs, savings = result["runs"], result["reuse"]
    r50 = runs["resnet50_224"]
    slowest = max(r50["stages"], key=lambda stage: stage["seconds"])
    lines = [
        "# `edge-resnet convert`: whole run, peak memory, time per stage",
        "",
        "Command: `python benchmarks/convert_run.py` (`--markdown-only` rewrites this page from convert.json)",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"ISA {', '.join(result['machine']['isa'])}, Python {result['machine']['python']}.",
        "",
        "| run | command | wall (s) | peak memory (MB) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | `{run['command']}` | {run['wall_seconds']:.0f} | {run['peak_rss_mb']:.0f} |"
              for name, run in runs.items()]
    lines += ["", "Wall time includes starting Python and importing TensorFlow; peak memory is the "
              "process's maximum resident set. The peak after each stage is the process's peak so far, so the "
              "stage where it jumps is the one that set it.", ""]
    lines += stage_table(runs)
    lines += ["", f"Slowest stage at 224: {slowest['stage']} ({slowest['seconds']:.0f} s).", "",
              "What reuse saves (ResNet-50 224, measured in one process, one after the other):", "",
              "| stage | reusing the earlier stage (s) | doing it again (s) | ratio |", "|---|---|---|---|"]
    lines += [f"| {name} | {t['reusing']:.1f} | {t['again']:.1f} | {t['reusing'] / t['again']:.2f}x |"
              for name, t in savings.items()]
    lines += ["", "ResNet-50 224 artifacts (random weights, so the accuracy columns mean nothing here):", "",
              "| artifact | size (MB) | p50 (ms) | speed-up vs float32 |", "|---|---|---|---|"]
    lines += [f"| {row['artifact']} | {row['size_bytes'] / 1e6:.1f} | {row['p50_ms']:.1f} | "
              f"{row['speedup_vs_float32']:.2f}x |" for row in r50["artifacts"]]
    return "\n".join(lines) + "\n" + isa_note(result["machine"]["isa"])


def measure():
    use_repo_imports()
    with tempfile.TemporaryDirectory(prefix="edge-resnet-convert-bench-") as scratch:
        scratch = Path(scratch)
        default, default_wall, default_peak = run_convert(["--quantize", "int8"], scratch / "default")
        r50, r50_wall, r50_peak = run_convert(R50_ARGS, scratch / "r50")
        r152, r152_wall, r152_peak = run_convert(R152_ARGS, scratch / "r152")
        r50["_output"] = str(scratch / "r50")
        savings = reuse_savings(r50, scratch)
    runs = {}
    for name, command, report, wall, peak in (
        ("default", "edge-resnet convert --quantize int8", default, default_wall, default_peak),
        ("resnet50_224", "edge-resnet convert " + " ".join(R50_ARGS), r50, r50_wall, r50_peak),
        ("resnet152_224", "edge-resnet convert " + " ".join(R152_ARGS), r152, r152_wall, r152_peak),
    ):
        runs[name] = {"command": command, "model": report["model"]["name"], "wall_seconds": wall,
                      "peak_rss_mb": peak, "stages": report["stages"], "artifacts": report["artifacts"]}
    return {"machine": machine(), "runs": runs, "reuse": savings}


def main():
    if "--markdown-only" in sys.argv:
        result = json.loads((RESULTS / "convert.json").read_text())
    else:
        result = measure()
    write_results("convert", result, markdown(result))


if __name__ == "__main__":
    main()
