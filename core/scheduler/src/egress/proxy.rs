//! The egress proxy: an HTTP/1.1 forward proxy that answers absolute-URI requests
//! (`GET http://host/path`) and `CONNECT host:port` tunnels for hosts on an allowlist, and
//! refuses everything else with a `403` (or `400`, `503`, `502`) whose body says why. Every
//! refusal is counted by reason.
//!
//! One request per connection: a forwarded request goes upstream with `Connection: close`,
//! and the connection ends when the exchange does. A tunnel lives until either side closes or
//! it idles past the idle timeout. Requests to hosts with credentials get them as headers; a
//! tunnel to such a host is intercepted (TLS terminated with the node CA's leaf) to add them.

use super::{EgressConfig, EgressCounters, Reason};
use crate::model::scheduler::egress::{parse_destination, Allowlist, Destination, HostPattern};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What one proxy enforces; replaced whole when its template changes.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    /// The hosts allowed.
    pub allow: Allowlist,
    /// Headers added to requests for their hosts (the template's credentials, opened).
    pub credentials: Vec<Injection>,
}

/// One credential as the proxy uses it.
pub(crate) struct Injection {
    /// The hosts it is for.
    pub host: HostPattern,
    /// The header it sets.
    pub header: String,
    /// The secret.
    pub value: String,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("host", &self.host)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Shared by the accept loop and every connection of one proxy.
pub(crate) struct ProxyState {
    /// The policy in force (the template's, as last read).
    pub policy: RwLock<Arc<Policy>>,
    /// Signs the leaves of intercepted tunnels.
    pub ca: Arc<super::tls::NodeCa>,
    /// Upstream TLS of intercepted tunnels.
    pub upstream_tls: Arc<rustls::ClientConfig>,
    /// Tuning (resolve overrides, limits, timeouts).
    pub config: EgressConfig,
    /// Refusals by reason (the scheduler's, shared by every proxy).
    pub counters: Arc<EgressCounters>,
    /// Addresses the proxy never connects to besides loopback and the like: the gateways of
    /// its own networks (the host itself, seen from a sandbox).
    pub own_address: IpAddr,
}

/// Serves `listener` until the task is aborted; connections beyond the limit get a `503`.
pub(crate) async fn serve(listener: TcpListener, state: Arc<ProxyState>) {
    let permits = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set stays as small as the live ones.
        while connections.try_join_next().is_some() {}
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "egress proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                connections.spawn(async move {
                    handle(stream, &state).await;
                    drop(permit);
                });
            }
            Err(_) => {
                connections.spawn(async move {
                    let mut stream = stream;
                    refuse(
                        &mut stream,
                        &state.counters,
                        Reason::Busy,
                        "too many connections through this egress proxy; try again",
                    )
                    .await;
                });
            }
        }
    }
}

/// A parsed request head: method, target, version, and header lines as sent.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

