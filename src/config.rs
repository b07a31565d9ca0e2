//! Model configuration records: the seed's `ModelConfigBase` hierarchy and `AnyModelConfig` union.
//!
//! [`AnyModelConfig`] is one enum with a variant per legal (type, format) pair, as InvokeAI's
//! pydantic union is. On the wire (JSON in the SQLite store, YAML in the file store, `-o json`)
//! a record is one flat object whose `type` and `format` keys are the discriminator, for example
//! `{"key": "…", "name": "sd15", "type": "main", "format": "checkpoint", "base": "sd-1", …}`.
//! Deserialising goes through [`RawConfig`], which rejects unknown keys and keys that do not
//! belong to the chosen (type, format), so a stored record is always valid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::taxonomy::{
    AnyVariant, BaseModelType, ModelFormat, ModelRepoVariant, ModelType, SchedulerPredictionType,
    SubModelType,
};

/// A config dict that could not become a record.
#[derive(Debug, thiserror::Error)]
pub enum InvalidModelConfig {
    /// `type` and `format` name no config class.
    #[error(
        "no model config class for type `{model_type}` with format `{format}`; valid formats for `{model_type}`: {valid}"
    )]
    Combination {
        model_type: ModelType,
        format: ModelFormat,
        valid: String,
    },
    /// A field that does not belong to the chosen class.
    #[error("field `{field}` is not valid for a `{model_type}` model in `{format}` format")]
    FieldNotAllowed {
        field: &'static str,
        model_type: ModelType,
        format: ModelFormat,
    },
    /// A variant of another family than the model's type and base use.
    #[error("variant `{variant}` is not valid for a `{model_type}` model of base `{base}`")]
    Variant {
        variant: AnyVariant,
        model_type: ModelType,
        base: BaseModelType,
    },
    /// A required field is missing or empty.
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    /// The dict does not parse (wrong type, unknown key, unknown enum value …).
    #[error("invalid model config: {0}")]
    Parse(String),
}

/// The source a model was installed from, as the seed's `ModelSourceType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelSourceType {
    /// A path on this machine.
    Path,
    /// An http(s) URL.
    Url,
    /// A Hugging Face repo id.
    HfRepoId,
    /// A model hosted by an external provider (InvokeAI's external API models).
    External,
}

/// Ownership by a manifest entry (`apply` sets it; unmanaged records from `import` have none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Managed {
    /// The manifest entry's `name`.
    pub entry: String,
    /// Hash of the entry's normalised spec at the time it was applied.
    pub spec_hash: String,
}

/// One component of a main diffusers model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmodelDefinition {
    /// Folder of the component, relative to the model's path.
    pub path_or_prefix: String,
    /// The component's type (`vae`, `text_encoder` …).
    pub model_type: ModelType,
    /// Variant of the component where it matters (unet in-channels, CLIP size …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<AnyVariant>,
}

/// Fields every record has (the seed's `ModelConfigBase` plus bookkeeping).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfigBase {
    /// Unique id, 32 random hex characters unless given.
    pub key: String,
    /// Human name (not unique).
    pub name: String,
    /// Base model family.
    pub base: BaseModelType,
    /// Location on disk; relative paths are relative to `models_dir`.
    pub path: String,
    /// Content hash, `algo:hex`.
    pub hash: String,
    /// Free-form description.
    pub description: Option<String>,
    /// Where it came from (path, URL or repo id), never with a token.
    pub source: String,
    /// What kind of source that is.
    pub source_type: ModelSourceType,
    /// Raw metadata the source answered with (Hugging Face model info …).
    pub source_api_response: Option<serde_json::Value>,
    /// Bytes on disk.
    pub file_size: u64,
    /// Searchable tags.
    pub tags: Vec<String>,
    /// Trigger phrases (LoRAs, embeddings).
    pub trigger_phrases: Vec<String>,
    /// A page about the model (InvokeAI's `source_url`).
    pub source_url: Option<String>,
    /// A preview image (InvokeAI's `cover_image`).
    pub cover_image: Option<String>,
    /// InvokeAI's per-model `default_settings` (steps, weight, preprocessor …), kept as given.
    pub default_settings: Option<serde_json::Value>,
    /// InvokeAI's `cpu_only` flag of encoders and VAEs, kept as given.
    pub cpu_only: Option<bool>,
    /// When the record was created.
    pub created_at: SystemTime,
    /// When the record was last changed.
    pub updated_at: SystemTime,
    /// Set when a manifest entry owns this record.
    pub managed: Option<Managed>,
}

/// Checkpoint-format fields (`CheckpointConfig`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointFields {
    /// Path to the legacy config YAML; relative to `models_dir`.
    pub config_path: Option<String>,
}

/// Main-model fields (`MainConfig` and `ONNXSD2Config`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MainFields {
    /// A VAE to use instead of the built-in one.
    pub vae: Option<String>,
    /// normal / inpaint / depth for Stable Diffusion; the family's variant for others (FLUX
    /// `dev`, FLUX.2 `klein_4b`, Z-Image `turbo` …); none where InvokeAI records none.
    pub variant: Option<AnyVariant>,
    /// Scheduler prediction type.
    pub prediction_type: Option<SchedulerPredictionType>,
    /// Whether attention must be upcast to fp32.
    pub upcast_attention: bool,
}

