"""Vela's estimated latency of ResNet-18 and ResNet-50 int8 at 224 on the
three Ethos-U families, two MAC configurations each, with the operator split
(random weights: the mapping and the estimate do not depend on them).

    python benchmarks/ethos_u.py
"""

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_results  # noqa: E402
from edge_resnet.quantize.ethos_u import compile_record, run_vela, vela_version  # noqa: E402

CACHE = Path.home() / ".cache" / "edge-resnet" / "benchmarks"
TARGETS = ("ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512", "ethos-u85-256", "ethos-u85-1024")
MODELS = ("resnet18", "resnet50")


def int8_model(name):
    """`name` at 224 with random weights, int8 TFLite (made once, then cached)."""
    folder = CACHE / f"{name}_224_random_int8"
    model = folder / f"{name}_int8.tflite"
    if not model.is_file():
        subprocess.run([sys.executable, "-m", "edge_resnet.cli", "convert", "--model", name, "--weights", "random",
                        "--input-size", "224", "--quantize", "int8", "--formats", "tflite", "--calibration-method",
                        "minmax", "--calibration-size", "32", "--bench-runs", "0", "--no-per-layer", "--output",
                        str(folder), "--force"], check=True)
    return model


def main():
    rows = []
    for name in MODELS:
        model = int8_model(name)
        for target in TARGETS:
            record = compile_record(model, target, run_vela(model, target))
            rows.append({"model": name, "target": target, **{key: record[key] for key in (
                "npu_operators", "cpu_operators", "estimated_inference_ms", "sram_kib", "off_chip_flash_kib",
                "dram_kib")}, "system_config": record["vela"]["system_config"],
                "memory_mode": record["vela"]["memory_mode"]})
            print(rows[-1], flush=True)
    lines = ["# Ethos-U: Vela's estimated latency, ResNet-18/50 int8 at 224", "",
             "Command: `python benchmarks/ethos_u.py`", "",
             f"Vela {vela_version()}, its default system configuration and memory mode for each NPU (named in the "
             "table). These are Vela's performance-model estimates, not measurements on a board. Random weights: "
             "the mapping and the estimate do not depend on the values.", "",
             "| model | target | system config, memory mode | operators on NPU / CPU | estimated ms | inferences/s "
             "| SRAM KiB | flash or DRAM KiB |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        memory = row["off_chip_flash_kib"] or row["dram_kib"]
        lines.append(f"| {row['model']} | {row['target']} | {row['system_config']}, {row['memory_mode']} | "
                     f"{row['npu_operators']} / {row['cpu_operators']} | {row['estimated_inference_ms']:.1f} | "
                     f"{1e3 / row['estimated_inference_ms']:.1f} | {row['sram_kib']:.0f} | {memory:.0f} |")
    write_results("ethos_u", {"vela": vela_version(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
