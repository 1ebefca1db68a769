//! Optimizers with PyTorch's update formulas (`torch.optim`, single-tensor path).
//! Their state serializes, so a checkpoint resumes exactly.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Zip};
use serde::{Deserialize, Serialize};
use unrolled_autograd::{Error, Float, ParamStore, Result};

/// An optimizer: updates parameters in place from their gradients.
pub trait Optimizer<T: Float> {
    /// One update of every parameter that has a gradient. Parameters without a
    /// gradient are left alone (as PyTorch does for `grad is None`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if a gradient's shape differs from its parameter's;
    /// [`Error::UnknownParam`] for a gradient of a parameter the store does not have.
    fn step(&mut self, params: &mut ParamStore<T>, grads: &BTreeMap<String, ArrayD<T>>) -> Result<()>;
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (for schedules).
    fn set_lr(&mut self, lr: f64);
}

/// A parameter, its name and its gradient.
type Pair<'a, T> = (&'a str, &'a mut ArrayD<T>, &'a ArrayD<T>);

fn pairs<'a, T: Float>(
    params: &'a mut ParamStore<T>,
    grads: &'a BTreeMap<String, ArrayD<T>>,
    op: &'static str,
) -> Result<Vec<Pair<'a, T>>> {
    for (name, g) in grads {
        let p = params.get(name).ok_or_else(|| Error::UnknownParam { op, name: name.clone() })?;
        if p.shape() != g.shape() {
            return Err(Error::ShapeMismatch {
                op,
                scope: name.clone(),
                lhs: p.shape().to_vec(),
                rhs: g.shape().to_vec(),
            });
        }
    }
    Ok(params.iter_mut().filter_map(|(n, p)| grads.get(n).map(|g| (n, p, g))).collect())
}

fn with_decay<T: Float>(g: &ArrayD<T>, p: &ArrayD<T>, wd: f64) -> ArrayD<T> {
    if wd == 0.0 {
        g.clone()
    } else {
        let w = T::of(wd);
        Zip::from(g).and(p).map_collect(|&g, &p| g + w * p)
    }
}

/// `torch.optim.SGD`: momentum (PyTorch's form: the first step copies the gradient
/// into the buffer), dampening, Nesterov, L2 weight decay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sgd<T> {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// The momentum buffers.
    pub buffers: BTreeMap<String, ArrayD<T>>,
}

