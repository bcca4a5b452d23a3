//! MongoDB server discovery and monitoring (SDAM) and server selection, without IO.
//!
//! [`TopologyDescription`] follows the SDAM specification: the driver feeds it each
//! monitor's outcome ([`TopologyDescription::handle_hello`]) and each application error
//! ([`TopologyDescription::handle_application_error`], which says whether to mark the
//! server Unknown and clear its pool); [`selection`] picks servers for an operation by read
//! preference, staleness and the latency window. Nothing here reads a clock, touches a
//! socket or spawns: `now` is an argument, and the driver (`brook`) does the IO.

#![forbid(unsafe_code)]

pub mod description;
pub mod rtt;
pub mod sdam;
pub mod selection;

pub use brook_command::ServerAddress;
pub use description::{ServerDescription, ServerType, TopologyDescription, TopologyType};
pub use rtt::RttEstimator;
pub use sdam::{
    ApplicationError, ApplicationErrorKind, ErrorDecision, ErrorPhase, MAX_WIRE_VERSION,
    MIN_WIRE_VERSION, SdamEvent, TopologyOptions,
};
pub use selection::{
    Operation, ReadPreference, ReadPreferenceMode, SelectionError, TagSet, in_latency_window,
    read_preference_field, select_from_window, select_server, suitable_servers,
};
