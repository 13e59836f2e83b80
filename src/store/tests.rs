use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use prometheus_client::registry::Registry;

use super::*;

mod corruption;

/// A store in a new temporary directory (deleted when the first value drops).
fn fresh() -> (tempfile::TempDir, TagStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = TagStore::open(dir.path()).unwrap();
    (dir, store)
}

fn key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(namespace, name)
}

fn numbered_tags(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}.{}.0", i % 7)).collect()
}

fn entry(uid: &str, tags: Vec<String>) -> Entry {
    Entry {
        meta: EntryMeta {
            uid: uid.to_owned(),
            canonical_image_name: "docker.io/library/alpine".to_owned(),
            revision: format!("sha256:{uid}"),
            scan_time: "2026-11-28T07:00:00Z".parse().unwrap(),
            tag_count: tags.len() as u64,
            spec_fingerprint: "image=alpine;exclusionList=^.*\\.sig$".to_owned(),
            pull_secrets: Vec::new(),
        },
        tags,
    }
}

fn path_of(store: &TagStore, key: &ObjectKey) -> PathBuf {
    store.root().join(key.file_name())
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Runs `f` with tracing output captured into a string.
fn with_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, logs)
}

fn metrics_text(store: &TagStore) -> String {
    let mut registry = Registry::default();
    store.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

#[test]
fn round_trips_an_entry_and_keeps_it_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("flux-system", "podinfo");
    let e = entry("uid-1", numbered_tags("v", 12));
    {
        let store = TagStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&k).unwrap(), None);
        store.put(&k, &e).unwrap();
        assert_eq!(store.get(&k).unwrap(), Some(e.clone()));
        assert_eq!(store.meta(&k), Some(e.meta.clone()));
    }
    let store = TagStore::open(dir.path()).unwrap();
    assert_eq!(store.meta(&k), Some(e.meta.clone()));
    assert_eq!(store.tags(&k).unwrap(), Some(e.tags));
    assert_eq!(store.keys(), vec![k]);
    assert_eq!(store.len(), 1);
}

#[test]
fn keeps_tags_per_object_even_for_the_same_image() {
    let (_dir, store) = fresh();
    let a = key("team-a", "alpine");
    let b = key("team-b", "alpine");
    store.put(&a, &entry("uid-a", vec!["3.18".into()])).unwrap();
    store
        .put(&b, &entry("uid-b", vec!["3.19".into(), "3.20".into()]))
        .unwrap();
    assert_eq!(store.tags(&a).unwrap(), Some(vec!["3.18".to_owned()]));
    assert_eq!(store.meta(&b).unwrap().tag_count, 2);
    store.remove(&a).unwrap();
    assert_eq!(store.tags(&b).unwrap().map(|t| t.len()), Some(2));
}

#[test]
fn compresses_large_entries_and_reads_them_back_exactly() {
    let (_dir, store) = fresh();
    let k = key("default", "big");
    let e = entry("uid", numbered_tags("release-", 5_000));
    let raw_len = serde_json::to_vec(&e.tags).unwrap().len() as u64;
    store.put(&k, &e).unwrap();
    let bytes = fs::read(path_of(&store, &k)).unwrap();
    assert!(format::is_deflated(&bytes));
    assert!(
        (bytes.len() as u64) < raw_len / 3,
        "{} bytes on disk for {raw_len} bytes of tags",
        bytes.len()
    );
    assert_eq!(store.get(&k).unwrap(), Some(e));
}

#[test]
fn leaves_small_entries_uncompressed() {
    let (_dir, store) = fresh();
    let k = key("default", "small");
    store.put(&k, &entry("uid", numbered_tags("v", 3))).unwrap();
    assert!(!format::is_deflated(
        &fs::read(path_of(&store, &k)).unwrap()
    ));
}

#[test]
fn holds_an_entry_of_100000_tags() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("default", "many");
    let e = entry("uid", numbered_tags("1.0.0-build.", 100_000));
    TagStore::open(dir.path()).unwrap().put(&k, &e).unwrap();
    let store = TagStore::open(dir.path()).unwrap();
    assert_eq!(store.meta(&k).unwrap().tag_count, 100_000);
    assert_eq!(store.tags(&k).unwrap(), Some(e.tags));
}

