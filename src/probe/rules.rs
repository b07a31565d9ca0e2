//! Identification rules for single-file checkpoints, from tensor names and shapes only.
//!
//! The rules follow InvokeAI's probe where it has one and say in the evidence which key and
//! which width decided. Widths: the context (cross-attention) dimension is 768 for SD 1.x
//! (CLIP ViT-L), 1024 for SD 2.x (OpenCLIP ViT-H), 2048 for SDXL base (both encoders
//! concatenated) and 1280 for the SDXL refiner (OpenCLIP ViT-bigG only).

use super::{Finding, StateDict};
use crate::taxonomy::{
    BaseModelType as B, Flux2VariantType, FluxVariantType, Krea2VariantType, Ltx2VariantType,
    MiniMaxH3VariantType, MistralVariantType, ModelFormat as F, ModelType as T,
    ModelVariantType as V, PidDecoderVariantType, Qwen3VariantType, Qwen3VlVariantType,
    QwenImageVariantType, SchedulerPredictionType as P, WanLoraVariantType, WanVariantType,
    ZImageVariantType,
};

/// Where the tensors came from (decides the format of main models and what else is possible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Container {
    Safetensors,
    Pickle,
    Gguf,
}

/// Base from a UNet context width.
fn base_from_context(width: u64) -> Option<B> {
    match width {
        768 => Some(B::StableDiffusion1),
        1024 => Some(B::StableDiffusion2),
        2048 => Some(B::StableDiffusionXL),
        1280 => Some(B::StableDiffusionXLRefiner),
        _ => None,
    }
}

/// Base from a text-embedding vector width.
fn base_from_token_width(width: u64) -> Option<B> {
    match width {
        768 => Some(B::StableDiffusion1),
        1024 => Some(B::StableDiffusion2),
        1280 => Some(B::StableDiffusionXL),
        _ => None,
    }
}

/// Base from kohya's `ss_base_model_version` or `modelspec.architecture` metadata.
fn base_from_metadata(sd: &StateDict) -> Option<(B, String)> {
    for key in ["modelspec.architecture", "ss_base_model_version"] {
        let Some(v) = sd.metadata.get(key) else {
            continue;
        };
        let l = v.to_ascii_lowercase();
        let b = if l.contains("refiner") {
            Some(B::StableDiffusionXLRefiner)
        } else if l.contains("xl") {
            Some(B::StableDiffusionXL)
        } else if l.starts_with("sd_v1") || l.contains("stable-diffusion-v1") {
            Some(B::StableDiffusion1)
        } else if l.starts_with("sd_v2") || l.contains("stable-diffusion-v2") {
            Some(B::StableDiffusion2)
        } else if l.contains("flux") {
            Some(B::Flux)
        } else if l.starts_with("sd3") || l.contains("stable-diffusion-3") {
            Some(B::StableDiffusion3)
        } else {
            None
        };
        if let Some(b) = b {
            return Some((b, format!("metadata {key} = `{v}` → {b}")));
        }
    }
    None
}

fn has_prefix(sd: &StateDict, prefix: &str) -> bool {
    sd.tensors.first_with_prefix(prefix).is_some()
}

fn first_with_prefix<'a>(sd: &'a StateDict, prefix: &str) -> Option<&'a str> {
    sd.tensors.first_with_prefix(prefix)
}

fn any_key<'a>(sd: &'a StateDict, pred: impl Fn(&str) -> bool) -> Option<&'a str> {
    sd.tensors.keys().find(|k| pred(k))
}

fn dim(sd: &StateDict, key: &str, i: usize) -> Option<u64> {
    sd.tensors.get(key).and_then(|t| t.shape.get(i).copied())
}

/// SDNQ's quantised layout (InvokeAI's `_has_sdnq_keys`): a `<name>.weight` beside a
/// `<name>.scale`. Only `.scale` names are looked at, each with one binary search; the rules
/// call this after a transformer's own keys matched, never on every file.
fn sdnq_pair<'a>(sd: &'a StateDict) -> Option<&'a str> {
    sd.tensors.keys().find(|k| {
        k.strip_suffix(".scale")
            .is_some_and(|m| sd.tensors.contains_key(&format!("{m}.weight")))
    })
}

/// Marks a matched main model or encoder as SDNQ-quantized when its weights come with SDNQ's
/// scales (InvokeAI's `Main_SDNQ_*` and `*_SDNQ_Config` classes take these files).
fn mark_sdnq(sd: &StateDict, container: Container, f: &mut Finding) {
    if container == Container::Gguf {
        return;
    }
    if let Some(k) = sdnq_pair(sd) {
        f.format = F::SdnqQuantized;
        f.evidence.push(format!(
            "key `{k}` beside its `.weight`: SDNQ-quantized → sdnq_quantized"
        ));
    }
}