/// The variant of a non-main model (CLIP `large`, Qwen3 `qwen3_4b`, Wan LoRA `a14b` …).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VariantFields {
    /// The variant, when the model has one.
    pub variant: Option<AnyVariant>,
}

/// IP-Adapter folder fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IpAdapterFields {
    /// Key of the image encoder model the adapter uses (InvokeAI's `image_encoder_model_id`).
    pub image_encoder_model_id: Option<String>,
}

/// Diffusers-folder fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiffusersFields {
    /// Which file variant was installed.
    pub repo_variant: Option<ModelRepoVariant>,
    /// The components (main models only).
    pub submodels: Option<BTreeMap<SubModelType, SubmodelDefinition>>,
}

/// The flat wire form of a record. Every optional field of every class lives here; converting
/// to [`AnyModelConfig`] checks which ones the (type, format) allows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<ModelType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseModelType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<ModelSourceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_api_response: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_phrases: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_only: Option<bool>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<Managed>,
    // checkpoint
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_path: Option<String>,
    // main
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<AnyVariant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_type: Option<SchedulerPredictionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcast_attention: Option<bool>,
    // diffusers
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_variant: Option<ModelRepoVariant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submodels: Option<BTreeMap<SubModelType, SubmodelDefinition>>,
    // ip adapter
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_encoder_model_id: Option<String>,
}

/// A group of class-specific fields that can be read from and written to a [`RawConfig`].
trait FieldGroup: Sized {
    const FIELDS: &'static [&'static str];
    fn read(raw: &RawConfig) -> Self;
    fn write(&self, raw: &mut RawConfig);
}

impl FieldGroup for CheckpointFields {
    const FIELDS: &'static [&'static str] = &["config_path"];
    fn read(raw: &RawConfig) -> Self {
        Self {
            config_path: raw.config_path.clone(),
        }
    }
    fn write(&self, raw: &mut RawConfig) {
        raw.config_path.clone_from(&self.config_path);
    }
}

impl FieldGroup for MainFields {
    const FIELDS: &'static [&'static str] =
        &["vae", "variant", "prediction_type", "upcast_attention"];
    fn read(raw: &RawConfig) -> Self {
        Self {
            vae: raw.vae.clone(),
            variant: raw.variant_for_base(),
            prediction_type: raw.prediction_type,
            upcast_attention: raw.upcast_attention.unwrap_or(false),
        }
    }
    fn write(&self, raw: &mut RawConfig) {
        raw.vae.clone_from(&self.vae);
        raw.variant = self.variant;
        raw.prediction_type = self.prediction_type;
        raw.upcast_attention = Some(self.upcast_attention);
    }
}

impl FieldGroup for VariantFields {
    const FIELDS: &'static [&'static str] = &["variant"];
    fn read(raw: &RawConfig) -> Self {
        Self {
            variant: raw.variant_for_base(),
        }
    }
    fn write(&self, raw: &mut RawConfig) {
        raw.variant = self.variant;
    }
}

impl FieldGroup for IpAdapterFields {
    const FIELDS: &'static [&'static str] = &["image_encoder_model_id"];
    fn read(raw: &RawConfig) -> Self {
        Self {
            image_encoder_model_id: raw.image_encoder_model_id.clone(),
        }
    }
    fn write(&self, raw: &mut RawConfig) {
        raw.image_encoder_model_id
            .clone_from(&self.image_encoder_model_id);
    }
}

impl FieldGroup for DiffusersFields {
    const FIELDS: &'static [&'static str] = &["repo_variant", "submodels"];
    fn read(raw: &RawConfig) -> Self {
        Self {
            repo_variant: raw.repo_variant,
            submodels: raw.submodels.clone(),
        }
    }
    fn write(&self, raw: &mut RawConfig) {
        raw.repo_variant = self.repo_variant;
        raw.submodels.clone_from(&self.submodels);
    }
}

impl RawConfig {
    /// Names of the class-specific fields that are set.
    fn specific_fields_set(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.config_path.is_some() {
            v.push("config_path");
        }
        if self.vae.is_some() {
            v.push("vae");
        }
        if self.variant.is_some() {
            v.push("variant");
        }
        if self.prediction_type.is_some() {
            v.push("prediction_type");
        }
        if self.upcast_attention.is_some() {
            v.push("upcast_attention");
        }
        if self.repo_variant.is_some() {
            v.push("repo_variant");
        }
        if self.submodels.is_some() {
            v.push("submodels");
        }
        if self.image_encoder_model_id.is_some() {
            v.push("image_encoder_model_id");
        }
        v
    }

    /// `variant`, read as the family of this record's base uses it.
    fn variant_for_base(&self) -> Option<AnyVariant> {
        self.variant.map(|v| self.base.map_or(v, |b| v.for_base(b)))
    }