#[test]
fn stores_an_entry_with_no_tags() {
    let (_dir, store) = fresh();
    let k = key("default", "empty-repo");
    store.put(&k, &entry("uid", vec![])).unwrap();
    assert_eq!(store.tags(&k).unwrap(), Some(vec![]));
}

#[test]
fn replaces_an_entry_and_its_size_on_a_second_put() {
    let (_dir, store) = fresh();
    let k = key("default", "app");
    store.put(&k, &entry("uid", numbered_tags("v", 2))).unwrap();
    let second = entry("uid", numbered_tags("v", 40));
    store.put(&k, &second).unwrap();
    assert_eq!(store.get(&k).unwrap(), Some(second));
    let on_disk = fs::metadata(path_of(&store, &k)).unwrap().len();
    assert_eq!(store.entry_size(&k), Some(on_disk));
    assert_eq!(store.size_bytes(), on_disk);
    assert_eq!(file_names(store.root()).len(), 1);
}

#[test]
fn refuses_an_entry_whose_tag_count_disagrees_with_its_tags() {
    let (_dir, store) = fresh();
    let mut e = entry("uid", numbered_tags("v", 3));
    e.meta.tag_count = 4;
    let err = store.put(&key("ns", "n"), &e).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tag store: refusing to store ns/n: meta.tag_count is 4 but 3 tags were given"
    );
    assert!(store.is_empty());
}

#[test]
fn refuses_metadata_too_large_for_the_header() {
    let (_dir, store) = fresh();
    let mut e = entry("uid", vec![]);
    e.meta.spec_fingerprint = "x".repeat(70_000);
    let err = store.put(&key("ns", "n"), &e).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert!(file_names(store.root()).is_empty());
}

#[test]
fn removes_an_entry_once() {
    let (_dir, store) = fresh();
    let k = key("ns", "gone");
    store.put(&k, &entry("uid", vec!["a".into()])).unwrap();
    assert!(store.remove(&k).unwrap());
    assert!(!store.remove(&k).unwrap());
    assert_eq!(store.get(&k).unwrap(), None);
    assert_eq!(store.meta(&k), None);
    assert!(file_names(store.root()).is_empty());
    assert_eq!(store.size_bytes(), 0);
}

#[test]
fn retain_removes_entries_of_objects_deleted_while_down() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = TagStore::open(dir.path()).unwrap();
        for name in ["keep-1", "drop-1", "keep-2", "drop-2"] {
            store
                .put(&key("ns", name), &entry(name, vec!["1.0".into()]))
                .unwrap();
        }
    }
    let store = TagStore::open(dir.path()).unwrap();
    let live: HashSet<ObjectKey> = [key("ns", "keep-1"), key("ns", "keep-2")].into();
    assert_eq!(store.retain(|k| live.contains(k)).unwrap(), 2);
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, vec![key("ns", "keep-1"), key("ns", "keep-2")]);
    assert_eq!(file_names(dir.path()).len(), 2);
    assert_eq!(TagStore::open(dir.path()).unwrap().len(), 2);
}

#[test]
fn keys_with_odd_characters_stay_inside_the_root() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("store");
    let store = TagStore::open(&root).unwrap();
    let keys = [
        key("..", ".."),
        key("../../etc", "passwd"),
        key("/", "/"),
        key("", ""),
        key("a/b", "c"),
        key("a", "b/c"),
        key("nul\0byte", "new\nline"),
        key("ünïcödé", "名前"),
        key("ns", &"x".repeat(10_000)),
        key("ns", ".tags"),
    ];
    for (i, k) in keys.iter().enumerate() {
        store
            .put(k, &entry(&format!("uid-{i}"), vec![format!("t{i}")]))
            .unwrap();
    }
    assert_eq!(file_names(parent.path()), vec!["store".to_owned()]);
    let names = file_names(&root);
    assert_eq!(names.len(), keys.len(), "every key has its own file");
    assert!(names.iter().all(|n| is_entry_name(n)), "{names:?}");
    let store = TagStore::open(&root).unwrap();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(store.tags(k).unwrap(), Some(vec![format!("t{i}")]), "{k:?}");
    }
}

