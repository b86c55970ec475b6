//! Offline classification of torrents (issue 20 §1): from the name, the file paths and
//! their sizes, a content kind, a Torznab category and the attributes a release name
//! carries (title, year, season and episode numbers and ranges, date, resolution,
//! source, video codec, audio format, language hints).
//!
//! Pure and deterministic: no IO, no clock, no global state. Work and memory are
//! bounded for inputs of any size or script: names are cut to
//! [`MAX_NAME_BYTES`] bytes and [`MAX_TOKENS`] tokens, titles to
//! [`MAX_TITLE_BYTES`], and at most [`MAX_FILES`] files are looked at (only their
//! extension and size). Parsing is one pass over the tokens with fixed-size lookaheads
//! and `match` tables (no regular expressions).
//!
//! No Rust crate was taken for release-name parsing: `torrent-name-parser` runs a list
//! of regexes over the whole name and is unmaintained since 2023; `hunch` (a guessit
//! port) is young, much larger than needed (49 properties, cross-file context) and
//! brings its own rule tables and statics into the sans-IO core. Python's `guessit` is
//! the oracle instead: core/tests/classify_guessit.rs checks the agreement per field on
//! the corpus of core/tests/fixtures/classify/.
//!
//! Every enum has a stable numeric code (`code`/`from_code`) so that a store can keep a
//! [`Classification`] compactly; codes are never reused.

mod parse;
mod tags;
mod tokens;

pub use parse::MAX_TITLE_BYTES;
use tags::{kw, FileClass};
pub use tokens::{MAX_NAME_BYTES, MAX_TOKENS};

/// At most this many files of a torrent are looked at.
pub const MAX_FILES: usize = 10_000;

macro_rules! coded_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $code:literal => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vm])* $v,)*
        }
        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The stable numeric code (for storage).
            pub fn code(self) -> u8 {
                match self { $($name::$v => $code,)* }
            }
            /// The value of a stable numeric code.
            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some($name::$v),)* _ => None }
            }
            /// A short human label (guessit's wording for the attributes).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $label,)* }
            }
        }
    };
}

coded_enum! {
    /// What a torrent holds.
    ContentKind {
        /// Nothing recognised.
        Other = 0 => "other",
        /// A film.
        Movie = 1 => "movie",
        /// One TV episode (or a few with one number, or one date).
        TvEpisode = 2 => "tv_episode",
        /// A season pack, several seasons, or an episode range.
        TvSeason = 3 => "tv_season",
        /// Music.
        Music = 4 => "music",
        /// An audiobook.
        Audiobook = 5 => "audiobook",
        /// An ebook.
        Ebook = 6 => "ebook",
        /// A comic.
        Comic = 7 => "comic",
        /// Software (applications).
        Software = 8 => "software",
        /// A game.
        Game = 9 => "game",
        /// A disc image (ISO, IMG, ...).
        DiscImage = 10 => "disc_image",
        /// An archive (zip, rar, ...).
        Archive = 11 => "archive",
        /// Pictures.
        Images = 12 => "images",
        /// Adult content.
        Adult = 13 => "adult",
    }
}

coded_enum! {
    /// Vertical resolution (and scan).
    Resolution {
        /// 360p.
        P360 = 1 => "360p",
        /// 480p.
        P480 = 2 => "480p",
        /// 540p.
        P540 = 3 => "540p",
        /// 576p.
        P576 = 4 => "576p",
        /// 720p.
        P720 = 5 => "720p",
        /// 1080p.
        P1080 = 6 => "1080p",
        /// 1080i.
        I1080 = 7 => "1080i",
        /// 1440p.
        P1440 = 8 => "1440p",
        /// 2160p (4K).
        P2160 = 9 => "2160p",
        /// 4320p (8K).
        P4320 = 10 => "4320p",
        /// 480i.
        I480 = 11 => "480i",
        /// 576i.
        I576 = 12 => "576i",
    }
}

