//! The preprocessing recipes of the published MobileNet v1 weights.
//!
//! A network is only as good as the match between the pixels it sees and the
//! pixels it was trained and evaluated on: a different crop, resize filter
//! or normalisation costs accuracy silently. So each recipe here follows its
//! reference implementation operation for operation, in the same arithmetic,
//! and the TF recipe is checked byte for byte against `shared/refs/inputs/`.

use std::fmt;
use std::str::FromStr;

use super::decode::RgbImage;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The largest output side we accept: far above any MobileNet resolution,
/// small enough that the output buffer stays reasonable.
pub const MAX_SIZE: usize = 8192;

/// ImageNet channel means used by torchvision (RGB).
pub const TORCH_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations used by torchvision (RGB).
pub const TORCH_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Preprocessing recipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Preprocess {
    /// TF-slim evaluation, used by the TFLite, TF.js and Keras MobileNets:
    /// central crop of 87.5 % (`tf.image.central_crop`, see
    /// [`tf_central_crop_box`]), bilinear resize to `S x S` with half-pixel
    /// centres and no antialiasing computed in f64 exactly as
    /// `shared/refs/README.md` gives it, rounding to u8
    /// (`clamp(floor(v + 0.5), 0, 255)`), then `q as f32 / 127.5 - 1` in f32.
    #[default]
    Tf,
    /// torchvision's ImageNet evaluation on a PIL image:
    /// `Resize(round(S * 256 / 224))` (256 for S = 224) of the shorter side,
    /// `CenterCrop(S)`, `ToTensor()`, `Normalize(TORCH_MEAN, TORCH_STD)`.
    ///
    /// The resize is Pillow's `Image.resize(.., BILINEAR)`, which is what
    /// torchvision calls for PIL images: an antialiased triangle filter
    /// whose support widens with the downscale factor (a box-like average
    /// when shrinking, plain bilinear when enlarging), applied horizontally
    /// then vertically, with Pillow's 22-bit fixed-point weights and
    /// rounding to u8 after each pass. The long side becomes
    /// `trunc(R * long / short)` and the crop offsets use Python's
    /// round-half-to-even, as torchvision computes them. Only the pixels
    /// that survive the crop are computed, so thin images do not blow up.
    Torch,
}

impl Preprocess {
    /// Every recipe, in the order of [`Preprocess::name`]'s list.
    pub const ALL: [Preprocess; 2] = [Preprocess::Tf, Preprocess::Torch];

    /// The recipe's short name, as accepted by [`FromStr`]: `"tf"`, `"torch"`.
    pub fn name(self) -> &'static str {
        match self {
            Preprocess::Tf => "tf",
            Preprocess::Torch => "torch",
        }
    }
}

impl fmt::Display for Preprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preprocess {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Preprocess::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let known: Vec<&str> = Preprocess::ALL.iter().map(|p| p.name()).collect();
                Error::InvalidConfig(format!(
                    "unknown preprocessing {s:?}; known: {}",
                    known.join(", ")
                ))
            })
    }
}

/// The TF-slim central crop of 87.5 % as `[top, left, height, width]`
/// (the order of the reference JSON's `crop_box_top_left_height_width`):
/// `top = floor((H - H * 0.875) / 2)`, `left` likewise, and the crop is
/// symmetric, `height = H - 2 * top`, `width = W - 2 * left`.
/// A 1x1 image keeps its one pixel.
pub fn tf_central_crop_box(height: usize, width: usize) -> [usize; 4] {
    let offset = |n: usize| {
        let n = n as f64;
        ((n - n * 0.875) / 2.0).floor() as usize
    };
    let (top, left) = (offset(height), offset(width));
    [top, left, height - 2 * top, width - 2 * left]
}

/// The preprocessed uint8 image of the TF recipe, up to and including the
/// rounding step: `size x size x 3`, row-major RGB. This is what the uint8
/// TFLite models take as input (their input quantization maps it to
/// `(q - 128) / 128`).
pub fn preprocess_tf_u8(image: &RgbImage, size: usize) -> Result<Vec<u8>> {
    check_args(image, size)?;
    let mut out = vec![0u8; size * size * 3];
    tf_resize(image, size, |i, q| out[i] = q);
    Ok(out)
}

/// The resized and center-cropped uint8 image of the Torch recipe (what
/// `CenterCrop(Resize(image))` gives as a PIL image): `size x size x 3`.
pub fn preprocess_torch_u8(image: &RgbImage, size: usize) -> Result<Vec<u8>> {
    check_args(image, size)?;
    torch_resize_crop(image, size)
}

