//! Deterministic DHT network simulation and end-to-end tests for magnetar. (Not yet implemented: see the issue tracker.)
