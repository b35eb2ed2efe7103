//! The directory listing as `d8 data` reads it (docs/development/D8-CLIENT.md §7.3): a stream
//! decoder that looks for the first string token `"items"` anywhere in the document, requires a `[`
//! after it, and yields each element as `{name, type}` while the body is still arriving — d8 starts
//! child downloads before the listing ends, and so must this client, or it would hide a server that
//! stalls a listing whose reader is busy. After the closing `]` the rest is ignored.

use serde::Deserialize;

/// One listing entry, as far as d8 looks at it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Item {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListingError {
    #[error("the listing has no \"items\" array")]
    NoItems,
    #[error("\"items\" is not followed by an array")]
    NotAnArray,
    #[error("a listing item is malformed: {0}")]
    BadItem(String),
    #[error("items loading is not completed (the listing ended inside the items array)")]
    Incomplete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Scanning tokens for the string `"items"`.
    Seek,
    /// After `"items"`: whitespace and `:` may come, then `[`.
    Array,
    /// Inside the array, between elements.
    Elements,
    /// After the closing `]`.
    Done,
}

/// Feed it the body chunk by chunk; it returns the items completed by each chunk.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The end (exclusive) of the JSON string starting at `start` (a `"`), if complete.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end (exclusive) of the JSON value starting at `start`, if complete. `at_end` says the
/// body is over (a bare number or literal then ends with the input).
fn value_end(b: &[u8], start: usize, at_end: bool) -> Option<usize> {
    match b[start] {
        b'"' => string_end(b, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let n = b[start..]
                .iter()
                .position(|c| matches!(c, b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t'));
            match n {
                Some(n) => Some(start + n),
                None if at_end => Some(b.len()),
                None => None,
            }
        }
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            state: State::Seek,
        }
    }

    /// Adds a chunk of the body; returns the items it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Item>, ListingError> {
        self.buf.extend_from_slice(chunk);
        self.run(false)
    }

    /// The body is over: fails unless the items array was complete.
    pub fn finish(mut self) -> Result<Vec<Item>, ListingError> {
        let items = self.run(true)?;
        match self.state {
            State::Done => Ok(items),
            State::Seek => Err(ListingError::NoItems),
            State::Array => Err(ListingError::NotAnArray),
            State::Elements => Err(ListingError::Incomplete),
        }
    }

    fn run(&mut self, at_end: bool) -> Result<Vec<Item>, ListingError> {
        let mut items = Vec::new();
        let mut i = 0usize;
        let b = std::mem::take(&mut self.buf);
        let consumed = loop {
            let Some(&c) = b.get(i) else { break i };
            match (self.state, c) {
                (_, b' ' | b'\n' | b'\r' | b'\t') => i += 1,
                (State::Seek, b'"') => match string_end(&b, i) {
                    Some(end) => {
                        let token: Option<String> = serde_json::from_slice(&b[i..end]).ok();
                        if token.as_deref() == Some("items") {
                            self.state = State::Array;
                        }
                        i = end;
                    }
                    None => break i,
                },
                (State::Seek, _) => i += 1,
                (State::Array, b':') => i += 1,
                (State::Array, b'[') => {
                    self.state = State::Elements;
                    i += 1;
                }
                (State::Array, _) => return Err(ListingError::NotAnArray),
                (State::Elements, b',') => i += 1,
                (State::Elements, b']') => {
                    self.state = State::Done;
                    i += 1;
                }
                (State::Elements, _) => match value_end(&b, i, at_end) {
                    Some(end) => {
                        let item: Item = serde_json::from_slice(&b[i..end])
                            .map_err(|e| ListingError::BadItem(e.to_string()))?;
                        items.push(item);
                        i = end;
                    }
                    None => break i,
                },
                // After the array: the rest of the document is not read.
                (State::Done, _) => i = b.len(),
            }
        };
        self.buf = b[consumed..].to_vec();
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, kind: &str) -> Item {
        Item {
            name: name.into(),
            kind: kind.into(),
        }
    }

    fn decode_in_chunks(body: &str, size: usize) -> Result<Vec<Item>, ListingError> {
        let mut d = Decoder::new();
        let mut all = Vec::new();
        for chunk in body.as_bytes().chunks(size) {
            all.extend(d.push(chunk)?);
        }
        all.extend(d.finish()?);
        Ok(all)
    }

    const SERVER: &str = r#"{"apiVersion":"v1","items":[{"name":"a b","type":"file","uri":"a%20b","attributes":{"size":3}},{"name":"sub","type":"dir","uri":"sub/","attributes":{"x":[1,{"y":"}]"}]}},{"name":"\u00e9t\u00e9 \"q\"","type":"link","targetPath":"t"}]}"#;

    #[test]
    fn the_server_shape_decodes_whatever_the_chunking() {
        let want = vec![
            item("a b", "file"),
            item("sub", "dir"),
            item("été \"q\"", "link"),
        ];
        for size in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(
                decode_in_chunks(SERVER, size),
                Ok(want.clone()),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn items_come_out_before_the_listing_ends() {
        let mut d = Decoder::new();
        let first = d
            .push(br#"{"apiVersion":"v1","items":[{"name":"a","type":"file"},{"name":"b""#)
            .expect("valid");
        assert_eq!(first, vec![item("a", "file")]);
        let rest = d.push(br#","type":"dir"}"#).expect("valid");
        assert_eq!(rest, vec![item("b", "dir")]);
        assert!(d.finish().is_err(), "the array never closed");
    }

    #[test]
    fn the_first_items_string_anywhere_starts_the_array() {
        // d8 scans the token stream: a value "items" before the key would be taken for it.
        let body = r#"{"kind":"items","items":[]}"#;
        assert_eq!(decode_in_chunks(body, 5), Err(ListingError::NotAnArray));
        let nested = r#"{"meta":{"items":[{"name":"x","type":"file"}]},"items":[]}"#;
        assert_eq!(decode_in_chunks(nested, 3), Ok(vec![item("x", "file")]));
        // After the array the rest is ignored, even garbage.
        let trailing = r#"{"items":[{"name":"x","type":"file"}],"more": nonsense"#;
        assert_eq!(decode_in_chunks(trailing, 4), Ok(vec![item("x", "file")]));
    }

    #[test]
    fn broken_listings_are_errors() {
        assert_eq!(
            decode_in_chunks(r#"{"apiVersion":"v1"}"#, 3),
            Err(ListingError::NoItems)
        );
        assert_eq!(
            decode_in_chunks(r#"{"items":[{"name":"x","type":"file"},"#, 3),
            Err(ListingError::Incomplete)
        );
        assert!(matches!(
            decode_in_chunks(r#"{"items":[{"name":1,"type":"file"}]}"#, 3),
            Err(ListingError::BadItem(_))
        ));
        assert!(matches!(
            decode_in_chunks(r#"{"items":[17]}"#, 2),
            Err(ListingError::BadItem(_))
        ));
    }
}
