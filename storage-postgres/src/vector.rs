//! The full-text document of a torrent (`torrents.search`) and the tsquery of a
//! parsed query, both from the LMDB store's tokenizer and parser, so that the two
//! stores find the same torrents.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use magnetar_storage::query::{Clause, PTok, Parsed, Phrase, Scope, Term};
use magnetar_storage::{tokenize, torrent_terms, FileEntry};

/// PostgreSQL keeps at most this many positions per lexeme (MAXNUMPOS).
const MAX_POSITIONS: usize = 256;
/// Of which at most this many for the name, so path hits always keep some.
const MAX_NAME_POSITIONS: usize = 128;
/// The largest position PostgreSQL stores (MAXENTRYPOS − 1); later ones are clamped.
const MAX_POSITION: usize = (1 << 14) - 1;

const IN_NAME: u8 = 1;
const IN_PATH: u8 = 2;

fn quote(out: &mut String, lexeme: &str) {
    out.push('\'');
    for c in lexeme.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// The tsvector (in PostgreSQL's text form) of a torrent: the same terms, with the
/// same name/path flags, as the LMDB index holds ([`torrent_terms`]); name
/// positions carry weight A, path positions weight B. Positions count tokens: the
/// name from 1, then each file path after a gap of one, so a phrase (`<->`) never
/// spans two texts.
pub fn search_vector(name: &str, files: &[FileEntry]) -> String {
    let flags: BTreeMap<String, u8> = torrent_terms(name, files).into_iter().collect();
    // term -> (name positions, path positions)
    let mut pos: BTreeMap<&str, (Vec<u16>, Vec<u16>)> = BTreeMap::new();
    let mut p = 1usize;
    let mut add = |t: String, p: usize, in_name: bool| {
        let Some((k, &f)) = flags.get_key_value(&t) else {
            return;
        };
        let e = pos.entry(k.as_str()).or_default();
        let at = p.min(MAX_POSITION) as u16;
        if in_name && f & IN_NAME != 0 {
            if e.0.len() < MAX_NAME_POSITIONS && e.0.last() != Some(&at) {
                e.0.push(at);
            }
        } else if !in_name
            && f & IN_PATH != 0
            && e.0.len() + e.1.len() < MAX_POSITIONS
            && e.1.last() != Some(&at)
        {
            e.1.push(at);
        }
    };
    for t in tokenize(name) {
        add(t, p, true);
        p += 1;
    }
    for f in files {
        p += 1;
        for t in tokenize(&f.path) {
            add(t, p, false);
            p += 1;
        }
    }
    let mut out = String::new();
    for (t, (n, ps)) in &pos {
        if n.is_empty() && ps.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        quote(&mut out, t);
        out.push(':');
        let mut first = true;
        // Positions ascending across both kinds (a clamped name position may
        // equal a path position: PostgreSQL keeps one; both weights are kept
        // elsewhere for such huge torrents only).
        let mut all: Vec<(u16, char)> = n
            .iter()
            .map(|&x| (x, 'A'))
            .chain(ps.iter().map(|&x| (x, 'B')))
            .collect();
        all.sort_unstable();
        all.dedup_by_key(|x| x.0);
        for (x, w) in all {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{x}{w}");
        }
    }
    out
}

fn weight(scope: Scope) -> &'static str {
    match scope {
        Scope::Any => "",
        Scope::Name => "A",
        Scope::Path => "B",
    }
}

/// One term as a tsquery operand: `'x'`, `'x':*` (prefix), with the scope's weight.
fn term_operand(out: &mut String, t: &Term) {
    quote(out, &t.text);
    let w = weight(t.scope);
    if t.prefix || !w.is_empty() {
        out.push(':');
        if t.prefix {
            out.push('*');
        }
        out.push_str(w);
    }
}

