//! `gguftune generate`: run a model, with adapters, through llama.cpp and stream what it writes.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use gguftune::generate::{generate, prompt_tokens, GenerateOptions, LoraSpec, Prompt};
use gguftune::ggml::{LlamaAdapter, LlamaContext, SamplerParams};

use super::llama::{chat_setup, load_adapters, load_model};
use super::run_args::{device_labels, DeviceArgs};
use super::source::ModelArg;

/// Generate text with llama.cpp (as llama.cpp and Ollama run the model), with LoRA adapters.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  gguftune generate model.gguf --lora adapter.gguf -p $'Review: The food was great.\\nSentiment:' --temp 0
  gguftune generate model.gguf --lora adapter.gguf:0.5 --chat --system \"Be brief.\" -p \"Name a colour.\" --json
  gguftune generate ollama:llama3.2:1b --lora adapter.gguf --chat -p \"Name a colour.\"
  gguftune generate model.gguf --device rpc:10.0.0.2:50052 -p \"Name a colour.\" --temp 0

The text streams to stdout; prompt and generation statistics go to stderr (--json: one object on stdout).")]
pub struct Args {
    /// The model: a GGUF file, or ollama:NAME[:TAG] for a model in Ollama's store.
    model: PathBuf,
    /// A LoRA adapter to apply, PATH or PATH:SCALE (repeatable).
    #[arg(long, value_name = "PATH[:SCALE]")]
    lora: Vec<String>,
    /// The prompt.
    #[arg(short, long)]
    prompt: String,
    /// Render the prompt as a user message with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message before the prompt (with --chat; default: an Ollama model's SYSTEM).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(short, long, default_value_t = 256)]
    n: usize,
    /// Temperature; 0 picks the most likely token every time (greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Sample from the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: i32,
    /// Sample from the most likely tokens whose probabilities add up to P (1: all).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Seed of the sampler (default: a random one, reported at the end).
    #[arg(long)]
    seed: Option<u32>,
    /// Context size in tokens (prompt and generated text).
    #[arg(long, default_value_t = 4096)]
    ctx: u32,
    #[command(flatten)]
    devices: DeviceArgs,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Print one JSON object (text, tokens, stop reason) instead of streaming.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let specs: Vec<LoraSpec> = args.lora.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    let seed = args.seed.unwrap_or_else(random_seed);
    let source = ModelArg::resolve(&args.model)?;
    let offload = args.devices.resolve()?;
    let devices = device_labels(&offload.list);
    let model = load_model(&source.path, &offload)?;
    let adapters = load_adapters(&model, &specs)?;
    let chat = if args.chat { Some(chat_setup(&source, &model)?) } else { None };
    let template = chat.as_ref().and_then(|c| c.template.as_ref());
    // Without --system, an Ollama model's SYSTEM, as Ollama puts it before a chat.
    let system = args.system.as_deref().or(chat.as_ref().and_then(|c| c.system.as_deref()));
    let prompt = match args.chat {
        true => Prompt::Chat { system, user: &args.prompt },
        false => Prompt::Raw(&args.prompt),
    };
    let (prompt_text, tokens) = prompt_tokens(&model, template, prompt)?;
    let mut ctx = LlamaContext::new(&model, args.ctx, threads).context("creating the llama.cpp context")?;
    let scaled: Vec<(&LlamaAdapter<'_>, f32)> = adapters.iter().zip(&specs).map(|(a, s)| (a, s.scale)).collect();
    ctx.set_adapters(&scaled)?;
    let options = GenerateOptions {
        max_new: args.n,
        sampler: SamplerParams { temp: args.temp, top_k: args.top_k, top_p: args.top_p, seed },
    };
    let mut stdout = std::io::stdout().lock();
    let mut stream = |piece: &str| -> std::io::Result<()> {
        if !args.json {
            stdout.write_all(piece.as_bytes())?;
            stdout.flush()?;
        }
        Ok(())
    };
    let out = generate(&model, &mut ctx, &tokens, &options, &mut stream)?;
    let tokens_per_second = out.tokens.len() as f64 / out.generate_seconds.max(1e-9);
    if args.json {
        let report = serde_json::json!({
            "prompt": prompt_text, "prompt_tokens": out.prompt_tokens, "text": out.text, "tokens": out.tokens,
            "stop": out.stop, "seed": seed, "devices": devices, "prompt_seconds": out.prompt_seconds,
            "generate_seconds": out.generate_seconds, "tokens_per_second": tokens_per_second,
        });
        writeln!(stdout, "{report}")?;
    } else {
        if !out.text.ends_with('\n') {
            writeln!(stdout)?;
        }
        eprintln!(
            "prompt {} tokens ({:.2} s), generated {} tokens in {:.2} s ({tokens_per_second:.1} tokens/s), stop: {}, seed {seed}, on {}",
            out.prompt_tokens,
            out.prompt_seconds,
            out.tokens.len(),
            out.generate_seconds,
            out.stop.name(),
            devices.join(", "),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A seed from the clock, for runs that do not give one (reported, so that they can be repeated).
fn random_seed() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    // LLAMA_DEFAULT_SEED (u32::MAX) asks llama.cpp for a seed of its own: never give that one.
    (nanos ^ std::process::id().rotate_left(16)) & 0x7FFF_FFFF
}
