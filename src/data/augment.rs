//! Training augmentation and evaluation resizing: a sample at any size in,
//! a normalised `size x size x 3` (HWC) float image out.
//!
//! The random choices for a sample come from its own ChaCha8 stream keyed by
//! (seed, epoch, sample index), so the same sample in the same epoch gets
//! the same crop and flip whichever thread handles it and whenever.

use std::fmt;
use std::str::FromStr;

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Rgb};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::RngCore;

use super::rng::{self, Purpose};
use crate::error::{Error, Result};
use crate::image::{
    MAX_SIZE, Preprocess, RgbImage, TORCH_MEAN, TORCH_STD, preprocess_tf_u8, preprocess_torch_u8,
};

/// Fashion-MNIST's pixel mean (training set, pixels scaled to `[0, 1]`).
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
/// Fashion-MNIST's pixel standard deviation (training set, `[0, 1]` scale).
pub const FASHION_MNIST_STD: f32 = 0.3530;

/// The largest padding [`Crop::Pad`] accepts.
const MAX_PAD: usize = 1024;

/// How 8-bit pixels become network inputs.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Normalize {
    /// `q / 127.5 - 1`, into `[-1, 1]`: what the TF-trained MobileNets use.
    #[default]
    Tf,
    /// `(q / 255 - mean) / std` with torchvision's ImageNet statistics
    /// ([`TORCH_MEAN`], [`TORCH_STD`]).
    Torch,
    /// `(q / 255 - mean[c]) / std[c]` with a dataset's own statistics, e.g.
    /// [`Normalize::fashion_mnist`].
    MeanStd {
        /// Per channel (RGB) mean of the `[0, 1]` pixels.
        mean: [f32; 3],
        /// Per channel standard deviation, positive.
        std: [f32; 3],
    },
}

impl Normalize {
    /// Fashion-MNIST's statistics on all three channels (the gray value is
    /// replicated).
    pub fn fashion_mnist() -> Normalize {
        Normalize::MeanStd {
            mean: [FASHION_MNIST_MEAN; 3],
            std: [FASHION_MNIST_STD; 3],
        }
    }

    /// The normalised value of pixel value `q` in channel `c` (0, 1, 2).
    ///
    /// ```
    /// use mobilenet::data::Normalize;
    ///
    /// assert_eq!(Normalize::Tf.value(255, 0), 1.0);
    /// assert_eq!(Normalize::Tf.value(0, 2), -1.0);
    /// let gray = Normalize::fashion_mnist().value(0, 1);
    /// assert!((gray - (-0.2860 / 0.3530)).abs() < 1e-6);
    /// ```
    #[inline]
    pub fn value(&self, q: u8, c: usize) -> f32 {
        match self {
            Normalize::Tf => f32::from(q) / 127.5 - 1.0,
            Normalize::Torch => (f32::from(q) / 255.0 - TORCH_MEAN[c]) / TORCH_STD[c],
            Normalize::MeanStd { mean, std } => (f32::from(q) / 255.0 - mean[c]) / std[c],
        }
    }

