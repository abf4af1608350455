//! `X-Hub-Signature-256` verification over the raw request body.
//!
//! Two steps, in this order: [`Signature::parse`] rejects any header that is not exactly
//! `sha256=` and 64 hex digits, so a malformed header costs no HMAC work; then
//! [`Signature::verify`] compares in constant time against HMAC-SHA256 of the bytes exactly as
//! received (never a re-serialized body: escapes, ESC bytes and non-ASCII must survive).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a delivery's signature was refused. The message never contains the expected MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header (expected sha256= and 64 hex digits)")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("more than one X-Hub-Signature-256 header: send exactly one")]
    Duplicate,
}

/// A parsed, well-formed `sha256=<64 hex>` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 32]);

/// The only accepted prefix; GitHub sends it in lower case.
const PREFIX: &[u8] = b"sha256=";

impl Signature {
    /// Parse the header value strictly: `sha256=` followed by exactly 64 hex digits.
    ///
    /// Hex digits may be upper or lower case. Anything else — whitespace, another algorithm,
    /// a wrong length, bytes that are not ASCII — is [`SignatureError::Malformed`]; no header
    /// is [`SignatureError::Missing`].
    pub fn parse(header: Option<&[u8]>) -> Result<Signature, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex_digits = header
            .strip_prefix(PREFIX)
            .ok_or(SignatureError::Malformed)?;
        let mut mac = [0u8; 32];
        // decode_to_slice insists on exactly 2 * 32 digits and rejects any non-hex byte.
        hex::decode_to_slice(hex_digits, &mut mac).map_err(|_| SignatureError::Malformed)?;
        Ok(Signature(mac))
    }

    /// Constant-time check of this signature against HMAC-SHA256(secret, body).
    ///
    /// An empty secret never verifies anything: anyone can compute that MAC.
    pub fn verify(&self, secret: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        if secret.is_empty() {
            return Err(SignatureError::Mismatch);
        }
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
        mac.update(body);
        mac.verify_slice(&self.0)
            .map_err(|_| SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (secret, body, header) from GitHub's docs, octokit/webhooks-methods and go-github.
    const PUBLISHED: [(&[u8], &[u8], &str); 3] = [
        (
            b"It's a Secret to Everybody",
            b"Hello, World!",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ),
        (
            b"mysecret",
            br#"{"foo":"bar"}"#,
            "sha256=4864d2759938a15468b5df9ade20bf161da9b4f737ea61794142f3484236bda3",
        ),
        (
            b"0123456789abcdef",
            br#"{"yo":true}"#,
            "sha256=b1f8020f5b4cd42042f807dd939015c4a418bc1ff7f604dd55b0a19b5d953d9b",
        ),
    ];

    const GITHUB_DOCS_HEX: &str =
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn check(header: &str, secret: &[u8], body: &[u8]) -> Result<(), SignatureError> {
        Signature::parse(Some(header.as_bytes()))?.verify(secret, body)
    }

    #[test]
    fn published_github_vectors_verify() {
        for (secret, body, header) in PUBLISHED {
            assert_eq!(check(header, secret, body), Ok(()), "{header}");
        }
    }

    #[test]
    fn upper_case_hex_digits_verify() {
        let header = format!("sha256={}", GITHUB_DOCS_HEX.to_uppercase());
        assert_eq!(
            check(&header, b"It's a Secret to Everybody", b"Hello, World!"),
            Ok(())
        );
    }

    #[test]
    fn flipping_one_bit_of_the_body_is_a_mismatch() {
        for (secret, body, header) in PUBLISHED {
            for i in 0..body.len() {
                let mut flipped = body.to_vec();
                flipped[i] ^= 0x01;
                assert_eq!(
                    check(header, secret, &flipped),
                    Err(SignatureError::Mismatch)
                );
            }
        }
    }

    #[test]
    fn flipping_one_bit_of_the_secret_is_a_mismatch() {
        for (secret, body, header) in PUBLISHED {
            for i in 0..secret.len() {
                let mut flipped = secret.to_vec();
                flipped[i] ^= 0x01;
                assert_eq!(check(header, &flipped, body), Err(SignatureError::Mismatch));
            }
        }
    }

    #[test]
    fn flipping_one_bit_of_the_signature_is_a_mismatch() {
        let (secret, body, _) = PUBLISHED[0];
        let good = Signature::parse(Some(format!("sha256={GITHUB_DOCS_HEX}").as_bytes()));
        let Ok(Signature(mac)) = good else {
            panic!("published header must parse: {good:?}");
        };
        for i in 0..mac.len() {
            let mut flipped = mac;
            flipped[i] ^= 0x80;
            assert_eq!(
                Signature(flipped).verify(secret, body),
                Err(SignatureError::Mismatch)
            );
        }
    }

    #[test]
    fn absent_header_is_missing() {
        assert_eq!(Signature::parse(None), Err(SignatureError::Missing));
    }

    #[test]
    fn malformed_headers_are_refused_before_any_hmac() {
        let hex64 = GITHUB_DOCS_HEX;
        let hex63 = &hex64[..63];
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"sha256=".to_vec(),
            hex64.as_bytes().to_vec(),
            format!("sha258={hex64}").into_bytes(),
            format!("sha1={hex64}").into_bytes(),
            format!("sha1={}", &hex64[..40]).into_bytes(),
            format!("sha512={hex64}{hex64}").into_bytes(),
            format!("sha256={hex63}").into_bytes(),
            format!("sha256={hex64}0").into_bytes(),
            format!("sha256={hex63}g").into_bytes(),
            format!("sha256={hex63}-").into_bytes(),
            format!("SHA256={hex64}").into_bytes(),
            format!("Sha256={hex64}").into_bytes(),
            format!("sha256 ={hex64}").into_bytes(),
            format!("sha256= {hex64}").into_bytes(),
            format!(" sha256={hex64}").into_bytes(),
            format!("sha256={hex64} ").into_bytes(),
            format!("sha256={hex64}\n").into_bytes(),
            format!("sha256={hex64}\0").into_bytes(),
            format!("sha256=0x{}", &hex64[..62]).into_bytes(),
            format!("sha256={hex64},sha256={hex64}").into_bytes(),
            [b"sha256=".as_slice(), &[0xff; 64]].concat(),
            [
                b"sha256=".as_slice(),
                &hex63.as_bytes()[..62],
                "é".as_bytes(),
            ]
            .concat(),
        ];
        for case in cases {
            assert_eq!(
                Signature::parse(Some(&case)),
                Err(SignatureError::Malformed),
                "{:?}",
                String::from_utf8_lossy(&case)
            );
        }
    }

    #[test]
    fn legacy_sha1_header_alone_is_malformed() {
        // X-Hub-Signature (sha1) for the GitHub docs example; never accepted in place of sha256.
        let legacy = b"sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59";
        assert_eq!(
            Signature::parse(Some(legacy)),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn empty_secret_never_verifies() {
        // The genuine HMAC-SHA256 under an empty key: still refused.
        let header = "sha256=2bbcfa9524f3218c7a34b30e6936f8b1a4516cb097f1a85a1c7d98b5977ec769";
        assert_eq!(
            check(header, b"", b"Hello, World!"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn mismatch_message_never_contains_the_expected_mac() {
        let (secret, _, header) = PUBLISHED[0];
        let Err(err) = check(header, secret, b"Hello, World?") else {
            panic!("a different body must not verify");
        };
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(GITHUB_DOCS_HEX), "{shown}");
    }

    const RAW_SECRET: &[u8] = b"dockhand-test-secret";
    /// JSON text with `\u00e9` and `\u001b` escapes, as a sender may write it.
    const ESCAPED_BODY: &[u8] = br#"{"message":"caf\u00e9 \u001b[31mred"}"#;
    const ESCAPED_SIG: &str =
        "sha256=c63fc2d30735e3f559719c6da32e1c41d194e7d393b1ba5e380e849c80566015";
    /// The same text with a raw UTF-8 `é` and a raw ESC byte.
    const RAW_BODY: &[u8] = b"{\"message\":\"caf\xc3\xa9 \x1b[31mred\"}";
    const RAW_SIG: &str = "sha256=8645800430189de36bb6b06241f629bffc088ee7dbb590cdedcecc8765b37892";

    #[test]
    fn body_with_unicode_escapes_verifies_over_exact_bytes() {
        assert_eq!(check(ESCAPED_SIG, RAW_SECRET, ESCAPED_BODY), Ok(()));
    }

    #[test]
    fn body_with_unicode_escapes_fails_once_reserialized() {
        let value: serde_json::Value =
            serde_json::from_slice(ESCAPED_BODY).expect("test body is JSON");
        let reserialized = serde_json::to_vec(&value).expect("a Value serializes");
        assert_ne!(reserialized, ESCAPED_BODY);
        assert_eq!(
            check(ESCAPED_SIG, RAW_SECRET, &reserialized),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn body_with_raw_esc_byte_and_non_ascii_verifies_over_exact_bytes() {
        assert_eq!(check(RAW_SIG, RAW_SECRET, RAW_BODY), Ok(()));
        // Same characters, different bytes: each signature fits only its own body.
        assert_eq!(
            check(RAW_SIG, RAW_SECRET, ESCAPED_BODY),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(ESCAPED_SIG, RAW_SECRET, RAW_BODY),
            Err(SignatureError::Mismatch)
        );
    }
}
