//! A registry stand-in that paginates `tags/list` like GHCR and Docker Hub (`Link` with
//! `n` and `last`) and misbehaves on request: refuses large pages (Quay's 413, distribution
//! 3's 400), sends a port-less `Link` (Nexus), answers 429 with `Retry-After` or 500,
//! loops, sends malformed JSON, stalls, or points `Link` at another host; and, as a
//! hostile registry would, sends endless `Link` chains, gigantic or slow pages, gzip
//! bombs, or redirects elsewhere (`PageBody`, `redirect_to`). Debian's docker-registry
//! (2.8) cannot paginate and registry 3 plays none of the quirks, hence this.
//! `bench_registries` serves it as a process for `make bench-scan`; the `bench_scale`
//! driver runs it in-process.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the `Link` header is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LinkStyle {
    /// `</v2/NAME/tags/list?n=N&last=T>; rel="next"` (Docker Hub, GHCR).
    #[default]
    Relative,
    /// `<http://127.0.0.1:PORT/v2/...>`.
    Absolute,
    /// `<http://127.0.0.1/v2/...>`: the port lost (Nexus behind a proxy).
    Portless,
    /// `<http://OTHER/v2/...>`: another host.
    OtherHost(String),
    /// Ignores `last`, so the next link repeats the same URL.
    RepeatSameUrl,
    /// Ignores `last` and adds a page counter, so the same page comes back under new URLs.
    RepeatContent,
    /// The last page links back to the first under a new URL, so the pages come round.
    Cycle,
    /// Every page has new tags and a next link, forever (the repository's tags unused).
    Endless,
}

/// How a `tags/list` page is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PageBody {
    /// The page's JSON.
    #[default]
    Json,
    /// The page's JSON followed by spaces up to `bytes`; with `content_length` the size is
    /// declared up front, else the body is streamed in 64 KiB chunks.
    Padded { bytes: usize, content_length: bool },
    /// One page of this many one-character tags, whatever the query (about 4 bytes each).
    TinyTags(usize),
    /// The page's JSON, one byte every interval.
    Trickle(Duration),
    /// `Content-Encoding: gzip` of the page's JSON padded with spaces to this many bytes
    /// (a gzip bomb: about a thousandth of that on the wire).
    GzipBomb(usize),
}

#[derive(Clone, Debug, Default)]
pub struct StandInOptions {
    /// The one repository served; `*` serves the same tags under every name (benchmarks).
    pub repository: String,
    pub tags: Vec<String>,
    /// Page size when the client gives no `n`; `None` returns everything.
    pub default_page_size: Option<usize>,
    /// Refuse `n` above this with the status (413 like Quay, 400 like distribution 3).
    pub max_page_size: Option<(usize, u16)>,
    /// Answer at most this many tags per page, whatever `n` asks (as Docker Hub caps it).
    pub page_size_cap: Option<usize>,
    pub link: LinkStyle,
    /// The first this many `tags/list` requests get 429 with `retry_after`.
    pub rate_limit_first: usize,
    pub retry_after: Option<String>,
    /// The first this many `tags/list` requests get 500.
    pub server_errors_first: usize,
    /// Answer `tags/list` with broken JSON.
    pub malformed: bool,
    /// Wait this long before answering `tags/list`.
    pub stall: Option<Duration>,
    /// Require these Basic credentials on every `/v2/` request.
    pub basic: Option<(String, String)>,
    /// How pages are sent.
    pub body: PageBody,
    /// Answer `tags/list` with `307 Temporary Redirect` to this base (`http://HOST:PORT`),
    /// same path and query: to another registry, or to itself for a redirect loop.
    pub redirect_to: Option<String>,
}

struct Shared {
    opts: StandInOptions,
    tags: Vec<String>,
    addr: SocketAddr,
    tag_requests: AtomicUsize,
    all_requests: AtomicUsize,
    authorizations: Mutex<Vec<Option<String>>>,
    uris: Mutex<Vec<String>>,
}