impl<T: Float> Sgd<T> {
    /// Plain SGD.
    pub fn new(lr: f64) -> Self {
        Sgd { lr, momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0, buffers: BTreeMap::new() }
    }
    /// With momentum.
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    /// With Nesterov momentum.
    pub fn nesterov(mut self, yes: bool) -> Self {
        self.nesterov = yes;
        self
    }
    /// With weight decay.
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    fn step(&mut self, params: &mut ParamStore<T>, grads: &BTreeMap<String, ArrayD<T>>) -> Result<()> {
        let (lr, m, damp) = (T::of(self.lr), T::of(self.momentum), T::of(1.0 - self.dampening));
        for (name, p, g) in pairs(params, grads, "sgd")? {
            let mut d = with_decay(g, p, self.weight_decay);
            if self.momentum != 0.0 {
                let buf = match self.buffers.get_mut(name) {
                    None => self.buffers.entry(name.to_owned()).or_insert_with(|| d.clone()),
                    Some(b) => {
                        Zip::from(&mut *b).and(&d).for_each(|b, &d| *b = m * *b + damp * d);
                        b
                    }
                };
                if self.nesterov {
                    Zip::from(&mut d).and(&*buf).for_each(|d, &b| *d += m * b);
                } else {
                    d.assign(buf);
                }
            }
            Zip::from(p).and(&d).for_each(|p, &d| *p -= lr * d);
        }
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// `torch.optim.Adagrad`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adagrad<T> {
    /// Learning rate.
    pub lr: f64,
    /// Learning-rate decay per step.
    pub lr_decay: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Initial value of the accumulators.
    pub initial_accumulator_value: f64,
    /// The sums of squared gradients.
    pub sums: BTreeMap<String, ArrayD<T>>,
    /// Steps taken per parameter.
    pub steps: BTreeMap<String, u64>,
}

impl<T: Float> Adagrad<T> {
    /// PyTorch's defaults (`lr_decay 0`, `eps 1e-10`).
    pub fn new(lr: f64) -> Self {
        Adagrad {
            lr,
            lr_decay: 0.0,
            weight_decay: 0.0,
            eps: 1e-10,
            initial_accumulator_value: 0.0,
            sums: BTreeMap::new(),
            steps: BTreeMap::new(),
        }
    }
}

impl<T: Float> Optimizer<T> for Adagrad<T> {
    fn step(&mut self, params: &mut ParamStore<T>, grads: &BTreeMap<String, ArrayD<T>>) -> Result<()> {
        let eps = T::of(self.eps);
        for (name, p, g) in pairs(params, grads, "adagrad")? {
            let step = self.steps.entry(name.to_owned()).or_insert(0);
            *step += 1;
            let clr = T::of(self.lr / (1.0 + (*step - 1) as f64 * self.lr_decay));
            let d = with_decay(g, p, self.weight_decay);
            let init = T::of(self.initial_accumulator_value);
            let sum = self.sums.entry(name.to_owned()).or_insert_with(|| ArrayD::from_elem(p.raw_dim(), init));
            Zip::from(&mut *sum).and(&d).for_each(|s, &d| *s += d * d);
            Zip::from(p).and(&d).and(&*sum).for_each(|p, &d, &s| *p -= clr * d / (s.sqrt() + eps));
        }
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// `torch.optim.RMSprop` (with its `centered` and `momentum` options).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RmsProp<T> {
    /// Learning rate.
    pub lr: f64,
    /// Smoothing constant.
    pub alpha: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Normalize by the estimated variance instead of the second moment.
    pub centered: bool,
    /// Running averages of squared gradients.
    pub square_avg: BTreeMap<String, ArrayD<T>>,
    /// Running averages of gradients (centered only).
    pub grad_avg: BTreeMap<String, ArrayD<T>>,
    /// Momentum buffers.
    pub buffers: BTreeMap<String, ArrayD<T>>,
}

impl<T: Float> RmsProp<T> {
    /// PyTorch's defaults (`alpha 0.99`, `eps 1e-8`).
    pub fn new(lr: f64) -> Self {
        RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            square_avg: BTreeMap::new(),
            grad_avg: BTreeMap::new(),
            buffers: BTreeMap::new(),
        }
    }
}

impl<T: Float> Optimizer<T> for RmsProp<T> {
    fn step(&mut self, params: &mut ParamStore<T>, grads: &BTreeMap<String, ArrayD<T>>) -> Result<()> {
        let (lr, a, eps, m) = (T::of(self.lr), T::of(self.alpha), T::of(self.eps), T::of(self.momentum));
        for (name, p, g) in pairs(params, grads, "rmsprop")? {
            let d = with_decay(g, p, self.weight_decay);
            let sq = self.square_avg.entry(name.to_owned()).or_insert_with(|| ArrayD::zeros(p.raw_dim()));
            Zip::from(&mut *sq).and(&d).for_each(|s, &d| *s = a * *s + (T::one() - a) * d * d);
            let avg: ArrayD<T> = if self.centered {
                let ga = self.grad_avg.entry(name.to_owned()).or_insert_with(|| ArrayD::zeros(p.raw_dim()));
                Zip::from(&mut *ga).and(&d).for_each(|x, &d| *x = *x + (T::one() - a) * (d - *x));
                Zip::from(&*sq).and(&*ga).map_collect(|&s, &x| (s - x * x).sqrt() + eps)
            } else {
                sq.mapv(|s| s.sqrt() + eps)
            };
            if self.momentum > 0.0 {
                let buf = self.buffers.entry(name.to_owned()).or_insert_with(|| ArrayD::zeros(p.raw_dim()));
                Zip::from(&mut *buf).and(&d).and(&avg).for_each(|b, &d, &v| *b = m * *b + d / v);
                Zip::from(p).and(&*buf).for_each(|p, &b| *p -= lr * b);
            } else {
                Zip::from(p).and(&d).and(&avg).for_each(|p, &d, &v| *p -= lr * d / v);
            }
        }
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// `torch.optim.Adam` and `torch.optim.AdamW` (decoupled weight decay, applied
/// first as `θ ← θ(1 - lr·wd)`). The bias corrections are computed in f64, and
/// `eps` is added after them, as PyTorch does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam<T> {
    /// Learning rate.
    pub lr: f64,
    /// `(beta1, beta2)`.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: L2 added to the gradient (Adam) or decoupled (AdamW).
    pub weight_decay: f64,
    /// AdamW's decoupled decay instead of Adam's L2 term.
    pub decoupled: bool,
    /// Use the maximum of past second moments.
    pub amsgrad: bool,
    /// First moments.
    pub m: BTreeMap<String, ArrayD<T>>,
    /// Second moments.
    pub v: BTreeMap<String, ArrayD<T>>,
    /// Maxima of the second moments (amsgrad).
    pub v_max: BTreeMap<String, ArrayD<T>>,
    /// Steps taken per parameter.
    pub steps: BTreeMap<String, u64>,
}

impl<T: Float> Adam<T> {
    /// `torch.optim.Adam` with its defaults (`betas (0.9, 0.999)`, `eps 1e-8`).
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            amsgrad: false,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
            v_max: BTreeMap::new(),
            steps: BTreeMap::new(),
        }
    }
    /// `torch.optim.AdamW` with its defaults (`weight_decay 0.01`).
    pub fn adamw(lr: f64) -> Self {
        Adam { weight_decay: 0.01, decoupled: true, ..Self::new(lr) }
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn step(&mut self, params: &mut ParamStore<T>, grads: &BTreeMap<String, ArrayD<T>>) -> Result<()> {
        let (b1, b2) = self.betas;
        let eps = T::of(self.eps);
        for (name, p, g) in pairs(params, grads, "adam")? {
            let step = self.steps.entry(name.to_owned()).or_insert(0);
            *step += 1;
            let n = *step as f64;
            let d = if self.decoupled {
                let keep = T::of(1.0 - self.lr * self.weight_decay);
                p.mapv_inplace(|x| x * keep);
                g.clone()
            } else {
                with_decay(g, p, self.weight_decay)
            };
            let m = self.m.entry(name.to_owned()).or_insert_with(|| ArrayD::zeros(p.raw_dim()));
            let v = self.v.entry(name.to_owned()).or_insert_with(|| ArrayD::zeros(p.raw_dim()));
            let (w1, c2, w2) = (T::of(1.0 - b1), T::of(b2), T::of(1.0 - b2));
            Zip::from(&mut *m).and(&d).for_each(|m, &d| *m += w1 * (d - *m));
            Zip::from(&mut *v).and(&d).for_each(|v, &d| *v = *v * c2 + w2 * d * d);
            let bc1 = 1.0 - b1.powf(n);
            let bc2_sqrt = T::of((1.0 - b2.powf(n)).sqrt());
            let step_size = T::of(self.lr / bc1);
            let second: &ArrayD<T> = if self.amsgrad {
                let vm = self.v_max.entry(name.to_owned()).or_insert_with(|| ArrayD::zeros(p.raw_dim()));
                Zip::from(&mut *vm).and(&*v).for_each(|a, &b| *a = a.max(b));
                vm
            } else {
                v
            };
            Zip::from(p).and(&*m).and(second).for_each(|p, &m, &v| *p -= step_size * m / (v.sqrt() / bc2_sqrt + eps));
        }
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// Any of the optimizers, chosen at run time (a CLI flag) and serialized with its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnyOptimizer<T> {
    /// SGD.
    Sgd(Sgd<T>),
    /// Adagrad.
    Adagrad(Adagrad<T>),
    /// RMSprop.
    RmsProp(RmsProp<T>),
    /// Adam or AdamW.
    Adam(Adam<T>),
}

impl<T: Float> AnyOptimizer<T> {
    /// By name: `sgd`, `momentum` (SGD with 0.9), `nesterov`, `adagrad`, `rmsprop`, `adam`, `adamw`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown name.
    pub fn by_name(name: &str, lr: f64) -> Result<Self> {
        Ok(match name {
            "sgd" => AnyOptimizer::Sgd(Sgd::new(lr)),
            "momentum" => AnyOptimizer::Sgd(Sgd::new(lr).momentum(0.9)),
            "nesterov" => AnyOptimizer::Sgd(Sgd::new(lr).momentum(0.9).nesterov(true)),
            "adagrad" => AnyOptimizer::Adagrad(Adagrad::new(lr)),
            "rmsprop" => AnyOptimizer::RmsProp(RmsProp::new(lr)),
            "adam" => AnyOptimizer::Adam(Adam::new(lr)),
            "adamw" => AnyOptimizer::Adam(Adam::adamw(lr)),
            other => {
                return Err(Error::InvalidInput {
                    op: "optimizer",
                    scope: String::new(),
                    reason: format!(
                        "unknown optimizer `{other}` (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw)"
                    ),
                    shapes: Vec::new(),
                })
            }
        })
    }

    fn inner(&mut self) -> &mut dyn Optimizer<T> {
        match self {
            AnyOptimizer::Sgd(o) => o,
            AnyOptimizer::Adagrad(o) => o,
            AnyOptimizer::RmsProp(o) => o,
            AnyOptimizer::Adam(o) => o,
        }
    }
}

impl<T: Float> Optimizer<T> for AnyOptimizer<T> {
    fn step(&mut self, params: &mut ParamStore<T>, grads: &BTreeMap<String, ArrayD<T>>) -> Result<()> {
        self.inner().step(params, grads)
    }
    fn lr(&self) -> f64 {
        match self {
            AnyOptimizer::Sgd(o) => o.lr,
            AnyOptimizer::Adagrad(o) => o.lr,
            AnyOptimizer::RmsProp(o) => o.lr,
            AnyOptimizer::Adam(o) => o.lr,
        }
    }
    fn set_lr(&mut self, lr: f64) {
        self.inner().set_lr(lr);
    }
}
