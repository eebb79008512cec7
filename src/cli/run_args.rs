//! The LoRA and batch settings that `finetune` trains with and `plan` plans for, and the devices
//! a command computes on: one definition each, so that the commands take the same flags with the
//! same defaults.

use anyhow::{bail, Context};

use gguftune::arch::Arch;
use gguftune::ggml::{default_device, resolve_devices, Device, DeviceList, Devices, Runtime};
use gguftune::model::{LoraConfig, TARGETS};
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
    #[command(flatten)]
    pub devices: DeviceArgs,
}

impl RunArgs {
    /// Refuses settings no run can have: empty batches, rank 0, a context under two tokens.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.batch == 0 || self.grad_accum == 0 || self.rank == 0 || self.ctx < 2 {
            bail!("--batch, --grad-accum and --rank must be at least 1 and --ctx at least 2");
        }
        Ok(())
    }
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

/// `--device` and `--split`: where a command computes.
#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    /// Devices to compute on: cpu, cuda[:N], metal, vulkan[:N], rpc:HOST:PORT (a `gguftune
    /// rpc-server`), or a comma-separated list, which shares the layers among them (default: the
    /// first GPU, else the CPU).
    #[arg(long, value_name = "LIST")]
    pub device: Option<DeviceList>,
    /// Each --device's share of the model's layers, in its order, as llama.cpp's --tensor-split
    /// (3,1: three quarters on the first; default: in proportion to free memory).
    #[arg(long, value_name = "SHARES", value_delimiter = ',', requires = "device")]
    pub split: Option<Vec<f32>>,
}

impl DeviceArgs {
    /// The devices `--device` names, in its order (an RPC server's after greeting it: one that
    /// cannot be reached is an I/O error, exit code 4), or the default device; with the shares
    /// of `--split`, one per device.
    pub fn resolve(&self) -> anyhow::Result<Devices> {
        let rt = Runtime::get();
        let list = match &self.device {
            Some(list) => resolve_devices(rt, list)?,
            None => default_device(rt).into_iter().collect(),
        };
        if let Some(split) = &self.split {
            if split.len() != list.len() {
                bail!(
                    "--split has {} shares for {} devices ({}): give one per device",
                    split.len(),
                    list.len(),
                    list.iter().map(Device::name).collect::<Vec<_>>().join(", ")
                );
            }
        }
        let devices = Devices { list, split: self.split.clone() };
        devices.shares()?;
        Ok(devices)
    }
}

/// The devices' labels for a summary line: `rpc:127.0.0.1:50052, CPU` (each once).
pub fn device_labels(devices: &[Device]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for label in devices.iter().map(Device::label) {
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    labels
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
