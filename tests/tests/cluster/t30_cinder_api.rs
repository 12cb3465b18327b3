//! Cinder's Block Storage v3 `os-services` API, served by every node: discovery,
//! microversions, the list per microversion, the actions, Cinder's fault format and headers,
//! and the real python-cinderclient run unchanged against a follower and the leader.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use registry_api::cinder::view::naive_utc;
use registry_api::request_id::is_request_id;
use registry_api::wire::{Consistency, HeartbeatIn, ServiceAction, ServiceOut};
use registry_tests::init_test_tracing;
use registry_tests::raw_http;

use crate::cinderclient::{cinder_cli, run};
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use reqwest::Method;
use serde_json::{json, Value};

// -------------------------------------------------------------------------------------------
// HTTP helpers
// -------------------------------------------------------------------------------------------

/// One node's Cinder endpoint, spoken to with plain HTTP.
struct Cinder {
    http: reqwest::Client,
    /// The node's address.
    addr: SocketAddr,
    base: String,
}

/// A response, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `services` array of a list answer.
    fn services(&self) -> Vec<Value> {
        self.body["services"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The row of `host`/`binary` in a list answer.
    fn row(&self, host: &str, binary: &str) -> Value {
        self.services()
            .into_iter()
            .find(|r| r["host"] == host && r["binary"] == binary)
            .unwrap_or(Value::Null)
    }
}

impl Cinder {
    fn of(c: &InProcCluster, i: usize) -> Self {
        Self {
            http: reqwest::Client::new(),
            addr: c.configs[i].listen,
            base: format!("http://{}", c.configs[i].listen),
        }
    }

    /// A request that declares a body of `declared` bytes, with the headers of
    /// [`Cinder::send`], of which only the head is sent: for a body refused on its length
    /// (see `raw_http` for why the body is not sent).
    async fn send_head_only(
        &self,
        method: Method,
        path: &str,
        declared: u64,
    ) -> anyhow::Result<Answer> {
        let raw = raw_http::head_only(
            self.addr,
            method.as_str(),
            path,
            &[
                ("x-auth-token", ":admin"),
                ("accept", "application/json"),
                ("content-type", "application/json"),
            ],
            declared,
        )
        .await?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &raw.headers {
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.as_bytes())?,
                reqwest::header::HeaderValue::from_str(value)?,
            );
        }
        let text = raw.text();
        Ok(Answer {
            status: raw.status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        version: Option<&str>,
        body: Option<String>,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-auth-token", ":admin")
            .header("accept", "application/json");
        if let Some(v) = version {
            req = req.header("OpenStack-API-Version", v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            text,
            body,
        })
    }

    async fn get(&self, path: &str, version: Option<&str>) -> anyhow::Result<Answer> {
        self.send(Method::GET, path, version, None).await
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<Answer> {
        self.send(Method::PUT, path, None, Some(body.to_string()))
            .await
    }
}

/// Every answer carries a `req-<uuid>` request id; errors carry it twice.
fn assert_request_id(a: &Answer, what: &str) {
    let id = a.header("x-openstack-request-id").unwrap_or_default();
    assert!(
        is_request_id(id),
        "{what}: x-openstack-request-id must be req-<uuid4>, got {id:?}"
    );
    if a.status >= 400 {
        assert_eq!(
            a.header("x-compute-request-id"),
            Some(id),
            "{what}: an error carries the same id in x-compute-request-id"
        );
    } else {
        assert_eq!(
            a.header("x-compute-request-id"),
            None,
            "{what}: a success carries no x-compute-request-id"
        );
    }
}

/// An answer under `/v3` names its microversion and varies on it.
fn assert_version(a: &Answer, expected: &str, what: &str) {
    assert_eq!(
        a.header("openstack-api-version"),
        Some(expected),
        "{what}: OpenStack-API-Version answers the negotiated microversion"
    );
    assert_eq!(
        a.header("vary"),
        Some("OpenStack-API-Version"),
        "{what}: Vary names OpenStack-API-Version"
    );
}

/// A Cinder fault: `{"<name>": {"code", "message"}}` with the status and request ids.
fn assert_fault(a: &Answer, code: u16, name: &str, says: &str, what: &str) {
    assert_eq!(a.status, code, "{what}: status (body {})", a.text);
    assert_eq!(
        a.body[name]["code"], code,
        "{what}: fault document {{\"{name}\": {{\"code\": {code}}}}}, got {}",
        a.text
    );
    let message = a.body[name]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(says),
        "{what}: fault message should say {says:?}, said {message:?}"
    );
    assert_eq!(
        a.body.as_object().map(|o| o.len()),
        Some(1),
        "{what}: a fault document has exactly one key: {}",
        a.text
    );
    assert_request_id(a, what);
}

/// Whether `s` is Cinder's naive UTC time: `YYYY-MM-DDTHH:MM:SS.ffffff`, nothing more.
fn is_naive_time(s: &str) -> bool {
    let shape_ok = s.len() == 26
        && s.char_indices().all(|(i, ch)| match i {
            4 | 7 => ch == '-',
            10 => ch == 'T',
            13 | 16 => ch == ':',
            19 => ch == '.',
            _ => ch.is_ascii_digit(),
        });
    shape_ok && chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.6f").is_ok()
}

/// The sorted keys of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

/// A heartbeat with a zone and cluster.
fn beat(host: &str, binary: &str, zone: Option<&str>, cluster: Option<&str>) -> HeartbeatIn {
    HeartbeatIn {
        availability_zone: zone.map(str::to_string),
        cluster_name: cluster.map(str::to_string),
        ..HeartbeatIn::new(host, binary)
    }
}

/// The native (v1) record of one service, read linearizably.
async fn native_record(
    c: &InProcCluster,
    i: usize,
    host: &str,
    binary: &str,
) -> anyhow::Result<ServiceOut> {
    let list = c
        .client_of(i)
        .services(Some(host), Some(binary), Consistency::Linearizable)
        .await?;
    list.services
        .into_iter()
        .next()
        .with_context(|| format!("{host}/{binary} is not in the v1 list"))
}

/// Starts a three-node cluster; returns it with its leader and one follower.
async fn cluster(spec: ClusterSpec) -> anyhow::Result<(InProcCluster, usize, usize)> {
    init_test_tracing();
    let c = InProcCluster::start(spec).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    Ok((c, leader, (leader + 1) % 3))
}

// -------------------------------------------------------------------------------------------
// Discovery, microversions, faults
// -------------------------------------------------------------------------------------------

/// `GET /` answers 300 and `GET /v3`, `GET /v3/` answer 200, all with the versions document
/// (3.0 to 3.71, `self` built from the Host header); every answer carries a fresh request
/// id; the /v3 answers carry the microversion headers; a wrong method is a Cinder 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_documents_name_the_range_and_host() -> anyhow::Result<()> {
    let (mut c, _leader, follower) = cluster(ClusterSpec::default()).await?;
    let api = Cinder::of(&c, follower);
    let addr = c.configs[follower].listen.to_string();

    let root = api.get("/", None).await?;
    assert_eq!(root.status, 300, "GET / is 300 Multiple Choices");
    assert_request_id(&root, "GET /");
    assert_eq!(
        root.header("openstack-api-version"),
        None,
        "GET / is not under /v3: no microversion header"
    );
    let v = &root.body["versions"][0];
    assert_eq!(v["id"], "v3.0");
    assert_eq!(v["status"], "CURRENT");
    assert_eq!(v["version"], "3.71", "max microversion");
    assert_eq!(v["min_version"], "3.0", "min microversion");
    assert_eq!(
        v["media-types"][0]["type"],
        "application/vnd.openstack.volume+json;version=3"
    );
    let self_link = v["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["rel"] == "self"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        self_link["href"],
        format!("http://{addr}/v3/"),
        "self link from the Host header"
    );

    let mut ids = vec![root.header("x-openstack-request-id").map(str::to_string)];
    for path in ["/v3", "/v3/"] {
        let a = api.get(path, None).await?;
        assert_eq!(a.status, 200, "GET {path} answers the document directly");
        assert_eq!(a.body["versions"][0]["version"], "3.71", "GET {path}");
        assert_request_id(&a, path);
        assert_version(&a, "volume 3.0", path);
        ids.push(a.header("x-openstack-request-id").map(str::to_string));
    }
    let custom = api
        .http
        .get(format!("{}/v3/", api.base))
        .header("host", "volume.example.com:8776")
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert_eq!(
        custom["versions"][0]["links"][1]["href"], "http://volume.example.com:8776/v3/",
        "the self link follows the request's Host header"
    );
    ids.dedup();
    assert_eq!(ids.len(), 3, "each answer has its own request id: {ids:?}");

    let post = api.send(Method::POST, "/", None, Some("{}".into())).await?;
    assert_fault(&post, 405, "badMethod", "POST", "POST /");
    let del = api
        .send(Method::DELETE, "/v3/os-services", None, None)
        .await?;
    assert_fault(&del, 405, "badMethod", "DELETE", "DELETE /v3/os-services");
    assert_version(&del, "volume 3.0", "a fault under /v3");
    let unknown = api.get("/v3/volumes", Some("volume 3.5")).await?;
    assert_fault(
        &unknown,
        404,
        "itemNotFound",
        "could not be found",
        "GET /v3/volumes",
    );
    assert_version(&unknown, "volume 3.5", "a 404 under /v3");
    c.shutdown().await
}

