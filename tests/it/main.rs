//! Integration tests against a real peer: the nx-27017 that `cargo xtask test` starts, or
//! the deployment named by `MONGODB_URI` (`cargo xtask test --live`).
//!
//! Every test reads the deployment from [`brook_integration_tests::mongodb_uri`], which
//! panics when `MONGODB_URI` is unset: these tests fail rather than skip. Tests run in
//! parallel against the one deployment, so each uses its own database or collection names.

mod change_stream;
mod client;
mod connect;
mod everyday;