/// A rule: its name (shown in `probe -o json`) and its check.
type Rule = (&'static str, fn(&StateDict, Container) -> Option<Finding>);

/// Every rule for single files. As InvokeAI's factory does, all of them run and every match
/// is a candidate; [`rank`] picks the winner.
const RULES: &[Rule] = &[
    ("control_lora", control_lora),
    ("lora", lora),
    ("ip_adapter", ip_adapter),
    ("controlnet", controlnet),
    ("textual_inversion", textual_inversion),
    ("main_sd", main_sd),
    ("main_flux", main_flux),
    ("main_flux2", main_flux2),
    ("main_flux2_sdnq", main_flux2_sdnq),
    ("main_sd3", main_sd3),
    ("main_z_image", main_z_image),
    ("main_qwen_image", main_qwen_image),
    ("main_anima", main_anima),
    ("main_wan", main_wan),
    ("main_krea2", main_krea2),
    ("main_ltx2", main_ltx2),
    ("main_minimax_h3", main_minimax_h3),
    ("main_ideogram4", main_ideogram4),
    ("main_ernie_image", main_ernie_image),
    ("vae", vae),
    ("spandrel", spandrel),
    ("flux_redux", flux_redux),
    ("pid_decoder", pid_decoder),
    ("t5_encoder", t5_encoder),
    ("mistral_encoder", mistral_encoder),
    ("qwen_vl_encoder", qwen_vl_encoder),
    ("qwen3_encoder", qwen3_encoder),
];

/// InvokeAI's `matches_sort_key`: main before LoRA before CLIP embed before the rest (a main
/// checkpoint with merged LoRA keys is a main model); ties keep [`RULES`] order.
fn rank(t: T) -> u8 {
    match t {
        T::Main => 0,
        T::Lora => 1,
        T::ClipEmbed => 2,
        _ => 3,
    }
}

/// Classifies a state dict: runs every rule, keeps the matches as candidates, and returns the
/// best-ranked one with the others recorded.
pub(crate) fn classify(sd: &StateDict, container: Container) -> Finding {
    if sd.tensors.is_empty() {
        let mut f = Finding::unknown(container_format(container));
        f.evidence.push("no tensors found".into());
        return f;
    }
    if container == Container::Gguf {
        let mut f = gguf(sd);
        f.decision = if f.model_type == T::Unknown {
            "no rule matched".into()
        } else {
            format!("only `{}` matched", f.rule)
        };
        return f;
    }
    let mut matched: Vec<Finding> = RULES
        .iter()
        .filter_map(|(name, check)| {
            check(sd, container).map(|mut f| {
                f.rule = name;
                f
            })
        })
        .collect();
    if matched.is_empty() {
        let mut f = unknown(sd, container);
        f.decision = "no rule matched".into();
        return f;
    }
    matched.sort_by_key(|f| rank(f.model_type));
    let mut rest = matched.split_off(1);
    let mut winner = matched.pop().unwrap_or_else(|| unknown(sd, container));
    winner.decision = match rest.as_slice() {
        [] => format!("only `{}` matched", winner.rule),
        others => {
            let names: Vec<String> = others.iter().map(|f| format!("`{}`", f.rule)).collect();
            let why = if rank(winner.model_type) < rank(others[0].model_type) {
                format!(
                    "{} outranks {} (InvokeAI's order: main, lora, clip_embed, the rest)",
                    winner.model_type, others[0].model_type
                )
            } else {
                "same rank, first in rule order".to_owned()
            };
            format!("`{}` wins over {}: {why}", winner.rule, names.join(", "))
        }
    };
    winner.others.append(&mut rest);
    winner
}

fn container_format(c: Container) -> F {
    match c {
        Container::Gguf => F::GgufQuantized,
        Container::Safetensors | Container::Pickle => F::Checkpoint,
    }
}

fn gguf(sd: &StateDict) -> Finding {
    let arch = sd.metadata.get("general.architecture").cloned();
    let found = [
        (
            "main_flux",
            main_flux as fn(&StateDict, Container) -> Option<Finding>,
        ),
        ("main_flux2", main_flux2),
        ("main_sd3", main_sd3),
        ("main_sd", main_sd),
        ("main_z_image", main_z_image),
        ("main_qwen_image", main_qwen_image),
        ("main_wan", main_wan),
        ("main_krea2", main_krea2),
        ("main_ernie_image", main_ernie_image),
        ("t5_encoder", t5_encoder),
        ("mistral_encoder", mistral_encoder),
        ("qwen3_encoder", qwen3_encoder),
    ]
    .into_iter()
    .find_map(|(name, check)| {
        check(sd, Container::Gguf).map(|mut f| {
            f.rule = name;
            f
        })
    });
    if let Some(mut f) = found {
        f.format = F::GgufQuantized;
        if let Some(a) = arch {
            f.evidence
                .push(format!("gguf general.architecture = `{a}`"));
        }
        return f;
    }
    let mut f = Finding::unknown(F::GgufQuantized);
    f.evidence.push(format!(
        "GGUF file with {} tensors; no diffusion-model layout recognised{}",
        sd.tensors.len(),
        arch.map(|a| format!(" (general.architecture = `{a}`)"))
            .unwrap_or_default()
    ));
    f
}

fn control_lora(sd: &StateDict, _: Container) -> Option<Finding> {
    if is_flux_control_lora(sd) {
        let mut f = Finding::new(T::ControlLora, B::Flux, F::Lycoris);
        f.evidence.push(format!(
            "key `img_in.lora_A.weight` takes 128 input features into 3072: FLUX Control LoRA → control_lora flux ({} tensors, all peft lora_A/lora_B/scale)",
            sd.tensors.len()
        ));
        return Some(f);
    }
    let k = first_with_prefix(sd, "lora_controlnet")?.to_owned();
    let mut f = Finding::new(T::ControlLora, B::Unknown, F::Lycoris);
    f.evidence.push(format!("key `{k}`: control LoRA"));
    if let Some(w) = any_key(sd, |k| {
        k.starts_with("input_blocks.") && k.ends_with("attn2.to_k.down")
    })
    .and_then(|k| dim(sd, k, 1))
    .or_else(|| any_key(sd, |k| k.contains("attn2.to_k.weight")).and_then(|k| dim(sd, k, 1)))
        && let Some(b) = base_from_context(w)
    {
        f.base = b;
        f.evidence
            .push(format!("attention context width {w} → {b}"));
    } else if let Some((b, why)) = base_from_metadata(sd) {
        f.base = b;
        f.evidence.push(why);
    } else {
        f.evidence.push("base not determinable from widths".into());
    }
    Some(f)
}

/// LoRA input width of a module whose weight key is `k` (kohya, peft, LoHa, LoKr layouts).
fn lora_in_width(sd: &StateDict, k: &str) -> Option<u64> {
    for suffix in [
        ".lora_down.weight",
        ".lora_A.weight",
        ".lora.down.weight",
        ".hada_w1_b",
        ".hada_w2_b",
    ] {
        if k.ends_with(suffix) {
            return dim(sd, k, 1);
        }
    }
    // LoKr: W = kron(w1, w2); in = w1.cols * w2.cols, each possibly factored into _a @ _b.
    let module = k
        .strip_suffix(".lokr_w1")
        .or_else(|| k.strip_suffix(".lokr_w1_b"))?;
    let cols = |name: &str| {
        dim(sd, &format!("{module}.{name}"), 1)
            .or_else(|| dim(sd, &format!("{module}.{name}_b"), 1))
    };
    cols("lokr_w1")?.checked_mul(cols("lokr_w2")?)
}

/// XLabs' FLUX LoRA layout: `double_blocks.N.processor.{qkv,proj}_lora{1,2}.{down,up}.weight`.
fn is_xlabs_lora_key(k: &str) -> bool {
    k.starts_with("double_blocks.")
        && k.contains(".processor.")
        && (k.contains("_lora1.") || k.contains("_lora2."))
}

/// BFL's FLUX Control LoRAs (canny/depth): peft keys on the BFL transformer whose `img_in`
/// takes 128 input features (64 latent + 64 control channels) into FLUX.1's 3072 width — the
/// test of InvokeAI's `is_state_dict_likely_flux_control`.
fn is_flux_control_lora(sd: &StateDict) -> bool {
    dim(sd, "img_in.lora_A.weight", 1) == Some(128)
        && dim(sd, "img_in.lora_B.weight", 0) == Some(3072)
        && sd.tensors.contains_key("img_in.lora_B.bias")
        && sd.tensors.keys().all(|k| {
            k.ends_with(".lora_A.weight")
                || k.ends_with(".lora_B.weight")
                || k.ends_with(".lora_B.bias")
                || k.rsplit_once('.').is_some_and(|(_, last)| last == "scale")
        })
}

fn is_lora_key(k: &str) -> bool {
    is_xlabs_lora_key(k)
        || k.starts_with("lora_te_")
        || k.starts_with("lora_te1_")
        || k.starts_with("lora_te2_")
        || k.starts_with("lora_unet_")
        || k.starts_with("lora_transformer_")
        || k.contains(".lora_down.")
        || k.contains(".lora_A.")
        || k.contains(".lora_B.")
        || k.contains(".lora.down.")
        || k.contains(".hada_w1_")
        || k.contains(".lokr_w1")
}

fn lora(sd: &StateDict, _: Container) -> Option<Finding> {
    // A Control LoRA has LoRA keys too; InvokeAI's LyCORIS classes rule it out first.
    if is_flux_control_lora(sd) {
        return None;
    }
    let k = any_key(sd, is_lora_key)?.to_owned();
    let kohya = sd.tensors.keys().any(|k| k.starts_with("lora_"));
    // A single-file LoRA is `lycoris` whatever its key style, as InvokeAI names it: its
    // `diffusers` LoRA classes are folders (pytorch_lora_weights.* beside a config).
    let format = F::Lycoris;
    let mut f = Finding::new(T::Lora, B::Unknown, format);
    let style = if is_xlabs_lora_key(&k) {
        "XLabs FLUX LoRA"
    } else if any_key(sd, |k| k.contains(".lokr_")).is_some() {
        "LoKr"
    } else if any_key(sd, |k| k.contains(".hada_")).is_some() {
        "LoHa"
    } else if kohya {
        "kohya LoRA"
    } else {
        "peft/diffusers LoRA"
    };
    f.evidence
        .push(format!("key `{k}`: {style} → lora.{format}"));
    if let Some((b, why)) = omi_lora(sd) {
        f.format = F::Omi;
        f.base = b;
        f.evidence.push(why);
        return Some(f);
    }

    // Anima's Cosmos DiT and LLM adapter, before any width below is read: the adapter's
    // 1024-wide attention would pass for an SD 2.x text encoder.
    let maybe_anima = ["diffusion_model.", "net.", ""].iter().any(|p| {
        has_prefix(sd, &format!("{p}blocks.")) || has_prefix(sd, &format!("{p}llm_adapter."))
    });
    if maybe_anima
        && let Some(k) = any_key(sd, |k| {
            let m = k
                .strip_prefix("diffusion_model.")
                .or_else(|| k.strip_prefix("net."))
                .unwrap_or(k);
            m.starts_with("llm_adapter.")
                || (m.starts_with("blocks.")
                    && (m.contains(".self_attn.") || m.contains(".cross_attn."))
                    && m.contains("_proj."))
        })
    {
        f.base = B::Anima;
        f.evidence.push(format!(
            "key `{k}`: Cosmos DiT / LLM adapter of Anima → anima"
        ));
        return Some(f);
    }
    // Z-Image's S3-DiT layers (InvokeAI's Z-Image LoRA rule).
    if let Some(k) = first_with_prefix(sd, "diffusion_model.layers.") {
        f.base = B::ZImage;
        f.evidence
            .push(format!("key `{k}`: Z-Image S3-DiT layers → z-image"));
        return Some(f);
    }
    // Wan's transformer blocks (native names: `self_attn.q`, `cross_attn.k`, `ffn.0`), bare or
    // under ComfyUI's `diffusion_model.`; A14B is 5120 wide, TI2V-5B 3072.
    let wan_module = |k: &str| {
        let m = k.strip_prefix("diffusion_model.").unwrap_or(k);
        let Some(rest) = m.strip_prefix("blocks.") else {
            return false;
        };
        let mut parts = rest.split('.').skip(1);
        match (parts.next(), parts.next()) {
            (Some("self_attn" | "cross_attn"), Some(p)) => matches!(p, "q" | "k" | "v" | "o"),
            (Some("ffn"), Some(p)) => matches!(p, "0" | "2"),
            _ => false,
        }
    };
    if (has_prefix(sd, "blocks.") || has_prefix(sd, "diffusion_model.blocks."))
        && let Some(k) = any_key(sd, wan_module)
    {
        f.base = B::Wan;
        let width = sd
            .tensors
            .keys()
            .filter(|k| wan_module(k) && k.contains("_attn.q."))
            .find_map(|k| lora_in_width(sd, k));
        f.variant = match width {
            Some(5120) => Some(WanLoraVariantType::A14b.into()),
            Some(3072) => Some(WanLoraVariantType::Wan5b.into()),
            _ => None,
        };
        f.evidence.push(format!(
            "key `{k}`: Wan transformer blocks → wan{}",
            match (width, f.variant) {
                (Some(w), Some(v)) => format!(", attention {w} wide → {v}"),
                _ => String::new(),
            }
        ));
        return Some(f);
    }
    // Flux and SD3 by block names (kohya, diffusers and ComfyUI spellings).
    if let Some(k) = any_key(sd, |k| {
        k.starts_with("lora_unet_double_blocks_")
            || k.starts_with("lora_unet_single_blocks_")
            || k.starts_with("lora_transformer_single_transformer_blocks")
            || k.contains("single_transformer_blocks.")
            || k.contains("double_blocks.")
    }) {
        if let Some((variant, why)) = flux2_lora(sd) {
            f.base = B::Flux2;
            f.variant = variant.map(Into::into);
            f.evidence
                .push(format!("key `{k}`: BFL transformer blocks; {why} → flux2"));
        } else {
            f.base = B::Flux;
            f.evidence
                .push(format!("key `{k}`: flux transformer blocks → flux"));
        }
        return Some(f);
    }
    if let Some(k) = any_key(sd, |k| {
        k.starts_with("lora_unet_joint_blocks_") || k.contains("joint_blocks.")
    }) {
        f.base = B::StableDiffusion3;
        f.evidence
            .push(format!("key `{k}`: MMDiT joint blocks → sd-3"));
        return Some(f);
    }
    // Krea-2's text-fusion stage, or the gated attention of its single-stream blocks (InvokeAI's
    // `_has_krea2_lora_keys`), before the Qwen-Image test below, which its blocks would pass.
    // Only files with transformer-style names are scanned (a kohya SD LoRA is not).
    let maybe_krea2 = [
        "transformer",
        "text_fusion",
        "txtfusion",
        "diffusion_model.",
        "lora_transformer_",
    ]
    .iter()
    .any(|p| has_prefix(sd, p));
    if maybe_krea2
        && let Some(k) = any_key(sd, |k| {
            k.contains("text_fusion") || k.contains("txtfusion") || k.contains("time_mod_proj")
        })
        .or_else(|| {
            any_key(sd, |k| k.contains(".attn.gate."))
                .and_then(|_| any_key(sd, |k| k.contains(".attn.wq.")))
        })
    {
        f.base = B::Krea2;
        f.evidence.push(format!(
            "key `{k}`: Krea-2 text fusion / gated attention → krea-2"
        ));
        return Some(f);
    }
    // MMDiT `transformer_blocks` without FLUX's or Z-Image's keys: Qwen-Image by its image/text
    // modulation and MLP names, SD3 by its widths, else Qwen-Image (InvokeAI's rule).
    if let Some(k) = first_with_prefix(sd, "transformer_blocks.")
        .or_else(|| first_with_prefix(sd, "transformer.transformer_blocks."))
    {
        let k = k.to_owned();
        let qwen = any_key(sd, |k| {
            k.contains(".img_mlp.")
                || k.contains(".txt_mlp.")
                || k.contains(".img_mod.")
                || k.contains(".txt_mod.")
        });
        let width = sd
            .tensors
            .keys()
            .filter(|k| k.contains("transformer_blocks.") && k.contains(".attn.to_k."))
            .find_map(|k| lora_in_width(sd, k));
        if qwen.is_none() && matches!(width, Some(1536 | 2432)) {
            f.base = B::StableDiffusion3;
            f.evidence.push(format!(
                "key `{k}`: MMDiT blocks of width {} → sd-3",
                width.unwrap_or_default()
            ));
        } else {
            f.base = B::QwenImage;
            f.evidence.push(match qwen {
                Some(q) => format!("key `{q}`: Qwen-Image image/text streams → qwen-image"),
                None => format!("key `{k}`: MMDiT blocks without FLUX or Z-Image keys → qwen-image (InvokeAI's rule)"),
            });
        }
        return Some(f);
    }
    // SDXL has two text encoders.
    if let Some(k) = any_key(sd, |k| {
        k.starts_with("lora_te2_") || k.starts_with("text_encoder_2.") || k.starts_with("lora_te1_")
    }) {
        f.base = B::StableDiffusionXL;
        f.evidence
            .push(format!("key `{k}`: SDXL text-encoder prefix → sdxl"));
        return Some(f);
    }
    // UNet cross-attention key projection: its input width is the context width.
    let attn_k = |k: &str| {
        (k.contains("attn2_to_k.")
            || k.contains("attn2.to_k.")
            || k.contains("attn2.processor.to_k"))
            && !k.contains("to_k_ip")
    };
    if let Some((k, w)) = sd
        .tensors
        .keys()
        .filter(|k| attn_k(k))
        .find_map(|k| lora_in_width(sd, k).map(|w| (k, w)))
        && let Some(b) = base_from_context(w)
    {
        f.base = b;
        f.evidence
            .push(format!("key `{k}`: context width {w} → {b}"));
        return Some(f);
    }
    // Text encoder only: width of the token embedding space.
    if let Some((k, w)) = sd
        .tensors
        .keys()
        .filter(|k| {
            (k.starts_with("lora_te_") || k.starts_with("text_encoder."))
                && (k.contains("k_proj") || k.contains("q_proj"))
        })
        .find_map(|k| lora_in_width(sd, k).map(|w| (k, w)))
        && let Some(b) = base_from_token_width(w).filter(|b| *b != B::StableDiffusionXL)
    {
        f.base = b;
        f.evidence
            .push(format!("key `{k}`: text-encoder width {w} → {b}"));
        return Some(f);
    }
    if let Some((b, why)) = base_from_metadata(sd) {
        f.base = b;
        f.evidence.push(why);
    } else {
        f.evidence.push(
            "base not determinable: no cross-attention or text-encoder widths and no base metadata"
                .into(),
        );
    }
    Some(f)
}

/// An OpenModelInitiative LoRA (InvokeAI's `LoRA_OMI_*_Config`): safetensors metadata with a
/// `modelspec.sai_model_spec`, `ot_branch = omi_format` and a `…/lora` architecture, of the
/// two architectures InvokeAI loads (SDXL base, FLUX.1 dev). Others stay LyCORIS.
fn omi_lora(sd: &StateDict) -> Option<(B, String)> {
    let m = &sd.metadata;
    if m.get("modelspec.sai_model_spec")
        .is_none_or(String::is_empty)
        || m.get("ot_branch").map(String::as_str) != Some("omi_format")
    {
        return None;
    }
    let arch = m.get("modelspec.architecture")?;
    let b = match arch.as_str() {
        "stable-diffusion-xl-v1-base/lora" => B::StableDiffusionXL,
        "Flux.1-dev/lora" => B::Flux,
        _ => return None,
    };
    Some((
        b,
        format!(
            "metadata ot_branch `omi_format`, modelspec.architecture `{arch}`: OMI LoRA → lora.omi {b}"
        ),
    ))
}

/// Whether a FLUX-style LoRA is for FLUX.2 [klein], after InvokeAI's `_is_flux2_lora` (peft,
/// BFL-peft and kohya namings; LoKr factors are not multiplied out here): a text input of
/// 3 × Qwen3 width, a vector input of Qwen3 width, FLUX.2-only module names, a hidden size other
/// than FLUX.1's 3072, or an image MLP other than 4 × 3072. `Some((variant, why))` when it is.
fn flux2_lora(sd: &StateDict) -> Option<(Option<Flux2VariantType>, String)> {
    const CTX: [u64; 2] = [7680, 12288];
    const VEC: [u64; 2] = [2560, 4096];
    let by_ctx = |w: u64| match w {
        12288 => Some(Flux2VariantType::Klein9B),
        7680 => Some(Flux2VariantType::Klein4B),
        _ => None,
    };
    let by_vec = |w: u64| match w {
        4096 => Some(Flux2VariantType::Klein9B),
        2560 => Some(Flux2VariantType::Klein4B),
        _ => None,
    };
    let by_hidden = |w: u64| match w {
        4096 => Some(Flux2VariantType::Klein9B),
        3072 => Some(Flux2VariantType::Klein4B),
        _ => None,
    };
    for p in ["transformer.", "base_model.model.", ""] {
        let k = format!("{p}context_embedder.lora_A.weight");
        if let Some(w) = dim(sd, &k, 1) {
            return CTX
                .contains(&w)
                .then(|| (by_ctx(w), format!("`{k}` takes {w} features")));
        }
        let k = format!("{p}time_text_embed.text_embedder.linear_1.lora_A.weight");
        if let Some(w) = dim(sd, &k, 1) {
            return VEC
                .contains(&w)
                .then(|| (by_vec(w), format!("`{k}` takes {w} features")));
        }
        for name in [
            "single_transformer_blocks.0.attn.to_qkv_mlp_proj.lora_A.weight",
            "transformer_blocks.0.ff.linear_in.lora_A.weight",
        ] {
            let k = format!("{p}{name}");
            if let Some(w) = dim(sd, &k, 1) {
                return Some((by_hidden(w), format!("`{k}` exists only in FLUX.2")));
            }
        }
    }
    // BFL naming under `diffusion_model.` / `base_model.model.`, then kohya's `lora_unet_`.
    for (bfl, attn, mlp, txt, vec, down) in [
        (
            true,
            ".img_attn.proj.lora_A.weight",
            ".img_mlp.0.lora_B.weight",
            "txt_in",
            "vector_in",
            "lora_A.weight",
        ),
        (
            false,
            "_img_attn_proj.lora_down.weight",
            "_img_mlp_0.lora_up.weight",
            "lora_unet_txt_in.",
            "lora_unet_vector_in.",
            "lora_down.weight",
        ),
    ] {
        let ours = |k: &str| {
            if bfl {
                k.starts_with("diffusion_model.") || k.starts_with("base_model.model.")
            } else {
                k.starts_with("lora_unet_")
            }
        };
        for (k, t) in sd
            .tensors
            .iter()
            .filter(|(k, _)| ours(k) && k.ends_with(down))
        {
            let w = t.shape.get(1).copied().unwrap_or(0);
            if k.contains(txt) {
                return CTX
                    .contains(&w)
                    .then(|| (by_ctx(w), format!("`{k}` takes {w} features")));
            }
            if k.contains(vec) {
                return VEC
                    .contains(&w)
                    .then(|| (by_vec(w), format!("`{k}` takes {w} features")));
            }
        }
        let hidden = sd
            .tensors
            .iter()
            .find(|(k, _)| ours(k) && k.ends_with(attn))
            .and_then(|(k, t)| t.shape.get(1).map(|w| (k, *w)));
        match hidden {
            Some((k, w)) if w != 3072 => {
                return Some((by_hidden(w), format!("`{k}`: hidden size {w}")));
            }
            Some((_, _)) => {
                if let Some((k, ffn)) = sd
                    .tensors
                    .iter()
                    .find(|(k, _)| ours(k) && k.ends_with(mlp))
                    .and_then(|(k, t)| t.shape.first().map(|d| (k, *d)))
                    && ffn != 4 * 3072
                {
                    return Some((
                        Some(Flux2VariantType::Klein4B),
                        format!("`{k}`: image MLP {ffn} wide at hidden 3072 (FLUX.1: 12288)"),
                    ));
                }
            }
            None => {}
        }
    }
    None
}

fn ip_adapter(sd: &StateDict, _: Container) -> Option<Finding> {
    if has_prefix(sd, "double_blocks.")
        && let Some(k) = any_key(sd, |k| k.contains("ip_adapter_double_stream"))
    {
        let mut f = Finding::new(T::IpAdapter, B::Flux, F::Checkpoint);
        f.evidence
            .push(format!("key `{k}`: XLabs flux IP-Adapter → flux"));
        return Some(f);
    }
    if !(has_prefix(sd, "image_proj.") && has_prefix(sd, "ip_adapter.")) {
        return None;
    }
    let mut f = Finding::new(T::IpAdapter, B::Unknown, F::Checkpoint);
    f.evidence
        .push("keys `image_proj.*` and `ip_adapter.*`: IP-Adapter".into());
    if let Some(k) = any_key(sd, |k| {
        k.starts_with("ip_adapter.") && k.ends_with("to_k_ip.weight")
    }) && let Some(w) = dim(sd, k, 1)
        && let Some(b) = base_from_context(w).filter(|b| *b != B::StableDiffusionXLRefiner)
    {
        f.base = b;
        f.evidence
            .push(format!("key `{k}`: context width {w} → {b}"));
    } else {
        f.evidence.push(
            "base not determinable: no `ip_adapter.*.to_k_ip.weight` of a known width".into(),
        );
    }
    Some(f)
}

fn controlnet(sd: &StateDict, _: Container) -> Option<Finding> {
    let marker = [
        "control_model.",
        "controlnet_cond_embedding.",
        "controlnet_down_blocks.",
        "controlnet_blocks.",
        "input_hint_block.",
    ]
    .into_iter()
    .find_map(|p| first_with_prefix(sd, p))?
    .to_owned();
    let mut f = Finding::new(T::ControlNet, B::Unknown, F::Checkpoint);
    f.evidence.push(format!("key `{marker}`: ControlNet"));
    if let Some(k) = any_key(sd, |k| {
        k.starts_with("double_blocks.")
            || k.starts_with("transformer_blocks.0.attn.add_k_proj")
            || k.starts_with("single_transformer_blocks.")
    }) {
        f.base = B::Flux;
        f.evidence
            .push(format!("key `{k}`: flux transformer blocks → flux"));
        return Some(f);
    }
    if let Some(k) = any_key(sd, |k| k.contains("attn2.to_k.weight"))
        && let Some(w) = dim(sd, k, 1)
        && let Some(b) = base_from_context(w).filter(|b| *b != B::StableDiffusionXLRefiner)
    {
        f.base = b;
        f.evidence
            .push(format!("key `{k}`: context width {w} → {b}"));
    } else {
        f.evidence
            .push("base not determinable: no cross-attention key of a known width".into());
    }
    Some(f)
}

fn textual_inversion(sd: &StateDict, _: Container) -> Option<Finding> {
    let mut f = Finding::new(T::TextualInversion, B::Unknown, F::EmbeddingFile);
    if let (Some(l), Some(g)) = (sd.tensors.get("clip_l"), sd.tensors.get("clip_g")) {
        f.base = B::StableDiffusionXL;
        f.evidence.push(format!(
            "keys `clip_l` {:?} and `clip_g` {:?}: SDXL embedding → sdxl",
            l.shape, g.shape
        ));
        return Some(f);
    }
    let (key, strong) = if let Some(k) = first_with_prefix(sd, "string_to_param.") {
        (k.to_owned(), true)
    } else if sd.tensors.contains_key("emb_params") {
        ("emb_params".to_owned(), true)
    } else if sd.tensors.len() == 1 {
        // diffusers' learned_embeds: {"<token>": [width]} — one small 1-D or 2-D tensor.
        let (k, t) = sd.tensors.iter().next()?;
        let small = t.shape.len() <= 2
            && t.shape
                .iter()
                .try_fold(1u64, |a, d| a.checked_mul(*d))
                .is_some_and(|n| n <= 1280 * 128);
        if !small
            || t.shape
                .last()
                .and_then(|w| base_from_token_width(*w))
                .is_none()
        {
            return None;
        }
        (k.to_owned(), false)
    } else {
        return None;
    };
    f.strong = strong;
    let width = sd
        .tensors
        .get(&key)
        .and_then(|t| t.shape.last().copied())
        .unwrap_or(0);
    match base_from_token_width(width) {
        Some(b) => {
            f.base = b;
            f.evidence.push(format!(
                "key `{key}`: embedding vectors of width {width} → {b}"
            ));
        }
        None => f.evidence.push(format!(
            "key `{key}`: embedding of width {width}, which matches no known text encoder"
        )),
    }
    Some(f)
}

fn main_sd(sd: &StateDict, container: Container) -> Option<Finding> {
    const P_: &str = "model.diffusion_model.";
    let marker = [
        "model.diffusion_model.input_blocks.",
        "cond_stage_model.",
        "conditioner.embedders.",
    ]
    .into_iter()
    .find_map(|p| first_with_prefix(sd, p))?
    .to_owned();
    if has_prefix(sd, "model.diffusion_model.double_blocks.")
        || has_prefix(sd, "model.diffusion_model.joint_blocks.")
    {
        return None;
    }
    let mut f = Finding::new(T::Main, B::Unknown, container_format(container));
    f.evidence.push(format!(
        "key `{marker}`: Stable Diffusion checkpoint → main"
    ));
    let attn = sd.tensors.iter().find(|(k, t)| {
        k.starts_with("model.diffusion_model.input_blocks.")
            && k.ends_with("attn2.to_k.weight")
            && t.shape.len() == 2
    });
    match attn.map(|(k, t)| (k, t.shape[1])) {
        Some((k, w)) => match base_from_context(w) {
            Some(b) => {
                f.base = b;
                f.evidence
                    .push(format!("key `{k}`: context width {w} → {b}"));
            }
            None => f.evidence.push(format!(
                "key `{k}`: context width {w} matches no known base"
            )),
        },
        None => f.evidence.push(format!(
            "no `{P_}input_blocks.*.attn2.to_k.weight`: base not determinable"
        )),
    }
    let conv_in = format!("{P_}input_blocks.0.0.weight");
    f.variant = Some(V::Normal.into());
    if let Some(c) = dim(sd, &conv_in, 1) {
        let v = match c {
            9 => V::Inpaint,
            5 => V::Depth,
            _ => V::Normal,
        };
        f.variant = Some(v.into());
        f.evidence
            .push(format!("`{conv_in}` has {c} input channels → {v}"));
    }
    f.prediction_type = Some(P::Epsilon);
    if f.base == B::StableDiffusion2 && f.variant == Some(V::Normal.into()) {
        f.prediction_type = Some(P::VPrediction);
        f.upcast_attention = true;
        f.evidence.push(
            "sd-2 defaults to v_prediction with upcast attention (the 512px sd-2 base is epsilon: override prediction_type)".into(),
        );
    }
    if let Some(k) = any_key(sd, |k| k.contains("bitsandbytes__nf4")) {
        f.format = F::BnbQuantizedNf4b;
        f.evidence.push(format!("key `{k}`: bitsandbytes NF4"));
    }
    Some(f)
}

fn main_flux(sd: &StateDict, container: Container) -> Option<Finding> {
    // The transformer's own weights, not merely the block names: XLabs LoRAs
    // (`double_blocks.N.processor.*_lora1`) and IP-Adapters name the blocks too.
    let prefix = ["", "model.diffusion_model."].into_iter().find(|p| {
        sd.tensors
            .contains_key(&format!("{p}double_blocks.0.img_attn.qkv.weight"))
    })?;
    // XLabs FLUX ControlNets carry a copy of the first double blocks beside their
    // `controlnet_blocks.*`; InvokeAI ranks such a file as a main model (main outranks every
    // other type). It is a ControlNet: the controlnet rule takes it.
    if has_prefix(sd, "controlnet_blocks.") || has_prefix(sd, "pos_embed_input.") {
        return None;
    }
    // FLUX.2 shares the block names; its own rule takes it.
    if flux2_widths(sd, prefix).is_some() {
        return None;
    }
    let mut f = Finding::new(T::Main, B::Flux, container_format(container));
    f.evidence.push(format!(
        "keys `{prefix}double_blocks.*`: flux transformer → main flux"
    ));
    let dev = has_prefix(sd, &format!("{prefix}guidance_in."));
    let img_in = format!("{prefix}img_in.weight");
    let in_ch = dim(sd, &img_in, 1);
    let fill = in_ch == Some(384);
    f.variant = Some(
        match (dev, fill) {
            (_, true) => FluxVariantType::DevFill,
            (true, false) => FluxVariantType::Dev,
            (false, false) => FluxVariantType::Schnell,
        }
        .into(),
    );
    f.config_path = Some(
        match (dev, fill) {
            (_, true) => "flux-dev-fill",
            (true, false) => "flux-dev",
            (false, false) => "flux-schnell",
        }
        .to_owned(),
    );
    f.evidence.push(if dev {
        format!("`{prefix}guidance_in.*` present → flux dev (guidance-distilled)")
    } else {
        format!("no `{prefix}guidance_in.*` → flux schnell")
    });
    if let Some(c) = in_ch {
        f.evidence.push(format!(
            "`{img_in}` takes {c} input features{}",
            if fill { " → fill (inpaint)" } else { "" }
        ));
    }
    if let Some(k) = any_key(sd, |k| k.contains("bitsandbytes__nf4")) {
        f.format = F::BnbQuantizedNf4b;
        f.evidence
            .push(format!("key `{k}`: bitsandbytes NF4 → bnb_quantized_nf4b"));
    } else {
        mark_sdnq(sd, container, &mut f);
    }
    Some(f)
}

/// FLUX.2's tell-tale widths (InvokeAI's `_is_flux2_model`): a text input wider than T5's
/// 4096 (Qwen3 states, 3 × hidden: 7680 for klein 4B, 12288 for klein 9B), or 128 packed
/// latent input features (32 latent channels; FLUX.1 has 64). Returns the variant and why.
fn flux2_widths(sd: &StateDict, prefix: &str) -> Option<(Flux2VariantType, String)> {
    for key in ["txt_in.weight", "context_embedder.weight"] {
        let k = format!("{prefix}{key}");
        if let Some(w) = dim(sd, &k, 1)
            && w > 4096
        {
            let v = if w == 12288 {
                Flux2VariantType::Klein9B
            } else {
                Flux2VariantType::Klein4B
            };
            return Some((
                v,
                format!("`{k}` takes {w} features (Qwen3 text states) → flux2 {v}"),
            ));
        }
    }
    let k = format!("{prefix}img_in.weight");
    (dim(sd, &k, 1) == Some(128)).then(|| {
        (
            Flux2VariantType::Klein4B,
            format!("`{k}` takes 128 features (32 latent channels) → flux2, klein_4b by InvokeAI's default"),
        )
    })
}

fn main_flux2(sd: &StateDict, container: Container) -> Option<Finding> {
    let prefix = ["", "model.diffusion_model."].into_iter().find(|p| {
        sd.tensors
            .contains_key(&format!("{p}double_blocks.0.img_attn.qkv.weight"))
    })?;
    let (variant, why) = flux2_widths(sd, prefix)?;
    let mut f = Finding::new(T::Main, B::Flux2, container_format(container));
    f.evidence.push(format!(
        "keys `{prefix}double_blocks.*`: BFL transformer → main"
    ));
    f.evidence.push(why);
    f.variant = Some(variant.into());
    // InvokeAI's SDNQ FLUX.2 class takes only diffusers names ([`main_flux2_sdnq`]); a BFL-named
    // SDNQ file is still SDNQ, and the format says so rather than promising a plain checkpoint.
    mark_sdnq(sd, container, &mut f);
    Some(f)
}

/// A FLUX.2 transformer in one SDNQ file with diffusers names, the layout InvokeAI's
/// `Main_SDNQ_Flux2_Config` takes (its loader reads the keys as they are): `context_embedder`
/// at a Qwen3 text width beside `transformer_blocks` and `single_transformer_blocks`, with
/// SDNQ's weight/scale pairs. InvokeAI has no class for such a file unquantised; it stays
/// unknown.
fn main_flux2_sdnq(sd: &StateDict, container: Container) -> Option<Finding> {
    if container == Container::Gguf
        || !sd.tensors.contains_key("context_embedder.weight")
        || !has_prefix(sd, "transformer_blocks.0.")
        || !has_prefix(sd, "single_transformer_blocks.0.")
    {
        return None;
    }
    let (variant, why) = flux2_widths(sd, "")?;
    let k = sdnq_pair(sd)?;
    let mut f = Finding::new(T::Main, B::Flux2, F::SdnqQuantized);
    f.evidence.push(
        "keys `context_embedder.weight`, `transformer_blocks.*`, `single_transformer_blocks.*`: diffusers FLUX.2 transformer → main".into(),
    );
    f.evidence.push(why);
    f.evidence.push(format!(
        "key `{k}` beside its `.weight`: SDNQ-quantized → sdnq_quantized"
    ));
    f.variant = Some(variant.into());
    Some(f)
}

const LORA_SUFFIXES: [&str; 5] = [
    ".lora_down.weight",
    ".lora_up.weight",
    ".lora_A.weight",
    ".lora_B.weight",
    ".dora_scale",
];

fn has_lora_suffix(sd: &StateDict) -> bool {
    sd.tensors
        .keys()
        .any(|k| LORA_SUFFIXES.iter().any(|s| k.ends_with(s)))
}

/// Z-Image's S3-DiT (InvokeAI's `_has_z_image_keys`): a caption embedder, context refiner or
/// caption pad token, bare or under `model.diffusion_model.`, and no LoRA keys.
fn main_z_image(sd: &StateDict, container: Container) -> Option<Finding> {
    // Prefix lookups, not a scan of every name: this rule runs on every file.
    let k = ["", "model.diffusion_model."]
        .iter()
        .flat_map(|p| {
            ["cap_embedder.", "context_refiner.", "cap_pad_token"].map(move |n| format!("{p}{n}"))
        })
        .find_map(|n| first_with_prefix(sd, &n))?
        .to_owned();
    if has_lora_suffix(sd) {
        return None;
    }
    let mut f = Finding::new(T::Main, B::ZImage, container_format(container));
    f.evidence
        .push(format!("key `{k}`: Z-Image S3-DiT → main z-image"));
    // A single file does not say whether it is the distilled Turbo; InvokeAI assumes it.
    f.variant = Some(ZImageVariantType::Turbo.into());
    f.evidence
        .push("variant turbo: InvokeAI's default for single-file Z-Image".into());
    mark_sdnq(sd, container, &mut f);
    Some(f)
}

/// Qwen-Image's transformer (InvokeAI's `_has_qwen_image_keys`): `img_in`, `txt_in` and
/// `txt_norm`, and no FLUX `context_embedder`.
fn main_qwen_image(sd: &StateDict, container: Container) -> Option<Finding> {
    let p = ["", "model.diffusion_model."]
        .into_iter()
        .find(|p| has_prefix(sd, &format!("{p}txt_norm.")))?;
    if !(has_prefix(sd, &format!("{p}txt_in.")) && has_prefix(sd, &format!("{p}img_in.")))
        || any_key(sd, |k| k.contains("context_embedder")).is_some()
        || has_lora_suffix(sd)
    {
        return None;
    }
    let mut f = Finding::new(T::Main, B::QwenImage, container_format(container));
    f.evidence.push(format!(
        "keys `{p}img_in.*`, `{p}txt_in.*`, `{p}txt_norm.*`: Qwen-Image transformer → main qwen-image"
    ));
    // Edit models carry the zero-timestep index of their dual modulation; else the name
    // decides ([`refine_by_name`]).
    let marker = format!("{p}__index_timestep_zero__");
    if sd.tensors.contains_key(&marker) {
        f.variant = Some(QwenImageVariantType::Edit.into());
        f.evidence.push(format!("key `{marker}` → edit"));
    }
    Some(f)
}

/// The LLM-adapter and Cosmos-DiT prefixes of Anima checkpoints (bare, `net.`, ComfyUI's
/// `model.diffusion_model.`).
fn anima_keys<'a>(sd: &'a StateDict<'_>) -> Option<(&'a str, &'a str)> {
    const PRE: [&str; 3] = ["", "net.", "model.diffusion_model."];
    let adapter = PRE
        .iter()
        .find_map(|p| first_with_prefix(sd, &format!("{p}llm_adapter.")))?;
    let dit = PRE.iter().find_map(|p| {
        ["blocks.", "t_embedder.", "x_embedder.", "final_layer."]
            .iter()
            .find_map(|c| first_with_prefix(sd, &format!("{p}{c}")))
    })?;
    Some((adapter, dit))
}

