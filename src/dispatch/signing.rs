//! Standard Webhooks signatures for deliveries, and the `whsec_` secrets behind them.
//!
//! Each delivery carries `webhook-id`, `webhook-timestamp` and `webhook-signature`. The signature
//! header lists `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` entries, one per key
//! in the [`KeyRing`]: after a rotation the retired key keeps signing next to the new one for
//! [`ROTATION_OVERLAP_SECS`], so receivers can switch keys without refusing a delivery.
//! Spec: <https://www.standardwebhooks.com> (1.0.0). Only the symmetric `v1` scheme is
//! implemented; `v1a` (ed25519) entries are ignored when verifying.

use std::fmt;

use base64::{
    DecodeError, Engine as _, alphabet,
    engine::{
        DecodePaddingMode,
        general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD},
    },
};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the message id, the same on every attempt (the receiver's idempotency key).
pub const ID_HEADER: &str = "webhook-id";
/// Header carrying the attempt's Unix time in seconds, part of the signed content.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header carrying the space-separated signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Prefix of a serialised symmetric secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest key the spec allows, in bytes.
pub const MIN_KEY_BYTES: usize = 24;
/// Longest key the spec allows, in bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// How long a retired key keeps signing after a rotation.
pub const ROTATION_OVERLAP_SECS: i64 = 24 * 60 * 60;
/// Most retired keys a ring keeps; each one adds an entry to every signature header.
pub const MAX_PREVIOUS_KEYS: usize = 10;
/// Timestamp tolerance every Standard Webhooks reference receiver uses.
pub const DEFAULT_TOLERANCE_SECS: u64 = 5 * 60;

const VERSION: &str = "v1";
const GENERATED_KEY_BYTES: usize = 32;

// Other libraries write secrets and signatures with or without `=` padding; accept both.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a webhook signing secret cannot be used. Messages never repeat the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Nothing after the optional `whsec_` prefix.
    #[error("webhook signing secret is empty")]
    Empty,
    /// A `whsk_`/`whpk_` ed25519 key where an HMAC secret was expected.
    #[error("webhook signing secret is an ed25519 key (whsk_/whpk_); only whsec_ HMAC secrets are supported")]
    Asymmetric,
    /// A character that cannot appear there in standard base64 (position counts from the trimmed
    /// secret's start, prefix included).
    #[error("webhook signing secret has an invalid base64 character at position {position}")]
    InvalidCharacter { position: usize },
    /// Base64 of an impossible length or with misplaced padding.
    #[error("webhook signing secret is not valid base64 (wrong length or padding)")]
    InvalidBase64,
    /// A key outside the spec's 24–64 bytes.
    #[error("webhook signing secret decodes to {len} bytes; it must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES}")]
    WrongLength { len: usize },
}

/// Why a receiver refuses a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The `webhook-timestamp` header is not an integer.
    #[error("webhook timestamp is not an integer number of seconds")]
    InvalidTimestamp,
    /// The timestamp is further in the past than the tolerance (a possible replay).
    #[error("webhook timestamp is {age_secs}s old, beyond the tolerance")]
    TimestampTooOld { age_secs: u64 },
    /// The timestamp is further in the future than the tolerance.
    #[error("webhook timestamp is {ahead_secs}s in the future, beyond the tolerance")]
    TimestampInFuture { ahead_secs: u64 },
    /// No `v1` entry of the signature header matches the key.
    #[error("no webhook signature matches the key")]
    NoMatchingSignature,
}

/// One decoded HMAC-SHA256 key. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey {
    bytes: Box<[u8]>,
    // Keyed once here; every signature clones it instead of re-deriving the HMAC pads.
    mac: HmacSha256,
}

