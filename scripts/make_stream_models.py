#!/usr/bin/env python3
"""Writes the streaming test models (fixed-seed weights) with reference inputs and
outputs computed by onnxruntime on the whole sequence:

    .venv/bin/python scripts/make_stream_models.py     # writes examples/models/

- gru_kws: a GRU keyword spotter over [1, T, 20] log-mel frames: a k=3 conv with one
  frame of look-ahead, a GRU, a per-frame linear skip path added to the GRU output
  (so the two branches reach the Add with different delays) and per-frame logits.
- causal_transformer: a k=3 look-ahead conv front end, then one pre-LN decoder layer
  with F.scaled_dot_product_attention(is_causal=True) exported as TorchScript does
  (symbolic T; the causal mask built from Shape/Expand/Trilu/Where) and a GELU FFN.
- running_sum: CumSum over time (a running sum carried between chunks).
- causal_conv_block: ONNX CausalConvWithState (opset 27) between projections; its
  reference is onnx.reference (onnxruntime 1.22 has no opset 27).
"""
import os

import numpy as np
import onnx
from onnx import helper

from make_models import OUT, F, Builder, gelu, layer_norm, save, sdpa


def conv1d_lookahead(b, x, c_in, c_out):
    """[1, T, c_in] -> [1, T, c_out]: Conv1d k=3, pads (1, 1), ReLU."""
    h = b.op("Transpose", [x], perm=[0, 2, 1])
    h = b.op("Conv", [h, b.weight("conv_w", [c_out, c_in, 3], 1 / np.sqrt(c_in * 3)), b.weight("conv_b", [c_out], 0.1)],
             kernel_shape=[3], pads=[1, 1])
    return b.op("Transpose", [b.op("Relu", [h])], perm=[0, 2, 1])


def gru_kws():
    b = Builder(31)
    feat, conv, hidden, classes = 20, 24, 32, 12
    h = conv1d_lookahead(b, "mel", feat, conv)                       # [1, T, conv]
    h = b.op("Transpose", [h], perm=[1, 0, 2])                        # [T, 1, conv]
    w = b.weight("W", [1, 3 * hidden, conv], 0.3)
    r = b.weight("R", [1, 3 * hidden, hidden], 0.3)
    bias = b.weight("B", [1, 6 * hidden], 0.1)
    y = b.op("GRU", [h, w, r, bias], n_out=2, hidden_size=hidden, linear_before_reset=1)[0]   # [T, 1, 1, H]
    y = b.op("Transpose", [b.op("Squeeze", [y, b.const("ax1", np.array([1], np.int64))])], perm=[1, 0, 2])  # [1, T, H]
    skip = b.op("MatMul", ["mel", b.weight("skip_w", [feat, hidden])])
    y = b.op("Add", [y, skip])
    b.nodes.append(helper.make_node("Add", [b.op("MatMul", [y, b.weight("head_w", [hidden, classes])]), b.weight("head_b", [classes], 0.1)],
                                    ["logits"], name="head"))
    g = helper.make_graph(b.nodes, "gru_kws", [helper.make_tensor_value_info("mel", F, [1, "T", feat])],
                          [helper.make_tensor_value_info("logits", F, [1, "T", classes])], b.inits)
    x = np.random.default_rng(32).standard_normal((1, 40, feat)).astype(np.float32)
    save("gru_kws", g, 14, {"mel": x})


