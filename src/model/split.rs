//! Where a model runs: the devices a user chose, and which of them holds each layer. A list of
//! devices shares the layers out in contiguous runs, by free memory or by given proportions as
//! llama.cpp's `--tensor-split` does; the output layer (output norm and projection, and the
//! token embeddings) goes with the last device. Only activations and their gradients cross from
//! one device to the next.

use crate::ggml::{Backend, Device, DeviceType, ParamBuffer, Runtime, Tensor};
use crate::gguf::Gguf;
use crate::names::TensorName;

use super::ModelError;

/// The devices a model runs on, in the order the layers go to them, and how the layers are
/// shared among them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Devices {
    /// The devices; empty means this machine's CPU.
    pub list: Vec<Device>,
    /// Each device's share of the layers (any positive numbers; `3,1` gives the first device
    /// three quarters); `None`: in proportion to each device's free memory.
    pub split: Option<Vec<f32>>,
}

impl Devices {
    /// This machine's CPU alone.
    pub fn cpu() -> Devices {
        Devices::default()
    }

    /// `device` alone.
    pub fn one(device: Device) -> Devices {
        Devices { list: vec![device], split: None }
    }

    /// Whether the model runs on this machine's CPU alone (the CPU's own fast path applies).
    pub fn is_cpu_only(&self) -> bool {
        self.list.iter().all(|d| d.kind() == DeviceType::Cpu)
    }

    /// Each device's share of the layers, normalised to sum to 1: the given proportions, else
    /// the devices' free memory (equal shares where none reports any).
    pub fn shares(&self) -> Result<Vec<f64>, ModelError> {
        let n = self.list.len().max(1);
        let weights: Vec<f64> = match &self.split {
            Some(split) => {
                if split.len() != n
                    || split.iter().any(|s| !s.is_finite() || *s < 0.0)
                    || split.iter().all(|s| *s == 0.0)
                {
                    return Err(ModelError::Inconsistent {
                        what: format!(
                            "--split {} for {n} device(s): one non-negative share per device, not all zero",
                            split.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
                        ),
                    });
                }
                split.iter().map(|&s| f64::from(s)).collect()
            }
            None => {
                let free: Vec<f64> = self.list.iter().map(|d| d.memory().free as f64).collect();
                if free.is_empty() || free.iter().all(|&f| f == 0.0) {
                    vec![1.0; n]
                } else {
                    free
                }
            }
        };
        let total: f64 = weights.iter().sum();
        Ok(weights.iter().map(|w| w / total).collect())
    }

    /// The device of each of `n_layer` layers, as indices into [`Devices::list`]: contiguous
    /// runs in the list's order, device `i` taking the layers whose position `il / n_layer` falls
    /// in its share (llama.cpp's rule for `--tensor-split`).
    pub fn layer_devices(&self, n_layer: usize) -> Result<Vec<usize>, ModelError> {
        let shares = self.shares()?;
        let mut ends = Vec::with_capacity(shares.len());
        let mut sum = 0.0;
        for s in &shares {
            sum += s;
            ends.push(sum);
        }
        let last = shares.len().saturating_sub(1);
        Ok((0..n_layer)
            .map(|il| {
                let at = il as f64 / n_layer as f64;
                ends.iter().position(|&end| at < end).unwrap_or(last)
            })
            .collect())
    }

    /// The bytes of the stored weights each device of the list holds (one entry per device; one,
    /// the CPU's, for an empty list) for the model indexed by `g` with `n_layer` layers: each
    /// tensor of the file goes where [`holder`] says, by the layer of its name, as
    /// [`super::Weights::place`] puts it.
    pub fn weight_bytes(&self, g: &Gguf<'_>, n_layer: usize) -> Result<Vec<u64>, ModelError> {
        let layer_devices = self.layer_devices(n_layer)?;
        let n = self.list.len().max(1);
        let mut bytes = vec![0u64; n];
        for t in &g.tensors {
            let layer = TensorName::from_gguf(t.name).and_then(|name| name.layer);
            bytes[holder(&layer_devices, n, layer)] += t.n_bytes;
        }
        Ok(bytes)
    }
}

/// Which of `n_devices` devices holds a tensor of layer `layer`, given each layer's device
/// (`layer_devices`, as [`Devices::layer_devices`] says): its layer's, and the last device for
/// the tensors outside the layers (`None`: token embeddings, output norm and projection, rope
/// factors). The one rule that both [`LayerSplit`] (where the weights and LoRA tensors go) and
/// [`Devices::weight_bytes`] (what `plan` says each device holds) follow.
pub fn holder(layer_devices: &[usize], n_devices: usize, layer: Option<u32>) -> usize {
    let last = n_devices.saturating_sub(1);
    layer.and_then(|il| layer_devices.get(il as usize).copied()).unwrap_or(last)
}

/// The backends of a [`Devices`] list: this machine's CPU backend (ggml's scheduler always ends
/// with one) and one of each other device.
#[derive(Debug)]
pub struct DeviceBackends {
    cpu: Backend,
    /// One per device of the list: `None` for a CPU device (the CPU backend serves it).
    devices: Vec<Option<Backend>>,
}

