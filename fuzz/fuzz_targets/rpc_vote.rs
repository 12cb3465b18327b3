//! Raft RPC bodies from a peer (a format-version byte, then bincode; no checksum, so the input
//! is decoded as it is): `registry_api::transport::rpc::decode` of a RequestVote body on arbitrary bytes
//! is an error or a message, never a panic or an allocation of a size the bytes do not hold; a
//! message that decodes re-encodes, with this build's version byte, to bytes that decode to the
//! same encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::raft::VoteRequest;
use registry_storage::NodeId;

type Msg = VoteRequest<NodeId>;

fuzz_target!(|data: &[u8]| registry_fuzz::rpc_round_trip::<Msg>(data));