fn main_anima(sd: &StateDict, container: Container) -> Option<Finding> {
    let (adapter, dit) = anima_keys(sd)?;
    if has_lora_suffix(sd) {
        return None;
    }
    let mut f = Finding::new(T::Main, B::Anima, container_format(container));
    f.evidence.push(format!(
        "keys `{adapter}` (LLM adapter) and `{dit}` (Cosmos DiT) → main anima"
    ));
    Some(f)
}

/// A Qwen3 text encoder in one file (InvokeAI's `Qwen3Encoder_Checkpoint_Config`), its
/// variant from the token embedding's width. Anima/Cosmos checkpoints, whose LLM adapter has
/// the same attention names, are excluded before any width is read.
fn qwen3_encoder(sd: &StateDict, container: Container) -> Option<Finding> {
    // Not Qwen3 alone: Anima's adapter, a VL model's vision tower, Mistral's geometry, and
    // Qwen3.5's Gated DeltaNet layers (`linear_attn`, a family of its own that InvokeAI's Qwen3
    // classes reject even where the widths coincide).
    if anima_keys(sd).is_some()
        || qwen_visual(sd).is_some()
        || mistral_geometry(sd).is_some()
        || first_with_prefix(sd, "model.layers.0.linear_attn.").is_some()
    {
        return None;
    }
    let embed = ["model.embed_tokens.weight", "token_embd.weight"]
        .into_iter()
        .find(|k| sd.tensors.contains_key(k));
    let layer =
        first_with_prefix(sd, "model.layers.0.").or_else(|| first_with_prefix(sd, "blk.0."));
    let marker = embed.or(layer)?.to_owned();
    if container == Container::Gguf
        && sd
            .metadata
            .get("general.architecture")
            .is_some_and(|a| a != "qwen3")
    {
        return None;
    }
    let format = if container == Container::Gguf {
        F::GgufQuantized
    } else {
        F::Checkpoint
    };
    let mut f = Finding::new(T::Qwen3Encoder, B::Any, format);
    f.evidence.push(format!(
        "key `{marker}`: Qwen3 language model → qwen3_encoder"
    ));
    let width = embed.and_then(|k| dim(sd, k, 1));
    let v = match width {
        Some(1024) => Qwen3VariantType::Qwen3_06B,
        Some(4096) => Qwen3VariantType::Qwen3_8B,
        _ => Qwen3VariantType::Qwen3_4B,
    };
    f.evidence.push(match width {
        Some(w @ (1024 | 2560 | 4096)) => format!("hidden size {w} → {v}"),
        Some(w) => format!("hidden size {w}: {v} by InvokeAI's default"),
        None => format!("no token embedding: {v} by InvokeAI's default"),
    });
    f.variant = Some(v.into());
    Some(f)
}

