//! Bad input gets a typed error that names the op, the scope and the shapes; nothing panics.

use ndarray::{arr1, arr2, ArrayD, IxDyn};
use unrolled::autograd::{Error, Graph, ParamStore, Reduction};

fn m(rows: usize, cols: usize) -> ArrayD<f64> {
    ArrayD::zeros(IxDyn(&[rows, cols]))
}

#[test]
fn shape_mismatch_names_op_scope_and_shapes() {
    let mut g = Graph::<f64>::new();
    let a = g.input(m(2, 3));
    let b = g.input(m(4, 5));
    let mut s = g.scope("lstm");
    let mut s = s.layer(0);
    let mut s = s.step(3);
    let mut s = s.scope("gates");
    let e = s.matmul(a, b).unwrap_err();
    assert_eq!(e.to_string(), "shape mismatch in matmul at lstm/l0/t3/gates: lhs [2, 3], rhs [4, 5]");
    assert!(matches!(e, Error::ShapeMismatch { op: "matmul", .. }));
}

#[test]
fn broadcast_mismatch_at_root() {
    let mut g = Graph::<f64>::new();
    let a = g.input(m(2, 3));
    let b = g.input(m(2, 4));
    assert_eq!(g.add(a, b).unwrap_err().to_string(), "shape mismatch in add at <root>: lhs [2, 3], rhs [2, 4]");
}

#[test]
fn wrong_rank_is_invalid_input() {
    let mut g = Graph::<f64>::new();
    let a = g.input(arr1(&[1.0, 2.0]).into_dyn());
    let b = g.input(m(2, 2));
    let e = g.matmul(a, b).unwrap_err().to_string();
    assert_eq!(e, "invalid input to matmul at <root>: ranks 1 and 2 are not supported (2-D @ 2-D, 3-D @ 3-D, 3-D @ 2-D); input shapes [[2], [2, 2]]");
}

#[test]
fn out_of_range_token_ids() {
    let mut g = Graph::<f64>::new();
    let w = g.input(m(5, 3));
    let ids = g.index_input(ArrayD::from_shape_vec(IxDyn(&[2]), vec![1, 7]).unwrap());
    let mut s = g.scope("embedding");
    let e = s.embedding(w, ids).unwrap_err();
    assert_eq!(
        e.to_string(),
        "index out of range in index_select at embedding: index 7 is not in 0..5; input shapes [[5, 3], [2]]"
    );
    let neg = s.index_input(ArrayD::from_shape_vec(IxDyn(&[1]), vec![-1]).unwrap());
    assert!(matches!(s.embedding(w, neg).unwrap_err(), Error::IndexOutOfRange { index: -1, bound: 5, .. }));
}

#[test]
fn cross_entropy_targets() {
    let mut g = Graph::<f64>::new();
    let z = g.input(m(2, 3));
    let t = g.index_input(ArrayD::from_shape_vec(IxDyn(&[2]), vec![0, 3]).unwrap());
    assert!(matches!(
        g.cross_entropy(z, t, Reduction::Mean).unwrap_err(),
        Error::IndexOutOfRange { index: 3, bound: 3, .. }
    ));
    let t3 = g.index_input(ArrayD::from_shape_vec(IxDyn(&[3]), vec![0, 1, 2]).unwrap());
    let e = g.cross_entropy(z, t3, Reduction::Mean).unwrap_err().to_string();
    assert_eq!(e, "shape mismatch in cross_entropy at <root>: lhs [2, 3], rhs [3]");
}

#[test]
fn float_where_indices_are_needed() {
    let mut g = Graph::<f64>::new();
    let w = g.input(m(5, 3));
    let ids = g.input(arr1(&[1.0]).into_dyn());
    assert_eq!(
        g.embedding(w, ids).unwrap_err().to_string(),
        "wrong dtype in index_select at <root>: input 1 is float64, expected int64"
    );
}

#[test]
fn empty_tensors() {
    let mut g = Graph::<f64>::new();
    let e = g.input(m(0, 3));
    let s = g.sum_all(e).unwrap();
    assert_eq!(g.scalar_value(s).unwrap(), 0.0);
    let mean = g.mean_all(e).unwrap();
    assert!(g.scalar_value(mean).unwrap().is_nan(), "mean of nothing is NaN, as in PyTorch");
    assert!(matches!(g.max(e, &[0], false).unwrap_err(), Error::InvalidInput { op: "max", .. }));
    let w = g.input(m(3, 4));
    let p = g.matmul(e, w).unwrap();
    assert_eq!(g.shape(p).unwrap(), &[0, 4]);
    let z = g.input(m(0, 0));
    let z = g.softmax(z, -1).unwrap();
    assert_eq!(g.shape(z).unwrap(), &[0, 0]);
}

