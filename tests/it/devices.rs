//! ggml devices and the RPC backend, without a GPU: `gguftune rpc-server` on 127.0.0.1 serves the
//! CPU, and its device is reached only through ggml's backend API, as a GPU is: it is listed with
//! its own memory, and a training step computed on it (forward through a frozen Q8_0 weight,
//! backward through it, AdamW) equals the local CPU backend's bit for bit, and so do a tiny
//! model's forward logits with its weights on the device, placed there by ggml's scheduler.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};

use gguftune::arch::Arch;
use gguftune::ggml::{
    add_rpc_server, greet_rpc_server, quantize_rows, Allocator, Backend, Context, Device, DeviceType, Graph,
    ParamBuffer, Placement, RpcEndpoint, RpcError, Runtime, Scheduler, RPC_PROTOCOL_VERSION,
};
use gguftune::gguf::GgmlType;
use gguftune::model::{Devices, LoraConfig, Model};
use gguftune::quant::FileType;
use gguftune::train::{loss_and_grads, loss_and_grads_on, Activations};

use crate::common::fixtures::{tiny_llama, Dtype, Rng, Shards, TinyLlamaSpec};
use crate::common::rpc_server::{free_port, serial, Server, THREADS};
use crate::common::training::random_lora_pairs;
use crate::common::transformers_fixtures::converted;
use crate::common::{convert_to, gguftune, temp_dir};
use crate::lora_grad::{check_model_gradients_by_finite_differences, RELATIVE_TOLERANCE, STEP};

/// What one training step computed: the trained tensor before, the loss, its gradient, and the
/// tensor after one AdamW update.
#[derive(Debug, PartialEq)]
struct Step {
    initial: Vec<f32>,
    loss: Vec<f32>,
    grad: Vec<f32>,
    updated: Vec<f32>,
}

/// One step on `backend`: `loss = sum((W·P)²)` with W a frozen 32×64 Q8_0 weight and P a trained
/// 64×8 f32 tensor (W·P is `mul_mat` of a quantized weight by f32 activations, as every frozen
/// projection of a model), its backward pass (through the Q8_0 weight: `out_prod` of W and the
/// incoming gradient), then `opt_step_adamw` on P. Every tensor lives on the backend: the
/// weight, P, its gradient accumulator and moments in one buffer, the rest in the allocator's.
/// Also checks that the backend's device says it supports every node of both graphs.
fn training_step(rt: &Runtime, backend: &Backend) -> Step {
    let (k, m, n) = (64u64, 32u64, 8u64);
    let mut rng = Rng::new(7);
    let weight_f32: Vec<f32> = (0..k * m).map(|_| rng.uniform(1.0)).collect();
    let mut weight_q8 = vec![0u8; (m * k / 32 * 34) as usize];
    quantize_rows(GgmlType::Q8_0, &weight_f32, k as usize, &mut weight_q8).unwrap();
    let p0: Vec<f32> = (0..k * n).map(|_| rng.uniform(0.5)).collect();

    let params = Context::new(rt, 16, 0).unwrap();
    let w = params.new_tensor(GgmlType::Q8_0, &[k, m]).unwrap();
    let p = params.new_tensor(GgmlType::F32, &[k, n]).unwrap().set_param().unwrap();
    let p_grad = params.new_tensor(GgmlType::F32, &[k, n]).unwrap();
    let (p_m, p_v) =
        (params.new_tensor(GgmlType::F32, &[k, n]).unwrap(), params.new_tensor(GgmlType::F32, &[k, n]).unwrap());
    let loss_grad = params.new_tensor(GgmlType::F32, &[1]).unwrap();
    let adamw = params.new_tensor(GgmlType::F32, &[7]).unwrap();
    let buffer = ParamBuffer::alloc(&params, backend).unwrap();
    buffer.set_bytes(w, &weight_q8).unwrap();
    ParamBuffer::write_f32(p, &p0).unwrap();
    for t in [p_grad, p_m, p_v] {
        ParamBuffer::write_zeros(t).unwrap();
    }
    ParamBuffer::write_f32(loss_grad, &[1.0]).unwrap();
    // lr, beta1, beta2, eps, weight decay, 1/(1-beta1^1), 1/(1-beta2^1)
    ParamBuffer::write_f32(adamw, &[1e-2, 0.9, 0.999, 1e-8, 0.01, 1.0 / 0.1, 1.0 / 0.001]).unwrap();

    let device = backend.device().expect("a backend made from a device has one");
    let ctx = Context::new(rt, 64, 64).unwrap();
    let h = ctx.mul_mat(w, p).unwrap();
    let loss = ctx.sum(ctx.sqr(h).unwrap()).unwrap().set_output().set_loss().unwrap();
    let mut graph = Graph::with_grads(&ctx, 64).unwrap();
    graph.build_forward_expand(loss).unwrap();
    graph.build_backward_expand(&ctx, &[(p, p_grad), (loss, loss_grad)]).unwrap();
    let mut alloc = Allocator::new(backend).unwrap();
    let allocated = alloc.alloc_graph(&graph).unwrap();
    backend.compute(&allocated).unwrap();
    let loss_value = allocated.get_f32(loss).unwrap();
    let grad = ParamBuffer::read_f32(p_grad).unwrap();

    let opt_ctx = Context::new(rt, 8, 8).unwrap();
    let mut opt_graph = Graph::new(&opt_ctx, 8).unwrap();
    let step = opt_ctx.opt_step_adamw(p, p_grad, p_m, p_v, adamw).unwrap();
    opt_graph.build_forward_expand(step).unwrap();
    for node in [h, loss, step] {
        assert!(device.supports(node), "{} does not support a node of the step", device.name());
    }
    let mut opt_alloc = Allocator::new(backend).unwrap();
    backend.compute(&opt_alloc.alloc_graph(&opt_graph).unwrap()).unwrap();
    Step { initial: p0, loss: loss_value, grad, updated: ParamBuffer::read_f32(p).unwrap() }
}

