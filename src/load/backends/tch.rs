//! The libtorch backend (`torch` feature): host tensors become `tch::Tensor`s on the CPU or a
//! CUDA device, converted to the configured precision. Device memory is accounted by tensor
//! bytes (elements × element size), which is what libtorch allocates for dense tensors.

use std::fmt;
use std::sync::{Arc, Mutex, Once, PoisonError};

use safetensors::Dtype;
use tch::{Device, Kind, Tensor};

use super::{DeviceBackend, DeviceModel, DeviceSpec, ExecDevice, Precision};
use crate::load::{AnyModel, GgufModel, LoadError, StateDict};

static CUDA_INIT: Once = Once::new();

/// Loads `libtorch_cuda.so` into the process with global symbols, once. The linker drops the
/// library when nothing references it directly (`--as-needed`), and libtorch then reports no
/// CUDA even on a GPU machine; so this must run before the first CUDA query. On CPU-only
/// installs the library is missing or cannot resolve the CUDA runtime, which is fine.
pub fn init_cuda() {
    CUDA_INIT.call_once(|| {
        // SAFETY: dlopen with a NUL-terminated name has no preconditions; the handle is kept
        // for the life of the process on purpose.
        let handle = unsafe {
            libc::dlopen(
                c"libtorch_cuda.so".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_GLOBAL,
            )
        };
        if handle.is_null() {
            // SAFETY: dlerror returns a thread-local C string or null.
            let err = unsafe { libc::dlerror() };
            let msg = if err.is_null() {
                "unknown error".to_owned()
            } else {
                // SAFETY: non-null dlerror results are valid C strings.
                unsafe { std::ffi::CStr::from_ptr(err) }
                    .to_string_lossy()
                    .into_owned()
            };
            tracing::debug!("libtorch_cuda.so not loaded ({msg}); CUDA will be unavailable");
        }
    });
}

/// The libtorch element type of a safetensors dtype.
fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

/// The element type a tensor gets under `precision`: floating tensors convert, others keep.
fn target_kind(kind: Kind, precision: Precision) -> Kind {
    let floating = matches!(
        kind,
        Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double
    );
    match precision {
        _ if !floating => kind,
        Precision::Auto => kind,
        Precision::Fp16 => Kind::Half,
        Precision::Bf16 => Kind::BFloat16,
        Precision::Fp32 => Kind::Float,
    }
}

/// Tensors on a libtorch device. `tch::Tensor` is not `Sync`, so the tensors sit behind a mutex
/// and callers get shallow clones (sharing storage, no copy).
pub struct TchModel {
    tensors: Mutex<Vec<(String, Tensor)>>,
    names: Vec<String>,
    device: ExecDevice,
    bytes: u64,
}

