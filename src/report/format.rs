//! Number and table formats shared by the renderers, each matching the tool
//! whose layout users already read: tracemalloc's sizes and statistic lines,
//! heapy's partition table.

use super::model::Kind;

/// A byte count as tracemalloc's `_format_size` prints it: "48 B",
/// "1382 KiB", "61.0 MiB"; with `sign`, "+4.5 MiB".
pub fn format_size(size: f64, sign: bool) -> String {
    let mut size = size;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if size.abs() < 100.0 && unit != "B" {
            return if sign {
                format!("{size:+.1} {unit}")
            } else {
                format!("{size:.1} {unit}")
            };
        }
        if size.abs() < 10.0 * 1024.0 || unit == "TiB" {
            return if sign {
                format!("{size:+.0} {unit}")
            } else {
                format!("{size:.0} {unit}")
            };
        }
        size /= 1024.0;
    }
    unreachable!("TiB always returns")
}

/// tracemalloc's `Statistic.__str__` after the location:
/// "size=61.0 MiB, count=2000000, average=32 B".
pub fn statistic(size: u64, count: u64) -> String {
    let mut text = format!("size={}, count={count}", format_size(size as f64, false));
    if count > 0 {
        text += &format!(
            ", average={}",
            format_size(size as f64 / count as f64, false)
        );
    }
    text
}

/// heapy's rounding of a percentage: Python's "%.0f" (ties to even).
fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    format!("{:.0}", part as f64 * 100.0 / whole as f64)
        .parse()
        .unwrap_or(0)
}

/// The kinds as heapy's `hpy().heap()` prints them, all rows.
pub fn heapy_table(kinds: &[Kind]) -> String {
    heapy_table_top(kinds, usize::MAX)
}

/// The kinds as heapy prints them: the `limit` largest rows, then a line
/// saying how many more there are (not heapy's "Type e.g. '_.more' to
/// view.", which means nothing in a shell: `--top` shows more).
pub fn heapy_table_top(kinds: &[Kind], limit: usize) -> String {
    let count: u64 = kinds.iter().map(|k| k.count).sum();
    let size: u64 = kinds.iter().map(|k| k.bytes).sum();
    let mut rows: Vec<&Kind> = kinds.iter().collect();
    rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let plural = if count == 1 { "" } else { "s" };
    let mut out =
        format!("Partition of a set of {count} object{plural}. Total size = {size} bytes.\n");
    out += " Index  Count   %     Size   % Cumulative  % Kind (class / dict of class)\n";
    let mut cumulative = 0;
    for (index, kind) in rows.iter().enumerate() {
        if index == limit {
            out += &format!(
                "<{} more rows: --top {} shows them all>\n",
                rows.len() - limit,
                rows.len()
            );
            break;
        }
        cumulative += kind.bytes;
        out += &format!(
            "{:6} {:6} {:3} {:8} {:3} {:9} {:3} {}\n",
            index,
            kind.count,
            percent(kind.count, count),
            kind.bytes,
            percent(kind.bytes, size),
            cumulative,
            percent(cumulative, size),
            kind.name
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_tracemalloc() {
        assert_eq!(format_size(48.0, false), "48 B");
        assert_eq!(format_size(10_239.0, false), "10239 B");
        assert_eq!(format_size(10_240.0, false), "10.0 KiB");
        assert_eq!(format_size(1_415_168.0, false), "1382 KiB");
        assert_eq!(format_size(64_000_000.0, false), "61.0 MiB");
        assert_eq!(format_size(-47_185_920.0, true), "-45.0 MiB");
        assert_eq!(format_size(2.5, false), "2 B"); // "%.0f": ties to even
    }

    #[test]
    fn a_cut_table_says_how_to_see_the_rest_in_a_shell() {
        let kinds: Vec<Kind> = (0..3)
            .map(|i| Kind {
                name: format!("kind{i}"),
                count: 1,
                bytes: 10 + i,
            })
            .collect();
        let table = heapy_table_top(&kinds, 2);
        assert!(
            table.ends_with("<1 more rows: --top 3 shows them all>\n"),
            "{table}"
        );
        assert!(!table.contains("_.more"));
    }

    #[test]
    fn table_as_heapy() {
        let kinds = [
            Kind {
                name: "list".into(),
                count: 1,
                bytes: 100,
            },
            Kind {
                name: "int".into(),
                count: 3,
                bytes: 300,
            },
        ];
        assert_eq!(
            heapy_table(&kinds),
            "Partition of a set of 4 objects. Total size = 400 bytes.\n \
             Index  Count   %     Size   % Cumulative  % Kind (class / dict of class)\n     \
             0      3  75      300  75       300  75 int\n     \
             1      1  25      100  25       400 100 list\n"
        );
    }
}
