//! `image-reflector policy` on tags files, stdin and a live registry (Debian's
//! `docker-registry`): what it prints and its exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use test_support::registry::{Registry, RegistryAuth, RegistryOptions};

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_image-reflector"));
    cmd.arg("--log-encoding=console").arg("policy");
    cmd
}

fn tags_file(lines: &[&str]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f
}

fn run(args: &[&str], file: &tempfile::NamedTempFile) -> Output {
    binary()
        .args(args)
        .arg("--tags-file")
        .arg(file.path())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

const PODINFO: &[&str] = &[
    "5.0.3",
    "5.1.3",
    "v5.1.4",
    "",
    "6.0.0-rc.1",
    "latest",
    "  5.1.2  ",
    "main-3c1f9a2-1611",
];

#[test]
fn prints_the_highest_tag_in_the_semver_range() {
    let out = run(&["--semver", "5.1.x"], &tags_file(PODINFO));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "v5.1.4\n");
}

#[test]
fn admits_prereleases_only_when_the_range_does() {
    let file = tags_file(PODINFO);
    let out = run(&["--semver", ">=5.0.0"], &file);
    assert_eq!(stdout(&out), "v5.1.4\n");
    let out = run(&["--semver", ">=5.0.0-0"], &file);
    assert_eq!(stdout(&out), "6.0.0-rc.1\n");
}

#[test]
fn reads_tags_from_stdin() {
    let mut child = binary()
        .args(["--alphabetical", "desc", "--tags-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"b\r\na\n\nc\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "a\n");
}

#[test]
fn numerical_build_numbers_through_filter_extract() {
    let file = tags_file(&["main-3c1f9a2-1611", "main-0d2e7b1-999", "dev-aaaaaaa-5000"]);
    let out = run(
        &[
            "--numerical",
            "asc",
            "--filter-pattern",
            r"^main-[a-f0-9]+-(?P<ts>\d+)$",
            "--filter-extract",
            "$ts",
        ],
        &file,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "main-3c1f9a2-1611\n");
}

#[test]
fn json_reports_the_selection_candidates_after_filtering_and_counts() {
    let out = run(
        &[
            "--semver",
            "^5",
            "--filter-pattern",
            r"^v?(.*)$",
            "--filter-extract",
            "$1",
            "-o",
            "json",
        ],
        &tags_file(PODINFO),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["selected"]["tag"], "v5.1.4");
    assert_eq!(v["selected"]["value"], "5.1.4");
    assert_eq!(v["policy"]["semver"]["range"], "^5");
    assert_eq!(v["filterTags"]["extract"], "$1");
    assert_eq!(v["counts"]["tags"], 7);
    assert_eq!(v["counts"]["filtered"], 7);
    assert_eq!(v["counts"]["eligible"], 4);
    assert_eq!(v["counts"]["notParsed"], 2);
    assert_eq!(v["counts"]["outOfRange"], 1);
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 7);
    assert_eq!(candidates[3]["tag"], "6.0.0-rc.1");
    assert_eq!(candidates[3]["skipped"], "out of range");
    assert_eq!(candidates[4]["tag"], "latest");
    assert_eq!(candidates[4]["skipped"], "not semver");
    assert!(candidates[0].get("skipped").is_none());
}

#[test]
fn exits_1_and_explains_when_no_tag_matches() {
    let out = run(&["--semver", "7.x"], &tags_file(PODINFO));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.contains("no tag matched: 7 tags"), "{err}");
    assert!(err.contains("outside range \"7.x\""), "{err}");
}

#[test]
fn json_on_no_match_still_reports_counts_and_exits_1() {
    let out = run(
        &["--numerical", "asc", "-o", "json"],
        &tags_file(&["latest"]),
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v["selected"].is_null());
    assert_eq!(v["counts"]["notParsed"], 1);
}

