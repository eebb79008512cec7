//! From a record to training text: which pieces the loss is computed on.
//!
//! - `text`: all of it is trained on.
//! - `prompt` / `completion`: the completion is, the prompt is not; they are joined as they are.
//! - Alpaca and Dolly without a chat template: the Alpaca prompt ([`alpaca_prompt`]) is not
//!   trained on, the answer is. With a chat template they become a conversation (an optional
//!   system message, the user's instruction, the assistant's answer) rendered like a chat record.
//! - chat: rendered whole with the chat template; each assistant message's text, together with
//!   the end-of-turn text the template writes after it, is trained on, everything else is not.
//!
//! The assistant spans come from rendering prefixes of the conversation, the way TRL's
//! `apply_chat_template` splits conversational prompt-completion data (the prompt rendered with
//! `add_generation_prompt=True`; the completion is what the full rendering adds to it) and
//! axolotl's chat-template strategy finds turns, here for every assistant turn: with
//! `messages[..i]` and `add_generation_prompt=true` the template writes everything up to where
//! assistant message `i` starts; with `messages[..=i]` it writes everything up to where that
//! turn ends. Both must be prefixes of the whole conversation's rendering (and the spans in
//! order); a template that writes earlier turns differently once more messages follow is not
//! "prefix-stable", and that is an error, not a silent mis-mask.
//!
//! [`RenderOptions::train_on_prompt`] marks everything trainable.

use super::{ChatTemplate, Message, Record, TemplateError};

/// The Alpaca preamble for an instruction with an input, from Stanford Alpaca's `train.py`
/// `PROMPT_DICT["prompt_input"]` (the same text as axolotl's `AlpacaPrompter.system_prompt`).
pub const ALPACA_PREAMBLE: &str = "Below is an instruction that describes a task, paired with an input that provides \
                                   further context. Write a response that appropriately completes the request.\n\n";

/// The Alpaca preamble for an instruction alone, from Stanford Alpaca's `train.py`
/// `PROMPT_DICT["prompt_no_input"]` (axolotl's `AlpacaPrompter.system_no_input_prompt`).
pub const ALPACA_PREAMBLE_NO_INPUT: &str =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n";

/// How records are turned into segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Train on the whole text, prompts included (`--train-on-prompt`).
    pub train_on_prompt: bool,
    /// A system prompt for records that have none: a system message put before a conversation
    /// that does not open with one, and the preamble of an Alpaca prompt. Ollama does this with
    /// a model's SYSTEM (server/routes.go, `ChatHandler`), so training on an Ollama model sees
    /// the conversations Ollama serves.
    pub system: Option<String>,
    /// Merge consecutive messages of one role (tool messages excepted) into one, their contents
    /// joined by a blank line, before the template sees them, as Ollama does for its Go
    /// templates (template/template.go, `collate`).
    pub merge_roles: bool,
}

/// A piece of an example's text and whether the loss is computed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The text.
    pub text: String,
    /// True for completions and assistant turns (everything with `train_on_prompt`).
    pub trainable: bool,
}

impl Segment {
    fn new(text: impl Into<String>, trainable: bool) -> Segment {
        Segment { text: text.into(), trainable }
    }
}

/// An example as text: its segments, in order, plus what the tokenizer step must know about its
/// ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Non-empty segments; neighbours differ in `trainable`.
    pub segments: Vec<Segment>,
    /// The text begins with the chat template's BOS token text (many templates write
    /// `{{ bos_token }}`): the tokenizer step must not add another BOS token.
    pub bos_in_text: bool,
    /// The example has no end-of-turn text of its own (text, prompt-completion, and Alpaca or
    /// Dolly without a chat template): the tokenizer step appends the EOS token, trainable, as
    /// Stanford Alpaca and TRL do. False for anything rendered by a chat template, which writes
    /// its own end of turn.
    pub append_eos: bool,
}

impl Rendered {
    /// The whole text.
    pub fn text(&self) -> String {
        self.segments.iter().map(|s| s.text.as_str()).collect()
    }

    /// Whether any segment is trained on.
    pub fn has_trainable(&self) -> bool {
        self.segments.iter().any(|s| s.trainable)
    }
}

