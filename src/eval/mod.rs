//! Evaluation of a model, with or without adapters, on a held-out dataset, through llama.cpp.
//!
//! Two kinds of numbers:
//! - **Loss and perplexity** over the completion tokens, exactly the tokens finetune trains on:
//!   records are rendered and tokenized by [`crate::train::build_example`] (same masking, same
//!   `ctx` and overlong handling), and the loss is the mean negative log-likelihood of each
//!   target token under llama.cpp's logits. The context is to be made with
//!   `LlamaContext::with_precision(.., exact = true)` (f32 KV cache, no flash attention), so that
//!   the numbers are comparable with the training graph's.
//! - **Task metrics**, when records carry a reference answer (the completion, Alpaca output,
//!   Dolly response or last assistant message): the answer is generated greedily from the tokens
//!   before the last completion span, stopping at an end-of-generation token or `max_new`
//!   tokens, and scored against the reference ([`metrics`]): accuracy for labels, entity F1 for
//!   JSON extraction, ROUGE-L for free text. [`TaskChoice::Auto`] picks the task from the
//!   references.
//!
//! What it does not do: sampling (generation is greedy so that scores are repeatable), batching
//! several examples into one decode, or judging free text by anything beyond ROUGE-L.

pub mod metrics;

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::data::{ChatTemplate, Dataset, Record, RenderOptions};
use crate::generate::{generate, GenerateError, GenerateOptions};
use crate::ggml::{self, LlamaContext, LlamaModel, SamplerParams};
use crate::train::{build_example, Example, ExampleError};

use metrics::{exact_match, parse_entities, rouge_l_f1, EntityCounts};

/// A task whose answers can be scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Short labels from a small set: accuracy (exact match after trimming and lowercasing).
    Classify,
    /// JSON entities: micro precision, recall and F1.
    Extract,
    /// Free text: mean ROUGE-L F1.
    Summarize,
}

impl Task {
    /// The task's name as `--task` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Extract => "extract",
            Task::Summarize => "summarize",
        }
    }

    /// The name of the metric that sums the task up.
    pub fn metric_name(self) -> &'static str {
        match self {
            Task::Classify => "accuracy",
            Task::Extract => "entity F1",
            Task::Summarize => "ROUGE-L F1",
        }
    }
}

/// Which task to score (`--task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskChoice {
    /// Decide from the references ([`detect_task`]); none when a record has no reference.
    Auto,
    /// This task: every record must have a reference.
    Task(Task),
    /// Loss and perplexity only.
    None,
}

impl TaskChoice {
    /// `auto`, `classify`, `extract`, `summarize` or `none`.
    pub fn from_name(name: &str) -> Option<TaskChoice> {
        Some(match name {
            "auto" => TaskChoice::Auto,
            "classify" => TaskChoice::Task(Task::Classify),
            "extract" => TaskChoice::Task(Task::Extract),
            "summarize" => TaskChoice::Task(Task::Summarize),
            "none" => TaskChoice::None,
            _ => return None,
        })
    }
}

/// Most words in a reference that [`detect_task`] still takes for a label.
pub const MAX_LABEL_WORDS: usize = 3;
/// Most distinct references that [`detect_task`] still takes for a set of labels.
pub const MAX_LABELS: usize = 50;

/// The task the references call for: extraction when every one is entity JSON
/// ([`metrics::parse_entities`]), classification when every one is a single line of at most
/// [`MAX_LABEL_WORDS`] words and there are at most [`MAX_LABELS`] distinct ones, summarization
/// (free text) otherwise.
pub fn detect_task<'a>(references: impl Iterator<Item = &'a str> + Clone) -> Task {
    let json = |r: &str| r.trim_start().starts_with(['{', '[']) && parse_entities(r).is_some();
    if references.clone().all(json) {
        return Task::Extract;
    }
    let label = |r: &str| !r.trim().contains('\n') && r.split_whitespace().count() <= MAX_LABEL_WORDS;
    let distinct: BTreeSet<String> = references.clone().map(metrics::normalize).collect();
    if references.clone().all(label) && distinct.len() <= MAX_LABELS {
        Task::Classify
    } else {
        Task::Summarize
    }
}

