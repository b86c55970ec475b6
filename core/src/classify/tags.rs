//! The vocabulary of release names: resolutions, sources, codecs, audio formats,
//! languages and the keywords that hint at a content kind. Every lookup is a `match`
//! on a short lowercased ASCII string (a token, or up to three adjacent tokens joined
//! without their separators, e.g. `web`+`dl` = `webdl`, `h`+`264` = `h264`).

use super::{AudioFormat, Source, VideoCodec};

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

/// The meaning of a joined lowercase token, if any.
pub fn lookup(s: &str) -> Option<Tag> {
    use AudioFormat as A;
    use Source as S;
    use VideoCodec as C;
    Some(match s {
        "bluray" | "bd" | "bdrip" | "brrip" | "bd25" | "bd50" | "bdmv" | "bdr" | "blurayrip" => {
            Tag::Source(S::BluRay)
        }
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

        "proper" | "repack" | "internal" | "extended" | "unrated" | "remastered" | "limited"
        | "hdr" | "hdr10" | "dv" | "10bit" | "8bit" | "remux" | "bdremux" | "hdrip" | "uhd"
        | "amzn" | "nf" | "dsnp" | "hmax" | "atvp" | "imax" | "3d" | "hsbs" | "sbs" | "dubbed"
        | "subbed" | "readnfo" | "complete" | "uncut" | "directors" | "criterion" | "x64"
        | "x86" | "x8664" | "amd64" | "arm64" | "i386" | "i686" | "aarch64" | "iso" => Tag::Other,
        _ => return None,
    })
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
        "codex" | "plaza" | "skidrow" | "reloaded" | "tenoke" | "fitgirl" | "dodi" | "elamigos"
        | "gog" | "ps4" | "ps3" | "ps5" | "nsw" | "xbox360" | "xbox" | "duplex" | "venom"
        | "bigbluebox" | "drmfree" | "rune" | "razor1911" | "flt" | "empress" | "cpy"
        | "hoodlum" => kw::GAME,
        "iso" | "img" | "nrg" | "mdf" | "discimage" | "netinst" | "dvd9" | "bd50" | "dvd5"
        | "bd25" => kw::DISC,
        _ => 0,
    }
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

/// The class of a file by its extension.
pub fn file_class(ext: &str) -> FileClass {
    use FileClass as F;
    match ext {
        "mkv" | "mp4" | "avi" | "m4v" | "mov" | "wmv" | "mpg" | "mpeg" | "webm" | "flv"
        | "m2ts" | "vob" | "ts" | "ogv" | "divx" | "rmvb" | "3gp" => F::Video,
        "mp3" | "flac" | "m4a" | "aac" | "ogg" | "opus" | "wav" | "ape" | "wma" | "alac" | "wv"
        | "dsf" | "aiff" => F::Audio,
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
