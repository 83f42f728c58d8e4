//! Test support shared by the supervise tests (and, by path, the binary tests).
pub mod http;
