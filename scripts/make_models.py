#!/usr/bin/env python3
"""Writes floe's differential-test models with fixed-seed weights, plus reference
inputs and outputs computed by onnxruntime (the independent reference).

    .venv/bin/python scripts/make_models.py          # writes examples/models/

Each model NAME gets examples/models/NAME.onnx and examples/models/NAME/
{input,output}_<k>_<tensor name>.npy. The models are built the way exporters build
them (PyTorch-style attention with Shape->Gather->Concat->Reshape head splits,
LayerNormalization and Gelu both as ops and decomposed).
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "models")
F = TensorProto.FLOAT


class Builder:
    """Collects nodes and initializers with unique names."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def weight(self, base, shape, scale=None):
        fan_in = shape[0] if len(shape) > 1 else max(shape[0], 1)
        scale = scale if scale is not None else 1.0 / np.sqrt(fan_in)
        arr = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        return self.const(base, arr)

    def const(self, base, arr):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs


def save(name, graph, opset, inputs):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="floe-make-models")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, inputs)
    ref_dir = os.path.join(OUT, name)
    os.makedirs(ref_dir, exist_ok=True)
    for f in os.listdir(ref_dir):
        os.remove(os.path.join(ref_dir, f))
    for k, i in enumerate(sess.get_inputs()):
        np.save(os.path.join(ref_dir, f"input_{k}_{i.name}.npy"), inputs[i.name])
    for k, (o, v) in enumerate(zip(sess.get_outputs(), outs)):
        np.save(os.path.join(ref_dir, f"output_{k}_{o.name}.npy"), v)
    print(f"{path}: {len(graph.node)} nodes, outputs {[v.shape for v in outs]}")


def mlp():
    b = Builder(1)
    h = b.op("Gemm", ["x", b.weight("w1", [16, 32]), b.weight("b1", [32], 0.1)])
    h = b.op("Relu", [h])
    h = b.op("MatMul", [h, b.weight("w2", [32, 8])])
    h = b.op("Add", [h, b.weight("b2", [8], 0.1)])
    b.nodes.append(helper.make_node("Sigmoid", [h], ["y"], name="out"))
    g = helper.make_graph(b.nodes, "mlp", [helper.make_tensor_value_info("x", F, ["N", 16])],
                          [helper.make_tensor_value_info("y", F, ["N", 8])], b.inits)
    x = np.random.default_rng(11).standard_normal((4, 16)).astype(np.float32)
    save("mlp", g, 13, {"x": x})


def keyword_cnn():
    """Conv1d + BatchNorm + ReLU + pooling + Gemm over [1, T, 40] log-mel frames."""
    b = Builder(2)
    h = b.op("Transpose", ["mel"], perm=[0, 2, 1])  # [1, 40, T]
    c_in = 40
    for c_out in (32, 32):
        h = b.op("Conv", [h, b.weight("conv_w", [c_out, c_in, 3], 1 / np.sqrt(c_in * 3)), b.weight("conv_b", [c_out], 0.1)],
                 kernel_shape=[3], pads=[1, 1])
        scale = (1.0 + 0.1 * b.rng.standard_normal(c_out)).astype(np.float32)
        bias = (0.1 * b.rng.standard_normal(c_out)).astype(np.float32)
        mean = (0.1 * b.rng.standard_normal(c_out)).astype(np.float32)
        var = (0.5 + b.rng.random(c_out)).astype(np.float32)
        h = b.op("BatchNormalization", [h, b.const("bn_s", scale), b.const("bn_b", bias), b.const("bn_m", mean), b.const("bn_v", var)],
                 epsilon=1e-5)
        h = b.op("Relu", [h])
        h = b.op("MaxPool", [h], kernel_shape=[2], strides=[2])
        c_in = c_out
    h = b.op("GlobalAveragePool", [h])  # [1, 32, 1]
    h = b.op("Flatten", [h], axis=1)
    b.nodes.append(helper.make_node("Gemm", [h, b.weight("fc_w", [12, 32]), b.weight("fc_b", [12], 0.1)], ["logits"], transB=1, name="fc"))
    g = helper.make_graph(b.nodes, "keyword_cnn", [helper.make_tensor_value_info("mel", F, [1, "T", 40])],
                          [helper.make_tensor_value_info("logits", F, [1, 12])], b.inits)
    x = np.random.default_rng(12).standard_normal((1, 49, 40)).astype(np.float32)
    save("keyword_cnn", g, 13, {"mel": x})


