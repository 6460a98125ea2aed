//! A PNG of the training curves: loss and accuracy against epoch.
//!
//! Drawn by hand into an RGB buffer with the 8x8 bitmap font of `font8x8`,
//! so plotting needs no system fonts or plotting stack and works the same on
//! every machine. Two panels side by side: loss (train, val) and accuracy
//! (train, val, and val top-5 when logged), each with a title, a legend,
//! grid lines, tick labels and an `epoch` axis.
//!
//! Points that are NaN or infinite (a diverged epoch) are skipped and break
//! the line; epochs without validation (`None`) are skipped and the line
//! joins the neighbouring validated epochs. Every point has a marker, so a
//! single epoch still shows.
//!
//! ```
//! use mobilenet::train::metrics::EpochMetrics;
//! use mobilenet::train::plot::{PLOT_HEIGHT, PLOT_WIDTH, render_curves};
//!
//! let rows: Vec<EpochMetrics> = (1..=3)
//!     .map(|e| EpochMetrics { epoch: e, train_loss: 3.0 / e as f64, train_acc: 0.2 * e as f64, ..Default::default() })
//!     .collect();
//! let image = render_curves(&rows);
//! assert_eq!(image.dimensions(), (PLOT_WIDTH, PLOT_HEIGHT));
//! ```

use std::io::Cursor;
use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};

use super::atomic::write_atomic;
use super::metrics::EpochMetrics;
use crate::error::{Error, Result};

/// Width of the PNG in pixels (two panels side by side).
pub const PLOT_WIDTH: u32 = 1000;
/// Height of the PNG in pixels.
pub const PLOT_HEIGHT: u32 = 420;

const PANEL_WIDTH: i64 = PLOT_WIDTH as i64 / 2;
const HEIGHT: i64 = PLOT_HEIGHT as i64;
/// Values beyond this magnitude are treated like infinities (skipped):
/// they would only flatten every other point against an axis.
const MAX_MAGNITUDE: f64 = 1e30;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const GREY_TEXT: Rgb<u8> = Rgb([90, 90, 90]);
const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
const VAL: Rgb<u8> = Rgb([255, 127, 14]);
const VAL_TOP5: Rgb<u8> = Rgb([44, 160, 44]);

/// Renders the curves of `rows` (any order; sorted by epoch) and writes them
/// as a PNG of [`PLOT_WIDTH`] x [`PLOT_HEIGHT`] to `path`, atomically.
///
/// ```
/// use mobilenet::train::metrics::EpochMetrics;
///
/// let dir = std::env::temp_dir().join(format!("mobilenet-doc-plot-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let rows = [EpochMetrics { epoch: 1, train_loss: 6.9, train_acc: 0.001, ..Default::default() }];
/// mobilenet::train::plot::plot_curves(&rows, dir.join("curves.png"))?;
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), mobilenet::Error>(())
/// ```
pub fn plot_curves(rows: &[EpochMetrics], path: impl AsRef<Path>) -> Result<()> {
    let image = render_curves(rows);
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| Error::Image(format!("encoding the training plot: {e}")))?;
    write_atomic(path, &png)
}

/// Renders the two panels into an image of [`PLOT_WIDTH`] x [`PLOT_HEIGHT`].
/// Never fails: empty input gives empty axes marked "no data".
pub fn render_curves(rows: &[EpochMetrics]) -> RgbImage {
    let mut sorted: Vec<&EpochMetrics> = rows.iter().collect();
    sorted.sort_by_key(|r| r.epoch);
    let series = |name: &'static str, color, value: fn(&EpochMetrics) -> Option<f64>| Series {
        name,
        color,
        points: sorted
            .iter()
            .filter_map(|r| value(r).map(|v| (f64::from(r.epoch), v)))
            .collect(),
    };
    let loss = [
        series("train", TRAIN, |r| Some(r.train_loss)),
        series("val", VAL, |r| r.val_loss),
    ];
    let mut accuracy = vec![
        series("train", TRAIN, |r| Some(r.train_acc)),
        series("val", VAL, |r| r.val_acc),
    ];
    let top5 = series("val top-5", VAL_TOP5, |r| r.val_top5);
    if !top5.points.is_empty() {
        accuracy.push(top5);
    }
    let x_max = sorted.last().map_or(1.0, |r| f64::from(r.epoch.max(1)));

    let mut canvas = Canvas {
        image: RgbImage::from_pixel(PLOT_WIDTH, PLOT_HEIGHT, WHITE),
    };
    draw_panel(&mut canvas, 0, "loss", &loss, x_max);
    draw_panel(&mut canvas, PANEL_WIDTH, "accuracy", &accuracy, x_max);
    canvas.image
}

