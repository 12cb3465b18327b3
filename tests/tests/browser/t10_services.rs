//! The services table: what is listed, and what the event stream changes without a reload.

use registry_api::wire::ServiceAction;
use registry_tests::init_test_tracing;

use crate::driver::Browser;
use crate::page::{beat, cluster, row, url, wait_rows, ROWS};

const BINARY: &str = "cinder-volume";

/// The page and its files are served without a token, with their types and the strict
/// headers; `/ui` redirects to `/ui/`; an unknown file is the API's JSON 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_strict_headers() -> anyhow::Result<()> {
    init_test_tracing();
    let c = cluster().await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = format!("http://{}", c.nodes[0].addr);
    let redirect = http.get(format!("{base}/ui")).send().await?;
    assert_eq!(redirect.status(), 301, "/ui redirects");
    assert_eq!(redirect.headers()["location"], "ui/", "to /ui/");
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let resp = http.get(format!("{base}{path}")).send().await?;
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(header("content-type").starts_with(kind), "{path}: {h:?}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
            "{path}: a strict policy, no inline script: {csp}"
        );
        assert!(!resp.bytes().await?.is_empty(), "{path} has a body");
    }
    let missing = http.get(format!("{base}/ui/nope.js")).send().await?;
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await?;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope.js")),
        "a JSON error naming the file: {body}"
    );
    Ok(())
}

/// Services that heartbeat before the page opens are listed, up, with their zones; one that
/// first heartbeats while the page is open appears without a reload (a `created` event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_the_services() -> anyhow::Result<()> {
    init_test_tracing();
    let c = cluster().await?;
    let client = c.client_all();
    client
        .heartbeat(&[
            beat("list-1", BINARY, "az-a"),
            beat("list-2", BINARY, "az-a"),
            beat("list-3", BINARY, "az-b"),
        ])
        .await?;
    let b = Browser::start().await?;
    b.goto(&url(&c, 1)).await?;
    let seen = wait_rows(&b, &["list-1", "list-2", "list-3"], BINARY, "up").await?;
    assert_eq!(
        row(&seen, "list-3", BINARY).map(|r| r["zone"].clone()),
        Some("az-b".into()),
        "the zone is shown: {seen}"
    );
    assert_eq!(
        seen["rows"].as_array().map(Vec::len),
        Some(3),
        "exactly the services: {seen}"
    );

    client.heartbeat(&[beat("list-4", BINARY, "az-b")]).await?;
    let seen = wait_rows(&b, &["list-4"], BINARY, "up").await?;
    assert_eq!(seen["listed"], 1, "shown without listing again: {seen}");
    b.screenshot("the_page_lists_the_services").await?;
    b.close().await
}

/// A service forced down through the API (on another node than the page's) turns `down` on
/// the page from the event stream: the page neither reloads nor lists again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_down_service_turns_down_live() -> anyhow::Result<()> {
    init_test_tracing();
    let c = cluster().await?;
    c.client_all()
        .heartbeat(&[
            beat("force-1", BINARY, "az-a"),
            beat("force-2", BINARY, "az-a"),
        ])
        .await?;
    let b = Browser::start().await?;
    b.goto(&url(&c, 0)).await?;
    wait_rows(&b, &["force-1", "force-2"], BINARY, "up").await?;
    // Marks the document: a reload would lose the mark.
    b.js("document.body.dataset.mark = 'kept'; return null;", vec![])
        .await?;

    c.client_of(2)
        .action(ServiceAction::ForceDown, "force-1", Some(BINARY), None)
        .await?;
    let seen = wait_rows(&b, &["force-1"], BINARY, "down").await?;
    assert_eq!(
        row(&seen, "force-2", BINARY).map(|r| r["state"].clone()),
        Some("up".into()),
        "the other service is still up: {seen}"
    );
    assert_eq!(seen["listed"], 1, "no second listing: {seen}");
    assert!(
        seen["events"].as_u64().is_some_and(|n| n >= 1),
        "the change came as an event: {seen}"
    );
    let mark = b
        .js("return document.body.dataset.mark || null;", vec![])
        .await?;
    assert_eq!(mark, "kept", "the page was not reloaded");
    let after = b.js(ROWS, vec![]).await?;
    assert_eq!(
        after["error"],
        serde_json::Value::Null,
        "no error shown: {after}"
    );
    b.screenshot("a_forced_down_service_turns_down_live")
        .await?;
    b.close().await
}

