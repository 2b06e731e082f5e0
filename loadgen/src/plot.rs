//! The SVG plot (`--plot`): events per second sent and acked, alarms per second sent, acked
//! and observed on the output, and alarm latency (p50, p99, max of the alarms intended in
//! each second), one panel each over the run's seconds. plotters, SVG backend only.

use crate::report::{Report, SecondRow};
use plotters::prelude::*;
use std::path::Path;

const WIDTH: u32 = 1100;
const PANEL_HEIGHT: u32 = 300;

/// A series: name, colour, value per row.
type Series<'a> = (&'a str, RGBColor, fn(&SecondRow) -> f64);

/// Draws the plot of `report` into `path`.
pub fn write_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    let svg = render_svg(report)?;
    std::fs::write(path, svg)?;
    Ok(())
}

/// The plot of `report` as SVG text.
pub fn render_svg(report: &Report) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, PANEL_HEIGHT * 3)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((3, 1));
        let rows = &report.timeline;
        let title = format!(
            "loadgen {}: {} gateways, {} points",
            report.scenario.name(),
            report.gateways,
            report.points
        );
        let observed = rows.iter().any(|r| r.alarms_observed.is_some());
        let events: Vec<Series> = vec![
            ("events sent/s", BLUE, |r| r.events_sent as f64),
            ("events acked/s", GREEN, |r| r.events_acked as f64),
        ];
        let mut alarms: Vec<Series> = vec![
            ("alarms sent/s", BLUE, |r| r.alarms_sent as f64),
            ("alarms acked/s", GREEN, |r| r.alarms_acked as f64),
        ];
        if observed {
            alarms.push(("alarms on output/s", MAGENTA, |r| {
                r.alarms_observed.unwrap_or(0) as f64
            }));
        }
        let latency: Vec<Series> = vec![
            ("alarm latency p50 ms", GREEN, |r| r.alarm_latency_p50_ms),
            ("alarm latency p99 ms", RGBColor(230, 140, 0), |r| {
                r.alarm_latency_p99_ms
            }),
            ("alarm latency max ms", RED, |r| r.alarm_latency_max_ms),
        ];
        panel(&panels[0], &title, "events/s", rows, &events)?;
        panel(&panels[1], "alarms", "alarms/s", rows, &alarms)?;
        panel(
            &panels[2],
            "alarm latency (by intended send second)",
            "ms",
            rows,
            &latency,
        )?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e:?}")
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    rows: &[SecondRow],
    series: &[Series],
) -> anyhow::Result<()> {
    let x_max = rows.len().max(1) as f64;
    let y_max = rows
        .iter()
        .flat_map(|r| series.iter().map(move |(_, _, f)| f(r)))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the schedule start")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    for &(name, color, f) in series {
        // Each second's value is drawn at its middle.
        let points = rows.iter().map(|r| (r.t as f64 + 0.5, f(r)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}
