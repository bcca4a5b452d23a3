//! SVG line charts of the report, written by hand (a few paths and labels).

use super::*;

pub(super) struct Chart<'a> {
    pub(super) title: &'a str,
    pub(super) x_label: &'a str,
    pub(super) y_label: &'a str,
    pub(super) x_ticks: &'a [(f64, String)],
    pub(super) x_range: (f64, f64),
    /// Each series: name, points (x in chart units, y > 0 plotted on a log scale).
    pub(super) series: &'a [(String, Vec<(f64, f64)>)],
    /// Indices of series drawn dashed.
    pub(super) dashed: &'a [usize],
}

pub(super) const COLORS: [&str; 6] = [
    "#7f7f7f", "#bcbd22", "#1f77b4", "#2ca02c", "#d62728", "#ff7f0e",
];

pub(super) fn color_of(name: &str) -> &'static str {
    let client = name.split_whitespace().next().unwrap_or(name);
    ALL_CLIENTS
        .iter()
        .position(|c| *c == client)
        .and_then(|i| COLORS.get(i))
        .copied()
        .unwrap_or("#000000")
}

pub(super) fn svg_message(msg: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"60\">\
         <text x=\"10\" y=\"30\" font-family=\"sans-serif\" font-size=\"14\">{msg}</text></svg>\n"
    )
}

pub(super) fn line_chart(c: &Chart<'_>) -> String {
    let (w, h) = (860.0, 480.0);
    let (left, right, top, bottom) = (80.0, 220.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let ys: Vec<f64> = c
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .filter(|y| *y > 0.0)
        .collect();
    if ys.is_empty() {
        return svg_message("no data");
    }
    let ymin = ys
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor();
    let mut ymax = ys.iter().copied().fold(0.0, f64::max).log10().ceil();
    if ymax <= ymin {
        ymax = ymin + 1.0;
    }
    let (x0, x1) = c.x_range;
    let px = |x: f64| left + (x - x0) / (x1 - x0).max(1e-9) * pw;
    let py = |y: f64| top + ph - (y.max(1e-12).log10() - ymin) / (ymax - ymin) * ph;
    let mut s = String::new();
    let _w = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>",
        left + pw / 2.0,
        xml(c.title)
    );
    // Y grid: decades, and 2× and 5× within.
    let mut d = ymin;
    while d <= ymax + 1e-9 {
        for (m, major) in [(1.0, true), (2.0, false), (5.0, false)] {
            let v = 10f64.powf(d) * m;
            if v.log10() > ymax + 1e-9 {
                continue;
            }
            let y = py(v);
            let _w = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/>",
                left + pw,
                if major { "#ccc" } else { "#eee" }
            );
            let _w = writeln!(
                s,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left - 6.0,
                y + 4.0,
                fmt_si(Some(v)).replace(' ', "")
            );
        }
        d += 1.0;
    }
    for (x, label) in c.x_ticks {
        let xp = px(*x);
        let _w = writeln!(
            s,
            "<line x1=\"{xp:.1}\" x2=\"{xp:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#eee\"/>\
             <text x=\"{xp:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            top + ph,
            top + ph + 18.0,
            xml(label)
        );
    }
    let _w = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        left + pw / 2.0,
        h - 18.0,
        xml(c.x_label),
        top + ph / 2.0,
        xml(c.y_label)
    );
    for (i, (name, pts)) in c.series.iter().enumerate() {
        let color = color_of(name);
        let dash = if c.dashed.contains(&i) {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let path: Vec<String> = pts
            .iter()
            .filter(|(_, y)| *y > 0.0)
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _w = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            path.join(" ")
        );
        for p in &path {
            if let Some((x, y)) = p.split_once(',') {
                let _w = writeln!(
                    s,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{color}\"/>"
                );
            }
        }
        let ly = top + 14.0 + i as f64 * 18.0;
        let lx = left + pw + 16.0;
        let _w = writeln!(
            s,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            xml(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

pub(super) fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
