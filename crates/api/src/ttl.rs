//! Go duration strings (`30s`, `5m`, `1h30m`, `1.5h`), as `d8` sends them in `spec.ttl`.

use std::time::Duration;

/// Why a ttl string is not a usable duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("ttl is empty; use a Go duration such as 30s, 5m or 1h30m")]
    Empty,
    #[error("ttl {0:?} is not a Go duration; use a value such as 30s, 5m or 1h30m")]
    Malformed(String),
    #[error("ttl {0:?} is zero; an export must live for some time after its last use")]
    Zero(String),
    #[error("ttl {0:?} is too large")]
    Overflow(String),
}

/// The CRD schema pattern that mirrors [`parse`]: one or more `<number><unit>` groups.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$";

/// Parses a positive Go duration. Negative values and a bare `0` are rejected: a ttl is an idle
/// timeout and must be positive.
pub fn parse(s: &str) -> Result<Duration, TtlError> {
    if s.is_empty() {
        return Err(TtlError::Empty);
    }
    let malformed = || TtlError::Malformed(s.to_owned());
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(malformed());
        }
        let unit_len = after_num
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, next) = after_num.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(malformed()),
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| TtlError::Overflow(s.to_owned()))?
        };
        let mut nanos = int
            .checked_mul(unit_nanos)
            .ok_or_else(|| TtlError::Overflow(s.to_owned()))?;
        // Fractions are scaled digit by digit so `1.5h` is exact and long fractions cannot overflow.
        let mut scale = unit_nanos;
        for d in frac_part.bytes() {
            scale /= 10;
            nanos += u128::from(d - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| TtlError::Overflow(s.to_owned()))?;
        rest = next;
    }
    if total_nanos == 0 {
        return Err(TtlError::Zero(s.to_owned()));
    }
    let secs =
        u64::try_from(total_nanos / 1_000_000_000).map_err(|_| TtlError::Overflow(s.to_owned()))?;
    // The remainder is below 1e9 and so always fits.
    let sub = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration the way Go prints it for whole seconds (`1h30m0s` → `1h30m`), for messages.
pub fn format(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    let h = secs / 3600;
    secs %= 3600;
    let m = secs / 60;
    secs %= 60;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_d8_sends() {
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2h45m30.5s"), Ok(Duration::from_millis(9_930_500)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn rejects_what_go_or_an_idle_timeout_cannot_mean() {
        for bad in [
            "", "5", "m", "5x", "-5m", "5m-", "1..5s", " 5m", "5 m", "5M", "1d", ".",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(parse("0s"), Err(TtlError::Zero("0s".into())));
        assert!(matches!(
            parse("99999999999999999999999h"),
            Err(TtlError::Overflow(_))
        ));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_secs(3661)), "1h1m1s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }
}
