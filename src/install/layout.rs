//! Where an install lands in `models_dir`: the folder layouts other consumers read
//! (`settings.layout`, an entry's `layout:`). Records store the real path, so everything after
//! promotion (status, verify, repair, gc, delete) works from the record's path alone; only the
//! hf-cache layout needs its own placement and removal, which live here.
//!
//! - `invokeai` (the default): `<key>/<file>` for a file, `<key>/` for a folder.
//! - `comfyui`, `a1111`: one folder per model type (`loras/`, `Lora/` …, see [`folder_for`]),
//!   the model under its own file or folder name. A name another model holds already gets
//!   `-<first 8 characters of the key>` before its extension (`loras/detail-1a2b3c4d.safetensors`),
//!   so two LoRAs with one file name never overwrite each other.
//! - `hf-cache`: `models--owner--name/` as `huggingface_hub` lays out its cache, so
//!   diffusers, transformers and vLLM with `local_files_only=True` and `cache_dir=models_dir`
//!   (or `HF_HUB_CACHE=models_dir`) find the files: `blobs/<id>` holds the bytes,
//!   `snapshots/<commit>/<repo path>` is a relative symlink to the blob, `refs/<revision>` holds
//!   the commit when the revision is a branch or tag. A blob is named by the Hub's ETag, as
//!   `hf_hub_download` names it: the sha256 for LFS files, the git blob sha1 for small (git)
//!   files. Sources that are not Hub repos (URLs, local files and folders) go to
//!   `models--modelsync--<name>/` (repo id `modelsync/<name>`, the record's name with anything
//!   outside `[A-Za-z0-9._-]` made `-`), revision `main`, the snapshot named by the sha1 of the
//!   record key, blobs named by their sha256. The record's path is the snapshot folder (a
//!   folder model; a Hub subfolder is the folder under it) or the symlink (a single file).
//!   Deleting a model removes its snapshot path, the refs that pointed at its commit when the
//!   snapshot is gone, and the blobs no other snapshot links to.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Component, Path, PathBuf};

use sha2::Digest as _;

use crate::config::ModelSourceType;
use crate::taxonomy::{BaseModelType, ModelFormat, ModelType};

use super::error::InstallError;

crate::string_enum! {
    /// How models are laid out in `models_dir` (the manifest's `settings.layout` and an
    /// entry's `layout`).
    #[derive(Default)]
    Layout, "layout" {
        /// `<key>/…`, as InvokeAI installs (the default).
        #[default]
        InvokeAi = "invokeai",
        /// The Hugging Face hub cache: `models--owner--name/{blobs,snapshots,refs}`.
        HfCache = "hf-cache",
        /// ComfyUI's `models/` folders: `checkpoints/`, `loras/`, `vae/` …
        ComfyUi = "comfyui",
        /// AUTOMATIC1111's `models/` folders: `Stable-diffusion/`, `Lora/`, `VAE/` …
        A1111 = "a1111",
    }
}

/// Where flat layouts put what they have no folder for.
pub const OTHER_FOLDER: &str = "other";

/// The file modelsync writes in `models_dir` for ComfyUI when an entry uses `layout: comfyui`.
pub const COMFYUI_PATHS_FILE: &str = "extra_model_paths.yaml";

