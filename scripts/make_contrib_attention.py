#!/usr/bin/env python3
"""Writes small models using onnxruntime's fused attention contrib ops
(com.microsoft.Attention, com.microsoft.MultiHeadAttention) with reference inputs
and outputs computed by onnxruntime's CPU kernels (the independent reference), for
converters/tests/contrib_attention.rs.

    .venv/bin/python scripts/make_contrib_attention.py   # writes examples/models/contrib/

Each model NAME gets examples/models/contrib/NAME.onnx and
examples/models/contrib/NAME/{input,output}_<k>_<tensor name>.npy (the layout of
scripts/make_models.py). Models named unsupported_*.onnx use variants floe refuses
(they are only checked by onnx.checker, not run). Each run model is also checked
against a plain numpy attention here, so a misread of ORT's semantics shows up now
rather than as a confusing Rust failure. Spec: onnxruntime docs/ContribOperators.md.
"""
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "models", "contrib")
F, I32 = TensorProto.FLOAT, TensorProto.INT32
MS = "com.microsoft"
FILTER = -10000.0


def make(name, op, inputs, outputs, feeds, inits, **attrs):
    """A one-node model: `inputs` are names (\"\" = omitted), `feeds` the graph
    inputs (name -> array), `inits` initializers (name -> array)."""
    node = helper.make_node(op, inputs, outputs, name=name, domain=MS, **attrs)
    vi = [helper.make_tensor_value_info(k, I32 if v.dtype == np.int32 else F, list(v.shape)) for k, v in feeds.items()]
    # Outputs typed without a shape (onnx.checker wants one, so ORT's loader checks instead).
    outs = [helper.make_value_info(o, helper.make_tensor_type_proto(F, None)) for o in outputs if o]
    g = helper.make_graph([node], name, vi, outs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
                              producer_name="floe-make-contrib-attention")
    model.ir_version = 8
    return model


def save(model, feeds, check=None):
    """Runs `model` in onnxruntime, compares with `check` (numpy outputs) if given,
    and writes the model and its reference tensors."""
    name = model.graph.name
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    if check is not None:
        for k, (got, want) in enumerate(zip(outs, check)):
            # relative where large: ORT rounds scores near mask_filter_value (-1e4) in f32
            err = (np.abs(got - want) / np.maximum(np.abs(want), 1.0)).max()
            assert err < 1e-4, f"{name} output {k}: ORT differs from the numpy reading of the spec by {err}"
    ref_dir = os.path.join(OUT, name)
    os.makedirs(ref_dir, exist_ok=True)
    for f in os.listdir(ref_dir):
        os.remove(os.path.join(ref_dir, f))
    for k, i in enumerate(sess.get_inputs()):
        np.save(os.path.join(ref_dir, f"input_{k}_{i.name}.npy"), feeds[i.name])
    for k, (o, v) in enumerate(zip(sess.get_outputs(), outs)):
        np.save(os.path.join(ref_dir, f"output_{k}_{o.name}.npy"), v)
    print(f"{path}: outputs {[v.shape for v in outs]}")


def save_unsupported(model):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{model.graph.name}.onnx")
    onnx.save(model, path)
    print(f"{path}: (refused by floe, not run)")


# ---------------------------------------------------------------- numpy reference

