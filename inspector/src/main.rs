//! `etcd-recipes`: see what coordination on etcd is doing. Who holds each lock and who
//! waits, who leads each election, which service instances are registered and ready,
//! what a config prefix and the queues hold; `watch` redraws as etcd changes.
//!
//! It reads etcd's Go key layouts (through `etcd_recipes::inspect`), so locks and
//! leaders held with `etcdctl lock` / `etcdctl elect` or by Go services show up too.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use etcd_recipes::etcd_client::WatchOptions;
use etcd_recipes::inspect::{self, Contender, ElectionState, LockState, Overview, QueueState, ServiceState};
use etcd_recipes::{Client, ClientOptions};

const USAGE: &str = "\
etcd-recipes: inspect locks, elections, services, config and queues kept in etcd

usage: etcd-recipes [options] <command> [args]

commands:
  locks [NAME]       holders and waiters (in order) of every lock, semaphore and
                     read-write lock, or of lock NAME: lease, fencing token, lease TTL
  elections [NAME]   leader (value, token) and candidates of every election, or of NAME
  services [NAME]    registered instances: address, readiness (ready, not_ready,
                     draining), metadata, lease TTL
  config PREFIX      every key under PREFIX: value, revision, version, lease
  queues [NAME]      queues, priority queues and work queues: items, claimed, delayed, dead
  watch              all of the above, redrawn whenever etcd changes (Ctrl-C to quit)

options:
  --endpoints A,B    etcd endpoints (default: $ETCD_ENDPOINTS, else 127.0.0.1:2379)
  --namespace NS     key namespace prefix of the recipes (as the clients use it)
  --prefix P         (locks, elections, services, queues, watch without NAME) only look under P
  --user U:P         etcd user and password
  --json             JSON instead of tables (watch: one JSON object a line per change)
  --count N          (watch) exit after N frames
  -h, --help         this text
";

struct Args {
    endpoints: Vec<String>,
    namespace: String,
    prefix: String,
    user: Option<(String, String)>,
    json: bool,
    count: Option<u64>,
    command: String,
    arg: Option<String>,
}

