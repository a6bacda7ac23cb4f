"""Activation ranges from collected statistics: the range method is chosen
after calibration, so trying another one never runs the model again.

- minmax: the exact extremes seen (what the TFLite converter and
  onnxruntime's MinMax calibrator use);
- percentile: the given percentile of the values at the top (and, for a
  tensor with negative values, the mirrored one at the bottom): a few
  outliers no longer stretch the int8 grid for everything else;
- mse: per tensor, the clip that minimises the expected squared error of
  8-bit quantization (clipping plus rounding), searched over tail fractions;
- extrapolated: min/max pushed out by `extrapolation` times the gap between
  the extreme and the median of the per-sample extremes. Min/max clips the
  images it has not seen (a calibration set's largest value is rarely the
  population's): the more the per-sample extremes scatter, the further new
  images reach, and a steady tensor (the input, say) keeps its range;
- consensus: per tensor, the median over the other candidates of `auto`
  of their ranges (low and high apart): no rule's extreme;
- auto (the default): each of CANDIDATES is tried on the user's own model
  and held-out calibration images, and the best is used (selection.py; for
  the TFLite of a model ending in a softmax, all but extrapolated).

Any method may take `output="minmax"`: the graph's output tensors then keep
their exact min/max. Clipping the tensor that *is* the output (logits) costs
what clipping inside the network (before a softmax, say) does not.

A rule that holds the extremes seen (minmax, extrapolated) may also take
`room=K`: each range then reaches at least where the largest (smallest)
of K times as many samples as the calibration's typically lies
(tail_room), read off how the largest per-sample extremes spread. A few
deployed images past every calibration image's extremes can rule a logits
head's error (benchmarks/results/tail_clipping.md); widening for them costs
every other image resolution, so it is no default and `auto` does not try
it (benchmarks/results/tail_room.md). The clipping rules take no room: it
holds the extremes, so it would undo their clipping (on four softmax heads
whose `auto` choice clipped, min/max with room cost 2-4 dB). On `auto` the
candidates are tried as they are and room_for() gives the chosen one its
room where it is a rule that takes it.

Whatever the method, the logits an output softmax reads start no lower than
softmax_input_floor: the int8 softmax writes 0 for every logit far enough
below its image's top one, so the grid spends no steps down there.
"""

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

AUTO = "auto"
RULES = ("minmax", "percentile", "mse", "extrapolated", "consensus")  # a range from one tensor's statistics
METHODS = (AUTO,) + RULES
OUTPUT_RULES = (None, "minmax")  # what the graph's output tensors take: the method's own range, or min/max
# how `auto` scores a rule on the held-out images (selection.score_db): the output SQNR pooled over them, or the
# mean of each image's output SQNR in dB
AUTO_SCORES = ("pooled", "per-image")
DEFAULT_AUTO_SCORE = AUTO_SCORES[0]
DEFAULT_METHOD = AUTO
DEFAULT_PERCENTILE = 99.99
DEFAULT_EXTRAPOLATION = 0.25
LEVELS = 256  # int8 / uint8
# A range no narrower than this: LiteRT quantizes a fused ReLU6's bound with the tensor's scale into an int32 and
# refuses to load a model where 6 / scale overflows it (a tensor of ~1e-9 values, as random weights can make)
MINIMUM_SPAN = 1e-8 * (LEVELS - 1)
SOFTMAX_OUTPUT_LEVELS = 256  # an int8 softmax output's steps over [0, 1] (scale 1/256, TFLite's and onnxruntime's)
MSE_TAILS = np.concatenate([[0.0], np.logspace(-7, -2, 41)])  # fraction clipped from each tail
TAIL_TOP = 5  # the per-sample extremes whose spread reads a tail's scale (tail_room)
ROOMY_RULES = ("minmax", "extrapolated")  # the rules that hold the extremes seen: those that take room
MAXIMUM_ROOM = 1e6  # room for at most this many times the calibration images


