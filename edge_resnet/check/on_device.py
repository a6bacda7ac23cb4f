"""Artifacts checked on boards over SSH (`compare --device`, `convert
--device`): the evaluation images go to the board once, as one .npy cached
there by SHA-256; the artifacts run there and their outputs come back; the
metrics are computed here by the same code as a local compare, so the board
needs numpy and a runtime only (no image decoder, no golden outputs)."""

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..device.remote import DeviceFile, run_on_devices

DEVICE_BATCH = 32  # images per call on the board (TFLite runs them one by one anyway)
DEVICE_THREADS = 2  # as a local compare runs its artifacts


@dataclass(frozen=True)
class DeviceRunner:
    """An artifact's outputs on the whole evaluation set, computed on a board."""

    path: Path
    runtime: str
    input_shape: tuple
    rows: np.ndarray
    device: str  # the board's label

    def outputs(self, start, batch):
        return self.rows[start:start + len(batch)]


@dataclass(frozen=True)
class DeviceRuns:
    runners: list  # one DeviceRunner per artifact per board, board by board
    devices: list  # per board: its identity, and each artifact's median batch-1 latency there


def write_inputs(data, path):
    """The ImageSet's model inputs as one float32 .npy, written batch by batch."""
    first = next(data.samples())
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(data), *first.shape))
    start = 0
    for batch in data.with_batch_size(DEVICE_BATCH):
        array[start:start + len(batch)] = batch
        start += len(batch)
    array.flush()
    del array
    return path


def run_on_boards(targets, artifacts, data, latency_runs, clear_cache=False):
    """Each artifact's outputs on `data` and its batch-1 latency, on every board."""
    with tempfile.TemporaryDirectory(prefix="edge-resnet-device-") as folder:
        inputs = DeviceFile.of(write_inputs(data, Path(folder) / "inputs.npy"))
        files = [DeviceFile.of(path) for path in artifacts]
        job = {"kind": "outputs", "inputs": inputs.sha256, "batch_size": DEVICE_BATCH, "threads": DEVICE_THREADS,
               "latency_runs": latency_runs,
               "models": [{"sha256": item.sha256, "suffix": item.suffix, "name": Path(item.path).name}
                          for item in files]}
        answers = run_on_devices(targets, job, [*files, inputs], clear_cache)
    runners, devices = [], []
    for answer in answers:
        records = answer.result["models"]
        for path, record, payload in zip(artifacts, records, answer.payloads):
            rows = np.load(io.BytesIO(payload), allow_pickle=False)
            runners.append(DeviceRunner(Path(path), record["runtime"], tuple(record["input_shape"]), rows,
                                        answer.target.label))
        latencies = {record["name"]: record["p50_ms"] for record in records if "p50_ms" in record}
        devices.append({**answer.device, "runs": latency_runs, "p50_ms": latencies,
                        "uploaded_bytes": answer.uploaded_bytes})
    return DeviceRuns(runners, devices)
