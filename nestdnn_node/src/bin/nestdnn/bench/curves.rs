//! Accuracy-vs-frame-rate curves and the paper's comparisons (pure functions).
//!
//! A system's curve is the upper-right Pareto front of its operating points (one per knob
//! value): sorted by frame rate, accuracy falls as frame rate rises. Between points the curve
//! is linear; it is not extrapolated beyond its ends. See [`super::workload`] for the
//! definitions of the gains.

use serde::Serialize;

/// One operating point of a system (one knob value, pooled over runs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// The knob (status quo: descendant level; NestDNN: alpha).
    pub knob: f64,
    /// Processed frames per second, all apps.
    pub fps: f64,
    /// Top-1 over processed frames, fraction.
    pub accuracy: f64,
    /// CPU-seconds per processed frame.
    pub cpu_per_frame_s: f64,
}

/// The Pareto front of `points` (no other point has both a higher or equal frame rate and a
/// higher or equal accuracy, one of them strictly), sorted by frame rate, ascending; points
/// with a non-finite frame rate or accuracy are left out.
pub fn pareto(points: &[Point]) -> Vec<Point> {
    let mut p: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.fps.is_finite() && p.accuracy.is_finite())
        .collect();
    // Highest frame rate first; among equal rates the most accurate first.
    p.sort_by(|a, b| {
        b.fps
            .total_cmp(&a.fps)
            .then(b.accuracy.total_cmp(&a.accuracy))
    });
    let mut front: Vec<Point> = Vec::new();
    for q in p {
        if front.last().is_none_or(|l| q.accuracy > l.accuracy) {
            front.push(q);
        }
    }
    front.reverse();
    front
}

fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t
}

/// On a front ([`pareto`]): the highest frame rate at which the curve's accuracy is at least
/// `accuracy`, with the CPU per frame there (interpolated like the frame rate). `None` if the
/// curve never reaches `accuracy`.
pub fn fps_at_accuracy(front: &[Point], accuracy: f64) -> Option<(f64, f64)> {
    let first = front.first()?;
    if accuracy > first.accuracy {
        return None;
    }
    // Accuracy falls along the front; find the last point still >= accuracy.
    let i = front.iter().rposition(|p| p.accuracy >= accuracy)?;
    let a = front[i];
    let Some(&b) = front.get(i + 1) else {
        return Some((a.fps, a.cpu_per_frame_s));
    };
    let t = (a.accuracy - accuracy) / (a.accuracy - b.accuracy);
    Some((
        lerp(a.fps, b.fps, t),
        lerp(a.cpu_per_frame_s, b.cpu_per_frame_s, t),
    ))
}

/// On a front: the highest accuracy at a frame rate of at least `fps`, with the CPU per frame
/// there. `None` if the curve never reaches `fps`.
pub fn accuracy_at_fps(front: &[Point], fps: f64) -> Option<(f64, f64)> {
    let last = front.last()?;
    if fps > last.fps {
        return None;
    }
    let i = front.iter().position(|p| p.fps >= fps)?;
    let b = front[i];
    if i == 0 {
        return Some((b.accuracy, b.cpu_per_frame_s));
    }
    let a = front[i - 1];
    let t = (fps - a.fps) / (b.fps - a.fps);
    Some((
        lerp(a.accuracy, b.accuracy, t),
        lerp(a.cpu_per_frame_s, b.cpu_per_frame_s, t),
    ))
}

/// NestDNN against one status-quo level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LevelComparison {
    /// The status quo's point (knob = descendant level).
    pub status_quo: Point,
    /// NestDNN's frame rate at the level's accuracy (`None`: not reached).
    pub nestdnn_fps_at_accuracy: Option<f64>,
    /// That / the level's frame rate.
    pub fps_gain: Option<f64>,
    /// NestDNN's accuracy at the level's frame rate (`None`: not reached).
    pub nestdnn_accuracy_at_fps: Option<f64>,
    /// That - the level's accuracy, percentage points.
    pub accuracy_gain_pt: Option<f64>,
    /// The level's CPU per frame / NestDNN's at the level's accuracy.
    pub cpu_per_frame_ratio: Option<f64>,
}

/// The comparisons of one NestDNN curve against the status quo's levels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gains {
    /// Largest frame-rate gain at equal accuracy over the levels.
    pub fps_gain_at_equal_accuracy: Option<f64>,
    /// The level where it is reached.
    pub fps_gain_level: Option<usize>,
    /// Largest accuracy gain at equal frame rate over the levels, points.
    pub accuracy_gain_at_equal_fps_pt: Option<f64>,
    /// The level where it is reached.
    pub accuracy_gain_level: Option<usize>,
    /// CPU per frame ratio (status quo / NestDNN) at the level of the frame-rate gain.
    pub cpu_per_frame_ratio: Option<f64>,
    /// Against the status quo proper (the largest descendant), if it was measured.
    pub at_status_quo: Option<LevelComparison>,
    /// Against every level.
    pub per_level: Vec<LevelComparison>,
}

fn max_by_key<T: Copy>(items: impl Iterator<Item = (T, f64)>) -> Option<(T, f64)> {
    items
        .filter(|(_, v)| v.is_finite())
        .fold(None, |best: Option<(T, f64)>, (k, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((k, v)),
        })
}

