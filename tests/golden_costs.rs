//! Golden cost counts: every layer's and the total mult-adds, parameters,
//! BN parameters and memory access of 28 configurations (the 16 published
//! α x resolution pairs, the Conv and Shallow comparison networks, and odd
//! sizes), compared as exact integers with `golden/costs.json`.
//!
//! `golden/costs.json` is written by `golden/make_costs.py`, an independent
//! derivation in plain Python; regenerate with
//! `python3 tests/golden/make_costs.py > tests/golden/costs.json`.

use mobilenet::cost::CostReport;
use mobilenet::model::{Architecture, MobileNetConfig};
use serde_json::Value;

fn golden() -> Vec<Value> {
    let text = include_str!("golden/costs.json");
    serde_json::from_str::<Value>(text)
        .expect("costs.json parses")
        .as_array()
        .expect("costs.json is an array")
        .clone()
}

fn u(v: &Value) -> u64 {
    v.as_u64().expect("an unsigned integer")
}

#[test]
fn costs_equal_the_independent_derivation() {
    let configs = golden();
    assert_eq!(configs.len(), 28);
    for g in configs {
        let config = MobileNetConfig {
            alpha: g["alpha"].as_f64().unwrap(),
            resolution: u(&g["resolution"]) as usize,
            classes: u(&g["classes"]) as usize,
            variant: g["variant"].as_str().unwrap().parse().unwrap(),
            ..Default::default()
        };
        let label = config.name();
        let report = CostReport::new(&Architecture::new(&config).unwrap());
        let layers = g["layers"].as_array().unwrap();
        assert_eq!(report.layers.len(), layers.len(), "{label}: layer count");
        for ((spec, cost), want) in report.layers.iter().zip(layers) {
            let at = format!("{label} {}", spec.name);
            assert_eq!(spec.name, want["name"].as_str().unwrap(), "{at}");
            assert_eq!(cost.mult_adds, u(&want["mult_adds"]), "{at}: mult-adds");
            assert_eq!(cost.params, u(&want["params"]), "{at}: params");
            assert_eq!(cost.bn_params, u(&want["bn_params"]), "{at}: bn params");
            assert_eq!(cost.memory_access, u(&want["memory_access"]), "{at}: MAC");
        }
        let t = &g["total"];
        assert_eq!(report.total.mult_adds, u(&t["mult_adds"]), "{label}");
        assert_eq!(report.total.flops, u(&t["flops"]), "{label}");
        assert_eq!(report.total.params, u(&t["params"]), "{label}");
        assert_eq!(report.total.bn_params, u(&t["bn_params"]), "{label}");
        assert_eq!(
            report.total.memory_access,
            u(&t["memory_access"]),
            "{label}"
        );
    }
}

/// The headline numbers, written out so a reader sees them without the JSON.
#[test]
fn published_models_exact_counts() {
    let count = |alpha: f64, resolution: usize| {
        let cfg = MobileNetConfig {
            alpha,
            resolution,
            ..Default::default()
        };
        let t = CostReport::new(&Architecture::new(&cfg).unwrap()).total;
        (t.mult_adds, t.params)
    };
    assert_eq!(count(1.0, 224), (568_740_352, 4_210_088));
    assert_eq!(count(0.75, 224), (325_400_448, 2_569_144));
    assert_eq!(count(0.5, 224), (149_497_088, 1_320_648));
    assert_eq!(count(0.25, 224), (41_030_272, 464_600));
    assert_eq!(count(1.0, 192).0, 418_121_728);
    assert_eq!(count(1.0, 160).0, 290_675_200);
    assert_eq!(count(1.0, 128).0, 186_400_768);
}
