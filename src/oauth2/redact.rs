//! What an error may quote of a token endpoint's answer, and how it is made
//! safe to quote.
//!
//! Errors quote as little as they can: the status, the content type and the
//! body's length, never the body itself. The only text of the server's that
//! is quoted is what RFC 6749 §5.2 defines for humans to read (`error`,
//! `error_description`, `error_uri`) and a short `token_type`. Each is
//! [`Redactor::quote`]d: format and control characters out, then every copy
//! of the secret and of any token value in the same answer masked, then cut.

use base64::Engine;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::form::form_encode;

/// Shown instead of a secret or a token.
pub(super) const REDACTED: &str = "<redacted>";

/// The shortest string value of a JSON answer that is masked wherever it
/// appears in a quoted field: shorter ones are words, not tokens.
const MIN_TOKEN_CHARS: usize = 8;

/// The fields an error quotes, which are not masked as token values.
const QUOTED_FIELDS: &[&str] = &["error", "error_description", "error_uri", "token_type"];

/// The strings that must never appear in an error, each wiped on drop.
pub(super) struct Redactor {
    needles: Vec<Zeroizing<String>>,
}

impl Redactor {
    /// Masks the secret raw, form-encoded (upper- and lowercase hex), and
    /// the base64 of the Basic pair (`form(id):form(secret)`, and
    /// `id:secret` for servers that do not form-encode), standard and
    /// URL-safe alphabets.
    pub(super) fn new(client_id: &str, secret: &str) -> Self {
        let mut redactor = Self {
            needles: Vec::new(),
        };
        if secret.is_empty() {
            return redactor;
        }
        let encoded = form_encode(secret);
        let lower = Zeroizing::new(lowercase_hex(&encoded));
        let form_pair = join_pair(&form_encode(client_id), &encoded);
        let raw_pair = join_pair(client_id, secret);
        redactor.add(secret);
        redactor.add(&encoded);
        redactor.add(&lower);
        for pair in [&form_pair, &raw_pair] {
            for engine in [
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ] {
                let mut text = Zeroizing::new(String::with_capacity(
                    base64::encoded_len(pair.len(), false).unwrap_or(0),
                ));
                engine.encode_string(pair.as_bytes(), &mut text);
                redactor.add(&text);
            }
        }
        redactor
    }

    /// Also masks each of `needles` (assertions, a subject token).
    pub(super) fn masking(mut self, needles: &[Zeroizing<String>]) -> Self {
        for needle in needles {
            self.add(needle);
        }
        self
    }

    /// Also masks every string value of `json`, at any depth, but the
    /// fields an error quotes: a token under any name.
    pub(super) fn with_values_of(mut self, json: &Map<String, Value>) -> Self {
        for (key, value) in json {
            if !QUOTED_FIELDS.contains(&key.as_str()) {
                self.add_values(value);
            }
        }
        self
    }

    fn add_values(&mut self, value: &Value) {
        match value {
            Value::String(text) if text.chars().count() >= MIN_TOKEN_CHARS => self.add(text),
            Value::Array(values) => values.iter().for_each(|value| self.add_values(value)),
            Value::Object(object) => object.values().for_each(|value| self.add_values(value)),
            _ => {}
        }
    }

    /// Needles are compared with sanitized text, so they are sanitized too.
    fn add(&mut self, needle: &str) {
        let needle = sanitize(needle);
        if !needle.is_empty() && !self.needles.iter().any(|known| **known == *needle) {
            self.needles.push(needle);
        }
    }