#[test]
fn non_scalar_loss_needs_a_seed() {
    let mut g = Graph::<f64>::new();
    let x = g.input(m(2, 2));
    let y = {
        let mut s = g.scope("head");
        s.tanh(x).unwrap()
    };
    let e = g.grad(y, &[x]).unwrap_err();
    assert_eq!(e.to_string(), "grad at head needs a scalar output or an explicit seed; node %1 has shape [2, 2]");
    let seed = g.ones(&[2, 2]);
    assert!(g.grad_with_seed(y, seed, &[x]).is_ok());
    let bad_seed = g.ones(&[2]);
    assert!(matches!(g.grad_with_seed(y, bad_seed, &[x]).unwrap_err(), Error::ShapeMismatch { op: "grad", .. }));
}

#[test]
fn node_from_another_graph() {
    let mut g1 = Graph::<f64>::new();
    let mut g2 = Graph::<f64>::new();
    let a = g1.input(m(1, 1));
    let _ = g2.input(m(1, 1));
    let e = g2.tanh(a).unwrap_err();
    assert_eq!(e.to_string(), "node %0 given to tanh at <root> does not belong to this graph");
    assert!(g2.value(a).is_err());
    let l = g2.ones(&[]);
    assert!(g2.grad(l, &[a]).is_err());
}

#[test]
fn axes_and_ranges() {
    let mut g = Graph::<f64>::new();
    let x = g.input(m(2, 3));
    assert!(matches!(g.softmax(x, 2).unwrap_err(), Error::InvalidInput { op: "softmax", .. }));
    assert!(matches!(g.sum(x, &[-3], false).unwrap_err(), Error::InvalidInput { op: "sum", .. }));
    assert!(matches!(g.narrow(x, 1, 2, 2).unwrap_err(), Error::InvalidInput { op: "narrow", .. }));
    assert!(matches!(g.select(x, 1, 9).unwrap_err(), Error::InvalidInput { op: "select", .. }));
    assert!(matches!(g.reshape(x, &[4]).unwrap_err(), Error::InvalidInput { op: "reshape", .. }));
    assert!(matches!(g.permute(x, &[0, 0]).unwrap_err(), Error::InvalidInput { op: "permute", .. }));
    assert!(matches!(g.concat(&[], 0).unwrap_err(), Error::InvalidInput { op: "concat", .. }));
    assert!(matches!(g.split(x, 1, &[1, 1]).unwrap_err(), Error::InvalidInput { op: "split", .. }));
    assert!(matches!(g.dropout(x, 1.5, 0).unwrap_err(), Error::InvalidInput { op: "dropout_mask", .. }));
    let y = g.input(m(3, 3));
    assert!(matches!(g.concat(&[x, y], 1).unwrap_err(), Error::ShapeMismatch { op: "concat", .. }));
}

#[test]
fn conv_geometry() {
    let mut g = Graph::<f64>::new();
    let x = g.input(ArrayD::zeros(IxDyn(&[1, 2, 2, 2])));
    let w = g.input(ArrayD::zeros(IxDyn(&[1, 2, 5, 5])));
    let e = g.conv2d(x, w, None, 1, 0).unwrap_err().to_string();
    assert!(
        e.starts_with("invalid input to conv2d at <root>: kernel 5 does not fit input 2 with padding 0 and stride 1"),
        "{e}"
    );
    let w3 = g.input(ArrayD::zeros(IxDyn(&[1, 3, 1, 1])));
    assert!(matches!(g.conv2d(x, w3, None, 1, 0).unwrap_err(), Error::ShapeMismatch { op: "conv2d", .. }));
}

