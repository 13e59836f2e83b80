//! `image-reflector scan IMAGE`: list a repository's tags as an ImageRepository would,
//! without a cluster.
//!
//! Exit codes: 0 success; 1 the scan failed (unreachable, timed out, TLS, rate limited,
//! malformed answer, too many tags); 2 usage error (bad flags, image name, regex or file);
//! 3 authentication failed (401/403); 4 repository not found (404).

use crate::reference::ImageRef;
use crate::scanner::cloud::{self, Cloud, CloudLogin, Identity};
use crate::scanner::{
    Credentials, DockerConfig, ProxyConfig, ScanError, ScanErrorKind, ScanOutcome, ScanRequest,
    Scanner, ScannerConfig, TlsMaterial,
};
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const EXIT_SCAN_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_AUTH_FAILED: u8 = 3;
pub const EXIT_NOT_FOUND: u8 = 4;

/// Output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

/// List every tag of an image repository, as an ImageRepository scan would.
///
/// Exit codes: 0 success, 1 scan failed, 2 usage error, 3 authentication failed,
/// 4 repository not found.
#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    /// The image repository, e.g. `alpine`, `ghcr.io/org/app`, `localhost:5000/app`.
    pub image: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// Print every tag (sorted), not only the latest 10.
    #[arg(long)]
    pub all_tags: bool,
    /// Touch no network: print the canonical name, the API endpoint and which credential
    /// source would be used.
    #[arg(long)]
    pub dry_run: bool,
}

/// How to reach a registry and what to keep of its tags: connection, credentials, TLS,
/// proxy, exclusions and limits. `scan` and `policy IMAGE` flatten it, so both take the
/// same flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Use plain HTTP.
    #[arg(long)]
    pub insecure: bool,
    /// Docker config JSON with registry credentials (default: $DOCKER_CONFIG/config.json
    /// or ~/.docker/config.json, if present).
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// User name for Basic credentials; the password is read from stdin.
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password for --username from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Log in to the cloud's registry with this machine's cloud identity, as
    /// `spec.provider` does with the controller's: aws (the AWS default credential
    /// chain, then ECR), azure (workload identity, a client secret or managed identity,
    /// then ACR's exchange), gcp (application default credentials or the metadata
    /// server). `generic` (the default) uses --docker-config or --username.
    #[arg(long, value_enum, default_value = "generic",
          conflicts_with_all = ["username", "password_stdin", "docker_config"])]
    pub provider: ProviderArg,
    /// PEM CA bundle to trust in addition to the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --key-file).
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Proxy URL: http://, https://, socks5:// or socks5h://, optionally with
    /// user:password@ (default: HTTPS_PROXY/NO_PROXY).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Drop tags matching this regular expression (repeatable; replaces the default
    /// `^.*\.sig$`).
    #[arg(long = "exclude", value_name = "REGEX")]
    pub exclude: Vec<String>,
    /// Give up after this long (Flux duration: 30s, 1m30s).
    #[arg(long, default_value = "1m", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Tags asked for per page (`n`); a registry that refuses it is asked for 100.
    #[arg(long, default_value_t = 1000)]
    pub page_size: usize,
    /// Fail when the repository has more tags than this.
    #[arg(long, default_value_t = ScannerConfig::default().max_tags)]
    pub max_tags: usize,
    /// Requests per second to the registry host (0: unlimited).
    #[arg(long, default_value_t = ScannerConfig::default().per_host_requests_per_second)]
    pub requests_per_second: f64,
}

/// `--provider`: `spec.provider`'s values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderArg {
    Generic,
    Aws,
    Azure,
    Gcp,
}

impl ProviderArg {
    fn cloud(self) -> Option<Cloud> {
        match self {
            ProviderArg::Generic => None,
            ProviderArg::Aws => Some(Cloud::Aws),
            ProviderArg::Azure => Some(Cloud::Azure),
            ProviderArg::Gcp => Some(Cloud::Gcp),
        }
    }
}

