//! Pictures of a training run: the loss curve as a self-contained SVG.
//!
//! [`loss_curve_svg`] draws training loss per optimizer step (a line) and validation loss (markers
//! joined by a dashed line) on one chart, with axes ticked at round values (1, 2 or 5 times a power
//! of ten), axis labels, a legend and a title. The SVG is written by hand: no fonts, scripts,
//! stylesheets or other files are referenced, so it opens in any browser or image viewer as is.
//!
//! This module depends on nothing else in the crate; it returns text and never writes files.

use std::fmt::Write as _;

/// `write!` to a `String`. Writing to a `String` cannot fail, so the `fmt::Result` carries nothing
/// and is dropped here, once.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// Width of the picture in SVG user units (pixels when shown at 100%).
const WIDTH: f64 = 720.0;
/// Height of the picture.
const HEIGHT: f64 = 440.0;
/// Space left of the plot area, for the y tick labels and the y axis label.
const MARGIN_LEFT: f64 = 72.0;
/// Space right of the plot area.
const MARGIN_RIGHT: f64 = 24.0;
/// Space above the plot area, for the title and the legend.
const MARGIN_TOP: f64 = 64.0;
/// Length of the line sample in front of each legend entry.
const SAMPLE_WIDTH: f64 = 30.0;
/// Space below the plot area, for the x tick labels and the x axis label.
const MARGIN_BOTTOM: f64 = 56.0;
/// How many ticks an axis aims for; [`NiceScale`] gives between about half and twice this.
const TARGET_TICKS: usize = 6;
/// Colour of the training series.
const TRAIN_COLOUR: &str = "#1f77b4";
/// Colour of the validation series.
const VALIDATION_COLOUR: &str = "#d62728";

/// An SVG chart of training loss per optimizer step and validation loss, titled `title`.
///
/// `train` and `validation` are `(step, loss)` pairs; they are drawn in the order given, so pass
/// them sorted by step. Points whose loss is not finite (NaN, ±infinity) are skipped. When no
/// finite point is left in either series the picture still is a valid SVG, with the title and
/// "no data" in place of the chart; a series that alone is empty reads "(no data)" in the legend.
/// The title is escaped for XML, so any text may be passed.
pub fn loss_curve_svg(train: &[(u64, f32)], validation: &[(u64, f32)], title: &str) -> String {
    let train = finite_points(train);
    let validation = finite_points(validation);
    let mut svg = String::new();
    put!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
        viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    put!(svg, "<title>{}</title>\n", escape_xml(title));
    put!(svg, "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n");
    put!(
        svg,
        "<text x=\"{}\" y=\"26\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        WIDTH / 2.0,
        escape_xml(title)
    );

    let all = || train.iter().chain(&validation);
    let (Some(x_min), Some(x_max)) = (all().map(|p| p.0).reduce(f64::min), all().map(|p| p.0).reduce(f64::max)) else {
        put!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\" fill=\"#666\">no data</text>\n",
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        svg.push_str("</svg>\n");
        return svg;
    };
    let y_min = all().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = all().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let x_scale = NiceScale::new(x_min, x_max, TARGET_TICKS, 1.0);
    let y_scale = NiceScale::new(y_min, y_max, TARGET_TICKS, 0.0);
    let frame = Frame { x: x_scale, y: y_scale };

    draw_axes(&mut svg, &frame);
    if train.len() > 1 {
        put!(
            svg,
            "<polyline fill=\"none\" stroke=\"{TRAIN_COLOUR}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            frame.points(&train)
        );
    } else if let Some(&(x, y)) = train.first() {
        let (px, py) = frame.to_pixels(x, y);
        put!(svg, "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2\" fill=\"{TRAIN_COLOUR}\"/>\n");
    }
    if validation.len() > 1 {
        put!(
            svg,
            "<polyline fill=\"none\" stroke=\"{VALIDATION_COLOUR}\" stroke-width=\"1.5\" \
            stroke-dasharray=\"5,4\" points=\"{}\"/>\n",
            frame.points(&validation)
        );
    }
    for &(x, y) in &validation {
        let (px, py) = frame.to_pixels(x, y);
        put!(
            svg,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3.5\" fill=\"white\" stroke=\"{VALIDATION_COLOUR}\" \
            stroke-width=\"1.5\"/>\n"
        );
    }
    draw_legend(&mut svg, train.is_empty(), validation.is_empty());
    svg.push_str("</svg>\n");
    svg
}

