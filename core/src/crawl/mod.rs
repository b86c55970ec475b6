//! The harvesting strategy (BEP 51 keyspace walk, capture, exploration, budget).
//!
//! STUB: filled in by the crawl-strategy work.
