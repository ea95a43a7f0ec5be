//! The benchmarks' one plot: bar groups side by side as an SVG, values printed over the
//! bars (the library's benches and knic-vhost-bench draw with it).

use std::fmt::Write as _;

/// One chart group: a label and its bars (name, value, colour).
#[derive(Debug)]
pub struct BarGroup<'a> {
    pub label: &'a str,
    pub bars: Vec<(&'a str, f64, &'a str)>,
}

/// Bar groups side by side, values printed over the bars.
pub fn bar_chart(title: &str, subtitle: &str, groups: &[BarGroup<'_>]) -> String {
    const BAR: f64 = 80.0;
    const GAP: f64 = 30.0;
    let group_width = |g: &BarGroup<'_>| g.bars.len() as f64 * (BAR + GAP) + 40.0;
    let width = 20.0 + groups.iter().map(group_width).sum::<f64>();
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"310\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"10\" y=\"20\" font-size=\"14\">{title}</text>\
         <text x=\"10\" y=\"38\" fill=\"#555\">{subtitle}</text>",
        width.max(640.0)
    );
    let mut x = 20.0;
    for group in groups {
        let max = group.bars.iter().map(|b| b.1).fold(1e-9, f64::max);
        let _ = write!(s, "<text x=\"{x}\" y=\"62\">{}</text>", group.label);
        for (i, (name, value, colour)) in group.bars.iter().enumerate() {
            let height = 180.0 * value / max;
            let bx = x + i as f64 * (BAR + GAP);
            let _ = write!(
                s,
                "<rect x=\"{bx}\" y=\"{}\" width=\"{BAR}\" height=\"{height}\" fill=\"{colour}\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{value:.2}</text>\
                 <text x=\"{}\" y=\"290\" text-anchor=\"middle\">{name}</text>",
                265.0 - height,
                bx + BAR / 2.0,
                260.0 - height,
                bx + BAR / 2.0
            );
        }
        x += group_width(group);
    }
    s.push_str("</svg>\n");
    s
}
