//! Aligned text tables for the operator commands: a header row, then rows, columns separated
//! by two spaces, numeric-looking columns aligned right.

use std::fmt;

/// A table being filled row by row; `Display` renders it.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        widths
    }

    /// A column is right-aligned when every non-blank cell in it reads as a number ("12",
    /// "0.5", "3.1%", "12 ms", "-").
    fn numeric(&self, column: usize) -> bool {
        let mut any = false;
        for row in &self.rows {
            let cell = row[column].as_str();
            if cell.is_empty() || cell == "-" {
                continue;
            }
            any = true;
            let number = cell
                .trim_end_matches(" ms")
                .trim_end_matches('%')
                .trim_end_matches('s');
            if number.parse::<f64>().is_err() {
                return false;
            }
        }
        any
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        let right: Vec<bool> = (0..self.header.len()).map(|c| self.numeric(c)).collect();
        let last = self.header.len().saturating_sub(1);
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                let pad = widths[column].saturating_sub(cell.chars().count());
                if right[column] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    // No trailing blanks after the last column.
                    if column != last {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns are as wide as their widest cell; numbers align right, text left.
    #[test]
    fn aligns_columns() {
        let mut table = Table::new(&["ID", "RPS", "NOTE"]);
        table.row(vec!["e1".into(), "1.5".into(), "fine".into()]);
        table.row(vec!["long-id".into(), "12.25".into(), "-".into()]);
        table.row(vec!["e3".into(), "-".into()]);
        assert_eq!(
            table.to_string(),
            "ID         RPS  NOTE\n\
             e1         1.5  fine\n\
             long-id  12.25  -\n\
             e3           -\n"
        );
    }

    /// A table without rows is its header alone.
    #[test]
    fn header_only() {
        let table = Table::new(&["A", "B"]);
        assert!(table.is_empty());
        assert_eq!(table.to_string(), "A  B\n");
    }
}
