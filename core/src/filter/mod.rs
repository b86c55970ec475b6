//! Operator content rules (issue 20 §2): the rules file, and the decision for a torrent.
//!
//! Pure: parsing and matching only; reading the file, keeping the old rules when a new
//! file is refused, tombstones, logging and counting belong to the application.
//!
//! # Syntax
//!
//! One rule a line; `#` starts a comment; blank lines are ignored:
//!
//! ```text
//! [LABEL:] ACTION TARGET ITEM[, ITEM ...]
//! ```
//!
//! - `ACTION`: `drop` (never stored) or `hide` (stored, kept out of search, exports
//!   and feeds).
//! - `TARGET` and its items:
//!   - `words`: words or `"quoted phrases"`, matched as whole words on the normalised
//!     name and file paths (lowercase; every run of letters and digits is a word, any
//!     other character separates);
//!   - `infohashes`: 40 hex digits each;
//!   - `kinds`: content kinds of [`crate::classify::ContentKind`] (`adult`, `software`, ...).
//! - `LABEL`: letters, digits, `-`, `_`; names the rule in decisions (else `line N`).
//!
//! ```text
//! # keep adult content out of search, refuse a takedown list outright
//! no-adult: hide kinds adult
//! takedown: drop infohashes 0123456789abcdef0123456789abcdef01234567
//! spam: drop words casino, "free money"
//! ```
//!
//! A file with an error is refused whole, with the line and column (1-based, in
//! characters) of the first error.
//!
//! # Matching
//!
//! Linear in the input: the name and each path are cut into at most [`MAX_WORDS`]
//! words, and at every word the phrases of 1 to [`MAX_PHRASE_WORDS`] words starting
//! there are looked up in an ordered map (no backtracking, no regex). When several
//! rules match, `drop` wins over `hide`, then the earliest line.

use std::collections::BTreeMap;
use std::fmt;

use crate::classify::ContentKind;

/// Rules files larger than this are refused.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// A phrase has at most this many words.
pub const MAX_PHRASE_WORDS: usize = 8;
/// Words longer than this (in bytes) are refused in rules and cut in names.
pub const MAX_WORD_BYTES: usize = 64;
/// At most this many words of a name or path are looked at.
pub const MAX_WORDS: usize = 512;
/// At most this many files of a torrent are looked at.
pub const MAX_FILES: usize = 10_000;

/// What a rule does with what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Store it, but keep it out of search results, exports and feeds.
    Hide,
    /// Never store it (and remember the infohash as a tombstone).
    Drop,
}

/// One rule of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Its line in the file (1-based).
    pub line: u32,
    /// Its label, if the line gave one.
    pub label: Option<String>,
    /// What it does.
    pub action: Action,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(l) => write!(f, "{l} (line {})", self.line),
            None => write!(f, "line {}", self.line),
        }
    }
}

/// Why a rule matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The infohash is listed.
    Infohash,
    /// The content kind is listed.
    Kind(ContentKind),
    /// A listed word or phrase (normalised) is in the name or a path.
    Words(String),
}

/// A decision: the rule that matched, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict<'r> {
    /// The rule.
    pub rule: &'r Rule,
    /// Why it matched.
    pub reason: Reason,
}

impl Verdict<'_> {
    /// What to do.
    pub fn action(&self) -> Action {
        self.rule.action
    }
}

/// A refused rules file: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesError {
    /// Line (1-based).
    pub line: u32,
    /// Column (1-based, in characters).
    pub column: u32,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for RulesError {}

/// A parsed rules file.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Phrase (normalised words joined by one space) → index of the rule that decides it.
    words: BTreeMap<String, usize>,
    longest_phrase: usize,
    infohashes: BTreeMap<[u8; 20], usize>,
    kinds: BTreeMap<u8, usize>,
}

/// Text cut into lowercase words (runs of letters and digits), kept in one buffer
/// joined by single spaces, with each word's byte range: a phrase of words `i..j` is
/// the slice from the start of word `i` to the end of word `j - 1`.
#[derive(Default)]
struct Words {
    buf: String,
    bounds: Vec<(usize, usize)>,
}

impl Words {
    /// Refills from `text`, keeping at most `max` words of at most
    /// [`MAX_WORD_BYTES`] bytes each.
    fn fill(&mut self, text: &str, max: usize) {
        self.buf.clear();
        self.bounds.clear();
        let mut start = None;
        for c in text.chars() {
            if c.is_alphanumeric() {
                if self.bounds.len() >= max {
                    break;
                }
                let s = *start.get_or_insert_with(|| {
                    if !self.buf.is_empty() {
                        self.buf.push(' ');
                    }
                    self.buf.len()
                });
                let len = self.buf.len() - s;
                if len < MAX_WORD_BYTES {
                    self.buf.extend(c.to_lowercase());
                } else if len == MAX_WORD_BYTES {
                    // Longer than any rule word: a NUL (never in a rule) keeps it
                    // from matching one by its first bytes.
                    self.buf.push('\0');
                }
            } else if let Some(s) = start.take() {
                self.bounds.push((s, self.buf.len()));
            }
        }
        if let Some(s) = start {
            if self.bounds.len() < max {
                self.bounds.push((s, self.buf.len()));
            }
        }
    }

