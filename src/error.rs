//! The library's one error type.

use thiserror::Error;

/// Everything that can go wrong in the library.
///
/// Every variant carries a message meant for a person: the CLI prints it on
/// one line and exits non-zero.
#[derive(Debug, Error)]
pub enum Error {
    /// A tensor's shape does not fit the operation (wrong rank, mismatched
    /// channel counts, data length not equal to the product of the shape).
    #[error("shape error: {0}")]
    Shape(String),

    /// A model configuration or operation parameter is out of range
    /// (α <= 0, resolution < 32, zero classes, stride 0, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The request is valid but would need more memory than is sensible.
    #[error("too large: {0}")]
    TooLarge(String),

    /// A model file is malformed, damaged or describes something we do not
    /// support (unknown operators, wrong tensor shapes, offsets out of range).
    #[error("model format error: {0}")]
    Format(String),

    /// An image could not be decoded or has an unusable size.
    #[error("image error: {0}")]
    Image(String),

    /// A training or evaluation dataset is malformed or unusable: a damaged
    /// IDX file, image and label counts that disagree, a label out of range,
    /// a folder without class folders or images.
    #[error("dataset error: {0}")]
    Data(String),

    /// A download failed: no connection, a timeout, an HTTP error status or
    /// a response cut short. The environment's fault, not the caller's.
    #[error("network error: {0}")]
    Network(String),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the error is the caller's fault (bad arguments or input), as
    /// opposed to the environment's. The CLI exits with 2 for these.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Shape(_)
                | Error::InvalidConfig(_)
                | Error::TooLarge(_)
                | Error::Format(_)
                | Error::Image(_)
                | Error::Data(_)
        )
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for returning [`Error::Shape`] with a formatted message.
macro_rules! shape_err {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Shape(format!($($arg)*)))
    };
}
pub(crate) use shape_err;
