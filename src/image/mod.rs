//! Images in: decoding (JPEG, PNG, BMP; grayscale and RGBA made RGB) and the
//! preprocessing recipes the published weights expect.
//!
//! Pretrained weights only reach their published accuracy on inputs
//! prepared the way their authors prepared them, so decoding follows Pillow
//! (what the reference inputs in `shared/refs/` were made with) and each
//! [`Preprocess`] recipe follows its framework's arithmetic exactly.
//!
//! ```
//! use mobilenet::image::{decode_image, preprocess, preprocess_tf_u8, Preprocess};
//!
//! // A tiny 2x1 PNG made in memory; real code would use `read_image(path)`.
//! let mut png = Vec::new();
//! image::RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 0, 255])
//!     .unwrap()
//!     .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
//!     .unwrap();
//!
//! let rgb = decode_image(&png)?;
//! assert_eq!((rgb.width, rgb.height), (2, 1));
//! let q = preprocess_tf_u8(&rgb, 4)?; // what a uint8 TFLite model takes
//! assert_eq!(q.len(), 4 * 4 * 3);
//! let x = preprocess(&rgb, 4, "tf".parse::<Preprocess>()?)?; // float models
//! assert_eq!(x.shape(), &[1, 4, 4, 3]);
//! # Ok::<(), mobilenet::Error>(())
//! ```

mod decode;
mod preprocess;

pub use decode::{MAX_PIXELS, RgbImage, decode_image, read_image};
pub use preprocess::{
    MAX_SIZE, Preprocess, TORCH_MEAN, TORCH_STD, preprocess, preprocess_into, preprocess_tf_u8,
    preprocess_torch_u8, tf_central_crop_box,
};
