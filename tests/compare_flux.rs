//! The fast subset of `make compare-flux` (the cases marked `fast: true` in
//! tests/compare/cases): Flux's own image-reflector-controller and image-reflector
//! reconcile the same objects on one control plane against the same registries, and every
//! difference in status or events must be listed in tests/compare/known-differences.yaml.
//! See tests/compare/README.md.

use test_support::compare::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_reflector_matches_flux_on_the_fast_cases_except_known_differences() {
    let options = Options {
        fast: true,
        jobs: 3,
        ..Options::default()
    };
    let summary = run(&options).await.expect("the comparison runs");
    let report = summary.render();
    print!("{report}");
    assert!(
        summary.passed(),
        "image-reflector differs from Flux where tests/compare/known-differences.yaml does not say so (fix it, or list it there and in the README's \"Differences from Flux\" with the reason):\n{report}"
    );
}
