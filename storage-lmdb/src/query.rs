//! The query language of [`Store::query`](crate::Store::query).
//!
//! A query is clauses separated by spaces:
//!
//! - `word`: every term of the word must occur (in the name or a file path); words
//!   are tokenized as documents are ([`tokenize`](crate::tokenize)), so `Épopée`
//!   asks for `epopee` and `日本語` for the bigrams `日本`, `本語`. The last word of
//!   the query is matched as a prefix; a single character of a space-less script is
//!   always matched as a prefix (it finds the character anywhere in a run).
//! - `"several words"`: a phrase: its words must occur one after the other, in the
//!   name or in one file path.
//! - `-word`, `-"a phrase"`: no result holds it.
//! - `name:word`, `path:word`, `name:"a phrase"`, `-path:word`: the clause looks only
//!   at the name, or only at the file paths.
//!
//! Bounds: a query is at most [`MAX_QUERY_BYTES`] bytes and looks up at most
//! [`MAX_QUERY_TERMS`] index terms; more is refused with
//! [`StoreError::InvalidQuery`].

use crate::error::StoreError;
use crate::tokenize::{toks_terms, word_toks, words, Tok, IN_NAME, IN_PATH};

/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 512;
/// Most index terms one query may look up (its words, phrases and exclusions).
pub const MAX_QUERY_TERMS: usize = 32;

/// Where a clause looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Any,
    Name,
    Path,
}

impl Scope {
    /// The posting flags that satisfy the scope.
    pub fn mask(self) -> u8 {
        match self {
            Scope::Any => IN_NAME | IN_PATH,
            Scope::Name => IN_NAME,
            Scope::Path => IN_PATH,
        }
    }
}

/// An index term to look up.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Term {
    pub text: String,
    /// Every term starting with `text` matches.
    pub prefix: bool,
    pub scope: Scope,
}

/// A token of a phrase, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PTok {
    Word(String),
    Unit(String),
}

impl PTok {
    pub(crate) fn matches(&self, t: &Tok<'_>) -> bool {
        match (self, t) {
            (PTok::Word(a), Tok::Word(b)) => a == b,
            (PTok::Unit(a), Tok::Unit(b)) => a == b,
            _ => false,
        }
    }
}

/// A phrase to verify on a candidate's name or paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phrase {
    pub toks: Vec<PTok>,
    pub scope: Scope,
}

/// A clause: all its terms (and its phrase, if any) hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    pub terms: Vec<Term>,
    pub phrase: Option<Phrase>,
}

/// A parsed query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Clauses every result satisfies.
    pub must: Vec<Clause>,
    /// Clauses no result satisfies.
    pub must_not: Vec<Clause>,
}

/// The terms of a sequence of tokens: words exact, runs of units as their bigrams
/// (a lone unit as a prefix).
fn toks_to_terms(toks: &[Tok<'_>], scope: Scope, out: &mut Vec<Term>) {
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Word(w) => out.push(Term {
                text: w.clone(),
                prefix: false,
                scope,
            }),
            Tok::Unit(u) => {
                let mut j = i;
                while matches!(toks.get(j + 1), Some(Tok::Unit(_))) {
                    j += 1;
                }
                if j == i {
                    out.push(Term {
                        text: (*u).to_owned(),
                        prefix: true,
                        scope,
                    });
                } else {
                    toks_terms(&toks[i..=j], |t| {
                        // Bigrams only: the last unit alone is covered by the last bigram.
                        if !is_single_unit(&t) {
                            out.push(Term {
                                text: t,
                                prefix: false,
                                scope,
                            })
                        }
                    });
                    i = j;
                }
            }
        }
        i += 1;
    }
}

/// Whether `t` is one unit (a character and its marks).
fn is_single_unit(t: &str) -> bool {
    let mut it = t.chars();
    it.next();
    it.all(unicode_normalization::char::is_combining_mark)
}

