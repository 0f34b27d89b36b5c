#!/usr/bin/env python3
"""Writes the linear-attention test models with fixed-seed weights and reference
outputs (floe's differential tests read them).

    .venv/bin/python scripts/make_linear_attention_models.py   # writes examples/models/

- linear_transformer: a causal Katharopoulos linear-attention transformer in the
  plain-op form PyTorch code exports to (ALGORITHMS.md 2.2, 4.2): Elu -> Add(1)
  feature maps, the causal numerator as CumSum over Einsum outer products, the
  normaliser as Einsum(Q, CumSum(K)) + eps, then Div (layer 1) or Reciprocal * Mul
  (layer 2). Expected outputs from onnxruntime.
- linear_transformer_onnx: the same block on ONNX LinearAttention-27 (update_rule
  gated, per-head decay, past_state omitted). onnxruntime 1.22 has no kernel for
  opset 27, so its expected outputs come from onnx.reference.ReferenceEvaluator.

Both take x [1, T, 16] (T symbolic) and give per-frame y [1, T, 8]; d_model 32,
2 heads, 2 layers, reference input with T = 40.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "models")
F = TensorProto.FLOAT
D_IN, D, HEADS, N_OUT, LAYERS, T = 16, 32, 2, 8, 2, 40
DH = D // HEADS


class Builder:
    """Collects nodes and initializers with unique names."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def weight(self, base, shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        return self.const(base, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def const(self, base, arr):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def linear(self, x, d_in, d_out):
        return self.op("Add", [self.op("MatMul", [x, self.weight("w", [d_in, d_out])]), self.weight("b", [d_out], 0.1)])


def katharopoulos_causal(b, q, k, v, reciprocal):
    """[1, T, D] projections -> causal normalised linear attention, [1, T, D]."""
    split = b.const("heads", np.array([0, -1, HEADS, DH], np.int64))
    q4, k4, v4 = (b.op("Reshape", [t, split]) for t in (q, k, v))
    one = b.const("one", np.array(1.0, np.float32))
    fq = b.op("Add", [b.op("Elu", [q4]), one])
    fk = b.op("Add", [b.op("Elu", [k4]), one])
    seq = b.const("seq_axis", np.array(1, np.int64))
    kv = b.op("CumSum", [b.op("Einsum", [fk, v4], equation="nshd,nshm->nshdm"), seq])
    num = b.op("Einsum", [fq, kv], equation="nlhd,nlhdm->nlhm")
    den = b.op("Einsum", [fq, b.op("CumSum", [fk, seq])], equation="nlhd,nlhd->nlh")
    den = b.op("Add", [den, b.const("eps", np.array(1e-6, np.float32))])
    den = b.op("Unsqueeze", [den, b.const("last", np.array([-1], np.int64))])
    if reciprocal:
        out = b.op("Mul", [num, b.op("Reciprocal", [den])])
    else:
        out = b.op("Div", [num, den])
    return b.op("Reshape", [out, b.const("merge", np.array([0, 0, D], np.int64))])


def onnx_linear_attention(b, h, q, k, v):
    """[1, T, D] projections -> ONNX LinearAttention (gated, per-head decay) -> LayerNorm."""
    decay = b.op("Neg", [b.op("Softplus", [b.linear(h, D, HEADS)])])
    out, _state = b.op(
        "LinearAttention",
        [q, k, v, "", decay],
        n_out=2,
        q_num_heads=HEADS,
        kv_num_heads=HEADS,
        update_rule="gated",
    )
    # GLA-style output norm: the un-normalised state sums grow with T; the norm keeps
    # the block's output O(1) so f32 comparisons stay meaningful at 1e-4.
    return b.op("LayerNormalization", [out, b.const("ln_g", np.ones(D, np.float32)), b.const("ln_b", np.zeros(D, np.float32))],
                axis=-1, epsilon=1e-5)


def transformer(name, block, opset, seed):
    b = Builder(seed)
    h = b.linear("x", D_IN, D)
    for layer in range(LAYERS):
        q, k, v = (b.linear(h, D, D) for _ in range(3))
        a = block(b, h, q, k, v, layer)
        h = b.op("Add", [h, b.linear(a, D, D)])
        ff = b.linear(b.op("Relu", [b.linear(h, D, 2 * D)]), 2 * D, D)
        h = b.op("Add", [h, ff])
    b.nodes.append(helper.make_node("MatMul", [h, b.weight("w_out", [D, N_OUT])], ["y"], name="head"))
    graph = helper.make_graph(
        b.nodes,
        name,
        [helper.make_tensor_value_info("x", F, [1, "T", D_IN])],
        [helper.make_tensor_value_info("y", F, [1, "T", N_OUT])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="floe-make-models")
    model.ir_version = 10 if opset >= 21 else 8
    onnx.checker.check_model(model, full_check=True)
    return model


def save(name, model, inputs, outputs):
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)
    ref_dir = os.path.join(OUT, name)
    os.makedirs(ref_dir, exist_ok=True)
    for f in os.listdir(ref_dir):
        os.remove(os.path.join(ref_dir, f))
    for k, (n, v) in enumerate(inputs.items()):
        np.save(os.path.join(ref_dir, f"input_{k}_{n}.npy"), v)
    for k, (n, v) in enumerate(outputs.items()):
        np.save(os.path.join(ref_dir, f"output_{k}_{n}.npy"), v)
    print(f"{path}: {len(model.graph.node)} nodes, outputs {[v.shape for v in outputs.values()]}")


def main():
    x = np.random.default_rng(1).standard_normal((1, T, D_IN)).astype(np.float32)

    import onnxruntime as ort

    plain = transformer("linear_transformer", lambda b, h, q, k, v, i: katharopoulos_causal(b, q, k, v, i % 2 == 1), 17, 5)
    sess = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x})
    save("linear_transformer", plain, {"x": x}, {"y": y})

    from onnx.reference import ReferenceEvaluator

    fused = transformer("linear_transformer_onnx", lambda b, h, q, k, v, i: onnx_linear_attention(b, h, q, k, v), 27, 6)
    (y,) = ReferenceEvaluator(fused).run(None, {"x": x})
    save("linear_transformer_onnx", fused, {"x": x}, {"y": y.astype(np.float32)})


if __name__ == "__main__":
    main()