impl SigningKey {
    /// Reads `whsec_<base64>` or the bare base64, padded or not, ignoring surrounding whitespace.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let secret = secret.trim();
        if secret.starts_with("whsk_") || secret.starts_with("whpk_") {
            return Err(SecretError::Asymmetric);
        }
        let (offset, encoded) = match secret.strip_prefix(SECRET_PREFIX) {
            Some(rest) => (SECRET_PREFIX.len(), rest),
            None => (0, secret),
        };
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        // DecodeError's Display names the offending character; keep only its position.
        let bytes = LENIENT.decode(encoded).map_err(|e| match e {
            DecodeError::InvalidByte(at, _) | DecodeError::InvalidLastSymbol(at, _) => {
                SecretError::InvalidCharacter { position: offset + at }
            }
            DecodeError::InvalidLength(_) | DecodeError::InvalidPadding => SecretError::InvalidBase64,
        })?;
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        let len = bytes.len();
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&len) {
            return Err(SecretError::WrongLength { len });
        }
        // HMAC takes keys of any length, so this cannot fail; no panic path all the same.
        let mac = HmacSha256::new_from_slice(&bytes).map_err(|_| SecretError::WrongLength { len })?;
        Ok(Self { bytes: bytes.into_boxed_slice(), mac })
    }

    /// The MAC state after absorbing the signed content `{id}.{timestamp}.{body}`.
    fn absorb(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    // Compares two of our own keys (never attacker input), so timing does not matter.
    fn same_key(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// A fresh secret: `whsec_` + standard base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    rand::rng().fill(&mut bytes);
    let mut secret = String::from(SECRET_PREFIX);
    STANDARD.encode_string(bytes, &mut secret);
    secret
}

/// The keys a delivery is signed with: the current key and retired keys until they expire.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: SigningKey,
    previous: Vec<RetiredKey>,
}

#[derive(Debug, Clone)]
struct RetiredKey {
    key: SigningKey,
    /// Unix seconds; the key signs deliveries timestamped strictly before this.
    expires_at_secs: i64,
}

impl KeyRing {
    /// A ring with only `current`.
    pub fn new(current: SigningKey) -> Self {
        Self { current, previous: Vec::new() }
    }

    /// Adds a retired key that signs until `expires_at_secs` (Unix seconds, exclusive),
    /// after the retired keys already in the ring.
    #[must_use]
    pub fn with_previous(mut self, key: SigningKey, expires_at_secs: i64) -> Self {
        self.retire(self.previous.len(), key, expires_at_secs);
        self
    }

    /// Makes `next` the current key; the old one keeps signing for [`ROTATION_OVERLAP_SECS`]
    /// from `now_secs`, right after the new key. Keys expired at `now_secs` are dropped.
    pub fn rotate(&mut self, next: SigningKey, now_secs: i64) {
        let retired = std::mem::replace(&mut self.current, next);
        let current = &self.current;
        self.previous.retain(|p| p.expires_at_secs > now_secs && !p.key.same_key(current));
        self.retire(0, retired, now_secs.saturating_add(ROTATION_OVERLAP_SECS));
    }

    /// The key new secrets replace; always signs.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// The keys that sign at `now_secs` (Unix seconds): current first, then unexpired retired keys.
    pub fn active(&self, now_secs: i64) -> impl Iterator<Item = &SigningKey> {
        let retired = self.previous.iter().filter(move |p| p.expires_at_secs > now_secs).map(|p| &p.key);
        std::iter::once(&self.current).chain(retired)
    }

    /// The `webhook-signature` value for one attempt; the attempt's timestamp decides expiry.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        sign(self.active(timestamp_secs), msg_id, timestamp_secs, body)
    }

    fn retire(&mut self, index: usize, key: SigningKey, expires_at_secs: i64) {
        if key.same_key(&self.current) {
            return;
        }
        if let Some(known) = self.previous.iter_mut().find(|p| p.key.same_key(&key)) {
            known.expires_at_secs = known.expires_at_secs.max(expires_at_secs);
            return;
        }
        self.previous.insert(index.min(self.previous.len()), RetiredKey { key, expires_at_secs });
        if self.previous.len() > MAX_PREVIOUS_KEYS {
            let soonest = self.previous.iter().enumerate().min_by_key(|(_, p)| p.expires_at_secs).map(|(i, _)| i);
            if let Some(i) = soonest {
                self.previous.remove(i);
            }
        }
    }
}

impl From<SigningKey> for KeyRing {
    fn from(current: SigningKey) -> Self {
        Self::new(current)
    }
}

/// The `webhook-signature` header value: one `v1,<base64>` entry per key, in the keys' order.
/// `msg_id` is the event id: the producer's AMQP message id, or the one the dispatcher derives
/// from the message when it has none (`dispatch::envelope::message_id`).
pub fn sign<'a>(
    keys: impl IntoIterator<Item = &'a SigningKey>,
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> String {
    let timestamp = timestamp_secs.to_string();
    let mut header = String::new();
    for key in keys {
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str(VERSION);
        header.push(',');
        STANDARD.encode_string(key.absorb(msg_id, &timestamp, body).finalize().into_bytes(), &mut header);
    }
    header
}