#[test]
fn concurrent_writers_of_different_keys_all_land() {
    let (_dir, store) = fresh();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                for i in 0..40 {
                    let k = key(&format!("ns-{t}"), &format!("repo-{i}"));
                    store
                        .put(&k, &entry(&format!("{t}-{i}"), numbered_tags("v", i)))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.len(), 320);
    let reopened = TagStore::open(store.root()).unwrap();
    assert_eq!(reopened.len(), 320);
    assert_eq!(reopened.size_bytes(), store.size_bytes());
    let k = key("ns-5", "repo-33");
    assert_eq!(reopened.tags(&k).unwrap(), Some(numbered_tags("v", 33)));
}

#[test]
fn concurrent_writers_of_one_key_leave_one_whole_entry() {
    let (_dir, store) = fresh();
    let k = key("ns", "contended");
    // Each writer's tags carry its uid, so a mixed entry would show.
    let written = |w: usize| {
        entry(
            &format!("writer-{w}"),
            numbered_tags(&format!("w{w}-"), 50 + w * 300),
        )
    };
    store.put(&k, &written(0)).unwrap();
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (store, k, e) = (store.clone(), k.clone(), written(w));
            thread::spawn(move || {
                for _ in 0..25 {
                    store.put(&k, &e).unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let (store, k) = (store.clone(), k.clone());
        thread::spawn(move || {
            for _ in 0..200 {
                let got = store.get(&k).unwrap().expect("an entry is always present");
                let w: usize = got.meta.uid["writer-".len()..].parse().unwrap();
                assert_eq!(got, written(w));
            }
        })
    };
    for h in writers {
        h.join().unwrap();
    }
    reader.join().unwrap();
    let last = store.get(&k).unwrap().unwrap();
    assert_eq!(
        store.meta(&k),
        Some(last.meta.clone()),
        "index agrees with disk"
    );
    assert_eq!(
        store.entry_size(&k),
        Some(fs::metadata(path_of(&store, &k)).unwrap().len())
    );
    assert_eq!(
        file_names(store.root()).len(),
        1,
        "no temporary file is left behind"
    );
    let reopened = TagStore::open(store.root()).unwrap();
    assert_eq!(reopened.get(&k).unwrap(), Some(last));
}

#[test]
fn removes_a_stray_temporary_file_left_by_a_crash_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("ns", "app");
    let e = entry("uid", numbered_tags("v", 100));
    TagStore::open(dir.path()).unwrap().put(&k, &e).unwrap();
    // What a crash between create and rename leaves: a partial newer version.
    let temp = dir
        .path()
        .join(format!(".{}.4242.7{TEMP_SUFFIX}", k.file_name()));
    fs::write(&temp, b"IRTS\x01\x00half-written").unwrap();

    let (store, logs) = with_logs(|| TagStore::open(dir.path()).unwrap());
    assert!(!temp.exists());
    assert!(logs.contains(&temp.display().to_string()), "{logs}");
    assert_eq!(
        store.get(&k).unwrap(),
        Some(e),
        "the previous entry survives"
    );
}

#[test]
fn leaves_files_it_did_not_write_alone() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("README"), "notes").unwrap();
    fs::create_dir(dir.path().join("lost+found")).unwrap();
    let store = TagStore::open(dir.path()).unwrap();
    assert!(store.is_empty());
    assert!(dir.path().join("README").exists());
    assert!(dir.path().join("lost+found").exists());
}

#[test]
fn opens_a_root_that_does_not_exist_yet() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("a/b/store");
    let store = TagStore::open(&root).unwrap();
    assert!(root.is_dir());
    assert!(store.is_empty());
}

#[test]
fn names_the_path_when_the_root_cannot_be_created() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let err = TagStore::open(&file.join("store")).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "tag store: cannot create directory {}",
            file.join("store").display()
        )),
        "{err}"
    );
}

