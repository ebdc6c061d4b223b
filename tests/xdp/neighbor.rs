//! XDP tests: neighbor (being written).
