//! The Hub client against the in-test Hub emulator (`support::hub_server`).

use std::time::Duration;

use modelsync::hub::{
    ExpectedHash, FileFilter, HubClient, HubEnv, HubError, HubOptions, ModelSource, ResolvedToken,
    Token, TokenSource, resolve_token,
};
use modelsync::taxonomy::ModelRepoVariant;

use crate::support::hub_server::{FakeFile, FakeRepo, Fault, Host, HubServer, Target};

fn client(hub: &HubServer) -> HubClient {
    let mut o = HubOptions::new(hub.endpoint_url());
    // Keep retries quick: the emulator's Retry-After is 0 unless a test says otherwise.
    o.retry_base_delay = Duration::from_millis(1);
    HubClient::with_options(o).unwrap()
}

fn anon() -> ResolvedToken {
    ResolvedToken::anonymous()
}

fn weights(tag: &str, n: usize) -> Vec<u8> {
    tag.bytes().cycle().take(n).collect()
}

/// An SD1.5-shaped diffusers repo with fp16 and default weights, `.bin` duplicates, a
/// non_ema variant, root checkpoints and an image.
fn sd15(id: &str) -> FakeRepo {
    FakeRepo::new(id)
        .tags(&[
            "diffusers",
            "license:creativeml-openrail-m",
            "diffusers:StableDiffusionPipeline",
        ])
        .file(
            "model_index.json",
            br#"{"_class_name": "StableDiffusionPipeline"}"#.to_vec(),
        )
        .file("README.md", b"# sd".to_vec())
        .file(".gitattributes", b"*.safetensors filter=lfs".to_vec())
        .file(
            "scheduler/scheduler_config.json",
            b"{\"beta_start\": 0.00085}".to_vec(),
        )
        .file(
            "text_encoder/config.json",
            b"{\"hidden_size\": 768}".to_vec(),
        )
        .file("text_encoder/model.safetensors", weights("te32", 400))
        .file("text_encoder/model.fp16.safetensors", weights("te16", 200))
        .file("text_encoder/pytorch_model.bin", weights("tebin", 400))
        .file("tokenizer/vocab.json", b"{\"a\": 1}".to_vec())
        .file("tokenizer/merges.txt", b"#version: 0.2\na b\n".to_vec())
        .file("unet/config.json", b"{\"sample_size\": 64}".to_vec())
        .file(
            "unet/diffusion_pytorch_model.safetensors",
            weights("unet32", 1000),
        )
        .file(
            "unet/diffusion_pytorch_model.fp16.safetensors",
            weights("unet16", 500),
        )
        .file("unet/diffusion_pytorch_model.bin", weights("unetbin", 1000))
        .file(
            "unet/diffusion_pytorch_model.non_ema.safetensors",
            weights("nonema", 1000),
        )
        .file("vae/config.json", b"{\"latent_channels\": 4}".to_vec())
        .file(
            "vae/diffusion_pytorch_model.safetensors",
            weights("vae32", 300),
        )
        .file(
            "vae/diffusion_pytorch_model.fp16.safetensors",
            weights("vae16", 150),
        )
        .file("v1-5-pruned-emaonly.ckpt", weights("ckpt", 2000))
        .file("v1-5-pruned-emaonly.safetensors", weights("single", 2000))
        .file("sample.png", weights("png", 50))
}