    fn validate(&self) -> Result<()> {
        if let Normalize::MeanStd { mean, std } = self
            && (mean.iter().any(|m| !m.is_finite())
                || std.iter().any(|s| !(s.is_finite() && *s > 0.0)))
        {
            return Err(Error::InvalidConfig(format!(
                "normalization needs finite means and positive standard deviations, got mean {mean:?}, std {std:?}"
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Normalize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Normalize::Tf => f.write_str("tf"),
            Normalize::Torch => f.write_str("torch"),
            Normalize::MeanStd { mean, std } => write!(f, "mean {mean:?} std {std:?}"),
        }
    }
}

impl FromStr for Normalize {
    type Err = Error;

    /// `"tf"`, `"torch"` or `"fashion-mnist"` (case-insensitive).
    fn from_str(s: &str) -> Result<Normalize> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tf" => Ok(Normalize::Tf),
            "torch" => Ok(Normalize::Torch),
            "fashion-mnist" | "fashion_mnist" => Ok(Normalize::fashion_mnist()),
            _ => Err(Error::InvalidConfig(format!(
                "unknown normalization {s:?}; known: tf, torch, fashion-mnist"
            ))),
        }
    }
}

/// How a sample is cut and scaled to `size x size`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Crop {
    /// The whole image resized to `size x size` (aspect ratio not kept),
    /// bilinear with antialiasing when shrinking. Deterministic: evaluation.
    Resize,
    /// The evaluation recipe of the published weights
    /// ([`Preprocess::Tf`]: 87.5 % central crop then resize;
    /// [`Preprocess::Torch`]: shorter side to `size * 256 / 224` then
    /// central crop), its pixels then normalised by [`Augment::normalize`].
    /// Deterministic: evaluation.
    Center(Preprocess),
    /// Inception's random-resized crop (torchvision `RandomResizedCrop`): a
    /// window of a random fraction `scale` of the area and aspect ratio in
    /// `ratio` (log-uniform), placed at random and resized to `size`. After
    /// ten failed draws, the central crop of the clamped ratio.
    RandomResized {
        /// Fraction of the image area, `0 < lo <= hi <= 1`.
        scale: (f64, f64),
        /// Width / height, `0 < lo <= hi`.
        ratio: (f64, f64),
    },
    /// Zero padding and a random `size x size` window (torchvision
    /// `RandomCrop(size, padding=pad)`), for small images such as
    /// Fashion-MNIST. An image larger than `size` on a side is first
    /// resized to `size x size`; a smaller one is centred on the zero canvas
    /// without resampling, so `pad = 0` is a deterministic centred padding
    /// (28 -> 32 for evaluation).
    Pad {
        /// Zero pixels added on each side, at most 1024.
        pad: usize,
    },
}

impl Crop {
    /// The Inception / torchvision defaults: scale (0.08, 1), ratio
    /// (3/4, 4/3).
    pub const INCEPTION: Crop = Crop::RandomResized {
        scale: (0.08, 1.0),
        ratio: (3.0 / 4.0, 4.0 / 3.0),
    };
}

/// Random erasing (Zhong et al. 2017, "Random Erasing Data Augmentation";
/// torchvision `RandomErasing`): with probability `probability`, a rectangle
/// of a random fraction `scale` of the image area and aspect ratio in
/// `ratio` (log-uniform) is filled with random pixel values. It keeps a
/// network from relying on any one part of an object, which is what takes
/// small-image classifiers past the plateau that crops and flips reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomErase {
    /// Chance that a sample is erased at all, in `[0, 1]`.
    pub probability: f64,
    /// Fraction of the image area erased, `0 < lo <= hi < 1`.
    pub scale: (f64, f64),
    /// Height / width of the rectangle, `0 < lo <= hi`.
    pub ratio: (f64, f64),
}

impl RandomErase {
    /// The paper's (and torchvision's) ranges, area 2-40 %, aspect 0.3-3.3,
    /// applied with `probability`.
    pub fn with_probability(probability: f64) -> RandomErase {
        RandomErase {
            probability,
            scale: (0.02, 0.4),
            ratio: (0.3, 1.0 / 0.3),
        }
    }

    fn validate(&self) -> Result<()> {
        let (s0, s1) = self.scale;
        let (r0, r1) = self.ratio;
        let probability_ok = (0.0..=1.0).contains(&self.probability);
        let scale_ok = s0 > 0.0 && s0 <= s1 && s1 < 1.0;
        let ratio_ok = r0 > 0.0 && r0 <= r1 && r1.is_finite();
        if !(probability_ok && scale_ok && ratio_ok) {
            return Err(Error::InvalidConfig(format!(
                "random erasing needs a probability in [0, 1], 0 < scale lo <= hi < 1 and 0 < ratio lo <= hi, got {self:?}"
            )));
        }
        Ok(())
    }

