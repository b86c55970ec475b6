//! Seeded synthetic torrents for tests, the crash child and the bench. Not part of
//! the stable API.
//!
//! Names have several words drawn from a 30,000-word vocabulary with a Zipf-like
//! (log-uniform rank) distribution, plus the usual release tags (years, resolutions,
//! codecs); torrents have 1–50 files (most have few) under directories, with
//! extensions; sizes are log-uniform from 1 MB to 50 GB; the raw info dict is a real
//! bencoding with 20 bytes of `pieces` per piece.

use crate::types::*;

/// SplitMix64: small, seeded, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "ten", "shi", "ver", "dan", "mor", "el", "an", "tor", "zu", "vi", "na",
    "bel", "cro", "fa", "gil", "ho", "ix", "jo", "kre", "lu", "mar", "nor", "os", "pri", "qua",
    "ris", "sol", "tri", "ul", "vex", "wen", "yor", "zel", "ae", "ba", "ce",
];
const TAGS: &[&str] = &[
    "1080p", "720p", "2160p", "x264", "x265", "HEVC", "WEB-DL", "BluRay", "AAC", "FLAC", "MP3",
    "320kbps", "REPACK", "PROPER", "Complete", "Season", "Vol", "Deluxe", "Edition",
];
const EXTS: &[&str] = &[
    "mkv", "mp4", "avi", "mp3", "flac", "jpg", "png", "txt", "nfo", "srt", "pdf", "epub", "iso",
    "zip",
];

/// A generator of synthetic torrents.
#[derive(Clone, Debug)]
pub struct Synth {
    rng: Rng,
    vocab: &'static [String],
}

fn vocab() -> &'static [String] {
    static VOCAB: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    VOCAB.get_or_init(|| {
        let mut vr = Rng::new(0x5eed_0f70_0c4b);
        let mut vocab = Vec::with_capacity(Synth::VOCAB);
        let mut seen = std::collections::HashSet::new();
        while vocab.len() < Synth::VOCAB {
            let n = 2 + vr.below(3);
            let mut w = String::new();
            for _ in 0..n {
                w.push_str(SYLLABLES[vr.below(SYLLABLES.len() as u64) as usize]);
            }
            if seen.insert(w.clone()) {
                vocab.push(w);
            }
        }
        vocab
    })
}

impl Synth {
    pub const VOCAB: usize = 30_000;

    pub fn new(seed: u64) -> Synth {
        Synth {
            rng: Rng::new(seed),
            vocab: vocab(),
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A word with Zipf-like popularity (rank r has probability ~ 1/r).
    pub fn word(&mut self) -> &str {
        let r = (Self::VOCAB as f64).powf(self.rng.f64()) as usize;
        &self.vocab[r.clamp(1, Self::VOCAB) - 1]
    }

    fn capitalized(&mut self) -> String {
        let w = self.word();
        let mut c = w.chars();
        match c.next() {
            Some(f) => f.to_uppercase().chain(c).collect(),
            None => String::new(),
        }
    }

    pub fn name(&mut self) -> String {
        let n = 2 + self.rng.below(5);
        let mut parts: Vec<String> = (0..n).map(|_| self.capitalized()).collect();
        if self.rng.below(2) == 0 {
            parts.push(format!("({})", 1950 + self.rng.below(76)));
        }
        for _ in 0..self.rng.below(3) {
            parts.push(TAGS[self.rng.below(TAGS.len() as u64) as usize].to_string());
        }
        parts.join(" ")
    }

    /// A whole torrent, discovered at `discovered_at`.
    pub fn torrent(&mut self, discovered_at: u64, with_info: bool) -> TorrentInput {
        let mut infohash = [0u8; 20];
        for c in infohash.chunks_mut(8) {
            let r = self.rng.next_u64().to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
        let name = self.name();
        let total: u64 = (1e6 * 5e4f64.powf(self.rng.f64())) as u64;
        let nfiles = 1 + (49.0 * self.rng.f64().powi(3)) as u64;
        let ext = EXTS[self.rng.below(EXTS.len() as u64) as usize];
        let mut files = Vec::with_capacity(nfiles as usize);
        if nfiles == 1 {
            files.push(FileEntry {
                path: format!("{name}.{ext}"),
                size: total,
            });
        } else {
            let subdir = if self.rng.below(3) == 0 {
                Some(self.capitalized())
            } else {
                None
            };
            let stem = self.capitalized();
            for i in 0..nfiles {
                let size = total / nfiles;
                let path = match (&subdir, self.rng.below(6)) {
                    (_, 0) => format!("Extras/{} {}.{}", self.capitalized(), i + 1, ext),
                    (Some(d), _) => format!("{d}/{stem} {:02}.{ext}", i + 1),
                    (None, _) => format!("{stem} {:02}.{ext}", i + 1),
                };
                files.push(FileEntry { path, size });
            }
        }
        // As clients choose it: about 1000-2000 pieces, 16 KiB .. 16 MiB.
        let piece_length = (total / 1500).next_power_of_two().clamp(1 << 14, 1 << 24) as u32;
        let piece_count = total.div_ceil(u64::from(piece_length)).max(1) as u32;
        let info = with_info
            .then(|| bencode_info(&name, piece_length, piece_count, &files, &mut self.rng));
        TorrentInput {
            infohash,
            kind: HashKind::V1,
            v2: None,
            name,
            total_size: files.iter().map(|f| f.size).sum(),
            piece_length,
            piece_count,
            private: false,
            source: None,
            files,
            discovered_at,
            sources: Sources::SAMPLE,
            seeders: None,
            leechers: None,
            scraped_at: None,
            info,
        }
    }
}

fn bstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{}:", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// A real bencoded info dict (with random piece hashes).
pub fn bencode_info(
    name: &str,
    piece_length: u32,
    piece_count: u32,
    files: &[FileEntry],
    rng: &mut Rng,
) -> Vec<u8> {
    let mut o = Vec::with_capacity(64 + files.len() * 48 + piece_count as usize * 20);
    o.push(b'd');
    if files.len() > 1 {
        bstr(&mut o, b"files");
        o.push(b'l');
        for f in files {
            o.extend_from_slice(format!("d6:lengthi{}e4:pathl", f.size).as_bytes());
            for c in f.path.split('/') {
                bstr(&mut o, c.as_bytes());
            }
            o.extend_from_slice(b"ee");
        }
        o.push(b'e');
    } else {
        o.extend_from_slice(
            format!("6:lengthi{}e", files.first().map_or(0, |f| f.size)).as_bytes(),
        );
    }
    bstr(&mut o, b"name");
    bstr(&mut o, name.as_bytes());
    o.extend_from_slice(format!("12:piece lengthi{piece_length}e").as_bytes());
    bstr(&mut o, b"pieces");
    o.extend_from_slice(format!("{}:", piece_count as usize * 20).as_bytes());
    let n = piece_count as usize * 20;
    let start = o.len();
    while o.len() - start < n {
        o.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    o.truncate(start + n);
    o.push(b'e');
    o
}
