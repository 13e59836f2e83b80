//! The tag store: the tags of each ImageRepository object, on disk, crash-safe.
//!
//! One file per object (`namespace/name`), never shared between two objects of the same
//! image. The process keeps only a small index in memory (key → [`EntryMeta`] and size on
//! disk); tags are read from disk when asked for, so memory does not grow with the number
//! of tags.
//!
//! - **Writes are atomic**: a temporary file in the same directory, written, fsynced,
//!   renamed over the entry, then the directory fsynced. A crash leaves either the old or
//!   the new entry, plus at worst a stray temporary file that the next [`TagStore::open`]
//!   removes.
//! - **Entries are checked**: a SHA-256 checksum covers every byte of the file (see
//!   `format.rs` for the layout); payloads over 4 KiB are deflated when that helps.
//! - **Corruption is survivable**: a bad entry (checksum, header, truncation, unknown
//!   version, garbage, empty file) is logged with its file and fault, removed, and
//!   treated as never scanned. [`TagStore::open`] verifies every entry's checksum by
//!   streaming its bytes through a fixed buffer (reading headers into memory, never
//!   tags), so a restart trusts only entries that are whole; a fault that appears later
//!   is caught when the tags are read ([`TagStore::get`] / [`TagStore::tags`] answer
//!   `Ok(None)` and [`TagStore::meta`] forgets the key).
//! - **Restarts rescan nothing**: the controller compares [`TagStore::meta`] with the
//!   object's status; [`TagStore::retain`] drops objects deleted while the process was
//!   down. What a scan read that its object does not name (a service account's pull
//!   secrets, [`EntryMeta::pull_secrets`]) is kept in the entry too, so a change to it is
//!   noticed after a restart as well.
//!
//! The API is synchronous (small file I/O); call it from async code through
//! `tokio::task::spawn_blocking`. [`TagStore`] is cheap to clone (an `Arc`) and safe to
//! use from many threads: writes to different keys run in parallel; writes to one key
//! are last-writer-wins, and the index always agrees with the file on disk.
//!
//! One process per root directory: two processes writing the same root would not
//! corrupt entries (each write is atomic), but their indexes would drift apart.

pub(crate) mod format;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use format::{Corruption, ReadFailure};

const ENTRY_SUFFIX: &str = ".tags";
const TEMP_SUFFIX: &str = ".tmp";

/// Which object an entry belongs to. Any strings are accepted: the file name is a hash
/// of the key, so no key can name a path outside the root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `<64 hex digits of SHA-256 over both parts, length-prefixed>.tags`.
    fn file_name(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [&self.namespace, &self.name] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        format!("{}{ENTRY_SUFFIX}", hex::encode(hasher.finalize()))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the controller needs to decide whether to rescan, without reading tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// `metadata.uid` of the object scanned: a recreated object with the same name has
    /// another uid and must not inherit the old tags.
    pub uid: String,
    pub canonical_image_name: String,
    /// `status.lastScanResult.revision` written with these tags.
    pub revision: String,
    pub scan_time: jiff::Timestamp,
    /// Must equal `tags.len()` of the entry; checked on write and on read.
    pub tag_count: u64,
    /// The caller's digest of the scan-relevant spec fields (image, exclusionList,
    /// secret references, provider, insecure, ...) and of the versions of the Secrets the
    /// scan read, `pull_secrets` included: a change means rescan.
    pub spec_fingerprint: String,
    /// The image pull secrets the scan read through a service account (Secrets its spec
    /// does not name), so that a change to one of them is noticed from the entry alone,
    /// across restarts. Absent in entries written before it existed (they read as empty)
    /// and not written when empty, so such entries keep their exact format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<SecretVersion>,
}

/// A Secret a scan read, and its `metadata.resourceVersion` then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersion {
    pub name: String,
    pub resource_version: String,
}

/// One object's scan result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub meta: EntryMeta,
    pub tags: Vec<String>,
}

