//! The local runtime's reading of manifests (`conduit-local`'s `spec.rs`) on any text,
//! with every program found. Checks that a spec it accepts survives the JSON the client
//! hands the supervisor (`desired.json`) unchanged, and that adding a spec to itself
//! changes nothing (every object replaces its own copy).
#![no_main]

use conduit_local::spec::AppSpec;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let found = |program: &str| Some(PathBuf::from("/usr/bin").join(program));
    let Ok(spec) = AppSpec::from_manifest(text, "fuzz.yaml", &found) else {
        return;
    };
    let json = serde_json::to_vec(&spec).expect("a spec serializes");
    let read: AppSpec = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("the supervisor cannot read the spec: {e}"));
    assert_eq!(read, spec, "the spec changed on its way to the supervisor");

    let mut merged = AppSpec::default();
    merged.merge(spec.clone());
    let once = merged.clone();
    merged.merge(spec);
    assert_eq!(
        merged, once,
        "adding the same manifest again changed the spec"
    );
});
