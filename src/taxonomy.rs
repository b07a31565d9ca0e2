//! The model taxonomy: string enums shared by records, probes, the manifest and the loader.
//!
//! Every enum uses exactly the strings InvokeAI's Model Manager V2 uses, so records and
//! manifests stay interchangeable with it. Parsing an unknown string is an error that lists
//! the valid values.

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: expected one of {}", .expected.join(", "))]
pub struct UnknownVariant {
    /// The enum's name as users know it (for example `model type`).
    pub kind: &'static str,
    /// What was given.
    pub value: String,
    /// Every valid string, quoted where empty.
    pub expected: Vec<String>,
}

/// Declares a string enum with Display, FromStr (errors list the valid values), serde and
/// schemars impls. Used by other modules for their own string enums.
#[macro_export]
#[doc(hidden)]
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $s:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant ),+ ];

            /// The canonical string.
            pub const fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $s ),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::taxonomy::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $s => Ok($name::$variant), )+
                    _ => Err($crate::taxonomy::UnknownVariant {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: $name::ALL
                            .iter()
                            .map(|v| if v.as_str().is_empty() { "\"\"".to_owned() } else { v.as_str().to_owned() })
                            .collect(),
                    }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        write!(f, "a {} string", $kind)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": concat!("A ", $kind, "."),
                    "enum": [ $( $s ),+ ]
                })
            }
        }
    };
}

// The values below are InvokeAI's, read from `invokeai/backend/model_manager/taxonomy.py`: the
// 6.x line (invoke-ai/InvokeAI) and its successor (invoke-ai/InvokeAI-7), which only adds values.
// Taking the union means every record either version can hold parses here; a value that only
// the newer line has (e.g. `krea-2`) is accepted, not invented.

crate::string_enum! {
    /// The base model family a model is compatible with (`any` for models tied to none, such
    /// as CLIP encoders; `unknown` when nothing says).
    BaseModelType, "base model type" {
        Any = "any",
        StableDiffusion1 = "sd-1",
        StableDiffusion2 = "sd-2",
        StableDiffusion3 = "sd-3",
        StableDiffusionXL = "sdxl",
        StableDiffusionXLRefiner = "sdxl-refiner",
        Flux = "flux",
        Flux2 = "flux2",
        CogView4 = "cogview4",
        ZImage = "z-image",
        ErnieImage = "ernie-image",
        Ideogram4 = "ideogram-4",
        External = "external",
        QwenImage = "qwen-image",
        Anima = "anima",
        Krea2 = "krea-2",
        Wan = "wan",
        MiniMaxH3 = "minimax-h3",
        Ltx2 = "ltx-2",
        Unknown = "unknown",
    }
}

crate::string_enum! {
    /// What kind of model a record describes.
    ModelType, "model type" {
        Main = "main",
        Vae = "vae",
        Lora = "lora",
        ControlLora = "control_lora",
        ControlNet = "controlnet",
        TextualInversion = "embedding",
        IpAdapter = "ip_adapter",
        ClipVision = "clip_vision",
        ClipEmbed = "clip_embed",
        T2IAdapter = "t2i_adapter",
        T5Encoder = "t5_encoder",
        Qwen3Encoder = "qwen3_encoder",
        QwenVlEncoder = "qwen_vl_encoder",
        Qwen3VlEncoder = "qwen3_vl_encoder",
        MistralEncoder = "mistral_encoder",
        WanT5Encoder = "wan_t5_encoder",
        Gemma2Encoder = "gemma2_encoder",
        Gemma4Encoder = "gemma4_encoder",
        SpandrelImageToImage = "spandrel_image_to_image",
        SigLip = "siglip",
        FluxRedux = "flux_redux",
        LlavaOnevision = "llava_onevision",
        PromptEnhancer = "prompt_enhancer",
        TextLlm = "text_llm",
        ExternalImageGenerator = "external_image_generator",
        PidDecoder = "pid_decoder",
        Onnx = "onnx",
        Unknown = "unknown",
    }
}

