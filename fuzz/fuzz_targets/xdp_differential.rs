//! `quixd::fuzzing::Differential`: the XDP program (BPF_PROG_TEST_RUN) against `wire::parse`.
//! Needs CAP_BPF and CAP_NET_ADMIN (root); the programs are loaded once per process.
#![no_main]

use std::sync::OnceLock;

use quixd::fuzzing::Differential;

static PROGRAMS: OnceLock<Differential> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|frame: &[u8]| {
    PROGRAMS
        .get_or_init(|| {
            Differential::new()
                .unwrap_or_else(|e| panic!("loading the XDP program (run as root): {e}"))
        })
        .check(frame);
});
