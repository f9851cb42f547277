//! Plots of the tool (`nestdnn replay --plot`, `nestdnn bench multitenant`), drawn with
//! `plotters`.
//!
//! Every plot is written twice with one stem ([`plot_paths`]): an SVG (text as `<text>` in
//! `sans-serif`, laid out with the embedded font's metrics) and a PNG whose text is drawn with
//! the embedded DejaVu Sans, so a machine without system fonts renders it the same. A plot is
//! a [`Figure`]: drawn once per backend by the same code. Axes carry round tick values
//! ([`Axis`]); legends and per-panel figures go in a column beside the panels, never over
//! the data.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font as _, FontRef, PxScale, ScaleFont as _};
use anyhow::{anyhow, Context};
use nestdnn::replay::Report;
use plotters::backend::RGBPixel;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, DrawingErrorKind, FontTransform};

/// DejaVu Sans 2.37, unmodified, copied from Debian's `fonts-dejavu-core` package
/// (`/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf`); its license (Bitstream Vera and
/// Arev: permissive) is `assets/fonts/LICENSE-DejaVu.txt` beside it.
static DEJAVU_SANS: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Font family of every plot; the embedded font is registered under this name.
pub const FONT: &str = "sans-serif";

/// The embedded font, registered with plotters under [`FONT`] (once per process).
fn embedded_font() -> anyhow::Result<&'static FontRef<'static>> {
    static FONT_REF: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT_REF
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).ok()?;
            FontRef::try_from_slice(DEJAVU_SANS).ok()
        })
        .as_ref()
        .ok_or_else(|| anyhow!("the embedded plot font is unusable"))
}

/// plotters' SVG backend writes a text style of size `s` as `font-size` `s / 1.24`: a style
/// of `em x` [`EM`] pixels has an em of `em` pixels in both files.
pub const EM: f64 = 1.24;

/// A backend whose horizontal text is measured, and on a raster backend drawn, with the
/// embedded font at the SVG backend's em (style size / [`EM`]), each glyph at its advance,
/// kerning and side bearing, baselines placed as the SVG backend places them (plotters' own
/// `ab_glyph` text drops the side bearings: uneven letter spacing). Everything else goes to
/// `inner`.
struct Typeset<B> {
    inner: B,
    /// Draw text as pixels (PNG); otherwise `inner` writes it (SVG `<text>`).
    raster: bool,
    font: &'static FontRef<'static>,
}

impl<B> Typeset<B> {
    /// The scale that makes the em `em` pixels, and the text's glyphs with their pen
    /// positions and its advance width.
    fn layout(&self, text: &str, em: f64) -> (PxScale, Vec<(ab_glyph::GlyphId, f32)>, f32) {
        let f = self.font;
        let units = f.units_per_em().unwrap_or(2048.0);
        let scale = PxScale::from(em as f32 * f.height_unscaled() / units);
        let sf = f.as_scaled(scale);
        let mut x = 0.0f32;
        let mut prev = None;
        let mut glyphs = Vec::with_capacity(text.len());
        for c in text.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                x += sf.kern(p, id);
            }
            glyphs.push((id, x));
            x += sf.h_advance(id);
            prev = Some(id);
        }
        (scale, glyphs, x)
    }
}