/// The tokens of a piece of text, in order.
fn text_toks(s: &str) -> Vec<Tok<'_>> {
    let mut toks = Vec::new();
    for w in words(s) {
        word_toks(w, &mut toks);
    }
    toks
}

/// Parses a query (see the module doc).
pub fn parse(q: &str) -> Result<Parsed, StoreError> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(StoreError::InvalidQuery(format!(
            "the query is {} bytes long; the limit is {MAX_QUERY_BYTES}",
            q.len()
        )));
    }
    let mut p = Parsed::default();
    let mut rest = q.trim_start();
    // The positive bare clause that ends the query, if any: its last word is a prefix.
    let mut last_bare: Option<usize> = None;
    while !rest.is_empty() {
        let mut negate = false;
        if let Some(r) = rest.strip_prefix('-') {
            negate = true;
            rest = r;
        }
        let mut scope = Scope::Any;
        for (kw, s) in [("name:", Scope::Name), ("path:", Scope::Path)] {
            if rest.len() >= kw.len()
                && rest.is_char_boundary(kw.len())
                && rest[..kw.len()].eq_ignore_ascii_case(kw)
            {
                scope = s;
                rest = &rest[kw.len()..];
                break;
            }
        }
        let clause;
        let mut bare = false;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            let body = &r[..end];
            rest = r.get(end + 1..).unwrap_or("");
            let toks = text_toks(body);
            let mut terms = Vec::new();
            toks_to_terms(&toks, scope, &mut terms);
            let ptoks: Vec<PTok> = toks
                .iter()
                .map(|t| match t {
                    Tok::Word(w) => PTok::Word(w.clone()),
                    Tok::Unit(u) => PTok::Unit((*u).to_owned()),
                })
                .collect();
            clause = Clause {
                terms,
                phrase: (ptoks.len() >= 2).then_some(Phrase { toks: ptoks, scope }),
            };
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let body = &rest[..end];
            rest = &rest[end..];
            let toks = text_toks(body);
            let mut terms = Vec::new();
            toks_to_terms(&toks, scope, &mut terms);
            clause = Clause {
                terms,
                phrase: None,
            };
            bare = true;
        }
        rest = rest.trim_start();
        if clause.terms.is_empty() {
            continue;
        }
        if negate {
            p.must_not.push(clause);
            last_bare = None;
        } else {
            p.must.push(clause);
            last_bare = bare.then(|| p.must.len() - 1);
        }
    }
    if let Some(i) = last_bare {
        if let Some(t) = p.must.get_mut(i).and_then(|c| c.terms.last_mut()) {
            // A word (not a bigram) that ends the query is matched as a prefix.
            if !t.text.chars().any(crate::tokenize::is_bigram_char) {
                t.prefix = true;
            }
        }
    }
    let n: usize = p
        .must
        .iter()
        .chain(&p.must_not)
        .map(|c| c.terms.len())
        .sum();
    if n > MAX_QUERY_TERMS {
        return Err(StoreError::InvalidQuery(format!(
            "the query has {n} search terms; the limit is {MAX_QUERY_TERMS}"
        )));
    }
    Ok(p)
}

