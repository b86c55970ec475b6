//! Release-name parsing: one left-to-right pass over the tokens.
//!
//! At each token the matchers below try, in order: season/episode markers (`S01E02`,
//! `S01E01E02`, `S01E01-E03`, `S01`, `S01-S03`, `1x02`, `Season 2`), a date
//! (`2023.05.12`), a year, a resolution, a known tag over the longest join of up to three
//! adjacent tokens (`WEB-DL`, `H.264`, `DTS-HD.MA`), and an absolute episode number after
//! a spaced dash (`[Grp] Title - 12`, `- 01-12`). Each matcher looks at a bounded number
//! of tokens, so the pass is linear in the (capped) number of tokens.
//!
//! The title is the run of unmatched tokens from the start (after a leading `[group]`)
//! up to the first matched token, spaced dash or opening bracket; it is the original
//! text of that run with `.`, `_` and `#` read as spaces.

use super::tags::{self, join_keys, meaning, Key, Tag, NO_KEY};
use super::tokens::{tokenize, truncate, Token, Tokens, MAX_TOKENS};
use super::{AudioFormat, Languages, Resolution, Source, VideoCodec};

/// Titles longer than this are cut (at a character boundary).
pub const MAX_TITLE_BYTES: usize = 200;

/// What the name says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub title: Option<String>,
    pub year: Option<u16>,
    pub seasons: Option<(u16, u16)>,
    pub episodes: Option<(u32, u32)>,
    pub date: Option<(u16, u8, u8)>,
    pub resolution: Option<Resolution>,
    pub source: Option<Source>,
    pub video_codec: Option<VideoCodec>,
    pub audio: Option<AudioFormat>,
    pub languages: Languages,
    /// Kind keywords ([`tags::kw`]).
    pub keywords: u32,
    /// A trailing `.ext` that was read as the container.
    pub container: Option<tags::FileClass>,
    /// Season/episode seen as an anime-style absolute number after a spaced dash.
    pub absolute: bool,
}

fn year_of(t: &Token) -> Option<u16> {
    if t.lower_len() != 4 {
        return None;
    }
    let y = t.number()?;
    (1900..=2039).contains(&y).then_some(y as u16)
}

/// 1 to 5 ASCII digits as a number.
fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    let mut n = 0u32;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    Some(n)
}

/// Splits `s` at the first non-digit: (number, rest).
fn lead_number(s: &[u8], max_digits: usize) -> Option<(u32, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > max_digits {
        return None;
    }
    let v = s
        .get(..n)?
        .iter()
        .fold(0u32, |v, &b| v * 10 + u32::from(b - b'0'));
    Some((v, s.get(n..)?))
}

/// The lowercase token without its first byte `c`, as 1 to 5 digits.
fn prefixed_number(t: &Token, c: u8) -> Option<u32> {
    let b = t.lower();
    b.get(..t.lower_len())?.strip_prefix(&[c]).and_then(digits)
}

/// `s01e02e03` / `s01e02` / `s01`: (season, first episode, last episode).
fn sxxeyy(s: &[u8]) -> Option<(u32, Option<(u32, u32)>)> {
    let rest = s.strip_prefix(b"s")?;
    let (season, mut rest) = lead_number(rest, 3)?;
    if rest.is_empty() {
        return Some((season, None));
    }
    let mut first = None;
    let mut last = 0;
    // e02, e02e03, e02-e03 is split by the tokenizer; here only chained `eNN`.
    while let Some(r) = rest.strip_prefix(b"e") {
        let (e, r) = lead_number(r, 4)?;
        if first.is_none() {
            first = Some(e);
        }
        last = e;
        rest = r;
    }
    if !rest.is_empty() {
        return None;
    }
    let first = first?;
    Some((season, Some((first, last.max(first)))))
}

/// `1x02`: (season, episode).
fn nxnn(s: &[u8]) -> Option<(u32, u32)> {
    let (season, rest) = lead_number(s, 2)?;
    let rest = rest.strip_prefix(b"x")?;
    if rest.len() < 2 || rest.len() > 3 {
        return None;
    }
    Some((season, digits(rest)?))
}