/// A running stand-in (stopped on drop).
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    pub async fn start(opts: StandInOptions) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        Self::serve_on(listener, opts)
    }

    /// Serves on an already bound listener (the benchmark binary picks its port).
    pub fn serve_on(listener: tokio::net::TcpListener, opts: StandInOptions) -> StandIn {
        let addr = listener.local_addr().expect("addr");
        let mut tags = opts.tags.clone();
        tags.sort();
        tags.dedup();
        let shared = Arc::new(Shared {
            opts,
            tags,
            addr,
            tag_requests: AtomicUsize::new(0),
            all_requests: AtomicUsize::new(0),
            authorizations: Mutex::new(Vec::new()),
            uris: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/v2/", axum::routing::get(ping))
            .route("/v2/{*rest}", axum::routing::get(v2))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StandIn { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `tags/list` requests received.
    pub fn tag_requests(&self) -> usize {
        self.shared.tag_requests.load(Ordering::SeqCst)
    }

    /// Every request received.
    pub fn requests(&self) -> usize {
        self.shared.all_requests.load(Ordering::SeqCst)
    }

    /// The `Authorization` header of every request, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.shared
            .authorizations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Path and query of every `tags/list` request, in order.
    pub fn uris(&self) -> Vec<String> {
        self.shared
            .uris
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    shared.all_requests.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Ok(mut a) = shared.authorizations.lock() {
        a.push(auth.clone());
    }
    if let Some((u, p)) = &shared.opts.basic {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        );
        if auth.as_deref() != Some(expected.as_str()) {
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", "Basic realm=\"stand-in\"")],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                )
                    .into_response(),
            );
        }
    }
    None
}

async fn ping(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = record(&shared, &headers) {
        return r;
    }
    (StatusCode::OK, "{}").into_response()
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "application/json")],
        format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#),
    )
        .into_response()
}

async fn v2(
    State(shared): State<Arc<Shared>>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if let Some(r) = record(&shared, &headers) {
        return r;
    }
    let Some(name) = rest.strip_suffix("/tags/list") else {
        return error(404, "NOT_FOUND", "only tags/list is served");
    };
    if shared.opts.repository != "*" && name != shared.opts.repository {
        return error(404, "NAME_UNKNOWN", "repository name not known to registry");
    }
    let nth = shared.tag_requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut u) = shared.uris.lock() {
        u.push(uri.to_string());
    }
    let opts = &shared.opts;
    if let Some(d) = opts.stall {
        tokio::time::sleep(d).await;
    }
    if nth < opts.rate_limit_first {
        let mut r = error(429, "TOOMANYREQUESTS", "slow down");
        if let Some(v) = opts.retry_after.as_ref().and_then(|ra| ra.parse().ok()) {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    if nth < opts.rate_limit_first + opts.server_errors_first {
        return error(500, "UNKNOWN", "try again");
    }
    if let Some(base) = &opts.redirect_to {
        let location = format!("{base}{uri}");
        return (StatusCode::TEMPORARY_REDIRECT, [("location", location)], "").into_response();
    }
    if opts.malformed {
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"name":"x","tags":["a","#,
        )
            .into_response();
    }
    let n = match q.get("n") {
        Some(v) => match v.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => return error(400, "PAGINATION_NUMBER_INVALID", "invalid n"),
        },
        None => opts.default_page_size,
    };
    if let (Some(n), Some((max, status))) = (n, opts.max_page_size)
        && n > max
    {
        let code = if status == 413 {
            "TOO_MANY_TAGS_REQUESTED"
        } else {
            "PAGINATION_NUMBER_INVALID"
        };
        return error(status, code, "page size too large");
    }
    let n = match (n, opts.page_size_cap) {
        (Some(n), Some(cap)) => Some(n.min(cap)),
        (None, cap) => cap,
        (n, None) => n,
    };
    if let PageBody::TinyTags(count) = opts.body {
        return tiny_tags(name, count);
    }
    if opts.link == LinkStyle::Endless {
        return endless_page(name, n.unwrap_or(10), nth);
    }
    let ignore_last = matches!(
        opts.link,
        LinkStyle::RepeatSameUrl | LinkStyle::RepeatContent
    );
    let start = match q.get("last") {
        Some(last) if !ignore_last => shared.tags.partition_point(|t| t.as_str() <= last.as_str()),
        _ => 0,
    };
    let end = match n {
        Some(n) => (start + n).min(shared.tags.len()),
        None => shared.tags.len(),
    };
    let page = &shared.tags[start..end];
    let body = serde_json::json!({"name": name, "tags": page}).to_string();
    let mut resp = page_response(body, &opts.body);
    if opts.link == LinkStyle::Cycle && end == shared.tags.len() {
        let target = format!("/v2/{name}/tags/list?round={nth}");
        if let Some(n) = n
            && let Ok(v) = format!("<{target}&n={n}>; rel=\"next\"").parse()
        {
            resp.headers_mut().insert("link", v);
        }
    }
    if end < shared.tags.len()
        && let (Some(n), Some(last)) = (n, page.last())
    {
        let path = format!("/v2/{name}/tags/list?n={n}&last={last}");
        let port = shared.addr.port();
        let target = match &opts.link {
            LinkStyle::Relative | LinkStyle::RepeatSameUrl | LinkStyle::Cycle => path,
            LinkStyle::Endless => unreachable!("endless pages are answered above"),
            LinkStyle::Absolute => format!("http://127.0.0.1:{port}{path}"),
            LinkStyle::Portless => format!("http://127.0.0.1{path}"),
            LinkStyle::OtherHost(h) => format!("http://{h}{path}"),
            LinkStyle::RepeatContent => format!("{path}&page={nth}"),
        };
        if let Ok(v) = format!("<{target}>; rel=\"next\"").parse() {
            resp.headers_mut().insert("link", v);
        }
    }
    resp
}

