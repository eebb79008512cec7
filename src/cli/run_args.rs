//! The LoRA and batch settings that `finetune` trains with and `plan` plans for: one definition,
//! so that the two commands take the same flags with the same defaults.

use anyhow::{bail, Context};

use gguftune::arch::Arch;
use gguftune::ggml::{resolve_devices, Device, DeviceList, DeviceType, Runtime};
use gguftune::model::{Devices, LoraConfig, TARGETS};
use gguftune::names::TensorKind;
use gguftune::train::{Activations, BatchShape};

/// The settings of a LoRA run that decide its graph and memory.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub rank: u64,
    /// Projections to adapt, comma-separated: q,k,v,o,gate,up,down (Llama family) or
    /// qkv,o,up,down (Falcon, GPT-NeoX, Phi-3, whose up is its fused gate and up); `all`: every
    /// projection of the model.
    #[arg(long, default_value = "all")]
    pub targets: String,
    /// Tokens per sequence: longer examples are cut (or skipped, with finetune's --overlong skip).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Micro-batches per optimizer step (gradients averaged over them; no effect on memory).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Keep only each layer's input for the backward pass and compute the rest of the layer
    /// again there: a fraction of the activation memory, for a second forward pass per step
    /// (see `gguftune plan` for both figures).
    #[arg(long)]
    pub recompute: bool,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to train: cpu, cuda[:N], metal, vulkan[:N], rpc:HOST:PORT (a `gguftune rpc-server`),
    /// or a comma-separated list, which shares the layers among the devices (default: the first
    /// GPU, else the CPU).
    #[arg(long, value_name = "LIST")]
    pub device: Option<DeviceList>,
    /// With several devices, each one's share of the layers, as llama.cpp's --tensor-split
    /// (`3,1`: three quarters of the layers on the first device); default: by free memory.
    #[arg(long, value_name = "SHARES", value_delimiter = ',')]
    pub split: Option<Vec<f32>>,
}

impl RunArgs {
    /// Refuses settings no run can have: empty batches, rank 0, a context under two tokens.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.batch == 0 || self.grad_accum == 0 || self.rank == 0 || self.ctx < 2 {
            bail!("--batch, --grad-accum and --rank must be at least 1 and --ctx at least 2");
        }
        Ok(())
    }

    /// The devices of `--device` and `--split`: each device of the list (an RPC server is
    /// greeted first: an unreachable one is an error, not ggml's abort), else the first GPU,
    /// else the CPU.
    pub fn devices(&self) -> anyhow::Result<Devices> {
        devices_of(self.device.as_ref(), self.split.clone())
    }
}

/// The devices of a `--device` list and `--split` shares (see [`RunArgs::devices`]).
pub fn devices_of(list: Option<&DeviceList>, split: Option<Vec<f32>>) -> anyhow::Result<Devices> {
    let rt = Runtime::get();
    let list = match list {
        Some(list) => resolve_devices(rt, list)?,
        None => Device::all(rt)
            .into_iter()
            .filter(|d| matches!(d.kind(), DeviceType::Gpu | DeviceType::Igpu))
            .take(1)
            .collect(),
    };
    if split.as_ref().is_some_and(|s| s.len() != list.len().max(1)) {
        bail!(
            "--split has {} share(s) for {} device(s) ({}): give one per device",
            split.as_ref().map_or(0, Vec::len),
            list.len().max(1),
            if list.is_empty() { "cpu".into() } else { list.iter().map(Device::name).collect::<Vec<_>>().join(", ") }
        );
    }
    let devices = Devices { list, split };
    devices.shares()?;
    Ok(devices)
}

impl RunArgs {
    /// `--threads`, or every core.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Whether the backward pass keeps or recomputes activations.
    pub fn activations(&self) -> Activations {
        if self.recompute {
            Activations::Recompute
        } else {
            Activations::Keep
        }
    }

    /// The LoRA settings for a model of `arch`, with `alpha` (which scales the adapter and
    /// changes nothing else).
    pub fn lora(&self, alpha: f32, arch: Arch) -> anyhow::Result<LoraConfig> {
        Ok(LoraConfig { rank: self.rank, alpha, targets: parse_targets(&self.targets, arch)? })
    }

    /// The micro-batch: rows of `seq_len` tokens, `--batch` of them but no more than `n_seqs`,
    /// the sequences there are to train on.
    pub fn batch_shape(&self, seq_len: usize, n_seqs: usize) -> BatchShape {
        BatchShape { seq_len, n_seq: self.batch.min(n_seqs).max(1) }
    }
}

/// Parses `--targets` for a model of `arch`: names of its projections, comma-separated, or `all`.
pub fn parse_targets(s: &str, arch: Arch) -> anyhow::Result<Vec<TensorKind>> {
    if s.trim() == "all" {
        return Ok(arch.projections().to_vec());
    }
    let names: Vec<&str> = TARGETS.iter().filter(|(_, k)| arch.projections().contains(k)).map(|(n, _)| *n).collect();
    s.split(',')
        .map(|t| {
            TARGETS
                .iter()
                .find(|(n, k)| *n == t.trim() && arch.projections().contains(k))
                .map(|(_, k)| *k)
                .with_context(|| {
                    format!(
                        "--targets: '{t}' is not a projection of {} models (expected all, or some of: {})",
                        arch.name(),
                        names.join(",")
                    )
                })
        })
        .collect()
}
