//! Integration tests of brook-changestream: transcripts that play the server, the
//! unified spec-test runner, and property tests.

mod harness;
mod hold;
mod props;
mod spec;
mod transcript;
