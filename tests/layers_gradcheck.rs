//! gradcheck and gradgradcheck of every cell and wrapper at T = 1 and T = 3, with
//! respect to the input sequence, the initial state and every parameter.

mod common;

use ndarray::ArrayD;
use unrolled::autograd::{gradcheck, gradgradcheck, CheckOptions, Graph, NodeId, ParamStore, Result};
use unrolled::layers::{
    init_params, many_to_one, one_to_many, split_steps, unroll, Cell, DeepTransition, Elman, GatedResidual, Gru,
    GruVariant, Init, Jordan, Layer, Lrn, Lstm, Merge, Nonlinearity, ParamSpec, Pool, Rcl, Recurrent, RecurrentConfig,
    Residual, RunOptions, Seq2Seq, Stacked, State, UnrollOptions,
};

const I: usize = 2;
const H: usize = 3;
const B: usize = 2;

/// Initial values for every parameter, drawn as PyTorch would.
fn values(specs: &[ParamSpec], seed: u64) -> Vec<ArrayD<f64>> {
    let mut store = ParamStore::new();
    init_params(specs, &mut store, &Init::torch(seed));
    specs.iter().map(|s| store.get(&s.name).unwrap().clone()).collect()
}

/// Flattens and joins nodes, so one check covers all of them.
fn joined(g: &mut Graph<f64>, nodes: &[NodeId]) -> Result<NodeId> {
    let mut flat = Vec::with_capacity(nodes.len());
    for &n in nodes {
        let numel = g.shape(n)?.iter().product();
        flat.push(g.reshape(n, &[numel])?);
    }
    g.concat(&flat, 0)
}

fn both_orders(name: &str, f: impl Fn(&mut Graph<f64>, &[NodeId]) -> Result<NodeId>, inputs: &[ArrayD<f64>]) {
    let opts = CheckOptions::default();
    if let Err(e) = gradcheck(&f, inputs, &opts) {
        panic!("{name}: {e}");
    }
    if let Err(e) = gradgradcheck(&f, inputs, &opts) {
        panic!("{name}: {e}");
    }
}

/// A cell unrolled over `steps` steps: inputs are x, the state parts, then every parameter.
fn check_cell(name: &str, cell: &dyn Cell<f64>, steps: usize, reverse: bool) {
    let specs = cell.params();
    let shapes = cell.state_shapes(B);
    let mut inputs = vec![common::uniform(&[steps, B, cell.input_size()], 1, -1.0, 1.0)];
    for (k, s) in shapes.iter().enumerate() {
        inputs.push(common::uniform(s, 10 + k as u64, -0.5, 0.5));
    }
    inputs.extend(values(&specs, 3));
    let n_state = shapes.len();
    let f = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
        for (spec, &id) in specs.iter().zip(&ids[1 + n_state..]) {
            g.bind_param(&spec.name, id)?;
        }
        let xs = split_steps(g, ids[0])?;
        let init = State(ids[1..1 + n_state].iter().copied().collect());
        let u = unroll(cell, g, &ParamStore::new(), &xs, Some(init), UnrollOptions { reverse, lengths: None })?;
        let mut all = u.outputs.clone();
        all.extend(u.final_state.parts());
        all.extend(u.taps.iter().flatten());
        joined(g, &all)
    };
    both_orders(&format!("{name} T={steps}"), f, &inputs);
}

fn cells() -> Vec<(&'static str, Box<dyn Cell<f64>>)> {
    vec![
        ("elman tanh", Box::new(Elman::new("", 0, false, I, H, Nonlinearity::Tanh))),
        ("elman relu", Box::new(Elman::new("", 0, false, I, H, Nonlinearity::Relu))),
        ("lstm", Box::new(Lstm::new("", 0, false, I, H))),
        ("lstm peephole", Box::new(Lstm::new("", 0, false, I, H).with_peepholes("", 0, false))),
        ("gru torch", Box::new(Gru::new("", 0, false, I, H, GruVariant::Torch))),
        ("gru original", Box::new(Gru::new("", 0, false, I, H, GruVariant::Original))),
        ("jordan", Box::new(Jordan::new("", I, H, 2))),
        ("residual", Box::new(Residual::new("", I, H))),
        ("gated residual", Box::new(GatedResidual::new("", I, H))),
        ("deep transition", Box::new(DeepTransition::new("", I, H, &[4], false))),
        ("deep transition skip", Box::new(DeepTransition::new("", I, H, &[4, 3], true))),
    ]
}

