"""An accuracy budget met with few float32 operators (`--min-sqnr DB`,
`--min-sqnr-gain DB`, `--max-accuracy-drop POINTS`, `--min-agreement
FRACTION`). A gain is made a level once full int8 is measured (Budget.over):
full int8's held-out SQNR plus the gain, the same level for every search of
the artifact after it.

When the full-int8 artifact falls short of what a user needs,
parts of the network are kept in float32 until the budget is met: in the
TFLite, their operators run between a DEQUANTIZE and a QUANTIZE (XNNPACK
runs int8 and float operators in one graph); in the ONNX, onnxruntime leaves
their nodes out of quantization (a Route says how each format does it). The
parts are the network's own: in a ResNet (layers named convN_blockM_...)
the stem (conv1, pool1), each residual block (its convolutions and its
addition), the head (pooling and classifier); in any other network the
spans between the points where one tensor carries everything on (a
residual block's output, or one layer's in a chain: graph_parts), each
with at least one weight layer, the last of them (the one writing the
output) the head.

Everything is measured on held-out calibration images, never on the
evaluation images: every calibration image is scored, each by a candidate
whose ranges came from the other three quarters of them (the statistics'
folds), quantized into the real artifact and run by its runtime (XNNPACK,
onnxruntime's CPU provider), its biases corrected on the three quarters
its ranges came from as the artifact's are on all of them (where the
recipe corrects them: so full int8 is the default's own). All images, not
one quarter: a softmax's error sits in the few images it is unsure of
(five images carry three quarters of it on the trained ResNets of
benchmarks/mixed_precision.py), so a quarter of 200 images misjudged the
evaluation SQNR by up to 25 dB, all of them by up to 12 (the same
benchmark's models). Each part is first tried alone (its effect on the
candidates as quantized, four quantizations per candidate, one per fold:
a correction costs more than a candidate); then,
step by step, the few best remaining parts and the neighbours of those already in float (two float neighbours keep the
tensor between them in float) are tried on top of the float set, and the
best is kept (re-ranked as it goes); the search gives up after three steps
without a better score (an int8 output's grid, for one, no part removes:
a budget above what it allows stops the search before any part, below). Once the budget is met, each part is tried back in int8 (the
latest in the graph first), and one the others make redundant stays int8;
then each convolution of the float parts with the operators after it (its
activation, the block's addition) likewise; and with `auto`
(--fallback-precision), each convolution still in float32 is tried in
dynamic-range int8 and stays there where the budget holds. The artifact
keeps the step that meets the budget with the fewest operators out of int8
(then the fewest of them in float32), else the best step. Every step
records the held-out SQNR, top-1
agreement (and, for --max-accuracy-drop, the top-1 accuracy drop against the
labels), the number of float operators, the artifact's latency here, and on
how few images half its gain over full int8 rests.

A step whose gain rests on FRAGILE_GAIN_IMAGES images or fewer does not meet
an SQNR budget that full int8 misses: it measures how the few images a
softmax is unsure of moved, and other images see far less of it (on the demo
ResNet-50 with a softmax head, one block in float gained 4.9 dB on the 200
calibration images, half of it on one image, and lost 0.4 dB on 397 others;
single blocks with such gains averaged +1 dB there, benchmarks/results/
mixed_precision.md, part_gains).

While the head is int8 (an int8 or uint8 output), its grids stay whatever
runs in float before it: the output's own, and a softmax head's int8 input.
Their error alone (the float model's outputs put through them, on the same
held-out images: grid_sqnrs) caps the output SQNR, and a budget above that
cap stops the search at once, one line saying so and what a float32 output
(the head alone in float32, no such grid) reaches instead. Full int8 +
3 dB lay above that cap on five of the eight trained models of
benchmarks/mixed_precision.py (grid_cap), where the search had kept 9-17
parts out of int8 and still missed on the evaluation images on four.

So on a softmax head the output SQNR is judged from the logits (the
softmax's input, read from the same run): full int8's output SQNR as
measured, plus what a step gains in its logits' error (judged_sqnr): each
image's logits error over full int8's, the ratios averaged with each image
weighted by how unsure the float model is of it (error_ratio_gain_db). That
gain is measured on every image, not on the few the probabilities' error
sits in. Until session 56 the gain was the mean over images of each
image's logits SQNR in dB: on the eight softmax ResNet-50 searches judged
on 2300 or 10,000 evaluation images it ran 0.7-2.2 dB over the
probabilities' gain on six of them (averaged over each search's steps),
on those very images too (a bias, not noise: a mean of dB lets the many
images that gain much outweigh the few that gain little); the weighted
ratios ran within 0.5 dB on all eight from the calibration images (on the
evaluation images themselves 0.5-1.1 dB under on three), and on the
validation networks they were further off than the mean of dB, under by
1.3 dB on the one judged on 2300 images: a search then keeps more than it
needs, not less (benchmarks/results/softmax_estimates.md,
softmax_estimates_validation.md). The candidates of a step are still
ranked by the mean of dB (ranked_sqnr), in which no image moves the mean
by more than its own change over the number of images: ranked by the
ratios too (measured once, session 56's note), the MNIST ResNet-50 w0.25
softmax search picked parts that gained -0.08 dB on the evaluation images.
The gain lowers full int8's error but the int8 output grid's share (1/256
steps of probability), which no part changes; the int8 logits' grid is in
the logits' error, so their gain stops there (an earlier estimate
ignored the output grid and could pass the cap). It assumes a
part's gain on the unsure images is the typical unsure image's.

What the parts run in, in the TFLite (--fallback-precision): float32, or
dynamic-range int8, which keeps a part's convolutions' weights int8 and
quantizes their input per image at run time (XNNPACK's dynamically
quantized kernels), float32 between them. On a CPU with int8 dot products
float32 is the expensive way up: on an Intel Xeon with AVX-512 VNNI and
AMX the 224 ResNet-50 runs 7.5x slower in float32 than in int8, while a
dynamic part costs a fraction of that (benchmarks/results/
mixed_precision.md). `auto` searches dynamic parts first and float32 parts
when those cannot meet the budget. Under a float32 output a dynamic-range
head's classifier writes the output itself, as a float32 one does
(int8_tflite.without_output_requantization). The ONNX's parts are float32.

Parts are ranked by output SQNR whatever the budget: on a few hundred
calibration images top-1 agreement moves in steps of one image and ties most
parts, while the SQNR orders them; the budget decides when to stop.

The chosen step's held-out SQNR is not lowered for the luck of its picks
(each part was the best of its step on these images). An estimate of that
luck from the images themselves (each pick's best-on-one-half less
its score on the other half, over 400 random halvings, scaled to all the
images; on simulated candidates of equal worth it came within a quarter of
their winner's curse, 0.32-0.42 dB against 0.33-0.45)
gave 3.4 and 3.6 dB on the demo ResNet-50's logits head (two calibration
subsets), where the 397 evaluation images gained 0.5 and 0.0 dB less than
the held-out ones: the per-image errors rest on a few images, and halves of
them rank the parts by those few. Lowered by it, the search kept 9 parts
instead of 6 on one subset and none (the level unmet) on the other (session 39).
"""

import itertools
import math
import re
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .ranges import activation_ranges
from .selection import output_sqnr_db  # noqa: F401 (the tests and benchmarks score with it too)
from .selection import fits, per_image_errors, sqnr_of_sums, sqnr_standard_error_of
from .statistics import read_flatbuffer

# Which statistics folds' images choose the parts (the first ranking, each step's pick); the other folds' images
# judge every step (the budget, the put-backs). None: every image chooses and judges (the default). Tried apart in
# benchmarks/judge_apart.py: a pick made on the images that judge it shows them more than others see.
CHOOSING_FOLDS = None
# An SQNR budget that full int8 misses (a --min-sqnr level above it, or a --min-sqnr-gain) is met only where the
# step's held-out SQNR less this many standard errors of its gain over full int8 (Step.gain_se_db) still meets it.
# 0: where the SQNR itself does (the default); records do not say it. Tried apart in
# benchmarks/judge_apart.py (`margin`): a search that stops as soon as its noisy gain first reaches the budget stops
# where that noise ran high.
STOP_MARGIN_SE = 0.0
CONFIRMED_PER_STEP = 4  # parts re-measured on top of the current float set at each step
PATIENCE = 3  # steps without a better score before the search gives up (a part may pay off only with its neighbour)
LATENCY_RUNS = 20
# A gain whose half rests on this few images is overstated: a softmax's error sits in the few images it is unsure
# of, and other images see a fraction of what a float part did there (benchmarks/results/mixed_precision.md)
FRAGILE_GAIN_IMAGES = 3
# A level budget (--min-sqnr) is pinned by the held-out images when their SQNR's standard error is under half the
# evaluation bar's 1 dB slack (two standard errors): on the 120 calibration subsets of benchmarks/budget_level.py,
# other images scored more than 1 dB under the held-out level on none of those below it and a third of the others
PINNED_LEVEL_SE_DB = 0.5
EVALUATION_SLACK_DB = 1.0  # how far other images may fall short of a budget and still meet it (issue 27's bar)
# What the parts a budget needs run in (--fallback-precision; `auto` tries dynamic, then float32)
PRECISIONS = {"dynamic": "dynamic-range int8 (int8 weights, activations quantized per image at run time)",
              "float32": "float32"}
BLOCK = re.compile(r"(conv\d+_block\d+)_")
WEIGHT_OP = re.compile(r"/(convolution|depthwise|Conv2D|DepthwiseConv2dNative|MatMul|BiasAdd)")  # TF op names
JUDGED_BY_LOGITS = ("a softmax head: full int8's output SQNR as measured, its error apart from the int8 output "
                    "grid's lowered by each step's gain in its logits' (the softmax's input) error: each image's "
                    "error over full int8's, the ratios averaged with each image weighted by how unsure the float "
                    "model is of it")