/// The reference answer of a record: what finetune would train it to say.
pub fn reference(record: &Record) -> Option<&str> {
    match record {
        Record::Text { .. } => None,
        Record::PromptCompletion { completion, .. } => Some(completion),
        Record::Alpaca { output, .. } => Some(output),
        Record::Dolly { response, .. } => Some(response),
        Record::Chat { messages } => messages.last().filter(|m| m.role == "assistant").map(|m| m.content.as_str()),
    }
}

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// Reading, rendering or tokenizing the records failed (or none is left).
    #[error(transparent)]
    Examples(#[from] ExampleError),
    /// llama.cpp failed.
    #[error(transparent)]
    Ggml(#[from] ggml::Error),
    /// Generating an answer failed.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// A task was asked for and a record has no reference answer to score against.
    #[error("{}:{line}: --task {task} needs a reference answer (completion, output, response or a last assistant message), and this {format} record has none", path.display(), task = task.name())]
    NoReference { path: PathBuf, line: usize, task: Task, format: crate::data::Format },
    /// `--task extract`, and a reference is not entity JSON.
    #[error("{}:{line}: the reference answer is not entity JSON (expected an object of type -> list of strings, or a list of {{\"type\", \"text\"}} objects or strings)", path.display())]
    BadReference { path: PathBuf, line: usize },
}

/// One record ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalItem {
    /// Its line in the dataset.
    pub line: usize,
    /// Tokens and loss targets, as finetune builds them.
    pub example: Example,
    /// The reference answer, if the record has one.
    pub reference: Option<String>,
}

impl EvalItem {
    /// The tokens before the last span of completion tokens: what the answer is generated from.
    pub fn prompt(&self) -> &[i32] {
        let targets = &self.example.targets;
        // targets[i] is the token at i + 1; the last run of targets starts at position start + 1.
        let last = targets.iter().rposition(Option::is_some).unwrap_or(0);
        let start = targets[..last].iter().rposition(Option::is_none).map_or(0, |i| i + 1);
        &self.example.tokens[..=start]
    }
}

/// A dataset prepared for evaluation.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// The records kept, in file order.
    pub items: Vec<EvalItem>,
    /// Records dropped: longer than the context with `skip_overlong`, or with nothing to score.
    pub skipped: usize,
    /// Records cut to the context.
    pub truncated: usize,
    /// The task scored, if any.
    pub task: Option<Task>,
}

impl EvalSet {
    /// Tokenizes `dataset` as finetune does (`render`, `ctx`, `skip_overlong`) and decides the
    /// task.
    pub fn prepare(
        dataset: &Dataset,
        template: Option<&ChatTemplate>,
        vocab: &LlamaModel,
        render: &RenderOptions,
        ctx: usize,
        skip_overlong: bool,
        task: TaskChoice,
    ) -> Result<EvalSet, EvalError> {
        let (mut items, mut skipped, mut truncated, mut overlong) = (Vec::new(), 0, 0, 0);
        for entry in dataset.entries() {
            let built = build_example(dataset, entry, template, vocab, render, ctx, skip_overlong)?;
            overlong += usize::from(built.overlong);
            truncated += usize::from(built.overlong && !skip_overlong);
            let Some(example) = built.example else {
                skipped += 1;
                continue;
            };
            let reference = reference(&entry.record).map(str::to_owned);
            items.push(EvalItem { line: entry.line, example, reference });
        }
        if items.is_empty() {
            let path = dataset.path().to_owned();
            return Err(ExampleError::NothingToTrain { path, total: dataset.len(), overlong, ctx }.into());
        }
        let task = match task {
            TaskChoice::None => None,
            TaskChoice::Auto if items.iter().any(|i| i.reference.is_none()) => None,
            TaskChoice::Auto => Some(detect_task(items.iter().filter_map(|i| i.reference.as_deref()))),
            TaskChoice::Task(task) => {
                for item in &items {
                    let path = || dataset.path().to_owned();
                    match item.reference.as_deref() {
                        None => {
                            let format = dataset.format();
                            return Err(EvalError::NoReference { path: path(), line: item.line, task, format });
                        }
                        Some(r) if task == Task::Extract && parse_entities(r).is_none() => {
                            return Err(EvalError::BadReference { path: path(), line: item.line });
                        }
                        Some(_) => {}
                    }
                }
                Some(task)
            }
        };
        Ok(EvalSet { items, skipped, truncated, task })
    }

    /// Tokens of the longest example.
    pub fn max_tokens(&self) -> usize {
        self.items.iter().map(|i| i.example.tokens.len()).max().unwrap_or(0)
    }
}

/// The task metric of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "task", rename_all = "lowercase")]
pub enum TaskScores {
    /// Exact-match accuracy.
    Classify {
        /// Correct answers over answers.
        accuracy: f64,
        /// Correct answers.
        correct: usize,
    },
    /// Entity-level micro scores.
    Extract {
        /// Micro precision.
        precision: f64,
        /// Micro recall.
        recall: f64,
        /// Micro F1.
        f1: f64,
    },
    /// Mean ROUGE-L F1.
    Summarize {
        /// Mean over examples.
        rouge_l: f64,
    },
}

impl TaskScores {
    /// The number that sums the task up: accuracy, F1 or ROUGE-L, in `[0, 1]`.
    pub fn headline(&self) -> f64 {
        match *self {
            TaskScores::Classify { accuracy, .. } => accuracy,
            TaskScores::Extract { f1, .. } => f1,
            TaskScores::Summarize { rouge_l } => rouge_l,
        }
    }
}

