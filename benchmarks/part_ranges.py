"""A range rule per part instead of one per model: do the int8 TFLite's
ranges leave dB that a search could take at no latency cost?

    .venv/bin/python benchmarks/part_ranges.py [MODEL ...]

The trained models of benchmarks/mixed_precision.py (a name part picks;
default: the demo ResNet-50's two heads and the validation ResNet-18's),
convert's split of the digits they never trained on (200 calibrate, 397
evaluate). Ranges start from the rule `auto` chooses for the model; then,
greedily, the one switch of one part's tensors (the budget search's parts:
the stem, each residual block, the head) to another candidate rule of
`auto` that raises the output SQNR on the calibration images the most
(each image scored by ranges from the other three quarters, as the budget
search scores its steps), while that is 0.1 dB or more. Each kept switch is
also scored on the evaluation images (ranges from all 200). With
`--by-logits`, the softmax heads of the models named have their switches
chosen on the softmax's input (the logits) instead of the probabilities,
as the budget search judges a softmax head. Writes
benchmarks/results/part_ranges.{json,md} (rows of other models kept).
"""

import json
import sys
import time

import numpy as np
from common import RESULTS, machine, use_repo_imports, write_results

DEFAULT_MODELS = ("demo ResNet-50 w0.25 32x32", "ResNet-18 w0.5 40x40 seed 11")
WORTH_DB = 0.1  # a switch that gains less on the calibration images is not kept
MOST_SWITCHES = 4


def measure(name, model, size, by_logits=False):
    from mixed_precision import digits

    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import (quantized_int8_io, run_tflite_bytes, tflite_chooser,
                                                  tflite_outputs_and_logits)
    from edge_resnet.quantize.mixed import model_parts, per_image_mean_db, softmax_relevant
    from edge_resnet.quantize.ranges import CANDIDATES, activation_ranges
    from edge_resnet.quantize.selection import calibration_inputs, fits, float_reference, output_sqnr_db
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    started = time.perf_counter()
    float_model = float_tflite(fold_batchnorm(model)[0])
    calibration, evaluation = digits(size)
    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    reference = float_reference(float_model, statistics, inputs)
    evaluation_reference = run_tflite_bytes(float_model, evaluation, "the float model")
    base = tflite_chooser(float_model, True, calibration)(statistics).method
    tensors_of = part_tensors(float_model, model_parts(float_model))
    layout = list(fits(statistics))
    fitted_ranges = [{rule: activation_ranges(fitted, rule) for rule in CANDIDATES} for fitted, _ in layout]
    final_ranges = {rule: activation_ranges(statistics, rule) for rule in CANDIDATES}

    def ranges_with(switches, by_rule):
        ranges = dict(by_rule[base])
        for part, rule in switches.items():
            ranges.update({tensor: by_rule[rule][tensor] for tensor in tensors_of[part]})
        return ranges

    judged = reference
    if by_logits:  # the softmax's input, as the budget search judges a softmax head
        judged = tflite_outputs_and_logits(float_model, inputs)[1]

    def held_out_db(switches):
        """Pooled output SQNR; by logits: the budget search's judge of a softmax head (the mean over images of
        each image's SQNR of the logits that reach the output, mixed.softmax_relevant)."""
        outputs, against = np.empty_like(judged), np.empty_like(judged)
        for by_rule, (_, positions) in zip(fitted_ranges, layout):
            positions = list(positions)
            ranges = ranges_with(switches, by_rule)
            artifact = quantized_int8_io(float_model, ranges)
            if by_logits:
                logits = tflite_outputs_and_logits(artifact, inputs[positions])[1]
                against[positions], outputs[positions] = softmax_relevant((judged[positions], logits), ranges,
                                                                          statistics.softmax_input)
            else:
                against[positions] = judged[positions]
                outputs[positions] = run_tflite_bytes(artifact, inputs[positions], "a candidate")
        return per_image_mean_db(against, outputs) if by_logits else output_sqnr_db(against, outputs)

    def evaluation_db(switches):
        artifact = quantized_int8_io(float_model, ranges_with(switches, final_ranges))
        return output_sqnr_db(evaluation_reference, run_tflite_bytes(artifact, evaluation, "a candidate"))

    switches, current = {}, held_out_db({})
    steps = [{"switch": None, "held_out_db": current, "evaluation_db": evaluation_db({})}]
    print(f"== {name}: {base.describe()}, {steps[0]}", flush=True)
    for _ in range(MOST_SWITCHES):
        trials = {(part, rule): held_out_db({**switches, part: rule})
                  for part in tensors_of if part not in switches for rule in CANDIDATES if rule != base}
        (part, rule), best = max(trials.items(), key=lambda item: item[1])
        if best < current + WORTH_DB:
            steps.append({"switch": None, "best_trial": f"{part} -> {rule.describe()}", "held_out_db": best})
            break
        switches[part], current = rule, best
        steps.append({"switch": f"{part} -> {rule.describe()}", "held_out_db": best,
                      "evaluation_db": evaluation_db(switches)})
        print(f"   {steps[-1]}", flush=True)
    return {"model": name, "judged_by": "logits" if by_logits else "output", "rule": base.describe(),
            "parts": len(tensors_of), "steps": steps,
            "seconds": time.perf_counter() - started}


