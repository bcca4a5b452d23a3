//! brook-pool's integration tests: the CMAP spec runner, the cancellation matrix and the
//! pool's own rules.

mod cancel;
mod spec;
mod support;
mod unit;
