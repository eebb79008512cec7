//! Reading a Modelfile back, as Ollama's parser (parser/parser.go) reads it, for the commands
//! `ollama create` turns into its API request: FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER,
//! LICENSE and MESSAGE.
//!
//! One command per line, its name in any case, `#` comment lines, blank lines skipped. A value
//! runs to the end of its line, trimmed, unless it opens with `"""` (then to the line where the
//! text so far, trimmed, ends in `"""`) or `"` (likewise with `"`); the quotes are not part of
//! it. There are no escapes. PARAMETER takes a parameter name first, MESSAGE a role.

use std::fmt;
use std::path::{Path, PathBuf};

use super::ModelfileError;

/// The largest Modelfile read.
pub const MAX_MODELFILE_BYTES: u64 = 4 << 20;

/// A Modelfile's commands, in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedModelfile {
    /// FROM, as written (a path or a model name).
    pub from: String,
    /// Each ADAPTER, as written.
    pub adapters: Vec<String>,
    /// TEMPLATE (the last one).
    pub template: Option<String>,
    /// SYSTEM (the last one).
    pub system: Option<String>,
    /// Each PARAMETER: name and value.
    pub parameters: Vec<(String, String)>,
    /// Each LICENSE.
    pub license: Vec<String>,
    /// Each MESSAGE: role and content.
    pub messages: Vec<(String, String)>,
}

/// What is wrong with a line of a Modelfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxProblem {
    /// A command Ollama's parser does not know, or that gguftune does not carry to Ollama's API.
    UnknownCommand(String),
    /// A command with no value.
    NoValue(String),
    /// A MESSAGE role other than system, user and assistant.
    BadRole(String),
    /// A quoted value whose closing quote never comes.
    Unterminated,
    /// No FROM line.
    NoFrom,
}

impl fmt::Display for SyntaxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyntaxProblem::UnknownCommand(c) => {
                write!(f, "'{c}' is not one of FROM, ADAPTER, TEMPLATE, SYSTEM, PARAMETER, LICENSE, MESSAGE")
            }
            SyntaxProblem::NoValue(c) => write!(f, "{c} has no value"),
            SyntaxProblem::BadRole(r) => write!(f, "MESSAGE role '{r}' is not system, user or assistant"),
            SyntaxProblem::Unterminated => f.write_str("a quoted value is never closed"),
            SyntaxProblem::NoFrom => f.write_str("there is no FROM line"),
        }
    }
}

/// Reads and parses the Modelfile at `path`.
pub fn read(path: &Path) -> Result<ParsedModelfile, ModelfileError> {
    use std::io::Read;
    let io = |source| ModelfileError::Io { path: path.to_owned(), source };
    let mut text = String::new();
    std::fs::File::open(path).map_err(io)?.take(MAX_MODELFILE_BYTES).read_to_string(&mut text).map_err(io)?;
    parse(&text).map_err(|(line, problem)| ModelfileError::Syntax { path: path.to_owned(), line, problem })
}