#[test]
fn a_training_step_on_an_rpc_device_equals_the_local_cpu_s_bit_for_bit() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let (server, before) = Server::start(Ipv4Addr::LOCALHOST);
    assert_eq!(before.len(), 1, "no warning on 127.0.0.1: {before:?}");
    assert!(before[0].contains("serving CPU") && before[0].contains(&server.endpoint.to_string()), "{before:?}");
    let rt = Runtime::get();
    let devices = add_rpc_server(rt, &server.endpoint).unwrap();
    assert_eq!(devices.len(), 1, "the server serves its CPU alone");
    let remote = devices[0];
    assert!(remote.name().starts_with("RPC"), "{}", remote.name());
    assert_eq!(remote.description(), server.endpoint.to_string());
    // ggml reports every RPC device as a GPU, whatever the server's device is.
    assert_eq!(remote.kind(), DeviceType::Gpu);
    let memory = remote.memory();
    assert!(memory.total > 0 && memory.free <= memory.total, "{memory:?}");
    // Kept out of ggml's global registry, which llama.cpp queries on every model load (and
    // other tests of this binary load models after this server is gone).
    assert!(!Device::all(rt).contains(&remote), "the RPC device stays out of ggml's registry");
    // Added again: the same device, not a second one.
    assert_eq!(add_rpc_server(rt, &server.endpoint).unwrap(), devices);

    // The server runs the same ggml (this binary), the same CPU kernels on the same bytes with
    // the same thread count (so the same split of rows between threads), and RPC moves bytes
    // unchanged: any difference is a bug in the transport, not rounding.
    let on_remote = {
        let backend = Backend::from_device(rt, &remote, THREADS).unwrap();
        assert_eq!(backend.device(), Some(remote));
        training_step(rt, &backend)
    };
    let cpu = Device::all(rt).into_iter().find(|d| d.kind() == DeviceType::Cpu).expect("a CPU device");
    let on_cpu = training_step(rt, &Backend::from_device(rt, &cpu, THREADS).unwrap());
    assert!(on_cpu.loss[0].is_finite() && on_cpu.loss[0] > 0.0, "{:?}", on_cpu.loss);
    assert!(on_cpu.grad.iter().any(|&g| g != 0.0), "the gradient is not all zero");
    assert_ne!(on_cpu.updated, on_cpu.initial, "AdamW changed the tensor");
    assert_eq!(on_remote, on_cpu);
    // All ggml objects using the server are gone before it is killed (the guard drops last):
    // ggml aborts when a buffer it frees cannot reach its server.
    drop(server);
}

/// A model of the device tests: its type, the model, an adapter's config and its tensors' values.
type TestModel = (FileType, Model, LoraConfig, Vec<Vec<f32>>);

