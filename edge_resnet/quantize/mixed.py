"""An accuracy budget met with the fewest float parts (`--min-sqnr DB`).

When the full-int8 TFLite falls short of the output SQNR a user needs, parts
of the network are kept in float32 (their operators run between a
DEQUANTIZE and a QUANTIZE; XNNPACK runs int8 and float operators in one
graph) until the budget is met. The parts are the network's own: the stem
(conv1, pool1), each residual block (convN_blockM, its convolutions and its
addition), the head (pooling and classifier).

Everything is measured on held-out calibration images, never on the
evaluation images: ranges come from the other calibration images (the
statistics' folds), each candidate is quantized into the real artifact and
run on XNNPACK. Each part is first tried alone (its real effect, one
quantization per part); then, step by step, the few best remaining parts are
tried again on top of those already in float and the best is kept
(re-ranked as it goes). Every step records the held-out SQNR, the number of
float operators and the artifact's latency here.
"""

import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .ranges import activation_ranges
from .statistics import read_flatbuffer

CONFIRMED_PER_STEP = 4  # parts re-measured on top of the current float set at each step
LATENCY_RUNS = 20
BLOCK = re.compile(r"(conv\d+_block\d+)_")


@dataclass(frozen=True)
class Step:
    float_parts: tuple  # names of the parts in float32, in the order they were chosen
    sqnr_db: float  # output SQNR on the held-out calibration images
    float_operators: int
    p50_ms: float  # batch-1 median latency on this machine
    fully_delegated: bool  # XNNPACK runs the whole graph

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class MixedSearch:
    budget_db: float
    held_out_images: int
    steps: tuple  # Step, the all-int8 artifact first
    alone_gain_db: dict  # part -> SQNR gain when it alone is float
    parts: dict  # part -> the operator scopes it holds
    excluded: dict  # part -> why it was not tried

    @property
    def best(self):
        return max(self.steps, key=lambda step: step.sqnr_db)

    @property
    def chosen(self):
        """The first step that meets the budget, else the best one."""
        return next((step for step in self.steps if step.sqnr_db >= self.budget_db), self.best)

    @property
    def met(self):
        return self.chosen.sqnr_db >= self.budget_db

    def float_scopes(self):
        return tuple(scope for part in self.chosen.float_parts for scope in self.parts[part])

    def record(self):
        chosen = self.chosen
        return {"budget_sqnr_db": self.budget_db, "met": self.met, "held_out_images": self.held_out_images,
                "scored_on": "held-out calibration images (ranges from the other calibration images)",
                "float_parts": [{"part": part, "operators": len(self.parts[part]),
                                 "gain_alone_db": self.alone_gain_db.get(part)} for part in chosen.float_parts],
                "not_tried": self.excluded, "gain_alone_db": self.alone_gain_db,
                "steps": [step.to_dict() for step in self.steps]}



def chosen_step(record):
    """The step of a mixed_precision record whose parts the artifact keeps in float32."""
    parts = [entry["part"] for entry in record["float_parts"]]
    return next(step for step in record["steps"] if list(step["float_parts"]) == parts)


def describe_record(record):
    """One line on a mixed_precision record (the artifact's recipe JSON)."""
    chosen, first = chosen_step(record), record["steps"][0]
    budget, images = record["budget_sqnr_db"], record["held_out_images"]
    if not chosen["float_parts"]:
        return f"--min-sqnr {budget:g}: met by full int8 ({first['sqnr_db']:.1f} dB on {images} held-out calibration images)"
    verdict = "met" if record["met"] else "NOT met; the best found"
    return (f"--min-sqnr {budget:g}: {verdict} with {len(chosen['float_parts'])} part(s) in float32 "
            f"({', '.join(chosen['float_parts'])}; {chosen['float_operators']} operators): {chosen['sqnr_db']:.1f} dB "
            f"vs {first['sqnr_db']:.1f} dB full int8 on {images} held-out calibration images; "
            f"{chosen['p50_ms']:.2f} ms vs {first['p50_ms']:.2f} ms here")


def part_of(scope, seen_block):
    """The part an operator belongs to, from its output tensor names."""
    found = BLOCK.search(scope)
    if found:
        return found.group(1)
    return "head" if seen_block else "stem"


