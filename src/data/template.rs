//! Chat templates: the Jinja source a GGUF carries in `tokenizer.chat_template`, rendered with
//! minijinja in an environment set up the way transformers sets up Jinja2 for
//! `apply_chat_template` (`src/transformers/utils/chat_template_utils.py`,
//! `_compile_jinja_template`):
//!
//! - `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
//!   extensions=[AssistantTracker, jinja2.ext.loopcontrols])`: the same two whitespace settings,
//!   no auto-escaping, `{% break %}` / `{% continue %}`, and `{% generation %}` blocks (the
//!   AssistantTracker tag) rendered as their plain content;
//! - the globals `raise_exception(message)` and `strftime_now(format)`;
//! - the `tojson` filter replaced by `json.dumps(x, ensure_ascii=False, indent=None,
//!   separators=None, sort_keys=False)` (no HTML escaping, Python's spacing);
//! - the render variables `messages`, `add_generation_prompt`, `tools=None`, `documents=None`
//!   and the special tokens `bos_token` and `eos_token`.
//!
//! Python's string, dict and list methods (`.strip()`, `.startswith()`, `.items()`, ...) come from
//! minijinja-contrib's `pycompat`. Python-style printing (`True`, `None`, `['a']`), slicing
//! (`messages[1:]`, `s[::-1]`) and undefined values (falsy, print as nothing, an error when
//! indexed) are minijinja's own and match Jinja2's defaults. Known gaps: `%`-formatting of strings
//! and Python methods pycompat lacks.
//!
//! A template is untrusted input (it comes from a model file), so every render runs under
//! [`TemplateLimits`]: minijinja's fuel, which charges each instruction and each 64 bytes of
//! data a template creates (bounding both time and memory), and a cap on the bytes of output.
//! Recursion stays under minijinja's own limit (500 levels, macros counting more), and `range()`
//! under its limit of 100,000 items.
//!
//! `strftime_now` formats a clock read once, when the template is created (UTC; transformers
//! uses local time), so every render of a dataset sees the same date; [`ChatTemplate::with_time`]
//! fixes it for reproducible output.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{context, AutoEscape, Environment, ErrorKind, State, UndefinedBehavior, Value};

use super::Message;

/// Default fuel for one render: about 4 million instructions, or 256 MiB of data created. The
/// longest line's worth of content (16 MiB) through the Llama 2 or ChatML template takes 1.1 to
/// 1.5 million (measured), so the default leaves room for templates that copy text more often.
pub const DEFAULT_FUEL: u64 = 1 << 22;

/// Default cap on the output of one render: four times the longest line.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 << 20;

/// The longest template source accepted. Hub templates are at most tens of KiB.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Nesting depth at which `tojson` gives up (a namespace can contain itself).
const MAX_TOJSON_DEPTH: usize = 64;

/// The name the template is registered under; it appears in minijinja's error locations.
const NAME: &str = "chat_template";

/// Bounds on one render of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// minijinja fuel: one per instruction plus one per 64 bytes of data created.
    pub fuel: u64,
    /// The most bytes of output.
    pub max_output_bytes: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        TemplateLimits { fuel: DEFAULT_FUEL, max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES }
    }
}

/// An error compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The source is longer than [`MAX_SOURCE_BYTES`].
    #[error("chat template is {size} bytes, more than the {max_bytes} accepted")]
    SourceTooLarge { size: usize, max_bytes: usize },
    /// The source is not a valid template.
    #[error("chat template does not compile")]
    Syntax { source: minijinja::Error },
    /// The template called `raise_exception(message)`, as templates do to refuse a conversation
    /// they cannot format (roles out of order, a system message they do not support).
    #[error("chat template raised an exception: {message}")]
    Raised { message: String },
    /// The render used up its fuel.
    #[error("chat template ran out of fuel ({fuel}) (hint: a template that loops or recurses without end, or builds huge strings)")]
    OutOfFuel { fuel: u64 },
    /// The render's output passed the cap.
    #[error("chat template output is larger than {max_bytes} bytes")]
    OutputTooLarge { max_bytes: usize },
    /// Any other failure while rendering (an undefined value indexed, a type error, too deep a
    /// recursion); `source` says what and where in the template.
    #[error("chat template failed to render")]
    Render { source: minijinja::Error },
}

/// The error `raise_exception` returns, recognized by type when the render fails.
#[derive(Debug)]
struct RaisedException(String);