STEPS_CORRECTED = ("corrected as the artifact's are: each quarter's candidate on the images its ranges came from, kept "
                   "where the recipe's bias_correction keeps it there; the parts are first ranked by their effect alone "
                   "on the candidates as quantized")
STEPS_AS_QUANTIZED = "as quantized, as the artifact's are (bias_correction off, or a QOperator ONNX)"


@dataclass(frozen=True)
class Budget:
    """What the artifact must reach on the held-out calibration images."""

    min_sqnr: float = None  # output SQNR against the float model, dB
    max_accuracy_drop: float = None  # top-1 points lost against the float model (needs labels)
    min_agreement: float = None  # fraction of images whose top-1 is the float model's
    # output SQNR over full int8's on the same held-out images, dB: the search sets min_sqnr from it (over())
    min_sqnr_gain: float = None

    def over(self, full_int8):
        """This budget with a gain over full int8 made a level: `full_int8`
        (the search's first Step) plus the gain; unchanged without a gain."""
        if self.min_sqnr_gain is None or self.min_sqnr is not None:  # no gain, or made a level already
            return self
        return replace(self, min_sqnr=full_int8.judged_db + self.min_sqnr_gain)

    def shortfalls(self, step, full_int8=None):
        """What `step` misses of the budget, a phrase each; none: met.
        `full_int8`: the search's first step, whose SQNR says whether the
        budget needs a gain at all (if it does, a fragile one does not count)."""
        missed = []
        if self.min_sqnr is not None and step.judged_db < self.min_sqnr:
            missed.append(f"output SQNR {step.judged_db:.1f} dB{' (estimated)' * step.estimated} < "
                          f"{self.level_text()}")
        if self.max_accuracy_drop is not None and step.accuracy_drop_points > self.max_accuracy_drop:
            missed.append(f"top-1 drop {step.accuracy_drop_points:.1f} points > {self.max_accuracy_drop:g}")
        if self.min_agreement is not None and step.agreement < self.min_agreement:
            missed.append(f"top-1 agreement {step.agreement:.3f} < {self.min_agreement:g}")
        needs_gain = full_int8 is None or full_int8.judged_db < (self.min_sqnr or float("-inf"))
        margin = STOP_MARGIN_SE * (step.gain_se_db or 0.0)
        if self.min_sqnr is not None and needs_gain and margin and self.min_sqnr <= step.judged_db < self.min_sqnr + margin:
            missed.append(f"output SQNR {step.judged_db:.1f} dB{' (estimated)' * step.estimated} less "
                          f"{STOP_MARGIN_SE:g}x its gain's standard error {step.gain_se_db:.2f} dB = "
                          f"{step.judged_db - margin:.1f} dB < {self.level_text()}")
        if self.min_sqnr is not None and needs_gain and step.fragile:  # top-1 terms count images already
            missed.append(f"half its gain over full int8 rests on {step.gain_images} image(s), which other images "
                          "may not share")
        return missed

    def standing(self, step, full_int8=None):
        """How close `step` comes, to order steps by: fewer terms missed,
        then the accuracy terms asked for, then a gain resting on more than a
        few images, then output SQNR."""
        drop = step.accuracy_drop_points if self.max_accuracy_drop is not None else 0.0
        agreement = step.agreement if self.min_agreement is not None else 0.0
        return (-len(self.shortfalls(step, full_int8)), -drop, agreement, not step.fragile, step.judged_db)

    def resolution_note(self, images):
        """A line when an accuracy term is finer than one of `images` can tell, else None."""
        one_image = 1 / images
        if self.min_agreement is not None and 1 - one_image < self.min_agreement < 1:
            return (f"--min-agreement {self.min_agreement:g} on {images} held-out images asks every image to agree "
                    f"(one image is {one_image:.3g}); calibrate on more images for a finer budget")
        if self.max_accuracy_drop is not None and 0 < self.max_accuracy_drop < 100 * one_image:
            return (f"--max-accuracy-drop {self.max_accuracy_drop:g} on {images} held-out images allows no image "
                    f"to be lost (one image is {100 * one_image:.3g} points); calibrate on more images for a finer "
                    "budget")
        return None

    def level_text(self):
        """The SQNR level: as asked, or as made of a gain (to two decimals, as the lines show it)."""
        return f"{self.min_sqnr:g}" if self.min_sqnr_gain is None else f"{self.min_sqnr:.2f}"

    def flags(self):
        """The budget as the options that ask for it (a gain with the level made of it)."""
        given = []
        if self.min_sqnr_gain is not None:
            level = "" if self.min_sqnr is None else f" ({self.level_text()} dB)"
            given.append(f"--min-sqnr-gain {self.min_sqnr_gain:g}{level}")
        elif self.min_sqnr is not None:
            given.append(f"--min-sqnr {self.min_sqnr:g}")
        given += [f"{flag} {value:g}" for flag, value in (("--max-accuracy-drop", self.max_accuracy_drop),
                                                           ("--min-agreement", self.min_agreement))
                  if value is not None]
        return " ".join(given)

    def as_level(self):
        """The options that ask for the same SQNR as a level (a gain's level is another artifact's too)."""
        return f"--min-sqnr {self.level_text()}" if self.min_sqnr_gain is not None else self.flags()

    def check(self):
        """Refuse what was asked (a level made of a gain is the search's, not asked)."""
        check_budget(self.min_sqnr if self.min_sqnr_gain is None else None, self.min_sqnr_gain)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def of_record(cls, record):
        """The budget of a mixed_precision record (older ones hold only budget_sqnr_db)."""
        return cls(**record["budget"]) if "budget" in record else cls(min_sqnr=record["budget_sqnr_db"])


@dataclass(frozen=True)
class Step:
    float_parts: tuple  # names of the parts in float32, in the order they were chosen
    sqnr_db: float  # output SQNR on the held-out calibration images
    agreement: float  # top-1 agreement with the float model there
    accuracy_drop_points: float  # top-1 accuracy of the float model less this one's there, or None (no labels)
    float_operators: int
    p50_ms: float  # batch-1 median latency on this machine
    fully_delegated: bool  # XNNPACK runs the whole graph (TFLite; None for ONNX)
    gain_images: int = None  # how few images hold half the squared error removed from full int8 (None: none removed)
    int8_operators: tuple = ()  # operators of the float parts put back in int8 (weight_units the budget did not need)
    logits_db: float = None  # softmax head: the mean over images of each image's logits SQNR (ranks candidates)
    estimated_sqnr_db: float = None  # softmax head: full int8's sqnr_db moved by this step's logits_gain_db (judged_sqnr)
    dynamic_operators: tuple = ()  # weight layers of float32 parts run in dynamic-range int8 (the budget holds)
    grid_db: float = None  # full int8 with an int8 head: the output SQNR its int8 grids alone leave (grid_sqnrs)
    output_grid_db: float = None  # ... and the int8 output's grid alone leaves (a softmax head's: no logits grid)
    sqnr_se_db: float = None  # the standard error of sqnr_db over the held-out images (selection.sqnr_standard_error_of)
    gain_se_db: float = None  # ... of judged_db's gain over full int8, image by image (gain_standard_error, judged_slope)
    logits_gain_db: float = None  # softmax head: its logits' error's gain over full int8's (Scores.logits_gain_db)

    @classmethod
    def from_dict(cls, step):
        """The Step of a record's step (older records lack the later fields)."""
        fields = {field: step.get(field) for field in cls.__dataclass_fields__}
        return cls(**{**fields, "float_parts": tuple(fields["float_parts"]),
                      "int8_operators": tuple(step.get("int8_operators") or ()),
                      "dynamic_operators": tuple(step.get("dynamic_operators") or ())})

    @property
    def estimated(self):
        return self.estimated_sqnr_db is not None

    @property
    def judged_db(self):
        """The output SQNR the search ranks steps by and an --min-sqnr budget judges."""
        return self.estimated_sqnr_db if self.estimated else self.sqnr_db

    def judged_se_db(self, full_int8):
        """The standard error of judged_db over the held-out images: its
        own, or for a softmax head's estimate full int8's measured SQNR's,
        which the estimate moves with (a lower bound: the logits gain,
        measured on the same images, has a spread of its own, left out)."""
        return full_int8.sqnr_se_db if self.estimated else self.sqnr_se_db

    @property
    def float32_operators(self):
        """Operators out of int8 less the float32 parts' weight layers demoted
        to dynamic-range int8 (which read and write float32 but multiply in
        int8); in a dynamic-range search, every operator out of int8."""
        return self.float_operators - len(self.dynamic_operators)

    @property
    def fragile(self):
        """Whether half the gain over full int8 rests on so few images that
        others may not see it (an estimate from the logits rests on every image)."""
        return not self.estimated and self.gain_images is not None and self.gain_images <= FRAGILE_GAIN_IMAGES

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Scores:
    """One candidate on the held-out images."""

    sqnr_db: float
    agreement: float
    accuracy_drop_points: float  # None without labels
    logits_db: float = None  # softmax head: the mean over images of each image's logits SQNR (ranks: ranked_sqnr)
    logits_gain_db: float = None  # softmax head: its logits' error's gain over full int8's (error_ratio_gain_db)
    grid_db: float = None  # int8 head: the output SQNR its int8 grids alone leave (grid_sqnrs), a ceiling
    output_grid_db: float = None  # int8 head: the output SQNR the output's own grid alone leaves (grid_sqnrs)
    sqnr_se_db: float = None  # the standard error of sqnr_db over these images (selection.sqnr_standard_error_of)


