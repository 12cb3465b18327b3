//! What several fuzz targets check the same way.
//!
//! Stored values and snapshots end or start with a CRC-32 of their bytes, which a fuzzer would
//! almost never get right: the targets of those formats feed every input twice, once as it is
//! (the checks before the checksum, which refuse nearly all of it, must not panic either) and
//! once *sealed* with [`seal_value`] or [`seal_snapshot`], so that the decoder beneath the
//! checksum is the one put to the test.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `data` as a Raft RPC message of type `T` with the registry's decoder (any error
/// is fine, a panic or an oversized allocation is not); a message that decodes must
/// re-encode to bytes that decode to the same encoding. RPC bodies carry a format-version
/// byte but no checksum, so `data` is decoded as it is.
pub fn rpc_round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) {
    let Ok(msg) = registry_api::transport::rpc::decode::<T>(data) else {
        return;
    };
    let once = registry_api::transport::rpc::encode(&msg).expect("a decoded message encodes");
    assert_eq!(
        once.first(),
        Some(&registry_api::transport::rpc::RPC_VERSION),
        "an RPC body starts with this build's RPC version"
    );
    let again = registry_api::transport::rpc::decode::<T>(&once).expect("our own encoding decodes");
    assert_eq!(
        registry_api::transport::rpc::encode(&again).expect("encodes again"),
        once,
        "stable round trip"
    );
}

/// A stored value holding `payload` as sled holds it: this build's format version, the
/// CRC-32 (little endian) of the version and `payload`, then `payload` itself.
pub fn seal_value(payload: &[u8]) -> Vec<u8> {
    registry_storage::codec::seal(payload)
}

/// A snapshot blob made of `body` (every byte but the checksum: magic, version, header and
/// records) followed by the CRC-32 (little endian) of `body`.
pub fn seal_snapshot(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out
}

/// Decodes `data` as a stored value of type `T`, as it is and sealed ([`seal_value`]); every
/// value that decodes must re-encode, in the envelope, to a value that decodes to itself and
/// encodes to the same bytes again. Returns the values that decoded (as is, sealed).
pub fn stored_round_trip<T>(data: &[u8]) -> [Option<T>; 2]
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    use registry_storage::codec::{decode, encode, FORMAT_VERSION};
    [data.to_vec(), seal_value(data)].map(|bytes| {
        let value = decode::<T>(&bytes).ok()?;
        let once = encode(&value).expect("a decoded value encodes");
        assert_eq!(
            once[0], FORMAT_VERSION,
            "a stored value starts with its version"
        );
        let again = decode::<T>(&once).expect("our own encoding decodes");
        assert_eq!(again, value, "round trip");
        assert_eq!(
            encode(&again).expect("encodes again"),
            once,
            "stable round trip"
        );
        Some(value)
    })
}
