//! brook's integration tests: the spec runners and the whole client against the
//! testkit's fake server.

mod auth;
mod change_stream;
mod client;
mod csot;
mod csot_change_streams;
mod everyday;
mod failover;
mod failures;
mod load_balanced;
mod monitor;
mod observe;
mod reads_writes;
mod secrets;
mod spec_auth;
mod spec_srv;
mod spec_uri;
mod srv;
mod stream_features;
mod tls;