fn main_sd3(sd: &StateDict, container: Container) -> Option<Finding> {
    let k = ["joint_blocks.0.", "model.diffusion_model.joint_blocks.0."]
        .into_iter()
        .find_map(|p| first_with_prefix(sd, p))?
        .to_owned();
    let mut f = Finding::new(T::Main, B::StableDiffusion3, container_format(container));
    f.variant = Some(V::Normal.into());
    f.evidence
        .push(format!("key `{k}`: MMDiT joint blocks → main sd-3"));
    Some(f)
}

fn vae(sd: &StateDict, _: Container) -> Option<Finding> {
    let (enc, dec) = ["", "first_stage_model.", "vae."]
        .into_iter()
        .find_map(|p| {
            let e = format!("{p}encoder.conv_in.weight");
            let d = format!("{p}decoder.conv_in.weight");
            (sd.tensors.contains_key(&e) || sd.tensors.contains_key(&d)).then_some((e, d))
        })?;
    let mut f = Finding::new(T::Vae, B::Unknown, F::Checkpoint);
    f.evidence.push(format!(
        "key `{}`: autoencoder → vae",
        if sd.tensors.contains_key(&dec) {
            &dec
        } else {
            &enc
        }
    ));
    // decoder.conv_in takes the latent channels; encoder.conv_out gives 2× them (mean+logvar).
    let latent =
        dim(sd, &dec, 1).or_else(|| dim(sd, &enc.replace("conv_in", "conv_out"), 0).map(|c| c / 2));
    if let Some((b, why)) = base_from_metadata(sd) {
        f.base = b;
        f.evidence.push(why);
        return Some(f);
    }
    if sd.tensors.contains_key("bn.running_mean") || latent == Some(32) {
        f.base = B::Flux2;
        f.evidence.push(format!(
            "{} → flux2 autoencoder",
            if latent == Some(32) {
                "32 latent channels"
            } else {
                "BatchNorm `bn.running_mean` over the packed latents"
            }
        ));
        return Some(f);
    }
    match latent {
        Some(16) => {
            f.base = B::Flux;
            f.evidence.push(
                "16 latent channels → flux autoencoder (an SD3 VAE has the same layout: override base: sd-3)".into(),
            );
        }
        Some(4) => {
            // Settled by the file name afterwards ([`vae_base_by_name`]).
            f.base_candidates = vec![B::StableDiffusion1, B::StableDiffusionXL];
            f.evidence
                .push("4 latent channels: the SD 1.x/2.x and SDXL VAEs share this layout".into());
        }
        Some(c) => f
            .evidence
            .push(format!("{c} latent channels: no known base")),
        None => f.evidence.push("latent channels not determinable".into()),
    }
    Some(f)
}

