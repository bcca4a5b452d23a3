//! Integration tests of the `brook` binary: it is run as a process against brook-testkit's
//! fake server, with scripted change events, and its stdout, stderr, exit status and the
//! commands the server received are checked.

mod bench;
mod harness;
mod secrets;
mod tail;
