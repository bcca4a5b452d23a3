//! SDAM: how hello replies and errors update a [`TopologyDescription`](crate::TopologyDescription).
