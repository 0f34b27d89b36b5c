#!/usr/bin/env python3
"""Writes the LMUFormer test models (ALGORITHMS.md 3.4, scaled down) that use floe's
custom ops `floe::LMUMemory` and `floe::LIF` (docs/custom-ops.md), with fixed-seed
weights, plus a reference input and the outputs of an independent numpy
implementation of the whole model (onnxruntime cannot run floe:: ops).

    /work/main/.venv/bin/python scripts/make_lmu_models.py   # writes examples/models/

Models (input `mel` [1, T, 20], per-frame output `logits` [1, T, 12]; causal except
the two k=3 tokenizer convs, one frame of look-ahead each):
- lmuformer_kws: Conv1d-ReLU x2 tokenizer (BN folded), x + LMU(x) with
  u = ReLU(x W_u + b) (du = 1), m = LMUMemory(u) (order 32, theta 24, zoh),
  h = ReLU([m, x] W_h + b); x + FFN(x) (per-frame MatMuls, ReLU); head per frame.
- lmuformer_kws_spiking: the same with LIF neurons before the MatMuls, as in
  spiking LMUFormer (a LIF between the tokenizer convs on [B, C, T], time_axis 2;
  elsewhere on [B, T, C], time_axis 1).

The spiking reference is only meaningful if no membrane potential lies so close to
its threshold that f32 rounding differences (GEMM summation order) could flip a
spike; the script picks the first input seed whose smallest |H - v_th| over all LIFs
exceeds MARGIN and records it.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "models")
F = TensorProto.FLOAT
MEL, DIM, ORDER, THETA, CLASSES, T = 20, 32, 32, 24.0, 12, 40
MARGIN = 2e-4


# ---------------------------------------------------------------- numpy reference
def expm(m):
    """Matrix exponential by scaling and squaring with a 30-term Taylor series (f64)."""
    norm = np.abs(m).sum(axis=0).max()
    s = max(0, int(np.ceil(np.log2(norm / 0.25))) if norm > 0.25 else 0)
    a = m / 2.0**s
    e, term = np.eye(len(m)), np.eye(len(m))
    for k in range(1, 30):
        term = term @ a / k
        e = e + term
    for _ in range(s):
        e = e @ e
    return e


def lmu_ab(order, theta, dt=1.0):
    """Discrete (Ā, B̄) of ALGORITHMS.md 3.1-3.2 by zero-order hold, in f64."""
    i = np.arange(order)[:, None]
    j = np.arange(order)[None, :]
    a = (2 * i + 1) * np.where(i < j, -1.0, (-1.0) ** (i - j + 1)) / theta
    b = (2 * np.arange(order) + 1) * (-1.0) ** np.arange(order) / theta
    m = np.zeros((order + 1, order + 1))
    m[:order, :order] = a * dt
    m[:order, order] = b * dt
    e = expm(m)
    return e[:order, :order], e[:order, order]


def lmu_memory(u, order, theta):
    """u [B, T, 1] -> m [B, T, order]: m_t = Ā m_{t-1} + B̄ u_t (f64 recurrence)."""
    ab, bb = lmu_ab(order, theta)
    bsz, t, _ = u.shape
    m = np.zeros((bsz, t, order))
    for bi in range(bsz):
        s = np.zeros(order)
        for ti in range(t):
            s = ab @ s + bb * float(u[bi, ti, 0])
            m[bi, ti] = s
    return m.astype(np.float32)


class Lif:
    """spikingjelly's multi-step LIF (decay_input, hard reset), in f32 like floe."""

    def __init__(self, margins):
        self.margins = margins

    def __call__(self, x, axis=1, tau=2.0, v_th=1.0, v_reset=0.0):
        x = np.moveaxis(x.astype(np.float32), axis, 0)
        tau, v_th, v_reset = np.float32(tau), np.float32(v_th), np.float32(v_reset)
        v = np.full(x.shape[1:], v_reset, np.float32)
        out = np.zeros_like(x)
        for t in range(x.shape[0]):
            h = (v + (x[t] - (v - v_reset)) / tau).astype(np.float32)
            self.margins.append(float(np.abs(h - v_th).min()))
            s = h >= v_th
            out[t] = s
            v = np.where(s, v_reset, h).astype(np.float32)
        return np.moveaxis(out, 0, axis)


