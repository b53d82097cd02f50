//! manifests/crds/ holds exactly what `sluice-operator crds` generates from
//! the Rust types, and the CEL rules the issue asks for are in it.

use std::path::PathBuf;

use sluice_operator::crd;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds")
}

#[test]
fn checked_in_crds_match_the_rust_types() {
    for c in crd::all() {
        let name = c.metadata.name.clone().expect("named");
        let want = crd::render_yaml(&c).expect("renders");
        let path = crds_dir().join(format!("{name}.yaml"));
        let have =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            have == want,
            "{} is out of date: run `cargo run -p sluice-operator -- crds --out-dir manifests/crds`",
            path.display()
        );
    }
}

#[test]
fn cel_rules_refuse_what_can_never_work() {
    let text: String = crd::all()
        .iter()
        .map(|c| serde_json::to_string(c).expect("json"))
        .collect();
    for rule in [
        "self.partitions >= oldSelf.partitions",
        "self.topicName == oldSelf.topicName",
        "self >= 1",
        "filter(x, x).size() == 1",
    ] {
        assert!(text.contains(rule), "no CEL rule containing {rule:?}");
    }
}
