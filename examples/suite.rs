//! Every example against real peer programs on every backend, printed as a
//! matrix: rows are the examples, columns the backends, each cell
//! `pass FIGURE` (throughput or latency), `FAIL` (reasons listed under the
//! table), `no PROGRAM` (a peer program is not installed) or `n/a` (the
//! backend cannot, with the reason). No root needed for the default
//! backends; as root the `tap` column runs too.
//!
//! ```text
//! cargo run --release --example suite [-- --only NAME[,NAME]] [--backends B[,B]]
//!                                       [--sim-peers [--pcap-dir DIR]] [--list]
//! ```
//!
//! See `examples/common/matrix.rs` for the backends and what each cell
//! checks. `--sim-peers` runs the old single column instead: every example
//! on the built-in simulated network, a second stack as the peer. The exit
//! status is non-zero if any cell fails (a missing peer program counts as a
//! failure under `CI=true` or `NETDEVER_REQUIRE_PEERS=1`).
#[path = "common/mod.rs"]
mod common;
#[path = "peers_ws_mqtt/mod.rs"]
mod peers_ws_mqtt;

#[path = "apps/http_get.rs"]
mod http_get;
#[path = "apps/http_head.rs"]
mod http_head;
#[path = "apps/http_post.rs"]
mod http_post;
#[path = "apps/http_postform.rs"]
mod http_postform;
#[path = "apps/mqttclient.rs"]
mod mqttclient;
#[path = "apps/ntpclient.rs"]
mod ntpclient;
#[path = "apps/snake.rs"]
mod snake;
#[path = "apps/socket.rs"]
mod socket;
#[path = "apps/tcpclient.rs"]
mod tcpclient;
#[path = "apps/tcpecho.rs"]
mod tcpecho;
#[allow(dead_code)] // the matrix sets its text options through peers_ws_mqtt::text
#[path = "apps/tlsclient.rs"]
mod tlsclient;
#[path = "apps/udpclient.rs"]
mod udpclient;
#[path = "apps/udpecho.rs"]
mod udpecho;
#[path = "apps/webclient.rs"]
mod webclient;
#[path = "apps/webserver.rs"]
mod webserver;
#[path = "apps/websocket_dial.rs"]
mod websocket_dial;
#[path = "apps/websocket_handler.rs"]
mod websocket_handler;
#[path = "apps/webstatic.rs"]
mod webstatic;

#[path = "common/matrix.rs"]
mod matrix;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Net, Opts, RunFn, Spec};

/// Every example, in the order they run.
const EXAMPLES: &[(&Spec, RunFn)] = &[
    (&tcpclient::SPEC, tcpclient::run),
    (&socket::SPEC, socket::run),
    (&tcpecho::SPEC, tcpecho::run),
    (&udpclient::SPEC, udpclient::run),
    (&udpecho::SPEC, udpecho::run),
    (&webclient::SPEC, webclient::run),
    (&http_get::SPEC, http_get::run),
    (&http_head::SPEC, http_head::run),
    (&http_post::SPEC, http_post::run),
    (&http_postform::SPEC, http_postform::run),
    (&webserver::SPEC, webserver::run),
    (&webstatic::SPEC, webstatic::run),
    (&ntpclient::SPEC, ntpclient::run),
    (&websocket_dial::SPEC, websocket_dial::run),
    (&websocket_handler::SPEC, websocket_handler::run),
    (&mqttclient::SPEC, mqttclient::run),
    (&snake::SPEC, snake::run),
];

/// Longest one example may take before it counts as failed.
const PER_EXAMPLE: Duration = Duration::from_secs(30);

const USAGE: &str = "suite — every example against real peer programs on every backend, as a matrix

USAGE:
    suite [--only NAME[,NAME...]] [--backends B[,B...]] [--list]
    suite --sim-peers [--only NAME[,NAME...]] [--pcap-dir DIR]

