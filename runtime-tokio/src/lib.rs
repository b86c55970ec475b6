//! Tokio driver for the magnetar crawler core. (Not yet implemented: see the issue tracker.)
