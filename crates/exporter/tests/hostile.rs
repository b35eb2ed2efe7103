//! Hostile paths: traversal in every encoding, symlink escapes and loops, special files, and a race that
//! swaps a directory for an escaping symlink while requests run. Nothing outside the volume may ever be
//! served, no request may hang, and no answer may reveal the host path.

mod common;

use std::os::unix::fs::symlink;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

const SECRET: &str = "OUTSIDE-SECRET-4f1c";

struct Setup {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = tmp.path().join("volume");
    let outside = tmp.path().join("outside-dir");
    std::fs::create_dir_all(root.join("d")).unwrap_or_default();
    std::fs::create_dir_all(&outside).unwrap_or_default();
    write(&outside.join("secret"), SECRET);
    write(&root.join("d/f"), "inside");
    write(&root.join("a.txt"), "a");
    symlink(&outside, root.join("esc-abs-dir")).unwrap_or_default();
    symlink(outside.join("secret"), root.join("esc-abs-file")).unwrap_or_default();
    symlink("../outside-dir/secret", root.join("esc-rel-file")).unwrap_or_default();
    symlink("../../../../../../outside-dir", root.join("esc-rel-dir")).unwrap_or_default();
    symlink("/etc/passwd", root.join("etc-passwd")).unwrap_or_default();
    symlink("/proc/self/root/etc/passwd", root.join("proc-magic")).unwrap_or_default();
    symlink("loop2", root.join("loop1")).unwrap_or_default();
    symlink("loop1", root.join("loop2")).unwrap_or_default();
    symlink("self", root.join("self")).unwrap_or_default();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    symlink("/fifo", root.join("fifo-link")).unwrap_or_default();
    // A character device that streams forever if anyone opened it.
    let zero = nix::sys::stat::makedev(1, 5);
    nix::sys::stat::mknod(
        &root.join("zero"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        zero,
    )
    .unwrap_or_else(|e| panic!("mknod: {e}"));
    let sock =
        std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap_or_else(|e| panic!("{e}"));
    std::mem::forget(sock);
    Setup {
        _tmp: tmp,
        root,
        outside,
    }
}

fn assert_safe(r: &Resp, target: &str, host_path: &str) {
    let text = r.text();
    assert!(!text.contains(SECRET), "{target} leaked outside data");
    assert!(!text.contains("root:x:0:0"), "{target} leaked /etc/passwd");
    assert!(
        !text.contains(host_path),
        "{target} revealed the host path: {text}"
    );
    for (k, v) in &r.headers {
        assert!(
            !v.contains(host_path),
            "{target} header {k} reveals host path"
        );
    }
}

#[test]
fn traversal_corpus_is_rejected() {
    let s = setup();
    let ex = Exporter::start(Opts::fs(&s.root));
    let c = ex.client();
    let host = s.root.to_string_lossy().into_owned();
    let long = format!("/api/v1/files/{}", "a/".repeat(2100));
    let long_name = format!("/api/v1/files/{}", "n".repeat(300));
    let corpus: Vec<(&str, u16)> = vec![
        ("/api/v1/files/../../../../etc/passwd", 400),
        ("/api/v1/files/d/../../outside-dir/secret", 400),
        ("/api/v1/files/..", 400),
        ("/api/v1/files/../", 400),
        ("/api/v1/files/./a.txt", 400),
        ("/api/v1/files/%2e%2e/%2e%2e/etc/passwd", 400),
        ("/api/v1/files/%2E%2E/outside-dir/secret", 400),
        ("/api/v1/files/.%2e/outside-dir/secret", 400),
        ("/api/v1/files/%2e./outside-dir/secret", 400),
        ("/api/v1/files/..%2f..%2fetc%2fpasswd", 400),
        ("/api/v1/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 400),
        ("/api/v1/files/d%2f..%2f..%2foutside-dir%2fsecret", 400),
        ("/api/v1/files/%252e%252e/%252e%252e/etc/passwd", 404),
        ("/api/v1/files/..%5c..%5cetc%5cpasswd", 404),
        ("/api/v1/files/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", 404),
        ("/api/v1/files/%e0%80%ae%e0%80%ae/etc/passwd", 404),
        ("/api/v1/files/a.txt%00.png", 400),
        ("/api/v1/files/%00", 400),
        ("/api/v1/files/a%", 400),
        ("/api/v1/files/a%zz", 400),
        ("/api/v1/files/a.txt%2f", 400),
        ("/api/v1/files//etc/passwd", 404),
        ("/api/v1/files/etc/passwd", 404),
        ("/api/v1/files/esc-abs-dir/secret", 404),
        ("/api/v1/files/esc-abs-dir/", 404),
        ("/api/v1/files/esc-abs-file", 404),
        ("/api/v1/files/esc-rel-file", 404),
        ("/api/v1/files/esc-rel-dir/secret", 404),
        ("/api/v1/files/esc-rel-dir/", 404),
        ("/api/v1/files/etc-passwd", 404),
        ("/api/v1/files/proc-magic", 404),
        ("/api/v1/files/loop1", 400),
        ("/api/v1/files/self/", 400),
        ("/ns1/exp1/api/v1/files/../../../etc/passwd", 400),
        ("/ns1/exp1/../../api/v1/files/a.txt", 404),
        (long.as_str(), 414),
        (long_name.as_str(), 414),
    ];
    for (target, want) in &corpus {
        let r = c.get(target);
        assert_eq!(r.status, *want, "{target}: {}", r.text());
        assert_safe(&r, target, &host);
        let r = c.req("HEAD", target, &[]);
        assert_eq!(r.status, *want, "HEAD {target}");
    }
    // The listing shows escaping links as links and does not follow them.
    let r = c.get("/api/v1/files/");
    assert_safe(&r, "/", &host);
    let items = d8_parse_listing(&r.body);
    assert!(items.contains(&("esc-abs-dir".to_string(), "link".to_string())));
    assert!(items.contains(&("fifo".to_string(), "other".to_string())));
    assert!(items.contains(&("zero".to_string(), "other".to_string())));
    assert!(items.contains(&("sock".to_string(), "other".to_string())));
    // An escaping absolute link resolves inside the volume: a same-named file there is what is served.
    std::fs::create_dir_all(
        s.root
            .join(s.outside.strip_prefix("/").unwrap_or(&s.outside)),
    )
    .unwrap_or_default();
    write(
        &s.root
            .join(s.outside.strip_prefix("/").unwrap_or(&s.outside))
            .join("secret"),
        "jailed",
    );
    let r = c.get("/api/v1/files/esc-abs-file");
    assert_eq!((r.status, r.text().as_str()), (200, "jailed"));
}

#[test]
fn special_files_are_never_opened() {
    let s = setup();
    let ex = Exporter::start(Opts::fs(&s.root));
    let c = ex.client();
    let started = Instant::now();
    // Opening the FIFO for reading would block forever (no writer); /dev/zero would stream forever.
    for target in [
        "/api/v1/files/fifo",
        "/api/v1/files/fifo-link",
        "/api/v1/files/zero",
        "/api/v1/files/sock",
    ] {
        let r = c.get(target);
        assert_eq!(r.status, 400, "{target}");
        assert!(r.text().contains("never served"), "{}", r.text());
    }
    let r = c.get("/api/v1/files/fifo/");
    assert_eq!(r.status, 400);
    // Tar skips them too (and must not hang on the FIFO).
    let r = c.get("/api/v1/files/?format=tar");
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(15));
    // The FIFO still has no reader: nothing ever opened it.
    let w = nix::fcntl::open(
        &s.root.join("fifo"),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    );
    assert_eq!(
        w.err(),
        Some(nix::Error::ENXIO),
        "someone holds the FIFO open for reading"
    );
}

#[test]
fn swap_race_never_escapes() {
    let s = setup();
    let ex = Exporter::start(Opts::fs(&s.root));
    let host = s.root.to_string_lossy().into_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let root = s.root.clone();
    let outside = s.outside.clone();
    let stop2 = stop.clone();
    let swapper = std::thread::spawn(move || {
        let mut swaps = 0u64;
        let d = root.join("d");
        let parked = root.join("d-real");
        while !stop2.load(Ordering::Relaxed) {
            // Alternate an absolute and a relative escaping link in place of the directory.
            let target = if swaps.is_multiple_of(2) {
                outside.clone()
            } else {
                std::path::PathBuf::from("../outside-dir")
            };
            if std::fs::rename(&d, &parked).is_ok() {
                let _ = symlink(&target, &d);
                std::thread::yield_now();
                let _ = std::fs::remove_file(&d);
                let _ = std::fs::rename(&parked, &d);
            }
            swaps += 1;
        }
        swaps
    });
    let c = ex.client();
    let mut statuses = std::collections::BTreeMap::new();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(4) {
        for target in [
            "/api/v1/files/d/secret",
            "/api/v1/files/d/f",
            "/api/v1/files/d/",
        ] {
            let r = c.get(target);
            assert_safe(&r, target, &host);
            if r.status == 200 && target.ends_with('/') {
                let items = d8_parse_listing(&r.body);
                assert!(
                    !items.iter().any(|(n, _)| n == "secret"),
                    "listing escaped to the outside directory"
                );
            }
            *statuses.entry(r.status).or_insert(0) += 1;
            n += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap_or(0);
    eprintln!("{n} requests during {swaps} swaps: {statuses:?}");
    assert!(swaps > 100, "the race did not run");
    assert!(
        statuses.keys().all(|s| [200, 404, 409].contains(s)),
        "{statuses:?}"
    );
}
