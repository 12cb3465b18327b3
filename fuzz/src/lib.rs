//! What several fuzz targets check the same way.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `data` as a Raft RPC message of type `T` with the registry's decoder (any error
/// is fine, a panic or an oversized allocation is not); a message that decodes must
/// re-encode to bytes that decode to the same encoding.
pub fn rpc_round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) {
    let Ok(msg) = registry_api::rpc::decode::<T>(data) else {
        return;
    };
    let once = registry_api::rpc::encode(&msg).expect("a decoded message encodes");
    let again = registry_api::rpc::decode::<T>(&once).expect("our own encoding decodes");
    assert_eq!(
        registry_api::rpc::encode(&again).expect("encodes again"),
        once,
        "stable round trip"
    );
}
