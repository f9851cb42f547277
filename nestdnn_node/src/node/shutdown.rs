//! SIGINT/SIGTERM handling for the node binaries.
//!
//! [`Shutdown::install`] blocks both signals in the calling thread (call it first in `main`,
//! before any thread exists, so every thread inherits the mask) and waits for them on a
//! dedicated thread with `sigwait`. The first signal sets the flag and wakes waiters, so the
//! node can finish or count pending frames and close its participant; a second signal (more
//! than a second later) exits at once with status 130.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// A shutdown request shared by the threads of a node.
#[derive(Clone, Debug)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A shutdown flag not tied to signals (tests, replay).
    pub fn new() -> Shutdown {
        let (tx, rx) = crossbeam_channel::bounded(1);
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            tx,
            rx,
        }
    }

    /// Blocks SIGINT and SIGTERM in this thread and starts the thread that waits for them.
    ///
    /// # Errors
    /// The OS error when the signal mask cannot be set or the thread cannot start.
    pub fn install() -> std::io::Result<Shutdown> {
        let s = Shutdown::new();
        // SAFETY: plain libc calls on a zeroed, locally owned sigset_t.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            set
        };
        let s2 = s.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut first: Option<std::time::Instant> = None;
                loop {
                    let mut sig: libc::c_int = 0;
                    // SAFETY: `set` is a valid initialised signal set; `sig` a valid out pointer.
                    let rc = unsafe { libc::sigwait(&set, &mut sig) };
                    if rc != 0 {
                        continue;
                    }
                    match first {
                        // The same signal often arrives twice at once (to the process and
                        // to its group, e.g. from `timeout` or a terminal): only a repeat
                        // after a second means "now".
                        Some(t) if t.elapsed() >= Duration::from_secs(1) => {
                            log::warn!("second signal {sig}: exiting now");
                            std::process::exit(130);
                        }
                        Some(_) => {}
                        None => {
                            log::info!("signal {sig}: shutting down");
                            first = Some(std::time::Instant::now());
                            s2.request();
                        }
                    }
                }
            })?;
        Ok(s)
    }

    /// Requests shutdown (idempotent).
    pub fn request(&self) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            let _ = self.tx.try_send(());
        }
    }

    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d`; returns `true` early when shutdown is requested.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        if self.is_requested() {
            return true;
        }
        match self.rx.recv_timeout(d) {
            Ok(()) => {
                // Leave the token for other waiters.
                let _ = self.tx.try_send(());
                true
            }
            Err(_) => self.is_requested(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wakes_waiters() {
        let s = Shutdown::new();
        assert!(!s.wait_timeout(Duration::from_millis(1)));
        let s2 = s.clone();
        let h = std::thread::spawn(move || s2.wait_timeout(Duration::from_secs(10)));
        s.request();
        assert!(h.join().unwrap());
        assert!(s.wait_timeout(Duration::from_secs(10)));
    }
}
