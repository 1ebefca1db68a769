//! SVG plots (drawn with `plotters`): training loss curves, gradient flow per
//! time step, and gate saturation.
//!
//! ```
//! use unrolled_layers::plot::{plot_loss_curve};
//! # fn main() -> unrolled_autograd::Result<()> {
//! let dir = std::env::temp_dir().join("unrolled-doc-plot");
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("loss.svg");
//! plot_loss_curve(&path, "training loss", &[2.0, 1.5, 1.2, 1.1])?;
//! assert!(std::fs::read_to_string(&path).unwrap().starts_with("<svg"));
//! # Ok(()) }
//! ```

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use unrolled_autograd::{Error, Result};

use crate::diagnostics::{GateSaturation, GradientFlow};

/// One line of a plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// `(x, y)` points; on a log axis, points with `y ≤ 0` or not finite are left out.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series of `ys` at `x = first_x, first_x + 1, …`.
    pub fn indexed(name: &str, first_x: f64, ys: &[f64]) -> Series {
        Series {
            name: name.to_string(),
            points: ys.iter().enumerate().map(|(i, &y)| (first_x + i as f64, y)).collect(),
        }
    }
}

/// One panel: a title, axis labels and lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// The caption.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// A logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io { op: "plot", path: path.display().to_string(), reason: e.to_string() }
}

fn bounds(p: &Panel) -> Option<((f64, f64), (f64, f64))> {
    let pts = p.series.iter().flat_map(|s| &s.points).filter(|(x, y)| keep(p, *x, *y));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return None;
    }
    if x1 - x0 < 1e-12 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    if p.log_y {
        (y0, y1) = (y0 / 1.5, y1 * 1.5);
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-12 + y1.abs() * 1e-6);
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    Some(((x0, x1), (y0, y1)))
}

fn keep(p: &Panel, x: f64, y: f64) -> bool {
    x.is_finite() && y.is_finite() && (!p.log_y || y > 0.0)
}

fn draw_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, p: &Panel, path: &Path) -> Result<()> {
    let Some(((x0, x1), (y0, y1))) = bounds(p) else {
        area.titled(&format!("{} (no finite values)", p.title), ("sans-serif", 18)).map_err(|e| io(path, e))?;
        return Ok(());
    };
    let mut b = ChartBuilder::on(area);
    b.caption(&p.title, ("sans-serif", 18)).margin(12).x_label_area_size(36).y_label_area_size(64);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(p.x_label.as_str())
                .y_desc(p.y_label.as_str())
                .y_label_formatter(&|v| format!("{v:.3e}"))
                .draw()
                .map_err(|e| io(path, e))?;
            for (i, s) in p.series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|&(x, y)| keep(p, x, y)).collect();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(|e| io(path, e))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            }
            if p.series.len() > 1 || p.series.iter().any(|s| !s.name.is_empty()) {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| io(path, e))?;
            }
        }};
    }
    if p.log_y {
        finish!(b.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).map_err(|e| io(path, e))?);
    } else {
        finish!(b.build_cartesian_2d(x0..x1, y0..y1).map_err(|e| io(path, e))?);
    }
    Ok(())
}

/// Writes panels side by side into one SVG file.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn plot_panels(path: impl AsRef<Path>, panels: &[Panel]) -> Result<()> {
    let path = path.as_ref();
    let n = panels.len().max(1);
    let root = SVGBackend::new(path, (640 * n as u32, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| io(path, e))?;
    for (area, p) in root.split_evenly((1, n)).iter().zip(panels) {
        draw_panel(area, p, path)?;
    }
    root.present().map_err(|e| io(path, e))?;
    Ok(())
}

/// A training loss curve (loss per step, and its running mean over 5% of the run).
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn plot_loss_curve(path: impl AsRef<Path>, title: &str, losses: &[f64]) -> Result<()> {
    let w = (losses.len() / 20).max(1);
    let smooth: Vec<f64> = (0..losses.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            losses[lo..=i].iter().sum::<f64>() / (i + 1 - lo) as f64
        })
        .collect();
    let mut series = vec![Series::indexed("loss", 1.0, losses)];
    if w > 1 {
        series.push(Series::indexed(&format!("mean of {w}"), 1.0, &smooth));
    }
    let panel = Panel { title: title.into(), x_label: "step".into(), y_label: "loss".into(), log_y: false, series };
    plot_panels(path, &[panel])
}

/// Gradient flow per time step, for one or several runs (name, flow): `‖∂L/∂h_t‖`,
/// `‖∂h_T/∂h_t‖` and the largest singular value of `∂h_t/∂h_{t-1}` against `t`, on
/// log axes.
///
/// ```
/// use unrolled_layers::diagnostics::GradientFlow;
/// use unrolled_layers::plot::plot_gradient_flow;
/// # fn main() -> unrolled_autograd::Result<()> {
/// let flow = GradientFlow {
///     loss_grad_norms: vec![0.1, 0.3, 0.9],
///     final_state_jacobian_norms: vec![0.25, 0.5, 1.0],
///     step_singular_values: vec![vec![0.5]; 3],
/// };
/// let path = std::env::temp_dir().join("unrolled-doc-flow.svg");
/// plot_gradient_flow(&path, &[("W = I/2", &flow)])?;
/// assert!(std::fs::read_to_string(&path).unwrap().contains("W = I/2"));
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn plot_gradient_flow(path: impl AsRef<Path>, runs: &[(&str, &GradientFlow)]) -> Result<()> {
    let loss = runs.iter().map(|(n, f)| Series::indexed(n, 1.0, &f.loss_grad_norms)).collect();
    let jac = runs.iter().map(|(n, f)| Series::indexed(n, 1.0, &f.final_state_jacobian_norms)).collect();
    let sv = runs
        .iter()
        .map(|(n, f)| {
            let top: Vec<f64> = f.step_singular_values.iter().map(|s| s.first().copied().unwrap_or(0.0)).collect();
            Series::indexed(n, 1.0, &top)
        })
        .collect();
    let panel = |title: &str, series| Panel {
        title: title.into(),
        x_label: "time step t".into(),
        y_label: "norm".into(),
        log_y: true,
        series,
    };
    plot_panels(
        path,
        &[
            panel("gradient reaching h_t: |dL/dh_t|", loss),
            panel("|dh_T/dh_t| (spectral norm)", jac),
            panel("largest singular value of dh_t/dh_(t-1)", sv),
        ],
    )
}

/// Gate saturation per time step, one line per run and gate: the fraction of the
/// gate's units below `eps` and above `1 - eps` together (from
/// [`gate_saturation`](crate::diagnostics::gate_saturation)).
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn plot_gate_saturation(path: impl AsRef<Path>, runs: &[(&str, &[GateSaturation])]) -> Result<()> {
    let series = runs
        .iter()
        .flat_map(|(n, gates)| {
            gates.iter().map(move |gs| {
                let ys: Vec<f64> = gs.per_step.iter().map(|s| s.low + s.high).collect();
                Series::indexed(&format!("{n} {}", gs.gate), 0.0, &ys)
            })
        })
        .collect();
    plot_panels(
        path,
        &[Panel {
            title: "gate saturation: fraction of units near 0 or 1".into(),
            x_label: "time step t".into(),
            y_label: "fraction".into(),
            log_y: false,
            series,
        }],
    )
}
