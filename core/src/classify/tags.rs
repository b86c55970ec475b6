//! The vocabulary of release names: resolutions, sources, codecs, audio formats,
//! languages, the keywords that hint at a content kind, and file extensions.
//!
//! Every word is looked up by its [`Key`] (the word's bytes packed in a `u128`, which
//! the tokenizer makes for free from a token's lowercase copy) in one open-addressing
//! table built at compile time from the word lists below: a hash, and one or two
//! integer comparisons, whatever the number of words. Joins of adjacent tokens
//! (`web`+`dl` = `webdl`, `h`+`264` = `h264`) are keys shifted and or-ed together.
//! (The first version matched strings against `match` arms, a chain of string
//! comparisons per lookup; `old` under `cfg(test)` keeps it, and a test checks that both
//! say the same of every word.)

use super::{AudioFormat, Languages, Source, VideoCodec};

/// What a (joined) token means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    Source(Source),
    Codec(VideoCodec),
    Audio(AudioFormat),
    /// A language hint: the bit of [`super::Languages`].
    Lang(u32),
    /// A release tag that says nothing we keep but ends the title (REPACK, 10bit, ...).
    Other,
}

/// Keywords of a name that hint at a content kind (a bit set).
pub mod kw {
    pub const ADULT: u32 = 1;
    pub const AUDIOBOOK: u32 = 1 << 1;
    pub const MUSIC: u32 = 1 << 2;
    pub const EBOOK: u32 = 1 << 3;
    pub const COMIC: u32 = 1 << 4;
    pub const SOFTWARE: u32 = 1 << 5;
    pub const GAME: u32 = 1 << 6;
    pub const DISC: u32 = 1 << 7;
    pub const ANIME: u32 = 1 << 8;
}

/// What a file extension says (lowercase, without the dot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileClass {
    Video,
    Audio,
    Audiobook,
    Ebook,
    Comic,
    Software,
    Disc,
    Archive,
    Image,
    Other,
}

impl FileClass {
    pub const ALL: [FileClass; 10] = [
        FileClass::Video,
        FileClass::Audio,
        FileClass::Audiobook,
        FileClass::Ebook,
        FileClass::Comic,
        FileClass::Software,
        FileClass::Disc,
        FileClass::Archive,
        FileClass::Image,
        FileClass::Other,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A word of at most [`KEY_BYTES`] bytes packed in an integer: its bytes in order from
/// the low end, zero padded. Words without NUL bytes have distinct keys; [`NO_KEY`]
/// (bytes 0xFF, no ASCII word's) stands for every word that can be no entry.
pub type Key = u128;

/// The longest word a key holds (every entry is shorter).
pub const KEY_BYTES: usize = 16;

/// The key of no entry: empty or too long words, words with a NUL byte.
pub const NO_KEY: Key = u128::MAX;

/// The key of a word (as is: entries are lowercase).
pub const fn key_of(s: &[u8]) -> Key {
    if s.is_empty() || s.len() > KEY_BYTES {
        return NO_KEY;
    }
    let mut k: u128 = 0;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == 0 {
            return NO_KEY;
        }
        k |= (b as u128) << (8 * i);
        i += 1;
    }
    k
}

/// The key of word `a` (`a_len` bytes) followed by word `b` (`b_len` bytes), or
/// [`NO_KEY`] when either is or the join would be too long to be an entry.
#[inline]
pub fn join_keys(a: Key, a_len: usize, b: Key, b_len: usize) -> Key {
    if a == NO_KEY || b == NO_KEY || a_len + b_len > KEY_BYTES || a_len == 0 || b_len == 0 {
        return NO_KEY;
    }
    a | (b << (8 * a_len))
}

/// What one word means, as a tag, a kind keyword, and a file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meaning {
    /// As a release tag.
    pub tag: Option<Tag>,
    /// As kind keywords ([`kw`]).
    pub kw: u32,
    /// As a file extension.
    pub file: FileClass,
    /// A container extension that ends a name (`.mkv`, `.srt`).
    pub container: bool,
}

/// The meaning of a word of no list.
pub const NOTHING: Meaning = Meaning {
    tag: None,
    kw: 0,
    file: FileClass::Other,
    container: false,
};

const SLOTS: usize = 1024;

#[inline]
const fn slot_of(k: Key) -> usize {
    let x = (k as u64) ^ ((k >> 64) as u64).rotate_left(29);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize & (SLOTS - 1)
}

struct Table {
    keys: [Key; SLOTS],
    vals: [Meaning; SLOTS],
}

/// The slot of `k` in a table being built: its own, or the empty one where it goes.
const fn probe(t: &Table, k: Key) -> usize {
    let mut s = slot_of(k);
    let mut n = 0;
    while n < SLOTS {
        if t.keys[s] == k || t.keys[s] == 0 {
            return s;
        }
        s = (s + 1) & (SLOTS - 1);
        n += 1;
    }
    panic!("the word table is full")
}

