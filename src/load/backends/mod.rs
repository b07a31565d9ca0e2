//! Device backends: how a host model becomes an execution-device model.
//!
//! [`HostBackend`] (always available) executes on the CPU from the host copy itself. With the
//! `torch` cargo feature, [`tch::TchBackend`] copies tensors into libtorch on the CPU or a CUDA
//! device, converting precision. [`sim::SimBackend`] stands in for a CUDA device of a chosen
//! capacity and records every move, so the cache's VRAM half is tested on machines without one.
//!
//! The cache accounts, evicts and offloads only through [`DeviceBackend`]: how big a device copy
//! will be, making it, moving an unlocked one to RAM (offload) and back (reload).

use std::any::Any;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{AnyModel, LoadError, LoadSettings};

pub mod gguf;
pub mod mmap;
pub mod sim;
#[cfg(feature = "torch")]
pub mod tch;

/// The configured execution device (`settings.cache.device`, `--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first CUDA device when one is usable, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = LoadError;
    fn from_str(s: &str) -> Result<Self, LoadError> {
        let bad = || LoadError::InvalidDevice {
            value: s.to_owned(),
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A resolved execution device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecDevice {
    /// The CPU (copies count against the RAM budget).
    Cpu,
    /// CUDA device N (copies count against the VRAM budget).
    Cuda(usize),
}

impl fmt::Display for ExecDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl serde::Serialize for ExecDevice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

crate::string_enum! {
    /// Floating-point precision of device copies. `auto` keeps each tensor's file dtype.
    #[derive(Default)]
    Precision, "precision" {
        #[default]
        Auto = "auto",
        Fp16 = "fp16",
        Bf16 = "bf16",
        Fp32 = "fp32",
    }
}

/// Which device backend a service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// [`HostBackend`]: the memory-mapped host copy is the model (CPU only).
    Host,
    /// libtorch tensors (`torch` feature).
    Torch,
}

impl Default for BackendKind {
    /// `Torch` in builds with the `torch` feature, else `Host`.
    fn default() -> Self {
        if cfg!(feature = "torch") {
            Self::Torch
        } else {
            Self::Host
        }
    }
}

/// A model on the execution device.
#[derive(Clone)]
pub enum DeviceModel {
    /// The host model itself (host backend, and weightless models on any backend).
    Host(Arc<AnyModel>),
    /// libtorch tensors.
    #[cfg(feature = "torch")]
    Torch(Arc<tch::TchModel>),
    /// Another backend's copy (the simulated device's), with the bytes it takes and where.
    Other {
        /// Bytes the copy takes.
        bytes: u64,
        /// Where the copy lives.
        device: ExecDevice,
        /// The copy.
        value: Arc<dyn Any + Send + Sync>,
    },
}

impl fmt::Debug for DeviceModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(m) => f.debug_tuple("Host").field(m).finish(),
            #[cfg(feature = "torch")]
            Self::Torch(m) => f.debug_tuple("Torch").field(m).finish(),
            Self::Other { bytes, device, .. } => f
                .debug_struct("Other")
                .field("bytes", bytes)
                .field("device", device)
                .finish_non_exhaustive(),
        }
    }
}

impl DeviceModel {
    /// Bytes this copy occupies beyond the host copy (0 when it is the host copy).
    pub fn device_bytes(&self) -> u64 {
        match self {
            Self::Host(_) => 0,
            #[cfg(feature = "torch")]
            Self::Torch(m) => m.bytes(),
            Self::Other { bytes, .. } => *bytes,
        }
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        match self {
            Self::Host(m) => m.tensor_count(),
            #[cfg(feature = "torch")]
            Self::Torch(m) => m.len(),
            Self::Other { .. } => 0,
        }
    }

    /// The host model, for the host backend.
    pub fn as_host(&self) -> Option<&Arc<AnyModel>> {
        match self {
            Self::Host(m) => Some(m),
            #[cfg(feature = "torch")]
            Self::Torch(_) => None,
            Self::Other { .. } => None,
        }
    }

