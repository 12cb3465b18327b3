//! Raft RPC bodies from a peer (a format-version byte, then bincode; no checksum, so the input
//! is decoded as it is): `registry_api::transport::rpc::decode` of an InstallSnapshot chunk on arbitrary
//! bytes is an error or a message, never a panic or an allocation of a size the bytes do not
//! hold; a message that decodes re-encodes, with this build's version byte, to bytes that
//! decode to the same encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::raft::InstallSnapshotRequest;
use registry_storage::TypeConfig;

type Msg = InstallSnapshotRequest<TypeConfig>;

fuzz_target!(|data: &[u8]| registry_fuzz::rpc_round_trip::<Msg>(data));