/// The argument ids of [`RegistryArgs`], for `conflicts_with_all` (naming the group
/// instead would make clap list every member in its error, not the ones given).
pub const REGISTRY_ARG_IDS: &[&str] = &[
    "insecure",
    "docker_config",
    "username",
    "password_stdin",
    "provider",
    "ca_file",
    "cert_file",
    "key_file",
    "proxy",
    "exclude",
    "timeout",
    "page_size",
    "max_tags",
    "requests_per_second",
];

fn parse_timeout(s: &str) -> Result<Duration, String> {
    crate::api::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// A mistake on the command line (exit code 2): the IMAGE, a flag's value or a file it
/// names. The message names the flag or value and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Where the credential for the registry comes from, for --dry-run.
enum CredentialSource {
    Anonymous,
    /// `--provider`: what the cloud login would use.
    Cloud(String),
    Flags(String),
    DockerConfig {
        path: PathBuf,
        entry: Option<String>,
    },
}

/// A scan the flags describe, checked and resolved (files and the stdin password read):
/// the scanner with the flags' limits and the request. Nothing has touched the network.
pub struct PreparedScan {
    pub scanner: Scanner,
    pub request: ScanRequest,
    source: CredentialSource,
}

impl PreparedScan {
    /// Lists the repository's tags; on a terminal, a scan longer than half a second shows
    /// a progress line on stderr, erased when it ends.
    pub async fn run(&self) -> Result<ScanOutcome, ScanError> {
        let progress = Progress::new(self.request.image.canonical());
        let result = self
            .scanner
            .scan_with_progress(&self.request, &|n| progress.update(n))
            .await;
        progress.finish();
        result
    }
}

pub async fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let prepared = match prepare(&args.image, &args.registry) {
        Ok(p) => p,
        Err(UsageError(msg)) => {
            eprintln!("image-reflector scan: {msg}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    if args.dry_run {
        print_dry_run(&args, &prepared)?;
        return Ok(ExitCode::SUCCESS);
    }
    match prepared.run().await {
        Ok(outcome) => {
            print_outcome(&args, &outcome)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("image-reflector scan: {e}");
            let code = match e.kind() {
                ScanErrorKind::AuthenticationFailed => EXIT_AUTH_FAILED,
                ScanErrorKind::NotFound => EXIT_NOT_FOUND,
                ScanErrorKind::InvalidConfig => EXIT_USAGE,
                _ => EXIT_SCAN_FAILED,
            };
            Ok(ExitCode::from(code))
        }
    }
}

fn read_file(flag: &str, path: &PathBuf) -> Result<Vec<u8>, UsageError> {
    std::fs::read(path).map_err(|e| usage(format!("{flag} {}: {e}", path.display())))
}

fn default_docker_config() -> Option<PathBuf> {
    let candidate = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("config.json"),
        _ => PathBuf::from(std::env::var_os("HOME")?)
            .join(".docker")
            .join("config.json"),
    };
    candidate.is_file().then_some(candidate)
}

/// Checks `IMAGE` and the registry flags and resolves them into a scan: reads the Docker
/// config, the TLS files and (with `--password-stdin`) the password from stdin. Shared by
/// `scan` and `policy IMAGE`, so both accept and refuse the same things with the same
/// messages.
pub fn prepare(image: &str, args: &RegistryArgs) -> Result<PreparedScan, UsageError> {
    let image = ImageRef::parse(image).map_err(|e| usage(format!("IMAGE: {e}")))?;
    let mut request = ScanRequest::new(image);
    request.insecure = args.insecure;
    request.timeout = args.timeout;
    if !args.exclude.is_empty() {
        request.exclusion_list = args.exclude.clone();
    }
    for (i, pattern) in request.exclusion_list.iter().enumerate() {
        if let Err(e) = regex::Regex::new(pattern) {
            return Err(usage(format!(
                "--exclude {pattern:?} (number {}) is not a valid regular expression: {e}",
                i + 1
            )));
        }
    }
    if args.page_size == 0 {
        return Err(usage("--page-size must be at least 1"));
    }
    if args.max_tags == 0 {
        return Err(usage("--max-tags must be at least 1"));
    }
    if !(args.requests_per_second >= 0.0 && args.requests_per_second.is_finite()) {
        return Err(usage("--requests-per-second must be 0 (unlimited) or more"));
    }

    let source = if let Some(c) = args.provider.cloud() {
        let env = cloud::CloudEnv::from_process();
        let description = cloud::describe(c, &env, request.image.registry()).map_err(|e| {
            usage(format!(
                "IMAGE with --provider {}: {}",
                c.as_str(),
                e.detail()
            ))
        })?;
        request.cloud = Some(CloudLogin {
            cloud: c,
            identity: Identity::Controller,
            involved: None,
        });
        CredentialSource::Cloud(description)
    } else if let Some(username) = &args.username {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .map_err(|e| usage(format!("--password-stdin: cannot read stdin: {e}")))?;
        let password = password.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            return Err(usage("--password-stdin: stdin held no password"));
        }
        request.credentials = Credentials::Basic {
            username: username.clone(),
            password,
        };
        CredentialSource::Flags(username.clone())
    } else {
        let explicit = args.docker_config.is_some();
        match args.docker_config.clone().or_else(default_docker_config) {
            Some(path) => match read_file("--docker-config", &path).and_then(|b| {
                DockerConfig::from_json(&b)
                    .map_err(|e| usage(format!("--docker-config {}: {e}", path.display())))
            }) {
                Ok(config) => {
                    let entry = config
                        .lookup(request.image.registry())
                        .map(|c| c.describe());
                    request.credentials = Credentials::DockerConfig(config);
                    CredentialSource::DockerConfig { path, entry }
                }
                // A broken default file is reported only when asked for explicitly.
                Err(e) if explicit => return Err(e),
                Err(UsageError(msg)) => {
                    tracing::warn!("ignoring the default Docker config: {msg}");
                    CredentialSource::Anonymous
                }
            },
            None => CredentialSource::Anonymous,
        }
    };

    let mut tls = TlsMaterial::default();
    if let Some(p) = &args.ca_file {
        tls.ca_pem = Some(read_file("--ca-file", p)?);
    }
    if let Some(p) = &args.cert_file {
        tls.client_cert_pem = Some(read_file("--cert-file", p)?);
    }
    if let Some(p) = &args.key_file {
        tls.client_key_pem = Some(read_file("--key-file", p)?);
    }
    request.tls = tls;

    if let Some(proxy) = &args.proxy {
        request.proxy = Some(parse_proxy(proxy)?);
    }
    // Scanner::new refuses only what was checked above; a refusal is still the flags'.
    let scanner = Scanner::new(ScannerConfig {
        page_size: args.page_size,
        max_tags: args.max_tags,
        per_host_requests_per_second: args.requests_per_second,
        ..ScannerConfig::default()
    })
    .map_err(|e| usage(e.to_string()))?;
    Ok(PreparedScan {
        scanner,
        request,
        source,
    })
}

