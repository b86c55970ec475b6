//! Pure rendering of the crawler's counters for operators: the status line and
//! Prometheus text. Shared by every runtime (no IO here).
