//! BitTorrent peer wire: BEP 3 handshake and framing, BEP 10, BEP 9, BEP 11.
//!
//! STUB: filled in by the metadata-fetching work.