impl<B: DrawingBackend> DrawingBackend for Typeset<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        // Repeated and collinear points make plotters' wide-line polygons wobble.
        let mut p: Vec<BackendCoord> = Vec::new();
        for c in path {
            if p.last() == Some(&c) {
                continue;
            }
            if let [.., a, b] = p[..] {
                let cross = i64::from(b.0 - a.0) * i64::from(c.1 - b.1)
                    - i64::from(b.1 - a.1) * i64::from(c.0 - b.0);
                let forward = i64::from(b.0 - a.0) * i64::from(c.0 - b.0)
                    + i64::from(b.1 - a.1) * i64::from(c.1 - b.1);
                if cross == 0 && forward >= 0 {
                    p.pop();
                }
            }
            p.push(c);
        }
        self.inner.draw_path(p, style)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: plotters_backend::BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<B::ErrorType>> {
        let em = style.size() / EM;
        let (_, _, w) = self.layout(text, em);
        Ok((w.ceil() as u32, (em * 1.2).round() as u32))
    }

    fn draw_text<S: plotters_backend::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        if !self.raster || !matches!(style.transform(), FontTransform::None) {
            return self.inner.draw_text(text, style, pos);
        }
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let em = style.size() / EM;
        let (scale, glyphs, width) = self.layout(text, em);
        let anchor = style.anchor();
        let x0 = pos.0 as f32
            - match anchor.h_pos {
                HPos::Left => 0.0,
                HPos::Center => width / 2.0,
                HPos::Right => width,
            };
        // As the SVG backend: dy 0.76em (top), 0.5ex (centre), -0.5ex (bottom).
        let ex = em as f32 * 0.545;
        let baseline = pos.1 as f32
            + match anchor.v_pos {
                VPos::Top => 0.76 * em as f32,
                VPos::Center => 0.5 * ex,
                VPos::Bottom => -0.5 * ex,
            };
        let mut pixels = Vec::new();
        for (id, x) in glyphs {
            let g = id.with_scale_and_position(scale, ab_glyph::point(x0 + x, baseline));
            if let Some(o) = self.font.outline_glyph(g) {
                let b = o.px_bounds();
                o.draw(|gx, gy, coverage| {
                    if coverage > 0.0 {
                        pixels.push((
                            (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32),
                            coverage,
                        ));
                    }
                });
            }
        }
        let (w, h) = self.inner.get_size();
        for ((x, y), coverage) in pixels {
            if x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
                self.inner
                    .draw_pixel((x, y), color.mix(f64::from(coverage.min(1.0))))?;
            }
        }
        Ok(())
    }
}

/// A plot drawn the same way on any plotters backend.
pub trait Figure {
    /// Width and height, pixels.
    fn size(&self) -> (u32, u32);

    /// Draws the figure on `root` (already filled white).
    ///
    /// # Errors
    /// A drawing error of the backend.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static;
}

/// The SVG and the PNG of a plot asked for at `path`: `path` itself for the SVG and its
/// `.png` sibling, or, when `path` ends in `.png`, that for the PNG and its `.svg` sibling.
pub fn plot_paths(path: &Path) -> (PathBuf, PathBuf) {
    let is_png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        (path.with_extension("svg"), path.to_path_buf())
    } else {
        (path.to_path_buf(), path.with_extension("png"))
    }
}

/// Renders `fig` as an SVG document and a PNG file's bytes.
///
/// # Errors
/// The font cannot be registered, a backend fails, or the PNG cannot be encoded.
pub fn render(fig: &impl Figure) -> anyhow::Result<(String, Vec<u8>)> {
    let font = embedded_font()?;
    let (w, h) = fig.size();
    let mut svg = String::new();
    {
        let root = Typeset {
            inner: SVGBackend::with_string(&mut svg, (w, h)),
            raster: false,
            font,
        }
        .into_drawing_area();
        root.fill(&WHITE)?;
        fig.draw(&root)?;
        root.present()?;
    }
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = Typeset {
            inner: BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut rgb, (w, h))?,
            raster: true,
            font,
        }
        .into_drawing_area();
        root.fill(&WHITE)?;
        fig.draw(&root)?;
        root.present()?;
    }
    let img = image::RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| anyhow!("plot buffer of the wrong size"))?;
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .context("encoding the PNG")?;
    Ok((svg, png))
}

/// Renders `fig` and writes it to the two files of [`plot_paths`]`(path)`, each atomically;
/// returns their paths (SVG, PNG).
///
/// # Errors
/// Rendering fails or a file cannot be written.
pub fn write(fig: &impl Figure, path: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (svg_path, png_path) = plot_paths(path);
    let (svg, png) = render(fig)?;
    nestdnn::fsio::write_atomic(&svg_path, svg.as_bytes())
        .with_context(|| format!("writing {}", svg_path.display()))?;
    nestdnn::fsio::write_atomic(&png_path, &png)
        .with_context(|| format!("writing {}", png_path.display()))?;
    Ok((svg_path, png_path))
}