def conv1d(x, w, b):
    """x [B, C, T], w [O, C, 3], pad 1."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    t = x.shape[2]
    return np.einsum("ock,bckt->bot", w, np.stack([xp[:, :, k:k + t] for k in range(3)], axis=2)) + b[None, :, None]


def relu(x):
    return np.maximum(x, 0)


def forward(p, mel, spiking):
    """The whole model in numpy; returns logits and the spike margins seen."""
    margins = []
    lif = Lif(margins)
    h = mel.transpose(0, 2, 1)
    if spiking:
        h = conv1d(h, p["c1_w"], p["c1_b"])
        h = lif(h, axis=2)
        h = conv1d(h, p["c2_w"], p["c2_b"])
    else:
        h = relu(conv1d(h, p["c1_w"], p["c1_b"]))
        h = relu(conv1d(h, p["c2_w"], p["c2_b"]))
    x = h.transpose(0, 2, 1).astype(np.float32)
    if spiking:
        s = lif(x, v_th=0.5)
        u = lif(s @ p["u_w"] + p["u_b"])
        m = lmu_memory(u, ORDER, THETA)
        ms = lif(m * p["m_g"] + p["m_b"])
        hh = lif(np.concatenate([ms, s], axis=-1) @ p["h_w"] + p["h_b"])
        x = x + (hh @ p["p_w"] + p["p_b"])
        f = lif(lif(x) @ p["f1_w"] + p["f1_b"])
        x = x + (f @ p["f2_w"] + p["f2_b"])
        logits = lif(x) @ p["c_w"] + p["c_b"]
    else:
        u = relu(x @ p["u_w"] + p["u_b"])
        m = lmu_memory(u, ORDER, THETA)
        hh = relu(np.concatenate([m, x], axis=-1) @ p["h_w"] + p["h_b"])
        x = x + hh
        f = relu(x @ p["f1_w"] + p["f1_b"])
        x = x + relu(f @ p["f2_w"] + p["f2_b"])
        logits = x @ p["c_w"] + p["c_b"]
    return logits.astype(np.float32), margins


# ---------------------------------------------------------------- ONNX graph
def params(seed, spiking):
    rng = np.random.default_rng(seed)

    def w(*shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[0] if len(shape) == 2 else shape[1] * shape[2])
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    gain = 2.0 if spiking else 1.0  # keeps the LIFs firing
    p = {}
    for name, c_in in (("c1", MEL), ("c2", DIM)):
        # conv + BatchNorm folded into the conv (as fold_batch_norm would)
        cw, cb = w(DIM, c_in, 3), (0.1 * rng.standard_normal(DIM)).astype(np.float32)
        g = (1.0 + 0.1 * rng.standard_normal(DIM)).astype(np.float32)
        beta = (0.1 * rng.standard_normal(DIM)).astype(np.float32)
        mean = (0.1 * rng.standard_normal(DIM)).astype(np.float32)
        var = (0.5 + rng.random(DIM)).astype(np.float32)
        k = g / np.sqrt(var + 1e-5)
        p[name + "_w"] = (cw * k[:, None, None] * gain).astype(np.float32)
        p[name + "_b"] = ((cb - mean) * k * gain + beta).astype(np.float32)
    p["u_w"], p["u_b"] = w(DIM, 1, scale=gain / np.sqrt(DIM)), np.full(1, 0.5 if spiking else 0.1, np.float32)
    p["m_g"] = (gain * 3.0 * (1.0 + 0.2 * rng.random(ORDER))).astype(np.float32)
    p["m_b"] = (0.3 + 0.3 * rng.standard_normal(ORDER)).astype(np.float32)
    p["h_w"] = w(ORDER + DIM, DIM, scale=gain * 2.0 / np.sqrt(ORDER + DIM))
    p["h_b"] = (0.3 + 0.1 * rng.standard_normal(DIM)).astype(np.float32)
    p["p_w"], p["p_b"] = w(DIM, DIM), (0.1 * rng.standard_normal(DIM)).astype(np.float32)
    p["f1_w"] = w(DIM, 2 * DIM, scale=gain * 2.0 / np.sqrt(DIM))
    p["f1_b"] = (0.3 * gain / 2 + 0.1 * rng.standard_normal(2 * DIM)).astype(np.float32)
    p["f2_w"], p["f2_b"] = w(2 * DIM, DIM), (0.1 * rng.standard_normal(DIM)).astype(np.float32)
    p["c_w"], p["c_b"] = w(DIM, CLASSES), (0.1 * rng.standard_normal(CLASSES)).astype(np.float32)
    return p


class Builder:
    def __init__(self, p):
        self.p, self.nodes, self.inits, self.n = p, [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, key):
        n = self.name(key)
        self.inits.append(numpy_helper.from_array(self.p[key], n))
        return n

    def op(self, op_type, inputs, domain="", out=None, **attrs):
        o = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [o], name=self.name(op_type), domain=domain, **attrs))
        return o

    def linear(self, x, key):
        return self.op("Add", [self.op("MatMul", [x, self.const(key + "_w")]), self.const(key + "_b")])

    def conv(self, x, key):
        return self.op("Conv", [x, self.const(key + "_w"), self.const(key + "_b")], kernel_shape=[3], pads=[1, 1])

    def lif(self, x, time_axis=1, v_th=1.0):
        return self.op("LIF", [x], domain="floe", tau=2.0, v_th=v_th, v_reset=0.0, decay_input=1, time_axis=time_axis)

    def lmu(self, u):
        return self.op("LMUMemory", [u], domain="floe", order=ORDER, theta=THETA, discretizer="zoh", dt=1.0)


def graph(p, spiking):
    b = Builder(p)
    h = b.op("Transpose", ["mel"], perm=[0, 2, 1])
    if spiking:
        h = b.conv(b.lif(b.conv(h, "c1"), time_axis=2), "c2")
    else:
        h = b.op("Relu", [b.conv(b.op("Relu", [b.conv(h, "c1")]), "c2")])
    x = b.op("Transpose", [h], perm=[0, 2, 1])
    if spiking:
        s = b.lif(x, v_th=0.5)
        m = b.lmu(b.lif(b.linear(s, "u")))
        ms = b.lif(b.op("Add", [b.op("Mul", [m, b.const("m_g")]), b.const("m_b")]))
        hh = b.lif(b.linear(b.op("Concat", [ms, s], axis=-1), "h"))
        x = b.op("Add", [x, b.linear(hh, "p")])
        f = b.lif(b.linear(b.lif(x), "f1"))
        x = b.op("Add", [x, b.linear(f, "f2")])
        logits = b.op("Add", [b.op("MatMul", [b.lif(x), b.const("c_w")]), b.const("c_b")], out="logits")
    else:
        m = b.lmu(b.op("Relu", [b.linear(x, "u")]))
        hh = b.op("Relu", [b.linear(b.op("Concat", [m, x], axis=-1), "h")])
        x = b.op("Add", [x, hh])
        f = b.op("Relu", [b.linear(x, "f1")])
        x = b.op("Add", [x, b.op("Relu", [b.linear(f, "f2")])])
        logits = b.op("Add", [b.op("MatMul", [x, b.const("c_w")]), b.const("c_b")], out="logits")
    name = "lmuformer_kws_spiking" if spiking else "lmuformer_kws"
    return name, helper.make_graph(b.nodes, name, [helper.make_tensor_value_info("mel", F, [1, "T", MEL])],
                                   [helper.make_tensor_value_info(logits, F, [1, "T", CLASSES])], b.inits)


def save(spiking):
    p = params(3 if spiking else 2, spiking)
    name, g = graph(p, spiking)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("floe", 1)],
                              producer_name="floe-make-lmu-models")
    model.ir_version = 8
    onnx.checker.check_model(model)  # full_check would need schemas for the floe domain
    for seed in range(100, 200):
        mel = np.random.default_rng(seed).standard_normal((1, T, MEL)).astype(np.float32)
        logits, margins = forward(p, mel, spiking)
        if not spiking or min(margins) > MARGIN:
            break
    else:
        raise SystemExit(f"{name}: no input seed keeps spike margins above {MARGIN}")
    path = os.path.join(OUT, f"{name}.onnx")
    onnx.save(model, path)
    ref = os.path.join(OUT, name)
    os.makedirs(ref, exist_ok=True)
    for f in os.listdir(ref):
        os.remove(os.path.join(ref, f))
    np.save(os.path.join(ref, "input_0_mel.npy"), mel)
    np.save(os.path.join(ref, "output_0_logits.npy"), logits)
    extra = f", input seed {seed}, smallest spike margin {min(margins):.2e}" if spiking else ""
    print(f"{path}: {len(g.node)} nodes, logits {logits.shape}, |logits| max {np.abs(logits).max():.3f}{extra}")
    return p, mel


if __name__ == "__main__":
    save(False)
    p, mel = save(True)
    # spike activity per LIF, so the spiking reference exercises every path
    rates = []
    orig = Lif.__call__

    def counting(self, x, **kw):
        s = orig(self, x, **kw)
        rates.append(float(s.mean()))
        return s

    Lif.__call__ = counting
    forward(p, mel, True)
    print("spike rates per LIF:", " ".join(f"{r:.2f}" for r in rates))
