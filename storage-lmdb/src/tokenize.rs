//! The tokenizer shared by indexing and queries.
//!
//! Words are the maximal runs of `char::is_alphanumeric` characters (so numbers are
//! kept, and every script with letters works), lowercased with `str::to_lowercase`.
//! A word longer than [`MAX_TERM_BYTES`] is cut at a char boundary (LMDB keys are
//! limited to 511 bytes).

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
    fn long_terms_are_cut_on_char_boundary() {
        let long = "é".repeat(100);
        let t: Vec<String> = tokenize(&long).collect();
        assert!(t[0].len() <= MAX_TERM_BYTES);
        assert!(t[0].chars().all(|c| c == 'é'));
    }
}
