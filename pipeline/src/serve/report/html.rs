//! The report as one printable HTML page (A4, no scripts, nothing fetched).

use crate::serve::report::layout::{Layout, Table};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "\
@page { size: A4; margin: 14mm 12mm; }
body { font-family: 'DejaVu Sans', 'Noto Sans', Arial, sans-serif; color: #1d2733; font-size: 11pt; margin: 0 auto; max-width: 190mm; }
h1 { font-size: 16pt; margin: 0 0 2mm; } h2 { font-size: 12pt; margin: 6mm 0 2mm; color: #0b5394; }
.subtitle { color: #5b6673; margin-bottom: 4mm; } .headline { font-size: 12pt; margin: 1mm 0; }
table { border-collapse: collapse; width: 100%; page-break-inside: auto; } tr { page-break-inside: avoid; }
th, td { border-bottom: 1px solid #d5dbe1; padding: 1.2mm 2mm; text-align: left; vertical-align: top; }
th { background: #eef2f6; font-weight: 600; } td.num, th.num { text-align: right; white-space: nowrap; }
.none { color: #5b6673; font-style: italic; }
";

fn table(out: &mut String, table: &Table, layout: &Layout) {
    out.push_str(&format!("<h2>{}</h2>\n", escape(&table.title)));
    if table.rows.is_empty() {
        out.push_str(&format!("<p class=\"none\">{}</p>\n", escape(&table.none)));
        return;
    }
    let numeric: Vec<bool> = (0..table.header.len()).map(|i| table.rows.iter().all(|r| r[i].is_numeric())).collect();
    let class = |i: usize| if numeric[i] { " class=\"num\"" } else { "" };
    out.push_str("<table>\n<thead><tr>");
    for (i, name) in table.header.iter().enumerate() {
        out.push_str(&format!("<th{}>{}</th>", class(i), escape(name)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            out.push_str(&format!("<td{}>{}</td>", class(i), escape(&cell.shown(layout.language))));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

pub fn write(layout: &Layout) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n<h1>{}</h1>\n<div class=\"subtitle\">{}</div>\n",
        layout.language.tag(),
        escape(&layout.title),
        escape(&layout.title),
        escape(&layout.subtitle)
    );
    for line in &layout.headline {
        out.push_str(&format!("<p class=\"headline\">{}</p>\n", escape(line)));
    }
    for t in &layout.tables {
        table(&mut out, t, layout);
    }
    out.push_str("</body></html>\n");
    out
}
