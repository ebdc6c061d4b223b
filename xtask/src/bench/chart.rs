//! benchmarks/cost.svg: every server's cost per unit in every saturation scenario, as a
//! multiple of the QUIC floor's cost in that scenario (the floor is the line at 1.0, the limit; in the raw
//! scenario the limit is the bare AF_XDP echo), with the
//! absolute median cost written above each bar.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::report::Results;
use super::Level;

const COLORS: [RGBColor; 6] = [
    RGBColor(0x44, 0x44, 0x44), // quinn
    RGBColor(0x1f, 0x77, 0xb4), // socket
    RGBColor(0x2c, 0xa0, 0x2c), // io_uring
    RGBColor(0xff, 0x7f, 0x0e), // xdp-skb
    RGBColor(0xd6, 0x27, 0x28), // xdp-driver
    RGBColor(0x94, 0x67, 0xbd), // other
];

pub fn draw(results: &Results, path: &Path) -> Result<()> {
    let servers: Vec<&str> = results
        .servers
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "floor" && *n != "bare-afxdp")
        .collect();
    let scenarios: Vec<&str> = results
        .scenarios
        .iter()
        .filter(|s| s.level == Level::Saturation && s.generator == "client" && s.has_limit())
        .map(|s| s.name.as_str())
        .collect();
    let value = |sc: &str, sv: &str| {
        results
            .summaries
            .iter()
            .find(|s| s.scenario == sc && s.server == sv)
            .and_then(|s| s.x_floor)
    };
    let ymax = scenarios
        .iter()
        .flat_map(|sc| servers.iter().filter_map(move |sv| value(sc, sv)))
        .fold(2.0f64, f64::max)
        * 1.5;
    let width = 160 + 150 * scenarios.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let n = scenarios.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "at saturation: server CPU per unit, as a multiple of the QUIC floor (raw: of a bare AF_XDP echo); lower is better",
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, 0.0..ymax)
        .map_err(|e| anyhow!("{e}"))?;
    let names = scenarios.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(scenarios.len() * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < names.len() {
                names[i].to_string()
            } else {
                String::new()
            }
        })
        .y_desc("x floor cost")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let k = servers.len().max(1) as f64;
    let bar = 0.8 / k;
    for (j, sv) in servers.iter().enumerate() {
        let color = COLORS[j.min(COLORS.len() - 1)];
        let bars: Vec<(f64, f64)> = scenarios
            .iter()
            .enumerate()
            .filter_map(|(i, sc)| value(sc, sv).map(|v| (i as f64 + 0.1 + bar * j as f64, v)))
            .collect();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(x, v)| Rectangle::new([(x, 0.0), (x + bar * 0.9, v)], color.filled())),
            )
            .map_err(|e| anyhow!("{e}"))?
            .label(*sv)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart
            .draw_series(bars.iter().map(|&(x, v)| {
                Text::new(
                    format!("{v:.1}"),
                    (x, v + ymax * 0.01),
                    ("sans-serif", 10).into_font(),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 1.0), (n, 1.0)],
            ShapeStyle::from(&BLACK).stroke_width(2),
        ))
        .map_err(|e| anyhow!("{e}"))?
        .label("the limit: QUIC floor (quinn-proto in memory); raw: bare AF_XDP echo")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
