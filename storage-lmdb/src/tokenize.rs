//! The tokenizer shared by indexing and queries.
//!
//! A *word* is a maximal run of `char::is_alphanumeric` characters and combining
//! marks (so numbers are kept, every script with letters works, and a decomposed
//! "é" stays one word). Inside a word:
//!
//! - Characters of scripts written without spaces (Han, Hiragana, Katakana, Thai,
//!   Lao, Myanmar, Khmer; see [`is_bigram_char`]) are *units* (the character and the
//!   combining marks after it). A run of units `u0 … un-1` is indexed as the
//!   bigrams `u0u1, u1u2, …` plus the last unit alone, so every unit starts exactly
//!   one term: a one-character query is a prefix query that finds the character
//!   wherever it is (`語` finds "日本語" through its term `語`, and "語学" through
//!   `語学`); a longer query asks for its bigrams.
//! - Everything else is folded: Unicode compatibility decomposition (NFKD), combining
//!   marks removed, lowercased (`Épopée` → `epopee`, `Ｆｕｌｌ` → `full`). Hangul
//!   syllables are kept whole (their decomposition into jamo is not a diacritic).
//!
//! Terms are at most [`MAX_TERM_BYTES`] (LMDB keys are limited to 511 bytes): folding
//! stops there, so a word of any length allocates at most that much; a torrent's
//! name and paths are read for at most [`MAX_WORDS_PER_TORRENT`] words and
//! [`MAX_TOKENS_PER_TORRENT`] terms (at most [`MAX_TOKENS_PER_WORD`] from one word),
//! and at most [`MAX_TERMS_PER_TORRENT`] distinct terms are kept.

use std::collections::HashMap;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use crate::types::FileEntry;

/// Longest indexed term, in bytes.
pub const MAX_TERM_BYTES: usize = 64;
/// At most this many distinct terms are indexed per torrent (name terms first).
pub const MAX_TERMS_PER_TORRENT: usize = 2048;
/// At most this many words of a torrent's name and file paths are read (name
/// first): the work and memory of tokenizing one torrent are bounded whatever its
/// names hold.
pub const MAX_WORDS_PER_TORRENT: usize = 65_536;
/// At most this many terms are made from one torrent's name and paths, counting
/// repeats (the words past it are not indexed).
pub const MAX_TOKENS_PER_TORRENT: usize = 65_536;
/// At most this many tokens are made from one word (a run of 10,000 CJK characters
/// is indexed for its first ones).
pub const MAX_TOKENS_PER_WORD: usize = 1_024;
/// A unit keeps at most this many bytes (its character and the first marks after it).
const MAX_UNIT_BYTES: usize = 16;

/// Posting flag: the term occurs in the torrent's name.
pub(crate) const IN_NAME: u8 = 1;
/// Posting flag: the term occurs in a file path.
pub(crate) const IN_PATH: u8 = 2;

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c)
}

/// Characters of scripts written without spaces between words, indexed as bigrams.
pub fn is_bigram_char(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF         // Thai, Lao
        | 0x1000..=0x109F       // Myanmar
        | 0x1780..=0x17FF       // Khmer
        | 0x3040..=0x30FF       // Hiragana, Katakana
        | 0x31F0..=0x31FF       // Katakana phonetic extensions
        | 0x3400..=0x4DBF       // CJK extension A
        | 0x4E00..=0x9FFF       // CJK unified ideographs
        | 0xF900..=0xFAFF       // CJK compatibility ideographs
        | 0xFF66..=0xFF9D       // halfwidth Katakana
        | 0x20000..=0x3FFFF) // CJK extensions B and later
}

fn is_hangul_syllable(c: char) -> bool {
    matches!(c as u32, 0xAC00..=0xD7A3)
}

/// One token of a word: a folded piece of a spaced script, or a unit of a
/// space-less one (as written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    Word(String),
    Unit(&'a str),
}