/// A tiny Llama converted to f32 and to q8_0 in `root`, each with a rank-4 adapter on every
/// projection whose `A` and `B` are random (seed 5), and the tokens the device tests run.
fn tiny_llama_models(root: &std::path::Path) -> (Vec<TestModel>, Vec<i32>) {
    let dir = root.join("llama");
    std::fs::create_dir(&dir).unwrap();
    tiny_llama(&dir, &TinyLlamaSpec::default(), Dtype::F32, Shards::One, 3).unwrap();
    let models = [FileType::F32, FileType::Q8_0]
        .into_iter()
        .map(|ft| {
            let path = root.join(format!("llama-{}.gguf", ft.name()));
            convert_to(&dir, ft, &path).unwrap();
            let model = Model::open(&path).unwrap();
            let cfg =
                LoraConfig { rank: 4, alpha: 8.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
            let values = random_lora_pairs(&model, &cfg, 5, 0.2).into_iter().flat_map(|p| [p.a, p.b]).collect();
            (ft, model, cfg, values)
        })
        .collect();
    (models, (0..12).map(|i| (i * 37 + 11) % 512).collect())
}

#[test]
fn forward_logits_on_an_rpc_device_equal_the_cpu_s_bit_for_bit() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    let (models, tokens) = tiny_llama_models(root.path());
    let (server, _) = Server::start(Ipv4Addr::LOCALHOST);
    let rt = Runtime::get();
    let remote = add_rpc_server(rt, &server.endpoint).unwrap()[0];
    let cpu = Device::all(rt).into_iter().find(|d| d.kind() == DeviceType::Cpu).expect("a CPU device");
    for (ft, model, cfg, values) in &models {
        for lora in [None, Some((cfg, values.as_slice()))] {
            let what = format!("{} {}", ft.name(), if lora.is_some() { "with an adapter" } else { "without" });
            let on_cpu = model.logits_with_lora(&tokens, lora, THREADS).unwrap();
            assert!(on_cpu.iter().flatten().all(|v| v.is_finite()), "{what}: finite logits");
            // The same kernels on the same bytes with the same thread count, as in the training
            // step above: equality, not closeness.
            let remote_run = model.logits_on(&Devices::one(remote), &tokens, lora, THREADS).unwrap();
            assert_eq!(remote_run.logits, on_cpu, "{what}: logits on {}", remote.name());
            let placement = &remote_run.placement;
            eprintln!("{what}: {placement}");
            // Every node ran on the RPC backend (the forward graph has no custom op); only the
            // inputs (token ids, positions, mask) start on the CPU and are copied over.
            assert_eq!(placement.backends.len(), 2, "{placement}");
            assert!(placement.backends[0].backend.starts_with("RPC"), "{placement}");
            assert!(placement.backends[0].nodes > 0, "{placement}");
            assert_eq!(placement.backends[1].nodes, 0, "{what}: nothing on the CPU: {placement}");
            assert_eq!(placement.splits, 1, "{placement}");
            // The scheduler over the CPU alone and the mapped file: the same logits again.
            let local = model.logits_on(&Devices::one(cpu), &tokens, lora, THREADS).unwrap();
            assert_eq!(local.logits, on_cpu, "{what}: logits on the CPU through the scheduler");
            assert_eq!(local.placement.backends.len(), 1);
            assert_eq!(local.placement.total_nodes(), placement.total_nodes(), "the same graph");
        }
    }
    // ggml asserts that a scheduler has backends and that its last one is a CPU's: errors here.
    let remote_backend = Backend::from_device(rt, &remote, THREADS).unwrap();
    let cpu_backend = Backend::cpu(rt, THREADS).unwrap();
    for backends in [vec![], vec![&remote_backend], vec![&cpu_backend, &remote_backend]] {
        let err = Scheduler::new(&backends, 64).unwrap_err();
        assert!(matches!(err, gguftune::ggml::Error::BadScheduler { .. }), "{err}");
    }
    assert!(Scheduler::new(&[&remote_backend, &cpu_backend], 64).is_ok());
    drop(remote_backend);
    // Every buffer on the server is freed before it is killed (the guard drops last).
    drop(server);
}

