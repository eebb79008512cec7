//! Bounds that hold under hostile input (issue 7): no allocation larger than the input can
//! justify, no unbounded recursion (nested GGUF arrays, deeply nested JSON in every JSON file we
//! read), templates that fail fast, and no terminal escapes from `inspect`. Regressions for what
//! the fuzzers under fuzz/ find live here too, named after what they found.

use std::path::Path;
use std::time::{Duration, Instant};

use gguftune::data::{read_jsonl_from, ChatTemplate, DataError, Format, Message, TemplateError};
use gguftune::gguf::{self, GgufErrorKind, MAX_ARRAY_NESTING};
use gguftune::hf::{load_tokenizer, Checkpoint, ModelConfig, INDEX_FILE, TOKENIZER_FILE};

use crate::common::gguf_bytes::{array, kv, RawGguf};
use crate::common::peak_alloc::largest_request_during;
use crate::common::{gguftune, temp_dir};

/// GGUF value type ids used below.
const U8: u32 = 0;
const U32: u32 = 4;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const U64: u32 = 10;

/// A valid small file with one extra metadata pair `key` of type `type_id`.
fn with_kv(key: &str, type_id: u32, value: Vec<u8>) -> Vec<u8> {
    let mut raw = RawGguf::valid();
    raw.kvs.push(kv(key, type_id, value));
    raw.to_bytes()
}

/// Parses `bytes`, asserting that no single allocation was larger than a small multiple of them.
fn parse_with_bounded_allocation(bytes: &[u8]) -> Result<(), gguf::GgufError> {
    let (result, largest) = largest_request_during(|| gguf::parse(bytes).map(|_| ()));
    let justified = 16 * bytes.len() + 4096;
    assert!(largest <= justified, "a {}-byte file made a {largest}-byte allocation", bytes.len());
    result
}

/// `depth` arrays, each holding the next, the innermost an empty array of u8 (built front to back:
/// wrapping a value depth times would copy it depth times).
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut value = array(ARRAY, 1, &[]).repeat(depth - 1);
    value.extend(array(U8, 0, &[]));
    value
}

#[test]
fn gguf_array_of_2_pow_40_elements_in_a_small_file_is_an_error_without_allocating() {
    for elem_type in [U8, U32, U64, STRING, ARRAY] {
        let bytes = with_kv("big", ARRAY, array(elem_type, 1 << 40, &[0; 32]));
        assert!(bytes.len() < 1024);
        let err = parse_with_bounded_allocation(&bytes).unwrap_err();
        assert!(
            matches!(err.kind(), GgufErrorKind::CountTooLarge { count, .. } if *count == 1 << 40),
            "element type {elem_type}: {err}"
        );
    }
}

#[test]
fn gguf_counts_near_u64_max_are_errors_without_allocating() {
    // Counts whose product with the entry size wraps around to a small number would pass an
    // unchecked `count * size <= remaining`.
    let wrapping = [(U32, (1u64 << 62) + 1), (U64, (1u64 << 61) + 1), (U8, u64::MAX), (STRING, u64::MAX / 8 + 1)];
    for (elem_type, count) in wrapping {
        let bytes = with_kv("a", ARRAY, array(elem_type, count, &[0; 16]));
        let err = parse_with_bounded_allocation(&bytes).unwrap_err();
        assert!(matches!(err.kind(), GgufErrorKind::CountTooLarge { .. }), "{elem_type} x {count}: {err}");
    }
    for count in [u64::MAX, u64::MAX - 1, 1 << 40, 1 << 32] {
        let mut raw = RawGguf::valid();
        raw.tensor_count = Some(count);
        assert!(parse_with_bounded_allocation(&raw.to_bytes()).is_err(), "tensor count {count}");
        let mut raw = RawGguf::valid();
        raw.kv_count = Some(count);
        assert!(parse_with_bounded_allocation(&raw.to_bytes()).is_err(), "metadata count {count}");
    }
}

#[test]
fn gguf_nested_array_depth_is_bounded() {
    // At the limit: parses, and every level can be walked and copied.
    let bytes = with_kv("deep", ARRAY, nested_arrays(MAX_ARRAY_NESTING));
    let g = gguf::parse(&bytes).unwrap();
    let mut value = g.get("deep").unwrap();
    for _ in 1..MAX_ARRAY_NESTING {
        value = value.as_array().unwrap().iter().next().unwrap();
    }
    assert!(value.as_array().unwrap().is_empty());
    std::hint::black_box(g.get("deep").unwrap().to_owned_value());
    // Far past it (a million levels in 12 MB): a typed error at the first level too many, found
    // without recursing further (no stack overflow on a test thread's small stack).
    let bytes = with_kv("deep", ARRAY, nested_arrays(1_000_000));
    let err = parse_with_bounded_allocation(&bytes).unwrap_err();
    assert!(
        matches!(err.kind(), GgufErrorKind::NestingTooDeep { depth, max } if *depth == MAX_ARRAY_NESTING + 1 && *max == MAX_ARRAY_NESTING),
        "{err}"
    );
}