const fn build() -> Table {
    let mut t = Table {
        keys: [0; SLOTS],
        vals: [NOTHING; SLOTS],
    };
    let mut used = 0;
    let mut i = 0;
    while i < TAGS.len() {
        let k = key_of(TAGS[i].0.as_bytes());
        assert!(k != NO_KEY, "a word too long for a key");
        let s = probe(&t, k);
        if t.keys[s] == 0 {
            used += 1;
        }
        t.keys[s] = k;
        if t.vals[s].tag.is_none() {
            t.vals[s].tag = Some(TAGS[i].1);
        }
        i += 1;
    }
    i = 0;
    while i < KEYWORDS.len() {
        let k = key_of(KEYWORDS[i].0.as_bytes());
        assert!(k != NO_KEY, "a word too long for a key");
        let s = probe(&t, k);
        if t.keys[s] == 0 {
            used += 1;
        }
        t.keys[s] = k;
        if t.vals[s].kw == 0 {
            t.vals[s].kw = KEYWORDS[i].1;
        }
        i += 1;
    }
    i = 0;
    while i < FILES.len() {
        let k = key_of(FILES[i].0.as_bytes());
        assert!(k != NO_KEY, "a word too long for a key");
        let s = probe(&t, k);
        if t.keys[s] == 0 {
            used += 1;
        }
        t.keys[s] = k;
        if matches!(t.vals[s].file, FileClass::Other) {
            t.vals[s].file = FILES[i].1;
        }
        t.vals[s].container = true;
        i += 1;
    }
    i = 0;
    while i < OTHER_CONTAINERS.len() {
        let k = key_of(OTHER_CONTAINERS[i].as_bytes());
        let s = probe(&t, k);
        if t.keys[s] == 0 {
            used += 1;
        }
        t.keys[s] = k;
        t.vals[s].container = true;
        i += 1;
    }
    // At most half full: a miss ends at an empty slot after a probe or two.
    assert!(used * 2 <= SLOTS, "the word table is too full");
    t
}

static TABLE: Table = build();

/// What the word of key `k` means (all `None`/0 for a word of no list).
#[inline]
pub fn meaning(k: Key) -> Meaning {
    if k == NO_KEY {
        return NOTHING;
    }
    let mut s = slot_of(k);
    for _ in 0..SLOTS {
        match TABLE.keys.get(s) {
            Some(&x) if x == k => return TABLE.vals.get(s).copied().unwrap_or(NOTHING),
            Some(&0) | None => return NOTHING,
            Some(_) => s = (s + 1) & (SLOTS - 1),
        }
    }
    NOTHING
}

/// Bits of the filter of word beginnings ([`may_begin_word`]).
const BEGIN_BITS: usize = 8192;

#[inline]
const fn begin_bit(k: Key) -> usize {
    let x = (k as u64) ^ ((k >> 64) as u64).rotate_left(17);
    (x.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 51) as usize & (BEGIN_BITS - 1)
}

/// A one-hash Bloom filter of the keys of every proper beginning (first 1 to n - 1
/// bytes) of every tag and keyword: a join of tokens can only be a word of
/// [`TAGS`] or [`KEYWORDS`] when its first token is such a beginning.
const fn build_begins() -> [u64; BEGIN_BITS / 64] {
    let mut bits = [0u64; BEGIN_BITS / 64];
    let mut i = 0;
    while i < TAGS.len() + KEYWORDS.len() {
        let w = if i < TAGS.len() {
            TAGS[i].0.as_bytes()
        } else {
            KEYWORDS[i - TAGS.len()].0.as_bytes()
        };
        let mut k: Key = 0;
        let mut j = 0;
        while j + 1 < w.len() {
            k |= (w[j] as u128) << (8 * j);
            let b = begin_bit(k);
            bits[b / 64] |= 1 << (b % 64);
            j += 1;
        }
        i += 1;
    }
    bits
}

static BEGINS: [u64; BEGIN_BITS / 64] = build_begins();

/// Whether the word of key `k` may be a proper beginning of a tag or keyword: false
/// means it is none (a join starting with it is no word of the tables); true is
/// wrong for about one word in ten that is none (the lookup then says so).
#[inline]
pub fn may_begin_word(k: Key) -> bool {
    if k == NO_KEY {
        return false;
    }
    let b = begin_bit(k);
    BEGINS
        .get(b / 64)
        .is_some_and(|w| w & (1u64 << (b % 64)) != 0)
}

/// The meaning of a joined lowercase token, if any.
#[cfg(test)]
pub fn lookup(s: &str) -> Option<Tag> {
    meaning(key_of(s.as_bytes())).tag
}

/// The kind keywords one (joined) lowercase token stands for.
#[cfg(test)]
pub fn keyword(s: &str) -> u32 {
    meaning(key_of(s.as_bytes())).kw
}

/// The class of a file by its extension (lowercase, without the dot).
#[cfg(test)]
pub fn file_class(ext: &str) -> FileClass {
    meaning(key_of(ext.as_bytes())).file
}

