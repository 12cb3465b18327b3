//! `POST /v1/heartbeats` bodies: `parse_heartbeats` on arbitrary bytes returns an error or a
//! batch of 1 to `MAX_BATCH` valid heartbeats, never panics, and what it accepts parses again
//! to the same batch from its own JSON form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry_api::wire::{check_field, parse_heartbeats, HeartbeatIn, MAX_BATCH};

fuzz_target!(|data: &[u8]| {
    let Ok(beats) = parse_heartbeats(data) else {
        return;
    };
    assert!((1..=MAX_BATCH).contains(&beats.len()), "batch size");
    let echoed: Vec<HeartbeatIn> = beats
        .iter()
        .map(|b| {
            assert!(check_field("host", &b.host).is_ok(), "host validated");
            assert!(check_field("binary", &b.binary).is_ok(), "binary validated");
            HeartbeatIn {
                host: b.host.clone(),
                binary: b.binary.clone(),
                topic: b.topic.clone(),
                availability_zone: b.availability_zone.clone(),
                cluster_name: b.cluster_name.clone(),
                rpc_current_version: b.rpc_current_version.clone(),
                object_current_version: b.object_current_version.clone(),
            }
        })
        .collect();
    let json = serde_json::to_vec(&echoed).expect("heartbeats encode as JSON");
    let again = parse_heartbeats(&json).expect("an accepted batch is accepted again");
    assert_eq!(again, beats, "round trip");
});