    fn common(&self) -> Result<ModelConfigBase, InvalidModelConfig> {
        let now = now_micros();
        let time =
            |field: &'static str, v: &Option<String>| -> Result<SystemTime, InvalidModelConfig> {
                match v {
                    None => Ok(now),
                    Some(s) => humantime::parse_rfc3339_weak(s).map_err(|e| {
                        InvalidModelConfig::Parse(format!(
                            "field `{field}`: `{s}` is not an RFC 3339 time: {e}"
                        ))
                    }),
                }
            };
        let name = self
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .ok_or(InvalidModelConfig::Missing("name"))?;
        let path = self
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or(InvalidModelConfig::Missing("path"))?;
        let key = match &self.key {
            Some(k) if !k.is_empty() => k.clone(),
            _ => new_key(),
        };
        Ok(ModelConfigBase {
            key,
            name,
            base: self.base.ok_or(InvalidModelConfig::Missing("base"))?,
            path,
            hash: self.hash.clone().unwrap_or_default(),
            description: self.description.clone(),
            source: self.source.clone().unwrap_or_default(),
            source_type: self.source_type.unwrap_or(ModelSourceType::Path),
            source_api_response: self.source_api_response.clone(),
            file_size: self.file_size.unwrap_or(0),
            tags: self.tags.clone().unwrap_or_default(),
            trigger_phrases: self.trigger_phrases.clone().unwrap_or_default(),
            source_url: self.source_url.clone(),
            cover_image: self.cover_image.clone(),
            default_settings: self.default_settings.clone(),
            cpu_only: self.cpu_only,
            created_at: time("created_at", &self.created_at)?,
            updated_at: time("updated_at", &self.updated_at)?,
            managed: self.managed.clone(),
        })
    }

    fn from_common(c: &ModelConfigBase, t: ModelType, f: ModelFormat) -> Self {
        Self {
            key: Some(c.key.clone()),
            name: Some(c.name.clone()),
            model_type: Some(t),
            format: Some(f),
            base: Some(c.base),
            path: Some(c.path.clone()),
            hash: Some(c.hash.clone()),
            description: c.description.clone(),
            source: Some(c.source.clone()),
            source_type: Some(c.source_type),
            source_api_response: c.source_api_response.clone(),
            file_size: Some(c.file_size),
            tags: Some(c.tags.clone()),
            trigger_phrases: Some(c.trigger_phrases.clone()),
            source_url: c.source_url.clone(),
            cover_image: c.cover_image.clone(),
            default_settings: c.default_settings.clone(),
            cpu_only: c.cpu_only,
            created_at: Some(humantime::format_rfc3339_micros(c.created_at).to_string()),
            updated_at: Some(humantime::format_rfc3339_micros(c.updated_at).to_string()),
            managed: c.managed.clone(),
            ..Self::default()
        }
    }
}

