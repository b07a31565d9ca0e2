//! Hashing: known answers, folder semantics, imohash sampling, CLI.

use std::fs;
use std::path::Path;

use modelsync::cli::{Status, run};
use modelsync::hash::{HashAlgorithm, HashError, hash_path, sha256_file};

/// The official BLAKE3 test input: byte i is i % 251.
fn vector_input(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn write(p: &Path, b: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, b).unwrap();
}

#[test]
fn known_answers() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    let abc = dir.path().join("abc");
    let big = dir.path().join("big");
    write(&empty, b"");
    write(&abc, b"abc");
    write(&big, &vector_input(102_400));
    let cases = [
        (
            &empty,
            HashAlgorithm::Blake3,
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        ),
        (
            &abc,
            HashAlgorithm::Blake3,
            "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
        ),
        (
            &big,
            HashAlgorithm::Blake3,
            "blake3:bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085",
        ),
        (
            &big,
            HashAlgorithm::Blake3Single,
            "blake3:bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085",
        ),
        (
            &empty,
            HashAlgorithm::Sha256,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            &abc,
            HashAlgorithm::Sha256,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            &big,
            HashAlgorithm::Sha256,
            "sha256:74588b7f0bcc354ac14d9cf199fa3a20c05f0c7293b9075b2f2e146e718de800",
        ),
    ];
    for (p, algo, want) in cases {
        assert_eq!(
            hash_path(p, algo).unwrap(),
            want,
            "{algo} of {}",
            p.display()
        );
    }
    assert_eq!(
        sha256_file(&abc).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn folder_hash_ignores_folder_name_and_configs_but_not_weights() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("model-a");
    write(
        &a.join("unet/diffusion_pytorch_model.safetensors"),
        b"unet weights",
    );
    write(
        &a.join("vae/diffusion_pytorch_model.safetensors"),
        b"vae weights",
    );
    write(&a.join("model_index.json"), b"{}");
    for algo in HashAlgorithm::ALL {
        let h1 = hash_path(&a, *algo).unwrap();
        assert!(h1.starts_with(&format!("{}:", algo.prefix())), "{h1}");

        let b = dir.path().join(format!("renamed-{algo}"));
        fs::rename(&a, &b).unwrap();
        assert_eq!(hash_path(&b, *algo).unwrap(), h1, "{algo}: folder rename");
        write(&b.join("model_index.json"), b"{\"edited\": true}");
        write(&b.join(".cache/x.safetensors"), b"hidden");
        assert_eq!(
            hash_path(&b, *algo).unwrap(),
            h1,
            "{algo}: config edit / hidden file"
        );

        write(
            &b.join("vae/diffusion_pytorch_model.safetensors"),
            b"vae weightz",
        );
        assert_ne!(hash_path(&b, *algo).unwrap(), h1, "{algo}: weight byte");
        write(
            &b.join("vae/diffusion_pytorch_model.safetensors"),
            b"vae weights",
        );
        assert_eq!(hash_path(&b, *algo).unwrap(), h1);

        fs::rename(b.join("vae"), b.join("vae2")).unwrap();
        assert_ne!(hash_path(&b, *algo).unwrap(), h1, "{algo}: weight moved");
        fs::rename(b.join("vae2"), b.join("vae")).unwrap();
        fs::rename(&b, &a).unwrap();
    }
    assert_eq!(
        hash_path(&a, HashAlgorithm::Blake3).unwrap(),
        hash_path(&a, HashAlgorithm::Blake3Single).unwrap()
    );
}

