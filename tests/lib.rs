//! Shared helpers for brook's integration tests.
