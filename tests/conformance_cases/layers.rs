//! The layer cases: torch `nn.RNN`/`nn.LSTM`/`nn.GRU` (stacked, bidirectional) and
//! the custom cells of the lectures, each read from its file's config and tensors.

use ndarray::{ArrayD, IxDyn};
use unrolled::autograd::{NodeId, ParamStore, Reduction};
use unrolled::layers::{
    many_to_one, one_to_many, unroll, DeepTransition, Elman, GatedResidual, GruVariant, Jordan, Lrn, Nonlinearity,
    Pool, Rcl, Recurrent, RecurrentConfig, Residual, RunOptions, State, UnrollOptions,
};

use super::run::{e, fuse, Block, Run, R};
use crate::common::fixture::{Compare, Fixture};

fn cfg(f: &Fixture) -> R<RecurrentConfig> {
    let mut c = RecurrentConfig::new(f.usize("input_size")?, f.usize("hidden_size")?);
    c.num_layers = f.usize("num_layers").unwrap_or(1);
    c.bidirectional = f.bool("bidirectional").unwrap_or(false);
    Ok(c)
}

fn stack_steps(r: &mut Run, nodes: &[NodeId]) -> R<NodeId> {
    r.g.stack(nodes, 0).map_err(e)
}

/// `elman_tanh_many_to_many`, `elman_relu`.
pub fn elman(f: &Fixture) -> R<Compare> {
    let nl = if f.str("nonlinearity")? == "relu" { Nonlinearity::Relu } else { Nonlinearity::Tanh };
    let rnn = Recurrent::rnn("", cfg(f)?, nl);
    let mut r = Run::new(f);
    let (x, h0) = (r.input("x")?, r.input("h0")?);
    let out = rnn.forward(&mut r.g, &r.store, x, Some(&[h0]), RunOptions::default()).map_err(e)?;
    r.output("h", out.output)?;
    r.output("h_n", out.h_n())?;
    let loss = r.weighted(out.output, "w_h")?;
    r.finish(loss)
}

/// `elman_many_to_one_ce`: RNN, then a linear readout of h_T, then cross-entropy.
pub fn elman_many_to_one_ce(f: &Fixture) -> R<Compare> {
    let rnn = Recurrent::rnn("rnn.", cfg(f)?, Nonlinearity::Tanh);
    let mut r = Run::new(f);
    let (x, h0) = (r.input("x")?, r.input("h0")?);
    let out = rnn.forward(&mut r.g, &r.store, x, Some(&[h0]), RunOptions::default()).map_err(e)?;
    let h_t = many_to_one(&mut r.g, &out.detail.outputs, None, Pool::Last).map_err(e)?;
    let w = r.g.param(&r.store, "fc.weight").map_err(e)?;
    let b = r.g.param(&r.store, "fc.bias").map_err(e)?;
    let logits = r.g.linear(h_t, w, Some(b)).map_err(e)?;
    let labels = r.g.index_input(f.loss_input("labels")?.i64());
    let loss = r.g.cross_entropy(logits, labels, Reduction::Mean).map_err(e)?;
    r.output("h", out.output)?;
    r.output("logits", logits)?;
    r.finish(loss)
}

/// `jordan`: the previous output feeds the hidden layer.
pub fn jordan(f: &Fixture) -> R<Compare> {
    let cell = Jordan::new("", f.usize("input_size")?, f.usize("hidden_size")?, f.usize("output_size")?);
    let mut r = Run::new(f);
    let (x, y0) = (r.input("x")?, r.input("y0")?);
    let steps = unrolled::layers::split_steps(&mut r.g, x).map_err(e)?;
    let u = unroll(&cell, &mut r.g, &r.store, &steps, Some(State::one(y0)), UnrollOptions::default()).map_err(e)?;
    let y = stack_steps(&mut r, &u.outputs)?;
    let hs: Vec<NodeId> = u.taps.iter().map(|t| t[0]).collect();
    let h = stack_steps(&mut r, &hs)?;
    r.output("y", y)?;
    r.output("h", h)?;
    let loss = r.weighted(y, "w_y")?;
    r.finish(loss)
}