fn parse_args(argv: Vec<String>) -> Result<Args, String> {
    let mut endpoints = std::env::var("ETCD_ENDPOINTS").ok().filter(|s| !s.trim().is_empty());
    let mut a = Args {
        endpoints: Vec::new(),
        namespace: String::new(),
        prefix: String::new(),
        user: None,
        json: false,
        count: None,
        command: String::new(),
        arg: None,
    };
    let mut rest = Vec::new();
    let mut it = argv.into_iter();
    while let Some(x) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match x.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--json" => a.json = true,
            "--endpoints" => endpoints = Some(value("--endpoints")?),
            "--namespace" => a.namespace = value("--namespace")?,
            "--prefix" => a.prefix = value("--prefix")?,
            "--count" => {
                let n = value("--count")?;
                a.count = Some(n.parse().map_err(|_| format!("--count {n:?}: not a number"))?);
            }
            "--user" => {
                let u = value("--user")?;
                let (name, pw) = u.split_once(':').ok_or("--user takes NAME:PASSWORD")?;
                a.user = Some((name.to_string(), pw.to_string()));
            }
            s if s.starts_with("--endpoints=") => endpoints = Some(s["--endpoints=".len()..].to_string()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => rest.push(x),
        }
    }
    a.endpoints = endpoints
        .unwrap_or_else(|| "127.0.0.1:2379".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut rest = rest.into_iter();
    a.command = rest.next().ok_or("no command")?;
    a.arg = rest.next();
    if let Some(extra) = rest.next() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    match (a.command.as_str(), &a.arg) {
        ("locks" | "elections" | "services" | "queues", _) => {}
        ("config", Some(_)) => {}
        ("config", None) => return Err("config needs a PREFIX (\"\" for every key)".into()),
        ("watch", None) => {}
        ("watch", Some(x)) => return Err(format!("watch takes no argument (got {x:?}); use --prefix")),
        (c, _) => return Err(format!("unknown command {c:?}")),
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("etcd-recipes: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("etcd-recipes: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd-recipes: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(a: Args) -> Result<(), String> {
    let mut opts = ClientOptions::new(a.endpoints.clone()).with_connect_timeout(Duration::from_secs(5)).with_namespace(a.namespace.clone());
    if let Some((u, p)) = &a.user {
        opts = opts.with_user(u.clone(), p.clone());
    }
    let client = Client::connect(opts).await.map_err(|e| e.to_string())?;
    let r = command(&client, &a).await;
    client.close().await;
    r
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, String> {
    serde_json::to_string_pretty(v).map_err(|e| e.to_string())
}

async fn command(client: &Client, a: &Args) -> Result<(), String> {
    let e = |e: etcd_recipes::Error| e.to_string();
    let out = match (a.command.as_str(), a.arg.as_deref()) {
        ("locks", Some(name)) => {
            let l = inspect::lock(client, name).await.map_err(e)?;
            if a.json { json(&l)? } else { locks_table(std::slice::from_ref(&l), &HashMap::new()) }
        }
        ("locks", None) => {
            let o = inspect::overview(client, &a.prefix).await.map_err(e)?;
            if a.json { json(&o.locks)? } else { locks_table(&o.locks, &HashMap::new()) }
        }
        ("elections", Some(name)) => {
            let el = inspect::election(client, name).await.map_err(e)?;
            if a.json { json(&el)? } else { elections_table(std::slice::from_ref(&el)) }
        }
        ("elections", None) => {
            let o = inspect::overview(client, &a.prefix).await.map_err(e)?;
            if a.json { json(&o.elections)? } else { elections_table(&o.elections) }
        }
        ("services", Some(name)) => {
            let s = inspect::service(client, name).await.map_err(e)?;
            if a.json { json(&s)? } else { services_table(std::slice::from_ref(&s)) }
        }
        ("services", None) => {
            let o = inspect::overview(client, &a.prefix).await.map_err(e)?;
            if a.json { json(&o.services)? } else { services_table(&o.services) }
        }
        ("queues", Some(name)) => {
            let q = inspect::queue(client, name).await.map_err(e)?;
            if a.json { json(&q)? } else { queues_table(std::slice::from_ref(&q)) }
        }
        ("queues", None) => {
            let o = inspect::overview(client, &a.prefix).await.map_err(e)?;
            if a.json { json(&o.queues)? } else { queues_table(&o.queues) }
        }
        ("config", Some(prefix)) => {
            let (entries, revision) = inspect::config(client, prefix).await.map_err(e)?;
            if a.json {
                json(&serde_json::json!({ "revision": revision, "entries": entries }))?
            } else {
                let rows = entries
                    .iter()
                    .map(|c| {
                        let value = if c.binary { format!("<{} bytes, binary>", c.value.len()) } else { one_line(&c.value, 60) };
                        vec![c.key.clone(), c.mod_revision.to_string(), c.version.to_string(), lease(c.lease_id), value]
                    })
                    .collect();
                table(&["KEY", "MOD_REV", "VERSION", "LEASE", "VALUE"], rows)
            }
        }
        ("watch", None) => return watch(client, a).await,
        _ => unreachable!("checked by parse_args"),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}").map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

/// Columns padded to their widest cell; the last column is not padded.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    if rows.is_empty() {
        out.push("(none)".into());
    }
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

fn lease(id: i64) -> String {
    if id == 0 {
        "-".into()
    } else {
        format!("{id:x}")
    }
}

fn ttl(c: &Contender) -> String {
    match (c.ttl, c.granted_ttl) {
        (Some(t), Some(g)) => format!("{t}/{g}s"),
        _ => "gone".into(),
    }
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', "\\n");
    if s.chars().count() > max {
        format!("{}...", s.chars().take(max).collect::<String>())
    } else {
        s
    }
}

/// Wait times known to `watch`: seconds since it first saw a key (and whether the key
/// was already there when it started: then the wait is at least that long).
type Waits = HashMap<(String, i64), (f64, bool)>;

fn wait_cell(waits: &Waits, c: &Contender) -> String {
    match waits.get(&(c.key.clone(), c.create_revision)) {
        Some((s, true)) => format!(">={s:.1}s"),
        Some((s, false)) => format!("{s:.1}s"),
        None => "-".into(),
    }
}

fn locks_table(locks: &[LockState], waits: &Waits) -> String {
    let mut rows = Vec::new();
    for l in locks {
        let kind = match l.permits {
            Some(n) => format!("{}({n})", l.kind),
            None => l.kind.clone(),
        };
        let holders = l.holders.iter().map(|c| ("holder".to_string(), c));
        let waiters = l.waiters.iter().enumerate().map(|(i, c)| (format!("waiter {}", i + 1), c));
        let mut any = false;
        for (role, c) in holders.chain(waiters) {
            any = true;
            let role = match &c.side {
                Some(side) => format!("{role} ({side})"),
                None => role,
            };
            let mut row = vec![l.name.clone(), kind.clone(), role, c.lease_hex.clone(), c.create_revision.to_string(), ttl(c)];
            if !waits.is_empty() {
                row.push(wait_cell(waits, c));
            }
            rows.push(row);
        }
        if !any {
            let mut row = vec![l.name.clone(), kind.clone(), "free".into(), "-".into(), "-".into(), "-".into()];
            if !waits.is_empty() {
                row.push("-".into());
            }
            rows.push(row);
        }
    }
    if waits.is_empty() {
        table(&["LOCK", "KIND", "ROLE", "LEASE", "TOKEN", "TTL"], rows)
    } else {
        table(&["LOCK", "KIND", "ROLE", "LEASE", "TOKEN", "TTL", "SINCE"], rows)
    }
}

fn elections_table(els: &[ElectionState]) -> String {
    let mut rows = Vec::new();
    for e in els {
        let all = e.leader.iter().map(|c| ("leader".to_string(), c));
        let rest = e.candidates.iter().enumerate().map(|(i, c)| (format!("candidate {}", i + 1), c));
        let mut any = false;
        for (role, c) in all.chain(rest) {
            any = true;
            rows.push(vec![e.name.clone(), role, c.lease_hex.clone(), c.create_revision.to_string(), ttl(c), one_line(&c.value, 40)]);
        }
        if !any {
            rows.push(vec![e.name.clone(), "no leader".into(), "-".into(), "-".into(), "-".into(), String::new()]);
        }
    }
    table(&["ELECTION", "ROLE", "LEASE", "TOKEN", "TTL", "VALUE"], rows)
}

fn services_table(services: &[ServiceState]) -> String {
    let mut rows = Vec::new();
    for s in services {
        for i in &s.instances {
            let meta = if i.metadata.is_null() { "-".to_string() } else { one_line(&i.metadata.to_string(), 60) };
            let t = i.ttl.map_or_else(|| if i.lease_id == 0 { "-".into() } else { "gone".into() }, |t| format!("{t}s"));
            rows.push(vec![
                s.name.clone(),
                i.id.clone(),
                i.addr.clone(),
                i.readiness.clone(),
                lease(i.lease_id),
                t,
                meta,
            ]);
        }
        if s.instances.is_empty() {
            rows.push(vec![s.name.clone(), "(no instance)".into(), "-".into(), "-".into(), "-".into(), "-".into(), "-".into()]);
        }
    }
    table(&["SERVICE", "INSTANCE", "ADDR", "READINESS", "LEASE", "TTL", "METADATA"], rows)
}

fn queues_table(queues: &[QueueState]) -> String {
    let rows = queues
        .iter()
        .map(|q| {
            let work = q.kind == "work_queue";
            let n = |v: usize| if work { v.to_string() } else { "-".into() };
            vec![q.name.clone(), q.kind.clone(), q.items.to_string(), n(q.claimed), n(q.delayed), n(q.dead)]
        })
        .collect();
    table(&["QUEUE", "KIND", "ITEMS", "CLAIMED", "DELAYED", "DEAD"], rows)
}

// ---------------------------------------------------------------------------
// watch
// ---------------------------------------------------------------------------

fn frame(o: &Overview, waits: &Waits) -> String {
    [
        format!("LOCKS\n{}", locks_table(&o.locks, waits)),
        format!("ELECTIONS\n{}", elections_table(&o.elections)),
        format!("SERVICES\n{}", services_table(&o.services)),
        format!("QUEUES\n{}", queues_table(&o.queues)),
    ]
    .join("\n\n")
}

async fn watch(client: &Client, a: &Args) -> Result<(), String> {
    let full = client.full_key(&a.prefix);
    let opts = if full.is_empty() { WatchOptions::new().with_all_keys() } else { WatchOptions::new().with_prefix() };
    let key = if full.is_empty() { vec![0u8] } else { full.into_bytes() };
    let tty = std::io::stdout().is_terminal() && !a.json;
    let started = Instant::now();
    let mut first_seen: HashMap<(String, i64), Instant> = HashMap::new();
    let mut initial: std::collections::HashSet<(String, i64)> = std::collections::HashSet::new();
    let mut frames = 0u64;
    let mut watch_from: Option<i64> = None;
    let mut stream = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let o = inspect::overview(client, &a.prefix).await.map_err(|e| e.to_string())?;
        // Wait times: from when this watch first saw each contender key.
        let now = Instant::now();
        let keys: Vec<(String, i64)> = o
            .locks
            .iter()
            .flat_map(|l| l.holders.iter().chain(l.waiters.iter()))
            .map(|c| (c.key.clone(), c.create_revision))
            .collect();
        if frames == 0 {
            initial.extend(keys.iter().cloned());
        }
        first_seen.retain(|k, _| keys.contains(k));
        for k in &keys {
            first_seen.entry(k.clone()).or_insert(now);
        }
        let waits: Waits =
            first_seen.iter().map(|(k, t)| (k.clone(), (now.duration_since(*t).as_secs_f64(), initial.contains(k)))).collect();
        let text = if a.json {
            serde_json::to_string(&o).map_err(|e| e.to_string())?
        } else {
            let header = format!(
                "etcd-recipes watch  endpoints {}  revision {}  up {:.0}s",
                a.endpoints.join(","),
                o.revision,
                started.elapsed().as_secs_f64()
            );
            let body = frame(&o, &waits);
            if tty {
                format!("\x1b[H\x1b[2J{header}\n\n{body}")
            } else {
                format!("=== {header}\n\n{body}\n")
            }
        };
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").and_then(|_| out.flush()).map_err(|e| e.to_string())?;
        }
        frames += 1;
        if a.count.is_some_and(|n| frames >= n) {
            return Ok(());
        }
        if stream.is_none() {
            let from = watch_from.unwrap_or(o.revision) + 1;
            let s = client
                .etcd()
                .watch(key.clone(), Some(opts.clone().with_start_revision(from)))
                .await
                .map_err(|e| e.to_string())?;
            stream = Some(s);
        }
        watch_from = Some(o.revision);
        // The next change (or, on a terminal, a tick to move the TTL and wait columns).
        let s = stream.as_mut().expect("set above");
        let change = async {
            loop {
                match s.message().await {
                    // The watch's "created" answer and progress notices carry no change.
                    Ok(Some(r)) if !r.canceled() && r.events().is_empty() => continue,
                    other => return other,
                }
            }
        };
        tokio::select! {
            m = change => match m {
                Ok(Some(r)) if !r.canceled() => {
                    // Take what else is already there, then redraw once.
                    while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_millis(20), s.message()).await {}
                }
                _ => stream = None,
            },
            _ = tick.tick(), if tty => {}
        }
    }
}