/// `1080p`, `720i`, `4k`, `1920x1080`.
fn resolution(s: &[u8]) -> Option<Resolution> {
    use Resolution as R;
    if s == b"4k" {
        return Some(R::P2160);
    }
    if let Some((w, rest)) = lead_number(s, 4) {
        if let Some(h) = rest.strip_prefix(b"x").and_then(digits) {
            let _ = w;
            return R::from_height(h, false);
        }
        return match rest {
            b"p" => R::from_height(w, false),
            b"i" => R::from_height(w, true),
            _ => None,
        };
    }
    None
}

/// Tokens `i` and `i + 1` are adjacent with exactly `sep` between them.
fn joined_by(toks: &[Token], i: usize, sep: u8) -> bool {
    match (toks.get(i), toks.get(i + 1)) {
        (Some(a), Some(b)) => b.start() == a.end() + 1 && b.sep_before == sep,
        _ => false,
    }
}

/// Tokens `i` and `i + 1` are separated by one short separator (no bracket).
fn adjacent(toks: &[Token], i: usize) -> bool {
    match (toks.get(i), toks.get(i + 1)) {
        (Some(a), Some(b)) => {
            b.start() == a.end() + 1 && matches!(b.sep_before, b'.' | b'-' | b' ' | b'_')
        }
        _ => false,
    }
}

/// The key of the lowercase join of tokens `i..i + k` (when all are short ASCII and
/// adjacent, and the join short enough to be a word of the tables), or [`NO_KEY`].
fn join_key(toks: &[Token], i: usize, k: usize) -> Key {
    let Some(t) = toks.get(i) else { return NO_KEY };
    let (mut key, mut len) = (t.key, t.lower_len());
    for j in i + 1..i + k {
        let Some(n) = toks.get(j) else { return NO_KEY };
        if !adjacent(toks, j - 1) {
            return NO_KEY;
        }
        key = join_keys(key, len, n.key, n.lower_len());
        if key == NO_KEY {
            return NO_KEY;
        }
        len += n.lower_len();
    }
    key
}

/// The key of `uhd`.
const UHD: Key = tags::key_of(b"uhd");

/// Parses a release name.
pub fn parse(name: &str) -> Parsed {
    let name = truncate(name);
    let mut buf = Tokens::new();
    tokenize(name, &mut buf);
    let toks = buf.as_slice();
    let mut p = Parsed::default();
    let mut n = toks.len();
    // A trailing container extension (`.mkv`, `.iso`) is no part of the title.
    if n > 1 {
        if let Some(last) = toks.get(n - 1) {
            let m = meaning(last.key);
            if last.sep_before == b'.' && last.sep_after == 0 && m.container {
                p.container = Some(m.file);
                p.keywords |= m.kw;
                n -= 1;
            }
        }
    }
    let toks = toks.get(..n).unwrap_or(&[]);
    // A leading `[group]` (anime, scene sites) is no part of the title.
    let mut start = 0;
    if toks
        .first()
        .is_some_and(|t| t.opens_bracket() && t.start() == 1)
    {
        while toks.get(start).is_some_and(|t| t.depth > 0) {
            start += 1;
        }
        if start >= toks.len() {
            start = 0;
        }
        if start > 0 {
            p.keywords |= tags::kw::ANIME;
        }
    }
    let mut matched = [false; MAX_TOKENS];
    let mut i = 0;
    while i < toks.len() {
        let m = toks.get(i).map_or(tags::NOTHING, |t| meaning(t.key));
        let k = if is_hash(name, toks.get(i)) {
            1
        } else {
            match_at(toks, i, start, m, &mut p)
        };
        // Kind keywords are read from every token, matched or not.
        p.keywords |= m.kw;
        if k > 0 {
            for m in matched.iter_mut().skip(i).take(k) {
                *m = true;
            }
            i += k;
        } else {
            i += 1;
        }
    }
    // Joined keywords (`disc image`, `drm-free`).
    // (Only tokens that begin some word of the tables can begin a join that is one.)
    for (i, t) in toks.iter().enumerate().take(toks.len().saturating_sub(1)) {
        if t.may_begin_word() {
            p.keywords |= meaning(join_key(toks, i, 2)).kw;
        }
    }
    // A 2160p Blu-ray is an Ultra HD Blu-ray.
    if p.source == Some(Source::BluRay) && p.resolution == Some(Resolution::P2160) {
        p.source = Some(Source::UhdBluRay);
    }
    p.title = title(name, toks, start, matched.get(..toks.len()).unwrap_or(&[]));
    p
}

