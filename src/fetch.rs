//! Downloading published MobileNet v1 checkpoints by name into a user cache
//! (`mobilenet fetch NAME`).
//!
//! The [catalogue](catalog) lists Google's 16 float and 16 uint8-quantized
//! TFLite MobileNet v1 models of the `mobilenet_v1_2018_08_02` release (each
//! a `.tgz` archive holding `./<name>.tflite` beside checkpoints we ignore)
//! and timm's `mobilenetv1_100` safetensors file.
//!
//! [`fetch`] downloads a model unless a valid copy is already cached,
//! extracts it from its archive, verifies it and stores it atomically:
//!
//! - the response is streamed into a temporary file in the cache folder
//!   while it is counted (downloads larger than
//!   [`FetchOptions::max_bytes`] are refused) and hashed;
//! - an archive member is looked up by name; archives with absolute or `..`
//!   paths, links in place of the member, or members or total contents
//!   larger than the limits are refused;
//! - the model file is checked: its sha256 when the catalogue knows it, and
//!   always its format (`TFL3` identifier and the crate's full TFLite
//!   importer for `.tflite`, a successful safetensors parse for
//!   `.safetensors`);
//! - only then is it written to a temporary file, flushed to disk and
//!   renamed to its final name, so a crash or a failure never leaves a
//!   partial file under that name. Concurrent fetches of the same model each
//!   use their own temporary file; the last rename wins and every reader
//!   sees a complete file.
//!
//! No sha256 of the published files is pinned yet (see [`CatalogEntry::sha256`]):
//! the format check is what guards against a damaged or substituted
//! download.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The kind of model file a catalogue entry yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFileKind {
    /// A TensorFlow Lite flatbuffer (`.tflite`).
    Tflite,
    /// A safetensors file (`.safetensors`).
    Safetensors,
}

impl ModelFileKind {
    /// The file name extension of the cached file, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ModelFileKind::Tflite => "tflite",
            ModelFileKind::Safetensors => "safetensors",
        }
    }
}

/// One downloadable model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The name users type, e.g. `mobilenet_v1_0.5_160_quant`. Also the
    /// cached file's stem; only ASCII letters, digits, `.`, `_` and `-`.
    pub name: &'static str,
    /// Where the file is published (`https://host/path`).
    pub url: &'static str,
    /// For archives (`.tgz`/`.tar.gz`, or a plain `.tar`): the path of the
    /// model file inside it, e.g. `./mobilenet_v1_1.0_224.tflite` (a leading
    /// `./` does not matter). `None`: the download is the model file itself.
    pub archive_member: Option<&'static str>,
    /// The sha256 (lowercase hex) of the model file (the extracted member
    /// for archives), when known for certain. `None` for every published
    /// entry today: we could not download the files to verify any hash, and
    /// an unverified hash would only refuse good files.
    pub sha256: Option<&'static str>,
    /// The format of the model file.
    pub kind: ModelFileKind,
}

/// Options for [`fetch`].
#[derive(Clone, Debug, PartialEq)]
pub struct FetchOptions {
    /// Replaces the scheme and host of the entry's URL (keeping its path),
    /// e.g. `http://127.0.0.1:8080` or a mirror. `None`: the environment
    /// variable `MOBILENET_FETCH_BASE_URL` if set, else the published URL.
    pub base_url: Option<String>,
    /// Timeout for connecting and for each wait for data (an inactivity
    /// timeout, not a limit on the whole download).
    pub timeout: Duration,
    /// Refuse downloads and extracted model files larger than this many
    /// bytes. An archive may expand to at most 4 times this while it is
    /// searched.
    pub max_bytes: u64,
    /// Report progress on standard error.
    pub progress: bool,
}

impl Default for FetchOptions {
    /// No base override, 30 s timeout, 200 MiB limit, no progress output.
    fn default() -> Self {
        FetchOptions {
            base_url: None,
            timeout: Duration::from_secs(30),
            max_bytes: 200 * 1024 * 1024,
            progress: false,
        }
    }
}

/// The environment variable that overrides the scheme and host of every
/// download (see [`FetchOptions::base_url`]).
pub const BASE_URL_ENV: &str = "MOBILENET_FETCH_BASE_URL";

