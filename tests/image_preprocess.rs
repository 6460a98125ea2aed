//! Image decoding and preprocessing: bit-exact against the reference inputs
//! in `shared/refs/`, robust on odd and hostile files.

mod common;

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::{ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use mobilenet::Error;
use mobilenet::image::{
    MAX_PIXELS, Preprocess, RgbImage, TORCH_MEAN, TORCH_STD, decode_image, preprocess,
    preprocess_into, preprocess_tf_u8, preprocess_torch_u8, read_image, tf_central_crop_box,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn encode<P, C>(img: &ImageBuffer<P, C>, format: ImageFormat) -> Vec<u8>
where
    P: image::Pixel + image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

fn is_image_err<T: std::fmt::Debug>(r: &mobilenet::Result<T>) -> bool {
    matches!(r, Err(Error::Image(_)))
}

/// Every file under `shared/images/`, by the sha256 of its bytes.
fn images_by_hash(shared: &Path) -> HashMap<String, PathBuf> {
    let mut map = HashMap::new();
    for dir in std::fs::read_dir(shared.join("images")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.is_file() {
                map.insert(sha256_hex(&std::fs::read(&path).unwrap()), path);
            }
        }
    }
    map
}

/// Differing bytes and the largest difference.
fn diff_u8(a: &[u8], b: &[u8]) -> (usize, u8) {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .filter(|(x, y)| x != y)
        .fold((0, 0), |(n, m), (x, y)| (n + 1, m.max(x.abs_diff(*y))))
}

fn read_f32_le(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn references_match() {
    let Some(shared) = common::shared_dir("references_match") else {
        return;
    };
    let refs_dir = shared.join("refs");
    let by_hash = images_by_hash(&shared);
    let mut json_files: Vec<PathBuf> = std::fs::read_dir(&refs_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    json_files.sort();
    assert!(!json_files.is_empty(), "no reference JSON in {refs_dir:?}");

    let mut decoded: HashMap<String, RgbImage> = HashMap::new();
    let mut checked_u8 = 0;
    let mut checked_f32 = 0;
    for json_path in &json_files {
        let name = json_path.file_name().unwrap().to_string_lossy();
        let json: Value = serde_json::from_str(&std::fs::read_to_string(json_path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let img = &json["image"];
        let pre = &json["preprocessing"];
        let id = img["id"].as_str().unwrap().to_string();
        let format = img["format"].as_str().unwrap();
        let exact = format != "JPEG";
        let file_sha = img["file_sha256"].as_str().unwrap();
        let path = by_hash
            .get(file_sha)
            .unwrap_or_else(|| panic!("{name}: no file in shared/images with sha256 {file_sha}"));

        if !decoded.contains_key(&id) {
            let rgb = read_image(path).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                (rgb.width as u64, rgb.height as u64),
                (
                    img["width"].as_u64().unwrap(),
                    img["height"].as_u64().unwrap()
                ),
                "{name}: size"
            );
            let hash = sha256_hex(&rgb.data);
            let want = img["decoded_rgb_sha256"].as_str().unwrap();
            if exact {
                assert_eq!(hash, want, "{name}: decoded RGB of {format} differs");
                eprintln!("{id} ({format}): decoded RGB sha256 matches Pillow");
            } else {
                eprintln!(
                    "{id} ({format}): decoded RGB sha256 {} Pillow's (JPEG decoders may differ)",
                    if hash == want {
                        "matches"
                    } else {
                        "differs from"
                    }
                );
            }
            decoded.insert(id.clone(), rgb);
        }
        let rgb = &decoded[&id];

        let crop: Vec<usize> = pre["crop_box_top_left_height_width"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            tf_central_crop_box(rgb.height, rgb.width).to_vec(),
            crop,
            "{name}: crop box"
        );

        let size = pre["output_size"][0].as_u64().unwrap() as usize;
        assert_eq!(pre["output_size"][1].as_u64().unwrap() as usize, size);

        let u8_file = pre["input_u8"]["file"].as_str().unwrap();
        let want_u8 = std::fs::read(refs_dir.join(u8_file)).unwrap();
        let got_u8 = preprocess_tf_u8(rgb, size).unwrap();
        let (n_diff, max_diff) = diff_u8(&got_u8, &want_u8);
        if exact {
            assert_eq!(n_diff, 0, "{name}: {u8_file}: {n_diff} bytes differ");
        } else {
            eprintln!(
                "{name}: {u8_file}: {n_diff} of {} bytes differ, max difference {max_diff}",
                want_u8.len()
            );
            assert!(
                max_diff <= 3,
                "{name}: JPEG input differs by up to {max_diff}"
            );
        }
        checked_u8 += 1;

        if let Some(f32_file) = pre["input_f32"]["file"].as_str() {
            let want = read_f32_le(&refs_dir.join(f32_file));
            let got = preprocess(rgb, size, Preprocess::Tf).unwrap();
            assert_eq!(got.shape(), &[1, size, size, 3]);
            let max = got
                .data()
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            if exact {
                assert!(
                    got.data()
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name}: {f32_file} differs (max {max})"
                );
            } else {
                eprintln!("{name}: {f32_file}: max difference {max}");
                assert!(max <= 3.0 / 127.5 + 1e-6);
            }
            checked_f32 += 1;
        }
    }
    assert!(checked_u8 >= json_files.len());
    assert!(checked_f32 > 0);
}

/// Synthetic images in every layout the decoder must turn into RGB.
#[test]
fn odd_layouts_decode_to_rgb() {
    // Grayscale 8-bit: gray copied to the three channels.
    let gray = ImageBuffer::from_fn(5, 3, |x, y| Luma([(x * 40 + y) as u8]));
    let rgb = decode_image(&encode(&gray, ImageFormat::Png)).unwrap();
    assert_eq!((rgb.width, rgb.height), (5, 3));
    assert_eq!(rgb.pixel(4, 2), [162, 162, 162]);

    // Gray + alpha: alpha dropped, not composited.
    let la = ImageBuffer::from_fn(3, 2, |x, _| LumaA([(x * 100) as u8, 7]));
    let rgb = decode_image(&encode(&la, ImageFormat::Png)).unwrap();
    assert_eq!(rgb.pixel(2, 1), [200, 200, 200]);

    // RGBA: alpha dropped.
    let rgba = ImageBuffer::from_fn(4, 4, |x, y| Rgba([x as u8 * 60, y as u8 * 60, 9, 0]));
    let rgb = decode_image(&encode(&rgba, ImageFormat::Png)).unwrap();
    assert_eq!(rgb.pixel(3, 2), [180, 120, 9]);

    // 16-bit RGB and gray: the high byte, as Pillow's ;16B raw modes.
    let rgb16 = ImageBuffer::from_fn(3, 3, |x, y| {
        Rgb([(x * 20000) as u16, (y * 30000) as u16, 0x12ff])
    });
    let rgb = decode_image(&encode(&rgb16, ImageFormat::Png)).unwrap();
    assert_eq!(
        rgb.pixel(2, 1),
        [(40000u32 >> 8) as u8, (30000u32 >> 8) as u8, 0x12]
    );
    let gray16 = ImageBuffer::from_fn(2, 2, |x, _| Luma([if x == 0 { 0u16 } else { 65535 }]));
    let rgb = decode_image(&encode(&gray16, ImageFormat::Png)).unwrap();
    assert_eq!(rgb.data, [0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255]);

    // The same pixels through BMP and JPEG (format sniffed from content).
    let plain = ImageBuffer::from_fn(8, 8, |x, y| Rgb([x as u8 * 30, y as u8 * 30, 128]));
    let from_bmp = decode_image(&encode(&plain, ImageFormat::Bmp)).unwrap();
    assert_eq!(from_bmp.data, plain.as_raw().as_slice());
    let from_jpeg = decode_image(&encode(&plain, ImageFormat::Jpeg)).unwrap();
    assert_eq!((from_jpeg.width, from_jpeg.height), (8, 8));
    let (_, max) = diff_u8(&from_jpeg.data, plain.as_raw());
    assert!(max < 40, "JPEG round trip off by {max}");
    let gray_jpeg = decode_image(&encode(&gray, ImageFormat::Jpeg)).unwrap();
    assert!(
        gray_jpeg
            .data
            .chunks(3)
            .all(|p| p[0] == p[1] && p[1] == p[2])
    );

    // Every one of them preprocesses with both recipes.
    for img in [&rgb, &from_bmp, &from_jpeg, &gray_jpeg] {
        for recipe in Preprocess::ALL {
            let t = preprocess(img, 16, recipe).unwrap();
            assert_eq!(t.shape(), &[1, 16, 16, 3]);
            assert!(t.data().iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn tiny_images() {
    // 1x1: the TF crop keeps the pixel, every output equals it.
    assert_eq!(tf_central_crop_box(1, 1), [0, 0, 1, 1]);
    let one = ImageBuffer::from_pixel(1, 1, Rgb([10u8, 20, 30]));
    let rgb = decode_image(&encode(&one, ImageFormat::Png)).unwrap();
    assert_eq!(rgb.data, [10, 20, 30]);
    let q = preprocess_tf_u8(&rgb, 7).unwrap();
    assert!(q.chunks(3).all(|p| p == [10, 20, 30]));
    let q = preprocess_torch_u8(&rgb, 7).unwrap();
    assert!(q.chunks(3).all(|p| p == [10, 20, 30]));

    // 1xN and Nx1, through PNG and BMP.
    for (w, h) in [(1u32, 9u32), (9, 1), (1, 2), (2, 1), (1, 1000)] {
        let img = ImageBuffer::from_fn(w, h, |x, y| Rgb([(x + y) as u8, 3, 250]));
        for format in [ImageFormat::Png, ImageFormat::Bmp] {
            let rgb = decode_image(&encode(&img, format)).unwrap();
            assert_eq!((rgb.width, rgb.height), (w as usize, h as usize));
            for recipe in Preprocess::ALL {
                for size in [1, 2, 32] {
                    let t = preprocess(&rgb, size, recipe).unwrap();
                    assert_eq!(t.shape(), &[1, size, size, 3]);
                    assert!(t.data().iter().all(|v| v.is_finite()));
                }
            }
        }
    }
}

#[test]
fn tf_recipe_by_hand() {
    // A 2x2 image resized to 4x4 with no crop (H * 0.0625 < 1): half-pixel
    // centres put the outputs at source coordinates -0.25, 0.25, 0.75, 1.25.
    let rgb = RgbImage::new(
        2,
        2,
        vec![0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255],
    )
    .unwrap();
    let q = preprocess_tf_u8(&rgb, 4).unwrap();
    let row0: Vec<u8> = q[..12].chunks(3).map(|p| p[0]).collect();
    // x taps: (0,0,.75), (0,1,.25), (0,1,.75), (1,1,.25): 0, 25, 75, 100.
    assert_eq!(row0, [0, 25, 75, 100]);
    let col0: Vec<u8> = (0..4).map(|y| q[y * 12]).collect();
    assert_eq!(col0, [0, 50, 150, 200]);
    let f = preprocess(&rgb, 4, Preprocess::Tf).unwrap();
    for (x, &q) in f.data().iter().zip(&q) {
        assert_eq!(x.to_bits(), (f32::from(q) / 127.5 - 1.0).to_bits());
    }
}

#[test]
fn torch_recipe() {
    // A constant image stays constant through the resize, so every output is
    // exactly (c / 255 - mean) / std in f32, as ToTensor + Normalize compute.
    let (w, h) = (300, 200);
    let rgb = RgbImage::new(w, h, [40u8, 128, 231].repeat(w * h)).unwrap();
    for size in [224, 160, 96] {
        let t = preprocess(&rgb, size, Preprocess::Torch).unwrap();
        assert_eq!(t.shape(), &[1, size, size, 3]);
        for (i, &v) in t.data().iter().enumerate() {
            let c = i % 3;
            let want = (f32::from([40u8, 128, 231][c]) / 255.0 - TORCH_MEAN[c]) / TORCH_STD[c];
            assert_eq!(v.to_bits(), want.to_bits(), "size {size}, index {i}");
        }
    }

    // A horizontal gradient stays monotonic along rows and constant down
    // columns; channels keep their order.
    let (w, h) = (640, 480);
    let mut data = Vec::with_capacity(w * h * 3);
    for _ in 0..h {
        for x in 0..w {
            let v = (x * 255 / (w - 1)) as u8;
            data.extend_from_slice(&[v, 255 - v, 77]);
        }
    }
    let rgb = RgbImage::new(w, h, data).unwrap();
    let q = preprocess_torch_u8(&rgb, 224).unwrap();
    for y in 0..224 {
        let row = &q[y * 224 * 3..(y + 1) * 224 * 3];
        assert_eq!(row, &q[..224 * 3], "row {y} differs from row 0");
        for x in 1..224 {
            assert!(row[x * 3] >= row[x * 3 - 3], "red not increasing at {x}");
            assert!(
                row[x * 3 + 1] <= row[x * 3 - 2],
                "green not decreasing at {x}"
            );
            assert_eq!(row[x * 3 + 2], 77);
        }
    }
    // Resize to 341x256 then centre crop 224: the crop spans resized columns
    // 58..282, i.e. source columns (58.5..281.5) * 640/341 ~ 109.8..528.3.
    let first = f64::from(q[0]);
    let last = f64::from(q[223 * 3]);
    let expect = |sx: f64| sx * 255.0 / 639.0;
    assert!((first - expect(109.8)).abs() <= 2.0, "first column {first}");
    assert!((last - expect(528.3)).abs() <= 2.0, "last column {last}");

    // The float tensor is the normalised u8 image.
    let t = preprocess(&rgb, 224, Preprocess::Torch).unwrap();
    for (i, (&x, &q)) in t.data().iter().zip(&q).enumerate() {
        let c = i % 3;
        assert_eq!(x, (f32::from(q) / 255.0 - TORCH_MEAN[c]) / TORCH_STD[c]);
    }

    // Box average when shrinking by an integer factor: a 2x2 checkerboard
    // of 0 and 200 blocks shrinks (512 -> 256) to the mean, 100.
    let (w, h) = (512, 512);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let v = if (x + y) % 2 == 0 { 0 } else { 200 };
            data.extend_from_slice(&[v, v, v]);
        }
    }
    let rgb = RgbImage::new(w, h, data).unwrap();
    let q = preprocess_torch_u8(&rgb, 224).unwrap();
    assert!(q.iter().all(|&v| v == 100), "checkerboard not averaged");
}

#[test]
fn thin_images_stay_cheap_with_torch() {
    // torchvision would resize a 1x20000 image to 256x5120000; we compute
    // only the centre crop.
    let rgb = RgbImage::new(20000, 1, vec![99; 20000 * 3]).unwrap();
    let start = Instant::now();
    let q = preprocess_torch_u8(&rgb, 224).unwrap();
    assert!(q.iter().all(|&v| v == 99));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn recipe_names_and_arguments() {
    for recipe in Preprocess::ALL {
        assert_eq!(recipe.name().parse::<Preprocess>().unwrap(), recipe);
        assert_eq!(recipe.to_string(), recipe.name());
    }
    assert_eq!(Preprocess::default(), Preprocess::Tf);
    assert_eq!("TORCH".parse::<Preprocess>().unwrap(), Preprocess::Torch);
    match "caffe".parse::<Preprocess>() {
        Err(Error::InvalidConfig(msg)) => {
            assert!(msg.contains("tf") && msg.contains("torch"), "{msg}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }

    let rgb = RgbImage::new(3, 3, vec![1; 27]).unwrap();
    assert!(matches!(
        preprocess(&rgb, 0, Preprocess::Tf),
        Err(Error::InvalidConfig(_))
    ));
    let mut short = vec![0f32; 10];
    assert!(matches!(
        preprocess_into(&rgb, 4, Preprocess::Tf, &mut short),
        Err(Error::Shape(_))
    ));
    let mut buf = vec![0f32; 4 * 4 * 3 * 2];
    for (recipe, chunk) in Preprocess::ALL.into_iter().zip(buf.chunks_exact_mut(48)) {
        preprocess_into(&rgb, 4, recipe, chunk).unwrap();
        assert_eq!(chunk, preprocess(&rgb, 4, recipe).unwrap().data());
    }
    assert!(is_image_err(&RgbImage::new(0, 3, vec![])));
    assert!(matches!(
        RgbImage::new(2, 2, vec![0; 11]),
        Err(Error::Shape(_))
    ));
    let broken = RgbImage {
        width: 5,
        height: 5,
        data: vec![0; 3],
    };
    assert!(preprocess(&broken, 8, Preprocess::Torch).is_err());
}

#[test]
fn missing_file_is_io_error() {
    let path = Path::new("/nonexistent/dir/photo.jpg");
    match read_image(path) {
        Err(Error::Io { path: p, .. }) => assert!(p.contains("photo.jpg")),
        other => panic!("expected Io error, got {other:?}"),
    }
}

/// Asserts `decode_image(bytes)` fails with `Error::Image` within a second.
fn assert_refused(bytes: &[u8], what: &str) {
    let start = Instant::now();
    let result = decode_image(bytes).map(|img| (img.width, img.height));
    assert!(
        is_image_err(&result),
        "{what}: expected Error::Image, got {result:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{what}: took {:?}",
        start.elapsed()
    );
}

/// Cut lengths: inside the signature, the header, early, middle and late
/// in the pixel data, and (JPEG, BMP) one byte short. A PNG whose pixel data
/// is complete but whose IEND trailer is cut still decodes, as in Pillow
/// (which does not read past the image data): see `png_without_trailer`.
fn cut_points(len: usize, format: &str) -> Vec<usize> {
    let mut cuts = vec![0, 1, 4, 8, 16, 30, 60, 100, len / 4, len / 2, len * 9 / 10];
    if format != "png" {
        cuts.extend([len - 2, len - 1]);
    } else {
        cuts.push(len - 40);
    }
    cuts.retain(|&c| c < len);
    cuts.sort();
    cuts.dedup();
    cuts
}

/// A PNG cut only in its IEND trailer has all its pixels; the decoder may
/// accept it (Pillow does) or refuse it, but never returns wrong pixels.
#[test]
fn png_without_trailer() {
    let img = ImageBuffer::from_fn(16, 16, |x, y| Rgb([x as u8, y as u8, 7]));
    let png = encode(&img, ImageFormat::Png);
    assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    for cut in 1..=12 {
        match decode_image(&png[..png.len() - cut]) {
            Ok(rgb) => assert_eq!(rgb.data, img.as_raw().as_slice(), "cut {cut}"),
            Err(e) => assert!(matches!(e, Error::Image(_)), "cut {cut}: {e:?}"),
        }
    }
}

#[test]
fn truncated_real_files_are_refused() {
    let Some(shared) = common::shared_dir("truncated_real_files_are_refused") else {
        return;
    };
    for rel in [
        "images/packages/chelsea.png",
        "images/packages/grace_hopper.jpg",
        "images/coral_test_data/cat.bmp",
    ] {
        let bytes = std::fs::read(shared.join(rel)).unwrap();
        decode_image(&bytes).unwrap();
        let ext = rel.rsplit('.').next().unwrap();
        for cut in cut_points(bytes.len(), ext) {
            assert_refused(&bytes[..cut], &format!("{rel} cut at {cut}"));
        }
    }
}

#[test]
fn truncated_synthetic_files_are_refused() {
    let img = ImageBuffer::from_fn(64, 48, |x, y| {
        Rgb([(x * 4) as u8, (y * 5) as u8, (x ^ y) as u8])
    });
    for (format, ext) in [
        (ImageFormat::Png, "png"),
        (ImageFormat::Jpeg, "jpg"),
        (ImageFormat::Bmp, "bmp"),
    ] {
        let bytes = encode(&img, format);
        decode_image(&bytes).unwrap();
        for cut in cut_points(bytes.len(), ext) {
            assert_refused(&bytes[..cut], &format!("{format:?} cut at {cut}"));
        }
    }
}

#[test]
fn garbage_is_refused() {
    assert_refused(&[], "empty");
    assert_refused(b"GIF89a....", "unsupported format");
    assert_refused(b"hello, this is not an image at all", "text");
    // Deterministic pseudo-random bytes, bare and behind each signature.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = vec![0u8; 4096];
    for b in &mut noise {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    assert_refused(&noise, "random bytes");
    for magic in [&b"\x89PNG\r\n\x1a\n"[..], &b"\xff\xd8\xff"[..], &b"BM"[..]] {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&noise);
        assert_refused(&bytes, &format!("noise after {magic:?}"));
    }
    // Flipped bytes in the middle of a real-looking PNG (CRC catches it).
    let img = ImageBuffer::from_fn(32, 32, |x, y| Rgb([x as u8, y as u8, 0]));
    let mut png = encode(&img, ImageFormat::Png);
    let mid = png.len() / 2;
    png[mid] ^= 0xff;
    png[mid + 1] ^= 0x55;
    assert_refused(&png, "corrupted PNG");
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&crc_input);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    // A little (valid zlib, far too short) image data, then the end.
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

fn bmp_header(width: i32, height: i32) -> Vec<u8> {
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&(54u32 + 16).to_le_bytes()); // file size (a lie)
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    bmp.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
    bmp.extend_from_slice(&width.to_le_bytes());
    bmp.extend_from_slice(&height.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes()); // planes
    bmp.extend_from_slice(&24u16.to_le_bytes()); // bits per pixel
    bmp.extend_from_slice(&[0; 24]); // no compression, sizes, palette
    bmp.extend_from_slice(&[0x7f; 16]);
    bmp
}

#[test]
fn huge_and_empty_headers_are_refused() {
    // The crafted headers are well formed: a control with a sane size must
    // get past the header and fail only for the missing pixel data.
    let header_ok = |bytes: &[u8]| match decode_image(bytes) {
        Err(Error::Image(msg)) => !msg.contains("over the limit") && !msg.contains("zero size"),
        _ => true,
    };
    assert!(header_ok(&png_header(4, 4)));
    assert!(header_ok(&bmp_header(4, 4)));
    // Refused by our pixel count check (naming MAX_PIXELS) or, for a side
    // over the limit, by the decoder's `Limits`.
    let over = |msg: &str| msg.contains(&MAX_PIXELS.to_string()) || msg.contains("limit");

    for (w, h) in [(100_000, 100_000), (20_000, 20_000), (u32::MAX / 2, 3)] {
        match decode_image(&png_header(w, h)) {
            Err(Error::Image(msg)) => assert!(over(&msg), "PNG {w}x{h}: {msg}"),
            other => panic!("PNG {w}x{h}: {other:?}"),
        }
        assert_refused(&png_header(w, h), &format!("PNG {w}x{h}"));
    }
    for (w, h) in [(100_000, 100_000), (100_000, -100_000), (20_000, 20_000)] {
        match decode_image(&bmp_header(w, h)) {
            Err(Error::Image(msg)) => assert!(over(&msg), "BMP {w}x{h}: {msg}"),
            other => panic!("BMP {w}x{h}: {other:?}"),
        }
        assert_refused(&bmp_header(w, h), &format!("BMP {w}x{h}"));
    }
    match decode_image(&png_header(100_000, 100_000)) {
        Err(Error::Image(msg)) => assert!(msg.contains("100000x100000"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Zero-sized images.
    assert_refused(&png_header(0, 5), "PNG 0x5");
    assert_refused(&bmp_header(0, 5), "BMP 0x5");
    assert_refused(&bmp_header(5, 0), "BMP 5x0");
}

/// Deterministic noise (a 64-bit LCG's high bits).
fn noise_image(width: usize, height: usize) -> RgbImage {
    let mut state = 12345u64;
    let data = (0..width * height * 3)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect();
    RgbImage::new(width, height, data).unwrap()
}

/// sha256 of `CenterCrop(S)(Resize(round(S * 256 / 224))(img))` as computed
/// by Pillow 13.0.0 (`Image.resize(.., BILINEAR)` then `crop`, with
/// torchvision's size and offset rules), for the images named.
const PILLOW_TORCH_SHA256: [(&str, usize, &str); 5] = [
    (
        "chelsea",
        224,
        "d2380d7104e4d7d5ba262b5731ac6b0fa74c50f04e93471053462f00c462c25f",
    ),
    (
        "cat",
        160,
        "c7cbe718c7e4164a22cfb439b2b1ba471d254006a3f9a1e8eb570c289d263938",
    ),
    (
        "noise37x53",
        224,
        "a58471ba573f2886d073e9be8fdcfd38fde7b478224a391e7333b886c57d9a76",
    ),
    (
        "noise300x257",
        128,
        "3731e714394ff04829281ca2ad7a0de5a031d76f58408cb666f46b3528fd212c",
    ),
    (
        "noise3x700",
        192,
        "39f35fa52cde453a9fe35d743c57e389eec4e30b22a07ab62e895f49abbadd70",
    ),
];

#[test]
fn torch_resize_matches_pillow() {
    let shared = common::shared_dir("torch_resize_matches_pillow");
    for (name, size, want) in PILLOW_TORCH_SHA256 {
        let image = match name {
            "noise37x53" => noise_image(37, 53),
            "noise300x257" => noise_image(300, 257),
            "noise3x700" => noise_image(3, 700),
            "chelsea" | "cat" => {
                let Some(shared) = &shared else { continue };
                let rel = if name == "cat" {
                    "images/coral_test_data/cat.bmp"
                } else {
                    "images/packages/chelsea.png"
                };
                read_image(&shared.join(rel)).unwrap()
            }
            _ => unreachable!(),
        };
        let got = preprocess_torch_u8(&image, size).unwrap();
        assert_eq!(sha256_hex(&got), want, "{name} at {size}");
    }
}
