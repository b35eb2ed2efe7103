//! Text from users (decoded paths, names inside error messages) made safe for a log line: control
//! characters and Unicode line separators are escaped, so a file named `a\nINFO ...` cannot forge a
//! line of its own. Everything else is left as it is, so ordinary names stay readable.

use std::borrow::Cow;
use std::fmt::Write as _;

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\\')
}

pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_break_a_line() {
        assert!(matches!(escape("/plain/name é.txt"), Cow::Borrowed(_)));
        assert_eq!(
            escape("/d\nFORGED 200 user=\"admin\""),
            "/d\\nFORGED 200 user=\"admin\""
        );
        assert_eq!(
            escape("a\r\tb\u{1b}[31m\u{7f}"),
            "a\\r\\tb\\u{1b}[31m\\u{7f}"
        );
        assert_eq!(escape("x\u{2028}y\u{85}z"), "x\\u{2028}y\\u{85}z");
        // The escape character itself, so an escaped and a literal "\n" cannot be confused.
        assert_eq!(escape("a\\nb"), "a\\\\nb");
        assert!(!escape("a\nb\rc\u{2029}d").contains(['\n', '\r', '\u{2029}']));
    }
}