/// One curve: `(epoch, value)` in epoch order; non-finite values are gaps.
struct Series {
    name: &'static str,
    color: Rgb<u8>,
    points: Vec<(f64, f64)>,
}

fn plottable(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_MAGNITUDE
}

fn draw_panel(canvas: &mut Canvas, x0: i64, title: &str, series: &[Series], x_max: f64) {
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|&v| plottable(v));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let has_data = lo <= hi;
    let y_axis = if has_data {
        Axis::new(lo, hi, false)
    } else {
        Axis::new(0.0, 1.0, false)
    };
    let x_axis = Axis::new(0.0, x_max, true);
    let y_labels: Vec<String> = y_axis.ticks().map(|t| y_axis.label(t)).collect();
    let label_width = y_labels.iter().map(|l| text_width(l, 1)).max().unwrap_or(0);

    let area = Rect {
        left: x0 + label_width + 16,
        top: 48,
        right: x0 + PANEL_WIDTH - 20,
        bottom: HEIGHT - 44,
    };
    // Data are mapped to an inset of the frame so edge markers stay whole.
    let inner = Rect {
        left: area.left + 6,
        top: area.top + 6,
        right: area.right - 6,
        bottom: area.bottom - 6,
    };
    let to_px = |x: f64, y: f64| {
        (
            inner.left + (x_axis.fraction(x) * (inner.right - inner.left) as f64).round() as i64,
            inner.bottom - (y_axis.fraction(y) * (inner.bottom - inner.top) as f64).round() as i64,
        )
    };

    // Grid, ticks and tick labels.
    for (t, label) in y_axis.ticks().zip(&y_labels) {
        let (_, py) = to_px(0.0, t);
        canvas.hline(area.left + 1, area.right - 1, py, GRID);
        canvas.hline(area.left - 4, area.left, py, BLACK);
        canvas.text(
            area.left - 8 - text_width(label, 1),
            py - 4,
            label,
            BLACK,
            1,
        );
    }
    for t in x_axis.ticks() {
        let (px, _) = to_px(t, y_axis.lo);
        canvas.vline(px, area.top + 1, area.bottom - 1, GRID);
        canvas.vline(px, area.bottom, area.bottom + 4, BLACK);
        let label = x_axis.label(t);
        canvas.text(
            px - text_width(&label, 1) / 2,
            area.bottom + 8,
            &label,
            BLACK,
            1,
        );
    }
    canvas.frame(area, BLACK);
    let mid = (area.left + area.right) / 2;
    canvas.text(
        mid - text_width("epoch", 1) / 2,
        area.bottom + 24,
        "epoch",
        GREY_TEXT,
        1,
    );
    canvas.text(area.left, 14, title, BLACK, 2);
    if !has_data {
        let (cx, cy) = ((area.left + area.right) / 2, (area.top + area.bottom) / 2);
        canvas.text(
            cx - text_width("no data", 1) / 2,
            cy - 4,
            "no data",
            GREY_TEXT,
            1,
        );
    }

    // Legend, right-aligned in the title band, for curves with points.
    let mut right = area.right;
    for s in series.iter().rev().filter(|s| !s.points.is_empty()) {
        let width = 24 + text_width(s.name, 1);
        let left = right - width;
        canvas.fill(left, 18, left + 16, 19, s.color);
        canvas.text(left + 22, 15, s.name, BLACK, 1);
        right = left - 16;
    }

    // Curves: a 2-pixel line between consecutive plottable points, a gap at
    // non-finite ones, and a 5x5 marker on every point.
    for s in series {
        let mut previous: Option<(i64, i64)> = None;
        for &(x, y) in &s.points {
            if !plottable(y) {
                previous = None;
                continue;
            }
            let p = to_px(x, y);
            if let Some(q) = previous {
                canvas.line(q, p, s.color);
            }
            canvas.fill(p.0 - 2, p.1 - 2, p.0 + 2, p.1 + 2, s.color);
            previous = Some(p);
        }
    }
}