@dataclass(frozen=True)
class RangeMethod:
    name: str = DEFAULT_METHOD
    percentile: float = DEFAULT_PERCENTILE  # "percentile" only
    extrapolation: float = DEFAULT_EXTRAPOLATION  # "extrapolated" only
    output: str = None  # "minmax": the graph's output tensors keep their exact min/max
    room: float = None  # ranges reach where the extremes of `room` times the calibration images lie (tail_room)
    score: str = None  # auto only: how it scores its candidates (AUTO_SCORES; None: the default, pooled)

    def __post_init__(self):
        if self.name not in METHODS:
            raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}. Received: {self.name!r}")
        if self.output not in OUTPUT_RULES or (self.output and self.name == AUTO):
            raise ConfigError(f"the output tensors' range rule must be minmax or none, on a method other than auto. "
                              f"Received: {self.output!r}")
        if not (_is_number(self.percentile) and 50 < self.percentile <= 100):
            raise ConfigError(
                f"the percentile must be above 50 and at most 100 (e.g. 99.99). Received: {self.percentile!r}"
            )
        if not (_is_number(self.extrapolation) and 0 <= self.extrapolation <= 4):
            raise ConfigError(f"the extrapolation must be between 0 and 4 (e.g. 0.25). Received: {self.extrapolation!r}")
        if self.room is not None and not (_is_number(self.room) and 1 <= self.room <= MAXIMUM_ROOM):
            raise ConfigError(f"the tail room must be how many times the calibration images to make room for, from 1 "
                              f"to {MAXIMUM_ROOM:g} (e.g. 10). Received: {self.room!r}")
        if self.score is not None and self.score not in AUTO_SCORES:
            raise ConfigError(f"auto's score must be one of {', '.join(AUTO_SCORES)}. Received: {self.score!r}")
        if self.score is not None and self.name != AUTO:
            raise ConfigError(f"--calibration-score says how auto scores the rules it tries; --calibration-method "
                              f"{self.name} tries none: leave --calibration-score out or use --calibration-method "
                              "auto")
        if self.room is not None and not (self.name == AUTO or self.takes_room):
            why = (f"{self.name} clips them on purpose" if self.name not in ROOMY_RULES else
                   f"output={self.output!r} keeps the outputs' exact min/max")
            raise ConfigError(f"the tail room widens ranges that hold the extremes seen (minmax, extrapolated, or the "
                              f"one of them auto chooses); {why}: leave out --tail-room or choose one of those")

    @property
    def takes_room(self):
        """Whether this rule holds the extremes seen (ROOMY_RULES, no output rule): the rules a tail room widens."""
        return self.name in ROOMY_RULES and not self.output

    @property
    def parameter(self):
        """(name, value) of the parameter this method uses, or None."""
        return {"percentile": ("percentile", self.percentile),
                "extrapolated": ("extrapolation", self.extrapolation)}.get(self.name)

    def to_dict(self):
        return {"method": self.name, **dict([self.parameter] if self.parameter else []),
                **({"output": self.output} if self.output else {}), **({"room": self.room} if self.room else {}),
                **({"score": self.score} if self.score else {})}

    @classmethod
    def from_dict(cls, data):
        return cls(data["method"], output=data.get("output"), room=data.get("room"), score=data.get("score"),
                   **{key: data[key] for key in ("percentile", "extrapolation") if key in data})

    @property
    def auto_score(self):
        return self.score or DEFAULT_AUTO_SCORE

    def describe(self):
        name = f"{self.name} {self.parameter[1]:g}" if self.parameter else self.name
        name = f"{name} scored per image" if self.score == "per-image" else name
        name = f"{name} inside, {self.output} on the output" if self.output else name
        return f"{name}, room for {self.room:g}x the images" if self.room else name


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


# What `auto` tries, in this order (the first of equal scores wins). Fixed
# and general: the rules of the field, not a list fitted to our models.
CANDIDATES = (
    RangeMethod("minmax"),
    RangeMethod("extrapolated", extrapolation=0.25),
    RangeMethod("percentile", percentile=99.999),
    RangeMethod("percentile", percentile=99.99),
    RangeMethod("mse"),
    RangeMethod("percentile", percentile=99.999, output="minmax"),
    RangeMethod("percentile", percentile=99.99, output="minmax"),
    RangeMethod("mse", output="minmax"),
    RangeMethod("consensus"),
)


def quantile(tensor, fraction):
    """The value below which `fraction` of the histogrammed values lie,
    interpolated within its bin and kept inside the exact min/max."""
    return float(quantiles(tensor, [fraction])[0])


def quantiles(tensor, fractions):
    """quantile() of each of `fractions`, in one pass over the histogram."""
    lower, upper, counts = tensor.histogram
    cumulative = np.cumsum(counts)
    targets = np.asarray(fractions, np.float64) * cumulative[-1]
    positions = np.minimum(np.searchsorted(cumulative, targets, side="left"), len(counts) - 1)
    before = np.where(positions > 0, cumulative[positions - 1], 0)
    within = (targets - before) / counts[positions]
    values = lower[positions] + within * (upper[positions] - lower[positions])
    return np.clip(values, tensor.minimum, tensor.maximum)