/// `http://user:pass@host:port` (or `socks5://`, `socks5h://`) -> address without
/// credentials, plus username/password.
fn parse_proxy(s: &str) -> Result<ProxyConfig, UsageError> {
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let mut url = url::Url::parse(&with_scheme).map_err(|e| {
        usage(format!(
            "--proxy: not a URL ({e}); write e.g. http://proxy.example:3128"
        ))
    })?;
    let decode = |v: &str| percent_decode(v);
    let username = (!url.username().is_empty()).then(|| decode(url.username()));
    let password = url.password().map(decode);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let proxy = ProxyConfig {
        address: url.to_string().trim_end_matches('/').to_string(),
        username,
        password,
    };
    proxy.scheme().map_err(|e| usage(format!("--proxy: {e}")))?;
    Ok(proxy)
}

fn percent_decode(v: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", v.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| v.to_string())
}

fn endpoint_description(req: &ScanRequest) -> String {
    let host = req.image.api_host();
    if req.insecure {
        format!("http://{host}/v2/ (insecure: plain HTTP)")
    } else if req.image.is_local() {
        format!("https://{host}/v2/ (local registry: plain HTTP if HTTPS fails)")
    } else {
        format!("https://{host}/v2/")
    }
}

fn credential_description(source: &CredentialSource, registry: &str) -> String {
    match source {
        CredentialSource::Anonymous => "anonymous (no --username, no Docker config)".into(),
        CredentialSource::Cloud(d) => d.clone(),
        CredentialSource::Flags(user) => {
            format!("--username {user:?} with the password from stdin")
        }
        CredentialSource::DockerConfig {
            path,
            entry: Some(d),
        } => format!("{} entry for {registry}: {d}", path.display()),
        CredentialSource::DockerConfig { path, entry: None } => {
            format!("anonymous ({} has no entry for {registry})", path.display())
        }
    }
}