fn hf(s: &str) -> modelsync::hub::HfModelSource {
    match ModelSource::parse_in(s, std::path::Path::new("/nonexistent-base")).unwrap() {
        ModelSource::Hf(h) => h,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn info_and_paginated_tree() {
    let hub = HubServer::start();
    hub.add_repo(sd15("owner/sd15"));
    hub.set_page_size(3);
    let c = client(&hub);
    let info = c.model_info("owner/sd15", None, &anon()).await.unwrap();
    assert_eq!(info.id, "owner/sd15");
    assert_eq!(
        info.sha.as_deref(),
        Some(hub.commit("owner/sd15", "main").as_str())
    );
    assert!(!info.private && !info.gated.is_gated());
    assert!(info.tags.contains(&"diffusers".to_owned()));
    assert_eq!(info.author.as_deref(), Some("owner"));
    assert_eq!(info.card_data, Some(serde_json::json!({"license": "mit"})));
    let unet = info
        .siblings
        .iter()
        .find(|s| s.rfilename == "unet/diffusion_pytorch_model.fp16.safetensors")
        .unwrap();
    assert_eq!(unet.size, Some(500));
    let lfs = unet.lfs.as_ref().unwrap();
    assert_eq!(
        lfs.sha256,
        modelsync::hub::sha256_hex(&weights("unet16", 500))
    );

    let files = c.list_files("owner/sd15", "main", &anon()).await.unwrap();
    assert_eq!(files.len(), 21, "every file across all pages");
    let tree_calls = hub
        .hub_requests()
        .iter()
        .filter(|r| r.path.contains("/tree/"))
        .count();
    // 21 files + 5 directories at 3 a page.
    assert_eq!(tree_calls, 9);
    let cfg = files.iter().find(|f| f.path == "unet/config.json").unwrap();
    assert!(cfg.lfs.is_none());
    assert_eq!(
        cfg.oid,
        modelsync::hub::git_blob_sha1(b"{\"sample_size\": 64}")
    );
    let w = files
        .iter()
        .find(|f| f.path == "vae/diffusion_pytorch_model.fp16.safetensors")
        .unwrap();
    assert_eq!(w.size, 150);
    assert_eq!(
        w.lfs.as_ref().unwrap().sha256,
        modelsync::hub::sha256_hex(&weights("vae16", 150))
    );

    // A branch and a commit as the revision.
    hub.add_repo(sd15("owner/sd15b").branch("dev", vec![FakeFile::small("only.txt", "x")]));
    let dev = c
        .model_info("owner/sd15b", Some("dev"), &anon())
        .await
        .unwrap();
    assert_eq!(
        dev.sha.as_deref(),
        Some(hub.commit("owner/sd15b", "dev").as_str())
    );
    let at_commit = c
        .list_files("owner/sd15b", &hub.commit("owner/sd15b", "dev"), &anon())
        .await
        .unwrap();
    assert_eq!(at_commit.len(), 1);
}

#[tokio::test]
async fn wrong_case_repo_id_follows_the_307() {
    let hub = HubServer::start();
    hub.add_repo(sd15("Owner/SD15"));
    let c = client(&hub);
    let info = c.model_info("owner/sd15", None, &anon()).await.unwrap();
    assert_eq!(info.id, "Owner/SD15");
    let statuses: Vec<u16> = hub.hub_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![307, 200]);
    let files = c.list_files("owner/sd15", "main", &anon()).await.unwrap();
    assert_eq!(files.len(), 21);
    let head = c
        .file_head("owner/SD15", "main", "unet/config.json", &anon())
        .await
        .unwrap();
    assert!(!head.is_lfs);
}

#[tokio::test]
async fn error_codes_map_to_errors_naming_repo_revision_and_path() {
    let hub = HubServer::start();
    hub.add_repo(sd15("owner/public"));
    hub.add_repo(sd15("owner/secret").private());
    hub.grant("hf_reader", "owner/secret");
    let c = client(&hub);
    let nobody = ResolvedToken::anonymous();
    let stranger = ResolvedToken::from_entry(Token::new("hf_stranger").unwrap());
    let reader = ResolvedToken::from_entry(Token::new("hf_reader").unwrap());

    // Missing repo: 401 without a token, 404 with one.
    match c
        .model_info("owner/missing", None, &nobody)
        .await
        .unwrap_err()
    {
        HubError::RepoNotFound { status, repo, .. } => {
            assert_eq!((status, repo.as_str()), (401, "owner/missing"));
        }
        e => panic!("{e}"),
    }
    let e = c
        .model_info("owner/missing", None, &stranger)
        .await
        .unwrap_err();
    assert!(
        matches!(e, HubError::RepoNotFound { status: 404, .. }),
        "{e}"
    );
    assert!(!e.to_string().contains("hf_stranger"));

    // Private: hidden without access, visible with it.
    let e = c
        .model_info("owner/secret", None, &nobody)
        .await
        .unwrap_err();
    assert!(
        matches!(e, HubError::RepoNotFound { status: 401, .. }),
        "{e}"
    );
    let e = c
        .list_files("owner/secret", "main", &stranger)
        .await
        .unwrap_err();
    assert!(
        matches!(e, HubError::RepoNotFound { status: 404, .. }),
        "{e}"
    );
    let info = c.model_info("owner/secret", None, &reader).await.unwrap();
    assert!(info.private);

    // Unknown revision.
    let e = c
        .model_info("owner/public", Some("v9"), &nobody)
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::RevisionNotFound { .. }), "{e}");
    assert!(
        e.to_string().contains("owner/public") && e.to_string().contains("v9"),
        "{e}"
    );
    let e = c
        .list_files("owner/public", "nope", &nobody)
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::RevisionNotFound { .. }), "{e}");

    // Missing file.
    let e = c
        .file_head("owner/public", "main", "unet/missing.safetensors", &nobody)
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::EntryNotFound { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("owner/public")
            && msg.contains("main")
            && msg.contains("unet/missing.safetensors"),
        "{msg}"
    );

    // Some other status, for longer than the retries last.
    hub.fail_next(Target::Hub, 5, Fault::Status(500));
    let e = c
        .model_info("owner/public", None, &nobody)
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::Http { status: 500, .. }), "{e}");
}

