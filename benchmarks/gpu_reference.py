"""Golden reference outputs on a GPU (Keras 3, JAX backend) against the CPU
reference (TensorFlow backend): same top-1, float-tolerance differences, and
the GPU's throughput at batch 1 and at its best batch size.

    python benchmarks/gpu_reference.py prepare        here: models, CPU golden outputs, into .gpu/
    python benchmarks/gpu_reference.py device OUT     on the GPU machine (KERAS_BACKEND=jax)
    python benchmarks/gpu_reference.py report FOLDER  here: compare, write results/gpu_reference.{json,md}

Models: the shipped digits demo (ResNet-50 w0.25, 32x32), and a full-width
ResNet-50 at 224x224 carrying the weights of the full-width ResNet-50 trained
on digits at 32x32 (benchmarks/trained.py; the network is fully
convolutional), its kernels rounded to an int8 grid so that they travel
(both sides run the same float model of these values). Data: the bundled digit images (calibration/digits).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import REPO, RESULTS, machine

WORK = REPO / ".gpu"
DATA = REPO / "calibration" / "digits"
R50_WEIGHTS = WORK / "r50_224_int8grid.npz"
R50_IMAGES = 256
BATCHES = {"demo": (1, 16, 64, 256, 1024), "r50": (1, 16, 64, 128, 256, 512)}


def r50_224():
    from edge_resnet.model.resnet import build_resnet

    return build_resnet(50, input_shape=(224, 224, 3), classes=10, width=1.0, classifier_activation=None,
                        name="resnet50_digits_224")


def carried_weights(weights):
    """Kernels on an int8 grid per output channel (int8 values and float32
    scales: a quarter of the bytes, so that they travel), the rest as is.
    Both sides run the float model made of these values."""
    stored = {}
    for i, weight in enumerate(weights):
        if weight.ndim < 2:
            stored[f"w{i}"] = weight.astype(np.float32)
            continue
        scale = np.abs(weight).max(axis=tuple(range(weight.ndim - 1)), keepdims=True) / 127
        scale[scale == 0] = 1
        stored[f"w{i}"], stored[f"s{i}"] = np.round(weight / scale).astype(np.int8), scale.astype(np.float32)
    return stored


def r50_with_carried_weights(path):
    model = r50_224()
    stored = np.load(R50_WEIGHTS)
    model.set_weights([stored[f"w{i}"] * stored[f"s{i}"] if f"s{i}" in stored.files else stored[f"w{i}"]
                       for i in range(len(model.weights))])
    model.save(path)
    return path


def cli(*args, env=None):
    command = [sys.executable, "-m", "edge_resnet.cli", *map(str, args)]
    print("+", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, cwd=REPO, env=env)


def references(folder, demo_model, r50_model):
    cli("reference", demo_model, "--data", DATA, "--output", folder / "demo", "--force")
    cli("reference", r50_model, "--data", DATA, "--eval-size", R50_IMAGES, "--output", folder / "r50", "--force")


def prepare():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from trained import full_width_resnet50

    from edge_resnet.model import demo

    WORK.mkdir(exist_ok=True)
    demo.build_demo_model().save(WORK / "demo.keras")
    trained = full_width_resnet50()
    np.savez(R50_WEIGHTS, **carried_weights(trained.get_weights()))
    r50_file = r50_with_carried_weights(Path("/tmp/r50_224_cpu.keras"))
    references(WORK / "cpu", WORK / "demo.keras", r50_file)


def sweep(model, batches, sample):
    """ms per image at each batch size: median of timed calls after two
    warm-up calls (the first compiles for that shape)."""
    rows = []
    for batch in batches:
        inputs = np.repeat(sample[None], batch, axis=0)
        for _ in range(2):
            model.predict_on_batch(inputs)
        times = []
        began = time.perf_counter()
        while len(times) < 5 or (time.perf_counter() - began < 1.0 and len(times) < 200):
            start = time.perf_counter()
            model.predict_on_batch(inputs)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        rows.append({"batch": batch, "ms_per_batch": 1e3 * median, "ms_per_image": 1e3 * median / batch,
                     "images_per_s": batch / median})
        print(rows[-1], flush=True)
    return rows


def device(out):
    out = Path(out)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from edge_resnet.data.images import Preprocessing, image_set
    from edge_resnet.check.golden import keras_versions
    from edge_resnet.check.parity import reference_device

    r50_file = r50_with_carried_weights(Path("/tmp/r50_224_gpu.keras"))
    references(out, WORK / "demo.keras", r50_file)
    import jax

    backend, _, device_name = reference_device()
    result = {"backend": backend, "device": device_name, "versions": keras_versions(), "sweep": {}}
    for precision, setting in (("float32", "highest"), ("tf32", "tensorfloat32")):  # TF32: JAX's GPU default
        jax.config.update("jax_default_matmul_precision", setting)
        for name, path in (("demo", WORK / "demo.keras"), ("r50", r50_file)):
            model = keras.saving.load_model(path)
            size = model.input_shape[1]
            sample = next(image_set(DATA, Preprocessing(size, size), size=1).samples())
            result["sweep"][f"{name} {precision}"] = sweep(model, BATCHES[name], sample)
    (out / "sweep.json").write_text(json.dumps(result, indent=1) + "\n")


def agreement(cpu_folder, gpu_folder):
    from edge_resnet.check.golden import GoldenReference

    cpu, gpu = GoldenReference(cpu_folder), GoldenReference(gpu_folder)
    if cpu.manifest["data"]["ids"] != gpu.manifest["data"]["ids"]:
        raise SystemExit(f"{cpu_folder} and {gpu_folder} hold different images")
    a, b = cpu.stored.rows(0, len(cpu.stored)), gpu.stored.rows(0, len(gpu.stored))
    return {"images": len(a), "top1_identical": int(np.sum(a.argmax(1) == b.argmax(1))),
            "max_abs_diff": float(np.abs(a - b).max()), "max_abs_output": float(np.abs(a).max()),
            "cpu": cpu.manifest["reference"], "gpu": gpu.manifest["reference"]}


def device_parity(gpu_demo):
    """The device workflow end to end: an int8 artifact made here from the
    same demo.keras, checked here against the GPU's golden outputs."""
    artifact = WORK / "demo_int8.tflite"
    cli("quantize", WORK / "demo.keras", "--calibration", DATA, "--input-size", 32, "--output", artifact)
    command = [sys.executable, "-m", "edge_resnet.cli", "compare", "--reference", str(gpu_demo), str(artifact),
               "--data", str(DATA)]
    shown = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [line for line in shown.splitlines() if line.startswith("- ") or line.startswith("Reference:")]