/// Asserts that `placement` ran everything that computes on its first backend, an RPC device:
/// on the CPU only views of the loss's inputs (target_index, loss_weights), which live there and
/// whose readers on the device get copies.
fn assert_all_on_device(what: &str, placement: &Placement) {
    eprintln!("{what}: forward and backward: {placement}");
    assert!(placement.backends[0].backend.starts_with("RPC"), "{placement}");
    let cpu = placement.backends.last().unwrap();
    assert_eq!(cpu.nodes, cpu.views, "{what}: nothing computed on the CPU: {placement}");
    assert!(cpu.nodes <= 2, "{what}: {placement}");
}

#[test]
fn loss_and_lora_gradients_on_an_rpc_device_equal_the_cpu_s() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    let (models, tokens) = tiny_llama_models(root.path());
    // Loss on the last eight positions: the prompt's positions add neither loss nor gradient.
    let targets: Vec<Option<i32>> =
        (0..tokens.len()).map(|i| (i >= 3 && i + 1 < tokens.len()).then(|| tokens[i + 1])).collect();
    let (server, _) = Server::start(Ipv4Addr::LOCALHOST);
    let rt = Runtime::get();
    let remote = Devices::one(add_rpc_server(rt, &server.endpoint).unwrap()[0]);
    // B nonzero (random), so that every A has a gradient too.
    for (ft, model, cfg, values) in &models {
        let what = ft.name();
        let on_remote =
            loss_and_grads_on(&remote, model, cfg, values, &tokens, &targets, Activations::Keep, THREADS).unwrap();
        assert!(on_remote.loss.is_finite() && on_remote.loss > 0.0, "{what}: loss {}", on_remote.loss);
        assert_eq!(on_remote.grads.len(), values.len());
        for (g, v) in on_remote.grads.iter().zip(values) {
            assert_eq!(g.len(), v.len());
            assert!(g.iter().all(|x| x.is_finite()) && g.iter().any(|&x| x != 0.0), "{what}: a gradient");
        }
        let placement = on_remote.placement.as_ref().expect("placed by the scheduler");
        assert_all_on_device(what, placement);
        assert_eq!(placement.splits, 1, "{placement}");
        // The CPU's training path, whose rewrites (the outer products as blocked matrix products)
        // sum in another order: the same numbers to within f32 rounding over sums of at most a
        // few hundred terms.
        let (loss, grads) = loss_and_grads(model, cfg, values, &tokens, &targets, Activations::Keep, THREADS).unwrap();
        assert!((loss - on_remote.loss).abs() <= 1e-5 * loss.abs(), "{what}: loss {loss} vs {}", on_remote.loss);
        for (i, (fast, plain)) in grads.iter().zip(&on_remote.grads).enumerate() {
            let scale = plain.iter().fold(0f32, |m, x| m.max(x.abs()));
            let worst = fast.iter().zip(plain).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= 1e-4 * scale, "{what}: gradient {i} differs by {worst} (largest {scale})");
        }
        // Recomputing activations on the device: the same forward values computed again, so
        // the same loss and gradients, bit for bit.
        let recomputed =
            loss_and_grads_on(&remote, model, cfg, values, &tokens, &targets, Activations::Recompute, THREADS).unwrap();
        assert_eq!(recomputed.loss.to_bits(), on_remote.loss.to_bits(), "{what}: loss with recomputation");
        assert_eq!(recomputed.grads, on_remote.grads, "{what}: gradients with recomputation");
    }
    // Every buffer on the server is freed before it is killed (the guard drops last).
    drop(server);
}

/// On an RPC device, an f32 model's LoRA gradients equal central finite differences of the loss
/// computed there, by `lora_grad`'s check (its step and tolerance: 1e-2, 2% of the tensor's
/// largest gradient plus 1e-4) on layer 0's first four tensors and the last two. Not on a
/// quantized model: ggml's CPU kernels (the server's) round the activations to the weight's block
/// type for the dot products, so its loss is a staircase no difference quotient follows; the q8_0
/// gradients are checked against the CPU path's above.
#[test]
fn lora_gradients_on_an_rpc_device_equal_finite_differences() {
    let _serial = serial();
    let root = temp_dir();
    let (models, _) = tiny_llama_models(root.path());
    let (ft, model, _, _) = &models[0];
    assert_eq!(*ft, FileType::F32);
    let (server, _) = Server::start(Ipv4Addr::LOCALHOST);
    let remote = Devices::one(add_rpc_server(Runtime::get(), &server.endpoint).unwrap()[0]);
    check_model_gradients_by_finite_differences(model, &remote, 12, 4, STEP, RELATIVE_TOLERANCE);
    drop(server);
}