/// Compares NestDNN's points with the status quo's levels (`status_quo[i].knob` = level).
/// `status_quo_level` names the status quo proper.
pub fn gains(status_quo: &[Point], nestdnn: &[Point], status_quo_level: usize) -> Gains {
    let front = pareto(nestdnn);
    let per_level: Vec<LevelComparison> = status_quo
        .iter()
        .map(|s| {
            let at_acc = fps_at_accuracy(&front, s.accuracy);
            let at_fps = accuracy_at_fps(&front, s.fps);
            LevelComparison {
                status_quo: *s,
                nestdnn_fps_at_accuracy: at_acc.map(|x| x.0),
                fps_gain: at_acc.filter(|_| s.fps > 0.0).map(|x| x.0 / s.fps),
                nestdnn_accuracy_at_fps: at_fps.map(|x| x.0),
                accuracy_gain_pt: at_fps.map(|x| (x.0 - s.accuracy) * 100.0),
                cpu_per_frame_ratio: at_acc
                    .filter(|x| x.1 > 0.0)
                    .map(|x| s.cpu_per_frame_s / x.1),
            }
        })
        .collect();
    let level = |c: &LevelComparison| c.status_quo.knob.round() as usize;
    let fps_best = max_by_key(per_level.iter().filter_map(|c| c.fps_gain.map(|g| (c, g))));
    let acc_best = max_by_key(
        per_level
            .iter()
            .filter_map(|c| c.accuracy_gain_pt.map(|g| (c, g))),
    );
    Gains {
        fps_gain_at_equal_accuracy: fps_best.map(|x| x.1),
        fps_gain_level: fps_best.map(|x| level(x.0)),
        accuracy_gain_at_equal_fps_pt: acc_best.map(|x| x.1),
        accuracy_gain_level: acc_best.map(|x| level(x.0)),
        cpu_per_frame_ratio: fps_best.and_then(|x| x.0.cpu_per_frame_ratio),
        at_status_quo: per_level
            .iter()
            .find(|c| level(c) == status_quo_level)
            .copied(),
        per_level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(knob: f64, fps: f64, accuracy: f64, cpf: f64) -> Point {
        Point {
            knob,
            fps,
            accuracy,
            cpu_per_frame_s: cpf,
        }
    }

    #[test]
    fn pareto_drops_dominated_points_and_sorts_by_fps() {
        let f = pareto(&[
            p(0.0, 10.0, 0.9, 1.0),
            p(1.0, 20.0, 0.8, 1.0),
            p(2.0, 15.0, 0.7, 1.0), // dominated by (20, 0.8)
            p(3.0, 5.0, 0.85, 1.0), // dominated by (10, 0.9)
            p(4.0, f64::NAN, 0.99, 1.0),
        ]);
        let fps: Vec<f64> = f.iter().map(|q| q.fps).collect();
        assert_eq!(fps, vec![10.0, 20.0]);
    }

    #[test]
    fn interpolation_between_points_and_no_extrapolation() {
        let f = pareto(&[p(0.0, 10.0, 0.9, 2.0), p(1.0, 30.0, 0.8, 1.0)]);
        let (fps, cpf) = fps_at_accuracy(&f, 0.85).unwrap();
        assert!((fps - 20.0).abs() < 1e-9 && (cpf - 1.5).abs() < 1e-9);
        assert_eq!(fps_at_accuracy(&f, 0.95), None);
        assert_eq!(fps_at_accuracy(&f, 0.5).unwrap().0, 30.0);
        let (acc, _) = accuracy_at_fps(&f, 25.0).unwrap();
        assert!((acc - 0.825).abs() < 1e-9);
        assert_eq!(accuracy_at_fps(&f, 31.0), None);
        assert_eq!(accuracy_at_fps(&f, 1.0).unwrap().0, 0.9);
    }

    #[test]
    fn gains_take_the_best_level_and_report_the_status_quo_beside() {
        // Status quo: level 0 fast and poor, level 1 slow and good.
        let sq = [p(0.0, 40.0, 0.80, 1.0), p(1.0, 10.0, 0.90, 4.0)];
        // NestDNN: (20 fps, 0.90) and (40 fps, 0.85).
        let nd = [p(0.1, 20.0, 0.90, 2.0), p(1.0, 40.0, 0.85, 1.0)];
        let g = gains(&sq, &nd, 1);
        // At accuracy 0.90: 20 fps vs 10 -> 2x; at 0.80: 40 vs 40 -> 1x.
        assert!((g.fps_gain_at_equal_accuracy.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(g.fps_gain_level, Some(1));
        // At 40 fps: 0.85 vs 0.80 -> +5 pt; at 10 fps: 0.90 vs 0.90 -> 0.
        assert!((g.accuracy_gain_at_equal_fps_pt.unwrap() - 5.0).abs() < 1e-9);
        assert_eq!(g.accuracy_gain_level, Some(0));
        // CPU per frame at level 1: 4.0 vs NestDNN's 2.0 at 0.90.
        assert!((g.cpu_per_frame_ratio.unwrap() - 2.0).abs() < 1e-9);
        let sqc = g.at_status_quo.unwrap();
        assert_eq!(sqc.status_quo.knob, 1.0);
        assert!((sqc.fps_gain.unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn unreachable_levels_give_no_gain() {
        let sq = [p(6.0, 10.0, 0.95, 1.0)];
        let nd = [p(0.1, 30.0, 0.90, 1.0)];
        let g = gains(&sq, &nd, 6);
        assert_eq!(g.fps_gain_at_equal_accuracy, None);
        assert_eq!(g.cpu_per_frame_ratio, None);
        // 30 fps >= 10: accuracy at 10 fps is the front's best, 0.90: -5 pt.
        assert!((g.accuracy_gain_at_equal_fps_pt.unwrap() + 5.0).abs() < 1e-9);
    }
}