/// The environment variable that overrides the cache folder.
pub const CACHE_ENV: &str = "MOBILENET_CACHE";

macro_rules! tf_slim_tflite {
    ($name:literal) => {
        CatalogEntry {
            name: $name,
            url: concat!(
                "https://storage.googleapis.com/download.tensorflow.org/models/mobilenet_v1_2018_08_02/",
                $name,
                ".tgz"
            ),
            archive_member: Some(concat!("./", $name, ".tflite")),
            sha256: None,
            kind: ModelFileKind::Tflite,
        }
    };
}

static CATALOG: [CatalogEntry; 33] = [
    tf_slim_tflite!("mobilenet_v1_1.0_224"),
    tf_slim_tflite!("mobilenet_v1_1.0_192"),
    tf_slim_tflite!("mobilenet_v1_1.0_160"),
    tf_slim_tflite!("mobilenet_v1_1.0_128"),
    tf_slim_tflite!("mobilenet_v1_0.75_224"),
    tf_slim_tflite!("mobilenet_v1_0.75_192"),
    tf_slim_tflite!("mobilenet_v1_0.75_160"),
    tf_slim_tflite!("mobilenet_v1_0.75_128"),
    tf_slim_tflite!("mobilenet_v1_0.5_224"),
    tf_slim_tflite!("mobilenet_v1_0.5_192"),
    tf_slim_tflite!("mobilenet_v1_0.5_160"),
    tf_slim_tflite!("mobilenet_v1_0.5_128"),
    tf_slim_tflite!("mobilenet_v1_0.25_224"),
    tf_slim_tflite!("mobilenet_v1_0.25_192"),
    tf_slim_tflite!("mobilenet_v1_0.25_160"),
    tf_slim_tflite!("mobilenet_v1_0.25_128"),
    tf_slim_tflite!("mobilenet_v1_1.0_224_quant"),
    tf_slim_tflite!("mobilenet_v1_1.0_192_quant"),
    tf_slim_tflite!("mobilenet_v1_1.0_160_quant"),
    tf_slim_tflite!("mobilenet_v1_1.0_128_quant"),
    tf_slim_tflite!("mobilenet_v1_0.75_224_quant"),
    tf_slim_tflite!("mobilenet_v1_0.75_192_quant"),
    tf_slim_tflite!("mobilenet_v1_0.75_160_quant"),
    tf_slim_tflite!("mobilenet_v1_0.75_128_quant"),
    tf_slim_tflite!("mobilenet_v1_0.5_224_quant"),
    tf_slim_tflite!("mobilenet_v1_0.5_192_quant"),
    tf_slim_tflite!("mobilenet_v1_0.5_160_quant"),
    tf_slim_tflite!("mobilenet_v1_0.5_128_quant"),
    tf_slim_tflite!("mobilenet_v1_0.25_224_quant"),
    tf_slim_tflite!("mobilenet_v1_0.25_192_quant"),
    tf_slim_tflite!("mobilenet_v1_0.25_160_quant"),
    tf_slim_tflite!("mobilenet_v1_0.25_128_quant"),
    CatalogEntry {
        name: "mobilenetv1_100",
        url: "https://huggingface.co/timm/mobilenetv1_100.ra4_e3600_r224_in1k/resolve/main/model.safetensors",
        archive_member: None,
        sha256: None,
        kind: ModelFileKind::Safetensors,
    },
];

/// Every model `fetch` knows, float TFLite first, then uint8 TFLite, then
/// timm's safetensors.
pub fn catalog() -> &'static [CatalogEntry] {
    &CATALOG
}

