//! `make compare-flux`: the differential between image-reflector and Flux's own
//! image-reflector-controller. Both run on one control plane against the same registries;
//! every case (a YAML file, see `case`) is applied once per side into the side's own
//! namespaces and shard (see `env`), and after each `settle` step the statuses and events
//! of every object are compared field by field (see `view`). A difference that the list
//! of known differences (see `known`) does not cover makes the run fail.

pub mod case;
pub mod env;
pub mod known;
pub mod view;

use anyhow::{Context as _, anyhow, bail};
use case::{Case, IMAGE_POLICY, IMAGE_REPOSITORY, ObjectRef, Settle, Step};
use env::{Env, SHARD_LABEL, Side};
use futures::StreamExt as _;
use known::{KnownList, Status};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use view::{ABSENT, Fields, Normaliser};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The directory of case files (`CASES=DIR`).
    pub cases_dir: PathBuf,
    /// The known differences.
    pub known_file: PathBuf,
    /// Only cases whose names match one of these globs (all when empty).
    pub only: Vec<String>,
    /// Only the cases marked `fast: true`.
    pub fast: bool,
    /// Cases run at once.
    pub jobs: usize,
    /// Print every compared field's value, not only the differences.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        let root = crate::repo_root();
        Options {
            cases_dir: root.join("tests/compare/cases"),
            known_file: root.join("tests/compare/known-differences.yaml"),
            only: Vec::new(),
            fast: false,
            jobs: 4,
            verbose: false,
        }
    }
}

/// How a difference was judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Unknown,
    Known { id: String, status: Status },
}

/// One difference found.
#[derive(Clone, Debug)]
pub struct Found {
    pub case: String,
    /// Where in the case: `settle after step 3`, `step 2 (apply)`.
    pub at: String,
    /// `KIND/NAMESPACE/NAME` (logical namespace).
    pub object: String,
    pub field: String,
    pub ours: String,
    pub flux: String,
    pub verdict: Verdict,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Summary {
    pub cases: usize,
    pub fields_compared: usize,
    pub found: Vec<Found>,
    /// Cases that could not run to the end (a broken case, a failed step).
    pub errors: Vec<String>,
    /// Known entries about cases that ran which matched nothing.
    pub unseen_known: Vec<String>,
    pub elapsed: Duration,
    pub startup: Duration,
}

impl Summary {
    pub fn unknown(&self) -> impl Iterator<Item = &Found> {
        self.found.iter().filter(|f| f.verdict == Verdict::Unknown)
    }

    fn with_status(&self, status: Status) -> impl Iterator<Item = &Found> {
        self.found
            .iter()
            .filter(move |f| matches!(&f.verdict, Verdict::Known { status: s, .. } if *s == status))
    }

    /// Whether CI passes: no unknown difference and no case error.
    pub fn passed(&self) -> bool {
        self.unknown().next().is_none() && self.errors.is_empty()
    }

    /// The closing report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let by_id = |status: Status| {
            let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for f in self.with_status(status) {
                if let Verdict::Known { id, .. } = &f.verdict {
                    let cases = ids.entry(id.clone()).or_default();
                    if !cases.contains(&f.case) {
                        cases.push(f.case.clone());
                    }
                }
            }
            ids
        };
        for (title, status) in [
            ("known, to fix", Status::ToFix),
            ("known, deliberate", Status::Deliberate),
        ] {
            let ids = by_id(status);
            if !ids.is_empty() {
                let _ = writeln!(out, "{title} ({} entries):", ids.len());
                for (id, cases) in ids {
                    let _ = writeln!(out, "  {id}: {}", cases.join(", "));
                }
            }
        }
        if !self.unseen_known.is_empty() {
            let _ = writeln!(
                out,
                "known differences not seen in the cases they name (timing-dependent, or fixed: then remove them):"
            );
            for id in &self.unseen_known {
                let _ = writeln!(out, "  {id}");
            }
        }
        let unknown: Vec<&Found> = self.unknown().collect();
        if !unknown.is_empty() {
            let _ = writeln!(out, "UNKNOWN differences ({}):", unknown.len());
            for f in &unknown {
                let _ = writeln!(
                    out,
                    "  {} {} {} {}: ours {:?}, flux {:?}",
                    f.case, f.at, f.object, f.field, f.ours, f.flux
                );
            }
        }
        for e in &self.errors {
            let _ = writeln!(out, "ERROR {e}");
        }
        let _ = writeln!(
            out,
            "compare-flux: {} cases in {:.1} s (start {:.1} s); {} fields compared; {} differences: {} unknown, {} known to fix, {} deliberate; {} case errors; {}",
            self.cases,
            self.elapsed.as_secs_f64(),
            self.startup.as_secs_f64(),
            self.fields_compared,
            self.found.len(),
            unknown.len(),
            self.with_status(Status::ToFix).count(),
            self.with_status(Status::Deliberate).count(),
            self.errors.len(),
            if self.passed() { "PASS" } else { "FAIL" }
        );
        out
    }
}