#[tokio::test]
async fn rate_limit_and_5xx_are_retried_a_bounded_number_of_times() {
    let hub = HubServer::start();
    hub.add_repo(sd15("owner/sd15"));
    let c = client(&hub);
    hub.fail_next(Target::Hub, 2, Fault::RateLimit { retry_after: 0 });
    c.model_info("owner/sd15", None, &anon()).await.unwrap();
    let statuses: Vec<u16> = hub.hub_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 429, 200]);

    hub.clear_log();
    hub.fail_next(Target::Hub, 1, Fault::Status(503));
    hub.fail_next(Target::Hub, 1, Fault::Status(502));
    assert_eq!(
        c.list_files("owner/sd15", "main", &anon())
            .await
            .unwrap()
            .len(),
        21
    );

    // Every 5xx passes, like it does for downloads (500 and 507 were final before).
    hub.clear_log();
    hub.fail_next(Target::Hub, 1, Fault::Status(500));
    hub.fail_next(Target::Hub, 1, Fault::Status(507));
    c.model_info("owner/sd15", None, &anon()).await.unwrap();
    let statuses: Vec<u16> = hub.hub_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 507, 200]);

    // A 5xx that never passes: 1 try + 4 retries, then the error.
    hub.clear_log();
    hub.fail_next(Target::Hub, 5, Fault::Status(500));
    let e = c.model_info("owner/sd15", None, &anon()).await.unwrap_err();
    assert!(matches!(e, HubError::Http { status: 500, .. }), "{e}");
    assert_eq!(hub.hub_requests().len(), 5);

    // A 501 does not pass: no retry.
    hub.clear_log();
    hub.fail_next(Target::Hub, 1, Fault::Status(501));
    let e = c.model_info("owner/sd15", None, &anon()).await.unwrap_err();
    assert!(matches!(e, HubError::Http { status: 501, .. }), "{e}");
    assert_eq!(hub.hub_requests().len(), 1);

    hub.clear_log();
    hub.fail_next(Target::Hub, 100, Fault::RateLimit { retry_after: 0 });
    let e = c.model_info("owner/sd15", None, &anon()).await.unwrap_err();
    match &e {
        HubError::RateLimited { attempts, .. } => assert_eq!(*attempts, 5),
        other => panic!("{other}"),
    }
    assert_eq!(
        hub.hub_requests().len(),
        5,
        "1 try + 4 retries, then give up"
    );
}

