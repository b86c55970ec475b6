//! Metadata assembly and validation into [`TorrentInfo`].
//!
//! [`Assembler`] collects BEP 9 pieces (bounds and sizes checked, memory grown only
//! as data arrives), [`verify`] checks the raw bytes against the infohash (SHA-1, or
//! the truncated SHA-256 of v2/hybrid torrents), and [`parse_info`] validates the
//! info dict. Every rejection names its reason ([`InfoError`]).

use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::id::InfoHash;
use crate::wire::bencode::{self, Value};
use crate::wire::PIECE_SIZE;

/// A validated info dict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TorrentInfo {
    /// Display name: `name.utf-8` when valid, else `name` (lossily decoded).
    pub name: String,
    /// The name's raw bytes, only when they are not valid UTF-8.
    pub name_raw: Option<Vec<u8>>,
    /// Sum of all file lengths (padding files included).
    pub total_size: u64,
    /// `piece length`, bytes (positive).
    pub piece_length: u64,
    /// BEP 3 expects a power of two (v2 requires it); flagged, not rejected.
    pub piece_length_power_of_two: bool,
    /// Number of v1 piece hashes (for v2-only torrents: pieces implied by the files).
    pub piece_count: u64,
    /// The files. A single-file torrent has one entry whose path is `[name]`.
    pub files: Vec<FileEntry>,
    /// True for a v1 `files` list or a v2 file tree (rather than a single `length`).
    pub multi_file: bool,
    /// BEP 27 `private: 1`.
    pub private: bool,
    /// `source`, when present (lossily decoded).
    pub source: Option<String>,
    /// BEP 52 `meta version` when present (only 2 is accepted).
    pub meta_version: Option<i64>,
    /// A v1 layout (`pieces` present).
    pub has_v1: bool,
    /// A v2 `file tree` is present.
    pub has_v2: bool,
}

/// One file of a torrent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components, lossily decoded (`path.utf-8` preferred).
    pub path: Vec<String>,
    /// Raw components, only when some component is not valid UTF-8.
    pub path_raw: Option<Vec<Vec<u8>>>,
    /// Length in bytes.
    pub length: u64,
    /// BEP 47 padding file (`attr` contains `p`).
    pub padding: bool,
}

/// Why a path or name was rejected.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathError {
    /// `path` missing or not a list of strings.
    NotAList,
    /// An empty path list.
    Empty,
    /// An empty component.
    EmptyComponent,
    /// A `.` or `..` component.
    DotComponent,
    /// A component starting with `/` or `\`, or a drive letter like `C:`.
    Absolute,
    /// A component containing `/` or `\`.
    Separator,
    /// A component containing a NUL byte.
    NulByte,
}

/// Why an info dict was rejected.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum InfoError {
    /// Not valid bencode.
    Bencode,
    /// The info is not a dict.
    NotADict,
    /// `name` missing or not a string.
    MissingName,
    /// `name` is not a safe single path component.
    BadName(PathError),
    /// `piece length` missing.
    MissingPieceLength,
    /// `piece length` not a positive integer.
    BadPieceLength,
    /// v1 `pieces` missing or not a string.
    MissingPieces,
    /// `pieces` length not a multiple of 20.
    PiecesNotMultipleOf20,
    /// The number of piece hashes does not cover `total_size`.
    PieceCountMismatch,
    /// Both `length` and `files`.
    AmbiguousLayout,
    /// Neither `length`, `files` nor a v2 `file tree`.
    NoLayout,
    /// A length that is missing, negative or overflows the total.
    BadLength,
    /// An empty `files` list or file tree.
    NoFiles,
    /// A `files` entry (or file tree node) that is not a dict.
    BadFileEntry,
    /// A file path that is not safe to join under a directory.
    BadPath(PathError),
    /// `meta version` present but not 2.
    BadMetaVersion,
    /// `meta version` 2 without a valid `file tree`.
    BadFileTree,
}

