//! Config files: what is refused and why, the cluster secret, the `[tls]` section (the
//! configs `registryctl init-cluster` writes, `local-cluster.sh`'s among them, are loaded in
//! `init_cluster.rs`).

use std::path::Path;

use registry_node::NodeConfig;

/// Refused configs say what is wrong; a too-short `service_down_time` is corrected to
/// 2.5 x `report_interval`, as Cinder does.
#[test]
fn invalid_configs_are_refused() {
    let base = r#"
node_id = 1
listen = "127.0.0.1:0"
data_dir = "/tmp/x"
[[peers]]
id = 1
addr = "127.0.0.1:1"
[auth]
mode = "disabled"
"#;
    let parse = |extra: &str| -> Result<NodeConfig, String> {
        let text = format!("{extra}\n{base}");
        let c: NodeConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())
    };
    assert!(parse("").is_ok());
    let e = parse("colour = \"red\"").unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
    let e = parse("service_down_time = \"sixty\"").unwrap_err();
    assert!(e.contains("service_down_time"), "{e}");
    let c = parse("service_down_time = \"5s\"\nreport_interval = \"10s\"")
        .expect("corrected, not refused");
    assert_eq!(c.service_down_time, std::time::Duration::from_secs(25));
    assert_eq!(
        parse("").expect("valid").max_concurrent_requests,
        registry_node::config::DEFAULT_MAX_CONCURRENT_REQUESTS,
        "a config without max_concurrent_requests gets the default"
    );
    let e = parse("max_concurrent_requests = 0").unwrap_err();
    assert!(e.contains("max_concurrent_requests must be 1 to"), "{e}");
    assert_eq!(
        parse("").expect("valid").group_commit_linger,
        std::time::Duration::from_millis(2),
        "a config without group_commit_linger gets the default"
    );
    for (linger, ms) in [("\"0ms\"", 0), ("\"10ms\"", 10), ("\"50ms\"", 50)] {
        let c = parse(&format!("group_commit_linger = {linger}")).expect("accepted");
        assert_eq!(c.group_commit_linger, std::time::Duration::from_millis(ms));
    }
    let e = parse("group_commit_linger = \"51ms\"").unwrap_err();
    assert!(
        e.contains("group_commit_linger must be at most 50ms"),
        "{e}"
    );
    let text = base.replace("node_id = 1", "node_id = 7");
    let c: NodeConfig = toml::from_str(&text).expect("parses");
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("not among the peers"), "{e}");
}

/// The cluster secret is required whatever the client mode: `mode = "disabled"` turns off
/// client tokens, never the check between nodes.
#[test]
fn a_cluster_secret_is_required_in_every_mode() {
    let auth = |section: &str| -> Result<(), String> {
        let text = format!(
            "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\n\
             [[peers]]\nid = 1\naddr = \"127.0.0.1:1\"\n[auth]\n{section}"
        );
        let c: NodeConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        c.auth.load().map(|_| ()).map_err(|e| e.to_string())
    };
    let token = "[[auth.tokens]]\nrole = \"admin\"\nsha256 = \"\
                 0000000000000000000000000000000000000000000000000000000000000000\"\n";
    for mode in [
        "mode = \"disabled\"\n".to_string(),
        format!("mode = \"tokens\"\n{token}"),
    ] {
        let e = auth(&mode).expect_err("no secret");
        assert!(e.contains("cluster_secret"), "{mode}: {e}");
        let with = format!("cluster_secret = \"a-secret-of-enough-length\"\n{mode}");
        auth(&with).unwrap_or_else(|e| panic!("{with}: {e}"));
        let short = format!("cluster_secret = \"short\"\n{mode}");
        let e = auth(&short).expect_err("a short secret");
        assert!(e.contains("at least 16"), "{short}: {e}");
    }
}

/// A `[tls]` section is optional; its paths are resolved against the config file's
/// directory, `require_client_cert` defaults to false, unknown fields are refused, and a
/// file that is not there is refused naming it.
#[test]
fn tls_section_paths_resolve_against_the_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
                [[peers]]\nid = 1\naddr = \"127.0.0.1:1\"\n\
                [auth]\nmode = \"disabled\"\ncluster_secret = \"a-secret-of-enough-length\"\n";
    let load = |extra: &str| {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, format!("{base}{extra}")).expect("write config");
        NodeConfig::load(&path).map_err(|e| e.to_string())
    };
    assert_eq!(load("").expect("without [tls]").tls, None);
    let c = load("[tls]\ncert = \"tls/node.pem\"\nkey = \"/abs/key.pem\"\nca = \"ca.pem\"\n")
        .expect("with [tls]");
    let tls = c.tls.expect("the section");
    assert_eq!(
        tls.cert,
        dir.path().join("tls/node.pem"),
        "relative to the file"
    );
    assert_eq!(tls.key, Path::new("/abs/key.pem"), "absolute stays");
    assert_eq!(tls.ca, dir.path().join("ca.pem"));
    assert!(
        !tls.require_client_cert,
        "client certificates optional by default"
    );
    let e = load("[tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\nverify = true\n").unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
    let e = registry_api::transport::tls::NodeTls::load(&tls)
        .expect_err("no such files")
        .to_string();
    assert!(
        e.contains("tls.ca") && e.contains(&dir.path().join("ca.pem").display().to_string()),
        "the error names the file: {e}"
    );
}

/// A `cluster_secret_file` (as `registryctl init-cluster` writes it): its first line is the
/// secret sent, each further non-empty line a secret also accepted, beside those of
/// `accepted_cluster_secrets`: the rotation of the README can be done in the file.
#[test]
fn a_cluster_secret_file_sends_its_first_line_and_accepts_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("cluster-secret");
    let config = dir.path().join("node.toml");
    let load = |lines: &str, accepted: &str| {
        std::fs::write(&secret, lines).expect("write secret");
        std::fs::write(
            &config,
            format!(
                "node_id = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
                 [[peers]]\nid = 1\naddr = \"127.0.0.1:1\"\n[auth]\nmode = \"disabled\"\n\
                 cluster_secret_file = \"cluster-secret\"\naccepted_cluster_secrets = [{accepted}]\n"
            ),
        )
        .expect("write config");
        NodeConfig::load(&config)
            .and_then(|c| c.auth.load())
            .expect("loads")
    };
    let auth = load("the-new-secret-0123\n\nthe-old-secret-4567\n", "");
    assert_eq!(
        auth.secret(),
        "the-new-secret-0123",
        "the first line is sent"
    );
    assert_eq!(auth.also_accepted(), 1, "the second is accepted too");
    let auth = load("the-new-secret-0123\n", "\"the-old-secret-4567\"");
    assert_eq!(
        (auth.secret(), auth.also_accepted()),
        ("the-new-secret-0123", 1)
    );
}