/// InvokeAI's name rule for a checkpoint VAE whose weights fit several bases: the file name
/// against `xl` (sdxl), `sd2` (sd-2), `vae` (sd-1), else sd-1. `base_candidates` stays set,
/// so the installer can warn that the base is a guess.
fn vae_base_by_name(f: &mut Finding, file_name: &str) {
    if f.model_type != T::Vae || f.base != B::Unknown || f.base_candidates.is_empty() {
        return;
    }
    let l = file_name.to_ascii_lowercase();
    let (b, why) = [
        ("xl", B::StableDiffusionXL),
        ("sd2", B::StableDiffusion2),
        ("vae", B::StableDiffusion1),
    ]
    .into_iter()
    .find(|(needle, _)| l.contains(needle))
    .map_or(
        (
            B::StableDiffusion1,
            format!("name `{file_name}` says nothing: sd-1 by InvokeAI's fallback"),
        ),
        |(needle, b)| (b, format!("name `{file_name}` contains `{needle}` → {b}")),
    );
    f.base = b;
    if !f.base_candidates.contains(&b) {
        f.base_candidates.push(b);
    }
    f.evidence
        .push(format!("{why} (set config.base if that is wrong)"));
}

/// spandrel's architecture detection (key sets of the image-to-image models it loads), for
/// the architectures InvokeAI users install most. Checked with and without the `params` /
/// `params_ema` wrapper BasicSR-trained checkpoints keep their weights under.
const SPANDREL_ARCHES: &[(&str, &[&str])] = &[
    (
        "HAT",
        &[
            "layers.0.residual_group.blocks.0.norm1.weight",
            "layers.0.residual_group.blocks.0.conv_block.cab.0.weight",
            "conv_first.weight",
        ],
    ),
    (
        "Swin2SR",
        &[
            "layers.0.residual_group.blocks.0.norm1.weight",
            "layers.0.residual_group.blocks.0.attn.relative_position_index",
            "patch_embed.proj.weight",
            "conv_first.weight",
        ],
    ),
    (
        "SwinIR",
        &[
            "layers.0.residual_group.blocks.0.norm1.weight",
            "layers.0.residual_group.blocks.0.mlp.fc1.bias",
            "layers.0.residual_group.blocks.0.attn.relative_position_index",
            "conv_first.weight",
        ],
    ),
    (
        "DAT",
        &["layers.0.blocks.2.attn.attn_mask_0", "conv_first.weight"],
    ),
    ("ESRGAN", &["conv_first.weight", "body.0.rdb1.conv1.weight"]),
    (
        "ESRGAN",
        &["conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight"],
    ),
    (
        "ESRGAN",
        &["model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"],
    ),
    ("RealESRGAN Compact", &["body.0.weight", "body.1.weight"]),
    ("SPAN", &["block_1.c1_r.sk.weight"]),
    (
        "OmniSR",
        &["residual_layer.0.residual_layer.0.layer.0.fn.0.weight"],
    ),
    ("SAFMN", &["to_feat.weight"]),
    // Subsets of spandrel's `KeyCondition.has_all` sets for these.
    (
        "ATD",
        &[
            "relative_position_index_SA",
            "conv_first.weight",
            "layers.0.residual_group.td",
            "layers.0.residual_group.layers.0.wqkv.weight",
        ],
    ),
    (
        "RealPLKSR",
        &[
            "feats.1.channel_mixer.0.weight",
            "feats.0.weight",
            "feats.1.lk.conv.weight",
            "feats.1.refine.weight",
        ],
    ),
    (
        "PLKSR",
        &[
            "feats.1.channe_mixer.0.weight",
            "feats.0.weight",
            "feats.1.lk.conv.weight",
            "feats.1.refine.weight",
        ],
    ),
    (
        "RealCUGAN",
        &[
            "unet1.conv1.conv.0.weight",
            "unet1.conv1_down.weight",
            "unet1.conv2.seblock.conv1.weight",
            "unet2.conv1.conv.0.weight",
            "unet2.conv1_down.weight",
        ],
    ),
    ("DITN", &["UFONE.0.ITLs.0.attn.temperature"]),
];