/// Whether `phrase` occurs in `text` (as consecutive tokens).
pub(crate) fn phrase_in(phrase: &Phrase, text: &str) -> bool {
    // ASCII text folds to its ASCII lowercase: a text lacking a word of the phrase
    // (as bytes, any case) cannot hold it, and needs no tokenizing.
    if text.is_ascii() {
        for t in &phrase.toks {
            if let PTok::Word(w) = t {
                let w = w.as_bytes();
                if !text
                    .as_bytes()
                    .windows(w.len())
                    .any(|x| x.eq_ignore_ascii_case(w))
                {
                    return false;
                }
            }
        }
    }
    let toks = text_toks(text);
    let n = phrase.toks.len();
    if n == 0 {
        return true;
    }
    toks.windows(n)
        .any(|w| w.iter().zip(&phrase.toks).all(|(t, p)| p.matches(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(t: &str, prefix: bool, scope: Scope) -> Term {
        Term {
            text: t.into(),
            prefix,
            scope,
        }
    }

    #[test]
    fn words_phrases_exclusions_and_scopes() {
        let p = parse(r#"Épopée name:"big buck" -cam path:mkv -"bad rip" ubu"#).unwrap();
        assert_eq!(p.must.len(), 4);
        assert_eq!(p.must[0].terms, vec![term("epopee", false, Scope::Any)]);
        assert_eq!(
            p.must[1].terms,
            vec![
                term("big", false, Scope::Name),
                term("buck", false, Scope::Name)
            ]
        );
        assert_eq!(p.must[1].phrase.as_ref().map(|ph| ph.toks.len()), Some(2));
        assert_eq!(p.must[2].terms, vec![term("mkv", false, Scope::Path)]);
        assert_eq!(p.must[3].terms, vec![term("ubu", true, Scope::Any)]);
        assert_eq!(p.must_not.len(), 2);
        assert_eq!(p.must_not[0].terms, vec![term("cam", false, Scope::Any)]);
        assert!(p.must_not[1].phrase.is_some());
    }

    #[test]
    fn cjk_queries() {
        let p = parse("語").unwrap();
        assert_eq!(p.must[0].terms, vec![term("語", true, Scope::Any)]);
        let p = parse("日本語").unwrap();
        assert_eq!(
            p.must[0].terms,
            vec![
                term("日本", false, Scope::Any),
                term("本語", false, Scope::Any)
            ]
        );
        let p = parse("東京2020").unwrap();
        assert_eq!(
            p.must[0].terms,
            vec![
                term("東京", false, Scope::Any),
                term("2020", true, Scope::Any)
            ]
        );
    }

    #[test]
    fn the_last_word_is_a_prefix_only_when_it_ends_the_query() {
        let p = parse("foo bar -baz").unwrap();
        assert!(p.must.iter().all(|c| c.terms.iter().all(|t| !t.prefix)));
        let p = parse(r#"foo "bar qux""#).unwrap();
        assert!(p.must.iter().all(|c| c.terms.iter().all(|t| !t.prefix)));
        // Unterminated quote: a phrase to the end.
        let p = parse(r#"foo "bar qux"#).unwrap();
        assert!(p.must[1].phrase.is_some());
    }

    #[test]
    fn bounds_are_clear_errors() {
        let long = "a".repeat(MAX_QUERY_BYTES + 1);
        let e = parse(&long).unwrap_err().to_string();
        assert!(e.contains("513 bytes") && e.contains("512"), "{e}");
        let many: String = (0..MAX_QUERY_TERMS + 1).map(|i| format!("w{i} ")).collect();
        let e = parse(&many).unwrap_err().to_string();
        assert!(e.contains("33 search terms"), "{e}");
        assert!(parse(&"w ".repeat(MAX_QUERY_TERMS)).is_ok());
        // Only punctuation: no clause at all.
        assert_eq!(parse(r#" - "" name: -- "#).unwrap(), Parsed::default());
    }

    #[test]
    fn phrases_match_consecutive_tokens() {
        let ph = parse(r#""buck bunny""#).unwrap().must[0]
            .phrase
            .clone()
            .unwrap();
        assert!(phrase_in(&ph, "Big.Buck.Bunny.1080p"));
        assert!(phrase_in(&ph, "BUCK_bunny"));
        assert!(!phrase_in(&ph, "Buck"));
        assert!(phrase_in(&ph, "Bück Bunny"), "not ASCII: folded");
        assert!(!phrase_in(&ph, "Bunny Buck"));
        assert!(!phrase_in(&ph, "Buck big Bunny"));
        let ph = parse(r#""日本語 字幕""#).unwrap().must[0]
            .phrase
            .clone()
            .unwrap();
        assert!(phrase_in(&ph, "[日本語字幕] x"));
        assert!(!phrase_in(&ph, "日本語 の 字幕"));
    }
}
