//! The report as an XLSX workbook: a summary sheet (title and headline), then one sheet per
//! table, its figures as numbers (formatted, not turned into text) so they can be summed.

use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};

use crate::serve::report::layout::{Cell, Layout, Table};

/// `0.00`, `+0.00;-0.00;0.00`: a cell's number format.
fn number_format(decimals: usize, signed: bool) -> String {
    let plain = match decimals {
        0 => "0".to_owned(),
        n => format!("0.{}", "0".repeat(n)),
    };
    match signed {
        true => format!("+{plain};-{plain};{plain}"),
        false => plain,
    }
}

fn write_table(sheet: &mut Worksheet, table: &Table) -> Result<(), XlsxError> {
    let bold = Format::new().set_bold();
    sheet.write_string_with_format(0, 0, &table.title, &bold)?;
    if table.rows.is_empty() {
        sheet.write_string(2, 0, &table.none)?;
        return Ok(());
    }
    for (col, name) in table.header.iter().enumerate() {
        sheet.write_string_with_format(2, col as u16, name, &bold)?;
        sheet.set_column_width(col as u16, (name.chars().count() as f64 + 2.0).max(12.0))?;
    }
    for (i, row) in table.rows.iter().enumerate() {
        let r = 3 + i as u32;
        for (col, cell) in row.iter().enumerate() {
            let col = col as u16;
            match cell {
                Cell::Text(text) => {
                    sheet.write_string(r, col, text)?;
                }
                Cell::Number { value, decimals } => {
                    sheet.write_number_with_format(
                        r,
                        col,
                        *value,
                        &Format::new().set_num_format(number_format(*decimals, false)),
                    )?;
                }
                Cell::Change { value, decimals } => {
                    sheet.write_number_with_format(
                        r,
                        col,
                        *value,
                        &Format::new().set_num_format(number_format(*decimals, true)),
                    )?;
                }
                Cell::Whole(n) => {
                    sheet.write_number(r, col, *n as f64)?;
                }
                Cell::Empty => {}
            }
        }
    }
    Ok(())
}

pub fn write(layout: &Layout) -> Result<Vec<u8>, XlsxError> {
    let mut workbook = Workbook::new();
    let summary = workbook.add_worksheet();
    summary.set_name(layout.language.say("report.sheet_summary", &[]))?;
    summary.write_string_with_format(0, 0, &layout.title, &Format::new().set_bold().set_font_size(14))?;
    summary.write_string(1, 0, &layout.subtitle)?;
    for (i, line) in layout.headline.iter().enumerate() {
        summary.write_string(3 + i as u32, 0, line)?;
    }
    for table in &layout.tables {
        let sheet = workbook.add_worksheet();
        sheet.set_name(&table.sheet)?;
        write_table(sheet, table)?;
    }
    workbook.save_to_buffer()
}