/// The folder of a model type in a flat layout (`None` for `invokeai` and `hf-cache`).
///
/// ComfyUI (its `folder_paths.py`): main checkpoints of SD 1.x/2.x/SDXL go to `checkpoints/`,
/// other bases' (FLUX, SD3, …: transformer-only files, loaded by the diffusion model loader) and
/// GGUF / bitsandbytes mains to `diffusion_models/`, diffusers folders to `diffusers/`; control
/// LoRAs and T2I adapters load with the ControlNet loader (`controlnet/`); FLUX Redux is a
/// style model (`style_models/`); SigLIP is a CLIP vision model; IP adapters go to
/// `ipadapter/` (the IPAdapter-plus nodes' folder); every text encoder to `text_encoders/`.
///
/// AUTOMATIC1111 (its `modules/cmd_args.py` and built-in Lora extension): `Stable-diffusion/`,
/// `VAE/`, `Lora/`, `embeddings/` (the webui's `--embeddings-dir` defaults to its data folder,
/// so point it here), `ESRGAN/`, and `ControlNet/` (the sd-webui-controlnet extension's
/// folder, which also loads IP adapters and T2I adapters).
///
/// Everything else goes to `other/`.
pub fn folder_for(
    layout: Layout,
    model_type: ModelType,
    format: ModelFormat,
    base: BaseModelType,
) -> Option<&'static str> {
    use ModelType as T;
    let sd_family = matches!(
        base,
        BaseModelType::StableDiffusion1
            | BaseModelType::StableDiffusion2
            | BaseModelType::StableDiffusionXL
            | BaseModelType::StableDiffusionXLRefiner
    );
    let folder = match layout {
        Layout::InvokeAi | Layout::HfCache => return None,
        Layout::ComfyUi => match model_type {
            T::Main if format == ModelFormat::Diffusers => "diffusers",
            T::Main if format == ModelFormat::Checkpoint && sd_family => "checkpoints",
            T::Main => "diffusion_models",
            T::Vae => "vae",
            T::Lora => "loras",
            T::ControlNet | T::ControlLora | T::T2IAdapter => "controlnet",
            T::TextualInversion => "embeddings",
            T::IpAdapter => "ipadapter",
            T::ClipVision | T::SigLip => "clip_vision",
            T::ClipEmbed
            | T::T5Encoder
            | T::Qwen3Encoder
            | T::QwenVlEncoder
            | T::Qwen3VlEncoder
            | T::MistralEncoder
            | T::WanT5Encoder
            | T::Gemma2Encoder
            | T::Gemma4Encoder => "text_encoders",
            T::SpandrelImageToImage => "upscale_models",
            T::FluxRedux => "style_models",
            _ => OTHER_FOLDER,
        },
        Layout::A1111 => match model_type {
            T::Main if format != ModelFormat::Diffusers => "Stable-diffusion",
            T::Vae if format != ModelFormat::Diffusers => "VAE",
            T::Lora => "Lora",
            T::TextualInversion => "embeddings",
            T::SpandrelImageToImage => "ESRGAN",
            T::ControlNet | T::ControlLora | T::T2IAdapter | T::IpAdapter => "ControlNet",
            _ => OTHER_FOLDER,
        },
    };
    Some(folder)
}

/// The ComfyUI folder names modelsync fills, in [`COMFYUI_PATHS_FILE`]'s order.
const COMFYUI_FOLDERS: &[&str] = &[
    "checkpoints",
    "diffusion_models",
    "diffusers",
    "vae",
    "loras",
    "controlnet",
    "embeddings",
    "ipadapter",
    "clip_vision",
    "text_encoders",
    "upscale_models",
    "style_models",
];

/// The `extra_model_paths.yaml` that points ComfyUI at `models_dir` (start ComfyUI with
/// `--extra-model-paths-config <models_dir>/extra_model_paths.yaml`, or merge it into
/// ComfyUI's own file). Keys are ComfyUI's folder names, relative to `base_path`.
pub fn comfyui_extra_model_paths(models_dir: &Path) -> String {
    let base = std::path::absolute(models_dir).unwrap_or_else(|_| models_dir.to_path_buf());
    let mut s = String::from(
        "# Written by modelsync for the models it installs with `layout: comfyui`.\n\
         # Start ComfyUI with --extra-model-paths-config pointing at this file, or merge it\n\
         # into ComfyUI's own extra_model_paths.yaml.\n\
         modelsync:\n",
    );
    // A JSON string is a YAML double-quoted scalar: any path survives the quoting.
    let _ = writeln!(
        s,
        "  base_path: {}",
        serde_json::Value::from(base.to_string_lossy().into_owned())
    );
    for f in COMFYUI_FOLDERS {
        let _ = writeln!(s, "  {f}: {f}/");
    }
    s
}

