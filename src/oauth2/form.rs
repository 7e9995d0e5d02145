//! The `application/x-www-form-urlencoded` encoding of token requests:
//! [`Form`], a body wiped on drop, and [`form_encode`], shared by every grant
//! and by client authentication.

use zeroize::Zeroizing;

/// An `application/x-www-form-urlencoded` body, wiped on drop: it may hold
/// the secret.
#[derive(Default)]
pub(super) struct Form(Zeroizing<String>);

impl Form {
    pub(super) fn pair(&mut self, name: &str, value: &str) {
        let name = form_encode(name);
        let value = form_encode(value);
        let separator = usize::from(!self.0.is_empty());
        self.reserve(separator + name.len() + 1 + value.len());
        if separator == 1 {
            self.0.push('&');
        }
        self.0.push_str(&name);
        self.0.push('=');
        self.0.push_str(&value);
    }

    /// The encoded body, for the request's copy.
    pub(super) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Grows by moving into a new buffer and wiping the old one:
    /// `String`'s own growth would free the old one unwiped.
    fn reserve(&mut self, additional: usize) {
        if self.0.capacity() - self.0.len() >= additional {
            return;
        }
        let needed = self.0.len() + additional;
        let mut grown = Zeroizing::new(String::with_capacity(needed.max(2 * self.0.capacity())));
        grown.push_str(&self.0);
        self.0 = grown;
    }
}

/// The `application/x-www-form-urlencoded` byte serializer: ASCII letters,
/// digits and `*-._` as they are, space as `+`, every other byte as `%XX`.
///
/// The result may be the secret: it is sized exactly up front, so that it
/// never reallocates (which would leave an unwiped copy behind), and wiped
/// on drop.
pub(super) fn form_encode(text: &str) -> Zeroizing<String> {
    let unreserved =
        |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'*' | b'-' | b'.' | b'_' | b' ');
    let len = text
        .bytes()
        .map(|byte| if unreserved(byte) { 1 } else { 3 })
        .sum();
    let mut encoded = Zeroizing::new(String::with_capacity(len));
    for byte in text.bytes() {
        match byte {
            b' ' => encoded.push('+'),
            _ if unreserved(byte) => encoded.push(char::from(byte)),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                encoded.push('%');
                encoded.push(char::from(HEX[usize::from(byte >> 4)]));
                encoded.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_follows_the_url_standard() {
        assert_eq!(*form_encode("abcXYZ019*-._"), "abcXYZ019*-._");
        let encoded = form_encode("a b+c&d=e:f/é~");
        assert_eq!(*encoded, "a+b%2Bc%26d%3De%3Af%2F%C3%A9%7E");
        // Sized exactly: it never grew, leaving no copy behind.
        assert_eq!(encoded.capacity(), encoded.len());
        assert_eq!(*form_encode(""), "");
    }
}