def scores(reference, outputs, labels=None, logits=None):
    """The Scores of `outputs` against the float model's `reference`
    (`labels`: class indices of the images, or None; `logits`: a softmax
    head's (float logits, these logits, full int8's logits or None: these
    are full int8's), or None)."""
    reference, outputs = np.asarray(reference), np.asarray(outputs)
    expected, predicted = reference.argmax(axis=1), outputs.argmax(axis=1)
    drop = None
    if labels is not None:  # from whole counts, so a drop of 3 images in 50 is 6.0 points, not 6.000000000000005
        drop = 100.0 * int(np.sum(expected == labels) - np.sum(predicted == labels)) / len(labels)
    signal, noise = per_image_errors(reference, outputs)
    logits_db = gain_db = None
    if logits is not None:
        float_logits, these, full_int8_logits = logits
        logits_db = per_image_mean_db(float_logits, these)
        gain_db = error_ratio_gain_db(reference, float_logits, these, these if full_int8_logits is None else
                                      full_int8_logits)
    return Scores(sqnr_of_sums(float(np.sum(signal)), float(np.sum(noise))),
                  int(np.sum(predicted == expected)) / len(expected), drop, logits_db,
                  sqnr_se_db=sqnr_standard_error_of(signal, noise), logits_gain_db=gain_db)


def error_ratio_gain_db(probabilities, float_logits, logits, full_int8_logits):
    """A softmax head's gain (dB) in its logits' error over full int8's:
    each image's squared logits error over full int8's on it, the ratios
    averaged (as a pooled SQNR averages errors: a mean of dB lets the images
    that gain much outweigh those that gain little, and ran 0.7-2.2 dB over
    the probabilities' gain on six of eight softmax ResNet-50 searches,
    benchmarks/results/softmax_estimates.md), each image weighted by how
    unsure the float model is of it (`probabilities`: unsureness), not by
    how large its error is (which leaves the probabilities' pooled SQNR to
    the few images it is unsure of). At most 120 dB."""
    weights, ratios = weighted_error_ratios(probabilities, float_logits, logits, full_int8_logits)
    return float(10 * np.log10(np.sum(weights) / max(np.sum(weights * ratios), np.sum(weights) * 1e-12)))


def weighted_error_ratios(probabilities, float_logits, logits, full_int8_logits):
    """(unsureness weights, each image's squared error of `logits` over full
    int8's): an image both leave exact counts 1, one only full int8 leaves
    exact as if full int8's error were 1e-12 of the image's logits."""
    float_logits = np.asarray(float_logits, np.float64)
    signal, noise, full_noise = (np.sum(values.reshape(len(values), -1) ** 2, axis=1) for values in (
        float_logits, float_logits - np.asarray(logits, np.float64), float_logits - np.asarray(full_int8_logits,
                                                                                            np.float64)))
    floor = np.maximum(signal * 1e-12, 1e-30)
    ratios = np.where((noise <= floor) & (full_noise <= floor), 1.0, noise / np.maximum(full_noise, floor))
    return unsureness(probabilities), ratios


def unsureness(probabilities):
    """How unsure the float model is of each image: 1 less the sum of its
    squared probabilities (0 on a one-hot image; a softmax passes an
    image's logit error on about in proportion to it). Where it is sure of
    every image alike, every image weighs the same."""
    probabilities = np.asarray(probabilities, np.float64).reshape(len(probabilities), -1)
    weights = np.clip(1 - np.sum(probabilities ** 2, axis=1), 0.0, None)
    return weights if np.sum(weights) > 0 else np.ones(len(weights))


def per_image_mean_db(reference, outputs):
    """The mean over images of each image's SQNR (dB): a float part that
    lowers every image's error by k dB raises it by k, and no image moves it
    by more than its own change over the number of images."""
    return float(np.mean(per_image_db(reference, outputs)))


def per_image_db(reference, outputs):
    """Each image's SQNR (dB) of `outputs` against `reference`."""
    from .selection import image_db_of, per_image_errors

    return image_db_of(*per_image_errors(reference, outputs))


def gain_standard_error(reference, full_int8_outputs, outputs, logits_pairs=None):
    """The standard error (dB) over the images of a step's judged gain over
    full int8, image by image: of the pooled output SQNR's gain (the ratio
    of full int8's total error to the step's, selection.sqnr_standard_error_of
    with full int8's errors for the signal), or with `logits_pairs` (a
    softmax head's [(float logits, full int8's), (float logits, the step's)])
    of its logits' gain (error_ratio_gain_db: the weighted mean of the
    images' error ratios). None where it cannot be told."""
    if logits_pairs is not None:
        (float_logits, full_int8_logits), (_, logits) = logits_pairs
        weights, ratios = weighted_error_ratios(reference, float_logits, logits, full_int8_logits)
        if len(ratios) < 2:
            return None
        mean = np.sum(weights * ratios) / np.sum(weights)
        spread = np.sqrt(np.sum(weights ** 2 * (ratios - mean) ** 2) * len(ratios) / (len(ratios) - 1))
        standard_error = float(10 / np.log(10) * spread / np.sum(weights) / mean) if mean > 0 else None
        return standard_error if standard_error is not None and np.isfinite(standard_error) else None
    _, full_noise = per_image_errors(reference, full_int8_outputs)
    _, noise = per_image_errors(reference, outputs)
    return sqnr_standard_error_of(full_noise, noise)


def judged_sqnr(measured, full_int8):
    """The output SQNR (dB) a candidate is judged by: as measured, or on a
    softmax head, full int8's as measured with its error lowered by the
    candidate's gain in its logits' error (error_ratio_gain_db). A softmax
    passes each image's logit error on scaled by how unsure it is of that
    image, so k dB off the logits of every image is k dB off the
    probabilities too; but the probabilities' error sits in the few images
    the model is unsure of, so measured on them a float part's gain rests
    on those few images (it is overstated or missed on others), while on
    the logits it is measured on every image. The int8 output's own grid
    (1/256 steps of probability) adds an error no logit gain lowers: that
    share (full_int8.output_grid_db) is kept apart. The int8 logits' grid
    is in the logits' error already."""
    if measured.logits_gain_db is None:
        return measured.sqnr_db
    gain_db = measured.logits_gain_db - full_int8.logits_gain_db
    if full_int8.output_grid_db is None:
        return full_int8.sqnr_db + gain_db
    grid, total = noise_of(full_int8.output_grid_db), noise_of(full_int8.sqnr_db)
    return -10 * np.log10(max(total - grid, 0.0) * noise_of(gain_db) + grid)


def ranked_sqnr(measured, full_int8):
    """The output SQNR (dB) candidates are ranked by: judged_sqnr's, but on
    a softmax head full int8's moved by the candidate's gain in the mean
    over images of each image's logits SQNR (dB), in which no image moves
    the mean by more than its own change over the number of images: a pick
    among many candidates rides less on a few images' luck (its level the
    error ratios judge: it overstates the probabilities' gain,
    benchmarks/results/softmax_estimates.md)."""
    if measured.logits_db is None:
        return measured.sqnr_db
    return full_int8.sqnr_db + measured.logits_db - full_int8.logits_db


def judged_slope(measured, full_int8):
    """How many dB judged_sqnr moves per dB of the logits' gain at
    `measured`: 1, or less with an int8 output grid, whose error no gain
    lowers (its share grows as the network's shrinks)."""
    if measured.logits_gain_db is None or full_int8.output_grid_db is None:
        return 1.0
    grid, total = noise_of(full_int8.output_grid_db), noise_of(full_int8.sqnr_db)
    network = max(total - grid, 0.0) * noise_of(measured.logits_gain_db - full_int8.logits_gain_db)
    return network / (network + grid) if network + grid > 0 else 0.0


def grid_caps(budget, grid_db):
    """Whether an int8 head's grids alone (grid_db, or None) leave the output below the SQNR budget."""
    return budget.min_sqnr is not None and grid_db is not None and grid_db < budget.min_sqnr


def capped_text(grid_db, softmax=False):
    """Why an int8 head's budget cannot be met (`softmax`: the head ends in an int8 softmax)."""
    grids = "the int8 softmax's own grids (its input's and its output's) cap" if softmax else \
        "the int8 output's own grid caps"
    return f"{grids} the output SQNR at {grid_db:.1f} dB on these images, whatever runs in float before it"


def record_capped_text(record):
    """capped_text for a mixed_precision record whose budget its int8 head's grids rule out, else None."""
    first = record["steps"][0]
    if not grid_caps(Budget.of_record(record), first.get("grid_db")):
        return None
    return capped_text(first["grid_db"], softmax=first.get("logits_db") is not None)


def noise_of(sqnr_db):
    """Noise over signal for an SQNR in dB."""
    return 10 ** (-sqnr_db / 10)


def grid_sqnrs(reference, reference_logits, grids_by_positions):
    """(the output SQNR in dB, the same without the logits' grid) of the
    float model's own outputs put through an int8 artifact's output grid
    (int8_tflite.Grid), on a softmax head first its logits through the int8
    softmax input's grid: the error that stays while the head is int8,
    whatever runs in float before it (the network's error adds to it).
    `grids_by_positions`: [((output grid, logits grid or None), sample
    positions), ...], each fold's images through its own candidate's grids."""
    through, output_only = (np.empty(np.shape(reference), np.float64) for _ in range(2))
    for (output, logits), positions in grids_by_positions:
        through[positions] = output_only[positions] = output.through(reference[positions])
        if logits is not None:
            gridded = logits.through(reference_logits[positions])
            exponentials = np.exp(gridded - gridded.max(axis=1, keepdims=True))
            through[positions] = output.through(exponentials / exponentials.sum(axis=1, keepdims=True))
    return output_sqnr_db(reference, through), output_sqnr_db(reference, output_only)


