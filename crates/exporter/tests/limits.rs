//! Bounded cost of hostile or broken clients, over real sockets against the real binary: many
//! half-open connections, oversized request heads, abandoned expensive requests, stalled readers —
//! and the slow but honest clients these limits must never hurt (slow downloads, d8's open listings).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// CPU seconds the process has used (all threads).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// These tests load the machine (thousands of sockets, hashing threads, timing): one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn raise_fd_limit() {
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Thousands of clients that complete TLS and then send an unfinished request head (each within the
/// head limit, so the exporter has to keep them until the head timeout): the connection cap keeps what
/// the exporter holds bounded, and once they are gone, normal requests are served again.
#[test]
fn half_open_connections_cannot_exhaust_memory() {
    let _one_at_a_time = heavy();
    raise_fd_limit();
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&vol.path().join("f"), "small file\n");
    let ex = Exporter::start(Opts::fs(vol.path()));
    let c = ex.client();
    assert_eq!(c.get("/api/v1/files/f").status, 200);
    let before = ex.peak_rss_kib();
    const CLIENTS: usize = 2000;
    let pad = "a".repeat(24 * 1024);
    let head = Arc::new(format!(
        "GET /api/v1/files/f HTTP/1.1\r\nHost: localhost\r\nX-Pad: {pad}"
    ));
    let t0 = Instant::now();
    let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
    let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..CLIENTS {
        let sockets = sockets.clone();
        let handshakes = handshakes.clone();
        let stop = stop.clone();
        let head = head.clone();
        let client = c.clone();
        let addr = ex.addr;
        let t = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let Ok(tcp) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                    return;
                };
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                if let Ok(clone) = tcp.try_clone() {
                    sockets
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(clone);
                }
                // A connect the kernel completed only after the test moved on: nothing to hold.
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                // Blocks while the exporter is at its connection cap: the kernel holds the rest.
                if let Some(mut tls) = client.handshake(tcp) {
                    handshakes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = tls.write_all(head.as_bytes());
                    let mut b = [0u8; 1];
                    // Held until the test shuts the socket down (or the exporter gives up on it).
                    let _ = tls.read(&mut b);
                }
            });
        match t {
            Ok(t) => threads.push(t),
            Err(e) => panic!("thread: {e}"),
        }
    }
    eprintln!("spawned in {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_secs(4));
    let peak = ex.peak_rss_kib();
    let held = handshakes.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{CLIENTS} clients: {held} got through the handshake; peak RSS {before} KiB -> {peak} KiB"
    );
    // Unbounded, every client holds its head buffer and TLS state: well over 100 MiB here.
    assert!(
        peak.saturating_sub(before) < 96 * 1024,
        "peak RSS grew by {} KiB with {CLIENTS} half-open connections",
        peak - before
    );
    assert!(held <= 600, "{held} connections were taken at once");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in sockets.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = s.shutdown(Shutdown::Both);
    }
    for t in threads {
        let _ = t.join();
    }
    eprintln!("joined at {:?}", t0.elapsed());
    // The exporter recovers as soon as they are gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.get("/api/v1/files/f").status == 200
        }));
        if ok.unwrap_or(false) {
            break;
        }
        assert!(Instant::now() < deadline, "not serving after the flood");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("serving again at {:?}", t0.elapsed());
}

/// A request head over the limit gets a 431 and nothing more; one within it is served.
#[test]
fn oversized_request_heads_are_refused() {
    let _one_at_a_time = heavy();
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&vol.path().join("f"), "small file\n");
    let ex = Exporter::start(Opts::fs(vol.path()));
    let c = ex.client();
    let r = c.req(
        "GET",
        "/api/v1/files/f",
        &[("X-Pad", &"b".repeat(20 * 1024))],
    );
    assert_eq!(r.status, 200);
    let r = c.req(
        "GET",
        "/api/v1/files/f",
        &[("X-Pad", &"b".repeat(40 * 1024))],
    );
    assert_eq!(r.status, 431, "{}", r.text());
    // The server stays healthy.
    assert_eq!(c.get("/api/v1/files/f").text(), "small file\n");
}

