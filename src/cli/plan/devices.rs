//! `gguftune plan --device ...`: the memory of each device of the list and of the host, each
//! against what it has free, and what would make a run that does not fit fit.

use std::process::ExitCode;

use gguftune::model::Devices;
use gguftune::plan::{device_memory, DeviceMemory, DevicePlan, ModelSource, PlannedModel, RunShape};

use super::{machine_memory, print_time, run_text, suggestions, time_json, Args, Need, Suggestion, TimePlan};
use crate::cli::output::human_bytes;

/// Plans `run` on `devices` and prints the plan (`--json`: one object).
pub(super) fn plan_on_devices(
    args: &Args,
    source: &ModelSource,
    planned: &PlannedModel,
    run: &RunShape,
    devices: &Devices,
    time: Option<&TimePlan>,
) -> anyhow::Result<ExitCode> {
    let host_limit = args.memory.or_else(machine_memory);
    let plan = device_memory(&planned.model, run, devices, host_limit)?;
    let fits = plan.fits();
    let suggestions = match fits {
        Some(false) => {
            let need = |model: &PlannedModel, run: &RunShape| -> anyhow::Result<Need> {
                let changed = device_memory(&model.model, run, devices, host_limit)?;
                let tightest = changed.tightest();
                Ok(Need {
                    peak: tightest.map_or(0, DeviceMemory::total_bytes),
                    fits: changed.fits() == Some(true),
                    on: tightest.map(|m| m.name.clone()),
                })
            };
            suggestions(source, planned, run, args.run.grad_accum, &need)?
        }
        _ => Vec::new(),
    };
    // Beside the changes of the run: the change of the devices that relieves the tightest one.
    let device_change = plan.tightest().filter(|_| !suggestions.is_empty()).and_then(|t| device_change(t, devices));
    let base_params: u64 = planned.model.gguf()?.tensors.iter().map(|t| t.n_elements()).sum();
    let report =
        Report { args, planned, run, plan: &plan, base_params, suggestions: &suggestions, device_change, time };
    if args.json {
        report.print_json();
    } else {
        report.print_text();
    }
    Ok(ExitCode::SUCCESS)
}

/// What `memory` says about fitting, in words.
fn verdict(memory: &DeviceMemory) -> String {
    match (memory.fits(), memory.available_bytes) {
        (Some(true), Some(a)) => format!("fits in {}", human_bytes(a)),
        (Some(false), Some(a)) => format!("does NOT fit in {}", human_bytes(a)),
        _ if memory.is_host() => "memory of this machine unknown (give --memory)".into(),
        _ => "free memory unknown".into(),
    }
}

/// The change of the device list that relieves the memory `tight`, if one can: a device gives
/// layers to another device, the host its layers to a device.
fn device_change(tight: &DeviceMemory, devices: &Devices) -> Option<String> {
    match (tight.is_host(), devices.list.len()) {
        (true, _) if tight.layers == 0 => None,
        (true, _) => Some("give the host's layers to a device (--device, --split)".into()),
        (false, 1) => Some(format!("add a device beside {} (a list in --device, with --split)", tight.name)),
        (false, _) => {
            Some(format!("add a device, or change --split to give {} a smaller share of the layers", tight.name))
        }
    }
}

/// Everything a plan on devices prints.
struct Report<'a> {
    args: &'a Args,
    planned: &'a PlannedModel,
    run: &'a RunShape,
    plan: &'a DevicePlan,
    base_params: u64,
    suggestions: &'a [Suggestion],
    /// The change of the device list that would relieve the memory that fits worst.
    device_change: Option<String>,
    time: Option<&'a TimePlan>,
}

impl Report<'_> {
    fn print_text(&self) {
        let Report { args, planned, run, plan, base_params, suggestions, ref device_change, time } = *self;
        let hb = |n: u64| human_bytes(n);
        println!("{}", run_text(args, planned, run, base_params));
        println!(
            "micro-batch {} x {} tokens, {} CPU threads, {} LoRA parameters\n",
            run.shape.n_seq, run.shape.seq_len, run.threads, plan.lora_params
        );
        let names: Vec<String> = plan
            .memories
            .iter()
            .map(|m| match m.description.is_empty() {
                true => m.name.clone(),
                false => format!("{} ({})", m.name, m.description),
            })
            .collect();
        let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).max(6);
        println!(
            "  {:<w$} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  verdict",
            "memory", "layers", "weights", "LoRA", "compute", "optimizer", "host", "total"
        );
        for (m, name) in plan.memories.iter().zip(&names) {
            println!(
                "  {:<w$} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  {}",
                name,
                m.layers,
                hb(m.weights_bytes),
                hb(m.lora_state_bytes),
                hb(m.compute_bytes),
                hb(m.optimizer_bytes),
                hb(m.host_bytes),
                hb(m.total_bytes()),
                verdict(m)
            );
        }
        println!(
            "\n  weights: the file's tensors of each one's layers (the output layer on the last device; the host's \
         are pages of the mapped file); LoRA: tensors, gradients, 2 AdamW moments; compute and optimizer: \
         ggml's scheduler's buffers; host: the LoRA state's copy (3 x 4 B x {}), the runtime",
            plan.lora_params
        );
        if !suggestions.is_empty() {
            println!("\nto fit, change one of:");
            for sg in suggestions {
                let on = sg.on.as_deref().map_or_else(String::new, |on| format!(" on {on}"));
                println!("  {:<40} peak {:>10}{on}{}", sg.change, hb(sg.peak), if sg.fits { "  fits" } else { "" });
            }
            if let Some(change) = device_change {
                println!("  {change}");
            }
        }
        let parts: Vec<String> =
            plan.memories.iter().map(|m| format!("{} {} ({})", m.name, hb(m.total_bytes()), verdict(m))).collect();
        let mut summary = format!("plan: {}", parts.join(", "));
        print_time(args, time, &mut summary);
        eprintln!("\n{summary}");
    }

    fn print_json(&self) {
        let Report { args, planned, run, plan, base_params, suggestions, ref device_change, time } = *self;
        let value = serde_json::json!({
            "model": args.model,
            "file_type": planned.file_type.map(|t| t.name()),
            "file_bytes": planned.file_bytes,
            "base_parameters": base_params,
            "lora_parameters": plan.lora_params,
            "rank": run.lora.rank,
            "seq_len": run.shape.seq_len,
            "batch": run.shape.n_seq,
            "threads": run.threads,
            "fits": plan.fits(),
            "devices": plan.memories.iter().map(|m| serde_json::json!({
                "name": m.name, "description": m.description, "layers": m.layers,
                "weights_bytes": m.weights_bytes, "lora_state_bytes": m.lora_state_bytes,
                "compute_buffer_bytes": m.compute_bytes, "optimizer_buffer_bytes": m.optimizer_bytes,
                "host_bytes": m.host_bytes, "total_bytes": m.total_bytes(),
                "available_bytes": m.available_bytes, "fits": m.fits(),
            })).collect::<Vec<_>>(),
            "tokens_per_second": time.and_then(|t| t.speed.as_ref().map(|(tps, _)| *tps)),
            "time": time_json(time),
            "suggestions": suggestions.iter().map(|sg| serde_json::json!({
                "change": sg.change, "peak_memory_bytes": sg.peak, "on": sg.on, "fits": sg.fits,
            })).chain(device_change.iter().map(|c| serde_json::json!({"change": c}))).collect::<Vec<_>>(),
        });
        println!("{value}");
    }
}
