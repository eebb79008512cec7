//! What Ollama does with a Modelfile, written here from its documentation (docs/modelfile.md) and
//! the behaviour of its parser (parser/parser.go) and template code (template/template.go,
//! server/routes.go), independently of `gguftune::modelfile`:
//!
//! - [`parse`]: the Modelfile grammar. One command per line, names in any case, `#` comments, a
//!   value that runs to the end of its line unless it opens with `"` or `"""` (then to the first
//!   line break after which the text read, trimmed, closes with the same quote). No escapes.
//! - [`render`]: a Go `text/template` evaluator for the subset chat templates use (text, `{{-` /
//!   `-}}` trimming, fields, variables with `:=` and `=`, `if` / `else if` / `else`, `range` with
//!   or without `$i, $x :=`, `eq`, `ne`, `not`, `and`, `or`, `len`, string literals), run on the
//!   values Ollama gives a template that mentions `.Messages`.

use std::collections::BTreeMap;

/// One Modelfile command, as Ollama's parser hands it on: `from` is named `model`, a `PARAMETER`
/// has its parameter's name, a `MESSAGE` has `role: text` as its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: String,
    pub args: String,
}

const COMMANDS: &[&str] = &[
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
];

#[derive(Clone, Copy, PartialEq)]
enum State {
    Start,
    Comment,
    Name,
    Parameter,
    Role,
    Value,
}

/// Parses a Modelfile; errors say why, as a string (this is a test oracle, not a product).
pub fn parse(text: &str) -> Result<Vec<Command>, String> {
    let mut commands = Vec::new();
    let (mut state, mut buf, mut name, mut role) = (State::Start, String::new(), String::new(), None::<String>);
    let is_space = |c: char| c == ' ' || c == '\t';
    let is_newline = |c: char| c == '\n' || c == '\r';
    for (line, text_line) in text.split_inclusive('\n').enumerate() {
        for c in text_line.chars() {
            let at = || format!("line {}: {c:?}", line + 1);
            match state {
                State::Start if c == '#' => state = State::Comment,
                State::Start if is_space(c) || is_newline(c) => {}
                State::Start => {
                    buf.push(c);
                    state = State::Name;
                }
                State::Comment => {
                    if is_newline(c) {
                        state = State::Start;
                    }
                }
                State::Name if c.is_ascii_alphabetic() => buf.push(c),
                State::Name if is_space(c) => {
                    let lower = buf.to_ascii_lowercase();
                    if !COMMANDS.contains(&lower.as_str()) {
                        return Err(format!("{}: unknown command '{buf}'", at()));
                    }
                    state = match lower.as_str() {
                        "parameter" => State::Parameter,
                        "message" => State::Role,
                        _ => State::Value,
                    };
                    name = if lower == "from" { "model".into() } else { lower };
                    buf.clear();
                }
                State::Name => return Err(format!("{}: not a command name", at())),
                State::Parameter if c.is_ascii_alphanumeric() || c == '_' => buf.push(c),
                State::Parameter if is_space(c) => {
                    name = std::mem::take(&mut buf);
                    state = State::Value;
                }
                State::Parameter => return Err(format!("{}: not a parameter name", at())),
                State::Role if c.is_ascii_alphabetic() => buf.push(c),
                State::Role if is_space(c) => {
                    if !["system", "user", "assistant"].contains(&buf.as_str()) {
                        return Err(format!("{}: bad message role '{buf}'", at()));
                    }
                    role = Some(std::mem::take(&mut buf));
                    state = State::Value;
                }
                State::Role => return Err(format!("{}: not a role", at())),
                State::Value if is_newline(c) => match unquote(buf.trim()) {
                    Some(value) => {
                        let args = match role.take() {
                            Some(role) => format!("{role}: {value}"),
                            None => value.to_owned(),
                        };
                        commands.push(Command { name: name.clone(), args });
                        buf.clear();
                        state = State::Start;
                    }
                    None => buf.push(c),
                },
                // The parser keeps printable characters, spaces, tabs and line breaks only.
                State::Value if c.is_control() && c != '\t' => {}
                State::Value => buf.push(c),
            }
        }
    }
    match state {
        State::Start | State::Comment => {}
        State::Value => {
            let value = unquote(buf.trim()).ok_or("unterminated quoted value at the end")?;
            let args = match role {
                Some(role) => format!("{role}: {value}"),
                None => value.to_owned(),
            };
            commands.push(Command { name, args });
        }
        _ => return Err("the file ends inside a command".into()),
    }
    if !commands.iter().any(|c| c.name == "model") {
        return Err("no FROM line".into());
    }
    Ok(commands)
}

