"""A lookup-table "model" as ONNX: each input gets the label stored for its nearest table row.

This is what a cheater submits (issue 9): no learning at all, only a table from
the public inputs (Z, and Z_h) to chosen labels. The graph is

    flat = Flatten(X)                              (N, D)
    dist = rowsq(flat) - 2 flat @ T^T + rowsq(T)   (N, K) squared distances
    idx  = ArgMin(dist, axis=1)                    nearest table row (first on ties)
    out  = Gather(onehot(labels), idx)             (N, C) float32 scores, 1 for the label

An input equal to a table row is at distance 0, so it gets exactly that row's
label; the one-hot scores leave a top-two gap of 1, so nothing is ambiguous.
It runs in the node's sandbox (onnxruntime CPU, one thread) like any model.
"""

from __future__ import annotations

import numpy as np

OPSET = 17


def lookup_model(table: np.ndarray, labels: np.ndarray, num_classes: int, *, input_dtype: str = "float32") -> bytes:
    """ONNX bytes mapping each input to the label of its nearest row of ``table``.

    ``table``: (K, ...) inputs as the problem sees them; ``labels``: (K,) in 0..C-1.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.asarray(table)
    labels = np.asarray(labels, dtype=np.int64)
    if len(table) != len(labels) or len(table) == 0:
        raise ValueError(f"table of {len(table)} rows does not fit {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError("labels out of range")
    flat = table.reshape(len(table), -1).astype(np.float32)
    scores = np.zeros((len(labels), num_classes), dtype=np.float32)
    scores[np.arange(len(labels)), labels] = 1.0
    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}.get(input_dtype)
    if elem is None:
        raise ValueError(f"lookup models take float32 or float64 inputs, not {input_dtype}")
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(flat.T), "table_t"),
        numpy_helper.from_array((flat.astype(np.float64) ** 2).sum(axis=1).astype(np.float32), "table_sq"),
        numpy_helper.from_array(scores, "scores"),
        numpy_helper.from_array(np.array(-2.0, dtype=np.float32), "minus_two"),
    ]
    nodes = []
    src = "input"
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["input"], ["input_f"], to=TensorProto.FLOAT))
        src = "input_f"
    nodes += [
        helper.make_node("Flatten", [src], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "table_t"], ["dot"]),
        helper.make_node("Mul", ["dot", "minus_two"], ["dot2"]),
        helper.make_node("ReduceSumSquare", ["flat"], ["x_sq"], axes=[1], keepdims=1),
        helper.make_node("Add", ["dot2", "x_sq"], ["partial"]),
        helper.make_node("Add", ["partial", "table_sq"], ["dist"]),
        helper.make_node("ArgMin", ["dist"], ["idx"], axis=1, keepdims=0, select_last_index=0),
        helper.make_node("Gather", ["scores", "idx"], ["probabilities"], axis=0),
    ]
    shape = [None, *[int(s) for s in table.shape[1:]]]
    graph = helper.make_graph(
        nodes, "lookup_table",
        [helper.make_tensor_value_info("input", elem, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, num_classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="daimon-node lookup")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


__all__ = ["lookup_model"]