/// Loads the cases and the known differences, starts the environment, runs the cases and
/// returns the summary (every case's report is printed as it finishes).
pub async fn run(options: &Options) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let known = KnownList::load(&options.known_file)?;
    let flux_version = pinned_flux_version()?;
    if known.flux_version != flux_version {
        bail!(
            "{} was made against Flux {}, but the control plane builds {flux_version} (tests/control-plane/versions.env): run the comparison and review every entry",
            options.known_file.display(),
            known.flux_version
        );
    }
    let mut cases = case::load_dir(&options.cases_dir)?;
    cases.retain(|c| {
        (!options.fast || c.fast)
            && (options.only.is_empty() || options.only.iter().any(|g| glob_matches(g, &c.name)))
    });
    if cases.is_empty() {
        bail!("no case selected in {}", options.cases_dir.display());
    }
    println!(
        "compare-flux: {} cases from {}, {} at a time; starting the control plane, registries, Flux {flux_version} and image-reflector",
        cases.len(),
        options.cases_dir.display(),
        options.jobs
    );
    let env = Env::start().await?;
    println!(
        "compare-flux: started in {:.1} s",
        env.started_in.as_secs_f64()
    );

    let total = cases.len();
    let mut summary = Summary {
        cases: total,
        startup: env.started_in,
        ..Summary::default()
    };
    let mut reports = futures::stream::iter(cases.iter())
        .map(|c| run_case(&env, c, &known, options.verbose))
        .buffer_unordered(options.jobs.max(1));
    let mut done = 0;
    while let Some(report) = reports.next().await {
        done += 1;
        print!("[{done}/{total}] {}", report.text);
        summary.fields_compared += report.fields;
        summary.found.extend(report.found);
        if let Some(e) = report.error {
            summary.errors.push(e);
        }
    }
    drop(reports);
    if !summary.errors.is_empty() {
        println!("{}", env.log_tails());
    }
    let complete = !options.fast && options.only.is_empty();
    for k in &known.entries {
        let ran_about = k.expected_in(cases.iter().map(|c| c.name.as_str()), complete);
        let seen = summary
            .found
            .iter()
            .any(|f| matches!(&f.verdict, Verdict::Known { id, .. } if *id == k.id));
        if ran_about && !seen {
            summary.unseen_known.push(k.id.clone());
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// `FLUX_IMAGE_REFLECTOR_VERSION` of tests/control-plane/versions.env.
fn pinned_flux_version() -> anyhow::Result<String> {
    let path = crate::repo_root().join("tests/control-plane/versions.env");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("FLUX_IMAGE_REFLECTOR_VERSION="))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| anyhow!("no FLUX_IMAGE_REFLECTOR_VERSION in {}", path.display()))
}

fn glob_matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.len() >= head.len()
                && text.starts_with(head)
                && glob_matches_rest(tail, &text[head.len()..])
        }
    }
}

fn glob_matches_rest(pattern: &str, text: &str) -> bool {
    if pattern.is_empty() {
        return true;
    }
    (0..=text.len())
        .filter(|i| text.is_char_boundary(*i))
        .any(|i| glob_matches(pattern, &text[i..]))
}

/// One case's outcome.
struct CaseReport {
    text: String,
    fields: usize,
    found: Vec<Found>,
    error: Option<String>,
}

/// Where an object stands on one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not applied yet on this side.
    None,
    Applied,
    /// The API server (our webhook, the schema) refused it, and it was never created.
    Refused,
    Deleted,
}

struct Tracked {
    r: ObjectRef,
    state: [State; 2],
    /// The last `reconcile.fluxcd.io/requestedAt` value set.
    token: Option<String>,
}

struct CaseRun<'a> {
    env: &'a Env,
    case: &'a Case,
    known: &'a KnownList,
    verbose: bool,
    norms: [Normaliser; 2],
    tracked: Vec<Tracked>,
    tokens: usize,
    text: String,
    fields: usize,
    found: Vec<Found>,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Flux => 0,
        Side::Ours => 1,
    }
}

fn plural(kind: &str) -> &'static str {
    match kind {
        IMAGE_REPOSITORY => "imagerepositories",
        _ => "imagepolicies",
    }
}