/// The page's node restarts while the page is open, and a service is forced down meanwhile
/// (through another node): the page's stream reconnects by itself (resuming, or listing again
/// when the node answers 410) and the row turns `down`, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_its_node_through_a_restart() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = cluster().await?;
    c.client_all()
        .heartbeat(&[
            beat("restart-1", BINARY, "az-a"),
            beat("restart-2", BINARY, "az-a"),
        ])
        .await?;
    let b = Browser::start().await?;
    b.goto(&url(&c, 0)).await?;
    wait_rows(&b, &["restart-1", "restart-2"], BINARY, "up").await?;
    b.js("document.body.dataset.mark = 'kept'; return null;", vec![])
        .await?;

    c.kill_node(0)?;
    b.wait_for("the page to see its stream end", ROWS, |seen| {
        (seen["live"] != "live").then_some(())
    })
    .await?;
    c.client_of(1)
        .action(ServiceAction::ForceDown, "restart-1", Some(BINARY), None)
        .await?;
    c.start_node(0)?;
    let seen = wait_rows(&b, &["restart-1"], BINARY, "down").await?;
    let mark = b
        .js("return document.body.dataset.mark || null;", vec![])
        .await?;
    assert_eq!(mark, "kept", "the page was not reloaded: {seen}");
    assert_eq!(
        row(&seen, "restart-2", BINARY).map(|r| r["state"].clone()),
        Some("up".into()),
        "{seen}"
    );
    tracing::info!(listed = %seen["listed"], "resumed through the restart");
    b.screenshot("the_page_follows_its_node_through_a_restart")
        .await?;
    b.close().await
}

/// The page's node restarts while the page is open and, meanwhile, more events happen than
/// the node keeps: its stream is answered 410 on reconnecting, and the page lists again
/// (a second listing, no reload) and shows what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_again_when_its_events_are_gone() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = registry_tests::procs::ProcCluster::start(registry_tests::procs::ProcSpec {
        events_kept: KEPT,
        ..crate::page::spec()
    })?;
    c.wait_for_leader(crate::driver::WAIT).await?;
    c.client_all()
        .heartbeat(&[beat("gone-1", BINARY, "az-a")])
        .await?;
    let b = Browser::start().await?;
    b.goto(&url(&c, 0)).await?;
    wait_rows(&b, &["gone-1"], BINARY, "up").await?;
    b.js("document.body.dataset.mark = 'kept'; return null;", vec![])
        .await?;

    c.kill_node(0)?;
    let others = c.client_of(1);
    let beats: Vec<_> = (0..KEPT * 3)
        .map(|i| beat(&format!("gone-more-{i:03}"), BINARY, "az-a"))
        .collect();
    others.heartbeat(&beats).await?;
    others
        .action(ServiceAction::ForceDown, "gone-1", Some(BINARY), None)
        .await?;
    c.start_node(0)?;
    let last = format!("gone-more-{:03}", KEPT * 3 - 1);
    let seen = wait_rows(&b, &["gone-1"], BINARY, "down").await?;
    let seen = if row(&seen, &last, BINARY).is_some() {
        seen
    } else {
        wait_rows(&b, &[&last], BINARY, "up").await?
    };
    assert!(
        seen["listed"].as_u64().is_some_and(|n| n >= 2),
        "the page listed again after the 410: {seen}"
    );
    let mark = b
        .js("return document.body.dataset.mark || null;", vec![])
        .await?;
    assert_eq!(mark, "kept", "the page was not reloaded");
    b.screenshot("the_page_lists_again_when_its_events_are_gone")
        .await?;
    b.close().await
}

/// Events each node of [`the_page_lists_again_when_its_events_are_gone`] keeps.
const KEPT: usize = 10;
