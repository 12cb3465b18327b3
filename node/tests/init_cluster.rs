//! `registryctl init-cluster` writes configs that the node's own loader takes: every member in
//! every config, the secret and keys private, only the tokens' digests in the configs, the
//! certificates loadable as the node's TLS, and nothing overwritten on a second run.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use clap::Parser;
use registry_api::auth::{hash_token, Role};
use registry_node::cli::{execute, Cli};
use registry_node::NodeConfig;

/// Runs `registryctl ARGS` in this process; answers what it prints.
async fn registryctl(args: &[&str]) -> Result<String, String> {
    let cli = Cli::try_parse_from(std::iter::once("registryctl").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    execute(cli).await.map_err(|e| e.to_string())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The token printed for `role` in the summary (`  admin    TOKEN`).
fn printed_token(summary: &str, role: &str) -> String {
    summary
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(role)).then(|| words.next().map(str::to_string))?
        })
        .unwrap_or_else(|| panic!("no {role} token in:\n{summary}"))
}

/// Three members with tokens and TLS: each `nodeN.toml` loads through `NodeConfig::load`
/// with its own id and listen address, all three peers, the data directory of `{id}`, an
/// `[auth]` whose secret file and token digests load (the digests those of the printed
/// tokens, which appear in no file but `tokens/ROLE.env`), and a `[tls]` whose files load
/// as the node's TLS; secret and keys are mode 0600; `first-start.env` asks for
/// `--bootstrap`; `client.env` names every endpoint and the client's files.
#[tokio::test]
async fn generated_configs_load_through_the_node_loader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("cluster");
    let out_s = out.display().to_string();
    let summary = registryctl(&[
        "init-cluster",
        "--node",
        "1=127.0.0.1:21001",
        "--node",
        "2=127.0.0.2:21002",
        "--node",
        "3=localhost:21003",
        "--out",
        &out_s,
        "--data-dir",
        "data/node{id}",
        "--tls",
        "--cert-days",
        "30",
        "--write-tokens",
    ])
    .await
    .expect("init-cluster");
    let tokens: Vec<(Role, String)> = [
        (Role::Admin, "admin"),
        (Role::Reporter, "reporter"),
        (Role::Reader, "reader"),
    ]
    .into_iter()
    .map(|(r, name)| (r, printed_token(&summary, name)))
    .collect();
    let mut all_text = String::new();
    for id in 1..=3u64 {
        let path = out.join(format!("node{id}.toml"));
        let text = std::fs::read_to_string(&path).expect("config");
        all_text.push_str(&text);
        let c = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(c.node_id, id);
        let listen = ["127.0.0.1:21001", "127.0.0.2:21002", "0.0.0.0:21003"];
        assert_eq!(c.listen.to_string(), listen[id as usize - 1]);
        let peers: Vec<(u64, &str)> = c.peers.iter().map(|p| (p.id, p.addr.as_str())).collect();
        assert_eq!(
            peers,
            [
                (1, "127.0.0.1:21001"),
                (2, "127.0.0.2:21002"),
                (3, "localhost:21003")
            ]
        );
        assert_eq!(c.data_dir, out.join(format!("data/node{id}")));
        c.openraft_config().expect("valid Raft settings");
        c.auth
            .load()
            .expect("the auth section loads (secret file, tokens)");
        let digests: Vec<(Role, String)> = c
            .auth
            .tokens
            .iter()
            .map(|t| (t.role, t.sha256.clone()))
            .collect();
        let want: Vec<(Role, String)> = tokens.iter().map(|(r, t)| (*r, hash_token(t))).collect();
        assert_eq!(
            digests, want,
            "the configs hold the printed tokens' digests"
        );
        let tls = c.tls.expect("a [tls] section");
        assert_eq!(tls.cert, out.join(format!("node{id}.pem")));
        registry_api::transport::tls::NodeTls::load(&tls)
            .unwrap_or_else(|e| panic!("node {id}'s certificate loads: {e}"));
        assert_eq!(mode(&out.join(format!("node{id}-key.pem"))), 0o600);
    }
    for (_, token) in &tokens {
        assert_eq!(token.len(), 64, "32 random bytes in hex");
        let digest = registryctl(&["hash-token", token])
            .await
            .expect("hash-token");
        assert!(
            all_text.contains(&format!("sha256 = \"{}\"", digest.trim())),
            "`registryctl hash-token` gives the digest the configs hold"
        );
        assert!(!all_text.contains(token.as_str()), "no token in a config");
    }
    for f in [
        "cluster-secret",
        "ca-key.pem",
        "client-key.pem",
        "tokens/admin.env",
    ] {
        assert_eq!(mode(&out.join(f)), 0o600, "{f} is private");
    }
    let secret = std::fs::read_to_string(out.join("cluster-secret")).expect("secret");
    assert_eq!(secret.trim().len(), 64, "a 32-byte secret in hex");
    let reporter = std::fs::read_to_string(out.join("tokens/reporter.env")).expect("file");
    assert_eq!(reporter.trim(), format!("REGISTRY_TOKEN={}", tokens[1].1));
    let first = std::fs::read_to_string(out.join("first-start.env")).expect("file");
    assert!(
        first.lines().any(|l| l == "REGISTRY_NODE_ARGS=--bootstrap"),
        "{first}"
    );
    let env = std::fs::read_to_string(out.join("client.env")).expect("file");
    assert!(
        env.lines()
            .any(|l| l == "REGISTRY_ENDPOINTS=127.0.0.1:21001,127.0.0.2:21002,localhost:21003"),
        "{env}"
    );
    assert!(
        env.contains(&format!("REGISTRY_CACERT={}", out.join("ca.pem").display())),
        "{env}"
    );

    // A second run into the same directory writes nothing: no secret is ever replaced.
    let before = std::fs::read_to_string(out.join("cluster-secret")).expect("secret");
    let e = registryctl(&["init-cluster", "--node", "1=127.0.0.1:1", "--out", &out_s])
        .await
        .expect_err("refused");
    assert!(e.contains("exists already"), "{e}");
    assert_eq!(
        std::fs::read_to_string(out.join("cluster-secret")).expect("secret"),
        before
    );
}

