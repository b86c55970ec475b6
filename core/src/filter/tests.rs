use super::*;

const IH: [u8; 20] = [0x01; 20];
const IH_HEX: &str = "0101010101010101010101010101010101010101";

fn parse_err(text: &str) -> (u32, u32, String) {
    let e = Rules::parse(text).expect_err("should be refused");
    (e.line, e.column, e.message)
}

#[test]
fn parses_every_form() {
    let text = format!(
        "# comment\n\nno-adult: hide kinds adult, software # trailing\n\
         drop infohashes {IH_HEX}\nspam: drop words casino, \"Free  Money\" lottery\n"
    );
    let r = Rules::parse(&text).expect("valid");
    assert_eq!(r.rules().len(), 3);
    assert_eq!(r.rules()[0].label.as_deref(), Some("no-adult"));
    assert_eq!(r.rules()[0].action, Action::Hide);
    assert_eq!(r.rules()[1].line, 4);
    assert_eq!(r.rules()[1].label, None);
    assert_eq!(r.rules()[2].to_string(), "spam (line 5)");
    assert!(Rules::parse("").expect("empty is valid").is_empty());
}

#[test]
fn errors_name_line_and_column() {
    assert_eq!(parse_err("hide kinds adult\nkeep words x").0, 2);
    let (l, c, m) = parse_err("hide kinds adult\n  keep words x");
    assert_eq!((l, c), (2, 3));
    assert!(m.contains("unknown action"), "{m}");
    let (l, c, m) = parse_err("drop colours red");
    assert_eq!((l, c), (1, 6));
    assert!(m.contains("unknown target"), "{m}");
    let (l, c, m) = parse_err("drop kinds adult, cartoons");
    assert_eq!((l, c), (1, 19));
    assert!(m.contains("unknown kind"), "{m}");
    let (l, c, _) = parse_err("drop infohashes 0123");
    assert_eq!((l, c), (1, 17));
    let (l, c, m) = parse_err("drop words \"open");
    assert_eq!((l, c), (1, 12));
    assert!(m.contains("unterminated"), "{m}");
    let (_, _, m) = parse_err("drop words");
    assert!(m.contains("nothing"), "{m}");
    // Bare words are items of their own: nine one-word items, not a phrase.
    assert!(Rules::parse("drop words a b c d e f g h i").is_ok());
    let (l, c, m) = parse_err("drop words \"a b c d e f g h i\"");
    assert_eq!((l, c), (1, 12));
    assert!(m.contains("at most"), "{m}");
    let (l, c, _) = parse_err("bad label!: drop words x");
    assert_eq!((l, c), (1, 1));
    // Columns count characters, not bytes.
    let (_, c, _) = parse_err("é: drop kinds nope");
    assert_eq!(c, 15);
}

#[test]
fn whole_words_and_phrases_on_names_and_paths() {
    let r = Rules::parse("spam: drop words casino, \"free money\"").expect("valid");
    let hit = |name: &str, paths: &[&str]| {
        r.check(&IH, ContentKind::Other, name, paths.iter().copied())
            .map(|v| v.reason)
    };
    assert_eq!(
        hit("Best.CASINO.Guide", &[]),
        Some(Reason::Words("casino".into()))
    );
    assert_eq!(hit("casinos guide", &[]), None, "whole words only");
    assert_eq!(
        hit("Get_Free-Money.now", &[]),
        Some(Reason::Words("free money".into()))
    );
    assert_eq!(
        hit("free and money", &[]),
        None,
        "a phrase is consecutive words"
    );
    assert_eq!(
        hit("clean", &["dir/free money.txt"]),
        Some(Reason::Words("free money".into()))
    );
    assert_eq!(
        hit("free", &["money"]),
        None,
        "phrases do not span the name and a path"
    );
}

#[test]
fn infohash_and_kind_rules_and_precedence() {
    let text = format!("a: hide kinds adult\nb: drop infohashes {IH_HEX}\nc: hide words x\n");
    let r = Rules::parse(&text).expect("valid");
    let v = r.check_infohash(&IH).expect("listed");
    assert_eq!(
        (v.rule.label.as_deref(), v.action()),
        (Some("b"), Action::Drop)
    );
    assert!(r.check_infohash(&[2; 20]).is_none());
    // Drop wins over hide, whatever the order of the lines.
    let v = r.check(&IH, ContentKind::Adult, "x", []).expect("matched");
    assert_eq!(
        (v.rule.label.as_deref(), v.reason),
        (Some("b"), Reason::Infohash)
    );
    // Among hides, the earliest line.
    let v = r
        .check(&[2; 20], ContentKind::Adult, "x", [])
        .expect("matched");
    assert_eq!(
        (v.rule.label.as_deref(), v.reason),
        (Some("a"), Reason::Kind(ContentKind::Adult))
    );
    let v = r
        .check(&[2; 20], ContentKind::Movie, "x", [])
        .expect("matched");
    assert_eq!(v.rule.label.as_deref(), Some("c"));
    assert!(r.check(&[2; 20], ContentKind::Movie, "y", []).is_none());
}

#[test]
fn matching_is_bounded_for_huge_inputs() {
    let r = Rules::parse("drop words \"a a a a a a a b\"").expect("valid");
    // 100,000 'a's: at most MAX_WORDS words, each trying at most 8 phrase lengths.
    let name = "a ".repeat(100_000);
    assert!(r.check(&IH, ContentKind::Other, &name, []).is_none());
    let big = "x".repeat(MAX_FILE_BYTES + 1);
    assert!(Rules::parse(&big).is_err());
}
