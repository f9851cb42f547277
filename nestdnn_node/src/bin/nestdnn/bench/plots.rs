//! The benchmark's plots ([`crate::plot`]: SVG and PNG): accuracy against frame rate of every
//! system ([`CurvesPlot`]) and capacity over time of one run ([`CapacityPlot`]).

use plotters::coord::Shift;
use plotters::prelude::*;

use super::curves::pareto;
use super::harness::{RunOutcome, System};
use super::report::{points, AccuracyAxis, SystemSummary};
use super::workload::{APPS, STATUS_QUO_LEVEL};
use crate::plot::{legend_line, panel, text, Axis, Figure, MUTED, PALETTE};

/// The families in the curves plot, their legend names and colours.
const FAMILIES: [(&str, &str, RGBColor); 3] = [
    (
        "status_quo",
        "status quo (model)",
        RGBColor(0x55, 0x55, 0x55),
    ),
    (
        "min_total_cost",
        "min_total_cost (alpha)",
        RGBColor(0x1f, 0x77, 0xb4),
    ),
    (
        "min_max_cost",
        "min_max_cost (alpha)",
        RGBColor(0xd6, 0x27, 0x28),
    ),
];

/// Accuracy against frame rate of every system (all apps, pooled over runs): each family's
/// operating points and the Pareto front through them. A point is labelled with its knob
/// where the label overlaps no other label or point; the table beside the plot lists every
/// point.
pub struct CurvesPlot<'a> {
    /// The systems, pooled over runs.
    pub summaries: &'a [SystemSummary],
}

const C_WIDTH: u32 = 1040;
const C_HEIGHT: u32 = 620;
const C_SIDE: u32 = 270;

/// One family's marker at pixel `c`: circle, triangle or square.
fn marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    family: usize,
    c: (i32, i32),
    color: RGBColor,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let style = color.filled();
    match family {
        0 => area.draw(&Circle::new(c, 4, style))?,
        1 => area.draw(&TriangleMarker::new(c, 6, style))?,
        _ => area.draw(&Rectangle::new(
            [(c.0 - 4, c.1 - 4), (c.0 + 4, c.1 + 4)],
            style,
        ))?,
    }
    Ok(())
}

fn knob_label(family: &str, knob: f64) -> String {
    if family == "status_quo" && knob == 0.0 {
        "vanilla".to_string()
    } else if family == "status_quo" {
        format!("L{knob}")
    } else {
        format!("{knob}")
    }
}

/// A pixel box `(x0, y0, x1, y1)`.
type PxBox = (i32, i32, i32, i32);

/// Pixel boxes overlap.
fn overlaps(a: PxBox, b: PxBox) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// The segment `p`-`q` (pixels) crosses or touches box `b`.
fn crosses(p: (i32, i32), q: (i32, i32), b: PxBox) -> bool {
    // Sample the segment every pixel: exact enough for label placement.
    let n = (q.0 - p.0).abs().max((q.1 - p.1).abs()).max(1);
    (0..=n).any(|k| {
        let x = p.0 + (q.0 - p.0) * k / n;
        let y = p.1 + (q.1 - p.1) * k / n;
        b.0 <= x && x <= b.2 && b.1 <= y && y <= b.3
    })
}