crate::string_enum! {
    /// How a model's weights are laid out on disk.
    ModelFormat, "model format" {
        Diffusers = "diffusers",
        Checkpoint = "checkpoint",
        Lycoris = "lycoris",
        Omi = "omi",
        Onnx = "onnx",
        Olive = "olive",
        EmbeddingFile = "embedding_file",
        EmbeddingFolder = "embedding_folder",
        InvokeAI = "invokeai",
        T5Encoder = "t5_encoder",
        Qwen3Encoder = "qwen3_encoder",
        QwenVlEncoder = "qwen_vl_encoder",
        Qwen3VlEncoder = "qwen3_vl_encoder",
        MistralEncoder = "mistral_encoder",
        WanT5Encoder = "wan_t5_encoder",
        Gemma2Encoder = "gemma2_encoder",
        Gemma4Encoder = "gemma4_encoder",
        BnbQuantizedInt8b = "bnb_quantized_int8b",
        BnbQuantizedNf4b = "bnb_quantized_nf4b",
        GgufQuantized = "gguf_quantized",
        ExternalApi = "external_api",
        SdnqQuantized = "sdnq_quantized",
        Unknown = "unknown",
    }
}

crate::string_enum! {
    /// Variant of a Stable Diffusion main model: ordinary, inpainting or depth-conditioned.
    ModelVariantType, "model variant" {
        Normal = "normal",
        Inpaint = "inpaint",
        Depth = "depth",
    }
}

crate::string_enum! {
    /// CLIP text encoder size (`clip_embed` models).
    ClipVariantType, "CLIP variant" {
        Large = "large",
        Gigantic = "gigantic",
    }
}

crate::string_enum! {
    /// FLUX.1 main model variants.
    FluxVariantType, "FLUX variant" {
        Schnell = "schnell",
        Dev = "dev",
        DevFill = "dev_fill",
    }
}

crate::string_enum! {
    /// FLUX.2 main model variants (Klein sizes follow the Qwen3 text encoder they use).
    Flux2VariantType, "FLUX.2 variant" {
        Klein4B = "klein_4b",
        Klein4BBase = "klein_4b_base",
        Klein9B = "klein_9b",
        Klein9BBase = "klein_9b_base",
        Dev = "dev",
    }
}

crate::string_enum! {
    /// Z-Image main model variants.
    ZImageVariantType, "Z-Image variant" {
        Turbo = "turbo",
        ZBase = "zbase",
    }
}

crate::string_enum! {
    /// Qwen-Image main model variants.
    QwenImageVariantType, "Qwen-Image variant" {
        Generate = "generate",
        Edit = "edit",
    }
}

crate::string_enum! {
    /// Wan 2.2 main model variants.
    WanVariantType, "Wan variant" {
        T2vA14b = "t2v_a14b",
        I2vA14b = "i2v_a14b",
        Ti2v5b = "ti2v_5b",
    }
}

crate::string_enum! {
    /// Which Wan 2.2 family a LoRA targets.
    WanLoraVariantType, "Wan LoRA variant" {
        A14b = "a14b",
        Wan5b = "5b",
    }
}

crate::string_enum! {
    /// Qwen3 text encoder sizes.
    Qwen3VariantType, "Qwen3 variant" {
        Qwen3_4B = "qwen3_4b",
        Qwen3_8B = "qwen3_8b",
        Qwen3_06B = "qwen3_06b",
    }
}

crate::string_enum! {
    /// Qwen3-VL text encoder sizes.
    Qwen3VlVariantType, "Qwen3-VL variant" {
        Qwen3Vl4B = "qwen3_vl_4b",
        Qwen3Vl8B = "qwen3_vl_8b",
    }
}

crate::string_enum! {
    /// Krea 2 main model variants.
    Krea2VariantType, "Krea 2 variant" {
        Turbo = "krea2_turbo",
        Base = "krea2_base",
    }
}