/// Failures the caller has to act on. Corrupt entries are not errors: they are logged,
/// removed and reported as absent.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("tag store: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "tag store: refusing to store {key}: meta.tag_count is {tag_count} but {actual} tags were given"
    )]
    TagCountMismatch {
        key: String,
        tag_count: u64,
        actual: u64,
    },
    #[error("tag store: refusing to store {key}: its {what} is {len} bytes, more than {max}")]
    TooLarge {
        key: String,
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("tag store: cannot encode {key}: {source}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The persistent, per-object tag store. Clones share one index.
#[derive(Clone)]
pub struct TagStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for TagStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TagStore")
            .field("root", &self.inner.root)
            .field("entries", &self.len())
            .field("size_bytes", &self.size_bytes())
            .finish()
    }
}

struct Inner {
    root: PathBuf,
    index: Mutex<Index>,
    temp_seq: AtomicU64,
    metrics: StoreMetrics,
}

#[derive(Default)]
struct Index {
    entries: HashMap<ObjectKey, Indexed>,
    total_bytes: u64,
}

struct Indexed {
    meta: EntryMeta,
    size: u64,
    /// Inode of the file this index entry describes: a reader that finds a corrupt file
    /// removes it only if a writer has not replaced it meanwhile.
    ino: u64,
}

#[derive(Clone, Default)]
struct StoreMetrics {
    size_bytes: Gauge,
    entries: Gauge,
    corrupt: Counter,
}

impl Index {
    fn insert(&mut self, key: ObjectKey, indexed: Indexed) {
        self.total_bytes += indexed.size;
        if let Some(old) = self.entries.insert(key, indexed) {
            self.total_bytes -= old.size;
        }
    }

    fn remove(&mut self, key: &ObjectKey) -> bool {
        match self.entries.remove(key) {
            Some(old) => {
                self.total_bytes -= old.size;
                true
            }
            None => false,
        }
    }
}

