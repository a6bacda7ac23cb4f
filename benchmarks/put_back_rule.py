"""The budget search's put-back passes, judged another way: an experiment.

benchmarks/step_carry.py found that once a search meets its level, the
put-back passes (parts, then weight layers, back to int8 or into
dynamic-range int8, each kept while the held-out images still meet the
level) hold the held-out gain at the level while the gain on other images
falls: every put-back is accepted on the very images that judge it, and a
put-back that costs a little is accepted whenever those images' noise
hides the cost. Here each put-back must also cost nothing on the held-out
images (its judged SQNR at least that of the step before it), so the
passes keep only what those images see as free. The search is otherwise
the default one (mixed.search_float_parts); the rule is patched in for this
benchmark only, and measured against the saved searches of
`mixed_precision.py bar_mnist` (the MNIST ResNet-50s, both heads and output
types) and the demo ResNet-50's float32-output rows, their latency at 224
timed here beside full int8 as there.

    python benchmarks/put_back_rule.py            # the rows of step_carry.py
    python benchmarks/put_back_rule.py validate   # both rules on models the rule was not chosen on
"""

import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402


def without_loss(spare, measure_current):
    """`spare` (mixed.spare_parts or mixed.spare_operators) whose verdict
    also asks each put-back to keep the judged SQNR of the step before it;
    `measure_current(args)` measures the step the pass starts from."""
    @functools.wraps(spare)
    def patched(*args, **kwargs):
        current = [measure_current(args)]
        meets = args[3] if spare.__name__ == "spare_parts" else args[2]

        def holds(trial):
            if meets(trial) and trial.judged_db >= current[0].judged_db:
                current[0] = trial
                return True
            return False

        changed = (*args[:3], holds, *args[4:]) if spare.__name__ == "spare_parts" else (*args[:2], holds)
        yield from spare(*changed, **kwargs)
    return patched


ORIGINAL = {}


def patch_search(no_loss=True):
    """The put-back passes with the no-loss rule, or (no_loss False) as they are."""
    from edge_resnet.quantize import mixed

    ORIGINAL.setdefault("spare_parts", mixed.spare_parts)
    ORIGINAL.setdefault("spare_operators", mixed.spare_operators)
    mixed.spare_parts, mixed.spare_operators = ORIGINAL["spare_parts"], ORIGINAL["spare_operators"]
    if no_loss:
        mixed.spare_parts = without_loss(mixed.spare_parts, lambda args: args[2](tuple(args[0])))
        mixed.spare_operators = without_loss(mixed.spare_operators, lambda args: args[1](()))


def baselines():
    """{(model, output type): the saved search with the default rule} and the rows this benchmark searches again."""
    saved = json.loads((RESULTS / "mixed_precision.json").read_text())
    rows = {(result["model"], result["output_type"]): result for result in saved["bar_mnist_results"]}
    for result in saved["corrected_float_output_results"]:
        if "demo" in result["model"]:
            timed = next(row for row in saved["bar_retimed_results"]
                         if row["model"] == result["model"] and row["output_type"] == "float32")
            rows[(result["model"], "float32")] = {**result, "latency_224": timed["latency_224"]}
    return rows


def entries():
    """(model name, Keras model, size, depth, data, output type) of every row to search."""
    from mixed_precision import demo_models, digits, mnist_images, mnist_models

    for output_type in ("float32", "int8"):
        for entry in mnist_models():
            yield (*entry, mnist_images, output_type)
    for entry in demo_models():
        yield (*entry, digits, "float32")


def summary(result):
    evaluated = result["evaluation_db"]
    return {"met": result["met_on_held_out"], "precision": result["precision"],
            "parts": len(result["float_parts"]), "operators": result["float_operators"],
            "int8_back": len(result["int8_operators"]), "dynamic": len(result["dynamic_operators"]),
            "evaluation_gain_db": evaluated["mixed"] - evaluated["full int8"],
            "evaluation_db": evaluated["mixed"], "budget_db": result["budget_db"],
            "latency_ratio": result["latency_224"]["mixed_over_int8"]}


