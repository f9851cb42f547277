//! The cost model (`docs/scheduler.md`).
//!
//! For task i running descendant d with a compute share of u cores:
//!
//! ```text
//! C_i(d, u) = w_i * [ (A_max,i - A_i(d)) + alpha * max(0, L_i(d)/u - tau_i) / tau_i ]
//! ```
//!
//! `w_i` is the priority, `A` top-1 accuracy (fraction), `A_max,i` the best accuracy in the
//! task's ladder, `L_i(d)` the profiled median latency of one frame on one core, `tau_i =
//! 1/target_fps`. A task processes one frame at a time, so `u <= 1` core, and with share `u` it
//! delivers `min(target_fps, u / L)` frames per second. The latency term therefore equals
//! `target_fps / delivered_fps - 1` when the task cannot reach its target and 0 when it can:
//! with `alpha = 0.1`, running at half the target frame rate costs as much as 10 points of
//! accuracy.

/// Frames per second a task with share `share` (cores) delivers on a descendant with median
/// latency `latency_s`: `min(target_fps, share / latency_s)`, 0 for a zero share.
pub fn expected_fps(target_fps: f64, latency_s: f64, share: f64) -> f64 {
    if share <= 0.0 || latency_s <= 0.0 {
        return 0.0;
    }
    (share / latency_s).min(target_fps)
}

/// The unweighted latency term `max(0, L/u - tau) / tau`; infinite for a zero share.
pub fn latency_penalty(target_fps: f64, latency_s: f64, share: f64) -> f64 {
    if share <= 0.0 {
        return f64::INFINITY;
    }
    let tau = 1.0 / target_fps;
    ((latency_s / share - tau) / tau).max(0.0)
}

/// `C_i(d, u)` as documented at the module level.
pub fn task_cost(
    priority: f64,
    alpha: f64,
    target_fps: f64,
    best_accuracy: f64,
    accuracy: f64,
    latency_s: f64,
    share: f64,
) -> f64 {
    priority * ((best_accuracy - accuracy) + alpha * latency_penalty(target_fps, latency_s, share))
}

/// Share units (of `step` cores) a descendant needs to reach `target_fps`: the smallest `n`
/// with `n * step >= latency_s * target_fps`, at least 1.
pub(crate) fn units_for_full_rate(latency_s: f64, target_fps: f64, step: f64) -> usize {
    let x = latency_s * target_fps / step;
    let n = (x - 1e-9).ceil();
    if n.is_finite() && n >= 1.0 {
        n.min(u32::MAX as f64) as usize
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_is_target_over_delivered_minus_one() {
        // L = 50 ms, target 10 fps, share 0.25 -> 5 fps delivered -> 10/5 - 1 = 1.
        let p = latency_penalty(10.0, 0.05, 0.25);
        assert!((p - 1.0).abs() < 1e-12, "{p}");
        assert!((expected_fps(10.0, 0.05, 0.25) - 5.0).abs() < 1e-12);
        // Enough share: no penalty, fps capped at target.
        assert_eq!(latency_penalty(10.0, 0.05, 0.5), 0.0);
        assert_eq!(expected_fps(10.0, 0.05, 1.0), 10.0);
        assert_eq!(expected_fps(10.0, 0.05, 0.0), 0.0);
        assert!(latency_penalty(10.0, 0.05, 0.0).is_infinite());
    }

    #[test]
    fn cost_weights_both_terms() {
        let c = task_cost(2.0, 0.1, 10.0, 0.9, 0.8, 0.05, 0.25);
        assert!((c - 2.0 * (0.1 + 0.1 * 1.0)).abs() < 1e-12, "{c}");
    }

    #[test]
    fn full_rate_units() {
        // 50 ms at 10 fps = 0.5 cores = 50 units of 0.01.
        assert_eq!(units_for_full_rate(0.05, 10.0, 0.01), 50);
        assert_eq!(units_for_full_rate(0.0501, 10.0, 0.01), 51);
        assert_eq!(units_for_full_rate(1e-6, 10.0, 0.01), 1);
    }
}
