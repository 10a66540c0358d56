//! C2 (BENCH.md): 1,000,000 local reads of one key from a config view, in reads/s.
//! Starts its own etcd (ETCD_BIN or `etcd` on PATH). `cargo bench -p etcd-recipes --bench config_reads`
//! Prints one JSON line: {"side":"ours","lang":"rust","workload":"C2","value":...,"unit":"reads/s","ok":...}

use std::hint::black_box;
use std::time::Instant;

use etcd_recipes::config::{ConfigOptions, ConfigView};
use etcd_recipes::testing::EtcdCluster;
use etcd_recipes::Client;

const READS: usize = 1_000_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = EtcdCluster::start(1)?;
    let client = Client::connect_to(etcd.endpoints()).await?;
    client.put("bench/config/key", vec![b'x'; 64]).await?;
    let view = ConfigView::key(&client, "bench/config/key", ConfigOptions::default()).await?;
    // Warm up, then take the median of 5 runs of 1,000,000 reads.
    let mut ok = true;
    for _ in 0..100_000 {
        ok &= black_box(view.get(black_box("bench/config/key"))).is_some();
    }
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..READS {
            ok &= black_box(view.get(black_box("bench/config/key"))).is_some();
        }
        rates.push(READS as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    let value = rates[rates.len() / 2];
    println!(r#"{{"side":"ours","lang":"rust","workload":"C2","value":{value:.0},"unit":"reads/s","ok":{ok}}}"#);
    Ok(())
}
