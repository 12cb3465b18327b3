//! Actions taken on the page: with a token typed into it, on a cluster that requires tokens.

use registry_api::auth::hash_token;
use registry_api::wire::Consistency;
use registry_tests::init_test_tracing;
use registry_tests::procs::ProcCluster;

use crate::driver::{Browser, WAIT};
use crate::page::{beat, cluster, row, url, wait_rows, ROWS};

const SECRET: &str = "test-cluster-secret-0123";
const ADMIN: &str = "dashboard-admin-token";
const READER: &str = "dashboard-reader-token";
const RELOADED: &str = "authentication settings reloaded";
const BINARY: &str = "cinder-volume";
const REASON: &str = "disk replaced, said the page";

/// Makes every node of `c` require tokens: [`ADMIN`] (admin) and [`READER`] (reader).
async fn require_tokens(c: &ProcCluster) -> anyhow::Result<()> {
    let tokens = c.config_path(0).with_file_name("dashboard-tokens");
    std::fs::write(
        &tokens,
        format!(
            "admin {} dashboard admin\nreader {} dashboard reader\n",
            hash_token(ADMIN),
            hash_token(READER)
        ),
    )?;
    let section =
        format!("mode = \"tokens\"\ntoken_file = {tokens:?}\ncluster_secret = {SECRET:?}\n");
    for i in 0..c.nodes.len() {
        c.set_auth(i, &section)?;
        c.reload(i)?;
        c.wait_log(i, RELOADED, WAIT).await?;
    }
    Ok(())
}

/// On a cluster that requires tokens the page loads without one and says a token is needed;
/// a reader token lists the services but offers no action; with an admin token, disabling a
/// service on the page (its button, then a reason in the dialog) shows in `/v1/services` as
/// disabled with that reason, and on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_done_on_the_page_is_in_the_api() -> anyhow::Result<()> {
    init_test_tracing();
    let c = cluster().await?;
    c.client_all()
        .heartbeat(&[beat("act-1", BINARY, "az-a"), beat("act-2", BINARY, "az-a")])
        .await?;
    require_tokens(&c).await?;

    let b = Browser::start().await?;
    b.goto(&url(&c, 1)).await?;
    b.wait_for("a message saying a token is needed", ROWS, |seen| {
        seen["error"]
            .as_str()
            .is_some_and(|e| e.contains("token"))
            .then_some(())
    })
    .await?;

    let use_token = async |token: &str| -> anyhow::Result<()> {
        let field = b.by_id("token").await?;
        field.clear().await?;
        field.send_keys(token).await?;
        b.by_id("token-save").await?.click().await?;
        Ok(())
    };
    use_token(READER).await?;
    wait_rows(&b, &["act-1", "act-2"], BINARY, "up").await?;
    b.wait_for("the reader token is read only", ROWS, |seen| {
        (seen["role"] == "reader").then_some(())
    })
    .await?;
    let shown = b
        .js(
            "return getComputedStyle(document.querySelector('#service-rows td.actions')).display;",
            vec![],
        )
        .await?;
    assert_eq!(shown, "none", "no action offered to a reader");

    use_token(ADMIN).await?;
    b.wait_for("the admin token may act", ROWS, |seen| {
        (seen["role"] == "admin").then_some(())
    })
    .await?;
    wait_rows(&b, &["act-1"], BINARY, "up").await?;
    b.client
        .find(fantoccini::Locator::Css(
            "#service-rows tr[data-host='act-1'] button[data-action='disable']",
        ))
        .await?
        .click()
        .await?;
    b.wait_for(
        "the reason dialog",
        "return document.getElementById('reason-dialog').open;",
        |v| (v == true).then_some(()),
    )
    .await?;
    b.by_id("reason-input").await?.send_keys(REASON).await?;
    b.screenshot("a_disable_done_on_the_page_dialog").await?;
    b.by_id("reason-ok").await?.click().await?;

    let api = c.client_of(2).with_token(READER);
    registry_tests::wait::until("act-1 disabled in /v1/services", WAIT, || async {
        let out = api
            .services(Some("act-1"), Some(BINARY), Consistency::Linearizable)
            .await
            .ok()?;
        let s = out.services.first()?;
        (s.disabled && s.disabled_reason.as_deref() == Some(REASON)).then_some(())
    })
    .await?;
    let other = api
        .services(Some("act-2"), Some(BINARY), Consistency::Linearizable)
        .await?;
    assert!(
        other.services.iter().all(|s| !s.disabled),
        "only the service clicked is disabled"
    );
    let seen = b
        .wait_for(
            "the page shows act-1 disabled with the reason",
            ROWS,
            |seen| {
                row(seen, "act-1", BINARY)
                    .is_some_and(|r| r["status"] == "disabled" && r["reason"] == REASON)
                    .then(|| seen.clone())
            },
        )
        .await?;
    assert_eq!(seen["error"], serde_json::Value::Null, "no error: {seen}");
    b.screenshot("a_disable_done_on_the_page_is_in_the_api")
        .await?;
    b.close().await
}