/// A phrase as `a <-> b <-> …`: a word is its folded form; a unit of a space-less
/// script followed by another is their bigram (as the document indexes it there);
/// the last unit of a run is a prefix (the document holds it alone, or as a bigram
/// with the next character of its word).
fn phrase_operand(out: &mut String, ph: &Phrase) {
    let w = weight(ph.scope);
    for (i, t) in ph.toks.iter().enumerate() {
        if i > 0 {
            out.push_str(" <-> ");
        }
        match t {
            PTok::Word(x) => {
                quote(out, x);
                if !w.is_empty() {
                    out.push(':');
                    out.push_str(w);
                }
            }
            PTok::Unit(u) => match ph.toks.get(i + 1) {
                Some(PTok::Unit(v)) => {
                    quote(out, &format!("{u}{v}"));
                    if !w.is_empty() {
                        out.push(':');
                        out.push_str(w);
                    }
                }
                _ => {
                    quote(out, u);
                    out.push_str(":*");
                    out.push_str(w);
                }
            },
        }
    }
}

fn clause_operand(out: &mut String, c: &Clause) {
    out.push('(');
    for (i, t) in c.terms.iter().enumerate() {
        if i > 0 {
            out.push_str(" & ");
        }
        term_operand(out, t);
    }
    if let Some(ph) = &c.phrase {
        out.push_str(" & (");
        phrase_operand(out, ph);
        out.push(')');
    }
    out.push(')');
}

/// The tsquery (text form) of a parsed query: every must clause, no must-not clause.
pub fn query_tsquery(p: &Parsed) -> String {
    let mut out = String::new();
    for c in &p.must {
        if !out.is_empty() {
            out.push_str(" & ");
        }
        clause_operand(&mut out, c);
    }
    for c in &p.must_not {
        if !out.is_empty() {
            out.push_str(" & ");
        }
        out.push('!');
        clause_operand(&mut out, c);
    }
    out
}

/// The relevance terms: one tsquery per distinct must term, matching when the term
/// (as its clause scoped it) occurs in the name. Relevance = how many match, as the
/// LMDB store's score (the name flag of each term's posting).
pub fn score_tsqueries(p: &Parsed) -> Vec<String> {
    let mut terms: Vec<&Term> = p.must.iter().flat_map(|c| &c.terms).collect();
    terms.sort();
    terms.dedup();
    terms
        .into_iter()
        .map(|t| {
            let mut s = String::new();
            quote(&mut s, &t.text);
            s.push(':');
            if t.prefix {
                s.push('*');
            }
            s.push('A');
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use magnetar_storage::query::parse;

    fn f(p: &str) -> FileEntry {
        FileEntry {
            path: p.into(),
            size: 1,
        }
    }

    #[test]
    fn vectors_weigh_name_and_path_positions_with_gaps() {
        let v = search_vector("Big Buck", &[f("Buck/big.mkv")]);
        assert_eq!(v, "'big':1A,5B 'buck':2A,4B 'mkv':6B");
        // Space-less scripts: bigrams and the last unit, one position per unit.
        let v = search_vector("日本語", &[]);
        assert_eq!(v, "'日本':1A '本語':2A '語':3A");
        assert_eq!(search_vector("", &[]), "");
    }

    #[test]
    fn queries_become_tsqueries() {
        let p = parse(r#"Épopée name:"big buck" -cam path:mkv ubu"#).unwrap();
        assert_eq!(
            query_tsquery(&p),
            "('epopee') & ('big':A & 'buck':A & ('big':A <-> 'buck':A)) & ('mkv':B) \
             & ('ubu':*) & !('cam')"
        );
        assert_eq!(
            score_tsqueries(&p),
            vec!["'big':A", "'buck':A", "'epopee':A", "'mkv':A", "'ubu':*A"]
        );
        let p = parse(r#""日本語 字幕""#).unwrap();
        assert_eq!(
            query_tsquery(&p),
            "('日本' & '本語' & '語字' & '字幕' & ('日本' <-> '本語' <-> '語字' <-> '字幕' <-> '幕':*))"
        );
    }
}