impl fmt::Debug for TchModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TchModel")
            .field("device", &self.device)
            .field("tensors", &self.names.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl TchModel {
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Device bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Where the tensors live.
    pub fn device(&self) -> ExecDevice {
        self.device
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A tensor by name (a shallow clone sharing the device storage).
    pub fn tensor(&self, name: &str) -> Option<Tensor> {
        let i = self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()?;
        let g = self.tensors.lock().unwrap_or_else(PoisonError::into_inner);
        Some(g[i].1.shallow_clone())
    }
}

/// Total memory of CUDA device `index` in bytes, from the CUDA runtime libtorch loaded
/// (`cudaMemGetInfo`, looked up with `dlsym`: tch exposes no memory query). `None` when the
/// runtime or the device cannot tell.
fn cuda_total_memory(index: usize) -> Option<u64> {
    type GetDevice = unsafe extern "C" fn(*mut libc::c_int) -> libc::c_int;
    type SetDevice = unsafe extern "C" fn(libc::c_int) -> libc::c_int;
    type MemGetInfo = unsafe extern "C" fn(*mut libc::size_t, *mut libc::size_t) -> libc::c_int;
    fn sym(name: &std::ffi::CStr) -> Option<*mut libc::c_void> {
        // SAFETY: dlsym on the default namespace with a NUL-terminated name.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    }
    let (get, set, info) = (
        sym(c"cudaGetDevice")?,
        sym(c"cudaSetDevice")?,
        sym(c"cudaMemGetInfo")?,
    );
    let dev = libc::c_int::try_from(index).ok()?;
    // SAFETY: the symbols are the CUDA runtime's, with these C signatures.
    unsafe {
        let get: GetDevice = std::mem::transmute(get);
        let set: SetDevice = std::mem::transmute(set);
        let info: MemGetInfo = std::mem::transmute(info);
        let mut prev: libc::c_int = 0;
        if get(&raw mut prev) != 0 || set(dev) != 0 {
            return None;
        }
        let (mut free, mut total): (libc::size_t, libc::size_t) = (0, 0);
        let rc = info(&raw mut free, &raw mut total);
        set(prev);
        (rc == 0).then_some(total as u64)
    }
}

/// The libtorch backend.
#[derive(Debug, Clone, Copy)]
pub struct TchBackend {
    device: Device,
    exec: ExecDevice,
    capacity: Option<u64>,
}

impl TchBackend {
    /// Resolves `spec` (loading libtorch_cuda first): `auto` is `cuda_if_available()`;
    /// `cuda:N` must exist.
    pub fn new(spec: DeviceSpec) -> Result<Self, LoadError> {
        init_cuda();
        let (device, exec) = match spec {
            DeviceSpec::Auto => match Device::cuda_if_available() {
                Device::Cuda(n) => (Device::Cuda(n), ExecDevice::Cuda(n)),
                _ => (Device::Cpu, ExecDevice::Cpu),
            },
            DeviceSpec::Cpu => (Device::Cpu, ExecDevice::Cpu),
            DeviceSpec::Cuda(n) => {
                let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
                if n >= count {
                    return Err(LoadError::DeviceUnavailable {
                        device: spec.to_string(),
                        reason: format!("libtorch sees {count} CUDA device(s)"),
                    });
                }
                (Device::Cuda(n), ExecDevice::Cuda(n))
            }
        };
        let capacity = match exec {
            ExecDevice::Cuda(n) => cuda_total_memory(n),
            ExecDevice::Cpu => None,
        };
        Ok(Self {
            device,
            exec,
            capacity,
        })
    }

    /// Copies a GGUF file's raw blocks to the device as 1-D `uint8` tensors (no
    /// dequantization: precision does not apply).
    pub fn upload_raw(&self, g: &GgufModel) -> Result<TchModel, LoadError> {
        let mut tensors = Vec::with_capacity(g.len());
        for t in g.iter() {
            let fail = |e: tch::TchError| LoadError::Backend {
                backend: "torch",
                what: format!("tensor `{}`", t.name),
                reason: e.to_string(),
            };
            let len = i64::try_from(t.data.len()).map_err(|_| LoadError::Backend {
                backend: "torch",
                what: format!("tensor `{}`", t.name),
                reason: "too large for libtorch".into(),
            })?;
            let dev = Tensor::f_from_data_size(t.data, &[len], Kind::Uint8)
                .and_then(|h| h.f_to(self.device))
                .map_err(fail)?;
            tensors.push((t.name.to_owned(), dev));
        }
        let names = tensors.iter().map(|(n, _)| n.clone()).collect();
        Ok(TchModel {
            tensors: Mutex::new(tensors),
            names,
            device: self.exec,
            bytes: g.bytes(),
        })
    }

    /// Moves every tensor of `model` to `device` (no conversion).
    fn move_to(
        &self,
        model: &TchModel,
        device: Device,
        exec: ExecDevice,
    ) -> Result<TchModel, LoadError> {
        let g = model.tensors.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tensors = Vec::with_capacity(g.len());
        for (name, t) in g.iter() {
            let moved = t.f_to(device).map_err(|e| LoadError::Backend {
                backend: "torch",
                what: format!("tensor `{name}`"),
                reason: e.to_string(),
            })?;
            tensors.push((name.clone(), moved));
        }
        Ok(TchModel {
            tensors: Mutex::new(tensors),
            names: model.names.clone(),
            device: exec,
            bytes: model.bytes,
        })
    }

    fn unsupported(sd: &StateDict, name: &str, dtype: Dtype) -> LoadError {
        LoadError::UnsupportedDtype {
            path: sd.paths().next().map(Into::into).unwrap_or_default(),
            tensor: name.to_owned(),
            dtype: format!("{dtype:?}"),
            backend: "torch",
        }
    }

    /// Copies a state dict to the device, floating tensors converted to `precision`.
    pub fn convert(&self, sd: &StateDict, precision: Precision) -> Result<TchModel, LoadError> {
        let fail = |what: &str, e: tch::TchError| LoadError::Backend {
            backend: "torch",
            what: what.to_owned(),
            reason: e.to_string(),
        };
        let mut tensors = Vec::with_capacity(sd.len());
        let mut bytes = 0u64;
        for t in sd.iter() {
            let kind = kind_of(t.dtype).ok_or_else(|| Self::unsupported(sd, t.name, t.dtype))?;
            let shape = t
                .shape
                .iter()
                .map(|&d| i64::try_from(d))
                .collect::<Result<Vec<i64>, _>>()
                .map_err(|_| LoadError::Backend {
                    backend: "torch",
                    what: format!("tensor `{}`", t.name),
                    reason: format!("shape {:?} does not fit libtorch's i64 sizes", t.shape),
                })?;
            let numel: usize = t.shape.iter().product();
            if numel * kind.elt_size_in_bytes() != t.data.len() {
                return Err(LoadError::Backend {
                    backend: "torch",
                    what: format!("tensor `{}`", t.name),
                    reason: format!(
                        "{} bytes for shape {:?} of {:?}",
                        t.data.len(),
                        t.shape,
                        t.dtype
                    ),
                });
            }
            let what = format!("tensor `{}`", t.name);
            let host =
                Tensor::f_from_data_size(t.data, &shape, kind).map_err(|e| fail(&what, e))?;
            let target = target_kind(kind, precision);
            // Move first, convert on the device: the conversion then runs on the GPU and the
            // host copy stays at the file's size.
            let mut dev = host.f_to(self.device).map_err(|e| fail(&what, e))?;
            if target != kind {
                dev = dev
                    .f_to_dtype(target, false, false)
                    .map_err(|e| fail(&what, e))?;
            }
            bytes += (numel * target.elt_size_in_bytes()) as u64;
            tensors.push((t.name.to_owned(), dev));
        }
        let names = tensors.iter().map(|(n, _)| n.clone()).collect();
        Ok(TchModel {
            tensors: Mutex::new(tensors),
            names,
            device: self.exec,
            bytes,
        })
    }
}

impl DeviceBackend for TchBackend {
    fn name(&self) -> &'static str {
        "torch"
    }

    fn device(&self) -> ExecDevice {
        self.exec
    }

    fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    fn device_bytes(&self, model: &AnyModel, precision: Precision) -> Result<u64, LoadError> {
        if let Some(g) = model.gguf() {
            return Ok(g.bytes());
        }
        let Some(sd) = model.state_dict() else {
            return Ok(0);
        };
        let mut total = 0u64;
        for t in sd.iter() {
            let kind = kind_of(t.dtype).ok_or_else(|| Self::unsupported(sd, t.name, t.dtype))?;
            let numel: usize = t.shape.iter().product();
            total += (numel * target_kind(kind, precision).elt_size_in_bytes()) as u64;
        }
        Ok(total)
    }

    fn to_device(
        &self,
        _: &str,
        model: &Arc<AnyModel>,
        precision: Precision,
    ) -> Result<DeviceModel, LoadError> {
        match &**model {
            AnyModel::StateDict(sd) => {
                Ok(DeviceModel::Torch(Arc::new(self.convert(sd, precision)?)))
            }
            AnyModel::Gguf(g) => Ok(DeviceModel::Torch(Arc::new(self.upload_raw(g)?))),
            _ => Ok(DeviceModel::Host(model.clone())),
        }
    }

    /// Copies the converted tensors to host RAM, so a later lock moves them back without
    /// reading or converting the file again.
    fn offload(&self, _: &str, copy: &DeviceModel) -> Result<Option<DeviceModel>, LoadError> {
        match copy {
            DeviceModel::Torch(m) if m.device() != ExecDevice::Cpu => Ok(Some(DeviceModel::Torch(
                Arc::new(self.move_to(m, Device::Cpu, ExecDevice::Cpu)?),
            ))),
            _ => Ok(None),
        }
    }

    fn reload(&self, key: &str, copy: &DeviceModel) -> Result<DeviceModel, LoadError> {
        match copy {
            DeviceModel::Torch(m) => Ok(DeviceModel::Torch(Arc::new(self.move_to(
                m,
                self.device,
                self.exec,
            )?))),
            _ => Err(LoadError::Backend {
                backend: "torch",
                what: format!("model {key}"),
                reason: "the offloaded copy is not a libtorch model".into(),
            }),
        }
    }
}
