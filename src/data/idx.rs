//! The IDX format of MNIST and Fashion-MNIST: a 4-byte magic (two zero
//! bytes, a dtype code, the number of dimensions), the dimensions as
//! big-endian u32, then the values, row-major. Files are often gzipped.
//!
//! Headers are not trusted: the size they announce is checked against
//! [`MAX_IDX_BYTES`] before anything is read, the buffer grows with the bytes
//! actually present rather than with the claim, and the payload must be
//! exactly as long as the dimensions say (no missing, no extra bytes).

use std::io::{self, BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use super::{Dataset, Sample};
use crate::error::{Error, Result};
use crate::image::RgbImage;

/// The largest IDX payload we read, in bytes (4 GiB): far above
/// Fashion-MNIST (47 MB) or EMNIST (0.6 GB), well below what a hostile
/// header could claim (up to 2^32 to the power of 255).
pub const MAX_IDX_BYTES: u64 = 1 << 32;

/// The one IDX value type we read: unsigned bytes.
const DTYPE_U8: u8 = 0x08;

/// The class names of Fashion-MNIST, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (`[count, rows, cols]` for images).
    pub dims: Vec<usize>,
    /// The values, row-major: exactly the product of `dims` bytes.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Parses IDX bytes, raw or gzipped (recognised by the gzip magic).
    ///
    /// ```
    /// use mobilenet::data::IdxArray;
    ///
    /// // Two labels: magic 00 00 08 01, one dimension of 2, then the values.
    /// let labels = IdxArray::parse(&[0, 0, 8, 1, 0, 0, 0, 2, 7, 3])?;
    /// assert_eq!((labels.dims, labels.data), (vec![2], vec![7, 3]));
    /// assert!(IdxArray::parse(&[0, 0, 8, 1, 0, 0, 0, 3, 7, 3]).is_err()); // truncated
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<IdxArray> {
        read_array(bytes, "IDX data")
    }

    /// Reads an IDX file, raw or gzipped. Errors name the file.
    pub fn read(path: &Path) -> Result<IdxArray> {
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        read_array(file, &path.display().to_string())
    }
}

/// Reads one array from `input`, sniffing gzip; `name` goes in messages.
fn read_array(input: impl Read, name: &str) -> Result<IdxArray> {
    let mut input = BufReader::new(input);
    let mut head = [0u8; 2];
    let got = read_up_to(&mut input, &mut head).map_err(|e| io_error(name, false, e))?;
    let prefix = io::Cursor::new(head[..got].to_vec());
    if got == 2 && head == [0x1f, 0x8b] {
        read_idx(GzDecoder::new(prefix.chain(input)), name, true)
    } else {
        read_idx(prefix.chain(input), name, false)
    }
}

fn read_idx(mut input: impl Read, name: &str, gzip: bool) -> Result<IdxArray> {
    let bad = |msg: String| Error::Data(format!("{name}: {msg}"));
    let err = |e: io::Error| io_error(name, gzip, e);

    let mut magic = [0u8; 4];
    let got = read_up_to(&mut input, &mut magic).map_err(err)?;
    if got < 4 {
        return Err(bad(format!(
            "truncated IDX header ({got} bytes, the magic alone is 4)"
        )));
    }
    if magic[..2] != [0, 0] {
        return Err(bad(format!(
            "not an IDX file (magic {:02x} {:02x} {:02x} {:02x}, expected 00 00 <type> <dims>)",
            magic[0], magic[1], magic[2], magic[3]
        )));
    }
    let dtype = magic[2];
    if dtype != DTYPE_U8 {
        return Err(bad(format!(
            "IDX value type 0x{dtype:02x} ({}) is not supported, only unsigned bytes (0x08)",
            dtype_name(dtype)
        )));
    }
    let ndims = usize::from(magic[3]);
    if ndims == 0 {
        return Err(bad("IDX header has zero dimensions".to_string()));
    }

    let mut raw = vec![0u8; 4 * ndims];
    let got = read_up_to(&mut input, &mut raw).map_err(err)?;
    if got < raw.len() {
        return Err(bad(format!(
            "truncated IDX header: {ndims} dimensions need {} bytes, got {got}",
            raw.len()
        )));
    }
    let dims: Vec<usize> = raw
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let size = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            Error::TooLarge(format!(
                "{name}: IDX dimensions {dims:?} describe more than {MAX_IDX_BYTES} bytes"
            ))
        })?;

    // Grow with the data actually present: a header may lie about the size.
    let mut data = Vec::with_capacity(size.min(1 << 24) as usize);
    (&mut input)
        .take(size)
        .read_to_end(&mut data)
        .map_err(err)?;
    if (data.len() as u64) < size {
        return Err(bad(format!(
            "truncated: dimensions {dims:?} need {size} bytes of values, the file has {}",
            data.len()
        )));
    }
    let mut extra = [0u8; 1];
    if read_up_to(&mut input, &mut extra).map_err(err)? > 0 {
        return Err(bad(format!(
            "trailing data after the {size} bytes that dimensions {dims:?} describe"
        )));
    }
    Ok(IdxArray { dims, data })
}

/// Reads until `buf` is full or the input ends; returns the count read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A read error: a damaged gzip stream is a data problem, anything else an
/// I/O problem.
fn io_error(name: &str, gzip: bool, e: io::Error) -> Error {
    let data_kind = matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof
    );
    if gzip && data_kind {
        Error::Data(format!("{name}: damaged gzip data: {e}"))
    } else {
        Error::Io {
            path: name.to_string(),
            source: e,
        }
    }
}