/// Extensions that end a name as a container (dropped from the title).
#[cfg(test)]
pub fn is_container(ext: &str) -> bool {
    meaning(key_of(ext.as_bytes())).container
}

/// Extensions of no file class that still end a name as a container.
const OTHER_CONTAINERS: &[&str] = &["srt", "nfo", "txt", "bin"];

const TAGS: &[(&str, Tag)] = &[
    ("bluray", Tag::Source(Source::BluRay)),
    ("bd", Tag::Source(Source::BluRay)),
    ("bdrip", Tag::Source(Source::BluRay)),
    ("brrip", Tag::Source(Source::BluRay)),
    ("bd25", Tag::Source(Source::BluRay)),
    ("bd50", Tag::Source(Source::BluRay)),
    ("bdmv", Tag::Source(Source::BluRay)),
    ("bdr", Tag::Source(Source::BluRay)),
    ("blurayrip", Tag::Source(Source::BluRay)),
    ("uhdbluray", Tag::Source(Source::UhdBluRay)),
    ("uhdbdrip", Tag::Source(Source::UhdBluRay)),
    ("uhdbd", Tag::Source(Source::UhdBluRay)),
    ("webdl", Tag::Source(Source::Web)),
    ("webrip", Tag::Source(Source::Web)),
    ("web", Tag::Source(Source::Web)),
    ("webdlrip", Tag::Source(Source::Web)),
    ("webhd", Tag::Source(Source::Web)),
    ("webcap", Tag::Source(Source::Web)),
    ("hdtv", Tag::Source(Source::Hdtv)),
    ("hdtvrip", Tag::Source(Source::Hdtv)),
    ("dvd", Tag::Source(Source::Dvd)),
    ("dvdrip", Tag::Source(Source::Dvd)),
    ("dvd5", Tag::Source(Source::Dvd)),
    ("dvd9", Tag::Source(Source::Dvd)),
    ("dvdr", Tag::Source(Source::Dvd)),
    ("dvdscr", Tag::Source(Source::Dvd)),
    ("ntsc", Tag::Source(Source::Dvd)),
    ("pal", Tag::Source(Source::Dvd)),
    ("cam", Tag::Source(Source::Camera)),
    ("camrip", Tag::Source(Source::Camera)),
    ("hdcam", Tag::Source(Source::HdCamera)),
    ("ts", Tag::Source(Source::Telesync)),
    ("telesync", Tag::Source(Source::Telesync)),
    ("tsrip", Tag::Source(Source::Telesync)),
    ("hdts", Tag::Source(Source::HdTelesync)),
    ("tc", Tag::Source(Source::Telecine)),
    ("telecine", Tag::Source(Source::Telecine)),
    ("pdtv", Tag::Source(Source::DigitalTv)),
    ("dsr", Tag::Source(Source::Satellite)),
    ("dsrip", Tag::Source(Source::Satellite)),
    ("satrip", Tag::Source(Source::Satellite)),
    ("dthrip", Tag::Source(Source::Satellite)),
    ("dvbrip", Tag::Source(Source::Satellite)),
    ("sdtv", Tag::Source(Source::Tv)),
    ("tvrip", Tag::Source(Source::Tv)),
    ("ppv", Tag::Source(Source::PayPerView)),
    ("ppvrip", Tag::Source(Source::PayPerView)),
    ("vhs", Tag::Source(Source::Vhs)),
    ("vhsrip", Tag::Source(Source::Vhs)),
    ("x264", Tag::Codec(VideoCodec::H264)),
    ("h264", Tag::Codec(VideoCodec::H264)),
    ("avc", Tag::Codec(VideoCodec::H264)),
    ("avc1", Tag::Codec(VideoCodec::H264)),
    ("x265", Tag::Codec(VideoCodec::H265)),
    ("h265", Tag::Codec(VideoCodec::H265)),
    ("hevc", Tag::Codec(VideoCodec::H265)),
    ("hevc10", Tag::Codec(VideoCodec::H265)),
    ("xvid", Tag::Codec(VideoCodec::Xvid)),
    ("divx", Tag::Codec(VideoCodec::Divx)),
    ("vp9", Tag::Codec(VideoCodec::Vp9)),
    ("av1", Tag::Codec(VideoCodec::Av1)),
    ("mpeg2", Tag::Codec(VideoCodec::Mpeg2)),
    ("vc1", Tag::Codec(VideoCodec::Vc1)),
    ("aac", Tag::Audio(AudioFormat::Aac)),
    ("aac2", Tag::Audio(AudioFormat::Aac)),
    ("aac20", Tag::Audio(AudioFormat::Aac)),
    ("aac51", Tag::Audio(AudioFormat::Aac)),
    ("ac3", Tag::Audio(AudioFormat::DolbyDigital)),
    ("dd", Tag::Audio(AudioFormat::DolbyDigital)),
    ("dd2", Tag::Audio(AudioFormat::DolbyDigital)),
    ("dd20", Tag::Audio(AudioFormat::DolbyDigital)),
    ("dd51", Tag::Audio(AudioFormat::DolbyDigital)),
    ("dd5", Tag::Audio(AudioFormat::DolbyDigital)),
    ("ddp", Tag::Audio(AudioFormat::DolbyDigitalPlus)),
    ("ddp5", Tag::Audio(AudioFormat::DolbyDigitalPlus)),
    ("ddp51", Tag::Audio(AudioFormat::DolbyDigitalPlus)),
    ("ddp20", Tag::Audio(AudioFormat::DolbyDigitalPlus)),
    ("ddp2", Tag::Audio(AudioFormat::DolbyDigitalPlus)),
    ("eac3", Tag::Audio(AudioFormat::DolbyDigitalPlus)),
    ("ddplus", Tag::Audio(AudioFormat::DolbyDigitalPlus)),
    ("truehd", Tag::Audio(AudioFormat::TrueHd)),
    ("atmos", Tag::Audio(AudioFormat::Atmos)),
    ("dts", Tag::Audio(AudioFormat::Dts)),
    ("dts51", Tag::Audio(AudioFormat::Dts)),
    ("dtshd", Tag::Audio(AudioFormat::DtsHd)),
    ("dtshdma", Tag::Audio(AudioFormat::DtsHd)),
    ("dtsma", Tag::Audio(AudioFormat::DtsHd)),
    ("dtsx", Tag::Audio(AudioFormat::DtsHd)),
    ("flac", Tag::Audio(AudioFormat::Flac)),
    ("mp3", Tag::Audio(AudioFormat::Mp3)),
    ("opus", Tag::Audio(AudioFormat::Opus)),
    ("alac", Tag::Audio(AudioFormat::Alac)),
    ("ogg", Tag::Audio(AudioFormat::Vorbis)),
    ("vorbis", Tag::Audio(AudioFormat::Vorbis)),
    ("lpcm", Tag::Audio(AudioFormat::Pcm)),
    ("pcm", Tag::Audio(AudioFormat::Pcm)),
    ("english", Tag::Lang(Languages::ENGLISH)),
    ("french", Tag::Lang(Languages::FRENCH)),
    ("truefrench", Tag::Lang(Languages::FRENCH)),
    ("vostfr", Tag::Lang(Languages::FRENCH)),
    ("vff", Tag::Lang(Languages::FRENCH)),
    ("german", Tag::Lang(Languages::GERMAN)),
    ("italian", Tag::Lang(Languages::ITALIAN)),
    ("spanish", Tag::Lang(Languages::SPANISH)),
    ("castellano", Tag::Lang(Languages::SPANISH)),
    ("latino", Tag::Lang(Languages::SPANISH)),
    ("russian", Tag::Lang(Languages::RUSSIAN)),
    ("japanese", Tag::Lang(Languages::JAPANESE)),
    ("korean", Tag::Lang(Languages::KOREAN)),
    ("chinese", Tag::Lang(Languages::CHINESE)),
    ("mandarin", Tag::Lang(Languages::CHINESE)),
    ("cantonese", Tag::Lang(Languages::CHINESE)),
    ("portuguese", Tag::Lang(Languages::PORTUGUESE)),
    ("hindi", Tag::Lang(Languages::HINDI)),
    ("multi", Tag::Lang(Languages::MULTI)),
    ("multisubs", Tag::Lang(Languages::MULTI)),
    ("dual", Tag::Lang(Languages::MULTI)),
    ("dualaudio", Tag::Lang(Languages::MULTI)),
    ("multilingual", Tag::Lang(Languages::MULTI)),
    ("proper", Tag::Other),
    ("repack", Tag::Other),
    ("internal", Tag::Other),
    ("extended", Tag::Other),
    ("unrated", Tag::Other),
    ("remastered", Tag::Other),
    ("limited", Tag::Other),
    ("hdr", Tag::Other),
    ("hdr10", Tag::Other),
    ("dv", Tag::Other),
    ("10bit", Tag::Other),
    ("8bit", Tag::Other),
    ("remux", Tag::Other),
    ("bdremux", Tag::Other),
    ("hdrip", Tag::Other),
    ("uhd", Tag::Other),
    ("amzn", Tag::Other),
    ("nf", Tag::Other),
    ("dsnp", Tag::Other),
    ("hmax", Tag::Other),
    ("atvp", Tag::Other),
    ("imax", Tag::Other),
    ("3d", Tag::Other),
    ("hsbs", Tag::Other),
    ("sbs", Tag::Other),
    ("dubbed", Tag::Other),
    ("subbed", Tag::Other),
    ("readnfo", Tag::Other),
    ("complete", Tag::Other),
    ("uncut", Tag::Other),
    ("directors", Tag::Other),
    ("criterion", Tag::Other),
    ("x64", Tag::Other),
    ("x86", Tag::Other),
    ("x8664", Tag::Other),
    ("amd64", Tag::Other),
    ("arm64", Tag::Other),
    ("i386", Tag::Other),
    ("i686", Tag::Other),
    ("aarch64", Tag::Other),
    ("iso", Tag::Other),
];
const KEYWORDS: &[(&str, u32)] = &[
    ("xxx", kw::ADULT),
    ("porn", kw::ADULT),
    ("brazzers", kw::ADULT),
    ("realitykings", kw::ADULT),
    ("naughtyamerica", kw::ADULT),
    ("vixen", kw::ADULT),
    ("tushy", kw::ADULT),
    ("blacked", kw::ADULT),
    ("bangbros", kw::ADULT),
    ("pornhub", kw::ADULT),
    ("onlyfans", kw::ADULT),
    ("xvideos", kw::ADULT),
    ("hentai", kw::ADULT),
    ("audiobook", kw::AUDIOBOOK),
    ("audiobooks", kw::AUDIOBOOK),
    ("unabridged", kw::AUDIOBOOK),
    ("abridged", kw::AUDIOBOOK),
    ("narrated", kw::AUDIOBOOK),
    ("m4b", kw::AUDIOBOOK),
    ("discography", kw::MUSIC),
    ("flac", kw::MUSIC),
    ("mp3", kw::MUSIC),
    ("alac", kw::MUSIC),
    ("ogg", kw::MUSIC),
    ("320kbps", kw::MUSIC),
    ("album", kw::MUSIC),
    ("lossless", kw::MUSIC),
    ("24bit", kw::MUSIC),
    ("vinyl", kw::MUSIC),
    ("soundtrack", kw::MUSIC),
    ("ost", kw::MUSIC),
    ("epub", kw::EBOOK),
    ("pdf", kw::EBOOK),
    ("mobi", kw::EBOOK),
    ("azw3", kw::EBOOK),
    ("azw", kw::EBOOK),
    ("ebook", kw::EBOOK),
    ("ebooks", kw::EBOOK),
    ("djvu", kw::EBOOK),
    ("fb2", kw::EBOOK),
    ("books", kw::EBOOK),
    ("comic", kw::COMIC),
    ("comics", kw::COMIC),
    ("cbr", kw::COMIC),
    ("cbz", kw::COMIC),
    ("manga", kw::COMIC),
    ("x64", kw::SOFTWARE),
    ("x86", kw::SOFTWARE),
    ("win64", kw::SOFTWARE),
    ("win32", kw::SOFTWARE),
    ("windows", kw::SOFTWARE),
    ("macos", kw::SOFTWARE),
    ("portable", kw::SOFTWARE),
    ("keygen", kw::SOFTWARE),
    ("crack", kw::SOFTWARE),
    ("cracked", kw::SOFTWARE),
    ("preactivated", kw::SOFTWARE),
    ("activated", kw::SOFTWARE),
    ("setup", kw::SOFTWARE),
    ("incl", kw::SOFTWARE),
    ("patch", kw::SOFTWARE),
    ("xforce", kw::SOFTWARE),
    ("serial", kw::SOFTWARE),
    ("installer", kw::SOFTWARE),
    ("apk", kw::SOFTWARE),
    ("codex", kw::GAME),
    ("plaza", kw::GAME),
    ("skidrow", kw::GAME),
    ("reloaded", kw::GAME),
    ("tenoke", kw::GAME),
    ("fitgirl", kw::GAME),
    ("dodi", kw::GAME),
    ("elamigos", kw::GAME),
    ("gog", kw::GAME),
    ("ps4", kw::GAME),
    ("ps3", kw::GAME),
    ("ps5", kw::GAME),
    ("nsw", kw::GAME),
    ("xbox360", kw::GAME),
    ("xbox", kw::GAME),
    ("duplex", kw::GAME),
    ("venom", kw::GAME),
    ("bigbluebox", kw::GAME),
    ("drmfree", kw::GAME),
    ("rune", kw::GAME),
    ("razor1911", kw::GAME),
    ("flt", kw::GAME),
    ("empress", kw::GAME),
    ("cpy", kw::GAME),
    ("hoodlum", kw::GAME),
    ("iso", kw::DISC),
    ("img", kw::DISC),
    ("nrg", kw::DISC),
    ("mdf", kw::DISC),
    ("discimage", kw::DISC),
    ("netinst", kw::DISC),
    ("dvd9", kw::DISC),
    ("bd50", kw::DISC),
    ("dvd5", kw::DISC),
    ("bd25", kw::DISC),
];
const FILES: &[(&str, FileClass)] = &[
    ("mkv", FileClass::Video),
    ("mp4", FileClass::Video),
    ("avi", FileClass::Video),
    ("m4v", FileClass::Video),
    ("mov", FileClass::Video),
    ("wmv", FileClass::Video),
    ("mpg", FileClass::Video),
    ("mpeg", FileClass::Video),
    ("webm", FileClass::Video),
    ("flv", FileClass::Video),
    ("m2ts", FileClass::Video),
    ("vob", FileClass::Video),
    ("ts", FileClass::Video),
    ("ogv", FileClass::Video),
    ("divx", FileClass::Video),
    ("rmvb", FileClass::Video),
    ("3gp", FileClass::Video),
    ("mp3", FileClass::Audio),
    ("flac", FileClass::Audio),
    ("m4a", FileClass::Audio),
    ("aac", FileClass::Audio),
    ("ogg", FileClass::Audio),
    ("opus", FileClass::Audio),
    ("wav", FileClass::Audio),
    ("ape", FileClass::Audio),
    ("wma", FileClass::Audio),
    ("alac", FileClass::Audio),
    ("wv", FileClass::Audio),
    ("dsf", FileClass::Audio),
    ("aiff", FileClass::Audio),
    ("m4b", FileClass::Audiobook),
    ("aax", FileClass::Audiobook),
    ("epub", FileClass::Ebook),
    ("pdf", FileClass::Ebook),
    ("mobi", FileClass::Ebook),
    ("azw3", FileClass::Ebook),
    ("azw", FileClass::Ebook),
    ("djvu", FileClass::Ebook),
    ("fb2", FileClass::Ebook),
    ("lit", FileClass::Ebook),
    ("cbr", FileClass::Comic),
    ("cbz", FileClass::Comic),
    ("cb7", FileClass::Comic),
    ("exe", FileClass::Software),
    ("msi", FileClass::Software),
    ("dmg", FileClass::Software),
    ("pkg", FileClass::Software),
    ("deb", FileClass::Software),
    ("rpm", FileClass::Software),
    ("apk", FileClass::Software),
    ("appimage", FileClass::Software),
    ("app", FileClass::Software),
    ("dll", FileClass::Software),
    ("iso", FileClass::Disc),
    ("img", FileClass::Disc),
    ("nrg", FileClass::Disc),
    ("mdf", FileClass::Disc),
    ("mds", FileClass::Disc),
    ("cue", FileClass::Disc),
    ("vhd", FileClass::Disc),
    ("vmdk", FileClass::Disc),
    ("zip", FileClass::Archive),
    ("rar", FileClass::Archive),
    ("7z", FileClass::Archive),
    ("gz", FileClass::Archive),
    ("tgz", FileClass::Archive),
    ("bz2", FileClass::Archive),
    ("xz", FileClass::Archive),
    ("tar", FileClass::Archive),
    ("zst", FileClass::Archive),
    ("jpg", FileClass::Image),
    ("jpeg", FileClass::Image),
    ("png", FileClass::Image),
    ("gif", FileClass::Image),
    ("bmp", FileClass::Image),
    ("webp", FileClass::Image),
    ("tif", FileClass::Image),
    ("tiff", FileClass::Image),
    ("heic", FileClass::Image),
    ("raw", FileClass::Image),
    ("cr2", FileClass::Image),
    ("nef", FileClass::Image),
    ("dng", FileClass::Image),
];

