//! A strict JSON reader for the webhook's fast path.
//!
//! An API server sends the same shape of AdmissionReview every time, most of it (user info,
//! managed fields, options) of no interest to the rules. serde_json reads such a body in
//! two layers: its tokenizer, then the derived visitors of every struct it fills; for a
//! typical 2 KB review the second layer costs as much as the first. This reader walks the
//! text once, checks every byte of it against the JSON grammar (RFC 8259) as serde_json
//! does, skips what the rules do not read, and builds the parts they do read
//! ([`Json`] values in the request's arena, their strings borrowed from the text).
//!
//! It never decides an error. Whenever anything is unusual (invalid JSON, an unexpected
//! type, a repeated field, a key with escapes where a field name is expected, nesting over
//! [`MAX_DEPTH`]) it gives up with `None`, and the caller parses the text again with
//! serde_json, which then gives the answer or the error message it always gave. So an
//! accepted text must be one serde_json accepts with the same result; the tests in
//! `review.rs` check exactly that, on the usual reviews and on about 100,000 broken ones.
//! Strings with `\u` escapes and numbers are rare in a review; the values the rules read
//! are handed to serde_json itself, so their values and errors are serde_json's by
//! construction.
//!
//! The hot loops are functions of the byte slice and an index (the cursor stays in a
//! register), and strings are scanned eight bytes at a time in safe code (SWAR).
//!
//! In the server this code is fetched afresh for most reviews (TLS and HTTP run in
//! between and take the CPU's instruction cache), so what a usual review runs through is
//! kept small: shared out-of-line functions rather than copies inlined at each call site,
//! and the rare paths in functions of their own.

use super::json::{Json, Members, Object};
use bumpalo::Bump;

/// Deeper nesting is left to serde_json (whose own limit is 128) to judge.
const MAX_DEPTH: usize = 100;

/// `None`: the fast path gives up; parse with serde_json instead.
pub(super) type Fast<T> = Option<T>;

/// A cursor over JSON text, building values in an arena (see [`super::json`]).
pub(super) struct Reader<'a> {
    text: &'a str,
    /// Where built values and unescaped strings go.
    arena: &'a Bump,
    pos: usize,
    /// How deep the value at the cursor is nested (the whole text is at 0), for
    /// [`MAX_DEPTH`]: one more inside each array and object being read.
    depth: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `word` that is a quote, a backslash or below 0x20 (a
/// control character, which JSON strings may not hold raw). The lowest set bit is exact;
/// bits above it may be spurious, so only the first is used.
#[inline(always)]
fn special_bytes(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (zero(quote) | zero(backslash) | (word.wrapping_sub(ONES * 0x20) & !word)) & HIGH
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline(always)]
fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes
        .get(i)
        .is_some_and(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        i += 1;
    }
    i
}

