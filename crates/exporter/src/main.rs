use std::process::ExitCode;

use clap::Parser;
use svdm_exporter::config::Config;

fn main() -> ExitCode {
    let cfg = Config::parse();
    env_logger::Builder::new()
        .parse_filters(&log_filter(&cfg.log_level))
        .format_timestamp_millis()
        .init();
    match actix_rt::System::new().block_on(svdm_exporter::server::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A bare level applies to this crate only: dependencies (HTTP and Kubernetes clients) stay at warn, so
/// `--log-level trace` can never make a library print request details such as a TokenReview body. A full
/// env_logger filter (with `=` or `,`) is used as given.
fn log_filter(level: &str) -> String {
    if level.contains('=') || level.contains(',') {
        level.to_string()
    } else {
        format!("warn,actix_server=info,svdm_exporter={level}")
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn filters() {
        assert_eq!(
            log_filter("debug"),
            "warn,actix_server=info,svdm_exporter=debug"
        );
        assert_eq!(log_filter("info,kube=debug"), "info,kube=debug");
    }
}