impl Figure for CurvesPlot<'_> {
    fn size(&self) -> (u32, u32) {
        (C_WIDTH, C_HEIGHT)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        let all: Vec<&SystemSummary> = self
            .summaries
            .iter()
            .filter(|s| s.fps.is_finite() && s.accuracy.is_finite())
            .collect();
        let x = Axis::padded(all.iter().map(|s| s.fps), 0.08, 8);
        let y = Axis::padded(all.iter().map(|s| s.accuracy * 100.0), 0.08, 8);
        root.draw_text(
            "Accuracy vs frame rate (all apps, pooled over runs)",
            &text(17, &BLACK),
            (62, 9),
        )?;
        let body = root.margin(34, 0, 0, 0);
        let (area, side) = body.split_horizontally(C_WIDTH - C_SIDE);
        let mut chart = panel(
            &area,
            "top-1, mean over the apps (%)",
            &x,
            &y,
            62,
            50,
            "processed frames/s (all apps)",
            &|v| y.label(v),
        )?;
        // Fronts first, then the points over them.
        let mut placed_points = Vec::new();
        let mut segments = Vec::new();
        for (fam, _, color) in FAMILIES {
            let front: Vec<(f64, f64)> =
                pareto(&points(self.summaries, fam, AccuracyAxis::Measured))
                    .iter()
                    .map(|p| (p.fps, p.accuracy * 100.0))
                    .collect();
            for w in front.windows(2) {
                segments.push((chart.backend_coord(&w[0]), chart.backend_coord(&w[1])));
            }
            chart.draw_series(LineSeries::new(front, color.stroke_width(3)))?;
        }
        for (k, (fam, _, color)) in FAMILIES.iter().enumerate() {
            for p in points(self.summaries, fam, AccuracyAxis::Measured)
                .iter()
                .filter(|p| p.fps.is_finite() && p.accuracy.is_finite())
            {
                let c = chart.backend_coord(&(p.fps, p.accuracy * 100.0));
                marker(root, k, c, *color)?;
                placed_points.push((k, c, knob_label(fam, p.knob)));
            }
        }
        // Labels: the first spot around each point clear of the plot's edges, the points, the
        // fronts and the labels placed so far; none if there is none (the table has them all).
        let (px, py) = chart.plotting_area().get_pixel_range();
        let mut taken: Vec<PxBox> = placed_points
            .iter()
            .map(|(_, c, _)| (c.0 - 5, c.1 - 5, c.0 + 5, c.1 + 5))
            .collect();
        let style = |color: &RGBColor| text(11, color);
        for (k, c, label) in &placed_points {
            let st = style(&FAMILIES[*k].2);
            let (w, h) = root.estimate_text_size(label, &st)?;
            let (w, h) = (w as i32, h as i32);
            let spots = [
                (6, -h - 3),
                (6, 3),
                (-w - 6, -h - 3),
                (-w - 6, 3),
                (8, -h / 2),
                (-w - 8, -h / 2),
                (-w / 2, -h - 7),
                (-w / 2, 7),
            ];
            let free = spots
                .iter()
                .map(|(dx, dy)| (c.0 + dx, c.1 + dy))
                .find(|&(x0, y0)| {
                    let b = (x0, y0, x0 + w, y0 + h);
                    let near = (b.0 - 1, b.1 - 1, b.2 + 1, b.3 + 1);
                    px.start <= b.0
                        && b.2 <= px.end
                        && py.start <= b.1
                        && b.3 <= py.end
                        && !taken.iter().any(|t| overlaps(*t, b))
                        && !segments.iter().any(|(p, q)| crosses(*p, *q, near))
                });
            if let Some((x0, y0)) = free {
                taken.push((x0, y0, x0 + w, y0 + h));
                root.draw_text(label, &st, (x0, y0))?;
            }
        }
        // Legend and table of every point.
        let mut ly = 26;
        for (k, (_, name, color)) in FAMILIES.iter().enumerate() {
            legend_line(&side, (8, ly), color.stroke_width(3), false, name)?;
            let (bx, by) = side.get_base_pixel();
            marker(root, k, (bx + 19, by + ly + 8), *color)?;
            ly += 20;
        }
        ly += 10;
        let head = text(12, &MUTED);
        let right = |size: u32, color: &RGBColor| {
            text(size, color).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Top,
            ))
        };
        side.draw_text("knob", &head, (12, ly))?;
        side.draw_text("frames/s", &right(12, &MUTED), (150, ly))?;
        side.draw_text("top-1 %", &right(12, &MUTED), (220, ly))?;
        ly += 18;
        for (fam, name, color) in FAMILIES {
            side.draw_text(name, &text(12, &color), (8, ly))?;
            ly += 16;
            for p in points(self.summaries, fam, AccuracyAxis::Measured) {
                side.draw_text(&knob_label(fam, p.knob), &text(12, &BLACK), (20, ly))?;
                side.draw_text(&format!("{:.1}", p.fps), &right(12, &BLACK), (150, ly))?;
                side.draw_text(
                    &format!("{:.2}", p.accuracy * 100.0),
                    &right(12, &BLACK),
                    (220, ly),
                )?;
                ly += 15;
            }
            ly += 4;
        }
        Ok(())
    }
}

