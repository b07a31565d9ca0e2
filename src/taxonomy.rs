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

crate::string_enum! {
    /// The base model family a model is compatible with.
    BaseModelType, "base model type" {
        Any = "any",
        StableDiffusion1 = "sd-1",
        StableDiffusion2 = "sd-2",
        StableDiffusion3 = "sd-3",
        StableDiffusionXL = "sdxl",
        StableDiffusionXLRefiner = "sdxl-refiner",
        Flux = "flux",
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
        SpandrelImageToImage = "spandrel_image_to_image",
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
        Onnx = "onnx",
        Olive = "olive",
        EmbeddingFile = "embedding_file",
        EmbeddingFolder = "embedding_folder",
        InvokeAI = "invokeai",
        T5Encoder = "t5_encoder",
        BnbQuantizedNf4b = "bnb_quantized_nf4b",
        GgufQuantized = "gguf_quantized",
        Unknown = "unknown",
    }
}

crate::string_enum! {
    /// Variant of a main model: ordinary, inpainting or depth-conditioned.
    ModelVariantType, "model variant" {
        Normal = "normal",
        Inpaint = "inpaint",
        Depth = "depth",
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
        TextEncoder = "text_encoder",
        TextEncoder2 = "text_encoder_2",
        TextEncoder3 = "text_encoder_3",
        Tokenizer = "tokenizer",
        Tokenizer2 = "tokenizer_2",
        Tokenizer3 = "tokenizer_3",
        Vae = "vae",
        VaeDecoder = "vae_decoder",
        VaeEncoder = "vae_encoder",
        Scheduler = "scheduler",
        SafetyChecker = "safety_checker",
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
