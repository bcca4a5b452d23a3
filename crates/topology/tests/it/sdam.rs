//! The SDAM spec runner: every unit test in `server-discovery-and-monitoring/tests`.
