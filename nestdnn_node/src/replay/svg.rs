//! A hand-written SVG plot of a replay: the CPU budget and every task's planned capacity
//! (descendant index; paused, idle and disabled spells shaded) over bag time, from the
//! report's plans.

use std::fmt::Write as _;

use super::Report;

const W: f64 = 900.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 90.0;
const GAP: f64 = 28.0;
const TOP: f64 = 40.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plot as an SVG document. `descendants[task]` is the ladder length of each task
/// (configuration order; for the y axis); tasks are taken from the plans' order.
pub fn plot(report: &Report, descendants: &[usize]) -> String {
    let names: Vec<String> = report
        .plans
        .first()
        .map(|p| p.tasks.iter().map(|t| t.task.clone()).collect())
        .unwrap_or_default();
    let end = report
        .duration_s
        .max(report.plans.last().map_or(0.0, |p| p.time))
        .max(1e-3);
    let panels = names.len() + 1;
    let h = TOP + panels as f64 * (PANEL + GAP) + 30.0;
    let x = |t: f64| LEFT + (t / end).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h:.0}" viewBox="0 0 {W} {h:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15">{} - budget and planned capacity over bag time ({} plans)</text>"#,
        esc(&report.bag),
        report.plans.len()
    );
    // Budget panel.
    let top = TOP;
    // The initial plan carries the configured default budget, before any budget message:
    // scale to the budgets the bag sent (and the shares planned).
    let scaled: Vec<_> = report
        .plans
        .iter()
        .filter(|p| p.trigger != "initial")
        .collect();
    let max_b = scaled
        .iter()
        .map(|p| p.budget_cores.max(p.cores_planned))
        .fold(0.0f64, f64::max)
        .max(1e-6);
    let y_b = |v: f64| top + PANEL - (v / max_b) * PANEL;
    axes(
        &mut s,
        top,
        "CPU budget (cores)",
        &format!("{max_b:.3}"),
        "0",
    );
    let mut path = String::new();
    let mut used = String::new();
    for (k, p) in report.plans.iter().enumerate() {
        let t1 = report.plans.get(k + 1).map_or(end, |n| n.time);
        let _ = write!(
            path,
            "{}{:.1},{:.1} H{:.1} ",
            if k == 0 { "M" } else { "L" },
            x(p.time),
            y_b(p.budget_cores.min(max_b)),
            x(t1)
        );
        let _ = write!(
            used,
            "{}{:.1},{:.1} H{:.1} ",
            if k == 0 { "M" } else { "L" },
            x(p.time),
            y_b(p.cores_planned.min(max_b)),
            x(t1)
        );
    }
    let _ = writeln!(
        s,
        r#"<path d="{path}" fill="none" stroke="black" stroke-width="2"/><path d="{used}" fill="none" stroke="gray" stroke-dasharray="4 3" stroke-width="1.5"/>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.0}" y="{:.0}" fill="gray">dashed: planned shares</text>"##,
        W - RIGHT - 150.0,
        top + 12.0
    );
    // One panel per task.
    for (i, name) in names.iter().enumerate() {
        let top = TOP + (i + 1) as f64 * (PANEL + GAP);
        let n = descendants.get(i).copied().unwrap_or(1).max(1);
        let y_d = |d: usize| top + PANEL - (d as f64 + 0.5) / n as f64 * PANEL;
        let color = COLORS[i % COLORS.len()];
        axes(
            &mut s,
            top,
            &format!("{name} descendant"),
            &format!("d{}", n - 1),
            "d0",
        );
        let mut path = String::new();
        let mut pen = false;
        for (k, p) in report.plans.iter().enumerate() {
            let t1 = report.plans.get(k + 1).map_or(end, |n| n.time);
            let Some(tp) = p.tasks.get(i) else { continue };
            if tp.status == "running" {
                let _ = write!(
                    path,
                    "{}{:.1},{:.1} H{:.1} ",
                    if pen { "L" } else { "M" },
                    x(p.time),
                    y_d(tp.descendant_index),
                    x(t1)
                );
                pen = true;
            } else {
                pen = false;
                if x(t1) > x(p.time) {
                    let _ = writeln!(
                        s,
                        r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{PANEL}" fill="#eee"><title>{}</title></rect><text x="{:.1}" y="{:.1}" fill="gray" font-size="10">{}</text>"##,
                        x(p.time),
                        x(t1) - x(p.time),
                        esc(&tp.status),
                        x(p.time) + 2.0,
                        top + PANEL - 4.0,
                        esc(&tp.status)
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>"#
        );
        if let Some(t) = report.tasks.get(name) {
            let acc = t
                .accuracy
                .map_or_else(|| "-".into(), |a| format!("{:.1}%", a * 100.0));
            let _ = writeln!(
                s,
                r#"<text x="{:.0}" y="{:.0}" fill="{color}">accuracy {acc}, {:.1} fps, {} dropped</text>"#,
                W - RIGHT - 230.0,
                top + 12.0,
                t.fps,
                t.dropped
            );
        }
    }
    // Event markers: every plan time on the x axis, and the time axis.
    let bottom = TOP + panels as f64 * (PANEL + GAP) - GAP;
    for p in &report.plans {
        if p.trigger.starts_with("budget")
            || p.trigger.starts_with("priority")
            || p.trigger.starts_with("task_stopped")
        {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{bottom:.1}" stroke="#bbb" stroke-dasharray="2 3"><title>{1}</title></line>"##,
                x(p.time),
                esc(&p.trigger)
            );
        }
    }
    let step = if end > 60.0 {
        10.0
    } else if end > 10.0 {
        2.0
    } else {
        0.5
    };
    let mut t = 0.0;
    while t <= end + 1e-9 {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.0}" text-anchor="middle">{t}</text>"#,
            x(t),
            bottom + 16.0
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">bag time (s)</text></svg>"#,
        (LEFT + W - RIGHT) / 2.0,
        bottom + 30.0
    );
    s
}

fn axes(s: &mut String, top: f64, label: &str, hi: &str, lo: &str) {
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{:.1}" height="{PANEL}" fill="none" stroke="#ccc"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text><text x="{:.0}" y="{:.1}" text-anchor="end" fill="gray">{}</text><text x="{:.0}" y="{:.1}" text-anchor="end" fill="gray">{}</text>"##,
        W - LEFT - RIGHT,
        LEFT - 6.0,
        top + PANEL / 2.0 + 4.0,
        esc(label),
        LEFT - 6.0,
        top + 10.0,
        esc(hi),
        LEFT - 6.0,
        top + PANEL,
        esc(lo)
    );
}
