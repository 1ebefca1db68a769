#!/usr/bin/env python3
"""W1-W4 of the benchmark (README, "Performance") in PyTorch and in JAX, timed as
`cargo run --release --example bench` times them: 3 warm-up steps, then at least 10
timed steps, or for a short step as many as fill two seconds (at most 2,000); the
median, min and max milliseconds per step. Prints one JSON line.

PyTorch runs its fused modules (nn.LSTM, nn.RNN, nn.GRU; W4 with nn.Embedding,
nn.Linear, cross_entropy and torch.optim.Adam); JAX runs jit(value_and_grad) of a
lax.scan over the cell (PyTorch's gate orders and GRU formulation). f32, weights and
inputs normal with std 0.1, the loss the mean of (h_t - y_t)^2 over (t, b, j).

Usage: python3 tools/peers/workloads.py torch|jax W1|W2|W3|W4 S|M|L|- THREADS
(for one thread, run it pinned to one core: taskset -c 0 ...). Needs torch and
numpy for torch, jax and numpy for jax; not needed by the library or its tests.
"""
import json
import math
import sys
import time

SIZES = {"S": (16, 1, 32), "M": (50, 32, 128), "L": (100, 64, 512)}
FILL_S = 2.0
MAX_STEPS = 2000


def timed(step, warmup=3, min_steps=10):
    for _ in range(warmup):
        last = step()
    ms = []
    t0 = time.perf_counter()
    while len(ms) < min_steps or (time.perf_counter() - t0 < FILL_S and len(ms) < MAX_STEPS):
        t = time.perf_counter()
        last = step()
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    return ms[len(ms) // 2], ms[0], ms[-1], len(ms), last


def torch_step(workload, size, threads):
    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)

    def normal(*shape):
        return torch.randn(*shape, generator=gen) * 0.1

    if workload == "W4":
        t, b, h, v, e = 100, 32, 256, 65, 64
        emb, lstm, lin = torch.nn.Embedding(v, e), torch.nn.LSTM(e, h), torch.nn.Linear(h, v)
        params = [*emb.parameters(), *lstm.parameters(), *lin.parameters()]
        with torch.no_grad():
            for p in params:
                p.copy_(normal(*p.shape))
        opt = torch.optim.Adam(params, lr=1e-3)
        xs, ys = torch.randint(0, v, (t, b), generator=gen), torch.randint(0, v, (t, b), generator=gen)

        def step():
            opt.zero_grad(set_to_none=True)
            out, _ = lstm(emb(xs))
            loss = torch.nn.functional.cross_entropy(lin(out).reshape(t * b, v), ys.reshape(-1))
            loss.backward()
            opt.step()
            return params

        return step

    t, b, h = SIZES[size]
    cell = {"W1": torch.nn.LSTM, "W2": torch.nn.RNN, "W3": torch.nn.GRU}[workload](h, h)
    params = list(cell.parameters())
    with torch.no_grad():
        for p in params:
            p.copy_(normal(*p.shape))
    x, y = normal(t, b, h), normal(t, b, h)

    def step():
        for p in params:
            p.grad = None
        out, _ = cell(x)
        ((out - y) ** 2).mean().backward()
        return params

    return step


def torch_norm(params):
    return math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))


def jax_step(workload, size, threads):
    import jax
    import jax.numpy as jnp
    import numpy as np

    if workload == "W4":
        raise SystemExit("W4 is measured with torch only")
    t, b, h = SIZES[size]
    rng = np.random.default_rng(0)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape).astype(np.float32) * 0.1)

    gates = {"W1": 4, "W2": 1, "W3": 3}[workload]
    params = {
        "w_ih": normal(gates * h, h),
        "w_hh": normal(gates * h, h),
        "b_ih": normal(gates * h),
        "b_hh": normal(gates * h),
    }
    x, y = normal(t, b, h), normal(t, b, h)

    def cell(p, state, xt):
        gi = xt @ p["w_ih"].T + p["b_ih"]
        if workload == "W1":
            hp, c = state
            i, f, g, o = jnp.split(gi + hp @ p["w_hh"].T + p["b_hh"], 4, axis=1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            hn = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (hn, c), hn
        if workload == "W2":
            hn = jnp.tanh(gi + state @ p["w_hh"].T + p["b_hh"])
            return hn, hn
        gh = state @ p["w_hh"].T + p["b_hh"]
        ir, iz, i_n = jnp.split(gi, 3, axis=1)
        hr, hz, h_n = jnp.split(gh, 3, axis=1)
        r, z = jax.nn.sigmoid(ir + hr), jax.nn.sigmoid(iz + hz)
        n = jnp.tanh(i_n + r * h_n)
        hn = (1 - z) * n + z * state
        return hn, hn

    def loss(p, x, y):
        h0 = jnp.zeros((b, h), jnp.float32)
        _, hs = jax.lax.scan(lambda s, xt: cell(p, s, xt), (h0, h0) if workload == "W1" else h0, x)
        return jnp.mean((hs - y) ** 2)

    grad = jax.jit(jax.value_and_grad(loss))

    def step():
        _, g = grad(params, x, y)
        return jax.block_until_ready(g)

    return step


def jax_norm(grads):
    import numpy as np

    return math.sqrt(sum(float((np.asarray(v, dtype=np.float64) ** 2).sum()) for v in grads.values()))


def main():
    peer, workload, size, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    make, norm = {"torch": (torch_step, torch_norm), "jax": (jax_step, jax_norm)}[peer]
    median, low, high, steps, last = timed(make(workload, size, threads))
    line = {
        "peer": peer,
        "workload": workload,
        "size": size,
        "threads": threads,
        "median_ms": round(median, 4),
        "min_ms": round(low, 4),
        "max_ms": round(high, 4),
        "steps": steps,
        "grad_norm": float("%.6e" % norm(last)),
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