#[test]
fn exits_2_naming_an_invalid_range() {
    let out = run(&["--semver", "1.0.0p"], &tags_file(PODINFO));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid semver range \"1.0.0p\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exits_2_naming_an_extract_group_the_pattern_lacks() {
    let out = run(
        &[
            "--alphabetical",
            "asc",
            "--filter-pattern",
            r"^RELEASE\.(?P<timestamp>.*)Z$",
            "--filter-extract",
            "$ts",
        ],
        &tags_file(PODINFO),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--filter-extract"), "{err}");
    assert!(err.contains("named \"timestamp\""), "{err}");
}

#[test]
fn exits_2_unless_exactly_one_policy_is_given() {
    let file = tags_file(PODINFO);
    assert_eq!(run(&[], &file).status.code(), Some(2));
    let both = run(&["--semver", "*", "--numerical", "asc"], &file);
    assert_eq!(both.status.code(), Some(2));
    assert!(
        stderr(&both).contains("cannot be used with"),
        "{}",
        stderr(&both)
    );
}

#[test]
fn exits_3_when_the_tags_file_cannot_be_read() {
    let out = binary()
        .args(["--semver", "*", "--tags-file", "/nonexistent/tags.txt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("/nonexistent/tags.txt"),
        "{}",
        stderr(&out)
    );
}

const LIVE_TAGS: &[&str] = &[
    "1.0.0",
    "1.2.0",
    "v1.3.0-rc.1",
    "2.0.0",
    "latest",
    "sha256-0a1b.sig",
    "zzz",
];

#[tokio::test]
async fn selects_from_a_live_repository_with_the_scan_flags() {
    let registry = Registry::start(RegistryOptions::default());
    registry.push_tags("team/app", LIVE_TAGS).await;
    let image = format!("{}/team/app", registry.host());

    let out = binary()
        .args(["--semver", "1.x", &image, "--insecure"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1.2.0\n");

    let out = binary()
        .args([
            "--semver",
            ">=1.0.0-0 <2.0.0",
            "-o",
            "json",
            &image,
            "--insecure",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["image"], image);
    assert!(
        v["revision"].as_str().unwrap().starts_with("sha256:"),
        "{v}"
    );
    assert_eq!(v["selected"]["tag"], "v1.3.0-rc.1");
    // The scan's default exclusion list dropped the signature tag.
    assert_eq!(v["counts"]["tags"], 6);

    // The registry flags reach the scan: --exclude replaces the default list.
    let out = binary()
        .args(["--alphabetical", "asc", &image, "--insecure"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "zzz\n", "{}", stderr(&out));
    let out = binary()
        .args([
            "--alphabetical",
            "asc",
            &image,
            "--insecure",
            "--exclude",
            "^zzz$",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "v1.3.0-rc.1\n", "{}", stderr(&out));
}

#[tokio::test]
async fn takes_policy_and_registry_flags_in_any_order() {
    let registry = Registry::start(RegistryOptions::default());
    registry.push_tags("team/app", LIVE_TAGS).await;
    let image = format!("{}/team/app", registry.host());

    let out = binary()
        .args([
            "--insecure",
            "--exclude",
            "^zzz$",
            &image,
            "-o",
            "json",
            "--alphabetical",
            "asc",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["selected"]["tag"], "v1.3.0-rc.1");
    assert_eq!(v["image"], image);
    // --exclude replaced the default list, so the signature tag is a candidate.
    assert_eq!(v["counts"]["tags"], 6);
    assert!(
        v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["tag"] == "sha256-0a1b.sig"),
        "{v}"
    );
}

fn with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = binary()
        .args(args)
        .env_remove("DOCKER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn reads_the_registry_password_from_stdin_and_exits_3_when_it_is_refused() {
    let registry = Registry::start(RegistryOptions {
        auth: RegistryAuth::Basic {
            username: "cli".into(),
            password: "cli-pw".into(),
        },
        ..Default::default()
    });
    registry.push_tags("team/app", &["1.0.0", "1.1.0"]).await;
    let image = format!("{}/team/app", registry.host());
    let given = image.clone();
    let out = tokio::task::spawn_blocking(move || {
        with_stdin(
            &[
                "--username",
                "cli",
                "--password-stdin",
                "--semver",
                "1.x",
                &given,
            ],
            "cli-pw\n",
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1.1.0\n");

    let out = tokio::task::spawn_blocking(move || {
        with_stdin(
            &[
                "--semver",
                "1.x",
                &image,
                "--username",
                "cli",
                "--password-stdin",
            ],
            "wrong",
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("image-reflector policy: authentication failed"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "the password leaked: {err}");
}

#[tokio::test]
async fn exits_3_with_the_scan_message_when_the_repository_is_missing() {
    let registry = Registry::start(RegistryOptions::default());
    let image = format!("{}/team/missing", registry.host());
    let out = binary()
        .args(["--semver", "*", &image, "--insecure"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("team/missing"), "{}", stderr(&out));
}

#[test]
fn exits_2_on_scan_only_flags_an_invalid_image_or_registry_flag_or_a_mixed_source() {
    let cases: &[(&[&str], &str)] = &[
        // -o, --all-tags and --dry-run are scan's own; policy's -o is its report format.
        (
            &["--semver", "*", "127.0.0.1:1/app", "--all-tags"],
            "unexpected argument '--all-tags'",
        ),
        (
            &["--semver", "*", "127.0.0.1:1/app", "-o", "table"],
            "'table'",
        ),
        (&["--semver", "*", "Bad Image"], "Bad Image"),
        // The scan's own checks, with its messages.
        (
            &["--semver", "*", "127.0.0.1:1/app", "--exclude", "("],
            "--exclude \"(\" (number 1) is not a valid regular expression",
        ),
        (
            &[
                "--semver",
                "*",
                "127.0.0.1:1/app",
                "--ca-file",
                "/nonexistent/ca.pem",
            ],
            "--ca-file /nonexistent/ca.pem",
        ),
        (
            &["--semver", "*", "--tags-file", "-", "127.0.0.1:1/app"],
            "'--tags-file <FILE>' cannot be used with '[IMAGE]'",
        ),
        // Registry flags mean nothing to a tags file: refused, naming the flag given.
        (
            &["--semver", "*", "--tags-file", "-", "--insecure"],
            "'--tags-file <FILE>' cannot be used with '--insecure'",
        ),
    ];
    for (args, expected) in cases {
        let out = binary().args(*args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
