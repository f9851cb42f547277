//! The background CPU load of the workload: a separate process that burns a given number of
//! cores until it is killed (or its parent goes away).

use std::time::{Duration, Instant};

use nestdnn::runtime::spin_cpu;

/// Process name of the load (what `/proc/<pid>/comm` shows; not a consumer of the monitor).
pub const LOAD_COMM: &str = "nestdnn-bgload";

/// Burns `cores` cores (whole threads spinning, the fraction duty-cycled in 10 ms periods)
/// at normal priority under the name [`LOAD_COMM`], until the parent process changes (the
/// benchmark ended) or `max` has passed. Call it in a process of its own.
pub fn burn(cores: f64, max: Duration) {
    let name = std::ffi::CString::new(LOAD_COMM).unwrap_or_default();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes; getppid has no
    // preconditions.
    let parent = unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
        libc::getppid()
    };
    let cores = if cores.is_finite() {
        cores.clamp(0.0, 64.0)
    } else {
        0.0
    };
    let threads = cores.ceil() as usize;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let duty = (cores - i as f64).clamp(0.0, 1.0);
            std::thread::spawn(move || {
                let period = Duration::from_millis(10);
                // SAFETY: getppid has no preconditions.
                while start.elapsed() < max && unsafe { libc::getppid() } == parent {
                    spin_cpu(period.mul_f64(duty));
                    if duty < 1.0 {
                        std::thread::sleep(period.mul_f64(1.0 - duty));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