impl std::fmt::Display for InfoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Which digest matched the infohash.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HashKind {
    /// SHA-1 (v1).
    Sha1,
    /// SHA-256 truncated to 20 bytes (v2 or hybrid).
    Sha256Truncated,
}

/// Checks raw metadata against the infohash: SHA-1 first, then truncated SHA-256.
pub fn verify(raw: &[u8], ih: &InfoHash) -> Option<HashKind> {
    let d1 = Sha1::digest(raw);
    if d1.as_slice() == ih.as_bytes() {
        return Some(HashKind::Sha1);
    }
    let d2 = Sha256::digest(raw);
    if d2.get(..20) == Some(&ih.as_bytes()[..]) {
        return Some(HashKind::Sha256Truncated);
    }
    None
}

/// The v1 infohash of raw info-dict bytes.
pub fn sha1_info_hash(raw: &[u8]) -> InfoHash {
    let d = Sha1::digest(raw);
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_slice());
    InfoHash(out)
}

/// The full v2 infohash (BEP 52): SHA-256 of the info dict.
pub fn sha256_info_hash(raw: &[u8]) -> [u8; 32] {
    let d = Sha256::digest(raw);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_slice());
    out
}

/// The infohashes of a verified info dict (BEP 52): the v1 one (SHA-1) when it
/// has a v1 layout (`pieces`) or the SHA-1 is what matched, and the full v2 one
/// (SHA-256) when it has a v2 `file tree` or the truncated SHA-256 is what
/// matched. A hybrid has both, whichever of its two hashes it was fetched by.
pub fn info_hashes(
    raw: &[u8],
    info: &TorrentInfo,
    matched: HashKind,
) -> (Option<InfoHash>, Option<[u8; 32]>) {
    let v1 = (info.has_v1 || matched == HashKind::Sha1).then(|| sha1_info_hash(raw));
    let v2 = (info.has_v2 || matched == HashKind::Sha256Truncated).then(|| sha256_info_hash(raw));
    (v1, v2)
}

/// What is wrong with a received piece.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PieceError {
    /// Index negative or past the last piece.
    OutOfRange,
    /// A piece we did not ask for (or not outstanding).
    Unrequested,
    /// Not 16 KiB (or, for the last piece, not exactly what remains).
    WrongSize,
}

/// Collects BEP 9 pieces of a metadata blob of known size.
#[derive(Debug)]
pub struct Assembler {
    size: usize,
    buf: Vec<u8>,
    have: Vec<bool>,
    remaining: u32,
}

