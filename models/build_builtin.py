"""Build lamamesh's built-in inpainting model as a plain ONNX graph.

The model needs no trained weights: it is a multi-scale harmonic fill.

1. Pull: build an image pyramid of premultiplied colour ``p = image * known`` and
   coverage ``w = known`` by 2x2 average pooling, ``LEVELS`` times.
2. Push: start at the coarsest level with each block's mean colour (holes there get
   the global mean), then at each finer level upsample the coarser solution
   (bilinear) and run ``ITERS`` Jacobi sweeps of the Laplace equation, each pixel
   blended with its known colour by its coverage: ``u = a*c + (1-a)*avg4(u)``.
   At full resolution ``a`` is the binary known mask, so known pixels stay fixed and
   the hole converges to the harmonic (membrane) interpolant of its border.

The coarse-to-fine schedule makes the solve converge in a few dozen sweeps per
level whatever the hole size (a multigrid-style cascade). Height and width must be
multiples of ``2**LEVELS``; lamamesh's pipeline pads to that (manifest: ``multiple``).

Contract (LaMa's): inputs ``image`` float32 [1,3,H,W] in [0,1] and ``mask``
float32 [1,1,H,W] in {0,1} (1 = fill); output ``output`` [1,3,H,W] in [0,1].

Run ``python models/build_builtin.py`` to rebuild ``mesh/data/builtin_fill.onnx``
and update its sha256 in ``mesh/data/manifest.json``. The build is deterministic:
the same onnx version writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LEVELS = 6  # pyramid levels below full resolution; H and W must be multiples of 2**LEVELS
ITERS = 30  # Jacobi sweeps per level
UNROLL = 5  # sweeps per Loop iteration: 6 iterations of 5 (few nodes to build, little Loop overhead)
EPS = 1e-6
OPSET = 17

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "mesh" / "data" / "builtin_fill.onnx"
MANIFEST = ROOT / "mesh" / "data" / "manifest.json"


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, value: np.ndarray) -> str:
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(value, n))
        return n

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: object) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _sweep_body(level: int, ac: str, rest: str, jacobi: str, pads: str) -> onnx.GraphProto:
    """``UNROLL`` Jacobi sweeps, each u <- a*colour + (1-a) * mean of u's 4 neighbours (edges
    replicated)."""
    g = _Graph()
    u = f"u_in{level}"
    for _ in range(UNROLL):
        padded = g.op("Pad", [u, pads], f"pad{level}", mode="edge")
        avg = g.op("Conv", [padded, jacobi], f"avg{level}", group=3)
        u = g.op("Add", [ac, g.op("Mul", [rest, avg], f"ra{level}")], f"u{level}")
    g.nodes.append(helper.make_node("Identity", [u], [f"u_out{level}"], name=f"u_out{level}"))
    g.nodes.append(helper.make_node("Identity", [f"cond_in{level}"], [f"cond_out{level}"], name=f"cond{level}"))
    return helper.make_graph(
        g.nodes,
        f"sweeps{level}",
        [
            helper.make_tensor_value_info(f"i{level}", TensorProto.INT64, []),
            helper.make_tensor_value_info(f"cond_in{level}", TensorProto.BOOL, []),
            helper.make_tensor_value_info(f"u_in{level}", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info(f"cond_out{level}", TensorProto.BOOL, []),
            helper.make_tensor_value_info(f"u_out{level}", TensorProto.FLOAT, None),
        ],
    )


def build() -> onnx.ModelProto:
    g = _Graph()
    eps = g.const("eps", np.array(EPS, np.float32))
    one = g.const("one", np.array(1.0, np.float32))
    scales = g.const("scales", np.array([1, 1, 2, 2], np.float32))
    kernel = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float32) / 4
    jacobi = g.const("jacobi", np.tile(kernel, (3, 1, 1, 1)))  # depthwise [3,1,3,3]

    iters = g.const("iters", np.array(ITERS // UNROLL, np.int64))
    pads = g.const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    known = g.op("Sub", [one, "mask"], "known")
    p = [g.op("Mul", ["image", known], "p0")]
    w = [known]
    for k in range(1, LEVELS + 1):
        p.append(g.op("AveragePool", [p[-1]], f"p{k}", kernel_shape=[2, 2], strides=[2, 2]))
        w.append(g.op("AveragePool", [w[-1]], f"w{k}", kernel_shape=[2, 2], strides=[2, 2]))

    u = ""
    for k in range(LEVELS, -1, -1):
        colour = g.op("Div", [p[k], g.op("Max", [w[k], eps], "wsafe")], f"c{k}")
        a = w[k]
        if k == LEVELS:
            # coarsest level: holes start at the global mean colour
            psum = g.op("ReduceSum", [p[k], g.const("axes", np.array([2, 3], np.int64))], "psum", keepdims=1)
            wsum = g.op("ReduceSum", [w[k], g.const("axes", np.array([2, 3], np.int64))], "wsum", keepdims=1)
            mean = g.op("Div", [psum, g.op("Max", [wsum, eps], "wsumsafe")], "mean")
            hole = g.op("Sub", [one, a], "hole")
            u = g.op("Add", [g.op("Mul", [colour, a], "ca"), g.op("Mul", [mean, hole], "mh")], "u_init")
        else:
            u = g.op("Resize", [u, "", scales], f"up{k}", mode="linear")
        ac = g.op("Mul", [a, colour], f"ac{k}")
        rest = g.op("Sub", [one, a], f"rest{k}")
        # the ITERS sweeps as one Loop of ITERS / UNROLL iterations (its body reads ac, rest, the
        # kernel and pads from this scope): the same operations in the same order as fully
        # unrolled, in a sixth of the nodes, so ONNX Runtime builds the session far faster
        u = g.op("Loop", [iters, "", u], f"sweeps{k}", body=_sweep_body(k, ac, rest, jacobi, pads))
    g.nodes.append(helper.make_node("Clip", [u, "", one], ["output"], name="output"))
    # Clip with an empty min input keeps the lower bound open; colours are >= 0 by construction.

    graph = helper.make_graph(
        g.nodes,
        "lamamesh_builtin_fill",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, "H", "W"]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H", "W"])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lamamesh")
    model.ir_version = 8
    model.doc_string = f"multi-scale harmonic fill, {LEVELS} levels, {ITERS} Jacobi sweeps per level"
    onnx.checker.check_model(model)
    return model


def main() -> int:
    data = build().SerializeToString(deterministic=True)
    OUT.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    manifest = json.loads(MANIFEST.read_text())
    for entry in manifest["models"]:
        if entry["name"] == "builtin":
            entry["sha256"] = digest
            entry["bytes"] = len(data)
            entry["multiple"] = 2**LEVELS
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(data)} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