    fn len(&self) -> usize {
        self.bounds.len()
    }

    /// Words `i..i + n` as one string.
    fn phrase(&self, i: usize, n: usize) -> Option<&str> {
        let (a, _) = *self.bounds.get(i)?;
        let (_, b) = *self.bounds.get((i + n).checked_sub(1)?)?;
        self.buf.get(a..b)
    }
}

fn err(line: usize, column: usize, message: impl Into<String>) -> RulesError {
    RulesError {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
        message: message.into(),
    }
}

/// A line being read: its characters with their columns.
struct Cursor<'a> {
    chars: Vec<(usize, char)>,
    pos: usize,
    line: usize,
    _text: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str, line: usize) -> Self {
        Cursor {
            chars: text.chars().enumerate().map(|(i, c)| (i + 1, c)).collect(),
            pos: 0,
            line,
            _text: text,
        }
    }

    fn column(&self) -> usize {
        self.chars
            .get(self.pos)
            .map_or(self.chars.len() + 1, |c| c.0)
    }

    fn skip_spaces(&mut self) {
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.1 == ' ' || c.1 == '\t')
        {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|c| c.1)
    }

    /// A bare word: up to a space, a comma, a colon or a quote.
    fn word(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' || c == ',' || c == ':' || c == '"' {
                break;
            }
            s.push(c);
            self.pos += 1;
        }
        s
    }

    fn error(&self, message: impl Into<String>) -> RulesError {
        err(self.line, self.column(), message)
    }
}