/// Whether any `v1` entry of a `webhook-signature` header is `key`'s signature of the message.
/// Compares in constant time; other versions and malformed entries are skipped.
pub fn verify(key: &SigningKey, msg_id: &str, timestamp_secs: i64, body: &[u8], header: &str) -> bool {
    let expected = key.absorb(msg_id, &timestamp_secs.to_string(), body);
    header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, signature)| LENIENT.decode(signature).ok())
        .any(|signature| expected.clone().verify_slice(&signature).is_ok())
}

/// A receiver's full check: the raw `webhook-timestamp` header lies within `tolerance_secs` of
/// `now_secs` (Unix seconds; see [`DEFAULT_TOLERANCE_SECS`]) and a signature matches.
pub fn verify_at(
    key: &SigningKey,
    msg_id: &str,
    header_timestamp: &str,
    body: &[u8],
    header: &str,
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let timestamp: i64 = header_timestamp.parse().map_err(|_| VerifyError::InvalidTimestamp)?;
    let skew = now_secs.abs_diff(timestamp);
    if skew > tolerance_secs {
        return Err(if timestamp < now_secs {
            VerifyError::TimestampTooOld { age_secs: skew }
        } else {
            VerifyError::TimestampInFuture { ahead_secs: skew }
        });
    }
    if verify(key, msg_id, timestamp, body, header) { Ok(()) } else { Err(VerifyError::NoMatchingSignature) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // §1.6 of the delivery research; vectors A and B come from the reference libraries.
    const SECRET_A: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const KEY_A_HEX: &str = "0b6155b0140886bb1c0a195020c57e6f9b1262ca686fba03";
    const ID_A: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS_A: i64 = 1_649_367_553;
    const BODY_A: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIG_A: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    const SECRET_B: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const KEY_B_HEX: &str = "31f290f6bf06298aab4f08d43c3f082cf648a362da2da4b0";
    const ID_B: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS_B: i64 = 1_614_265_330;
    const BODY_B: &[u8] = br#"{"test": 2432232314}"#;
    const SIG_B: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const SECRET_C: &str =
        "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg==";
    const SIG_C: &str = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==";

    const SIG_D: &str =
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,78nXHjpFP0tVJQW5D0SBwmVyyW87BV/rL6MgfM/Bw44=";
    const SIG_E: &str = "v1,v48jdbgvh29KJz2Qc+ghw8G6vG3nAKnujWBg8oM/62A=";

    fn key(secret: &str) -> SigningKey {
        SigningKey::parse(secret).unwrap()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn vector_a_signs_and_verifies() {
        let a = key(SECRET_A);
        assert_eq!(*a.bytes, *unhex(KEY_A_HEX));
        assert_eq!(sign([&a], ID_A, TS_A, BODY_A), SIG_A);
        assert!(verify(&a, ID_A, TS_A, BODY_A, SIG_A));
    }

    #[test]
    fn vector_b_signs_and_verifies() {
        let b = key(SECRET_B);
        assert_eq!(*b.bytes, *unhex(KEY_B_HEX));
        assert_eq!(sign([&b], ID_B, TS_B, BODY_B), SIG_B);
        assert_eq!(KeyRing::new(b.clone()).sign(ID_B, TS_B, BODY_B), SIG_B);
        assert!(verify(&b, ID_B, TS_B, BODY_B, SIG_B));
    }

    #[test]
    fn vector_c_v1a_entries_are_ignored_and_its_key_refused() {
        let b = key(SECRET_B);
        // The spec's example header: a v1a entry next to the v1 one.
        assert!(verify(&b, ID_B, TS_B, BODY_B, &format!("{SIG_C} {SIG_B}")));
        assert!(!verify(&b, ID_B, TS_B, BODY_B, SIG_C));
        assert_eq!(SigningKey::parse(SECRET_C).unwrap_err(), SecretError::Asymmetric);
    }

    #[test]
    fn vector_d_rotation_header_lists_current_then_previous() {
        let (a, b) = (key(SECRET_A), key(SECRET_B));
        let ring = KeyRing::new(b.clone()).with_previous(a.clone(), TS_B + 1);
        assert_eq!(ring.sign(ID_B, TS_B, BODY_B), SIG_D);
        assert_eq!(sign([&b, &a], ID_B, TS_B, BODY_B), SIG_D);
        assert!(verify(&a, ID_B, TS_B, BODY_B, SIG_D));
        assert!(verify(&b, ID_B, TS_B, BODY_B, SIG_D));
    }

    #[test]
    fn vector_e_empty_body() {
        let b = key(SECRET_B);
        assert_eq!(sign([&b], ID_B, TS_B, b""), SIG_E);
        assert!(verify(&b, ID_B, TS_B, b"", SIG_E));
        assert!(!verify(&b, ID_B, TS_B, BODY_B, SIG_E));
    }

    #[test]
    fn expired_previous_key_stops_signing() {
        let (a, b) = (key(SECRET_A), key(SECRET_B));
        let ring = KeyRing::new(b).with_previous(a, TS_B);
        assert_eq!(ring.active(TS_B - 1).count(), 2);
        assert_eq!(ring.active(TS_B).count(), 1);
        assert_eq!(ring.sign(ID_B, TS_B, BODY_B), SIG_B);
    }

    #[test]
    fn rotation_overlaps_for_a_day() {
        let (a, b) = (key(SECRET_A), key(SECRET_B));
        let mut ring = KeyRing::new(a);
        ring.rotate(b, TS_B);
        assert_eq!(ring.sign(ID_B, TS_B, BODY_B), SIG_D);
        assert_eq!(ring.sign(ID_B, TS_B + ROTATION_OVERLAP_SECS - 1, BODY_B).split(' ').count(), 2);
        assert_eq!(ring.active(TS_B + ROTATION_OVERLAP_SECS).count(), 1);
    }

    #[test]
    fn rotating_back_and_forth_never_duplicates_a_key() {
        let (a, b) = (key(SECRET_A), key(SECRET_B));
        let mut ring = KeyRing::new(a.clone());
        ring.rotate(b.clone(), TS_B);
        ring.rotate(a.clone(), TS_B + 10);
        ring.rotate(a, TS_B + 20);
        assert_eq!(ring.active(TS_B + 30).count(), 2);
        assert!(verify(&b, ID_B, TS_B + 30, BODY_B, &ring.sign(ID_B, TS_B + 30, BODY_B)));
    }

    #[test]
    fn ring_keeps_at_most_ten_previous_keys() {
        let mut ring = KeyRing::new(key(&generate_secret()));
        for step in 0..15 {
            ring.rotate(key(&generate_secret()), TS_B + step);
        }
        assert_eq!(ring.active(TS_B + 15).count(), 1 + MAX_PREVIOUS_KEYS);
    }

    #[test]
    fn parse_accepts_bare_unpadded_and_whitespace() {
        let a = key(SECRET_A);
        assert_eq!(key("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").bytes, a.bytes);
        assert_eq!(key(" whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n").bytes, a.bytes);
        // 25 bytes: padded and unpadded forms decode alike.
        let padded = STANDARD.encode([7u8; 25]);
        assert!(padded.ends_with("=="));
        assert_eq!(key(&padded).bytes, key(padded.trim_end_matches('=')).bytes);
        assert_eq!(key(&STANDARD.encode([1u8; MIN_KEY_BYTES])).bytes.len(), MIN_KEY_BYTES);
        assert_eq!(key(&STANDARD.encode([1u8; MAX_KEY_BYTES])).bytes.len(), MAX_KEY_BYTES);
    }

    #[test]
    fn parse_refuses_bad_secrets() {
        let parse = |s: &str| SigningKey::parse(s).unwrap_err();
        assert_eq!(parse(""), SecretError::Empty);
        assert_eq!(parse("  \n"), SecretError::Empty);
        assert_eq!(parse("whsec_"), SecretError::Empty);
        assert_eq!(parse("whsec_C2FVsBQIhrsc-hlQIMV+b5sSYspob7oD"), SecretError::InvalidCharacter { position: 18 });
        assert_eq!(parse("whsec_C2FVs"), SecretError::InvalidBase64);
        assert_eq!(parse("whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4="), SecretError::Asymmetric);
        assert_eq!(parse(&STANDARD.encode([1u8; 23])), SecretError::WrongLength { len: 23 });
        assert_eq!(parse(&STANDARD.encode([1u8; 65])), SecretError::WrongLength { len: 65 });
    }

    #[test]
    fn generated_secrets_are_fresh_32_byte_keys() {
        let (one, two) = (generate_secret(), generate_secret());
        assert!(one.starts_with(SECRET_PREFIX));
        assert_eq!(one.len(), SECRET_PREFIX.len() + 44);
        assert_eq!(key(&one).bytes.len(), 32);
        assert_ne!(one, two);
    }

    #[test]
    fn tampering_fails_verification() {
        let a = key(SECRET_A);
        assert!(!verify(&a, ID_A, TS_A, br#"{"email":"evil@example.com","username":"test_user"}"#, SIG_A));
        assert!(!verify(&a, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpl", TS_A, BODY_A, SIG_A));
        assert!(!verify(&a, ID_A, TS_A + 1, BODY_A, SIG_A));
        assert!(!verify(&key(SECRET_B), ID_A, TS_A, BODY_A, SIG_A));
        assert!(!verify(&a, ID_A, TS_A, BODY_A, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkx="));
    }

    #[test]
    fn verify_skips_malformed_and_foreign_entries() {
        let a = key(SECRET_A);
        let sig = SIG_A.trim_start_matches("v1,");
        assert!(!verify(&a, ID_A, TS_A, BODY_A, ""));
        assert!(!verify(&a, ID_A, TS_A, BODY_A, sig));
        assert!(!verify(&a, ID_A, TS_A, BODY_A, &format!("v2,{sig}")));
        assert!(verify(&a, ID_A, TS_A, BODY_A, &format!("garbage v1,!!! v1,AAAA  {SIG_A}")));
        assert!(verify(&a, ID_A, TS_A, BODY_A, SIG_A.trim_end_matches('=')));
    }

    #[test]
    fn verify_at_enforces_the_tolerance_window() {
        let a = key(SECRET_A);
        let ts = TS_A.to_string();
        let at = |now: i64| verify_at(&a, ID_A, &ts, BODY_A, SIG_A, now, DEFAULT_TOLERANCE_SECS);
        assert_eq!(at(TS_A), Ok(()));
        assert_eq!(at(TS_A + 300), Ok(()));
        assert_eq!(at(TS_A - 300), Ok(()));
        assert_eq!(at(TS_A + 301), Err(VerifyError::TimestampTooOld { age_secs: 301 }));
        assert_eq!(at(TS_A - 301), Err(VerifyError::TimestampInFuture { ahead_secs: 301 }));
        let check =
            |stamp: &str, header: &str| verify_at(&a, ID_A, stamp, BODY_A, header, TS_A, DEFAULT_TOLERANCE_SECS);
        assert_eq!(check("1649367553.0", SIG_A), Err(VerifyError::InvalidTimestamp));
        assert_eq!(check("", SIG_A), Err(VerifyError::InvalidTimestamp));
        assert_eq!(check(&ts, SIG_B), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn keys_and_errors_never_show_the_secret() {
        let encoded = SECRET_A.trim_start_matches(SECRET_PREFIX);
        let ring = KeyRing::new(key(SECRET_B)).with_previous(key(SECRET_A), TS_A);
        let shown = [
            format!("{:?}", key(SECRET_A)),
            format!("{ring:?}"),
            format!("{ring:#?}"),
            SigningKey::parse("whsec_C2FVsBQIhrsc-hlQIMV+b5sSYspob7oD").unwrap_err().to_string(),
            format!("{:?}", SigningKey::parse("whsec_C2FVsBQIhrsc-hlQIMV+b5sSYspob7oD").unwrap_err()),
            SigningKey::parse(&STANDARD.encode([0x5a; 23])).unwrap_err().to_string(),
        ];
        assert_eq!(shown[0], "SigningKey(<redacted>)");
        for text in &shown {
            for secret in [encoded, "C2FVsBQIhrsc", "MfKQ9r8GKYqr", KEY_A_HEX, KEY_B_HEX, "WlpaWlpa", "-"] {
                assert!(!text.contains(secret), "{text:?} shows {secret:?}");
            }
        }
    }
}
