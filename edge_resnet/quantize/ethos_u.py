"""Arm Ethos-U microNPUs as a target: an int8 .tflite compiled by Vela
(`pip install "edge-resnet[ethos-u]"`), offline and without TensorFlow.

Vela maps what it can onto the NPU and leaves the rest to the CPU; its
network summary and summary CSV give the operator split, the SRAM and
flash it needs, and an estimated inference time. That estimate comes from
Vela's performance model of the NPU and its memories, not from a board.
"""

import csv
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ModelError
from ..files import ForceRequest, atomic_output, file_sha256
from ..options import option

# Vela 5.2's --accelerator-config values (a test holds this equal to Vela's own list).
TARGETS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
           "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")
RUN_VELA = "import sys; from ethosu.vela.vela import main; sys.exit(main())"
ESTIMATE_NOTE = "Vela's performance estimate for the NPU, not a measurement on a board"


@dataclass(frozen=True, kw_only=True)
class NpuTargetRequest:
    target: tuple = option("--target", default=None, action="append", choices=TARGETS, metavar="NPU",
                           help=f"an Arm Ethos-U NPU and its MACs per cycle, compiled for by Vela (repeatable; needs "
                                f"edge-resnet[ethos-u]): {', '.join(TARGETS)}")


@dataclass(frozen=True)
class CompileRequest(ForceRequest, NpuTargetRequest):
    """An int8 TFLite model to compile for Ethos-U NPUs, and where."""

    model: str = option(metavar="MODEL_int8.tflite", help="a fully integer (int8) .tflite model")
    output: str = option("--output", metavar="DIR", help="folder for the compiled model and its record")
    system_config: str = option("--system-config", default=None, metavar="NAME",
                                help="Vela's system configuration (clocks, memories; default: Vela's for the NPU)")
    memory_mode: str = option("--memory-mode", default=None, metavar="NAME",
                              help="Vela's memory mode (default: Vela's for the NPU)")


@dataclass(frozen=True)
class VelaRun:
    stdout: str
    summary: dict  # the summary CSV's one row
    compiled: bytes  # the Vela-compiled .tflite
    summary_csv: str


def vela_version():
    from importlib import metadata

    try:
        return metadata.version("ethos-u-vela")
    except metadata.PackageNotFoundError:
        raise ConfigError('Vela is not installed: pip install "edge-resnet[ethos-u]"') from None


def check_integer_model(path):
    """Refuse what an Ethos-U cannot run: a float32, float16 or dynamic-range model."""
    from ..device.tflite_inspect import inspect_tflite

    path = Path(path)
    if path.suffix != ".tflite" or not path.is_file():
        raise ConfigError(f"compile takes an int8 .tflite file; not found or not .tflite: {path}")
    structure = inspect_tflite(path)
    if not structure.fully_integer:
        operators = ", ".join(sorted(set(structure.float_ops)) or ["QUANTIZE/DEQUANTIZE inside"])
        raise ConfigError(f"{path.name} is not fully integer (it computes in floating point: {operators}); an "
                          "Ethos-U NPU runs int8 models: give the int8 artifact (edge-resnet convert --quantize int8)")
    return structure


def run_vela(path, target, system_config=None, memory_mode=None):
    """Vela on `path` in a folder of its own; what it printed and wrote."""
    for flag, name in (("--system-config", system_config), ("--memory-mode", memory_mode)):
        if name is not None and not name.strip():  # Vela would take an empty name as its default
            raise ConfigError(f"{flag} is empty; give one of Vela's names, or leave it out for Vela's default")
    vela_version()
    with tempfile.TemporaryDirectory(prefix="edge-resnet-vela-") as folder:
        command = [sys.executable, "-c", RUN_VELA, str(Path(path).resolve()), "--accelerator-config", target,
                   "--output-dir", folder]  # (--show-cpu-operations changes Vela 5.2's operator count; its
        # network summary names each operator left on the CPU without it)
        command += ["--system-config", system_config] if system_config else []
        command += ["--memory-mode", memory_mode] if memory_mode else []
        finished = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        summaries = sorted(Path(folder).glob("*_summary_*.csv"))
        compiled = sorted(Path(folder).glob("*_vela.tflite"))
        if finished.returncode or not summaries or not compiled:
            raise ModelError(f"Vela could not compile {Path(path).name} for {target}: "
                             f"{vela_complaint(finished.stderr + finished.stdout)}")
        summary_csv = summaries[0].read_text()
        return VelaRun(finished.stdout, next(csv.DictReader(summary_csv.splitlines())), compiled[0].read_bytes(),
                       summary_csv)


def vela_complaint(text):
    """The line of Vela's output that says what went wrong (its exception's message, without the class)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and "dynamic signature" not in line]
    errors = [line for line in lines if "Error" in line or "error" in line] or lines or ["no message"]
    return re.sub(r"^[\w.]+(Error|Exception): ", "", errors[-1]).strip("'\"")


def operator_split(stdout):
    """(NPU operators, CPU operators) as Vela's network summary states them."""
    counts = {kind: int(re.search(rf"^{kind} operators = (\d+)", stdout, re.MULTILINE).group(1))
              for kind in ("NPU", "CPU")}
    return counts["NPU"], counts["CPU"]


def cpu_operations(stdout):
    """Each operator Vela left on the CPU: its type, output tensor and Vela's reason."""
    found = re.finditer(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'\n((?:Reason: .*\n?)?(?:[^\n]+\n?)?)",
                        stdout, re.MULTILINE)
    return [{"operator": match.group(1), "tensor": match.group(2),
             "reason": " ".join(match.group(3).replace("Reason: ", "").split())} for match in found]


