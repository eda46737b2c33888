//! The report as an A4 PDF, in DejaVu Sans (its glyphs cover Vietnamese; krilla embeds only the
//! glyphs used). The pages are laid out first, as lines of text and rules at places measured
//! from the font, then drawn: a table that does not fit goes on over the next page, under its
//! header again.

use std::sync::{Arc, OnceLock};

use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point};
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::text::{Font, TextDirection};
use krilla::Document;
use skrifa::prelude::{LocationRef, Size};
use skrifa::{FontRef, MetadataProvider};

use crate::serve::report::layout::{Layout, Table};

const WIDTH: f32 = 595.28;
const HEIGHT: f32 = 841.89;
const MARGIN: f32 = 40.0;
const BOTTOM: f32 = HEIGHT - MARGIN - 14.0;
const PAD: f32 = 3.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Face {
    Regular,
    Bold,
}

impl Face {
    fn bytes(self) -> &'static [u8] {
        match self {
            Face::Regular => dejavu::sans::regular(),
            Face::Bold => dejavu::sans::bold(),
        }
    }

    fn font(self) -> Font {
        static FONTS: OnceLock<[Font; 2]> = OnceLock::new();
        let fonts = FONTS.get_or_init(|| {
            let load = |face: Face| Font::new(Arc::new(face.bytes().to_vec()).into(), 0).expect("DejaVu Sans loads");
            [load(Face::Regular), load(Face::Bold)]
        });
        fonts[self as usize].clone()
    }

    /// How wide `text` is at `size` points.
    fn width(self, text: &str, size: f32) -> f32 {
        let font = FontRef::new(self.bytes()).expect("DejaVu Sans parses");
        let (charmap, metrics) = (font.charmap(), font.glyph_metrics(Size::new(size), LocationRef::default()));
        text.chars().filter_map(|c| charmap.map(c)).filter_map(|g| metrics.advance_width(g)).sum()
    }
}

/// One thing drawn on a page.
enum Mark {
    Text { x: f32, y: f32, face: Face, size: f32, grey: bool, text: String },
    Rule { x: f32, y: f32, width: f32 },
}

/// Lays the marks out, page by page.
struct Pages {
    pages: Vec<Vec<Mark>>,
    y: f32,
}

impl Pages {
    fn new() -> Pages {
        Pages { pages: vec![Vec::new()], y: MARGIN }
    }

    fn mark(&mut self, mark: Mark) {
        self.pages.last_mut().expect("a page").push(mark);
    }

    /// Room for `height` more, or a new page.
    fn room(&mut self, height: f32) -> bool {
        if self.y + height > BOTTOM {
            self.pages.push(Vec::new());
            self.y = MARGIN;
            return false;
        }
        true
    }

    /// A paragraph, wrapped at the words to the page's width.
    fn paragraph(&mut self, text: &str, face: Face, size: f32, grey: bool) {
        for line in wrap(text, face, size, WIDTH - 2.0 * MARGIN) {
            self.room(size * 1.4);
            self.y += size * 1.4;
            self.mark(Mark::Text { x: MARGIN, y: self.y, face, size, grey, text: line });
        }
    }

    fn table(&mut self, table: &Table, layout: &Layout) {
        const SIZE: f32 = 7.5;
        self.room(SIZE * 8.0);
        self.y += 8.0;
        self.paragraph(&table.title, Face::Bold, 10.5, false);
        if table.rows.is_empty() {
            self.paragraph(&table.none, Face::Regular, SIZE + 1.0, true);
            return;
        }
        let rows: Vec<Vec<String>> =
            table.rows.iter().map(|r| r.iter().map(|c| c.shown(layout.language)).collect()).collect();
        let numeric: Vec<bool> =
            (0..table.header.len()).map(|i| table.rows.iter().all(|r| r[i].is_numeric())).collect();
        let widths = column_widths(table, &rows, SIZE);
        let header: Vec<Vec<String>> =
            table.header.iter().zip(&widths).map(|(h, w)| wrap(h, Face::Bold, SIZE, w - 2.0 * PAD)).collect();
        let header_lines = header.iter().map(Vec::len).max().unwrap_or(1) as f32;
        let draw_header = |pages: &mut Pages| {
            let mut x = MARGIN;
            for ((lines, w), numeric) in header.iter().zip(&widths).zip(&numeric) {
                for (i, line) in lines.iter().enumerate() {
                    let left = if *numeric { x + w - PAD - Face::Bold.width(line, SIZE) } else { x + PAD };
                    let y = pages.y + SIZE * 1.3 * (i as f32 + 1.0);
                    pages.mark(Mark::Text {
                        x: left,
                        y,
                        face: Face::Bold,
                        size: SIZE,
                        grey: false,
                        text: line.clone(),
                    });
                }
                x += w;
            }
            pages.y += SIZE * 1.3 * header_lines + 3.0;
            pages.mark(Mark::Rule { x: MARGIN, y: pages.y, width: WIDTH - 2.0 * MARGIN });
        };
        self.room(SIZE * 1.3 * (header_lines + 2.0));
        draw_header(self);
        for row in &rows {
            if !self.room(SIZE * 1.6) {
                draw_header(self);
            }
            self.y += SIZE * 1.6;
            let mut x = MARGIN;
            for ((text, w), numeric) in row.iter().zip(&widths).zip(&numeric) {
                let text = fit(text, Face::Regular, SIZE, w - 2.0 * PAD);
                let left = if *numeric { x + w - PAD - Face::Regular.width(&text, SIZE) } else { x + PAD };
                self.mark(Mark::Text { x: left, y: self.y, face: Face::Regular, size: SIZE, grey: false, text });
                x += w;
            }
        }
        self.y += 3.0;
        self.mark(Mark::Rule { x: MARGIN, y: self.y, width: WIDTH - 2.0 * MARGIN });
    }
}