/// What promotion knows when it picks the destination.
pub(crate) struct Wanted<'a> {
    pub layout: Layout,
    pub models_dir: &'a Path,
    pub key: &'a str,
    /// The record's name (for folder models and non-hub hf-cache repos).
    pub name: &'a str,
    /// The staged file's or folder's own name.
    pub file_name: &'a str,
    pub single_file: bool,
    pub source: &'a str,
    pub source_type: ModelSourceType,
    pub commit: Option<&'a str>,
    pub model_type: ModelType,
    pub format: ModelFormat,
    pub base: BaseModelType,
}

/// An hf-cache destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HfTarget {
    /// `models_dir/models--owner--name`.
    pub repo_dir: PathBuf,
    /// The snapshot's name.
    pub commit: String,
    /// `refs/<revision>` to write (`None` when the revision is the commit itself).
    pub revision: Option<String>,
    /// The record's path: the snapshot folder (or a subfolder of it), or a file's symlink.
    pub model_path: PathBuf,
}

/// Where a staged model goes (without `dest`, which wins in every layout but hf-cache).
pub(crate) fn destination(
    w: &Wanted<'_>,
    taken: &dyn Fn(&Path) -> bool,
) -> Result<(PathBuf, Option<HfTarget>), InstallError> {
    match w.layout {
        Layout::InvokeAi => Ok((
            if w.single_file {
                w.models_dir.join(w.key).join(w.file_name)
            } else {
                w.models_dir.join(w.key)
            },
            None,
        )),
        Layout::ComfyUi | Layout::A1111 => {
            let folder =
                folder_for(w.layout, w.model_type, w.format, w.base).unwrap_or(OTHER_FOLDER);
            let own = if w.single_file {
                w.file_name.to_owned()
            } else {
                safe_name(w.name)
            };
            let first = w.models_dir.join(folder).join(&own);
            if !taken(&first) {
                return Ok((first, None));
            }
            let short: String = w.key.chars().take(8).collect();
            let suffixed = match own.rsplit_once('.') {
                Some((stem, ext)) if w.single_file && !stem.is_empty() => {
                    format!("{stem}-{short}.{ext}")
                }
                _ => format!("{own}-{short}"),
            };
            Ok((w.models_dir.join(folder).join(suffixed), None))
        }
        Layout::HfCache => {
            let t = hf_target(w)?;
            Ok((t.model_path.clone(), Some(t)))
        }
    }
}

/// A name safe as one path component: anything outside `[A-Za-z0-9._-]` becomes `-`.
fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('.').to_owned();
    if s.is_empty() { "model".to_owned() } else { s }
}

fn hf_target(w: &Wanted<'_>) -> Result<HfTarget, InstallError> {
    let hub = (w.source_type == ModelSourceType::HfRepoId)
        .then(|| crate::hub::ModelSource::parse(w.source).ok())
        .flatten()
        .and_then(|s| match s {
            crate::hub::ModelSource::Hf(h) => Some(h),
            _ => None,
        });
    let Some(h) = hub else {
        let repo_dir = w
            .models_dir
            .join(format!("models--modelsync--{}", safe_name(w.name)));
        let commit = hex::encode(sha1::Sha1::digest(w.key.as_bytes()));
        let snapshot = repo_dir.join("snapshots").join(&commit);
        let model_path = if w.single_file {
            snapshot.join(w.file_name)
        } else {
            snapshot
        };
        return Ok(HfTarget {
            repo_dir,
            commit,
            revision: Some("main".to_owned()),
            model_path,
        });
    };
    let commit = w.commit.map(str::to_owned).ok_or_else(|| {
        InstallError::Setup(format!(
            "{}: no resolved commit for the hf-cache layout",
            w.source
        ))
    })?;
    let mut folder = String::from("models");
    for part in h.repo_id.split('/') {
        folder.push_str("--");
        folder.push_str(part);
    }
    let repo_dir = w.models_dir.join(folder);
    let snapshot = repo_dir.join("snapshots").join(&commit);
    let mut model_path = snapshot;
    if let Some(sub) = h.subfolder.as_deref() {
        for part in sub.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." {
                return Err(InstallError::InvalidOption {
                    option: "source",
                    reason: format!("subfolder `{sub}` leaves the repo"),
                });
            }
            model_path.push(part);
        }
    }
    let revision = h.revision_or_main().to_owned();
    Ok(HfTarget {
        repo_dir,
        revision: (revision != commit).then_some(revision),
        commit,
        model_path,
    })
}

