//! XDP tests: attach (being written).