/// Each column as wide as its widest cell (a header may wrap to its longest word), shrunk to
/// the page's width by taking from the widest columns first.
fn column_widths(table: &Table, rows: &[Vec<String>], size: f32) -> Vec<f32> {
    let mut widths: Vec<f32> = (0..table.header.len())
        .map(|i| {
            let cells = rows.iter().map(|r| Face::Regular.width(&r[i], size)).fold(0.0, f32::max);
            let word = table.header[i].split(' ').map(|w| Face::Bold.width(w, size)).fold(0.0, f32::max);
            cells.max(word) + 2.0 * PAD
        })
        .collect();
    let available = WIDTH - 2.0 * MARGIN;
    let spare = available - widths.iter().sum::<f32>();
    if spare > 0.0 {
        // The rest goes to the text columns, for the headers to wrap less.
        let n = widths.len() as f32;
        widths.iter_mut().for_each(|w| *w += spare / n);
        return widths;
    }
    let mut excess = -spare;
    while excess > 0.5 {
        let widest = widths.iter().cloned().fold(0.0, f32::max);
        let second = widths.iter().cloned().filter(|w| *w < widest).fold(0.0, f32::max);
        let count = widths.iter().filter(|w| **w == widest).count() as f32;
        let cut = ((widest - second).max(1.0) * count).min(excess);
        widths.iter_mut().filter(|w| **w == widest).for_each(|w| *w -= cut / count);
        excess -= cut;
    }
    widths
}

/// The words of `text` in lines no wider than `width`.
fn wrap(text: &str, face: Face, size: f32, width: f32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(line) if face.width(&format!("{line} {word}"), size) <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// `text`, cut with an ellipsis if it is wider than `width`.
fn fit(text: &str, face: Face, size: f32, width: f32) -> String {
    if face.width(text, size) <= width {
        return text.to_owned();
    }
    let mut cut: String = text.to_owned();
    while !cut.is_empty() && face.width(&format!("{cut}…"), size) > width {
        cut.pop();
    }
    format!("{cut}…")
}

pub fn write(layout: &Layout) -> Result<Vec<u8>, String> {
    let mut pages = Pages::new();
    pages.paragraph(&layout.title, Face::Bold, 15.0, false);
    pages.paragraph(&layout.subtitle, Face::Regular, 9.0, true);
    pages.y += 6.0;
    for line in &layout.headline {
        pages.paragraph(line, Face::Regular, 10.0, false);
    }
    for table in &layout.tables {
        pages.table(table, layout);
    }
    let count = pages.pages.len();
    let mut document = Document::new();
    for (number, marks) in pages.pages.into_iter().enumerate() {
        let settings = PageSettings::from_wh(WIDTH, HEIGHT).expect("A4 is a page size");
        let mut page = document.start_page_with(settings);
        let mut surface = page.surface();
        let footer = format!("index766 · {} · {}/{count}", layout.title, number + 1);
        let footer = Mark::Text {
            x: MARGIN,
            y: HEIGHT - MARGIN + 8.0,
            face: Face::Regular,
            size: 7.0,
            grey: true,
            text: footer,
        };
        for mark in marks.iter().chain([&footer]) {
            match mark {
                Mark::Text { x, y, face, size, grey, text } => {
                    let shade = if *grey { 100 } else { 29 };
                    surface.set_fill(Some(Fill {
                        paint: rgb::Color::new(shade, shade + 10, shade + 22).into(),
                        ..Default::default()
                    }));
                    surface.draw_text(Point::from_xy(*x, *y), face.font(), *size, text, false, TextDirection::Auto);
                }
                Mark::Rule { x, y, width } => {
                    let mut path = PathBuilder::new();
                    path.move_to(*x, *y);
                    path.line_to(x + width, *y);
                    let Some(path) = path.finish() else { continue };
                    surface.set_fill(None);
                    let paint = rgb::Color::new(190, 198, 206).into();
                    surface.set_stroke(Some(Stroke { paint, width: 0.6, ..Default::default() }));
                    surface.draw_path(&path);
                    surface.set_stroke(None);
                }
            }
        }
        surface.finish();
        page.finish();
    }
    document.finish().map_err(|e| format!("the PDF could not be written: {e:?}"))
}