/// An error rendering one record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The chat template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// A chat record, and no chat template to render it with.
    #[error("chat records need a chat template, and there is none (hint: the model's GGUF has no 'tokenizer.chat_template'; give one, or use the text, prompt-completion or alpaca format)")]
    NoChatTemplate,
    /// The template renders a conversation's beginning differently once more messages follow,
    /// so its assistant turns cannot be cut out of the whole rendering.
    #[error("the chat template is not prefix-stable at message {index} (role '{role}'): {check} (hint: templates that render earlier turns differently from the last one, e.g. by dropping their reasoning, cannot be split into turns; --train-on-prompt trains on the whole text instead)")]
    NotPrefixStable {
        /// Index of the assistant message in `messages`.
        index: usize,
        /// Its role.
        role: String,
        /// Which of the two renderings failed the check.
        check: PrefixCheck,
    },
}

/// The rendering that failed the prefix check of [`RenderError::NotPrefixStable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixCheck {
    /// `messages[..index]` with `add_generation_prompt=true`.
    GenerationPrompt,
    /// `messages[..=index]`.
    Turn,
}

impl std::fmt::Display for PrefixCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrefixCheck::GenerationPrompt => {
                "the messages before it, rendered with add_generation_prompt, are not a prefix of the whole conversation"
            }
            PrefixCheck::Turn => "the messages up to it, rendered, are not a prefix of the whole conversation",
        })
    }
}