macro_rules! any_model_config {
    ( $( $(#[$m:meta])* $var:ident = $ty:ident / $fmt:ident { $( $g:ident : $gty:ty ),* } ),+ $(,)? ) => {
        /// Any model record: one variant per config class of the seed, keyed by (type, format).
        #[derive(Debug, Clone, PartialEq)]
        pub enum AnyModelConfig {
            $(
                $(#[$m])*
                $var { common: ModelConfigBase, $( $g: $gty ),* },
            )+
            /// A model whose type could not be determined; keeps whatever format was seen.
            Unknown { common: ModelConfigBase, format: ModelFormat },
        }

        /// Every legal (type, format) pair, the discriminator of [`AnyModelConfig`].
        pub const CONFIG_CLASSES: &[(ModelType, ModelFormat)] = &[
            $( (ModelType::$ty, ModelFormat::$fmt), )+
        ];

        /// The class-specific fields the `(type, format)` class has (besides those every
        /// record has), or `None` when no class has that pair.
        pub fn class_fields(t: ModelType, f: ModelFormat) -> Option<Vec<&'static str>> {
            let groups: &[&[&'static str]] = match (t, f) {
                $( (ModelType::$ty, ModelFormat::$fmt) => &[ $( <$gty as FieldGroup>::FIELDS ),* ], )+
                (ModelType::Unknown, _) => &[],
                _ => return None,
            };
            Some(groups.concat())
        }

        impl AnyModelConfig {
            /// The model type (half of the discriminator).
            pub fn model_type(&self) -> ModelType {
                match self {
                    $( Self::$var { .. } => ModelType::$ty, )+
                    Self::Unknown { .. } => ModelType::Unknown,
                }
            }

            /// The model format (the other half).
            pub fn format(&self) -> ModelFormat {
                match self {
                    $( Self::$var { .. } => ModelFormat::$fmt, )+
                    Self::Unknown { format, .. } => *format,
                }
            }

            /// The fields every class has.
            pub fn common(&self) -> &ModelConfigBase {
                match self {
                    $( Self::$var { common, .. } )|+ | Self::Unknown { common, .. } => common,
                }
            }

            /// The fields every class has, mutably.
            pub fn common_mut(&mut self) -> &mut ModelConfigBase {
                match self {
                    $( Self::$var { common, .. } )|+ | Self::Unknown { common, .. } => common,
                }
            }

            /// The class's field group of type `G`, when it has one.
            fn group<G: 'static>(&self) -> Option<&G> {
                match self {
                    $(
                        #[allow(unused_variables)]
                        Self::$var { $( $g, )* .. } => {
                            $(
                                if let Some(x) = ($g as &dyn ::std::any::Any).downcast_ref::<G>() {
                                    return Some(x);
                                }
                            )*
                            None
                        }
                    )+
                    Self::Unknown { .. } => None,
                }
            }

            /// The flat wire form.
            pub fn to_raw(&self) -> RawConfig {
                match self {
                    $(
                        #[allow(unused_mut)]
                        Self::$var { common, $( $g ),* } => {
                            let mut raw = RawConfig::from_common(common, ModelType::$ty, ModelFormat::$fmt);
                            $( FieldGroup::write($g, &mut raw); )*
                            raw
                        }
                    )+
                    Self::Unknown { common, format } => RawConfig::from_common(common, ModelType::Unknown, *format),
                }
            }

            /// Validates a flat config and picks its class by (type, format).
            pub fn from_raw(raw: &RawConfig) -> Result<Self, InvalidModelConfig> {
                let t = raw.model_type.ok_or(InvalidModelConfig::Missing("type"))?;
                let f = raw.format.ok_or(InvalidModelConfig::Missing("format"))?;
                let allowed: &[&[&'static str]] = match (t, f) {
                    $( (ModelType::$ty, ModelFormat::$fmt) => &[ $( <$gty as FieldGroup>::FIELDS ),* ], )+
                    (ModelType::Unknown, _) => &[],
                    _ => {
                        let valid: Vec<&str> = CONFIG_CLASSES
                            .iter()
                            .filter(|(ty, _)| *ty == t)
                            .map(|(_, fmt)| fmt.as_str())
                            .collect();
                        return Err(InvalidModelConfig::Combination {
                            model_type: t,
                            format: f,
                            valid: if valid.is_empty() { "(any)".to_owned() } else { valid.join(", ") },
                        });
                    }
                };
                if let Some(field) = raw
                    .specific_fields_set()
                    .into_iter()
                    .find(|field| !allowed.iter().any(|g| g.contains(field)))
                {
                    return Err(InvalidModelConfig::FieldNotAllowed { field, model_type: t, format: f });
                }
                if let Some(v) = raw.variant_for_base() {
                    check_variant(t, raw.base.unwrap_or(BaseModelType::Unknown), v)?;
                }
                let common = raw.common()?;
                Ok(match (t, f) {
                    $( (ModelType::$ty, ModelFormat::$fmt) => Self::$var { common, $( $g: <$gty as FieldGroup>::read(raw) ),* }, )+
                    _ => Self::Unknown { common, format: f },
                })
            }
        }
    };
}

// One line per legal (type, format) pair of InvokeAI's `AnyModelConfig` union (its classes are
// per base as well; here base is a field). Classes InvokeAI only had in older versions
// (`main.onnx`, `main.olive`, `onnx.onnx`, `control_lora.diffusers`,
// `t5_encoder.bnb_quantized_nf4b`) stay so old stores keep reading.
any_model_config! {
    /// `main.checkpoint`: a single-file pipeline checkpoint.
    MainCheckpoint = Main / Checkpoint { checkpoint: CheckpointFields, main: MainFields },
    /// `main.bnb_quantized_nf4b`: a bitsandbytes NF4 quantised checkpoint (flux).
    MainBnbQuantized4b = Main / BnbQuantizedNf4b { checkpoint: CheckpointFields, main: MainFields },
    /// `main.gguf_quantized`: a GGUF quantised checkpoint.
    MainGguf = Main / GgufQuantized { checkpoint: CheckpointFields, main: MainFields },
    /// `main.sdnq_quantized`: an SDNQ quantised checkpoint or folder.
    MainSdnq = Main / SdnqQuantized { checkpoint: CheckpointFields, main: MainFields, diffusers: DiffusersFields },
    /// `main.diffusers`: a diffusers pipeline folder.
    MainDiffusers = Main / Diffusers { main: MainFields, diffusers: DiffusersFields },
    /// `main.onnx`: an ONNX pipeline (the seed's ONNXSD2Config fields).
    MainOnnx = Main / Onnx { main: MainFields, diffusers: DiffusersFields },
    /// `main.olive`: an Olive-optimised ONNX pipeline.
    MainOlive = Main / Olive { main: MainFields, diffusers: DiffusersFields },
    /// `onnx.onnx`: a stand-alone ONNX model.
    Onnx = Onnx / Onnx { },
    /// `vae.checkpoint`.
    VaeCheckpoint = Vae / Checkpoint { checkpoint: CheckpointFields, variant: VariantFields },
    /// `vae.diffusers`.
    VaeDiffusers = Vae / Diffusers { diffusers: DiffusersFields, variant: VariantFields },
    /// `controlnet.checkpoint`.
    ControlNetCheckpoint = ControlNet / Checkpoint { checkpoint: CheckpointFields, variant: VariantFields },
    /// `controlnet.diffusers`.
    ControlNetDiffusers = ControlNet / Diffusers { diffusers: DiffusersFields, variant: VariantFields },
    /// `lora.lycoris`: kohya / LyCORIS single file.
    LoraLycoris = Lora / Lycoris { variant: VariantFields },
    /// `lora.omi`: a LoRA in the OpenModelInitiative layout.
    LoraOmi = Lora / Omi { variant: VariantFields },
    /// `lora.diffusers`: a diffusers/peft LoRA folder or file.
    LoraDiffusers = Lora / Diffusers { variant: VariantFields },
    /// `control_lora.lycoris`.
    ControlLoraLycoris = ControlLora / Lycoris { },
    /// `control_lora.diffusers`.
    ControlLoraDiffusers = ControlLora / Diffusers { },
    /// `embedding.embedding_file`: a textual-inversion file.
    TextualInversionFile = TextualInversion / EmbeddingFile { },
    /// `embedding.embedding_folder`: a folder with `learned_embeds.*`.
    TextualInversionFolder = TextualInversion / EmbeddingFolder { },
    /// `ip_adapter.invokeai`: an IP-Adapter folder.
    IpAdapterInvokeAI = IpAdapter / InvokeAI { ip_adapter: IpAdapterFields },
    /// `ip_adapter.checkpoint`: a single-file IP-Adapter.
    IpAdapterCheckpoint = IpAdapter / Checkpoint { },
    /// `clip_vision.diffusers`: a CLIP image encoder.
    ClipVisionDiffusers = ClipVision / Diffusers { diffusers: DiffusersFields },
    /// `clip_embed.diffusers`: a CLIP text encoder (variant `large` or `gigantic`).
    ClipEmbedDiffusers = ClipEmbed / Diffusers { diffusers: DiffusersFields, variant: VariantFields },
    /// `t2i_adapter.diffusers`.
    T2IAdapterDiffusers = T2IAdapter / Diffusers { diffusers: DiffusersFields },
    /// `t5_encoder.t5_encoder`: InvokeAI's T5 folder (`text_encoder_2/` + `tokenizer_2/`).
    T5Encoder = T5Encoder / T5Encoder { },
    /// `t5_encoder.checkpoint`: a T5 encoder in one safetensors file (ComfyUI's `t5xxl_*`).
    T5EncoderCheckpoint = T5Encoder / Checkpoint { checkpoint: CheckpointFields },
    /// `t5_encoder.bnb_quantized_nf4b`.
    T5EncoderBnbQuantized = T5Encoder / BnbQuantizedNf4b { },
    /// `t5_encoder.bnb_quantized_int8b`: a bitsandbytes LLM.int8 T5 folder.
    T5EncoderBnbInt8 = T5Encoder / BnbQuantizedInt8b { },
    /// `t5_encoder.gguf_quantized`.
    T5EncoderGguf = T5Encoder / GgufQuantized { checkpoint: CheckpointFields },
    /// `t5_encoder.sdnq_quantized`.
    T5EncoderSdnq = T5Encoder / SdnqQuantized { },
    /// `qwen3_encoder.qwen3_encoder`: a Qwen3 text encoder folder.
    Qwen3Encoder = Qwen3Encoder / Qwen3Encoder { variant: VariantFields },
    /// `qwen3_encoder.checkpoint`: a single-file Qwen3 text encoder.
    Qwen3EncoderCheckpoint = Qwen3Encoder / Checkpoint { checkpoint: CheckpointFields, variant: VariantFields },
    /// `qwen3_encoder.gguf_quantized`.
    Qwen3EncoderGguf = Qwen3Encoder / GgufQuantized { checkpoint: CheckpointFields, variant: VariantFields },
    /// `qwen3_encoder.sdnq_quantized`.
    Qwen3EncoderSdnq = Qwen3Encoder / SdnqQuantized { variant: VariantFields },
    /// `qwen_vl_encoder.qwen_vl_encoder`: a Qwen2.5-VL encoder folder.
    QwenVlEncoder = QwenVlEncoder / QwenVlEncoder { },
    /// `qwen_vl_encoder.diffusers`.
    QwenVlEncoderDiffusers = QwenVlEncoder / Diffusers { diffusers: DiffusersFields },
    /// `qwen_vl_encoder.checkpoint`.
    QwenVlEncoderCheckpoint = QwenVlEncoder / Checkpoint { checkpoint: CheckpointFields },
    /// `qwen3_vl_encoder.qwen3_vl_encoder`: a Qwen3-VL encoder folder.
    Qwen3VlEncoder = Qwen3VlEncoder / Qwen3VlEncoder { variant: VariantFields },
    /// `qwen3_vl_encoder.checkpoint`.
    Qwen3VlEncoderCheckpoint = Qwen3VlEncoder / Checkpoint { checkpoint: CheckpointFields, variant: VariantFields },
    /// `qwen3_vl_encoder.gguf_quantized`.
    Qwen3VlEncoderGguf = Qwen3VlEncoder / GgufQuantized { checkpoint: CheckpointFields, variant: VariantFields },
    /// `mistral_encoder.mistral_encoder`.
    MistralEncoder = MistralEncoder / MistralEncoder { variant: VariantFields },
    /// `mistral_encoder.diffusers`.
    MistralEncoderDiffusers = MistralEncoder / Diffusers { diffusers: DiffusersFields, variant: VariantFields },
    /// `mistral_encoder.checkpoint`.
    MistralEncoderCheckpoint = MistralEncoder / Checkpoint { checkpoint: CheckpointFields, variant: VariantFields },
    /// `mistral_encoder.gguf_quantized`.
    MistralEncoderGguf = MistralEncoder / GgufQuantized { checkpoint: CheckpointFields, variant: VariantFields },
    /// `wan_t5_encoder.wan_t5_encoder`: Wan's UMT5-XXL encoder.
    WanT5Encoder = WanT5Encoder / WanT5Encoder { },
    /// `gemma2_encoder.gemma2_encoder`.
    Gemma2Encoder = Gemma2Encoder / Gemma2Encoder { },
    /// `gemma2_encoder.gguf_quantized`.
    Gemma2EncoderGguf = Gemma2Encoder / GgufQuantized { checkpoint: CheckpointFields },
    /// `gemma4_encoder.gemma4_encoder`.
    Gemma4Encoder = Gemma4Encoder / Gemma4Encoder { },
    /// `spandrel_image_to_image.checkpoint`: an upscaler or other image-to-image network.
    SpandrelImageToImage = SpandrelImageToImage / Checkpoint { },
    /// `siglip.diffusers`: a SigLIP image encoder.
    SigLipDiffusers = SigLip / Diffusers { diffusers: DiffusersFields },
    /// `flux_redux.checkpoint`: a FLUX Redux image-prompt adapter.
    FluxReduxCheckpoint = FluxRedux / Checkpoint { },
    /// `llava_onevision.diffusers`: a LLaVA-OneVision vision-language model.
    LlavaOnevisionDiffusers = LlavaOnevision / Diffusers { diffusers: DiffusersFields },
    /// `prompt_enhancer.diffusers`.
    PromptEnhancerDiffusers = PromptEnhancer / Diffusers { diffusers: DiffusersFields },
    /// `text_llm.diffusers`: a transformers text LLM folder.
    TextLlmDiffusers = TextLlm / Diffusers { diffusers: DiffusersFields },
    /// `external_image_generator.external_api`: a model hosted by an external provider.
    ExternalApi = ExternalImageGenerator / ExternalApi { },
    /// `pid_decoder.checkpoint`: a PiD pixel-diffusion decoder.
    PidDecoderCheckpoint = PidDecoder / Checkpoint { checkpoint: CheckpointFields, variant: VariantFields },
}

impl AnyModelConfig {
    /// The record's key.
    pub fn key(&self) -> &str {
        &self.common().key
    }

    /// The record's name.
    pub fn name(&self) -> &str {
        &self.common().name
    }

    /// The record's base model.
    pub fn base(&self) -> BaseModelType {
        self.common().base
    }

    /// The record's stored path (absolute, or relative to `models_dir`).
    pub fn path(&self) -> &str {
        &self.common().path
    }

    /// `type.format`, the discriminator as a string (`main.checkpoint`).
    pub fn class_tag(&self) -> String {
        format!("{}.{}", self.model_type(), self.format())
    }

    /// Checkpoint fields, when the class has them.
    pub fn checkpoint_fields(&self) -> Option<&CheckpointFields> {
        self.group()
    }

    /// Main-model fields, when the class has them.
    pub fn main_fields(&self) -> Option<&MainFields> {
        self.group()
    }

    /// Diffusers fields, when the class has them.
    pub fn diffusers_fields(&self) -> Option<&DiffusersFields> {
        self.group()
    }

    /// IP-Adapter fields, when the class has them.
    pub fn ip_adapter_fields(&self) -> Option<&IpAdapterFields> {
        self.group()
    }

    /// The model's variant, from whichever field group of its class holds one.
    pub fn variant(&self) -> Option<AnyVariant> {
        self.main_fields()
            .and_then(|m| m.variant)
            .or_else(|| self.group::<VariantFields>().and_then(|v| v.variant))
    }

    /// Builds a record from a JSON object through the discriminator (the seed's `dict` form).
    pub fn from_json(value: serde_json::Value) -> Result<Self, InvalidModelConfig> {
        let raw: RawConfig =
            serde_json::from_value(value).map_err(|e| InvalidModelConfig::Parse(e.to_string()))?;
        Self::from_raw(&raw)
    }

    /// The record as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.to_raw()).expect("RawConfig always serialises")
    }

    /// Merges a sparse dict into this record and re-validates the whole result (the seed's
    /// `update_model(key, dict)`). A `null` value clears an optional field. Changing `type` or
    /// `format` picks the new class; fields the new class does not have must be cleared (set
    /// to null) in the same update, or the update is refused. The key cannot change.
    pub fn merged(
        &self,
        changes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, InvalidModelConfig> {
        let mut value = self.to_json();
        let obj = value.as_object_mut().expect("a record is a JSON object");
        if let Some(k) = changes.get("key")
            && k.as_str() != Some(self.key())
        {
            return Err(InvalidModelConfig::Parse(
                "field `key` cannot be changed".into(),
            ));
        }
        for (k, v) in changes {
            if v.is_null() {
                obj.remove(k);
            } else {
                obj.insert(k.clone(), v.clone());
            }
        }
        // A type change must not keep specialised fields that only had default values.
        if changes.contains_key("type") || changes.contains_key("format") {
            for (field, default) in [
                ("variant", serde_json::json!("normal")),
                ("upcast_attention", serde_json::json!(false)),
            ] {
                if !changes.contains_key(field) && obj.get(field) == Some(&default) {
                    obj.remove(field);
                }
            }
        }
        let mut updated = Self::from_json(value)?;
        updated.common_mut().updated_at = now_micros();
        Ok(updated)
    }

    /// Resolves the stored path: relative paths are relative to `models_dir`.
    pub fn resolved_path(&self, models_dir: &Path) -> PathBuf {
        resolve_path(models_dir, self.path())
    }
}

/// What settles an unidentified model or a guessed base, for warnings and errors.
pub const IDENTIFY_HINT: &str = "set `config: {type: …, base: …}` on its manifest entry (`--config type=… --config base=…` for `import`)";

/// Resolves a stored path against `models_dir` (absolute paths are kept).
pub fn resolve_path(models_dir: &Path, stored: &str) -> PathBuf {
    let p = Path::new(stored);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        models_dir.join(p)
    }
}

impl Serialize for AnyModelConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_raw().serialize(s)
    }
}

