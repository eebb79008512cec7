//! From rendered dataset records to training examples: tokenization exactly as llama.cpp does it
//! for the model, with the loss mask carried over from the trainable text spans.

use crate::data::{ChatTemplate, DataError, Dataset, Entry, RenderOptions};
use crate::ggml::LlamaModel;

use super::Example;

/// What happened to a dataset's examples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExampleStats {
    /// Examples kept.
    pub used: usize,
    /// Examples longer than the context, cut to fit.
    pub truncated: usize,
    /// Examples dropped: too long with `skip_overlong`, or nothing to learn from.
    pub skipped: usize,
    /// Tokens in the kept examples, and how many of them carry loss.
    pub tokens: usize,
    pub target_tokens: usize,
}

/// Why examples could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExampleError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Ggml(#[from] crate::ggml::Error),
    #[error("{}: every one of the {total} examples was skipped ({overlong} longer than the context of {ctx} tokens, the rest without any completion tokens to learn from)", path.display())]
    NothingToTrain { path: std::path::PathBuf, total: usize, overlong: usize, ctx: usize },
}

/// Tokenizes every record of `dataset` with `vocab` (the base model's vocabulary), rendering chat
/// records with `template`. Trainable text becomes positions with loss; each example is cut to
/// `ctx` tokens, or dropped when `skip_overlong`.
pub fn build_examples(
    dataset: &Dataset,
    template: Option<&ChatTemplate>,
    vocab: &LlamaModel,
    options: &RenderOptions,
    ctx: usize,
    skip_overlong: bool,
) -> Result<(Vec<Example>, ExampleStats), ExampleError> {
    let mut stats = ExampleStats::default();
    let mut overlong = 0;
    let mut examples = Vec::new();
    for entry in dataset.entries() {
        let built = build_example(dataset, entry, template, vocab, options, ctx, skip_overlong)?;
        overlong += usize::from(built.overlong);
        stats.truncated += usize::from(built.overlong && !skip_overlong);
        match built.example {
            Some(example) => {
                stats.used += 1;
                stats.tokens += example.tokens.len();
                stats.target_tokens += example.targets.iter().flatten().count();
                examples.push(example);
            }
            None => stats.skipped += 1,
        }
    }
    if examples.is_empty() {
        return Err(ExampleError::NothingToTrain {
            path: dataset.path().to_owned(),
            total: dataset.len(),
            overlong,
            ctx,
        });
    }
    Ok((examples, stats))
}

/// One record tokenized as [`build_examples`] does it.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltExample {
    /// The example; `None` when it was dropped (too long with `skip_overlong`, or no position
    /// with loss).
    pub example: Option<Example>,
    /// The record was longer than the context (and so cut, or dropped).
    pub overlong: bool,
}

/// Tokenizes `entry` (one of `dataset`'s) as [`build_examples`] does each record.
pub fn build_example(
    dataset: &Dataset,
    entry: &Entry,
    template: Option<&ChatTemplate>,
    vocab: &LlamaModel,
    options: &RenderOptions,
    ctx: usize,
    skip_overlong: bool,
) -> Result<BuiltExample, ExampleError> {
    let dropped = |overlong| Ok(BuiltExample { example: None, overlong });
    let rendered = dataset.render(entry, template, options)?;
    // Tokenize growing prefixes of the text; the tokens of the whole text are what the model
    // sees, and each segment's tokens start where the prefix's tokens stop agreeing.
    let add_bos = !rendered.bos_in_text;
    let mut text = String::new();
    let mut bounds = Vec::new();
    for seg in &rendered.segments {
        text.push_str(&seg.text);
        bounds.push((vocab.tokenize(&text, add_bos, true)?, seg.trainable));
    }
    let Some((mut tokens, _)) = bounds.last().cloned() else { return dropped(false) };
    let mut trainable = vec![false; tokens.len()];
    let mut start = 0;
    for (i, (toks, is_trainable)) in bounds.iter().enumerate() {
        let end = if i + 1 == bounds.len() { tokens.len() } else { common_len(toks, &tokens).max(start) };
        trainable[start..end].fill(*is_trainable);
        start = end;
    }
    if rendered.append_eos {
        if let Some(eos) = vocab.eos_token() {
            tokens.push(eos);
            trainable.push(true);
        }
    }
    let overlong = tokens.len() > ctx;
    if overlong {
        if skip_overlong {
            return dropped(true);
        }
        tokens.truncate(ctx);
        trainable.truncate(ctx);
    }
    let targets: Vec<Option<i32>> =
        (0..tokens.len()).map(|i| (i + 1 < tokens.len() && trainable[i + 1]).then(|| tokens[i + 1])).collect();
    if targets.iter().all(Option::is_none) {
        return dropped(overlong);
    }
    Ok(BuiltExample { example: Some(Example { tokens, targets }), overlong })
}

fn common_len(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
