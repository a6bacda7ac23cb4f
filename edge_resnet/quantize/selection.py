"""The `auto` range method: choose the range rule on the user's own model.

No fixed rule wins everywhere: clipping outliers (percentile) helps a model
whose output follows a softmax and hurts one whose output is the logits,
where the clipped tensor is the output itself. So every candidate rule of
ranges.CANDIDATES (for the TFLite of a softmax head, all but extrapolated:
candidates_for) is tried on the calibration images: every fold in turn is
held out, the rule's ranges come from the other folds' statistics, the
real int8 artifact is made with them and run by its own runtime on the
held-out fold's images, and its outputs are compared with the float
model's. A rule that clips what unseen images then exceed is caught here.
A rule's score is its output SQNR (dB) pooled over every calibration image,
each scored by ranges that never saw it; the best rule (min/max is one, so
the choice is never worse than min/max on these images) then takes its
ranges from all images. The budget search (mixed.cross_fits) scores its
candidates in the same layout.

Why three folds fit and not one (ranges from one fold alone, scored on the
other three, as `auto` did before): ranges fitted on a
quarter of the images reach a lower maximum than those from all of them,
so the images they score exceed them more often than deployed images
exceed the final ranges, and rules that widen the ranges (extrapolated)
win there and lose after. On InceptionV3, a network no rule was chosen on
(benchmarks/inception_v3.py), that took `extrapolated` on every logits
subset, 1.15 dB under min/max, the best fixed rule there; three folds
fitting took min/max on two of three (benchmarks/results/inception_v3.md,
"fold layouts"). Replayed on the per-image numbers of 30 rows of
benchmarks/choice_noise.py (`... layouts three_fit`, `... choosers`), three
folds fitting came 0.47 dB short of the best fixed rule on average against
0.56 for one fold: better on the digits logits heads (0.07 against 0.33),
level on their softmax heads (0.79 against 0.82), worse on the three MNIST
networks' (0.40 / 0.61 against 0.27 / 0.53). It also runs each candidate
on 200 images instead of 300.

Every rule runs every fit. Racing them (race(): only the best share of the
rules after a heat runs the next) was measured, in the one-fold layout, and
not shipped:
benchmarks/auto_race.py replays choose() under several schedules on the
same outputs. Running the best quarter of the rules and min/max on the
second fit ran 0.68x the candidates' image runs (at ResNet-50 224 on an
AVX2 CPU, auto 82 s against 106 s: benchmarks/calibration.py cost) but,
calibrated on images the models never trained on (what users do), came
0.75 dB short of the best fixed rule on average against 0.63 over twelve
rows, worse on four and better on one; halving the field twice came 0.68
short. More fits did better there (every fold fitting, each scored on the
next two folds: 0.37 short, 1.35x the runs), a layout defined after those
rows were seen, and on a ResNet-152 held back from them it came 0.72 short
against 0.03 for what shipped then (benchmarks/results/auto_race.md). Running the
candidates is most of what `auto` costs; the int8 TFLite's candidates share
runs where they can (int8_tflite.run_int8_candidates).

The score can instead be the mean over the held-out images of each
image's output SQNR in dB (--calibration-score per-image). A logits head's
pooled SQNR is ruled by the few images whose largest logits reach past
the ranges, so the pooled score takes the widest rule; clipping those
images rarely changes their top class, and the wider grid moves many
other images' close calls. On seven MNIST and Fashion-MNIST logits heads
(benchmarks/logits_top1.py choosers) the per-image score's choice kept
more of the float model's top-1 on every network, +0.43 points on
average, for 2.9 dB less pooled SQNR; on their softmax heads it moved
top-1 by nothing. Pooled stays the default (issue 23 measures the
output's SQNR); on a model whose output is not a softmax the line says
which rule the per-image score would take where that is another (on
the int8 TFLite, where it was measured).

A choice also says how sure it is: the share of resamples of the held-out
images on which the winner stays best (within INDISTINGUISHABLE_DB, so
rules that differ only on the output do not split it). A softmax head's
output error sits in the few images it is unsure of, so its choice often
rests on two or three of them; no chooser that sees ~150 images, not even
one that sees the evaluation images themselves, meets issue 23's choice bar
there reliably (benchmarks/choice_noise.py), so the user is told, and told
that more calibration images help.
"""

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np