#[test]
fn exposes_size_and_entry_count_as_metrics() {
    let (_dir, store) = fresh();
    store
        .put(&key("a", "1"), &entry("1", numbered_tags("v", 10)))
        .unwrap();
    store
        .put(&key("a", "2"), &entry("2", numbered_tags("v", 9_000)))
        .unwrap();
    let on_disk: u64 = fs::read_dir(store.root())
        .unwrap()
        .map(|d| d.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(store.size_bytes(), on_disk);
    let text = metrics_text(&store);
    assert!(
        text.contains(&format!("image_reflector_store_size_bytes {on_disk}\n")),
        "{text}"
    );
    assert!(text.contains("image_reflector_store_entries 2\n"), "{text}");
    store.remove(&key("a", "2")).unwrap();
    assert!(metrics_text(&store).contains("image_reflector_store_entries 1\n"));
}

/// `bytes` (a whole entry file) with its header replaced by `header`, resealed.
fn with_header(bytes: &[u8], header: &[u8]) -> Vec<u8> {
    let old_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let mut out = bytes[..format::PREFIX_LEN].to_vec();
    out[8..12].copy_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(&bytes[format::PREFIX_LEN + old_len..]);
    format::reseal(&mut out);
    out
}

#[test]
fn reads_an_entry_written_before_pull_secrets_were_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("ns", "old");
    let written = entry("u", numbered_tags("t", 3));
    let path = {
        let store = TagStore::open(dir.path()).unwrap();
        store.put(&k, &written).unwrap();
        path_of(&store, &k)
    };
    // The header exactly as the format's first builds wrote it: no `pull_secrets`.
    let old_header = serde_json::json!({
        "key": {"namespace": "ns", "name": "old"},
        "meta": {
            "uid": "u",
            "canonical_image_name": "docker.io/library/alpine",
            "revision": "sha256:u",
            "scan_time": "2026-11-28T07:00:00Z",
            "tag_count": 3,
            "spec_fingerprint": "image=alpine;exclusionList=^.*\\.sig$",
        }
    });
    let old = with_header(&fs::read(&path).unwrap(), old_header.to_string().as_bytes());
    fs::write(&path, &old).unwrap();

    let store = TagStore::open(dir.path()).unwrap();
    assert_eq!(store.meta(&k), Some(written.meta.clone()));
    assert!(store.meta(&k).unwrap().pull_secrets.is_empty());
    assert_eq!(store.get(&k).unwrap(), Some(written));
}

#[test]
fn an_entry_without_pull_secrets_is_written_as_before() {
    let (_dir, store) = fresh();
    let k = key("ns", "plain");
    store.put(&k, &entry("u", numbered_tags("t", 3))).unwrap();
    let bytes = fs::read(path_of(&store, &k)).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains("pull_secrets"),
        "an earlier build reads it as it wrote it"
    );
}

#[test]
fn keeps_the_pull_secrets_a_scan_read_across_a_reopen_and_finds_their_users() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key("apps", "a"), key("apps", "b"));
    {
        let store = TagStore::open(dir.path()).unwrap();
        let mut with_secret = entry("ua", numbered_tags("a", 2));
        with_secret.meta.pull_secrets = vec![SecretVersion {
            name: "regcred".into(),
            resource_version: "7".into(),
        }];
        store.put(&a, &with_secret).unwrap();
        store.put(&b, &entry("ub", numbered_tags("b", 2))).unwrap();
    }
    let store = TagStore::open(dir.path()).unwrap();
    assert_eq!(
        store.meta(&a).unwrap().pull_secrets,
        vec![SecretVersion {
            name: "regcred".into(),
            resource_version: "7".into()
        }]
    );
    let users = store.keys_where(|_, meta| meta.pull_secrets.iter().any(|p| p.name == "regcred"));
    assert_eq!(users, vec![a]);
}

#[test]
fn a_failing_write_names_the_entry_so_every_retry_fails_with_the_same_message() {
    let (dir, store) = fresh();
    let k = key("team", "app");
    // The directory vanishes under the store: every write fails, as on a full disk.
    fs::remove_dir_all(dir.path()).unwrap();
    let first = store.put(&k, &entry("u1", vec!["1.0".into()])).unwrap_err();
    let again = store.put(&k, &entry("u1", vec!["1.0".into()])).unwrap_err();
    assert_eq!(first.to_string(), again.to_string());
    let message = first.to_string();
    assert!(message.contains(&k.file_name()), "{message}");
    // Not the temporary file's name (`.<entry>.<pid>.<sequence>.tmp`).
    assert!(
        !message.contains(&format!("{}.", k.file_name())),
        "{message}"
    );
}