/// One axis: its range and round tick values inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Tick values, ascending.
    pub ticks: Vec<f64>,
    /// Decimals that show every tick exactly.
    pub decimals: usize,
}

impl Axis {
    /// `[lo, hi]` with at most `max` round ticks: multiples of 1, 2 or 5 x 10^k, the finest
    /// that fit. A range that is not finite becomes `[0, 1]`; an empty one is widened.
    pub fn new(lo: f64, hi: f64, max: usize) -> Axis {
        let (mut lo, mut hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        if !(lo.is_finite() && hi.is_finite()) {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
            let d = (hi.abs() * 0.05).max(1e-3);
            (lo, hi) = (lo - d, hi + d);
        }
        let max = max.max(2);
        let mut e = ((hi - lo) / max as f64).log10().floor() as i32 - 1;
        loop {
            for m in [1.0, 2.0, 5.0] {
                let step = m * 10f64.powi(e);
                let first = (lo / step - 1e-9).ceil();
                let last = (hi / step + 1e-9).floor();
                if last - first + 1.0 <= max as f64 {
                    let decimals = (-e).max(0) as usize;
                    let scale = 10f64.powi(decimals as i32);
                    let mut ticks = Vec::new();
                    let mut k = first;
                    while k <= last {
                        ticks.push((k * step * scale).round() / scale);
                        k += 1.0;
                    }
                    return Axis {
                        lo,
                        hi,
                        ticks,
                        decimals,
                    };
                }
            }
            e += 1;
        }
    }

    /// `[lo, hi]` of `values` (finite ones) widened by `pad` of the span on both sides, with
    /// at most `max` round ticks.
    pub fn padded(values: impl IntoIterator<Item = f64>, pad: f64, max: usize) -> Axis {
        let (lo, hi) = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        if !(lo.is_finite() && hi.is_finite()) {
            return Axis::new(0.0, 1.0, max);
        }
        let p = ((hi - lo) * pad).max(1e-3);
        Axis::new(lo - p, hi + p, max)
    }

    /// Integer levels `0..n` (centred in `[-0.5, n - 0.5]`), every level ticked up to 8
    /// levels, every k-th above.
    pub fn levels(n: usize) -> Axis {
        let n = n.max(1);
        let every = n.div_ceil(8);
        Axis {
            lo: -0.5,
            hi: n as f64 - 0.5,
            ticks: (0..n).step_by(every).map(|d| d as f64).collect(),
            decimals: 0,
        }
    }

    /// A tick value as text.
    pub fn label(&self, v: f64) -> String {
        let s = format!("{v:.*}", self.decimals);
        if s.trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
        {
            s.trim_start_matches('-').to_string()
        } else {
            s
        }
    }

    fn coord(&self) -> AxisCoord {
        AxisCoord {
            inner: (self.lo..self.hi).into(),
            ticks: self.ticks.clone(),
        }
    }
}

/// An [`Axis`] as a plotters coordinate: linear, ticks and grid lines at the axis' ticks.
pub struct AxisCoord {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for AxisCoord {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// A chart whose axes are two [`Axis`].
pub type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<AxisCoord, AxisCoord>>;

/// Grid lines.
pub const GRID: RGBColor = RGBColor(228, 228, 228);
/// Frames, secondary text.
pub const MUTED: RGBColor = RGBColor(110, 110, 110);
/// Series colours.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Text with an em of `size` pixels in `color`, anchored at its left and top.
pub fn text(size: u32, color: &RGBColor) -> TextStyle<'static> {
    (FONT, (f64::from(size) * EM).round())
        .into_font()
        .color(color)
        .pos(Pos::new(HPos::Left, VPos::Top))
}

/// A panel on `area`: its title at the top left above the plot, then the plot with `left`
/// pixels for the y tick labels (`ylabel` formats them) and `bottom` pixels for the x tick
/// labels and `xdesc` (0: no x labels); grid lines at the ticks, a frame around the plot.
///
/// # Errors
/// A drawing error of the backend.
#[allow(clippy::too_many_arguments)]
pub fn panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    x: &Axis,
    y: &Axis,
    left: u32,
    bottom: u32,
    xdesc: &str,
    ylabel: &dyn Fn(f64) -> String,
) -> anyhow::Result<Chart<'a, DB>>
where
    DB::ErrorType: 'static,
{
    area.draw_text(title, &text(14, &BLACK), (left as i32, 2))?;
    let mut chart = ChartBuilder::on(area)
        .margin_top(22)
        .margin_right(8)
        .set_label_area_size(LabelAreaPosition::Left, left)
        .set_label_area_size(LabelAreaPosition::Bottom, bottom)
        .build_cartesian_2d(x.coord(), y.coord())?;
    let xl = |v: &f64| x.label(*v);
    let yl = |v: &f64| ylabel(*v);
    let mut mesh = chart.configure_mesh();
    mesh.x_label_formatter(&xl)
        .y_label_formatter(&yl)
        .label_style((FONT, (12.0 * EM).round()))
        .axis_desc_style((FONT, (13.0 * EM).round()))
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(MUTED);
    if bottom > 0 && !xdesc.is_empty() {
        mesh.x_desc(xdesc);
    }
    mesh.draw()?;
    chart.plotting_area().draw(&Rectangle::new(
        [(x.lo, y.lo), (x.hi, y.hi)],
        MUTED.stroke_width(1),
    ))?;
    Ok(chart)
}

/// Step line through `(t0, t1, v)` spans: `v` from `t0` to `t1`, then the next span.
pub fn steps(spans: impl IntoIterator<Item = (f64, f64, f64)>) -> Vec<(f64, f64)> {
    spans
        .into_iter()
        .flat_map(|(t0, t1, v)| [(t0, v), (t1, v)])
        .collect()
}

/// A legend line in a side column: a line sample in `style` (dashed if `dashed`) and
/// `label`, at `(x, y)` of `area`.
///
/// # Errors
/// A drawing error of the backend.
pub fn legend_line<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    style: ShapeStyle,
    dashed: bool,
    label: &str,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let mid = y + 8;
    if dashed {
        for k in 0..3 {
            area.draw(&PathElement::new(
                vec![(x + 8 * k, mid), (x + 8 * k + 5, mid)],
                style,
            ))?;
        }
    } else {
        area.draw(&PathElement::new(vec![(x, mid), (x + 22, mid)], style))?;
    }
    area.draw_text(label, &text(12, &BLACK), (x + 30, y + 1))?;
    Ok(())
}