/// The numbers of one evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scores {
    /// Mean negative log-likelihood per completion token (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Completion tokens scored.
    pub target_tokens: usize,
    /// Examples scored.
    pub examples: usize,
    /// The task metric, when a task is scored.
    pub metric: Option<TaskScores>,
}

/// Evaluates `set` in `ctx` (a context of `model` with the adapters under test set, large enough
/// for the longest example plus `max_new` tokens), calling `on_example` after each example.
pub fn evaluate(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    set: &EvalSet,
    max_new: usize,
    on_example: &mut dyn FnMut(),
) -> Result<Scores, EvalError> {
    let (mut nll, mut target_tokens) = (0f64, 0usize);
    let (mut correct, mut entities, mut rouge) = (0usize, EntityCounts::default(), 0f64);
    let greedy = GenerateOptions { max_new, sampler: SamplerParams { temp: 0.0, top_k: 0, top_p: 1.0, seed: 0 } };
    for item in &set.items {
        let targets = &item.example.targets;
        let positions: Vec<usize> = (0..targets.len()).filter(|&i| targets[i].is_some()).collect();
        let logits = ctx.logits_at(&item.example.tokens, &positions)?;
        for (row, target) in logits.iter().zip(targets.iter().flatten()) {
            nll += negative_log_likelihood(row, *target as usize);
            target_tokens += 1;
        }
        if let (Some(task), Some(reference)) = (set.task, item.reference.as_deref()) {
            let answer = generate(model, ctx, item.prompt(), &greedy, &mut |_| Ok(()))?.text;
            match task {
                Task::Classify => correct += usize::from(exact_match(&answer, reference)),
                Task::Extract => {
                    let gold = parse_entities(reference).unwrap_or_default();
                    entities.add(EntityCounts::of(&parse_entities(&answer).unwrap_or_default(), &gold));
                }
                Task::Summarize => rouge += rouge_l_f1(&answer, reference),
            }
        }
        on_example();
    }
    let n = set.items.len();
    let metric = set.task.map(|task| match task {
        Task::Classify => TaskScores::Classify { accuracy: correct as f64 / n as f64, correct },
        Task::Extract => {
            TaskScores::Extract { precision: entities.precision(), recall: entities.recall(), f1: entities.f1() }
        }
        Task::Summarize => TaskScores::Summarize { rouge_l: rouge / n as f64 },
    });
    let loss = nll / target_tokens.max(1) as f64;
    Ok(Scores { loss, perplexity: loss.exp(), target_tokens, examples: n, metric })
}

/// `-log softmax(logits)[target]`, computed in f64 from the maximum for stability.
fn negative_log_likelihood(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[target] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_detected_from_the_references() {
        let detect = |refs: &[&str]| detect_task(refs.iter().copied());
        assert_eq!(detect(&["positive", " negative", "positive"]), Task::Classify);
        assert_eq!(detect(&["New York City", "Paris"]), Task::Classify);
        assert_eq!(detect(&[r#"{"person": ["Ada"]}"#, "[]"]), Task::Extract);
        assert_eq!(detect(&["positive", "A long answer that goes on for a while."]), Task::Summarize);
        assert_eq!(detect(&["two\nlines"]), Task::Summarize);
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("label{i}")).collect();
        assert_eq!(detect_task(many.iter().map(String::as_str)), Task::Summarize);
    }

    #[test]
    fn the_prompt_ends_where_the_last_completion_starts() {
        let item = |tokens: Vec<i32>, targets: Vec<Option<i32>>| EvalItem {
            line: 1,
            example: Example { tokens, targets },
            reference: None,
        };
        // Prompt 1 2 3, completion 4 5.
        let one = item(vec![1, 2, 3, 4, 5], vec![None, None, Some(4), Some(5), None]);
        assert_eq!(one.prompt(), [1, 2, 3]);
        // Two assistant turns: 2 | 3 4 trained; 5 | 6 trained.
        let two = item(vec![1, 2, 3, 4, 5, 6], vec![None, Some(3), Some(4), None, Some(6), None]);
        assert_eq!(two.prompt(), [1, 2, 3, 4, 5]);
        let all = item(vec![1, 2, 3], vec![Some(2), Some(3), None]);
        assert_eq!(all.prompt(), [1]);
    }

    #[test]
    fn nll_by_hand() {
        // softmax([0, ln 3]) = [1/4, 3/4].
        let logits = [0.0, 3f32.ln()];
        assert!((negative_log_likelihood(&logits, 1) - (4.0f64 / 3.0).ln()).abs() < 1e-6);
        assert!((negative_log_likelihood(&logits, 0) - 4f64.ln()).abs() < 1e-6);
    }
}