from ..data.images import DataWarning
from ..errors import ConfigError
from .statistics import FOLDS, MIN_FOLD_SAMPLES, too_few_for_folds
from .ranges import (AUTO, CANDIDATES, DEFAULT_AUTO_SCORE, RangeMethod, activation_ranges, ranges_fingerprint,
                     room_for)

INDISTINGUISHABLE_DB = 0.1  # every candidate within this of the others: the images cannot tell them apart
HELD_OUT_LAYOUT = "each fold scored by ranges from the others"  # the records' name for fits()
RESAMPLES = 1000  # resamples of the held-out images that say how sure a choice is
RESAMPLE_BATCH = 100  # resamples drawn at once (a draw holds one count per calibration image)
SURE_SHARE = 0.5  # a rule best on fewer resamples than this rests on a few images, and the line says so


@dataclass(frozen=True)
class Choice:
    """What `auto` tried and what it took."""

    method: object  # the winning RangeMethod
    scores: tuple  # (RangeMethod, held-out score dB by `score`) per candidate, in the order tried
    held_out: int  # samples scored on (each held out from the ranges that scored it)
    folds: int
    scored_on: str  # the artifact and runtime that ran them
    stays_best: float = None  # share of resamples of the held-out images on which `method` stays best
    lead_images: int = None  # fewest held-out images holding half of `method`'s lead over min/max (None: min/max)
    score: str = DEFAULT_AUTO_SCORE  # how the candidates were scored (score_db)
    other_scores: tuple = None  # (RangeMethod, held-out score dB by the other score, or None unscored) per candidate
    per_image_choice: object = None  # pooled on a logits head: the rule the per-image score takes, where another

    @property
    def decided(self):
        """Whether the scores told the candidates apart at all."""
        return told_apart([score for _, score in self.scores])

    def record(self):
        by_score = {self.score: self.scores, **({other_score(self.score): self.other_scores}
                                                if self.other_scores else {})}
        return {"held_out_samples": self.held_out, "folds": self.folds, "decided_by_scores": self.decided,
                "layout": HELD_OUT_LAYOUT, "score": self.score,
                "metric": f"{SCORE_WORDS[self.score]} (each fold scored by ranges from the other folds)",
                "chosen_rule": self.method.describe(), "scored_on": self.scored_on,
                **({"stays_best_share": round(self.stays_best, 3), "resamples": RESAMPLES,
                    "images_with_half_the_lead_over_minmax": self.lead_images} if self.stays_best is not None else {}),
                **({"per_image_choice": self.per_image_choice.describe()} if self.per_image_choice else {}),
                "candidates": [{**method.to_dict(), "rule": method.describe(),
                                **{SCORE_KEYS[name]: _finite(scores[index][1]) for name, scores in by_score.items()
                                   if scores[index][1] is not None}}  # None: a race dropped it before this score
                               for index, (method, _) in enumerate(self.scores)]}

    def describe(self):
        return describe_selection({"method": AUTO, "chosen": self.method.to_dict(), "selection": self.record()})


def told_apart(scores):
    """Whether candidates' scores differ by INDISTINGUISHABLE_DB or more (or one is exact and another not)."""
    if len(set(scores)) == 1:
        return False
    return not np.all(np.isfinite(scores)) or max(scores) - min(scores) >= INDISTINGUISHABLE_DB


SCORE_KEYS = {"pooled": "held_out_sqnr_db", "per-image": "held_out_mean_image_db"}  # a candidate's, in records
SCORE_WORDS = {"pooled": "the output SQNR (dB) against the float model, pooled over every calibration image",
               "per-image": "the mean over every calibration image of its output SQNR (dB) against the float model"}


def score_key(selection):
    """The key of a selection record's candidates that holds the score it chose by (records before the per-image
    score: pooled)."""
    return SCORE_KEYS[selection.get("score", DEFAULT_AUTO_SCORE)]


def other_score(score):
    return next(name for name in SCORE_KEYS if name != score)


def _finite(value):
    """JSON has no infinities: an exact match is written as None."""
    return round(value, 3) if np.isfinite(value) else None