/// A hex digest (CRC32, MD5, SHA-1, SHA-256) is no title word.
fn is_hash(name: &str, t: Option<&Token>) -> bool {
    let Some(t) = t else { return false };
    matches!(t.len(), 32 | 40 | 64)
        && name
            .as_bytes()
            .get(t.start()..t.end())
            .is_some_and(|b| b.iter().all(u8::is_ascii_hexdigit))
}

/// Tries every matcher at token `i`; returns how many tokens matched (0: none).
/// `m` is what token `i` means by itself.
fn match_at(toks: &[Token], i: usize, start: usize, m: tags::Meaning, p: &mut Parsed) -> usize {
    let Some(t) = toks.get(i) else { return 0 };
    let joins = t.may_begin_word();
    let lower = t.lower();
    let l = lower.get(..t.lower_len()).unwrap_or(&[]);
    if l.is_empty() {
        return 0;
    }
    // Every matcher of numbers needs a digit: words without one go to the season
    // and episode words and the tags; a word that is none of these, no tag and
    // begins no tag or keyword (most title words) matches nothing.
    let digit = t.has_digit();
    if !digit && !joins && m.tag.is_none() && !matches!(l.first(), Some(b's' | b't' | b'e')) {
        return 0;
    }
    if digit {
        // S01E02, S01E01E02, S01, then -E03 / -S03 ranges.
        if let Some((season, eps)) = sxxeyy(l) {
            let season = season.min(u32::from(u16::MAX)) as u16;
            let mut k = 1;
            match eps {
                Some((a, b)) => {
                    let mut last = b;
                    if joined_by(toks, i, b'-') {
                        if let Some(e) = toks.get(i + 1).and_then(|n| prefixed_number(n, b'e')) {
                            if e > last {
                                last = e;
                                k = 2;
                            }
                        }
                    }
                    set_once(&mut p.seasons, (season, season));
                    set_once(&mut p.episodes, (a, last));
                }
                None => {
                    let mut last = season;
                    if joined_by(toks, i, b'-') {
                        if let Some(s2) = toks.get(i + 1).and_then(|n| prefixed_number(n, b's')) {
                            if s2 > u32::from(season) && s2 <= u32::from(u16::MAX) {
                                last = s2 as u16;
                                k = 2;
                            }
                        }
                    }
                    set_once(&mut p.seasons, (season, last));
                }
            }
            return k;
        }
        if let Some((s, e)) = nxnn(l) {
            set_once(&mut p.seasons, (s as u16, s as u16));
            set_once(&mut p.episodes, (e, e));
            return 1;
        }
    }
    if l == b"season" || l == b"saison" || l == b"temporada" || l == b"staffel" {
        if let Some(s) = toks.get(i + 1).and_then(|n| n.number()) {
            if s < 100 {
                set_once(&mut p.seasons, (s as u16, s as u16));
                return 2;
            }
        }
    }
    if l == b"episode" || l == b"ep" {
        if let Some(e) = toks.get(i + 1).and_then(|n| n.number()) {
            set_once(&mut p.episodes, (e, e));
            return 2;
        }
    }
    if digit {
        // A date: 2023.05.12 (tokens joined by one same separator).
        if let Some(y) = year_of(t) {
            if l.len() == 4 {
                let m = toks
                    .get(i + 1)
                    .filter(|n| n.len() == 2)
                    .and_then(|n| n.number());
                let d = toks
                    .get(i + 2)
                    .filter(|n| n.len() == 2)
                    .and_then(|n| n.number());
                let sep = toks.get(i + 1).map(|n| n.sep_before).unwrap_or(0);
                if let (Some(m), Some(d)) = (m, d) {
                    if (1..=12).contains(&m)
                        && (1..=31).contains(&d)
                        && adjacent(toks, i)
                        && joined_by(toks, i + 1, sep)
                        && i > start
                    {
                        set_once(&mut p.date, (y, m as u8, d as u8));
                        return 3;
                    }
                }
            }
            // A year needs a title before it ("1984.1984.720p": the first is the title).
            if i > start {
                set_once(&mut p.year, y);
                return 1;
            }
        }
        // Scene dates with a two-digit year (Site.23.05.12) and dotted versions
        // (debian-12.2.0, Tool 10.1) end the title.
        if let Some(k) = dotted(toks, i, start, p) {
            return k;
        }
        if let Some(r) = resolution(l) {
            set_once(&mut p.resolution, r);
            return 1;
        }
    }
    // Known tags, the longest join first (only a token that begins some word of the
    // tables can begin a join that is one).
    for k in (1..=3).rev() {
        if k > 1 && !joins {
            continue;
        }
        let j = if k == 1 { t.key } else { join_key(toks, i, k) };
        if j == NO_KEY {
            continue;
        }
        let tag = if j == UHD && k == 1 {
            // UHD BluRay: the source is Ultra HD Blu-ray.
            match meaning(join_key(toks, i + 1, 1)).tag {
                Some(Tag::Source(Source::BluRay)) if adjacent(toks, i) => {
                    set_once(&mut p.source, Source::UhdBluRay);
                    return 2;
                }
                _ => meaning(j).tag,
            }
        } else if k == 1 {
            m.tag
        } else {
            meaning(j).tag
        };
        let Some(tag) = tag else { continue };
        match tag {
            Tag::Source(s) => set_once(&mut p.source, s),
            Tag::Codec(c) => set_once(&mut p.video_codec, c),
            Tag::Audio(a) => set_once(&mut p.audio, a),
            Tag::Lang(bit) => p.languages.0 |= bit,
            Tag::Other => {}
        }
        return k;
    }
    // v1.2.3 (software versions) end the title.
    if digit && l.len() >= 2 && l.starts_with(b"v") && l.iter().skip(1).all(|b| b.is_ascii_digit())
    {
        return 1;
    }
    // [Grp] Title - 12 / - 01-12: absolute episode numbers.
    if t.spaced_dash_before() && i > start && p.episodes.is_none() {
        if let Some(e) = t.number() {
            let mut last = e;
            let mut k = 1;
            if joined_by(toks, i, b'-') {
                if let Some(e2) = toks.get(i + 1).and_then(|n| n.number()) {
                    if e2 > e {
                        last = e2;
                        k = 2;
                    }
                }
            }
            p.episodes = Some((e, last));
            p.absolute = true;
            return k;
        }
    }
    0
}

