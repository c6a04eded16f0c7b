//! Join tokens: `SWMTKN-1-<digest>-<secret>`, where the digest pins the cluster's root CA and the
//! secret admits the holder as a worker or a manager (as in SwarmKit's `ca/config.go`).

use ring::digest::{SHA256, digest};
use thiserror::Error;

/// The fixed prefix of every join token.
pub const TOKEN_PREFIX: &str = "SWMTKN";
/// The only token format version this build understands.
pub const TOKEN_VERSION: u32 = 1;
/// Length of the base-36 root CA digest (36^50 > 2^256, so a SHA-256 always fits).
pub const DIGEST_LEN: usize = 50;
/// Length of the base-36 secret (36^25 > 2^128).
pub const SECRET_LEN: usize = 25;

/// Why a string is not a usable join token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("invalid join token: expected SWMTKN-1-<digest>-<secret>")]
    Malformed,
    #[error("invalid join token: unsupported version {0}, this node understands version 1")]
    UnsupportedVersion(String),
    #[error("invalid join token: the CA digest must be {DIGEST_LEN} base-36 characters, got {0}")]
    BadDigest(usize),
    #[error("invalid join token: the secret must be {SECRET_LEN} base-36 characters, got {0}")]
    BadSecret(usize),
}

/// Generates join tokens.
pub struct JoinToken;

impl JoinToken {
    /// A fresh token for the root CA whose DER certificate is `ca_cert_der`, with 128 random bits.
    pub fn generate(ca_cert_der: &[u8]) -> String {
        let secret = base36(&rand::random::<u128>().to_be_bytes(), SECRET_LEN);
        format!(
            "{TOKEN_PREFIX}-{TOKEN_VERSION}-{}-{secret}",
            ca_digest(ca_cert_der)
        )
    }
}

/// A syntactically valid join token, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken {
    pub version: u32,
    /// The root CA certificate's SHA-256 in base 36, zero-padded to 50 characters.
    pub ca_digest: String,
    pub secret: String,
}

impl ParsedToken {
    /// Whether the token pins the root CA whose DER certificate is `ca_cert_der`.
    pub fn matches_ca(&self, ca_cert_der: &[u8]) -> bool {
        self.ca_digest == ca_digest(ca_cert_der)
    }
}

impl std::str::FromStr for ParsedToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Splits and checks a join token; surrounding whitespace is ignored.
pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
    let parts: Vec<&str> = token.trim().split('-').collect();
    let [prefix, version, ca_digest, secret] = parts.as_slice() else {
        return Err(TokenError::Malformed);
    };
    if *prefix != TOKEN_PREFIX {
        return Err(TokenError::Malformed);
    }
    if *version != TOKEN_VERSION.to_string() {
        return Err(TokenError::UnsupportedVersion((*version).to_owned()));
    }
    if ca_digest.len() != DIGEST_LEN || !is_base36(ca_digest) {
        return Err(TokenError::BadDigest(ca_digest.chars().count()));
    }
    if secret.len() != SECRET_LEN || !is_base36(secret) {
        return Err(TokenError::BadSecret(secret.chars().count()));
    }
    Ok(ParsedToken {
        version: TOKEN_VERSION,
        ca_digest: (*ca_digest).to_owned(),
        secret: (*secret).to_owned(),
    })
}

/// Whether `presented` is the token `expected_token` (same CA digest, same secret). The secrets
/// are compared in constant time; a malformed `expected_token` matches nothing.
pub fn secret_matches(expected_token: &str, presented: &ParsedToken) -> bool {
    let Ok(expected) = parse(expected_token) else {
        return false;
    };
    let same_secret = constant_time_eq(expected.secret.as_bytes(), presented.secret.as_bytes());
    same_secret & (expected.ca_digest == presented.ca_digest)
}

/// The base-36 SHA-256 of a DER certificate, as it appears in a join token.
pub fn ca_digest(ca_cert_der: &[u8]) -> String {
    base36(digest(&SHA256, ca_cert_der).as_ref(), DIGEST_LEN)
}

/// Compares two byte strings without an early exit; only their lengths leak.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

fn is_base36(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// Big-endian bytes as a lowercase base-36 number, left-padded with zeros to `width`.
fn base36(bytes: &[u8], width: usize) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut number = bytes.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            // acc < 36 * 256, so the quotient fits a byte.
            *byte = (acc / 36) as u8;
            remainder = acc % 36;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.iter().rev().map(|&d| char::from(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = b"not really DER, but any bytes have a digest";

    #[test]
    fn base36_matches_known_values() {
        assert_eq!(base36(&[0], 3), "000");
        assert_eq!(base36(&[35], 1), "z");
        assert_eq!(base36(&[1, 0], 0), "74"); // 256 = 7*36 + 4
        assert_eq!(
            base36(&u128::MAX.to_be_bytes(), 0),
            "f5lxx1zz5pnorynqglhzmsp33"
        );
        assert_eq!(base36(&[0xff; 32], 0).len(), DIGEST_LEN);
    }

    #[test]
    fn generated_token_round_trips() {
        let token = JoinToken::generate(CA);
        let parsed = parse(&token).expect("a generated token parses");
        assert_eq!(parsed.version, 1);
        assert_eq!(parsed.ca_digest.len(), DIGEST_LEN);
        assert_eq!(parsed.secret.len(), SECRET_LEN);
        assert!(parsed.matches_ca(CA));
        assert!(secret_matches(&token, &parsed));
        assert_eq!(token.parse::<ParsedToken>(), Ok(parsed));
        assert_ne!(JoinToken::generate(CA), token, "secrets are random");
    }

    #[test]
    fn wrong_ca_is_refused() {
        let parsed = parse(&JoinToken::generate(CA)).expect("parses");
        assert!(!parsed.matches_ca(b"another CA"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let digest = ca_digest(CA);
        let secret = "0123456789abcdefghijklmno";
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), TokenError::Malformed),
            ("SWMTKN".into(), TokenError::Malformed),
            (format!("SWMTKN-1-{digest}"), TokenError::Malformed),
            (
                format!("SWMTKN-1-{digest}-{secret}-x"),
                TokenError::Malformed,
            ),
            (format!("XXXXXX-1-{digest}-{secret}"), TokenError::Malformed),
            (
                format!("SWMTKN-2-{digest}-{secret}"),
                TokenError::UnsupportedVersion("2".into()),
            ),
            (format!("SWMTKN-1-abc-{secret}"), TokenError::BadDigest(3)),
            (
                format!("SWMTKN-1-{}-{secret}", digest.to_uppercase()),
                TokenError::BadDigest(50),
            ),
            (format!("SWMTKN-1-{digest}-short"), TokenError::BadSecret(5)),
            (
                format!("SWMTKN-1-{digest}-0123456789abcdefghijklmn!"),
                TokenError::BadSecret(25),
            ),
        ];
        for (token, want) in cases {
            assert_eq!(parse(&token), Err(want), "token {token:?}");
        }
        assert!(parse(&format!("  SWMTKN-1-{digest}-{secret}\n")).is_ok());
    }

    #[test]
    fn secret_comparison() {
        let token = JoinToken::generate(CA);
        let other = JoinToken::generate(CA);
        let parsed = parse(&token).expect("parses");
        assert!(secret_matches(&token, &parsed));
        assert!(!secret_matches(&other, &parsed));
        assert!(!secret_matches("garbage", &parsed));
        let mut rotated_ca = parsed.clone();
        rotated_ca.ca_digest = ca_digest(b"another CA");
        assert!(!secret_matches(&token, &rotated_ca));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