@dataclass(frozen=True)
class MixedSearch:
    budget: Budget
    held_out_images: int
    steps: tuple  # Step, the all-int8 artifact first
    alone_gain_db: dict  # part -> SQNR gain when it alone is float (over full int8, both as quantized; ranked_sqnr's)
    parts: dict  # part -> the operator scopes it holds
    excluded: dict  # part -> why it was not tried
    stopped: str  # why the search ended
    precision: str = "float32"  # what the chosen parts run in (PRECISIONS)
    dynamic_capable: frozenset = frozenset()  # the weight operators dynamic precision quantizes
    also_tried: tuple = ()  # the searches in other precisions that did not meet the budget (their record summaries)
    float_output: dict = None  # an int8 output's budget tried with a float32 output (with_float_output_summary)
    biases_corrected: bool = False  # whether each step's candidates had their biases corrected (fold_correctors)

    @property
    def best(self):
        """The step closest to the budget (Budget.standing)."""
        return max(self.steps, key=lambda step: self.budget.standing(step, self.steps[0]))

    @property
    def chosen(self):
        """The step that meets the budget with the fewest operators out of
        int8, then the fewest of them in float32 (the first of equals), else
        the best one."""
        meeting = [step for step in self.steps if not self.budget.shortfalls(step, self.steps[0])]
        return (min(meeting, key=lambda step: (step.float_operators, step.float32_operators)) if meeting
                else self.best)

    @property
    def met(self):
        return not self.budget.shortfalls(self.chosen, self.steps[0])

    @property
    def capped(self):
        """Whether the int8 head's own grids keep the output below an SQNR budget (no part was tried)."""
        return not self.met and grid_caps(self.budget, self.steps[0].grid_db)

    def float_scopes(self):
        """The operators of the chosen parts (those not put back in int8),
        demoted weight layers among them (scopes() splits them off)."""
        chosen = self.chosen
        return tuple(scope for part in chosen.float_parts for scope in self.parts[part]
                     if scope not in chosen.int8_operators)

    def summary(self):
        """This search in brief, for the record of one in another precision."""
        return {"precision": self.precision, "precision_text": PRECISIONS[self.precision], "met": self.met,
                "best_held_out_db": self.best.judged_db, "steps": len(self.steps), "stopped": self.stopped}

    def scopes(self):
        """(operators in float32, operators in dynamic-range int8) of the TFLite artifact."""
        float32, dynamic = split_by_precision(self.float_scopes(), self.dynamic_capable, self.precision)
        demoted = self.chosen.dynamic_operators
        return tuple(scope for scope in float32 if scope not in demoted), dynamic + demoted

    def record(self):
        chosen = self.chosen
        return {"budget": self.budget.to_dict(), "budget_sqnr_db": self.budget.min_sqnr, "met": self.met,
                "shortfalls": self.budget.shortfalls(chosen, self.steps[0]), "held_out_images": self.held_out_images,
                "resolution": self.budget.resolution_note(self.held_out_images),
                "scored_on": "calibration images, each held out from the ranges that scored it (each quarter run by a "
                             "candidate ranged on the other three)",
                "precision": self.precision,
                "artifact": f"the chosen parts in {PRECISIONS[self.precision]}, with ranges from all calibration "
                            "images",
                "steps_biases": STEPS_CORRECTED if self.biases_corrected else STEPS_AS_QUANTIZED,
                "sqnr_judged_by": (JUDGED_BY_LOGITS if self.steps[0].logits_db is not None
                                   else "the output SQNR as measured"),
                "float_parts": [{"part": part, "operators": sum(operator not in chosen.int8_operators
                                                                for operator in self.parts[part]),
                                 "gain_alone_db": self.alone_gain_db.get(part)} for part in chosen.float_parts],
                "int8_operators": list(chosen.int8_operators),
                "dynamic_operators": list(chosen.dynamic_operators),
                "not_tried": self.excluded, "gain_alone_db": self.alone_gain_db, "stopped": self.stopped,
                "also_tried": list(self.also_tried), "with_float32_output": self.float_output,
                "level_standard_error_db": chosen.judged_se_db(self.steps[0]),
                "steps": [step.to_dict() for step in self.steps]}



def chosen_step(record):
    """The step of a mixed_precision record whose parts the artifact keeps in float32."""
    parts = [entry["part"] for entry in record["float_parts"]]
    back = list(record.get("int8_operators") or [])
    demoted = list(record.get("dynamic_operators") or [])
    return next(step for step in record["steps"]
                if list(step["float_parts"]) == parts and list(step.get("int8_operators") or []) == back
                and list(step.get("dynamic_operators") or []) == demoted)


def describe_artifact(record):
    """What an artifact with float32 parts is, for its recipe JSON's "quantization"."""
    chosen = chosen_step(record)
    if not chosen["float_parts"]:
        return None
    return (f"int8 (weights per output channel, activations per tensor) except {len(chosen['float_parts'])} part(s) "
            f"in {precision_of(record)} ({', '.join(chosen['float_parts'])}{put_back_text(chosen)}; "
            f"{chosen['float_operators']} operators) for {Budget.of_record(record).flags()}")


def put_back_text(step):
    """The operators of a step's (dict) float parts that went back to int8
    or down to dynamic-range int8, said briefly; else nothing."""
    back, demoted = step.get("int8_operators") or (), step.get("dynamic_operators") or ()
    return ((f", less {len(back)} of their operators put back in int8" if back else "")
            + (f", with {len(demoted)} of their weight layers in dynamic-range int8" if demoted else ""))


def describe_record(record):
    """One line on a mixed_precision record (the artifact's recipe JSON)."""
    chosen, first = chosen_step(record), record["steps"][0]
    budget, images = Budget.of_record(record), record["held_out_images"]
    if not chosen["float_parts"]:
        return (f"{budget.flags()}: {full_int8_verdict(record)} ({measured_text(first, budget)} on {images} held-out "
                "calibration images)")
    verdict = "met" if record["met"] else "NOT met; the best found"
    return (f"{budget.flags()}: {verdict} with {len(chosen['float_parts'])} part(s) in {precision_of(record)} "
            f"({', '.join(chosen['float_parts'])}{put_back_text(chosen)}; {chosen['float_operators']} operators): "
            f"{measured_text(chosen, budget)} vs {measured_text(first, budget)} full int8 on {images} held-out "
            f"calibration images; {chosen['p50_ms']:.2f} ms vs {first['p50_ms']:.2f} ms here"
            f"{support_text(chosen, images)}")


def unpinned_level_text(record):
    """A line when a met --min-sqnr level rests on too few images to hold
    on others (its standard error is PINNED_LEVEL_SE_DB or more), else None.
    A gain is judged against full int8 on the same images, so is not warned of."""
    budget, se_db = Budget.of_record(record), record.get("level_standard_error_db")
    if not record["met"] or budget.min_sqnr is None or budget.min_sqnr_gain is not None or se_db is None \
            or not se_db >= PINNED_LEVEL_SE_DB:
        return None
    images = record["held_out_images"]
    return (f"the held-out level is not pinned by these {images} images: its standard error is {se_db:.1f} dB (a few "
            f"images hold most of the error), so other images may score more than 1 dB under {budget.level_text()}; "
            f"calibrate on at least {images_to_pin(images, se_db)} images (the standard error falls no faster than "
            "one over the square root of their number), or ask a gain over full int8 (--min-sqnr-gain), which is "
            "measured against full int8 on the same images")


def evaluation_record(record, full_int8, searched):
    """What an SQNR budget's search (`record`) came to on other images:
    the artifact's output SQNR there against full int8's with the same
    ranges, both parity metrics of the same images (`searched`,
    `full_int8`; an SQNR of None is no error at all), beside what the
    held-out calibration images said."""
    budget, first = Budget.of_record(record), Step.from_dict(record["steps"][0])
    chosen = Step.from_dict(chosen_step(record))
    full_db, db = full_int8["sqnr_db"], searched["sqnr_db"]
    return {"images": searched["samples"], "full_int8_sqnr_db": full_db, "sqnr_db": db,
            "sqnr_standard_error_db": searched.get("sqnr_standard_error_db"),
            "gain_db": None if full_db is None or db is None else db - full_db,
            "level_db": budget.min_sqnr, "asked_gain_db": budget.min_sqnr_gain,
            "held_out_full_int8_db": first.judged_db, "held_out_db": chosen.judged_db,
            "level_reached_on_held_out": bool(chosen.judged_db >= budget.min_sqnr),
            "top1_terms": top1_flags(budget),
            "what": "output SQNR against the float model's golden outputs on the evaluation images: the artifact, "
                    "and full int8 with the same ranges (made beside it, not kept); an SQNR of null is no error"}


def top1_flags(budget):
    """The top-1 terms of a budget, as the options that ask for them (convert's gates judge them)."""
    return [flag for flag, value in (("--max-accuracy-drop", budget.max_accuracy_drop),
                                     ("--min-agreement", budget.min_agreement)) if value is not None]


def evaluation_text(row):
    """The line on what a budget came to on the evaluation images (evaluation_record's `row`): the gain
    over full int8 there, and whether it is within EVALUATION_SLACK_DB of what was asked (a gain, or a level),
    beside what the held-out calibration images said."""
    return f"{_evaluation_figures(row)}: {_evaluation_verdict(row)}" + (
        f"; its {' and '.join(row['top1_terms'])} {'terms are' if len(row['top1_terms']) > 1 else 'term is'} "
        "judged by convert's gates on these images" if row.get("top1_terms") else "")