def report(folder, tf32_folder=None):
    """`tf32_folder`: golden outputs from a run of the device step before
    reference ran in float32 (JAX's default TF32), for comparison."""
    folder = Path(folder)
    sweep_result = json.loads((folder / "sweep.json").read_text())
    agreements = {name: agreement(WORK / "cpu" / name, folder / name) for name in ("demo", "r50")}
    if tf32_folder:
        agreements.update({f"{name} tf32": agreement(WORK / "cpu" / name, Path(tf32_folder) / name)
                           for name in ("demo", "r50")})
    result = {"machine": machine(), "gpu": sweep_result, "agreement": agreements,
              "device_parity": device_parity(folder / "demo"),
              "commands": ["python benchmarks/gpu_reference.py prepare",
                           "KERAS_BACKEND=jax python benchmarks/gpu_reference.py device OUT   (on the GPU machine)",
                           "python benchmarks/gpu_reference.py report OUT [OUT_OF_A_TF32_RUN]"]}
    (RESULTS / "gpu_reference.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "gpu_reference.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result):
    gpu = result["gpu"]
    lines = ["# Golden reference outputs on a GPU", "", "Commands:", ""] + [f"    {c}" for c in result["commands"]]
    lines += ["", f"GPU: {gpu['device']}, Keras {gpu['versions'].get('keras')} on {gpu['backend']} "
              f"{gpu['versions'].get(gpu['backend'])}. "
              f"CPU reference: {result['machine']['cpu']}, {result['machine']['cores']} cores, TensorFlow backend.", "",
              "## GPU against CPU reference, same images, same weights", "",
              "`edge-resnet reference` on each machine. GPU rows marked TF32 come from a run made before "
              "`reference` switched TF32 off (JAX's default on the GPU).", "",
              "| model | GPU precision | images | top-1 identical | max abs diff | max abs output | relative | "
              "CPU ms/img (batch) | GPU ms/img (batch) | GPU batch 1 ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    names = {"demo": "digits demo, ResNet-50 w0.25 32x32", "r50": "ResNet-50 224x224, trained digit weights"}
    for key, row in result["agreement"].items():
        name, _, tf32 = key.partition(" ")
        cpu, gpu_speed = row["cpu"]["speed"], row["gpu"]["speed"]
        lines.append(f"| {names[name]} | {'TF32' if tf32 else 'float32'} | {row['images']} | "
                     f"{row['top1_identical']}/{row['images']} | {row['max_abs_diff']:.2g} | "
                     f"{row['max_abs_output']:.3g} | {row['max_abs_diff'] / row['max_abs_output']:.1e} | "
                     f"{cpu['ms_per_image']:.3g} ({cpu['batch_size']}) | {gpu_speed['ms_per_image']:.3g} "
                     f"({gpu_speed['batch_size']}) | {gpu_speed['batch1_ms']:.3g} |")
    for key, rows in gpu["sweep"].items():
        name, _, precision = key.partition(" ")
        best = min(rows, key=lambda row: row["ms_per_image"])
        lines += ["", f"## GPU throughput: {names[name]}, {precision or 'TF32'}", "",
                  "| batch | ms per batch | ms per image | images/s |", "|---|---|---|---|"]
        lines += [f"| {r['batch']} | {r['ms_per_batch']:.3g} | {r['ms_per_image']:.3g} | {r['images_per_s']:.0f} |"
                  for r in rows]
        lines += ["", f"Best: batch {best['batch']}, {best['images_per_s']:.0f} images/s; batch 1: "
                  f"{rows[0]['ms_per_batch']:.3g} ms."]
    lines += ["", "## The device workflow", "",
              "An int8 TFLite made here from the same demo.keras, checked here (CPU, no GPU) against the GPU's "
              "golden outputs with `edge-resnet compare --reference gpu/demo/`:", ""]
    lines += result["device_parity"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    step = sys.argv[1]
    if step == "prepare":
        prepare()
    elif step == "device":
        device(sys.argv[2])
    else:
        report(*sys.argv[2:4])