/// The points of `series` with a finite loss, as `(step, loss)` in `f64`.
fn finite_points(series: &[(u64, f32)]) -> Vec<(f64, f64)> {
    series.iter().filter(|(_, loss)| loss.is_finite()).map(|&(step, loss)| (step as f64, f64::from(loss))).collect()
}

/// `text` with the five XML special characters replaced by entities, safe in element text and in
/// quoted attribute values. Characters XML 1.0 forbids (control characters other than tab, line
/// feed and carriage return) are dropped.
fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// An axis range widened to round values, and the round step between its ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct NiceScale {
    /// First tick, at or below the data's minimum.
    lo: f64,
    /// Last tick, at or above the data's maximum.
    hi: f64,
    /// Distance between ticks: 1, 2 or 5 times a power of ten.
    step: f64,
}

impl NiceScale {
    /// A scale covering `min..=max` (finite, `min <= max`) with about `target` ticks whose step is
    /// at least `min_step` (1 for optimizer steps, which are whole numbers; 0 for no limit). A
    /// range of one value is widened around it, so every scale has a non-zero span.
    fn new(min: f64, max: f64, target: usize, min_step: f64) -> Self {
        let (mut min, mut max) = (min, max);
        if max - min <= f64::EPSILON * min.abs().max(max.abs()) {
            let pad = if min == 0.0 { 1.0 } else { min.abs() * 0.1 };
            (min, max) = (min - pad, max + pad);
        }
        let intervals = target.saturating_sub(1).max(1) as f64;
        let step = nice_step((max - min) / intervals).max(min_step);
        // Whole multiples of the step, one further out where rounding put them just inside the data
        // (3.3 / 0.02 is 165 but 165 * 0.02 is 3.3000000000000003). `+ 0.0` turns -0.0 into 0.0.
        let (mut first, mut last) = ((min / step).floor(), (max / step).ceil());
        if first * step > min {
            first -= 1.0;
        }
        if last * step < max {
            last += 1.0;
        }
        NiceScale { lo: first * step + 0.0, hi: last * step + 0.0, step }
    }

    /// The tick values from `lo` to `hi`, each a whole multiple of `step` (so no rounding error
    /// accumulates, and a tick at zero is exactly zero).
    fn ticks(&self) -> Vec<f64> {
        let (first, last) = ((self.lo / self.step).round(), (self.hi / self.step).round());
        let n = (last - first).max(0.0) as usize;
        (0..=n).map(|i| (first + i as f64) * self.step + 0.0).collect()
    }

    /// `value` as a tick label: as many decimals as the step needs and no more.
    fn label(&self, value: f64) -> String {
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        format!("{value:.decimals$}")
    }
}

/// The smallest of 1, 2, 5 and 10 times a power of ten that is at least `raw` (positive, finite).
fn nice_step(raw: f64) -> f64 {
    // A negative power of ten as a division, so that 0.1 is the double nearest to 1/10.
    let exponent = raw.log10().floor() as i32;
    let magnitude = if exponent >= 0 { 10f64.powi(exponent) } else { 1.0 / 10f64.powi(-exponent) };
    let fraction = raw / magnitude;
    // Compare with a little slack: 0.3 / 3.0 is 0.09999999999999999, which should give 0.1, not 0.2.
    let nice = [1.0, 2.0, 5.0, 10.0].into_iter().find(|&n| fraction <= n * (1.0 + 1e-9)).unwrap_or(10.0);
    nice * magnitude
}

/// The plot area and the scales that map data onto it.
struct Frame {
    /// Optimizer steps.
    x: NiceScale,
    /// Loss.
    y: NiceScale,
}

