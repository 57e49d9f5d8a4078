//! The fuzz targets' committed corpus (fuzz/corpus/<target>/), replayed on stable through
//! the same functions libFuzzer runs (src/fuzzing.rs): every input a fuzzer kept, and every
//! crash once found and fixed, stays a regression test without a nightly toolchain.

use crate::helpers::repo_root;

#[test]
fn the_committed_fuzz_corpus_passes_every_target() {
    let corpus = repo_root().join("fuzz/corpus");
    for (target, run) in loanfolio::fuzzing::TARGETS {
        let dir = corpus.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for {target}");
        for input in inputs {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} fails on {}", input.display());
        }
    }
}