#[cfg(test)]
mod old {
    //! The first version's lookups (string `match` arms), to check the table against.
    use super::{kw, FileClass, Tag};
    use crate::classify::{AudioFormat, Source, VideoCodec};

    /// The meaning of a joined lowercase token, if any.
    pub fn lookup(s: &str) -> Option<Tag> {
        use AudioFormat as A;
        use Source as S;
        use VideoCodec as C;
        Some(match s {
            "bluray" | "bd" | "bdrip" | "brrip" | "bd25" | "bd50" | "bdmv" | "bdr"
            | "blurayrip" => Tag::Source(S::BluRay),
            "uhdbluray" | "uhdbdrip" | "uhdbd" => Tag::Source(S::UhdBluRay),
            "webdl" | "webrip" | "web" | "webdlrip" | "webhd" | "webcap" => Tag::Source(S::Web),
            "hdtv" | "hdtvrip" => Tag::Source(S::Hdtv),
            "dvd" | "dvdrip" | "dvd5" | "dvd9" | "dvdr" | "dvdscr" | "ntsc" | "pal" => {
                Tag::Source(S::Dvd)
            }
            "cam" | "camrip" => Tag::Source(S::Camera),
            "hdcam" => Tag::Source(S::HdCamera),
            "ts" | "telesync" | "tsrip" => Tag::Source(S::Telesync),
            "hdts" => Tag::Source(S::HdTelesync),
            "tc" | "telecine" => Tag::Source(S::Telecine),
            "pdtv" => Tag::Source(S::DigitalTv),
            "dsr" | "dsrip" | "satrip" | "dthrip" | "dvbrip" => Tag::Source(S::Satellite),
            "sdtv" | "tvrip" => Tag::Source(S::Tv),
            "ppv" | "ppvrip" => Tag::Source(S::PayPerView),
            "vhs" | "vhsrip" => Tag::Source(S::Vhs),

            "x264" | "h264" | "avc" | "avc1" => Tag::Codec(C::H264),
            "x265" | "h265" | "hevc" | "hevc10" => Tag::Codec(C::H265),
            "xvid" => Tag::Codec(C::Xvid),
            "divx" => Tag::Codec(C::Divx),
            "vp9" => Tag::Codec(C::Vp9),
            "av1" => Tag::Codec(C::Av1),
            "mpeg2" => Tag::Codec(C::Mpeg2),
            "vc1" => Tag::Codec(C::Vc1),

            "aac" | "aac2" | "aac20" | "aac51" => Tag::Audio(A::Aac),
            "ac3" | "dd" | "dd2" | "dd20" | "dd51" | "dd5" => Tag::Audio(A::DolbyDigital),
            "ddp" | "ddp5" | "ddp51" | "ddp20" | "ddp2" | "eac3" | "ddplus" => {
                Tag::Audio(A::DolbyDigitalPlus)
            }
            "truehd" => Tag::Audio(A::TrueHd),
            "atmos" => Tag::Audio(A::Atmos),
            "dts" | "dts51" => Tag::Audio(A::Dts),
            "dtshd" | "dtshdma" | "dtsma" | "dtsx" => Tag::Audio(A::DtsHd),
            "flac" => Tag::Audio(A::Flac),
            "mp3" => Tag::Audio(A::Mp3),
            "opus" => Tag::Audio(A::Opus),
            "alac" => Tag::Audio(A::Alac),
            "ogg" | "vorbis" => Tag::Audio(A::Vorbis),
            "lpcm" | "pcm" => Tag::Audio(A::Pcm),

            "english" => Tag::Lang(super::Languages::ENGLISH),
            "french" | "truefrench" | "vostfr" | "vff" => Tag::Lang(super::Languages::FRENCH),
            "german" => Tag::Lang(super::Languages::GERMAN),
            "italian" => Tag::Lang(super::Languages::ITALIAN),
            "spanish" | "castellano" | "latino" => Tag::Lang(super::Languages::SPANISH),
            "russian" => Tag::Lang(super::Languages::RUSSIAN),
            "japanese" => Tag::Lang(super::Languages::JAPANESE),
            "korean" => Tag::Lang(super::Languages::KOREAN),
            "chinese" | "mandarin" | "cantonese" => Tag::Lang(super::Languages::CHINESE),
            "portuguese" => Tag::Lang(super::Languages::PORTUGUESE),
            "hindi" => Tag::Lang(super::Languages::HINDI),
            "multi" | "multisubs" | "dual" | "dualaudio" | "multilingual" => {
                Tag::Lang(super::Languages::MULTI)
            }

            "proper" | "repack" | "internal" | "extended" | "unrated" | "remastered"
            | "limited" | "hdr" | "hdr10" | "dv" | "10bit" | "8bit" | "remux" | "bdremux"
            | "hdrip" | "uhd" | "amzn" | "nf" | "dsnp" | "hmax" | "atvp" | "imax" | "3d"
            | "hsbs" | "sbs" | "dubbed" | "subbed" | "readnfo" | "complete" | "uncut"
            | "directors" | "criterion" | "x64" | "x86" | "x8664" | "amd64" | "arm64" | "i386"
            | "i686" | "aarch64" | "iso" => Tag::Other,
            _ => return None,
        })
    }

