//! Egress of allowlist sandboxes through the node's proxy, in real busybox sandboxes on the
//! local Docker: an allowlisted name (pointed at a local test server by a resolve override)
//! answers over plain HTTP and over HTTPS through a CONNECT tunnel; other names, wildcard misses, direct
//! addresses and other protocols are refused with a reason and counted; an allowlist update
//! applies to running sandboxes; the sandbox's network is internal and its proxy environment
//! points at the network's gateway.

use agentvm::scheduler::egress::EgressConfig;
use agentvm::scheduler::{ExecRequest, NetworkPolicy, SandboxRequest, Scheduler};
use agentvm::{Command, Response, Runtime, TemplateGetRequest, TemplateListRequest};
use agentvm_e2e::docker::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stand-in for an internet host: answers every request `200 hello <path>` and keeps each
/// request head it received.
struct Upstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(head);
                let body = format!("hello {path}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Upstream { addr, heads }
}

/// A scheduler whose egress proxies resolve the test names to loopback and listen on a free
/// port (tests run in parallel on one engine).
async fn scheduler() -> Scheduler {
    let mut egress = EgressConfig {
        port: 0,
        ..Default::default()
    };
    egress.resolve = EgressConfig::parse_resolve(&[
        "api.egress-test.invalid=127.0.0.1".into(),
        "other.egress-test.invalid=127.0.0.1".into(),
        "a.wild.egress-test.invalid=127.0.0.1".into(),
        "wild.egress-test.invalid=127.0.0.1".into(),
    ])
    .unwrap();
    let mut config = fast_config();
    config.egress = egress;
    local_scheduler(config).await
}

/// Runs `script` in the sandbox with `$PH`/`$PP` set to the proxy's host and port (from its
/// `HTTP_PROXY`), returning stdout.
async fn sh(s: &Scheduler, id: &str, script: &str) -> String {
    let full = format!("p=${{HTTP_PROXY#http://}}; PH=${{p%:*}}; PP=${{p##*:}}; {script}");
    s.exec_collect(id, ExecRequest::shell(full))
        .await
        .unwrap()
        .stdout
}

fn get(url: &str, host: &str) -> String {
    format!("printf 'GET {url} HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 5 $PH $PP")
}

async fn remove_networks(s: &Scheduler) {
    let d = local().await;
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("agentvm.instance={}", s.instance())],
    );
    let opts = bollard::query_parameters::ListNetworksOptionsBuilder::new()
        .filters(&filters)
        .build();
    for n in d.list_networks(Some(opts)).await.unwrap_or_default() {
        if let Some(name) = n.name {
            let _ = d.remove_network(&name).await;
        }
    }
}

