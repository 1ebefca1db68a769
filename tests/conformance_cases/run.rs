//! The shared shape of a conformance case: parameters and inputs from the file,
//! a model recorded into a graph, outputs, loss and gradients compared.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis, Slice};
use unrolled::autograd::{Graph, NodeId, ParamStore};

use crate::common::fixture::{Compare, Fixture};
use crate::TOL;

pub type R<T> = Result<T, String>;

pub fn e(err: unrolled::autograd::Error) -> String {
    err.to_string()
}

/// A fixture tensor that is a row block of a library tensor: `store_name[k*n .. (k+1)*n]`.
pub struct Block {
    pub fixture: String,
    pub store: String,
    pub k: usize,
    pub n: usize,
}

pub struct Run<'f> {
    pub f: &'f Fixture,
    pub g: Graph<f64>,
    pub store: ParamStore<f64>,
    pub inputs: BTreeMap<String, NodeId>,
    pub cmp: Compare,
    blocks: Vec<Block>,
    compared: Vec<String>,
}

impl<'f> Run<'f> {
    /// Parameters under their fixture names; every input as a graph input.
    pub fn new(f: &'f Fixture) -> Self {
        let mut store = ParamStore::new();
        for (n, t) in &f.params {
            store.insert(n.clone(), t.f64());
        }
        Self::with_store(f, store, Vec::new())
    }

    /// Parameters given (some fixture tensors are blocks of library tensors).
    pub fn with_store(f: &'f Fixture, store: ParamStore<f64>, blocks: Vec<Block>) -> Self {
        let mut g = Graph::new();
        let mut inputs = BTreeMap::new();
        for (n, t) in &f.inputs {
            let id = if t.is_float() { g.input_named(n, t.f64()) } else { g.index_input(t.i64()) };
            inputs.insert(n.clone(), id);
        }
        Run { f, g, store, inputs, cmp: Compare::new(TOL), blocks, compared: Vec::new() }
    }

    pub fn input(&self, name: &str) -> R<NodeId> {
        self.inputs.get(name).copied().ok_or_else(|| format!("inputs.{name} missing"))
    }

    /// A constant from `loss_inputs`.
    pub fn loss_const(&mut self, name: &str) -> R<NodeId> {
        let t = self.f.loss_input(name)?.f64();
        Ok(self.g.constant(t))
    }

    /// `Σ w ⊙ y` with `w = loss_inputs[w_name]`.
    pub fn weighted(&mut self, y: NodeId, w_name: &str) -> R<NodeId> {
        let w = self.loss_const(w_name)?;
        let p = self.g.mul(w, y).map_err(e)?;
        self.g.sum_all(p).map_err(e)
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> R<NodeId> {
        self.g.add(a, b).map_err(e)
    }

    /// Compares `expected.outputs[name]` with a node.
    pub fn output(&mut self, name: &str, id: NodeId) -> R<()> {
        let v = self.g.value(id).map_err(e)?.to_owned();
        self.output_value(name, &v)
    }

    pub fn output_value(&mut self, name: &str, v: &ArrayD<f64>) -> R<()> {
        let t = self.f.expected_tensor("outputs", name)?;
        self.cmp.tensor(&format!("outputs.{name}"), v, &t);
        self.compared.push(name.to_owned());
        Ok(())
    }

    /// The leaf whose gradient answers for fixture tensor `name`, and its block, if any.
    fn leaf(&mut self, name: &str) -> R<(NodeId, Option<(usize, usize)>)> {
        if let Some(&id) = self.inputs.get(name) {
            return Ok((id, None));
        }
        if let Some(b) = self.blocks.iter().find(|b| b.fixture == name) {
            let (store, k, n) = (b.store.clone(), b.k, b.n);
            return Ok((self.g.param(&self.store, &store).map_err(e)?, Some((k, n))));
        }
        Ok((self.g.param(&self.store, name).map_err(e)?, None))
    }

    /// Compares the loss, every expected gradient and every expected output.
    pub fn finish(mut self, loss: NodeId) -> R<Compare> {
        let expected_loss = self.f.expected_number("loss")?;
        self.cmp.number("loss", self.g.scalar_value(loss).map_err(e)?, expected_loss);
        let names = self.f.expected_names("grads");
        let mut leaves = Vec::with_capacity(names.len());
        for n in &names {
            leaves.push(self.leaf(n)?);
        }
        let ids: Vec<NodeId> = leaves.iter().map(|l| l.0).collect();
        let grads = self.g.grad(loss, &ids).map_err(e)?;
        for ((n, (_, block)), d) in names.iter().zip(&leaves).zip(grads) {
            let v = self.g.value(d).map_err(e)?;
            let v = match block {
                Some((k, len)) => v.slice_axis(Axis(0), Slice::from(k * len..(k + 1) * len)).to_owned(),
                None => v.to_owned(),
            };
            let t = self.f.expected_tensor("grads", n)?;
            self.cmp.tensor(&format!("grads.{n}"), &v, &t);
        }
        for n in self.f.expected_names("outputs") {
            if !self.compared.contains(&n) {
                self.cmp.fail(format!("outputs.{n} was not produced"));
            }
        }
        Ok(self.cmp)
    }
}

/// Concatenates fixture tensors along axis 0 into one library tensor, recording
/// which block each one is.
pub fn fuse(f: &Fixture, store: &mut ParamStore<f64>, blocks: &mut Vec<Block>, into: &str, parts: &[&str]) -> R<()> {
    let arrays: Vec<ArrayD<f64>> = parts.iter().map(|p| f.param(p).map(|t| t.f64())).collect::<R<_>>()?;
    let n = arrays[0].shape()[0];
    let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
    store.insert(into, ndarray::concatenate(Axis(0), &views).map_err(|e| e.to_string())?);
    for (k, p) in parts.iter().enumerate() {
        blocks.push(Block { fixture: (*p).to_owned(), store: into.to_owned(), k, n });
    }
    Ok(())
}
