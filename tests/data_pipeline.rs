//! The training data pipeline: IDX and ImageFolder datasets on synthetic
//! files, hostile inputs, augmentation, and the loader's determinism (the
//! same batches whatever the number of workers, so training resumes
//! exactly).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use image::{ImageFormat, Rgb, RgbImage as ImgRgb};
use mobilenet::Error;
use mobilenet::data::{
    Augment, Batch, Crop, Dataset, FASHION_MNIST_CLASSES, IdxArray, IdxDataset, ImageFolder,
    Loader, LoaderConfig, MAX_IDX_BYTES, Normalize, RandomErase, check_same_classes, split_indices,
    train_val_split,
};
use mobilenet::image::{Preprocess, RgbImage, TORCH_MEAN, TORCH_STD, preprocess};

/// A fresh, empty folder under the system temporary folder.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mobilenet-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn idx_bytes(dtype: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, dtype, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `n` grayscale `h x w` images whose pixels vary with the image and the
/// position, and labels `i % classes`.
fn synthetic(n: usize, h: usize, w: usize, classes: usize) -> (Vec<u8>, Vec<u8>) {
    let images = (0..n * h * w)
        .map(|p| {
            let (i, r) = (p / (h * w), p % (h * w));
            ((i * 37 + r * 11) % 256) as u8
        })
        .collect();
    let labels = (0..n).map(|i| (i % classes) as u8).collect();
    (images, labels)
}

fn idx_dataset(n: usize, h: usize, w: usize, classes: usize) -> Arc<dyn Dataset> {
    let (images, labels) = synthetic(n, h, w, classes);
    let images = IdxArray {
        dims: vec![n, h, w],
        data: images,
    };
    let labels = IdxArray {
        dims: vec![n],
        data: labels,
    };
    Arc::new(IdxDataset::from_arrays(images, labels, Some(classes)).unwrap())
}

fn data_message<T: std::fmt::Debug>(r: mobilenet::Result<T>) -> String {
    match r {
        Err(Error::Data(msg)) => msg,
        other => panic!("expected a dataset error, got {other:?}"),
    }
}

fn collect(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

fn config(batch_size: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        seed: 1234,
        workers,
        ..LoaderConfig::default()
    }
}

// ---------------------------------------------------------------- IDX

