//! The gate helper every cell shares: `W x + U h + b` over named parameters.

use smallvec::SmallVec;
use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use crate::init::{ParamSpec, Role};

/// PyTorch's parameter names for layer `layer` of a recurrent module:
/// `{prefix}weight_ih_l{layer}[_reverse]` and the same for `weight_hh`, `bias_ih`, `bias_hh`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchNames {
    /// `weight_ih_l{k}`: `[G*H, I]`.
    pub weight_ih: String,
    /// `weight_hh_l{k}`: `[G*H, H]`.
    pub weight_hh: String,
    /// `bias_ih_l{k}`: `[G*H]`.
    pub bias_ih: String,
    /// `bias_hh_l{k}`: `[G*H]`.
    pub bias_hh: String,
}

impl TorchNames {
    /// The names for `layer`, with `_reverse` for the backward direction.
    pub fn new(prefix: &str, layer: usize, reverse: bool) -> Self {
        let sfx = if reverse { "_reverse" } else { "" };
        TorchNames {
            weight_ih: format!("{prefix}weight_ih_l{layer}{sfx}"),
            weight_hh: format!("{prefix}weight_hh_l{layer}{sfx}"),
            bias_ih: format!("{prefix}bias_ih_l{layer}{sfx}"),
            bias_hh: format!("{prefix}bias_hh_l{layer}{sfx}"),
        }
    }

    /// The name of another per-layer tensor in the same style (`weight_ch` for peepholes).
    pub fn extra(prefix: &str, what: &str, layer: usize, reverse: bool) -> String {
        format!("{prefix}{what}_l{layer}{}", if reverse { "_reverse" } else { "" })
    }
}

/// Gates in PyTorch's fused layout: `G` consecutive row blocks of `H` rows in
/// `weight_ih [G*H, I]`, `weight_hh [G*H, H]` and the two biases.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedGates {
    /// The parameter names.
    pub names: TorchNames,
    /// The gates' names in block order (scopes of their pre-activations).
    pub gates: &'static [&'static str],
    /// Input size `I`.
    pub input: usize,
    /// Hidden size `H`.
    pub hidden: usize,
}

impl FusedGates {
    /// `x W_ihᵀ + b_ih`, `[B, G*H]`.
    ///
    /// # Errors
    /// A missing parameter or shapes that do not fit.
    pub fn input_projection<T: Float>(&self, g: &mut Graph<T>, p: &ParamStore<T>, x: NodeId) -> Result<NodeId> {
        let w = g.param(p, &self.names.weight_ih)?;
        let b = g.param(p, &self.names.bias_ih)?;
        g.linear(x, w, Some(b))
    }

