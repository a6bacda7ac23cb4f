"""What a budget search costs at 224 (issue 27), beside one int8 TFLite.

Every budget search in benchmarks/ ran at 32x32-48x48; a user's ResNet-50
runs at 224. Here the full-width ResNet-50 trained on the digits at 32x32
(benchmarks/trained.py) is built at 224 with the same weights (a global
average pool makes the weights size-free), fed each 32x32 digit tiled 7 x 7
(so the network sees digits at the scale it trained at: upscaled to 224 they
saturate a softmax head, and every range rule scores alike) with a softmax
head (keras.applications' default) or a logits head, float32 output, and
made three ways in one run on the same 200 calibration digits (convert's
split):
the statistics pass alone; the int8 TFLite as `quantize` makes it without a
budget (`auto` ranges, biases corrected); and with `--min-sqnr-gain 3` (the
default `--fallback-precision auto`). Seconds and the process's peak
resident memory after each (the peak only grows: a later one includes the
earlier ones). The 397 other digits score full int8 and the artifact.

    python benchmarks/search_cost.py [softmax|logits]   # the head (default softmax; results kept per head)
"""

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

SIZE = 224
GAIN_DB = 3.0


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resnet50_at_224(head):
    """The full-width digits ResNet-50's weights in a ResNet-50 built at 224 with a `head` head."""
    from trained import full_width_resnet50

    from edge_resnet.model.resnet import build_resnet

    trained = full_width_resnet50()
    model = build_resnet(50, input_shape=(SIZE, SIZE, 3), classes=10,
                         classifier_activation="softmax" if head == "softmax" else None)
    model.set_weights(trained.get_weights())
    return model


def tiled_digits():
    """convert's split (mixed_precision.digits) of the digits at 32x32, each tiled 7 x 7 to 224."""
    from mixed_precision import convert_split

    from tests.digits import TRAIN_SAMPLES, digit_pixels

    pixels, labels = digit_pixels(32, None, offset=TRAIN_SAMPLES)
    tiles = SIZE // 32
    return convert_split(np.tile(pixels, (1, tiles, tiles, 1)), labels)


def main(arguments=()):
    head = "logits" if "logits" in arguments else "softmax"
    from mixed_precision import output_sqnr

    from edge_resnet.model.fold import fold_batchnorm
    from edge_resnet.quantize.int8_tflite import write_int8_tflite
    from edge_resnet.quantize.mixed import chosen_step
    from edge_resnet.quantize.recipe import QuantizationRecipe, read_record
    from edge_resnet.quantize.statistics import collect_statistics
    from edge_resnet.quantize.tflite import float_tflite

    float_model = float_tflite(fold_batchnorm(resnet50_at_224(head))[0])
    calibration, evaluation = tiled_digits()
    folder = Path(tempfile.mkdtemp(prefix="search-cost-"))
    seconds, memory = {}, {}

    started = time.perf_counter()
    statistics = collect_statistics(float_model, calibration)
    seconds["statistics pass"], memory["statistics pass"] = time.perf_counter() - started, peak_mib()

    started = time.perf_counter()
    full = write_int8_tflite(float_model, QuantizationRecipe(output_type="float32"), folder / "full.tflite",
                             calibration, statistics, progress=False)
    seconds["int8 TFLite, no budget"], memory["int8 TFLite, no budget"] = time.perf_counter() - started, peak_mib()

    started = time.perf_counter()
    searched = write_int8_tflite(float_model, QuantizationRecipe(output_type="float32", min_sqnr_gain=GAIN_DB),
                                 folder / "searched.tflite", calibration, statistics, progress=False, log=print)
    seconds[f"int8 TFLite, --min-sqnr-gain {GAIN_DB:g}"] = time.perf_counter() - started
    memory[f"int8 TFLite, --min-sqnr-gain {GAIN_DB:g}"] = peak_mib()

    record = read_record(searched)["mixed_precision"]
    chosen = chosen_step(record)
    result = {"machine": machine(), "head": head, "size": SIZE, "calibration_images": record["held_out_images"],
              "seconds": seconds, "peak_mib": memory, "met": record["met"], "stopped": record["stopped"],
              "precision": record["precision"], "steps": len(record["steps"]),
              "float_parts": list(chosen["float_parts"]), "float_operators": chosen["float_operators"],
              "held_out_db": {"full int8": record["steps"][0]["sqnr_db"], "searched": chosen["sqnr_db"],
                              "searched, as judged": chosen.get("estimated_sqnr_db") or chosen["sqnr_db"]},
              "evaluation_db": {"full int8": output_sqnr(float_model, full, evaluation),
                                "searched": output_sqnr(float_model, searched, evaluation)}}
    print(result, flush=True)
    path = RESULTS / "search_cost.json"
    saved = {**(json.loads(path.read_text()) if path.exists() else {}), head: result}
    write_results("search_cost", saved, "\n".join(["# What a budget search costs at 224", "",
                                                  "Command: `python benchmarks/search_cost.py [softmax|logits]`", "",
                                                  *(line for kept in saved.values() for line in lines(kept))]))


def lines(result):
    described = result["machine"]
    base = result["seconds"]["int8 TFLite, no budget"]
    rows = [f"| {stage} | {value:.0f} | {value / base:.1f}x | {result['peak_mib'][stage]:.0f} |"
            for stage, value in result["seconds"].items()]
    evaluated, held = result["evaluation_db"], result["held_out_db"]
    return [f"## {result['head'].capitalize()} head", "",
            f"Machine: {described['cpu']}, {described['cores']} cores, {' '.join(described['isa'])}. The full-width "
            f"digits ResNet-50 (trained at 32x32) built at 224 with a {result['head']} head, float32 output, 200 "
            "calibration digits, each tiled 7 x 7 to 224; one run, stages in this order.", "",
            "| stage | seconds | against the int8 TFLite without a budget | peak resident MiB after it |",
            "|---|---|---|---|", *rows, "",
            f"The search: {'met' if result['met'] else 'not met'} ({result['stopped']}), {result['precision']} parts, "
            f"{result['steps']} steps recorded, kept {len(result['float_parts'])} parts "
            f"({result['float_operators']} operators); on the {result['calibration_images']} held-out calibration "
            f"images full int8 {held['full int8']:.2f} dB, kept {held['searched']:.2f} (judged "
            f"{held['searched, as judged']:.2f}). On the 397 other digits: full int8 {evaluated['full int8']:.2f} dB, "
            f"the searched artifact {evaluated['searched']:.2f} dB "
            f"({evaluated['searched'] - evaluated['full int8']:+.2f}).", ""]


if __name__ == "__main__":
    main(sys.argv[1:])
