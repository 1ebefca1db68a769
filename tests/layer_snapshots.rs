//! Snapshots of each cell's unrolled graph for T = 2 (the text form) and of its
//! gradients: a change to a cell's structure or numbers shows as a diff.

mod common;

use unrolled::autograd::{snapshot, Graph, ParamStore, Result};
use unrolled::layers::{
    init_params, split_steps, unroll, Cell, DeepTransition, Elman, GatedResidual, Gru, GruVariant, Init, Jordan, Lstm,
    Nonlinearity, Residual, UnrollOptions,
};

fn record(cell: &dyn Cell<f64>) -> Result<String> {
    let mut p = ParamStore::new();
    init_params(&cell.params(), &mut p, &Init::torch(1));
    let mut g = Graph::new();
    let x = g.input_named("x", common::uniform(&[2, 1, cell.input_size()], 2, -1.0, 1.0));
    let xs = split_steps(&mut g, x)?;
    let u = unroll(cell, &mut g, &p, &xs, None, UnrollOptions::default())?;
    let h = g.stack(&u.outputs, 0)?;
    let loss = g.sum_all(h)?;
    let text = g.to_string();
    let grads = snapshot::param_grads(&mut g, loss)?;
    Ok(format!("{text}\n--- gradients of sum(outputs)\n{grads}"))
}

macro_rules! snap {
    ($name:ident, $cell:expr) => {
        #[test]
        fn $name() -> Result<()> {
            insta::assert_snapshot!(stringify!($name), record(&$cell)?);
            Ok(())
        }
    };
}

snap!(elman_tanh, Elman::new("rnn.", 0, false, 1, 2, Nonlinearity::Tanh));
snap!(lstm, Lstm::new("lstm.", 0, false, 1, 2));
snap!(lstm_peephole, Lstm::new("lstm.", 0, false, 1, 2).with_peepholes("lstm.", 0, false));
snap!(gru_torch, Gru::new("gru.", 0, false, 1, 2, GruVariant::Torch));
snap!(gru_original, Gru::new("gru.", 0, false, 1, 2, GruVariant::Original));
snap!(jordan, Jordan::new("", 1, 2, 1));
snap!(residual, Residual::new("", 1, 2));
snap!(gated_residual, GatedResidual::new("", 1, 2));
snap!(deep_transition_skip, DeepTransition::new("", 1, 2, &[2], true));