/// 600 clients ask for the hash of a large file and leave at once. Their work stops (the exporter goes
/// quiet within seconds instead of hashing 150 GiB for nobody) and a small GET is answered meanwhile.
#[test]
fn abandoned_hash_requests_stop_and_do_not_starve_others() {
    let _one_at_a_time = heavy();
    raise_fd_limit();
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(&vol.path().join("small"), "small file\n");
    // Sparse: reading it costs no disk, hashing it costs CPU (256 MiB per request).
    let big = std::fs::File::create(vol.path().join("big")).unwrap_or_else(|e| panic!("{e}"));
    big.set_len(256 << 20).unwrap_or_else(|e| panic!("{e}"));
    let ex = Exporter::start(Opts::fs(vol.path()));
    let c = ex.client();
    assert_eq!(c.get("/api/v1/files/small").status, 200);
    let mut threads = Vec::new();
    for _ in 0..8 {
        let client = ex.client();
        threads.push(std::thread::spawn(move || {
            for _ in 0..75 {
                let mut s = client.connect();
                let _ = s.write_all(
                    b"GET /api/v1/files/big?attribute=hash.sha256 HTTP/1.1\r\nHost: localhost\r\n\r\n",
                );
                let _ = s.flush();
                // Gone without waiting for the answer.
                let _ = s.get_ref().shutdown(Shutdown::Both);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let started = Instant::now();
    let r = c.get("/api/v1/files/small");
    let took = started.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "small file\n"));
    assert!(took < Duration::from_secs(3), "small GET took {took:?}");
    // Give the exporter a moment to notice, then it must be idle.
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = cpu_seconds(ex.pid());
    std::thread::sleep(Duration::from_secs(3));
    let busy = cpu_seconds(ex.pid()) - cpu0;
    assert!(
        busy < 0.5,
        "the exporter used {busy:.1} CPU seconds in 3 s after every client had left"
    );
}

/// With a 2 s write-stall timeout: a download whose reader stops is cut; one whose reader is slow but
/// keeps taking bytes (less than the socket frees at once) completes intact; a listing left unread for
/// longer (as d8 leaves one while it downloads the subtree) completes when read.
#[test]
fn stalls_are_cut_but_slow_readers_and_open_listings_are_not() {
    let _one_at_a_time = heavy();
    let vol = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let big: Vec<u8> = (0..48_000_000u32).map(|i| (i % 251) as u8).collect();
    write(&vol.path().join("big"), &big);
    std::fs::create_dir(vol.path().join("dir")).unwrap_or_default();
    for i in 0..20_000 {
        std::fs::File::create(
            vol.path()
                .join("dir")
                .join(format!("entry-{i:05}-with-a-long-name")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut opts = Opts::fs(vol.path());
    opts.args
        .extend(["--write-stall-timeout", "2s"].map(String::from));
    let ex = Exporter::start(opts);
    let c = ex.client();
    let small_window = |s: &openssl::ssl::SslStream<TcpStream>| {
        let _ = nix::sys::socket::setsockopt(
            s.get_ref(),
            nix::sys::socket::sockopt::RcvBuf,
            &(32 * 1024),
        );
    };
    let send = |s: &mut openssl::ssl::SslStream<TcpStream>, target: &str| {
        let head = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap_or_default();
    };
    let drain = |s: &mut openssl::ssl::SslStream<TcpStream>, into: &mut Vec<u8>| {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.extend_from_slice(&buf[..n]),
            }
        }
    };

    // Stopped reader: cut after the timeout, so far fewer bytes than the file arrive.
    let mut stopped = c.connect();
    small_window(&stopped);
    send(&mut stopped, "/api/v1/files/big");
    std::thread::sleep(Duration::from_secs(6));
    let mut got = Vec::new();
    drain(&mut stopped, &mut got);
    assert!(
        got.len() < big.len(),
        "a reader that stopped for 6 s still got the whole file"
    );

    // Slow but moving: 256 KiB a second for 6 s, then the rest; nothing is cut.
    let mut slow = c.connect();
    small_window(&slow);
    send(&mut slow, "/api/v1/files/big");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..6 {
        let mut this_second = 0;
        while this_second < 256 * 1024 {
            match slow.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    this_second += n;
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    drain(&mut slow, &mut got);
    let resp = parse_response(&got, false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), big.len(), "the slow download was cut");
    assert_eq!(sha256_hex(&resp.body), sha256_hex(&big));

    // A listing nobody reads for 5 s is still there, whole, when it is read.
    let mut listing = c.connect();
    small_window(&listing);
    send(&mut listing, "/api/v1/files/dir/");
    std::thread::sleep(Duration::from_secs(5));
    let mut got = Vec::new();
    drain(&mut listing, &mut got);
    let resp = parse_response(&got, false);
    assert_eq!(resp.status, 200);
    assert_eq!(d8_parse_listing(&resp.body).len(), 20_000);
}
