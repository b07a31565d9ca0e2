//! The integration tests' Hub emulator (`tests/it/support/hub_server.rs`) as a process, for
//! `scripts/bench-download`: every file of DIR becomes an LFS file of the repo REPO (default
//! `bench/repo`), served over the Hub protocol on 127.0.0.1 (`/api/models`, `/resolve` with a
//! `302` to the CDN listener, ranges). Prints `listening on http://ADDR` and runs until killed.
//! The files are held in memory.
//!
//! `cargo run --release --example bench_hub -- DIR [REPO]`

#[path = "../tests/it/support/hub_server.rs"]
mod hub_server;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let repo_id = args.next().unwrap_or_else(|| "bench/repo".into());
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut repo = hub_server::FakeRepo::new(&repo_id);
    for n in &names {
        repo = repo.lfs_file(n, std::fs::read(dir.join(n))?);
    }
    let hub = hub_server::HubServer::start();
    hub.add_repo(repo);
    println!("listening on {}", hub.endpoint());
    loop {
        std::thread::sleep(std::time::Duration::from_mins(1));
        // The request log is not needed here; keep it from growing.
        hub.clear_log();
    }
}
