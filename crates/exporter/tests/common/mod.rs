//! Test harness: certificates, the real exporter binary on 127.0.0.1, and a raw HTTP/1.1-over-TLS client
//! that sends request targets byte for byte (so hostile paths reach the server unnormalised).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::X509;
use svdm_pki::{CertPair, LeafSpec, Usage, generate_ca, issue};

pub const DAY: Duration = Duration::from_secs(86400);

pub struct Pki {
    pub ca: CertPair,
    pub server: CertPair,
}

pub fn server_pki() -> Pki {
    let ca = generate_ca("svdm-test-exporter-ca", DAY).unwrap_or_else(|e| panic!("ca: {e}"));
    let server = issue(
        &ca,
        &LeafSpec {
            common_name: "exporter",
            organizations: &[],
            dns_names: &["localhost".to_string()],
            ip_addresses: &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            usage: Usage::Server,
            validity: DAY,
        },
    )
    .unwrap_or_else(|e| panic!("leaf: {e}"));
    Pki { ca, server }
}

/// A client certificate signed by `ca` whose subject has the given CNs and Os in this order, which the
/// project's issuer (one CN by construction) cannot make.
pub fn client_cert_with_names(ca: &CertPair, cns: &[&str], orgs: &[&str]) -> CertPair {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::extension::ExtendedKeyUsage;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let e = |e: openssl::error::ErrorStack| -> ! { panic!("client certificate: {e}") };
    let ca_cert = X509::from_pem(ca.cert_pem.as_bytes()).unwrap_or_else(|x| e(x));
    let ca_key = PKey::private_key_from_pem(ca.key_pem.as_bytes()).unwrap_or_else(|x| e(x));
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap_or_else(|x| e(x));
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap_or_else(|x| e(x)))
        .unwrap_or_else(|x| e(x));
    let mut name = X509NameBuilder::new().unwrap_or_else(|x| e(x));
    for o in orgs {
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, o)
            .unwrap_or_else(|x| e(x));
    }
    for cn in cns {
        name.append_entry_by_nid(Nid::COMMONNAME, cn)
            .unwrap_or_else(|x| e(x));
    }
    let name = name.build();
    let mut b = X509Builder::new().unwrap_or_else(|x| e(x));
    b.set_version(2).unwrap_or_else(|x| e(x));
    let mut serial = BigNum::new().unwrap_or_else(|x| e(x));
    serial
        .rand(64, MsbOption::MAYBE_ZERO, false)
        .unwrap_or_else(|x| e(x));
    b.set_serial_number(&serial.to_asn1_integer().unwrap_or_else(|x| e(x)))
        .unwrap_or_else(|x| e(x));
    b.set_subject_name(&name).unwrap_or_else(|x| e(x));
    b.set_issuer_name(ca_cert.subject_name())
        .unwrap_or_else(|x| e(x));
    b.set_pubkey(&key).unwrap_or_else(|x| e(x));
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap_or_else(|x| e(x)))
        .unwrap_or_else(|x| e(x));
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap_or_else(|x| e(x)))
        .unwrap_or_else(|x| e(x));
    b.append_extension(
        ExtendedKeyUsage::new()
            .client_auth()
            .build()
            .unwrap_or_else(|x| e(x)),
    )
    .unwrap_or_else(|x| e(x));
    b.sign(&ca_key, MessageDigest::sha256())
        .unwrap_or_else(|x| e(x));
    let pem = |v: Vec<u8>| String::from_utf8(v).unwrap_or_default();
    CertPair {
        cert_pem: pem(b.build().to_pem().unwrap_or_else(|x| e(x))),
        key_pem: pem(key.private_key_to_pem_pkcs8().unwrap_or_else(|x| e(x))),
    }
}

pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub struct Exporter {
    child: Child,
    pub addr: SocketAddr,
    /// The plain-HTTP admin port (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub ca_pem: String,
    pub tls_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

pub struct Opts<'a> {
    pub mode: &'a str,
    pub source: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub no_auth: bool,
    pub export: (String, String),
    /// Certificate, key and the CA that signed them, when the test manages TLS files itself.
    pub tls: Option<(PathBuf, PathBuf, String)>,
}

impl<'a> Opts<'a> {
    pub fn fs(source: &'a Path) -> Self {
        Opts {
            mode: "filesystem",
            source,
            args: Vec::new(),
            env: Vec::new(),
            no_auth: true,
            export: ("ns1".into(), "exp1".into()),
            tls: None,
        }
    }
    pub fn block(source: &'a Path) -> Self {
        Opts {
            mode: "block",
            ..Opts::fs(source)
        }
    }
}