/// A value without its quotes; `None` while a quoted value is still open.
fn unquote(s: &str) -> Option<&str> {
    if let Some(rest) = s.strip_prefix("\"\"\"") {
        return (s.len() >= 6).then(|| rest.strip_suffix("\"\"\"")).flatten();
    }
    if let Some(rest) = s.strip_prefix('"') {
        return (s.len() >= 2).then(|| rest.strip_suffix('"')).flatten();
    }
    Some(s)
}

// ----- Go templates -------------------------------------------------------------------------

/// A template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// Go's truth: false, 0, "", nil and empty collections are false.
    fn truth(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    fn print(&self) -> String {
        match self {
            Value::Nil => "<no value>".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Str(s) => s.clone(),
            other => format!("{other:?}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Arg {
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Bool(bool),
    Int(i64),
}

#[derive(Debug, Clone)]
enum Pipe {
    Arg(Arg),
    Call(String, Vec<Arg>),
}

#[derive(Debug)]
enum Node {
    Text(String),
    Print(Pipe),
    Declare(String, Pipe),
    Assign(String, Pipe),
    If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
    Range { key: Option<String>, elem: Option<String>, pipe: Pipe, body: Vec<Node> },
}

/// Splits a template into text and action pieces, applying the trim markers.
fn lex(src: &str) -> Result<Vec<(bool, String)>, String> {
    let mut pieces: Vec<(bool, String)> = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    let go_space = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    loop {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = if trim_next { text.trim_start_matches(go_space) } else { text }.to_owned();
        let Some(after) = after else {
            pieces.push((false, text));
            return Ok(pieces);
        };
        let end = after.find("}}").ok_or("unclosed action")?;
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix("- ") {
            text = text.trim_end_matches(go_space).to_owned();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix(" -") {
            trim_next = true;
            action = a;
        }
        pieces.push((false, text));
        pieces.push((true, action.trim().to_owned()));
        rest = &after[end + 2..];
    }
}

/// Splits an action into words: string literals, `:=`, `=`, `,` and bare words.
fn words(action: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::from("\"");
            loop {
                match chars.next().ok_or("unterminated string")? {
                    '"' => break,
                    '\\' => match chars.next().ok_or("bad escape")? {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        c @ ('"' | '\\') => s.push(c),
                        c => return Err(format!("escape \\{c} not supported")),
                    },
                    c => s.push(c),
                }
            }
            out.push(s);
        } else if c == ',' {
            chars.next();
            out.push(",".into());
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == ',' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn arg(word: &str) -> Result<Arg, String> {
    let fields = |s: &str| s.split('.').filter(|f| !f.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    if let Some(s) = word.strip_prefix('"') {
        Ok(Arg::Str(s.to_owned()))
    } else if word.starts_with('.') {
        Ok(Arg::Dot(fields(word)))
    } else if let Some(v) = word.strip_prefix('$') {
        let (name, path) = v.split_once('.').unwrap_or((v, ""));
        Ok(Arg::Var(format!("${name}"), fields(path)))
    } else if word == "true" || word == "false" {
        Ok(Arg::Bool(word == "true"))
    } else {
        word.parse().map(Arg::Int).map_err(|_| format!("unsupported operand '{word}'"))
    }
}

fn pipe(words: &[String]) -> Result<Pipe, String> {
    match words {
        [] => Err("empty pipeline".into()),
        [one] => Ok(Pipe::Arg(arg(one)?)),
        [f, args @ ..] if ["eq", "ne", "not", "and", "or", "len"].contains(&f.as_str()) => {
            Ok(Pipe::Call(f.clone(), args.iter().map(|a| arg(a)).collect::<Result<_, _>>()?))
        }
        _ => Err(format!("unsupported pipeline {words:?}")),
    }
}

/// Parses pieces into nodes up to an `else`/`end` at this level, which it returns.
fn nodes(pieces: &mut std::slice::Iter<'_, (bool, String)>) -> Result<(Vec<Node>, Option<Vec<String>>), String> {
    let mut out = Vec::new();
    while let Some((is_action, piece)) = pieces.next() {
        if !is_action {
            if !piece.is_empty() {
                out.push(Node::Text(piece.clone()));
            }
            continue;
        }
        let w = words(piece)?;
        match w.first().map(String::as_str) {
            Some("end") | Some("else") => return Ok((out, Some(w))),
            Some("if") => {
                let mut branches = Vec::new();
                let mut cond = pipe(&w[1..])?;
                let otherwise = loop {
                    let (body, stop) = nodes(pieces)?;
                    branches.push((cond, body));
                    let stop = stop.ok_or("if without end")?;
                    match stop.as_slice() {
                        [end] if end == "end" => break Vec::new(),
                        [e] if e == "else" => {
                            let (body, stop) = nodes(pieces)?;
                            if stop.as_deref() != Some(&["end".to_owned()][..]) {
                                return Err("else without end".into());
                            }
                            break body;
                        }
                        [e, i, rest @ ..] if e == "else" && i == "if" => cond = pipe(rest)?,
                        other => return Err(format!("unexpected {other:?}")),
                    }
                };
                out.push(Node::If(branches, otherwise));
            }
            Some("range") => {
                let (key, elem, p) = match w.iter().position(|x| x == ":=") {
                    None => (None, None, pipe(&w[1..])?),
                    Some(i) => match &w[1..i] {
                        [e] => (None, Some(e.clone()), pipe(&w[i + 1..])?),
                        [k, comma, e] if comma == "," => (Some(k.clone()), Some(e.clone()), pipe(&w[i + 1..])?),
                        other => return Err(format!("unsupported range variables {other:?}")),
                    },
                };
                let (body, stop) = nodes(pieces)?;
                if stop.as_deref() != Some(&["end".to_owned()][..]) {
                    return Err("range without end (range ... else is not supported)".into());
                }
                out.push(Node::Range { key, elem, pipe: p, body });
            }
            Some(v) if v.starts_with('$') && w.get(1).is_some_and(|op| op == ":=") => {
                out.push(Node::Declare(v.to_owned(), pipe(&w[2..])?));
            }
            Some(v) if v.starts_with('$') && w.get(1).is_some_and(|op| op == "=") => {
                out.push(Node::Assign(v.to_owned(), pipe(&w[2..])?));
            }
            _ => out.push(Node::Print(pipe(&w)?)),
        }
    }
    Ok((out, None))
}

struct Exec {
    scopes: Vec<Vec<(String, Value)>>,
}

impl Exec {
    fn var(&self, name: &str) -> Result<&Value, String> {
        self.scopes
            .iter()
            .rev()
            .flat_map(|s| s.iter().rev())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(format!("undefined variable {name}"))
    }

    fn assign(&mut self, name: &str, value: Value) -> Result<(), String> {
        let slot = self.scopes.iter_mut().rev().flat_map(|s| s.iter_mut().rev()).find(|(n, _)| n == name);
        slot.map(|(_, v)| *v = value).ok_or(format!("assignment to undeclared {name}"))
    }

    fn arg(&self, a: &Arg, dot: &Value) -> Result<Value, String> {
        let walk = |mut v: Value, path: &[String]| {
            for field in path {
                v = match v {
                    Value::Map(mut m) => m.remove(field).unwrap_or(Value::Nil),
                    other => return Err(format!("field {field} of {other:?}")),
                };
            }
            Ok(v)
        };
        match a {
            Arg::Dot(path) => walk(dot.clone(), path),
            Arg::Var(name, path) => walk(self.var(name)?.clone(), path),
            Arg::Str(s) => Ok(Value::Str(s.clone())),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Int(i) => Ok(Value::Int(*i)),
        }
    }

    fn pipe(&self, p: &Pipe, dot: &Value) -> Result<Value, String> {
        let (f, args) = match p {
            Pipe::Arg(a) => return self.arg(a, dot),
            Pipe::Call(f, args) => (f.as_str(), args.iter().map(|a| self.arg(a, dot)).collect::<Result<Vec<_>, _>>()?),
        };
        Ok(match (f, args.as_slice()) {
            ("eq", [first, rest @ ..]) if !rest.is_empty() => Value::Bool(rest.iter().any(|r| r == first)),
            ("ne", [a, b]) => Value::Bool(a != b),
            ("not", [a]) => Value::Bool(!a.truth()),
            ("and", all) if !all.is_empty() => all.iter().find(|v| !v.truth()).unwrap_or(&all[all.len() - 1]).clone(),
            ("or", all) if !all.is_empty() => all.iter().find(|v| v.truth()).unwrap_or(&all[all.len() - 1]).clone(),
            ("len", [Value::List(l)]) => Value::Int(l.len() as i64),
            ("len", [Value::Str(s)]) => Value::Int(s.len() as i64),
            _ => return Err(format!("bad call {f} {args:?}")),
        })
    }

    fn run(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), String> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Print(p) => out.push_str(&self.pipe(p, dot)?.print()),
                Node::Declare(name, p) => {
                    let v = self.pipe(p, dot)?;
                    self.scopes.last_mut().expect("a scope").push((name.clone(), v));
                }
                Node::Assign(name, p) => {
                    let v = self.pipe(p, dot)?;
                    self.assign(name, v)?;
                }
                Node::If(branches, otherwise) => {
                    let mut taken = None;
                    for (cond, body) in branches {
                        if self.pipe(cond, dot)?.truth() {
                            taken = Some(body);
                            break;
                        }
                    }
                    self.scopes.push(Vec::new());
                    self.run(taken.unwrap_or(otherwise), dot, out)?;
                    self.scopes.pop();
                }
                Node::Range { key, elem, pipe, body } => {
                    let Value::List(items) = self.pipe(pipe, dot)? else { return Err("range over a non-list".into()) };
                    for (i, item) in items.iter().enumerate() {
                        let mut scope = Vec::new();
                        if let Some(k) = key {
                            scope.push((k.clone(), Value::Int(i as i64)));
                        }
                        if let Some(e) = elem {
                            scope.push((e.clone(), item.clone()));
                        }
                        self.scopes.push(scope);
                        self.run(body, item, out)?;
                        self.scopes.pop();
                    }
                }
            }
        }
        Ok(())
    }
}

/// Executes Go template `template` on `data` (also `$`).
pub fn execute(template: &str, data: &Value) -> Result<String, String> {
    let pieces = lex(template)?;
    let (tree, stop) = nodes(&mut pieces.iter())?;
    if let Some(stop) = stop {
        return Err(format!("unexpected {stop:?} at the top level"));
    }
    let mut exec = Exec { scopes: vec![vec![("$".into(), data.clone())]] };
    let mut out = String::new();
    exec.run(&tree, data, &mut out)?;
    Ok(out)
}

/// The messages a template sees for a chat request with `messages` and the Modelfile's SYSTEM:
/// SYSTEM first when the request has no system message, then consecutive messages of one role
/// (not tool messages) merged, their contents joined by a blank line; and the system messages.
pub fn prepare(messages: &[(&str, &str)], system: Option<&str>) -> (Vec<String>, Vec<(String, String)>) {
    let mut msgs: Vec<(String, String)> = messages.iter().map(|(r, c)| (r.to_string(), c.to_string())).collect();
    if let Some(system) = system.filter(|s| !s.is_empty()) {
        if msgs.first().is_none_or(|(r, _)| r != "system") {
            msgs.insert(0, ("system".into(), system.into()));
        }
    }
    let mut collated: Vec<(String, String)> = Vec::new();
    let mut systems = Vec::new();
    for (role, content) in msgs {
        if role == "system" {
            systems.push(content.clone());
        }
        match collated.last_mut() {
            Some((r, c)) if *r == role && role != "tool" => {
                c.push_str("\n\n");
                c.push_str(&content);
            }
            _ => collated.push((role, content)),
        }
    }
    (systems, collated)
}

/// What Ollama's runner receives for a chat request with `messages`, given the Modelfile's
/// `template` and SYSTEM: SYSTEM is put first when the request has no system message; then
/// consecutive messages of one role are merged, `.System` is the system messages joined by blank
/// lines, and the template runs with `.Messages`.
pub fn render(template: &str, messages: &[(&str, &str)], system: Option<&str>) -> Result<String, String> {
    let (systems, collated) = prepare(messages, system);
    let message = |(role, content): (String, String)| {
        Value::Map(BTreeMap::from([("Role".into(), Value::Str(role)), ("Content".into(), Value::Str(content))]))
    };
    let data = Value::Map(BTreeMap::from([
        ("System".into(), Value::Str(systems.join("\n\n"))),
        ("Messages".into(), Value::List(collated.into_iter().map(message).collect())),
        ("Tools".into(), Value::List(Vec::new())),
        ("Response".into(), Value::Str(String::new())),
        ("Think".into(), Value::Bool(false)),
    ]));
    execute(template, &data)
}