impl Resolution {
    /// The resolution of a height in lines.
    pub fn from_height(h: u32, interlaced: bool) -> Option<Self> {
        use Resolution as R;
        Some(match (h, interlaced) {
            (360, false) => R::P360,
            (480, false) => R::P480,
            (480, true) => R::I480,
            (540, false) => R::P540,
            (576, false) => R::P576,
            (576, true) => R::I576,
            (720, false) => R::P720,
            (1080, false) => R::P1080,
            (1080, true) => R::I1080,
            (1440, false) => R::P1440,
            (2160, false) => R::P2160,
            (4320, false) => R::P4320,
            _ => return None,
        })
    }
}

coded_enum! {
    /// Where a video was taken from.
    Source {
        /// Blu-ray (BluRay, BDRip, BRRip).
        BluRay = 1 => "Blu-ray",
        /// Ultra HD Blu-ray.
        UhdBluRay = 2 => "Ultra HD Blu-ray",
        /// Web (WEB-DL, WEBRip).
        Web = 3 => "Web",
        /// HDTV.
        Hdtv = 4 => "HDTV",
        /// DVD.
        Dvd = 5 => "DVD",
        /// A camera in a cinema (CAM).
        Camera = 6 => "Camera",
        /// HDCAM.
        HdCamera = 7 => "HD Camera",
        /// Telesync (TS).
        Telesync = 8 => "Telesync",
        /// HD telesync.
        HdTelesync = 9 => "HD Telesync",
        /// Telecine (TC).
        Telecine = 10 => "Telecine",
        /// Digital TV (PDTV).
        DigitalTv = 11 => "Digital TV",
        /// Satellite (DSR).
        Satellite = 12 => "Satellite",
        /// SD TV.
        Tv = 13 => "TV",
        /// Pay-per-view.
        PayPerView = 14 => "Pay-per-view",
        /// VHS.
        Vhs = 15 => "VHS",
    }
}

coded_enum! {
    /// Video codec.
    VideoCodec {
        /// H.264 / AVC (x264).
        H264 = 1 => "H.264",
        /// H.265 / HEVC (x265).
        H265 = 2 => "H.265",
        /// Xvid.
        Xvid = 3 => "Xvid",
        /// DivX.
        Divx = 4 => "DivX",
        /// VP9.
        Vp9 = 5 => "VP9",
        /// AV1.
        Av1 = 6 => "AV1",
        /// MPEG-2.
        Mpeg2 = 7 => "MPEG-2",
        /// VC-1.
        Vc1 = 8 => "VC-1",
    }
}

coded_enum! {
    /// Audio format (the first one a name gives).
    AudioFormat {
        /// AAC.
        Aac = 1 => "AAC",
        /// Dolby Digital (AC3, DD5.1).
        DolbyDigital = 2 => "Dolby Digital",
        /// Dolby Digital Plus (DDP, EAC3).
        DolbyDigitalPlus = 3 => "Dolby Digital Plus",
        /// Dolby TrueHD.
        TrueHd = 4 => "Dolby TrueHD",
        /// Dolby Atmos.
        Atmos = 5 => "Dolby Atmos",
        /// DTS.
        Dts = 6 => "DTS",
        /// DTS-HD (MA).
        DtsHd = 7 => "DTS-HD",
        /// FLAC.
        Flac = 8 => "FLAC",
        /// MP3.
        Mp3 = 9 => "MP3",
        /// Opus.
        Opus = 10 => "Opus",
        /// ALAC.
        Alac = 11 => "ALAC",
        /// Vorbis (OGG).
        Vorbis = 12 => "Vorbis",
        /// PCM / LPCM.
        Pcm = 13 => "PCM",
    }
}

/// Language hints of a name, as a bit set (stable bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Languages(pub u32);