def layer_norm(b, x, d, decomposed):
    gamma = (1.0 + 0.1 * b.rng.standard_normal(d)).astype(np.float32)
    beta = (0.1 * b.rng.standard_normal(d)).astype(np.float32)
    if not decomposed:
        return b.op("LayerNormalization", [x, b.const("ln_g", gamma), b.const("ln_b", beta)], axis=-1, epsilon=1e-5)
    axes = b.const("axes", np.array([-1], np.int64))
    mean = b.op("ReduceMean", [x, axes], keepdims=1)
    xc = b.op("Sub", [x, mean])
    var = b.op("ReduceMean", [b.op("Pow", [xc, b.const("two", np.array(2.0, np.float32))]), axes], keepdims=1)
    std = b.op("Sqrt", [b.op("Add", [var, b.const("eps", np.array(1e-5, np.float32))])])
    return b.op("Add", [b.op("Mul", [b.op("Div", [xc, std]), b.const("ln_g", gamma)]), b.const("ln_b", beta)])


def gelu(b, x, decomposed):
    if not decomposed:
        return b.op("Gelu", [x])
    # x * 0.5 * (1 + erf(x / sqrt(2))), as torch.onnx exports it before opset 20
    e = b.op("Erf", [b.op("Div", [x, b.const("sqrt2", np.array(np.sqrt(2.0), np.float32))])])
    return b.op("Mul", [b.op("Mul", [x, b.op("Add", [e, b.const("one", np.array(1.0, np.float32))])]), b.const("half", np.array(0.5, np.float32))])


def split_heads(b, x, heads, dh, perm=(0, 2, 1, 3)):
    """[1, S, D] -> [1, H, S, dh] via Shape -> Gather -> Concat -> Reshape, as exported
    (perm [0, 2, 3, 1] gives the key already transposed, [1, H, dh, S])."""
    shape = b.op("Shape", [x])
    bsz = b.op("Unsqueeze", [b.op("Gather", [shape, b.const("i0", np.array(0, np.int64))], axis=0), b.const("ax0", np.array([0], np.int64))])
    seq = b.op("Unsqueeze", [b.op("Gather", [shape, b.const("i1", np.array(1, np.int64))], axis=0), b.const("ax0", np.array([0], np.int64))])
    new_shape = b.op("Concat", [bsz, seq, b.const("h", np.array([heads], np.int64)), b.const("dh", np.array([dh], np.int64))], axis=0)
    return b.op("Transpose", [b.op("Reshape", [x, new_shape])], perm=list(perm))


def encoder_layer(b, x, mask_add, d, heads, ffn, decomposed):
    dh = d // heads
    h = layer_norm(b, x, d, decomposed)
    q, k, v = (split_heads(b, b.op("Add", [b.op("MatMul", [h, b.weight(n + "_w", [d, d])]), b.weight(n + "_b", [d], 0.02)]), heads, dh)
               for n in ("q", "k", "v"))
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])
    scores = b.op("Div", [scores, b.const("scale", np.array(np.sqrt(dh), np.float32))])
    scores = b.op("Add", [scores, mask_add])
    probs = b.op("Softmax", [scores], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, b.const("merge", np.array([0, 0, d], np.int64))])
    attn = b.op("Add", [b.op("MatMul", [ctx, b.weight("o_w", [d, d])]), b.weight("o_b", [d], 0.02)])
    x = b.op("Add", [x, attn])
    h = layer_norm(b, x, d, decomposed)
    h = b.op("Add", [b.op("MatMul", [h, b.weight("f1_w", [d, ffn])]), b.weight("f1_b", [ffn], 0.02)])
    h = gelu(b, h, decomposed)
    h = b.op("Add", [b.op("MatMul", [h, b.weight("f2_w", [ffn, d])]), b.weight("f2_b", [d], 0.02)])
    return b.op("Add", [x, h])


def transformer_encoder():
    b = Builder(3)
    d, heads, ffn = 64, 4, 128
    # HF-style additive mask: (1 - mask) * -10000, broadcast over heads and queries
    m = b.op("Unsqueeze", ["attention_mask", b.const("ax12", np.array([1, 2], np.int64))])
    m = b.op("Mul", [b.op("Sub", [b.const("one", np.array(1.0, np.float32)), m]), b.const("neg", np.array(-10000.0, np.float32))])
    x = encoder_layer(b, "hidden", m, d, heads, ffn, decomposed=False)
    x = encoder_layer(b, x, m, d, heads, ffn, decomposed=True)
    b.nodes.append(helper.make_node("Identity", [x], ["encoded"], name="out"))
    g = helper.make_graph(b.nodes, "transformer_encoder",
                          [helper.make_tensor_value_info("hidden", F, [1, "S", d]), helper.make_tensor_value_info("attention_mask", F, [1, "S"])],
                          [helper.make_tensor_value_info("encoded", F, [1, "S", d])], b.inits)
    rng = np.random.default_rng(13)
    s = 24
    mask = np.ones((1, s), np.float32)
    mask[0, 20:] = 0.0
    save("transformer_encoder", g, 20, {"hidden": rng.standard_normal((1, s, d)).astype(np.float32), "attention_mask": mask})