def part_tensors(float_model, parts):
    """{part: the names of the tensors its operators write} (a scope joins its operators' output names with ";",
    which the converter's names hold too)."""
    from edge_resnet.quantize.mixed import operator_scope
    from edge_resnet.quantize.statistics import read_flatbuffer

    subgraph = read_flatbuffer(float_model).subgraphs[0]
    written = {operator_scope(subgraph, operator): [subgraph.tensors[index].name.decode() for index in operator.outputs]
               for operator in subgraph.operators}
    return {part: [name for scope in scopes for name in written[scope]] for part, scopes in parts.items()}


def markdown(result):
    lines = ["# A range rule per part", "",
             "Command: `python benchmarks/part_ranges.py`", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. From the rule `auto` "
             "chose for the model, greedily the switch of one part's tensors to another candidate rule that "
             f"raises the output SQNR on the 200 calibration images most (each scored by ranges from the other "
             f"three quarters), while it gains {WORTH_DB} dB or more; evaluation: the other 397 digits, ranges "
             "from all 200. Judged by logits (a softmax head, `--by-logits`): the switches are chosen on the "
             "logits that reach the output (the mean over images of each image's SQNR), as the budget search "
             "judges a softmax head, and the held-out column is that; the evaluation column is always the output's.", "",
             "| model | switches judged by | auto's rule | parts | calibration (held-out) dB | evaluation dB | switches kept | best switch not kept (held-out dB) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        first, kept = row["steps"][0], [step for step in row["steps"] if step["switch"]]
        last = kept[-1] if kept else first
        declined = next((step for step in row["steps"][1:] if step["switch"] is None), None)
        lines.append(f"| {row['model']} | {row.get('judged_by', 'output')} | {row['rule']} | {row['parts']} | {first['held_out_db']:.2f} -> "
                     f"{last['held_out_db']:.2f} | {first['evaluation_db']:.2f} -> {last['evaluation_db']:.2f} | "
                     f"{', '.join(step['switch'] for step in kept) or 'none'} | "
                     + (f"{declined['best_trial']} ({declined['held_out_db']:.2f})" if declined else "-") + " |")
    return "\n".join(lines) + "\n"


def main(wanted):
    use_repo_imports()
    from mixed_precision import trained_models

    path = RESULTS / "part_ranges.json"
    saved = json.loads(path.read_text()) if path.exists() else {"rows": []}
    rows = list(saved["rows"])
    by_logits = "--by-logits" in wanted
    judged_by = "logits" if by_logits else "output"
    for name, model, size, _ in trained_models():
        if any(part in name for part in wanted) and (not by_logits or "softmax" in name):
            rows = [row for row in rows if (row["model"], row.get("judged_by", "output")) != (name, judged_by)]
            rows.append(measure(name, model, size, by_logits))
    result = {"machine": machine(), "rows": rows}
    write_results("part_ranges", result, markdown(result))


if __name__ == "__main__":
    main([*(sys.argv[1:] or DEFAULT_MODELS), *(DEFAULT_MODELS if sys.argv[1:] == ["--by-logits"] else ())])
