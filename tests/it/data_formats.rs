//! JSONL datasets written by the fixture generators: each format is detected, read in full and
//! rendered with the label as the only trained-on text.

use std::fs;

use gguftune::data::{read_jsonl, ChatTemplate, DataError, Format, Message, Record, RenderOptions};
use serde_json::Value;

use crate::common::fixtures::{
    alpaca_rows, chat_rows, dolly_rows, prompt_completion_rows, sentiment_examples, text_rows, write_jsonl,
    CHATML_TEMPLATE, LLAMA2_TEMPLATE, SENTIMENT_INSTRUCTION, SENTIMENT_SYSTEM_PROMPT,
};
use crate::common::temp_dir;

const N: usize = 24;
const SEED: u64 = 7;

/// A fixture generator: `n` rows made from `sentiment_examples(n, seed)`.
type Rows = fn(usize, u64) -> Vec<Value>;

/// The text an example's label is trained as.
type Trained = fn(&str) -> String;

#[test]
fn fixture_datasets_are_read_in_their_format() {
    let generators: [(Rows, Format); 5] = [
        (text_rows, Format::Text),
        (prompt_completion_rows, Format::PromptCompletion),
        (alpaca_rows, Format::Alpaca),
        (dolly_rows, Format::Dolly),
        (chat_rows, Format::Chat),
    ];
    let examples = sentiment_examples(N, SEED);
    let dir = temp_dir();
    for (rows, format) in generators {
        let path = dir.path().join(format!("{format}.jsonl"));
        write_jsonl(&path, &rows(N, SEED)).unwrap();
        let dataset = read_jsonl(&path).unwrap();
        assert_eq!(dataset.format(), format, "seed {SEED}");
        assert_eq!(dataset.len(), N);
        for (i, (entry, example)) in dataset.entries().iter().zip(&examples).enumerate() {
            assert_eq!(entry.line, i + 1);
            let expected = match format {
                Format::Text => {
                    Record::Text { text: format!("Review: {}\nSentiment: {}", example.review, example.label) }
                }
                Format::PromptCompletion => Record::PromptCompletion {
                    prompt: format!("Review: {}\nSentiment:", example.review),
                    completion: format!(" {}", example.label),
                },
                Format::Alpaca => Record::Alpaca {
                    instruction: SENTIMENT_INSTRUCTION.into(),
                    input: example.review.clone(),
                    output: example.label.into(),
                    system: None,
                },
                Format::Dolly => Record::Dolly {
                    instruction: SENTIMENT_INSTRUCTION.into(),
                    context: example.review.clone(),
                    response: example.label.into(),
                },
                Format::Chat => Record::Chat {
                    messages: vec![
                        Message::new("system", SENTIMENT_SYSTEM_PROMPT),
                        Message::new("user", example.review.as_str()),
                        Message::new("assistant", example.label),
                    ],
                },
                _ => unreachable!("no fixture generator for {format}"),
            };
            assert_eq!(entry.record, expected, "{format} line {}", entry.line);
        }
    }
}

#[test]
fn only_the_labels_are_trained_on() {
    let dir = temp_dir();
    let examples = sentiment_examples(N, SEED);
    let chatml = ChatTemplate::new(CHATML_TEMPLATE, "<|begin_of_text|>", "<|im_end|>").unwrap();
    let llama2 = ChatTemplate::new(LLAMA2_TEMPLATE, "<s>", "</s>").unwrap();
    let options = RenderOptions::default();
    let cases: [(Rows, Option<&ChatTemplate>, Trained); 6] = [
        (prompt_completion_rows, None, |label| format!(" {label}")),
        (alpaca_rows, None, str::to_owned),
        (dolly_rows, Some(&chatml), |label| format!("{label}<|im_end|>\n")),
        (alpaca_rows, Some(&llama2), |label| format!(" {label} </s>")),
        (chat_rows, Some(&chatml), |label| format!("{label}<|im_end|>\n")),
        (chat_rows, Some(&llama2), |label| format!(" {label} </s>")),
    ];
    for (i, (rows, template, trained)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.jsonl"));
        write_jsonl(&path, &rows(N, SEED)).unwrap();
        let dataset = read_jsonl(&path).unwrap();
        for (entry, example) in dataset.entries().iter().zip(&examples) {
            let rendered = dataset.render(entry, template, &options).unwrap();
            let trainable: Vec<&str> =
                rendered.segments.iter().filter(|s| s.trainable).map(|s| s.text.as_str()).collect();
            assert_eq!(trainable, [trained(example.label)], "case {i} line {}", entry.line);
            assert!(rendered.text().contains(&example.review), "case {i} line {}", entry.line);
            assert_eq!(rendered.append_eos, template.is_none());
            assert_eq!(rendered.bos_in_text, template.is_some_and(|t| t.bos_token() == "<s>"), "case {i}");
        }
    }
}

#[test]
fn a_bad_line_in_a_fixture_file_is_reported_by_number() {
    let dir = temp_dir();
    let path = dir.path().join("train.jsonl");
    write_jsonl(&path, &alpaca_rows(5, SEED)).unwrap();
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("{\"instruction\": \"x\", \"input\": \"y\"}\n");
    fs::write(&path, text).unwrap();
    let e = read_jsonl(&path).unwrap_err();
    assert!(matches!(e, DataError::MissingField { line: 6, column: 1, format: Format::Alpaca, .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("{}:6:1: expected field 'output' (alpaca format)", path.display()));

    let missing = dir.path().join("missing.jsonl");
    assert!(matches!(read_jsonl(&missing), Err(DataError::Io { .. })));
}
