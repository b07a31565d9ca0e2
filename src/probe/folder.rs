//! Identification of folders: diffusers pipelines and components, embedding, LoRA and
//! IP-Adapter folders. Only JSON configs and file names are read, plus the header of one
//! weight file where the base is decided by widths (embedding and LoRA folders) and the
//! safetensors headers of a denoiser or encoder folder that has no SDNQ marker file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::{Finding, ProbeError, probe_weight_file, safetensors};
use crate::config::SubmodelDefinition;
use crate::taxonomy::{
    BaseModelType as B, ClipVariantType, FluxVariantType, Krea2VariantType, MiniMaxH3VariantType,
    MistralVariantType, ModelFormat as F, ModelRepoVariant as RV, ModelType as T,
    ModelVariantType as V, Qwen3VariantType, Qwen3VlVariantType, QwenImageVariantType,
    SchedulerPredictionType as P, SubModelType as S, WanVariantType, ZImageVariantType,
};

fn read_json(path: &Path) -> Result<Option<serde_json::Map<String, Value>>, ProbeError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ProbeError::io(path)(e)),
    };
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(ProbeError::Config {
            path: path.to_path_buf(),
            reason: "not a JSON object".into(),
        }),
        Err(e) => Err(ProbeError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn u(cfg: &serde_json::Map<String, Value>, key: &str) -> Option<u64> {
    match cfg.get(key)? {
        Value::Number(n) => n.as_u64(),
        // Some configs give a per-block list; the first entry is representative.
        Value::Array(a) => a.first().and_then(Value::as_u64),
        _ => None,
    }
}

fn f64_of(cfg: &serde_json::Map<String, Value>, key: &str) -> Option<f64> {
    cfg.get(key).and_then(Value::as_f64)
}

/// The class a config names: diffusers' `_class_name` or transformers' `architectures[0]`.
fn class_name(cfg: &serde_json::Map<String, Value>) -> Option<String> {
    cfg.get("_class_name")
        .and_then(Value::as_str)
        .or_else(|| {
            cfg.get("architectures")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
        })
        .map(str::to_owned)
}

fn base_from_context(width: u64) -> Option<B> {
    match width {
        768 => Some(B::StableDiffusion1),
        1024 => Some(B::StableDiffusion2),
        2048 => Some(B::StableDiffusionXL),
        1280 => Some(B::StableDiffusionXLRefiner),
        _ => None,
    }
}

/// Identifies a folder; `Ok(None)` when nothing in it is recognised.
pub(crate) fn probe_folder(dir: &Path) -> Result<Finding, ProbeError> {
    if let Some(index) = read_json(&dir.join("model_index.json"))? {
        return pipeline(dir, &index);
    }
    if let Some(index) = read_json(&dir.join("modular_model_index.json"))? {
        return modular_pipeline(dir, &index);
    }
    // A text encoder downloaded with its pipeline's layout (`text_encoder/` beside
    // `tokenizer/`), without the pipeline: InvokeAI's standalone encoder classes.
    if !dir.join("transformer").exists()
        && let Some(cfg) = read_json(&dir.join("text_encoder").join("config.json"))?
        && let Some(f) = text_encoder(dir, &cfg, "text_encoder/config.json")
    {
        return Ok(f);
    }
    if let Some(cfg) = read_json(&dir.join("config.json"))?
        && let Some(class) = class_name(&cfg)
    {
        if let Some(f) = text_encoder(dir, &cfg, "config.json") {
            return Ok(f);
        }
        return Ok(component(dir, &class, &cfg));
    }
    if let Some(cfg) = read_json(&dir.join("config.json"))?
        && cfg.get("model_type").and_then(Value::as_str) == Some("umt5")
    {
        let mut f = Finding::new(T::WanT5Encoder, B::Any, F::WanT5Encoder);
        f.evidence
            .push("config.json model_type `umt5`: Wan's UMT5-XXL → wan_t5_encoder".into());
        return Ok(f);
    }
    for name in ["learned_embeds.safetensors", "learned_embeds.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            let mut f = probe_weight_file(&p)?;
            f.model_type = T::TextualInversion;
            f.format = F::EmbeddingFolder;
            f.strong = true;
            f.evidence
                .insert(0, format!("file `{name}`: embedding folder"));
            return Ok(f);
        }
    }
    for name in [
        "pytorch_lora_weights.safetensors",
        "pytorch_lora_weights.bin",
    ] {
        let p = dir.join(name);
        if p.is_file() {
            let mut f = probe_weight_file(&p)?;
            f.evidence
                .insert(0, format!("file `{name}`: diffusers LoRA folder"));
            f.model_type = T::Lora;
            f.format = F::Diffusers;
            f.strong = true;
            return Ok(f);
        }
    }
    for name in [
        "ip_adapter.safetensors",
        "ip_adapter.bin",
        "ip-adapter.safetensors",
        "ip-adapter.bin",
    ] {
        let p = dir.join(name);
        if p.is_file() {
            let mut f = probe_weight_file(&p)?;
            f.evidence
                .insert(0, format!("file `{name}`: IP-Adapter folder"));
            if let Ok(enc) = std::fs::read_to_string(dir.join("image_encoder.txt")) {
                f.evidence
                    .push(format!("image_encoder.txt names `{}`", enc.trim()));
            }
            f.model_type = T::IpAdapter;
            f.format = F::InvokeAI;
            f.strong = true;
            return Ok(f);
        }
    }
    // InvokeAI's T5 encoder layout: text_encoder_2/ + tokenizer_2/.
    if let Some(cfg) = read_json(&dir.join("text_encoder_2").join("config.json"))?
        && class_name(&cfg).as_deref() == Some("T5EncoderModel")
    {
        let mut f = Finding::new(T::T5Encoder, B::Any, F::T5Encoder);
        f.evidence
            .push("text_encoder_2/config.json: T5EncoderModel → t5_encoder".into());
        // InvokeAI's LLM.int8 class: a weight file named `*llm_int8*` (it also wants the `SCB`
        // scale keys inside, which only bitsandbytes writes; the name is what its own
        // quantised uploads carry and what is checked here).
        if let Some(n) = std::fs::read_dir(dir.join("text_encoder_2"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.contains("llm_int8"))
        {
            f.format = F::BnbQuantizedInt8b;
            f.evidence.push(format!(
                "text_encoder_2/{n}: bitsandbytes LLM.int8 → bnb_quantized_int8b"
            ));
        } else if let Some(why) = sdnq_folder(&dir.join("text_encoder_2"), "text_encoder_2") {
            // InvokeAI's `T5Encoder_SDNQ_Config`.
            f.format = F::SdnqQuantized;
            f.evidence.push(format!("{why} → sdnq_quantized"));
        }
        return Ok(f);
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(ProbeError::io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut f = Finding::unknown(F::Unknown);
    f.evidence.push(format!(
        "folder without model_index.json, config.json with a class name, learned_embeds.*, pytorch_lora_weights.* or ip_adapter.*; it holds: {}",
        if names.is_empty() { "nothing".to_owned() } else { names.into_iter().take(20).collect::<Vec<_>>().join(", ") }
    ));
    Ok(f)
}

/// The file variant from weight file names (`*.fp16.safetensors` …) anywhere under `dir`:
/// fp16 as soon as any weight file carries `.fp16.` (a repo that ships both keeps unlabelled
/// fp32 weights beside the fp16 ones, and InvokeAI records such a download as fp16), else the
/// one tag all files share, else the default.
fn repo_variant(dir: &Path) -> Option<RV> {
    let mut tags = Vec::new();
    collect_variant_tags(dir, 0, &mut tags);
    if tags.is_empty() {
        return None;
    }
    if tags.contains(&RV::Fp16) {
        return Some(RV::Fp16);
    }
    let first = tags[0];
    Some(if tags.iter().all(|t| *t == first) {
        first
    } else {
        RV::Default
    })
}

fn collect_variant_tags(dir: &Path, depth: u8, out: &mut Vec<RV>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            if depth < 2 {
                collect_variant_tags(&p, depth + 1, out);
            }
            continue;
        }
        let tag = file_variant(&name);
        if let Some(t) = tag {
            out.push(t);
        }
    }
}

/// The repo variant a weight file name carries: `model.fp16.safetensors` → fp16,
/// `model.fp16-00001-of-00002.safetensors` → fp16, `model.safetensors` → default.
fn file_variant(name: &str) -> Option<RV> {
    let p = Path::new(name);
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if name == "flax_model.msgpack" || name == "diffusion_flax_model.msgpack" {
        return Some(RV::Flax);
    }
    if name.starts_with("openvino_model") {
        return Some(RV::OpenVino);
    }
    match ext.as_str() {
        "onnx" => return Some(RV::Onnx),
        "safetensors" | "bin" => {}
        _ => return None,
    }
    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    // The variant is the stem's last dot-separated part, before any shard suffix.
    let tag = stem
        .rsplit_once('.')
        .map(|(_, t)| t.split('-').next().unwrap_or(t))
        .unwrap_or_default();
    Some(match tag {
        "fp16" => RV::Fp16,
        "fp32" => RV::Fp32,
        _ => RV::Default,
    })
}

fn submodel_type(name: &str) -> Option<S> {
    name.parse::<S>().ok()
}

fn pipeline(dir: &Path, index: &serde_json::Map<String, Value>) -> Result<Finding, ProbeError> {
    let class = index
        .get("_class_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut f = Finding::new(T::Main, B::Unknown, F::Diffusers);
    f.evidence.push(format!(
        "model_index.json: pipeline `{class}` → main diffusers"
    ));
    let is = |p: &str| class.starts_with(p);
    // Pipelines whose class names the base (InvokeAI's `raise_for_class_name` sets).
    let named = if is("Flux2") {
        Some(B::Flux2)
    } else if is("Flux") {
        Some(B::Flux)
    } else if is("StableDiffusion3") {
        Some(B::StableDiffusion3)
    } else if is("ZImage") {
        Some(B::ZImage)
    } else if is("QwenImage") {
        Some(B::QwenImage)
    } else if is("Krea2") {
        Some(B::Krea2)
    } else if is("CogView4") {
        Some(B::CogView4)
    } else if is("Wan") {
        Some(B::Wan)
    } else if is("Ideogram4") {
        Some(B::Ideogram4)
    } else if is("ErnieImage") {
        Some(B::ErnieImage)
    } else {
        None
    };
    if let Some(b) = named {
        f.base = b;
        f.evidence.push(format!("`{class}` → {b}"));
    }
    // The denoiser's config decides the SD family and the variant.
    for comp in ["unet", "transformer"] {
        let Some(cfg) = read_json(&dir.join(comp).join("config.json"))? else {
            continue;
        };
        if f.base == B::Unknown
            && let Some(w) = u(&cfg, "cross_attention_dim")
        {
            {
                if let Some(b) = base_from_context(w) {
                    f.base = b;
                    f.evidence
                        .push(format!("{comp}/config.json cross_attention_dim {w} → {b}"));
                } else {
                    f.evidence.push(format!(
                        "{comp}/config.json cross_attention_dim {w} matches no known base"
                    ));
                }
            }
        }
        let sd_family = matches!(
            f.base,
            B::Unknown
                | B::StableDiffusion1
                | B::StableDiffusion2
                | B::StableDiffusionXL
                | B::StableDiffusionXLRefiner
                | B::Flux
                | B::StableDiffusion3
        );
        if let Some(c) = u(&cfg, "in_channels").filter(|_| sd_family) {
            let v = match (f.base, c) {
                (B::Flux, 384) => V::Inpaint,
                (B::Flux | B::StableDiffusion3, _) => V::Normal,
                (_, 9) => V::Inpaint,
                (_, 5) => V::Depth,
                _ => V::Normal,
            };
            f.evidence
                .push(format!("{comp}/config.json in_channels {c} → {v}"));
            f.variant = Some(v.into());
        }
        if let Some(up) = cfg.get("upcast_attention").and_then(Value::as_bool) {
            f.upcast_attention = up;
        }
        if f.base == B::Flux {
            let guidance = cfg.get("guidance_embeds").and_then(Value::as_bool);
            f.variant = Some(flux_variant(u(&cfg, "in_channels"), guidance).into());
            if let Some(g) = guidance {
                f.evidence.push(format!(
                    "transformer guidance_embeds {g} → flux {}",
                    if g { "dev" } else { "schnell" }
                ));
            }
        }
    }
    if class.contains("Inpaint") && f.variant != Some(V::Inpaint.into()) && f.base != B::Flux {
        f.evidence
            .push(format!("`{class}` is an inpainting pipeline"));
    }
    if class.contains("Depth2Img") {
        f.variant = Some(V::Depth.into());
        f.evidence.push(format!("`{class}` → depth"));
    }
    let sched = read_json(&dir.join("scheduler").join("scheduler_config.json"))?;
    match f.base {
        B::ZImage => {
            // InvokeAI: the undistilled base runs with shift 6, Turbo with 3 (the default).
            let shift = sched
                .as_ref()
                .and_then(|s| f64_of(s, "shift"))
                .unwrap_or(3.0);
            let v = if shift >= 5.0 {
                ZImageVariantType::ZBase
            } else {
                ZImageVariantType::Turbo
            };
            f.evidence.push(format!("scheduler shift {shift} → {v}"));
            f.variant = Some(v.into());
        }
        B::Krea2 => {
            let distilled = index.get("is_distilled").and_then(Value::as_bool) == Some(true);
            let v = if distilled {
                Krea2VariantType::Turbo
            } else {
                Krea2VariantType::Base
            };
            f.evidence
                .push(format!("model_index.json is_distilled {distilled} → {v}"));
            f.variant = Some(v.into());
        }
        B::Wan => {
            let v = wan_variant(dir)?;
            f.evidence.push(format!("{} → {v}", v_reason(dir)));
            f.variant = Some(v.into());
        }
        B::QwenImage => {
            // InvokeAI: the pipeline class says edit (`QwenImageEditPipeline`, `…EditPlus…`).
            let v = if class.contains("Edit") {
                QwenImageVariantType::Edit
            } else {
                QwenImageVariantType::Generate
            };
            f.evidence.push(format!("`{class}` → {v}"));
            f.variant = Some(v.into());
        }
        B::Flux2 | B::CogView4 | B::Anima | B::Ideogram4 | B::ErnieImage => {}
        _ if f.variant.is_none() => f.variant = Some(V::Normal.into()),
        _ => {}
    }
    if f.base == B::Unknown {
        f.evidence.push(
            "no unet/transformer config with a known cross_attention_dim: base not determinable"
                .into(),
        );
    }
    if let Some(s) = sched {
        match s.get("prediction_type").and_then(Value::as_str) {
            Some(p) => match p.parse::<P>() {
                Ok(p) => {
                    f.prediction_type = Some(p);
                    f.evidence.push(format!("scheduler prediction_type `{p}`"));
                }
                // Flow-matching schedulers (Wan's `flow_prediction`) name no SD prediction type.
                Err(_) if p.starts_with("flow") => f.evidence.push(format!(
                    "scheduler prediction_type `{p}`: flow matching, not recorded"
                )),
                Err(e) => f.evidence.push(format!("scheduler: {e}")),
            },
            None if matches!(
                f.base,
                B::Unknown
                    | B::StableDiffusion1
                    | B::StableDiffusion2
                    | B::StableDiffusionXL
                    | B::StableDiffusionXLRefiner
            ) =>
            {
                f.prediction_type = Some(P::Epsilon);
            }
            None => {}
        }
    }
    let mut subs = BTreeMap::new();
    for (name, v) in index {
        let Some(arr) = v.as_array() else { continue };
        let cls = arr.get(1).and_then(Value::as_str);
        let (Some(st), Some(cls)) = (submodel_type(name), cls) else {
            continue;
        };
        let model_type = match st {
            S::UNet | S::Transformer | S::Transformer2 => T::Main,
            S::Vae | S::VaeDecoder | S::VaeEncoder | S::AudioVae => T::Vae,
            S::TextEncoder
            | S::TextEncoder2
            | S::TextEncoder3
            | S::Tokenizer
            | S::Tokenizer2
            | S::Tokenizer3 => {
                if cls.starts_with("UMT5") {
                    T::WanT5Encoder
                } else if cls.starts_with("T5") {
                    T::T5Encoder
                } else if cls.starts_with("Qwen2_5_VL") || cls.starts_with("Qwen2VL") {
                    T::QwenVlEncoder
                } else if cls.starts_with("Qwen3VL") {
                    T::Qwen3VlEncoder
                } else if cls.starts_with("Qwen") {
                    T::Qwen3Encoder
                } else if cls.starts_with("Mistral") || cls.starts_with("Pixtral") {
                    T::MistralEncoder
                } else {
                    T::ClipEmbed
                }
            }
            S::Scheduler
            | S::SafetyChecker
            | S::Processor
            | S::PromptEnhancer
            | S::PromptEnhancerTokenizer
            | S::Vocoder
            | S::Connectors
            | S::LatentUpsampler
            | S::TemporalLatentUpsampler => T::Unknown,
        };
        subs.insert(
            st,
            SubmodelDefinition {
                path_or_prefix: name.clone(),
                model_type,
                variant: matches!(st, S::UNet | S::Transformer)
                    .then_some(f.variant.unwrap_or(V::Normal.into())),
            },
        );
    }
    if !subs.is_empty() {
        f.submodels = Some(subs);
    }
    f.repo_variant = repo_variant(dir);
    if let Some(rv) = f.repo_variant {
        f.evidence
            .push(format!("weight file names → repo variant `{rv}`"));
    }
    // An SDNQ-quantized denoiser makes the pipeline InvokeAI's `Main_SDNQ_Diffusers_*`. It has
    // those classes for FLUX.1, FLUX.2 and Z-Image only; any other SDNQ pipeline would load as
    // plain diffusers over packed weights, so it is left unknown rather than recorded so.
    for comp in ["transformer", "unet"] {
        let Some(why) = sdnq_folder(&dir.join(comp), comp) else {
            continue;
        };
        f.evidence.push(why);
        if matches!(f.base, B::Flux | B::Flux2 | B::ZImage) {
            f.format = F::SdnqQuantized;
            f.evidence
                .push(format!("SDNQ {} pipeline → main sdnq_quantized", f.base));
        } else {
            f.evidence.push(format!(
                "InvokeAI 6.x has SDNQ pipeline classes for flux, flux2 and z-image only, not for {}: unknown (config: {{type, base}} records it)",
                f.base
            ));
            let mut u = Finding::unknown(F::SdnqQuantized);
            u.evidence = std::mem::take(&mut f.evidence);
            return Ok(u);
        }
        break;
    }
    Ok(f)
}

/// At most this many safetensors shards of one folder are read for SDNQ's key pairs.
const MAX_SDNQ_SHARDS: usize = 256;

/// Whether the weights directly in `dir` are SDNQ-quantized, as InvokeAI's `is_sdnq_folder`
/// decides: a `quantization_config.json` whose `quant_method` is `sdnq` (also accepted inside
/// `config.json` as `quantization_config`, where diffusers' and transformers' `save_pretrained`
/// write it), else a `<name>.weight` beside a `<name>.scale` in the union of the folder's
/// safetensors headers (sharding often puts a weight and its scale in different files; a
/// header that cannot be read adds nothing, as in InvokeAI). `Some(why)` when it is.
fn sdnq_folder(dir: &Path, label: &str) -> Option<String> {
    if !dir.is_dir() {
        return None;
    }
    let names_sdnq = |m: &serde_json::Map<String, Value>| {
        m.get("quant_method").and_then(Value::as_str) == Some("sdnq")
    };
    if read_json(&dir.join("quantization_config.json"))
        .ok()
        .flatten()
        .is_some_and(|m| names_sdnq(&m))
    {
        return Some(format!(
            "{label}/quantization_config.json: quant_method `sdnq`"
        ));
    }
    if read_json(&dir.join("config.json"))
        .ok()
        .flatten()
        .and_then(|c| {
            c.get("quantization_config")
                .and_then(Value::as_object)
                .cloned()
        })
        .is_some_and(|m| names_sdnq(&m))
    {
        return Some(format!(
            "{label}/config.json: quantization_config.quant_method `sdnq`"
        ));
    }
    let mut shards: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.is_file())
        .collect();
    shards.sort();
    let mut names = BTreeSet::new();
    for p in shards.iter().take(MAX_SDNQ_SHARDS) {
        names.extend(safetensors_names(p).unwrap_or_default());
    }
    let scale = names.iter().find(|k| {
        k.strip_suffix(".scale")
            .is_some_and(|m| names.contains(&format!("{m}.weight")))
    })?;
    Some(format!(
        "{label}/*.safetensors: SDNQ scale `{scale}` beside its `.weight`"
    ))
}

/// The tensor names in a safetensors file's header.
fn safetensors_names(path: &Path) -> Result<Vec<String>, ProbeError> {
    let mut file = std::fs::File::open(path).map_err(ProbeError::io(path))?;
    let len = file.metadata().map_err(ProbeError::io(path))?.len();
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(ProbeError::io(path))? {
            0 => break,
            k => n += k,
        }
    }
    let buf = safetensors::read_header(path, &mut file, &head[..n], len)?;
    let sd = safetensors::parse_header_json(path, &buf, len)?;
    Ok(sd.tensors.keys().map(str::to_owned).collect())
}