/// JSON arrays nested `levels` deep: `[[[...]]]`.
fn deep_json(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// `{"key": <deep>}`.
fn deep_json_field(key: &str, levels: usize) -> String {
    format!("{{\"{key}\": {}}}", deep_json(levels))
}

#[test]
fn deeply_nested_config_json_is_an_error_not_a_stack_overflow() {
    let dir = temp_dir();
    for text in [deep_json(100_000), deep_json_field("rope_scaling", 100_000)] {
        std::fs::write(dir.path().join("config.json"), &text).unwrap();
        let err = ModelConfig::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        assert!(Checkpoint::open(dir.path()).is_err());
    }
}

#[test]
fn deeply_nested_tokenizer_files_are_errors_not_stack_overflows() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("config.json"), r#"{"vocab_size": 8}"#).unwrap();
    for (file, text) in [
        (TOKENIZER_FILE, deep_json(100_000)),
        (TOKENIZER_FILE, deep_json_field("model", 100_000)),
        ("tokenizer_config.json", deep_json_field("added_tokens_decoder", 100_000)),
    ] {
        std::fs::write(dir.path().join(TOKENIZER_FILE), r#"{"model": {"type": "BPE", "vocab": {}, "merges": []}}"#)
            .unwrap();
        std::fs::write(dir.path().join(file), &text).unwrap();
        let err = load_tokenizer(dir.path(), Some(8)).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{file}: {err}");
        std::fs::remove_file(dir.path().join("tokenizer_config.json")).ok();
    }
}

#[test]
fn deeply_nested_safetensors_index_is_an_error_not_a_stack_overflow() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    std::fs::write(dir.path().join(INDEX_FILE), deep_json_field("weight_map", 100_000)).unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
}

#[test]
fn deeply_nested_dataset_lines_are_errors_in_every_format() {
    let formats = Format::ALL.iter().copied().map(Some).chain([None]);
    for format in formats {
        for line in [deep_json(100_000), deep_json_field("text", 100_000), deep_json_field("messages", 100_000)] {
            let err = read_jsonl_from(line.as_bytes(), Path::new("deep.jsonl"), format).unwrap_err();
            assert!(matches!(err, DataError::TooDeep { line: 1, .. }), "{format:?}: {err}");
        }
    }
}

/// Whether an error is of the kind a case expects.
type ErrorCheck = fn(&TemplateError) -> bool;

#[test]
fn hostile_templates_fail_fast_with_typed_errors() {
    let messages = [Message::new("user", "Hi")];
    let hostile: [(&str, ErrorCheck); 4] = [
        // minijinja's range() refuses to make more than 100,000 items.
        ("{% for i in range(10**9) %}x{% endfor %}", |e| matches!(e, TemplateError::Render { .. })),
        // 10^10 loop steps run out of fuel.
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", |e| {
            matches!(e, TemplateError::OutOfFuel { .. })
        }),
        // A string doubled 64 times, in a namespace so that it survives each iteration.
        ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}", |e| {
            matches!(e, TemplateError::OutOfFuel { .. } | TemplateError::OutputTooLarge { .. })
        }),
        // ... and by a recursive macro.
        ("{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s }}{% endif %}{% endmacro %}{{ d('x', 64) }}", |e| {
            matches!(e, TemplateError::OutOfFuel { .. } | TemplateError::OutputTooLarge { .. })
        }),
    ];
    for (source, expected) in hostile {
        let start = Instant::now();
        let err = ChatTemplate::new(source, "<s>", "</s>").unwrap().render(&messages, true).unwrap_err();
        let elapsed = start.elapsed();
        assert!(expected(&err), "{source}: {err:?}");
        assert!(elapsed < Duration::from_secs(10), "{source}: failed only after {elapsed:?}");
    }
}