impl fmt::Display for RaisedException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// A compiled chat template with its special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    limits: TemplateLimits,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` with the default [`TemplateLimits`]. `bos_token` and `eos_token` are the
    /// texts of the model's BOS and EOS tokens (empty when it has none), as templates print them.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, TemplateError> {
        ChatTemplate::with_limits(source, bos_token, eos_token, TemplateLimits::default())
    }

    /// Compiles `source` with the given limits.
    pub fn with_limits(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        limits: TemplateLimits,
    ) -> Result<ChatTemplate, TemplateError> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(TemplateError::SourceTooLarge { size: source.len(), max_bytes: MAX_SOURCE_BYTES });
        }
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
        env.set_syntax(syntax.map_err(|source| TemplateError::Syntax { source })?);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(limits.fuel));
        env.add_function("raise_exception", raise_exception);
        let max_output_bytes = limits.max_output_bytes;
        env.add_filter("tojson", move |state: &State, value: &Value, kwargs: Kwargs| {
            tojson(state, value, kwargs, max_output_bytes)
        });
        let source = rewrite_generation_tags(source).into_owned();
        env.add_template_owned(NAME, source).map_err(|source| TemplateError::Syntax { source })?;
        let template = ChatTemplate { env, bos_token: bos_token.to_owned(), eos_token: eos_token.to_owned(), limits };
        Ok(template.with_time(unix_now()))
    }

    /// Fixes the time `strftime_now` formats, in seconds since the Unix epoch (UTC).
    pub fn with_time(mut self, unix_seconds: i64) -> ChatTemplate {
        self.env.add_function("strftime_now", move |format: &str| strftime(format, unix_seconds));
        self
    }

    /// The BOS token text templates see as `bos_token`.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The EOS token text templates see as `eos_token`.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The limits every render runs under.
    pub fn limits(&self) -> TemplateLimits {
        self.limits
    }

    /// Renders `messages`, as `tokenizer.apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)` does.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TemplateError> {
        let template = self.env.get_template(NAME).map_err(|source| TemplateError::Render { source })?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            tools => (),
            documents => (),
        };
        let mut out = CappedWriter { bytes: Vec::new(), max_bytes: self.limits.max_output_bytes, exceeded: false };
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => {
                Ok(String::from_utf8(out.bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
            }
            Err(_) if out.exceeded => Err(TemplateError::OutputTooLarge { max_bytes: self.limits.max_output_bytes }),
            Err(source) if source.kind() == ErrorKind::OutOfFuel => {
                Err(TemplateError::OutOfFuel { fuel: self.limits.fuel })
            }
            Err(source) => match raised_message(&source) {
                Some(message) => Err(TemplateError::Raised { message }),
                None => Err(TemplateError::Render { source }),
            },
        }
    }
}

/// Output that refuses to grow past `max_bytes`.
struct CappedWriter {
    bytes: Vec<u8>,
    max_bytes: usize,
    exceeded: bool,
}