/// Capacity over time of one run: the device's cores (background load spells shaded) and,
/// per app, the descendant of the status quo proper and of one NestDNN system.
pub struct CapacityPlot<'a> {
    /// The run.
    pub run: &'a RunOutcome,
    /// Label of the NestDNN system shown ([`System::label`]).
    pub nestdnn_label: &'a str,
}

const K_WIDTH: u32 = 1000;
const K_SIDE: u32 = 200;
const K_LEFT: u32 = 58;
const K_TITLE: u32 = 34;
const K_PANEL: u32 = 170;
const K_GAP: u32 = 10;
const K_AXIS: u32 = 44;

impl Figure for CapacityPlot<'_> {
    fn size(&self) -> (u32, u32) {
        (K_WIDTH, K_TITLE + 3 * (K_PANEL + K_GAP) + K_AXIS)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        let run = self.run;
        let (w, _) = self.size();
        root.draw_text(
            &format!(
                "Run {} (seed {}): device cores and descendants over time",
                run.schedule.index, run.schedule.seed
            ),
            &text(17, &BLACK),
            (K_LEFT as i32, 9),
        )?;
        let x = Axis::new(0.0, run.schedule.run_s.max(1.0), 13);
        let row = |k: usize| {
            let top = K_TITLE + k as u32 * (K_PANEL + K_GAP);
            let h = K_PANEL + if k == 2 { K_AXIS } else { 0 };
            root.clone()
                .shrink((0, top), (w, h))
                .split_horizontally(w - K_SIDE)
        };
        let xdesc = "seconds since the run's start";

        // Device cores, background load spells behind.
        let y = Axis::new(0.0, run.schedule.compute_cores * 1.1, 5);
        let (area, side) = row(0);
        let mut chart = panel(&area, "device cores", &x, &y, K_LEFT, 0, xdesc, &|v| {
            y.label(v)
        })?;
        let load = RGBColor(0xff, 0x7f, 0x0e);
        chart.draw_series(run.schedule.background.iter().map(|sp| {
            Rectangle::new(
                [(sp.from_s, y.lo), (sp.to_s.min(x.hi), y.hi)],
                load.mix(0.18).filled(),
            )
        }))?;
        chart.draw_series(LineSeries::new(
            run.budget.iter().map(|b| (b.t_s, b.device_cores)),
            BLACK.stroke_width(2),
        ))?;
        legend_line(&side, (8, 24), BLACK.stroke_width(2), false, "device cores")?;
        side.draw(&Rectangle::new(
            [(8, 46), (30, 58)],
            load.mix(0.35).filled(),
        ))?;
        side.draw_text("background load spell", &text(12, &BLACK), (38, 45))?;
        side.draw_text(
            &format!("budget {:.3} cores", run.schedule.compute_cores),
            &text(12, &MUTED),
            (8, 70),
        )?;

        // The status quo proper (one fixed model per app: its CPU share per app over time),
        // then the NestDNN system (its descendant per app).
        let sq_label = System::StatusQuo {
            level: STATUS_QUO_LEVEL,
        }
        .label();
        let levels = run
            .systems
            .iter()
            .flat_map(|s| &s.cpu_per_frame_s)
            .map(Vec::len)
            .max()
            .unwrap_or(1);
        let yd = Axis::levels(levels);
        let ys = Axis::new(0.0, run.schedule.compute_cores.clamp(1e-3, 1.0) * 1.1, 5);
        for (k, label) in [sq_label.as_str(), self.nestdnn_label].iter().enumerate() {
            let (area, side) = row(k + 1);
            let shares = k == 0;
            let mut chart = if shares {
                panel(
                    &area,
                    &format!("{label}: CPU share per app (cores; the model never changes)"),
                    &x,
                    &ys,
                    K_LEFT,
                    0,
                    xdesc,
                    &|v| ys.label(v),
                )?
            } else {
                panel(
                    &area,
                    &format!("{label}: descendant per app"),
                    &x,
                    &yd,
                    K_LEFT,
                    K_AXIS,
                    xdesc,
                    &|v| format!("d{v:.0}"),
                )?
            };
            for (a, app) in APPS.iter().enumerate() {
                let color = PALETTE[a % PALETTE.len()];
                legend_line(
                    &side,
                    (8, 24 + 20 * a as i32),
                    color.stroke_width(2),
                    false,
                    app,
                )?;
                let Some(sys) = run.systems.iter().find(|x| x.system.label() == *label) else {
                    continue;
                };
                // Apps on one descendant stay apart by a few pixels.
                let off = (a as f64 - 1.5) * 0.12;
                let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
                for p in &sys.timeline {
                    match p.apps.get(a).copied() {
                        Some(st) if shares && st.running => {
                            if let Some(s) = segments.last_mut() {
                                s.push((p.t_s, st.share));
                            }
                        }
                        Some(st) if !shares && st.running && st.descendant.is_some() => {
                            let d = st.descendant.unwrap_or(0) as f64 + off;
                            if let Some(s) = segments.last_mut() {
                                s.push((p.t_s, d));
                            }
                        }
                        _ => segments.push(Vec::new()),
                    }
                }
                for s in segments.into_iter().filter(|s| s.len() > 1) {
                    chart.draw_series(LineSeries::new(s, color.stroke_width(2)))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestdnn::scheduler::Objective;

    fn summary(system: System, fps: f64, accuracy: f64) -> SystemSummary {
        SystemSummary {
            system,
            label: system.label(),
            family: system.family().to_string(),
            knob: system.knob(),
            runs: 1,
            fps,
            fps_ci95: f64::NAN,
            accuracy,
            accuracy_ci95: f64::NAN,
            pooled_accuracy: accuracy,
            model_accuracy: accuracy,
            model_accuracy_ci95: f64::NAN,
            cpu_per_frame_s: 1e-3,
            processed_fraction: 1.0,
            latency_p50_ms: 1.0,
            latency_p99_ms: 2.0,
            switches_per_run: 0.0,
            memory_peak_bytes: 0,
            memory_over_budget_s: 0.0,
        }
    }

    #[test]
    fn curves_render_with_clustered_missing_and_no_points() {
        let nd = |alpha| System::Nestdnn {
            objective: Objective::MinTotalCost,
            alpha,
        };
        let s = [
            summary(System::StatusQuo { level: 0 }, 60.0, 0.93),
            summary(System::StatusQuo { level: 6 }, 30.0, 0.96),
            summary(nd(0.3), 58.0, 0.94),
            summary(nd(1.0), 58.01, 0.9401),
            summary(nd(0.1), f64::NAN, f64::NAN),
        ];
        for summaries in [&s[..], &[]] {
            let (svg, png) = crate::plot::render(&CurvesPlot { summaries }).unwrap();
            assert!(svg.contains("Accuracy vs frame rate"));
            let img = image::load_from_memory(&png).unwrap();
            assert_eq!((img.width(), img.height()), (C_WIDTH, C_HEIGHT));
        }
    }
}
