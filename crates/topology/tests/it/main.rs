//! brook-topology integration tests: the SDAM and server-selection spec runners.
mod sdam;
mod selection;
