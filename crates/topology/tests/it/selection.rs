//! The server-selection spec runner: `server-selection/tests` (server_selection, rtt, in_window).