#[tokio::test]
async fn file_head_reads_the_302_without_following_it() {
    let hub = HubServer::start();
    hub.add_repo(sd15("owner/sd15"));
    let c = client(&hub);
    let commit = hub.commit("owner/sd15", "main");
    let path = "unet/diffusion_pytorch_model.fp16.safetensors";
    let head = c
        .file_head("owner/sd15", "main", path, &anon())
        .await
        .unwrap();
    let sha = modelsync::hub::sha256_hex(&weights("unet16", 500));
    assert!(head.is_lfs);
    assert_eq!(head.linked_etag.as_deref(), Some(sha.as_str()));
    assert_eq!(head.linked_size, Some(500));
    assert_eq!(head.size, Some(500));
    assert_eq!(head.repo_commit.as_deref(), Some(commit.as_str()));
    assert_eq!(head.expected_hash(), Some(ExpectedHash::Sha256(sha)));
    assert_eq!(
        head.location.port(),
        Some(hub.cdn_addr().port()),
        "the location is the CDN's"
    );
    assert!(hub.cdn_requests().is_empty(), "the CDN was not asked");

    // A small file: the 307 to resolve-cache is followed; the ETag is the git blob sha1.
    let head = c
        .file_head("owner/sd15", "main", "unet/config.json", &anon())
        .await
        .unwrap();
    assert!(!head.is_lfs);
    assert_eq!(
        head.expected_hash(),
        Some(ExpectedHash::GitBlobSha1(modelsync::hub::git_blob_sha1(
            b"{\"sample_size\": 64}"
        )))
    );
    assert_eq!(head.size, Some(19));
    assert!(
        head.location
            .path()
            .starts_with("/api/resolve-cache/models/owner/sd15/")
    );
    let last = hub.hub_requests().pop().unwrap();
    assert_eq!(last.method, "HEAD");
    assert_eq!(last.header("accept-encoding"), Some("identity"));
}

/// What the download queue will do with a spec: GET with the token, reqwest's default redirect
/// policy, verify the bytes.
async fn fetch(spec: &modelsync::hub::DownloadSpec) -> Result<Vec<u8>, String> {
    let http = reqwest::Client::new();
    let mut req = http.get(spec.url.clone());
    if let Some(t) = &spec.access_token {
        req = req.bearer_auth(t.expose());
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let body = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
    let mut v = spec.expected.verifier(spec.size);
    v.update(&body);
    v.finish().map_err(|e| e.to_string())?;
    Ok(body)
}

#[tokio::test]
async fn fp16_plan_downloads_verify_and_never_send_the_token_to_the_cdn() {
    let hub = HubServer::start();
    hub.add_repo(sd15("owner/sd15").gated("manual"));
    hub.grant("hf_granted", "owner/sd15");
    let c = client(&hub);
    let src = hf("owner/sd15:fp16");
    let auth = ResolvedToken::from_entry(Token::new("hf_granted").unwrap());
    let plan = c
        .plan_source(&src, &FileFilter::from_source(&src), &auth)
        .await
        .unwrap();
    let paths: Vec<&str> = plan.files.iter().map(|f| f.file.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "tokenizer/merges.txt",
            "tokenizer/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.fp16.safetensors",
        ]
    );
    assert_eq!(plan.commit, hub.commit("owner/sd15", "main"));
    assert_eq!(
        plan.total_bytes(),
        plan.files.iter().map(|f| f.file.size).sum::<u64>()
    );
    assert_eq!(plan.token_source, TokenSource::Entry);
    assert_eq!(plan.metadata.id, "owner/sd15");
    assert_eq!(
        plan.metadata.tag_dict["license"],
        serde_json::json!("creativeml-openrail-m")
    );
    assert_eq!(plan.metadata.files.len(), 10);
    let unet = plan
        .downloads
        .iter()
        .find(|d| d.repo_path == "unet/diffusion_pytorch_model.fp16.safetensors")
        .unwrap();
    assert!(matches!(unet.expected, ExpectedHash::Sha256(_)));
    assert!(
        unet.url.path().contains(&plan.commit),
        "pinned to the commit"
    );
    let cfg = plan
        .downloads
        .iter()
        .find(|d| d.repo_path == "unet/config.json")
        .unwrap();
    assert!(matches!(cfg.expected, ExpectedHash::GitBlobSha1(_)));
    assert_eq!(cfg.dest, std::path::Path::new("unet").join("config.json"));

    hub.clear_log();
    for d in &plan.downloads {
        fetch(d)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", d.repo_path));
    }
    let cdn = hub.cdn_requests();
    assert_eq!(cdn.len(), 3, "the three LFS weights came from the CDN");
    assert!(cdn.iter().all(|r| !r.authorization), "{cdn:?}");
    assert!(hub.hub_requests().iter().all(|r| r.authorization));
    // Text came gzip-compressed and chunked, and still verified.
    assert!(hub.hub_requests().iter().any(|r| {
        r.path.ends_with("/merges.txt")
            && r.header("accept-encoding")
                .is_some_and(|a| a.contains("gzip"))
    }));
    // Metadata round trip.
    let json = plan.metadata.to_json();
    assert!(!json.contains("hf_granted"));
    assert_eq!(
        modelsync::hub::HuggingFaceMetadata::from_json(&json).unwrap(),
        plan.metadata
    );

    // A corrupted LFS body fails verification.
    hub.corrupt_lfs(
        "owner/sd15",
        "unet/diffusion_pytorch_model.fp16.safetensors",
    );
    let e = fetch(unet).await.unwrap_err();
    assert!(e.contains("hash mismatch"), "{e}");
}