def describe_selection(record):
    """The one-line summary of an artifact's activation_ranges record."""
    if record.get("method") != AUTO:
        return RangeMethod.from_dict(record).describe()
    selection = record["selection"]
    scores = {entry["rule"]: entry[score_key(selection)] for entry in selection["candidates"]}
    # the rule as scored, without a tail room (room_text says what became of it)
    chosen = selection.get("chosen_rule") or RangeMethod.from_dict(record["chosen"]).describe()
    if not scores:
        return f"{chosen}: nothing held out to choose on ({selection['reason']}){room_text(selection)}"
    if not selection.get("decided_by_scores", True):
        return (f"{chosen}: every rule scored {_text_db(scores[chosen])} within {INDISTINGUISHABLE_DB} dB on "
                f"{selection['held_out_samples']} held-out calibration images, no evidence for any"
                f"{room_text(selection)}")
    scored = " scored per image" if selection.get("score") == "per-image" else ""
    return (f"{chosen}, chosen on {selection['held_out_samples']} held-out calibration images{scored}: "
            f"{_text_db(scores[chosen])} vs minmax {_text_db(scores['minmax'])}{sureness_text(selection)}"
            f"{room_text(selection)}{per_image_text(selection)}")


def per_image_text(selection):
    """Where the pooled score took one rule on a logits head and each image's own SQNR, averaged, another: say
    so (on classifiers' logits the per-image score's choice kept more top-1 agreement:
    benchmarks/results/logits_top1.md, "choosers")."""
    if "per_image_choice" not in selection:
        return ""
    return (f"; each image's SQNR, averaged, favours {selection['per_image_choice']} (--calibration-score "
            "per-image: on a classifier's logits it kept more top-1 agreement)")


def sureness_text(selection, images="those images"):
    """How sure the choice is: the share of resamples of the held-out images
    on which it stays best, and where that is under half, on how few of
    them its lead over min/max rests."""
    if "stays_best_share" not in selection:
        return ""
    text = (f"; it stays best (within {INDISTINGUISHABLE_DB} dB) on {selection['stays_best_share']:.0%} of "
            f"{selection['resamples']} resamples of {images}")
    if selection["stays_best_share"] >= SURE_SHARE:
        return text
    lead = selection.get("images_with_half_the_lead_over_minmax")
    lead_text = f", half its lead over minmax lies in {lead} held-out image{'s' * (lead != 1)}" if lead else ""
    return f"{text}{lead_text}: a larger --calibration-size makes the choice surer"


def _text_db(value):
    return "exact" if value is None else f"{value:.1f} dB"


def no_folds_reason(statistics):
    return (f"auto scores rules on held-out calibration images and these statistics have none "
            f"({no_folds_cause(statistics)})")


def no_folds_cause(statistics):
    """Why statistics have no held-out folds: too few samples, or a file saved before folds were kept."""
    if too_few_for_folds(statistics.samples):
        return too_few_text(statistics.samples)
    return "they were saved by an earlier version, which kept no folds"


def too_few_text(count):
    return f"{count} samples: it takes at least {FOLDS * MIN_FOLD_SAMPLES}"


def check_budget_images(recipe, calibration):
    """A budget measures on held-out calibration images: too few to hold
    some out are refused before the statistics pass, not after it."""
    if recipe.budget() is not None and calibration is not None and too_few_for_folds(len(calibration)):
        raise ConfigError(f"{recipe.budget().flags()} measures on held-out calibration images and there are too few "
                          f"to hold some out ({too_few_text(len(calibration))}); calibrate on more images (more in "
                          "--calibration, or a larger --calibration-size)")


def no_folds_fix(statistics):
    """What gives statistics held-out folds (no_folds_cause says why they have none)."""
    if too_few_for_folds(statistics.samples):
        return "calibrate on more images"
    return "collect them again (leave out --statistics)"


def calibration_inputs(calibration, statistics):
    """The calibration samples the statistics were collected on, as one
    array in pass order."""
    check_same_calibration(calibration, statistics)
    return np.stack(list(calibration.samples())).astype(np.float32, copy=False)


def float_reference(float_model, statistics, inputs):
    """The float TFLite's outputs on `inputs`, the calibration samples in
    pass order: those the statistics pass kept, else run again."""
    from .int8_tflite import run_tflite_bytes

    if statistics.float_outputs is not None and len(statistics.float_outputs) == len(inputs):
        return statistics.float_outputs
    return run_tflite_bytes(float_model, inputs, "the float model")