/// `YY.MM.DD` (a date) or `N.N[.N]` not in a dot-separated name (a version).
fn dotted(toks: &[Token], i: usize, start: usize, p: &mut Parsed) -> Option<usize> {
    let t = toks.get(i)?;
    if i <= start || !t.is_digits() || !joined_by(toks, i, b'.') {
        return None;
    }
    let n2 = toks.get(i + 1).filter(|n| n.is_digits())?;
    let n3 = toks
        .get(i + 2)
        .filter(|n| n.is_digits() && joined_by(toks, i + 1, b'.'));
    if let (2, 2, Some(n3)) = (t.len(), n2.len(), n3) {
        if n3.len() == 2 {
            let (y, m, d) = (t.number()?, n2.number()?, n3.number()?);
            if (1..=12).contains(&m) && (1..=31).contains(&d) {
                set_once(&mut p.date, (2000 + y as u16, m as u8, d as u8));
                return Some(3);
            }
        }
    }
    if t.sep_before == b'.' {
        return None;
    }
    Some(if n3.is_some() { 3 } else { 2 })
}

fn set_once<T>(slot: &mut Option<T>, v: T) {
    if slot.is_none() {
        *slot = Some(v);
    }
}

fn title(name: &str, toks: &[Token], start: usize, matched: &[bool]) -> Option<String> {
    let first = toks.get(start)?;
    let mut last = first;
    let mut last_i = start;
    for (i, t) in toks.iter().enumerate().skip(start) {
        if matched.get(i).copied().unwrap_or(true) {
            break;
        }
        if i > start && (t.spaced_dash_before() || t.opens_bracket() || t.depth > 0) {
            break;
        }
        last = t;
        last_i = i;
    }
    if matched.get(start).copied().unwrap_or(true) {
        return None;
    }
    let raw = name.get(first.start()..last.end())?;
    let words = toks.get(start..=start + (last_i - start))?;
    quick_title(raw, words).or_else(|| clean_title(raw))
}