/// The catalogue entry called `name` (exact, or ignoring case and
/// surrounding spaces).
///
/// Unknown names give [`Error::InvalidConfig`] naming the closest valid
/// names.
pub fn find(name: &str) -> Result<&'static CatalogEntry> {
    let wanted = name.trim();
    if let Some(entry) = CATALOG
        .iter()
        .find(|e| e.name == wanted || e.name.eq_ignore_ascii_case(wanted))
    {
        return Ok(entry);
    }
    let lowered = wanted.to_ascii_lowercase();
    let mut scored: Vec<(usize, &str)> = CATALOG
        .iter()
        .map(|e| (edit_distance(&lowered, e.name), e.name))
        .collect();
    scored.sort();
    let close: Vec<&str> = scored
        .iter()
        .take_while(|(d, _)| *d <= 4.max(lowered.len() / 3))
        .take(3)
        .map(|(_, n)| *n)
        .collect();
    let suggestion = if close.is_empty() {
        format!(
            "valid names look like {}, {} or {}",
            CATALOG[0].name, CATALOG[16].name, CATALOG[32].name
        )
    } else {
        format!("did you mean {}?", close.join(", "))
    };
    Err(Error::InvalidConfig(format!(
        "unknown model name {name:?}: {suggestion} (`mobilenet fetch --list` shows all {} names)",
        CATALOG.len()
    )))
}

/// Levenshtein distance between two ASCII-ish strings (by chars).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The cache folder: `$MOBILENET_CACHE`, else `$XDG_CACHE_HOME/mobilenet`,
/// else `$HOME/.cache/mobilenet` (on Windows `%USERPROFILE%` stands in for
/// a missing `HOME`).
///
/// This is the XDG base directory rule, a few lines, so the `dirs` crate
/// is not needed (it would also pick `~/Library/Caches` on macOS, which is
/// not what the CLI documents). The folder is not created here.
pub fn default_cache_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").or_else(|| {
        if cfg!(windows) {
            std::env::var_os("USERPROFILE")
        } else {
            None
        }
    });
    cache_dir_from(
        std::env::var_os(CACHE_ENV),
        std::env::var_os("XDG_CACHE_HOME"),
        home,
    )
}

/// [`default_cache_dir`] with the environment's values passed in (for tests
/// and callers with their own environment). Empty values count as unset,
/// and a relative `XDG_CACHE_HOME` is ignored, as the XDG specification
/// says.
pub fn cache_dir_from(
    mobilenet_cache: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(mobilenet_cache) {
        return Ok(dir);
    }
    if let Some(xdg) = set(xdg_cache_home).filter(|p| p.is_absolute()) {
        return Ok(xdg.join("mobilenet"));
    }
    if let Some(home) = set(home) {
        return Ok(home.join(".cache").join("mobilenet"));
    }
    Err(Error::InvalidConfig(format!(
        "cannot find a cache folder: none of {CACHE_ENV}, XDG_CACHE_HOME and HOME is set; \
         set {CACHE_ENV} or pass --cache DIR"
    )))
}

/// Where `entry` is stored in `cache`: `<cache>/<name>.tflite` or
/// `<cache>/<name>.safetensors`.
pub fn cached_path(entry: &CatalogEntry, cache: &Path) -> PathBuf {
    cache.join(format!("{}.{}", entry.name, entry.kind.extension()))
}

/// The address `entry` is downloaded from: its published URL, or with
/// `base_url` (e.g. `http://127.0.0.1:8080`, trailing `/` optional) in
/// place of the URL's scheme and host.
pub fn resolve_url(entry: &CatalogEntry, base_url: Option<&str>) -> Result<String> {
    let Some(base) = base_url else {
        return Ok(entry.url.to_string());
    };
    let base = base.trim().trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"));
    if rest.is_none_or(str::is_empty) {
        return Err(Error::InvalidConfig(format!(
            "download base address {base:?} must start with http:// or https:// and name a host"
        )));
    }
    let path = entry
        .url
        .split_once("://")
        .and_then(|(_, after)| after.find('/').map(|i| &after[i..]))
        .unwrap_or("/");
    Ok(format!("{base}{path}"))
}

