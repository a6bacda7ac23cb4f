"""What a .tflite file really contains: operators, tensor types, and how
much of it XNNPACK takes. TensorFlow-free, so it also runs on a device."""

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .runtime import tflite_interpreter

QUANTIZE_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclass(frozen=True)
class TfliteStructure:
    op_counts: dict  # operator name -> count, before delegation
    input_dtype: str
    output_dtype: str
    float_ops: tuple  # operators that compute in floating point
    body_quantize_ops: tuple  # QUANTIZE/DEQUANTIZE away from the model's inputs/outputs
    delegate_nodes: int
    fully_delegated: bool  # one XNNPACK node spanning inputs to outputs

    @property
    def fully_integer(self):
        return not self.float_ops and not self.body_quantize_ops

    def to_dict(self):
        return {
            "op_counts": dict(self.op_counts),
            "input_dtype": self.input_dtype,
            "output_dtype": self.output_dtype,
            "float_ops": list(self.float_ops),
            "body_quantize_ops": list(self.body_quantize_ops),
            "fully_integer": self.fully_integer,
            "delegate_nodes": self.delegate_nodes,
            "fully_delegated": self.fully_delegated,
        }


def _is_float(dtype):
    return np.issubdtype(np.dtype(dtype), np.floating)


def inspect_tflite(path):
    plain = tflite_interpreter(path, delegates=False)
    ops = plain._get_ops_details()
    model_inputs = {d["index"] for d in plain.get_input_details()}
    model_outputs = {d["index"] for d in plain.get_output_details()}
    float_ops, body_quantize_ops = [], []
    for op in ops:
        at_boundary = (op["op_name"] == "QUANTIZE" and set(op["inputs"]) <= model_inputs) or (
            op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) <= model_outputs
        )
        if op["op_name"] in QUANTIZE_OPS and not at_boundary:
            body_quantize_ops.append(op["op_name"])
        elif op["op_name"] not in QUANTIZE_OPS and any(
            _is_float(t) for t in list(op["operand_types"]) + list(op["result_types"])
        ):
            float_ops.append(op["op_name"])

    delegated = tflite_interpreter(path, delegates=True)._get_ops_details()
    delegate_nodes = [op for op in delegated if op["op_name"] == "DELEGATE"]
    fully_delegated = (
        len(delegate_nodes) == 1
        and set(delegate_nodes[0]["outputs"]) == model_outputs
        and model_inputs <= set(delegate_nodes[0]["inputs"])
    )
    return TfliteStructure(
        op_counts=dict(Counter(op["op_name"] for op in ops)),
        input_dtype=np.dtype(plain.get_input_details()[0]["dtype"]).name,
        output_dtype=np.dtype(plain.get_output_details()[0]["dtype"]).name,
        float_ops=tuple(float_ops),
        body_quantize_ops=tuple(body_quantize_ops),
        delegate_nodes=len(delegate_nodes),
        fully_delegated=fully_delegated,
    )