impl Assembler {
    /// `size` must be at least 1 (the session validates `metadata_size` first).
    pub fn new(size: usize) -> Self {
        let n = size.div_ceil(PIECE_SIZE).max(1);
        Assembler {
            size,
            buf: Vec::new(),
            have: vec![false; n],
            remaining: n as u32,
        }
    }
    /// The metadata size, bytes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// Number of 16 KiB pieces (at least 1).
    pub fn piece_count(&self) -> u32 {
        self.have.len() as u32
    }
    /// Pieces still missing.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }
    /// Expected length of piece `i`, `None` when out of range.
    pub fn piece_len(&self, i: u32) -> Option<usize> {
        let start = (i as usize).checked_mul(PIECE_SIZE)?;
        if start >= self.size {
            return None;
        }
        Some((self.size - start).min(PIECE_SIZE))
    }
    /// Whether piece `i` is in.
    pub fn has(&self, i: u32) -> bool {
        self.have.get(i as usize).copied().unwrap_or(false)
    }
    /// Stores piece `piece`; returns true when every piece is in.
    pub fn insert(&mut self, piece: i64, data: &[u8]) -> Result<bool, PieceError> {
        let i = u32::try_from(piece).map_err(|_| PieceError::OutOfRange)?;
        let want = self.piece_len(i).ok_or(PieceError::OutOfRange)?;
        if data.len() != want {
            return Err(PieceError::WrongSize);
        }
        let slot = self
            .have
            .get_mut(i as usize)
            .ok_or(PieceError::OutOfRange)?;
        if *slot {
            return Err(PieceError::Unrequested);
        }
        *slot = true;
        let start = i as usize * PIECE_SIZE;
        let end = start + want;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        if let Some(dst) = self.buf.get_mut(start..end) {
            dst.copy_from_slice(data);
        }
        self.remaining -= 1;
        Ok(self.remaining == 0)
    }
    /// The assembled bytes (complete only when `remaining() == 0`).
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Parses and validates a raw info dict.
pub fn parse_info(raw: &[u8]) -> Result<TorrentInfo, InfoError> {
    let v = bencode::decode(raw).map_err(|_| InfoError::Bencode)?;
    if v.as_dict().is_none() {
        return Err(InfoError::NotADict);
    }
    let mut info = TorrentInfo::default();

    // Name: prefer name.utf-8 when it is valid UTF-8.
    let name_bytes = v.get(b"name").and_then(Value::as_bytes);
    let name_utf8 = v
        .get(b"name.utf-8")
        .and_then(Value::as_bytes)
        .filter(|b| std::str::from_utf8(b).is_ok());
    let chosen = name_utf8.or(name_bytes).ok_or(InfoError::MissingName)?;
    check_component(chosen).map_err(InfoError::BadName)?;
    if let Some(nb) = name_bytes {
        check_component(nb).map_err(InfoError::BadName)?;
    }
    let (disp, raw_name) = text(chosen);
    info.name = disp;
    info.name_raw = raw_name;

    let plen = v
        .get(b"piece length")
        .ok_or(InfoError::MissingPieceLength)?
        .as_int()
        .filter(|p| *p > 0)
        .ok_or(InfoError::BadPieceLength)? as u64;
    info.piece_length = plen;
    info.piece_length_power_of_two = plen.is_power_of_two();

    info.private = v.get(b"private").and_then(Value::as_int) == Some(1);
    info.source = v
        .get(b"source")
        .and_then(Value::as_bytes)
        .map(|b| String::from_utf8_lossy(b).into_owned());

    info.meta_version = match v.get(b"meta version") {
        None => None,
        Some(Value::Int(2)) => Some(2),
        Some(_) => return Err(InfoError::BadMetaVersion),
    };
    let file_tree = v.get(b"file tree");
    let pieces = v.get(b"pieces");
    let length = v.get(b"length");
    let files = v.get(b"files");
    info.has_v1 = pieces.is_some();
    info.has_v2 = file_tree.is_some() && info.meta_version == Some(2);

    if length.is_some() && files.is_some() {
        return Err(InfoError::AmbiguousLayout);
    }
    if let Some(l) = length {
        let l = l
            .as_int()
            .and_then(|l| u64::try_from(l).ok())
            .ok_or(InfoError::BadLength)?;
        info.files.push(FileEntry {
            path: vec![info.name.clone()],
            path_raw: info.name_raw.clone().map(|r| vec![r]),
            length: l,
            padding: false,
        });
    } else if let Some(fl) = files {
        info.multi_file = true;
        let list = fl.as_list().ok_or(InfoError::BadFileEntry)?;
        if list.is_empty() {
            return Err(InfoError::NoFiles);
        }
        info.files.reserve(list.len().min(1 << 16));
        for f in list {
            info.files.push(parse_v1_file(f)?);
        }
    } else if info.meta_version == Some(2) {
        let tree = file_tree.ok_or(InfoError::BadFileTree)?;
        info.multi_file = true;
        let mut path = Vec::new();
        walk_tree(tree, &mut path, &mut info.files)?;
        if info.files.is_empty() {
            return Err(InfoError::NoFiles);
        }
        // A v2 single file is a tree with one entry named like the torrent.
        if info.files.len() == 1
            && info.files[0].path.len() == 1
            && info.files[0].path[0] == info.name
        {
            info.multi_file = false;
        }
    } else {
        return Err(InfoError::NoLayout);
    }
    if info.meta_version == Some(2) && file_tree.and_then(Value::as_dict).is_none() {
        return Err(InfoError::BadFileTree);
    }

    let mut total: u64 = 0;
    for f in &info.files {
        total = total.checked_add(f.length).ok_or(InfoError::BadLength)?;
    }
    if total > i64::MAX as u64 {
        return Err(InfoError::BadLength);
    }
    info.total_size = total;

    match pieces {
        Some(p) => {
            let p = p.as_bytes().ok_or(InfoError::MissingPieces)?;
            if p.len() % 20 != 0 {
                return Err(InfoError::PiecesNotMultipleOf20);
            }
            let count = (p.len() / 20) as u64;
            if count != total.div_ceil(plen) {
                return Err(InfoError::PieceCountMismatch);
            }
            info.piece_count = count;
        }
        None if info.meta_version == Some(2) => {
            info.piece_count = info
                .files
                .iter()
                .map(|f| f.length.div_ceil(plen))
                .fold(0u64, u64::saturating_add);
        }
        None => return Err(InfoError::MissingPieces),
    }
    Ok(info)
}

fn parse_v1_file(f: &Value<'_>) -> Result<FileEntry, InfoError> {
    if f.as_dict().is_none() {
        return Err(InfoError::BadFileEntry);
    }
    let length = f
        .get(b"length")
        .and_then(Value::as_int)
        .and_then(|l| u64::try_from(l).ok())
        .ok_or(InfoError::BadLength)?;
    let padding = f
        .get(b"attr")
        .and_then(Value::as_bytes)
        .is_some_and(|a| a.contains(&b'p'));
    let raw = f
        .get(b"path")
        .and_then(Value::as_list)
        .ok_or(InfoError::BadPath(PathError::NotAList))?;
    let comps = path_components(raw)?;
    let utf8 = f
        .get(b"path.utf-8")
        .and_then(Value::as_list)
        .and_then(|l| path_components(l).ok())
        .filter(|c| c.iter().all(|p| std::str::from_utf8(p).is_ok()));
    let chosen = utf8.unwrap_or(comps);
    Ok(file_entry(&chosen, length, padding))
}

fn path_components<'a>(list: &[Value<'a>]) -> Result<Vec<&'a [u8]>, InfoError> {
    if list.is_empty() {
        return Err(InfoError::BadPath(PathError::Empty));
    }
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let c = c
            .as_bytes()
            .ok_or(InfoError::BadPath(PathError::NotAList))?;
        check_component(c).map_err(InfoError::BadPath)?;
        out.push(c);
    }
    Ok(out)
}

