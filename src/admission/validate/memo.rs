//! Verdicts on regular expressions seen before, shared by every thread.
//!
//! Compiling a regex takes about 0.1 ms, several times the rest of a review, while the
//! same few exclusion lists and tag filters arrive again and again. A verdict is a pure
//! function of the text, so it is computed once and kept; the map is emptied when it
//! holds [`LIMIT`] entries, so texts an author varies cannot grow it without bound.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Entries kept before the map is emptied.
const LIMIT: usize = 1024;

/// Verdicts keyed by the text they judge.
pub struct Memo<T>(LazyLock<Mutex<HashMap<String, T>>>);

impl<T: Clone> Memo<T> {
    /// An empty memo (for a `static`).
    pub const fn new() -> Self {
        Memo(LazyLock::new(Default::default))
    }

    /// The verdict on `key`, computed by `judge` (outside the lock) when not kept yet.
    pub fn get(&self, key: &str, judge: impl FnOnce() -> T) -> T {
        let map = || {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        if let Some(verdict) = map().get(key) {
            return verdict.clone();
        }
        let verdict = judge();
        let mut map = map();
        if map.len() >= LIMIT {
            map.clear();
        }
        map.insert(key.to_string(), verdict.clone());
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn judges_a_text_once_and_forgets_everything_when_full() {
        let memo = Memo::new();
        let judged = Cell::new(0);
        let judge = |text: &str| {
            judged.set(judged.get() + 1);
            text.len()
        };
        assert_eq!(memo.get("abc", || judge("abc")), 3);
        assert_eq!(memo.get("abc", || judge("abc")), 3);
        assert_eq!(judged.get(), 1);
        for i in 0..LIMIT {
            memo.get(&i.to_string(), || 0);
        }
        assert_eq!(memo.get("abc", || judge("abc")), 3);
        assert_eq!(judged.get(), 2);
    }
}