def projections(b, x, d, names=("q", "k", "v")):
    return [b.op("Add", [b.op("MatMul", [x, b.weight(n + "_w", [d, d])]), b.weight(n + "_b", [d], 0.02)]) for n in names]


def attention_p1():
    """HF eager self-attention (BERT-style) with the variations exporters produce: the
    key split straight into [B, H, dh, S] by Transpose [0, 2, 3, 1], the scale as
    Mul(1/sqrt(dh), scores) with the constant first, the merge shape computed from
    Shape(hidden), and the (1 - mask) * -10000 padding bias. Fused: one 3-D Attention."""
    b = Builder(6)
    d, heads = 32, 4
    dh = d // heads
    q, k, v = projections(b, "hidden", d)
    q = split_heads(b, q, heads, dh)
    kt = split_heads(b, k, heads, dh, perm=(0, 2, 3, 1))
    v = split_heads(b, v, heads, dh)
    scores = b.op("Mul", [b.const("inv_sqrt_dh", np.array(1 / np.sqrt(dh), np.float32)), b.op("MatMul", [q, kt])])
    m = b.op("Unsqueeze", ["attention_mask", b.const("ax12", np.array([1, 2], np.int64))])
    m = b.op("Mul", [b.op("Sub", [b.const("one", np.array(1.0, np.float32)), m]), b.const("neg", np.array(-10000.0, np.float32))])
    probs = b.op("Softmax", [b.op("Add", [scores, m])], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    shape = b.op("Shape", ["hidden"])
    merged = b.op("Concat", [b.op("Slice", [shape, b.const("s0", np.array([0], np.int64)), b.const("s2", np.array([2], np.int64))]),
                             b.const("d", np.array([d], np.int64))], axis=0)
    ctx = b.op("Reshape", [ctx, merged])
    b.nodes.append(helper.make_node("MatMul", [ctx, b.weight("o_w", [d, d])], ["out"], name="o_proj"))
    g = helper.make_graph(b.nodes, "attention_p1",
                          [helper.make_tensor_value_info("hidden", F, [1, "S", d]), helper.make_tensor_value_info("attention_mask", F, [1, "S"])],
                          [helper.make_tensor_value_info("out", F, [1, "S", d])], b.inits)
    rng = np.random.default_rng(15)
    s = 10
    mask = np.ones((1, s), np.float32)
    mask[0, 7:] = 0.0
    save("attention_p1", g, 17, {"hidden": rng.standard_normal((1, s, d)).astype(np.float32), "attention_mask": mask})


def sdpa(b, q, k, v, attn_mask=None, is_causal=False, scale=None):
    """F.scaled_dot_product_attention as torch/onnx/symbolic_opset14.py exports it."""
    if scale is None:
        # 1 / sqrt(q.size(-1))
        e = b.op("Slice", [b.op("Shape", [q]), b.const("m1", np.array([-1], np.int64)), b.const("max", np.array([2**63 - 1], np.int64))])
        scale = b.op("Div", [b.const("one", np.array([1.0], np.float32)), b.op("Sqrt", [b.op("Cast", [e], to=F)])])
    else:
        scale = b.const("scale", np.array(scale, np.float32))
    zero, neg_inf = b.const("zero", np.array([0.0], np.float32)), b.const("neg_inf", np.array([-np.inf], np.float32))
    if is_causal:
        last, second_last = b.const("m1", np.array([-1], np.int64)), b.const("m2", np.array([-2], np.int64))
        size = b.op("Concat", [b.op("Slice", [b.op("Shape", [q]), second_last, last]), b.op("Slice", [b.op("Shape", [k]), second_last, last])], axis=0)
        ones = b.op("Trilu", [b.op("Expand", [b.const("ones", np.array([1.0], np.float32)), size])], upper=0)
        attn_mask = b.op("Where", [b.op("Equal", [ones, zero]), neg_inf, zero])
    elif attn_mask is not None and attn_mask[1] == "bool":
        attn_mask = b.op("Where", [attn_mask[0], zero, neg_inf])
    elif attn_mask is not None:
        attn_mask = attn_mask[0]
    kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
    qk = b.op("MatMul", [b.op("Mul", [q, b.op("Sqrt", [scale])]), b.op("Mul", [kt, b.op("Sqrt", [scale])])])
    if attn_mask is not None:
        qk = b.op("Add", [qk, attn_mask])
    return b.op("MatMul", [b.op("Softmax", [qk], axis=-1), v])


def attention_sdpa():
    """A torch module calling F.scaled_dot_product_attention with a bool key-padding
    mask, exported by the TorchScript exporter with static shapes: projections,
    view + transpose head split and merge, default scale subgraph. Fused: one 3-D
    Attention reading the bool mask."""
    b = Builder(7)
    n, s, d, heads = 2, 8, 32, 4
    dh = d // heads
    split = b.const("split", np.array([n, s, heads, dh], np.int64))
    q, k, v = (b.op("Transpose", [b.op("Reshape", [t, split])], perm=[0, 2, 1, 3]) for t in projections(b, "x", d))
    keep = b.op("Unsqueeze", ["keep", b.const("ax12", np.array([1, 2], np.int64))])
    y = sdpa(b, q, k, v, attn_mask=(keep, "bool"))
    y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.const("merge", np.array([n, s, d], np.int64))])
    b.nodes.append(helper.make_node("MatMul", [y, b.weight("o_w", [d, d])], ["out"], name="o_proj"))
    g = helper.make_graph(b.nodes, "attention_sdpa",
                          [helper.make_tensor_value_info("x", F, [n, s, d]), helper.make_tensor_value_info("keep", TensorProto.BOOL, [n, s])],
                          [helper.make_tensor_value_info("out", F, [n, s, d])], b.inits)
    rng = np.random.default_rng(16)
    keep = np.ones((n, s), bool)
    keep[0, 5:] = False
    keep[1, 2] = False
    save("attention_sdpa", g, 14, {"x": rng.standard_normal((n, s, d)).astype(np.float32), "keep": keep})