/// [`clean_title`] of `raw`, the text of `words`, without reading it byte by byte
/// when that gives the same: ASCII words without white space inside, one separator
/// byte between words, shorter than [`MAX_TITLE_BYTES`] (so nothing is cut). The text
/// is copied as it is, then each separator that is white space, `.`, `_` or `#`
/// becomes a space (the words are not empty, so neither is the title). `None` when
/// this does not apply.
fn quick_title(raw: &str, words: &[Token]) -> Option<String> {
    if raw.len() >= MAX_TITLE_BYTES {
        return None;
    }
    let first = words.first()?;
    let mut prev_end = first.end();
    let mut spaces_only = true;
    for w in words {
        if !w.plain() {
            return None;
        }
        if w.start() > first.start() {
            if w.start() != prev_end + 1 {
                return None;
            }
            spaces_only &= w.sep_before == b' ';
        }
        prev_end = w.end();
    }
    if spaces_only {
        return Some(raw.to_owned());
    }
    let mut out = raw.as_bytes().to_vec();
    for w in words.iter().skip(1) {
        if matches!(w.sep_before, b'.' | b'_' | b'#' | b' ' | b'\t'..=b'\r') {
            let at = (w.start() - 1).checked_sub(first.start());
            if let Some(b) = at.and_then(|at| out.get_mut(at)) {
                *b = b' ';
            }
        }
    }
    // ASCII words and separators: valid UTF-8 (else the slow way decides).
    String::from_utf8(out).ok()
}

/// The title text of `raw`: `.`, `_`, `#` and white space read as one space between
/// words, cut to [`MAX_TITLE_BYTES`]. ASCII text is read byte by byte (the common
/// case), the rest char by char: the same result.
fn clean_title(raw: &str) -> Option<String> {
    if raw.is_ascii() {
        let mut out = String::with_capacity(raw.len().min(MAX_TITLE_BYTES));
        let mut space = false;
        for &b in raw.as_bytes() {
            // ASCII white space as `char::is_whitespace` has it: 9 to 13 and 32.
            if matches!(b, b'.' | b'_' | b'#' | b' ' | b'\t'..=b'\r') {
                space = true;
                continue;
            }
            if out.len() + 2 > MAX_TITLE_BYTES {
                break;
            }
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(char::from(b));
        }
        return (!out.is_empty()).then_some(out);
    }
    clean_title_chars(raw)
}