    /// `text` with control characters replaced by spaces, format and
    /// separator characters (Unicode Cf, Zl, Zp) removed, every needle
    /// masked, and cut to `max_chars` characters (then `…`).
    pub(super) fn quote(&self, text: &str, max_chars: usize) -> String {
        let clean = sanitize(text);
        let mut masked = Zeroizing::new(String::with_capacity(clean.len()));
        let mut rest = clean.as_str();
        while let Some(c) = rest.chars().next() {
            let longest = self
                .needles
                .iter()
                .filter(|needle| rest.starts_with(needle.as_str()))
                .map(|needle| needle.len())
                .max();
            match longest {
                Some(len) => {
                    masked.push_str(REDACTED);
                    rest = &rest[len..];
                }
                None => {
                    masked.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        let mut quoted: String = masked.chars().take(max_chars).collect();
        if masked.chars().nth(max_chars).is_some() {
            quoted.push('…');
        }
        quoted
    }
}

/// Text without control characters (replaced by spaces) and without format
/// or line and paragraph separator characters (removed).
fn sanitize(text: &str) -> Zeroizing<String> {
    let mut clean = Zeroizing::new(String::with_capacity(text.len()));
    for c in text.chars() {
        if c.is_control() {
            clean.push(' ');
        } else if !is_format_or_separator(c) {
            clean.push(c);
        }
    }
    clean
}

/// Unicode general categories Cf (format: bidi controls, zero-width
/// characters, tags...), Zl and Zp, as of Unicode 15.1.
pub(super) fn is_format_or_separator(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// `id:secret`, in a buffer of exactly its size, wiped on drop.
fn join_pair(id: &str, secret: &str) -> Zeroizing<String> {
    let mut pair = Zeroizing::new(String::with_capacity(id.len() + 1 + secret.len()));
    pair.push_str(id);
    pair.push(':');
    pair.push_str(secret);
    pair
}

/// Percent-encoding with lowercase hex digits, as some servers echo it.
fn lowercase_hex(encoded: &str) -> String {
    let mut lower = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if c == '%' {
            hex_left = 2;
            lower.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            lower.push(c.to_ascii_lowercase());
        } else {
            lower.push(c);
        }
    }
    lower
}

/// A media type from a `Content-Type` header, if it reads as one: short,
/// visible ASCII. Anything else is not quoted.
pub(super) fn content_type(value: &[u8], redactor: &Redactor) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let plausible = !text.is_empty()
        && text.len() <= 80
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    plausible.then(|| redactor.quote(text, 80))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "my client";
    const SECRET: &str = "s3cr/t+p@ss";

    #[test]
    fn the_secret_is_masked_in_every_encoding_we_know() {
        let redactor = Redactor::new(ID, SECRET);
        let basic = base64::engine::general_purpose::STANDARD.encode("my+client:s3cr%2Ft%2Bp%40ss");
        let raw_basic = base64::engine::general_purpose::URL_SAFE.encode("my client:s3cr/t+p@ss");
        for shown in [
            SECRET.to_owned(),
            "s3cr%2Ft%2Bp%40ss".to_owned(),
            "s3cr%2ft%2bp%40ss".to_owned(),
            format!("Basic {basic}"),
            raw_basic,
            // A zero-width space inside does not hide it.
            "s3cr/\u{200B}t+p@ss".to_owned(),
        ] {
            let quoted = redactor.quote(&format!("seen: {shown}."), 300);
            assert!(quoted.ends_with("<redacted>."), "{shown}: {quoted}");
            assert!(
                !quoted.contains("s3cr") && !quoted.contains("bXk"),
                "{quoted}"
            );
        }
    }

    #[test]
    fn token_values_under_any_name_are_masked() {
        let json: Value = serde_json::from_str(
            r#"{"accessToken":"tok-0123456789","nested":[{"x":"idtok-abcdefgh"}],"token_type":"Bearer","scope":"a"}"#,
        )
        .unwrap();
        let redactor = Redactor::new(ID, SECRET).with_values_of(json.as_object().unwrap());
        assert_eq!(
            redactor.quote("a tok-0123456789 b idtok-abcdefgh c Bearer a", 300),
            "a <redacted> b <redacted> c Bearer a"
        );
    }

    #[test]
    fn bidi_format_and_control_characters_are_stripped() {
        let redactor = Redactor::new(ID, "");
        assert_eq!(
            redactor.quote(
                "a\u{202E}b\u{2066}c\u{200B}d\u{2028}e\u{2029}f\u{FEFF}g\nh\u{1b}i",
                300
            ),
            "abcdefg h i"
        );
        assert_eq!(redactor.quote("abcdef", 3), "abc…");
    }

    #[test]
    fn the_format_table_matches_known_characters() {
        for c in ['\u{AD}', '\u{200E}', '\u{202A}', '\u{2069}', '\u{E0041}'] {
            assert!(is_format_or_separator(c), "{c:?}");
        }
        for c in ['a', 'é', ' ', '\u{2030}', '\u{3000}'] {
            assert!(!is_format_or_separator(c), "{c:?}");
        }
    }
}