fn print_dry_run(args: &ScanArgs, p: &PreparedScan) -> anyhow::Result<()> {
    let req = &p.request;
    let credentials = credential_description(&p.source, req.image.registry());
    let proxy = match &req.proxy {
        Some(px) => format!(
            "{}{}",
            px.address,
            if px.username.is_some() {
                " (with credentials)"
            } else {
                ""
            }
        ),
        None => "from the environment (HTTPS_PROXY, NO_PROXY), if set".into(),
    };
    let tls = match (&args.registry.ca_file, &args.registry.cert_file) {
        (None, None) => "system roots".to_string(),
        (ca, cert) => {
            let mut parts = Vec::new();
            if let Some(ca) = ca {
                parts.push(format!("CA {}", ca.display()));
            }
            if let Some(cert) = cert {
                parts.push(format!("client certificate {}", cert.display()));
            }
            parts.join(", ")
        }
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let v = serde_json::json!({
                "canonicalImageName": req.image.canonical(),
                "endpoint": endpoint_description(req),
                "credentials": credentials,
                "tls": tls,
                "proxy": proxy,
                "exclusionList": req.exclusion_list,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        OutputFormat::Table => {
            writeln!(out, "CANONICAL NAME  {}", req.image.canonical())?;
            writeln!(out, "ENDPOINT        {}", endpoint_description(req))?;
            writeln!(out, "CREDENTIALS     {credentials}")?;
            writeln!(out, "TLS             {tls}")?;
            writeln!(out, "PROXY           {proxy}")?;
            writeln!(out, "EXCLUDE         {}", req.exclusion_list.join("  "))?;
        }
    }
    Ok(())
}

fn print_outcome(args: &ScanArgs, o: &ScanOutcome) -> anyhow::Result<()> {
    let scan_time = o.scan_time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.output {
        OutputFormat::Json => {
            let mut v = serde_json::json!({
                "canonicalImageName": o.canonical_image_name,
                "tagCount": o.tag_count,
                "latestTags": o.latest_tags,
                "revision": o.revision,
                "scanTime": scan_time,
            });
            if args.all_tags {
                v["tags"] = serde_json::json!(o.tags);
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        OutputFormat::Table => {
            writeln!(out, "CANONICAL NAME  {}", o.canonical_image_name)?;
            writeln!(out, "TAG COUNT       {}", o.tag_count)?;
            writeln!(out, "REVISION        {}", o.revision)?;
            writeln!(out, "SCAN TIME       {scan_time}")?;
            let shown = if args.all_tags {
                &o.tags[..]
            } else {
                &o.latest_tags[..]
            };
            writeln!(
                out,
                "{}",
                if args.all_tags { "TAGS" } else { "LATEST TAGS" }
            )?;
            for t in shown {
                writeln!(out, "  {t}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// A progress line on stderr for scans longer than half a second, when stderr is a
/// terminal.
struct Progress {
    enabled: bool,
    name: String,
    state: Mutex<(Instant, Option<Instant>)>,
}

impl Progress {
    fn new(name: String) -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            name,
            state: Mutex::new((Instant::now(), None)),
        }
    }

    fn update(&self, tags: usize) {
        if !self.enabled {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (started, last) = *state;
        let now = Instant::now();
        if now.duration_since(started) < Duration::from_millis(500)
            || last.is_some_and(|l| now.duration_since(l) < Duration::from_millis(100))
        {
            return;
        }
        state.1 = Some(now);
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[2Kscanning {}: {tags} tags so far",
            self.name
        );
    }

    fn finish(&self) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.enabled && state.1.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests;
