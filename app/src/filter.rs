//! Operator content rules in the crawler (issue 20 §2): the rules file read at start
//! and again on SIGHUP (a refused file leaves the old rules in force), and the
//! decisions' counts for `/metrics` (`magnetar_filter_decisions_total{action,rule}`).
//!
//! Parsing and matching are `magnetar_core::filter`'s; what the decisions do
//! (tombstones, hidden torrents) is `crate::ingest`'s.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use magnetar_core::filter::{Rule, Rules, MAX_FILE_BYTES};
use magnetar_core::report::Metric;

/// Distinct rule labels counted in `/metrics`; decisions of further rules are
/// counted under `rule="other"` (labels are the operator's: the set stays bounded).
pub const MAX_METRIC_RULES: usize = 64;

/// Reads and parses a rules file: a file over [`MAX_FILE_BYTES`] is refused before
/// it is read whole, a syntax error names its line and column.
pub fn load(path: &Path) -> Result<Rules, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{}: the rules file is over {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    let text = String::from_utf8(buf).map_err(|e| {
        format!(
            "{}: not UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    Rules::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The label a rule is counted and logged under: its own, else `line N`.
pub fn rule_label(r: &Rule) -> String {
    match &r.label {
        Some(l) => l.clone(),
        None => format!("line {}", r.line),
    }
}

/// The crawler's rules and the counts of their decisions.
pub struct Filter {
    rules: Rules,
    path: Option<PathBuf>,
    /// Set by SIGHUP; the rules are read again at the next status tick.
    reload: Arc<AtomicBool>,
    /// (action, rule label) → decisions.
    counts: BTreeMap<(&'static str, String), u64>,
    reloads: u64,
    reload_failures: u64,
}

impl Filter {
    /// Rules from `path` (None: no rules, only tombstones apply).
    pub fn new(rules: Rules, path: Option<PathBuf>) -> Filter {
        Filter {
            rules,
            path,
            reload: Arc::new(AtomicBool::new(false)),
            counts: BTreeMap::new(),
            reloads: 0,
            reload_failures: 0,
        }
    }

    /// The flag whose setting (by the SIGHUP handler) asks for a reload.
    pub fn reload_flag(&self) -> Arc<AtomicBool> {
        self.reload.clone()
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Reads the rules file again if a reload was asked for. A refused file is
    /// logged with its line and column and counted; the old rules stay in force.
    pub fn poll_reload(&mut self) {
        if !self.reload.swap(false, Ordering::SeqCst) {
            return;
        }
        let Some(path) = self.path.clone() else {
            tracing::info!(target: "magnetar::filter", "SIGHUP: no --filter-rules file to reload");
            return;
        };
        match load(&path) {
            Ok(r) => {
                self.reloads += 1;
                tracing::info!(
                    target: "magnetar::filter",
                    rules = r.rules().len(),
                    file = %path.display(),
                    "filter rules reloaded"
                );
                self.rules = r;
            }
            Err(e) => {
                self.reload_failures += 1;
                tracing::error!(
                    target: "magnetar::filter",
                    rules = self.rules.rules().len(),
                    "filter rules refused, the old rules stay in force: {e}"
                );
            }
        }
    }

    /// Counts one decision (`action`: drop, hide, skip) of the rule labelled `rule`.
    pub fn count(&mut self, action: &'static str, rule: &str) {
        let distinct = self.counts.keys().filter(|k| k.0 == action).count();
        let key = if self.counts.contains_key(&(action, rule.to_owned()))
            || distinct < MAX_METRIC_RULES
        {
            (action, rule.to_owned())
        } else {
            (action, "other".to_owned())
        };
        *self.counts.entry(key).or_default() += 1;
    }

    /// Decisions so far, by (action, rule) (the tests read them).
    #[allow(dead_code)]
    pub fn counts(&self) -> &BTreeMap<(&'static str, String), u64> {
        &self.counts
    }

    /// The `/metrics` samples: decisions by action and rule (tombstone skips always
    /// shown), reloads and refused reloads, rules in force.
    pub fn metrics(&self) -> Vec<Metric> {
        const NAME: &str = "magnetar_filter_decisions_total";
        const HELP: &str = "Filter decisions: drop (not stored, tombstoned), hide (stored hidden), skip (tombstoned infohash not fetched), by rule label.";
        let mut out = Vec::new();
        if !self.counts.contains_key(&("skip", "tombstone".to_owned())) {
            out.push(
                Metric::counter(NAME, HELP, 0)
                    .with_label("action", "skip")
                    .with_label("rule", "tombstone"),
            );
        }
        for ((action, rule), n) in &self.counts {
            out.push(
                Metric::counter(NAME, HELP, *n)
                    .with_label("action", action)
                    .with_label("rule", rule),
            );
        }
        out.push(Metric::counter(
            "magnetar_filter_reloads_total",
            "Rules files reloaded on SIGHUP.",
            self.reloads,
        ));
        out.push(Metric::counter(
            "magnetar_filter_reload_failures_total",
            "Rules files refused on SIGHUP (the old rules stayed in force).",
            self.reload_failures,
        ));
        out.push(Metric::gauge(
            "magnetar_filter_rules",
            "Filter rules in force.",
            self.rules.rules().len() as f64,
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_labels_in_metrics_are_bounded() {
        let mut f = Filter::new(Rules::default(), None);
        for i in 0..200 {
            f.count("drop", &format!("r{i}"));
        }
        f.count("drop", "r0");
        assert_eq!(f.counts().len(), MAX_METRIC_RULES + 1);
        assert_eq!(f.counts()[&("drop", "r0".to_owned())], 2);
        assert_eq!(
            f.counts()[&("drop", "other".to_owned())],
            (200 - MAX_METRIC_RULES) as u64
        );
    }

    #[test]
    fn a_bad_or_huge_file_is_refused_and_the_old_rules_stay() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rules");
        std::fs::write(&p, "spam: drop words casino\n").unwrap();
        let mut f = Filter::new(load(&p).unwrap(), Some(p.clone()));
        std::fs::write(&p, "spam: drop words casino\nhide wurds x\n").unwrap();
        f.reload_flag().store(true, Ordering::SeqCst);
        f.poll_reload();
        assert_eq!(f.rules().rules().len(), 1);
        assert_eq!(f.reload_failures, 1);
        let e = load(&p).unwrap_err();
        assert!(e.contains("line 2, column 6"), "{e}");
        std::fs::write(&p, vec![b'#'; MAX_FILE_BYTES + 10]).unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains("over"), "{e}");
        std::fs::write(&p, "a: hide words x\nb: drop kinds adult\n").unwrap();
        f.reload_flag().store(true, Ordering::SeqCst);
        f.poll_reload();
        assert_eq!(f.rules().rules().len(), 2);
    }
}