#[test]
fn every_cell_at_one_and_three_steps() {
    for (name, cell) in cells() {
        for steps in [1, 3] {
            check_cell(name, cell.as_ref(), steps, false);
        }
    }
}

#[test]
fn cells_run_in_reverse() {
    check_cell("lstm reversed", &Lstm::new("", 0, false, I, H), 3, true);
}

#[test]
fn rcl_with_and_without_lrn() {
    for lrn in [None, Some(Lrn { size: 3, alpha: 0.5, beta: 0.75, k: 1.0 })] {
        for k in [1, 3] {
            let mut cell = Rcl::new("", 2, 3, 3, k);
            if let Some(l) = lrn {
                cell = cell.with_lrn(l);
            }
            let specs = cell.params();
            let mut inputs = vec![common::uniform(&[1, 2, 4, 3], 4, -1.0, 1.0)];
            inputs.extend(values(&specs, 5));
            let f = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
                for (spec, &id) in specs.iter().zip(&ids[1..]) {
                    g.bind_param(&spec.name, id)?;
                }
                let out = cell.forward(g, &ParamStore::new(), ids[0])?;
                joined(g, &out.states)
            };
            both_orders(&format!("rcl K={k} lrn={}", lrn.is_some()), f, &inputs);
            let ff = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
                for (spec, &id) in specs.iter().zip(&ids[1..]) {
                    g.bind_param(&spec.name, id)?;
                }
                cell.feed_forward(g, &ParamStore::new(), ids[0])
            };
            both_orders(&format!("rcl feed-forward twin lrn={}", lrn.is_some()), ff, &inputs);
        }
    }
}

/// Parameters of a module bound to checker inputs, after `lead` other inputs.
fn bind_all(g: &mut Graph<f64>, specs: &[ParamSpec], ids: &[NodeId]) -> Result<()> {
    for (spec, &id) in specs.iter().zip(ids) {
        g.bind_param(&spec.name, id)?;
    }
    Ok(())
}

#[test]
fn bidirectional_layers_every_merge() {
    for merge in [Merge::Concat, Merge::Sum, Merge::Mean, Merge::Mul] {
        for steps in [1, 3] {
            let layer = Layer::bidirectional(Lstm::new("", 0, false, I, H), Lstm::new("", 0, true, I, H), merge);
            let specs: Vec<ParamSpec> =
                [&layer.fwd, layer.bwd.as_ref().unwrap()].iter().flat_map(|c| Cell::<f64>::params(*c)).collect();
            let mut inputs = vec![common::uniform(&[steps, B, I], 7, -1.0, 1.0)];
            inputs.extend(values(&specs, 8));
            let f = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
                bind_all(g, &specs, &ids[1..])?;
                let xs = split_steps(g, ids[0])?;
                let out = layer.run(g, &ParamStore::new(), &xs, [None, None], Some(&[steps, 1]))?;
                let mut all = out.outputs.clone();
                all.extend(out.fwd.final_state.parts());
                all.extend(out.bwd.as_ref().unwrap().final_state.parts());
                joined(g, &all)
            };
            both_orders(&format!("bidirectional {merge:?} T={steps}"), f, &inputs);
        }
    }
}

