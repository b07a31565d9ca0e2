//! Builds the probe/scan fixture corpus into a temp dir at test time: safetensors files with
//! the key names and shapes of real architectures (data regions sparse), torch zip saves and
//! legacy pickles written opcode by opcode the way CPython's pickler (protocol 2) writes them
//! for `torch.save`, GGUF headers, and diffusers folders with real config values.

#![allow(dead_code, reason = "each test module uses a subset")]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// safetensors

/// Writes a safetensors file: a real header, the data region as a sparse hole.
pub fn safetensors(path: &Path, tensors: &[(&str, &[u64])], metadata: Option<Value>) {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), m);
    }
    let mut offset = 0u64;
    for (name, shape) in tensors {
        let n: u64 = shape.iter().product::<u64>() * 2;
        header.insert(
            (*name).to_owned(),
            json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut text = serde_json::to_string(&Value::Object(header)).unwrap();
    while !(text.len() + 8).is_multiple_of(8) {
        text.push(' ');
    }
    let mut f = fs::File::create(path).unwrap();
    f.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_len(8 + text.len() as u64 + offset).unwrap();
}

// ---------------------------------------------------------------------------------------------
// pickles

/// A value to pickle.
#[derive(Clone)]
pub enum Py {
    Int(i64),
    Str(String),
    Bool(bool),
    None,
    /// A plain dict (EMPTY_DICT + SETITEMS).
    Dict(Vec<(String, Py)>),
    /// `collections.OrderedDict` (REDUCE + SETITEMS), optionally with torch's `_metadata` BUILD.
    OrderedDict(Vec<(String, Py)>, bool),
    /// A tensor: shape and torch storage class (`HalfStorage` …).
    Tensor(Vec<u64>, &'static str),
}

pub fn t(shape: &[u64]) -> Py {
    Py::Tensor(shape.to_vec(), "HalfStorage")
}

pub fn od(items: &[(&str, Py)]) -> Py {
    Py::OrderedDict(
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        false,
    )
}

pub fn dict(items: &[(&str, Py)]) -> Py {
    Py::Dict(
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// CPython's protocol-2 pickler, as far as torch.save exercises it.
pub struct Pickler {
    pub out: Vec<u8>,
    memo: HashMap<String, u32>,
    next: u32,
    /// Storage (key, numel, element size) in order of first use.
    pub storages: Vec<(String, u64, u64)>,
    legacy: bool,
}

fn elt_size(storage: &str) -> u64 {
    match storage {
        "FloatStorage" | "IntStorage" => 4,
        "DoubleStorage" | "LongStorage" => 8,
        "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
        _ => 2,
    }
}

impl Pickler {
    pub fn new(legacy: bool) -> Self {
        let mut p = Self {
            out: Vec::new(),
            memo: HashMap::new(),
            next: 0,
            storages: Vec::new(),
            legacy,
        };
        p.out.extend_from_slice(&[0x80, 2]);
        p
    }

    /// BINPUT/LONG_BINPUT the top of the stack at the next memo index; `key` lets later
    /// references become BINGETs (strings, globals), as CPython's memo does by identity.
    fn put(&mut self, key: Option<String>) {
        let idx = self.next;
        self.next += 1;
        if let Some(k) = key {
            self.memo.insert(k, idx);
        }
        if idx < 256 {
            self.out.extend_from_slice(&[b'q', idx as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&idx.to_le_bytes());
        }
    }

    fn get(&mut self, key: &str) -> bool {
        let Some(&idx) = self.memo.get(key) else {
            return false;
        };
        if idx < 256 {
            self.out.extend_from_slice(&[b'h', idx as u8]);
        } else {
            self.out.push(b'j');
            self.out.extend_from_slice(&idx.to_le_bytes());
        }
        true
    }

    pub fn global(&mut self, module: &str, name: &str) {
        let key = format!("g:{module}.{name}");
        if self.get(&key) {
            return;
        }
        self.out.push(b'c');
        self.out
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self.put(Some(key));
    }

    pub fn string(&mut self, s: &str) {
        let key = format!("s:{s}");
        if self.get(&key) {
            return;
        }
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self.put(Some(key));
    }

    pub fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            let b = v.to_le_bytes();
            self.out.extend_from_slice(&[0x8a, 8]);
            self.out.extend_from_slice(&b);
        }
    }

    fn anon_put(&mut self) {
        self.put(None);
    }

    /// A tuple of ints (sizes, strides), memoized like CPython does.
    fn int_tuple(&mut self, v: &[u64]) {
        match v.len() {
            0 => {
                self.out.push(b')');
                return;
            }
            1..=3 => {
                for &x in v {
                    self.int(i64::try_from(x).unwrap());
                }
                self.out.push(0x84 + v.len() as u8);
            }
            _ => {
                self.out.push(b'(');
                for &x in v {
                    self.int(i64::try_from(x).unwrap());
                }
                self.out.push(b't');
            }
        }
        self.anon_put();
    }

    fn items(&mut self, items: &[(String, Py)]) {
        for chunk in items.chunks(1000) {
            if chunk.len() == 1 {
                self.string(&chunk[0].0);
                self.value(&chunk[0].1);
                self.out.push(b's');
            } else {
                self.out.push(b'(');
                for (k, v) in chunk {
                    self.string(k);
                    self.value(v);
                }
                self.out.push(b'u');
            }
        }
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.push(b')');
        self.out.push(b'R');
        self.anon_put();
    }

    pub fn value(&mut self, v: &Py) {
        match v {
            Py::Int(i) => self.int(*i),
            Py::Str(s) => self.string(s),
            Py::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Py::None => self.out.push(b'N'),
            Py::Dict(items) => {
                self.out.push(b'}');
                self.anon_put();
                self.items(items);
            }
            Py::OrderedDict(items, with_metadata) => {
                self.empty_ordered_dict();
                self.items(items);
                if *with_metadata {
                    // state = {'_metadata': OrderedDict([('', {'version': 1})])}
                    self.out.push(b'}');
                    self.anon_put();
                    self.string("_metadata");
                    self.empty_ordered_dict();
                    self.string("");
                    self.out.push(b'}');
                    self.anon_put();
                    self.string("version");
                    self.int(1);
                    self.out.push(b's');
                    self.out.push(b's');
                    self.out.push(b's');
                    self.out.push(b'b');
                }
            }
            Py::Tensor(shape, storage) => {
                let numel: u64 = shape.iter().product();
                let key = self.storages.len().to_string();
                self.storages.push((key.clone(), numel, elt_size(storage)));
                self.global("torch._utils", "_rebuild_tensor_v2");
                self.out.push(b'(');
                // persistent id
                self.out.push(b'(');
                self.string("storage");
                self.global("torch", storage);
                self.string(&key);
                self.string("cpu");
                self.int(i64::try_from(numel).unwrap());
                if self.legacy {
                    self.out.push(b'N');
                }
                self.out.push(b't');
                self.anon_put();
                self.out.push(b'Q');
                self.int(0);
                self.int_tuple(shape);
                let mut stride = vec![1u64; shape.len()];
                for i in (0..shape.len().saturating_sub(1)).rev() {
                    stride[i] = stride[i + 1] * shape[i + 1];
                }
                self.int_tuple(&stride);
                self.out.push(0x89);
                self.empty_ordered_dict();
                self.out.push(b't');
                self.anon_put();
                self.out.push(b'R');
                self.anon_put();
            }
        }
    }

    pub fn finish(mut self) -> (Vec<u8>, Vec<(String, u64, u64)>) {
        self.out.push(b'.');
        (self.out, self.storages)
    }
}

/// `torch.save(obj, path)` (zip format): `<archive>/data.pkl`, `byteorder`, `data/<key>`,
/// `version`, `.data/serialization_id`, stored uncompressed.
pub fn torch_zip(path: &Path, archive: &str, obj: &Py, extra: &[(&str, &[u8])]) {
    let mut p = Pickler::new(false);
    p.value(obj);
    let (pkl, storages) = p.finish();
    let f = fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file(format!("{archive}/data.pkl"), opts).unwrap();
    z.write_all(&pkl).unwrap();
    z.start_file(format!("{archive}/byteorder"), opts).unwrap();
    z.write_all(b"little").unwrap();
    for (key, numel, elt) in &storages {
        z.start_file(format!("{archive}/data/{key}"), opts).unwrap();
        z.write_all(&vec![0u8; (numel * elt).min(1 << 16) as usize])
            .unwrap();
    }
    for (name, data) in extra {
        z.start_file(format!("{archive}/{name}"), opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.start_file(format!("{archive}/version"), opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.start_file(format!("{archive}/.data/serialization_id"), opts)
        .unwrap();
    z.write_all(b"1234567890123456789012345678901234567890")
        .unwrap();
    z.finish().unwrap();
}

/// `torch.save(obj, path, _use_new_zipfile_serialization=False)`: magic, protocol, sys info,
/// the object, the storage keys, then each storage as 8-byte numel + raw bytes.
pub fn torch_legacy(path: &Path, obj: &Py) {
    let mut out = Vec::new();
    // MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
    out.extend_from_slice(&[
        0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
    ]);
    // PROTOCOL_VERSION = 1001
    out.extend_from_slice(&[0x80, 2, b'M', 0xe9, 0x03, b'.']);
    let mut p = Pickler::new(false);
    p.value(&dict(&[
        ("protocol_version", Py::Int(1001)),
        ("little_endian", Py::Bool(true)),
        (
            "type_sizes",
            dict(&[
                ("short", Py::Int(2)),
                ("int", Py::Int(4)),
                ("long", Py::Int(4)),
            ]),
        ),
    ]));
    out.extend_from_slice(&p.finish().0);
    let mut p = Pickler::new(true);
    p.value(obj);
    let (pkl, storages) = p.finish();
    out.extend_from_slice(&pkl);
    // storage keys list
    let mut p = Pickler::new(false);
    p.out.push(b']');
    p.anon_put();
    if !storages.is_empty() {
        p.out.push(b'(');
        for (k, _, _) in &storages {
            p.string(k);
        }
        p.out.push(b'e');
    }
    out.extend_from_slice(&p.finish().0);
    for (_, numel, elt) in &storages {
        out.extend_from_slice(&numel.to_le_bytes());
        out.extend(std::iter::repeat_n(0u8, (numel * elt) as usize));
    }
    fs::write(path, out).unwrap();
}

/// A pickle that calls `posix.system(cmd)` on load (protocol 2, GLOBAL).
pub fn malicious_system(cmd: &str) -> Vec<u8> {
    let mut v = vec![0x80, 2];
    v.extend_from_slice(b"cposix\nsystem\nq\x00X");
    v.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    v.extend_from_slice(cmd.as_bytes());
    v.extend_from_slice(b"q\x01\x85q\x02Rq\x03.");
    v
}

/// A pickle that calls `builtins.eval(src)` through STACK_GLOBAL (protocol 4 with a frame).
pub fn malicious_eval(src: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for s in ["builtins", "eval"] {
        body.push(0x8c);
        body.push(s.len() as u8);
        body.extend_from_slice(s.as_bytes());
        body.push(0x94);
    }
    body.push(0x93);
    body.push(0x94);
    body.push(0x8c);
    body.push(src.len() as u8);
    body.extend_from_slice(src.as_bytes());
    body.push(0x94);
    body.extend_from_slice(&[0x85, 0x94, b'R', 0x94, b'.']);
    let mut v = vec![0x80, 4, 0x95];
    v.extend_from_slice(&(body.len() as u64).to_le_bytes());
    v.extend_from_slice(&body);
    v
}

// ---------------------------------------------------------------------------------------------
// GGUF

fn gguf_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A GGUF v3 file: string metadata, tensor infos (torch-order shapes, written reversed), and
/// a sparse data region.
pub fn gguf(path: &Path, kv: &[(&str, &str)], tensors: &[(&str, &[u64])]) {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kv.len() as u64 + 1).to_le_bytes());
    for (k, v) in kv {
        gguf_str(&mut out, k);
        out.extend_from_slice(&8u32.to_le_bytes());
        gguf_str(&mut out, v);
    }
    gguf_str(&mut out, "general.file_type");
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&8u32.to_le_bytes());
    let mut offset = 0u64;
    for (name, shape) in tensors {
        gguf_str(&mut out, name);
        out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&8u32.to_le_bytes()); // Q8_0
        out.extend_from_slice(&offset.to_le_bytes());
        // Q8_0: blocks of 32 elements in 34 bytes.
        offset += shape.iter().product::<u64>().div_ceil(32) * 34;
        offset = offset.div_ceil(32) * 32;
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    let len = out.len() as u64 + offset;
    fs::write(path, &out).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// diffusers folders

pub fn write_json(path: &Path, v: &Value) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn touch(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// SD 1.5's unet/config.json (runwayml/stable-diffusion-v1-5).
pub fn sd15_unet_config() -> Value {
    json!({
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
        "act_fn": "silu", "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
        "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    })
}

fn sd_model_index(class: &str, extra: &[(&str, Value)]) -> Value {
    let mut v = json!({
        "_class_name": class, "_diffusers_version": "0.6.0",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    });
    for (k, val) in extra {
        v[*k] = val.clone();
    }
    v
}

fn scheduler(prediction: Option<&str>, class: &str) -> Value {
    let mut v = json!({
        "_class_name": class, "_diffusers_version": "0.6.0",
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
        "steps_offset": 1, "trained_betas": null, "clip_sample": false
    });
    if let Some(p) = prediction {
        v["prediction_type"] = json!(p);
    }
    v
}

/// A diffusers pipeline folder; `variant` names the weight files (`fp16` → `*.fp16.safetensors`).
fn pipeline(
    dir: &Path,
    index: &Value,
    unet: Option<&Value>,
    transformer: Option<&Value>,
    sched: &Value,
    variant: &str,
) {
    write_json(&dir.join("model_index.json"), index);
    if let Some(u) = unet {
        write_json(&dir.join("unet/config.json"), u);
    }
    if let Some(t) = transformer {
        write_json(&dir.join("transformer/config.json"), t);
    }
    write_json(&dir.join("scheduler/scheduler_config.json"), sched);
    let v = if variant.is_empty() {
        String::new()
    } else {
        format!(".{variant}")
    };
    let obj = index.as_object().unwrap();
    for (name, val) in obj {
        if name.starts_with('_') || val.get(0).is_none_or(Value::is_null) {
            continue;
        }
        match name.as_str() {
            "unet" | "vae" | "transformer" => {
                touch(
                    &dir.join(name)
                        .join(format!("diffusion_pytorch_model{v}.safetensors")),
                    format!("{name} weights").as_bytes(),
                );
            }
            n if n.starts_with("text_encoder") => {
                write_json(
                    &dir.join(name).join("config.json"),
                    &json!({"architectures": [val[1]]}),
                );
                touch(
                    &dir.join(name).join(format!("model{v}.safetensors")),
                    format!("{name} weights").as_bytes(),
                );
            }
            n if n.starts_with("tokenizer") => {
                touch(&dir.join(name).join("vocab.json"), b"{}");
            }
            _ => {}
        }
    }
}

/// One fixture: a path and what probe must say about it.
pub struct Case {
    pub name: &'static str,
    pub path: PathBuf,
    pub model_type: &'static str,
    pub base: &'static str,
    pub format: &'static str,
    pub variant: Option<&'static str>,
    pub prediction: Option<&'static str>,
}

fn case(
    name: &'static str,
    path: PathBuf,
    model_type: &'static str,
    base: &'static str,
    format: &'static str,
) -> Case {
    Case {
        name,
        path,
        model_type,
        base,
        format,
        variant: None,
        prediction: None,
    }
}

impl Case {
    fn main(mut self, variant: &'static str, prediction: Option<&'static str>) -> Self {
        self.variant = Some(variant);
        self.prediction = prediction;
        self
    }
}

const DM: &str = "model.diffusion_model.";

fn sd_main_keys(
    context: u64,
    in_ch: u64,
    attn_block: &str,
    text: (&'static str, u64),
) -> Vec<(String, Vec<u64>)> {
    let width = if context == 2048 || context == 1280 {
        640
    } else {
        320
    };
    vec![
        (
            format!("{DM}input_blocks.0.0.weight"),
            vec![320, in_ch, 3, 3],
        ),
        (format!("{DM}input_blocks.0.0.bias"), vec![320]),
        (
            format!("{DM}input_blocks.{attn_block}.1.transformer_blocks.0.attn2.to_k.weight"),
            vec![width, context],
        ),
        (
            format!("{DM}input_blocks.{attn_block}.1.transformer_blocks.0.attn2.to_v.weight"),
            vec![width, context],
        ),
        (format!("{DM}out.2.weight"), vec![4, 320, 3, 3]),
        (
            "first_stage_model.decoder.conv_in.weight".to_owned(),
            vec![512, 4, 3, 3],
        ),
        (
            "first_stage_model.encoder.conv_in.weight".to_owned(),
            vec![128, 3, 3, 3],
        ),
        (text.0.to_owned(), vec![49408, text.1]),
    ]
}

fn st(path: &Path, keys: &[(String, Vec<u64>)], meta: Option<Value>) {
    let v: Vec<(&str, &[u64])> = keys
        .iter()
        .map(|(k, s)| (k.as_str(), s.as_slice()))
        .collect();
    safetensors(path, &v, meta);
}

fn py_od(keys: &[(String, Vec<u64>)]) -> Py {
    Py::OrderedDict(
        keys.iter()
            .map(|(k, s)| (k.clone(), Py::Tensor(s.clone(), "HalfStorage")))
            .collect(),
        true,
    )
}

/// Builds every positive fixture under `root`; returns the expectations.
pub fn corpus(root: &Path) -> Vec<Case> {
    const SD1_TEXT: (&str, u64) = (
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        768,
    );
    const SD2_TEXT: (&str, u64) = ("cond_stage_model.model.token_embedding.weight", 1024);
    const XL_TEXT: (&str, u64) = ("conditioner.embedders.1.model.token_embedding.weight", 1280);
    const REF_TEXT: (&str, u64) = ("conditioner.embedders.0.model.token_embedding.weight", 1280);
    let p = |n: &str| root.join(n);
    let mut cases = Vec::new();

    // --- main checkpoints (safetensors) ---
    st(
        &p("sd15.safetensors"),
        &sd_main_keys(768, 4, "1", SD1_TEXT),
        None,
    );
    cases.push(
        case("sd15", p("sd15.safetensors"), "main", "sd-1", "checkpoint")
            .main("normal", Some("epsilon")),
    );
    st(
        &p("sd15-inpainting.safetensors"),
        &sd_main_keys(768, 9, "1", SD1_TEXT),
        None,
    );
    cases.push(
        case(
            "sd15 inpaint",
            p("sd15-inpainting.safetensors"),
            "main",
            "sd-1",
            "checkpoint",
        )
        .main("inpaint", Some("epsilon")),
    );
    st(
        &p("sd21.safetensors"),
        &sd_main_keys(1024, 4, "1", SD2_TEXT),
        None,
    );
    cases.push(
        case("sd21", p("sd21.safetensors"), "main", "sd-2", "checkpoint")
            .main("normal", Some("v_prediction")),
    );
    st(
        &p("sd2-depth.safetensors"),
        &sd_main_keys(1024, 5, "1", SD2_TEXT),
        None,
    );
    cases.push(
        case(
            "sd2 depth",
            p("sd2-depth.safetensors"),
            "main",
            "sd-2",
            "checkpoint",
        )
        .main("depth", Some("epsilon")),
    );
    st(
        &p("sdxl.safetensors"),
        &sd_main_keys(2048, 4, "4", XL_TEXT),
        None,
    );
    cases.push(
        case("sdxl", p("sdxl.safetensors"), "main", "sdxl", "checkpoint")
            .main("normal", Some("epsilon")),
    );
    st(
        &p("sdxl-inpaint.safetensors"),
        &sd_main_keys(2048, 9, "4", XL_TEXT),
        None,
    );
    cases.push(
        case(
            "sdxl inpaint",
            p("sdxl-inpaint.safetensors"),
            "main",
            "sdxl",
            "checkpoint",
        )
        .main("inpaint", Some("epsilon")),
    );
    st(
        &p("sdxl-refiner.safetensors"),
        &sd_main_keys(1280, 4, "4", REF_TEXT),
        None,
    );
    cases.push(
        case(
            "sdxl refiner",
            p("sdxl-refiner.safetensors"),
            "main",
            "sdxl-refiner",
            "checkpoint",
        )
        .main("normal", Some("epsilon")),
    );

    // --- main checkpoints (pickles): zip save with nested state_dict, legacy pickle ---
    let keys = sd_main_keys(
        768,
        4,
        "1",
        (
            "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
            768,
        ),
    );
    let keys: Vec<_> = keys
        .into_iter()
        .map(|(k, s)| {
            if k.contains("position_embedding") {
                (k, vec![77, 768])
            } else {
                (k, s)
            }
        })
        .collect();
    torch_zip(
        &p("sd15-zip.ckpt"),
        "archive",
        &dict(&[
            ("epoch", Py::Int(6)),
            ("global_step", Py::Int(840_000)),
            ("state_dict", py_od(&keys)),
        ]),
        &[],
    );
    cases.push(
        case(
            "sd15 torch zip ckpt",
            p("sd15-zip.ckpt"),
            "main",
            "sd-1",
            "checkpoint",
        )
        .main("normal", Some("epsilon")),
    );
    let keys2: Vec<_> = sd_main_keys(
        1024,
        9,
        "1",
        ("cond_stage_model.model.positional_embedding", 1024),
    )
    .into_iter()
    .map(|(k, s)| {
        if k.contains("positional_embedding") {
            (k, vec![77, 1024])
        } else {
            (k, s)
        }
    })
    .collect();
    torch_legacy(
        &p("sd2-inpaint-legacy.ckpt"),
        &dict(&[
            ("global_step", Py::Int(200_000)),
            ("state_dict", py_od(&keys2)),
        ]),
    );
    cases.push(
        case(
            "sd2 inpaint legacy ckpt",
            p("sd2-inpaint-legacy.ckpt"),
            "main",
            "sd-2",
            "checkpoint",
        )
        .main("inpaint", Some("epsilon")),
    );

    // --- flux / sd3 ---
    let flux = |guidance: bool, in_ch: u64, prefix: &str| {
        let mut k = vec![
            (
                format!("{prefix}double_blocks.0.img_attn.qkv.weight"),
                vec![9216, 3072],
            ),
            (
                format!("{prefix}double_blocks.0.img_attn.norm.key_norm.scale"),
                vec![128],
            ),
            (
                format!("{prefix}single_blocks.0.linear1.weight"),
                vec![21504, 3072],
            ),
            (format!("{prefix}img_in.weight"), vec![3072, in_ch]),
            (format!("{prefix}txt_in.weight"), vec![3072, 4096]),
        ];
        if guidance {
            k.push((
                format!("{prefix}guidance_in.in_layer.weight"),
                vec![3072, 256],
            ));
        }
        k
    };
    st(&p("flux1-dev.safetensors"), &flux(true, 64, ""), None);
    cases.push(
        case(
            "flux dev",
            p("flux1-dev.safetensors"),
            "main",
            "flux",
            "checkpoint",
        )
        .main("dev", None),
    );
    st(&p("flux1-schnell.safetensors"), &flux(false, 64, DM), None);
    cases.push(
        case(
            "flux schnell (comfy prefix)",
            p("flux1-schnell.safetensors"),
            "main",
            "flux",
            "checkpoint",
        )
        .main("schnell", None),
    );
    st(&p("flux1-fill-dev.safetensors"), &flux(true, 384, ""), None);
    cases.push(
        case(
            "flux fill",
            p("flux1-fill-dev.safetensors"),
            "main",
            "flux",
            "checkpoint",
        )
        .main("dev_fill", None),
    );
    let mut nf4 = flux(true, 64, "");
    nf4.push((
        "double_blocks.0.img_attn.qkv.weight.quant_state.bitsandbytes__nf4".into(),
        vec![128],
    ));
    st(&p("flux1-dev-nf4.safetensors"), &nf4, None);
    cases.push(
        case(
            "flux nf4",
            p("flux1-dev-nf4.safetensors"),
            "main",
            "flux",
            "bnb_quantized_nf4b",
        )
        .main("dev", None),
    );
    st(
        &p("sd3.5-medium.safetensors"),
        &[
            (
                format!("{DM}joint_blocks.0.context_block.attn.qkv.weight"),
                vec![4608, 1536],
            ),
            (format!("{DM}x_embedder.proj.weight"), vec![1536, 16, 2, 2]),
        ],
        None,
    );
    cases.push(
        case(
            "sd3",
            p("sd3.5-medium.safetensors"),
            "main",
            "sd-3",
            "checkpoint",
        )
        .main("normal", None),
    );

    // --- gguf ---
    let fk = flux(true, 64, "");
    let fk: Vec<(&str, &[u64])> = fk.iter().map(|(k, s)| (k.as_str(), s.as_slice())).collect();
    gguf(
        &p("flux1-dev-Q8_0.gguf"),
        &[
            ("general.architecture", "flux"),
            ("general.quantization_version", "2"),
        ],
        &fk,
    );
    cases.push(
        case(
            "flux gguf",
            p("flux1-dev-Q8_0.gguf"),
            "main",
            "flux",
            "gguf_quantized",
        )
        .main("dev", None),
    );

    // --- vae ---
    safetensors(
        &p("flux-ae.safetensors"),
        &[
            ("decoder.conv_in.weight", &[512, 16, 3, 3]),
            ("encoder.conv_in.weight", &[128, 3, 3, 3]),
            ("encoder.conv_out.weight", &[32, 512, 3, 3]),
        ],
        None,
    );
    cases.push(case(
        "flux vae",
        p("flux-ae.safetensors"),
        "vae",
        "flux",
        "checkpoint",
    ));
    safetensors(
        &p("sdxl_vae_spec.safetensors"),
        &[
            ("decoder.conv_in.weight", &[512, 4, 3, 3]),
            ("encoder.conv_in.weight", &[128, 3, 3, 3]),
        ],
        Some(json!({"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"})),
    );
    cases.push(case(
        "sdxl vae with modelspec",
        p("sdxl_vae_spec.safetensors"),
        "vae",
        "sdxl",
        "checkpoint",
    ));
    torch_zip(
        &p("vae-ft-mse.pt"),
        "vae-ft-mse",
        &dict(&[(
            "state_dict",
            py_od(&[
                ("decoder.conv_in.weight".into(), vec![512, 4, 3, 3]),
                ("encoder.conv_in.weight".into(), vec![128, 3, 3, 3]),
            ]),
        )]),
        &[],
    );
    cases.push(case(
        "sd vae (4 latent channels: by name, pickle)",
        p("vae-ft-mse.pt"),
        "vae",
        "sd-1",
        "checkpoint",
    ));

    // --- lora / lycoris ---
    let k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    safetensors(
        &p("lora-sd1.safetensors"),
        &[
            (&format!("{k}.lora_down.weight"), &[4, 768]),
            (&format!("{k}.lora_up.weight"), &[320, 4]),
            (&format!("{k}.alpha"), &[]),
            (
                "lora_te_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight",
                &[4, 768],
            ),
        ],
        Some(json!({"ss_base_model_version": "sd_v1", "ss_network_module": "networks.lora"})),
    );
    cases.push(case(
        "kohya lora sd-1",
        p("lora-sd1.safetensors"),
        "lora",
        "sd-1",
        "lycoris",
    ));
    safetensors(
        &p("lora-sd2.safetensors"),
        &[
            (&format!("{k}.lora_down.weight"), &[8, 1024]),
            (&format!("{k}.lora_up.weight"), &[320, 8]),
        ],
        None,
    );
    cases.push(case(
        "kohya lora sd-2",
        p("lora-sd2.safetensors"),
        "lora",
        "sd-2",
        "lycoris",
    ));
    let kx = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k";
    safetensors(
        &p("lora-sdxl.safetensors"),
        &[
            (&format!("{kx}.lora_down.weight"), &[16, 2048]),
            (&format!("{kx}.lora_up.weight"), &[640, 16]),
            (
                "lora_te1_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight",
                &[16, 768],
            ),
            (
                "lora_te2_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight",
                &[16, 1280],
            ),
        ],
        None,
    );
    cases.push(case(
        "kohya lora sdxl",
        p("lora-sdxl.safetensors"),
        "lora",
        "sdxl",
        "lycoris",
    ));
    safetensors(
        &p("lora-unet-only-sdxl.safetensors"),
        &[
            (&format!("{kx}.lora_down.weight"), &[16, 2048]),
            (&format!("{kx}.lora_up.weight"), &[640, 16]),
        ],
        None,
    );
    cases.push(case(
        "kohya lora sdxl unet only (width 2048)",
        p("lora-unet-only-sdxl.safetensors"),
        "lora",
        "sdxl",
        "lycoris",
    ));
    safetensors(
        &p("lora-te-sd2.safetensors"),
        &[(
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
            &[4, 1024],
        )],
        None,
    );
    cases.push(case(
        "kohya lora text-encoder only sd-2",
        p("lora-te-sd2.safetensors"),
        "lora",
        "sd-2",
        "lycoris",
    ));
    safetensors(
        &p("lora-ff-meta.safetensors"),
        &[(
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_2.lora_down.weight",
            &[8, 5120],
        )],
        Some(json!({"ss_base_model_version": "sdxl_base_v1-0"})),
    );
    cases.push(case(
        "kohya lora base from metadata",
        p("lora-ff-meta.safetensors"),
        "lora",
        "sdxl",
        "lycoris",
    ));
    safetensors(
        &p("lora-peft-sdxl.safetensors"),
        &[
            (
                "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight",
                &[4, 2048],
            ),
            (
                "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight",
                &[640, 4],
            ),
        ],
        None,
    );
    cases.push(case(
        "peft lora sdxl",
        p("lora-peft-sdxl.safetensors"),
        "lora",
        "sdxl",
        "lycoris",
    ));
    safetensors(
        &p("lora-flux.safetensors"),
        &[
            (
                "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight",
                &[16, 3072],
            ),
            (
                "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight",
                &[9216, 16],
            ),
        ],
        None,
    );
    cases.push(case(
        "kohya lora flux",
        p("lora-flux.safetensors"),
        "lora",
        "flux",
        "lycoris",
    ));
    safetensors(
        &p("lora-flux-peft.safetensors"),
        &[(
            "transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight",
            &[16, 3072],
        )],
        None,
    );
    cases.push(case(
        "peft lora flux",
        p("lora-flux-peft.safetensors"),
        "lora",
        "flux",
        "lycoris",
    ));
    safetensors(
        &p("lokr-sd1.safetensors"),
        &[
            (&format!("{k}.lokr_w1"), &[4, 8]),
            (&format!("{k}.lokr_w2"), &[80, 96]),
            (&format!("{k}.alpha"), &[]),
        ],
        None,
    );
    cases.push(case(
        "lokr sd-1 (8×96)",
        p("lokr-sd1.safetensors"),
        "lora",
        "sd-1",
        "lycoris",
    ));
    safetensors(
        &p("loha-sdxl.safetensors"),
        &[
            (&format!("{kx}.hada_w1_a"), &[640, 8]),
            (&format!("{kx}.hada_w1_b"), &[8, 2048]),
            (&format!("{kx}.hada_w2_a"), &[640, 8]),
            (&format!("{kx}.hada_w2_b"), &[8, 2048]),
        ],
        None,
    );
    cases.push(case(
        "loha sdxl",
        p("loha-sdxl.safetensors"),
        "lora",
        "sdxl",
        "lycoris",
    ));
    torch_zip(
        &p("lora-sd1.pt"),
        "archive",
        &od(&[
            (&format!("{k}.lora_down.weight"), t(&[4, 768])),
            (&format!("{k}.lora_up.weight"), t(&[320, 4])),
        ]),
        &[],
    );
    cases.push(case(
        "kohya lora sd-1 (pickle)",
        p("lora-sd1.pt"),
        "lora",
        "sd-1",
        "lycoris",
    ));

    // --- textual inversion ---
    safetensors(&p("ti-sd1.safetensors"), &[("emb_params", &[2, 768])], None);
    cases.push(case(
        "embedding sd-1",
        p("ti-sd1.safetensors"),
        "embedding",
        "sd-1",
        "embedding_file",
    ));
    safetensors(
        &p("ti-sdxl.safetensors"),
        &[("clip_g", &[4, 1280]), ("clip_l", &[4, 768])],
        None,
    );
    cases.push(case(
        "embedding sdxl",
        p("ti-sdxl.safetensors"),
        "embedding",
        "sdxl",
        "embedding_file",
    ));
    torch_zip(
        &p("ti-sd2.pt"),
        "archive",
        &dict(&[
            ("string_to_token", dict(&[("*", Py::Int(265))])),
            ("string_to_param", dict(&[("*", t(&[3, 1024]))])),
            ("name", Py::Str("my-style".into())),
            ("step", Py::Int(3000)),
        ]),
        &[],
    );
    cases.push(case(
        "embedding sd-2 (A1111 .pt)",
        p("ti-sd2.pt"),
        "embedding",
        "sd-2",
        "embedding_file",
    ));
    torch_legacy(&p("ti-xlclipg.bin"), &dict(&[("<tok>", t(&[1280]))]));
    cases.push(case(
        "embedding single vector 1280 (legacy)",
        p("ti-xlclipg.bin"),
        "embedding",
        "sdxl",
        "embedding_file",
    ));

    // --- controlnet ---
    torch_legacy(
        &p("control_sd15_canny.pth"),
        &od(&[
            ("control_model.input_hint_block.0.weight", t(&[16, 3, 3, 3])),
            (
                "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                t(&[320, 768]),
            ),
        ]),
    );
    cases.push(case(
        "controlnet sd-1 (legacy pickle)",
        p("control_sd15_canny.pth"),
        "controlnet",
        "sd-1",
        "checkpoint",
    ));
    safetensors(
        &p("controlnet-sdxl.safetensors"),
        &[
            ("controlnet_cond_embedding.conv_in.weight", &[16, 3, 3, 3]),
            (
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
                &[640, 2048],
            ),
            ("controlnet_down_blocks.0.weight", &[320, 320, 1, 1]),
        ],
        None,
    );
    cases.push(case(
        "controlnet sdxl (diffusers single file)",
        p("controlnet-sdxl.safetensors"),
        "controlnet",
        "sdxl",
        "checkpoint",
    ));
    safetensors(
        &p("controlnet-sd2.safetensors"),
        &[
            (
                "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                &[320, 1024],
            ),
            ("control_model.input_hint_block.0.weight", &[16, 3, 3, 3]),
        ],
        None,
    );
    cases.push(case(
        "controlnet sd-2",
        p("controlnet-sd2.safetensors"),
        "controlnet",
        "sd-2",
        "checkpoint",
    ));

    // --- ip adapter ---
    safetensors(
        &p("ip-adapter_sd15.safetensors"),
        &[
            ("image_proj.proj.weight", &[3072, 1024]),
            ("ip_adapter.1.to_k_ip.weight", &[320, 768]),
            ("ip_adapter.1.to_v_ip.weight", &[320, 768]),
        ],
        None,
    );
    cases.push(case(
        "ip-adapter sd-1",
        p("ip-adapter_sd15.safetensors"),
        "ip_adapter",
        "sd-1",
        "checkpoint",
    ));
    safetensors(
        &p("flux-ip-adapter.safetensors"),
        &[(
            "double_blocks.0.processor.ip_adapter_double_stream_k_proj.weight",
            &[3072, 4096],
        )],
        None,
    );
    cases.push(case(
        "ip-adapter flux (xlabs)",
        p("flux-ip-adapter.safetensors"),
        "ip_adapter",
        "flux",
        "checkpoint",
    ));

    // --- diffusers pipelines ---
    let d = p("stable-diffusion-v1-5");
    pipeline(
        &d,
        &sd_model_index("StableDiffusionPipeline", &[]),
        Some(&sd15_unet_config()),
        None,
        &scheduler(Some("epsilon"), "PNDMScheduler"),
        "fp16",
    );
    cases.push(
        case("sd15 diffusers (fp16)", d, "main", "sd-1", "diffusers")
            .main("normal", Some("epsilon")),
    );
    let d = p("stable-diffusion-inpainting");
    let mut u = sd15_unet_config();
    u["in_channels"] = json!(9);
    pipeline(
        &d,
        &sd_model_index("StableDiffusionInpaintPipeline", &[]),
        Some(&u),
        None,
        &scheduler(None, "DDIMScheduler"),
        "",
    );
    cases.push(
        case("sd15 inpaint diffusers", d, "main", "sd-1", "diffusers")
            .main("inpaint", Some("epsilon")),
    );
    let d = p("stable-diffusion-2-1");
    let mut u = sd15_unet_config();
    u["cross_attention_dim"] = json!(1024);
    u["attention_head_dim"] = json!([5, 10, 20, 20]);
    u["use_linear_projection"] = json!(true);
    u["upcast_attention"] = json!(true);
    u["sample_size"] = json!(96);
    pipeline(
        &d,
        &sd_model_index("StableDiffusionPipeline", &[]),
        Some(&u),
        None,
        &scheduler(Some("v_prediction"), "DDIMScheduler"),
        "",
    );
    cases.push(
        case("sd21 diffusers", d, "main", "sd-2", "diffusers").main("normal", Some("v_prediction")),
    );
    let d = p("stable-diffusion-xl-base-1.0");
    let mut u = sd15_unet_config();
    u["cross_attention_dim"] = json!(2048);
    u["block_out_channels"] = json!([320, 640, 1280]);
    u["addition_embed_type"] = json!("text_time");
    u["projection_class_embeddings_input_dim"] = json!(2816);
    u["transformer_layers_per_block"] = json!([1, 2, 10]);
    u["sample_size"] = json!(128);
    let idx = sd_model_index(
        "StableDiffusionXLPipeline",
        &[
            (
                "text_encoder_2",
                json!(["transformers", "CLIPTextModelWithProjection"]),
            ),
            ("tokenizer_2", json!(["transformers", "CLIPTokenizer"])),
            ("scheduler", json!(["diffusers", "EulerDiscreteScheduler"])),
        ],
    );
    let mut idx = idx;
    idx.as_object_mut().unwrap().remove("safety_checker");
    idx.as_object_mut().unwrap().remove("feature_extractor");
    pipeline(
        &d,
        &idx,
        Some(&u),
        None,
        &scheduler(Some("epsilon"), "EulerDiscreteScheduler"),
        "fp16",
    );
    cases.push(
        case("sdxl diffusers", d, "main", "sdxl", "diffusers").main("normal", Some("epsilon")),
    );
    let d = p("stable-diffusion-xl-refiner-1.0");
    let mut u = sd15_unet_config();
    u["cross_attention_dim"] = json!(1280);
    u["block_out_channels"] = json!([384, 768, 1536, 1536]);
    u["projection_class_embeddings_input_dim"] = json!(2560);
    let mut idx = sd_model_index(
        "StableDiffusionXLImg2ImgPipeline",
        &[
            ("text_encoder", json!([null, null])),
            ("tokenizer", json!([null, null])),
            (
                "text_encoder_2",
                json!(["transformers", "CLIPTextModelWithProjection"]),
            ),
            ("tokenizer_2", json!(["transformers", "CLIPTokenizer"])),
        ],
    );
    idx.as_object_mut().unwrap().remove("safety_checker");
    pipeline(
        &d,
        &idx,
        Some(&u),
        None,
        &scheduler(Some("epsilon"), "EulerDiscreteScheduler"),
        "",
    );
    cases.push(
        case(
            "sdxl refiner diffusers",
            d,
            "main",
            "sdxl-refiner",
            "diffusers",
        )
        .main("normal", Some("epsilon")),
    );
    let d = p("FLUX.1-dev");
    let idx = json!({
        "_class_name": "FluxPipeline", "_diffusers_version": "0.30.0.dev0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]
    });
    let tr = json!({
        "_class_name": "FluxTransformer2DModel", "_diffusers_version": "0.30.0.dev0",
        "attention_head_dim": 128, "guidance_embeds": true, "in_channels": 64, "joint_attention_dim": 4096,
        "num_attention_heads": 24, "num_layers": 19, "num_single_layers": 38, "patch_size": 1, "pooled_projection_dim": 768
    });
    let sched = json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "base_shift": 0.5, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": true});
    pipeline(&d, &idx, None, Some(&tr), &sched, "");
    cases.push(case("flux dev diffusers", d, "main", "flux", "diffusers").main("dev", None));

    // --- diffusers components ---
    let vae_cfg = |scaling: f64, sample: u64, latent: u64| {
        json!({"_class_name": "AutoencoderKL", "_diffusers_version": "0.20.0.dev0", "act_fn": "silu",
               "block_out_channels": [128, 256, 512, 512], "in_channels": 3, "latent_channels": latent,
               "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": sample,
               "scaling_factor": scaling, "force_upcast": true})
    };
    let d = p("sdxl-vae");
    write_json(&d.join("config.json"), &vae_cfg(0.13025, 1024, 4));
    touch(&d.join("diffusion_pytorch_model.safetensors"), b"vae");
    cases.push(case("sdxl vae diffusers", d, "vae", "sdxl", "diffusers"));
    let d = p("sd-vae-ft-mse");
    write_json(&d.join("config.json"), &vae_cfg(0.18215, 256, 4));
    touch(&d.join("diffusion_pytorch_model.bin"), b"vae");
    cases.push(case("sd-1 vae diffusers", d, "vae", "sd-1", "diffusers"));
    let d = p("flux-vae");
    let mut fv = vae_cfg(0.3611, 1024, 16);
    fv["shift_factor"] = json!(0.1159);
    write_json(&d.join("config.json"), &fv);
    touch(&d.join("diffusion_pytorch_model.safetensors"), b"vae");
    cases.push(case("flux vae diffusers", d, "vae", "flux", "diffusers"));
    let d = p("sd-controlnet-canny");
    let mut cn = sd15_unet_config();
    cn["_class_name"] = json!("ControlNetModel");
    cn["conditioning_embedding_out_channels"] = json!([16, 32, 96, 256]);
    write_json(&d.join("config.json"), &cn);
    touch(&d.join("diffusion_pytorch_model.fp16.safetensors"), b"cn");
    cases.push(case(
        "controlnet sd-1 diffusers",
        d,
        "controlnet",
        "sd-1",
        "diffusers",
    ));
    let d = p("t2i-adapter-canny-sdxl-1.0");
    write_json(
        &d.join("config.json"),
        &json!({"_class_name": "T2IAdapter", "_diffusers_version": "0.20.0.dev0", "adapter_type": "full_adapter_xl", "channels": [320, 640, 1280, 1280], "downscale_factor": 16, "in_channels": 1, "num_res_blocks": 2}),
    );
    touch(&d.join("diffusion_pytorch_model.safetensors"), b"t2i");
    cases.push(case(
        "t2i adapter sdxl",
        d,
        "t2i_adapter",
        "sdxl",
        "diffusers",
    ));
    let d = p("t2iadapter_canny_sd15v2");
    write_json(
        &d.join("config.json"),
        &json!({"_class_name": "T2IAdapter", "adapter_type": "full_adapter", "channels": [320, 640, 1280, 1280], "in_channels": 1, "num_res_blocks": 2}),
    );
    touch(&d.join("diffusion_pytorch_model.bin"), b"t2i");
    cases.push(case(
        "t2i adapter sd-1",
        d,
        "t2i_adapter",
        "sd-1",
        "diffusers",
    ));
    let d = p("clip-vit-h-image-encoder");
    write_json(
        &d.join("config.json"),
        &json!({"architectures": ["CLIPVisionModelWithProjection"], "hidden_size": 1280, "projection_dim": 1024, "model_type": "clip_vision_model"}),
    );
    touch(&d.join("model.safetensors"), b"clipv");
    cases.push(case("clip vision", d, "clip_vision", "any", "diffusers"));
    let d = p("clip-vit-large-text");
    write_json(
        &d.join("config.json"),
        &json!({"architectures": ["CLIPTextModel"], "hidden_size": 768, "model_type": "clip_text_model"}),
    );
    touch(&d.join("model.safetensors"), b"clipt");
    cases.push(case("clip embed", d, "clip_embed", "any", "diffusers").main("large", None));
    let d = p("t5-v1_1-xxl");
    write_json(
        &d.join("text_encoder_2/config.json"),
        &json!({"architectures": ["T5EncoderModel"], "d_model": 4096, "model_type": "t5"}),
    );
    touch(&d.join("text_encoder_2/model.safetensors"), b"t5");
    touch(&d.join("tokenizer_2/spiece.model"), b"spm");
    cases.push(case(
        "t5 encoder (InvokeAI layout)",
        d,
        "t5_encoder",
        "any",
        "t5_encoder",
    ));
    let d = p("t5-encoder-plain");
    write_json(
        &d.join("config.json"),
        &json!({"architectures": ["T5EncoderModel"], "d_model": 4096}),
    );
    touch(&d.join("model.safetensors"), b"t5");
    cases.push(case(
        "t5 encoder (config.json)",
        d,
        "t5_encoder",
        "any",
        "t5_encoder",
    ));

    // --- embedding, LoRA and IP-Adapter folders ---
    let d = p("cat-toy");
    fs::create_dir_all(&d).unwrap();
    torch_zip(
        &d.join("learned_embeds.bin"),
        "learned_embeds",
        &dict(&[("<cat-toy>", t(&[768]))]),
        &[],
    );
    cases.push(case(
        "embedding folder sd-1",
        d,
        "embedding",
        "sd-1",
        "embedding_folder",
    ));
    let d = p("lora-diffusers-sd1");
    fs::create_dir_all(&d).unwrap();
    safetensors(
        &d.join("pytorch_lora_weights.safetensors"),
        &[
            (
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight",
                &[4, 768],
            ),
            (
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight",
                &[4, 768],
            ),
        ],
        None,
    );
    cases.push(case(
        "lora diffusers folder sd-1",
        d,
        "lora",
        "sd-1",
        "diffusers",
    ));
    let d = p("ip_adapter_sdxl");
    fs::create_dir_all(&d).unwrap();
    torch_zip(
        &d.join("ip_adapter.bin"),
        "archive",
        &dict(&[
            (
                "image_proj",
                od(&[
                    ("proj.weight", t(&[8192, 1280])),
                    ("norm.weight", t(&[2048])),
                ]),
            ),
            (
                "ip_adapter",
                od(&[
                    ("1.to_k_ip.weight", t(&[640, 2048])),
                    ("1.to_v_ip.weight", t(&[640, 2048])),
                ]),
            ),
        ]),
        &[],
    );
    fs::write(
        d.join("image_encoder.txt"),
        "ip_adapter_sdxl_image_encoder\n",
    )
    .unwrap();
    cases.push(case(
        "ip-adapter folder sdxl",
        d,
        "ip_adapter",
        "sdxl",
        "invokeai",
    ));

    cases
}

// ---------------------------------------------------------------------------------------------
// Real-producer corpus: written by `write_fixtures.py` (the `safetensors` package, CPython's
// pickle in torch.save's layouts). Key names and the shapes the rules read follow the published
// checkpoints named beside each family; repeated blocks are cut to one or two and LoRA ranks
// to 4 where nothing reads them, so the files stay small.

use crate::support::pyfix::{self, Kind, Spec};

type Keys = Vec<(String, Vec<u64>)>;

fn k(name: impl Into<String>, shape: &[u64]) -> (String, Vec<u64>) {
    (name.into(), shape.to_vec())
}

/// BasicSR's RRDBNet as in RealESRGAN_x4plus.pth (num_feat 64, num_grow_ch 32; 2 of its 23
/// RRDB blocks).
pub fn esrgan_rrdbnet_keys() -> Keys {
    let mut v = vec![
        k("conv_first.weight", &[64, 3, 3, 3]),
        k("conv_first.bias", &[64]),
    ];
    for b in 0..2 {
        for r in 1..=3 {
            for (c, inp) in [(1, 64), (2, 96), (3, 128), (4, 160), (5, 192)] {
                let out = if c == 5 { 64 } else { 32 };
                let p = format!("body.{b}.rdb{r}.conv{c}");
                v.push(k(format!("{p}.weight"), &[out, inp, 3, 3]));
                v.push(k(format!("{p}.bias"), &[out]));
            }
        }
    }
    for n in ["conv_body", "conv_up1", "conv_up2", "conv_hr"] {
        v.push(k(format!("{n}.weight"), &[64, 64, 3, 3]));
        v.push(k(format!("{n}.bias"), &[64]));
    }
    v.push(k("conv_last.weight", &[3, 64, 3, 3]));
    v.push(k("conv_last.bias", &[3]));
    v
}

/// The original ESRGAN layout (RRDB_ESRGAN_x4.pth, 4x-UltraSharp.pth): `model.N` sequential.
pub fn esrgan_old_keys() -> Keys {
    let mut v = vec![
        k("model.0.weight", &[64, 3, 3, 3]),
        k("model.0.bias", &[64]),
    ];
    for b in 0..2 {
        for r in 1..=3 {
            for (c, inp) in [(1, 64), (2, 96), (3, 128), (4, 160), (5, 192)] {
                let out = if c == 5 { 64 } else { 32 };
                let p = format!("model.1.sub.{b}.RDB{r}.conv{c}.0");
                v.push(k(format!("{p}.weight"), &[out, inp, 3, 3]));
                v.push(k(format!("{p}.bias"), &[out]));
            }
        }
    }
    v.push(k("model.1.sub.2.weight", &[64, 64, 3, 3]));
    for n in [3, 6, 8] {
        v.push(k(format!("model.{n}.weight"), &[64, 64, 3, 3]));
    }
    v.push(k("model.10.weight", &[3, 64, 3, 3]));
    v
}

/// SwinIR-M x4 (001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth, under `params`): embed 180,
/// window 8, 6 heads; one RSTB with one block.
pub fn swinir_keys() -> Keys {
    let b = "layers.0.residual_group.blocks.0";
    vec![
        k("conv_first.weight", &[180, 3, 3, 3]),
        k("conv_first.bias", &[180]),
        k("patch_embed.norm.weight", &[180]),
        k("patch_embed.norm.bias", &[180]),
        k(format!("{b}.norm1.weight"), &[180]),
        k(format!("{b}.norm1.bias"), &[180]),
        k(format!("{b}.attn.relative_position_bias_table"), &[225, 6]),
        k(format!("{b}.attn.relative_position_index"), &[64, 64]),
        k(format!("{b}.attn.qkv.weight"), &[540, 180]),
        k(format!("{b}.attn.qkv.bias"), &[540]),
        k(format!("{b}.attn.proj.weight"), &[180, 180]),
        k(format!("{b}.attn.proj.bias"), &[180]),
        k(format!("{b}.norm2.weight"), &[180]),
        k(format!("{b}.mlp.fc1.weight"), &[360, 180]),
        k(format!("{b}.mlp.fc1.bias"), &[360]),
        k(format!("{b}.mlp.fc2.weight"), &[180, 360]),
        k(format!("{b}.mlp.fc2.bias"), &[180]),
        k("layers.0.conv.weight", &[180, 180, 3, 3]),
        k("norm.weight", &[180]),
        k("conv_after_body.weight", &[180, 180, 3, 3]),
        k("conv_before_upsample.0.weight", &[64, 180, 3, 3]),
        k("upsample.0.weight", &[256, 64, 3, 3]),
        k("upsample.2.weight", &[256, 64, 3, 3]),
        k("conv_last.weight", &[3, 64, 3, 3]),
    ]
}

/// realesr-general-x4v3.pth (SRVGGNetCompact, under `params`): conv, PReLU, … conv to 48.
pub fn compact_keys() -> Keys {
    let mut v = vec![k("body.0.weight", &[64, 3, 3, 3]), k("body.0.bias", &[64])];
    v.push(k("body.1.weight", &[64]));
    for i in 1..=3 {
        v.push(k(format!("body.{}.weight", 2 * i), &[64, 64, 3, 3]));
        v.push(k(format!("body.{}.bias", 2 * i), &[64]));
        v.push(k(format!("body.{}.weight", 2 * i + 1), &[64]));
    }
    v.push(k("body.8.weight", &[48, 64, 3, 3]));
    v.push(k("body.8.bias", &[48]));
    v
}

/// HAT-S x4 as safetensors (embed 144): SwinIR's layout plus the channel-attention block.
pub fn hat_keys() -> Keys {
    let b = "layers.0.residual_group.blocks.0";
    vec![
        k("conv_first.weight", &[144, 3, 3, 3]),
        k(format!("{b}.norm1.weight"), &[144]),
        k(format!("{b}.conv_block.cab.0.weight"), &[48, 144, 3, 3]),
        k(format!("{b}.attn.qkv.weight"), &[432, 144]),
        k("conv_last.weight", &[3, 64, 3, 3]),
    ]
}

/// XLabs' FLUX LoRAs (XLabs-AI/flux-RealismLora `lora.safetensors`): the 19 double blocks'
/// attention processors, image stream `lora1`, text stream `lora2`; rank 4 here (16 there).
pub fn xlabs_flux_lora_keys() -> Keys {
    let mut v = Vec::new();
    for b in 0..19 {
        for s in [1, 2] {
            let p = format!("double_blocks.{b}.processor");
            v.push(k(format!("{p}.qkv_lora{s}.down.weight"), &[4, 3072]));
            v.push(k(format!("{p}.qkv_lora{s}.up.weight"), &[9216, 4]));
            v.push(k(format!("{p}.proj_lora{s}.down.weight"), &[4, 3072]));
            v.push(k(format!("{p}.proj_lora{s}.up.weight"), &[3072, 4]));
        }
    }
    v
}

/// BFL's FLUX.1 Canny/Depth dev LoRA (flux1-canny-dev-lora.safetensors): peft lora_A/lora_B
/// with biases on the BFL transformer, norm scales set outright; `img_in` takes 128 features.
/// Two of each block kind, rank 4.
pub fn flux_control_lora_keys() -> Keys {
    let mut v = vec![
        k("img_in.lora_A.weight", &[4, 128]),
        k("img_in.lora_B.weight", &[3072, 4]),
        k("img_in.lora_B.bias", &[3072]),
        k("time_in.in_layer.lora_A.weight", &[4, 256]),
        k("time_in.in_layer.lora_B.weight", &[3072, 4]),
        k("time_in.in_layer.lora_B.bias", &[3072]),
        k("guidance_in.in_layer.lora_A.weight", &[4, 256]),
        k("guidance_in.in_layer.lora_B.weight", &[3072, 4]),
        k("guidance_in.in_layer.lora_B.bias", &[3072]),
        k("txt_in.lora_A.weight", &[4, 4096]),
        k("txt_in.lora_B.weight", &[3072, 4]),
        k("txt_in.lora_B.bias", &[3072]),
    ];
    for b in 0..2 {
        let p = format!("double_blocks.{b}");
        v.push(k(format!("{p}.img_attn.qkv.lora_A.weight"), &[4, 3072]));
        v.push(k(format!("{p}.img_attn.qkv.lora_B.weight"), &[9216, 4]));
        v.push(k(format!("{p}.img_attn.qkv.lora_B.bias"), &[9216]));
        v.push(k(format!("{p}.img_attn.norm.key_norm.scale"), &[128]));
        v.push(k(format!("{p}.img_attn.norm.query_norm.scale"), &[128]));
        v.push(k(format!("{p}.txt_attn.norm.key_norm.scale"), &[128]));
        let p = format!("single_blocks.{b}");
        v.push(k(format!("{p}.linear1.lora_A.weight"), &[4, 3072]));
        v.push(k(format!("{p}.linear1.lora_B.weight"), &[21504, 4]));
        v.push(k(format!("{p}.linear1.lora_B.bias"), &[21504]));
        v.push(k(format!("{p}.norm.key_norm.scale"), &[128]));
    }
    v
}

/// A peft LoRA saved as one file by diffusers' `save_lora_weights` for SD 1.5 (rank 4).
pub fn peft_sd15_lora_keys() -> Keys {
    let mut v = Vec::new();
    for (blk, width) in [
        ("down_blocks.0", 320),
        ("up_blocks.3", 320),
        ("mid_block", 1280),
    ] {
        for proj in ["to_k", "to_v"] {
            let p = format!("unet.{blk}.attentions.0.transformer_blocks.0.attn2.{proj}");
            v.push(k(format!("{p}.lora_A.weight"), &[4, 768]));
            v.push(k(format!("{p}.lora_B.weight"), &[width, 4]));
        }
    }
    v
}

/// The first FLUX.1 double block of a BFL checkpoint (flux1-dev.safetensors), enough for
/// the main rule (`img_attn.qkv`), with dev's guidance embedder. `img_in` keeps its real
/// shape (the rules read its input width); the big projections, whose shapes no rule reads,
/// are cut to a few rows and columns.
pub fn flux1_main_keys(prefix: &str) -> Keys {
    vec![
        k(format!("{prefix}img_in.weight"), &[3072, 64]),
        k(format!("{prefix}img_in.bias"), &[3072]),
        k(format!("{prefix}guidance_in.in_layer.weight"), &[3072, 256]),
        k(
            format!("{prefix}double_blocks.0.img_attn.qkv.weight"),
            &[96, 32],
        ),
        k(
            format!("{prefix}double_blocks.0.img_attn.proj.weight"),
            &[32, 32],
        ),
        k(
            format!("{prefix}double_blocks.0.img_attn.norm.key_norm.scale"),
            &[128],
        ),
        k(format!("{prefix}single_blocks.0.linear1.weight"), &[96, 32]),
        k(format!("{prefix}final_layer.linear.weight"), &[64, 32]),
    ]
}

/// XLabs' FLUX ControlNet (flux-canny-controlnet-v3.safetensors): two double blocks of the
/// transformer, their `controlnet_blocks`, and the hint embedder `pos_embed_input`.
pub fn xlabs_flux_controlnet_keys() -> Keys {
    let mut v = vec![
        k("img_in.weight", &[3072, 64]),
        k("pos_embed_input.weight", &[3072, 64]),
        k("input_hint_block.0.weight", &[16, 3, 3, 3]),
    ];
    for b in 0..2 {
        // Widths not read by any rule: cut.
        v.push(k(
            format!("double_blocks.{b}.img_attn.qkv.weight"),
            &[96, 32],
        ));
        v.push(k(format!("controlnet_blocks.{b}.weight"), &[32, 32]));
    }
    v
}

/// An SD VAE checkpoint (sdxl_vae.safetensors, vae-ft-mse-840000-ema-pruned.ckpt): the
/// layouts are identical, only the conv ends shown.
pub fn sd_vae_keys() -> Keys {
    vec![
        k("encoder.conv_in.weight", &[128, 3, 3, 3]),
        k("encoder.conv_out.weight", &[8, 512, 3, 3]),
        k("decoder.conv_in.weight", &[512, 4, 3, 3]),
        k("decoder.conv_out.weight", &[3, 128, 3, 3]),
        k("quant_conv.weight", &[8, 8, 1, 1]),
        k("post_quant_conv.weight", &[4, 4, 1, 1]),
    ]
}

/// `model.diffusion_model` keys of an SD 1.5 checkpoint into which a LoRA was merged with its
/// kohya keys left in (seen on civitai; InvokeAI's factory comment names the case).
pub fn sd15_with_lora_keys() -> Keys {
    let mut v: Keys = sd_main_keys(
        768,
        4,
        "1",
        (
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            768,
        ),
    )
    .into_iter()
    .map(|(n, s)| {
        // The token embedding's vocabulary is not read: 8 rows instead of 49408.
        if n.ends_with("token_embedding.weight") {
            (n, vec![8, 768])
        } else {
            (n, s)
        }
    })
    .collect();
    let m = "lora_te_text_model_encoder_layers_0_self_attn_k_proj";
    v.push(k(format!("{m}.lora_down.weight"), &[4, 768]));
    v.push(k(format!("{m}.lora_up.weight"), &[768, 4]));
    v
}

/// One real-producer fixture and what probe must say.
pub struct RealCase {
    pub name: &'static str,
    pub path: PathBuf,
    pub model_type: &'static str,
    pub base: &'static str,
    pub format: &'static str,
}

fn rc(
    name: &'static str,
    path: PathBuf,
    model_type: &'static str,
    base: &'static str,
    format: &'static str,
) -> RealCase {
    RealCase {
        name,
        path,
        model_type,
        base,
        format,
    }
}

fn zip_spec(path: PathBuf, keys: Keys, protocol: u8, wrap: &[&str]) -> Spec {
    Spec {
        kind: Kind::TorchZip {
            protocol,
            wrap: wrap.iter().map(|s| (*s).to_owned()).collect(),
        },
        ..Spec::safetensors(path, keys)
    }
}

fn legacy_spec(path: PathBuf, keys: Keys, protocol: u8, wrap: &[&str]) -> Spec {
    Spec {
        kind: Kind::TorchLegacy {
            protocol,
            wrap: wrap.iter().map(|s| (*s).to_owned()).collect(),
        },
        ..Spec::safetensors(path, keys)
    }
}

/// The single-file families of issue 11, written with the real producers.
pub fn real_corpus(root: &Path) -> Vec<RealCase> {
    let p = |n: &str| root.join(n);
    let mut specs = Vec::new();
    let mut cases = Vec::new();

    // spandrel upscalers
    specs.push(zip_spec(
        p("RealESRGAN_x4plus.pth"),
        esrgan_rrdbnet_keys(),
        2,
        &["params_ema"],
    ));
    cases.push(rc(
        "RealESRGAN (params_ema, zip)",
        p("RealESRGAN_x4plus.pth"),
        "spandrel_image_to_image",
        "any",
        "checkpoint",
    ));
    specs.push(legacy_spec(
        p("4x-UltraSharp.pth"),
        esrgan_old_keys(),
        2,
        &[],
    ));
    cases.push(rc(
        "ESRGAN old layout (legacy pickle)",
        p("4x-UltraSharp.pth"),
        "spandrel_image_to_image",
        "any",
        "checkpoint",
    ));
    specs.push(zip_spec(
        p("SwinIR-M_x4.pth"),
        swinir_keys(),
        2,
        &["params"],
    ));
    cases.push(rc(
        "SwinIR (params, zip)",
        p("SwinIR-M_x4.pth"),
        "spandrel_image_to_image",
        "any",
        "checkpoint",
    ));
    specs.push(zip_spec(
        p("realesr-general-x4v3.pth"),
        compact_keys(),
        4,
        &["params"],
    ));
    cases.push(rc(
        "RealESRGAN compact (params, zip protocol 4)",
        p("realesr-general-x4v3.pth"),
        "spandrel_image_to_image",
        "any",
        "checkpoint",
    ));
    specs.push(Spec::safetensors(p("HAT-S_x4.safetensors"), hat_keys()));
    cases.push(rc(
        "HAT (safetensors)",
        p("HAT-S_x4.safetensors"),
        "spandrel_image_to_image",
        "any",
        "checkpoint",
    ));

    // LoRAs
    specs.push(Spec::safetensors(
        p("xlabs-realism-lora.safetensors"),
        xlabs_flux_lora_keys(),
    ));
    cases.push(rc(
        "XLabs FLUX LoRA",
        p("xlabs-realism-lora.safetensors"),
        "lora",
        "flux",
        "lycoris",
    ));
    specs.push(Spec::safetensors(
        p("flux1-canny-dev-lora.safetensors"),
        flux_control_lora_keys(),
    ));
    cases.push(rc(
        "FLUX Control LoRA",
        p("flux1-canny-dev-lora.safetensors"),
        "control_lora",
        "flux",
        "lycoris",
    ));
    specs.push(Spec::safetensors(
        p("peft-sd15-lora.safetensors"),
        peft_sd15_lora_keys(),
    ));
    cases.push(rc(
        "peft SD1.5 LoRA file",
        p("peft-sd15-lora.safetensors"),
        "lora",
        "sd-1",
        "lycoris",
    ));

    // ControlNet vs main
    specs.push(Spec::safetensors(
        p("flux-canny-controlnet-v3.safetensors"),
        xlabs_flux_controlnet_keys(),
    ));
    cases.push(rc(
        "XLabs FLUX ControlNet",
        p("flux-canny-controlnet-v3.safetensors"),
        "controlnet",
        "flux",
        "checkpoint",
    ));
    specs.push(Spec::safetensors(
        p("flux1-dev-slice.safetensors"),
        flux1_main_keys(""),
    ));
    cases.push(rc(
        "FLUX.1 dev main",
        p("flux1-dev-slice.safetensors"),
        "main",
        "flux",
        "checkpoint",
    ));
    specs.push(Spec::safetensors(
        p("merged-sd15.safetensors"),
        sd15_with_lora_keys(),
    ));
    cases.push(rc(
        "SD1.5 main with merged LoRA keys",
        p("merged-sd15.safetensors"),
        "main",
        "sd-1",
        "checkpoint",
    ));

    // VAE checkpoints: 4 latent channels, base by name (InvokeAI's rule), else sd-1
    specs.push(Spec::safetensors(p("sdxl_vae.safetensors"), sd_vae_keys()));
    cases.push(rc(
        "SDXL VAE by name",
        p("sdxl_vae.safetensors"),
        "vae",
        "sdxl",
        "checkpoint",
    ));
    specs.push(zip_spec(
        p("vae-ft-mse-840000-ema-pruned.ckpt"),
        sd_vae_keys(),
        2,
        &["state_dict"],
    ));
    cases.push(rc(
        "SD VAE (state_dict, zip)",
        p("vae-ft-mse-840000-ema-pruned.ckpt"),
        "vae",
        "sd-1",
        "checkpoint",
    ));
    specs.push(Spec::safetensors(p("anything.safetensors"), sd_vae_keys()));
    cases.push(rc(
        "VAE with a silent name",
        p("anything.safetensors"),
        "vae",
        "sd-1",
        "checkpoint",
    ));

    pyfix::write(&specs);
    cases
}

/// ESRGAN in a torch zip save for each pickle protocol torch.save can write (1–5).
pub fn esrgan_zip_every_protocol(root: &Path) -> Vec<PathBuf> {
    let specs: Vec<Spec> = (1..=5)
        .map(|proto| {
            zip_spec(
                root.join(format!("esrgan-p{proto}.pth")),
                esrgan_rrdbnet_keys(),
                proto,
                &["params_ema"],
            )
        })
        .collect();
    pyfix::write(&specs);
    specs.into_iter().map(|s| s.path).collect()
}

/// ESRGAN in the legacy (pre-zip) torch.save layout for each protocol 1–5.
pub fn esrgan_legacy_every_protocol(root: &Path) -> Vec<PathBuf> {
    let specs: Vec<Spec> = (1..=5)
        .map(|proto| {
            legacy_spec(
                root.join(format!("esrgan-legacy-p{proto}.pth")),
                esrgan_old_keys(),
                proto,
                &[],
            )
        })
        .collect();
    pyfix::write(&specs);
    specs.into_iter().map(|s| s.path).collect()
}

/// stabilityai/sdxl-vae's config.json.
pub fn sdxl_vae_config() -> Value {
    json!({
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.18.0.dev0",
        "_name_or_path": "./vae", "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
        "out_channels": 3, "sample_size": 1024, "scaling_factor": 0.13025,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    })
}

/// stabilityai/sd-vae-ft-mse's config.json (older diffusers: no scaling_factor).
pub fn sd_vae_ft_mse_config() -> Value {
    json!({
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
        "out_channels": 3, "sample_size": 256,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    })
}

/// madebyollin/taesdxl's config.json (the same as taesd's: only the name tells them apart).
pub fn taesd_config() -> Value {
    json!({
        "_class_name": "AutoencoderTiny", "_diffusers_version": "0.20.0.dev0", "act_fn": "relu",
        "decoder_block_out_channels": [64, 64, 64, 64],
        "encoder_block_out_channels": [64, 64, 64, 64], "force_upcast": false,
        "in_channels": 3, "latent_channels": 4, "latent_magnitude": 3, "latent_shift": 0.5,
        "num_decoder_blocks": [3, 3, 3, 1], "num_encoder_blocks": [1, 3, 3, 3],
        "out_channels": 3, "scaling_factor": 1.0, "upsampling_scaling_factor": 2
    })
}

/// openai/clip-vit-large-patch14's config.json, the text and vision configs cut to the fields
/// that describe the towers.
pub fn clip_vit_l14_config() -> Value {
    json!({
        "_name_or_path": "openai/clip-vit-large-patch14",
        "architectures": ["CLIPModel"], "initializer_factor": 1.0, "logit_scale_init_value": 2.6592,
        "model_type": "clip", "projection_dim": 768,
        "text_config": {"hidden_size": 768, "intermediate_size": 3072, "max_position_embeddings": 77,
                        "model_type": "clip_text_model", "num_attention_heads": 12,
                        "num_hidden_layers": 12, "projection_dim": 768, "vocab_size": 49408},
        "torch_dtype": "float32", "transformers_version": null,
        "vision_config": {"hidden_size": 1024, "image_size": 224, "intermediate_size": 4096,
                          "model_type": "clip_vision_model", "num_attention_heads": 16,
                          "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768}
    })
}

fn vae_weights(dir: &Path, file: &str) -> Spec {
    Spec::safetensors(dir.join(file), sd_vae_keys())
}

/// One real-producer folder fixture and what probe must say.
pub struct RealFolder {
    pub name: &'static str,
    pub path: PathBuf,
    pub model_type: &'static str,
    pub base: &'static str,
    pub repo_variant: Option<&'static str>,
}

/// The folder families of issue 11: configs as published, weights from the safetensors package.
pub fn real_folders(root: &Path) -> Vec<RealFolder> {
    let mut specs = Vec::new();
    let mut out = Vec::new();
    let mut folder = |name: &'static str,
                      dir: &str,
                      cfg: Value,
                      files: &[&str],
                      t: &'static str,
                      base: &'static str,
                      rv: Option<&'static str>| {
        let d = root.join(dir);
        write_json(&d.join("config.json"), &cfg);
        for f in files {
            specs.push(vae_weights(&d, f));
        }
        out.push(RealFolder {
            name,
            path: d,
            model_type: t,
            base,
            repo_variant: rv,
        });
    };
    folder(
        "sdxl-vae by config",
        "sdxl-vae",
        sdxl_vae_config(),
        &["diffusion_pytorch_model.safetensors"],
        "vae",
        "sdxl",
        Some(""),
    );
    folder(
        "fp16 weights beside unlabelled ones",
        "sdxl-vae-both",
        sdxl_vae_config(),
        &[
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
        ],
        "vae",
        "sdxl",
        Some("fp16"),
    );
    folder(
        "taesdxl-fp16 by name",
        "taesdxl-fp16",
        taesd_config(),
        &["diffusion_pytorch_model.fp16.safetensors"],
        "vae",
        "sdxl",
        Some("fp16"),
    );
    folder(
        "taesd falls back to sd-1",
        "taesd",
        taesd_config(),
        &["diffusion_pytorch_model.safetensors"],
        "vae",
        "sd-1",
        Some(""),
    );
    folder(
        "sd-vae-ft-mse falls back to sd-1",
        "sd-vae-ft-mse",
        sd_vae_ft_mse_config(),
        &["diffusion_pytorch_model.safetensors"],
        "vae",
        "sd-1",
        Some(""),
    );
    let clip = root.join("clip-vit-large-patch14");
    write_json(&clip.join("config.json"), &clip_vit_l14_config());
    specs.push(Spec::safetensors(
        clip.join("model.safetensors"),
        vec![
            k(
                "vision_model.embeddings.patch_embedding.weight",
                &[1024, 3, 14, 14],
            ),
            k("vision_model.post_layernorm.weight", &[1024]),
            k("visual_projection.weight", &[768, 1024]),
            // The vocabulary is not read: 8 of 49408 rows.
            k("text_model.embeddings.token_embedding.weight", &[8, 768]),
            k("text_projection.weight", &[768, 768]),
        ],
    ));
    out.push(RealFolder {
        name: "CLIPModel with a vision config",
        path: clip,
        model_type: "clip_vision",
        base: "any",
        repo_variant: Some(""),
    });
    pyfix::write(&specs);
    out
}

// --- newer families (FLUX.2, Z-Image, Qwen-Image, Anima, Krea) ---

/// FLUX.2 [klein] 4B in BFL's layout (flux-2-klein-4b.safetensors): 128 packed latent input
/// features, `txt_in` from 3 × Qwen3-4B's 2560 = 7680, hidden 3072. The two matrices whose
/// widths the rules read keep their shapes, stored as U8 (1 byte, standing in for the fp8
/// builds, which numpy cannot write); the rest are cut.
pub fn flux2_klein4b_specs(path: PathBuf) -> Spec {
    let mut s = Spec::safetensors(
        path,
        vec![
            k("time_in.in_layer.weight", &[3072, 256]),
            k("double_blocks.0.img_attn.qkv.weight", &[96, 32]),
            k("double_blocks.0.img_attn.norm.key_norm.scale", &[128]),
            k("double_blocks.0.img_mlp.0.weight", &[96, 32]),
            k("double_stream_modulation_img.lin.weight", &[96, 32]),
            k("single_blocks.0.linear1.weight", &[96, 32]),
            k("final_layer.linear.weight", &[128, 32]),
        ],
    );
    s.tensors
        .push(("img_in.weight".into(), vec![3072, 128], "U8"));
    s.tensors
        .push(("txt_in.weight".into(), vec![3072, 7680], "U8"));
    s
}

/// The FLUX.2 autoencoder (flux2-vae.safetensors): 32 latent channels and a BatchNorm over
/// the packed latents.
pub fn flux2_vae_keys() -> Keys {
    vec![
        k("bn.running_mean", &[128]),
        k("bn.running_var", &[128]),
        k("encoder.conv_in.weight", &[128, 3, 3, 3]),
        k("encoder.conv_out.weight", &[64, 512, 3, 3]),
        k("decoder.conv_in.weight", &[512, 32, 3, 3]),
        k("decoder.conv_out.weight", &[3, 128, 3, 3]),
    ]
}

/// A FLUX.2 [klein] 9B LoRA in BFL's peft naming (ai-toolkit): hidden 4096.
pub fn flux2_klein9b_lora_keys() -> Keys {
    let mut v = Vec::new();
    for b in 0..2 {
        for m in ["img_attn.proj", "img_attn.qkv", "txt_attn.proj"] {
            let p = format!("diffusion_model.double_blocks.{b}.{m}");
            let out = if m.ends_with("qkv") { 12288 } else { 4096 };
            v.push(k(format!("{p}.lora_A.weight"), &[4, 4096]));
            v.push(k(format!("{p}.lora_B.weight"), &[out, 4]));
        }
    }
    v
}

/// A FLUX.2 [klein] 4B LoRA in kohya naming: hidden 3072 like FLUX.1, but the image MLP is
/// 6 × 3072 = 18432 wide (FLUX.1: 4 × 3072).
pub fn flux2_klein4b_kohya_lora_keys() -> Keys {
    let mut v = Vec::new();
    for b in 0..2 {
        let p = format!("lora_unet_double_blocks_{b}");
        v.push(k(format!("{p}_img_attn_proj.lora_down.weight"), &[4, 3072]));
        v.push(k(format!("{p}_img_attn_proj.lora_up.weight"), &[3072, 4]));
        v.push(k(format!("{p}_img_attn_proj.alpha"), &[]));
        v.push(k(format!("{p}_img_mlp_0.lora_down.weight"), &[4, 3072]));
        v.push(k(format!("{p}_img_mlp_0.lora_up.weight"), &[18432, 4]));
        v.push(k(format!("{p}_img_mlp_0.alpha"), &[]));
    }
    v
}

/// A FLUX.1 kohya LoRA (4 × 3072 image MLP), the FLUX.2 LoRAs' negative.
pub fn flux1_kohya_lora_keys() -> Keys {
    flux2_klein4b_kohya_lora_keys()
        .into_iter()
        .map(|(n, s)| {
            if n.ends_with("img_mlp_0.lora_up.weight") {
                (n, vec![12288, 4])
            } else {
                (n, s)
            }
        })
        .collect()
}

/// Z-Image-Turbo as ComfyUI ships it (z_image_turbo_bf16.safetensors): the S3-DiT with its
/// caption embedder, context and noise refiners, hidden 3840; projections cut.
pub fn z_image_keys() -> Keys {
    vec![
        k("cap_embedder.0.weight", &[2560]),
        k("cap_embedder.1.weight", &[3840, 2560]),
        k("cap_pad_token", &[1, 3840]),
        k("x_pad_token", &[1, 3840]),
        k("context_refiner.0.attention.qkv.weight", &[96, 32]),
        k("noise_refiner.0.attention.qkv.weight", &[96, 32]),
        k("layers.0.attention.qkv.weight", &[96, 32]),
        k("layers.0.attention.out.weight", &[32, 32]),
        k("layers.0.feed_forward.w1.weight", &[96, 32]),
        k("t_embedder.mlp.0.weight", &[1024, 256]),
        k("x_embedder.weight", &[3840, 64]),
        k("final_layer.linear.weight", &[64, 32]),
    ]
}

/// A Z-Image LoRA (diffusion_model.layers.N, peft naming).
pub fn z_image_lora_keys() -> Keys {
    let mut v = Vec::new();
    for l in 0..2 {
        for m in ["attention.to_k", "attention.to_q", "feed_forward.w1"] {
            let p = format!("diffusion_model.layers.{l}.{m}");
            v.push(k(format!("{p}.lora_A.weight"), &[4, 3840]));
            v.push(k(format!("{p}.lora_B.weight"), &[3840, 4]));
        }
    }
    v
}

/// Qwen-Image's transformer (qwen_image_bf16.safetensors): `img_in`, `txt_in` from
/// Qwen2.5-VL's 3584, `txt_norm`, MMDiT `transformer_blocks` with image/text mods and MLPs.
pub fn qwen_image_keys() -> Keys {
    vec![
        k("img_in.weight", &[3072, 64]),
        k("txt_in.weight", &[3072, 3584]),
        k("txt_norm.weight", &[3584]),
        k(
            "time_text_embed.timestep_embedder.linear_1.weight",
            &[3072, 256],
        ),
        k("transformer_blocks.0.attn.to_q.weight", &[32, 32]),
        k("transformer_blocks.0.attn.add_q_proj.weight", &[32, 32]),
        k("transformer_blocks.0.img_mod.1.weight", &[96, 32]),
        k("transformer_blocks.0.txt_mlp.net.0.proj.weight", &[96, 32]),
        k("norm_out.linear.weight", &[64, 32]),
        k("proj_out.weight", &[64, 3072]),
    ]
}

/// A Qwen-Image LoRA (kohya-style suffixes on the diffusers block names, as Lightning and
/// most civitai Qwen-Image LoRAs are).
pub fn qwen_image_lora_keys() -> Keys {
    let mut v = Vec::new();
    for b in 0..2 {
        for m in [
            "attn.to_k",
            "attn.add_k_proj",
            "img_mlp.net.0.proj",
            "txt_mlp.net.2",
        ] {
            let p = format!("transformer_blocks.{b}.{m}");
            v.push(k(format!("{p}.lora_down.weight"), &[4, 3072]));
            v.push(k(format!("{p}.lora_up.weight"), &[3072, 4]));
        }
    }
    v
}

/// Anima (circlestone-labs/Anima, anima-preview.safetensors): the Cosmos Predict2 DiT under
/// `net.` with the LLM adapter that feeds it Qwen3-0.6B states — whose attention widths look
/// like a small text encoder's.
pub fn anima_keys() -> Keys {
    vec![
        k("net.llm_adapter.embed.weight", &[8, 1024]),
        k(
            "net.llm_adapter.blocks.0.self_attn.q_proj.weight",
            &[1024, 1024],
        ),
        k(
            "net.llm_adapter.blocks.0.self_attn.k_proj.weight",
            &[1024, 1024],
        ),
        k("net.blocks.0.self_attn.q_proj.weight", &[32, 32]),
        k("net.blocks.0.cross_attn.k_proj.weight", &[32, 1024]),
        k("net.t_embedder.1.linear_1.weight", &[96, 32]),
        k("net.x_embedder.proj.1.weight", &[2048, 68]),
        k("net.final_layer.linear.weight", &[64, 32]),
    ]
}

/// An Anima LoRA (peft on the Cosmos DiT and the LLM adapter; diffusion-pipe naming): the
/// adapter's attention is 1024 wide, an SD 2.x text encoder's width.
pub fn anima_lora_keys() -> Keys {
    let mut v = Vec::new();
    for (m, w) in [
        (
            "diffusion_model.llm_adapter.blocks.0.self_attn.k_proj",
            1024,
        ),
        ("diffusion_model.blocks.0.self_attn.q_proj", 2048),
        ("diffusion_model.blocks.0.cross_attn.k_proj", 1024),
    ] {
        v.push(k(format!("{m}.lora_A.weight"), &[4, w]));
        v.push(k(format!("{m}.lora_B.weight"), &[2048, 4]));
    }
    v
}

/// A Qwen3-4B text encoder as one file (qwen_3_4b.safetensors, Z-Image's encoder): hidden
/// 2560 from the token embedding (vocabulary cut to 8 rows).
pub fn qwen3_4b_keys() -> Keys {
    vec![
        k("model.embed_tokens.weight", &[8, 2560]),
        k("model.layers.0.self_attn.q_proj.weight", &[32, 32]),
        k("model.layers.0.self_attn.k_proj.weight", &[32, 32]),
        k("model.layers.0.mlp.gate_proj.weight", &[96, 32]),
        k("model.norm.weight", &[2560]),
    ]
}

/// The newer single-file families.
pub fn newer_corpus(root: &Path) -> Vec<(RealCase, Option<&'static str>)> {
    let p = |n: &str| root.join(n);
    let mut specs = vec![flux2_klein4b_specs(p("flux-2-klein-4b.safetensors"))];
    let mut cases = vec![(
        rc(
            "FLUX.2 klein 4B main",
            p("flux-2-klein-4b.safetensors"),
            "main",
            "flux2",
            "checkpoint",
        ),
        Some("klein_4b"),
    )];
    let mut add = |file: &str,
                   keys: Keys,
                   name: &'static str,
                   t: &'static str,
                   b: &'static str,
                   f: &'static str,
                   v: Option<&'static str>| {
        specs.push(Spec::safetensors(p(file), keys));
        cases.push((rc(name, p(file), t, b, f), v));
    };
    add(
        "flux2-vae.safetensors",
        flux2_vae_keys(),
        "FLUX.2 VAE",
        "vae",
        "flux2",
        "checkpoint",
        None,
    );
    add(
        "klein9b-style-lora.safetensors",
        flux2_klein9b_lora_keys(),
        "FLUX.2 klein 9B LoRA (BFL peft)",
        "lora",
        "flux2",
        "lycoris",
        Some("klein_9b"),
    );
    add(
        "klein4b-kohya-lora.safetensors",
        flux2_klein4b_kohya_lora_keys(),
        "FLUX.2 klein 4B LoRA (kohya)",
        "lora",
        "flux2",
        "lycoris",
        Some("klein_4b"),
    );
    add(
        "flux1-kohya-lora.safetensors",
        flux1_kohya_lora_keys(),
        "FLUX.1 kohya LoRA",
        "lora",
        "flux",
        "lycoris",
        None,
    );
    add(
        "flux1-krea-dev.safetensors",
        flux1_main_keys(""),
        "FLUX.1 Krea dev main",
        "main",
        "flux",
        "checkpoint",
        Some("dev"),
    );
    add(
        "z_image_turbo_bf16.safetensors",
        z_image_keys(),
        "Z-Image main",
        "main",
        "z-image",
        "checkpoint",
        Some("turbo"),
    );
    add(
        "z-image-lora.safetensors",
        z_image_lora_keys(),
        "Z-Image LoRA",
        "lora",
        "z-image",
        "lycoris",
        None,
    );
    add(
        "qwen_image_bf16.safetensors",
        qwen_image_keys(),
        "Qwen-Image main",
        "main",
        "qwen-image",
        "checkpoint",
        Some("generate"),
    );
    add(
        "qwen-image-lightning-lora.safetensors",
        qwen_image_lora_keys(),
        "Qwen-Image LoRA",
        "lora",
        "qwen-image",
        "lycoris",
        None,
    );
    add(
        "anima-preview.safetensors",
        anima_keys(),
        "Anima main",
        "main",
        "anima",
        "checkpoint",
        None,
    );
    add(
        "anima-style-lora.safetensors",
        anima_lora_keys(),
        "Anima LoRA",
        "lora",
        "anima",
        "lycoris",
        None,
    );
    add(
        "qwen_3_4b.safetensors",
        qwen3_4b_keys(),
        "Qwen3-4B encoder",
        "qwen3_encoder",
        "any",
        "checkpoint",
        Some("qwen3_4b"),
    );
    pyfix::write(&specs);
    cases
}

/// The newer folder families: (name, folder, type, base, variant).
pub fn newer_folders(
    root: &Path,
) -> Vec<(
    &'static str,
    PathBuf,
    &'static str,
    &'static str,
    Option<&'static str>,
)> {
    let mut specs = Vec::new();
    let mut out = Vec::new();
    // google/siglip-so400m-patch14-384 (FLUX Redux's image encoder).
    let d = root.join("siglip-so400m-patch14-384");
    write_json(
        &d.join("config.json"),
        &json!({
            "architectures": ["SiglipModel"], "initializer_factor": 1.0, "model_type": "siglip",
            "text_config": {"hidden_size": 1152, "intermediate_size": 4304, "model_type": "siglip_text_model",
                            "num_attention_heads": 16, "num_hidden_layers": 27},
            "torch_dtype": "float32", "transformers_version": "4.37.0.dev0",
            "vision_config": {"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304,
                              "model_type": "siglip_vision_model", "num_attention_heads": 16,
                              "num_hidden_layers": 27, "patch_size": 14}
        }),
    );
    specs.push(Spec::safetensors(
        d.join("model.safetensors"),
        vec![k(
            "vision_model.embeddings.patch_embedding.weight",
            &[1152, 3, 14, 14],
        )],
    ));
    out.push(("SiglipModel", d, "siglip", "any", None));
    // A CLIP-L text encoder (the text_encoder/ of black-forest-labs/FLUX.1-dev).
    let d = root.join("clip-vit-large-patch14-text");
    write_json(
        &d.join("config.json"),
        &json!({
            "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "hidden_act": "quick_gelu",
            "hidden_size": 768, "intermediate_size": 3072, "max_position_embeddings": 77,
            "model_type": "clip_text_model", "num_attention_heads": 12, "num_hidden_layers": 12,
            "projection_dim": 768, "torch_dtype": "bfloat16", "vocab_size": 49408
        }),
    );
    specs.push(Spec::safetensors(
        d.join("model.safetensors"),
        vec![k("text_model.embeddings.token_embedding.weight", &[8, 768])],
    ));
    out.push(("CLIP-L text encoder", d, "clip_embed", "any", Some("large")));
    // The CLIP-G text encoder (text_encoder_2/ of stabilityai/stable-diffusion-xl-base-1.0).
    let d = root.join("clip-vit-bigG-14-text");
    write_json(
        &d.join("config.json"),
        &json!({
            "architectures": ["CLIPTextModelWithProjection"], "hidden_act": "gelu",
            "hidden_size": 1280, "intermediate_size": 5120, "max_position_embeddings": 77,
            "model_type": "clip_text_model", "num_attention_heads": 20, "num_hidden_layers": 32,
            "projection_dim": 1280, "torch_dtype": "float16", "vocab_size": 49408
        }),
    );
    specs.push(Spec::safetensors(
        d.join("model.fp16.safetensors"),
        vec![k(
            "text_model.embeddings.token_embedding.weight",
            &[8, 1280],
        )],
    ));
    out.push((
        "CLIP-G text encoder",
        d,
        "clip_embed",
        "any",
        Some("gigantic"),
    ));
    // The FLUX.2 VAE as diffusers saves it.
    let d = root.join("flux2-vae-diffusers");
    write_json(
        &d.join("config.json"),
        &json!({"_class_name": "AutoencoderKLFlux2", "_diffusers_version": "0.36.0.dev0",
                "in_channels": 3, "latent_channels": 32, "out_channels": 3,
                "block_out_channels": [128, 256, 512, 512]}),
    );
    specs.push(Spec::safetensors(
        d.join("diffusion_pytorch_model.safetensors"),
        flux2_vae_keys(),
    ));
    out.push(("FLUX.2 diffusers VAE", d, "vae", "flux2", None));
    // Pipelines named by model_index.json, the variant from the scheduler or the index.
    for (name, dir, class, base, variant, extra_sched, extra_index) in [
        (
            "Z-Image-Turbo pipeline",
            "Z-Image-Turbo",
            "ZImagePipeline",
            "z-image",
            Some("turbo"),
            json!({"shift": 3.0}),
            json!({}),
        ),
        (
            "Z-Image base pipeline",
            "Z-Image",
            "ZImagePipeline",
            "z-image",
            Some("zbase"),
            json!({"shift": 6.0}),
            json!({}),
        ),
        (
            "Qwen-Image pipeline",
            "Qwen-Image",
            "QwenImagePipeline",
            "qwen-image",
            Some("generate"),
            json!({}),
            json!({}),
        ),
        (
            "Krea-2 Turbo pipeline",
            "Krea-2-Turbo",
            "Krea2Pipeline",
            "krea-2",
            Some("krea2_turbo"),
            json!({}),
            json!({"is_distilled": true}),
        ),
        (
            "CogView4 pipeline",
            "CogView4-6B",
            "CogView4Pipeline",
            "cogview4",
            None,
            json!({}),
            json!({}),
        ),
    ] {
        let d = root.join(dir);
        let mut index = json!({
            "_class_name": class, "_diffusers_version": "0.36.0.dev0",
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "transformer": ["diffusers", format!("{}Transformer2DModel", class.trim_end_matches("Pipeline"))],
            "vae": ["diffusers", "AutoencoderKL"]
        });
        for (k2, v) in extra_index.as_object().unwrap() {
            index[k2] = v.clone();
        }
        write_json(&d.join("model_index.json"), &index);
        let mut sched = json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.36.0.dev0", "num_train_timesteps": 1000});
        for (k2, v) in extra_sched.as_object().unwrap() {
            sched[k2] = v.clone();
        }
        write_json(&d.join("scheduler").join("scheduler_config.json"), &sched);
        write_json(
            &d.join("transformer").join("config.json"),
            &json!({"_class_name": format!("{}Transformer2DModel", class.trim_end_matches("Pipeline")), "in_channels": 64}),
        );
        specs.push(Spec::safetensors(
            d.join("transformer")
                .join("diffusion_pytorch_model.safetensors"),
            vec![k("proj_out.weight", &[64, 32])],
        ));
        out.push((name, d, "main", base, variant));
    }
    pyfix::write(&specs);
    out
}

// --- InvokeAI 6.x parity: the config classes the families above did not cover ---
//
// Key names are the published files'; the shapes a rule reads keep their real sizes (stored
// as U8 where a full F16 matrix would be tens of MB, as the fp8 builds are), the rest are cut.

fn u8_tensor(s: &mut Spec, name: &str, shape: &[u64]) {
    s.tensors.push((name.to_owned(), shape.to_vec(), "U8"));
}

/// black-forest-labs/FLUX.1-Redux-dev, flux1-redux-dev.safetensors: exactly four tensors
/// (the rule reads the names only; the two matrices are cut).
pub fn flux_redux_keys() -> Keys {
    vec![
        k("redux_down.bias", &[4096]),
        k("redux_down.weight", &[8, 12]),
        k("redux_up.bias", &[12288]),
        k("redux_up.weight", &[12, 8]),
    ]
}

/// comfyanonymous/flux_text_encoders, t5xxl_fp16.safetensors (transformers' T5EncoderModel
/// names): `width` is d_model (4096 for XXL); `umt5` gives every block its own position bias,
/// as Wan's UMT5-XXL does.
pub fn t5_encoder_keys(width: u64, umt5: bool) -> Keys {
    let mut v = vec![
        k("shared.weight", &[8, width]),
        k("encoder.final_layer_norm.weight", &[width]),
    ];
    for b in 0..2 {
        let p = format!("encoder.block.{b}.layer");
        for m in ["q", "k", "v", "o"] {
            v.push(k(format!("{p}.0.SelfAttention.{m}.weight"), &[8, 8]));
        }
        if b == 0 || umt5 {
            v.push(k(
                format!("{p}.0.SelfAttention.relative_attention_bias.weight"),
                &[32, 64],
            ));
        }
        v.push(k(format!("{p}.0.layer_norm.weight"), &[width]));
        for m in ["wi_0", "wi_1", "wo"] {
            v.push(k(format!("{p}.1.DenseReluDense.{m}.weight"), &[8, 8]));
        }
        v.push(k(format!("{p}.1.layer_norm.weight"), &[width]));
    }
    v
}

/// Mistral Small 3 as FLUX.2 [dev]'s text encoder in one file: `layers` decoder layers of
/// width 5120 with grouped-query attention (layer 0's key projection keeps its real
/// [1024, 5120]), under `root` (`model.` for Comfy-Org's files, `language_model.model.` for
/// Mistral3ForConditionalGeneration's).
pub fn mistral_spec(path: PathBuf, root: &str, layers: u64) -> Spec {
    let mut v = vec![
        k(format!("{root}embed_tokens.weight"), &[8, 5120]),
        k(format!("{root}norm.weight"), &[5120]),
    ];
    for l in 0..layers {
        v.push(k(
            format!("{root}layers.{l}.input_layernorm.weight"),
            &[5120],
        ));
        v.push(k(
            format!("{root}layers.{l}.post_attention_layernorm.weight"),
            &[5120],
        ));
    }
    v.push(k(
        format!("{root}layers.0.self_attn.q_proj.weight"),
        &[8, 8],
    ));
    v.push(k(format!("{root}layers.0.mlp.gate_proj.weight"), &[8, 8]));
    let mut s = Spec::safetensors(path, v);
    u8_tensor(
        &mut s,
        &format!("{root}layers.0.self_attn.k_proj.weight"),
        &[1024, 5120],
    );
    s
}

/// Comfy-Org's qwen_2.5_vl_7b_fp8_scaled.safetensors (Qwen-Image's encoder): the Qwen2.5-VL
/// language model (3584 wide, q/k/v biases, no QK-norm) and its vision tower.
pub fn qwen25_vl_keys() -> Keys {
    vec![
        k("model.embed_tokens.weight", &[8, 3584]),
        k("model.layers.0.self_attn.q_proj.weight", &[8, 8]),
        k("model.layers.0.self_attn.q_proj.bias", &[8]),
        k("model.layers.0.self_attn.k_proj.weight", &[8, 8]),
        k("model.layers.0.mlp.gate_proj.weight", &[8, 8]),
        k("model.norm.weight", &[3584]),
        k("visual.patch_embed.proj.weight", &[1280, 3, 2, 14, 14]),
        k("visual.blocks.0.attn.qkv.weight", &[8, 8]),
        k("visual.blocks.0.norm1.weight", &[1280]),
        k("visual.merger.ln_q.weight", &[1280]),
        k("lm_head.weight", &[8, 3584]),
    ]
}

/// Qwen/Qwen3-VL-4B-Instruct's state dict in one file (transformers ≥ 4.57 names): the
/// language model under `model.language_model.` with Qwen3's QK-norm, 2560 wide, and the
/// vision tower with its DeepStack mergers.
pub fn qwen3_vl_4b_keys() -> Keys {
    vec![
        k("model.language_model.embed_tokens.weight", &[8, 2560]),
        k(
            "model.language_model.layers.0.self_attn.q_proj.weight",
            &[8, 8],
        ),
        k(
            "model.language_model.layers.0.self_attn.q_norm.weight",
            &[128],
        ),
        k(
            "model.language_model.layers.0.self_attn.k_norm.weight",
            &[128],
        ),
        k("model.language_model.layers.35.mlp.up_proj.weight", &[8, 8]),
        k("model.language_model.norm.weight", &[2560]),
        k(
            "model.visual.patch_embed.proj.weight",
            &[1024, 3, 2, 16, 16],
        ),
        k("model.visual.blocks.0.attn.qkv.weight", &[8, 8]),
        k("model.visual.deepstack_merger_list.0.norm.weight", &[4096]),
        k("model.visual.merger.norm.weight", &[1024]),
    ]
}

/// A Wan 2.2 transformer in one file. `native`: Wan-AI's / Comfy-Org's names
/// (`text_embedding.0`, `self_attn.q`, `ffn.0`, `head.head`); else diffusers'
/// (`condition_embedder.text_embedder.linear_1`, `attn1.to_q`). `patch_embedding` keeps its
/// real [width, in_channels, 1, 2, 2].
pub fn wan_keys(prefix: &str, width: u64, in_ch: u64, native: bool) -> Keys {
    let p = |n: &str| format!("{prefix}{n}");
    let mut v = vec![
        k(p("patch_embedding.weight"), &[width, in_ch, 1, 2, 2]),
        k(p("patch_embedding.bias"), &[width]),
    ];
    if native {
        v.extend([
            k(p("text_embedding.0.weight"), &[8, 8]),
            k(p("text_embedding.2.weight"), &[8, 8]),
            k(p("time_embedding.0.weight"), &[8, 8]),
            k(p("blocks.0.self_attn.q.weight"), &[8, 8]),
            k(p("blocks.0.self_attn.norm_q.weight"), &[width]),
            k(p("blocks.0.cross_attn.k.weight"), &[8, 8]),
            k(p("blocks.0.ffn.0.weight"), &[8, 8]),
            k(p("blocks.0.modulation"), &[1, 6, width]),
            k(p("head.head.weight"), &[8, 8]),
            k(p("head.modulation"), &[1, 2, width]),
        ]);
    } else {
        v.extend([
            k(
                p("condition_embedder.text_embedder.linear_1.weight"),
                &[8, 8],
            ),
            k(
                p("condition_embedder.time_embedder.linear_1.weight"),
                &[8, 8],
            ),
            k(p("blocks.0.attn1.to_q.weight"), &[8, 8]),
            k(p("blocks.0.attn2.to_k.weight"), &[8, 8]),
            k(p("blocks.0.ffn.net.0.proj.weight"), &[8, 8]),
            k(p("blocks.0.scale_shift_table"), &[1, 6, width]),
            k(p("proj_out.weight"), &[8, 8]),
            k(p("scale_shift_table"), &[1, 2, width]),
        ]);
    }
    v
}

/// A Wan 2.2 A14B LoRA (diffusion-pipe / ai-toolkit peft names under `diffusion_model.`),
/// with an I2V adapter's replacement input conv (36 channels) beside it.
pub fn wan_lora_keys() -> Keys {
    let mut v = vec![k(
        "diffusion_model.patch_embedding.weight",
        &[5120, 36, 1, 2, 2],
    )];
    for b in 0..2 {
        for m in ["self_attn.q", "self_attn.k", "cross_attn.v", "ffn.0"] {
            let p = format!("diffusion_model.blocks.{b}.{m}");
            v.push(k(format!("{p}.lora_A.weight"), &[16, 5120]));
            v.push(k(format!("{p}.lora_B.weight"), &[5120, 16]));
        }
    }
    v
}

/// An OMI-format SDXL LoRA as OneTrainer writes it: OMI names (`unet.input_blocks…`,
/// `clip_l.…`, `clip_g.…`) with `lora_down`/`lora_up` factors.
pub fn omi_sdxl_lora_keys() -> Keys {
    let mut v = Vec::new();
    for m in [
        "unet.input_blocks.4.1.transformer_blocks.0.attn2.to_k",
        "unet.input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        "clip_l.text_model.encoder.layers.0.self_attn.k_proj",
        "clip_g.text_model.encoder.layers.0.self_attn.k_proj",
    ] {
        let w = if m.starts_with("clip_g") {
            1280
        } else if m.starts_with("clip_l") {
            768
        } else if m.ends_with("to_k") {
            2048
        } else {
            640
        };
        v.push(k(format!("{m}.lora_down.weight"), &[8, w]));
        v.push(k(format!("{m}.lora_up.weight"), &[640, 8]));
        v.push(k(format!("{m}.alpha"), &[]));
    }
    v
}

/// An LTX-2 transformer in the official layout (Lightricks' `ltx-2.5-22b-*.safetensors`);
/// `bias_25` drops the video feed-forward bias as 2.5 does (2.0/2.3 keep it).
pub fn ltx2_keys(bias_25: bool) -> Keys {
    let p = "model.diffusion_model.";
    let mut v = vec![
        k(
            format!("{p}av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight"),
            &[8, 256],
        ),
        k(format!("{p}patchify_proj.weight"), &[8, 128]),
        k(
            format!("{p}transformer_blocks.0.attn1.to_q.weight"),
            &[8, 8],
        ),
        k(
            format!("{p}transformer_blocks.0.ff.net.0.proj.weight"),
            &[8, 8],
        ),
        k(
            format!("{p}transformer_blocks.0.audio_ff.net.0.proj.weight"),
            &[8, 8],
        ),
        k(format!("{p}transformer_blocks.0.audio_ff.net.2.bias"), &[8]),
    ];
    if !bias_25 {
        v.push(k(format!("{p}transformer_blocks.0.ff.net.2.bias"), &[8]));
    }
    v
}

/// MiniMax H3's remote-code transformer layout (Comfy-Org's single files).
pub fn minimax_h3_keys() -> Keys {
    vec![
        k("audio_patch_proj.weight", &[8, 8]),
        k("video_patch_proj.weight", &[8, 8]),
        k("blocks.0.attn.qkv_proj.weight", &[8, 8]),
        k("blocks.0.attn.o_proj.weight", &[8, 8]),
        k("blocks.0.mlp.fc1.weight", &[8, 8]),
        k("final_layer.linear.weight", &[8, 8]),
    ]
}

/// Comfy-Org's Ideogram 4 single-file transformer branch.
pub fn ideogram4_keys() -> Keys {
    vec![
        k("embed_image_indicator.weight", &[2, 8]),
        k("input_proj.weight", &[8, 128]),
        k("adaln_proj.weight", &[512, 8]),
        k("blocks.0.attn.qkv.weight", &[8, 8]),
        k("final_layer.linear.weight", &[128, 8]),
    ]
}

/// nvidia/PiD decoder (`.pth`, PidDistillModel's `net.` prefix).
pub fn pid_decoder_keys() -> Keys {
    vec![
        k("net.lq_proj.layers.0.weight", &[8, 8]),
        k("net.lq_proj.layers.0.bias", &[8]),
        k("net.blocks.0.attn.qkv.weight", &[8, 8]),
        k("net.final_layer.linear.weight", &[8, 8]),
    ]
}

/// stabilityai/control-lora, control-LoRAs/control-lora-canny-rank128.safetensors: the SDXL
/// ControlNet as LoRA factors (`.down`/`.up`) beside its full hint block and the
/// `lora_controlnet` marker; the cross-attention key factor keeps SDXL's 2048 context.
pub fn sdxl_control_lora_keys() -> Keys {
    vec![
        k("lora_controlnet", &[]),
        k("input_hint_block.0.weight", &[16, 3, 3, 3]),
        k("input_hint_block.14.weight", &[320, 256, 3, 3]),
        k("time_embed.0.weight", &[8, 8]),
        k("input_blocks.1.0.in_layers.2.down", &[128, 8]),
        k("input_blocks.1.0.in_layers.2.up", &[8, 128]),
        k(
            "input_blocks.4.1.transformer_blocks.0.attn2.to_k.down",
            &[128, 2048],
        ),
        k(
            "input_blocks.4.1.transformer_blocks.0.attn2.to_k.up",
            &[640, 128],
        ),
        k("zero_convs.0.0.weight", &[320, 320, 1, 1]),
        k("middle_block_out.0.weight", &[1280, 1280, 1, 1]),
    ]
}

/// TencentARC/T2I-Adapter, models/t2iadapter_canny_sd15v2.pth (the full `Adapter`: `conv_in`
/// and ResNet blocks), which InvokeAI has no single-file class for.
pub fn t2i_adapter_keys() -> Keys {
    let mut v = vec![
        k("conv_in.weight", &[320, 64, 3, 3]),
        k("conv_in.bias", &[320]),
    ];
    for b in 0..4 {
        v.push(k(format!("body.{b}.block1.weight"), &[8, 8, 3, 3]));
        v.push(k(format!("body.{b}.block2.weight"), &[8, 8, 1, 1]));
    }
    v.push(k("body.2.in_conv.weight", &[640, 320, 1, 1]));
    v
}

/// `keys` in SDNQ's int8 layout, as Disty0's `*-SDNQ-*` exports store them: every 2-D
/// `.weight` as uint8 with a float32 per-row `.scale` beside it; biases, norms and other
/// tensors unchanged.
pub fn sdnq_int8(keys: Keys) -> Vec<(String, Vec<u64>, &'static str)> {
    let mut out = Vec::new();
    for (name, shape) in keys {
        match name.strip_suffix(".weight") {
            Some(m) if shape.len() == 2 => {
                out.push((format!("{m}.scale"), vec![shape[0], 1], "F32"));
                out.push((name, shape, "U8"));
            }
            _ => out.push((name, shape, "F16")),
        }
    }
    out
}

/// A safetensors file of SDNQ int8 tensors.
pub fn sdnq_spec(path: PathBuf, keys: Keys) -> Spec {
    Spec {
        path,
        kind: Kind::Safetensors(None),
        tensors: sdnq_int8(keys),
    }
}

/// FLUX.2 [klein] 4B's transformer under diffusers' names (`Flux2Transformer2DModel`): hidden
/// 3072, Qwen3-4B text states (3 × 2560 = 7680) into `context_embedder`, 128 packed latent
/// features into `x_embedder`; widths nothing reads are cut to 32.
pub fn flux2_klein4b_diffusers_keys() -> Keys {
    vec![
        k("x_embedder.weight", &[3072, 128]),
        k("context_embedder.weight", &[3072, 7680]),
        k(
            "time_guidance_embed.timestep_embedder.linear_1.weight",
            &[96, 32],
        ),
        k("double_stream_modulation_img.linear.weight", &[96, 32]),
        k("single_stream_modulation.linear.weight", &[96, 32]),
        k("transformer_blocks.0.attn.to_q.weight", &[32, 32]),
        k("transformer_blocks.0.attn.norm_q.weight", &[128]),
        k("transformer_blocks.0.ff.linear_in.weight", &[96, 32]),
        k(
            "single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight",
            &[96, 32],
        ),
        k("norm_out.linear.weight", &[64, 32]),
        k("proj_out.weight", &[128, 32]),
    ]
}

/// ERNIE-Image's transformer as Comfy-Org ships it (one file, the diffusers names): hidden
/// 4096 and 128 latent channels at patch size 1 in `x_embedder.proj`; the text projection,
/// model-level adaLN, final norm and layers cut to width 32.
pub fn ernie_image_keys() -> Keys {
    vec![
        k("x_embedder.proj.weight", &[4096, 128, 1, 1]),
        k("x_embedder.proj.bias", &[4096]),
        k("text_proj.weight", &[32, 48]),
        k("time_embedding.linear_1.weight", &[32, 32]),
        k("adaLN_modulation.1.weight", &[192, 32]),
        k("adaLN_modulation.1.bias", &[192]),
        k("layers.0.self_attention.to_q.weight", &[32, 32]),
        k("final_norm.linear.weight", &[64, 32]),
        k("final_norm.linear.bias", &[64]),
        k("final_linear.weight", &[128, 32]),
        k("final_linear.bias", &[128]),
    ]
}

/// The single files of the parity families: (case, variant).
pub fn parity_corpus(root: &Path) -> Vec<(RealCase, Option<&'static str>)> {
    let p = |n: &str| root.join(n);
    let mut specs = Vec::new();
    let mut cases = Vec::new();
    let mut add = |spec: Spec,
                   name: &'static str,
                   t: &'static str,
                   b: &'static str,
                   f: &'static str,
                   v: Option<&'static str>| {
        cases.push((rc(name, spec.path.clone(), t, b, f), v));
        specs.push(spec);
    };
    add(
        Spec::safetensors(p("flux1-redux-dev.safetensors"), flux_redux_keys()),
        "FLUX Redux",
        "flux_redux",
        "flux",
        "checkpoint",
        None,
    );
    add(
        Spec::safetensors(p("t5xxl_fp16.safetensors"), t5_encoder_keys(4096, false)),
        "T5-XXL encoder file",
        "t5_encoder",
        "any",
        "checkpoint",
        None,
    );
    add(
        mistral_spec(p("mistral_3_small_flux2_cow.safetensors"), "model.", 30),
        "Mistral Small 3 cow (30 layers)",
        "mistral_encoder",
        "any",
        "checkpoint",
        Some("cow_mistral3_small"),
    );
    add(
        mistral_spec(
            p("mistral-small-3.1-24b.safetensors"),
            "language_model.model.",
            40,
        ),
        "Mistral Small 3 24B (40 layers, multimodal prefix)",
        "mistral_encoder",
        "any",
        "checkpoint",
        Some("mistral3_24b"),
    );
    add(
        Spec::safetensors(p("qwen_2.5_vl_7b_fp8_scaled.safetensors"), qwen25_vl_keys()),
        "Qwen2.5-VL encoder file",
        "qwen_vl_encoder",
        "any",
        "checkpoint",
        None,
    );
    add(
        Spec::safetensors(p("qwen3vl_4b.safetensors"), qwen3_vl_4b_keys()),
        "Qwen3-VL 4B encoder file",
        "qwen3_vl_encoder",
        "any",
        "checkpoint",
        Some("qwen3_vl_4b"),
    );
    add(
        Spec::safetensors(
            p("wan2.2_ti2v_5B_fp16.safetensors"),
            wan_keys("", 3072, 48, true),
        ),
        "Wan 2.2 TI2V-5B (native names)",
        "main",
        "wan",
        "checkpoint",
        Some("ti2v_5b"),
    );
    add(
        Spec::safetensors(
            p("wan2.2_t2v_high_noise_14B.safetensors"),
            wan_keys("model.diffusion_model.", 5120, 16, false),
        ),
        "Wan 2.2 T2V-A14B (diffusers names, ComfyUI prefix)",
        "main",
        "wan",
        "checkpoint",
        Some("t2v_a14b"),
    );
    add(
        Spec::safetensors(
            p("wan2.2_i2v_low_noise_14B.safetensors"),
            wan_keys("", 5120, 36, true),
        ),
        "Wan 2.2 I2V-A14B",
        "main",
        "wan",
        "checkpoint",
        Some("i2v_a14b"),
    );
    add(
        Spec::safetensors(p("wan22-i2v-lightx2v-lora.safetensors"), wan_lora_keys()),
        "Wan 2.2 A14B LoRA with a replacement patch_embedding",
        "lora",
        "wan",
        "lycoris",
        Some("a14b"),
    );
    add(
        Spec::safetensors(p("minimax_h3_fl2va_bf16.safetensors"), minimax_h3_keys()),
        "MiniMax H3 FL2VA",
        "main",
        "minimax-h3",
        "checkpoint",
        Some("fl2va"),
    );
    add(
        Spec::safetensors(p("minimax_h3_ref2va_bf16.safetensors"), minimax_h3_keys()),
        "MiniMax H3 Ref2VA by name",
        "main",
        "minimax-h3",
        "checkpoint",
        Some("ref2va"),
    );
    add(
        Spec::safetensors(p("ideogram4_cond_bf16.safetensors"), ideogram4_keys())
            .metadata(json!({"model_type": "ideogram4_cond"})),
        "Ideogram 4 branch",
        "main",
        "ideogram-4",
        "checkpoint",
        None,
    );
    add(
        Spec::safetensors(
            p("qwen_image_edit_2509_bf16.safetensors"),
            qwen_image_keys(),
        ),
        "Qwen-Image Edit by name",
        "main",
        "qwen-image",
        "checkpoint",
        Some("edit"),
    );
    // More spandrel architectures (key names from their reference implementations).
    add(
        Spec::safetensors(
            p("4xNomos2_realplksr_dysample.safetensors"),
            vec![
                k("feats.0.weight", &[64, 3, 3, 3]),
                k("feats.1.channel_mixer.0.weight", &[128, 64, 3, 3]),
                k("feats.1.lk.conv.weight", &[16, 16, 17, 17]),
                k("feats.1.refine.weight", &[64, 64, 1, 1]),
                k("feats.1.norm.weight", &[64]),
                k("to_img.init_pos", &[1, 2, 4, 4]),
            ],
        ),
        "RealPLKSR upscaler",
        "spandrel_image_to_image",
        "any",
        "checkpoint",
        None,
    );
    add(
        zip_spec(
            p("003_ATD_SRx4_finetune.pth"),
            vec![
                k("relative_position_index_SA", &[256, 256]),
                k("conv_first.weight", &[210, 3, 3, 3]),
                k("conv_first.bias", &[210]),
                k("layers.0.residual_group.td", &[128, 210]),
                k("layers.0.residual_group.layers.0.sigma", &[1]),
                k("layers.0.residual_group.layers.0.norm1.weight", &[210]),
                k("layers.0.residual_group.layers.0.wqkv.weight", &[630, 210]),
            ],
            2,
            &["params_ema"],
        ),
        "ATD upscaler (params_ema, torch zip)",
        "spandrel_image_to_image",
        "any",
        "checkpoint",
        None,
    );
    add(
        zip_spec(
            p("up2x-latest-conservative.pth"),
            vec![
                k("unet1.conv1.conv.0.weight", &[32, 3, 3, 3]),
                k("unet1.conv1.conv.2.weight", &[64, 32, 3, 3]),
                k("unet1.conv1_down.weight", &[64, 64, 2, 2]),
                k("unet1.conv2.conv.0.weight", &[128, 64, 3, 3]),
                k("unet1.conv2.seblock.conv1.weight", &[16, 64, 1, 1]),
                k("unet2.conv1.conv.0.weight", &[32, 3, 3, 3]),
                k("unet2.conv1_down.weight", &[64, 64, 2, 2]),
            ],
            2,
            &[],
        ),
        "Real-CUGAN upscaler (torch zip)",
        "spandrel_image_to_image",
        "any",
        "checkpoint",
        None,
    );
    // Krea-2 (diffusers names): the text-fusion stage beside the image input.
    let krea2 = || {
        vec![
            k("img_in.weight", &[8, 64]),
            k("time_mod_proj.weight", &[8, 8]),
            k("text_fusion.layerwise_blocks.0.attn.to_q.weight", &[8, 8]),
            k("text_fusion.refiner_blocks.0.attn.to_q.weight", &[8, 8]),
            k("text_fusion.projector.weight", &[8, 8]),
            k("transformer_blocks.0.attn.to_q.weight", &[8, 8]),
            k("proj_out.weight", &[64, 8]),
        ]
    };
    add(
        Spec::safetensors(p("krea2_turbo_bf16.safetensors"), krea2()),
        "Krea-2 Turbo main",
        "main",
        "krea-2",
        "checkpoint",
        Some("krea2_turbo"),
    );
    add(
        Spec::safetensors(p("Krea-2-Raw-bf16.safetensors"), krea2()),
        "Krea-2 Raw main by name",
        "main",
        "krea-2",
        "checkpoint",
        Some("krea2_base"),
    );
    add(
        Spec::safetensors(
            p("krea2-style-lora.safetensors"),
            [
                "transformer.transformer_blocks.0.attn.to_q",
                "transformer.text_fusion.layerwise_blocks.0.attn.to_k",
            ]
            .iter()
            .flat_map(|m| {
                [
                    k(format!("{m}.lora_A.weight"), &[4, 3072]),
                    k(format!("{m}.lora_B.weight"), &[3072, 4]),
                ]
            })
            .collect(),
        ),
        "Krea-2 LoRA",
        "lora",
        "krea-2",
        "lycoris",
        None,
    );
    add(
        Spec::safetensors(p("ltx-2.5-22b-dev.safetensors"), ltx2_keys(true))
            .metadata(json!({"model_version": "2.5.0"})),
        "LTX-2.5 transformer (header version)",
        "main",
        "ltx-2",
        "checkpoint",
        Some("ltx2_dev"),
    );
    add(
        Spec::safetensors(p("ltx-2.5-22b-distilled-int8.safetensors"), ltx2_keys(true)),
        "LTX-2.5 distilled transformer (structure, name)",
        "main",
        "ltx-2",
        "checkpoint",
        Some("ltx2_distilled"),
    );
    let omi = |arch: &str| {
        json!({"modelspec.sai_model_spec": "1.0.0", "ot_branch": "omi_format",
               "modelspec.architecture": arch, "modelspec.title": "style"})
    };
    add(
        Spec::safetensors(p("omi-sdxl-style.safetensors"), omi_sdxl_lora_keys())
            .metadata(omi("stable-diffusion-xl-v1-base/lora")),
        "OMI SDXL LoRA (OneTrainer)",
        "lora",
        "sdxl",
        "omi",
        None,
    );
    add(
        Spec::safetensors(p("omi-flux-style.safetensors"), xlabs_flux_lora_keys())
            .metadata(omi("Flux.1-dev/lora")),
        "OMI FLUX LoRA",
        "lora",
        "flux",
        "omi",
        None,
    );
    add(
        Spec::safetensors(
            p("control-lora-canny-rank128.safetensors"),
            sdxl_control_lora_keys(),
        ),
        "SDXL control-LoRA (Stability)",
        "control_lora",
        "sdxl",
        "lycoris",
        None,
    );
    add(
        sdnq_spec(p("flux1-dev-SDNQ-int8.safetensors"), flux1_main_keys("")),
        "FLUX.1 dev SDNQ int8 file",
        "main",
        "flux",
        "sdnq_quantized",
        Some("dev"),
    );
    add(
        sdnq_spec(p("z-image-turbo-SDNQ-int8.safetensors"), z_image_keys()),
        "Z-Image SDNQ int8 file",
        "main",
        "z-image",
        "sdnq_quantized",
        Some("turbo"),
    );
    add(
        sdnq_spec(
            p("flux2-klein-4b-SDNQ-int8.safetensors"),
            flux2_klein4b_diffusers_keys(),
        ),
        "FLUX.2 klein 4B SDNQ int8 file (diffusers names)",
        "main",
        "flux2",
        "sdnq_quantized",
        Some("klein_4b"),
    );
    add(
        Spec::safetensors(p("ernie-image-turbo.safetensors"), ernie_image_keys()),
        "ERNIE-Image transformer file",
        "main",
        "ernie-image",
        "checkpoint",
        None,
    );
    add(
        zip_spec(p("res2kto4k_sr4x_flux2.pth"), pid_decoder_keys(), 2, &[]),
        "PiD decoder (torch zip), backbone and preset by name",
        "pid_decoder",
        "flux2",
        "checkpoint",
        Some("res2kto4k_sr4x"),
    );
    pyfix::write(&specs);
    cases
}

/// Single files InvokeAI leaves unidentified, each with the hint its evidence must carry.
pub fn parity_unknown(root: &Path) -> Vec<(&'static str, PathBuf, &'static str)> {
    let p = |n: &str| root.join(n);
    let specs = vec![
        Spec::safetensors(p("umt5-xxl-enc.safetensors"), t5_encoder_keys(4096, true)),
        Spec::safetensors(
            p("wan2.1_t2v_1.3B_fp16.safetensors"),
            wan_keys("", 1536, 16, true),
        ),
        Spec::safetensors(p("ltx-2-19b-dev.safetensors"), ltx2_keys(false)),
        zip_spec(p("t2iadapter_canny_sd15v2.pth"), t2i_adapter_keys(), 2, &[]),
    ];
    pyfix::write(&specs);
    vec![
        ("UMT5 encoder file", specs[0].path.clone(), "T5 encoder"),
        ("Wan 2.1 1.3B", specs[1].path.clone(), "Wan-family"),
        ("LTX-2.0 transformer", specs[2].path.clone(), "LTX-2"),
        (
            "single-file T2I-Adapter",
            specs[3].path.clone(),
            "T2I-Adapter",
        ),
    ]
}

/// One parity folder: (name, folder, type, base, format, variant).
pub type ParityFolder = (
    &'static str,
    PathBuf,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// The parity folders.
pub fn parity_folders(root: &Path) -> Vec<ParityFolder> {
    let mut specs = Vec::new();
    let mut out = Vec::new();
    let weights =
        |d: &Path, file: &str| Spec::safetensors(d.join(file), vec![k("model.norm.weight", &[8])]);
    // llava-hf/llava-onevision-qwen2-0.5b-ov-hf
    let d = root.join("llava-onevision-qwen2-0.5b-ov-hf");
    write_json(
        &d.join("config.json"),
        &json!({"architectures": ["LlavaOnevisionForConditionalGeneration"], "model_type": "llava_onevision",
                "image_token_index": 151_646, "vision_feature_layer": -1,
                "text_config": {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24},
                "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 384, "patch_size": 14}}),
    );
    specs.push(weights(&d, "model.safetensors"));
    out.push((
        "LLaVA-OneVision",
        d,
        "llava_onevision",
        "any",
        "diffusers",
        None,
    ));
    // black-forest-labs/FLUX.2-dev::text_encoder+tokenizer
    let d = root.join("flux2-dev-mistral");
    write_json(
        &d.join("text_encoder").join("config.json"),
        &json!({"architectures": ["Mistral3ForConditionalGeneration"], "model_type": "mistral3",
                "text_config": {"model_type": "mistral", "hidden_size": 5120, "num_hidden_layers": 40,
                                "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131_072},
                "vision_config": {"model_type": "pixtral", "hidden_size": 1024}}),
    );
    write_json(
        &d.join("tokenizer").join("tokenizer_config.json"),
        &json!({}),
    );
    specs.push(weights(
        &d.join("text_encoder"),
        "model-00001-of-00010.safetensors",
    ));
    out.push((
        "Mistral3 text_encoder folder",
        d,
        "mistral_encoder",
        "any",
        "mistral_encoder",
        Some("mistral3_24b"),
    ));
    // Qwen/Qwen-Image::text_encoder+tokenizer
    let d = root.join("qwen-image-encoder");
    write_json(
        &d.join("text_encoder").join("config.json"),
        &json!({"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen_2_5_vl",
                "hidden_size": 3584, "num_hidden_layers": 28, "vision_config": {"hidden_size": 1280}}),
    );
    write_json(
        &d.join("tokenizer").join("tokenizer_config.json"),
        &json!({}),
    );
    specs.push(weights(
        &d.join("text_encoder"),
        "model-00001-of-00004.safetensors",
    ));
    out.push((
        "Qwen2.5-VL text_encoder folder",
        d,
        "qwen_vl_encoder",
        "any",
        "qwen_vl_encoder",
        None,
    ));
    // Qwen/Qwen3-VL-4B-Instruct
    let d = root.join("Qwen3-VL-4B-Instruct");
    write_json(
        &d.join("config.json"),
        &json!({"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
                "text_config": {"model_type": "qwen3_vl_text", "hidden_size": 2560, "num_hidden_layers": 36},
                "vision_config": {"model_type": "qwen3_vl", "hidden_size": 1024, "deepstack_visual_indexes": [5, 11, 17]}}),
    );
    write_json(&d.join("tokenizer.json"), &json!({}));
    specs.push(weights(&d, "model.safetensors"));
    out.push((
        "Qwen3-VL 4B folder",
        d,
        "qwen3_vl_encoder",
        "any",
        "qwen3_vl_encoder",
        Some("qwen3_vl_4b"),
    ));
    // Tongyi-MAI/Z-Image-Turbo::text_encoder+tokenizer
    let d = root.join("z-image-qwen3-encoder");
    write_json(
        &d.join("text_encoder").join("config.json"),
        &json!({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 2560,
                "num_hidden_layers": 36, "head_dim": 128}),
    );
    write_json(
        &d.join("tokenizer").join("tokenizer_config.json"),
        &json!({}),
    );
    specs.push(weights(
        &d.join("text_encoder"),
        "model-00001-of-00003.safetensors",
    ));
    out.push((
        "Qwen3 text_encoder folder",
        d,
        "qwen3_encoder",
        "any",
        "qwen3_encoder",
        Some("qwen3_4b"),
    ));
    // Efficient-Large-Model/gemma-2-2b-it (PiD's caption encoder)
    let d = root.join("gemma-2-2b-it");
    write_json(
        &d.join("config.json"),
        &json!({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 2304,
                "num_hidden_layers": 26, "vocab_size": 256_000}),
    );
    write_json(&d.join("tokenizer.json"), &json!({}));
    specs.push(weights(&d, "model-00001-of-00002.safetensors"));
    out.push((
        "Gemma-2-2B",
        d,
        "gemma2_encoder",
        "any",
        "gemma2_encoder",
        None,
    ));
    // DeepBeepMeep/LTX-2::gemma4-12b-ltx-v1
    let d = root.join("gemma4-12b-ltx-v1");
    write_json(
        &d.join("config.json"),
        &json!({"architectures": ["Gemma4UnifiedForCausalLM"], "model_type": "gemma4_unified_text",
                "hidden_size": 3840, "num_hidden_layers": 48}),
    );
    write_json(&d.join("tokenizer.json"), &json!({}));
    specs.push(weights(&d, "gemma4-12b-ltx-v1_bf16.safetensors"));
    out.push((
        "LTX-2.5 Gemma-4 encoder",
        d,
        "gemma4_encoder",
        "ltx-2",
        "gemma4_encoder",
        None,
    ));
    // meta-llama/Llama-3.2-1B-Instruct
    let d = root.join("Llama-3.2-1B-Instruct");
    write_json(
        &d.join("config.json"),
        &json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                "num_hidden_layers": 16, "vocab_size": 128_256}),
    );
    write_json(&d.join("tokenizer_config.json"), &json!({}));
    specs.push(weights(&d, "model.safetensors"));
    out.push(("Llama text LLM", d, "text_llm", "any", "diffusers", None));
    // Wan-AI/Wan2.2-TI2V-5B-Diffusers::text_encoder+tokenizer
    let d = root.join("wan-umt5-xxl");
    write_json(
        &d.join("text_encoder").join("config.json"),
        &json!({"architectures": ["UMT5EncoderModel"], "model_type": "umt5", "d_model": 4096,
                "num_layers": 24, "vocab_size": 256_384}),
    );
    write_json(
        &d.join("tokenizer").join("tokenizer_config.json"),
        &json!({}),
    );
    specs.push(weights(
        &d.join("text_encoder"),
        "model-00001-of-00002.safetensors",
    ));
    out.push((
        "UMT5 text_encoder folder",
        d,
        "wan_t5_encoder",
        "any",
        "wan_t5_encoder",
        None,
    ));
    // Wan pipelines
    for (name, dir, z_dim, experts, in_ch, variant) in [
        (
            "Wan 2.2 TI2V-5B pipeline",
            "Wan2.2-TI2V-5B-Diffusers",
            48,
            false,
            48,
            "ti2v_5b",
        ),
        (
            "Wan 2.2 T2V-A14B pipeline",
            "Wan2.2-T2V-A14B-Diffusers",
            16,
            true,
            16,
            "t2v_a14b",
        ),
        (
            "Wan 2.2 I2V-A14B pipeline",
            "Wan2.2-I2V-A14B-Diffusers",
            16,
            true,
            36,
            "i2v_a14b",
        ),
    ] {
        let d = root.join(dir);
        let class = if in_ch == 36 {
            "WanImageToVideoPipeline"
        } else {
            "WanPipeline"
        };
        let t2 = if experts {
            json!(["diffusers", "WanTransformer3DModel"])
        } else {
            json!([null, null])
        };
        write_json(
            &d.join("model_index.json"),
            &json!({"_class_name": class, "_diffusers_version": "0.35.0.dev0",
                    "boundary_ratio": if experts { json!(0.875) } else { Value::Null },
                    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
                    "text_encoder": ["transformers", "UMT5EncoderModel"],
                    "tokenizer": ["transformers", "T5TokenizerFast"],
                    "transformer": ["diffusers", "WanTransformer3DModel"],
                    "transformer_2": t2,
                    "vae": ["diffusers", "AutoencoderKLWan"]}),
        );
        write_json(
            &d.join("transformer").join("config.json"),
            &json!({"_class_name": "WanTransformer3DModel", "in_channels": in_ch, "out_channels": z_dim,
                    "num_attention_heads": if experts { 40 } else { 24 }, "attention_head_dim": 128}),
        );
        if experts {
            write_json(
                &d.join("transformer_2").join("config.json"),
                &json!({"_class_name": "WanTransformer3DModel", "in_channels": in_ch}),
            );
        }
        write_json(
            &d.join("vae").join("config.json"),
            &json!({"_class_name": "AutoencoderKLWan", "z_dim": z_dim}),
        );
        write_json(
            &d.join("scheduler").join("scheduler_config.json"),
            &json!({"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction",
                    "use_flow_sigmas": true, "flow_shift": 5.0}),
        );
        specs.push(weights(
            &d.join("transformer"),
            "diffusion_pytorch_model.safetensors",
        ));
        out.push((name, d, "main", "wan", "diffusers", Some(variant)));
    }
    // Pipelines named by class.
    for (name, dir, class, base, variant) in [
        (
            "Ideogram 4 pipeline",
            "ideogram-4-nf4",
            "Ideogram4Pipeline",
            "ideogram-4",
            None,
        ),
        (
            "ERNIE-Image pipeline",
            "ERNIE-Image",
            "ErnieImagePipeline",
            "ernie-image",
            None,
        ),
        (
            "Qwen-Image-Edit pipeline",
            "Qwen-Image-Edit-2509",
            "QwenImageEditPlusPipeline",
            "qwen-image",
            Some("edit"),
        ),
    ] {
        let d = root.join(dir);
        write_json(
            &d.join("model_index.json"),
            &json!({"_class_name": class, "_diffusers_version": "0.36.0.dev0",
                    "transformer": ["diffusers", "SomeTransformer"], "vae": ["diffusers", "AutoencoderKL"]}),
        );
        specs.push(weights(
            &d.join("transformer"),
            "diffusion_pytorch_model.safetensors",
        ));
        out.push((name, d, "main", base, "diffusers", variant));
    }
    // InvokeAI/t5-v1_1-xxl: the unquantised and the bnb_llm_int8 layouts (text_encoder_2/ +
    // tokenizer_2/).
    for (name, dir, file, format) in [
        (
            "T5 folder",
            "t5-v1_1-xxl",
            "model-00001-of-00002.safetensors",
            "t5_encoder",
        ),
        (
            "T5 LLM.int8 folder",
            "t5-v1_1-xxl-bnb_llm_int8",
            "bnb_llm_int8_model.safetensors",
            "bnb_quantized_int8b",
        ),
    ] {
        let d = root.join(dir);
        write_json(
            &d.join("text_encoder_2").join("config.json"),
            &json!({"architectures": ["T5EncoderModel"], "model_type": "t5", "d_model": 4096,
                    "feed_forward_proj": "gated-gelu", "num_layers": 24}),
        );
        write_json(
            &d.join("tokenizer_2").join("tokenizer_config.json"),
            &json!({}),
        );
        let mut keys = t5_encoder_keys(4096, false);
        if format == "bnb_quantized_int8b" {
            keys.push(k("encoder.block.0.layer.0.SelfAttention.q.SCB", &[8]));
        }
        specs.push(Spec::safetensors(d.join("text_encoder_2").join(file), keys));
        out.push((name, d, "t5_encoder", "any", format, None));
    }
    // SDNQ pipelines (Disty0's exports): the marker file, the marker inside config.json, and
    // none at all (the weight/scale pair split across two shards).
    let flux_index = json!({"_class_name": "FluxPipeline", "_diffusers_version": "0.35.1",
        "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]});
    let sdnq_marker = json!({"quant_method": "sdnq", "weights_dtype": "int8", "group_size": 0,
        "use_svd": false, "quant_conv": false});
    let d = root.join("FLUX.1-dev-SDNQ-int8");
    write_json(&d.join("model_index.json"), &flux_index);
    write_json(
        &d.join("transformer").join("config.json"),
        &json!({"_class_name": "FluxTransformer2DModel", "guidance_embeds": true, "in_channels": 64,
                "num_layers": 19, "num_single_layers": 38}),
    );
    write_json(
        &d.join("transformer").join("quantization_config.json"),
        &sdnq_marker,
    );
    specs.push(sdnq_spec(
        d.join("transformer")
            .join("diffusion_pytorch_model.safetensors"),
        vec![
            k("x_embedder.weight", &[3072, 64]),
            k("transformer_blocks.0.attn.to_q.weight", &[32, 32]),
            k("proj_out.weight", &[64, 32]),
        ],
    ));
    out.push((
        "FLUX.1 SDNQ pipeline (quantization_config.json)",
        d,
        "main",
        "flux",
        "sdnq_quantized",
        Some("dev"),
    ));
    // Another method's quantization_config and weights without SDNQ scales: plain diffusers.
    let d = root.join("FLUX.1-dev-bnb-nf4");
    write_json(&d.join("model_index.json"), &flux_index);
    write_json(
        &d.join("transformer").join("config.json"),
        &json!({"_class_name": "FluxTransformer2DModel", "guidance_embeds": true, "in_channels": 64,
                "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true}}),
    );
    specs.push(Spec::safetensors(
        d.join("transformer")
            .join("diffusion_pytorch_model.safetensors"),
        vec![
            k("x_embedder.weight", &[3072, 64]),
            k("transformer_blocks.0.attn.norm_q.weight", &[128]),
        ],
    ));
    out.push((
        "FLUX.1 pipeline quantized another way",
        d,
        "main",
        "flux",
        "diffusers",
        Some("dev"),
    ));
    let d = root.join("FLUX.2-klein-4B-SDNQ-uint4");
    write_json(
        &d.join("model_index.json"),
        &json!({"_class_name": "Flux2KleinPipeline", "_diffusers_version": "0.36.0",
                "transformer": ["diffusers", "Flux2Transformer2DModel"], "vae": ["diffusers", "AutoencoderKLFlux2"]}),
    );
    write_json(
        &d.join("transformer").join("config.json"),
        &json!({"_class_name": "Flux2Transformer2DModel", "in_channels": 128, "joint_attention_dim": 7680,
                "quantization_config": {"quant_method": "sdnq", "weights_dtype": "uint4"}}),
    );
    specs.push(weights(
        &d.join("transformer"),
        "diffusion_pytorch_model.safetensors",
    ));
    out.push((
        "FLUX.2 SDNQ pipeline (quantization_config in config.json)",
        d,
        "main",
        "flux2",
        "sdnq_quantized",
        None,
    ));
    for (name, dir, class, base, format, variant) in [
        (
            "Z-Image SDNQ pipeline (sharded, no marker)",
            "Z-Image-Turbo-SDNQ-int8",
            "ZImagePipeline",
            "z-image",
            "sdnq_quantized",
            Some("turbo"),
        ),
        (
            "Qwen-Image SDNQ pipeline (no InvokeAI class)",
            "Qwen-Image-SDNQ-int8",
            "QwenImagePipeline",
            "unknown",
            "sdnq_quantized",
            None,
        ),
    ] {
        let d = root.join(dir);
        let transformer = format!("{}Transformer2DModel", class.trim_end_matches("Pipeline"));
        write_json(
            &d.join("model_index.json"),
            &json!({"_class_name": class, "_diffusers_version": "0.36.0",
                    "transformer": ["diffusers", transformer], "vae": ["diffusers", "AutoencoderKL"]}),
        );
        write_json(
            &d.join("transformer").join("config.json"),
            &json!({"_class_name": transformer}),
        );
        write_json(
            &d.join("scheduler").join("scheduler_config.json"),
            &json!({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}),
        );
        let mut tensors = sdnq_int8(vec![k("layers.0.attention.to_q.weight", &[32, 32])]);
        let scale = tensors.remove(0);
        specs.push(Spec {
            path: d
                .join("transformer")
                .join("diffusion_pytorch_model-00001-of-00002.safetensors"),
            kind: Kind::Safetensors(None),
            tensors,
        });
        specs.push(Spec {
            path: d
                .join("transformer")
                .join("diffusion_pytorch_model-00002-of-00002.safetensors"),
            kind: Kind::Safetensors(None),
            tensors: vec![scale],
        });
        out.push((
            name,
            d,
            if base == "unknown" { "unknown" } else { "main" },
            base,
            format,
            variant,
        ));
    }
    // An SDNQ T5 encoder (text_encoder_2/ + tokenizer_2/, InvokeAI's layout) and an SDNQ Qwen3
    // text encoder (text_encoder/ + tokenizer/, no marker).
    let d = root.join("t5-v1_1-xxl-SDNQ-int8");
    write_json(
        &d.join("text_encoder_2").join("config.json"),
        &json!({"architectures": ["T5EncoderModel"], "model_type": "t5", "d_model": 4096, "num_layers": 24}),
    );
    write_json(
        &d.join("text_encoder_2").join("quantization_config.json"),
        &sdnq_marker,
    );
    write_json(
        &d.join("tokenizer_2").join("tokenizer_config.json"),
        &json!({}),
    );
    specs.push(sdnq_spec(
        d.join("text_encoder_2").join("model.safetensors"),
        vec![k(
            "encoder.block.0.layer.0.SelfAttention.q.weight",
            &[32, 32],
        )],
    ));
    out.push((
        "T5 SDNQ folder",
        d,
        "t5_encoder",
        "any",
        "sdnq_quantized",
        None,
    ));
    let d = root.join("z-image-qwen3-encoder-SDNQ");
    write_json(
        &d.join("text_encoder").join("config.json"),
        &json!({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 2560,
                "num_hidden_layers": 36, "head_dim": 128}),
    );
    write_json(
        &d.join("tokenizer").join("tokenizer_config.json"),
        &json!({}),
    );
    specs.push(sdnq_spec(
        d.join("text_encoder").join("model.safetensors"),
        vec![k("model.layers.0.self_attn.q_proj.weight", &[32, 32])],
    ));
    out.push((
        "Qwen3 SDNQ text_encoder folder",
        d,
        "qwen3_encoder",
        "any",
        "sdnq_quantized",
        Some("qwen3_4b"),
    ));
    // MiniMaxAI/MiniMax-H3 (Modular Diffusers layout)
    let d = root.join("MiniMax-H3");
    write_json(
        &d.join("modular_model_index.json"),
        &json!({"_class_name": "MiniMaxH3ModularPipeline", "_diffusers_version": "0.36.0.dev0"}),
    );
    write_json(
        &d.join("audio_vae").join("config.json"),
        &json!({"_class_name": "AutoencoderKLMiniMaxH3Audio"}),
    );
    write_json(
        &d.join("transformer").join("config.json"),
        &json!({"_class_name": "MiniMaxH3Transformer3DModel"}),
    );
    specs.push(weights(
        &d.join("transformer"),
        "diffusion_pytorch_model.safetensors",
    ));
    out.push((
        "MiniMax H3 modular pipeline",
        d,
        "main",
        "minimax-h3",
        "diffusers",
        Some("fl2va"),
    ));
    pyfix::write(&specs);
    out
}