/// The repo folder and snapshot folder of a path inside an hf-cache layout
/// (`models_dir/models--*/snapshots/<commit>/…`), else `None`.
pub(crate) fn hf_snapshot_of(models_dir: &Path, path: &Path) -> Option<(PathBuf, PathBuf)> {
    let rel = path.strip_prefix(models_dir).ok()?;
    let mut comps = rel.components();
    let (
        Some(Component::Normal(repo)),
        Some(Component::Normal(snaps)),
        Some(Component::Normal(commit)),
    ) = (comps.next(), comps.next(), comps.next())
    else {
        return None;
    };
    if !repo.to_string_lossy().starts_with("models--") || snaps != "snapshots" {
        return None;
    }
    let repo_dir = models_dir.join(repo);
    let snapshot = repo_dir.join("snapshots").join(commit);
    Some((repo_dir, snapshot))
}

/// The relative link from `link` to `blob`, both under `repo_dir` (`../../blobs/<id>`).
fn relative_link(repo_dir: &Path, link: &Path, blob: &Path) -> PathBuf {
    let depth = link
        .parent()
        .and_then(|p| p.strip_prefix(repo_dir).ok())
        .map_or(0, |p| p.components().count());
    let mut out = PathBuf::new();
    for _ in 0..depth {
        out.push("..");
    }
    out.push(blob.strip_prefix(repo_dir).unwrap_or(blob));
    out
}

/// Puts one verified file into an hf-cache repo: its bytes at `blobs/<id>` (hard-linked from
/// `from` when possible, so the staged copy stays until staging is removed; else moved), and
/// `link` a relative symlink to it. Unless `replace` (a repair, whose blob is damaged), a blob
/// of that id and size already there (another snapshot's) is kept as it is: its bytes are the
/// same and the other record's fingerprints stay valid.
pub(crate) fn place_blob(
    repo_dir: &Path,
    from: &Path,
    link: &Path,
    id: &str,
    replace: bool,
) -> Result<(), InstallError> {
    let blobs = repo_dir.join("blobs");
    fs::create_dir_all(&blobs).map_err(|e| InstallError::io("creating folder", &blobs, e))?;
    let blob = blobs.join(id);
    let same = !replace
        && match (fs::metadata(&blob), fs::metadata(from)) {
            (Ok(b), Ok(f)) => b.is_file() && b.len() == f.len(),
            _ => false,
        };
    if !same {
        let tmp = blobs.join(format!("{id}.modelsync.tmp"));
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(from, &tmp).is_err() {
            fs::rename(from, &tmp).map_err(|e| InstallError::io("moving into place", &tmp, e))?;
        }
        fs::rename(&tmp, &blob).map_err(|e| InstallError::io("moving into place", &blob, e))?;
    }
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent).map_err(|e| InstallError::io("creating folder", parent, e))?;
    }
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link).map_err(|e| InstallError::io("replacing", link, e))?;
    }
    std::os::unix::fs::symlink(relative_link(repo_dir, link, &blob), link)
        .map_err(|e| InstallError::io("linking", link, e))
}

/// Writes `refs/<revision>` (the commit, no newline, as `huggingface_hub` writes it).
pub(crate) fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<(), InstallError> {
    if revision
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Ok(());
    }
    let path = repo_dir.join("refs").join(revision);
    if fs::read_to_string(&path).is_ok_and(|c| c == commit) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| InstallError::io("creating folder", parent, e))?;
    }
    let tmp = path.with_extension("modelsync.tmp");
    fs::write(&tmp, commit).map_err(|e| InstallError::io("writing", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| InstallError::io("writing", &path, e))
}

/// The blob id of a staged file: the known sha256 (an LFS file, or a `hash: sha256:` entry),
/// else the git blob sha1 for a small Hub file (the Hub's ETag), else its sha256.
pub(crate) fn blob_id(
    path: &Path,
    known_sha256: Option<&str>,
    hub: bool,
) -> Result<String, InstallError> {
    if let Some(s) = known_sha256 {
        return Ok(s.to_ascii_lowercase());
    }
    if hub {
        let bytes = fs::read(path).map_err(|e| InstallError::io("reading", path, e))?;
        return Ok(crate::hub::git_blob_sha1(&bytes));
    }
    crate::hash::sha256_file(path).map_err(|error| InstallError::Hash {
        path: path.to_path_buf(),
        error: Box::new(error),
    })
}

