//! Admin action bodies, native (`PUT /v1/services/{action}`: `ServiceActionIn` and
//! `action_command`) and Cinder's (`PUT /v3/os-services/{action}`: `ActionRequest::parse`).
//! The first byte picks the actions, the rest is the body. Never a panic; a Cinder body that
//! validates always yields a registry command, as the route assumes.
#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use registry_api::cinder::actions::{ActionRequest, CinderAction};
use registry_api::wire::{action_command, ServiceAction, ServiceActionIn};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (native, _) = ServiceAction::ALL[usize::from(pick & 0x0f) % ServiceAction::ALL.len()];
    if let Ok(parsed) = serde_json::from_slice::<ServiceActionIn>(body) {
        if let Ok(cmd) = action_command(native, &parsed) {
            let _ = cmd(DateTime::UNIX_EPOCH);
        }
    }
    let (cinder, _) = CinderAction::ALL[usize::from(pick >> 4) % CinderAction::ALL.len()];
    if let Ok(req) = ActionRequest::parse(cinder, body) {
        let cmd = action_command(req.native, &req.body)
            .expect("a validated Cinder action builds a registry command");
        let _ = cmd(DateTime::UNIX_EPOCH);
        // The native body forwarded to the leader parses back to itself.
        let json = serde_json::to_vec(&req.body).expect("native body encodes");
        let back: ServiceActionIn = serde_json::from_slice(&json).expect("native body parses");
        assert_eq!(back, req.body, "forwarded body round trip");
    }
});