/// `lstm`, and `clip_grad_norm`'s model: loss on every h_t and on c_T.
fn lstm_run(f: &Fixture) -> R<(Run<'_>, NodeId)> {
    let lstm = Recurrent::lstm("", cfg(f)?);
    let mut r = Run::new(f);
    let (x, h0, c0) = (r.input("x")?, r.input("h0")?, r.input("c0")?);
    let out = lstm.forward(&mut r.g, &r.store, x, Some(&[h0, c0]), RunOptions::default()).map_err(e)?;
    r.output("h", out.output)?;
    r.output("h_n", out.h_n())?;
    r.output("c_n", out.c_n().ok_or("no c_n")?)?;
    let a = r.weighted(out.output, "w_h")?;
    let b = r.weighted(out.c_n().ok_or("no c_n")?, "w_c")?;
    let loss = r.add(a, b)?;
    Ok((r, loss))
}

pub fn lstm(f: &Fixture) -> R<Compare> {
    let (r, loss) = lstm_run(f)?;
    r.finish(loss)
}

/// `clip_grad_norm`: the `lstm` case, then PyTorch's `clip_grad_norm_` over the parameters.
pub fn clip_grad_norm(f: &Fixture) -> R<Compare> {
    let (mut r, loss) = lstm_run(f)?;
    let mut grads = r.g.param_grad_values(loss).map_err(e)?;
    let total = unrolled::layers::clip_grad_norm(&mut grads, f.f64("max_norm")?, f.f64("norm_type")?).map_err(e)?;
    r.cmp.number("total_norm", total, f.expected_number("total_norm")?);
    let coef = (f.f64("max_norm")? / (total + 1e-6)).min(1.0);
    r.cmp.number("clip_coef", coef, f.expected_number("clip_coef")?);
    for name in f.expected_names("clipped_grads") {
        let g = grads.get(&name).ok_or(format!("no gradient for {name}"))?;
        let t = f.expected_tensor("clipped_grads", &name)?;
        r.cmp.tensor(&format!("clipped_grads.{name}"), g, &t);
    }
    r.finish(loss)
}

/// `lstm_peephole`: one named matrix per gate in the file, fused into PyTorch's layout here.
pub fn lstm_peephole(f: &Fixture) -> R<Compare> {
    let (i, h) = (f.usize("input_size")?, f.usize("hidden_size")?);
    let (mut store, mut blocks) = (ParamStore::new(), Vec::new());
    fuse(f, &mut store, &mut blocks, "weight_ih_l0", &["W_i", "W_f", "W_g", "W_o"])?;
    fuse(f, &mut store, &mut blocks, "weight_hh_l0", &["U_i", "U_f", "U_g", "U_o"])?;
    fuse(f, &mut store, &mut blocks, "bias_ih_l0", &["b_i", "b_f", "b_g", "b_o"])?;
    fuse(f, &mut store, &mut blocks, "weight_ch_l0", &["p_i", "p_f", "p_o"])?;
    store.insert("bias_hh_l0", ArrayD::zeros(IxDyn(&[4 * h])));
    let lstm = Recurrent::lstm_peephole("", RecurrentConfig::new(i, h));
    let mut r = Run::with_store(f, store, blocks);
    let (x, h0, c0) = (r.input("x")?, r.input("h0")?, r.input("c0")?);
    let h0 = r.g.unsqueeze(h0, 0).map_err(e)?;
    let c0 = r.g.unsqueeze(c0, 0).map_err(e)?;
    let out = lstm.forward(&mut r.g, &r.store, x, Some(&[h0, c0]), RunOptions::default()).map_err(e)?;
    let cs: Vec<NodeId> = out.detail.layers[0].fwd.states.iter().map(|s| s.c().expect("lstm state")).collect();
    let c = stack_steps(&mut r, &cs)?;
    r.output("h", out.output)?;
    r.output("c", c)?;
    let a = r.weighted(out.output, "w_h")?;
    let c_t = *cs.last().expect("T >= 1");
    let b = r.weighted(c_t, "w_c")?;
    let loss = r.add(a, b)?;
    r.finish(loss)
}