/// `OpenStack-API-Version`: absent is 3.0, `volume latest` is 3.71, other services' entries
/// are skipped; no `volume` entry or a malformed version is a 400 `badRequest`, a version
/// outside 3.0..3.71 a 406 `computeFault`, both with request ids and no version header.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn microversions_negotiate_like_cinder() -> anyhow::Result<()> {
    let (mut c, leader, _) = cluster(ClusterSpec::default()).await?;
    let api = Cinder::of(&c, leader);
    for (sent, answered) in [
        (None, "volume 3.0"),
        (Some("volume 3.0"), "volume 3.0"),
        (Some("volume 3.7"), "volume 3.7"),
        (Some("volume 3.49"), "volume 3.49"),
        (Some("volume latest"), "volume 3.71"),
        (Some("compute 2.1, volume 3.32"), "volume 3.32"),
    ] {
        let a = api.get("/v3/os-services", sent).await?;
        assert_eq!(a.status, 200, "{sent:?} is served: {}", a.text);
        assert_version(&a, answered, &format!("request {sent:?}"));
        assert_request_id(&a, "list");
    }
    for bad in [
        "compute 2.1",
        "volume",
        "volume 3",
        "volume 3.07",
        "volume three",
    ] {
        let a = api.get("/v3/os-services", Some(bad)).await?;
        assert_fault(&a, 400, "badRequest", "", &format!("header {bad:?}"));
        assert_eq!(
            a.header("openstack-api-version"),
            None,
            "no version was negotiated for {bad:?}"
        );
    }
    for unserved in ["volume 3.72", "volume 2.0", "volume 4.0"] {
        let a = api.get("/v3/os-services", Some(unserved)).await?;
        assert_fault(
            &a,
            406,
            "computeFault",
            "Minimum is 3.0 and maximum is 3.71",
            &format!("header {unserved:?}"),
        );
    }
    c.shutdown().await
}

