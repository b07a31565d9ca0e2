//! Identification rules for single-file checkpoints, from tensor names and shapes only.
//!
//! The rules follow InvokeAI's probe where it has one and say in the evidence which key and
//! which width decided. Widths: the context (cross-attention) dimension is 768 for SD 1.x
//! (CLIP ViT-L), 1024 for SD 2.x (OpenCLIP ViT-H), 2048 for SDXL base (both encoders
//! concatenated) and 1280 for the SDXL refiner (OpenCLIP ViT-bigG only).

use super::{Finding, StateDict};
use crate::taxonomy::{
    BaseModelType as B, FluxVariantType, ModelFormat as F, ModelType as T, ModelVariantType as V,
    SchedulerPredictionType as P,
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

/// Classifies a state dict.
pub(crate) fn classify(sd: &StateDict, container: Container) -> Finding {
    if sd.tensors.is_empty() {
        let mut f = Finding::unknown(container_format(container));
        f.evidence.push("no tensors found".into());
        return f;
    }
    if container == Container::Gguf {
        return gguf(sd);
    }
    let checks: [fn(&StateDict, Container) -> Option<Finding>; 9] = [
        control_lora,
        lora,
        ip_adapter,
        controlnet,
        textual_inversion,
        main_sd,
        main_flux,
        main_sd3,
        vae,
    ];
    for check in checks {
        if let Some(f) = check(sd, container) {
            return f;
        }
    }
    unknown(sd, container)
}

fn container_format(c: Container) -> F {
    match c {
        Container::Gguf => F::GgufQuantized,
        Container::Safetensors | Container::Pickle => F::Checkpoint,
    }
}

fn gguf(sd: &StateDict) -> Finding {
    let arch = sd.metadata.get("general.architecture").cloned();
    if let Some(mut f) = main_flux(sd, Container::Gguf)
        .or_else(|| main_sd3(sd, Container::Gguf))
        .or_else(|| main_sd(sd, Container::Gguf))
    {
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

fn is_lora_key(k: &str) -> bool {
    k.starts_with("lora_te_")
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
    let k = any_key(sd, is_lora_key)?.to_owned();
    let kohya = sd.tensors.keys().any(|k| k.starts_with("lora_"));
    let format = if kohya || any_key(sd, |k| k.contains(".hada_") || k.contains(".lokr_")).is_some()
    {
        F::Lycoris
    } else {
        F::Diffusers
    };
    let mut f = Finding::new(T::Lora, B::Unknown, format);
    let style = if any_key(sd, |k| k.contains(".lokr_")).is_some() {
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

    // Flux and SD3 by block names (kohya, diffusers and ComfyUI spellings).
    if let Some(k) = any_key(sd, |k| {
        k.starts_with("lora_unet_double_blocks_")
            || k.starts_with("lora_unet_single_blocks_")
            || k.starts_with("lora_transformer_single_transformer_blocks")
            || k.contains("single_transformer_blocks.")
            || k.contains("double_blocks.")
    }) {
        f.base = B::Flux;
        f.evidence
            .push(format!("key `{k}`: flux transformer blocks → flux"));
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

fn ip_adapter(sd: &StateDict, _: Container) -> Option<Finding> {
    if let Some(k) = any_key(sd, |k| k.contains("ip_adapter_double_stream")) {
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
    let marker = any_key(sd, |k| {
        k.starts_with("control_model.")
            || k.starts_with("controlnet_cond_embedding.")
            || k.starts_with("controlnet_down_blocks.")
            || k.starts_with("controlnet_blocks.")
            || k.starts_with("input_hint_block.")
    })?
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
    let marker = any_key(sd, |k| {
        k.starts_with("model.diffusion_model.input_blocks.")
            || k.starts_with("cond_stage_model.")
            || k.starts_with("conditioner.embedders.")
    })?
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
    let prefix = ["", "model.diffusion_model."].into_iter().find(|p| {
        sd.tensors
            .contains_key(&format!("{p}double_blocks.0.img_attn.qkv.weight"))
            || has_prefix(sd, &format!("{p}double_blocks.0."))
    })?;
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
    }
    Some(f)
}

fn main_sd3(sd: &StateDict, container: Container) -> Option<Finding> {
    let k = any_key(sd, |k| {
        k.starts_with("joint_blocks.0.") || k.starts_with("model.diffusion_model.joint_blocks.0.")
    })?
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
    match latent {
        Some(16) => {
            f.base = B::Flux;
            f.evidence.push(
                "16 latent channels → flux autoencoder (an SD3 VAE has the same layout: override base: sd-3)".into(),
            );
        }
        Some(4) => {
            f.base_candidates = vec![B::StableDiffusion1, B::StableDiffusionXL];
            f.evidence.push(
                "4 latent channels: the SD 1.x/2.x and SDXL VAEs share this layout — ambiguous between sd-1 and sdxl; set config.base".into(),
            );
        }
        Some(c) => f
            .evidence
            .push(format!("{c} latent channels: no known base")),
        None => f.evidence.push("latent channels not determinable".into()),
    }
    Some(f)
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
    let hints: [(&str, &str); 4] = [
        (
            "encoder.block.0.layer.0.SelfAttention",
            "a T5 encoder (modelsync records T5 encoders as folders)",
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
