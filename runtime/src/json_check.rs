//! A one-pass check that a document body is exactly one JSON value (RFC 8259) without building it: the
//! host checks every document a plugin emits, so this runs once per document on the hot path, where a general
//! parser (serde_json's `IgnoredAny`) spent most of the host's validation time. It also says whether the
//! text has line breaks between tokens, which a bulk request's NDJSON cannot carry.

/// Nesting deeper than this is refused: Elasticsearch's JSON parser (Jackson) refuses more than 1,000
/// levels, so a deeper document could only fail later, in the store.
const MAX_DEPTH: usize = 1000;

/// Checks that `text` is one JSON value with optional surrounding whitespace. `Ok(true)` when a line break
/// appears between tokens (a raw line break inside a string is invalid JSON and refused).
pub(crate) fn check(text: &[u8]) -> Result<bool, String> {
    let mut s = Scan {
        b: text,
        i: 0,
        breaks: false,
    };
    s.value()?;
    s.ws();
    if s.i != text.len() {
        return Err(s.err("trailing characters after the value"));
    }
    Ok(s.breaks)
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    breaks: bool,
}

/// Bytes that end the plain run of a string: `"`, `\` and control characters.
const fn special_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = c < 0x20 || c == b'"' as usize || c == b'\\' as usize;
        c += 1;
    }
    t
}
static SPECIAL: [bool; 256] = special_table();

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes of `w` is a control character, `"` or `\` (exact, SWAR).
#[inline]
fn has_special(w: u64) -> bool {
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let e = w ^ (ONES * u64::from(b'\\'));
    let escape = e.wrapping_sub(ONES) & !e;
    (control | quote | escape) & HIGH != 0
}

impl Scan<'_> {
    fn err(&self, what: &str) -> String {
        format!("{what} at byte {}", self.i)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' => {}
                b'\n' | b'\r' => self.breaks = true,
                _ => return,
            }
            self.i += 1;
        }
    }

    /// A string; `self.i` is at its opening quote.
    fn string(&mut self) -> Result<(), String> {
        self.i += 1;
        loop {
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                if has_special(u64::from_le_bytes(w)) {
                    break;
                }
                self.i += 8;
            }
            while let Some(&c) = self.b.get(self.i) {
                if SPECIAL[c as usize] {
                    break;
                }
                self.i += 1;
            }
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.err("invalid \\u escape"));
                            }
                            self.i += 5;
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in a string")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), String> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), String> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected a value"))
        }
    }

    /// An object key and its colon; `self.i` is at the key after whitespace.
    fn key(&mut self) -> Result<(), String> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string key"));
        }
        self.string()?;
        self.ws();
        if self.peek() != Some(b':') {
            return Err(self.err("expected `:`"));
        }
        self.i += 1;
        Ok(())
    }

    /// One value, nested containers iteratively (`objects` has bit d set when level d is an object).
    fn value(&mut self) -> Result<(), String> {
        let mut depth = 0usize;
        let mut objects = [0u64; MAX_DEPTH.div_ceil(64)];
        'value: loop {
            self.ws();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if depth == MAX_DEPTH {
                        return Err(self.err("nested too deeply"));
                    }
                    let object = open == b'{';
                    let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                    if object {
                        objects[word] |= bit;
                    } else {
                        objects[word] &= !bit;
                    }
                    depth += 1;
                    self.i += 1;
                    self.ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        depth -= 1;
                    } else {
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.err("expected a value")),
            }
            // After a value: close containers until one continues with `,`.
            while depth > 0 {
                self.ws();
                let object = objects[(depth - 1) / 64] & (1 << ((depth - 1) % 64)) != 0;
                match (object, self.peek()) {
                    (_, Some(b',')) => {
                        self.i += 1;
                        if object {
                            self.ws();
                            self.key()?;
                        }
                        continue 'value;
                    }
                    (true, Some(b'}')) | (false, Some(b']')) => {
                        self.i += 1;
                        depth -= 1;
                    }
                    _ => return Err(self.err("expected `,` or the end of the container")),
                }
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_what_serde_json_accepts() {
        for ok in [
            "{}",
            " { } ",
            r#"{"a":1,"b":[1,2.5,-3e-2,0,true,false,null,{"c":"d"}],"e":{}}"#,
            r#"{"s":"esc \" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00","ü":"naïve ✓"}"#,
            r#"{"long":"0123456789abcdefghijklmnopqrstuvwxyz0123456789"}"#,
            "[[[[]]]]",
            "\"x\"",
            "-0.0E+5",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(false), "{ok}");
            serde_json::from_str::<serde::de::IgnoredAny>(ok).unwrap();
        }
        assert_eq!(check(b"{\n \"a\" :\r\n 1\n}\n"), Ok(true));
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        let nested = |n: usize| format!("{}1{}", "[{\"a\":".repeat(n / 2), "}]".repeat(n / 2));
        assert_eq!(check(nested(1000).as_bytes()), Ok(false));
        assert!(
            check(nested(1002).as_bytes())
                .unwrap_err()
                .contains("nested too deeply")
        );
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "[1,]",
            "[1 2]",
            "{\"a\":1]",
            "[1}",
            "{} {}",
            "{} x",
            "{'a':1}",
            "{a:1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":+1}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":NaN}",
            "{\"a\":\"x\ny\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\\u12G4\"}",
            "{\"a\":\"open",
            "{\"a\":\"ends in backslash\\",
        ] {
            assert!(check(bad.as_bytes()).is_err(), "accepted {bad:?}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err(),
                "serde_json accepts {bad:?}"
            );
        }
    }

    #[test]
    fn finds_every_special_byte_in_a_word() {
        for special in [b'"', b'\\', 0x00, 0x1f] {
            for at in 0..8 {
                let mut w = *b"abcdefgh";
                w[at] = special;
                assert!(super::has_special(u64::from_le_bytes(w)), "{special} at {at}");
            }
        }
        for plain in [*b"abcdefgh", [0x20, 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']']] {
            assert!(!super::has_special(u64::from_le_bytes(plain)));
        }
    }
}