impl Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.bytes.len().saturating_add(data.len()) > self.max_bytes {
            self.exceeded = true;
            return Err(io::Error::other("chat template output cap reached"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `raise_exception(message)`: fails the render with `message`.
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    let error = minijinja::Error::new(ErrorKind::InvalidOperation, message.clone());
    Err(error.with_source(RaisedException(message)))
}

/// The message of a `raise_exception` call somewhere in `error`'s source chain.
fn raised_message(error: &minijinja::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(raised) = error.downcast_ref::<RaisedException>() {
            return Some(raised.0.clone());
        }
        current = error.source();
    }
    None
}

/// Rewrites transformers' `{% generation %}` / `{% endgeneration %}` tags (which mark assistant
/// text for `return_assistant_tokens_mask`) into `{% if true %}` / `{% endif %}`: the same
/// output, and the same whitespace handling, since both are block tags.
fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(open) = rest.find("{%") {
        let (before, tag) = rest.split_at(open);
        out.push_str(before);
        let body = &tag[2..];
        let modifier = usize::from(body.starts_with(['-', '+']));
        let after_modifier = &body[modifier..];
        let word_start = after_modifier.len() - after_modifier.trim_start().len();
        let word_rest = &after_modifier[word_start..];
        let replacement = [("endgeneration", "endif"), ("generation", "if true")].into_iter().find(|(word, _)| {
            word_rest
                .strip_prefix(word)
                .is_some_and(|after| after.starts_with(|c: char| c.is_whitespace() || "-+%".contains(c)))
        });
        match replacement {
            Some((word, with)) => {
                out.push_str("{%");
                out.push_str(&body[..modifier + word_start]);
                out.push_str(with);
                rest = &word_rest[word.len()..];
            }
            None => {
                out.push_str("{%");
                rest = body;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The `tojson` filter as transformers defines it: `json.dumps(x, ensure_ascii=False,
/// indent=None, separators=None, sort_keys=False)`, the four arguments given by keyword. Its
/// output is capped at `max_bytes` and charged to the fuel as it is written, since the indent
/// string repeats once per nesting level.
fn tojson(state: &State, value: &Value, kwargs: Kwargs, max_bytes: usize) -> Result<Value, minijinja::Error> {
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        Some(indent) if !indent.is_none() => Some(match indent.as_str() {
            Some(text) => text.to_owned(),
            None => {
                // Python: " " * indent, where True counts as 1 and a negative count as 0.
                let count = match indent.kind() {
                    ValueKind::Bool => i64::from(indent.is_true()),
                    _ => indent.as_i64().ok_or_else(|| invalid("tojson: indent must be an integer or a string"))?,
                };
                let count = usize::try_from(count).unwrap_or(0);
                if count > MAX_TOJSON_INDENT {
                    return Err(invalid("tojson: indent is wider than 64"));
                }
                " ".repeat(count)
            }
        }),
        _ => None,
    };
    let (item_separator, key_separator) = match kwargs.get::<Option<Value>>("separators")? {
        Some(pair) if !pair.is_none() => {
            let part = |i| pair.get_item_by_index(i).ok().and_then(|v| v.as_str().map(str::to_owned));
            match (part(0), part(1)) {
                (Some(item), Some(key)) => (item, key),
                _ => return Err(invalid("tojson: separators must be two strings")),
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let mut writer = JsonWriter {
        state,
        out: String::new(),
        max_bytes,
        ensure_ascii,
        indent,
        item_separator,
        key_separator,
        sort_keys,
    };
    writer.value(value, 0)?;
    Ok(Value::from(writer.out))
}

/// The widest `tojson` indent accepted (Python has no limit; templates use 2 or 4), so that the
/// indent string, repeated per nesting level, stays small.
const MAX_TOJSON_INDENT: usize = 64;

fn invalid(message: &'static str) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, message)
}

/// Python's `json.dumps` over minijinja values.
struct JsonWriter<'s, 'a, 'b> {
    state: &'s State<'a, 'b>,
    out: String,
    max_bytes: usize,
    ensure_ascii: bool,
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

impl JsonWriter<'_, '_, '_> {
    /// Appends `text`, within the output cap, charging a fuel per 64 bytes.
    fn push(&mut self, text: &str) -> Result<(), minijinja::Error> {
        if self.out.len().saturating_add(text.len()) > self.max_bytes {
            return Err(invalid("tojson: output larger than the chat template output cap"));
        }
        self.state.consume_fuel(u64::try_from(text.len() / 64).unwrap_or(u64::MAX))?;
        self.out.push_str(text);
        Ok(())
    }

    fn value(&mut self, value: &Value, depth: usize) -> Result<(), minijinja::Error> {
        // One fuel per value, so that walking large structures spends fuel too.
        self.state.consume_fuel(1)?;
        if depth > MAX_TOJSON_DEPTH {
            return Err(invalid("tojson: value nested too deeply (circular?)"));
        }
        match value.kind() {
            ValueKind::None => self.push("null"),
            ValueKind::Bool => self.push(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number if value.is_integer() => self.push(&value.to_string()),
            ValueKind::Number => self.push(&python_float_repr(f64::try_from(value.clone())?)),
            ValueKind::String => self.string(value.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.container(('[', ']'), items.len(), depth, |writer, i| writer.value(&items[i], depth + 1))
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    entries.push((json_key(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container(('{', '}'), entries.len(), depth, |writer, i| {
                    writer.string(&entries[i].0)?;
                    let separator = std::mem::take(&mut writer.key_separator);
                    let pushed = writer.push(&separator);
                    writer.key_separator = separator;
                    pushed?;
                    writer.value(&entries[i].1, depth + 1)
                })
            }
            kind => Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {kind} is not JSON serializable"),
            )),
        }
    }

    /// Writes `len` items between `brackets`, laid out as `json.dumps` does.
    fn container(
        &mut self,
        brackets: (char, char),
        len: usize,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize) -> Result<(), minijinja::Error>,
    ) -> Result<(), minijinja::Error> {
        let (open, close) = (brackets.0.to_string(), brackets.1.to_string());
        self.push(&open)?;
        if len > 0 {
            let newline = |depth: usize| match &self.indent {
                Some(indent) if indent.len().saturating_mul(depth) > self.max_bytes => {
                    Err(invalid("tojson: output larger than the chat template output cap"))
                }
                Some(indent) => Ok(Some(format!("\n{}", indent.repeat(depth)))),
                None => Ok(None),
            };
            let (inner, outer) = (newline(depth + 1)?, newline(depth)?);
            for i in 0..len {
                if i > 0 {
                    let separator = std::mem::take(&mut self.item_separator);
                    let pushed = self.push(&separator);
                    self.item_separator = separator;
                    pushed?;
                }
                if let Some(inner) = &inner {
                    self.push(inner)?;
                }
                item(self, i)?;
            }
            if let Some(outer) = &outer {
                self.push(outer)?;
            }
        }
        self.push(&close)
    }

    /// Writes `text` as a JSON string, escaped as Python's `json` module escapes it.
    fn string(&mut self, text: &str) -> Result<(), minijinja::Error> {
        let mut quoted = String::with_capacity(text.len() + 2);
        quoted.push('"');
        for c in text.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                '\n' => quoted.push_str("\\n"),
                '\r' => quoted.push_str("\\r"),
                '\t' => quoted.push_str("\\t"),
                '\u{8}' => quoted.push_str("\\b"),
                '\u{c}' => quoted.push_str("\\f"),
                c if u32::from(c) < 0x20 || (self.ensure_ascii && !(' '..='~').contains(&c)) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        quoted.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        self.push(&quoted)
    }
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers, booleans and `None`
/// converted, anything else refused.
fn json_key(key: &Value) -> Result<String, minijinja::Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().map(str::to_owned).unwrap_or_else(|| key.to_string())),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => Ok(python_float_repr(f64::try_from(key.clone()).unwrap_or(f64::NAN))),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        kind => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
        )),
    }
}

/// `repr(float)` as Python writes it in JSON: the shortest digits that round-trip, in positional
/// notation for decimal exponents -4..16 (with at least one digit after the point), else
/// `1.5e+20` / `1e-05`; `NaN` and `Infinity` as `json.dumps(allow_nan=True)` writes them.
fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').expect("`{:e}` always writes an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes a decimal exponent");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if digits.len() <= point as usize {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let fraction = if digits.len() > 1 { format!(".{}", &digits[1..]) } else { String::new() };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{}{fraction}e{exp_sign}{:02}", &digits[..1], exponent.unsigned_abs())
    }
}