def _evaluation_figures(row):
    """The SQNRs on the evaluation images (None: no error), and the gains there and on the held-out images."""
    full_db, db, se_db = row["full_int8_sqnr_db"], row["sqnr_db"], row["sqnr_standard_error_db"]
    said = f"on the {row['images']} evaluation images: full int8 {_sqnr_text(full_db)} -> {_sqnr_text(db)}"
    if db is not None and se_db is not None:
        said += f" (standard error {se_db:.2f})"
    held_out_gain = row["held_out_db"] - row["held_out_full_int8_db"]
    held_out = f"on the held-out calibration images {held_out_gain:+.2f} dB" if math.isfinite(held_out_gain) else None
    if row["gain_db"] is not None:
        return f"{said}, a gain of {row['gain_db']:+.2f} dB" + (f" ({held_out})" if held_out else "")
    return said + (f" (a gain {held_out})" if held_out else "")


def _evaluation_verdict(row):
    """Whether the gain or level asked holds on the evaluation images, or by how much it falls short."""
    if row["asked_gain_db"] is not None:
        asked = f"the {row['asked_gain_db']:g} dB gain asked"
        short = row["asked_gain_db"] - _db_or_exact(row["sqnr_db"]) + _db_or_exact(row["full_int8_sqnr_db"])
    else:
        asked = f"the level {row['level_db']:g} dB"
        short = row["level_db"] - _db_or_exact(row["sqnr_db"])
    if not row.get("level_reached_on_held_out", True):
        asked += " (not reached on the held-out calibration images)"
    if math.isnan(short) or short <= 0:  # nan: both exact
        return f"{asked} holds there"
    if math.isinf(short):
        return f"{asked} does not hold there (full int8 has no error there)"
    verdict = "within" if short <= EVALUATION_SLACK_DB else "more than"
    return f"{short:.2f} dB short of {asked}, {verdict} the {EVALUATION_SLACK_DB:g} dB a budget may miss by on other images"


def _db_or_exact(sqnr_db):
    """An SQNR as a number, None (no error at all) as infinity."""
    return math.inf if sqnr_db is None else sqnr_db


def _sqnr_text(sqnr_db):
    return "no error" if sqnr_db is None else f"{sqnr_db:.2f} dB"


def images_to_pin(images, se_db):
    """How many images would bring a standard error of `se_db` on `images` under PINNED_LEVEL_SE_DB at best,
    rounded up to a hundred, and more than `images`."""
    return max(int(math.ceil(images * (se_db / PINNED_LEVEL_SE_DB) ** 2 / 100) * 100), images + 100)


def full_int8_verdict(record):
    """Why a record's artifact is full int8."""
    if record["met"]:
        return "met by full int8"
    first = record["steps"][0]
    capped = record_capped_text(record)  # (a full int8 that met a budget above the cap returned above)
    if capped:
        return f"NOT met; {capped}"
    fragile = [step for step in record["steps"][1:]
               if Step.from_dict(step).fragile and step["sqnr_db"] > first["sqnr_db"]]
    if not fragile:
        return f"NOT met; no {precision_of(record)} part improved on full int8"
    return (f"NOT met; what {precision_of(record)} parts gained (up to {max(step['sqnr_db'] for step in fragile):.1f} dB) rests on "
            f"{FRAGILE_GAIN_IMAGES} images or fewer, so full int8 is kept")


def measured_text(step, budget):
    """A step's (dict) scores on what the budget asks for; SQNR always."""
    text = f"{step['sqnr_db']:.1f} dB"
    if step.get("estimated_sqnr_db") is not None:
        text = f"{step['estimated_sqnr_db']:.1f} dB estimated from the logits ({step['sqnr_db']:.1f} dB measured)"
    if budget.min_agreement is not None:
        text += f", top-1 agreement {step['agreement']:.3f}"
    if budget.max_accuracy_drop is not None:
        text += f", top-1 drop {step['accuracy_drop_points']:.1f} points"
    return text


def unmet_line(record, artifact):
    """The one line for a budget the search could not meet."""
    float_output = record.get("with_float32_output")
    budget = Budget.of_record(record)
    hint = ""
    if float_output and float_output["met"]:
        # a gain's level: a float32 output's own full int8 is higher, so the same gain would ask more of it
        level = f" {budget.as_level()}" if budget.min_sqnr_gain is not None else ""
        hint = (f"; --output-type float32{level} meets it with "
                f"{' and '.join(float_output['float_parts']) or 'no part'} in float32")
    capped = record_capped_text(record)
    if capped:
        return (f"{budget.flags()} not reached by {artifact} on held-out calibration images "
                f"({'; '.join(record.get('shortfalls') or ['below the budget'])}): {capped}"
                f"{hint or uncapped_text(float_output)}")
    return (f"{budget.flags()} not reached by {artifact} on held-out calibration images "
            f"({'; '.join(record.get('shortfalls') or ['below the budget'])}): the best found keeps "
            f"{len(record['float_parts'])} parts in {precision_of(record)}{hint}")


def uncapped_text(float_output):
    """What a float32 output, which has no int8 grid, did for a budget it did not meet (or was not tried)."""
    if not float_output:
        return "; --output-type float32 has no such cap"
    parts = " and ".join(float_output["float_parts"]) or "no part"
    return (f"; --output-type float32 (no such cap) does not meet it either: with {parts} in float32, "
            f"{float_output['held_out_db']:.1f} dB")


def precision_of(record):
    """What a mixed_precision record's parts run in, said briefly (older records: float32)."""
    return "dynamic-range int8" if record.get("precision") == "dynamic" else "float32"


def model_parts(float_model_bytes, weighted=None):
    """{part: (operator scopes, in graph order)} of a float TFLite network
    (`weighted`: its weighted_scopes, where the caller has them already)."""
    subgraph = read_flatbuffer(float_model_bytes).subgraphs[0]
    operators = [(operator_scope(subgraph, operator), tuple(operator.inputs), tuple(operator.outputs))
                 for operator in subgraph.operators]
    weighted = weighted_scopes(float_model_bytes) if weighted is None else weighted
    return network_parts(operators, tuple(subgraph.inputs), tuple(subgraph.outputs), weighted)


def operator_scope(subgraph, operator):
    """What litert-quantizer matches an operator by: its output tensors' names, joined by ";"."""
    return ";".join(subgraph.tensors[index].name.decode() for index in operator.outputs)


def weighted_scopes(float_model_bytes, dynamic_only=False):
    """The scopes of a float TFLite's operators that hold weights
    (convolutions, fully connected); `dynamic_only`: those XNNPACK runs in
    dynamic-range int8 (it has no such depthwise convolution: one would
    leave the graph to the reference kernels)."""
    from ai_edge_litert import schema_py_generated as schema

    model = read_flatbuffer(float_model_bytes)
    subgraph = model.subgraphs[0]
    holding = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.FULLY_CONNECTED}
    if not dynamic_only:
        holding.add(schema.BuiltinOperator.DEPTHWISE_CONV_2D)
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    return frozenset(operator_scope(subgraph, operator) for operator in subgraph.operators
                     if codes[operator.opcodeIndex] in holding)


def network_parts(operators, graph_inputs, graph_outputs, weighted):
    """{part: (operator ids, in graph order)} of a network given as its
    operators in graph order, (id, input tensors, output tensors) each: a
    ResNet's by its layer names, any other's by its graph (graph_parts)."""
    names = [name for name, _, _ in operators]
    if any(BLOCK.search(name) for name in names):
        return parts_in_order(names)
    return graph_parts(operators, graph_inputs, graph_outputs, weighted)


def parts_in_order(operator_names):
    """{part: (operator names, in graph order)} of a ResNet's operators
    named in graph order: those before the first block the stem, after the
    last the head, and one between blocks (a DenseNet's transition) with
    the block before it."""
    names = list(operator_names)
    last_in_block = max((position for position, name in enumerate(names) if BLOCK.search(name)), default=-1)
    parts, part = {}, "stem"
    for position, name in enumerate(names):
        found = BLOCK.search(name)
        part = found.group(1) if found else "head" if position > last_in_block else part
        parts.setdefault(part, []).append(name)
    return {part: tuple(names) for part, names in parts.items()}


def single_tensor_cuts(operators, graph_inputs, graph_outputs):
    """The positions i (0-based) after which one tensor alone is still to be
    read (by an operator after i, or as a graph output): everything the
    rest of the network needs passes through it. Only graph inputs and
    operator outputs are counted: weights (not written by an operator) are
    not."""
    end = len(operators)
    last_read = {tensor: end for tensor in graph_outputs}
    for position, (_, inputs, _) in enumerate(operators):
        for tensor in inputs:
            last_read[tensor] = max(last_read.get(tensor, position), position)
    live = {tensor for tensor in graph_inputs if last_read.get(tensor, -1) >= 0}
    cuts = []
    for position, (_, _, outputs) in enumerate(operators[:-1]):
        live = {tensor for tensor in live | set(outputs) if last_read.get(tensor, -1) > position}
        if len(live) == 1:
            cuts.append(position)
    return cuts


def graph_parts(operators, graph_inputs, graph_outputs, weighted):
    """{part: (operator ids, in graph order)} of a network with no ResNet
    names: the spans between single-tensor cuts (a block with a skip
    connection is one span, a chain of layers one span per layer), those
    without a weight layer joined to the span before (an activation goes
    with its convolution), leading ones to the first with one; the last
    part, which writes the output, is the head (a graph output written
    early, or the input read again late, keeps everything after it in the
    head: no single tensor carries everything on there). Parts are named
    as span_name says."""
    spans, start = [], 0
    for cut in [*single_tensor_cuts(operators, graph_inputs, graph_outputs), len(operators) - 1]:
        spans.append([name for name, _, _ in operators[start:cut + 1]])
        start = cut + 1
    merged, leading = [], []
    for span in spans:
        holds_weights = any(name in weighted for name in span)
        if merged and not holds_weights:
            merged[-1].extend(span)
        elif holds_weights:
            merged.append(leading + span)
            leading = []
        else:
            leading.extend(span)
    if leading:  # no weight layer anywhere
        merged.append(leading)
    parts = {}
    for position, span in enumerate(merged):
        name = "head" if position == len(merged) - 1 else span_name(span, weighted)
        unique = name
        for count in itertools.count(2):
            if unique not in parts and (unique != "head" or position == len(merged) - 1):
                break
            unique = f"{name}.{count}"
        parts[unique] = tuple(span)
    return parts