/// `gru_torch`.
pub fn gru_torch(f: &Fixture) -> R<Compare> {
    let gru = Recurrent::gru("", cfg(f)?, GruVariant::Torch);
    let mut r = Run::new(f);
    let (x, h0) = (r.input("x")?, r.input("h0")?);
    let out = gru.forward(&mut r.g, &r.store, x, Some(&[h0]), RunOptions::default()).map_err(e)?;
    r.output("h", out.output)?;
    r.output("h_n", out.h_n())?;
    let loss = r.weighted(out.output, "w_h")?;
    r.finish(loss)
}

/// `gru_classic`: the original GRU, its per-gate matrices fused into PyTorch's layout.
pub fn gru_classic(f: &Fixture) -> R<Compare> {
    let (i, h) = (f.usize("input_size")?, f.usize("hidden_size")?);
    let (mut store, mut blocks) = (ParamStore::new(), Vec::new());
    fuse(f, &mut store, &mut blocks, "weight_ih_l0", &["W_r", "W_z", "W_h"])?;
    fuse(f, &mut store, &mut blocks, "weight_hh_l0", &["U_r", "U_z", "U_h"])?;
    fuse(f, &mut store, &mut blocks, "bias_ih_l0", &["b_r", "b_z", "b_h"])?;
    store.insert("bias_hh_l0", ArrayD::zeros(IxDyn(&[3 * h])));
    let gru = Recurrent::gru("", RecurrentConfig::new(i, h), GruVariant::Original);
    let mut r = Run::with_store(f, store, blocks);
    let (x, h0) = (r.input("x")?, r.input("h0")?);
    let h0 = r.g.unsqueeze(h0, 0).map_err(e)?;
    let out = gru.forward(&mut r.g, &r.store, x, Some(&[h0]), RunOptions::default()).map_err(e)?;
    r.output("h", out.output)?;
    let loss = r.weighted(out.output, "w_h")?;
    r.finish(loss)
}

/// `bilstm`, `stacked_lstm_bidirectional`.
pub fn lstm_stack(f: &Fixture) -> R<Compare> {
    let lstm = Recurrent::lstm("", cfg(f)?);
    let mut r = Run::new(f);
    let (x, h0, c0) = (r.input("x")?, r.input("h0")?, r.input("c0")?);
    let out = lstm.forward(&mut r.g, &r.store, x, Some(&[h0, c0]), RunOptions::default()).map_err(e)?;
    let c_n = out.c_n().ok_or("no c_n")?;
    r.output("h", out.output)?;
    r.output("h_n", out.h_n())?;
    r.output("c_n", c_n)?;
    let a = r.weighted(out.output, "w_h")?;
    let b = r.weighted(c_n, "w_c")?;
    let loss = r.add(a, b)?;
    r.finish(loss)
}

/// `stacked_gru`.
pub fn stacked_gru(f: &Fixture) -> R<Compare> {
    let gru = Recurrent::gru("", cfg(f)?, GruVariant::Torch);
    let mut r = Run::new(f);
    let (x, h0) = (r.input("x")?, r.input("h0")?);
    let out = gru.forward(&mut r.g, &r.store, x, Some(&[h0]), RunOptions::default()).map_err(e)?;
    r.output("h", out.output)?;
    r.output("h_n", out.h_n())?;
    let a = r.weighted(out.output, "w_h")?;
    let b = r.weighted(out.h_n(), "w_hn")?;
    let loss = r.add(a, b)?;
    r.finish(loss)
}