/// An axis range rounded out to "nice" tick steps (1, 2 or 5 × 10^k).
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Axis {
    /// Covers `[lo, hi]` (finite, `lo <= hi`); a zero-width range is widened
    /// so constant curves sit mid-panel. `integer` steps are at least 1.
    fn new(lo: f64, hi: f64, integer: bool) -> Axis {
        let (mut lo, mut hi) = (lo, hi);
        let span = hi - lo;
        if span <= hi.abs().max(lo.abs()) * 1e-9 {
            let pad = (lo.abs() * 0.1).max(0.1);
            let was_non_negative = lo >= 0.0;
            lo -= pad;
            hi += pad;
            if was_non_negative && lo < 0.0 {
                lo = 0.0;
            }
        }
        let raw = (hi - lo) / 5.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let norm = raw / magnitude;
        let nice = if norm < 1.5 {
            1.0
        } else if norm < 3.0 {
            2.0
        } else if norm < 7.0 {
            5.0
        } else {
            10.0
        };
        let mut step = nice * magnitude;
        if integer {
            step = step.max(1.0).round();
        }
        Axis {
            lo: (lo / step).floor() * step,
            hi: (hi / step).ceil() * step,
            step,
        }
    }

    /// Where `v` falls in the range, 0 at `lo` and 1 at `hi`.
    fn fraction(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    /// Tick values from `lo` to `hi`, computed as multiples of the step so
    /// that no rounding error accumulates.
    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let first = (self.lo / self.step).round() as i64;
        let count = ((self.hi - self.lo) / self.step).round() as i64;
        (0..=count.clamp(0, 50)).map(move |k| (first + k) as f64 * self.step)
    }

    /// A tick label with as many decimals as the step needs.
    fn label(&self, v: f64) -> String {
        let v = v + 0.0; // -0.0 prints as "-0"
        if self.hi.abs().max(self.lo.abs()) >= 1e6 {
            return format!("{v:.1e}");
        }
        let decimals = (-self.step.log10().floor()).clamp(0.0, 8.0) as usize;
        format!("{v:.decimals$}")
    }
}

#[derive(Clone, Copy)]
struct Rect {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

fn text_width(text: &str, scale: i64) -> i64 {
    text.chars().count() as i64 * 8 * scale
}

/// Pixel drawing with every write bounds-checked.
struct Canvas {
    image: RgbImage,
}

impl Canvas {
    fn put(&mut self, x: i64, y: i64, color: Rgb<u8>) {
        if (0..i64::from(PLOT_WIDTH)).contains(&x) && (0..HEIGHT).contains(&y) {
            self.image.put_pixel(x as u32, y as u32, color);
        }
    }

    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb<u8>) {
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.put(x, y, color);
            }
        }
    }

    fn hline(&mut self, x0: i64, x1: i64, y: i64, color: Rgb<u8>) {
        self.fill(x0, y, x1, y, color);
    }

    fn vline(&mut self, x: i64, y0: i64, y1: i64, color: Rgb<u8>) {
        self.fill(x, y0, x, y1, color);
    }

    fn frame(&mut self, r: Rect, color: Rgb<u8>) {
        self.hline(r.left, r.right, r.top, color);
        self.hline(r.left, r.right, r.bottom, color);
        self.vline(r.left, r.top, r.bottom, color);
        self.vline(r.right, r.top, r.bottom, color);
    }

    /// Bresenham's line with a 2x2 brush.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb<u8>) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.fill(x, y, x + 1, y + 1, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// ASCII text with its top-left corner at `(x, y)`, each font pixel
    /// drawn as a `scale` x `scale` block; other characters show as `?`.
    fn text(&mut self, x: i64, y: i64, text: &str, color: Rgb<u8>, scale: i64) {
        for (i, c) in text.chars().enumerate() {
            let code = if c.is_ascii() {
                c as usize
            } else {
                '?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            let cx = x + i as i64 * 8 * scale;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        let px = cx + col * scale;
                        let py = y + row as i64 * scale;
                        self.fill(px, py, px + scale - 1, py + scale - 1, color);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(axis: &Axis) -> Vec<f64> {
        axis.ticks().collect()
    }

    #[test]
    fn axes_round_out_to_nice_steps() {
        let axis = Axis::new(0.37, 6.9, false);
        assert_eq!((axis.lo, axis.hi, axis.step), (0.0, 7.0, 1.0));
        assert_eq!(ticks(&axis).len(), 8);
        let axis = Axis::new(0.4, 0.95, false);
        assert_eq!(axis.step, 0.1);
        assert_eq!(axis.label(0.30000000000000004), "0.3");
    }

    #[test]
    fn constant_and_single_values_get_a_range() {
        let axis = Axis::new(2.3, 2.3, false);
        assert!(axis.lo < 2.3 && axis.hi > 2.3);
        let axis = Axis::new(0.0, 0.0, false);
        assert_eq!(axis.lo, 0.0, "non-negative data keeps a non-negative axis");
        assert!(axis.hi > 0.0);
        assert!(axis.fraction(0.0).is_finite());
        let epochs = Axis::new(0.0, 1.0, true);
        assert_eq!(ticks(&epochs), vec![0.0, 1.0]);
        assert_eq!(epochs.label(1.0), "1");
    }

    #[test]
    fn labels_avoid_negative_zero_and_switch_to_exponents() {
        let axis = Axis::new(-1.0, 1.0, false);
        assert!(ticks(&axis).iter().all(|&t| axis.label(t) != "-0.0"));
        let big = Axis::new(0.0, 3e7, false);
        assert_eq!(big.label(2e7), "2.0e7");
    }
}