fn spandrel(sd: &StateDict, _: Container) -> Option<Finding> {
    for wrapper in ["params_ema.", "params.", ""] {
        if !wrapper.is_empty() && !has_prefix(sd, wrapper) {
            continue;
        }
        for (arch, keys) in SPANDREL_ARCHES {
            // Cheap test of the first key before building the others' names.
            if wrapper.is_empty() && !sd.tensors.contains_key(keys[0]) {
                continue;
            }
            if keys
                .iter()
                .all(|k| sd.tensors.contains_key(&format!("{wrapper}{k}")))
            {
                let mut f = Finding::new(T::SpandrelImageToImage, B::Any, F::Checkpoint);
                let under = if wrapper.is_empty() {
                    String::new()
                } else {
                    format!(" under `{}`", wrapper.trim_end_matches('.'))
                };
                f.evidence.push(format!(
                    "keys `{}`{under}: {arch} image-to-image model → spandrel_image_to_image",
                    keys.join("`, `")
                ));
                return Some(f);
            }
        }
    }
    None
}

/// A FLUX Redux image-prompt adapter (InvokeAI's `is_state_dict_likely_flux_redux`): exactly
/// the four tensors of its two projections, SigLIP's 1152 features up to 3 × 4096 and down to
/// T5's 4096.
fn flux_redux(sd: &StateDict, _: Container) -> Option<Finding> {
    const KEYS: [&str; 4] = [
        "redux_down.bias",
        "redux_down.weight",
        "redux_up.bias",
        "redux_up.weight",
    ];
    if sd.tensors.len() != KEYS.len() || !KEYS.iter().all(|k| sd.tensors.contains_key(k)) {
        return None;
    }
    let mut f = Finding::new(T::FluxRedux, B::Flux, F::Checkpoint);
    f.evidence.push(
        "exactly `redux_down.{weight,bias}` and `redux_up.{weight,bias}`: FLUX Redux → flux_redux flux"
            .into(),
    );
    Some(f)
}

/// A PiD pixel-diffusion decoder (NVIDIA's `PidNet.lq_proj`, bare or under the distill
/// model's `net.`). InvokeAI looks for `lq_proj` anywhere in a name; the two prefixes are the
/// layouts NVIDIA ships and spare every other file a scan of all its names. Backbone and
/// preset are read from the file name afterwards ([`refine_by_name`]).
fn pid_decoder(sd: &StateDict, _: Container) -> Option<Finding> {
    let k = ["lq_proj.", "net.lq_proj."]
        .into_iter()
        .find_map(|p| first_with_prefix(sd, p))?
        .to_owned();
    let mut f = Finding::new(T::PidDecoder, B::Unknown, F::Checkpoint);
    f.evidence.push(format!(
        "key `{k}`: PiD low-quality projection → pid_decoder"
    ));
    f.variant = Some(PidDecoderVariantType::Res2kSr4x.into());
    // The weights do not say which backbone's latents they decode; NVIDIA's file names do.
    f.base_candidates = vec![B::Flux, B::Flux2, B::StableDiffusion3];
    Some(f)
}

/// T5 v1.1 XXL's width, the encoder FLUX.1 and SD 3 condition on.
const T5_XXL_WIDTH: u64 = 4096;

/// A T5 encoder in one file with transformers' names (ComfyUI's `t5xxl_fp16` and fp8 builds,
/// InvokeAI's `T5Encoder_Checkpoint_Config`): block 0's self-attention, an embedding, the final
/// norm (a whole encoder, not a first shard), no decoder, T5 v1.1's gated feed-forward, and a
/// relative position bias in block 0 only (UMT5, Wan's encoder, has one per block). GGUF
/// conversions (llama.cpp's `enc.blk.*`) are the same type, quantised.
fn t5_encoder(sd: &StateDict, container: Container) -> Option<Finding> {
    if container == Container::Gguf {
        let k = first_with_prefix(sd, "enc.blk.")
            .or_else(|| {
                sd.tensors
                    .contains_key("enc.output_norm.weight")
                    .then_some("enc.output_norm.weight")
            })?
            .to_owned();
        let mut f = Finding::new(T::T5Encoder, B::Any, F::GgufQuantized);
        f.evidence
            .push(format!("key `{k}`: llama.cpp T5 encoder → t5_encoder"));
        return Some(f);
    }
    if !sd
        .tensors
        .contains_key("encoder.block.0.layer.0.SelfAttention.q.weight")
    {
        return None;
    }
    let embed = ["shared.weight", "encoder.embed_tokens.weight"]
        .into_iter()
        .find(|k| sd.tensors.contains_key(k))?;
    if !sd.tensors.contains_key("encoder.final_layer_norm.weight")
        || has_prefix(sd, "decoder.")
        || sd
            .tensors
            .contains_key("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight")
        || !sd
            .tensors
            .contains_key("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")
    {
        return None;
    }
    // InvokeAI's loader reads these with safetensors only.
    if container != Container::Safetensors {
        return None;
    }
    let mut f = Finding::new(T::T5Encoder, B::Any, F::Checkpoint);
    f.evidence.push(format!(
        "keys `encoder.block.0.layer.0.SelfAttention.q.weight`, `{embed}`, `encoder.final_layer_norm.weight` and the gated `wi_0`: T5 v1.1 encoder → t5_encoder"
    ));
    let width = dim(sd, "encoder.final_layer_norm.weight", 0).or_else(|| dim(sd, embed, 1));
    match width {
        Some(T5_XXL_WIDTH) => f
            .evidence
            .push(format!("width {T5_XXL_WIDTH}: T5 v1.1 XXL")),
        // InvokeAI refuses these outright; the file is a T5 encoder all the same, so it is
        // recorded as one and the caller is told that FLUX.1 and SD 3 cannot use it.
        w => {
            let w = w.map_or_else(|| "unknown".to_owned(), |w| w.to_string());
            f.evidence.push(format!("width {w}: not T5 v1.1 XXL"));
            f.warnings.push(format!(
                "this T5 encoder is {w} wide; FLUX.1 and SD 3 need T5 v1.1 XXL ({T5_XXL_WIDTH})"
            ));
        }
    }
    Some(f)
}

