//! The `mobilenet` binary: output formats, the paper's figures, exit codes.

use std::process::{Command, Output};

use serde_json::Value;

fn mobilenet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mobilenet"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn summary_json_has_the_documented_schema() {
    let out = mobilenet(&["summary", "--alpha", "0.5", "--resolution", "160", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["alpha"], 0.5);
    assert_eq!(v["resolution"], 160);
    assert_eq!(v["classes"], 1000);
    assert_eq!(v["variant"], "mobilenet");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30);
    for key in [
        "name",
        "kind",
        "stride",
        "input",
        "output",
        "mult_adds",
        "params",
        "memory_access",
    ] {
        assert!(layers.iter().all(|l| !l[key].is_null()), "layer key {key}");
    }
    assert_eq!(layers[0]["name"], "conv1");
    assert_eq!(layers[0]["input"], serde_json::json!([160, 160, 3]));
    assert_eq!(layers[0]["output"], serde_json::json!([80, 80, 16]));
    let total = &v["total"];
    assert_eq!(total["mult_adds"], 76_524_800);
    assert_eq!(total["flops"], 2 * 76_524_800u64);
    assert_eq!(total["params"], 1_320_648);
    for key in ["bn_params", "memory_access"] {
        assert!(total[key].as_u64().unwrap() > 0, "{key}");
    }
    let sum: u64 = layers
        .iter()
        .map(|l| l["mult_adds"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 76_524_800);
}

#[test]
fn summary_table_lists_layers_and_totals() {
    let out = mobilenet(&["summary"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("conv_dw_13"));
    assert!(text.contains("3x3x3x32"));
    assert!(text.contains("568,740,352"));
    assert!(text.contains("4,210,088"));
    let shallow = stdout(&mobilenet(&["summary", "--variant", "shallow"]));
    assert!(shallow.contains("307,323,392"));
    assert!(!shallow.contains("conv_dw_9"));
}

#[test]
fn paper_tables_show_the_papers_figures_and_ours() {
    let out = mobilenet(&["paper"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for table in ["Table 2.", "Table 4.", "Table 5.", "Table 6.", "Table 7."] {
        assert!(text.contains(table), "{table}");
    }
    for figure in [
        "94.86 %", "74.59 %", "4866 M", "29.3 M", "307 M", "41 M", "186 M",
    ] {
        assert!(text.contains(figure), "{figure}");
    }
    assert!(text.contains("digits swapped"));

    let json: Value =
        serde_json::from_str(&stdout(&mobilenet(&["paper", "--table", "6", "--json"]))).unwrap();
    let rows = json[0]["rows"].as_array().unwrap();
    let mult_adds: Vec<u64> = rows
        .iter()
        .map(|r| r["mult_adds"].as_u64().unwrap())
        .collect();
    assert_eq!(
        mult_adds,
        [568_740_352, 325_400_448, 149_497_088, 41_030_272]
    );
    assert!(rows.iter().all(|r| r["matches"] == true));
}

#[test]
fn separable_gives_the_closed_form_ratio() {
    let out = mobilenet(&[
        "separable",
        "--in",
        "32",
        "--out",
        "64",
        "--size",
        "112",
        "--json",
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["standard"]["mult_adds"], 3 * 3 * 32 * 64 * 112 * 112u64);
    assert_eq!(
        v["separable"]["mult_adds"],
        (3 * 3 * 32 + 32 * 64) * 112 * 112u64
    );
    let expected = 1.0 / 64.0 + 1.0 / 9.0;
    assert!((v["ratio"].as_f64().unwrap() - expected).abs() < 1e-12);
    let text = stdout(&mobilenet(&["separable", "--in", "512", "--out", "512"]));
    assert!(text.contains("0.113064"), "{text}");
}

/// Bad input: exit code 2 and one readable line, no panic.
#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["summary", "--alpha", "0"], "alpha must be > 0"),
        (&["summary", "--alpha", "-1"], "alpha must be > 0"),
        (&["summary", "--alpha", "nan"], "alpha must be > 0"),
        (&["summary", "--alpha", "1000"], "absurd"),
        (&["summary", "--resolution", "31"], "at least 32"),
        (
            &["summary", "--resolution", "1000000"],
            "of activation memory",
        ),
        (&["summary", "--classes", "0"], "classes"),
        (&["summary", "--variant", "huge"], "invalid value"),
        (&["summary", "--alpha", "abc"], "invalid value"),
        (&["paper", "--table", "3"], "invalid value"),
        (&["separable", "--in", "0", "--out", "4"], "at least 1"),
        (
            &["separable", "--in", "4000000000", "--out", "4000000000"],
            "overflows",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, message) in cases {
        let out = mobilenet(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn huge_resolution_says_how_much_memory_it_would_need() {
    let err = stderr(&mobilenet(&["summary", "--resolution", "1000000"]));
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("TiB"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bench_json_has_the_documented_schema() {
    let args = [
        "bench",
        "--alpha",
        "0.25",
        "--resolution",
        "64",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--batch",
        "2",
        "--threads",
        "2",
        "--json",
    ];
    let out = mobilenet(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["alpha"], 0.25);
    assert_eq!(v["resolution"], 64);
    assert_eq!(v["batch"], 2);
    assert_eq!(v["threads"], 2);
    assert!(["portable", "avx2", "avx512"].contains(&v["isa"].as_str().unwrap()));
    let (p10, median, p90) = (
        v["p10_ms"].as_f64().unwrap(),
        v["median_ms"].as_f64().unwrap(),
        v["p90_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p10 && p10 <= median && median <= p90);
    let images_per_s = v["images_per_s"].as_f64().unwrap();
    assert!((images_per_s - 2.0 / (median / 1e3)).abs() < 1e-6 * images_per_s);
    assert!(v["gflops"].as_f64().unwrap() > 0.0);
}

#[test]
fn profile_lists_every_layer_with_its_share() {
    let args = [
        "profile",
        "--alpha",
        "0.25",
        "--resolution",
        "64",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--isa",
        "portable",
        "--json",
    ];
    let out = mobilenet(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["isa"], "portable");
    let layers = v["layers"].as_array().unwrap();
    // 27 convolutions, then pool + classifier as one step.
    assert_eq!(layers.len(), 28);
    assert_eq!(layers[1]["name"], "conv_dw_1");
    let share: f64 = layers
        .iter()
        .map(|l| l["time_percent"].as_f64().unwrap())
        .sum();
    assert!((share - 100.0).abs() < 1e-6);
    let mult_adds: u64 = layers
        .iter()
        .map(|l| l["mult_adds"].as_u64().unwrap())
        .sum();
    let summary: Value = serde_json::from_str(&stdout(&mobilenet(&[
        "summary",
        "--alpha",
        "0.25",
        "--resolution",
        "64",
        "--json",
    ])))
    .unwrap();
    assert_eq!(mult_adds, summary["total"]["mult_adds"].as_u64().unwrap());
    let text = stdout(&mobilenet(&[
        "profile",
        "--alpha",
        "0.25",
        "--resolution",
        "64",
        "--runs",
        "2",
        "--fused",
    ]));
    assert!(text.contains("conv_dw_1+conv_pw_1"), "{text}");
}

#[test]
fn bad_engine_arguments_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "--threads", "0"], "threads"),
        (&["bench", "--batch", "0"], "batch"),
        (&["bench", "--runs", "0"], "runs"),
        (&["bench", "--isa", "sse9"], "unknown ISA"),
        (&["bench", "--alpha", "0"], "alpha"),
        (&["profile", "--resolution", "8"], "at least 32"),
    ];
    for (args, message) in cases {
        let out = mobilenet(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
