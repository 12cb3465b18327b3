//! The zone cards and the suspect banner.

use registry_api::wire::ServiceAction;
use registry_tests::init_test_tracing;

use crate::driver::Browser;
use crate::page::{beat, cluster, url, wait_rows};

const BINARY: &str = "cinder-volume";

/// Script returning the zone cards.
const ZONES: &str = r#"
return Array.from(document.querySelectorAll('#zones .zone-card')).map((z) => ({
  zone: z.dataset.zone, state: z.dataset.state, up: Number(z.dataset.up), down: Number(z.dataset.down),
}));
"#;

/// Every service of a zone forced down puts its card in full disruption (the other zones
/// stay normal, and there is no suspect banner while one zone is fine); services in three
/// zones, one disabled, is also the README's screenshot (`docs/dashboard.png` is a copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_in_disruption_is_shown() -> anyhow::Result<()> {
    init_test_tracing();
    let c = cluster().await?;
    let client = c.client_all();
    let mut beats = Vec::new();
    for (zone, hosts) in [("az-east", 4), ("az-west", 3), ("az-north", 2)] {
        for h in 1..=hosts {
            beats.push(beat(&format!("{zone}-node{h}"), BINARY, zone));
        }
    }
    beats.push(beat("az-east-node1", "cinder-scheduler", "az-east"));
    client.heartbeat(&beats).await?;
    client
        .action(
            ServiceAction::Disable,
            "az-north-node2",
            Some(BINARY),
            Some("maintenance window"),
        )
        .await?;

    let b = Browser::start().await?;
    b.goto(&url(&c, 0)).await?;
    wait_rows(&b, &["az-west-node1", "az-west-node3"], BINARY, "up").await?;
    b.wait_for("three zone cards, all normal", ZONES, |v| {
        let cards = v.as_array()?;
        (cards.len() == 3 && cards.iter().all(|z| z["state"] == "normal")).then_some(())
    })
    .await?;

    for h in 1..=3 {
        client
            .action(
                ServiceAction::ForceDown,
                &format!("az-west-node{h}"),
                Some(BINARY),
                None,
            )
            .await?;
    }
    wait_rows(
        &b,
        &["az-west-node1", "az-west-node2", "az-west-node3"],
        BINARY,
        "down",
    )
    .await?;
    let cards = b
        .wait_for("az-west in full disruption", ZONES, |v| {
            let west = v.as_array()?.iter().find(|z| z["zone"] == "az-west")?;
            (west["state"] == "full-disruption" && west["down"] == 3).then(|| v.clone())
        })
        .await?;
    for z in cards.as_array().into_iter().flatten() {
        if z["zone"] != "az-west" {
            assert_eq!(z["state"], "normal", "the other zones stay normal: {cards}");
        }
    }
    let suspect = b
        .js(
            "return document.getElementById('suspect-banner').hidden;",
            vec![],
        )
        .await?;
    assert_eq!(suspect, true, "no suspect banner while other zones are up");
    b.screenshot("a_zone_in_disruption_is_shown").await?;
    b.close().await
}
