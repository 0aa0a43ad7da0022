//! Alerts delivered to real receivers on loopback (filled in with the
//! alert sinks).