/// `rcl`, `rcl_lrn`.
pub fn rcl(f: &Fixture) -> R<Compare> {
    let mut cell = Rcl::new(
        "",
        f.usize("in_channels")?,
        f.usize("out_channels")?,
        f.usize("kernel_size")?,
        f.usize("iterations")?,
    );
    if f.case == "rcl_lrn" {
        cell = cell.with_lrn(Lrn {
            size: f.usize("lrn_size")?,
            alpha: f.f64("lrn_alpha")?,
            beta: f.f64("lrn_beta")?,
            k: f.f64("lrn_k")?,
        });
    }
    let mut r = Run::new(f);
    let u = r.input("u")?;
    let out = cell.forward(&mut r.g, &r.store, u).map_err(e)?;
    let all = stack_steps(&mut r, &out.states)?;
    r.output("x_K", out.last())?;
    r.output("x_all", all)?;
    let loss = r.weighted(out.last(), "w_x")?;
    r.finish(loss)
}

/// `char_lm_teacher_forcing`: embedding, LSTM, linear, cross-entropy on the next token.
pub fn char_lm_teacher_forcing(f: &Fixture) -> R<Compare> {
    let tokens = f.input("tokens")?.i64();
    let t = tokens.shape()[0] - 1;
    let inputs = tokens.slice_axis(ndarray::Axis(0), ndarray::Slice::from(0..t)).to_owned();
    let targets = tokens.slice_axis(ndarray::Axis(0), ndarray::Slice::from(1..t + 1)).to_owned();
    let lstm = Recurrent::lstm("lstm.", RecurrentConfig::new(f.usize("embedding_dim")?, f.usize("hidden_size")?));
    let mut r = Run::new(f);
    let (h0, c0) = (r.input("h0")?, r.input("c0")?);
    let ids = r.g.index_input(inputs);
    let tgt = r.g.index_input(targets);
    let emb = r.g.param(&r.store, "embedding.weight").map_err(e)?;
    let x = r.g.embedding(emb, ids).map_err(e)?;
    let out = lstm.forward(&mut r.g, &r.store, x, Some(&[h0, c0]), RunOptions::default()).map_err(e)?;
    let w = r.g.param(&r.store, "fc.weight").map_err(e)?;
    let b = r.g.param(&r.store, "fc.bias").map_err(e)?;
    let logits = r.g.linear(out.output, w, Some(b)).map_err(e)?;
    let loss = r.g.cross_entropy(logits, tgt, Reduction::Mean).map_err(e)?;
    r.output("h", out.output)?;
    r.output("logits", logits)?;
    r.finish(loss)
}

/// `truncated_bptt`: two chunks of one LSTM, the state detached between them.
pub fn truncated_bptt(f: &Fixture) -> R<Compare> {
    let k = f.usize("chunk_len")?;
    let lstm = Recurrent::lstm("", RecurrentConfig::new(f.usize("input_size")?, f.usize("hidden_size")?));
    let mut r = Run::new(f);
    let (x, h0, c0) = (r.input("x")?, r.input("h0")?, r.input("c0")?);
    let x1 = r.g.narrow(x, 0, 0, k).map_err(e)?;
    let x2 = r.g.narrow(x, 0, k, k).map_err(e)?;
    let o1 = lstm.forward(&mut r.g, &r.store, x1, Some(&[h0, c0]), RunOptions::default()).map_err(e)?;
    let (hb, cb) = (o1.h_n(), o1.c_n().ok_or("no c_n")?);
    let hbar = r.g.detach(hb).map_err(e)?;
    let cbar = r.g.detach(cb).map_err(e)?;
    let o2 = lstm.forward(&mut r.g, &r.store, x2, Some(&[hbar, cbar]), RunOptions::default()).map_err(e)?;
    let c_n = o2.c_n().ok_or("no c_n")?;
    r.output("h_chunk1", o1.output)?;
    r.output("h_boundary", hb)?;
    r.output("c_boundary", cb)?;
    r.output("h_chunk2", o2.output)?;
    r.output("h_n", o2.h_n())?;
    r.output("c_n", c_n)?;
    let a = r.weighted(o2.output, "w_h")?;
    let b = r.weighted(c_n, "w_c")?;
    let loss = r.add(a, b)?;
    let bg = r.g.grad(loss, &[hbar, cbar]).map_err(e)?;
    for (name, id) in [("h_boundary", bg[0]), ("c_boundary", bg[1])] {
        let v = r.g.value(id).map_err(e)?.to_owned();
        let t = f.expected_tensor("boundary_grads", name)?;
        r.cmp.tensor(&format!("boundary_grads.{name}"), &v, &t);
    }
    r.finish(loss)
}