async fn run_case(env: &Env, case: &Case, known: &KnownList, verbose: bool) -> CaseReport {
    let started = Instant::now();
    let mut run = CaseRun::new(env, case, known, verbose);
    let result = run.run().await;
    run.cleanup().await;
    let elapsed = started.elapsed();
    let unknown = run
        .found
        .iter()
        .filter(|f| f.verdict == Verdict::Unknown)
        .count();
    let verdict = match (&result, unknown, run.found.len()) {
        (Err(_), _, _) => "ERROR".to_string(),
        (Ok(()), 0, 0) => "same".to_string(),
        (Ok(()), 0, n) => format!("{n} known differences"),
        (Ok(()), u, n) => format!("{u} UNKNOWN of {n} differences"),
    };
    let mut text = format!(
        "{}: {} ({:.1} s, {} fields): {verdict}\n",
        case.name,
        case.description.trim(),
        elapsed.as_secs_f64(),
        run.fields
    );
    text.push_str(&run.text);
    let error = result.err().map(|e| {
        let _ = writeln!(text, "    ERROR {e:#}");
        format!("{}: {e:#}", case.name)
    });
    CaseReport {
        text,
        fields: run.fields,
        found: run.found,
        error,
    }
}

impl<'a> CaseRun<'a> {
    fn new(env: &'a Env, case: &'a Case, known: &'a KnownList, verbose: bool) -> CaseRun<'a> {
        let namespaces = case.all_namespaces();
        let norms = Side::BOTH.map(|side| {
            let mut n = Normaliser::new();
            for ns in &namespaces {
                n.replace(namespace(side, &case.name, ns), ns.clone());
            }
            for (registry, host) in env.hosts() {
                n.replace(
                    format!("{host}/{}", case.name),
                    format!("{{{{{registry}}}}}"),
                );
                n.replace(host, format!("{{{{{registry}.host}}}}"));
            }
            for host in env.token_hosts() {
                n.replace(host.clone(), "{{token-service}}");
            }
            n.replace(format!("/{}/", case.name), "/{{case}}/");
            n.replace(format!(":{}/", case.name), ":{{case}}/");
            n
        });
        CaseRun {
            env,
            case,
            known,
            verbose,
            norms,
            tracked: Vec::new(),
            tokens: 0,
            text: String::new(),
            fields: 0,
            found: Vec::new(),
        }
    }

    fn ns(&self, side: Side, logical: &str) -> String {
        namespace(side, &self.case.name, logical)
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        self.create_namespaces().await?;
        for (i, step) in self.case.steps.iter().enumerate() {
            let at = format!("step {} ({})", i + 1, step.label());
            match step {
                Step::Apply(apply) => self.apply(apply, &at).await,
                Step::Push(p) => {
                    let path = format!("{}/{}", self.case.name, p.repository);
                    self.env
                        .push(&p.registry, &path, &p.tags, p.variant.as_deref())
                        .await
                        .map(|_| ())
                }
                Step::DockerSecret(s) => {
                    let config = self.env.docker_config(&s.registry, s.wrong_password)?;
                    let data = serde_json::Map::from_iter([(
                        ".dockerconfigjson".to_string(),
                        Value::from(config),
                    )]);
                    self.secret(
                        &s.name,
                        &s.namespace,
                        "kubernetes.io/dockerconfigjson",
                        data,
                    )
                    .await
                }
                Step::TlsSecret(s) => {
                    let data = self.env.tls_material(&s.registry, s.ca, s.client)?;
                    self.secret(&s.name, &s.namespace, &s.type_, data).await
                }
                Step::Annotate(r) => self.annotate(r).await,
                Step::Patch(p) => self.patch(p, &at).await,
                Step::Delete(r) => self.delete(r).await,
                Step::Settle(s) => self.settle_and_compare(s, i + 1).await,
            }
            .with_context(|| at.clone())?;
        }
        Ok(())
    }

    async fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let ran = self.env.kubectl(args, stdin).await;
        if !ran.success() {
            bail!("kubectl {}: {}", args.join(" "), ran.stderr.trim());
        }
        Ok(ran.stdout)
    }

