//! The tokenizer shared by indexing and queries.
//!
//! Words are the maximal runs of `char::is_alphanumeric` characters (so numbers are
//! kept, and every script with letters works), lowercased with `str::to_lowercase`.
//! A word longer than [`MAX_TERM_BYTES`] is cut at a char boundary (LMDB keys are
//! limited to 511 bytes).

use std::collections::BTreeMap;

use crate::types::FileEntry;

/// Longest indexed term, in bytes.
pub const MAX_TERM_BYTES: usize = 64;
/// At most this many distinct terms are indexed per torrent (name terms first).
pub const MAX_TERMS_PER_TORRENT: usize = 2048;

/// Splits `text` into lowercase words.
pub fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut t = w.to_lowercase();
            if t.len() > MAX_TERM_BYTES {
                let mut cut = MAX_TERM_BYTES;
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                t.truncate(cut);
            }
            t
        })
}

/// The distinct terms of a torrent, each with whether it occurs in the name.
pub(crate) fn torrent_terms(name: &str, files: &[FileEntry]) -> BTreeMap<String, bool> {
    let mut terms = BTreeMap::new();
    for t in tokenize(name) {
        if terms.len() >= MAX_TERMS_PER_TORRENT {
            return terms;
        }
        terms.insert(t, true);
    }
    for f in files {
        for t in tokenize(&f.path) {
            if terms.len() >= MAX_TERMS_PER_TORRENT {
                return terms;
            }
            terms.entry(t).or_insert(false);
        }
    }
    terms
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
    fn long_terms_are_cut_on_char_boundary() {
        let long = "é".repeat(100);
        let t: Vec<String> = tokenize(&long).collect();
        assert!(t[0].len() <= MAX_TERM_BYTES);
        assert!(t[0].chars().all(|c| c == 'é'));
    }
}
