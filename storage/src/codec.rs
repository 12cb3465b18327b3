//! bincode (2.x) encoding of everything stored in sled.
//!
//! bincode is not self-describing: every value is decoded as exactly the type it was encoded
//! as, and a value that does not decode completely is an error, never a default. Decoding
//! never allocates more than the input holds: a corrupt length prefix is an error before any
//! allocation ([`decode_from_slice`]).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

mod borrowed;

/// Upper bound on a single decoded value (bincode's limit, which counts the in-memory size of
/// what is decoded).
const DECODE_LIMIT: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes a value for storage.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes a stored value; trailing bytes make it an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let (value, read) = decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(StoreError::Corrupt(format!(
            "{} trailing bytes after a stored value",
            bytes.len() - read
        )));
    }
    Ok(value)
}

/// Decodes a value of exactly type `T` from the start of `bytes` with the bincode `config`;
/// returns it with the number of bytes read. Unlike `bincode::serde::decode_from_slice`, every
/// string and byte buffer is checked against the bytes that remain before it is allocated, so
/// a corrupt or hostile length prefix is an error, never an allocation of the size it claims
/// (bincode's limit alone still lets a 9-byte input allocate up to the limit). The encoding is
/// bincode's own. Also used for the Raft RPC bodies received from peers.
pub fn decode_from_slice<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::seed_decode_from_slice(borrowed::Root::<T>::new(), bytes, config)
}