/// The replay plot: the CPU budget and the shares planned, and every task's planned
/// descendant (paused, idle and disabled spells shaded) over bag time, from the report's
/// plans; budget, priority and task-stop events as dotted lines; beside each task's panel
/// its accuracy, frame rate and drops.
pub struct ReplayPlot<'a> {
    /// The replay's report.
    pub report: &'a Report,
    /// Ladder length of each task (configuration order; the y axes). Tasks are taken in the
    /// plans' order.
    pub descendants: &'a [usize],
}

const R_WIDTH: u32 = 1000;
const R_SIDE: u32 = 190;
const R_LEFT: u32 = 58;
const R_TITLE: u32 = 34;
const R_PANEL: u32 = 128;
const R_GAP: u32 = 10;
const R_AXIS: u32 = 44;

impl ReplayPlot<'_> {
    fn names(&self) -> Vec<String> {
        self.report
            .plans
            .first()
            .map(|p| p.tasks.iter().map(|t| t.task.clone()).collect())
            .unwrap_or_default()
    }
}

impl Figure for ReplayPlot<'_> {
    fn size(&self) -> (u32, u32) {
        let panels = self.names().len() as u32 + 1;
        (R_WIDTH, R_TITLE + panels * (R_PANEL + R_GAP) + R_AXIS)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        let report = self.report;
        let names = self.names();
        let end = report
            .duration_s
            .max(report.plans.last().map_or(0.0, |p| p.time))
            .max(1e-3);
        let (w, _) = self.size();
        // The bag as given, or its last component if the title would not fit.
        let mut title = format!(
            "{} - budget and planned capacity over bag time ({} plans)",
            report.bag,
            report.plans.len()
        );
        let style = text(17, &BLACK);
        if root.estimate_text_size(&title, &style)?.0 + 2 * R_LEFT > w {
            let short = Path::new(&report.bag)
                .file_name()
                .map_or_else(|| report.bag.clone(), |n| n.to_string_lossy().into_owned());
            title = format!(
                "{short} - budget and planned capacity ({} plans)",
                report.plans.len()
            );
        }
        root.draw_text(&title, &style, (R_LEFT as i32, 9))?;

        let x = Axis::new(0.0, end, 11);
        let panels = names.len() + 1;
        let row = |k: usize| {
            let top = R_TITLE + k as u32 * (R_PANEL + R_GAP);
            let h = R_PANEL + if k + 1 == panels { R_AXIS } else { 0 };
            root.clone()
                .shrink((0, top), (w, h))
                .split_horizontally(w - R_SIDE)
        };
        let bottom = |k: usize| if k + 1 == panels { R_AXIS } else { 0 };
        let events: Vec<f64> = report
            .plans
            .iter()
            .filter(|p| {
                p.trigger.starts_with("budget")
                    || p.trigger.starts_with("priority")
                    || p.trigger.starts_with("task_stopped")
            })
            .map(|p| p.time)
            .collect();
        let marker = RGBColor(160, 160, 160).stroke_width(1);
        let draw_events = |chart: &mut Chart<'_, DB>, y: &Axis| -> anyhow::Result<()> {
            for &t in &events {
                chart.draw_series(DashedLineSeries::new([(t, y.lo), (t, y.hi)], 2, 3, marker))?;
            }
            Ok(())
        };
        let span_end = |k: usize| report.plans.get(k + 1).map_or(end, |n| n.time);

        // Budget panel. The initial plan carries the configured default budget, before any
        // budget message: scale to the budgets the bag sent (and the shares planned).
        let max_b = report
            .plans
            .iter()
            .filter(|p| p.trigger != "initial")
            .map(|p| p.budget_cores.max(p.cores_planned))
            .fold(0.0f64, f64::max)
            .max(1e-6);
        let yb = Axis::new(0.0, max_b * 1.08, 5);
        let (area, side) = row(0);
        let mut chart = panel(
            &area,
            "CPU budget and planned shares (cores)",
            &x,
            &yb,
            R_LEFT,
            bottom(0),
            "bag time (s)",
            &|v| yb.label(v),
        )?;
        draw_events(&mut chart, &yb)?;
        let budget = steps(
            report
                .plans
                .iter()
                .enumerate()
                .map(|(k, p)| (p.time, span_end(k), p.budget_cores.min(max_b))),
        );
        let planned = steps(
            report
                .plans
                .iter()
                .enumerate()
                .map(|(k, p)| (p.time, span_end(k), p.cores_planned.min(max_b))),
        );
        let grey = RGBColor(120, 120, 120).stroke_width(2);
        chart.draw_series(DashedLineSeries::new(planned, 5, 4, grey))?;
        chart.draw_series(LineSeries::new(budget, BLACK.stroke_width(2)))?;
        legend_line(&side, (8, 24), BLACK.stroke_width(2), false, "budget")?;
        legend_line(&side, (8, 44), grey, true, "planned shares")?;
        legend_line(&side, (8, 64), marker, true, "budget, priority or")?;
        side.draw_text("task-stop event", &text(12, &BLACK), (38, 81))?;

        // One panel per task.
        for (i, name) in names.iter().enumerate() {
            let k = i + 1;
            let (area, side) = row(k);
            let n = self.descendants.get(i).copied().unwrap_or(1).max(1);
            let y = Axis::levels(n);
            let color = PALETTE[i % PALETTE.len()];
            let mut chart = panel(
                &area,
                &format!("{name}: planned descendant"),
                &x,
                &y,
                R_LEFT,
                bottom(k),
                "bag time (s)",
                &|v| format!("d{v:.0}"),
            )?;
            let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for (j, p) in report.plans.iter().enumerate() {
                let t1 = span_end(j);
                let Some(tp) = p.tasks.get(i) else { continue };
                if tp.status == "running" {
                    let v = tp.descendant_index as f64;
                    if let Some(s) = segments.last_mut() {
                        s.extend([(p.time, v), (t1, v)]);
                    }
                } else {
                    if segments.last().is_some_and(|s| !s.is_empty()) {
                        segments.push(Vec::new());
                    }
                    if t1 > p.time {
                        chart.draw_series(std::iter::once(Rectangle::new(
                            [(p.time, y.lo), (t1, y.hi)],
                            RGBColor(236, 236, 236).filled(),
                        )))?;
                        // The status where it fits inside the spell.
                        let label = text(11, &MUTED);
                        let (tw, _) = root.estimate_text_size(&tp.status, &label)?;
                        let (x0, _) = chart.backend_coord(&(p.time, y.lo));
                        let (x1, _) = chart.backend_coord(&(t1, y.lo));
                        if (x1 - x0) as u32 > tw + 6 {
                            chart.draw_series(std::iter::once(
                                EmptyElement::at((p.time, y.lo))
                                    + Text::new(tp.status.clone(), (3, -15), label),
                            ))?;
                        }
                    }
                }
            }
            draw_events(&mut chart, &y)?;
            for s in segments.into_iter().filter(|s| s.len() > 1) {
                chart.draw_series(LineSeries::new(s, color.stroke_width(3)))?;
            }
            if let Some(t) = report.tasks.get(name) {
                let acc = t
                    .accuracy
                    .map_or_else(|| "-".into(), |a| format!("{:.1} %", a * 100.0));
                let style = text(13, &color);
                side.draw_text(name, &text(13, &BLACK), (8, 24))?;
                side.draw_text(&format!("accuracy {acc}"), &style, (8, 44))?;
                side.draw_text(&format!("{:.1} fps", t.fps), &style, (8, 62))?;
                side.draw_text(&format!("{} dropped", t.dropped), &style, (8, 80))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let a = Axis::new(90.2, 95.6, 7);
        assert_eq!(a.ticks, vec![91.0, 92.0, 93.0, 94.0, 95.0]);
        assert_eq!(a.label(92.0), "92");
        let a = Axis::new(0.0, 0.0432, 5);
        assert_eq!(a.ticks, vec![0.0, 0.01, 0.02, 0.03, 0.04]);
        assert_eq!(a.label(0.03), "0.03");
        let a = Axis::new(0.0, 20.0, 11);
        assert_eq!(a.ticks.len(), 11);
        assert_eq!(a.label(0.0), "0");
        let a = Axis::new(68.0, 88.0, 6);
        assert_eq!(a.ticks, vec![70.0, 75.0, 80.0, 85.0]);
        let a = Axis::new(f64::NAN, 1.0, 5);
        assert!(a.lo.is_finite() && !a.ticks.is_empty());
        let a = Axis::new(3.0, 3.0, 5);
        assert!(a.lo < 3.0 && a.hi > 3.0);
        assert_eq!(Axis::levels(7).ticks.len(), 7);
        assert_eq!(
            Axis::levels(20).ticks,
            vec![0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0]
        );
    }

    #[test]
    fn the_png_goes_beside_the_svg() {
        let (s, p) = plot_paths(Path::new("out/plot.svg"));
        assert_eq!(
            (s.as_path(), p.as_path()),
            (Path::new("out/plot.svg"), Path::new("out/plot.png"))
        );
        let (s, p) = plot_paths(Path::new("out/plot.PNG"));
        assert_eq!(
            (s.as_path(), p.as_path()),
            (Path::new("out/plot.svg"), Path::new("out/plot.PNG"))
        );
        let (s, p) = plot_paths(Path::new("plot"));
        assert_eq!(
            (s.as_path(), p.as_path()),
            (Path::new("plot"), Path::new("plot.png"))
        );
    }
}