/// Checks that `bytes` are a usable model file of `kind`: for TFLite the
/// `TFL3` file identifier at offset 4 and a successful import by
/// [`crate::formats::tflite::load_tflite`]; for safetensors a successful
/// parse of the header and tensor table.
///
/// Fails with [`Error::Format`] saying what is wrong.
pub fn check_model_bytes(kind: ModelFileKind, bytes: &[u8]) -> Result<()> {
    match kind {
        ModelFileKind::Tflite => {
            let identifier = bytes.get(4..8);
            if identifier != Some(b"TFL3".as_slice()) {
                return Err(Error::Format(format!(
                    "not a TFLite file: expected the identifier \"TFL3\" at byte 4, found {}{}",
                    match identifier {
                        Some(id) => format!("{:?}", String::from_utf8_lossy(id)),
                        None => format!("a file of only {} bytes", bytes.len()),
                    },
                    web_page_hint(bytes)
                )));
            }
            crate::formats::tflite::load_tflite(bytes)
                .map(|_| ())
                .map_err(|e| {
                    Error::Format(format!("not a usable TFLite MobileNet v1: {}", inner(e)))
                })
        }
        ModelFileKind::Safetensors => safetensors::SafeTensors::deserialize(bytes)
            .map(|_| ())
            .map_err(|e| {
                Error::Format(format!(
                    "not a usable safetensors file: {e}{}",
                    web_page_hint(bytes)
                ))
            }),
    }
}

/// The message of an error without its variant's prefix.
fn inner(e: Error) -> String {
    match e {
        Error::Format(m) | Error::InvalidConfig(m) | Error::Shape(m) | Error::TooLarge(m) => m,
        other => other.to_string(),
    }
}

/// A note when bytes look like an HTML page (a proxy or captive portal
/// answering in place of the file).
fn web_page_hint(bytes: &[u8]) -> &'static str {
    let start: Vec<u8> = bytes
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(15)
        .map(u8::to_ascii_lowercase)
        .collect();
    if start.starts_with(b"<!doctype html") || start.starts_with(b"<html") {
        " (the server sent a web page instead: a proxy or login portal in the way?)"
    } else {
        ""
    }
}

/// Hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a model file's bytes: its sha256 when the entry knows it, then
/// its format.
/// `sha256` is the bytes' hash when already computed.
fn verify(entry: &CatalogEntry, bytes: &[u8], origin: &str, sha256: Option<&str>) -> Result<()> {
    if let Some(expected) = entry.sha256 {
        let got = sha256.map_or_else(|| sha256_hex(bytes), str::to_string);
        if !got.eq_ignore_ascii_case(expected) {
            return Err(Error::Format(format!(
                "checksum mismatch for {} from {origin}: expected sha256 {expected}, got {got}; \
                 the download is damaged or the file was changed upstream, and was deleted",
                entry.name
            )));
        }
    }
    check_model_bytes(entry.kind, bytes).map_err(|e| {
        Error::Format(format!(
            "{} from {origin} was refused: {}",
            entry.name,
            inner(e)
        ))
    })
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Downloads `entry` into `cache` unless a valid copy is already there, and
/// returns the path of the model file ([`cached_path`]).
///
/// A cached file is re-verified (sha256 if known, format check) and used
/// without any network request when it passes; a damaged one is downloaded
/// again. See the [module documentation](self) for how a download is
/// checked and stored.
///
/// Errors: [`Error::Network`] when the file cannot be downloaded (offline,
/// timeout, HTTP error, response cut short); [`Error::TooLarge`] beyond
/// [`FetchOptions::max_bytes`]; [`Error::Format`] for a damaged archive, a
/// missing member, a checksum mismatch or a file in the wrong format;
/// [`Error::Io`] when the cache folder cannot be written;
/// [`Error::InvalidConfig`] for a bad base address or entry name.
pub fn fetch(entry: &CatalogEntry, cache: &Path, options: &FetchOptions) -> Result<PathBuf> {
    check_entry_name(entry.name)?;
    let final_path = cached_path(entry, cache);
    let cached_len = fs::metadata(&final_path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    // A cached file over the limit (not one we wrote) is not read into memory.
    if cached_len.is_some_and(|len| len <= options.max_bytes) {
        let bytes = fs::read(&final_path).map_err(io_err(&final_path))?;
        match verify(entry, &bytes, &final_path.display().to_string(), None) {
            Ok(()) => return Ok(final_path),
            Err(e) => {
                if options.progress {
                    eprintln!(
                        "cached {} is not valid ({}); downloading it again",
                        final_path.display(),
                        inner(e)
                    );
                }
            }
        }
    }

    let env_base = std::env::var(BASE_URL_ENV).ok().filter(|v| !v.is_empty());
    let (base, base_from_env) = match (&options.base_url, &env_base) {
        (Some(b), _) => (Some(b.as_str()), false),
        (None, Some(b)) => (Some(b.as_str()), true),
        (None, None) => (None, false),
    };
    let url = resolve_url(entry, base)?;

    fs::create_dir_all(cache).map_err(io_err(cache))?;
    remove_stale_temp_files(cache, entry.name);

    let mut download = TempFile::create(cache, entry.name)?;
    let download_sha = http_get(entry, &url, base_from_env, options, &mut download)?;

    let stored = match entry.archive_member {
        None => {
            let bytes = fs::read(&download.path).map_err(io_err(&download.path))?;
            verify(entry, &bytes, &url, Some(&download_sha))?;
            download
        }
        Some(member) => {
            let bytes = extract_member(&download.path, member, options.max_bytes, entry, &url)?;
            drop(download);
            verify(entry, &bytes, &url, None)?;
            let mut model = TempFile::create(cache, entry.name)?;
            model.write_all(&bytes)?;
            model
        }
    };
    stored.persist(&final_path)?;
    if options.progress {
        eprintln!("saved {}", final_path.display());
    }
    Ok(final_path)
}

fn check_entry_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "catalogue name {name:?} is not usable as a file name"
        )))
    }
}

