//! Property tests of the rules-file parser and matcher: any text parses or is refused
//! with a position inside the file, never a panic; a match always names a rule of the
//! file; a listed word is found again in any name that contains it as a word.

use magnetar_core::classify::ContentKind;
use magnetar_core::filter::{Action, Rules};
use quickcheck::{quickcheck, Arbitrary, Gen, TestResult};

const PIECES: &[&str] = &[
    "drop",
    "hide",
    "words",
    "kinds",
    "infohashes",
    "adult",
    "label:",
    ":",
    ",",
    "\"",
    "#",
    " ",
    "\n",
    "\t",
    "é",
    "日本語",
    "0101010101010101010101010101010101010101",
    "x",
    "free money",
];

#[derive(Clone, Debug)]
struct Text(String);

impl Arbitrary for Text {
    fn arbitrary(g: &mut Gen) -> Self {
        if bool::arbitrary(g) {
            return Text(String::arbitrary(g));
        }
        let n = usize::arbitrary(g) % 30;
        Text((0..n).map(|_| *g.choose(PIECES).unwrap_or(&"")).collect())
    }
}

fn any_text(t: Text) -> bool {
    match Rules::parse(&t.0) {
        Err(e) => e.line >= 1 && e.column >= 1 && e.line as usize <= t.0.lines().count().max(1),
        Ok(rules) => ContentKind::ALL.iter().all(|k| {
            rules
                .check(&[1; 20], *k, &t.0, t.0.lines())
                .is_none_or(|v| rules.rules().contains(v.rule))
        }),
    }
}

/// A listed alphanumeric word is found in a name that has it between separators.
fn listed_word_is_found(word: String, before: String, after: String) -> TestResult {
    let word: String = word
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect();
    if word.is_empty() {
        return TestResult::discard();
    }
    let rules = Rules::parse(&format!("drop words {word}")).expect("a valid rule");
    let name = format!("{before} {word}.{after}");
    let v = rules.check(&[0; 20], ContentKind::Other, &name, []);
    TestResult::from_bool(v.is_some_and(|v| v.action() == Action::Drop))
}

#[test]
fn any_text_parses_or_is_refused_at_a_position_in_it() {
    quickcheck(any_text as fn(Text) -> bool);
}

#[test]
fn listed_words_are_found() {
    quickcheck(listed_word_is_found as fn(String, String, String) -> TestResult);
}
