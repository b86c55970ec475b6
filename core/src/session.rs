//! One peer connection fetching metadata.
//!
//! STUB: filled in by the metadata-fetching work.
