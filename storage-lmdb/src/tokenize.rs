//! The tokenizer shared by indexing and queries.
//!
//! Words are the maximal runs of `char::is_alphanumeric` characters (so numbers are
//! kept, and every script with letters works), lowercased with `str::to_lowercase`.
//! A word longer than [`MAX_TERM_BYTES`] is cut at a char boundary (LMDB keys are
//! limited to 511 bytes).

use std::collections::HashMap;

use crate::types::FileEntry;

/// Longest indexed term, in bytes.
pub const MAX_TERM_BYTES: usize = 64;
/// At most this many distinct terms are indexed per torrent (name terms first).
pub const MAX_TERMS_PER_TORRENT: usize = 2048;

/// Splits `text` into lowercase words.
pub fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(normalize)
}

fn normalize(w: &str) -> String {
    let mut t = if w
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        w.to_owned()
    } else {
        w.to_lowercase()
    };
    if t.len() > MAX_TERM_BYTES {
        let mut cut = MAX_TERM_BYTES;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
    }
    t
}

/// Keeps one entry per term, with the name flag OR-ed (input sorted by term).
fn dedup_terms<T: PartialEq>(v: &mut Vec<(T, bool)>) {
    v.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 |= later.1;
            true
        } else {
            false
        }
    });
}

/// The distinct terms of a torrent, sorted, each with whether it occurs in the name.
/// Past [`MAX_TERMS_PER_TORRENT`], name terms are kept first, then path terms in
/// byte order.
fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

pub(crate) fn torrent_terms(name: &str, files: &[FileEntry]) -> Vec<(String, bool)> {
    // Dedup the raw words first (file paths repeat words), then normalize each once.
    let mut raw: Vec<(&str, bool)> = split(name).map(|w| (w, true)).collect();
    for f in files {
        raw.extend(split(&f.path).map(|w| (w, false)));
    }
    raw.sort_unstable_by(|a, b| a.0.cmp(b.0));
    dedup_terms(&mut raw);
    let mut out: Vec<(String, bool)> = raw.into_iter().map(|(w, n)| (normalize(w), n)).collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    dedup_terms(&mut out);
    if out.len() > MAX_TERMS_PER_TORRENT {
        let (mut keep, rest): (Vec<_>, Vec<_>) = out.into_iter().partition(|t| t.1);
        keep.truncate(MAX_TERMS_PER_TORRENT);
        let room = MAX_TERMS_PER_TORRENT - keep.len();
        keep.extend(rest.into_iter().take(room));
        keep.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out = keep;
    }
    out
}

/// A batch's term dictionary: raw words (borrowed from the batch's inputs) map to
/// term ids, so each distinct spelling is normalized and allocated once per batch and
/// a torrent's terms are deduplicated as integers. Hashing is foldhash with a
/// per-process random seed (words come from the network).
pub(crate) struct TermIndex<'a> {
    raw: HashMap<&'a str, u32, foldhash::fast::RandomState>,
    norm: HashMap<String, u32, foldhash::fast::RandomState>,
    /// Normalized term of each id.
    pub terms: Vec<String>,
}

impl<'a> TermIndex<'a> {
    pub fn new() -> TermIndex<'a> {
        TermIndex {
            raw: HashMap::default(),
            norm: HashMap::default(),
            terms: Vec::new(),
        }
    }

    fn id_of_normalized(&mut self, n: String) -> u32 {
        if let Some(&i) = self.norm.get(&n) {
            return i;
        }
        let i = self.terms.len() as u32;
        self.terms.push(n.clone());
        self.norm.insert(n, i);
        i
    }

    fn id(&mut self, w: &'a str) -> u32 {
        if let Some(&i) = self.raw.get(w) {
            return i;
        }
        let i = self.id_of_normalized(normalize(w));
        self.raw.insert(w, i);
        i
    }

    /// The distinct terms of a torrent as (term id, in name), sorted by id: the same
    /// set as `torrent_terms` gives.
    pub fn torrent(&mut self, name: &'a str, files: &'a [FileEntry], out: &mut Vec<(u32, bool)>) {
        out.clear();
        for w in split(name) {
            let i = self.id(w);
            out.push((i, true));
        }
        for f in files {
            for w in split(&f.path) {
                let i = self.id(w);
                out.push((i, false));
            }
        }
        out.sort_unstable();
        // (id, false) sorts before (id, true): keep the last of each run.
        let mut keep = 0;
        for k in 0..out.len() {
            if k + 1 < out.len() && out[k + 1].0 == out[k].0 {
                continue;
            }
            out[keep] = out[k];
            keep += 1;
        }
        out.truncate(keep);
        if out.len() > MAX_TERMS_PER_TORRENT {
            // Rare: let the reference implementation choose which terms to keep.
            out.clear();
            for (t, n) in torrent_terms(name, files) {
                let i = self.id_of_normalized(t);
                out.push((i, n));
            }
            out.sort_unstable();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lowercases_and_keeps_numbers() {
        let v: Vec<String> =
            tokenize("Ubuntu-22.04_LTS [x86_64] ÉTÉ Straße 東京2020 ΣΟΦΙΑ").collect();
        assert_eq!(
            v,
            vec![
                "ubuntu",
                "22",
                "04",
                "lts",
                "x86",
                "64",
                "été",
                "straße",
                "東京2020",
                "σοφια"
            ]
        );
    }

    #[test]
    fn torrent_terms_dedup_and_flag_name_hits() {
        let files = vec![
            FileEntry {
                path: "Show/Show 01.mkv".into(),
                size: 1,
            },
            FileEntry {
                path: "show/extra 01.MKV".into(),
                size: 1,
            },
        ];
        let t = torrent_terms("The Show", &files);
        let want: Vec<(String, bool)> = [
            ("01", false),
            ("extra", false),
            ("mkv", false),
            ("show", true),
            ("the", true),
        ]
        .iter()
        .map(|(w, n)| (w.to_string(), *n))
        .collect();
        assert_eq!(t, want);
    }

    #[test]
    fn term_index_gives_the_same_terms_as_torrent_terms() {
        let files: Vec<FileEntry> = ["Show/Show 01.mkv", "show/extra 01.MKV", "ÉTÉ/été.txt"]
            .iter()
            .map(|p| FileEntry {
                path: p.to_string(),
                size: 1,
            })
            .collect();
        // Many distinct path words: past MAX_TERMS_PER_TORRENT.
        let many: Vec<FileEntry> = (0..MAX_TERMS_PER_TORRENT + 10)
            .map(|i| FileEntry {
                path: format!("w{i}"),
                size: 1,
            })
            .collect();
        let mut idx = TermIndex::new();
        let mut out = Vec::new();
        for (name, files) in [("The Show été", &files[..]), ("x SHOW", &many[..])] {
            idx.torrent(name, files, &mut out);
            let mut got: Vec<(String, bool)> = out
                .iter()
                .map(|&(i, n)| (idx.terms[i as usize].clone(), n))
                .collect();
            got.sort();
            assert_eq!(got, torrent_terms(name, files));
        }
        idx.torrent("", &[], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn long_terms_are_cut_on_char_boundary() {
        let long = "é".repeat(100);
        let t: Vec<String> = tokenize(&long).collect();
        assert!(t[0].len() <= MAX_TERM_BYTES);
        assert!(t[0].chars().all(|c| c == 'é'));
    }
}
