//! Every op, checked against central differences in f64: first order (gradcheck)
//! and second order (gradgradcheck, which differentiates the recorded backward pass).

mod common;

use ndarray::{arr1, ArrayD, IxDyn};
use unrolled::autograd::{
    gradcheck, gradgradcheck, ActivationKind, CheckOptions, Cmp, Graph, NodeId, Reduction, Result,
};

type Build = fn(&mut Graph<f64>, &[NodeId]) -> Result<NodeId>;

/// Input domains: most ops take any value; a few need positive inputs.
#[derive(Clone, Copy)]
enum Domain {
    Any,
    Positive,
}

struct Case {
    name: &'static str,
    shapes: &'static [&'static [usize]],
    domain: Domain,
    build: Build,
}

fn idx(g: &mut Graph<f64>, shape: &[usize], data: &[i64]) -> NodeId {
    g.index_input(ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).unwrap())
}

const CASES: &[Case] = &[
    Case {
        name: "add (broadcast rows)",
        shapes: &[&[2, 3], &[3]],
        domain: Domain::Any,
        build: |g, x| g.add(x[0], x[1]),
    },
    Case {
        name: "add (broadcast both)",
        shapes: &[&[2, 1], &[1, 3]],
        domain: Domain::Any,
        build: |g, x| g.add(x[0], x[1]),
    },
    Case {
        name: "add_n",
        shapes: &[&[2, 3], &[2, 3], &[2, 3]],
        domain: Domain::Any,
        build: |g, x| {
            let s = g.add_n(&[x[0], x[1], x[2], x[0]])?;
            g.mul(s, x[1])
        },
    },
    Case { name: "sub", shapes: &[&[2, 3], &[2, 3]], domain: Domain::Any, build: |g, x| g.sub(x[0], x[1]) },
    Case { name: "mul (broadcast)", shapes: &[&[2, 3], &[2, 1]], domain: Domain::Any, build: |g, x| g.mul(x[0], x[1]) },
    Case { name: "div", shapes: &[&[2, 3], &[3]], domain: Domain::Positive, build: |g, x| g.div(x[0], x[1]) },
    Case { name: "affine", shapes: &[&[4]], domain: Domain::Any, build: |g, x| g.affine(x[0], -1.5, 0.25) },
    Case { name: "neg", shapes: &[&[4]], domain: Domain::Any, build: |g, x| g.neg(x[0]) },
    Case { name: "rsub_scalar", shapes: &[&[4]], domain: Domain::Any, build: |g, x| g.rsub_scalar(x[0], 2.0) },
    Case { name: "pow 2", shapes: &[&[5]], domain: Domain::Any, build: |g, x| g.pow_scalar(x[0], 2.0) },
    Case { name: "pow 3", shapes: &[&[5]], domain: Domain::Any, build: |g, x| g.pow_scalar(x[0], 3.0) },
    Case { name: "pow -1.5", shapes: &[&[5]], domain: Domain::Positive, build: |g, x| g.pow_scalar(x[0], -1.5) },
    Case { name: "exp", shapes: &[&[2, 3]], domain: Domain::Any, build: |g, x| g.exp(x[0]) },
    Case { name: "log", shapes: &[&[2, 3]], domain: Domain::Positive, build: |g, x| g.log(x[0]) },
    Case { name: "sqrt", shapes: &[&[2, 3]], domain: Domain::Positive, build: |g, x| g.sqrt(x[0]) },
    Case { name: "abs", shapes: &[&[6]], domain: Domain::Any, build: |g, x| g.abs(x[0]) },
    Case {
        name: "abs·x (second derivative through sign)",
        shapes: &[&[6]],
        domain: Domain::Any,
        build: |g, x| {
            let a = g.abs(x[0])?;
            g.mul(a, x[0])
        },
    },
    Case {
        name: "sign (zero gradient)",
        shapes: &[&[6]],
        domain: Domain::Any,
        build: |g, x| {
            let s = g.sign(x[0])?;
            g.mul(s, x[0])
        },
    },
    Case {
        name: "compare mask",
        shapes: &[&[2, 3], &[3]],
        domain: Domain::Any,
        build: |g, x| {
            let m = g.compare(x[0], Cmp::Gt, x[1])?;
            let s = g.square(x[0])?;
            g.mul(m, s)
        },
    },
    Case {
        name: "where",
        shapes: &[&[2, 3], &[2, 3], &[3]],
        domain: Domain::Any,
        build: |g, x| {
            let c = g.compare_scalar(x[0], Cmp::Gt, 0.0)?;
            let a = g.square(x[1])?;
            let b = g.exp(x[2])?;
            g.where_(c, a, b)
        },
    },
    Case { name: "clamp", shapes: &[&[8]], domain: Domain::Any, build: |g, x| g.clamp(x[0], Some(-0.3), Some(0.4)) },
    Case {
        name: "clamp·x",
        shapes: &[&[8]],
        domain: Domain::Any,
        build: |g, x| {
            let c = g.clamp(x[0], Some(-0.3), None)?;
            g.mul(c, x[0])
        },
    },
    Case { name: "tanh", shapes: &[&[2, 3]], domain: Domain::Any, build: |g, x| g.tanh(x[0]) },
    Case { name: "sigmoid", shapes: &[&[2, 3]], domain: Domain::Any, build: |g, x| g.sigmoid(x[0]) },
    Case { name: "relu", shapes: &[&[2, 3]], domain: Domain::Any, build: |g, x| g.relu(x[0]) },
    Case {
        name: "relu·x",
        shapes: &[&[2, 3]],
        domain: Domain::Any,
        build: |g, x| {
            let r = g.relu(x[0])?;
            g.mul(r, x[0])
        },
    },
    Case { name: "softmax last", shapes: &[&[2, 4]], domain: Domain::Any, build: |g, x| g.softmax(x[0], -1) },
    Case { name: "softmax axis 0", shapes: &[&[3, 2]], domain: Domain::Any, build: |g, x| g.softmax(x[0], 0) },
    Case { name: "log_softmax", shapes: &[&[2, 4]], domain: Domain::Any, build: |g, x| g.log_softmax(x[0], 1) },
    Case { name: "dropout", shapes: &[&[3, 4]], domain: Domain::Any, build: |g, x| g.dropout(x[0], 0.4, 7) },
    Case { name: "matmul 2-D", shapes: &[&[2, 3], &[3, 4]], domain: Domain::Any, build: |g, x| g.matmul(x[0], x[1]) },
    Case {
        name: "matmul 3-D",
        shapes: &[&[2, 2, 3], &[2, 3, 2]],
        domain: Domain::Any,
        build: |g, x| g.matmul(x[0], x[1]),
    },
    Case {
        name: "matmul 3-D @ 2-D",
        shapes: &[&[2, 2, 3], &[3, 2]],
        domain: Domain::Any,
        build: |g, x| g.matmul(x[0], x[1]),
    },
    Case {
        name: "matmul aᵀb",
        shapes: &[&[3, 2], &[3, 4]],
        domain: Domain::Any,
        build: |g, x| g.matmul_t(x[0], x[1], true, false),
    },
    Case {
        name: "matmul abᵀ",
        shapes: &[&[2, 3], &[4, 3]],
        domain: Domain::Any,
        build: |g, x| g.matmul_t(x[0], x[1], false, true),
    },
    Case {
        name: "matmul aᵀbᵀ",
        shapes: &[&[3, 2], &[4, 3]],
        domain: Domain::Any,
        build: |g, x| g.matmul_t(x[0], x[1], true, true),
    },
    Case {
        name: "matmul 3-D aᵀb",
        shapes: &[&[2, 3, 2], &[2, 3, 2]],
        domain: Domain::Any,
        build: |g, x| g.matmul_t(x[0], x[1], true, false),
    },
    Case {
        name: "matmul 3-D aᵀbᵀ",
        shapes: &[&[2, 3, 2], &[2, 4, 3]],
        domain: Domain::Any,
        build: |g, x| g.matmul_t(x[0], x[1], true, true),
    },
    Case {
        name: "matmul 3-D @ 2-D bᵀ",
        shapes: &[&[2, 2, 3], &[4, 3]],
        domain: Domain::Any,
        build: |g, x| g.matmul_t(x[0], x[1], false, true),
    },
    Case {
        name: "linear 3-D",
        shapes: &[&[2, 2, 3], &[4, 3], &[4]],
        domain: Domain::Any,
        build: |g, x| g.linear(x[0], x[1], Some(x[2])),
    },
    Case {
        name: "linear",
        shapes: &[&[2, 3], &[4, 3], &[4]],
        domain: Domain::Any,
        build: |g, x| g.linear(x[0], x[1], Some(x[2])),
    },
    Case { name: "reshape", shapes: &[&[2, 3]], domain: Domain::Any, build: |g, x| g.reshape(x[0], &[3, 2]) },
    Case { name: "permute", shapes: &[&[2, 3, 2]], domain: Domain::Any, build: |g, x| g.permute(x[0], &[2, 0, 1]) },
    Case { name: "transpose", shapes: &[&[2, 3]], domain: Domain::Any, build: |g, x| g.transpose(x[0], 0, 1) },
    Case { name: "concat", shapes: &[&[2, 1], &[2, 3]], domain: Domain::Any, build: |g, x| g.concat(&[x[0], x[1]], 1) },
    Case { name: "stack", shapes: &[&[2, 3], &[2, 3]], domain: Domain::Any, build: |g, x| g.stack(&[x[0], x[1]], 1) },
    Case { name: "narrow", shapes: &[&[2, 5]], domain: Domain::Any, build: |g, x| g.narrow(x[0], 1, 1, 3) },
    Case { name: "select", shapes: &[&[3, 2]], domain: Domain::Any, build: |g, x| g.select(x[0], 0, 1) },
    Case {
        name: "select (two indices of axis 1, zeros between)",
        shapes: &[&[2, 4]],
        domain: Domain::Any,
        build: |g, x| {
            let a = g.select(x[0], 1, 1)?;
            let b = g.select(x[0], 1, 3)?;
            g.mul(a, b)
        },
    },
    Case {
        name: "select every index of a vector (one join of scalars)",
        shapes: &[&[3]],
        domain: Domain::Any,
        build: |g, x| {
            let (a, b, c) = (g.select(x[0], 0, 0)?, g.select(x[0], 0, 1)?, g.select(x[0], 0, 2)?);
            let ab = g.mul(a, b)?;
            g.mul(ab, c)
        },
    },
    Case {
        name: "narrow and reshape every index of axis 0 (one join)",
        shapes: &[&[3, 2]],
        domain: Domain::Any,
        build: |g, x| {
            let mut rows = Vec::new();
            for t in 0..3 {
                let n = g.narrow(x[0], 0, t, 1)?;
                rows.push(g.reshape(n, &[2])?);
            }
            let ab = g.mul(rows[0], rows[1])?;
            let tc = g.tanh(rows[2])?;
            g.add(ab, tc)
        },
    },
    Case {
        name: "select every index of axis 0 (one join)",
        shapes: &[&[3, 2]],
        domain: Domain::Any,
        build: |g, x| {
            let (a, b, c) = (g.select(x[0], 0, 0)?, g.select(x[0], 0, 1)?, g.select(x[0], 0, 2)?);
            let ab = g.mul(a, b)?;
            let tc = g.tanh(c)?;
            g.add(ab, tc)
        },
    },
    Case {
        name: "split",
        shapes: &[&[5, 2]],
        domain: Domain::Any,
        build: |g, x| {
            let p = g.split(x[0], 0, &[2, 3])?;
            let a = g.sum(p[0], &[0], false)?;
            let b = g.sum(p[1], &[0], false)?;
            g.mul(a, b)
        },
    },
    Case { name: "pad", shapes: &[&[2, 3]], domain: Domain::Any, build: |g, x| g.pad(x[0], 0, 1, 2) },
    Case {
        name: "broadcast_to",
        shapes: &[&[3, 1]],
        domain: Domain::Any,
        build: |g, x| g.broadcast_to(x[0], &[2, 3, 4]),
    },
    Case {
        name: "unsqueeze/squeeze",
        shapes: &[&[3]],
        domain: Domain::Any,
        build: |g, x| {
            let u = g.unsqueeze(x[0], 0)?;
            let e = g.exp(u)?;
            g.squeeze(e, 0)
        },
    },
    Case {
        name: "sum axes keepdim",
        shapes: &[&[2, 3, 2]],
        domain: Domain::Any,
        build: |g, x| g.sum(x[0], &[0, 2], true),
    },
    Case { name: "sum axis", shapes: &[&[2, 3]], domain: Domain::Any, build: |g, x| g.sum(x[0], &[-1], false) },
    Case {
        name: "sum_all",
        shapes: &[&[2, 3]],
        domain: Domain::Any,
        build: |g, x| {
            let s = g.square(x[0])?;
            g.sum_all(s)
        },
    },
    Case { name: "mean", shapes: &[&[2, 3]], domain: Domain::Any, build: |g, x| g.mean(x[0], &[0], false) },
    Case {
        name: "mean_all",
        shapes: &[&[2, 3]],
        domain: Domain::Any,
        build: |g, x| {
            let e = g.exp(x[0])?;
            g.mean_all(e)
        },
    },
    Case { name: "max axis", shapes: &[&[3, 4]], domain: Domain::Any, build: |g, x| g.max(x[0], &[1], false) },
    Case {
        name: "max_all²",
        shapes: &[&[3, 4]],
        domain: Domain::Any,
        build: |g, x| {
            let m = g.max_all(x[0])?;
            g.square(m)
        },
    },
    Case { name: "sum_to", shapes: &[&[2, 3, 4]], domain: Domain::Any, build: |g, x| g.sum_to(x[0], &[3, 1]) },
    Case {
        name: "embedding (repeated ids)",
        shapes: &[&[5, 3]],
        domain: Domain::Any,
        build: |g, x| {
            let i = idx(g, &[2, 3], &[1, 4, 1, 0, 1, 3]);
            g.embedding(x[0], i)
        },
    },
    Case {
        name: "index_select axis 1",
        shapes: &[&[2, 4]],
        domain: Domain::Any,
        build: |g, x| {
            let i = idx(g, &[3], &[3, 0, 3]);
            let s = g.index_select(x[0], 1, i)?;
            g.square(s)
        },
    },
    Case {
        name: "gather",
        shapes: &[&[3, 4]],
        domain: Domain::Any,
        build: |g, x| {
            let i = idx(g, &[3, 2], &[0, 3, 2, 2, 1, 0]);
            let s = g.gather(x[0], 1, i)?;
            g.exp(s)
        },
    },
    Case {
        name: "cross_entropy mean",
        shapes: &[&[4, 5]],
        domain: Domain::Any,
        build: |g, x| {
            let t = idx(g, &[4], &[0, 4, 2, 2]);
            g.cross_entropy(x[0], t, Reduction::Mean)
        },
    },
    Case {
        name: "cross_entropy none (3-D)",
        shapes: &[&[2, 2, 3]],
        domain: Domain::Any,
        build: |g, x| {
            let t = idx(g, &[2, 2], &[0, 2, 1, 1]);
            g.cross_entropy(x[0], t, Reduction::None)
        },
    },
    Case {
        name: "cross_entropy sum",
        shapes: &[&[3, 4]],
        domain: Domain::Any,
        build: |g, x| {
            let t = idx(g, &[3], &[3, 0, 1]);
            g.cross_entropy(x[0], t, Reduction::Sum)
        },
    },
    Case {
        name: "one_hot",
        shapes: &[&[3, 4]],
        domain: Domain::Any,
        build: |g, x| {
            let t = idx(g, &[3], &[3, 0, 1]);
            let o = g.one_hot(t, 4)?;
            g.mul(o, x[0])
        },
    },
    Case { name: "mse_loss", shapes: &[&[2, 3], &[2, 3]], domain: Domain::Any, build: |g, x| g.mse_loss(x[0], x[1]) },
    Case {
        name: "mse_loss (broadcast)",
        shapes: &[&[3, 7], &[7]],
        domain: Domain::Any,
        build: |g, x| g.mse_loss(x[0], x[1]),
    },
    Case {
        name: "mse_loss (17 elements: the vector pass and its remainder)",
        shapes: &[&[17], &[17]],
        domain: Domain::Any,
        build: |g, x| g.mse_loss(x[0], x[1]),
    },
    Case {
        name: "conv2d stride 1 pad 1 + bias",
        shapes: &[&[2, 2, 4, 4], &[3, 2, 3, 3], &[3]],
        domain: Domain::Any,
        build: |g, x| g.conv2d(x[0], x[1], Some(x[2]), 1, 1),
    },
    Case {
        name: "conv2d stride 2 pad 0",
        shapes: &[&[1, 2, 5, 5], &[2, 2, 3, 3]],
        domain: Domain::Any,
        build: |g, x| g.conv2d(x[0], x[1], None, 2, 0),
    },
    Case {
        name: "conv2d (tanh, so second order is not linear)",
        shapes: &[&[1, 1, 4, 3], &[2, 1, 2, 2]],
        domain: Domain::Any,
        build: |g, x| {
            let y = g.conv2d(x[0], x[1], None, 1, 1)?;
            g.tanh(y)
        },
    },
    Case { name: "max_pool2d", shapes: &[&[1, 2, 4, 2]], domain: Domain::Any, build: |g, x| g.max_pool2d(x[0], 2) },
    Case {
        name: "local_response_norm",
        shapes: &[&[2, 5, 2, 2]],
        domain: Domain::Any,
        build: |g, x| g.local_response_norm(x[0], 3, 0.5, 0.75, 1.0),
    },
    Case {
        name: "local_response_norm size 4",
        shapes: &[&[1, 4, 2, 1]],
        domain: Domain::Any,
        build: |g, x| g.local_response_norm(x[0], 4, 1e-1, 0.6, 2.0),
    },
    Case {
        name: "lstm_cell (h, c and every gate)",
        shapes: &[&[2, 8], &[2, 8], &[2, 2]],
        domain: Domain::Any,
        build: |g, x| g.lstm_cell(x[0], x[1], x[2]),
    },
    Case {
        name: "lstm_cell fed back (c' through a second step)",
        shapes: &[&[1, 12], &[1, 12], &[1, 3]],
        domain: Domain::Any,
        build: |g, x| {
            let a = g.lstm_cell(x[0], x[1], x[2])?;
            let c = g.narrow(a, 1, 3, 3)?;
            let h = g.narrow(a, 1, 0, 3)?;
            let hh = g.concat(&[h, h, c, h], 1)?;
            g.lstm_cell(x[1], hh, c)
        },
    },
    Case {
        name: "lstm_cell read through h' and c' only (state-only gradient)",
        shapes: &[&[2, 8], &[2, 8], &[2, 2]],
        domain: Domain::Any,
        build: |g, x| {
            let a = g.lstm_cell(x[0], x[1], x[2])?;
            let h = g.narrow(a, 1, 0, 2)?;
            let c = g.narrow(a, 1, 2, 2)?;
            g.mul(h, c)
        },
    },
    Case {
        name: "lstm_cell read through h' only (c' gets zeros)",
        shapes: &[&[2, 8], &[2, 8], &[2, 2]],
        domain: Domain::Any,
        build: |g, x| {
            let a = g.lstm_cell(x[0], x[1], x[2])?;
            let h = g.narrow(a, 1, 0, 2)?;
            g.tanh(h)
        },
    },
    Case {
        name: "lstm_cell read through c' only (h' gets zeros)",
        shapes: &[&[1, 12], &[1, 12], &[1, 3]],
        domain: Domain::Any,
        build: |g, x| {
            let a = g.lstm_cell(x[0], x[1], x[2])?;
            let c = g.narrow(a, 1, 3, 3)?;
            g.square(c)
        },
    },
    Case {
        name: "gru_cell read through h' only (state-only gradient)",
        shapes: &[&[2, 6], &[2, 6], &[2, 2]],
        domain: Domain::Any,
        build: |g, x| {
            let a = g.gru_cell(x[0], x[1], x[2])?;
            let h = g.narrow(a, 1, 0, 2)?;
            g.tanh(h)
        },
    },
    Case {
        name: "gru_cell (h and every gate)",
        shapes: &[&[2, 6], &[2, 6], &[2, 2]],
        domain: Domain::Any,
        build: |g, x| g.gru_cell(x[0], x[1], x[2]),
    },
    Case {
        name: "gru_cell fed back",
        shapes: &[&[1, 9], &[1, 9], &[1, 3]],
        domain: Domain::Any,
        build: |g, x| {
            let a = g.gru_cell(x[0], x[1], x[2])?;
            let h = g.narrow(a, 1, 0, 3)?;
            let hp = g.concat(&[h, x[2], h], 1)?;
            g.gru_cell(x[1], hp, h)
        },
    },
    Case {
        name: "activation_grad tanh",
        shapes: &[&[2, 3], &[2, 3]],
        domain: Domain::Any,
        build: |g, x| g.activation_grad(ActivationKind::Tanh, x[0], x[1]),
    },
    Case {
        name: "activation_grad sigmoid",
        shapes: &[&[2, 3], &[2, 3]],
        domain: Domain::Any,
        build: |g, x| g.activation_grad(ActivationKind::Sigmoid, x[0], x[1]),
    },
];