/// The float network input, NHWC `[1, size, size, 3]`, for `recipe`.
///
/// ```
/// use mobilenet::image::{preprocess, Preprocess, RgbImage};
///
/// // A 4x3 mid-gray image: the TF recipe maps 128 to 128 / 127.5 - 1.
/// let image = RgbImage::new(4, 3, vec![128; 4 * 3 * 3])?;
/// let input = preprocess(&image, 8, Preprocess::Tf)?;
/// assert_eq!(input.shape(), &[1, 8, 8, 3]);
/// assert!(input.data().iter().all(|&x| x == 128.0 / 127.5 - 1.0));
/// # Ok::<(), mobilenet::Error>(())
/// ```
pub fn preprocess(image: &RgbImage, size: usize, recipe: Preprocess) -> Result<Tensor> {
    check_args(image, size)?;
    let mut data = vec![0f32; size * size * 3];
    preprocess_into(image, size, recipe, &mut data)?;
    Tensor::new(vec![1, size, size, 3], data)
}

/// Writes one preprocessed image (`size x size x 3`, HWC) into `out`, which
/// must hold exactly `size * size * 3` values: a batch is filled image by
/// image without allocating a tensor per image. The TF recipe allocates
/// nothing; the Torch recipe needs a small scratch buffer for its two-pass
/// resize.
pub fn preprocess_into(
    image: &RgbImage,
    size: usize,
    recipe: Preprocess,
    out: &mut [f32],
) -> Result<()> {
    check_args(image, size)?;
    let needed = size * size * 3;
    if out.len() != needed {
        return Err(Error::Shape(format!(
            "output buffer for a {size}x{size}x3 image needs {needed} values, got {}",
            out.len()
        )));
    }
    match recipe {
        Preprocess::Tf => tf_resize(image, size, |i, q| out[i] = f32::from(q) / 127.5 - 1.0),
        Preprocess::Torch => {
            let q = torch_resize_crop(image, size)?;
            for (i, (o, &q)) in out.iter_mut().zip(&q).enumerate() {
                let c = i % 3;
                *o = (f32::from(q) / 255.0 - TORCH_MEAN[c]) / TORCH_STD[c];
            }
        }
    }
    Ok(())
}

fn check_args(image: &RgbImage, size: usize) -> Result<()> {
    image.validate()?;
    if size == 0 || size > MAX_SIZE {
        return Err(Error::InvalidConfig(format!(
            "preprocessing size must be in 1..={MAX_SIZE}, got {size}"
        )));
    }
    Ok(())
}

/// One output coordinate of the TF bilinear resize: the two source indices
/// and the weight of the second, exactly as the reference computes them.
#[inline]
fn tf_tap(o: usize, scale: f64, n: usize) -> (usize, usize, f64) {
    let src = (o as f64 + 0.5) * scale - 0.5;
    let fl = src.floor();
    let lo = fl.max(0.0) as usize;
    // src >= -0.5, so ceil(src) >= 0 (a negative zero casts to 0).
    let hi = (src.ceil() as usize).min(n - 1);
    (lo, hi, src - fl)
}

/// Central crop + bilinear resize + rounding of the TF recipe; calls
/// `put(index, q)` for each of the `size * size * 3` outputs in order.
fn tf_resize(image: &RgbImage, size: usize, mut put: impl FnMut(usize, u8)) {
    let [top, left, crop_h, crop_w] = tf_central_crop_box(image.height, image.width);
    let scale_y = crop_h as f64 / size as f64;
    let scale_x = crop_w as f64 / size as f64;
    let row = |y: usize| {
        let start = ((top + y) * image.width + left) * 3;
        &image.data[start..start + crop_w * 3]
    };
    for oy in 0..size {
        let (ylo, yhi, ly) = tf_tap(oy, scale_y, crop_h);
        let (upper, lower) = (row(ylo), row(yhi));
        for ox in 0..size {
            let (xlo, xhi, lx) = tf_tap(ox, scale_x, crop_w);
            for c in 0..3 {
                let tl = f64::from(upper[xlo * 3 + c]);
                let tr = f64::from(upper[xhi * 3 + c]);
                let bl = f64::from(lower[xlo * 3 + c]);
                let br = f64::from(lower[xhi * 3 + c]);
                let t = tl + (tr - tl) * lx;
                let b = bl + (br - bl) * lx;
                let v = t + (b - t) * ly;
                let q = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
                put((oy * size + ox) * 3 + c, q);
            }
        }
    }
}

/// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's resampling weights for the outputs `first..first + count` of a
/// resize from `in_size` to `out_size` samples (`precompute_coeffs` and
/// `normalize_coeffs_8bpc` of Pillow's `Resample.c`, bilinear filter).
struct Coeffs {
    /// Per output: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// Per output, `ksize` fixed-point weights (unused ones zero).
    weights: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    fn new(in_size: usize, out_size: usize, first: usize, count: usize) -> Coeffs {
        // Pillow takes the box edges as C floats: `(in1 - in0) / outSize`.
        let scale = f64::from(in_size as f32) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // bilinear support 1.0, widened
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut bounds = Vec::with_capacity(count);
        let mut weights = vec![0i32; count * ksize];
        let mut k = vec![0f64; ksize];
        for (j, w_out) in weights.chunks_exact_mut(ksize).enumerate() {
            let center = ((first + j) as f64 + 0.5) * scale;
            // C's (int) truncates; negatives clamp to 0 either way.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for (x, kx) in k[..n].iter_mut().enumerate() {
                let d = ((x + xmin) as f64 - center + 0.5) * ss;
                let w = (1.0 - d.abs()).max(0.0);
                *kx = w;
                ww += w;
            }
            for (kx, wx) in k[..n].iter().zip(w_out.iter_mut()) {
                let kx = if ww != 0.0 { kx / ww } else { *kx };
                let scaled = kx * f64::from(1u32 << PRECISION_BITS);
                *wx = if kx < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            bounds.push((xmin, n));
        }
        Coeffs {
            bounds,
            weights,
            ksize,
        }
    }

    /// Input span touched by all outputs: `first..last`.
    fn span(&self) -> (usize, usize) {
        let first = self.bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let last = self.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
        (first, last)
    }
}

/// Pillow's `clip8`: fixed-point accumulator to u8.
#[inline]
fn clip8(acc: i32) -> u8 {
    if acc >= (1 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Python's `int(round(x / 2.0))` for a non-negative integer `x`
/// (round half to even).
fn half_round_even(x: usize) -> usize {
    let lo = x / 2;
    if x % 2 == 1 && lo % 2 == 1 {
        lo + 1
    } else {
        lo
    }
}

/// torchvision `CenterCrop(S)(Resize(R)(pil_image))` as u8, computing only
/// the cropped window of the resized image.
fn torch_resize_crop(image: &RgbImage, size: usize) -> Result<Vec<u8>> {
    let (w, h) = (image.width, image.height);
    // Shorter side to R = round(S * 256 / 224); 8S/7 is never a half.
    let target = (size * 256 + 112) / 224;
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // Python: int(R * long / short), integer product then true division.
    let new_long = ((target as u64 * long as u64) as f64 / short as f64) as usize;
    let (new_w, new_h) = if w <= h {
        (target, new_long)
    } else {
        (new_long, target)
    };
    if new_w < size || new_h < size {
        return Err(Error::Image(format!(
            "torch preprocessing: resized image {new_w}x{new_h} is smaller than the crop {size}"
        )));
    }
    let crop_top = half_round_even(new_h - size);
    let crop_left = half_round_even(new_w - size);

    let horiz = Coeffs::new(w, new_w, crop_left, size);
    let vert = Coeffs::new(h, new_h, crop_top, size);
    let (y_first, y_last) = vert.span();
    let rows = y_last - y_first;
    let half = 1i32 << (PRECISION_BITS - 1);

    // Horizontal pass over the input rows the vertical pass needs.
    let mut temp = vec![0u8; rows * size * 3];
    for (r, temp_row) in temp.chunks_exact_mut(size * 3).enumerate() {
        let src = &image.data[(y_first + r) * w * 3..(y_first + r + 1) * w * 3];
        for (ox, &(xmin, n)) in horiz.bounds.iter().enumerate() {
            let k = &horiz.weights[ox * horiz.ksize..ox * horiz.ksize + n];
            let mut acc = [half; 3];
            for (x, &kx) in k.iter().enumerate() {
                let p = &src[(xmin + x) * 3..(xmin + x) * 3 + 3];
                for c in 0..3 {
                    acc[c] += i32::from(p[c]) * kx;
                }
            }
            for c in 0..3 {
                temp_row[ox * 3 + c] = clip8(acc[c]);
            }
        }
    }

    // Vertical pass.
    let mut out = vec![0u8; size * size * 3];
    for (oy, out_row) in out.chunks_exact_mut(size * 3).enumerate() {
        let (ymin, n) = vert.bounds[oy];
        let k = &vert.weights[oy * vert.ksize..oy * vert.ksize + n];
        for (i, o) in out_row.iter_mut().enumerate() {
            let mut acc = half;
            for (y, &ky) in k.iter().enumerate() {
                acc += i32::from(temp[(ymin - y_first + y) * size * 3 + i]) * ky;
            }
            *o = clip8(acc);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_box_matches_references() {
        assert_eq!(tf_central_crop_box(300, 451), [18, 28, 264, 395]);
        assert_eq!(tf_central_crop_box(341, 512), [21, 32, 299, 448]);
        assert_eq!(tf_central_crop_box(600, 512), [37, 32, 526, 448]);
        assert_eq!(tf_central_crop_box(1, 1), [0, 0, 1, 1]);
    }

    #[test]
    fn python_round() {
        let got: Vec<usize> = (0..8).map(half_round_even).collect();
        // round(0), round(.5), round(1), round(1.5), round(2), round(2.5), ...
        assert_eq!(got, [0, 0, 1, 2, 2, 2, 3, 4]);
    }
}