    /// Erases one rectangle of the `size x size` HWC image `pixels` with
    /// probability [`RandomErase::probability`]. The noise is gray (equal
    /// R, G and B) when the image is gray, so that grayscale data such as
    /// Fashion-MNIST stays grayscale.
    fn apply(&self, pixels: &mut [u8], size: usize, rng: &mut ChaCha8Rng) {
        if rng::uniform(rng, 0.0, 1.0) >= self.probability {
            return;
        }
        let area = (size * size) as f64;
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng::uniform(rng, self.scale.0, self.scale.1);
            let aspect = rng::uniform(rng, log_lo, log_hi).exp();
            let h = (target * aspect).sqrt().round() as usize;
            let w = (target / aspect).sqrt().round() as usize;
            if h == 0 || w == 0 || h >= size || w >= size {
                continue;
            }
            let top = rng::below(rng, size - h + 1);
            let left = rng::below(rng, size - w + 1);
            let gray = pixels.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]);
            for row in pixels.chunks_exact_mut(size * 3).skip(top).take(h) {
                for pixel in row[left * 3..(left + w) * 3].chunks_exact_mut(3) {
                    if gray {
                        pixel.fill(rng.next_u32() as u8);
                    } else {
                        pixel.iter_mut().for_each(|v| *v = rng.next_u32() as u8);
                    }
                }
            }
            return;
        }
    }
}

/// A sample's path from stored image to network input: crop/resize to
/// `size`, optional random horizontal flip, optional random erasing,
/// normalisation.
///
/// ```
/// use mobilenet::data::{Augment, Normalize};
/// use mobilenet::image::RgbImage;
///
/// let augment = Augment::random_resized(224, Normalize::Torch); // ImageNet training
/// let image = RgbImage::new(300, 200, vec![90; 300 * 200 * 3])?;
/// let mut out = vec![0.0; 224 * 224 * 3];
/// augment.apply(&image, 7, 0, 42, &mut out)?; // seed 7, epoch 0, sample 42
/// let mut again = vec![0.0; out.len()];
/// augment.apply(&image, 7, 0, 42, &mut again)?;
/// assert_eq!(out, again); // a function of (seed, epoch, index) only
/// # Ok::<(), mobilenet::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// Output side, `1..=MAX_SIZE`.
    pub size: usize,
    /// How the image is cut and scaled.
    pub crop: Crop,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
    /// Erase a random rectangle after the crop and flip.
    pub erase: Option<RandomErase>,
    /// Pixel values to network inputs.
    pub normalize: Normalize,
}

impl Augment {
    /// ImageNet-style training: [`Crop::INCEPTION`] and random flips.
    pub fn random_resized(size: usize, normalize: Normalize) -> Augment {
        Augment {
            size,
            crop: Crop::INCEPTION,
            flip: true,
            erase: None,
            normalize,
        }
    }

    /// Small-image training: [`Crop::Pad`] and random flips. For
    /// evaluation use `pad = 0` and no flip ([`Augment::eval_pad`]).
    pub fn pad_crop(size: usize, pad: usize, normalize: Normalize) -> Augment {
        Augment {
            size,
            crop: Crop::Pad { pad },
            flip: true,
            erase: None,
            normalize,
        }
    }

    /// Evaluation of small images: centred on a `size x size` zero canvas
    /// (shrunk first if larger), no randomness.
    pub fn eval_pad(size: usize, normalize: Normalize) -> Augment {
        Augment {
            size,
            crop: Crop::Pad { pad: 0 },
            flip: false,
            erase: None,
            normalize,
        }
    }

    /// Evaluation by plain resizing ([`Crop::Resize`]), no randomness.
    pub fn eval_resize(size: usize, normalize: Normalize) -> Augment {
        Augment {
            size,
            crop: Crop::Resize,
            flip: false,
            erase: None,
            normalize,
        }
    }

    /// Whether the output depends on the random stream (a random crop,
    /// flip or erasing), i.e. differs between epochs.
    pub fn is_random(&self) -> bool {
        self.flip
            || self.erase.is_some_and(|e| e.probability > 0.0)
            || matches!(
                self.crop,
                Crop::RandomResized { .. } | Crop::Pad { pad: 1.. }
            )
    }

