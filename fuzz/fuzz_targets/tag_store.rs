//! The tag store's entry files, as found on disk after a crash, a bad disk or a hand
//! edit. Input: a selector byte, then the file. With the selector's low bit set the
//! checksum is recomputed first, so forged lengths, headers and payloads get past it. A
//! file is refused with a reason or read; opening the store (header only) accepts every
//! file that reading accepts; what is read is written back to a file that reads the same.
#![no_main]

use image_reflector::fuzzing::{tag_store_encode, tag_store_file, tag_store_reseal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&select, file)) = input.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if select & 1 == 1 {
        tag_store_reseal(&mut file);
    }
    let (opened, read) = tag_store_file(&file);
    match read {
        Ok((key, entry)) => {
            assert!(opened.is_ok(), "read but not opened: {opened:?}");
            assert_eq!(entry.tags.len() as u64, entry.meta.tag_count);
            let again = tag_store_encode(&key, &entry).expect("what was read can be written");
            let (opened_again, read_again) = tag_store_file(&again);
            assert!(opened_again.is_ok());
            assert_eq!(read_again.expect("written file reads"), (key, entry));
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});
