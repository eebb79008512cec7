//! Ollama Modelfiles: the text parses as Ollama's parser reads it, each family's Go template
//! renders a conversation exactly as the model's Jinja template does, the adapter checks agree
//! with llama.cpp, and `gguftune modelfile` as a user runs it.

pub mod ollama;

use std::fs;
use std::path::Path;

use gguftune::adapter::{write_lora_gguf, LoraTensorPair};
use gguftune::data::{alpaca_prompt, ChatTemplate, Message, TemplateError};
use gguftune::ggml::{chat_apply_template, LlamaAdapter, LlamaModel, Runtime};
use gguftune::gguf::{GgmlType, GgufPlan, GgufWriter, MetaArray, MetaValue};
use gguftune::modelfile::{
    for_adapter, plan, FamilySource, Modelfile, ModelfileError, Options, SpecialTokens, TemplateFamily, TensorProblem,
    Unrecognized,
};
use gguftune::quant::FileType;

use crate::common::fixtures::{
    tiny_llama, Dtype, Shards, TinyArch, TinyLlamaSpec, TinyTokenizer, CHATML_TEMPLATE, LLAMA2_TEMPLATE,
};
use crate::common::tiny_gguf::{write_tiny_llama, TinyLlamaGguf};
use crate::common::{convert_to, gguftune, temp_dir};

// ----- The published chat templates -----------------------------------------------------------

/// Meta-Llama-3-8B-Instruct's `chat_template`.
const LLAMA3_TEMPLATE: &str = r#"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"#;

/// Mistral-7B-Instruct-v0.1's `chat_template`.
const MISTRAL_TEMPLATE: &str = r#"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"#;

/// Qwen2-7B-Instruct's `chat_template`: ChatML with a default system message.
const QWEN2_TEMPLATE: &str = r#"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#;

/// Phi-3-mini-4k-instruct's `chat_template`.
const PHI3_TEMPLATE: &str = r#"{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"#;

/// gemma-2b-it's and Gemma 2's `chat_template` (Ollama's template/index.json `gemma-instruct`),
/// which refuses a system message.
const GEMMA2_TEMPLATE: &str = include_str!("../data/chat-templates/gemma-2.jinja");

/// Gemma 3's `chat_template` (google/gemma-3-*-it; Ollama's template/index.json `gemma3-instruct`):
/// the system message opens the first user turn.
const GEMMA3_TEMPLATE: &str = include_str!("../data/chat-templates/gemma-3.jinja");

/// openchat-3.5-0106's `chat_template` (a format without a translation here).
const OPENCHAT_TEMPLATE: &str = r#"{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + ': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}{{ 'GPT4 Correct Assistant:' }}{% endif %}"#;

/// Not a published template: Llama 3 turns with a system turn that always opens with a date line,
/// the way Llama 3.1's template writes its "Cutting Knowledge Date" lines.
const LLAMA3_DATED_TEMPLATE: &str = r#"{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}{{ '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n' + system + '<|eot_id|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"#;