def float_logits_reference(float_model, statistics, inputs):
    """A softmax head's float logits (the softmax's input) on `inputs`, the
    calibration samples in pass order: those the statistics pass kept, else
    the float model run again."""
    from .int8_tflite import tflite_outputs_and_logits

    if statistics.float_logits is not None and len(statistics.float_logits) == len(inputs):
        return statistics.float_logits
    return tflite_outputs_and_logits(float_model, inputs)[1]


def check_same_calibration(calibration, statistics):
    """Refuse to score rules on other images than the statistics came from."""
    if calibration is None:
        raise ConfigError("--calibration-method auto runs each rule on the calibration images the statistics came "
                          "from: give --calibration PATH with --statistics, or name a method "
                          "(e.g. --calibration-method extrapolated)")
    if calibration.fingerprint != statistics.calibration.get("fingerprint"):
        raise ConfigError(
            f"the calibration images ({calibration.source}, fingerprint {calibration.fingerprint[:12]}) are not the "
            f"ones the statistics were collected on ({statistics.calibration.get('fingerprint', '?')[:12]}); "
            "give the same --calibration, or name a --calibration-method")


def candidates_for(statistics):
    """What `auto` tries for the int8 TFLite of this model: every rule of
    ranges.CANDIDATES, but on a model ending in a softmax not
    `extrapolated`. There the output error sits in the few images the model
    is unsure of, and widening a range beyond what the calibration images
    reached only coarsens the grids they are rounded on (the int8 logits'
    among them), to spare the extremes of sure images, whose outputs a
    softmax saturates anyway. Its held-out score there rests on those few
    images, so it won by chance: over eleven softmax heads of
    benchmarks/choice_noise.py it was the worst fixed rule (2.1 dB short of
    the best on average), `auto` took it on 4 of 44 calibration subsets and
    each time the rule it takes without it did better on the evaluation
    images (mean gap to the best fixed rule -0.87 -> -0.75 dB). The int8
    ONNX, which keeps the logits and the softmax in float, still tries every
    rule: this was not measured on it, and `extrapolated` served its
    ResNet-34 softmax head well (benchmarks/results/calibration.md)."""
    if statistics.softmax_input is None:
        return CANDIDATES
    return tuple(rule for rule in CANDIDATES if rule.name != "extrapolated")


def choose(statistics, inputs, int8_outputs, reference, scored_on, candidates=CANDIDATES, race_heats=None,
           score=DEFAULT_AUTO_SCORE, name_per_image_choice=False):
    """The Choice among `candidates` by `score` (score_db); with
    `name_per_image_choice` (the int8 TFLite's, where it was measured) a
    pooled choice on a model whose output is not a softmax also names the
    rule the per-image score takes, where it is another. `inputs` are the
    calibration samples in pass order, `reference` the float model's outputs
    on them; `int8_outputs([ranges, ...], images)` runs the int8 artifact
    made with each ranges on `images` (all of a heat's at once, so the
    artifacts can share runs: int8_tflite.run_int8_candidates). The
    candidates race through `race_heats` (heats(statistics) unless given);
    rules that give a fit the same ranges are run once."""
    reference = np.asarray(reference, np.float64)
    layout = list(fits(statistics))  # the schedule says which fits run
    per_image_of, ran = {}, {}  # (heat, ranges fingerprint) -> per-image errors; (candidate, heat) -> that key

    def heat_errors(racing, heat):
        fitted, positions = layout[heat.fit]  # a fit scores only the images its ranges never saw
        positions = list(positions)
        ranges_of = [activation_ranges(fitted, candidates[candidate]) for candidate in racing]
        keys = [(heat, ranges_fingerprint(ranges)) for ranges in ranges_of]
        ran.update(((candidate, heat), key) for candidate, key in zip(racing, keys))
        new = {key: ranges for key, ranges in zip(keys, ranges_of) if key not in per_image_of}
        for key, outputs in zip(new, int8_outputs(list(new.values()), inputs[positions]), strict=True):
            per_image_of[key] = ImageErrors(np.asarray(positions), *per_image_errors(reference[positions], outputs))
        return [per_image_of[key] for key in keys]

    schedule = race_heats or heats(statistics)
    scores, scored = race(len(candidates), schedule, heat_errors, score)
    finalists = [index for index, count in enumerate(scored) if count == max(scored)]
    best = max(finalists, key=lambda index: (scores[index], -index))
    errors = {candidate: [per_image_of[ran[candidate, heat]] for heat in schedule] for candidate in finalists}
    other = {candidate: score_db(errors[candidate], other_score(score)) for candidate in finalists}
    choice = Choice(candidates[best], tuple(zip(candidates, scores)), len(inputs), len(statistics.folds), scored_on,
                    score=score, other_scores=tuple((candidates[index], other.get(index))
                                                    for index in range(len(candidates))))
    if not choice.decided:  # no evidence for any rule: the first candidate (min/max), not a winner by noise
        return dataclasses.replace(choice, method=candidates[0])
    per_image_best = max(finalists, key=lambda index: (other[index], -index))
    hint = (name_per_image_choice and score == "pooled" and statistics.softmax_input is None
            and per_image_best != best and told_apart(list(other.values())))
    return dataclasses.replace(choice, stays_best=stays_best_share(errors, best, [0] * len(schedule), score=score),
                               lead_images=None if best == 0 else images_with_half_the_lead(errors[0], errors[best],
                                                                                            score),
                               per_image_choice=candidates[per_image_best] if hint else None)