#[test]
fn idx_round_trip_raw_and_gzip() {
    let dir = temp_dir("idx-round-trip");
    let (images, labels) = synthetic(5, 4, 3, 3);
    let image_file = idx_bytes(8, &[5, 4, 3], &images);
    let label_file = idx_bytes(8, &[5], &labels);
    std::fs::write(dir.join("images"), &image_file).unwrap();
    std::fs::write(dir.join("labels"), &label_file).unwrap();
    std::fs::write(dir.join("images.gz"), gzip(&image_file)).unwrap();
    std::fs::write(dir.join("labels.gz"), gzip(&label_file)).unwrap();

    let raw = IdxDataset::open(&dir.join("images"), &dir.join("labels"), None).unwrap();
    let gz = IdxDataset::open(&dir.join("images.gz"), &dir.join("labels.gz"), Some(3)).unwrap();
    assert_eq!((raw.len(), raw.classes(), raw.image_size()), (5, 3, (4, 3)));
    assert_eq!(raw.class_names(), ["0", "1", "2"]);
    for i in 0..5 {
        let (a, b) = (raw.load(i).unwrap(), gz.load(i).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.label, i % 3);
        assert_eq!((a.image.width, a.image.height), (3, 4));
        // Gray replicated to RGB, row-major.
        for y in 0..4 {
            for x in 0..3 {
                let v = images[i * 12 + y * 3 + x];
                assert_eq!(a.image.pixel(x, y), [v, v, v]);
            }
        }
    }
    assert!(raw.load(5).is_err());
    assert_eq!(IdxArray::parse(&gzip(&label_file)).unwrap().data, labels);

    let named = raw.with_class_names(&["a", "b", "c"]).unwrap();
    assert_eq!(named.class_names(), ["a", "b", "c"]);
    assert!(named.with_class_names(&FASHION_MNIST_CLASSES).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn idx_rgb_images() {
    let images = IdxArray {
        dims: vec![2, 1, 2, 3],
        data: (0..12).collect(),
    };
    let labels = IdxArray {
        dims: vec![2],
        data: vec![0, 1],
    };
    let dataset = IdxDataset::from_arrays(images, labels, None).unwrap();
    assert_eq!(dataset.load(1).unwrap().image.pixel(1, 0), [9, 10, 11]);
}

#[test]
fn idx_damaged_files_are_refused() {
    let good = idx_bytes(8, &[2, 2, 2], &[1; 8]);
    assert!(IdxArray::parse(&good).is_ok());

    let truncated = &good[..good.len() - 1];
    for bytes in [truncated.to_vec(), gzip(truncated)] {
        let msg = data_message(IdxArray::parse(&bytes));
        assert!(
            msg.contains("truncated") && msg.contains("8 bytes"),
            "{msg}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    for bytes in [trailing.clone(), gzip(&trailing)] {
        let msg = data_message(IdxArray::parse(&bytes));
        assert!(msg.contains("trailing data"), "{msg}");
    }
    let msg = data_message(IdxArray::parse(&good[..6]));
    assert!(msg.contains("truncated IDX header"), "{msg}");
    let msg = data_message(IdxArray::parse(&[0, 0]));
    assert!(msg.contains("truncated IDX header"), "{msg}");
    let msg = data_message(IdxArray::parse(b""));
    assert!(msg.contains("truncated"), "{msg}");

    let msg = data_message(IdxArray::parse(b"\x89PNG\r\n\x1a\n...."));
    assert!(msg.contains("not an IDX file"), "{msg}");
    let msg = data_message(IdxArray::parse(&idx_bytes(0x0D, &[2], &[0; 8])));
    assert!(
        msg.contains("0x0d") && msg.contains("f32") && msg.contains("0x08"),
        "{msg}"
    );
    let msg = data_message(IdxArray::parse(&idx_bytes(8, &[], &[])));
    assert!(msg.contains("zero dimensions"), "{msg}");

    // A gzip stream cut in the middle is a data error, not an I/O error.
    let gz = gzip(&good);
    assert!(matches!(
        IdxArray::parse(&gz[..gz.len() / 2]),
        Err(Error::Data(_))
    ));

    // From a file, errors name it.
    let dir = temp_dir("idx-damaged");
    let path = dir.join("cut-images.idx3");
    std::fs::write(&path, truncated).unwrap();
    let msg = data_message(IdxArray::read(&path));
    assert!(msg.contains("cut-images.idx3"), "{msg}");
    assert!(matches!(
        IdxArray::read(&dir.join("missing")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn idx_hostile_dimensions_allocate_nothing() {
    // Far over the cap: refused from the header alone.
    let huge = idx_bytes(8, &[u32::MAX, u32::MAX, u32::MAX], &[]);
    match IdxArray::parse(&huge) {
        Err(Error::TooLarge(msg)) => assert!(msg.contains(&MAX_IDX_BYTES.to_string()), "{msg}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let many_dims = idx_bytes(8, &[65536; 8], &[]);
    assert!(matches!(
        IdxArray::parse(&many_dims),
        Err(Error::TooLarge(_))
    ));
    // Under the cap (3.2 GB claimed) but with ten bytes: a quick truncation
    // error, the buffer follows the bytes present.
    let start = Instant::now();
    let liar = idx_bytes(8, &[50_000, 256, 256], &[7; 10]);
    let msg = data_message(IdxArray::parse(&liar));
    assert!(msg.contains("truncated"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn idx_dataset_consistency_errors() {
    let arr = |dims: Vec<usize>, data: Vec<u8>| IdxArray { dims, data };
    let msg = data_message(IdxDataset::from_arrays(
        arr(vec![3, 2, 2], vec![0; 12]),
        arr(vec![2], vec![0, 1]),
        None,
    ));
    assert!(msg.contains("3 images but 2 labels"), "{msg}");

    let msg = data_message(IdxDataset::from_arrays(
        arr(vec![5, 1, 1], vec![0; 5]),
        arr(vec![5], vec![0, 1, 2, 12, 3]),
        Some(10),
    ));
    assert!(
        msg.contains("label 12 of sample 3") && msg.contains("10 classes"),
        "{msg}"
    );

    let msg = data_message(IdxDataset::from_arrays(
        arr(vec![2, 2], vec![0; 4]),
        arr(vec![2], vec![0, 1]),
        None,
    ));
    assert!(msg.contains("[count, rows, cols]"), "{msg}");
    let msg = data_message(IdxDataset::from_arrays(
        arr(vec![2, 1, 1], vec![0; 2]),
        arr(vec![2, 1], vec![0, 1]),
        None,
    ));
    assert!(msg.contains("labels must have one dimension"), "{msg}");
    let msg = data_message(IdxDataset::from_arrays(
        arr(vec![0, 28, 28], vec![]),
        arr(vec![0], vec![]),
        None,
    ));
    assert!(msg.contains("no images"), "{msg}");

    // Through files, the message names both.
    let dir = temp_dir("idx-mismatch");
    std::fs::write(dir.join("i"), idx_bytes(8, &[3, 1, 1], &[0; 3])).unwrap();
    std::fs::write(dir.join("l"), idx_bytes(8, &[2], &[0; 2])).unwrap();
    let err = IdxDataset::open(&dir.join("i"), &dir.join("l"), None).unwrap_err();
    assert!(err.is_bad_input());
    let msg = err.to_string();
    assert!(
        msg.contains("3 images but 2 labels") && msg.contains(&*dir.join("l").to_string_lossy()),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------- ImageFolder

fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = ImgRgb::from_fn(width, height, |x, y| {
        Rgb([seed, (x * 7) as u8, (y * 5) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

/// `root/a_cat` (3 images, one corrupt), `root/b_dog` (2 images in a
/// sub-folder and not), plus files and folders that are not samples.
fn make_folder(root: &Path) {
    let cat = root.join("a_cat");
    let dog = root.join("b_dog");
    std::fs::create_dir_all(&cat).unwrap();
    std::fs::create_dir_all(dog.join("more")).unwrap();
    std::fs::create_dir_all(root.join(".hidden")).unwrap();
    std::fs::write(cat.join("1.png"), png(20, 12, 1)).unwrap();
    std::fs::write(cat.join("2.PNG"), png(7, 31, 2)).unwrap();
    std::fs::write(cat.join("3.png"), b"this is not a png").unwrap();
    std::fs::write(cat.join("notes.txt"), b"ignored").unwrap();
    std::fs::write(dog.join("x.Jpeg"), png(16, 16, 3)).unwrap(); // content sniffed
    std::fs::write(dog.join("more").join("y.bmp"), png(40, 9, 4)).unwrap();
    std::fs::write(root.join(".hidden").join("z.png"), png(4, 4, 5)).unwrap();
    std::fs::write(root.join("stray.png"), png(4, 4, 6)).unwrap();
}

#[test]
fn image_folder_lists_classes_and_skips_corrupt_images() {
    let root = temp_dir("folder");
    make_folder(&root);
    let dataset = ImageFolder::open(&root).unwrap();
    assert_eq!(dataset.class_names(), ["a_cat", "b_dog"]);
    assert_eq!(dataset.len(), 5);
    let labels: Vec<usize> = (0..5).map(|i| dataset.label(i).unwrap()).collect();
    assert_eq!(labels, [0, 0, 0, 1, 1]);
    assert!(dataset.path(2).unwrap().ends_with("a_cat/3.png"));
    assert!(matches!(dataset.load(2), Err(Error::Image(_))));
    assert_eq!(dataset.load(4).unwrap().image.width, 40);

    let dataset: Arc<dyn Dataset> = Arc::new(dataset);
    for workers in [0, 2] {
        let cfg = LoaderConfig {
            shuffle: false,
            ..config(2, workers)
        };
        let loader = Loader::new(
            dataset.clone(),
            Augment::random_resized(16, Normalize::Tf),
            cfg,
        )
        .unwrap();
        let batches = collect(&loader, 0);
        // Batch 1 holds samples 2 (corrupt) and 3.
        let sizes: Vec<[usize; 4]> = batches.iter().map(|b| b.shape).collect();
        assert_eq!(sizes, [[2, 16, 16, 3], [1, 16, 16, 3], [1, 16, 16, 3]]);
        assert_eq!(batches.iter().map(|b| b.skipped).sum::<usize>(), 1);
        assert_eq!(batches[1].skipped, 1);
        assert_eq!(batches[1].indices, [3]);
        let all: Vec<usize> = batches.iter().flat_map(|b| b.labels.clone()).collect();
        assert_eq!(all, [0, 0, 1, 1]);
        assert!(
            batches
                .iter()
                .flat_map(|b| &b.images)
                .all(|v| (-1.0..=1.0).contains(v))
        );
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn an_unreadable_file_is_a_skipped_sample() {
    let root = temp_dir("folder-vanished");
    std::fs::create_dir_all(root.join("c")).unwrap();
    for i in 0..4 {
        std::fs::write(root.join("c").join(format!("{i}.png")), png(5, 5, i)).unwrap();
    }
    let dataset = Arc::new(ImageFolder::open(&root).unwrap());
    std::fs::remove_file(root.join("c").join("1.png")).unwrap();
    assert!(matches!(dataset.load(1), Err(Error::Io { .. })));
    let loader = Loader::new(
        dataset,
        Augment::eval_resize(5, Normalize::Tf),
        config(4, 1),
    )
    .unwrap();
    let mut epoch = loader.epoch(0);
    let batch = epoch.next().unwrap().unwrap();
    assert_eq!((batch.len(), batch.skipped), (3, 1));
    assert!(!batch.indices.contains(&1));
    assert!(epoch.next().is_none());
    assert_eq!(epoch.skipped(), 1);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn image_folder_errors_name_the_folder() {
    let root = temp_dir("folder-errors");
    let msg = data_message(ImageFolder::open(&root));
    assert!(msg.contains("no class folders"), "{msg}");

    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::write(root.join("a").join("readme.txt"), b"x").unwrap();
    let msg = data_message(ImageFolder::open(&root));
    assert!(
        msg.contains("no images in") && msg.contains(&*root.to_string_lossy()),
        "{msg}"
    );

    std::fs::write(root.join("a").join("1.png"), png(3, 3, 0)).unwrap();
    let msg = data_message(ImageFolder::open(&root));
    assert!(msg.contains(&*root.join("b").to_string_lossy()), "{msg}");

    assert!(matches!(
        ImageFolder::open(&root.join("missing")),
        Err(Error::Io { .. })
    ));
    let msg = data_message(ImageFolder::open(&root.join("a").join("1.png")));
    assert!(msg.contains("is not a folder"), "{msg}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn an_epoch_without_one_readable_image_is_an_error() {
    let root = temp_dir("folder-all-corrupt");
    std::fs::create_dir_all(root.join("c")).unwrap();
    for i in 0..3 {
        std::fs::write(root.join("c").join(format!("{i}.jpg")), b"garbage").unwrap();
    }
    let dataset = Arc::new(ImageFolder::open(&root).unwrap());
    let loader = Loader::new(
        dataset,
        Augment::eval_resize(8, Normalize::Tf),
        config(2, 1),
    )
    .unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    assert_eq!(results.len(), 1);
    let msg = data_message(results.into_iter().next().unwrap());
    assert!(msg.contains("none of the 3 samples"), "{msg}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_batch_that_lost_every_sample_is_not_delivered() {
    let root = temp_dir("folder-empty-batch");
    std::fs::create_dir_all(root.join("c")).unwrap();
    std::fs::write(root.join("c").join("0.png"), b"bad").unwrap();
    std::fs::write(root.join("c").join("1.png"), b"bad").unwrap();
    std::fs::write(root.join("c").join("2.png"), png(5, 5, 2)).unwrap();
    let dataset = Arc::new(ImageFolder::open(&root).unwrap());
    let cfg = LoaderConfig {
        shuffle: false,
        ..config(2, 2)
    };
    let loader = Loader::new(dataset, Augment::eval_resize(5, Normalize::Tf), cfg).unwrap();
    let batches = collect(&loader, 0);
    assert_eq!(batches.len(), 1);
    // Batch 0 had only the two bad files; batch 1 carries their count.
    assert_eq!((batches[0].index, batches[0].skipped), (1, 2));
    assert_eq!(batches[0].indices, [2]);
    std::fs::remove_dir_all(root).unwrap();
}

// ---------------------------------------------------------------- loader

#[test]
fn batches_do_not_depend_on_the_worker_count() {
    let dataset = idx_dataset(45, 28, 28, 10);
    let augment = Augment::pad_crop(32, 4, Normalize::fashion_mnist());
    let make = |workers| Loader::new(dataset.clone(), augment, config(8, workers)).unwrap();
    let reference = collect(&make(1), 3);
    assert_eq!(reference.len(), 6);
    assert_eq!(collect(&make(3), 3), reference);
    assert_eq!(collect(&make(0), 3), reference);
    // A prefetch depth does not matter either.
    let deep = Loader::new(
        dataset.clone(),
        augment,
        LoaderConfig {
            prefetch: 4,
            ..config(8, 2)
        },
    )
    .unwrap();
    assert_eq!(collect(&deep, 3), reference);

    // Another epoch: another order and other crops; another seed likewise.
    let other = collect(&make(3), 4);
    assert_ne!(other[0].indices, reference[0].indices);
    let reseeded = Loader::new(
        dataset.clone(),
        augment,
        LoaderConfig {
            seed: 99,
            ..config(8, 1)
        },
    )
    .unwrap();
    assert_ne!(collect(&reseeded, 3)[0].indices, reference[0].indices);

    // A sample's augmentation depends on (seed, epoch, index), not on where
    // it falls: evaluation order (no shuffle) gives it the same pixels.
    let unshuffled = Loader::new(
        dataset,
        augment,
        LoaderConfig {
            shuffle: false,
            ..config(8, 2)
        },
    )
    .unwrap();
    let plain = collect(&unshuffled, 3);
    let per = 32 * 32 * 3;
    let i = reference[0].indices[0];
    let (b, j) = (i / 8, i % 8);
    assert_eq!(plain[b].indices[j], i);
    assert_eq!(
        plain[b].images[j * per..(j + 1) * per],
        reference[0].images[..per]
    );
}

#[test]
fn every_index_once_per_epoch_and_drop_last() {
    let dataset = idx_dataset(50, 4, 4, 3);
    let augment = Augment::eval_resize(4, Normalize::Tf);
    for drop_last in [false, true] {
        let loader = Loader::new(
            dataset.clone(),
            augment,
            LoaderConfig {
                drop_last,
                ..config(8, 2)
            },
        )
        .unwrap();
        for epoch in 0..3 {
            let batches = collect(&loader, epoch);
            let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
            let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
            assert_eq!(seen, loader.order(epoch)[..seen.len()]);
            for (k, b) in batches.iter().enumerate() {
                assert_eq!(b.index, k);
                assert_eq!(b.images.len(), b.shape.iter().product::<usize>());
                for (&i, &l) in b.indices.iter().zip(&b.labels) {
                    assert_eq!(l, i % 3);
                }
            }
            seen.sort_unstable();
            if drop_last {
                assert_eq!(sizes, [8; 6]);
                seen.dedup();
                assert_eq!(seen.len(), 48);
            } else {
                assert_eq!(sizes, [8, 8, 8, 8, 8, 8, 2]);
                assert_eq!(seen, (0..50).collect::<Vec<_>>());
            }
        }
        assert_eq!(loader.batches_per_epoch(), if drop_last { 6 } else { 7 });
    }
    // Too few samples for one full batch.
    let err = Loader::new(
        dataset,
        augment,
        LoaderConfig {
            drop_last: true,
            ..config(64, 1)
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

#[test]
fn resuming_mid_epoch_gives_the_same_batches() {
    let dataset = idx_dataset(30, 10, 10, 4);
    let augment = Augment::random_resized(8, Normalize::Torch);
    let loader = Loader::new(dataset, augment, config(4, 2)).unwrap();
    let full = collect(&loader, 2);
    let resumed: Vec<Batch> = loader
        .epoch_from(2, 5)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(resumed, full[5..]);
    assert_eq!(loader.epoch_from(2, full.len()).unwrap().count(), 0);
    assert!(loader.epoch_from(2, full.len() + 1).is_err());
}

#[test]
fn dropping_an_epoch_midway_stops_the_workers() {
    let dataset = idx_dataset(400, 28, 28, 10);
    let augment = Augment::random_resized(64, Normalize::Tf);
    let loader = Loader::new(dataset, augment, config(16, 3)).unwrap();
    let start = Instant::now();
    for _ in 0..3 {
        let mut epoch = loader.epoch(0);
        assert_eq!(epoch.next().unwrap().unwrap().index, 0);
        assert_eq!(epoch.next_batch(), 1);
        drop(epoch);
        // Dropped before the first batch is taken, too.
        drop(loader.epoch(1));
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn loader_refuses_bad_configurations() {
    let dataset = idx_dataset(10, 4, 4, 2);
    let ok = Augment::eval_resize(4, Normalize::Tf);
    let bad =
        |augment: Augment, cfg: LoaderConfig| Loader::new(dataset.clone(), augment, cfg).is_err();
    assert!(bad(ok, config(0, 1)));
    assert!(bad(Augment { size: 0, ..ok }, config(2, 1)));
    assert!(bad(
        Augment {
            crop: Crop::RandomResized {
                scale: (0.5, 0.1),
                ratio: (1.0, 1.0)
            },
            ..ok
        },
        config(2, 1)
    ));
    assert!(bad(Augment::pad_crop(4, 5000, Normalize::Tf), config(2, 1)));
    let zero_std = Normalize::MeanStd {
        mean: [0.0; 3],
        std: [1.0, 0.0, 1.0],
    };
    assert!(bad(Augment::eval_resize(4, zero_std), config(2, 1)));
    let huge = Augment::eval_resize(8192, Normalize::Tf);
    assert!(matches!(
        Loader::new(dataset, huge, config(64, 1)),
        Err(Error::TooLarge(_))
    ));
}

// ---------------------------------------------------------------- augmentation

fn gradient(width: usize, height: usize) -> RgbImage {
    let data = (0..height)
        .flat_map(|y| (0..width).flat_map(move |x| [(x * 9) as u8, (y * 3) as u8, 200]))
        .collect();
    RgbImage::new(width, height, data).unwrap()
}

#[test]
fn crops_keep_shape_and_range() {
    let image = gradient(37, 23);
    let unit = Normalize::MeanStd {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let augments = [
        Augment::random_resized(16, unit),
        Augment::pad_crop(32, 4, unit),
        Augment::pad_crop(16, 2, unit), // larger than the output: shrunk first
        Augment::eval_pad(40, unit),
        Augment::eval_resize(16, unit),
        Augment {
            crop: Crop::Center(Preprocess::Torch),
            ..Augment::eval_resize(16, unit)
        },
        Augment {
            erase: Some(RandomErase::with_probability(1.0)),
            ..Augment::pad_crop(28, 2, unit)
        },
    ];
    for augment in augments {
        for index in 0..20 {
            let mut out = vec![f32::NAN; augment.size * augment.size * 3];
            augment.apply(&image, 5, 1, index, &mut out).unwrap();
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "{augment:?}");
            assert_eq!(
                augment.apply_u8(&image, 5, 1, index).unwrap().len(),
                out.len()
            );
        }
        let mut wrong = vec![0.0; 10];
        assert!(matches!(
            augment.apply(&image, 0, 0, 0, &mut wrong),
            Err(Error::Shape(_))
        ));
    }
    // Evaluation recipes are not random; training ones are.
    assert!(!Augment::eval_pad(32, unit).is_random());
    assert!(!Augment::eval_resize(32, unit).is_random());
    assert!(Augment::pad_crop(32, 4, unit).is_random());
    assert!(Augment::random_resized(32, unit).is_random());
    let erasing = Augment {
        erase: Some(RandomErase::with_probability(0.5)),
        ..Augment::eval_pad(32, unit)
    };
    assert!(erasing.is_random());
    assert!(
        Augment {
            erase: Some(RandomErase::with_probability(-0.1)),
            ..erasing
        }
        .validate()
        .is_err()
    );
}

#[test]
fn pad_zero_is_centred_padding() {
    // 28 -> 32: two zero pixels on each side, the image untouched inside.
    let image = gradient(28, 28);
    let out = Augment::eval_pad(32, Normalize::Tf)
        .apply_u8(&image, 0, 0, 0)
        .unwrap();
    let at = |x: usize, y: usize| &out[(y * 32 + x) * 3..(y * 32 + x) * 3 + 3];
    assert_eq!(at(0, 0), [0, 0, 0]);
    assert_eq!(at(1, 16), [0, 0, 0]);
    assert_eq!(at(2, 2), image.pixel(0, 0));
    assert_eq!(at(29, 29), image.pixel(27, 27));
    assert_eq!(at(30, 29), [0, 0, 0]);
}

#[test]
fn flips_mirror_and_crops_vary() {
    // Same-size resize: the only change is the flip.
    let image = gradient(9, 9);
    let augment = Augment {
        flip: true,
        erase: None,
        ..Augment::eval_resize(9, Normalize::Tf)
    };
    let mut mirrored = image.clone();
    for y in 0..9 {
        for x in 0..9 {
            let i = (y * 9 + x) * 3;
            mirrored.data[i..i + 3].copy_from_slice(&image.pixel(8 - x, y));
        }
    }
    let (mut same, mut flipped) = (0, 0);
    for index in 0..40 {
        let out = augment.apply_u8(&image, 11, 0, index).unwrap();
        if out == image.data {
            same += 1;
        } else {
            assert_eq!(out, mirrored.data);
            flipped += 1;
        }
    }
    assert!(same > 5 && flipped > 5, "{same} / {flipped}");

    // Random crops differ between samples and epochs, repeat for the same.
    let augment = Augment::random_resized(8, Normalize::Tf);
    let image = gradient(30, 20);
    let a = augment.apply_u8(&image, 1, 0, 0).unwrap();
    assert_eq!(a, augment.apply_u8(&image, 1, 0, 0).unwrap());
    assert_ne!(a, augment.apply_u8(&image, 1, 1, 0).unwrap());
    assert_ne!(a, augment.apply_u8(&image, 1, 0, 1).unwrap());
}

#[test]
fn normalization_presets_on_a_constant_image() {
    let image = RgbImage::new(5, 3, vec![51; 5 * 3 * 3]).unwrap();
    let run = |normalize: Normalize| {
        let mut out = vec![0.0; 4 * 4 * 3];
        Augment::eval_resize(4, normalize)
            .apply(&image, 0, 0, 0, &mut out)
            .unwrap();
        out
    };
    let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
    assert!(
        run(Normalize::Tf)
            .iter()
            .all(|&v| close(v, 51.0 / 127.5 - 1.0))
    );
    for (i, &v) in run(Normalize::Torch).iter().enumerate() {
        let c = i % 3;
        assert!(close(v, (0.2 - TORCH_MEAN[c]) / TORCH_STD[c]), "{v}");
    }
    assert!(
        run(Normalize::fashion_mnist())
            .iter()
            .all(|&v| close(v, (0.2 - 0.2860) / 0.3530))
    );
    let custom = Normalize::MeanStd {
        mean: [0.1, 0.2, 0.3],
        std: [0.5, 0.25, 2.0],
    };
    let expected = [(0.2 - 0.1) / 0.5, 0.0, (0.2 - 0.3) / 2.0];
    for (i, &v) in run(custom).iter().enumerate() {
        assert!(close(v, expected[i % 3]), "{v}");
    }
    assert_eq!("torch".parse::<Normalize>().unwrap(), Normalize::Torch);
    assert_eq!(
        "Fashion-MNIST".parse::<Normalize>().unwrap(),
        Normalize::fashion_mnist()
    );
    assert!(matches!(
        "imagenet".parse::<Normalize>(),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn center_crop_reuses_the_inference_recipe() {
    let image = gradient(50, 34);
    let augment = Augment {
        crop: Crop::Center(Preprocess::Tf),
        ..Augment::eval_resize(16, Normalize::Tf)
    };
    let mut out = vec![0.0; 16 * 16 * 3];
    augment.apply(&image, 0, 0, 0, &mut out).unwrap();
    assert_eq!(out, preprocess(&image, 16, Preprocess::Tf).unwrap().data());
}

// ---------------------------------------------------------------- split

#[test]
fn seeded_stratified_split() {
    let dataset = idx_dataset(100, 2, 2, 10);
    let (train, val) = train_val_split(dataset.clone(), 0.2, 5).unwrap();
    assert_eq!((train.len(), val.len()), (80, 20));
    let mut per_class = [0; 10];
    for i in 0..val.len() {
        per_class[val.label(i).unwrap()] += 1;
    }
    assert_eq!(per_class, [2; 10]);
    let mut all: Vec<usize> = train
        .indices()
        .iter()
        .chain(val.indices())
        .copied()
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    // Loading through the subset gives the underlying sample.
    let j = val.indices()[3];
    assert_eq!(val.load(3).unwrap(), dataset.load(j).unwrap());
    assert!(val.load(20).is_err());

    let (_, again) = train_val_split(dataset.clone(), 0.2, 5).unwrap();
    assert_eq!(again.indices(), val.indices());
    let (_, other) = train_val_split(dataset.clone(), 0.2, 6).unwrap();
    assert_ne!(other.indices(), val.indices());

    for bad in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(matches!(
            train_val_split(dataset.clone(), bad, 5),
            Err(Error::InvalidConfig(_))
        ));
    }
    // Too small to leave anything for validation.
    assert!(split_indices(&[0, 1], 2, 0.1, 0).is_err());

    // A subset is a dataset like any other for the loader.
    let loader = Loader::new(
        Arc::new(val),
        Augment::eval_resize(2, Normalize::Tf),
        config(7, 2),
    )
    .unwrap();
    let n: usize = collect(&loader, 0).iter().map(Batch::len).sum();
    assert_eq!(n, 20);

    check_same_classes(&*dataset, &*idx_dataset(5, 2, 2, 10)).unwrap();
    let msg = data_message(check_same_classes(&*dataset, &*idx_dataset(5, 2, 2, 9)));
    assert!(
        msg.contains("10 classes in training, 9 in validation"),
        "{msg}"
    );
}

#[test]
fn dataset_errors_are_bad_input() {
    assert!(Error::Data("x".to_string()).is_bad_input());
}

// ---------------------------------------------------------------- real data

/// Fashion-MNIST from the Debian package `dataset-fashion-mnist`, when it is
/// installed; skipped (and says so) otherwise.
#[test]
fn fashion_mnist_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    let test_images = dir.join("t10k-images-idx3-ubyte.gz");
    if !test_images.is_file() {
        eprintln!(
            "SKIPPED fashion_mnist_when_installed: no {}",
            test_images.display()
        );
        return;
    }
    let open = |split: &str| {
        IdxDataset::open(
            &dir.join(format!("{split}-images-idx3-ubyte.gz")),
            &dir.join(format!("{split}-labels-idx1-ubyte.gz")),
            Some(10),
        )
        .unwrap()
        .with_class_names(&FASHION_MNIST_CLASSES)
        .unwrap()
    };
    let test = open("t10k");
    assert_eq!((test.len(), test.image_size()), (10_000, (28, 28)));
    let mut counts = [0; 10];
    for i in 0..test.len() {
        counts[test.label(i).unwrap()] += 1;
    }
    assert_eq!(counts, [1000; 10]);
    // The first test image is an ankle boot.
    assert_eq!(test.label(0).unwrap(), 9);
    assert_eq!(test.class_names()[9], "Ankle boot");

    // The pixel mean over the test set is close to the training set's.
    let mut sum = 0u64;
    for i in 0..test.len() {
        sum += test
            .load(i)
            .unwrap()
            .image
            .data
            .iter()
            .step_by(3)
            .map(|&v| u64::from(v))
            .sum::<u64>();
    }
    let mean = sum as f64 / (test.len() * 28 * 28) as f64 / 255.0;
    assert!((mean - 0.2860).abs() < 0.01, "{mean}");

    let train = open("train");
    assert_eq!(train.len(), 60_000);
    let loader = Loader::new(
        Arc::new(train),
        Augment::pad_crop(32, 4, Normalize::fashion_mnist()),
        config(128, 2),
    )
    .unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.shape, [128, 32, 32, 3]);
    assert_eq!(loader.batches_per_epoch(), 469);
}
