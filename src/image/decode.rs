//! Decoding JPEG, PNG and BMP into 8-bit RGB, the way Pillow's
//! `Image.open(path).convert('RGB')` does, because that is how the reference
//! inputs in `shared/refs/` were made.
//!
//! Untrusted bytes are safe to pass in: the format is sniffed from the
//! content, the size in the header is checked against [`MAX_PIXELS`] before
//! any pixel buffer is allocated, and every decoder failure (truncated or
//! corrupt data, unsupported variants) comes back as [`Error::Image`].

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::error::{Error, Result};

/// The largest image we decode, in pixels (100 megapixels). Checked from the
/// header, before decoding.
pub const MAX_PIXELS: u64 = 100_000_000;

/// The most memory the decoder may allocate: the worst case output buffer for
/// [`MAX_PIXELS`] (16-bit RGBA, 8 bytes a pixel) plus some slack.
const MAX_DECODER_ALLOC: u64 = MAX_PIXELS * 8 + (64 << 20);

/// An 8-bit RGB image, row-major `height x width x 3`, channels innermost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `height * width * 3` bytes: R, G, B of pixel (0, 0), then (0, 1), ...
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wraps `data` (`height * width * 3` bytes, row-major RGB), checking
    /// the length and that the image is not empty.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        let image = RgbImage {
            width,
            height,
            data,
        };
        image.validate()?;
        Ok(image)
    }

    /// The pixel at row `y`, column `x`. Panics when out of range.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(x < self.width && y < self.height, "pixel out of range");
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Checks the invariants the preprocessing relies on: a non-empty image
    /// whose data length is `width * height * 3`. The fields are public, so
    /// a hand-made value may break them.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::Image(format!(
                "image has zero size ({}x{})",
                self.width, self.height
            )));
        }
        let expected = self
            .width
            .checked_mul(self.height)
            .and_then(|n| n.checked_mul(3));
        if expected != Some(self.data.len()) {
            return Err(Error::Shape(format!(
                "a {}x{} RGB image needs {} bytes, got {}",
                self.width,
                self.height,
                expected.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// Decodes JPEG, PNG or BMP bytes into 8-bit RGB.
///
/// The format is sniffed from the content, never taken from a file name.
/// Grayscale, grayscale + alpha, RGBA and 16-bit images become 8-bit RGB the
/// way Pillow's `convert('RGB')` makes them: gray is copied to all three
/// channels, alpha is dropped (not composited), and 16-bit samples keep their
/// high byte (`v >> 8`, what Pillow's `;16B` raw modes do for RGB, RGBA and
/// LA; for 16-bit gray Pillow clips instead of scaling, which we do not
/// follow). The EXIF orientation is not applied, as Pillow's `open` does not.
///
/// Refuses, with [`Error::Image`]: unknown formats, images with a zero side,
/// images over [`MAX_PIXELS`] (checked from the header before decoding),
/// truncated or corrupt data. JPEGs must reach their end-of-image marker:
/// like Pillow (without `LOAD_TRUNCATED_IMAGES`) we do not invent the
/// missing part of a cut file.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    let format =
        image::guess_format(bytes).map_err(|_| Error::Image(unknown_format_message(bytes)))?;
    match format {
        ImageFormat::Jpeg => check_jpeg_complete(bytes)?,
        ImageFormat::Png | ImageFormat::Bmp => {}
        other => {
            return Err(Error::Image(format!(
                "{other:?} images are not supported (JPEG, PNG and BMP are)"
            )));
        }
    }
    let name = format_name(format);
    let image_err = |e: image::ImageError| Error::Image(format!("{name}: {e}"));

    let mut limits = Limits::default();
    limits.max_image_width = Some(u32::try_from(MAX_PIXELS).unwrap_or(u32::MAX));
    limits.max_image_height = Some(u32::try_from(MAX_PIXELS).unwrap_or(u32::MAX));
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);

    // Reads the header only: dimensions are known before any pixel buffer.
    let decoder = reader.into_decoder().map_err(image_err)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(name, width, height)?;

    let decoded = DynamicImage::from_decoder(decoder).map_err(image_err)?;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    let data = to_rgb8(decoded);
    RgbImage::new(width, height, data)
}

/// Reads and decodes an image file (see [`decode_image`]). A file that
/// cannot be read gives [`Error::Io`] naming the path; bad contents give
/// [`Error::Image`] naming it too.
pub fn read_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode_image(&bytes).map_err(|e| match e {
        Error::Image(msg) => Error::Image(format!("{}: {msg}", path.display())),
        other => other,
    })
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::Bmp => "BMP",
        _ => "image",
    }
}

