#![no_main]
//! See src/fuzzing.rs: the properties this target checks.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| loanfolio::fuzzing::sniff(data));
