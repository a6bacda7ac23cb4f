"""Does a budget search's gain shrink on other images because of how the
steps were chosen? Every step of a saved search, made as the artifact is
made, scored on the evaluation images.

A search that takes many steps ends a little over its level on the
held-out calibration images (3.01-3.15 dB over full int8), and on the
evaluation images the same budgets gained 0.2-2.3 dB; searches that stop at
their first step (the head alone, 3.4-5.4 dB over) carried their gain over.
Two readings: the evaluation images sit apart from the calibration images
(then the shortfall is there from the first step on), or the steps were
picked, and pruned, on the very images that judge them (then the best of
many candidates, and a put-back that stops at the edge of the level, show
more on those images than on others, and the shortfall grows along the
search). This benchmark reads the saved steps of `mixed_precision.py`'s
searches (the MNIST ResNet-50s of `bar_mnist` and the digits ResNet-50
rows with a float32 output), makes each step's artifact with the ranges
from all calibration images and its biases corrected as `quantize` does,
and scores it on the evaluation images against full int8 made the same
way: per step, held-out gain (as the search judged it) beside evaluation
gain.

`fashion` follows the Fashion-MNIST ResNet-50s' searches of `bar_fashion`
instead (judged on 10,000 test images), into step_carry_fashion.md.

    python benchmarks/step_carry.py [fashion] [report]
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402


def saved_searches(fashion=False):
    """(saved search result, where it came from) of the rows this benchmark follows: those of `bar_mnist` and the
    digits rows, or (`fashion`) those of `bar_fashion`."""
    import json

    saved = json.loads((RESULTS / "mixed_precision.json").read_text())
    if fashion:
        yield from ((result, "fashion") for result in saved["bar_fashion_results"]
                    if result["met_on_held_out"] and result["float_parts"])
        return
    for result in saved["bar_mnist_results"]:
        if result["met_on_held_out"] and result["float_parts"]:
            yield result, "mnist"
    for result in saved["corrected_float_output_results"]:
        if "demo" in result["model"] and result["met_on_held_out"]:
            yield result, "digits"


def models_and_data(source):
    """{model name: (Keras model, input size)} and the data split of `source`."""
    from mixed_precision import demo_models, digits, fashion_images, fashion_resnet50s, mnist_images, mnist_models

    if source == "mnist":
        return {name: (model, size) for name, model, size, _ in mnist_models()}, mnist_images
    if source == "fashion":
        return {name: (model, size) for name, model, size, _ in fashion_resnet50s()}, fashion_images
    return {name: (model, size) for name, model, size, _ in demo_models()}, digits


def canonical(scope):
    """An operator id (TFLite scope: tensor names joined by ";") without what differs between two builds of the
    same model in two processes: the model's name and the call suffixes Keras adds to layer names."""
    import re

    return ";".join(sorted(re.sub(r"_\d+(?=/|$)", "", re.sub(r"^[^/]*/", "", name)) for name in scope.split(";")))


def step_artifact(float_model, recipe, route, ranges, step, calibration, statistics):
    """The int8 TFLite of one saved step, made as write_int8_tflite makes the chosen one."""
    from edge_resnet.quantize.bias_correction import corrected_artifact
    from edge_resnet.quantize.mixed import candidate

    back = {canonical(scope) for scope in step.get("int8_operators") or ()}
    demoted = {canonical(scope) for scope in step.get("dynamic_operators") or ()}
    in_parts = [scope for part in step["float_parts"] for scope in route.parts[part]]
    scopes = [scope for scope in in_parts if canonical(scope) not in back]
    dynamic = tuple(scope for scope in scopes if canonical(scope) in demoted)
    if len(in_parts) - len(scopes) != len(back) or len(dynamic) != len(demoted):
        raise SystemExit(f"step {step['float_parts']}: its operators do not match this build of the model")
    return candidate(route, ranges, tuple(scope for scope in scopes if scope not in dynamic), dynamic,
                     lambda made: corrected_artifact(made, float_model, recipe, calibration, statistics)[0])


def rebuilt(result, models, data):
    """(float TFLite, calibration images, evaluation pixels, statistics, recipe, ranges from all calibration
    images, Route, the range rule they came by) of a saved search, as `quantize` sets them up."""
    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import tflite_chooser
    from edge_resnet.quantize.mixed import tflite_route
    from edge_resnet.quantize.recipe import QuantizationRecipe
    from edge_resnet.quantize.selection import resolved_ranges
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    model, size = models[result["model"]]
    float_model = float_tflite(fold_batchnorm(model)[0])
    calibration, evaluation = data(size)
    statistics = collect_statistics(float_model, calibration)
    recipe = QuantizationRecipe(output_type=result["output_type"])
    rule, ranges, _ = resolved_ranges(statistics, recipe.range_method(),
                                      tflite_chooser(float_model, recipe.per_channel, calibration))
    route = tflite_route(float_model, recipe, result["precision"])
    return float_model, calibration, evaluation, statistics, recipe, ranges, route, rule


