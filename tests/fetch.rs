//! `mobilenet::fetch`: downloading catalogue models into a cache, against a
//! small HTTP server on 127.0.0.1 that each test starts itself (this machine
//! has no network, and tests must not depend on one).
//!
//! The server answers one scripted reply per path, counts requests, and
//! stops when the test drops it or after 30 s at the latest. Every client
//! call uses a timeout of a few seconds, so no test can hang.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use mobilenet::Error;
use mobilenet::fetch::{
    self, CatalogEntry, FetchOptions, ModelFileKind, cache_dir_from, cached_path, catalog, find,
    resolve_url,
};
use sha2::{Digest, Sha256};

const REAL_TFLITE: &str =
    "models/mobilenet_v1_0.25_224_float_tflite/mobilenet_v1_0.25_224_1_default_1.tflite";

// ---------------------------------------------------------------------------
// A scripted HTTP/1.1 server on 127.0.0.1.

#[derive(Clone)]
enum Reply {
    /// 200 with Content-Length.
    Ok(Vec<u8>),
    /// 200 without Content-Length: the body ends when the connection closes.
    CloseDelimited(Vec<u8>),
    /// An error status with a short text body.
    Status(u16),
    /// 200 claiming `claimed` bytes but sending only `body`, then closing.
    CutShort { body: Vec<u8>, claimed: usize },
    /// 302 to another path on the same server.
    Redirect(String),
    /// Say nothing for this long, then close.
    Stall(Duration),
}

struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(routes: Vec<(String, Reply)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let routes: HashMap<String, Reply> = routes.into_iter().collect();
        let thread = {
            let (hits, stop) = (hits.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut served = 0;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && served < 200 {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            served += 1;
                            serve(stream, &routes, &hits);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Server {
            base,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, routes: &HashMap<String, Reply>, hits: &AtomicUsize) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    // Read the request head (bounded).
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let reply = routes.get(&path).cloned().unwrap_or(Reply::Status(404));
    let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close";
    let _ = match reply {
        Reply::Ok(body) => stream
            .write_all(format!("{ok}\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes())
            .and_then(|()| stream.write_all(&body)),
        Reply::CloseDelimited(body) => stream
            .write_all(format!("{ok}\r\n\r\n").as_bytes())
            .and_then(|()| stream.write_all(&body)),
        Reply::Status(code) => stream.write_all(
            format!(
                "HTTP/1.1 {code} Nope\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
            )
            .as_bytes(),
        ),
        Reply::CutShort { body, claimed } => stream
            .write_all(format!("{ok}\r\nContent-Length: {claimed}\r\n\r\n").as_bytes())
            .and_then(|()| stream.write_all(&body)),
        Reply::Redirect(to) => stream.write_all(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        ),
        Reply::Stall(how_long) => {
            std::thread::sleep(how_long);
            Ok(())
        }
    };
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

// ---------------------------------------------------------------------------
// Helpers.

/// A fresh cache folder, deleted at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mobilenet-fetch-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(server: &Server) -> FetchOptions {
    FetchOptions {
        base_url: Some(server.base.clone()),
        timeout: Duration::from_secs(5),
        max_bytes: 10 * 1024 * 1024,
        progress: false,
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A test entry published at `https://models.example/<path>`.
fn entry(
    name: &'static str,
    path: &str,
    member: Option<&'static str>,
    kind: ModelFileKind,
) -> CatalogEntry {
    CatalogEntry {
        name,
        url: leak(format!("https://models.example/{path}")),
        archive_member: member,
        sha256: None,
        kind,
    }
}

/// A valid safetensors file with one f32 tensor `w` of 4 values.
fn safetensors_bytes() -> Vec<u8> {
    let mut header = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for v in [1.0f32, -2.0, 0.5, 3.25] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    assert!(safetensors::SafeTensors::deserialize(&out).is_ok());
    out
}

/// A gzip-compressed tar holding `members` (paths as given, e.g. `./x`).
fn tgz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A tgz whose single entry has the raw name `raw_name` (which the `tar`
/// builder would refuse to write: `..`, absolute paths).
fn tgz_with_raw_name(raw_name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..raw_name.len()].copy_from_slice(raw_name);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The files in `dir` (names).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// After a failed fetch: nothing under the final name, no temporary file.
fn assert_nothing_stored(entry: &CatalogEntry, cache: &Path) {
    assert!(
        !cached_path(entry, cache).exists(),
        "a file was stored under the final name after a failure"
    );
    assert_eq!(listing(cache), Vec::<String>::new(), "leftover files");
}

fn message(result: mobilenet::Result<PathBuf>) -> (Error, String) {
    let err = result.expect_err("fetch should have failed");
    let text = err.to_string();
    eprintln!("fetch refused, as expected: {text}");
    (err, text)
}

// ---------------------------------------------------------------------------
// Catalogue, names, paths.

#[test]
fn catalog_lists_the_published_models() {
    let entries = catalog();
    assert_eq!(entries.len(), 33);
    let mut names: Vec<&str> = entries.iter().map(|e| e.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 33, "names are unique");
    let mut float = 0;
    let mut quant = 0;
    for alpha in ["1.0", "0.75", "0.5", "0.25"] {
        for res in [224, 192, 160, 128] {
            for suffix in ["", "_quant"] {
                let name = format!("mobilenet_v1_{alpha}_{res}{suffix}");
                let e = find(&name).unwrap();
                assert_eq!(e.name, name);
                assert_eq!(e.kind, ModelFileKind::Tflite);
                assert_eq!(
                    e.url,
                    format!(
                        "https://storage.googleapis.com/download.tensorflow.org/models/mobilenet_v1_2018_08_02/{name}.tgz"
                    )
                );
                assert_eq!(e.archive_member, Some(format!("./{name}.tflite").as_str()));
                if suffix.is_empty() {
                    float += 1
                } else {
                    quant += 1
                }
            }
        }
    }
    assert_eq!((float, quant), (16, 16));
    let timm = find("mobilenetv1_100").unwrap();
    assert_eq!(timm.kind, ModelFileKind::Safetensors);
    assert_eq!(timm.archive_member, None);
    assert_eq!(
        timm.url,
        "https://huggingface.co/timm/mobilenetv1_100.ra4_e3600_r224_in1k/resolve/main/model.safetensors"
    );
    // No hash is pinned without having verified it.
    assert!(entries.iter().all(|e| e.sha256.is_none()));
}

#[test]
fn find_is_forgiving_about_case_and_suggests_close_names() {
    assert_eq!(
        find(" MobileNet_V1_0.5_160 ").unwrap().name,
        "mobilenet_v1_0.5_160"
    );

    let err = find("mobilenet_v1_1.0_225").unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)));
    assert!(err.is_bad_input());
    let text = err.to_string();
    assert!(text.contains("\"mobilenet_v1_1.0_225\""), "{text}");
    assert!(text.contains("did you mean"), "{text}");
    assert!(text.contains("mobilenet_v1_1.0_224"), "{text}");
    assert!(text.contains("--list"), "{text}");

    let text = find("mobilenet_v1_0.5_160_qant").unwrap_err().to_string();
    assert!(text.contains("mobilenet_v1_0.5_160_quant"), "{text}");

    let text = find("resnet50").unwrap_err().to_string();
    assert!(text.contains("unknown model name \"resnet50\""), "{text}");
    assert!(text.contains("mobilenet_v1_1.0_224"), "{text}");
    assert!(text.contains("mobilenetv1_100"), "{text}");
}

#[test]
fn cache_dir_follows_the_documented_order() {
    let os = |s: &str| Some(std::ffi::OsString::from(s));
    assert_eq!(
        cache_dir_from(os("/c"), os("/x"), os("/h")).unwrap(),
        PathBuf::from("/c")
    );
    assert_eq!(
        cache_dir_from(None, os("/x"), os("/h")).unwrap(),
        PathBuf::from("/x/mobilenet")
    );
    assert_eq!(
        cache_dir_from(os(""), os("/x"), os("/h")).unwrap(),
        PathBuf::from("/x/mobilenet")
    );
    // A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
    assert_eq!(
        cache_dir_from(None, os("rel"), os("/h")).unwrap(),
        PathBuf::from("/h/.cache/mobilenet")
    );
    assert_eq!(
        cache_dir_from(None, None, os("/h")).unwrap(),
        PathBuf::from("/h/.cache/mobilenet")
    );
    let err = cache_dir_from(None, None, None).unwrap_err();
    assert!(err.to_string().contains("MOBILENET_CACHE"), "{err}");
    // The real environment gives some folder (HOME is set here).
    if std::env::var_os("HOME").is_some() {
        assert!(fetch::default_cache_dir().is_ok());
    }
}

#[test]
fn cached_path_and_url_resolution() {
    let e = find("mobilenet_v1_0.25_128_quant").unwrap();
    assert_eq!(
        cached_path(e, Path::new("/cache")),
        PathBuf::from("/cache/mobilenet_v1_0.25_128_quant.tflite")
    );
    let timm = find("mobilenetv1_100").unwrap();
    assert_eq!(
        cached_path(timm, Path::new("/cache")),
        PathBuf::from("/cache/mobilenetv1_100.safetensors")
    );
    assert_eq!(resolve_url(e, None).unwrap(), e.url);
    assert_eq!(
        resolve_url(e, Some("http://127.0.0.1:9/")).unwrap(),
        "http://127.0.0.1:9/download.tensorflow.org/models/mobilenet_v1_2018_08_02/mobilenet_v1_0.25_128_quant.tgz"
    );
    assert_eq!(
        resolve_url(timm, Some("https://mirror.example")).unwrap(),
        "https://mirror.example/timm/mobilenetv1_100.ra4_e3600_r224_in1k/resolve/main/model.safetensors"
    );
    for bad in ["127.0.0.1:9", "ftp://x", "http://"] {
        assert!(
            matches!(resolve_url(e, Some(bad)), Err(Error::InvalidConfig(_))),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------
// Successful downloads and the cache.

#[test]
fn fetches_a_real_tflite_model_from_its_archive_and_then_uses_the_cache() {
    let Some(shared) = common::shared_dir("fetches_a_real_tflite_model_from_its_archive") else {
        return;
    };
    let model = std::fs::read(shared.join(REAL_TFLITE)).unwrap();
    let entry = find("mobilenet_v1_0.25_224").unwrap();
    let archive = tgz(&[
        ("./mobilenet_v1_0.25_224.ckpt.meta", b"checkpoint, ignored"),
        (
            "./mobilenet_v1_0.25_224_info.txt",
            b"Model: mobilenet_v1_0.25_224",
        ),
        ("./mobilenet_v1_0.25_224.tflite", &model),
    ]);
    let server = Server::start(vec![(
        "/download.tensorflow.org/models/mobilenet_v1_2018_08_02/mobilenet_v1_0.25_224.tgz"
            .to_string(),
        Reply::Ok(archive),
    )]);
    let cache = TempDir::new("real");
    let path = fetch::fetch(entry, &cache.0, &options(&server)).unwrap();
    assert_eq!(path, cache.0.join("mobilenet_v1_0.25_224.tflite"));
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert_eq!(listing(&cache.0), vec!["mobilenet_v1_0.25_224.tflite"]);
    assert_eq!(server.hits(), 1);

    // Cache hit: no request at all.
    let again = fetch::fetch(entry, &cache.0, &options(&server)).unwrap();
    assert_eq!(again, path);
    assert_eq!(server.hits(), 1, "a cache hit must not touch the network");

    // A known, matching sha256 is accepted; a wrong one is refused, with
    // nothing stored.
    let mut pinned = entry.clone();
    pinned.sha256 = Some(leak(sha256_hex(&model)));
    let other_cache = TempDir::new("real-pinned");
    fetch::fetch(&pinned, &other_cache.0, &options(&server)).unwrap();
    pinned.sha256 = Some("00".repeat(32).leak());
    let wrong_cache = TempDir::new("real-wrong-sha");
    let (err, text) = message(fetch::fetch(&pinned, &wrong_cache.0, &options(&server)));
    assert!(matches!(err, Error::Format(_)), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(
        text.contains(&format!("expected sha256 {}", "00".repeat(32))),
        "{text}"
    );
    assert!(
        text.contains(&format!("got {}", sha256_hex(&model))),
        "{text}"
    );
    assert_nothing_stored(&pinned, &wrong_cache.0);
}

#[test]
fn fetches_an_archive_member_and_then_uses_the_cache() {
    let model = safetensors_bytes();
    let e = entry(
        "test_archive",
        "pub/test_archive.tgz",
        Some("./sub/test_archive.safetensors"),
        ModelFileKind::Safetensors,
    );
    let archive = tgz(&[
        ("./README", b"ignored"),
        ("./sub/test_archive.safetensors", &model),
        ("./after", b"never read"),
    ]);
    let server = Server::start(vec![("/pub/test_archive.tgz".into(), Reply::Ok(archive))]);
    let cache = TempDir::new("member");
    let path = fetch::fetch(&e, &cache.0, &options(&server)).unwrap();
    assert_eq!(path, cache.0.join("test_archive.safetensors"));
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert_eq!(listing(&cache.0), vec!["test_archive.safetensors"]);
    for _ in 0..3 {
        assert_eq!(fetch::fetch(&e, &cache.0, &options(&server)).unwrap(), path);
    }
    assert_eq!(server.hits(), 1, "cache hits must not touch the network");
}

#[test]
fn an_uncompressed_tar_is_accepted_too() {
    // A server may hand out the tar already decompressed (HTTP transcoding).
    let model = safetensors_bytes();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(model.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "./plain.safetensors", model.as_slice())
        .unwrap();
    let tar_bytes = builder.into_inner().unwrap();
    let e = entry(
        "plain",
        "plain.tgz",
        Some("./plain.safetensors"),
        ModelFileKind::Safetensors,
    );
    let server = Server::start(vec![("/plain.tgz".into(), Reply::Ok(tar_bytes))]);
    let cache = TempDir::new("plain-tar");
    let path = fetch::fetch(&e, &cache.0, &options(&server)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), model);
}

#[test]
fn fetches_a_plain_file_through_a_redirect() {
    let model = safetensors_bytes();
    let e = entry(
        "test_plain",
        "org/model/resolve/main/model.safetensors",
        None,
        ModelFileKind::Safetensors,
    );
    let server = Server::start(vec![
        (
            "/org/model/resolve/main/model.safetensors".into(),
            Reply::Redirect("/cdn/blob/abc".into()),
        ),
        ("/cdn/blob/abc".into(), Reply::CloseDelimited(model.clone())),
    ]);
    let cache = TempDir::new("redirect");
    let path = fetch::fetch(&e, &cache.0, &options(&server)).unwrap();
    assert_eq!(path, cache.0.join("test_plain.safetensors"));
    assert_eq!(std::fs::read(&path).unwrap(), model);
    assert_eq!(server.hits(), 2);
    assert_eq!(listing(&cache.0), vec!["test_plain.safetensors"]);

    // With the right sha256 pinned it is accepted; with a wrong one the
    // download is deleted and the message says expected vs got.
    let mut pinned = e.clone();
    pinned.sha256 = Some(leak(sha256_hex(&model)));
    let ok_cache = TempDir::new("redirect-pinned");
    fetch::fetch(&pinned, &ok_cache.0, &options(&server)).unwrap();
    pinned.sha256 = Some(leak("ab".repeat(32)));
    let bad_cache = TempDir::new("redirect-wrong-sha");
    let (err, text) = message(fetch::fetch(&pinned, &bad_cache.0, &options(&server)));
    assert!(matches!(err, Error::Format(_)), "{text}");
    assert!(
        text.contains(&format!(
            "expected sha256 {}, got {}",
            "ab".repeat(32),
            sha256_hex(&model)
        )),
        "{text}"
    );
    assert_nothing_stored(&pinned, &bad_cache.0);
}

#[test]
fn a_damaged_cached_file_is_downloaded_again() {
    let model = safetensors_bytes();
    let e = entry("redo", "redo.safetensors", None, ModelFileKind::Safetensors);
    let server = Server::start(vec![("/redo.safetensors".into(), Reply::Ok(model.clone()))]);
    let cache = TempDir::new("redo");
    let final_path = cached_path(&e, &cache.0);
    std::fs::write(&final_path, b"half a file").unwrap();
    let path = fetch::fetch(&e, &cache.0, &options(&server)).unwrap();
    assert_eq!(server.hits(), 1);
    assert_eq!(std::fs::read(path).unwrap(), model);
    assert_eq!(listing(&cache.0), vec!["redo.safetensors"]);
}

#[test]
fn concurrent_fetches_of_one_model_end_with_one_valid_file() {
    let model = safetensors_bytes();
    let e = entry(
        "together",
        "together.tgz",
        Some("./together.safetensors"),
        ModelFileKind::Safetensors,
    );
    let archive = tgz(&[("./together.safetensors", &model)]);
    let server = Server::start(vec![("/together.tgz".into(), Reply::Ok(archive))]);
    let cache = TempDir::new("concurrent");
    let opts = options(&server);
    let results: Vec<mobilenet::Result<PathBuf>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| fetch::fetch(&e, &cache.0, &opts)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), &cached_path(&e, &cache.0));
    }
    assert!((1..=4).contains(&server.hits()));
    assert_eq!(std::fs::read(cached_path(&e, &cache.0)).unwrap(), model);
    assert_eq!(listing(&cache.0), vec!["together.safetensors"]);
}

// ---------------------------------------------------------------------------
// Refusals: nothing is ever stored under the final name.

#[test]
fn a_corrupt_archive_is_refused() {
    let model = safetensors_bytes();
    let mut archive = tgz(&[("./x.safetensors", &model)]);
    // Damage the compressed stream in the middle.
    let middle = archive.len() / 2;
    for b in &mut archive[middle..middle + 8] {
        *b ^= 0x5a;
    }
    let e = entry(
        "x",
        "x.tgz",
        Some("./x.safetensors"),
        ModelFileKind::Safetensors,
    );
    let garbage = entry("g", "g.tgz", Some("./g.tflite"), ModelFileKind::Tflite);
    let server = Server::start(vec![
        ("/x.tgz".into(), Reply::Ok(archive)),
        (
            "/g.tgz".into(),
            Reply::Ok(b"<!DOCTYPE html><html>login first</html>".repeat(20)),
        ),
    ]);
    let cache = TempDir::new("corrupt");
    let (err, text) = message(fetch::fetch(&e, &cache.0, &options(&server)));
    assert!(matches!(err, Error::Format(_)), "{text}");
    assert!(text.contains("damaged"), "{text}");
    assert_nothing_stored(&e, &cache.0);

    let (err, text) = message(fetch::fetch(&garbage, &cache.0, &options(&server)));
    assert!(matches!(err, Error::Format(_)), "{text}");
    assert!(text.contains("web page"), "{text}");
    assert_nothing_stored(&garbage, &cache.0);
}

#[test]
fn a_file_with_the_wrong_identifier_is_refused() {
    let e = entry(
        "wrong_id",
        "wrong_id.tgz",
        Some("./wrong_id.tflite"),
        ModelFileKind::Tflite,
    );
    let fake = entry(
        "fake",
        "fake.tgz",
        Some("./fake.tflite"),
        ModelFileKind::Tflite,
    );
    let mut tiny_fake = b"\x10\0\0\0TFL3".to_vec();
    tiny_fake.extend_from_slice(&[0u8; 56]);
    let server = Server::start(vec![
        (
            "/wrong_id.tgz".into(),
            Reply::Ok(tgz(&[(
                "./wrong_id.tflite",
                b"\x10\0\0\0ONNX and then some bytes",
            )])),
        ),
        (
            "/fake.tgz".into(),
            Reply::Ok(tgz(&[("./fake.tflite", &tiny_fake)])),
        ),
    ]);
    let cache = TempDir::new("wrong-id");
    let (err, text) = message(fetch::fetch(&e, &cache.0, &options(&server)));
    assert!(matches!(err, Error::Format(_)), "{text}");
    assert!(text.contains("\"TFL3\""), "{text}");
    assert!(text.contains("\"ONNX\""), "{text}");
    assert_nothing_stored(&e, &cache.0);

    // The identifier alone is not enough: the TFLite importer must accept it.
    let (err, text) = message(fetch::fetch(&fake, &cache.0, &options(&server)));
    assert!(matches!(err, Error::Format(_)), "{text}");
    assert!(text.contains("not a usable TFLite MobileNet v1"), "{text}");
    assert_nothing_stored(&fake, &cache.0);

    // The same check guards safetensors downloads.
    let st = entry("st", "st.safetensors", None, ModelFileKind::Safetensors);
    let server = Server::start(vec![(
        "/st.safetensors".into(),
        Reply::Ok(b"\xff\xff\xff\xff\xff\xff\xff\x7fnot json".to_vec()),
    )]);
    let (err, text) = message(fetch::fetch(&st, &cache.0, &options(&server)));
    assert!(matches!(err, Error::Format(_)), "{text}");
    assert!(text.contains("safetensors"), "{text}");
    assert_nothing_stored(&st, &cache.0);
}

#[test]
fn an_archive_without_the_member_says_what_it_holds() {
    let e = entry("m", "m.tgz", Some("./m.tflite"), ModelFileKind::Tflite);
    let server = Server::start(vec![(
        "/m.tgz".into(),
        Reply::Ok(tgz(&[("./m.ckpt.meta", b"x"), ("./m_info.txt", b"y")])),
    )]);
    let cache = TempDir::new("no-member");
    let (err, text) = message(fetch::fetch(&e, &cache.0, &options(&server)));
    assert!(matches!(err, Error::Format(_)), "{text}");
    assert!(text.contains("has no ./m.tflite"), "{text}");
    assert!(text.contains("m.ckpt.meta, m_info.txt"), "{text}");
    assert_nothing_stored(&e, &cache.0);
}

#[test]
fn archives_with_unsafe_paths_are_refused() {
    let model = safetensors_bytes();
    let e = entry(
        "u",
        "u.tgz",
        Some("./u.safetensors"),
        ModelFileKind::Safetensors,
    );
    for (raw, why) in [
        (b"../u.safetensors".as_slice(), "`..`"),
        (b"./a/../../u.safetensors".as_slice(), "`..`"),
        (b"/u.safetensors".as_slice(), "absolute"),
    ] {
        let server = Server::start(vec![(
            "/u.tgz".into(),
            Reply::Ok(tgz_with_raw_name(raw, &model)),
        )]);
        let cache = TempDir::new("unsafe");
        let (err, text) = message(fetch::fetch(&e, &cache.0, &options(&server)));
        assert!(matches!(err, Error::Format(_)), "{text}");
        assert!(text.contains("unsafe") && text.contains(why), "{text}");
        assert_nothing_stored(&e, &cache.0);
    }
}

#[test]
fn http_404_is_a_network_error() {
    let e = entry(
        "gone",
        "gone.tgz",
        Some("./gone.tflite"),
        ModelFileKind::Tflite,
    );
    let server = Server::start(vec![]);
    let cache = TempDir::new("404");
    let (err, text) = message(fetch::fetch(&e, &cache.0, &options(&server)));
    assert!(matches!(err, Error::Network(_)), "{text}");
    assert!(!err.is_bad_input());
    assert!(text.contains("HTTP 404"), "{text}");
    assert!(
        text.contains(&format!("{}/gone.tgz", server.base)),
        "{text}"
    );
    assert!(text.contains("--model PATH"), "{text}");
    assert_eq!(server.hits(), 1);
    assert_nothing_stored(&e, &cache.0);
}

#[test]
fn a_response_cut_short_is_refused() {
    let model = safetensors_bytes();
    let e = entry("cut", "cut.safetensors", None, ModelFileKind::Safetensors);
    let server = Server::start(vec![(
        "/cut.safetensors".into(),
        Reply::CutShort {
            body: model[..model.len() / 2].to_vec(),
            claimed: model.len(),
        },
    )]);
    let cache = TempDir::new("cut");
    let (err, text) = message(fetch::fetch(&e, &cache.0, &options(&server)));
    assert!(matches!(err, Error::Network(_)), "{text}");
    assert!(text.contains("could not download cut"), "{text}");
    assert_nothing_stored(&e, &cache.0);
}

#[test]
fn a_body_larger_than_max_bytes_is_refused() {
    let big = vec![7u8; 300 * 1024];
    let announced = entry(
        "big",
        "big.tgz",
        Some("./big.tflite"),
        ModelFileKind::Tflite,
    );
    let unannounced = entry(
        "big2",
        "big2.tgz",
        Some("./big2.tflite"),
        ModelFileKind::Tflite,
    );
    let server = Server::start(vec![
        ("/big.tgz".into(), Reply::Ok(big.clone())),
        ("/big2.tgz".into(), Reply::CloseDelimited(big)),
    ]);
    let cache = TempDir::new("big");
    let opts = FetchOptions {
        max_bytes: 100 * 1024,
        ..options(&server)
    };
    for e in [&announced, &unannounced] {
        let (err, text) = message(fetch::fetch(e, &cache.0, &opts));
        assert!(matches!(err, Error::TooLarge(_)), "{text}");
        assert!(
            text.contains("larger than the download limit of 102400 bytes"),
            "{text}"
        );
        assert_nothing_stored(e, &cache.0);
    }

    // An archive member larger than the limit is refused too, although the
    // compressed download is small.
    let e = entry(
        "bomb",
        "bomb.tgz",
        Some("./bomb.safetensors"),
        ModelFileKind::Safetensors,
    );
    let server = Server::start(vec![(
        "/bomb.tgz".into(),
        Reply::Ok(tgz(&[("./bomb.safetensors", &vec![0u8; 200 * 1024])])),
    )]);
    let opts = FetchOptions {
        max_bytes: 100 * 1024,
        ..options(&server)
    };
    let (err, text) = message(fetch::fetch(&e, &cache.0, &opts));
    assert!(matches!(err, Error::TooLarge(_)), "{text}");
    assert_nothing_stored(&e, &cache.0);

    // ... and so is an archive expanding past 4x the limit before the member.
    let server = Server::start(vec![(
        "/bomb.tgz".into(),
        Reply::Ok(tgz(&[
            ("./filler", &vec![0u8; 500 * 1024]),
            ("./bomb.safetensors", &safetensors_bytes()),
        ])),
    )]);
    let opts = FetchOptions {
        max_bytes: 100 * 1024,
        ..options(&server)
    };
    let (err, text) = message(fetch::fetch(&e, &cache.0, &opts));
    assert!(matches!(err, Error::TooLarge(_)), "{text}");
    assert!(text.contains("expands to more than"), "{text}");
    assert_nothing_stored(&e, &cache.0);
}

#[test]
fn a_silent_server_times_out() {
    let e = entry("slow", "slow.safetensors", None, ModelFileKind::Safetensors);
    let server = Server::start(vec![(
        "/slow.safetensors".into(),
        Reply::Stall(Duration::from_secs(4)),
    )]);
    let cache = TempDir::new("slow");
    let opts = FetchOptions {
        timeout: Duration::from_millis(500),
        ..options(&server)
    };
    let start = Instant::now();
    let (err, text) = message(fetch::fetch(&e, &cache.0, &opts));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, Error::Network(_)), "{text}");
    assert!(text.to_lowercase().contains("timeout"), "{text}");
    assert_nothing_stored(&e, &cache.0);
}

#[test]
fn offline_error_says_what_to_do() {
    // A port nothing listens on: bind, note it, close.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let e = find("mobilenet_v1_1.0_224").unwrap();
    let cache = TempDir::new("offline");
    let opts = FetchOptions {
        base_url: Some(format!("http://127.0.0.1:{port}")),
        timeout: Duration::from_secs(3),
        ..FetchOptions::default()
    };
    let (err, text) = message(fetch::fetch(e, &cache.0, &opts));
    assert!(matches!(err, Error::Network(_)), "{text}");
    assert!(!err.is_bad_input());
    let url = format!(
        "http://127.0.0.1:{port}/download.tensorflow.org/models/mobilenet_v1_2018_08_02/mobilenet_v1_1.0_224.tgz"
    );
    assert!(
        text.contains(&format!(
            "could not download mobilenet_v1_1.0_224 from {url}: "
        )),
        "{text}"
    );
    assert!(text.contains("If this machine is offline"), "{text}");
    assert!(text.contains("mobilenet_v1_1.0_224.tflite"), "{text}");
    assert!(text.contains("--model PATH"), "{text}");
    assert!(!cached_path(e, &cache.0).exists());
    assert_eq!(listing(&cache.0), Vec::<String>::new());
}

#[test]
fn leftovers_of_a_crashed_download_are_not_taken_for_the_model() {
    let model = safetensors_bytes();
    let e = entry(
        "crash",
        "crash.safetensors",
        None,
        ModelFileKind::Safetensors,
    );
    let server = Server::start(vec![(
        "/crash.safetensors".into(),
        Reply::Ok(model.clone()),
    )]);
    let cache = TempDir::new("crash");
    // What a download killed midway leaves: a temporary file, never the final name.
    let leftover = cache.0.join(".crash.1-2-3.part");
    std::fs::write(&leftover, &model[..10]).unwrap();
    let path = fetch::fetch(&e, &cache.0, &options(&server)).unwrap();
    assert_eq!(server.hits(), 1);
    assert_eq!(std::fs::read(path).unwrap(), model);
    // A fresh leftover may belong to a running download: it is kept.
    assert!(leftover.exists());
}

#[test]
fn creates_the_cache_folder_and_refuses_unsafe_entry_names() {
    let model = safetensors_bytes();
    let e = entry(
        "nested",
        "nested.safetensors",
        None,
        ModelFileKind::Safetensors,
    );
    let server = Server::start(vec![(
        "/nested.safetensors".into(),
        Reply::Ok(model.clone()),
    )]);
    let root = TempDir::new("nested");
    let cache = root.0.join("a").join("b");
    let path = fetch::fetch(&e, &cache, &options(&server)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), model);

    let evil = entry(
        "../evil",
        "evil.safetensors",
        None,
        ModelFileKind::Safetensors,
    );
    let (err, text) = message(fetch::fetch(&evil, &cache, &options(&server)));
    assert!(matches!(err, Error::InvalidConfig(_)), "{text}");
    assert_eq!(server.hits(), 1, "refused before any request");
}