#[test]
fn inspect_escapes_control_characters_in_keys_values_and_tensor_names() {
    let dir = temp_dir();
    let mut raw = RawGguf::valid();
    raw.kvs.push(kv("evil\x1b[31m.key", STRING, crate::common::gguf_bytes::string(b"red\x1b[31mvalue\x07")));
    raw.tensors[0].name = b"a\x1b[31m.weight".to_vec();
    std::fs::write(dir.path().join("evil.gguf"), raw.to_bytes()).unwrap();
    gguf::parse(&raw.to_bytes()).expect("the file is valid: escapes are legal UTF-8");
    let out = gguftune(dir.path(), &["inspect", "evil.gguf", "--tensors"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "control characters reach the terminal: {text:?}");
    for escaped in ["evil\\u{1b}[31m.key", "red\\u{1b}[31mvalue\\u{7}", "a\\u{1b}[31m.weight"] {
        assert!(text.contains(escaped), "{escaped} missing from {text}");
    }
}

#[test]
fn inspect_escapes_bidi_overrides_and_invisible_characters() {
    let dir = temp_dir();
    let mut raw = RawGguf::valid();
    // "Trojan Source": a right-to-left override makes the value read "safe.gguf" on screen, a
    // zero-width space splits a key that looks like another, isolates and marks reorder a name.
    raw.kvs.push(kv("general.name", STRING, crate::common::gguf_bytes::string("evil\u{202e}fugg.efas".as_bytes())));
    raw.kvs.push(kv(
        "general.\u{200b}type",
        STRING,
        crate::common::gguf_bytes::string("model\u{2066}\u{200f}".as_bytes()),
    ));
    raw.tensors[0].name = "blk.0.\u{2067}attn_q\u{2069}.weight\u{feff}".as_bytes().to_vec();
    std::fs::write(dir.path().join("bidi.gguf"), raw.to_bytes()).unwrap();
    gguf::parse(&raw.to_bytes()).expect("the file is valid: these are legal UTF-8");
    let out = gguftune(dir.path(), &["inspect", "bidi.gguf", "--tensors"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for hidden in ['\u{202e}', '\u{200b}', '\u{2066}', '\u{200f}', '\u{2067}', '\u{2069}', '\u{feff}'] {
        assert!(!text.contains(hidden), "U+{:04X} reaches the terminal: {text:?}", u32::from(hidden));
    }
    for escaped in [
        "evil\\u{202e}fugg.efas",
        "general.\\u{200b}type",
        "model\\u{2066}\\u{200f}",
        "blk.0.\\u{2067}attn_q\\u{2069}.weight\\u{feff}",
    ] {
        assert!(text.contains(escaped), "{escaped} missing from {text}");
    }
}

/// A Llama config.json with `key` set to `value`.
fn llama_config_with(key: &str, value: serde_json::Value) -> serde_json::Value {
    let mut config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "vocab_size": 512
    });
    config[key] = value;
    config
}

/// Config sizes are checked before they size anything (issue 18): absurd layer counts, widths and
/// vocabularies, zeros and negative numbers are errors naming the key and the value, with no
/// allocation beyond a few kilobytes; `convert` and `plan` stop at once with that message
/// (a billion layers used to run until killed).
#[test]
fn hostile_config_sizes_are_refused_before_they_size_anything() {
    let path = Path::new("config.json");
    let cases: [(&str, serde_json::Value, &str); 6] = [
        ("num_hidden_layers", 1_000_000_000u64.into(), "'num_hidden_layers' is 1000000000; expected 1 to 512"),
        ("num_hidden_layers", 0.into(), "'num_hidden_layers' is 0; expected 1 to 512"),
        ("num_hidden_layers", (-3).into(), "key 'num_hidden_layers' is -3, expected a non-negative integer"),
        ("hidden_size", u64::MAX.into(), "is not a multiple of num_attention_heads"),
        ("vocab_size", (1u64 << 40).into(), "'vocab_size' is 1099511627776; expected 1 to 4194304"),
        ("intermediate_size", (1u64 << 30).into(), "'intermediate_size' is 1073741824; expected 1 to 1048576"),
    ];
    for (key, value, expected) in cases {
        let config = llama_config_with(key, value);
        let (result, largest) = largest_request_during(|| ModelConfig::from_json(path, &config));
        let err = result.unwrap_err().to_string();
        assert!(err.contains(expected), "{key}: {err}");
        assert!(largest < 64 << 10, "{key}: a {largest}-byte allocation for a refused config");
    }
    // Every family's config (a multimodal Gemma 3's in its text_config) with a billion layers is
    // refused as cheaply: by the layer count, or by a per-layer list that cannot match it.
    for (family, variant) in [("gemma2", "9b"), ("gemma3", "4b"), ("gemma3", "multimodal"), ("phi3", "longrope")] {
        let fixture = crate::common::fixture_dir(family, variant).join("config.json");
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
        let text = if config.get("text_config").is_some() { &mut config["text_config"] } else { &mut config };
        text["num_hidden_layers"] = 1_000_000_000u64.into();
        let (result, largest) = largest_request_during(|| ModelConfig::from_json(path, &config));
        let err = result.unwrap_err().to_string();
        assert!(err.contains("'num_hidden_layers' is 1000000000") || err.contains("'layer_types'"), "{family}: {err}");
        assert!(largest < 64 << 10, "{family}: a {largest}-byte allocation for a refused config");
    }
    // Through the CLI, on a checkpoint whose config.json claims a billion layers.
    let dir = temp_dir();
    let spec = crate::common::fixtures::TinyLlamaSpec::default();
    crate::common::fixtures::tiny_llama(
        dir.path(),
        &spec,
        crate::common::fixtures::Dtype::F32,
        crate::common::fixtures::Shards::One,
        1,
    )
    .unwrap();
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["num_hidden_layers"] = 1_000_000_000u64.into();
    std::fs::write(&path, config.to_string()).unwrap();
    for args in [&["convert", ".", "-o", "out.gguf"][..], &["plan", "config.json"]] {
        let out = gguftune(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("'num_hidden_layers' is 1000000000"), "{}: {stderr}", args[0]);
    }
    assert!(!dir.path().join("out.gguf").exists());
}