/// Each chat family with its published template and its models' BOS and EOS texts.
const FAMILIES: [(TemplateFamily, &str, &str, &str); 7] = [
    (TemplateFamily::Llama2, LLAMA2_TEMPLATE, "<s>", "</s>"),
    (TemplateFamily::Llama3, LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>"),
    (TemplateFamily::ChatMl, CHATML_TEMPLATE, "<|begin_of_text|>", "<|im_end|>"),
    (TemplateFamily::Mistral, MISTRAL_TEMPLATE, "<s>", "</s>"),
    (TemplateFamily::Phi3, PHI3_TEMPLATE, "<s>", "<|endoftext|>"),
    (TemplateFamily::Gemma, GEMMA2_TEMPLATE, "<bos>", "<eos>"),
    (TemplateFamily::Gemma, GEMMA3_TEMPLATE, "<bos>", "<eos>"),
];

/// The published templates that refuse a system message (raise_exception).
const REFUSE_SYSTEM: [&str; 2] = [MISTRAL_TEMPLATE, GEMMA2_TEMPLATE];

/// Conversations ending with a user turn; contents that would trip a template engine or the
/// Modelfile's quoting if either mishandled data.
fn conversations() -> Vec<Vec<(&'static str, &'static str)>> {
    let turns = [
        ("user", "What is 2+2? Say \"four\" or {{ .Content }}."),
        ("assistant", "Four.\nIt is \"4\"."),
        ("user", "And 3+3, in café terms? ✓"),
    ];
    vec![
        [("system", "You are terse.\nAnswer in one line.")].into_iter().chain(turns).collect(),
        turns.to_vec(),
        turns[..1].to_vec(),
    ]
}

fn messages(conversation: &[(&str, &str)]) -> Vec<Message> {
    conversation.iter().map(|(r, c)| Message::new(*r, *c)).collect()
}

/// The Jinja template's rendering with the generation prompt, as `finetune` renders chat data.
fn jinja(template: &str, bos: &str, eos: &str, conversation: &[(&str, &str)]) -> String {
    ChatTemplate::new(template, bos, eos).unwrap().render(&messages(conversation), true).unwrap()
}

// ----- Templates ---------------------------------------------------------------------------------

#[test]
fn each_family_renders_a_conversation_exactly_as_its_jinja_template() {
    for (family, template, bos, eos) in FAMILIES {
        assert_eq!(TemplateFamily::detect(template), Ok(family));
        for add_bos in [true, false] {
            let tokens = SpecialTokens { bos: bos.into(), eos: eos.into(), add_bos };
            let go = family.go_template(&tokens);
            for conversation in conversations() {
                if REFUSE_SYSTEM.contains(&template) && conversation[0].0 == "system" {
                    let refused = ChatTemplate::new(template, bos, eos).unwrap().render(&messages(&conversation), true);
                    assert!(matches!(refused, Err(TemplateError::Raised { .. })), "{family}: {refused:?}");
                    continue; // See the next tests for where the Go templates put it.
                }
                let expected = jinja(template, bos, eos, &conversation);
                // A runner that adds BOS is given the text after the template's own BOS.
                let expected = if add_bos { expected.strip_prefix(bos).unwrap_or(&expected) } else { &expected };
                let got = ollama::render(&go, &conversation, None).unwrap();
                assert_eq!(got, expected, "{family}, add_bos {add_bos}, {} messages", conversation.len());
            }
        }
    }
}

#[test]
fn mistral_writes_a_system_prompt_before_the_first_instruction() {
    let go = TemplateFamily::Mistral.go_template(&SpecialTokens::default());
    let conversation = &conversations()[0];
    let got = ollama::render(&go, conversation, None).unwrap();
    let without_system = ollama::render(&go, &conversation[1..], None).unwrap();
    let (system, first) = (conversation[0].1, conversation[1].1);
    assert_eq!(got, without_system.replacen(&format!("[INST] {first}"), &format!("[INST] {system}\n\n{first}"), 1));
    assert_eq!(got.matches(system).count(), 1);
}

#[test]
fn gemma_writes_what_llama_cpps_own_gemma_format_writes() {
    // llama.cpp formats Gemma conversations by itself too (src/llama-chat.cpp,
    // LLM_CHAT_TEMPLATE_GEMMA), for both published templates, which it recognises as that
    // format: a system prompt and a blank line open the first user turn, as in Gemma 3's
    // template (Gemma 2's refuses a system message).
    let tokens = SpecialTokens { bos: "<bos>".into(), eos: "<eos>".into(), add_bos: true };
    let go = TemplateFamily::Gemma.go_template(&tokens);
    for template in [GEMMA2_TEMPLATE, GEMMA3_TEMPLATE, "gemma"] {
        for conversation in conversations() {
            let llama_cpp = chat_apply_template(Runtime::get(), template, &conversation, true).unwrap();
            let got = ollama::render(&go, &conversation, None).unwrap();
            assert_eq!(got, llama_cpp, "{} messages, template {:.40}", conversation.len(), template);
        }
    }
    let conversation = &conversations()[0];
    let got = ollama::render(&go, conversation, None).unwrap();
    let (system, first) = (conversation[0].1, conversation[1].1);
    assert!(got.starts_with(&format!("<start_of_turn>user\n{system}\n\n{first}<end_of_turn>\n")), "{got}");
    // Ollama's SYSTEM goes where a system message goes.
    assert_eq!(ollama::render(&go, &conversation[1..], Some(system)).unwrap(), got);
    let unknown = chat_apply_template(Runtime::get(), "{{ messages[0]['content'] }}", conversation, true);
    assert!(matches!(unknown, Err(gguftune::ggml::Error::UnknownChatTemplate { .. })), "{unknown:?}");
}

#[test]
fn each_familys_jinja_twin_writes_what_ollama_writes_with_its_go_template() {
    // Contents with white space at their ends (which the published templates trim and Ollama
    // does not), template syntax, two system messages (Ollama joins them into .System), and
    // Ollama's SYSTEM put before a conversation without one.
    let turns = [("user", "  What is 2+2? {{ .Content }}\n"), ("assistant", "\tFour.\n\n"), ("user", "And 3+3? ✓ ")];
    let two_systems = [("system", "Be terse."), ("system", " One line.\n")];
    let conversations: Vec<Vec<(&str, &str)>> =
        vec![turns.to_vec(), turns[..1].to_vec(), two_systems.into_iter().chain(turns).collect()];
    for family in TemplateFamily::ALL {
        let Some(source) = family.jinja() else {
            assert_eq!(family, TemplateFamily::Alpaca, "only Alpaca is written without a template");
            continue;
        };
        for (bos, eos) in [("<s>", "</s>"), ("<|begin_of_text|>", "<|eot_id|>")] {
            for add_bos in [true, false] {
                let go = family.go_template(&SpecialTokens { bos: bos.into(), eos: eos.into(), add_bos });
                for conversation in &conversations {
                    for system in [None, Some("You are Ollama's SYSTEM.")] {
                        let expected = ollama::render(&go, conversation, system).unwrap();
                        // The twin sees the messages as Go templates see them (SYSTEM first,
                        // roles merged), as finetune prepares them for it.
                        let (_, prepared) = ollama::prepare(conversation, system);
                        let prepared: Vec<(&str, &str)> =
                            prepared.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
                        let got = jinja(source, bos, eos, &prepared);
                        // A runner that adds BOS is given the text after the template's own BOS.
                        let got = if add_bos { got.strip_prefix(bos).unwrap_or(&got) } else { &got };
                        assert_eq!(got, expected, "{family}, add_bos {add_bos}, {conversation:?}, SYSTEM {system:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn alpaca_renders_the_prompt_finetune_trains_a_model_without_template_with() {
    let root = temp_dir();
    let (model, adapter) = (root.path().join("model.gguf"), root.path().join("adapter.gguf"));
    write_model(&model, "llama", None);
    write_adapter(&adapter, "llama", &[("blk.0.attn_q.weight", 8, 8)]);
    let m = plan(&model, &adapter, None, &Options::default()).unwrap();
    assert_eq!((m.family, m.family_source), (TemplateFamily::Alpaca, FamilySource::NoTemplate));
    let instruction = "Add the numbers 2 and 3.";
    let got = ollama::render(&m.template, &[("user", instruction)], m.system.as_deref()).unwrap();
    assert_eq!(got, alpaca_prompt(instruction, "", None));

    let options = Options { system: Some("Be brief.".into()), ..Options::default() };
    let m = plan(&model, &adapter, None, &options).unwrap();
    let got = ollama::render(&m.template, &[("user", instruction)], m.system.as_deref()).unwrap();
    assert_eq!(got, alpaca_prompt(instruction, "", Some("Be brief.")));

    let turns = [("user", "One."), ("assistant", "1"), ("user", "Two.")];
    let got = ollama::render(&m.template, &turns, m.system.as_deref()).unwrap();
    assert_eq!(
        got,
        "Be brief.\n\n### Instruction:\nOne.\n\n### Response:\n1\n\n### Instruction:\nTwo.\n\n### Response:\n"
    );
}

#[test]
fn a_system_turn_the_template_writes_by_itself_goes_into_system() {
    let root = temp_dir();
    let adapter = root.path().join("adapter.gguf");
    write_adapter(&adapter, "llama", &[("blk.0.attn_q.weight", 8, 8)]);
    for (template, bos, default) in [
        (QWEN2_TEMPLATE, "<|begin_of_text|>", Some("You are a helpful assistant.")),
        (LLAMA3_DATED_TEMPLATE, "<s>", Some("Cutting Knowledge Date: December 2023\n\n")),
        (CHATML_TEMPLATE, "<|begin_of_text|>", None),
    ] {
        let model = root.path().join("model.gguf");
        write_model(&model, "llama", Some(template));
        let m = plan(&model, &adapter, None, &Options::default()).unwrap();
        assert_eq!(m.system.as_deref(), default, "{template}");
        for system in [None, Some("Be brief.")] {
            let m = plan(&model, &adapter, None, &Options { system: system.map(str::to_owned), family: None }).unwrap();
            for conversation in &conversations()[1..] {
                let with_system: Vec<_> =
                    system.map(|s| ("system", s)).into_iter().chain(conversation.clone()).collect();
                let expected = jinja(template, bos, "</s>", &with_system);
                // The model's add_bos_token is true: the runner adds BOS.
                let expected = expected.strip_prefix(bos).unwrap_or(&expected);
                let got = ollama::render(&m.template, conversation, m.system.as_deref()).unwrap();
                assert_eq!(got, expected, "{template} with system {system:?}");
            }
        }
    }
}

#[test]
fn families_are_recognised_as_llama_cpp_does_and_others_are_named() {
    let detect = TemplateFamily::detect;
    assert_eq!(detect(QWEN2_TEMPLATE), Ok(TemplateFamily::ChatMl));
    assert_eq!(detect("chatml"), Ok(TemplateFamily::ChatMl));
    assert_eq!(detect(GEMMA2_TEMPLATE), Ok(TemplateFamily::Gemma));
    assert_eq!(detect(GEMMA3_TEMPLATE), Ok(TemplateFamily::Gemma));
    assert_eq!(detect("gemma"), Ok(TemplateFamily::Gemma));
    assert_eq!(detect(OPENCHAT_TEMPLATE), Err(Unrecognized::Known { name: "openchat", marker: "GPT4 Correct " }));
    let phi4 = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '<|im_sep|>' + m['content'] + '<|im_end|>'}}{% endfor %}";
    assert_eq!(detect(phi4), Err(Unrecognized::Known { name: "phi4", marker: "<|im_sep|>" }));
    let mistral_v3 = "{{- bos_token }}{%- if tools %}[AVAILABLE_TOOLS] {{ tools|tojson }}[/AVAILABLE_TOOLS]{%- endif %}{{ '[INST] ' + m + '[/INST]' }}";
    assert!(matches!(detect(mistral_v3), Err(Unrecognized::Known { name: "mistral-v3", .. })));
    assert!(matches!(detect("{{ messages[0]['content'] }}"), Err(Unrecognized::Unmarked { chars: 28, .. })));
    // Llama 3's markers lose to an earlier format's, as in llama.cpp's order.
    assert_eq!(
        detect("<|start_header_id|><|end_header_id|>### Instruction:<|EOT|>"),
        Err(Unrecognized::Known { name: "deepseek", marker: "<|EOT|>" })
    );

    let root = temp_dir();
    let (model, adapter) = (root.path().join("openchat.gguf"), root.path().join("adapter.gguf"));
    write_model(&model, "llama", Some(OPENCHAT_TEMPLATE));
    write_adapter(&adapter, "llama", &[("blk.0.attn_q.weight", 8, 8)]);
    let err = plan(&model, &adapter, None, &Options::default()).unwrap_err();
    assert!(matches!(
        &err,
        ModelfileError::UnknownTemplate { found: Unrecognized::Known { name: "openchat", .. }, .. }
    ));
    let message = err.to_string();
    assert!(message.contains("openchat.gguf") && message.contains("--template-family"), "{message}");
    let chosen = Options { family: Some(TemplateFamily::ChatMl), ..Options::default() };
    let m = plan(&model, &adapter, None, &chosen).unwrap();
    assert_eq!((m.family, m.family_source), (TemplateFamily::ChatMl, FamilySource::Chosen));
}

// ----- The Modelfile's text -------------------------------------------------------------------

#[test]
fn the_test_parser_reads_the_documented_grammar() {
    let text = "# comment\nfrom llama3.2\n  Parameter temperature 1\nPARAMETER stop \"<|eot_id|>\"\n\
                template \"\"\"{{ if .System }}\"x\"\n{{ end }}\"\"\"\nSYSTEM \"two\nlines\"\n\
                MESSAGE user Is it \"so\"?\nadapter ./my adapter.gguf\n# trailing";
    let got = ollama::parse(text).unwrap();
    let expect = [
        ("model", "llama3.2"),
        ("temperature", "1"),
        ("stop", "<|eot_id|>"),
        ("template", "{{ if .System }}\"x\"\n{{ end }}"),
        ("system", "two\nlines"),
        ("message", "user: Is it \"so\"?"),
        ("adapter", "./my adapter.gguf"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:?}");
    for (c, (name, args)) in got.iter().zip(expect) {
        assert_eq!((c.name.as_str(), c.args.as_str()), (name, args));
    }
    assert!(ollama::parse("FROM x\nTEMPLATE \"\"\"open\n").is_err());
    assert!(ollama::parse("BOGUS x\n").is_err());
    assert!(ollama::parse("SYSTEM x\n").is_err(), "no FROM");
}

#[test]
fn the_text_parses_back_to_every_value_for_every_family() {
    let root = temp_dir();
    let adapter = root.path().join("adapter.gguf");
    write_adapter(&adapter, "llama", &[("blk.0.attn_q.weight", 8, 8)]);
    for (family, template, _, _) in FAMILIES {
        let model = root.path().join("model.gguf");
        write_model(&model, "llama", Some(template));
        for system in [None, Some(" Leading space, \"quotes\",\ttabs and\nlines. "), Some("ends with a quote\"")] {
            let options = Options { system: system.map(str::to_owned), family: None };
            let m = plan(&model, &adapter, Some(root.path()), &options).unwrap();
            assert_eq!(m.family, family);
            assert_eq!((m.from.as_str(), m.adapter.as_str()), ("./model.gguf", "./adapter.gguf"));
            assert_parses_back(&m);
        }
        let m = plan(&model, &adapter, Some(root.path()), &Options::default()).unwrap();
        let stops: Vec<&str> = m.stop.iter().map(String::as_str).collect();
        let expected: &[&str] = match family {
            TemplateFamily::Llama2 => &["</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"],
            TemplateFamily::Llama3 => &["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
            TemplateFamily::ChatMl => &["<|im_end|>", "<|im_start|>"],
            TemplateFamily::Mistral => &["</s>", "[INST]", "[/INST]"],
            TemplateFamily::Phi3 => &["<|end|>", "<|user|>", "<|assistant|>"],
            TemplateFamily::Gemma => &["<end_of_turn>", "<start_of_turn>"],
            TemplateFamily::Alpaca => unreachable!(),
        };
        assert_eq!(stops, expected, "{family}");
    }
}

/// Parses `m`'s text as Ollama does and checks that every value comes back unchanged.
fn assert_parses_back(m: &Modelfile) {
    let text = m.to_text().unwrap();
    let commands = ollama::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let values = |name: &str| commands.iter().filter(|c| c.name == name).map(|c| c.args.as_str()).collect::<Vec<_>>();
    assert_eq!(values("model"), [m.from.as_str()], "{text}");
    assert_eq!(values("adapter"), [m.adapter.as_str()], "{text}");
    assert_eq!(values("template"), [m.template.as_str()], "{text}");
    assert_eq!(values("system"), m.system.iter().map(String::as_str).collect::<Vec<_>>(), "{text}");
    assert_eq!(values("stop"), m.stop.iter().map(String::as_str).collect::<Vec<_>>(), "{text}");
    assert_eq!(commands.len(), 3 + usize::from(m.system.is_some()) + m.stop.len(), "{text}");
}

#[test]
fn values_are_quoted_as_needed_and_those_the_grammar_cannot_carry_are_refused() {
    let m = |system: &str, from: &str| Modelfile {
        from: from.into(),
        adapter: "./adapter.gguf".into(),
        family: TemplateFamily::ChatMl,
        family_source: FamilySource::Chosen,
        template: TemplateFamily::ChatMl.go_template(&SpecialTokens::default()),
        system: Some(system.into()),
        stop: vec!["<|im_end|>".into(), " spaced ".into(), "\"".into()],
    };
    for (system, from) in [
        ("plain", "./model.gguf"),
        ("\"starts with a quote", "/models/my model.gguf"),
        ("\"\"\"", "\"quoted\" name.gguf"),
        ("a line \"\"\" with quotes inside\nand more", " ./leading space.gguf"),
        ("ends in three\"\"\"", "./model.gguf"),
        ("", "./model.gguf"),
    ] {
        assert_parses_back(&m(system, from));
    }
    let text = m("plain", "./model.gguf").to_text().unwrap();
    assert!(text.contains("\nFROM ./model.gguf\n") && text.contains("\nSYSTEM \"plain\"\n"), "{text}");

    let err = m("first line\"\"\"\nsecond line", "./m.gguf").to_text().unwrap_err();
    assert!(matches!(err, ModelfileError::Unquotable { command: "SYSTEM", line: 1 }), "{err}");
    let err = m("no\u{a0}break", "./m.gguf").to_text().unwrap_err();
    assert!(matches!(err, ModelfileError::DroppedCharacter { command: "SYSTEM", character: '\u{a0}', offset: 2 }));
    assert!(err.to_string().contains("U+00A0"), "{err}");
    let err = m("ok", "./m\u{1b}.gguf").to_text().unwrap_err();
    assert!(matches!(err, ModelfileError::DroppedCharacter { command: "FROM", .. }), "{err}");
}

#[test]
fn paths_are_relative_to_the_modelfiles_folder_when_inside_it() {
    let root = temp_dir();
    let dir = root.path().join("run");
    fs::create_dir_all(dir.join("out")).unwrap();
    let (model, adapter) = (root.path().join("model.gguf"), dir.join("out/adapter.gguf"));
    write_model(&model, "llama", Some(CHATML_TEMPLATE));
    write_adapter(&adapter, "llama", &[("blk.0.attn_q.weight", 8, 8)]);
    let abs = |p: &Path| fs::canonicalize(p).unwrap().to_str().unwrap().to_owned();

    let m = plan(&model, &adapter, Some(&dir), &Options::default()).unwrap();
    assert_eq!((m.from, m.adapter), (abs(&model), "./out/adapter.gguf".to_owned()));
    let m = plan(&model, &adapter, Some(root.path()), &Options::default()).unwrap();
    assert_eq!((m.from, m.adapter), ("./model.gguf".to_owned(), "./run/out/adapter.gguf".to_owned()));
    // A path that goes out and back in is resolved first.
    let roundabout = dir.join("out/../../model.gguf");
    let m = plan(&roundabout, &adapter, Some(&dir.join("out")), &Options::default()).unwrap();
    assert_eq!((m.from, m.adapter), (abs(&model), "./adapter.gguf".to_owned()));
    let m = plan(&model, &adapter, None, &Options::default()).unwrap();
    assert_eq!((m.from, m.adapter), (abs(&model), abs(&adapter)));

    let out = dir.join("out/Modelfile");
    let written = for_adapter(&model, &adapter, &out, Some("Be brief.")).unwrap();
    let commands = ollama::parse(&fs::read_to_string(&out).unwrap()).unwrap();
    assert!(commands.iter().any(|c| c.name == "adapter" && c.args == "./adapter.gguf"), "{commands:?}");
    assert_eq!(written.system.as_deref(), Some("Be brief."));
}

// ----- Checks of the model and the adapter -----------------------------------------------------

#[test]
fn the_adapter_must_be_a_lora_adapter_of_the_models_architecture() {
    let root = temp_dir();
    let p = |name: &str| root.path().join(name);
    write_model(&p("model.gguf"), "llama", Some(CHATML_TEMPLATE));
    write_adapter(&p("adapter.gguf"), "llama", &[("blk.0.attn_q.weight", 8, 8)]);
    write_adapter(&p("qwen2.gguf"), "qwen2", &[("blk.0.attn_q.weight", 8, 8)]);
    let run = |model: &str, adapter: &str| plan(&p(model), &p(adapter), None, &Options::default());

    let err = run("model.gguf", "qwen2.gguf").unwrap_err();
    assert!(
        matches!(&err, ModelfileError::ArchitectureMismatch { model_arch, adapter_arch, .. } if model_arch == "llama" && adapter_arch == "qwen2")
    );
    let message = err.to_string();
    assert!(message.contains("'qwen2'") && message.contains("'llama'") && message.contains("qwen2.gguf"), "{message}");
    assert!(
        matches!(run("model.gguf", "model.gguf"), Err(ModelfileError::NotAnAdapter { found: Some(t), .. }) if t == "model")
    );
    assert!(matches!(run("adapter.gguf", "adapter.gguf"), Err(ModelfileError::ModelIsAdapter { .. })));
    assert!(matches!(run("model.gguf", "missing.gguf"), Err(ModelfileError::Read(_))));
}

#[test]
fn adapter_tensors_are_checked_as_llama_cpp_checks_them() {
    let root = temp_dir();
    let model = root.path().join("model.gguf");
    let h = TinyLlamaGguf::default();
    write_tiny_llama(&model, &h, 1);
    let llama = LlamaModel::load(Runtime::get(), &model).unwrap();
    let (e, ff) = (h.n_embd, h.n_ff);
    type Tensors = Vec<(String, Vec<u64>)>;
    let cases: Vec<(&str, Tensors, Option<TensorProblem>)> = vec![
        ("fits", pair("blk.1.ffn_down.weight", ff, e, 4), None),
        (
            "wrong model",
            pair("blk.0.attn_q.weight", e * 2, e, 4),
            Some(TensorProblem::WrongShape { model_ne: vec![e, e], a_ne: vec![e * 2, 4], b_ne: vec![4, e] }),
        ),
        ("no such tensor", pair("blk.7.attn_q.weight", e, e, 4), Some(TensorProblem::NotInModel)),
        (
            "half a pair",
            pair("blk.0.attn_q.weight", e, e, 4).into_iter().take(1).collect(),
            Some(TensorProblem::MissingHalf { missing: "lora_b" }),
        ),
        ("odd name", vec![("blk.0.attn_q.weight.lora_c".into(), vec![e, 4])], Some(TensorProblem::UnexpectedName)),
    ];
    for (name, tensors, problem) in cases {
        let adapter = root.path().join(format!("{name}.gguf"));
        write_raw_adapter(&adapter, "llama", &tensors);
        let ours = plan(&model, &adapter, None, &Options::default());
        let llama_cpp = LlamaAdapter::load(&llama, &adapter);
        match problem {
            None => {
                ours.unwrap();
                llama_cpp.unwrap();
            }
            Some(problem) => {
                match ours.unwrap_err() {
                    ModelfileError::AdapterTensor { problem: found, .. } => assert_eq!(*found, problem, "{name}"),
                    other => panic!("{name}: {other}"),
                }
                assert!(llama_cpp.is_err(), "{name}: llama.cpp loads it");
            }
        }
    }
}

/// `base.lora_a` and `base.lora_b` for a base tensor with `ne = [n_in, n_out]`.
fn pair(base: &str, n_in: u64, n_out: u64, rank: u64) -> Vec<(String, Vec<u64>)> {
    vec![(format!("{base}.lora_a"), vec![n_in, rank]), (format!("{base}.lora_b"), vec![rank, n_out])]
}

// ----- The command ----------------------------------------------------------------------------

#[test]
fn modelfile_command_writes_a_modelfile_for_a_converted_model_and_its_adapter() {
    let root = temp_dir();
    for (tokenizer, arch, family) in [(TinyTokenizer::Spm, "llama", "llama2"), (TinyTokenizer::Bpe, "qwen2", "chatml")]
    {
        let dir = root.path().join(family);
        let hf = dir.join("hf");
        let tiny_arch = if arch == "qwen2" { TinyArch::Qwen2 } else { TinyArch::Llama };
        let spec = TinyLlamaSpec { tokenizer, arch: tiny_arch, ..TinyLlamaSpec::default() };
        tiny_llama(&hf, &spec, Dtype::F32, Shards::One, 3).unwrap();
        convert_to(&hf, FileType::F16, &dir.join("base.gguf")).unwrap();
        let n = spec.hidden as u64;
        write_adapter(
            &dir.join("adapter.gguf"),
            arch,
            &[("blk.0.attn_q.weight", n, n), ("blk.1.ffn_up.weight", n, 128)],
        );

        let out =
            gguftune(&dir, &["modelfile", "--model", "base.gguf", "--adapter", "adapter.gguf", "-o", "Modelfile"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(&format!("{family} template")) && stderr.contains("ollama create"), "{stderr}");
        let text = fs::read_to_string(dir.join("Modelfile")).unwrap();
        let commands = ollama::parse(&text).unwrap();
        let get = |name: &str| commands.iter().find(|c| c.name == name).map(|c| c.args.clone()).unwrap_or_default();
        assert_eq!((get("model"), get("adapter")), ("./base.gguf".to_owned(), "./adapter.gguf".to_owned()));
        let template = TemplateFamily::from_name(family).unwrap();
        let expected = plan(&dir.join("base.gguf"), &dir.join("adapter.gguf"), None, &Options::default()).unwrap();
        assert_eq!(expected.family, template);
        assert_eq!(get("template"), expected.template);

        // Without -o: printed, with absolute paths, and the same otherwise.
        let printed = gguftune(&dir, &["modelfile", "--model", "base.gguf", "--adapter", "adapter.gguf"]);
        assert!(printed.status.success());
        let printed = String::from_utf8(printed.stdout).unwrap();
        let base = fs::canonicalize(dir.join("base.gguf")).unwrap();
        assert!(printed.contains(&format!("\nFROM {}\n", base.display())), "{printed}");
        assert_eq!(printed.lines().count(), text.lines().count());
    }
    // The adapter loads on the model in llama.cpp, as Ollama will load it.
    let dir = root.path().join("llama2");
    let llama = LlamaModel::load(Runtime::get(), &dir.join("base.gguf")).unwrap();
    LlamaAdapter::load(&llama, &dir.join("adapter.gguf")).unwrap();
}

#[test]
fn modelfile_command_refuses_an_adapter_of_another_architecture_and_unknown_templates() {
    let root = temp_dir();
    write_model(&root.path().join("model.gguf"), "llama", Some(OPENCHAT_TEMPLATE));
    write_adapter(&root.path().join("qwen2.gguf"), "qwen2", &[("blk.0.attn_q.weight", 8, 8)]);
    write_adapter(&root.path().join("adapter.gguf"), "llama", &[("blk.0.attn_q.weight", 8, 8)]);
    let args = |adapter: &'static str| ["modelfile", "--model", "model.gguf", "--adapter", adapter, "-o", "Modelfile"];

    let out = gguftune(root.path(), &args("qwen2.gguf"));
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is for a 'qwen2' model, but model.gguf is 'llama'"), "{stderr}");
    assert!(!root.path().join("Modelfile").exists());

    let out = gguftune(root.path(), &args("adapter.gguf"));
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'openchat' format") && stderr.contains("--template-family"), "{stderr}");

    let mut chosen = args("adapter.gguf").to_vec();
    chosen.extend(["--template-family", "llama3", "--system", "Be brief."]);
    let out = gguftune(root.path(), &chosen);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let commands = ollama::parse(&fs::read_to_string(root.path().join("Modelfile")).unwrap()).unwrap();
    assert!(commands.iter().any(|c| c.name == "system" && c.args == "Be brief."));
    assert!(commands.iter().any(|c| c.name == "stop" && c.args == "<|eot_id|>"));

    let family = chosen.len() - 3;
    chosen[family] = "openchat";
    let out = gguftune(root.path(), &chosen);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

// ----- Fixtures ---------------------------------------------------------------------------------

/// A model GGUF with metadata only (no weights to speak of): `arch`, a small vocabulary with `<s>`
/// and `</s>`, `template`, and one 8 x 8 tensor per projection of block 0.
pub fn write_model(path: &Path, arch: &str, template: Option<&str>) {
    let mut plan = GgufPlan::new();
    plan.add_kv("general.architecture", arch).unwrap();
    plan.add_kv("general.type", "model").unwrap();
    let tokens = ["<unk>", "<s>", "</s>", "a", "b"].map(str::to_owned).to_vec();
    plan.add_kv("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::String(tokens))).unwrap();
    plan.add_kv("tokenizer.ggml.bos_token_id", MetaValue::U32(1)).unwrap();
    plan.add_kv("tokenizer.ggml.eos_token_id", MetaValue::U32(2)).unwrap();
    if let Some(template) = template {
        plan.add_kv("tokenizer.chat_template", template).unwrap();
    }
    let names = ["attn_q", "attn_k", "attn_v"].map(|t| format!("blk.0.{t}.weight"));
    for name in &names {
        plan.add_tensor(name, GgmlType::F32, &[8, 8]).unwrap();
    }
    let mut w = GgufWriter::create(path, plan).unwrap();
    for name in &names {
        w.write_tensor(name, &[0u8; 8 * 8 * 4]).unwrap();
    }
    w.finish().unwrap();
}

/// A LoRA adapter of rank 2 for base tensors `(name, n_in, n_out)`, written by the crate's writer.
pub fn write_adapter(path: &Path, arch: &str, bases: &[(&str, u64, u64)]) {
    let pairs: Vec<LoraTensorPair> = bases
        .iter()
        .map(|&(base, n_in, n_out)| LoraTensorPair {
            base: base.into(),
            n_in,
            n_out,
            rank: 2,
            a: vec![0.01; (n_in * 2) as usize],
            b: vec![0.0; (2 * n_out) as usize],
        })
        .collect();
    write_lora_gguf(path, arch, 16.0, &pairs).unwrap();
}

/// An adapter with arbitrary F32 tensors (`name`, `ne`), including ones the writer would refuse.
fn write_raw_adapter(path: &Path, arch: &str, tensors: &[(String, Vec<u64>)]) {
    let mut plan = GgufPlan::new();
    plan.add_kv("general.type", "adapter").unwrap();
    plan.add_kv("general.architecture", arch).unwrap();
    plan.add_kv("adapter.type", "lora").unwrap();
    plan.add_kv("adapter.lora.alpha", MetaValue::F32(8.0)).unwrap();
    for (name, ne) in tensors {
        plan.add_tensor(name, GgmlType::F32, ne).unwrap();
    }
    let mut w = GgufWriter::create(path, plan).unwrap();
    for (name, ne) in tensors {
        w.write_tensor(name, &vec![0u8; 4 * ne.iter().product::<u64>() as usize]).unwrap();
    }
    w.finish().unwrap();
}
