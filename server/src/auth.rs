//! Tokens and what they allow.

use std::fmt;
use std::str::FromStr;

/// What a token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Sync read-only and HTTP GETs.
    Read,
    /// Declare incidents, edit and append.
    Write,
    /// Manage tokens, reopen or delete incidents.
    Admin,
}

impl Scope {
    /// The name used on the command line, in storage and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not `read`, `write` or `admin`.
#[derive(Debug, thiserror::Error)]
#[error("unknown scope {0:?}: expected read, write or admin")]
pub struct UnknownScope(String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(UnknownScope(other.to_owned())),
        }
    }
}

/// Who is calling, as established by their token or single sign-on session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name, or the name the provider's claim gave the session: the person's or bot's identity in
    /// stamps and the timeline. Tokens and sessions share this name space.
    pub name: String,
    /// What the token or session allows.
    pub scope: Scope,
    /// The session's id when the caller signed in through the provider; `None` for a token.
    pub session: Option<String>,
}

/// Prefix of every token, so a leaked one is recognisable in logs and secret scanners.
const TOKEN_PREFIX: &str = "cp_";

/// A new random token (256 bits) to hand out once; only its hash is stored.
pub fn new_token() -> String {
    random_secret(TOKEN_PREFIX)
}

/// 256 random bits in base58 after `prefix`: every secret the server hands out (tokens, sync tickets, sessions) is
/// made here, so none can be guessed and each kind is recognisable by its prefix.
pub fn random_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", bs58::encode(bytes).into_string())
}

/// The stored form of a token: tokens are long and random, so a plain SHA-256 is enough (no salt or slow hash
/// needed); a database leak then reveals no usable token.
pub fn hash_token(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Token names become identities in the document, so they are short, printable and unambiguous, and never the
/// server's own name (the authorship record would give a person's changes to the server).
pub fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && !name.eq_ignore_ascii_case(incident_doc::schema::SERVER_NAME)
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(hash_token(&a).len(), 64);
    }

    #[test]
    fn scopes_order_and_names() {
        assert!(Scope::Read < Scope::Write && Scope::Write < Scope::Admin);
        assert_eq!("admin".parse::<Scope>().ok(), Some(Scope::Admin));
        assert!("root".parse::<Scope>().is_err());
        assert!(valid_token_name("alice.smith@oncall"));
        assert!(!valid_token_name("alice smith"));
        assert!(!valid_token_name(""));
        assert!(!valid_token_name("commandpost"));
        assert!(!valid_token_name("CommandPost"));
    }
}