impl TagStore {
    /// Opens (creating if needed) the store under `root`: removes temporary files left by
    /// interrupted writes, verifies every entry (corrupt ones are logged and removed) and
    /// loads the index of the rest.
    pub fn open(root: &Path) -> Result<TagStore, StoreError> {
        fs::create_dir_all(root).map_err(io_err("create directory", root))?;
        let mut index = Index::default();
        let metrics = StoreMetrics::default();
        let (mut temps, mut corrupt) = (0usize, 0usize);
        let dir = fs::read_dir(root).map_err(io_err("list directory", root))?;
        for dirent in dir {
            let dirent = dirent.map_err(io_err("list directory", root))?;
            let path = dirent.path();
            let Some(name) = dirent.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(file = %path.display(), "tag store: ignoring a file it did not write");
                continue;
            };
            if is_temp_name(&name) {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        temps += 1;
                        tracing::warn!(file = %path.display(), "tag store: removed a temporary file left by an interrupted write");
                    }
                    Err(e) => {
                        return Err(io_err("remove stray temporary file", &path)(e));
                    }
                }
                continue;
            }
            if !is_entry_name(&name) {
                tracing::warn!(file = %path.display(), "tag store: ignoring a file it did not write");
                continue;
            }
            match load_header(&path, &name) {
                Ok((key, indexed)) => index.insert(key, indexed),
                Err(ReadFailure::Corrupt(problem)) => {
                    corrupt += 1;
                    metrics.corrupt.inc();
                    discard_file(&path, None, &problem);
                }
                Err(ReadFailure::Io(e)) => {
                    // Left in place and not indexed: the object is rescanned and the next
                    // write replaces the file.
                    tracing::warn!(file = %path.display(), error = %e, "tag store: cannot read entry; the object will be scanned again");
                }
            }
        }
        if temps + corrupt > 0 {
            sync_dir(root)?;
        }
        tracing::info!(
            root = %root.display(),
            entries = index.entries.len(),
            bytes = index.total_bytes,
            corrupt_removed = corrupt,
            temporary_removed = temps,
            "tag store opened"
        );
        let store = TagStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                index: Mutex::new(index),
                temp_seq: AtomicU64::new(0),
                metrics,
            }),
        };
        store.refresh_gauges(&store.lock());
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Stores `entry` as the tags of `key`, replacing any previous entry atomically.
    pub fn put(&self, key: &ObjectKey, entry: &Entry) -> Result<(), StoreError> {
        if entry.meta.tag_count != entry.tags.len() as u64 {
            return Err(StoreError::TagCountMismatch {
                key: key.to_string(),
                tag_count: entry.meta.tag_count,
                actual: entry.tags.len() as u64,
            });
        }
        let bytes = format::encode(key, entry)?;
        let file_name = key.file_name();
        let target = self.inner.root.join(&file_name);
        let seq = self.inner.temp_seq.fetch_add(1, Ordering::Relaxed);
        let temp = self.inner.root.join(format!(
            ".{file_name}.{}.{seq}{TEMP_SUFFIX}",
            std::process::id()
        ));
        let ino = match write_synced(&temp, &target, &bytes) {
            Ok(ino) => ino,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        {
            // Rename and index update under one lock: the index names the file on disk.
            let mut index = self.lock();
            if let Err(e) = fs::rename(&temp, &target) {
                drop(index);
                let _ = fs::remove_file(&temp);
                return Err(io_err("rename into place", &target)(e));
            }
            index.insert(
                key.clone(),
                Indexed {
                    meta: entry.meta.clone(),
                    size: bytes.len() as u64,
                    ino,
                },
            );
            self.refresh_gauges(&index);
        }
        sync_dir(&self.inner.root)
    }

    /// The entry of `key`, read from disk and verified; `Ok(None)` if there is none or
    /// it was corrupt (then it is logged and removed, and [`TagStore::meta`] forgets it).
    pub fn get(&self, key: &ObjectKey) -> Result<Option<Entry>, StoreError> {
        // A bad read of a file that a writer has replaced meanwhile says nothing about
        // the new file: read again.
        for _ in 0..3 {
            match self.read_once(key)? {
                ReadOnce::Found(entry) => return Ok(Some(entry)),
                ReadOnce::Absent => return Ok(None),
                ReadOnce::ReplacedWhileReading => continue,
            }
        }
        Ok(None)
    }

    fn read_once(&self, key: &ObjectKey) -> Result<ReadOnce, StoreError> {
        if !self.lock().entries.contains_key(key) {
            return Ok(ReadOnce::Absent);
        }
        let path = self.inner.root.join(key.file_name());
        let mut file = match File::open(&path) {
            Ok(file) => file,
            // Removed between the index check and the open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadOnce::Absent),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let stat = file.metadata().map_err(io_err("stat", &path))?;
        let read = format::read_entry(&mut io::BufReader::new(&mut file), stat.len(), Some(key))
            .map(|(_, entry)| entry);
        match read {
            Ok(entry) => Ok(ReadOnce::Found(entry)),
            Err(ReadFailure::Io(e)) => Err(io_err("read", &path)(e)),
            Err(ReadFailure::Corrupt(problem)) => {
                // `file` stays open until here, so its inode cannot be reused meanwhile.
                let mut index = self.lock();
                let outcome = match index.entries.get(key) {
                    Some(indexed) if indexed.ino == stat.ino() => {
                        self.inner.metrics.corrupt.inc();
                        discard_file(&path, Some(key), &problem);
                        index.remove(key);
                        self.refresh_gauges(&index);
                        ReadOnce::Absent
                    }
                    Some(_) => ReadOnce::ReplacedWhileReading,
                    None => ReadOnce::Absent,
                };
                drop(file);
                Ok(outcome)
            }
        }
    }

    /// The tags of `key`, read from disk; see [`TagStore::get`].
    pub fn tags(&self, key: &ObjectKey) -> Result<Option<Vec<String>>, StoreError> {
        Ok(self.get(key)?.map(|entry| entry.tags))
    }

    /// The metadata of `key`'s entry, from memory.
    pub fn meta(&self, key: &ObjectKey) -> Option<EntryMeta> {
        self.lock().entries.get(key).map(|e| e.meta.clone())
    }

    /// The size on disk of `key`'s entry file, from memory.
    pub fn entry_size(&self, key: &ObjectKey) -> Option<u64> {
        self.lock().entries.get(key).map(|e| e.size)
    }

    /// Removes `key`'s entry; `true` if there was one.
    pub fn remove(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        let path = self.inner.root.join(key.file_name());
        let existed = {
            let mut index = self.lock();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
            let existed = index.remove(key);
            self.refresh_gauges(&index);
            existed
        };
        if existed {
            sync_dir(&self.inner.root)?;
        }
        Ok(existed)
    }

    /// Every key with an entry, in no particular order.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.lock().entries.keys().cloned().collect()
    }

    /// The keys whose entry's metadata satisfies `matches`, from memory, in no particular
    /// order.
    pub fn keys_where(&self, matches: impl Fn(&ObjectKey, &EntryMeta) -> bool) -> Vec<ObjectKey> {
        self.lock()
            .entries
            .iter()
            .filter(|(key, indexed)| matches(key, &indexed.meta))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Removes every entry whose key is not `live` (objects deleted while the process was
    /// down); returns how many were removed.
    pub fn retain(&self, live: impl Fn(&ObjectKey) -> bool) -> Result<usize, StoreError> {
        let mut removed = 0;
        for key in self.keys().into_iter().filter(|key| !live(key)) {
            if self.remove(&key)? {
                tracing::info!(object = %key, "tag store: removed the entry of an object that no longer exists");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Total bytes of the entry files.
    pub fn size_bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Registers `image_reflector_store_size_bytes` (gauge),
    /// `image_reflector_store_entries` (gauge) and
    /// `image_reflector_store_corrupt_entries_total` (counter: entries found corrupt and
    /// removed since start).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            "image_reflector_store_size_bytes",
            "Bytes on disk of the tag store's entries",
            m.size_bytes.clone(),
        );
        registry.register(
            "image_reflector_store_entries",
            "Objects with tags in the tag store",
            m.entries.clone(),
        );
        registry.register(
            "image_reflector_store_corrupt_entries",
            "Tag store entries found corrupt and removed (their objects are scanned again)",
            m.corrupt.clone(),
        );
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every index update is a single step, so a panic elsewhere cannot leave it half
        // done: keep going with what is there.
        self.inner
            .index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refresh_gauges(&self, index: &Index) {
        let m = &self.inner.metrics;
        m.size_bytes
            .set(i64::try_from(index.total_bytes).unwrap_or(i64::MAX));
        m.entries
            .set(i64::try_from(index.entries.len()).unwrap_or(i64::MAX));
    }
}

enum ReadOnce {
    Found(Entry),
    Absent,
    ReplacedWhileReading,
}

fn is_entry_name(name: &str) -> bool {
    name.strip_suffix(ENTRY_SUFFIX).is_some_and(|stem| {
        stem.len() == 64
            && stem
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX) && name.contains(ENTRY_SUFFIX)
}

/// Reads and verifies one entry file at open, keeping only its header.
fn load_header(path: &Path, name: &str) -> Result<(ObjectKey, Indexed), ReadFailure> {
    let mut file = File::open(path)?;
    let stat = file.metadata()?;
    let (header, _, _) =
        format::read_verified(&mut io::BufReader::new(&mut file), stat.len(), false)?;
    if header.key.file_name() != name {
        return Err(Corruption::WrongKey {
            file_is_for: header.key.to_string(),
        }
        .into());
    }
    Ok((
        header.key,
        Indexed {
            meta: header.meta,
            size: stat.len(),
            ino: stat.ino(),
        },
    ))
}

/// Logs a corrupt entry and removes its file.
fn discard_file(path: &Path, key: Option<&ObjectKey>, problem: &Corruption) {
    let object = key.map(ToString::to_string).unwrap_or_default();
    match fs::remove_file(path) {
        Ok(()) => tracing::warn!(
            file = %path.display(), object = %object, problem = %problem,
            "tag store: corrupt entry removed; the object will be scanned again"
        ),
        Err(e) => tracing::warn!(
            file = %path.display(), object = %object, problem = %problem, error = %e,
            "tag store: corrupt entry ignored but could not be removed; the object will be scanned again"
        ),
    }
}

/// Creates `path` (which must not exist), writes `bytes`, fsyncs; returns the inode.
/// Errors name `entry`, the file `path` is to replace: a temporary file's name is new at
/// every attempt, and a message that changed at every failed retry (it reaches the
/// object's status) would make every retry a status write.
fn write_synced(path: &Path, entry: &Path, bytes: &[u8]) -> Result<u64, StoreError> {
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create a temporary file for", entry))?;
    file.write_all(bytes).map_err(io_err("write", entry))?;
    file.sync_all().map_err(io_err("fsync", entry))?;
    let stat = file.metadata().map_err(io_err("stat", entry))?;
    Ok(stat.ino())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}
