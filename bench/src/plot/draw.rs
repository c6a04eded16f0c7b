//! One growth curve as SVG: named series of (x, y) points on logarithmic axes, drawn with
//! plotters' SVG backend. Text is written as SVG `<text>` (no font is read or needed here).

use plotters::prelude::*;

/// A named series of points; only points with both coordinates above zero can be drawn on
/// logarithmic axes, the others are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug)]
pub struct Chart {
    pub title: String,
    /// A line of small print under the plot (where it was measured).
    pub note: String,
    pub x: String,
    pub y: String,
    pub series: Vec<Series>,
}

const SIZE: (u32, u32) = (800, 500);
const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// `chart` as an SVG document; an error if it has no point to draw.
pub fn svg(chart: &Chart) -> anyhow::Result<String> {
    let series: Vec<Series> = chart
        .series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            points: s.points.iter().copied().filter(|&p| drawable(p)).collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let (Some(x), Some(y)) = (span(all().map(|p| p.0)), span(all().map(|p| p.1))) else {
        anyhow::bail!("{}: no point to draw", chart.title);
    };
    let mut out = String::new();
    draw(chart, &series, x, y, &mut out).map_err(|e| anyhow::anyhow!("{}: {e}", chart.title))?;
    Ok(out)
}

fn drawable((x, y): (f64, f64)) -> bool {
    x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0
}

/// The axis range holding `values`, widened so that one value or equal values still span.
fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold(None, |r: Option<(f64, f64)>, v| {
        Some(r.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
    })?;
    Some((lo / 1.5, hi * 1.5))
}

fn draw(
    chart: &Chart,
    series: &[Series],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    out: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(SIZE.1 - 24);
    let mut plot = ChartBuilder::on(&upper)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
    plot.configure_mesh()
        .x_desc(&chart.x)
        .y_desc(&chart.y)
        .max_light_lines(0)
        .x_labels(12)
        .y_labels(12)
        .x_label_formatter(&|v| label(*v))
        .y_label_formatter(&|v| label(*v))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        plot.draw_series(LineSeries::new(
            s.points.iter().copied(),
            color.stroke_width(2),
        ))?
        .label(&s.name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        plot.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    lower.draw(&Text::new(
        chart.note.as_str(),
        (15, 4),
        ("sans-serif", 11).into_font().color(&BLACK.mix(0.7)),
    ))?;
    root.present()?;
    Ok(())
}

/// An axis label: three significant digits at most, no trailing zeros.
pub fn label(v: f64) -> String {
    if v >= 100.0 {
        return format!("{v:.0}");
    }
    let decimals = if v >= 10.0 {
        1
    } else if v >= 1.0 {
        2
    } else {
        3
    };
    let text = format!("{v:.decimals$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() {
        "0".into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short() {
        let cases = [
            (10_000.0, "10000"),
            (150.4, "150"),
            (12.5, "12.5"),
            (2.0, "2"),
            (0.25, "0.25"),
            (0.001_2, "0.001"),
            (0.000_1, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(label(v), want, "{v}");
        }
    }

    #[test]
    fn a_chart_without_drawable_points_is_refused() {
        let chart = Chart {
            title: "empty".into(),
            note: String::new(),
            x: "x".into(),
            y: "y".into(),
            series: vec![Series {
                name: "zeros".into(),
                points: vec![(0.0, 1.0), (1.0, 0.0), (f64::NAN, 1.0)],
            }],
        };
        let err = svg(&chart).expect_err("nothing to draw").to_string();
        assert!(err.contains("empty: no point to draw"), "{err}");
    }
}
