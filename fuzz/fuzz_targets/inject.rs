//! `conduit inject` and `uninject` (`conduit-k8s`'s `inject.rs` over `manifest.rs`) on any
//! text. Checks that an injected manifest parses again with the same documents, that
//! injecting it again changes nothing and reports every workload as re-injected, and that
//! uninjecting it takes the proxy out of every workload that got one.
#![no_main]

use conduit_k8s::{
    inject::{inject, uninject, Action, InjectOptions, Outcome},
    manifest,
};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static OPTIONS: LazyLock<InjectOptions> = LazyLock::new(InjectOptions::default);

fn injected(o: &Outcome) -> bool {
    matches!(o.action, Action::Injected | Action::Reinjected)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(once) = inject(text, "fuzz.yaml", &OPTIONS) else {
        return;
    };
    let before = manifest::parse(text, "fuzz.yaml").expect("inject read it");
    let after = manifest::parse(&once.output, "injected.yaml")
        .unwrap_or_else(|e| panic!("the injected manifest does not parse: {e}\n{}", once.output));
    let count = |docs: &[manifest::Document]| docs.iter().filter(|d| !d.is_empty()).count();
    assert_eq!(
        count(&after),
        count(&before),
        "documents were lost or made up"
    );

    let twice = inject(&once.output, "injected.yaml", &OPTIONS)
        .unwrap_or_else(|e| panic!("an injected manifest cannot be injected again: {e}"));
    assert_eq!(
        twice.output, once.output,
        "injecting again changed the manifest"
    );
    assert_eq!(twice.report.len(), once.report.len());
    for (first, second) in once.report.iter().zip(&twice.report) {
        if injected(first) {
            assert_eq!(second.action, Action::Reinjected, "{first} then {second}");
        } else {
            assert_eq!(second, first);
        }
    }

    let out = uninject(&once.output, "injected.yaml")
        .unwrap_or_else(|e| panic!("an injected manifest cannot be uninjected: {e}"));
    assert_eq!(out.report.len(), once.report.len());
    for (first, removed) in once.report.iter().zip(&out.report) {
        if injected(first) {
            assert_eq!(removed.action, Action::Uninjected, "{first} then {removed}");
        }
    }
});