def span_name(operators, weighted):
    """A part's name: the layer-name prefix its weight layers share, ending
    at a "_" (block_3 for block_3_expand ... block_3_project), else (or
    where the layers differ only by Keras' numbering, conv2d_3 and
    conv2d_4) the first and last of them."""
    labels = [layer_label(operator) for operator in operators if operator in weighted]
    labels = labels or [layer_label(operator) for operator in operators]
    shared = labels[0]
    for label in labels[1:]:
        while shared and not (label == shared or label.startswith(shared + "_")):
            shared = shared.rsplit("_", 1)[0] if "_" in shared else ""
    numbered = all(re.fullmatch(re.escape(shared) + r"_\d+", label) for label in labels if label != shared)
    if shared and not numbered:
        return shared
    return labels[0] if labels[0] == labels[-1] else f"{labels[0]}..{labels[-1]}"


def layer_label(operator):
    """The Keras layer an operator id (a TFLite scope: its output tensors'
    names joined by ";", or an ONNX node name) most likely comes from, read
    from the id alone: in a TensorFlow name (model/layer/op; of a fused
    operator's names, the weight op's) the component after the model's,
    less the "_<n>" TensorFlow adds to a layer's call scope; else the
    name's first component."""
    names = operator.split(";")
    scoped = [name for name in names if name.count("/") >= 2]
    if not scoped:
        return names[0].split("/")[0]
    main = next((name for name in scoped if WEIGHT_OP.search(name)), scoped[0])
    return re.sub(r"_\d+$", "", main.split("/")[1])


def check_budget(min_sqnr, min_sqnr_gain=None):
    if min_sqnr is not None and not (np.isfinite(min_sqnr) and 0 < min_sqnr < 200):
        raise ConfigError(f"--min-sqnr is the output SQNR to reach, in dB, above 0 and below 200 (e.g. 30). "
                          f"Received: {min_sqnr}")
    if min_sqnr_gain is not None and not (np.isfinite(min_sqnr_gain) and 0 < min_sqnr_gain < 100):
        raise ConfigError(f"--min-sqnr-gain is the output SQNR to gain over full int8, in dB, above 0 and below 100 "
                          f"(e.g. 3). Received: {min_sqnr_gain}")
    if min_sqnr is not None and min_sqnr_gain is not None:
        raise ConfigError("give --min-sqnr DB (a level) or --min-sqnr-gain DB (over full int8 on the same held-out "
                          "images), not both")


def check_accuracy_terms(max_accuracy_drop=None, min_agreement=None):
    """Refuse accuracy gates or budgets that can never pass or never fail, before any work."""
    import math

    if max_accuracy_drop is not None and not (math.isfinite(max_accuracy_drop) and 0 <= max_accuracy_drop <= 100):
        raise ConfigError(f"--max-accuracy-drop is in top-1 points, from 0 to 100 (1 for one point; above 100 it "
                          f"could never fail). Received: {max_accuracy_drop}")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        hint = f" ({min_agreement / 100:g} for {min_agreement:g}%)" if 1 < min_agreement <= 100 else ""
        raise ConfigError(f"--min-agreement is a fraction between 0 and 1{hint}. Received: {min_agreement}")


def steps_since_best(steps):
    best = max(range(len(steps)), key=lambda index: steps[index].judged_db)
    return len(steps) - 1 - best


def shortlist(order, chosen, graph_order):
    """The parts to try on top of `chosen`: the best few of the ranking, and
    the neighbours of the parts already in float (two float neighbours leave
    the tensor between them in float too, which neither gives alone)."""
    neighbours = [graph_order[index + step] for index, part in enumerate(graph_order) if part in chosen
                  for step in (-1, 1) if 0 <= index + step < len(graph_order)]
    return list(dict.fromkeys(order[:CONFIRMED_PER_STEP] + [part for part in neighbours if part in order]))


@dataclass(frozen=True)
class Route:
    """How one artifact format makes and runs its candidates.

    `parts`: {part: operator ids} (TFLite scopes, ONNX node names), in graph
    order; `make(ranges, ids, demoted)`: the artifact (bytes) with the
    operators `ids` in float32 but the weight layers `demoted` of them in
    dynamic-range int8 (the TFLite's; the ONNX's refuses any), as the
    bias correction takes it; `finish(artifact)`: that artifact as written
    (the TFLite's: the recipe's input and output types; candidate() sets
    them after the correction); `outputs(artifact, inputs)`: what the
    written one computes; `suffix`: its file name suffix, for timing and
    inspecting it."""

    parts: dict
    make: object
    outputs: object
    suffix: str
    structure: object  # artifact path -> (operators in float32, whole graph delegated or None)
    head_output_type: str  # the artifact's output type if the head stays int8 (a float head makes it float32)
    weighted: frozenset = frozenset()  # the operator ids that hold weights (convolutions, the classifier)
    # a softmax head's (candidate, inputs) -> (outputs, logits: the softmax's input); else None
    outputs_and_logits: object = None
    precision: str = "float32"  # what `make` runs the operators ids in (PRECISIONS)
    int8_logits: bool = False  # whether a softmax head's logits are int8 (the TFLite's; the ONNX keeps them float)
    grids: object = None  # artifact -> its int8 head's grids (int8_tflite.output_grids); None: no int8 output grid
    dynamic_capable: frozenset = frozenset()  # the weight operators `make` can run in dynamic-range int8
    # (images, reference_for) -> (candidate -> candidate with its biases corrected on those images as the artifact's
    # are on all of them; reference_for(softmax head?): the float logits or outputs on them); None: not corrected
    corrector: object = None
    finish: object = None  # make's artifact -> as written; None: as made


def candidate(route, ranges, operators, demoted=(), corrector=None):
    """The artifact `route` makes with `operators` in float32 but the weight
    layers `demoted` in dynamic-range int8, its biases corrected by
    `corrector` where there is one, as written: the correction comes before
    the TFLite gets the recipe's input and output types, as the artifact's
    does (write_int8_tflite). It reads int8 input and output: behind a
    float32 or uint8 output it found the classifier's int8 output renamed
    and left its bias as it was."""
    made = route.make(ranges, operators, demoted)
    made = made if corrector is None else corrector(made)
    return made if route.finish is None else route.finish(made)


def tflite_route(float_model, recipe, precision="float32"):
    """The Route of the int8 TFLite, its parts run in `precision`."""
    from ..device.tflite_inspect import inspect_tflite
    from .bias_correction import corrects_biases, counts_top1, fold_corrector
    from .int8_tflite import (output_grids, quantized_int8_io, run_tflite_bytes, softmax_head,
                              tflite_outputs_and_logits, with_recipe_io)

    def structure(path):
        inspected = inspect_tflite(path)
        return len(inspected.float_ops), inspected.fully_delegated

    weighted, dynamic_capable = weighted_scopes(float_model), weighted_scopes(float_model, dynamic_only=True)

    def make(ranges, scopes, demoted=()):  # int8 input and output, as the bias correction reads a model
        float32, dynamic = split_by_precision(scopes, dynamic_capable, precision)
        return quantized_int8_io(float_model, ranges, recipe.per_channel,
                                 tuple(scope for scope in float32 if scope not in demoted), dynamic + tuple(demoted))

    return Route(model_parts(float_model, weighted), make,
                 lambda model, inputs: run_tflite_bytes(model, inputs, "a candidate"), ".tflite", structure,
                 recipe.output_type, weighted,
                 tflite_outputs_and_logits if softmax_head(float_model) else None, precision, int8_logits=True,
                 grids=output_grids, dynamic_capable=dynamic_capable,
                 corrector=fold_corrector(float_model, recipe.bias_correction, counts_top1(recipe))
                 if corrects_biases(recipe) else None, finish=lambda model: with_recipe_io(model, recipe))


def split_by_precision(scopes, dynamic_capable, precision):
    """(operators to run in float32, operators to run in dynamic-range int8) of `scopes` in `precision`:
    dynamic keeps the weights of the operators that can (`dynamic_capable`) int8 and runs the rest in float32."""
    if precision == "float32":
        return tuple(scopes), ()
    return (tuple(scope for scope in scopes if scope not in dynamic_capable),
            tuple(scope for scope in scopes if scope in dynamic_capable))


def search_tflite_parts(float_model, statistics, calibration, recipe, method, budget, log=print):
    """The MixedSearch of the int8 TFLite in the precision the recipe asks
    for; `auto`: dynamic-range int8 parts first (int8 weights, activations
    quantized per image at run time: on a CPU with int8 dot products they
    cost a fraction of float32 ones), float32 parts when those cannot meet
    the budget."""
    tiers = ("dynamic", "float32") if recipe.fallback_precision == "auto" else (recipe.fallback_precision,)
    searches = []
    for precision in tiers:
        if searches:
            log(f"      {PRECISIONS[searches[-1].precision]} parts do not meet it: searching {PRECISIONS[precision]} "
                "parts")
        else:
            log(f"      parts in {PRECISIONS[precision]}")
        searches.append(search_float_parts(float_model, statistics, calibration, recipe, method, budget, log,
                                           tflite_route(float_model, recipe, precision),
                                           demote=recipe.fallback_precision == "auto" and precision == "float32"))
        budget = searches[-1].budget  # a gain over full int8 made a level: the same level for what follows
        if searches[-1].met or searches[-1].capped:
            break
    kept = max(searches, key=lambda search: budget.standing(search.chosen, search.steps[0]))
    float_output = None
    if recipe.output_type != "float32" and "head" in kept.excluded and budget.shortfalls(kept.steps[0],
                                                                                        kept.steps[0]):
        float_output = with_float_output_summary(
            head_with_float_output(float_model, statistics, calibration, recipe, method, budget), kept)
        log(f"      {float_output_text(float_output, budget)}")
    return replace(kept, also_tried=tuple(search.summary() for search in searches if search is not kept),
                   float_output=float_output)