    /// Checks the parameters; [`Augment::apply`] and the loader call it.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(Error::InvalidConfig(format!(
                "augmentation output size must be in 1..={MAX_SIZE}, got {}",
                self.size
            )));
        }
        match self.crop {
            Crop::RandomResized { scale, ratio } => {
                let (s0, s1) = scale;
                if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
                    return Err(Error::InvalidConfig(format!(
                        "random-resized crop scale must satisfy 0 < lo <= hi <= 1, got ({s0}, {s1})"
                    )));
                }
                let (r0, r1) = ratio;
                if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
                    return Err(Error::InvalidConfig(format!(
                        "random-resized crop ratio must satisfy 0 < lo <= hi, finite, got ({r0}, {r1})"
                    )));
                }
            }
            Crop::Pad { pad } if pad > MAX_PAD => {
                return Err(Error::InvalidConfig(format!(
                    "crop padding must be at most {MAX_PAD}, got {pad}"
                )));
            }
            _ => {}
        }
        if let Some(erase) = &self.erase {
            erase.validate()?;
        }
        self.normalize.validate()
    }

    /// The augmented image of sample `index` in `epoch` under `seed`, as
    /// normalised HWC floats written to `out` (`size * size * 3` values).
    pub fn apply(
        &self,
        image: &RgbImage,
        seed: u64,
        epoch: u64,
        index: u64,
        out: &mut [f32],
    ) -> Result<()> {
        let needed = self.size * self.size * 3;
        if out.len() != needed {
            return Err(Error::Shape(format!(
                "output buffer for a {0}x{0}x3 image needs {needed} values, got {1}",
                self.size,
                out.len()
            )));
        }
        let pixels = self.apply_u8(image, seed, epoch, index)?;
        for (i, (o, &q)) in out.iter_mut().zip(&pixels).enumerate() {
            *o = self.normalize.value(q, i % 3);
        }
        Ok(())
    }

    /// The augmented pixels before normalisation (`size * size * 3` bytes,
    /// HWC): what [`Augment::apply`] normalises, useful to look at.
    pub fn apply_u8(&self, image: &RgbImage, seed: u64, epoch: u64, index: u64) -> Result<Vec<u8>> {
        self.validate()?;
        image.validate()?;
        let mut rng = rng::stream(seed, Purpose::Augment, epoch, index);
        let size = self.size;
        let mut pixels = match self.crop {
            Crop::Resize => resize_box(image, [0, 0, image.width, image.height], size)?,
            Crop::Center(Preprocess::Tf) => preprocess_tf_u8(image, size)?,
            Crop::Center(Preprocess::Torch) => preprocess_torch_u8(image, size)?,
            Crop::RandomResized { scale, ratio } => {
                let window = random_resized_box(image.width, image.height, scale, ratio, &mut rng);
                resize_box(image, window, size)?
            }
            Crop::Pad { pad } => pad_crop(image, size, pad, &mut rng)?,
        };
        if self.flip && rng::coin(&mut rng) {
            for row in pixels.chunks_exact_mut(size * 3) {
                flip_row(row);
            }
        }
        if let Some(erase) = &self.erase {
            erase.apply(&mut pixels, size, &mut rng);
        }
        Ok(pixels)
    }
}