    /// The kind keywords one (joined) lowercase token stands for.
    pub fn keyword(s: &str) -> u32 {
        match s {
            "xxx" | "porn" | "brazzers" | "realitykings" | "naughtyamerica" | "vixen" | "tushy"
            | "blacked" | "bangbros" | "pornhub" | "onlyfans" | "xvideos" | "hentai" => kw::ADULT,
            "audiobook" | "audiobooks" | "unabridged" | "abridged" | "narrated" | "m4b" => {
                kw::AUDIOBOOK
            }
            "discography" | "flac" | "mp3" | "alac" | "ogg" | "320kbps" | "album" | "lossless"
            | "24bit" | "vinyl" | "soundtrack" | "ost" => kw::MUSIC,
            "epub" | "pdf" | "mobi" | "azw3" | "azw" | "ebook" | "ebooks" | "djvu" | "fb2"
            | "books" => kw::EBOOK,
            "comic" | "comics" | "cbr" | "cbz" | "manga" => kw::COMIC,
            "x64" | "x86" | "win64" | "win32" | "windows" | "macos" | "portable" | "keygen"
            | "crack" | "cracked" | "preactivated" | "activated" | "setup" | "incl" | "patch"
            | "xforce" | "serial" | "installer" | "apk" => kw::SOFTWARE,
            "codex" | "plaza" | "skidrow" | "reloaded" | "tenoke" | "fitgirl" | "dodi"
            | "elamigos" | "gog" | "ps4" | "ps3" | "ps5" | "nsw" | "xbox360" | "xbox"
            | "duplex" | "venom" | "bigbluebox" | "drmfree" | "rune" | "razor1911" | "flt"
            | "empress" | "cpy" | "hoodlum" => kw::GAME,
            "iso" | "img" | "nrg" | "mdf" | "discimage" | "netinst" | "dvd9" | "bd50" | "dvd5"
            | "bd25" => kw::DISC,
            _ => 0,
        }
    }

