//! The ImageFolder layout (torchvision's): one sub-folder per class under a
//! root, class indices in sorted name order, images anywhere below their
//! class folder.
//!
//! Only the file list is kept in memory; images are read and decoded when a
//! sample is loaded, so a dataset larger than RAM works and the memory used
//! is set by the loader's batches in flight, not by the dataset.

use std::fs;
use std::path::{Path, PathBuf};

use super::idx::out_of_range;
use super::{Dataset, Sample};
use crate::error::{Error, Result};
use crate::image::read_image;

/// The file extensions taken as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

/// How deep image files may sit below their class folder; stops a
/// pathological tree, never a real dataset.
const MAX_DEPTH: usize = 16;

/// A dataset of image files in class folders.
///
/// ```no_run
/// use std::path::Path;
/// use mobilenet::data::{Dataset, ImageFolder};
///
/// // root/cat/1.jpg, root/cat/2.png, root/dog/a.jpeg, ...: class 0 is "cat".
/// let dataset = ImageFolder::open(Path::new("root"))?;
/// println!("{} images in {} classes", dataset.len(), dataset.classes());
/// let sample = dataset.load(0)?; // decoded now, not at open
/// # Ok::<(), mobilenet::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    /// Every image file with its class, grouped by class, then sorted by
    /// folder path and file name (as torchvision numbers them).
    files: Vec<(PathBuf, usize)>,
    class_names: Vec<String>,
}

impl ImageFolder {
    /// Lists `root`: its sub-folders, sorted by name, are the classes, and
    /// every file with an image extension below a class folder is a sample.
    /// Names starting with `.` are ignored. Nothing is decoded yet.
    ///
    /// Errors: `root` missing or not a folder, no class folders, a class
    /// folder without images (named), no images at all.
    pub fn open(root: &Path) -> Result<ImageFolder> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| Error::Io { path, source }
        };
        let meta = fs::metadata(root).map_err(io(root))?;
        if !meta.is_dir() {
            return Err(Error::Data(format!(
                "{} is not a folder (an ImageFolder dataset is a folder of class folders)",
                root.display()
            )));
        }
        let mut classes: Vec<(String, PathBuf)> = Vec::new();
        for entry in fs::read_dir(root).map_err(io(root))? {
            let entry = entry.map_err(io(root))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Follows symbolic links: a class folder may be a link.
            if !name.starts_with('.') && fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                classes.push((name, path));
            }
        }
        if classes.is_empty() {
            return Err(Error::Data(format!(
                "{} has no class folders (expected one sub-folder of images per class)",
                root.display()
            )));
        }
        classes.sort();

        let mut files = Vec::new();
        let mut empty = Vec::new();
        for (class, (_, dir)) in classes.iter().enumerate() {
            let before = files.len();
            collect_images(dir, class, 0, &mut files)?;
            // torchvision's order: by folder, then by file name.
            files[before..].sort_by(|(a, _), (b, _)| {
                (a.parent(), a.file_name()).cmp(&(b.parent(), b.file_name()))
            });
            if files.len() == before {
                empty.push(dir);
            }
        }
        if files.is_empty() {
            return Err(Error::Data(format!(
                "no images in {} ({} class folders, none holding {} files)",
                root.display(),
                classes.len(),
                extension_list()
            )));
        }
        if let Some(dir) = empty.first() {
            return Err(Error::Data(format!(
                "class folder {} has no images ({}){}",
                dir.display(),
                extension_list(),
                if empty.len() > 1 {
                    format!(", nor do {} other class folders", empty.len() - 1)
                } else {
                    String::new()
                }
            )));
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            files,
            class_names: classes.into_iter().map(|(name, _)| name).collect(),
        })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of sample `index`.
    pub fn path(&self, index: usize) -> Result<&Path> {
        self.files
            .get(index)
            .map(|(p, _)| p.as_path())
            .ok_or_else(|| out_of_range(index, self.files.len()))
    }
}

fn extension_list() -> String {
    IMAGE_EXTENSIONS
        .iter()
        .map(|e| format!(".{e}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Appends the image files below `dir`. Sub-folders are entered, but not
/// through symbolic links (no cycles); linked files are kept.
fn collect_images(
    dir: &Path,
    class: usize,
    depth: usize,
    out: &mut Vec<(PathBuf, usize)>,
) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(io)?;
        if kind.is_dir() {
            if depth + 1 < MAX_DEPTH {
                collect_images(&path, class, depth + 1, out)?;
            }
        } else if is_image_file(&path) && (kind.is_file() || path.is_file()) {
            out.push((path, class));
        }
    }
    Ok(())
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn label(&self, index: usize) -> Result<usize> {
        self.files
            .get(index)
            .map(|&(_, c)| c)
            .ok_or_else(|| out_of_range(index, self.files.len()))
    }

    /// Reads and decodes the file now. A file that cannot be read gives
    /// [`Error::Io`], one that cannot be decoded [`Error::Image`]; both name
    /// the file, and the loader skips such samples.
    fn load(&self, index: usize) -> Result<Sample> {
        let (path, label) = self
            .files
            .get(index)
            .ok_or_else(|| out_of_range(index, self.files.len()))?;
        Ok(Sample {
            image: read_image(path)?,
            label: *label,
        })
    }
}
