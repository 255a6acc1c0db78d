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