impl<'de> Deserialize<'de> for AnyModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawConfig::deserialize(d)?;
        Self::from_raw(&raw).map_err(serde::de::Error::custom)
    }
}

/// Whether a variant's family fits the model's type and base, as InvokeAI's config classes
/// type their `variant` fields (a FLUX main takes FLUX variants, a CLIP encoder `large` or
/// `gigantic` …). A base that names no family (`any`, `unknown`) accepts any of the type's.
pub fn check_variant(
    t: ModelType,
    base: BaseModelType,
    v: AnyVariant,
) -> Result<(), InvalidModelConfig> {
    use AnyVariant as V;
    use BaseModelType as B;
    let family_base = match v {
        V::Model(_)
        | V::Clip(_)
        | V::Qwen3(_)
        | V::Qwen3Vl(_)
        | V::Mistral(_)
        | V::PidDecoder(_) => None,
        V::Flux(_) => Some(B::Flux),
        V::Flux2(_) => Some(B::Flux2),
        V::ZImage(_) => Some(B::ZImage),
        V::QwenImage(_) => Some(B::QwenImage),
        V::Wan(_) | V::WanLora(_) => Some(B::Wan),
        V::Krea2(_) => Some(B::Krea2),
        V::MiniMaxH3(_) => Some(B::MiniMaxH3),
        V::Ltx2(_) => Some(B::Ltx2),
    };
    let type_ok = match t {
        ModelType::Main => matches!(
            v,
            V::Model(_)
                | V::Flux(_)
                | V::Flux2(_)
                | V::ZImage(_)
                | V::QwenImage(_)
                | V::Wan(_)
                | V::Krea2(_)
                | V::MiniMaxH3(_)
                | V::Ltx2(_)
        ),
        ModelType::ClipEmbed => matches!(v, V::Clip(_)),
        ModelType::Qwen3Encoder => matches!(v, V::Qwen3(_)),
        ModelType::Qwen3VlEncoder => matches!(v, V::Qwen3Vl(_)),
        ModelType::MistralEncoder => matches!(v, V::Mistral(_)),
        ModelType::PidDecoder => matches!(v, V::PidDecoder(_)),
        ModelType::Lora | ModelType::Vae | ModelType::ControlNet => family_base.is_some(),
        _ => false,
    };
    let base_ok = match (family_base, base) {
        (_, B::Any | B::Unknown) => true,
        (Some(fb), b) => fb == b,
        // SD variants (normal/inpaint/depth) belong to the bases without a family of their own.
        (None, b) => {
            !matches!(v, V::Model(_))
                || !matches!(
                    b,
                    B::Flux
                        | B::Flux2
                        | B::ZImage
                        | B::QwenImage
                        | B::Wan
                        | B::Krea2
                        | B::MiniMaxH3
                        | B::Ltx2
                )
        }
    };
    if type_ok && base_ok {
        Ok(())
    } else {
        Err(InvalidModelConfig::Variant {
            variant: v,
            model_type: t,
            base,
        })
    }
}