    async fn create_namespaces(&self) -> anyhow::Result<()> {
        let mut docs = Vec::new();
        for side in Side::BOTH {
            for ns in self.case.all_namespaces() {
                let mut labels = serde_json::Map::new();
                labels.insert(
                    "compare.image-reflector/case".into(),
                    self.case.name.clone().into(),
                );
                if let Some(extra) = self.case.namespaces.get(&ns) {
                    for (k, v) in extra {
                        labels.insert(k.clone(), v.clone().into());
                    }
                }
                docs.push(json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": self.ns(side, &ns), "labels": labels},
                }));
            }
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string();
        self.kubectl_ok(&["apply", "-f", "-"], Some(&list)).await?;
        Ok(())
    }

    async fn cleanup(&self) {
        let names: Vec<String> = Side::BOTH
            .iter()
            .flat_map(|side| {
                self.case
                    .all_namespaces()
                    .into_iter()
                    .map(move |ns| (side, ns))
            })
            .map(|(side, ns)| self.ns(*side, &ns))
            .collect();
        let mut args = vec!["delete", "namespace", "--wait=false", "--ignore-not-found"];
        args.extend(names.iter().map(String::as_str));
        let _ = self.env.kubectl(&args, None).await;
    }

    /// The case's text for one side: templates expanded, namespaces mapped, shard label.
    fn side_objects(&self, side: Side, text: &str) -> anyhow::Result<Vec<Value>> {
        let case_name = &self.case.name;
        let expanded = case::replace_templates(text, |name| {
            let (registry, with_prefix) = case::template_target(name)?;
            let host = self.env.host(registry)?;
            Ok(if with_prefix {
                format!("{host}/{case_name}")
            } else {
                host
            })
        })?;
        let mut docs = case::parse_documents(&expanded)?;
        for doc in &mut docs {
            let r = case::object_ref(doc)?;
            doc["metadata"]["namespace"] = self.ns(side, &r.namespace).into();
            if r.kind == IMAGE_REPOSITORY || r.kind == IMAGE_POLICY {
                let labels = &mut doc["metadata"]["labels"];
                if !labels.is_object() {
                    *labels = json!({});
                }
                labels[SHARD_LABEL] = side.key().into();
            }
            if r.kind == IMAGE_POLICY
                && let Some(ns) = doc
                    .pointer_mut("/spec/imageRepositoryRef/namespace")
                    .filter(|v| v.is_string())
            {
                let mapped = self.ns(side, ns.as_str().unwrap_or_default());
                *ns = mapped.into();
            }
            if r.kind == IMAGE_REPOSITORY
                && let Some(selectors) = doc
                    .pointer_mut("/spec/accessFrom/namespaceSelectors")
                    .and_then(Value::as_array_mut)
            {
                // (`pointer_mut`, not indexing: indexing a missing key would add it.)
                for s in selectors {
                    if let Some(name) = s
                        .pointer_mut("/matchLabels/kubernetes.io~1metadata.name")
                        .filter(|v| v.is_string())
                    {
                        let mapped = self.ns(side, name.as_str().unwrap_or_default());
                        *name = mapped.into();
                    }
                }
            }
        }
        Ok(docs)
    }

    async fn apply(&mut self, apply: &case::Apply, at: &str) -> anyhow::Result<()> {
        let per_side = [
            self.side_objects(Side::Flux, &apply.text)?,
            self.side_objects(Side::Ours, &apply.text)?,
        ];
        if per_side[0].len() != apply.docs.len() || per_side[1].len() != apply.docs.len() {
            bail!("the objects changed number when templates were expanded");
        }
        for (i, flux_doc) in per_side[0].iter().enumerate() {
            let logical = case::object_ref(&apply.docs[i])?;
            let ours_doc = &per_side[1][i];
            let (flux_json, ours_json) = (flux_doc.to_string(), ours_doc.to_string());
            let (flux_ran, ours_ran) = futures::join!(
                self.env.kubectl(&["apply", "-f", "-"], Some(&flux_json)),
                self.env.kubectl(&["apply", "-f", "-"], Some(&ours_json)),
            );
            let image_kind = logical.kind == IMAGE_REPOSITORY || logical.kind == IMAGE_POLICY;
            if !image_kind {
                for ran in [&flux_ran, &ours_ran] {
                    if !ran.success() {
                        bail!("kubectl apply of {}: {}", logical.id(), ran.stderr.trim());
                    }
                }
                continue;
            }
            let outcome = |ran: &crate::kubectl::Ran, side: Side| -> (String, String) {
                if ran.success() {
                    ("accepted".into(), String::new())
                } else {
                    (
                        "refused".into(),
                        self.norms[idx(side)].text(ran.stderr.trim()),
                    )
                }
            };
            let (flux_out, flux_msg) = outcome(&flux_ran, Side::Flux);
            let (ours_out, ours_msg) = outcome(&ours_ran, Side::Ours);
            let pos = match self.tracked.iter().position(|t| t.r == logical) {
                Some(p) => p,
                None => {
                    self.tracked.push(Tracked {
                        r: logical.clone(),
                        state: [State::None; 2],
                        token: None,
                    });
                    self.tracked.len() - 1
                }
            };
            for (side, ok) in [
                (Side::Flux, flux_ran.success()),
                (Side::Ours, ours_ran.success()),
            ] {
                let state = &mut self.tracked[pos].state[idx(side)];
                *state = match (ok, *state) {
                    (true, _) => State::Applied,
                    // A refused update leaves the object as it was.
                    (false, State::Applied) => State::Applied,
                    (false, _) => State::Refused,
                };
            }
            if !ours_msg.is_empty() || !flux_msg.is_empty() {
                let _ = writeln!(
                    self.text,
                    "    {at}: {} refused: ours {:?}; flux {:?}",
                    logical.id(),
                    ours_msg,
                    flux_msg
                );
            }
            if flux_out != ours_out {
                self.record(at, &logical.id(), "admission", &ours_out, &flux_out);
            } else {
                self.fields += 1;
            }
        }
        Ok(())
    }

    async fn secret(
        &self,
        name: &str,
        namespace: &str,
        type_: &str,
        data: serde_json::Map<String, Value>,
    ) -> anyhow::Result<()> {
        for side in Side::BOTH {
            let doc = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": self.ns(side, namespace)},
                "type": type_,
                "stringData": data,
            })
            .to_string();
            self.kubectl_ok(&["apply", "-f", "-"], Some(&doc)).await?;
        }
        Ok(())
    }

    fn tracked_mut(&mut self, r: &ObjectRef) -> anyhow::Result<&mut Tracked> {
        self.tracked
            .iter_mut()
            .find(|t| t.r == *r)
            .ok_or_else(|| anyhow!("{} was never applied", r.id()))
    }

    /// Runs kubectl with `args(KIND, NAME, NAMESPACE)` on each side's copy of `r` that
    /// exists; returns the sides it ran on.
    async fn kubectl_each(
        &mut self,
        r: &ObjectRef,
        args: impl Fn(&str, &str, &str) -> Vec<String>,
    ) -> anyhow::Result<Vec<Side>> {
        let mut ran = Vec::new();
        for side in Side::BOTH {
            if self.tracked_mut(r)?.state[idx(side)] != State::Applied {
                continue;
            }
            let args = args(plural(&r.kind), &r.name, &self.ns(side, &r.namespace));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.kubectl_ok(&args, None).await?;
            ran.push(side);
        }
        Ok(ran)
    }

    async fn annotate(&mut self, r: &ObjectRef) -> anyhow::Result<()> {
        self.tokens += 1;
        let token = format!("compare-{}", self.tokens);
        let annotation = format!("reconcile.fluxcd.io/requestedAt={token}");
        self.kubectl_each(r, |kind, name, ns| {
            ["annotate", "--overwrite", kind, name, "-n", ns, &annotation]
                .map(String::from)
                .to_vec()
        })
        .await?;
        self.tracked_mut(r)?.token = Some(token);
        Ok(())
    }

    async fn patch(&mut self, p: &case::Patch, at: &str) -> anyhow::Result<()> {
        let r = p.target();
        let body = p.merge.to_string();
        let mut outcomes = Vec::new();
        for side in Side::BOTH {
            if self.tracked_mut(&r)?.state[idx(side)] != State::Applied {
                outcomes.push(("absent".to_string(), String::new()));
                continue;
            }
            let ns = self.ns(side, &r.namespace);
            let ran = self
                .env
                .kubectl(
                    &[
                        "patch",
                        plural(&r.kind),
                        &r.name,
                        "-n",
                        &ns,
                        "--type",
                        "merge",
                        "-p",
                        &body,
                    ],
                    None,
                )
                .await;
            outcomes.push(if ran.success() {
                ("accepted".into(), String::new())
            } else {
                (
                    "refused".into(),
                    self.norms[idx(side)].text(ran.stderr.trim()),
                )
            });
        }
        if outcomes[0].0 != outcomes[1].0 {
            let _ = writeln!(
                self.text,
                "    {at}: patch of {}: ours {:?}; flux {:?}",
                r.id(),
                outcomes[1].1,
                outcomes[0].1
            );
            self.record(at, &r.id(), "admission", &outcomes[1].0, &outcomes[0].0);
        } else {
            self.fields += 1;
        }
        Ok(())
    }

    async fn delete(&mut self, r: &ObjectRef) -> anyhow::Result<()> {
        let deleted = self
            .kubectl_each(r, |kind, name, ns| {
                [
                    "delete",
                    kind,
                    name,
                    "-n",
                    ns,
                    "--wait=false",
                    "--ignore-not-found",
                ]
                .map(String::from)
                .to_vec()
            })
            .await?;
        for side in deleted {
            self.tracked_mut(r)?.state[idx(side)] = State::Deleted;
        }
        Ok(())
    }

    fn record(&mut self, at: &str, object: &str, field: &str, ours: &str, flux: &str) {
        let verdict = match self.known.find(&self.case.name, object, field, ours, flux) {
            Some(k) => Verdict::Known {
                id: k.id.clone(),
                status: k.status,
            },
            None => Verdict::Unknown,
        };
        let label = match &verdict {
            Verdict::Unknown => "UNKNOWN".to_string(),
            Verdict::Known {
                id,
                status: Status::ToFix,
            } => format!("known, to fix: {id}"),
            Verdict::Known {
                id,
                status: Status::Deliberate,
            } => format!("known, deliberate: {id}"),
        };
        let _ = writeln!(
            self.text,
            "    DIFF {object} {field} [{label}]\n        ours: {ours}\n        flux: {flux}"
        );
        self.found.push(Found {
            case: self.case.name.clone(),
            at: at.to_string(),
            object: object.to_string(),
            field: field.to_string(),
            ours: ours.to_string(),
            flux: flux.to_string(),
            verdict,
        });
    }

    /// One side's view of every tracked object: the object (None when absent) and the
    /// TYPE/REASON pairs of its events.
    async fn observe(&self, side: Side) -> anyhow::Result<Vec<(Option<Value>, Vec<String>)>> {
        let client = self.env.client();
        let mut events_by_ns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut out = Vec::with_capacity(self.tracked.len());
        for t in &self.tracked {
            let ns = self.ns(side, &t.r.namespace);
            let obj = get(
                client,
                &format!(
                    "/apis/image.toolkit.fluxcd.io/v1/namespaces/{ns}/{}/{}",
                    plural(&t.r.kind),
                    t.r.name
                ),
            )
            .await?;
            if !events_by_ns.contains_key(&ns) {
                let list = get(
                    client,
                    &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
                )
                .await?
                .unwrap_or(Value::Null);
                events_by_ns.insert(
                    ns.clone(),
                    list["items"].as_array().cloned().unwrap_or_default(),
                );
            }
            let mut events: Vec<String> = events_by_ns[&ns]
                .iter()
                .filter(|e| {
                    e["regarding"]["kind"] == t.r.kind.as_str()
                        && e["regarding"]["name"] == t.r.name.as_str()
                })
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["type"].as_str().unwrap_or("?"),
                        e["reason"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            events.sort();
            events.dedup();
            out.push((obj, events));
        }
        Ok(out)
    }

    /// What is still missing for one side to count as settled.
    fn unmet(
        &self,
        side: Side,
        seen: &[(Option<Value>, Vec<String>)],
        settle: &Settle,
    ) -> Vec<String> {
        let mut unmet = Vec::new();
        for (t, (obj, _)) in self.tracked.iter().zip(seen) {
            let id = format!("{} {}", side.key(), t.r.id());
            match (t.state[idx(side)], obj) {
                (State::Deleted, Some(_)) => unmet.push(format!("{id} still exists")),
                (State::Applied, None) => unmet.push(format!("{id} is missing")),
                (State::Applied, Some(o)) => {
                    let suspended = o["spec"]["suspend"] == true;
                    if suspended {
                        continue;
                    }
                    let ready = view_condition(o, "Ready");
                    let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
                    if view_condition(o, "Reconciling")
                        .is_some_and(|c| c["reason"] == "Progressing")
                        && ready.is_some_and(|c| c["status"] != "Unknown")
                    {
                        unmet.push(format!(
                            "{id} is in the middle of a retry (Reconciling=Progressing)"
                        ));
                    }
                    match ready {
                        None => unmet.push(format!("{id} has no Ready condition")),
                        Some(c) if c["status"] == "Unknown" => {
                            unmet.push(format!("{id} is Ready=Unknown"))
                        }
                        Some(c)
                            if c["observedGeneration"]
                                .as_i64()
                                .is_some_and(|g| g < generation) =>
                        {
                            unmet.push(format!("{id}'s Ready is about an older generation"))
                        }
                        _ => {}
                    }
                    if let Some(token) = &t.token
                        && o["status"]["lastHandledReconcileAt"] != token.as_str()
                    {
                        unmet.push(format!("{id} has not handled {token}"));
                    }
                    // A policy still waiting for tags its repository has found is between
                    // two reconciles (Flux's policy reconcile can wait five seconds for
                    // tags before it answers DependencyNotReady).
                    if t.r.kind == IMAGE_POLICY
                        && ready.is_some_and(|c| c["reason"] == "DependencyNotReady")
                        && self.repository_of(t, o, seen).is_some_and(|repo| {
                            view_condition(repo, "Ready").is_some_and(|c| c["status"] == "True")
                                && repo["status"]["lastScanResult"]["tagCount"]
                                    .as_i64()
                                    .is_some_and(|n| n > 0)
                        })
                    {
                        unmet.push(format!("{id} waits for tags its repository has"));
                    }
                }
                _ => {}
            }
        }
        for u in &settle.until {
            let pos = self.tracked.iter().position(|t| t.r == u.object);
            let holds = pos
                .and_then(|p| seen[p].0.as_ref())
                .and_then(|o| view_condition(o, &u.condition))
                .is_some_and(|c| c["status"] == u.status.as_str());
            if !holds {
                unmet.push(format!(
                    "{} {} not {}={}",
                    side.key(),
                    u.object.id(),
                    u.condition,
                    u.status
                ));
            }
        }
        unmet
    }

    /// The fields that differ between two observations, `SIDE OBJECT FIELD: OLD -> NEW`.
    fn changes(&self, before: &[Vec<Fields>; 2], after: &[Vec<Fields>; 2]) -> Vec<String> {
        let mut out = Vec::new();
        for side in Side::BOTH {
            let (b, a) = (&before[idx(side)], &after[idx(side)]);
            for (i, t) in self.tracked.iter().enumerate() {
                let (Some(b), Some(a)) = (b.get(i), a.get(i)) else {
                    continue;
                };
                for (k, v) in a {
                    let old = b.get(k).map(String::as_str).unwrap_or(ABSENT);
                    if old != v {
                        out.push(format!("{} {} {k}: {old:?} -> {v:?}", side.key(), t.r.id()));
                    }
                }
            }
        }
        out
    }

    /// The observed ImageRepository a tracked policy references, if it is tracked.
    fn repository_of<'v>(
        &self,
        policy: &Tracked,
        obj: &Value,
        seen: &'v [(Option<Value>, Vec<String>)],
    ) -> Option<&'v Value> {
        let name = obj["spec"]["imageRepositoryRef"]["name"].as_str()?;
        let namespace = match obj["spec"]["imageRepositoryRef"]["namespace"].as_str() {
            // The side's namespace: map it back to the logical one.
            Some(ns) => self
                .case
                .all_namespaces()
                .into_iter()
                .find(|l| Side::BOTH.iter().any(|s| self.ns(*s, l) == ns))?,
            None => policy.r.namespace.clone(),
        };
        let pos = self.tracked.iter().position(|t| {
            t.r.kind == IMAGE_REPOSITORY && t.r.name == name && t.r.namespace == namespace
        })?;
        seen.get(pos)?.0.as_ref()
    }

    fn side_fields(&self, side: Side, seen: &[(Option<Value>, Vec<String>)]) -> Vec<Fields> {
        // Revision values appear in Flux's messages; they differ by design (see `view`).
        let mut norm = self.norms[idx(side)].clone();
        for (obj, _) in seen {
            if let Some(rev) = obj
                .as_ref()
                .and_then(|o| o["status"]["lastScanResult"]["revision"].as_str())
                && rev.len() >= 6
            {
                norm.replace(rev, "<revision>");
            }
        }
        self.tracked
            .iter()
            .zip(seen)
            .map(|(t, (obj, events))| view::fields(&t.r.kind, obj.as_ref(), events, &norm))
            .collect()
    }

    async fn settle_and_compare(&mut self, settle: &Settle, step: usize) -> anyhow::Result<()> {
        let timeout = settle.timeout.unwrap_or(Duration::from_secs(60));
        let quiet = settle.quiet.unwrap_or(Duration::from_secs(3));
        let started = Instant::now();
        let mut last: Option<[Vec<Fields>; 2]> = None;
        let mut stable_since = Instant::now();
        // What changed last, to say why a settle timed out.
        let mut last_change: Vec<String> = Vec::new();
        let (fields, unmet, settled) = loop {
            let (flux, ours) = futures::join!(self.observe(Side::Flux), self.observe(Side::Ours));
            let seen = [flux?, ours?];
            let fields = [
                self.side_fields(Side::Flux, &seen[0]),
                self.side_fields(Side::Ours, &seen[1]),
            ];
            let mut unmet = self.unmet(Side::Flux, &seen[0], settle);
            unmet.extend(self.unmet(Side::Ours, &seen[1], settle));
            // Flux marks every retry Reconciling=Progressing while it runs, then
            // ProgressingWithRetry: that flip is not a change of outcome (and `unmet`
            // waits for a moment between two retries).
            let steady = fields
                .clone()
                .map(|side| side.into_iter().map(without_progress).collect::<Vec<_>>());
            if let Some(previous) = &last
                && *previous != steady
            {
                last_change = self.changes(previous, &steady);
            }
            if last.as_ref() != Some(&steady) {
                stable_since = Instant::now();
                last = Some(steady);
            }
            if unmet.is_empty() && stable_since.elapsed() >= quiet {
                break (fields, unmet, true);
            }
            if started.elapsed() >= timeout {
                break (fields, unmet, false);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let at = format!("settle after step {step}");
        let mut why = Vec::new();
        if !settled {
            why.extend(unmet.iter().cloned());
            if stable_since.elapsed() < quiet {
                why.push(format!("still changing: {}", last_change.join("; ")));
            }
        }
        let _ = writeln!(
            self.text,
            "  {at} ({:.1} s){}",
            started.elapsed().as_secs_f64(),
            if settled {
                String::new()
            } else {
                format!(", NOT SETTLED after {timeout:?}: {}", why.join("; "))
            }
        );
        let objects: Vec<(ObjectRef, [State; 2])> = self
            .tracked
            .iter()
            .map(|t| (t.r.clone(), t.state))
            .collect();
        for (i, (r, [flux_state, ours_state])) in objects.into_iter().enumerate() {
            // An object one side refused at admission was reported then; say what the
            // other side made of it.
            if flux_state == State::Refused
                || ours_state == State::Refused
                || flux_state == State::None
                || ours_state == State::None
            {
                for (side, other) in [(Side::Flux, Side::Ours), (Side::Ours, Side::Flux)] {
                    let f = &fields[idx(side)][i];
                    if [flux_state, ours_state][idx(side)] == State::Applied
                        && [flux_state, ours_state][idx(other)] == State::Refused
                    {
                        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or(ABSENT);
                        let _ = writeln!(
                            self.text,
                            "    {} (refused by {}): {} has Ready={} {}, Stalled={}: {:?}",
                            r.id(),
                            other.key(),
                            side.key(),
                            get("conditions.Ready.status"),
                            get("conditions.Ready.reason"),
                            get("conditions.Stalled.status"),
                            get("conditions.Ready.message"),
                        );
                    }
                }
                continue;
            }
            let (diffs, n) = view::compare(&fields[1][i], &fields[0][i]);
            self.fields += n;
            if self.verbose {
                for (k, v) in &fields[0][i] {
                    let ours = fields[1][i].get(k).map(String::as_str).unwrap_or(ABSENT);
                    let _ = writeln!(self.text, "      {} {k}: flux {v:?} ours {ours:?}", r.id());
                }
            }
            let id = r.id();
            for d in diffs {
                self.record(&at, &id, &d.field, &d.ours, &d.flux);
            }
        }
        Ok(())
    }
}

/// The fields without Reconciling's reason and message, which a retry in progress changes.
fn without_progress(mut fields: Fields) -> Fields {
    fields.remove("conditions.Reconciling.reason");
    fields.remove("conditions.Reconciling.message");
    fields
}

fn view_condition<'v>(obj: &'v Value, type_: &str) -> Option<&'v Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// `SIDE-CASE-NAMESPACE`.
fn namespace(side: Side, case: &str, logical: &str) -> String {
    format!("{}-{case}-{logical}", side.key())
}