/// Where a causal LM's decoder sits in a file: transformers' `model.`, a multimodal wrapper's
/// `language_model.model.` / `model.language_model.`, a ComfyUI text encoder's
/// `text_encoder.model.`; GGUF's `blk.`. Returns (root, layer prefix, embedding, final norm).
fn lm_root(sd: &StateDict) -> Option<(&'static str, String, String, String)> {
    for root in [
        "model.",
        "language_model.model.",
        "model.language_model.",
        "text_encoder.model.",
    ] {
        let layers = format!("{root}layers.");
        if has_prefix(sd, &layers)
            || sd
                .tensors
                .contains_key(&format!("{root}embed_tokens.weight"))
        {
            return Some((
                root,
                layers,
                format!("{root}embed_tokens.weight"),
                format!("{root}norm.weight"),
            ));
        }
    }
    has_prefix(sd, "blk.").then(|| {
        (
            "",
            "blk.".to_owned(),
            "token_embd.weight".to_owned(),
            "output_norm.weight".to_owned(),
        )
    })
}

/// The number of decoder layers: the highest `<prefix>N.` plus one.
fn layer_count(sd: &StateDict, prefix: &str) -> u64 {
    let start = sd
        .tensors
        .keys()
        .position(|k| k.starts_with(prefix))
        .unwrap_or(usize::MAX);
    sd.tensors
        .keys()
        .skip(start)
        .take_while(|k| k.starts_with(prefix))
        .filter_map(|k| k[prefix.len()..].split('.').next()?.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

/// Mistral Small 3's geometry (FLUX.2 [dev]'s text encoder): 5120 wide with grouped-query
/// attention of 8 key/value heads, so layer 0's key projection gives 1024 features. InvokeAI
/// tells it from Llama-2-13B (also 5120 wide, 40 layers) by a vocabulary of at least 100,000
/// rows; the key projection says the same without the embedding's 671 M entries, and 13B's
/// full multi-head attention gives 5120 there.
fn mistral_geometry(sd: &StateDict) -> Option<(String, u64, u64)> {
    let (_, layers, embed, norm) = lm_root(sd)?;
    let hidden = dim(sd, &norm, 0).or_else(|| dim(sd, &embed, 1))?;
    if hidden != 5120 {
        return None;
    }
    let k_proj = if layers == "blk." {
        "blk.0.attn_k.weight".to_owned()
    } else {
        format!("{layers}0.self_attn.k_proj.weight")
    };
    (dim(sd, &k_proj, 0) == Some(1024) && dim(sd, &k_proj, 1) == Some(5120))
        .then(|| (layers.clone(), hidden, layer_count(sd, &layers)))
}

/// A Mistral Small 3 text encoder in one file (InvokeAI's `MistralEncoder_Checkpoint_Config`
/// and `_GGUF_Config`): 30 layers is BFL's "cow" distillation, 40 the full 24B.
fn mistral_encoder(sd: &StateDict, container: Container) -> Option<Finding> {
    let (layers, hidden, n) = mistral_geometry(sd)?;
    let v = match n {
        30 => MistralVariantType::Cow,
        40 => MistralVariantType::Mistral24B,
        _ => return None,
    };
    let format = if container == Container::Gguf {
        F::GgufQuantized
    } else {
        F::Checkpoint
    };
    let mut f = Finding::new(T::MistralEncoder, B::Any, format);
    f.evidence.push(format!(
        "keys `{layers}*`: causal LM {hidden} wide with 8 key/value heads (key projection 1024) → mistral_encoder"
    ));
    f.evidence.push(format!("{n} layers → {v}"));
    f.variant = Some(v.into());
    Some(f)
}

/// The vision tower of a Qwen VL checkpoint (`visual.*`, `model.visual.*`).
fn qwen_visual<'a>(sd: &'a StateDict<'_>) -> Option<&'a str> {
    first_with_prefix(sd, "visual.").or_else(|| first_with_prefix(sd, "model.visual."))
}

/// A Qwen VL text encoder in one file: a language model plus a vision tower. Qwen3-VL
/// (Krea-2's and Ideogram 4's encoder) by its DeepStack mergers or the QK-norm of Qwen3's
/// attention, its variant from the width; else Qwen2.5-VL (Qwen-Image's,
/// `qwen_2.5_vl_7b_fp8_scaled`).
fn qwen_vl_encoder(sd: &StateDict, container: Container) -> Option<Finding> {
    if container == Container::Gguf {
        return None;
    }
    let visual = qwen_visual(sd)?.to_owned();
    let (_, layers, embed, norm) = lm_root(sd)?;
    let deepstack = any_key(sd, |k| k.contains("visual.deepstack_merger_list."));
    let qk_norm = first_with_prefix(sd, &format!("{layers}0.self_attn.q_norm."));
    if let Some(k) = deepstack.or(qk_norm) {
        let mut f = Finding::new(T::Qwen3VlEncoder, B::Any, F::Checkpoint);
        f.evidence.push(format!(
            "keys `{layers}*` and `{visual}`: language model with a vision tower; `{k}` is Qwen3-VL's → qwen3_vl_encoder"
        ));
        let width = dim(sd, &norm, 0).or_else(|| dim(sd, &embed, 1));
        let v = match width {
            Some(4096) => Qwen3VlVariantType::Qwen3Vl8B,
            _ => Qwen3VlVariantType::Qwen3Vl4B,
        };
        f.evidence.push(match width {
            Some(w @ (2560 | 4096)) => format!("hidden size {w} → {v}"),
            Some(w) => format!("hidden size {w}: {v} by default"),
            None => format!("no hidden size: {v} by default"),
        });
        f.variant = Some(v.into());
        return Some(f);
    }
    let mut f = Finding::new(T::QwenVlEncoder, B::Any, F::Checkpoint);
    f.evidence.push(format!(
        "keys `{layers}*` and `{visual}`: language model with a vision tower, no Qwen3 QK-norm → qwen_vl_encoder (Qwen2.5-VL)"
    ));
    Some(f)
}

/// The ComfyUI prefixes Wan transformers come under.
const WAN_PREFIXES: [&str; 3] = ["", "model.diffusion_model.", "diffusion_model."];

/// A Wan 2.2 transformer in one file (InvokeAI's `Main_Checkpoint_Wan_Config`, native or
/// diffusers names): the input conv `patch_embedding`, a text projection, and a block's own
/// (undecorated) attention weight — which I2V LoRAs carrying a replacement `patch_embedding`
/// lack. The variant is the conv's (width, input channels): 5120/16 T2V-A14B, 5120/36
/// I2V-A14B, 3072/48 TI2V-5B. Wan 2.1 (a CLIP image embedder, or 1536 wide) and the branches
/// InvokeAI cannot run (Animate, S2V, Fun-Control, VACE) are not matched.
fn main_wan(sd: &StateDict, container: Container) -> Option<Finding> {
    let p = WAN_PREFIXES.into_iter().find(|p| {
        sd.tensors
            .contains_key(&format!("{p}patch_embedding.weight"))
    })?;
    let text = [
        "condition_embedder.text_embedder.linear_1.weight",
        "text_embedding.0.weight",
    ]
    .into_iter()
    .map(|n| format!("{p}{n}"))
    .find(|k| sd.tensors.contains_key(k))?;
    let block = ["blocks.0.self_attn.q.weight", "blocks.0.attn1.to_q.weight"]
        .into_iter()
        .map(|n| format!("{p}{n}"))
        .find(|k| sd.tensors.contains_key(k))?;
    let pe = format!("{p}patch_embedding.weight");
    let (inner, in_ch) = (dim(sd, &pe, 0)?, dim(sd, &pe, 1)?);
    let unsupported = [
        "face_adapter.",
        "motion_encoder.",
        "audio_injector.",
        "casual_audio_encoder.",
        "control_adapter.",
        "vace_blocks.",
        "img_emb.",
        "condition_embedder.image_embedder.",
    ];
    if unsupported
        .iter()
        .any(|u| has_prefix(sd, &format!("{p}{u}")))
    {
        return None;
    }
    let v = match (inner, in_ch) {
        (5120, 16) => WanVariantType::T2vA14b,
        (5120, 36) => WanVariantType::I2vA14b,
        (3072, 48) => WanVariantType::Ti2v5b,
        _ => return None,
    };
    let mut f = Finding::new(T::Main, B::Wan, container_format(container));
    f.evidence.push(format!(
        "keys `{pe}`, `{text}`, `{block}`: Wan transformer → main wan"
    ));
    f.evidence.push(format!(
        "`{pe}` is {inner} wide with {in_ch} input channels → {v}"
    ));
    f.variant = Some(v.into());
    Some(f)
}

/// Krea-2's transformer in one file (InvokeAI's `_has_krea2_keys`): its text-fusion stage
/// (`text_fusion` / `time_mod_proj`, or the native `txtfusion`) beside an image input
/// (`img_in`, native `first` / `tproj`), and no LoRA factors. InvokeAI looks for those names
/// as any part of any key; the top-level prefixes (bare or ComfyUI's) are where they sit.
fn main_krea2(sd: &StateDict, container: Container) -> Option<Finding> {
    let find = |names: &[&str]| {
        ["", "model.diffusion_model.", "diffusion_model."]
            .iter()
            .flat_map(|p| names.iter().map(move |n| format!("{p}{n}.")))
            .find_map(|n| first_with_prefix(sd, &n).map(str::to_owned))
    };
    let fusion = find(&["text_fusion", "txtfusion", "time_mod_proj"])?;
    let image = find(&["img_in", "first", "tproj"])?;
    if has_lora_suffix(sd)
        || any_key(sd, |k| {
            k.rsplit_once('.').is_some_and(|(_, last)| last == "alpha")
        })
        .is_some()
    {
        return None;
    }
    let mut f = Finding::new(T::Main, B::Krea2, container_format(container));
    f.evidence.push(format!(
        "keys `{fusion}` (text fusion) and `{image}`: Krea-2 transformer → main krea-2"
    ));
    // Turbo and Raw share the architecture; the name decides ([`refine_by_name`]).
    f.variant = Some(Krea2VariantType::Turbo.into());
    Some(f)
}

/// An LTX-2 transformer in one file, official layout (InvokeAI's `Main_Checkpoint_LTX2_Config`
/// and `checkpoint_layout.classify_roles`): the audio→video gate's timestep embedder beside
/// `transformer_blocks`, bare or under `model.diffusion_model.`. InvokeAI runs LTX-2.5 only;
/// the generation is the header's `model_version`, else 2.5's structure (no video feed-forward
/// bias, an audio one). Other generations are not matched (InvokeAI refuses them).
fn main_ltx2(sd: &StateDict, container: Container) -> Option<Finding> {
    const FINGERPRINT: &str = "av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight";
    if container != Container::Safetensors {
        return None;
    }
    let p = ["", "model.diffusion_model."].into_iter().find(|p| {
        sd.tensors.contains_key(&format!("{p}{FINGERPRINT}"))
            && has_prefix(sd, &format!("{p}transformer_blocks."))
    })?;
    let (generation, why) = if let Some(v) = sd.metadata.get("model_version") {
        let mut parts = v.split('.');
        let g = match (parts.next(), parts.next()) {
            (Some(a), Some(b)) if a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok() => {
                format!("{a}.{b}")
            }
            _ => return None,
        };
        (g, format!("metadata model_version = `{v}`"))
    } else {
        let has = |k: &str| {
            sd.tensors
                .contains_key(&format!("{p}transformer_blocks.0.{k}"))
        };
        if !has("ff.net.0.proj.weight") {
            return None;
        }
        if has("ff.net.2.bias") || !has("audio_ff.net.2.bias") {
            return None;
        }
        (
            "2.5".to_owned(),
            "no video feed-forward bias beside an audio one: LTX-2.5's structure".to_owned(),
        )
    };
    if generation != "2.5" {
        return None;
    }
    let mut f = Finding::new(T::Main, B::Ltx2, F::Checkpoint);
    f.evidence.push(format!(
        "key `{p}{FINGERPRINT}` with `{p}transformer_blocks.*`: LTX-2 transformer → main ltx-2"
    ));
    f.evidence.push(format!("{why} → LTX-{generation}"));
    // Dev and Distilled are key-for-key identical; the name decides ([`refine_by_name`]).
    f.variant = Some(Ltx2VariantType::Dev.into());
    Some(f)
}

/// A MiniMax H3 transformer in one file: its joint audio and video patch projections and the
/// fused-QKV block of the remote-code layout. FL2VA unless the name says Ref2VA (the two are
/// key-for-key identical; [`refine_by_name`]).
fn main_minimax_h3(sd: &StateDict, container: Container) -> Option<Finding> {
    const KEYS: [&str; 3] = [
        "audio_patch_proj.weight",
        "video_patch_proj.weight",
        "blocks.0.attn.qkv_proj.weight",
    ];
    if !KEYS.iter().all(|k| sd.tensors.contains_key(k)) || container == Container::Gguf {
        return None;
    }
    let mut f = Finding::new(T::Main, B::MiniMaxH3, F::Checkpoint);
    f.evidence.push(format!(
        "keys `{}`: MiniMax H3 audio-video transformer → main minimax-h3",
        KEYS.join("`, `")
    ));
    f.variant = Some(MiniMaxH3VariantType::Fl2va.into());
    Some(f)
}

/// One of Ideogram 4's two transformer branches in one file: the image-indicator embedding of
/// its packed text/image sequence and its input, AdaLN and output projections.
fn main_ideogram4(sd: &StateDict, container: Container) -> Option<Finding> {
    const KEYS: [&str; 4] = [
        "embed_image_indicator.weight",
        "input_proj.weight",
        "adaln_proj.weight",
        "final_layer.linear.weight",
    ];
    if !KEYS.iter().all(|k| sd.tensors.contains_key(k)) || container == Container::Gguf {
        return None;
    }
    let mut f = Finding::new(T::Main, B::Ideogram4, F::Checkpoint);
    f.evidence.push(format!(
        "keys `{}`: Ideogram 4 transformer → main ideogram-4",
        KEYS.join("`, `")
    ));
    if let Some(b) = sd.metadata.get("model_type") {
        f.evidence
            .push(format!("metadata model_type = `{b}` (the branch)"));
    }
    Some(f)
}

/// ERNIE-Image's transformer in one file (InvokeAI's `Main_Checkpoint_ErnieImage_Config` and
/// its GGUF twin; Comfy-Org ships it under the diffusers names): the patch projection
/// `x_embedder.proj`, the text projection `text_proj`, the model-level `adaLN_modulation` and
/// the `final_norm` — all four, since Anima has an `x_embedder` too. Base and Turbo share every
/// key; InvokeAI models no variant and takes Turbo's defaults from the name.
fn main_ernie_image(sd: &StateDict, container: Container) -> Option<Finding> {
    const KEYS: [&str; 4] = [
        "x_embedder.proj.weight",
        "text_proj.weight",
        "adaLN_modulation.1.weight",
        "final_norm.linear.weight",
    ];
    if !KEYS.iter().all(|k| sd.tensors.contains_key(k)) {
        return None;
    }
    let mut f = Finding::new(T::Main, B::ErnieImage, container_format(container));
    f.evidence.push(format!(
        "keys `{}`: ERNIE-Image transformer → main ernie-image",
        KEYS.join("`, `")
    ));
    if let Some(w) = dim(sd, "x_embedder.proj.weight", 0) {
        f.evidence.push(format!("hidden size {w}"));
    }
    Some(f)
}

/// What only the file name says, after the rules: a checkpoint VAE's base
/// ([`vae_base_by_name`]), a PiD decoder's backbone and preset, a MiniMax H3 transformer's
/// task, and Qwen-Image's edit variant (InvokeAI reads the same names).
pub(crate) fn refine_by_name(f: &mut Finding, file_name: &str) {
    vae_base_by_name(f, file_name);
    let l = file_name.to_ascii_lowercase();
    match (f.model_type, f.base) {
        (T::PidDecoder, _) => {
            let base = if l.contains("flux2") || l.contains("flux-2") || l.contains("flux_2") {
                Some(B::Flux2)
            } else if l.contains("flux") {
                Some(B::Flux)
            } else if l.contains("sd3") || l.contains("sd-3") || l.contains("sd_3") {
                Some(B::StableDiffusion3)
            } else {
                None
            };
            if let Some(b) = base {
                f.base = b;
                f.base_candidates.clear();
                f.evidence
                    .push(format!("name `{file_name}` names the {b} backbone"));
            } else {
                f.evidence.push(format!(
                    "name `{file_name}` names no backbone (flux, flux2, sd3): set config.base"
                ));
            }
            if l.contains("res2kto4k") || l.contains("res2k_to_4k") || l.contains("res2k_to4k") {
                f.variant = Some(PidDecoderVariantType::Res2kTo4kSr4x.into());
                f.evidence
                    .push(format!("name `{file_name}` → res2kto4k_sr4x"));
            }
        }
        // InvokeAI: `turbo` wins; else a `raw` or `base` token is the undistilled Base.
        (T::Main, B::Krea2) if !l.contains("turbo") => {
            let base = l
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|t| t == "raw" || t == "base");
            if base {
                f.variant = Some(Krea2VariantType::Base.into());
                f.evidence.push(format!(
                    "name `{file_name}` has a `raw`/`base` token → krea2_base"
                ));
            } else {
                f.evidence.push(format!(
                    "name `{file_name}` says nothing: krea2_turbo, InvokeAI's default"
                ));
            }
        }
        (T::Main, B::Ltx2) if l.contains("distilled") => {
            f.variant = Some(Ltx2VariantType::Distilled.into());
            f.evidence.push(format!(
                "name `{file_name}` says distilled → ltx2_distilled"
            ));
        }
        (T::Main, B::MiniMaxH3) if l.contains("ref2va") => {
            f.variant = Some(MiniMaxH3VariantType::Ref2va.into());
            f.evidence.push(format!("name `{file_name}` → ref2va"));
        }
        (T::Main, B::QwenImage) if f.variant.is_none() => {
            let edit = l
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|t| t == "edit");
            let v = if edit {
                QwenImageVariantType::Edit
            } else {
                QwenImageVariantType::Generate
            };
            f.evidence.push(if edit {
                format!("name `{file_name}` has the token `edit` → edit")
            } else {
                "no `__index_timestep_zero__` and no `edit` in the name → generate".to_owned()
            });
            f.variant = Some(v.into());
        }
        _ => {}
    }
}