    /// `x W_ihᵀ + (b_ih + b_hh)`: the input projection carrying both biases, so a step
    /// adds only `h W_hhᵀ`. The biases are summed first (a `[G*H]` add), so the whole
    /// sequence gets one bias add, and the reverse sweep one bias-gradient sum.
    ///
    /// # Errors
    /// As [`FusedGates::input_projection`].
    pub fn input_projection_both_biases<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        x: NodeId,
    ) -> Result<NodeId> {
        let w = g.param(p, &self.names.weight_ih)?;
        let b_ih = g.param(p, &self.names.bias_ih)?;
        let b_hh = g.param(p, &self.names.bias_hh)?;
        let b = g.add(b_ih, b_hh)?;
        g.linear(x, w, Some(b))
    }

    /// `h W_hhᵀ` (no bias), `[B, G*H]`, under the scope `gates`.
    ///
    /// # Errors
    /// As [`FusedGates::input_projection`].
    pub fn hidden_product<T: Float>(&self, g: &mut Graph<T>, p: &ParamStore<T>, h: NodeId) -> Result<NodeId> {
        let mut g = g.scope("gates");
        let w = g.param(p, &self.names.weight_hh)?;
        g.matmul_t(h, w, false, true)
    }

    /// Block `k` (of width `H`) of a fused step's `[B, n*H]` output, under the scope `name`.
    ///
    /// # Errors
    /// If the output is narrower than `(k + 1) * H`.
    pub fn block<T: Float>(&self, g: &mut Graph<T>, out: NodeId, k: usize, name: &str) -> Result<NodeId> {
        g.scope(name).narrow(out, 1, k * self.hidden, self.hidden)
    }

    /// `h W_hhᵀ + b_hh`, `[B, G*H]`.
    ///
    /// # Errors
    /// As [`FusedGates::input_projection`].
    pub fn hidden_projection<T: Float>(&self, g: &mut Graph<T>, p: &ParamStore<T>, h: NodeId) -> Result<NodeId> {
        let w = g.param(p, &self.names.weight_hh)?;
        let b = g.param(p, &self.names.bias_hh)?;
        g.linear(h, w, Some(b))
    }

    /// Splits `[B, G*H]` into the `G` gates, `[B, H]` each.
    ///
    /// # Errors
    /// If the last axis is not `G*H`.
    pub fn split<T: Float>(&self, g: &mut Graph<T>, z: NodeId) -> Result<SmallVec<[NodeId; 4]>> {
        let sizes = vec![self.hidden; self.gates.len()];
        Ok(g.split(z, -1, &sizes)?.into_iter().collect())
    }

    /// The pre-activation of every gate, `W_i x + b_i + W_h h + b_h` split by gate,
    /// recorded under the scope `gates`.
    ///
    /// # Errors
    /// As [`FusedGates::input_projection`].
    pub fn preactivations<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        x: NodeId,
        h: NodeId,
    ) -> Result<SmallVec<[NodeId; 4]>> {
        let mut g = g.scope("gates");
        let a = self.input_projection(&mut g, p, x)?;
        let b = self.hidden_projection(&mut g, p, h)?;
        let z = g.add(a, b)?;
        self.split(&mut g, z)
    }

    /// The pre-activation of every gate from a projected input `xp = x W_ihᵀ + b_ih`:
    /// `xp + h W_hhᵀ + b_hh` split by gate, under the scope `gates`.
    ///
    /// # Errors
    /// As [`FusedGates::input_projection`].
    pub fn preactivations_projected<T: Float>(
        &self,
        g: &mut Graph<T>,
        p: &ParamStore<T>,
        xp: NodeId,
        h: NodeId,
    ) -> Result<SmallVec<[NodeId; 4]>> {
        let mut g = g.scope("gates");
        let b = self.hidden_projection(&mut g, p, h)?;
        let z = g.add(xp, b)?;
        self.split(&mut g, z)
    }

    /// The four parameters' specs.
    pub fn specs(&self, forget_gate: Option<usize>) -> Vec<ParamSpec> {
        let gh = self.gates.len() * self.hidden;
        let n = self.gates.len();
        vec![
            ParamSpec::new(&self.names.weight_ih, &[gh, self.input], Role::InputWeight, n, self.hidden),
            ParamSpec::new(&self.names.weight_hh, &[gh, self.hidden], Role::RecurrentWeight, n, self.hidden),
            ParamSpec::new(&self.names.bias_ih, &[gh], Role::Bias, n, self.hidden).forget(forget_gate),
            ParamSpec::new(&self.names.bias_hh, &[gh], Role::Bias, n, self.hidden).forget(forget_gate),
        ]
    }
}

/// One gate with its own named matrices: `Σ_k W_k v_k + b` (for cells whose
/// papers name a matrix per gate, as `U_i x + V_i s + b_i`).
#[derive(Clone, Debug, PartialEq)]
pub struct Affine {
    /// The weight names, one per input, each `[out, in_k]`.
    pub weights: Vec<String>,
    /// The bias name, `[out]`.
    pub bias: Option<String>,
}

impl Affine {
    /// A term over named weights and an optional bias.
    pub fn new(weights: &[String], bias: Option<String>) -> Self {
        Affine { weights: weights.to_vec(), bias }
    }

    /// `Σ_k inputs[k] W_kᵀ + b`.
    ///
    /// # Errors
    /// A missing parameter, shapes that do not fit, or a wrong number of inputs.
    pub fn apply<T: Float>(&self, g: &mut Graph<T>, p: &ParamStore<T>, inputs: &[NodeId]) -> Result<NodeId> {
        if inputs.len() != self.weights.len() || inputs.is_empty() {
            return Err(unrolled_autograd::Error::InvalidInput {
                op: "affine_gate",
                scope: g.scope_path(),
                reason: format!("{} weights, {} inputs", self.weights.len(), inputs.len()),
                shapes: Vec::new(),
            });
        }
        let mut acc: Option<NodeId> = None;
        for (name, &v) in self.weights.iter().zip(inputs) {
            let w = g.param(p, name)?;
            let t = g.linear(v, w, None)?;
            acc = Some(match acc {
                None => t,
                Some(a) => g.add(a, t)?,
            });
        }
        match (acc, &self.bias) {
            (Some(acc), Some(b)) => {
                let b = g.param(p, b)?;
                g.add(acc, b)
            }
            (Some(acc), None) => Ok(acc),
            (None, _) => unreachable!("inputs checked non-empty above"),
        }
    }
}