@dataclass(frozen=True)
class ImageErrors:
    """One candidate's artifact on one heat's images: each image's position
    in the calibration samples, output signal and squared output error."""

    positions: np.ndarray
    signal: np.ndarray
    noise: np.ndarray

    def sums(self):
        return float(np.sum(self.signal)), float(np.sum(self.noise))

    def image_db(self):
        return image_db_of(self.signal, self.noise)


def image_db_of(signal, noise):
    """Each image's output SQNR (dB) from its signal and squared error; an
    exact image counts as 120 dB, not infinity."""
    signal, noise = np.asarray(signal, np.float64), np.asarray(noise, np.float64)
    floor = np.maximum(signal * 1e-12, 1e-30)
    return 10 * np.log10(np.maximum(signal, 1e-30) / np.maximum(noise, floor))


def score_db(errors, score):
    """A candidate's score (dB) from its ImageErrors of the heats it ran:
    "pooled", its output SQNR over all their images (the images with the
    largest errors rule it: on a logits head, the few whose largest logits
    reach past the ranges), or "per-image", the mean of each image's SQNR
    (every image counts alike: the typical image)."""
    if score == "pooled":
        signal, noise = 0.0, 0.0
        for heat in errors:  # summed heat by heat, in order
            heat_signal, heat_noise = heat.sums()
            signal, noise = signal + heat_signal, noise + heat_noise
        return sqnr_of_sums(signal, noise)
    return float(np.mean(np.concatenate([heat.image_db() for heat in errors])))


def per_image_errors(reference, outputs):
    """(signal, squared error) of each sample's outputs against the float reference."""
    reference, outputs = np.asarray(reference, np.float64), np.asarray(outputs, np.float64)
    flat = len(reference), int(np.prod(reference.shape[1:]))
    return np.sum(reference.reshape(flat) ** 2, axis=1), np.sum((reference - outputs).reshape(flat) ** 2, axis=1)