/// Parses a Modelfile's text; an error gives the line (1-based) and what is wrong there.
pub fn parse(text: &str) -> Result<ParsedModelfile, (usize, SyntaxProblem)> {
    let is_blank = |c: char| c == ' ' || c == '\t';
    let mut out = ParsedModelfile::default();
    let mut from = None;
    let mut lines = text.split('\n').enumerate().map(|(i, l)| (i + 1, l));
    while let Some((number, line)) = lines.next() {
        let line = line.trim_start_matches([' ', '\t', '\r']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = line.split_once(is_blank).unwrap_or((line, ""));
        let name = name.trim_end_matches('\r');
        let command = name.to_ascii_lowercase();
        let no_value = || (number, SyntaxProblem::NoValue(name.to_ascii_uppercase()));
        // PARAMETER and MESSAGE take a word before their value.
        let (word, rest) = match command.as_str() {
            "parameter" | "message" => {
                let rest = rest.trim_start_matches(is_blank);
                let (word, rest) = rest.split_once(is_blank).ok_or_else(no_value)?;
                (Some(word.to_owned()), rest)
            }
            "from" | "adapter" | "template" | "system" | "license" => (None, rest),
            _ => return Err((number, SyntaxProblem::UnknownCommand(name.to_owned()))),
        };
        let mut buffer = rest.to_owned();
        let value = loop {
            if let Some(value) = unquote(buffer.trim()) {
                break value.to_owned();
            }
            let Some((_, next)) = lines.next() else { return Err((number, SyntaxProblem::Unterminated)) };
            buffer.push('\n');
            buffer.push_str(next);
        };
        if value.is_empty() && !buffer.trim().starts_with('"') {
            return Err(no_value());
        }
        match (command.as_str(), word) {
            ("from", _) => from = Some(value),
            ("adapter", _) => out.adapters.push(value),
            ("template", _) => out.template = Some(value),
            ("system", _) => out.system = Some(value),
            ("license", _) => out.license.push(value),
            ("parameter", Some(name)) => out.parameters.push((name, value)),
            ("message", Some(role)) => {
                if !matches!(role.as_str(), "system" | "user" | "assistant") {
                    return Err((number, SyntaxProblem::BadRole(role)));
                }
                out.messages.push((role, value));
            }
            _ => unreachable!("every command was matched above"),
        }
    }
    out.from = from.ok_or((text.split('\n').count(), SyntaxProblem::NoFrom))?;
    Ok(out)
}

/// Ollama's `unquote`: the text inside `"""…"""` or `"…"`, the text itself when it is not
/// quoted, `None` while a quote is still open.
fn unquote(s: &str) -> Option<&str> {
    if let Some(inner) = s.strip_prefix("\"\"\"") {
        return (s.len() >= 6).then(|| inner.strip_suffix("\"\"\"")).flatten();
    }
    if let Some(inner) = s.strip_prefix('"') {
        return inner.strip_suffix('"');
    }
    Some(s)
}

/// FROM of a parsed Modelfile in `dir`: a file, or the name of a model Ollama has. Mirrors
/// Ollama's client, which sends a FROM that names an existing file (relative to the
/// Modelfile's folder, or under `~/`) as a blob, and any other FROM as a model name.
pub fn from_path(from: &str, dir: &Path) -> Option<PathBuf> {
    let path = match from.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var_os("HOME")?).join(rest),
        None => dir.join(from),
    };
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modelfile::{FamilySource, Modelfile, SpecialTokens, TemplateFamily};

    #[test]
    fn what_gguftune_writes_reads_back() {
        let family = TemplateFamily::ChatMl;
        let modelfile = Modelfile {
            from: "./m.gguf".into(),
            adapter: "./my adapter.gguf".into(),
            family,
            family_source: FamilySource::Detected,
            template: family.go_template(&SpecialTokens::default()),
            system: Some("You are \"helpful\".\nTwo lines.".into()),
            stop: vec!["<|im_end|>".into(), "<|im_start|>".into()],
        };
        let parsed = parse(&modelfile.to_text().unwrap()).unwrap();
        assert_eq!(parsed.from, modelfile.from);
        assert_eq!(parsed.adapters, std::slice::from_ref(&modelfile.adapter));
        assert_eq!(parsed.template.as_ref(), Some(&modelfile.template));
        assert_eq!(parsed.system, modelfile.system);
        let stops: Vec<&str> = parsed
            .parameters
            .iter()
            .map(|(n, v)| {
                assert_eq!(n, "stop");
                v.as_str()
            })
            .collect();
        assert_eq!(stops, modelfile.stop);
    }

    #[test]
    fn the_commands_ollama_reads_are_read_back() {
        let text = "# a comment\nfrom ./m.gguf\nADAPTER  ./a.gguf \nTEMPLATE \"\"\"{{ .Prompt }}\n\n\"\"\"\n\
                    SYSTEM \"Be brief.\"\nPARAMETER stop \"<|eot_id|>\"\nPARAMETER temperature 0.5\n\
                    LICENSE \"\"\"MIT\"\"\"\nMESSAGE user Hi there\n";
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.from, "./m.gguf");
        assert_eq!(parsed.adapters, ["./a.gguf"]);
        assert_eq!(parsed.template.as_deref(), Some("{{ .Prompt }}\n\n"));
        assert_eq!(parsed.system.as_deref(), Some("Be brief."));
        assert_eq!(
            parsed.parameters,
            [("stop".to_owned(), "<|eot_id|>".to_owned()), ("temperature".to_owned(), "0.5".to_owned())]
        );
        assert_eq!(parsed.license, ["MIT"]);
        assert_eq!(parsed.messages, [("user".to_owned(), "Hi there".to_owned())]);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(parse("FROM m\nQUANTIZE q4\n"), Err((2, SyntaxProblem::UnknownCommand("QUANTIZE".into()))));
        assert_eq!(parse("FROM m\nSYSTEM \"\"\"open\nstill open\n"), Err((2, SyntaxProblem::Unterminated)));
        assert_eq!(parse("FROM m\nPARAMETER stop\n"), Err((2, SyntaxProblem::NoValue("PARAMETER".into()))));
        assert_eq!(parse("FROM m\nMESSAGE bot hi\n"), Err((2, SyntaxProblem::BadRole("bot".into()))));
        assert_eq!(parse("ADAPTER a.gguf\n"), Err((2, SyntaxProblem::NoFrom)));
        assert_eq!(parse("FROM\n"), Err((1, SyntaxProblem::NoValue("FROM".into()))));
    }
}