/// The "what to do now" sentence of a download error.
fn manual_hint(entry: &CatalogEntry, url: &str) -> String {
    match entry.archive_member {
        Some(member) => format!(
            "download {url} elsewhere, extract {} from it and pass it with --model PATH",
            member.trim_start_matches("./")
        ),
        None => format!("download {url} elsewhere and pass it with --model PATH"),
    }
}

fn network_error(entry: &CatalogEntry, url: &str, base_from_env: bool, cause: &str) -> Error {
    let env_note = if base_from_env {
        format!(" (the address comes from {BASE_URL_ENV})")
    } else {
        String::new()
    };
    Error::Network(format!(
        "could not download {} from {url}{env_note}: {cause}. \
         If this machine is offline or the download keeps failing, {}",
        entry.name,
        manual_hint(entry, url)
    ))
}

/// Whether the URL's host is a loopback address (no proxy can reach it).
fn is_loopback_url(url: &str) -> bool {
    let after = url.split_once("://").map_or(url, |(_, a)| a);
    let authority = after.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// GETs `url` into `out`, following redirects, counting (refusing more than
/// `max_bytes`) and hashing. Returns the hex sha256 of the body.
fn http_get(
    entry: &CatalogEntry,
    url: &str,
    base_from_env: bool,
    options: &FetchOptions,
    out: &mut TempFile,
) -> Result<String> {
    let timeout = Some(options.timeout);
    let mut config = ureq::Agent::config_builder()
        .timeout_resolve(timeout)
        .timeout_connect(timeout)
        .timeout_send_request(timeout)
        .timeout_recv_response(timeout)
        .timeout_per_read(timeout)
        .max_redirects(10)
        .http_status_as_error(false)
        .user_agent(concat!("mobilenet/", env!("CARGO_PKG_VERSION")));
    if is_loopback_url(url) {
        config = config.proxy(None);
    }
    let agent = ureq::Agent::new_with_config(config.build());
    let fail = |cause: String| network_error(entry, url, base_from_env, &cause);

    if options.progress {
        eprintln!("downloading {} from {url}", entry.name);
    }
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::Network(format!(
            "could not download {} from {url}: the server answered HTTP {}{}. \
             The file may have moved; {}",
            entry.name,
            status.as_u16(),
            status
                .canonical_reason()
                .map(|r| format!(" {r}"))
                .unwrap_or_default(),
            manual_hint(entry, url)
        )));
    }
    let expected_len = response.body().content_length();
    if let Some(len) = expected_len
        && len > options.max_bytes
    {
        return Err(too_large(entry, url, len, options.max_bytes));
    }

    let mut reader = response.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut progress = Progress::new(options.progress, expected_len);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                progress.finish();
                let cause = if e.kind() == io::ErrorKind::UnexpectedEof {
                    match expected_len {
                        Some(len) => {
                            format!("the connection ended after {received} of {len} bytes ({e})")
                        }
                        None => format!("the connection ended after {received} bytes ({e})"),
                    }
                } else {
                    format!("failed after {received} bytes: {e}")
                };
                return Err(fail(cause));
            }
        };
        received += n as u64;
        if received > options.max_bytes {
            progress.finish();
            return Err(too_large(entry, url, received, options.max_bytes));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        progress.update(received);
    }
    progress.finish();
    if let Some(len) = expected_len
        && received != len
    {
        return Err(fail(format!(
            "the connection ended after {received} of {len} bytes"
        )));
    }
    Ok(hex(&hasher.finalize()))
}

