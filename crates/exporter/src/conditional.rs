//! Conditional requests (RFC 9110 §13) in the order Go's `checkPreconditions` evaluates them.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_http::header::HttpDate;

/// The request's conditional headers, raw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_range: Option<&'a str>,
}

/// What the server knows about the representation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Validators<'a> {
    /// A strong entity tag including its quotes.
    pub etag: Option<&'a str>,
    /// Last modification, whole seconds since the epoch; `None` when meaningless (block devices).
    pub last_modified: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve; `use_range` is false when `If-Range` did not match, so the full content goes out.
    Proceed {
        use_range: bool,
    },
    NotModified,
    PreconditionFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    None,
    True,
    False,
}

/// Only GET and HEAD reach this module, so a failed `If-None-Match` always means 304.
pub fn evaluate(c: &Conditions<'_>, v: &Validators<'_>) -> Decision {
    let mut ch = check_if_match(c.if_match, v.etag);
    if ch == Cond::None {
        ch = check_if_unmodified_since(c.if_unmodified_since, v.last_modified);
    }
    if ch == Cond::False {
        return Decision::PreconditionFailed;
    }
    match check_if_none_match(c.if_none_match, v.etag) {
        Cond::False => return Decision::NotModified,
        Cond::None => {
            if check_if_modified_since(c.if_modified_since, v.last_modified) == Cond::False {
                return Decision::NotModified;
            }
        }
        Cond::True => {}
    }
    let use_range = check_if_range(c.if_range, v) != Cond::False;
    Decision::Proceed { use_range }
}

fn check_if_match(header: Option<&str>, etag: Option<&str>) -> Cond {
    let Some(mut buf) = header.map(str::trim) else {
        return Cond::None;
    };
    if buf.is_empty() {
        return Cond::None;
    }
    loop {
        buf = buf.trim_start_matches([' ', '\t', ',']);
        if buf.is_empty() {
            return Cond::False;
        }
        if buf.starts_with('*') {
            return Cond::True;
        }
        let Some((tag, rest)) = scan_etag(buf) else {
            return Cond::False;
        };
        if let Some(ours) = etag
            && strong_match(tag, ours)
        {
            return Cond::True;
        }
        buf = rest;
    }
}

fn check_if_none_match(header: Option<&str>, etag: Option<&str>) -> Cond {
    let Some(mut buf) = header.map(str::trim) else {
        return Cond::None;
    };
    if buf.is_empty() {
        return Cond::None;
    }
    loop {
        buf = buf.trim_start_matches([' ', '\t', ',']);
        if buf.is_empty() {
            return Cond::True;
        }
        if buf.starts_with('*') {
            return Cond::False;
        }
        let Some((tag, rest)) = scan_etag(buf) else {
            return Cond::True;
        };
        if let Some(ours) = etag
            && weak_match(tag, ours)
        {
            return Cond::False;
        }
        buf = rest;
    }
}

fn check_if_unmodified_since(header: Option<&str>, modified: Option<i64>) -> Cond {
    let (Some(h), Some(m)) = (header, modified) else {
        return Cond::None;
    };
    match parse_http_date(h) {
        Some(t) if m <= t => Cond::True,
        Some(_) => Cond::False,
        None => Cond::None,
    }
}

fn check_if_modified_since(header: Option<&str>, modified: Option<i64>) -> Cond {
    let (Some(h), Some(m)) = (header, modified) else {
        return Cond::None;
    };
    if m <= 0 {
        return Cond::None;
    }
    match parse_http_date(h) {
        Some(t) if m <= t => Cond::False,
        Some(_) => Cond::True,
        None => Cond::None,
    }
}

fn check_if_range(header: Option<&str>, v: &Validators<'_>) -> Cond {
    let Some(h) = header.map(str::trim) else {
        return Cond::None;
    };
    if h.is_empty() {
        return Cond::None;
    }
    if let Some((tag, _)) = scan_etag(h) {
        return match v.etag {
            Some(ours) if strong_match(tag, ours) => Cond::True,
            _ => Cond::False,
        };
    }
    match (v.last_modified, parse_http_date(h)) {
        (Some(m), Some(t)) if m == t => Cond::True,
        _ => Cond::False,
    }
}