crate::string_enum! {
    /// MiniMax H3 transformer variants.
    MiniMaxH3VariantType, "MiniMax H3 variant" {
        Fl2va = "fl2va",
        Ref2va = "ref2va",
    }
}

crate::string_enum! {
    /// LTX-2 transformer variants.
    Ltx2VariantType, "LTX-2 variant" {
        Dev = "ltx2_dev",
        Distilled = "ltx2_distilled",
    }
}

crate::string_enum! {
    /// Mistral text encoder variants.
    MistralVariantType, "Mistral variant" {
        Cow = "cow_mistral3_small",
        Mistral24B = "mistral3_24b",
        Ministral3B = "ministral3_3b",
    }
}

crate::string_enum! {
    /// PiD decoder resolution presets.
    PidDecoderVariantType, "PiD decoder variant" {
        Res2kSr4x = "res2k_sr4x",
        Res2kTo4kSr4x = "res2kto4k_sr4x",
    }
}

/// Any model variant: InvokeAI's `AnyVariant` union. On the wire it is the bare string; which
/// family a string belongs to is found in InvokeAI's union order, except that `dev` is the
/// FLUX.2 variant on a `flux2` record ([`AnyVariant::for_base`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum AnyVariant {
    Model(ModelVariantType),
    Clip(ClipVariantType),
    Flux(FluxVariantType),
    Flux2(Flux2VariantType),
    ZImage(ZImageVariantType),
    QwenImage(QwenImageVariantType),
    Wan(WanVariantType),
    WanLora(WanLoraVariantType),
    Qwen3(Qwen3VariantType),
    Qwen3Vl(Qwen3VlVariantType),
    Krea2(Krea2VariantType),
    MiniMaxH3(MiniMaxH3VariantType),
    Ltx2(Ltx2VariantType),
    Mistral(MistralVariantType),
    PidDecoder(PidDecoderVariantType),
}

macro_rules! any_variant_impl {
    ( $( $v:ident ( $t:ty ) ),+ $(,)? ) => {
        impl AnyVariant {
            /// The canonical string.
            pub const fn as_str(self) -> &'static str {
                match self { $( Self::$v(x) => x.as_str() ),+ }
            }

            /// Every variant string, in InvokeAI's union order (duplicates kept).
            pub fn all_strings() -> impl Iterator<Item = &'static str> {
                std::iter::empty()
                    $( .chain(<$t>::ALL.iter().map(|x| x.as_str())) )+
            }
        }

        impl ::std::str::FromStr for AnyVariant {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, UnknownVariant> {
                $( if let Ok(x) = s.parse::<$t>() { return Ok(Self::$v(x)); } )+
                Err(UnknownVariant {
                    kind: "variant",
                    value: s.to_owned(),
                    expected: {
                        let mut v: Vec<String> = Vec::new();
                        for x in Self::all_strings() {
                            if !v.iter().any(|y| y == x) {
                                v.push(x.to_owned());
                            }
                        }
                        v
                    },
                })
            }
        }

        $(
            impl From<$t> for AnyVariant {
                fn from(x: $t) -> Self {
                    Self::$v(x)
                }
            }
        )+
    };
}

any_variant_impl! {
    Model(ModelVariantType),
    Clip(ClipVariantType),
    Flux(FluxVariantType),
    Flux2(Flux2VariantType),
    ZImage(ZImageVariantType),
    QwenImage(QwenImageVariantType),
    Wan(WanVariantType),
    WanLora(WanLoraVariantType),
    Qwen3(Qwen3VariantType),
    Qwen3Vl(Qwen3VlVariantType),
    Krea2(Krea2VariantType),
    MiniMaxH3(MiniMaxH3VariantType),
    Ltx2(Ltx2VariantType),
    Mistral(MistralVariantType),
    PidDecoder(PidDecoderVariantType),
}

