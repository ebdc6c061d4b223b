//! `quixd::fuzzing::h3`: see its documentation for the properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quixd::fuzzing::h3(data));