#[test]
fn params_and_replay_inputs() {
    let store = ParamStore::<f64>::new();
    let mut g = Graph::<f64>::new();
    assert_eq!(
        g.param(&store, "rnn.weight_ih_l0").unwrap_err().to_string(),
        "unknown parameter `rnn.weight_ih_l0` in param"
    );
    let x = g.input(m(2, 2));
    let e = g.set_value(x, m(3, 2)).unwrap_err().to_string();
    assert_eq!(e, "shape mismatch in set_value at <root>: lhs [2, 2], rhs [3, 2]");
    let t = g.tanh(x).unwrap();
    assert!(matches!(g.set_value(t, m(2, 2)).unwrap_err(), Error::InvalidInput { op: "set_value", .. }));

    // A replay with an index out of range is an error, not a panic.
    let w = g.input(arr2(&[[1.0], [2.0]]).into_dyn());
    let ids = g.index_input(ArrayD::from_shape_vec(IxDyn(&[1]), vec![1]).unwrap());
    let mut s = g.scope("emb");
    let _ = s.embedding(w, ids).unwrap();
    s.set_index_value(ids, ArrayD::from_shape_vec(IxDyn(&[1]), vec![2]).unwrap()).unwrap();
    let e = s.replay().unwrap_err().to_string();
    assert_eq!(e, "index out of range in index_select at emb: index 2 is not in 0..2; input shapes [[2, 1], [1]]");
}

#[test]
fn hostile_sizes_and_arguments_are_errors_not_panics() {
    let mut g = Graph::<f64>::new();
    let x = g.input(m(2, 3));
    assert!(g.narrow(x, 0, usize::MAX, 2).is_err());
    assert!(g.select(x, 1, usize::MAX).is_err());
    assert!(g.pad(x, 0, usize::MAX, 1).is_err());
    assert!(g.reshape(x, &[usize::MAX, 2]).is_err());
    assert!(g.broadcast_to(x, &[usize::MAX, 2, 3]).is_err());
    assert!(g.split(x, 1, &[usize::MAX, 4]).is_err());
    let img = g.input(ArrayD::zeros(IxDyn(&[1, 2, 3, 3])));
    let w0 = g.input(ArrayD::zeros(IxDyn(&[0, 2, 3, 3])));
    let y = g.conv2d(img, w0, None, 1, 1).unwrap();
    assert_eq!(g.shape(y).unwrap(), &[1, 0, 3, 3]);
    let l = g.sum_all(y).unwrap();
    assert!(g.grad(l, &[img, w0]).is_ok(), "zero output channels differentiate");
    assert!(g.conv2d(img, w0, None, 1, usize::MAX).is_err());
    let w = g.input(ArrayD::zeros(IxDyn(&[4, 2, 3, 3])));
    let bias = g.input(ArrayD::zeros(IxDyn(&[4, 1])));
    assert!(matches!(g.conv2d(img, w, Some(bias), 1, 1).unwrap_err(), Error::ShapeMismatch { op: "conv2d", .. }));
    let mut other = Graph::<f64>::new();
    let foreign = other.input(m(1, 1));
    assert!(matches!(g.local_response_norm(foreign, 0, 1.0, 1.0, 1.0).unwrap_err(), Error::ForeignNode { .. }));
    assert!(g.enter(unrolled::autograd::ScopeId::ROOT).is_ok());
    // A zero extent empties an array but does not lift ndarray's bound on the others.
    let huge = g.input(ArrayD::zeros(IxDyn(&[0, 1 << 62])));
    for joined in [g.stack(&[huge, huge], 1), g.concat(&[huge, huge], 1), g.concat(&[huge; 4], 1)] {
        assert!(matches!(joined.unwrap_err(), Error::InvalidInput { .. }));
    }
    let fits = g.input(ArrayD::zeros(IxDyn(&[0, 1 << 61])));
    let both = g.concat(&[fits, fits], 1).unwrap();
    assert_eq!(g.shape(both).unwrap(), &[0, 1 << 62]);
    let int_seed = g.index_input(ArrayD::zeros(IxDyn(&[])));
    let s = g.sum_all(x).unwrap();
    assert!(matches!(g.grad_with_seed(s, int_seed, &[x]).unwrap_err(), Error::DTypeMismatch { .. }));
}

#[test]
fn pytorch_semantics_at_the_edges() {
    let mut g = Graph::<f64>::new();
    let x = g.input(arr1(&[-2.0, 0.5, 3.0]).into_dyn());
    let c = g.clamp(x, Some(1.0), Some(0.0)).unwrap();
    assert_eq!(g.value(c).unwrap().as_slice().unwrap(), &[0.0, 0.0, 0.0], "min > max gives max everywhere");
    let n = g.input(arr1(&[f64::NAN, 1.0]).into_dyn());
    let mx = g.max_all(n).unwrap();
    assert!(g.scalar_value(mx).unwrap().is_nan(), "max propagates NaN");
    let s = g.sum(x, &[], false).unwrap();
    assert_eq!(g.scalar_value(s).unwrap(), 1.5, "sum over no axes reduces all, as torch.sum(dim=[])");
}