// -------------------------------------------------------------------------------------------
// The list
// -------------------------------------------------------------------------------------------

/// The list shows Cinder's fields per microversion (3.0; `cluster` from 3.7; `backend_state`
/// on cinder-volume rows from 3.49; replication fields on cinder-volume rows only), naive
/// UTC times equal to the heartbeat's, `up`/`enabled`; the host and binary filters are exact
/// and URL-decoded, unknown keys are ignored; any project segment routes; a follower answers
/// exactly as the leader, linearizably through it or stale from its own state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_shows_cinder_fields_and_filters() -> anyhow::Result<()> {
    let (mut c, leader, follower) = cluster(ClusterSpec::default()).await?;
    c.client_of(follower)
        .heartbeat(&[
            beat("node1@lvm", "cinder-volume", Some("az1"), Some("cl1@lvm")),
            beat("node1", "cinder-scheduler", None, None),
            beat("node2@ceph", "cinder-volume", None, None),
            beat("node2", "cinder-backup", None, None),
        ])
        .await?;
    let lead = Cinder::of(&c, leader);
    let fol = Cinder::of(&c, follower);

    let base = [
        "binary",
        "host",
        "zone",
        "status",
        "state",
        "updated_at",
        "disabled_reason",
    ];
    let repl = ["replication_status", "active_backend_id", "frozen"];
    for (version, other_extra, volume_extra) in [
        ("volume 3.0", vec![], repl.to_vec()),
        (
            "volume 3.7",
            vec!["cluster"],
            [&repl[..], &["cluster"]].concat(),
        ),
        (
            "volume 3.48",
            vec!["cluster"],
            [&repl[..], &["cluster"]].concat(),
        ),
        (
            "volume 3.49",
            vec!["cluster"],
            [&repl[..], &["cluster", "backend_state"]].concat(),
        ),
        (
            "volume latest",
            vec!["cluster"],
            [&repl[..], &["cluster", "backend_state"]].concat(),
        ),
    ] {
        let a = fol.get("/v3/os-services", Some(version)).await?;
        assert_eq!(a.status, 200, "{version}: {}", a.text);
        assert_eq!(a.services().len(), 4, "{version}: every service is listed");
        for row in a.services() {
            let extra = if row["binary"] == "cinder-volume" {
                &volume_extra
            } else {
                &other_extra
            };
            assert_eq!(
                keys(&row),
                sorted(&[&base[..], extra].concat()),
                "{version}: fields of a {} row",
                row["binary"]
            );
            assert_eq!(
                row["state"], "up",
                "{version}: a service that reported is up"
            );
            assert_eq!(row["status"], "enabled", "{version}: not disabled");
            assert_eq!(row["disabled_reason"], Value::Null);
            let t = row["updated_at"].as_str().unwrap_or_default();
            assert!(
                is_naive_time(t),
                "{version}: updated_at is naive UTC with 6 digits, got {t:?}"
            );
        }
    }

    let a = fol.get("/v3/os-services", Some("volume 3.49")).await?;
    let vol = a.row("node1@lvm", "cinder-volume");
    assert_eq!(vol["zone"], "az1", "zone is the reported availability zone");
    assert_eq!(vol["cluster"], "cl1@lvm", "cluster is the cluster name");
    assert_eq!(vol["backend_state"], "up", "backend_state follows state");
    assert_eq!(vol["replication_status"], "not-capable");
    assert_eq!(vol["active_backend_id"], Value::Null);
    assert_eq!(vol["frozen"], false);
    let sched = a.row("node1", "cinder-scheduler");
    assert_eq!(sched["zone"], "nova", "Cinder's default zone");
    assert_eq!(sched["cluster"], Value::Null, "no cluster is null at 3.7+");
    let native = native_record(&c, leader, "node1@lvm", "cinder-volume").await?;
    assert_eq!(
        vol["updated_at"].as_str(),
        native.updated_at.map(naive_utc).as_deref(),
        "updated_at is the heartbeat's leader time, in naive UTC"
    );

    let count = |a: &Answer| a.services().len();
    let hosts = |a: &Answer| -> Vec<String> {
        a.services()
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["host"].as_str().unwrap_or(""),
                    r["binary"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    for (query, expected) in [
        ("?host=node1%40lvm", vec!["node1@lvm/cinder-volume"]),
        ("?host=node1@lvm", vec!["node1@lvm/cinder-volume"]),
        ("?host=node1", vec!["node1/cinder-scheduler"]),
        (
            "?binary=cinder-volume",
            vec!["node1@lvm/cinder-volume", "node2@ceph/cinder-volume"],
        ),
        (
            "?host=node2&binary=cinder-backup",
            vec!["node2/cinder-backup"],
        ),
        ("?host=node2&binary=cinder-volume", vec![]),
        ("?host=nowhere", vec![]),
    ] {
        let a = fol.get(&format!("/v3/os-services{query}"), None).await?;
        assert_eq!(a.status, 200, "{query}: {}", a.text);
        assert_eq!(
            hosts(&a),
            expected,
            "filters are exact and decoded: {query}"
        );
    }
    let a = fol
        .get("/v3/os-services?foo=bar&withreplication=True&host=", None)
        .await?;
    assert_eq!(
        count(&a),
        4,
        "unknown query keys are ignored and an empty filter filters nothing"
    );
    let a = fol
        .get("/v3/os-services?consistency=eventual", None)
        .await?;
    assert_fault(
        &a,
        400,
        "badRequest",
        "consistency",
        "bad consistency level",
    );

    // Any project segment routes to the same resource.
    for path in [
        "/v3/admin/os-services",
        "/v3/0123456789abcdef0123456789abcdef/os-services",
        "/v3/os-services/",
    ] {
        let a = fol.get(path, Some("volume 3.49")).await?;
        assert_eq!(a.status, 200, "{path} routes");
        assert_eq!(count(&a), 4, "{path} lists every service");
    }

    // A follower serves a linearizable read itself, once it has applied the leader's read
    // index, and answers exactly as the leader; its stale answer is its own too.
    let via_follower = fol.get("/v3/os-services", Some("volume 3.49")).await?;
    let at_leader = lead.get("/v3/os-services", Some("volume 3.49")).await?;
    assert_eq!(
        via_follower.body, at_leader.body,
        "a follower answers exactly as the leader"
    );
    assert_eq!(
        via_follower.header("x-registry-served-by"),
        Some((follower as u64 + 1).to_string().as_str()),
        "a linearizable read at a follower is served by that follower"
    );
    assert_eq!(
        via_follower.header("x-registry-consistency"),
        Some("linearizable")
    );
    assert_version(
        &via_follower,
        "volume 3.49",
        "a follower's linearizable list",
    );
    let stale = fol
        .get("/v3/os-services?consistency=stale", Some("volume 3.49"))
        .await?;
    assert_eq!(stale.status, 200);
    assert_eq!(
        stale.header("x-registry-consistency"),
        Some("stale"),
        "stale reads say so"
    );
    assert_eq!(
        stale.header("x-registry-served-by"),
        Some((follower as u64 + 1).to_string().as_str()),
        "a stale read is served by the node asked"
    );
    assert_eq!(count(&stale), 4, "the follower's state has every service");
    c.shutdown().await
}

// -------------------------------------------------------------------------------------------
// Actions
// -------------------------------------------------------------------------------------------

/// The actions take Cinder's bodies and answer Cinder's documents, through a follower as
/// through the leader: disable-log-reason records the reason; disabling moves `modified_at`
/// but never the heartbeat's `updated_at` (the Cinder list shows the newer one); enable keeps
/// the reason; the old `service` key stands in for `binary` and `binary` wins; freeze and
/// thaw answer an empty 200; an unknown service is a 404 with Cinder's message, an unknown
/// host for freeze a 400; invalid bodies are 400s that change nothing; failover and log
/// actions are 501s; an unknown action is a 404; oversized bodies are a 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_take_cinder_bodies_and_answer_like_cinder() -> anyhow::Result<()> {
    let (mut c, leader, follower) = cluster(ClusterSpec::default()).await?;
    c.client_of(leader)
        .heartbeat(&[
            beat("node1@lvm", "cinder-volume", None, None),
            beat("node1", "cinder-scheduler", None, None),
        ])
        .await?;
    let lead = Cinder::of(&c, leader);
    let fol = Cinder::of(&c, follower);
    let before = native_record(&c, leader, "node1@lvm", "cinder-volume").await?;

    // disable-log-reason through a follower.
    let a = fol
        .put(
            "/v3/os-services/disable-log-reason",
            json!({"host": "node1@lvm", "binary": "cinder-volume", "disabled_reason": "disk swap"}),
        )
        .await?;
    assert_eq!(a.status, 200, "disable-log-reason: {}", a.text);
    assert_eq!(
        a.body,
        json!({"host": "node1@lvm", "service": "", "binary": "cinder-volume",
               "status": "disabled", "disabled": true, "disabled_reason": "disk swap"}),
        "Cinder's disable-log-reason answer"
    );
    assert_request_id(&a, "disable-log-reason");
    assert_version(&a, "volume 3.0", "disable-log-reason");
    let after = native_record(&c, leader, "node1@lvm", "cinder-volume").await?;
    assert_eq!(
        after.updated_at, before.updated_at,
        "disabling never moves the heartbeat's updated_at (Cinder bug 1397167)"
    );
    assert!(
        after.modified_at > before.updated_at,
        "disabling moves modified_at past the last heartbeat: {:?} vs {:?}",
        after.modified_at,
        before.updated_at
    );
    assert_eq!(
        after.report_count, before.report_count,
        "no heartbeat counted"
    );
    let list = lead.get("/v3/os-services", None).await?;
    let row = list.row("node1@lvm", "cinder-volume");
    assert_eq!(row["status"], "disabled");
    assert_eq!(row["disabled_reason"], "disk swap");
    assert_eq!(row["state"], "up", "disabling does not change liveness");
    assert_eq!(
        row["updated_at"].as_str(),
        after.modified_at.map(naive_utc).as_deref(),
        "the list shows the newer of updated_at and modified_at"
    );

    // enable through the leader keeps the reason.
    let a = lead
        .put(
            "/v3/os-services/enable",
            json!({"host": "node1@lvm", "binary": "cinder-volume"}),
        )
        .await?;
    assert_eq!(
        a.body,
        json!({"host": "node1@lvm", "service": "", "binary": "cinder-volume",
               "status": "enabled", "disabled": false}),
        "Cinder's enable answer: {}",
        a.text
    );
    let row = fol
        .get("/v3/os-services?host=node1%40lvm", None)
        .await?
        .row("node1@lvm", "cinder-volume");
    assert_eq!(row["status"], "enabled");
    assert_eq!(
        row["disabled_reason"], "disk swap",
        "enable keeps the reason, as Cinder does"
    );

    // The old `service` key, through a project-scoped path.
    let a = fol
        .put(
            "/v3/admin/os-services/disable",
            json!({"host": "node1", "service": "cinder-scheduler"}),
        )
        .await?;
    assert_eq!(
        a.body,
        json!({"host": "node1", "service": "cinder-scheduler", "binary": "",
               "status": "disabled", "disabled": true}),
        "`service` stands in for `binary`, echoed as sent: {}",
        a.text
    );
    let a = fol
        .put(
            "/v3/os-services/enable",
            json!({"host": "node1", "service": "no-such-binary", "binary": "cinder-scheduler"}),
        )
        .await?;
    assert_eq!(a.status, 200, "`binary` wins over `service`: {}", a.text);
    let row = lead
        .get("/v3/os-services", None)
        .await?
        .row("node1", "cinder-scheduler");
    assert_eq!(
        row["status"], "enabled",
        "the binary named by `binary` was enabled"
    );

    // Unknown services: 404 with Cinder's message, from the leader and through a follower.
    for (api, who) in [(&lead, "leader"), (&fol, "follower")] {
        let a = api
            .put(
                "/v3/os-services/disable",
                json!({"host": "node1@lvm", "binary": "cinder-backup"}),
            )
            .await?;
        assert_fault(
            &a,
            404,
            "itemNotFound",
            "Service cinder-backup could not be found on host node1@lvm.",
            &format!("unknown service via the {who}"),
        );
        assert_eq!(
            a.body["itemNotFound"]["message"],
            "Service cinder-backup could not be found on host node1@lvm.",
            "Cinder's exact message"
        );
    }

    // Invalid bodies: 400 badRequest, nothing changes.
    let snapshot = native_record(&c, leader, "node1@lvm", "cinder-volume").await?;
    let long = "r".repeat(256);
    let bad: Vec<(&str, String, &str)> = vec![
        (
            "enable",
            r#"{"host":"node1@lvm","binary":"cinder-volume","colour":"red"}"#.into(),
            "Additional properties",
        ),
        (
            "enable",
            r#"{"host":"node1@lvm"}"#.into(),
            "'binary' is a required property",
        ),
        ("enable", r#"{"binary":"cinder-volume"}"#.into(), "'host'"),
        (
            "enable",
            r#"{"host":"","binary":"cinder-volume"}"#.into(),
            "host",
        ),
        (
            "enable",
            r#"{"host":7,"binary":"cinder-volume"}"#.into(),
            "not of type 'string'",
        ),
        (
            "enable",
            r#"{"host":"node1@lvm","binary":"cinder-volume","cluster":"c1"}"#.into(),
            "cluster",
        ),
        ("enable", r#"["node1@lvm"]"#.into(), "JSON object"),
        ("enable", "not json".into(), "Malformed request body"),
        ("enable", String::new(), "Malformed request body"),
        (
            "disable",
            r#"{"host":"node1@lvm","binary":"cinder-volume","disabled_reason":"x"}"#.into(),
            "Additional properties",
        ),
        (
            "disable-log-reason",
            r#"{"host":"node1@lvm","binary":"cinder-volume"}"#.into(),
            "disabled_reason",
        ),
        (
            "disable-log-reason",
            r#"{"host":"node1@lvm","binary":"cinder-volume","disabled_reason":""}"#.into(),
            "disabled_reason",
        ),
        (
            "disable-log-reason",
            r#"{"host":"node1@lvm","binary":"cinder-volume","disabled_reason":"   "}"#.into(),
            "blank",
        ),
        (
            "disable-log-reason",
            format!(
                r#"{{"host":"node1@lvm","binary":"cinder-volume","disabled_reason":"{long}"}}"#
            ),
            "1 to 255",
        ),
        (
            "freeze",
            r#"{"host":"node1@lvm","binary":"cinder-volume"}"#.into(),
            "Additional properties",
        ),
    ];
    for (action, body, says) in bad {
        let a = fol
            .send(
                Method::PUT,
                &format!("/v3/os-services/{action}"),
                None,
                Some(body.clone()),
            )
            .await?;
        assert_fault(&a, 400, "badRequest", says, &format!("{action} {body:?}"));
    }
    let unchanged = native_record(&c, leader, "node1@lvm", "cinder-volume").await?;
    assert_eq!(unchanged, snapshot, "refused requests changed nothing");

    // Freeze and thaw: 200 with an empty body; the list shows `frozen`.
    let a = fol
        .put("/v3/os-services/freeze", json!({"host": "node1@lvm"}))
        .await?;
    assert_eq!(
        (a.status, a.text.as_str()),
        (200, ""),
        "freeze answers an empty 200"
    );
    assert_request_id(&a, "freeze");
    let row = lead
        .get("/v3/os-services", None)
        .await?
        .row("node1@lvm", "cinder-volume");
    assert_eq!(row["frozen"], true, "freeze is listed");
    let a = lead
        .put(
            "/v3/os-services/thaw",
            json!({"host": "node1@lvm", "cluster": null}),
        )
        .await?;
    assert_eq!(
        (a.status, a.text.as_str()),
        (200, ""),
        "thaw answers an empty 200"
    );
    let row = fol
        .get("/v3/os-services", None)
        .await?
        .row("node1@lvm", "cinder-volume");
    assert_eq!(row["frozen"], false, "thaw is listed");
    for (api, who) in [(&lead, "leader"), (&fol, "follower")] {
        let a = api
            .put("/v3/os-services/freeze", json!({"host": "nowhere"}))
            .await?;
        assert_fault(
            &a,
            400,
            "badRequest",
            "nowhere",
            &format!("freeze of an unknown host via the {who}"),
        );
    }

    // Actions a registry cannot perform, unknown actions, wrong methods, huge bodies.
    for (action, body) in [
        (
            "failover_host",
            json!({"host": "node1@lvm", "backend_id": null}),
        ),
        ("failover", json!({"host": "node1@lvm", "backend_id": null})),
        (
            "set-log",
            json!({"level": "DEBUG", "binary": "cinder-volume", "server": null, "prefix": null}),
        ),
        (
            "get-log",
            json!({"binary": "cinder-volume", "server": null, "prefix": null}),
        ),
    ] {
        let a = fol.put(&format!("/v3/os-services/{action}"), body).await?;
        assert_fault(
            &a,
            501,
            "notImplemented",
            action,
            &format!("{action} is not implemented"),
        );
    }
    let a = fol
        .put("/v3/os-services/reboot", json!({"host": "node1@lvm"}))
        .await?;
    assert_fault(
        &a,
        404,
        "itemNotFound",
        "Unknown action 'reboot'",
        "unknown action",
    );
    let a = fol.get("/v3/os-services/enable", None).await?;
    assert_fault(&a, 405, "badMethod", "GET", "GET on an action");
    let a = fol
        .send_head_only(Method::PUT, "/v3/os-services/freeze", 2 * 1024 * 1024)
        .await?;
    assert_fault(&a, 413, "overLimit", "larger than", "a body over 1 MiB");
    c.shutdown().await
}

/// `state` comes from the registry's liveness: a service forced down is listed `down` (and
/// its backend `down`) while it still heartbeats; without a quorum a linearizable list and
/// any action fail fast with a Cinder-format 503 while a stale list still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forced_down_and_lost_quorum_read_as_cinder() -> anyhow::Result<()> {
    let (mut c, leader, follower) = cluster(ClusterSpec::default()).await?;
    let client = c.client_of(leader);
    client
        .heartbeat(&[beat("node1@lvm", "cinder-volume", None, None)])
        .await?;
    client
        .action(
            ServiceAction::ForceDown,
            "node1@lvm",
            Some("cinder-volume"),
            None,
        )
        .await?;
    client
        .heartbeat(&[beat("node1@lvm", "cinder-volume", None, None)])
        .await?;
    let fol = Cinder::of(&c, follower);
    let row = fol
        .get("/v3/os-services", Some("volume 3.49"))
        .await?
        .row("node1@lvm", "cinder-volume");
    assert_eq!(row["state"], "down", "forced down overrides heartbeats");
    assert_eq!(row["backend_state"], "down", "backend_state follows state");

    // Lose the quorum: stop the leader and one follower.
    let other = (0..3)
        .find(|i| *i != leader && *i != follower)
        .context("a third node")?;
    c.stop_node(leader).await?;
    c.stop_node(other).await?;
    let started = Instant::now();
    let a = fol.get("/v3/os-services", Some("volume 3.7")).await?;
    assert_fault(
        &a,
        503,
        "serviceUnavailable",
        "",
        "linearizable list without quorum",
    );
    assert_version(&a, "volume 3.7", "503 under /v3");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a read without quorum fails fast, took {:?}",
        started.elapsed()
    );
    let stale = fol
        .get("/v3/os-services?consistency=stale", Some("volume 3.7"))
        .await?;
    assert_eq!(stale.status, 200, "a stale list answers without a quorum");
    assert_eq!(stale.services().len(), 1, "from the follower's own state");
    let a = fol
        .put(
            "/v3/os-services/enable",
            json!({"host": "node1@lvm", "binary": "cinder-volume"}),
        )
        .await?;
    assert_fault(
        &a,
        503,
        "serviceUnavailable",
        "",
        "an action without quorum",
    );
    c.shutdown().await
}

