//! `--plot OUT.svg RESULT.json...`: throughput over time and the latency percentile spectrum
//! of one or more results, side by side, as SVG.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::report;

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("cannot draw the plot: {e}")
}

/// Percentile → x position: -log10(1 - p/100), so 0, 90, 99, 99.9 ... are evenly spaced.
fn percentile_x(p: f64) -> f64 {
    -(1.0 - p / 100.0).max(1e-6).log10()
}

pub fn plot_files(inputs: &[PathBuf], out: &Path) -> Result<(), String> {
    if inputs.is_empty() {
        return Err("--plot needs one or more JSON result files (written with --json)".into());
    }
    let mut results = Vec::new();
    for p in inputs {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let r: report::Result = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a kvbench JSON result: {e}", p.display()))?;
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string());
        results.push((name, r));
    }
    draw(&results, out)
}

/// Per-second throughput; the last, partial second is scaled by its real length (and left
/// out if it is only the last replies trickling in, under 0.1 s).
fn throughput_points(r: &report::Result) -> Vec<(f64, f64)> {
    r.series
        .iter()
        .filter_map(|s| {
            let len = (r.elapsed_secs - s.second as f64).min(1.0);
            (len >= 0.1).then(|| (s.second as f64 + len / 2.0, s.requests as f64 / len))
        })
        .collect()
}

fn draw(results: &[(String, report::Result)], out: &Path) -> Result<(), String> {
    let root = SVGBackend::new(out, (1300, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(640);
    let right = right.margin(0, 0, 0, 20);

    // Throughput over time.
    let points: Vec<Vec<(f64, f64)>> = results.iter().map(|(_, r)| throughput_points(r)).collect();
    let max_t = points
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(1.0f64, f64::max)
        .ceil();
    let max_y = points.iter().flatten().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("Throughput", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_t, 0f64..max_y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("requests/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (i, ((name, _), pts)) in results.iter().zip(&points).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    // Latency percentile spectrum (log latency over -log10(1 - q)).
    let spectra: Vec<Vec<(f64, f64)>> = results
        .iter()
        .map(|(_, r)| {
            r.spectrum_us
                .iter()
                .filter(|(p, _)| *p < 100.0)
                .map(|&(p, v)| (percentile_x(p), v.max(0.1)))
                .collect()
        })
        .collect();
    let max_x = spectra
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(1.0f64, f64::max)
        .ceil();
    let lat_hi = spectra.iter().flatten().map(|p| p.1).fold(1.0f64, f64::max) * 2.0;
    let lat_lo = spectra
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(lat_hi / 10.0)
        / 2.0;
    let mut chart = ChartBuilder::on(&right)
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_x, (lat_lo..lat_hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_labels(max_x as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            let s = format!("{p:.4}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            format!("{s}%")
        })
        .draw()
        .map_err(err)?;
    for (i, ((name, _), pts)) in results.iter().zip(&spectra).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_positions() {
        assert!(percentile_x(0.0).abs() < 1e-9);
        assert!((percentile_x(90.0) - 1.0).abs() < 1e-9);
        assert!((percentile_x(99.9) - 3.0).abs() < 1e-6);
    }
}