impl Frame {
    /// Left edge of the plot area.
    const LEFT: f64 = MARGIN_LEFT;
    /// Right edge of the plot area.
    const RIGHT: f64 = WIDTH - MARGIN_RIGHT;
    /// Top edge of the plot area.
    const TOP: f64 = MARGIN_TOP;
    /// Bottom edge of the plot area.
    const BOTTOM: f64 = HEIGHT - MARGIN_BOTTOM;

    /// Where the data point `(x, y)` lands in the picture (y grows downwards in SVG).
    fn to_pixels(&self, x: f64, y: f64) -> (f64, f64) {
        let px = Self::LEFT + (x - self.x.lo) / (self.x.hi - self.x.lo) * (Self::RIGHT - Self::LEFT);
        let py = Self::BOTTOM - (y - self.y.lo) / (self.y.hi - self.y.lo) * (Self::BOTTOM - Self::TOP);
        (px, py)
    }

    /// A polyline's `points` attribute for `series`.
    fn points(&self, series: &[(f64, f64)]) -> String {
        let mut points = String::new();
        for (i, &(x, y)) in series.iter().enumerate() {
            let (px, py) = self.to_pixels(x, y);
            let sep = if i == 0 { "" } else { " " };
            put!(points, "{sep}{px:.1},{py:.1}");
        }
        points
    }
}