/// GET of an API path as JSON; None on 404.
async fn get(client: &kube::Client, path: &str) -> anyhow::Result<Option<Value>> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .context("building a GET request")?;
    match client.request::<Value>(request).await {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(anyhow!("GET {path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_globs() {
        assert!(glob_matches("semver-*", "semver-basic"));
        assert!(glob_matches("*auth*", "basic-auth-wrong-password"));
        assert!(!glob_matches("semver-*", "numerical"));
        assert!(glob_matches("x", "x"));
    }

    #[test]
    fn the_shipped_cases_and_known_differences_read() {
        let options = Options::default();
        let cases = case::load_dir(&options.cases_dir).expect("cases read");
        assert!(cases.len() >= 40, "{} cases", cases.len());
        assert!(cases.iter().any(|c| c.fast));
        let known = KnownList::load(&options.known_file).expect("known differences read");
        assert_eq!(pinned_flux_version().ok(), Some(known.flux_version.clone()));
        for k in &known.entries {
            assert!(
                cases.iter().any(|c| k.is_about(&c.name)),
                "known difference {} names no shipped case",
                k.id
            );
        }
    }

    #[test]
    fn the_readme_lists_every_known_difference() {
        let options = Options::default();
        let known = KnownList::load(&options.known_file).expect("known differences read");
        let readme = std::fs::read_to_string(crate::repo_root().join("README.md")).expect("README");
        let section = readme
            .split_once("## Differences from Flux")
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
            .expect("README has a \"Differences from Flux\" section");
        for k in &known.entries {
            assert!(
                section.contains(&format!("`{}`", k.id)),
                "README's \"Differences from Flux\" does not list `{}`",
                k.id
            );
        }
    }
}