/// Folds `s` (NFKD, marks removed, lowercase), stopping at [`MAX_TERM_BYTES`].
pub(crate) fn fold(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return s[..s.len().min(MAX_TERM_BYTES)].to_owned();
    }
    let mut out = String::with_capacity(s.len().min(MAX_TERM_BYTES));
    // False once the term is full.
    let push = |out: &mut String, c: char| -> bool {
        if out.len() + c.len_utf8() > MAX_TERM_BYTES {
            false
        } else {
            out.push(c);
            true
        }
    };
    for c in s.chars() {
        let mut room = true;
        if c.is_ascii() {
            room = push(&mut out, c.to_ascii_lowercase());
        } else if is_hangul_syllable(c) {
            room = push(&mut out, c);
        } else {
            decompose_compatible(c, |d| {
                if room && !is_combining_mark(d) {
                    for l in d.to_lowercase().filter(|&l| !is_combining_mark(l)) {
                        room = room && push(&mut out, l);
                    }
                }
            });
        }
        if !room {
            break;
        }
    }
    out
}

/// The tokens of one word, in order, appended to `out` (at most
/// [`MAX_TOKENS_PER_WORD`]).
pub(crate) fn word_toks<'a>(word: &'a str, out: &mut Vec<Tok<'a>>) {
    let cap = out.len() + MAX_TOKENS_PER_WORD;
    let mut plain: Option<usize> = None;
    let mut unit: Option<(usize, usize)> = None; // (start, end of its kept bytes)
    let flush_plain = |out: &mut Vec<Tok<'a>>, from: Option<usize>, to: usize| {
        if let Some(a) = from {
            let f = fold(&word[a..to]);
            if !f.is_empty() {
                out.push(Tok::Word(f));
            }
        }
    };
    for (i, c) in word.char_indices() {
        if out.len() + 2 > cap {
            // Room for at most the pending token.
            if let Some((a, b)) = unit.take() {
                out.push(Tok::Unit(&word[a..b]));
            }
            flush_plain(out, plain.take(), i);
            out.truncate(cap);
            return;
        }
        if is_bigram_char(c) {
            flush_plain(out, plain.take(), i);
            if let Some((a, b)) = unit.take() {
                out.push(Tok::Unit(&word[a..b]));
            }
            unit = Some((i, i + c.len_utf8()));
        } else if is_combining_mark(c) && (unit.is_some() || plain.is_some()) {
            if let Some((a, b)) = &mut unit {
                if *b == i && i + c.len_utf8() - *a <= MAX_UNIT_BYTES {
                    *b = i + c.len_utf8();
                }
            }
        } else {
            if let Some((a, b)) = unit.take() {
                out.push(Tok::Unit(&word[a..b]));
            }
            if plain.is_none() {
                plain = Some(i);
            }
        }
    }
    flush_plain(out, plain, word.len());
    if let Some((a, b)) = unit {
        out.push(Tok::Unit(&word[a..b]));
    }
}

/// The words of `text` (maximal runs of word characters).
pub(crate) fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !is_word_char(c))
        .filter(|w| !w.is_empty())
}

/// The index terms of a word's tokens, in order: folded words as they are, runs of
/// units as bigrams plus their last unit.
pub(crate) fn toks_terms(toks: &[Tok<'_>], mut emit: impl FnMut(String)) {
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Word(w) => emit(w.clone()),
            Tok::Unit(u) => match toks.get(i + 1) {
                Some(Tok::Unit(v)) => emit(format!("{u}{v}")),
                _ => emit((*u).to_owned()),
            },
        }
        i += 1;
    }
}

/// The index terms of one word.
fn word_terms(word: &str, emit: impl FnMut(String)) {
    let mut toks = Vec::new();
    word_toks(word, &mut toks);
    toks_terms(&toks, emit);
}

/// Splits `text` into its index terms, in order (the terms a document holding
/// `text` is found by).
pub fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    for w in words(text).take(MAX_WORDS_PER_TORRENT) {
        word_terms(w, |t| out.push(t));
        if out.len() >= MAX_TOKENS_PER_TORRENT {
            out.truncate(MAX_TOKENS_PER_TORRENT);
            break;
        }
    }
    out.into_iter()
}

/// Keeps one entry per term, with the flags OR-ed (input sorted by term).
fn dedup_terms<T: PartialEq>(v: &mut Vec<(T, u8)>) {
    v.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 |= later.1;
            true
        } else {
            false
        }
    });
}

/// The words of a torrent's name then paths, each with its flag, at most
/// [`MAX_WORDS_PER_TORRENT`].
fn torrent_words<'a>(name: &'a str, files: &'a [FileEntry]) -> impl Iterator<Item = (&'a str, u8)> {
    words(name)
        .map(|w| (w, IN_NAME))
        .chain(
            files
                .iter()
                .flat_map(|f| words(&f.path).map(|w| (w, IN_PATH))),
        )
        .take(MAX_WORDS_PER_TORRENT)
}

