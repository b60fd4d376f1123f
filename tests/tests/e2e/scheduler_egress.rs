//! Egress of allowlist sandboxes through the node's proxy, in real busybox sandboxes on the
//! local Docker: an allowlisted name (pointed at a local test server by a resolve override)
//! answers over plain HTTP and through a CONNECT tunnel; other names, wildcard misses, direct
//! addresses and other protocols are refused with a reason and counted; an allowlist update
//! applies to running sandboxes; the sandbox's network is internal and its proxy environment
//! points at the network's gateway.

use agentvm::scheduler::egress::EgressConfig;
use agentvm::scheduler::{ExecRequest, NetworkPolicy, SandboxRequest, Scheduler};
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
    let out = sh(
        &s,
        id,
        &format!(
            "printf 'CONNECT api.egress-test.invalid:{port} HTTP/1.1\\r\\n\\r\\nGET /tunnel HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n' | nc -w 5 $PH $PP"
        ),
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"),
        "{out}"
    );
    assert!(out.ends_with("hello /tunnel"), "{out}");

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
    assert_eq!(up.heads.lock().unwrap().len(), 3);
    let after = s.metrics().egress_refusals;
    let grew = |r: &str| after[r] - before.get(r).copied().unwrap_or(0);
    assert_eq!(grew("not_allowed"), 3, "{after:?}");
    assert_eq!(grew("direct_ip"), 3, "{after:?}");
    assert_eq!(grew("bad_request"), 3, "{after:?}");
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
    remove_networks(&s).await;
}
