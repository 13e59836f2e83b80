//! A small real filesystem under `--storage-path` for the chaos run's full-disk step: a
//! tmpfs of a few MiB mounted over the store directory (the stored entries copied onto
//! it), filled to the last byte by a filler file and freed again. Mounting needs root
//! (CAP_SYS_ADMIN), as the project's machines and CI run; without it the step fails
//! saying so. Unmounted when dropped.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use test_support::cluster::Cluster;

/// The tmpfs's size: ample for a few hundred entries, small enough to fill at once.
const SIZE: &str = "16m";

pub struct SmallDisk {
    path: PathBuf,
    filler: PathBuf,
}

impl SmallDisk {
    /// Stops image-reflector, mounts a tmpfs over its store directory with the stored
    /// entries copied onto it, and starts image-reflector again.
    pub async fn mount_over(c: &mut Cluster) -> SmallDisk {
        c.kill_reflector().await;
        let path = c.storage_path();
        let side = copy_dir(&path, &c.dir().join("store-before-tmpfs"));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "the full-disk step mounts a {SIZE} tmpfs over --storage-path {}, which needs root (CAP_SYS_ADMIN); run the tests as root, as CI does. mount said: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let disk = SmallDisk {
            filler: path.join("filler"),
            path,
        };
        for entry in std::fs::read_dir(&side).expect("read the copied store") {
            let entry = entry.expect("a copied entry");
            std::fs::copy(entry.path(), disk.path.join(entry.file_name()))
                .expect("copy an entry onto the tmpfs");
        }
        c.start_reflector().await;
        disk
    }

    /// Writes the filler until the filesystem has no byte left.
    pub fn fill(&self) {
        let mut file = std::fs::File::create(&self.filler).expect("create the filler");
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            loop {
                match file.write_all(&buf) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                    Err(e) => panic!("filling {}: {e}", self.filler.display()),
                }
            }
        }
        let _ = file.sync_all();
    }

    /// Removes the filler: space returns.
    pub fn free(&self) {
        std::fs::remove_file(&self.filler).expect("remove the filler");
    }

    /// The store's entries (file name -> bytes).
    pub fn entries(&self) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(&self.path)
            .expect("read the store")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tags"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read an entry"),
                )
            })
            .collect()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: image-reflector may still have the directory open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Copies the files of `from` into a new directory `to` (so that opening the copy, which
/// removes what does not verify, leaves the original as it was); returns `to`.
pub fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the store") {
        let Ok(entry) = entry else { continue };
        // A temporary file may vanish between listing and copying (while image-reflector
        // writes); what is left is copied.
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::copy(entry.path(), to.join(entry.file_name()));
        }
    }
    to.to_path_buf()
}

/// How many entry files (`*.tags`) `dir` holds.
pub fn entry_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tags"))
                .count()
        })
        .unwrap_or(0)
}