/// `residual_rnn`, `gated_residual`.
pub fn residual(f: &Fixture) -> R<Compare> {
    let (i, h) = (f.usize("input_size")?, f.usize("hidden_size")?);
    let mut r = Run::new(f);
    let (x, s0) = (r.input("x")?, r.input("s0")?);
    let steps = unrolled::layers::split_steps(&mut r.g, x).map_err(e)?;
    let init = Some(State::one(s0));
    let u = if f.case == "gated_residual" {
        unroll(&GatedResidual::new("", i, h), &mut r.g, &r.store, &steps, init, UnrollOptions::default())
    } else {
        unroll(&Residual::new("", i, h), &mut r.g, &r.store, &steps, init, UnrollOptions::default())
    }
    .map_err(e)?;
    let s = stack_steps(&mut r, &u.outputs)?;
    r.output("s", s)?;
    let loss = r.weighted(s, "w_s")?;
    r.finish(loss)
}

/// `deep_transition`, `deep_transition_skip`.
pub fn deep_transition(f: &Fixture) -> R<Compare> {
    let skip = f.case == "deep_transition_skip";
    let cell =
        DeepTransition::new("", f.usize("input_size")?, f.usize("hidden_size")?, &[f.usize("mlp_hidden")?], skip);
    let mut r = Run::new(f);
    let (x, h0) = (r.input("x")?, r.input("h0")?);
    let steps = unrolled::layers::split_steps(&mut r.g, x).map_err(e)?;
    let u = unroll(&cell, &mut r.g, &r.store, &steps, Some(State::one(h0)), UnrollOptions::default()).map_err(e)?;
    let h = stack_steps(&mut r, &u.outputs)?;
    let a_steps: Vec<NodeId> = u.taps.iter().map(|t| t[0]).collect();
    let a = stack_steps(&mut r, &a_steps)?;
    r.output("h", h)?;
    r.output("a", a)?;
    let loss = r.weighted(h, "w_h")?;
    r.finish(loss)
}

/// `one_to_many_generation`: each output is the next input, differentiated through.
pub fn one_to_many_generation(f: &Fixture) -> R<Compare> {
    let (i, h, steps) = (f.usize("input_size")?, f.usize("hidden_size")?, f.usize("steps")?);
    let mut store = ParamStore::new();
    for (from, to) in
        [("W_xh", "weight_ih_l0"), ("W_hh", "weight_hh_l0"), ("b_h", "bias_ih_l0"), ("W_hy", "W_hy"), ("b_y", "b_y")]
    {
        store.insert(to, f.param(from)?.f64());
    }
    store.insert("bias_hh_l0", ArrayD::zeros(IxDyn(&[h])));
    let blocks = [("W_xh", "weight_ih_l0", h), ("W_hh", "weight_hh_l0", h), ("b_h", "bias_ih_l0", h)]
        .into_iter()
        .map(|(a, b, n)| Block { fixture: a.into(), store: b.into(), k: 0, n })
        .collect();
    let cell = Elman::new("", 0, false, i, h, Nonlinearity::Tanh);
    let mut r = Run::with_store(f, store, blocks);
    let (x1, h0) = (r.input("x1")?, r.input("h0")?);
    let w = r.g.param(&r.store, "W_hy").map_err(e)?;
    let b = r.g.param(&r.store, "b_y").map_err(e)?;
    let (ys, run) =
        one_to_many(&cell, &mut r.g, &r.store, x1, Some(State::one(h0)), steps, |g, h| g.linear(h, w, Some(b)))
            .map_err(e)?;
    let y = stack_steps(&mut r, &ys)?;
    let hs = stack_steps(&mut r, &run.outputs)?;
    r.output("y", y)?;
    r.output("h", hs)?;
    let loss = r.weighted(y, "w_y")?;
    r.finish(loss)
}
