//! Models in Ollama's store (`ollama:NAME[:TAG]`) as a user runs them: a store in Ollama's
//! layout holding our own fixture GGUF, found through `OLLAMA_MODELS` (or the default location
//! under HOME) by inspect, plan, generate, eval and finetune; training text that is what Ollama
//! renders; the Modelfile FROM the model's name; and the errors. (`ollama-create`, which talks to
//! an Ollama server, is tested in ollama_api.rs.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use gguftune::adapter::{pairs_from_values, write_lora_gguf};
use gguftune::arch::Arch;
use gguftune::data::{render, ChatTemplate, Message, Record, RenderOptions};
use gguftune::gguf::GgufFile;
use gguftune::model::{lora_layout, LoraConfig, Model};
use gguftune::modelfile::{SpecialTokens, TemplateFamily};
use gguftune::ollama::{resolve_in, ChatFormat, GgufTemplateReason, ModelName, OllamaError, OllamaModel};

use crate::common::fixtures::{alpaca_rows, tiny_llama, write_jsonl, Dtype, Shards, TinyLlamaSpec};
use crate::common::ollama_store::{Layer, ModelLayers, OllamaStore, MODEL, TENSOR};
use crate::common::temp_dir;
use crate::modelfile::ollama;
use crate::modelfile::{write_adapter, write_model};

/// The manifest path of `tiny:q8` in the default registry and namespace.
pub(crate) const TINY: &str = "registry.ollama.ai/library/tiny/q8";

/// Ollama's own template for Zephyr-style models (its template/zephyr.gotmpl): not one of
/// gguftune's families.
const ZEPHYR_GO: &str = "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}</s>\n{{ end }}<|assistant|>\n";