/// Reads until the end of the request head, bounded by the size limit and the idle timeout;
/// returns the head's bytes and whatever followed it.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    config: &EgressConfig,
) -> Result<(Vec<u8>, Vec<u8>), Reason> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find_end(&buf) {
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > config.max_header_bytes {
            return Err(Reason::BadRequest);
        }
        let n = match tokio::time::timeout(config.idle_timeout, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(Reason::BadRequest),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn parse_head(bytes: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(bytes).ok()?;
    // A lone CR or LF inside a line could end a header upstream that ended nothing here.
    let text = text.strip_suffix("\r\n\r\n")?;
    if text.split("\r\n").any(|l| l.contains(['\r', '\n'])) {
        return None;
    }
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if first.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
            return None;
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Some(Head {
        method: method.to_string(),
        target: target.to_string(),
        headers,
    })
}

/// One client connection: one request or one tunnel.
async fn handle(mut client: TcpStream, state: &ProxyState) {
    let (head, rest) = match read_head(&mut client, &state.config).await {
        Ok(h) => h,
        Err(reason) => {
            refuse(
                &mut client,
                &state.counters,
                reason,
                "not an HTTP proxy request",
            )
            .await;
            return;
        }
    };
    let Some(head) = parse_head(&head) else {
        refuse(
            &mut client,
            &state.counters,
            Reason::BadRequest,
            "not an HTTP proxy request",
        )
        .await;
        return;
    };
    if head.method.eq_ignore_ascii_case("CONNECT") {
        tunnel(client, state, &head.target, rest).await;
    } else {
        forward(client, state, head, rest).await;
    }
}

/// `CONNECT host:port`: checked, connected, then bytes both ways; or, for a host with
/// credentials, intercepted ([`intercept`]).
async fn tunnel(mut client: TcpStream, state: &ProxyState, authority: &str, rest: Vec<u8>) {
    let (mut upstream, policy, (dest, port)) = match open(state, authority, 443).await {
        Ok(u) => u,
        Err((reason, why)) => {
            refuse(&mut client, &state.counters, reason, &why).await;
            return;
        }
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let added: Vec<&Injection> = policy
        .credentials
        .iter()
        .filter(|c| c.host.matches(&dest, port))
        .collect();
    if let (false, Destination::Name(host)) = (added.is_empty(), &dest) {
        let client = Prefixed::new(rest, client);
        if let Err(why) = intercept(client, upstream, state, host, authority, &added).await {
            tracing::debug!(host = %host, error = %why, "an intercepted egress tunnel failed");
        }
        return;
    }
    // A tunnel carries TLS, whose ClientHello names the host it wants (SNI): it must be the
    // one the CONNECT named, or a tunnel to an allowed front could reach another site behind
    // it. Anything else in a tunnel is refused (the connection closed, the refusal counted).
    let mut first = rest;
    loop {
        match client_hello_sni(&first) {
            Hello::NeedMore if first.len() < MAX_HELLO => {
                let mut chunk = [0u8; 4096];
                match tokio::time::timeout(state.config.idle_timeout, client.read(&mut chunk)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(n)) => first.extend_from_slice(&chunk[..n]),
                }
            }
            Hello::Sni(Some(sni)) => {
                let same = match &dest {
                    Destination::Name(host) => sni.trim_end_matches('.').eq_ignore_ascii_case(host),
                    // An allowlisted address may be asked for by any name.
                    Destination::Address(_) => true,
                };
                if !same {
                    state.counters.count(Reason::NotAllowed);
                    tracing::debug!(sni = %sni, "an egress tunnel's TLS named another host");
                    return;
                }
                break;
            }
            Hello::Sni(None) => break,
            // Tunnels carry TLS only: anything else is refused like any other protocol.
            Hello::NotTls | Hello::NeedMore => {
                state.counters.count(Reason::BadRequest);
                return;
            }
        }
    }
    if !first.is_empty() && upstream.write_all(&first).await.is_err() {
        return;
    }
    relay(client, upstream, state.config.idle_timeout).await;
}

/// The most bytes read to find a ClientHello's server name.
const MAX_HELLO: usize = 5 + 16 * 1024;

/// What the first bytes of a tunnel say about its TLS server name.
#[derive(Debug, PartialEq, Eq)]
enum Hello {
    /// Not all of the first TLS record is here yet.
    NeedMore,
    /// Not a TLS ClientHello (another protocol, or one this parser does not follow).
    NotTls,
    /// A ClientHello, with its server name if it gives one.
    Sni(Option<String>),
}

/// Finds the server name in a TLS ClientHello at the start of `b`. Pure.
fn client_hello_sni(b: &[u8]) -> Hello {
    if b.is_empty() {
        return Hello::NeedMore;
    }
    if b[0] != 0x16 {
        return Hello::NotTls;
    }
    if b.len() < 5 {
        return Hello::NeedMore;
    }
    let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if b.len() < 5 + len {
        return Hello::NeedMore;
    }
    let rec = &b[5..5 + len];
    let parse = || -> Option<Option<String>> {
        let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
            let s = rec.get(*at..*at + n)?;
            *at += n;
            Some(s)
        };
        let mut at = 0;
        if take(&mut at, 1)? != [1] {
            return None;
        }
        take(&mut at, 3 + 2 + 32)?;
        let sid = usize::from(take(&mut at, 1)?[0]);
        take(&mut at, sid)?;
        let cs = take(&mut at, 2)?;
        take(&mut at, usize::from(u16::from_be_bytes([cs[0], cs[1]])))?;
        let comp = usize::from(take(&mut at, 1)?[0]);
        take(&mut at, comp)?;
        if at == rec.len() {
            return Some(None);
        }
        let el = take(&mut at, 2)?;
        let end = at + usize::from(u16::from_be_bytes([el[0], el[1]]));
        while at + 4 <= end {
            let h = take(&mut at, 4)?;
            let (kind, n) = (
                u16::from_be_bytes([h[0], h[1]]),
                usize::from(u16::from_be_bytes([h[2], h[3]])),
            );
            let body = take(&mut at, n)?;
            if kind == 0 {
                // server_name: list length, then (type 0, length, name).
                let name_len = usize::from(u16::from_be_bytes([*body.get(3)?, *body.get(4)?]));
                if *body.get(2)? != 0 {
                    return None;
                }
                let name = body.get(5..5 + name_len)?;
                return Some(Some(String::from_utf8(name.to_vec()).ok()?));
            }
        }
        Some(None)
    };
    match parse() {
        Some(sni) => Hello::Sni(sni),
        None => Hello::NotTls,
    }
}

/// `METHOD http://host[:port]/path`: checked, rewritten to origin form with the URL's host
/// and `Connection: close`, then sent upstream with whatever body follows.
async fn forward(mut client: TcpStream, state: &ProxyState, head: Head, rest: Vec<u8>) {
    let Some(after) = head
        .target
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &head.target[7..])
    else {
        let why = if head.target.starts_with('/') {
            "send requests through this proxy with an absolute URL (http://host/path) or CONNECT"
        } else {
            "only http:// URLs and CONNECT are proxied"
        };
        refuse(&mut client, &state.counters, Reason::BadRequest, why).await;
        return;
    };
    let (authority, path) = match after.find(['/', '?']) {
        Some(i) if after.as_bytes()[i] == b'/' => (&after[..i], after[i..].to_string()),
        Some(i) => (&after[..i], format!("/{}", &after[i..])),
        None => (after, "/".to_string()),
    };
    if authority.contains('@') {
        refuse(
            &mut client,
            &state.counters,
            Reason::BadRequest,
            "credentials in the URL are not proxied",
        )
        .await;
        return;
    }
    let (mut upstream, policy, (dest, port)) = match open(state, authority, 80).await {
        Ok(u) => u,
        Err((reason, why)) => {
            refuse(&mut client, &state.counters, reason, &why).await;
            return;
        }
    };
    let added: Vec<&Injection> = policy
        .credentials
        .iter()
        .filter(|c| c.host.matches(&dest, port))
        .collect();
    let out = rewrite_head(&head, authority, &path, &added);
    if upstream.write_all(out.as_bytes()).await.is_err()
        || (!rest.is_empty() && upstream.write_all(&rest).await.is_err())
    {
        return;
    }
    relay(client, upstream, state.config.idle_timeout).await;
}

