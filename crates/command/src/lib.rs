//! MongoDB commands (being written).