/// Splits one entity tag (`"x"` or `W/"x"`) off the front of `s`.
fn scan_etag(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let start = if s.starts_with("W/") { 2 } else { 0 };
    let rest = &s[start..];
    if !rest.starts_with('"') {
        return None;
    }
    let bytes = rest.as_bytes();
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            b'"' => return Some((&s[..start + i + 1], &s[start + i + 1..])),
            0x21 | 0x23..=0x7e | 0x80..=0xff => {}
            _ => return None,
        }
    }
    None
}

fn strong_match(a: &str, b: &str) -> bool {
    a == b && !a.starts_with("W/")
}

fn weak_match(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

pub fn parse_http_date(s: &str) -> Option<i64> {
    let date = HttpDate::from_str(s.trim()).ok()?;
    let t: SystemTime = date.into();
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// IMF-fixdate text of `secs` (empty past year 9999); see [`crate::headers::write_http_date`].
pub fn format_http_date(secs: i64) -> String {
    let mut out = Vec::with_capacity(29);
    crate::headers::write_http_date(&mut out, secs);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"abc\"";
    const MOD: i64 = 1_700_000_000;

    fn v() -> Validators<'static> {
        Validators {
            etag: Some(TAG),
            last_modified: Some(MOD),
        }
    }

    fn date(secs: i64) -> String {
        format_http_date(secs)
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_http_date(&date(MOD)), Some(MOD));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn none_match_and_modified_since() {
        let c = Conditions {
            if_none_match: Some(TAG),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::NotModified);
        let c = Conditions {
            if_none_match: Some("W/\"abc\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::NotModified);
        let c = Conditions {
            if_none_match: Some("\"x\", \"abc\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::NotModified);
        let c = Conditions {
            if_none_match: Some("*"),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::NotModified);
        let c = Conditions {
            if_none_match: Some("\"other\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: true });
        // If-None-Match present: If-Modified-Since is ignored.
        let d = date(MOD);
        let c = Conditions {
            if_none_match: Some("\"other\""),
            if_modified_since: Some(&d),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: true });
        let c = Conditions {
            if_modified_since: Some(&d),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::NotModified);
        let older = date(MOD - 1);
        let c = Conditions {
            if_modified_since: Some(&older),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: true });
        let c = Conditions {
            if_modified_since: Some("nonsense"),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: true });
    }

    #[test]
    fn match_and_unmodified_since() {
        let c = Conditions {
            if_match: Some(TAG),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: true });
        let c = Conditions {
            if_match: Some("W/\"abc\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::PreconditionFailed);
        let c = Conditions {
            if_match: Some("*"),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: true });
        let c = Conditions {
            if_match: Some("\"zzz\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::PreconditionFailed);
        let older = date(MOD - 10);
        let c = Conditions {
            if_unmodified_since: Some(&older),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::PreconditionFailed);
        let same = date(MOD);
        let c = Conditions {
            if_unmodified_since: Some(&same),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: true });
    }

    #[test]
    fn if_range() {
        let c = Conditions {
            if_range: Some(TAG),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: true });
        let c = Conditions {
            if_range: Some("W/\"abc\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: false });
        let c = Conditions {
            if_range: Some("\"old\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: false });
        let d = date(MOD);
        let c = Conditions {
            if_range: Some(&d),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: true });
        let d = date(MOD + 1);
        let c = Conditions {
            if_range: Some(&d),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, &v()), Decision::Proceed { use_range: false });
        let no_date = Validators {
            etag: Some(TAG),
            last_modified: None,
        };
        let c = Conditions {
            if_range: Some(&d),
            ..Default::default()
        };
        assert_eq!(
            evaluate(&c, &no_date),
            Decision::Proceed { use_range: false }
        );
    }
}
