//! Integration tests against a real peer.