#[tokio::test]
async fn gated_without_token_says_which_sources_were_tried() {
    let hub = HubServer::start();
    hub.add_repo(sd15("owner/gated").gated("auto"));
    hub.grant("hf_granted", "owner/gated");
    let c = client(&hub);
    let home = tempfile::tempdir().unwrap();
    let env = HubEnv {
        hf_home: Some(home.path().to_owned()),
        ..HubEnv::empty()
    };
    let src = hf("owner/gated:fp16");
    let filter = FileFilter::from_source(&src);

    // No token anywhere: info and tree are public, the download check is refused.
    let auth = resolve_token(None, &env);
    let e = c.plan_source(&src, &filter, &auth).await.unwrap_err();
    assert!(matches!(e, HubError::Gated { status: 401, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("owner/gated"), "{msg}");
    assert!(
        msg.contains("the entry's token") && msg.contains("HF_TOKEN"),
        "{msg}"
    );
    assert!(
        msg.contains(&home.path().join("token").display().to_string()),
        "{msg}"
    );

    // A token without access (from HF_TOKEN): 403, names the source, never the value.
    let env_tok = HubEnv {
        token: Token::new("hf_wrong_secret"),
        ..env.clone()
    };
    let e = c
        .plan_source(&src, &filter, &resolve_token(None, &env_tok))
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::Gated { status: 403, .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("HF_TOKEN") && !msg.contains("hf_wrong_secret"),
        "{msg}"
    );

    // The token file holds a granted token.
    std::fs::write(home.path().join("token"), "hf_granted\n").unwrap();
    let auth = resolve_token(None, &env);
    assert_eq!(
        auth.source,
        TokenSource::TokenFile(home.path().join("token"))
    );
    let plan = c.plan_source(&src, &filter, &auth).await.unwrap();
    for d in &plan.downloads {
        fetch(d).await.unwrap();
    }
    assert!(hub.cdn_requests().iter().all(|r| !r.authorization));

    // A refusal seen by the download queue maps to the same error.
    let e = c.download_error(&plan.downloads[0], &anon(), 401, Some("GatedRepo"), "{}");
    assert!(matches!(e, HubError::Gated { .. }), "{e}");
    assert!(e.to_string().contains(&plan.commit), "{e}");
}

#[tokio::test]
async fn hostile_listings_are_refused() {
    for bad in [
        "../../etc/evil.json",
        "/abs/evil.json",
        "a\\..\\evil.json",
        "a//b.json",
    ] {
        let hub = HubServer::start();
        hub.add_repo(
            FakeRepo::new("owner/evil")
                .file("config.json", b"{}".to_vec())
                .small_file(bad, b"x".to_vec()),
        );
        let c = client(&hub);
        let e = c
            .list_files("owner/evil", "main", &anon())
            .await
            .unwrap_err();
        assert!(matches!(e, HubError::UnsafePath(_)), "{bad}: {e}");
        assert!(e.to_string().contains("owner/evil"), "{e}");
        let e = c.model_info("owner/evil", None, &anon()).await.unwrap_err();
        assert!(matches!(e, HubError::UnsafePath(_)), "{bad}: {e}");
    }
}

#[tokio::test]
async fn offline_mode_makes_no_request() {
    let hub = HubServer::start();
    hub.add_repo(sd15("owner/sd15"));
    let env = HubEnv {
        endpoint: Some(hub.endpoint()),
        offline: true,
        ..HubEnv::empty()
    };
    let c = HubClient::from_env(None, &env).unwrap();
    assert!(c.is_offline());
    assert_eq!(c.endpoint(), &hub.endpoint_url());
    let src = hf("owner/sd15");
    let e = c
        .plan_source(&src, &FileFilter::from_source(&src), &anon())
        .await
        .unwrap_err();
    assert!(matches!(e, HubError::Offline { .. }), "{e}");
    assert!(e.to_string().contains("HF_HUB_OFFLINE"), "{e}");
    assert!(hub.requests().is_empty());
}

#[tokio::test]
#[allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "the emulator's paths are lowercase"
)]
async fn variant_subfolder_single_file_and_globs_against_the_listing() {
    let hub = HubServer::start();
    hub.add_repo(sd15("owner/sd15"));
    let c = client(&hub);
    let plan = |s: &'static str, inc: Vec<String>, exc: Vec<String>| {
        let c = c.clone();
        async move {
            let src = hf(s);
            let f = FileFilter::from_source(&src).with_globs(inc, exc);
            c.plan_source(&src, &f, &anon()).await
        }
    };
    let dests = |p: &modelsync::hub::RepoPlan| -> Vec<String> {
        p.files.iter().map(|f| f.dest.clone()).collect()
    };

    // Default variant: unlabelled safetensors; no .bin, no non_ema, no root checkpoints, no image.
    let p = plan("owner/sd15", vec![], vec![]).await.unwrap();
    let d = dests(&p);
    assert!(d.contains(&"unet/diffusion_pytorch_model.safetensors".to_owned()));
    assert!(
        !d.iter().any(|x| x.contains("fp16")
            || x.contains("non_ema")
            || x.ends_with(".bin")
            || x.ends_with(".ckpt")
            || x.ends_with(".png")
            || x.starts_with("v1-5")),
        "{d:?}"
    );

    // A variant the repo does not have falls back to the default files.
    let onnx = plan("owner/sd15:onnx", vec![], vec![]).await.unwrap();
    assert_eq!(dests(&onnx), d);

    // Subfolder: only that folder, relative to it.
    let p = plan("owner/sd15:fp16:vae", vec![], vec![]).await.unwrap();
    assert_eq!(
        dests(&p),
        vec!["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    );

    // Single file.
    let p = plan("owner/sd15::v1-5-pruned-emaonly.ckpt", vec![], vec![])
        .await
        .unwrap();
    assert_eq!(dests(&p), vec!["v1-5-pruned-emaonly.ckpt"]);
    let e = plan("owner/sd15::nope/file.safetensors", vec![], vec![])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope/file.safetensors"), "{e}");

    // Globs.
    let p = plan(
        "owner/sd15:fp16",
        vec!["*.safetensors".into()],
        vec!["text_encoder/*".into()],
    )
    .await
    .unwrap();
    assert_eq!(
        dests(&p),
        vec![
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors"
        ]
    );
    assert_eq!(p.metadata.files.len(), 2);
    assert_eq!(
        ModelRepoVariant::Fp16,
        hf("owner/sd15:fp16").variant.unwrap()
    );
}

#[tokio::test]
async fn emulator_serves_ranges_and_url_downloads() {
    let hub = HubServer::start();
    hub.add_repo(sd15("owner/sd15"));
    let c = client(&hub);
    let commit = hub.commit("owner/sd15", "main");
    let url = c
        .resolve_url(
            "owner/sd15",
            &commit,
            "vae/diffusion_pytorch_model.fp16.safetensors",
        )
        .unwrap();
    let http = reqwest::Client::new();
    let r = http
        .get(url.clone())
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 100-149/150");
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        weights("vae16", 150)[100..].to_vec()
    );
    let r = http
        .get(url)
        .header("range", "bytes=150-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */150");

    // Text files: gzip, chunked, no Content-Length, when the client accepts gzip.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let txt = c
        .resolve_url("owner/sd15", &commit, "tokenizer/merges.txt")
        .unwrap();
    let r = raw
        .get(txt)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the 307 to resolve-cache was followed");
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert!(r.headers().get("content-length").is_none());
    let gz = r.bytes().await.unwrap();
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
    assert_eq!(plain, "#version: 0.2\na b\n");

    let u = hub.add_url_download("123", "detail.safetensors", b"lora".to_vec());
    let r = http.get(&u).send().await.unwrap();
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"detail.safetensors\""
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"lora");
    assert_eq!(hub.requests().last().unwrap().host, Host::Cdn);
}