/// Reverses the pixel order of one RGB row.
fn flip_row(row: &mut [u8]) {
    let n = row.len() / 3;
    for x in 0..n / 2 {
        let (a, b) = (x * 3, (n - 1 - x) * 3);
        for c in 0..3 {
            row.swap(a + c, b + c);
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`: `[left, top, width,
/// height]` of the window, with its draws in its order.
fn random_resized_box(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut ChaCha8Rng,
) -> [usize; 4] {
    let area = (width * height) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng::uniform(rng, scale.0, scale.1);
        let aspect = rng::uniform(rng, log_lo, log_hi).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng::below(rng, height - h + 1);
            let left = rng::below(rng, width - w + 1);
            return [left, top, w, h];
        }
    }
    // Fallback: the central crop of the image, its aspect clamped to ratio.
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (
            width,
            ((width as f64 / ratio.0).round() as usize).clamp(1, height),
        )
    } else if in_ratio > ratio.1 {
        (
            ((height as f64 * ratio.1).round() as usize).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    [(width - w) / 2, (height - h) / 2, w, h]
}

/// The window `[left, top, width, height]` of `image` resized to
/// `size x size`: bilinear (triangle filter), widened when shrinking so that
/// downscaling averages instead of aliasing.
fn resize_box(image: &RgbImage, window: [usize; 4], size: usize) -> Result<Vec<u8>> {
    let [left, top, w, h] = window;
    if (left, top, w, h, size, size) == (0, 0, image.width, image.height, image.width, image.height)
    {
        return Ok(image.data.clone());
    }
    let dim = |v: usize| {
        u32::try_from(v).map_err(|_| Error::Image(format!("image side {v} is too large")))
    };
    let buffer: ImageBuffer<Rgb<u8>, &[u8]> =
        ImageBuffer::from_raw(dim(image.width)?, dim(image.height)?, &image.data[..])
            .ok_or_else(|| Error::Shape("image data does not match its size".to_string()))?;
    let window = imageops::crop_imm(&buffer, dim(left)?, dim(top)?, dim(w)?, dim(h)?);
    let side = dim(size)?;
    Ok(imageops::resize(&*window, side, side, FilterType::Triangle).into_raw())
}

/// [`Crop::Pad`]: the image (shrunk to `size` if larger) centred on a zero
/// canvas of side `size + 2 * pad`, and a random `size x size` window of it.
fn pad_crop(image: &RgbImage, size: usize, pad: usize, rng: &mut ChaCha8Rng) -> Result<Vec<u8>> {
    let shrunk;
    let image = if image.width > size || image.height > size {
        shrunk = RgbImage::new(
            size,
            size,
            resize_box(image, [0, 0, image.width, image.height], size)?,
        )?;
        &shrunk
    } else {
        image
    };
    // Window origin on the canvas, then the image origin within the window.
    let top = rng::below(rng, 2 * pad + 1);
    let left = rng::below(rng, 2 * pad + 1);
    let y0 = (pad + (size - image.height) / 2) as isize - top as isize;
    let x0 = (pad + (size - image.width) / 2) as isize - left as isize;

    let mut out = vec![0u8; size * size * 3];
    // Output columns covered by the image, and where they start in it.
    let x_from = x0.max(0) as usize;
    let x_to = (x0 + image.width as isize).clamp(0, size as isize) as usize;
    if x_from >= x_to {
        return Ok(out);
    }
    let src_x = (x_from as isize - x0) as usize;
    for (y, row) in out.chunks_exact_mut(size * 3).enumerate() {
        let sy = y as isize - y0;
        if sy < 0 || sy >= image.height as isize {
            continue;
        }
        let start = (sy as usize * image.width + src_x) * 3;
        row[x_from * 3..x_to * 3].copy_from_slice(&image.data[start..start + (x_to - x_from) * 3]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(width: usize, height: usize) -> RgbImage {
        let data = (0..width * height)
            .flat_map(|i| [(i % 251) as u8, 7, 9])
            .collect();
        RgbImage::new(width, height, data).unwrap()
    }

    #[test]
    fn pad_zero_centres_small_images() {
        let image = numbered(2, 2);
        let mut rng = rng::stream(0, Purpose::Augment, 0, 0);
        let out = pad_crop(&image, 4, 0, &mut rng).unwrap();
        // Row 1, column 1 of the 4x4 output is pixel (0, 0).
        assert_eq!(&out[(4 + 1) * 3..(4 + 1) * 3 + 3], &[0, 7, 9]);
        assert_eq!(&out[..3], &[0, 0, 0]);
        let kept = out.chunks_exact(3).filter(|p| p[1] == 7).count();
        assert_eq!(kept, 4);
    }

    #[test]
    fn pad_crop_shifts_within_the_padding() {
        let image = numbered(8, 8);
        for index in 0..50 {
            let mut rng = rng::stream(1, Purpose::Augment, 0, index);
            let out = pad_crop(&image, 8, 2, &mut rng).unwrap();
            let kept = out.chunks_exact(3).filter(|p| p[1] == 7).count();
            // At most 2 rows and 2 columns are lost.
            assert!((36..=64).contains(&kept), "{kept}");
        }
    }

    #[test]
    fn random_resized_box_fits() {
        let mut rng = rng::stream(0, Purpose::Augment, 0, 0);
        for (w, h) in [(1, 1), (3, 100), (100, 3), (40, 30), (500, 375)] {
            for _ in 0..200 {
                let [left, top, bw, bh] =
                    random_resized_box(w, h, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
                assert!(bw >= 1 && bh >= 1 && left + bw <= w && top + bh <= h);
            }
        }
    }

    #[test]
    fn random_erase_fills_one_rectangle_with_gray_noise_on_gray_images() {
        let erase = RandomErase::with_probability(1.0);
        let size = 28;
        let mut erased_any = 0;
        for index in 0..100 {
            let mut pixels = vec![200u8; size * size * 3];
            let mut rng = rng::stream(3, Purpose::Augment, 0, index);
            erase.apply(&mut pixels, size, &mut rng);
            assert!(pixels.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
            // The changed pixels lie in one rectangle of at most 40 % of the image.
            let changed: Vec<(usize, usize)> = (0..size * size)
                .filter(|&i| pixels[i * 3] != 200)
                .map(|i| (i / size, i % size))
                .collect();
            if changed.is_empty() {
                continue;
            }
            erased_any += 1;
            let (y0, y1) = (
                changed.iter().map(|c| c.0).min().unwrap(),
                changed.iter().map(|c| c.0).max().unwrap(),
            );
            let (x0, x1) = (
                changed.iter().map(|c| c.1).min().unwrap(),
                changed.iter().map(|c| c.1).max().unwrap(),
            );
            let box_area = (y1 - y0 + 1) * (x1 - x0 + 1);
            assert!(
                box_area as f64 <= 0.4 * (size * size) as f64 + 2.0 * size as f64,
                "{box_area}"
            );
            assert!(y1 - y0 + 1 < size && x1 - x0 + 1 < size);
        }
        assert!(erased_any > 90, "{erased_any}");
    }

    #[test]
    fn random_erase_respects_its_probability_and_colours() {
        let erase = RandomErase::with_probability(0.5);
        let size = 16;
        let base: Vec<u8> = (0..size * size).flat_map(|_| [10u8, 20, 30]).collect();
        let mut erased = 0;
        for index in 0..400 {
            let mut pixels = base.clone();
            let mut rng = rng::stream(4, Purpose::Augment, 0, index);
            erase.apply(&mut pixels, size, &mut rng);
            if pixels != base {
                erased += 1;
                // Colour images get independent channel noise.
                assert!(
                    pixels
                        .chunks_exact(3)
                        .any(|p| p != [10, 20, 30] && (p[0] != p[1] || p[1] != p[2]))
                );
            }
        }
        assert!((150..=250).contains(&erased), "{erased}");
        let never = RandomErase::with_probability(0.0);
        let mut pixels = base.clone();
        never.apply(
            &mut pixels,
            size,
            &mut rng::stream(4, Purpose::Augment, 0, 0),
        );
        assert_eq!(pixels, base);
        assert!(
            RandomErase {
                scale: (0.5, 1.0),
                ..never
            }
            .validate()
            .is_err()
        );
        assert!(RandomErase::with_probability(1.5).validate().is_err());
    }

    #[test]
    fn flip_row_reverses_pixels() {
        let mut row = vec![1, 2, 3, 4, 5, 6, 7, 8, 9];
        flip_row(&mut row);
        assert_eq!(row, [7, 8, 9, 4, 5, 6, 1, 2, 3]);
    }
}