/// Lays a staged model (file or folder) out as `t`: every file a blob plus a symlink, then
/// the ref. `id_of` names each file's blob (its path relative to the model, `""` for a file).
pub(crate) fn place_hf(
    t: &HfTarget,
    staged: &Path,
    id_of: &dyn Fn(&str, &Path) -> Result<String, InstallError>,
) -> Result<(), InstallError> {
    if staged.is_dir() {
        let mut files = Vec::new();
        super::promote::walk(staged, staged, &mut files)?;
        for (abs, rel) in files {
            let id = id_of(&rel, &abs)?;
            place_blob(&t.repo_dir, &abs, &t.model_path.join(&rel), &id, false)?;
        }
        // An empty folder model still needs its snapshot folder.
        fs::create_dir_all(&t.model_path)
            .map_err(|e| InstallError::io("creating folder", &t.model_path, e))?;
    } else {
        let id = id_of("", staged)?;
        place_blob(&t.repo_dir, staged, &t.model_path, &id, false)?;
    }
    if let Some(rev) = &t.revision {
        write_ref(&t.repo_dir, rev, &t.commit)?;
    }
    Ok(())
}

/// `link`'s target as a lexical absolute path (no symlink resolution).
fn link_target(link: &Path) -> Option<PathBuf> {
    let t = fs::read_link(link).ok()?;
    let mut out = link.parent()?.to_path_buf();
    for c in t.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            Component::RootDir => out = PathBuf::from("/"),
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

/// The blobs the symlinks at or under `path` point at (lexical absolute paths).
pub(crate) fn linked_blobs(path: &Path) -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.file_type().is_symlink() {
            if let Some(t) = link_target(&p) {
                out.insert(t);
            }
        } else if md.is_dir()
            && let Ok(rd) = fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    out
}

/// The refs files of a repo whose content names `commit`.
pub(crate) fn refs_to(repo_dir: &Path, commit: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo_dir.join("refs")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if fs::read_to_string(&p).is_ok_and(|c| c.trim() == commit) {
                out.push(p);
            }
        }
    }
    out
}

/// Removes an hf-cache model at `path` (a snapshot folder, a subfolder of one, or a file's
/// symlink): the path, then the snapshot folders it leaves empty, the refs to a snapshot that
/// is gone, the blobs no remaining snapshot links to, and the repo's folders left empty.
/// Returns whether anything was there.
pub(crate) fn remove_hf(models_dir: &Path, path: &Path) -> Result<bool, InstallError> {
    let Some((repo_dir, snapshot)) = hf_snapshot_of(models_dir, path) else {
        return super::local::remove_path(path);
    };
    let blobs = linked_blobs(path);
    let existed = super::local::remove_path(path)?;
    // Empty folders between the path and the snapshot, the snapshot itself included.
    let mut cur = path.parent();
    while let Some(d) = cur {
        if !d.starts_with(&snapshot) || fs::remove_dir(d).is_err() || d == snapshot {
            break;
        }
        cur = d.parent();
    }
    if !snapshot.exists()
        && let Some(commit) = snapshot
            .file_name()
            .map(|c| c.to_string_lossy().into_owned())
    {
        for r in refs_to(&repo_dir, &commit) {
            let _ = fs::remove_file(&r);
        }
    }
    let still = linked_blobs(&repo_dir.join("snapshots"));
    for b in blobs {
        if b.starts_with(repo_dir.join("blobs")) && !still.contains(&b) {
            let _ = fs::remove_file(&b);
        }
    }
    for sub in ["refs", "blobs", "snapshots"] {
        remove_empty_tree(&repo_dir.join(sub));
    }
    let _ = fs::remove_dir(&repo_dir);
    Ok(existed)
}