    /// The libtorch model, for the torch backend.
    #[cfg(feature = "torch")]
    pub fn as_torch(&self) -> Option<&Arc<tch::TchModel>> {
        match self {
            Self::Torch(m) => Some(m),
            _ => None,
        }
    }
}

/// Moves host models to the execution device and back: the seam through which the cache
/// accounts, evicts and offloads. `key` is the cache key, for backends that log moves.
pub trait DeviceBackend: Send + Sync {
    /// `host`, `torch` or `sim`.
    fn name(&self) -> &'static str;
    /// Where models execute.
    fn device(&self) -> ExecDevice;
    /// Total memory of the execution device in bytes, when the backend can tell (a CUDA
    /// device). The cache then keeps its working-memory reserve of it free.
    fn capacity(&self) -> Option<u64> {
        None
    }
    /// Bytes the device copy of `model` will take beyond the host copy, without making it.
    fn device_bytes(&self, model: &AnyModel, precision: Precision) -> Result<u64, LoadError>;
    /// Makes the device copy.
    fn to_device(
        &self,
        key: &str,
        model: &Arc<AnyModel>,
        precision: Precision,
    ) -> Result<DeviceModel, LoadError>;
    /// Moves an unlocked device copy into host RAM (an offload) and returns the RAM copy;
    /// `Ok(None)` when this backend keeps no RAM copies, and the cache drops the copy instead.
    fn offload(&self, key: &str, copy: &DeviceModel) -> Result<Option<DeviceModel>, LoadError> {
        let _ = (key, copy);
        Ok(None)
    }
    /// Moves a copy [`offload`](Self::offload) made back onto the device.
    fn reload(&self, key: &str, copy: &DeviceModel) -> Result<DeviceModel, LoadError> {
        let _ = copy;
        Err(LoadError::Backend {
            backend: self.name(),
            what: format!("model {key}"),
            reason: "this backend cannot move an offloaded copy back".into(),
        })
    }
}

/// Executes on the CPU from the host copy: no extra memory, no conversion.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostBackend;

impl DeviceBackend for HostBackend {
    fn name(&self) -> &'static str {
        "host"
    }
    fn device(&self) -> ExecDevice {
        ExecDevice::Cpu
    }
    fn device_bytes(&self, _: &AnyModel, _: Precision) -> Result<u64, LoadError> {
        Ok(0)
    }
    fn to_device(
        &self,
        _: &str,
        model: &Arc<AnyModel>,
        _: Precision,
    ) -> Result<DeviceModel, LoadError> {
        Ok(DeviceModel::Host(model.clone()))
    }
}

/// The backend `settings` ask for.
pub fn make_backend(settings: &LoadSettings) -> Result<Arc<dyn DeviceBackend>, LoadError> {
    match settings.backend {
        BackendKind::Host => match settings.device {
            DeviceSpec::Auto | DeviceSpec::Cpu => Ok(Arc::new(HostBackend)),
            DeviceSpec::Cuda(_) => Err(LoadError::DeviceUnavailable {
                device: settings.device.to_string(),
                reason:
                    "the host backend runs on the CPU only; build with `--features torch` for CUDA"
                        .into(),
            }),
        },
        #[cfg(feature = "torch")]
        BackendKind::Torch => Ok(Arc::new(tch::TchBackend::new(settings.device)?)),
        #[cfg(not(feature = "torch"))]
        BackendKind::Torch => Err(LoadError::DeviceUnavailable {
            device: settings.device.to_string(),
            reason: "this build has no torch backend; rebuild with `--features torch`".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
        }
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn host_backend_refuses_cuda() {
        let s = LoadSettings {
            backend: BackendKind::Host,
            device: DeviceSpec::Cuda(0),
            ..LoadSettings::default()
        };
        let e = make_backend(&s).err().unwrap().to_string();
        assert!(
            e.contains("cuda:0") && e.contains("--features torch"),
            "{e}"
        );
    }
}
