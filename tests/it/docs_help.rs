//! The documentation says what the binary does: every command `gguftune --help` lists has a page
//! in docs/commands/ (named in the table of docs/commands/README.md), every option its `--help`
//! prints appears on that page, every option a page's tables list is one the command takes, and
//! every relative link in README.md and docs/ reaches a file and a heading that exist.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::{gguftune, repo_root, temp_dir};

/// The options every command has, which no page needs to list.
const CLAP_OPTIONS: [&str; 2] = ["--help", "--version"];

/// The stdout of `gguftune <args>`, which must succeed.
fn help(args: &[&str]) -> String {
    let dir = temp_dir();
    let out = gguftune(dir.path(), args);
    assert!(out.status.success(), "gguftune {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("--help is UTF-8")
}

/// The lines of the section of `help` that starts with the line `title` (such as `Options:`),
/// up to the next line that is not indented (the next section, or the text after the options).
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|line| line.trim_end() != title)
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with(' '))
        .collect()
}

/// The commands `gguftune --help` lists, without clap's own `help`.
fn commands() -> Vec<String> {
    let top = help(&["--help"]);
    let names: Vec<String> = section(&top, "Commands:")
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 10, "too few commands read from `gguftune --help`: {names:?}\n{top}");
    names
}

/// The long options of a command's `--help` (`--ctx`, `--lora`, ...), from the lines of its
/// `Options:` section that name one, without `--help` and `--version`.
fn options(command: &str) -> BTreeSet<String> {
    let text = help(&[command, "--help"]);
    let options: BTreeSet<String> = section(&text, "Options:")
        .iter()
        .filter(|line| line.trim_start().starts_with('-'))
        .filter_map(|line| long_options(line).into_iter().next())
        .filter(|option| !CLAP_OPTIONS.contains(&option.as_str()))
        .collect();
    assert!(!options.is_empty(), "no options read from `gguftune {command} --help`:\n{text}");
    options
}

/// Every `--word` in `text`, whole (`--top-k`, not `--top`).
fn long_options(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let is_word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("--").map(|at| at + i) {
        let starts_word = at == 0 || !is_word(bytes[at - 1]);
        let mut end = at + 2;
        while end < bytes.len() && is_word(bytes[end]) {
            end += 1;
        }
        if starts_word && end > at + 2 && bytes[at + 2].is_ascii_lowercase() {
            found.push(text[at..end].to_owned());
        }
        i = end.max(at + 2);
    }
    found
}

/// The page docs/commands/README.md's table gives for `command`: the link in the row whose first
/// cell names the command in backticks.
fn page_of(index: &str, command: &str) -> Option<PathBuf> {
    let named = format!("`{command}`");
    index.lines().filter(|line| line.starts_with('|')).find_map(|row| {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let first = cells.get(1)?;
        let names_it = first.split(',').any(|name| name.trim() == named);
        let link = cells.get(2)?.split("](").nth(1)?.split(')').next()?;
        names_it.then(|| repo_root().join("docs/commands").join(link))
    })
}

/// The long options the first cells of a page's table rows name (`| `--rank` | 16 | ...`).
fn table_options(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|line| line.starts_with("| `-"))
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(long_options)
        .collect()
}

#[test]
fn every_command_has_a_page_that_lists_each_option_of_its_help() {
    let index_path = repo_root().join("docs/commands/README.md");
    let index = fs::read_to_string(&index_path).expect("docs/commands/README.md exists");
    let mut pages: Vec<(PathBuf, BTreeSet<String>)> = Vec::new();
    let mut missing = Vec::new();
    for command in commands() {
        let Some(path) = page_of(&index, &command) else {
            missing.push(format!("`{command}` has no row in {}", index_path.display()));
            continue;
        };
        let page = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mentioned: BTreeSet<String> = long_options(&page).into_iter().collect();
        let options = options(&command);
        for option in options.difference(&mentioned) {
            missing.push(format!("{}: `gguftune {command} --help` has {option}, the page does not", path.display()));
        }
        match pages.iter_mut().find(|(p, _)| *p == path) {
            Some((_, all)) => all.extend(options),
            None => pages.push((path, options)),
        }
    }
    for (path, options) in &pages {
        let page = fs::read_to_string(path).unwrap();
        for option in table_options(&page).difference(options) {
            missing.push(format!("{}: the page's table lists {option}, which --help does not have", path.display()));
        }
    }
    assert!(missing.is_empty(), "the docs and --help disagree:\n{}", missing.join("\n"));
}

/// README.md and every Markdown file under docs/.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![repo_root().join("README.md")];
    walk(&repo_root().join("docs"), &mut files);
    files
}

/// The text of a Markdown file without its fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchors GitHub gives the headings of a Markdown file: lower case, punctuation other than
/// `-` and `_` dropped, spaces as `-`, and `-1`, `-2`, ... after repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut anchors = BTreeSet::new();
    for line in prose(text) {
        let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')) else { continue };
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{slug}-{n}");
        }
        anchors.insert(anchor);
    }
    anchors
}

#[test]
fn every_relative_link_in_the_docs_reaches_a_file_and_heading() {
    let files = markdown_files();
    assert!(files.len() > 5, "{files:?}");
    let mut broken = Vec::new();
    let mut links = 0;
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for line in prose(&text) {
            for target in line.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                links += 1;
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let linked = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
                if !linked.exists() {
                    broken.push(format!("{}: {target}: no file {}", file.display(), linked.display()));
                    continue;
                }
                if !anchor.is_empty() && linked.extension().is_some_and(|e| e == "md") {
                    let headings = anchors(&fs::read_to_string(&linked).unwrap());
                    if !headings.contains(anchor) {
                        broken.push(format!(
                            "{}: {target}: no heading #{anchor} in {}",
                            file.display(),
                            linked.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(links > 20, "too few links found ({links})");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn long_options_are_read_whole() {
    assert_eq!(long_options("`--top-k` and --top-p, not a--b or ---x; --ctx."), ["--top-k", "--top-p", "--ctx"]);
    assert_eq!(long_options("  -o, --output <OUTPUT>  Output GGUF file"), ["--output"]);
}

#[test]
fn anchors_are_github_s() {
    let headings =
        anchors("# `gguftune plan`: will it fit?\n## Exit codes\n## Exit codes\n```\n# not a heading\n```\n");
    let expected: BTreeSet<String> =
        ["gguftune-plan-will-it-fit", "exit-codes", "exit-codes-1"].into_iter().map(String::from).collect();
    assert_eq!(headings, expected);
}
