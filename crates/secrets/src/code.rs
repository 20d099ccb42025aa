//! Verification codes: drawn from a cryptographically secure generator without modulo bias, and
//! compared in constant time.
//!
//! Each character is drawn by rejection sampling on random bytes: a byte is accepted only below the
//! largest multiple of the alphabet size that fits in 256, so every symbol has exactly the same
//! probability. (`rand`'s `random_range` uses a method with a tiny documented bias unless built
//! with its `unbiased` feature, so it is not used here.)

use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::SecretsError;

/// Default number of characters in a code.
pub const DEFAULT_CODE_LENGTH: usize = 6;
/// Default alphabet: decimal digits.
pub const DEFAULT_CODE_ALPHABET: &str = "0123456789";
/// Longest code this crate generates.
const MAX_CODE_LENGTH: usize = 64;

/// How codes look: their length and the alphabet each character is drawn from.
///
/// Always valid: 1 to 64 characters, an alphabet of 2 or more distinct printable ASCII characters
/// without spaces (a repeated symbol would be drawn more often). Deserializes from
/// `{"length": 6, "alphabet": "0123456789"}`, either field optional, and validates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCodeSpec", into = "RawCodeSpec")]
pub struct CodeSpec {
    length: usize,
    alphabet: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCodeSpec {
    #[serde(default = "default_length")]
    length: usize,
    #[serde(default = "default_alphabet")]
    alphabet: String,
}

fn default_length() -> usize {
    DEFAULT_CODE_LENGTH
}

fn default_alphabet() -> String {
    DEFAULT_CODE_ALPHABET.to_owned()
}

impl TryFrom<RawCodeSpec> for CodeSpec {
    type Error = SecretsError;

    fn try_from(raw: RawCodeSpec) -> Result<Self, Self::Error> {
        CodeSpec::new(raw.length, &raw.alphabet)
    }
}

impl From<CodeSpec> for RawCodeSpec {
    fn from(spec: CodeSpec) -> Self {
        RawCodeSpec {
            length: spec.length,
            alphabet: spec.alphabet().to_owned(),
        }
    }
}

impl Default for CodeSpec {
    /// Six decimal digits.
    fn default() -> Self {
        CodeSpec {
            length: DEFAULT_CODE_LENGTH,
            alphabet: DEFAULT_CODE_ALPHABET.as_bytes().to_vec(),
        }
    }
}

impl CodeSpec {
    /// A spec of `length` characters from `alphabet`, validated.
    pub fn new(length: usize, alphabet: &str) -> Result<Self, SecretsError> {
        let invalid = |reason: &str| SecretsError::InvalidCodeSpec {
            reason: reason.to_owned(),
        };
        if length == 0 || length > MAX_CODE_LENGTH {
            return Err(invalid("length must be between 1 and 64"));
        }
        let bytes = alphabet.as_bytes();
        if !bytes.iter().all(u8::is_ascii_graphic) {
            return Err(invalid(
                "alphabet must be printable ASCII characters without spaces",
            ));
        }
        if bytes.len() < 2 {
            return Err(invalid("alphabet must have at least 2 characters"));
        }
        for (i, b) in bytes.iter().enumerate() {
            if bytes[..i].contains(b) {
                return Err(invalid("alphabet must not repeat a character"));
            }
        }
        Ok(CodeSpec {
            length,
            alphabet: bytes.to_vec(),
        })
    }

    /// Number of characters in a code.
    pub fn length(&self) -> usize {
        self.length
    }

    /// The alphabet, as given.
    pub fn alphabet(&self) -> &str {
        // Validated as ASCII at construction, so this never falls back.
        std::str::from_utf8(&self.alphabet).unwrap_or_default()
    }

    /// Bits of entropy in one code: `length * log2(alphabet size)`.
    pub fn entropy_bits(&self) -> f64 {
        self.length as f64 * (self.alphabet.len() as f64).log2()
    }
}

/// Draws a code of `spec.length()` characters, each uniformly from `spec.alphabet()`, from `rng`
/// (for example `rand::rng()`, or a seeded `StdRng` in tests).
pub fn generate_code<R: CryptoRng + ?Sized>(spec: &CodeSpec, rng: &mut R) -> Zeroizing<String> {
    let n = spec.alphabet.len();
    // The largest multiple of n not above 256: bytes at or above it are rejected.
    let limit = 256 - (256 % n);
    let mut code = Zeroizing::new(String::with_capacity(spec.length));
    let mut buf = Zeroizing::new([0u8; MAX_CODE_LENGTH]);
    // Ask for exactly as many bytes as characters are missing, so no random byte is wasted and
    // the sampler's output is a pure function of the byte stream.
    while let Some(chunk) = buf.get_mut(..spec.length.saturating_sub(code.len())) {
        if chunk.is_empty() {
            break;
        }
        rng.fill_bytes(chunk);
        for &b in chunk.iter() {
            let b = usize::from(b);
            if b < limit
                && let Some(&symbol) = spec.alphabet.get(b % n)
            {
                code.push(char::from(symbol));
            }
        }
    }
    code
}

/// Whether a presented code equals the expected one, in constant time: every byte of the expected
/// code is compared whatever the presented one holds, and the lengths are compared without an
/// early return, so timing reveals neither how many characters matched nor where they differ.
pub fn codes_match(presented: &str, expected: &str) -> bool {
    let presented = presented.as_bytes();
    let expected = expected.as_bytes();
    let mut equal = (presented.len() as u64).ct_eq(&(expected.len() as u64));
    for (i, e) in expected.iter().enumerate() {
        // Missing bytes compare against a value no ASCII code holds, so a short input never
        // matches, but the work done is the same.
        let p = presented.get(i).copied().unwrap_or(0xff);
        equal &= p.ct_eq(e);
    }
    bool::from(equal)
}

#[cfg(test)]
#[path = "code_tests.rs"]
mod tests;