// -------------------------------------------------------------------------------------------
// The real python-cinderclient
// -------------------------------------------------------------------------------------------

/// A table as cinderclient prints it (prettytable): header and rows, cells trimmed.
#[derive(Debug)]
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn parse(out: &str) -> Self {
        let mut lines = out.lines().filter(|l| l.starts_with('|')).map(|l| {
            let inner = l.trim().trim_start_matches('|').trim_end_matches('|');
            inner
                .split('|')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        });
        let header = lines.next().unwrap_or_default();
        Self {
            header,
            rows: lines.collect(),
        }
    }

    /// The value of `column` in the row whose Host and Binary match.
    fn cell(&self, host: &str, binary: &str, column: &str) -> Option<&str> {
        let col = |name: &str| self.header.iter().position(|h| h == name);
        let (h, b, c) = (col("Host")?, col("Binary")?, col(column)?);
        self.rows
            .iter()
            .find(|r| {
                r.get(h).map(String::as_str) == Some(host)
                    && r.get(b).map(String::as_str) == Some(binary)
            })
            .and_then(|r| r.get(c))
            .map(String::as_str)
    }
}

/// Runs `cinder` (noauth, project `admin`) against `endpoint`; fails on a non-zero exit.
async fn cinder(bin: &Path, endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = cinder_status(bin, endpoint, args).await?;
    anyhow::ensure!(
        ok,
        "`cinder {}` against {endpoint} failed:\n{out}\n{err}",
        args.join(" ")
    );
    Ok(out)
}

