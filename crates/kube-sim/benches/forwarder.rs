//! The simulated kube-proxy's forwarder next to a direct connection, on the real exporter over
//! TLS (run by `bench/proxy.sh`, which starts the exporter and passes its address):
//!
//!   forwarder <exporter-addr> <tls-name> <ca.pem> <small-file-url-path> <big-file-url-path> <requests> <rounds>
//!
//! For each relay variant it starts a forwarder in process, then measures (median of the rounds)
//! small GETs one after another on one keep-alive connection (µs per request, and what the relay
//! adds to a direct connection) and one large GET (MB/s, as a ratio of direct).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod, SslStream};
use svdm_kube_sim::proxy::{Relay, serve_with};
use tokio::sync::watch;

type Conn = SslStream<TcpStream>;

fn connect(addr: SocketAddr, name: &str, tls: &SslConnector) -> Result<Conn, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tls.connect(name, tcp)
        .map_err(|e| format!("TLS {addr}: {e}"))
}

/// One GET on a keep-alive connection; returns the body length.
fn get(conn: &mut Conn, name: &str, path: &str, buf: &mut Vec<u8>) -> Result<u64, String> {
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {name}\r\n\r\n").map_err(|e| e.to_string())?;
    buf.clear();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed in the headers".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!(
            "answer: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let len: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no content-length")?;
    let mut got = (buf.len() - head_end) as u64;
    let mut big = vec![0u8; 256 * 1024];
    while got < len {
        let n = conn.read(&mut big).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed in the body".into());
        }
        got += n as u64;
    }
    Ok(len)
}

struct Figures {
    small_us: f64,
    big_mbps: f64,
}

fn measure(
    addr: SocketAddr,
    a: &Args,
    tls: &SslConnector,
    requests: u32,
) -> Result<Figures, String> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut conn = connect(addr, &a.name, tls)?;
    get(&mut conn, &a.name, &a.small, &mut buf)?; // warm the connection
    let t = Instant::now();
    for _ in 0..requests {
        get(&mut conn, &a.name, &a.small, &mut buf)?;
    }
    let small_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(requests);
    let mut conn = connect(addr, &a.name, tls)?;
    let t = Instant::now();
    let n = get(&mut conn, &a.name, &a.big, &mut buf)?;
    let big_mbps = n as f64 / 1e6 / t.elapsed().as_secs_f64();
    Ok(Figures { small_us, big_mbps })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Args {
    backend: SocketAddr,
    name: String,
    ca: String,
    small: String,
    big: String,
    requests: u32,
    rounds: usize,
}

fn args() -> Result<Args, String> {
    // `cargo bench` appends `--bench`; only positional arguments count.
    let v: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [backend, name, ca, small, big, requests, rounds] = v.as_slice() else {
        return Err("usage: forwarder <exporter-addr> <tls-name> <ca.pem> <small-path> <big-path> <requests> <rounds>".into());
    };
    Ok(Args {
        backend: backend.parse().map_err(|e| format!("{backend}: {e}"))?,
        name: name.clone(),
        ca: ca.clone(),
        small: small.clone(),
        big: big.clone(),
        requests: requests.parse().map_err(|e| format!("{requests}: {e}"))?,
        rounds: rounds.parse().map_err(|e| format!("{rounds}: {e}"))?,
    })
}

fn main() -> Result<(), String> {
    let a = args()?;
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_ca_file(&a.ca).map_err(|e| e.to_string())?;
    let tls = b.build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let variants = [
        ("direct to the exporter", None),
        (
            "forwarder as shipped (TCP_NODELAY, 8 KiB)",
            Some(Relay::KUBE_PROXY),
        ),
        (
            "forwarder, TCP_NODELAY, 64 KiB copies",
            Some(Relay {
                nodelay: true,
                buffer: 64 * 1024,
            }),
        ),
        (
            "forwarder before the fix (Nagle, 8 KiB)",
            Some(Relay::NAGLE_8K),
        ),
    ];
    let mut rows = Vec::new();
    for (label, relay) in variants {
        let addr = match relay {
            None => a.backend,
            Some(relay) => {
                let listener = rt
                    .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                    .map_err(|e| e.to_string())?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let (_tx, rx) = watch::channel(vec![a.backend]);
                rt.spawn(async move {
                    let _keep = _tx;
                    serve_with(listener, rx, relay).await
                });
                std::thread::sleep(Duration::from_millis(50));
                addr
            }
        };
        // Tens of milliseconds a request: a hundred show it as well as thousands.
        let requests = if relay == Some(Relay::NAGLE_8K) {
            a.requests.min(100)
        } else {
            a.requests
        };
        let mut small = Vec::new();
        let mut big = Vec::new();
        for _ in 0..a.rounds {
            let f = measure(addr, &a, &tls, requests)?;
            small.push(f.small_us);
            big.push(f.big_mbps);
        }
        rows.push((label, median(small), median(big)));
    }
    let (_, direct_us, direct_mbps) = rows[0];
    println!(
        "\nsimulated kube-proxy forwarder vs a direct connection ({} small GETs (100 before the fix) on one keep-alive TLS connection, one large GET; median of {} rounds)",
        a.requests, a.rounds
    );
    println!(
        "{:<46} {:>12} {:>12} {:>12} {:>12}",
        "path", "µs/request", "added µs", "large MB/s", "vs direct"
    );
    for (label, us, mbps) in &rows {
        println!(
            "{label:<46} {us:>12.1} {:>12.1} {mbps:>12.0} {:>11.2}x",
            us - direct_us,
            mbps / direct_mbps
        );
    }
    println!(
        "targets for the shipped forwarder: ≤ 100 µs added per small request, ≥ 0.90x direct for the large download"
    );
    Ok(())
}
