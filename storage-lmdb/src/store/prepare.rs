//! A batch's CPU work, done before (and outside) its write transaction: the order in
//! which its torrents are written, and its [`Tokens`] (the batch dictionary of terms
//! in byte order, each new torrent's (term, flags) pairs and encoded file lists, and
//! its classification facets).
//! [`PreparedBatch`] carries both, so that a writer can prepare batch N + 1 while
//! batch N commits.

use super::facets::{self, Facets};
use super::Result;
use crate::codec;
use crate::error::StoreError;
use crate::tokenize::TermIndex;
use crate::types::{InfoHash, Op, TorrentInput};

/// Indices of the torrent ops of a batch in write order: by infohash, and for one
/// infohash by discovery time (then input order).
pub(super) fn torrent_order(ops: &[Op]) -> Vec<u32> {
    let mut v: Vec<(InfoHash, u64, u32)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Op::Torrent(t) => Some((t.infohash, t.discovered_at, i as u32)),
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v.into_iter().map(|x| x.2).collect()
}

/// The torrents of `order` (indices that are not torrent ops are skipped).
pub(super) fn sorted_torrents<'o>(ops: &'o [Op], order: &[u32]) -> Vec<&'o TorrentInput> {
    order
        .iter()
        .filter_map(|&i| match ops.get(i as usize) {
            Some(Op::Torrent(t)) => Some(&**t),
            _ => None,
        })
        .collect()
}

/// Distinct infohashes among the torrents of `order`.
pub(super) fn group_count(ops: &[Op], order: &[u32]) -> usize {
    let ts = sorted_torrents(ops, order);
    ts.iter()
        .enumerate()
        .filter(|(i, t)| *i == 0 || ts[i - 1].infohash != t.infohash)
        .count()
}

/// The terms of the first torrent of each infohash group of a batch: a batch
/// dictionary in byte order, and per group its (term, flags) pairs.
pub(crate) struct Tokens {
    /// The batch dictionary, in byte order; pairs refer to terms by index.
    pub(super) terms: Vec<String>,
    /// Group `g`'s encoded file list (empty unless made `with_files`).
    pub(super) files: Vec<Vec<u8>>,
    /// Group `g`'s classification (empty when classification is off).
    pub(super) facets: Vec<Facets>,
    /// Group `g`'s pairs are `pairs[off[g]..off[g + 1]]`.
    off: Vec<usize>,
    pairs: Vec<(u32, u8)>,
}

impl Tokens {
    /// `with_files`: also encode each group's file list; `classify`: also classify
    /// each group's torrent.
    pub(super) fn of_classified(
        ops: &[Op],
        order: &[u32],
        with_files: bool,
        classify: bool,
    ) -> Tokens {
        let ts = sorted_torrents(ops, order);
        let mut facets = Vec::with_capacity(if classify { ts.len() } else { 0 });
        let mut dict = TermIndex::new();
        let mut off = vec![0];
        let mut pairs = Vec::new();
        let mut tterms = Vec::new();
        let mut files = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            if i > 0 && ts[i - 1].infohash == t.infohash {
                continue;
            }
            if with_files {
                files.push(codec::encode_files(&t.files));
            }
            if classify {
                facets.push(facets::of_torrent(&t.name, &t.files));
            }
            dict.torrent(&t.name, &t.files, &mut tterms);
            pairs.extend_from_slice(&tterms);
            off.push(pairs.len());
        }
        // Renumber the terms in byte order.
        let mut by_text: Vec<u32> = (0..dict.terms.len() as u32).collect();
        by_text.sort_unstable_by(|&a, &b| dict.terms[a as usize].cmp(&dict.terms[b as usize]));
        let mut new_id = vec![0u32; by_text.len()];
        for (n, &old) in by_text.iter().enumerate() {
            new_id[old as usize] = n as u32;
        }
        for p in &mut pairs {
            p.0 = new_id[p.0 as usize];
        }
        let mut old_terms: Vec<Option<String>> = dict.terms.into_iter().map(Some).collect();
        let terms = by_text
            .iter()
            .map(|&old| old_terms[old as usize].take().unwrap_or_default())
            .collect();
        Tokens {
            terms,
            files,
            facets,
            off,
            pairs,
        }
    }

    /// The error of a batch whose tokens should have been made already.
    pub(super) fn of_nothing() -> Result<Tokens> {
        Err(StoreError::InvalidInput(
            "internal: a batch's tokens are missing".into(),
        ))
    }

    /// Group `g`'s (term, flags) pairs.
    pub(super) fn of_group(&self, g: usize) -> &[(u32, u8)] {
        match (self.off.get(g), self.off.get(g + 1)) {
            (Some(&a), Some(&b)) => self.pairs.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// A batch of writes with its CPU work done (sorted, tokenized), ready for
/// [`Store::apply_prepared`](super::Store::apply_prepared). Preparing needs no store or transaction, so a writer
/// can prepare the next batch while the current one commits.
pub struct PreparedBatch {
    pub(super) ops: Vec<Op>,
    pub(super) order: Vec<u32>,
    pub(super) tokens: Tokens,
}

impl PreparedBatch {
    /// Prepares `ops`: orders its torrents for writing, tokenizes the new ones and
    /// encodes their file lists. Needs no store.
    pub fn new(ops: Vec<Op>) -> PreparedBatch {
        PreparedBatch::new_classified(ops, true)
    }

    /// Like [`PreparedBatch::new`]; `classify` false leaves the new torrents
    /// unclassified ([`StoreOptions::classify`](super::StoreOptions::classify)).
    #[doc(hidden)]
    pub fn new_classified(ops: Vec<Op>, classify: bool) -> PreparedBatch {
        let order = torrent_order(&ops);
        let tokens = Tokens::of_classified(&ops, &order, true, classify);
        PreparedBatch { ops, order, tokens }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