fn dtype_name(code: u8) -> &'static str {
    match code {
        0x08 => "u8",
        0x09 => "i8",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

/// An image classification dataset in IDX files (MNIST layout), held in
/// memory: images `[count, rows, cols]` (grayscale, replicated to RGB when
/// loaded) or `[count, rows, cols, 1 | 3]`, labels `[count]`.
#[derive(Clone, Debug)]
pub struct IdxDataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    height: usize,
    width: usize,
    channels: usize,
    class_names: Vec<String>,
}

impl IdxDataset {
    /// Opens an image file and a label file (each raw or gzipped).
    ///
    /// `classes` is the number of classes; with `None` it is the largest
    /// label plus one. Class names are the label numbers, see
    /// [`IdxDataset::with_class_names`].
    pub fn open(images: &Path, labels: &Path, classes: Option<usize>) -> Result<IdxDataset> {
        let image_array = IdxArray::read(images)?;
        let label_array = IdxArray::read(labels)?;
        IdxDataset::from_arrays(image_array, label_array, classes).map_err(|e| match e {
            Error::Data(msg) => Error::Data(format!(
                "{} + {}: {msg}",
                images.display(),
                labels.display()
            )),
            other => other,
        })
    }

    /// Builds the dataset from parsed arrays, checking that the counts agree,
    /// that images are not empty and every label is below `classes`.
    ///
    /// ```
    /// use mobilenet::data::{Dataset, IdxArray, IdxDataset};
    ///
    /// let images = IdxArray { dims: vec![2, 2, 2], data: vec![0, 64, 128, 255, 9, 9, 9, 9] };
    /// let labels = IdxArray { dims: vec![2], data: vec![1, 0] };
    /// let dataset = IdxDataset::from_arrays(images, labels, Some(3))?;
    /// assert_eq!((dataset.len(), dataset.classes()), (2, 3));
    /// let sample = dataset.load(0)?;
    /// assert_eq!((sample.label, sample.image.pixel(1, 0)), (1, [64, 64, 64]));
    /// # Ok::<(), mobilenet::Error>(())
    /// ```
    pub fn from_arrays(
        images: IdxArray,
        labels: IdxArray,
        classes: Option<usize>,
    ) -> Result<IdxDataset> {
        let (count, height, width, channels) = match images.dims[..] {
            [n, h, w] => (n, h, w, 1),
            [n, h, w, c @ (1 | 3)] => (n, h, w, c),
            _ => {
                return Err(Error::Data(format!(
                    "images must have dimensions [count, rows, cols] or [count, rows, cols, 1 or 3], got {:?}",
                    images.dims
                )));
            }
        };
        let [label_count] = labels.dims[..] else {
            return Err(Error::Data(format!(
                "labels must have one dimension [count], got {:?}",
                labels.dims
            )));
        };
        if count != label_count {
            return Err(Error::Data(format!(
                "{count} images but {label_count} labels"
            )));
        }
        if count == 0 {
            return Err(Error::Data("the dataset has no images".to_string()));
        }
        if height == 0 || width == 0 {
            return Err(Error::Data(format!(
                "images have zero size ({width}x{height})"
            )));
        }
        let top = labels.data.iter().copied().max().map_or(0, usize::from);
        let classes = classes.unwrap_or(top + 1);
        if classes == 0 {
            return Err(Error::InvalidConfig(
                "the number of classes must be at least 1".to_string(),
            ));
        }
        if let Some((i, &v)) = labels
            .data
            .iter()
            .enumerate()
            .find(|&(_, &v)| usize::from(v) >= classes)
        {
            return Err(Error::Data(format!(
                "label {v} of sample {i} is out of range for {classes} classes"
            )));
        }
        Ok(IdxDataset {
            images: images.data,
            labels: labels.data,
            height,
            width,
            channels,
            class_names: (0..classes).map(|c| c.to_string()).collect(),
        })
    }

    /// Names the classes (one name per class, in label order), e.g. with
    /// [`FASHION_MNIST_CLASSES`].
    pub fn with_class_names<S: AsRef<str>>(mut self, names: &[S]) -> Result<IdxDataset> {
        if names.len() != self.class_names.len() {
            return Err(Error::InvalidConfig(format!(
                "{} class names given for {} classes",
                names.len(),
                self.class_names.len()
            )));
        }
        self.class_names = names.iter().map(|s| s.as_ref().to_string()).collect();
        Ok(self)
    }

    /// `(height, width)` of every image.
    pub fn image_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn label(&self, index: usize) -> Result<usize> {
        self.labels
            .get(index)
            .map(|&l| usize::from(l))
            .ok_or_else(|| out_of_range(index, self.len()))
    }

    fn load(&self, index: usize) -> Result<Sample> {
        let label = self.label(index)?;
        let n = self.height * self.width * self.channels;
        let src = &self.images[index * n..(index + 1) * n];
        let data = if self.channels == 3 {
            src.to_vec()
        } else {
            src.iter().flat_map(|&v| [v, v, v]).collect()
        };
        Ok(Sample {
            image: RgbImage::new(self.width, self.height, data)?,
            label,
        })
    }
}

pub(crate) fn out_of_range(index: usize, len: usize) -> Error {
    Error::Data(format!(
        "sample index {index} is out of range for a dataset of {len}"
    ))
}