/// Terminates the sandbox's TLS with a leaf for `host` signed by the node's CA, reads one
/// request, adds the credentials, and sends it on over TLS verified upstream.
async fn intercept<C>(
    client: C,
    upstream: TcpStream,
    state: &ProxyState,
    host: &str,
    authority: &str,
    added: &[&Injection],
) -> std::result::Result<(), String>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let idle = state.config.idle_timeout;
    let server = state.ca.server_config(host).map_err(|e| e.to_string())?;
    let mut tls =
        tokio::time::timeout(idle, tokio_rustls::TlsAcceptor::from(server).accept(client))
            .await
            .map_err(|_| "the sandbox's TLS handshake timed out".to_string())?
            .map_err(|e| format!("the sandbox's TLS handshake: {e}"))?;
    let (head, rest) = match read_head(&mut tls, &state.config).await {
        Ok(h) => h,
        Err(reason) => {
            refuse(&mut tls, &state.counters, reason, "not an HTTP request").await;
            return Ok(());
        }
    };
    let Some(head) = parse_head(&head) else {
        refuse(
            &mut tls,
            &state.counters,
            Reason::BadRequest,
            "not an HTTP request",
        )
        .await;
        return Ok(());
    };
    // Origin form as sent inside a tunnel; an absolute https URL is taken to its path.
    let path = match head.target.find("://") {
        Some(i) => {
            let after = &head.target[i + 3..];
            match after.find('/') {
                Some(j) => after[j..].to_string(),
                None => "/".to_string(),
            }
        }
        None => head.target.clone(),
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host}: {e}"))?;
    let mut up = tokio::time::timeout(
        state.config.connect_timeout,
        tokio_rustls::TlsConnector::from(state.upstream_tls.clone()).connect(name, upstream),
    )
    .await
    .map_err(|_| format!("{host}: the TLS handshake upstream timed out"))?
    .map_err(|e| format!("{host}: TLS upstream: {e}"))?;
    let out = rewrite_head(&head, authority, &path, added);
    up.write_all(out.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        up.write_all(&rest).await.map_err(|e| e.to_string())?;
    }
    relay(tls, up, idle).await;
    Ok(())
}