def model_parts(float_model_bytes):
    """{part: (operator scopes, in graph order)} of a float TFLite ResNet."""
    subgraph = read_flatbuffer(float_model_bytes).subgraphs[0]
    parts, seen_block = {}, False
    for operator in subgraph.operators:
        scope = ";".join(subgraph.tensors[index].name.decode() for index in operator.outputs)
        part = part_of(scope, seen_block)
        seen_block = seen_block or part not in ("stem", "head")
        parts.setdefault(part, []).append(scope)
    return {part: tuple(scopes) for part, scopes in parts.items()}


def output_sqnr_db(reference, outputs):
    reference, outputs = np.asarray(reference, np.float64), np.asarray(outputs, np.float64)
    noise = float(np.sum((reference - outputs) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference**2) / noise))


def check_budget(min_sqnr):
    if min_sqnr is not None and not (np.isfinite(min_sqnr) and 0 < min_sqnr < 200):
        raise ConfigError(f"--min-sqnr is the output SQNR to reach, in dB (e.g. 30). Received: {min_sqnr}")


def search_float_parts(float_model, statistics, calibration, recipe, method, budget_db, log=print):
    """The MixedSearch for `budget_db` (held-out output SQNR) of the int8
    TFLite of `float_model` (bytes) under `recipe`, ranges by `method`."""
    from ..device.bench import benchmark
    from ..device.tflite_inspect import inspect_tflite
    from .int8_tflite import int8_tflite, run_tflite_bytes
    from .selection import calibration_inputs, no_folds_reason

    check_budget(budget_db)
    if calibration is None:
        raise ConfigError("--min-sqnr runs candidates on held-out calibration images: give --calibration PATH "
                          "(the images the statistics came from)")
    if statistics.folds is None:
        raise ConfigError(f"--min-sqnr measures on held-out calibration images: {no_folds_reason(statistics)}; "
                          "calibrate on more images")
    held_out = list(statistics.folds[0].positions)
    ranges = activation_ranges(statistics.fitting_part(0), method)
    inputs = calibration_inputs(calibration, statistics)[held_out]
    reference = run_tflite_bytes(float_model, inputs, "the float model")
    parts = model_parts(float_model)
    excluded = {}
    if recipe.output_type != "float32" and "head" in parts:
        # a float classifier would make the model's output float32, not the --output-type asked for
        excluded["head"] = f"its output would become float32, not {recipe.output_type}; --output-type float32 allows it"

    def quantized(float_parts):
        return int8_tflite(float_model, ranges, recipe, [scope for part in float_parts for scope in parts[part]])

    def score(float_parts):
        return output_sqnr_db(reference, run_tflite_bytes(quantized(float_parts), inputs, "a candidate"))

    def step(float_parts, sqnr):
        with tempfile.TemporaryDirectory(prefix="edge-resnet-mixed-") as folder:
            path = Path(folder) / "candidate.tflite"
            path.write_bytes(quantized(float_parts))
            structure = inspect_tflite(path)
            timing = benchmark(path, warmup=5, runs=LATENCY_RUNS, reset_peak=False)
        return Step(tuple(float_parts), sqnr, len(structure.float_ops), timing.latency_ms["p50"],
                    structure.fully_delegated)

    steps = [step((), score(()))]
    log(f"      --min-sqnr {budget_db:g}: full int8 gives {steps[0].sqnr_db:.1f} dB on {len(held_out)} held-out "
        "calibration images")
    alone = {}
    if steps[0].sqnr_db < budget_db:
        alone = {part: score((part,)) - steps[0].sqnr_db for part in parts if part not in excluded}
    order = sorted(alone, key=lambda part: -alone[part])
    chosen = []
    while alone and steps[-1].sqnr_db < budget_db and order:
        tried = {part: score((*chosen, part)) for part in order[:CONFIRMED_PER_STEP]}
        best = max(tried, key=tried.get)
        chosen.append(best)
        steps.append(step(chosen, tried[best]))
        log(f"      float32 {', '.join(chosen)}: {tried[best]:.1f} dB, {steps[-1].p50_ms:.2f} ms")
        order = sorted((part for part in order if part != best),
                       key=lambda part: -(tried[part] - steps[-2].sqnr_db if part in tried else alone[part]))
    return MixedSearch(budget_db, len(held_out), tuple(steps), alone, parts, excluded)