/// The Alpaca prompt for `instruction` and `input` (empty: none), ending where the answer
/// starts.
///
/// The text is Stanford Alpaca's (`train.py`, `PROMPT_DICT`) with a newline after
/// `### Response:`, as axolotl (`src/axolotl/prompters.py`, `AlpacaPrompter`, instruct style) and
/// alpaca-lora (`templates/alpaca.json`) write it, so the answer starts on its own line. A
/// `system` text replaces the preamble (its sentences "Below is an instruction...").
pub fn alpaca_prompt(instruction: &str, input: &str, system: Option<&str>) -> String {
    let preamble = match system {
        Some(system) => format!("{system}\n\n"),
        None if input.is_empty() => ALPACA_PREAMBLE_NO_INPUT.to_owned(),
        None => ALPACA_PREAMBLE.to_owned(),
    };
    if input.is_empty() {
        format!("{preamble}### Instruction:\n{instruction}\n\n### Response:\n")
    } else {
        format!("{preamble}### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
    }
}

/// Renders `record` into segments: with `template` for chat records (required) and for Alpaca
/// and Dolly records (optional), never for text and prompt-completion records.
pub fn render(
    record: &Record,
    template: Option<&ChatTemplate>,
    options: &RenderOptions,
) -> Result<Rendered, RenderError> {
    match (record, template) {
        (Record::Text { text }, _) => Ok(plain(vec![Segment::new(text.as_str(), true)], options)),
        (Record::PromptCompletion { prompt, completion }, _) => {
            Ok(plain(vec![Segment::new(prompt.as_str(), false), Segment::new(completion.as_str(), true)], options))
        }
        (Record::Alpaca { instruction, input, output, system }, None) => {
            let prompt = alpaca_prompt(instruction, input, system.as_deref().or(options.system.as_deref()));
            Ok(plain(vec![Segment::new(prompt, false), Segment::new(output.as_str(), true)], options))
        }
        (Record::Dolly { instruction, context, response }, None) => {
            let prompt = alpaca_prompt(instruction, context, options.system.as_deref());
            Ok(plain(vec![Segment::new(prompt, false), Segment::new(response.as_str(), true)], options))
        }
        (Record::Alpaca { instruction, input, output, system }, Some(template)) => {
            chat(template, &instruction_messages(instruction, input, output, system.as_deref()), options)
        }
        (Record::Dolly { instruction, context, response }, Some(template)) => {
            chat(template, &instruction_messages(instruction, context, response, None), options)
        }
        (Record::Chat { messages }, Some(template)) => chat(template, messages, options),
        (Record::Chat { .. }, None) => Err(RenderError::NoChatTemplate),
    }
}

/// An instruction record as a conversation: the instruction and its input joined by a newline as
/// the user's message, as LLaMA-Factory's `AlpacaDatasetConverter` does.
fn instruction_messages(instruction: &str, input: &str, answer: &str, system: Option<&str>) -> Vec<Message> {
    let mut messages = Vec::with_capacity(3);
    if let Some(system) = system {
        messages.push(Message::new("system", system));
    }
    let user = if input.is_empty() { instruction.to_owned() } else { format!("{instruction}\n{input}") };
    messages.push(Message::new("user", user));
    messages.push(Message::new("assistant", answer));
    messages
}

/// Segments of a record rendered without a template.
fn plain(segments: Vec<Segment>, options: &RenderOptions) -> Rendered {
    Rendered { segments: tidy(segments, options), bos_in_text: false, append_eos: true }
}

/// Renders a conversation and marks its assistant turns trainable.
fn chat(template: &ChatTemplate, messages: &[Message], options: &RenderOptions) -> Result<Rendered, RenderError> {
    let prepared: Vec<Message>;
    let messages = if options.system.is_some() || options.merge_roles {
        prepared = prepare(messages, options);
        &prepared[..]
    } else {
        messages
    };
    let full = template.render(messages, false)?;
    let bos = template.bos_token();
    let bos_in_text = !bos.is_empty() && full.starts_with(bos);
    if options.train_on_prompt {
        return Ok(Rendered {
            segments: tidy(vec![Segment::new(full, true)], options),
            bos_in_text,
            append_eos: false,
        });
    }
    let eos = template.eos_token();
    let mut segments = Vec::new();
    let mut done = 0; // bytes of `full` already in segments
    for (index, message) in messages.iter().enumerate() {
        if message.role != "assistant" {
            continue;
        }
        let unstable = |check| RenderError::NotPrefixStable { index, role: message.role.clone(), check };
        let prompt = template.render(&messages[..index], true)?;
        let start = prompt.len();
        if start < done || !full.starts_with(&prompt) {
            return Err(unstable(PrefixCheck::GenerationPrompt));
        }
        let turn = template.render(&messages[..=index], false)?;
        // Two ways templates treat the last message specially, both around the EOS text, and
        // both still prefix-stable in substance:
        // - some end the whole conversation with EOS (Phi-3-small: `{% else %}{{ eos_token }}`
        //   after the loop), so `turn` ends with an EOS that the full rendering has only at its
        //   very end: the turn is `turn` without it;
        // - some close a message only when another follows (Qwen1.5: `{% if not loop.last %}`),
        //   so `turn` lacks the EOS that follows it in the full rendering: it still ends the
        //   assistant's answer, and is trained on with it.
        let turn = match turn.strip_suffix(eos) {
            Some(stripped) if !eos.is_empty() && !full.starts_with(&turn) => stripped,
            _ => turn.as_str(),
        };
        if turn.len() < start || !full.starts_with(turn) {
            return Err(unstable(PrefixCheck::Turn));
        }
        let mut end = turn.len();
        if !eos.is_empty() && full[end..].starts_with(eos) {
            end += eos.len();
        }
        segments.push(Segment::new(&full[done..start], false));
        segments.push(Segment::new(&full[start..end], true));
        done = end;
    }
    segments.push(Segment::new(&full[done..], false));
    Ok(Rendered { segments: tidy(segments, options), bos_in_text, append_eos: false })
}

/// The conversation the template sees: with [`RenderOptions::system`] first when it has no
/// system message, and with [`RenderOptions::merge_roles`] applied.
fn prepare(messages: &[Message], options: &RenderOptions) -> Vec<Message> {
    let system = options.system.as_deref().filter(|_| messages.first().is_none_or(|m| m.role != "system"));
    let all = system.map(|s| Message::new("system", s)).into_iter().chain(messages.iter().cloned());
    let mut out: Vec<Message> = Vec::with_capacity(messages.len() + 1);
    for message in all {
        match out.last_mut() {
            Some(last) if options.merge_roles && last.role == message.role && message.role != "tool" => {
                last.content.push_str("\n\n");
                last.content.push_str(&message.content);
            }
            _ => out.push(message),
        }
    }
    out
}

/// Drops empty segments, applies `train_on_prompt` and merges neighbours of the same kind.
fn tidy(segments: Vec<Segment>, options: &RenderOptions) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for mut segment in segments {
        segment.trainable |= options.train_on_prompt;
        if segment.text.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.trainable == segment.trainable => last.text.push_str(&segment.text),
            _ => out.push(segment),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn parts(rendered: &Rendered) -> Vec<(&str, bool)> {
        rendered.segments.iter().map(|s| (s.text.as_str(), s.trainable)).collect()
    }

    fn chat_record(messages: &[(&str, &str)]) -> Record {
        Record::Chat { messages: messages.iter().map(|(role, content)| Message::new(*role, *content)).collect() }
    }

    #[test]
    fn text_and_prompt_completion_need_no_template() {
        let opts = RenderOptions::default();
        let rendered = render(&Record::Text { text: "hello".into() }, None, &opts).unwrap();
        assert_eq!(parts(&rendered), [("hello", true)]);
        assert!(rendered.append_eos && !rendered.bos_in_text);
        let record = Record::PromptCompletion { prompt: "2+2=".into(), completion: "4".into() };
        assert_eq!(parts(&render(&record, None, &opts).unwrap()), [("2+2=", false), ("4", true)]);
        let all = RenderOptions { train_on_prompt: true, ..RenderOptions::default() };
        assert_eq!(parts(&render(&record, None, &all).unwrap()), [("2+2=4", true)]);
        // A template, if given, is not used for them.
        let template = ChatTemplate::new(CHATML, "", "").unwrap();
        assert_eq!(parts(&render(&record, Some(&template), &opts).unwrap()), [("2+2=", false), ("4", true)]);
    }

    #[test]
    fn alpaca_prompt_text() {
        let with_input = "Below is an instruction that describes a task, paired with an input that provides further \
                          context. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd \
                          the numbers.\n\n### Input:\n2 3\n\n### Response:\n";
        assert_eq!(alpaca_prompt("Add the numbers.", "2 3", None), with_input);
        let without =
            "Below is an instruction that describes a task. Write a response that appropriately completes the \
                       request.\n\n### Instruction:\nSay hi.\n\n### Response:\n";
        assert_eq!(alpaca_prompt("Say hi.", "", None), without);
        assert_eq!(
            alpaca_prompt("Say hi.", "", Some("Be brief.")),
            "Be brief.\n\n### Instruction:\nSay hi.\n\n### Response:\n"
        );
    }

    #[test]
    fn alpaca_and_dolly_without_template() {
        let opts = RenderOptions::default();
        let record =
            Record::Alpaca { instruction: "Add.".into(), input: "2 3".into(), output: "5".into(), system: None };
        let rendered = render(&record, None, &opts).unwrap();
        assert_eq!(parts(&rendered), [(alpaca_prompt("Add.", "2 3", None).as_str(), false), ("5", true)]);
        assert!(rendered.append_eos);
        let record = Record::Dolly { instruction: "Add.".into(), context: "2 3".into(), response: "5".into() };
        assert_eq!(render(&record, None, &opts).unwrap(), rendered);
    }

    #[test]
    fn a_default_system_goes_to_records_without_one_as_ollama_puts_its_system() {
        let template = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let opts = RenderOptions { system: Some("Be brief.".into()), ..RenderOptions::default() };
        let chat = chat_record(&[("user", "Hi"), ("assistant", "Hello")]);
        let rendered = render(&chat, Some(&template), &opts).unwrap();
        assert!(rendered.text().starts_with("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"));
        assert_eq!(rendered.segments[1].text, "Hello<|im_end|>\n");
        // A conversation with its own system message keeps it alone.
        let own = chat_record(&[("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello")]);
        let rendered = render(&own, Some(&template), &opts).unwrap();
        assert!(rendered.text().starts_with("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user"));
        assert!(!rendered.text().contains("Be brief."));
        // Without a template: the Alpaca preamble, unless the record has a system of its own.
        let dolly = Record::Dolly { instruction: "Add.".into(), context: String::new(), response: "5".into() };
        let rendered = render(&dolly, None, &opts).unwrap();
        assert_eq!(rendered.segments[0].text, alpaca_prompt("Add.", "", Some("Be brief.")));
        let alpaca = Record::Alpaca {
            instruction: "Add.".into(),
            input: String::new(),
            output: "5".into(),
            system: Some("Be kind.".into()),
        };
        assert_eq!(render(&alpaca, None, &opts).unwrap().segments[0].text, alpaca_prompt("Add.", "", Some("Be kind.")));
    }

    #[test]
    fn merge_roles_joins_consecutive_messages_of_one_role_as_ollama_does() {
        let template = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let opts = RenderOptions { system: Some("S".into()), merge_roles: true, ..RenderOptions::default() };
        let chat = chat_record(&[
            ("user", "a"),
            ("user", "b"),
            ("assistant", "c"),
            ("tool", "t1"),
            ("tool", "t2"),
            ("assistant", "d"),
            ("assistant", "e"),
        ]);
        let rendered = render(&chat, Some(&template), &opts).unwrap();
        let expected = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na\n\nb<|im_end|>\n<|im_start|>assistant\nc<|im_end|>\n\
                        <|im_start|>tool\nt1<|im_end|>\n<|im_start|>tool\nt2<|im_end|>\n<|im_start|>assistant\nd\n\ne<|im_end|>\n";
        assert_eq!(rendered.text(), expected);
        let trained: Vec<&str> = rendered.segments.iter().filter(|s| s.trainable).map(|s| s.text.as_str()).collect();
        assert_eq!(trained, ["c<|im_end|>\n", "d\n\ne<|im_end|>\n"]);
    }

    #[test]
    fn alpaca_with_template_is_a_conversation() {
        let template = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let record = Record::Alpaca {
            instruction: "Add.".into(),
            input: "2 3".into(),
            output: "5".into(),
            system: Some("Be brief.".into()),
        };
        let rendered = render(&record, Some(&template), &RenderOptions::default()).unwrap();
        let prompt =
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAdd.\n2 3<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(parts(&rendered), [(prompt, false), ("5<|im_end|>\n", true)]);
        assert!(!rendered.append_eos && !rendered.bos_in_text);
    }

    #[test]
    fn chat_marks_each_assistant_turn() {
        let template = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let record =
            chat_record(&[("system", "S"), ("user", "A"), ("assistant", "B"), ("user", "C"), ("assistant", "D")]);
        let rendered = render(&record, Some(&template), &RenderOptions::default()).unwrap();
        assert_eq!(
            parts(&rendered),
            [
                ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\n", false),
                ("B<|im_end|>\n", true),
                ("<|im_start|>user\nC<|im_end|>\n<|im_start|>assistant\n", false),
                ("D<|im_end|>\n", true),
            ]
        );
        assert_eq!(
            rendered.text(),
            template
                .render(
                    match &record {
                        Record::Chat { messages } => messages,
                        _ => unreachable!(),
                    },
                    false
                )
                .unwrap()
        );
        let all =
            render(&record, Some(&template), &RenderOptions { train_on_prompt: true, ..RenderOptions::default() })
                .unwrap();
        assert_eq!(all.segments.len(), 1);
        assert!(all.segments[0].trainable);
        assert_eq!(all.text(), rendered.text());
    }

    #[test]
    fn chat_without_assistant_trains_on_nothing() {
        let template = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let rendered = render(&chat_record(&[("user", "A")]), Some(&template), &RenderOptions::default()).unwrap();
        assert!(!rendered.has_trainable());
    }

    #[test]
    fn chat_needs_a_template() {
        let e = render(&chat_record(&[("user", "A")]), None, &RenderOptions::default()).unwrap_err();
        assert!(matches!(e, RenderError::NoChatTemplate));
    }

    #[test]
    fn bos_text_is_reported() {
        let source = "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";
        let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let rendered =
            render(&chat_record(&[("user", "A"), ("assistant", "B")]), Some(&template), &RenderOptions::default())
                .unwrap();
        assert!(rendered.bos_in_text);
        assert_eq!(parts(&rendered), [("<s>user: A</s>assistant: ", false), ("B</s>", true)]);
        let template = ChatTemplate::new(source.replace("{{ bos_token }}", "").as_str(), "<s>", "</s>").unwrap();
        let rendered =
            render(&chat_record(&[("user", "A"), ("assistant", "B")]), Some(&template), &RenderOptions::default())
                .unwrap();
        assert!(!rendered.bos_in_text);
    }

    #[test]
    fn eos_after_a_turn_belongs_to_it() {
        // Qwen1.5-Chat's template closes a message only when another follows (or a generation
        // prompt does): the last message's <|im_end|> appears only in the whole rendering.
        let source = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']}}{% if (loop.last and add_generation_prompt) or not loop.last %}{{ '<|im_end|>' + '\n'}}{% endif %}{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let template = ChatTemplate::new(source, "", "<|im_end|>").unwrap();
        let record = chat_record(&[("user", "A"), ("assistant", "B"), ("user", "C")]);
        let rendered = render(&record, Some(&template), &RenderOptions::default()).unwrap();
        assert_eq!(
            parts(&rendered),
            [
                ("<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\n", false),
                ("B<|im_end|>", true),
                ("\n<|im_start|>user\nC", false)
            ]
        );
    }

    #[test]
    fn eos_after_the_conversation_is_not_part_of_every_turn() {
        // Phi-3-small (microsoft/Phi-3-small-8k-instruct, as llama.cpp's test-chat-template.cpp
        // has it): EOS after the last message unless a generation prompt follows.
        let source = "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";
        let template = ChatTemplate::new(source, "<|endoftext|>", "<|endoftext|>").unwrap();
        let record = chat_record(&[("user", "A"), ("assistant", "B"), ("user", "C"), ("assistant", "D")]);
        let rendered = render(&record, Some(&template), &RenderOptions::default()).unwrap();
        assert_eq!(
            parts(&rendered),
            [
                ("<|endoftext|><|user|>\nA<|end|>\n<|assistant|>\n", false),
                ("B<|end|>\n", true),
                ("<|user|>\nC<|end|>\n<|assistant|>\n", false),
                ("D<|end|>\n<|endoftext|>", true),
            ]
        );
        assert!(rendered.bos_in_text);
    }

    #[test]
    fn unstable_templates_are_refused() {
        // Drops the content of every assistant message but the last, as reasoning templates
        // drop earlier turns' thinking.
        let source = "{% for m in messages %}<{{ m.role }}>{% if m.role != 'assistant' or loop.last %}{{ m.content }}{% endif %}</{{ m.role }}>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
        let template = ChatTemplate::new(source, "", "").unwrap();
        let record = chat_record(&[("user", "A"), ("assistant", "B"), ("user", "C"), ("assistant", "D")]);
        let e = render(&record, Some(&template), &RenderOptions::default()).unwrap_err();
        assert!(matches!(e, RenderError::NotPrefixStable { index: 1, check: PrefixCheck::Turn, .. }), "{e:?}");
        assert!(e.to_string().starts_with(
            "the chat template is not prefix-stable at message 1 (role 'assistant'): the messages up to it"
        ));
        // With train_on_prompt nothing is cut, so it renders.
        assert!(render(&record, Some(&template), &RenderOptions { train_on_prompt: true, ..RenderOptions::default() })
            .is_ok());

        // A generation prompt that differs from the assistant header of the full rendering.
        let source = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<bot>{% endif %}";
        let template = ChatTemplate::new(source, "", "").unwrap();
        let e = render(&chat_record(&[("user", "A"), ("assistant", "B")]), Some(&template), &RenderOptions::default())
            .unwrap_err();
        assert!(
            matches!(e, RenderError::NotPrefixStable { index: 1, check: PrefixCheck::GenerationPrompt, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn template_errors_pass_through() {
        let template = ChatTemplate::new("{{ raise_exception('roles!') }}", "", "").unwrap();
        let e = render(&chat_record(&[("user", "A")]), Some(&template), &RenderOptions::default()).unwrap_err();
        assert!(matches!(&e, RenderError::Template(TemplateError::Raised { message }) if message == "roles!"), "{e:?}");
        assert_eq!(e.to_string(), "chat template raised an exception: roles!");
    }

    // Chat templates of the common families, as their tokenizer_config.json on the Hugging Face
    // hub has them, and what they render for one conversation. The expected strings were produced
    // by Jinja2 3.1.6 set up as transformers' `_compile_jinja_template` sets it up
    // (ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with loopcontrols,
    // `raise_exception`, `tojson`, `strftime_now`), rendering with tools=None, documents=None and
    // the family's bos_token / eos_token: the output of transformers' `apply_chat_template`.

    /// meta-llama/Llama-2-7b-chat-hf.
    const LLAMA2: &str = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
    /// meta-llama/Meta-Llama-3-8B-Instruct.
    const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
    /// Qwen/Qwen2-7B-Instruct (ChatML with a default system prompt).
    const QWEN2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    /// mistralai/Mistral-7B-Instruct-v0.1.
    const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
    /// HuggingFaceH4/zephyr-7b-beta (relies on trim_blocks and lstrip_blocks).
    const ZEPHYR: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

    /// google/gemma-2-9b-it (and gemma-2b-it): refuses a system message.
    const GEMMA2: &str = include_str!("../../tests/data/chat-templates/gemma-2.jinja");
    /// google/gemma-3-1b-it (and the other Gemma 3 instruction models): the system message opens
    /// the first user turn; `is string` / `is iterable` tests, `{%- -%}` everywhere.
    const GEMMA3: &str = include_str!("../../tests/data/chat-templates/gemma-3.jinja");

    struct Family {
        name: &'static str,
        source: &'static str,
        bos: &'static str,
        eos: &'static str,
        /// Whether the conversation starts with the system message.
        system: bool,
        /// Whether the template writes the BOS text first.
        bos_in_text: bool,
        /// The whole conversation, add_generation_prompt=false.
        full: &'static str,
        /// All but the last message, add_generation_prompt=true.
        generation_prompt: &'static str,
        /// The trainable segments (worked out by hand from each template: the assistant text
        /// as the template writes it, up to and including its end-of-turn text).
        trainable: &'static [&'static str],
    }

    fn families() -> Vec<Family> {
        vec![
            Family {
                name: "llama2",
                source: LLAMA2,
                bos: "<s>",
                eos: "</s>",
                system: true,
                bos_in_text: true,
                full: "<s>[INST] <<SYS>>\nYou are a terse assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. How can I help? </s><s>[INST] What is 2+2? [/INST] It is 4. </s>",
                generation_prompt: "<s>[INST] <<SYS>>\nYou are a terse assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. How can I help? </s><s>[INST] What is 2+2? [/INST]",
                trainable: &[" Hi there. How can I help? </s>", " It is 4. </s>"],
            },
            Family {
                name: "llama3",
                source: LLAMA3,
                bos: "<|begin_of_text|>",
                eos: "<|eot_id|>",
                system: true,
                bos_in_text: true,
                full: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there. How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nIt is 4.<|eot_id|>",
                generation_prompt: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there. How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
                trainable: &["Hi there. How can I help?<|eot_id|>", "It is 4.<|eot_id|>"],
            },
            Family {
                name: "qwen2",
                source: QWEN2,
                bos: "",
                eos: "<|im_end|>",
                system: true,
                bos_in_text: false,
                full: "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n It is 4. <|im_end|>\n",
                generation_prompt: "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n",
                trainable: &["Hi there. How can I help?<|im_end|>\n", " It is 4. <|im_end|>\n"],
            },
            Family {
                name: "qwen2_no_system",
                source: QWEN2,
                bos: "",
                eos: "<|im_end|>",
                system: false,
                bos_in_text: false,
                full: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n It is 4. <|im_end|>\n",
                generation_prompt: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi there. How can I help?<|im_end|>\n<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n",
                trainable: &["Hi there. How can I help?<|im_end|>\n", " It is 4. <|im_end|>\n"],
            },
            Family {
                name: "mistral",
                source: MISTRAL,
                bos: "<s>",
                eos: "</s>",
                system: false,
                bos_in_text: true,
                full: "<s>[INST] Hello! [/INST]Hi there. How can I help?</s> [INST]   What is 2+2?\n [/INST] It is 4. </s> ",
                generation_prompt: "<s>[INST] Hello! [/INST]Hi there. How can I help?</s> [INST]   What is 2+2?\n [/INST]",
                trainable: &["Hi there. How can I help?</s> ", " It is 4. </s> "],
            },
            Family {
                name: "gemma2",
                source: GEMMA2,
                bos: "<bos>",
                eos: "<eos>",
                system: false,
                bos_in_text: true,
                full: "<bos><start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\nHi there. How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\nIt is 4.<end_of_turn>\n",
                generation_prompt: "<bos><start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\nHi there. How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
                trainable: &["Hi there. How can I help?<end_of_turn>\n", "It is 4.<end_of_turn>\n"],
            },
            Family {
                name: "gemma3",
                source: GEMMA3,
                bos: "<bos>",
                eos: "<eos>",
                system: true,
                bos_in_text: true,
                full: "<bos><start_of_turn>user\nYou are a terse assistant.\n\nHello!<end_of_turn>\n<start_of_turn>model\nHi there. How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\nIt is 4.<end_of_turn>\n",
                generation_prompt: "<bos><start_of_turn>user\nYou are a terse assistant.\n\nHello!<end_of_turn>\n<start_of_turn>model\nHi there. How can I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
                trainable: &["Hi there. How can I help?<end_of_turn>\n", "It is 4.<end_of_turn>\n"],
            },
            Family {
                name: "zephyr",
                source: ZEPHYR,
                bos: "<s>",
                eos: "</s>",
                system: true,
                bos_in_text: false,
                full: "<|system|>\nYou are a terse assistant.</s>\n<|user|>\nHello!</s>\n<|assistant|>\nHi there. How can I help?</s>\n<|user|>\n  What is 2+2?\n</s>\n<|assistant|>\n It is 4. </s>\n",
                generation_prompt: "<|system|>\nYou are a terse assistant.</s>\n<|user|>\nHello!</s>\n<|assistant|>\nHi there. How can I help?</s>\n<|user|>\n  What is 2+2?\n</s>\n<|assistant|>\n",
                trainable: &["Hi there. How can I help?</s>\n", " It is 4. </s>\n"],
            },
        ]
    }

    fn family_conversation(system: bool) -> Vec<Message> {
        let mut messages = vec![
            Message::new("user", "Hello!"),
            Message::new("assistant", "Hi there. How can I help?"),
            Message::new("user", "  What is 2+2?\n"),
            Message::new("assistant", " It is 4. "),
        ];
        if system {
            messages.insert(0, Message::new("system", "You are a terse assistant."));
        }
        messages
    }

    #[test]
    fn family_templates_render_as_transformers_does() {
        for family in families() {
            let template = ChatTemplate::new(family.source, family.bos, family.eos).unwrap();
            let messages = family_conversation(family.system);
            assert_eq!(template.render(&messages, false).unwrap(), family.full, "{}", family.name);
            let prompt = &messages[..messages.len() - 1];
            assert_eq!(template.render(prompt, true).unwrap(), family.generation_prompt, "{}", family.name);

            let rendered = render(&Record::Chat { messages }, Some(&template), &RenderOptions::default()).unwrap();
            assert_eq!(rendered.text(), family.full, "{}", family.name);
            let trainable: Vec<&str> =
                rendered.segments.iter().filter(|s| s.trainable).map(|s| s.text.as_str()).collect();
            assert_eq!(trainable, family.trainable, "{}", family.name);
            assert_eq!(rendered.bos_in_text, family.bos_in_text, "{}", family.name);
        }
    }

    #[test]
    fn gemma_refuses_what_its_templates_refuse() {
        // Jinja2 raises TemplateError with these messages: Gemma 2 has no system role, and both
        // templates want user and model turns in turn.
        let two_users = [Message::new("user", "a"), Message::new("user", "b")];
        let cases: [(&str, &[Message], &str); 3] = [
            (GEMMA2, &family_conversation(true), "System role not supported"),
            (GEMMA2, &two_users, "Conversation roles must alternate user/assistant/user/assistant/..."),
            (GEMMA3, &two_users, "Conversation roles must alternate user/assistant/user/assistant/..."),
        ];
        for (source, messages, expected) in cases {
            let template = ChatTemplate::new(source, "<bos>", "<eos>").unwrap();
            let e = template.render(messages, false).unwrap_err();
            assert!(matches!(&e, TemplateError::Raised { message } if message == expected), "{e:?}");
        }
    }

    #[test]
    fn mistral_refuses_wrong_role_order() {
        // Jinja2 raises TemplateError("Conversation roles must alternate user/assistant/user/assistant/...")
        // for both: v0.1 has no system role, and two user turns in a row are out of order.
        let template = ChatTemplate::new(MISTRAL, "<s>", "</s>").unwrap();
        for messages in [family_conversation(true), vec![Message::new("user", "a"), Message::new("user", "b")]] {
            let e = template.render(&messages, false).unwrap_err();
            let expected = "Conversation roles must alternate user/assistant/user/assistant/...";
            assert!(matches!(&e, TemplateError::Raised { message } if message == expected), "{e:?}");
        }
    }
}
