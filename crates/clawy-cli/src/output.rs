//! Output for people (aligned tables, short sentences) or for scripts (`--json`: the
//! API's JSON as the server sent it, one document on stdout).

use serde_json::Value;

/// Prints `v` as pretty JSON on stdout.
pub fn json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("{v}"),
    }
}

/// A plain table: a header row and left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// An optional value as display text (`-` when absent).
pub fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

/// `key: value` lines for a detail view, keys aligned.
pub fn details(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["web".into(), "running".into()],
                vec!["database".into(), "stopped".into()],
            ],
        );
        assert_eq!(t, "NAME      STATE\nweb       running\ndatabase  stopped\n");
    }

    /// Typed fields now (the CLI reads `clawy_proto` types): absent is still `-`.
    #[test]
    fn fields_render_missing_as_dash() {
        assert_eq!(opt(&Some("x")), "x");
        assert_eq!(opt(&None::<String>), "-");
        assert_eq!(opt(&Some(3)), "3");
    }
}