impl AnyVariant {
    /// The same string read as the family `base` uses where two families share it (`dev` is
    /// FLUX.1's and FLUX.2's).
    #[must_use]
    pub fn for_base(self, base: BaseModelType) -> Self {
        match (self, base) {
            (Self::Flux(FluxVariantType::Dev), BaseModelType::Flux2) => {
                Self::Flux2(Flux2VariantType::Dev)
            }
            (Self::Flux2(Flux2VariantType::Dev), b) if b != BaseModelType::Flux2 => {
                Self::Flux(FluxVariantType::Dev)
            }
            (v, _) => v,
        }
    }

    /// The Stable Diffusion variant, when this is one.
    pub fn model_variant(self) -> Option<ModelVariantType> {
        match self {
            Self::Model(v) => Some(v),
            _ => None,
        }
    }
}

impl ::std::fmt::Display for AnyVariant {
    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<ModelVariantType> for AnyVariant {
    fn eq(&self, other: &ModelVariantType) -> bool {
        *self == Self::Model(*other)
    }
}

impl serde::Serialize for AnyVariant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for AnyVariant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for AnyVariant {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AnyVariant".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut v: Vec<&str> = Vec::new();
        for x in Self::all_strings() {
            if !v.contains(&x) {
                v.push(x);
            }
        }
        schemars::json_schema!({
            "type": "string",
            "description": "A model variant (normal, inpaint, depth, dev, schnell, klein_4b, large, qwen3_4b …).",
            "enum": v
        })
    }
}

crate::string_enum! {
    /// The file variant of a Hugging Face diffusers repo (`diffusion_pytorch_model.fp16.safetensors`).
    ModelRepoVariant, "repo variant" {
        Default = "",
        Fp16 = "fp16",
        Fp32 = "fp32",
        Onnx = "onnx",
        OpenVino = "openvino",
        Flax = "flax",
    }
}

crate::string_enum! {
    /// The scheduler's prediction type.
    SchedulerPredictionType, "prediction type" {
        Epsilon = "epsilon",
        VPrediction = "v_prediction",
        Sample = "sample",
    }
}

crate::string_enum! {
    /// A component of a main (pipeline) model.
    SubModelType, "submodel type" {
        UNet = "unet",
        Transformer = "transformer",
        Transformer2 = "transformer_2",
        TextEncoder = "text_encoder",
        TextEncoder2 = "text_encoder_2",
        TextEncoder3 = "text_encoder_3",
        Tokenizer = "tokenizer",
        Tokenizer2 = "tokenizer_2",
        Tokenizer3 = "tokenizer_3",
        Processor = "processor",
        PromptEnhancer = "pe",
        PromptEnhancerTokenizer = "pe_tokenizer",
        Vae = "vae",
        VaeDecoder = "vae_decoder",
        VaeEncoder = "vae_encoder",
        AudioVae = "audio_vae",
        Vocoder = "vocoder",
        Connectors = "connectors",
        LatentUpsampler = "latent_upsampler",
        TemporalLatentUpsampler = "temporal_latent_upsampler",
        Scheduler = "scheduler",
        SafetyChecker = "safety_checker",
    }
}

crate::string_enum! {
    /// How a FLUX LoRA names its keys (InvokeAI's `FluxLoRAFormat`).
    FluxLoraFormat, "FLUX LoRA format" {
        Diffusers = "flux.diffusers",
        Kohya = "flux.kohya",
        OneTrainer = "flux.onetrainer",
        Control = "flux.control",
        AiToolkit = "flux.aitoolkit",
        XLabs = "flux.xlabs",
        BflPeft = "flux.bfl_peft",
        OneTrainerBfl = "flux.onetrainer_bfl",
    }
}

#[allow(
    clippy::derivable_impls,
    reason = "the enum is declared by string_enum!, which derives no Default"
)]
impl Default for ModelVariantType {
    fn default() -> Self {
        Self::Normal
    }
}

