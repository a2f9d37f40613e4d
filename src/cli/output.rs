//! The operator commands' shared output: what they print from the database or from Temporal, made safe for a
//! terminal. A row's `last_error`, `user_pk` or a workflow id can be written by whoever can
//! write a row or start a workflow; printed as stored, an escape sequence in it would reach
//! the operator's terminal (clear the screen, retitle the window, hide lines). Every value of
//! the text output of `status`, `replay`, `cancel` and `replay-histories` goes through
//! [`escape`], and their `--json` output through [`json`] (README, "The command line").

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that must not reach a terminal as they are: C0 controls (newline and tab
/// included: every printed field is one line of a table), DEL, C1 controls, and the
/// Unicode controls that reorder or split what a terminal shows (bidirectional overrides
/// and isolates, line and paragraph separators).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `value` with every [`is_unsafe`] character written as `\u{1b}` (Rust's notation);
/// borrowed when there is none, which is nearly always.
pub fn escape(value: &str) -> Cow<'_, str> {
    if !value.chars().any(is_unsafe) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        if is_unsafe(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `value` as pretty JSON in which every [`is_unsafe`] character is a `\uXXXX` escape.
/// serde_json escapes C0 controls only; DEL, C1 controls (a UTF-8 terminal may take U+009B
/// for CSI) and the bidirectional controls it writes raw. Outside strings, JSON text is
/// ASCII without controls, so replacing them anywhere keeps the document valid and equal.
pub fn json(value: &serde_json::Value) -> String {
    let text = format!("{value:#}");
    if !text.chars().any(is_unsafe) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) && c != '\n' {
            // Pretty-printing's own newlines are the only raw controls serde_json writes.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped() {
        assert_eq!(
            escape("\u{1b}[2J\u{1b}]0;pwned\u{7}"),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(escape("a\nb\tc\rd"), "a\\u{a}b\\u{9}c\\u{d}d");
        assert_eq!(escape("\u{7f}\u{9b}\u{85}"), "\\u{7f}\\u{9b}\\u{85}");
        assert_eq!(escape("x\u{202e}y\u{2066}"), "x\\u{202e}y\\u{2066}");
        assert!(matches!(escape("ValueError: ça va"), Cow::Borrowed(_)));
        assert_eq!(escape("ValueError: ça va"), "ValueError: ça va");
    }

    #[test]
    fn json_escapes_what_serde_json_writes_raw() {
        let value = serde_json::json!({"e": "\u{1b}[2J\u{7f}\u{9b}\u{202e}é\n"});
        let text = json(&value);
        assert!(!text.chars().any(|c| is_unsafe(c) && c != '\n'), "{text}");
        assert!(
            text.contains("\\u001b[2J\\u007f\\u009b\\u202eé\\n"),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back, value);
    }
}
