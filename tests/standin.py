"""A small stand-in with the contract of a public LaMa export, built here (never downloaded).

Fixed 512x512 input, ``image`` [1,3,512,512] in 0..1 and ``mask`` [1,1,512,512]; the
output is in 0..255 (like Carve's ``lama_fp32.onnx``): the masked area is filled with the
mean colour of the known pixels, which is easy to check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(path: Path, size: int = 512, input_names: tuple[str, str] = ("image", "mask")) -> Path:
    img, msk = input_names
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(255.0, np.float32), "s255"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Sub", ["one", msk], ["known"]),
        helper.make_node("Mul", [img, "known"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axes"], ["csum"], keepdims=1),
        helper.make_node("ReduceSum", ["known", "axes"], ["ksum"], keepdims=1),
        helper.make_node("Max", ["ksum", "eps"], ["ksafe"]),
        helper.make_node("Div", ["csum", "ksafe"], ["mean"]),
        helper.make_node("Mul", ["mean", msk], ["fill"]),
        helper.make_node("Add", ["kept", "fill"], ["out01"]),
        helper.make_node("Mul", ["out01", "s255"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "standin_lama",
        [
            helper.make_tensor_value_info(img, TensorProto.FLOAT, [1, 3, size, size]),
            helper.make_tensor_value_info(msk, TensorProto.FLOAT, [1, 1, size, size]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