impl Rules {
    /// Parses a rules file; an error names the line and column of the first problem.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(err(
                1,
                1,
                format!("the file is over {MAX_FILE_BYTES} bytes"),
            ));
        }
        let mut rules = Rules::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            // A comment runs to the end of the line (a `#` inside quotes is text).
            let mut in_quote = false;
            let mut end = raw.len();
            for (b, c) in raw.char_indices() {
                match c {
                    '"' => in_quote = !in_quote,
                    '#' if !in_quote => {
                        end = b;
                        break;
                    }
                    _ => {}
                }
            }
            let body = raw.get(..end).unwrap_or("");
            if body.trim().is_empty() {
                continue;
            }
            rules.parse_line(body, line)?;
        }
        Ok(rules)
    }

    fn parse_line(&mut self, body: &str, line: usize) -> Result<(), RulesError> {
        let mut cur = Cursor::new(body, line);
        cur.skip_spaces();
        let start = cur.column();
        let mut first = cur.word();
        let mut label = None;
        if cur.peek() == Some(':') {
            if first.is_empty()
                || !first
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(line, start, "a label is letters, digits, '-' and '_'"));
            }
            cur.pos += 1;
            label = Some(first);
            cur.skip_spaces();
            first = cur.word();
        }
        let action = match first.as_str() {
            "drop" => Action::Drop,
            "hide" => Action::Hide,
            "" => return Err(cur.error("expected an action: drop or hide")),
            other => {
                let col = cur.column() - other.chars().count();
                return Err(err(
                    line,
                    col,
                    format!("unknown action {other:?}: drop or hide"),
                ));
            }
        };
        cur.skip_spaces();
        let target_col = cur.column();
        let target = cur.word();
        let target = match target.as_str() {
            "words" | "word" => Target::Words,
            "infohashes" | "infohash" => Target::Infohashes,
            "kinds" | "kind" => Target::Kinds,
            "" => return Err(cur.error("expected words, infohashes or kinds")),
            other => {
                return Err(err(
                    line,
                    target_col,
                    format!("unknown target {other:?}: words, infohashes or kinds"),
                ))
            }
        };
        let index = self.rules.len();
        self.rules.push(Rule {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            label,
            action,
        });
        let mut items = 0;
        loop {
            cur.skip_spaces();
            if cur.peek().is_none() {
                break;
            }
            if items > 0 {
                if cur.peek() == Some(',') {
                    cur.pos += 1;
                    cur.skip_spaces();
                }
                if cur.peek().is_none() {
                    return Err(cur.error("expected an item after ','"));
                }
            }
            let col = cur.column();
            let item = if cur.peek() == Some('"') {
                cur.pos += 1;
                let mut s = String::new();
                loop {
                    match cur.peek() {
                        None => return Err(err(line, col, "unterminated quote")),
                        Some('"') => {
                            cur.pos += 1;
                            break;
                        }
                        Some(c) => {
                            s.push(c);
                            cur.pos += 1;
                        }
                    }
                }
                if target != Target::Words {
                    return Err(err(line, col, "quoted phrases are for words rules"));
                }
                s
            } else {
                let w = cur.word();
                if w.is_empty() {
                    return Err(cur.error("unexpected character"));
                }
                w
            };
            self.add(target, &item, index, line, col)?;
            items += 1;
        }
        if items == 0 {
            return Err(cur.error("the rule lists nothing"));
        }
        Ok(())
    }

    fn add(
        &mut self,
        target: Target,
        item: &str,
        rule: usize,
        line: usize,
        col: usize,
    ) -> Result<(), RulesError> {
        match target {
            Target::Words => {
                if item
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| w.len() > MAX_WORD_BYTES)
                {
                    return Err(err(
                        line,
                        col,
                        format!("a word is over {MAX_WORD_BYTES} bytes"),
                    ));
                }
                let mut words = Words::default();
                words.fill(item, MAX_PHRASE_WORDS + 1);
                if words.len() == 0 {
                    return Err(err(line, col, "no word in this item"));
                }
                if words.len() > MAX_PHRASE_WORDS {
                    return Err(err(
                        line,
                        col,
                        format!("a phrase has at most {MAX_PHRASE_WORDS} words"),
                    ));
                }
                self.longest_phrase = self.longest_phrase.max(words.len());
                let key = words.phrase(0, words.len()).unwrap_or("").to_owned();
                self.words.entry(key).or_insert(rule);
            }
            Target::Infohashes => {
                let ih = parse_hex20(item).ok_or_else(|| {
                    err(
                        line,
                        col,
                        format!("{item:?} is not an infohash (40 hex digits)"),
                    )
                })?;
                self.infohashes.entry(ih).or_insert(rule);
            }
            Target::Kinds => {
                let kind = ContentKind::ALL
                    .iter()
                    .find(|k| k.as_str() == item)
                    .ok_or_else(|| {
                        let names: Vec<&str> =
                            ContentKind::ALL.iter().map(|k| k.as_str()).collect();
                        err(
                            line,
                            col,
                            format!("unknown kind {item:?}: one of {}", names.join(", ")),
                        )
                    })?;
                self.kinds.entry(kind.code()).or_insert(rule);
            }
        }
        Ok(())
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The decision known before metadata is fetched: infohash lists.
    pub fn check_infohash(&self, infohash: &[u8; 20]) -> Option<Verdict<'_>> {
        let i = *self.infohashes.get(infohash)?;
        Some(Verdict {
            rule: self.rules.get(i)?,
            reason: Reason::Infohash,
        })
    }

    /// The decision for a torrent with its metadata: infohash, content kind, and words
    /// of the name and of the first [`MAX_FILES`] paths. `None`: no rule matched.
    pub fn check<'a, I>(
        &self,
        infohash: &[u8; 20],
        kind: ContentKind,
        name: &str,
        paths: I,
    ) -> Option<Verdict<'_>>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut best: Option<(usize, Reason)> = None;
        let mut consider = |i: usize, reason: Reason| {
            let better = match (&best, self.rules.get(i)) {
                (None, Some(_)) => true,
                (Some((b, _)), Some(r)) => {
                    let cur = self.rules.get(*b);
                    cur.is_none_or(|c| {
                        (r.action, std::cmp::Reverse(i)) > (c.action, std::cmp::Reverse(*b))
                    })
                }
                _ => false,
            };
            if better {
                best = Some((i, reason));
            }
        };
        if let Some(&i) = self.infohashes.get(infohash) {
            consider(i, Reason::Infohash);
        }
        if let Some(&i) = self.kinds.get(&kind.code()) {
            consider(i, Reason::Kind(kind));
        }
        if !self.words.is_empty() {
            let mut words = Words::default();
            let mut paths = paths.into_iter().take(MAX_FILES);
            words.fill(name, MAX_WORDS);
            loop {
                for start in 0..words.len() {
                    for len in 1..=self.longest_phrase.min(words.len() - start) {
                        let Some(phrase) = words.phrase(start, len) else {
                            break;
                        };
                        if let Some(&i) = self.words.get(phrase) {
                            consider(i, Reason::Words(phrase.to_owned()));
                        }
                    }
                }
                match paths.next() {
                    Some(p) => words.fill(p, MAX_WORDS),
                    None => break,
                }
            }
        }
        let (i, reason) = best?;
        Some(Verdict {
            rule: self.rules.get(i)?,
            reason,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Words,
    Infohashes,
    Kinds,
}

fn parse_hex20(s: &str) -> Option<[u8; 20]> {
    let b = s.as_bytes();
    if b.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let hi = (pair.first()?.to_ascii_lowercase() as char).to_digit(16)?;
        let lo = (pair.get(1)?.to_ascii_lowercase() as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