def cell(s):
    """A summary() as a table cell: kept (operators), evaluation gain, level within 1 dB, p50 ratio."""
    if not s["met"] or not s["parts"]:
        return f"{'not met' if not s['met'] else 'met'}, {s['parts']} parts, {s['evaluation_gain_db']:+.2f}"
    level = "yes" if s["evaluation_db"] >= s["budget_db"] - 1 else "NO"
    return (f"{s['precision']}: {s['parts']} parts ({s['operators']}; {s['int8_back']} back, {s['dynamic']} "
            f"demoted), {s['evaluation_gain_db']:+.2f}, {level}, {s['latency_ratio']:.2f}x")


def lines(rows, mode=""):
    out = ["# The put-back passes, each asked to cost nothing on the held-out images", "",
           f"Command: `python benchmarks/put_back_rule.py{' ' + mode if mode else ''}`", "",
           f"Machine: {machine()['cpu']}. Default rule: a put-back is kept while the held-out calibration images "
           "still meet the level (" + ("searched in the same run" if mode else "mixed_precision.json's saved "
                                       "searches") + "). No-loss rule: also while its judged "
           "SQNR is at least the step's before it. Same models, images, budget (full int8 + 3 dB on the held-out "
           "images); evaluation gain: over full int8 on the evaluation images (within 1 dB of the 3 asked: 2.0 or "
           "more). Latency: p50 at 224 against full int8, alternating rounds, on this machine for both.", "",
           "| model | output | default: kept (operators), evaluation gain, level within 1 dB, p50 ratio | no-loss: "
           "kept (operators), evaluation gain, level within 1 dB, p50 ratio |", "|---|---|---|---|"]

    for row in rows:
        out.append(f"| {row['model']} | {row['output_type']} | {cell(row['default'])} | {cell(row['no_loss'])} |")
    return out


def validation_entries():
    """(model name, Keras model, size, depth, data, output type) of models the rule was not chosen on: the
    layout-check ResNet-50 of benchmarks/trained.py (digits, never searched for a budget) and the MNIST ResNet-18."""
    from mixed_precision import digits, mnist_images
    from trained import cached_trained, mnist_models, with_softmax

    file_name = "resnet50_w05_digits40_seed59"  # layout_check_models' ResNet-50 (the others are not needed)
    models = [("ResNet-50 w0.5 40x40 seed 59 (trained after the layouts were compared)",
               cached_trained(f"{file_name}.weights.h5", 50, 0.5, 40, 59, file_name), 40, 50, digits)]
    models += [(name, model, size, 18, mnist_images) for name, model, size in mnist_models() if "ResNet-18" in name]
    for output_type in ("float32", "int8"):
        for name, model, size, depth, data in models:
            for head in ("logits", "softmax"):
                yield (f"{name}, {head} head", model if head == "logits" else with_softmax(model), size, depth, data,
                       output_type)


def validate():
    """Both rules on the validation models, in one run (latency timed here for both)."""
    from mixed_precision import measure

    rows = []
    for name, model, size, depth, data, output_type in validation_entries():
        searched = {}
        for rule, no_loss in (("default", False), ("no_loss", True)):
            patch_search(no_loss)
            searched[rule] = measure(name, model, size, depth, output_type=output_type, precision="auto", data=data)
        rows.append({"model": name, "output_type": output_type, "default": summary(searched["default"]),
                     "no_loss": summary(searched["no_loss"]), "results": searched})
        write_results("put_back_rule_validation", {"machine": machine(), "rows": rows},
                      "\n".join(lines(rows, "validate")) + "\n")


def main(arguments=()):
    from mixed_precision import measure

    if "validate" in arguments:
        validate()
        return
    patch_search()
    saved, rows = baselines(), []
    for name, model, size, depth, data, output_type in entries():
        if (name, output_type) not in saved:
            continue
        result = measure(name, model, size, depth, output_type=output_type, precision="auto", data=data)
        rows.append({"model": name, "output_type": output_type, "default": summary(saved[(name, output_type)]),
                     "no_loss": summary(result), "no_loss_result": result})
        write_results("put_back_rule", {"machine": machine(), "rows": rows}, "\n".join(lines(rows)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
