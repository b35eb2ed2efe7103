//! Command line and environment (`SVDM_<FLAG>`) configuration.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::validate::Settings;

/// Validating admission webhook for DataExports.
#[derive(Parser, Clone, Debug)]
#[command(name = "svdm-webhook", version, about)]
pub struct Args {
    /// PEM certificate (chain) the webhook serves; reloaded when the file changes.
    #[arg(long, env = "SVDM_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// PEM private key of the serving certificate; reloaded when the file changes.
    #[arg(long, env = "SVDM_TLS_KEY")]
    pub tls_key: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "SVDM_ADDRESS", default_value = "0.0.0.0")]
    pub address: IpAddr,

    /// HTTPS port.
    #[arg(long, env = "SVDM_PORT", default_value_t = 9443)]
    pub port: u16,

    /// ttl applied when a DataExport omits spec.ttl (Go duration).
    #[arg(long, env = "SVDM_DEFAULT_TTL", default_value = "2m", value_parser = parse_duration)]
    pub default_ttl: Duration,

    /// Largest spec.ttl users may set (Go duration).
    #[arg(long, env = "SVDM_MAX_TTL", default_value = "24h", value_parser = parse_duration)]
    pub max_ttl: Duration,

    /// Public host exports are published on; empty means publishing is not configured.
    #[arg(long, env = "SVDM_PUBLISH_HOST", default_value = "")]
    pub publish_host: String,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "SVDM_LOG_LEVEL", default_value = "info", value_parser = parse_level)]
    pub log_level: log::LevelFilter,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    svdm_api::ttl::parse(s).map_err(|e| e.to_string())
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    // Module settings may spell it "Warning"; log's own parser knows only "warn".
    let s = if s.eq_ignore_ascii_case("warning") {
        "warn"
    } else {
        s
    };
    s.parse()
        .map_err(|_| format!("{s:?} is not a log level; use error, warn, info, debug or trace"))
}

impl Args {
    /// The settings the admission rules use.
    pub fn settings(&self) -> Settings {
        Settings {
            default_ttl: self.default_ttl,
            max_ttl: self.max_ttl,
            publish_configured: !self.publish_host.trim().is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let a = Args::try_parse_from(["svdm-webhook", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.port, 9443);
        assert_eq!(a.address.to_string(), "0.0.0.0");
        assert_eq!(
            a.settings(),
            Settings {
                default_ttl: Duration::from_secs(120),
                max_ttl: Duration::from_secs(86400),
                publish_configured: false,
            }
        );
        assert_eq!(a.log_level, log::LevelFilter::Info);
        let a = Args::try_parse_from([
            "svdm-webhook",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--max-ttl",
            "1h30m",
            "--publish-host",
            "data-exporter.example.com",
            "--log-level",
            "debug",
            "--port",
            "8443",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.max_ttl, Duration::from_secs(5400));
        assert!(a.settings().publish_configured);
        assert_eq!(a.port, 8443);
        assert!(
            Args::try_parse_from([
                "svdm-webhook",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--max-ttl",
                "1d"
            ])
            .is_err()
        );
        assert!(Args::try_parse_from(["svdm-webhook"]).is_err());
        for (given, want) in [
            ("Warning", log::LevelFilter::Warn),
            ("ERROR", log::LevelFilter::Error),
            ("trace", log::LevelFilter::Trace),
        ] {
            let a = Args::try_parse_from([
                "svdm-webhook",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--log-level",
                given,
            ])
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(a.log_level, want);
        }
        assert!(
            Args::try_parse_from([
                "svdm-webhook",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--log-level",
                "loud"
            ])
            .is_err()
        );
    }
}
