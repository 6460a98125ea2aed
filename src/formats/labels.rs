//! Class labels: one per line, or the `metadata.json` of a TF.js model.

use std::path::Path;

use crate::error::{Error, Result};

/// Reads labels from `path`: a JSON file with a `labels` array (or an
/// object mapping indices to names, as TF.js `metadata.json` files do), or
/// plain text with one label per line (trailing empty lines ignored).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let labels =
        parse_labels(&text).map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
    if labels.is_empty() {
        return Err(Error::Format(format!("{}: no labels", path.display())));
    }
    Ok(labels)
}

/// Parses label text (see [`read_labels`]).
///
/// ```
/// use mobilenet::formats::labels::parse_labels;
/// assert_eq!(parse_labels("cat\ndog\n").unwrap(), ["cat", "dog"]);
/// assert_eq!(parse_labels(r#"{"labels": ["a", "b"]}"#).unwrap(), ["a", "b"]);
/// assert_eq!(parse_labels(r#"{"1": "b", "0": "a"}"#).unwrap(), ["a", "b"]);
/// ```
pub fn parse_labels(text: &str) -> std::result::Result<Vec<String>, String> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') && !trimmed.starts_with('[') {
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        return Ok(lines);
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let list = match &value {
        serde_json::Value::Object(map) => map.get("labels").unwrap_or(&value),
        _ => &value,
    };
    match list {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or("labels must be strings".to_string())
            })
            .collect(),
        serde_json::Value::Object(map) => {
            let mut indexed = map
                .iter()
                .map(|(k, v)| {
                    let index: usize = k
                        .parse()
                        .map_err(|_| format!("'{k}' is not a class index"))?;
                    let name = v.as_str().ok_or("labels must be strings")?;
                    Ok((index, name.to_string()))
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            indexed.sort();
            if indexed
                .iter()
                .enumerate()
                .any(|(i, (index, _))| i != *index)
            {
                return Err("class indices must be 0, 1, 2, ... without gaps".into());
            }
            Ok(indexed.into_iter().map(|(_, name)| name).collect())
        }
        _ => Err("expected a list of labels".into()),
    }
}
