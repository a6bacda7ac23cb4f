"""What a .tflite file really contains: operators, tensor types, and how
much of it XNNPACK takes. TensorFlow-free, so it also runs on a device."""

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..quiet import native_output_silenced
from .runtime import tflite_interpreter

QUANTIZE_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclass(frozen=True)
class TfliteStructure:
    op_counts: dict  # operator name -> count, before delegation
    input_dtype: str
    output_dtype: str
    float_ops: tuple  # operators that compute in floating point
    body_quantize_ops: tuple  # QUANTIZE/DEQUANTIZE to or from float away from the model's inputs/outputs
    delegate_nodes: int
    fully_delegated: bool  # one XNNPACK node spanning inputs to outputs
    undelegated_ops: tuple  # operators no delegate runs

    def describe(self, integer_expected):
        """Lines on the operators, the I/O types, the delegation and, for an
        int8 model (`integer_expected`), whether it is fully integer."""
        lines = [f"operators: {', '.join(f'{op} x{n}' for op, n in sorted(self.op_counts.items()))}",
                 f"input {self.input_dtype}, output {self.output_dtype}; "
                 + self.delegation_text()]
        if integer_expected:
            lines.append("fully integer: " + ("yes" if self.fully_integer else
                         f"NO (float ops: {', '.join(self.float_ops) or 'none'}; "
                         f"quantize/dequantize in the body: {len(self.body_quantize_ops)})"))
        return lines

    def delegation_text(self):
        if self.fully_delegated:
            return "XNNPACK runs the whole model"
        if self.undelegated_ops == ("SOFTMAX",) and self.delegate_nodes == 1 and not self.float_ops:
            return "XNNPACK runs the whole model but its int8 SOFTMAX (XNNPACK has none; LiteRT's int8 kernel runs it)"
        return f"XNNPACK runs only part of the model (not: {self.undelegated_names() or 'unknown'})"

    def undelegated_names(self):
        """The operators XNNPACK leaves, each named once with its count, in order of first appearance."""
        counts = Counter(self.undelegated_ops)
        return ", ".join(op if count == 1 else f"{op} x{count}" for op, count in counts.items())

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
            "undelegated_ops": list(self.undelegated_ops),
        }


def _is_float(dtype):
    return np.issubdtype(np.dtype(dtype), np.floating)


def inspect_tflite(path):
    plain = tflite_interpreter(path, delegates=False)
    ops = plain._get_ops_details()
    # Tensor types by index: older runtimes (tflite-runtime) give no operand types per op.
    dtypes = {tensor["index"]: tensor["dtype"] for tensor in plain.get_tensor_details()}
    model_inputs = {d["index"] for d in plain.get_input_details()}
    model_outputs = {d["index"] for d in plain.get_output_details()}
    float_ops, body_quantize_ops = [], []
    for op in ops:
        # Converting the model's own input or output type (float32/uint8 <-> int8) is fine.
        at_boundary = set(op["inputs"]) <= model_inputs or set(op["outputs"]) <= model_outputs
        reads_or_writes_float = any(
            _is_float(dtypes[index]) for index in list(op["inputs"]) + list(op["outputs"]) if index in dtypes)
        if op["op_name"] in QUANTIZE_OPS:
            # an int8 -> int8 QUANTIZE is a requantization (into a concatenation's scale): integer arithmetic
            if reads_or_writes_float and not at_boundary:
                body_quantize_ops.append(op["op_name"])
        elif reads_or_writes_float:
            float_ops.append(op["op_name"])

    with native_output_silenced():  # LiteRT announces its delegate on stderr
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
        undelegated_ops=() if fully_delegated else _outside_delegates(ops, delegate_nodes),
    )


def _outside_delegates(ops, delegate_nodes):
    """Operators no delegate runs: they run on the built-in kernels. (The
    interpreter does not expose its execution plan, so each delegate's
    operators are found from the graph: those that compute its outputs from
    its inputs.)"""
    producer = {tensor: op["index"] for op in ops for tensor in op["outputs"]}
    by_index = {op["index"]: op for op in ops}
    delegated = set()
    for node in delegate_nodes:
        boundary, pending = set(node["inputs"]), [t for t in node["outputs"] if t in producer]
        while pending:
            index = producer[pending.pop()]
            if index not in delegated:
                delegated.add(index)
                pending += [t for t in by_index[index]["inputs"] if t in producer and t not in boundary]
    return tuple(op["op_name"] for op in ops if op["index"] not in delegated)