def vela_defaults(stdout):
    """The settings Vela chose itself because none were given ("Using a default of X")."""
    found = re.findall(r"No (system configuration|memory mode|configuration file) specified\. Using a default of (.*?)\."
                       r" Compilation", stdout)
    return {what.replace(" ", "_"): value.strip("[]'") for what, value in found}


def compile_record(path, target, run):
    summary = run.summary
    npu, cpu = operator_split(run.stdout)
    return {
        "format": "edge-resnet ethos-u compile",
        "source": {"file": Path(path).name, "sha256": file_sha256(path)},
        "target": target,
        "vela": {"version": vela_version(), "accelerator_config": summary["accelerator_configuration"],
                 "system_config": summary["system_config"], "memory_mode": summary["memory_mode"],
                 "defaults_taken": vela_defaults(run.stdout), "core_clock_hz": float(summary["core_clock"])},
        "npu_operators": npu,
        "cpu_operators": cpu,
        "cpu_operator_details": cpu_operations(run.stdout),
        "estimated_inference_ms": 1e3 * float(summary["inference_time"]),
        "estimated_inferences_per_s": float(summary["inferences_per_second"]),
        "estimate": ESTIMATE_NOTE,
        "sram_kib": float(summary["sram_memory_used"]),
        "dram_kib": float(summary["dram_memory_used"]),
        "on_chip_flash_kib": float(summary["on_chip_flash_memory_used"]),
        "off_chip_flash_kib": float(summary["off_chip_flash_memory_used"]),
        "flash_kib": float(summary["on_chip_flash_memory_used"]) + float(summary["off_chip_flash_memory_used"]),
        "weights_in": summary["weights_storage_area"],
        "feature_maps_in": summary["feature_map_storage_area"],
        "macs": int(float(summary["nn_macs"])),
        "cycles_npu": int(float(summary["cycles_npu"])),
    }


def output_names(path, target):
    stem = f"{Path(path).stem}_{target}"
    return {"model": f"{stem}.tflite", "record": f"{stem}.json", "summary": f"{stem}_vela_summary.csv"}


def compile_for_npu(request):
    """Compile an int8 TFLite model for an Arm Ethos-U NPU with Vela (offline, no TensorFlow).

    For each --target, writes the Vela-compiled .tflite, Vela's summary CSV and a JSON record:
    the operators on the NPU and those left on the CPU (with Vela's reason),
    Vela's estimated inference time, SRAM and flash use, the Vela version and
    configuration (the defaults it took named). The estimate is Vela's
    performance model, not a measurement. Returns the records.
    """
    if not request.target:
        raise ConfigError(f"compile needs --target NPU, one of {', '.join(TARGETS)}")
    output = Path(request.output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file; give a folder")
    names = [name for target in request.target for name in output_names(request.model, target).values()]
    existing = [name for name in names if (output / name).exists()]
    if existing and not request.force:
        raise ConfigError(f"{output / existing[0]} exists; add --force to replace it")
    check_integer_model(request.model)
    for target in request.target:
        check_config_family(request.system_config, target)
    runs = {target: run_vela(request.model, target, request.system_config, request.memory_mode)
            for target in dict.fromkeys(request.target)}  # every target compiles before anything is written
    return [write_compiled(request.model, target, run, output) for target, run in runs.items()]


def check_config_family(system_config, target):
    """Refuse a Vela system configuration named for another Ethos-U family than `target`: Vela takes it and
    estimates with another NPU's clocks and memories (an Ethos-U85 config made a U55's estimate 13x faster)."""
    import re

    named = re.search(r"U(55|65|85)", system_config or "", re.IGNORECASE)
    family = re.search(r"u(55|65|85)", target)
    if named and family and named.group(1) != family.group(1):
        raise ConfigError(f"--system-config {system_config} is for the Ethos-U{named.group(1)}, not the {target}; "
                          f"give one of Vela's Ethos_U{family.group(1)} system configurations, or leave it out for Vela's "
                          "default")


def compile_into(model, target, folder, system_config=None, memory_mode=None):
    """Vela's compiled model, its summary CSV and our record, written into
    `folder` once Vela has finished; the record."""
    return write_compiled(model, target, run_vela(model, target, system_config, memory_mode), folder)


def write_compiled(model, target, run, folder):
    names = output_names(model, target)
    record = {**compile_record(model, target, run), "files": names}
    for key, content in (("model", run.compiled), ("summary", run.summary_csv.encode()),
                         ("record", (json.dumps(record, indent=2) + "\n").encode())):
        with atomic_output(Path(folder) / names[key]) as temporary:
            Path(temporary).write_bytes(content)
    return record


def describe_compile(record):
    """The line `edge-resnet compile` prints."""
    vela = record["vela"]
    total = record["npu_operators"] + record["cpu_operators"]
    left = ""
    if record["cpu_operators"]:
        left = " (on the CPU: " + ", ".join(sorted({op["operator"] for op in record["cpu_operator_details"]})) + ")"
    return (f"{record['source']['file']} for {record['target']} ({vela['system_config']}, {vela['memory_mode']}; "
            f"Vela {vela['version']}): {record['npu_operators']}/{total} operators on the NPU{left}; "
            f"estimated {record['estimated_inference_ms']:.2f} ms ({record['estimated_inferences_per_s']:.0f}/s, "
            f"Vela's estimate, not measured); SRAM {record['sram_kib']:.1f} KiB, "
            f"{'flash' if record['flash_kib'] else 'DRAM'} {record['flash_kib'] or record['dram_kib']:.1f} KiB "
            f"(weights in {record['weights_in']})")
