//! Reading JSONL datasets: one JSON object a line, in one of the [`Format`]s, decided by the
//! file's first record.
//!
//! The reader streams: a line is read into a buffer of at most [`MAX_LINE_BYTES`] (a longer one
//! is refused by line number before it is held whole), blank lines are skipped, a UTF-8 BOM at
//! the start of the file and `\r\n` line ends are accepted. Before serde_json sees a line, a flat
//! scan refuses nesting deeper than [`MAX_JSON_DEPTH`], so no input can drive a recursive
//! parser, or the recursive drop of what it built, into the stack guard.
//!
//! Columns in errors are 1-based byte columns, as serde_json counts them; for a field error the
//! column is where the field's value (or, for a missing field, its object) starts, found by
//! re-scanning the line, which happens only on the error path.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{render, ChatTemplate, RenderOptions, Rendered};
use super::{DataError, FieldPath, Format, JsonKind};

/// The longest line accepted, in bytes (without its line end).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// The deepest nesting of arrays and objects accepted in a line. Real records need 3 (a chat
/// record: object, `messages` array, message object); 64 leaves room for any extra fields while
/// staying well inside serde_json's own recursion limit (128), which stays enabled.
pub const MAX_JSON_DEPTH: usize = 64;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant`, or whatever else the chat template accepts.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message { role: role.into(), content: content.into() }
    }
}

/// One training example, as read from a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `{"text"}`: trained on whole.
    Text {
        /// The text.
        text: String,
    },
    /// `{"prompt", "completion"}`: the completion follows the prompt directly, with no separator
    /// (as in TRL: put any space or newline into the data).
    PromptCompletion {
        /// Context, not trained on.
        prompt: String,
        /// Trained on.
        completion: String,
    },
    /// Alpaca `{"instruction", "input", "output"}`, `input` optional (absent, `null` and `""` are
    /// the same), plus LLaMA-Factory's optional `system`.
    Alpaca {
        /// The task.
        instruction: String,
        /// Further context for the task; empty when there is none.
        input: String,
        /// The answer, trained on.
        output: String,
        /// A system prompt (absent, `null` and `""` all give `None`).
        system: Option<String>,
    },
    /// Dolly `{"instruction", "context", "response"}`, `context` optional; other fields
    /// (`category`) are ignored.
    Dolly {
        /// The task.
        instruction: String,
        /// Further context for the task; empty when there is none.
        context: String,
        /// The answer, trained on.
        response: String,
    },
    /// `{"messages": [{"role", "content"}, ...]}`, at least one message.
    Chat {
        /// The conversation; assistant turns are trained on.
        messages: Vec<Message>,
    },
}

impl Record {
    /// The record's format.
    pub fn format(&self) -> Format {
        match self {
            Record::Text { .. } => Format::Text,
            Record::PromptCompletion { .. } => Format::PromptCompletion,
            Record::Alpaca { .. } => Format::Alpaca,
            Record::Dolly { .. } => Format::Dolly,
            Record::Chat { .. } => Format::Chat,
        }
    }
}

/// A record and the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: usize,
    /// The record.
    pub record: Record,
}

/// A dataset read from a JSONL file: every record has the same [`Format`], and there is at
/// least one.
#[derive(Debug, Clone)]
pub struct Dataset {
    path: PathBuf,
    format: Format,
    entries: Vec<Entry>,
}

impl Dataset {
    /// The file the dataset was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format of every record.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The records in file order, with their line numbers.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The number of records (never zero).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: an empty file is [`DataError::Empty`]. (Here for clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// [`render`]s `entry` (one of this dataset's), naming the file and line on error.
    pub fn render(
        &self,
        entry: &Entry,
        template: Option<&ChatTemplate>,
        options: &RenderOptions,
    ) -> Result<Rendered, DataError> {
        render(&entry.record, template, options).map_err(|source| DataError::Render {
            path: self.path.clone(),
            line: entry.line,
            source,
        })
    }
}

/// Reads the JSONL dataset at `path`, deciding its format from the first record
/// ([`Format::detect`]) and requiring every later record to have that format's fields.
pub fn read_jsonl(path: &Path) -> Result<Dataset, DataError> {
    read_file(path, None)
}

/// Reads the JSONL dataset at `path` as `format`, without detection.
pub fn read_jsonl_as(path: &Path, format: Format) -> Result<Dataset, DataError> {
    read_file(path, Some(format))
}

fn read_file(path: &Path, format: Option<Format>) -> Result<Dataset, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    read_jsonl_from(BufReader::new(file), path, format)
}

/// Reads a JSONL dataset from `reader`; `path` is only used to name the source in errors and in
/// the [`Dataset`]. `format: None` detects it from the first record.
pub fn read_jsonl_from(reader: impl BufRead, path: &Path, format: Option<Format>) -> Result<Dataset, DataError> {
    let mut format = format;
    let mut entries = Vec::new();
    for_each_line(reader, path, |line| {
        let record = parse_line(path, &line, &mut format)?;
        entries.push(Entry { line: line.number, record });
        Ok(())
    })?;
    match format {
        Some(format) if !entries.is_empty() => Ok(Dataset { path: path.to_owned(), format, entries }),
        _ => Err(DataError::Empty { path: path.to_owned() }),
    }
}

/// A non-blank line of the file, decoded.
struct Line<'a> {
    /// 1-based line number.
    number: usize,
    /// The text, without BOM and line end.
    text: &'a str,
    /// Bytes before `text` on the line (3 for a BOM on line 1, else 0), added to columns.
    offset: usize,
}

/// Calls `f` on every non-blank line of `reader`, in order.
fn for_each_line(
    mut reader: impl BufRead,
    path: &Path,
    mut f: impl FnMut(Line<'_>) -> Result<(), DataError>,
) -> Result<(), DataError> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    // A line end is at most 2 bytes (`\r\n`), so reading MAX_LINE_BYTES + 2 is enough to tell
    // whether the line fits, and never more is held.
    let limit = u64::try_from(MAX_LINE_BYTES + 2).expect("16 MiB fits in u64");
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        let read = (&mut reader).take(limit).read_until(b'\n', &mut buf);
        if read.map_err(|source| DataError::Io { path: path.to_owned(), source })? == 0 {
            return Ok(());
        }
        number += 1;
        let mut bytes = buf.as_slice();
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        if bytes.len() > MAX_LINE_BYTES {
            return Err(DataError::LineTooLong { path: path.to_owned(), line: number, max_bytes: MAX_LINE_BYTES });
        }
        let mut offset = 0;
        if number == 1 {
            if let Some(rest) = bytes.strip_prefix(BOM) {
                (bytes, offset) = (rest, BOM.len());
            }
        }
        let text = std::str::from_utf8(bytes).map_err(|e| DataError::InvalidUtf8 {
            path: path.to_owned(),
            line: number,
            column: offset + e.valid_up_to() + 1,
        })?;
        if text.trim_matches(is_json_whitespace).is_empty() {
            continue;
        }
        f(Line { number, text, offset })?;
    }
}

fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Parses one line into a record of `format`, deciding `format` first if it is still open.
fn parse_line(path: &Path, line: &Line<'_>, format: &mut Option<Format>) -> Result<Record, DataError> {
    let at = |offset: usize| line.offset + offset + 1;
    if let Err(offset) = check_depth(line.text) {
        return Err(DataError::TooDeep {
            path: path.to_owned(),
            line: line.number,
            column: at(offset),
            max_depth: MAX_JSON_DEPTH,
        });
    }
    let value: Value = serde_json::from_str(line.text).map_err(|error| DataError::Json {
        path: path.to_owned(),
        line: line.number,
        column: line.offset + error.column(),
        error,
    })?;
    let start = line.text.len() - line.text.trim_start_matches(is_json_whitespace).len();
    let Value::Object(object) = value else {
        let found = JsonKind::of(&value);
        return Err(DataError::NotAnObject { path: path.to_owned(), line: line.number, column: at(start), found });
    };
    let format = match *format {
        Some(format) => format,
        None => {
            let detected = detect(path, line, &object, at(start))?;
            *format = Some(detected);
            detected
        }
    };
    RecordReader { path, line, format }.read(&object)
}

/// The one format whose required fields `object` has.
fn detect(path: &Path, line: &Line<'_>, object: &Map<String, Value>, column: usize) -> Result<Format, DataError> {
    let path = path.to_owned();
    match Format::detect(object.keys().map(String::as_str)).as_slice() {
        [format] => Ok(*format),
        [] => {
            Err(DataError::UnknownFormat { path, line: line.number, column, fields: object.keys().cloned().collect() })
        }
        [first, second, ..] => {
            Err(DataError::AmbiguousFormat { path, line: line.number, column, first: *first, second: *second })
        }
    }
}

/// Checks that `text` nests arrays and objects at most [`MAX_JSON_DEPTH`] deep, without
/// recursion; `Err` holds the byte offset of the first bracket too deep. Brackets inside strings
/// do not count. Malformed JSON passes through to serde_json, which reports it.
fn check_depth(text: &str) -> Result<(), usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (offset, byte) in text.bytes().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(offset);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Turns a line's JSON object into a [`Record`] of one format, with errors that point into the line.
struct RecordReader<'a> {
    path: &'a Path,
    line: &'a Line<'a>,
    format: Format,
}

impl RecordReader<'_> {
    fn read(&self, object: &Map<String, Value>) -> Result<Record, DataError> {
        let field = |key| self.string(object, key, &[Step::Key(key)], FieldPath::Key(key));
        let optional = |key| self.optional_string(object, key, &[Step::Key(key)], FieldPath::Key(key));
        Ok(match self.format {
            Format::Text => Record::Text { text: field("text")? },
            Format::PromptCompletion => {
                Record::PromptCompletion { prompt: field("prompt")?, completion: field("completion")? }
            }
            Format::Alpaca => Record::Alpaca {
                instruction: field("instruction")?,
                input: optional("input")?.unwrap_or_default(),
                output: field("output")?,
                system: optional("system")?.filter(|system| !system.is_empty()),
            },
            Format::Dolly => Record::Dolly {
                instruction: field("instruction")?,
                context: optional("context")?.unwrap_or_default(),
                response: field("response")?,
            },
            Format::Chat => Record::Chat { messages: self.messages(object)? },
        })
    }

    fn messages(&self, object: &Map<String, Value>) -> Result<Vec<Message>, DataError> {
        let steps = [Step::Key("messages")];
        let Some(value) = object.get("messages") else {
            return Err(self.missing(&[], FieldPath::Key("messages")));
        };
        let Value::Array(items) = value else {
            return Err(self.wrong_type(&steps, FieldPath::Key("messages"), JsonKind::Array, value));
        };
        if items.is_empty() {
            let column = self.column(&steps);
            return Err(DataError::NoMessages { path: self.path.to_owned(), line: self.line.number, column });
        }
        let mut messages = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let at = [Step::Key("messages"), Step::Index(index)];
            let Value::Object(message) = item else {
                let field = FieldPath::Message { index, key: None };
                return Err(self.wrong_type(&at, field, JsonKind::Object, item));
            };
            let field = |key| {
                let steps = [Step::Key("messages"), Step::Index(index), Step::Key(key)];
                let path = FieldPath::Message { index, key: Some(key) };
                self.string_at(message, key, &at, &steps, path)
            };
            messages.push(Message { role: field("role")?, content: field("content")? });
        }
        Ok(messages)
    }

    /// The required string field `key` of the top-level object.
    fn string(
        &self,
        object: &Map<String, Value>,
        key: &'static str,
        steps: &[Step<'_>],
        field: FieldPath,
    ) -> Result<String, DataError> {
        self.string_at(object, key, &[], steps, field)
    }

    /// The required string field `key` of the object at `object_steps`, whose value is at `steps`.
    fn string_at(
        &self,
        object: &Map<String, Value>,
        key: &'static str,
        object_steps: &[Step<'_>],
        steps: &[Step<'_>],
        field: FieldPath,
    ) -> Result<String, DataError> {
        match object.get(key) {
            None => Err(self.missing(object_steps, field)),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(value) => Err(self.wrong_type(steps, field, JsonKind::String, value)),
        }
    }

    /// The optional string field `key` of the top-level object: absent and `null` give `None`.
    fn optional_string(
        &self,
        object: &Map<String, Value>,
        key: &'static str,
        steps: &[Step<'_>],
        field: FieldPath,
    ) -> Result<Option<String>, DataError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(value) => Err(self.wrong_type(steps, field, JsonKind::String, value)),
        }
    }

    fn missing(&self, object_steps: &[Step<'_>], field: FieldPath) -> DataError {
        let (path, line, column) = (self.path.to_owned(), self.line.number, self.column(object_steps));
        DataError::MissingField { path, line, column, field, format: self.format }
    }

    fn wrong_type(&self, steps: &[Step<'_>], field: FieldPath, expected: JsonKind, found: &Value) -> DataError {
        DataError::WrongType {
            path: self.path.to_owned(),
            line: self.line.number,
            column: self.column(steps),
            field,
            expected,
            found: JsonKind::of(found),
            format: self.format,
        }
    }

    /// The 1-based column of the value at `steps` (falls back to the start of the line).
    fn column(&self, steps: &[Step<'_>]) -> usize {
        self.line.offset + locate(self.line.text, steps).unwrap_or(0) + 1
    }
}

/// One step of a path into a JSON document.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    /// The value of an object's member `key` (the last one, if the key repeats: that is the
    /// value serde_json keeps).
    Key(&'a str),
    /// The element at an index of an array.
    Index(usize),
}

/// The byte offset in `text` (one valid JSON value) where the value at `steps` starts. A flat
/// scan, no recursion; `None` if the path is not in the document.
fn locate(text: &str, steps: &[Step<'_>]) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut pos = skip_whitespace(bytes, 0);
    for step in steps {
        match (*step, *bytes.get(pos)?) {
            (Step::Key(wanted), b'{') => {
                let mut found = None;
                pos = skip_whitespace(bytes, pos + 1);
                while *bytes.get(pos)? == b'"' {
                    let key_end = skip_string(bytes, pos)?;
                    let key: String = serde_json::from_str(text.get(pos..key_end)?).ok()?;
                    pos = skip_whitespace(bytes, key_end);
                    (*bytes.get(pos)? == b':').then_some(())?;
                    pos = skip_whitespace(bytes, pos + 1);
                    if key == wanted {
                        found = Some(pos);
                    }
                    pos = skip_whitespace(bytes, skip_value(bytes, pos)?);
                    if *bytes.get(pos)? == b',' {
                        pos = skip_whitespace(bytes, pos + 1);
                    }
                }
                pos = found?;
            }
            (Step::Index(index), b'[') => {
                pos = skip_whitespace(bytes, pos + 1);
                for _ in 0..index {
                    pos = skip_whitespace(bytes, skip_value(bytes, pos)?);
                    (*bytes.get(pos)? == b',').then_some(())?;
                    pos = skip_whitespace(bytes, pos + 1);
                }
                (*bytes.get(pos)? != b']').then_some(())?;
            }
            _ => return None,
        }
    }
    Some(pos)
}

fn skip_whitespace(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos).is_some_and(|b| b" \t\r\n".contains(b)) {
        pos += 1;
    }
    pos
}

/// The offset just past the string starting at `pos`.
fn skip_string(bytes: &[u8], pos: usize) -> Option<usize> {
    let mut i = pos + 1;
    loop {
        match *bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The offset just past the value starting at `pos`.
fn skip_value(bytes: &[u8], pos: usize) -> Option<usize> {
    match *bytes.get(pos)? {
        b'"' => skip_string(bytes, pos),
        b'[' | b'{' => {
            let (mut depth, mut i) = (0usize, pos);
            loop {
                match *bytes.get(i)? {
                    b'"' => {
                        i = skip_string(bytes, i)?;
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let end = bytes[pos..].iter().position(|b| b",]} \t\r\n".contains(b));
            Some(end.map_or(bytes.len(), |end| pos + end))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Dataset, DataError> {
        read_jsonl_from(text.as_bytes(), Path::new("train.jsonl"), None)
    }

    fn records(text: &str) -> Vec<Record> {
        read(text).unwrap().entries.into_iter().map(|e| e.record).collect()
    }

    fn error(text: &str) -> DataError {
        read(text).unwrap_err()
    }

    #[test]
    fn reads_every_format() {
        let text = r#"{"text": "hello"}"#;
        assert_eq!(records(text), [Record::Text { text: "hello".into() }]);
        let text = r#"{"prompt": "2+2=", "completion": "4"}"#;
        assert_eq!(records(text), [Record::PromptCompletion { prompt: "2+2=".into(), completion: "4".into() }]);
        let text = concat!(
            r#"{"instruction": "Add.", "input": "2+2", "output": "4"}"#,
            "\n",
            r#"{"instruction": "Say hi.", "output": "hi", "input": null, "system": "Be nice."}"#,
            "\n",
            r#"{"instruction": "Say hi.", "output": "hi", "input": "", "system": ""}"#,
        );
        let alpaca = |input: &str, system: Option<&str>| Record::Alpaca {
            instruction: if input.is_empty() { "Say hi." } else { "Add." }.into(),
            input: input.into(),
            output: if input.is_empty() { "hi" } else { "4" }.into(),
            system: system.map(Into::into),
        };
        assert_eq!(records(text), [alpaca("2+2", None), alpaca("", Some("Be nice.")), alpaca("", None)]);
        let text = r#"{"instruction": "Sum up.", "context": "A long text.", "response": "Short.", "category": "summarization"}"#;
        let dolly =
            Record::Dolly { instruction: "Sum up.".into(), context: "A long text.".into(), response: "Short.".into() };
        assert_eq!(records(text), [dolly]);
        let text = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "name": "bot"}], "id": 7}"#;
        let chat = Record::Chat { messages: vec![Message::new("user", "Hi"), Message::new("assistant", "Hello")] };
        assert_eq!(records(text), [chat]);
    }

    #[test]
    fn keeps_line_numbers_and_skips_blank_lines() {
        let text = "\n{\"text\": \"a\"}\n  \t\n\r\n{\"text\": \"b\"}\n\n";
        let dataset = read(text).unwrap();
        assert_eq!(dataset.format(), Format::Text);
        let lines: Vec<_> = dataset.entries().iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 5]);
    }

    #[test]
    fn accepts_bom_and_crlf_and_no_final_newline() {
        let text = "\u{FEFF}{\"text\": \"a\"}\r\n{\"text\": \"b\\r\"}";
        assert_eq!(records(text), [Record::Text { text: "a".into() }, Record::Text { text: "b\r".into() }]);
        // Columns on line 1 count the BOM's 3 bytes, as an editor showing bytes would.
        let e = error("\u{FEFF}{\"text\": 1}");
        assert!(matches!(e, DataError::WrongType { line: 1, column: 13, .. }), "{e:?}");
    }

    #[test]
    fn empty_and_blank_files_are_errors() {
        for text in ["", "\n\n", " \r\n\t\n"] {
            let e = error(text);
            assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
            assert_eq!(e.to_string(), "train.jsonl: the dataset is empty (expected one JSON object per line)");
        }
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let e = error("{\"text\": \"a\"}\n{\"text\": \"b\",}\n");
        assert!(matches!(e, DataError::Json { line: 2, column: 14, .. }), "{e:?}");
        assert_eq!(e.to_string(), "train.jsonl:2:14: invalid JSON: trailing comma");
        let e = error("{\"text\": \"a\"\n");
        assert_eq!(e.to_string(), "train.jsonl:1:12: invalid JSON: EOF while parsing an object");
        let e = error("{\"text\": \"a\"} {\"text\": \"b\"}\n");
        assert_eq!(e.to_string(), "train.jsonl:1:15: invalid JSON: trailing characters");
    }

    #[test]
    fn non_objects_are_refused() {
        let e = error("{\"text\": \"a\"}\n{\"text\": \"b\"}\n  [1, 2]\n");
        assert!(matches!(e, DataError::NotAnObject { line: 3, column: 3, found: JsonKind::Array, .. }), "{e:?}");
        assert_eq!(e.to_string(), "train.jsonl:3:3: expected a JSON object, found an array");
        assert!(matches!(error("\"text\""), DataError::NotAnObject { found: JsonKind::String, .. }));
        assert!(matches!(error("null"), DataError::NotAnObject { found: JsonKind::Null, .. }));
    }

    #[test]
    fn later_lines_must_match_the_first_format() {
        let text = concat!(
            r#"{"instruction": "a", "input": "", "output": "b"}"#,
            "\n",
            r#"{"instruction": "a", "output": "b"}"#,
            "\n",
            r#"{"text": "hello"}"#,
        );
        let e = error(text);
        let expected = FieldPath::Key("instruction");
        assert!(
            matches!(e, DataError::MissingField { line: 3, column: 1, field, format: Format::Alpaca, .. } if field == expected)
        );
        assert_eq!(e.to_string(), "train.jsonl:3:1: expected field 'instruction' (alpaca format)");
    }

    #[test]
    fn wrong_types_point_at_the_value() {
        let text = concat!(r#"{"text": "a"}"#, "\n", r#"{"text": ["b"]}"#);
        let e = error(text);
        assert!(
            matches!(
                e,
                DataError::WrongType { line: 2, column: 10, expected: JsonKind::String, found: JsonKind::Array, .. }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "train.jsonl:2:10: field 'text': expected a string, found an array (text format)");
        let e = error(r#"{"instruction": "a", "output": "b", "input": 3}"#);
        assert_eq!(e.to_string(), "train.jsonl:1:46: field 'input': expected a string, found a number (alpaca format)");
    }

    #[test]
    fn chat_errors_name_the_message() {
        let e = error(r#"{"messages": []}"#);
        assert!(matches!(e, DataError::NoMessages { line: 1, column: 14, .. }), "{e:?}");
        let e = error(r#"{"messages": "hi"}"#);
        assert_eq!(
            e.to_string(),
            "train.jsonl:1:14: field 'messages': expected an array, found a string (chat format)"
        );
        let e = error(r#"{"messages": [{"role": "user", "content": "a"}, "b"]}"#);
        assert_eq!(
            e.to_string(),
            "train.jsonl:1:49: field 'messages[1]': expected an object, found a string (chat format)"
        );
        let e = error(r#"{"messages": [{"role": "user", "content": "a"}, {"content": "b"}]}"#);
        let expected = FieldPath::Message { index: 1, key: Some("role") };
        assert!(matches!(e, DataError::MissingField { column: 49, field, .. } if field == expected), "{e:?}");
        assert_eq!(e.to_string(), "train.jsonl:1:49: expected field 'messages[1].role' (chat format)");
        let e = error(r#"{"messages": [{"role": "user", "content": null}]}"#);
        assert_eq!(
            e.to_string(),
            "train.jsonl:1:43: field 'messages[0].content': expected a string, found null (chat format)"
        );
    }

    #[test]
    fn unknown_and_ambiguous_formats() {
        let e = error(r#"  {"question": "a", "answer": "b"}"#);
        assert!(
            matches!(&e, DataError::UnknownFormat { line: 1, column: 3, fields, .. } if fields == &["question", "answer"]),
            "{e:?}"
        );
        let e = error(r#"{"text": "a", "messages": []}"#);
        assert!(matches!(e, DataError::AmbiguousFormat { first: Format::Chat, second: Format::Text, .. }), "{e:?}");
        // A forced format skips detection: the extra field is ignored.
        let forced = read_jsonl_from(r#"{"text": "a", "messages": []}"#.as_bytes(), Path::new("t"), Some(Format::Text));
        assert_eq!(forced.unwrap().entries()[0].record, Record::Text { text: "a".into() });
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        let mut bytes = b"{\"text\": \"a\"}\n{\"text\": \"".to_vec();
        bytes.extend_from_slice(&[0xC3, 0x28, b'"', b'}']);
        let e = read_jsonl_from(bytes.as_slice(), Path::new("train.jsonl"), None).unwrap_err();
        assert!(matches!(e, DataError::InvalidUtf8 { line: 2, column: 11, .. }), "{e:?}");
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_stack_overflow() {
        // 100k levels: a recursive parser (or a recursive drop) would overflow the stack.
        for open in ["[", "{\"a\":"] {
            let text = open.repeat(100_000);
            let e = error(&text);
            let column = open.len() * MAX_JSON_DEPTH + 1;
            assert!(
                matches!(e, DataError::TooDeep { line: 1, max_depth: MAX_JSON_DEPTH, column: c, .. } if c == column),
                "{e:?}"
            );
        }
        // Brackets inside strings do not count.
        let text = format!("{{\"text\": \"{}\"}}", "[".repeat(1000));
        assert_eq!(records(&text), [Record::Text { text: "[".repeat(1000) }]);
        // The deepest accepted nesting parses (an extra field, ignored).
        let deep = format!(
            "{{\"text\": \"a\", \"x\": {}1{}}}",
            "[".repeat(MAX_JSON_DEPTH - 1),
            "]".repeat(MAX_JSON_DEPTH - 1)
        );
        assert_eq!(records(&deep), [Record::Text { text: "a".into() }]);
        let too_deep =
            format!("{{\"text\": \"a\", \"x\": {}1{}}}", "[".repeat(MAX_JSON_DEPTH), "]".repeat(MAX_JSON_DEPTH));
        assert!(matches!(error(&too_deep), DataError::TooDeep { .. }));
    }

    #[test]
    fn overlong_lines_are_refused_by_number() {
        let long = format!("{{\"text\": \"{}\"}}", "a".repeat(MAX_LINE_BYTES));
        let text = format!("{{\"text\": \"a\"}}\n{long}\n{{\"text\": \"b\"}}\n");
        let e = error(&text);
        assert!(matches!(e, DataError::LineTooLong { line: 2, max_bytes: MAX_LINE_BYTES, .. }), "{e:?}");
        // Exactly MAX_LINE_BYTES of content, with either line end, is accepted.
        let fits = format!("{{\"text\": \"{}\"}}", "a".repeat(MAX_LINE_BYTES - 12));
        assert_eq!(fits.len(), MAX_LINE_BYTES);
        for end in ["\n", "\r\n", ""] {
            assert_eq!(read(&format!("{fits}{end}")).unwrap().len(), 1);
        }
    }

    #[test]
    fn locate_finds_values() {
        let text = r#" { "a" : [1, {"b": "x\"]}"}, 2.5e3 ] , "c": {"d": null}, "a": "last" } "#;
        let at = |steps: &[Step<'_>]| locate(text, steps).map(|offset| &text[offset..offset + 6]);
        assert_eq!(at(&[Step::Key("a")]), Some("\"last\""));
        assert_eq!(at(&[Step::Key("c"), Step::Key("d")]), Some("null},"));
        assert_eq!(at(&[]), Some("{ \"a\" "));
        assert_eq!(locate(text, &[Step::Key("z")]), None);
        assert_eq!(locate(text, &[Step::Key("c"), Step::Index(0)]), None);
        let text = r#"{"a": [1, {"b": "x\"]}"}, 2.5e3]}"#;
        assert_eq!(locate(text, &[Step::Key("a"), Step::Index(2)]), Some(26));
        assert_eq!(locate(text, &[Step::Key("a"), Step::Index(1), Step::Key("b")]), Some(16));
        assert_eq!(locate(text, &[Step::Key("a"), Step::Index(3)]), None);
    }

    #[test]
    fn dataset_render_names_file_and_line() {
        let dataset = read("\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}").unwrap();
        let template = ChatTemplate::new("{{ raise_exception('no') }}", "", "").unwrap();
        let e = dataset.render(&dataset.entries()[0], Some(&template), &RenderOptions::default()).unwrap_err();
        assert!(matches!(e, DataError::Render { line: 2, .. }), "{e:?}");
        assert_eq!(e.to_string(), "train.jsonl:2: cannot render the record");
    }
}