def head_with_float_output(float_model, statistics, calibration, recipe, method, budget):
    """The MixedSearch of the head alone in float32 under --output-type
    float32: with an int8 output the logits' int8 grid is a floor no part
    removes, and a budget that needs many blocks out of int8 there is often
    met by the head (pooling, classifier) alone once the output is float32
    (benchmarks/results/mixed_precision.md)."""
    float_output = replace(recipe, output_type="float32")
    route = tflite_route(float_model, float_output)
    return search_float_parts(float_model, statistics, calibration, float_output, method, budget,
                              lambda line: None, replace(route, parts={"head": route.parts["head"]}))


def with_float_output_summary(search, int8_output):
    """What a float32 output gives, in brief, beside the int8 output's search `int8_output`."""
    chosen = search.chosen
    return {"output_type": "float32", "met": search.met, "float_parts": list(chosen.float_parts),
            "held_out_db": chosen.judged_db, "p50_ms": chosen.p50_ms,
            "int8_output_full_int8_p50_ms": int8_output.steps[0].p50_ms,
            "int8_output_p50_ms": int8_output.chosen.p50_ms}


def float_output_text(summary, budget):
    """The line on what --output-type float32 would give."""
    parts = " and ".join(summary["float_parts"]) or "no part"
    verdict = "meets" if summary["met"] else "does not meet"
    return (f"--output-type float32 {verdict} {budget.as_level()} with {parts} in float32: "
            f"{summary['held_out_db']:.1f} dB on the same held-out images, {summary['p50_ms']:.2f} ms here "
            f"(int8 output: {summary['int8_output_p50_ms']:.2f} ms with its parts, "
            f"{summary['int8_output_full_int8_p50_ms']:.2f} ms full int8)")


def search_float_parts(float_model, statistics, calibration, recipe, method, budget, log=print, route=None,
                       demote=False):
    """The MixedSearch for `budget` (a Budget, on held-out calibration
    images) of the int8 artifact of `route` (default: the int8 TFLite of
    `float_model`, bytes) under `recipe`, ranges by `method`. `demote`
    (TFLite only): once float32 parts meet the budget, each of their
    weight layers (convolutions, a float head's classifier) is tried in
    dynamic-range int8 and stays there where the budget still holds."""
    from ..device.bench import benchmark
    from .selection import calibration_inputs, float_reference, no_folds_cause, no_folds_fix

    budget.check()
    if calibration is None:
        raise ConfigError(f"{budget.flags()} runs candidates on held-out calibration images: give --calibration PATH "
                          "(the images the statistics came from)")
    if statistics.folds is None:
        raise ConfigError(f"{budget.flags()} measures on held-out calibration images and these statistics have none "
                          f"({no_folds_cause(statistics)}); {no_folds_fix(statistics)}")
    route = route or tflite_route(float_model, recipe)
    layout = cross_fits(statistics, method)
    inputs = calibration_inputs(calibration, statistics)
    choosing, judging = choice_split(layout, CHOOSING_FOLDS, len(inputs))
    reference = float_reference(float_model, statistics, inputs)
    labels = None
    if budget.max_accuracy_drop is not None:
        labels = calibration_labels(calibration, reference.shape[-1])
    parts = route.parts
    excluded = {}
    head_stays_int8 = route.grids is not None and route.head_output_type != "float32"
    if route.head_output_type != "float32" and "head" in parts:
        # a float classifier would make the model's output float32, not the --output-type asked for
        excluded["head"] = (f"its output would become float32, not {route.head_output_type}; --output-type float32 "
                            "allows it")

    reference_logits = None
    if route.outputs_and_logits is not None:
        from .int8_tflite import softmax_head
        from .selection import float_logits_reference

        if softmax_head(float_model):
            reference_logits = float_logits_reference(float_model, statistics, inputs)

    correctors = fold_correctors(route.corrector, inputs, layout, reference, reference_logits)
    full_int8_logits = []  # a softmax head's: the first candidate evaluated (full int8) leaves its logits here

    def evaluated(float_parts, int8_back=(), demoted=(), corrected=True):
        """(Scores on the judging calibration images, each run by the
        candidate ranged without its fold, the first fold's candidate, the
        outputs on every image, Scores on the choosing images, a softmax
        head's (float logits, logits) on every image or None) with
        `float_parts` in float32 but their operators `int8_back`, and
        their weight layers `demoted` in dynamic-range int8; its biases
        corrected as the artifact's would be unless not `corrected` (the
        cheaper ranking of parts). The first call, full int8 as the
        artifact is, leaves a softmax head's logits in full_int8_logits."""
        operators = [operator for part in float_parts for operator in parts[part] if operator not in int8_back]
        outputs, first, grids = np.empty_like(reference), None, []
        logits = None if reference_logits is None else np.empty_like(reference_logits)
        judged_reference = None if reference_logits is None else np.empty_like(reference_logits)
        for fold, (ranges, positions) in enumerate(layout):
            model = candidate(route, ranges, operators, demoted, correctors[fold] if correctors and corrected else None)
            if logits is None:
                outputs[positions] = route.outputs(model, inputs[positions])
            else:
                outputs[positions], logits[positions] = route.outputs_and_logits(model, inputs[positions])
                judged_reference[positions], logits[positions] = softmax_relevant(
                    (reference_logits[positions], logits[positions]), ranges,
                    statistics.softmax_input if route.int8_logits else None)
            first = model if first is None else first
            if head_stays_int8 and not float_parts:
                grids.append((route.grids(model), positions))
        if logits is not None and not full_int8_logits:  # the baseline every softmax candidate's gain is over
            if float_parts or int8_back or demoted or not corrected:
                raise RuntimeError("a softmax head's search evaluates full int8 as the artifact is first")
            full_int8_logits.append(logits)

        def scored(positions):
            return scores(reference[positions], outputs[positions], None if labels is None else labels[positions],
                          None if logits is None else (judged_reference[positions], logits[positions],
                                                       full_int8_logits[0][positions]))

        def capped(measured, positions):  # the int8 head's grids alone, on the same images
            if not grids or grids[0][0][0] is None:
                return measured
            cap, output_grid = grid_sqnrs(reference[positions], None if reference_logits is None else
                                          reference_logits[positions], grids_within(grids, positions))
            return replace(measured, grid_db=cap, output_grid_db=output_grid)

        logits_pair = None if logits is None else (judged_reference, logits)
        judged = capped(scored(judging), judging)
        chose = judged if choosing is judging else capped(scored(choosing), choosing)  # one scoring by default
        return judged, first, outputs, chose, logits_pair

    def step(float_parts, candidate, full_int8_outputs=None, int8_back=(), demoted=()):
        measured, model, outputs, _, logits_pair = candidate
        with tempfile.TemporaryDirectory(prefix="edge-resnet-mixed-") as folder:
            path = Path(folder) / f"candidate{route.suffix}"
            path.write_bytes(model)
            float_operators, delegated = route.structure(path)
            timing = benchmark(path, warmup=5, runs=LATENCY_RUNS, reset_peak=False)
        gain_images = gain_se = None
        if full_int8_outputs is not None:
            judged = reference[judging], full_int8_outputs[judging], outputs[judging]
            gain_images = images_carrying_half_the_gain(*judged)
            gain_se = gain_standard_error(*judged, None if logits_pair is None else
                                          [tuple(values[judging] for values in pair) for pair in (full_int8[4],
                                                                                                 logits_pair)])
            if gain_se is not None and logits_pair is not None:  # an estimate moves by its logits gain times this
                gain_se *= judged_slope(measured, full_int8[0])
        estimated = None
        if measured.logits_gain_db is not None and full_int8_outputs is not None:
            estimated = judged_sqnr(measured, full_int8[0])
        return Step(tuple(float_parts), **asdict(measured), float_operators=float_operators,
                    p50_ms=timing.latency_ms["p50"], fully_delegated=delegated, gain_images=gain_images,
                    int8_operators=tuple(int8_back), estimated_sqnr_db=estimated, dynamic_operators=tuple(demoted),
                    gain_se_db=gain_se)

    note = budget.resolution_note(len(judging))
    if note:
        log(f"      {note}")
    full_int8 = evaluated(())  # step() reads it
    steps = [step((), full_int8)]
    budget = budget.over(steps[0])
    log(f"      {budget.flags()}: full int8 gives {measured_text(steps[0].to_dict(), budget)} on {len(judging)} "
        "held-out calibration images")
    alone, stopped = {}, None
    short = budget.shortfalls(steps[0], steps[0])
    if short and grid_caps(budget, steps[0].grid_db):
        stopped = capped_text(steps[0].grid_db, reference_logits is not None)
        log(f"      {stopped}: no part, in any precision, can reach {budget.flags()}")
    elif short:
        # the first ranking of the parts is by their effect alone on the candidates as quantized (a correction costs
        # more than a candidate); the parts shortlisted at each step are measured as the artifact would be
        ranked = evaluated((), corrected=False)[3] if correctors else full_int8[3]
        base_db = ranked_sqnr(ranked, ranked) if correctors else full_int8[3].sqnr_db
        alone = {part: ranked_sqnr(evaluated((part,), corrected=False)[3], ranked) - base_db
                 for part in parts if part not in excluded}
    order = sorted(alone, key=lambda part: -alone[part])
    chosen, choice_db = [], full_int8[3].sqnr_db
    while alone and budget.shortfalls(steps[-1], steps[0]) and order:
        candidates = {part: evaluated((*chosen, part)) for part in shortlist(order, chosen, list(parts))}
        tried = {part: ranked_sqnr(candidate[3], full_int8[3]) for part, candidate in candidates.items()}
        best = max(tried, key=tried.get)
        before_db, choice_db = choice_db, tried[best]
        chosen.append(best)
        steps.append(step(chosen, candidates[best], full_int8[2]))  # the candidate already made, timed as it is
        log(f"      {route.precision} {', '.join(chosen)}: {measured_text(steps[-1].to_dict(), budget)}, "
            f"{steps[-1].p50_ms:.2f} ms{support_text(steps[-1].to_dict(), len(judging))}")
        order = sorted((part for part in order if part != best),
                       key=lambda part: -(tried[part] - before_db if part in tried else alone[part]))
        if steps_since_best(steps) >= PATIENCE:
            log(f"      {PATIENCE} steps without a better held-out SQNR: the search stops here")
            stopped = f"{PATIENCE} steps without a better held-out SQNR"
            break
    if stopped is None:
        stopped = f"every part tried is in {route.precision}" if budget.shortfalls(steps[-1], steps[0]) else "budget met"
    if len(chosen) > 1 and not budget.shortfalls(steps[-1], steps[0]):
        short = {frozenset(earlier.float_parts) for earlier in steps[:-1]}  # the search measured these: none met it
        for part, pruned in spare_parts(chosen, list(parts), lambda rest: step(rest, evaluated(rest), full_int8[2]),
                                        lambda trial: not budget.shortfalls(trial, steps[0]), short):
            steps.append(pruned)
            log(f"      {route.precision} {', '.join(pruned.float_parts)} (without {part}, which the budget no longer needs): "
                f"{measured_text(pruned.to_dict(), budget)}, {pruned.p50_ms:.2f} ms")
            stopped = "budget met; parts it no longer needed put back in int8"
    if chosen and not budget.shortfalls(steps[-1], steps[0]):
        kept = steps[-1].float_parts
        units = [unit for part in sorted(kept, key=list(parts).index) for unit in weight_units(parts[part],
                                                                                             route.weighted)]
        for operator, pruned in spare_operators(units, lambda back: step(kept, evaluated(kept, back), full_int8[2],
                                                                       back),
                                                lambda trial: not budget.shortfalls(trial, steps[0])):
            steps.append(pruned)
            log(f"      {operator_label(operator)} back in int8 (the budget does not need it in {route.precision}): "
                f"{measured_text(pruned.to_dict(), budget)}, {pruned.p50_ms:.2f} ms")
            stopped = "budget met; operators it did not need put back in int8"
    if demote and chosen and not budget.shortfalls(steps[-1], steps[0]):
        kept, back = steps[-1].float_parts, steps[-1].int8_operators
        weight_layers = [(operator,) for part in sorted(kept, key=list(parts).index) for operator in parts[part]
                         if operator in route.dynamic_capable and operator not in back]
        for operator, demoted in spare_operators(
                weight_layers, lambda dynamic: step(kept, evaluated(kept, back, dynamic), full_int8[2], back, dynamic),
                lambda trial: not budget.shortfalls(trial, steps[0])):
            steps.append(demoted)
            log(f"      {operator_label(operator)} in dynamic-range int8 (the budget does not need it in float32): "
                f"{measured_text(demoted.to_dict(), budget)}, {demoted.p50_ms:.2f} ms")
            stopped = "budget met; weight layers it did not need in float32 run in dynamic-range int8"
    return MixedSearch(budget, len(judging), tuple(steps), alone, parts, excluded, stopped, route.precision,
                       route.dynamic_capable, biases_corrected=bool(correctors))