    /// The class of a file by its extension.
    pub fn file_class(ext: &str) -> FileClass {
        use FileClass as F;
        match ext {
            "mkv" | "mp4" | "avi" | "m4v" | "mov" | "wmv" | "mpg" | "mpeg" | "webm" | "flv"
            | "m2ts" | "vob" | "ts" | "ogv" | "divx" | "rmvb" | "3gp" => F::Video,
            "mp3" | "flac" | "m4a" | "aac" | "ogg" | "opus" | "wav" | "ape" | "wma" | "alac"
            | "wv" | "dsf" | "aiff" => F::Audio,
            "m4b" | "aax" => F::Audiobook,
            "epub" | "pdf" | "mobi" | "azw3" | "azw" | "djvu" | "fb2" | "lit" => F::Ebook,
            "cbr" | "cbz" | "cb7" => F::Comic,
            "exe" | "msi" | "dmg" | "pkg" | "deb" | "rpm" | "apk" | "appimage" | "app" | "dll" => {
                F::Software
            }
            "iso" | "img" | "nrg" | "mdf" | "mds" | "cue" | "vhd" | "vmdk" => F::Disc,
            "zip" | "rar" | "7z" | "gz" | "tgz" | "bz2" | "xz" | "tar" | "zst" => F::Archive,
            "jpg" | "jpeg" | "png" | "gif" | "bmp" | "webp" | "tif" | "tiff" | "heic" | "raw"
            | "cr2" | "nef" | "dng" => F::Image,
            _ => F::Other,
        }
    }

