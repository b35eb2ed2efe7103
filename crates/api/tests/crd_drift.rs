//! The committed CRD must be exactly what the Rust types generate, or the module would install a
//! schema the controller does not speak.

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/dataexports.yaml");
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}; run `make crds`"));
    let generated = svdm_api::crd_yaml().expect("CRD serialises");
    assert!(
        committed == generated,
        "crds/dataexports.yaml is out of date with crates/api; run `make crds` and commit the result"
    );
}