/// Runs `cinder` and returns (success, stdout, stderr).
async fn cinder_status(
    bin: &Path,
    endpoint: &str,
    args: &[&str],
) -> anyhow::Result<(bool, String, String)> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["--os-auth-type", "noauth", "--os-project-id", "admin"])
        .args(["--os-endpoint", endpoint])
        .args(args)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("OS_") || key.starts_with("CINDER") {
            cmd.env_remove(key);
        }
    }
    run(&mut cmd, Duration::from_secs(120)).await
}

/// The real python-cinderclient 9.x, installed by the test and run unchanged with
/// `noauth`, works against a three-node cluster through a follower and the leader:
/// `service-list` prints the columns of the negotiated microversion (3.71: Cluster,
/// Disabled Reason, Backend State; 3.0: neither Cluster nor Backend State) with `up` and
/// `enabled` rows for the services that heartbeated, `--host`/`--binary` filter,
/// `--withreplication True` adds the replication columns, a project-scoped endpoint works,
/// `service-disable --reason` and `service-enable` print Cinder's answers and take effect on
/// every node (the reason is kept on enable), and an unknown service prints Cinder's error
/// line with the request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_cinderclient_runs_unchanged() -> anyhow::Result<()> {
    let started = Instant::now();
    let (bin, version) = cinder_cli().await?;
    let installed = started.elapsed();
    let (mut c, leader, follower) = cluster(ClusterSpec::default()).await?;
    c.client_of(follower)
        .heartbeat(&[
            beat("node1@lvm", "cinder-volume", Some("az1"), Some("cl1@lvm")),
            beat("node1", "cinder-scheduler", None, None),
            beat("node2@lvm", "cinder-volume", None, None),
        ])
        .await?;
    let at_follower = format!("http://{}/v3", c.configs[follower].listen);
    let at_leader = format!("http://{}/v3", c.configs[leader].listen);

    // service-list at the client's newest microversion (3.71), through a follower.
    let t = Table::parse(&cinder(&bin, &at_follower, &["service-list"]).await?);
    assert_eq!(
        t.header,
        [
            "Binary",
            "Host",
            "Zone",
            "Status",
            "State",
            "Updated_at",
            "Cluster",
            "Disabled Reason",
            "Backend State"
        ],
        "columns at 3.71"
    );
    assert_eq!(t.rows.len(), 3, "one row per service: {t:?}");
    for (host, binary) in [
        ("node1@lvm", "cinder-volume"),
        ("node1", "cinder-scheduler"),
        ("node2@lvm", "cinder-volume"),
    ] {
        assert_eq!(t.cell(host, binary, "State"), Some("up"), "{host} is up");
        assert_eq!(
            t.cell(host, binary, "Status"),
            Some("enabled"),
            "{host} is enabled"
        );
        assert_eq!(
            t.cell(host, binary, "Disabled Reason"),
            Some("-"),
            "null prints -"
        );
        let updated = t.cell(host, binary, "Updated_at").unwrap_or_default();
        assert!(
            is_naive_time(updated),
            "Updated_at printed naive: {updated:?}"
        );
    }
    assert_eq!(t.cell("node1@lvm", "cinder-volume", "Zone"), Some("az1"));
    assert_eq!(
        t.cell("node1@lvm", "cinder-volume", "Cluster"),
        Some("cl1@lvm")
    );
    assert_eq!(t.cell("node1", "cinder-scheduler", "Cluster"), Some("-"));
    assert_eq!(
        t.cell("node1@lvm", "cinder-volume", "Backend State"),
        Some("up")
    );
    assert_eq!(
        t.cell("node1", "cinder-scheduler", "Backend State"),
        Some(""),
        "no backend_state on a scheduler row"
    );

    // 3.0 (no version header sent): no Cluster, no Backend State.
    let t = Table::parse(
        &cinder(
            &bin,
            &at_leader,
            &["--os-volume-api-version", "3.0", "service-list"],
        )
        .await?,
    );
    assert_eq!(
        t.header,
        [
            "Binary",
            "Host",
            "Zone",
            "Status",
            "State",
            "Updated_at",
            "Disabled Reason"
        ],
        "columns at 3.0"
    );
    assert_eq!(t.rows.len(), 3);

    // Filters, replication columns, a project-scoped endpoint.
    let t =
        Table::parse(&cinder(&bin, &at_follower, &["service-list", "--host", "node1@lvm"]).await?);
    assert_eq!(t.rows.len(), 1, "--host filters exactly: {t:?}");
    assert_eq!(t.cell("node1@lvm", "cinder-volume", "State"), Some("up"));
    let t = Table::parse(
        &cinder(
            &bin,
            &at_follower,
            &["service-list", "--binary", "cinder-volume"],
        )
        .await?,
    );
    assert_eq!(t.rows.len(), 2, "--binary filters: {t:?}");
    let t = Table::parse(
        &cinder(
            &bin,
            &at_leader,
            &["service-list", "--withreplication", "True"],
        )
        .await?,
    );
    for col in ["Replication Status", "Active Backend ID", "Frozen"] {
        assert!(
            t.header.iter().any(|h| h == col),
            "--withreplication shows {col}: {:?}",
            t.header
        );
    }
    assert_eq!(
        t.cell("node1@lvm", "cinder-volume", "Replication Status"),
        Some("not-capable")
    );
    assert_eq!(
        t.cell("node1@lvm", "cinder-volume", "Active Backend ID"),
        Some("-")
    );
    assert_eq!(
        t.cell("node1@lvm", "cinder-volume", "Frozen"),
        Some("False")
    );
    let scoped = format!("{at_follower}/admin");
    let t = Table::parse(&cinder(&bin, &scoped, &["service-list"]).await?);
    assert_eq!(
        t.rows.len(),
        3,
        "a project-scoped endpoint (/v3/admin) works"
    );

    // Disable with a reason through the follower; the leader lists it.
    let t = Table::parse(
        &cinder(
            &bin,
            &at_follower,
            &[
                "service-disable",
                "node1@lvm",
                "cinder-volume",
                "--reason",
                "disk swap",
            ],
        )
        .await?,
    );
    assert_eq!(t.header, ["Host", "Binary", "Status", "Disabled Reason"]);
    assert_eq!(
        t.rows,
        [["node1@lvm", "cinder-volume", "disabled", "disk swap"]],
        "service-disable prints Cinder's answer"
    );
    let t = Table::parse(&cinder(&bin, &at_leader, &["service-list"]).await?);
    assert_eq!(
        t.cell("node1@lvm", "cinder-volume", "Status"),
        Some("disabled")
    );
    assert_eq!(
        t.cell("node1@lvm", "cinder-volume", "Disabled Reason"),
        Some("disk swap")
    );
    assert_eq!(t.cell("node1@lvm", "cinder-volume", "State"), Some("up"));
    assert_eq!(
        t.cell("node2@lvm", "cinder-volume", "Status"),
        Some("enabled")
    );

    // Enable through the leader; the follower lists it, reason kept.
    let t = Table::parse(
        &cinder(
            &bin,
            &at_leader,
            &["service-enable", "node1@lvm", "cinder-volume"],
        )
        .await?,
    );
    assert_eq!(t.header, ["Host", "Binary", "Status"]);
    assert_eq!(t.rows, [["node1@lvm", "cinder-volume", "enabled"]]);
    let t = Table::parse(&cinder(&bin, &at_follower, &["service-list"]).await?);
    assert_eq!(
        t.cell("node1@lvm", "cinder-volume", "Status"),
        Some("enabled")
    );
    assert_eq!(
        t.cell("node1@lvm", "cinder-volume", "Disabled Reason"),
        Some("disk swap"),
        "enable keeps the reason"
    );

    // An unknown service: Cinder's error line, with the request id.
    let (ok, out, err) = cinder_status(
        &bin,
        &at_follower,
        &["service-disable", "nohost", "cinder-volume"],
    )
    .await?;
    assert!(!ok, "disabling an unknown service fails: {out}");
    assert!(
        err.contains("ERROR: Service cinder-volume could not be found on host nohost. (HTTP 404) (Request-ID: req-"),
        "cinderclient prints Cinder's 404 line: {err}"
    );

    let total = started.elapsed();
    eprintln!(
        "python-cinderclient {version}: ready in {installed:?} (install or cached venv), \
         whole test {total:?}"
    );
    c.shutdown().await
}
