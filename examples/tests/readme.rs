//! Every ```rust block of the top-level README, compiled exactly as pasted (build.rs
//! extracts them; hidden `# ` lines would not compile here). Blocks with a `main` run
//! against a throwaway etcd whose endpoints they read from `ETCD_ENDPOINTS`; blocks that
//! are `#[tokio::test]`s run as tests of this file.

use std::process::{ExitCode, Termination};

/// The blocks read one process-wide variable, so their runs never overlap.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_main<T: Termination>(main: fn() -> T) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let etcd = etcd_recipes::testing::EtcdCluster::start(1).expect("start etcd");
    std::env::set_var("ETCD_ENDPOINTS", etcd.endpoints().join(","));
    assert!(main().report() == ExitCode::SUCCESS, "the README block's main failed (its error is printed above)");
}

include!(concat!(env!("OUT_DIR"), "/readme_blocks.rs"));

#[test]
fn the_readme_has_rust_blocks() {
    assert!(README_RUST_BLOCKS >= 2, "found {README_RUST_BLOCKS} rust blocks in README.md");
}