fn too_large(entry: &CatalogEntry, url: &str, size: u64, max: u64) -> Error {
    Error::TooLarge(format!(
        "{} from {url} is larger than the download limit of {max} bytes ({}{size} bytes); \
         refusing it",
        entry.name,
        if size > max { "at least " } else { "" }
    ))
}

/// Progress lines on standard error: updated in place on a terminal, a
/// start and an end line otherwise.
struct Progress {
    enabled: bool,
    terminal: bool,
    total: Option<u64>,
    last: Instant,
    shown: bool,
    received: u64,
}

impl Progress {
    fn new(enabled: bool, total: Option<u64>) -> Self {
        Progress {
            enabled,
            terminal: io::stderr().is_terminal(),
            total,
            last: Instant::now(),
            shown: false,
            received: 0,
        }
    }

    fn line(&self) -> String {
        let mb = |b: u64| b as f64 / 1e6;
        match self.total {
            Some(t) if t > 0 => format!(
                "{:.1} / {:.1} MB ({:.0}%)",
                mb(self.received),
                mb(t),
                100.0 * self.received as f64 / t as f64
            ),
            _ => format!("{:.1} MB", mb(self.received)),
        }
    }

    fn update(&mut self, received: u64) {
        self.received = received;
        if self.enabled && self.terminal && self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            self.shown = true;
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r  {}   ", self.line());
            let _ = err.flush();
        }
    }

    fn finish(&mut self) {
        if !self.enabled {
            return;
        }
        self.enabled = false;
        if self.terminal && self.shown {
            eprintln!("\r  {}   ", self.line());
        } else {
            eprintln!("  {}", self.line());
        }
    }
}

/// A reader that fails once more than `left` bytes have been read through
/// it, remembering that it did.
struct CappedReader<R> {
    inner: R,
    left: u64,
    exceeded: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.exceeded.set(true);
            return Err(io::Error::other("archive contents exceed the size limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The member's path as `/`-joined normal components, refusing absolute
/// paths and `..` (the reason as the error). `./` gives an empty string.
fn normalized_member_path(path: &Path) -> std::result::Result<String, String> {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => return Err(format!("entry {} contains `..`", path.display())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("entry {} has an absolute path", path.display()));
            }
        }
    }
    Ok(parts.join("/"))
}

