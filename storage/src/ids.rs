//! The ids a store is known by: the cluster it belongs to ([`ClusterId`]) and its own
//! incarnation ([`Incarnation`]); what they mean is in [`crate::identity`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A cluster's id: 128 bits, written as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u128);

impl ClusterId {
    /// The id derived from `parts` (SHA-256, first 128 bits): every node that derives it from
    /// the same parts gets the same id, and different parts give different ids.
    pub fn derive(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let digest = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Self(u128::from_be_bytes(first))
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for ClusterId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_hex(s, 32)
            .and_then(|v| u128::from_str_radix(v, 16).map_err(|e| e.to_string()))
            .map(Self)
            .map_err(|e| format!("not a cluster id ({e}): {s:?}"))
    }
}

/// One life of a node's store: 64 random bits, written as 16 hex digits.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// A new, random incarnation (never zero, which stands for "unknown").
    pub fn random() -> Self {
        loop {
            let v: u64 = rand::random();
            if v != 0 {
                return Self(v);
            }
        }
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Incarnation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_hex(s, 16)
            .and_then(|v| u64::from_str_radix(v, 16).map_err(|e| e.to_string()))
            .map(Self)
            .map_err(|e| format!("not an incarnation ({e}): {s:?}"))
    }
}

fn parse_hex(s: &str, len: usize) -> Result<&str, String> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(format!("expected {len} hex digits"))
    }
}