    /// Extensions that end a name as a container (dropped from the title).
    pub fn is_container(ext: &str) -> bool {
        !matches!(file_class(ext), FileClass::Other) || matches!(ext, "srt" | "nfo" | "txt" | "bin")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every word of every list, and every token and join of up to three adjacent tokens
    /// of the classifier corpus, means the same by the table as by the old `match` arms.
    #[test]
    fn the_table_says_what_the_match_arms_said() {
        let mut words: Vec<String> = TAGS
            .iter()
            .map(|e| e.0)
            .chain(KEYWORDS.iter().map(|e| e.0))
            .chain(FILES.iter().map(|e| e.0))
            .chain(OTHER_CONTAINERS.iter().copied())
            .map(str::to_owned)
            .collect();
        let corpus = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/classify/corpus.jsonl"
        ))
        .expect("corpus");
        for line in corpus.lines() {
            let toks: Vec<String> = line
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_ascii_lowercase)
                .collect();
            for k in 1..=3 {
                for w in toks.windows(k) {
                    words.push(w.concat());
                }
            }
        }
        words.extend(
            [
                "",
                "\0",
                "a\0",
                "x264\0",
                "é",
                "BLURAY",
                "bluray ",
                "naughtyamerica1",
                "abcdefghijklmnopq",
            ]
            .map(str::to_owned),
        );
        assert!(words.len() > 10_000, "{} words", words.len());
        for w in &words {
            assert_eq!(lookup(w), old::lookup(w), "{w:?}");
            assert_eq!(keyword(w), old::keyword(w), "{w:?}");
            assert_eq!(file_class(w), old::file_class(w), "{w:?}");
            assert_eq!(is_container(w), old::is_container(w), "{w:?}");
        }
    }

    /// Every proper beginning of every tag and keyword passes the filter, and most
    /// other words do not.
    #[test]
    fn the_beginnings_filter_has_no_false_negatives() {
        let mut words = 0;
        for w in TAGS.iter().map(|e| e.0).chain(KEYWORDS.iter().map(|e| e.0)) {
            for n in 1..w.len() {
                assert!(may_begin_word(key_of(&w.as_bytes()[..n])), "{w} [..{n}]");
                words += 1;
            }
        }
        assert!(words > 500);
        let (mut pass, mut all) = (0, 0);
        for a in b'a'..=b'z' {
            for b in b'a'..=b'z' {
                for c in b"qwz" {
                    let k = key_of(&[a, b, *c, b'y', b'j']);
                    all += 1;
                    pass += usize::from(may_begin_word(k));
                }
            }
        }
        assert!(pass * 5 < all, "{pass} of {all} pass");
        assert!(!may_begin_word(NO_KEY));
    }

    #[test]
    fn joined_keys_are_the_keys_of_joined_words() {
        let (a, b) = (b"web".as_slice(), b"dl".as_slice());
        assert_eq!(join_keys(key_of(a), 3, key_of(b), 2), key_of(b"webdl"));
        assert_eq!(
            join_keys(key_of(b"abcdefghij"), 10, key_of(b"klmnopq"), 7),
            NO_KEY
        );
        assert_eq!(key_of(b"a\0b"), NO_KEY);
        assert_eq!(
            meaning(key_of(b"webdl")).tag,
            Some(Tag::Source(Source::Web))
        );
    }
}