def heads(t, n):
    """[B, S, n*D] -> [B, n, S, D]"""
    b, s, h = t.shape
    return t.reshape(b, s, n, h // n).transpose(0, 2, 1, 3)


def sdpa(q, k, v, scale=None, add=0.0, causal_past=None):
    """q [B,N,S,D], k/v [B,N,T,D]; returns [B,S,N*Dv], probs, biased scores."""
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = (q.astype(np.float64) @ k.transpose(0, 1, 3, 2)) * scale + add
    if causal_past is not None:
        i = np.arange(q.shape[2])[:, None]
        j = np.arange(k.shape[2])[None, :]
        s = np.where(j > i + causal_past, -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = p @ v
    b, n, sq, dv = y.shape
    return y.transpose(0, 2, 1, 3).reshape(b, sq, n * dv), s


def mask_2d(m):
    """0/1 [B,T] -> additive [B,1,1,T]"""
    return np.where(m[:, None, None, :] > 0, 0.0, FILTER)


def lengths_mask(lens, t):
    return np.where(np.arange(t)[None, None, None, :] < lens[:, None, None, None], 0.0, FILTER)


# ---------------------------------------------------------------- com.microsoft.Attention

def attention_models():
    rng = np.random.default_rng(7)
    B, S, HIN, N, H = 2, 4, 8, 2, 8
    x = rng.standard_normal((B, S, HIN)).astype(np.float32)
    w = (rng.standard_normal((HIN, 3 * H)) * 0.4).astype(np.float32)
    bias = (rng.standard_normal(3 * H) * 0.1).astype(np.float32)
    ins = ["input", "weights", "bias", "mask_index", "past", "attention_bias"]

    def qkv(sizes=(H, H, H)):
        p = x @ w[:, :sum(sizes)] + bias[:sum(sizes)]
        return np.split(p, [sizes[0], sizes[0] + sizes[1]], axis=-1)

    q, k, v = qkv()

    # No mask, default scale.
    m = make("attention_basic", "Attention", ins[:3], ["output"], {"input": x}, {"weights": w, "bias": bias},
             num_heads=N)
    save(m, {"input": x}, [sdpa(heads(q, N), heads(k, N), heads(v, N))[0]])

    # 1-D mask_index: key lengths (right padding).
    lens = np.array([3, 4], np.int32)
    m = make("attention_mask_1d", "Attention", ins[:4], ["output"], {"input": x, "mask_index": lens},
             {"weights": w, "bias": bias}, num_heads=N)
    save(m, {"input": x, "mask_index": lens},
         [sdpa(heads(q, N), heads(k, N), heads(v, N), add=lengths_mask(lens, S))[0]])

    # 2-D 0/1 mask with a mask_filter_value small enough (-3) that masked keys keep some weight.
    m2 = np.array([[1, 0, 1, 1], [1, 1, 0, 0]], np.int32)
    m = make("attention_mask_2d", "Attention", ins[:4], ["output"], {"input": x, "mask_index": m2},
             {"weights": w, "bias": bias}, num_heads=N, mask_filter_value=-3.0)
    add = np.where(m2[:, None, None, :] > 0, 0.0, -3.0)
    save(m, {"input": x, "mask_index": m2}, [sdpa(heads(q, N), heads(k, N), heads(v, N), add=add)[0]])

    # 3-D [B, S, T] 0/1 mask (every row keeps key 0).
    m3 = (rng.random((B, S, S)) > 0.4).astype(np.int32)
    m3[:, :, 0] = 1
    m = make("attention_mask_3d", "Attention", ins[:4], ["output"], {"input": x, "mask_index": m3},
             {"weights": w, "bias": bias}, num_heads=N)
    add = np.where(m3[:, None] > 0, 0.0, FILTER)
    save(m, {"input": x, "mask_index": m3}, [sdpa(heads(q, N), heads(k, N), heads(v, N), add=add)[0]])

    # unidirectional (GPT-2) with a 2-D mask and an explicit scale.
    m2u = np.array([[1, 1, 1, 0], [1, 0, 1, 1]], np.int32)
    m = make("attention_unidirectional", "Attention", ins[:4], ["output"], {"input": x, "mask_index": m2u},
             {"weights": w, "bias": bias}, num_heads=N, unidirectional=1, scale=0.25)
    save(m, {"input": x, "mask_index": m2u},
         [sdpa(heads(q, N), heads(k, N), heads(v, N), scale=0.25, add=mask_2d(m2u), causal_past=0)[0]])

    # qkv_hidden_sizes with a wider V, attention_bias [1, N, S, T]. (ORT 1.22 crashes
    # without the optional bias input here, so it is given.)
    sizes = (8, 8, 12)
    w2 = (rng.standard_normal((HIN, sum(sizes))) * 0.4).astype(np.float32)
    b2 = (rng.standard_normal(sum(sizes)) * 0.1).astype(np.float32)
    ab = rng.standard_normal((1, N, S, S)).astype(np.float32)
    m = make("attention_qkv_sizes_bias", "Attention", ["input", "weights", "bias", "", "", "attention_bias"],
             ["output"], {"input": x, "attention_bias": ab}, {"weights": w2, "bias": b2}, num_heads=N,
             qkv_hidden_sizes=list(sizes))
    p = x @ w2 + b2
    q2, k2, v2 = np.split(p, [8, 16], axis=-1)
    save(m, {"input": x, "attention_bias": ab}, [sdpa(heads(q2, N), heads(k2, N), heads(v2, N), add=ab)[0]])

    # Decoding step: past [2, B, N, P, D], present output, unidirectional, 2-D mask over past + new.
    P, S1 = 3, 2
    x1 = x[:, :S1]
    past = rng.standard_normal((2, B, N, P, H // N)).astype(np.float32)
    mt = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], np.int32)
    m = make("attention_past_present", "Attention", ins[:5], ["output", "present"],
             {"input": x1, "mask_index": mt, "past": past}, {"weights": w, "bias": bias}, num_heads=N,
             unidirectional=1)
    p = x1 @ w + bias
    q1, k1, v1 = np.split(p, 3, axis=-1)
    kk = np.concatenate([past[0], heads(k1, N)], 2)
    vv = np.concatenate([past[1], heads(v1, N)], 2)
    y = sdpa(heads(q1, N), kk, vv, add=mask_2d(mt), causal_past=P)[0]
    save(m, {"input": x1, "mask_index": mt, "past": past}, [y, np.stack([kk, vv])])

    # As ORT's optimizer emits it for BERT: mask_index = Cast(ReduceSum(attention_mask)), an
    # intermediate value without value_info, so the importer must infer that it is 1-D.
    am = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.int64)
    nodes = [
        helper.make_node("ReduceSum", ["attention_mask", "axes"], ["lengths"], name="lengths", keepdims=0),
        helper.make_node("Cast", ["lengths"], ["mask_index"], name="to_int32", to=I32),
        helper.make_node("Attention", ins[:4], ["output"], name="attention_inferred_mask", domain=MS, num_heads=N),
    ]
    g = helper.make_graph(
        nodes, "attention_inferred_mask_rank",
        [helper.make_tensor_value_info("input", F, ["batch", "seq", HIN]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_value_info("output", helper.make_tensor_type_proto(F, None))],
        [numpy_helper.from_array(w, "weights"), numpy_helper.from_array(bias, "bias"),
         numpy_helper.from_array(np.array([1], np.int64), "axes")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
                          producer_name="floe-make-contrib-attention")
    m.ir_version = 8
    save(m, {"input": x, "attention_mask": am},
         [sdpa(heads(q, N), heads(k, N), heads(v, N), add=lengths_mask(am.sum(1), S))[0]])

    # Refused variants.
    feeds = {"input": x}
    save_unsupported(make("unsupported_attention_rotary", "Attention", ins[:3], ["output"], feeds,
                          {"weights": w, "bias": bias}, num_heads=N, do_rotary=1))
    save_unsupported(make("unsupported_attention_share_buffer", "Attention", ins[:3], ["output"], feeds,
                          {"weights": w, "bias": bias}, num_heads=N, past_present_share_buffer=1))
    lr = np.array([4, 4, 0, 1], np.int32)
    save_unsupported(make("unsupported_attention_mask_2b", "Attention", ins[:4], ["output"],
                          {"input": x, "mask_index": lr}, {"weights": w, "bias": bias}, num_heads=N))
    m4 = np.ones((B, 1, S, S), np.int32)
    save_unsupported(make("unsupported_attention_mask_4d", "Attention", ins[:4], ["output"],
                          {"input": x, "mask_index": m4}, {"weights": w, "bias": bias}, num_heads=N))


# ---------------------------------------------------------------- com.microsoft.MultiHeadAttention

def mha_models():
    rng = np.random.default_rng(8)
    B, S, L, N, D = 2, 3, 5, 2, 4
    H = N * D
    q = rng.standard_normal((B, S, H)).astype(np.float32)
    k = rng.standard_normal((B, L, H)).astype(np.float32)
    v = rng.standard_normal((B, L, H)).astype(np.float32)
    bias = (rng.standard_normal(3 * H) * 0.2).astype(np.float32)
    ins = ["query", "key", "value", "bias", "key_padding_mask", "attention_bias", "past_key", "past_value"]
    qb, kb, vb = q + bias[:H], k + bias[H:2 * H], v + bias[2 * H:]

    # Cross-attention (kv length 5, query length 3) with the projection bias.
    feeds = {"query": q, "key": k, "value": v}
    m = make("mha_bias_cross", "MultiHeadAttention", ins[:4], ["output"], feeds, {"bias": bias}, num_heads=N)
    save(m, feeds, [sdpa(heads(qb, N), heads(kb, N), heads(vb, N))[0]])

    # key_padding_mask [B, L] (0/1) and [B] (lengths).
    kpm = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1]], np.int32)
    feeds = {"query": q, "key": k, "value": v, "key_padding_mask": kpm}
    m = make("mha_key_padding_2d", "MultiHeadAttention", ins[:5], ["output"], feeds, {"bias": bias}, num_heads=N)
    save(m, feeds, [sdpa(heads(qb, N), heads(kb, N), heads(vb, N), add=mask_2d(kpm))[0]])
    lens = np.array([2, 5], np.int32)
    feeds = {"query": q, "key": k, "value": v, "key_padding_mask": lens}
    m = make("mha_key_padding_1d", "MultiHeadAttention", ["query", "key", "value", "", "key_padding_mask"],
             ["output"], feeds, {}, num_heads=N)
    save(m, feeds, [sdpa(heads(q, N), heads(k, N), heads(v, N), add=lengths_mask(lens, L))[0]])

    # attention_bias [B, 1, S, L], explicit scale, and the qk output (scores + bias + mask).
    ab = rng.standard_normal((B, 1, S, L)).astype(np.float32)
    feeds = {"query": q, "key": k, "value": v, "key_padding_mask": kpm, "attention_bias": ab}
    m = make("mha_attention_bias_qk", "MultiHeadAttention", ins[:6], ["output", "", "", "qk"], feeds,
             {"bias": bias}, num_heads=N, scale=0.3)
    y, scores = sdpa(heads(qb, N), heads(kb, N), heads(vb, N), scale=0.3, add=ab + mask_2d(kpm))
    save(m, feeds, [y, scores])

    # Decoding with past_key / past_value [B, N, P, D], unidirectional, present outputs.
    P, S1 = 4, 2
    pk = rng.standard_normal((B, N, P, D)).astype(np.float32)
    pv = rng.standard_normal((B, N, P, D)).astype(np.float32)
    q1, k1, v1 = q[:, :S1], k[:, :S1], v[:, :S1]
    feeds = {"query": q1, "key": k1, "value": v1, "past_key": pk, "past_value": pv}
    m = make("mha_past_unidirectional", "MultiHeadAttention", ["query", "key", "value", "", "", "", "past_key",
             "past_value"], ["output", "present_key", "present_value"], feeds, {}, num_heads=N, unidirectional=1)
    kk = np.concatenate([pk, heads(k1, N)], 2)
    vv = np.concatenate([pv, heads(v1, N)], 2)
    save(m, feeds, [sdpa(heads(q1, N), kk, vv, causal_past=P)[0], kk, vv])

    # Refused variants.
    packed = rng.standard_normal((B, S, N, 3, D)).astype(np.float32)
    save_unsupported(make("unsupported_mha_packed_qkv", "MultiHeadAttention", ["query"], ["output"],
                          {"query": packed}, {}, num_heads=N))
    packed_kv = rng.standard_normal((B, L, N, 2, D)).astype(np.float32)
    save_unsupported(make("unsupported_mha_packed_kv", "MultiHeadAttention", ["query", "key"], ["output"],
                          {"query": q, "key": packed_kv}, {}, num_heads=N))
    save_unsupported(make("unsupported_mha_causal_cross", "MultiHeadAttention", ins[:3], ["output"],
                          {"query": q, "key": k, "value": v}, {}, num_heads=N, unidirectional=1))


if __name__ == "__main__":
    attention_models()
    mha_models()