def follow(result, source, models, data):
    from mixed_precision import chosen_step_index, output_sqnr

    float_model, calibration, evaluation, statistics, recipe, ranges, route, _ = rebuilt(result, models, data)
    folder = Path(tempfile.mkdtemp(prefix="step-carry-"))
    rows, full_eval = [], None
    for index, step in enumerate(result["steps"]):
        path = folder / f"step{index}.tflite"
        path.write_bytes(step_artifact(float_model, recipe, route, ranges, step, calibration, statistics))
        evaluated = output_sqnr(float_model, path, evaluation)
        full_eval = evaluated if full_eval is None else full_eval
        judged = step["estimated_sqnr_db"] if step.get("estimated_sqnr_db") is not None else step["sqnr_db"]
        rows.append({"step": index, "float_parts": list(step["float_parts"]),
                     "int8_operators": len(step.get("int8_operators") or ()),
                     "dynamic_operators": len(step.get("dynamic_operators") or ()),
                     "held_out_gain_db": judged - result["held_out_db"]["full int8"],
                     "evaluation_gain_db": evaluated - full_eval})
        print(result["model"], result["output_type"], rows[-1], flush=True)
    chosen = chosen_step_index(result)
    return {"model": result["model"], "source": source, "output_type": result["output_type"],
            "precision": result["precision"], "chosen_step": chosen,
            "saved_evaluation_gain_db": result["evaluation_db"]["mixed"] - result["evaluation_db"]["full int8"],
            "steps": rows}


def lines(followed, described, command="python benchmarks/step_carry.py"):
    out = ["# Does the gain shrink along the search?", "", f"Command: `{command}`", "",
           f"Machine: {described['cpu']}. Each step of a saved search (benchmarks/results/mixed_precision.json), made "
           "as the artifact is made (ranges from all calibration images, biases corrected), scored on the "
           "evaluation images against full int8 made the same way. Held-out gain: as the search judged the step "
           "(a softmax head's estimate from its logits). Phases: the greedy steps (each the best of its shortlist), "
           "then the put-back passes (parts, then weight layers, back to int8 or into dynamic-range int8 while the "
           "level holds).", ""]
    out += summary_lines(followed)
    for row in followed:
        out += [f"## {row['model']}, {row['output_type']} output, {row['precision']} parts", "",
                f"Chosen: step {row['chosen_step']} (the saved search's evaluation gain "
                f"{row['saved_evaluation_gain_db']:+.2f} dB).", "",
                "| step | kept out of int8 | held-out gain | evaluation gain | held-out minus evaluation |",
                "|---|---|---|---|---|"]
        for step in row["steps"]:
            extra = ""
            if step["int8_operators"]:
                extra += f", {step['int8_operators']} operators back in int8"
            if step["dynamic_operators"]:
                extra += f", {step['dynamic_operators']} weight layers dynamic"
            out.append(f"| {step['step']} | {', '.join(step['float_parts']) or 'full int8'}{extra} | "
                       f"{step['held_out_gain_db']:+.2f} | {step['evaluation_gain_db']:+.2f} | "
                       f"{step['held_out_gain_db'] - step['evaluation_gain_db']:+.2f} |")
        out.append("")
    return out


def greedy_end(steps):
    """The index of the last greedy step: the greedy phase adds one part per step (step i keeps i parts)."""
    return max(index for index, step in enumerate(steps)
               if all(len(earlier["float_parts"]) == position and not earlier["int8_operators"]
                      and not earlier["dynamic_operators"] for position, earlier in enumerate(steps[:index + 1])))


def summary_lines(followed):
    """Per search: the held-out and evaluation gains where the greedy steps ended and at the chosen step."""
    from mixed_precision import BUDGET_OVER_FULL_INT8_DB

    gain_within = BUDGET_OVER_FULL_INT8_DB - 1  # within 1 dB of the gain asked
    out = ["| model | output | greedy end: parts, held-out gain, evaluation gain | chosen (after the put-back passes): "
           "held-out gain, evaluation gain |", "|---|---|---|---|"]
    ends, chosen = [], []
    for row in followed:
        end, pick = row["steps"][greedy_end(row["steps"])], row["steps"][row["chosen_step"]]
        ends.append(end["evaluation_gain_db"])
        chosen.append(pick["evaluation_gain_db"])
        out.append(f"| {row['model']} | {row['output_type']} | {len(end['float_parts'])}, "
                   f"{end['held_out_gain_db']:+.2f}, {end['evaluation_gain_db']:+.2f} | "
                   f"{pick['held_out_gain_db']:+.2f}, {pick['evaluation_gain_db']:+.2f} |")
    out += ["", f"Mean evaluation gain: {sum(ends) / len(ends):+.2f} dB where the greedy steps ended, "
            f"{sum(chosen) / len(chosen):+.2f} at the chosen step; within 1 dB of the 3 asked (2.0 or more): "
            f"{sum(gain >= gain_within for gain in ends)} and {sum(gain >= gain_within for gain in chosen)} of "
            f"{len(followed)}.", ""]
    return out


def main(arguments=()):
    fashion = "fashion" in arguments  # the Fashion-MNIST searches of `bar_fashion`, in their own results file
    name = "step_carry_fashion" if fashion else "step_carry"
    command = "python benchmarks/step_carry.py" + " fashion" * fashion
    if "report" in arguments:  # the markdown again from the saved JSON
        import json

        saved = json.loads((RESULTS / f"{name}.json").read_text())
        write_results(name, saved, "\n".join(lines(saved["searches"], saved["machine"], command)) + "\n")
        return

    followed, loaded = [], {}
    for result, source in saved_searches(fashion):
        if source not in loaded:
            loaded[source] = models_and_data(source)
        followed.append(follow(result, source, *loaded[source]))
        write_results(name, {"machine": machine(), "searches": followed},
                      "\n".join(lines(followed, machine(), command)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