fn file_entry(comps: &[&[u8]], length: u64, padding: bool) -> FileEntry {
    let all_utf8 = comps.iter().all(|c| std::str::from_utf8(c).is_ok());
    FileEntry {
        path: comps
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect(),
        path_raw: (!all_utf8).then(|| comps.iter().map(|c| c.to_vec()).collect()),
        length,
        padding,
    }
}

fn walk_tree<'a>(
    node: &Value<'a>,
    path: &mut Vec<&'a [u8]>,
    out: &mut Vec<FileEntry>,
) -> Result<(), InfoError> {
    let d = node.as_dict().ok_or(InfoError::BadFileTree)?;
    for (k, child) in d {
        if k.is_empty() {
            // A file: {"": {length, pieces root}}.
            if path.is_empty() {
                return Err(InfoError::BadPath(PathError::Empty));
            }
            let length = child
                .get(b"length")
                .and_then(Value::as_int)
                .and_then(|l| u64::try_from(l).ok())
                .ok_or(InfoError::BadLength)?;
            out.push(file_entry(path, length, false));
        } else {
            check_component(k).map_err(InfoError::BadPath)?;
            path.push(k);
            walk_tree(child, path, out)?;
            path.pop();
        }
    }
    Ok(())
}

/// Checks one path component (or a torrent name).
pub fn check_component(c: &[u8]) -> Result<(), PathError> {
    if c.is_empty() {
        return Err(PathError::EmptyComponent);
    }
    if c == b"." || c == b".." {
        return Err(PathError::DotComponent);
    }
    if c.contains(&0) {
        return Err(PathError::NulByte);
    }
    let drive = c.len() >= 2 && c[0].is_ascii_alphabetic() && c[1] == b':';
    if c[0] == b'/' || c[0] == b'\\' || drive {
        return Err(PathError::Absolute);
    }
    if c.contains(&b'/') || c.contains(&b'\\') {
        return Err(PathError::Separator);
    }
    Ok(())
}