fn unknown(sd: &StateDict, container: Container) -> Finding {
    let mut f = Finding::unknown(container_format(container));
    let n = sd.tensors.len();
    let sample: Vec<String> = sd
        .tensors
        .iter()
        .take(5)
        .map(|(k, t)| format!("`{k}` {:?}", t.shape))
        .collect();
    f.evidence.push(format!(
        "{n} tensors, none matching a known layout; first: {}",
        sample.join(", ")
    ));
    let hints: [(&str, &str); 8] = [
        (
            "av_ca_a2v_gate_adaln_single.",
            "an LTX-2 transformer of a generation InvokeAI 6.x does not run (it runs LTX-2.5)",
        ),
        (
            "encoder.block.0.layer.0.SelfAttention",
            "a T5 encoder that is not T5 v1.1 in one safetensors file (UMT5, T5 v1.0, a pickle, a decoder or a shard: InvokeAI records these as folders)",
        ),
        (
            ".linear_attn.",
            "a Qwen3.5 language model (Gated DeltaNet), which InvokeAI 6.x records as its own type",
        ),
        (
            "patch_embedding.weight",
            "a Wan-family video transformer InvokeAI's Wan 2.2 loader does not run (Wan 2.1, Animate, S2V, Fun-Control, VACE, or an unknown width)",
        ),
        (
            "body.0.block1.weight",
            "a single-file T2I-Adapter (InvokeAI loads T2I-Adapters only as diffusers folders)",
        ),
        (
            "text_model.encoder.layers.",
            "a CLIP text encoder (recorded as clip_embed folders)",
        ),
        (
            "vision_model.encoder.layers.",
            "a CLIP vision encoder (recorded as clip_vision folders)",
        ),
        (
            "down_blocks.0.",
            "a diffusers component saved as a single file",
        ),
    ];
    for (needle, what) in hints {
        if let Some(k) = any_key(sd, |k| k.contains(needle)) {
            f.evidence.push(format!("key `{k}` suggests {what}"));
        }
    }
    if let Some((_, why)) = base_from_metadata(sd) {
        f.evidence.push(format!("{why} (base only; type unknown)"));
    }
    f
}
