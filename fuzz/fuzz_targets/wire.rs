//! `quixd::fuzzing::wire`: see its documentation for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quixd::fuzzing::wire(data));