impl Exporter {
    pub fn start(opts: Opts<'_>) -> Exporter {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let tls_dir = tmp.path().to_path_buf();
        let (cert, key, ca_pem) = match &opts.tls {
            Some(t) => t.clone(),
            None => {
                let pki = server_pki();
                write(&tls_dir.join("tls.crt"), &pki.server.cert_pem);
                write(&tls_dir.join("tls.key"), &pki.server.key_pem);
                (
                    tls_dir.join("tls.crt"),
                    tls_dir.join("tls.key"),
                    pki.ca.cert_pem,
                )
            }
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_svdm-exporter"));
        cmd.args(["--mode", opts.mode])
            .arg("--source")
            .arg(opts.source)
            .args(["--address", "127.0.0.1", "--port", "0", "--admin-port", "0"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args([
                "--export-namespace",
                &opts.export.0,
                "--export-name",
                &opts.export.1,
                "--log-level",
                "info",
            ])
            .args(&opts.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if opts.no_auth {
            cmd.arg("--no-auth")
                .env("KUBECONFIG", "/nonexistent-kubeconfig");
        }
        cmd.env_remove("SVDM_NO_AUTH");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn exporter: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let (admin_tx, admin_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let word_after = |line: &str, marker: &str| {
                line.find(marker).map(|pos| {
                    line[pos + marker.len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
            };
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = word_after(&line, "listening on ") {
                    let _ = tx.send(addr);
                }
                if let Some(addr) = word_after(&line, " on http://") {
                    let _ = admin_tx.send(addr);
                }
                eprintln!("[exporter] {line}");
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().unwrap_or_else(|e| panic!("bad addr {a}: {e}")),
            Err(_) => {
                let _ = child.kill();
                let logs = logs.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
                panic!("exporter did not start:\n{logs}");
            }
        };
        let admin_addr = match admin_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a
                .parse()
                .unwrap_or_else(|e| panic!("bad admin addr {a}: {e}")),
            Err(_) => {
                let _ = child.kill();
                panic!("exporter did not report its admin port");
            }
        };
        Exporter {
            child,
            addr,
            admin_addr,
            logs,
            ca_pem,
            tls_dir,
            _tmp: tmp,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.ca_pem, self.addr, None)
    }

    /// A plain-HTTP GET on the admin port.
    pub fn admin_get(&self, target: &str) -> Resp {
        let mut s = TcpStream::connect(self.admin_addr).unwrap_or_else(|e| panic!("connect: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_default();
        let head = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("read {target}: {e}"));
        parse_response(&raw, false)
    }

    pub fn log_text(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
pub struct Client {
    connector: SslConnector,
    addr: SocketAddr,
}

impl Client {
    pub fn new(ca_pem: &str, addr: SocketAddr, client_cert: Option<&CertPair>) -> Client {
        let mut b =
            SslConnector::builder(SslMethod::tls_client()).unwrap_or_else(|e| panic!("{e}"));
        let ca = X509::from_pem(ca_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        b.cert_store_mut()
            .add_cert(ca)
            .unwrap_or_else(|e| panic!("{e}"));
        b.set_verify(SslVerifyMode::PEER);
        if let Some(c) = client_cert {
            let cert = X509::from_pem(c.cert_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let key =
                PKey::private_key_from_pem(c.key_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            b.set_certificate(&cert).unwrap_or_else(|e| panic!("{e}"));
            b.set_private_key(&key).unwrap_or_else(|e| panic!("{e}"));
        }
        Client {
            connector: b.build(),
            addr,
        }
    }

    pub fn connect(&self) -> SslStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).unwrap_or_else(|e| panic!("connect: {e}"));
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_default();
        self.connector
            .connect("localhost", tcp)
            .unwrap_or_else(|e| panic!("TLS: {e}"))
    }

    /// The TLS handshake on an already connected socket; `None` if it fails.
    pub fn handshake(&self, tcp: TcpStream) -> Option<SslStream<TcpStream>> {
        self.connector.connect("localhost", tcp).ok()
    }

    pub fn get(&self, target: &str) -> Resp {
        self.req("GET", target, &[])
    }

    pub fn req(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        let mut s = self.connect();
        let mut head =
            format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut raw = Vec::new();
        match s.read_to_end(&mut raw) {
            Ok(_) => {}
            // A server that closes without close_notify still delivered what it sent.
            Err(e) if !raw.is_empty() => eprintln!("read ended with {e}"),
            Err(e) => panic!("read {target}: {e}"),
        }
        parse_response(&raw, method == "HEAD")
    }
}

/// One keep-alive connection for many requests; responses must carry Content-Length (all error and
/// file answers do).
pub struct KeepAlive {
    stream: SslStream<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    pub fn keep_alive(&self) -> KeepAlive {
        KeepAlive {
            stream: self.connect(),
            buf: Vec::new(),
        }
    }
}

impl KeepAlive {
    pub fn req(&mut self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.stream
            .write_all(head.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut chunk = vec![0u8; 64 * 1024];
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = self
                .stream
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("read {target}: {e}"));
            assert!(n > 0, "connection closed before a response to {target}");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let mut resp = parse_response(&self.buf[..end], true);
        let len: usize = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body_len = if method == "HEAD" { 0 } else { len };
        while self.buf.len() < end + body_len {
            let n = self
                .stream
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("read {target}: {e}"));
            assert!(n > 0, "connection closed in the body of {target}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        resp.body = self.buf[end..end + body_len].to_vec();
        self.buf.drain(..end + body_len);
        resp
    }
}

pub fn parse_response(raw: &[u8], head: bool) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no header end in {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(300)])
            )
        });
    let head_text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if head {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..pos]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[pos + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// d8's listing parser: find the first string token equal to "items", require '[', decode
/// `{name,type}` elements. Returns (name, type) pairs.
pub fn d8_parse_listing(body: &[u8]) -> Vec<(String, String)> {
    let text = std::str::from_utf8(body).unwrap_or_else(|e| panic!("listing not UTF-8: {e}"));
    let first = text
        .find("\"items\"")
        .unwrap_or_else(|| panic!("no items token"));
    // No string token before it may equal "items": the only earlier strings are apiVersion and v1.
    let before = &text[..first];
    assert!(
        !before.contains("items"),
        "something before the items key mentions items: {before}"
    );
    let after = text[first + 7..].trim_start();
    assert!(after.starts_with(':'), "items is not a key");
    assert!(
        after[1..].trim_start().starts_with('['),
        "items is not an array"
    );
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("listing JSON: {e}"));
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items not array"))
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default().to_string(),
                i["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