#[tokio::test]
async fn allowlisted_hosts_pass_and_everything_else_is_refused_and_counted() {
    if !require_docker().await {
        return;
    }
    let up = upstream().await;
    let port = up.addr.port();
    let s = scheduler().await;
    let mut spec = busybox_spec();
    spec.network = NetworkPolicy::Allowlist {
        hosts: vec![
            "api.egress-test.invalid".into(),
            "*.wild.egress-test.invalid".into(),
        ],
    };
    s.create_template("egress-allow", spec.clone())
        .await
        .unwrap();
    let sbx = s
        .create_sandbox(SandboxRequest::new("egress-allow"))
        .await
        .unwrap();
    let id = sbx.id.as_str();

    // The way out is the proxy on the internal network's gateway, named in the environment.
    let env = sh(&s, id, "env").await;
    assert!(env.contains("HTTP_PROXY=http://"), "{env}");
    assert!(env.contains("https_proxy=http://"), "{env}");
    let d = local().await;
    let net = d
        .inspect_network(
            &sbx.network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    assert_eq!(net.internal, Some(true), "{net:?}");
    let gateway = net.ipam.unwrap().config.unwrap()[0]
        .gateway
        .clone()
        .unwrap();
    assert!(
        env.contains(&format!("HTTP_PROXY=http://{gateway}:")),
        "{env}"
    );
    let info = d
        .inspect_container(
            sbx.docker_container_id.as_deref().unwrap(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let nets: Vec<String> = info
        .network_settings
        .unwrap()
        .networks
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(nets, vec![sbx.network.clone()], "only the internal network");

    // The allowlisted name answers, with the URL's host and Connection: close upstream.
    let out = sh(
        &s,
        id,
        &get(
            &format!("http://api.egress-test.invalid:{port}/ok?q=1"),
            "spoofed.example",
        ),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("hello /ok?q=1"), "{out}");
    {
        let heads = up.heads.lock().unwrap();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].starts_with("GET /ok?q=1 HTTP/1.1\r\n"),
            "{heads:?}"
        );
        assert!(
            heads[0].contains(&format!("Host: api.egress-test.invalid:{port}\r\n")),
            "{heads:?}"
        );
        assert!(!heads[0].contains("spoofed"), "{heads:?}");
        assert!(heads[0].contains("Connection: close\r\n"), "{heads:?}");
    }

    // A subdomain of the wildcard passes; the wildcard's own name does not.
    let out = sh(
        &s,
        id,
        &get(&format!("http://A.Wild.egress-test.invalid.:{port}/w"), "x"),
    )
    .await;
    assert!(out.ends_with("hello /w"), "{out}");
    let before = s.metrics().egress_refusals;
    for url in [
        format!("http://wild.egress-test.invalid:{port}/no"),
        format!("http://other.egress-test.invalid:{port}/no"),
    ] {
        let out = sh(&s, id, &get(&url, "x")).await;
        assert!(out.starts_with("HTTP/1.1 403 Forbidden"), "{url}: {out}");
        assert!(
            out.contains("X-Agentvm-Egress-Refused: not_allowed"),
            "{out}"
        );
        assert!(
            out.contains("is not on this sandbox's egress allowlist"),
            "{out}"
        );
    }

    // Addresses are refused unless listed: the test server's own, and the node's gateway.
    for url in [
        format!("http://127.0.0.1:{port}/no"),
        format!("http://{gateway}:{port}/no"),
        "http://203.0.113.9/no".to_string(),
    ] {
        let out = sh(&s, id, &get(&url, "x")).await;
        assert!(
            out.contains("X-Agentvm-Egress-Refused: direct_ip"),
            "{url}: {out}"
        );
    }

    // CONNECT: refused for other hosts, tunnelled for the allowlisted one (the bytes after
    // the request go through unchanged).
    let out = sh(
        &s,
        id,
        &format!(
            "printf 'CONNECT other.egress-test.invalid:{port} HTTP/1.1\\r\\n\\r\\n' | nc -w 5 $PH $PP"
        ),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 403 Forbidden"), "{out}");
    // A tunnel carries TLS only: plain HTTP inside one never reaches the host.
    let out = sh(
        &s,
        id,
        &format!(
            "printf 'CONNECT api.egress-test.invalid:{port} HTTP/1.1\\r\\n\\r\\nGET /tunnel HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n' | nc -w 5 $PH $PP"
        ),
    )
    .await;
    assert_eq!(out, "HTTP/1.1 200 Connection established\r\n\r\n");

    // Other protocols and origin-form requests are not proxied.
    let out = sh(
        &s,
        id,
        "printf 'SSH-2.0-OpenSSH_9.0\\r\\n\\r\\n' | nc -w 5 $PH $PP",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request"), "{out}");
    let out = sh(&s, id, &get("/ok", "api.egress-test.invalid")).await;
    assert!(out.contains("with an absolute URL"), "{out}");
    let out = sh(&s, id, &get("https://api.egress-test.invalid/", "x")).await;
    assert!(out.contains("only http:// URLs and CONNECT"), "{out}");

    // Nothing refused reached the test server, and every refusal was counted by reason.
    assert_eq!(up.heads.lock().unwrap().len(), 2);
    let after = s.metrics().egress_refusals;
    let grew = |r: &str| after[r] - before.get(r).copied().unwrap_or(0);
    assert_eq!(grew("not_allowed"), 3, "{after:?}");
    assert_eq!(grew("direct_ip"), 3, "{after:?}");
    assert_eq!(grew("bad_request"), 4, "{after:?}");
    assert_eq!(grew("local_address"), 0, "{after:?}");

    // No direct route: an outside address is not reachable without the proxy.
    let out = sh(
        &s,
        id,
        "nc -w 2 203.0.113.9 80 </dev/null && echo reached || echo refused",
    )
    .await;
    assert_eq!(out.trim(), "refused");

    // An allowlist update applies to the running sandbox.
    spec.network = NetworkPolicy::Allowlist {
        hosts: vec!["other.egress-test.invalid".into()],
    };
    s.update_template("egress-allow", spec).await.unwrap();
    let out = sh(
        &s,
        id,
        &get(&format!("http://other.egress-test.invalid:{port}/now"), "x"),
    )
    .await;
    assert!(out.ends_with("hello /now"), "{out}");
    let out = sh(
        &s,
        id,
        &get(&format!("http://api.egress-test.invalid:{port}/gone"), "x"),
    )
    .await;
    assert!(out.contains("not_allowed"), "{out}");

    s.delete_sandbox(id).await.unwrap();
    remove_networks(&s).await;
}

/// A name that resolves (without an override) to the node itself is refused even when it is
/// allowlisted: the proxy is never a way into the host.
#[tokio::test]
async fn allowlisted_names_that_resolve_to_the_node_are_refused() {
    if !require_docker().await {
        return;
    }
    let s = scheduler().await;
    let mut spec = busybox_spec();
    spec.network = NetworkPolicy::Allowlist {
        hosts: vec!["localhost".into()],
    };
    s.create_template("egress-local", spec).await.unwrap();
    let sbx = s
        .create_sandbox(SandboxRequest::new("egress-local"))
        .await
        .unwrap();
    let out = sh(&s, &sbx.id, &get("http://localhost:9/", "x")).await;
    assert!(out.starts_with("HTTP/1.1 403 Forbidden"), "{out}");
    assert!(
        out.contains("X-Agentvm-Egress-Refused: local_address"),
        "{out}"
    );
    assert!(s.metrics().egress_refusals["local_address"] >= 1);
    s.delete_sandbox(&sbx.id).await.unwrap();
    // No sandbox of it is left: deleting the template stops its proxy and removes its network.
    s.delete_template("egress-local").await.unwrap();
    assert_network_gone(&sbx.network, "the network went with its template").await;
    remove_networks(&s).await;
}

/// A template credential: sealed in the store (the redb file holds no trace of it), never in
/// a template as the commands return it, added by the proxy (replacing the sandbox's own
/// header) to requests for its host only, kept across an update that leaves it out, and
/// nowhere in the sandbox: not in its environment, not in any file it can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_added_by_the_proxy_and_never_reach_the_sandbox() {
    if !require_docker().await {
        return;
    }
    let up = upstream().await;
    let port = up.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let mut node = agentvm::scheduler::NodeRegistration::new("local", ENDPOINT);
    node.total_cpu_cores = Some(4.0);
    node.total_memory_mb = Some(8192);
    let mut config = fast_config();
    config.egress = EgressConfig {
        port: 0,
        resolve: EgressConfig::parse_resolve(&[
            "api.egress-test.invalid=127.0.0.1".into(),
            "other.egress-test.invalid=127.0.0.1".into(),
        ])
        .unwrap(),
        ..Default::default()
    };
    let vm = agentvm::AgentVm::builder()
        .data_dir(dir.path())
        .scheduler(Scheduler::builder().config(config).node(node))
        .open()
        .await
        .expect("open the runtime");
    let s = vm.scheduler().unwrap().clone();

    let marker = format!("{:016x}", rand::random::<u64>());
    let secret = format!("Bearer sk-egress-{marker}");
    let mut spec = busybox_spec();
    spec.network = NetworkPolicy::Allowlist {
        hosts: vec![
            "api.egress-test.invalid".into(),
            "other.egress-test.invalid".into(),
        ],
    };
    spec.credentials = vec![agentvm::scheduler::Credential {
        host: "api.egress-test.invalid".into(),
        header: "Authorization".into(),
        value: secret.clone(),
    }];
    let created = s
        .create_template("egress-cred", spec.clone())
        .await
        .unwrap();
    assert_eq!(created.spec.credentials[0].value, "", "returned redacted");

    // What clients get back, through the commands, never holds the value.
    let Response::TemplateGet(got) = vm
        .request(Command::TemplateGet(TemplateGetRequest {
            template_id: "egress-cred".into(),
        }))
        .await
        .unwrap()
    else {
        panic!("not a template_get_response")
    };
    let json = serde_json::to_string(&got).unwrap();
    assert!(json.contains("\"header\":\"Authorization\""), "{json}");
    assert!(!json.contains(&marker), "{json}");
    assert!(!json.contains("\"value\""), "{json}");
    let Response::TemplateList(list) = vm
        .request(Command::TemplateList(TemplateListRequest {}))
        .await
        .unwrap()
    else {
        panic!("not a template_list_response")
    };
    assert!(!serde_json::to_string(&list).unwrap().contains(&marker));
    // Stored sealed; the key file is private.
    let stored = s.template("egress-cred").await.unwrap();
    assert!(
        stored.spec.credentials[0].value.starts_with("sealed:v1:"),
        "{stored:?}"
    );
    let key = dir.path().join("secrets.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let sbx = s
        .create_sandbox(SandboxRequest::new("egress-cred"))
        .await
        .unwrap();
    let id = sbx.id.as_str();
    let ask = |host: &str, path: &str| {
        format!(
            "printf 'GET http://{host}:{port}{path} HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer from-sandbox\\r\\n\\r\\n' | nc -w 5 $PH $PP"
        )
    };
    let out = sh(&s, id, &ask("api.egress-test.invalid", "/cred")).await;
    assert!(out.ends_with("hello /cred"), "{out}");
    let out = sh(&s, id, &ask("other.egress-test.invalid", "/plain")).await;
    assert!(out.ends_with("hello /plain"), "{out}");
    {
        let heads = up.heads.lock().unwrap();
        assert_eq!(heads.len(), 2, "{heads:?}");
        let auth: Vec<&str> = heads[0]
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("authorization:"))
            .collect();
        assert_eq!(auth, [format!("Authorization: {secret}")], "{heads:?}");
        assert!(
            heads[1].contains("Authorization: Bearer from-sandbox\r\n"),
            "{heads:?}"
        );
        assert!(!heads[1].contains(&marker), "{heads:?}");
    }

    // Not in the sandbox: its environment, and every file it can read. The scan is shown to
    // find the marker where it is (a file written for the purpose) before it is trusted.
    let env = sh(&s, id, "env").await;
    assert!(env.contains("HTTP_PROXY="), "{env}");
    assert!(!env.contains(&marker), "{env}");
    // The commands never spell the marker out (executions are recorded, and the database
    // is checked below): a bracket in the pattern, a quote in the canary.
    let (head, tail) = marker.split_at(8);
    let scan = format!(
        "for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -rl -s '{head}[{}]{}' $d ;; esac; done; echo scanned",
        &tail[..1],
        &tail[1..]
    );
    let canary = format!(
        "mkdir -p /tmp/canary && echo {head}''{tail} > /tmp/canary/f && {scan}; rm -r /tmp/canary"
    );
    let out = sh(&s, id, &canary).await;
    assert_eq!(
        out, "/tmp/canary/f\nscanned\n",
        "the scan finds a planted marker"
    );
    let out = sh(&s, id, &scan).await;
    assert_eq!(out, "scanned\n", "the secret is in no readable file");
    let d = local().await;
    let info = d
        .inspect_container(
            sbx.docker_container_id.as_deref().unwrap(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert!(!format!("{:?}", info.config).contains(&marker));

    // An update that leaves the value out keeps it.
    let mut kept = spec.clone();
    kept.credentials[0].value = String::new();
    s.update_template("egress-cred", kept).await.unwrap();
    let out = sh(&s, id, &ask("api.egress-test.invalid", "/again")).await;
    assert!(out.ends_with("hello /again"), "{out}");
    assert!(up.heads.lock().unwrap()[2].contains(&secret));
    // A new credential without a value is refused.
    let mut missing = spec.clone();
    missing.credentials[0].header = "X-Api-Key".into();
    missing.credentials[0].value = String::new();
    let e = s.update_template("egress-cred", missing).await.unwrap_err();
    assert!(e.to_string().contains("has no value"), "{e}");

    s.delete_sandbox(id).await.unwrap();
    remove_networks(&s).await;
    vm.close().await;
    // At rest: the database file holds no trace of the value.
    let db = std::fs::read(dir.path().join("agentvm.redb")).unwrap();
    assert!(
        !db.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "the secret is in the database file"
    );
}

/// Credentials need an allowlist network, a header that may be set and a value without
/// line breaks.
#[tokio::test]
async fn bad_credentials_are_refused() {
    let s = Scheduler::builder().open().await.unwrap();
    let cred = |host: &str, header: &str, value: &str| agentvm::scheduler::Credential {
        host: host.into(),
        header: header.into(),
        value: value.into(),
    };
    let mut spec = busybox_spec();
    spec.credentials = vec![cred("api.example.com", "Authorization", "x")];
    let e = s.create_template("c1", spec.clone()).await.unwrap_err();
    assert!(
        e.to_string().contains("need an \"allowlist\" network"),
        "{e}"
    );
    spec.network = NetworkPolicy::Allowlist {
        hosts: vec!["api.example.com".into()],
    };
    for (c, want) in [
        (cred("api.example.com", "Host", "x"), "cannot be set"),
        (
            cred("api.example.com", "Bad Header", "x"),
            "not a header name",
        ),
        (
            cred("api.example.com", "X-Key", "a\r\nEvil: 1"),
            "line break",
        ),
        (cred("*.com", "X-Key", "a"), "top-level domain"),
        (cred("api.example.com", "X-Key", ""), "has no value"),
    ] {
        spec.credentials = vec![c];
        let e = s.create_template("c2", spec.clone()).await.unwrap_err();
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
}

/// A TLS stand-in for an internet host: `api.egress-test.invalid` and
/// `other.egress-test.invalid`, with a certificate from its own CA (returned, PEM), keeping
/// each request head.
async fn tls_upstream() -> (Upstream, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![
        "api.egress-test.invalid".to_string(),
        "other.egress-test.invalid".to_string(),
    ])
    .unwrap()
    .signed_by(&key, &issuer)
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let (seen, acceptor) = (seen.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(head);
                let body = format!("hello {path}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (Upstream { addr, heads }, ca_cert.pem())
}

/// HTTPS with credentials: the CONNECT to a host with credentials is intercepted with a leaf
/// from the node's CA (installed in the sandbox), the credential is added and the request
/// goes on over TLS verified against the upstream CA; a host without credentials is tunnelled
/// untouched (its own certificate reaches the client). The client is the test process (busybox
/// cannot verify TLS), through the sandbox's proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_credentials_are_added_by_intercepting_with_the_node_ca() {
    if !require_docker().await {
        return;
    }
    let (up, upstream_ca) = tls_upstream().await;
    let port = up.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let mut node = agentvm::scheduler::NodeRegistration::new("local", ENDPOINT);
    node.total_cpu_cores = Some(4.0);
    node.total_memory_mb = Some(8192);
    let mut config = fast_config();
    config.egress = EgressConfig {
        port: 0,
        resolve: EgressConfig::parse_resolve(&[
            "api.egress-test.invalid=127.0.0.1".into(),
            "other.egress-test.invalid=127.0.0.1".into(),
        ])
        .unwrap(),
        upstream_ca_pem: Some(upstream_ca.clone()),
        ..Default::default()
    };
    let vm = agentvm::AgentVm::builder()
        .data_dir(dir.path())
        .scheduler(Scheduler::builder().config(config).node(node))
        .open()
        .await
        .expect("open the runtime");
    let s = vm.scheduler().unwrap().clone();
    let secret = format!("Bearer sk-tls-{:016x}", rand::random::<u64>());
    let mut spec = busybox_spec();
    spec.network = NetworkPolicy::Allowlist {
        hosts: vec![
            "api.egress-test.invalid".into(),
            "other.egress-test.invalid".into(),
        ],
    };
    spec.credentials = vec![agentvm::scheduler::Credential {
        host: "api.egress-test.invalid".into(),
        header: "Authorization".into(),
        value: secret.clone(),
    }];
    s.create_template("egress-tls", spec).await.unwrap();
    let sbx = s
        .create_sandbox(SandboxRequest::new("egress-tls"))
        .await
        .unwrap();
    let id = sbx.id.as_str();

    // The node's CA is in the sandbox's trust store, and its TLS variables point there.
    let ca = s.egress_ca_pem().to_string();
    assert!(std::fs::read_to_string(dir.path().join("egress-ca.pem")).unwrap() == ca);
    let env = sh(&s, id, "env").await;
    assert!(
        env.contains("SSL_CERT_FILE=/etc/ssl/certs/agentvm-egress-bundle.pem"),
        "{env}"
    );
    let installed = sh(&s, id, "cat $NODE_EXTRA_CA_CERTS").await;
    assert_eq!(installed, ca);
    let bundle = sh(&s, id, "cat $SSL_CERT_FILE").await;
    assert!(bundle.contains(ca.trim()), "{bundle}");

    let proxy = env
        .lines()
        .find_map(|l| l.strip_prefix("HTTPS_PROXY="))
        .unwrap()
        .to_string();
    let client = |root: &str| {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(&proxy).unwrap())
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap()
    };
    // Intercepted: the node's CA verifies, the credential replaces the client's header.
    let r = client(&ca)
        .get(format!("https://api.egress-test.invalid:{port}/secure?x=1"))
        .header("Authorization", "Bearer from-client")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello /secure?x=1");
    {
        let heads = up.heads.lock().unwrap();
        assert_eq!(heads.len(), 1, "{heads:?}");
        let auth: Vec<&str> = heads[0]
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("authorization:"))
            .collect();
        assert_eq!(auth, [format!("Authorization: {secret}")], "{heads:?}");
    }
    // So a client trusting only the upstream's CA cannot talk to the intercepted host...
    assert!(client(&upstream_ca)
        .get(format!("https://api.egress-test.invalid:{port}/"))
        .send()
        .await
        .is_err());
    // ...while a host without credentials is tunnelled: its own certificate, no header added.
    let r = client(&upstream_ca)
        .get(format!("https://other.egress-test.invalid:{port}/plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello /plain");
    assert!(client(&ca)
        .get(format!("https://other.egress-test.invalid:{port}/"))
        .send()
        .await
        .is_err());
    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(!heads[1].contains("sk-tls-"), "{heads:?}");
    // A tunnel whose TLS names another host than its CONNECT is closed, and counted.
    let before = s.metrics().egress_refusals["not_allowed"];
    let proxy_addr = proxy.trim_start_matches("http://").to_string();
    let mut raw = tokio::net::TcpStream::connect(&proxy_addr).await.unwrap();
    raw.write_all(format!("CONNECT other.egress-test.invalid:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = [0u8; 39];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer[..], b"HTTP/1.1 200 Connection established\r\n\r\n");
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(
        rustls::pki_types::pem::PemObject::pem_slice_iter(upstream_ca.as_bytes())
            .map(|c| c.unwrap()),
    );
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let fronted = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::try_from("api.egress-test.invalid").unwrap(),
            raw,
        )
        .await;
    assert!(fronted.is_err(), "a fronted tunnel was let through");
    assert_eq!(s.metrics().egress_refusals["not_allowed"], before + 1);
    assert_eq!(up.heads.lock().unwrap().len(), 2);

    // Not allowlisted: refused before any TLS.
    assert!(client(&ca)
        .get(format!("https://elsewhere.egress-test.invalid:{port}/"))
        .send()
        .await
        .is_err());

    s.delete_sandbox(id).await.unwrap();
    remove_networks(&s).await;
    vm.close().await;
}

/// After a restart, an adopted allowlist sandbox gets its proxy back where its environment
/// says (the fixed egress port on its network's gateway), with its credentials still sealed
/// under the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_sandboxes_get_their_proxy_back_after_a_restart() {
    if !require_docker().await {
        return;
    }
    let up = upstream().await;
    let port = up.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let mut node = agentvm::scheduler::NodeRegistration::new("local", ENDPOINT);
        node.total_cpu_cores = Some(4.0);
        node.total_memory_mb = Some(8192);
        let mut config = fast_config();
        // The default, fixed port: what the adopted sandbox's environment names.
        config.egress.resolve =
            EgressConfig::parse_resolve(&["api.egress-test.invalid=127.0.0.1".into()]).unwrap();
        agentvm::AgentVm::builder()
            .data_dir(dir.path())
            .scheduler(Scheduler::builder().config(config).node(node))
            .open()
            .await
            .expect("open the runtime")
    };
    let vm = open().await;
    let s = vm.scheduler().unwrap().clone();
    let mut spec = busybox_spec();
    spec.network = NetworkPolicy::Allowlist {
        hosts: vec!["api.egress-test.invalid".into()],
    };
    spec.credentials = vec![agentvm::scheduler::Credential {
        host: "api.egress-test.invalid".into(),
        header: "X-Api-Key".into(),
        value: "restart-key".into(),
    }];
    s.create_template("egress-restart", spec).await.unwrap();
    let sbx = s
        .create_sandbox(SandboxRequest::new("egress-restart"))
        .await
        .unwrap();
    let url = format!("http://api.egress-test.invalid:{port}");
    let out = sh(&s, &sbx.id, &get(&format!("{url}/before"), "x")).await;
    assert!(out.ends_with("hello /before"), "{out}");
    drop(s);
    vm.close().await;
    drop(vm);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let vm = open().await;
    let s = vm.scheduler().unwrap().clone();
    let out = sh(&s, &sbx.id, &get(&format!("{url}/after"), "x")).await;
    assert!(out.ends_with("hello /after"), "{out}");
    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[1].contains("X-Api-Key: restart-key\r\n"), "{heads:?}");
    s.delete_sandbox(&sbx.id).await.unwrap();
    drop(s);
    vm.close().await;
    drop(vm);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A process that never ran the template's proxy: deleting the template has no proxy to
    // stop, and reconciliation (here, or a sweep first) finds its network on Docker and removes it.
    let vm = open().await;
    let s = vm.scheduler().unwrap().clone();
    s.delete_template("egress-restart").await.unwrap();
    s.reconcile().await.unwrap();
    assert_network_gone(&sbx.network, "the deleted template's network was removed").await;
    remove_networks(&s).await;
    vm.close().await;
}

/// Asserts that Docker no longer has `network` (a 404), saying `why` otherwise.
async fn assert_network_gone(network: &str, why: &str) {
    let gone = local()
        .await
        .inspect_network(
            network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await;
    assert!(
        gone.as_ref().is_err_and(|e| e.to_string().contains("404")),
        "{why}: {gone:?}"
    );
}