#[test]
fn stacked_bidirectional_gru_with_lengths() {
    let gru = Recurrent::gru("gru.", RecurrentConfig::new(I, H).layers(2).bidirectional(true), GruVariant::Torch);
    let specs = gru.params::<f64>();
    for steps in [1, 3] {
        let mut inputs =
            vec![common::uniform(&[steps, B, I], 9, -1.0, 1.0), common::uniform(&[4, B, H], 10, -0.5, 0.5)];
        inputs.extend(values(&specs, 11));
        let lengths = [steps, 1];
        let f = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
            bind_all(g, &specs, &ids[2..])?;
            let out = gru.forward(
                g,
                &ParamStore::new(),
                ids[0],
                Some(&[ids[1]]),
                RunOptions { lengths: Some(&lengths), ..Default::default() },
            )?;
            joined(g, &[out.output, out.h_n()])
        };
        both_orders(&format!("stacked bidirectional gru T={steps}"), f, &inputs);
    }
}

#[test]
fn stacked_generic_wrapper_and_pools() {
    let stack = Stacked {
        layers: vec![
            Layer::forward_only(Elman::new("", 0, false, I, H, Nonlinearity::Tanh)),
            Layer::forward_only(Elman::new("", 1, false, H, H, Nonlinearity::Tanh)),
        ],
        dropout: 0.0,
    };
    let specs: Vec<ParamSpec> = stack.layers.iter().flat_map(|l| Cell::<f64>::params(&l.fwd)).collect();
    for pool in [Pool::Last, Pool::Mean, Pool::Max] {
        let mut inputs = vec![common::uniform(&[3, B, I], 12, -1.0, 1.0)];
        inputs.extend(values(&specs, 13));
        let f = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
            bind_all(g, &specs, &ids[1..])?;
            let xs = split_steps(g, ids[0])?;
            let out = stack.run(
                g,
                &ParamStore::new(),
                &xs,
                None,
                RunOptions { lengths: Some(&[3, 2]), ..Default::default() },
            )?;
            many_to_one(g, &out.outputs, Some(&[3, 2]), pool)
        };
        both_orders(&format!("stacked + many_to_one {pool:?}"), f, &inputs);
    }
}

#[test]
fn one_to_many_and_seq2seq() {
    let cell = Elman::new("", 0, false, I, H, Nonlinearity::Tanh);
    let mut specs = Cell::<f64>::params(&cell);
    specs.push(ParamSpec::new("W_hy", &[I, H], unrolled::layers::Role::InputWeight, 1, H));
    for steps in [1, 3] {
        let mut inputs = vec![common::uniform(&[B, I], 14, -1.0, 1.0)];
        inputs.extend(values(&specs, 15));
        let f = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
            bind_all(g, &specs, &ids[1..])?;
            let w = g.param(&ParamStore::new(), "W_hy")?;
            let (ys, _) = one_to_many(&cell, g, &ParamStore::new(), ids[0], None, steps, |g, h| g.linear(h, w, None))?;
            joined(g, &ys)
        };
        both_orders(&format!("one_to_many T={steps}"), f, &inputs);
    }
    let s2s = Seq2Seq {
        encoder: Gru::new("enc.", 0, false, I, H, GruVariant::Torch),
        decoder: Gru::new("dec.", 0, false, I, H, GruVariant::Torch),
    };
    let specs: Vec<ParamSpec> =
        Cell::<f64>::params(&s2s.encoder).into_iter().chain(Cell::<f64>::params(&s2s.decoder)).collect();
    let mut inputs = vec![common::uniform(&[3, B, I], 16, -1.0, 1.0), common::uniform(&[2, B, I], 17, -1.0, 1.0)];
    inputs.extend(values(&specs, 18));
    let f = |g: &mut Graph<f64>, ids: &[NodeId]| -> Result<NodeId> {
        bind_all(g, &specs, &ids[2..])?;
        let src = split_steps(g, ids[0])?;
        let tgt = split_steps(g, ids[1])?;
        let out = s2s.teacher_forced(g, &ParamStore::new(), &src, Some(&[3, 2]), &tgt)?;
        joined(g, &out.decoder.outputs)
    };
    both_orders("seq2seq", f, &inputs);
}