/// Lossy display text plus the raw bytes when they are not UTF-8.
fn text(b: &[u8]) -> (String, Option<Vec<u8>>) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (String::from_utf8_lossy(b).into_owned(), Some(b.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::bencode::Owned;

    fn base() -> Owned {
        Owned::dict()
            .with("name", Owned::str("a"))
            .with("piece length", Owned::Int(16384))
            .with("length", Owned::Int(20000))
            .with("pieces", Owned::Bytes(vec![0; 40]))
    }

    #[test]
    fn single_file_ok_and_rejections() {
        let i = parse_info(&base().to_bytes()).unwrap();
        assert_eq!(i.name, "a");
        assert_eq!(i.total_size, 20000);
        assert_eq!(i.piece_count, 2);
        assert!(i.piece_length_power_of_two && !i.multi_file && !i.private);
        let cases: Vec<(Owned, InfoError)> = vec![
            (
                base().with("pieces", Owned::Bytes(vec![0; 41])),
                InfoError::PiecesNotMultipleOf20,
            ),
            (
                base().with("pieces", Owned::Bytes(vec![0; 60])),
                InfoError::PieceCountMismatch,
            ),
            (
                base().with("piece length", Owned::Int(0)),
                InfoError::BadPieceLength,
            ),
            (
                base().with("name", Owned::str("..")),
                InfoError::BadName(PathError::DotComponent),
            ),
            (base().with("length", Owned::Int(-1)), InfoError::BadLength),
            (
                base().with("files", Owned::List(vec![])),
                InfoError::AmbiguousLayout,
            ),
            (
                base().with("meta version", Owned::Int(3)),
                InfoError::BadMetaVersion,
            ),
            (Owned::Int(1), InfoError::NotADict),
        ];
        for (d, e) in cases {
            assert_eq!(parse_info(&d.to_bytes()), Err(e));
        }
        assert_eq!(parse_info(b"d"), Err(InfoError::Bencode));
    }

    #[test]
    fn multi_file_paths() {
        let file = |p: Vec<&[u8]>| {
            Owned::dict().with("length", Owned::Int(5)).with(
                "path",
                Owned::List(p.into_iter().map(|c| Owned::Bytes(c.to_vec())).collect()),
            )
        };
        let mk = |files: Vec<Owned>| {
            Owned::dict()
                .with("name", Owned::Bytes(b"n\xff".to_vec()))
                .with("piece length", Owned::Int(10))
                .with("pieces", Owned::Bytes(vec![0; 20]))
                .with("files", Owned::List(files))
        };
        let ok =
            parse_info(&mk(vec![file(vec![b"d", b"x"]), file(vec![b"y\xfe"])]).to_bytes()).unwrap();
        assert_eq!(ok.name_raw.as_deref(), Some(&b"n\xff"[..]));
        assert_eq!(ok.files.len(), 2);
        assert_eq!(ok.files[0].path, vec!["d", "x"]);
        assert!(ok.files[1].path_raw.is_some());
        assert!(!ok.piece_length_power_of_two);
        for (p, e) in [
            (vec![&b""[..]], PathError::EmptyComponent),
            (vec![b"."], PathError::DotComponent),
            (vec![b"a", b".."], PathError::DotComponent),
            (vec![b"/etc"], PathError::Absolute),
            (vec![b"C:x"], PathError::Absolute),
            (vec![b"a/b"], PathError::Separator),
            (vec![b"a\0"], PathError::NulByte),
            (vec![], PathError::Empty),
        ] {
            assert_eq!(
                parse_info(&mk(vec![file(p)]).to_bytes()),
                Err(InfoError::BadPath(e))
            );
        }
        assert_eq!(parse_info(&mk(vec![]).to_bytes()), Err(InfoError::NoFiles));
    }

    #[test]
    fn v2_file_tree() {
        let leaf = |n: i64| {
            Owned::dict().with(
                "",
                Owned::dict()
                    .with("length", Owned::Int(n))
                    .with("pieces root", Owned::Bytes(vec![1; 32])),
            )
        };
        let d = Owned::dict()
            .with("name", Owned::str("t"))
            .with("piece length", Owned::Int(16384))
            .with("meta version", Owned::Int(2))
            .with(
                "file tree",
                Owned::dict()
                    .with("dir", Owned::dict().with("f", leaf(100)))
                    .with("g", leaf(40000)),
            );
        let raw = d.to_bytes();
        let i = parse_info(&raw).unwrap();
        assert!(i.has_v2 && !i.has_v1);
        assert_eq!(i.total_size, 40100);
        assert_eq!(i.files[0].path, vec!["dir", "f"]);
        assert_eq!(i.piece_count, 1 + 3);
        // v2-only: the full SHA-256 and no v1 hash; its truncation is what matched.
        let full = sha256_info_hash(&raw);
        let mut trunc = [0u8; 20];
        trunc.copy_from_slice(&full[..20]);
        assert_eq!(
            verify(&raw, &InfoHash(trunc)),
            Some(HashKind::Sha256Truncated)
        );
        assert_eq!(
            info_hashes(&raw, &i, HashKind::Sha256Truncated),
            (None, Some(full))
        );
        // A hybrid (v1 pieces beside the tree): both, whichever was fetched.
        let h = d
            .with("pieces", Owned::Bytes(vec![0; 20 * 3]))
            .with("length", Owned::Int(40100));
        let raw = h.to_bytes();
        let i = parse_info(&raw).unwrap();
        assert!(i.has_v1 && i.has_v2);
        let both = (Some(sha1_info_hash(&raw)), Some(sha256_info_hash(&raw)));
        assert_eq!(info_hashes(&raw, &i, HashKind::Sha1), both);
        assert_eq!(info_hashes(&raw, &i, HashKind::Sha256Truncated), both);
        // v1: no v2 hash.
        let raw = b"d6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let i = parse_info(raw).unwrap();
        assert_eq!(
            info_hashes(raw, &i, HashKind::Sha1),
            (Some(sha1_info_hash(raw)), None)
        );
    }

    #[test]
    fn assembler_bounds() {
        let mut a = Assembler::new(PIECE_SIZE + 10);
        assert_eq!(a.piece_count(), 2);
        assert_eq!(a.insert(2, &[0; 10]), Err(PieceError::OutOfRange));
        assert_eq!(a.insert(-1, &[0; 10]), Err(PieceError::OutOfRange));
        assert_eq!(a.insert(1, &[0; 11]), Err(PieceError::WrongSize));
        assert_eq!(a.insert(1, &[1; 10]), Ok(false));
        assert_eq!(a.insert(0, &[0; 100]), Err(PieceError::WrongSize));
        assert_eq!(a.insert(0, &[2; PIECE_SIZE]), Ok(true));
        let b = a.into_bytes();
        assert_eq!(b.len(), PIECE_SIZE + 10);
        assert_eq!(b[PIECE_SIZE], 1);
        let raw = b"d4:name1:ae";
        assert_eq!(verify(raw, &sha1_info_hash(raw)), Some(HashKind::Sha1));
    }
}
