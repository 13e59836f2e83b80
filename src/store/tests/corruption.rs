//! A damaged, truncated, forged or misplaced entry file is noticed, logged with its file
//! and what is wrong, and treated as never scanned; the other entries stay intact.

use std::fs;

use super::*;

/// Writes two entries, applies `damage` to the first one's file while the store is shut,
/// reopens, and checks the damaged entry is gone (logged with its file and `problem`) and
/// the other is intact.
fn survives_damage_at_open(damage: impl FnOnce(&mut Vec<u8>), problem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let victim = key("ns", "victim");
    let bystander = key("ns", "bystander");
    let path = {
        let store = TagStore::open(dir.path()).unwrap();
        store
            .put(&victim, &entry("v", numbered_tags("v", 2_000)))
            .unwrap();
        store
            .put(&bystander, &entry("b", numbered_tags("b", 10)))
            .unwrap();
        path_of(&store, &victim)
    };
    let mut bytes = fs::read(&path).unwrap();
    damage(&mut bytes);
    fs::write(&path, &bytes).unwrap();

    let (store, logs) = with_logs(|| TagStore::open(dir.path()).unwrap());
    assert_eq!(
        store.meta(&victim),
        None,
        "a corrupt entry counts as never scanned"
    );
    assert_eq!(store.tags(&victim).unwrap(), None);
    assert!(!path.exists(), "the corrupt file is removed");
    assert_eq!(
        store.tags(&bystander).unwrap(),
        Some(numbered_tags("b", 10))
    );
    assert!(logs.contains(&path.display().to_string()), "{logs}");
    assert!(logs.contains(problem), "expected {problem:?} in {logs}");
    assert!(
        metrics_text(&store).contains("image_reflector_store_corrupt_entries_total 1"),
        "{}",
        metrics_text(&store)
    );
    assert_eq!(
        store.size_bytes(),
        fs::metadata(path_of(&store, &bystander)).unwrap().len()
    );
}

/// Like [`survives_damage_at_open`], but the damage happens while the store is open: the
/// next read notices it.
fn survives_damage_while_running(damage: impl FnOnce(&mut Vec<u8>), problem: &str) {
    let (_dir, store) = fresh();
    let victim = key("ns", "victim");
    store
        .put(&victim, &entry("v", numbered_tags("v", 2_000)))
        .unwrap();
    let path = path_of(&store, &victim);
    let mut bytes = fs::read(&path).unwrap();
    damage(&mut bytes);
    fs::write(&path, &bytes).unwrap();

    let (tags, logs) = with_logs(|| store.tags(&victim));
    assert_eq!(tags.unwrap(), None);
    assert_eq!(
        store.meta(&victim),
        None,
        "the index forgets a corrupt entry"
    );
    assert!(!path.exists());
    assert!(store.is_empty());
    assert_eq!(store.size_bytes(), 0);
    assert!(logs.contains(&path.display().to_string()), "{logs}");
    assert!(logs.contains(problem), "expected {problem:?} in {logs}");
}

fn flip_payload_byte(b: &mut [u8]) {
    let last = b.len() - 10;
    b[last] ^= 0x40;
}

fn flip_header_byte(b: &mut [u8]) {
    b[format::PREFIX_LEN + 5] ^= 0x01;
}

fn truncate(b: &mut Vec<u8>) {
    b.truncate(b.len() - 100);
}

fn garbage(b: &mut Vec<u8>) {
    *b = b"{\"this is\": \"not a tag store entry, but long enough to have a prefix\"}".to_vec();
}

fn set_version_and_reseal(b: &mut [u8]) {
    b[4..6].copy_from_slice(&2u16.to_le_bytes());
    format::reseal(b);
}

/// 2,000 numbered tags, deflated; their file then claims 1 GiB of raw tags, resealed so
/// that only the length lies. Reading it used to reserve the whole claimed gigabyte
/// before inflating a few kilobytes: the fuzz target `tag_store` reports that as an
/// out-of-memory crash on `fuzz/regressions/tag_store/forged-raw-length`.
#[test]
fn a_forged_raw_length_is_refused_without_reserving_it() {
    survives_damage_while_running(
        |b| {
            assert!(format::is_deflated(b));
            b[20..28].copy_from_slice(&(1u64 << 30).to_le_bytes());
            format::reseal(b);
        },
        "the header promises 1073741824",
    );
    assert_eq!(format::inflate_reservation(1 << 30, 4_000), 32_000);
    assert_eq!(format::inflate_reservation(10_000, 4_000), 10_000);
}

#[test]
fn detects_a_flipped_payload_byte_at_open() {
    survives_damage_at_open(|b| flip_payload_byte(b), "checksum mismatch");
}

#[test]
fn detects_a_flipped_payload_byte_while_running() {
    survives_damage_while_running(|b| flip_payload_byte(b), "checksum mismatch");
}

#[test]
fn detects_a_flipped_header_byte() {
    survives_damage_at_open(|b| flip_header_byte(b), "checksum mismatch");
    survives_damage_while_running(|b| flip_header_byte(b), "checksum mismatch");
}

#[test]
fn detects_a_flipped_checksum_byte() {
    survives_damage_at_open(|b| b[40] ^= 0x80, "checksum mismatch");
}

#[test]
fn detects_a_truncated_entry() {
    survives_damage_at_open(truncate, "truncated");
    survives_damage_while_running(truncate, "truncated");
}

#[test]
fn detects_an_entry_cut_inside_its_fixed_header() {
    survives_damage_at_open(|b| b.truncate(20), "shorter than the 60-byte fixed header");
}

#[test]
fn detects_trailing_bytes() {
    survives_damage_at_open(|b| b.extend_from_slice(b"xx"), "trailing bytes");
}

#[test]
fn detects_garbage() {
    survives_damage_at_open(garbage, "not a tag store entry");
    survives_damage_while_running(garbage, "not a tag store entry");
}

#[test]
fn detects_an_empty_file() {
    survives_damage_at_open(Vec::clear, "the file is empty");
    survives_damage_while_running(Vec::clear, "the file is empty");
}

#[test]
fn detects_an_unknown_format_version() {
    survives_damage_at_open(|b| set_version_and_reseal(b), "unknown format version 2");
}

#[test]
fn detects_unknown_flags() {
    survives_damage_at_open(
        |b| {
            b[6] |= 0x04;
            format::reseal(b);
        },
        "unknown flags",
    );
}

#[test]
fn detects_implausible_lengths() {
    survives_damage_at_open(
        |b| {
            b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
            format::reseal(b);
        },
        "implausible lengths",
    );
}

#[test]
fn detects_a_compressed_payload_that_does_not_inflate() {
    // The checksum is valid, so only reading the tags can tell.
    survives_damage_while_running(
        |b| {
            let start = b.len() - 200;
            b[start..].fill(0xff);
            format::reseal(b);
        },
        "unreadable tags",
    );
}

#[test]
fn detects_a_payload_whose_tag_count_disagrees_with_its_header() {
    survives_damage_while_running(
        |b| {
            let mut forged = entry("v", numbered_tags("v", 3));
            forged.meta.tag_count = 4;
            *b = format::encode(&key("ns", "victim"), &forged).unwrap();
        },
        "the header counts 4 tags, the payload holds 3",
    );
}

#[test]
fn detects_a_file_copied_under_another_objects_name() {
    let other = key("ns", "other");
    let forged = format::encode(&other, &entry("o", vec!["evil".into()])).unwrap();
    survives_damage_at_open(|b| *b = forged.clone(), "its header says ns/other");
    survives_damage_while_running(|b| *b = forged.clone(), "its header says ns/other");
}