OPTIONS:
    --only NAMES       run only these rows (examples; comma-separated; repeatable)
    --backends NAMES   run only these columns (also --board): stack, w5500-macraw,
                       esp-hosted, w5500-offload, esp-at, tap (tap needs root; it is
                       in the default set only when running as root)
    --list             list the rows and the backends, and exit
    -v, --verbose      also print what every passing cell saw
    --sim-peers        the old single column: every example on the built-in simulated
                       network, a second stack in the process as the peer
    --pcap-dir DIR     with --sim-peers: record each example's frames to DIR/NAME.pcap
    -h, --help         this text

A cell says `pass FIGURE`, `FAIL` (reasons under the table), `no PROGRAM` (a peer
program is not installed; a failure under CI=true or NETDEVER_REQUIRE_PEERS=1) or
`n/a` (the backend cannot, with the reason). The exit status is 1 if any cell fails.
";

struct Row {
    name: &'static str,
    result: Result<String, String>,
    time: Duration,
}

fn main() {
    let mut only: Vec<String> = Vec::new();
    let mut backends: Vec<String> = Vec::new();
    let mut pcap_dir: Option<PathBuf> = None;
    let mut sim_peers = false;
    let mut list = false;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| die(&format!("{what} needs a value")))
        };
        match name.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return;
            }
            "--list" => list = true,
            "-v" | "--verbose" => verbose = true,
            "--sim-peers" => sim_peers = true,
            "--only" => only.extend(value("--only").split(',').map(str::to_string)),
            "--backends" | "--board" | "--boards" => {
                backends.extend(value("--backends").split(',').map(str::to_string))
            }
            "--pcap-dir" => pcap_dir = Some(PathBuf::from(value("--pcap-dir"))),
            other => die(&format!("unknown option {other}")),
        }
    }
    if sim_peers {
        if !backends.is_empty() {
            die("--sim-peers runs on the simulated network only; --backends is for the matrix");
        }
        if list {
            for (spec, _) in EXAMPLES {
                println!("{:<14} {}", spec.name, spec.about);
            }
            return;
        }
        run_sim_peers(&only, pcap_dir);
    }
    if pcap_dir.is_some() {
        die("--pcap-dir goes with --sim-peers");
    }
    if list {
        println!("rows:");
        for r in matrix::ROWS {
            println!("    {:<22} {}", r.name, r.about);
        }
        println!("backends:");
        for b in matrix::Backend::ALL {
            println!("    {:<22} {}", b.name(), b.about());
        }
        return;
    }
    run_matrix(&only, &backends, verbose);
}

/// The matrix: every row on every backend asked for.
fn run_matrix(only: &[String], backends: &[String], verbose: bool) -> ! {
    let rows: Vec<&'static matrix::Row> = if only.is_empty() {
        matrix::ROWS.iter().collect()
    } else {
        only.iter()
            .map(|n| {
                matrix::row(n).unwrap_or_else(|| {
                    let names: Vec<&str> = matrix::ROWS.iter().map(|r| r.name).collect();
                    die(&format!(
                        "no row named {n:?}; the rows are: {}",
                        names.join(", ")
                    ))
                })
            })
            .collect()
    };
    let root = common::real::is_root();
    let cols: Vec<matrix::Backend> = if backends.is_empty() {
        matrix::Backend::ALL
            .into_iter()
            .filter(|b| root || !b.needs_root())
            .collect()
    } else {
        backends
            .iter()
            .map(|b| matrix::Backend::parse(b).unwrap_or_else(|e| die(&e)))
            .collect()
    };
    if !root && backends.is_empty() {
        eprintln!("(not root: the tap column is left out; run as root to include it)");
    }
    let strict = matrix::peers_required();
    let total = Instant::now();
    let mut ran = Vec::new();
    for &b in &cols {
        for &r in &rows {
            eprint!("{:<14} {:<22} ", b.name(), r.name);
            let x = matrix::run_cell(r, b);
            eprintln!("{} ({:.1} s)", x.cell.short(), x.time.as_secs_f64());
            ran.push(x);
        }
    }
    matrix::print(&rows, &cols, &ran, verbose);
    let failed = ran.iter().filter(|x| x.cell.failed(strict)).count();
    let passed = ran
        .iter()
        .filter(|x| matches!(x.cell, matrix::Cell::Pass { .. }))
        .count();
    let no_peer = ran
        .iter()
        .filter(|x| matches!(x.cell, matrix::Cell::NoPeer(_)))
        .count();
    println!(
        "\n{passed} passed, {failed} failed, {no_peer} without their peer program{} in {:.1} s",
        if strict && no_peer > 0 {
            " (counted as failures: CI=true / NETDEVER_REQUIRE_PEERS=1)"
        } else {
            ""
        },
        total.elapsed().as_secs_f64()
    );
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

