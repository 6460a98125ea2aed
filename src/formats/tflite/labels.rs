//! Class labels from TFLite metadata "associated files".
//!
//! The TFLite Support metadata writer stores a model's associated files
//! (such as the label list) as a ZIP archive appended to the `.tflite`
//! file, so the model file is also a ZIP file. We read its central
//! directory and take the first stored (uncompressed) `.txt` entry with
//! exactly one non-empty line per class. Anything unexpected (no archive,
//! compressed entries, bad offsets, wrong line count) means "no labels",
//! never an error: labels are a convenience, the weights are the model.

/// End-of-central-directory record signature.
const EOCD_SIG: u32 = 0x0605_4b50;
/// Central directory file header signature.
const CDIR_SIG: u32 = 0x0201_4b50;
/// Local file header signature.
const LOCAL_SIG: u32 = 0x0403_4b50;
/// Size of the EOCD record without its comment.
const EOCD_LEN: usize = 22;
/// Text files we try before giving up.
const MAX_CANDIDATES: usize = 4;
/// Largest ZIP comment.
const MAX_COMMENT: usize = 0xFFFF;

fn u16_at(b: &[u8], pos: usize) -> Option<usize> {
    let s = b.get(pos..pos.checked_add(2)?)?;
    Some(usize::from(u16::from_le_bytes([s[0], s[1]])))
}

fn u32_at(b: &[u8], pos: usize) -> Option<u32> {
    let s = b.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn usize_at(b: &[u8], pos: usize) -> Option<usize> {
    usize::try_from(u32_at(b, pos)?).ok()
}

/// The labels in the ZIP archive appended to `file`, if there is one with
/// `classes` lines.
pub(crate) fn find_labels(file: &[u8], classes: usize) -> Option<Vec<String>> {
    let eocd = find_eocd(file)?;
    let entries = u16_at(file, eocd.checked_add(10)?)?;
    let cd_size = usize_at(file, eocd.checked_add(12)?)?;
    let cd_offset = usize_at(file, eocd.checked_add(16)?)?;
    // The archive may sit after other data (here: the model), so offsets
    // are relative to where the archive starts, as `zipfile` computes it.
    let cd_start = eocd.checked_sub(cd_size)?;
    let base = cd_start.checked_sub(cd_offset)?;
    let mut pos = cd_start;
    // Look at a few text files at most: entries could all point at one
    // huge file.
    let mut candidates = 0;
    for _ in 0..entries {
        if u32_at(file, pos)? != CDIR_SIG {
            return None;
        }
        let at = |k: usize| pos.checked_add(k);
        let method = u16_at(file, at(10)?)?;
        let compressed = usize_at(file, at(20)?)?;
        let size = usize_at(file, at(24)?)?;
        let name_len = u16_at(file, at(28)?)?;
        let extra_len = u16_at(file, at(30)?)?;
        let comment_len = u16_at(file, at(32)?)?;
        let local = base.checked_add(usize_at(file, at(42)?)?)?;
        let name_start = at(46)?;
        let name = file.get(name_start..name_start.checked_add(name_len)?)?;
        pos = name_start
            .checked_add(name_len)?
            .checked_add(extra_len)?
            .checked_add(comment_len)?;
        if method != 0 || compressed != size || !name.ends_with(b".txt") {
            continue;
        }
        if let Some(labels) = read_entry(file, local, size).and_then(|t| parse(t, classes)) {
            return Some(labels);
        }
        candidates += 1;
        if candidates == MAX_CANDIDATES {
            return None;
        }
    }
    None
}

/// The position of the end-of-central-directory record: searched backwards
/// over the last 22 + 65535 bytes.
fn find_eocd(file: &[u8]) -> Option<usize> {
    let last = file.len().checked_sub(EOCD_LEN)?;
    let first = last.saturating_sub(MAX_COMMENT);
    (first..=last)
        .rev()
        .find(|&p| u32_at(file, p) == Some(EOCD_SIG))
}

/// The data of a stored entry whose local header is at `local`.
fn read_entry(file: &[u8], local: usize, size: usize) -> Option<&[u8]> {
    if u32_at(file, local)? != LOCAL_SIG {
        return None;
    }
    let name_len = u16_at(file, local.checked_add(26)?)?;
    let extra_len = u16_at(file, local.checked_add(28)?)?;
    let start = local
        .checked_add(30)?
        .checked_add(name_len)?
        .checked_add(extra_len)?;
    file.get(start..start.checked_add(size)?)
}

fn parse(text: &[u8], classes: usize) -> Option<Vec<String>> {
    let text = std::str::from_utf8(text).ok()?;
    let labels: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (labels.len() == classes).then_some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-entry stored ZIP after some leading bytes.
    fn archive(prefix: &[u8], name: &str, body: &[u8]) -> Vec<u8> {
        let mut f = prefix.to_vec();
        let local = 0u32; // relative to the archive start
        let start = f.len();
        f.extend(LOCAL_SIG.to_le_bytes());
        f.extend([0u8; 22]);
        f.extend((name.len() as u16).to_le_bytes());
        f.extend(0u16.to_le_bytes());
        f.extend(name.as_bytes());
        f.extend(body);
        let cd = f.len();
        f.extend(CDIR_SIG.to_le_bytes());
        f.extend([0u8; 6]);
        f.extend(0u16.to_le_bytes()); // method: stored
        f.extend([0u8; 8]);
        f.extend((body.len() as u32).to_le_bytes());
        f.extend((body.len() as u32).to_le_bytes());
        f.extend((name.len() as u16).to_le_bytes());
        f.extend([0u8; 12]);
        f.extend(local.to_le_bytes());
        f.extend(name.as_bytes());
        let cd_size = (f.len() - cd) as u32;
        f.extend(EOCD_SIG.to_le_bytes());
        f.extend([0u8; 6]);
        f.extend(1u16.to_le_bytes());
        f.extend(cd_size.to_le_bytes());
        f.extend(((cd - start) as u32).to_le_bytes());
        f.extend(0u16.to_le_bytes());
        f
    }

    #[test]
    fn reads_a_stored_label_file_after_other_data() {
        let f = archive(b"model bytes", "labels.txt", b"background\ncat\ndog\n");
        assert_eq!(
            find_labels(&f, 3),
            Some(vec!["background".into(), "cat".into(), "dog".into()])
        );
        assert_eq!(find_labels(&f, 4), None);
        for cut in 0..f.len() {
            let _ = find_labels(&f[..cut], 3);
        }
    }
}
