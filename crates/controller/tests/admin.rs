//! The controller's admin endpoint against the real API server: `/healthz` for anyone, `/metrics`
//! only for a caller allowed to read it (TokenReview, then a SubjectAccessReview, as a
//! kube-rbac-proxy sidecar checks), and slow clients cannot hold connections: a request head that
//! trickles in a byte every three seconds is cut within its timeout (the hand-made listener it
//! replaces let such a client keep a task for hours).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

fn token_of(kubeconfig: &str) -> String {
    std::fs::read_to_string(kubeconfig)
        .expect("kubeconfig")
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_owned))
        .expect("a token in the kubeconfig")
}

fn connector() -> SslConnector {
    // The admin endpoint's certificate is generated at start and not verified, as Prometheus
    // does with kube-rbac-proxy.
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("tls");
    b.set_verify(SslVerifyMode::NONE);
    b.build()
}

fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let tcp = TcpStream::connect(addr).expect("connect");
    let mut tls = connector().connect("controller", tcp).expect("handshake");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: controller\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_right_to_read_them_and_slow_heads_are_cut() {
    let Some(kc) = kubeconfig() else { return };
    let nobody = std::env::var("TESTENV_KUBECONFIG_NOBODY").expect("TESTENV_KUBECONFIG_NOBODY");
    let ctl = start_controller(&kc, &format!("admin-{}", unique()), None, &[]);
    let addr = wait_for("the admin endpoint's address in the log", 60, || async {
        log_of(&ctl).lines().find_map(|l| {
            l.split("on https://")
                .nth(1)
                .filter(|_| l.contains("admin endpoint"))
                .map(|a| a.trim().to_owned())
        })
    })
    .await;
    let (admin, nobody) = (token_of(&kc), token_of(&nobody));
    let a = addr.clone();
    let checks = tokio::task::spawn_blocking(move || {
        assert_eq!(get(&a, "/healthz", None).0, 200);
        assert_eq!(get(&a, "/metrics", None).0, 401, "no token");
        assert_eq!(
            get(&a, "/metrics", Some("not-a-token")).0,
            403,
            "unknown token"
        );
        assert_eq!(
            get(&a, "/metrics", Some(&nobody)).0,
            403,
            "no right to read"
        );
        let (code, body) = get(&a, "/metrics", Some(&admin));
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("svdm_controller_"), "{body}");
        assert_eq!(get(&a, "/nothing", None).0, 404);
    });
    checks.await.expect("checks");

    // Twenty clients trickle a request head in, a byte every three seconds.
    let a = addr.clone();
    let cut = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut conns: Vec<_> = (0..20)
            .map(|_| {
                let tcp = TcpStream::connect(&a).expect("connect");
                let mut tls = connector().connect("controller", tcp).expect("handshake");
                tls.get_ref()
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .expect("timeout");
                let _ = tls.write_all(b"G");
                tls
            })
            .collect();
        let mut open = conns.len();
        while open > 0 && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_secs(3));
            open = 0;
            for c in &mut conns {
                let alive = c.write_all(b"E").is_ok() && {
                    let mut b = [0u8; 64];
                    match c.read(&mut b) {
                        Ok(0) => false,
                        Ok(_) => false, // an answer (408) ends it too
                        Err(e) => matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ),
                    }
                };
                open += usize::from(alive);
            }
        }
        (open, started.elapsed())
    });
    let (open, took) = cut.await.expect("slow heads");
    assert_eq!(open, 0, "slow request heads still held after {took:?}");
    println!("20 trickling request heads cut after {took:.0?}");
    let a = addr.clone();
    let health = tokio::task::spawn_blocking(move || get(&a, "/healthz", None).0);
    assert_eq!(health.await.expect("healthz"), 200);
    ctl.stop().await;
}