def tail_range(tensor, tail):
    """Clip `tail` of the values at the top and, where the tensor goes
    negative, the same fraction at the bottom."""
    return tail_ranges(tensor, [tail])[0]


def tail_ranges(tensor, tails):
    """tail_range() of each of `tails`."""
    tails = np.asarray(tails, np.float64)
    highs = quantiles(tensor, 1 - tails)
    lows = quantiles(tensor, tails) if tensor.minimum < 0 else np.full(len(tails), tensor.minimum)
    return [(tensor.minimum, tensor.maximum) if tail <= 0 else (float(low), float(high))
            for tail, low, high in zip(tails, lows, highs)]


def quantization_error(tensor, low, high):
    """Expected squared error per value of 8-bit quantization on [low, high]
    (the grid always holds zero): rounding noise inside, distance outside.
    Bin midpoints stand for the values of a bin."""
    low, high = min(low, 0.0), max(high, 0.0)
    step = (high - low) / (LEVELS - 1)
    lower, upper, counts = tensor.histogram
    values = (lower + upper) / 2
    clipped = np.clip(values, low, high)
    per_value = (values - clipped) ** 2 + np.where(values == clipped, step * step / 12, 0.0)
    return float(np.sum(per_value * counts) / np.sum(counts))


def mse_range(tensor):
    candidates = tail_ranges(tensor, MSE_TAILS)
    errors = [quantization_error(tensor, low, high) for low, high in candidates]
    return candidates[int(np.argmin(errors))]


def extrapolated_range(tensor, extrapolation):
    high = tensor.maximum + extrapolation * (tensor.maximum - float(np.median(tensor.sample_maxima)))
    if tensor.minimum >= 0:
        return tensor.minimum, high
    return tensor.minimum - extrapolation * (float(np.median(tensor.sample_minima)) - tensor.minimum), high


def tensor_range(tensor, method):
    if method.name == AUTO:
        raise ConfigError("'auto' is not a range rule: selection.resolved_ranges() picks one of the candidates")
    if method.name == "minmax":
        return tensor.minimum, tensor.maximum
    if method.name == "percentile":
        return tail_range(tensor, 1 - method.percentile / 100)
    if method.name == "extrapolated":
        return extrapolated_range(tensor, method.extrapolation)
    return mse_range(tensor)


def tail_extremes(tensor):
    """(the TAIL_TOP smallest per-sample minima, ascending; the TAIL_TOP largest maxima, ascending): fewer where
    fewer samples were seen."""
    return np.sort(tensor.sample_minima)[:TAIL_TOP], np.sort(tensor.sample_maxima)[-TAIL_TOP:]


def tail_scale(extremes):
    """An exponential tail's scale read off its k largest values (`extremes`, the largest last): they spread over
    1 + 1/2 + ... + 1/(k - 1) of it on average. 0 for fewer than two."""
    if len(extremes) < 2:
        return 0.0
    return float(abs(extremes[-1] - extremes[0]) / sum(1 / k for k in range(1, len(extremes))))


def tail_room(tensor, ahead):
    """(low, high) where the smallest and the largest of `ahead` times as
    many samples as the calibration's typically lie: past an exponential
    tail's largest of n values, the largest of ahead * n lies log(ahead) of
    its scale further out on average (about half of such sets reach past
    it). The scale comes from the per-sample maxima's top (the minima's
    bottom, where the tensor goes negative)."""
    bottom, top = tail_extremes(tensor)
    high = float(top[-1] + math.log(ahead) * tail_scale(top))
    if tensor.minimum >= 0:
        return tensor.minimum, high
    return float(bottom[0] - math.log(ahead) * tail_scale(bottom[::-1])), high


def room_for(method, room):
    """`method` with `room` where it is a rule that takes room (ROOMY_RULES, without an output rule), else as it
    is: auto's chosen rule gets the room asked for only where it holds the extremes seen."""
    if room is None or not method.takes_room:
        return method
    return dataclasses.replace(method, room=room)


def consensus_range(tensor, is_output):
    """The median low and median high of the other candidates' ranges."""
    rules = [rule for rule in CANDIDATES if rule.name != "consensus"]
    ranges = [(tensor.minimum, tensor.maximum) if rule.output and is_output else tensor_range(tensor, rule)
              for rule in rules]
    return float(np.median([low for low, _ in ranges])), float(np.median([high for _, high in ranges]))