/// A three-way split (this machine's CPU and two RPC servers, a third of the layers each, the
/// output layer on the last) computes what one RPC device computes, bit for bit: the same
/// kernels on the same bytes, only the activations and their gradients crossing devices.
#[test]
fn a_three_way_split_gives_the_single_device_loss_and_gradients() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    let dir = root.path().join("llama");
    std::fs::create_dir(&dir).unwrap();
    let spec = TinyLlamaSpec { layers: 3, ..TinyLlamaSpec::default() };
    tiny_llama(&dir, &spec, Dtype::F32, Shards::One, 3).unwrap();
    let path = root.path().join("llama-q8_0.gguf");
    convert_to(&dir, FileType::Q8_0, &path).unwrap();
    let model = Model::open(&path).unwrap();
    let cfg = LoraConfig { rank: 4, alpha: 8.0, targets: Arch::from_name("llama").unwrap().projections().to_vec() };
    let values: Vec<Vec<f32>> = random_lora_pairs(&model, &cfg, 5, 0.2).into_iter().flat_map(|p| [p.a, p.b]).collect();
    let tokens: Vec<i32> = (0..12).map(|i| (i * 37 + 11) % 512).collect();
    let targets: Vec<Option<i32>> = (0..tokens.len()).map(|i| (i + 1 < tokens.len()).then(|| tokens[i + 1])).collect();
    let (first, _) = Server::start(Ipv4Addr::LOCALHOST);
    let (second, _) = Server::start(Ipv4Addr::LOCALHOST);
    let rt = Runtime::get();
    let cpu = Device::all(rt).into_iter().find(|d| d.kind() == DeviceType::Cpu).expect("a CPU device");
    let one = add_rpc_server(rt, &first.endpoint).unwrap()[0];
    let two = add_rpc_server(rt, &second.endpoint).unwrap()[0];
    let single =
        loss_and_grads_on(&Devices::one(one), &model, &cfg, &values, &tokens, &targets, Activations::Keep, THREADS)
            .unwrap();
    let devices = Devices { list: vec![cpu, one, two], split: Some(vec![1.0, 1.0, 1.0]) };
    assert_eq!(devices.layer_devices(3).unwrap(), vec![0, 1, 2]);
    let split =
        loss_and_grads_on(&devices, &model, &cfg, &values, &tokens, &targets, Activations::Keep, THREADS).unwrap();
    assert_eq!(split.loss.to_bits(), single.loss.to_bits(), "loss {} vs {}", split.loss, single.loss);
    assert_eq!(split.grads, single.grads, "gradients of the split run");
    let placement = split.placement.expect("placed by the scheduler");
    eprintln!("three-way split: {placement}");
    // Scheduler order: the two RPC devices, then the CPU; each computed its share.
    assert_eq!(placement.backends.len(), 3, "{placement}");
    for b in &placement.backends {
        assert!(b.nodes > b.views, "{} computed nothing: {placement}", b.backend);
    }
    assert!(placement.splits >= 3, "{placement}");
    drop((first, second));
}

/// GELU's backward pass is a CPU custom op (ggml has none): off the CPU, Falcon's and GPT-NeoX's
/// training graphs compose GELU of ops every backend differentiates (`model::ops::gelu_tanh`).
/// Their loss and gradients on an RPC device equal the CPU's up to the rounding of ggml's GELU,
/// which the CPU reads from a table of f16 values (2⁻¹¹ relative), and everything runs there.
#[test]
fn gelu_models_train_on_an_rpc_device_with_a_composed_gelu() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let root = temp_dir();
    let (server, _) = Server::start(Ipv4Addr::LOCALHOST);
    let rt = Runtime::get();
    let remote = Devices::one(add_rpc_server(rt, &server.endpoint).unwrap()[0]);
    for family in [("falcon", "mqa"), ("gptneox", "parallel")] {
        let (path, _) = converted(root.path(), family, FileType::F32);
        let model = Model::open(&path).unwrap();
        let cfg = LoraConfig { rank: 2, alpha: 4.0, targets: model.hparams().arch.projections().to_vec() };
        let values: Vec<Vec<f32>> =
            random_lora_pairs(&model, &cfg, 5, 0.2).into_iter().flat_map(|p| [p.a, p.b]).collect();
        let tokens: Vec<i32> = (0..6).collect();
        let targets: Vec<Option<i32>> = (0..6).map(|i| (i < 5).then_some(i + 1)).collect();
        let what = family.0;
        let on_remote =
            loss_and_grads_on(&remote, &model, &cfg, &values, &tokens, &targets, Activations::Keep, THREADS).unwrap();
        assert_all_on_device(what, on_remote.placement.as_ref().expect("placed"));
        let (loss, grads) =
            loss_and_grads(&model, &cfg, &values, &tokens, &targets, Activations::Keep, THREADS).unwrap();
        assert!((loss - on_remote.loss).abs() <= 1e-4 * loss.abs(), "{what}: loss {loss} vs {}", on_remote.loss);
        for (i, (cpu, dev)) in grads.iter().zip(&on_remote.grads).enumerate() {
            let scale = cpu.iter().fold(0f32, |m, x| m.max(x.abs()));
            let worst = cpu.iter().zip(dev).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            eprintln!("{what}: gradient {i}: worst {worst:e} of {scale:e}");
            assert!(worst <= 2e-3 * scale, "{what}: gradient {i} differs by {worst} (largest {scale})");
        }
    }
    drop(server);
}