/// [`clean_title`] for any text.
fn clean_title_chars(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(MAX_TITLE_BYTES));
    let mut space = false;
    for c in raw.chars() {
        let c = match c {
            '.' | '_' | '#' => ' ',
            c if c.is_whitespace() => ' ',
            c => c,
        };
        if c == ' ' {
            space = true;
            continue;
        }
        if out.len() + c.len_utf8() + 1 > MAX_TITLE_BYTES {
            break;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_titles_are_cleaned_as_any_text_is() {
        let alphabet: &[u8] = b"aZ09 ._#-\t\n\x0b\x0c\r\x1c\x1f\x7f!";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..3_000usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = if n % 10 == 0 { 150 + n % 450 } else { n % 40 };
            let raw: String = (0..len)
                .map(|i| {
                    let r = (x >> (i % 50)) as usize + i * 7;
                    char::from(alphabet[r % alphabet.len()])
                })
                .collect();
            assert_eq!(clean_title(&raw), clean_title_chars(&raw), "{raw:?}");
        }
        assert_eq!(clean_title(" a..b _#c\x0b"), Some("a b c".into()));
        assert_eq!(clean_title("._# \t"), None);
    }

    /// Where the quick title applies, it is what cleaning the text gives.
    #[test]
    fn quick_titles_are_clean_titles() {
        let pieces: &[&str] = &[
            "Word", "b", "x9", "ÉTÉ", "a\x0bb", "UP", " ", ".", "_", "#", "-", "+", ",", "  ",
            ". ", "\t", "~",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut quick = 0;
        for n in 0..5_000usize {
            let mut name = String::new();
            for _ in 0..1 + n % 12 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                name.push_str(pieces[(x % pieces.len() as u64) as usize]);
                name.push_str(pieces[((x >> 8) % 4) as usize]);
            }
            if n % 500 == 0 {
                name = name.repeat(20);
            }
            let mut buf = Tokens::new();
            tokenize(&name, &mut buf);
            let toks = buf.as_slice();
            let (Some(a), Some(b)) = (toks.first(), toks.last()) else {
                continue;
            };
            let raw = &name[a.start()..b.end()];
            if let Some(t) = quick_title(raw, toks) {
                quick += 1;
                assert_eq!(Some(t), clean_title(raw), "{name:?}");
            }
        }
        assert!(quick > 500, "{quick}");
    }

    #[test]
    fn movie_with_year_and_tags() {
        let p = parse("Inception.2010.1080p.BluRay.x264-SPARKS");
        assert_eq!(p.title.as_deref(), Some("Inception"));
        assert_eq!(p.year, Some(2010));
        assert_eq!(p.resolution, Some(Resolution::P1080));
        assert_eq!(p.source, Some(Source::BluRay));
        assert_eq!(p.video_codec, Some(VideoCodec::H264));
    }

    #[test]
    fn episode_markers_and_ranges() {
        let p = parse("The.Walking.Dead.S05E03.720p.WEB-DL.DDP5.1.H.264");
        assert_eq!(p.title.as_deref(), Some("The Walking Dead"));
        assert_eq!((p.seasons, p.episodes), (Some((5, 5)), Some((3, 3))));
        assert_eq!(p.source, Some(Source::Web));
        assert_eq!(p.audio, Some(AudioFormat::DolbyDigitalPlus));
        assert_eq!(p.video_codec, Some(VideoCodec::H264));
        let p = parse("Show.S01E01-E03.720p");
        assert_eq!(p.episodes, Some((1, 3)));
        let p = parse("Show S01E01E02 720p");
        assert_eq!(p.episodes, Some((1, 2)));
        let p = parse("Show.S01-S05.Complete");
        assert_eq!((p.seasons, p.episodes), (Some((1, 5)), None));
        let p = parse("Game.of.Thrones.1x03.HDTV.XviD");
        assert_eq!((p.seasons, p.episodes), (Some((1, 1)), Some((3, 3))));
        let p = parse("Friends Season 3 DVDRip");
        assert_eq!(
            (p.title.as_deref(), p.seasons),
            (Some("Friends"), Some((3, 3)))
        );
    }

    #[test]
    fn anime_absolute_numbers_and_daily_dates() {
        let p = parse("[SubsPlease] Jujutsu Kaisen - 12 (1080p) [ABCD1234].mkv");
        assert_eq!(p.title.as_deref(), Some("Jujutsu Kaisen"));
        assert_eq!(p.episodes, Some((12, 12)));
        assert!(p.absolute);
        let p = parse("[Judas] Attack on Titan - 01-25 (BD 1080p)");
        assert_eq!(p.episodes, Some((1, 25)));
        let p = parse("The Daily Show 2023.05.12 Guest 720p WEB h264-GRP");
        assert_eq!(
            (p.title.as_deref(), p.date, p.year),
            (Some("The Daily Show"), Some((2023, 5, 12)), None)
        );
    }

    #[test]
    fn years_at_the_start_belong_to_the_title() {
        let p = parse("2001.A.Space.Odyssey.1968.1080p");
        assert_eq!(
            (p.title.as_deref(), p.year),
            (Some("2001 A Space Odyssey"), Some(1968))
        );
        let p = parse("1984.1984.720p");
        assert_eq!((p.title.as_deref(), p.year), (Some("1984"), Some(1984)));
    }

    #[test]
    fn uhd_bluray_and_non_latin_titles() {
        let p = parse("Москва слезам не верит 1979 DVDRip XviD");
        assert_eq!(p.title.as_deref(), Some("Москва слезам не верит"));
        assert_eq!(
            (p.source, p.video_codec),
            (Some(Source::Dvd), Some(VideoCodec::Xvid))
        );
        let p = parse("INCEPTION.2010.2160P.UHD.BLURAY.X265-TERMINAL");
        assert_eq!(p.source, Some(Source::UhdBluRay));
        assert_eq!(p.resolution, Some(Resolution::P2160));
    }
}