/// The distinct terms of a torrent, sorted, each with its flags ([`IN_NAME`],
/// [`IN_PATH`]). Past [`MAX_TERMS_PER_TORRENT`], name terms are kept first, then
/// path terms in byte order.
pub fn torrent_terms(name: &str, files: &[FileEntry]) -> Vec<(String, u8)> {
    let mut out: Vec<(String, u8)> = Vec::new();
    for (w, f) in torrent_words(name, files) {
        word_terms(w, |t| out.push((t, f)));
        if out.len() >= MAX_TOKENS_PER_TORRENT {
            out.truncate(MAX_TOKENS_PER_TORRENT);
            break;
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    dedup_terms(&mut out);
    if out.len() > MAX_TERMS_PER_TORRENT {
        let (mut keep, rest): (Vec<_>, Vec<_>) = out.into_iter().partition(|t| t.1 & IN_NAME != 0);
        keep.truncate(MAX_TERMS_PER_TORRENT);
        let room = MAX_TERMS_PER_TORRENT - keep.len();
        keep.extend(rest.into_iter().take(room));
        keep.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out = keep;
    }
    out
}

/// A batch's term dictionary: raw words (borrowed from the batch's inputs) map to
/// the ids of their terms, so each distinct spelling is tokenized and allocated once
/// per batch and a torrent's terms are deduplicated as integers. Hashing is foldhash
/// with a per-process random seed (words come from the network).
pub(crate) struct TermIndex<'a> {
    /// Raw word → its term ids, `word_ids[start..start + len]`.
    raw: HashMap<&'a str, (u32, u32), foldhash::fast::RandomState>,
    word_ids: Vec<u32>,
    norm: HashMap<String, u32, foldhash::fast::RandomState>,
    /// Normalized term of each id.
    pub terms: Vec<String>,
}

impl<'a> TermIndex<'a> {
    pub fn new() -> TermIndex<'a> {
        TermIndex {
            raw: HashMap::default(),
            word_ids: Vec::new(),
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

    /// The term ids of a raw word: `word_ids[start..start + len]`.
    fn ids(&mut self, w: &'a str) -> (u32, u32) {
        if let Some(&r) = self.raw.get(w) {
            return r;
        }
        let mut ts = Vec::new();
        word_terms(w, |t| ts.push(t));
        let start = self.word_ids.len() as u32;
        for t in ts {
            let i = self.id_of_normalized(t);
            self.word_ids.push(i);
        }
        let r = (start, self.word_ids.len() as u32 - start);
        self.raw.insert(w, r);
        r
    }

    /// The distinct terms of a torrent as (term id, flags), sorted by id: the same
    /// set as `torrent_terms` gives.
    pub fn torrent(&mut self, name: &'a str, files: &'a [FileEntry], out: &mut Vec<(u32, u8)>) {
        out.clear();
        'words: for (w, f) in torrent_words(name, files) {
            let (s, n) = self.ids(w);
            for k in s..s + n {
                if out.len() == MAX_TOKENS_PER_TORRENT {
                    break 'words;
                }
                out.push((self.word_ids[k as usize], f));
            }
        }
        out.sort_unstable_by_key(|x| x.0);
        let mut keep = 0;
        for k in 0..out.len() {
            if keep > 0 && out[keep - 1].0 == out[k].0 {
                out[keep - 1].1 |= out[k].1;
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
    fn splits_folds_and_keeps_numbers() {
        let v: Vec<String> =
            tokenize("Ubuntu-22.04_LTS [x86_64] ÉTÉ Straße Épopée ΣΟΦΙΑ Ｆｕｌｌ").collect();
        assert_eq!(
            v,
            vec![
                "ubuntu",
                "22",
                "04",
                "lts",
                "x86",
                "64",
                "ete",
                "straße",
                "epopee",
                "σοφια",
                "full"
            ]
        );
        // Decomposed input (e + U+0301) folds the same and stays one word.
        let v: Vec<String> = tokenize("E\u{301}pope\u{301}e").collect();
        assert_eq!(v, vec!["epopee"]);
        // Hangul stays whole.
        let v: Vec<String> = tokenize("한국어 영화").collect();
        assert_eq!(v, vec!["한국어", "영화"]);
    }

    #[test]
    fn spaceless_scripts_become_bigrams_and_a_last_unit() {
        let v: Vec<String> = tokenize("日本語 東京2020 x語").collect();
        assert_eq!(
            v,
            vec!["日本", "本語", "語", "東京", "京", "2020", "x", "語"]
        );
        // Thai: a unit keeps its marks.
        let v: Vec<String> = tokenize("ภาษาไทย").collect();
        assert_eq!(
            v.len(),
            "ภาษาไทย".chars().filter(|c| !is_combining_mark(*c)).count()
        );
        assert!(v.iter().all(|t| t.chars().count() <= 4));
    }

    #[test]
    fn torrent_terms_dedup_and_flag_name_and_path_hits() {
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
        let want: Vec<(String, u8)> = [
            ("01", IN_PATH),
            ("extra", IN_PATH),
            ("mkv", IN_PATH),
            ("show", IN_NAME | IN_PATH),
            ("the", IN_NAME),
        ]
        .iter()
        .map(|(w, n)| (w.to_string(), *n))
        .collect();
        assert_eq!(t, want);
    }

    #[test]
    fn term_index_gives_the_same_terms_as_torrent_terms() {
        let files: Vec<FileEntry> = [
            "Show/Show 01.mkv",
            "show/extra 01.MKV",
            "ÉTÉ/été.txt",
            "日本語/字幕.srt",
        ]
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
        for (name, files) in [("The Show été 日本", &files[..]), ("x SHOW", &many[..])] {
            idx.torrent(name, files, &mut out);
            let mut got: Vec<(String, u8)> = out
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
        assert!(t[0].chars().all(|c| c == 'e'));
        let t: Vec<String> = tokenize(&"ж".repeat(1000)).collect();
        assert!(t[0].len() <= MAX_TERM_BYTES && t[0].len() >= MAX_TERM_BYTES - 1);
        // A mark storm stays bounded (marks after a unit are cut, plain marks dropped).
        let zalgo = format!("語{}", "\u{301}".repeat(10_000));
        let t: Vec<String> = tokenize(&zalgo).collect();
        assert_eq!(t.len(), 1);
        assert!(t[0].len() <= MAX_UNIT_BYTES);
        // Characters whose decomposition is long (U+FDFA: 18 chars) still fit.
        let t: Vec<String> = tokenize(&"\u{FDFA}".repeat(50)).collect();
        assert!(t[0].len() <= MAX_TERM_BYTES);
    }

    #[test]
    fn huge_names_read_a_bounded_number_of_words() {
        let name = "ab ".repeat(MAX_WORDS_PER_TORRENT * 2);
        assert_eq!(tokenize(&name).count(), MAX_WORDS_PER_TORRENT);
        // One huge word of a space-less script, or of alternating scripts.
        let mut toks = Vec::new();
        let cjk = "漢字".repeat(100_000);
        word_toks(&cjk, &mut toks);
        assert_eq!(toks.len(), MAX_TOKENS_PER_WORD);
        toks.clear();
        let mixed = "a語".repeat(100_000);
        word_toks(&mixed, &mut toks);
        assert_eq!(toks.len(), MAX_TOKENS_PER_WORD);
        let name = format!("{cjk} {cjk}x {mixed}");
        assert!(tokenize(&name).count() <= 3 * MAX_TOKENS_PER_WORD);
        // Many words of many tokens: the torrent's budget.
        let name = "漢字".repeat(MAX_TOKENS_PER_WORD) + " ";
        let name = name.repeat(MAX_TOKENS_PER_TORRENT / MAX_TOKENS_PER_WORD + 5);
        assert_eq!(tokenize(&name).count(), MAX_TOKENS_PER_TORRENT);
        let mut idx = TermIndex::new();
        let mut out = Vec::new();
        idx.torrent(&name, &[], &mut out);
        let mut got: Vec<(String, u8)> = out
            .iter()
            .map(|&(i, n)| (idx.terms[i as usize].clone(), n))
            .collect();
        got.sort();
        assert_eq!(got, torrent_terms(&name, &[]));
        let name: String = (0..MAX_WORDS_PER_TORRENT * 2)
            .map(|i| format!("w{i} "))
            .collect();
        let t = torrent_terms(&name, &[]);
        assert_eq!(t.len(), MAX_TERMS_PER_TORRENT);
    }
}
