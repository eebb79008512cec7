//! Rendering helpers shared by the commands.

/// Escapes what could make strings from files drive the terminal or disguise themselves: control
/// characters (ESC sequences, BEL), and the invisible characters that reorder or hide text (see
/// `is_invisible`). Each becomes `\u{hex}`; newline, tab and carriage return become `\n`, `\t`,
/// `\r`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_invisible(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Characters that are invisible yet change how text reads: every format character of Unicode
/// (general category Cf, Unicode 15.1: the bidirectional embeddings, overrides, isolates and marks
/// of "Trojan Source", CVE-2021-42574; zero-width spaces and joiners; the byte-order mark; tags),
/// the line and paragraph separators, and the blank letters and selectors that render as nothing
/// (Hangul fillers, the combining grapheme joiner, variation selectors).
fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        // Format characters (Cf).
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            // Line and paragraph separators (Zl, Zp).
            | 0x2028..=0x2029
            // Blank or invisible, though not Cf.
            | 0x034F
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180D
            | 0x180F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFFA0
            | 0xE0100..=0xE01EF
    )
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
    fn escape_shows_bidi_controls_and_invisible_characters() {
        // The Trojan Source trick: an override that makes "txt.exe" read as "exe.txt".
        assert_eq!(escape("report\u{202e}txt.exe"), "report\\u{202e}txt.exe");
        let hidden = [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}', // embeddings, pop, overrides
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}', // isolates
            '\u{200e}',
            '\u{200f}',
            '\u{61c}', // marks
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{ad}', // zero-width, BOM, soft hyphen
            '\u{2028}',
            '\u{2029}',
            '\u{3164}',
            '\u{fe0f}',
            '\u{e0041}',
            '\u{e0100}',
            '\u{34f}',
        ];
        for c in hidden {
            assert_eq!(escape(&format!("a{c}b")), format!("a\\u{{{:x}}}b", u32::from(c)));
        }
        // Right-to-left scripts and ordinary symbols are text, not tricks.
        for text in ["مرحبا بالعالم", "שלום", "Ω≈ç√ €", "🦀", "a b"] {
            assert_eq!(escape(text), text);
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(17), "17 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_count(135_000_000), "135.0 M");
    }
}
