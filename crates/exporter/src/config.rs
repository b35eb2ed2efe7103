//! Command line and environment configuration.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What the exporter serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A directory tree, served as files and JSON listings under `/api/v1/files/`.
    Filesystem,
    /// A block device, served raw under `/api/v1/block`.
    Block,
}

/// Every flag can also come from `SVDM_<UPPER_SNAKE>` so the controller can template the pod through env.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "svdm-exporter",
    version,
    about = "Serves one volume read-only over HTTPS"
)]
pub struct Config {
    #[arg(long, env = "SVDM_MODE", value_enum)]
    pub mode: Mode,
    /// Directory (filesystem mode) or device (block mode) to serve.
    #[arg(long, env = "SVDM_SOURCE")]
    pub source: PathBuf,
    #[arg(long, env = "SVDM_ADDRESS", default_value = "0.0.0.0")]
    pub address: IpAddr,
    /// 0 picks a free port; the chosen address is logged as `listening on <addr>`.
    #[arg(long, env = "SVDM_PORT", default_value_t = svdm_api::names::EXPORTER_PORT)]
    pub port: u16,
    /// Plain-HTTP port on the same address for `/healthz`, `/readyz` and `/metrics` (probes and
    /// scrapers); the data port does not answer them. 0 picks a free port, logged as
    /// `admin endpoints on http://<addr>`.
    #[arg(long, env = "SVDM_ADMIN_PORT", default_value_t = svdm_api::names::EXPORTER_ADMIN_PORT)]
    pub admin_port: u16,
    /// Connections the data port holds at once (TLS handshakes included); more wait in the listen
    /// backlog. Bounds what idle or slow clients can make the exporter hold in memory.
    #[arg(long, env = "SVDM_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// Largest request head (request line and headers) the data port reads; a larger one is answered
    /// with 431 and the connection closed.
    #[arg(long, env = "SVDM_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// A response whose client accepts no byte at all for this long is cut (0: never). Listings are
    /// exempt: d8 keeps a listing open and unread while it downloads the subtree. A slow download
    /// that keeps moving is never cut.
    #[arg(long, env = "SVDM_WRITE_STALL_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub write_stall_timeout: Duration,
    #[arg(long, env = "SVDM_TLS_CERT")]
    pub tls_cert: PathBuf,
    #[arg(long, env = "SVDM_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Cluster client CA: when set, client certificates are requested (optional) and verified.
    #[arg(long, env = "SVDM_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    #[arg(long, env = "SVDM_EXPORT_NAMESPACE")]
    pub export_namespace: String,
    #[arg(long, env = "SVDM_EXPORT_NAME")]
    pub export_name: String,
    /// Lease renewed on activity. Without it activity is not reported (benchmarks only).
    #[arg(long, env = "SVDM_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    #[arg(long, env = "SVDM_LEASE_NAME")]
    pub lease_name: Option<String>,
    #[arg(long, env = "SVDM_ACTIVITY_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub activity_interval: Duration,
    #[arg(long, env = "SVDM_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[arg(long, env = "SVDM_AUTH_CACHE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub auth_cache_ttl: Duration,
    /// Run short file-system steps (resolving a path, reading a small file) on the connection's worker
    /// when the kernel can answer from its caches, instead of always on the thread pool. Off by
    /// itself on network and FUSE file systems and on kernels before 5.12.
    #[arg(long, env = "SVDM_INLINE_FS_STEPS", default_value_t = true, action = clap::ArgAction::Set)]
    pub inline_fs_steps: bool,
    /// A streaming response (a file, the device, a listing, a tar) re-checks its requester's
    /// credentials and permission this often, and ends when they are gone (0: never). The caches
    /// (--auth-cache-ttl) are far shorter, so each check asks the API server.
    #[arg(long, env = "SVDM_REAUTHORIZE_INTERVAL", default_value = "2m", value_parser = parse_duration)]
    pub reauthorize_interval: Duration,
    /// TokenReview and SubjectAccessReview calls in flight at once.
    #[arg(long, env = "SVDM_MAX_REVIEWS_IN_FLIGHT", default_value_t = 4)]
    pub max_reviews_in_flight: usize,
    /// Reviews of tokens not seen to succeed before, at once and per second; beyond them such
    /// requests get 503 with Retry-After. Successful reviews give theirs back, so only a flood of
    /// bad tokens uses this up.
    #[arg(long, env = "SVDM_UNVERIFIED_REVIEW_BURST", default_value_t = 5)]
    pub unverified_review_burst: u32,
    #[arg(
        long,
        env = "SVDM_UNVERIFIED_REVIEWS_PER_SECOND",
        default_value_t = 2.0
    )]
    pub unverified_reviews_per_second: f64,
    /// Serve without authentication. Only for benchmarks and tests without a cluster.
    #[arg(long, env = "SVDM_NO_AUTH")]
    pub no_auth: bool,
}

/// Parses Go-style durations (`500ms`, `5s`, `1m30s`, `2h`) with the module's shared parser.
/// Unlike a ttl, an interval here may be zero (`0`, `0s`): it switches the behaviour off.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    match svdm_api::ttl::parse(s) {
        Ok(d) => Ok(d),
        Err(svdm_api::ttl::TtlError::Zero(_)) => Ok(Duration::ZERO),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_parses() {
        let cfg = Config::try_parse_from([
            "svdm-exporter",
            "--mode",
            "block",
            "--source",
            "/dev/loop0",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--export-namespace",
            "ns",
            "--export-name",
            "n",
            "--no-auth",
        ]);
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.mode, Mode::Block);
        assert_eq!(cfg.port, 8443);
        assert!(cfg.no_auth);
        assert_eq!(cfg.activity_interval, Duration::from_secs(5));
    }
}