/// `--no-client-tokens` (the local demo): `mode = "disabled"`, no token made or printed, the
/// secret made all the same; without `--tls` no `[tls]` section and no certificate.
#[tokio::test]
async fn without_tokens_or_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("demo");
    let summary = registryctl(&[
        "init-cluster",
        "--node",
        "1=127.0.0.1:21001",
        "--out",
        &out.display().to_string(),
        "--no-client-tokens",
    ])
    .await
    .expect("init-cluster");
    assert!(summary.contains("No client tokens"), "{summary}");
    let c = NodeConfig::load(&out.join("node1.toml")).expect("loads");
    assert_eq!(c.auth.mode, registry_node::config::AuthMode::Disabled);
    assert!(c.auth.tokens.is_empty() && c.tls.is_none());
    assert_eq!(
        c.data_dir,
        Path::new("/var/lib/registry-node"),
        "the default"
    );
    c.auth.load().expect("the secret file loads");
    assert!(!out.join("ca.pem").exists() && !out.join("tokens").exists());
}

/// Members that cannot form a cluster are refused before anything is written.
#[tokio::test]
async fn duplicate_members_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("x");
    let out_s = out.display().to_string();
    for nodes in [["1=h:1", "1=h:2"], ["1=h:1", "2=h:1"]] {
        let e = registryctl(&[
            "init-cluster",
            "--node",
            nodes[0],
            "--node",
            nodes[1],
            "--out",
            &out_s,
        ])
        .await
        .expect_err("refused");
        assert!(e.contains("unique"), "{e}");
    }
    assert!(!out.exists(), "nothing written");
    let e = registryctl(&[
        "init-cluster",
        "--node",
        "1=h:1",
        "--out",
        &out_s,
        "--cert-days",
        "3",
    ])
    .await
    .expect_err("--cert-days needs --tls");
    assert!(e.contains("--tls"), "{e}");
}
