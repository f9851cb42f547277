//! The node core's control thread: dwell reviews, idle tasks and stale budgets (re-plans),
//! calibration of the planner's latencies from what frames really cost, and `/diagnostics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::app::{Inner, CALIBRATION_THRESHOLD};
use crate::msgs::{DiagnosticArray, DiagnosticStatus, KeyValue};
use crate::profile::Calibration;
use crate::runtime::TaskCounters as RtCounters;
use crate::scheduler::TaskStatus;

impl Inner {
    pub(super) fn control(&self) {
        let period = self.opts.diagnostics_period;
        let mut last = Instant::now();
        let mut prev: Vec<RtCounters> = Vec::new();
        let mut calibrated_at = Instant::now();
        loop {
            let (review, stale_at) = {
                let p = self.planner.lock();
                (p.next_review(), p.budget_deadline())
            };
            // The next calibration is a deadline too (else it would wait for the next
            // diagnostics tick, and a 1.3 s period would calibrate every 2 s).
            let calibrate_at = self.calibration_period.map(|every| calibrated_at + every);
            let wake = [review, stale_at, calibrate_at].into_iter().flatten().min();
            let wait = wake
                .map(|r| r.saturating_duration_since(Instant::now()))
                .unwrap_or(period)
                .min(period.saturating_sub(last.elapsed()))
                .max(Duration::from_millis(10));
            if self.stop.wait_timeout(wait) {
                return;
            }
            let now = Instant::now();
            let review = self.planner.lock().review(now);
            if let Some(p) = review {
                self.apply(&p, 0.0);
            }
            let stale = self.planner.lock().check_budget(now);
            if let Some(p) = stale {
                let age = self.planner.lock().budget_age(now).as_secs_f64();
                self.throttle.warn("budget stale", || {
                    format!(
                        "no ResourceBudget for {age:.1} s (is the resource monitor running?): planning for the safe budget of {:.2} cores (scheduler.stale_budget_cores) until one arrives",
                        p.budget.cpu_cores
                    )
                });
                self.apply(&p, 0.0);
            }
            let timeout = self.planner.lock().settings().idle_timeout;
            let idle = self
                .with_runtime(|rt| rt.poll_idle(now, timeout))
                .unwrap_or_default();
            for i in idle {
                let Some(t) = self.tasks.get(i) else { continue };
                let r = self.planner.lock().task_stopped(&t.cfg.name, now);
                match r {
                    Ok(Some(p)) => self.apply(&p, 0.0),
                    Ok(None) => {}
                    Err(e) => log::error!("task {}: {e}", t.cfg.name),
                }
            }
            if let Some(every) = self.calibration_period {
                if calibrated_at.elapsed() >= every {
                    calibrated_at = Instant::now();
                    self.calibrate(calibrated_at);
                }
            }
            if last.elapsed() >= period {
                let dt = last.elapsed().as_secs_f64();
                last = Instant::now();
                let counters = self
                    .with_runtime(|rt| rt.all_counters())
                    .unwrap_or_default();
                self.outputs
                    .diagnostics(self.diagnostics(dt, &counters, &prev));
                prev = counters;
            }
        }
    }