/// The old single column: every example on the simulated network.
fn run_sim_peers(only: &[String], pcap_dir: Option<PathBuf>) -> ! {
    for name in only {
        if !EXAMPLES.iter().any(|(s, _)| s.name == name) {
            let names: Vec<&str> = EXAMPLES.iter().map(|(s, _)| s.name).collect();
            die(&format!(
                "no example named {name:?}; the examples are: {}",
                names.join(", ")
            ));
        }
    }
    if let Some(dir) = &pcap_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            die(&format!("creating {}: {e}", dir.display()));
        }
    }

    let total = Instant::now();
    let mut rows = Vec::new();
    for &(spec, run) in EXAMPLES {
        if !only.is_empty() && !only.iter().any(|n| n == spec.name) {
            continue;
        }
        eprint!("running {:<14} ", spec.name);
        let pcap = pcap_dir
            .as_ref()
            .map(|d| d.join(format!("{}.pcap", spec.name)));
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        std::thread::Builder::new()
            .name(spec.name.into())
            .spawn(move || {
                let o = Opts::defaults(spec).quiet();
                let r = Net::sim(pcap.as_deref()).and_then(|net| run(&net, &o));
                let _ = tx.send(r);
            })
            .expect("spawn example thread");
        let result = match rx.recv_timeout(PER_EXAMPLE) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("did not finish within {} s", PER_EXAMPLE.as_secs()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("panicked".into()),
        };
        let time = start.elapsed();
        eprintln!("{}", if result.is_ok() { "pass" } else { "FAIL" });
        let overran = result
            .as_ref()
            .err()
            .is_some_and(|e| e.starts_with("did not finish"));
        rows.push(Row {
            name: spec.name,
            result,
            time,
        });
        if overran {
            // The stuck example still holds its threads; don't pile more on.
            break;
        }
    }

    print_table(&rows);
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    let ran = rows.len();
    let skipped = EXAMPLES
        .iter()
        .filter(|(s, _)| only.is_empty() || only.iter().any(|n| n == s.name))
        .count()
        - ran;
    println!(
        "\n{} passed, {failed} failed{} in {:.2} s",
        ran - failed,
        if skipped > 0 {
            format!(", {skipped} not run")
        } else {
            String::new()
        },
        total.elapsed().as_secs_f64()
    );
    for r in &rows {
        if let Err(e) = &r.result {
            println!("{}: {e}", r.name);
        }
    }
    std::process::exit(if failed == 0 && skipped == 0 { 0 } else { 1 });
}

fn print_table(rows: &[Row]) {
    let head = ["example", "result", "throughput / latency", "time"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            let (res, fig) = match &r.result {
                Ok(s) => ("pass".to_string(), s.clone()),
                Err(_) => ("FAIL".to_string(), "-".to_string()),
            };
            [
                r.name.to_string(),
                res,
                fig,
                format!("{:.2} s", r.time.as_secs_f64()),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    let line = |c: [&str; 4]| {
        println!(
            "| {:<w0$} | {:<w1$} | {:<w2$} | {:>w3$} |",
            c[0],
            c[1],
            c[2],
            c[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
    };
    println!();
    line(head);
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(w[0] + 2),
        "-".repeat(w[1] + 2),
        "-".repeat(w[2] + 2),
        "-".repeat(w[3] + 1) + ":"
    );
    for c in &cells {
        line([&c[0], &c[1], &c[2], &c[3]]);
    }
}

fn die(msg: &str) -> ! {
    eprintln!("suite: {msg}\n(try --help)");
    std::process::exit(2);
}
