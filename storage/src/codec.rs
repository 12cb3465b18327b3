//! bincode (2.x) encoding of everything stored in sled.
//!
//! bincode is not self-describing: every value is decoded as exactly the type it was encoded
//! as, and a value that does not decode completely is an error, never a default.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

/// Upper bound on a single decoded value, so a corrupt length prefix cannot make the decoder
/// allocate gigabytes.
const DECODE_LIMIT: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes a value for storage.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes a stored value; trailing bytes make it an error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())?;
    if read != bytes.len() {
        return Err(StoreError::Corrupt(format!(
            "{} trailing bytes after a stored value",
            bytes.len() - read
        )));
    }
    Ok(value)
}
