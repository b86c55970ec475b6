//! Property tests of the classifier: any name and file list, of any script or length,
//! classifies without panicking, within its bounds, and the same way every time; names
//! made of release-name pieces in any order keep those bounds too.

use magnetar_core::classify::{classify, ContentKind, MAX_TITLE_BYTES};
use quickcheck::{quickcheck, Arbitrary, Gen};

/// Pieces release names are made of, with separators and brackets, so that random
/// names reach the matchers (season markers, dates, versions, tags, ranges).
const PIECES: &[&str] = &[
    "S01E02",
    "s1e2e3",
    "S01-S03",
    "E04",
    "-",
    " - ",
    ".",
    "_",
    " ",
    "[",
    "]",
    "(",
    ")",
    "1x02",
    "Season",
    "2",
    "2023",
    "05",
    "12",
    "23",
    "1080p",
    "4K",
    "1920x1080",
    "WEB",
    "DL",
    "H",
    "264",
    "x265",
    "UHD",
    "BluRay",
    "DTS",
    "HD",
    "MA",
    "v1",
    "10",
    "1",
    "Москва",
    "日本語",
    "é",
    "XXX",
    "FLAC",
    "epub",
    "iso",
    "x86",
    "64",
    "0123456789abcdef0123456789abcdef01234567",
    "#",
    "01",
    "99999999999",
    "S999E9999",
    "\u{0}",
    "\u{301}",
    "🎬",
];

#[derive(Clone, Debug)]
struct Input {
    name: String,
    files: Vec<(String, u64)>,
}

impl Arbitrary for Input {
    fn arbitrary(g: &mut Gen) -> Self {
        let name = if bool::arbitrary(g) {
            String::arbitrary(g)
        } else {
            let n = usize::arbitrary(g) % 40;
            (0..n).map(|_| *g.choose(PIECES).unwrap_or(&"")).collect()
        };
        let n = usize::arbitrary(g) % 6;
        let files = (0..n)
            .map(|_| {
                let ext = g.choose(&["mkv", "flac", "epub", "exe", "iso", "zip", "jpg", "", "m4b"]);
                (
                    format!("{}.{}", String::arbitrary(g), ext.unwrap_or(&"")),
                    u64::arbitrary(g),
                )
            })
            .collect();
        Input { name, files }
    }
}

fn check(input: Input) -> bool {
    let files = || input.files.iter().map(|(p, s)| (p.as_str(), *s));
    let a = classify(&input.name, files());
    let b = classify(&input.name, files());
    a == b
        && a.title
            .as_ref()
            .is_none_or(|t| t.len() <= MAX_TITLE_BYTES && !t.is_empty())
        && ContentKind::from_code(a.kind.code()) == Some(a.kind)
        && (2000..9000).contains(&a.torznab())
        && a.seasons.is_none_or(|(x, y)| x <= y)
        && a.episodes.is_none_or(|(x, y)| x <= y)
}

#[test]
fn any_input_classifies_within_bounds_and_deterministically() {
    quickcheck(check as fn(Input) -> bool);
}

#[test]
fn long_names_of_pieces_stay_bounded() {
    // 20,000 pieces: far past the name and token caps.
    let name: String = PIECES.iter().cycle().take(20_000).copied().collect();
    let files: Vec<(String, u64)> = (0..20_000)
        .map(|i| (format!("d/{i}.mkv"), u64::MAX))
        .collect();
    let input = Input { name, files };
    assert!(check(input));
}