impl Languages {
    /// English.
    pub const ENGLISH: u32 = 1;
    /// French (also VOSTFR, TRUEFRENCH).
    pub const FRENCH: u32 = 1 << 1;
    /// German.
    pub const GERMAN: u32 = 1 << 2;
    /// Italian.
    pub const ITALIAN: u32 = 1 << 3;
    /// Spanish (also Castellano, Latino).
    pub const SPANISH: u32 = 1 << 4;
    /// Russian.
    pub const RUSSIAN: u32 = 1 << 5;
    /// Japanese.
    pub const JAPANESE: u32 = 1 << 6;
    /// Korean.
    pub const KOREAN: u32 = 1 << 7;
    /// Chinese.
    pub const CHINESE: u32 = 1 << 8;
    /// Portuguese.
    pub const PORTUGUESE: u32 = 1 << 9;
    /// Hindi.
    pub const HINDI: u32 = 1 << 10;
    /// Several languages (MULTi, dual audio).
    pub const MULTI: u32 = 1 << 11;
    /// Script hints from the title: Cyrillic.
    pub const SCRIPT_CYRILLIC: u32 = 1 << 24;
    /// Script hints from the title: CJK (Han, kana, hangul).
    pub const SCRIPT_CJK: u32 = 1 << 25;
    /// Script hints from the title: Greek.
    pub const SCRIPT_GREEK: u32 = 1 << 26;
    /// Script hints from the title: Arabic or Hebrew.
    pub const SCRIPT_ARABIC_HEBREW: u32 = 1 << 27;

    /// Whether a hint is set.
    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

/// What a torrent was classified as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    /// The content kind.
    pub kind: ContentKind,
    /// The title (at most [`MAX_TITLE_BYTES`] bytes).
    pub title: Option<String>,
    /// Year of release.
    pub year: Option<u16>,
    /// Seasons, first and last (equal for one season).
    pub seasons: Option<(u16, u16)>,
    /// Episodes, first and last (equal for one episode); absolute numbers for anime.
    pub episodes: Option<(u32, u32)>,
    /// Air date of a daily show (year, month, day).
    pub date: Option<(u16, u8, u8)>,
    /// Resolution.
    pub resolution: Option<Resolution>,
    /// Source.
    pub source: Option<Source>,
    /// Video codec.
    pub video_codec: Option<VideoCodec>,
    /// Audio format.
    pub audio: Option<AudioFormat>,
    /// Language hints.
    pub languages: Languages,
}

// `coded_enum!` cannot place `#[default]` on one variant.
#[allow(clippy::derivable_impls)]
impl Default for ContentKind {
    fn default() -> Self {
        ContentKind::Other
    }
}

impl Classification {
    /// The Torznab (newznab) category: 2000 movies, 5000 TV, 3000 audio, 7000 books,
    /// 4000 PC, 6000 XXX, 8000 other, with a sub-category where the attributes say it.
    pub fn torznab(&self) -> u16 {
        use ContentKind as K;
        let hd = matches!(
            self.resolution,
            Some(Resolution::P720 | Resolution::P1080 | Resolution::I1080 | Resolution::P1440)
        );
        let uhd = matches!(self.resolution, Some(Resolution::P2160 | Resolution::P4320))
            || self.source == Some(Source::UhdBluRay);
        let sd = matches!(
            self.resolution,
            Some(
                Resolution::P360
                    | Resolution::P480
                    | Resolution::I480
                    | Resolution::P540
                    | Resolution::P576
                    | Resolution::I576
            )
        );
        match self.kind {
            K::Movie => {
                if uhd {
                    2045
                } else if self.source == Some(Source::BluRay) && !hd && !sd {
                    2050
                } else if hd {
                    2040
                } else if sd || self.source == Some(Source::Dvd) {
                    2030
                } else if self.source == Some(Source::Web) {
                    2080
                } else {
                    2000
                }
            }
            K::TvEpisode | K::TvSeason => {
                if uhd {
                    5045
                } else if hd {
                    5040
                } else if sd {
                    5030
                } else if self.source == Some(Source::Web) {
                    5010
                } else {
                    5000
                }
            }
            K::Music => match self.audio {
                Some(AudioFormat::Mp3) => 3010,
                Some(AudioFormat::Flac | AudioFormat::Alac | AudioFormat::Pcm) => 3040,
                _ => 3000,
            },
            K::Audiobook => 3030,
            K::Ebook => 7020,
            K::Comic => 7030,
            K::Software => 4000,
            K::Game => 4050,
            K::DiscImage => 4020,
            K::Adult => {
                if uhd {
                    6045
                } else if self.video_codec == Some(VideoCodec::H264) {
                    6040
                } else {
                    6000
                }
            }
            K::Images => 8010,
            K::Archive | K::Other => 8000,
        }
    }
}