/// The current time truncated to microseconds, the precision records are stored with, so a
/// record read back compares equal to the one written.
pub fn now_micros() -> SystemTime {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(d.as_micros() as u64)
}

/// A fresh record key: 32 random lowercase hex characters.
pub fn new_key() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lora() -> serde_json::Value {
        json!({"name": "detail", "type": "lora", "format": "lycoris", "base": "sd-1", "path": "loras/detail.safetensors", "hash": "blake3:00"})
    }

    #[test]
    fn dict_picks_class_and_round_trips() {
        let c = AnyModelConfig::from_json(lora()).unwrap();
        assert!(matches!(c, AnyModelConfig::LoraLycoris { .. }));
        assert_eq!(c.key().len(), 32);
        assert!(c.key().chars().all(|ch| ch.is_ascii_hexdigit()));
        let back = AnyModelConfig::from_json(c.to_json()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn main_checkpoint_defaults_and_fields() {
        let c = AnyModelConfig::from_json(json!({
            "name": "sd15", "type": "main", "format": "checkpoint", "base": "sd-1", "path": "/m/sd15.safetensors",
            "config_path": "configs/v1-inference.yaml", "prediction_type": "epsilon"
        }))
        .unwrap();
        assert_eq!(
            c.main_fields().unwrap().variant,
            None,
            "no variant is invented"
        );
        assert_eq!(
            c.checkpoint_fields().unwrap().config_path.as_deref(),
            Some("configs/v1-inference.yaml")
        );
        assert_eq!(
            c.resolved_path(Path::new("/x")),
            PathBuf::from("/m/sd15.safetensors")
        );
    }

    #[test]
    fn wrong_fields_and_types_are_named() {
        let mut v = lora();
        v["repo_variant"] = json!("fp16");
        let e = AnyModelConfig::from_json(v).unwrap_err().to_string();
        assert!(
            e.contains("`repo_variant` is not valid for a `lora` model in `lycoris` format"),
            "{e}"
        );

        let mut v = lora();
        v["format"] = json!("gguf_quantized");
        let e = AnyModelConfig::from_json(v).unwrap_err().to_string();
        assert!(
            e.contains("valid formats for `lora`: lycoris, omi, diffusers"),
            "{e}"
        );

        let mut v = lora();
        v["base"] = json!("sd-9");
        let e = AnyModelConfig::from_json(v).unwrap_err().to_string();
        assert!(e.contains("sd-9") && e.contains("sdxl"), "{e}");

        let mut v = lora();
        v["file_size"] = json!("big");
        assert!(AnyModelConfig::from_json(v).is_err());

        let mut v = lora();
        v.as_object_mut().unwrap().remove("name");
        assert_eq!(
            AnyModelConfig::from_json(v).unwrap_err().to_string(),
            "missing required field `name`"
        );

        let mut v = lora();
        v["colour"] = json!("red");
        let e = AnyModelConfig::from_json(v).unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn a_variant_must_fit_type_and_base() {
        let rec = |t: &str, b: &str, v: &str| {
            AnyModelConfig::from_json(
                json!({"name": "m", "type": t, "format": "diffusers", "base": b, "path": "m", "variant": v}),
            )
        };
        assert!(rec("main", "flux", "schnell").is_ok());
        assert!(
            rec("main", "flux2", "dev").is_ok(),
            "FLUX.2 has a `dev` too"
        );
        assert!(
            rec("main", "unknown", "turbo").is_ok(),
            "no base: any main family"
        );
        assert!(rec("clip_embed", "any", "large").is_ok());
        for (t, b, v) in [
            ("main", "flux", "normal"),
            ("main", "sdxl", "klein_4b"),
            ("main", "flux2", "schnell"),
            ("clip_embed", "any", "dev"),
            ("vae", "sd-1", "inpaint"),
        ] {
            let e = rec(t, b, v).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("variant `{v}` is not valid for a `{t}` model of base `{b}`")
            );
        }
    }

    #[test]
    fn sparse_update_including_type_change() {
        let c = AnyModelConfig::from_json(lora()).unwrap();
        let changes = json!({"description": "sharper", "tags": ["sfw"]});
        let u = c.merged(changes.as_object().unwrap()).unwrap();
        assert_eq!(u.common().description.as_deref(), Some("sharper"));
        assert_eq!(u.key(), c.key());

        let to_main = json!({"type": "main", "format": "checkpoint", "variant": "inpaint"});
        let m = c.merged(to_main.as_object().unwrap()).unwrap();
        assert!(matches!(m, AnyModelConfig::MainCheckpoint { .. }));
        assert_eq!(
            m.main_fields().unwrap().variant,
            Some(crate::taxonomy::ModelVariantType::Inpaint.into())
        );

        // main → vae must drop main-only fields explicitly.
        let to_vae = json!({"type": "vae"});
        let e = m
            .merged(to_vae.as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("variant `inpaint` is not valid for a `vae` model"),
            "{e}"
        );
        let to_vae = json!({"type": "vae", "variant": null, "upcast_attention": null});
        assert!(matches!(
            m.merged(to_vae.as_object().unwrap()).unwrap(),
            AnyModelConfig::VaeCheckpoint { .. }
        ));

        let e = c
            .merged(json!({"key": "x"}).as_object().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("key"), "{e}");
    }
}
