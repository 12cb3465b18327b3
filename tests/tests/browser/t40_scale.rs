//! The page at 10k services: pages of rows, quick filters, events applied to one row.

use std::time::Instant;

use registry_api::wire::ServiceAction;
use registry_tests::init_test_tracing;

use crate::driver::Browser;
use crate::page::{beat, cluster, row, url, wait_rows, ROWS};

const SERVICES: usize = 10_000;
const BINARY: &str = "cinder-volume";
/// Rows the page draws at most (its page size).
const PAGE: usize = 200;

/// Script returning how many services the page holds, shows and draws.
const COUNTS: &str = r#"
const c = document.getElementById('count');
return { total: Number(c.dataset.total), shown: Number(c.dataset.shown),
         drawn: document.querySelectorAll('#service-rows tr').length };
"#;

/// With 10k services listed the page draws one page of rows, not 10k; a host filter narrows
/// them to the one service at once; a force-down of a service on another page than the one
/// drawn, then of the one shown, reaches its row from the event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_services_stay_quick() -> anyhow::Result<()> {
    init_test_tracing();
    let c = cluster().await?;
    let client = c.client_all();
    let names: Vec<String> = (0..SERVICES).map(|i| format!("scale-{i:05}")).collect();
    for chunk in names.chunks(1000) {
        let beats: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, h)| beat(h, BINARY, ["az-a", "az-b", "az-c"][i % 3]))
            .collect();
        client.heartbeat(&beats).await?;
    }
    let b = Browser::start().await?;
    let opened = Instant::now();
    b.goto(&url(&c, 0)).await?;
    let counts = b
        .wait_for("10k services listed", COUNTS, |v| {
            (v["total"] == SERVICES && v["shown"] == SERVICES).then(|| v.clone())
        })
        .await?;
    let listed = opened.elapsed();
    assert_eq!(counts["drawn"], PAGE, "one page of rows drawn: {counts}");

    // Far down the sorted list: not drawn now.
    client
        .action(ServiceAction::ForceDown, "scale-09999", Some(BINARY), None)
        .await?;
    let filter = b.by_id("filter-host").await?;
    let typed = Instant::now();
    filter.send_keys("scale-09999").await?;
    let seen = wait_rows(&b, &["scale-09999"], BINARY, "down").await?;
    let filtered = typed.elapsed();
    assert_eq!(seen["rows"].as_array().map(Vec::len), Some(1), "{seen}");
    assert_eq!(seen["listed"], 1, "no second listing: {seen}");

    client
        .action(
            ServiceAction::ClearForceDown,
            "scale-09999",
            Some(BINARY),
            None,
        )
        .await?;
    let seen = wait_rows(&b, &["scale-09999"], BINARY, "up").await?;
    assert!(row(&seen, "scale-09999", BINARY).is_some());
    let after = b.js(ROWS, vec![]).await?;
    assert_eq!(after["error"], serde_json::Value::Null, "{after}");
    tracing::info!(?listed, ?filtered, "10k services: listed, filtered");
    eprintln!("10k services: listed and drawn in {listed:?}, filtered to one in {filtered:?}");
    b.screenshot("ten_thousand_services_stay_quick").await?;
    b.close().await
}