/// Bytes and counts per file class.
#[derive(Default)]
struct FileStats {
    bytes: [u64; FileClass::ALL.len()],
    count: [u32; FileClass::ALL.len()],
}

impl FileStats {
    fn add(&mut self, class: FileClass, size: u64) {
        self.add_run(class, size.max(1), 1);
    }

    /// `count` files of `class` of `bytes` in all (each counted as at least 1).
    fn add_run(&mut self, class: FileClass, bytes: u64, count: u32) {
        if let Some(b) = self.bytes.get_mut(class.index()) {
            *b = b.saturating_add(bytes);
        }
        if let Some(c) = self.count.get_mut(class.index()) {
            *c = c.saturating_add(count);
        }
    }

    /// The class holding the most bytes, if any file was seen. Files of no known class
    /// only win when nothing else is there.
    fn dominant(&self) -> Option<FileClass> {
        // The first class with the most bytes (`Other`, the last, aside).
        let (mut best, mut most) = (None, 0u64);
        for (&c, &b) in FileClass::ALL.iter().zip(&self.bytes) {
            if b > most && c != FileClass::Other {
                (best, most) = (Some(c), b);
            }
        }
        best.or_else(|| {
            (self
                .bytes
                .get(FileClass::Other.index())
                .copied()
                .unwrap_or(0)
                > 0)
            .then_some(FileClass::Other)
        })
    }

    fn count(&self, c: FileClass) -> u32 {
        self.count.get(c.index()).copied().unwrap_or(0)
    }
}

/// The key of the lowercase extension of a path (at most 8 bytes), or
/// [`tags::NO_KEY`]: one backward pass over the path's last bytes, no allocation.
/// Also the length of the path's tail read for it (the extension and its dot) when
/// there is a key: a path ending in the same bytes has the same key.
fn extension_key(path: &str) -> (tags::Key, usize) {
    let mut key: u64 = 0;
    let mut n = 0;
    for &b in path.as_bytes().iter().rev() {
        match b {
            b'.' if n > 0 => return (tags::Key::from(key), n + 1),
            b'.' | b'/' | b'\\' => return (tags::NO_KEY, 0),
            _ if n == 8 || !b.is_ascii() || b == 0 => return (tags::NO_KEY, 0),
            _ => {
                key = (key << 8) | u64::from(b.to_ascii_lowercase());
                n += 1;
            }
        }
    }
    (tags::NO_KEY, 0)
}