/// Removes `dir` and the folders under it when they hold no file.
fn remove_empty_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse_and_default_to_invokeai() {
        assert_eq!(Layout::default(), Layout::InvokeAi);
        assert_eq!("hf-cache".parse::<Layout>().unwrap(), Layout::HfCache);
        assert!("diffusers".parse::<Layout>().is_err());
    }

    #[test]
    fn flat_folders_by_type() {
        use BaseModelType as B;
        use ModelFormat as F;
        use ModelType as T;
        let c = |t, f, b| folder_for(Layout::ComfyUi, t, f, b).unwrap();
        assert_eq!(
            c(T::Main, F::Checkpoint, B::StableDiffusionXL),
            "checkpoints"
        );
        assert_eq!(c(T::Main, F::Checkpoint, B::Flux), "diffusion_models");
        assert_eq!(c(T::Main, F::Diffusers, B::StableDiffusion1), "diffusers");
        assert_eq!(c(T::Lora, F::Lycoris, B::StableDiffusion1), "loras");
        assert_eq!(c(T::T5Encoder, F::T5Encoder, B::Any), "text_encoders");
        assert_eq!(c(T::Unknown, F::Checkpoint, B::Unknown), OTHER_FOLDER);
        let a = |t, f, b| folder_for(Layout::A1111, t, f, b).unwrap();
        assert_eq!(
            a(T::Main, F::Checkpoint, B::StableDiffusion1),
            "Stable-diffusion"
        );
        assert_eq!(a(T::Lora, F::Lycoris, B::StableDiffusion1), "Lora");
        assert_eq!(a(T::Vae, F::Checkpoint, B::StableDiffusion1), "VAE");
        assert_eq!(a(T::SpandrelImageToImage, F::Checkpoint, B::Any), "ESRGAN");
        assert_eq!(
            folder_for(Layout::HfCache, T::Lora, F::Lycoris, B::Any),
            None
        );
    }

    /// A placement rolled back (a kill after the links were made, before the record): the
    /// staged files stay (they were hard-linked), the repo folder goes, a blob another
    /// snapshot links to stays.
    #[test]
    fn placing_and_removing_keeps_staging_and_shared_blobs() {
        let d = tempfile::tempdir().unwrap();
        let models = d.path().join("models");
        let staged = d.path().join("staged");
        fs::create_dir_all(staged.join("unet")).unwrap();
        fs::write(staged.join("unet/w.safetensors"), b"weights").unwrap();
        fs::write(staged.join("config.json"), b"{}").unwrap();
        let repo_dir = models.join("models--o--n");
        let t = |commit: &str| HfTarget {
            repo_dir: repo_dir.clone(),
            commit: commit.to_owned(),
            revision: Some(format!("rev-{commit}")),
            model_path: repo_dir.join("snapshots").join(commit),
        };
        let id = |rel: &str, abs: &Path| blob_id(abs, None, rel == "config.json");
        place_hf(&t("c1"), &staged, &id).unwrap();
        place_hf(&t("c2"), &staged, &id).unwrap();
        let link = repo_dir.join("snapshots/c1/unet/w.safetensors");
        assert_eq!(fs::read(&link).unwrap(), b"weights");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from(format!(
                "../../../blobs/{}",
                hex::encode(sha2::Sha256::digest(b"weights"))
            ))
        );
        assert_eq!(
            fs::read_to_string(repo_dir.join("refs/rev-c1")).unwrap(),
            "c1"
        );

        assert!(remove_hf(&models, &repo_dir.join("snapshots/c2")).unwrap());
        assert!(!repo_dir.join("refs/rev-c2").exists());
        assert_eq!(fs::read(&link).unwrap(), b"weights", "c1's blobs stay");
        assert!(remove_hf(&models, &repo_dir.join("snapshots/c1")).unwrap());
        assert!(!repo_dir.exists());
        assert_eq!(
            fs::read(staged.join("unet/w.safetensors")).unwrap(),
            b"weights"
        );
    }

    #[test]
    fn links_are_relative_to_the_repo() {
        let r = Path::new("/m/models--o--n");
        let l = r.join("snapshots/c/unet/config.json");
        assert_eq!(
            relative_link(r, &l, &r.join("blobs/abc")),
            PathBuf::from("../../../blobs/abc")
        );
    }
}
