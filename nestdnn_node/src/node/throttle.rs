//! Throttled logging of bad input: the first occurrence of each kind is logged at once, later
//! ones at most once per interval with the number suppressed meanwhile (counters keep every
//! occurrence; logs must not flood under a burst of bad frames). Keys name the task *and* the
//! kind of problem ([`Throttle::warn_for`]), so a frequent kind cannot hide another one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Where logged warnings also go (e.g. a replay report), besides the log.
pub type WarningSink = Box<dyn Fn(&str) + Send + Sync>;

/// Per-key log throttle.
pub struct Throttle {
    interval: Duration,
    state: Mutex<HashMap<String, (Instant, u64)>>,
    sink: Option<WarningSink>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("interval", &self.interval)
            .field("keys", &self.state.lock().len())
            .finish()
    }
}

impl Throttle {
    /// A throttle allowing one message per key per `interval`.
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            state: Mutex::new(HashMap::new()),
            sink: None,
        }
    }

    /// Like [`Throttle::new`]; every warning logged is also handed to `sink`.
    pub fn with_sink(interval: Duration, sink: WarningSink) -> Throttle {
        Throttle {
            sink: Some(sink),
            ..Throttle::new(interval)
        }
    }

    /// Whether a message of `key` may be logged now; if so, also returns how many were
    /// suppressed since the last one.
    pub fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut st = self.state.lock();
        match st.get_mut(key) {
            None => {
                // Keys are bounded by the code paths that call this (kind + task), not input.
                st.insert(key.to_string(), (now, 0));
                Some(0)
            }
            Some((last, suppressed)) => {
                if now.duration_since(*last) >= self.interval {
                    let n = *suppressed;
                    *last = now;
                    *suppressed = 0;
                    Some(n)
                } else {
                    *suppressed += 1;
                    None
                }
            }
        }
    }

    /// The key of problem `kind` (e.g. [`crate::preprocess::PreprocessError::kind`]) of
    /// task `task`: each (task, kind) pair is throttled on its own.
    pub fn key_for(task: &str, kind: &str) -> String {
        format!("{kind} [{task}]")
    }

    /// Logs `msg` at warn level if allowed for problem `kind` of task `task` (see
    /// [`Throttle::key_for`]).
    pub fn warn_for(&self, task: &str, kind: &str, msg: impl FnOnce() -> String) {
        self.warn(&Self::key_for(task, kind), msg);
    }

    /// Logs `msg` at warn level under `key` if allowed.
    pub fn warn(&self, key: &str, msg: impl FnOnce() -> String) {
        if let Some(n) = self.allow(key) {
            let text = if n > 0 {
                format!("{} ({n} more like this suppressed)", msg())
            } else {
                msg()
            };
            log::warn!("{text}");
            if let Some(sink) = &self.sink {
                sink(&text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_per_key() {
        let t = Throttle::new(Duration::from_millis(50));
        assert_eq!(t.allow("a"), Some(0));
        assert_eq!(t.allow("a"), None);
        assert_eq!(t.allow("a"), None);
        assert_eq!(t.allow("b"), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.allow("a"), Some(2));
    }

    #[test]
    fn kinds_of_one_task_do_not_hide_each_other() {
        let t = Throttle::new(Duration::from_secs(60));
        let short = Throttle::key_for("cam", "data_too_short");
        let enc = Throttle::key_for("cam", "unknown_encoding");
        assert_eq!(t.allow(&short), Some(0));
        assert_eq!(t.allow(&short), None, "same task and kind: throttled");
        assert_eq!(
            t.allow(&enc),
            Some(0),
            "another kind of the same task: logged"
        );
        assert_eq!(
            t.allow(&Throttle::key_for("cam2", "data_too_short")),
            Some(0)
        );
        assert_ne!(short, enc);
    }
}