def fold_correctors(corrector, inputs, layout, reference, reference_logits):
    """Per fold of `layout`, the function that corrects its candidates on
    the images its ranges came from (the other folds'), as the artifact is
    corrected on all of them: so every step scores what the artifact would
    be. None where the route corrects nothing."""
    if corrector is None:
        return None
    correctors = []
    for _, positions in layout:
        fitting = np.setdiff1d(np.arange(len(inputs)), positions)
        correctors.append(corrector(inputs[fitting], lambda softmax, fitting=fitting: (
            reference_logits if softmax else reference)[fitting]))
    return correctors


def spare_parts(chosen, graph_order, measure, meets, short=()):
    """(part, Step without it) for each part of `chosen` that the budget
    turns out not to need once the others are float: greedy steps are
    chosen one on top of another, and a part picked early can be made
    redundant by those picked after it. Tried the latest in the graph first
    (a later block holds more weights for the same work, so costs more in
    float32); `measure(parts)` gives the Step, `meets(step)` the verdict;
    part sets in `short` are known to miss the budget and are not measured."""
    kept = tuple(chosen)
    while len(kept) > 1:
        for part in sorted(kept, key=graph_order.index, reverse=True):
            rest = tuple(other for other in kept if other != part)
            if frozenset(rest) in short:
                continue
            trial = measure(rest)
            if meets(trial):
                yield part, trial
                kept = rest
                break
        else:
            return


def weight_units(operators, weighted):
    """A part's operators (graph order) as units that go back to int8
    together: each operator holding weights (a convolution, the classifier)
    with those after it up to the next one (its activation, the block's
    addition), so what it writes is int8 again and the runtime keeps its
    fused int8 kernel (an int8 convolution writing to a float32 neighbour
    runs slower than in float32 on onnxruntime). Operators before the first
    weighted one (padding, pooling) stay float32."""
    units = []
    for operator in operators:
        if operator in weighted:
            units.append([operator])
        elif units:
            units[-1].append(operator)
    return [tuple(unit) for unit in units]


def spare_operators(units, measure, meets):
    """(weight operator, Step with its unit and those before moved down)
    for each unit (weight_units) of the float parts that the budget does not
    need in float32: a block is the search's unit, but a block's float32
    gain often sits in one of its convolutions. Moved down: back in int8,
    or into dynamic-range int8 (whatever `measure` makes of the units it is
    given). One pass, the latest in the graph first (the most weights for
    the same work); `measure(units' operators)` gives the Step,
    `meets(step)` the verdict."""
    back = ()
    for unit in reversed(units):
        trial = measure((*back, *unit))
        if meets(trial):
            back = (*back, *unit)
            yield unit[0], trial


def operator_label(operator):
    """A short name of an operator id (an ONNX node name, or a TFLite scope:
    its output tensors' names joined by ";"): its Keras layer's."""
    return layer_label(operator)


def images_carrying_half_the_gain(reference, before, after):
    """How few images hold half of the squared output error that `after`
    removes from `before` (both against `reference`); None if it removes none."""
    def error(outputs):
        return np.sum((np.asarray(reference, np.float64) - outputs).reshape(len(reference), -1) ** 2, axis=1)

    removed = error(before) - error(after)
    if removed.sum() <= 0:
        return None
    largest_first = np.sort(removed)[::-1]
    return int(np.searchsorted(np.cumsum(largest_first), removed.sum() / 2) + 1)


def support_text(step, images):
    """A step's (dict) gain support, said when it is fragile, else nothing."""
    if not Step.from_dict(step).fragile:
        return ""
    return (f"; half its gain over full int8 rests on {step['gain_images']} of {images} images, so other images "
            "may not see it")


def softmax_relevant(logits_pairs, ranges, softmax_input):
    """The (float, candidate) logits with both raised to the low of the
    int8 softmax input's range in `ranges`: logits below it come out 0
    either way (ranges.softmax_input_floor), so their error is no error of
    the model's output (nor of a float head's, where they come out under
    half an int8 step). Unchanged when `softmax_input` is None."""
    if softmax_input is None or softmax_input.tensor not in ranges:
        return logits_pairs
    low = ranges[softmax_input.tensor][0]
    return tuple(np.maximum(values, low) for values in logits_pairs)


def grids_within(grids_by_positions, positions):
    """grid_sqnrs' [(grids, fold positions), ...] on the images at `positions` only, each fold's positions
    renumbered as they fall in `positions`."""
    index = {position: number for number, position in enumerate(positions)}
    within = [(grids, [index[position] for position in fold if position in index]) for grids, fold in grids_by_positions]
    return [(grids, fold) for grids, fold in within if fold]


def choice_split(layout, choosing_folds, images):
    """(positions of the images that choose the parts, of those that judge the steps) among `images` calibration
    images: the folds of `layout` named in `choosing_folds` choose and the others judge; None: all do both."""
    every = np.arange(images)
    if choosing_folds is None:
        return every, every
    choosing = np.sort(np.concatenate([layout[fold][1] for fold in choosing_folds]))
    return choosing, np.setdiff1d(every, choosing)


def cross_fits(statistics, method):
    """(ranges by `method` from every fold but one, that fold's sample
    positions) for each fold: every calibration image is scored, each by
    ranges that never saw it, as `auto` scores its rules (selection.fits)."""
    return [(activation_ranges(fitted, method), list(positions)) for fitted, positions in fits(statistics)]


def calibration_labels(calibration, classes):
    """The class index (model output) of every calibration sample, in pass
    order, for --max-accuracy-drop: class folders map by the source's sorted
    folder names (or --labels), an .npz's y is the index itself."""
    from ..data.labels import output_indices

    if calibration.labels is None:
        raise ConfigError("--max-accuracy-drop compares top-1 accuracy on held-out calibration images, and these have "
                          "no labels: give --calibration class folders (two or more, every image in one: a folder "
                          "whose images sit in a single sub-folder is read unlabelled) or an .npz with y, or budget "
                          "--min-agreement, which needs none")
    return output_indices(calibration, classes)