#[allow(
    clippy::derivable_impls,
    reason = "the enum is declared by string_enum!, which derives no Default"
)]
impl Default for ModelRepoVariant {
    fn default() -> Self {
        Self::Default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for t in ModelType::ALL {
            assert_eq!(t.as_str().parse::<ModelType>().unwrap(), *t);
        }
        for b in BaseModelType::ALL {
            assert_eq!(b.to_string().parse::<BaseModelType>().unwrap(), *b);
        }
        assert_eq!(
            "".parse::<ModelRepoVariant>().unwrap(),
            ModelRepoVariant::Default
        );
        assert_eq!(
            serde_json::to_string(&SubModelType::TextEncoder2).unwrap(),
            "\"text_encoder_2\""
        );
    }

    /// The strings of InvokeAI's `taxonomy.py`, spot-checked per enum.
    #[test]
    fn invokeai_strings() {
        for (s, b) in [
            ("flux2", BaseModelType::Flux2),
            ("z-image", BaseModelType::ZImage),
            ("qwen-image", BaseModelType::QwenImage),
            ("anima", BaseModelType::Anima),
            ("cogview4", BaseModelType::CogView4),
            ("sd-3", BaseModelType::StableDiffusion3),
            ("krea-2", BaseModelType::Krea2),
        ] {
            assert_eq!(s.parse::<BaseModelType>().unwrap(), b);
        }
        for s in [
            "spandrel_image_to_image",
            "siglip",
            "clip_vision",
            "t5_encoder",
            "qwen3_encoder",
            "llava_onevision",
            "flux_redux",
            "control_lora",
        ] {
            assert_eq!(s.parse::<ModelType>().unwrap().as_str(), s);
        }
        for s in [
            "omi",
            "bnb_quantized_int8b",
            "qwen3_encoder",
            "sdnq_quantized",
        ] {
            assert_eq!(s.parse::<ModelFormat>().unwrap().as_str(), s);
        }
        assert_eq!(
            "flux.xlabs".parse::<FluxLoraFormat>().unwrap(),
            FluxLoraFormat::XLabs
        );
    }

    #[test]
    fn any_variant_follows_invokeai_union_order() {
        let v = |s: &str| s.parse::<AnyVariant>().unwrap();
        assert_eq!(v("inpaint"), AnyVariant::Model(ModelVariantType::Inpaint));
        assert_eq!(v("gigantic"), AnyVariant::Clip(ClipVariantType::Gigantic));
        assert_eq!(v("klein_9b"), AnyVariant::Flux2(Flux2VariantType::Klein9B));
        assert_eq!(
            v("qwen3_06b"),
            AnyVariant::Qwen3(Qwen3VariantType::Qwen3_06B)
        );
        // `dev` is FLUX.1's first; a flux2 record reads it as FLUX.2's.
        assert_eq!(v("dev"), AnyVariant::Flux(FluxVariantType::Dev));
        assert_eq!(
            v("dev").for_base(BaseModelType::Flux2),
            AnyVariant::Flux2(Flux2VariantType::Dev)
        );
        assert_eq!(v("dev").for_base(BaseModelType::Flux), v("dev"));
        assert_eq!(
            serde_json::to_string(&v("klein_4b")).unwrap(),
            "\"klein_4b\""
        );
        let e = "fp8".parse::<AnyVariant>().unwrap_err().to_string();
        assert!(e.contains("invalid variant `fp8`"), "{e}");
        assert!(
            e.contains("normal, inpaint, depth, large, gigantic, schnell, dev"),
            "{e}"
        );
        assert_eq!(e.matches(" dev,").count(), 1, "listed once: {e}");
    }

    #[test]
    fn unknown_string_lists_valid_values() {
        let err = "sd-9".parse::<BaseModelType>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("invalid base model type `sd-9`"), "{msg}");
        assert!(
            msg.contains("sd-1, sd-2, sd-3, sdxl, sdxl-refiner, flux"),
            "{msg}"
        );
        let err = serde_json::from_str::<ModelRepoVariant>("\"fp8\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"\", fp16, fp32"), "{err}");
    }
}