impl DeviceBackends {
    /// Starts a backend for each device of `devices` (the CPU's with `threads` threads).
    pub fn start(devices: &Devices, threads: usize) -> Result<DeviceBackends, ModelError> {
        let rt = Runtime::get();
        let cpu = Backend::cpu(rt, threads)?;
        let mut started = Vec::new();
        for d in &devices.list {
            started.push(match d.kind() {
                DeviceType::Cpu => None,
                _ => Some(Backend::from_device(rt, d, threads)?),
            });
        }
        Ok(DeviceBackends { cpu, devices: started })
    }

    /// This machine's CPU backend.
    pub fn cpu(&self) -> &Backend {
        &self.cpu
    }

    /// One backend per device, in the list's order (the CPU's for the CPU, and for an empty
    /// list): what a [`LayerSplit`] shares the layers among.
    pub fn per_device(&self) -> Vec<&Backend> {
        if self.devices.is_empty() {
            return vec![&self.cpu];
        }
        self.devices.iter().map(|b| b.as_ref().unwrap_or(&self.cpu)).collect()
    }

    /// The backends in the order ggml's scheduler takes them: each device's other than the CPU,
    /// then the CPU's.
    pub fn for_scheduler(&self) -> Vec<&Backend> {
        self.devices.iter().flatten().chain([&self.cpu]).collect()
    }
}

/// [`Devices`] resolved for one model: a backend per device and the one holding each layer.
#[derive(Clone, Debug)]
pub struct LayerSplit<'b> {
    /// One backend per device of [`Devices::list`] (the CPU's is this machine's CPU backend).
    pub backends: Vec<&'b Backend>,
    /// For each layer, its index in `backends`.
    pub layer_backend: Vec<usize>,
}

impl<'b> LayerSplit<'b> {
    /// The split of `n_layer` layers over `backends` (one per device of `devices`).
    pub fn new(devices: &Devices, backends: Vec<&'b Backend>, n_layer: usize) -> Result<LayerSplit<'b>, ModelError> {
        if backends.is_empty() || backends.len() != devices.list.len().max(1) {
            return Err(ModelError::Inconsistent {
                what: format!("{} backend(s) for {} device(s)", backends.len(), devices.list.len()),
            });
        }
        Ok(LayerSplit { layer_backend: devices.layer_devices(n_layer)?, backends })
    }

    /// The backend holding layer `il`'s weights and LoRA tensors.
    pub fn layer(&self, il: u32) -> &'b Backend {
        let i = self.layer_backend.get(il as usize).copied().unwrap_or(self.backends.len() - 1);
        self.backends[i]
    }

    /// The backend holding the tensors outside the layers (the last device's).
    pub fn output(&self) -> &'b Backend {
        self.backends[self.backends.len() - 1]
    }

    /// Index in `backends` of the backend of the tensor of layer `layer` (`None`: outside the
    /// layers).
    pub fn backend_index(&self, layer: Option<u32>) -> usize {
        holder(&self.layer_backend, self.backends.len(), layer)
    }

    /// Whether backend `i` is a CPU backend (its share of the weights is the mapped file).
    pub fn is_cpu(&self, i: usize) -> bool {
        self.backends[i].device().is_some_and(|d| d.kind() == DeviceType::Cpu)
    }

    /// Gives `tensors` (each with the layer it belongs to; `None`: outside the layers) memory on
    /// their backends: one [`ParamBuffer`] per backend holding any, with that backend's index in
    /// `backends`. The LoRA tensors, their gradients and AdamW's moments live with their layer.
    pub fn place_params<'c>(
        &self,
        tensors: &[(Option<u32>, Tensor<'c>)],
    ) -> Result<Vec<(usize, ParamBuffer<'c>)>, ModelError> {
        let mut buffers = Vec::new();
        for (i, backend) in self.backends.iter().enumerate() {
            let share: Vec<Tensor<'c>> =
                tensors.iter().filter(|(layer, _)| self.backend_index(*layer) == i).map(|&(_, t)| t).collect();
            if !share.is_empty() {
                buffers.push((i, ParamBuffer::alloc_tensors(backend, &share)?));
            }
        }
        Ok(buffers)
    }

    /// How many layers each backend holds.
    pub fn layer_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.backends.len()];
        for &i in &self.layer_backend {
            counts[i] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_split(n: usize, split: Option<Vec<f32>>) -> Devices {
        let cpu = crate::ggml::Device::all(crate::ggml::Runtime::get())
            .into_iter()
            .find(|d| d.kind() == DeviceType::Cpu)
            .expect("a CPU device");
        Devices { list: vec![cpu; n], split }
    }

    #[test]
    fn layers_go_in_contiguous_runs_by_share() {
        let d = with_split(3, Some(vec![1.0, 1.0, 2.0]));
        assert_eq!(d.layer_devices(8).unwrap(), vec![0, 0, 1, 1, 2, 2, 2, 2]);
        let d = with_split(2, Some(vec![3.0, 1.0]));
        assert_eq!(d.layer_devices(4).unwrap(), vec![0, 0, 0, 1]);
        // A zero share gets no layer.
        let d = with_split(3, Some(vec![1.0, 0.0, 1.0]));
        assert_eq!(d.layer_devices(4).unwrap(), vec![0, 0, 2, 2]);
    }

    #[test]
    fn bad_splits_are_refused() {
        for split in [vec![1.0], vec![1.0, -1.0], vec![0.0, 0.0], vec![f32::NAN, 1.0]] {
            let err = with_split(2, Some(split.clone())).layer_devices(4).unwrap_err();
            assert!(err.to_string().contains("--split"), "{split:?}: {err}");
        }
    }
}