/// The frame, grid lines, ticks with their labels, and the two axis labels.
fn draw_axes(svg: &mut String, frame: &Frame) {
    let (left, right, top, bottom) = (Frame::LEFT, Frame::RIGHT, Frame::TOP, Frame::BOTTOM);
    svg.push_str("<g stroke=\"#e5e5e5\" stroke-width=\"1\">\n");
    for x in frame.x.ticks() {
        let (px, _) = frame.to_pixels(x, frame.y.lo);
        put!(svg, "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{bottom}\"/>\n");
    }
    for y in frame.y.ticks() {
        let (_, py) = frame.to_pixels(frame.x.lo, y);
        put!(svg, "<line x1=\"{left}\" y1=\"{py:.1}\" x2=\"{right}\" y2=\"{py:.1}\"/>\n");
    }
    svg.push_str("</g>\n");
    put!(
        svg,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
        right - left,
        bottom - top
    );
    svg.push_str("<g fill=\"#333\">\n");
    for x in frame.x.ticks() {
        let (px, _) = frame.to_pixels(x, frame.y.lo);
        put!(svg, "<line x1=\"{px:.1}\" y1=\"{bottom}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#333\"/>\n", bottom + 5.0);
        put!(svg, "<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", bottom + 18.0, frame.x.label(x));
    }
    for y in frame.y.ticks() {
        let (_, py) = frame.to_pixels(frame.x.lo, y);
        put!(svg, "<line x1=\"{}\" y1=\"{py:.1}\" x2=\"{left}\" y2=\"{py:.1}\" stroke=\"#333\"/>\n", left - 5.0);
        put!(svg, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n", left - 8.0, py + 4.0, frame.y.label(y));
    }
    put!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", (left + right) / 2.0, HEIGHT - 14.0);
    let (lx, ly) = (18.0, (top + bottom) / 2.0);
    put!(svg, "<text x=\"{lx}\" y=\"{ly}\" text-anchor=\"middle\" transform=\"rotate(-90 {lx} {ly})\">loss</text>\n");
    svg.push_str("</g>\n");
}

/// The legend, in one row between the title and the plot area, right-aligned with the plot (so it
/// never hides a curve): a sample of each series' line and its name.
fn draw_legend(svg: &mut String, train_empty: bool, validation_empty: bool) {
    let no_data = |empty: bool| if empty { " (no data)" } else { "" };
    let train = format!("training loss{}", no_data(train_empty));
    let validation = format!("validation loss{}", no_data(validation_empty));
    // Text width is estimated from the character count (12 px sans-serif is under 7 px wide a
    // character on average); the row only needs to stay clear of the right edge.
    let entry_width = |text: &str| SAMPLE_WIDTH + 8.0 + 7.0 * text.chars().count() as f64;
    let y = Frame::TOP - 16.0;
    let mut x = Frame::RIGHT - entry_width(&train) - 20.0 - entry_width(&validation);
    svg.push_str("<g>\n");
    let (x2, text_x) = (x + SAMPLE_WIDTH, x + SAMPLE_WIDTH + 8.0);
    put!(svg, "<line x1=\"{x}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"{TRAIN_COLOUR}\" stroke-width=\"1.5\"/>\n");
    put!(svg, "<text x=\"{text_x}\" y=\"{}\">{train}</text>\n", y + 4.0);
    x += entry_width(&train) + 20.0;
    let (x2, text_x) = (x + SAMPLE_WIDTH, x + SAMPLE_WIDTH + 8.0);
    put!(
        svg,
        "<line x1=\"{x}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"{VALIDATION_COLOUR}\" stroke-width=\"1.5\" \
        stroke-dasharray=\"5,4\"/>\n"
    );
    put!(
        svg,
        "<circle cx=\"{}\" cy=\"{y}\" r=\"3.5\" fill=\"white\" stroke=\"{VALIDATION_COLOUR}\" stroke-width=\"1.5\"/>\n",
        (x + x2) / 2.0
    );
    put!(svg, "<text x=\"{text_x}\" y=\"{}\">{validation}</text>\n</g>\n", y + 4.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal well-formedness check, enough for what this module writes: one root element,
    /// every start tag closed by an end tag of the same name in the right order, attributes as
    /// `name="value"` with no raw `<` or `&` outside an entity, and text free of raw `<` and of
    /// `&` that does not start an entity. Returns the root element's name.
    fn check_well_formed(xml: &str) -> Result<String, String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut root = None;
        let mut rest = xml;
        let mut closed_root = false;
        while !rest.is_empty() {
            let Some(open) = rest.find('<') else {
                check_text(rest)?;
                if !rest.trim().is_empty() && stack.is_empty() {
                    return Err(format!("text outside the root element: {rest:?}"));
                }
                break;
            };
            let (text, tag_start) = rest.split_at(open);
            check_text(text)?;
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root element: {text:?}"));
            }
            let close = tag_start.find('>').ok_or_else(|| "unterminated tag".to_owned())?;
            let tag = &tag_start[1..close];
            rest = &tag_start[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let name = name.trim_end();
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                closed_root |= stack.is_empty();
                continue;
            }
            if tag.starts_with('?') || tag.starts_with('!') {
                return Err(format!("unexpected declaration or comment <{tag}>"));
            }
            let (body, self_closing) = match tag.strip_suffix('/') {
                Some(body) => (body, true),
                None => (tag, false),
            };
            let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
            let name = &body[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || "-_:.".contains(c)) {
                return Err(format!("bad element name in <{tag}>"));
            }
            check_attributes(&body[name_end..])?;
            if stack.is_empty() {
                if closed_root || root.is_some() {
                    return Err(format!("second root element <{name}>"));
                }
                root = Some(name.to_owned());
            }
            if self_closing {
                closed_root |= stack.is_empty();
            } else {
                stack.push(name);
            }
        }
        if let Some(open) = stack.last() {
            return Err(format!("<{open}> is never closed"));
        }
        root.ok_or_else(|| "no root element".to_owned())
    }

    /// Text content: no raw `<` (the caller splits on it) and every `&` starts an entity.
    fn check_text(text: &str) -> Result<(), String> {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            let known = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"];
            if !known.iter().any(|e| entity.starts_with(e)) {
                return Err(format!("bare '&' in {text:?}"));
            }
        }
        Ok(())
    }

    /// ` a="1" b="2"`: every attribute has a name, `=`, and a double-quoted value of valid text.
    fn check_attributes(mut attrs: &str) -> Result<(), String> {
        let mut names = Vec::new();
        loop {
            attrs = attrs.trim_start();
            if attrs.is_empty() {
                return Ok(());
            }
            let eq = attrs.find('=').ok_or_else(|| format!("attribute without '=': {attrs:?}"))?;
            let name = attrs[..eq].trim();
            if name.is_empty() || name.contains(char::is_whitespace) || names.contains(&name) {
                return Err(format!("bad or repeated attribute name {name:?}"));
            }
            names.push(name);
            let value = attrs[eq + 1..].trim_start();
            let value = value.strip_prefix('"').ok_or_else(|| format!("unquoted value of {name}"))?;
            let end = value.find('"').ok_or_else(|| format!("unterminated value of {name}"))?;
            if value[..end].contains('<') {
                return Err(format!("'<' in the value of {name}"));
            }
            check_text(&value[..end])?;
            attrs = &value[end + 1..];
        }
    }

    /// The texts of every `<text>` element, in order.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text").skip(1).filter_map(|s| s.split_once('>')?.1.split_once("</text>")).map(|(t, _)| t).collect()
    }

    #[test]
    fn the_checker_rejects_what_is_not_well_formed() {
        assert_eq!(check_well_formed("<a x=\"1\"><b/>t &amp; u</a>\n"), Ok("a".to_owned()));
        for bad in [
            "<a><b></a></b>",
            "<a>",
            "<a></a><b/>",
            "<a>x & y</a>",
            "<a x=1/>",
            "<a x=\"1\" x=\"2\"/>",
            "<a x=\"<\"/>",
            "text<a/>",
            "<a",
            "",
        ] {
            assert!(check_well_formed(bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn a_curve_is_well_formed_and_has_its_parts() {
        let train: Vec<(u64, f32)> = (1..=100).map(|s| (s, 3.0 / (1.0 + s as f32 / 10.0))).collect();
        let validation = [(25, 1.4), (50, 1.1), (75, 0.95), (100, 0.9)];
        let svg = loss_curve_svg(&train, &validation, "smollm q4_k_m, rank 16");
        assert_eq!(check_well_formed(&svg), Ok("svg".to_owned()));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2, "validation line and its legend sample");
        assert_eq!(svg.matches("<circle").count(), validation.len() + 1, "one marker per point, one in the legend");
        let texts = texts(&svg);
        for expected in ["smollm q4_k_m, rank 16", "step", "loss", "training loss", "validation loss", "0", "100"] {
            assert!(texts.contains(&expected), "no text {expected:?} in {texts:?}");
        }
        assert!(!svg.contains("no data"));
        // 100 training points in the one polyline.
        let train_line = svg.lines().find(|l| l.starts_with("<polyline") && !l.contains("dasharray")).unwrap();
        assert_eq!(train_line.split("points=\"").nth(1).unwrap().split(' ').count(), 100);
    }

    #[test]
    fn the_title_is_escaped() {
        let svg = loss_curve_svg(&[(1, 2.0), (2, 1.0)], &[], "a<b & \"c\" 'd'>\u{7}");
        assert_eq!(check_well_formed(&svg), Ok("svg".to_owned()));
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;</text>"));
        assert!(svg.contains("<title>a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;</title>"));
        assert!(!svg.contains('\u{7}'));
        assert_eq!(escape_xml("plain"), "plain");
    }

    #[test]
    fn non_finite_losses_are_skipped() {
        let train = [(1, 2.0), (2, f32::NAN), (3, f32::INFINITY), (4, 1.0), (5, f32::NEG_INFINITY)];
        let validation = [(2, f32::NAN), (4, 1.5)];
        let svg = loss_curve_svg(&train, &validation, "t");
        assert_eq!(check_well_formed(&svg), Ok("svg".to_owned()));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let train_line = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(train_line.split("points=\"").nth(1).unwrap().split(' ').count(), 2);
        // One validation marker (no dashed line for a single point) plus the legend's.
        assert_eq!(svg.matches("<circle").count(), 2);
        // The y axis spans the finite losses only: 1.0 to 2.0.
        let texts = texts(&svg);
        assert!(texts.contains(&"1.0") && texts.contains(&"2.0"), "{texts:?}");
    }

    #[test]
    fn empty_series_say_no_data() {
        for (train, validation) in [(&[][..], &[][..]), (&[(1, f32::NAN)][..], &[(2, f32::INFINITY)][..])] {
            let svg = loss_curve_svg(train, validation, "empty");
            assert_eq!(check_well_formed(&svg), Ok("svg".to_owned()));
            assert!(texts(&svg).contains(&"no data"));
            assert!(!svg.contains("<polyline"));
        }
        let svg = loss_curve_svg(&[(1, 2.0), (2, 1.5)], &[], "no validation");
        assert_eq!(check_well_formed(&svg), Ok("svg".to_owned()));
        assert!(texts(&svg).contains(&"validation loss (no data)"));
        assert!(texts(&svg).contains(&"training loss"));
        let svg = loss_curve_svg(&[], &[(10, 2.0)], "only validation");
        assert_eq!(check_well_formed(&svg), Ok("svg".to_owned()));
        assert!(texts(&svg).contains(&"training loss (no data)"));
    }

    #[test]
    fn a_single_point_gets_a_non_empty_range() {
        let svg = loss_curve_svg(&[(7, 2.5)], &[], "one step");
        assert_eq!(check_well_formed(&svg), Ok("svg".to_owned()));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "the point and the legend's marker");
        let scale = NiceScale::new(0.0, 0.0, 6, 0.0);
        assert!(scale.lo < 0.0 && scale.hi > 0.0);
    }

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        let cases = [
            (1.0, 1.0),
            (1.2, 2.0),
            (2.0, 2.0),
            (2.1, 5.0),
            (4.9, 5.0),
            (5.1, 10.0),
            (0.3 / 3.0, 0.1),
            (0.013, 0.02),
            (0.0004, 0.0005),
            (7.0, 10.0),
            (120.0, 200.0),
            (19_999.0, 20_000.0),
        ];
        for (raw, nice) in cases {
            let got = nice_step(raw);
            assert!((got - nice).abs() <= nice * 1e-12, "nice_step({raw}) = {got}, expected {nice}");
        }
    }

    #[test]
    fn nice_scales_cover_the_data_with_round_ticks() {
        let scale = NiceScale::new(1.0, 100.0, 6, 1.0);
        assert_eq!((scale.lo, scale.hi, scale.step), (0.0, 100.0, 20.0));
        assert_eq!(scale.ticks(), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(scale.label(40.0), "40");

        let scale = NiceScale::new(0.83, 2.71, 6, 0.0);
        assert_eq!(scale.step, 0.5);
        assert_eq!(scale.ticks(), [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
        assert_eq!(scale.label(1.0), "1.0");

        let scale = NiceScale::new(2.302, 2.318, 6, 0.0);
        assert!((scale.step - 0.005).abs() < 1e-15);
        let labels: Vec<_> = scale.ticks().iter().map(|&t| scale.label(t)).collect();
        assert_eq!(labels, ["2.300", "2.305", "2.310", "2.315", "2.320"]);

        // Optimizer steps are whole numbers: never a tick at 0.5.
        let scale = NiceScale::new(1.0, 3.0, 6, 1.0);
        assert_eq!(scale.step, 1.0);
        assert_eq!(scale.ticks(), [1.0, 2.0, 3.0]);

        // Negative ranges and zero crossings give no "-0".
        let scale = NiceScale::new(-0.7, 0.2, 6, 0.0);
        let labels: Vec<_> = scale.ticks().iter().map(|&t| scale.label(t)).collect();
        assert!(labels.contains(&"0.0".to_owned()) && !labels.iter().any(|l| l == "-0.0"), "{labels:?}");

        // Many ranges: the ticks cover the data, are evenly spaced and not too many.
        for (min, max) in [(0.0, 1.0), (3.3, 3.4), (1e-6, 5e-6), (10.0, 12_345.0), (-5.0, 5.0), (0.1, 0.1000001)] {
            let scale = NiceScale::new(min, max, 6, 0.0);
            let ticks = scale.ticks();
            assert!(scale.lo <= min && scale.hi >= max, "{scale:?} does not cover {min}..{max}");
            assert!((3..=12).contains(&ticks.len()), "{} ticks for {min}..{max}", ticks.len());
            assert!((ticks[ticks.len() - 1] - scale.hi).abs() <= scale.step * 1e-9);
        }
    }
}