/// A stream whose first bytes were read already (what followed a `CONNECT` head).
struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The head sent upstream: origin form, `Host` from the URL, hop-by-hop and `Proxy-*`
/// headers dropped, the credentials for the destination replacing any header of their name
/// the sandbox sent, and `Connection: close`.
fn rewrite_head(head: &Head, authority: &str, path: &str, added: &[&Injection]) -> String {
    let mut out = format!("{} {path} HTTP/1.1\r\nHost: {authority}\r\n", head.method);
    let hop = [
        "host",
        "connection",
        "proxy-connection",
        "proxy-authorization",
        "keep-alive",
    ];
    for (name, value) in &head.headers {
        let dropped = hop.iter().any(|h| name.eq_ignore_ascii_case(h))
            || added.iter().any(|c| name.eq_ignore_ascii_case(&c.header));
        if !dropped {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for c in added {
        out.push_str(&format!("{}: {}\r\n", c.header, c.value));
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// Checks `authority` against the policy and the address rules, and connects; returns the
/// connection, the policy it checked against and the destination (for what the request gets
/// added).
async fn open(
    state: &ProxyState,
    authority: &str,
    default_port: u16,
) -> Result<(TcpStream, Arc<Policy>, (Destination, u16)), (Reason, String)> {
    let (dest, port) = parse_destination(authority, default_port).map_err(|_| {
        (
            Reason::BadRequest,
            format!("{authority:?} is not a host or host:port"),
        )
    })?;
    let policy = state
        .policy
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if !policy.allow.allows(&dest, port) {
        return Err(match dest {
            Destination::Address(_) => (
                Reason::DirectIp,
                format!("{authority}: addresses are refused unless the allowlist names them"),
            ),
            Destination::Name(_) => (
                Reason::NotAllowed,
                format!("{authority} is not on this sandbox's egress allowlist"),
            ),
        });
    }
    let addrs = resolve(state, &dest, port).await?;
    let target = (dest, port);
    let connect = async {
        let mut last = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(state.config.connect_timeout, connect).await {
        Ok(Ok(s)) => Ok((s, policy, target)),
        Ok(Err(e)) => Err((
            Reason::UpstreamFailed,
            format!(
                "{authority} could not be reached: {}",
                e.map(|e| e.to_string()).unwrap_or_default()
            ),
        )),
        Err(_) => Err((
            Reason::UpstreamFailed,
            format!("{authority} did not answer in time"),
        )),
    }
}

/// Where an allowed destination is: a resolve override (trusted as given), else the address
/// itself or the name's addresses without the ones a sandbox must never reach through the
/// proxy (loopback, unspecified, link-local, multicast, the proxy's own host).
async fn resolve(
    state: &ProxyState,
    dest: &Destination,
    port: u16,
) -> Result<Vec<SocketAddr>, (Reason, String)> {
    let candidates: Vec<SocketAddr> = match dest {
        Destination::Name(n) => {
            if let Some(ip) = state.config.resolve.get(n) {
                return Ok(vec![SocketAddr::new(*ip, port)]);
            }
            match tokio::net::lookup_host((n.as_str(), port)).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    return Err((
                        Reason::UpstreamFailed,
                        format!("{n} could not be resolved: {e}"),
                    ))
                }
            }
        }
        Destination::Address(ip) => vec![SocketAddr::new(*ip, port)],
    };
    let usable: Vec<SocketAddr> = candidates
        .into_iter()
        .filter(|a| !forbidden(a.ip(), state.own_address))
        .collect();
    if usable.is_empty() {
        return Err((
            Reason::LocalAddress,
            "the destination is this node itself or a local address; the egress proxy does not go there".into(),
        ));
    }
    Ok(usable)
}

/// Addresses a sandbox never reaches through the proxy: the node itself (loopback, its
/// gateway address), unspecified, link-local (cloud metadata services live there), multicast.
pub(crate) fn forbidden(ip: IpAddr, own: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if ip == own || ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Answers a refused request and counts it.
async fn refuse<S: AsyncWrite + Unpin>(
    client: &mut S,
    counters: &EgressCounters,
    reason: Reason,
    why: &str,
) {
    counters.count(reason);
    let status = match reason {
        Reason::BadRequest => "400 Bad Request",
        Reason::Busy => "503 Service Unavailable",
        Reason::UpstreamFailed => "502 Bad Gateway",
        Reason::NotAllowed | Reason::DirectIp | Reason::LocalAddress => "403 Forbidden",
    };
    let body = format!("agentvm egress: {why}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Agentvm-Egress-Refused: {}\r\n\r\n{body}",
        body.len(),
        reason.as_str()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Copies bytes both ways until both sides have closed, or nothing moved for `idle`.
pub(crate) async fn relay<A, B>(a: A, b: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut abuf = vec![0u8; 16 * 1024];
    let mut bbuf = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut abuf), if a_open => match r {
                Ok(0) | Err(_) => {
                    a_open = false;
                    let _ = bw.shutdown().await;
                }
                Ok(n) => {
                    if bw.write_all(&abuf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            r = br.read(&mut bbuf), if b_open => match r {
                Ok(0) | Err(_) => {
                    b_open = false;
                    let _ = aw.shutdown().await;
                }
                Ok(n) => {
                    if aw.write_all(&bbuf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            _ = tokio::time::sleep(idle) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_and_garbage_does_not() {
        let h = parse_head(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX-A:  b \r\n\r\n").unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str()), ("GET", "http://a/"));
        assert_eq!(h.headers[1], ("X-A".to_string(), "b".to_string()));
        assert!(parse_head(b"\x16\x03\x01\x02\x00\r\n\r\n").is_none());
        assert!(parse_head(b"GET / SSH-2.0\r\n\r\n").is_none());
        assert!(parse_head(b"GET http://a/ HTTP/1.1\r\nbad line\r\n\r\n").is_none());
        assert!(parse_head(b"GET http://a/ HTTP/1.1\r\nX: a\nHost: b\r\n\r\n").is_none());
    }

    /// The first bytes a real rustls client sends for `name`.
    fn hello_for(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(config),
            rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn client_hellos_name_their_host() {
        let hello = hello_for("api.example.com");
        assert_eq!(
            client_hello_sni(&hello),
            Hello::Sni(Some("api.example.com".into()))
        );
        assert_eq!(client_hello_sni(&hello[..3]), Hello::NeedMore);
        assert_eq!(client_hello_sni(&hello[..hello.len() - 1]), Hello::NeedMore);
        assert_eq!(client_hello_sni(b""), Hello::NeedMore);
        assert_eq!(client_hello_sni(b"SSH-2.0-x\r\n"), Hello::NotTls);
        // An address gets no server name.
        assert_eq!(
            client_hello_sni(&hello_for("203.0.113.7")),
            Hello::Sni(None)
        );
        let mut broken = hello.clone();
        broken[5] = 2;
        assert_eq!(client_hello_sni(&broken), Hello::NotTls);
    }

    #[test]
    fn the_node_itself_and_local_addresses_are_forbidden() {
        let own: IpAddr = "172.25.0.1".parse().unwrap();
        for ip in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "169.254.169.254",
            "172.25.0.1",
            "::ffff:127.0.0.1",
            "fe80::1",
            "224.0.0.1",
        ] {
            assert!(forbidden(ip.parse().unwrap(), own), "{ip}");
        }
        for ip in ["203.0.113.7", "10.1.2.3", "2001:db8::1"] {
            assert!(!forbidden(ip.parse().unwrap(), own), "{ip}");
        }
    }
}