#[test]
fn imohash_samples_large_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.bin");
    let mut data = vector_input(1 << 20);
    write(&p, &data);
    let h = hash_path(&p, HashAlgorithm::Imohash).unwrap();
    // 16 bytes; the size 1 MiB as LEB128 (80 80 40) leads.
    assert_eq!(h.len(), "imohash:".len() + 32);
    assert!(h.starts_with("imohash:808040"), "{h}");
    // A byte outside the three 16 KiB samples is not seen (that is the trade-off) …
    data[100_000] ^= 1;
    write(&p, &data);
    assert_eq!(hash_path(&p, HashAlgorithm::Imohash).unwrap(), h);
    // … one inside the first, middle or last sample is.
    for at in [10, (1 << 19) + 5, (1 << 20) - 3] {
        let mut d = data.clone();
        d[at] ^= 1;
        write(&p, &d);
        assert_ne!(
            hash_path(&p, HashAlgorithm::Imohash).unwrap(),
            h,
            "byte {at}"
        );
    }
    // Small files are hashed whole.
    let s = dir.path().join("small.bin");
    write(&s, b"abc");
    let h1 = hash_path(&s, HashAlgorithm::Imohash).unwrap();
    write(&s, b"abd");
    assert_ne!(hash_path(&s, HashAlgorithm::Imohash).unwrap(), h1);
}

/// The imohash spec's test message M(n): MurmurHash3-128 digests of "A", "AA", "AAA", …
/// (a running hash fed one `A` at a time), concatenated, cut to n bytes.
fn imohash_message(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    let mut fed = Vec::new();
    while out.len() < n {
        fed.push(b'A');
        let h = murmur3::murmur3_x64_128(&mut fed.as_slice(), 0).unwrap();
        out.extend_from_slice(&(h as u64).to_be_bytes());
        out.extend_from_slice(&((h >> 64) as u64).to_be_bytes());
    }
    out.truncate(n);
    out
}

/// The published vectors of github.com/kalafut/imohash `algorithm.md` (sample size 16 KiB,
/// threshold 128 KiB — the defaults; the vector with a custom threshold needs parameters the
/// CLI does not take).
#[test]
fn imohash_matches_the_spec_test_vectors() {
    let m = imohash_message(1_000_000);
    assert_eq!(hex::encode(&m[..16]), "035fc2b79a29b17a387df29c46dd9937");
    assert_eq!(
        hex::encode(&m[1_000_000 - 16..]),
        "7b7cd46489e93605eb7894c5d338463f"
    );
    let dir = tempfile::tempdir().unwrap();
    for (n, want) in [
        (0, "00000000000000000000000000000000"),
        (1, "016ac6dd306a3e594e711127c5b5a8e4"),
        (127, "7f0e0eaa0a415e2878303214a087fbab"),
        (128, "80017902d85ab752459758292a217ed8"),
        (4095, "ff1fc7e3b9890469ee676df99f6ac7b7"),
        (4096, "80203d4ea589349dcdf63511a8d49d4a"),
        (131_072, "808008ed886018d5cd37a9b35bbae286"),
        (500_000, "a0c21ea46738cf366d496962000a45f7"),
    ] {
        let p = dir.path().join(format!("m{n}"));
        write(&p, &m[..n]);
        assert_eq!(
            hash_path(&p, HashAlgorithm::Imohash).unwrap(),
            format!("imohash:{want}"),
            "M({n})"
        );
    }
}

#[test]
fn errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let e = hash_path(&dir.path().join("nope"), HashAlgorithm::Blake3).unwrap_err();
    assert!(matches!(e, HashError::NotFound(_)), "{e}");
    let d = dir.path().join("docs");
    write(&d.join("README.md"), b"x");
    let e = hash_path(&d, HashAlgorithm::Sha256)
        .unwrap_err()
        .to_string();
    assert!(e.contains("docs") && e.contains("no weight files"), "{e}");
}

#[test]
fn cli_hash() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("abc.safetensors");
    write(&p, b"abc");
    let s = p.display().to_string();
    assert_eq!(run(["modelsync", "hash", &s]), Status::Success);
    assert_eq!(
        run(["modelsync", "hash", &s, "--algo", "sha256", "-o", "json"]),
        Status::Success
    );
    assert_eq!(
        run(["modelsync", "hash", &s, "--algo", "md5"]),
        Status::Error
    );
}