    /// Replaces each task's ladder by the start-up profile calibrated with what frames cost
    /// in operation, where a latency moved by more than [`CALIBRATION_THRESHOLD`]; re-plans.
    fn calibrate(&self, now: Instant) {
        for (i, t) in self.tasks.iter().enumerate() {
            let Some(measured) = self.with_runtime(|rt| rt.cpu_per_frame(i)) else {
                return;
            };
            let Some(base) = self.profiled.get(i) else {
                continue;
            };
            // This run's measurements, and the stored ones for descendants not served yet.
            let observed: Vec<Option<f64>> = {
                let stored = self.observed.lock();
                let prev = stored.get(i).map_or(&[][..], Vec::as_slice);
                (0..base.len())
                    .map(|d| {
                        measured
                            .get(d)
                            .copied()
                            .flatten()
                            .or_else(|| prev.get(d).copied().flatten())
                    })
                    .collect()
            };
            let fresh = base.calibrated(&observed);
            let r = {
                let mut planner = self.planner.lock();
                let Some(current) = planner.task(&t.cfg.name).map(|s| s.ladder.clone()) else {
                    continue;
                };
                let moved = fresh
                    .rungs()
                    .iter()
                    .zip(current.rungs())
                    .map(|(a, b)| (a.latency_s / b.latency_s - 1.0).abs())
                    .fold(0.0, f64::max);
                if moved.is_nan() || moved <= CALIBRATION_THRESHOLD {
                    continue;
                }
                log::info!(
                    "task {}: calibrated latencies from operation (moved up to {:.0}%): {}",
                    t.cfg.name,
                    moved * 100.0,
                    fresh
                        .rungs()
                        .iter()
                        .map(|r| format!("{}={:.2}ms", r.name, r.latency_s * 1e3))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                planner.update_profile(&t.cfg.name, fresh, now)
            };
            self.persist_calibration(i, observed);
            match r {
                Ok(Some(p)) => self.apply(&p, 0.0),
                Ok(None) => {}
                Err(e) => log::error!("task {}: {e}", t.cfg.name),
            }
        }
    }

    /// Keeps task `task`'s calibration (CPU seconds per frame per descendant) for the next
    /// start, in the profile cache (atomic write); failures are logged, not fatal.
    fn persist_calibration(&self, task: usize, observed: Vec<Option<f64>>) {
        let (Some(cache), Some(model)) = (&self.cache, self.models.get(task)) else {
            return;
        };
        let name = self.tasks.get(task).map_or("", |t| t.cfg.name.as_str());
        let cal = Calibration::new(model, &observed);
        if let Some(slot) = self.observed.lock().get_mut(task) {
            *slot = observed;
        }
        match cache.store_calibration(model, &cal) {
            Ok(path) => log::debug!("task {name}: calibration kept in {}", path.display()),
            Err(e) => self.throttle.warn_for(name, "calibration_store", || {
                format!("task {name}: cannot keep the calibration: {e}")
            }),
        }
    }

    fn diagnostics(&self, dt: f64, now: &[RtCounters], prev: &[RtCounters]) -> DiagnosticArray {
        let kv = |k: &str, v: String| KeyValue {
            key: k.to_string(),
            value: v,
        };
        let count = |k: &str, c: &AtomicU64| kv(k, c.load(Ordering::Relaxed).to_string());
        let node = self.opts.node_name.trim_start_matches('/');
        let mut status = Vec::with_capacity(self.tasks.len() + 1);
        for (i, t) in self.tasks.iter().enumerate() {
            let w = std::mem::take(&mut *t.window.lock());
            let pe = t.plan.lock();
            let rc = now.get(i).cloned();
            let errors_now = rc.as_ref().map_or(0, |c| c.errors);
            let errors_before = prev.get(i).map_or(errors_now, |c| c.errors);
            let rate = w.processed as f64 / dt.max(1e-3);
            let (level, message) = match pe.status {
                TaskStatus::Disabled => (DiagnosticStatus::OK, "disabled".to_string()),
                TaskStatus::Idle => (DiagnosticStatus::STALE, "no frames".to_string()),
                TaskStatus::Paused => (
                    DiagnosticStatus::WARN,
                    "paused: the budget does not cover it".to_string(),
                ),
                TaskStatus::Running if errors_now > errors_before => (
                    DiagnosticStatus::ERROR,
                    format!("{} inference errors", errors_now - errors_before),
                ),
                TaskStatus::Running if rate < 0.5 * pe.expected_fps => (
                    DiagnosticStatus::WARN,
                    format!("{rate:.1} fps, plan expects {:.1}", pe.expected_fps),
                ),
                TaskStatus::Running => (
                    DiagnosticStatus::OK,
                    format!("{rate:.1} fps on {}", pe.descendant),
                ),
            };
            let c = &t.counters;
            let bad = c.bad_frames.load(Ordering::Relaxed);
            let ignored = c.ignored.load(Ordering::Relaxed);
            let rc = rc.unwrap_or_else(|| RtCounters {
                task: t.cfg.name.clone(),
                ..RtCounters::default()
            });
            status.push(DiagnosticStatus {
                level,
                name: format!("{node}: {}", t.cfg.name),
                message,
                hardware_id: String::new(),
                values: vec![
                    kv("status", format!("{:?}", pe.status).to_lowercase()),
                    kv("descendant", pe.descendant.clone()),
                    kv("share_cores", format!("{:.3}", pe.share)),
                    kv("expected_fps", format!("{:.2}", pe.expected_fps)),
                    kv("rate_fps", format!("{rate:.2}")),
                    kv("latency_ms_mean", format!("{:.2}", rc.latency.mean_ms)),
                    kv("latency_ms_p90", format!("{:.2}", rc.latency.p90_ms)),
                    kv("latency_ms_max", format!("{:.2}", rc.latency.max_ms)),
                    kv("inference_cpu_s", format!("{:.3}", rc.cpu_time_s)),
                    kv(
                        "frames_received",
                        (rc.received + rc.ignored + bad + ignored).to_string(),
                    ),
                    kv("frames_processed", rc.processed.to_string()),
                    kv(
                        "frames_dropped_overrun",
                        (rc.dropped + c.dropped_before_decode.load(Ordering::Relaxed)).to_string(),
                    ),
                    kv(
                        "frames_dropped_inactive",
                        (rc.ignored + ignored).to_string(),
                    ),
                    kv("frames_bad", bad.to_string()),
                    count("frames_lost_transport", &c.lost_in_transport),
                    count("frames_roi_clipped", &c.roi_clipped),
                    kv("inference_errors", rc.errors.to_string()),
                    kv("descendant_switches", rc.switches.to_string()),
                ],
            });
        }
        let c = &self.counters;
        let (stale, age, timeout) = {
            let p = self.planner.lock();
            (
                p.budget_stale(),
                p.budget_age(Instant::now()).as_secs_f64(),
                p.settings().budget_timeout,
            )
        };
        let received = self.budget_received.load(Ordering::Relaxed);
        let (level, message) = if stale {
            (
                DiagnosticStatus::WARN,
                format!(
                    "budget stale: last budget {age:.1} s ago (timeout {:.1} s); planning for scheduler.stale_budget_cores",
                    timeout.map_or(0.0, |t| t.as_secs_f64())
                ),
            )
        } else if received {
            (
                DiagnosticStatus::OK,
                format!("budget received {age:.1} s ago"),
            )
        } else {
            (DiagnosticStatus::OK, "default budget in use".to_string())
        };
        status.push(DiagnosticStatus {
            level,
            name: format!("{node}: inputs"),
            message,
            hardware_id: String::new(),
            values: vec![
                kv("budget_stale", stale.to_string()),
                kv(
                    "budget_age_s",
                    if received || stale {
                        format!("{age:.2}")
                    } else {
                        "-".to_string()
                    },
                ),
                count("budgets_accepted", &c.budgets_accepted),
                count("budgets_rejected", &c.budgets_rejected),
                count("budgets_zero", &c.budgets_zero),
                count("priorities_accepted", &c.priorities_accepted),
                count("priorities_rejected", &c.priorities_rejected),
                count("samples_undecodable", &c.undecodable),
            ],
        });
        DiagnosticArray {
            header: self.clock.header(""),
            status,
        }
    }
}
