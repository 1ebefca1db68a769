#!/usr/bin/env python3
"""Generate variant fixtures (other sizes) for the RNN golden-gradient suite.

Layout and equations follow tests/fixtures/README.md (sections 1-5).
Everything is computed with torch in float64 on the CPU, with torch.nn modules
(nn.RNN, nn.LSTM, nn.GRU, nn.Embedding, nn.Linear) and torch.autograd.
Writes into tests/fixtures/variants/. Deterministic: fixed seed per file.
Not needed to run the tests; only to regenerate the variants.

Usage: pip install torch numpy && python3 tools/gen_variant_fixtures.py
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "variants")
DT = torch.float64
TORCH_VER = torch.__version__.split("+")[0]

torch.set_num_threads(1)

# ---------------------------------------------------------------------------
# JSON writer mirroring the layout of the existing fixtures
# ---------------------------------------------------------------------------


class Tensor:
    def __init__(self, t, dtype=None):
        t = t.detach()
        if dtype is None:
            dtype = "int64" if t.dtype == torch.int64 else "float64"
        self.dtype = dtype
        self.shape = list(t.shape)
        if dtype == "int64":
            self.data = [int(v) for v in t.reshape(-1).tolist()]
        else:
            self.data = [float(v) for v in t.to(DT).reshape(-1).tolist()]


def fmt_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(type(v))


def fmt_tensor(t, indent):
    nums = [fmt_scalar(v) for v in t.data]
    head = '{"shape": %s, "dtype": "%s", "data": [' % (json.dumps(t.shape), t.dtype)
    if len(t.shape) <= 1:
        return head + ", ".join(nums) + "]}"
    row = t.shape[-1]
    pad = " " * (indent + 2)
    lines = []
    for i in range(0, len(nums), row):
        lines.append(pad + ", ".join(nums[i:i + row]))
    return head + "\n" + ",\n".join(lines) + "\n" + " " * indent + "]}"


def fmt(v, indent=0):
    if isinstance(v, Tensor):
        return fmt_tensor(v, indent)
    if isinstance(v, dict):
        if not v:
            return "{}"
        pad = " " * (indent + 2)
        items = [pad + json.dumps(k) + ": " + fmt(val, indent + 2) for k, val in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(v, list):
        if not v:
            return "[]"
        pad = " " * (indent + 2)
        items = [pad + fmt(val, indent + 2) for val in v]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return fmt_scalar(v)


def write_fixture(doc):
    keys = ["case", "name", "description", "source", "equations", "config",
            "params", "inputs", "loss_inputs", "loss", "expected"]
    assert list(doc.keys()) == keys, list(doc.keys())
    # every param and every float64 input has exactly one grad
    want = list(doc["params"].keys()) + [k for k, v in doc["inputs"].items() if v.dtype == "float64"]
    assert list(doc["expected"]["grads"].keys()) == want, (doc["name"], list(doc["expected"]["grads"]))
    for k in want:
        src = doc["params"].get(k) or doc["inputs"].get(k)
        assert doc["expected"]["grads"][k].shape == src.shape, k
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, doc["name"] + ".json")
    with open(path, "w") as f:
        f.write(fmt(doc) + "\n")
    # round-trip sanity
    json.load(open(path))
    print("wrote", path)
    return path


def T(t):
    return Tensor(t)


def tdict(names, tensors):
    return {n: T(t) for n, t in zip(names, tensors)}


# ---------------------------------------------------------------------------
# Equation text blocks (same wording as the existing fixtures)
# ---------------------------------------------------------------------------

PREAMBLE = ("time is 1-based in the equations: x_t = x[t-1] (t = 1..T); the initial state (h_0 etc.) "
            "comes from the inputs; per-step results s_t are stored at index t-1 of the [T, ...] outputs. "
            "Matrix times vector is per batch element (batched: X @ W^T). '*' is elementwise.")


def lstm_blocks(p, sfx="", x="x_t"):
    return [
        f"row blocks of {p}weight_ih_l0{sfx} ([4H, in]), {p}weight_hh_l0{sfx} ([4H, H]), {p}bias_ih_l0{sfx}, "
        f"{p}bias_hh_l0{sfx} ([4H]) in order i, f, g, o: W_ii = {p}weight_ih_l0{sfx}[0:H], W_if = {p}weight_ih_l0{sfx}[H:2H], "
        f"W_ig = {p}weight_ih_l0{sfx}[2H:3H], W_io = {p}weight_ih_l0{sfx}[3H:4H]; W_hi, W_hf, W_hg, W_ho = same row blocks "
        f"of {p}weight_hh_l0{sfx}; b_ii..b_io of {p}bias_ih_l0{sfx}; b_hi..b_ho of {p}bias_hh_l0{sfx}",
        f"i_t = sigmoid(W_ii {x} + b_ii + W_hi h_{{t-1}} + b_hi)",
        f"f_t = sigmoid(W_if {x} + b_if + W_hf h_{{t-1}} + b_hf)",
        f"g_t = tanh(W_ig {x} + b_ig + W_hg h_{{t-1}} + b_hg)",
        f"o_t = sigmoid(W_io {x} + b_io + W_ho h_{{t-1}} + b_ho)",
        "c_t = f_t * c_{t-1} + i_t * g_t",
        "h_t = o_t * tanh(c_t)",
    ]


LSTM_ML_BLOCKS = [
    "row blocks of weight_ih_l{l}[_reverse] ([4H, in]), weight_hh_l{l}[_reverse] ([4H, H]), bias_ih_l{l}[_reverse], "
    "bias_hh_l{l}[_reverse] ([4H]) in order i, f, g, o: W_ii = weight_ih_l{l}[_reverse][0:H], W_if = "
    "weight_ih_l{l}[_reverse][H:2H], W_ig = weight_ih_l{l}[_reverse][2H:3H], W_io = weight_ih_l{l}[_reverse][3H:4H]; "
    "W_hi, W_hf, W_hg, W_ho = same row blocks of weight_hh_l{l}[_reverse]; b_ii..b_io of bias_ih_l{l}[_reverse]; "
    "b_hi..b_ho of bias_hh_l{l}[_reverse]",
    "i_t = sigmoid(W_ii in_t + b_ii + W_hi h_{t-1} + b_hi)",
    "f_t = sigmoid(W_if in_t + b_if + W_hf h_{t-1} + b_hf)",
    "g_t = tanh(W_ig in_t + b_ig + W_hg h_{t-1} + b_hg)",
    "o_t = sigmoid(W_io in_t + b_io + W_ho h_{t-1} + b_ho)",
    "c_t = f_t * c_{t-1} + i_t * g_t",
    "h_t = o_t * tanh(c_t)",
]


def bidir_equations(L):
    return [
        PREAMBLE,
        f"num_layers L = {L}, directions D = 2; state index s = D*l + d (l = layer 0..L-1, d = 0 forward, 1 backward)",
        "parameter suffix: layer l forward uses *_l{l} (e.g. weight_ih_l0), layer l backward uses *_l{l}_reverse",
        "each (layer, direction) is an independent LSTM cell with the equations below, its own params, initial state h_0 = h0[s], c_0 = c0[s]",
    ] + LSTM_ML_BLOCKS + [
        "layer 0: in_t = x_t (size I); layer l > 0: in_t = out^{(l-1)}_t (size D*H)",
        "forward direction: t = 1, 2, ..., T (h_{t-1} is the state of the previous time step)",
        "backward direction: processes t = T, T-1, ..., 1, its recurrence is h^b_t = cell(in_t, h^b_{t+1}, c^b_{t+1}) with h^b_{T+1} = h0[s], c^b_{T+1} = c0[s]",
        "out^{(l)}_t = concat(h^{f}_t, h^{b}_t) (forward first, length D*H)",
        "outputs.h[t-1] = out^{(L-1)}_t (last layer)",
        "outputs.h_n[s] / outputs.c_n[s] = final state of (layer, direction) s: forward -> state after t = T; backward -> state after t = 1",
        "loss = sum_{t,b,k} w_h[t-1,b,k] * outputs.h[t-1,b,k] + sum_{s,b,j} w_c[s,b,j] * c_n[s,b,j]",
        "no dropout between layers",
    ]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def grads_of(loss, named, allow_unused=False):
    """named: list of (name, tensor). Returns dict name -> grad (zeros where unused)."""
    ts = [t for _, t in named]
    gs = torch.autograd.grad(loss, ts, allow_unused=allow_unused)
    out = {}
    for (n, t), g in zip(named, gs):
        out[n] = torch.zeros_like(t) if g is None else g
    return out


def module_params(mod, prefix=""):
    return [(prefix + n, p) for n, p in mod.named_parameters()]


def rnd(*shape, std=1.0):
    return (torch.randn(*shape, dtype=DT) * std).requires_grad_(True)


def const(*shape, std=1.0):
    return torch.randn(*shape, dtype=DT) * std


def doc(case, name, description, source, equations, config, params, inputs, loss_inputs, loss, expected):
    return {"case": case, "name": name, "description": description, "source": source,
            "equations": equations, "config": config, "params": params, "inputs": inputs,
            "loss_inputs": loss_inputs, "loss": loss, "expected": expected}


# ---------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------


def gen_elman_tanh(name, seed, I, H, B, Tn):
    torch.manual_seed(seed)
    rnn = nn.RNN(I, H, num_layers=1, nonlinearity="tanh", dtype=DT)
    x = rnd(Tn, B, I)
    h0 = rnd(1, B, H, std=0.5)
    w_h = const(Tn, B, H)
    h, h_n = rnn(x, h0)
    loss = (w_h * h).sum()
    named = module_params(rnn) + [("x", x), ("h0", h0)]
    g = grads_of(loss, named)
    return doc(
        "elman_tanh_many_to_many", name,
        f"Single-layer Elman RNN (tanh), many-to-many, given initial state h0 (variant: T={Tn}, B={B}, I={I}, H={H}).",
        f"torch {TORCH_VER} nn.RNN(nonlinearity='tanh') (float64, CPU)",
        [PREAMBLE, "h_0 = h0[0]",
         "h_t = tanh(weight_ih_l0 x_t + bias_ih_l0 + weight_hh_l0 h_{t-1} + bias_hh_l0),  t = 1..T",
         "outputs.h[t-1] = h_t;  outputs.h_n[0] = h_T",
         "loss = sum_{t,b,j} w_h[t-1,b,j] * h_t[b,j]"],
        {"input_size": I, "hidden_size": H, "batch": B, "steps": Tn, "nonlinearity": "tanh"},
        {n: T(p) for n, p in module_params(rnn)},
        {"x": T(x), "h0": T(h0)},
        {"w_h": T(w_h)},
        "sum over t,b,j of w_h[t,b,j] * h[t,b,j]",
        {"outputs": {"h": T(h), "h_n": T(h_n)}, "loss": loss.item(), "grads": {k: T(v) for k, v in g.items()}},
    )


def gen_lstm(name, seed, I, H, B, Tn):
    torch.manual_seed(seed)
    lstm = nn.LSTM(I, H, num_layers=1, dtype=DT)
    x = rnd(Tn, B, I)
    h0 = rnd(1, B, H, std=0.5)
    c0 = rnd(1, B, H, std=0.5)
    w_h = const(Tn, B, H)
    w_c = const(1, B, H)
    h, (h_n, c_n) = lstm(x, (h0, c0))
    loss = (w_h * h).sum() + (w_c * c_n).sum()
    g = grads_of(loss, module_params(lstm) + [("x", x), ("h0", h0), ("c0", c0)])
    return doc(
        "lstm", name,
        f"Single-layer LSTM (no peepholes) with given h0, c0; outputs all h_t and final (h_T, c_T) (variant: T={Tn}, B={B}, I={I}, H={H}).",
        f"torch {TORCH_VER} nn.LSTM (float64, CPU)",
        [PREAMBLE, "h_0 = h0[0], c_0 = c0[0]"] + lstm_blocks("") + [
            "outputs.h[t-1] = h_t;  outputs.h_n[0] = h_T;  outputs.c_n[0] = c_T",
            "loss = sum_{t,b,j} w_h[t-1,b,j] * h_t[b,j] + sum_{b,j} w_c[0,b,j] * c_T[b,j]"],
        {"input_size": I, "hidden_size": H, "batch": B, "steps": Tn},
        {n: T(p) for n, p in module_params(lstm)},
        {"x": T(x), "h0": T(h0), "c0": T(c0)},
        {"w_h": T(w_h), "w_c": T(w_c)},
        "sum over t,b,j of w_h[t,b,j]*h[t,b,j] + sum over b,j of w_c[0,b,j]*c_n[0,b,j]",
        {"outputs": {"h": T(h), "h_n": T(h_n), "c_n": T(c_n)}, "loss": loss.item(),
         "grads": {k: T(v) for k, v in g.items()}},
    )


def gen_gru_torch(name, seed, I, H, B, Tn):
    torch.manual_seed(seed)
    gru = nn.GRU(I, H, num_layers=1, dtype=DT)
    x = rnd(Tn, B, I)
    h0 = rnd(1, B, H, std=0.5)
    w_h = const(Tn, B, H)
    h, h_n = gru(x, h0)
    loss = (w_h * h).sum()
    g = grads_of(loss, module_params(gru) + [("x", x), ("h0", h0)])
    return doc(
        "gru_torch", name,
        f"Single-layer GRU as in torch.nn.GRU (cuDNN variant: reset gate applied AFTER the hidden matmul, b_hn inside the reset product) (variant: T={Tn}, B={B}, I={I}, H={H}).",
        f"torch {TORCH_VER} nn.GRU (float64, CPU)",
        [PREAMBLE, "h_0 = h0[0]",
         "row blocks of weight_ih_l0 ([3H, in]), weight_hh_l0 ([3H, H]), bias_ih_l0, bias_hh_l0 ([3H]) in order r, z, n: "
         "W_ir = weight_ih_l0[0:H], W_iz = weight_ih_l0[H:2H], W_in = weight_ih_l0[2H:3H]; W_hr, W_hz, W_hn = same row "
         "blocks of weight_hh_l0; b_ir, b_iz, b_in of bias_ih_l0; b_hr, b_hz, b_hn of bias_hh_l0",
         "r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)",
         "z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)",
         "n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))",
         "h_t = (1 - z_t) * n_t + z_t * h_{t-1}",
         "outputs.h[t-1] = h_t; outputs.h_n[0] = h_T",
         "loss = sum_{t,b,j} w_h[t-1,b,j] * h_t[b,j]"],
        {"input_size": I, "hidden_size": H, "batch": B, "steps": Tn},
        {n: T(p) for n, p in module_params(gru)},
        {"x": T(x), "h0": T(h0)},
        {"w_h": T(w_h)},
        "sum over t,b,j of w_h[t,b,j] * h[t,b,j]",
        {"outputs": {"h": T(h), "h_n": T(h_n)}, "loss": loss.item(), "grads": {k: T(v) for k, v in g.items()}},
    )


def gen_stacked_gru(name, seed, I, H, B, Tn, L):
    torch.manual_seed(seed)
    gru = nn.GRU(I, H, num_layers=L, dtype=DT)
    x = rnd(Tn, B, I)
    h0 = rnd(L, B, H, std=0.5)
    w_h = const(Tn, B, H)
    w_hn = const(L, B, H)
    h, h_n = gru(x, h0)
    loss = (w_h * h).sum() + (w_hn * h_n).sum()
    g = grads_of(loss, module_params(gru) + [("x", x), ("h0", h0)])
    return doc(
        "stacked_gru", name,
        f"Stacked (deep) GRU, torch.nn.GRU formulation, no dropout (variant: L={L}, T={Tn}, B={B}, I={I}, H={H}).",
        f"torch {TORCH_VER} nn.GRU(num_layers={L}) (float64, CPU)",
        [PREAMBLE,
         f"num_layers L = {L}; layer l uses params *_l{{l}} and initial state h_0 = h0[l]",
         "row blocks of weight_ih_l{l} ([3H, in]), weight_hh_l{l} ([3H, H]), bias_ih_l{l}, bias_hh_l{l} ([3H]) in order r, z, n: "
         "W_ir = weight_ih_l{l}[0:H], W_iz = weight_ih_l{l}[H:2H], W_in = weight_ih_l{l}[2H:3H]; W_hr, W_hz, W_hn = same row "
         "blocks of weight_hh_l{l}; b_ir, b_iz, b_in of bias_ih_l{l}; b_hr, b_hz, b_hn of bias_hh_l{l}",
         "r_t = sigmoid(W_ir in_t + b_ir + W_hr h_{t-1} + b_hr)",
         "z_t = sigmoid(W_iz in_t + b_iz + W_hz h_{t-1} + b_hz)",
         "n_t = tanh(W_in in_t + b_in + r_t * (W_hn h_{t-1} + b_hn))",
         "h_t = (1 - z_t) * n_t + z_t * h_{t-1}",
         "layer 0: in_t = x_t (size I); layer l > 0: in_t = h_t of layer l-1 (size H)",
         "outputs.h[t-1] = h_t of the last layer; outputs.h_n[l] = h_T of layer l",
         "loss = sum_{t,b,j} w_h[t-1,b,j] * outputs.h[t-1,b,j] + sum_{l,b,j} w_hn[l,b,j] * h_n[l,b,j]",
         "no dropout between layers"],
        {"input_size": I, "hidden_size": H, "batch": B, "steps": Tn, "num_layers": L},
        {n: T(p) for n, p in module_params(gru)},
        {"x": T(x), "h0": T(h0)},
        {"w_h": T(w_h), "w_hn": T(w_hn)},
        "sum over t,b,j of w_h[t,b,j]*h[t,b,j] + sum over l,b,j of w_hn[l,b,j]*h_n[l,b,j]",
        {"outputs": {"h": T(h), "h_n": T(h_n)}, "loss": loss.item(), "grads": {k: T(v) for k, v in g.items()}},
    )


def gen_bidir_lstm(case, name, seed, I, H, B, Tn, L):
    torch.manual_seed(seed)
    lstm = nn.LSTM(I, H, num_layers=L, bidirectional=True, dtype=DT)
    x = rnd(Tn, B, I)
    h0 = rnd(2 * L, B, H, std=0.5)
    c0 = rnd(2 * L, B, H, std=0.5)
    w_h = const(Tn, B, 2 * H)
    w_c = const(2 * L, B, H)
    h, (h_n, c_n) = lstm(x, (h0, c0))
    loss = (w_h * h).sum() + (w_c * c_n).sum()
    g = grads_of(loss, module_params(lstm) + [("x", x), ("h0", h0), ("c0", c0)])
    if case == "bilstm":
        desc = f"Single-layer bidirectional LSTM; output at t = concat(forward h_t, backward h_t) (variant: T={Tn}, B={B}, I={I}, H={H})."
    else:
        desc = (f"Stacked bidirectional LSTM: layer l>0 consumes the concatenated [fwd; bwd] outputs of layer l-1 "
                f"(variant: L={L}, T={Tn}, B={B}, I={I}, H={H}).")
    return doc(
        case, name, desc,
        f"torch {TORCH_VER} nn.LSTM(num_layers={L}, bidirectional=True) (float64, CPU)",
        bidir_equations(L),
        {"input_size": I, "hidden_size": H, "batch": B, "steps": Tn, "num_layers": L, "bidirectional": True},
        {n: T(p) for n, p in module_params(lstm)},
        {"x": T(x), "h0": T(h0), "c0": T(c0)},
        {"w_h": T(w_h), "w_c": T(w_c)},
        "sum over t,b,k of w_h[t,b,k]*h[t,b,k] + sum over s,b,j of w_c[s,b,j]*c_n[s,b,j]",
        {"outputs": {"h": T(h), "h_n": T(h_n), "c_n": T(c_n)}, "loss": loss.item(),
         "grads": {k: T(v) for k, v in g.items()}},
    )


class CharLM(nn.Module):
    def __init__(self, V, E, H):
        super().__init__()
        self.embedding = nn.Embedding(V, E, dtype=DT)
        self.lstm = nn.LSTM(E, H, num_layers=1, dtype=DT)
        self.fc = nn.Linear(H, V, dtype=DT)

    def forward(self, tok, h0, c0):
        e = self.embedding(tok)
        h, _ = self.lstm(e, (h0, c0))
        return h, self.fc(h)


def gen_char_lm(name, seed, V, E, H, B, Tn):
    torch.manual_seed(seed)
    model = CharLM(V, E, H)
    # tokens [T+1, B]; inputs tokens[0..T-1] include a repeated token (embedding-grad
    # accumulation) and leave at least one vocab row unused (zero grad row).
    while True:
        tokens = torch.randint(0, V, (Tn + 1, B), dtype=torch.int64)
        used = tokens[:Tn].reshape(-1)
        if used.unique().numel() < used.numel() and used.unique().numel() < V:
            break
    h0 = rnd(1, B, H, std=0.5)
    c0 = rnd(1, B, H, std=0.5)
    h, logits = model(tokens[:Tn], h0, c0)
    loss = F.cross_entropy(logits.reshape(Tn * B, V), tokens[1:].reshape(-1), reduction="mean")
    g = grads_of(loss, module_params(model) + [("h0", h0), ("c0", c0)])
    return doc(
        "char_lm_teacher_forcing", name,
        "Character-level language model trained with teacher forcing: Embedding -> LSTM -> Linear(H->V), mean softmax "
        f"cross-entropy against the next token over all T*B positions (variant: V={V}, E={E}, H={H}, T={Tn}, B={B}).",
        f"torch {TORCH_VER} nn.Embedding + nn.LSTM + nn.Linear + F.cross_entropy (float64, CPU)",
        ["time is 1-based: the input token at step t is tokens[t-1, b] and its target is tokens[t, b] (teacher forcing: "
         "inputs are the true previous tokens), t = 1..T; tokens has shape [T+1, B]",
         "e_t = embedding.weight[tokens[t-1, b], :]   (row lookup, length E)",
         "LSTM (torch.nn.LSTM, single layer, names prefixed 'lstm.') over e_1..e_T with h_0 = h0[0], c_0 = c0[0]:"]
        + lstm_blocks("lstm.", x="e_t") +
        ["logits_t = fc.weight h_t + fc.bias   (length V)",
         "loss = (1/(T*B)) sum_{t,b} ( log(sum_v exp(logits_t[b,v])) - logits_t[b, tokens[t,b]] )",
         "outputs.h[t-1] = h_t; outputs.logits[t-1] = logits_t"],
        {"vocab_size": V, "embedding_dim": E, "hidden_size": H, "batch": B, "steps": Tn},
        {n: T(p) for n, p in module_params(model)},
        {"tokens": T(tokens), "h0": T(h0), "c0": T(c0)},
        {},
        "mean over all t,b of cross-entropy(logits[t,b,:], tokens[t+1,b]) (0-based t)",
        {"outputs": {"h": T(h), "logits": T(logits)}, "loss": loss.item(), "grads": {k: T(v) for k, v in g.items()}},
    )


def gen_tbptt(name, seed, I, H, B, K):
    torch.manual_seed(seed)
    lstm = nn.LSTM(I, H, num_layers=1, dtype=DT)
    x = rnd(2 * K, B, I)
    h0 = rnd(1, B, H, std=0.5)
    c0 = rnd(1, B, H, std=0.5)
    w_h = const(K, B, H)
    w_c = const(1, B, H)
    h1, (hK, cK) = lstm(x[:K], (h0, c0))
    hbar = hK.detach().requires_grad_(True)
    cbar = cK.detach().requires_grad_(True)
    h2, (h_n, c_n) = lstm(x[K:], (hbar, cbar))
    loss = (w_h * h2).sum() + (w_c * c_n).sum()
    named = module_params(lstm) + [("x", x), ("h0", h0), ("c0", c0), ("__hbar", hbar), ("__cbar", cbar)]
    g = grads_of(loss, named, allow_unused=True)
    bh, bc = g.pop("__hbar"), g.pop("__cbar")
    assert torch.all(g["h0"] == 0) and torch.all(g["c0"] == 0) and torch.all(g["x"][:K] == 0)
    return doc(
        "truncated_bptt", name,
        "Truncated BPTT: LSTM over 2K steps split into two chunks of K; the state after chunk 1 is detached; gradients "
        f"of the chunk-2 loss only (variant: K={K}, B={B}, I={I}, H={H}).",
        f"torch {TORCH_VER} nn.LSTM + Tensor.detach (float64, CPU)",
        [PREAMBLE,
         "one torch.nn.LSTM (same weights for both chunks); T = 2K with K = config.chunk_len",
         "h_0 = h0[0], c_0 = c0[0]"] + lstm_blocks("") + [
            "chunk 1: steps t = 1..K from (h_0, c_0), giving h_1..h_K and the boundary state (h_K, c_K)",
            "DETACH: hbar = stop_gradient(h_K), cbar = stop_gradient(c_K) (treated as constants)",
            "chunk 2: steps t = K+1..2K starting from (hbar, cbar), giving h_{K+1}..h_{2K}, c_{2K}",
            "loss = sum_{t=K+1..2K} sum_{b,j} w_h[t-K-1,b,j] * h_t[b,j] + sum_{b,j} w_c[0,b,j] * c_{2K}[b,j]",
            "expected.grads = gradients of this chunk-2 loss only; because of the detach the grads of h0, c0 and of "
            "x[0:K] are exactly zero and the parameter grads only contain chunk-2 contributions",
            "outputs: h_chunk1[t-1] = h_t (t=1..K); h_boundary[0] = h_K; c_boundary[0] = c_K; h_chunk2[t-K-1] = h_t "
            "(t=K+1..2K); h_n[0] = h_{2K}; c_n[0] = c_{2K}",
            "expected.boundary_grads: d loss / d hbar and d loss / d cbar (what would be handed back to chunk 1 if it "
            "were NOT truncated), shape [1, B, H]"],
        {"input_size": I, "hidden_size": H, "batch": B, "chunk_len": K, "steps": 2 * K},
        {n: T(p) for n, p in module_params(lstm)},
        {"x": T(x), "h0": T(h0), "c0": T(c0)},
        {"w_h": T(w_h), "w_c": T(w_c)},
        "sum over chunk-2 steps of w_h*h + sum of w_c*c_n (chunk 2 only)",
        {"outputs": {"h_chunk1": T(h1), "h_boundary": T(hK), "c_boundary": T(cK), "h_chunk2": T(h2),
                     "h_n": T(h_n), "c_n": T(c_n)},
         "loss": loss.item(),
         "grads": {k: T(v) for k, v in g.items()},
         "boundary_grads": {"h_boundary": T(bh), "c_boundary": T(bc)}},
    )


def gen_second_order_rnn(name, seed, I, H, B, Tn):
    torch.manual_seed(seed)
    rnn = nn.RNN(I, H, num_layers=1, nonlinearity="tanh", dtype=DT)
    x = rnd(Tn, B, I)
    h0 = rnd(1, B, H, std=0.5)
    w_h = const(Tn, B, H)
    v_W = const(H, H)
    v_x = const(Tn, B, I)
    h, h_n = rnn(x, h0)
    L = (w_h * h).sum()
    named = module_params(rnn) + [("x", x), ("h0", h0)]
    gs = torch.autograd.grad(L, [t for _, t in named], create_graph=True)
    g = {n: gg for (n, _), gg in zip(named, gs)}
    W = rnn.weight_hh_l0
    s_W = (g["weight_hh_l0"] * v_W).sum()
    s_x = (g["x"] * v_x).sum()
    hvp_W, = torch.autograd.grad(s_W, [W], retain_graph=True)
    hvp_x, = torch.autograd.grad(s_x, [x], retain_graph=True)
    j_W, j_x = torch.autograd.grad(s_W + s_x, [W, x])
    return doc(
        "second_order", name,
        f"Second order: gradient and Hessian-vector products of an Elman tanh RNN loss (double backward) (variant: T={Tn}, B={B}, I={I}, H={H}).",
        f"torch {TORCH_VER} nn.RNN(nonlinearity='tanh') + torch.autograd.grad(create_graph=True) (float64, CPU)",
        [PREAMBLE, "h_0 = h0[0]",
         "h_t = tanh(weight_ih_l0 x_t + bias_ih_l0 + weight_hh_l0 h_{t-1} + bias_hh_l0),  t = 1..T",
         "outputs.h[t-1] = h_t;  outputs.h_n[0] = h_T",
         "L = sum_{t,b,j} w_h[t-1,b,j] * h_t[b,j]",
         "expected.grads = first-order gradients dL/dP for every parameter and every float input (as in every case)",
         "g_W = dL/d weight_hh_l0, g_x = dL/dx (both functions of all params and inputs)",
         "grad_dot_v.weight_hh_l0 = s_W = sum(g_W * v_weight_hh_l0);  grad_dot_v.x = s_x = sum(g_x * v_x)",
         "hvp.weight_hh_l0 = d s_W / d weight_hh_l0 = H_WW v_weight_hh_l0     (H_WW = d^2 L / d weight_hh_l0^2)",
         "hvp.x = d s_x / d x = H_xx v_x                                       (H_xx = d^2 L / dx^2)",
         "hvp_joint.weight_hh_l0 = d (s_W + s_x) / d weight_hh_l0 = H_WW v_weight_hh_l0 + H_Wx v_x",
         "hvp_joint.x = d (s_W + s_x) / d x = H_xW v_weight_hh_l0 + H_xx v_x   (the Hessian of L over the pair "
         "(weight_hh_l0, x) times the direction (v_weight_hh_l0, v_x); all other tensors held fixed)",
         "v_weight_hh_l0 and v_x are in loss_inputs; they do not enter L",
         "torch: torch.autograd.grad(L, ..., create_graph=True), then torch.autograd.grad of s_W, s_x, s_W + s_x"],
        {"cell": "rnn_tanh", "input_size": I, "hidden_size": H, "batch": B, "steps": Tn},
        {n: T(p) for n, p in module_params(rnn)},
        {"x": T(x), "h0": T(h0)},
        {"w_h": T(w_h), "v_weight_hh_l0": T(v_W), "v_x": T(v_x)},
        "sum over t,b,j of w_h[t,b,j]*h[t,b,j]",
        {"outputs": {"h": T(h), "h_n": T(h_n)}, "loss": L.item(),
         "grads": {k: T(v) for k, v in g.items()},
         "grad_dot_v": {"weight_hh_l0": s_W.item(), "x": s_x.item()},
         "hvp": {"weight_hh_l0": T(hvp_W), "x": T(hvp_x)},
         "hvp_joint": {"weight_hh_l0": T(j_W), "x": T(j_x)}},
    )


def main():
    jobs = [
        lambda: gen_elman_tanh("elman_tanh_T1_B1", 101, I=3, H=4, B=1, Tn=1),
        lambda: gen_elman_tanh("elman_tanh_T7_B3", 102, I=2, H=5, B=3, Tn=7),
        lambda: gen_lstm("lstm_T1_B2", 103, I=3, H=2, B=2, Tn=1),
        lambda: gen_lstm("lstm_T6_B1", 104, I=2, H=3, B=1, Tn=6),
        lambda: gen_gru_torch("gru_torch_T4_B1", 105, I=3, H=2, B=1, Tn=4),
        lambda: gen_stacked_gru("stacked_gru_3", 106, I=2, H=3, B=2, Tn=3, L=3),
        lambda: gen_bidir_lstm("stacked_lstm_bidirectional", "stacked_lstm_3_bidirectional", 107,
                               I=3, H=2, B=1, Tn=2, L=3),
        lambda: gen_bidir_lstm("bilstm", "bilstm_T1", 108, I=2, H=3, B=2, Tn=1, L=1),
        lambda: gen_char_lm("char_lm_teacher_forcing_V7", 109, V=7, E=4, H=3, B=2, Tn=3),
        lambda: gen_tbptt("truncated_bptt_K1", 110, I=2, H=3, B=2, K=1),
        lambda: gen_tbptt("truncated_bptt_K3", 111, I=3, H=2, B=1, K=3),
        lambda: gen_second_order_rnn("second_order_elman_T2_B1", 112, I=2, H=3, B=1, Tn=2),
    ]
    for j in jobs:
        write_fixture(j())


if __name__ == "__main__":
    sys.exit(main())