/// With `i` just after a string's opening quote: the index just after its closing quote,
/// and whether it has escapes. Escapes are checked as serde_json checks a string it skips:
/// one of `"\/bfnrt` or `u` and four hex digits.
#[inline(always)]
fn string_end(bytes: &[u8], mut i: usize) -> Fast<(usize, bool)> {
    let mut escaped = false;
    loop {
        while let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let special = special_bytes(u64::from_le_bytes(word));
            if special != 0 {
                i += (special.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        while bytes
            .get(i)
            .is_some_and(|b| !matches!(b, b'"' | b'\\' | 0..=0x1f))
        {
            i += 1;
        }
        match bytes.get(i)? {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                match bytes.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        let hex = bytes.get(i + 2..i + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        i += 6;
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

/// The items of an array or object whose opening bracket ends just before `i`, up to and
/// including `close`: `item` reads one from the index it is given (for an object a member:
/// key, colon and value) and returns the index after it; a comma or `close` must follow.
/// Returns the index after `close`.
#[inline(always)]
fn items(
    bytes: &[u8],
    i: usize,
    close: u8,
    mut item: impl FnMut(usize) -> Fast<usize>,
) -> Fast<usize> {
    let mut i = skip_ws(bytes, i);
    if *bytes.get(i)? == close {
        return Some(i + 1);
    }
    loop {
        i = skip_ws(bytes, item(i)?);
        match *bytes.get(i)? {
            b',' => i += 1,
            b if b == close => return Some(i + 1),
            _ => return None,
        }
    }
}

/// With `i` at an object member (after whitespace): the index just after its key and
/// colon, where the value begins. The key is checked as a skipped string.
#[inline(always)]
fn member_value(bytes: &[u8], i: usize) -> Fast<usize> {
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    let (i, _) = string_end(bytes, i + 1)?;
    let i = skip_ws(bytes, i);
    if bytes.get(i) != Some(&b':') {
        return None;
    }
    Some(i + 1)
}

/// The index after the value that starts at `i` (after whitespace), checked, for a value
/// nested `depth` deep.
///
/// A loop over the tokens rather than a recursion over the values (skipping the whole of
/// `bench/review.json` took 1.1 us instead of 1.3): the open arrays and objects are one
/// bit each in `objects`, set for an object, at the position of their nesting level.
fn skip_value(bytes: &[u8], i: usize, depth: usize) -> Fast<usize> {
    let mut objects: u128 = 0;
    // How many arrays and objects are open; `MAX_DEPTH` keeps it under 128.
    let mut open = 0usize;
    let mut i = i;
    'value: loop {
        if depth + open > MAX_DEPTH {
            return None;
        }
        i = skip_ws(bytes, i);
        match *bytes.get(i)? {
            b'"' => i = string_end(bytes, i + 1)?.0,
            b'{' => {
                i = skip_ws(bytes, i + 1);
                if bytes.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    objects |= 1 << open;
                    open += 1;
                    i = member_value(bytes, i)?;
                    continue 'value;
                }
            }
            b'[' => {
                i = skip_ws(bytes, i + 1);
                if bytes.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    objects &= !(1 << open);
                    open += 1;
                    continue 'value;
                }
            }
            _ => i = scalar_end(bytes, i)?.0,
        }
        // After a value: a comma and the next one, or the closing of what holds it.
        loop {
            if open == 0 {
                return Some(i);
            }
            i = skip_ws(bytes, i);
            let in_object = (objects >> (open - 1)) & 1 == 1;
            match *bytes.get(i)? {
                b',' => {
                    i += 1;
                    if in_object {
                        i = member_value(bytes, skip_ws(bytes, i))?;
                    }
                    continue 'value;
                }
                b'}' if in_object => open -= 1,
                b']' if !in_object => open -= 1,
                _ => return None,
            }
            i += 1;
        }
    }
}

/// The index after the scalar that starts at `i` (`true`, `false`, `null` or a number by
/// the JSON grammar), and which it is.
fn scalar_end(bytes: &[u8], i: usize) -> Fast<(usize, ScalarKind)> {
    let rest = bytes.get(i..)?;
    for (word, kind) in [
        (&b"true"[..], ScalarKind::True),
        (b"false", ScalarKind::False),
        (b"null", ScalarKind::Null),
    ] {
        if rest.starts_with(word) {
            return Some((i + word.len(), kind));
        }
    }
    let mut i = i;
    let digits = |i: &mut usize| {
        let from = *i;
        while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    match bytes.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => {
            digits(&mut i);
        }
        _ => return None,
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    Some((i, ScalarKind::Number))
}

#[derive(Clone, Copy)]
enum ScalarKind {
    True,
    False,
    Null,
    Number,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub(super) fn new(text: &'a str, arena: &'a Bump) -> Self {
        Reader {
            text,
            arena,
            pos: 0,
            depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after any whitespace, not consumed.
    #[inline]
    pub(super) fn peek(&mut self) -> Option<u8> {
        self.pos = skip_ws(self.bytes(), self.pos);
        self.bytes().get(self.pos).copied()
    }

    /// Consumes `byte` (after whitespace), or gives up.
    #[inline]
    pub(super) fn expect(&mut self, byte: u8) -> Fast<()> {
        if self.peek()? != byte {
            return None;
        }
        self.pos += 1;
        Some(())
    }

    /// True at the end of the text (after whitespace).
    pub(super) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Consumes `null` if it comes next.
    pub(super) fn null(&mut self) -> bool {
        if self.peek() == Some(b'n') && self.bytes()[self.pos..].starts_with(b"null") {
            self.pos += 4;
            return true;
        }
        false
    }

    /// A string's raw contents (between the quotes, escapes as written) and whether it has
    /// escapes (checked by [`string_end`]).
    fn raw_string(&mut self) -> Fast<(&'a str, bool)> {
        self.expect(b'"')?;
        let start = self.pos;
        let (end, escaped) = string_end(self.bytes(), start)?;
        self.pos = end;
        // The quotes are ASCII, so both ends are character boundaries.
        Some((self.text.get(start..end - 1)?, escaped))
    }

    /// A string value: borrowed from the text when it has no escapes, else unescaped into
    /// the arena. Single-character escapes (`\\.` in a regex, say) are unescaped here; a
    /// `\u` escape is left to serde_json, so surrogate pairs and lone surrogates are judged
    /// as always.
    #[inline(never)]
    pub(super) fn string(&mut self) -> Fast<&'a str> {
        let (raw, escaped) = self.raw_string()?;
        if !escaped {
            return Some(raw);
        }
        self.unescape(raw)
    }

    /// The value of `raw`, a string just read (the cursor is after its closing quote)
    /// that has escapes, written into the arena. Out of line: most strings have none.
    #[inline(never)]
    fn unescape(&self, raw: &'a str) -> Fast<&'a str> {
        let mut out = bumpalo::collections::String::with_capacity_in(raw.len(), self.arena);
        let mut rest = raw;
        while let Some(at) = rest.bytes().position(|b| b == b'\\') {
            out.push_str(rest.get(..at)?);
            out.push(match rest.as_bytes().get(at + 1)? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                _ => {
                    // `\u`: the quoted text is the `raw.len() + 2` bytes ending at the cursor.
                    let quoted = self.text.get(self.pos - raw.len() - 2..self.pos)?;
                    let value = serde_json::from_str::<String>(quoted).ok()?;
                    return Some(self.arena.alloc_str(&value));
                }
            });
            // The escape is two ASCII bytes, so this is a character boundary.
            rest = rest.get(at + 2..)?;
        }
        out.push_str(rest);
        Some(out.into_bump_str())
    }

    /// A string or null (absent members are the caller's business).
    pub(super) fn opt_string(&mut self) -> Fast<Option<&'a str>> {
        if self.null() {
            return Some(None);
        }
        self.string().map(Some)
    }

    /// Walks an object's members: `member` gets each key and must consume its value. Keys
    /// with escapes give up: a derived struct compares field names after unescaping.
    ///
    /// One function for every object walked (the member reader is called through a
    /// pointer): a copy of this loop inlined at each call site made the code the handler
    /// runs per review larger than the CPU's instruction cache (see the module docs).
    #[inline(never)]
    pub(super) fn object(
        &mut self,
        member: &mut dyn FnMut(&mut Self, &'a str) -> Fast<()>,
    ) -> Fast<()> {
        self.expect(b'{')?;
        self.nested_items(b'}', |r| {
            let (key, escaped) = r.raw_string()?;
            if escaped {
                return None;
            }
            r.expect(b':')?;
            member(r, key)
        })
    }

    /// [`items`], with `item` reading through the reader.
    #[inline(always)]
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Fast<()>) -> Fast<()> {
        let bytes = self.bytes();
        self.pos = items(bytes, self.pos, close, |i| {
            self.pos = i;
            item(self)?;
            Some(self.pos)
        })?;
        Some(())
    }

    /// [`Reader::items`] of an array or object: the values inside are one level deeper.
    fn nested_items(&mut self, close: u8, item: impl FnMut(&mut Self) -> Fast<()>) -> Fast<()> {
        self.depth += 1;
        let done = self.items(close, item);
        self.depth -= 1;
        done
    }

    /// Skips one value of any kind, checking it.
    pub(super) fn skip(&mut self) -> Fast<()> {
        self.pos = skip_value(self.bytes(), self.pos, self.depth)?;
        Some(())
    }

    /// One value, built in the reader's arena: strings and keys borrow from the text when
    /// they have no escapes; numbers are read by serde_json (same value, same range errors).
    pub(super) fn value(&mut self) -> Fast<Json<'a>> {
        if self.depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(Json::String),
            b'{' => {
                let mut members = Members::with_capacity_in(8, self.arena);
                self.pos += 1;
                self.nested_items(b'}', |r| {
                    let key = r.string()?;
                    r.expect(b':')?;
                    members.push((key, r.value()?));
                    Some(())
                })?;
                Some(Json::Object(Object::from_members(members)))
            }
            b'[' => {
                let mut elements = bumpalo::collections::Vec::with_capacity_in(4, self.arena);
                self.pos += 1;
                self.nested_items(b']', |r| {
                    elements.push(r.value()?);
                    Some(())
                })?;
                Some(Json::Array(elements.into_bump_slice()))
            }
            _ => {
                let start = self.pos;
                let (end, kind) = scalar_end(self.bytes(), start)?;
                self.pos = end;
                match kind {
                    ScalarKind::True => Some(Json::Bool(true)),
                    ScalarKind::False => Some(Json::Bool(false)),
                    ScalarKind::Null => Some(Json::Null),
                    ScalarKind::Number => self
                        .text
                        .get(start..end)
                        .and_then(|text| serde_json::from_str(text).ok())
                        .map(Json::Number),
                }
            }
        }
    }
}

/// Reads a whole text as one JSON value and nothing else (for tests of the reader itself).
#[cfg(test)]
pub(super) fn value_of<'a>(text: &'a str, arena: &'a Bump) -> Fast<Json<'a>> {
    let mut r = Reader::new(text, arena);
    let v = r.value()?;
    r.at_end().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text the reader accepts, serde_json accepts with the same value.
    fn agrees(text: &str) -> bool {
        let arena = Bump::new();
        let ours = value_of(text, &arena);
        let theirs = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .map(|v| Json::from_value(&v, &arena));
        match (&ours, &theirs) {
            (Some(a), Some(b)) => assert_eq!(a, b, "{text:?}"),
            (Some(a), None) => panic!("reader accepted {text:?} as {a:?}; serde_json refuses it"),
            _ => {}
        }
        // Skipping the text checks the same grammar; serde_json's own skipping
        // (`IgnoredAny`) is the oracle there.
        let bytes = text.as_bytes();
        let skipped = skip_value(bytes, 0, 0).is_some_and(|end| skip_ws(bytes, end) == bytes.len());
        let ignored = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
        assert_eq!(skipped, ignored, "skipping {text:?}");
        ours.is_some()
    }

    #[test]
    fn valid_json_is_read_as_serde_json_reads_it() {
        for text in [
            r#"{"a":"b","c":[1,-2,3.5,1e3,-0,0.5E-2,true,false,null],"d":{}}"#,
            " { \"z\" : [ ] , \"a\" :\t{ \"x\" : \"\" } }\n",
            r#"{"k":"^.*\\.sig$","e":"\u00e9\"\/\b\f\n\r\t","long":"0123456789abcdefghijklmnopqrstuvwxyz"}"#,
            r#"{"dup":1,"dup":2,"b":"é — ✓ 😀 text past eight bytes"}"#,
            r#"{"s":"a\\b\"c\/d\be\ff\ng\rh\ti\\","t":"\\\\","u":"\\u0041 \u0041"}"#,
            r#"[18446744073709551615, -9223372036854775808, 123456789012345678901234567890]"#,
            r#""just a string""#,
            "0",
        ] {
            assert!(agrees(text), "reader gave up on valid {text:?}");
        }
    }

    #[test]
    fn invalid_json_is_never_accepted() {
        for text in [
            "",
            "{",
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"[1 2]"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{a:1}"#,
            "01",
            "-",
            "1.",
            "1e",
            "1e+",
            ".5",
            "+1",
            r#""unterminated"#,
            "\"raw \u{1} control\"",
            "\"raw\nnewline\"",
            r#""bad \x escape""#,
            r#""bad \u12 escape""#,
            r#""lone \ud800 surrogate""#,
            r#"{"a":1} trailing"#,
            r#"{"a":1}{}"#,
            "1e400",
            "[1] x",
        ] {
            assert!(!agrees(text), "reader accepted invalid {text:?}");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde_json() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 5), "]".repeat(MAX_DEPTH + 5));
        assert!(value_of(&deep, &Bump::new()).is_none());
        let fine = format!("{}{}", "[".repeat(50), "]".repeat(50));
        assert!(agrees(&fine));
        // The limit is on the value's depth: the outermost is at 0, so MAX_DEPTH + 1
        // nested arrays or objects are read and one more is not, by both paths.
        for (open, innermost, close) in [("[", "[]", "]"), ("{\"k\":", "{}", "}")] {
            for (levels, read) in [(MAX_DEPTH + 1, true), (MAX_DEPTH + 2, false)] {
                let text = format!(
                    "{}{innermost}{}",
                    open.repeat(levels - 1),
                    close.repeat(levels - 1)
                );
                let skipped = skip_value(text.as_bytes(), 0, 0) == Some(text.len());
                assert_eq!(skipped, read, "skipping {levels} levels of {open}");
                assert_eq!(
                    value_of(&text, &Bump::new()).is_some(),
                    read,
                    "reading {levels} levels of {open}"
                );
            }
        }
    }

    #[test]
    fn special_bytes_finds_the_first_quote_backslash_or_control_byte() {
        for (i, b) in [b'"', b'\\', 0u8, 0x1f].into_iter().enumerate() {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = b;
                let found = special_bytes(u64::from_le_bytes(word));
                assert_eq!(found.trailing_zeros() / 8, at as u32, "case {i} at {at}");
            }
        }
        for word in [*b"abcdefgh", *b"\x20\x7f\xff\x80 ~!#", *b"ABCDEFGH"] {
            assert_eq!(special_bytes(u64::from_le_bytes(word)), 0, "{word:?}");
        }
    }
}