def causal_transformer():
    b = Builder(33)
    feat, d, heads, ffn = 16, 32, 4, 64
    dh = d // heads
    h = conv1d_lookahead(b, "x", feat, d)                            # [1, T, d]
    n = layer_norm(b, h, d, decomposed=False)
    split = b.const("split", np.array([1, -1, heads, dh], np.int64))
    q, k, v = (b.op("Transpose", [b.op("Reshape", [b.op("MatMul", [n, b.weight(t + "_w", [d, d])]), split])], perm=[0, 2, 1, 3])
               for t in "qkv")
    a = sdpa(b, q, k, v, is_causal=True)
    a = b.op("Reshape", [b.op("Transpose", [a], perm=[0, 2, 1, 3]), b.const("merge", np.array([1, -1, d], np.int64))])
    h = b.op("Add", [h, b.op("MatMul", [a, b.weight("o_w", [d, d])])])
    n = layer_norm(b, h, d, decomposed=False)
    f = b.op("MatMul", [gelu(b, b.op("MatMul", [n, b.weight("ffn1_w", [d, ffn])]), decomposed=False), b.weight("ffn2_w", [ffn, d])])
    h = b.op("Add", [h, f])
    b.nodes.append(helper.make_node("MatMul", [h, b.weight("out_w", [d, feat])], ["y"], name="out_proj"))
    g = helper.make_graph(b.nodes, "causal_transformer", [helper.make_tensor_value_info("x", F, [1, "T", feat])],
                          [helper.make_tensor_value_info("y", F, [1, "T", feat])], b.inits)
    x = np.random.default_rng(34).standard_normal((1, 40, feat)).astype(np.float32)
    save("causal_transformer", g, 20, {"x": x})


def running_sum():
    """A running-statistics block: CumSum over time of a projected input, mixed
    back into every frame (the cumulative normaliser of causal linear attention)."""
    b = Builder(35)
    feat = 8
    c = b.op("CumSum", [b.op("MatMul", ["x", b.weight("p_w", [feat, feat])]), b.const("axis", np.array(1, np.int64))])
    b.nodes.append(helper.make_node("Add", [b.op("MatMul", [c, b.weight("c_w", [feat, feat], 0.05)]), "x"], ["y"], name="mix"))
    g = helper.make_graph(b.nodes, "running_sum", [helper.make_tensor_value_info("x", F, [1, "T", feat])],
                          [helper.make_tensor_value_info("y", F, [1, "T", feat])], b.inits)
    x = np.random.default_rng(36).standard_normal((1, 40, feat)).astype(np.float32)
    save("running_sum", g, 14, {"x": x})


def causal_conv_block():
    """A Mamba / Gated-DeltaNet style front: projection, ONNX CausalConvWithState
    (opset 27, depthwise k=4, SiLU, past_state omitted), projection. onnxruntime 1.22
    has no opset 27, so the reference is onnx.reference (ONNX's own implementation)."""
    from onnx.reference import ReferenceEvaluator

    b = Builder(37)
    feat, ch, k = 8, 16, 4
    h = b.op("Transpose", [b.op("MatMul", ["x", b.weight("in_w", [feat, ch])])], perm=[0, 2, 1])   # [1, ch, T]
    c, _state = b.op("CausalConvWithState", [h, b.weight("conv_w", [ch, 1, k], 0.5), b.weight("conv_b", [ch], 0.1)], n_out=2,
                     activation="silu")
    y = b.op("Transpose", [c], perm=[0, 2, 1])
    b.nodes.append(helper.make_node("MatMul", [y, b.weight("out_w", [ch, feat])], ["y"], name="out_proj"))
    g = helper.make_graph(b.nodes, "causal_conv_block", [helper.make_tensor_value_info("x", F, [1, "T", feat])],
                          [helper.make_tensor_value_info("y", F, [1, "T", feat])], b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 27)], producer_name="floe-make-models")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(38).standard_normal((1, 40, feat)).astype(np.float32)
    (y,) = ReferenceEvaluator(model).run(None, {"x": x})
    path = os.path.join(OUT, "causal_conv_block.onnx")
    onnx.save(model, path)
    ref_dir = os.path.join(OUT, "causal_conv_block")
    os.makedirs(ref_dir, exist_ok=True)
    np.save(os.path.join(ref_dir, "input_0_x.npy"), x)
    np.save(os.path.join(ref_dir, "output_0_y.npy"), y.astype(np.float32))
    print(f"{path}: {len(g.node)} nodes, outputs {[y.shape]}")


if __name__ == "__main__":
    gru_kws()
    causal_transformer()
    running_sum()
    causal_conv_block()