#[test]
fn a_server_that_is_not_listening_is_an_error_naming_it() {
    let port = free_port(Ipv4Addr::LOCALHOST);
    let dir = temp_dir();
    let out = gguftune(dir.path(), &["devices", "--rpc", &format!("127.0.0.1:{port}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&format!("rpc:127.0.0.1:{port}: cannot connect")), "{stderr}");
    assert!(!stderr.contains("GGML_ABORT") && !stderr.contains("Failed to connect"), "ggml never tried: {stderr}");
}

#[test]
fn rpc_server_warns_when_listening_beyond_loopback() {
    // One RPC test at a time: see rpc_server::serial.
    let _serial = serial();
    let (server, before) = Server::start(Ipv4Addr::UNSPECIFIED);
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before[0].starts_with(&format!("warning: listening on {}, not a loopback address", server.endpoint)),
        "{before:?}"
    );
    assert!(before[0].contains("no authentication"), "{before:?}");
}

#[test]
fn device_specs_are_checked() {
    let dir = temp_dir();
    let out = gguftune(dir.path(), &["devices", "--device", "cpu,gpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("device 'gpu': unknown device kind 'gpu' (expected cpu, cuda[:N], metal"), "{stderr}");

    let out = gguftune(dir.path(), &["devices", "--device", "cpu", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["type"], "cpu");
    assert!(listed[0]["memory"]["total"].as_u64().unwrap() > 0, "{listed}");

    if cfg!(not(target_os = "macos")) {
        let out = gguftune(dir.path(), &["devices", "--device", "metal"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("device 'metal': this build has no MTL backend (rebuild with --features metal)"),
            "{stderr}"
        );
        assert!(stderr.contains("devices of this build: CPU"), "{stderr}");
    }
}

/// A peer that answers ggml's HELLO with `answer` (after its size) and closes.
fn fake_server(answer: Vec<u8>) -> RpcEndpoint {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut hello = [0u8; 1 + 8];
        stream.read_exact(&mut hello).unwrap();
        assert_eq!(hello[0], 14, "RPC_CMD_HELLO");
        let mut caps = vec![0u8; u64::from_le_bytes(hello[1..].try_into().unwrap()) as usize];
        stream.read_exact(&mut caps).unwrap();
        stream.write_all(&(answer.len() as u64).to_le_bytes()).unwrap();
        stream.write_all(&answer).unwrap();
    });
    RpcEndpoint::new("127.0.0.1", &port.to_string()).unwrap()
}

#[test]
fn a_server_of_another_protocol_version_is_a_clean_error() {
    let v = RPC_PROTOCOL_VERSION;
    let mut answer = vec![v.major + 1, 0, 0, 0];
    answer.extend([0u8; 24]);
    let endpoint = fake_server(answer);
    match add_rpc_server(Runtime::get(), &endpoint) {
        Err(RpcError::VersionMismatch { server, client, .. }) => {
            assert_eq!((server.major, client), (v.major + 1, v));
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    // An answer of another size: not a ggml RPC server.
    let endpoint = fake_server(b"HTTP/1.1 400".to_vec());
    assert!(matches!(greet_rpc_server(&endpoint), Err(RpcError::NotAServer { found: 12, .. })));
}
