//! Server selection: suitable servers by read preference, staleness and the latency window.
