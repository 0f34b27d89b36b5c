#!/usr/bin/env python3
"""Writes examples/models/long_attention.onnx: one softmax attention over 2048 keys
(head size 64, 2 heads), in the form the TorchScript exporter gives
F.scaled_dot_product_attention (Transpose K, Mul by sqrt(scale) on both sides, the
default-scale subgraph Div(1, Sqrt(Cast(Slice(Shape(Q), -1)))), Softmax, MatMul V).
floe fuses it into one 4-D Attention node that `floe convert --attention knn` lowers
to KnnAttention (S = 2048 >= min_keys 1024).

Q, K and V are graph inputs, so the file has no weights (a few KB). The CLI test
(cli/tests/cli.rs, knn_convert_*) feeds it a peaked workload, each query a noisy copy
of one key, where k-NN attention is near exact.

    .venv/bin/python scripts/make_long_attention.py     # needs numpy and onnx only
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "models")
F = TensorProto.FLOAT
B, H, L, S, D = 1, 2, 128, 2048, 64


def main():
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(op_type, inputs, out, **attrs):
        nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    # scale = 1 / sqrt(q.size(-1)), as symbolic_opset14.py builds it
    e = op("Slice", [op("Shape", ["q"], "q_shape"), const("m1", np.array([-1], np.int64)),
                     const("max", np.array([2**63 - 1], np.int64))], "head_size")
    scale = op("Div", [const("one", np.array([1.0], np.float32)), op("Sqrt", [op("Cast", [e], "head_size_f", to=F)], "sqrt_d")], "scale")
    root = op("Sqrt", [scale], "sqrt_scale")
    kt = op("Transpose", ["k"], "kt", perm=[0, 1, 3, 2])
    qk = op("MatMul", [op("Mul", ["q", root], "q_scaled"), op("Mul", [kt, root], "kt_scaled")], "scores")
    op("MatMul", [op("Softmax", [qk], "probs", axis=-1), "v"], "y")
    g = helper.make_graph(
        nodes, "long_attention",
        [helper.make_tensor_value_info("q", F, [B, H, L, D]), helper.make_tensor_value_info("k", F, [B, H, S, D]),
         helper.make_tensor_value_info("v", F, [B, H, S, D])],
        [helper.make_tensor_value_info("y", F, [B, H, L, D])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], producer_name="floe-make-long-attention")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = os.path.join(OUT, "long_attention.onnx")
    onnx.save(model, path)
    print(f"{path}: {len(nodes)} nodes, {os.path.getsize(path)} bytes")


def bench_models():
    """attention_2048.onnx and attention_2048_causal.onnx: self-attention over 2048
    tokens, 2 heads of 64, no weights; what `floe compare` runs with
    `--attention exact` against `--attention unfused` (docs/attention.md).

    - attention_2048: the hand-written (HF eager) form, MatMul(q, Transpose(k)) ->
      Div(sqrt(64)) -> Softmax -> MatMul(v).
    - attention_2048_causal: F.scaled_dot_product_attention(is_causal=True) as the
      TorchScript exporter writes it (Expand -> Trilu -> Where(Equal) mask added to
      the scores; static shapes, so it folds to the causal triangle).
    """
    b, h, l, d = 1, 2, 2048, 64
    for name, causal in (("attention_2048", False), ("attention_2048_causal", True)):
        nodes, inits = [], []

        def const(cname, arr):
            inits.append(numpy_helper.from_array(np.asarray(arr), cname))
            return cname

        def op(op_type, inputs, out, **attrs):
            nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
            return out

        kt = op("Transpose", ["k"], "kt", perm=[0, 1, 3, 2])
        scores = op("Div", [op("MatMul", ["q", kt], "qk"), const("sqrt_d", np.array(np.sqrt(d), np.float32))], "scores")
        if causal:
            m1, m2 = const("m1", np.array([-1], np.int64)), const("m2", np.array([-2], np.int64))
            size = op("Concat", [op("Slice", [op("Shape", ["q"], "q_shape"), m2, m1], "lq"),
                                 op("Slice", [op("Shape", ["k"], "k_shape"), m2, m1], "lk")], "size", axis=0)
            ones = op("Trilu", [op("Expand", [const("ones", np.array([1.0], np.float32)), size], "full")], "tril", upper=0)
            zero, neg_inf = const("zero", np.array([0.0], np.float32)), const("neg_inf", np.array([-np.inf], np.float32))
            mask = op("Where", [op("Equal", [ones, zero], "above"), neg_inf, zero], "mask")
            scores = op("Add", [scores, mask], "masked")
        op("MatMul", [op("Softmax", [scores], "probs", axis=-1), "v"], "y")
        info = [helper.make_tensor_value_info(n, F, [b, h, l, d]) for n in ("q", "k", "v")]
        g = helper.make_graph(nodes, name, info, [helper.make_tensor_value_info("y", F, [b, h, l, d])], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)], producer_name="floe-make-long-attention")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(OUT, name + ".onnx")
        onnx.save(model, path)
        print(f"{path}: {len(nodes)} nodes, {os.path.getsize(path)} bytes")


def kv_cache_model():
    """attention_kv_cache.onnx: one ONNX Attention (opset 23) with a KV cache, as a
    decoder exported by the dynamo exporter has it: Q [1, 2, L, 16] against K, V
    [1, 1, L, 16] (grouped-query: 2 query heads share 1 kv head) after past_key /
    past_value [1, 1, P, 16], causal, outputs Y, present_key, present_value; L and P
    symbolic. converters/tests/knn_decode.rs lowers it with `--attention knn:min_keys=0`
    and decodes token by token, feeding each step's present back as the next past."""
    node = helper.make_node("Attention", ["q", "k", "v", "", "past_key", "past_value"],
                            ["y", "present_key", "present_value"], name="attention", is_causal=1)
    info = helper.make_tensor_value_info
    g = helper.make_graph(
        [node], "attention_kv_cache",
        [info("q", F, [1, 2, "L", 16]), info("k", F, [1, 1, "L", 16]), info("v", F, [1, 1, "L", 16]),
         info("past_key", F, [1, 1, "P", 16]), info("past_value", F, [1, 1, "P", 16])],
        [info("y", F, [1, 2, "L", 16]), info("present_key", F, [1, 1, "T", 16]),
         info("present_value", F, [1, 1, "T", 16])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)], producer_name="floe-make-long-attention")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    path = os.path.join(OUT, "attention_kv_cache.onnx")
    onnx.save(model, path)
    print(f"{path}: 1 node, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
    bench_models()
    kv_cache_model()