def softmax_input_floor(tensor, classes, high):
    """The lowest value an output softmax's int8 input (the logits) needs.

    A logit more than ln(2 * 256 * (classes - 1)) below its image's top one
    has a probability under half an output step: the int8 softmax writes 0
    for it whatever its value, and the classes - 1 of them raised to that
    floor move the others' outputs by under half a step together. So the
    floor lies that far below the lowest top logit of the calibration
    images (or below `high`, the range's top, where that clips the top
    logits), and never above zero (the int8 grid holds it). An image whose
    top logit lies below every calibration image's gets less than that
    margin: the floor is measured on calibration images, as every range is."""
    lowest_top = min(float(np.min(tensor.sample_maxima)), high)
    return min(lowest_top - math.log(2 * SOFTMAX_OUTPUT_LEVELS * max(classes - 1, 1)), 0.0)


def activation_ranges(statistics, method):
    """{tensor name: (low, high)} for every tensor in `statistics`."""
    minmax = RangeMethod("minmax")
    softmax_input = statistics.softmax_input

    def by_rule(tensor):
        is_output = tensor.name in statistics.graph_outputs
        if method.output and is_output:
            return tensor_range(tensor, minmax)
        return consensus_range(tensor, is_output) if method.name == "consensus" else tensor_range(tensor, method)

    def roomy(tensor):
        low, high = by_rule(tensor)
        if method.room is None:
            return low, high
        room_low, room_high = tail_room(tensor, method.room)
        return min(low, room_low), max(high, room_high)

    def one(tensor):
        low, high = roomy(tensor)
        if softmax_input and tensor.name == softmax_input.tensor:
            low = max(low, softmax_input_floor(tensor, softmax_input.classes, high))
        return low, max(high, low + MINIMUM_SPAN)

    return holding_their_inputs({tensor.name: one(tensor) for tensor in statistics.tensors},
                                statistics.concatenations)


def holding_their_inputs(ranges, concatenations):
    """`ranges` with each concatenation's output ranged over all of its
    inputs' ranges (in graph order, so a chain of them holds what the first
    held), then that range given back to its inputs (in reverse order, so a
    whole chain shares its last range). A concatenation computes nothing:
    its values are its inputs'. A range of its own clipped what they had
    kept, and inputs of other ranges were requantized into it, once per
    concatenation of a chain (DenseNet121's dense blocks chain up to 24),
    rounding the first features again at each. On a DenseNet121 trained on
    digits (benchmarks/results/concat_ranges.md) minmax scored 6-9 dB under
    the raw TFLite converter, which shares one scale along a concatenation;
    percentile 99.999 from 200 images lost 8.7 dB to minmax (session 39).
    `concatenations`: (output name, input names) pairs in graph order
    (ActivationStatistics.concatenations)."""
    ranges = dict(ranges)
    for output, inputs in concatenations:
        if output in ranges and all(name in ranges for name in inputs):
            ranges[output] = (min(ranges[name][0] for name in inputs), max(ranges[name][1] for name in inputs))
    for output, inputs in reversed(concatenations):
        if output in ranges and all(name in ranges for name in inputs):
            ranges.update((name, ranges[output]) for name in inputs)
    return ranges


def ranges_fingerprint(ranges):
    """SHA-256 of the ranges, rounded to float32 (what the artifacts store)."""
    rows = {name: [float(np.float32(low)), float(np.float32(high))] for name, (low, high) in sorted(ranges.items())}
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def ranges_record(statistics, method, ranges, selection=None, int8_logits=True):
    """What an artifact's recipe JSON says about its activation ranges;
    `selection` (auto only) says what was tried, how each scored, and which
    rule `method` was chosen. `int8_logits`: whether the artifact's output
    softmax reads int8 logits (the TFLite's but a float head's; the ONNX
    keeps them float)."""
    rule = method.to_dict() if selection is None else {"method": AUTO, "chosen": method.to_dict(),
                                                       "selection": selection}
    softmax_input = statistics.softmax_input if int8_logits else None
    return {**rule, "ranges_fingerprint": ranges_fingerprint(ranges), "statistics": statistics.describe(),
            "tensors": len(ranges), **softmax_floor_record(statistics, softmax_input, ranges)}


def softmax_floor_record(statistics, softmax_input, ranges):
    """{"softmax_input": what the floor under it is and the low its range took}, or {} without one."""
    if softmax_input is None or softmax_input.tensor not in ranges:
        return {}
    low, high = ranges[softmax_input.tensor]
    tensor = next(tensor for tensor in statistics.tensors if tensor.name == softmax_input.tensor)
    return {"softmax_input": {"tensor": softmax_input.tensor, "classes": softmax_input.classes,
                              "floor": softmax_input_floor(tensor, softmax_input.classes, high), "low": low,
                              "why": "the int8 softmax writes 0 for logits this far below an image's top one"}}
