//! Metadata assembly and validation into [`TorrentInfo`].
//!
//! STUB: filled in by the metadata-fetching work.

/// A validated info dict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TorrentInfo {
    pub name: String,
    pub total_size: u64,
}