/// Whether a name says SDXL: InvokeAI's `/xl\b/i` (`sdxl-vae`, `taesdxl`, `taesdxl-fp16`).
fn name_says_xl(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.match_indices("xl").any(|(i, _)| {
        l[i + 2..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

/// A diffusers VAE's base. InvokeAI's order: the config (`scaling_factor` 0.13025 with
/// `sample_size` 512 or 1024 is Stability's SDXL VAE), then the folder name (`/xl\b/`), then
/// sd-1. Before that, what InvokeAI has no diffusers class for but the config says plainly:
/// 16 latent channels (FLUX.1, or SD3 by its scaling factor) and the tiny autoencoders of
/// other families by their repo names.
fn vae_base(dir: &Path, class: &str, cfg: &serde_json::Map<String, Value>, f: &mut Finding) {
    let latent = u(cfg, "latent_channels");
    let scaling = f64_of(cfg, "scaling_factor");
    let sample = u(cfg, "sample_size");
    let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-6);
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let decided = if class == "AutoencoderTiny" && folder.starts_with("taesd3") {
        Some((B::StableDiffusion3, format!("folder name `{folder}`")))
    } else if class == "AutoencoderTiny" && folder.starts_with("taef1") {
        Some((B::Flux, format!("folder name `{folder}`")))
    } else if latent == Some(16) {
        if near(scaling, 1.5305) {
            Some((
                B::StableDiffusion3,
                "16 latent channels, scaling_factor 1.5305".to_owned(),
            ))
        } else {
            Some((
                B::Flux,
                format!(
                    "16 latent channels, scaling_factor {}",
                    scaling.unwrap_or(f64::NAN)
                ),
            ))
        }
    } else if near(scaling, 0.13025) && matches!(sample, Some(512 | 1024)) {
        Some((
            B::StableDiffusionXL,
            format!(
                "scaling_factor 0.13025, sample_size {}",
                sample.unwrap_or(0)
            ),
        ))
    } else if name_says_xl(&folder) {
        Some((
            B::StableDiffusionXL,
            format!("folder name `{folder}` matches /xl\\b/"),
        ))
    } else {
        None
    };
    if let Some((b, why)) = decided {
        f.base = b;
        f.evidence.push(format!("{why} → {b}"));
    } else {
        // InvokeAI's fallback for a diffusers VAE whose config and name say nothing.
        f.base = B::StableDiffusion1;
        f.base_candidates = vec![B::StableDiffusion1, B::StableDiffusionXL];
        f.evidence.push(format!(
            "config (scaling_factor {}, sample_size {}) and name do not tell sd-1 from sdxl: sd-1 by InvokeAI's fallback; set config.base if it is sdxl",
            scaling.map_or_else(|| "none".to_owned(), |s| s.to_string()),
            sample.map_or_else(|| "none".to_owned(), |s| s.to_string()),
        ));
    }
}

fn component(dir: &Path, class: &str, cfg: &serde_json::Map<String, Value>) -> Finding {
    let mut f = match class {
        "AutoencoderKL" | "AutoencoderTiny" => {
            let mut f = Finding::new(T::Vae, B::Unknown, F::Diffusers);
            f.evidence.push(format!("config.json `{class}` → vae"));
            vae_base(dir, class, cfg, &mut f);
            f
        }
        "UNet2DConditionModel" => {
            let mut f = Finding::new(T::Main, B::Unknown, F::Diffusers);
            f.evidence
                .push("config.json `UNet2DConditionModel`: a bare UNet component → main".into());
            if let Some(w) = u(cfg, "cross_attention_dim")
                && let Some(b) = base_from_context(w)
            {
                f.base = b;
                f.evidence.push(format!("cross_attention_dim {w} → {b}"));
            }
            let v = match u(cfg, "in_channels") {
                Some(9) => V::Inpaint,
                Some(5) => V::Depth,
                _ => V::Normal,
            };
            f.variant = Some(v.into());
            f.upcast_attention = cfg
                .get("upcast_attention")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            f
        }
        "FluxTransformer2DModel" | "SD3Transformer2DModel" => {
            let b = if class.starts_with("Flux") {
                B::Flux
            } else {
                B::StableDiffusion3
            };
            let mut f = Finding::new(T::Main, b, F::Diffusers);
            f.variant = Some(if b == B::Flux {
                let guidance = cfg.get("guidance_embeds").and_then(Value::as_bool);
                flux_variant(u(cfg, "in_channels"), guidance).into()
            } else {
                V::Normal.into()
            });
            f.evidence.push(format!(
                "config.json `{class}`: a bare transformer component → main {b}"
            ));
            f
        }
        "ControlNetModel" | "FluxControlNetModel" | "SD3ControlNetModel" => {
            let mut f = Finding::new(T::ControlNet, B::Unknown, F::Diffusers);
            f.evidence
                .push(format!("config.json `{class}` → controlnet"));
            if class.starts_with("Flux") {
                f.base = B::Flux;
            } else if class.starts_with("SD3") {
                f.base = B::StableDiffusion3;
            } else if let Some(w) = u(cfg, "cross_attention_dim")
                && let Some(b) = base_from_context(w)
            {
                f.base = b;
                f.evidence.push(format!("cross_attention_dim {w} → {b}"));
            } else {
                f.evidence
                    .push("cross_attention_dim missing or unknown: base not determinable".into());
            }
            f
        }
        "T2IAdapter" => {
            let mut f = Finding::new(T::T2IAdapter, B::Unknown, F::Diffusers);
            f.evidence
                .push("config.json `T2IAdapter` → t2i_adapter".into());
            match cfg.get("adapter_type").and_then(Value::as_str) {
                Some(a @ "full_adapter_xl") => {
                    f.base = B::StableDiffusionXL;
                    f.evidence.push(format!("adapter_type `{a}` → sdxl"));
                }
                Some(a @ ("full_adapter" | "light_adapter")) => {
                    f.base = B::StableDiffusion1;
                    f.evidence.push(format!("adapter_type `{a}` → sd-1"));
                }
                other => f
                    .evidence
                    .push(format!("adapter_type {other:?}: base not determinable")),
            }
            f
        }
        "CLIPModel" if cfg.get("vision_config").is_some_and(Value::is_object) => {
            let mut f = Finding::new(T::ClipVision, B::Any, F::Diffusers);
            f.evidence.push(
                "config.json `CLIPModel` with a vision_config → clip_vision (its vision tower)"
                    .into(),
            );
            f
        }
        "CLIPVisionModelWithProjection" | "CLIPVisionModel" => {
            let mut f = Finding::new(T::ClipVision, B::Any, F::Diffusers);
            f.evidence
                .push(format!("config.json `{class}` → clip_vision"));
            f
        }
        "CLIPTextModel" | "CLIPTextModelWithProjection" => {
            let mut f = Finding::new(T::ClipEmbed, B::Any, F::Diffusers);
            f.evidence
                .push(format!("config.json `{class}` → clip_embed"));
            // InvokeAI's `get_clip_variant_type_from_config`: ViT-L's 768, ViT-bigG's 1280.
            match u(cfg, "hidden_size") {
                Some(768) => f.variant = Some(ClipVariantType::Large.into()),
                Some(1280) => f.variant = Some(ClipVariantType::Gigantic.into()),
                _ => {}
            }
            match f.variant {
                Some(v) => f.evidence.push(format!(
                    "hidden_size {} → {v}",
                    u(cfg, "hidden_size").unwrap_or_default()
                )),
                None => f
                    .evidence
                    .push("hidden_size is neither 768 nor 1280: CLIP variant unknown".into()),
            }
            f
        }
        "LlavaOnevisionForConditionalGeneration" => {
            let mut f = Finding::new(T::LlavaOnevision, B::Any, F::Diffusers);
            f.evidence.push(
                "config.json `LlavaOnevisionForConditionalGeneration` → llava_onevision".into(),
            );
            f
        }
        "SiglipModel" => {
            let mut f = Finding::new(T::SigLip, B::Any, F::Diffusers);
            f.evidence.push("config.json `SiglipModel` → siglip".into());
            f
        }
        "AutoencoderKLFlux2" => {
            let mut f = Finding::new(T::Vae, B::Flux2, F::Diffusers);
            f.evidence
                .push("config.json `AutoencoderKLFlux2` → vae flux2".into());
            f
        }
        "T5EncoderModel" => {
            let mut f = Finding::new(T::T5Encoder, B::Any, F::T5Encoder);
            f.evidence
                .push("config.json `T5EncoderModel` → t5_encoder".into());
            f
        }
        other => {
            let mut f = Finding::unknown(F::Diffusers);
            f.evidence.push(format!(
                "config.json class `{other}` is not a model class modelsync knows"
            ));
            return f;
        }
    };
    // Every diffusers component keeps its repo variant. InvokeAI's diffusers-VAE classes drop
    // it (they never call `_get_repo_variant_or_raise`), so an fp16-only VAE folder records as
    // the default variant there and its loader then asks for files that are not on disk.
    if f.format == F::Diffusers {
        f.repo_variant = repo_variant(dir);
        if let Some(rv) = f.repo_variant {
            f.evidence
                .push(format!("weight file names → repo variant `{rv}`"));
        }
    }
    f
}

/// A Wan 2.2 pipeline's variant, as InvokeAI reads it: two experts (`transformer_2/`) are
/// A14B, I2V when the transformer takes 36 input channels (16 noise + 16 image latents + 4
/// mask); one transformer over the 48-channel Wan2.2-VAE is TI2V-5B; else the name (`5b`,
/// `ti2v`), else T2V-A14B.
fn wan_variant(dir: &Path) -> Result<WanVariantType, ProbeError> {
    if dir.join("transformer_2").join("config.json").is_file() {
        let ch = read_json(&dir.join("transformer").join("config.json"))?
            .and_then(|c| u(&c, "in_channels"));
        return Ok(if ch == Some(36) {
            WanVariantType::I2vA14b
        } else {
            WanVariantType::T2vA14b
        });
    }
    let z = read_json(&dir.join("vae").join("config.json"))?.and_then(|c| u(&c, "z_dim"));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    Ok(
        if z.is_some_and(|z| z >= 32) || name.contains("5b") || name.contains("ti2v") {
            WanVariantType::Ti2v5b
        } else {
            WanVariantType::T2vA14b
        },
    )
}

fn v_reason(dir: &Path) -> &'static str {
    if dir.join("transformer_2").join("config.json").is_file() {
        "two experts (transformer_2/) and the transformer's in_channels"
    } else {
        "one transformer; the VAE's z_dim or the folder name"
    }
}

/// MiniMax H3's Modular Diffusers layout (`modular_model_index.json`), which InvokeAI
/// recognises by `MiniMaxH3ModularPipeline` and an audio VAE; FL2VA when `transformer/` is
/// there, Ref2VA when only `transformer_ref/` is.
fn modular_pipeline(
    dir: &Path,
    index: &serde_json::Map<String, Value>,
) -> Result<Finding, ProbeError> {
    let class = class_name(index).unwrap_or_default();
    let audio = read_json(&dir.join("audio_vae").join("config.json"))?
        .and_then(|c| class_name(&c))
        .unwrap_or_default();
    if class != "MiniMaxH3ModularPipeline" || audio != "AutoencoderKLMiniMaxH3Audio" {
        let mut f = Finding::unknown(F::Diffusers);
        f.evidence.push(format!(
            "modular_model_index.json: pipeline `{class}` (audio VAE `{audio}`) is not one modelsync knows"
        ));
        return Ok(f);
    }
    let mut f = Finding::new(T::Main, B::MiniMaxH3, F::Diffusers);
    f.evidence.push(
        "modular_model_index.json `MiniMaxH3ModularPipeline` with an `AutoencoderKLMiniMaxH3Audio` audio VAE → main minimax-h3"
            .into(),
    );
    let v = if dir.join("transformer").join("config.json").is_file()
        || !dir.join("transformer_ref").join("config.json").is_file()
    {
        MiniMaxH3VariantType::Fl2va
    } else {
        MiniMaxH3VariantType::Ref2va
    };
    f.evidence.push(format!(
        "{} → {v}",
        if v == MiniMaxH3VariantType::Fl2va {
            "transformer/"
        } else {
            "transformer_ref/ only"
        }
    ));
    f.variant = Some(v.into());
    f.repo_variant = repo_variant(dir);
    Ok(f)
}

fn has_tokenizer(dir: &Path) -> bool {
    ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
        .iter()
        .any(|n| dir.join(n).is_file())
}

/// The text-model sizes of a transformers config, or of its `text_config` (multimodal models).
fn text_sizes(cfg: &serde_json::Map<String, Value>) -> (Option<u64>, Option<u64>) {
    let text = cfg.get("text_config").and_then(Value::as_object);
    let get = |k: &str| u(cfg, k).or_else(|| text.and_then(|t| u(t, k)));
    (get("hidden_size"), get("num_hidden_layers"))
}

/// Transformers language and vision-language models, as InvokeAI's encoder classes name them
/// (Mistral, Qwen3, Qwen2.5-VL, Qwen3-VL, Gemma 2/4, UMT5), then any other causal LM with a
/// tokenizer as `text_llm`. `at` is the config's path inside `dir` (`config.json` or
/// `text_encoder/config.json`). `None`: not a language model this knows.
fn text_encoder(dir: &Path, cfg: &serde_json::Map<String, Value>, at: &str) -> Option<Finding> {
    let class = class_name(cfg).unwrap_or_default();
    let model_type = cfg.get("model_type").and_then(Value::as_str).unwrap_or("");
    let nested = at != "config.json";
    let (hidden, layers) = text_sizes(cfg);
    let sizes = format!(
        "hidden_size {}, {} layers",
        hidden.map_or_else(|| "?".into(), |h| h.to_string()),
        layers.map_or_else(|| "?".into(), |l| l.to_string())
    );
    let new = |t: T, b: B, fmt: F, why: String| {
        let mut f = Finding::new(t, b, fmt);
        f.evidence.push(format!("{at}: {why}"));
        f
    };
    if model_type == "umt5" {
        return Some(new(
            T::WanT5Encoder,
            B::Any,
            F::WanT5Encoder,
            "model_type `umt5`: Wan's UMT5-XXL → wan_t5_encoder".into(),
        ));
    }
    let mut f = match class.as_str() {
        "Mistral3ForConditionalGeneration" | "MistralModel" | "MistralForCausalLM" => {
            // InvokeAI's variants: Mistral Small 3's 5120 width at 30 (cow) or 40 layers.
            let v = match (hidden, layers) {
                (Some(5120), Some(30)) => Some(MistralVariantType::Cow),
                (Some(5120), Some(40)) => Some(MistralVariantType::Mistral24B),
                _ => None,
            };
            match v {
                Some(v) => {
                    let mut f = new(
                        T::MistralEncoder,
                        B::Any,
                        F::MistralEncoder,
                        format!("`{class}`, {sizes} → mistral_encoder {v}"),
                    );
                    f.variant = Some(v.into());
                    f
                }
                None if class.ends_with("ForCausalLM") && has_tokenizer(dir) => new(
                    T::TextLlm,
                    B::Any,
                    F::Diffusers,
                    format!("`{class}`, {sizes}: not Mistral Small 3's geometry → text_llm"),
                ),
                None => return None,
            }
        }
        "Qwen2_5_VLForConditionalGeneration" | "Qwen2VLForConditionalGeneration"
            if nested && dir.join("tokenizer").is_dir() =>
        {
            new(
                T::QwenVlEncoder,
                B::Any,
                F::QwenVlEncoder,
                format!("`{class}` beside tokenizer/ → qwen_vl_encoder"),
            )
        }
        "Qwen3VLModel" | "Qwen3VLForConditionalGeneration" => {
            let v = if hidden == Some(4096) {
                Qwen3VlVariantType::Qwen3Vl8B
            } else {
                Qwen3VlVariantType::Qwen3Vl4B
            };
            let mut f = new(
                T::Qwen3VlEncoder,
                B::Any,
                F::Qwen3VlEncoder,
                format!("`{class}`, {sizes} → qwen3_vl_encoder {v}"),
            );
            f.variant = Some(v.into());
            f
        }
        // InvokeAI's Qwen3 encoder class takes these (Z-Image's and FLUX.2 [klein]'s encoder);
        // as in its text-LLM class, the specialised type wins over `text_llm`.
        "Qwen3ForCausalLM" | "Qwen2ForCausalLM" => {
            let v = match hidden {
                Some(4096) => Qwen3VariantType::Qwen3_8B,
                Some(1024) => Qwen3VariantType::Qwen3_06B,
                _ => Qwen3VariantType::Qwen3_4B,
            };
            let mut f = new(
                T::Qwen3Encoder,
                B::Any,
                F::Qwen3Encoder,
                format!("`{class}`, {sizes} → qwen3_encoder {v}"),
            );
            f.variant = Some(v.into());
            // InvokeAI's `Qwen3Encoder_SDNQ_Folder_Config`.
            let (weights, label) = if nested {
                (dir.join("text_encoder"), "text_encoder")
            } else {
                (dir.to_path_buf(), ".")
            };
            if let Some(why) = sdnq_folder(&weights, label) {
                f.format = F::SdnqQuantized;
                f.evidence.push(format!("{why} → sdnq_quantized"));
            }
            f
        }
        // PiD's caption encoder is Gemma-2-2B (2304 wide); InvokeAI leaves other Gemma 2 sizes
        // unidentified, though they are ordinary causal LMs: they become `text_llm` here.
        "Gemma2ForCausalLM" if hidden == Some(2304) && has_tokenizer(dir) => new(
            T::Gemma2Encoder,
            B::Any,
            F::Gemma2Encoder,
            format!("`{class}`, {sizes}: Gemma-2-2B → gemma2_encoder"),
        ),
        _ if matches!(model_type, "gemma4_unified_text" | "gemma4_text")
            || matches!(
                class.as_str(),
                "Gemma4UnifiedForCausalLM" | "Gemma4ForCausalLM" | "Gemma4TextModel"
            ) =>
        {
            // LTX-2.5's encoder: Gemma-4-12B (3840 wide, 48 layers) with its tokenizer and one
            // unsharded weight file; a sharded stock Gemma 4 is an ordinary LLM.
            let sharded = dir.join("model.safetensors.index.json").is_file();
            if hidden == Some(3840)
                && layers == Some(48)
                && dir.join("tokenizer.json").is_file()
                && !sharded
            {
                new(
                    T::Gemma4Encoder,
                    B::Ltx2,
                    F::Gemma4Encoder,
                    format!("Gemma 4 text model, {sizes}, one weight file → gemma4_encoder ltx-2"),
                )
            } else if class.ends_with("ForCausalLM") && has_tokenizer(dir) {
                new(
                    T::TextLlm,
                    B::Any,
                    F::Diffusers,
                    format!("Gemma 4 text model, {sizes}: not LTX-2.5's encoder → text_llm"),
                )
            } else {
                return None;
            }
        }
        c if c.ends_with("ForCausalLM") && !nested && has_tokenizer(dir) => new(
            T::TextLlm,
            B::Any,
            F::Diffusers,
            format!("`{c}` with a tokenizer: causal language model → text_llm"),
        ),
        _ => return None,
    };
    f.repo_variant = repo_variant(dir);
    Some(f)
}

/// A FLUX.1 transformer's variant from its config: 384 input channels is Fill, no guidance
/// embedding is Schnell, anything else Dev.
fn flux_variant(in_channels: Option<u64>, guidance_embeds: Option<bool>) -> FluxVariantType {
    match (in_channels, guidance_embeds) {
        (Some(384), _) => FluxVariantType::DevFill,
        (_, Some(false)) => FluxVariantType::Schnell,
        _ => FluxVariantType::Dev,
    }
}