def attention_sdpa_causal():
    """F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.2) on 4-D
    inputs with fewer queries than keys, TorchScript export with static shapes: the
    Expand -> Trilu -> Where(Equal) mask folds to the upper-left causal triangle.
    Fused: one 4-D Attention with is_causal and no mask input."""
    b = Builder(8)
    qs, ks = [1, 2, 6, 8], [1, 2, 9, 8]
    y = sdpa(b, "q", "k", "v", is_causal=True, scale=0.2)
    b.nodes.append(helper.make_node("Identity", [y], ["y"], name="out"))
    g = helper.make_graph(b.nodes, "attention_sdpa_causal",
                          [helper.make_tensor_value_info("q", F, qs), helper.make_tensor_value_info("k", F, ks), helper.make_tensor_value_info("v", F, ks)],
                          [helper.make_tensor_value_info("y", F, qs)], b.inits)
    rng = np.random.default_rng(17)
    save("attention_sdpa_causal", g, 14, {n: rng.standard_normal(sh).astype(np.float32) for n, sh in (("q", qs), ("k", ks), ("v", ks))})


def rnn_model(kind):
    b = Builder(4 if kind == "GRU" else 5)
    hidden, feat, gates = 16, 8, (3 if kind == "GRU" else 4)
    w = b.weight("W", [1, gates * hidden, feat], 0.3)
    r = b.weight("R", [1, gates * hidden, hidden], 0.3)
    bias = b.weight("B", [1, 2 * gates * hidden], 0.1)
    n_out = 2 if kind == "GRU" else 3
    outs = ["y", "y_h"] + (["y_c"] if kind == "LSTM" else [])
    attrs = {"hidden_size": hidden}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    b.nodes.append(helper.make_node(kind, ["x", w, r, bias], outs, name=kind.lower(), **attrs))
    assert len(outs) == n_out
    out_info = [helper.make_tensor_value_info("y", F, ["T", 1, 1, hidden]), helper.make_tensor_value_info("y_h", F, [1, 1, hidden])]
    if kind == "LSTM":
        out_info.append(helper.make_tensor_value_info("y_c", F, [1, 1, hidden]))
    g = helper.make_graph(b.nodes, kind.lower(), [helper.make_tensor_value_info("x", F, ["T", 1, feat])], out_info, b.inits)
    x = np.random.default_rng(14).standard_normal((20, 1, feat)).astype(np.float32)
    save(kind.lower(), g, 14, {"x": x})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    mlp()
    keyword_cnn()
    transformer_encoder()
    rnn_model("GRU")
    rnn_model("LSTM")
    attention_p1()
    attention_sdpa()
    attention_sdpa_causal()
    sys.exit(0)