/// Page `nth` of an endless chain: `n` tags never sent before, and a link to the next.
fn endless_page(name: &str, n: usize, nth: usize) -> Response {
    let tags: Vec<String> = (0..n.max(1)).map(|i| format!("e{nth:08}-{i:04}")).collect();
    let body = serde_json::json!({"name": name, "tags": tags}).to_string();
    let mut resp = (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    let link = format!(
        "</v2/{name}/tags/list?n={n}&page={}>; rel=\"next\"",
        nth + 1
    );
    if let Ok(v) = link.parse() {
        resp.headers_mut().insert("link", v);
    }
    resp
}

/// One page of `count` tags `"a"`, built without holding them as strings.
fn tiny_tags(name: &str, count: usize) -> Response {
    let mut body = format!(r#"{{"name":"{name}","tags":["#).into_bytes();
    body.reserve(count * 4);
    for i in 0..count {
        body.extend_from_slice(if i == 0 { b"\"a\"" } else { b",\"a\"" });
    }
    body.extend_from_slice(b"]}");
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

/// The page's JSON `body`, sent as `how` says.
fn page_response(body: String, how: &PageBody) -> Response {
    use axum::body::Body;
    use futures::StreamExt as _;
    let json = [("content-type", "application/json")];
    match how {
        PageBody::Json | PageBody::TinyTags(_) => (StatusCode::OK, json, body).into_response(),
        PageBody::Padded {
            bytes,
            content_length: true,
        } => {
            let mut padded = body.into_bytes();
            padded.resize((*bytes).max(padded.len()), b' ');
            (StatusCode::OK, json, padded).into_response()
        }
        PageBody::Padded {
            bytes,
            content_length: false,
        } => {
            const CHUNK: usize = 64 << 10;
            let padding = bytes.saturating_sub(body.len());
            let head = futures::stream::iter([bytes::Bytes::from(body)]);
            let spaces = futures::stream::iter(
                (0..padding.div_ceil(CHUNK))
                    .map(move |i| bytes::Bytes::from(vec![b' '; CHUNK.min(padding - i * CHUNK)])),
            );
            let stream = head.chain(spaces).map(Ok::<_, std::io::Error>);
            (StatusCode::OK, json, Body::from_stream(stream)).into_response()
        }
        PageBody::Trickle(every) => {
            let every = *every;
            let stream = futures::stream::iter(body.into_bytes()).then(move |b| async move {
                tokio::time::sleep(every).await;
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b]))
            });
            (StatusCode::OK, json, Body::from_stream(stream)).into_response()
        }
        PageBody::GzipBomb(bytes) => {
            use std::io::Write as _;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let mut written = body.len();
            let _ = gz.write_all(body.as_bytes());
            let spaces = vec![b' '; 1 << 20];
            while written < *bytes {
                let take = spaces.len().min(bytes - written);
                let _ = gz.write_all(&spaces[..take]);
                written += take;
            }
            let compressed = gz.finish().unwrap_or_default();
            (
                StatusCode::OK,
                [
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip"),
                ],
                compressed,
            )
                .into_response()
        }
    }
}
