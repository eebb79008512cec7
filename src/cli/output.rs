//! Rendering helpers shared by the commands.

/// Escapes control characters so that strings from files cannot drive the terminal.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 GiB`, `312.0 KiB`, `17 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

/// `1.10 B`, `135.0 M`, `4.2 K`, `17`.
pub fn human_count(n: u64) -> String {
    let n_f = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.2} B", n_f / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1} M", n_f / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} K", n_f / 1e3)
    } else {
        n.to_string()
    }
}

/// A progress bar over bytes on stderr, labelled with what is being done.
pub fn byte_progress(total: u64, label: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let template = format!("{{spinner}} {label} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}");
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// The one-line summary of a conversion, as text on stderr or (with `json`) as one JSON object
/// on stdout.
pub fn print_conversion_summary(
    json: bool,
    output: &std::path::Path,
    type_name: &str,
    s: &gguftune::quant::ConversionSummary,
) {
    let mb_s = s.input_bytes as f64 / 1e6 / s.seconds.max(1e-9);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "output": output, "type": type_name, "tensors": s.tensors, "input_bytes": s.input_bytes,
                "output_bytes": s.output_bytes, "seconds": s.seconds, "mb_per_second": mb_s,
            })
        );
    } else {
        eprintln!(
            "wrote {}: {} tensors, {} -> {} ({type_name}) in {:.1} s, {mb_s:.0} MB/s",
            output.display(),
            s.tensors,
            human_bytes(s.input_bytes),
            human_bytes(s.output_bytes),
            s.seconds,
        );
    }
}

/// The peak resident memory of this process so far (`VmHWM` in /proc/self/status, what
/// `/usr/bin/time` reports as maximum resident set size), where the system reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_terminal_sequences() {
        assert_eq!(escape("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(escape("naïve 日本"), "naïve 日本");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(17), "17 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_count(135_000_000), "135.0 M");
    }
}