/// Seconds since the Unix epoch now (0 if the clock is before it).
fn unix_now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(0)
}

/// Python's `datetime.strftime(format)` for the UTC time `unix_seconds`, for the directives
/// chat templates use: `%Y %y %m %B %b %d %e %j %A %a %H %I %M %S %p %Z %z %%`, with glibc's `-`
/// flag (no padding, as in `%-d`). Any other directive is written as it is, as glibc does.
fn strftime(format: &str, unix_seconds: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = unix_seconds.div_euclid(86_400);
    let seconds = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let weekday = usize::try_from((days + 3).rem_euclid(7)).expect("rem_euclid(7) is in 0..7"); // 1970-01-01 was a Thursday
    let month_name = MONTHS[usize::try_from(month - 1).expect("month is in 1..=12")];
    let year_day = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut directive = chars.next();
        let unpadded = directive == Some('-');
        if unpadded {
            directive = chars.next();
        }
        let number = |n: i64, width: usize| if unpadded { n.to_string() } else { format!("{n:0width$}") };
        match directive {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&number(year.rem_euclid(100), 2)),
            Some('m') => out.push_str(&number(month, 2)),
            Some('B') => out.push_str(month_name),
            Some('b' | 'h') => out.push_str(&month_name[..3]),
            Some('d') => out.push_str(&number(day, 2)),
            Some('e') => out.push_str(&if unpadded { day.to_string() } else { format!("{day:2}") }),
            Some('j') => out.push_str(&number(year_day, 3)),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&number(hour, 2)),
            Some('I') => out.push_str(&number(hour12, 2)),
            Some('M') => out.push_str(&number(minute, 2)),
            Some('S') => out.push_str(&number(second, 2)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to (year, month, day) (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * mp + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-07-26 13:14:56 UTC, a Friday.
    const NOW: i64 = 1_721_999_696;

    fn conversation() -> Vec<Message> {
        vec![
            Message::new("system", "You are a terse assistant."),
            Message::new("user", "Hello!"),
            Message::new("assistant", "Hi there. How can I help?"),
            Message::new("user", "  What is 2+2?\n"),
            Message::new("assistant", " It is 4. "),
        ]
    }

    fn render(source: &str, add_generation_prompt: bool) -> Result<String, TemplateError> {
        ChatTemplate::new(source, "<s>", "</s>")?.with_time(NOW).render(&conversation(), add_generation_prompt)
    }

    // The expected strings in these tests were produced by Jinja2 3.1.6 set up as transformers'
    // `_compile_jinja_template` sets it up: ImmutableSandboxedEnvironment(trim_blocks=True,
    // lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols]) with its `tojson`,
    // `raise_exception` and `strftime_now` (the clock fixed at NOW, UTC), rendering
    // `conversation()` with tools=None, documents=None, bos_token="<s>", eos_token="</s>".

    /// Namespaces, loop controls, `loop` attributes, inline `if`, Python methods, slicing,
    /// Python-style printing of lists, dicts, booleans and None, `strftime_now`.
    const FEATURES: &str = r#"{%- set ns = namespace(system=none, n=0) -%}
{%- for m in messages -%}
  {%- if m.role == 'system' -%}{%- set ns.system = m.content -%}{%- continue -%}{%- endif -%}
  {%- set ns.n = ns.n + 1 -%}
  {%- if ns.n > 3 -%}{%- break -%}{%- endif -%}
  [{{ loop.index }}/{{ loop.length }} {{ m['role'] | upper }}{{ ' first' if loop.first }}] {{ m.content.strip() }}{% if m.content.strip().endswith('?') %} (question){% endif %}

{% endfor -%}
system={{ ns.system }} n={{ ns.n }} roles={{ (messages | map(attribute='role') | list)[1:] }} last={{ messages[-1]['content'][:4] }}
{{ strftime_now('%d %b %Y') }} {{ tools is none }} {{ messages[0].get('name', 'anon') }} {{ 'a-b-c'.split('-')|join('+') }} {{ messages|length }} {{ messages[0] }}
{%- if add_generation_prompt %}

GEN{% endif %}
"#;

    const FEATURES_OUT: &str = "[2/5 USER] Hello!\n[3/5 ASSISTANT] Hi there. How can I help? (question)\n[4/5 USER] What is 2+2? (question)\nsystem=You are a terse assistant. n=4 roles=['user', 'assistant', 'user', 'assistant'] last= It \n26 Jul 2024 True anon a+b+c 5 {'role': 'system', 'content': 'You are a terse assistant.'}";

    const TOJSON_OUT: &str = "[{\"role\": \"system\", \"content\": \"You are a terse assistant.\"}, {\"role\": \"user\", \"content\": \"Hello!\"}]\n{\n  \"role\": \"system\",\n  \"content\": \"You are a terse assistant.\"\n}\n{\"a\": \"é\\\"\\\\\\n\\t\\u0001\\u001b\", \"b\": [1, 2.5, null, true]}\n{\n    \"x\": [\n        [],\n        {},\n        [\n            1,\n            [\n                2\n            ]\n        ]\n    ]\n}\n\"\\u00e9\\ud83d\\ude00<>&\"\n[1,{\"a\":2}]\n[1e+20, 1.5e-07, 0.0001, 1.2345678901234568e+17, -0.0, 3.0, 0.1, 1e+16, 1000000000000000.0, 12345.678]\n{\"2\": \"a\", \"null\": \"c\", \"k\": false}\n[\n\t1\n]";

    const GENERATION_OUT: &str = "<system>You are a terse assistant.</system>\n<user>Hello!</user>\n        <assistant>Hi there. How can I help?</assistant>\n<user>What is 2+2?</user>\n        <assistant>It is 4.</assistant>\n";

    #[test]
    fn python_features_match_jinja2() {
        let expected = FEATURES_OUT;
        assert_eq!(render(FEATURES, false).unwrap(), expected);
        assert_eq!(render(FEATURES, true).unwrap(), format!("{expected}\nGEN"));
    }

    /// `tojson` with every argument transformers' version takes.
    const TOJSON: &str = r#"{{ messages[:2] | tojson }}
{{ messages[0] | tojson(indent=2) }}
{{ {'b': [1, 2.5, none, true], 'a': 'é"\\\n\t\u0001\u001b'} | tojson(sort_keys=true) }}
{{ {'x': [[], {}, [1, [2]]]} | tojson(indent=4) }}
{{ 'é😀<>&' | tojson(ensure_ascii=true) }}
{{ [1, {'a': 2}] | tojson(separators=(',', ':')) }}
{{ [1e20, 1.5e-7, 0.0001, 123456789012345678.0, -0.0, 3.0, 0.1, 1e16, 1e15, 12345.678] | tojson }}
{{ {2: 'a', none: 'c', 'k': false} | tojson }}
{{ [1] | tojson(indent='\t') }}
"#;

    #[test]
    fn tojson_matches_transformers() {
        assert_eq!(render(TOJSON, false).unwrap(), TOJSON_OUT);
    }

    /// Macros, whitespace control, trim_blocks / lstrip_blocks around nested blocks, and
    /// transformers' `{% generation %}` tag.
    const GENERATION: &str = r#"{% macro turn(m) %}<{{ m.role }}>{{ m.content | trim }}</{{ m.role }}>{% endmacro %}
{% for m in messages %}
    {% if m.role == 'assistant' %}
        {% generation %}
        {{ turn(m) }}
        {% endgeneration %}
    {% else %}
        {{- turn(m) }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
<assistant>
{%- endif %}
"#;

    #[test]
    fn generation_tags_and_whitespace_match_jinja2() {
        assert_eq!(render(GENERATION, false).unwrap(), GENERATION_OUT);
        assert_eq!(render(GENERATION, true).unwrap(), format!("{GENERATION_OUT}<assistant>"));
    }

    #[test]
    fn generation_tag_rewrite() {
        let rewrite = |s| rewrite_generation_tags(s).into_owned();
        assert_eq!(rewrite("a{%- generation +%}b{% endgeneration -%}c"), "a{%- if true +%}b{% endif -%}c");
        assert_eq!(rewrite("{%generation%}x{%endgeneration%}"), "{%if true%}x{%endif%}");
        // Not the tag: a variable that starts with the word, and text outside tags.
        assert_eq!(
            rewrite("{% if generation_prompt %}generation{% endif %}"),
            "{% if generation_prompt %}generation{% endif %}"
        );
        assert!(matches!(rewrite_generation_tags("{{ x }}"), Cow::Borrowed(_)));
    }

    #[test]
    fn raise_exception_is_typed() {
        let e = render(
            "{% if messages[1].role == 'user' %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}",
            false,
        )
        .unwrap_err();
        assert!(
            matches!(&e, TemplateError::Raised { message } if message == "Conversation roles must alternate"),
            "{e:?}"
        );
        // Raised inside a macro too.
        let e = render("{% macro f() %}{{ raise_exception('deep') }}{% endmacro %}{{ f() }}", false).unwrap_err();
        assert!(matches!(&e, TemplateError::Raised { message } if message == "deep"), "{e:?}");
    }

    #[test]
    fn syntax_errors_and_undefined_values() {
        let e = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(e, TemplateError::Syntax { .. }), "{e:?}");
        // Undefined values print as nothing and are falsy (Jinja2's default Undefined) ...
        assert_eq!(render("[{{ nothing }}]{% if not nothing %}falsy{% endif %}", false).unwrap(), "[]falsy");
        // ... but indexing one is an error, as in Jinja2.
        let e = render("{{ nothing.field.deeper }}", false).unwrap_err();
        assert!(matches!(e, TemplateError::Render { .. }), "{e:?}");
        let e = ChatTemplate::new(&"x".repeat(MAX_SOURCE_BYTES + 1), "", "").unwrap_err();
        assert!(matches!(e, TemplateError::SourceTooLarge { .. }), "{e:?}");
    }

    #[test]
    fn hostile_templates_fail_instead_of_hanging() {
        let fails = |source: &str| render(source, false).unwrap_err();
        // A billion iterations: minijinja's range() refuses more than 100,000 items ...
        assert!(matches!(fails("{% for i in range(10**9) %}x{% endfor %}"), TemplateError::Render { .. }));
        // ... and nested loops of 10^10 steps run out of fuel.
        let e = fails("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
        assert!(matches!(e, TemplateError::OutOfFuel { fuel: DEFAULT_FUEL }), "{e:?}");
        // Unbounded macro recursion hits the recursion limit (on a test thread's small stack).
        let e = fails("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        assert!(matches!(e, TemplateError::Render { .. }), "{e:?}");
        // Huge strings: refused before they are allocated, as their bytes would exceed the fuel.
        let e = fails("{{ 'a' * 10**9 }}");
        assert!(matches!(e, TemplateError::OutOfFuel { .. }), "{e:?}");
        let e = fails("{% set x = 'a' * 60000000 %}{% set x = x ~ x %}{% set x = x ~ x %}{{ x ~ x }}");
        assert!(matches!(e, TemplateError::OutOfFuel { .. }), "{e:?}");
        // tojson of a namespace that contains itself stops at its depth limit.
        let e = fails("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns | tojson }}");
        assert!(matches!(e, TemplateError::Render { .. }), "{e:?}");
        let e = fails("{{ [[[[[[[[[[1]]]]]]]]]] | tojson(indent=10**9) }}");
        assert!(matches!(&e, TemplateError::Render { source } if source.to_string().contains("indent")), "{e:?}");
        // Deeply nested template source is a syntax error, not a parser stack overflow.
        let e = ChatTemplate::new(&format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000)), "", "")
            .unwrap_err();
        assert!(matches!(e, TemplateError::Syntax { .. }), "{e:?}");
    }

    #[test]
    fn output_is_capped() {
        let limits = TemplateLimits { fuel: DEFAULT_FUEL, max_output_bytes: 1000 };
        let template =
            ChatTemplate::with_limits("{% for i in range(100) %}{{ 'a' * 100 }}{% endfor %}", "", "", limits).unwrap();
        let e = template.render(&[], false).unwrap_err();
        assert!(matches!(e, TemplateError::OutputTooLarge { max_bytes: 1000 }), "{e:?}");
        let template =
            ChatTemplate::with_limits("{% for i in range(10) %}{{ 'a' * 100 }}{% endfor %}", "", "", limits).unwrap();
        assert_eq!(template.render(&[], false).unwrap().len(), 1000);
        let template = ChatTemplate::with_limits("{{ ['a' * 600, 'b' * 600] | tojson }}", "", "", limits).unwrap();
        assert!(template.render(&[], false).is_err());
    }

    #[test]
    fn long_messages_fit_the_default_limits() {
        // Two messages as long as the longest line (twice what one line can hold), through
        // templates that copy each several times.
        let content = "word ".repeat((crate::data::MAX_LINE_BYTES - 64) / 5);
        let messages = [Message::new("user", content.as_str()), Message::new("assistant", content.as_str())];
        let llama2 = "{% for message in messages %}{% set content = message['content'] %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% else %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
        for source in [llama2, "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"] {
            let rendered = ChatTemplate::new(source, "<s>", "</s>").unwrap().render(&messages, false).unwrap();
            assert!(rendered.len() > 2 * content.trim().len());
        }
    }

    #[test]
    fn strftime_matches_python() {
        // Expected values from Python's datetime.fromtimestamp(t, timezone.utc).strftime(f).
        let f = "%d %b %Y|%-d %B %Y|%A %a %j %H:%M:%S %I%p %y %m %e|%%|%Q";
        assert_eq!(strftime(f, NOW), "26 Jul 2024|26 July 2024|Friday Fri 208 13:14:56 01PM 24 07 26|%|%Q");
        assert_eq!(strftime("%Y-%m-%d %j %A %I %p", 951_782_400 + 86_399), "2000-02-29 060 Tuesday 11 PM");
        assert_eq!(strftime("%Y-%m-%d %j %a", -86_400 * 365), "1969-01-01 001 Wed");
        assert_eq!(render("{{ strftime_now('%-d %b') }}", false).unwrap(), "26 Jul");
    }

    #[test]
    fn float_repr_matches_python() {
        // Python: [repr(x) for x in ...].
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (-2.5e-300, "-2.5e-300"),
            (123.456, "123.456"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected, "{value:e}");
        }
    }
}