/// Reads the archive at `archive` (gzip-compressed or plain tar) and returns
/// the bytes of `member`.
fn extract_member(
    archive: &Path,
    member: &str,
    max_bytes: u64,
    entry: &CatalogEntry,
    url: &str,
) -> Result<Vec<u8>> {
    let wanted = normalized_member_path(Path::new(member)).map_err(Error::InvalidConfig)?;
    let file = File::open(archive).map_err(io_err(archive))?;
    let mut buffered = BufReader::new(file);
    let head = buffered.fill_buf().map_err(io_err(archive))?;
    let gzipped = head.starts_with(&[0x1f, 0x8b]);
    let first_bytes = head.get(..64).unwrap_or(head).to_vec();
    let decoded: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let exceeded = std::rc::Rc::new(std::cell::Cell::new(false));
    let total_cap = max_bytes.saturating_mul(4);
    let capped = CappedReader {
        inner: decoded,
        left: total_cap,
        exceeded: exceeded.clone(),
    };
    let damaged = |what: String| {
        if exceeded.get() {
            Error::TooLarge(format!(
                "the archive of {} from {url} expands to more than {total_cap} bytes; refusing it",
                entry.name
            ))
        } else {
            let hint = web_page_hint(&first_bytes);
            // A web page's text in tar's complaint only adds noise.
            let what = if hint.is_empty() {
                format!(": {what}")
            } else {
                String::new()
            };
            Error::Format(format!(
                "the archive of {} downloaded from {url} is damaged or not a {}tar archive{what}{hint}",
                entry.name,
                if gzipped { "gzip-compressed " } else { "" },
            ))
        }
    };

    let mut tar = tar::Archive::new(capped);
    let mut seen: Vec<String> = Vec::new();
    let entries = tar.entries().map_err(|e| damaged(e.to_string()))?;
    for item in entries {
        let mut item = item.map_err(|e| damaged(e.to_string()))?;
        let path = item
            .path()
            .map_err(|e| damaged(e.to_string()))?
            .into_owned();
        let name = normalized_member_path(&path).map_err(|why| {
            Error::Format(format!(
                "the archive of {} from {url} is unsafe and was refused: {why}",
                entry.name
            ))
        })?;
        if name != wanted {
            if seen.len() < 12 {
                seen.push(name);
            }
            continue;
        }
        let kind = item.header().entry_type();
        if !kind.is_file() {
            return Err(Error::Format(format!(
                "the archive of {} from {url} has {member} as a {kind:?} entry, not a regular file",
                entry.name
            )));
        }
        let size = item.size();
        if size > max_bytes {
            return Err(Error::TooLarge(format!(
                "{member} in the archive of {} from {url} is {size} bytes, more than the limit of {max_bytes}",
                entry.name
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut item)
            .take(max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| damaged(e.to_string()))?;
        if bytes.len() as u64 != size {
            return Err(damaged(format!(
                "{member} is cut short: {} of {size} bytes",
                bytes.len()
            )));
        }
        return Ok(bytes);
    }
    if exceeded.get() {
        return Err(damaged(String::new()));
    }
    Err(Error::Format(format!(
        "the archive of {} from {url} has no {member}{}{}",
        entry.name,
        if seen.is_empty() {
            " (it has no entries at all)".to_string()
        } else {
            format!(" (it holds {})", seen.join(", "))
        },
        web_page_hint(&first_bytes)
    )))
}

/// A file in the cache folder with a unique name that is deleted when
/// dropped unless [`persist`](TempFile::persist)ed.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Temporary files are `.<name>.<pid>-<nanos>-<n>.part`.
const TEMP_SUFFIX: &str = ".part";

impl TempFile {
    fn create(dir: &Path, name: &str) -> Result<TempFile> {
        loop {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = dir.join(format!(
                ".{name}.{}-{nanos}-{}{TEMP_SUFFIX}",
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(Error::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let file = self
            .file
            .as_mut()
            .expect("temp file is open until persisted");
        file.write_all(bytes).map_err(io_err(&self.path))
    }

    /// Flushes the file to disk and renames it to `target` (replacing any
    /// file there), then flushes the folder entry where the OS allows.
    fn persist(mut self, target: &Path) -> Result<()> {
        let file = self.file.take().expect("temp file is open until persisted");
        file.sync_all().map_err(io_err(&self.path))?;
        drop(file);
        fs::rename(&self.path, target).map_err(|source| Error::Io {
            path: format!("{} -> {}", self.path.display(), target.display()),
            source,
        })?;
        // Renamed: nothing left to delete.
        self.path = PathBuf::new();
        #[cfg(unix)]
        if let Some(dir) = target.parent()
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Deletes this model's temporary files left by a crash more than a day ago
/// (younger ones may belong to a download still running).
fn remove_stale_temp_files(cache: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(listing) = fs::read_dir(cache) else {
        return;
    };
    for item in listing.flatten() {
        let file_name = item.file_name();
        let file_name = file_name.to_string_lossy();
        if !file_name.starts_with(&prefix) || !file_name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let old = item
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(24 * 3600));
        if old {
            let _ = fs::remove_file(item.path());
        }
    }
}
