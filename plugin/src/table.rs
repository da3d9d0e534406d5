//! Columns aligned the way kubectl aligns them: kubectl writes its tables
//! through Go's elastic tabstops (`text/tabwriter`, padding 3), and this is
//! the same algorithm (the `tabwriter` crate): each column as wide as its
//! widest cell, three spaces apart; no trailing spaces.

use std::io::Write as _;

use tabwriter::TabWriter;

/// A table of text cells.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `headers`.
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut table = Self::default();
        table.row(headers);
        table
    }

    /// A table without a header row.
    pub fn plain() -> Self {
        Self::default()
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self) -> String {
        self.indented(0)
    }

    /// The table with every line indented by `indent` spaces.
    // The writes go to memory and the cells are Rust strings: neither the
    // writes nor the UTF-8 check can fail.
    #[allow(clippy::expect_used)]
    pub fn indented(&self, indent: usize) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut writer = TabWriter::new(Vec::new()).minwidth(0).padding(3);
        for row in &self.rows {
            // A tab ends every cell but the last, as kubectl's printers do.
            // Short rows get empty cells: a row with fewer cells would end
            // the block of lines a column is aligned over. Tabs inside a
            // cell would start columns of their own.
            let mut cells: Vec<String> = row.iter().map(|c| c.replace('\t', " ")).collect();
            cells.resize(columns, String::new());
            writeln!(writer, "{}", cells.join("\t")).expect("writing to memory");
        }
        let aligned = writer.into_inner().expect("writing to memory");
        let aligned = String::from_utf8(aligned).expect("the cells are UTF-8");
        let mut out = String::new();
        for line in aligned.lines() {
            out.push_str(&" ".repeat(indent));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_without_trailing_spaces() {
        let mut t = Table::new(["NAME", "STATUS"]);
        t.row(["a-long-name", "True"]);
        t.row(["b", ""]);
        assert_eq!(t.render(), "NAME          STATUS\na-long-name   True\nb\n");
        assert_eq!(t.indented(2).lines().next(), Some("  NAME          STATUS"));
    }

    #[test]
    fn short_rows_keep_the_columns_of_the_whole_table() {
        let mut t = Table::plain();
        t.row(["revision", "web-1", "Passed"]);
        t.row(["conditions"]);
        t.row(["a", "b", "c"]);
        assert_eq!(
            t.render(),
            "revision     web-1   Passed\nconditions\na            b       c\n"
        );
    }
}
