//! Integration tests of the `brook` binary: it is run as a process against brook-testkit's
//! fake server, with scripted change events, and its stdout, stderr, exit status and the
//! commands the server received are checked; and, where a real server's behaviour is the
//! point, against the nx-27017 peer (see [`peer`]).

mod bench;
mod harness;
mod peer;
mod secrets;
mod tail;