fn unknown_format_message(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "empty file".to_string()
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!(
            "not a JPEG, PNG or BMP image (first bytes {})",
            head.join(" ")
        )
    }
}

fn check_dimensions(name: &str, width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(Error::Image(format!(
            "{name} has zero size ({width}x{height})"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(Error::Image(format!(
            "{name} is {width}x{height} = {pixels} pixels, over the limit of {MAX_PIXELS}"
        )));
    }
    Ok(())
}

/// Walks the JPEG marker segments and requires an end-of-image marker after
/// the entropy-coded data. The JPEG decoder fills a cut-off scan with gray
/// instead of failing; this check makes truncation an error, cheaply
/// (one pass over the bytes, no allocation).
fn check_jpeg_complete(bytes: &[u8]) -> Result<()> {
    let truncated = || Error::Image("JPEG is truncated (no end-of-image marker)".to_string());
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(Error::Image("JPEG does not start with SOI".to_string()));
    }
    let mut i = 2;
    loop {
        // Find the next marker: 0xFF, optional fill 0xFF bytes, then a code.
        if i >= bytes.len() {
            return Err(truncated());
        }
        if bytes[i] != 0xFF {
            // Stray bytes between segments: skip them, as libjpeg does.
            match bytes[i..].iter().position(|&b| b == 0xFF) {
                Some(pos) => i += pos,
                None => return Err(truncated()),
            }
        }
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = bytes.get(i) else {
            return Err(truncated());
        };
        i += 1;
        match code {
            0xD9 => return Ok(()),
            // Markers without a length: TEM, RSTn, SOI.
            0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(i..i + 2) else {
            return Err(truncated());
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return Err(Error::Image(format!(
                "JPEG is corrupt: segment length {len} at byte {i}"
            )));
        }
        i += len;
        if i > bytes.len() {
            return Err(truncated());
        }
        if code == 0xDA {
            // Start of scan: skip the entropy-coded data up to the next marker
            // that is neither a stuffed 0xFF00 nor a restart marker.
            loop {
                let Some(pos) = bytes[i..].iter().position(|&b| b == 0xFF) else {
                    return Err(truncated());
                };
                i += pos;
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] == 0xFF {
                    j += 1;
                }
                match bytes.get(j) {
                    None => return Err(truncated()),
                    Some(0x00 | 0xD0..=0xD7) => i = j + 1,
                    Some(_) => break,
                }
            }
        }
    }
}

/// Converts any decoded layout to packed 8-bit RGB (see [`decode_image`]).
fn to_rgb8(image: DynamicImage) -> Vec<u8> {
    fn expand<T: Copy>(samples: &[T], channels: usize, to_u8: impl Fn(T) -> u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(samples.len() / channels * 3);
        for px in samples.chunks_exact(channels) {
            if channels < 3 {
                let v = to_u8(px[0]);
                out.extend_from_slice(&[v, v, v]);
            } else {
                out.extend_from_slice(&[to_u8(px[0]), to_u8(px[1]), to_u8(px[2])]);
            }
        }
        out
    }
    let id = |v: u8| v;
    let high = |v: u16| (v >> 8) as u8;
    match image {
        DynamicImage::ImageRgb8(img) => img.into_raw(),
        DynamicImage::ImageLuma8(img) => expand(img.as_raw(), 1, id),
        DynamicImage::ImageLumaA8(img) => expand(img.as_raw(), 2, id),
        DynamicImage::ImageRgba8(img) => expand(img.as_raw(), 4, id),
        DynamicImage::ImageLuma16(img) => expand(img.as_raw(), 1, high),
        DynamicImage::ImageLumaA16(img) => expand(img.as_raw(), 2, high),
        DynamicImage::ImageRgb16(img) => expand(img.as_raw(), 3, high),
        DynamicImage::ImageRgba16(img) => expand(img.as_raw(), 4, high),
        // Float layouts (not produced by JPEG, PNG or BMP) and any future ones.
        other => other.into_rgb8().into_raw(),
    }
}
