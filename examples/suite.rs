//! Run every example on the built-in simulated network, in one process, and
//! print a table of results. No root, no TAP, no network: this is the
//! "does it all work here" command.
//!
//! ```text
//! cargo run --release --example suite [-- --only NAME[,NAME]] [--pcap-dir DIR]
//! ```
//!
//! Each example runs on a fresh simulated network (our device 10.0.0.1/24,
//! a second stack as the peer at 10.0.0.2/24) with its default sizes, with
//! the same code its own binary runs. The exit status is non-zero if any
//! example fails or overruns its time limit.
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

const USAGE: &str = "suite — run every example on the built-in simulated network and print a table

USAGE:
    suite [--only NAME[,NAME...]] [--pcap-dir DIR]

OPTIONS:
    --only NAMES     run only these examples (comma-separated; repeatable)
    --pcap-dir DIR   record each example's device frames to DIR/NAME.pcap
    --list           list the examples and exit
    -h, --help       this text
";

struct Row {
    name: &'static str,
    result: Result<String, String>,
    time: Duration,
}

fn main() {
    let mut only: Vec<String> = Vec::new();
    let mut pcap_dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return;
            }
            "--list" => {
                for (spec, _) in EXAMPLES {
                    println!("{:<14} {}", spec.name, spec.about);
                }
                return;
            }
            "--only" => match args.next() {
                Some(v) => only.extend(v.split(',').map(str::to_string)),
                None => die("--only needs a value"),
            },
            "--pcap-dir" => match args.next() {
                Some(v) => pcap_dir = Some(PathBuf::from(v)),
                None => die("--pcap-dir needs a value"),
            },
            other => die(&format!("unknown option {other}")),
        }
    }
    for name in &only {
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