def stays_best_share(errors, chosen, group_of_heat, resamples=RESAMPLES, score=DEFAULT_AUTO_SCORE):
    """The share of resamples of the held-out images on which `chosen`
    scores best, or within INDISTINGUISHABLE_DB of the best (rules that
    differ only on the output score alike). A resample draws images with
    replacement, the same draw for every candidate. `errors`: candidate ->
    [ImageErrors per heat of the schedule]; `group_of_heat` puts each heat
    in a group whose images are pooled into one SQNR (or, by the per-image
    score, into one mean of the images' dB), and a candidate's score is the
    mean over the groups (choose() passes one group for all heats, as
    race() pools them). Only the candidates in `errors` compete (a race that
    dropped others does not replay their heats)."""
    candidates = sorted(errors)
    heats = errors[candidates[0]]
    images = 1 + max(int(np.max(heat.positions)) for heat in heats)
    rng = np.random.default_rng(0)
    in_groups = [[heat for heat, of in enumerate(group_of_heat) if of == group]
                 for group in sorted(set(group_of_heat))]
    image_db = [group_image_db(errors, candidates, in_group) for in_group in in_groups] if score == "per-image" else []
    stays = 0
    for batch in np.array_split(np.arange(resamples), -(-resamples // RESAMPLE_BATCH)):  # bounded memory
        draws = rng.multinomial(images, np.full(images, 1 / images), size=len(batch))
        groups_db = []
        for group, in_group in enumerate(in_groups):
            weights = np.concatenate([draws[:, heats[heat].positions] for heat in in_group], axis=1)
            if score == "per-image":
                groups_db.append(weights @ image_db[group] / np.sum(weights, axis=1, keepdims=True))
                continue
            signal = weights @ np.concatenate([heats[heat].signal for heat in in_group])
            noise = weights @ np.stack([np.concatenate([errors[candidate][heat].noise for heat in in_group])
                                        for candidate in candidates], axis=1)
            groups_db.append(sqnr_db_of_arrays(signal[:, None], noise))
        scores = np.mean(groups_db, axis=0)
        stays += int(np.sum(scores[:, candidates.index(chosen)] >= np.max(scores, axis=1) - INDISTINGUISHABLE_DB))
    return stays / resamples


def group_image_db(errors, candidates, in_group):
    """(images, candidates): each image's SQNR dB over the heats of one group, a column per candidate."""
    return np.stack([np.concatenate([errors[candidate][heat].image_db() for heat in in_group])
                     for candidate in candidates], axis=1)


def sqnr_db_of_arrays(signal, noise):
    """sqnr_of_sums elementwise: no noise is +inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(noise == 0, np.inf, 10 * np.log10(signal / np.where(noise == 0, 1.0, noise)))


def sqnr_standard_error_of(signal, noise):
    """The standard error (dB) of the pooled SQNR, 10 log10(total signal /
    total error), of images with these per-image `signal` and squared
    `noise`, as a sample of the images the model will see: to first order
    its spread over resamples of the images is that of the mean of each
    image's signal and error, each over its own mean (their difference).
    Where a few images hold most of the error it is large: those few decide
    the level. It counts the images' sampling only (not what chose the
    ranges or the parts on them). None for fewer than two images, no
    signal or error, or a non-finite one."""
    signal, noise = np.asarray(signal, np.float64), np.asarray(noise, np.float64)
    if len(signal) < 2 or not noise.sum() > 0 or not signal.sum() > 0:
        return None
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite error: no number, below
        relative = signal / signal.mean() - noise / noise.mean()
        standard_error = float(10 / np.log(10) * np.sqrt(np.var(relative, ddof=1) / len(signal)))
    return standard_error if np.isfinite(standard_error) else None


def images_with_half_the_lead(minmax_errors, chosen_errors, score=DEFAULT_AUTO_SCORE):
    """How few held-out images (each summed over the heats that scored it)
    hold half of what separates the chosen rule's squared error from
    min/max's, or by the per-image score its images' dB (None where nothing
    does)."""
    positions = np.concatenate([errors.positions for errors in minmax_errors])
    difference = np.concatenate([lead_of(minmax, chosen, score) for minmax, chosen in zip(minmax_errors,
                                                                                          chosen_errors)])
    per_image = np.abs(np.bincount(positions, weights=difference))
    if not per_image.sum() > 0:
        return None
    largest_first = np.sort(per_image)[::-1]
    return int(np.searchsorted(np.cumsum(largest_first), largest_first.sum() / 2) + 1)


def lead_of(minmax, chosen, score):
    """Each image's part in what separates the chosen rule from min/max on one heat: its squared error less, or
    by the per-image score its dB more."""
    if score == "per-image":
        return chosen.image_db() - minmax.image_db()
    return minmax.noise - chosen.noise


def one_at_a_time(int8_output):
    """choose()'s int8_outputs from a function of one ranges: (ranges, images) -> outputs."""
    return lambda ranges_list, images: [int8_output(ranges, images) for ranges in ranges_list]


@dataclass(frozen=True)
class Heat:
    """One round of the race: the ranges of fits()[fit] scored on `folds`'
    images (choose() scores a fit on the images it yields, the fold its
    ranges never saw); `keep` is the share of the field that runs the next
    heat."""

    fit: int
    folds: tuple
    keep: float = 1.0


def heats(statistics):
    """What `auto` runs: every rule on each fold's images with the ranges
    of the other folds. Nothing is dropped between the fits (why: the
    module's docstring)."""
    return tuple(Heat(fold, (fold,)) for fold in range(len(statistics.folds)))


def race(count, schedule, heat_errors, score=DEFAULT_AUTO_SCORE):
    """([score dB], [heats run]) per candidate 0..count-1 after running the
    heats of `schedule` in turn. `heat_errors([candidate, ...], heat)` is
    the ImageErrors of each candidate's artifact on the heat's images. A
    candidate's score is score_db over every heat it ran; after each heat
    the best `keep` share goes on (ties to the earlier), and candidate 0
    (min/max) always does, so a winner among those that ran every heat beat
    min/max on the same images."""
    ran = [[] for _ in range(count)]
    alive = list(range(count))
    for heat in schedule:
        for candidate, errors in zip(alive, heat_errors(alive, heat)):
            ran[candidate].append(errors)
        ranked = sorted(alive, key=lambda candidate: (-score_db(ran[candidate], score), candidate))
        survivors = ranked[:max(1, int(np.ceil(len(alive) * heat.keep)))]
        alive = sorted(set(survivors) | {0})
    return [score_db(errors, score) for errors in ran], [len(errors) for errors in ran]


def signal_and_noise(reference, outputs):
    signal, noise = per_image_errors(reference, outputs)
    return float(np.sum(signal)), float(np.sum(noise))


def sqnr_of_sums(signal, noise):
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def fits(statistics):
    """(statistics of every fold but one, that fold's sample positions in
    pass order) for each fold."""
    for fold, part in enumerate(statistics.folds):
        yield statistics.fitting_part(fold), tuple(part.positions)


def output_sqnr_db(reference, outputs):
    """SQNR of `outputs` against the float `reference`, in dB, over all their values."""
    return sqnr_of_sums(*signal_and_noise(reference, outputs))


def resolved_ranges(statistics, method, choose_for_artifact):
    """(range rule, ranges from all samples, selection record or None).
    `choose_for_artifact(statistics)` gives the Choice for `auto`."""
    if method.name != AUTO:
        return method, activation_ranges(statistics, method), None
    if statistics.folds is None:
        reason = no_folds_reason(statistics)
        warnings.warn(f"{reason}: took minmax, the rule auto never does worse than; {no_folds_fix(statistics)} "
                      "for a choice", DataWarning, stacklevel=2)
        minmax = RangeMethod("minmax")
        chosen = room_for(minmax, method.room)
        return chosen, activation_ranges(statistics, chosen), {
            "held_out_samples": 0, "chosen_rule": minmax.describe(), "candidates": [], "reason": reason,
            **room_record(method.room, chosen)}
    choice = choose_for_artifact(statistics, method.auto_score)
    if not choice.decided:
        warnings.warn(f"auto: {undecided_reason(choice)}", DataWarning, stacklevel=2)
    chosen = room_for(choice.method, method.room)  # the candidates were tried without room
    return chosen, activation_ranges(statistics, chosen), {**choice.record(), **room_record(method.room, chosen)}


def room_record(asked, chosen):
    """The selection record's word on --tail-room: {} where none was asked."""
    return {} if asked is None else {"tail_room": {"asked": asked, "applied": chosen.room is not None}}


def room_text(selection):
    """What became of --tail-room after the choice ('; then room for ...' or '; no tail room: ...'), or ''."""
    room = selection.get("tail_room")
    if not room:
        return ""
    if room["applied"]:
        return f"; then room for {room['asked']:g}x the images"
    return (f"; no tail room ({room['asked']:g}x asked): {selection['chosen_rule']} clips the extremes on purpose, "
            "and room would undo it")


def undecided_reason(choice):
    scored = "output SQNR" if choice.score == "pooled" else "mean of each image's output SQNR"
    return (f"every range rule gave the same {scored} within {INDISTINGUISHABLE_DB} dB on the "
            f"{choice.held_out} held-out calibration images, so they hold no evidence for any; took "
            f"{choice.method.describe()}. The model's outputs do not move with the ranges on these images (a softmax "
            "saturated on images it was trained on does this): calibrate on images it has not seen, or name "
            "--calibration-method")