fn inputs(case: &Case, seed: u64) -> Vec<ArrayD<f64>> {
    case.shapes
        .iter()
        .enumerate()
        .map(|(i, s)| match case.domain {
            Domain::Any => common::uniform(s, seed + i as u64, -1.0, 1.0),
            Domain::Positive => common::uniform(s, seed + i as u64, 0.5, 1.5),
        })
        .collect()
}

#[test]
fn every_op_first_order() {
    let opts = CheckOptions::default();
    let mut failed = Vec::new();
    for (k, case) in CASES.iter().enumerate() {
        match gradcheck(case.build, &inputs(case, 100 * k as u64), &opts) {
            Ok(r) => assert!(r.checked > 0, "{}: nothing checked", case.name),
            Err(e) => failed.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_op_second_order() {
    let opts = CheckOptions::default();
    let mut failed = Vec::new();
    for (k, case) in CASES.iter().enumerate() {
        match gradgradcheck(case.build, &inputs(case, 100 * k as u64 + 7), &opts) {
            Ok(r) => assert!(r.checked > 0, "{}: nothing checked", case.name),
            Err(e) => failed.push(format!("{}: {e}", case.name)),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// The checker must fail on a wrong gradient: a deliberately wrong "derivative"
/// (the value detached and re-added, so the backward pass misses a term).
#[test]
fn gradcheck_catches_a_wrong_gradient() {
    let x = arr1(&[0.3, -0.7, 1.1]).into_dyn();
    let wrong = |g: &mut Graph<f64>, x: &[NodeId]| {
        let d = g.detach(x[0])?;
        let p = g.mul(d, x[0])?; // true derivative 2x; reverse mode sees x
        g.sum_all(p)
    };
    let err = gradcheck(wrong, &[x], &CheckOptions::default()).unwrap_err();
    let unrolled::autograd::Error::GradcheckFailed(report) = &err else { panic!("{err}") };
    assert_eq!(report.failures.len(), 3, "{err}");
    let f = &report.failures[0];
    assert_eq!(f.index, vec![0]);
    assert!((f.analytic - 0.3).abs() < 1e-12 && (f.numeric - 0.6).abs() < 1e-6, "{err}");
    assert!(err.to_string().starts_with("gradcheck failed: 3 of 3 elements disagree"), "{err}");
}

/// Detach passes the value and stops the gradient: d(detach(x)·x)/dx = detach(x).
#[test]
fn detach_stops_the_gradient() -> Result<()> {
    let mut g = Graph::<f64>::new();
    let x = g.input(arr1(&[0.5, -2.0]).into_dyn());
    let d = g.detach(x)?;
    let p = g.mul(d, x)?;
    let l = g.sum_all(p)?;
    let dx = g.grad(l, &[x])?[0];
    assert_eq!(g.value(d)?, g.value(x)?);
    assert_eq!(g.value(dx)?.as_slice().unwrap(), &[0.5, -2.0]);
    // Through detach alone, nothing flows: the gradient is zero.
    let l2 = g.sum_all(d)?;
    let dx2 = g.grad(l2, &[x])?[0];
    assert_eq!(g.value(dx2)?.as_slice().unwrap(), &[0.0, 0.0]);
    Ok(())
}