/// The last 8 bytes of `p` (little endian: the last byte is the top one), or 0 when
/// `p` is shorter.
#[inline]
fn last8(p: &[u8]) -> u64 {
    p.len()
        .checked_sub(8)
        .and_then(|s| p.get(s..))
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

/// The first version of [`extension_key`] (a `u128` shifted a byte at a time).
#[cfg(test)]
fn extension_key_u128(path: &str) -> tags::Key {
    let mut key: tags::Key = 0;
    let mut n = 0;
    for &b in path.as_bytes().iter().rev() {
        match b {
            b'.' if n > 0 => return key,
            b'.' | b'/' | b'\\' => return tags::NO_KEY,
            _ if n == 8 || !b.is_ascii() || b == 0 => return tags::NO_KEY,
            _ => {
                key = (key << 8) | tags::Key::from(b.to_ascii_lowercase());
                n += 1;
            }
        }
    }
    tags::NO_KEY
}

fn script_hints(title: &str) -> u32 {
    if title.is_ascii() {
        return 0;
    }
    let mut bits = 0;
    for c in title.chars().take(64) {
        bits |= match c as u32 {
            0x0400..=0x04FF => Languages::SCRIPT_CYRILLIC,
            0x0370..=0x03FF => Languages::SCRIPT_GREEK,
            0x0590..=0x06FF => Languages::SCRIPT_ARABIC_HEBREW,
            0x3040..=0x30FF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0x3400..=0x4DBF => {
                Languages::SCRIPT_CJK
            }
            _ => 0,
        };
    }
    bits
}

/// Classifies a torrent from its name and its files (path, size in bytes). Only the
/// first [`MAX_FILES`] files are looked at. Never panics; bounded work for any input.
// Never inlined: one call a torrent costs nothing, and profiles (callgrind's
// `--toggle-collect='*classify*classify*'`) can count it apart.
#[inline(never)]
pub fn classify<'a, I>(name: &str, files: I) -> Classification
where
    I: IntoIterator<Item = (&'a str, u64)>,
{
    let p = parse::parse(name);
    let mut stats = FileStats::default();
    add_files(files, &mut stats);
    // A name with a container extension and no files: the name is the file.
    if let Some(c) = p.container {
        if stats.dominant().is_none() {
            stats.add(c, 1);
        }
    }
    let kind = kind_of(&p, &stats);
    let mut languages = p.languages;
    if let Some(t) = &p.title {
        languages.0 |= script_hints(t);
    }
    Classification {
        kind,
        title: p.title,
        year: p.year,
        seasons: p.seasons,
        episodes: p.episodes,
        date: p.date,
        resolution: p.resolution,
        source: p.source,
        video_codec: p.video_codec,
        audio: p.audio,
        languages,
    }
}

/// Adds the first [`MAX_FILES`] files (path, size) to `stats` by the class of their
/// extension.
fn add_files<'a, I>(files: I, stats: &mut FileStats)
where
    I: IntoIterator<Item = (&'a str, u64)>,
{
    // Files of a torrent mostly share their extension: a path that ends as the last
    // one with an extension did (`.mkv`) has its class without another look, and the
    // sizes of a run of one class are summed before they are added (saturating sums
    // of sizes are the same in any grouping).
    // The tail is compared as the path's last 8 bytes under a mask (0: no tail).
    let (mut tail, mut tail_mask) = (0u64, 0u64);
    let mut last: Option<(tags::Key, FileClass)> = None;
    let (mut run_class, mut run_bytes, mut run_count) = (FileClass::Other, 0u64, 0u32);
    for (path, size) in files.into_iter().take(MAX_FILES) {
        let end = last8(path.as_bytes());
        let class = match last {
            Some((_, c)) if tail_mask != 0 && (end ^ tail) & tail_mask == 0 => c,
            _ => {
                let (key, n) = extension_key(path);
                // A tail of 2 to 8 bytes, in a path of 8 bytes or more.
                (tail, tail_mask) = if (2..=8).contains(&n) && path.len() >= 8 {
                    (end, u64::MAX << (8 * (8 - n)))
                } else {
                    (0, 0)
                };
                match last {
                    Some((k, c)) if k == key => c,
                    _ => {
                        let c = tags::meaning(key).file;
                        last = Some((key, c));
                        c
                    }
                }
            }
        };
        if class != run_class {
            stats.add_run(run_class, run_bytes, run_count);
            (run_class, run_bytes, run_count) = (class, 0, 0);
        }
        run_bytes = run_bytes.saturating_add(size.max(1));
        run_count = run_count.saturating_add(1);
    }
    stats.add_run(run_class, run_bytes, run_count);
}

fn kind_of(p: &parse::Parsed, stats: &FileStats) -> ContentKind {
    use ContentKind as K;
    use FileClass as F;
    let dom = stats.dominant();
    let k = p.keywords;
    let tv = p.seasons.is_some() || p.episodes.is_some() || p.date.is_some();
    let video_tags = p.resolution.is_some() || p.source.is_some() || p.video_codec.is_some();
    let video_like = matches!(dom, Some(F::Video)) || (dom.is_none() && (tv || video_tags));
    if k & kw::ADULT != 0
        && matches!(
            dom,
            None | Some(F::Video | F::Image | F::Archive | F::Disc | F::Other)
        )
    {
        return K::Adult;
    }
    if k & kw::AUDIOBOOK != 0 || dom == Some(F::Audiobook) {
        return K::Audiobook;
    }
    if k & kw::GAME != 0 && !matches!(dom, Some(F::Video | F::Audio)) {
        return K::Game;
    }
    if video_like {
        if !tv {
            return K::Movie;
        }
        let multi_ep = p.episodes.is_some_and(|(a, b)| b > a);
        let multi_season = p.seasons.is_some_and(|(a, b)| b > a);
        let season_only = p.seasons.is_some() && p.episodes.is_none();
        return if multi_ep || multi_season || season_only {
            K::TvSeason
        } else {
            K::TvEpisode
        };
    }
    // The files decide first, then the name's keywords.
    match dom {
        Some(F::Audio) => return K::Music,
        Some(F::Comic) => return K::Comic,
        Some(F::Ebook) => return K::Ebook,
        Some(F::Software) => return K::Software,
        Some(F::Disc) => return K::DiscImage,
        _ => {}
    }
    if dom.is_none() && k & kw::MUSIC != 0 {
        return K::Music;
    }
    if k & kw::COMIC != 0 {
        return K::Comic;
    }
    if k & kw::EBOOK != 0 {
        return K::Ebook;
    }
    if k & kw::SOFTWARE != 0 {
        return K::Software;
    }
    if k & kw::DISC != 0 {
        return K::DiscImage;
    }
    match dom {
        Some(F::Archive) => K::Archive,
        Some(F::Image) => K::Images,
        _ if stats.count(F::Image) > 0 && stats.count(F::Image) >= stats.count(F::Other) => {
            K::Images
        }
        _ => K::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str, files: &[(&str, u64)]) -> ContentKind {
        classify(name, files.iter().copied()).kind
    }

    #[test]
    fn codes_are_stable_and_round_trip() {
        for k in ContentKind::ALL {
            assert_eq!(ContentKind::from_code(k.code()), Some(*k));
        }
        for r in Resolution::ALL {
            assert_eq!(Resolution::from_code(r.code()), Some(*r));
        }
        for s in Source::ALL {
            assert_eq!(Source::from_code(s.code()), Some(*s));
        }
        assert_eq!(ContentKind::Adult.code(), 13);
        assert_eq!(ContentKind::from_code(200), None);
    }

    #[test]
    fn video_kinds() {
        assert_eq!(
            kind("Inception.2010.1080p.BluRay.x264-SPARKS", &[]),
            ContentKind::Movie
        );
        assert_eq!(
            kind("Show.S01E02.720p.HDTV", &[("Show.S01E02.mkv", 400 << 20)]),
            ContentKind::TvEpisode
        );
        assert_eq!(kind("Show.S01.1080p.WEB-DL", &[]), ContentKind::TvSeason);
        assert_eq!(kind("Show.S01-S03.720p", &[]), ContentKind::TvSeason);
        assert_eq!(
            kind("[Grp] Title - 01-12 (1080p)", &[]),
            ContentKind::TvSeason
        );
        assert_eq!(
            kind("[Grp] Title - 07 (1080p).mkv", &[]),
            ContentKind::TvEpisode
        );
        assert_eq!(
            kind("film.mkv", &[("film.mkv", 700 << 20)]),
            ContentKind::Movie
        );
        assert_eq!(
            kind(
                "Site.23.05.12.Name.XXX.1080p.MP4-KTR",
                &[("a.mp4", 1 << 30)]
            ),
            ContentKind::Adult
        );
    }

    #[test]
    fn other_kinds_by_files_and_keywords() {
        let flac = [
            ("Album/01 - Song.flac", 30 << 20),
            ("Album/cover.jpg", 1 << 18),
        ];
        assert_eq!(
            kind("Artist - Album (1999) [FLAC]", &flac),
            ContentKind::Music
        );
        assert_eq!(
            kind("Author - Book [Audiobook]", &[("b/1.mp3", 30 << 20)]),
            ContentKind::Audiobook
        );
        assert_eq!(
            kind("Author - Book", &[("b/book.m4b", 300 << 20)]),
            ContentKind::Audiobook
        );
        assert_eq!(
            kind("Author - Book (2015) EPUB", &[("book.epub", 1 << 20)]),
            ContentKind::Ebook
        );
        assert_eq!(
            kind("Hero #001 (2019) (Digital)", &[("h.cbz", 40 << 20)]),
            ContentKind::Comic
        );
        assert_eq!(
            kind("Tool v1.2.3 x64", &[("t/setup.exe", 90 << 20)]),
            ContentKind::Software
        );
        assert_eq!(
            kind(
                "Some.Game-CODEX",
                &[("g/setup.exe", 5 << 20), ("g/data.bin", 9 << 30)]
            ),
            ContentKind::Game
        );
        assert_eq!(
            kind(
                "debian-12.2.0-amd64-netinst.iso",
                &[("debian-12.2.0-amd64-netinst.iso", 600 << 20)]
            ),
            ContentKind::DiscImage
        );
        assert_eq!(
            kind("backup", &[("backup.7z", 1 << 30)]),
            ContentKind::Archive
        );
        assert_eq!(
            kind(
                "Trip photos 2019",
                &[("p/IMG_1.jpg", 3 << 20), ("p/IMG_2.jpg", 3 << 20)]
            ),
            ContentKind::Images
        );
        assert_eq!(kind("notes", &[("n/a.txt", 100)]), ContentKind::Other);
        assert_eq!(kind("", &[]), ContentKind::Other);
    }

    #[test]
    fn torznab_categories() {
        let c = classify("Inception.2010.2160p.UHD.BluRay.x265", std::iter::empty());
        assert_eq!((c.kind, c.torznab()), (ContentKind::Movie, 2045));
        let c = classify("Show.S01E02.720p.HDTV.x264", std::iter::empty());
        assert_eq!(c.torznab(), 5040);
        let c = classify("Artist - Album (1999) [FLAC]", [("a/01.flac", 30u64 << 20)]);
        assert_eq!((c.kind, c.torznab()), (ContentKind::Music, 3040));
        let c = classify("Author - Book (2015) EPUB", [("book.epub", 1u64 << 20)]);
        assert_eq!(c.torznab() / 1000, 7);
        let c = classify("notes", [("n/a.txt", 100u64)]);
        assert_eq!(c.torznab(), 8000);
    }

    #[test]
    fn script_hints_from_the_title() {
        let c = classify("Москва слезам не верит 1979 DVDRip", std::iter::empty());
        assert!(c.languages.has(Languages::SCRIPT_CYRILLIC));
        let c = classify("千と千尋の神隠し 2001 1080p", std::iter::empty());
        assert!(c.languages.has(Languages::SCRIPT_CJK));
        let c = classify("Movie.2001.FRENCH.720p", std::iter::empty());
        assert!(c.languages.has(Languages::FRENCH) && !c.languages.has(Languages::SCRIPT_CJK));
    }

    #[test]
    fn extension_keys_are_what_they_were() {
        let paths = [
            "a.mkv",
            "A.MKV",
            "dir/b.Mp4",
            "x",
            ".mkv",
            "a.",
            "a/.b",
            "a.b/c",
            "a\\b.flac",
            "x.abcdefgh",
            "x.abcdefghi",
            "x.é",
            "x.m\0v",
            "no_ext",
            "a.b.c.tar",
            "..",
            "",
            "Season 1/Show.S01E01.mkv",
            "x.7z",
            "y.JPEG",
        ];
        for p in paths {
            let (k, n) = extension_key(p);
            assert_eq!(k, extension_key_u128(p), "{p:?}");
            if k != tags::NO_KEY {
                let tail = &p[p.len() - n..];
                assert!(tail.starts_with('.'), "{p:?}");
                assert_eq!(extension_key(&format!("other/name{tail}")).0, k, "{p:?}");
            }
            let long = format!("some/longer/path{p}");
            let b = long.as_bytes();
            assert_eq!(last8(b).to_le_bytes(), b[b.len() - 8..], "{p:?}");
        }
    }

    /// Runs of files with one extension, and every change of extension (by case,
    /// by length, under 8 bytes), classify as each file looked up alone does.
    #[test]
    fn files_by_runs_are_files_one_by_one() {
        let exts = [
            ".mkv",
            ".MKV",
            ".mp4",
            ".flac",
            ".jpg",
            ".epub",
            ".x",
            ".abcdefgh",
            ".7z",
            "",
            ".é",
            ".srt",
            ".tar.gz",
            ".cbz",
            ".iso",
            ".exe",
        ];
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        for round in 0..400 {
            let n = 1 + round % 40;
            let files: Vec<(String, u64)> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let e = exts[(x % exts.len() as u64) as usize];
                    let dir = if x % 5 == 0 { "" } else { "Some Dir/" };
                    let stem = if x % 7 == 0 { "a" } else { "File name" };
                    (format!("{dir}{stem} {i}{e}"), (x >> 20) % (1 << 34))
                })
                .collect();
            let got = classify("x", files.iter().map(|(p, s)| (p.as_str(), *s)));
            let mut stats = FileStats::default();
            for (p, s) in &files {
                stats.add(tags::meaning(extension_key_u128(p)).file, *s);
            }
            let p = parse::parse("x");
            assert_eq!(got.kind, kind_of(&p, &stats), "{files:?}");
            let mut again = FileStats::default();
            add_files(files.iter().map(|(p, s)| (p.as_str(), *s)), &mut again);
            assert_eq!(
                (again.bytes, again.count),
                (stats.bytes, stats.count),
                "{files:?}"
            );
        }
    }

    /// The first version of `FileStats::dominant`.
    fn dominant_old(st: &FileStats) -> Option<FileClass> {
        let mut best: Option<(FileClass, u64)> = None;
        for c in FileClass::ALL {
            let b = st.bytes[c.index()];
            if b == 0 || c == FileClass::Other {
                continue;
            }
            if best.is_none_or(|(_, bb)| b > bb) {
                best = Some((c, b));
            }
        }
        best.map(|(c, _)| c)
            .or_else(|| (st.bytes[FileClass::Other.index()] > 0).then_some(FileClass::Other))
    }

    #[test]
    fn the_dominant_class_is_what_it_was() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for n in 0..20_000 {
            let mut st = FileStats::default();
            for b in st.bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Few distinct values, so that ties and zeros are common.
                *b = if n % 2 == 0 {
                    x % 4
                } else {
                    (x % 3) * (u64::MAX / 2)
                };
            }
            assert_eq!(st.dominant(), dominant_old(&st), "{:?}", st.bytes);
        }
    }

    #[test]
    fn huge_and_odd_inputs_are_bounded() {
        let long = "S01E01.".repeat(100_000);
        let c = classify(&long, std::iter::empty());
        assert!(c.title.is_none_or(|t| t.len() <= MAX_TITLE_BYTES));
        let title = "長".repeat(10_000);
        let c = classify(&title, std::iter::empty());
        assert!(c.title.is_some_and(|t| t.len() <= MAX_TITLE_BYTES));
        let files: Vec<(String, u64)> = (0..20_000)
            .map(|i| (format!("d/{i}.flac"), u64::MAX))
            .collect();
        let c = classify("x", files.iter().map(|(p, s)| (p.as_str(), *s)));
        assert_eq!(c.kind, ContentKind::Music);
    }
}