/// A converted tiny Llama (SentencePiece vocabulary, Llama 2 chat template) at `root/base.gguf`.
pub(crate) fn base_model(root: &Path) -> PathBuf {
    let dir = root.join("hf");
    fs::create_dir(&dir).unwrap();
    tiny_llama(&dir, &TinyLlamaSpec::default(), Dtype::BF16, Shards::One, 17).unwrap();
    let out = run(root, None, &["convert", "hf", "-o", "base.gguf", "--type", "q8_0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    root.join("base.gguf")
}

/// The ChatML Go template gguftune writes (and Ollama picks for ChatML GGUFs).
pub(crate) fn chatml_go() -> String {
    TemplateFamily::ChatMl.go_template(&SpecialTokens::default())
}

/// A store at `root/store` with `tiny:q8`: the base model, the ChatML template, a SYSTEM and
/// stop parameters.
pub(crate) fn store_with_tiny(root: &Path, base: &Path) -> OllamaStore {
    let store = OllamaStore::new(&root.join("store"));
    let template = chatml_go();
    store.add(
        TINY,
        ModelLayers {
            gguf: Some(base),
            template: Some(&template),
            system: Some("Be brief."),
            params: Some(json!({ "stop": ["<|im_end|>", "<|im_start|>"] })),
        },
    );
    store
}

/// Runs gguftune in `root` with `OLLAMA_MODELS` set to `store` (unset when `None`) and HOME set
/// to `root`, so no real store of the machine is seen.
pub(crate) fn run(root: &Path, store: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gguftune"));
    command.args(args).current_dir(root).env("HOME", root).env_remove("OLLAMA_MODELS");
    if let Some(store) = store {
        command.env("OLLAMA_MODELS", store);
    }
    command.output().expect("the gguftune binary runs")
}

/// `name` in `store` alone, through the library.
fn resolve(store: &OllamaStore, name: &str) -> Result<OllamaModel, OllamaError> {
    resolve_in(&ModelName::parse(name).unwrap(), std::slice::from_ref(&store.root))
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A random LoRA adapter for the model at `base`.
pub(crate) fn adapter_for(base: &Path, out: &Path) {
    let model = Model::open(base).unwrap();
    let cfg = LoraConfig { rank: 2, alpha: 2.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
    let slots = lora_layout(model.hparams(), &cfg).unwrap();
    let values: Vec<Vec<f32>> =
        slots.iter().flat_map(|s| [s.n_in * cfg.rank, cfg.rank * s.n_out]).map(|n| vec![0.01; n as usize]).collect();
    write_lora_gguf(out, "llama", cfg.alpha, &pairs_from_values(&slots, cfg.rank, &values)).unwrap();
}

// ----- Finding the model ------------------------------------------------------------------------

#[test]
fn inspect_plan_and_generate_open_an_ollama_model() {
    let root = temp_dir();
    let base = base_model(root.path());
    let store = store_with_tiny(root.path(), &base);

    let v = json_of(&run(root.path(), Some(&store.root), &["inspect", "ollama:tiny:q8", "--json"]));
    let direct = json_of(&run(root.path(), None, &["inspect", "base.gguf", "--json"]));
    assert_eq!(v["tensor_count"], direct["tensor_count"]);
    assert_eq!(v["file_bytes"], direct["file_bytes"]);
    assert_eq!(
        v["ollama"]["name"],
        json!({ "host": "registry.ollama.ai", "namespace": "library", "model": "tiny", "tag": "q8" })
    );
    assert_eq!(v["ollama"]["system"], "Be brief.");
    assert_eq!(v["ollama"]["parameters"]["stop"][0], "<|im_end|>");
    let text = run(root.path(), Some(&store.root), &["inspect", "ollama:tiny:q8"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("ollama:tiny:q8: ") && text.contains("system:       \"Be brief.\""), "{text}");

    let plan = json_of(&run(root.path(), Some(&store.root), &["plan", "ollama:tiny:q8", "--ctx", "256", "--json"]));
    assert_eq!(plan["model"], "ollama:tiny:q8");
    assert_eq!(plan["file_bytes"], direct["file_bytes"]);

    // A chat prompt is what Ollama sends the model: its SYSTEM, in the format of its TEMPLATE
    // (ChatML here, where the GGUF's own template is Llama 2's).
    let args = ["--chat", "-p", "Name a colour.", "-n", "1", "--temp", "0", "--threads", "1", "--ctx", "256", "--json"];
    let out = run(root.path(), Some(&store.root), &[&["generate", "ollama:tiny:q8"][..], &args].concat());
    assert!(stderr(&out).contains("chat format chatml"), "{}", stderr(&out));
    let v = json_of(&out);
    let expected = ollama::render(&chatml_go(), &[("user", "Name a colour.")], Some("Be brief.")).unwrap();
    assert_eq!(v["prompt"], expected);
    assert!(expected.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"), "{expected}");
    let direct = json_of(&run(root.path(), None, &[&["generate", "base.gguf"][..], &args].concat()));
    assert_eq!(direct["prompt"], "<s>[INST] Name a colour. [/INST]", "the GGUF's own template, Llama 2");
}

#[test]
fn the_default_store_is_under_home_and_names_take_ollamas_defaults() {
    let root = temp_dir();
    let base = root.path().join("model.gguf");
    write_model(&base, "llama", None);
    let store = OllamaStore::new(&root.path().join(".ollama/models"));
    store.add("registry.ollama.ai/library/tiny/latest", ModelLayers { gguf: Some(&base), ..ModelLayers::default() });
    store.add("registry.ollama.ai/me/tuned/v1", ModelLayers { gguf: Some(&base), ..ModelLayers::default() });
    for name in [
        "ollama:tiny",
        "ollama:tiny:latest",
        "ollama:library/tiny",
        "ollama:registry.ollama.ai/library/tiny:latest",
        "ollama:me/tuned:v1",
    ] {
        let v = json_of(&run(root.path(), None, &["inspect", name, "--json"]));
        assert_eq!(v["architecture"], "llama", "{name}");
    }
    let err = run(root.path(), None, &["inspect", "ollama:tuned:v1"]);
    assert_eq!(err.status.code(), Some(3), "{}", stderr(&err));
    // The error lists what the store has, to spot the missing namespace.
    assert!(stderr(&err).contains("me/tuned:v1") && stderr(&err).contains("ollama pull tuned:v1"), "{}", stderr(&err));
}

// ----- Errors -----------------------------------------------------------------------------------

#[test]
fn unknown_models_missing_blobs_and_other_layouts_are_named_errors() {
    let root = temp_dir();
    let base = root.path().join("model.gguf");
    write_model(&base, "llama", None);
    let store = OllamaStore::new(&root.path().join("store"));
    let inspect = |name: &str| run(root.path(), Some(&store.root), &["inspect", name]);

    // Unknown: the manifest path looked for, and what to do.
    let out = inspect("ollama:nope:7b");
    assert_eq!(out.status.code(), Some(3));
    let manifest = store.manifest_path("registry.ollama.ai/library/nope/7b");
    assert!(stderr(&out).contains(&manifest.display().to_string()), "{}", stderr(&out));
    assert!(stderr(&out).contains("`ollama pull nope:7b`"), "{}", stderr(&out));

    // A blob the manifest names is gone: its digest and path.
    let manifest =
        store.add(TINY, ModelLayers { gguf: Some(&base), template: Some("{{ .Prompt }}"), ..ModelLayers::default() });
    let m: Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
    let digest = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let blob = store.blob_path(digest.strip_prefix("sha256:").unwrap());
    fs::remove_file(&blob).unwrap();
    let out = inspect("ollama:tiny:q8");
    assert_eq!(out.status.code(), Some(3));
    let message = stderr(&out);
    assert!(message.contains(&digest) && message.contains(&blob.display().to_string()), "{message}");
    assert!(message.contains("ollama pull tiny:q8"), "{message}");
    let e = resolve(&store, "tiny:q8").unwrap_err();
    assert!(matches!(e, OllamaError::MissingBlob { .. }), "{e}");

    // Ollama's per-tensor layout: refused, saying so.
    let tensors: Vec<Layer> = (0..3).map(|i| Layer::new(TENSOR, vec![i as u8; 16])).collect();
    store.manifest("registry.ollama.ai/library/st/latest", json!({ "model_format": "safetensors" }), &tensors);
    let out = inspect("ollama:st");
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("per-tensor layout (3 layers of application/vnd.ollama.image.tensor"),
        "{}",
        stderr(&out)
    );
    let e = resolve(&store, "st").unwrap_err();
    assert!(matches!(e, OllamaError::TensorLayout { n_tensor_layers: 3, .. }), "{e}");

    // A GGUF split over two model layers, and a cloud model with no model layer.
    let gguf = fs::read(&base).unwrap();
    store.manifest(
        "registry.ollama.ai/library/split/latest",
        json!({}),
        &[Layer::new(MODEL, gguf.clone()), Layer::new(MODEL, [gguf, vec![0]].concat())],
    );
    let e = resolve(&store, "split").unwrap_err();
    assert!(matches!(e, OllamaError::SplitGguf { n_parts: 2, .. }), "{e}");
    store.manifest("registry.ollama.ai/library/cloud/latest", json!({ "remote_host": "https://ollama.com:443" }), &[]);
    let out = inspect("ollama:cloud");
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("cloud model that runs on https://ollama.com:443"), "{}", stderr(&out));

    // A manifest that is not JSON: the file named.
    let broken = store.manifest_path("registry.ollama.ai/library/broken/latest");
    fs::create_dir_all(broken.parent().unwrap()).unwrap();
    fs::write(&broken, b"{\"schemaVersion\": 2, \"layers\": [").unwrap();
    let out = inspect("ollama:broken");
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains(&format!("{}: not an Ollama manifest", broken.display())), "{}", stderr(&out));

    // A name Ollama would not accept, and a manifest larger than any Ollama writes.
    let out = inspect("ollama:../etc/passwd");
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("is not an Ollama model name"), "{}", stderr(&out));
    let huge = store.manifest_path("registry.ollama.ai/library/huge/latest");
    fs::create_dir_all(huge.parent().unwrap()).unwrap();
    fs::write(&huge, vec![b' '; (gguftune::ollama::MAX_MANIFEST_BYTES + 1) as usize]).unwrap();
    let e = resolve(&store, "huge").unwrap_err();
    assert!(matches!(e, OllamaError::TooLarge { .. }), "{e}");
}

// ----- Training as Ollama serves ----------------------------------------------------------------

#[test]
fn which_template_ollama_renders_with_decides_the_training_format() {
    let root = temp_dir();
    let store = OllamaStore::new(&root.path().join("store"));
    let format = |chat_template: Option<&str>, go: Option<&str>, config: Value| {
        let gguf = root.path().join("m.gguf");
        write_model(&gguf, "llama", chat_template);
        let mut layers = vec![Layer::new(MODEL, fs::read(&gguf).unwrap())];
        layers.extend(go.map(|t| Layer::new(crate::common::ollama_store::TEMPLATE, t)));
        store.manifest("registry.ollama.ai/library/m/latest", config, &layers);
        let model = resolve(&store, "m").unwrap();
        let file = GgufFile::open(&model.model_path).unwrap();
        let gguf = file.gguf().unwrap();
        model.chat_format(&gguf)
    };
    let llama3_go = TemplateFamily::Llama3.go_template(&SpecialTokens::default());
    let plain = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
    let with_tools =
        "{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}";
    let with_thinking = "{% for m in messages %}<think></think>{{ m['content'] }}{% endfor %}";
    assert_eq!(format(Some(plain), Some(&llama3_go), json!({})), ChatFormat::Family(TemplateFamily::Llama3));
    assert_eq!(format(None, Some(&chatml_go()), json!({})), ChatFormat::Family(TemplateFamily::ChatMl));
    let gguf = |reason| ChatFormat::GgufTemplate(reason);
    assert_eq!(format(Some(plain), None, json!({})), gguf(GgufTemplateReason::NoTemplateLayer));
    assert_eq!(format(Some(with_tools), Some(&llama3_go), json!({})), gguf(GgufTemplateReason::OllamaPrefersIt));
    assert_eq!(format(Some(with_thinking), Some(&llama3_go), json!({})), gguf(GgufTemplateReason::OllamaPrefersIt));
    // With a parser, Ollama keeps the Go template.
    assert_eq!(
        format(Some(with_tools), Some(&llama3_go), json!({ "parser": "qwen3" })),
        ChatFormat::Family(TemplateFamily::Llama3)
    );
    assert_eq!(format(Some(plain), Some(ZEPHYR_GO), json!({})), gguf(GgufTemplateReason::UnknownTemplate));
    assert_eq!(
        format(Some(plain), Some(&llama3_go), json!({ "renderer": "qwen3-coder" })),
        gguf(GgufTemplateReason::Renderer("qwen3-coder".into()))
    );
}

#[test]
fn training_text_is_what_ollama_renders_for_each_turn() {
    let root = temp_dir();
    let gguf = root.path().join("m.gguf");
    write_model(&gguf, "llama", Some(crate::common::fixtures::LLAMA2_TEMPLATE));
    let store = OllamaStore::new(&root.path().join("store"));
    let template = chatml_go();
    store.add(
        TINY,
        ModelLayers { gguf: Some(&gguf), template: Some(&template), system: Some("Be brief."), params: None },
    );
    let model = resolve(&store, "tiny:q8").unwrap();
    let file = GgufFile::open(&model.model_path).unwrap();
    let ChatFormat::Family(family) = model.chat_format(&file.gguf().unwrap()) else { panic!("ChatML is a family") };
    // What finetune renders a record with: the family's format, Ollama's SYSTEM.
    let chat = ChatTemplate::new(family.jinja().unwrap(), "<s>", "<|im_end|>").unwrap();
    let options = RenderOptions { train_on_prompt: false, system: model.system.clone(), merge_roles: true };
    // Two user messages in a row, which Ollama merges before its template sees them.
    let turns = [
        ("user", "Hi."),
        ("assistant", "Hello."),
        ("user", "Colour?"),
        ("user", "One word."),
        ("assistant", " Blue.\n"),
    ];
    let record = Record::Chat { messages: turns.iter().map(|(r, c)| Message::new(*r, *c)).collect() };
    let rendered = render(&record, Some(&chat), &options).unwrap();
    // Each answer is trained on right where Ollama's prompt for the conversation so far ends,
    // followed by the end of turn.
    let text = rendered.text();
    let mut offset = 0;
    let mut answers = Vec::new();
    for segment in &rendered.segments {
        if segment.trainable {
            answers.push((offset, segment.text.clone()));
        }
        offset += segment.text.len();
    }
    assert_eq!(answers.len(), 2);
    for (k, i) in [1, 4].into_iter().enumerate() {
        let prompt = ollama::render(model.template.as_deref().unwrap(), &turns[..i], model.system.as_deref()).unwrap();
        assert!(text.starts_with(&prompt), "{text:?}\n{prompt:?}");
        assert_eq!(answers[k], (prompt.len(), format!("{}<|im_end|>\n", turns[i].1)));
    }
}

#[test]
fn finetune_trains_on_an_ollama_model_and_the_modelfile_is_from_its_name() {
    let root = temp_dir();
    let base = base_model(root.path());
    let store = store_with_tiny(root.path(), &base);
    let template = ZEPHYR_GO;
    store.add(
        "registry.ollama.ai/library/tiny/zephyr",
        ModelLayers { gguf: Some(&base), template: Some(template), ..ModelLayers::default() },
    );
    write_jsonl(&root.path().join("train.jsonl"), &alpaca_rows(6, 3)).unwrap();
    let finetune = |model: &str, out: &str| {
        let args = ["finetune", model, "--data", "train.jsonl", "-o", out, "--rank", "2", "--batch", "2"];
        let more = ["--max-steps", "2", "--ctx", "256", "--threads", "1", "--val-split", "0", "--json"];
        run(root.path(), Some(&store.root), &[&args[..], &more].concat())
    };

    // Ollama's TEMPLATE is gguftune's ChatML: trained in it; the Modelfile keeps everything.
    let out = finetune("ollama:tiny:q8", "adapter.gguf");
    assert!(stderr(&out).contains("chat format chatml, as Ollama's TEMPLATE renders it"), "{}", stderr(&out));
    let v = json_of(&out);
    assert_eq!(v["steps"], 2);
    let text = fs::read_to_string(root.path().join("adapter.Modelfile")).unwrap();
    let commands = ollama::parse(&text).unwrap();
    let pairs: Vec<(&str, &str)> = commands.iter().map(|c| (c.name.as_str(), c.args.as_str())).collect();
    assert_eq!(pairs, [("model", "tiny:q8"), ("adapter", "./adapter.gguf")], "{text}");

    // A template gguftune does not reproduce: trained with the GGUF's chat template (Llama 2),
    // and the Modelfile sets TEMPLATE to it so that Ollama serves what was trained.
    let out = finetune("ollama:tiny:zephyr", "zephyr.gguf");
    assert!(stderr(&out).contains("not one gguftune reproduces"), "{}", stderr(&out));
    json_of(&out);
    let text = fs::read_to_string(root.path().join("zephyr.Modelfile")).unwrap();
    let commands = ollama::parse(&text).unwrap();
    let get = |name: &str| commands.iter().find(|c| c.name == name).map(|c| c.args.clone());
    assert_eq!(get("model").as_deref(), Some("tiny:zephyr"));
    assert_eq!(get("template"), Some(TemplateFamily::Llama2.go_template(&SpecialTokens::default())), "{text}");
    assert!(commands.iter().any(|c| c.name == "stop" && c.args == "[INST]"), "{text}");

    // eval reads the same source.
    let out = run(
        root.path(),
        Some(&store.root),
        &[
            "eval",
            "ollama:tiny:q8",
            "--lora",
            "adapter.gguf",
            "--data",
            "train.jsonl",
            "--task",
            "none",
            "--threads",
            "1",
            "--json",
        ],
    );
    let v = json_of(&out);
    assert!(v.to_string().contains("perplexity"), "{v}");
}

// ----- ollama-create ----------------------------------------------------------------------------

/// An adapter of another model is refused before any Modelfile is written.
#[test]
fn ollama_create_checks_the_adapter_against_the_model() {
    let root = temp_dir();
    let gguf = root.path().join("m.gguf");
    write_model(&gguf, "llama", Some(crate::common::fixtures::CHATML_TEMPLATE));
    let store = OllamaStore::new(&root.path().join("store"));
    store.add(TINY, ModelLayers { gguf: Some(&gguf), ..ModelLayers::default() });
    write_adapter(&root.path().join("qwen.gguf"), "qwen2", &[("blk.0.attn_q.weight", 8, 8)]);
    let out = run(
        root.path(),
        Some(&store.root),
        &["ollama-create", "x", "--adapter", "qwen.gguf", "--model", "ollama:tiny:q8"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!root.path().join("qwen.Modelfile").exists());
}
