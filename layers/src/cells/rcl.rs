//! The recurrent convolutional layer (RCL, Liang & Hu, CVPR 2015): a static input
//! `u` and `K` iterations of a convolutional recurrence,
//!
//! ```text
//! x(0) = N(relu(conv(u, w_ff) + b))
//! x(t) = N(relu(conv(u, w_ff) + conv(x(t-1), w_rec) + b)),   t = 1..K
//! ```
//!
//! with "same" zero padding, cross-correlation as PyTorch's `conv2d`, and `N` either
//! the identity or local response normalization across channels (as in the paper).
//! The feed-forward term is computed once and fans out to every iteration.

use unrolled_autograd::{Float, Graph, NodeId, ParamStore, Result};

use crate::init::{ParamSpec, Role};

/// Local response normalization settings (PyTorch's `local_response_norm`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lrn {
    /// Channels in the window.
    pub size: usize,
    /// Scale.
    pub alpha: f64,
    /// Exponent.
    pub beta: f64,
    /// Offset.
    pub k: f64,
}

impl Default for Lrn {
    /// The paper's setting: size 7 (of the channels), alpha 0.001, beta 0.75, k 1.
    fn default() -> Self {
        Lrn { size: 7, alpha: 0.001, beta: 0.75, k: 1.0 }
    }
}

/// A recurrent convolutional layer: parameters `{prefix}w_ff [Co, Ci, k, k]`,
/// `w_rec [Co, Co, k, k]`, `b [Co]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rcl {
    /// The name prefix.
    pub prefix: String,
    /// `Ci`.
    pub in_channels: usize,
    /// `Co`.
    pub out_channels: usize,
    /// The (odd) kernel size `k`; padding is `k / 2`.
    pub kernel_size: usize,
    /// The number of recurrent iterations `K`.
    pub iterations: usize,
    /// Normalization after the nonlinearity.
    pub lrn: Option<Lrn>,
}

/// The states of an RCL: `x(0) … x(K)`, each `[B, Co, H, W]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RclOutput {
    /// `states[t] = x(t)`.
    pub states: Vec<NodeId>,
}

impl RclOutput {
    /// The last state `x(K)`.
    pub fn last(&self) -> NodeId {
        *self.states.last().expect("x(0) always exists")
    }
}

impl Rcl {
    /// An RCL named under `prefix`.
    pub fn new(prefix: &str, in_channels: usize, out_channels: usize, kernel_size: usize, iterations: usize) -> Self {
        Rcl { prefix: prefix.to_owned(), in_channels, out_channels, kernel_size, iterations, lrn: None }
    }

    /// With local response normalization.
    pub fn with_lrn(mut self, lrn: Lrn) -> Self {
        self.lrn = Some(lrn);
        self
    }

    fn name(&self, s: &str) -> String {
        format!("{}{s}", self.prefix)
    }

    /// The parameters' specs (kernels drawn with PyTorch's conv default bound `1/sqrt(fan_in)`).
    pub fn params(&self) -> Vec<ParamSpec> {
        let (ci, co, k) = (self.in_channels, self.out_channels, self.kernel_size);
        vec![
            ParamSpec::new(&self.name("w_ff"), &[co, ci, k, k], Role::Kernel, 1, ci * k * k),
            ParamSpec::new(&self.name("w_rec"), &[co, co, k, k], Role::Kernel, 1, co * k * k),
            ParamSpec::new(&self.name("b"), &[co], Role::Bias, 1, ci * k * k),
        ]
    }

    fn activate<T: Float>(&self, g: &mut Graph<T>, z: NodeId) -> Result<NodeId> {
        let r = g.relu(z)?;
        match self.lrn {
            Some(l) => g.local_response_norm(r, l.size, l.alpha, l.beta, l.k),
            None => Ok(r),
        }
    }

    /// Runs the layer on `u [B, Ci, H, W]`: `K + 1` states `[B, Co, H, W]`, iteration
    /// `t` under the scope `t{t}`.
    ///
    /// # Errors
    /// The graph's errors (channels or ranks that do not fit, a missing parameter).
    pub fn forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamStore<T>, u: NodeId) -> Result<RclOutput> {
        let pad = self.kernel_size / 2;
        let w_ff = g.param(p, &self.name("w_ff"))?;
        let w_rec = g.param(p, &self.name("w_rec"))?;
        let b = g.param(p, &self.name("b"))?;
        let ff = g.scope("ff").conv2d(u, w_ff, Some(b), 1, pad)?;
        let mut states = Vec::with_capacity(self.iterations + 1);
        let x0 = {
            let mut g = g.step(0);
            self.activate(&mut g, ff)?
        };
        states.push(x0);
        for t in 1..=self.iterations {
            let mut g = g.step(t);
            let prev = *states.last().expect("x(0) pushed");
            let rec = g.conv2d(prev, w_rec, None, 1, pad)?;
            let z = g.add(ff, rec)?;
            states.push(self.activate(&mut g, z)?);
        }
        Ok(RclOutput { states })
    }

    /// The same parameters as a feed-forward network of two convolutions:
    /// `relu(conv(relu(conv(u, w_ff) + b), w_rec) + b)` (normalized like the RCL):
    /// the baseline with an equal parameter count that the RCL is compared with.
    ///
    /// # Errors
    /// As [`Rcl::forward`].
    pub fn feed_forward<T: Float>(&self, g: &mut Graph<T>, p: &ParamStore<T>, u: NodeId) -> Result<NodeId> {
        let pad = self.kernel_size / 2;
        let w_ff = g.param(p, &self.name("w_ff"))?;
        let w_rec = g.param(p, &self.name("w_rec"))?;
        let b = g.param(p, &self.name("b"))?;
        let a = g.scope("conv1").conv2d(u, w_ff, Some(b), 1, pad)?;
        let a = self.activate(&mut g.scope("conv1"), a)?;
        let z = g.scope("conv2").conv2d(a, w_rec, Some(b), 1, pad)?;
        self.activate(&mut g.scope("conv2"), z)
    }
}
